//! The SQLite pane (drawn when `--sqlite` targets are configured): for each database file, who holds
//! which lock and for how long, who has it open without a lock, and what could not be read. It has
//! no rows to select: the lines are the whole answer (waiters cannot be seen, see docs/sqlite.md).

use super::cells::fit;
use crate::domain::snapshot::Snapshot;
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

/// Lines the pane wants (its content plus borders).
pub fn wanted_height(snap: &Snapshot) -> u16 {
    let lines: usize = snap.sqlite.iter().map(|r| r.render_lines().len()).sum();
    lines as u16 + 2
}

pub fn draw(frame: &mut Frame, snap: &Snapshot, theme: &Theme, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    for report in &snap.sqlite {
        let warn = !report.warnings.is_empty() || report.error.is_some();
        for (i, text) in report.render_lines().into_iter().enumerate() {
            let style = if i == 0 {
                theme.title()
            } else if warn && (text.trim_start().starts_with('!') || text.contains("error:")) {
                theme.warning()
            } else {
                ratatui::style::Style::default()
            };
            lines.push(Line::from(Span::styled(fit(&text, width), style)));
        }
    }
    let writers = snap
        .sqlite
        .iter()
        .flat_map(|r| &r.holders)
        .filter(|h| h.lock.is_write())
        .count();
    let title = format!(
        " SQLite · {} file{} · {writers} write lock{} ",
        snap.sqlite.len(),
        if snap.sqlite.len() == 1 { "" } else { "s" },
        if writers == 1 { "" } else { "s" }
    );
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(Span::styled(title, theme.title()));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
