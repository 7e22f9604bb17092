use super::*;
use crate::domain::fixtures::{self, fixture_namespace};
use crate::domain::snapshot::{build_snapshot, Convention, Observation};
use proptest::prelude::*;

fn snap(obs: Observation) -> Snapshot {
    build_snapshot(obs, &Convention::default())
}

fn run(ns: &str) -> Selector {
    Selector::Invocation {
        namespace: ns.into(),
        worker: None,
        only_blocking: false,
    }
}

fn pids(plan: &SignalPlan) -> Vec<i32> {
    plan.targets.iter().map(|t| t.pid).collect()
}

#[test]
fn a_run_is_its_labeled_sessions_on_every_database() {
    let s = snap(fixtures::collision());
    let plan = plan_signal(&s, &run(&fixture_namespace(1)), Action::Terminate).unwrap();
    assert_eq!(pids(&plan), vec![101, 102], "platform and tenant_a");
    assert!(plan.actionable());
    assert_eq!(plan.targets[0].blocks, vec![201]);
    assert_eq!(plan.targets[0].via, "platform");
    // Run 2's worker gw0 carries a suffix (`_setup`): still its session.
    let plan = plan_signal(&s, &run(&fixture_namespace(2)), Action::Cancel).unwrap();
    assert_eq!(pids(&plan), vec![201, 202]);
}

#[test]
fn only_blocking_and_one_worker() {
    let s = snap(fixtures::collision());
    let sel = Selector::Invocation {
        namespace: fixture_namespace(1),
        worker: None,
        only_blocking: true,
    };
    assert_eq!(
        pids(&plan_signal(&s, &sel, Action::Terminate).unwrap()),
        vec![101]
    );
    let sel = Selector::Invocation {
        namespace: fixture_namespace(1),
        worker: Some("gw1".into()),
        only_blocking: false,
    };
    assert_eq!(
        pids(&plan_signal(&s, &sel, Action::Terminate).unwrap()),
        vec![102]
    );
}

#[test]
fn an_unread_database_means_nothing_is_signalled() {
    let s = snap(fixtures::unreachable());
    let plan = plan_signal(&s, &run(&fixture_namespace(1)), Action::Terminate).unwrap();
    assert_eq!(plan.unread, vec!["tenant_b".to_string()]);
    assert!(
        !plan.actionable(),
        "the run may have sessions on the unread server"
    );
    let report = build_signal_report(&plan, None);
    assert_eq!(report.status(), SignalStatus::Incomplete);
    // By pid, without naming the database: the pid could be on the unread server.
    let sel = Selector::Pid {
        pid: 101,
        database: None,
    };
    assert!(!plan_signal(&s, &sel, Action::Cancel).unwrap().actionable());
    // Naming a database that was read is enough.
    let sel = Selector::Pid {
        pid: 101,
        database: Some("platform".into()),
    };
    let plan = plan_signal(&s, &sel, Action::Cancel).unwrap();
    assert!(plan.actionable());
    assert_eq!(pids(&plan), vec![101]);
}

#[test]
fn unlabeled_sessions_only_by_pid_and_never_pgswarm_itself() {
    let s = snap(fixtures::collision());
    // 900 is `psql`: no run's session, but an explicit pid may name it.
    let sel = Selector::Pid {
        pid: 900,
        database: None,
    };
    assert_eq!(
        pids(&plan_signal(&s, &sel, Action::Cancel).unwrap()),
        vec![900]
    );
    // The same session, if it were one this process opened (known by pid, not by name).
    let mut obs = fixtures::collision();
    obs.sessions
        .iter_mut()
        .filter(|x| x.pid == 900)
        .for_each(|x| x.own = true);
    let plan = plan_signal(&snap(obs), &sel, Action::Cancel).unwrap();
    assert!(plan.targets.is_empty());
    assert_eq!(plan.refused[0].reason, "pgswarm's own session");
}

/// Issue 23: a session that merely calls itself `pgswarm` is not protected: only the pids this
/// process opened are.
#[test]
fn a_session_named_pgswarm_is_not_pgswarm() {
    let mut obs = fixtures::collision();
    obs.sessions
        .iter_mut()
        .filter(|x| x.pid == 900)
        .for_each(|x| x.application_name = "pgswarm".into());
    let sel = Selector::Pid {
        pid: 900,
        database: None,
    };
    let plan = plan_signal(&snap(obs), &sel, Action::Terminate).unwrap();
    assert_eq!(pids(&plan), vec![900], "{plan:?}");
}

#[test]
fn hidden_identities_and_other_backend_types_are_refused() {
    let s = snap(fixtures::permission_limited());
    // 202 is beyond the first three sessions: its backend type and (here) start are hidden.
    let sel = Selector::Pid {
        pid: 202,
        database: None,
    };
    let plan = plan_signal(&s, &sel, Action::Terminate).unwrap();
    assert!(plan.targets.is_empty(), "{plan:?}");
    assert!(plan.refused[0].reason.contains("not visible"), "{plan:?}");
    let mut obs = fixtures::collision();
    obs.sessions[0].backend_type = Some("autovacuum worker".into());
    let plan = plan_signal(
        &snap(obs),
        &Selector::Pid {
            pid: 101,
            database: None,
        },
        Action::Terminate,
    )
    .unwrap();
    assert!(plan.refused[0].reason.contains("not a client backend"));
}

#[test]
fn bad_selections_are_usage_errors_naming_the_value() {
    let s = snap(fixtures::collision());
    let e = plan_signal(
        &s,
        &Selector::Pid {
            pid: 4242,
            database: None,
        },
        Action::Cancel,
    )
    .unwrap_err();
    assert!(e.to_string().contains("4242"), "{e}");
    let e = plan_signal(
        &s,
        &Selector::Pid {
            pid: 101,
            database: Some("nope".into()),
        },
        Action::Cancel,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("\"nope\"") && e.to_string().contains("platform"),
        "{e}"
    );
}

#[test]
fn the_same_pid_on_two_servers_must_be_disambiguated() {
    let mut obs = fixtures::synthetic(40, 4, 2, 2);
    let pid = obs.sessions[0].pid;
    let other = obs
        .sessions
        .iter()
        .position(|s| s.server != obs.sessions[0].server)
        .unwrap();
    obs.sessions[other].pid = pid;
    let s = snap(obs);
    let e = plan_signal(
        &s,
        &Selector::Pid {
            pid,
            database: None,
        },
        Action::Cancel,
    )
    .unwrap_err();
    assert!(matches!(e, PlanError::AmbiguousPid { .. }), "{e}");
    let db = s
        .sessions
        .iter()
        .find(|x| x.pid == pid)
        .unwrap()
        .database
        .clone();
    let plan = plan_signal(
        &s,
        &Selector::Pid {
            pid,
            database: Some(db),
        },
        Action::Cancel,
    )
    .unwrap();
    assert_eq!(plan.targets.len(), 1);
}

#[test]
fn report_sorting_and_exit_status() {
    let s = snap(fixtures::collision());
    let plan = plan_signal(&s, &run(&fixture_namespace(1)), Action::Terminate).unwrap();
    let outcomes = vec![
        (
            plan.targets[0].clone(),
            Outcome::Signalled {
                exited: Some(true),
                idle_in_transaction: false,
            },
        ),
        (
            plan.targets[1].clone(),
            Outcome::Failed {
                sqlstate: Some("42501".into()),
                error: "permission denied".into(),
                hint: Some(privilege_hint("permission denied", "ci")),
            },
        ),
    ];
    let r = build_signal_report(&plan, Some(&outcomes));
    assert_eq!((r.signalled.len(), r.failed.len()), (1, 1));
    assert_eq!(r.status(), SignalStatus::SomeFailed);
    assert!(r.failed[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("GRANT pg_signal_backend TO ci"));
    let json = serde_json::to_value(&r).unwrap();
    for k in [
        "server",
        "database",
        "pid",
        "backend_start",
        "application_name",
    ] {
        assert!(json["signalled"][0].get(k).is_some(), "{k}");
    }
    assert_eq!(json["failed"][0]["sqlstate"], "42501");
    let r = build_signal_report(&plan, Some(&outcomes[..1]));
    assert_eq!(r.status(), SignalStatus::Done);
}

proptest! {
    /// Whatever the swarm and the selection: every target is a visible client backend of the
    /// selected run (by its parsed label) on a read server, never pgswarm's own, each at most once;
    /// and with any database unread, a run's plan is not actionable.
    #[test]
    fn targets_are_exactly_the_selected_visible_client_sessions(
        sessions in 1usize..120,
        invocations in 1usize..12,
        servers in 1usize..3,
        pick in 0usize..12,
        only_blocking: bool,
        hide in prop::collection::vec(any::<bool>(), 0..120),
        break_db: bool,
    ) {
        let mut obs = fixtures::synthetic(sessions, invocations, 2 * servers, servers);
        for (s, h) in obs.sessions.iter_mut().zip(&hide) {
            if *h {
                s.backend_start = None;
            }
        }
        if break_db {
            obs.databases[0].outcome = Err("connection refused".into());
        }
        let s = snap(obs);
        let ns = fixture_namespace(pick % invocations);
        let sel = Selector::Invocation { namespace: ns.clone(), worker: None, only_blocking };
        let plan = plan_signal(&s, &sel, Action::Terminate).unwrap();
        if break_db {
            prop_assert!(!plan.actionable());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &plan.targets {
            prop_assert!(seen.insert((t.server.clone(), t.pid)));
            let x = s.sessions.iter().find(|x| x.server == t.server && x.pid == t.pid).unwrap();
            prop_assert_eq!(x.namespace.as_deref(), Some(ns.as_str()));
            prop_assert_eq!(x.label, LabelKind::Labeled);
            prop_assert_eq!(x.backend_type.as_deref(), Some("client backend"));
            prop_assert_eq!(x.backend_start, Some(t.backend_start));
            prop_assert!(!only_blocking || !x.blocking.is_empty());
            prop_assert!(!x.own);
        }
        // Every selected session is a target or refused, with a reason.
        let selected = s.sessions.iter().filter(|x| {
            x.label == LabelKind::Labeled
                && x.namespace.as_deref() == Some(ns.as_str())
                && (!only_blocking || !x.blocking.is_empty())
        }).count();
        prop_assert_eq!(selected, plan.targets.len() + plan.refused.len());
    }
}

/// Issue 23: pid 0 (a prepared transaction, as `pg_blocking_pids` reports it) is refused with
/// the statement that ends it, and its gid when the snapshot has it.
#[test]
fn pid_zero_is_a_prepared_transaction_and_says_how_to_end_it() {
    let mut obs = fixtures::collision();
    obs.servers[0]
        .health
        .prepared
        .push(crate::domain::snapshot::PreparedXact {
            gid: "stuck-42".into(),
            owner: Some("ci".into()),
            database: Some("platform".into()),
            prepared_at: Some(fixtures::fixture_now()),
        });
    let sel = Selector::Pid {
        pid: 0,
        database: None,
    };
    let e = plan_signal(&snap(obs), &sel, Action::Terminate).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("ROLLBACK PREPARED"), "{text}");
    assert!(text.contains("\"stuck-42\""), "{text}");
}

/// Issue 27: a cancel of an idle-in-transaction root releases nothing; the plan says so per target,
/// the report never counts it as helping, and a terminate of the same session is not flagged.
#[test]
fn a_cancel_of_a_session_idle_in_transaction_releases_nothing_and_says_so() {
    let s = snap(fixtures::collision());
    let by_pid = |pid| Selector::Pid {
        pid,
        database: Some("platform".into()),
    };
    let plan = plan_signal(&s, &by_pid(101), Action::Cancel).unwrap();
    assert_eq!(pids(&plan), vec![101]);
    assert_eq!(
        plan.releasing_nothing()
            .iter()
            .map(|t| t.pid)
            .collect::<Vec<_>>(),
        vec![101]
    );
    let report = build_signal_report(&plan, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["planned"][0]["releases_nothing"], true);
    assert_eq!(json["planned"][0]["note"], IDLE_CANCEL_NOTE);

    // The waiter runs a statement: a cancel helps there, and nothing is flagged.
    let waiter = plan_signal(&s, &by_pid(201), Action::Cancel).unwrap();
    assert!(waiter.releasing_nothing().is_empty());
    let json = serde_json::to_value(build_signal_report(&waiter, None)).unwrap();
    assert!(json["planned"][0].get("releases_nothing").is_none());
    assert!(json["planned"][0].get("note").is_none());
    // A terminate ends the transaction: it helps.
    let terminate = plan_signal(&s, &by_pid(101), Action::Terminate).unwrap();
    assert!(terminate.releasing_nothing().is_empty());

    // Sent while idle in transaction: released nothing, not signalled; the exit stays 0.
    let sent = |idle| {
        vec![(
            plan.targets[0].clone(),
            Outcome::Signalled {
                exited: None,
                idle_in_transaction: idle,
            },
        )]
    };
    let r = build_signal_report(&plan, Some(&sent(true)));
    assert!(r.signalled.is_empty(), "{r:?}");
    assert_eq!(r.released_nothing.len(), 1);
    assert_eq!(r.status(), SignalStatus::Done);
    let notes = r.notes();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1, IDLE_CANCELLED_NOTE);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["released_nothing"][0]["pid"], 101);
    assert_eq!(json["released_nothing"][0]["releases_nothing"], true);
    assert_eq!(json["signalled"], serde_json::json!([]));
    // It had started a statement by the time the cancel went out: that cancel helped.
    let r = build_signal_report(&plan, Some(&sent(false)));
    assert_eq!((r.signalled.len(), r.released_nothing.len()), (1, 0));
    // A terminate of an idle-in-transaction session is a plain signal.
    let r = build_signal_report(
        &terminate,
        Some(&[(
            terminate.targets[0].clone(),
            Outcome::Signalled {
                exited: Some(true),
                idle_in_transaction: true,
            },
        )]),
    );
    assert_eq!((r.signalled.len(), r.released_nothing.len()), (1, 0));
}

#[test]
fn idle_in_transaction_states() {
    assert!(is_idle_in_transaction(Some("idle in transaction")));
    assert!(is_idle_in_transaction(Some(
        "idle in transaction (aborted)"
    )));
    for s in [Some("active"), Some("idle"), None] {
        assert!(!is_idle_in_transaction(s), "{s:?}");
    }
}
