//! The seed's backlog (56 stale schemas of 220 tables each, default lock settings) cleared by
//! `pgswarm sweep` vs a psql loop dropping one schema per transaction, on one server and split over
//! two; plus the schema listing's cost with those ~12,000 test tables present (estimated sizes, as
//! every dashboard poll reads them, and exact sizes, as the dashboard's background sizer reads them
//! every 30 s on its own connection).
//!
//! The backlogs are built once as template databases; before every sweep the database is re-created
//! from its template (a file copy, not timed). ROUNDS rounds, each running all four contenders in
//! rotating order; medians (min–max) and the median of per-round ratios.
//!
//! Run: `cargo bench --bench sweep_backlog` (PGSWARM_BENCH_ROUNDS, default 3; ~2 min to build the
//! templates, then ~2 min per round).

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use std::process::Command;
use std::time::Instant;

const SCHEMAS: usize = 56;
const TABLES: usize = 220;

fn server() -> TempCluster {
    TempCluster::start(&ClusterOptions {
        databases: vec!["tpl_full".into(), "tpl_half".into()],
        // Default lock settings: max_locks_per_transaction 64, max_connections 100.
        settings: vec![("max_connections".into(), "100".into())],
        ..Default::default()
    })
    .expect("server binaries")
}

fn backlog(srv: &TempCluster, db: &str, from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let s = format!("test_p{}t1700000000r{:08x}_gw0", 50_000 + i, i);
            srv.psql(
                db,
                &format!(
                    "DO $$ BEGIN EXECUTE format('CREATE SCHEMA %I', '{s}'); FOR i IN 0..{} LOOP \
                     EXECUTE format('CREATE TABLE %I.%I (id serial PRIMARY KEY, name text, created int)', '{s}', 't' || i); \
                     EXECUTE format('CREATE INDEX ON %I.%I (created)', '{s}', 't' || i); END LOOP; END $$",
                    TABLES - 1
                ),
            )
            .unwrap();
            s
        })
        .collect()
}

fn sweep(servers: &[&TempCluster]) -> (f64, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
    c.args(["sweep", "--yes", "--json"]);
    for (i, s) in servers.iter().enumerate() {
        c.arg("--db")
            .arg(format!("db{i}={}", s.conninfo("tenant_test")));
    }
    let t = Instant::now();
    let out = c.output().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sweep --json");
    let count = |field: &str| -> usize {
        r["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[field].as_array().map_or(0, |a| a.len()))
            .sum()
    };
    let summary = format!(
        "dropped {}, failed {}; discovery {:.1} s; windows: last check to COMMIT ≤ {:.0} ms, \
         dependency check to DROP ≤ {:.0} ms",
        count("dropped"),
        count("failed"),
        r["timings"]["discovery_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        r["timings"]["check_to_commit_ms_max"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["timings"]["dependents_to_drop_ms_max"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    (ms, summary)
}

fn psql_loop(parts: &[(&TempCluster, Vec<String>)]) -> f64 {
    let t = Instant::now();
    for (srv, schemas) in parts {
        for s in schemas {
            srv.psql(
                "tenant_test",
                &format!("BEGIN; SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '30s'; DROP SCHEMA \"{s}\" CASCADE; COMMIT;"),
            )
            .unwrap();
        }
    }
    t.elapsed().as_secs_f64() * 1000.0
}

fn timed_psql(srv: &TempCluster, db: &str, sql: &str) -> f64 {
    let t = Instant::now();
    srv.psql(db, sql).unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

/// Re-creates `tenant_test` from a template (not timed).
fn reset(srv: &TempCluster, template: &str) {
    srv.psql("postgres", "DROP DATABASE IF EXISTS tenant_test")
        .unwrap();
    srv.psql(
        "postgres",
        &format!("CREATE DATABASE tenant_test TEMPLATE {template}"),
    )
    .unwrap();
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let rounds: usize = std::env::var("PGSWARM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let a = server();
    let b = server();
    eprintln!("sweep_backlog: building template backlogs …");
    let full = backlog(&a, "tpl_full", 0, SCHEMAS);
    let half_a = backlog(&a, "tpl_half", 0, SCHEMAS / 2);
    let half_b = backlog(&b, "tpl_half", SCHEMAS / 2, SCHEMAS);

    // Schema listing with ~12,000 test tables: the probe's own queries, timed through psql.
    let listing = "SELECT n.nspname, count(c.oid) FILTER (WHERE c.relkind IN ('r','p')), \
        coalesce(sum(c.relpages::int8), 0) * current_setting('block_size')::int8 \
        FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid \
        WHERE n.nspname LIKE 'test\\_%' GROUP BY n.nspname";
    let exact = "SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)), 0) \
        FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid \
        WHERE n.nspname LIKE 'test\\_%' AND c.relkind IN ('r','p','m') GROUP BY 1";
    let baseline = timed_psql(&a, "tpl_full", "SELECT 1");
    let est = stats(
        (0..5)
            .map(|_| timed_psql(&a, "tpl_full", listing) - baseline)
            .collect(),
    );
    let ex = stats(
        (0..5)
            .map(|_| timed_psql(&a, "tpl_full", exact) - baseline)
            .collect(),
    );

    let labels = [
        "pgswarm sweep, 1 server",
        "psql loop, one schema per transaction, 1 server",
        "pgswarm sweep, 2 servers (28 + 28), swept in parallel",
        "psql loop, 2 servers in turn (28 + 28)",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); labels.len()];
    let mut summaries: Vec<String> = vec![String::new(); labels.len()];
    for round in 0..rounds {
        for k in 0..labels.len() {
            let i = (k + round) % labels.len();
            let (ms, summary) = match i {
                0 => {
                    reset(&a, "tpl_full");
                    sweep(&[&a])
                }
                1 => {
                    reset(&a, "tpl_full");
                    (psql_loop(&[(&a, full.clone())]), String::new())
                }
                2 => {
                    reset(&a, "tpl_half");
                    reset(&b, "tpl_half");
                    sweep(&[&a, &b])
                }
                _ => {
                    reset(&a, "tpl_half");
                    reset(&b, "tpl_half");
                    (
                        psql_loop(&[(&a, half_a.clone()), (&b, half_b.clone())]),
                        String::new(),
                    )
                }
            };
            eprintln!(
                "  round {} {:<55} {:.1} s {summary}",
                round + 1,
                labels[i],
                ms / 1000.0
            );
            times[i].push(ms);
            if !summary.is_empty() {
                summaries[i] = summary;
            }
        }
    }
    let ratio =
        |x: usize, y: usize| stats(times[x].iter().zip(&times[y]).map(|(p, q)| p / q).collect());
    println!(
        "| seed backlog: {SCHEMAS} schemas x {TABLES} tables, default lock settings, {rounds} rounds | wall time, median (min–max) |"
    );
    println!("|---|---|");
    for (i, label) in labels.iter().enumerate() {
        let (m, lo, hi) = stats(times[i].clone());
        let note = if summaries[i].is_empty() {
            String::new()
        } else {
            format!(" — last run: {}", summaries[i])
        };
        println!(
            "| {label} | {:.1} s ({:.1}–{:.1}){note} |",
            m / 1000.0,
            lo / 1000.0,
            hi / 1000.0
        );
    }
    let (r1, r1lo, r1hi) = ratio(0, 1);
    let (r2, r2lo, r2hi) = ratio(2, 3);
    println!(
        "| pgswarm / psql loop, 1 server (per-round ratio) | {r1:.2}x ({r1lo:.2}–{r1hi:.2}) |"
    );
    println!(
        "| pgswarm / psql loop, 2 servers (per-round ratio) | {r2:.2}x ({r2lo:.2}–{r2hi:.2}) |"
    );
    println!(
        "| schema listing, {} test tables, estimated sizes (every poll) | {:.0} ms ({:.0}–{:.0}), psql round trip subtracted |",
        SCHEMAS * TABLES,
        est.0,
        est.1,
        est.2
    );
    println!(
        "| schema listing, {} test tables, exact sizes (dashboard: background sizer every 30 s) | {:.0} ms ({:.0}–{:.0}) |",
        SCHEMAS * TABLES,
        ex.0,
        ex.1,
        ex.2
    );
    a.stop();
    b.stop();
}
