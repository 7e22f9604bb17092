//! What reading the server's own log costs (issue 28), side by side in one run:
//!
//! 1. **The dashboard's server time per second** at 1,000 backends with a quiet log: the snapshot
//!    stream at 1 s as the dashboard runs it, with the server log read and without, rounds
//!    interleaved; the monitor as its own role, server time from `pg_stat_statements`.
//! 2. **Per MB of log**: a reader catching up over ~20 MB of `jsonlog` (bounded reads of 8 MiB),
//!    server time of its statements and wall time on the client (reads, parsing, classifying).
//! 3. **Parsing alone** (in process, no server): `LogParser::feed` + `classify` per MB, jsonlog and
//!    csvlog.
//!
//! Run: `cargo bench --bench serverlog` (about 5 minutes). Results: docs/benchmarks.md.

#[allow(dead_code)]
#[path = "common/load.rs"]
mod load;

use load::{client, Load};
use pgswarm::domain::serverlog::{classify, LogFormat, LogParser};
use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use pgswarm::pg::config::{resolve_settings, CliSettings, Settings};
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::serverlog::{LogReader, LogStatus};
use pgswarm::pg::stream::{SnapshotStream, StreamOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SESSIONS: usize = 1000;
const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(12);

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn server() -> TempCluster {
    TempCluster::start(&ClusterOptions {
        databases: vec!["platform".into()],
        settings: [
            ("max_connections", format!("{}", SESSIONS + 80)),
            ("shared_preload_libraries", "'pg_stat_statements'".into()),
            ("pg_stat_statements.track", "'all'".into()),
            ("shared_buffers", "128MB".into()),
            ("logging_collector", "on".into()),
            ("log_destination", "'jsonlog'".into()),
            ("log_lock_waits", "on".into()),
            ("deadlock_timeout", "'100ms'".into()),
            ("lc_messages", "'C'".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    })
    .expect("throwaway server (PostgreSQL server binaries with contrib)")
}

fn settings(conninfo: &str) -> Settings {
    let mut s = resolve_settings(
        &CliSettings {
            db: vec![format!("platform={conninfo}")],
            ..Default::default()
        },
        &ProcessEnv,
    )
    .expect("settings");
    s.session.connect_timeout = Duration::from_secs(5);
    s
}

/// The monitor role's server time (ms) and statements over the last reset, and the server time of
/// the log reader's own statements (ms).
async fn monitor_time(admin: &tokio_postgres::Client) -> (f64, f64, f64) {
    let r = admin
        .query_one(
            "SELECT coalesce(sum(s.total_exec_time), 0)::float8, coalesce(sum(s.calls), 0)::float8,
                    coalesce(sum(s.total_exec_time) FILTER (WHERE s.query ~ 'logfile|pg_read_binary_file|pg_ls_logdir|logging_collector'), 0)::float8
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname = 'r_watch'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Part 1: one round of the stream at 1 s, with or without the log read: ms per s, statements per
/// s, ms per s of the log reader's own statements.
async fn round(base: &str, watch: &str, server_log: bool) -> (f64, f64, f64) {
    let admin = client(base, "application_name=bench_admin").await;
    let mut stream = SnapshotStream::spawn_with(
        &settings(watch),
        Duration::from_secs(1),
        Arc::new(ProcessEnv),
        None,
        None,
        StreamOptions { server_log },
    );
    let drain = tokio::spawn(async move {
        let mut warned = false;
        while let Some(u) = stream.updates.recv().await {
            if !warned && !u.snapshot.warnings.is_empty() {
                eprintln!("warnings: {:?}", u.snapshot.warnings);
                warned = true;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    tokio::time::sleep(WINDOW).await;
    let (ms, calls, log_ms) = monitor_time(&admin).await;
    drain.abort();
    let secs = WINDOW.as_secs_f64();
    (ms / secs, calls / secs, log_ms / secs)
}

/// Part 2: a reader catching up over `mb` MB of log.
async fn per_mb(srv: &TempCluster, base: &str, watch: &str) {
    let admin = client(base, "application_name=bench_admin").await;
    let s = settings(watch);
    let mut reader = LogReader::new(
        s.databases[0].target.clone(),
        s.session.clone(),
        Arc::new(ProcessEnv),
    );
    let first = reader.poll().await;
    assert!(
        matches!(first.status, LogStatus::Reading { .. }),
        "{:?}",
        first.status
    );
    srv.psql(
        "platform",
        "DO $$ BEGIN FOR i IN 1..20000 LOOP RAISE LOG 'bench line % %', i, pg_catalog.repeat('x', 800); END LOOP; END $$",
    )
    .unwrap();
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut bytes, mut polls) = (0u64, 0);
    loop {
        let r = reader.poll().await;
        bytes += r.bytes;
        polls += 1;
        if !r.behind {
            break;
        }
    }
    let wall = started.elapsed();
    let (server_ms, calls, _) = monitor_time(&admin).await;
    let mb = bytes as f64 / 1e6;
    println!(
        "| catch up over {mb:.1} MB of jsonlog ({polls} bounded reads, {calls:.0} statements) | {:.2} ms per MB | {:.2} ms per MB |",
        server_ms / mb,
        wall.as_secs_f64() * 1000.0 / mb
    );
}

/// Part 3: parsing and classifying in process.
fn parse_only() {
    let json = r#"{"timestamp":"2026-12-07 01:50:00.123 UTC","user":"postgres","dbname":"platform","pid":41234,"remote_host":"[local]","session_id":"6571a2b3.a112","line_num":3,"ps":"UPDATE","session_start":"2026-12-07 01:49:58 UTC","vxid":"4/12","txid":0,"error_severity":"LOG","message":"duration: 0.123 ms  statement: UPDATE accounts SET n = n + 1 WHERE id = 42","application_name":"pytest_gw1_p4200t1763900100r0b0b0b0b","backend_type":"client backend","query_id":0}"#;
    let csv = r#"2026-12-07 01:50:00.123 UTC,"postgres","platform",41234,"[local]",6571a2b3.a112,3,"UPDATE",2026-12-07 01:49:58 UTC,4/12,0,LOG,00000,"duration: 0.123 ms  statement: UPDATE accounts SET n = n + 1 WHERE id = 42",,,,,,,,,"pytest_gw1_p4200t1763900100r0b0b0b0b","client backend",,0"#;
    for (format, line) in [(LogFormat::Jsonlog, json), (LogFormat::Csvlog, csv)] {
        let mut text = String::new();
        while text.len() < 20_000_000 {
            text.push_str(line);
            text.push('\n');
        }
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut p = LogParser::new(format, 0);
            let started = Instant::now();
            let mut n = 0;
            for chunk in text.as_bytes().chunks(1024 * 1024) {
                n += p.feed(chunk).iter().filter_map(classify).count();
            }
            assert_eq!(n, 0);
            times.push(started.elapsed().as_secs_f64() * 1000.0 / (text.len() as f64 / 1e6));
        }
        let (med, lo, hi) = stats(times);
        println!(
            "| parse + classify {} in process ({} B lines) | | {med:.2} ms per MB ({lo:.2}–{hi:.2}) |",
            format.name(),
            line.len() + 1
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = server();
        let base = srv.conninfo("platform");
        srv.psql(
            "platform",
            "CREATE EXTENSION pg_stat_statements;
             CREATE ROLE r_watch LOGIN IN ROLE pg_read_all_stats, pg_monitor;
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean),
                   pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_current_logfile(text) TO r_watch;",
        )
        .unwrap();
        let load = Load::start(&base, SESSIONS, 0).await;
        let watch = format!("{base} user=r_watch");

        println!("\n### Server log read: the dashboard's server time at 1 s ({SESSIONS} backends, quiet log; {ROUNDS} rounds of {} s, interleaved)\n", WINDOW.as_secs());
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            off.push(round(&base, &watch, false).await);
            on.push(round(&base, &watch, true).await);
        }
        let ms_off = stats(off.iter().map(|x| x.0).collect());
        let ms_on = stats(on.iter().map(|x| x.0).collect());
        println!("| dashboard at 1 s | server time, ms per s (median, min–max) | statements per s |");
        println!("|---|---|---|");
        println!(
            "| server log not read | {:.2} ({:.2}–{:.2}) | {:.1} |",
            ms_off.0, ms_off.1, ms_off.2, stats(off.iter().map(|x| x.1).collect()).0
        );
        println!(
            "| server log read | {:.2} ({:.2}–{:.2}) | {:.1} |",
            ms_on.0, ms_on.1, ms_on.2, stats(on.iter().map(|x| x.1).collect()).0
        );
        let ratios: Vec<f64> = off.iter().zip(&on).map(|(a, b)| b.0 / a.0.max(1e-9)).collect();
        let r = stats(ratios);
        println!("| read / not read, per round | {:.3}x ({:.3}–{:.3}) | |", r.0, r.1, r.2);
        // The part that is the log read's own: its statements' server time, against the polls'.
        let own: Vec<f64> = on.iter().map(|x| x.2 / (x.0 - x.2).max(1e-9)).collect();
        let log_ms = stats(on.iter().map(|x| x.2).collect());
        let o = stats(own);
        println!(
            "| the log reader's own statements | {:.3} ({:.3}–{:.3}), {:.1}% ({:.1}–{:.1}%) of the polls' in the same round | |",
            log_ms.0, log_ms.1, log_ms.2, o.0 * 100.0, o.1 * 100.0, o.2 * 100.0
        );

        println!("\n### Server log read: cost per MB\n");
        println!("| what | server time | wall time on the client |");
        println!("|---|---|---|");
        per_mb(&srv, &base, &watch).await;
        parse_only();
        load.release().await;
        drop(srv);
    });
}
