//! Probe cost per refresh, measured on the server (pg_stat_statements, one role per contender) in one
//! run, side by side:
//!
//! (a) the floor: `count(*)` over pg_stat_activity (any tool reading it pays this);
//! (b) the seed write-up's diagnose query (pg_blocking_pids for every backend, two activity scans);
//! (c) the classic pg_locks self-join blocking query (the approach of pg_activity and the wiki);
//! (d) pgswarm's activity probe, and pgswarm's whole snapshot of the database (identity, activity,
//!     awaited locks, relation names, schema listing).
//!
//! Load per scale: N client backends, most idle and labeled; 50 waiting on a lock; one open
//! transaction holding a few thousand locks (240 tables created and not committed, as schema setup
//! does). Each figure: median (min–max) over ROUNDS rounds of CALLS calls, in ms per refresh.
//!
//! Run: `cargo bench --bench probe_cost` (scales from PGSWARM_BENCH_SCALES, default "100,1000").

use pgswarm::cmd::config::build_target;
use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use pgswarm::pg::connect::SessionSettings;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, open_all, ProbeOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const CALLS: usize = 40;
const WAITERS: usize = 50;

const FLOOR: &str = "SELECT count(*) FROM pg_stat_activity";
const SEED: &str = "SELECT blocked.pid AS blocked_pid, blocked.application_name AS blocked_app,
  blocked.wait_event, blocked.query AS blocked_query, blocker.pid AS blocker_pid,
  blocker.application_name AS blocker_app, blocker.query AS blocker_query
FROM pg_stat_activity blocked
JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS blockers(pid) ON true
JOIN pg_stat_activity blocker ON blocker.pid = blockers.pid";
const SELF_JOIN: &str = "SELECT blocking.pid AS blocking_pid, blocked.pid AS blocked_pid,
  a.application_name, a.query, blocking.mode, blocking.relation::regclass
FROM pg_locks blocked
JOIN pg_locks blocking ON blocking.locktype = blocked.locktype
  AND blocking.database IS NOT DISTINCT FROM blocked.database
  AND blocking.relation IS NOT DISTINCT FROM blocked.relation
  AND blocking.page IS NOT DISTINCT FROM blocked.page
  AND blocking.tuple IS NOT DISTINCT FROM blocked.tuple
  AND blocking.virtualxid IS NOT DISTINCT FROM blocked.virtualxid
  AND blocking.transactionid IS NOT DISTINCT FROM blocked.transactionid
  AND blocking.classid IS NOT DISTINCT FROM blocked.classid
  AND blocking.objid IS NOT DISTINCT FROM blocked.objid
  AND blocking.objsubid IS NOT DISTINCT FROM blocked.objsubid
  AND blocking.pid <> blocked.pid
JOIN pg_stat_activity a ON a.pid = blocking.pid
WHERE NOT blocked.granted AND blocking.granted";

async fn client(conninfo: &str, extra: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(&format!("{conninfo} {extra}"), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct Scale {
    backends: i64,
    lock_waiters: i64,
    locks_held: i64,
    rows: Vec<(&'static str, (f64, f64, f64))>,
}

async fn measure(n: usize) -> Scale {
    let cluster = TempCluster::start(&ClusterOptions {
        databases: vec!["bench_test".into()],
        settings: vec![
            ("max_connections".into(), format!("{}", n + 80)),
            (
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            ),
            ("pg_stat_statements.track".into(), "'all'".into()),
            ("shared_buffers".into(), "128MB".into()),
        ],
        ..Default::default()
    })
    .expect("throwaway server (PostgreSQL server binaries with contrib)");
    let base = cluster.conninfo("bench_test");
    cluster
        .psql(
            "bench_test",
            "CREATE EXTENSION pg_stat_statements; CREATE TABLE hot (id int);
             CREATE ROLE r_floor LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_seed LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_selfjoin LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_probe LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_snapshot LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_lite LOGIN IN ROLE pg_read_all_stats;",
        )
        .unwrap();

    // The load.
    let mut sessions = Vec::new();
    let idle = n.saturating_sub(WAITERS + 2);
    for i in 0..idle {
        let ns = format!("p{}t1763900000r{:08x}", 20_000 + i % 40, i % 40);
        sessions.push(client(&base, &format!("application_name=pytest_gw{}_{ns}", i / 40)).await);
    }
    let setup = client(
        &base,
        "application_name=pytest_gw0_p1t1763900000r000000aa_setup",
    )
    .await;
    let ddl: Vec<String> = (0..240)
        .map(|i| format!("CREATE TABLE setup_{i} (id serial PRIMARY KEY, v text);"))
        .collect();
    setup
        .batch_execute(&format!("BEGIN; LOCK TABLE hot; {}", ddl.join(" ")))
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let c = Arc::new(
            client(
                &base,
                &format!("application_name=pytest_gw{i}_p2t1763900000r000000bb"),
            )
            .await,
        );
        waiters.push(tokio::spawn(async move {
            c.batch_execute("SELECT * FROM hot").await
        }));
    }
    let admin = client(&base, "application_name=bench_admin").await;
    loop {
        let r = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        if r.get::<_, i64>(0) >= WAITERS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let facts = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity),
                    (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'),
                    (SELECT count(*) FROM pg_locks)",
            &[],
        )
        .await
        .unwrap();

    let contenders: [(&'static str, &'static str, Option<&'static str>); 5] = [
        (
            "(a) floor: count(*) over pg_stat_activity",
            "r_floor",
            Some(FLOOR),
        ),
        ("(b) seed diagnose query", "r_seed", Some(SEED)),
        ("(c) pg_locks self-join", "r_selfjoin", Some(SELF_JOIN)),
        ("(d) pgswarm activity probe", "r_probe", None),
        (
            "(e) experiment: probe without idle sessions' query text",
            "r_lite",
            None,
        ),
    ];
    let probe_sql = pgswarm::pg::probe::activity_sql_for_bench();
    let mut per_role: Vec<Vec<f64>> = vec![Vec::new(); 6];
    let target = build_target(
        Some("bench"),
        &format!("{base} user=r_snapshot"),
        "bench",
        &ProcessEnv,
    )
    .unwrap();
    let settings = SessionSettings::default();
    let opts = ProbeOptions {
        schema_prefix: "test".into(),
        exact_sizes: false,
    };
    let clients: Vec<Client> = {
        let mut v = Vec::new();
        for (_, role, _) in &contenders {
            v.push(client(&base, &format!("user={role} application_name=pgswarm")).await);
        }
        v
    };
    for _ in 0..ROUNDS {
        admin
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .unwrap();
        for (i, (_, _, sql)) in contenders.iter().enumerate() {
            let sql = match (sql, i) {
                (Some(q), _) => q.to_string(),
                (None, 4) => probe_sql.replace(
                    "a.query,",
                    "CASE WHEN a.state IS DISTINCT FROM 'idle' THEN a.query END,",
                ),
                (None, _) => probe_sql.clone(),
            };
            for _ in 0..CALLS {
                clients[i].query(sql.as_str(), &[]).await.unwrap();
            }
        }
        // A refresh as the dashboard and `record` do it: sessions opened once, then polled.
        let targets = std::slice::from_ref(&target);
        let open = open_all(targets, &settings, &ProcessEnv).await;
        admin
            .batch_execute(
                "SELECT pg_stat_statements_reset((SELECT oid FROM pg_roles WHERE rolname = 'r_snapshot'))",
            )
            .await
            .unwrap();
        for _ in 0..CALLS {
            let obs = observe(targets, &open, &opts, settings.statement_timeout).await;
            assert!(obs.databases[0].outcome.is_ok());
        }
        let rows = admin
            .query(
                "SELECT r.rolname::text, sum(s.total_exec_time)::float8
                 FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                 WHERE r.rolname LIKE 'r\\_%' GROUP BY 1",
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let role: String = row.get(0);
            let total: f64 = row.get(1);
            let idx = [
                "r_floor",
                "r_seed",
                "r_selfjoin",
                "r_probe",
                "r_lite",
                "r_snapshot",
            ]
            .iter()
            .position(|r| *r == role)
            .unwrap();
            per_role[idx].push(total / CALLS as f64);
        }
    }
    // Where the whole snapshot's time goes (last round), for the README's explanation.
    for row in admin
        .query(
            "SELECT s.total_exec_time / s.calls, s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 90)
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname = 'r_snapshot' ORDER BY s.total_exec_time DESC LIMIT 6",
            &[],
        )
        .await
        .unwrap()
    {
        eprintln!(
            "  snapshot statement: {:.3} ms x {}: {}",
            row.get::<_, f64>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        );
    }
    setup.batch_execute("ROLLBACK").await.unwrap();
    for w in waiters {
        let _ = w.await;
    }
    drop(sessions);
    let mut rows: Vec<(&'static str, (f64, f64, f64))> = contenders
        .iter()
        .enumerate()
        .map(|(i, (label, _, _))| (*label, stats(per_role[i].clone())))
        .collect();
    rows.push((
        "(d) pgswarm whole snapshot of the database (a dashboard refresh)",
        stats(per_role[5].clone()),
    ));
    cluster.stop();
    Scale {
        backends: facts.get(0),
        lock_waiters: facts.get(1),
        locks_held: facts.get(2),
        rows,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scales: Vec<usize> = std::env::var("PGSWARM_BENCH_SCALES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut results = Vec::new();
    for n in scales {
        eprintln!("probe_cost: {n} backends…");
        results.push(measure(n).await);
    }
    println!(
        "| backends (lock waiters, pg_locks rows) | query | server time per refresh, median (min–max) |"
    );
    println!("|---|---|---|");
    for s in &results {
        for (label, (med, lo, hi)) in &s.rows {
            println!(
                "| {} ({}, {}) | {label} | {med:.2} ms ({lo:.2}–{hi:.2}) |",
                s.backends, s.lock_waiters, s.locks_held
            );
        }
    }
    println!("\n| backends | probe / floor | snapshot / seed | snapshot / self-join | pg_blocking_pids calls per refresh: seed vs pgswarm |");
    println!("|---|---|---|---|---|");
    for s in &results {
        let m = |i: usize| s.rows[i].1 .0;
        println!(
            "| {} | {:.2}x | {:.2}x | {:.2}x | {} vs {} |",
            s.backends,
            m(3) / m(0),
            m(5) / m(1),
            m(5) / m(2),
            s.backends,
            s.lock_waiters
        );
    }
}
