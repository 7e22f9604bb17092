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
//! recording): its fields are documented in docs/json.md and it deserializes back for replay.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped whenever a JSON field changes meaning or disappears (additions do not bump it).
pub const SCHEMA_VERSION: u32 = 1;

/// What `query` says for other roles' sessions when the monitor lacks `pg_read_all_stats`.
pub const INSUFFICIENT_PRIVILEGE: &str = "<insufficient privilege>";

/// The naming convention in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convention {
    pub app_prefix: String,
    pub schema_prefix: String,
    /// Schemas every run shares (`public` unless configured): a test session writing there is a
    /// public write (see `domain::public_write`).
    pub shared_schemas: Vec<String>,
}

impl Default for Convention {
    fn default() -> Self {
        Convention {
            app_prefix: "pytest".into(),
            schema_prefix: "test".into(),
            shared_schemas: vec![crate::domain::public_write::DEFAULT_SHARED_SCHEMA.into()],
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
    pub latency: std::time::Duration,
    /// Reading the test schemas failed although the database answered.
    pub schema_error: Option<String>,
}

/// A prepared transaction (`PREPARE TRANSACTION`): it has no session, keeps its locks (shown as
/// blocker pid 0) and its transaction open until `COMMIT PREPARED` or `ROLLBACK PREPARED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedXact {
    pub gid: String,
    pub owner: Option<String>,
    pub database: Option<String>,
    pub prepared_at: Option<DateTime<Utc>>,
}

/// What a server's settings and lock table say about its health (read by the probe).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedHealth {
    pub max_connections: Option<i32>,
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`.
    pub lock_table_capacity: Option<i64>,
    /// Rows in `pg_locks` when last read, and when: it is read only on polls that read `pg_locks`
    /// anyway (and on a session's first poll, so every one-shot snapshot has it).
    pub lock_table_used: Option<i64>,
    pub lock_table_read_at: Option<DateTime<Utc>>,
    /// Its prepared transactions, read with the activity.
    pub prepared: Vec<PreparedXact>,
    /// Transactions committed and rolled back in all its databases (`pg_stat_database`), read with
    /// the activity: the dashboard's transactions per second are its deltas.
    pub xacts: Option<i64>,
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
    pub health: ObservedHealth,
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
    /// A session this pgswarm process opened (known by its backend pid and start, never by the
    /// name a session gives itself): never signalled.
    pub own: bool,
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
    /// Locks and write counters on the shared schemas (`domain::public_write`).
    pub shared: crate::domain::public_write::SharedObservation,
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
    /// One health line per server: connections, the oldest transaction, idle-in-transaction
    /// sessions, and how full the lock table is.
    #[serde(default)]
    pub servers: Vec<ServerReport>,
    /// What limits the picture, in words.
    pub warnings: Vec<String>,
    /// The stable code of each warning, in the same order: what scripts (and pgswarm itself)
    /// decide on, never the words.
    #[serde(default)]
    pub warning_codes: Vec<WarningCode>,
    /// SQLite test databases (`--sqlite`): who holds which lock, from `/proc/locks`. Attached after
    /// the PostgreSQL picture is built; empty when none are configured.
    #[serde(default)]
    pub sqlite: Vec<crate::domain::sqlite::SqliteReport>,
    /// Writes into shared schemas (`public`): from locks held now, and (dashboard, `record`) from
    /// the shared tables' write counters. See docs/public-writes.md.
    #[serde(default)]
    pub public_writes: Vec<crate::domain::public_write::PublicWrite>,
    /// Labeled sessions connected to a database where their run has no worker schema: the setup
    /// in which `search_path` falls through to `public`.
    #[serde(default)]
    pub missing_worker_schemas: Vec<crate::domain::public_write::MissingWorkerSchema>,
}

/// A lock table this full gets a warning: at 100% the next lock fails with `out of shared memory`
/// (53200).
pub const LOCK_TABLE_WARN: f64 = 0.8;

/// One server's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    pub server: String,
    /// Client sessions seen (pgswarm's own left out).
    pub connections: usize,
    pub max_connections: Option<i32>,
    pub oldest_xact_age_s: Option<f64>,
    pub oldest_xact_pid: Option<i32>,
    /// The run (namespace) of the oldest transaction, or its application name.
    pub oldest_xact_owner: Option<String>,
    pub idle_in_transaction: usize,
    pub lock_table_used: Option<i64>,
    pub lock_table_capacity: Option<i64>,
    /// `used / capacity`, 0 to 1 (can pass 1: the table has some slack).
    pub lock_table_fill: Option<f64>,
    pub lock_table_read_at: Option<DateTime<Utc>>,
    /// At least [`LOCK_TABLE_WARN`] full.
    pub lock_table_warning: bool,
    /// Prepared transactions, oldest first (each holds its locks until committed or rolled back;
    /// the oldest transaction above counts them, as pid 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepared: Vec<PreparedXact>,
    /// Transactions committed plus rolled back in all its databases since the statistics were
    /// reset (`pg_stat_database`, as the server last flushed them), and when read (server clock):
    /// two readings give transactions per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xacts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xacts_at: Option<DateTime<Utc>>,
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
    /// A server's lock table is at least 80% full: the next locks fail with 53200 at 100%.
    LockTableFull,
    /// A test session writes (or wrote) into a shared schema (`public_writes`).
    PublicWrite,
    /// A server's own log is not read for lock waits (no structured log, or no privilege): the
    /// warning says which setting or grant would turn it on.
    ServerLogUnavailable,
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

impl ReadStatus {
    /// Whether the database's sessions were read (with or without its schemas).
    pub fn sessions_read(self) -> bool {
        matches!(self, ReadStatus::Read | ReadStatus::SchemasFailed)
    }
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
    /// How long the identity query took when the monitor session opened (milliseconds in JSON).
    #[serde(with = "crate::domain::millis::option")]
    pub latency_ms: Option<std::time::Duration>,
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
    /// SQLite locks (`--sqlite`) held by this run's processes, by the namespace in their environment.
    #[serde(default)]
    pub sqlite_locks: usize,
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
    /// When the current lock wait began, on the server's clock: `waitstart`, else (marked by
    /// `wait_source`) the waiting statement's start. Lets episodes be told apart after the fact.
    #[serde(default)]
    pub wait_started_at: Option<DateTime<Utc>>,
    /// One of the sessions of the pgswarm process that took this snapshot (shown only while it
    /// blocks someone; never signalled). Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
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
    /// Attaches the SQLite reports and counts, for each PostgreSQL invocation, the SQLite locks its
    /// processes hold (matched by namespace), so that one run's trouble is seen in one place.
    pub fn attach_sqlite(&mut self, reports: Vec<crate::domain::sqlite::SqliteReport>) {
        for inv in &mut self.invocations {
            inv.sqlite_locks = reports
                .iter()
                .flat_map(|r| &r.holders)
                .filter(|h| {
                    h.namespace
                        .as_ref()
                        .is_some_and(|n| n.as_str() == inv.namespace)
                })
                .count();
        }
        self.sqlite = reports;
    }

    pub fn blocked_sessions(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| !s.blocked_by.is_empty())
            .count()
    }

    pub fn unreachable(&self) -> impl Iterator<Item = &DatabaseReport> {
        self.databases.iter().filter(|d| !d.reachable)
    }

    /// Databases whose sessions could not be read: unreachable ones, and reachable ones whose
    /// server's activity scan failed (a schema listing that alone failed still read the sessions).
    /// What the picture leaves out, and what makes `snapshot` exit 3.
    pub fn unread(&self) -> impl Iterator<Item = &DatabaseReport> {
        self.databases.iter().filter(|d| !d.read.sessions_read())
    }
}

fn seconds_between(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    // Clamp: a wait cannot be negative even if timestamps disagree by a few microseconds.
    ((now - then).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0)
}

mod build;
mod merge;
pub use build::build_snapshot;
pub use merge::{carry_forward, merge_observations};

#[cfg(test)]
mod tests;
