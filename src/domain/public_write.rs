//! Writes into shared schemas (`public` by default): the silent `search_path` fall-through.
//!
//! `SET LOCAL search_path TO test_{ns}_gw0, public` does not fail when `test_{ns}_gw0` does not exist:
//! names fall through to `public`, and a seeder's rows land where every other run sees them. This
//! module holds the rules that turn what the probe read into findings; the reads are in
//! `pg::public_write`.
//!
//! Three kinds of finding, each with what it can and cannot see (docs/public-writes.md):
//!
//! - **lock evidence** ([`lock_writes`]): a labeled session whose transaction holds a
//!   data-modifying lock ([`is_write_mode`]) on a table of a shared schema. Exact about run, worker,
//!   pid and table, but only while the transaction is open at a poll;
//! - **statistics evidence** ([`PublicWriteTracker`]): the shared tables' write counters moved
//!   between two readings. Sees short autocommit writes no poll catches, but not who wrote: the runs
//!   connected to that database during the window are *candidates*, never one run unless only one
//!   was connected;
//! - **the precondition** ([`missing_worker_schemas`]): a labeled session connected to a database
//!   where its run has no `{prefix}_{ns}_{worker}` schema, the setup in which the fall-through
//!   happens.
//!
//! Pure: the clock is an input, like everywhere in `domain`.

use crate::domain::snapshot::{DatabaseReport, ReadStatus, SchemaReport, SessionReport};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The shared schema when none is configured.
pub const DEFAULT_SHARED_SCHEMA: &str = "public";

/// Statistics are flushed by each backend within about a second of a write (PostgreSQL 15 flushes
/// pending statistics at most once per second, and when the backend goes idle or exits): a delta
/// may hold writes made this long before the earlier reading.
pub const FLUSH_LAG: chrono::Duration = chrono::Duration::seconds(2);

/// A statistics finding stays open (its rows add up, the snapshot shows it) until its table's
/// counters have been still this long; then it ends and goes to the flight log.
pub const STATISTICS_QUIET: chrono::Duration = chrono::Duration::seconds(20);

/// How long the tracker remembers which runs were connected to which database.
const PRESENCE_KEEP: chrono::Duration = chrono::Duration::minutes(5);

/// The lock mode that says a session writes a table's rows: `RowExclusive`, which every INSERT,
/// UPDATE, DELETE, MERGE and COPY FROM takes. The stronger modes are left out on purpose: a worker
/// schema's table with a foreign key to a shared reference table takes `ShareRowExclusive` on it
/// when created and `AccessExclusive` when its schema is dropped (the convention's everyday setup
/// and teardown, found by the black-box attack as false positives), and the same modes are taken by
/// LOCK TABLE, CREATE TRIGGER and ALTER TABLE: none of them writes a row. So TRUNCATE (also
/// `AccessExclusive`) is not seen from locks (docs/public-writes.md). Reads, SELECT FOR UPDATE,
/// VACUUM, ANALYZE and CREATE INDEX take weaker modes and write no row either.
pub fn is_write_mode(mode: &str) -> bool {
    mode == "RowExclusiveLock"
}

/// Checks a `--shared-schema` / `shared_schemas` value: a schema name as PostgreSQL stores it
/// (1 to 63 bytes, no control characters). The message names the bad value.
pub fn validate_shared_schema(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("invalid shared schema \"\": give a schema name such as public".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "invalid shared schema {name:?}: PostgreSQL names are at most 63 bytes"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "invalid shared schema {name:?}: it contains a control character"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// What the probe hands over

/// One data-modifying lock a session holds on a table of a shared schema (read from `pg_locks` for
/// labeled sessions whose transaction has an xid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSharedLock {
    /// Configured database name.
    pub database: String,
    pub pid: i32,
    /// `schema.table`, display-quoted.
    pub relation: String,
    pub mode: String,
}

/// A shared table's write counters (`n_tup_ins`, `n_tup_upd`, `n_tup_del`: attempted writes,
/// rolled-back ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCounters {
    /// `schema.table`, display-quoted.
    pub relation: String,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
}

/// Every shared table's counters in one database at one time (pgswarm's clock, like `taken_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReading {
    /// Configured database name.
    pub database: String,
    pub at: DateTime<Utc>,
    /// When the tables were listed before this reading's list, if it is a new list: a table that
    /// was not in the previous reading was created after that (its writes happened since then, not
    /// only since the previous reading).
    pub new_tables_since: Option<DateTime<Utc>>,
    pub tables: Vec<TableCounters>,
}

/// What one poll read about shared schemas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedObservation {
    pub locks: Vec<ObservedSharedLock>,
    /// Readings are taken every few seconds, not on every poll: most polls carry none.
    pub counters: Vec<CounterReading>,
}

// ---------------------------------------------------------------------------------------------------
// Findings (snapshot JSON `public_writes[]`, flight-log lines of kind `public_write`)

/// Where a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A lock held by the writing session itself: run, worker and pid are known.
    Lock,
    /// A table's write counters moved: who wrote is one of `candidates`.
    Statistics,
}

impl Evidence {
    pub fn words(self) -> &'static str {
        match self {
            Evidence::Lock => "lock",
            Evidence::Statistics => "statistics",
        }
    }
}

/// A write into a shared schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicWrite {
    /// Configured database name.
    pub database: String,
    /// `schema.table`.
    pub relation: String,
    pub evidence: Evidence,
    /// Lock evidence: the mode held (`RowExclusiveLock`, ...).
    #[serde(default)]
    pub mode: Option<String>,
    /// Lock evidence: the writing session's run, worker, label suffix and pid.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub application_name: Option<String>,
    /// Lock evidence: when the transaction holding the lock began (the lock is at most this old).
    /// Statistics evidence: the start of the window.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Statistics evidence: rows inserted, updated and deleted in the window (attempted writes:
    /// rolled-back ones count too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<i64>,
    /// Statistics evidence: the window the rows were written in (it reaches [`FLUSH_LAG`] before
    /// the earlier reading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<DateTime<Utc>>,
    /// Statistics evidence: the runs connected to this database during the window, one of which
    /// (or an unlabeled session) wrote the rows. One run only when only one was connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Tracked findings (dashboard, `record`, the flight log): when first and last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
}

impl PublicWrite {
    /// Whether `namespace` wrote it (lock evidence) or is among its candidates.
    pub fn involves(&self, namespace: &str) -> bool {
        self.namespace.as_deref() == Some(namespace)
            || self.candidates.iter().any(|c| c == namespace)
    }

    /// The flight log's identity of a finding: the same finding written twice (by a dashboard and
    /// a recorder) is kept once. Lock evidence is named by what the server says (database, table,
    /// pid, the transaction's start); statistics by table and when this process first saw it.
    pub fn id(&self) -> String {
        let when = match self.evidence {
            Evidence::Lock => self.since.or(self.first_seen),
            Evidence::Statistics => self.first_seen.or(self.window_start),
        };
        format!(
            "public_write:{}:{}:{}:{}:{}",
            self.database,
            self.relation,
            self.evidence.words(),
            self.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            when.map_or_else(|| "-".to_string(), |t| t.to_rfc3339())
        )
    }

    /// Who wrote, in words: `p4242…/gw0` or `candidates: a, b`.
    pub fn who(&self) -> String {
        match (&self.namespace, &self.worker) {
            (Some(ns), Some(w)) => match &self.suffix {
                Some(s) => format!("{ns}/{w}_{s}"),
                None => format!("{ns}/{w}"),
            },
            _ if self.candidates.len() == 1 => format!("run {}", self.candidates[0]),
            _ if !self.candidates.is_empty() => {
                format!("one of runs {}", self.candidates.join(", "))
            }
            _ => "unknown".into(),
        }
    }

    /// One line: `p1…/gw0 writes into public.operation_type (RowExclusive, lock) in tenant_a`, or
    /// `5 rows written into public.operation_type in tenant_a (statistics; candidates: p1…, p2…)`.
    pub fn describe(&self) -> String {
        match self.evidence {
            Evidence::Lock => format!(
                "{} writes into {} ({}, lock) in {}",
                self.who(),
                self.relation,
                self.mode
                    .as_deref()
                    .map_or("?", crate::domain::snapshot::short_mode),
                self.database
            ),
            Evidence::Statistics => format!(
                "{} rows written into {} in {} (statistics; candidates: {})",
                self.rows.unwrap_or(0),
                self.relation,
                self.database,
                if self.candidates.is_empty() {
                    "none".to_string()
                } else {
                    self.candidates.join(", ")
                }
            ),
        }
    }
}

/// A labeled session connected to a database where its run has no worker schema: `search_path`
/// through that schema falls through to the shared ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingWorkerSchema {
    pub database: String,
    pub namespace: String,
    pub worker: String,
    /// The schema the convention expects: `{schema_prefix}_{namespace}_{worker}`.
    pub schema: String,
    pub pids: Vec<i32>,
}

/// Lock evidence: each observed lock of a labeled session, with its run and worker. Locks of
/// sessions that are not labeled (or not seen in this snapshot) are attributed to nobody and left
/// out; so are modes that do not write.
pub fn lock_writes(locks: &[ObservedSharedLock], sessions: &[SessionReport]) -> Vec<PublicWrite> {
    let by_key: HashMap<(&str, i32), &SessionReport> = sessions
        .iter()
        .map(|s| ((s.database.as_str(), s.pid), s))
        .collect();
    let mut out: Vec<PublicWrite> = locks
        .iter()
        .filter(|l| is_write_mode(&l.mode))
        .filter_map(|l| {
            let s = by_key.get(&(l.database.as_str(), l.pid))?;
            let (ns, worker) = (s.namespace.clone()?, s.worker.clone()?);
            Some(PublicWrite {
                database: l.database.clone(),
                relation: l.relation.clone(),
                evidence: Evidence::Lock,
                mode: Some(l.mode.clone()),
                namespace: Some(ns),
                worker: Some(worker),
                suffix: s.suffix.clone(),
                pid: Some(l.pid),
                application_name: Some(s.application_name.clone()),
                since: s.xact_start,
                rows: None,
                inserted: None,
                updated: None,
                deleted: None,
                window_start: None,
                window_end: None,
                candidates: Vec::new(),
                first_seen: None,
                last_seen: None,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.database, &a.relation, a.pid, &a.mode).cmp(&(&b.database, &b.relation, b.pid, &b.mode))
    });
    // One row per session and table: one writing mode is enough to say it writes.
    out.dedup_by(|a, b| a.database == b.database && a.relation == b.relation && a.pid == b.pid);
    out
}

/// The precondition: labeled sessions connected to a database whose test schemas were read and
/// hold no `{schema_prefix}_{namespace}_{worker}`. Databases whose schemas were not read (or are
/// shown from an earlier reading) are left out: absence there proves nothing.
pub fn missing_worker_schemas(
    sessions: &[SessionReport],
    schemas: &[SchemaReport],
    databases: &[DatabaseReport],
    schema_prefix: &str,
) -> Vec<MissingWorkerSchema> {
    let read: BTreeSet<&str> = databases
        .iter()
        .filter(|d| d.read == ReadStatus::Read)
        .map(|d| d.name.as_str())
        .collect();
    let present: BTreeSet<(&str, &str)> = schemas
        .iter()
        .filter(|s| s.namespace.is_some())
        .map(|s| (s.database.as_str(), s.schema.as_str()))
        .collect();
    let mut missing: BTreeMap<(String, String, String), MissingWorkerSchema> = BTreeMap::new();
    for s in sessions {
        let (Some(ns), Some(worker)) = (&s.namespace, &s.worker) else {
            continue;
        };
        if !read.contains(s.database.as_str()) {
            continue;
        }
        let schema = format!("{schema_prefix}_{ns}_{worker}");
        if present.contains(&(s.database.as_str(), schema.as_str())) {
            continue;
        }
        missing
            .entry((s.database.clone(), ns.clone(), worker.clone()))
            .or_insert_with(|| MissingWorkerSchema {
                database: s.database.clone(),
                namespace: ns.clone(),
                worker: worker.clone(),
                schema,
                pids: Vec::new(),
            })
            .pids
            .push(s.pid);
    }
    missing
        .into_values()
        .map(|mut m| {
            m.pids.sort_unstable();
            m
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Tracking over time: statistics deltas, first and last seen, what ended

type Counts = (i64, i64, i64);

/// When a snapshot was taken, and the runs connected to a database then.
type Presence = (DateTime<Utc>, BTreeSet<String>);

/// What one snapshot changed.
#[derive(Debug, Default)]
pub struct Tracked {
    /// Findings that ended (a lock no longer held, a table whose counters have been still for
    /// [`STATISTICS_QUIET`]): for the flight log.
    pub ended: Vec<PublicWrite>,
    /// Statistics findings still open, as they stand: what the snapshot shows beside lock evidence.
    pub statistics: Vec<PublicWrite>,
}

/// Follows public writes across snapshots: turns counter readings into statistics findings with
/// their candidates, and keeps first and last seen of every finding until it ends.
#[derive(Debug, Default)]
pub struct PublicWriteTracker {
    /// Last reading per database.
    counters: HashMap<String, (DateTime<Utc>, HashMap<String, Counts>)>,
    /// Per database: when each snapshot was taken and the runs connected to it then.
    presence: HashMap<String, Vec<Presence>>,
    /// Open findings by key.
    open: BTreeMap<String, PublicWrite>,
}

impl PublicWriteTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one snapshot's sessions and lock findings (`sessions`, `locks`, taken at `at`) and
    /// the counter readings that came with it.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        sessions: &[SessionReport],
        locks: &[PublicWrite],
        readings: &[CounterReading],
    ) -> Tracked {
        self.record_presence(at, sessions);
        let mut tracked = Tracked::default();
        for w in self.statistics_deltas(readings) {
            let key = format!("s:{}:{}", w.database, w.relation);
            match self.open.get_mut(&key) {
                Some(open) => merge_statistics(open, &w),
                None => {
                    let mut w = w;
                    w.first_seen = w.window_end;
                    self.open.insert(key, w);
                }
            }
        }
        let mut seen = BTreeSet::new();
        for l in locks {
            let key = format!(
                "l:{}:{}:{}:{}",
                l.database,
                l.relation,
                l.pid.unwrap_or_default(),
                l.since.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            let entry = self.open.entry(key.clone()).or_insert_with(|| PublicWrite {
                first_seen: Some(at),
                ..l.clone()
            });
            entry.last_seen = Some(at);
            entry.mode.clone_from(&l.mode);
            seen.insert(key);
        }
        let ended: Vec<String> = self
            .open
            .iter()
            .filter(|(k, w)| match w.evidence {
                Evidence::Lock => !seen.contains(*k),
                Evidence::Statistics => w.last_seen.is_some_and(|t| at - t >= STATISTICS_QUIET),
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(w) = self.open.remove(&k) {
                tracked.ended.push(w);
            }
        }
        tracked.statistics = self
            .open
            .values()
            .filter(|w| w.evidence == Evidence::Statistics)
            .cloned()
            .collect();
        tracked
    }

    /// Every finding still open (for a clean stop: the flight log keeps them too).
    pub fn drain(&mut self) -> Vec<PublicWrite> {
        std::mem::take(&mut self.open).into_values().collect()
    }

    fn record_presence(&mut self, at: DateTime<Utc>, sessions: &[SessionReport]) {
        let mut now: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for s in sessions {
            if let Some(ns) = &s.namespace {
                now.entry(s.database.as_str())
                    .or_default()
                    .insert(ns.clone());
            }
        }
        for list in self.presence.values_mut() {
            list.retain(|(t, _)| at - *t <= PRESENCE_KEEP);
        }
        for (db, runs) in now {
            self.presence
                .entry(db.to_string())
                .or_default()
                .push((at, runs));
        }
        // An empty entry keeps nothing: databases nobody is connected to drop out.
        self.presence.retain(|_, l| !l.is_empty());
    }

    /// The runs connected to `database` at any snapshot in `[from, to]`.
    fn candidates(&self, database: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let mut runs = BTreeSet::new();
        for (t, r) in self.presence.get(database).into_iter().flatten() {
            if *t >= from && *t <= to {
                runs.extend(r.iter().cloned());
            }
        }
        runs.into_iter().collect()
    }

    /// Compares each new reading with the previous one of its database. A table new since then
    /// counts from zero (it was created in between); a counter that went down (statistics reset,
    /// table dropped and created again) is a new baseline, not a finding. A delta while no labeled
    /// run was connected to that database is nobody's test write and is not reported.
    fn statistics_deltas(&mut self, readings: &[CounterReading]) -> Vec<PublicWrite> {
        let mut out = Vec::new();
        for r in readings {
            let now: HashMap<String, Counts> = r
                .tables
                .iter()
                .map(|t| (t.relation.clone(), (t.inserted, t.updated, t.deleted)))
                .collect();
            let prev = match self.counters.get(&r.database) {
                Some((t, _)) if *t >= r.at => continue,
                Some((t, c)) => Some((*t, c.clone())),
                None => None,
            };
            self.counters
                .insert(r.database.clone(), (r.at, now.clone()));
            let Some((prev_at, prev)) = prev else {
                continue;
            };
            let mut tables: Vec<(&String, &Counts)> = now.iter().collect();
            tables.sort();
            for (rel, &(i, u, d)) in tables {
                // A new table was written since it was created, some time after the previous
                // list: the runs connected since then are the candidates (found by the black-box
                // attack: its writes were put in the last few seconds, and a run connected only
                // then was named alone).
                let from = match (prev.contains_key(rel), r.new_tables_since) {
                    (false, Some(listed)) => listed.min(prev_at),
                    _ => prev_at,
                } - FLUSH_LAG;
                let (pi, pu, pd) = prev.get(rel).copied().unwrap_or((0, 0, 0));
                if i < pi || u < pu || d < pd {
                    continue;
                }
                let (di, du, dd) = (i - pi, u - pu, d - pd);
                if di + du + dd == 0 {
                    continue;
                }
                let candidates = self.candidates(&r.database, from, r.at);
                if candidates.is_empty() {
                    continue;
                }
                out.push(PublicWrite {
                    database: r.database.clone(),
                    relation: rel.clone(),
                    evidence: Evidence::Statistics,
                    mode: None,
                    namespace: None,
                    worker: None,
                    suffix: None,
                    pid: None,
                    application_name: None,
                    since: Some(from),
                    rows: Some(di + du + dd),
                    inserted: Some(di),
                    updated: Some(du),
                    deleted: Some(dd),
                    window_start: Some(from),
                    window_end: Some(r.at),
                    candidates,
                    first_seen: None,
                    last_seen: Some(r.at),
                });
            }
        }
        out
    }
}

/// What makes a finding the same finding in two snapshots: lock evidence by session, table and
/// transaction; statistics by table and first window.
fn finding_key(w: &PublicWrite) -> String {
    match w.evidence {
        Evidence::Lock => format!("l:{}:{}:{:?}:{:?}", w.database, w.relation, w.pid, w.since),
        Evidence::Statistics => format!(
            "s:{}:{}:{:?}",
            w.database,
            w.relation,
            w.first_seen.or(w.window_start)
        ),
    }
}

/// Adds the findings a snapshot taken `at` shows to `kept`: each finding once, with when it was
/// first and last seen (a statistics finding keeps its own last delta).
pub fn remember_public_writes(
    kept: &mut Vec<PublicWrite>,
    seen: &[PublicWrite],
    at: DateTime<Utc>,
) {
    for w in seen {
        let key = finding_key(w);
        let last = match w.evidence {
            Evidence::Statistics => w.last_seen.or(Some(at)),
            Evidence::Lock => Some(at),
        };
        match kept.iter_mut().find(|k| finding_key(k) == key) {
            Some(k) => {
                let first = k.first_seen.or(w.first_seen).or(Some(at));
                *k = PublicWrite {
                    first_seen: first,
                    last_seen: last,
                    ..w.clone()
                };
            }
            None => kept.push(PublicWrite {
                first_seen: w.first_seen.or(Some(at)),
                last_seen: last,
                ..w.clone()
            }),
        }
    }
}

/// The public writes of a recording: each finding once, first and last seen.
pub fn public_writes_of(snaps: &[crate::domain::snapshot::Snapshot]) -> Vec<PublicWrite> {
    let mut kept = Vec::new();
    for snap in snaps {
        remember_public_writes(&mut kept, &snap.public_writes, snap.taken_at);
    }
    kept
}

/// Adds a later delta of the same table to an open statistics finding.
fn merge_statistics(open: &mut PublicWrite, w: &PublicWrite) {
    let add = |a: Option<i64>, b: Option<i64>| Some(a.unwrap_or(0) + b.unwrap_or(0));
    open.rows = add(open.rows, w.rows);
    open.inserted = add(open.inserted, w.inserted);
    open.updated = add(open.updated, w.updated);
    open.deleted = add(open.deleted, w.deleted);
    open.window_end = w.window_end;
    open.last_seen = w.last_seen;
    let mut runs: BTreeSet<String> = open.candidates.drain(..).collect();
    runs.extend(w.candidates.iter().cloned());
    open.candidates = runs.into_iter().collect();
}

/// The share of the polls' own (client-side) time that lock reads for public writes may take, over
/// any stretch. Half the 10% goal: a lock read costs the server more per millisecond of wall time
/// than a poll does (at 10% of wall time the swarm bench measured +10.1% server time).
pub const LOCK_BUDGET_SHARE: f64 = 0.05;

/// A token bucket that keeps the lock reads of one database within [`LOCK_BUDGET_SHARE`] of the
/// polls' time (its share of its server's activity read): every poll earns that share of what it
/// took, every lock read spends what it took, and a read is due only when what is saved covers
/// the last one. Why: in a swarm every test transaction writes (its own schema), so the cheap
/// "only when a labeled session has an xid" gate stays open, and a lock read every 2 s cost +86%
/// at 1,000 backends. The first read is allowed on credit (nothing is known of its cost yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockBudget {
    saved_ms: f64,
    cost_ms: f64,
}

impl LockBudget {
    /// A poll that took `poll_ms` (this database's share of it).
    pub fn earn(&mut self, poll_ms: f64) {
        let earned = LOCK_BUDGET_SHARE * poll_ms.max(0.0);
        if !earned.is_finite() {
            return;
        }
        self.saved_ms += earned;
        // Saving more than two reads' worth would allow a burst above the share.
        if self.cost_ms > 0.0 {
            self.saved_ms = self.saved_ms.min(2.0 * self.cost_ms);
        }
    }

    /// Whether a read may be sent now.
    pub fn affordable(&self) -> bool {
        self.saved_ms >= self.cost_ms
    }

    /// A read was sent and took `ms`.
    pub fn spend(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        self.saved_ms -= ms;
        self.cost_ms = ms;
    }
}

#[cfg(test)]
mod tests;
