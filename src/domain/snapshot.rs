//! From raw observations to the snapshot every pgswarm surface shows.
//!
//! The PostgreSQL layer hands over what it saw ([`Observation`]): per configured database whether it
//! answered, per server one activity scan, the awaited locks of blocked sessions, and the test schemas
//! of each database. [`build_snapshot`] turns that into the [`Snapshot`]: sessions attributed to
//! invocations, lock trees to their roots, blocking edges flagged when they cross invocations, and
//! schemas classified live / orphaned / legacy. It is pure (the clock is an input: each server's own
//! `now()`), so every rule here is unit-tested without a server, and the same function serves
//! `snapshot`, the dashboard and the sweep.
//!
//! The [`Snapshot`] is also the JSON document of `pgswarm snapshot --json` (and one line of a
//! recording): its fields are documented in the README and it deserializes back for replay.

use crate::domain::lockgraph::LockGraph;
use crate::domain::naming::{parse_label, parse_schema_name, LabelParse, SchemaName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Bumped whenever a JSON field changes meaning or disappears (additions do not bump it).
pub const SCHEMA_VERSION: u32 = 1;

/// What `query` says for other roles' sessions when the monitor lacks `pg_read_all_stats`.
pub const INSUFFICIENT_PRIVILEGE: &str = "<insufficient privilege>";

/// The naming convention in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convention {
    pub app_prefix: String,
    pub schema_prefix: String,
}

impl Default for Convention {
    fn default() -> Self {
        Convention {
            app_prefix: "pytest".into(),
            schema_prefix: "test".into(),
        }
    }
}

/// Index of a server in [`Observation::servers`].
pub type ServerId = usize;

/// One configured database as the poll found it.
#[derive(Debug, Clone)]
pub struct ObservedDatabase {
    pub name: String,
    /// Where it points, without any password.
    pub target: String,
    pub outcome: Result<DatabaseInfo, String>,
    /// This poll could not read it, and what is shown is an earlier reading (see [`carry_forward`]).
    pub stale: Option<Stale>,
    /// No poll has read it yet (the dashboard's first seconds, a recording's first line).
    pub not_read_yet: bool,
}

/// An earlier reading shown in place of a failed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    /// When the reading shown was taken.
    pub since: DateTime<Utc>,
    /// Why the newer read failed.
    pub error: String,
}

impl ObservedDatabase {
    /// A configured database no poll has read yet.
    pub fn not_read_yet(name: &str) -> ObservedDatabase {
        ObservedDatabase {
            name: name.to_string(),
            target: String::new(),
            outcome: Err("not read yet: waiting for its first poll".into()),
            stale: None,
            not_read_yet: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseInfo {
    pub server: ServerId,
    pub server_version: String,
    pub datname: String,
    pub latency_ms: f64,
    /// Reading the test schemas failed although the database answered.
    pub schema_error: Option<String>,
}

/// A server (cluster) reached through at least one configured database.
#[derive(Debug, Clone)]
pub struct ObservedServer {
    /// What identifies the server (postmaster start time and port): equal keys are one server.
    pub key: String,
    pub label: String,
    /// The server's clock when the activity scan ran: wait ages are computed against it.
    pub now: DateTime<Utc>,
    /// The activity scan failed: this server's sessions are unknown.
    pub activity_error: Option<String>,
}

/// The lock a blocked session is waiting for (its one `pg_locks` row with `granted = false`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AwaitedLock {
    pub lock_type: String,
    pub mode: String,
    /// `schema.table` when resolvable, else `database:oid`. For a row-lock wait (which awaits the
    /// holder's `transactionid`), the table of the row the waiter queued for.
    pub relation: Option<String>,
    /// `(page,tuple)` of the row, for row-lock waits.
    pub row: Option<String>,
    pub waitstart: Option<DateTime<Utc>>,
    /// Identity of the locked object, to tell a queued-behind-another-waiter (soft) block.
    pub object: String,
    /// What else names the object: `transaction 1234`, `virtual transaction 7/12`, `classid/objid`.
    pub detail: Option<String>,
    /// The modes other sessions hold on this very object: `(pid, mode)`.
    pub held: Vec<(i32, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct ObservedSession {
    pub server: ServerId,
    pub datname: Option<String>,
    pub pid: i32,
    pub usename: Option<String>,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub backend_type: Option<String>,
    pub state: Option<String>,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    pub query: Option<String>,
    pub backend_start: Option<DateTime<Utc>>,
    pub xact_start: Option<DateTime<Utc>>,
    pub query_start: Option<DateTime<Utc>>,
    pub state_change: Option<DateTime<Utc>>,
    pub blocked_by: Vec<i32>,
    pub awaited: Option<AwaitedLock>,
}

#[derive(Debug, Clone)]
pub struct ObservedSchema {
    /// Configured database name.
    pub database: String,
    pub schema: String,
    pub tables: i64,
    pub bytes: i64,
    pub bytes_exact: bool,
}

/// Everything one poll saw.
#[derive(Debug, Clone)]
pub struct Observation {
    pub taken_at: DateTime<Utc>,
    pub databases: Vec<ObservedDatabase>,
    pub servers: Vec<ObservedServer>,
    pub sessions: Vec<ObservedSession>,
    pub schemas: Vec<ObservedSchema>,
}

// ---------------------------------------------------------------------------------------------------
// The snapshot (JSON schema_version 1)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema_version: u32,
    pub taken_at: DateTime<Utc>,
    pub app_prefix: String,
    pub schema_prefix: String,
    /// Every configured database answered and every server's sessions were read: the live set of
    /// namespaces is known.
    pub active_detection_complete: bool,
    pub databases: Vec<DatabaseReport>,
    pub invocations: Vec<InvocationReport>,
    pub sessions: Vec<SessionReport>,
    pub blocking: Vec<BlockingEdge>,
    pub lock_trees: Vec<LockTree>,
    pub schemas: Vec<SchemaReport>,
    /// What limits the picture, in words.
    pub warnings: Vec<String>,
    /// The stable code of each warning, in the same order: what scripts (and pgswarm itself)
    /// decide on, never the words.
    #[serde(default)]
    pub warning_codes: Vec<WarningCode>,
}

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// The monitoring role cannot see other roles' state and queries (`pg_read_all_stats`).
    InsufficientPrivilege,
    /// Some configured database has not been read yet.
    NotReadYet,
    /// Some database shows an earlier reading because the newest one failed.
    Stale,
    /// The live set of namespaces is incomplete: no schema is called orphaned.
    DetectionIncomplete,
    /// Sessions carry the prefix but cannot be attributed to a namespace.
    Unattributed,
}

/// How a configured database was read in this snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadStatus {
    /// Sessions and schemas were read.
    #[default]
    Read,
    /// It could not be reached.
    Unreachable,
    /// Its server's sessions could not be read.
    ActivityFailed,
    /// Its sessions were read, its test schemas not.
    SchemasFailed,
    /// The newest read failed; an earlier reading is shown (`stale_since`).
    Stale,
    /// No poll has read it yet.
    NotReadYet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseReport {
    pub name: String,
    pub target: String,
    pub reachable: bool,
    /// How it was read (what the exit code of `snapshot` decides on).
    #[serde(default)]
    pub read: ReadStatus,
    pub error: Option<String>,
    /// The newest read failed; sessions and schemas shown for it were read at this time.
    #[serde(default)]
    pub stale_since: Option<DateTime<Utc>>,
    /// No poll has read it yet: nothing is known about it.
    #[serde(default)]
    pub not_read_yet: bool,
    pub server_version: Option<String>,
    pub server: Option<String>,
    pub latency_ms: Option<f64>,
    pub sessions: usize,
    pub blocked: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationReport {
    pub namespace: String,
    /// Runner pid decoded from a generated token; null for a forced namespace.
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub forced: bool,
    pub live: bool,
    pub workers: Vec<String>,
    pub sessions: usize,
    pub databases: Vec<String>,
    pub blocked: usize,
    pub blocking: usize,
    pub cross_invocation: bool,
    pub schemas: usize,
    pub schema_bytes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    Labeled,
    Unattributed,
    Unlabeled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub database: String,
    pub server: String,
    pub pid: i32,
    pub application_name: String,
    pub label: LabelKind,
    pub unattributed_reason: Option<String>,
    pub worker: Option<String>,
    pub namespace: Option<String>,
    pub suffix: Option<String>,
    pub suffix_maybe_truncated: bool,
    pub usename: Option<String>,
    pub client_addr: Option<String>,
    pub backend_type: Option<String>,
    pub state: Option<String>,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    pub query: Option<String>,
    pub insufficient_privilege: bool,
    pub backend_start: Option<DateTime<Utc>>,
    pub xact_start: Option<DateTime<Utc>>,
    pub query_start: Option<DateTime<Utc>>,
    pub state_change: Option<DateTime<Utc>>,
    pub blocked_by: Vec<i32>,
    pub blocking: Vec<i32>,
    pub lock_type: Option<String>,
    pub lock_mode: Option<String>,
    pub relation: Option<String>,
    pub waiting_s: Option<f64>,
    pub wait_source: Option<WaitSource>,
}

/// Where a wait age comes from. Only `waitstart` is the real start of the lock wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitSource {
    /// `pg_locks.waitstart` (PostgreSQL 14+).
    Waitstart,
    /// The waiting statement's start: an upper bound of the wait.
    QueryStart,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockingEdge {
    pub database: String,
    pub server: String,
    pub blocked_pid: i32,
    pub blocker_pid: i32,
    pub blocked_application_name: String,
    pub blocker_application_name: Option<String>,
    pub blocked_namespace: Option<String>,
    pub blocker_namespace: Option<String>,
    pub cross_invocation: bool,
    pub lock_type: Option<String>,
    pub lock_mode: Option<String>,
    pub relation: Option<String>,
    pub waiting_s: Option<f64>,
    pub wait_source: Option<WaitSource>,
    pub root_pid: i32,
    pub blocker_state: Option<String>,
    /// The blocker holds nothing that conflicts yet: it is itself queued for the same object, ahead of
    /// the blocked session (a "soft" block, e.g. readers queued behind waiting DDL).
    pub queued_behind: bool,
    /// The mode the blocker holds on the awaited object, when it holds one.
    #[serde(default)]
    pub blocker_mode: Option<String>,
    /// `(page,tuple)` of the row, for a row-lock wait.
    #[serde(default)]
    pub row: Option<String>,
    /// What the wait is about, in the words every surface uses ([`describe_wait`]).
    #[serde(default)]
    pub wait: String,
}

/// `AccessExclusive` for `AccessExclusiveLock`.
pub fn short_mode(mode: &str) -> &str {
    mode.strip_suffix("Lock").unwrap_or(mode)
}

/// What a wait is about and what the blocker has, in one phrase shared by the dashboard, the text
/// report and the JSON (`blocking[].wait`):
///
/// - `RowExclusive on public.orders · it holds AccessExclusive`
/// - `row (0,3) of public.accounts · its open transaction holds the row` (a row-lock wait: the waiter
///   awaits the holder's transaction; the table comes from the tuple lock it queued with)
/// - `row (0,3) of public.accounts · queued behind it` (a soft block: the blocker waits too)
/// - `end of virtual transaction 7/12`, `advisory lock 0/42`, `Share on transaction 1234`
pub fn describe_wait(
    lock_type: Option<&str>,
    mode: Option<&str>,
    relation: Option<&str>,
    row: Option<&str>,
    detail: Option<&str>,
    blocker_mode: Option<&str>,
    queued_behind: bool,
) -> String {
    let mode = mode.map(short_mode).unwrap_or("?");
    let row_of = |rel: &str| match row {
        Some(r) => format!("row {r} of {rel}"),
        None => format!("a row of {rel}"),
    };
    let what = match (lock_type.unwrap_or(""), relation) {
        ("transactionid" | "tuple", Some(rel)) => row_of(rel),
        ("transactionid", None) => match detail {
            Some(d) => format!("a row ({d})"),
            None => "a row".to_string(),
        },
        ("relation", Some(rel)) => format!("{mode} on {rel}"),
        ("extend", Some(rel)) => format!("extending {rel}"),
        ("page", Some(rel)) => format!("a page of {rel}"),
        ("virtualxid", _) => format!("end of {}", detail.unwrap_or("a transaction")),
        ("advisory", _) => format!("advisory lock {}", detail.unwrap_or("?")),
        ("object", _) => format!("{mode} on object {}", detail.unwrap_or("?")),
        ("", Some(rel)) => format!("{mode} on {rel}"),
        ("", None) => mode.to_string(),
        (t, Some(rel)) => format!("{mode} {t} on {rel}"),
        (t, None) => format!("{mode} on {t}"),
    };
    let who = if queued_behind {
        " · queued behind it".to_string()
    } else {
        match (lock_type, blocker_mode) {
            (Some("transactionid"), Some(_)) => " · its open transaction holds the row".to_string(),
            (_, Some(m)) => format!(" · it holds {}", short_mode(m)),
            _ => String::new(),
        }
    };
    format!("{what}{who}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockTree {
    pub server: String,
    pub database: String,
    pub root_pid: i32,
    pub root_application_name: Option<String>,
    pub root_namespace: Option<String>,
    pub root_state: Option<String>,
    pub root_idle_in_transaction: bool,
    pub root_xact_age_s: Option<f64>,
    pub victims: usize,
    /// The deepest row in `rows` (1 = only direct waiters).
    pub depth: usize,
    pub in_cycle: bool,
    pub cross_invocation: bool,
    /// The tree, depth first. Each session is drawn in full once; under its other blockers it
    /// appears as a `reference` row.
    pub rows: Vec<TreeRowReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeRowReport {
    pub pid: i32,
    pub depth: usize,
    /// Drawn in full on an earlier row of this tree; this row only refers to it.
    #[serde(default)]
    pub reference: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaStatus {
    /// Its namespace has a session on some polled server.
    Live,
    /// No session of its namespace anywhere, and every database was read.
    Orphaned,
    /// `{prefix}_{worker}` from before namespacing: no owner can be known.
    Legacy,
    /// No session seen, but some database or server could not be read: it may be live there.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaReport {
    pub database: String,
    pub schema: String,
    pub namespace: Option<String>,
    pub worker: String,
    pub tables: i64,
    pub bytes: i64,
    pub bytes_exact: bool,
    pub status: SchemaStatus,
}

impl Snapshot {
    pub fn blocked_sessions(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| !s.blocked_by.is_empty())
            .count()
    }

    pub fn unreachable(&self) -> impl Iterator<Item = &DatabaseReport> {
        self.databases.iter().filter(|d| !d.reachable)
    }
}

fn seconds_between(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    // Clamp: a wait cannot be negative even if timestamps disagree by a few microseconds.
    ((now - then).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0)
}

/// Merges observations made independently (one per poller) into one, in the configured database
/// order. Servers are matched by key, so a server polled by two pollers contributes its sessions once.
pub fn merge_observations(parts: &[&Observation], order: &[String]) -> Observation {
    let mut out = Observation {
        taken_at: parts
            .iter()
            .map(|p| p.taken_at)
            .max()
            .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(0, 0).expect("epoch")),
        databases: Vec::new(),
        servers: Vec::new(),
        sessions: Vec::new(),
        schemas: Vec::new(),
    };
    for part in parts {
        // Map this part's server ids to merged ids; a server already merged keeps its sessions.
        let mut map = Vec::with_capacity(part.servers.len());
        let mut fresh = Vec::with_capacity(part.servers.len());
        for sv in &part.servers {
            match out.servers.iter().position(|m| m.key == sv.key) {
                Some(i) => {
                    map.push(i);
                    fresh.push(false);
                }
                None => {
                    map.push(out.servers.len());
                    fresh.push(true);
                    out.servers.push(sv.clone());
                }
            }
        }
        for s in &part.sessions {
            if fresh.get(s.server).copied().unwrap_or(false) {
                let mut s = s.clone();
                s.server = map[s.server];
                out.sessions.push(s);
            }
        }
        for d in &part.databases {
            let mut d = d.clone();
            if let Ok(info) = &mut d.outcome {
                info.server = map.get(info.server).copied().unwrap_or(info.server);
            }
            out.databases.push(d);
        }
        out.schemas.extend(part.schemas.iter().cloned());
    }
    out.databases.sort_by_key(|d| {
        order
            .iter()
            .position(|n| *n == d.name)
            .unwrap_or(usize::MAX)
    });
    out
}

/// Why a configured database's reading in `obs` failed, if it did: unreachable, its server's
/// activity scan failed, or its schema listing failed.
fn failed_read(obs: &Observation, d: &ObservedDatabase) -> Option<String> {
    match &d.outcome {
        Err(e) => Some(e.clone()),
        Ok(info) => obs
            .servers
            .get(info.server)
            .and_then(|s| s.activity_error.clone())
            .map(|e| format!("activity scan failed: {e}"))
            .or_else(|| {
                info.schema_error
                    .clone()
                    .map(|e| format!("schema listing failed: {e}"))
            }),
    }
}

/// A poll that could not read a database its previous poll did (the monitor's backend was
/// terminated, a network blip) would show that database with nothing in it. Instead the previous
/// reading is carried forward and marked stale: the database's info, its schemas, and the sessions
/// of its server, with the failed read's error and the time the reading was taken. The snapshot built
/// from it is incomplete (no schema is `orphaned`), and says so. Databases the previous poll could not
/// read either stay as they are.
pub fn carry_forward(prev: &Observation, mut next: Observation) -> Observation {
    // Judge every database before anything is carried: carrying a server clears its scan error.
    let failures: Vec<(usize, String)> = next
        .databases
        .iter()
        .enumerate()
        .filter_map(|(i, d)| failed_read(&next, d).map(|e| (i, e)))
        .collect();
    let mut server_map: HashMap<ServerId, ServerId> = HashMap::new();
    for (i, error) in failures {
        let name = next.databases[i].name.clone();
        let Some(p) = prev.databases.iter().find(|p| p.name == name) else {
            continue;
        };
        let Ok(pinfo) = &p.outcome else {
            continue;
        };
        let since = p.stale.as_ref().map_or(prev.taken_at, |st| st.since);
        let new_id = match server_map.get(&pinfo.server) {
            Some(&id) => id,
            None => {
                let id = adopt_server(prev, pinfo.server, &mut next);
                server_map.insert(pinfo.server, id);
                id
            }
        };
        if !next.schemas.iter().any(|s| s.database == name) {
            let carried = prev.schemas.iter().filter(|s| s.database == name).cloned();
            next.schemas.extend(carried);
        }
        let d = &mut next.databases[i];
        d.outcome = Ok(DatabaseInfo {
            server: new_id,
            ..pinfo.clone()
        });
        d.stale = Some(Stale { since, error });
    }
    next
}

/// Brings a server of `prev` and its sessions into `next` (replacing a failed scan of the same
/// server, matched by key), and returns its id in `next`.
fn adopt_server(prev: &Observation, id: ServerId, next: &mut Observation) -> ServerId {
    let server = &prev.servers[id];
    let new_id = match next.servers.iter().position(|s| s.key == server.key) {
        Some(i) => {
            // Its scan failed this time: the sessions shown are the previous ones.
            next.servers[i].activity_error = None;
            next.servers[i].now = server.now;
            next.sessions.retain(|s| s.server != i);
            i
        }
        None => {
            next.servers.push(server.clone());
            next.servers.len() - 1
        }
    };
    let carried = prev.sessions.iter().filter(|s| s.server == id).map(|s| {
        let mut s = s.clone();
        s.server = new_id;
        s
    });
    next.sessions.extend(carried);
    new_id
}

/// Builds the snapshot. Pure: same observation, same snapshot. Takes the observation by value so
/// the session strings move into the report instead of being copied (this is the dashboard's hot
/// path: 5,000 sessions per poll).
pub fn build_snapshot(obs: Observation, conv: &Convention) -> Snapshot {
    let mut warnings: Vec<(WarningCode, String)> = Vec::new();

    // Configured database name per (server, datname), first configuration wins.
    let mut configured: HashMap<(ServerId, &str), &str> = HashMap::new();
    for db in &obs.databases {
        if let Ok(info) = &db.outcome {
            configured
                .entry((info.server, info.datname.as_str()))
                .or_insert(db.name.as_str());
        }
    }
    let server_labels: Vec<&str> = obs.servers.iter().map(|s| s.label.as_str()).collect();
    let server_label = |id: ServerId| -> String {
        server_labels
            .get(id)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("server{id}"))
    };

    // Parse every label once.
    let parsed: Vec<LabelParse> = obs
        .sessions
        .iter()
        .map(|s| parse_label(&conv.app_prefix, &s.application_name))
        .collect();
    let namespace_of = |i: usize| -> Option<&str> {
        match &parsed[i] {
            LabelParse::Labeled(l) => Some(l.namespace.as_str()),
            _ => None,
        }
    };
    let by_key: HashMap<(ServerId, i32), usize> = obs
        .sessions
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.server, s.pid), i))
        .collect();

    // Direct waiters per blocker, for each session's `blocking` list.
    let mut waiters: HashMap<(ServerId, i32), BTreeSet<i32>> = HashMap::new();
    for s in &obs.sessions {
        for &b in &s.blocked_by {
            waiters.entry((s.server, b)).or_default().insert(s.pid);
        }
    }
    let graph = LockGraph::build(obs.sessions.iter().flat_map(|s| {
        s.blocked_by
            .iter()
            .map(move |&b| ((s.server, b), (s.server, s.pid)))
    }));

    let session_db: Vec<String> = obs
        .sessions
        .iter()
        .map(|s| {
            let datname = s.datname.as_deref().unwrap_or("");
            configured
                .get(&(s.server, datname))
                .map(|n| n.to_string())
                .unwrap_or_else(|| datname.to_string())
        })
        .collect();

    let wait_of = |s: &ObservedSession| -> (Option<f64>, Option<WaitSource>) {
        if s.blocked_by.is_empty() {
            return (None, None);
        }
        let now = obs
            .servers
            .get(s.server)
            .map(|sv| sv.now)
            .unwrap_or(obs.taken_at);
        if let Some(ws) = s.awaited.as_ref().and_then(|a| a.waitstart) {
            (Some(seconds_between(now, ws)), Some(WaitSource::Waitstart))
        } else if let Some(qs) = s.query_start {
            (Some(seconds_between(now, qs)), Some(WaitSource::QueryStart))
        } else {
            (None, None)
        }
    };

    // Blocking edges (while the sessions are still borrowed).
    let mut blocking: Vec<BlockingEdge> = Vec::new();
    for (i, s) in obs.sessions.iter().enumerate() {
        let (waiting_s, wait_source) = wait_of(s);
        let mut blockers = s.blocked_by.clone();
        blockers.sort_unstable();
        blockers.dedup();
        for b in blockers {
            let blocker = by_key.get(&(s.server, b)).copied();
            let blocker_ns = blocker.and_then(namespace_of);
            let blocked_ns = namespace_of(i);
            let blocker_session = blocker.map(|j| &obs.sessions[j]);
            let queued_behind = match (blocker_session.and_then(|o| o.awaited.as_ref()), &s.awaited)
            {
                (Some(theirs), Some(mine)) => theirs.object == mine.object,
                _ => false,
            };
            let root = graph
                .root_of(&(s.server, b))
                .map(|(_, pid)| *pid)
                .unwrap_or(b);
            let awaited = s.awaited.as_ref();
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
            blocking.push(BlockingEdge {
                database: session_db[i].clone(),
                server: server_label(s.server),
                blocked_pid: s.pid,
                blocker_pid: b,
                blocked_application_name: s.application_name.clone(),
                blocker_application_name: blocker_session.map(|o| o.application_name.clone()),
                blocked_namespace: blocked_ns.map(str::to_owned),
                blocker_namespace: blocker_ns.map(str::to_owned),
                cross_invocation: matches!((blocked_ns, blocker_ns), (Some(a), Some(b)) if a != b),
                lock_type: s.awaited.as_ref().map(|a| a.lock_type.clone()),
                lock_mode: s.awaited.as_ref().map(|a| a.mode.clone()),
                relation: s.awaited.as_ref().and_then(|a| a.relation.clone()),
                waiting_s,
                wait_source,
                root_pid: root,
                blocker_state: blocker_session.and_then(|o| o.state.clone()),
                queued_behind,
                blocker_mode,
                row: awaited.and_then(|a| a.row.clone()),
                wait,
            });
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

    // Lock trees.
    let lock_trees: Vec<LockTree> = graph
        .roots()
        .iter()
        .map(|root| {
            let (server, pid) = root.key;
            let rows = graph.expand(&root.key);
            let members: BTreeSet<i32> = rows.iter().map(|r| r.key.1).collect();
            let root_idx = by_key.get(&root.key).copied();
            let root_session = root_idx.map(|j| &obs.sessions[j]);
            let now = obs
                .servers
                .get(server)
                .map(|s| s.now)
                .unwrap_or(obs.taken_at);
            let label = server_label(server);
            LockTree {
                database: root_idx
                    .or_else(|| {
                        // A prepared transaction (pid 0) has no session: name the victims' database.
                        rows.get(1).and_then(|r| by_key.get(&r.key)).copied()
                    })
                    .map(|j| session_db[j].clone())
                    .unwrap_or_default(),
                root_pid: pid,
                root_application_name: root_session.map(|s| s.application_name.clone()),
                root_namespace: root_idx.and_then(namespace_of).map(str::to_owned),
                root_state: root_session.and_then(|s| s.state.clone()),
                root_idle_in_transaction: root_session
                    .and_then(|s| s.state.as_deref())
                    .is_some_and(|st| st.starts_with("idle in transaction")),
                root_xact_age_s: root_session
                    .and_then(|s| s.xact_start)
                    .map(|x| seconds_between(now, x)),
                victims: root.victims,
                depth: root.depth,
                in_cycle: root.in_cycle,
                cross_invocation: blocking.iter().any(|e| {
                    e.server == label
                        && members.contains(&e.blocked_pid)
                        && members.contains(&e.blocker_pid)
                        && e.cross_invocation
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
        .collect();

    // Live set and detection completeness.
    let live: BTreeSet<String> = (0..obs.sessions.len())
        .filter_map(namespace_of)
        .map(str::to_owned)
        .collect();
    let complete = obs
        .databases
        .iter()
        .all(|d| d.outcome.is_ok() && d.stale.is_none())
        && obs.servers.iter().all(|s| s.activity_error.is_none());
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
                "{unattributed} sessions carry the '{}_' prefix but cannot be attributed to a \
                 namespace",
                conv.app_prefix
            ),
        ));
    }
    let waits: Vec<(Option<f64>, Option<WaitSource>)> = obs.sessions.iter().map(wait_of).collect();

    // Sessions: the observed strings move into the report.
    let Observation {
        taken_at,
        databases: observed_databases,
        servers,
        sessions: observed_sessions,
        schemas: observed_schemas,
    } = obs;
    let mut sessions: Vec<SessionReport> = Vec::with_capacity(observed_sessions.len());
    let mut hidden_queries = 0usize;
    for (((s, label), database), (waiting_s, wait_source)) in observed_sessions
        .into_iter()
        .zip(parsed)
        .zip(session_db)
        .zip(waits)
    {
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
        let insufficient = s.query.as_deref() == Some(INSUFFICIENT_PRIVILEGE);
        hidden_queries += usize::from(insufficient);
        let mut blocked_by = s.blocked_by;
        blocked_by.sort_unstable();
        blocked_by.dedup();
        let blocking_pids: Vec<i32> = waiters
            .get(&(s.server, s.pid))
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        let (lock_type, lock_mode, relation) = match s.awaited {
            Some(a) => (Some(a.lock_type), Some(a.mode), a.relation),
            None => (None, None, None),
        };
        sessions.push(SessionReport {
            database,
            server: server_label_of(&servers, s.server),
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
            insufficient_privilege: insufficient,
            backend_start: s.backend_start,
            xact_start: s.xact_start,
            query_start: s.query_start,
            state_change: s.state_change,
            blocked_by,
            blocking: blocking_pids,
            lock_type,
            lock_mode,
            relation,
            waiting_s,
            wait_source,
        });
    }
    if hidden_queries > 0 {
        warnings.insert(
            0,
            (
                WarningCode::InsufficientPrivilege,
                format!(
                "{hidden_queries} sessions of other roles show <insufficient privilege>: pgswarm's \
                 role lacks pg_read_all_stats, so their state, query, wait event and start times \
                 are hidden (an idle-in-transaction root shows as 'state unknown'). Lock waits \
                 among them are still found, with the locked object and the real wait time \
                 (pg_locks, pg_blocking_pids). To see the rest: GRANT pg_read_all_stats TO <role>; \
                 (or pg_monitor)"
            ),
            ),
        );
    }

    // Schemas.
    let mut schemas: Vec<SchemaReport> = observed_schemas
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

    let invocations = tally_invocations(&sessions, &blocking, &schemas);

    // Databases.
    let mut per_db: HashMap<&str, (usize, usize)> = HashMap::new();
    for s in &sessions {
        let e = per_db.entry(s.database.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(!s.blocked_by.is_empty());
    }
    let databases = observed_databases
        .into_iter()
        .map(|d| {
            let (n, blocked) = per_db.get(d.name.as_str()).copied().unwrap_or_default();
            let stale_since = d.stale.as_ref().map(|st| st.since);
            match d.outcome {
                Ok(info) => {
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
                            .clone()
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
                        latency_ms: Some(info.latency_ms),
                        sessions: n,
                        blocked,
                    }
                }
                Err(e) => DatabaseReport {
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
                },
            }
        })
        .collect();

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
        warning_codes: warnings.iter().map(|(c, _)| *c).collect(),
        warnings: warnings.into_iter().map(|(_, w)| w).collect(),
    }
}

fn server_label_of(servers: &[ObservedServer], id: ServerId) -> String {
    servers
        .get(id)
        .map(|s| s.label.clone())
        .unwrap_or_else(|| format!("server{id}"))
}

/// Per namespace: workers, sessions, databases, blocked/blocking counts, schemas. Tallied over
/// borrowed strings; only the final rows allocate.
fn tally_invocations(
    sessions: &[SessionReport],
    blocking: &[BlockingEdge],
    schemas: &[SchemaReport],
) -> Vec<InvocationReport> {
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
    // Vectors deduplicated once at the end: cheaper than a set insert per session.
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
    let mut invocations: Vec<InvocationReport> = acc
        .into_iter()
        .map(|(ns, a)| {
            let token = crate::domain::naming::Namespace::parse(ns).and_then(|n| n.token());
            InvocationReport {
                pid: token.map(|t| t.pid),
                started_at: token.map(|t| t.started_at),
                forced: token.is_none(),
                live: a.sessions > 0,
                workers: sort_workers(a.workers),
                sessions: a.sessions,
                databases: {
                    let mut d = a.databases;
                    d.sort_unstable();
                    d.dedup();
                    d.into_iter().map(str::to_owned).collect()
                },
                blocked: a.blocked,
                blocking: a.blocking,
                cross_invocation: a.cross,
                schemas: a.schemas,
                schema_bytes: a.schema_bytes,
                namespace: ns.to_owned(),
            }
        })
        .collect();
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

#[cfg(test)]
mod tests;
