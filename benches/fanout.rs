//! Fan-out: one `pgswarm snapshot` over 4 databases on 2 servers, end to end (process start to
//! exit), against running the seed write-up's diagnose query with psql on each database in turn; then
//! both again with a fifth database on a blackholed host (accepts TCP, never answers) at a 2 s connect
//! timeout. Median (min–max) wall time over RUNS rounds; each round runs every contender once, so load
//! drift on a shared machine hits them alike.
//!
//! Run: `cargo bench --bench fanout`

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 10;
const SEED: &str =
    "SELECT blocked.pid, blocked.application_name, blocked.wait_event, blocked.query, \
 blocker.pid, blocker.application_name, blocker.query FROM pg_stat_activity blocked \
 JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS blockers(pid) ON true \
 JOIN pg_stat_activity blocker ON blocker.pid = blockers.pid";

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn timed(f: &dyn Fn()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let s1 = TempCluster::start(&ClusterOptions {
        databases: vec!["platform_test".into(), "tenant_a_test".into()],
        ..Default::default()
    })
    .expect("server binaries");
    let s2 = TempCluster::start(&ClusterOptions {
        databases: vec!["tenant_b_test".into(), "tenant_c_test".into()],
        ..Default::default()
    })
    .expect("server binaries");
    let dbs = [
        (&s1, "platform_test"),
        (&s1, "tenant_a_test"),
        (&s2, "tenant_b_test"),
        (&s2, "tenant_c_test"),
    ];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let blackhole =
        format!("host=127.0.0.1 port={port} user=x dbname=x sslmode=disable connect_timeout=2");

    let pgswarm = |extra: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
        c.args(["snapshot", "--json", "--connect-timeout", "2s"]);
        for (srv, db) in dbs {
            c.arg("--db").arg(format!("{db}={}", srv.conninfo(db)));
        }
        if let Some(b) = extra {
            c.arg("--db").arg(format!("blackhole={b}"));
        }
        let out = c.output().unwrap();
        assert!(out.status.code() == Some(if extra.is_some() { 3 } else { 0 }));
        assert!(!out.stdout.is_empty());
    };
    let psql_loop = |extra: Option<&str>| {
        let mut targets: Vec<String> = dbs.iter().map(|(s, d)| s.conninfo(d)).collect();
        targets.extend(extra.map(str::to_string));
        for t in targets {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-At", "-c", SEED, &t])
                .env("PGCONNECT_TIMEOUT", "2")
                .output()
                .unwrap();
        }
    };
    let contenders: [(&str, &dyn Fn()); 4] = [
        ("pgswarm snapshot, 4 dbs on 2 servers", &|| pgswarm(None)),
        ("psql seed query on each db in turn", &|| psql_loop(None)),
        ("pgswarm snapshot, + 1 blackholed host", &|| {
            pgswarm(Some(&blackhole))
        }),
        ("psql seed query in turn, + 1 blackholed host", &|| {
            psql_loop(Some(&blackhole))
        }),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..RUNS {
        for (i, (_, f)) in contenders.iter().enumerate() {
            times[i].push(timed(*f));
        }
    }
    let rows: Vec<(&str, (f64, f64, f64))> = contenders
        .iter()
        .zip(times)
        .map(|((label, _), t)| (*label, stats(t)))
        .collect();
    println!("| fan-out, end to end (connect timeout 2 s) | wall time, median (min–max) |");
    println!("|---|---|");
    for (label, (m, lo, hi)) in rows {
        println!("| {label} | {m:.0} ms ({lo:.0}–{hi:.0}) |");
    }
    s1.stop();
    s2.stop();
}
