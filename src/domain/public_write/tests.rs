use super::*;
use crate::domain::snapshot::{
    build_snapshot, Convention, DatabaseInfo, Observation, ObservedDatabase, ObservedSchema,
    ObservedServer, ObservedSession, Snapshot,
};
use chrono::TimeZone;
use proptest::prelude::*;

const NS_A: &str = "p100t1700000000r0000000a";
const NS_B: &str = "p200t1700000100r0000000b";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_001_000 + secs, 0).unwrap()
}

fn db(name: &str) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        target: format!("u@host/{name}"),
        outcome: Ok(DatabaseInfo {
            server: 0,
            server_version: "15.18".into(),
            datname: name.into(),
            latency: std::time::Duration::from_millis(1),
            schema_error: None,
        }),
        stale: None,
        not_read_yet: false,
    }
}

fn session(datname: &str, pid: i32, app: &str) -> ObservedSession {
    ObservedSession {
        server: 0,
        datname: Some(datname.into()),
        pid,
        application_name: app.into(),
        state: Some("idle in transaction".into()),
        xact_start: Some(t(-5)),
        query_start: Some(t(-4)),
        ..Default::default()
    }
}

fn schema(database: &str, name: &str) -> ObservedSchema {
    ObservedSchema {
        database: database.into(),
        schema: name.into(),
        tables: 3,
        bytes: 0,
        bytes_exact: false,
    }
}

fn lock(database: &str, pid: i32, relation: &str, mode: &str) -> ObservedSharedLock {
    ObservedSharedLock {
        database: database.into(),
        pid,
        relation: relation.into(),
        mode: mode.into(),
    }
}

fn snapshot(
    sessions: Vec<ObservedSession>,
    schemas: Vec<ObservedSchema>,
    locks: Vec<ObservedSharedLock>,
) -> Snapshot {
    let obs = Observation {
        taken_at: t(0),
        databases: vec![db("tenant_a"), db("platform")],
        servers: vec![ObservedServer {
            key: "k0".into(),
            label: "s0".into(),
            now: t(0),
            activity_error: None,
            health: Default::default(),
        }],
        sessions,
        schemas,
        shared: SharedObservation {
            locks,
            counters: Vec::new(),
        },
    };
    build_snapshot(obs, &Convention::default())
}

#[test]
fn the_write_mode_is_the_one_every_dml_statement_takes() {
    assert!(is_write_mode("RowExclusiveLock"));
    // Reads, SELECT FOR UPDATE, VACUUM/ANALYZE, CREATE INDEX: no row written; and the modes a
    // foreign key to a shared table takes when its worker table is created or dropped.
    for m in [
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
        "AccessShareLock",
        "RowShareLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "",
    ] {
        assert!(!is_write_mode(m), "{m}");
    }
}

#[test]
fn a_labeled_session_holding_a_write_lock_on_public_is_a_public_write_with_its_run_and_worker() {
    let app = format!("pytest_gw0_{NS_A}");
    let snap = snapshot(
        vec![session("tenant_a", 42, &app)],
        vec![schema("tenant_a", &format!("test_{NS_A}_gw0"))],
        vec![
            lock("tenant_a", 42, "public.operation_type", "RowExclusiveLock"),
            lock(
                "tenant_a",
                42,
                "public.operation_type",
                "AccessExclusiveLock",
            ),
        ],
    );
    assert_eq!(snap.public_writes.len(), 1, "one row per session and table");
    let w = &snap.public_writes[0];
    assert_eq!(w.evidence, Evidence::Lock);
    assert_eq!(w.relation, "public.operation_type");
    assert_eq!(w.database, "tenant_a");
    assert_eq!(w.namespace.as_deref(), Some(NS_A));
    assert_eq!(w.worker.as_deref(), Some("gw0"));
    assert_eq!(w.pid, Some(42));
    assert_eq!(w.since, Some(t(-5)));
    assert!(snap
        .warning_codes
        .contains(&crate::domain::snapshot::WarningCode::PublicWrite));
    assert!(snap.missing_worker_schemas.is_empty());
}

#[test]
fn reads_maintenance_and_unlabeled_sessions_are_not_public_writes() {
    let app = format!("pytest_gw1_{NS_A}_concurrency");
    let snap = snapshot(
        vec![
            session("tenant_a", 1, &app),
            session("tenant_a", 2, "psql"),
            session("tenant_a", 3, "pytest_gw0_Bad-Namespace"),
        ],
        vec![schema("tenant_a", &format!("test_{NS_A}_gw1"))],
        vec![
            lock("tenant_a", 1, "public.t", "AccessShareLock"),
            lock("tenant_a", 1, "public.u", "ShareUpdateExclusiveLock"),
            lock("tenant_a", 1, "public.v", "ShareLock"),
            lock("tenant_a", 2, "public.t", "RowExclusiveLock"),
            lock("tenant_a", 3, "public.t", "RowExclusiveLock"),
            // A pid not among this snapshot's sessions is nobody's.
            lock("tenant_a", 99, "public.t", "RowExclusiveLock"),
        ],
    );
    assert!(snap.public_writes.is_empty(), "{:?}", snap.public_writes);
}

#[test]
fn a_run_without_its_worker_schema_is_flagged_per_database() {
    let gw0 = format!("pytest_gw0_{NS_A}");
    let gw1 = format!("pytest_gw1_{NS_A}");
    let snap = snapshot(
        vec![
            session("tenant_a", 1, &gw0),
            session("tenant_a", 2, &gw1),
            session("platform", 3, &gw0),
            session("platform", 4, "psql"),
        ],
        vec![
            schema("tenant_a", &format!("test_{NS_A}_gw0")),
            schema("platform", &format!("test_{NS_A}_gw0")),
            // The legacy name the stale seeder composes does not count.
            schema("tenant_a", "test_gw1"),
        ],
        Vec::new(),
    );
    assert_eq!(snap.missing_worker_schemas.len(), 1);
    let m = &snap.missing_worker_schemas[0];
    assert_eq!(
        (m.database.as_str(), m.namespace.as_str(), m.worker.as_str()),
        ("tenant_a", NS_A, "gw1")
    );
    assert_eq!(m.schema, format!("test_{NS_A}_gw1"));
    assert_eq!(m.pids, vec![2]);
}

#[test]
fn no_missing_schema_is_claimed_where_schemas_were_not_read() {
    let gw0 = format!("pytest_gw0_{NS_A}");
    let mut obs_db = db("tenant_a");
    if let Ok(info) = &mut obs_db.outcome {
        info.schema_error = Some("permission denied".into());
    }
    let obs = Observation {
        taken_at: t(0),
        databases: vec![obs_db],
        servers: vec![ObservedServer {
            key: "k0".into(),
            label: "s0".into(),
            now: t(0),
            activity_error: None,
            health: Default::default(),
        }],
        sessions: vec![session("tenant_a", 1, &gw0)],
        schemas: Vec::new(),
        shared: Default::default(),
    };
    let snap = build_snapshot(obs, &Convention::default());
    assert!(snap.missing_worker_schemas.is_empty());
}

fn labeled(database: &str, ns: &str, pid: i32) -> ObservedSession {
    session(database, pid, &format!("pytest_gw0_{ns}"))
}

fn reading(database: &str, at: i64, tables: &[(&str, i64, i64, i64)]) -> CounterReading {
    CounterReading {
        database: database.into(),
        at: t(at),
        new_tables_since: None,
        tables: tables
            .iter()
            .map(|(r, i, u, d)| TableCounters {
                relation: (*r).into(),
                inserted: *i,
                updated: *u,
                deleted: *d,
            })
            .collect(),
    }
}

fn sessions_of(list: Vec<ObservedSession>) -> Vec<crate::domain::snapshot::SessionReport> {
    snapshot(list, Vec::new(), Vec::new()).sessions
}

#[test]
fn a_counter_delta_is_a_statistics_write_with_the_connected_runs_as_candidates() {
    let mut tr = PublicWriteTracker::new();
    let one = sessions_of(vec![labeled("tenant_a", NS_A, 1)]);
    let out = tr.observe(
        t(0),
        &one,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 10, 0, 0)])],
    );
    assert!(out.statistics.is_empty(), "the first reading is a baseline");
    let out = tr.observe(
        t(3),
        &one,
        &[],
        &[reading("tenant_a", 3, &[("public.op", 13, 1, 0)])],
    );
    assert_eq!(out.statistics.len(), 1);
    let w = &out.statistics[0];
    assert_eq!(w.evidence, Evidence::Statistics);
    assert_eq!(w.relation, "public.op");
    assert_eq!((w.rows, w.inserted, w.updated), (Some(4), Some(3), Some(1)));
    assert_eq!(w.candidates, vec![NS_A.to_string()]);
    assert_eq!(w.window_start, Some(t(0) - FLUSH_LAG));
    assert_eq!(w.window_end, Some(t(3)));
    assert_eq!(w.who(), format!("run {NS_A}"));
}

/// A table created since the previous list was written since then, not only since the previous
/// reading: the run that created and seeded it and left is a candidate beside the one that
/// connected later (found by the black-box attack: the later run was named alone).
#[test]
fn a_new_tables_writes_reach_back_to_the_previous_list() {
    let mut tr = PublicWriteTracker::new();
    let a = sessions_of(vec![labeled("tenant_a", NS_A, 1)]);
    let b = sessions_of(vec![labeled("tenant_a", NS_B, 2)]);
    tr.observe(
        t(0),
        &a,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 0, 0, 0)])],
    );
    // A creates and seeds public.seeded, then leaves; B connects.
    tr.observe(t(1), &a, &[], &[]);
    tr.observe(
        t(30),
        &b,
        &[],
        &[reading("tenant_a", 30, &[("public.op", 0, 0, 0)])],
    );
    let mut later = reading(
        "tenant_a",
        60,
        &[("public.op", 0, 0, 0), ("public.seeded", 6, 0, 0)],
    );
    later.new_tables_since = Some(t(0));
    let out = tr.observe(t(60), &b, &[], &[later]);
    assert_eq!(out.statistics.len(), 1);
    let w = &out.statistics[0];
    assert_eq!(w.relation, "public.seeded");
    assert_eq!(w.rows, Some(6));
    assert_eq!(w.window_start, Some(t(0) - FLUSH_LAG));
    assert_eq!(w.candidates, vec![NS_A.to_string(), NS_B.to_string()]);
}

#[test]
fn two_runs_live_in_the_window_are_both_candidates_and_runs_elsewhere_are_not() {
    let mut tr = PublicWriteTracker::new();
    let both = sessions_of(vec![
        labeled("tenant_a", NS_A, 1),
        labeled("tenant_a", NS_B, 2),
        labeled("platform", "p300t1700000200r0000000c", 3),
    ]);
    tr.observe(
        t(0),
        &both,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 0, 0, 0)])],
    );
    let out = tr.observe(
        t(3),
        &both,
        &[],
        &[reading("tenant_a", 3, &[("public.op", 5, 0, 0)])],
    );
    assert_eq!(
        out.statistics[0].candidates,
        vec![NS_A.to_string(), NS_B.to_string()]
    );
}

#[test]
fn a_delta_while_no_run_was_connected_is_nobodys_test_write() {
    let mut tr = PublicWriteTracker::new();
    let admin = sessions_of(vec![session("tenant_a", 9, "psql")]);
    tr.observe(
        t(0),
        &admin,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 0, 0, 0)])],
    );
    let out = tr.observe(
        t(3),
        &admin,
        &[],
        &[reading("tenant_a", 3, &[("public.op", 7, 0, 0)])],
    );
    assert!(out.statistics.is_empty());
}

#[test]
fn a_reset_is_a_new_baseline_and_a_new_table_counts_from_zero() {
    let mut tr = PublicWriteTracker::new();
    let one = sessions_of(vec![labeled("tenant_a", NS_A, 1)]);
    tr.observe(
        t(0),
        &one,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 50, 0, 0)])],
    );
    let out = tr.observe(
        t(3),
        &one,
        &[],
        &[reading(
            "tenant_a",
            3,
            &[("public.op", 2, 0, 0), ("public.fresh", 4, 0, 0)],
        )],
    );
    assert_eq!(out.statistics.len(), 1);
    assert_eq!(out.statistics[0].relation, "public.fresh");
    assert_eq!(out.statistics[0].rows, Some(4));
    // The same reading again (an aggregator re-merging an older observation) changes nothing.
    let again = tr.observe(
        t(4),
        &one,
        &[],
        &[reading(
            "tenant_a",
            3,
            &[("public.op", 2, 0, 0), ("public.fresh", 9, 0, 0)],
        )],
    );
    assert_eq!(again.statistics[0].rows, Some(4));
}

#[test]
fn statistics_findings_add_up_and_end_after_a_quiet_spell_and_locks_end_when_released() {
    let mut tr = PublicWriteTracker::new();
    let one = sessions_of(vec![labeled("tenant_a", NS_A, 1)]);
    tr.observe(
        t(0),
        &one,
        &[],
        &[reading("tenant_a", 0, &[("public.op", 0, 0, 0)])],
    );
    tr.observe(
        t(3),
        &one,
        &[],
        &[reading("tenant_a", 3, &[("public.op", 2, 0, 0)])],
    );
    let out = tr.observe(
        t(6),
        &one,
        &[],
        &[reading("tenant_a", 6, &[("public.op", 5, 0, 1)])],
    );
    assert_eq!(out.statistics.len(), 1);
    assert_eq!(out.statistics[0].rows, Some(6));
    assert_eq!(out.statistics[0].first_seen, Some(t(3)));
    assert_eq!(out.statistics[0].last_seen, Some(t(6)));

    let lock_snap = snapshot(
        vec![labeled("tenant_a", NS_A, 1)],
        vec![schema("tenant_a", &format!("test_{NS_A}_gw0"))],
        vec![lock("tenant_a", 1, "public.op", "RowExclusiveLock")],
    );
    let out = tr.observe(t(7), &one, &lock_snap.public_writes, &[]);
    assert!(out.ended.is_empty());
    let out = tr.observe(t(8), &one, &lock_snap.public_writes, &[]);
    assert!(out.ended.is_empty());
    let out = tr.observe(t(9), &one, &[], &[]);
    assert_eq!(out.ended.len(), 1, "the lock is gone");
    let ended = &out.ended[0];
    assert_eq!(ended.evidence, Evidence::Lock);
    assert_eq!(
        (ended.first_seen, ended.last_seen),
        (Some(t(7)), Some(t(8)))
    );
    let quiet = t(6) + STATISTICS_QUIET;
    let out = tr.observe(quiet, &one, &[], &[]);
    assert_eq!(out.ended.len(), 1);
    assert_eq!(out.ended[0].evidence, Evidence::Statistics);
    assert_eq!(out.ended[0].rows, Some(6));
    assert!(out.statistics.is_empty());
}

#[test]
fn a_recording_gives_each_finding_once_with_first_and_last_seen() {
    let app = format!("pytest_gw0_{NS_A}");
    let mut snaps = Vec::new();
    for i in 0..3 {
        let mut s = snapshot(
            vec![session("tenant_a", 42, &app)],
            vec![schema("tenant_a", &format!("test_{NS_A}_gw0"))],
            vec![lock("tenant_a", 42, "public.op", "RowExclusiveLock")],
        );
        s.taken_at = t(i);
        snaps.push(s);
    }
    let found = public_writes_of(&snaps);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].first_seen, found[0].last_seen),
        (Some(t(0)), Some(t(2)))
    );
    assert!(found[0].involves(NS_A));
    assert!(!found[0].involves(NS_B));
}

#[test]
fn shared_schema_names_are_checked() {
    assert!(validate_shared_schema("public").is_ok());
    assert!(validate_shared_schema("Reference Data").is_ok());
    let e = validate_shared_schema("").unwrap_err();
    assert!(e.contains("\"\""), "{e}");
    let long = "x".repeat(64);
    assert!(validate_shared_schema(&long).unwrap_err().contains(&long));
    assert!(validate_shared_schema("a\nb").is_err());
}

#[test]
fn old_snapshots_without_the_new_fields_still_parse() {
    let snap = snapshot(Vec::new(), Vec::new(), Vec::new());
    let mut json = serde_json::to_value(&snap).unwrap();
    let o = json.as_object_mut().unwrap();
    o.remove("public_writes");
    o.remove("missing_worker_schemas");
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert!(back.public_writes.is_empty());
    let w = PublicWrite {
        database: "d".into(),
        relation: "public.t".into(),
        evidence: Evidence::Statistics,
        mode: None,
        namespace: None,
        worker: None,
        suffix: None,
        pid: None,
        application_name: None,
        since: None,
        rows: Some(3),
        inserted: Some(3),
        updated: None,
        deleted: None,
        window_start: None,
        window_end: None,
        candidates: vec![NS_A.into()],
        first_seen: None,
        last_seen: None,
    };
    let text = serde_json::to_string(&w).unwrap();
    assert!(text.contains("\"evidence\":\"statistics\""), "{text}");
    assert_eq!(serde_json::from_str::<PublicWrite>(&text).unwrap(), w);
}

proptest! {
    /// Attribution never guesses: a statistics finding names exactly the runs connected to its
    /// database in its window, and never one run unless only that run was connected.
    #[test]
    fn candidates_are_exactly_the_runs_connected_in_the_window(
        present in proptest::collection::vec(proptest::collection::btree_set(0u8..4, 0..4), 2..6),
        rows in 1i64..100,
    ) {
        let ns = |i: u8| format!("p{}t1700000000r0000000{i}", 100 + u32::from(i));
        let mut tr = PublicWriteTracker::new();
        let n = present.len() as i64;
        let mut expected = BTreeSet::new();
        for (k, runs) in present.iter().enumerate() {
            let k = k as i64;
            let list: Vec<ObservedSession> = runs
                .iter()
                .enumerate()
                .map(|(j, &r)| labeled("tenant_a", &ns(r), 10 * i32::from(r) + j as i32))
                .collect();
            let sessions = sessions_of(list);
            // Readings at the first and the last snapshot; the window reaches FLUSH_LAG back.
            let readings = if k == 0 {
                vec![reading("tenant_a", 0, &[("public.op", 0, 0, 0)])]
            } else if k == n - 1 {
                vec![reading("tenant_a", k, &[("public.op", rows, 0, 0)])]
            } else {
                Vec::new()
            };
            expected.extend(runs.iter().map(|&r| ns(r)));
            let out = tr.observe(t(k), &sessions, &[], &readings);
            if k == n - 1 {
                let expected: Vec<String> = expected.iter().cloned().collect();
                if expected.is_empty() {
                    prop_assert!(out.statistics.is_empty());
                } else {
                    prop_assert_eq!(out.statistics.len(), 1);
                    prop_assert_eq!(&out.statistics[0].candidates, &expected);
                    prop_assert_eq!(out.statistics[0].rows, Some(rows));
                }
            }
        }
    }
}

mod lock_budget {
    use super::super::{LockBudget, LOCK_BUDGET_SHARE};
    use proptest::prelude::*;

    proptest! {
        /// Whatever the polls and reads take, the reads sent never spend more than the share of the
        /// polls' time plus the one read allowed on credit (an independent sum, not the bucket).
        #[test]
        fn reads_stay_within_the_share_of_the_polls(
            steps in proptest::collection::vec((0.0f64..50.0, 0.0f64..20.0), 1..400)
        ) {
            let mut b = LockBudget::default();
            let (mut polls, mut spent, mut largest) = (0.0f64, 0.0f64, 0.0f64);
            for (poll_ms, read_ms) in steps {
                b.earn(poll_ms);
                polls += poll_ms;
                if b.affordable() {
                    b.spend(read_ms);
                    spent += read_ms;
                    largest = largest.max(read_ms);
                }
                prop_assert!(spent <= LOCK_BUDGET_SHARE * polls + largest + 1e-9,
                    "spent {spent} of polls {polls} (largest read {largest})");
            }
        }
    }

    #[test]
    fn the_first_read_is_on_credit_and_the_next_waits_for_its_cost() {
        let mut b = LockBudget::default();
        assert!(b.affordable());
        b.spend(3.0);
        assert!(!b.affordable());
        // 3 ms of debt and 3 ms of cost: 120 ms of polls at 5% pay for the next read.
        for _ in 0..119 {
            b.earn(1.0);
        }
        assert!(!b.affordable());
        b.earn(1.5);
        assert!(b.affordable());
    }

    #[test]
    fn nonsense_times_change_nothing() {
        let mut b = LockBudget::default();
        b.spend(2.0);
        let before = b.clone();
        b.earn(f64::NAN);
        b.earn(-5.0);
        assert!(!b.affordable());
        assert_eq!(b.clone().affordable(), before.affordable());
    }
}
