//! Lock-wait episodes: what a `LockNotAvailable` was, after it is over.
//!
//! A wait lasts `lock_timeout` (seconds); whoever looks at a failed test looks later. The
//! [`EpisodeTracker`] is fed snapshots in order (live, or from a recording) and collapses the
//! consecutive observations of one waiter's wait into an [`Episode`]: when it started (the server's
//! `waitstart`), whom it waited behind over time and whose transaction was at the root, and how it
//! ended. Pure: snapshots in, episodes out; the clock is the snapshots' own.
//!
//! One episode is one waiter session (`server`, `pid`, `backend_start`) waiting in one statement
//! (`query_start`) for one lock (type, mode, relation). How it ended is read from the first complete
//! observation in which it no longer waits, and only from what that observation shows:
//!
//! | seen after the wait | outcome |
//! |---|---|
//! | an observation gap happened since it was last seen waiting (its server unread, or snapshots too far apart) | `unknown` |
//! | the waiter session is gone | `waiter_gone` |
//! | the same statement now waits for another lock | `acquired` |
//! | every last blocker has disconnected | `blocker_gone` |
//! | a last blocker still runs the same transaction (locks are held to its end) | `gave_up` |
//! | every blocker's transaction ended | by the server's timestamps ([`judge_release`]): `acquired`, `gave_up` or `unknown` |
//!
//! An episode still open when the input ends is `ongoing`. Nothing is guessed across a gap.
//!
//! The error a waiter that gave up got is not in any view pgswarm reads (`pg_stat_activity` shows
//! no SQLSTATE, and other sessions' `lock_timeout` / `statement_timeout` settings are not visible).
//! People search for it by name, so a `gave_up` episode carries the SQLSTATE it most likely ended
//! with, marked `inferred` ([`infer_sqlstate`]): the statement ended while a blocker still held
//! the lock, which is what `lock_timeout` does (`LockNotAvailable`, 55P03; the naming
//! convention's plugin sets a 5 s `lock_timeout` on every connection). A `statement_timeout` or a
//! cancel (`QueryCanceled`, 57014) or a deadlock (`DeadlockDetected`, 40P01) would look the same.

use crate::domain::format::one_line;
use crate::domain::snapshot::{ReadStatus, SessionReport, Snapshot, WaitSource};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// The flight log's and `incidents --json`'s format version.
pub const EPISODES_VERSION: u32 = 1;

/// Two snapshots further apart than this are an observation gap: what happened between them is not
/// known.
pub const MAX_SAMPLE_GAP: Duration = Duration::from_secs(30);

/// An episode with at least this many sessions queued behind its root, or waiting at least
/// [`SEVERE_WAIT`], stands out.
pub const SEVERE_VICTIMS: usize = 3;
pub const SEVERE_WAIT: Duration = Duration::from_secs(30);

/// At most this many changes of blockers are kept per episode.
const MAX_TIMELINE: usize = 50;
/// Query text kept per session, in characters.
const QUERY_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The same statement went on: the lock was granted.
    Acquired,
    /// The statement ended while still waiting: `lock_timeout`, `statement_timeout` or a cancel.
    GaveUp,
    /// Every blocker disconnected.
    BlockerGone,
    /// The waiting session disconnected.
    WaiterGone,
    /// Still waiting when the input ended.
    Ongoing,
    /// An observation gap: how it ended was not seen.
    Unknown,
    /// The deadlock detector cancelled its statement (40P01; seen only in the server's log).
    Deadlock,
}

impl Outcome {
    /// At most 12 characters, for a column.
    pub fn short(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            other => other.words(),
        }
    }

    /// In words, for the pane and the text output.
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::GaveUp => "gave up",
            Outcome::BlockerGone => "blocker gone",
            Outcome::WaiterGone => "waiter gone",
            Outcome::Ongoing => "ongoing",
            Outcome::Unknown => "unknown (not observed)",
            Outcome::Deadlock => "deadlock",
        }
    }
}

/// Where an episode's SQLSTATE comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlstateSource {
    /// The error itself was seen, in the server's own log (`domain::serverlog`).
    Observed,
    /// Deduced from how the wait ended ([`infer_sqlstate`]).
    Inferred,
}

impl SqlstateSource {
    pub fn words(self) -> &'static str {
        match self {
            SqlstateSource::Observed => "observed",
            SqlstateSource::Inferred => "inferred",
        }
    }
}

/// What an episode was seen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The polls of `pg_stat_activity` / `pg_locks` saw it waiting.
    Poll,
    /// The server's own log (`jsonlog` / `csvlog`) reported how it ended.
    ServerLog,
}

/// Flight-log lines written before `evidence` existed came from the polls.
fn evidence_poll() -> Vec<Evidence> {
    vec![Evidence::Poll]
}

/// `lock_not_available`: what `lock_timeout` raises.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The SQLSTATE a waiter's statement most likely ended with, from how its wait ended: only
/// `gave_up` (the statement ended while a blocker still held the lock, or before the blocker's
/// transaction ended) implies an error, most likely `lock_timeout` (55P03). Every other outcome
/// implies none (the lock was granted, or the session went away).
pub fn infer_sqlstate(outcome: Outcome) -> Option<(&'static str, SqlstateSource)> {
    match outcome {
        Outcome::GaveUp => Some((LOCK_NOT_AVAILABLE, SqlstateSource::Inferred)),
        _ => None,
    }
}

/// The condition name client libraries raise for `code` (psycopg's `errors.LockNotAvailable`,
/// PostgreSQL's `lock_not_available`), for the few a lock wait can end with.
pub fn sqlstate_name(code: &str) -> Option<&'static str> {
    match code {
        "55P03" => Some("LockNotAvailable"),
        "57014" => Some("QueryCanceled"),
        "40P01" => Some("DeadlockDetected"),
        _ => None,
    }
}

/// A session that blocked the waiter at some point of the episode (as last seen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockerSeen {
    pub pid: i32,
    pub application_name: Option<String>,
    pub namespace: Option<String>,
    pub worker: Option<String>,
    pub suffix: Option<String>,
    pub state: Option<String>,
    pub idle_in_transaction: bool,
    /// Age of its transaction when last seen, seconds.
    pub xact_age_s: Option<f64>,
    pub query: Option<String>,
}

/// A change of whom the waiter waited behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub blocker_pids: Vec<i32>,
    pub root_pid: Option<i32>,
}

/// One lock wait, from its start to how it ended (JSON: one line of the flight log, one element of
/// `incidents --json`'s `episodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Stable across readers: server, pid, backend start and wait start.
    pub id: String,
    pub server: String,
    pub waiter_database: String,
    pub waiter_pid: i32,
    pub waiter_backend_start: Option<DateTime<Utc>>,
    pub waiter_application_name: String,
    pub waiter_namespace: Option<String>,
    pub waiter_worker: Option<String>,
    pub waiter_suffix: Option<String>,
    pub waiter_query: Option<String>,
    pub lock_type: Option<String>,
    pub lock_mode: Option<String>,
    pub relation: Option<String>,
    /// The wait in words, as the dashboard and the report say it.
    pub wait: Option<String>,
    /// Every session the waiter waited behind during the episode.
    pub blocker_pids: Vec<i32>,
    pub blocker_namespaces: Vec<String>,
    pub blockers: Vec<BlockerSeen>,
    /// The root blocker last seen.
    pub root_pid: Option<i32>,
    pub root_namespace: Option<String>,
    pub cross_invocation: bool,
    pub blocker_idle_in_transaction: bool,
    /// Most sessions queued behind the root at once.
    pub victims_max: usize,
    pub severe: bool,
    /// `waitstart` (exact), else the statement's start or the first observation (an upper bound of
    /// the start: see `started_exact`).
    pub started_at: DateTime<Utc>,
    pub started_exact: bool,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it ended: the waiter's statement end where the server shows it, else the first
    /// observation that saw it over (an upper bound). `None` while ongoing or unknown.
    pub ended_at: Option<DateTime<Utc>>,
    /// From start to end (or to the last observation while ongoing or unknown).
    pub duration_s: f64,
    pub outcome: Outcome,
    /// The SQLSTATE its statement ended with, when an outcome implies one (`55P03` for `gave_up`);
    /// null otherwise. Absent in flight logs written before it existed (filled in on reading).
    #[serde(default)]
    pub sqlstate: Option<String>,
    /// Whether `sqlstate` was seen or deduced (today always `inferred`); null without a SQLSTATE.
    #[serde(default)]
    pub sqlstate_source: Option<SqlstateSource>,
    /// Observations of it waiting.
    pub samples: usize,
    pub timeline: Vec<TimelineEntry>,
    /// What saw it: `poll`, `server_log`, or both. Lines written before it existed came from the
    /// polls.
    #[serde(default = "evidence_poll")]
    pub evidence: Vec<Evidence>,
    /// Outcome `deadlock`: the pids of the cycle the server reported, the waiter's included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deadlock_pids: Vec<i32>,
    /// Why no blocker is named (`blocker unknown: ...`), when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker_note: Option<String>,
}

impl Episode {
    /// Whether it involves namespace `ns`, as the waiter or as a blocker.
    pub fn involves(&self, ns: &str) -> bool {
        self.waiter_namespace.as_deref() == Some(ns)
            || self.blocker_namespaces.iter().any(|b| b == ns)
    }

    /// `LockNotAvailable (55P03)`: the error in the words people search for, if any.
    pub fn error_words(&self) -> Option<String> {
        let code = self.sqlstate.as_deref()?;
        Some(match sqlstate_name(code) {
            Some(name) => format!("{name} ({code})"),
            None => code.to_string(),
        })
    }

    /// Sets `sqlstate` from the outcome when nothing set it (a line written before the field
    /// existed); an observed SQLSTATE is never replaced.
    pub fn fill_sqlstate(&mut self) {
        if self.sqlstate.is_none() {
            let inferred = infer_sqlstate(self.outcome);
            self.sqlstate = inferred.map(|(c, _)| c.to_string());
            self.sqlstate_source = inferred.map(|(_, s)| s);
        }
    }

    /// The time it is sorted by: its end, else its last observation.
    pub fn sort_time(&self) -> DateTime<Utc> {
        self.ended_at.unwrap_or(self.last_seen_at)
    }
}

/// What identifies one waiter's statement: an episode is one wait of it. The awaited lock is kept
/// in [`Open`], not here, because the lock details can be missing from one observation (the locks
/// are read after the activity, and a wait can end in between) without the wait having changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    server: String,
    pid: i32,
    backend_start: Option<DateTime<Utc>>,
    query_start: Option<DateTime<Utc>>,
}

impl Key {
    fn of(s: &SessionReport) -> Key {
        Key {
            server: s.server.clone(),
            pid: s.pid,
            backend_start: s.backend_start,
            query_start: s.query_start,
        }
    }

    fn same_session(&self, s: &SessionReport) -> bool {
        s.server == self.server && s.pid == self.pid && s.backend_start == self.backend_start
    }
}

/// `database:1234`: a relation whose name could not be resolved.
fn unresolved_relation(r: &str) -> bool {
    r.rsplit_once(':')
        .is_some_and(|(_, oid)| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
}

/// The lock one statement waits for, as far as an observation shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Awaited {
    lock_type: Option<String>,
    lock_mode: Option<String>,
    relation: Option<String>,
    /// The server's `waitstart`, when shown.
    waitstart: Option<DateTime<Utc>>,
}

impl Awaited {
    fn of(s: &SessionReport) -> Awaited {
        Awaited {
            lock_type: s.lock_type.clone(),
            lock_mode: s.lock_mode.clone(),
            relation: s.relation.clone(),
            waitstart: match s.wait_source {
                Some(WaitSource::Waitstart) => s.wait_started_at,
                _ => None,
            },
        }
    }

    /// Whether `other` can be the same wait: every detail both show is equal.
    fn same_wait(&self, other: &Awaited) -> bool {
        fn agree<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        // A relation seen only as `database:oid` (from a configuration that does not name its
        // database) cannot be told from its resolved name: it agrees with anything.
        let resolved = |r: &Option<String>| r.clone().filter(|r| !unresolved_relation(r));
        agree(&self.lock_type, &other.lock_type)
            && agree(&self.lock_mode, &other.lock_mode)
            && agree(&resolved(&self.relation), &resolved(&other.relation))
            && agree(&self.waitstart, &other.waitstart)
    }

    /// Fills in what this observation did not show from `other` (a resolved relation name
    /// replaces an unresolved one).
    fn fill_from(&mut self, other: &Awaited) {
        if self.relation.as_deref().is_some_and(unresolved_relation)
            && other
                .relation
                .as_deref()
                .is_some_and(|r| !unresolved_relation(r))
        {
            self.relation.clone_from(&other.relation);
        }
        fn fill<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        fill(&mut self.lock_type, &other.lock_type);
        fill(&mut self.lock_mode, &other.lock_mode);
        fill(&mut self.relation, &other.relation);
        fill(&mut self.waitstart, &other.waitstart);
    }
}

/// An episode being observed, with what its end is judged by.
#[derive(Debug, Clone)]
struct Open {
    episode: Episode,
    /// The lock it waits for, details merged over its observations.
    awaited: Awaited,
    /// The last blockers, as last seen.
    last_blockers: Vec<BlockerMark>,
    /// A gap happened since it was last seen waiting.
    gap: bool,
}

/// Who a blocker was (pid and backend start: a pid can be reused) and which transaction it ran
/// (`None`: not visible to this role, or a prepared transaction without a session).
#[derive(Debug, Clone)]
struct BlockerMark {
    pid: i32,
    backend_start: Option<DateTime<Utc>>,
    xact_start: Option<DateTime<Utc>>,
    visible: bool,
}

/// Collapses snapshots into episodes. Feed snapshots in time order with [`EpisodeTracker::observe`].
#[derive(Debug, Default, Clone)]
pub struct EpisodeTracker {
    open: HashMap<Key, Open>,
    last_at: Option<DateTime<Utc>>,
}

impl EpisodeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next snapshot; returns the episodes that ended in it (oldest first).
    pub fn observe(&mut self, snap: &Snapshot) -> Vec<Episode> {
        if self.last_at == Some(snap.taken_at) {
            // The same snapshot again (a recording appended twice): nothing new to count.
            return Vec::new();
        }
        if self.open.is_empty() && snap.sessions.iter().all(|s| s.blocked_by.is_empty()) {
            // Nothing waits and nothing was waiting (most polls): one scan, no index built.
            self.last_at = Some(self.last_at.map_or(snap.taken_at, |t| t.max(snap.taken_at)));
            return Vec::new();
        }
        let read = read_servers(snap);
        if self
            .last_at
            .is_some_and(|t| (snap.taken_at - t).to_std().unwrap_or_default() > MAX_SAMPLE_GAP)
        {
            for o in self.open.values_mut() {
                o.gap = true;
            }
        }
        self.last_at = Some(self.last_at.map_or(snap.taken_at, |t| t.max(snap.taken_at)));
        let view = SnapshotView::new(snap);
        let mut seen: HashSet<Key> = HashSet::new();
        let mut ended = Vec::new();
        for s in &snap.sessions {
            if s.blocked_by.is_empty() || !read.contains(s.server.as_str()) {
                continue;
            }
            let key = Key::of(s);
            seen.insert(key.clone());
            let awaited = Awaited::of(s);
            match self.open.get_mut(&key) {
                Some(o) if o.awaited.same_wait(&awaited) => {
                    o.awaited.fill_from(&awaited);
                    // Filled-in details belong to the episode too.
                    let (e, a) = (&mut o.episode, &o.awaited);
                    e.lock_type.clone_from(&a.lock_type);
                    e.lock_mode.clone_from(&a.lock_mode);
                    e.relation.clone_from(&a.relation);
                    update(o, &view, s);
                }
                Some(_) => {
                    // The same statement waits for another lock: it got the one before.
                    let o = self.open.remove(&key).expect("matched");
                    ended.push(moved_on(o, &view, &awaited));
                    self.open.insert(key, start(&view, s));
                }
                None => {
                    self.open.insert(key, start(&view, s));
                }
            }
        }
        let keys: Vec<Key> = self.open.keys().cloned().collect();
        for key in keys {
            if seen.contains(&key) {
                continue;
            }
            if !read.contains(key.server.as_str()) {
                self.open.get_mut(&key).expect("listed").gap = true;
                continue;
            }
            let o = self.open.remove(&key).expect("listed");
            ended.push(finish(o, &key, &view));
        }
        // Episodes that end in the same snapshot come out of a hash map: order them by id too, so
        // the same history always reads the same.
        ended.sort_by(|a, b| (a.sort_time(), &a.id).cmp(&(b.sort_time(), &b.id)));
        ended
    }

    /// The episodes still open, as they stand (outcome `ongoing`).
    pub fn ongoing(&self) -> Vec<Episode> {
        let mut v: Vec<Episode> = self.open.values().map(|o| o.episode.clone()).collect();
        v.sort_by_key(|e| e.started_at);
        v
    }

    /// Ends the input: every open episode as `ongoing` (or `unknown` after a gap).
    pub fn finish(self) -> Vec<Episode> {
        let mut v: Vec<Episode> = self
            .open
            .into_values()
            .map(|o| {
                let mut e = o.episode;
                e.outcome = if o.gap {
                    Outcome::Unknown
                } else {
                    Outcome::Ongoing
                };
                e
            })
            .collect();
        v.sort_by_key(|e| e.started_at);
        v
    }
}

/// Builds every episode of a sequence of snapshots (a recording), open ones last as `ongoing`.
pub fn episodes_of<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Vec<Episode> {
    let mut tracker = EpisodeTracker::new();
    let mut out = Vec::new();
    for s in snapshots {
        out.extend(tracker.observe(s));
    }
    out.extend(tracker.finish());
    out
}

/// Servers whose activity this snapshot read now (not carried forward, not failed).
fn read_servers(snap: &Snapshot) -> BTreeSet<&str> {
    let mut read = BTreeSet::new();
    let mut unread = BTreeSet::new();
    for d in &snap.databases {
        let Some(server) = d.server.as_deref() else {
            continue;
        };
        match d.read {
            ReadStatus::Read | ReadStatus::SchemasFailed => read.insert(server),
            _ => unread.insert(server),
        };
    }
    read.retain(|s| !unread.contains(s));
    read
}

/// Lookups into one snapshot.
struct SnapshotView<'a> {
    snap: &'a Snapshot,
    sessions: HashMap<(&'a str, i32), &'a SessionReport>,
}

impl<'a> SnapshotView<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        SnapshotView {
            snap,
            sessions: snap
                .sessions
                .iter()
                .map(|s| ((s.server.as_str(), s.pid), s))
                .collect(),
        }
    }

    fn session(&self, server: &str, pid: i32) -> Option<&'a SessionReport> {
        self.sessions.get(&(server, pid)).copied()
    }

    /// The root of the tree the waiter is in, and how many wait behind that root.
    fn root_of(&self, s: &SessionReport) -> (Option<i32>, usize) {
        let edge = self.snap.blocking.iter().find(|e| {
            e.server == s.server && e.blocked_pid == s.pid && s.blocked_by.contains(&e.blocker_pid)
        });
        let root = edge.map(|e| e.root_pid);
        let victims = root
            .and_then(|r| {
                self.snap
                    .lock_trees
                    .iter()
                    .find(|t| t.server == s.server && t.root_pid == r)
            })
            .map_or(0, |t| t.victims);
        (root, victims)
    }

    /// The wait phrase of the edge to the first blocker.
    fn wait_phrase(&self, s: &SessionReport) -> Option<String> {
        self.snap
            .blocking
            .iter()
            .find(|e| e.server == s.server && e.blocked_pid == s.pid)
            .map(|e| e.wait.clone())
    }

    fn age_s(&self, t: DateTime<Utc>) -> f64 {
        ((self.snap.taken_at - t).num_milliseconds() as f64 / 1000.0).max(0.0)
    }
}

fn start(view: &SnapshotView, s: &SessionReport) -> Open {
    let at = view.snap.taken_at;
    let (started_at, started_exact) = match (s.wait_started_at, s.wait_source) {
        (Some(t), Some(WaitSource::Waitstart)) => (t, true),
        (Some(t), _) => (t, false),
        (None, _) => (at, false),
    };
    let episode = Episode {
        id: format!(
            "{}/{}/{}/{}",
            s.server,
            s.pid,
            s.backend_start.map_or(0, |t| t.timestamp_micros()),
            started_at.timestamp_micros()
        ),
        server: s.server.clone(),
        waiter_database: s.database.clone(),
        waiter_pid: s.pid,
        waiter_backend_start: s.backend_start,
        waiter_application_name: s.application_name.clone(),
        waiter_namespace: s.namespace.clone(),
        waiter_worker: s.worker.clone(),
        waiter_suffix: s.suffix.clone(),
        waiter_query: s.query.as_deref().map(|q| one_line(q, QUERY_CHARS)),
        lock_type: s.lock_type.clone(),
        lock_mode: s.lock_mode.clone(),
        relation: s.relation.clone(),
        wait: None,
        blocker_pids: Vec::new(),
        blocker_namespaces: Vec::new(),
        blockers: Vec::new(),
        root_pid: None,
        root_namespace: None,
        cross_invocation: false,
        blocker_idle_in_transaction: false,
        victims_max: 0,
        severe: false,
        started_at,
        started_exact,
        first_seen_at: at,
        last_seen_at: at,
        ended_at: None,
        duration_s: 0.0,
        outcome: Outcome::Ongoing,
        sqlstate: None,
        sqlstate_source: None,
        samples: 0,
        timeline: Vec::new(),
        evidence: vec![Evidence::Poll],
        deadlock_pids: Vec::new(),
        blocker_note: None,
    };
    let mut open = Open {
        episode,
        awaited: Awaited::of(s),
        last_blockers: Vec::new(),
        gap: false,
    };
    update(&mut open, view, s);
    open
}

/// One more observation of the waiter still waiting.
fn update(o: &mut Open, view: &SnapshotView, s: &SessionReport) {
    let at = view.snap.taken_at;
    let e = &mut o.episode;
    e.samples += 1;
    e.last_seen_at = e.last_seen_at.max(at);
    // A gap while it kept waiting in the same statement is no gap in what is known of it.
    o.gap = false;
    if e.wait.is_none() {
        e.wait = view.wait_phrase(s);
    }
    let mut blockers = s.blocked_by.clone();
    blockers.sort_unstable();
    o.last_blockers = blockers
        .iter()
        .map(|&b| {
            let x = view.session(&s.server, b);
            BlockerMark {
                pid: b,
                backend_start: x.and_then(|x| x.backend_start),
                xact_start: x.and_then(|x| x.xact_start),
                visible: x.is_some_and(|x| x.xact_start.is_some()),
            }
        })
        .collect();
    for &b in &blockers {
        note_blocker(e, view, &s.server, b);
    }
    let (root, victims) = view.root_of(s);
    e.victims_max = e.victims_max.max(victims);
    if let Some(r) = root {
        e.root_pid = Some(r);
        e.root_namespace = view.session(&s.server, r).and_then(|x| x.namespace.clone());
    }
    let changed = e
        .timeline
        .last()
        .is_none_or(|t| t.blocker_pids != blockers || t.root_pid != root);
    if changed && e.timeline.len() < MAX_TIMELINE {
        e.timeline.push(TimelineEntry {
            at,
            blocker_pids: blockers,
            root_pid: root,
        });
    }
    refresh_derived(e, at);
}

fn note_blocker(e: &mut Episode, view: &SnapshotView, server: &str, pid: i32) {
    let b = view.session(server, pid);
    let seen = BlockerSeen {
        pid,
        application_name: b.map(|x| x.application_name.clone()),
        namespace: b.and_then(|x| x.namespace.clone()),
        worker: b.and_then(|x| x.worker.clone()),
        suffix: b.and_then(|x| x.suffix.clone()),
        state: b.and_then(|x| x.state.clone()),
        idle_in_transaction: b
            .and_then(|x| x.state.as_deref())
            .is_some_and(|st| st.starts_with("idle in transaction")),
        xact_age_s: b.and_then(|x| x.xact_start).map(|t| view.age_s(t)),
        query: b
            .and_then(|x| x.query.as_deref())
            .map(|q| one_line(q, QUERY_CHARS)),
    };
    if let Some(ns) = &seen.namespace {
        if !e.blocker_namespaces.contains(ns) {
            e.blocker_namespaces.push(ns.clone());
        }
        if e.waiter_namespace.as_ref().is_some_and(|w| w != ns) {
            e.cross_invocation = true;
        }
    }
    e.blocker_idle_in_transaction |= seen.idle_in_transaction;
    if !e.blocker_pids.contains(&pid) {
        e.blocker_pids.push(pid);
    }
    match e.blockers.iter_mut().find(|x| x.pid == pid) {
        Some(x) => *x = seen,
        None => e.blockers.push(seen),
    }
}

fn refresh_derived(e: &mut Episode, now: DateTime<Utc>) {
    // Polls never see the error itself: the SQLSTATE follows the outcome as it stands.
    e.sqlstate = None;
    e.fill_sqlstate();
    let end = e.ended_at.unwrap_or(now);
    e.duration_s = ((end - e.started_at).num_milliseconds() as f64 / 1000.0).max(0.0);
    e.severe = e.victims_max >= SEVERE_VICTIMS || e.duration_s >= SEVERE_WAIT.as_secs_f64();
}

/// The episode is over in `view` (a complete read of its server): how, by the table above.
fn finish(mut o: Open, key: &Key, view: &SnapshotView) -> Episode {
    let now = view.snap.taken_at;
    let waiter = view.snap.sessions.iter().find(|s| key.same_session(s));
    let outcome = if o.gap {
        Outcome::Unknown
    } else {
        judge_end(&o, key, waiter, view)
    };
    let e = &mut o.episode;
    e.outcome = outcome;
    if outcome != Outcome::Unknown {
        // The statement's end is exact when the waiter's state changed after it was last seen.
        let statement_end = waiter
            .filter(|w| w.state.as_deref() != Some("active"))
            .and_then(|w| w.state_change)
            .filter(|&t| t >= e.last_seen_at.min(e.started_at) && t <= now);
        e.ended_at = Some(statement_end.unwrap_or(now));
    }
    let last = e.ended_at.unwrap_or(e.last_seen_at);
    refresh_derived(e, last);
    o.episode
}

/// The statement the episode belongs to waits for another lock (`next`): the first was granted.
/// It ended when the next wait started, where the server shows that, else by this observation.
fn moved_on(mut o: Open, view: &SnapshotView, next: &Awaited) -> Episode {
    let now = view.snap.taken_at;
    let e = &mut o.episode;
    e.outcome = if o.gap {
        Outcome::Unknown
    } else {
        Outcome::Acquired
    };
    if e.outcome == Outcome::Acquired {
        let end = next
            .waitstart
            .filter(|&t| t >= e.started_at && t <= now)
            .unwrap_or(now);
        e.ended_at = Some(end);
    }
    let last = e.ended_at.unwrap_or(e.last_seen_at);
    refresh_derived(e, last);
    o.episode
}

fn judge_end(o: &Open, key: &Key, waiter: Option<&SessionReport>, view: &SnapshotView) -> Outcome {
    let Some(w) = waiter else {
        return Outcome::WaiterGone;
    };
    if !w.blocked_by.is_empty() && w.query_start == key.query_start {
        return Outcome::Acquired;
    }
    // Each last blocker now: still in the same transaction, gone, or its transaction ended (and
    // when, as far as this observation shows).
    let mut holding = 0;
    let mut gone = 0;
    let mut released: Vec<Release> = Vec::new();
    for b in &o.last_blockers {
        let now = view
            .session(&key.server, b.pid)
            .filter(|x| x.backend_start == b.backend_start);
        match now {
            None if b.pid != 0 => gone += 1,
            // Its transaction was not visible, or it has no session: whether it still holds the
            // lock cannot be told.
            _ if !b.visible => return Outcome::Unknown,
            Some(x) if x.xact_start == b.xact_start => holding += 1,
            Some(x) => released.push(Release::of(x)),
            None => return Outcome::Unknown,
        }
    }
    let n = o.last_blockers.len();
    if n > 0 && gone == n {
        return Outcome::BlockerGone;
    }
    if holding > 0 {
        // A blocker still holds its lock: the waiter's statement ended without it.
        return Outcome::GaveUp;
    }
    if gone > 0 || released.is_empty() {
        // Some disconnected at a moment not seen.
        return Outcome::Unknown;
    }
    judge_release(key, w, &released, o.episode.waiter_query.as_deref())
}

/// When a blocker's transaction ended (and its locks came free), as far as its session shows:
/// between `from` and `to`, either bound unknown (`None`).
#[derive(Debug, Clone, Copy)]
struct Release {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl Release {
    fn of(x: &SessionReport) -> Release {
        let ended_by_last_statement = x.query.as_deref().is_some_and(|q| {
            let q = q.trim_start().to_ascii_lowercase();
            ["commit", "end", "rollback", "abort"]
                .iter()
                .any(|k| q.starts_with(k))
        });
        match x.xact_start {
            // Idle, and its last statement ended the transaction: the locks came free while it
            // ran.
            None if ended_by_last_statement => Release {
                from: x.query_start,
                to: x.state_change,
            },
            // Idle after other statements: before the latest one started.
            None => Release {
                from: None,
                to: x.query_start,
            },
            // In a newer transaction: before that one started.
            Some(t) => Release {
                from: None,
                to: Some(t),
            },
        }
    }
}

/// How soon after the locks came free an extended-protocol client's Execute follows the Parse that
/// waited for them.
const EXECUTE_AFTER_PARSE: chrono::TimeDelta = chrono::TimeDelta::milliseconds(50);

/// A failed statement must end this clearly after the locks came free to have had the lock: a
/// timeout can fire at that very moment.
const SAME_MOMENT: chrono::TimeDelta = chrono::TimeDelta::milliseconds(2);

/// Every blocker's transaction ended: did the waiter's statement get the lock, or end before it came
/// free? Decided from the server's timestamps and the waiter's state, never guessed:
///
/// - the same statement still runs (not waiting), or it ended inside a transaction that is not
///   aborted (it succeeded): it got the lock;
/// - it ended before the blocker's `COMMIT`/`ROLLBACK` started: it gave up;
/// - it ended after the locks came free (a failed statement: by more than [`SAME_MOMENT`]): it got
///   the lock, and if it failed, failed afterwards;
/// - it succeeded (autocommit) while the blocker's `COMMIT` ran (under a millisecond): it got the
///   lock;
/// - otherwise (a moment not shown, or too close to call): unknown.
fn judge_release(
    key: &Key,
    w: &SessionReport,
    released: &[Release],
    waiting_query: Option<&str>,
) -> Outcome {
    let same_statement = w.query_start == key.query_start;
    let aborted = w.state.as_deref() == Some("idle in transaction (aborted)");
    if same_statement && w.state.as_deref() == Some("active") {
        return Outcome::Acquired;
    }
    let same_transaction = w
        .xact_start
        .zip(key.query_start)
        .is_some_and(|(x, q)| x <= q);
    if !aborted && same_transaction {
        return Outcome::Acquired;
    }
    // The locks came free when the last blocker's transaction ended.
    let from = released.iter().filter_map(|r| r.from).max();
    let to = released
        .iter()
        .map(|r| r.to)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    // The waiter's statement ended at its state change; in a later statement, only before that.
    let (end, end_exact) = if same_statement {
        (w.state_change, true)
    } else {
        (w.query_start, false)
    };
    let Some(end) = end else {
        return Outcome::Unknown;
    };
    let all_from = released.iter().all(|r| r.from.is_some());
    if from.is_some_and(|f| end < f) && all_from {
        return Outcome::GaveUp;
    }
    if !end_exact {
        // The same text started again as the locks came free: an extended-protocol client waited
        // in Parse (which takes the table's lock) and then executed it.
        let same_text = waiting_query.is_some_and(|q| {
            w.query
                .as_deref()
                .map(|x| one_line(x, QUERY_CHARS))
                .as_deref()
                == Some(q)
        });
        let just_after = from
            .zip(to)
            .is_some_and(|(f, t)| end >= f && end <= t + EXECUTE_AFTER_PARSE);
        if same_text && just_after && all_from && !aborted {
            return Outcome::Acquired;
        }
        return Outcome::Unknown;
    }
    let margin = if aborted {
        SAME_MOMENT
    } else {
        chrono::TimeDelta::zero()
    };
    if to.is_some_and(|t| end > t + margin) {
        return Outcome::Acquired;
    }
    if !aborted && from.is_some_and(|f| end >= f) && released.iter().all(|r| r.from.is_some()) {
        return Outcome::Acquired;
    }
    Outcome::Unknown
}

#[cfg(test)]
mod tests;
