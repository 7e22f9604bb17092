use super::*;
use crate::domain::fixtures::{self, fixture_namespace, fixture_now};
use crate::domain::snapshot::{build_snapshot, Convention, ObservedSchema, ObservedSession};

fn later(mins: i64) -> DateTime<Utc> {
    fixture_now() + chrono::Duration::minutes(mins)
}

fn plan(
    obs: crate::domain::snapshot::Observation,
    rules: &SweepRules,
    now: DateTime<Utc>,
) -> SweepPlan {
    plan_sweep(
        &build_snapshot(obs, &Convention::default()),
        &HashMap::new(),
        rules,
        now,
    )
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
    let d = drops(&plan(obs, &forced, later(60)));
    assert!(d.contains(&"platform/test_mydebug_gw0".to_string()));
    assert!(d.contains(&"platform/test_gw0".to_string()));
}

#[test]
fn external_dependents_keep_a_schema() {
    let snap = build_snapshot(fixtures::collision(), &Convention::default());
    let ns9 = fixture_namespace(9);
    let mut deps = HashMap::new();
    deps.insert(
        ("platform".to_string(), format!("test_{ns9}_gw0")),
        vec!["view public.report depends on table t".to_string()],
    );
    let p = plan_sweep(&snap, &deps, &SweepRules::default(), later(60));
    let kept = &p.databases[0]
        .keep
        .iter()
        .find(|k| k.schema == format!("test_{ns9}_gw0"))
        .unwrap();
    assert_eq!(kept.reason, KeepReason::ExternalDependents);
    assert_eq!(kept.detail.len(), 1);
    assert_eq!(drops(&p), vec![format!("tenant_a/test_{ns9}_gw0")]);
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
