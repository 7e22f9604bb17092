use super::*;
use chrono::TimeZone;

const NS_A: &str = "p100t1700000000r0000000a";
const NS_B: &str = "p200t1700000100r0000000b";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_001_000 + secs, 0).unwrap()
}

fn db(name: &str, server: ServerId) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        target: format!("u@host/{name}"),
        outcome: Ok(DatabaseInfo {
            server,
            server_version: "15.18".into(),
            datname: name.into(),
            latency: std::time::Duration::from_millis(1),
            schema_error: None,
        }),
        stale: None,
        not_read_yet: false,
    }
}

fn session(server: ServerId, datname: &str, pid: i32, app: &str) -> ObservedSession {
    ObservedSession {
        server,
        datname: Some(datname.into()),
        pid,
        application_name: app.into(),
        state: Some("active".into()),
        query_start: Some(t(-30)),
        ..Default::default()
    }
}

fn lock(mode: &str, rel: &str, waitstart: Option<i64>) -> AwaitedLock {
    AwaitedLock {
        lock_type: "relation".into(),
        mode: mode.into(),
        relation: Some(rel.into()),
        waitstart: waitstart.map(t),
        object: format!("relation:{rel}"),
        ..Default::default()
    }
}

fn obs(
    databases: Vec<ObservedDatabase>,
    sessions: Vec<ObservedSession>,
    schemas: Vec<ObservedSchema>,
) -> Observation {
    Observation {
        shared: Default::default(),
        taken_at: t(0),
        servers: vec![
            ObservedServer {
                key: "k0".into(),
                label: "s0".into(),
                now: t(0),
                activity_error: None,
                health: Default::default(),
            },
            ObservedServer {
                key: "k1".into(),
                label: "s1".into(),
                now: t(0),
                activity_error: None,
                health: Default::default(),
            },
        ],
        databases,
        sessions,
        schemas,
    }
}

fn schema(database: &str, schema: &str) -> ObservedSchema {
    ObservedSchema {
        database: database.into(),
        schema: schema.into(),
        tables: 3,
        bytes: 8192,
        bytes_exact: true,
    }
}

#[test]
fn cross_invocation_collision_is_flagged_with_lock_detail() {
    let holder = ObservedSession {
        state: Some("idle in transaction".into()),
        xact_start: Some(t(-50)),
        ..session(0, "platform", 10, &format!("pytest_gw0_{NS_A}"))
    };
    let waiter = ObservedSession {
        blocked_by: vec![10, 10],
        awaited: Some(lock("AccessExclusiveLock", "public.accounts", Some(-12))),
        ..session(0, "platform", 11, &format!("pytest_gw1_{NS_B}_setup"))
    };
    let snap = build_snapshot(
        obs(vec![db("platform", 0)], vec![holder, waiter], vec![]),
        &Convention::default(),
    );
    assert_eq!(snap.blocking.len(), 1, "duplicate blocker pid counted once");
    let e = &snap.blocking[0];
    assert!(e.cross_invocation);
    assert_eq!((e.blocker_pid, e.blocked_pid, e.root_pid), (10, 11, 10));
    assert_eq!(e.lock_mode.as_deref(), Some("AccessExclusiveLock"));
    assert_eq!(e.relation.as_deref(), Some("public.accounts"));
    assert_eq!(e.waiting_s, Some(12.0));
    assert_eq!(e.wait_source, Some(WaitSource::Waitstart));
    assert_eq!(e.blocker_state.as_deref(), Some("idle in transaction"));
    assert_eq!(snap.lock_trees.len(), 1);
    let tree = &snap.lock_trees[0];
    assert!(tree.root_idle_in_transaction && tree.cross_invocation);
    assert_eq!(tree.root_xact_age_s, Some(50.0));
    let a = snap
        .invocations
        .iter()
        .find(|i| i.namespace == NS_A)
        .unwrap();
    assert_eq!((a.blocking, a.blocked, a.pid), (1, 0, Some(100)));
    assert!(a.cross_invocation);
    let b = snap
        .invocations
        .iter()
        .find(|i| i.namespace == NS_B)
        .unwrap();
    assert_eq!((b.blocking, b.blocked), (0, 1));
    assert_eq!(snap.blocked_sessions(), 1);
}

#[test]
fn same_invocation_block_is_not_a_collision_and_wait_falls_back_to_query_start() {
    let holder = session(0, "platform", 10, &format!("pytest_gw0_{NS_A}"));
    let waiter = ObservedSession {
        blocked_by: vec![10],
        awaited: Some(lock("RowExclusiveLock", "x.y", None)),
        ..session(0, "platform", 11, &format!("pytest_gw1_{NS_A}"))
    };
    let snap = build_snapshot(
        obs(vec![db("platform", 0)], vec![holder, waiter], vec![]),
        &Convention::default(),
    );
    let e = &snap.blocking[0];
    assert!(!e.cross_invocation);
    assert_eq!(e.waiting_s, Some(30.0));
    assert_eq!(e.wait_source, Some(WaitSource::QueryStart));
}

#[test]
fn same_pid_on_two_servers_never_mixes() {
    // pid 10 on server 0 blocks pid 11 on server 0; pid 10 on server 1 is unrelated.
    let s = vec![
        session(0, "a", 10, &format!("pytest_gw0_{NS_A}")),
        ObservedSession {
            blocked_by: vec![10],
            ..session(0, "a", 11, &format!("pytest_gw0_{NS_B}"))
        },
        session(1, "b", 10, "psql"),
    ];
    let snap = build_snapshot(
        obs(vec![db("a", 0), db("b", 1)], s, vec![]),
        &Convention::default(),
    );
    assert_eq!(snap.lock_trees.len(), 1);
    assert_eq!(snap.lock_trees[0].server, "s0");
    let psql = snap.sessions.iter().find(|s| s.server == "s1").unwrap();
    assert!(psql.blocking.is_empty());
    assert_eq!(psql.database, "b");
    assert_eq!(snap.databases[1].sessions, 1);
}

#[test]
fn soft_block_behind_queued_ddl_is_marked_queued() {
    let holder = session(0, "d", 1, "psql");
    let ddl = ObservedSession {
        blocked_by: vec![1],
        awaited: Some(lock("AccessExclusiveLock", "public.t", Some(-5))),
        ..session(0, "d", 2, &format!("pytest_gw0_{NS_A}"))
    };
    let reader = ObservedSession {
        blocked_by: vec![2],
        awaited: Some(lock("AccessShareLock", "public.t", Some(-2))),
        ..session(0, "d", 3, &format!("pytest_gw1_{NS_B}"))
    };
    let snap = build_snapshot(
        obs(vec![db("d", 0)], vec![holder, ddl, reader], vec![]),
        &Convention::default(),
    );
    let soft = snap.blocking.iter().find(|e| e.blocked_pid == 3).unwrap();
    assert!(soft.queued_behind);
    assert_eq!(
        soft.root_pid, 1,
        "root of the chain is the unlabeled holder"
    );
    let hard = snap.blocking.iter().find(|e| e.blocked_pid == 2).unwrap();
    assert!(!hard.queued_behind);
    assert!(!hard.cross_invocation, "unlabeled blocker is no invocation");
    let tree = &snap.lock_trees[0];
    assert_eq!((tree.root_pid, tree.victims, tree.depth), (1, 2, 2));
    assert_eq!(tree.root_application_name.as_deref(), Some("psql"));
    assert!(tree.cross_invocation, "the 2 -> 3 edge crosses invocations");
}

#[test]
fn schema_status_live_orphaned_legacy_and_unknown() {
    let sessions = vec![session(0, "a", 10, &format!("pytest_gw0_{NS_A}"))];
    let schemas = vec![
        // NS_A is live through database a only; its schema in b stays live.
        schema("b", &format!("test_{NS_A}_gw0")),
        schema("a", &format!("test_{NS_B}_gw0")),
        schema("a", "test_gw3"),
        schema("a", "test_not_a_match_gw0"),
        schema("a", "public"),
    ];
    let o = obs(
        vec![db("a", 0), db("b", 1)],
        sessions.clone(),
        schemas.clone(),
    );
    let snap = build_snapshot(o.clone(), &Convention::default());
    let status: Vec<(&str, SchemaStatus)> = snap
        .schemas
        .iter()
        .map(|s| (s.schema.as_str(), s.status))
        .collect();
    assert_eq!(
        status.len(),
        3,
        "non-matching schemas are not reported: {status:?}"
    );
    assert!(status.contains(&("test_gw3", SchemaStatus::Legacy)));
    assert!(status.contains(&(&format!("test_{NS_A}_gw0"), SchemaStatus::Live)));
    assert!(status.contains(&(&format!("test_{NS_B}_gw0"), SchemaStatus::Orphaned)));
    let b = snap
        .invocations
        .iter()
        .find(|i| i.namespace == NS_B)
        .unwrap();
    assert!(!b.live && b.schemas == 1 && b.sessions == 0);

    // With database b unreachable the orphan is only 'unknown'.
    let mut o = obs(vec![db("a", 0), db("b", 1)], sessions, schemas);
    o.databases[1].outcome = Err("connection refused".into());
    let snap = build_snapshot(o.clone(), &Convention::default());
    assert!(!snap.active_detection_complete);
    let s = snap
        .schemas
        .iter()
        .find(|s| s.schema == format!("test_{NS_B}_gw0"))
        .unwrap();
    assert_eq!(s.status, SchemaStatus::Unknown);
    assert!(!snap.databases[1].reachable);
    assert_eq!(
        snap.databases[1].error.as_deref(),
        Some("connection refused")
    );
}

#[test]
fn insufficient_privilege_and_unattributed_produce_warnings() {
    let sessions = vec![
        ObservedSession {
            query: Some(INSUFFICIENT_PRIVILEGE.into()),
            state: None,
            ..session(0, "a", 1, "other")
        },
        session(0, "a", 2, "pytest_gw0"),
    ];
    let snap = build_snapshot(
        obs(vec![db("a", 0)], sessions, vec![]),
        &Convention::default(),
    );
    assert!(snap.sessions[0].insufficient_privilege);
    assert_eq!(snap.sessions[1].label, LabelKind::Unattributed);
    assert!(snap
        .warnings
        .iter()
        .any(|w| w.contains("pg_read_all_stats")));
    assert!(snap
        .warnings
        .iter()
        .any(|w| w.contains("cannot be attributed")));
}

#[test]
fn invocations_involved_in_blocking_sort_first_and_workers_sort_numerically() {
    let mut sessions: Vec<ObservedSession> = (0..12)
        .map(|i| session(0, "a", 100 + i, &format!("pytest_gw{i}_{NS_A}")))
        .collect();
    sessions.push(session(0, "a", 1, &format!("pytest_gw0_{NS_B}")));
    sessions.push(ObservedSession {
        blocked_by: vec![1],
        ..session(0, "a", 2, &format!("pytest_gw1_{NS_B}"))
    });
    let snap = build_snapshot(
        obs(vec![db("a", 0)], sessions, vec![]),
        &Convention::default(),
    );
    assert_eq!(snap.invocations[0].namespace, NS_B);
    let a = &snap.invocations[1];
    assert_eq!(a.workers[..3], ["gw0", "gw1", "gw2"]);
    assert_eq!(a.workers.last().map(String::as_str), Some("gw11"));
}

#[test]
fn json_round_trips() {
    let snap = build_snapshot(
        obs(
            vec![db("a", 0)],
            vec![session(0, "a", 1, &format!("pytest_gw0_{NS_A}"))],
            vec![schema("a", &format!("test_{NS_A}_gw0"))],
        ),
        &Convention::default(),
    );
    let text = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
}

#[test]
fn merge_keeps_config_order_and_counts_a_shared_server_once() {
    let part = |db_name: &str, key: &str, pid: i32| Observation {
        shared: Default::default(),
        taken_at: t(0),
        databases: vec![db(db_name, 0)],
        servers: vec![ObservedServer {
            key: key.into(),
            label: key.into(),
            now: t(0),
            activity_error: None,
            health: Default::default(),
        }],
        sessions: vec![session(0, db_name, pid, "psql")],
        schemas: vec![schema(db_name, &format!("test_{NS_A}_gw0"))],
    };
    let a = part("b_db", "srv1", 1);
    let b = part("a_db", "srv2", 2);
    let c = part("c_db", "srv1", 1); // same server as `a`: its sessions are already there
    let order = vec!["a_db".to_string(), "b_db".into(), "c_db".into()];
    let m = merge_observations(&[&a, &b, &c], &order);
    let names: Vec<&str> = m.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a_db", "b_db", "c_db"]);
    assert_eq!(m.servers.len(), 2);
    assert_eq!(m.sessions.len(), 2);
    let server_of = |n: &str| match &m.databases.iter().find(|d| d.name == n).unwrap().outcome {
        Ok(i) => i.server,
        Err(_) => usize::MAX,
    };
    assert_eq!(server_of("b_db"), server_of("c_db"));
    assert_ne!(server_of("a_db"), server_of("b_db"));
    assert_eq!(m.schemas.len(), 3);
}

/// Issue 11, finding 3: a read that fails after a good one shows the good one, marked stale, never a
/// database with nothing in it; a repeated failure keeps the first time; recovery clears it.
#[test]
fn a_failed_read_carries_the_previous_one_forward_marked_stale() {
    use crate::domain::fixtures;
    let prev = fixtures::collision();
    let good = build_snapshot(prev.clone(), &Convention::default());
    assert!(good.active_detection_complete);

    // The next poll: the server's activity scan failed and the schema listing too.
    let mut next = prev.clone();
    next.taken_at = prev.taken_at + chrono::Duration::seconds(1);
    next.sessions.clear();
    next.schemas.clear();
    next.servers[0].activity_error = Some("terminating connection (SQLSTATE 57P01)".into());
    let carried = carry_forward(&prev, next.clone());
    let s = build_snapshot(carried.clone(), &Convention::default());
    assert_eq!(s.sessions.len(), good.sessions.len(), "no frame of zeros");
    assert_eq!(s.schemas.len(), good.schemas.len());
    assert!(!s.active_detection_complete);
    assert!(s.schemas.iter().all(|x| x.status != SchemaStatus::Orphaned));
    for d in &s.databases {
        assert_eq!(d.stale_since, Some(prev.taken_at), "{d:?}");
        assert!(!d.reachable);
        assert!(d.error.as_deref().unwrap().contains("57P01"));
    }
    assert!(s.warnings.iter().any(|w| w.starts_with("stale:")));

    // Unreachable on the next poll too: still the first reading's time.
    let mut again = next.clone();
    again.taken_at = next.taken_at + chrono::Duration::seconds(1);
    for d in &mut again.databases {
        d.outcome = Err("connection refused".into());
    }
    again.servers.clear();
    let s2 = build_snapshot(carry_forward(&carried, again), &Convention::default());
    assert_eq!(s2.sessions.len(), good.sessions.len());
    assert!(s2
        .databases
        .iter()
        .all(|d| d.stale_since == Some(prev.taken_at)));
    assert!(s2
        .databases
        .iter()
        .all(|d| d.error.as_deref() == Some("connection refused")));

    // A good read replaces it all.
    let mut fresh = prev.clone();
    fresh.taken_at = prev.taken_at + chrono::Duration::seconds(3);
    let s3 = build_snapshot(carry_forward(&carried, fresh), &Convention::default());
    assert!(s3.active_detection_complete);
    assert!(s3
        .databases
        .iter()
        .all(|d| d.stale_since.is_none() && d.reachable));
}

/// With nothing to carry (the very first poll failed), the failure shows as it is.
#[test]
fn nothing_to_carry_forward_is_left_as_it_is() {
    use crate::domain::fixtures;
    let prev = fixtures::unreachable();
    let next = fixtures::unreachable();
    let s = build_snapshot(carry_forward(&prev, next), &Convention::default());
    let b = s.databases.iter().find(|d| d.name == "tenant_b").unwrap();
    assert!(!b.reachable && b.stale_since.is_none());
}

/// lock type, mode, relation, row, detail, blocker's mode, queued, the phrase
type WaitCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    bool,
    &'a str,
);

/// Issue 11, finding 8: one phrase per wait, naming what it is about and what the blocker holds.
#[test]
fn waits_are_named_in_one_phrase() {
    let cases: &[WaitCase] = &[
        (
            "relation",
            "RowExclusiveLock",
            Some("public.orders"),
            None,
            None,
            Some("AccessExclusiveLock"),
            false,
            "RowExclusive on public.orders · it holds AccessExclusive",
        ),
        (
            "transactionid",
            "ShareLock",
            Some("public.accounts"),
            Some("(0,3)"),
            Some("transaction 741"),
            Some("ExclusiveLock"),
            false,
            "row (0,3) of public.accounts · its open transaction holds the row",
        ),
        (
            "transactionid",
            "ShareLock",
            None,
            None,
            Some("transaction 741"),
            Some("ExclusiveLock"),
            false,
            "a row (transaction 741) · its open transaction holds the row",
        ),
        (
            "tuple",
            "ExclusiveLock",
            Some("public.accounts"),
            Some("(0,3)"),
            None,
            Some("ExclusiveLock"),
            false,
            "row (0,3) of public.accounts · it holds Exclusive",
        ),
        (
            "relation",
            "AccessShareLock",
            Some("public.t"),
            None,
            None,
            None,
            true,
            "AccessShare on public.t · queued behind it",
        ),
        (
            "virtualxid",
            "ShareLock",
            None,
            None,
            Some("virtual transaction 7/12"),
            Some("ExclusiveLock"),
            false,
            "end of virtual transaction 7/12 · it holds Exclusive",
        ),
        (
            "advisory",
            "ExclusiveLock",
            None,
            None,
            Some("0/42"),
            Some("ExclusiveLock"),
            false,
            "advisory lock 0/42 · it holds Exclusive",
        ),
        (
            "relation",
            "AccessShareLock",
            Some("platform:16384"),
            None,
            None,
            None,
            false,
            "AccessShare on platform:16384",
        ),
    ];
    for (t, m, rel, row, detail, held, queued, want) in cases {
        assert_eq!(
            describe_wait(Some(t), Some(m), *rel, *row, *detail, *held, *queued),
            *want
        );
    }
}
