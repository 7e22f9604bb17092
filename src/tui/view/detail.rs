//! The detail overlay (Enter): everything known about the selected session, invocation or schema,
//! in full (the panes abbreviate).

use crate::domain::format::{fmt_age, fmt_bytes, session_label};
use crate::domain::incidents::Episode;
use crate::domain::snapshot::{
    InvocationReport, SchemaReport, SchemaStatus, SessionReport, Snapshot, WaitSource,
};
use crate::tui::app::{App, RowKey};
use crate::tui::theme::Theme;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

pub(super) fn detail_lines(app: &App, theme: &Theme, key: &RowKey) -> Vec<Line<'static>> {
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
        RowKey::Lock { server, pid, .. } | RowKey::Session { server, pid } => {
            match app.session_seen(server, *pid) {
                Some((s, last_seen)) => {
                    let mut out = Vec::new();
                    if let Some(at) = last_seen {
                        out.extend(gone_lines(app, snap, s, at, theme));
                    }
                    out.extend(episode_link(app, s, theme));
                    out.extend(session_detail(snap, s, theme));
                    out
                }
                None => gone(),
            }
        }
        RowKey::Invocation(ns) => snap
            .invocations
            .iter()
            .find(|i| &i.namespace == ns)
            .map(|inv| invocation_detail(snap, inv, theme))
            .unwrap_or_else(gone),
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
        RowKey::Incident(id) => app
            .episodes
            .iter()
            .find(|e| &e.id == id)
            .map(|e| episode_detail(app, e, theme))
            .unwrap_or_else(gone),
        RowKey::Schema { database, schema } => snap
            .schemas
            .iter()
            .find(|s| &s.database == database && &s.schema == schema)
            .map(schema_detail)
            .unwrap_or_else(gone),
    }
}

/// The banner of a session that has left: when it was last seen, and what it was waiting for then
/// (the picture on screen no longer has its edges).
fn gone_lines(
    app: &App,
    snap: &Snapshot,
    s: &SessionReport,
    at: chrono::DateTime<chrono::Utc>,
    theme: &Theme,
) -> Vec<Line<'static>> {
    let before = ((snap.taken_at - at).num_milliseconds() as f64 / 1000.0).max(0.0);
    let mut out = vec![Line::styled(
        format!(
            " GONE: not in the latest poll; as last seen at {} ({} before this picture)",
            at.with_timezone(&app.utc_offset).format("%H:%M:%S"),
            fmt_age(before)
        ),
        theme.warning().add_modifier(Modifier::BOLD),
    )];
    if !s.blocked_by.is_empty() {
        let lock = match (&s.lock_mode, &s.relation) {
            (Some(m), Some(r)) => format!("{m} on {r}"),
            (Some(m), None) => m.clone(),
            _ => "a lock".into(),
        };
        let by: Vec<String> = s.blocked_by.iter().map(|p| p.to_string()).collect();
        out.push(kv(
            "was waiting",
            format!(
                "{} for {lock}, behind {}",
                s.waiting_s.map(fmt_age).unwrap_or_else(|| "?".into()),
                by.join(", ")
            ),
        ));
    }
    out
}

/// The ended lock wait of this session (as the waiter, else as a blocker), and the key to open it.
fn episode_link(app: &App, s: &SessionReport, theme: &Theme) -> Vec<Line<'static>> {
    let Some(e) = app.episode_of(&s.server, s.pid, s.backend_start) else {
        return Vec::new();
    };
    let role = if e.waiter_pid == s.pid {
        "waited"
    } else {
        "blocked a wait"
    };
    let ended = e
        .ended_at
        .unwrap_or(e.last_seen_at)
        .with_timezone(&app.utc_offset)
        .format("%H:%M:%S");
    vec![Line::from(vec![
        Span::styled(
            format!(" {:<18}", "lock wait"),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "{role}: {} after {}, ended {ended}  ",
            e.outcome.words(),
            fmt_age(e.duration_s)
        )),
        Span::styled("e: open it", theme.header()),
    ])]
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
        out.extend(wait_lines(snap, s, theme));
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

/// How long a blocked session has waited, and one line per blocker in the words the lock tree and
/// the text report use.
fn wait_lines(snap: &Snapshot, s: &SessionReport, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = vec![Line::styled(" waits for", theme.blocked())];
    out.push(kv(
        "  for",
        s.waiting_s
            .map(|w| match s.wait_source {
                Some(WaitSource::QueryStart) => format!("≤{} (since query start)", fmt_age(w)),
                _ => fmt_age(w),
            })
            .unwrap_or_else(|| "?".into()),
    ));
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
    out
}

/// What a run writes into shared schemas, and where it has no worker schema.
fn public_write_lines(snap: &Snapshot, ns: &str, theme: &Theme) -> Vec<Line<'static>> {
    let clean = |s: &str| crate::domain::text::sanitize(s).into_owned();
    let mut out = Vec::new();
    for w in snap.public_writes.iter().filter(|w| w.involves(ns)) {
        let pid = w.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        out.push(Line::styled(
            format!(" PUBLIC WRITE  {}{pid}", clean(&w.describe())),
            theme.collision(),
        ));
    }
    for m in snap
        .missing_worker_schemas
        .iter()
        .filter(|m| m.namespace == ns)
    {
        out.push(Line::styled(
            format!(
                " NO WORKER SCHEMA  {} in {}: search_path through it falls through to public",
                clean(&m.schema),
                clean(&m.database)
            ),
            theme.warning(),
        ));
    }
    out
}

fn invocation_detail(snap: &Snapshot, inv: &InvocationReport, theme: &Theme) -> Vec<Line<'static>> {
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
    ];
    out.extend(public_write_lines(snap, &inv.namespace, theme));
    out.push(Line::raw(""));
    for s in snap
        .sessions
        .iter()
        .filter(|s| s.namespace.as_deref() == Some(inv.namespace.as_str()))
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

fn schema_detail(s: &SchemaReport) -> Vec<Line<'static>> {
    let why = match s.status {
        SchemaStatus::Live => "its invocation has a session on a polled server",
        SchemaStatus::Orphaned => "no session of its invocation anywhere, every database read",
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

/// One lock wait after the fact: who waited, for what, behind whom over time, and how it ended.
fn episode_detail(app: &App, e: &Episode, theme: &Theme) -> Vec<Line<'static>> {
    let at = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&app.utc_offset)
            .format("%H:%M:%S%.3f")
            .to_string()
    };
    let mut out = vec![
        kv(
            "outcome",
            format!(
                "{} after {}{}",
                e.outcome.words(),
                fmt_age(e.duration_s),
                if e.started_exact { "" } else { " (at most)" }
            ),
        ),
        kv(
            "waiter",
            format!(
                "pid {} {} on {} / {}",
                e.waiter_pid, e.waiter_application_name, e.waiter_database, e.server
            ),
        ),
        kv(
            "statement",
            e.waiter_query.clone().unwrap_or_else(|| "-".into()),
        ),
        kv("waited for", e.wait.clone().unwrap_or_else(|| "-".into())),
        kv(
            "started",
            format!(
                "{}{}",
                at(e.started_at),
                if e.started_exact {
                    ""
                } else {
                    " (statement start)"
                }
            ),
        ),
        kv(
            "ended",
            e.ended_at
                .map(at)
                .unwrap_or_else(|| format!("not seen (last seen waiting {})", at(e.last_seen_at))),
        ),
    ];
    // Back to the waiter's session: on screen, as last seen, or no longer remembered.
    let session = match app.session_seen(&e.server, e.waiter_pid) {
        Some((_, None)) => Some("in the latest poll".to_string()),
        Some((_, Some(t))) => Some(format!(
            "gone, last seen {}",
            t.with_timezone(&app.utc_offset).format("%H:%M:%S")
        )),
        None => None,
    };
    if let Some(session) = session {
        out.push(Line::from(vec![
            Span::styled(
                format!(" {:<18}", "waiter's session"),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("pid {} {session}  ", e.waiter_pid)),
            Span::styled("e: open it", theme.header()),
        ]));
    }
    // Under the outcome: the error in the words people search for (`LockNotAvailable (55P03)`).
    if let Some(error) = e.error_words() {
        let source = e.sqlstate_source.map_or("inferred", |s| s.words());
        out.insert(1, kv("error", format!("{error}, {source}")));
    }
    if let Some(note) = &e.blocker_note {
        out.push(kv(
            "blocker",
            crate::domain::text::sanitize(note).into_owned(),
        ));
    }
    if e.cross_invocation {
        out.push(Line::styled(
            " a collision: blocked by another invocation",
            theme.collision(),
        ));
    }
    out.push(Line::styled(" behind", theme.blocked()));
    for b in &e.blockers {
        let state = b
            .state
            .clone()
            .unwrap_or_else(|| "state not visible".into());
        let age = b
            .xact_age_s
            .map(|a| format!(", transaction {}", fmt_age(a)))
            .unwrap_or_default();
        out.push(kv(
            &format!("  pid {}", b.pid),
            format!(
                "{} ({state}{age}) {}",
                b.application_name.clone().unwrap_or_default(),
                b.query.clone().unwrap_or_default()
            ),
        ));
    }
    if let Some(root) = e.root_pid {
        out.push(kv(
            "root",
            format!(
                "pid {root} {}",
                e.root_namespace
                    .clone()
                    .unwrap_or_else(|| "(unlabeled)".into())
            ),
        ));
    }
    out.push(Line::styled(" timeline", theme.header()));
    for t in &e.timeline {
        let pids: Vec<String> = t.blocker_pids.iter().map(|p| p.to_string()).collect();
        out.push(Line::raw(format!(
            "   {}  behind {}{}",
            at(t.at),
            pids.join(", "),
            t.root_pid
                .map(|r| format!(" (root {r})"))
                .unwrap_or_default()
        )));
    }
    out
}
