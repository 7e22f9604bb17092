//! Observer effect: what watching costs the workload being watched.
//!
//! One throwaway server carries the swarm load of `common/load.rs` (1,000 backends, 50 lock waiters,
//! an open transaction holding ~2,500 locks) and a pgbench select-only workload. pgbench's throughput
//! is measured with:
//!
//! * nobody watching;
//! * the real `pgswarm` dashboard at 1 s refresh, in a tmux pane (120x40);
//! * the real `pgswarm record` at 1 s (the dashboard's pollers and aggregator, writing every snapshot
//!   as a JSON line instead of drawing);
//! * the seed write-up's diagnose query once per second (one person triaging);
//! * the seed query once per second from 20 sessions (a swarm of agents each triaging locks).
//!
//! Throughput on a shared 2-core machine swings by ±15% between runs, more than the effect being
//! looked for, so the harness also measures what watching costs directly: CPU time (from /proc) of
//! the server backends serving the watcher and of the watcher process, per second of watching.
//!
//! Every round runs each mode once, in rotating order; losses are medians of the per-round ratios
//! to the unwatched run of the same round, so drift on a shared machine cancels out. Everything runs on
//! the same machine: the watcher's own CPU competes with pgbench and the server, as it would on a
//! developer's laptop running tests, a database and a dashboard.
//!
//! Run: `cargo bench --bench observer_effect` (PGSWARM_BENCH_ROUNDS, default 5;
//! PGSWARM_BENCH_SECONDS per run, default 15).

#[path = "common/load.rs"]
mod load;
#[path = "common/process.rs"]
mod process;

use load::{client, Load, SEED};
use process::{cpu_ticks, Tmux, TICKS_PER_S};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BACKENDS: usize = 1_000;
const WAITERS: usize = 50;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Unwatched,
    Dashboard,
    Pgswarm,
    Seed1,
    Seed20,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Unwatched => "nobody watching",
            Mode::Dashboard => "pgswarm dashboard at 1 s refresh (real binary in tmux)",
            Mode::Pgswarm => "pgswarm record at 1 s (real binary)",
            Mode::Seed1 => "seed query, 1 watcher at 1/s",
            Mode::Seed20 => "seed query, 20 watchers at 1/s each",
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pgbench(cluster: &pgswarm::pg::cluster::TempCluster, args: &[String]) -> String {
    let out = Command::new(cluster.bindir().join("pgbench"))
        .arg("-h")
        .arg(cluster.socket_dir())
        .args(["-p", &cluster.port().to_string(), "-U", "postgres"])
        .args(args)
        .output()
        .expect("pgbench (apt-get install postgresql-contrib or postgresql)");
    assert!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tps(output: &str) -> f64 {
    output
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{output}"))
}

struct RunResult {
    tps: f64,
    polls: u64,
    /// Server CPU of the watcher's backends, ms per second of watching.
    server_ms_per_s: f64,
    /// The watcher process's own CPU, ms per second (pgswarm only; the seed watchers are tasks here).
    client_ms_per_s: f64,
}

async fn run(
    cluster: &pgswarm::pg::cluster::TempCluster,
    conninfo: &str,
    mode: Mode,
    seconds: u64,
) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut child = None;
    let out_dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::new("observer");
    let mut dashboard_pid = None;
    match mode {
        Mode::Unwatched => {}
        Mode::Dashboard => {
            let cmd = format!(
                "exec '{}' --interval 1s --db 'bench_test={conninfo}'",
                env!("CARGO_BIN_EXE_pgswarm")
            );
            dashboard_pid = Some(tmux.start("o", &cmd));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Mode::Pgswarm => {
            let out = out_dir.path().join("rec.jsonl");
            child = Some(
                Command::new(env!("CARGO_BIN_EXE_pgswarm"))
                    .args(["--db", &format!("bench_test={conninfo}")])
                    .args(["--interval", "1s", "record", "--duration"])
                    .arg(format!("{}s", seconds + 3))
                    .arg("--out")
                    .arg(&out)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("pgswarm binary"),
            );
            // Let it connect and take its first (full) poll, as a dashboard that is already up.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Mode::Seed1 | Mode::Seed20 => {
            let n = if mode == Mode::Seed1 { 1 } else { 20 };
            for i in 0..n {
                let c = client(conninfo, "application_name=seed_watcher").await;
                let stop = stop.clone();
                let polls = polls.clone();
                tasks.push(tokio::spawn(async move {
                    // Spread the watchers over the second, as independent agents would be.
                    tokio::time::sleep(Duration::from_millis(1000 * i / n)).await;
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        c.query(SEED, &[]).await.unwrap();
                        polls.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let args: Vec<String> = ["-n", "-S", "-M", "prepared", "-c", "2", "-j", "2", "-T"]
        .iter()
        .map(|s| s.to_string())
        .chain([seconds.to_string(), "bench_test".to_string()])
        .collect();
    let admin = client(conninfo, "application_name=bench_admin").await;
    let backends: Vec<u32> = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name IN ('pgswarm', 'seed_watcher')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    let child_pid = child.as_ref().map(|c| c.id()).or(dashboard_pid);
    let server_before: u64 = backends.iter().map(|p| cpu_ticks(*p)).sum();
    let client_before = child_pid.map_or(0, cpu_ticks);
    let clock = std::time::Instant::now();
    let started = polls.load(Ordering::Relaxed);
    let output = {
        let cluster_args = args.clone();
        // pgbench blocks: run it off the runtime so the watchers keep their schedule.
        tokio::task::block_in_place(|| pgbench(cluster, &cluster_args))
    };
    let watcher_polls = polls.load(Ordering::Relaxed) - started;
    let wall = clock.elapsed().as_secs_f64();
    let server_ms_per_s =
        (backends.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - server_before) as f64 / TICKS_PER_S
            * 1000.0
            / wall;
    let client_ms_per_s = (child_pid.map_or(0, cpu_ticks).saturating_sub(client_before)) as f64
        / TICKS_PER_S
        * 1000.0
        / wall;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    if mode == Mode::Dashboard {
        tmux.quit("o").await;
    }
    let mut recorded = 0;
    if let Some(mut c) = child {
        let status = c.wait().expect("pgswarm record exits after its duration");
        assert!(status.success(), "pgswarm record failed: {status}");
        let text = std::fs::read_to_string(out_dir.path().join("rec.jsonl")).unwrap_or_default();
        recorded = text.lines().count() as u64;
    }
    RunResult {
        tps: tps(&output),
        polls: watcher_polls.max(recorded),
        server_ms_per_s,
        client_ms_per_s,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_num("PGSWARM_BENCH_ROUNDS", 5) as usize;
    let seconds = env_num("PGSWARM_BENCH_SECONDS", 15);
    let cluster = load::server(BACKENDS + 40, &["bench_test"]);
    let conninfo = cluster.conninfo("bench_test");
    eprintln!("observer_effect: pgbench -i -s 10 …");
    pgbench(
        &cluster,
        &["-i", "-q", "-s", "10", "bench_test"].map(String::from),
    );
    eprintln!("observer_effect: {BACKENDS} backends, {WAITERS} lock waiters …");
    let load = Load::start(&conninfo, BACKENDS, WAITERS).await;

    // One unmeasured run first: right after `pgbench -i` and the load's setup the first run is
    // slower (caches, autovacuum on the fresh tables), which would bias whichever mode runs first.
    eprintln!("observer_effect: warm-up run …");
    run(&cluster, &conninfo, Mode::Unwatched, seconds).await;

    let modes = [
        Mode::Unwatched,
        Mode::Dashboard,
        Mode::Pgswarm,
        Mode::Seed1,
        Mode::Seed20,
    ];
    let mut tps_by_mode: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut polls_by_mode: Vec<u64> = vec![0; modes.len()];
    let mut server_cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut client_cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let mut this_round = vec![0.0; modes.len()];
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let r = run(&cluster, &conninfo, modes[i], seconds).await;
            let (t, polls) = (r.tps, r.polls);
            eprintln!(
                "  round {} {:<50} {t:>9.0} tps ({polls} watcher polls, server {:.1} ms/s, client {:.1} ms/s)",
                round + 1,
                modes[i].label(),
                r.server_ms_per_s,
                r.client_ms_per_s
            );
            server_cpu[i].push(r.server_ms_per_s);
            client_cpu[i].push(r.client_ms_per_s);
            this_round[i] = t;
            tps_by_mode[i].push(t);
            polls_by_mode[i] += polls;
        }
        for i in 0..modes.len() {
            ratios[i].push(this_round[i] / this_round[0]);
        }
    }
    load.release().await;
    cluster.stop();

    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!(
        "| watcher ({BACKENDS} backends, {WAITERS} lock waiters, pgbench -S -c 2, {rounds} rounds of {seconds} s) | pgbench tps, median (min–max) | throughput change vs nobody watching, median of paired rounds (min–max) | watcher polls per run |"
    );
    println!("|---|---|---|---|");
    for (i, m) in modes.iter().enumerate() {
        let (t, tlo, thi) = median(tps_by_mode[i].clone());
        let (r, rlo, rhi) = median(ratios[i].clone());
        let change = if i == 0 {
            "—".to_string()
        } else {
            format!(
                "{:+.1}% ({:+.1}% – {:+.1}%)",
                (r - 1.0) * 100.0,
                (rlo - 1.0) * 100.0,
                (rhi - 1.0) * 100.0
            )
        };
        let polls = if *m == Mode::Dashboard {
            "1/s (not counted)".to_string()
        } else {
            (polls_by_mode[i] / rounds as u64).to_string()
        };
        println!(
            "| {} | {t:.0} ({tlo:.0}–{thi:.0}) | {change} | {polls} |",
            m.label()
        );
    }
    println!(
        "\n| watcher | server CPU for the watcher's sessions, ms per s (median) | watcher process CPU, ms per s (median) | share of this 2-core machine |"
    );
    println!("|---|---|---|---|");
    for (i, m) in modes.iter().enumerate().skip(1) {
        let (sv, _, _) = median(server_cpu[i].clone());
        let (cl, _, _) = median(client_cpu[i].clone());
        let client = if matches!(m, Mode::Pgswarm | Mode::Dashboard) {
            format!("{cl:.1}")
        } else {
            "— (tasks in the harness)".to_string()
        };
        println!(
            "| {} | {sv:.1} | {client} | {:.2}% |",
            m.label(),
            (sv + cl) / 20.0
        );
    }
}
