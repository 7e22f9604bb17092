//! Public-write detection (issue 25) in the case that defeats its cheap gate: a swarm whose test
//! transactions all write (their own schemas), so a labeled session with an xid starts a new
//! statement on nearly every poll and a lock read is always due. Side by side in one run, each as
//! its own role (server time from pg_stat_statements), both polling once per second over
//! persistent sessions as the dashboard does: detection off, and on (the default, with its lock
//! reads kept within 5% of the polls' time by `LockBudget`).
//!
//! Load: 1,000 client backends, 50 waiting behind a transaction with 2,513 locks
//! (`common/load.rs`), plus 20 labeled writers looping `BEGIN; INSERT INTO their own schema;
//! pg_sleep(50 ms); COMMIT`.
//!
//! Run: `cargo bench --bench public_write_swarm` (PGSWARM_BENCH_WINDOW seconds, default 30).

#[path = "common/load.rs"]
#[allow(dead_code)]
mod load;

use pgswarm::pg::config::build_target;
use pgswarm::pg::connect::SessionSettings;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, open_all, ProbeOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITERS: usize = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let window: u64 = std::env::var("PGSWARM_BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let cluster = load::server(1000 + WRITERS, &["bench_test"]);
    let base = cluster.conninfo("bench_test");
    let mut setup = String::from("CREATE EXTENSION pg_stat_statements;");
    for r in ["r_off", "r_on"] {
        setup.push_str(&format!("CREATE ROLE {r} LOGIN IN ROLE pg_read_all_stats;"));
    }
    setup.push_str("CREATE TABLE public.operation_type (id int);");
    for w in 0..WRITERS {
        setup.push_str(&format!(
            "CREATE SCHEMA test_p5{w:03}t1763900000r0000abcd_gw0; \
             CREATE TABLE test_p5{w:03}t1763900000r0000abcd_gw0.t (id int);"
        ));
    }
    cluster.psql("bench_test", &setup).unwrap();
    let load = load::Load::start(&base, 1000, 50).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let ns = format!("p5{w:03}t1763900000r0000abcd");
        let c = load::client(&base, &format!("application_name=pytest_gw0_{ns}")).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let sql = format!(
                "BEGIN; INSERT INTO test_{ns}_gw0.t VALUES (1); SELECT pg_sleep(0.05); COMMIT"
            );
            while !stop.load(Ordering::Relaxed) {
                if c.batch_execute(&sql).await.is_err() {
                    return;
                }
            }
        }));
    }
    let target_as = |role: &str| {
        build_target(
            Some("bench"),
            &format!("{base} user={role}"),
            "bench",
            &ProcessEnv,
        )
        .unwrap()
    };
    let settings = SessionSettings::default();
    let on = ProbeOptions::default();
    let off = ProbeOptions {
        shared_schemas: Vec::new(),
        ..ProbeOptions::default()
    };
    let (t_off, t_on) = ([target_as("r_off")], [target_as("r_on")]);
    let s_off = open_all(&t_off, &settings, &ProcessEnv).await;
    let s_on = open_all(&t_on, &settings, &ProcessEnv).await;
    let admin = load::client(&base, "application_name=bench_admin").await;
    // Warm up (statements prepared, first full reads), then measure.
    for _ in 0..3 {
        observe(&t_off, &s_off, &off, settings.statement_timeout).await;
        observe(&t_on, &s_on, &on, settings.statement_timeout).await;
    }
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let started = Instant::now();
    let mut polls = 0u64;
    while started.elapsed() < Duration::from_secs(window) {
        let tick = Instant::now();
        observe(&t_off, &s_off, &off, settings.statement_timeout).await;
        observe(&t_on, &s_on, &on, settings.statement_timeout).await;
        polls += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows = admin
        .query(
            "SELECT r.rolname::text, sum(s.total_exec_time)::float8, \
                    coalesce(sum(s.total_exec_time) FILTER (WHERE s.query LIKE '%pg_lock_status%'), 0)::float8, \
                    coalesce(sum(s.calls) FILTER (WHERE s.query LIKE '%pg_lock_status%'), 0)::int8 \
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
             WHERE r.rolname IN ('r_off', 'r_on') GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut ms = std::collections::HashMap::new();
    for r in rows {
        let role: String = r.get(0);
        ms.insert(
            role,
            (
                r.get::<_, f64>(1) / secs,
                r.get::<_, f64>(2) / secs,
                r.get::<_, i64>(3),
            ),
        );
    }
    let (off_ms, _, _) = ms["r_off"];
    let (on_ms, locks_ms, lock_calls) = ms["r_on"];
    let lock_reads = s_on[0].as_ref().map(|s| s.shared.lock_reads()).unwrap_or(0);
    println!("| 1,000 backends + {WRITERS} writing test transactions, one poll per second, {polls} polls | server time per second |");
    println!("|---|---|");
    println!("| detection off | {off_ms:.3} ms/s |");
    println!(
        "| detection on (lock reads within 5% of the polls' time) | {on_ms:.3} ms/s ({:+.1}%) |",
        (on_ms / off_ms - 1.0) * 100.0
    );
    println!(
        "| of which lock reads | {locks_ms:.3} ms/s ({lock_calls} statements with pg_lock_status, {lock_reads} lock reads sent in {polls} polls) |"
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    drop((s_off, s_on));
    load.release().await;
}
