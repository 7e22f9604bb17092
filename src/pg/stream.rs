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
use crate::domain::serverlog::LogMatcher;
use crate::domain::snapshot::{Snapshot, WarningCode};
use crate::domain::sqlite::{ReportSource, SqliteReport};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::flightlog::{FlightLog, FlightLogError, ANSWER_WITHIN};
use crate::pg::poller::{group_targets, spawn_pollers, GroupResult, PollControl};
use crate::pg::serverlog::{LogRead, LogReader, LogStatus};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
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

/// What a stream reads besides the polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Read each server's own log (`jsonlog` / `csvlog`) for lock waits the polls miss, where the
    /// server writes one and the role may read it (issue 28).
    pub server_log: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { server_log: true }
    }
}

impl SnapshotStream {
    /// Starts the pollers and the aggregator on the current runtime (with the server log read
    /// where it can be).
    pub fn spawn(
        settings: &Settings,
        interval: Duration,
        env: Arc<dyn Environment + Send + Sync>,
        flight_log: Option<FlightLog>,
        sqlite: Option<ReportSource>,
    ) -> SnapshotStream {
        Self::spawn_with(
            settings,
            interval,
            env,
            flight_log,
            sqlite,
            StreamOptions::default(),
        )
    }

    /// [`SnapshotStream::spawn`] with options.
    pub fn spawn_with(
        settings: &Settings,
        interval: Duration,
        env: Arc<dyn Environment + Send + Sync>,
        flight_log: Option<FlightLog>,
        sqlite: Option<ReportSource>,
        options: StreamOptions,
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
            env.clone(),
            control_rx,
            poll_tx,
        );
        let (log_tx, mut log_rx) = mpsc::unbounded_channel::<LogRead>();
        let mut wakes: Vec<Arc<Notify>> = Vec::new();
        if options.server_log {
            for members in group_targets(&settings.databases) {
                let reader = LogReader::new(
                    settings.databases[members[0]].target.clone(),
                    settings.session.clone(),
                    env.clone(),
                );
                let wake = Arc::new(Notify::new());
                wakes.push(wake.clone());
                tasks.push(spawn_log_reader(
                    reader,
                    control.subscribe(),
                    wake,
                    log_tx.clone(),
                ));
            }
        }
        drop(log_tx);
        let mut matcher = LogMatcher::new(&settings.convention.app_prefix);
        let log_on = options.server_log;
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
            let mut log_status: BTreeMap<String, LogStatus> = BTreeMap::new();
            let mut from_log: Vec<Episode> = Vec::new();
            let mut pruned_at = Utc::now();
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
                    Some(read) = log_rx.recv() => {
                        if !read.events.is_empty() {
                            let open = tracker.ongoing();
                            from_log.extend(matcher.accept(&read.server, read.events, &open, Utc::now()));
                        }
                        if matches!(read.status, LogStatus::Reading { .. }) && !read.behind {
                            from_log.extend(matcher.release(&read.server, read.started_at));
                        }
                        log_status.insert(read.server.clone(), read.status);
                        continue;
                    }
                    else => return,
                };
                snapshot.attach_sqlite(sqlite_reports.clone());
                let ended_public_writes =
                    track_public_writes(&mut writes, &mut snapshot, &readings);
                if log_on {
                    add_log_warnings(&mut snapshot, &log_status);
                }
                let snapshot = Arc::new(snapshot);
                let mut ended = tracker.observe(&snapshot);
                if log_on {
                    let now = Utc::now();
                    if !ended.is_empty() || snapshot.sessions.iter().any(|s| !s.blocked_by.is_empty()) {
                        // Lock waits going on or just ended: their errors are due in the log.
                        for w in &wakes {
                            w.notify_one();
                        }
                    }
                    matcher.note_snapshot(&snapshot);
                    ended = matcher.note_poll_ended(ended, now, |server| {
                        matches!(log_status.get(server), Some(LogStatus::Reading { .. }))
                    });
                    ended.extend(matcher.flush(now));
                    ended.append(&mut from_log);
                    if (now - pruned_at).num_seconds() >= 10 {
                        matcher.prune(now);
                        pruned_at = now;
                    }
                }
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

/// Says once in the snapshot (a warning, with its code) why a server's log is not read.
fn add_log_warnings(snapshot: &mut Snapshot, status: &BTreeMap<String, LogStatus>) {
    for (server, s) in status {
        if let LogStatus::Unavailable(why) = s {
            snapshot.warnings.push(format!("{server}: {why}"));
            if !snapshot
                .warning_codes
                .contains(&WarningCode::ServerLogUnavailable)
            {
                snapshot
                    .warning_codes
                    .push(WarningCode::ServerLogUnavailable);
            }
        }
    }
}

/// A log that gave no new bytes is read again after this long (or at the refresh interval, if
/// longer), unless a poll sees a lock wait and wakes the reader: a quiet log then costs one
/// statement per this long. Errors are never lost by waiting (the log keeps them): they come
/// later, at most this long after they were written.
pub const QUIET_LOG_EVERY: Duration = Duration::from_secs(4);

/// Reads one server's log on its own task (its own session), and sends each read to the
/// aggregator: a slow read never holds up a poll. It reads once per refresh interval while the log
/// grows or a poll has seen a lock wait (`wake`), else once per [`QUIET_LOG_EVERY`].
fn spawn_log_reader(
    mut reader: LogReader,
    mut control: watch::Receiver<PollControl>,
    wake: Arc<Notify>,
    tx: mpsc::UnboundedSender<LogRead>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let read = reader.poll().await;
            let (behind, quiet) = (read.behind, read.bytes == 0);
            if tx.send(read).is_err() {
                return;
            }
            if behind {
                // A backlog: go on at once (each read is bounded), but let others run.
                tokio::task::yield_now().await;
                continue;
            }
            let interval = control.borrow().interval;
            let pause = if quiet {
                interval.max(QUIET_LOG_EVERY)
            } else {
                interval
            };
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // Woken: still at most one read per interval.
                _ = wake.notified() => tokio::time::sleep_until(started + interval).await,
                changed = control.changed() => if changed.is_err() { return },
            }
        }
    })
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
