//! A poll plans nothing again: every statement of the monitor's sessions is a named prepared
//! statement planned once (generic plan), checked on the server in `pg_prepared_statements`.

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
        has("FROM pg_namespace n LEFT JOIN pg_class"),
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
