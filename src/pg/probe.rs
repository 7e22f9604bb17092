//! The probe: what one poll asks every configured database, at a cost that scales with *blocked*
//! sessions, not with connections.
//!
//! `pg_stat_activity`, `pg_locks` and `pg_blocking_pids()` are cluster-wide, so databases that share a
//! server share one activity scan (a backend is counted once). Per server and poll:
//!
//! 1. one `pg_stat_activity` scan that calls `pg_blocking_pids()` only for rows waiting on a
//!    heavyweight lock (`wait_event_type = 'Lock'`); each call snapshots the whole lock manager, and
//!    calling it for every backend is what makes other tools expensive. Over a persistent session
//!    the scan is incremental: idle rows that did not change since the previous poll are not shipped
//!    again (see `domain::incremental` for why that is exact, and where it falls back to a full read);
//! 2. only if something is blocked, and only when a waiter or one of its blockers moved since the
//!    last read, one `pg_locks` read filtered to the blocked pids, for the awaited lock's type, mode,
//!    object and `waitstart` (PostgreSQL 14+);
//! 3. relation OIDs resolved through a connection to *the database the relation lives in*
//!    (`regclass` only resolves in the connected database).
//!
//! Per configured database: a catalog query for the test schemas (table counts, sizes). Everything runs
//! concurrently; a slow or dead database delays nobody else, and every step is bounded. The activity
//! and lock statements are prepared once per session.

use crate::domain::incremental::{ActivityCache, ActivityRead, Asked, LockCache};
use crate::domain::snapshot::{
    AwaitedLock, DatabaseInfo, Observation, ObservedDatabase, ObservedHealth, ObservedSchema,
    ObservedServer, ObservedSession, PreparedXact, ServerId,
};
use crate::domain::text::display_ident;
use crate::pg::connect::{
    connect, describe_error, is_own_session, SessionSettings, APPLICATION_NAME,
};
use crate::pg::conninfo::{Environment, Target};
use crate::pg::row::{ColumnError, RowExt};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement};

/// One configured database.
#[derive(Debug, Clone)]
pub struct DbTarget {
    pub name: String,
    pub target: Target,
}

/// What a probe reads besides sessions.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub schema_prefix: String,
    /// Exact schema sizes (`pg_total_relation_size`, which takes a brief lock per table). Without it,
    /// or when a table is locked, sizes are estimates from `pg_class.relpages`.
    pub exact_sizes: bool,
    /// Whose locks count as a test run's (`pg::public_write`).
    pub app_prefix: String,
    /// Schemas whose writes by test sessions are public writes; empty: not looked for.
    pub shared_schemas: Vec<String>,
}

impl ProbeOptions {
    /// The options of a convention (estimated sizes).
    pub fn of(convention: &crate::domain::snapshot::Convention) -> Self {
        ProbeOptions {
            schema_prefix: convention.schema_prefix.clone(),
            exact_sizes: false,
            app_prefix: convention.app_prefix.clone(),
            shared_schemas: convention.shared_schemas.clone(),
        }
    }
}

impl Default for ProbeOptions {
    /// The naming convention's defaults, estimated sizes.
    fn default() -> Self {
        ProbeOptions::of(&crate::domain::snapshot::Convention::default())
    }
}

/// An open monitor session to one configured database, with what identifies its server.
pub struct DbSession {
    pub client: Client,
    pub server_key: String,
    pub version: String,
    pub version_num: i32,
    pub datname: String,
    pub latency: Duration,
    /// Each statement is prepared when first needed and then once per session: a poll is one round
    /// trip and no parse or plan on the server (most one-shot snapshots see no waiter, and never
    /// need the lock statement or the incremental read).
    full_stmt: tokio::sync::OnceCell<Statement>,
    delta_stmt: tokio::sync::OnceCell<Statement>,
    /// Reads once and closes (`pgswarm snapshot`, discovery): the full read leaves out the live
    /// list that only an incremental read would use.
    one_shot: bool,
    locks_stmt: tokio::sync::OnceCell<Statement>,
    /// The schema listing and the relation names, prepared on first use: an unnamed statement
    /// would be parsed and planned again on every poll.
    schemas_stmt: tokio::sync::OnceCell<Statement>,
    relations_stmt: tokio::sync::OnceCell<Statement>,
    lock_count_stmt: tokio::sync::OnceCell<Statement>,
    schema_fingerprint_stmt: tokio::sync::OnceCell<Statement>,
    pub max_connections: i32,
    /// `max_locks_per_transaction × (max_connections + max_prepared_transactions)`.
    pub lock_capacity: i64,
    /// What incremental polling remembers between polls of this session (see `domain::incremental`).
    cache: Mutex<ProbeCache>,
    /// What the shared-schema reads remember (see `pg::public_write`).
    pub shared: crate::pg::public_write::SharedReader,
}

#[derive(Default)]
struct ProbeCache {
    activity: ActivityCache,
    locks: LockCache,
    counters: ProbeCounters,
    /// Rows in `pg_locks` when last counted, and when.
    lock_table: Option<(i64, DateTime<Utc>)>,
    /// The last schema listing, when it was read, and the catalog fingerprint it was read under.
    schemas: Option<(SchemaFingerprint, DateTime<Utc>, Vec<ObservedSchema>)>,
}

/// See `SCHEMA_FINGERPRINT_SQL`.
type SchemaFingerprint = (i64, i64, Option<i32>);

/// What a session's polls asked the server for so far (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    pub activity_reads: u64,
    pub full_reads: u64,
    /// Session rows the last activity read shipped (a full read ships all of them).
    pub last_rows_sent: usize,
    pub lock_reads: u64,
    /// Schema listings (with their tables) actually read; a poll whose catalog fingerprint did not
    /// change reuses the last one.
    pub schema_listings: u64,
}

impl DbSession {
    pub fn counters(&self) -> ProbeCounters {
        lock(&self.cache).counters
    }

    /// Narrows the incremental read's margin (see `ActivityCache::set_margin`).
    #[cfg(feature = "testkit")]
    pub fn set_margin_for_tests(&self, margin: chrono::Duration) {
        lock(&self.cache).activity.set_margin(margin);
    }

    /// The server's health as far as this session knows it (the lock table as last read).
    pub fn health(&self) -> ObservedHealth {
        let (used, at) = lock(&self.cache).lock_table.unzip();
        ObservedHealth {
            max_connections: Some(self.max_connections),
            lock_table_capacity: Some(self.lock_capacity),
            lock_table_used: used,
            lock_table_read_at: at,
            prepared: Vec::new(),
            xacts: None,
        }
    }

    /// Counts `pg_locks` (only on polls that read it anyway, and on the session's first poll).
    async fn read_lock_table(&self, limit: Duration) {
        const SQL: &str = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks";
        let Ok(stmt) = self
            .lock_count_stmt
            .get_or_try_init(|| bounded(limit, self.client.prepare(SQL)))
            .await
        else {
            return;
        };
        if let Ok(row) = bounded(limit, self.client.query_one(stmt, &[])).await {
            if let Ok(count) = row.col::<i64>(0) {
                lock(&self.cache).lock_table = Some((count, Utc::now()));
            }
        }
    }
}

/// Why a database could not be read (opened, or one of its statements answered). Shown, and
/// carried to the snapshot as text; nothing is decided from its wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The session could not be opened (or its catalog resolution pinned): see `connect`.
    #[error("{}", .0.message)]
    Connect(crate::pg::connect::ConnectError),
    /// The server answered a statement with an error (described with its SQLSTATE).
    #[error("{0}")]
    Server(String),
    /// No answer within the statement's bound (the server's timeout plus `CLIENT_SLACK`).
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// A column was not what the statement promised.
    #[error(transparent)]
    Column(#[from] ColumnError),
    #[error("PostgreSQL {0} is too old: pgswarm needs 10 or later")]
    TooOld(String),
    /// The session went away (its task failed, or the server closed it); the poller reconnects.
    #[error("{0}")]
    Lost(String),
    /// The first connection attempt has not finished yet.
    #[error("connecting…")]
    Connecting,
}

/// Oldest server the probe supports (`pg_blocking_pids`, `backend_type`).
pub const MIN_VERSION_NUM: i32 = 100000;

/// How much longer than the server's `statement_timeout` the client waits for an answer: enough for
/// the server's own cancellation to arrive first when the server is alive.
pub const CLIENT_SLACK: Duration = Duration::from_secs(2);

/// Bounds a query on the client side too: `statement_timeout` cannot help when the network is gone.
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ReadError> {
    match tokio::time::timeout(limit + CLIENT_SLACK, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ReadError::Server(describe_error(&e))),
        Err(_) => Err(ReadError::Timeout(limit + CLIENT_SLACK)),
    }
}

/// Connects to one database and reads its identity.
pub async fn open_session(
    target: &Target,
    settings: &SessionSettings,
    env: &(dyn Environment + Sync),
) -> Result<DbSession, ReadError> {
    let client = connect(target, settings, env)
        .await
        .map_err(ReadError::Connect)?;
    let started = Instant::now();
    let row = bounded(
        settings.statement_timeout,
        client.query_one(
            "SELECT pg_catalog.current_setting('server_version'), pg_catalog.current_setting('server_version_num')::pg_catalog.int4, \
                    pg_catalog.current_database()::pg_catalog.text, \
                    pg_catalog.pg_postmaster_start_time()::pg_catalog.text || ' port ' || pg_catalog.current_setting('port'), \
                    pg_catalog.current_setting('max_connections')::pg_catalog.int4, \
                    pg_catalog.current_setting('max_locks_per_transaction')::pg_catalog.int8 \
                      * (pg_catalog.current_setting('max_connections')::pg_catalog.int8 \
                         + pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int8)",
            &[],
        ),
    )
    .await?;
    let latency = started.elapsed();
    let version: String = row.col(0)?;
    let version_num: i32 = row.col(1)?;
    if version_num < MIN_VERSION_NUM {
        return Err(ReadError::TooOld(version));
    }
    let max_connections: i32 = row.col(4)?;
    let lock_capacity: i64 = row.col(5)?;
    let datname: String = row.col(2)?;
    let server_key: String = row.col(3)?;
    if version_num >= 120_000 {
        // Plan each prepared statement once, not a custom plan per call for the first five (and
        // forever when the planner keeps preferring them).
        bounded(
            settings.statement_timeout,
            client.batch_execute("SET plan_cache_mode = force_generic_plan"),
        )
        .await?;
    }
    Ok(DbSession {
        client,
        full_stmt: tokio::sync::OnceCell::new(),
        delta_stmt: tokio::sync::OnceCell::new(),
        one_shot: false,
        locks_stmt: tokio::sync::OnceCell::new(),
        schemas_stmt: tokio::sync::OnceCell::new(),
        relations_stmt: tokio::sync::OnceCell::new(),
        lock_count_stmt: tokio::sync::OnceCell::new(),
        schema_fingerprint_stmt: tokio::sync::OnceCell::new(),
        max_connections,
        lock_capacity,
        cache: Mutex::new(ProbeCache::default()),
        shared: Default::default(),
        version,
        version_num,
        datname,
        server_key,
        latency,
    })
}

/// Opens a session to every target concurrently.
pub async fn open_all(
    targets: &[DbTarget],
    settings: &SessionSettings,
    env: &(dyn Environment + Sync),
) -> Vec<Result<DbSession, ReadError>> {
    join_all(
        targets
            .iter()
            .map(|t| open_session(&t.target, settings, env)),
    )
    .await
}

/// The columns every activity statement returns, decoded by `decode_activity`: the session's columns
/// from `pg_stat_get_activity` (`a`) and `pg_database` (`d`), three columns only the `alive` row
/// fills, the row's kind (`row`, `blockers` or `alive`), and a last column only the `alive` row
/// fills (the server's transaction count, see `xacts!`). Reading the function instead of the
/// `pg_stat_activity` view leaves out the view's join to `pg_authid` for every row: the role name is
/// a syscache lookup.
///
/// Client backends, autovacuum workers (autovacuum can hold a lock DDL waits for) and walsenders (a
/// replication connection can carry a test label, and then belongs to the live set) are reported.
/// Without `pg_read_all_stats`, other roles' rows have a NULL `backend_type`; those with a database
/// are client backends and are kept, shown as `<insufficient privilege>`.
///
/// Such a hidden row also hides `wait_event_type`, so "is it waiting on a lock?" is asked of
/// `pg_locks` instead, which no role filters: a row with a lock not granted gets
/// `pg_blocking_pids()`, which any role may call. The `pg_locks` read is an uncorrelated subquery
/// inside the `CASE`, which PostgreSQL evaluates only when a row first reaches it: with a privileged
/// role (no hidden rows) it never runs.
macro_rules! session_columns {
    () => {
        session_columns!(
            "CASE WHEN a.wait_event_type = 'Lock' THEN pg_catalog.pg_blocking_pids(a.pid) \
                  WHEN a.backend_type IS NULL \
                       AND a.pid = ANY (ARRAY(SELECT l.pid FROM pg_catalog.pg_locks l WHERE NOT l.granted)) \
                  THEN pg_catalog.pg_blocking_pids(a.pid) END"
        )
    };
    // With the blockers already computed (`--summary` has them for its waiters).
    ($blockers:literal) => {
        concat!(
            "a.pid, d.datname::pg_catalog.text, \
             CASE WHEN a.usesysid IS NOT NULL THEN pg_catalog.pg_get_userbyid(a.usesysid)::pg_catalog.text END, \
             coalesce(a.application_name, ''), pg_catalog.host(a.client_addr), a.backend_type, a.state, \
             a.wait_event_type, a.wait_event, a.query, a.backend_start, a.xact_start, a.query_start, \
             a.state_change, ",
            $blockers,
            ", NULL::pg_catalog.timestamptz, NULL::pg_catalog.int4[], NULL::pg_catalog.timestamptz[], 'row', \
             NULL::pg_catalog.int8"
        )
    };
}

/// Which backends are reported (see `session_columns`); pgswarm's own probe session never is.
macro_rules! reported {
    () => {
        "a.pid <> pg_catalog.pg_backend_pid() \
         AND (a.backend_type IN ('client backend', 'autovacuum worker', 'walsender') \
              OR (a.backend_type IS NULL AND a.datid IS NOT NULL))"
    };
}

/// Transactions committed and rolled back in every database of the server, as the statistics
/// last flushed them: the dashboard's transactions per second are the difference between two
/// polls. One accessor pair per database (a handful: test servers are not fleets), read in the
/// statement that runs anyway rather than in a round trip of its own.
macro_rules! xacts {
    () => {
        "(SELECT pg_catalog.sum(pg_catalog.pg_stat_get_db_xact_commit(x.oid) \
                                + pg_catalog.pg_stat_get_db_xact_rollback(x.oid))::pg_catalog.int8 \
          FROM pg_catalog.pg_database x)"
    };
}

/// The `alive` row: the key of the live set (see `live_key`), the statement time and every live
/// `(pid, backend_start)` from the same status snapshot, read through the per-backend accessors
/// that do not build whole rows (`$cols`, from `$from`); and the server's transaction count.
macro_rules! alive_row {
    ($key:expr, $cols:literal, $from:literal) => {
        concat!(
            "SELECT NULL, ",
            $key,
            ", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                    NULL, NULL, pg_catalog.statement_timestamp(), ",
            $cols,
            ", 'alive', ",
            xacts!(),
            " ",
            $from
        )
    };
}

/// The key of a live set (`domain::incremental::ActivityRead::alive_key`): its size and two sums of
/// differently salted pid hashes, so that a set that changed has the same key only by a 64-bit
/// accident, and even then only until the next full read.
macro_rules! live_key {
    ($pid:literal) => {
        concat!(
            "pg_catalog.count(*)::pg_catalog.text || ':' || coalesce(pg_catalog.sum(pg_catalog.hashint4(",
            $pid,
            "))::pg_catalog.text, '') || ':' \
             || coalesce(pg_catalog.sum(pg_catalog.hashint4(",
            $pid,
            " # 1431655765))::pg_catalog.text, '')"
        )
    };
}

/// The prepared transactions, one row each (kind `prepared`): gid in the application_name column,
/// database and owner in the datname and usename columns, the time it was prepared in `xact_start`.
/// `pg_prepared_xact()` reads a small shared array; most servers have none.
macro_rules! prepared_rows {
    () => {
        "SELECT NULL::pg_catalog.int4, p.database::pg_catalog.text, p.owner::pg_catalog.text, p.gid, \
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, p.prepared, NULL, NULL, NULL, NULL, NULL, \
                NULL, 'prepared', NULL FROM pg_catalog.pg_prepared_xacts p"
    };
}

/// A full read over a persistent session: every reported row, and the live list for the next,
/// incremental read (see `domain::incremental`).
const FULL_SQL: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM pg_catalog.pg_stat_get_activity(NULL) a LEFT JOIN pg_catalog.pg_database d ON d.oid = a.datid WHERE ",
    reported!(),
    " UNION ALL ",
    prepared_rows!(),
    " UNION ALL ",
    alive_row!(
        live_key!("pg_catalog.pg_stat_get_backend_pid(i)"),
        "pg_catalog.array_agg(pg_catalog.pg_stat_get_backend_pid(i)), pg_catalog.array_agg(pg_catalog.pg_stat_get_backend_start(i))",
        "FROM pg_catalog.pg_stat_get_backend_idset() i"
    )
);

/// A one-shot read (`pgswarm snapshot`, a sweep's discovery): every reported row and the statement
/// time; no live list, since no incremental read follows.
const ONCE_SQL: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM pg_catalog.pg_stat_get_activity(NULL) a LEFT JOIN pg_catalog.pg_database d ON d.oid = a.datid WHERE ",
    reported!(),
    " UNION ALL ",
    prepared_rows!(),
    " UNION ALL ",
    alive_row!("NULL", "NULL, NULL", "")
);

/// An incremental read (see `domain::incremental` for why it is exact). `$1` is the bound (the
/// previous read's statement time minus the margin); `$2` to `$5` the held rows it asks about
/// (`domain::incremental::Asked`): pid, wait event type and wait event as held, and whether to form
/// the row again regardless; `$6` the key of the live set held: the live list is sent only when
/// the server's differs.
///
/// `b` reads three per-backend accessors for every backend (pid, `backend_start`, `query_start`:
/// a settled idle session changes only with a new statement, which moves `query_start`); the
/// others (`xact_start`, wait event) are read only for the held busy rows asked about. Accessors
/// cost a fraction of forming rows: at 1,000 backends the status snapshot is about 1.3 ms, the
/// three accessors about 0.5 ms, forming every row 2.5 ms more. Whole
/// rows are formed only for `w`, the backends that changed: one `pg_stat_get_activity(pid)` call
/// each, which builds its 30-column row type every call (about 45 µs). Past one changed backend in
/// 16 a single full formation is cheaper, so `n` switches to it (a busy swarm costs at most a full
/// read). A held busy row that did not change comes back as its pid and fresh blockers. `whole` must
/// never be NULL (a NULL row would be neither formed nor answered): `query_start` and `xact_start`
/// can be NULL on a live backend (an aborted transaction has no `xact_start`).
const DELTA_SQL: &str = concat!(
    "WITH b AS MATERIALIZED ( \
       SELECT i, pg_catalog.pg_stat_get_backend_pid(i) AS pid, pg_catalog.pg_stat_get_backend_start(i) AS bs, \
              pg_catalog.pg_stat_get_backend_activity_start(i) AS qs \
       FROM pg_catalog.pg_stat_get_backend_idset() i), \
     c AS MATERIALIZED ( \
       SELECT b.pid, h.pid IS NOT NULL AS busy, \
              CASE WHEN h.pid IS NOT NULL THEN pg_catalog.pg_stat_get_backend_wait_event_type(b.i) END AS wt, \
              b.bs IS NULL OR b.bs >= $1 OR coalesce(b.qs >= $1, false) \
              OR (h.pid IS NOT NULL \
                  AND (h.again OR coalesce(pg_catalog.pg_stat_get_backend_xact_start(b.i) >= $1, false) \
                       OR pg_catalog.pg_stat_get_backend_wait_event_type(b.i) IS DISTINCT FROM h.wt \
                       OR pg_catalog.pg_stat_get_backend_wait_event(b.i) IS DISTINCT FROM h.we)) AS whole \
       FROM b LEFT JOIN ROWS FROM (pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.bool[])) \
                        AS h(pid, wt, we, again) ON h.pid = b.pid \
       WHERE b.pid <> pg_catalog.pg_backend_pid()), \
     w AS MATERIALIZED (SELECT pid FROM c WHERE whole), \
     n AS MATERIALIZED (SELECT (SELECT pg_catalog.count(*) FROM w) * 16 > (SELECT pg_catalog.count(*) FROM b) AS scan), \
     s AS MATERIALIZED (SELECT ",
    live_key!("b.pid"),
    " AS k FROM b) \
     SELECT ",
    session_columns!(),
    " FROM w CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(w.pid) a \
       LEFT JOIN pg_catalog.pg_database d ON d.oid = a.datid \
     WHERE NOT (SELECT scan FROM n) AND ",
    reported!(),
    " UNION ALL SELECT ",
    session_columns!(),
    " FROM pg_catalog.pg_stat_get_activity(NULL) a JOIN w ON w.pid = a.pid \
       LEFT JOIN pg_catalog.pg_database d ON d.oid = a.datid \
     WHERE (SELECT scan FROM n) AND ",
    reported!(),
    " UNION ALL \
     SELECT c.pid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
            CASE WHEN c.wt = 'Lock' THEN pg_catalog.pg_blocking_pids(c.pid) END, NULL, NULL, NULL, 'blockers', NULL \
     FROM c WHERE c.busy AND NOT c.whole \
     UNION ALL ",
    prepared_rows!(),
    " UNION ALL ",
    alive_row!(
        "(SELECT k FROM s)",
        "CASE WHEN (SELECT k FROM s) IS DISTINCT FROM $6 THEN (SELECT pg_catalog.array_agg(b.pid) FROM b) END, \
         CASE WHEN (SELECT k FROM s) IS DISTINCT FROM $6 THEN (SELECT pg_catalog.array_agg(b.bs) FROM b) END",
        ""
    )
);

/// One lock-manager snapshot (`pg_lock_status()`, materialized once as the function returns it:
/// picking columns first made PostgreSQL copy every row into a new shape, which cost as much as
/// the snapshot itself) and four kinds of row from it:
///
/// - `awaits`: each waiter's lock not granted (a process waits for at most one);
/// - `row`: each waiter's granted `tuple` lock. A row-lock wait shows as a wait for the holder's
///   `transactionid`, which names no table; the waiter has queued for the row first, so its tuple
///   lock says which table (and which row) the wait is about. Both come from one pass (`x`);
/// - `held`: each mode a blocker holds on the very object a waiter awaits. The join hashes the
///   object's most telling columns (NULLs made comparable: within one lock type a column is always
///   or never NULL) and compares the rest only for the pairs that hash alike. The blocker filter
///   names `w.pid` so that it is applied to the few joined rows, not as a linear search of the
///   array for each of the thousands of locks a DDL transaction can hold;
/// - `count`: the number of rows, the lock table's fill (in the pid column), from the same snapshot.
///
/// `$1` is the waiters and their blockers, `$2` the waiters. At 2,500 locks and 50 waiters this is
/// about 1.7 times a bare `count(*) FROM pg_lock_status()` (it was 3 times).
fn locks_sql(version_num: i32) -> String {
    let waitstart = if version_num >= 140000 {
        "w.waitstart"
    } else {
        "NULL::pg_catalog.timestamptz"
    };
    let obj = |t: &str| {
        format!(
            "pg_catalog.format('%s:%s:%s:%s:%s:%s:%s:%s:%s:%s', {t}.locktype, {t}.database, {t}.relation, \
             {t}.page, {t}.tuple, {t}.virtualxid, {t}.transactionid, {t}.classid, {t}.objid, \
             {t}.objsubid)"
        )
    };
    let hashed = |c: &str, none: &str| format!("coalesce(h.{c}, {none}) = coalesce(w.{c}, {none})");
    let same = |c: &str| format!("h.{c} IS NOT DISTINCT FROM w.{c}");
    let same_object = [
        "h.locktype = w.locktype".to_string(),
        hashed("relation", "0"),
        hashed("transactionid", "'0'::pg_catalog.xid"),
        hashed("objid", "0"),
        same("database"),
        same("page"),
        same("tuple"),
        same("virtualxid"),
        same("classid"),
        same("objsubid"),
    ]
    .join(" AND ");
    let x_obj = obj("a");
    format!(
        "WITH a AS MATERIALIZED (SELECT * FROM pg_catalog.pg_lock_status() l), \
         x AS MATERIALIZED ( \
           SELECT a.*, {x_obj} AS obj FROM a \
           WHERE (NOT a.granted OR a.locktype = 'tuple') AND a.pid = ANY($2)), \
         w AS (SELECT * FROM x WHERE NOT x.granted) \
         SELECT 'awaits', w.pid, w.locktype, w.mode, w.database, d.datname::pg_catalog.text, w.relation, \
                w.page, w.tuple, {waitstart}, w.obj, NULL::pg_catalog.int4, w.transactionid::pg_catalog.text, \
                w.virtualxid, w.classid, w.objid \
           FROM w LEFT JOIN pg_catalog.pg_database d ON d.oid = w.database \
         UNION ALL \
         SELECT 'row', t.pid, t.locktype, t.mode, t.database, d.datname::pg_catalog.text, t.relation, t.page, \
                t.tuple, NULL, t.obj, NULL, NULL, NULL, NULL, NULL \
           FROM x t LEFT JOIN pg_catalog.pg_database d ON d.oid = t.database \
          WHERE t.granted \
         UNION ALL \
         SELECT 'held', w.pid, h.locktype, h.mode, NULL, NULL, NULL, NULL, NULL, NULL, w.obj, h.pid, \
                NULL, NULL, NULL, NULL \
           FROM w JOIN a h ON {same_object} \
          WHERE h.granted AND h.pid <> w.pid AND h.pid = ANY($1::pg_catalog.int4[] || w.pid) \
         UNION ALL \
         SELECT 'count', pg_catalog.count(*)::pg_catalog.int4, '', '', NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, \
                NULL, NULL, NULL \
           FROM a"
    )
}

/// Escapes a literal for LIKE with the default `\` escape.
fn like_prefix(prefix: &str) -> String {
    let mut s = String::new();
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push_str("\\_%");
    s
}

struct ServerActivity {
    now: DateTime<Utc>,
    sessions: Vec<ObservedSession>,
    prepared: Vec<PreparedXact>,
    xacts: Option<i64>,
}

/// Sends the activity read this session is due: full (first poll, every so often, one-shot) or
/// incremental from `since`, asking about the held busy rows.
async fn query_activity(
    session: &DbSession,
    since: Option<DateTime<Utc>>,
    asked: &Asked,
    limit: Duration,
) -> Result<Vec<tokio_postgres::Row>, ReadError> {
    let c = &session.client;
    match since {
        None => {
            let sql = if session.one_shot { ONCE_SQL } else { FULL_SQL };
            let stmt = session
                .full_stmt
                .get_or_try_init(|| bounded(limit, c.prepare(sql)))
                .await?;
            bounded(limit, c.query(stmt, &[])).await
        }
        Some(since) => {
            let stmt = session
                .delta_stmt
                .get_or_try_init(|| bounded(limit, c.prepare(DELTA_SQL)))
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &since,
                &asked.pids,
                &asked.wait_event_types,
                &asked.wait_events,
                &asked.again,
                &asked.alive_key,
            ];
            bounded(limit, c.query(stmt, &params)).await
        }
    }
}

/// One row of an activity read into `read` (see `session_columns` for the layout).
fn decode_activity(
    row: &tokio_postgres::Row,
    server: ServerId,
    read: &mut ActivityRead,
) -> Result<(), ColumnError> {
    let kind: &str = row.col(18)?;
    let pid: Option<i32> = row.col(0)?;
    match (kind, pid) {
        ("row", Some(pid)) => read.sent.push(ObservedSession {
            server,
            pid,
            datname: row.col(1)?,
            usename: row.col(2)?,
            application_name: row.col(3)?,
            client_addr: row.col(4)?,
            backend_type: row.col(5)?,
            state: row.col(6)?,
            wait_event_type: row.col(7)?,
            wait_event: row.col(8)?,
            query: row.col(9)?,
            backend_start: row.col(10)?,
            xact_start: row.col(11)?,
            query_start: row.col(12)?,
            state_change: row.col(13)?,
            blocked_by: row.col::<Option<Vec<i32>>>(14)?.unwrap_or_default(),
            awaited: None,
            own: false,
        }),
        ("blockers", Some(pid)) => read
            .refreshed
            .push((pid, row.col::<Option<Vec<i32>>>(14)?.unwrap_or_default())),
        ("prepared", _) => read.prepared.push(PreparedXact {
            gid: row.col(3)?,
            database: row.col(1)?,
            owner: row.col(2)?,
            prepared_at: row.col(11)?,
        }),
        _ => {
            read.statement_time = row.col(15)?;
            let pids: Option<Vec<i32>> = row.col(16)?;
            let starts: Option<Vec<Option<DateTime<Utc>>>> = row.col(17)?;
            if let (Some(pids), Some(starts)) = (pids, starts) {
                read.alive = Some(pids.into_iter().zip(starts).collect());
            }
            read.alive_key = row.col(1)?;
            read.xacts = row.col(19)?;
        }
    }
    Ok(())
}

async fn read_activity(
    session: &DbSession,
    server: ServerId,
    limit: Duration,
) -> Result<ServerActivity, ReadError> {
    let (since, asked) = {
        let cache = lock(&session.cache);
        (cache.activity.since(), cache.activity.asked())
    };
    let rows = match query_activity(session, since, &asked, limit).await {
        Ok(rows) => rows,
        Err(e) => {
            lock(&session.cache).activity.reset();
            return Err(e);
        }
    };
    let mut read = ActivityRead {
        full: since.is_none(),
        ..Default::default()
    };
    for row in rows {
        if let Err(e) = decode_activity(&row, server, &mut read) {
            lock(&session.cache).activity.reset();
            return Err(e.into());
        }
    }
    let now = read.statement_time.unwrap_or_else(Utc::now);
    let prepared = std::mem::take(&mut read.prepared);
    let xacts = read.xacts;
    let mut sessions = {
        let mut cache = lock(&session.cache);
        cache.counters.activity_reads += 1;
        cache.counters.full_reads += u64::from(read.full);
        cache.counters.last_rows_sent = read.sent.len();
        cache.activity.merge(read)
    };
    for s in &mut sessions {
        // Held rows may come from a poll where this server had another position in the list.
        s.server = server;
        s.own = is_own_session(&session.server_key, s.pid, s.backend_start);
    }
    hide_monitors(&mut sessions);
    Ok(ServerActivity {
        now,
        sessions,
        prepared,
        xacts,
    })
}

/// Monitor sessions (this process's own, and other pgswarm processes' by their label) are left
/// out, unless one of them blocks somebody: a sweep's DROP, or a session that merely calls itself
/// `pgswarm`, must show up when it holds a test run up. Only `own` protects a session from being
/// signalled; the label decides nothing but this display.
fn hide_monitors(sessions: &mut Vec<ObservedSession>) {
    let blockers: std::collections::HashSet<i32> = sessions
        .iter()
        .flat_map(|s| s.blocked_by.iter().copied())
        .collect();
    sessions.retain(|s| {
        !(s.own || s.application_name == APPLICATION_NAME) || blockers.contains(&s.pid)
    });
}

/// A poisoned cache only means a panic elsewhere mid-update: start over from a full read.
fn lock(cache: &Mutex<ProbeCache>) -> std::sync::MutexGuard<'_, ProbeCache> {
    cache.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = ProbeCache::default();
        guard
    })
}

/// A lock row before relation names are resolved (see [`locks_sql`] for the kinds).
struct RawLock {
    kind: String,
    pid: i32,
    lock_type: String,
    mode: String,
    database: Option<u32>,
    datname: Option<String>,
    relation: Option<u32>,
    /// `(page,tuple)` of a row.
    row: Option<String>,
    object: String,
    waitstart: Option<DateTime<Utc>>,
    /// For `held`: who holds it.
    holder: Option<i32>,
    /// What else names the awaited object, for the words: transaction id, virtual xid, class/object.
    xid: Option<String>,
    virtualxid: Option<String>,
    classid: Option<u32>,
    objid: Option<u32>,
}

async fn read_awaited_locks(
    session: &DbSession,
    waiters: &[i32],
    blockers: &[i32],
    limit: Duration,
) -> Result<Vec<RawLock>, ReadError> {
    lock(&session.cache).counters.lock_reads += 1;
    let sql = locks_sql(session.version_num);
    let stmt = session
        .locks_stmt
        .get_or_try_init(|| bounded(limit, session.client.prepare(&sql)))
        .await?;
    let all: Vec<i32> = waiters.iter().chain(blockers).copied().collect();
    let rows = bounded(limit, session.client.query(stmt, &[&all, &waiters])).await?;
    let mut locks = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.col::<&str>(0)? == "count" {
            if let Some(count) = row.col::<Option<i32>>(1)? {
                lock(&session.cache).lock_table = Some((i64::from(count), Utc::now()));
            }
            continue;
        }
        locks.push(decode_lock(row)?);
    }
    Ok(locks)
}

fn decode_lock(row: &tokio_postgres::Row) -> Result<RawLock, ColumnError> {
    let page: Option<i32> = row.col(7)?;
    let tuple: Option<i16> = row.col(8)?;
    Ok(RawLock {
        kind: row.col(0)?,
        pid: row.col(1)?,
        lock_type: row.col(2)?,
        mode: row.col(3)?,
        database: row.col(4)?,
        datname: row.col(5)?,
        relation: row.col(6)?,
        row: page.zip(tuple).map(|(p, t)| format!("({p},{t})")),
        waitstart: row.col(9)?,
        object: row.col(10)?,
        holder: row.col(11)?,
        xid: row.col(12)?,
        virtualxid: row.col(13)?,
        classid: row.col(14)?,
        objid: row.col(15)?,
    })
}

async fn resolve_relations(
    session: &DbSession,
    oids: &[u32],
    limit: Duration,
) -> HashMap<u32, String> {
    const SQL: &str = "SELECT c.oid, n.nspname::pg_catalog.text, c.relname::pg_catalog.text FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)";
    let Ok(stmt) = session
        .relations_stmt
        .get_or_try_init(|| bounded(limit, session.client.prepare(SQL)))
        .await
    else {
        return HashMap::new();
    };
    match bounded(limit, session.client.query(stmt, &[&oids])).await {
        // A row that is not an (oid, schema, name) leaves that relation unnamed (shown by oid).
        Ok(rows) => rows
            .iter()
            .filter_map(|r| {
                let oid = r.col::<u32>(0).ok()?;
                let schema = r.col::<String>(1).ok()?;
                let name = r.col::<String>(2).ok()?;
                Some((
                    oid,
                    format!("{}.{}", display_ident(&schema), display_ident(&name)),
                ))
            })
            .collect(),
        Err(_) => HashMap::new(),
    }
}

/// What changes when a test schema or one of its tables appears, goes or changes: the database's
/// row changes to `pg_class` and `pg_namespace` (cumulative statistics, flushed by each backend at
/// most about every 10 s, so `SCHEMA_RELIST_AFTER` bounds the lag), and the names of the test
/// schemas. Listing the schemas with their tables scans all of `pg_class`: with 5,000 test tables
/// that was 15-20 ms, most of a refresh.
const SCHEMA_FINGERPRINT_SQL: &str = "SELECT \
       pg_catalog.pg_stat_get_tuples_inserted(1259) + pg_catalog.pg_stat_get_tuples_updated(1259) \
         + pg_catalog.pg_stat_get_tuples_deleted(1259) + pg_catalog.pg_stat_get_tuples_inserted(2615) \
         + pg_catalog.pg_stat_get_tuples_updated(2615) + pg_catalog.pg_stat_get_tuples_deleted(2615), \
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_namespace WHERE nspname LIKE $1), \
       (SELECT pg_catalog.hashtext(pg_catalog.string_agg(nspname::pg_catalog.text, ',' ORDER BY nspname)) FROM pg_catalog.pg_namespace \
         WHERE nspname LIKE $1)";

/// How old a persistent session's schema listing may get while its fingerprint holds.
const SCHEMA_RELIST_AFTER: chrono::Duration = chrono::Duration::seconds(30);

async fn read_schemas(
    session: &DbSession,
    database: &str,
    opts: &ProbeOptions,
    limit: Duration,
) -> Result<Vec<ObservedSchema>, ReadError> {
    const SQL: &str = "SELECT n.nspname::pg_catalog.text, \
                    (pg_catalog.count(c.oid) FILTER (WHERE c.relkind IN ('r', 'p')))::pg_catalog.int8, \
                    (coalesce(pg_catalog.sum(c.relpages::pg_catalog.int8), 0) \
                       * pg_catalog.current_setting('block_size')::pg_catalog.int8)::pg_catalog.int8 \
             FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
             WHERE n.nspname LIKE $1 \
             GROUP BY n.nspname";
    let pattern = like_prefix(&opts.schema_prefix);
    // A persistent session lists again only when the catalog may have changed (see
    // `SCHEMA_FINGERPRINT_SQL`) or the listing is older than `SCHEMA_RELIST_AFTER`.
    let fingerprint = if session.one_shot || opts.exact_sizes {
        None
    } else {
        let stmt = session
            .schema_fingerprint_stmt
            .get_or_try_init(|| bounded(limit, session.client.prepare(SCHEMA_FINGERPRINT_SQL)))
            .await?;
        let row = bounded(limit, session.client.query_one(stmt, &[&pattern])).await?;
        let print: SchemaFingerprint = (row.col(0)?, row.col(1)?, row.col(2)?);
        let now = Utc::now();
        if let Some((held, at, listed)) = &lock(&session.cache).schemas {
            if *held == print && now - *at < SCHEMA_RELIST_AFTER {
                let mut listed = listed.clone();
                for s in &mut listed {
                    s.database = database.to_owned();
                }
                return Ok(listed);
            }
        }
        Some((print, now))
    };
    let stmt = session
        .schemas_stmt
        .get_or_try_init(|| bounded(limit, session.client.prepare(SQL)))
        .await?;
    let rows = bounded(limit, session.client.query(stmt, &[&pattern])).await?;
    lock(&session.cache).counters.schema_listings += 1;
    let mut schemas: Vec<ObservedSchema> = rows
        .iter()
        .map(|r| {
            Ok(ObservedSchema {
                database: database.to_owned(),
                schema: r.col(0)?,
                tables: r.col(1)?,
                bytes: r.col(2)?,
                bytes_exact: false,
            })
        })
        .collect::<Result<_, ColumnError>>()?;
    if let Some((print, at)) = fingerprint {
        lock(&session.cache).schemas = Some((print, at, schemas.clone()));
    }
    if opts.exact_sizes && !schemas.is_empty() {
        if let Ok(exact) = read_exact_sizes(&session.client, &pattern, limit).await {
            for s in &mut schemas {
                s.bytes = exact.get(&s.schema).copied().unwrap_or(0);
                s.bytes_exact = true;
            }
        }
    }
    Ok(schemas)
}

/// Exact on-disk size of every test schema in the session's database (for the dashboard's background
/// sizer; `pgswarm snapshot` gets them through [`ProbeOptions::exact_sizes`]).
pub async fn exact_schema_sizes(
    client: &Client,
    schema_prefix: &str,
    limit: Duration,
) -> Result<HashMap<String, i64>, ReadError> {
    read_exact_sizes(client, &like_prefix(schema_prefix), limit).await
}

/// Exact sizes take an AccessShareLock per table for a moment: with a short lock_timeout, a table held
/// by DDL makes this fail fast and the estimates stand, instead of the monitor queueing behind DDL.
async fn read_exact_sizes(
    c: &Client,
    pattern: &str,
    limit: Duration,
) -> Result<HashMap<String, i64>, ReadError> {
    bounded(
        limit,
        c.batch_execute("BEGIN READ ONLY; SET LOCAL lock_timeout = '100ms'"),
    )
    .await?;
    let result = bounded(
        limit,
        c.query(
            "SELECT n.nspname::pg_catalog.text, coalesce(pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::pg_catalog.int8 \
             FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
             WHERE n.nspname LIKE $1 AND c.relkind IN ('r', 'p', 'm') GROUP BY 1",
            &[&pattern],
        ),
    )
    .await;
    let _ = bounded(limit, c.batch_execute("ROLLBACK")).await;
    Ok(result?
        .iter()
        .map(|r| Ok((r.col::<String>(0)?, r.col::<i64>(1)?)))
        .collect::<Result<_, ColumnError>>()?)
}

/// Polls every configured database once over already-open sessions (`Err` = unreachable): one
/// activity scan per server, then its lock details, and every database's schemas, all at once.
pub async fn observe(
    targets: &[DbTarget],
    sessions: &[Result<DbSession, ReadError>],
    opts: &ProbeOptions,
    limit: Duration,
) -> Observation {
    let taken_at = Utc::now();
    let grouping = ServerGrouping::of(sessions);
    let server_work = grouping
        .members
        .iter()
        .enumerate()
        .map(|(id, members)| read_server(targets, sessions, id, members, limit, taken_at));
    let schema_work = sessions.iter().enumerate().map(|(i, s)| async move {
        match s {
            Ok(s) => Some(read_schemas(s, &targets[i].name, opts, limit).await),
            Err(_) => None,
        }
    });
    let polling = std::time::Instant::now();
    let (read, schema_results) =
        futures_util::future::join(join_all(server_work), join_all(schema_work)).await;
    let poll_ms = polling.elapsed().as_secs_f64() * 1000.0;
    let shared = read_shared(targets, sessions, &grouping, &read, opts, limit, poll_ms).await;

    let mut servers = Vec::new();
    let mut all_sessions = Vec::new();
    for (server, observed) in read {
        servers.push(server);
        all_sessions.extend(observed);
    }
    let mut schemas = Vec::new();
    let databases = targets
        .iter()
        .zip(sessions)
        .zip(schema_results)
        .enumerate()
        .map(|(i, ((t, s), listed))| {
            let schema_error = match listed {
                Some(Ok(v)) => {
                    schemas.extend(v);
                    None
                }
                Some(Err(e)) => Some(e),
                None => None,
            };
            observed_database(
                t,
                s,
                grouping.server_of[i],
                schema_error.map(|e| e.to_string()),
            )
        })
        .collect();

    Observation {
        taken_at,
        databases,
        servers,
        sessions: all_sessions,
        schemas,
        shared,
    }
}

/// Per configured database, the writing locks of labeled sessions on shared tables and (every few
/// seconds) the shared tables' write counters: see `pg::public_write`.
async fn read_shared(
    targets: &[DbTarget],
    sessions: &[Result<DbSession, ReadError>],
    grouping: &ServerGrouping,
    read: &[(ObservedServer, Vec<ObservedSession>)],
    opts: &ProbeOptions,
    limit: Duration,
    poll_ms: f64,
) -> crate::domain::public_write::SharedObservation {
    let work = sessions.iter().enumerate().map(|(i, s)| async move {
        let (Ok(s), Some(server)) = (s, grouping.server_of[i]) else {
            return (Vec::new(), None);
        };
        let Some((sv, seen)) = read.get(server) else {
            return (Vec::new(), None);
        };
        let reading = crate::pg::public_write::SharedRead {
            client: &s.client,
            reader: &s.shared,
            database: &targets[i].name,
            datname: &s.datname,
            app_prefix: &opts.app_prefix,
            shared_schemas: &opts.shared_schemas,
            limit,
            one_shot: s.one_shot,
            // Split among the databases read on that server: together they keep to the share.
            poll_ms: poll_ms / grouping.members[server].len().max(1) as f64,
        };
        if sv.activity_error.is_some() {
            return (Vec::new(), None);
        }
        let locks = reading.locks(seen).await;
        // A one-shot read has no earlier reading to compare with.
        let counters = if s.one_shot {
            None
        } else {
            reading.counters().await
        };
        (locks, counters)
    });
    let mut out = crate::domain::public_write::SharedObservation::default();
    for (locks, counters) in join_all(work).await {
        out.locks.extend(locks);
        out.counters.extend(counters);
    }
    out
}

/// One configured database as a poll saw it: its session's identity, or why it has none.
fn observed_database(
    target: &DbTarget,
    session: &Result<DbSession, ReadError>,
    server: Option<ServerId>,
    schema_error: Option<String>,
) -> ObservedDatabase {
    ObservedDatabase {
        name: target.name.clone(),
        target: target.target.display(),
        outcome: session
            .as_ref()
            .map_err(ToString::to_string)
            .map(|s| DatabaseInfo {
                server: server.expect("a reachable database has a server"),
                server_version: s.version.clone(),
                datname: s.datname.clone(),
                latency: s.latency,
                schema_error,
            }),
        stale: None,
        not_read_yet: false,
    }
}

/// Reachable databases grouped by the server they live on (`DbSession::server_key`): the activity
/// view is cluster-wide, so one scan per server serves all its databases.
struct ServerGrouping {
    /// Server id per database (`None`: unreachable).
    server_of: Vec<Option<ServerId>>,
    /// Database indexes per server id, in configured order.
    members: Vec<Vec<usize>>,
}

impl ServerGrouping {
    fn of(sessions: &[Result<DbSession, ReadError>]) -> Self {
        let mut server_of = vec![None; sessions.len()];
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut keys: BTreeMap<&str, ServerId> = BTreeMap::new();
        for (i, s) in sessions.iter().enumerate() {
            if let Ok(s) = s {
                let next = members.len();
                let id = *keys.entry(s.server_key.as_str()).or_insert(next);
                if id == next {
                    members.push(Vec::new());
                }
                members[id].push(i);
                server_of[i] = Some(id);
            }
        }
        ServerGrouping { server_of, members }
    }
}

/// One server: its activity, read through the first of its databases that answers, then the
/// details of the locks its blocked sessions wait for.
async fn read_server(
    targets: &[DbTarget],
    sessions: &[Result<DbSession, ReadError>],
    id: ServerId,
    members: &[usize],
    limit: Duration,
    taken_at: DateTime<Utc>,
) -> (ObservedServer, Vec<ObservedSession>) {
    let first = members[0];
    let label = server_label(&targets[first].target);
    let key = sessions[first]
        .as_ref()
        .map(|s| s.server_key.clone())
        .unwrap_or_default();
    let mut last_err = String::new();
    for &i in members {
        let Ok(via) = &sessions[i] else { continue };
        match read_activity(via, id, limit).await {
            Ok(mut act) => {
                attach_locks(&mut act, via, members, sessions, limit).await;
                // The lock table's fill comes with every pg_locks read (the same scan); a session
                // that has not read pg_locks yet counts it once, so a one-shot always has it.
                if lock(&via.cache).lock_table.is_none() {
                    via.read_lock_table(limit).await;
                }
                let server = ObservedServer {
                    key,
                    label,
                    now: act.now,
                    activity_error: None,
                    health: ObservedHealth {
                        prepared: act.prepared,
                        xacts: act.xacts,
                        ..via.health()
                    },
                };
                return (server, act.sessions);
            }
            Err(e) => last_err = format!("{}: {e}", targets[i].name),
        }
    }
    let server = ObservedServer {
        key,
        label,
        now: taken_at,
        activity_error: Some(last_err),
        health: Default::default(),
    };
    (server, Vec::new())
}

/// How a server is named in reports: its host list with ports.
pub fn server_label(t: &Target) -> String {
    t.hosts
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Fills each blocked session's `awaited` lock: reused from the previous poll when the same
/// sessions wait for the same blockers (`LockCache`), else read from `pg_locks` and named.
async fn attach_locks(
    act: &mut ServerActivity,
    via: &DbSession,
    members: &[usize],
    sessions: &[Result<DbSession, ReadError>],
    limit: Duration,
) {
    let reused = lock(&via.cache).locks.reuse(&act.sessions);
    if let Some(awaited) = reused {
        for s in &mut act.sessions {
            s.awaited = awaited.get(&s.pid).cloned();
        }
        return;
    }
    let blocked: Vec<i32> = act
        .sessions
        .iter()
        .filter(|s| !s.blocked_by.is_empty())
        .map(|s| s.pid)
        .collect();
    let mut blockers: Vec<i32> = act
        .sessions
        .iter()
        .flat_map(|s| s.blocked_by.iter().copied())
        .collect();
    blockers.sort_unstable();
    blockers.dedup();
    let Ok(locks) = read_awaited_locks(via, &blocked, &blockers, limit).await else {
        return;
    };
    let names = relation_names(&locks, via, members, sessions, limit).await;
    let awaited = awaited_locks(&locks, &names);
    for s in &mut act.sessions {
        s.awaited = awaited.get(&s.pid).cloned();
    }
    lock(&via.cache).locks.store(&act.sessions, &awaited);
}

/// Where a lock's relation OID is resolved: its own database (`None` for a shared catalog, which
/// any database resolves).
fn relation_db(l: &RawLock) -> Option<String> {
    if l.database == Some(0) {
        None
    } else {
        l.datname.clone()
    }
}

type RelationNames = HashMap<(Option<String>, u32), String>;

/// Resolves the relation OIDs of `locks`, each in the database it lives in, through the sessions
/// already open to this server's configured databases.
async fn relation_names(
    locks: &[RawLock],
    via: &DbSession,
    members: &[usize],
    sessions: &[Result<DbSession, ReadError>],
    limit: Duration,
) -> RelationNames {
    let mut wanted: BTreeMap<Option<String>, Vec<u32>> = BTreeMap::new();
    for l in locks {
        if let Some(rel) = l.relation {
            wanted.entry(relation_db(l)).or_default().push(rel);
        }
    }
    let mut names = HashMap::new();
    for (datname, oids) in wanted {
        let session = match &datname {
            None => Some(via),
            Some(d) => members.iter().find_map(|&i| match &sessions[i] {
                Ok(s) if &s.datname == d => Some(s),
                _ => None,
            }),
        };
        if let Some(s) = session {
            for (oid, name) in resolve_relations(s, &oids, limit).await {
                names.insert((datname.clone(), oid), name);
            }
        }
    }
    names
}

/// The awaited lock per blocked pid, with the row it queued for (for a row-lock wait) and the
/// modes its blockers hold on the same object.
fn awaited_locks(locks: &[RawLock], names: &RelationNames) -> HashMap<i32, AwaitedLock> {
    let relation_of = |l: &RawLock| {
        l.relation.map(|oid| {
            names
                .get(&(relation_db(l), oid))
                .cloned()
                // Not in a configured database: say where it is instead of guessing.
                .unwrap_or_else(|| format!("{}:{oid}", l.datname.as_deref().unwrap_or("?")))
        })
    };
    let mut awaited: HashMap<i32, AwaitedLock> = HashMap::new();
    for l in locks.iter().filter(|l| l.kind == "awaits") {
        awaited.insert(
            l.pid,
            AwaitedLock {
                lock_type: l.lock_type.clone(),
                mode: l.mode.clone(),
                relation: relation_of(l),
                row: l.row.clone(),
                waitstart: l.waitstart,
                object: l.object.clone(),
                detail: lock_detail(l),
                held: Vec::new(),
            },
        );
    }
    for l in locks {
        let Some(a) = awaited.get_mut(&l.pid) else {
            continue;
        };
        match l.kind.as_str() {
            // A row-lock wait (on the holder's transaction) is about the row it queued for.
            "row" if a.relation.is_none() => {
                a.relation = relation_of(l);
                a.row = l.row.clone();
            }
            "held" => {
                if let Some(holder) = l.holder {
                    a.held.push((holder, l.mode.clone()));
                }
            }
            _ => {}
        }
    }
    awaited
}

/// What else names an awaited object that is not a relation or a row.
fn lock_detail(l: &RawLock) -> Option<String> {
    match l.lock_type.as_str() {
        "transactionid" => l.xid.as_ref().map(|x| format!("transaction {x}")),
        "virtualxid" => l
            .virtualxid
            .as_ref()
            .map(|v| format!("virtual transaction {v}")),
        "advisory" | "object" | "userlock" => {
            l.classid.zip(l.objid).map(|(c, o)| format!("{c}/{o}"))
        }
        _ => None,
    }
}

/// What `pgswarm snapshot --summary` reads per server, in one statement: the lock-wait state from
/// the per-backend accessor (no row formed for the other backends), `pg_blocking_pids()` for the
/// waiters, whole rows only for the waiters and their blockers, and one `pg_locks` scan for the lock
/// table's fill and each wait's start (`waitstart`, PostgreSQL 14+). A backend whose wait event is
/// hidden (no `pg_read_all_stats`) counts as waiting when it has a lock not granted. Row kinds:
/// `row` (as in `session_columns`), `waitstart` (pid, column 15), `locks` (the row count in column
/// 16, and the statement time).
fn summary_sql(version_num: i32) -> String {
    let waitstart = if version_num >= 140000 {
        "l.waitstart"
    } else {
        "NULL::pg_catalog.timestamptz"
    };
    format!(
        "WITH l AS MATERIALIZED (SELECT * FROM pg_catalog.pg_lock_status() l), \
         b AS MATERIALIZED ( \
           SELECT pg_catalog.pg_stat_get_backend_pid(i) AS pid, pg_catalog.pg_stat_get_backend_wait_event_type(i) AS wt \
           FROM pg_catalog.pg_stat_get_backend_idset() i), \
         w AS MATERIALIZED ( \
           SELECT b.pid, pg_catalog.pg_blocking_pids(b.pid) AS by FROM b \
           WHERE b.pid <> pg_catalog.pg_backend_pid() \
             AND (b.wt = 'Lock' \
                  OR (b.wt IS NULL AND b.pid IN (SELECT pid FROM l WHERE NOT granted)))), \
         k AS (SELECT pid FROM w UNION SELECT pg_catalog.unnest(by) FROM w) \
         SELECT {columns} \
         FROM k CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(k.pid) a \
              LEFT JOIN w ON w.pid = a.pid LEFT JOIN pg_catalog.pg_database d ON d.oid = a.datid \
         WHERE {reported} \
         UNION ALL \
         SELECT l.pid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                NULL, {waitstart}, NULL, NULL, 'waitstart', NULL FROM l WHERE NOT l.granted \
         UNION ALL \
         SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                NULL, pg_catalog.statement_timestamp(), ARRAY[pg_catalog.count(*)::pg_catalog.int4], NULL, 'locks', NULL FROM l",
        columns = session_columns!("w.by"),
        reported = reported!(),
    )
}

/// Connects to every target, reads what `snapshot --summary` needs once per server, and closes.
pub async fn summarize_once(
    targets: &[DbTarget],
    settings: &SessionSettings,
    env: &(dyn Environment + Sync),
) -> (Observation, crate::domain::summary::WaitStarts) {
    let limit = settings.statement_timeout;
    let sessions = open_all(targets, settings, env).await;
    let taken_at = Utc::now();
    let grouping = ServerGrouping::of(&sessions);
    let mut waits = crate::domain::summary::WaitStarts::default();
    let mut servers = Vec::new();
    let mut all_sessions = Vec::new();
    for (id, members) in grouping.members.iter().enumerate() {
        let first = members[0];
        let label = server_label(&targets[first].target);
        let mut server = ObservedServer {
            key: String::new(),
            label: label.clone(),
            now: taken_at,
            activity_error: None,
            health: Default::default(),
        };
        let mut last_err = None;
        for &i in members {
            let Ok(via) = &sessions[i] else { continue };
            server.key = via.server_key.clone();
            let sql = summary_sql(via.version_num);
            match bounded(limit, via.client.query(&sql, &[])).await {
                Ok(rows) => {
                    let mut read = ActivityRead::default();
                    let mut used = None;
                    let decoded = rows.iter().try_for_each(|row| {
                        match row.col::<&str>(18)? {
                            "waitstart" => {
                                if let (Some(pid), Some(t)) = (row.col(0)?, row.col(15)?) {
                                    waits.started.insert((label.clone(), pid), t);
                                }
                            }
                            "locks" => {
                                server.now =
                                    row.col::<Option<DateTime<Utc>>>(15)?.unwrap_or(taken_at);
                                used = row
                                    .col::<Option<Vec<i32>>>(16)?
                                    .and_then(|v| v.first().copied())
                                    .map(i64::from);
                            }
                            _ => decode_activity(row, id, &mut read)?,
                        }
                        Ok::<_, ColumnError>(())
                    });
                    if let Err(e) = decoded {
                        last_err = Some(format!("{}: {e}", targets[i].name));
                        continue;
                    }
                    server.health = ObservedHealth {
                        max_connections: Some(via.max_connections),
                        lock_table_capacity: Some(via.lock_capacity),
                        lock_table_used: used,
                        lock_table_read_at: Some(server.now),
                        prepared: Vec::new(),
                        xacts: None,
                    };
                    waits.server_now.insert(label.clone(), server.now);
                    for s in &mut read.sent {
                        s.own = is_own_session(&via.server_key, s.pid, s.backend_start);
                    }
                    hide_monitors(&mut read.sent);
                    all_sessions.extend(read.sent);
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(format!("{}: {e}", targets[i].name)),
            }
        }
        server.activity_error = last_err;
        servers.push(server);
    }
    let databases = targets
        .iter()
        .zip(&sessions)
        .enumerate()
        .map(|(i, (t, s))| observed_database(t, s, grouping.server_of[i], None))
        .collect();
    let obs = Observation {
        shared: Default::default(),
        taken_at,
        databases,
        servers,
        sessions: all_sessions,
        schemas: Vec::new(),
    };
    (obs, waits)
}

/// Connects to every target, polls once and closes: what `pgswarm snapshot` does.
pub async fn observe_once(
    targets: &[DbTarget],
    settings: &SessionSettings,
    opts: &ProbeOptions,
    env: &(dyn Environment + Sync),
) -> Observation {
    let mut sessions = open_all(targets, settings, env).await;
    for s in sessions.iter_mut().flatten() {
        s.one_shot = true;
    }
    observe(targets, &sessions, opts, settings.statement_timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("test"), "test\\_%");
        assert_eq!(like_prefix("a_b%"), "a\\_b\\%\\_%");
    }
}
