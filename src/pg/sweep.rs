//! Carrying out a sweep plan: exactly the schemas the plan names, each checked again right before it
//! is dropped.
//!
//! - Each database is swept under a session-level advisory lock, so two sweeps never run against the
//!   same database at once (the second reports `sweep_in_progress` and drops nothing there).
//! - Each schema is dropped in its own transaction with `SET LOCAL lock_timeout` and
//!   `statement_timeout`. Inside that transaction, before the drop: the schema must still exist, no
//!   session of its namespace may be connected to this server (`became_live`), no unattributable
//!   test session may have appeared, and nothing outside may depend on it.
//! - A failed drop is recorded with its SQLSTATE and the sweep goes on. A schema too big for the lock
//!   table on its own (53200) is dropped in batches of tables, each its own transaction, then the
//!   empty schema.
//! - Servers are swept in parallel (bounded); on one server, one drop at a time.
//! - The sweep never cancels or terminates another session.

use crate::domain::naming::{parse_label, LabelParse};
use crate::domain::snapshot::Convention;
use crate::domain::sweep::{quote_ident, KeepReason, Kept, SweepPlan, SweepRules};
use crate::pg::connect::{connect, describe_error, SessionSettings};
use crate::pg::conninfo::Environment;
use crate::pg::probe::DbTarget;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_postgres::Client;

/// The advisory lock key every pgswarm sweep takes in the database it sweeps ("pgswarm" in ASCII).
pub const SWEEP_LOCK_KEY: i64 = 0x7067_7377_6172_6d00;

/// How drops are run.
#[derive(Debug, Clone)]
pub struct DropSettings {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// Servers swept at once.
    pub jobs: usize,
    /// Tables per transaction when a schema is too large for the lock table on its own.
    pub batch_tables: usize,
}

impl Default for DropSettings {
    fn default() -> Self {
        DropSettings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            jobs: 4,
            batch_tables: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDrop {
    pub schema: String,
    pub sqlstate: Option<String>,
    pub error: String,
}

/// What happened in one database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DatabaseOutcome {
    pub name: String,
    pub dropped: Vec<String>,
    pub failed: Vec<FailedDrop>,
    /// Kept at execution time (the plan's own keeps are reported from the plan).
    pub kept: Vec<Kept>,
    pub error: Option<String>,
    pub elapsed_ms: f64,
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

/// Objects outside each given schema that depend on something inside it (what CASCADE would also
/// drop). Unknown kinds of dependent count as outside: fail closed.
///
/// The schema's members are found through their dependency on the schema itself (the
/// `pg_depend_reference_index`), not by scanning pg_class/pg_type/pg_proc by namespace, which has no
/// index and made this check the dominant cost of a drop with 12,000 tables in the catalog.
const DEPENDENTS_SQL: &str = "
WITH s AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY($1)),
inside AS (
  SELECT d.classid, d.objid, s.oid AS nsp, s.nspname
    FROM s JOIN pg_depend d
      ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = s.oid AND d.refobjsubid = 0
  UNION ALL SELECT 'pg_namespace'::regclass::oid, s.oid, s.oid, s.nspname FROM s
),
deps AS (
  SELECT i.nspname, i.nsp, d.classid, d.objid, d.objsubid,
    CASE d.classid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = d.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r
                                         JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t
                                         JOIN pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a
                                         JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid)
      WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p
                                         JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objid)
      ELSE NULL
    END AS dep_nsp
  FROM pg_depend d JOIN inside i ON d.refclassid = i.classid AND d.refobjid = i.objid
  WHERE d.deptype IN ('n', 'a', 'e')
)
SELECT DISTINCT nspname::text, pg_describe_object(classid, objid, objsubid)
FROM deps WHERE dep_nsp IS DISTINCT FROM nsp";

/// External dependents of the given schemas in one database.
pub async fn external_dependents(
    client: &Client,
    schemas: &[String],
) -> Result<HashMap<String, Vec<String>>, tokio_postgres::Error> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if schemas.is_empty() {
        return Ok(out);
    }
    for row in client.query(DEPENDENTS_SQL, &[&schemas]).await? {
        let desc: Option<String> = row.get(1);
        out.entry(row.get(0))
            .or_default()
            .push(desc.unwrap_or_else(|| "an object of an unknown kind".into()));
    }
    Ok(out)
}

struct Failure {
    sqlstate: Option<String>,
    error: String,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure {
            sqlstate: e.code().map(|c| c.code().to_string()),
            error: describe_error(&e),
        }
    }
}

enum Attempt {
    Dropped,
    Kept(KeepReason, Vec<String>),
}

/// Everything a drop needs to re-check.
struct Ctx<'a> {
    conv: &'a Convention,
    rules: &'a SweepRules,
    drop: &'a DropSettings,
}

async fn begin(client: &Client, d: &DropSettings) -> Result<(), Failure> {
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'",
            d.lock_timeout.as_millis(),
            d.statement_timeout.as_millis()
        ))
        .await?;
    Ok(())
}

/// Inside the open transaction: is the schema still safe to drop right now?
async fn recheck(
    client: &Client,
    ctx: &Ctx<'_>,
    schema: &str,
    namespace: Option<&str>,
) -> Result<Option<(KeepReason, Vec<String>)>, Failure> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?;
    if exists.is_none() {
        return Ok(Some((KeepReason::Vanished, vec![])));
    }
    let pattern = format!("{}\\_%", ctx.conv.app_prefix.replace('_', "\\_"));
    let names = client
        .query(
            "SELECT application_name FROM pg_stat_activity \
             WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
            &[&pattern],
        )
        .await?;
    for row in names {
        let app: String = row.get(0);
        match parse_label(&ctx.conv.app_prefix, &app) {
            LabelParse::Labeled(l) if Some(l.namespace.as_str()) == namespace => {
                return Ok(Some((KeepReason::BecameLive, vec![app])));
            }
            LabelParse::Unattributed(_) if !ctx.rules.allow_unattributed => {
                return Ok(Some((KeepReason::UnattributedSessions, vec![app])));
            }
            _ => {}
        }
    }
    let deps = external_dependents(client, &[schema.to_string()]).await?;
    if let Some(d) = deps.get(schema).filter(|d| !d.is_empty()) {
        return Ok(Some((KeepReason::ExternalDependents, d.clone())));
    }
    Ok(None)
}

async fn drop_one(
    client: &Client,
    ctx: &Ctx<'_>,
    schema: &str,
    namespace: Option<&str>,
) -> Result<Attempt, Failure> {
    begin(client, ctx.drop).await?;
    let result = async {
        if let Some((reason, detail)) = recheck(client, ctx, schema, namespace).await? {
            return Ok(Attempt::Kept(reason, detail));
        }
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", quote_ident(schema)))
            .await?;
        Ok(Attempt::Dropped)
    }
    .await;
    match &result {
        Ok(Attempt::Dropped) => client.batch_execute("COMMIT").await?,
        _ => {
            let _ = client.batch_execute("ROLLBACK").await;
        }
    }
    result
}

/// For a schema too large for the lock table: its tables in batches, then the empty schema.
async fn drop_in_batches(
    client: &Client,
    ctx: &Ctx<'_>,
    schema: &str,
    namespace: Option<&str>,
) -> Result<Attempt, Failure> {
    loop {
        begin(client, ctx.drop).await?;
        let step = async {
            if let Some((reason, detail)) = recheck(client, ctx, schema, namespace).await? {
                return Ok(Some(Attempt::Kept(reason, detail)));
            }
            let tables = client
                .query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n \
                       ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                       AND NOT c.relispartition \
                     ORDER BY c.oid LIMIT $2",
                    &[&schema, &(ctx.drop.batch_tables as i64)],
                )
                .await?;
            if tables.is_empty() {
                return Ok(None);
            }
            let list: Vec<String> = tables
                .iter()
                .map(|r| {
                    format!(
                        "{}.{}",
                        quote_ident(schema),
                        quote_ident(&r.get::<_, String>(0))
                    )
                })
                .collect();
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", list.join(", ")))
                .await?;
            Ok(Some(Attempt::Dropped))
        }
        .await;
        match step {
            Ok(Some(Attempt::Dropped)) => client.batch_execute("COMMIT").await?,
            Ok(None) => {
                let _ = client.batch_execute("ROLLBACK").await;
                // No tables left: drop what remains (sequences, types, functions) and the schema.
                return drop_one(client, ctx, schema, namespace).await;
            }
            Ok(Some(kept)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Ok(kept);
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
}

async fn sweep_database(
    target: &DbTarget,
    plan: &crate::domain::sweep::DatabasePlan,
    ctx: &Ctx<'_>,
    session: &SessionSettings,
    env: &(dyn Environment + Sync),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> DatabaseOutcome {
    let started = Instant::now();
    let mut out = DatabaseOutcome {
        name: plan.name.clone(),
        ..Default::default()
    };
    let keep_all = |out: &mut DatabaseOutcome, reason: KeepReason| {
        for d in &plan.drop {
            out.kept.push(Kept {
                schema: d.schema.clone(),
                reason,
                detail: vec![],
            });
        }
    };
    let settings = SessionSettings {
        read_only: false,
        statement_timeout: ctx.drop.statement_timeout + Duration::from_secs(5),
        ..session.clone()
    };
    let client = match connect(&target.target, &settings, env).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.message);
            for d in &plan.drop {
                out.failed.push(FailedDrop {
                    schema: d.schema.clone(),
                    sqlstate: e.sqlstate.clone(),
                    error: "database unreachable at drop time".into(),
                });
            }
            out.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            return out;
        }
    };
    let locked: Result<bool, _> = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK_KEY])
        .await
        .map(|r| r.get(0));
    match locked {
        Ok(true) => {}
        Ok(false) => {
            let holder = client
                .query_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                       AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid LIMIT 1",
                    &[&SWEEP_LOCK_KEY],
                )
                .await
                .ok()
                .flatten()
                .map(|r| format!(" (pid {})", r.get::<_, i32>(0)))
                .unwrap_or_default();
            out.error = Some(format!(
                "another pgswarm sweep holds this database's sweep lock{holder}: nothing dropped here"
            ));
            keep_all(&mut out, KeepReason::SweepInProgress);
            out.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            return out;
        }
        Err(e) => {
            out.error = Some(format!(
                "cannot take the sweep lock: {}",
                describe_error(&e)
            ));
            keep_all(&mut out, KeepReason::SweepInProgress);
            out.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            return out;
        }
    }
    for d in &plan.drop {
        progress(Progress::Dropping {
            database: plan.name.clone(),
            schema: d.schema.clone(),
        });
        let ns = d.namespace.as_deref();
        let mut attempt = drop_one(&client, ctx, &d.schema, ns).await;
        if matches!(&attempt, Err(f) if f.sqlstate.as_deref() == Some("53200")) {
            tracing::warn!(schema = %d.schema, "out of shared memory: dropping in batches");
            attempt = drop_in_batches(&client, ctx, &d.schema, ns).await;
        }
        let ok = matches!(attempt, Ok(Attempt::Dropped));
        match attempt {
            Ok(Attempt::Dropped) => out.dropped.push(d.schema.clone()),
            Ok(Attempt::Kept(reason, detail)) => out.kept.push(Kept {
                schema: d.schema.clone(),
                reason,
                detail,
            }),
            Err(f) => out.failed.push(FailedDrop {
                schema: d.schema.clone(),
                sqlstate: f.sqlstate,
                error: f.error,
            }),
        }
        progress(Progress::Done {
            database: plan.name.clone(),
            schema: d.schema.clone(),
            ok,
        });
        if client.is_closed() {
            out.error = Some("connection lost during the sweep".into());
            break;
        }
    }
    let _ = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK_KEY])
        .await;
    out.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    out
}

/// Runs exactly `plan`: servers in parallel (at most `drop.jobs`), databases of one server in turn.
#[allow(clippy::too_many_arguments)]
pub async fn execute_plan(
    plan: &SweepPlan,
    targets: &[DbTarget],
    session: &SessionSettings,
    conv: &Convention,
    rules: &SweepRules,
    drop: &DropSettings,
    env: &(dyn Environment + Sync),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Vec<DatabaseOutcome> {
    if !plan.active_detection_complete || plan.drop_count() == 0 {
        return Vec::new();
    }
    let ctx = Ctx { conv, rules, drop };
    let by_name: HashMap<&str, &DbTarget> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut servers: BTreeMap<String, Vec<&crate::domain::sweep::DatabasePlan>> = BTreeMap::new();
    for d in plan.databases.iter().filter(|d| !d.drop.is_empty()) {
        servers
            .entry(d.server.clone().unwrap_or_else(|| d.name.clone()))
            .or_default()
            .push(d);
    }
    let permits = Arc::new(Semaphore::new(drop.jobs.max(1)));
    let ctx = &ctx;
    let work = servers.into_values().map(|dbs| {
        let permits = permits.clone();
        let by_name = &by_name;
        async move {
            let _permit = permits.acquire().await.expect("semaphore never closed");
            let mut outcomes = Vec::new();
            for d in dbs {
                match by_name.get(d.name.as_str()) {
                    Some(t) => {
                        outcomes.push(sweep_database(t, d, ctx, session, env, progress).await)
                    }
                    None => outcomes.push(DatabaseOutcome {
                        name: d.name.clone(),
                        error: Some("not in the configuration any more".into()),
                        ..Default::default()
                    }),
                }
            }
            outcomes
        }
    });
    let mut all: Vec<DatabaseOutcome> = join_all(work).await.into_iter().flatten().collect();
    let order: Vec<&str> = plan.databases.iter().map(|d| d.name.as_str()).collect();
    all.sort_by_key(|o| order.iter().position(|n| *n == o.name));
    all
}
