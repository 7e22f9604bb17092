//! Continuous polling for the dashboard: one task per server, results sent as messages.
//!
//! The dashboard must never wait on a database, and one slow or dead server must never hold up the
//! others. So configured databases are grouped by the host they point at, and each group gets its own
//! task that owns its sessions, polls on its own clock and sends whole [`Observation`]s down a channel.
//! A group has at most one probe in flight; the UI keeps the newest result of each group.
//!
//! Sessions that fail or are closed under us (a terminated backend ends with 57P01 and
//! `Client::is_closed()`) are reopened in the background with capped exponential backoff and jitter,
//! so a reconnect attempt to a blackholed host does not stall the polls of its healthy neighbours.
//! Exact schema sizes take a brief lock per table and, with ten thousand test tables, seconds of server
//! time; so they never run in a poll. A sizer task per group reads them on its own short-lived
//! connections every [`SIZES_EVERY`] and the polls attach the latest figures (estimates until then).

use crate::domain::snapshot::Observation;
use crate::pg::connect::{connect, SessionSettings};
use crate::pg::conninfo::Environment;
use crate::pg::probe::{
    exact_schema_sizes, observe, open_session, server_label, DbSession, DbTarget, ProbeOptions,
    ReadError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the UI tells the pollers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollControl {
    pub interval: Duration,
    /// Bumped to ask for an immediate poll.
    pub refresh_seq: u64,
}

/// One group's poll.
#[derive(Debug, Clone)]
pub struct GroupResult {
    pub group: usize,
    pub observation: Observation,
    pub elapsed: Duration,
}

/// How often the sizer reads exact schema sizes (first read shortly after start).
pub const SIZES_EVERY: Duration = Duration::from_secs(30);
const SIZES_FIRST: Duration = Duration::from_secs(2);

/// Exact bytes by configured database, then schema.
type Sizes = Arc<Mutex<HashMap<String, HashMap<String, i64>>>>;

/// Aborts the sizer when the poller ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Capped exponential backoff with ±20% jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Self {
        Backoff {
            next: BACKOFF_START,
            seed: seed | 1,
        }
    }

    /// The delay before the next attempt; each call doubles the base up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: enough randomness to spread reconnect storms, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + (self.seed % 1000) as f64 / 2500.0; // 0.8 ..= 1.2
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(BACKOFF_CAP);
        d
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// Groups targets by the host list they point at (what a poller task owns).
pub fn group_targets(targets: &[DbTarget]) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let key = server_label(&t.target);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(i);
    }
    order
        .into_iter()
        .map(|k| groups.remove(&k).expect("key from map"))
        .collect()
}

/// Starts one poller task per group. Results arrive on `tx`; the tasks end when `tx` is closed.
pub fn spawn_pollers(
    targets: &[DbTarget],
    session: &SessionSettings,
    opts: &ProbeOptions,
    env: Arc<dyn Environment + Send + Sync>,
    control: watch::Receiver<PollControl>,
    tx: mpsc::UnboundedSender<GroupResult>,
) -> Vec<JoinHandle<()>> {
    group_targets(targets)
        .into_iter()
        .enumerate()
        .map(|(group, members)| {
            let poller = GroupPoller {
                group,
                targets: members.iter().map(|&i| targets[i].clone()).collect(),
                session: session.clone(),
                opts: opts.clone(),
                env: env.clone(),
            };
            tokio::spawn(poller.run(control.clone(), tx.clone()))
        })
        .collect()
}

struct GroupPoller {
    group: usize,
    targets: Vec<DbTarget>,
    session: SessionSettings,
    opts: ProbeOptions,
    env: Arc<dyn Environment + Send + Sync>,
}

type Pending = Option<JoinHandle<Result<DbSession, ReadError>>>;

/// The monitor sessions of one group, with their reconnects: a session that fails or closes is
/// reopened in the background with jittered backoff, never holding up a poll.
struct Connections {
    sessions: Vec<Result<DbSession, ReadError>>,
    pending: Vec<Pending>,
    backoff: Vec<Backoff>,
    retry_at: Vec<Option<Instant>>,
}

impl Connections {
    /// Starts connecting to every target of the group.
    fn start(poller: &GroupPoller) -> Self {
        let n = poller.targets.len();
        Connections {
            sessions: (0..n).map(|_| Err(ReadError::Connecting)).collect(),
            pending: (0..n).map(|i| Some(poller.spawn_connect(i))).collect(),
            backoff: (0..n)
                .map(|i| {
                    Backoff::new(std::process::id() as u64 * 7919 + (poller.group * 31 + i) as u64)
                })
                .collect(),
            retry_at: vec![None; n],
        }
    }

    /// Waits (bounded) for the first connection attempts, so the first poll does not show a false
    /// "unreachable".
    async fn await_first(&mut self, limit: Duration) {
        for (i, p) in self.pending.iter_mut().enumerate() {
            if let Some(h) = p.take() {
                self.sessions[i] = match tokio::time::timeout(limit, h).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(ReadError::Lost(format!("connection task failed: {e}"))),
                    Err(_) => Err(ReadError::Timeout(limit)),
                };
            }
        }
    }

    /// Takes in finished reconnects and starts the ones that are due.
    async fn tend(&mut self, poller: &GroupPoller) {
        for i in 0..self.sessions.len() {
            if self.pending[i].as_ref().is_some_and(|h| h.is_finished()) {
                let h = self.pending[i].take().expect("checked");
                self.sessions[i] = match h.await {
                    Ok(r) => r,
                    Err(e) => Err(ReadError::Lost(format!("connection task failed: {e}"))),
                };
                let name = &poller.targets[i].name;
                match &self.sessions[i] {
                    Ok(_) => {
                        self.backoff[i].reset();
                        self.retry_at[i] = None;
                        tracing::info!(database = %name, "connected");
                    }
                    Err(e) => {
                        self.retry_at[i] = Some(Instant::now() + self.backoff[i].next_delay());
                        tracing::warn!(database = %name, error = %e, "connect failed");
                    }
                }
            }
            let down = self.sessions[i].is_err();
            let due = self.retry_at[i].is_none_or(|t| Instant::now() >= t);
            if down && self.pending[i].is_none() && due {
                self.pending[i] = Some(poller.spawn_connect(i));
            }
        }
    }

    /// Sessions closed under us (terminated backend, network loss) reconnect at once.
    fn drop_closed(&mut self, poller: &GroupPoller) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if matches!(s, Ok(db) if db.client.is_closed()) {
                tracing::warn!(database = %poller.targets[i].name, "monitor session closed; reconnecting");
                *s = Err(ReadError::Lost(
                    "monitor connection lost; reconnecting".into(),
                ));
                self.retry_at[i] = None;
            }
        }
    }
}

impl GroupPoller {
    fn spawn_connect(&self, i: usize) -> JoinHandle<Result<DbSession, ReadError>> {
        let target = self.targets[i].target.clone();
        let settings = self.session.clone();
        let env = self.env.clone();
        tokio::spawn(async move { open_session(&target, &settings, env.as_ref()).await })
    }

    async fn run(
        self,
        mut control: watch::Receiver<PollControl>,
        tx: mpsc::UnboundedSender<GroupResult>,
    ) {
        let mut conns = Connections::start(&self);
        let sizes: Sizes = Arc::default();
        let _sizer = AbortOnDrop(tokio::spawn(sizer(
            self.targets.clone(),
            self.session.clone(),
            self.opts.schema_prefix.clone(),
            self.env.clone(),
            sizes.clone(),
        )));
        conns
            .await_first(self.session.connect_timeout + FIRST_CONNECT_SLACK)
            .await;
        let opts = ProbeOptions {
            exact_sizes: false,
            ..self.opts.clone()
        };
        loop {
            let started = Instant::now();
            conns.tend(&self).await;
            let mut obs = observe(
                &self.targets,
                &conns.sessions,
                &opts,
                self.session.statement_timeout,
            )
            .await;
            apply_exact_sizes(&sizes, &mut obs);
            // While anything waits, poll faster: short waits and their ends are caught.
            let waiting = obs.sessions.iter().any(|s| !s.blocked_by.is_empty());
            conns.drop_closed(&self);
            let result = GroupResult {
                group: self.group,
                observation: obs,
                elapsed: started.elapsed(),
            };
            if tx.send(result).is_err() {
                return; // the UI is gone
            }
            let interval = match control.borrow().interval {
                i if waiting => i.min(FAST_POLL),
                i => i,
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = control.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The poll interval while some session waits for a lock (never slower than the chosen interval).
/// The incremental probe keeps these polls cheap (docs/incidents.md, "Short waits").
pub const FAST_POLL: Duration = Duration::from_millis(250);

/// How much longer than the connect timeout the first poll waits for the first connections.
const FIRST_CONNECT_SLACK: Duration = Duration::from_secs(1);

/// Exact sizes from the sizer replace the planner's estimates where known.
fn apply_exact_sizes(sizes: &Sizes, obs: &mut crate::domain::snapshot::Observation) {
    let sizes = sizes.lock().unwrap_or_else(|p| p.into_inner());
    for s in &mut obs.schemas {
        if let Some(b) = sizes.get(&s.database).and_then(|d| d.get(&s.schema)) {
            s.bytes = *b;
            s.bytes_exact = true;
        }
    }
}

/// Reads exact schema sizes of every database of a group on fresh connections, so a slow size query
/// never delays a poll; failures (unreachable, a table locked past the 100 ms lock timeout) keep the
/// previous figures, or the estimates.
async fn sizer(
    targets: Vec<DbTarget>,
    settings: SessionSettings,
    schema_prefix: String,
    env: Arc<dyn Environment + Send + Sync>,
    sizes: Sizes,
) {
    tokio::time::sleep(SIZES_FIRST).await;
    loop {
        for t in &targets {
            // A bare connection: the sizer needs none of a monitor session's identity or statements.
            let Ok(client) = connect(&t.target, &settings, env.as_ref()).await else {
                continue;
            };
            match exact_schema_sizes(&client, &schema_prefix, settings.statement_timeout).await {
                Ok(found) => {
                    let mut sizes = sizes.lock().unwrap_or_else(|p| p.into_inner());
                    sizes.insert(t.name.clone(), found);
                }
                Err(e) => tracing::info!(database = %t.name, error = %e, "exact sizes skipped"),
            }
        }
        tokio::time::sleep(SIZES_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new(42);
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(last <= BACKOFF_CAP.mul_f64(1.2) && last >= BACKOFF_CAP.mul_f64(0.8));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(600));
    }
}
