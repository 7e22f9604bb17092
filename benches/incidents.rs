//! What incident history costs and what it catches, side by side in one run:
//!
//! 1. **Tracker and flight log** (pure, synthetic): 1,000 sessions, 50 of them waiting, every wait
//!    lasting 5 polls, so 10 episodes end per poll (a storm: 36,000 per hour at 1 s). Per poll: the
//!    episode tracker's CPU next to building the snapshot it reads, and appending the ended episodes
//!    to a real flight log file; bytes written per hour.
//! 2. **Short waits** (real server): lock waits of a known length (`lock_timeout`) started at a
//!    random moment, caught or not by the snapshot stream as the dashboard and `record` run it, at
//!    intervals 0.5 s, 1 s and 2 s with nothing else waiting, and at 1 s while another wait is going
//!    on (the stream then polls every 250 ms).
//! 3. **Added server cost of the fast polls** (same server, 1,000 backends): server time per second
//!    of the monitor's role (`pg_stat_statements`) at 1 s with nothing waiting vs with one wait going
//!    on, rounds interleaved.
//!
//! Run: `cargo bench --bench incidents` (about 12 minutes). Results: docs/incidents.md.

// Shared by the server-side benches; this one does not use the seed's query.
#[allow(dead_code)]
#[path = "common/load.rs"]
mod load;

use chrono::Duration as ChronoDuration;
use load::{client, wait_for_lock_waits, Load};
use pgswarm::domain::fixtures::{fixture_now, synthetic};
use pgswarm::domain::incidents::{Episode, EpisodeTracker};
use pgswarm::domain::snapshot::{build_snapshot, AwaitedLock, Convention};
use pgswarm::pg::config::{resolve_settings, CliSettings};
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::flightlog::FlightLog;
use pgswarm::pg::stream::SnapshotStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SESSIONS: usize = 1000;
const WAITERS: usize = 50;
const WAIT_POLLS: i64 = 5;
const STEPS: i64 = 600;

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Part 1: the tracker and the flight log on a synthetic storm.
fn tracker_and_log() {
    let base = synthetic(SESSIONS, 50, 2, 1);
    let conv = Convention::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("incidents.jsonl");
    let log = FlightLog::with_max_bytes(path.clone(), u64::MAX);
    let mut tracker = EpisodeTracker::new();
    let (mut build, mut track, mut append) = (Vec::new(), Vec::new(), Vec::new());
    let mut episodes = 0usize;
    let t0 = fixture_now();
    for k in 0..STEPS {
        let now = t0 + ChronoDuration::seconds(k);
        let mut obs = base.clone();
        obs.taken_at = now;
        for s in &mut obs.servers {
            s.now = now;
        }
        for s in &mut obs.sessions {
            s.blocked_by.clear();
            s.awaited = None;
            s.wait_event_type = None;
        }
        // Waiter j is session 20 + 19j, behind the session before it (idle in transaction); its
        // current wait began at the last multiple of WAIT_POLLS, shifted by j.
        for j in 0..WAITERS {
            let i = 20 + 19 * j;
            let began =
                t0 + ChronoDuration::seconds(((k + j as i64) / WAIT_POLLS) * WAIT_POLLS - j as i64);
            let blocker = obs.sessions[i - 1].pid;
            let h = &mut obs.sessions[i - 1];
            h.state = Some("idle in transaction".into());
            h.xact_start = Some(t0 - ChronoDuration::seconds(60));
            let w = &mut obs.sessions[i];
            w.state = Some("active".into());
            w.wait_event_type = Some("Lock".into());
            w.query_start = Some(began);
            w.xact_start = Some(began);
            w.blocked_by = vec![blocker];
            w.awaited = Some(AwaitedLock {
                lock_type: "relation".into(),
                mode: "RowExclusiveLock".into(),
                relation: Some("public.shared_counters".into()),
                waitstart: Some(began),
                object: "relation:shared_counters".into(),
                held: vec![(blocker, "AccessExclusiveLock".into())],
                ..Default::default()
            });
        }
        let t = Instant::now();
        let snap = build_snapshot(obs, &conv);
        build.push(ms(t.elapsed()));
        let t = Instant::now();
        let ended: Vec<Episode> = tracker.observe(&snap);
        track.push(ms(t.elapsed()));
        let t = Instant::now();
        log.append(&ended).expect("append to the flight log");
        append.push(ms(t.elapsed()));
        episodes += ended.len();
    }
    let bytes = std::fs::metadata(&path).expect("flight log").len();
    let per_hour = bytes as f64 * 3600.0 / STEPS as f64;
    let per_episode = bytes as f64 / episodes.max(1) as f64;
    let (b, t, a) = (stats(build), stats(track), stats(append));
    println!("\n### Tracker and flight log ({SESSIONS} sessions, {WAITERS} waiting, {episodes} episodes over {STEPS} polls)\n");
    println!("| per poll | median | p10–p90 |");
    println!("|---|---|---|");
    println!(
        "| build the snapshot (what every poll already costs) | {:.2} ms | {:.2}–{:.2} |",
        b.0, b.1, b.2
    );
    println!(
        "| episode tracker | {:.3} ms | {:.3}–{:.3} |",
        t.0, t.1, t.2
    );
    println!(
        "| append the ~{:.0} ended episodes to the flight log | {:.3} ms | {:.3}–{:.3} |",
        episodes as f64 / STEPS as f64,
        a.0,
        a.1,
        a.2
    );
    println!(
        "| tracker / snapshot build | {:.2}x | |",
        t.0 / b.0.max(1e-9)
    );
    println!(
        "\nflight log: {bytes} bytes for {episodes} episodes ({per_episode:.0} bytes each); \
         {:.1} MiB per hour at this storm's 1 s polls; 8 MiB (the rotation bound) holds {:.0} episodes",
        per_hour / 1024.0 / 1024.0,
        8.0 * 1024.0 * 1024.0 / per_episode
    );
}

/// The snapshot stream over one database, collecting ended episodes.
struct Monitor {
    ended: Arc<Mutex<Vec<Episode>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(conninfo: &str, interval: Duration) -> Monitor {
        let mut settings = resolve_settings(
            &CliSettings {
                db: vec![format!("platform={conninfo}")],
                ..Default::default()
            },
            &ProcessEnv,
        )
        .expect("settings");
        settings.session.connect_timeout = Duration::from_secs(5);
        let mut stream =
            SnapshotStream::spawn(&settings, interval, Arc::new(ProcessEnv), None, None);
        let first = stream.updates.recv().await.expect("a first poll");
        assert!(
            first.snapshot.sessions.len() >= SESSIONS / 2,
            "the monitor sees the load"
        );
        let ended: Arc<Mutex<Vec<Episode>>> = Arc::default();
        let sink = ended.clone();
        let task = tokio::spawn(async move {
            while let Some(u) = stream.updates.recv().await {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(u.ended);
            }
        });
        Monitor { ended, task }
    }

    fn count_for(&self, pid: i32) -> usize {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.waiter_pid == pid)
            .count()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// A pseudo-random phase in 0..max (xorshift; no dependency needed for a benchmark's jitter).
fn phase(state: &mut u64, max: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    max.mul_f64((*state % 10_000) as f64 / 10_000.0)
}

const LENGTHS_MS: [u64; 5] = [150, 300, 600, 1200, 2400];
const TRIALS: usize = 8;

/// Part 2: how many of TRIALS waits of each length the stream caught.
async fn short_waits(conninfo: &str, interval: Duration, other_wait: bool) -> Vec<usize> {
    let admin = client(conninfo, "application_name=bench_admin").await;
    let other = if other_wait {
        Some(OtherWait::start(conninfo, &admin).await)
    } else {
        None
    };
    let monitor = Monitor::start(conninfo, interval).await;
    let holder = client(
        conninfo,
        "application_name=pytest_gw0_p7t1763900000r000000ee",
    )
    .await;
    holder
        .batch_execute("BEGIN; LOCK TABLE brief")
        .await
        .unwrap();
    let waiter = client(
        conninfo,
        "application_name=pytest_gw1_p8t1763900000r000000ff",
    )
    .await;
    let pid: i32 = waiter
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ interval.as_millis() as u64;
    let mut caught = Vec::new();
    for len in LENGTHS_MS {
        let mut n = 0;
        waiter
            .batch_execute(&format!("SET lock_timeout = '{len}ms'"))
            .await
            .unwrap();
        for _ in 0..TRIALS {
            tokio::time::sleep(phase(&mut rng, interval)).await;
            let before = monitor.count_for(pid);
            let r = waiter.batch_execute("SELECT * FROM brief").await;
            assert!(r.is_err(), "the wait ends by lock_timeout");
            // Caught waits end within a fast poll; give a missed one a full interval to show.
            let deadline = Instant::now() + interval + Duration::from_millis(600);
            while Instant::now() < deadline && monitor.count_for(pid) == before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if monitor.count_for(pid) > before {
                n += 1;
            }
        }
        caught.push(n);
    }
    monitor.stop();
    holder.batch_execute("ROLLBACK").await.unwrap();
    if let Some(o) = other {
        o.end().await;
    }
    caught
}

/// A wait of another run, going on for as long as it is kept: the stream polls fast meanwhile.
struct OtherWait {
    holder: tokio_postgres::Client,
    waiter: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl OtherWait {
    async fn start(conninfo: &str, admin: &tokio_postgres::Client) -> OtherWait {
        let holder = client(
            conninfo,
            "application_name=pytest_gw0_p9t1763900000r000000cc",
        )
        .await;
        holder
            .batch_execute("BEGIN; LOCK TABLE other")
            .await
            .unwrap();
        let w = client(
            conninfo,
            "application_name=pytest_gw1_p9t1763900000r000000dd",
        )
        .await;
        let waiter = tokio::spawn(async move { w.batch_execute("SELECT * FROM other").await });
        wait_for_lock_waits(admin, 1).await;
        OtherWait { holder, waiter }
    }

    async fn end(self) {
        self.holder.batch_execute("ROLLBACK").await.unwrap();
        let _ = self.waiter.await;
    }
}

/// Part 3: the monitor role's server time per second over `window`, with or without a wait.
async fn server_cost(conninfo: &str, watch_conninfo: &str, other_wait: bool) -> (f64, f64) {
    let admin = client(conninfo, "application_name=bench_admin").await;
    let other = if other_wait {
        Some(OtherWait::start(conninfo, &admin).await)
    } else {
        None
    };
    let monitor = Monitor::start(watch_conninfo, Duration::from_secs(1)).await;
    // Past the first (full) reads: steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let window = Duration::from_secs(12);
    tokio::time::sleep(window).await;
    let r = admin
        .query_one(
            "SELECT coalesce(sum(s.total_exec_time), 0)::float8, coalesce(sum(s.calls), 0)::int8
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname = 'r_watch'",
            &[],
        )
        .await
        .unwrap();
    monitor.stop();
    if let Some(o) = other {
        o.end().await;
    }
    let secs = window.as_secs_f64();
    (r.get::<_, f64>(0) / secs, r.get::<_, i64>(1) as f64 / secs)
}

fn main() {
    tracker_and_log();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = load::server(SESSIONS, &["platform"]);
        let base = cluster.conninfo("platform");
        cluster
            .psql(
                "platform",
                "CREATE EXTENSION pg_stat_statements;
                 CREATE ROLE r_watch LOGIN IN ROLE pg_read_all_stats;
                 CREATE TABLE brief (n int); CREATE TABLE other (n int);",
            )
            .unwrap();
        let load = Load::start(&base, SESSIONS, 0).await;
        let watch = format!("{base} user=r_watch");

        println!("\n### Short waits caught ({TRIALS} waits per length, started at a random moment; {SESSIONS} backends)\n");
        let head: Vec<String> = LENGTHS_MS.iter().map(|l| format!("{l} ms")).collect();
        println!("| polling | {} | shortest caught {TRIALS}/{TRIALS} |", head.join(" | "));
        println!("|---|{}---|", "---|".repeat(LENGTHS_MS.len()));
        for (label, interval, other) in [
            ("interval 0.5 s, nothing else waiting", 500, false),
            ("interval 1 s, nothing else waiting", 1000, false),
            ("interval 2 s, nothing else waiting", 2000, false),
            ("interval 1 s, another wait going on (polls every 250 ms)", 1000, true),
        ] {
            let caught = short_waits(&base, Duration::from_millis(interval), other).await;
            let cells: Vec<String> = caught.iter().map(|n| format!("{n}/{TRIALS}")).collect();
            let shortest = LENGTHS_MS
                .iter()
                .zip(&caught)
                .rev()
                .take_while(|(_, &n)| n == TRIALS)
                .last()
                .map_or("none".to_string(), |(l, _)| format!("{l} ms"));
            println!("| {label} | {} | {shortest} |", cells.join(" | "));
        }

        println!("\n### Server cost of the monitor at 1 s ({SESSIONS} backends; 3 rounds of 12 s, interleaved)\n");
        let (mut idle, mut waiting) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            idle.push(server_cost(&base, &watch, false).await);
            waiting.push(server_cost(&base, &watch, true).await);
        }
        let ms_idle = stats(idle.iter().map(|x| x.0).collect());
        let ms_wait = stats(waiting.iter().map(|x| x.0).collect());
        let calls_idle = stats(idle.iter().map(|x| x.1).collect());
        let calls_wait = stats(waiting.iter().map(|x| x.1).collect());
        println!("| monitor at 1 s | server time, ms per s (median, min–max) | statements per s |");
        println!("|---|---|---|");
        println!(
            "| nothing waiting (polls every 1 s) | {:.2} ({:.2}–{:.2}) | {:.1} |",
            ms_idle.0, ms_idle.1, ms_idle.2, calls_idle.0
        );
        println!(
            "| one wait going on (polls every 250 ms) | {:.2} ({:.2}–{:.2}) | {:.1} |",
            ms_wait.0, ms_wait.1, ms_wait.2, calls_wait.0
        );
        let ratios: Vec<f64> = idle
            .iter()
            .zip(&waiting)
            .map(|(i, w)| w.0 / i.0.max(1e-9))
            .collect();
        let r = stats(ratios);
        println!(
            "| while waiting / nothing waiting, per round | {:.2}x ({:.2}–{:.2}) | |",
            r.0, r.1, r.2
        );
        load.release().await;
        drop(cluster);
    });
}
