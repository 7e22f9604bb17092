//! The lock pane: each tree from its root blocker down, one line per waiter with how long it has
//! waited and the lock it waits for; a session waiting in two places is drawn once and referenced
//! the second time.

use super::cells::short_label;
use super::{empty, pane_block, window};
use crate::domain::format::fmt_age;
use crate::domain::lockgraph::compact_prefixes;
use crate::domain::snapshot::{BlockingEdge, LockTree, SessionReport, Snapshot, WaitSource};
use crate::tui::app::{App, Pane, RowKey};
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::HashMap;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    area: Rect,
    selected: Option<usize>,
) {
    let rows = &app.model.locks;
    // Trees shown (the filter keeps a tree whole when any member matches).
    let mut trees: Vec<usize> = rows.iter().map(|r| r.tree).collect();
    trees.dedup();
    let block = pane_block(app, theme, Pane::Locks, trees.len());
    if rows.is_empty() {
        return empty(frame, block, theme, "nothing is blocked", area);
    }
    let height = area.height.saturating_sub(2) as usize;
    let (start, end) = window(selected, rows.len(), height);
    // Box-drawing prefixes, once per tree on screen.
    let mut prefixes: HashMap<usize, Vec<String>> = HashMap::new();
    for r in &rows[start..end] {
        prefixes.entry(r.tree).or_insert_with(|| {
            let depths: Vec<usize> = snap.lock_trees[r.tree]
                .rows
                .iter()
                .map(|x| x.depth)
                .collect();
            compact_prefixes(&depths)
        });
    }
    let lines: Vec<Line> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let parent = match &r.key {
                RowKey::Lock { parent, .. } => *parent,
                _ => None,
            };
            let prefix = prefixes[&r.tree][r.row].as_str();
            let (line, shrink) = row_line(app, snap, theme, r.tree, r.row, parent, prefix);
            let shrink: Vec<usize> = shrink.into_iter().collect();
            // Too wide: the lock and relation text gives way (with an ellipsis), never the
            // collision marker at the end.
            let line = fit_line(line, area.width.saturating_sub(2) as usize, &shrink);
            if Some(start + i) == selected {
                line.patch_style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Row `row_idx` of tree `tree_idx`: the root, a reference to a session drawn above, or a waiter.
fn row_line(
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    tree_idx: usize,
    row_idx: usize,
    parent: Option<i32>,
    prefix: &str,
) -> (Line<'static>, Vec<usize>) {
    let tree = &snap.lock_trees[tree_idx];
    let row = &tree.rows[row_idx];
    let session = app
        .model
        .session_index
        .get(&(tree.server.clone(), row.pid))
        .map(|&i| &snap.sessions[i]);
    let label = match (row.pid, session) {
        (0, _) => "prepared transaction".to_string(),
        (_, Some(s)) => short_label(s),
        (_, None) => "(not visible)".to_string(),
    };
    let db = session.map(|s| s.database.clone()).unwrap_or_default();
    if row.depth == 0 {
        // The database name gives way first, then the label.
        return (root_line(theme, tree, row.pid, &label, &db), vec![3, 2]);
    }
    if row.reference {
        let line = Line::from(vec![
            Span::styled(format!("{prefix}↳ "), theme.dim()),
            Span::styled(format!("{} ", row.pid), theme.header()),
            Span::raw(format!("{label} ")),
            Span::styled("(drawn above; also waits here)", theme.dim()),
        ]);
        return (line, vec![3, 2]);
    }
    let edge = parent.and_then(|p| {
        app.model
            .edge_index
            .get(&(tree.server.clone(), p, row.pid))
            .map(|&i| &snap.blocking[i])
    });
    let waiter = Waiter {
        pid: row.pid,
        label,
        db,
        session,
        parent,
    };
    waiter_line(theme, prefix, &waiter, edge)
}

/// `■ 4100 p4100…0a0a/gw0 [platform] IDLE IN TX 2m holds up 3 !!`
fn root_line(theme: &Theme, tree: &LockTree, pid: i32, label: &str, db: &str) -> Line<'static> {
    let (state, style) = if tree.root_idle_in_transaction {
        (
            format!(
                "IDLE IN TX {}",
                tree.root_xact_age_s.map(fmt_age).unwrap_or_default()
            ),
            theme.idle_in_transaction(),
        )
    } else {
        (
            tree.root_state.clone().unwrap_or_else(|| "?".into()),
            Style::new(),
        )
    };
    let mut spans = vec![
        Span::styled("■ ", theme.bad()),
        Span::styled(format!("{pid} "), theme.header()),
        Span::raw(format!("{label} [")),
        Span::raw(db.to_string()),
        Span::raw("] "),
        Span::styled(state, style),
        Span::raw(format!(" holds up {}", tree.victims)),
    ];
    if tree.cross_invocation {
        spans.push(Span::styled(" !!", theme.collision()));
    }
    Line::from(spans)
}

/// A session drawn as a waiter under `parent`.
struct Waiter<'a> {
    pid: i32,
    label: String,
    db: String,
    session: Option<&'a SessionReport>,
    parent: Option<i32>,
}

/// `├─ 4101 !! p4200…0b0b/gw1 [platform] 12s RowExclusiveLock on public.t … COLLISION`
fn waiter_line(
    theme: &Theme,
    prefix: &str,
    w: &Waiter,
    edge: Option<&BlockingEdge>,
) -> (Line<'static>, Vec<usize>) {
    let mut shrink = Vec::new();
    let mut spans = vec![
        Span::styled(prefix.to_string(), theme.dim()),
        Span::styled(format!("{} ", w.pid), theme.header()),
    ];
    if edge.is_some_and(|e| e.cross_invocation) {
        // Early in the line, so it survives a narrow terminal.
        spans.push(Span::styled("!! ", theme.collision()));
    }
    let label_at = spans.len();
    spans.push(Span::raw(format!("{} [", w.label)));
    spans.push(Span::raw(w.db.clone()));
    spans.push(Span::raw("] "));
    if let Some(e) = edge {
        let wait = e
            .waiting_s
            .map(|s| match e.wait_source {
                Some(WaitSource::QueryStart) => format!("≤{}", fmt_age(s)),
                _ => fmt_age(s),
            })
            .unwrap_or_default();
        spans.push(Span::styled(format!("{wait} "), theme.blocked()));
        shrink.push(spans.len());
        spans.push(Span::raw(e.wait.clone()));
        if e.cross_invocation {
            spans.push(Span::styled(" COLLISION", theme.collision()));
        }
    }
    let also: Vec<String> = w
        .session
        .map(|s| {
            s.blocked_by
                .iter()
                .filter(|&&b| Some(b) != w.parent)
                .map(|b| b.to_string())
                .collect()
        })
        .unwrap_or_default();
    if !also.is_empty() {
        spans.push(Span::styled(
            format!(" ↳ also waits for {}", also.join(", ")),
            theme.dim(),
        ));
    }
    // The lock text gives way first, then the database name, then the label.
    shrink.extend([label_at + 1, label_at]);
    (Line::from(spans), shrink)
}

/// Shortens the spans in `order` (first the first), each with an ellipsis, until the line fits
/// `width`; what is not in `order` (pids, markers, `COLLISION`) is never cut.
fn fit_line(mut line: Line<'static>, width: usize, order: &[usize]) -> Line<'static> {
    for &i in order {
        let excess = line.width().saturating_sub(width);
        if excess == 0 {
            break;
        }
        let Some(span) = line.spans.get_mut(i) else {
            continue;
        };
        let len = span.content.chars().count();
        if len <= 1 {
            continue;
        }
        let keep = len.saturating_sub(excess + 1);
        let cut: String = span.content.chars().take(keep).collect();
        span.content = format!("{cut}…").into();
    }
    line
}
