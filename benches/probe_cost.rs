//! Probe cost per refresh, measured on the server (pg_stat_statements, one role per contender) in one
//! run, side by side:
//!
//! (a) the floor: `count(*)` over pg_stat_activity (any tool reading it pays this);
//! (b) the seed write-up's diagnose query (pg_blocking_pids for every backend, two activity scans);
//! (c) the classic pg_locks self-join blocking query (the approach of pg_activity and the wiki);
//! (d) pgswarm's activity probe: incremental (what every dashboard/record poll after the first sends,
//!     bound 3 s back as at a 1 s refresh), and full (the first poll, and `pgswarm snapshot`);
//!     and pgswarm's whole refresh of the database over persistent sessions, as the dashboard and
//!     `record` do it (activity, awaited locks, relation names, schema listing; full reads and
//!     `pg_locks` re-reads on their schedule included).
//!
//! Load per scale: see `common/load.rs`. Each figure: median (min–max) over ROUNDS rounds of CALLS
//! calls, in ms per refresh; contenders interleave within a round.
//!
//! Run: `cargo bench --bench probe_cost` (scales from PGSWARM_BENCH_SCALES, default "100,1000,3000").

#[path = "common/load.rs"]
mod load;

use chrono::Utc;
use load::{client, Load, SEED};
use pgswarm::pg::config::build_target;
use pgswarm::pg::connect::SessionSettings;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, open_all, ProbeOptions};
use tokio_postgres::Client;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const CALLS: usize = 40;
const WAITERS: usize = 50;

const FLOOR: &str = "SELECT count(*) FROM pg_stat_activity";
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
    let cluster = load::server(n, &["bench_test"]);
    let base = cluster.conninfo("bench_test");
    cluster
        .psql(
            "bench_test",
            "CREATE EXTENSION pg_stat_statements;
             CREATE ROLE r_floor LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_seed LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_selfjoin LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_probe LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_full LOGIN IN ROLE pg_read_all_stats;
             CREATE ROLE r_snapshot LOGIN IN ROLE pg_read_all_stats;",
        )
        .unwrap();
    let load = Load::start(&base, n, WAITERS).await;
    let admin = client(&base, "application_name=bench_admin").await;
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
        (
            "(d) pgswarm activity probe, incremental (every poll after the first)",
            "r_probe",
            None,
        ),
        (
            "(d) pgswarm activity probe, full read (first poll; `pgswarm snapshot`)",
            "r_full",
            None,
        ),
    ];
    let probe_sql = pgswarm::pg::probe::ACTIVITY_SQL_FOR_BENCH.to_string();
    let mut per_role: Vec<Vec<f64>> = vec![Vec::new(); 6];
    let mut prepared = Vec::new();
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
        for (_, role, sql) in &contenders {
            let c = client(&base, &format!("user={role} application_name=pgswarm")).await;
            prepared.push(c.prepare(sql.unwrap_or(&probe_sql)).await.unwrap());
            v.push(c);
        }
        v
    };
    // A refresh as the dashboard and `record` do it: sessions opened once, then polled.
    let targets = std::slice::from_ref(&target);
    let open = open_all(targets, &settings, &ProcessEnv).await;
    for _ in 0..ROUNDS {
        admin
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .unwrap();
        // Interleaved call by call, so load drift on a shared machine hits every contender alike.
        for _ in 0..CALLS {
            for (i, c) in clients.iter().enumerate() {
                if i == 3 {
                    // Steady state at a 1 s refresh: the previous poll 1 s ago, minus the margin.
                    let since = Some(Utc::now() - chrono::Duration::seconds(3));
                    c.query(&prepared[i], &[&since]).await.unwrap();
                } else if i == 4 {
                    let since: Option<chrono::DateTime<Utc>> = None;
                    c.query(&prepared[i], &[&since]).await.unwrap();
                } else {
                    c.query(&prepared[i], &[]).await.unwrap();
                }
            }
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
                "r_full",
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
    let counters = open[0].as_ref().map(|s| s.counters()).unwrap_or_default();
    eprintln!(
        "  whole refresh: {} polls, {} full activity reads, {} pg_locks reads",
        counters.activity_reads, counters.full_reads, counters.lock_reads
    );
    drop(open);
    load.release().await;
    let mut rows: Vec<(&'static str, (f64, f64, f64))> = contenders
        .iter()
        .enumerate()
        .map(|(i, (label, _, _))| (*label, stats(per_role[i].clone())))
        .collect();
    rows.push((
        "(d) pgswarm whole refresh of the database (dashboard, record)",
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
        .unwrap_or_else(|_| "100,1000,3000".into())
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
    println!("\n| backends | incremental probe / floor | whole refresh / seed | whole refresh / self-join | full probe / floor | pg_blocking_pids calls per refresh: seed vs pgswarm |");
    println!("|---|---|---|---|---|---|");
    for s in &results {
        let m = |i: usize| s.rows[i].1 .0;
        println!(
            "| {} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {} vs {} |",
            s.backends,
            m(3) / m(0),
            m(5) / m(1),
            m(5) / m(2),
            m(4) / m(0),
            s.backends,
            s.lock_waiters
        );
    }
}
