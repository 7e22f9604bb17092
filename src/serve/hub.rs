//! What `serve` holds in memory and hands to every reader: the latest snapshot and its summary,
//! the ended lock-wait episodes (bounded), the event stream with a bounded replay history, and the
//! metrics registry.
//!
//! One producer (the snapshot stream's updates, through [`Hub::publish`]), many readers. No reader
//! ever waits for the database: `/metrics`, `/api/v1/*` and the event stream only read what the last
//! poll published. Every buffer is bounded: the episode memory ([`EPISODES_KEPT`]), the replay
//! history ([`EVENTS_KEPT`]) and each event subscriber ([`SUBSCRIBER_QUEUE`]: a reader that falls
//! that far behind is dropped, never buffered for).

use crate::domain::incidents::Episode;
use crate::domain::snapshot::{ReadStatus, SchemaStatus, Snapshot};
use crate::domain::summary::{summarize, Summary, WaitStarts};
use crate::pg::stream::Update;
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// Ended episodes kept for `/api/v1/incidents` (the flight log keeps them all, on disk).
pub const EPISODES_KEPT: usize = 10_000;
/// Events kept for a client that resumes with `Last-Event-ID`.
pub const EVENTS_KEPT: usize = 1_024;
/// Events queued for one subscriber before it is dropped as too slow.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// The latest poll, as every reader sees it.
#[derive(Debug, Clone)]
pub struct Latest {
    /// Counts the polls published (1 for the first): a client that has this one skips it.
    pub poll: u64,
    pub snapshot: Arc<Snapshot>,
    pub summary: Arc<Summary>,
    pub poll_duration: Duration,
    /// Each database server group's poll time, for the dashboard's header.
    pub latencies: Arc<Vec<(String, Duration)>>,
    /// The lock waits still going on at this poll.
    pub ongoing: Arc<Vec<Episode>>,
    pub at: DateTime<Utc>,
}

/// What a dashboard reading a `serve` needs per poll (`GET /api/v1/live`): the picture (left out
/// when the client already has this poll), the waits going on, and the episodes that ended after
/// the client's last one. Shared by the route and the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveDocument {
    pub schema_version: u32,
    /// When this `serve` process started: poll and episode numbers count within one instance.
    pub instance: DateTime<Utc>,
    pub poll: u64,
    pub at: DateTime<Utc>,
    /// `[database group, milliseconds]` per poll.
    pub latencies_ms: Vec<(String, f64)>,
    pub snapshot: Option<Snapshot>,
    pub ongoing: Vec<Episode>,
    /// Ended episodes numbered after the `after` the client gave, oldest first.
    pub ended: Vec<Episode>,
    /// The number of the newest ended episode included (or the `after` given): the next `after`.
    pub ended_seq: u64,
}

/// The borrowed form [`LiveDocument`] is served from (no copy of the snapshot per request).
#[derive(Debug, Serialize)]
pub struct LiveView<'a> {
    pub schema_version: u32,
    pub instance: DateTime<Utc>,
    pub poll: u64,
    pub at: DateTime<Utc>,
    pub latencies_ms: Vec<(String, f64)>,
    pub snapshot: Option<&'a Snapshot>,
    pub ongoing: &'a [Episode],
    pub ended: Vec<Episode>,
    pub ended_seq: u64,
}

/// One server-sent event: `id`, `event` (`summary` or `episode`) and the JSON `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub kind: &'static str,
    pub data: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EpisodeLabels {
    server: String,
    database: String,
    outcome: String,
}

/// The shared state of a `serve` process.
pub struct Hub {
    /// Shared with the metrics collector, which reads it at scrape time.
    latest: Arc<RwLock<Option<Latest>>>,
    /// Ended episodes with their sequence numbers (1 for the first ended episode).
    episodes: Mutex<VecDeque<(u64, Episode)>>,
    /// Ended writes of test sessions into shared schemas (the last [`EPISODES_KEPT`]).
    public_writes: Mutex<VecDeque<crate::domain::public_write::PublicWrite>>,
    episode_seq: AtomicU64,
    polls: AtomicU64,
    /// When this hub was made: numbers in [`LiveDocument`] count within it.
    pub started: DateTime<Utc>,
    history: Mutex<VecDeque<Arc<Event>>>,
    events: broadcast::Sender<Arc<Event>>,
    next_id: AtomicU64,
    registry: Registry,
    episodes_total: Family<EpisodeLabels, Counter>,
    wait_seconds: Histogram,
    /// The exposition, encoded once per poll: every scrape until the next poll gets these bytes
    /// (building the gauges from a 1,000-session snapshot per scrape made `/metrics` p99 21 ms with
    /// 50 concurrent scrapers).
    exposition: RwLock<Option<Arc<str>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// The metrics computed from the latest snapshot at scrape time.
#[derive(Debug)]
struct SnapshotCollector(Arc<RwLock<Option<Latest>>>);

/// The first event id of an instance started at `started`: later instances start higher (ids stay
/// below 2^53, exact in JavaScript).
fn first_event_id(started: DateTime<Utc>) -> u64 {
    u64::try_from(started.timestamp_millis()).unwrap_or(0) * 1_000 + 1
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        let started = Utc::now();
        let (events, _) = broadcast::channel(SUBSCRIBER_QUEUE);
        let latest = Arc::new(RwLock::new(None));
        let episodes_total = Family::<EpisodeLabels, Counter>::default();
        // Lock waits worth telling apart: a fraction of a poll to minutes.
        let wait_seconds = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]);
        let mut registry = Registry::default();
        registry.register(
            "pgswarm_lock_wait_episodes",
            "Lock waits that ended, by how they ended",
            episodes_total.clone(),
        );
        registry.register_with_unit(
            "pgswarm_lock_wait",
            "How long ended lock waits lasted",
            Unit::Seconds,
            wait_seconds.clone(),
        );
        registry.register_collector(Box::new(SnapshotCollector(latest.clone())));
        Arc::new(Hub {
            latest,
            episodes: Mutex::new(VecDeque::new()),
            public_writes: Mutex::new(VecDeque::new()),
            episode_seq: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            started,
            history: Mutex::new(VecDeque::new()),
            events,
            // Ids go on increasing across restarts (the start time's milliseconds, times 1,000):
            // a client resuming with an id from an earlier instance gets this one's whole history
            // and nothing of it is skipped as already seen.
            next_id: AtomicU64::new(first_event_id(started)),
            registry,
            episodes_total,
            wait_seconds,
            exposition: RwLock::new(None),
        })
    }

    /// The newest published poll (`None` before the first one).
    pub fn latest(&self) -> Option<Latest> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes one update of the snapshot stream: it becomes the latest picture, its ended episodes
    /// are remembered and counted, and one `summary` event plus one `episode` event per ended
    /// episode go to the subscribers.
    pub fn publish(&self, update: &Update) {
        let summary = Arc::new(summarize(&update.snapshot, &WaitStarts::default()));
        let latest = Latest {
            poll: self.polls.fetch_add(1, Ordering::Relaxed) + 1,
            latencies: Arc::new(update.latencies.clone()),
            ongoing: Arc::new(update.ongoing.clone()),
            snapshot: update.snapshot.clone(),
            summary: summary.clone(),
            poll_duration: update
                .latencies
                .iter()
                .map(|(_, d)| *d)
                .max()
                .unwrap_or_default(),
            at: update.at,
        };
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Some(latest);
        // Every database's counters exist from its first poll, at zero: a rate over a counter that
        // appears only with its first event would miss that event.
        for d in &update.snapshot.databases {
            if let Some(server) = &d.server {
                for outcome in ENDED_OUTCOMES {
                    drop(self.episodes_total.get_or_create(&EpisodeLabels {
                        server: server.clone(),
                        database: d.name.clone(),
                        outcome: outcome_label(outcome),
                    }));
                }
            }
        }
        {
            let mut kept = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
            for e in &update.ended {
                self.episodes_total
                    .get_or_create(&EpisodeLabels {
                        server: e.server.clone(),
                        database: e.waiter_database.clone(),
                        outcome: outcome_label(e.outcome),
                    })
                    .inc();
                self.wait_seconds.observe(e.duration_s.max(0.0));
                if kept.len() == EPISODES_KEPT {
                    kept.pop_front();
                }
                let seq = self.episode_seq.fetch_add(1, Ordering::Relaxed) + 1;
                kept.push_back((seq, e.clone()));
            }
        }
        // Everything the exposition reads is in place: encode it for the scrapes of this poll.
        if let Ok(text) = self.encode_fresh() {
            *self.exposition.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(text));
        }
        {
            let mut kept = self.public_writes.lock().unwrap_or_else(|p| p.into_inner());
            for w in &update.ended_public_writes {
                if kept.len() == EPISODES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(w.clone());
            }
        }
        self.emit("summary", serde_json::to_string(&*summary));
        for e in &update.ended {
            self.emit("episode", serde_json::to_string(e));
        }
        for w in &update.ended_public_writes {
            self.emit("public_write", serde_json::to_string(w));
        }
    }

    fn emit(&self, kind: &'static str, data: Result<String, serde_json::Error>) {
        let Ok(data) = data else { return };
        let event = Arc::new(Event {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            data,
        });
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            if history.len() == EVENTS_KEPT {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    /// A subscription, with the kept events after `last_id` to send first (a resumed client).
    pub fn subscribe(
        &self,
        last_id: Option<u64>,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        // Subscribe before reading the history, so that nothing falls between the two; the
        // caller skips ids it has already sent.
        let rx = self.events.subscribe();
        let backlog = match last_id {
            None => Vec::new(),
            Some(last) => self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|e| e.id > last)
                .cloned()
                .collect(),
        };
        (backlog, rx)
    }

    /// The ended public writes held in memory, oldest first.
    pub fn public_writes(&self) -> Vec<crate::domain::public_write::PublicWrite> {
        self.public_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The ended episodes held in memory, oldest first.
    pub fn episodes(&self) -> Vec<Episode> {
        self.episodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The ended episodes numbered after `after`, oldest first, and the number of the newest
    /// (`after` itself when there is none).
    pub fn episodes_after(&self, after: u64) -> (Vec<Episode>, u64) {
        let kept = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = after;
        let mut out = Vec::new();
        for (seq, e) in kept.iter().filter(|(seq, _)| *seq > after) {
            last = *seq;
            out.push(e.clone());
        }
        (out, last)
    }

    /// The OpenMetrics exposition of the latest poll (encoded when it was published; before the
    /// first poll, encoded now).
    pub fn encode_metrics(&self) -> Result<Arc<str>, std::fmt::Error> {
        if let Some(text) = self
            .exposition
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(text);
        }
        self.encode_fresh().map(Arc::from)
    }

    fn encode_fresh(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerDb {
    server: String,
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerOnly {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbOnly {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// Gauges from the latest snapshot: labels are servers, databases and states only (bounded);
/// runs and pids stay in the JSON API.
#[derive(Debug, Default, PartialEq)]
pub struct Gauges {
    pub blocked: BTreeMap<(String, String), f64>,
    pub longest_wait: BTreeMap<(String, String), f64>,
    pub collisions: BTreeMap<(String, String), f64>,
    pub invocations: BTreeMap<String, f64>,
    pub orphaned: BTreeMap<String, f64>,
    pub database_up: BTreeMap<String, f64>,
    pub lock_table: BTreeMap<String, f64>,
    pub connections: BTreeMap<String, f64>,
    pub oldest_xact: BTreeMap<String, f64>,
    pub idle_in_xact: BTreeMap<String, f64>,
}

/// Computes the gauges of a snapshot (pure: tested without a server).
pub fn gauges_of(snap: &Snapshot) -> Gauges {
    let mut g = Gauges::default();
    for d in &snap.databases {
        let up = matches!(d.read, ReadStatus::Read | ReadStatus::SchemasFailed);
        g.database_up
            .insert(d.name.clone(), f64::from(u8::from(up)));
        g.orphaned.entry(d.name.clone()).or_insert(0.0);
        if let Some(server) = &d.server {
            g.blocked
                .entry((server.clone(), d.name.clone()))
                .or_insert(0.0);
            g.collisions
                .entry((server.clone(), d.name.clone()))
                .or_insert(0.0);
            g.longest_wait
                .entry((server.clone(), d.name.clone()))
                .or_insert(0.0);
        }
    }
    for s in snap.sessions.iter().filter(|s| !s.blocked_by.is_empty()) {
        let key = (s.server.clone(), s.database.clone());
        *g.blocked.entry(key.clone()).or_insert(0.0) += 1.0;
        let w = g.longest_wait.entry(key).or_insert(0.0);
        *w = w.max(s.waiting_s.unwrap_or(0.0));
    }
    let mut colliding = std::collections::BTreeSet::new();
    for e in snap.blocking.iter().filter(|e| e.cross_invocation) {
        if colliding.insert((e.server.clone(), e.blocked_pid)) {
            *g.collisions
                .entry((e.server.clone(), e.database.clone()))
                .or_insert(0.0) += 1.0;
        }
    }
    for state in ["blocked", "live", "stale"] {
        g.invocations.insert(state.into(), 0.0);
    }
    for i in &snap.invocations {
        let state = match (i.live, i.blocked > 0) {
            (true, true) => "blocked",
            (true, false) => "live",
            (false, _) => "stale",
        };
        *g.invocations.entry(state.into()).or_insert(0.0) += 1.0;
    }
    for s in snap
        .schemas
        .iter()
        .filter(|s| s.status == SchemaStatus::Orphaned)
    {
        *g.orphaned.entry(s.database.clone()).or_insert(0.0) += 1.0;
    }
    for s in &snap.servers {
        if let Some(f) = s.lock_table_fill {
            g.lock_table.insert(s.server.clone(), f);
        }
        g.connections.insert(s.server.clone(), s.connections as f64);
        g.oldest_xact
            .insert(s.server.clone(), s.oldest_xact_age_s.unwrap_or(0.0));
        g.idle_in_xact
            .insert(s.server.clone(), s.idle_in_transaction as f64);
    }
    g
}

fn encode_gauge<L: EncodeLabelSet + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let latest = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        encode_gauge(
            &mut encoder,
            "pgswarm_build_info",
            "The pgswarm version serving these metrics",
            None,
            [(
                VersionLabel {
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                1.0,
            )],
        )?;
        let Some(latest) = latest else {
            return Ok(());
        };
        let g = gauges_of(&latest.snapshot);
        let sd = |m: BTreeMap<(String, String), f64>| {
            m.into_iter()
                .map(|((server, database), v)| (ServerDb { server, database }, v))
                .collect::<Vec<_>>()
        };
        let so = |m: BTreeMap<String, f64>| {
            m.into_iter()
                .map(|(server, v)| (ServerOnly { server }, v))
                .collect::<Vec<_>>()
        };
        let db = |m: BTreeMap<String, f64>| {
            m.into_iter()
                .map(|(database, v)| (DbOnly { database }, v))
                .collect::<Vec<_>>()
        };
        let secs = Some(&Unit::Seconds);
        encode_gauge(
            &mut encoder,
            "pgswarm_blocked_sessions",
            "Sessions waiting for a lock another session holds or is queued for",
            None,
            sd(g.blocked),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_longest_lock_wait",
            "The longest current lock wait",
            secs,
            sd(g.longest_wait),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_cross_invocation_collisions",
            "Sessions held up by another test run (another namespace)",
            None,
            sd(g.collisions),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_invocations",
            "Test runs by state: blocked (a session waits), live (sessions, none waiting), stale (schemas only)",
            None,
            g.invocations
                .into_iter()
                .map(|(state, v)| (StateLabel { state }, v)),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_orphaned_schemas",
            "Test schemas whose run has no session anywhere (what a sweep would drop)",
            None,
            db(g.orphaned),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_database_up",
            "1 when the database's sessions were read in the latest poll",
            None,
            db(g.database_up),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_lock_table_used_ratio",
            "Rows in pg_locks against max_locks_per_transaction x (max_connections + max_prepared_transactions)",
            None,
            so(g.lock_table),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_connections",
            "Client sessions on the server (pgswarm's own left out)",
            None,
            so(g.connections),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_oldest_transaction",
            "Age of the oldest open transaction (prepared ones included)",
            secs,
            so(g.oldest_xact),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_idle_in_transaction_sessions",
            "Sessions idle in a transaction",
            None,
            so(g.idle_in_xact),
        )?;
        encode_gauge(
            &mut encoder,
            "pgswarm_poll_duration",
            "How long the latest poll took (the slowest server group)",
            secs,
            [(NoLabels, latest.poll_duration.as_secs_f64())],
        )?;
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(
        &self,
        _encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// The outcomes an ended episode can have (`ongoing` never ends one).
const ENDED_OUTCOMES: [crate::domain::incidents::Outcome; 6] = [
    crate::domain::incidents::Outcome::Acquired,
    crate::domain::incidents::Outcome::GaveUp,
    crate::domain::incidents::Outcome::BlockerGone,
    crate::domain::incidents::Outcome::WaiterGone,
    crate::domain::incidents::Outcome::Unknown,
    crate::domain::incidents::Outcome::Deadlock,
];

/// An outcome as its JSON name (`gave_up`), the label value dashboards and alerts match on.
fn outcome_label(o: crate::domain::incidents::Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::snapshot::{build_snapshot, Convention};
    use tokio::sync::broadcast::error::RecvError;

    fn update() -> Update {
        Update {
            snapshot: Arc::new(build_snapshot(
                fixtures::collision(),
                &Convention::default(),
            )),
            latencies: vec![("platform".into(), Duration::from_millis(3))],
            at: fixtures::fixture_now(),
            ended: Vec::new(),
            ongoing: Vec::new(),
            flight_log_error: None,
            ended_public_writes: Vec::new(),
        }
    }

    /// A subscriber that never reads is dropped once it falls behind; nothing is kept for it, and
    /// the replay history stays bounded however many polls go by.
    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_memory_stays_bounded() {
        let hub = Hub::new();
        let (_, mut slow) = hub.subscribe(None);
        let u = update();
        for _ in 0..(EVENTS_KEPT * 3) {
            hub.publish(&u);
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(_))));
        assert_eq!(hub.history.lock().unwrap().len(), EVENTS_KEPT);
        // A client resuming after an id it saw gets exactly what followed, from the history.
        let last = hub.history.lock().unwrap().back().unwrap().id;
        let (backlog, _) = hub.subscribe(Some(last - 5));
        let ids: Vec<u64> = backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, ((last - 4)..=last).collect::<Vec<_>>());
        assert!(hub.latest().is_some());
        assert_eq!(
            hub.latest().unwrap().summary.blocked,
            u.snapshot.blocked_sessions()
        );
    }

    /// The exposition a scrape gets is the one encoded at the latest poll: the same bytes a fresh
    /// encoding gives, and a new poll replaces it.
    #[test]
    fn the_exposition_is_encoded_once_per_poll() {
        let hub = Hub::new();
        let before = hub.encode_metrics().unwrap();
        assert!(!before.contains("pgswarm_blocked_sessions"), "{before}");
        hub.publish(&update());
        let cached = hub.encode_metrics().unwrap();
        assert_eq!(&*cached, hub.encode_fresh().unwrap().as_str());
        assert!(cached.contains("pgswarm_blocked_sessions"), "{cached}");
        assert!(Arc::ptr_eq(&cached, &hub.encode_metrics().unwrap()));
    }

    #[test]
    fn gauges_count_blocked_sessions_and_collisions_per_database() {
        let snap = build_snapshot(fixtures::collision(), &Convention::default());
        let g = gauges_of(&snap);
        let blocked: f64 = g.blocked.values().sum();
        assert_eq!(blocked as usize, snap.blocked_sessions());
        let collisions: f64 = g.collisions.values().sum();
        let expected = snap
            .blocking
            .iter()
            .filter(|e| e.cross_invocation)
            .map(|e| (e.server.clone(), e.blocked_pid))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(collisions as usize, expected);
        assert!(g.database_up.values().all(|v| *v == 1.0));
        let runs: f64 = g.invocations.values().sum();
        assert_eq!(runs as usize, snap.invocations.len());
    }
}
