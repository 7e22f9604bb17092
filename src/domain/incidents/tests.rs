use super::*;
use crate::domain::snapshot::{
    build_snapshot, AwaitedLock, Convention, DatabaseInfo, Observation, ObservedDatabase,
    ObservedServer, ObservedSession,
};
use chrono::TimeZone;
use proptest::prelude::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .single()
        .unwrap()
        + chrono::Duration::seconds(secs)
}

const NS_A: &str = "p41000t1795510800r0000aaaa";
const NS_B: &str = "p42000t1795510800r0000bbbb";

fn session(pid: i32, worker: &str, ns: &str) -> ObservedSession {
    ObservedSession {
        server: 0,
        datname: Some("platform".into()),
        pid,
        application_name: format!("pytest_{worker}_{ns}"),
        backend_type: Some("client backend".into()),
        state: Some("idle".into()),
        query: Some("SELECT 1".into()),
        backend_start: Some(t(-100 - pid as i64)),
        query_start: Some(t(-50)),
        state_change: Some(t(-50)),
        ..Default::default()
    }
}

/// `b` idle in transaction since `t(-10)`, holding `public.accounts`.
fn holder(pid: i32, ns: &str) -> ObservedSession {
    let mut s = session(pid, "gw0", ns);
    s.state = Some("idle in transaction".into());
    s.xact_start = Some(t(-10));
    s.query = Some("UPDATE accounts SET n = n + 1".into());
    s
}

/// `pid` waiting since `waitstart` behind `blockers`, in a statement started at `query_start`.
fn waiter(pid: i32, ns: &str, blockers: &[i32], waitstart: i64) -> ObservedSession {
    let mut s = session(pid, "gw1", ns);
    s.state = Some("active".into());
    s.wait_event_type = Some("Lock".into());
    s.query = Some("LOCK TABLE accounts".into());
    s.query_start = Some(t(waitstart));
    s.state_change = Some(t(waitstart));
    s.xact_start = Some(t(waitstart));
    s.blocked_by = blockers.to_vec();
    s.awaited = Some(AwaitedLock {
        lock_type: "relation".into(),
        mode: "AccessExclusiveLock".into(),
        relation: Some("public.accounts".into()),
        waitstart: Some(t(waitstart)),
        object: "relation:accounts".into(),
        held: blockers
            .iter()
            .map(|&b| (b, "RowExclusiveLock".into()))
            .collect(),
        ..Default::default()
    });
    s
}

/// The waiter after its statement ended at `at` (not waiting any more).
fn finished(mut s: ObservedSession, at: i64, state: &str) -> ObservedSession {
    s.state = Some(state.into());
    s.state_change = Some(t(at));
    s.wait_event_type = None;
    s.blocked_by.clear();
    s.awaited = None;
    if state == "idle" {
        s.xact_start = None;
    }
    s
}

fn snap_at(secs: i64, sessions: Vec<ObservedSession>, reachable: bool) -> Snapshot {
    let db = ObservedDatabase {
        name: "platform".into(),
        target: "ci@db0:5432/platform".into(),
        outcome: if reachable {
            Ok(DatabaseInfo {
                server: 0,
                server_version: "15.18".into(),
                datname: "platform".into(),
                latency: Duration::from_millis(1),
                schema_error: None,
            })
        } else {
            Err("connection refused".into())
        },
        stale: None,
        not_read_yet: false,
    };
    let obs = Observation {
        shared: Default::default(),
        taken_at: t(secs),
        databases: vec![db],
        servers: if reachable {
            vec![ObservedServer {
                key: "s0".into(),
                label: "db0:5432".into(),
                now: t(secs),
                activity_error: None,
                health: Default::default(),
            }]
        } else {
            vec![]
        },
        sessions: if reachable { sessions } else { vec![] },
        schemas: vec![],
    };
    build_snapshot(obs, &Convention::default())
}

fn run(snaps: &[Snapshot]) -> Vec<Episode> {
    episodes_of(snaps)
}

#[test]
fn a_waiter_that_times_out_behind_a_holder_gave_up() {
    let w = waiter(20, NS_B, &[10], 0);
    let snaps = [
        snap_at(1, vec![holder(10, NS_A), w.clone()], true),
        snap_at(2, vec![holder(10, NS_A), w.clone()], true),
        // lock_timeout: the statement failed at t(3); autocommit, so the session is idle.
        snap_at(4, vec![holder(10, NS_A), finished(w, 3, "idle")], true),
    ];
    let e = run(&snaps);
    assert_eq!(e.len(), 1, "{e:#?}");
    let e = &e[0];
    assert_eq!(e.outcome, Outcome::GaveUp);
    assert_eq!(e.started_at, t(0));
    assert!(e.started_exact);
    assert_eq!(
        e.ended_at,
        Some(t(3)),
        "the statement's end, not the poll's"
    );
    assert!((e.duration_s - 3.0).abs() < 1e-9);
    assert_eq!(e.samples, 2);
    assert_eq!(e.blocker_pids, vec![10]);
    assert_eq!(e.root_pid, Some(10));
    assert_eq!(e.root_namespace.as_deref(), Some(NS_A));
    assert_eq!(e.waiter_namespace.as_deref(), Some(NS_B));
    assert_eq!(e.waiter_worker.as_deref(), Some("gw1"));
    assert!(e.cross_invocation && e.blocker_idle_in_transaction);
    assert_eq!(e.blocker_namespaces, vec![NS_A.to_string()]);
    assert_eq!(e.relation.as_deref(), Some("public.accounts"));
    assert!(e
        .wait
        .as_deref()
        .is_some_and(|w| w.contains("public.accounts")));
}

/// Issue 27: a `gave_up` wait says the error people search for, marked as inferred; the outcomes
/// that imply no error carry none.
#[test]
fn a_wait_that_gave_up_most_likely_ended_in_lock_not_available_inferred() {
    let w = waiter(20, NS_B, &[10], 0);
    let snaps = [
        snap_at(1, vec![holder(10, NS_A), w.clone()], true),
        snap_at(4, vec![holder(10, NS_A), finished(w, 3, "idle")], true),
    ];
    let e = &run(&snaps)[0];
    assert_eq!(e.outcome, Outcome::GaveUp);
    assert_eq!(e.sqlstate.as_deref(), Some("55P03"));
    assert_eq!(e.sqlstate_source, Some(SqlstateSource::Inferred));
    assert_eq!(e.error_words().as_deref(), Some("LockNotAvailable (55P03)"));
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["outcome"], "gave_up");
    assert_eq!(json["sqlstate"], "55P03");
    assert_eq!(json["sqlstate_source"], "inferred");

    // Still waiting, or granted: no error.
    let ongoing = run(&snaps[..1]);
    assert_eq!(ongoing[0].sqlstate, None);
    for o in [
        Outcome::Acquired,
        Outcome::BlockerGone,
        Outcome::WaiterGone,
        Outcome::Ongoing,
        Outcome::Unknown,
    ] {
        assert_eq!(infer_sqlstate(o), None, "{o:?}");
    }
    // A line written before the field existed: filled from its outcome; an observed one is kept.
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("sqlstate");
    old.as_object_mut().unwrap().remove("sqlstate_source");
    let mut back: Episode = serde_json::from_value(old).unwrap();
    assert_eq!(back.sqlstate, None);
    back.fill_sqlstate();
    assert_eq!(back.sqlstate.as_deref(), Some("55P03"));
    let mut seen = back.clone();
    seen.sqlstate = Some("57014".into());
    seen.sqlstate_source = Some(SqlstateSource::Observed);
    seen.fill_sqlstate();
    assert_eq!(seen.error_words().as_deref(), Some("QueryCanceled (57014)"));
    assert_eq!(seen.sqlstate_source, Some(SqlstateSource::Observed));
}

/// The end of a wait whose blocker committed, judged from the server's timestamps: the waiter's
/// statement end (`state_change`) against the blocker's commit (its `state_change` once idle).
fn ended_after_commit(
    waiter_state: &str,
    in_transaction: bool,
    end_ms: i64,
    commit_ms: i64,
) -> Outcome {
    let w = waiter(20, NS_B, &[10], 0);
    let h = holder(10, NS_A);
    let mut committed = h.clone();
    committed.xact_start = None;
    committed.state = Some("idle".into());
    // Its COMMIT ran for the millisecond before `commit_ms`.
    committed.query = Some("COMMIT".into());
    committed.query_start = Some(t(1) + chrono::Duration::milliseconds(commit_ms - 1));
    committed.state_change = Some(t(1) + chrono::Duration::milliseconds(commit_ms));
    let mut done = finished(w.clone(), 1, waiter_state);
    done.state_change = Some(t(1) + chrono::Duration::milliseconds(end_ms));
    if !in_transaction {
        done.xact_start = None;
    }
    let snaps = [
        snap_at(1, vec![h, w], true),
        snap_at(3, vec![committed, done], true),
    ];
    run(&snaps)[0].outcome
}

#[test]
fn a_wait_that_ended_before_its_blocker_committed_gave_up_whatever_came_after() {
    // lock_timeout fired at +400 ms; the blocker committed at +410 ms: not acquired (the finding of
    // the black-box attack: this used to be reported as acquired).
    assert_eq!(ended_after_commit("idle", false, 400, 410), Outcome::GaveUp);
    assert_eq!(
        ended_after_commit("idle in transaction (aborted)", true, 400, 900),
        Outcome::GaveUp
    );
}

#[test]
fn a_statement_that_failed_after_its_blocker_committed_acquired_the_lock_first() {
    // Division by zero after the lock came free: the wait ended by acquiring.
    assert_eq!(
        ended_after_commit("idle in transaction (aborted)", true, 900, 400),
        Outcome::Acquired
    );
    // Succeeded inside a transaction: it had the lock, whatever the clocks say.
    assert_eq!(
        ended_after_commit("idle in transaction", true, 300, 400),
        Outcome::Acquired
    );
    // Autocommit, ended right as the blocker reported idle (the woken waiter may report first).
    assert_eq!(
        ended_after_commit("idle", false, 399, 400),
        Outcome::Acquired
    );
    // A failed statement within the same moment as the commit: too close to call.
    assert_eq!(
        ended_after_commit("idle in transaction (aborted)", true, 399, 400),
        Outcome::Unknown
    );
}

#[test]
fn a_waiter_whose_blocker_committed_acquired() {
    let w = waiter(20, NS_B, &[10], 0);
    let mut h = holder(10, NS_A);
    let first = snap_at(1, vec![h.clone(), w.clone()], true);
    h.state = Some("idle".into());
    h.xact_start = None;
    let mut w2 = w.clone();
    w2.wait_event_type = None;
    w2.blocked_by.clear();
    w2.awaited = None; // still running the same statement
    let e = run(&[first, snap_at(2, vec![h, w2], true)]);
    assert_eq!(e[0].outcome, Outcome::Acquired);
    assert_eq!(
        e[0].ended_at,
        Some(t(2)),
        "still active: the poll bounds the end"
    );
}

#[test]
fn blocker_gone_waiter_gone_and_a_reused_blocker_pid() {
    let w = waiter(20, NS_B, &[10], 0);
    let first = snap_at(1, vec![holder(10, NS_A), w.clone()], true);
    let e = run(&[
        first.clone(),
        snap_at(2, vec![finished(w.clone(), 2, "idle")], true),
    ]);
    assert_eq!(e[0].outcome, Outcome::BlockerGone);

    let e = run(&[first.clone(), snap_at(2, vec![holder(10, NS_A)], true)]);
    assert_eq!(e[0].outcome, Outcome::WaiterGone);

    // Pid 10 now belongs to another backend in its own transaction: the old blocker is gone.
    let mut reused = holder(10, NS_A);
    reused.backend_start = Some(t(1));
    reused.xact_start = Some(t(-10));
    let e = run(&[
        first,
        snap_at(2, vec![reused, finished(w, 2, "idle")], true),
    ]);
    assert_eq!(e[0].outcome, Outcome::BlockerGone);
}

#[test]
fn an_outage_is_a_gap_not_an_outcome() {
    let w = waiter(20, NS_B, &[10], 0);
    let ok = |at| snap_at(at, vec![holder(10, NS_A), w.clone()], true);
    // Unreadable in the middle, then over: how it ended was not seen.
    let e = run(&[
        ok(1),
        snap_at(2, vec![], false),
        snap_at(3, vec![holder(10, NS_A)], true),
    ]);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].outcome, Outcome::Unknown);
    assert_eq!(e[0].ended_at, None);
    // Unreadable in the middle, still waiting after: the same episode goes on.
    let e = run(&[
        ok(1),
        snap_at(2, vec![], false),
        ok(3),
        snap_at(4, vec![], true),
    ]);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].samples, 2);
    assert_eq!(e[0].outcome, Outcome::WaiterGone);
    // Snapshots too far apart are a gap too.
    let e = run(&[ok(1), snap_at(60, vec![holder(10, NS_A)], true)]);
    assert_eq!(e[0].outcome, Outcome::Unknown);
}

#[test]
fn invisible_transactions_and_prepared_transactions_are_unknown() {
    let mut h = holder(10, NS_A);
    h.xact_start = None; // hidden: another role, no pg_read_all_stats
    h.state = None;
    let w = waiter(20, NS_B, &[10], 0);
    let e = run(&[
        snap_at(1, vec![h.clone(), w.clone()], true),
        snap_at(2, vec![h, finished(w.clone(), 2, "idle")], true),
    ]);
    assert_eq!(e[0].outcome, Outcome::Unknown);

    let w0 = waiter(20, NS_B, &[0], 0);
    let e = run(&[
        snap_at(1, vec![w0.clone()], true),
        snap_at(2, vec![finished(w0, 2, "idle")], true),
    ]);
    assert_eq!(e[0].outcome, Outcome::Unknown);
}

#[test]
fn a_statement_moving_to_its_next_lock_acquired_the_first() {
    let w = waiter(20, NS_B, &[10], 0);
    let mut next = w.clone();
    if let Some(a) = &mut next.awaited {
        a.relation = Some("public.orders".into());
        a.object = "relation:orders".into();
        a.waitstart = Some(t(2));
    }
    next.blocked_by = vec![11];
    let mut h2 = holder(11, NS_A);
    h2.backend_start = Some(t(-500));
    let e = run(&[
        snap_at(1, vec![holder(10, NS_A), h2.clone(), w], true),
        snap_at(3, vec![holder(10, NS_A), h2, next], true),
    ]);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[0].outcome, Outcome::Acquired);
    assert_eq!(e[0].relation.as_deref(), Some("public.accounts"));
    assert_eq!(e[1].outcome, Outcome::Ongoing);
    assert_eq!(e[1].relation.as_deref(), Some("public.orders"));
}

#[test]
fn an_observation_without_the_lock_details_does_not_split_the_wait() {
    // The locks are read after the activity: one poll can see the waiter blocked but not its
    // awaited lock. That is the same wait, and the details it missed are filled in.
    let w = waiter(20, NS_B, &[10], 0);
    let mut bare = w.clone();
    bare.awaited = None;
    let e = run(&[
        snap_at(1, vec![holder(10, NS_A), bare.clone()], true),
        snap_at(2, vec![holder(10, NS_A), w.clone()], true),
        snap_at(3, vec![holder(10, NS_A), bare], true),
        // The holder committed; the waiter's statement went on and finished.
        snap_at(
            4,
            vec![session(10, "gw0", NS_A), finished(w, 4, "idle")],
            true,
        ),
    ]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].samples, 3);
    assert_eq!(e[0].relation.as_deref(), Some("public.accounts"));
    assert_eq!(e[0].lock_mode.as_deref(), Some("AccessExclusiveLock"));
    assert_eq!(e[0].outcome, Outcome::Acquired);
}

#[test]
fn a_chain_names_its_root_and_records_the_blockers_over_time() {
    // 30 waits for 20, which waits for 10 (idle in transaction): the root of 30's wait is 10.
    let w20 = waiter(20, NS_B, &[10], 0);
    let mut w30 = waiter(30, NS_B, &[20], 1);
    w30.application_name = format!("pytest_gw2_{NS_B}");
    let e = run(&[
        snap_at(2, vec![holder(10, NS_A), w20.clone(), w30.clone()], true),
        snap_at(3, vec![holder(10, NS_A), w20, w30], true),
    ]);
    let e30 = e.iter().find(|e| e.waiter_pid == 30).unwrap();
    assert_eq!(e30.root_pid, Some(10));
    assert_eq!(e30.root_namespace.as_deref(), Some(NS_A));
    assert_eq!(e30.blocker_pids, vec![20]);
    assert!(!e30.cross_invocation, "its direct blocker is its own run");
    assert_eq!(e30.victims_max, 2);
    assert_eq!(
        e30.timeline.len(),
        1,
        "nothing changed between the two samples"
    );
}

#[test]
fn severity_thresholds() {
    let w = waiter(20, NS_B, &[10], -40);
    let e = run(&[snap_at(1, vec![holder(10, NS_A), w], true)]);
    assert!(e[0].severe, "waiting 41 s");
    let w = waiter(20, NS_B, &[10], 0);
    let e = run(&[snap_at(1, vec![holder(10, NS_A), w], true)]);
    assert!(!e[0].severe);
}

// ---- properties over random sequences -------------------------------------------------------

/// One step of a random world: per waiter candidate, whether it waits and behind whom, whether the
/// server is readable, and how much time passes.
#[derive(Debug, Clone)]
struct Step {
    readable: bool,
    advance: i64,
    waits: Vec<Option<(i32, u8)>>, // (blocker pid, statement number)
    gone: Vec<bool>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::bool::weighted(0.85),
        prop_oneof![Just(1i64), Just(2), Just(45)],
        prop::collection::vec(prop::option::weighted(0.6, (10i32..13, 0u8..3)), 4),
        prop::collection::vec(prop::bool::weighted(0.1), 4),
    )
        .prop_map(|(readable, advance, waits, gone)| Step {
            readable,
            advance,
            waits,
            gone,
        })
}

fn world(steps: &[Step]) -> Vec<Snapshot> {
    let mut now = 0i64;
    let mut generation = [0i64; 4];
    let mut out = Vec::new();
    for st in steps {
        now += st.advance;
        let mut sessions: Vec<ObservedSession> = (10..13).map(|p| holder(p, NS_A)).collect();
        for (i, w) in st.waits.iter().enumerate() {
            if st.gone[i] {
                generation[i] += 1; // reconnects: a new backend with the same pid
                continue;
            }
            let pid = 20 + i as i32;
            let mut s = match w {
                Some((b, stmt)) => waiter(pid, NS_B, &[*b], *stmt as i64 * 100),
                None => finished(waiter(pid, NS_B, &[10], 0), now, "idle"),
            };
            s.backend_start = Some(t(-1000 + generation[i]));
            sessions.push(s);
        }
        out.push(snap_at(now, sessions, st.readable));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every observation of a session waiting (on a readable server) belongs to exactly one
    /// episode, and one waiter's episodes never overlap in time.
    #[test]
    fn every_wait_is_in_exactly_one_episode_and_episodes_do_not_overlap(
        steps in prop::collection::vec(step(), 1..25)
    ) {
        let snaps = world(&steps);
        let episodes = episodes_of(&snaps);
        let waiting: usize = snaps
            .iter()
            .map(|s| s.sessions.iter().filter(|x| !x.blocked_by.is_empty()).count())
            .sum();
        let samples: usize = episodes.iter().map(|e| e.samples).sum();
        prop_assert_eq!(waiting, samples);
        for (i, a) in episodes.iter().enumerate() {
            prop_assert!(a.first_seen_at <= a.last_seen_at);
            if a.outcome == Outcome::Unknown {
                prop_assert!(a.ended_at.is_none());
            }
            for b in &episodes[i + 1..] {
                let same = a.server == b.server
                    && a.waiter_pid == b.waiter_pid
                    && a.waiter_backend_start == b.waiter_backend_start;
                if same {
                    let disjoint = a.last_seen_at < b.first_seen_at || b.last_seen_at < a.first_seen_at;
                    prop_assert!(disjoint, "{:#?}\n{:#?}", a, b);
                }
            }
        }
    }
}

#[test]
fn an_extended_protocol_client_that_waited_in_parse_then_executed_acquired() {
    // The lock is taken while the statement is parsed; after the commit the client's Execute
    // starts a new `query_start` with the same text.
    let case = |text: &str, next_start_ms: i64| {
        let w = waiter(20, NS_B, &[10], 0);
        let h = holder(10, NS_A);
        let mut committed = h.clone();
        committed.xact_start = None;
        committed.state = Some("idle".into());
        committed.query = Some("COMMIT".into());
        committed.query_start = Some(t(1) + chrono::Duration::milliseconds(399));
        committed.state_change = Some(t(1) + chrono::Duration::milliseconds(400));
        let mut next = finished(w.clone(), 1, "idle");
        next.xact_start = None;
        next.query = Some(text.into());
        next.query_start = Some(t(1) + chrono::Duration::milliseconds(next_start_ms));
        next.state_change = Some(t(1) + chrono::Duration::milliseconds(next_start_ms + 1));
        run(&[
            snap_at(1, vec![h, w], true),
            snap_at(3, vec![committed, next], true),
        ])[0]
            .outcome
    };
    assert_eq!(case("LOCK TABLE accounts", 401), Outcome::Acquired);
    assert_eq!(
        case("SELECT 2", 401),
        Outcome::Unknown,
        "another statement: not provable"
    );
    assert_eq!(
        case("SELECT 2", 300),
        Outcome::GaveUp,
        "the next one began before the commit"
    );
}
