use super::*;
use crate::domain::fixtures::{self, fixture_namespace, fixture_now};
use crate::domain::naming::Worker;
use crate::domain::snapshot::{build_snapshot, Convention, ObservedSchema, ObservedSession};

fn later(mins: i64) -> DateTime<Utc> {
    fixture_now() + chrono::Duration::minutes(mins)
}

fn plan(
    obs: crate::domain::snapshot::Observation,
    rules: &SweepRules,
    now: DateTime<Utc>,
) -> SweepPlan {
    plan_sweep(&build_snapshot(obs, &Convention::default()), rules, now)
}

fn reasons(p: &SweepPlan) -> BTreeMap<String, KeepReason> {
    p.databases
        .iter()
        .flat_map(|d| {
            d.keep
                .iter()
                .map(move |k| (format!("{}/{}", d.name, k.schema), k.reason))
        })
        .collect()
}

fn drops(p: &SweepPlan) -> Vec<String> {
    p.databases
        .iter()
        .flat_map(|d| {
            d.drop
                .iter()
                .map(move |x| format!("{}/{}", d.name, x.schema))
        })
        .collect()
}

#[test]
fn crashed_invocation_is_dropped_everywhere_live_ones_are_kept_everywhere() {
    let p = plan(fixtures::collision(), &SweepRules::default(), later(60));
    let ns9 = fixture_namespace(9);
    assert_eq!(
        drops(&p),
        vec![
            format!("platform/test_{ns9}_gw0"),
            format!("tenant_a/test_{ns9}_gw0")
        ]
    );
    let r = reasons(&p);
    // Invocation 1 is connected to both databases, invocation 2 too; their schemas stay everywhere.
    assert_eq!(
        r[&format!("platform/test_{}_gw0", fixture_namespace(1))],
        KeepReason::Live
    );
    assert_eq!(
        r[&format!("tenant_a/test_{}_gw1", fixture_namespace(1))],
        KeepReason::Live
    );
    assert_eq!(r["platform/test_gw0"], KeepReason::LegacyName);
    assert!(p.active_detection_complete);
    assert_eq!(p.drop_count(), 2);
}

#[test]
fn a_run_connected_to_one_database_keeps_its_schemas_in_all_others() {
    let mut obs = fixtures::collision();
    let ns = fixture_namespace(9);
    // Invocation 9 comes back, connected to `platform` only.
    let mut s: ObservedSession = obs.sessions[4].clone();
    s.pid = 4242;
    s.application_name = format!("pytest_gw0_{ns}");
    obs.sessions.push(s);
    let p = plan(obs, &SweepRules::default(), later(60));
    assert_eq!(p.drop_count(), 0);
    assert_eq!(
        reasons(&p)[&format!("tenant_a/test_{ns}_gw0")],
        KeepReason::Live
    );
}

#[test]
fn incomplete_detection_keeps_everything() {
    let p = plan(fixtures::unreachable(), &SweepRules::default(), later(60));
    assert!(!p.active_detection_complete);
    assert_eq!(p.drop_count(), 0);
    assert!(p.keep_count() > 0);
    assert!(reasons(&p)
        .values()
        .all(|r| *r == KeepReason::ActiveDetectionIncomplete));
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].database, "tenant_b");

    // A schema listing error on a reachable database is incomplete too.
    let mut obs = fixtures::collision();
    if let Ok(info) = &mut obs.databases[1].outcome {
        info.schema_error = Some("permission denied".into());
    }
    let p = plan(obs, &SweepRules::default(), later(60));
    assert_eq!(p.drop_count(), 0);
}

#[test]
fn unattributed_sessions_block_unless_allowed() {
    let mut obs = fixtures::collision();
    let mut s = obs.sessions[4].clone();
    s.pid = 5555;
    s.application_name = "pytest_gw0_Not-A-Namespace".into();
    obs.sessions.push(s);
    let p = plan(obs.clone(), &SweepRules::default(), later(60));
    assert_eq!(p.drop_count(), 0);
    assert!(reasons(&p)
        .values()
        .all(|r| *r == KeepReason::UnattributedSessions));
    assert_eq!(
        p.unattributed_sessions,
        vec!["pytest_gw0_Not-A-Namespace".to_string()]
    );
    let allow = SweepRules {
        allow_unattributed: true,
        ..Default::default()
    };
    assert_eq!(plan(obs, &allow, later(60)).drop_count(), 2);
}

#[test]
fn min_age_forced_and_legacy() {
    // Invocation 9 started 10 minutes before fixture_now.
    let young = SweepRules {
        min_age: Duration::from_secs(20 * 60),
        ..Default::default()
    };
    let p = plan(fixtures::collision(), &young, later(5));
    assert_eq!(p.drop_count(), 0);
    assert_eq!(
        reasons(&p)[&format!("platform/test_{}_gw0", fixture_namespace(9))],
        KeepReason::TooYoung
    );
    let zero = SweepRules {
        min_age: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(
        plan(fixtures::collision(), &zero, fixture_now()).drop_count(),
        2
    );

    let mut obs = fixtures::collision();
    obs.schemas.push(ObservedSchema {
        database: "platform".into(),
        schema: "test_mydebug_gw0".into(),
        tables: 1,
        bytes: 0,
        bytes_exact: true,
    });
    let p = plan(obs.clone(), &SweepRules::default(), later(60));
    assert_eq!(
        reasons(&p)["platform/test_mydebug_gw0"],
        KeepReason::UnknownAge
    );
    let forced = SweepRules {
        include_forced: true,
        include_legacy: true,
        ..Default::default()
    };
    let d = drops(&plan(obs.clone(), &forced, later(60)));
    assert!(d.contains(&"platform/test_mydebug_gw0".to_string()));
    assert!(d.contains(&"platform/test_gw0".to_string()));

    // A session with the legacy label of worker gw0 owns test_gw0, even with unattributed sessions
    // allowed (found by a black-box attack).
    let mut s = obs.sessions[4].clone();
    s.pid = 7777;
    s.application_name = "pytest_gw0".into();
    obs.sessions.push(s);
    let all = SweepRules {
        allow_unattributed: true,
        ..forced
    };
    let p = plan(obs, &all, later(60));
    assert_eq!(reasons(&p)["platform/test_gw0"], KeepReason::Live);
}

#[test]
fn external_dependents_keep_a_schema() {
    let ns9 = fixture_namespace(9);
    let mut p = plan(fixtures::collision(), &SweepRules::default(), later(60));
    let mut deps = HashMap::new();
    deps.insert(
        format!("test_{ns9}_gw0"),
        vec!["view public.report".to_string()],
    );
    deps.insert("not_planned".to_string(), vec!["x".to_string()]);
    p.keep_with_dependents("platform", &deps);
    let kept = &p.databases[0]
        .keep
        .iter()
        .find(|k| k.schema == format!("test_{ns9}_gw0"))
        .unwrap();
    assert_eq!(kept.reason, KeepReason::ExternalDependents);
    assert_eq!(kept.detail, vec!["view public.report".to_string()]);
    assert_eq!(drops(&p), vec![format!("tenant_a/test_{ns9}_gw0")]);

    // A failed check keeps everything in that database, and says so.
    p.keep_all_in(
        "tenant_a",
        KeepReason::ActiveDetectionIncomplete,
        "dependency check failed: x".into(),
    );
    assert_eq!(p.drop_count(), 0);
    assert!(p.errors.iter().any(|e| e.database == "tenant_a"));
}

#[test]
fn odd_names_are_never_candidates_whatever_the_flags() {
    let mut obs = fixtures::collision();
    for odd in [
        "public",
        "pg_catalog",
        "Test_p1t2r0000000a_gw0",
        "test_\"x\"_gw0",
        "test_p1t2r0000000a_gw0 ",
        "test_p1t2r0000000a_gw0_extra",
        "test_a_b_gw0",
        "test-p1t2r0000000a-gw0",
        "testp1t2r0000000a_gw0",
    ] {
        obs.schemas.push(ObservedSchema {
            database: "platform".into(),
            schema: odd.into(),
            tables: 0,
            bytes: 0,
            bytes_exact: true,
        });
    }
    let all = SweepRules {
        min_age: Duration::ZERO,
        include_forced: true,
        include_legacy: true,
        allow_unattributed: true,
    };
    let p = plan(obs, &all, later(60));
    let touched: Vec<String> = drops(&p)
        .into_iter()
        .chain(reasons(&p).into_keys())
        .collect();
    for t in &touched {
        let name = t.split_once('/').unwrap().1;
        assert!(
            crate::domain::naming::parse_schema_name("test", name).is_some(),
            "{t} should never be in a plan"
        );
    }
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(quote_ident("test_a_gw0"), "\"test_a_gw0\"");
    assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
}

fn answer(server: &str, labels: &[&str]) -> LivenessAnswer {
    LivenessAnswer {
        server: server.into(),
        labels: Ok(labels.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn liveness_verdicts() {
    let ns = "p1t1700000000r0000000a";
    let other = "p2t1700000000r0000000b";
    let quiet = [
        answer("a:5432", &["psql", &format!("pytest_gw0_{other}")]),
        answer("b:5432", &[]),
    ];
    let down = LivenessAnswer {
        server: "b:5432".into(),
        labels: Err("connection refused".into()),
    };
    let cut = "a_very_long_application_prefix_for_tests_gw3_p1t1700000000r0000";
    let table: Vec<(&str, Vec<LivenessAnswer>, bool, Verdict)> = vec![
        (
            "nobody of the namespace",
            quiet.to_vec(),
            false,
            Verdict::Clear,
        ),
        (
            "a session of the namespace on the other server",
            vec![
                quiet[0].clone(),
                answer("b:5432", &[&format!("pytest_gw1_{ns}_late")]),
            ],
            false,
            Verdict::Keep(
                KeepReason::BecameLive,
                vec![format!("pytest_gw1_{ns}_late on b:5432")],
            ),
        ),
        (
            "a server that cannot answer",
            vec![quiet[0].clone(), down.clone()],
            false,
            Verdict::Keep(
                KeepReason::ActiveDetectionIncomplete,
                vec!["b:5432: connection refused".into()],
            ),
        ),
        (
            "live beats incomplete: the more precise reason",
            vec![answer("a:5432", &[&format!("pytest_master_{ns}")]), down],
            false,
            Verdict::Keep(
                KeepReason::BecameLive,
                vec![format!("pytest_master_{ns} on a:5432")],
            ),
        ),
        (
            "an unattributable test session",
            vec![answer("a:5432", &["pytest_gw0_Bad-Name"])],
            false,
            Verdict::Keep(
                KeepReason::UnattributedSessions,
                vec![
                    "pytest_gw0_Bad-Name on a:5432 (namespace missing or not [a-z0-9]{1,32})"
                        .into(),
                ],
            ),
        ),
        (
            "an unattributable test session, allowed",
            vec![answer("a:5432", &["pytest_gw0_Bad-Name"])],
            true,
            Verdict::Clear,
        ),
    ];
    for (what, answers, allow, want) in table {
        assert_eq!(
            judge_liveness("pytest", Owner::Namespace(ns), allow, &answers),
            want,
            "{what}"
        );
    }
    // A label cut at 63 bytes is never credited to the namespace it starts like.
    let long_prefix = "a_very_long_application_prefix_for_tests";
    assert_eq!(cut.len(), 63);
    assert!(matches!(
        judge_liveness(
            long_prefix,
            Owner::Namespace("p1t1700000000r0000"),
            false,
            &[answer("a", &[cut])]
        ),
        Verdict::Keep(KeepReason::UnattributedSessions, _)
    ));
    // Legacy schemas have no namespace: their worker's legacy label keeps them, even when
    // unattributed sessions are allowed (found by a black-box attack).
    assert_eq!(
        judge_liveness("pytest", Owner::Legacy(Worker::Gw(0)), false, &quiet),
        Verdict::Clear
    );
    let legacy = [answer("a:5432", &["pytest_gw0"])];
    assert!(matches!(
        judge_liveness("pytest", Owner::Legacy(Worker::Gw(0)), true, &legacy),
        Verdict::Keep(KeepReason::BecameLive, _)
    ));
    assert_eq!(
        judge_liveness("pytest", Owner::Legacy(Worker::Gw(1)), true, &legacy),
        Verdict::Clear
    );
}

#[test]
fn dependents_and_plan_age_verdicts() {
    assert_eq!(judge_dependents(&[]), Verdict::Clear);
    assert_eq!(
        judge_dependents(&["table column public.t.a".into()]),
        Verdict::Keep(
            KeepReason::ExternalDependents,
            vec!["table column public.t.a".into()]
        )
    );
    let t0 = fixture_now();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    assert_eq!(plan_expired(t0, at(0)), None);
    assert_eq!(plan_expired(t0, at(300)), None, "exactly the limit is fine");
    assert_eq!(plan_expired(t0, at(301)), Some(Duration::from_secs(301)));
    assert_eq!(
        plan_expired(t0, at(-60)),
        None,
        "a clock behind the plan's is not an age"
    );
}

fn two_db_plan() -> SweepPlan {
    let drop = |s: &str| PlannedDrop {
        schema: s.into(),
        namespace: None,
        tables: 1,
        bytes: 0,
    };
    SweepPlan {
        planned_at: fixture_now(),
        active_detection_complete: true,
        active_namespaces: vec![],
        unattributed_sessions: vec![],
        errors: vec![],
        databases: vec![
            DatabasePlan {
                name: "a".into(),
                server: Some("s1".into()),
                drop: vec![drop("x1"), drop("x2"), drop("x3"), drop("x4")],
                keep: vec![Kept::new("k1", KeepReason::Live)],
            },
            DatabasePlan {
                name: "b".into(),
                server: Some("s2".into()),
                drop: vec![drop("y1")],
                keep: vec![],
            },
        ],
    }
}

#[test]
fn every_planned_schema_is_accounted_for_exactly_once() {
    let plan = two_db_plan();
    let failed = FailedDrop {
        schema: "x2".into(),
        reason: FailReason::ClientTimeout,
        sqlstate: None,
        error: "no answer".into(),
    };
    // Database a: one dropped, one failed, one kept; x4 never reported. Database b: no outcome.
    let outcomes = vec![DatabaseOutcome {
        name: "a".into(),
        dropped: vec!["x1".into(), "stray".into()],
        failed: vec![failed.clone()],
        kept: vec![Kept::new("x3", KeepReason::BecameLive)],
        check_to_commit: vec![Duration::from_millis(3), Duration::from_millis(7)],
        ..Default::default()
    }];
    let r = build_report(&plan, &outcomes, RunMode::Executed, Timings::default());
    assert_eq!(r.accounting_errors(&plan), Vec::<String>::new());
    let a = &r.databases[0];
    assert_eq!(
        a.dropped,
        vec!["x1".to_string()],
        "a stray outcome is ignored"
    );
    assert_eq!(a.failed, vec![failed]);
    let reason =
        |d: &DatabaseResult, s: &str| d.kept.iter().find(|k| k.schema == s).map(|k| k.reason);
    assert_eq!(reason(a, "x3"), Some(KeepReason::BecameLive));
    assert_eq!(reason(a, "x4"), Some(KeepReason::NotAttempted));
    assert_eq!(reason(a, "k1"), Some(KeepReason::Live));
    assert_eq!(
        reason(&r.databases[1], "y1"),
        Some(KeepReason::NotAttempted)
    );
    assert_eq!(
        r.timings.check_to_commit_max,
        Some(Duration::from_millis(7))
    );
    assert_eq!(r.status(), SweepStatus::SomeFailed);

    let dry = build_report(&plan, &[], RunMode::DryRun, Timings::default());
    assert_eq!(dry.accounting_errors(&plan), Vec::<String>::new());
    assert_eq!(dry.databases[0].would_drop.len(), 4);
    assert_eq!(dry.status(), SweepStatus::Done);
    let cancelled = build_report(&plan, &[], RunMode::Cancelled, Timings::default());
    assert_eq!(cancelled.accounting_errors(&plan), Vec::<String>::new());
    assert_eq!(cancelled.status(), SweepStatus::Done);

    // The checker itself catches a schema reported twice and one reported nowhere.
    let mut broken = r.clone();
    broken.databases[0].dropped.push("x3".into());
    broken.databases[1].kept.clear();
    let errs = broken.accounting_errors(&plan);
    assert!(
        errs.iter().any(|e| e.contains("a.x3 is reported 2 times")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("b.y1 is reported nowhere")),
        "{errs:?}"
    );
}

#[test]
fn sweep_status_table() {
    let plan = two_db_plan();
    let with = |kept: Vec<Kept>, failed: Vec<FailedDrop>| {
        let o = DatabaseOutcome {
            name: "b".into(),
            kept,
            failed,
            ..Default::default()
        };
        let mut full = vec![o];
        full.push(DatabaseOutcome {
            name: "a".into(),
            dropped: vec!["x1".into(), "x2".into(), "x3".into(), "x4".into()],
            ..Default::default()
        });
        build_report(&plan, &full, RunMode::Executed, Timings::default()).status()
    };
    let k = |r| vec![Kept::new("y1", r)];
    assert_eq!(
        with(vec![], vec![]),
        SweepStatus::SomeFailed,
        "y1 not attempted"
    );
    // Database a dropped everything: the live set lost later (y1) is "some failed", since exit 3
    // promises that nothing was dropped.
    for (reason, want) in [
        (KeepReason::Vanished, SweepStatus::Done),
        (KeepReason::BecameLive, SweepStatus::Done),
        (KeepReason::ExternalDependents, SweepStatus::Done),
        (
            KeepReason::ActiveDetectionIncomplete,
            SweepStatus::SomeFailed,
        ),
        (KeepReason::UnattributedSessions, SweepStatus::SomeFailed),
        (KeepReason::ServerUnresponsive, SweepStatus::SomeFailed),
        (KeepReason::SweepInProgress, SweepStatus::SomeFailed),
        (KeepReason::NotAttempted, SweepStatus::SomeFailed),
        (KeepReason::PlanExpired, SweepStatus::SomeFailed),
    ] {
        assert_eq!(with(k(reason), vec![]), want, "{reason:?}");
    }
    let failed = FailedDrop {
        schema: "y1".into(),
        reason: FailReason::SqlError,
        sqlstate: Some("55P03".into()),
        error: "lock timeout".into(),
    };
    assert_eq!(with(vec![], vec![failed]), SweepStatus::SomeFailed);

    // Nothing dropped anywhere and the live set lost: exit 3's "nothing dropped" holds.
    let lost = |name: &str, schemas: &[&str], reason| DatabaseOutcome {
        name: name.into(),
        kept: schemas.iter().map(|s| Kept::new(s, reason)).collect(),
        ..Default::default()
    };
    let none = vec![
        lost(
            "a",
            &["x1", "x2", "x3", "x4"],
            KeepReason::ActiveDetectionIncomplete,
        ),
        lost("b", &["y1"], KeepReason::UnattributedSessions),
    ];
    let r = build_report(&plan, &none, RunMode::Executed, Timings::default());
    assert_eq!(r.status(), SweepStatus::DetectionIncomplete);
}

/// Issue 23: a transaction that may hold uncommitted catalog changes keeps the schema, named with
/// what ends it; none clears it.
#[test]
fn uncommitted_catalog_changes_keep_and_name_the_transaction() {
    let now = Utc::now();
    assert!(matches!(
        judge_uncommitted("pytest", &[], now),
        Verdict::Clear
    ));
    let session = UncommittedSuspect {
        pid: Some(4242),
        application_name: Some("pytest_gw3_p18234t1745178234r3af93d71".into()),
        state: Some("idle in transaction".into()),
        since: Some(now - chrono::Duration::seconds(90)),
        gid: None,
        owner: None,
        evidence: "AccessExclusiveLock on public.orders".into(),
        xid: Some("742".into()),
    };
    let prepared = UncommittedSuspect {
        pid: None,
        application_name: None,
        state: None,
        since: Some(now - chrono::Duration::hours(3)),
        gid: Some("tx\n1".into()),
        owner: Some("alice".into()),
        evidence: "prepared".into(),
        xid: Some("743".into()),
    };
    let Verdict::Keep(reason, detail) = judge_uncommitted("pytest", &[session, prepared], now)
    else {
        panic!("kept");
    };
    assert_eq!(reason, KeepReason::UncommittedDdl);
    assert!(detail[0].contains("pid 4242"), "{detail:?}");
    assert!(
        detail[0].contains("run p18234t1745178234r3af93d71 worker gw3"),
        "{detail:?}"
    );
    assert!(detail[0].contains("public.orders"), "{detail:?}");
    // The gid is quoted (a newline in it cannot forge a line), with what ends it.
    assert!(detail[1].contains("\"tx\\n1\""), "{detail:?}");
    assert!(detail[1].contains("ROLLBACK PREPARED"), "{detail:?}");
    assert!(detail[1].contains("alice"), "{detail:?}");
}
