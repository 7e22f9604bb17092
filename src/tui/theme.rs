//! Styles with meaning. Colour is never the only carrier: a collision is also bold, underlined and
//! marked `!!`, so it still stands out under `NO_COLOR` (https://no-color.org) or on a monochrome pane.
//!
//! Glyphs too: a terminal that cannot show them (`TERM=dumb`, or a locale that is not UTF-8) gets
//! ASCII. The views draw one set of glyphs; [`asciify`] turns the finished frame into ASCII, cell by
//! cell and one column for one column, so borders, markers and every glyph a later view adds are
//! covered without each view knowing about it.

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
    /// Draw ASCII only: borders `+-|`, `*` for `●`, `>` for `▶`, ... ([`ascii_glyph`]).
    pub ascii: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty; ASCII when the terminal or the locale
    /// cannot show the glyphs ([`wants_ascii`]).
    pub fn from_env() -> Theme {
        let var = |k: &str| std::env::var(k).ok();
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            ascii: wants_ascii(
                var("TERM").as_deref(),
                var("LC_ALL").as_deref(),
                var("LC_CTYPE").as_deref(),
                var("LANG").as_deref(),
            ),
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub fn focused_border(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub fn border(&self) -> Style {
        self.fg(Color::DarkGray)
    }
    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    pub fn header(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }
    pub fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    /// A blocker and blocked session from different invocations.
    pub fn collision(&self) -> Style {
        self.fg(Color::Red)
            .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }
    /// A root blocker that sits idle in its transaction.
    pub fn idle_in_transaction(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    pub fn blocked(&self) -> Style {
        self.fg(Color::Yellow)
    }
    pub fn live(&self) -> Style {
        self.fg(Color::Green)
    }
    pub fn orphaned(&self) -> Style {
        self.fg(Color::Magenta).add_modifier(Modifier::BOLD)
    }
    pub fn legacy(&self) -> Style {
        self.fg(Color::Blue)
    }
    pub fn warning(&self) -> Style {
        self.fg(Color::Yellow)
    }
}

/// Whether to draw ASCII only: `TERM=dumb`, or a character locale that is set and not UTF-8. The
/// locale is the first non-empty of `LC_ALL`, `LC_CTYPE`, `LANG` (POSIX precedence); when none is
/// set nothing is known about the terminal, and the glyphs stay (most terminals without a locale
/// still show UTF-8).
pub fn wants_ascii(
    term: Option<&str>,
    lc_all: Option<&str>,
    lc_ctype: Option<&str>,
    lang: Option<&str>,
) -> bool {
    if term == Some("dumb") {
        return true;
    }
    let locale = [lc_all, lc_ctype, lang]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty());
    locale.is_some_and(|l| {
        let l = l.to_ascii_lowercase();
        !(l.contains("utf-8") || l.contains("utf8"))
    })
}

/// The ASCII stand-in for a glyph the views draw, one column for one column; `None` for a character
/// that is ASCII already or has none (text from the database is left as it is).
pub fn ascii_glyph(c: char) -> Option<char> {
    Some(match c {
        // Heavy lines mark the focused pane: keep it apart from the others.
        '━' | '═' => '=',
        '\u{2500}'..='\u{257f}' => match c {
            '─' | '╌' | '┄' | '┈' | '╴' | '╶' | '╼' | '╾' => '-',
            '│' | '┃' | '║' | '╎' | '╏' | '┆' | '┇' | '┊' | '┋' | '╵' | '╷' | '╹' | '╻' | '╽'
            | '╿' => '|',
            _ => '+',
        },
        '●' | '■' => '*',
        '○' => 'o',
        '▶' | '→' | '↳' => '>',
        '←' | '↵' => '<',
        '⏸' | '▏' => '|',
        '↑' => '^',
        '↓' => 'v',
        '…' => '.',
        '·' | '–' | '—' => '-',
        '≤' => '<',
        '≥' => '>',
        '×' | '✗' => 'x',
        '✓' => '+',
        '⟳' => '~',
        '⚠' => '!',
        '⇄' | '↔' => '=',
        _ => return None,
    })
}

/// Replaces every glyph of a drawn frame that has an ASCII stand-in ([`ascii_glyph`]).
pub fn asciify(buf: &mut Buffer) {
    for cell in buf.content.iter_mut() {
        let symbol = cell.symbol();
        if symbol.is_ascii() || !symbol.chars().any(|c| ascii_glyph(c).is_some()) {
            continue;
        }
        let ascii: String = symbol
            .chars()
            .map(|c| ascii_glyph(c).unwrap_or(c))
            .collect();
        cell.set_symbol(&ascii);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumb_terminals_and_non_utf8_locales_get_ascii() {
        assert!(wants_ascii(Some("dumb"), None, None, Some("C.UTF-8")));
        assert!(wants_ascii(Some("xterm"), None, None, Some("C")));
        assert!(wants_ascii(None, None, None, Some("en_US.ISO-8859-1")));
        assert!(
            wants_ascii(None, Some("POSIX"), None, Some("en_US.UTF-8")),
            "LC_ALL wins"
        );
        assert!(
            !wants_ascii(None, None, Some("de_DE.utf8"), Some("C")),
            "LC_CTYPE before LANG"
        );
        assert!(!wants_ascii(
            Some("xterm-256color"),
            None,
            None,
            Some("en_US.UTF-8")
        ));
        assert!(
            !wants_ascii(Some("xterm"), Some(""), None, None),
            "nothing known"
        );
    }

    #[test]
    fn every_stand_in_is_one_ascii_column() {
        for c in ('\u{80}'..='\u{2fff}').chain(['…', '·']) {
            if let Some(a) = ascii_glyph(c) {
                assert!(a.is_ascii_graphic(), "{c:?} -> {a:?}");
            }
        }
        assert_eq!(ascii_glyph('é'), None, "database text is left alone");
    }
}
