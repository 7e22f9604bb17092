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
    Refresh,
    Faster,
    Slower,
    Help,
    Sweep,
    PlayPause,
    StepForward,
    StepBack,
    SeekForward,
    SeekBack,
    Quit,
}

/// One binding: the keys, how the footer and help name them, and what they do.
pub struct Binding {
    pub keys: &'static [KeyCode],
    pub label: &'static str,
    /// One word for the footer.
    pub short: &'static str,
    pub help: &'static str,
    pub action: Action,
    /// Shown in the footer (the rest only in the help overlay).
    pub footer: bool,
}

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[KeyCode::Char('q')],
        label: "q",
        short: "quit",
        help: "quit (also Ctrl-C)",
        action: Action::Quit,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Char('?')],
        label: "?",
        short: "help",
        help: "this help",
        action: Action::Help,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Up, KeyCode::Char('k')],
        label: "↑/k",
        short: "up",
        help: "previous row",
        action: Action::Up,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Down, KeyCode::Char('j')],
        label: "↓/j",
        short: "down",
        help: "next row",
        action: Action::Down,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::PageUp],
        label: "PgUp",
        short: "page up",
        help: "page up",
        action: Action::PageUp,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::PageDown],
        label: "PgDn",
        short: "page down",
        help: "page down",
        action: Action::PageDown,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Home, KeyCode::Char('g')],
        label: "g",
        short: "top",
        help: "first row",
        action: Action::Top,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::End, KeyCode::Char('G')],
        label: "G",
        short: "bottom",
        help: "last row",
        action: Action::Bottom,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Tab],
        label: "Tab",
        short: "pane",
        help: "next pane (Shift-Tab: previous)",
        action: Action::NextPane,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::BackTab],
        label: "S-Tab",
        short: "pane",
        help: "previous pane",
        action: Action::PrevPane,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Enter],
        label: "↵",
        short: "detail",
        help: "details of the selected row",
        action: Action::Detail,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Esc],
        label: "Esc",
        short: "back",
        help: "back / clear filter",
        action: Action::Back,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char('/')],
        label: "/",
        short: "filter",
        help: "filter by namespace, worker, application name or database",
        action: Action::Filter,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Char('p')],
        label: "p",
        short: "pause",
        help: "pause / resume the display",
        action: Action::Pause,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Char('r')],
        label: "r",
        short: "refresh",
        help: "refresh now",
        action: Action::Refresh,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Char('S')],
        label: "S",
        short: "sweep",
        help: "sweep stale schemas: shows the plan; capital Y runs exactly that plan",
        action: Action::Sweep,
        footer: true,
    },
    Binding {
        keys: &[KeyCode::Char(' ')],
        label: "space",
        short: "play",
        help: "replay: play / pause",
        action: Action::PlayPause,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char('.')],
        label: ".",
        short: "step",
        help: "replay: next snapshot",
        action: Action::StepForward,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char(',')],
        label: ",",
        short: "back",
        help: "replay: previous snapshot",
        action: Action::StepBack,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char(']')],
        label: "]",
        short: "+1m",
        help: "replay: seek one minute forward",
        action: Action::SeekForward,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char('[')],
        label: "[",
        short: "-1m",
        help: "replay: seek one minute back",
        action: Action::SeekBack,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char('+'), KeyCode::Char('=')],
        label: "+",
        short: "faster",
        help: "refresh faster (replay: play faster)",
        action: Action::Faster,
        footer: false,
    },
    Binding {
        keys: &[KeyCode::Char('-')],
        label: "-",
        short: "slower",
        help: "refresh slower (replay: play slower)",
        action: Action::Slower,
        footer: false,
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

/// `q quit  ? help  ...` from the bindings marked for the footer.
pub fn footer_hints() -> Vec<(&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| b.footer)
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
}
