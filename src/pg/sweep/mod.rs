//! Carrying out a sweep plan: exactly the schemas the plan names, each judged again while it is
//! dropped, and committed only after the last check.
//!
//! Each schema is dropped in its own transaction:
//!
//! 1. every configured server is asked which test sessions are connected (in parallel, on one
//!    autocommit "verifier" session per server); a session of the namespace, an unattributable test
//!    session, or a server that cannot answer keeps the schema before anything is locked;
//! 2. `BEGIN`, `SET LOCAL lock_timeout` and `statement_timeout`; the schema must still exist;
//! 3. the dependency closure: everything `DROP SCHEMA … CASCADE` would remove, computed the way the
//!    server's own dependency walk does it ([`external_dependents_prepared`]); anything outside the
//!    schema keeps it (`external_dependents`, with the objects named);
//! 4. `DROP SCHEMA … CASCADE`, which holds its locks until the transaction ends;
//! 5. every configured server is asked again (step 1's question): a session of the namespace that
//!    connected while the drop waited for its locks, on this server or any other, means `ROLLBACK`
//!    (`became_live`), and so does a server that cannot answer (`active_detection_incomplete`);
//! 6. `COMMIT`. The window between step 5's question and the COMMIT's answer is measured and reported
//!    (`check_to_commit_ms_max`).
//!
//! The verifiers are separate sessions on purpose: inside a transaction PostgreSQL serves
//! `pg_stat_activity` from a snapshot taken at its first use, so a check on the dropping session itself
//! would not see a session that connected meanwhile.
//!
//! Every statement is also bounded on the client (the server-side timeout plus [`CLIENT_MARGIN`]): a
//! server that stops answering (a frozen process cannot enforce its own `statement_timeout`) costs one
//! bound, after which the connection is abandoned before any COMMIT (the server rolls back when it
//! notices), the schema is `failed` (`client_timeout`) and that server's remaining schemas are kept
//! (`server_unresponsive`).
//!
//! Steps 1-3 are read-only. They run on a second session while the previous schema's COMMIT runs (most
//! of a COMMIT after a large DROP is the server removing files, after the commit has taken effect and
//! its locks are gone), so the next DROP can follow at once; DROPs stay one at a time per server. The
//! gap between a schema's closure and its DROP is measured and reported (`dependents_to_drop_ms_max`).
//!
//! Also: each database is swept under a session-level advisory lock, so two sweeps never run against the
//! same database at once (`sweep_in_progress`); a schema too big for the lock table on its own (53200)
//! is dropped in batches of tables, each batch checked and committed the same way; servers are swept in
//! parallel (bounded), one drop at a time per server; the sweep never cancels or terminates another
//! session.

mod closure;
mod discover;
mod verify;

pub use closure::{external_dependents_prepared, prepare_closure};
pub use discover::{discover_and_plan, DependencyCheck};
pub use verify::Verifiers;

use crate::domain::sweep::{
    judge_dependents, judge_liveness, judge_uncommitted, plan_expired, quote_ident,
    DatabaseOutcome, DatabasePlan, FailReason, FailedDrop, KeepReason, Kept, PlannedDrop,
    SweepPlan, SweepRules, UncommittedSuspect, Verdict,
};
use crate::pg::connect::{connect, describe_error, SessionSettings};
use crate::pg::conninfo::Environment;
use crate::pg::probe::DbTarget;
use crate::pg::row::{ColumnError, RowExt};
use chrono::Utc;
use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_postgres::{Client, Statement};

/// The advisory lock key every pgswarm sweep takes in the database it sweeps ("pgswarm" in ASCII).
pub const SWEEP_LOCK_KEY: i64 = 0x7067_7377_6172_6d00;

/// Added to the server-side timeout of a statement to bound it on the client.
pub const CLIENT_MARGIN: Duration = Duration::from_secs(5);

/// How drops are run.
#[derive(Debug, Clone)]
pub struct DropSettings {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// Servers swept at once.
    pub jobs: usize,
    /// Tables per transaction when a schema is too large for the lock table on its own.
    pub batch_tables: usize,
    /// Added to `statement_timeout` for the client-side bound of every drop statement.
    pub client_margin: Duration,
}

impl Default for DropSettings {
    fn default() -> Self {
        DropSettings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            jobs: 4,
            batch_tables: 100,
            client_margin: CLIENT_MARGIN,
        }
    }
}

/// Progress reports, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    Dropping {
        database: String,
        schema: String,
    },
    Done {
        database: String,
        schema: String,
        ok: bool,
    },
}

/// Why a statement on the dropping session failed.
#[derive(Debug, Clone)]
struct Failure {
    reason: FailReason,
    sqlstate: Option<String>,
    error: String,
}

impl Failure {
    /// A column that was not what the statement promised: nothing further is decided from it.
    fn unreadable(e: ColumnError) -> Failure {
        Failure {
            reason: FailReason::SqlError,
            sqlstate: None,
            error: e.to_string(),
        }
    }

    fn into_failed(self, schema: &str) -> FailedDrop {
        FailedDrop {
            schema: schema.to_string(),
            reason: self.reason,
            sqlstate: self.sqlstate,
            error: self.error,
        }
    }
}

/// The dropping session: every statement bounded on the client, and the first sign that the session
/// is no longer usable remembered.
struct DropConn {
    client: Client,
    bound: Duration,
    broken: Mutex<Option<FailReason>>,
    closure: tokio::sync::OnceCell<Statement>,
}

impl DropConn {
    fn broken(&self) -> Option<FailReason> {
        *self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark(&self, reason: FailReason) {
        let mut b = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        b.get_or_insert(reason);
    }

    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Failure> {
        if let Some(reason) = self.broken() {
            return Err(Failure {
                reason,
                sqlstate: None,
                error: "the session is no longer usable".into(),
            });
        }
        match tokio::time::timeout(self.bound, f).await {
            Err(_) => {
                self.mark(FailReason::ClientTimeout);
                Err(Failure {
                    reason: FailReason::ClientTimeout,
                    sqlstate: None,
                    error: format!(
                        "no answer within {:.0} s (statement_timeout plus a margin): the server \
                         stopped answering; the session was abandoned",
                        self.bound.as_secs_f64()
                    ),
                })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let sqlstate = e.code().map(|c| c.code().to_string());
                // 57P01-57P03: the backend was terminated or the server is going away.
                let lost = e.is_closed()
                    || self.client.is_closed()
                    || sqlstate.as_deref().is_some_and(|c| c.starts_with("57P"));
                let reason = if lost {
                    self.mark(FailReason::ConnectionLost);
                    FailReason::ConnectionLost
                } else {
                    FailReason::SqlError
                };
                Err(Failure {
                    reason,
                    sqlstate,
                    error: describe_error(&e),
                })
            }
        }
    }

    async fn rollback(&self) {
        let _ = self.run(self.client.batch_execute("ROLLBACK")).await;
    }

    /// What `DROP SCHEMA … CASCADE` would remove outside `schema`, on this session.
    async fn outside_of(&self, schema: &str) -> Result<Vec<String>, Failure> {
        let stmt = match self.closure.get() {
            Some(s) => s,
            None => {
                let s = self.run(prepare_closure(&self.client)).await?;
                self.closure.get_or_init(|| async { s }).await
            }
        };
        let schemas = [schema.to_string()];
        let mut found = self
            .run(external_dependents_prepared(&self.client, stmt, &schemas))
            .await?;
        Ok(found.remove(schema).unwrap_or_default())
    }
}

/// Everything a drop needs to judge.
struct Ctx<'a> {
    app_prefix: &'a str,
    rules: &'a SweepRules,
    drop: &'a DropSettings,
    verifiers: &'a Verifiers,
    env: &'a (dyn Environment + Sync),
}

impl Ctx<'_> {
    /// Asks every configured server and judges the answers for `d`'s owner.
    async fn liveness(&self, d: &PlannedDrop) -> Verdict {
        let answers = self.verifiers.ask(self.env).await;
        let Some(owner) = d.owner() else {
            // A planned name the executor cannot attribute: never drop it (the planner does not
            // plan such names; this is a second line).
            return Verdict::Keep(
                KeepReason::UnattributedSessions,
                vec![format!("cannot tell whose schema {} is", d.schema)],
            );
        };
        judge_liveness(
            self.app_prefix,
            owner,
            self.rules.allow_unattributed,
            &answers,
        )
    }
}

enum Attempt {
    /// Committed.
    Dropped(Windows),
    Kept(KeepReason, Vec<String>),
    /// Batch mode: no tables left, the schema itself is next.
    NoTablesLeft,
}

#[derive(Clone, Copy)]
enum Step {
    /// `DROP SCHEMA … CASCADE`.
    Whole,
    /// Up to this many tables, for a schema too big for the lock table on its own.
    Batch(usize),
}

/// The first half of a drop's transaction: the liveness check on every server, then `BEGIN` with
/// the timeouts, the schema still exists, its relations locked (for a whole-schema drop), and nothing
/// outside it would go with it. `Ok(Ok(_))`: the transaction is open and the drop may follow;
/// anything else closed it.
///
/// The locks come before the dependency closure on purpose: a DROP that had to wait for a lock
/// would find, once it got it, whatever came to depend on the schema's tables meanwhile, and CASCADE
/// would remove it unseen. Holding `ACCESS EXCLUSIVE` on every table and view of the schema first,
/// nothing new can start depending on them (creating a view, a foreign key or a column that uses
/// them takes a conflicting lock), and the closure sees everything that already does. Types and
/// functions cannot be locked that way (PostgreSQL takes no lock when an object comes to depend on
/// one); the gap between the closure and the DROP is measured (`dependents_to_drop`).
/// How long a drop waits, inside its transaction, for the writing transactions that were open
/// when its dependency closure was read, and how often it looks (see `settle_uncommitted`).
const UNCOMMITTED_PATIENCE: Duration = Duration::from_secs(2);
const UNCOMMITTED_POLL: Duration = Duration::from_millis(50);

async fn open_checked(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    d: &PlannedDrop,
    step: Step,
) -> Result<Result<Opened, Attempt>, Failure> {
    let schema = d.schema.as_str();
    if let Verdict::Keep(reason, detail) = ctx.liveness(d).await {
        return Ok(Err(Attempt::Kept(reason, detail)));
    }
    let c = &conn.client;
    // synchronous_commit = local: a COMMIT never waits for a standby (a missing one would hold it
    // indefinitely, past statement_timeout, with the window to the last check wide open).
    conn.run(c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE; SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'; \
         SET LOCAL synchronous_commit = local",
        ctx.drop.lock_timeout.as_millis(),
        ctx.drop.statement_timeout.as_millis()
    )))
    .await?;
    let checks = async {
        let exists = conn
            .run(c.query_opt(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&schema],
            ))
            .await?;
        if exists.is_none() {
            return Ok(Err(Attempt::Kept(KeepReason::Vanished, vec![])));
        }
        if matches!(step, Step::Whole) {
            lock_relations(conn, schema).await?;
        }
        if let Verdict::Keep(reason, detail) = judge_dependents(&conn.outside_of(schema).await?) {
            return Ok(Err(Attempt::Kept(reason, detail)));
        }
        if let Err(kept) = settle_uncommitted(conn, ctx, schema).await? {
            return Ok(Err(kept));
        }
        Ok(Ok(Opened {
            checked: Instant::now(),
        }))
    };
    let result = checks.await;
    if !matches!(result, Ok(Ok(_))) {
        conn.rollback().await;
    }
    result
}

/// `LOCK TABLE` every table and view of the schema in `ACCESS EXCLUSIVE` mode, in one statement
/// (waiting, like the DROP would, up to `lock_timeout` each). Materialized views cannot be locked this
/// way (PostgreSQL refuses): one created on them meanwhile is in the measured gap, like types.
async fn lock_relations(conn: &DropConn, schema: &str) -> Result<(), Failure> {
    let rows = conn
        .run(conn.client.query(
            "SELECT c.relname::pg_catalog.text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v') ORDER BY c.oid",
            &[&schema],
        ))
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        qualified_names(schema, &rows)?
    );
    conn.run(conn.client.batch_execute(&sql)).await
}

/// The other transactions of this database that have written (hold a transaction id), and its
/// prepared transactions: any of them may hold uncommitted catalog changes that the dependency
/// closure cannot see. Their locks do not tell which: `CREATE FUNCTION` or `CREATE DOMAIN` take
/// none, a catalog change followed by an `INSERT` looks like the `INSERT`, and catalog row locks
/// are released when the catalog is closed. `evidence` only describes (the strongest lock, the
/// state); it decides nothing. Read inside the drop's transaction, after the closure, with the
/// statistics snapshot cleared first (inside a transaction `pg_stat_activity` is otherwise served
/// from the snapshot of its first use).
const UNCOMMITTED_SQL: &str = "\
WITH db AS (SELECT d.oid FROM pg_catalog.pg_database d \
             WHERE d.datname = pg_catalog.current_database()), \
     l AS MATERIALIZED (SELECT * FROM pg_catalog.pg_lock_status()) \
SELECT a.pid, a.application_name, a.state, a.xact_start, NULL::pg_catalog.text, \
       NULL::pg_catalog.text, \
       coalesce( \
         (SELECT l.mode || ' on ' || l.relation::pg_catalog.regclass::pg_catalog.text FROM l \
           WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.database = (SELECT oid FROM db) \
             AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock') LIMIT 1), \
         (SELECT l.mode || ' on a catalog object' FROM l \
           WHERE l.pid = a.pid AND l.locktype = 'object' LIMIT 1), \
         'it has written') AS evidence, \
       a.backend_xid::pg_catalog.text \
  FROM pg_catalog.pg_stat_get_activity(NULL) a \
 WHERE a.datid = (SELECT oid FROM db) AND a.backend_xid IS NOT NULL \
   AND a.pid <> pg_catalog.pg_backend_pid() \
UNION ALL \
SELECT NULL, NULL, NULL, p.prepared, p.gid, p.owner::pg_catalog.text, 'prepared', \
       p.transaction::pg_catalog.text \
  FROM pg_catalog.pg_prepared_xacts p WHERE p.database = pg_catalog.current_database()";

async fn uncommitted_suspects(conn: &DropConn) -> Result<Vec<UncommittedSuspect>, Failure> {
    conn.run(
        conn.client
            .batch_execute("SELECT pg_catalog.pg_stat_clear_snapshot()"),
    )
    .await?;
    let rows = conn.run(conn.client.query(UNCOMMITTED_SQL, &[])).await?;
    rows.iter()
        .map(|r| {
            Ok(UncommittedSuspect {
                pid: r.col(0)?,
                application_name: r.col(1)?,
                state: r.col(2)?,
                since: r.col(3)?,
                gid: r.col(4)?,
                owner: r.col(5)?,
                evidence: r.col(6)?,
                xid: r.col(7)?,
            })
        })
        .collect::<Result<_, ColumnError>>()
        .map_err(Failure::unreadable)
}

/// After the closure found nothing outside the schema: the writing transactions open at that
/// moment must end before the drop may go ahead, and what they committed is then read again (a
/// second closure, which in READ COMMITTED sees their commits). A prepared transaction keeps the
/// schema at once (it can sit for days); a session's transaction still open after
/// [`UNCOMMITTED_PATIENCE`] keeps it, named. Transactions that start later are in the measured
/// window up to the COMMIT, like any dependency made after the closure.
async fn settle_uncommitted(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    schema: &str,
) -> Result<Result<(), Attempt>, Failure> {
    let open = uncommitted_suspects(conn).await?;
    if open.is_empty() {
        return Ok(Ok(()));
    }
    let keep =
        |still: &[UncommittedSuspect]| match judge_uncommitted(ctx.app_prefix, still, Utc::now()) {
            Verdict::Keep(reason, detail) => Attempt::Kept(reason, detail),
            Verdict::Clear => Attempt::Kept(KeepReason::UncommittedDdl, Vec::new()),
        };
    let prepared: Vec<UncommittedSuspect> =
        open.iter().filter(|s| s.gid.is_some()).cloned().collect();
    if !prepared.is_empty() {
        return Ok(Err(keep(&prepared)));
    }
    let deadline = Instant::now() + UNCOMMITTED_PATIENCE;
    loop {
        tokio::time::sleep(UNCOMMITTED_POLL).await;
        let now = uncommitted_suspects(conn).await?;
        let still: Vec<UncommittedSuspect> = open
            .iter()
            .filter(|s| now.iter().any(|n| n.pid == s.pid && n.xid == s.xid))
            .cloned()
            .collect();
        if still.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(Err(keep(&still)));
        }
    }
    match judge_dependents(&conn.outside_of(schema).await?) {
        Verdict::Keep(reason, detail) => Ok(Err(Attempt::Kept(reason, detail))),
        Verdict::Clear => Ok(Ok(())),
    }
}

/// What [`open_checked`] leaves behind when the drop may go ahead.
struct Opened {
    /// When the dependency closure was answered: the DROP should follow soon.
    checked: Instant,
}

/// The middle of the transaction [`open_checked`] left open: the DROP (the whole schema or a batch
/// of its tables), then the liveness check on every server again. `Ok(Ok(verified))`: the COMMIT may
/// be sent; anything else rolled back.
async fn drop_and_verify(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    d: &PlannedDrop,
    opened: Opened,
    step: Step,
) -> Result<Result<Verified, Attempt>, Failure> {
    let c = &conn.client;
    let mut dependents_to_drop = Duration::ZERO;
    let dropped = async {
        let sql = match step {
            Step::Whole => format!("DROP SCHEMA {} CASCADE", quote_ident(&d.schema)),
            Step::Batch(n) => match batch_sql(conn, &d.schema, n).await? {
                Some(sql) => sql,
                None => return Ok(Some(Attempt::NoTablesLeft)),
            },
        };
        conn.run(c.batch_execute(&sql)).await?;
        // Up to the DROP's answer: when inside the statement it read the catalog is not known.
        dependents_to_drop = opened.checked.elapsed();
        Ok(None)
    };
    match dropped.await {
        Err(f) => {
            conn.rollback().await;
            return Err(f);
        }
        Ok(Some(a)) => {
            conn.rollback().await;
            return Ok(Err(a));
        }
        Ok(None) => {}
    }
    let sent = Instant::now();
    if let Verdict::Keep(reason, detail) = ctx.liveness(d).await {
        conn.rollback().await;
        return Ok(Err(Attempt::Kept(reason, detail)));
    }
    Ok(Ok(Verified {
        sent,
        dependents_to_drop,
    }))
}

/// A drop whose last liveness check found nobody: only the COMMIT is left.
struct Verified {
    /// When the last liveness check was sent.
    sent: Instant,
    /// From the dependency closure's answer to the DROP's answer (an upper bound of the gap).
    dependents_to_drop: Duration,
}

/// The two windows of a committed drop (see [`DatabaseOutcome`]).
#[derive(Debug, Clone, Copy, Default)]
struct Windows {
    check_to_commit: Duration,
    dependents_to_drop: Duration,
}

/// Sends the COMMIT; the window from the last check to its answer is the drop's unguarded window.
async fn commit(conn: &DropConn, v: Verified) -> Result<Attempt, Failure> {
    match conn.run(conn.client.batch_execute("COMMIT")).await {
        Ok(()) => Ok(Attempt::Dropped(Windows {
            check_to_commit: v.sent.elapsed(),
            dependents_to_drop: v.dependents_to_drop,
        })),
        // The server answered COMMIT with an error: the drop was rolled back.
        Err(f) if f.reason == FailReason::SqlError => Err(f),
        Err(f) => Err(Failure {
            reason: FailReason::CommitUnknown,
            sqlstate: f.sqlstate,
            error: format!(
                "the COMMIT was sent but its answer was lost ({}); whether the schema is gone \
                 is unknown: run the sweep again to see",
                f.error
            ),
        }),
    }
}

/// One whole transaction: check, drop, check again on every server, commit.
async fn attempt(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    d: &PlannedDrop,
    step: Step,
) -> Result<Attempt, Failure> {
    let opened = match open_checked(conn, ctx, d, step).await? {
        Ok(o) => o,
        Err(a) => return Ok(a),
    };
    match drop_and_verify(conn, ctx, d, opened, step).await? {
        Ok(v) => commit(conn, v).await,
        Err(a) => Ok(a),
    }
}

async fn batch_sql(conn: &DropConn, schema: &str, n: usize) -> Result<Option<String>, Failure> {
    let tables = conn
        .run(conn.client.query(
            "SELECT c.relname::pg_catalog.text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND NOT c.relispartition ORDER BY c.oid LIMIT $2",
            &[&schema, &(n as i64)],
        ))
        .await?;
    if tables.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "DROP TABLE IF EXISTS {} CASCADE",
        qualified_names(schema, &tables)?
    )))
}

/// For a schema too large for the lock table on its own (its whole DROP failed with 53200): its tables
/// in batches, each batch its own checked transaction, then the rest of the schema.
async fn drop_in_batches(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    d: &PlannedDrop,
) -> Result<Attempt, Failure> {
    tracing::warn!(schema = %d.schema, "out of shared memory: dropping in batches");
    let mut batches = 0;
    let mut worst = Windows::default();
    let widest = |a: Windows, b: Windows| Windows {
        check_to_commit: a.check_to_commit.max(b.check_to_commit),
        dependents_to_drop: a.dependents_to_drop.max(b.dependents_to_drop),
    };
    loop {
        match attempt(conn, ctx, d, Step::Batch(ctx.drop.batch_tables)).await? {
            Attempt::Dropped(w) => {
                batches += 1;
                worst = widest(worst, w);
            }
            Attempt::NoTablesLeft => {
                return match attempt(conn, ctx, d, Step::Whole).await? {
                    Attempt::Dropped(w) => Ok(Attempt::Dropped(widest(worst, w))),
                    other => Ok(other),
                }
            }
            Attempt::Kept(reason, mut detail) => {
                if batches > 0 {
                    detail.push(format!(
                        "{batches} batch(es) of tables were already dropped before this"
                    ));
                }
                return Ok(Attempt::Kept(reason, detail));
            }
        }
    }
}

/// Records `rest` as kept for `reason`.
fn keep_rest(out: &mut DatabaseOutcome, rest: &[PlannedDrop], reason: KeepReason, detail: &str) {
    for d in rest {
        out.kept.push(Kept {
            schema: d.schema.clone(),
            reason,
            detail: if detail.is_empty() {
                vec![]
            } else {
                vec![detail.to_string()]
            },
        });
    }
}

/// Sweeps one database's planned drops, in order. `unresponsive` is shared by the databases of one
/// server: once a statement there got no answer, nothing more is tried on it.
async fn sweep_database(
    target: &DbTarget,
    plan: &DatabasePlan,
    ctx: &Ctx<'_>,
    session: &SessionSettings,
    unresponsive: &mut bool,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> DatabaseOutcome {
    let started = Instant::now();
    let mut out = DatabaseOutcome {
        name: plan.name.clone(),
        ..Default::default()
    };
    if *unresponsive {
        let why = "an earlier statement on this server got no answer";
        keep_rest(&mut out, &plan.drop, KeepReason::ServerUnresponsive, why);
        return out;
    }
    match open_drop_sessions(target, ctx, session).await {
        Err(e) => {
            out.error = Some(e.message.clone());
            for d in &plan.drop {
                out.failed.push(FailedDrop {
                    schema: d.schema.clone(),
                    reason: FailReason::Unreachable,
                    sqlstate: e.sqlstate.clone(),
                    error: format!("database unreachable at drop time: {}", e.message),
                });
            }
        }
        Ok(conns) => match take_sweep_lock(&conns[0]).await {
            Ok(None) => {
                run_drops(&conns, plan, ctx, &mut out, unresponsive, progress).await;
                if conns[0].broken().is_none() {
                    let unlock = "SELECT pg_catalog.pg_advisory_unlock($1)";
                    let c = &conns[0].client;
                    let _ = conns[0].run(c.query_one(unlock, &[&SWEEP_LOCK_KEY])).await;
                }
            }
            Ok(Some(holder)) => {
                out.error = Some(format!(
                    "another pgswarm sweep holds this database's sweep lock{holder}: nothing \
                     dropped here"
                ));
                keep_rest(&mut out, &plan.drop, KeepReason::SweepInProgress, "");
            }
            Err(f) => {
                let reason = if f.reason == FailReason::ClientTimeout {
                    *unresponsive = true;
                    KeepReason::ServerUnresponsive
                } else {
                    KeepReason::NotAttempted
                };
                out.error = Some(format!("cannot take the sweep lock: {}", f.error));
                keep_rest(&mut out, &plan.drop, reason, &f.error);
            }
        },
    }
    out.elapsed = started.elapsed();
    out
}

/// The dropping sessions: the first (it holds the sweep lock), and, when it connects, a second one
/// that runs the next schema's read-only checks while the current schema commits.
async fn open_drop_sessions(
    target: &DbTarget,
    ctx: &Ctx<'_>,
    session: &SessionSettings,
) -> Result<Vec<DropConn>, crate::pg::connect::ConnectError> {
    let statement_bound = ctx.drop.statement_timeout + ctx.drop.client_margin;
    let settings = SessionSettings {
        read_only: false,
        statement_timeout: statement_bound,
        // A dropping session waits in its open transaction for the liveness answers, and (the
        // pipelined one) for the previous schema's DROP, checks and COMMIT: never cut it short.
        idle_in_transaction: Some(statement_bound * 6),
        ..session.clone()
    };
    let wrap = |client| DropConn {
        client,
        bound: ctx.drop.statement_timeout + ctx.drop.client_margin,
        broken: Mutex::new(None),
        closure: tokio::sync::OnceCell::new(),
    };
    let (first, second) = futures_util::future::join(
        connect(&target.target, &settings, ctx.env),
        connect(&target.target, &settings, ctx.env),
    )
    .await;
    let mut conns = vec![wrap(first?)];
    // Without the second session the sweep is only slower.
    conns.extend(second.ok().map(wrap));
    Ok(conns)
}

/// The read-only first half of a drop: the schema's checks passed and it is locked (`Ok(Ok)`), it
/// is kept (`Ok(Err)`), or the statement failed.
type FirstHalf = Result<Result<Opened, Attempt>, Failure>;

/// Drops the planned schemas of one database in order, one DROP at a time. While a schema's COMMIT
/// runs (most of it is the server removing files after the commit took effect), the next schema's
/// read-only first half ([`open_checked`]) runs on the other session, so its DROP can follow at once.
async fn run_drops(
    conns: &[DropConn],
    plan: &DatabasePlan,
    ctx: &Ctx<'_>,
    out: &mut DatabaseOutcome,
    unresponsive: &mut bool,
    progress: &(dyn Fn(Progress) + Send + Sync),
) {
    let mut ahead: Option<FirstHalf> = None;
    for (i, d) in plan.drop.iter().enumerate() {
        let conn = &conns[i % conns.len()];
        let next = (conns.len() > 1)
            .then(|| {
                plan.drop
                    .get(i + 1)
                    .map(|n| (n, &conns[(i + 1) % conns.len()]))
            })
            .flatten();
        progress(Progress::Dropping {
            database: plan.name.clone(),
            schema: d.schema.clone(),
        });
        let first = match ahead.take() {
            Some(r) => r,
            None => open_checked(conn, ctx, d, Step::Whole).await,
        };
        let result;
        (result, ahead) = drop_one(conn, ctx, d, first, next).await;
        progress(Progress::Done {
            database: plan.name.clone(),
            schema: d.schema.clone(),
            ok: matches!(result, Ok(Attempt::Dropped(_))),
        });
        record(out, d, result);
        if let Some(broken) = conns.iter().find_map(DropConn::broken) {
            let mut rest = &plan.drop[i + 1..];
            if settle_ahead(out, ahead.take(), next).await {
                rest = &rest[1..];
            }
            stop_after(out, rest, broken, unresponsive);
            return;
        }
    }
}

/// The second half of one drop (DROP, verify, COMMIT) given its first half; while it commits, the
/// next schema's first half runs on the other session and is returned with the result.
async fn drop_one(
    conn: &DropConn,
    ctx: &Ctx<'_>,
    d: &PlannedDrop,
    first: FirstHalf,
    next: Option<(&PlannedDrop, &DropConn)>,
) -> (Result<Attempt, Failure>, Option<FirstHalf>) {
    let opened = match first {
        Err(f) => return (Err(f), None),
        Ok(Err(a)) => return (Ok(a), None),
        Ok(Ok(opened)) => opened,
    };
    match drop_and_verify(conn, ctx, d, opened, Step::Whole).await {
        Ok(Ok(verified)) => {
            futures_util::future::join(commit(conn, verified), async {
                match next {
                    Some((n, other)) => Some(open_checked(other, ctx, n, Step::Whole).await),
                    None => None,
                }
            })
            .await
        }
        Ok(Err(a)) => (Ok(a), None),
        // Out of shared memory for locks: the same schema, a few tables per transaction.
        Err(f) if f.sqlstate.as_deref() == Some("53200") && conn.broken().is_none() => {
            (drop_in_batches(conn, ctx, d).await, None)
        }
        Err(f) => (Err(f), None),
    }
}

/// A session broke with the next schema's first half already run: that outcome is the next
/// schema's (recorded; returns true), or its open transaction is rolled back (returns false).
async fn settle_ahead(
    out: &mut DatabaseOutcome,
    ahead: Option<FirstHalf>,
    next: Option<(&PlannedDrop, &DropConn)>,
) -> bool {
    match (ahead, next) {
        (Some(Ok(Ok(_))), Some((_, other))) => {
            other.rollback().await;
            false
        }
        (Some(Ok(Err(a))), Some((n, _))) => {
            record(out, n, Ok(a));
            true
        }
        (Some(Err(f)), Some((n, _))) => {
            record(out, n, Err(f));
            true
        }
        _ => false,
    }
}

fn record(out: &mut DatabaseOutcome, d: &PlannedDrop, result: Result<Attempt, Failure>) {
    match result {
        Ok(Attempt::Dropped(w)) => {
            out.dropped.push(d.schema.clone());
            out.check_to_commit.push(w.check_to_commit);
            out.dependents_to_drop.push(w.dependents_to_drop);
        }
        Ok(Attempt::Kept(reason, detail)) => out.kept.push(Kept {
            schema: d.schema.clone(),
            reason,
            detail,
        }),
        Ok(Attempt::NoTablesLeft) => out.failed.push(FailedDrop {
            schema: d.schema.clone(),
            reason: FailReason::SqlError,
            sqlstate: None,
            error: "internal: a batch step ended outside batch mode".into(),
        }),
        Err(f) => out.failed.push(f.into_failed(&d.schema)),
    }
}

/// A session broke: the rest of this database is kept, and after a timeout the rest of the server.
fn stop_after(
    out: &mut DatabaseOutcome,
    rest: &[PlannedDrop],
    broken: FailReason,
    unresponsive: &mut bool,
) {
    if matches!(
        broken,
        FailReason::ClientTimeout | FailReason::CommitUnknown
    ) {
        *unresponsive = true;
        out.error = Some("the server stopped answering during the sweep".into());
        let why = "an earlier statement on this server got no answer";
        keep_rest(out, rest, KeepReason::ServerUnresponsive, why);
    } else {
        out.error = Some("connection lost during the sweep".into());
        let why = "the sweep's connection to this database was lost";
        keep_rest(out, rest, KeepReason::NotAttempted, why);
    }
}

/// `Ok(None)`: taken. `Ok(Some(" (pid N)"))`: another sweep holds it.
async fn take_sweep_lock(conn: &DropConn) -> Result<Option<String>, Failure> {
    let c = &conn.client;
    let row = conn
        .run(c.query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1)",
            &[&SWEEP_LOCK_KEY],
        ))
        .await?;
    let taken: bool = row.col(0).map_err(Failure::unreadable)?;
    if taken {
        return Ok(None);
    }
    let holder = conn
        .run(c.query_opt(
            "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted \
               AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
               AND classid = ($1 >> 32)::pg_catalog.oid AND objid = ($1 & 4294967295)::pg_catalog.oid LIMIT 1",
            &[&SWEEP_LOCK_KEY],
        ))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.col::<i32>(0).ok())
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    Ok(Some(holder))
}

/// What a sweep runs against.
pub struct SweepRun<'a> {
    pub plan: &'a SweepPlan,
    /// Every configured database: liveness is checked on all their servers, not only where drops run.
    pub targets: &'a [DbTarget],
    pub session: &'a SessionSettings,
    pub app_prefix: &'a str,
    pub rules: &'a SweepRules,
    pub drop: &'a DropSettings,
    pub env: &'a (dyn Environment + Sync),
}

/// Runs exactly the plan: servers in parallel (at most `drop.jobs`), databases of one server in turn.
/// A plan older than `PLAN_MAX_AGE` runs nothing (every drop kept as `plan_expired`).
pub async fn execute_plan(
    run: &SweepRun<'_>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Vec<DatabaseOutcome> {
    let plan = run.plan;
    if !plan.active_detection_complete || plan.drop_count() == 0 {
        return Vec::new();
    }
    if let Some(age) = plan_expired(plan.planned_at, Utc::now()) {
        let detail = format!(
            "the plan was {} s old when confirmed: run the sweep again",
            age.as_secs()
        );
        return expire_all(plan, &detail);
    }
    // The liveness questions are bounded like the drop's own statements (and no longer than the
    // monitor's): the drop waits for them inside its open transaction.
    let verify_bound = run
        .session
        .statement_timeout
        .min(run.drop.statement_timeout)
        + run.drop.client_margin;
    let verifiers = Verifiers::open(
        run.targets,
        run.session,
        run.app_prefix,
        verify_bound,
        run.env,
    )
    .await;
    let ctx = Ctx {
        app_prefix: run.app_prefix,
        rules: run.rules,
        drop: run.drop,
        verifiers: &verifiers,
        env: run.env,
    };
    let by_name: HashMap<&str, &DbTarget> =
        run.targets.iter().map(|t| (t.name.as_str(), t)).collect();
    let permits = Arc::new(Semaphore::new(run.drop.jobs.max(1)));
    let (ctx, by_name) = (&ctx, &by_name);
    let work = databases_by_server(plan).into_values().map(|dbs| {
        let permits = permits.clone();
        async move {
            let _permit = permits.acquire().await.expect("semaphore never closed");
            sweep_server(&dbs, by_name, ctx, run.session, progress).await
        }
    });
    let mut all: Vec<DatabaseOutcome> = join_all(work).await.into_iter().flatten().collect();
    let order: Vec<&str> = plan.databases.iter().map(|d| d.name.as_str()).collect();
    all.sort_by_key(|o| order.iter().position(|n| *n == o.name));
    all
}

/// The databases with drops, grouped by server (a database without a known server is its own).
fn databases_by_server(plan: &SweepPlan) -> BTreeMap<String, Vec<&DatabasePlan>> {
    let mut servers: BTreeMap<String, Vec<&DatabasePlan>> = BTreeMap::new();
    for d in plan.databases.iter().filter(|d| !d.drop.is_empty()) {
        servers
            .entry(d.server.clone().unwrap_or_else(|| d.name.clone()))
            .or_default()
            .push(d);
    }
    servers
}

/// One server's databases in turn; once the server stops answering, the rest is kept.
async fn sweep_server(
    dbs: &[&DatabasePlan],
    by_name: &HashMap<&str, &DbTarget>,
    ctx: &Ctx<'_>,
    session: &SessionSettings,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Vec<DatabaseOutcome> {
    let mut unresponsive = false;
    let mut outcomes = Vec::new();
    for d in dbs {
        outcomes.push(match by_name.get(d.name.as_str()) {
            Some(t) => sweep_database(t, d, ctx, session, &mut unresponsive, progress).await,
            None => DatabaseOutcome {
                name: d.name.clone(),
                error: Some("not in the configuration any more".into()),
                ..Default::default()
            },
        });
    }
    outcomes
}

/// `"schema"."t1", "schema"."t2"` from rows whose first column is a relation name.
fn qualified_names(schema: &str, rows: &[tokio_postgres::Row]) -> Result<String, Failure> {
    let names = rows
        .iter()
        .map(|r| {
            let name = r.col::<String>(0).map_err(Failure::unreadable)?;
            Ok(format!("{}.{}", quote_ident(schema), quote_ident(&name)))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(names.join(", "))
}

fn expire_all(plan: &SweepPlan, detail: &str) -> Vec<DatabaseOutcome> {
    plan.databases
        .iter()
        .filter(|d| !d.drop.is_empty())
        .map(|d| DatabaseOutcome {
            name: d.name.clone(),
            kept: d
                .drop
                .iter()
                .map(|x| Kept {
                    schema: x.schema.clone(),
                    reason: KeepReason::PlanExpired,
                    detail: vec![detail.to_string()],
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}
