//! Incremental polling: what lets a 1 s refresh cost about one bare `pg_stat_activity` scan.
//!
//! Measured on a server with 1,000 idle labeled sessions and 50 lock waiters, the server spends its
//! time in a refresh on three things besides the unavoidable scan itself: shipping every session's row
//! (about half a scan again), and reading `pg_locks`, which copies the whole lock table (thousands of
//! entries while test setup runs DDL) even when filtered to a few pids. Both are mostly wasted work:
//! an idle session's row does not change until its state does, and a waiter keeps waiting for the same
//! lock until it, or one of its blockers, moves.
//!
//! So a monitor session keeps two caches, and both fall back to a full read when in doubt:
//!
//! * [`ActivityCache`]: after the first (full) read, the probe decides what changed from the
//!   per-backend accessors (`pg_stat_get_backend_start`, `_activity_start`, `_xact_start`,
//!   `_wait_event_type`, `_wait_event`), which read the status snapshot without forming a row, and
//!   forms whole rows only for backends that changed: a `backend_start`, `query_start` or
//!   `xact_start` at or after the previous read's statement time minus a margin, a row it cannot see
//!   (no privilege: always sent), or a held busy row (any state but `idle`) whose wait event differs
//!   from the one held. A held busy row that did not change comes back as its pid and fresh
//!   blockers only. Every other live session is an idle session whose row is exactly the one already
//!   held: an idle session's columns only change through a statement, which moves `query_start`; a
//!   busy session leaves its state by finishing its statement, which changes its wait event (to
//!   `Client`/`ClientRead`) or its transaction (`xact_start`). A new backend on a reused pid has a
//!   new `backend_start`. The margin covers a backend that took its timestamp before our scan but
//!   published it after; one that published it later still (it appears only once authenticated)
//!   is a live pid with no row, which makes the next read full; a full read every
//!   [`FULL_READ_EVERY`] reads bounds anything else (a server clock stepping backwards; a
//!   `COPY FROM STDIN` inside a transaction block, which waits on `ClientRead` while active and
//!   again once idle in its transaction).
//! * [`LockCache`]: the awaited lock (mode, relation, `waitstart`) of a waiter is reused while its
//!   [`WaitKey`] is unchanged: same statement, same wait event, same blockers, and every blocker in
//!   the same statement and state. For the awaited lock to change, the waiter must have been granted
//!   its lock and queued for another one in the same statement; that needs a blocker to let go of a
//!   lock, which it does by finishing a statement or transaction, which changes the key. `pg_locks`
//!   is still read at least every [`LOCK_REREAD_EVERY`] polls with waiters.
//!
//! Neither cache ever feeds a sweep: the sweep discovers on fresh sessions and re-checks inside its
//! transaction. A stale cache can at worst show a detail for a few seconds too long.

use crate::domain::snapshot::{AwaitedLock, ObservedSession};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

/// Every this many activity reads, one is a full read whatever the cache holds.
pub const FULL_READ_EVERY: u32 = 60;
/// Rows whose `state_change` is this close before the previous read are sent again.
pub const STATE_CHANGE_MARGIN: Duration = Duration::seconds(2);
/// `pg_locks` is read at least every this many polls that have lock waiters.
pub const LOCK_REREAD_EVERY: u32 = 20;

/// A backend can report the same state twice a few milliseconds apart (after an extended-protocol
/// error, once on the error and once at Sync), and the second report moves only `state_change`,
/// which no per-backend accessor shows. So every row an incremental read formed is formed once more
/// on the next read; after a full read, the rows whose state changed within this long before it.
pub const RECHECK_WINDOW: Duration = Duration::seconds(1);

/// The held rows an incremental read asks about, as parallel arrays (statement parameters): busy
/// rows (anything but a settled idle session, which changes only with a new command) are formed
/// again when their wait event differs from the one held, else answered with fresh blockers;
/// rows the last read formed because they changed are formed again (`again`, see [`RECHECK_WINDOW`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    pub pids: Vec<i32>,
    pub wait_event_types: Vec<Option<String>>,
    pub wait_events: Vec<Option<String>>,
    pub again: Vec<bool>,
    /// The server's key of the live set held (see [`ActivityRead::alive_key`]).
    pub alive_key: Option<String>,
}

/// One activity read as the server answered it.
#[derive(Debug, Clone, Default)]
pub struct ActivityRead {
    /// The read asked for every row (`since` was `None`).
    pub full: bool,
    /// Rows the server sent (all of them on a full read).
    pub sent: Vec<ObservedSession>,
    /// Held busy rows that did not change, with their blockers as of this read.
    pub refreshed: Vec<(i32, Vec<i32>)>,
    /// Every live backend as `(pid, backend_start)`, from the same snapshot. `None` when the server
    /// did not report it (then only `sent` is trusted and the next read is full), or when it is the
    /// set held (see `alive_key`).
    pub alive: Option<Vec<(i32, Option<DateTime<Utc>>)>>,
    /// The server's key of its live set (a count and two sums of pid hashes). An incremental read
    /// sends the live list only when this differs from the key it was asked with: shipping 1,000
    /// pids and start times on every poll was a third of an incremental read's server time, for a
    /// set that rarely changes.
    pub alive_key: Option<String>,
    /// The statement's start time on the server.
    pub statement_time: Option<DateTime<Utc>>,
    /// The server's prepared transactions (always read whole: there are few, and no session).
    pub prepared: Vec<crate::domain::snapshot::PreparedXact>,
    /// Transactions committed and rolled back in all its databases (`pg_stat_database`).
    pub xacts: Option<i64>,
}

/// The sessions of one server as of the last read, keyed by pid.
#[derive(Debug, Clone, Default)]
pub struct ActivityCache {
    rows: HashMap<i32, ObservedSession>,
    last_statement: Option<DateTime<Utc>>,
    reads_since_full: u32,
    /// [`STATE_CHANGE_MARGIN`] unless a test narrows it (`None`: the default).
    margin: Option<Duration>,
    /// Rows the next read forms again (see [`RECHECK_WINDOW`]).
    again: std::collections::HashSet<i32>,
    /// Every backend live at the last read (reported or not) with its `backend_start`, and the
    /// server's key of that set.
    alive: HashMap<i32, Option<DateTime<Utc>>>,
    alive_key: Option<String>,
}

impl ActivityCache {
    /// The `state_change` bound for the next read, or `None` for a full read.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        if self.reads_since_full + 1 >= FULL_READ_EVERY {
            return None;
        }
        let margin = self.margin.unwrap_or(STATE_CHANGE_MARGIN);
        self.last_statement.map(|t| t - margin)
    }

    /// Narrows the margin, so that a test's steps, each after the previous poll, are told apart
    /// by the incremental rules alone instead of being sent again because they are recent.
    #[cfg(any(test, feature = "testkit"))]
    pub fn set_margin(&mut self, margin: Duration) {
        self.margin = Some(margin);
    }

    /// The held rows the next read must ask about, with the wait event they were read in and
    /// whether to form them again whatever the accessors say (see [`Asked`]).
    pub fn asked(&self) -> Asked {
        let mut asked = Asked::default();
        for s in self.rows.values() {
            let again = self.again.contains(&s.pid);
            if again || !is_settled_idle(s) {
                asked.pids.push(s.pid);
                asked.wait_event_types.push(s.wait_event_type.clone());
                asked.wait_events.push(s.wait_event.clone());
                asked.again.push(again);
            }
        }
        asked.alive_key = self.alive_key.clone();
        asked
    }

    /// Forgets everything: the next read is full.
    pub fn reset(&mut self) {
        *self = ActivityCache {
            margin: self.margin,
            ..ActivityCache::default()
        };
    }

    /// Every live backend as of `read`: the list it brought, or the one held when the server said
    /// the set is the same (its key is the one asked with). A sent row's `backend_start` is the live
    /// one: a reused pid is always sent (its new backend started after the previous read).
    fn live_set(&self, read: &ActivityRead) -> Option<Vec<(i32, Option<DateTime<Utc>>)>> {
        if read.alive.is_some() || read.full {
            return read.alive.clone();
        }
        let same = read.alive_key.is_some() && read.alive_key == self.alive_key;
        if !same {
            return None;
        }
        let starts: HashMap<i32, Option<DateTime<Utc>>> =
            read.sent.iter().map(|s| (s.pid, s.backend_start)).collect();
        Some(
            self.alive
                .iter()
                .map(|(pid, start)| (*pid, starts.get(pid).copied().unwrap_or(*start)))
                .collect(),
        )
    }

    /// Merges a read into the cache and returns every session of the server, sorted by pid.
    pub fn merge(&mut self, read: ActivityRead) -> Vec<ObservedSession> {
        let alive = self.live_set(&read);
        let mut rows: HashMap<i32, ObservedSession> = HashMap::with_capacity(self.rows.len());
        let mut doubt = false;
        if !read.full {
            let refreshed: HashMap<i32, Vec<i32>> = read.refreshed.into_iter().collect();
            let sent: std::collections::HashSet<i32> = read.sent.iter().map(|s| s.pid).collect();
            // Unsent live sessions are unchanged: keep the held row if it is the same backend (sent
            // rows replace theirs below), with fresh blockers for a busy one. A live pid that is
            // neither sent nor held must be a backend the last read did not report either (a
            // background process): a backend appears only once authenticated, which can be long
            // after the `backend_start` the incremental rules look at, so an unknown one means a
            // full read next.
            for (pid, start) in alive.iter().flatten() {
                if let Some(mut held) = self.rows.remove(pid) {
                    if held.backend_start != *start {
                        continue;
                    }
                    if let Some(blockers) = refreshed.get(pid) {
                        held.blocked_by = blockers.clone();
                    } else if !is_settled_idle(&held) && !sent.contains(pid) {
                        // The server answers every held busy row; if it did not, trust nothing.
                        doubt = true;
                    }
                    rows.insert(*pid, held);
                } else if !sent.contains(pid) && self.alive.get(pid) != Some(start) {
                    doubt = true;
                }
            }
        }
        // Formed again next time: after a full read the rows that changed just before it; after an
        // incremental read the rows that differ from what was held (a row formed again that did not
        // change is settled, or it would be formed on every read).
        let recent = read.statement_time.map(|t| t - RECHECK_WINDOW);
        self.again = read
            .sent
            .iter()
            .filter(|s| match read.full {
                true => matches!((s.state_change, recent), (Some(c), Some(r)) if c >= r),
                false => rows
                    .get(&s.pid)
                    .is_none_or(|held| Moment::of(held) != Moment::of(s)),
            })
            .map(|s| s.pid)
            .collect();
        for s in read.sent {
            rows.insert(s.pid, s);
        }
        self.rows = rows;
        self.alive_key = read.alive_key.filter(|_| alive.is_some());
        let known = alive.is_some();
        self.alive = alive.into_iter().flatten().collect();
        match (known && !doubt, read.statement_time) {
            (true, Some(t)) => {
                self.last_statement = Some(t);
                self.reads_since_full = if read.full {
                    0
                } else {
                    self.reads_since_full + 1
                };
            }
            // Without the live list or a clock reading the next read must be full.
            _ => self.last_statement = None,
        }
        let mut out: Vec<ObservedSession> = self.rows.values().cloned().collect();
        out.sort_by_key(|s| s.pid);
        out
    }
}

/// An idle session waiting for its client's next command: its row changes only with that command.
fn is_settled_idle(s: &ObservedSession) -> bool {
    s.state.as_deref() == Some("idle")
        && s.wait_event_type.as_deref() == Some("Client")
        && s.wait_event.as_deref() == Some("ClientRead")
}

/// What must stay the same for a waiter's awaited lock to be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitKey {
    waiter: Moment,
    wait_event: (Option<String>, Option<String>),
    blockers: Vec<(i32, Option<Moment>)>,
}

/// A backend's identity and where it is in its work.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Moment {
    backend_start: Option<DateTime<Utc>>,
    xact_start: Option<DateTime<Utc>>,
    query_start: Option<DateTime<Utc>>,
    state_change: Option<DateTime<Utc>>,
    state: Option<String>,
}

impl Moment {
    fn of(s: &ObservedSession) -> Moment {
        Moment {
            backend_start: s.backend_start,
            xact_start: s.xact_start,
            query_start: s.query_start,
            state_change: s.state_change,
            state: s.state.clone(),
        }
    }
}

/// The key of a blocked session, with its blockers looked up among `by_pid`.
pub fn wait_key(s: &ObservedSession, by_pid: &HashMap<i32, &ObservedSession>) -> WaitKey {
    let mut blockers: Vec<(i32, Option<Moment>)> = s
        .blocked_by
        .iter()
        .map(|pid| (*pid, by_pid.get(pid).map(|b| Moment::of(b))))
        .collect();
    blockers.sort_by_key(|(pid, _)| *pid);
    blockers.dedup_by_key(|(pid, _)| *pid);
    WaitKey {
        waiter: Moment::of(s),
        wait_event: (s.wait_event_type.clone(), s.wait_event.clone()),
        blockers,
    }
}

/// Awaited locks of the last `pg_locks` read, with the keys they were read under.
#[derive(Debug, Clone, Default)]
pub struct LockCache {
    entries: HashMap<i32, (WaitKey, AwaitedLock)>,
    polls_since_read: u32,
}

impl LockCache {
    /// The awaited lock of every blocked session in `sessions` if all of them can be reused, or `None`
    /// when `pg_locks` must be read.
    pub fn reuse(&mut self, sessions: &[ObservedSession]) -> Option<HashMap<i32, AwaitedLock>> {
        let by_pid: HashMap<i32, &ObservedSession> = sessions.iter().map(|s| (s.pid, s)).collect();
        let blocked: Vec<&ObservedSession> = sessions
            .iter()
            .filter(|s| !s.blocked_by.is_empty())
            .collect();
        if blocked.is_empty() {
            self.entries.clear();
            self.polls_since_read = 0;
            return Some(HashMap::new());
        }
        if self.polls_since_read + 1 >= LOCK_REREAD_EVERY {
            return None;
        }
        let mut out = HashMap::with_capacity(blocked.len());
        for s in blocked {
            let (key, lock) = self.entries.get(&s.pid)?;
            if *key != wait_key(s, &by_pid) {
                return None;
            }
            out.insert(s.pid, lock.clone());
        }
        self.polls_since_read += 1;
        Some(out)
    }

    /// Records a fresh `pg_locks` read for the blocked sessions of `sessions`.
    pub fn store(&mut self, sessions: &[ObservedSession], awaited: &HashMap<i32, AwaitedLock>) {
        let by_pid: HashMap<i32, &ObservedSession> = sessions.iter().map(|s| (s.pid, s)).collect();
        self.entries = sessions
            .iter()
            .filter(|s| !s.blocked_by.is_empty())
            .filter_map(|s| {
                awaited
                    .get(&s.pid)
                    .map(|l| (s.pid, (wait_key(s, &by_pid), l.clone())))
            })
            .collect();
        self.polls_since_read = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_763_900_000 + s, 0).unwrap()
    }

    fn idle(pid: i32, start: i64, change: i64) -> ObservedSession {
        ObservedSession {
            pid,
            application_name: format!("pytest_gw{pid}_p1t1763900000r0000000a"),
            state: Some("idle".into()),
            wait_event_type: Some("Client".into()),
            wait_event: Some("ClientRead".into()),
            backend_start: Some(t(start)),
            state_change: Some(t(change)),
            query: Some(format!("SELECT {pid}")),
            ..Default::default()
        }
    }

    fn full(rows: Vec<ObservedSession>, now: i64) -> ActivityRead {
        let alive = rows.iter().map(|s| (s.pid, s.backend_start)).collect();
        ActivityRead {
            full: true,
            sent: rows,
            alive: Some(alive),
            statement_time: Some(t(now)),
            ..Default::default()
        }
    }

    #[test]
    fn first_read_is_full_then_bounded_by_the_last_statement() {
        let mut c = ActivityCache::default();
        assert_eq!(c.since(), None);
        c.merge(full(vec![idle(1, 0, 1)], 10));
        assert_eq!(c.since(), Some(t(10) - STATE_CHANGE_MARGIN));
    }

    #[test]
    fn unsent_live_sessions_come_from_the_cache_and_gone_ones_leave() {
        let mut c = ActivityCache::default();
        c.merge(full(vec![idle(1, 0, 1), idle(2, 0, 1), idle(3, 0, 1)], 10));
        let mut changed = idle(2, 0, 11);
        changed.state = Some("active".into());
        let out = c.merge(ActivityRead {
            full: false,
            sent: vec![changed.clone()],
            alive: Some(vec![(1, Some(t(0))), (2, Some(t(0))), (99, Some(t(0)))]),
            statement_time: Some(t(12)),
            ..Default::default()
        });
        let pids: Vec<i32> = out.iter().map(|s| s.pid).collect();
        assert_eq!(pids, vec![1, 2], "3 is gone, 99 is not a reported backend");
        assert_eq!(out[0].query.as_deref(), Some("SELECT 1"));
        assert_eq!(out[1].state.as_deref(), Some("active"));
    }

    #[test]
    fn a_backend_that_appears_with_an_old_start_and_no_row_forces_a_full_read() {
        let mut c = ActivityCache::default();
        // 50 is a background process: live, never reported.
        c.merge(ActivityRead {
            alive: Some(vec![(1, Some(t(0))), (50, Some(t(0)))]),
            ..full(vec![idle(1, 0, 1)], 10)
        });
        let incremental = |alive: Vec<(i32, Option<DateTime<Utc>>)>, now: i64| ActivityRead {
            full: false,
            alive: Some(alive),
            statement_time: Some(t(now)),
            ..Default::default()
        };
        c.merge(incremental(vec![(1, Some(t(0))), (50, Some(t(0)))], 12));
        assert!(c.since().is_some(), "known backends only: no doubt");
        // 9 forked long ago but finished authenticating only now: no row was formed for it.
        c.merge(incremental(
            vec![(1, Some(t(0))), (9, Some(t(1))), (50, Some(t(0)))],
            14,
        ));
        assert_eq!(c.since(), None, "an unknown live backend means a full read");
    }

    #[test]
    fn the_held_live_set_stands_while_the_server_reports_the_same_key() {
        let mut c = ActivityCache::default();
        c.merge(ActivityRead {
            alive_key: Some("3:a:b".into()),
            ..full(vec![idle(1, 0, 1), idle(2, 0, 1), idle(3, 0, 1)], 10)
        });
        assert_eq!(c.asked().alive_key.as_deref(), Some("3:a:b"));
        // Same key, no list: every held row stays; 2 is a new backend on a reused pid (sent).
        let reused = idle(2, 11, 11);
        let out = c.merge(ActivityRead {
            full: false,
            sent: vec![reused],
            alive_key: Some("3:a:b".into()),
            statement_time: Some(t(12)),
            ..Default::default()
        });
        let key = |v: &[ObservedSession]| {
            v.iter()
                .map(|s| (s.pid, s.backend_start))
                .collect::<Vec<_>>()
        };
        let expected = vec![(1, Some(t(0))), (2, Some(t(11))), (3, Some(t(0)))];
        assert_eq!(key(&out), expected);
        assert!(c.since().is_some());
        // The reused pid's new start is now the held one: it stays on a read that sends nothing.
        let out = c.merge(ActivityRead {
            full: false,
            alive_key: Some("3:a:b".into()),
            statement_time: Some(t(13)),
            ..Default::default()
        });
        assert_eq!(key(&out), expected);
        // A different key without the list (cannot happen with a well-behaved server): trust
        // nothing and read everything next.
        c.merge(ActivityRead {
            full: false,
            alive_key: Some("2:c:d".into()),
            statement_time: Some(t(14)),
            ..Default::default()
        });
        assert_eq!(c.since(), None);
    }

    #[test]
    fn a_reused_pid_is_not_mistaken_for_the_old_backend() {
        let mut c = ActivityCache::default();
        c.merge(full(vec![idle(7, 0, 1)], 10));
        let out = c.merge(ActivityRead {
            full: false,
            sent: vec![],
            alive: Some(vec![(7, Some(t(5)))]),
            statement_time: Some(t(12)),
            ..Default::default()
        });
        assert!(
            out.is_empty(),
            "a different backend_start is another backend"
        );
    }

    #[test]
    fn a_read_without_live_list_forces_the_next_read_full() {
        let mut c = ActivityCache::default();
        c.merge(full(vec![idle(1, 0, 1)], 10));
        c.merge(ActivityRead {
            full: false,
            sent: vec![],
            alive: None,
            statement_time: Some(t(11)),
            ..Default::default()
        });
        assert_eq!(c.since(), None);
    }

    #[test]
    fn every_so_many_reads_one_is_full() {
        let mut c = ActivityCache::default();
        c.merge(full(vec![idle(1, 0, 1)], 10));
        let mut fulls = 0;
        for i in 0..(2 * FULL_READ_EVERY) {
            let since = c.since();
            if since.is_none() {
                fulls += 1;
            }
            c.merge(ActivityRead {
                full: since.is_none(),
                sent: if since.is_none() {
                    vec![idle(1, 0, 1)]
                } else {
                    vec![]
                },
                alive: Some(vec![(1, Some(t(0)))]),
                statement_time: Some(t(20 + i as i64)),
                ..Default::default()
            });
        }
        assert_eq!(fulls, 2);
    }

    #[test]
    fn a_busy_row_that_did_not_change_keeps_its_row_with_fresh_blockers() {
        let mut c = ActivityCache::default();
        let mut w = idle(4, 0, 5);
        w.state = Some("active".into());
        w.wait_event_type = Some("Lock".into());
        w.wait_event = Some("relation".into());
        w.blocked_by = vec![1];
        c.merge(full(vec![idle(1, 0, 1), w], 10));
        let asked = c.asked();
        assert_eq!(asked.pids, vec![4], "only the busy row is asked about");
        assert_eq!(asked.wait_event_types, vec![Some("Lock".to_string())]);
        assert_eq!(
            asked.again,
            vec![false],
            "its state changed 5 s before the read"
        );
        let out = c.merge(ActivityRead {
            full: false,
            refreshed: vec![(4, vec![1, 9])],
            alive: Some(vec![(1, Some(t(0))), (4, Some(t(0)))]),
            statement_time: Some(t(12)),
            ..Default::default()
        });
        assert_eq!(out[1].blocked_by, vec![1, 9]);
        assert_eq!(out[1].state.as_deref(), Some("active"));
        assert!(c.since().is_some());
    }

    #[test]
    fn a_row_that_changed_is_formed_once_more_on_the_next_read() {
        let mut c = ActivityCache::default();
        // After a full read: the rows that changed just before it.
        c.merge(full(vec![idle(1, 0, 1), idle(2, 0, 10)], 10));
        let asked = c.asked();
        assert_eq!((asked.pids, asked.again), (vec![2], vec![true]));
        // After an incremental read: the rows it formed, once.
        let alive = Some(vec![(1, Some(t(0))), (2, Some(t(0)))]);
        c.merge(ActivityRead {
            sent: vec![idle(1, 0, 11)],
            alive: alive.clone(),
            statement_time: Some(t(20)),
            ..Default::default()
        });
        let asked = c.asked();
        assert_eq!((asked.pids, asked.again), (vec![1], vec![true]));
        c.merge(ActivityRead {
            alive,
            statement_time: Some(t(21)),
            ..Default::default()
        });
        assert!(
            c.asked().pids.is_empty(),
            "settled idle rows are not asked about"
        );
    }

    #[test]
    fn a_busy_row_the_server_did_not_answer_forces_a_full_read() {
        let mut c = ActivityCache::default();
        let mut w = idle(4, 0, 5);
        w.state = Some("idle in transaction".into());
        c.merge(full(vec![w], 10));
        c.merge(ActivityRead {
            full: false,
            alive: Some(vec![(4, Some(t(0)))]),
            statement_time: Some(t(12)),
            ..Default::default()
        });
        assert_eq!(c.since(), None);
    }

    fn waiter(pid: i32, blockers: &[i32]) -> ObservedSession {
        ObservedSession {
            pid,
            state: Some("active".into()),
            wait_event_type: Some("Lock".into()),
            wait_event: Some("relation".into()),
            backend_start: Some(t(0)),
            xact_start: Some(t(5)),
            query_start: Some(t(5)),
            state_change: Some(t(5)),
            blocked_by: blockers.to_vec(),
            ..Default::default()
        }
    }

    fn holder(pid: i32) -> ObservedSession {
        ObservedSession {
            pid,
            state: Some("idle in transaction".into()),
            backend_start: Some(t(0)),
            xact_start: Some(t(1)),
            query_start: Some(t(2)),
            state_change: Some(t(3)),
            ..Default::default()
        }
    }

    fn lock(rel: &str) -> AwaitedLock {
        AwaitedLock {
            lock_type: "relation".into(),
            mode: "AccessShareLock".into(),
            relation: Some(rel.into()),
            waitstart: Some(t(5)),
            object: format!("relation:{rel}"),
            ..Default::default()
        }
    }

    #[test]
    fn locks_are_reused_while_nobody_moves() {
        let mut c = LockCache::default();
        let sessions = vec![holder(1), waiter(2, &[1])];
        assert!(c.reuse(&sessions).is_none(), "nothing cached yet");
        c.store(&sessions, &HashMap::from([(2, lock("public.hot"))]));
        let got = c.reuse(&sessions).expect("same wait");
        assert_eq!(got[&2].relation.as_deref(), Some("public.hot"));
    }

    #[test]
    fn a_moving_blocker_or_waiter_or_a_new_waiter_forces_a_read() {
        let base = vec![holder(1), waiter(2, &[1])];
        let mut c = LockCache::default();
        c.store(&base, &HashMap::from([(2, lock("public.hot"))]));

        let mut moved = base.clone();
        moved[0].query_start = Some(t(9)); // blocker ran another statement
        assert!(c.reuse(&moved).is_none());

        let mut new_xact = base.clone();
        new_xact[0].xact_start = Some(t(9));
        assert!(c.reuse(&new_xact).is_none());

        let mut waiter_moved = base.clone();
        waiter_moved[1].query_start = Some(t(9));
        assert!(c.reuse(&waiter_moved).is_none());

        let mut other_blocker = base.clone();
        other_blocker.push(holder(3));
        other_blocker[1].blocked_by = vec![3];
        assert!(c.reuse(&other_blocker).is_none());

        let mut another_waiter = base.clone();
        another_waiter.push(waiter(4, &[1]));
        assert!(c.reuse(&another_waiter).is_none());

        assert!(c.reuse(&base).is_some(), "the original state still matches");
    }

    #[test]
    fn locks_are_reread_every_so_often_and_cleared_without_waiters() {
        let sessions = vec![holder(1), waiter(2, &[1])];
        let mut c = LockCache::default();
        c.store(&sessions, &HashMap::from([(2, lock("public.hot"))]));
        let reused = (0..LOCK_REREAD_EVERY)
            .take_while(|_| c.reuse(&sessions).is_some())
            .count();
        assert_eq!(reused as u32, LOCK_REREAD_EVERY - 1);
        assert_eq!(c.reuse(&[holder(1)]), Some(HashMap::new()));
        assert!(c.reuse(&sessions).is_none(), "cleared when nobody waited");
    }
}
