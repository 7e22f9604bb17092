//! Drawing. Takes `&App` and draws; never changes state, never waits for anything.
//!
//! Layout: a header strip (one cell per configured database, refresh state, last good poll), notices
//! (unreachable databases, missing privileges), the three panes and a footer of key hints generated
//! from the key map. From 120x30 up the invocation and lock panes sit side by side; below that the
//! panes stack and the focused one gets most of the room. Only the visible rows of a pane are built,
//! so a frame costs the same with 50 or 5,000 sessions.
//!
//! One file per part of the screen: `header` (header, notices, footer), a file per pane
//! (`invocations`, `locks`, `schemas`), and the overlays (`popup` with help, `detail`, `sweep`).
//! `cells` holds the compact forms of names and sizes the narrow columns share.

mod cells;
mod detail;
mod header;
mod incidents;
mod invocations;
mod locks;
mod popup;
mod schemas;
mod signal;
mod sqlite;
mod sweep;

use crate::tui::app::{App, Overlay, Pane, RowKey, SignalView};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    let header = header::header_lines(app, theme, area.width);
    let notices = header::notice_lines(app, theme);
    let [header_area, notice_area, body, footer] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Length(notices.len() as u16),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header), header_area);
    frame.render_widget(Paragraph::new(notices), notice_area);
    draw_body(frame, app, theme, body);
    frame.render_widget(
        Paragraph::new(header::footer_line(app, theme, area.width)),
        footer,
    );
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => popup::draw_popup(
            frame,
            app,
            theme,
            "Keys",
            popup::help_lines(
                theme,
                app.read_only,
                if app.replay.is_some() {
                    crate::tui::keys::Footer::Replay
                } else {
                    crate::tui::keys::Footer::Live
                },
            ),
            0,
        ),
        Overlay::Signal(view) => {
            let title = match view {
                SignalView::Plan(p) | SignalView::Running(p) => p.action.title(),
                SignalView::Finished(r) => r.action.title(),
                SignalView::Disabled | SignalView::Nothing(_) => "Cancel / terminate",
            };
            let pinned = match view {
                SignalView::Plan(_) => 2,
                SignalView::Finished(_) | SignalView::Nothing(_) => 1,
                _ => 0,
            };
            let lines = signal::signal_lines(app, theme, view);
            popup::draw_popup(frame, app, theme, title, lines, pinned)
        }
        Overlay::Sweep(view) => {
            let pinned = match view {
                crate::tui::app::SweepView::Plan(_) | crate::tui::app::SweepView::Finished(_) => 1,
                _ => 0,
            };
            let lines = sweep::sweep_lines(app, theme, view);
            popup::draw_popup(frame, app, theme, "Sweep", lines, pinned)
        }
        Overlay::Detail(key) => {
            let title = match key {
                RowKey::Invocation(_) | RowKey::OtherSessions => "Invocation",
                RowKey::Lock { .. } => "Session",
                RowKey::Schema { .. } => "Schema",
                RowKey::Incident(_) => "Lock wait",
            };
            popup::draw_popup(
                frame,
                app,
                theme,
                title,
                detail::detail_lines(app, theme, key),
                0,
            );
        }
    }
    scrub(frame.buffer_mut());
    if theme.ascii {
        crate::tui::theme::asciify(frame.buffer_mut());
    }
}

/// The terminal boundary: whatever a database string carried, no drawn cell holds a character that
/// could drive the terminal or reorder the line (`domain::text::is_unsafe`). Ratatui 0.30 already
/// drops control and zero-width graphemes when it fills the buffer; this pass keeps the guarantee
/// ours, whatever a later ratatui does. Such a cell shows `?`.
fn scrub(buf: &mut ratatui::buffer::Buffer) {
    for cell in buf.content.iter_mut() {
        if cell.symbol().chars().any(crate::domain::text::is_unsafe) {
            cell.set_symbol("?");
        }
    }
}

fn draw_body(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    if app.loading() {
        let text = format!(
            "connecting to {} database{}…",
            app.databases.len(),
            if app.databases.len() == 1 { "" } else { "s" }
        );
        frame.render_widget(
            Paragraph::new(text).block(
                Block::new()
                    .borders(Borders::ALL)
                    .border_style(theme.border()),
            ),
            area,
        );
        return;
    }
    // SQLite targets get a pane at the bottom: what they need, up to a third of the body (all of
    // it when no PostgreSQL database is configured).
    let area = match &app.model.snapshot {
        Some(snap) if !snap.sqlite.is_empty() => {
            let want = sqlite::wanted_height(snap);
            let height = if app.databases.is_empty() {
                area.height
            } else {
                want.min(area.height / 3).max(3)
            };
            let [rest, bottom] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(height)]).areas(area);
            sqlite::draw(frame, snap, theme, bottom);
            if app.databases.is_empty() {
                return;
            }
            rest
        }
        _ => area,
    };
    if area.width >= 120 && area.height >= 26 {
        // Lock trees get the full width: their lines carry the most.
        // Heights follow content: the top row (invocations, schemas) and the lock trees take what
        // their rows need; short of room, each keeps at least two fifths.
        let h = area.height;
        let top_need = (app
            .model
            .invocations
            .len()
            .max(app.model.schemas.len())
            .max(1)
            + 3) as u16;
        let incidents_need = app.model.incidents.len().max(1) as u16 + 3;
        let bottom_need = (app.model.locks.len().max(1) as u16 + 2) + incidents_need;
        let top_h = if top_need + bottom_need <= h {
            // Room to spare: half of it to each row.
            top_need + (h - top_need - bottom_need) / 2
        } else {
            top_need
                .clamp(h * 2 / 5, h * 3 / 5)
                .max(h.saturating_sub(bottom_need))
        };
        let [top, bottom] =
            Layout::vertical([Constraint::Length(top_h), Constraint::Fill(1)]).areas(area);
        let [left, right] =
            Layout::horizontal([Constraint::Length(66), Constraint::Fill(1)]).areas(top);
        draw_pane(frame, app, theme, Pane::Invocations, left);
        draw_pane(frame, app, theme, Pane::Schemas, right);
        // Ended waits under the live ones: as many rows as they need, up to half the room.
        let wanted = app.model.incidents.len().max(1) as u16 + 3;
        let [locks, incidents] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(wanted.min(bottom.height / 2)),
        ])
        .areas(bottom);
        draw_pane(frame, app, theme, Pane::Locks, locks);
        draw_pane(frame, app, theme, Pane::Incidents, incidents);
    } else {
        let areas = Layout::vertical(stacked(app, area.height)).split(area);
        for (i, p) in Pane::ALL.into_iter().enumerate() {
            draw_pane(frame, app, theme, p, areas[i]);
        }
    }
}

/// Stacked panes: unfocused panes take what their rows need up to a cap (lock trees get the
/// largest), the focused pane takes the rest.
fn stacked(app: &App, body: u16) -> [Constraint; 4] {
    Pane::ALL.map(|p| {
        if p == app.focus {
            return Constraint::Fill(1);
        }
        // Short of room, an empty incidents pane gives its rows to the others (Tab still shows it).
        if p == Pane::Incidents && app.model.incidents.is_empty() {
            return Constraint::Length(0);
        }
        let (rows, chrome) = match p {
            Pane::Invocations => (app.model.invocations.len(), 3),
            Pane::Locks => (app.model.locks.len(), 2),
            Pane::Schemas => (app.model.schemas.len(), 3),
            Pane::Incidents => (app.model.incidents.len(), 3),
        };
        let cap = match p {
            Pane::Locks => (body * 2 / 5).max(4),
            Pane::Incidents => (body / 5).max(4),
            _ => (body / 4).max(4),
        };
        Constraint::Length((rows.max(1) as u16 + chrome).min(cap))
    })
}

fn draw_pane(frame: &mut Frame, app: &App, theme: &Theme, pane: Pane, area: Rect) {
    let Some(snap) = &app.model.snapshot else {
        return;
    };
    let selected = app.selected_index(pane).filter(|_| app.focus == pane);
    match pane {
        Pane::Invocations => invocations::draw(frame, app, snap, theme, area, selected),
        Pane::Locks => locks::draw(frame, app, snap, theme, area, selected),
        Pane::Schemas => schemas::draw(frame, app, snap, theme, area, selected),
        Pane::Incidents => incidents::draw(frame, app, theme, area, selected),
    }
}

/// The first visible row so that `selected` is on screen.
fn window(selected: Option<usize>, len: usize, height: usize) -> (usize, usize) {
    if height == 0 || len == 0 {
        return (0, 0);
    }
    let sel = selected.unwrap_or(0).min(len - 1);
    let start = sel
        .saturating_sub(height - 1)
        .min(len.saturating_sub(height));
    (start, (start + height).min(len))
}

fn pane_block(app: &App, theme: &Theme, pane: Pane, count: usize) -> Block<'static> {
    let focused = app.focus == pane;
    Block::new()
        .borders(Borders::ALL)
        .border_style(if focused {
            theme.focused_border()
        } else {
            theme.border()
        })
        // Focus is visible without colour too (NO_COLOR): a heavier border and a marker.
        .border_type(if focused {
            ratatui::widgets::BorderType::Thick
        } else {
            ratatui::widgets::BorderType::Plain
        })
        .title(Span::styled(
            format!(
                " {}{} ({count}) ",
                if focused { "▶ " } else { "" },
                pane.title()
            ),
            if focused {
                theme.title()
            } else {
                theme.header()
            },
        ))
}

fn empty(frame: &mut Frame, block: Block<'static>, theme: &Theme, text: &str, area: Rect) {
    frame.render_widget(
        Paragraph::new(Span::styled(text.to_string(), theme.dim())).block(block),
        area,
    );
}
