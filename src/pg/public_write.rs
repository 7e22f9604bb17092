//! What the probe reads about writes into shared schemas (`public`), at a cost that stays near zero
//! when no test transaction writes (the rules are in `domain::public_write`).
//!
//! **Locks.** Reading `pg_locks` is a snapshot of the whole lock manager, about one activity floor;
//! doing it every poll would nearly double a quiet dashboard's cost. So per configured database:
//!
//! 1. only labeled sessions of that database with an open transaction (`xact_start`, already in
//!    the activity read) are considered, and only when one of them is new to this reader or ran a
//!    new statement since it was last checked (a lock is taken by a statement: an idle transaction
//!    whose `query_start` has not moved took none, and a session waiting for a lock takes none
//!    while it waits), or is running one that was last checked [`ACTIVE_RECHECK`] ago; only those
//!    pids are read, what the others were found holding is carried, and two reads of a database
//!    are [`LOCK_READ_GAP`] apart at least and, over a persistent session, within a twentieth of the
//!    polls' own time (`domain::public_write::LockBudget`: in a swarm every test transaction
//!    writes its own schema, so the xid gate below stays open; without the budget a read every
//!    2 s cost +86% at 1,000 backends);
//! 2. the statement itself first asks the per-backend status which of those sessions has an xid
//!    (a transaction that wrote anything has one; a read-only one never does) and reads
//!    `pg_lock_status()` only if one has: the `EXISTS` over them is a one-time filter, so a poll of
//!    read-only tests never touches the lock manager;
//! 3. of the lock snapshot only granted relation locks of those pids, in this database, on tables
//!    of the shared schemas, in a writing mode are returned.
//!
//! **Statistics.** Every [`COUNTERS_EVERY`] the shared tables' write counters are read by OID. The
//! table list, a scan of `pg_class` (4 ms with 5,000 test tables), is read again only when
//! `pg_class` changed since, and then at most every [`TABLES_RELIST_AFTER`]. A table created in a
//! shared schema is therefore counted up to a minute late, from zero: its writes are not lost unless
//! it is dropped before it is listed.

use crate::domain::naming::{parse_label, LabelParse};
use crate::domain::public_write::{CounterReading, ObservedSharedLock, TableCounters};
use crate::domain::snapshot::ObservedSession;
use crate::domain::text::display_ident;
use crate::pg::row::{ColumnError, RowExt};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::{Client, Statement};

/// How often the shared tables' write counters are read (per database).
pub const COUNTERS_EVERY: chrono::Duration = chrono::Duration::seconds(3);
/// The least time between two listings of the shared tables while `pg_class` keeps changing (test
/// runs create tables all the time).
const TABLES_RELIST_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// A session running one long statement is checked again this often (its statement can take new
/// locks as it goes).
pub const ACTIVE_RECHECK: chrono::Duration = chrono::Duration::seconds(2);

/// Labeled sessions with an xid and their writing locks on shared tables (see the module docs).
/// `$1` the candidate pids, `$2` the shared schemas.
const LOCKS_SQL: &str = "WITH x AS MATERIALIZED ( \
       SELECT a.pid FROM pg_catalog.unnest($1::pg_catalog.int4[]) p(pid) \
       CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(p.pid) a \
       WHERE a.backend_xid IS NOT NULL) \
     SELECT l.pid, l.mode, n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
     FROM pg_catalog.pg_lock_status() l \
       JOIN pg_catalog.pg_class c ON c.oid = l.relation \
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE EXISTS (SELECT 1 FROM x) \
       AND l.pid IN (SELECT x.pid FROM x) \
       AND l.granted AND l.locktype = 'relation' \
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) \
       AND l.mode = 'RowExclusiveLock' \
       AND c.relkind IN ('r', 'p') \
       AND n.nspname = ANY ($2::pg_catalog.text[])";

/// The tables of the shared schemas (`$1`).
const TABLES_SQL: &str = "SELECT c.oid, n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
     FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
     WHERE n.nspname = ANY ($1::pg_catalog.text[]) AND c.relkind IN ('r', 'p')";

/// The write counters of the tables `$1` (by OID), and in a row of its own (OID 0) what changes
/// when a table is created or dropped: the writes to `pg_class` (flushed within about a second).
const COUNTERS_SQL: &str = "SELECT o, pg_catalog.pg_stat_get_tuples_inserted(o), \
            pg_catalog.pg_stat_get_tuples_updated(o), pg_catalog.pg_stat_get_tuples_deleted(o) \
     FROM pg_catalog.unnest($1::pg_catalog.oid[]) o \
     UNION ALL \
     SELECT 0::pg_catalog.oid, pg_catalog.pg_stat_get_tuples_inserted(1259), \
            pg_catalog.pg_stat_get_tuples_updated(1259), pg_catalog.pg_stat_get_tuples_deleted(1259)";

/// What a session's shared-schema reads remember between polls.
#[derive(Default)]
pub struct SharedReader {
    locks_stmt: tokio::sync::OnceCell<Statement>,
    tables_stmt: tokio::sync::OnceCell<Statement>,
    counters_stmt: tokio::sync::OnceCell<Statement>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per pid: the (backend start, transaction start, statement start) last checked, when, and
    /// the writing locks found then (shown again while that session cannot have taken new ones).
    checked: HashMap<i32, (Checked, DateTime<Utc>, Vec<ObservedSharedLock>)>,
    /// When this database's locks were last read.
    last_read: Option<DateTime<Utc>>,
    /// The shared tables (OID → `schema.table`), the `pg_class` fingerprint they were listed under,
    /// and when.
    tables: Option<Listed>,
    counters_at: Option<DateTime<Utc>>,
    /// Lock reads sent (for tests and benchmarks).
    lock_reads: u64,
    /// Keeps the lock reads within a twentieth of the polls' time (persistent sessions only).
    budget: crate::domain::public_write::LockBudget,
}

/// Write counters per table OID: inserted, updated, deleted.
type Counts = Vec<(u32, i64, i64, i64)>;

/// The shared tables (OID, `schema.table`), the `pg_class` fingerprint, when listed.
type Listed = (Vec<(u32, String)>, i64, DateTime<Utc>);

type Checked = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// What a poll does about locks: the pids to read, and the findings carried from earlier reads.
struct Due {
    read: Vec<(i32, Checked)>,
    carried: Vec<ObservedSharedLock>,
}

impl SharedReader {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            *g = State::default();
            g
        })
    }

    /// How many lock reads this session sent.
    pub fn lock_reads(&self) -> u64 {
        self.state().lock_reads
    }

    /// Which sessions' locks are due for a look (see the module docs). A session is not due while
    /// it waits for a lock (it takes none meanwhile), nor while it sits idle in the transaction it
    /// was last checked in; a running one is due again after [`ACTIVE_RECHECK`]. Reads of one
    /// database are [`LOCK_READ_GAP`] apart at least (a persistent session's; a one-shot reads at
    /// once); meanwhile the findings of the same transactions are carried.
    fn due(
        &self,
        sessions: &[ObservedSession],
        datname: &str,
        app_prefix: &str,
        now: DateTime<Utc>,
        gap: chrono::Duration,
    ) -> Due {
        let candidates: Vec<&ObservedSession> = sessions
            .iter()
            .filter(|s| s.datname.as_deref() == Some(datname) && s.xact_start.is_some())
            .filter(|s| {
                matches!(
                    parse_label(app_prefix, &s.application_name),
                    LabelParse::Labeled(_)
                )
            })
            .collect();
        let mut st = self.state();
        st.checked
            .retain(|pid, _| candidates.iter().any(|s| s.pid == *pid));
        let mut due = Due {
            read: Vec::new(),
            carried: Vec::new(),
        };
        for s in &candidates {
            let key = (s.backend_start, s.xact_start, s.query_start);
            let same_xact = |k: &Checked| k.0 == key.0 && k.1 == key.1;
            let waiting = s.wait_event_type.as_deref() == Some("Lock");
            match st.checked.get(&s.pid) {
                Some((k, at, found)) if same_xact(k) => {
                    let settled = *k == key
                        && (s.state.as_deref() == Some("idle in transaction")
                            || now - *at < ACTIVE_RECHECK);
                    if waiting || settled {
                        due.carried.extend(found.iter().cloned());
                    } else {
                        due.read.push((s.pid, key));
                    }
                }
                // Not yet looked at in this transaction: read once, waiting or not (a seeder
                // that wrote into public and now waits behind another's row still holds its
                // lock; skipping waiters missed it, found by the black-box attack).
                _ => due.read.push((s.pid, key)),
            }
        }
        let too_soon = st.last_read.is_some_and(|t| now - t < gap)
            || (!gap.is_zero() && !st.budget.affordable());
        if !due.read.is_empty() && too_soon {
            for (pid, key) in std::mem::take(&mut due.read) {
                if let Some((k, _, found)) = st.checked.get(&pid) {
                    if k.0 == key.0 && k.1 == key.1 {
                        due.carried.extend(found.iter().cloned());
                    }
                }
            }
        }
        due
    }

    /// Remembers what a read found for the pids it read, and what it cost.
    fn record(
        &self,
        read: &[(i32, Checked)],
        found: &[ObservedSharedLock],
        now: DateTime<Utc>,
        took_ms: f64,
    ) {
        let mut st = self.state();
        st.budget.spend(took_ms);
        st.last_read = Some(now);
        st.lock_reads += 1;
        for (pid, key) in read {
            let mine = found.iter().filter(|l| l.pid == *pid).cloned().collect();
            st.checked.insert(*pid, (*key, now, mine));
        }
    }
}

/// The least time between two lock reads of one database over a persistent session.
pub const LOCK_READ_GAP: chrono::Duration = chrono::Duration::seconds(2);

/// Bounds a query on the client side too (as the probe does).
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit + crate::pg::probe::CLIENT_SLACK, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::pg::connect::describe_error(&e)),
        Err(_) => Err("no answer in time".into()),
    }
}

/// What to read about shared schemas in one database.
pub struct SharedRead<'a> {
    pub client: &'a Client,
    pub reader: &'a SharedReader,
    /// Configured database name, and the server's name for it.
    pub database: &'a str,
    pub datname: &'a str,
    pub app_prefix: &'a str,
    pub shared_schemas: &'a [String],
    pub limit: Duration,
    /// A one-shot read (`pgswarm snapshot`): no gap between lock reads applies.
    pub one_shot: bool,
    /// This database's share of what this poll's reads took (milliseconds): lock reads may take a
    /// twentieth of it over time.
    pub poll_ms: f64,
}

impl SharedRead<'_> {
    /// The writing locks of labeled sessions on shared tables, when any session is due for a
    /// look; nothing otherwise. A failed read is not an error of the poll: the finding waits for
    /// the next one.
    pub async fn locks(&self, sessions: &[ObservedSession]) -> Vec<ObservedSharedLock> {
        if self.shared_schemas.is_empty() {
            return Vec::new();
        }
        let now = Utc::now();
        let gap = if self.one_shot {
            chrono::Duration::zero()
        } else {
            self.reader.state().budget.earn(self.poll_ms);
            LOCK_READ_GAP
        };
        let due = self
            .reader
            .due(sessions, self.datname, self.app_prefix, now, gap);
        let mut found = due.carried;
        if due.read.is_empty() {
            return found;
        }
        let pids: Vec<i32> = due.read.iter().map(|(p, _)| *p).collect();
        let started = std::time::Instant::now();
        match self.read_locks(&pids).await {
            Ok(locks) => {
                let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                self.reader.record(&due.read, &locks, now, took_ms);
                found.extend(locks);
            }
            // Not an error of the poll: the sessions stay due and are read again next time.
            Err(e) => tracing::debug!("shared-schema lock read on {}: {e}", self.database),
        }
        found
    }

    async fn read_locks(&self, pids: &[i32]) -> Result<Vec<ObservedSharedLock>, String> {
        let c = self.client;
        let stmt = self
            .reader
            .locks_stmt
            .get_or_try_init(|| bounded(self.limit, c.prepare(LOCKS_SQL)))
            .await?;
        let rows = bounded(self.limit, c.query(stmt, &[&pids, &self.shared_schemas])).await?;
        rows.iter()
            .map(|r| {
                let schema: String = r.col(2)?;
                let table: String = r.col(3)?;
                Ok(ObservedSharedLock {
                    database: self.database.to_string(),
                    pid: r.col(0)?,
                    mode: r.col(1)?,
                    relation: format!("{}.{}", display_ident(&schema), display_ident(&table)),
                })
            })
            .collect::<Result<_, ColumnError>>()
            .map_err(|e| e.to_string())
    }

    /// The shared tables' write counters, when [`COUNTERS_EVERY`] has passed since the last reading.
    pub async fn counters(&self) -> Option<CounterReading> {
        if self.shared_schemas.is_empty() {
            return None;
        }
        let now = Utc::now();
        if let Some(at) = self.reader.state().counters_at {
            if now - at < COUNTERS_EVERY {
                return None;
            }
        }
        match self.read_counters(now).await {
            Ok(reading) => {
                self.reader.state().counters_at = Some(now);
                Some(reading)
            }
            Err(e) => {
                tracing::debug!("shared-schema counters on {}: {e}", self.database);
                None
            }
        }
    }

    async fn read_counters(&self, now: DateTime<Utc>) -> Result<CounterReading, String> {
        let listed = self.reader.state().tables.clone();
        let mut new_tables_since = None;
        let (tables, counts) = match listed {
            Some((tables, under, at)) => {
                let (counts, print) = self.query_counters(&tables).await?;
                if print != under && now - at >= TABLES_RELIST_AFTER {
                    // Tables were created or dropped since the list was read: list again.
                    new_tables_since = Some(at);
                    self.relist(now).await?
                } else {
                    (tables, counts)
                }
            }
            None => self.relist(now).await?,
        };
        let names: HashMap<u32, &String> = tables.iter().map(|(o, n)| (*o, n)).collect();
        Ok(CounterReading {
            database: self.database.to_string(),
            at: now,
            new_tables_since,
            tables: counts
                .into_iter()
                .filter_map(|(oid, i, u, d)| {
                    Some(TableCounters {
                        relation: names.get(&oid)?.to_string(),
                        inserted: i,
                        updated: u,
                        deleted: d,
                    })
                })
                .collect(),
        })
    }

    /// Lists the shared tables, reads their counters and remembers the list.
    async fn relist(&self, now: DateTime<Utc>) -> Result<(Vec<(u32, String)>, Counts), String> {
        let tables = self.list_tables().await?;
        let (counts, print) = self.query_counters(&tables).await?;
        self.reader.state().tables = Some((tables.clone(), print, now));
        Ok((tables, counts))
    }

    async fn list_tables(&self) -> Result<Vec<(u32, String)>, String> {
        let c = self.client;
        let stmt = self
            .reader
            .tables_stmt
            .get_or_try_init(|| bounded(self.limit, c.prepare(TABLES_SQL)))
            .await?;
        let rows = bounded(self.limit, c.query(stmt, &[&self.shared_schemas])).await?;
        rows.iter()
            .map(|r| {
                let schema: String = r.col(1)?;
                let table: String = r.col(2)?;
                Ok((
                    r.col::<u32>(0)?,
                    format!("{}.{}", display_ident(&schema), display_ident(&table)),
                ))
            })
            .collect::<Result<_, ColumnError>>()
            .map_err(|e| e.to_string())
    }

    /// Counters per OID, and the `pg_class` fingerprint.
    async fn query_counters(&self, tables: &[(u32, String)]) -> Result<(Counts, i64), String> {
        let c = self.client;
        let stmt = self
            .reader
            .counters_stmt
            .get_or_try_init(|| bounded(self.limit, c.prepare(COUNTERS_SQL)))
            .await?;
        let oids: Vec<u32> = tables.iter().map(|(o, _)| *o).collect();
        let rows = bounded(self.limit, c.query(stmt, &[&oids])).await?;
        let mut counts = Vec::with_capacity(rows.len());
        let mut print = 0;
        for r in &rows {
            let oid: u32 = r.col(0).map_err(|e| e.to_string())?;
            let (i, u, d): (i64, i64, i64) = (
                r.col(1).map_err(|e: ColumnError| e.to_string())?,
                r.col(2).map_err(|e: ColumnError| e.to_string())?,
                r.col(3).map_err(|e: ColumnError| e.to_string())?,
            );
            if oid == 0 {
                print = i + u + d;
            } else {
                counts.push((oid, i, u, d));
            }
        }
        Ok((counts, print))
    }
}
