//! The seed's backlog (56 stale schemas of 220 tables each, default lock settings) cleared by
//! `pgswarm sweep` vs a psql loop dropping one schema per transaction, on one server and split over
//! two; plus the schema listing's cost with those ~12,000 test tables present (estimated sizes, as
//! every dashboard poll reads them, and exact sizes, as every 10th poll does).
//!
//! Run: `cargo bench --bench sweep_backlog` (several minutes: each backlog takes ~45 s to create).

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use std::process::Command;
use std::time::Instant;

const SCHEMAS: usize = 56;
const TABLES: usize = 220;

fn server() -> TempCluster {
    TempCluster::start(&ClusterOptions {
        databases: vec!["tenant_test".into()],
        // Default lock settings: max_locks_per_transaction 64, max_connections 100.
        settings: vec![("max_connections".into(), "100".into())],
        ..Default::default()
    })
    .expect("server binaries")
}

fn backlog(srv: &TempCluster, from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let s = format!("test_p{}t1700000000r{:08x}_gw0", 50_000 + i, i);
            srv.psql(
                "tenant_test",
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
    c.args(["sweep", "--yes"]);
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
    let text = String::from_utf8_lossy(&out.stdout);
    (ms, text.lines().last().unwrap_or("").to_string())
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

fn timed_psql(srv: &TempCluster, sql: &str) -> f64 {
    let t = Instant::now();
    srv.psql("tenant_test", sql).unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let mut rows: Vec<(String, String)> = Vec::new();

    // One server.
    let a = server();
    let schemas = backlog(&a, 0, SCHEMAS);
    // Schema listing with ~12,000 test tables: the probe's own queries, timed through psql.
    let listing = "SELECT n.nspname, count(c.oid) FILTER (WHERE c.relkind IN ('r','p')), \
        coalesce(sum(c.relpages::int8), 0) * current_setting('block_size')::int8 \
        FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid \
        WHERE n.nspname LIKE 'test\\_%' GROUP BY n.nspname";
    let exact = "SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)), 0) \
        FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid \
        WHERE n.nspname LIKE 'test\\_%' AND c.relkind IN ('r','p','m') GROUP BY 1";
    let baseline = timed_psql(&a, "SELECT 1");
    let mut est: Vec<f64> = (0..5).map(|_| timed_psql(&a, listing) - baseline).collect();
    let mut ex: Vec<f64> = (0..5).map(|_| timed_psql(&a, exact) - baseline).collect();
    est.sort_by(|x, y| x.total_cmp(y));
    ex.sort_by(|x, y| x.total_cmp(y));
    rows.push((
        format!(
            "schema listing, {} test tables, estimated sizes (every poll)",
            SCHEMAS * TABLES
        ),
        format!("{:.0} ms (median of 5, psql round trip subtracted)", est[2]),
    ));
    rows.push((
        format!(
            "schema listing, {} test tables, exact sizes (every 10th poll)",
            SCHEMAS * TABLES
        ),
        format!("{:.0} ms", ex[2]),
    ));
    let (ms, summary) = sweep(&[&a]);
    rows.push((
        "pgswarm sweep, 1 server".into(),
        format!("{:.1} s — {summary}", ms / 1000.0),
    ));
    let schemas2 = backlog(&a, SCHEMAS, 2 * SCHEMAS);
    let _ = schemas;
    rows.push((
        "psql loop, one schema per transaction, 1 server".into(),
        format!("{:.1} s", psql_loop(&[(&a, schemas2)]) / 1000.0),
    ));

    // Two servers, half the backlog each.
    let b = server();
    let _ = backlog(&a, 0, SCHEMAS / 2);
    let _ = backlog(&b, SCHEMAS / 2, SCHEMAS);
    let (ms, summary) = sweep(&[&a, &b]);
    rows.push((
        "pgswarm sweep, 2 servers (28 + 28)".into(),
        format!("{:.1} s — {summary}", ms / 1000.0),
    ));
    let pa = backlog(&a, 0, SCHEMAS / 2);
    let pb = backlog(&b, SCHEMAS / 2, SCHEMAS);
    rows.push((
        "psql loop, 2 servers in turn (28 + 28)".into(),
        format!("{:.1} s", psql_loop(&[(&a, pa), (&b, pb)]) / 1000.0),
    ));

    println!(
        "| seed backlog: {SCHEMAS} schemas x {TABLES} tables, default lock settings | result |"
    );
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    a.stop();
    b.stop();
}
