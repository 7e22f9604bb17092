//! Drawing. Takes `&App` and draws; never changes state, never waits for anything.
//!
//! Layout: a header strip (one cell per configured database, refresh state, last good poll), notices
//! (unreachable databases, missing privileges), four panes and a footer of key hints generated
//! from the key map. How tall each pane is comes from `tui::layout` (lock trees first, schemas
//! last); from 120x26 up Invocations (or Sessions) and Schemas sit side by side above full-width
//! lock trees, below that the panes stack with only a top border each. A pane that cannot show all
//! its rows says how many are cut on that border. Only the visible rows of a pane are built, so a
//! frame costs the same with 50 or 5,000 sessions.
//!
//! One file per part of the screen: `header` (header, notices, footer), a file per pane
//! (`invocations`, `sessions`, `locks`, `schemas`, `incidents`), and the overlays (`popup` with
//! help, `detail`, `sweep`, `signal`).
//! `cells` holds the compact forms of names and sizes the narrow columns share.

mod cells;
mod detail;
mod header;
mod incidents;
mod invocations;
mod locks;
mod popup;
mod schemas;
mod sessions;
mod signal;
mod sqlite;
mod sweep;

use crate::tui::app::{App, Overlay, Pane, RowKey, SignalView};
use crate::tui::layout::{chrome, plan_layout, Content};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
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
                RowKey::Lock { .. } | RowKey::Session { .. } => "Session",
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
    let first = app.panes()[0];
    let content = Content {
        first: app.model.keys(first).len(),
        schemas: app.model.schemas.len(),
        locks: app.model.locks.len(),
        incidents: app.model.incidents.len(),
    };
    let plan = plan_layout(content, area.width, area.height, app.focus, first);
    let rects = Layout::vertical(plan.bands.iter().map(|b| Constraint::Length(b.1))).split(area);
    for ((panes, _), rect) in plan.bands.iter().zip(rects.iter()) {
        match panes.as_slice() {
            [left, right] => {
                // Invocations keep their 66 columns; Sessions take all but what Schemas need.
                let left_w = if *left == Pane::Sessions {
                    rect.width.saturating_sub((rect.width / 3).clamp(44, 60))
                } else {
                    66
                };
                let [l, r] = Layout::horizontal([Constraint::Length(left_w), Constraint::Fill(1)])
                    .areas(*rect);
                draw_pane(frame, app, theme, *left, l, plan.wide);
                draw_pane(frame, app, theme, *right, r, plan.wide);
            }
            _ => {
                for p in panes {
                    draw_pane(frame, app, theme, *p, *rect, plan.wide);
                }
            }
        }
    }
}

fn draw_pane(frame: &mut Frame, app: &App, theme: &Theme, pane: Pane, area: Rect, wide: bool) {
    let Some(snap) = &app.model.snapshot else {
        return;
    };
    if area.height == 0 {
        return;
    }
    let selected = app.selected_index(pane).filter(|_| app.focus == pane);
    let at = PaneArea { rect: area, wide };
    match pane {
        Pane::Invocations => invocations::draw(frame, app, snap, theme, at, selected),
        Pane::Locks => locks::draw(frame, app, snap, theme, at, selected),
        Pane::Schemas => schemas::draw(frame, app, snap, theme, at, selected),
        Pane::Incidents => incidents::draw(frame, app, theme, at, selected),
        Pane::Sessions => sessions::draw(frame, app, snap, theme, at, selected),
    }
}

/// Where a pane is drawn: its rectangle, and whether it has a whole frame (side-by-side layout)
/// or only a top border (stacked).
#[derive(Debug, Clone, Copy)]
pub(super) struct PaneArea {
    pub rect: Rect,
    pub wide: bool,
}

impl PaneArea {
    /// Rows left for content after the frame and the column titles.
    pub fn rows(&self, pane: Pane) -> usize {
        self.rect.height.saturating_sub(chrome(pane, self.wide)) as usize
    }

    /// Columns left for content.
    pub fn inner_width(&self) -> u16 {
        if self.wide {
            self.rect.width.saturating_sub(2)
        } else {
            self.rect.width
        }
    }
}

/// `↑3 · +7 more`: rows of a pane above and below its window, or nothing when all are shown.
fn cut_note(start: usize, end: usize, len: usize) -> Option<String> {
    let below = len.saturating_sub(end);
    match (start, below) {
        (0, 0) => None,
        (0, b) => Some(format!("+{b} more")),
        (a, 0) => Some(format!("↑{a} above")),
        (a, b) => Some(format!("↑{a} above · +{b} more")),
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

fn pane_block(
    app: &App,
    theme: &Theme,
    pane: Pane,
    count: usize,
    at: PaneArea,
    cut: Option<String>,
) -> Block<'static> {
    let focused = app.focus == pane;
    let mut block = Block::new()
        // Stacked panes have only a top border: two more columns at 80, a row less per pane.
        .borders(if at.wide { Borders::ALL } else { Borders::TOP })
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
        ));
    // Every cut pane says so, on its top border (it costs no row).
    if let Some(cut) = cut {
        block = block
            .title(Line::from(Span::styled(format!(" {cut} "), theme.warning())).right_aligned());
    }
    block
}

fn empty(frame: &mut Frame, block: Block<'static>, theme: &Theme, text: &str, area: Rect) {
    frame.render_widget(
        Paragraph::new(Span::styled(text.to_string(), theme.dim())).block(block),
        area,
    );
}
