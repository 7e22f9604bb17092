//! The plain-text snapshot report: lock trees first, then invocations, schemas and warnings.
//!
//! Written for two readers: someone at a terminal mid-incident, and the ticket it gets pasted into. So
//! it is plain text (no colour codes, no box drawing beyond `└─`), fixed column order, and every number
//! says its unit. A pure function of the [`Snapshot`], so the same text comes out of a live poll and of
//! a replayed recording.

use crate::domain::format::{fmt_age, fmt_bytes, one_line, session_label};
use crate::domain::lockgraph::tree_prefixes;
use crate::domain::snapshot::{
    BlockingEdge, LabelKind, LockTree, SchemaStatus, SessionReport, Snapshot, TreeRowReport,
    WaitSource,
};
use crate::domain::text::{sanitize as t, sanitize_lines};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

/// Renders the whole report. Every string from the database is sanitised where it is inserted, and
/// the whole text once more at the end (see `domain::text`): printing it cannot drive a terminal.
pub fn render_report(snap: &Snapshot) -> String {
    let out = render_unchecked(snap);
    sanitize_lines(&out).into_owned()
}

fn render_unchecked(snap: &Snapshot) -> String {
    let mut out = String::new();
    if snap.databases.is_empty() && !snap.sqlite.is_empty() {
        // SQLite targets only: no PostgreSQL sections to show empty.
        let _ = writeln!(
            out,
            "pgswarm snapshot {} · {} SQLite database{}",
            snap.taken_at.format("%Y-%m-%d %H:%M:%S UTC"),
            snap.sqlite.len(),
            plural(snap.sqlite.len())
        );
        render_sqlite(&mut out, snap);
        return out;
    }
    render_title(&mut out, snap);
    render_databases(&mut out, snap);
    render_servers(&mut out, snap);
    render_trees(&mut out, snap);
    render_invocations(&mut out, snap);
    render_schemas(&mut out, snap);
    render_public_writes(&mut out, snap);
    render_others(&mut out, snap);
    render_sqlite(&mut out, snap);
    if !snap.warnings.is_empty() {
        out.push_str("\nWARNINGS\n");
        for w in &snap.warnings {
            let _ = writeln!(out, "  - {}", t(w));
        }
    }
    out
}

/// Who holds the SQLite test databases' locks (`--sqlite`).
fn render_sqlite(out: &mut String, snap: &Snapshot) {
    if snap.sqlite.is_empty() {
        return;
    }
    out.push_str("\nSQLITE (from /proc/locks; waiters retry inside SQLite and cannot be seen)\n");
    for r in &snap.sqlite {
        for line in r.render_lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    for inv in snap.invocations.iter().filter(|i| i.sqlite_locks > 0) {
        let _ = writeln!(
            out,
            "  run {} holds {} SQLite lock{} (and has {} PostgreSQL session{})",
            t(&inv.namespace),
            inv.sqlite_locks,
            plural(inv.sqlite_locks),
            inv.sessions,
            plural(inv.sessions)
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn render_title(out: &mut String, snap: &Snapshot) {
    let servers: BTreeSet<&str> = snap
        .databases
        .iter()
        .filter_map(|d| d.server.as_deref())
        .collect();
    let unreachable = snap.unreachable().count();
    let _ = writeln!(
        out,
        "pgswarm snapshot {} · {} database{} on {} server{}{} · {} · {} blocked",
        snap.taken_at.format("%Y-%m-%d %H:%M:%S UTC"),
        snap.databases.len(),
        plural(snap.databases.len()),
        servers.len(),
        plural(servers.len()),
        if unreachable > 0 {
            format!(" ({unreachable} UNREACHABLE)")
        } else {
            String::new()
        },
        crate::domain::format::fmt_count(snap.sessions.len(), "session", "sessions"),
        snap.blocked_sessions()
    );
}

/// One health line per server.
fn render_servers(out: &mut String, snap: &Snapshot) {
    if snap.servers.is_empty() {
        return;
    }
    out.push_str("\nSERVERS\n");
    for s in &snap.servers {
        let _ = writeln!(out, "  {}", t(&crate::domain::format::server_health(s)));
    }
}

fn render_databases(out: &mut String, snap: &Snapshot) {
    out.push_str("\nDATABASES\n");
    let w = snap
        .databases
        .iter()
        .map(|d| d.name.len())
        .max()
        .unwrap_or(4);
    for d in &snap.databases {
        if d.reachable {
            let _ = writeln!(
                out,
                // `session ` keeps the column of `sessions` (1 session, 2 sessions).
                "  {:w$}  ok           PG {:8} {:>4} session{} {:>3} blocked  {:.1} ms  {}{}",
                d.name,
                d.server_version
                    .as_deref()
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("?"),
                d.sessions,
                if d.sessions == 1 { " " } else { "s" },
                d.blocked,
                d.latency_ms.unwrap_or_default().as_secs_f64() * 1e3,
                t(&d.target),
                d.error
                    .as_deref()
                    .map(|e| format!("  WARNING: {}", t(e)))
                    .unwrap_or_default(),
            );
        } else {
            let _ = writeln!(
                out,
                "  {:w$}  UNREACHABLE  {}: {}",
                d.name,
                t(&d.target),
                t(d.error.as_deref().unwrap_or("unknown error"))
            );
        }
    }
}

fn render_others(out: &mut String, snap: &Snapshot) {
    let others: Vec<&SessionReport> = snap
        .sessions
        .iter()
        .filter(|s| s.label != LabelKind::Labeled)
        .collect();
    if others.is_empty() {
        return;
    }
    let involved = others
        .iter()
        .filter(|s| !s.blocked_by.is_empty() || !s.blocking.is_empty())
        .count();
    let _ = writeln!(
        out,
        "\nOTHER SESSIONS: {} not labeled by the convention ({} involved in locks, shown above)",
        others.len(),
        involved
    );
}

/// Sessions and edges by their place, for drawing trees.
struct TreeIndex<'a> {
    sessions: HashMap<(&'a str, i32), &'a SessionReport>,
    edges: HashMap<(&'a str, i32, i32), &'a BlockingEdge>,
    /// Each server's prepared transactions' gids (a blocker pid 0 is one of them).
    prepared: HashMap<&'a str, Vec<&'a str>>,
}

fn render_trees(out: &mut String, snap: &Snapshot) {
    if snap.lock_trees.is_empty() {
        out.push_str("\nLOCK TREES: nothing is blocked\n");
        return;
    }
    let collisions = snap.blocking.iter().filter(|e| e.cross_invocation).count();
    let _ = writeln!(
        out,
        "\nLOCK TREES ({} root{}, {} blocked, {} cross-invocation edge{})",
        snap.lock_trees.len(),
        plural(snap.lock_trees.len()),
        snap.blocked_sessions(),
        collisions,
        plural(collisions)
    );
    let index = TreeIndex {
        prepared: snap
            .servers
            .iter()
            .map(|s| {
                (
                    s.server.as_str(),
                    s.prepared.iter().map(|p| p.gid.as_str()).collect(),
                )
            })
            .collect(),
        sessions: snap
            .sessions
            .iter()
            .map(|s| ((s.server.as_str(), s.pid), s))
            .collect(),
        edges: snap
            .blocking
            .iter()
            .map(|e| ((e.server.as_str(), e.blocker_pid, e.blocked_pid), e))
            .collect(),
    };
    for tree in &snap.lock_trees {
        render_root(out, tree, &index);
        let depths: Vec<usize> = tree.rows.iter().map(|r| r.depth).collect();
        let prefixes = tree_prefixes(&depths);
        let mut stack: Vec<i32> = Vec::new();
        for (row, prefix) in tree.rows.iter().zip(&prefixes).skip(1) {
            stack.truncate(row.depth - 1);
            let parent = stack.last().copied().unwrap_or(tree.root_pid);
            stack.push(row.pid);
            render_waiter(out, tree, &index, row, prefix, parent);
        }
    }
}

/// `  [db] root PID LABEL  STATE  holds up N (depth D)  COLLISION…`, then its query.
fn render_root(out: &mut String, tree: &LockTree, index: &TreeIndex) {
    let root = index.sessions.get(&(tree.server.as_str(), tree.root_pid));
    let who = match (tree.root_pid, root) {
        // pg_blocking_pids says 0 for any prepared transaction: name it when there is one.
        (0, _) => match index.prepared.get(tree.server.as_str()).map(Vec::as_slice) {
            Some([gid]) => format!("prepared transaction {:?} (pid 0)", t(gid)),
            Some(gids) if !gids.is_empty() => format!(
                "a prepared transaction (pid 0; one of {})",
                gids.iter()
                    .map(|g| format!("{:?}", t(g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "prepared transaction (pid 0)".to_string(),
        },
        (_, Some(s)) => session_label(s),
        (_, None) => "(session not visible)".to_string(),
    };
    let state = match &tree.root_state {
        Some(_) if tree.root_idle_in_transaction => format!(
            "IDLE IN TRANSACTION{}",
            tree.root_xact_age_s
                .map(|a| format!(" for {}", fmt_age(a)))
                .unwrap_or_default()
        ),
        Some(st) => t(st).into_owned(),
        None => "state unknown".into(),
    };
    let _ = writeln!(
        out,
        "  [{}] root {} {}  {}  holds up {} (depth {}){}{}",
        t(&tree.database),
        tree.root_pid,
        who,
        state,
        tree.victims,
        tree.depth,
        if tree.cross_invocation {
            "  COLLISION between invocations"
        } else {
            ""
        },
        if tree.in_cycle { "  (cycle)" } else { "" },
    );
    if let Some(q) = root
        .and_then(|s| s.query.as_deref())
        .filter(|q| !q.is_empty())
    {
        let _ = writeln!(out, "      query: {}", one_line(q, 100));
    }
}

/// One waiter under `parent`: how long it waits, for what, and whom else it waits for.
fn render_waiter(
    out: &mut String,
    tree: &LockTree,
    index: &TreeIndex,
    row: &TreeRowReport,
    prefix: &str,
    parent: i32,
) {
    let s = index.sessions.get(&(tree.server.as_str(), row.pid));
    let label = s.map(|s| session_label(s)).unwrap_or_else(|| "?".into());
    if row.reference {
        let _ = writeln!(
            out,
            "    {prefix}↳ {} {label}  (drawn above; it also waits for {parent})",
            row.pid
        );
        return;
    }
    let e = index.edges.get(&(tree.server.as_str(), parent, row.pid));
    let also: Vec<String> = s
        .map(|s| {
            s.blocked_by
                .iter()
                .filter(|&&b| b != parent)
                .map(|b| b.to_string())
                .collect()
        })
        .unwrap_or_default();
    let wait = e
        .and_then(|e| e.waiting_s.map(|w| (w, e.wait_source)))
        .map(|(w, src)| match src {
            Some(WaitSource::QueryStart) => format!("waits ≤{}", fmt_age(w)),
            _ => format!("waits {}", fmt_age(w)),
        })
        .unwrap_or_else(|| "waits".into());
    let what = e.map(|e| t(&e.wait).into_owned()).unwrap_or_default();
    let flags = if e.is_some_and(|e| e.cross_invocation) {
        "  CROSS-INVOCATION"
    } else {
        ""
    };
    let also = if also.is_empty() {
        String::new()
    } else {
        format!("  ↳ also waits for {}", also.join(", "))
    };
    let _ = writeln!(
        out,
        "    {prefix}{} {label}  [{}]  {}  {}{}{also}",
        row.pid,
        t(s.map(|s| s.database.as_str()).unwrap_or("?")),
        wait,
        what,
        flags
    );
}

fn render_invocations(out: &mut String, snap: &Snapshot) {
    if snap.invocations.is_empty() {
        out.push_str("\nINVOCATIONS: none (no labeled session, no test schema)\n");
        return;
    }
    let live = snap.invocations.iter().filter(|i| i.live).count();
    let _ = writeln!(
        out,
        "\nINVOCATIONS ({} live, {} without sessions)",
        live,
        snap.invocations.len() - live
    );
    let nw = snap
        .invocations
        .iter()
        .map(|i| i.namespace.len() + if i.forced { 9 } else { 0 })
        .max()
        .unwrap_or(9)
        .max(9);
    let _ = writeln!(
        out,
        "  {:nw$}  {:>7}  {:>7}  {:>4}  {:>7}  {:>8}  {:>7}  WORKERS / DATABASES",
        "NAMESPACE", "PID", "AGE", "SESS", "BLOCKED", "BLOCKING", "SCHEMAS"
    );
    for i in &snap.invocations {
        let name = if i.forced {
            format!("{} (forced)", t(&i.namespace))
        } else {
            t(&i.namespace).into_owned()
        };
        let age = i
            .started_at
            .map(|t| fmt_age((snap.taken_at - t).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "  {:nw$}  {:>7}  {:>7}  {:>4}  {:>7}  {:>8}  {:>7}  {} / {}{}",
            name,
            i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            age,
            i.sessions,
            i.blocked,
            i.blocking,
            i.schemas,
            if i.workers.is_empty() {
                "-".into()
            } else {
                t(&i.workers.join(",")).into_owned()
            },
            t(&i.databases.join(",")),
            if i.cross_invocation {
                "  COLLISION"
            } else {
                ""
            }
        );
    }
}

/// Writes into shared schemas and runs without their worker schema; nothing when there are none.
fn render_public_writes(out: &mut String, snap: &Snapshot) {
    if !snap.public_writes.is_empty() {
        out.push_str("\nPUBLIC WRITES (test sessions writing into shared schemas)\n");
        for w in &snap.public_writes {
            let pid = w.pid.map(|p| format!("  pid {p}")).unwrap_or_default();
            let since = w
                .since
                .map(|t| format!("  since {}", t.format("%H:%M:%S")))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}{pid}{since}", t(&w.describe()));
        }
    }
    if !snap.missing_worker_schemas.is_empty() {
        out.push_str("\nMISSING WORKER SCHEMAS (search_path falls through to shared schemas)\n");
        for m in &snap.missing_worker_schemas {
            let pids: Vec<String> = m.pids.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}/{} in {}: no schema {}  (pids {})",
                t(&m.namespace),
                t(&m.worker),
                t(&m.database),
                t(&m.schema),
                pids.join(", ")
            );
        }
    }
}

fn render_schemas(out: &mut String, snap: &Snapshot) {
    if snap.schemas.is_empty() {
        let _ = writeln!(
            out,
            "\nSCHEMAS: no {}_* test schema in any reachable database",
            t(&snap.schema_prefix)
        );
        return;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &snap.schemas {
        *counts.entry(status_word(s.status)).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        out,
        "\nSCHEMAS ({}: {})",
        snap.schemas.len(),
        summary.join(", ")
    );
    let _ = writeln!(
        out,
        "  {:9}  {:16}  {:44}  {:>6}  {:>10}",
        "STATUS", "DATABASE", "SCHEMA", "TABLES", "SIZE"
    );
    for s in &snap.schemas {
        let _ = writeln!(
            out,
            "  {:9}  {:16}  {:44}  {:>6}  {:>10}",
            status_word(s.status),
            t(&s.database),
            t(&s.schema),
            s.tables,
            if s.bytes_exact {
                fmt_bytes(s.bytes)
            } else {
                format!("~{}", fmt_bytes(s.bytes))
            }
        );
    }
}

fn status_word(s: SchemaStatus) -> &'static str {
    match s {
        SchemaStatus::Live => "live",
        SchemaStatus::Orphaned => "orphaned",
        SchemaStatus::Legacy => "legacy",
        SchemaStatus::Unknown => "unknown",
    }
}
