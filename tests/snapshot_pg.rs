//! `pgswarm snapshot` against real PostgreSQL servers with real contention.

mod common;

use common::*;
use pgswarm::cmd::snapshot::{snapshot_exit, take_snapshot};
use pgswarm::domain::snapshot::{LabelKind, SchemaStatus, Snapshot, WaitSource};
use pgswarm::pg::cluster::ClusterOptions;
use pgswarm::pg::conninfo::ProcessEnv;
use std::time::{Duration, Instant};

async fn snap(dbs: &[String]) -> Snapshot {
    take_snapshot(&settings(dbs), &ProcessEnv).await
}

fn session(s: &Snapshot, pid: i32) -> &pgswarm::domain::snapshot::SessionReport {
    s.sessions
        .iter()
        .find(|x| x.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in snapshot"))
}

#[tokio::test]
async fn cross_invocation_holder_and_waiter() {
    let srv = Server::start(&["platform", "tenant_a"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let platform = srv.conninfo("platform");
    let admin = connect_as(&platform, "admin").await;

    let holder = connect_as(&platform, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let waiter = connect_as(&platform, &format!("pytest_gw1_{NS_B}_setup")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT count(*) FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let s = snap(&[
        entry("platform", &platform),
        entry("tenant_a", &srv.conninfo("tenant_a")),
    ])
    .await;

    assert!(s.active_detection_complete);
    assert_eq!(s.blocking.len(), 1, "{:#?}", s.blocking);
    let e = &s.blocking[0];
    assert_eq!(
        (e.blocker_pid, e.blocked_pid, e.root_pid),
        (holder_pid, waiter_pid, holder_pid)
    );
    assert!(e.cross_invocation);
    assert_eq!(e.blocker_namespace.as_deref(), Some(NS_A));
    assert_eq!(e.blocked_namespace.as_deref(), Some(NS_B));
    assert_eq!(e.lock_type.as_deref(), Some("relation"));
    assert_eq!(e.lock_mode.as_deref(), Some("AccessShareLock"));
    assert_eq!(e.relation.as_deref(), Some("public.accounts"));
    assert_eq!(e.database, "platform");
    assert_eq!(
        e.wait_source,
        Some(WaitSource::Waitstart),
        "PG 14+ has waitstart"
    );
    assert!(e.waiting_s.is_some_and(|w| (0.0..60.0).contains(&w)));
    let w = session(&s, waiter_pid);
    assert_eq!(w.suffix.as_deref(), Some("setup"));
    assert_eq!(w.blocked_by, vec![holder_pid]);
    let tree = &s.lock_trees[0];
    assert!(tree.cross_invocation);
    assert_eq!(tree.root_namespace.as_deref(), Some(NS_A));
    let b = s.invocations.iter().find(|i| i.namespace == NS_B).unwrap();
    assert_eq!((b.blocked, b.pid), (1, Some(4200)));
    // pgswarm's own sessions never show up.
    assert!(s.sessions.iter().all(|x| x.application_name != "pgswarm"));
    assert_eq!(snapshot_exit(&s, true).code(), 1);
    assert_eq!(snapshot_exit(&s, false).code(), 0);

    holder.batch_execute("ROLLBACK").await.unwrap();
    let (_, r) = task.await.unwrap();
    r.expect("waiter proceeds once the holder rolls back");
}

#[tokio::test]
async fn chain_of_three_has_one_root_idle_in_transaction() {
    let srv = Server::start(&["platform"]);
    srv.psql(
        "platform",
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)",
    );
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;

    // A holds t1 and goes idle in transaction; B holds t2 and waits for t1; C waits for t2.
    let a = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    a.batch_execute("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let b = connect_as(&c, &format!("pytest_gw1_{NS_A}")).await;
    b.batch_execute("BEGIN; LOCK TABLE t2 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (a_pid, b_pid) = (backend_pid(&a).await, backend_pid(&b).await);
    let tb = spawn_blocking_query(b, "LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE");
    wait_until_lock_wait(&admin, b_pid).await;
    let cc = connect_as(&c, &format!("pytest_gw0_{NS_B}")).await;
    let c_pid = backend_pid(&cc).await;
    let tc = spawn_blocking_query(cc, "SELECT * FROM t2");
    wait_until_lock_wait(&admin, c_pid).await;

    let s = snap(&[entry("platform", &c)]).await;
    assert_eq!(s.lock_trees.len(), 1, "{:#?}", s.lock_trees);
    let tree = &s.lock_trees[0];
    assert_eq!((tree.root_pid, tree.victims, tree.depth), (a_pid, 2, 2));
    assert!(tree.root_idle_in_transaction);
    assert_eq!(tree.root_state.as_deref(), Some("idle in transaction"));
    let rows: Vec<(i32, usize)> = tree.rows.iter().map(|r| (r.pid, r.depth)).collect();
    assert_eq!(rows, vec![(a_pid, 0), (b_pid, 1), (c_pid, 2)]);
    let bc = s.blocking.iter().find(|e| e.blocked_pid == c_pid).unwrap();
    assert_eq!((bc.blocker_pid, bc.root_pid), (b_pid, a_pid));
    assert_eq!(bc.relation.as_deref(), Some("public.t2"));
    assert!(bc.cross_invocation, "B (NS_A) blocks C (NS_B)");
    let ab = s.blocking.iter().find(|e| e.blocked_pid == b_pid).unwrap();
    assert!(!ab.cross_invocation, "A and B are the same invocation");
    assert_eq!(ab.lock_mode.as_deref(), Some("AccessExclusiveLock"));

    a.batch_execute("ROLLBACK").await.unwrap();
    let (b, r) = tb.await.unwrap();
    r.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();
    tc.await.unwrap().1.unwrap();
}

#[tokio::test]
async fn unlabeled_blocker_is_shown_and_soft_block_is_queued() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE shared (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;

    // An unlabeled psql reads in an open transaction (AccessShareLock)...
    let reader = connect_as(&c, "psql").await;
    reader
        .batch_execute("BEGIN; SELECT * FROM shared")
        .await
        .unwrap();
    let reader_pid = backend_pid(&reader).await;
    // ...a test's DDL queues for AccessExclusiveLock...
    let ddl = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    let ddl_pid = backend_pid(&ddl).await;
    let t_ddl = spawn_blocking_query(ddl, "ALTER TABLE shared ADD COLUMN x int");
    wait_until_lock_wait(&admin, ddl_pid).await;
    // ...and another invocation's plain read now queues behind the DDL (a soft block).
    let late = connect_as(&c, &format!("pytest_gw3_{NS_B}")).await;
    let late_pid = backend_pid(&late).await;
    let t_late = spawn_blocking_query(late, "SELECT * FROM shared");
    wait_until_lock_wait(&admin, late_pid).await;

    let s = snap(&[entry("platform", &c)]).await;
    let root = &s.lock_trees[0];
    assert_eq!(root.root_pid, reader_pid);
    assert_eq!(root.root_application_name.as_deref(), Some("psql"));
    assert!(root.root_idle_in_transaction);
    assert_eq!(session(&s, reader_pid).label, LabelKind::Unlabeled);
    let hard = s
        .blocking
        .iter()
        .find(|e| e.blocked_pid == ddl_pid)
        .unwrap();
    assert_eq!(hard.blocker_pid, reader_pid);
    assert!(
        !hard.cross_invocation,
        "an unlabeled blocker is no invocation"
    );
    assert!(!hard.queued_behind);
    let soft = s
        .blocking
        .iter()
        .find(|e| e.blocked_pid == late_pid && e.blocker_pid == ddl_pid)
        .expect("pg_blocking_pids reports the queued DDL as a blocker");
    assert!(soft.queued_behind);
    assert!(soft.cross_invocation);
    assert_eq!(soft.root_pid, reader_pid);

    reader.batch_execute("ROLLBACK").await.unwrap();
    t_ddl.await.unwrap().1.unwrap();
    t_late.await.unwrap().1.unwrap();
}

#[tokio::test]
async fn relation_names_resolve_in_every_configured_database() {
    // The server is probed through `platform`, but the lock is on a table in `tenant_a`.
    let srv = Server::start(&["platform", "tenant_a"]);
    srv.psql(
        "tenant_a",
        "CREATE SCHEMA app; CREATE TABLE app.orders (id int)",
    );
    let tenant = srv.conninfo("tenant_a");
    let admin = connect_as(&tenant, "admin").await;
    let holder = connect_as(&tenant, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE app.orders IN SHARE MODE")
        .await
        .unwrap();
    let waiter = connect_as(&tenant, &format!("pytest_gw0_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "INSERT INTO app.orders VALUES (1)");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let s = snap(&[
        entry("platform", &srv.conninfo("platform")),
        entry("tenant_a", &tenant),
    ])
    .await;
    let e = &s.blocking[0];
    assert_eq!(e.relation.as_deref(), Some("app.orders"));
    assert_eq!(e.lock_mode.as_deref(), Some("RowExclusiveLock"));
    assert_eq!(e.database, "tenant_a");
    // The same backends are seen through both databases but counted once.
    let admin_sessions = s
        .sessions
        .iter()
        .filter(|x| x.application_name == "admin")
        .count();
    assert_eq!(admin_sessions, 1);
    let dbs: Vec<(&str, usize)> = s
        .databases
        .iter()
        .map(|d| (d.name.as_str(), d.sessions))
        .collect();
    assert_eq!(dbs, vec![("platform", 0), ("tenant_a", 3)]);

    // Only configured databases resolve names: without tenant_a the relation is `datname:oid`.
    let s = snap(&[entry("platform", &srv.conninfo("platform"))]).await;
    let rel = s.blocking[0].relation.clone().unwrap();
    assert!(
        rel.starts_with(&format!("{}:", srv.dbname("tenant_a"))),
        "{rel}"
    );
    assert_eq!(s.blocking[0].database, srv.dbname("tenant_a"));

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

#[tokio::test]
async fn databases_on_two_servers() {
    let s1 = start_cluster(&["platform"], ClusterOptions::default());
    let s2 = start_cluster(&["tenant_a", "tenant_b"], ClusterOptions::default());
    s2.psql("tenant_b", "CREATE TABLE items (id int)").unwrap();
    for (srv, db) in [(&s1, "platform"), (&s2, "tenant_a"), (&s2, "tenant_b")] {
        srv.psql(
            db,
            &format!("CREATE SCHEMA test_{NS_A}_gw0; CREATE TABLE test_{NS_A}_gw0.t (id int);"),
        )
        .unwrap();
        srv.psql(db, &format!("CREATE SCHEMA test_{NS_C}_gw1"))
            .unwrap();
    }
    // NS_A is connected only to `platform` on the first server; NS_C nowhere.
    let _a = connect_as(&s1.conninfo("platform"), &format!("pytest_gw0_{NS_A}")).await;
    // A collision on the second server.
    let admin = connect_as(&s2.conninfo("tenant_b"), "admin").await;
    let holder = connect_as(&s2.conninfo("tenant_b"), &format!("pytest_master_{NS_B}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE items")
        .await
        .unwrap();
    let waiter = connect_as(&s2.conninfo("tenant_b"), &format!("pytest_gw2_{NS_A}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM items");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let s = snap(&[
        entry("platform", &s1.conninfo("platform")),
        entry("tenant_a", &s2.conninfo("tenant_a")),
        entry("tenant_b", &s2.conninfo("tenant_b")),
    ])
    .await;
    let servers: std::collections::BTreeSet<_> = s
        .databases
        .iter()
        .filter_map(|d| d.server.clone())
        .collect();
    assert_eq!(servers.len(), 2);
    let e = &s.blocking[0];
    assert_eq!(e.database, "tenant_b");
    assert_eq!(Some(&e.server), s.databases[1].server.as_ref());
    assert!(e.cross_invocation);
    let a = s.invocations.iter().find(|i| i.namespace == NS_A).unwrap();
    assert_eq!(a.databases, vec!["platform", "tenant_a", "tenant_b"]);
    assert_eq!((a.sessions, a.schemas, a.blocked), (2, 3, 1));
    for sc in &s.schemas {
        let expected = if sc.namespace.as_deref() == Some(NS_A) {
            SchemaStatus::Live
        } else {
            SchemaStatus::Orphaned
        };
        assert_eq!(sc.status, expected, "{sc:?}");
    }
    let with_table = s
        .schemas
        .iter()
        .find(|x| x.database == "tenant_a" && x.namespace.as_deref() == Some(NS_A))
        .unwrap();
    assert_eq!(with_table.tables, 1);
    assert!(!with_table.bytes_exact, "estimates unless --exact-sizes");
    let dbs = [
        entry("platform", &s1.conninfo("platform")),
        entry("tenant_a", &s2.conninfo("tenant_a")),
        entry("tenant_b", &s2.conninfo("tenant_b")),
    ];
    let exact =
        pgswarm::cmd::snapshot::take_snapshot_with(&settings(&dbs), &ProcessEnv, true).await;
    let exact_schema = exact
        .schemas
        .iter()
        .find(|x| x.database == "tenant_a" && x.namespace.as_deref() == Some(NS_A))
        .unwrap();
    assert!(exact_schema.bytes_exact);

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

#[tokio::test]
async fn unreachable_database_is_reported_and_the_rest_still_polled() {
    let srv = Server::start(&["platform"]);
    let _a = connect_as(&srv.conninfo("platform"), &format!("pytest_gw0_{NS_A}")).await;
    srv.psql("platform", &format!("CREATE SCHEMA test_{NS_B}_gw0"));
    let nowhere = tempfile::tempdir().unwrap();
    let s = snap(&[
        entry("platform", &srv.conninfo("platform")),
        entry(
            "gone",
            &format!(
                "host={} port=5432 user=x dbname=gone",
                nowhere.path().display()
            ),
        ),
    ])
    .await;
    assert!(s.databases[0].reachable);
    assert!(!s.databases[1].reachable);
    let err = s.databases[1].error.as_deref().unwrap();
    assert!(
        err.contains("No such file") || err.contains("refused"),
        "{err}"
    );
    assert!(s
        .sessions
        .iter()
        .any(|x| x.namespace.as_deref() == Some(NS_A)));
    assert!(!s.active_detection_complete);
    let orphan = s
        .schemas
        .iter()
        .find(|x| x.namespace.as_deref() == Some(NS_B));
    assert_eq!(orphan.unwrap().status, SchemaStatus::Unknown, "fail closed");
    assert_eq!(snapshot_exit(&s, false).code(), 3);
}

#[tokio::test]
async fn a_host_that_accepts_and_never_answers_costs_only_the_connect_timeout() {
    let srv = Server::start(&["platform"]);
    let port = blackhole_port();
    let mut settings = settings(&[
        entry("platform", &srv.conninfo("platform")),
        entry(
            "blackhole",
            &format!("host=127.0.0.1 port={port} user=x dbname=x sslmode=disable"),
        ),
    ]);
    settings.session.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let s = take_snapshot(&settings, &ProcessEnv).await;
    let elapsed = started.elapsed();
    assert!(s.databases[0].reachable);
    assert!(!s.databases[1].reachable);
    assert!(
        s.databases[1]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        s.databases[1].error
    );
    // Bounded by the connect timeout (2 s) plus a generous margin for a loaded machine.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
}

#[tokio::test]
async fn truncated_application_names() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    // The server keeps 63 bytes: the suffix is cut.
    let long = format!(
        "pytest_gw0_{NS_A}_{}",
        "integration_suite_suffix_".repeat(3)
    );
    let cut_suffix = connect_as(&c, &long).await;
    let cut_suffix_pid = backend_pid(&cut_suffix).await;
    // With a long app prefix the namespace itself is cut: it must not be attributed.
    let prefix = "ci_runner_for_the_integration_test_suite_x";
    let cut_ns = connect_as(&c, &format!("{prefix}_gw11_abcdefghijklmnopqrstuvwxyz")).await;
    let cut_ns_pid = backend_pid(&cut_ns).await;

    let s = snap(&[entry("platform", &c)]).await;
    let x = session(&s, cut_suffix_pid);
    assert_eq!(x.application_name.len(), 63, "the server cut it");
    assert_eq!(x.namespace.as_deref(), Some(NS_A));
    assert!(x.suffix_maybe_truncated);

    let mut settings = settings(&[entry("platform", &c)]);
    settings.convention.app_prefix = prefix.into();
    let s = take_snapshot(&settings, &ProcessEnv).await;
    let y = session(&s, cut_ns_pid);
    assert_eq!(y.label, LabelKind::Unattributed);
    assert_eq!(y.namespace, None);
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("cannot be attributed")));
}

#[tokio::test]
async fn permission_limited_role_sees_insufficient_privilege() {
    let mut srv = Server::start(&["platform"]);
    let role = srv.create_role("watcher");
    let c = srv.conninfo("platform");
    let other = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    other.batch_execute("SELECT 1").await.unwrap();
    let watcher = format!("{} user={role}", c.replace("user=postgres", ""));
    let s = snap(&[entry("platform", &watcher)]).await;
    let x = s
        .sessions
        .iter()
        .find(|x| x.namespace.as_deref() == Some(NS_A))
        .expect("the session is listed even without privileges");
    assert!(x.insufficient_privilege);
    assert!(s.warnings.iter().any(|w| w.contains("pg_read_all_stats")));

    srv.psql(
        "platform",
        &format!("GRANT pg_read_all_stats TO \"{role}\""),
    );
    let s = snap(&[entry("platform", &watcher)]).await;
    assert!(s.sessions.iter().all(|x| !x.insufficient_privilege));
}

/// The dashboard polls incrementally over persistent sessions (idle, unchanged rows are not shipped
/// again; awaited locks are reused while nobody moves). After every kind of change its result must
/// equal a fresh full read.
#[tokio::test]
async fn incremental_polls_match_fresh_full_reads() {
    use pgswarm::pg::probe::{observe, observe_once, open_all, ProbeOptions};

    let srv = Server::start(&["app_test"]);
    srv.psql(
        "app_test",
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)",
    );
    let ci = srv.conninfo("app_test");
    let cfg = settings(&[entry("app_test", &ci)]);
    let opts = ProbeOptions::default();
    let admin = connect_as(&ci, "admin").await;
    let persistent = open_all(&cfg.databases, &cfg.session, &ProcessEnv).await;
    let poll = || observe(&cfg.databases, &persistent, &opts, Duration::from_secs(10));
    let counters = || persistent[0].as_ref().unwrap().counters();
    let rows = session_rows;
    let fresh = || observe_once(&cfg.databases, &cfg.session, &opts, &ProcessEnv);

    let a = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    let b = connect_as(&ci, &format!("pytest_gw1_{NS_A}")).await;
    let c = connect_as(&ci, &format!("pytest_gw2_{NS_A}")).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let first = poll().await;
    assert_eq!(rows(&first), rows(&fresh().await));
    assert_eq!(counters().full_reads, 1);

    // Changes of every kind between two polls.
    a.batch_execute(&format!(
        "SET application_name = 'pytest_gw5_{NS_B}'; SELECT 2"
    ))
    .await
    .unwrap();
    drop(b);
    let d = connect_as(&ci, &format!("pytest_gw3_{NS_C}")).await;
    c.batch_execute("SELECT 42").await.unwrap();
    let holder = connect_as(&ci, &format!("pytest_gw4_{NS_C}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiter = connect_as(&ci, &format!("pytest_gw6_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT count(*) FROM t1");
    wait_until_lock_wait(&admin, waiter_pid).await;
    // Let `b`'s exit reach the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh()
        .await
        .sessions
        .iter()
        .any(|s| s.application_name.starts_with("pytest_gw1_"))
    {
        assert!(Instant::now() < deadline, "closed session never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The idle sessions that did not change (`d` after connecting) may still be within the margin; wait
    // it out so the next read is a true delta that leaves them out.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    poll().await;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    // A row that changed is formed once more on the poll after (a backend can report the same
    // state twice); the poll after that is the steady state.
    poll().await;
    let lock_reads_before = counters().lock_reads;
    let incremental = poll().await;
    let full = fresh().await;
    assert_eq!(rows(&incremental), rows(&full));
    let total = rows(&full).len();
    assert!(
        counters().last_rows_sent < total,
        "idle unchanged sessions must not be shipped again ({} of {total} sent)",
        counters().last_rows_sent
    );
    assert_eq!(
        counters().lock_reads,
        lock_reads_before,
        "nobody moved: the awaited lock comes from the cache"
    );
    let w = rows(&incremental)
        .into_iter()
        .find(|r| r.0 == waiter_pid)
        .expect("waiter seen");
    assert_eq!(
        w.7,
        Some(("AccessShareLock".into(), Some("public.t1".into())))
    );

    // The waiter gets its lock, then waits for another one: the cache must not show the old one.
    holder
        .batch_execute("ROLLBACK; BEGIN; LOCK TABLE t2")
        .await
        .unwrap();
    let (waiter, r) = task.await.unwrap();
    r.unwrap();
    let task = spawn_blocking_query(waiter, "SELECT count(*) FROM t2");
    wait_until_lock_wait(&admin, waiter_pid).await;
    let moved = poll().await;
    assert_eq!(rows(&moved), rows(&fresh().await));
    let w = rows(&moved)
        .into_iter()
        .find(|r| r.0 == waiter_pid)
        .unwrap();
    assert_eq!(w.7.map(|l| l.1), Some(Some("public.t2".into())));

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
    drop((a, c, d, admin));
}

/// Issue 11, finding 1: a monitoring role with nothing but CONNECT still sees who blocks whom among
/// other roles' sessions (their wait details are hidden, `pg_locks` and `pg_blocking_pids` are not),
/// `--fail-on-blocked` fails, and the warning says what is hidden and which grant shows it.
#[tokio::test]
async fn a_role_with_only_connect_still_sees_every_lock_wait() {
    let mut srv = Server::start(&["platform"]);
    let role = srv.create_role("bare_watcher");
    let db = srv.dbname("platform");
    srv.psql(
        "platform",
        &format!(
            "REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC; \
             GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\"; \
             CREATE TABLE accounts (id int)"
        ),
    );
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT count(*) FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let watcher = format!("{} user={role}", c.replace("user=postgres", ""));
    let s = snap(&[entry("platform", &watcher)]).await;
    assert!(s.active_detection_complete, "{:#?}", s.databases);
    let w = session(&s, waiter_pid);
    assert!(
        w.insufficient_privilege,
        "the watcher really is unprivileged"
    );
    assert_eq!(w.wait_event_type, None, "wait details are hidden from it");
    assert_eq!(w.blocked_by, vec![holder_pid], "{:#?}", s.blocking);
    assert_eq!(s.blocked_sessions(), 1);
    let e = &s.blocking[0];
    assert_eq!((e.blocker_pid, e.blocked_pid), (holder_pid, waiter_pid));
    assert!(e.cross_invocation);
    assert_eq!(e.relation.as_deref(), Some("public.accounts"));
    assert_eq!(s.lock_trees.len(), 1);
    let warning = s
        .warnings
        .iter()
        .find(|w| w.contains("pg_read_all_stats"))
        .expect("a privilege warning");
    assert!(warning.contains("GRANT pg_read_all_stats"), "{warning}");
    assert!(
        warning.contains("Lock waits among them are still found"),
        "{warning}"
    );
    // The CLI fails on the blocked session, as it would with a privileged role.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["snapshot", "--fail-on-blocked", "--db"])
        .arg(entry("platform", &watcher))
        .output()
        .unwrap();
    assert_exit(&out, 1);

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

/// Issue 11, finding 7: R blocks A and B (both wait for t1), and C waits behind both A and B (they
/// hold t2 in share mode): C sits twice in R's tree. It is drawn in full once and referred to
/// once; the tree's depth is the deepest row drawn, in JSON and text alike; siblings and children
/// are drawn apart.
#[tokio::test]
async fn a_waiter_with_two_blockers_in_one_tree_is_drawn_once() {
    let srv = Server::start(&["platform"]);
    srv.psql(
        "platform",
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)",
    );
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let r = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    r.batch_execute("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r_pid = backend_pid(&r).await;
    let mut tasks = Vec::new();
    let mut pids = Vec::new();
    for w in ["gw1", "gw2"] {
        let a = connect_as(&c, &format!("pytest_{w}_{NS_B}")).await;
        a.batch_execute("BEGIN; LOCK TABLE t2 IN ACCESS SHARE MODE")
            .await
            .unwrap();
        let pid = backend_pid(&a).await;
        tasks.push(spawn_blocking_query(a, "SELECT count(*) FROM t1"));
        wait_until_lock_wait(&admin, pid).await;
        pids.push(pid);
    }
    let cw = connect_as(&c, &format!("pytest_gw3_{NS_C}")).await;
    let c_pid = backend_pid(&cw).await;
    let c_task = spawn_blocking_query(cw, "TRUNCATE t2");
    wait_until_lock_wait(&admin, c_pid).await;

    let s = snap(&[entry("platform", &c)]).await;
    assert_eq!(s.lock_trees.len(), 1, "{:#?}", s.lock_trees);
    let tree = &s.lock_trees[0];
    assert_eq!(tree.root_pid, r_pid);
    assert_eq!(tree.victims, 3);
    let c_rows: Vec<bool> = tree
        .rows
        .iter()
        .filter(|x| x.pid == c_pid)
        .map(|x| x.reference)
        .collect();
    assert_eq!(c_rows, vec![false, true], "{:#?}", tree.rows);
    assert_eq!(tree.depth, tree.rows.iter().map(|x| x.depth).max().unwrap());
    assert_eq!(tree.depth, 2);
    let text = pgswarm::cmd::report::render_report(&s);
    assert!(text.contains("├─ "), "{text}");
    assert!(text.contains("└─ "), "{text}");
    assert!(text.contains("↳ also waits for"), "{text}");
    assert!(text.contains(&format!("↳ {c_pid} ")), "{text}");
    assert!(text.contains("(depth 2)"), "{text}");

    r.batch_execute("ROLLBACK").await.unwrap();
    for t in tasks {
        let (a, res) = t.await.unwrap();
        res.unwrap();
        a.batch_execute("ROLLBACK").await.unwrap();
    }
    c_task.await.unwrap().1.unwrap();
}

/// Issue 11, finding 8: a row-lock wait names its table and row (it awaits the holder's transaction,
/// which names neither); the one queued behind it too; every edge says what the blocker holds; the
/// same words in JSON and text.
#[tokio::test]
async fn row_lock_waits_name_their_table_and_the_holders_mode() {
    let srv = Server::start(&["platform"]);
    srv.psql(
        "platform",
        "CREATE TABLE accounts (id int PRIMARY KEY, v int); INSERT INTO accounts VALUES (1, 0); \
         CREATE TABLE orders (id int)",
    );
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute(
            "BEGIN; UPDATE accounts SET v = 1 WHERE id = 1; \
             LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let mut tasks = Vec::new();
    let mut waiters = Vec::new();
    for (w, sql) in [
        ("gw1", "UPDATE accounts SET v = 2 WHERE id = 1"),
        ("gw2", "UPDATE accounts SET v = 3 WHERE id = 1"),
        ("gw3", "INSERT INTO orders VALUES (1)"),
    ] {
        let client = connect_as(&c, &format!("pytest_{w}_{NS_B}")).await;
        let pid = backend_pid(&client).await;
        tasks.push(spawn_blocking_query(client, sql));
        wait_until_lock_wait(&admin, pid).await;
        waiters.push(pid);
    }
    let s = snap(&[entry("platform", &c)]).await;
    let edge = |blocker: i32, blocked: i32| {
        s.blocking
            .iter()
            .find(|e| e.blocker_pid == blocker && e.blocked_pid == blocked)
            .unwrap_or_else(|| panic!("no edge {blocker} -> {blocked}: {:#?}", s.blocking))
    };
    // The first row waiter awaits the holder's transaction: table and row come from its tuple lock.
    let first = edge(holder_pid, waiters[0]);
    assert_eq!(first.lock_type.as_deref(), Some("transactionid"));
    assert_eq!(first.relation.as_deref(), Some("public.accounts"));
    assert_eq!(first.row.as_deref(), Some("(0,1)"));
    assert_eq!(first.blocker_mode.as_deref(), Some("ExclusiveLock"));
    assert_eq!(
        first.wait,
        "row (0,1) of public.accounts · its open transaction holds the row"
    );
    // The second queues for the tuple behind the first, which holds it.
    let second = edge(waiters[0], waiters[1]);
    assert_eq!(second.lock_type.as_deref(), Some("tuple"));
    assert_eq!(
        second.wait,
        "row (0,1) of public.accounts · it holds Exclusive"
    );
    // A relation wait says what the holder holds.
    let third = edge(holder_pid, waiters[2]);
    assert_eq!(
        third.wait,
        "RowExclusive on public.orders · it holds AccessExclusive"
    );
    let text = pgswarm::cmd::report::render_report(&s);
    for e in [first, second, third] {
        assert!(text.contains(&e.wait), "{} missing from:\n{text}", e.wait);
    }
    holder.batch_execute("ROLLBACK").await.unwrap();
    for t in tasks {
        t.await.unwrap().1.unwrap();
    }
}

/// Issue 11, finding 5, against a real server: a table whose quoted name carries an OSC title
/// sequence and a query text with a screen-clearing CSI reach `snapshot` and `sweep` text output as
/// visible escapes only; the JSON keeps the raw bytes.
#[tokio::test]
async fn terminal_control_bytes_from_the_database_never_reach_the_terminal() {
    let srv = Server::start(&["platform"]);
    let evil = "evil\u{1b}]0;pwned\u{7}\u{202e}t";
    srv.psql("platform", &format!("CREATE TABLE \"{evil}\" (id int)"));
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{evil}\" IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let pid = backend_pid(&waiter).await;
    let sql: &'static str =
        Box::leak(format!("SELECT count(*) /* \u{1b}[2J */ FROM \"{evil}\"").into_boxed_str());
    let task = spawn_blocking_query(waiter, sql);
    wait_until_lock_wait(&admin, pid).await;
    // A stale schema with an outside view of that name, for the sweep's dependency detail.
    let stale = "test_p4242t1700000000r0000beef_gw0";
    srv.psql(
        "platform",
        &format!(
            "CREATE SCHEMA {stale}; CREATE TABLE {stale}.t (id int); \
             CREATE VIEW \"view{evil}\" AS SELECT * FROM {stale}.t"
        ),
    );
    let bin = env!("CARGO_BIN_EXE_pgswarm");
    let db = entry("platform", &c);
    for args in [
        vec!["snapshot", "--db", db.as_str()],
        vec!["sweep", "--dry-run", "--db", db.as_str()],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && pgswarm::domain::text::is_unsafe(c))
            .collect();
        assert!(bad.is_empty(), "{args:?} printed {bad:?}:\n{text}");
        assert!(
            text.contains("\\x1b]0;pwned"),
            "{args:?} shows the escape:\n{text}"
        );
    }
    let out = std::process::Command::new(bin)
        .args(["snapshot", "--json", "--db", &db])
        .output()
        .unwrap();
    let s: pgswarm::domain::snapshot::Snapshot = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s.blocking[0].relation.as_deref(),
        Some(format!("public.\"{evil}\"").as_str()),
        "JSON keeps the raw name, quoted as SQL writes it"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

/// `snapshot --summary` (issue 16): the same blocked and collision counts as the full snapshot,
/// the wait's age from `waitstart`, and the lock table's fill, from its own cheap read.
#[tokio::test]
async fn summary_agrees_with_the_full_snapshot() {
    let srv = Server::start(&["app_test"]);
    srv.psql("app_test", "CREATE TABLE t (id int)");
    let ci = srv.conninfo("app_test");
    let admin = connect_as(&ci, "admin").await;
    let holder = connect_as(&ci, &format!("pytest_gw0_{NS_B}")).await;
    holder.batch_execute("BEGIN; LOCK TABLE t").await.unwrap();
    let mut tasks = Vec::new();
    // Two runs wait: one of them is the holder's own run (not a collision).
    for label in [format!("pytest_gw1_{NS_A}"), format!("pytest_gw2_{NS_B}")] {
        let w = connect_as(&ci, &label).await;
        let pid = backend_pid(&w).await;
        tasks.push(spawn_blocking_query(w, "SELECT count(*) FROM t"));
        wait_until_lock_wait(&admin, pid).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cfg = settings(&[entry("app_test", &ci)]);
    let (_, summary) = pgswarm::cmd::snapshot::take_summary(&cfg, &ProcessEnv).await;
    let full = snap(&[entry("app_test", &ci)]).await;
    assert_eq!(summary.blocked, full.blocked_sessions());
    assert_eq!(summary.blocked, 2);
    assert_eq!(
        summary.collisions, 1,
        "only the other run's waiter collides"
    );
    let wait = summary.longest_wait_s.expect("a wait age");
    assert!(wait >= 0.3, "waitstart is at least 300 ms old: {wait}");
    let lt = &summary.lock_tables[0];
    assert!(lt.used.unwrap() > 0 && lt.capacity.unwrap() > 0 && lt.fill.is_some());
    assert!(summary.unreachable.is_empty());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["snapshot", "--summary", "--db", &format!("app_test={ci}")])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with("blocked 2 · collisions 1 · longest wait "),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    holder.batch_execute("ROLLBACK").await.unwrap();
    for t in tasks {
        t.await.unwrap().1.unwrap();
    }
}

/// Issue 23: `snapshot --summary` names every configured database it could not read, beside a
/// readable one: one that does not exist, and one whose server's activity scan failed (connected,
/// but the role may not call `pg_lock_status()`). That one used to be left out: a bare `blocked 0`
/// with `unreachable: []`. Exit 3, in text and in JSON, and stderr says why for each. Two servers
/// of its own: databases on one server share one scan, which succeeds through any readable one.
#[tokio::test]
async fn summary_names_the_databases_it_could_not_read() {
    let readable = start_cluster(&["app_test"], ClusterOptions::default());
    let refused = start_cluster(&["locked_test"], ClusterOptions::default());
    refused
        .psql("postgres", "CREATE ROLE watcher LOGIN")
        .unwrap();
    refused
        .psql(
            "locked_test",
            "REVOKE EXECUTE ON FUNCTION pg_lock_status() FROM PUBLIC",
        )
        .unwrap();
    let watcher = format!(
        "{} user=watcher",
        refused.conninfo("locked_test").replace("user=postgres", "")
    );
    let dbs = [
        entry("app_test", &readable.conninfo("app_test")),
        entry("locked_test", &watcher),
        entry("missing_test", &readable.conninfo("missing_test")),
    ];
    let (snap, summary) = pgswarm::cmd::snapshot::take_summary(&settings(&dbs), &ProcessEnv).await;
    assert_eq!(summary.unreachable, vec!["locked_test", "missing_test"]);
    let locked = &snap.databases[1];
    assert!(locked.reachable, "connected: only its scan failed");
    assert!(
        locked.error.as_deref().unwrap().contains("pg_lock_status"),
        "{locked:?}"
    );

    let run = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"));
        c.args(["snapshot", "--summary"]);
        if json {
            c.arg("--json");
        }
        for d in &dbs {
            c.args(["--db", d]);
        }
        c.output().unwrap()
    };
    let out = run(true);
    assert_exit(&out, 3);
    let s: pgswarm::domain::summary::Summary = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s.unreachable, vec!["locked_test", "missing_test"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database \"locked_test\" not read: activity scan failed"),
        "{err}"
    );
    assert!(
        err.contains("database \"missing_test\" unreachable"),
        "{err}"
    );
    let out = run(false);
    assert_exit(&out, 3);
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("blocked 0 · "), "{line}");
    assert!(
        line.trim_end()
            .ends_with(" · not read: locked_test, missing_test"),
        "{line}"
    );
}

/// Issue 16: a persistent session lists the test schemas with their tables only when the catalog
/// may have changed: a new schema shows on the next poll, a new table once its creator's statistics
/// are flushed, and a quiet poll reuses the last listing.
#[tokio::test]
async fn schema_listing_is_reused_until_the_catalog_changes() {
    use pgswarm::pg::probe::{observe, open_all, ProbeOptions};
    let srv = Server::start(&["app_test"]);
    let ci = srv.conninfo("app_test");
    let cfg = settings(&[entry("app_test", &ci)]);
    let opts = ProbeOptions::default();
    let ddl = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    ddl.batch_execute(&format!(
        "CREATE SCHEMA test_{NS_A}_gw0; CREATE TABLE test_{NS_A}_gw0.t1 (id int)"
    ))
    .await
    .unwrap();
    let persistent = open_all(&cfg.databases, &cfg.session, &ProcessEnv).await;
    let poll = || observe(&cfg.databases, &persistent, &opts, Duration::from_secs(10));
    let listings = || persistent[0].as_ref().unwrap().counters().schema_listings;
    let tables = |o: &pgswarm::domain::snapshot::Observation, schema: &str| {
        o.schemas
            .iter()
            .find(|s| s.schema == schema)
            .map(|s| s.tables)
    };
    let a = format!("test_{NS_A}_gw0");
    let b = format!("test_{NS_B}_gw1");
    assert_eq!(tables(&poll().await, &a), Some(1));
    let before = listings();
    assert_eq!(tables(&poll().await, &a), Some(1));
    assert_eq!(listings(), before, "nothing changed: the listing is reused");

    ddl.batch_execute(&format!("CREATE SCHEMA {b}"))
        .await
        .unwrap();
    let o = poll().await;
    assert_eq!(
        tables(&o, &b),
        Some(0),
        "a new schema shows on the next poll"
    );

    ddl.batch_execute(&format!("CREATE TABLE {a}.t2 (id int)"))
        .await
        .unwrap();
    ddl.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    ddl.batch_execute("SELECT 1").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tables(&poll().await, &a) != Some(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "a new table never showed in its schema"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 23 (black-box attack, F6): a relation's name is quoted the way SQL writes it, so a table
/// named like more of the sentence cannot add words to the report.
#[tokio::test]
async fn an_odd_relation_name_is_quoted_in_the_report() {
    let srv = Server::start(&["app"]);
    srv.psql("app", "CREATE TABLE \"t · queued behind it\" (id int)");
    let ci = srv.conninfo("app");
    let admin = connect_as(&ci, "admin").await;
    let holder = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE \"t · queued behind it\"")
        .await
        .unwrap();
    let waiter = connect_as(&ci, &format!("pytest_gw1_{NS_B}")).await;
    let pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM \"t · queued behind it\"");
    wait_until_lock_wait(&admin, pid).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["snapshot", "--db", &format!("app={ci}")])
        .env_remove("PGSWARM_DB")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("public.\"t · queued behind it\""), "{text}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}
