//! Server cost per call, measured on the server (pg_stat_statements, one role per contender) in one
//! run, side by side:
//!
//! (a) the floor: `count(*)` over pg_stat_activity (any tool reading it pays this);
//! (b) the seed write-up's diagnose query (pg_blocking_pids for every backend, two activity scans);
//! (c) the classic pg_locks self-join blocking query (the approach of pg_activity and the wiki);
//! (d) pgswarm's whole refresh over persistent sessions, as the dashboard and `record` do it
//!     (incremental activity read, awaited locks, relation names, schema listing, lock-table count;
//!     full reads and `pg_locks` re-reads on their schedule included);
//! (e) pgswarm's one-shot `snapshot`: connect, the whole poll, close (estimated sizes);
//! (f) `pgswarm snapshot --summary`;
//! (g) (d) with public-write detection on (the default; (d) runs with it off): the lock read for
//!     due labeled transactions and the shared tables' write counters (`pg::public_write`). Its
//!     time-gated reads (counters every 3 s, the table list every 60 s) are amortized over the
//!     calls of a round, which come faster than the dashboard's 1 s; the output also gives the
//!     cost at one poll per second from each statement's own mean.
//!
//! Load per scale: see `common/load.rs`; "NtM" scales add M test tables. Each figure: median (min–max)
//! over ROUNDS rounds of CALLS calls, in ms per call; contenders interleave within a round. Ratios
//! are taken per round (both sides from the same round) and reported as median (min–max).
//!
//! Run: `cargo bench --bench probe_cost` (scales from PGSWARM_BENCH_SCALES, default
//! "1000,3000,1000t5000").

#[path = "common/load.rs"]
mod load;

use load::{client, Load, SEED};
use pgswarm::pg::config::build_target;
use pgswarm::pg::connect::SessionSettings;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, observe_once, open_all, summarize_once, ProbeOptions};

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
    label: String,
    backends: i64,
    lock_waiters: i64,
    locks_held: i64,
    rows: Vec<(&'static str, (f64, f64, f64))>,
    /// Per-round ratios: (name, (median, min, max)).
    ratios: Vec<(&'static str, (f64, f64, f64))>,
}

const ROLES: [&str; 7] = [
    "r_floor",
    "r_seed",
    "r_selfjoin",
    "r_refresh",
    "r_once",
    "r_summary",
    "r_detect",
];

/// Test schemas with `tables` tables in all (100 per schema), as a swarm's backlog leaves them.
fn create_test_tables(cluster: &pgswarm::pg::cluster::TempCluster, tables: usize) {
    for schema in 0..tables.div_ceil(100) {
        let ns = format!("p{}t1763900000r{:08x}", 30_000 + schema, schema);
        let mut sql = format!("CREATE SCHEMA test_{ns}_gw0;");
        for t in 0..100.min(tables - schema * 100) {
            sql.push_str(&format!(
                "CREATE TABLE test_{ns}_gw0.t{t} (id serial PRIMARY KEY, v text);"
            ));
        }
        cluster.psql("bench_test", &sql).unwrap();
    }
}

async fn measure(n: usize, tables: usize) -> Scale {
    let cluster = load::server(n, &["bench_test"]);
    let base = cluster.conninfo("bench_test");
    let mut roles = String::from("CREATE EXTENSION pg_stat_statements;");
    for r in ROLES {
        roles.push_str(&format!("CREATE ROLE {r} LOGIN IN ROLE pg_read_all_stats;"));
    }
    cluster.psql("bench_test", &roles).unwrap();
    if tables > 0 {
        eprintln!("  creating {tables} test tables…");
        create_test_tables(&cluster, tables);
    }
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

    let statements: [(&'static str, &'static str); 3] = [
        ("(a) floor: count(*) over pg_stat_activity", FLOOR),
        ("(b) seed diagnose query", SEED),
        ("(c) pg_locks self-join (pg_activity's approach)", SELF_JOIN),
    ];
    let mut clients = Vec::new();
    for (i, (_, sql)) in statements.iter().enumerate() {
        let c = client(
            &base,
            &format!("user={} application_name=pgswarm", ROLES[i]),
        )
        .await;
        let stmt = c.prepare(sql).await.unwrap();
        clients.push((c, stmt));
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
    let opts = ProbeOptions::default();
    // (d): detection off, to compare with (g), the same refresh with it on (the default).
    let opts_off = ProbeOptions {
        shared_schemas: Vec::new(),
        ..ProbeOptions::default()
    };
    // A refresh as the dashboard and `record` do it: sessions opened once, then polled.
    let refresh_targets = [target_as("r_refresh")];
    let open = open_all(&refresh_targets, &settings, &ProcessEnv).await;
    let detect_targets = [target_as("r_detect")];
    let open_detect = open_all(&detect_targets, &settings, &ProcessEnv).await;
    let mut round_secs = Vec::new();
    // What every `pgswarm snapshot` does: connect, read once, close.
    let once_targets = [target_as("r_once")];
    let summary_targets = [target_as("r_summary")];

    let mut per_role: Vec<Vec<f64>> = vec![Vec::new(); ROLES.len()];
    for _ in 0..ROUNDS {
        let started = std::time::Instant::now();
        admin
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .unwrap();
        // Interleaved call by call, so load drift on a shared machine hits every contender alike.
        for _ in 0..CALLS {
            for (c, stmt) in &clients {
                c.query(stmt, &[]).await.unwrap();
            }
            let obs = observe(
                &refresh_targets,
                &open,
                &opts_off,
                settings.statement_timeout,
            )
            .await;
            assert!(obs.databases[0].outcome.is_ok());
            let obs = observe(
                &detect_targets,
                &open_detect,
                &opts,
                settings.statement_timeout,
            )
            .await;
            assert!(obs.databases[0].outcome.is_ok());
            let obs = observe_once(&once_targets, &settings, &opts, &ProcessEnv).await;
            assert!(obs.databases[0].outcome.is_ok());
            let sum = summarize_once(&summary_targets, &settings, &ProcessEnv).await;
            assert!(sum.0.servers.iter().all(|s| s.activity_error.is_none()));
        }
        round_secs.push(started.elapsed().as_secs_f64());
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
            if let Some(idx) = ROLES.iter().position(|r| *r == role) {
                per_role[idx].push(total / CALLS as f64);
            }
        }
    }
    // Where the one-shot's time goes (last round), for the README's explanation.
    for role in ["r_refresh", "r_detect", "r_once", "r_summary"] {
        for row in admin
            .query(
                "SELECT s.total_exec_time / s.calls, s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 80)
                 FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                 WHERE r.rolname = $1 ORDER BY s.total_exec_time DESC LIMIT 6",
                &[&role],
            )
            .await
            .unwrap()
        {
            eprintln!(
                "  {role} statement: {:.3} ms x {}: {}",
                row.get::<_, f64>(0),
                row.get::<_, i64>(1),
                row.get::<_, String>(2)
            );
        }
    }
    let counters = open[0].as_ref().map(|s| s.counters()).unwrap_or_default();
    eprintln!(
        "  whole refresh: {} polls, {} full activity reads, {} pg_locks reads",
        counters.activity_reads, counters.full_reads, counters.lock_reads
    );
    // One more poll over a fresh detection session, after the last round: its reader has seen no
    // transaction yet, so it reads locks once (the setup transaction holds an xid), which gives the
    // lock read's own cost on this load.
    let fresh = open_all(&detect_targets, &settings, &ProcessEnv).await;
    let obs = observe(&detect_targets, &fresh, &opts, settings.statement_timeout).await;
    assert!(
        !obs.shared.locks.is_empty(),
        "the setup transaction writes into public"
    );
    drop(fresh);
    let shared_lock_reads = open_detect[0]
        .as_ref()
        .map(|s| s.shared.lock_reads())
        .unwrap_or_default();
    // The detection statements' own means (last round), and what they cost at the dashboard's
    // one poll per second: a lock read per poll at worst, counters every 3 s, the list every 60 s.
    let detection = admin
        .query(
            "SELECT CASE WHEN s.query LIKE '%pg_lock_status%' THEN 'locks'                          WHEN s.query LIKE '%pg_stat_get_tuples_inserted(o)%' THEN 'counters'                          WHEN s.query LIKE '%nspname = ANY%relkind%' THEN 'tables' END AS k,                     sum(s.total_exec_time)::float8, sum(s.calls)::int8              FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid              WHERE r.rolname = 'r_detect' GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut each: std::collections::HashMap<String, (f64, i64)> = Default::default();
    for row in detection {
        if let Some(k) = row.get::<_, Option<String>>(0) {
            each.insert(k, (row.get(1), row.get(2)));
        }
    }
    let per_call = |k: &str| {
        each.get(k)
            .map(|(t, c)| if *c > 0 { t / *c as f64 } else { 0.0 })
            .unwrap_or(0.0)
    };
    let calls_of = |k: &str| each.get(k).map(|(_, c)| *c).unwrap_or(0);
    eprintln!(
        "  detection (last round): lock read {:.3} ms x {}, counters {:.3} ms x {}, table list {:.3} ms x {}; \
         {shared_lock_reads} lock reads in all {} polls; round {:.1} s",
        per_call("locks"),
        calls_of("locks"),
        per_call("counters"),
        calls_of("counters"),
        per_call("tables"),
        calls_of("tables"),
        ROUNDS * CALLS,
        stats(round_secs.clone()).0
    );
    let d_median = stats(per_role[3].clone()).0;
    // A lock read at most every LOCK_READ_GAP (2 s) per database, whatever the poll rate.
    let worst_per_s =
        d_median + per_call("locks") / 2.0 + per_call("counters") / 3.0 + per_call("tables") / 60.0;
    let observed_lock_rate = shared_lock_reads as f64 / (ROUNDS * CALLS) as f64;
    let model_per_s = d_median
        + per_call("locks") * observed_lock_rate
        + per_call("counters") / 3.0
        + per_call("tables") / 60.0;
    eprintln!(
        "  at one poll per second: detection off {d_median:.3} ms/s; on {model_per_s:.3} ms/s \
         ({:+.1}%) with this load's lock-read rate; {worst_per_s:.3} ms/s ({:+.1}%) with a lock read every 2 s (a swarm of labeled write transactions starting statements all the time)",
        (model_per_s / d_median - 1.0) * 100.0,
        (worst_per_s / d_median - 1.0) * 100.0
    );
    drop(open);
    drop(open_detect);
    load.release().await;
    let labels = [
        statements[0].0,
        statements[1].0,
        statements[2].0,
        "(d) pgswarm refresh (dashboard, record: persistent sessions, whole poll)",
        "(e) pgswarm snapshot (one-shot: connect, whole poll, close)",
        "(f) pgswarm snapshot --summary",
        "(g) (d) with public-write detection on (default; (d) has it off)",
    ];
    let rows = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (*label, stats(per_role[i].clone())))
        .collect();
    let ratio = |a: usize, b: usize| -> (f64, f64, f64) {
        stats(
            per_role[a]
                .iter()
                .zip(&per_role[b])
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let ratios = vec![
        ("refresh / seed", ratio(3, 1)),
        ("refresh / self-join", ratio(3, 2)),
        ("snapshot / seed", ratio(4, 1)),
        ("summary / floor", ratio(5, 0)),
        ("detection on / off", ratio(6, 3)),
    ];
    cluster.stop();
    Scale {
        label: if tables > 0 {
            format!("{n} + {tables} test tables")
        } else {
            format!("{n}")
        },
        backends: facts.get(0),
        lock_waiters: facts.get(1),
        locks_held: facts.get(2),
        rows,
        ratios,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // "N" is N backends; "NtM" adds M test tables (100 per schema).
    let scales: Vec<(usize, usize)> = std::env::var("PGSWARM_BENCH_SCALES")
        .unwrap_or_else(|_| "1000,3000,1000t5000".into())
        .split(',')
        .filter_map(|s| {
            let (n, t) = s.trim().split_once('t').unwrap_or((s.trim(), "0"));
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let mut results = Vec::new();
    for (n, tables) in scales {
        eprintln!("probe_cost: {n} backends, {tables} test tables…");
        results.push(measure(n, tables).await);
    }
    println!(
        "| scale: backends (lock waiters, pg_locks rows) | query | server time per call, median (min–max) |"
    );
    println!("|---|---|---|");
    for s in &results {
        for (label, (med, lo, hi)) in &s.rows {
            println!(
                "| {}: {} ({}, {}) | {label} | {med:.2} ms ({lo:.2}–{hi:.2}) |",
                s.label, s.backends, s.lock_waiters, s.locks_held
            );
        }
    }
    println!("\n| scale | ratio per round, median (min–max) |");
    println!("|---|---|");
    for s in &results {
        let cells: Vec<String> = s
            .ratios
            .iter()
            .map(|(name, (m, lo, hi))| format!("{name} {m:.2}x ({lo:.2}–{hi:.2})"))
            .collect();
        println!("| {} | {} |", s.label, cells.join("; "));
    }
}
