//! The key map: the one table that handles keys *and* generates the footer and the help overlay, so
//! the hints on screen can never drift from what the keys do.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Everything a key can ask for in normal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextPane,
    PrevPane,
    Detail,
    Back,
    Filter,
    Pause,
    Sort,
    /// Swap the Sessions pane in for Invocations (and back).
    Sessions,
    /// Cycle the Sessions pane's TIME column: query, transaction, backend age.
    DurationMode,
    /// In a detail: follow its link (a session to its ended lock wait, and back).
    Link,
    Refresh,
    Faster,
    Slower,
    Help,
    Sweep,
    Cancel,
    Terminate,
    PlayPause,
    StepForward,
    StepBack,
    SeekForward,
    SeekBack,
    Quit,
}

/// Which footer: the live dashboard's or a replay's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footer {
    Live,
    Replay,
}

/// One binding: the keys, how the footer and help name them, and what they do.
pub struct Binding {
    pub keys: &'static [KeyCode],
    pub label: &'static str,
    /// One word for the footer.
    pub short: &'static str,
    pub help: &'static str,
    pub action: Action,
    /// The footers it is shown in (every binding is in the help overlay).
    pub footer: &'static [Footer],
}

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[KeyCode::Char('q')],
        label: "q",
        short: "quit",
        help: "quit (also Ctrl-C)",
        action: Action::Quit,
        footer: &[Footer::Live, Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('?')],
        label: "?",
        short: "help",
        help: "this help",
        action: Action::Help,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Up, KeyCode::Char('k')],
        label: "↑/k",
        short: "up",
        help: "previous row",
        action: Action::Up,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Down, KeyCode::Char('j')],
        label: "↓/j",
        short: "down",
        help: "next row",
        action: Action::Down,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::PageUp],
        label: "PgUp",
        short: "page up",
        help: "page up",
        action: Action::PageUp,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::PageDown],
        label: "PgDn",
        short: "page down",
        help: "page down",
        action: Action::PageDown,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Home, KeyCode::Char('g')],
        label: "g",
        short: "top",
        help: "first row",
        action: Action::Top,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::End, KeyCode::Char('G')],
        label: "G",
        short: "bottom",
        help: "last row",
        action: Action::Bottom,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Tab],
        label: "Tab",
        short: "pane",
        help: "next pane (Shift-Tab: previous)",
        action: Action::NextPane,
        footer: &[Footer::Live, Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::BackTab],
        label: "S-Tab",
        short: "pane",
        help: "previous pane",
        action: Action::PrevPane,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Enter],
        label: "↵",
        short: "detail",
        help: "details of the selected row",
        action: Action::Detail,
        footer: &[Footer::Live, Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Esc],
        label: "Esc",
        short: "back",
        help: "back / clear filter",
        action: Action::Back,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Char('/')],
        label: "/",
        short: "filter",
        help: "filter by namespace, worker, application name or database",
        action: Action::Filter,
        footer: &[Footer::Live, Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('p')],
        label: "p",
        short: "pause",
        help: "pause / resume the display",
        action: Action::Pause,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Char('o')],
        label: "o",
        short: "order",
        help: "order the focused pane, cycling (its title says by what)",
        action: Action::Sort,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Char('s')],
        label: "s",
        short: "sessions",
        help: "every session, pg_activity style, in place of Invocations",
        action: Action::Sessions,
        footer: &[Footer::Live, Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('T')],
        label: "T",
        short: "time",
        help: "Sessions: TIME shows query, transaction or backend age",
        action: Action::DurationMode,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Char('e')],
        label: "e",
        short: "episode",
        help: "in a detail: a session ⇄ its ended lock wait",
        action: Action::Link,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Char('r')],
        label: "r",
        short: "refresh",
        help: "refresh now",
        action: Action::Refresh,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Char('S')],
        label: "S",
        short: "sweep",
        help: "sweep stale schemas: shows the plan; capital Y runs exactly that plan",
        action: Action::Sweep,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Char('c')],
        label: "c",
        short: "cancel",
        help: "cancel the selected session's statement (Lock trees, Sessions, session detail): shows whom; capital Y sends",
        action: Action::Cancel,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Char('K')],
        label: "K",
        short: "terminate",
        help: "terminate the selected session, or every session of the selected invocation; capital Y sends",
        action: Action::Terminate,
        footer: &[Footer::Live],
    },
    Binding {
        keys: &[KeyCode::Char(' ')],
        label: "space",
        short: "play",
        help: "replay: play / pause",
        action: Action::PlayPause,
        footer: &[Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('.')],
        label: ".",
        short: "step",
        help: "replay: next snapshot",
        action: Action::StepForward,
        footer: &[Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char(',')],
        label: ",",
        short: "back",
        help: "replay: previous snapshot",
        action: Action::StepBack,
        footer: &[Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char(']')],
        label: "]",
        short: "+1m",
        help: "replay: seek one minute forward",
        action: Action::SeekForward,
        footer: &[Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('[')],
        label: "[",
        short: "-1m",
        help: "replay: seek one minute back",
        action: Action::SeekBack,
        footer: &[Footer::Replay],
    },
    Binding {
        keys: &[KeyCode::Char('+'), KeyCode::Char('=')],
        label: "+",
        short: "faster",
        help: "refresh faster (replay: play faster)",
        action: Action::Faster,
        footer: &[],
    },
    Binding {
        keys: &[KeyCode::Char('-')],
        label: "-",
        short: "slower",
        help: "refresh slower (replay: play slower)",
        action: Action::Slower,
        footer: &[],
    },
];

/// The action for a key in normal mode.
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    BINDINGS
        .iter()
        .find(|b| b.keys.contains(&key.code))
        .map(|b| b.action)
}

/// Actions that change a database: disabled (and not offered) in read-only mode.
pub fn writes(action: Action) -> bool {
    matches!(action, Action::Sweep | Action::Cancel | Action::Terminate)
}

/// `q quit  ? help  ...` from the bindings marked for this footer; read-only leaves out what it
/// disables.
pub fn footer_hints(mode: Footer, read_only: bool) -> Vec<(&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| b.footer.contains(&mode) && !(read_only && writes(b.action)))
        .map(|b| (b.label, b.short))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_binding_and_no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for b in BINDINGS {
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} bound twice");
                seen.push(*k);
            }
        }
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(&ctrl_c), Some(Action::Quit));
        let j = KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE);
        assert_eq!(action_for(&j), Some(Action::Down));
    }

    #[test]
    fn each_footer_shows_only_keys_that_act_in_its_mode() {
        use Action::*;
        let replay_only = [PlayPause, StepForward, StepBack, SeekForward, SeekBack];
        let live_only = [Pause, Refresh, Sweep, Cancel, Terminate];
        for b in BINDINGS {
            if b.footer.contains(&Footer::Live) {
                assert!(!replay_only.contains(&b.action), "{}", b.label);
            }
            if b.footer.contains(&Footer::Replay) {
                assert!(!live_only.contains(&b.action), "{}", b.label);
            }
        }
        let live: Vec<_> = footer_hints(Footer::Live, true)
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert!(
            !live.contains(&"S") && !live.contains(&"K") && !live.contains(&"c"),
            "read-only offers nothing it disables: {live:?}"
        );
        let replay: Vec<_> = footer_hints(Footer::Replay, false)
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert!(
            replay.contains(&"q") && replay.contains(&"space"),
            "{replay:?}"
        );
    }
}
