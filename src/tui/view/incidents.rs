//! The incidents pane: lock waits that ended, newest first, with how they ended in words. It keeps
//! what the lock-tree pane forgets the moment a wait is over.

use super::cells::short_namespace;
use super::{cut_note, empty, pane_block, window, PaneArea};
use crate::domain::format::fmt_age;
use crate::domain::incidents::{Episode, Outcome};
use crate::tui::app::{App, Pane};
use crate::tui::theme::Theme;
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    theme: &Theme,
    at: PaneArea,
    selected: Option<usize>,
) {
    let (at, listed) = draw_public_writes(frame, app, theme, at);
    let area = at.rect;
    let rows = &app.model.incidents;
    let height = at.rows(Pane::Incidents);
    let (start, end) = window(selected, rows.len(), height);
    let mut block = pane_block(
        app,
        theme,
        Pane::Incidents,
        rows.len(),
        at,
        cut_note(start, end, rows.len()),
    );
    if let Some(e) = &app.flight_log_error {
        block = block.title_bottom(Span::styled(format!(" {e} "), theme.warning()));
    }
    if let (false, Some(w)) = (listed, app.public_writes.first()) {
        // No room for the list: the newest public write on the frame.
        let text = crate::domain::text::sanitize(&w.describe()).into_owned();
        block = block.title_bottom(Span::styled(
            format!(
                " PW {} public write{}, newest: {text} ",
                app.public_writes.len(),
                if app.public_writes.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
            theme.collision(),
        ));
    }
    if rows.is_empty() {
        let text = if app.replay.is_some() {
            "no lock wait has ended yet in this recording"
        } else {
            "no lock wait has ended since the dashboard started"
        };
        return empty(frame, block, theme, text, area);
    }
    // Below this width the locked object gives its room to whom the run waited behind.
    let wide = area.width >= WIDE;
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let row = episode_row(app, theme, &app.episodes[*idx], wide, area.width);
            if Some(start + i) == selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(2),
        Constraint::Length(outcome_width(area.width >= SPELLED)),
        Constraint::Length(6),
        Constraint::Length(21),
    ];
    let mut titles = vec!["ENDED", "", "OUTCOME", "WAITED", "WAITER", "BEHIND"];
    if wide {
        widths.extend([Constraint::Length(26), Constraint::Min(10)]);
        titles.push("ON");
    } else {
        widths.push(Constraint::Min(10));
    }
    let header = Row::new(titles).style(theme.header());
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

/// At most this many public writes are listed above the lock waits.
const PUBLIC_WRITE_LINES: usize = 3;

/// Public writes (newest first) in a box of their own at the top of the pane, when there are any
/// and the pane has room; the rest of the pane is left for the lock waits.
fn draw_public_writes(
    frame: &mut Frame,
    app: &App,
    theme: &Theme,
    at: PaneArea,
) -> (PaneArea, bool) {
    use ratatui::text::Line;
    use ratatui::widgets::{Block, Borders, Paragraph};
    let n = app.public_writes.len().min(PUBLIC_WRITE_LINES);
    let height = n as u16 + 2;
    if n == 0 || at.rect.height < height + 6 {
        return (at, false);
    }
    let top = ratatui::layout::Rect { height, ..at.rect };
    let rest = ratatui::layout::Rect {
        y: at.rect.y + height,
        height: at.rect.height - height,
        ..at.rect
    };
    let lines: Vec<Line> = app
        .public_writes
        .iter()
        .take(n)
        .map(|w| {
            let when = w
                .last_seen
                .or(w.since)
                .map(|t| {
                    t.with_timezone(&app.utc_offset)
                        .format("%H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            let text = crate::domain::text::sanitize(&w.describe()).into_owned();
            Line::from(vec![
                Span::styled(format!("{when:>8} PW "), theme.collision()),
                Span::raw(text),
            ])
        })
        .collect();
    let title = format!(
        " Public writes ({}) · test sessions writing into shared schemas ",
        app.public_writes.len()
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, theme.collision()));
    frame.render_widget(Paragraph::new(lines).block(block), top);
    (PaneArea { rect: rest, ..at }, true)
}

/// From this width the pane shows what was locked.
const WIDE: u16 = 110;

fn episode_row(app: &App, theme: &Theme, e: &Episode, wide: bool, pane_width: u16) -> Row<'static> {
    let ended = e
        .ended_at
        .unwrap_or(e.last_seen_at)
        .with_timezone(&app.utc_offset)
        .format("%H:%M:%S")
        .to_string();
    let marker = if e.cross_invocation {
        Span::styled("!!", theme.collision())
    } else {
        Span::raw("  ")
    };
    let outcome_style = match e.outcome {
        Outcome::GaveUp | Outcome::Deadlock => theme.bad(),
        Outcome::Unknown => theme.dim(),
        _ => Style::new(),
    };
    let waited = if e.started_exact {
        fmt_age(e.duration_s)
    } else {
        format!("≤{}", fmt_age(e.duration_s))
    };
    let waiter = label(
        e.waiter_namespace.as_deref(),
        e.waiter_worker.as_deref(),
        e.waiter_suffix.as_deref(),
    )
    .unwrap_or_else(|| e.waiter_pid.to_string());
    let behind = e
        .blockers
        .first()
        .map(|b| {
            let who = label(
                b.namespace.as_deref(),
                b.worker.as_deref(),
                b.suffix.as_deref(),
            )
            .unwrap_or_else(|| b.pid.to_string());
            if b.idle_in_transaction {
                format!("{who} idle tx")
            } else {
                who
            }
        })
        .unwrap_or_default();
    let on = match (&e.lock_mode, &e.relation) {
        (Some(m), Some(r)) => format!("{} on {r}", m.trim_end_matches("Lock")),
        (Some(m), None) => format!(
            "{} {}",
            m.trim_end_matches("Lock"),
            e.lock_type.as_deref().unwrap_or("")
        ),
        _ => String::new(),
    };
    let style = if e.severe {
        Style::new().add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let mut cells = vec![
        Cell::from(ended),
        Cell::from(marker),
        Cell::from(Span::styled(
            outcome_words(e, pane_width >= SPELLED),
            outcome_style,
        )),
        Cell::from(waited),
        Cell::from(waiter),
        Cell::from(behind),
    ];
    if wide {
        cells.push(Cell::from(on));
    }
    Row::new(cells).style(style)
}

/// From this width the outcome column spells the error (`LockNotAvailable (55P03)`) and the
/// locked object still fits beside it.
const SPELLED: u16 = 140;

/// The outcome, with the error people search for when there is one: `LockNotAvailable (55P03)`
/// when `spelled`, `gave up 55P03` otherwise (the column is [`outcome_width`] wide).
fn outcome_words(e: &Episode, spelled: bool) -> String {
    match (&e.sqlstate, e.error_words()) {
        (Some(_), Some(words)) if spelled => words,
        (Some(code), _) => format!("{} {code}", e.outcome.short()),
        _ => e.outcome.short().to_string(),
    }
}

fn outcome_width(spelled: bool) -> u16 {
    if spelled {
        24
    } else {
        13
    }
}

/// `p4100…0a0a/gw1_setup`, or `None` outside the convention.
fn label(ns: Option<&str>, worker: Option<&str>, suffix: Option<&str>) -> Option<String> {
    let mut l = format!("{}/{}", short_namespace(ns?), worker?);
    if let Some(s) = suffix {
        l.push('_');
        l.push_str(s);
    }
    Some(l)
}
