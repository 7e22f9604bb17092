//! The real dashboard binary's cost while it watches: CPU (user+system, % of one core) and resident
//! memory, sampled from /proc while `pgswarm` runs in tmux at 1 s refresh against a throwaway server
//! with `SESSIONS` labeled sessions (50 invocations over 4 databases, a few blocked).
//!
//! Then the latency from a lock wait starting to it being on screen: a fresh holder/waiter pair, at a
//! phase that walks across the refresh period, timed until the header's blocked count shows it (the
//! pane is captured every 10 ms).
//!
//! Run: `cargo bench --bench dashboard_idle` (needs PostgreSQL server binaries and tmux).

#[path = "common/process.rs"]
mod process;

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use process::{cpu_ticks, rss_mib, Tmux, TICKS_PER_S};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

const SESSIONS: usize = 500;
const SAMPLE: Duration = Duration::from_secs(20);
const LATENCY_TRIALS: usize = 12;

#[tokio::main]
async fn main() {
    let dbs = ["platform", "tenant_a", "tenant_b", "tenant_c"];
    let cluster = TempCluster::start(&ClusterOptions {
        databases: dbs.iter().map(|s| s.to_string()).collect(),
        settings: vec![("max_connections".into(), "700".into())],
        ..Default::default()
    })
    .expect("throwaway server (install PostgreSQL server binaries)");
    cluster
        .psql("platform", "CREATE TABLE shared (id int)")
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        let inv = i % 50;
        let db = dbs[i % dbs.len()];
        let ns = format!("p{}t1763900000r{:08x}", 20_000 + inv, inv);
        let conf = format!(
            "{} application_name=pytest_gw{}_{ns}",
            cluster.conninfo(db),
            i / 50
        );
        let (c, conn) = tokio_postgres::connect(&conf, NoTls).await.unwrap();
        tokio::spawn(conn);
        clients.push(std::sync::Arc::new(c));
    }
    // Five blocked readers behind one open transaction.
    clients[0]
        .batch_execute("BEGIN; LOCK TABLE shared")
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for c in clients.iter().skip(4).step_by(4).take(5) {
        let c = std::sync::Arc::clone(c);
        waiters.push(tokio::spawn(async move {
            c.execute("SELECT * FROM shared", &[]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let db_args: Vec<String> = dbs
        .iter()
        .map(|d| format!("--db '{d}={}'", cluster.conninfo(d)))
        .collect();
    let cmd = format!(
        "exec '{}' --interval 1s {}",
        env!("CARGO_BIN_EXE_pgswarm"),
        db_args.join(" ")
    );
    let tmux = Tmux::new("bench");
    let pid = tmux.start("b", &cmd);
    tokio::time::sleep(Duration::from_secs(4)).await; // connect and settle
    let screen = tmux.capture("b");
    assert!(screen.contains("sessions"), "dashboard not up:\n{screen}");

    let start_ticks = cpu_ticks(pid);
    let start = Instant::now();
    let mut rss_max: f64 = 0.0;
    while start.elapsed() < SAMPLE {
        rss_max = rss_max.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = (cpu_ticks(pid) - start_ticks) as f64 / TICKS_PER_S / start.elapsed().as_secs_f64();
    // Lock-to-screen latency at 1 s refresh.
    let capture = || tmux.capture("b");
    let blocked_on_screen = |screen: &str| -> Option<usize> {
        let header = screen.lines().next()?;
        let i = header.find(" blocked")?;
        header[..i].rsplit(' ').next()?.parse().ok()
    };
    cluster
        .psql("platform", "CREATE TABLE latency_probe (id int)")
        .unwrap();
    let open = |app: &'static str| {
        let conf = format!("{} application_name={app}", cluster.conninfo("platform"));
        async move {
            let (c, conn) = tokio_postgres::connect(&conf, NoTls).await.unwrap();
            tokio::spawn(conn);
            std::sync::Arc::new(c)
        }
    };
    let holder = open("pytest_gw0_p30000t1763900000r00007777").await;
    let waiter = open("pytest_gw1_p30001t1763900000r00008888").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = blocked_on_screen(&capture()).expect("blocked count in the header");
    let mut latencies = Vec::new();
    for trial in 0..LATENCY_TRIALS {
        // Walk the start across the refresh period.
        tokio::time::sleep(Duration::from_millis(1_000 + (trial as u64 * 379) % 1_000)).await;
        holder
            .batch_execute("BEGIN; LOCK TABLE latency_probe")
            .await
            .unwrap();
        let w = waiter.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move { w.execute("SELECT * FROM latency_probe", &[]).await });
        loop {
            if blocked_on_screen(&capture()) == Some(base + 1) {
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the new lock wait never reached the screen:\n{}",
                capture()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        holder.batch_execute("ROLLBACK").await.unwrap();
        task.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while blocked_on_screen(&capture()) != Some(base) {
            assert!(
                Instant::now() < deadline,
                "the released wait never left the screen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));

    tmux.quit("b").await;

    println!(
        "| dashboard at 1 s refresh, 120x40, {SESSIONS} real sessions on 4 databases | value |"
    );
    println!("|---|---|");
    println!(
        "| CPU over {} s (user+system, one core) | {:.2} % |",
        SAMPLE.as_secs(),
        cpu * 100.0
    );
    println!("| resident memory, max | {rss_max:.1} MiB |");
    println!(
        "| lock wait start → on screen, {LATENCY_TRIALS} trials across the refresh period | median {:.0} ms (min {:.0}, max {:.0}) |",
        latencies[latencies.len() / 2],
        latencies[0],
        latencies[latencies.len() - 1]
    );
    for w in waiters {
        w.abort();
    }
    drop(clients);
    cluster.stop();

    // The size the dashboard issue names, on the real binary: a recording of one synthetic
    // 5,000-session snapshot (200 invocations, 4 databases), replayed. Replay holds the recording and
    // the displayed copy, so this is an upper bound for the live dashboard's data.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("5000.jsonl");
    let snap = pgswarm::domain::snapshot::build_snapshot(
        pgswarm::domain::fixtures::synthetic(5_000, 200, 4, 2),
        &pgswarm::domain::snapshot::Convention::default(),
    );
    std::fs::write(&file, serde_json::to_string(&snap).unwrap() + "\n").unwrap();
    let cmd = format!(
        "exec '{}' watch --replay '{}'",
        env!("CARGO_BIN_EXE_pgswarm"),
        file.display()
    );
    let pid = tmux.start("r", &cmd);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let screen = tmux.capture("r");
    assert!(
        screen.contains("REPLAY") && screen.contains("5000 sessions"),
        "replay not up:\n{screen}"
    );
    let start_ticks = cpu_ticks(pid);
    let start = Instant::now();
    let mut rss_replay: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(10) {
        rss_replay = rss_replay.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_replay =
        (cpu_ticks(pid) - start_ticks) as f64 / TICKS_PER_S / start.elapsed().as_secs_f64();
    tmux.quit("r").await;
    println!("| 5,000-session snapshot replayed (recording + displayed copy), resident memory max | {rss_replay:.1} MiB |");
    println!(
        "| same, CPU over 10 s while paused on it (redraws at 4 Hz) | {:.2} % |",
        cpu_replay * 100.0
    );
}
