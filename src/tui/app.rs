//! Dashboard state and its update function: events in, effects out. No I/O, no awaiting, no clock
//! (time arrives inside events), so every key sequence is a plain unit test.
//!
//! Selection is kept by *identity* (a namespace, a session in a tree, a schema), never by row number,
//! so a refresh that reorders rows cannot move the cursor to another item; and for a moment after a
//! navigation key the row order itself is frozen, so a row does not jump away under the cursor.

use crate::domain::aggregate::Aggregator;
use crate::domain::incidents::{episodes_of, Episode, Outcome};
use crate::domain::signal::{
    plan_signal, Action as SignalAction, Selector, SignalPlan, SignalReport,
};
use crate::domain::snapshot::{Convention, Snapshot};
use crate::domain::sweep::SweepPlan;
use crate::domain::sweep::SweepReport;
use crate::pg::poller::GroupResult;
use crate::tui::keys::{action_for, Action};
use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How far `[` and `]` seek in a replay.
pub const SEEK_STEP: Duration = Duration::from_secs(60);
/// How long the row order stays frozen after a navigation key.
pub const FREEZE: Duration = Duration::from_millis(2_000);
/// Refresh interval bounds and the steps `+`/`-` move through.
pub const INTERVAL_MIN: Duration = Duration::from_millis(250);
pub const INTERVAL_MAX: Duration = Duration::from_secs(60);
const INTERVAL_STEPS_MS: &[u64] = &[250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000];
const PAGE: usize = 10;
/// Public writes kept for the Incidents pane.
pub const MAX_PUBLIC_WRITES: usize = 20;

/// Ended lock-wait episodes kept for the Incidents pane (the flight log keeps the rest).
pub const MAX_INCIDENTS: usize = 200;
/// Sessions remembered after they left (the detail of a row whose session has gone shows its
/// last-seen state): the newest this many, so a swarm that churns connections costs a bounded
/// amount of memory.
pub const MAX_LAST_SEEN: usize = 512;

/// A session that left: its state as last seen, and when.
#[derive(Debug, Clone)]
pub struct Gone {
    pub session: crate::domain::snapshot::SessionReport,
    /// The `taken_at` of the last snapshot it was in.
    pub last_seen_at: DateTime<Utc>,
}

/// What the header shows of the live state while paused: probe times and unreachable-since
/// times as they were at the pause.
type HeaderAtPause = (HashMap<String, Duration>, HashMap<String, DateTime<Utc>>);

/// The newest [`MAX_LAST_SEEN`] sessions that left, newest last.
#[derive(Debug, Clone, Default)]
pub struct LastSeen {
    gone: std::collections::VecDeque<Gone>,
}

impl LastSeen {
    /// Remembers every session of `before` that is not in `after` (same server, pid and backend
    /// start).
    pub fn record(&mut self, before: &Snapshot, after: &Snapshot) {
        let present: std::collections::HashSet<(&str, i32, Option<DateTime<Utc>>)> = after
            .sessions
            .iter()
            .map(|s| (s.server.as_str(), s.pid, s.backend_start))
            .collect();
        for s in &before.sessions {
            if !present.contains(&(s.server.as_str(), s.pid, s.backend_start)) {
                self.gone
                    .retain(|g| !(g.session.server == s.server && g.session.pid == s.pid));
                self.gone.push_back(Gone {
                    session: s.clone(),
                    last_seen_at: before.taken_at,
                });
            }
        }
        while self.gone.len() > MAX_LAST_SEEN {
            self.gone.pop_front();
        }
    }

    /// The newest session that left with this server and pid.
    pub fn find(&self, server: &str, pid: i32) -> Option<&Gone> {
        self.gone
            .iter()
            .rev()
            .find(|g| g.session.server == server && g.session.pid == pid)
    }

    pub fn len(&self) -> usize {
        self.gone.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gone.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Invocations,
    Schemas,
    Locks,
    Incidents,
    /// Every session, pg_activity's everyday list: drawn in the Invocations pane's place (`s`).
    Sessions,
}

impl Pane {
    /// Every pane; [`App::panes`] says which four are on screen, in Tab order.
    pub const ALL: [Pane; 5] = [
        Pane::Invocations,
        Pane::Schemas,
        Pane::Locks,
        Pane::Incidents,
        Pane::Sessions,
    ];
    fn index(self) -> usize {
        self as usize
    }
    pub fn title(self) -> &'static str {
        match self {
            Pane::Invocations => "Invocations",
            Pane::Locks => "Lock trees",
            Pane::Schemas => "Schemas",
            Pane::Incidents => "Incidents",
            Pane::Sessions => "Sessions",
        }
    }
}

/// How the Sessions pane is ordered (`o` on it cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionSort {
    /// Longest lock wait first, then blockers, then the longest transaction.
    #[default]
    Wait,
    XactAge,
    QueryAge,
    /// By run (namespace), worker and pid.
    Run,
    Pid,
}

impl SessionSort {
    pub fn next(self) -> Self {
        use SessionSort::*;
        match self {
            Wait => XactAge,
            XactAge => QueryAge,
            QueryAge => Run,
            Run => Pid,
            Pid => Wait,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SessionSort::Wait => "wait",
            SessionSort::XactAge => "xact age",
            SessionSort::QueryAge => "query age",
            SessionSort::Run => "run",
            SessionSort::Pid => "pid",
        }
    }
}

/// Which age the Sessions pane's TIME column shows (`T` cycles, as pg_activity's duration mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurationMode {
    #[default]
    Query,
    Transaction,
    Backend,
}

impl DurationMode {
    pub fn next(self) -> Self {
        match self {
            DurationMode::Query => DurationMode::Transaction,
            DurationMode::Transaction => DurationMode::Backend,
            DurationMode::Backend => DurationMode::Query,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DurationMode::Query => "query",
            DurationMode::Transaction => "xact",
            DurationMode::Backend => "backend",
        }
    }

    /// When the age shown for `s` starts.
    pub fn start_of(self, s: &crate::domain::snapshot::SessionReport) -> Option<DateTime<Utc>> {
        match self {
            DurationMode::Query => s.query_start,
            DurationMode::Transaction => s.xact_start,
            DurationMode::Backend => s.backend_start,
        }
    }
}

/// How the Invocations pane is ordered (`o` cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvocationSort {
    /// Trouble first: collisions, then blocked, blocking, live; as the snapshot orders them.
    #[default]
    Trouble,
    /// Oldest run first.
    Age,
    /// Most blocked sessions first.
    Blocked,
    /// Most sessions first.
    Sessions,
    /// By namespace.
    Name,
}

impl InvocationSort {
    pub fn next(self) -> Self {
        use InvocationSort::*;
        match self {
            Trouble => Age,
            Age => Blocked,
            Blocked => Sessions,
            Sessions => Name,
            Name => Trouble,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            InvocationSort::Trouble => "trouble",
            InvocationSort::Age => "age",
            InvocationSort::Blocked => "blocked",
            InvocationSort::Sessions => "sessions",
            InvocationSort::Name => "name",
        }
    }
}

/// What a row stands for, stable across refreshes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    Invocation(String),
    /// Sessions that carry no namespace (unlabeled or unattributed).
    OtherSessions,
    Lock {
        server: String,
        root: i32,
        parent: Option<i32>,
        pid: i32,
    },
    Schema {
        database: String,
        schema: String,
    },
    /// A lock-wait episode, by its id.
    Incident(String),
    /// A row of the Sessions pane.
    Session {
        server: String,
        pid: i32,
    },
}

impl RowKey {
    /// The session a row stands for (a Lock trees or a Sessions row).
    pub fn session(&self) -> Option<(&str, i32)> {
        match self {
            RowKey::Lock { server, pid, .. } | RowKey::Session { server, pid } => {
                Some((server.as_str(), *pid))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    Detail(RowKey),
    Sweep(SweepView),
    Signal(SignalView),
}

/// The cancel / terminate overlay. The plan shown is the plan sent: polls never touch it.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalView {
    Plan(Box<SignalPlan>),
    Running(Box<SignalPlan>),
    Finished(Box<SignalReport>),
    /// Nothing to act on, and why.
    Nothing(String),
    /// `--read-only`, or a replay.
    Disabled,
}

/// The sweep overlay's stages. The plan shown is the plan run: polls never touch it.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepView {
    /// Discovery is running off the UI thread.
    Planning,
    Plan(Box<SweepPlan>),
    Running {
        plan: Box<SweepPlan>,
        done: usize,
        current: Option<String>,
    },
    Finished(Box<SweepReport>),
    /// `--read-only`: the key is disabled.
    Disabled,
}

#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    Tick(DateTime<Utc>),
    /// A raw poll result: aggregated inline (tests; see [`Aggregator`]).
    Poll(GroupResult, DateTime<Utc>),
    /// A snapshot already built off the UI thread, with per-database probe latencies.
    Snapshot(Arc<Snapshot>, Vec<(String, Duration)>, DateTime<Utc>),
    /// The plan of sweep discovery request `.0`.
    SweepPlanned(u64, Box<SweepPlan>),
    SweepProgress {
        done: usize,
        current: Option<String>,
    },
    SweepFinished(Box<SweepReport>),
    /// The signals of the confirmed plan were sent.
    SignalDone(Box<SignalReport>),
    /// Lock-wait episodes: those that just ended, and those still going on.
    Episodes {
        ended: Vec<Episode>,
        ongoing: Vec<Episode>,
    },
    /// The flight log could not be written (shown under the Incidents pane until a write works).
    FlightLog(Result<(), String>),
    /// The server the picture is read from (`--server`) stopped answering (`Some(reason)`) or
    /// answers again (`None`), noticed at this time.
    Source(Option<String>, DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Quit,
    Refresh,
    SetInterval(Duration),
    /// Discover and plan a sweep (off the UI thread) as request `.0`; answer with
    /// [`Event::SweepPlanned`] carrying the same number.
    PlanSweep(u64),
    /// Run exactly this plan; answer with progress and [`Event::SweepFinished`].
    RunSweep(Box<SweepPlan>),
    /// Ring the terminal bell (`--bell`: a new collision between invocations).
    Bell,
    /// Send exactly this plan's signals; answer with [`Event::SignalDone`].
    Signal(Box<SignalPlan>),
}

/// A row of the lock-tree pane: an index into `snapshot.lock_trees[tree].rows[row]`.
#[derive(Debug, Clone)]
pub struct LockRow {
    pub key: RowKey,
    pub tree: usize,
    pub row: usize,
}

/// What the view draws: the snapshot and its rows after filter and order.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Shared with the aggregator (and a recorder): installing or rebuilding never copies it.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Index into `snapshot.invocations`, `None` for the other-sessions group.
    pub invocations: Vec<(RowKey, Option<usize>)>,
    pub locks: Vec<LockRow>,
    pub schemas: Vec<(RowKey, usize)>,
    /// Index into `App::episodes`, newest first, after filter (and, replaying, up to the clock).
    pub incidents: Vec<(RowKey, usize)>,
    /// Index into `snapshot.sessions`, after filter, in the Sessions pane's order.
    pub sessions: Vec<(RowKey, usize)>,
    /// (server, pid) -> index into `snapshot.sessions`.
    pub session_index: HashMap<(String, i32), usize>,
    /// (server, blocker, blocked) -> index into `snapshot.blocking`.
    pub edge_index: HashMap<(String, i32, i32), usize>,
}

fn matches_filter(filter: &str, fields: &[Option<&str>]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let f = filter.to_lowercase();
    fields
        .iter()
        .flatten()
        .any(|v| v.to_lowercase().contains(&f))
}

/// Invocations matching the filter (namespace, worker or database), then one row for the sessions
/// no invocation owns, if any matches.
fn invocation_rows(snapshot: &Snapshot, filter: &str) -> Vec<(RowKey, Option<usize>)> {
    let mut rows: Vec<(RowKey, Option<usize>)> = snapshot
        .invocations
        .iter()
        .enumerate()
        .filter(|(_, inv)| {
            let mut fields: Vec<Option<&str>> = vec![Some(inv.namespace.as_str())];
            fields.extend(inv.workers.iter().map(|w| Some(w.as_str())));
            fields.extend(inv.databases.iter().map(|d| Some(d.as_str())));
            matches_filter(filter, &fields)
        })
        .map(|(i, inv)| (RowKey::Invocation(inv.namespace.clone()), Some(i)))
        .collect();
    let others = snapshot.sessions.iter().any(|s| {
        s.namespace.is_none()
            && matches_filter(
                filter,
                &[Some(s.application_name.as_str()), Some(s.database.as_str())],
            )
    });
    if others {
        rows.push((RowKey::OtherSessions, None));
    }
    rows
}

/// Every row of every lock tree with a member matching the filter (a tree is shown whole), each
/// keyed by its place: server, root, parent and pid.
fn lock_rows(
    snapshot: &Snapshot,
    filter: &str,
    session_index: &HashMap<(String, i32), usize>,
) -> Vec<LockRow> {
    let mut locks = Vec::new();
    for (t, tree) in snapshot.lock_trees.iter().enumerate() {
        let session_matches = |pid: i32| {
            session_index
                .get(&(tree.server.clone(), pid))
                .map(|&i| {
                    let s = &snapshot.sessions[i];
                    matches_filter(
                        filter,
                        &[
                            s.namespace.as_deref(),
                            s.worker.as_deref(),
                            Some(s.application_name.as_str()),
                            Some(s.database.as_str()),
                        ],
                    )
                })
                .unwrap_or(filter.is_empty())
        };
        if !tree.rows.iter().any(|r| session_matches(r.pid)) {
            continue;
        }
        let mut stack: Vec<i32> = Vec::new();
        for (r, row) in tree.rows.iter().enumerate() {
            stack.truncate(row.depth);
            let parent = stack.last().copied();
            stack.push(row.pid);
            locks.push(LockRow {
                key: RowKey::Lock {
                    server: tree.server.clone(),
                    root: tree.root_pid,
                    parent,
                    pid: row.pid,
                },
                tree: t,
                row: r,
            });
        }
    }
    locks
}

/// Every session matching the filter (namespace, worker, application name or database).
fn session_rows(snapshot: &Snapshot, filter: &str) -> Vec<(RowKey, usize)> {
    snapshot
        .sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches_filter(
                filter,
                &[
                    s.namespace.as_deref(),
                    s.worker.as_deref(),
                    Some(s.application_name.as_str()),
                    Some(s.database.as_str()),
                ],
            )
        })
        .map(|(i, s)| {
            (
                RowKey::Session {
                    server: s.server.clone(),
                    pid: s.pid,
                },
                i,
            )
        })
        .collect()
}

/// Schemas matching the filter (name, database, namespace or worker).
/// Schemas, the actionable first: orphaned, then unknown, legacy, live; by database and name.
fn schema_rows(snapshot: &Snapshot, filter: &str) -> Vec<(RowKey, usize)> {
    use crate::domain::snapshot::SchemaStatus;
    let rank = |s: SchemaStatus| match s {
        SchemaStatus::Orphaned => 0,
        SchemaStatus::Unknown => 1,
        SchemaStatus::Legacy => 2,
        SchemaStatus::Live => 3,
    };
    let mut rows: Vec<(RowKey, usize)> = snapshot
        .schemas
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches_filter(
                filter,
                &[
                    Some(s.schema.as_str()),
                    Some(s.database.as_str()),
                    s.namespace.as_deref(),
                    Some(s.worker.as_str()),
                ],
            )
        })
        .map(|(i, s)| {
            (
                RowKey::Schema {
                    database: s.database.clone(),
                    schema: s.schema.clone(),
                },
                i,
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        let (x, y) = (&snapshot.schemas[a.1], &snapshot.schemas[b.1]);
        (rank(x.status), &x.database, &x.schema).cmp(&(rank(y.status), &y.database, &y.schema))
    });
    rows
}

impl Model {
    /// Orders the Invocations rows (the unlabeled group stays last).
    pub fn sort_invocations(&mut self, sort: InvocationSort) {
        let Some(snap) = self.snapshot.clone() else {
            return;
        };
        let inv = |r: &(RowKey, Option<usize>)| r.1.map(|i| &snap.invocations[i]);
        match sort {
            InvocationSort::Trouble => {}
            InvocationSort::Age => self.invocations.sort_by_key(|r| {
                (
                    inv(r).is_none(),
                    inv(r)
                        .and_then(|i| i.started_at)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                )
            }),
            InvocationSort::Blocked => self.invocations.sort_by_key(|r| {
                (
                    inv(r).is_none(),
                    std::cmp::Reverse(inv(r).map_or(0, |i| i.blocked)),
                )
            }),
            InvocationSort::Sessions => self.invocations.sort_by_key(|r| {
                (
                    inv(r).is_none(),
                    std::cmp::Reverse(inv(r).map_or(0, |i| i.sessions)),
                )
            }),
            InvocationSort::Name => self.invocations.sort_by(|a, b| {
                let key = |r: &(RowKey, Option<usize>)| {
                    (inv(r).is_none(), inv(r).map(|i| i.namespace.clone()))
                };
                key(a).cmp(&key(b))
            }),
        }
    }

    /// Orders the Sessions rows; ties by server and pid, so the order is stable between polls.
    pub fn sort_sessions(&mut self, sort: SessionSort) {
        use std::cmp::Reverse;
        let Some(snap) = self.snapshot.clone() else {
            return;
        };
        let far = DateTime::<Utc>::MAX_UTC;
        let s = |r: &(RowKey, usize)| &snap.sessions[r.1];
        let tie = |r: &(RowKey, usize)| (s(r).server.clone(), s(r).pid);
        match sort {
            SessionSort::Wait => self.sessions.sort_by(|a, b| {
                let key = |r: &(RowKey, usize)| {
                    let x = s(r);
                    (
                        Reverse(x.waiting_s.map(|w| (w * 1000.0) as i64)),
                        x.blocking.is_empty(),
                        x.xact_start.unwrap_or(far),
                    )
                };
                key(a).cmp(&key(b)).then_with(|| tie(a).cmp(&tie(b)))
            }),
            SessionSort::XactAge => self
                .sessions
                .sort_by_key(|r| (s(r).xact_start.unwrap_or(far), tie(r))),
            SessionSort::QueryAge => self
                .sessions
                .sort_by_key(|r| (s(r).query_start.unwrap_or(far), tie(r))),
            SessionSort::Run => self.sessions.sort_by_key(|r| {
                (
                    s(r).namespace.is_none(),
                    s(r).namespace.clone(),
                    s(r).worker.clone(),
                    tie(r),
                )
            }),
            SessionSort::Pid => self.sessions.sort_by_key(|r| (s(r).pid, tie(r))),
        }
    }

    /// Builds the rows of every pane from a snapshot and a filter.
    pub fn build(snapshot: Arc<Snapshot>, filter: &str) -> Model {
        let session_index: HashMap<(String, i32), usize> = snapshot
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.server.clone(), s.pid), i))
            .collect();
        let edge_index = snapshot
            .blocking
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.server.clone(), e.blocker_pid, e.blocked_pid), i))
            .collect();
        Model {
            invocations: invocation_rows(&snapshot, filter),
            locks: lock_rows(&snapshot, filter, &session_index),
            schemas: schema_rows(&snapshot, filter),
            incidents: Vec::new(),
            sessions: session_rows(&snapshot, filter),
            snapshot: Some(snapshot),
            session_index,
            edge_index,
        }
    }

    pub fn keys(&self, pane: Pane) -> Vec<RowKey> {
        match pane {
            Pane::Invocations => self.invocations.iter().map(|r| r.0.clone()).collect(),
            Pane::Locks => self.locks.iter().map(|r| r.key.clone()).collect(),
            Pane::Schemas => self.schemas.iter().map(|r| r.0.clone()).collect(),
            Pane::Incidents => self.incidents.iter().map(|r| r.0.clone()).collect(),
            Pane::Sessions => self.sessions.iter().map(|r| r.0.clone()).collect(),
        }
    }

    /// Reorders rows to follow `order` (rows not in it go last, in their own order).
    fn apply_order(&mut self, pane: Pane, order: &[RowKey]) {
        let pos: HashMap<&RowKey, usize> = order.iter().enumerate().map(|(i, k)| (k, i)).collect();
        let rank = |k: &RowKey| pos.get(k).copied().unwrap_or(usize::MAX);
        match pane {
            Pane::Invocations => self.invocations.sort_by_key(|r| rank(&r.0)),
            // Trees are structure, not a sort: keep whole trees together, ordered by their roots.
            Pane::Locks => {}
            Pane::Schemas => self.schemas.sort_by_key(|r| rank(&r.0)),
            Pane::Incidents => self.incidents.sort_by_key(|r| rank(&r.0)),
            Pane::Sessions => self.sessions.sort_by_key(|r| rank(&r.0)),
        }
    }
}

/// Events queued while the loop was busy, as the loop applies them: only the newest snapshot is
/// kept (building a model for one that is replaced at once is wasted work on the UI thread); the
/// latencies of the dropped ones still count; every other event keeps its order.
pub fn coalesce(batch: Vec<Event>) -> Vec<Event> {
    let newest = batch.iter().rposition(|e| matches!(e, Event::Snapshot(..)));
    let mut latencies = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for (i, e) in batch.into_iter().enumerate() {
        match e {
            Event::Snapshot(snap, l, at) if Some(i) == newest => {
                latencies.extend(l);
                out.push(Event::Snapshot(snap, std::mem::take(&mut latencies), at));
            }
            Event::Snapshot(_, l, _) => latencies.extend(l),
            other => out.push(other),
        }
    }
    out
}

/// Replaying a recording: the recorded clock advances with real time times `speed` while playing.
#[derive(Debug, Clone)]
pub struct Replay {
    pub snapshots: Arc<[Arc<Snapshot>]>,
    pub pos: usize,
    pub playing: bool,
    pub speed: f64,
    /// The recorded time being shown.
    pub clock: DateTime<Utc>,
    last_tick: Option<DateTime<Utc>>,
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    pub convention: Convention,
    /// Configured database names, in order (the header shows one cell each).
    pub databases: Vec<String>,
    pub group_count: usize,
    aggregator: Aggregator,
    /// The snapshot just replaced, for the caller to free off the UI thread.
    pub retired: Option<Model>,
    pub model: Model,
    /// A newer snapshot arrived while paused.
    pub stale_while_paused: bool,
    pending: Option<Arc<Snapshot>>,
    /// How long the last poll of each database's server group took.
    pub probe_time: HashMap<String, Duration>,
    pub unreachable_since: HashMap<String, DateTime<Utc>>,
    pub last_good_poll: Option<DateTime<Utc>>,
    pub interval: Duration,
    pub paused: bool,
    pub focus: Pane,
    selected: [Option<RowKey>; 5],
    selected_idx: [usize; 5],
    frozen: Option<(DateTime<Utc>, [Vec<RowKey>; 5])>,
    /// The Sessions pane is drawn in the Invocations pane's place (`s`).
    pub show_sessions: bool,
    pub session_sort: SessionSort,
    pub duration_mode: DurationMode,
    /// A picture with nothing blocked was shown and no key has been pressed since: the next
    /// picture with a lock tree moves the focus to Lock trees (the user has not chosen a pane).
    calm_untouched: bool,
    /// Sessions that left, as last seen (details outlive them).
    pub last_seen: LastSeen,
    /// The newest snapshot received (shown or not): what `last_seen` compares the next one with.
    latest: Option<Arc<Snapshot>>,
    /// Per server: transactions (commits + rollbacks) and when they were read, from the picture
    /// before the one on screen; and the rate between the two.
    xacts_seen: HashMap<String, (i64, DateTime<Utc>)>,
    pub tps: HashMap<String, f64>,
    /// While paused: the probe times and unreachable-since times as they were at the pause, which
    /// is what the header shows (the live ones keep counting underneath).
    paused_header: Option<HeaderAtPause>,
    pub filter: String,
    pub filter_editing: bool,
    pub overlay: Overlay,
    pub now: DateTime<Utc>,
    /// `--read-only`: the sweep key is disabled.
    pub read_only: bool,
    /// Set when replaying a recording instead of polling.
    pub replay: Option<Replay>,
    /// Sweep discovery requests made so far, and the one under way.
    sweep_requests: u64,
    sweep_in_flight: Option<u64>,
    /// Ended lock-wait episodes, newest first (at most [`MAX_INCIDENTS`]; replaying: every
    /// episode of the recording).
    pub episodes: Vec<Episode>,
    /// Episodes still going on (live only).
    pub ongoing: Vec<Episode>,
    /// Public writes seen since the dashboard started (replaying: up to the clock), newest first,
    /// at most [`MAX_PUBLIC_WRITES`]: the Incidents pane lists them above the lock waits.
    pub public_writes: Vec<crate::domain::public_write::PublicWrite>,
    /// `--bell`: ring on a new cross-invocation episode.
    pub bell: bool,
    /// The last flight log write failed: why.
    pub flight_log_error: Option<String>,
    /// The Invocations pane's order.
    pub sort: InvocationSort,
    /// How far the open overlay is scrolled (lines).
    pub overlay_scroll: usize,
    /// How far it can scroll at the size last drawn: the one value the view reports back, so that
    /// `G` then `k` moves at once.
    pub overlay_scroll_max: std::cell::Cell<usize>,
    /// When the display was paused: ages on screen stop there.
    paused_at: Option<DateTime<Utc>>,
    /// Where read-only mode came from (`--read-only`, or the config file).
    pub read_only_source: Option<String>,
    /// No database is configured (libpq's default is watched): say how to configure when it
    /// cannot be read.
    pub nothing_configured: bool,
    /// Some database's sessions have been read at least once (else the dashboard exits 3).
    pub ever_read: bool,
    belled: std::collections::HashSet<String>,
    /// Clock times on screen are shown at this offset (the local one when running).
    pub utc_offset: chrono::FixedOffset,
    /// The `pgswarm serve` the picture is read from (`--server`), said in the header.
    pub source: Option<String>,
    /// Since when, and why, that server does not answer: the picture is its last one.
    pub source_down: Option<(DateTime<Utc>, String)>,
    pub quit: bool,
}

impl App {
    pub fn new(
        convention: Convention,
        databases: Vec<String>,
        group_count: usize,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> App {
        App {
            aggregator: Aggregator::new(convention.clone(), databases.clone(), group_count),
            convention,
            databases,
            group_count,
            retired: None,
            model: Model::default(),
            stale_while_paused: false,
            pending: None,
            probe_time: HashMap::new(),
            unreachable_since: HashMap::new(),
            last_good_poll: None,
            interval,
            paused: false,
            focus: Pane::Invocations,
            selected: [None, None, None, None, None],
            selected_idx: [0; 5],
            frozen: None,
            show_sessions: false,
            session_sort: SessionSort::default(),
            duration_mode: DurationMode::default(),
            calm_untouched: false,
            last_seen: LastSeen::default(),
            latest: None,
            xacts_seen: HashMap::new(),
            tps: HashMap::new(),
            paused_header: None,
            filter: String::new(),
            filter_editing: false,
            overlay: Overlay::None,
            now,
            read_only: false,
            replay: None,
            sweep_requests: 0,
            sweep_in_flight: None,
            episodes: Vec::new(),
            ongoing: Vec::new(),
            public_writes: Vec::new(),
            bell: false,
            flight_log_error: None,
            read_only_source: None,
            paused_at: None,
            sort: InvocationSort::default(),
            overlay_scroll: 0,
            overlay_scroll_max: std::cell::Cell::new(usize::MAX),
            nothing_configured: false,
            ever_read: false,
            belled: Default::default(),
            utc_offset: chrono::FixedOffset::east_opt(0).expect("zero offset"),
            source: None,
            source_down: None,
            quit: false,
        }
    }

    /// A dashboard that replays `snapshots` (sorted by time, at least one). Nothing touches a database.
    pub fn new_replay(convention: Convention, snapshots: Vec<Snapshot>, now: DateTime<Utc>) -> App {
        let snapshots: Arc<[Arc<Snapshot>]> = snapshots.into_iter().map(Arc::new).collect();
        let first = Arc::clone(snapshots.first().expect("a recording has a snapshot"));
        let names = first.databases.iter().map(|d| d.name.clone()).collect();
        let mut app = App::new(convention, names, 1, Duration::from_secs(1), now);
        app.read_only = true;
        app.episodes = episodes_of(snapshots.iter().map(|s| &**s));
        app.episodes.reverse();
        for s in snapshots.iter() {
            crate::domain::public_write::remember_public_writes(
                &mut app.public_writes,
                &s.public_writes,
                s.taken_at,
            );
        }
        app.public_writes
            .sort_by_key(|w| std::cmp::Reverse(w.last_seen.or(w.since)));
        app.replay = Some(Replay {
            clock: first.taken_at,
            snapshots,
            pos: 0,
            playing: true,
            speed: 1.0,
            last_tick: Some(now),
        });
        app.show_snapshot(first);
        app
    }

    /// Moves the replay to the last snapshot at or before `clock`.
    fn replay_seek(&mut self, clock: DateTime<Utc>) {
        let Some(r) = &mut self.replay else { return };
        let first = r.snapshots[0].taken_at;
        let last = r.snapshots[r.snapshots.len() - 1].taken_at;
        r.clock = clock.clamp(first, last);
        let pos = r
            .snapshots
            .partition_point(|s| s.taken_at <= r.clock)
            .saturating_sub(1);
        if r.clock >= last {
            r.playing = false;
        }
        if pos != r.pos || self.model.snapshot.is_none() {
            r.pos = pos;
            let snap = Arc::clone(&r.snapshots[pos]);
            self.show_snapshot(snap);
        }
    }

    fn on_replay_action(&mut self, action: Action) -> bool {
        let Some(r) = &mut self.replay else {
            return false;
        };
        let minute = chrono::Duration::from_std(SEEK_STEP).expect("SEEK_STEP is a small constant");
        match action {
            Action::PlayPause => {
                r.playing = !r.playing;
                r.last_tick = Some(self.now);
            }
            Action::StepForward | Action::StepBack => {
                r.playing = false;
                let pos = if action == Action::StepForward {
                    (r.pos + 1).min(r.snapshots.len() - 1)
                } else {
                    r.pos.saturating_sub(1)
                };
                let t = r.snapshots[pos].taken_at;
                self.replay_seek(t);
            }
            Action::SeekForward => {
                let t = r.clock + minute;
                self.replay_seek(t);
            }
            Action::SeekBack => {
                let t = r.clock - minute;
                self.replay_seek(t);
            }
            Action::Faster => r.speed = (r.speed * 2.0).min(64.0),
            Action::Slower => r.speed = (r.speed / 2.0).max(0.25),
            Action::Refresh => {}
            _ => return false,
        }
        true
    }

    /// Shows a snapshot directly (replay, tests).
    pub fn show_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.take_public_writes(&snapshot);
        self.track_reachability(&snapshot);
        self.remember_gone(&snapshot);
        self.install(snapshot);
    }

    /// Keeps the last-seen state of every session that `snapshot` no longer has.
    fn remember_gone(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(before) = self.latest.replace(Arc::clone(snapshot)) {
            self.last_seen.record(&before, snapshot);
        }
    }

    /// The panes on screen, in Tab order: the first is Invocations, or Sessions when swapped in.
    pub fn panes(&self) -> [Pane; 4] {
        let first = if self.show_sessions {
            Pane::Sessions
        } else {
            Pane::Invocations
        };
        [first, Pane::Schemas, Pane::Locks, Pane::Incidents]
    }

    /// Probe times as the header shows them (frozen while paused).
    pub fn shown_probe_time(&self) -> &HashMap<String, Duration> {
        self.paused_header
            .as_ref()
            .map_or(&self.probe_time, |h| &h.0)
    }

    /// Unreachable-since times as the notices show them (frozen while paused).
    pub fn shown_unreachable_since(&self) -> &HashMap<String, DateTime<Utc>> {
        self.paused_header
            .as_ref()
            .map_or(&self.unreachable_since, |h| &h.1)
    }

    /// The newest ended episode about this session: as the waiter, else as a blocker. When the
    /// session's start is known, an episode of an earlier session with the same pid is not it.
    pub fn episode_of(
        &self,
        server: &str,
        pid: i32,
        backend_start: Option<DateTime<Utc>>,
    ) -> Option<&Episode> {
        let same_backend = |e: &Episode| match (e.waiter_backend_start, backend_start) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let mine = |e: &&Episode| e.server == server;
        self.episodes
            .iter()
            .filter(mine)
            .find(|e| e.waiter_pid == pid && same_backend(e))
            .or_else(|| {
                self.episodes.iter().filter(mine).find(|e| {
                    e.blocker_pids.contains(&pid) && backend_start.is_none_or(|b| e.started_at >= b)
                })
            })
    }

    /// Transactions per second of each server, between the picture before and this one.
    fn measure_tps(&mut self, snapshot: &Snapshot) {
        let mut tps = HashMap::new();
        for sv in &snapshot.servers {
            let (Some(n), Some(at)) = (sv.xacts, sv.xacts_at) else {
                continue;
            };
            if let Some(&(n0, at0)) = self.xacts_seen.get(&sv.server) {
                let secs = (at - at0).num_milliseconds() as f64 / 1000.0;
                if secs > 0.0 && n >= n0 {
                    tps.insert(sv.server.clone(), (n - n0) as f64 / secs);
                } else if let Some(&old) = self.tps.get(&sv.server) {
                    // The same reading again (no new poll of that server): keep the last rate.
                    if n == n0 {
                        tps.insert(sv.server.clone(), old);
                    }
                }
                if secs <= 0.0 {
                    continue;
                }
            }
            self.xacts_seen.insert(sv.server.clone(), (n, at));
        }
        self.tps = tps;
    }

    /// `read-only mode (from --read-only)`, for what it disables.
    pub fn read_only_reason(&self) -> String {
        crate::pg::config::read_only_reason(self.read_only_source.as_deref())
    }

    /// The moment the picture on screen stands for: the replay clock, the paused snapshot's time,
    /// else now. Ages on screen are measured against it, so a paused picture does not age.
    pub fn display_now(&self) -> DateTime<Utc> {
        if let Some(r) = &self.replay {
            return r.clock;
        }
        self.paused_at.filter(|_| self.paused).unwrap_or(self.now)
    }

    pub fn loading(&self) -> bool {
        self.model.snapshot.is_none()
    }

    /// Index of the selected row in `pane`, if the pane has rows.
    pub fn selected_index(&self, pane: Pane) -> Option<usize> {
        let keys = self.model.keys(pane);
        if keys.is_empty() {
            return None;
        }
        let i = pane.index();
        match &self.selected[i] {
            Some(k) => keys
                .iter()
                .position(|x| x == k)
                .or(Some(self.selected_idx[i].min(keys.len() - 1))),
            None => Some(0),
        }
    }

    pub fn selected_key(&self, pane: Pane) -> Option<RowKey> {
        self.selected_index(pane)
            .map(|i| self.model.keys(pane)[i].clone())
    }

    fn track_reachability(&mut self, snap: &Snapshot) {
        for d in snap.databases.iter().filter(|d| !d.not_read_yet) {
            if d.reachable {
                self.unreachable_since.remove(&d.name);
            } else {
                self.unreachable_since
                    .entry(d.name.clone())
                    .or_insert(snap.taken_at);
            }
        }
        if snap.databases.iter().any(|d| d.reachable) {
            self.last_good_poll = Some(snap.taken_at);
        }
    }

    fn rebuild(&mut self) {
        if let Some(snap) = self.model.snapshot.clone() {
            self.install(snap);
        }
    }

    fn install(&mut self, snapshot: Arc<Snapshot>) {
        self.ever_read |= snapshot.databases.iter().any(|d| {
            matches!(
                d.read,
                crate::domain::snapshot::ReadStatus::Read
                    | crate::domain::snapshot::ReadStatus::SchemasFailed
            )
        }) || snapshot.sqlite.iter().any(|r| !r.is_unreadable());
        if self
            .model
            .snapshot
            .as_ref()
            .is_none_or(|s| !Arc::ptr_eq(s, &snapshot))
        {
            self.measure_tps(&snapshot);
        }
        let mut model = Model::build(snapshot, &self.filter);
        model.sort_invocations(self.sort);
        model.sort_sessions(self.session_sort);
        model.incidents = self.incident_rows();
        if let Some((until, orders)) = &self.frozen {
            if self.now < *until {
                for pane in Pane::ALL {
                    model.apply_order(pane, &orders[pane.index()]);
                }
            }
        }
        self.retired = Some(std::mem::replace(&mut self.model, model));
        // Keep the selected item; if it vanished, stay at the same position.
        for pane in Pane::ALL {
            if let Some(i) = self.selected_index(pane) {
                self.selected_idx[pane.index()] = i;
            }
        }
        self.follow_trouble();
    }

    /// Something became blocked and the user has not moved since the last calm picture: the
    /// focus goes to Lock trees, on the first root.
    fn follow_trouble(&mut self) {
        if self.model.locks.is_empty() {
            self.calm_untouched = true;
        } else if self.calm_untouched {
            self.calm_untouched = false;
            self.focus = Pane::Locks;
            self.selected[Pane::Locks.index()] = None;
            self.selected_idx[Pane::Locks.index()] = 0;
        }
    }

    /// Handles one event and says what the outside world should do.
    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        let before = overlay_stage(&self.overlay);
        let effects = self.apply(event);
        if overlay_stage(&self.overlay) != before {
            // A new overlay (or stage of one) starts at its top.
            self.overlay_scroll = 0;
            self.overlay_scroll_max.set(usize::MAX);
        }
        effects
    }

    fn apply(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Tick(now) => {
                let advance = self.replay.as_mut().and_then(|r| {
                    let last = r.last_tick.replace(now)?;
                    let elapsed = (now - last).to_std().ok()?;
                    let step = chrono::Duration::from_std(elapsed.mul_f64(r.speed)).ok()?;
                    r.playing.then(|| r.clock + step)
                });
                if let Some(clock) = advance {
                    self.replay_seek(clock);
                }
                self.now = now;
                if self.frozen.as_ref().is_some_and(|(until, _)| now >= *until) {
                    self.frozen = None;
                    if !self.paused {
                        self.rebuild();
                    }
                }
                vec![]
            }
            Event::Poll(result, now) => {
                let latencies = crate::pg::stream::latencies(&result);
                let snap = self.aggregator.accept(result.group, result.observation);
                self.update(Event::Snapshot(Arc::new(snap), latencies, now))
            }
            Event::Snapshot(snap, latencies, now) => {
                self.now = now;
                self.probe_time.extend(latencies);
                self.take_public_writes(&snap);
                self.track_reachability(&snap);
                self.remember_gone(&snap);
                if self.paused {
                    self.stale_while_paused = true;
                    // Keep the newest snapshot for when the display resumes.
                    self.pending = Some(snap);
                } else {
                    self.install(snap);
                }
                vec![]
            }
            Event::SweepPlanned(request, plan) => {
                // Only the discovery in flight counts, and only if the user still waits for it.
                if self.sweep_in_flight == Some(request) {
                    self.sweep_in_flight = None;
                    if self.overlay == Overlay::Sweep(SweepView::Planning) {
                        self.overlay = Overlay::Sweep(SweepView::Plan(plan));
                    }
                }
                vec![]
            }
            Event::SweepProgress { done, current } => {
                if let Overlay::Sweep(SweepView::Running {
                    done: d,
                    current: c,
                    ..
                }) = &mut self.overlay
                {
                    *d = done;
                    *c = current;
                }
                vec![]
            }
            Event::SignalDone(report) => {
                self.overlay = Overlay::Signal(SignalView::Finished(report));
                // Show the result on the panes at once.
                vec![Effect::Refresh]
            }
            Event::SweepFinished(report) => {
                self.overlay = Overlay::Sweep(SweepView::Finished(report));
                vec![Effect::Refresh]
            }
            Event::Episodes { ended, ongoing } => self.take_episodes(ended, ongoing),
            Event::FlightLog(result) => {
                self.flight_log_error = result.err();
                Vec::new()
            }
            Event::Source(down, at) => {
                self.source_down = match (down, self.source_down.take()) {
                    (None, _) => None,
                    // Still down: since the first time it was noticed.
                    (Some(reason), Some((since, _))) => Some((since, reason)),
                    (Some(reason), None) => Some((at, reason)),
                };
                Vec::new()
            }
            Event::Key(key) => self.on_key(key),
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        // The user is here: the focus stays where they leave it until the next calm picture.
        self.calm_untouched = false;
        if self.filter_editing {
            return self.on_filter_key(key);
        }
        if self.overlay != Overlay::None && self.scroll_overlay(&key) {
            return vec![];
        }
        if let Overlay::Sweep(view) = &self.overlay {
            return self.on_sweep_key(key, view.clone());
        }
        if let Overlay::Signal(view) = &self.overlay {
            return self.on_signal_key(key, view.clone());
        }
        let Some(action) = action_for(&key) else {
            return vec![];
        };
        if self.overlay == Overlay::None && self.on_replay_action(action) {
            return vec![];
        }
        if self.overlay != Overlay::None {
            return self.on_overlay_action(action);
        }
        self.on_action(action)
    }

    /// j/k, arrows, PgUp/PgDn, g/G scroll an open overlay (in every overlay, before its own keys).
    fn scroll_overlay(&mut self, key: &KeyEvent) -> bool {
        let max = self.overlay_scroll_max.get();
        let s = self.overlay_scroll.min(max);
        self.overlay_scroll = match action_for(key) {
            Some(Action::Down) => (s + 1).min(max),
            Some(Action::Up) => s.saturating_sub(1),
            Some(Action::PageDown) => (s + PAGE).min(max),
            Some(Action::PageUp) => s.saturating_sub(PAGE),
            Some(Action::Top) => 0,
            Some(Action::Bottom) => max,
            _ => return false,
        };
        true
    }

    /// Keys while the filter is being typed: text edits it, Enter keeps it, Esc clears it.
    fn on_filter_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Enter => self.filter_editing = false,
            KeyCode::Esc => {
                self.filter_editing = false;
                self.filter.clear();
                self.rebuild();
            }
            KeyCode::Backspace => {
                self.filter.pop();
                self.rebuild();
            }
            KeyCode::Char(c) if !c.is_control() && self.filter.chars().count() < 64 => {
                self.filter.push(c);
                self.rebuild();
            }
            _ => {}
        }
        if key.code == KeyCode::Char('c')
            && key
                .modifiers
                .contains(crossterm::event::KeyModifiers::CONTROL)
        {
            self.quit = true;
            return vec![Effect::Quit];
        }
        vec![]
    }

    /// In the help or detail overlay only closing, quitting and help make sense; and on a session's
    /// detail, cancelling or terminating it.
    fn on_overlay_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Cancel | Action::Terminate => {
                if let Overlay::Detail(key) = &self.overlay {
                    if key.session().is_some() {
                        let key = key.clone();
                        self.start_signal(action, Some(key));
                    }
                }
                vec![]
            }
            Action::Link => {
                if let Some(to) = self.link_of_detail() {
                    self.overlay = Overlay::Detail(to);
                }
                vec![]
            }
            Action::Quit => {
                self.quit = true;
                vec![Effect::Quit]
            }
            Action::Back | Action::Detail | Action::Help => {
                self.overlay = Overlay::None;
                vec![]
            }
            _ => vec![],
        }
    }

    /// An action on the panes (no overlay open).
    fn on_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => {
                self.quit = true;
                return vec![Effect::Quit];
            }
            Action::Help => self.overlay = Overlay::Help,
            Action::Sweep => return self.start_sweep(),
            Action::Cancel | Action::Terminate => self.start_signal(action, None),
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-(PAGE as isize)),
            Action::PageDown => self.move_selection(PAGE as isize),
            Action::Top => self.move_selection(isize::MIN / 2),
            Action::Bottom => self.move_selection(isize::MAX / 2),
            Action::NextPane => self.cycle_focus(1),
            Action::PrevPane => self.cycle_focus(3),
            Action::Sessions => {
                let was = self.panes()[0];
                self.show_sessions = !self.show_sessions;
                if self.focus == was || self.show_sessions {
                    self.focus = self.panes()[0];
                }
            }
            Action::DurationMode => self.duration_mode = self.duration_mode.next(),
            Action::Link => {}
            Action::Detail => {
                if let Some(k) = self.selected_key(self.focus) {
                    self.overlay = Overlay::Detail(k);
                }
            }
            Action::Back => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                    self.rebuild();
                }
            }
            Action::Filter => self.filter_editing = true,
            Action::Pause => self.toggle_pause(),
            Action::Sort => {
                if self.focus == Pane::Sessions {
                    self.session_sort = self.session_sort.next();
                } else {
                    self.sort = self.sort.next();
                }
                self.rebuild();
            }
            Action::Refresh => return vec![Effect::Refresh],
            // Replay keys do nothing on a live dashboard.
            Action::PlayPause
            | Action::StepForward
            | Action::StepBack
            | Action::SeekForward
            | Action::SeekBack => {}
            Action::Faster => return self.step_interval(true),
            Action::Slower => return self.step_interval(false),
        }
        vec![]
    }

    /// `S`: the plan overlay, and a discovery unless one is already under way (its plan will fill
    /// the overlay).
    fn start_sweep(&mut self) -> Vec<Effect> {
        if self.read_only {
            self.overlay = Overlay::Sweep(SweepView::Disabled);
            return vec![];
        }
        self.overlay = Overlay::Sweep(SweepView::Planning);
        if self.sweep_in_flight.is_some() {
            return vec![];
        }
        self.sweep_requests += 1;
        self.sweep_in_flight = Some(self.sweep_requests);
        vec![Effect::PlanSweep(self.sweep_requests)]
    }

    /// `c` / `K`: the plan for the selected session (or invocation), made from the snapshot on
    /// screen; nothing is sent before capital `Y`.
    fn start_signal(&mut self, action: Action, key: Option<RowKey>) {
        if self.read_only || self.replay.is_some() {
            self.overlay = Overlay::Signal(SignalView::Disabled);
            return;
        }
        let kind = if action == Action::Cancel {
            SignalAction::Cancel
        } else {
            SignalAction::Terminate
        };
        let selector = match key.or_else(|| self.selected_key(self.focus)) {
            Some(RowKey::Lock { server, pid, .. } | RowKey::Session { server, pid }) => {
                Selector::Session { server, pid }
            }
            Some(RowKey::Invocation(namespace)) => Selector::Invocation {
                namespace,
                worker: None,
                only_blocking: false,
            },
            _ => {
                self.overlay = Overlay::Signal(SignalView::Nothing(
                    "select a session (Lock trees, Sessions) or an invocation first".into(),
                ));
                return;
            }
        };
        self.overlay = Overlay::Signal(self.plan_view(&selector, kind));
    }

    fn plan_view(&self, selector: &Selector, kind: SignalAction) -> SignalView {
        let Some(snap) = &self.model.snapshot else {
            return SignalView::Nothing("no snapshot yet".into());
        };
        match plan_signal(snap, selector, kind) {
            Ok(plan) => SignalView::Plan(Box::new(plan)),
            Err(e) => SignalView::Nothing(e.to_string()),
        }
    }

    /// Keys while the cancel / terminate overlay is open: capital `Y` sends exactly the plan shown,
    /// `b` (for an invocation) toggles "only sessions blocking someone", `K` turns a cancel that
    /// would release nothing into a terminate plan, anything else cancels.
    fn on_signal_key(&mut self, key: KeyEvent, view: SignalView) -> Vec<Effect> {
        if is_ctrl_c(&key) {
            self.quit = true;
            return vec![Effect::Quit];
        }
        match view {
            SignalView::Plan(plan) if key.code == KeyCode::Char('Y') && plan.actionable() => {
                self.overlay = Overlay::Signal(SignalView::Running(plan.clone()));
                vec![Effect::Signal(plan)]
            }
            // A cancel that would release nothing (idle in transaction) offers terminate instead:
            // a new plan, shown, still sent only on capital `Y`.
            SignalView::Plan(plan)
                if key.code == KeyCode::Char('K') && !plan.releasing_nothing().is_empty() =>
            {
                self.overlay =
                    Overlay::Signal(self.plan_view(&plan.selector, SignalAction::Terminate));
                vec![]
            }
            SignalView::Plan(plan) if key.code == KeyCode::Char('b') => {
                if let Selector::Invocation {
                    namespace,
                    worker,
                    only_blocking,
                } = &plan.selector
                {
                    let toggled = Selector::Invocation {
                        namespace: namespace.clone(),
                        worker: worker.clone(),
                        only_blocking: !only_blocking,
                    };
                    self.overlay = Overlay::Signal(self.plan_view(&toggled, plan.action));
                } else {
                    self.overlay = Overlay::None;
                }
                vec![]
            }
            // Signals under way are not interrupted by a stray key.
            SignalView::Running(_) => vec![],
            _ => {
                self.overlay = Overlay::None;
                vec![]
            }
        }
    }

    fn cycle_focus(&mut self, by: usize) {
        let panes = self.panes();
        let at = panes.iter().position(|&p| p == self.focus).unwrap_or(0);
        self.focus = panes[(at + by) % panes.len()];
    }

    /// Where `e` leads from the detail on screen: a session's detail to its ended lock wait, a lock
    /// wait's detail to its waiter's session (present or last seen).
    fn link_of_detail(&self) -> Option<RowKey> {
        let Overlay::Detail(key) = &self.overlay else {
            return None;
        };
        if let RowKey::Incident(id) = key {
            let e = self.episodes.iter().find(|e| &e.id == id)?;
            return Some(RowKey::Session {
                server: e.server.clone(),
                pid: e.waiter_pid,
            });
        }
        let (server, pid) = key.session()?;
        let start = self
            .session_seen(server, pid)
            .and_then(|(s, _)| s.backend_start);
        self.episode_of(server, pid, start)
            .map(|e| RowKey::Incident(e.id.clone()))
    }

    /// A session as on screen, else as last seen (with when).
    pub fn session_seen(
        &self,
        server: &str,
        pid: i32,
    ) -> Option<(
        &crate::domain::snapshot::SessionReport,
        Option<DateTime<Utc>>,
    )> {
        if let (Some(snap), Some(&i)) = (
            &self.model.snapshot,
            self.model.session_index.get(&(server.to_string(), pid)),
        ) {
            return Some((&snap.sessions[i], None));
        }
        self.last_seen
            .find(server, pid)
            .map(|g| (&g.session, Some(g.last_seen_at)))
    }

    /// Pausing freezes the display; resuming shows the newest snapshot that arrived meanwhile.
    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        self.paused_at = self.paused.then_some(self.now);
        self.paused_header = self
            .paused
            .then(|| (self.probe_time.clone(), self.unreachable_since.clone()));
        if !self.paused {
            self.stale_while_paused = false;
            if let Some(s) = self.pending.take() {
                self.install(s);
            }
        }
    }

    /// `+`/`-`: the next refresh interval on the ladder, within the bounds.
    fn step_interval(&mut self, faster: bool) -> Vec<Effect> {
        let ms = self.interval.as_millis() as u64;
        let next = if faster {
            INTERVAL_STEPS_MS.iter().rev().find(|&&s| s < ms)
        } else {
            INTERVAL_STEPS_MS.iter().find(|&&s| s > ms)
        };
        match next {
            Some(&s) => {
                self.interval = Duration::from_millis(s).clamp(INTERVAL_MIN, INTERVAL_MAX);
                vec![Effect::SetInterval(self.interval)]
            }
            None => vec![],
        }
    }

    /// Keys while the sweep overlay is open: capital `Y` runs the plan shown, anything else cancels.
    fn on_sweep_key(&mut self, key: KeyEvent, view: SweepView) -> Vec<Effect> {
        if is_ctrl_c(&key) {
            self.quit = true;
            return vec![Effect::Quit];
        }
        match view {
            SweepView::Plan(plan)
                if key.code == KeyCode::Char('Y')
                    && plan.active_detection_complete
                    && plan.drop_count() > 0 =>
            {
                self.overlay = Overlay::Sweep(SweepView::Running {
                    plan: plan.clone(),
                    done: 0,
                    current: None,
                });
                vec![Effect::RunSweep(plan)]
            }
            // A running sweep is not interrupted by a stray key.
            SweepView::Running { .. } => vec![],
            _ => {
                self.overlay = Overlay::None;
                vec![]
            }
        }
    }

    /// Keeps the public writes a snapshot shows (each finding once, updated in place), newest
    /// first.
    fn take_public_writes(&mut self, snap: &Snapshot) {
        if snap.public_writes.is_empty() {
            return;
        }
        crate::domain::public_write::remember_public_writes(
            &mut self.public_writes,
            &snap.public_writes,
            snap.taken_at,
        );
        self.public_writes
            .sort_by_key(|w| std::cmp::Reverse(w.last_seen.or(w.since)));
        self.public_writes.truncate(MAX_PUBLIC_WRITES);
    }

    /// Keeps the newest ended episodes for the pane; rings for a new cross-invocation one.
    fn take_episodes(&mut self, ended: Vec<Episode>, ongoing: Vec<Episode>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let new_collision = ongoing
            .iter()
            .chain(&ended)
            .any(|e| e.cross_invocation && !self.belled.contains(&e.id));
        if self.bell && new_collision {
            effects.push(Effect::Bell);
        }
        self.belled = ongoing
            .iter()
            .filter(|e| e.cross_invocation)
            .map(|e| e.id.clone())
            .collect();
        if !ended.is_empty() {
            let mut ended = ended;
            ended.reverse();
            ended.append(&mut self.episodes);
            // An episode completed later from the server's log comes again under its id: the
            // newest wins.
            let mut ids = std::collections::HashSet::new();
            ended.retain(|e| ids.insert(e.id.clone()));
            ended.truncate(MAX_INCIDENTS);
            self.episodes = ended;
        }
        self.ongoing = ongoing;
        if !self.paused {
            self.model.incidents = self.incident_rows();
        }
        effects
    }

    /// Incident rows: ended episodes (replaying: ended by the replay clock) matching the filter.
    fn incident_rows(&self) -> Vec<(RowKey, usize)> {
        let until = self.replay.as_ref().map(|r| r.clock);
        self.episodes
            .iter()
            .enumerate()
            .filter(|(_, e)| match until {
                Some(c) => e.outcome != Outcome::Ongoing && e.ended_at.is_some_and(|t| t <= c),
                None => true,
            })
            .filter(|(_, e)| {
                let mut fields = vec![
                    e.waiter_namespace.as_deref(),
                    e.waiter_worker.as_deref(),
                    Some(e.waiter_application_name.as_str()),
                    Some(e.waiter_database.as_str()),
                    e.relation.as_deref(),
                ];
                fields.extend(e.blocker_namespaces.iter().map(|n| Some(n.as_str())));
                matches_filter(&self.filter, &fields)
            })
            .map(|(i, e)| (RowKey::Incident(e.id.clone()), i))
            .collect()
    }

    fn move_selection(&mut self, delta: isize) {
        let pane = self.focus;
        let keys = self.model.keys(pane);
        if keys.is_empty() {
            return;
        }
        let cur = self.selected_index(pane).unwrap_or(0) as isize;
        let next = (cur.saturating_add(delta)).clamp(0, keys.len() as isize - 1) as usize;
        self.selected[pane.index()] = Some(keys[next].clone());
        self.selected_idx[pane.index()] = next;
        // Freeze the current order of every pane for a moment.
        let orders = Pane::ALL.map(|p| self.model.keys(p));
        let until =
            self.now + chrono::Duration::from_std(FREEZE).expect("FREEZE is a small constant");
        self.frozen = Some((until, orders));
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.code == KeyCode::Char('c')
        && key
            .modifiers
            .contains(crossterm::event::KeyModifiers::CONTROL)
}

/// Which overlay, at which stage: scrolling starts over when it changes.
fn overlay_stage(o: &Overlay) -> u8 {
    match o {
        Overlay::None => 0,
        Overlay::Help => 1,
        Overlay::Detail(_) => 2,
        Overlay::Sweep(SweepView::Plan(_)) => 3,
        Overlay::Sweep(SweepView::Finished(_)) => 4,
        Overlay::Sweep(_) => 5,
        Overlay::Signal(SignalView::Plan(_)) => 6,
        Overlay::Signal(SignalView::Finished(_)) => 7,
        Overlay::Signal(_) => 8,
    }
}
