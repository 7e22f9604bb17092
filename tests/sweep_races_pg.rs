//! The sweep under races, against real servers (issue 10): a run that comes alive while its schema's
//! drop waits for a lock, a server that freezes mid-statement, a connection killed mid-sweep. In every
//! case each planned schema is accounted for exactly once (checked by the helpers on every report).

mod common;

use common::sweep::*;
use common::*;
use pgswarm::domain::sweep::{FailReason, KeepReason, SweepRules, SweepStatus};
use pgswarm::pg::cluster::ClusterOptions;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::sweep::DropSettings;
use pgswarm::pg::sweep::{discover_and_plan, DependencyCheck};
use std::time::{Duration, Instant};

/// The stale schema lives on `tenant` (second server); a psql-like session holds a lock on one of its
/// tables, so the sweep's DROP waits. While it waits, a session of the namespace connects to the
/// server named by `appears_on`. Then the holder commits and the DROP completes: the check after the
/// drop must see the new session and roll back.
async fn comes_alive_while_the_drop_waits(appears_on_other_server: bool) {
    let s1 = start_cluster(&["platform"], ClusterOptions::default());
    let s2 = start_cluster(&["tenant"], ClusterOptions::default());
    let ns = stale_ns(70);
    let schema = format!("test_{ns}_gw0");
    create_schema(&s2, "tenant", &schema, 2);
    let holder = connect_as(&s2.conninfo("tenant"), "psql").await;
    holder
        .batch_execute(&format!("BEGIN; SELECT * FROM \"{schema}\".t0"))
        .await
        .unwrap();
    let settings = settings(&[
        entry("platform", &s1.conninfo("platform")),
        entry("tenant", &s2.conninfo("tenant")),
    ]);
    let rules = SweepRules::default();
    let plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    assert_eq!(plan.drop_count(), 1, "{plan:#?}");
    let drop = DropSettings {
        lock_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let task = {
        let (plan, settings, rules, drop) = (plan.clone(), settings.clone(), rules.clone(), drop);
        tokio::spawn(async move { run_planned(&plan, &settings, &rules, &drop).await })
    };
    let admin = connect_as(&s2.conninfo("tenant"), "test_admin").await;
    wait_for_lock_waiter(&admin, "pgswarm").await;
    let late = if appears_on_other_server {
        &s1.conninfo("platform")
    } else {
        &s2.conninfo("tenant")
    };
    let _back = connect_as(late, &format!("pytest_gw3_{ns}")).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let r = task.await.unwrap();
    assert_eq!(dropped(&r, "tenant"), Vec::<String>::new(), "{r:#?}");
    assert_eq!(kept(&r, "tenant", &schema), Some(KeepReason::BecameLive));
    let detail = &r.databases[1].kept[0].detail;
    assert!(
        detail
            .iter()
            .any(|d| d.contains(&format!("pytest_gw3_{ns}"))),
        "{detail:?}"
    );
    assert!(schema_exists(&s2, "tenant", &schema), "rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_connects_to_the_same_server_while_the_drop_waits_keeps_its_schema() {
    comes_alive_while_the_drop_waits(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_connects_to_another_server_while_the_drop_waits_keeps_its_schema() {
    comes_alive_while_the_drop_waits(true).await;
}

/// Three stale schemas reached through a proxy that freezes (both directions, every connection) once
/// it has forwarded each of `triggers`. Returns the report, how long the sweep took, and the schemas.
async fn sweep_through_a_freezing_proxy(
    triggers: &[&str],
) -> (pgswarm::domain::sweep::SweepReport, Duration, Vec<String>) {
    let srv = start_cluster(
        &["tenant"],
        ClusterOptions {
            tcp: true,
            ..Default::default()
        },
    );
    let names: Vec<String> = (0..3)
        .map(|i| format!("test_{}_gw0", stale_ns(80 + i)))
        .collect();
    for n in &names {
        create_schema(&srv, "tenant", n, 2);
    }
    let proxy = FreezingProxy::start(srv.port(), triggers);
    let mut settings = settings(&[entry(
        "tenant",
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=tenant sslmode=disable",
            proxy.port
        ),
    )]);
    settings.session.statement_timeout = Duration::from_secs(2);
    let drop = DropSettings {
        lock_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(2),
        client_margin: Duration::from_secs(1),
        ..Default::default()
    };
    let rules = SweepRules::default();
    let plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    assert_eq!(plan.drop_count(), 3, "{plan:#?}");
    let started = Instant::now();
    let r = run_planned(&plan, &settings, &rules, &drop).await;
    let took = started.elapsed();
    assert!(proxy.is_frozen(), "the proxy never saw {triggers:?}");
    // Whatever the sweep believes, the server never got a COMMIT: ask it directly.
    drop_proxy_then_wait_for_rollback(proxy, &srv).await;
    for n in &names {
        assert!(schema_exists(&srv, "tenant", n), "{n} was dropped");
    }
    (r, took, names)
}

async fn drop_proxy_then_wait_for_rollback(
    proxy: FreezingProxy,
    srv: &pgswarm::pg::cluster::TempCluster,
) {
    drop(proxy);
    // The server notices the closed sockets and ends those sessions, rolling back.
    let admin = connect_as(&srv.conninfo("tenant"), "test_admin").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgswarm'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "pgswarm sessions linger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_freezes_mid_drop_costs_one_bound_and_keeps_the_rest() {
    let (r, took, names) = sweep_through_a_freezing_proxy(&["DROP SCHEMA"]).await;
    let db = &r.databases[0];
    assert!(db.dropped.is_empty(), "{r:#?}");
    assert_eq!(db.failed.len(), 1, "{r:#?}");
    assert_eq!(db.failed[0].reason, FailReason::ClientTimeout);
    let rest: Vec<&str> = db
        .kept
        .iter()
        .filter(|k| k.reason == KeepReason::ServerUnresponsive)
        .map(|k| k.schema.as_str())
        .collect();
    assert_eq!(rest.len(), 2, "{r:#?}");
    assert!(names.iter().any(|n| *n == db.failed[0].schema));
    assert_eq!(r.status(), SweepStatus::SomeFailed);
    // One bound (2 s statement_timeout + 1 s margin) plus the work before it, not three.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_an_answer_is_reported_as_unknown() {
    let (r, _, _) = sweep_through_a_freezing_proxy(&["DROP SCHEMA", "COMMIT"]).await;
    let db = &r.databases[0];
    assert!(db.dropped.is_empty(), "{r:#?}");
    assert_eq!(db.failed[0].reason, FailReason::CommitUnknown, "{r:#?}");
    // The next schema's first half may have been under way on the other session when the server
    // froze: it failed (client_timeout) or its liveness check got no answer (kept,
    // active_detection_incomplete). Everything else is kept as server_unresponsive.
    for f in &db.failed[1..] {
        assert_eq!(f.reason, FailReason::ClientTimeout, "{r:#?}");
    }
    let kept_ok = db.kept.iter().all(|k| {
        matches!(
            k.reason,
            KeepReason::ServerUnresponsive | KeepReason::ActiveDetectionIncomplete
        )
    });
    assert!(kept_ok, "{r:#?}");
    assert_eq!(db.failed.len() + db.kept.len(), 3, "{r:#?}");
    assert_eq!(
        r.status(),
        SweepStatus::SomeFailed,
        "a COMMIT may have landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_sweep_accounts_for_every_schema() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let names: Vec<String> = (0..4)
        .map(|i| format!("test_{}_gw0", stale_ns(90 + i)))
        .collect();
    for n in &names {
        create_schema(&srv, "tenant", n, 2);
    }
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let rules = SweepRules::default();
    let plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    let order: Vec<String> = plan.databases[0]
        .drop
        .iter()
        .map(|d| d.schema.clone())
        .collect();
    assert_eq!(order.len(), 4, "{plan:#?}");
    // The second schema in the plan's order is locked: the sweep waits there, and is killed there.
    let holder = connect_as(&srv.conninfo("tenant"), "psql").await;
    holder
        .batch_execute(&format!("BEGIN; SELECT * FROM \"{}\".t0", order[1]))
        .await
        .unwrap();
    let drop = DropSettings {
        lock_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let task = {
        let (plan, settings, rules, drop) = (plan.clone(), settings.clone(), rules.clone(), drop);
        tokio::spawn(async move { run_planned(&plan, &settings, &rules, &drop).await })
    };
    let admin = connect_as(&srv.conninfo("tenant"), "test_admin").await;
    let pid = wait_for_lock_waiter(&admin, "pgswarm").await;
    admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let r = task.await.unwrap();
    let db = &r.databases[0];
    assert_eq!(db.dropped, vec![order[0].clone()], "{r:#?}");
    assert_eq!(db.failed.len(), 1);
    assert_eq!(db.failed[0].schema, order[1]);
    assert_eq!(db.failed[0].reason, FailReason::ConnectionLost);
    assert_eq!(db.failed[0].sqlstate.as_deref(), Some("57P01"));
    for s in &order[2..] {
        assert_eq!(
            kept(&r, "tenant", s),
            Some(KeepReason::NotAttempted),
            "{r:#?}"
        );
    }
    assert_eq!(r.status(), SweepStatus::SomeFailed);
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(!schema_exists(&srv, "tenant", &order[0]));
    for s in &order[1..] {
        assert!(schema_exists(&srv, "tenant", s));
    }
}

/// Found by a black-box attack: while the sweep waits for a lock on a stale schema's table, another
/// session creates a `public` column typed with the schema's enum. The dependency check must see it
/// (the schema's relations are locked before the check, so the check runs after the wait), the
/// schema is kept as `external_dependents`, and the column keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_dependent_created_while_the_drop_waits_keeps_the_schema() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let schema = format!("test_{}_gw0", stale_ns(95));
    srv.psql(
        "tenant",
        &format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int); \
             CREATE TYPE {schema}.mood AS ENUM ('ok', 'sad')"
        ),
    )
    .unwrap();
    let holder = connect_as(&srv.conninfo("tenant"), "reporting_job").await;
    holder
        .batch_execute(&format!("BEGIN; SELECT count(*) FROM {schema}.t"))
        .await
        .unwrap();
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let rules = SweepRules::default();
    let plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    assert_eq!(plan.drop_count(), 1, "{plan:#?}");
    let drop = DropSettings {
        lock_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let task = {
        let (plan, settings, rules, drop) = (plan.clone(), settings.clone(), rules.clone(), drop);
        tokio::spawn(async move { run_planned(&plan, &settings, &rules, &drop).await })
    };
    let admin = connect_as(&srv.conninfo("tenant"), "test_admin").await;
    wait_for_lock_waiter(&admin, "pgswarm").await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE public.orders (id int, m {schema}.mood); \
             INSERT INTO public.orders VALUES (1, 'ok')"
        ))
        .await
        .unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    let r = task.await.unwrap();
    assert_eq!(
        kept(&r, "tenant", &schema),
        Some(KeepReason::ExternalDependents),
        "{r:#?}"
    );
    let detail = &r.databases[0].kept[0].detail;
    assert!(
        detail.iter().any(|d| d.contains("public.orders.m")),
        "{detail:?}"
    );
    assert!(schema_exists(&srv, "tenant", &schema));
    assert_eq!(
        srv.psql("tenant", "SELECT m::text FROM public.orders")
            .unwrap()
            .trim(),
        "ok"
    );
}
