//! Deciding which test schemas are stale, and judging every step of dropping them: the fail-closed
//! rules of the sweep, as pure functions shared by `pgswarm sweep` and the dashboard's `S` key.
//!
//! Dropping the wrong schema destroys a live test run, so the plan keeps everything it cannot prove
//! stale, and says why. A schema is planned for dropping only if all of these hold:
//!
//! - the live set of namespaces is complete: every configured database answered and every server's
//!   sessions were read (else *every* candidate is kept as `active_detection_incomplete`);
//! - no session carries the app prefix without being attributable to a namespace (else every candidate
//!   is kept as `unattributed_sessions`), unless explicitly allowed;
//! - its name matches the strict pattern (anything else never becomes a candidate at all);
//! - its namespace has no session on any polled server (the live set is a union over all databases: a
//!   run connected only to `platform` keeps its schemas in every tenant database);
//! - its namespace token's start time is older than `min_age` (forced namespaces have no start time:
//!   `unknown_age`; legacy `test_gwN` names have no namespace: `legacy_name`; each only with a flag);
//! - nothing outside it would be removed by `DROP SCHEMA … CASCADE` (`external_dependents`).
//!
//! The executor (`pg::sweep`) asks the same questions again while it drops, and these functions
//! judge the answers: [`plan_expired`] before it starts, [`judge_liveness`] against every configured
//! server before the drop *and after it, before the commit*, [`judge_dependents`] inside the drop's
//! transaction. [`build_report`] accounts for every planned schema exactly once, whatever went wrong.

use crate::domain::naming::{
    parse_label, parse_schema_name, LabelParse, Namespace, SchemaName, Worker,
};
use crate::domain::snapshot::{LabelKind, Snapshot};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// A plan confirmed later than this after it was made is not run: it may no longer describe the
/// databases (the CLI's confirmation prompt and the dashboard's `Y` alike).
pub const PLAN_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Why a candidate schema is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Its namespace has a session somewhere.
    Live,
    /// Some configured database or server could not be read: nothing is dropped.
    ActiveDetectionIncomplete,
    /// A session carries the app prefix but no attributable namespace: nothing is dropped.
    UnattributedSessions,
    /// Younger than `--min-age`.
    TooYoung,
    /// A forced namespace: no start time in the token.
    UnknownAge,
    /// `{prefix}_{worker}` from before namespacing.
    LegacyName,
    /// Objects outside the schema would be removed by `DROP SCHEMA … CASCADE`.
    ExternalDependents,
    /// A session of its namespace connected between discovery and the commit of its drop.
    BecameLive,
    /// Gone before the drop (someone else dropped it).
    Vanished,
    /// Another sweep holds this database's sweep lock.
    SweepInProgress,
    /// The plan was not confirmed (cancelled at the prompt or in the dashboard).
    NotConfirmed,
    /// An earlier statement on this server got no answer within its client-side bound: the server's
    /// remaining schemas are not tried.
    ServerUnresponsive,
    /// Never tried: the sweep's connection to this database was lost before its turn.
    NotAttempted,
    /// The plan was older than [`PLAN_MAX_AGE`] when it was confirmed: nothing was run.
    PlanExpired,
    /// Another transaction in the database (a session's, or a prepared one) may hold uncommitted
    /// catalog changes that the dependency closure cannot see: see [`judge_uncommitted`].
    UncommittedDdl,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Live => "live",
            KeepReason::ActiveDetectionIncomplete => "active_detection_incomplete",
            KeepReason::UnattributedSessions => "unattributed_sessions",
            KeepReason::TooYoung => "too_young",
            KeepReason::UnknownAge => "unknown_age",
            KeepReason::LegacyName => "legacy_name",
            KeepReason::ExternalDependents => "external_dependents",
            KeepReason::BecameLive => "became_live",
            KeepReason::Vanished => "vanished",
            KeepReason::SweepInProgress => "sweep_in_progress",
            KeepReason::NotConfirmed => "not_confirmed",
            KeepReason::ServerUnresponsive => "server_unresponsive",
            KeepReason::NotAttempted => "not_attempted",
            KeepReason::PlanExpired => "plan_expired",
            KeepReason::UncommittedDdl => "uncommitted_ddl",
        }
    }
}

/// Why a drop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The server answered with an error (lock timeout, statement timeout, ...): see `sqlstate`.
    SqlError,
    /// No answer within the client-side bound (the server-side timeout plus a margin): the
    /// connection was abandoned before a COMMIT was sent, so the server rolls the drop back.
    ClientTimeout,
    /// The COMMIT was sent but its answer never came: whether the schema is gone is unknown.
    CommitUnknown,
    /// The connection broke (the backend was terminated, the network went away).
    ConnectionLost,
    /// The database could not be reached at drop time.
    Unreachable,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::SqlError => "sql_error",
            FailReason::ClientTimeout => "client_timeout",
            FailReason::CommitUnknown => "commit_unknown",
            FailReason::ConnectionLost => "connection_lost",
            FailReason::Unreachable => "unreachable",
        }
    }
}

/// What may be dropped beyond the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepRules {
    pub min_age: Duration,
    pub include_forced: bool,
    pub include_legacy: bool,
    pub allow_unattributed: bool,
}

impl Default for SweepRules {
    fn default() -> Self {
        SweepRules {
            min_age: Duration::from_secs(600),
            include_forced: false,
            include_legacy: false,
            allow_unattributed: false,
        }
    }
}

/// A schema the plan will drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDrop {
    pub schema: String,
    pub namespace: Option<String>,
    pub tables: i64,
    pub bytes: i64,
}

impl PlannedDrop {
    /// Whose schema it is, for the liveness checks: its namespace, or for a legacy
    /// `{prefix}_{worker}` name its worker (an unparsable name has no owner to ask about).
    pub fn owner(&self) -> Option<Owner<'_>> {
        match &self.namespace {
            Some(ns) => Some(Owner::Namespace(ns)),
            None => self
                .schema
                .rsplit('_')
                .next()
                .and_then(Worker::parse)
                .map(Owner::Legacy),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub schema: String,
    pub reason: KeepReason,
    /// What the reason is about: the outside objects for `external_dependents`, the sessions for
    /// `became_live` / `unattributed_sessions`, the servers and errors for the rest.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub detail: Vec<String>,
}

impl Kept {
    pub fn new(schema: &str, reason: KeepReason) -> Kept {
        Kept {
            schema: schema.to_string(),
            reason,
            detail: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePlan {
    pub name: String,
    /// The server the database lives on (drops on one server run one at a time).
    pub server: Option<String>,
    pub drop: Vec<PlannedDrop>,
    pub keep: Vec<Kept>,
}

/// The plan: exactly what will be dropped, and what is kept and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub planned_at: DateTime<Utc>,
    pub active_detection_complete: bool,
    pub active_namespaces: Vec<String>,
    pub unattributed_sessions: Vec<String>,
    pub errors: Vec<DatabaseError>,
    pub databases: Vec<DatabasePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseError {
    pub database: String,
    pub error: String,
}

impl SweepPlan {
    pub fn drop_count(&self) -> usize {
        self.databases.iter().map(|d| d.drop.len()).sum()
    }
    pub fn keep_count(&self) -> usize {
        self.databases.iter().map(|d| d.keep.len()).sum()
    }

    /// Moves the candidates of `database` that have outside dependents (`schema -> objects`) from
    /// the drop list to the keep list.
    pub fn keep_with_dependents(
        &mut self,
        database: &str,
        dependents: &HashMap<String, Vec<String>>,
    ) {
        let Some(d) = self.databases.iter_mut().find(|d| d.name == database) else {
            return;
        };
        let (keep, drop): (Vec<PlannedDrop>, Vec<PlannedDrop>) = d
            .drop
            .drain(..)
            .partition(|x| dependents.get(&x.schema).is_some_and(|v| !v.is_empty()));
        d.drop = drop;
        for x in keep {
            d.keep.push(Kept {
                detail: dependents[&x.schema].clone(),
                schema: x.schema,
                reason: KeepReason::ExternalDependents,
            });
        }
    }

    /// Keeps every candidate of `database` (for example when its dependency check failed: without it
    /// nothing there is provably safe).
    pub fn keep_all_in(&mut self, database: &str, reason: KeepReason, error: String) {
        self.errors.push(DatabaseError {
            database: database.to_string(),
            error,
        });
        if let Some(d) = self.databases.iter_mut().find(|d| d.name == database) {
            for x in d.drop.drain(..) {
                d.keep.push(Kept::new(&x.schema, reason));
            }
        }
    }
}

/// Plans the sweep from a snapshot (the live set, the schemas). `now` is a parameter. Outside
/// dependents are found by the caller for the planned drops only and applied with
/// [`SweepPlan::keep_with_dependents`].
pub fn plan_sweep(snap: &Snapshot, rules: &SweepRules, now: DateTime<Utc>) -> SweepPlan {
    let errors: Vec<DatabaseError> = snap
        .databases
        .iter()
        .filter_map(|d| {
            d.error.as_ref().map(|e| DatabaseError {
                database: d.name.clone(),
                error: e.clone(),
            })
        })
        .collect();
    // Any error while reading (unreachable, activity scan, schema listing) makes the picture partial.
    let complete = snap.active_detection_complete && errors.is_empty();
    let live = LiveSet::of(snap);
    let blocked_globally = if !complete {
        Some(KeepReason::ActiveDetectionIncomplete)
    } else if !live.unattributed.is_empty() && !rules.allow_unattributed {
        Some(KeepReason::UnattributedSessions)
    } else {
        None
    };
    let min_age = chrono::Duration::from_std(rules.min_age).unwrap_or(chrono::Duration::MAX);

    let mut databases: Vec<DatabasePlan> = snap
        .databases
        .iter()
        .map(|d| DatabasePlan {
            name: d.name.clone(),
            server: d.server.clone(),
            drop: vec![],
            keep: vec![],
        })
        .collect();
    let index: HashMap<&str, usize> = snap
        .databases
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    for s in &snap.schemas {
        // Re-parse: only the strict pattern is ever a candidate, whatever the snapshot says.
        let Some(name) = parse_schema_name(&snap.schema_prefix, &s.schema) else {
            continue;
        };
        let Some(&i) = index.get(s.database.as_str()) else {
            continue;
        };
        let reason = blocked_globally.or_else(|| live.keeps(&name, rules, min_age, now));
        match reason {
            Some(r) => databases[i].keep.push(Kept::new(&s.schema, r)),
            None => databases[i].drop.push(PlannedDrop {
                schema: s.schema.clone(),
                namespace: name.namespace().map(|n| n.to_string()),
                tables: s.tables,
                bytes: s.bytes,
            }),
        }
    }
    SweepPlan {
        planned_at: now,
        active_detection_complete: complete,
        active_namespaces: live.active.into_iter().collect(),
        unattributed_sessions: live.unattributed,
        errors,
        databases,
    }
}

/// Who is alive, from the snapshot's sessions.
struct LiveSet {
    /// Namespaces with a session anywhere.
    active: BTreeSet<String>,
    /// `application_name`s with the prefix that name no namespace: they could own any schema.
    unattributed: Vec<String>,
    /// Workers with a pre-namespace session (`{app_prefix}_{worker}`): such a session still owns
    /// the legacy schema `{schema_prefix}_{worker}`.
    legacy_live: BTreeSet<Worker>,
}

impl LiveSet {
    fn of(snap: &Snapshot) -> Self {
        LiveSet {
            active: snap
                .sessions
                .iter()
                .filter_map(|s| s.namespace.clone())
                .collect(),
            unattributed: snap
                .sessions
                .iter()
                .filter(|s| s.label == LabelKind::Unattributed)
                .map(|s| s.application_name.clone())
                .collect(),
            legacy_live: snap
                .sessions
                .iter()
                .filter_map(|s| legacy_worker(&snap.app_prefix, &s.application_name))
                .collect(),
        }
    }

    /// Why a schema with this name is kept, if it is.
    fn keeps(
        &self,
        name: &SchemaName,
        rules: &SweepRules,
        min_age: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<KeepReason> {
        match name {
            SchemaName::Legacy { .. } if !rules.include_legacy => Some(KeepReason::LegacyName),
            SchemaName::Legacy { worker } if self.legacy_live.contains(worker) => {
                Some(KeepReason::Live)
            }
            SchemaName::Legacy { .. } => None,
            SchemaName::Namespaced { namespace, .. } => {
                decide_namespaced(namespace, &self.active, rules, min_age, now)
            }
        }
    }
}

fn decide_namespaced(
    namespace: &Namespace,
    active: &BTreeSet<String>,
    rules: &SweepRules,
    min_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<KeepReason> {
    if active.contains(namespace.as_str()) {
        return Some(KeepReason::Live);
    }
    match namespace.token() {
        Some(t) if now - t.started_at < min_age => Some(KeepReason::TooYoung),
        Some(_) => None,
        None if rules.include_forced => None,
        None => Some(KeepReason::UnknownAge),
    }
}

/// `Some(age)` when a plan made at `planned_at` is too old to run at `now` ([`PLAN_MAX_AGE`]).
pub fn plan_expired(planned_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
    let age = (now - planned_at).to_std().unwrap_or(Duration::ZERO);
    (age > PLAN_MAX_AGE).then_some(age)
}

/// The worker of a legacy label `{app_prefix}_{worker}` (from before namespacing), if it is one.
pub fn legacy_worker(app_prefix: &str, application_name: &str) -> Option<Worker> {
    let rest = application_name
        .strip_prefix(app_prefix)?
        .strip_prefix('_')?;
    Worker::parse(rest)
}

/// One configured server's answer to "which sessions carry the app prefix right now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessAnswer {
    /// How the server is named in reports.
    pub server: String,
    /// The `application_name`s, or why the server could not answer.
    pub labels: Result<Vec<String>, String>,
}

/// Whose schema it is: a namespace's, or (a legacy `{prefix}_{worker}` name) a worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    Namespace(&'a str),
    Legacy(Worker),
}

/// What a check decided about one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing stands in the way.
    Clear,
    /// Keep the schema, for this reason, with this detail.
    Keep(KeepReason, Vec<String>),
}

/// Judges the answers of every configured server for a schema of `namespace` (`None`: a legacy name).
///
/// A session of the namespace anywhere keeps the schema (`became_live`); so does any server that
/// could not answer (`active_detection_incomplete`: the live set is unknown, fail closed), and any
/// session that carries the prefix but cannot be attributed (`unattributed_sessions`), unless
/// allowed. A label is attributed by the same parser as everywhere else, which never credits a label
/// that may have been cut to a namespace it may not belong to.
pub fn judge_liveness(
    app_prefix: &str,
    owner: Owner<'_>,
    allow_unattributed: bool,
    answers: &[LivenessAnswer],
) -> Verdict {
    let namespace = match owner {
        Owner::Namespace(ns) => Some(ns),
        Owner::Legacy(_) => None,
    };
    let legacy = match owner {
        Owner::Legacy(w) => Some(w),
        Owner::Namespace(_) => None,
    };
    let mut live = Vec::new();
    let mut unattributed = Vec::new();
    let mut failed = Vec::new();
    for a in answers {
        match &a.labels {
            Err(e) => failed.push(format!("{}: {e}", a.server)),
            Ok(labels) => {
                for app in labels {
                    match parse_label(app_prefix, app) {
                        LabelParse::Labeled(l) if Some(l.namespace.as_str()) == namespace => {
                            live.push(format!("{} on {}", app, a.server))
                        }
                        LabelParse::Unattributed(_)
                            if legacy.is_some() && legacy_worker(app_prefix, app) == legacy =>
                        {
                            live.push(format!("{} on {} (legacy label)", app, a.server))
                        }
                        LabelParse::Unattributed(why) => {
                            unattributed.push(format!("{} on {} ({why})", app, a.server))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if !live.is_empty() {
        Verdict::Keep(KeepReason::BecameLive, live)
    } else if !failed.is_empty() {
        Verdict::Keep(KeepReason::ActiveDetectionIncomplete, failed)
    } else if !unattributed.is_empty() && !allow_unattributed {
        Verdict::Keep(KeepReason::UnattributedSessions, unattributed)
    } else {
        Verdict::Clear
    }
}

/// Judges the outside objects `DROP SCHEMA … CASCADE` would also remove (see
/// `pg::sweep::external_dependents`): any at all keeps the schema.
pub fn judge_dependents(outside: &[String]) -> Verdict {
    if outside.is_empty() {
        Verdict::Clear
    } else {
        Verdict::Keep(KeepReason::ExternalDependents, outside.to_vec())
    }
}

/// Another transaction in the database being swept that may hold uncommitted catalog changes: it
/// has written (holds a transaction id) and was open when the drop's dependency closure was read
/// and still was a moment later (`pg::sweep` waits), or it is prepared. Its locks cannot tell a
/// catalog change from a data change (`CREATE FUNCTION` takes none), so every writer counts; the
/// drop waits for the short ones. Read by `pg::sweep` inside the drop's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncommittedSuspect {
    /// `None` for a prepared transaction.
    pub pid: Option<i32>,
    pub application_name: Option<String>,
    pub state: Option<String>,
    /// The transaction's start (a session's) or when it was prepared.
    pub since: Option<DateTime<Utc>>,
    /// A prepared transaction's identifier and owner.
    pub gid: Option<String>,
    pub owner: Option<String>,
    /// What it shows, in words (`AccessExclusiveLock on public.orders`, `it has written`).
    pub evidence: String,
    /// Its transaction id (a session's next transaction has another).
    pub xid: Option<String>,
}

/// Judges the transactions that may hold uncommitted catalog changes (see
/// [`UncommittedSuspect`]): any at all keeps the schema, each named with what ends it. The
/// dependency closure reads only committed catalog rows, so a column of the schema's type added by
/// such a transaction would be cut off by the drop when it commits.
pub fn judge_uncommitted(
    app_prefix: &str,
    suspects: &[UncommittedSuspect],
    now: DateTime<Utc>,
) -> Verdict {
    if suspects.is_empty() {
        return Verdict::Clear;
    }
    let age = |since: Option<DateTime<Utc>>| {
        since
            .map(|t| {
                let secs = (now - t).num_milliseconds().max(0) as f64 / 1000.0;
                format!(" for {}", crate::domain::format::fmt_age(secs))
            })
            .unwrap_or_default()
    };
    let detail = suspects
        .iter()
        .map(|s| match (&s.gid, s.pid) {
            (Some(gid), _) => format!(
                "prepared transaction {gid:?} (owner {}, prepared{}; {}): COMMIT PREPARED or \
                 ROLLBACK PREPARED it",
                s.owner.as_deref().unwrap_or("?"),
                age(s.since),
                s.evidence
            ),
            (None, pid) => {
                let who = match parse_label(app_prefix, s.application_name.as_deref().unwrap_or(""))
                {
                    LabelParse::Labeled(l) => {
                        format!("run {} worker {}", l.namespace.as_str(), l.worker)
                    }
                    _ => format!(
                        "application_name {:?}",
                        s.application_name.as_deref().unwrap_or("")
                    ),
                };
                format!(
                    "session pid {} ({who}, {}{}; {}): its transaction may hold uncommitted \
                     catalog changes; let it end (commit or roll back), or terminate it",
                    pid.map_or_else(|| "?".to_string(), |p| p.to_string()),
                    s.state.as_deref().unwrap_or("state hidden"),
                    age(s.since),
                    s.evidence
                )
            }
        })
        .collect();
    Verdict::Keep(KeepReason::UncommittedDdl, detail)
}

/// A drop that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDrop {
    pub schema: String,
    pub reason: FailReason,
    pub sqlstate: Option<String>,
    pub error: String,
}

/// What the executor did in one database. Every planned schema of the database should appear in
/// exactly one of `dropped`, `failed` and `kept`; [`build_report`] makes sure of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatabaseOutcome {
    pub name: String,
    pub dropped: Vec<String>,
    pub failed: Vec<FailedDrop>,
    pub kept: Vec<Kept>,
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Per committed drop: from sending the last liveness check to the COMMIT's answer. A session of
    /// the namespace that connects inside this window is not seen.
    pub check_to_commit: Vec<Duration>,
    /// Per committed drop: from the dependency closure's answer to the DROP's answer (an upper
    /// bound). An outside object that comes to depend on the schema's types or functions inside this
    /// window is not seen (its tables are locked before the closure).
    pub dependents_to_drop: Vec<Duration>,
}

/// How a plan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `--dry-run`: planned drops are reported as `would_drop`.
    DryRun,
    /// Not confirmed: planned drops are kept as `not_confirmed`.
    Cancelled,
    /// Run: planned drops missing from the outcomes are kept as `not_attempted`.
    Executed,
}

/// `sweep --json` (schema_version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub schema_version: u32,
    pub dry_run: bool,
    pub active_detection_complete: bool,
    pub active_namespaces: Vec<String>,
    pub unattributed_sessions: Vec<String>,
    pub errors: Vec<DatabaseError>,
    pub databases: Vec<DatabaseResult>,
    pub timings: Timings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseResult {
    pub name: String,
    pub dropped: Vec<String>,
    pub would_drop: Vec<String>,
    pub failed: Vec<FailedDrop>,
    pub kept: Vec<Kept>,
}

/// Durations of a sweep (milliseconds in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    #[serde(rename = "discovery_ms", with = "crate::domain::millis")]
    pub discovery: Duration,
    #[serde(rename = "drop_ms", with = "crate::domain::millis")]
    pub drop: Duration,
    #[serde(rename = "total_ms", with = "crate::domain::millis")]
    pub total: Duration,
    /// The longest window between the last liveness check and a COMMIT's answer (none committed:
    /// `null`).
    #[serde(
        rename = "check_to_commit_ms_max",
        with = "crate::domain::millis::option",
        default
    )]
    pub check_to_commit_max: Option<Duration>,
    /// The longest window between the dependency check and its DROP (`null` when nothing was
    /// committed).
    #[serde(
        rename = "dependents_to_drop_ms_max",
        with = "crate::domain::millis::option",
        default
    )]
    pub dependents_to_drop_max: Option<Duration>,
}

/// Joins the plan and what happened into the report. Every planned drop ends in exactly one of
/// `dropped`, `would_drop`, `failed` and `kept`: an outcome the executor did not report (it never got
/// there) is `not_attempted`, and anything an outcome names that the plan did not is ignored (the
/// executor runs only the plan; see [`SweepReport::accounting_errors`]).
pub fn build_report(
    plan: &SweepPlan,
    outcomes: &[DatabaseOutcome],
    mode: RunMode,
    mut timings: Timings,
) -> SweepReport {
    let by_name: HashMap<&str, &DatabaseOutcome> =
        outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut errors = plan.errors.clone();
    timings.check_to_commit_max = outcomes
        .iter()
        .flat_map(|o| o.check_to_commit.iter().copied())
        .max();
    timings.dependents_to_drop_max = outcomes
        .iter()
        .flat_map(|o| o.dependents_to_drop.iter().copied())
        .max();
    let databases = plan
        .databases
        .iter()
        .map(|d| {
            let o = by_name.get(d.name.as_str()).copied();
            if let Some(e) = o.and_then(|o| o.error.clone()) {
                errors.push(DatabaseError {
                    database: d.name.clone(),
                    error: e,
                });
            }
            account_database(d, o, mode)
        })
        .collect();
    SweepReport {
        schema_version: 1,
        dry_run: mode == RunMode::DryRun,
        active_detection_complete: plan.active_detection_complete,
        active_namespaces: plan.active_namespaces.clone(),
        unattributed_sessions: plan.unattributed_sessions.clone(),
        errors,
        databases,
        timings,
    }
}

fn account_database(
    d: &DatabasePlan,
    o: Option<&DatabaseOutcome>,
    mode: RunMode,
) -> DatabaseResult {
    let mut r = DatabaseResult {
        name: d.name.clone(),
        dropped: vec![],
        would_drop: vec![],
        failed: vec![],
        kept: d.keep.clone(),
    };
    for x in &d.drop {
        let s = x.schema.as_str();
        match mode {
            RunMode::DryRun => r.would_drop.push(x.schema.clone()),
            RunMode::Cancelled => r.kept.push(Kept::new(s, KeepReason::NotConfirmed)),
            RunMode::Executed => {
                let o = o.into_iter();
                if o.clone().any(|o| o.dropped.iter().any(|n| n == s)) {
                    r.dropped.push(x.schema.clone());
                } else if let Some(f) = o.clone().flat_map(|o| &o.failed).find(|f| f.schema == s) {
                    r.failed.push(f.clone());
                } else if let Some(k) = o.flat_map(|o| &o.kept).find(|k| k.schema == s) {
                    r.kept.push(k.clone());
                } else {
                    r.kept.push(Kept::new(s, KeepReason::NotAttempted));
                }
            }
        }
    }
    r
}

/// How a sweep ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepStatus {
    /// Nothing failed (also when nothing was stale, or the plan was not confirmed).
    Done,
    /// The live set could not be established (a database unreachable, unattributable sessions), and
    /// so nothing was dropped.
    DetectionIncomplete,
    /// Some drop failed or could not run (server unresponsive, another sweep, plan expired), or the
    /// live set was lost partway, after something had been dropped.
    SomeFailed,
}

impl SweepReport {
    pub fn status(&self) -> SweepStatus {
        let kept = || self.databases.iter().flat_map(|d| &d.kept);
        let failed = || self.databases.iter().flat_map(|d| &d.failed);
        // A COMMIT whose answer was lost may have dropped its schema.
        let maybe_dropped = self.databases.iter().any(|d| !d.dropped.is_empty())
            || failed().any(|f| f.reason == FailReason::CommitUnknown);
        let detection_lost = kept().any(|k| {
            matches!(
                k.reason,
                KeepReason::ActiveDetectionIncomplete | KeepReason::UnattributedSessions
            )
        });
        if !self.active_detection_complete || (detection_lost && !maybe_dropped) {
            SweepStatus::DetectionIncomplete
        } else if detection_lost
            || failed().next().is_some()
            || kept().any(|k| {
                matches!(
                    k.reason,
                    KeepReason::SweepInProgress
                        | KeepReason::ServerUnresponsive
                        | KeepReason::NotAttempted
                        | KeepReason::PlanExpired
                )
            })
        {
            SweepStatus::SomeFailed
        } else {
            SweepStatus::Done
        }
    }

    /// The accounting invariant, checked against the plan: every schema the plan names appears
    /// exactly once in its database's `dropped`, `would_drop`, `failed` and `kept`, and nothing else
    /// does. Empty when it holds.
    pub fn accounting_errors(&self, plan: &SweepPlan) -> Vec<String> {
        let mut errors = Vec::new();
        for p in &plan.databases {
            let Some(r) = self.databases.iter().find(|r| r.name == p.name) else {
                errors.push(format!("database {} is missing from the report", p.name));
                continue;
            };
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let names = r
                .dropped
                .iter()
                .chain(&r.would_drop)
                .map(String::as_str)
                .chain(r.failed.iter().map(|f| f.schema.as_str()))
                .chain(r.kept.iter().map(|k| k.schema.as_str()));
            for n in names {
                *seen.entry(n).or_default() += 1;
            }
            let planned: HashSet<&str> = p
                .drop
                .iter()
                .map(|x| x.schema.as_str())
                .chain(p.keep.iter().map(|k| k.schema.as_str()))
                .collect();
            for s in &planned {
                match seen.get(s) {
                    Some(1) => {}
                    Some(n) => errors.push(format!("{}.{s} is reported {n} times", p.name)),
                    None => errors.push(format!("{}.{s} is reported nowhere", p.name)),
                }
            }
            for s in seen.keys().filter(|s| !planned.contains(*s)) {
                errors.push(format!("{}.{s} is reported but was not planned", p.name));
            }
        }
        errors
    }
}

/// One summary line: `dropped 56, failed 0, kept 3 (live 3) in 48.2 s`.
pub fn summary_line(r: &SweepReport) -> String {
    let dropped: usize = r.databases.iter().map(|d| d.dropped.len()).sum();
    let would: usize = r.databases.iter().map(|d| d.would_drop.len()).sum();
    let failed: usize = r.databases.iter().map(|d| d.failed.len()).sum();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for k in r.databases.iter().flat_map(|d| &d.kept) {
        *reasons.entry(k.reason.as_str()).or_default() += 1;
    }
    let kept: usize = reasons.values().sum();
    let why: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let head = if r.dry_run {
        format!("dry run: would drop {would}")
    } else {
        format!("dropped {dropped}, failed {failed}")
    };
    format!(
        "{head}, kept {kept}{} in {:.1} s",
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        },
        r.timings.total.as_secs_f64()
    )
}

/// Quotes an identifier for SQL (`"` doubled). Names come from the catalog; this is belt and braces.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
