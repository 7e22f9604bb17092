//! [`build_snapshot`] as named phases: index the observation once ([`Index`]), then derive the
//! blocking edges, lock trees, warnings, sessions, schemas, invocations and databases from it, in
//! that order (each later phase reads what the earlier ones produced, never the other way round).
//!
//! The observation comes in by value so the session strings move into the report rather than being
//! copied: this is the dashboard's hot path (5,000 sessions per poll, see `benches/frame.rs`).

use super::{
    describe_wait, seconds_between, BlockingEdge, Convention, DatabaseReport, InvocationReport,
    LabelKind, LockTree, Observation, ObservedDatabase, ObservedSchema, ObservedServer,
    ObservedSession, ReadStatus, SchemaReport, SchemaStatus, ServerId, ServerReport, SessionReport,
    Snapshot, TreeRowReport, WaitSource, WarningCode, INSUFFICIENT_PRIVILEGE, LOCK_TABLE_WARN,
    SCHEMA_VERSION,
};
use crate::domain::lockgraph::LockGraph;
use crate::domain::naming::{parse_label, parse_schema_name, LabelParse, SchemaName};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

type Key = (ServerId, i32);
type Wait = (Option<f64>, Option<WaitSource>);

/// Builds the snapshot. Pure: same observation, same snapshot.
pub fn build_snapshot(obs: Observation, conv: &Convention) -> Snapshot {
    let index = Index::new(&obs, conv);
    let blocking = blocking_edges(&obs, &index);
    let lock_trees = lock_trees(&obs, &index, &blocking);
    let complete = detection_complete(&obs);
    let live = index.live_namespaces();
    let mut warnings = read_warnings(&obs, complete, &index.parsed, conv);

    let Observation {
        taken_at,
        databases,
        servers,
        sessions,
        schemas,
        shared,
    } = obs;
    let (sessions, hidden_queries) = session_reports(sessions, &servers, index);
    if hidden_queries > 0 {
        warnings.insert(0, privilege_warning(hidden_queries));
    }
    let schemas = schema_reports(schemas, conv, &live, complete);
    let invocations = tally_invocations(&sessions, &blocking, &schemas);
    let databases = database_reports(databases, &servers, &sessions);
    let servers = server_reports(&servers, &sessions, taken_at);
    let public_writes = crate::domain::public_write::lock_writes(&shared.locks, &sessions);
    let missing_worker_schemas = crate::domain::public_write::missing_worker_schemas(
        &sessions,
        &schemas,
        &databases,
        &conv.schema_prefix,
    );
    warnings.extend(public_write_warnings(&public_writes));
    for s in servers.iter().filter(|s| s.lock_table_warning) {
        warnings.push((
            WarningCode::LockTableFull,
            format!(
                "the lock table of {} is {:.0}% full ({} of {} locks): at 100% new locks fail \
                 with out of shared memory (53200)",
                s.server,
                s.lock_table_fill.unwrap_or_default() * 100.0,
                s.lock_table_used.unwrap_or_default(),
                s.lock_table_capacity.unwrap_or_default()
            ),
        ));
    }

    Snapshot {
        schema_version: SCHEMA_VERSION,
        taken_at,
        app_prefix: conv.app_prefix.clone(),
        schema_prefix: conv.schema_prefix.clone(),
        active_detection_complete: complete,
        databases,
        invocations,
        sessions,
        blocking,
        lock_trees,
        schemas,
        servers,
        warning_codes: warnings.iter().map(|(c, _)| *c).collect(),
        warnings: warnings.into_iter().map(|(_, w)| w).collect(),
        sqlite: Vec::new(),
        public_writes,
        missing_worker_schemas,
    }
}

/// One warning per public write. A missing worker schema is a flag of its own
/// (`missing_worker_schemas`), not a warning: it is also what every worker looks like for the moment
/// between connecting and creating its schema.
fn public_write_warnings(
    writes: &[crate::domain::public_write::PublicWrite],
) -> Vec<(WarningCode, String)> {
    writes
        .iter()
        .map(|w| {
            (
                WarningCode::PublicWrite,
                format!("public write: {}", w.describe()),
            )
        })
        .collect()
}

/// What every later phase looks up, computed once per observation.
struct Index {
    /// Each session's parsed `application_name`, by session index.
    parsed: Vec<LabelParse>,
    /// Each session's configured database name (its `datname` if no configuration names it).
    database: Vec<String>,
    /// Each session's wait so far, measured on its own server's clock.
    waits: Vec<Wait>,
    /// Session index by `(server, pid)`.
    by_key: HashMap<Key, usize>,
    /// Direct waiters per blocker.
    waiters: HashMap<Key, BTreeSet<i32>>,
    graph: LockGraph<Key>,
}

impl Index {
    fn new(obs: &Observation, conv: &Convention) -> Self {
        // Configured database name per (server, datname), first configuration wins.
        let mut configured: HashMap<(ServerId, &str), &str> = HashMap::new();
        for db in &obs.databases {
            if let Ok(info) = &db.outcome {
                configured
                    .entry((info.server, info.datname.as_str()))
                    .or_insert(db.name.as_str());
            }
        }
        let mut waiters: HashMap<Key, BTreeSet<i32>> = HashMap::new();
        for s in &obs.sessions {
            for &b in &s.blocked_by {
                waiters.entry((s.server, b)).or_default().insert(s.pid);
            }
        }
        Index {
            parsed: obs
                .sessions
                .iter()
                .map(|s| parse_label(&conv.app_prefix, &s.application_name))
                .collect(),
            database: obs
                .sessions
                .iter()
                .map(|s| {
                    let datname = s.datname.as_deref().unwrap_or("");
                    configured
                        .get(&(s.server, datname))
                        .map_or(datname, |n| n)
                        .to_string()
                })
                .collect(),
            waits: obs.sessions.iter().map(|s| wait_of(obs, s)).collect(),
            by_key: obs
                .sessions
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.server, s.pid), i))
                .collect(),
            waiters,
            graph: LockGraph::build(obs.sessions.iter().flat_map(|s| {
                s.blocked_by
                    .iter()
                    .map(move |&b| ((s.server, b), (s.server, s.pid)))
            })),
        }
    }

    fn namespace_of(&self, i: usize) -> Option<&str> {
        match &self.parsed[i] {
            LabelParse::Labeled(l) => Some(l.namespace.as_str()),
            _ => None,
        }
    }

    /// Namespaces with at least one session anywhere: the live set.
    fn live_namespaces(&self) -> BTreeSet<String> {
        (0..self.parsed.len())
            .filter_map(|i| self.namespace_of(i))
            .map(str::to_owned)
            .collect()
    }
}

/// The server's own `now()` for a session (the clock its timestamps were taken on).
fn server_now(obs: &Observation, server: ServerId) -> chrono::DateTime<chrono::Utc> {
    obs.servers
        .get(server)
        .map(|sv| sv.now)
        .unwrap_or(obs.taken_at)
}

/// How long a blocked session has waited: from its lock's `waitstart` (PostgreSQL 14+), else from
/// its statement's start (an upper bound, marked as such).
fn wait_of(obs: &Observation, s: &ObservedSession) -> Wait {
    if s.blocked_by.is_empty() {
        return (None, None);
    }
    let now = server_now(obs, s.server);
    if let Some(ws) = s.awaited.as_ref().and_then(|a| a.waitstart) {
        (Some(seconds_between(now, ws)), Some(WaitSource::Waitstart))
    } else if let Some(qs) = s.query_start {
        (Some(seconds_between(now, qs)), Some(WaitSource::QueryStart))
    } else {
        (None, None)
    }
}

fn server_label_of(servers: &[ObservedServer], id: ServerId) -> String {
    servers
        .get(id)
        .map(|s| s.label.clone())
        .unwrap_or_else(|| format!("server{id}"))
}

/// One edge per (blocked session, distinct blocker), ordered by server, root, blocker, blocked.
fn blocking_edges(obs: &Observation, index: &Index) -> Vec<BlockingEdge> {
    let mut blocking = Vec::new();
    for (i, s) in obs.sessions.iter().enumerate() {
        let mut blockers = s.blocked_by.clone();
        blockers.sort_unstable();
        blockers.dedup();
        for b in blockers {
            blocking.push(edge(obs, index, i, b));
        }
    }
    blocking.sort_by(|a, b| {
        (a.server.as_str(), a.root_pid, a.blocker_pid, a.blocked_pid).cmp(&(
            b.server.as_str(),
            b.root_pid,
            b.blocker_pid,
            b.blocked_pid,
        ))
    });
    blocking
}

/// Session `i` waiting for pid `b` on the same server.
fn edge(obs: &Observation, index: &Index, i: usize, b: i32) -> BlockingEdge {
    let s = &obs.sessions[i];
    let (waiting_s, wait_source) = index.waits[i];
    let blocker = index.by_key.get(&(s.server, b)).copied();
    let blocker_ns = blocker.and_then(|j| index.namespace_of(j));
    let blocked_ns = index.namespace_of(i);
    let blocker_session = blocker.map(|j| &obs.sessions[j]);
    let awaited = s.awaited.as_ref();
    // Waiting for a blocker that itself waits for the same object: queued behind it, not held.
    let queued_behind = match (blocker_session.and_then(|o| o.awaited.as_ref()), awaited) {
        (Some(theirs), Some(mine)) => theirs.object == mine.object,
        _ => false,
    };
    let blocker_mode = awaited
        .and_then(|a| a.held.iter().find(|(pid, _)| *pid == b))
        .map(|(_, m)| m.clone());
    let wait = describe_wait(
        awaited.map(|a| a.lock_type.as_str()),
        awaited.map(|a| a.mode.as_str()),
        awaited.and_then(|a| a.relation.as_deref()),
        awaited.and_then(|a| a.row.as_deref()),
        awaited.and_then(|a| a.detail.as_deref()),
        blocker_mode.as_deref(),
        queued_behind,
    );
    BlockingEdge {
        database: index.database[i].clone(),
        server: server_label_of(&obs.servers, s.server),
        blocked_pid: s.pid,
        blocker_pid: b,
        blocked_application_name: s.application_name.clone(),
        blocker_application_name: blocker_session.map(|o| o.application_name.clone()),
        blocked_namespace: blocked_ns.map(str::to_owned),
        blocker_namespace: blocker_ns.map(str::to_owned),
        cross_invocation: matches!((blocked_ns, blocker_ns), (Some(x), Some(y)) if x != y),
        lock_type: awaited.map(|a| a.lock_type.clone()),
        lock_mode: awaited.map(|a| a.mode.clone()),
        relation: awaited.and_then(|a| a.relation.clone()),
        waiting_s,
        wait_source,
        root_pid: index
            .graph
            .root_of(&(s.server, b))
            .map_or(b, |(_, pid)| *pid),
        blocker_state: blocker_session.and_then(|o| o.state.clone()),
        queued_behind,
        blocker_mode,
        row: awaited.and_then(|a| a.row.clone()),
        wait,
    }
}

/// One tree per root blocker, its rows in drawing order.
fn lock_trees(obs: &Observation, index: &Index, blocking: &[BlockingEdge]) -> Vec<LockTree> {
    index
        .graph
        .roots()
        .iter()
        .map(|root| {
            let (server, pid) = root.key;
            let rows = index.graph.expand(&root.key);
            let members: BTreeSet<i32> = rows.iter().map(|r| r.key.1).collect();
            let root_idx = index.by_key.get(&root.key).copied();
            let root_session = root_idx.map(|j| &obs.sessions[j]);
            let label = server_label_of(&obs.servers, server);
            // A prepared transaction (pid 0) has no session: name its victims' database.
            let database = root_idx
                .or_else(|| rows.get(1).and_then(|r| index.by_key.get(&r.key)).copied())
                .map(|j| index.database[j].clone())
                .unwrap_or_default();
            LockTree {
                database,
                root_pid: pid,
                root_application_name: root_session.map(|s| s.application_name.clone()),
                root_namespace: root_idx
                    .and_then(|j| index.namespace_of(j))
                    .map(str::to_owned),
                root_state: root_session.and_then(|s| s.state.clone()),
                root_idle_in_transaction: root_session
                    .and_then(|s| s.state.as_deref())
                    .is_some_and(|st| st.starts_with("idle in transaction")),
                root_xact_age_s: root_session
                    .and_then(|s| s.xact_start)
                    .map(|x| seconds_between(server_now(obs, server), x)),
                victims: root.victims,
                depth: root.depth,
                in_cycle: root.in_cycle,
                cross_invocation: blocking.iter().any(|e| {
                    e.cross_invocation
                        && e.server == label
                        && members.contains(&e.blocked_pid)
                        && members.contains(&e.blocker_pid)
                }),
                server: label,
                rows: rows
                    .into_iter()
                    .map(|r| TreeRowReport {
                        pid: r.key.1,
                        depth: r.depth,
                        reference: r.reference,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The live set is complete only when every configured database answered this time (no stale
/// reading) and every server's activity scan succeeded.
fn detection_complete(obs: &Observation) -> bool {
    obs.databases
        .iter()
        .all(|d| d.outcome.is_ok() && d.stale.is_none())
        && obs.servers.iter().all(|s| s.activity_error.is_none())
}

/// Warnings about what was read: not yet, stale, incomplete, unattributed labels.
fn read_warnings(
    obs: &Observation,
    complete: bool,
    parsed: &[LabelParse],
    conv: &Convention,
) -> Vec<(WarningCode, String)> {
    let mut warnings = Vec::new();
    let not_read: Vec<&str> = obs
        .databases
        .iter()
        .filter(|d| d.not_read_yet)
        .map(|d| d.name.as_str())
        .collect();
    if !not_read.is_empty() {
        warnings.push((
            WarningCode::NotReadYet,
            format!(
                "not read yet (waiting for the first poll): {}",
                not_read.join(", ")
            ),
        ));
    }
    let stale: Vec<String> = obs
        .databases
        .iter()
        .filter_map(|d| {
            let st = d.stale.as_ref()?;
            Some(format!(
                "{} (shown as read at {}; the newer read failed: {})",
                d.name,
                st.since.format("%H:%M:%S UTC"),
                st.error
            ))
        })
        .collect();
    if !stale.is_empty() {
        warnings.push((WarningCode::Stale, format!("stale: {}", stale.join("; "))));
    }
    if !complete {
        warnings.push((
            WarningCode::DetectionIncomplete,
            "the live set is incomplete (a database or server could not be read): schemas without \
             a visible session are reported 'unknown', not 'orphaned'"
                .to_string(),
        ));
    }
    let unattributed = parsed
        .iter()
        .filter(|p| matches!(p, LabelParse::Unattributed(_)))
        .count();
    if unattributed > 0 {
        warnings.push((
            WarningCode::Unattributed,
            format!(
                "{} the '{}_' prefix but cannot be attributed to a namespace",
                if unattributed == 1 {
                    "1 session carries".to_string()
                } else {
                    format!("{unattributed} sessions carry")
                },
                conv.app_prefix
            ),
        ));
    }
    warnings
}

fn privilege_warning(hidden_queries: usize) -> (WarningCode, String) {
    (
        WarningCode::InsufficientPrivilege,
        format!(
            "{} of other roles {} <insufficient privilege>: pgswarm's \
             role lacks pg_read_all_stats, so their state, query, wait event and start times \
             are hidden (an idle-in-transaction root shows as 'state unknown'). Lock waits \
             among them are still found, with the locked object and the real wait time \
             (pg_locks, pg_blocking_pids). To see the rest: GRANT pg_read_all_stats TO <role>; \
             (or pg_monitor)",
            crate::domain::format::fmt_count(hidden_queries, "session", "sessions"),
            if hidden_queries == 1 { "shows" } else { "show" }
        ),
    )
}

/// The sessions as reported, the observed strings moved in; and how many hide their query.
fn session_reports(
    observed: Vec<ObservedSession>,
    servers: &[ObservedServer],
    index: Index,
) -> (Vec<SessionReport>, usize) {
    let Index {
        parsed,
        database,
        waits,
        waiters,
        ..
    } = index;
    let mut hidden_queries = 0usize;
    let mut sessions = Vec::with_capacity(observed.len());
    for (((s, label), database), (waiting_s, wait_source)) in
        observed.into_iter().zip(parsed).zip(database).zip(waits)
    {
        let insufficient = s.query.as_deref() == Some(INSUFFICIENT_PRIVILEGE);
        hidden_queries += usize::from(insufficient);
        let blocking = waiters
            .get(&(s.server, s.pid))
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        let server = server_label_of(servers, s.server);
        sessions.push(session_report(
            s,
            label,
            database,
            server,
            (waiting_s, wait_source),
            blocking,
            insufficient,
        ));
    }
    (sessions, hidden_queries)
}

fn session_report(
    s: ObservedSession,
    label: LabelParse,
    database: String,
    server: String,
    (waiting_s, wait_source): Wait,
    blocking: Vec<i32>,
    insufficient_privilege: bool,
) -> SessionReport {
    let (label, reason, worker, namespace, suffix, cut) = match label {
        LabelParse::Labeled(l) => (
            LabelKind::Labeled,
            None,
            Some(l.worker.to_string()),
            Some(l.namespace.into_string()),
            l.suffix,
            l.suffix_maybe_truncated,
        ),
        LabelParse::Unattributed(r) => (
            LabelKind::Unattributed,
            Some(r.to_string()),
            None,
            None,
            None,
            false,
        ),
        LabelParse::Unlabeled => (LabelKind::Unlabeled, None, None, None, None, false),
    };
    let wait_started_at = match wait_source {
        Some(WaitSource::Waitstart) => s.awaited.as_ref().and_then(|a| a.waitstart),
        Some(WaitSource::QueryStart) => s.query_start,
        None => None,
    };
    let mut blocked_by = s.blocked_by;
    blocked_by.sort_unstable();
    blocked_by.dedup();
    let (lock_type, lock_mode, relation) = match s.awaited {
        Some(a) => (Some(a.lock_type), Some(a.mode), a.relation),
        None => (None, None, None),
    };
    SessionReport {
        database,
        server,
        pid: s.pid,
        application_name: s.application_name,
        label,
        unattributed_reason: reason,
        worker,
        namespace,
        suffix,
        suffix_maybe_truncated: cut,
        usename: s.usename,
        client_addr: s.client_addr,
        backend_type: s.backend_type,
        state: s.state,
        wait_event_type: s.wait_event_type,
        wait_event: s.wait_event,
        query: s.query,
        insufficient_privilege,
        backend_start: s.backend_start,
        xact_start: s.xact_start,
        query_start: s.query_start,
        state_change: s.state_change,
        blocked_by,
        blocking,
        lock_type,
        lock_mode,
        relation,
        waiting_s,
        wait_source,
        wait_started_at,
        own: s.own,
    }
}

/// Test schemas classified: live if their namespace has a session anywhere, orphaned only when the
/// live set is complete, unknown otherwise; legacy (`test_gwN`) apart. Other schemas are not ours.
fn schema_reports(
    observed: Vec<ObservedSchema>,
    conv: &Convention,
    live: &BTreeSet<String>,
    complete: bool,
) -> Vec<SchemaReport> {
    let mut schemas: Vec<SchemaReport> = observed
        .into_iter()
        .filter_map(|sc| {
            let name = parse_schema_name(&conv.schema_prefix, &sc.schema)?;
            let status = match &name {
                SchemaName::Legacy { .. } => SchemaStatus::Legacy,
                SchemaName::Namespaced { namespace, .. } if live.contains(namespace.as_str()) => {
                    SchemaStatus::Live
                }
                SchemaName::Namespaced { .. } if complete => SchemaStatus::Orphaned,
                SchemaName::Namespaced { .. } => SchemaStatus::Unknown,
            };
            Some(SchemaReport {
                database: sc.database,
                schema: sc.schema,
                namespace: name.namespace().map(|n| n.to_string()),
                worker: name.worker().to_string(),
                tables: sc.tables,
                bytes: sc.bytes,
                bytes_exact: sc.bytes_exact,
                status,
            })
        })
        .collect();
    schemas.sort_by(|a, b| {
        (&a.namespace, &a.database, &a.schema).cmp(&(&b.namespace, &b.database, &b.schema))
    });
    schemas
}

/// One row per configured database, in configured order, with how it was read.
fn database_reports(
    observed: Vec<ObservedDatabase>,
    servers: &[ObservedServer],
    sessions: &[SessionReport],
) -> Vec<DatabaseReport> {
    let mut per_db: HashMap<&str, (usize, usize)> = HashMap::new();
    for s in sessions {
        let e = per_db.entry(s.database.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(!s.blocked_by.is_empty());
    }
    observed
        .into_iter()
        .map(|d| {
            let counts = per_db.get(d.name.as_str()).copied().unwrap_or_default();
            database_report(d, servers, counts)
        })
        .collect()
}

fn database_report(
    d: ObservedDatabase,
    servers: &[ObservedServer],
    (sessions, blocked): (usize, usize),
) -> DatabaseReport {
    let stale_since = d.stale.as_ref().map(|st| st.since);
    let info = match d.outcome {
        Ok(info) => info,
        Err(e) => {
            return DatabaseReport {
                read: if d.not_read_yet {
                    ReadStatus::NotReadYet
                } else {
                    ReadStatus::Unreachable
                },
                name: d.name,
                target: d.target,
                reachable: false,
                error: Some(e),
                stale_since,
                not_read_yet: d.not_read_yet,
                server_version: None,
                server: None,
                latency_ms: None,
                sessions: 0,
                blocked: 0,
            }
        }
    };
    let server = &servers[info.server];
    let read = if stale_since.is_some() {
        ReadStatus::Stale
    } else if server.activity_error.is_some() {
        ReadStatus::ActivityFailed
    } else if info.schema_error.is_some() {
        ReadStatus::SchemasFailed
    } else {
        ReadStatus::Read
    };
    let error = d.stale.map(|st| st.error).or_else(|| {
        server
            .activity_error
            .as_ref()
            .map(|e| format!("activity scan failed: {e}"))
            .or_else(|| {
                info.schema_error
                    .map(|e| format!("schema listing failed: {e}"))
            })
    });
    DatabaseReport {
        read,
        name: d.name,
        target: d.target,
        reachable: stale_since.is_none(),
        error,
        stale_since,
        not_read_yet: false,
        server_version: Some(info.server_version),
        server: Some(server.label.clone()),
        latency_ms: Some(info.latency),
        sessions,
        blocked,
    }
}

/// Per namespace: workers, sessions, databases, blocked/blocking counts, schemas. Tallied over
/// borrowed strings; only the final rows allocate.
fn tally_invocations(
    sessions: &[SessionReport],
    blocking: &[BlockingEdge],
    schemas: &[SchemaReport],
) -> Vec<InvocationReport> {
    let mut acc: HashMap<&str, Acc> = HashMap::new();
    for s in sessions {
        let Some(ns) = s.namespace.as_deref() else {
            continue;
        };
        let a = acc.entry(ns).or_default();
        a.sessions += 1;
        if let Some(w) = s.worker.as_deref() {
            a.workers.push(w);
        }
        a.databases.push(s.database.as_str());
        a.blocked += usize::from(!s.blocked_by.is_empty());
        a.blocking += usize::from(!s.blocking.is_empty());
    }
    for e in blocking.iter().filter(|e| e.cross_invocation) {
        for ns in [&e.blocked_namespace, &e.blocker_namespace]
            .into_iter()
            .flatten()
        {
            acc.entry(ns.as_str()).or_default().cross = true;
        }
    }
    for sc in schemas {
        let Some(ns) = sc.namespace.as_deref() else {
            continue;
        };
        let a = acc.entry(ns).or_default();
        a.schemas += 1;
        a.schema_bytes += sc.bytes;
        a.databases.push(sc.database.as_str());
        a.workers.push(sc.worker.as_str());
    }
    let mut invocations: Vec<InvocationReport> =
        acc.into_iter().map(|(ns, a)| a.into_report(ns)).collect();
    invocations.sort_by(|a, b| {
        let involved = |i: &InvocationReport| i.blocked + i.blocking > 0;
        involved(b)
            .cmp(&involved(a))
            .then(b.live.cmp(&a.live))
            .then(b.sessions.cmp(&a.sessions))
            .then(a.namespace.cmp(&b.namespace))
    });
    invocations
}

/// One invocation's tally. Vectors are deduplicated once at the end: cheaper than a set insert per
/// session.
#[derive(Default)]
struct Acc<'a> {
    workers: Vec<&'a str>,
    sessions: usize,
    databases: Vec<&'a str>,
    blocked: usize,
    blocking: usize,
    cross: bool,
    schemas: usize,
    schema_bytes: i64,
}

impl Acc<'_> {
    fn into_report(self, ns: &str) -> InvocationReport {
        let token = crate::domain::naming::Namespace::parse(ns).and_then(|n| n.token());
        let mut databases = self.databases;
        databases.sort_unstable();
        databases.dedup();
        InvocationReport {
            pid: token.map(|t| t.pid),
            started_at: token.map(|t| t.started_at),
            forced: token.is_none(),
            live: self.sessions > 0,
            workers: sort_workers(self.workers),
            sessions: self.sessions,
            databases: databases.into_iter().map(str::to_owned).collect(),
            blocked: self.blocked,
            blocking: self.blocking,
            cross_invocation: self.cross,
            schemas: self.schemas,
            schema_bytes: self.schema_bytes,
            namespace: ns.to_owned(),
            sqlite_locks: 0,
        }
    }
}

/// `gw2` before `gw10`, `master` first.
fn sort_workers(mut workers: Vec<&str>) -> Vec<String> {
    workers.sort_unstable();
    workers.dedup();
    let mut v: Vec<(Option<crate::domain::naming::Worker>, &str)> = workers
        .into_iter()
        .map(|w| (crate::domain::naming::Worker::parse(w), w))
        .collect();
    // Parsed workers in numeric order, anything unparsable after them.
    v.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(b.1),
    });
    v.into_iter().map(|(_, w)| w.to_owned()).collect()
}

/// One health line per server whose activity was read: connections, the oldest transaction and
/// whose it is, idle-in-transaction sessions, and the lock table's fill.
fn server_reports(
    servers: &[ObservedServer],
    sessions: &[SessionReport],
    taken_at: DateTime<Utc>,
) -> Vec<ServerReport> {
    servers
        .iter()
        .filter(|s| s.activity_error.is_none())
        .map(|sv| {
            let mine: Vec<&SessionReport> = sessions
                .iter()
                .filter(|s| s.server == sv.label)
                .filter(|s| s.backend_type.as_deref() == Some("client backend"))
                .collect();
            let oldest = mine
                .iter()
                .filter_map(|s| {
                    s.xact_start.map(|t| {
                        let owner = match (&s.namespace, &s.worker) {
                            (Some(ns), Some(w)) => format!("{ns}/{w}"),
                            _ => s.application_name.clone(),
                        };
                        (t, s.pid, owner)
                    })
                })
                .chain(sv.health.prepared.iter().filter_map(|p| {
                    p.prepared_at
                        .map(|t| (t, 0, format!("prepared transaction {:?}", p.gid)))
                }))
                .min_by_key(|(t, _, _)| *t);
            let h = &sv.health;
            let mut prepared = h.prepared.clone();
            prepared.sort_by_key(|p| p.prepared_at);
            let fill = h
                .lock_table_used
                .zip(h.lock_table_capacity)
                .filter(|(_, c)| *c > 0)
                .map(|(u, c)| u as f64 / c as f64);
            ServerReport {
                server: sv.label.clone(),
                connections: mine.len(),
                max_connections: h.max_connections,
                oldest_xact_age_s: oldest.as_ref().map(|(t, _, _)| {
                    ((sv.now.max(taken_at) - *t).num_milliseconds() as f64 / 1000.0).max(0.0)
                }),
                oldest_xact_pid: oldest.as_ref().map(|(_, pid, _)| *pid),
                oldest_xact_owner: oldest.map(|(_, _, owner)| owner),
                idle_in_transaction: mine
                    .iter()
                    .filter(|s| {
                        s.state
                            .as_deref()
                            .is_some_and(|st| st.starts_with("idle in transaction"))
                    })
                    .count(),
                lock_table_used: h.lock_table_used,
                lock_table_capacity: h.lock_table_capacity,
                lock_table_fill: fill,
                lock_table_read_at: h.lock_table_read_at,
                lock_table_warning: fill.is_some_and(|f| f >= LOCK_TABLE_WARN),
                prepared,
                xacts: h.xacts,
                xacts_at: h.xacts.map(|_| sv.now),
            }
        })
        .collect()
}
