//! The lock pane: each tree from its root blocker down, one line per waiter with how long it has
//! waited and the lock it waits for; a session waiting in two places is drawn once and referenced
//! the second time.

use super::cells::short_label;
use super::{empty, pane_block, window, PaneArea};
use crate::domain::format::fmt_age;
use crate::domain::lockgraph::compact_prefixes;
use crate::domain::snapshot::{BlockingEdge, LockTree, SessionReport, Snapshot, WaitSource};
use crate::tui::app::{App, LockRow, Pane, RowKey};
use crate::tui::theme::Theme;
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
    at: PaneArea,
    selected: Option<usize>,
) {
    let area = at.rect;
    let rows = &app.model.locks;
    // Trees shown (the filter keeps a tree whole when any member matches).
    let mut trees: Vec<usize> = rows.iter().map(|r| r.tree).collect();
    trees.dedup();
    let height = at.rows(Pane::Locks);
    let (start, end) = window(selected, rows.len(), height);
    let cut = cut_trees(rows, start, end, snap);
    let block = pane_block(app, theme, Pane::Locks, trees.len(), at, cut);
    if rows.is_empty() {
        return empty(frame, block, theme, "nothing is blocked", area);
    }
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
    let width = at.inner_width() as usize;
    let fitted: Vec<Fitted> = rows[start..end]
        .iter()
        .map(|r| {
            let parent = match &r.key {
                RowKey::Lock { parent, .. } => *parent,
                _ => None,
            };
            let prefix = prefixes[&r.tree][r.row].as_str();
            row_line(app, snap, theme, r.tree, r.row, parent, prefix)
        })
        .collect();
    // Too wide: first the run ids give way (`…0a0a/gw1`, on every line, so that one run reads
    // the same on all of them), then the database name, the lock text, the label, each with an
    // ellipsis; never the pid, `!!` or `COLLISION`.
    let tiny = fitted.iter().any(|f| f.line.width() > width);
    let lines: Vec<Line> = fitted
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let line = fit_line(f, width, tiny);
            if Some(start + i) == selected {
                line.patch_style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// What a window of the lock rows leaves out, in words: `1 victim of 4100 hidden · +2 trees`.
fn cut_trees(rows: &[LockRow], start: usize, end: usize, snap: &Snapshot) -> Option<String> {
    let mut parts = Vec::new();
    let (mut above, mut below) = (0usize, 0usize);
    let mut tree_at = 0;
    while tree_at < rows.len() {
        let t = rows[tree_at].tree;
        let len = rows[tree_at..].iter().take_while(|r| r.tree == t).count();
        let (a, b) = (tree_at, tree_at + len);
        let shown = b.min(end).saturating_sub(a.max(start));
        if shown == 0 {
            if b <= start {
                above += 1;
            } else {
                below += 1;
            }
        } else if shown < len {
            let hidden = len - shown;
            let root = snap.lock_trees[t].root_pid;
            parts.push(format!(
                "{hidden} {} of {root} hidden",
                if hidden == 1 { "victim" } else { "victims" }
            ));
        }
        tree_at = b;
    }
    if above > 0 {
        parts.insert(
            0,
            format!("↑{above} tree{}", if above == 1 { "" } else { "s" }),
        );
    }
    if below > 0 {
        parts.push(format!(
            "+{below} tree{}",
            if below == 1 { "" } else { "s" }
        ));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// A line and how it gives way when too wide: `swap` first replaces a span with a shorter form
/// (the run id's tail), then the spans in `shrink` are cut, first the first.
struct Fitted {
    line: Line<'static>,
    swap: Option<(usize, String)>,
    shrink: Vec<usize>,
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
) -> Fitted {
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
    let tiny = session.and_then(tiny_label);
    let db = session.map(|s| s.database.clone()).unwrap_or_default();
    if row.depth == 0 {
        // The run id gives way first, then the database name, then the label.
        return Fitted {
            line: root_line(theme, tree, row.pid, &label, &db),
            swap: tiny.map(|t| (2, format!("{t} ["))),
            shrink: vec![3, 2],
        };
    }
    if row.reference {
        let line = Line::from(vec![
            Span::styled(format!("{prefix}↳ "), theme.dim()),
            Span::styled(format!("{} ", row.pid), theme.header()),
            Span::raw(format!("{label} ")),
            Span::styled("(drawn above; also waits here)", theme.dim()),
        ]);
        return Fitted {
            line,
            swap: tiny.map(|t| (2, format!("{t} "))),
            shrink: vec![3, 2],
        };
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
    let (line, shrink, label_at) = waiter_line(theme, prefix, &waiter, edge);
    Fitted {
        line,
        swap: tiny.map(|t| (label_at, format!("{t} ["))),
        shrink,
    }
}

/// The run id's last four hex digits and the worker, `…0a0a/gw1_setup`: what tells runs apart on
/// one screen, for lines that do not fit with the fuller `p4100…0a0a`.
fn tiny_label(s: &SessionReport) -> Option<String> {
    let short = short_label(s);
    let (_, tail) = short.split_once('…')?;
    Some(format!("…{tail}"))
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
) -> (Line<'static>, Vec<usize>, usize) {
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
    // The database name gives way first, then the lock text, then the label.
    shrink.insert(0, label_at + 1);
    shrink.push(label_at);
    (Line::from(spans), shrink, label_at)
}

/// Makes the line fit `width`: the swap first (when `tiny`), then the spans in `shrink` (first the first), each
/// cut with an ellipsis; what is not named (pids, markers, `COLLISION`) is never cut.
fn fit_line(fitted: Fitted, width: usize, tiny: bool) -> Line<'static> {
    let Fitted {
        mut line,
        swap,
        shrink,
    } = fitted;
    if tiny {
        if let Some((i, short)) = swap {
            if let Some(span) = line.spans.get_mut(i) {
                span.content = short.into();
            }
        }
    }
    for &i in &shrink {
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
