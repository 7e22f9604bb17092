//! Overlays drawn over the panes, and the help overlay generated from the key map.

use crate::tui::keys::{writes, BINDINGS};
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// A centred box, at most 100 columns wide. Too long for the screen: the middle is cut, never the
/// last two lines (they say what the keys do).
pub(super) fn draw_popup(
    frame: &mut Frame,
    theme: &Theme,
    title: &str,
    mut lines: Vec<Line<'static>>,
) {
    let area = frame.area();
    let room = area.height.saturating_sub(4) as usize;
    if lines.len() > room && room >= 4 {
        let tail = lines.split_off(lines.len() - 2);
        let hidden = lines.len() + 1 - (room - 2);
        lines.truncate(room - 3);
        lines.push(Line::styled(
            format!(" … {hidden} more lines (a taller terminal shows them)"),
            theme.dim(),
        ));
        lines.extend(tail);
    }
    let w = (area.width.saturating_sub(4)).min(100);
    let h = (area.height.saturating_sub(2)).min(lines.len() as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(theme.focused_border())
                .title(Span::styled(
                    format!(" {title} · Esc closes "),
                    theme.title(),
                )),
        ),
        popup,
    );
}

pub(super) fn help_lines(theme: &Theme, read_only: bool) -> Vec<Line<'static>> {
    let mut out: Vec<Line> = BINDINGS
        .iter()
        .filter(|b| !(read_only && writes(b.action)))
        .map(|b| {
            Line::from(vec![
                Span::styled(format!(" {:>6}  ", b.label), theme.header()),
                Span::raw(b.help),
            ])
        })
        .collect();
    out.push(Line::raw(""));
    out.push(Line::styled(
        " !! marks a collision: a session blocked by another invocation.",
        theme.collision(),
    ));
    out.push(Line::styled(
        " IDLE IN TX marks a root blocker idle inside its transaction.",
        theme.idle_in_transaction(),
    ));
    out
}
