//! The sessions pane: every session, as pg_activity lists them, in pgswarm's terms (run and worker
//! instead of an application name cut to 16 characters; a lock wait's real age). Drawn in the
//! Invocations pane's place when `s` swaps it in: the everyday view for "what is this server doing",
//! while the Invocations pane answers "which run is in trouble".

use super::cells::{fit, short_label};
use super::{cut_note, empty, pane_block, window, PaneArea};
use crate::domain::format::fmt_age;
use crate::domain::snapshot::{SessionReport, Snapshot, WaitSource};
use crate::tui::app::{App, Pane};
use crate::tui::theme::Theme;
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    at: PaneArea,
    selected: Option<usize>,
) {
    let area = at.rect;
    let rows = &app.model.sessions;
    let height = at.rows(Pane::Sessions);
    let (start, end) = window(selected, rows.len(), height);
    let block = pane_block(
        app,
        theme,
        Pane::Sessions,
        rows.len(),
        at,
        cut_note(start, end, rows.len()),
    )
    .title(Line::from(Span::styled(
        format!(
            " by {} (o) · time: {} (T) ",
            app.session_sort.label(),
            app.duration_mode.label()
        ),
        theme.dim(),
    )));
    if rows.is_empty() {
        return empty(frame, block, theme, "no sessions", area);
    }
    let inner = at.inner_width() as usize;
    // Fixed columns; the query takes the rest (at least 12 columns at 80).
    let run_w = if inner >= 110 { 24 } else { 16 };
    let db_w = if inner >= 110 { 14 } else { 9 };
    let widths = [
        Constraint::Length(7),
        Constraint::Length(run_w),
        Constraint::Length(db_w),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let fixed = 7 + run_w + db_w + 10 + 12 + 7 + 6;
    let query_w = inner.saturating_sub(fixed as usize).max(8);
    // TIME's meaning (query, transaction or backend age) is in the title, as `T` cycles it.
    let header = Row::new([
        "PID",
        "RUN/WORKER",
        "DATABASE",
        "STATE",
        "WAIT",
        "TIME",
        "QUERY",
    ])
    .style(theme.header());
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let row = session_row(app, theme, &snap.sessions[*idx], [run_w, db_w], query_w);
            if Some(start + i) == selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn session_row(
    app: &App,
    theme: &Theme,
    s: &SessionReport,
    [run_w, db_w]: [u16; 2],
    query_w: usize,
) -> Row<'static> {
    let who = match (&s.namespace, &s.worker) {
        (Some(_), Some(_)) => short_label(s),
        _ => s.application_name.clone(),
    };
    let state = match s.state.as_deref() {
        Some("idle in transaction") => "idle in tx".to_string(),
        Some("idle in transaction (aborted)") => "idle tx !".to_string(),
        Some(st) => st.to_string(),
        None => "-".to_string(),
    };
    let (wait, wait_style) = match (&s.waiting_s, s.blocked_by.is_empty()) {
        (Some(w), false) => (
            format!(
                "Lock {}{}",
                if s.wait_source == Some(WaitSource::QueryStart) {
                    "≤"
                } else {
                    ""
                },
                fmt_age(*w)
            ),
            theme.blocked(),
        ),
        _ => (
            s.wait_event
                .clone()
                .or_else(|| s.wait_event_type.clone())
                .unwrap_or_default(),
            theme.dim(),
        ),
    };
    let now = app.display_now();
    let time = app
        .duration_mode
        .start_of(s)
        .map(|t| fmt_age(((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)))
        .unwrap_or_else(|| "-".into());
    let query: String = s
        .query
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let style = if !s.blocking.is_empty() {
        Style::new().add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let state_style = if state.starts_with("idle tx") || state.starts_with("idle in tx") {
        theme.idle_in_transaction()
    } else {
        Style::new()
    };
    Row::new(vec![
        Cell::from(s.pid.to_string()),
        Cell::from(fit(&who, run_w as usize)),
        Cell::from(fit(&s.database, db_w as usize)),
        Cell::from(Span::styled(state, state_style)),
        Cell::from(Span::styled(fit(&wait, 12), wait_style)),
        Cell::from(time),
        Cell::from(fit(&query, query_w)),
    ])
    .style(style)
}
