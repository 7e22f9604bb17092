//! Drawing. Takes `&App` and draws; never changes state, never waits for anything.
//!
//! Layout: a header strip (one cell per configured database, refresh state, last good poll), notices
//! (unreachable databases, missing privileges), the three panes and a footer of key hints generated
//! from the key map. From 120x30 up the invocation and lock panes sit side by side; below that the
//! panes stack and the focused one gets most of the room. Only the visible rows of a pane are built,
//! so a frame costs the same with 50 or 5,000 sessions.

use crate::domain::format::{fmt_age, fmt_bytes, session_label};
use crate::domain::snapshot::{SchemaStatus, SessionReport, Snapshot, WaitSource};
use crate::tui::app::{App, Overlay, Pane, RowKey, SweepView};
use crate::tui::keys::{footer_hints, BINDINGS};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    let header = header_lines(app, theme, area.width);
    let notices = notice_lines(app, theme);
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
    frame.render_widget(Paragraph::new(footer_line(app, theme)), footer);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => draw_popup(frame, theme, "Keys", help_lines(theme)),
        Overlay::Sweep(view) => draw_popup(frame, theme, "Sweep", sweep_lines(app, theme, view)),
        Overlay::Detail(key) => {
            let title = match key {
                RowKey::Invocation(_) | RowKey::OtherSessions => "Invocation",
                RowKey::Lock { .. } => "Session",
                RowKey::Schema { .. } => "Schema",
            };
            draw_popup(frame, theme, title, detail_lines(app, theme, key));
        }
    }
    scrub(frame.buffer_mut());
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

fn header_lines(app: &App, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    let mut first = vec![Span::styled(" pgswarm ", theme.title())];
    if let Some(r) = &app.replay {
        first.push(Span::styled(
            format!(
                "REPLAY {} {} ×{} ({}/{}) ",
                r.clock
                    .with_timezone(&app.utc_offset)
                    .format("%Y-%m-%d %H:%M:%S"),
                if r.playing { "▶" } else { "⏸" },
                r.speed,
                r.pos + 1,
                r.snapshots.len()
            ),
            theme.warning().add_modifier(Modifier::BOLD),
        ));
    } else if app.paused {
        first.push(Span::styled(
            if app.stale_while_paused {
                "⏸ PAUSED (newer data waiting) "
            } else {
                "⏸ PAUSED "
            },
            theme.warning().add_modifier(Modifier::BOLD),
        ));
    } else {
        first.push(Span::styled("● live ", theme.ok()));
    }
    first.push(Span::raw(format!(
        "every {}",
        humantime::format_duration(app.interval)
    )));
    if let Some(s) = &app.model.snapshot {
        let collisions = s.blocking.iter().filter(|e| e.cross_invocation).count();
        first.push(Span::raw(format!(" · {} sessions · ", s.sessions.len())));
        let blocked = s.blocked_sessions();
        first.push(Span::styled(
            format!("{blocked} blocked"),
            if blocked > 0 {
                theme.blocked()
            } else {
                Style::new()
            },
        ));
        if collisions > 0 {
            first.push(Span::raw(" · "));
            first.push(Span::styled(
                format!(
                    "!! {collisions} collision{}",
                    if collisions == 1 { "" } else { "s" }
                ),
                theme.collision(),
            ));
        }
    }
    match app.last_good_poll {
        Some(t) => first.push(Span::styled(
            format!(
                " · last poll {}",
                t.with_timezone(&app.utc_offset).format("%H:%M:%S")
            ),
            theme.dim(),
        )),
        None => first.push(Span::styled(" · waiting for the first poll…", theme.dim())),
    }
    let mut lines = vec![Line::from(first)];

    // One cell per configured database, wrapped to the width, at most three lines.
    let mut cells: Vec<Vec<Span<'static>>> = Vec::new();
    for name in &app.databases {
        let report = app
            .model
            .snapshot
            .as_ref()
            .and_then(|s| s.databases.iter().find(|d| &d.name == name));
        let mut cell = vec![Span::styled(name.clone(), theme.header())];
        match report {
            None => cell.push(Span::styled(" …", theme.dim())),
            Some(d) if d.not_read_yet => cell.push(Span::styled(" … not read yet", theme.dim())),
            Some(d) if d.stale_since.is_some() => {
                let at = d
                    .stale_since
                    .map(|t| {
                        t.with_timezone(&app.utc_offset)
                            .format("%H:%M:%S")
                            .to_string()
                    })
                    .unwrap_or_default();
                cell.push(Span::styled(
                    format!(" ⟳ stale, as of {at}"),
                    theme.warning(),
                ));
            }
            Some(d) if !d.reachable => cell.push(Span::styled(" ✗ unreachable", theme.bad())),
            Some(d) if d.error.is_some() => {
                cell.push(Span::styled(" ⚠ read failed", theme.warning()));
            }
            Some(d) => {
                cell.push(Span::styled(" ✓", theme.ok()));
                let ms = app
                    .probe_time
                    .get(name)
                    .map(|t| t.as_secs_f64() * 1000.0)
                    .or(d.latency_ms);
                if let Some(ms) = ms {
                    cell.push(Span::raw(format!(" {ms:.0}ms")));
                }
                cell.push(Span::raw(format!(" {}s", d.sessions)));
                if d.blocked > 0 {
                    cell.push(Span::styled(format!(" {}b", d.blocked), theme.blocked()));
                }
            }
        }
        cells.push(cell);
    }
    let mut line: Vec<Span<'static>> = vec![Span::raw(" ")];
    let mut used = 1usize;
    for cell in cells {
        let w: usize = cell
            .iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
            + 3;
        if used + w > width as usize && used > 1 {
            lines.push(Line::from(std::mem::take(&mut line)));
            line = vec![Span::raw(" ")];
            used = 1;
            if lines.len() == 4 {
                break;
            }
        }
        used += w;
        line.extend(cell);
        line.push(Span::styled(" │ ", theme.dim()));
    }
    if line.len() > 1 && lines.len() < 4 {
        line.pop();
        lines.push(Line::from(line));
    }
    lines
}

fn notice_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let Some(s) = &app.model.snapshot else {
        return out;
    };
    for d in s
        .databases
        .iter()
        .filter(|d| !d.reachable && !d.not_read_yet)
    {
        let since = app
            .unreachable_since
            .get(&d.name)
            .map(|t| {
                format!(
                    " since {}",
                    t.with_timezone(&app.utc_offset).format("%H:%M:%S")
                )
            })
            .unwrap_or_default();
        let what = if d.stale_since.is_some() {
            "shown as last read; unreadable"
        } else {
            "unreachable"
        };
        out.push(Line::from(vec![
            Span::styled(format!(" {} {what}{since}: ", d.name), theme.bad()),
            Span::raw(d.error.clone().unwrap_or_default()),
        ]));
    }
    for code in &s.warning_codes {
        if *code == crate::domain::snapshot::WarningCode::InsufficientPrivilege {
            out.push(Line::styled(
                " some sessions show <insufficient privilege>: GRANT pg_read_all_stats (or pg_monitor) TO the monitoring role",
                theme.warning(),
            ));
        }
    }
    if out.len() > 3 {
        let more = out.len() - 2;
        out.truncate(2);
        out.push(Line::styled(format!(" … {more} more notices"), theme.dim()));
    }
    out
}

fn footer_line(app: &App, theme: &Theme) -> Line<'static> {
    if app.filter_editing {
        return Line::from(vec![
            Span::styled(" filter: ", theme.header()),
            Span::raw(format!("{}▏", app.filter)),
            Span::styled("  Enter keep · Esc clear", theme.dim()),
        ]);
    }
    let mut spans = Vec::new();
    if app.replay.is_some() {
        for (key, what) in [
            ("q", "quit"),
            ("space", "play"),
            (".,", "step"),
            ("+-", "speed"),
            ("[]", "seek 1m"),
            ("Tab", "pane"),
            ("↵", "detail"),
            ("/", "filter"),
        ] {
            spans.push(Span::styled(format!(" {key}"), theme.header()));
            spans.push(Span::styled(format!(" {what} "), theme.dim()));
        }
        return Line::from(spans);
    }
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!(" filter: {} (Esc clears) ", app.filter),
            theme.warning(),
        ));
    }
    for (key, what) in footer_hints() {
        spans.push(Span::styled(format!(" {key}"), theme.header()));
        spans.push(Span::styled(format!(" {what} "), theme.dim()));
    }
    Line::from(spans)
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
    if area.width >= 120 && area.height >= 26 {
        // Lock trees get the full width: their lines carry the most.
        let [top, bottom] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
        let [left, right] =
            Layout::horizontal([Constraint::Length(66), Constraint::Fill(1)]).areas(top);
        draw_pane(frame, app, theme, Pane::Invocations, left);
        draw_pane(frame, app, theme, Pane::Schemas, right);
        draw_pane(frame, app, theme, Pane::Locks, bottom);
    } else {
        // Stacked: unfocused panes take what their rows need up to a cap (lock trees get the
        // largest), the focused pane takes the rest.
        let body = area.height;
        let constraints = Pane::ALL.map(|p| {
            if p == app.focus {
                return Constraint::Fill(1);
            }
            let (rows, chrome) = match p {
                Pane::Invocations => (app.model.invocations.len(), 3),
                Pane::Locks => (app.model.locks.len(), 2),
                Pane::Schemas => (app.model.schemas.len(), 3),
            };
            let cap = match p {
                Pane::Locks => (body * 2 / 5).max(4),
                _ => (body / 4).max(4),
            };
            Constraint::Length((rows.max(1) as u16 + chrome).min(cap))
        });
        let areas = Layout::vertical(constraints).split(area);
        for (i, p) in Pane::ALL.into_iter().enumerate() {
            draw_pane(frame, app, theme, p, areas[i]);
        }
    }
}

/// `test_p4100…0a0a_gw0` for a generated-token schema (the full name is in the detail view).
fn compact_schema(name: &str, prefix: &str) -> String {
    match crate::domain::naming::parse_schema_name(prefix, name) {
        Some(crate::domain::naming::SchemaName::Namespaced { namespace, worker }) => {
            match namespace.token() {
                Some(t) => format!("{prefix}_p{}…{:04x}_{worker}", t.pid, t.entropy & 0xffff),
                None => name.to_string(),
            }
        }
        _ => name.to_string(),
    }
}

/// `p10001…1eef` for a generated token; forced namespaces as they are.
fn short_namespace(ns: &str) -> String {
    match crate::domain::naming::Namespace::parse(ns).and_then(|n| n.token()) {
        Some(t) => format!("p{}…{:04x}", t.pid, t.entropy & 0xffff),
        None => ns.to_string(),
    }
}

/// A compact session label for tree lines: `p4100…0a0a/gw1_setup` for generated tokens.
fn short_label(s: &SessionReport) -> String {
    match (&s.namespace, &s.worker) {
        (Some(ns), Some(w)) => {
            let ns = short_namespace(ns);
            let mut l = format!("{ns}/{w}");
            if let Some(suffix) = &s.suffix {
                l.push('_');
                l.push_str(suffix);
            }
            l
        }
        _ => session_label(s),
    }
}

/// `512B`, `192K`, `3.4M`, `1.2G`: sizes for narrow columns.
fn fmt_bytes_short(b: i64) -> String {
    let b = b.max(0) as f64;
    let (v, unit) = if b < 1024.0 {
        return format!("{b}B");
    } else if b < 1024.0 * 1024.0 {
        (b / 1024.0, "K")
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        (b / 1024.0 / 1024.0, "M")
    } else {
        (b / 1024.0 / 1024.0 / 1024.0, "G")
    };
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
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
        .title(Span::styled(
            format!(" {} ({count}) ", pane.title()),
            if focused {
                theme.title()
            } else {
                theme.header()
            },
        ))
}

fn draw_pane(frame: &mut Frame, app: &App, theme: &Theme, pane: Pane, area: Rect) {
    let Some(snap) = &app.model.snapshot else {
        return;
    };
    let selected = app.selected_index(pane).filter(|_| app.focus == pane);
    match pane {
        Pane::Invocations => draw_invocations(frame, app, snap, theme, area, selected),
        Pane::Locks => draw_locks(frame, app, snap, theme, area, selected),
        Pane::Schemas => draw_schemas(frame, app, snap, theme, area, selected),
    }
}

fn empty(frame: &mut Frame, block: Block<'static>, theme: &Theme, text: &str, area: Rect) {
    frame.render_widget(
        Paragraph::new(Span::styled(text.to_string(), theme.dim())).block(block),
        area,
    );
}

fn draw_invocations(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    area: Rect,
    selected: Option<usize>,
) {
    let rows = &app.model.invocations;
    let block = pane_block(app, theme, Pane::Invocations, rows.len());
    if rows.is_empty() {
        return empty(
            frame,
            block,
            theme,
            "no test sessions and no test schemas",
            area,
        );
    }
    let height = area.height.saturating_sub(3) as usize;
    let (start, end) = window(selected, rows.len(), height);
    // A generated namespace needs 26 columns; below that width show `p10001…1eef`. The runner pid
    // (also inside a generated namespace) gets its own column when there is room.
    let narrow = area.width < 66;
    let wide = area.width >= 76;
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let mut row = match idx {
                Some(idx) => {
                    let inv = &snap.invocations[*idx];
                    let marker = if inv.cross_invocation {
                        Span::styled("!!", theme.collision())
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
                        .map(|t| fmt_age((app.now - t).num_milliseconds() as f64 / 1000.0))
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
                None => {
                    let others: Vec<&SessionReport> = snap
                        .sessions
                        .iter()
                        .filter(|s| s.namespace.is_none())
                        .collect();
                    let blocked = others.iter().filter(|s| !s.blocked_by.is_empty()).count();
                    let blocking = others.iter().filter(|s| !s.blocking.is_empty()).count();
                    let mut cells =
                        vec![Cell::from("  "), Cell::from("(unlabeled)"), Cell::from("")];
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
            };
            if Some(start + i) == selected {
                row = row.style(theme.selected());
            }
            row
        })
        .collect();
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
    let header = Row::new(titles).style(theme.header());
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn lock_row_line(
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    tree_idx: usize,
    row_idx: usize,
    parent: Option<i32>,
    prefix: &str,
) -> Line<'static> {
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
            Span::styled(format!("{} ", row.pid), theme.header()),
            Span::raw(format!("{label} [{db}] ")),
            Span::styled(state, style),
            Span::raw(format!(" holds up {}", tree.victims)),
        ];
        if tree.cross_invocation {
            spans.push(Span::styled(" !!", theme.collision()));
        }
        return Line::from(spans);
    }
    if row.reference {
        return Line::from(vec![
            Span::styled(format!("{prefix}↳ "), theme.dim()),
            Span::styled(format!("{} ", row.pid), theme.header()),
            Span::raw(format!("{label} ")),
            Span::styled("(drawn above; also waits here)", theme.dim()),
        ]);
    }
    let edge = parent.and_then(|p| {
        app.model
            .edge_index
            .get(&(tree.server.clone(), p, row.pid))
            .map(|&i| &snap.blocking[i])
    });
    let mut spans = vec![
        Span::styled(prefix.to_string(), theme.dim()),
        Span::styled(format!("{} ", row.pid), theme.header()),
    ];
    if edge.is_some_and(|e| e.cross_invocation) {
        // Early in the line, so it survives a narrow terminal.
        spans.push(Span::styled("!! ", theme.collision()));
    }
    spans.push(Span::raw(format!("{label} [{db}] ")));
    if let Some(e) = edge {
        let wait = e
            .waiting_s
            .map(|w| match e.wait_source {
                Some(WaitSource::QueryStart) => format!("≤{}", fmt_age(w)),
                _ => fmt_age(w),
            })
            .unwrap_or_default();
        spans.push(Span::styled(format!("{wait} "), theme.blocked()));
        spans.push(Span::raw(e.wait.clone()));
        if e.cross_invocation {
            spans.push(Span::styled(" COLLISION", theme.collision()));
        }
    }
    let also: Vec<String> = session
        .map(|s| {
            s.blocked_by
                .iter()
                .filter(|&&b| Some(b) != parent)
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
    Line::from(spans)
}

fn draw_locks(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    area: Rect,
    selected: Option<usize>,
) {
    let rows = &app.model.locks;
    let block = pane_block(app, theme, Pane::Locks, snap.lock_trees.len());
    if rows.is_empty() {
        return empty(frame, block, theme, "nothing is blocked", area);
    }
    let height = area.height.saturating_sub(2) as usize;
    let (start, end) = window(selected, rows.len(), height);
    // Box-drawing prefixes, once per tree on screen.
    let mut prefixes: std::collections::HashMap<usize, Vec<String>> = Default::default();
    for r in &rows[start..end] {
        prefixes.entry(r.tree).or_insert_with(|| {
            let depths: Vec<usize> = snap.lock_trees[r.tree]
                .rows
                .iter()
                .map(|x| x.depth)
                .collect();
            crate::domain::lockgraph::compact_prefixes(&depths)
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
            let line = lock_row_line(app, snap, theme, r.tree, r.row, parent, prefix);
            if Some(start + i) == selected {
                line.patch_style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_schemas(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    area: Rect,
    selected: Option<usize>,
) {
    let rows = &app.model.schemas;
    let block = pane_block(app, theme, Pane::Schemas, rows.len());
    if rows.is_empty() {
        let text = format!("no {}_* schemas", snap.schema_prefix);
        return empty(frame, block, theme, &text, area);
    }
    let height = area.height.saturating_sub(3) as usize;
    let (start, end) = window(selected, rows.len(), height);
    // Full generated-token schema names need ~70 columns with the other fields.
    let compact = area.width < 72;
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let s = &snap.schemas[*idx];
            let (word, style) = match s.status {
                SchemaStatus::Live => ("live", theme.live()),
                SchemaStatus::Orphaned => ("orphaned", theme.orphaned()),
                SchemaStatus::Legacy => ("legacy", theme.legacy()),
                SchemaStatus::Unknown => ("unknown", theme.dim()),
            };
            let size = if s.bytes_exact {
                fmt_bytes_short(s.bytes)
            } else {
                format!("~{}", fmt_bytes_short(s.bytes))
            };
            let name = if compact {
                compact_schema(&s.schema, &snap.schema_prefix)
            } else {
                s.schema.clone()
            };
            let mut row = Row::new(vec![
                Cell::from(Span::styled(word, style)),
                Cell::from(s.database.clone()),
                Cell::from(name),
                Cell::from(s.tables.to_string()),
                Cell::from(size),
            ]);
            if Some(start + i) == selected {
                row = row.style(theme.selected());
            }
            row
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Min(20),
            Constraint::Length(4),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["STATUS", "DATABASE", "SCHEMA", "TBLS", "SIZE"]).style(theme.header()))
    .column_spacing(1)
    .block(block);
    frame.render_widget(table, area);
}

fn draw_popup(frame: &mut Frame, theme: &Theme, title: &str, mut lines: Vec<Line<'static>>) {
    let area = frame.area();
    // Too long for the screen: cut the middle, never the last two lines (what the keys do).
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

fn help_lines(theme: &Theme) -> Vec<Line<'static>> {
    let mut out: Vec<Line> = BINDINGS
        .iter()
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

fn kv(k: &str, v: impl Into<String>) -> Line<'static> {
    Line::from(vec![
        Span::styled(
            format!(" {k:<18}"),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(v.into()),
    ])
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn session_detail(snap: &Snapshot, s: &SessionReport, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = vec![
        kv("pid", s.pid.to_string()),
        kv("application_name", s.application_name.clone()),
        kv(
            "invocation",
            s.namespace.clone().unwrap_or_else(|| "-".into()),
        ),
        kv(
            "worker / suffix",
            format!(
                "{} / {}{}",
                s.worker.as_deref().unwrap_or("-"),
                s.suffix.as_deref().unwrap_or("-"),
                if s.suffix_maybe_truncated {
                    " (cut)"
                } else {
                    ""
                }
            ),
        ),
        kv("database", format!("{} on {}", s.database, s.server)),
        kv("user", s.usename.clone().unwrap_or_else(|| "-".into())),
        kv("state", s.state.clone().unwrap_or_else(|| "-".into())),
        kv(
            "wait",
            format!(
                "{} {}",
                s.wait_event_type.as_deref().unwrap_or("-"),
                s.wait_event.as_deref().unwrap_or("")
            ),
        ),
        kv("backend_start", ts(s.backend_start)),
        kv("xact_start", ts(s.xact_start)),
        kv("query_start", ts(s.query_start)),
        kv("state_change", ts(s.state_change)),
    ];
    if !s.blocked_by.is_empty() {
        out.push(Line::styled(" waits for", theme.blocked()));
        out.push(kv(
            "  for",
            s.waiting_s
                .map(|w| match s.wait_source {
                    Some(WaitSource::QueryStart) => format!("≤{} (since query start)", fmt_age(w)),
                    _ => fmt_age(w),
                })
                .unwrap_or_else(|| "?".into()),
        ));
        // One line per blocker, in the words the lock tree and the text report use.
        for e in snap
            .blocking
            .iter()
            .filter(|e| e.blocked_pid == s.pid && e.server == s.server)
        {
            let who = snap
                .sessions
                .iter()
                .find(|x| x.pid == e.blocker_pid && x.server == s.server)
                .map(session_label)
                .unwrap_or_default();
            out.push(kv(
                &format!("  by {}", e.blocker_pid),
                format!("{who}: {}", e.wait),
            ));
        }
    }
    if !s.blocking.is_empty() {
        out.push(kv(
            "blocks",
            s.blocking
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    out.push(Line::styled(
        " query",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    for l in s.query.as_deref().unwrap_or("-").lines() {
        out.push(Line::raw(format!("   {l}")));
    }
    out
}

fn detail_lines(app: &App, theme: &Theme, key: &RowKey) -> Vec<Line<'static>> {
    let Some(snap) = &app.model.snapshot else {
        return vec![Line::raw(" no data yet")];
    };
    let gone = || {
        vec![Line::styled(
            " no longer present in the latest poll",
            theme.dim(),
        )]
    };
    match key {
        RowKey::Lock { server, pid, .. } => app
            .model
            .session_index
            .get(&(server.clone(), *pid))
            .map(|&i| session_detail(snap, &snap.sessions[i], theme))
            .unwrap_or_else(gone),
        RowKey::Invocation(ns) => {
            let Some(inv) = snap.invocations.iter().find(|i| &i.namespace == ns) else {
                return gone();
            };
            let mut out = vec![
                kv("namespace", inv.namespace.clone()),
                kv(
                    "runner",
                    match (inv.pid, inv.started_at) {
                        (Some(p), Some(t)) => format!("pid {p}, started {}", ts(Some(t))),
                        _ => "forced namespace: runner and age unknown".into(),
                    },
                ),
                kv("workers", inv.workers.join(", ")),
                kv("databases", inv.databases.join(", ")),
                kv(
                    "sessions",
                    format!(
                        "{} ({} blocked, {} blocking)",
                        inv.sessions, inv.blocked, inv.blocking
                    ),
                ),
                kv(
                    "schemas",
                    format!("{} ({})", inv.schemas, fmt_bytes(inv.schema_bytes)),
                ),
                Line::raw(""),
            ];
            for s in snap
                .sessions
                .iter()
                .filter(|s| s.namespace.as_deref() == Some(ns))
            {
                let style = if !s.blocked_by.is_empty() {
                    theme.blocked()
                } else {
                    Style::new()
                };
                out.push(Line::styled(
                    format!(
                        " {:>7} {:<8} {:<12} {:<20} {}",
                        s.pid,
                        s.worker.as_deref().unwrap_or("-"),
                        s.database,
                        s.state.as_deref().unwrap_or("-"),
                        s.query
                            .as_deref()
                            .unwrap_or("")
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    style,
                ));
            }
            out
        }
        RowKey::OtherSessions => snap
            .sessions
            .iter()
            .filter(|s| s.namespace.is_none())
            .map(|s| {
                Line::raw(format!(
                    " {:>7} {:<28} {:<12} {}",
                    s.pid,
                    session_label(s),
                    s.database,
                    s.state.as_deref().unwrap_or("-")
                ))
            })
            .collect(),
        RowKey::Schema { database, schema } => {
            let Some(s) = snap
                .schemas
                .iter()
                .find(|s| &s.database == database && &s.schema == schema)
            else {
                return gone();
            };
            let why = match s.status {
                SchemaStatus::Live => "its invocation has a session on a polled server",
                SchemaStatus::Orphaned => {
                    "no session of its invocation anywhere, every database read"
                }
                SchemaStatus::Legacy => "pre-namespace name: its owner cannot be known",
                SchemaStatus::Unknown => "no session seen, but a database could not be read",
            };
            vec![
                kv("schema", s.schema.clone()),
                kv("database", s.database.clone()),
                kv(
                    "namespace",
                    s.namespace.clone().unwrap_or_else(|| "-".into()),
                ),
                kv("worker", s.worker.clone()),
                kv("tables", s.tables.to_string()),
                kv(
                    "size",
                    format!(
                        "{}{}",
                        fmt_bytes(s.bytes),
                        if s.bytes_exact { "" } else { " (estimate)" }
                    ),
                ),
                kv("status", format!("{:?}: {why}", s.status).to_lowercase()),
            ]
        }
    }
}

fn sweep_lines(app: &App, theme: &Theme, view: &SweepView) -> Vec<Line<'static>> {
    use crate::domain::sweep::SweepPlan;
    let plan_lines = |plan: &SweepPlan| -> Vec<Line<'static>> {
        let age = (app.now - plan.planned_at).num_seconds().max(0);
        let mut out = vec![Line::from(vec![
            Span::styled(
                format!(
                    " plan made {} ({age} s ago) · live set ",
                    plan.planned_at
                        .with_timezone(&app.utc_offset)
                        .format("%H:%M:%S")
                ),
                theme.header(),
            ),
            if plan.active_detection_complete {
                Span::styled("complete", theme.ok())
            } else {
                Span::styled("INCOMPLETE: nothing will be dropped", theme.bad())
            },
        ])];
        for e in &plan.errors {
            out.push(Line::styled(
                format!("   {}: {}", e.database, e.error),
                theme.bad(),
            ));
        }
        for d in &plan.databases {
            if d.drop.is_empty() && d.keep.is_empty() {
                continue;
            }
            out.push(Line::styled(format!(" {}", d.name), theme.header()));
            for x in &d.drop {
                out.push(Line::from(vec![
                    Span::styled("   drop ", theme.orphaned()),
                    Span::raw(format!(
                        "{} ({} tables, ~{})",
                        x.schema,
                        x.tables,
                        fmt_bytes(x.bytes)
                    )),
                ]));
            }
            for k in &d.keep {
                out.push(Line::from(vec![
                    Span::styled("   keep ", theme.dim()),
                    Span::raw(format!("{} ", k.schema)),
                    Span::styled(k.reason.as_str(), theme.dim()),
                ]));
            }
        }
        out
    };
    match view {
        SweepView::Disabled => vec![Line::styled(
            if app.replay.is_some() {
                " replaying a recording: nothing here touches a database, the sweep is disabled"
            } else {
                " read-only mode (--read-only): the sweep is disabled"
            },
            theme.warning(),
        )],
        SweepView::Planning => vec![Line::raw(
            " planning: reading sessions and schemas from every configured database…",
        )],
        SweepView::Plan(plan) => {
            let mut out = plan_lines(plan);
            out.push(Line::raw(""));
            if plan.active_detection_complete && plan.drop_count() > 0 {
                out.push(Line::styled(
                    format!(
                        " Y (capital) drops exactly these {} schemas · any other key cancels",
                        plan.drop_count()
                    ),
                    theme.bad(),
                ));
            } else {
                out.push(Line::styled(
                    " nothing to drop · any key closes",
                    theme.dim(),
                ));
            }
            out
        }
        SweepView::Running {
            plan,
            done,
            current,
        } => {
            let mut out = vec![Line::styled(
                format!(" dropping {done}/{} …", plan.drop_count()),
                theme.header(),
            )];
            if let Some(c) = current {
                out.push(Line::raw(format!("   {c}")));
            }
            out
        }
        SweepView::Finished(report) => {
            let mut out = vec![Line::styled(
                format!(" {}", crate::domain::sweep::summary_line(report)),
                theme.header(),
            )];
            for d in &report.databases {
                for f in &d.failed {
                    out.push(Line::styled(
                        format!(
                            "   FAILED {}.{}: {} ({})",
                            d.name,
                            f.schema,
                            f.error,
                            f.sqlstate.as_deref().unwrap_or("-")
                        ),
                        theme.bad(),
                    ));
                }
            }
            for e in &report.errors {
                out.push(Line::styled(
                    format!("   {}: {}", e.database, e.error),
                    theme.bad(),
                ));
            }
            out.push(Line::styled(" any key closes", theme.dim()));
            out
        }
    }
}
