//! The invocations pane: one row per namespace (live, crashed, colliding), then the sessions no
//! invocation owns.

use super::cells::short_namespace;
use super::{cut_note, empty, pane_block, window, PaneArea};
use crate::domain::format::fmt_age;
use crate::domain::snapshot::{InvocationReport, SessionReport, Snapshot};
use crate::tui::app::{App, Pane};
use crate::tui::theme::Theme;
use ratatui::layout::Constraint;
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

/// From this width the runner pid gets its own column.
const WIDE: u16 = 76;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    at: PaneArea,
    selected: Option<usize>,
) {
    let area = at.rect;
    let rows = &app.model.invocations;
    let height = at.rows(Pane::Invocations);
    let (start, end) = window(selected, rows.len(), height);
    let cut = cut_note(start, end, rows.len());
    let mut block = pane_block(app, theme, Pane::Invocations, rows.len(), at, cut);
    if app.sort != crate::tui::app::InvocationSort::Trouble {
        block = block.title(Span::styled(
            format!(" by {} (o) ", app.sort.label()),
            theme.dim(),
        ));
    }
    if rows.is_empty() {
        return empty(
            frame,
            block,
            theme,
            "no test sessions and no test schemas",
            area,
        );
    }
    let wide = area.width >= WIDE;
    // Full namespaces whenever they fit next to the other columns; compact (`p4100…0a0a`) only
    // when they do not.
    let (_, widths) = columns(wide);
    let fixed: u16 = widths
        .iter()
        .map(|c| match c {
            Constraint::Length(n) => *n,
            _ => 0,
        })
        .sum::<u16>()
        + widths.len() as u16
        - 1
        + (area.width - at.inner_width());
    let longest = rows[start..end]
        .iter()
        .filter_map(|(_, i)| {
            i.map(|i| &snap.invocations[i])
                .map(|inv| inv.namespace.chars().count() + usize::from(inv.forced))
        })
        .max()
        .unwrap_or(0);
    let narrow = (area.width.saturating_sub(fixed) as usize) < longest;
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let row = match idx {
                Some(idx) => {
                    let inv = &snap.invocations[*idx];
                    let row = invocation_row(app, theme, inv, narrow, wide);
                    mark_public_write(row, snap, theme, inv)
                }
                None => others_row(snap, theme, wide),
            };
            if Some(start + i) == selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let (titles, widths) = columns(wide);
    let table = Table::new(body, widths)
        .header(Row::new(titles).style(theme.header()))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn columns(wide: bool) -> (Vec<&'static str>, Vec<Constraint>) {
    let mut titles = vec!["", "NAMESPACE", "AGE"];
    let mut widths = vec![
        Constraint::Length(2),
        Constraint::Min(12),
        Constraint::Length(7),
    ];
    if wide {
        titles.push("PID");
        widths.push(Constraint::Length(7));
    }
    titles.extend(["WRK", "SESS", "DBS", "BLKD", "BLKG", "SCH"]);
    widths.extend([
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(3),
    ]);
    (titles, widths)
}

fn invocation_row(
    app: &App,
    theme: &Theme,
    inv: &InvocationReport,
    narrow: bool,
    wide: bool,
) -> Row<'static> {
    let snap = app.model.snapshot.as_deref();
    let writes_public = snap.is_some_and(|s| {
        s.public_writes
            .iter()
            .any(|w| w.namespace.as_deref() == Some(inv.namespace.as_str()))
    });
    // A collision keeps its `!!`: the row is red either way and the detail names the write.
    let marker = if inv.cross_invocation {
        Span::styled("!!", theme.collision())
    } else if writes_public {
        Span::styled("PW", theme.collision())
    } else if inv.live {
        Span::styled("● ", theme.live())
    } else {
        Span::styled("○ ", theme.dim())
    };
    let ns = if narrow {
        short_namespace(&inv.namespace)
    } else {
        inv.namespace.clone()
    };
    let name = if inv.forced { format!("{ns}*") } else { ns };
    let age = inv
        .started_at
        .map(|t| fmt_age((app.display_now() - t).num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "?".into());
    let style = if inv.cross_invocation {
        theme.collision()
    } else if inv.blocked > 0 {
        theme.blocked()
    } else {
        Style::new()
    };
    let mut cells = vec![Cell::from(marker), Cell::from(name), Cell::from(age)];
    if wide {
        cells.push(Cell::from(
            inv.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ));
    }
    Row::new(cells.into_iter().chain([
        Cell::from(inv.workers.len().to_string()),
        Cell::from(inv.sessions.to_string()),
        Cell::from(inv.databases.len().to_string()),
        Cell::from(inv.blocked.to_string()),
        Cell::from(inv.blocking.to_string()),
        Cell::from(inv.schemas.to_string()),
    ]))
    .style(style)
}

/// A run that writes into a shared schema (lock evidence: it does) is drawn in the collision
/// style, its marker `PW`; one connected to a database without its worker schema (the
/// fall-through's precondition) in the warning style. The detail says what and where.
fn mark_public_write(
    row: Row<'static>,
    snap: &Snapshot,
    theme: &Theme,
    inv: &InvocationReport,
) -> Row<'static> {
    let ns = inv.namespace.as_str();
    if snap
        .public_writes
        .iter()
        .any(|w| w.namespace.as_deref() == Some(ns))
    {
        return row.style(theme.collision());
    }
    // The warning colour only where no blocking colour says more.
    let quiet = inv.blocked == 0 && !inv.cross_invocation;
    if quiet
        && snap
            .missing_worker_schemas
            .iter()
            .any(|m| m.namespace == ns)
    {
        return row.style(theme.warning());
    }
    row
}

/// The sessions without a namespace, as one dim row.
fn others_row(snap: &Snapshot, theme: &Theme, wide: bool) -> Row<'static> {
    let others: Vec<&SessionReport> = snap
        .sessions
        .iter()
        .filter(|s| s.namespace.is_none())
        .collect();
    let blocked = others.iter().filter(|s| !s.blocked_by.is_empty()).count();
    let blocking = others.iter().filter(|s| !s.blocking.is_empty()).count();
    let mut cells = vec![Cell::from("  "), Cell::from("(unlabeled)"), Cell::from("")];
    if wide {
        cells.push(Cell::from(""));
    }
    Row::new(cells.into_iter().chain([
        Cell::from(""),
        Cell::from(others.len().to_string()),
        Cell::from(""),
        Cell::from(blocked.to_string()),
        Cell::from(blocking.to_string()),
        Cell::from(""),
    ]))
    .style(theme.dim())
}
