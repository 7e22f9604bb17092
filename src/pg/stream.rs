//! The snapshot stream: pollers (one task per server group) and the aggregator (one task), as the
//! dashboard and `record` both run them. A caller gets finished snapshots, shared (`Arc`), and never
//! builds one on its own thread: the dashboard's UI loop only builds rows and draws, and the recorder
//! only writes.
//!
//! The aggregator task also feeds each snapshot to the lock-wait [`EpisodeTracker`]: every update
//! carries the episodes that ended in it, and with a flight log they are appended there too, so the
//! history outlives the process.

use crate::domain::aggregate::Aggregator;
use crate::domain::incidents::{Episode, EpisodeTracker};
use crate::domain::public_write::{PublicWrite, PublicWriteTracker};
use crate::domain::snapshot::Snapshot;
use crate::domain::sqlite::{ReportSource, SqliteReport};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::flightlog::{FlightLog, FlightLogError, ANSWER_WITHIN};
use crate::pg::poller::{group_targets, spawn_pollers, GroupResult, PollControl};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// One finished snapshot with what it took.
#[derive(Debug, Clone)]
pub struct Update {
    pub snapshot: Arc<Snapshot>,
    /// How long the poll of each database's server group took.
    pub latencies: Vec<(String, Duration)>,
    pub at: DateTime<Utc>,
    /// Lock-wait episodes that ended in this snapshot.
    pub ended: Vec<Episode>,
    /// The episodes still going on, as they stand.
    pub ongoing: Vec<Episode>,
    /// Appending this update's ended episodes to the flight log failed (the message names the
    /// file). The episodes are still in this update.
    pub flight_log_error: Option<String>,
    /// Public writes that ended in this snapshot (also appended to the flight log).
    pub ended_public_writes: Vec<PublicWrite>,
}

/// The running stream; its tasks stop when it is dropped.
pub struct SnapshotStream {
    pub updates: mpsc::UnboundedReceiver<Update>,
    control: watch::Sender<PollControl>,
    tasks: Vec<JoinHandle<()>>,
    groups: usize,
}

impl SnapshotStream {
    /// Starts the pollers and the aggregator on the current runtime.
    pub fn spawn(
        settings: &Settings,
        interval: Duration,
        env: Arc<dyn Environment + Send + Sync>,
        flight_log: Option<FlightLog>,
        sqlite: Option<ReportSource>,
    ) -> SnapshotStream {
        let (control, control_rx) = watch::channel(PollControl {
            interval,
            refresh_seq: 0,
        });
        let (poll_tx, mut polls) = mpsc::unbounded_channel::<GroupResult>();
        let mut tasks = spawn_pollers(
            &settings.databases,
            &settings.session,
            &crate::pg::probe::ProbeOptions::of(&settings.convention),
            env,
            control_rx,
            poll_tx,
        );
        let groups = group_targets(&settings.databases).len();
        let names: Vec<String> = settings.databases.iter().map(|d| d.name.clone()).collect();
        let mut aggregator = Aggregator::new(settings.convention.clone(), names, groups);
        let (tx, updates) = mpsc::unbounded_channel();
        let mut tracker = EpisodeTracker::new();
        let mut writes = PublicWriteTracker::new();
        let mut flight_log = FlightLogWriter::new(flight_log);
        let (sqlite_tx, mut sqlite_rx) = mpsc::unbounded_channel::<Vec<SqliteReport>>();
        if let Some(source) = sqlite {
            tasks.push(spawn_sqlite_observer(
                source,
                control.subscribe(),
                sqlite_tx,
            ));
        }
        tasks.push(tokio::spawn(async move {
            let mut sqlite_reports: Vec<SqliteReport> = Vec::new();
            let mut polled = false;
            loop {
                let mut readings = Vec::new();
                let (mut snapshot, latencies) = tokio::select! {
                    Some(result) = polls.recv() => {
                        polled = true;
                        let latencies = latencies(&result);
                        readings.clone_from(&result.observation.shared.counters);
                        (aggregator.accept(result.group, result.observation), latencies)
                    }
                    Some(reports) = sqlite_rx.recv() => {
                        sqlite_reports = reports;
                        // Once PostgreSQL has been polled, the next poll carries them. Before that,
                        // or with SQLite targets alone, they are the update, on the picture of
                        // nothing read yet, as old as this observation.
                        if polled {
                            continue;
                        }
                        (aggregator.empty(Utc::now()), Vec::new())
                    }
                    else => return,
                };
                snapshot.attach_sqlite(sqlite_reports.clone());
                let ended_public_writes =
                    track_public_writes(&mut writes, &mut snapshot, &readings);
                let snapshot = Arc::new(snapshot);
                let ended = tracker.observe(&snapshot);
                let flight_log_error = flight_log
                    .append(&ended)
                    .await
                    .or(flight_log.append_public_writes(&ended_public_writes).await);
                let update = Update {
                    snapshot,
                    latencies,
                    at: Utc::now(),
                    ended,
                    ongoing: tracker.ongoing(),
                    flight_log_error,
                    ended_public_writes,
                };
                if tx.send(update).is_err() {
                    return;
                }
            }
        }));
        SnapshotStream {
            updates,
            control,
            tasks,
            groups,
        }
    }

    /// Poller groups (one per server): a recorder writes at most one merged snapshot per interval.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Polls every group now.
    pub fn refresh(&self) {
        self.control.send_modify(|c| c.refresh_seq += 1);
    }

    pub fn set_interval(&self, interval: Duration) {
        self.control.send_modify(|c| c.interval = interval);
    }
}

impl Drop for SnapshotStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The aggregator's end of the flight log: appends each update's ended episodes off the async
/// threads, and gives up on a file system that does not answer within [`ANSWER_WITHIN`] (a stale
/// network mount), saying so with every later update that had episodes to write instead of piling
/// up threads stuck on it.
struct FlightLogWriter {
    log: Option<FlightLog>,
    gave_up: Option<String>,
}

impl FlightLogWriter {
    fn new(log: Option<FlightLog>) -> Self {
        FlightLogWriter { log, gave_up: None }
    }

    /// Appends ended public writes, as [`FlightLogWriter::append`] does episodes.
    async fn append_public_writes(&mut self, ended: &[PublicWrite]) -> Option<String> {
        if ended.is_empty() {
            return None;
        }
        if let Some(message) = &self.gave_up {
            return Some(message.clone());
        }
        let log = self.log.as_ref()?;
        match log
            .append_public_writes_within(ended.to_vec(), ANSWER_WITHIN)
            .await
        {
            Ok(()) => None,
            Err(e @ FlightLogError::NoAnswer { .. }) => {
                let message = e.to_write_message();
                self.gave_up = Some(message.clone());
                Some(message)
            }
            Err(e) => Some(e.to_write_message()),
        }
    }

    /// Appends `ended`; the message of what went wrong, if anything did.
    async fn append(&mut self, ended: &[Episode]) -> Option<String> {
        if ended.is_empty() {
            return None;
        }
        if let Some(message) = &self.gave_up {
            return Some(message.clone());
        }
        let log = self.log.as_ref()?;
        match log.append_within(ended.to_vec(), ANSWER_WITHIN).await {
            Ok(()) => None,
            Err(e @ FlightLogError::NoAnswer { .. }) => {
                let message = e.to_write_message();
                self.gave_up = Some(message.clone());
                Some(message)
            }
            Err(e) => Some(e.to_write_message()),
        }
    }
}

/// Feeds the public-write tracker: the snapshot gets the statistics findings still open (with a
/// warning each) beside its lock findings; returns the findings that ended.
fn track_public_writes(
    tracker: &mut PublicWriteTracker,
    snapshot: &mut Snapshot,
    readings: &[crate::domain::public_write::CounterReading],
) -> Vec<PublicWrite> {
    use crate::domain::snapshot::WarningCode;
    let tracked = tracker.observe(
        snapshot.taken_at,
        &snapshot.sessions,
        &snapshot.public_writes,
        readings,
    );
    for w in tracked.statistics {
        snapshot.warning_codes.push(WarningCode::PublicWrite);
        snapshot
            .warnings
            .push(format!("public write: {}", w.describe()));
        snapshot.public_writes.push(w);
    }
    tracked.ended
}

/// The poll time of each database of a group's result (they were polled together).
pub fn latencies(result: &GroupResult) -> Vec<(String, Duration)> {
    result
        .observation
        .databases
        .iter()
        .map(|d| (d.name.clone(), result.elapsed))
        .collect()
}

/// Observes the SQLite targets once per refresh interval, off the async threads (it reads `/proc`),
/// and sends each result to the aggregator.
fn spawn_sqlite_observer(
    source: ReportSource,
    mut control: watch::Receiver<PollControl>,
    tx: mpsc::UnboundedSender<Vec<SqliteReport>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let source = Arc::new(std::sync::Mutex::new(source));
        loop {
            let s = Arc::clone(&source);
            let read = tokio::task::spawn_blocking(move || {
                let mut f = s.lock().unwrap_or_else(|p| p.into_inner());
                f(Utc::now())
            })
            .await;
            if let Ok(reports) = read {
                if tx.send(reports).is_err() {
                    return;
                }
            }
            let interval = control.borrow().interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = control.changed() => if changed.is_err() { return },
            }
        }
    })
}
