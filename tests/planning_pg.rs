//! A poll plans nothing again: every statement of the monitor's sessions is a named prepared
//! statement planned once (generic plan), checked on the server in `pg_prepared_statements`; and no
//! statement of any pgswarm session is ever JIT-compiled, checked in `pg_stat_statements` on a
//! server that would JIT everything (`jit_above_cost = 0`).

mod common;

use common::*;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, open_all, ProbeOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_reuse_prepared_statements_and_never_plan_them_again() {
    let srv = Server::start(&["platform"]);
    srv.psql(
        "platform",
        "CREATE TABLE accounts (n int); CREATE SCHEMA test_p4100t1763900000r0a0a0a0a_gw0; \
         CREATE TABLE test_p4100t1763900000r0a0a0a0a_gw0.t (id int)",
    );
    let c = srv.conninfo("platform");
    let settings = settings(&[entry("platform", &c)]);
    // A lock wait, so the awaited-lock and relation statements run too.
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts")
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let w_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, w_pid).await;

    let sessions = open_all(&settings.databases, &settings.session, &ProcessEnv).await;
    let opts = ProbeOptions::default();
    let polls = 12;
    for _ in 0..polls {
        let obs = observe(
            &settings.databases,
            &sessions,
            &opts,
            Duration::from_secs(5),
        )
        .await;
        assert!(obs
            .sessions
            .iter()
            .any(|s| s.pid == w_pid && s.awaited.is_some()));
        assert_eq!(obs.schemas.len(), 1);
    }
    let session = sessions[0].as_ref().unwrap();
    let rows = session
        .client
        .query(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements",
            &[],
        )
        .await
        .unwrap();
    let stmts: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let has = |needle: &str| stmts.iter().any(|(s, _, _)| s.contains(needle));
    assert!(
        has("pg_stat_get_activity") || has("pg_stat_activity"),
        "{stmts:#?}"
    );
    assert!(
        has("FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_class"),
        "the schema listing: {stmts:#?}"
    );
    assert!(has("pg_locks"), "the awaited locks: {stmts:#?}");
    for (s, generic, custom) in &stmts {
        assert_eq!(*custom, 0, "planned per call: {s}");
        assert!(*generic <= polls as i64 + 1, "{s}: {generic}");
    }
    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

/// Issue 23: a generic plan on a database with catalog churn can be estimated above
/// `jit_above_cost`; JIT then costs seconds per execution of a millisecond query. Every pgswarm
/// session runs with `jit = off`: on a server that would compile everything, no statement of a
/// snapshot, a recording (incremental polls), a summary or a sweep compiles a function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pgswarm_statement_is_ever_jit_compiled() {
    use pgswarm::pg::cluster::ClusterOptions;
    let srv = start_cluster(
        &["platform"],
        ClusterOptions {
            settings: [
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.track", "all"),
                ("jit", "on"),
                ("jit_above_cost", "0"),
                ("jit_inline_above_cost", "0"),
                ("jit_optimize_above_cost", "0"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        },
    );
    srv.psql("platform", "CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let c = srv.conninfo("platform");
    // The server really compiles when asked (else this test could prove nothing).
    let probe = connect_as(&c, "probe").await;
    probe
        .query_one(
            "SELECT count(*) FROM generate_series(1, 1000) g WHERE g % 7 = 0",
            &[],
        )
        .await
        .unwrap();
    let compiled: i64 = probe
        .query_one(
            "SELECT coalesce(sum(jit_functions), 0)::int8 FROM pg_stat_statements \
              WHERE query LIKE '%generate_series%' AND query NOT LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        compiled > 0,
        "the server did not JIT a plain query: is llvmjit installed?"
    );

    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    srv.psql(
        "platform",
        &format!(
            "CREATE TABLE accounts (n int); CREATE SCHEMA test_{}_gw0",
            common::sweep::stale_ns(1)
        ),
    )
    .unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts")
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let w_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&probe, w_pid).await;

    let db = format!("platform={c}");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(args)
            .args(["--db", &db])
            .env_remove("PGSWARM_DB")
            .env_remove("PGSWARM_CONFIG")
            .output()
            .expect("pgswarm runs");
        assert_ne!(out.status.code(), Some(101));
    };
    run(&["snapshot", "--json"]);
    run(&["snapshot", "--summary", "--json"]);
    let rec = tempfile::NamedTempFile::new().unwrap();
    run(&[
        "record",
        "--out",
        rec.path().to_str().unwrap(),
        "--duration",
        "2s",
        "--interval",
        "0.25s",
        "--no-flight-log",
    ]);
    run(&["sweep", "--yes", "--json"]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();

    // Every statement pgswarm sent (its sessions are the only ones that query pg_catalog this way).
    let rows = probe
        .query(
            "SELECT query, calls, jit_functions FROM pg_stat_statements \
              WHERE query LIKE '%pg_catalog.%' AND query NOT LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .unwrap();
    let stmts: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        stmts.len() >= 5,
        "pgswarm's statements were recorded: {stmts:#?}"
    );
    for (q, calls, jit) in &stmts {
        assert_eq!(
            *jit, 0,
            "JIT-compiled {jit} functions over {calls} calls: {q}"
        );
    }
}
