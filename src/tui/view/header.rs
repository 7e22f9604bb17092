//! The strips around the panes: the header (state, counts, one cell per configured database), the
//! notices under it (unreachable databases, missing privileges) and the footer of key hints.

use super::cells::{fit, short_namespace};
use crate::domain::format::{fmt_age, fmt_ms};
use crate::domain::snapshot::{DatabaseReport, Snapshot, WarningCode};
use crate::tui::app::App;
use crate::tui::keys::{footer_hints, Footer};
use crate::tui::theme::Theme;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

/// At most this many lines of database cells under the status line.
const MAX_DATABASE_LINES: usize = 3;

pub(super) fn header_lines(app: &App, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    // At narrow widths the status line drops words, never the poll time at its end.
    let mut status = status_spans(app, theme, false);
    if Line::from(status.clone()).width() > width as usize {
        status = status_spans(app, theme, true);
    }
    let mut lines = vec![Line::from(status)];
    if let Some(s) = &app.model.snapshot {
        lines.extend(health_lines(app, s, theme, width));
    }
    let cells: Vec<Vec<Span<'static>>> = app
        .databases
        .iter()
        .map(|name| {
            let report = app
                .model
                .snapshot
                .as_ref()
                .and_then(|s| s.databases.iter().find(|d| &d.name == name));
            database_cell(app, theme, name, report)
        })
        .collect();
    lines.extend(wrap_cells(cells, theme, width));
    lines
}

/// The first header line: mode (live, paused, replay), refresh interval, counts, last poll.
fn status_spans(app: &App, theme: &Theme, compact: bool) -> Vec<Span<'static>> {
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
        // The whole picture is frozen, its ages included: say when it was taken and how old it is.
        let taken = app.model.snapshot.as_ref().map_or(app.now, |s| s.taken_at);
        first.push(Span::styled(
            format!(
                "⏸ PAUSED · picture of {}, {} old{} ",
                taken.with_timezone(&app.utc_offset).format("%H:%M:%S"),
                fmt_age(((app.now - taken).num_milliseconds() as f64 / 1000.0).max(0.0)),
                if app.stale_while_paused {
                    " (newer data waiting)"
                } else {
                    ""
                }
            ),
            theme.warning().add_modifier(Modifier::BOLD),
        ));
    } else if let Some((since, _)) = &app.source_down {
        // Never a quiet picture that reads as "nothing blocked": the server's last one, marked.
        first.push(Span::styled(
            format!(
                "✗ {} not answering since {}: its last picture ",
                crate::domain::text::sanitize(app.source.as_deref().unwrap_or("the server")),
                since.with_timezone(&app.utc_offset).format("%H:%M:%S")
            ),
            theme.bad().add_modifier(Modifier::BOLD),
        ));
    } else if let Some(source) = &app.source {
        first.push(Span::styled("● live ", theme.ok()));
        first.push(Span::raw(format!(
            "via {} ",
            crate::domain::text::sanitize(source)
        )));
    } else {
        first.push(Span::styled("● live ", theme.ok()));
    }
    if app.replay.is_none() && !app.paused && !compact {
        first.push(Span::raw(format!(
            "every {}",
            humantime::format_duration(app.interval)
        )));
    }
    if let Some(s) = &app.model.snapshot {
        let collisions = s.blocking.iter().filter(|e| e.cross_invocation).count();
        first.push(Span::raw(if compact {
            format!("· {} sess · ", s.sessions.len())
        } else {
            format!(
                " · {} · ",
                crate::domain::format::fmt_count(s.sessions.len(), "session", "sessions")
            )
        }));
        let blocked = s.blocked_sessions();
        let style = if blocked > 0 {
            theme.blocked()
        } else {
            Style::new()
        };
        first.push(Span::styled(format!("{blocked} blocked"), style));
        if collisions > 0 {
            first.push(Span::raw(" · "));
            first.push(Span::styled(
                if compact {
                    format!("!! {collisions}")
                } else {
                    format!(
                        "!! {collisions} collision{}",
                        if collisions == 1 { "" } else { "s" }
                    )
                },
                theme.collision(),
            ));
        }
    }
    if app.replay.is_some() || app.paused {
        // One clock: the recorded (or frozen) one above.
        return first;
    }
    first.push(match app.last_good_poll {
        Some(t) => Span::styled(
            format!(
                " · {}{}",
                if compact { "" } else { "last poll " },
                t.with_timezone(&app.utc_offset).format("%H:%M:%S")
            ),
            theme.dim(),
        ),
        None if app
            .model
            .snapshot
            .as_ref()
            .is_some_and(|s| s.databases.iter().any(|d| !d.not_read_yet)) =>
        {
            Span::styled(" · no database readable yet, retrying", theme.bad())
        }
        None if app.databases.is_empty() => Span::styled(
            " · SQLite only (no PostgreSQL database configured)",
            theme.dim(),
        ),
        None => Span::styled(" · waiting for the first poll…", theme.dim()),
    });
    first
}

/// One configured database: how it was read, its probe time, sessions and blocked sessions.
fn database_cell(
    app: &App,
    theme: &Theme,
    name: &str,
    report: Option<&DatabaseReport>,
) -> Vec<Span<'static>> {
    let mut cell = vec![Span::styled(name.to_string(), theme.header())];
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
            // The dashboard's own measurement of the whole poll, else the identity query's.
            // Frozen while paused, like everything but the age of the picture.
            let took = match app.shown_probe_time().get(name) {
                Some(t) => Some(fmt_ms(*t)),
                None => d.latency_ms.map(fmt_ms),
            };
            if let Some(took) = took {
                cell.push(Span::raw(format!(" {took}")));
            }
            // Words, not unit letters: `105s` read as 105 seconds.
            cell.push(Span::raw(format!(" · {} sess", d.sessions)));
            if d.blocked > 0 {
                cell.push(Span::raw(" · "));
                cell.push(Span::styled(
                    format!("{} blocked", d.blocked),
                    theme.blocked(),
                ));
            }
        }
    }
    cell
}

/// Cells side by side separated by `│`, wrapped to the width, at most [`MAX_DATABASE_LINES`].
fn wrap_cells(cells: Vec<Vec<Span<'static>>>, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
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
            if lines.len() == MAX_DATABASE_LINES {
                break;
            }
        }
        used += w;
        line.extend(cell);
        line.push(Span::styled(" │ ", theme.dim()));
    }
    if line.len() > 1 && lines.len() < MAX_DATABASE_LINES {
        line.pop();
        lines.push(Line::from(line));
    }
    lines
}

pub(super) fn notice_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
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
            .shown_unreachable_since()
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
    if app.nothing_configured && !app.ever_read && !s.databases.iter().all(|d| d.not_read_yet) {
        // Two short lines: notices are not wrapped, and this one must fit 80 columns.
        out.push(Line::styled(
            " nothing is configured, so pgswarm tried libpq's default database (above);",
            theme.warning(),
        ));
        out.push(Line::styled(
            " use --db NAME=CONNINFO, PGSWARM_DB or --config FILE, or try `pgswarm demo`",
            theme.warning(),
        ));
    }
    if let Some(line) = idle_in_transaction_line(s, theme) {
        out.push(line);
    }
    if s.warning_codes
        .contains(&WarningCode::InsufficientPrivilege)
    {
        out.push(Line::styled(
            " some sessions show <insufficient privilege>: GRANT pg_read_all_stats (or pg_monitor) TO the monitoring role",
            theme.warning(),
        ));
    }
    if s.warning_codes.contains(&WarningCode::ServerLogUnavailable) {
        // The stream's own words (`server: server log not read: ... (what turns it on)`), said once.
        if let Some(w) = s
            .warnings
            .iter()
            .find(|w| w.contains("server log not read"))
        {
            out.push(Line::styled(
                format!(" {}", crate::domain::text::sanitize(w)),
                theme.dim(),
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

/// Key hints from the key map (`keys::BINDINGS`), for live or replay mode; the filter being edited
/// replaces them.
pub(super) fn footer_line(app: &App, theme: &Theme, width: u16) -> Line<'static> {
    if app.filter_editing {
        return Line::from(vec![
            Span::styled(" filter: ", theme.header()),
            Span::raw(format!("{}▏", app.filter)),
            Span::styled("  Enter keep · Esc clear", theme.dim()),
        ]);
    }
    let mut spans = Vec::new();
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!(" filter: {} (Esc clears) ", app.filter),
            theme.warning(),
        ));
    }
    let mode = if app.replay.is_some() {
        Footer::Replay
    } else {
        Footer::Live
    };
    // Whole hints only: one that does not fit is left out, not cut.
    let mut used: usize = spans.iter().map(|s| s.width()).sum();
    for (key, what) in footer_hints(mode, app.read_only) {
        let hint = [
            Span::styled(format!(" {key}"), theme.header()),
            Span::styled(format!(" {what} "), theme.dim()),
        ];
        let w: usize = hint.iter().map(|s| s.width()).sum();
        if used + w > width as usize {
            break;
        }
        used += w;
        spans.extend(hint);
    }
    Line::from(spans)
}

/// Sessions idle in a transaction longer than this are shown even when they block nobody yet: such
/// a transaction holds its locks (a schema setup can hold thousands) until it ends.
pub const IDLE_IN_TRANSACTION_NOTICE: chrono::Duration = chrono::Duration::seconds(60);

/// `3 sessions idle in transaction > 60s, blocking nobody yet: p4100…0a0a/gw0 12m03s, …`.
fn idle_in_transaction_line(s: &Snapshot, theme: &Theme) -> Option<Line<'static>> {
    let mut idle: Vec<(f64, String)> = s
        .sessions
        .iter()
        .filter(|x| x.blocking.is_empty())
        .filter(|x| {
            x.state
                .as_deref()
                .is_some_and(|st| st.starts_with("idle in transaction"))
        })
        .filter_map(|x| {
            let age = s.taken_at - x.xact_start?;
            (age > IDLE_IN_TRANSACTION_NOTICE).then(|| {
                let who = match (&x.namespace, &x.worker) {
                    (Some(ns), Some(w)) => format!("{}/{w}", short_namespace(ns)),
                    _ => format!("{} {:?}", x.pid, x.application_name),
                };
                (age.num_milliseconds() as f64 / 1000.0, who)
            })
        })
        .collect();
    if idle.is_empty() {
        return None;
    }
    idle.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = idle.len();
    let shown: Vec<String> = idle
        .iter()
        .take(3)
        .map(|(age, who)| format!("{who} {}", fmt_age(*age)))
        .collect();
    Some(Line::styled(
        format!(
            " {n} session{} idle in transaction > {}s, blocking nobody yet: {}{}",
            if n == 1 { "" } else { "s" },
            IDLE_IN_TRANSACTION_NOTICE.num_seconds(),
            shown.join(", "),
            if n > 3 { ", …" } else { "" }
        ),
        theme.idle_in_transaction(),
    ))
}

/// One health line per server (at most [`MAX_DATABASE_LINES`]), most important first (the lock
/// table's fill), cut with an ellipsis at the width; red when the lock table is nearly full.
fn health_lines(app: &App, s: &Snapshot, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    s.servers
        .iter()
        .take(MAX_DATABASE_LINES)
        .map(|sv| {
            let mut parts = vec![sv.server.clone()];
            // pg_activity's header numbers: transactions per second (between the last two polls
            // of this server) and sessions waiting for a lock.
            if let Some(tps) = app.tps.get(&sv.server) {
                parts.push(format!("{tps:.0} tps"));
            }
            let waiting = s
                .sessions
                .iter()
                .filter(|x| x.server == sv.server && !x.blocked_by.is_empty())
                .count();
            parts.push(format!("{waiting} waiting"));
            parts.push(match sv.lock_table_fill {
                Some(f) if sv.lock_table_warning => format!("LOCK TABLE {:.0}% FULL", f * 100.0),
                Some(f) => format!("locks {:.0}%", f * 100.0),
                None => "locks ?".into(),
            });
            parts.push(match sv.max_connections {
                Some(m) => format!("conn {}/{m}", sv.connections),
                None => format!("conn {}", sv.connections),
            });
            if sv.idle_in_transaction > 0 {
                parts.push(format!("{} idle in tx", sv.idle_in_transaction));
            }
            if let (Some(age), Some(pid)) = (sv.oldest_xact_age_s, sv.oldest_xact_pid) {
                let owner = sv
                    .oldest_xact_owner
                    .as_deref()
                    .map(|o| match o.split_once('/') {
                        Some((ns, w)) => format!("{}/{w}", short_namespace(ns)),
                        None => o.to_string(),
                    })
                    .unwrap_or_default();
                parts.push(format!("oldest tx {} {owner} ({pid})", fmt_age(age)));
            }
            let style = if sv.lock_table_warning {
                theme.bad()
            } else {
                theme.dim()
            };
            let text = fit(&parts.join(" · "), width.saturating_sub(1) as usize);
            Line::styled(format!(" {text}"), style)
        })
        .collect()
}
