//! The dashboard state machine: key sequences and polls in, state and effects out. No terminal.

use chrono::Duration as ChronoDuration;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pgswarm::domain::fixtures::{self, fixture_namespace, fixture_now};
use pgswarm::domain::snapshot::{Convention, Observation};
use pgswarm::pg::poller::GroupResult;
use pgswarm::tui::app::{App, Effect, Event, Overlay, Pane, RowKey, FREEZE};
use std::time::Duration;

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn ch(c: char) -> Event {
    key(KeyCode::Char(c))
}

fn poll(obs: Observation, secs_after: i64) -> Event {
    Event::Poll(
        GroupResult {
            group: 0,
            observation: obs,
            elapsed: Duration::from_millis(3),
        },
        fixture_now() + ChronoDuration::seconds(secs_after),
    )
}

fn app_with(obs: Observation) -> App {
    let names = obs.databases.iter().map(|d| d.name.clone()).collect();
    let mut app = App::new(
        Convention::default(),
        names,
        1,
        Duration::from_secs(1),
        fixture_now(),
    );
    assert!(app.loading());
    app.update(poll(obs, 0));
    assert!(!app.loading());
    app
}

fn invocation_order(app: &App) -> Vec<RowKey> {
    app.model.keys(Pane::Invocations)
}

#[test]
fn navigation_moves_selection_and_clamps() {
    let mut app = app_with(fixtures::collision());
    let keys = invocation_order(&app);
    assert_eq!(app.selected_key(Pane::Invocations), Some(keys[0].clone()));
    app.update(ch('j'));
    app.update(key(KeyCode::Down));
    assert_eq!(app.selected_key(Pane::Invocations), Some(keys[2].clone()));
    app.update(ch('k'));
    assert_eq!(app.selected_key(Pane::Invocations), Some(keys[1].clone()));
    app.update(ch('G'));
    assert_eq!(app.selected_key(Pane::Invocations), keys.last().cloned());
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.selected_key(Pane::Invocations), keys.last().cloned());
    app.update(ch('g'));
    assert_eq!(app.selected_key(Pane::Invocations), Some(keys[0].clone()));
}

#[test]
fn selection_follows_the_item_and_order_freezes_while_navigating() {
    let mut app = app_with(fixtures::collision());
    let before = invocation_order(&app);
    // Select the fourth invocation (crashed: no sessions, sorted low).
    app.update(ch('j'));
    app.update(ch('j'));
    app.update(ch('j'));
    let chosen = app.selected_key(Pane::Invocations).unwrap();
    assert_eq!(chosen, RowKey::Invocation(fixture_namespace(9)));

    // A new poll where that invocation is back with three sessions, one blocked: it sorts to the top.
    let mut obs = fixtures::collision();
    let ns9 = fixture_namespace(9);
    for (i, worker) in ["gw0", "gw1", "gw2"].iter().enumerate() {
        let mut s = obs.sessions[4].clone();
        s.pid = 900 + i as i32 + 10;
        s.application_name = format!("pytest_{worker}_{ns9}");
        if i == 2 {
            s.blocked_by = vec![101];
        }
        obs.sessions.push(s);
    }
    app.update(poll(obs.clone(), 1));
    // Still frozen (we just navigated): same order, same selection.
    assert_eq!(invocation_order(&app), before);
    assert_eq!(app.selected_key(Pane::Invocations), Some(chosen.clone()));

    // After the freeze, rows re-sort, but the cursor stays on the same invocation.
    let later =
        fixture_now() + ChronoDuration::from_std(FREEZE).unwrap() + ChronoDuration::seconds(2);
    app.update(Event::Tick(later));
    let after = invocation_order(&app);
    assert_ne!(after, before, "the blocked invocation moved up");
    assert_eq!(after[0], RowKey::Invocation(fixture_namespace(9)));
    assert_eq!(app.selected_key(Pane::Invocations), Some(chosen));
}

#[test]
fn panes_detail_help_and_back() {
    let mut app = app_with(fixtures::collision());
    // Screen order: invocations, schemas (top row), lock trees, incidents.
    assert_eq!(app.focus, Pane::Invocations);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Schemas);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Locks);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Incidents);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Invocations);
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.focus, Pane::Incidents);
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.focus, Pane::Locks);

    app.update(ch('j'));
    app.update(key(KeyCode::Enter));
    match &app.overlay {
        Overlay::Detail(RowKey::Lock { pid, parent, .. }) => {
            assert_eq!((*pid, *parent), (201, Some(101)));
        }
        other => panic!("expected a session detail, got {other:?}"),
    }
    // Navigation keys do nothing under an overlay; Esc closes it.
    app.update(ch('j'));
    assert!(matches!(app.overlay, Overlay::Detail(_)));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.overlay, Overlay::None);
    app.update(ch('?'));
    assert_eq!(app.overlay, Overlay::Help);
    app.update(ch('?'));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn filter_narrows_every_pane_and_escape_clears_it() {
    let mut app = app_with(fixtures::collision());
    let all = invocation_order(&app).len();
    app.update(ch('/'));
    assert!(app.filter_editing);
    for c in fixture_namespace(2).chars().take(8) {
        app.update(ch(c));
    }
    // Typing 'q' or 'j' while editing is text, not a command.
    assert!(!app.quit);
    app.update(key(KeyCode::Enter));
    assert!(!app.filter_editing);
    let rows = invocation_order(&app);
    assert_eq!(rows, vec![RowKey::Invocation(fixture_namespace(2))]);
    assert!(rows.len() < all);
    assert_eq!(app.model.locks.len(), 2, "the tree the invocation is in");
    app.update(key(KeyCode::Esc));
    assert!(app.filter.is_empty());
    assert_eq!(invocation_order(&app).len(), all);

    app.update(ch('/'));
    for c in "tenant_a".chars() {
        app.update(ch(c));
    }
    app.update(key(KeyCode::Backspace));
    assert_eq!(app.filter, "tenant_");
    assert!(app
        .model
        .schemas
        .iter()
        .all(|(k, _)| matches!(k, RowKey::Schema { database, .. } if database == "tenant_a")));
}

#[test]
fn pause_holds_the_display_and_resume_shows_the_newest() {
    let mut app = app_with(fixtures::collision());
    app.update(ch('p'));
    assert!(app.paused);
    app.update(poll(fixtures::empty(), 1));
    assert!(app.stale_while_paused);
    assert!(
        !app.model.invocations.is_empty(),
        "display frozen while paused"
    );
    app.update(ch('p'));
    assert!(!app.paused && !app.stale_while_paused);
    assert!(
        app.model.invocations.is_empty(),
        "newest poll shown on resume"
    );
}

#[test]
fn effects_refresh_interval_and_quit() {
    let mut app = app_with(fixtures::collision());
    assert_eq!(app.update(ch('r')), vec![Effect::Refresh]);
    assert_eq!(
        app.update(ch('+')),
        vec![Effect::SetInterval(Duration::from_millis(500))]
    );
    assert_eq!(
        app.update(ch('+')),
        vec![Effect::SetInterval(Duration::from_millis(250))]
    );
    assert_eq!(app.update(ch('+')), vec![], "0.25 s is the floor");
    for _ in 0..10 {
        app.update(ch('-'));
    }
    assert_eq!(app.interval, Duration::from_secs(60), "60 s is the ceiling");
    assert_eq!(app.update(ch('q')), vec![Effect::Quit]);
    assert!(app.quit);

    let mut app = app_with(fixtures::collision());
    app.update(ch('/'));
    let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(
        app.update(ctrl_c),
        vec![Effect::Quit],
        "Ctrl-C quits even while typing"
    );
}

#[test]
fn unreachable_since_is_kept_until_the_database_returns() {
    let mut app = app_with(fixtures::unreachable());
    let first = app.unreachable_since.get("tenant_b").copied().unwrap();
    app.update(poll(fixtures::unreachable(), 5));
    assert_eq!(app.unreachable_since.get("tenant_b"), Some(&first));
    let mut back = fixtures::unreachable();
    let recovered = fixtures::collision().databases[0].outcome.clone();
    back.databases.last_mut().unwrap().outcome = recovered;
    app.update(poll(back, 10));
    assert!(!app.unreachable_since.contains_key("tenant_b"));
    assert!(app.last_good_poll.is_some());
}

fn sweep_plan(obs: Observation) -> pgswarm::domain::sweep::SweepPlan {
    pgswarm::domain::sweep::plan_sweep(
        &pgswarm::domain::snapshot::build_snapshot(obs, &Convention::default()),
        &pgswarm::domain::sweep::SweepRules::default(),
        fixture_now() + ChronoDuration::hours(1),
    )
}

#[test]
fn sweep_key_plans_capital_y_runs_exactly_the_plan_shown() {
    use pgswarm::tui::app::SweepView;
    let mut app = app_with(fixtures::collision());
    assert_eq!(app.update(ch('S')), vec![Effect::PlanSweep(1)]);
    assert_eq!(app.overlay, Overlay::Sweep(SweepView::Planning));
    let plan = sweep_plan(fixtures::collision());
    assert_eq!(plan.drop_count(), 2);
    app.update(Event::SweepPlanned(1, Box::new(plan.clone())));
    assert_eq!(
        app.overlay,
        Overlay::Sweep(SweepView::Plan(Box::new(plan.clone())))
    );

    // Polls during the confirmation do not change the plan being confirmed.
    app.update(poll(fixtures::empty(), 3));
    assert_eq!(
        app.overlay,
        Overlay::Sweep(SweepView::Plan(Box::new(plan.clone())))
    );

    // Lower-case y is not confirmation: it cancels.
    assert_eq!(app.update(ch('y')), vec![]);
    assert_eq!(app.overlay, Overlay::None);

    assert_eq!(app.update(ch('S')), vec![Effect::PlanSweep(2)]);
    app.update(Event::SweepPlanned(2, Box::new(plan.clone())));
    assert_eq!(
        app.update(ch('Y')),
        vec![Effect::RunSweep(Box::new(plan.clone()))]
    );
    assert!(matches!(
        app.overlay,
        Overlay::Sweep(SweepView::Running { done: 0, .. })
    ));
    app.update(ch('q'));
    assert!(!app.quit, "a stray key does not interrupt a running sweep");
    app.update(Event::SweepProgress {
        done: 1,
        current: Some("platform.x".into()),
    });
    assert!(matches!(
        app.overlay,
        Overlay::Sweep(SweepView::Running { done: 1, .. })
    ));
    let report = pgswarm::domain::sweep::build_report(
        &plan,
        &[],
        pgswarm::domain::sweep::RunMode::Executed,
        pgswarm::domain::sweep::Timings::default(),
    );
    assert_eq!(
        app.update(Event::SweepFinished(Box::new(report))),
        vec![Effect::Refresh]
    );
    assert!(matches!(
        app.overlay,
        Overlay::Sweep(SweepView::Finished(_))
    ));
    app.update(ch('x'));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn sweep_is_disabled_read_only_and_refused_on_an_incomplete_plan() {
    use pgswarm::tui::app::SweepView;
    let mut app = app_with(fixtures::collision());
    app.read_only = true;
    assert_eq!(app.update(ch('S')), vec![]);
    assert_eq!(app.overlay, Overlay::Sweep(SweepView::Disabled));
    app.update(ch('Y'));
    assert_eq!(app.overlay, Overlay::None);

    let mut app = app_with(fixtures::unreachable());
    app.update(ch('S'));
    let plan = sweep_plan(fixtures::unreachable());
    assert!(!plan.active_detection_complete);
    app.update(Event::SweepPlanned(1, Box::new(plan)));
    assert_eq!(
        app.update(ch('Y')),
        vec![],
        "an incomplete plan cannot be run"
    );
    assert_eq!(app.overlay, Overlay::None);

    // A plan that arrives after the user cancelled is not shown.
    assert_eq!(app.update(ch('S')), vec![Effect::PlanSweep(2)]);
    app.update(key(KeyCode::Esc));
    app.update(Event::SweepPlanned(
        2,
        Box::new(sweep_plan(fixtures::collision())),
    ));
    assert_eq!(app.overlay, Overlay::None);

    // A plan from an earlier request never stands in for the one the user is waiting for.
    assert_eq!(app.update(ch('S')), vec![Effect::PlanSweep(3)]);
    app.update(Event::SweepPlanned(
        2,
        Box::new(sweep_plan(fixtures::collision())),
    ));
    assert_eq!(app.overlay, Overlay::Sweep(SweepView::Planning));
    // While one discovery runs, pressing S again waits for it rather than starting another.
    app.update(key(KeyCode::Esc));
    assert_eq!(app.update(ch('S')), vec![]);
    app.update(Event::SweepPlanned(
        3,
        Box::new(sweep_plan(fixtures::collision())),
    ));
    assert!(matches!(app.overlay, Overlay::Sweep(SweepView::Plan(_))));
}

fn recording(n: usize) -> Vec<pgswarm::domain::snapshot::Snapshot> {
    (0..n)
        .map(|i| {
            let mut o = if i % 2 == 0 {
                fixtures::collision()
            } else {
                fixtures::empty()
            };
            o.taken_at = fixture_now() + ChronoDuration::seconds(10 * i as i64);
            pgswarm::domain::snapshot::build_snapshot(o, &Convention::default())
        })
        .collect()
}

#[test]
fn replay_plays_steps_seeks_and_never_sweeps() {
    use pgswarm::tui::app::SweepView;
    let start = fixture_now();
    let mut app = App::new_replay(Convention::default(), recording(20), start);
    let pos = |a: &App| a.replay.as_ref().unwrap().pos;
    assert_eq!(pos(&app), 0);
    assert!(app.replay.as_ref().unwrap().playing);
    // 25 s of real time at 1x: the recorded clock moves 25 s, snapshot 2 (t = 20 s) shows.
    app.update(Event::Tick(start + ChronoDuration::seconds(25)));
    assert_eq!(pos(&app), 2);
    app.update(ch('+'));
    assert_eq!(app.replay.as_ref().unwrap().speed, 2.0);
    app.update(Event::Tick(start + ChronoDuration::seconds(35)));
    assert_eq!(pos(&app), 4, "10 s at 2x = 20 s recorded");
    app.update(ch(' '));
    app.update(Event::Tick(start + ChronoDuration::seconds(100)));
    assert_eq!(pos(&app), 4, "paused");
    app.update(ch('.'));
    assert_eq!(pos(&app), 5);
    assert!(
        app.model.invocations.is_empty(),
        "snapshot 5 is the empty one"
    );
    app.update(ch(','));
    app.update(ch(','));
    assert_eq!(pos(&app), 3);
    app.update(ch(']'));
    assert_eq!(pos(&app), 9, "one minute forward");
    app.update(ch('['));
    app.update(ch('['));
    assert_eq!(pos(&app), 0, "clamped at the start");
    for _ in 0..10 {
        app.update(ch(']'));
    }
    assert_eq!(pos(&app), 19, "clamped at the end");
    assert!(!app.replay.as_ref().unwrap().playing);
    assert_eq!(
        app.update(ch('S')),
        vec![],
        "nothing touches a database in replay"
    );
    assert_eq!(app.overlay, Overlay::Sweep(SweepView::Disabled));
}

/// Issue 11, finding 2: until every poller group has reported, the snapshot is not complete, names
/// what is not read yet, and calls no schema orphaned.
#[test]
fn a_snapshot_before_every_group_has_answered_is_incomplete() {
    use pgswarm::domain::aggregate::Aggregator;
    use pgswarm::domain::snapshot::SchemaStatus;
    let mut obs = fixtures::collision();
    // Group 0 polls `platform` only; `tenant_a` belongs to group 1, which has not answered yet.
    obs.databases.retain(|d| d.name == "platform");
    obs.schemas.retain(|s| s.database == "platform");
    let names = vec!["platform".to_string(), "tenant_a".to_string()];
    let mut agg = Aggregator::new(Convention::default(), names, 2);
    let s = agg.accept(0, obs);
    assert!(!s.active_detection_complete);
    let t = s.databases.iter().find(|d| d.name == "tenant_a").unwrap();
    assert!(t.not_read_yet && !t.reachable);
    assert!(s.schemas.iter().all(|x| x.status != SchemaStatus::Orphaned));
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("not read yet") && w.contains("tenant_a")));
    // The dashboard does not start an "unreachable since" clock for it.
    let mut app = app_with(fixtures::empty());
    app.update(Event::Snapshot(
        std::sync::Arc::new(s),
        vec![],
        fixture_now(),
    ));
    assert!(!app.unreachable_since.contains_key("tenant_a"));
}

/// The collision observed, then the waiter giving up: the episodes a stream would deliver.
fn collision_episodes() -> (
    Vec<pgswarm::domain::incidents::Episode>,
    Vec<pgswarm::domain::incidents::Episode>,
) {
    use pgswarm::domain::incidents::EpisodeTracker;
    use pgswarm::domain::snapshot::build_snapshot;
    let mut tracker = EpisodeTracker::new();
    tracker.observe(&build_snapshot(
        fixtures::collision(),
        &Convention::default(),
    ));
    let ongoing = tracker.ongoing();
    let ended = tracker.observe(&build_snapshot(
        fixtures::collision_gave_up(),
        &Convention::default(),
    ));
    (ongoing, ended)
}

#[test]
fn the_bell_rings_once_per_new_collision_and_only_when_asked() {
    let (ongoing, ended) = collision_episodes();
    assert!(ongoing[0].cross_invocation);
    let mut app = app_with(fixtures::collision());
    let episodes = |ongoing: &Vec<_>, ended: &Vec<_>| Event::Episodes {
        ongoing: ongoing.clone(),
        ended: ended.clone(),
    };
    assert_eq!(app.update(episodes(&ongoing, &vec![])), vec![], "no --bell");
    let mut app = app_with(fixtures::collision());
    app.bell = true;
    assert_eq!(app.update(episodes(&ongoing, &vec![])), vec![Effect::Bell]);
    assert_eq!(
        app.update(episodes(&ongoing, &vec![])),
        vec![],
        "the same wait rings once"
    );
    assert_eq!(
        app.update(episodes(&vec![], &ended)),
        vec![],
        "its end does not ring again"
    );
    assert_eq!(app.episodes.len(), 1);
    assert_eq!(app.model.incidents.len(), 1);
}

#[test]
fn the_filter_applies_to_incidents() {
    let (_, ended) = collision_episodes();
    let mut app = app_with(fixtures::collision());
    app.update(Event::Episodes {
        ended,
        ongoing: vec![],
    });
    assert_eq!(app.model.incidents.len(), 1);
    app.update(ch('/'));
    for c in fixture_namespace(3).chars() {
        app.update(ch(c));
    }
    assert_eq!(
        app.model.incidents.len(),
        0,
        "neither waiter nor blocker is that run"
    );
    app.update(key(KeyCode::Esc));
    app.update(ch('/'));
    for c in fixture_namespace(1).chars() {
        app.update(ch(c));
    }
    assert_eq!(app.model.incidents.len(), 1, "the blocker's run matches");
}

#[test]
fn a_replay_shows_the_waits_ended_by_its_clock() {
    use pgswarm::domain::snapshot::build_snapshot;
    let conv = Convention::default();
    let snaps = vec![
        build_snapshot(fixtures::collision(), &conv),
        build_snapshot(fixtures::collision_gave_up(), &conv),
    ];
    let mut app = App::new_replay(conv, snaps, fixture_now());
    assert!(
        app.model.incidents.is_empty(),
        "at the start nothing has ended"
    );
    app.update(ch('.'));
    assert_eq!(app.model.incidents.len(), 1);
    app.update(ch(','));
    assert!(app.model.incidents.is_empty());
}

/// Selects the invocation row of `ns` in the Invocations pane.
fn select_invocation(app: &mut App, ns: &str) {
    let target = RowKey::Invocation(ns.to_string());
    let i = invocation_order(app)
        .iter()
        .position(|k| *k == target)
        .expect("the invocation is listed");
    app.update(ch('g'));
    for _ in 0..i {
        app.update(ch('j'));
    }
    assert_eq!(app.selected_key(Pane::Invocations), Some(target));
}

#[test]
fn terminating_an_invocation_shows_exactly_whom_and_sends_that_plan_on_capital_y() {
    use pgswarm::domain::signal::{build_signal_report, Outcome};
    use pgswarm::tui::app::SignalView;
    let mut app = app_with(fixtures::collision());
    select_invocation(&mut app, &fixture_namespace(1));
    assert_eq!(app.update(ch('K')), vec![], "nothing is sent before Y");
    let Overlay::Signal(SignalView::Plan(plan)) = &app.overlay else {
        panic!("{:?}", app.overlay)
    };
    let pids: Vec<i32> = plan.targets.iter().map(|t| t.pid).collect();
    assert_eq!(pids, vec![101, 102], "its sessions on both databases");
    // `b`: only the session blocking someone.
    app.update(ch('b'));
    let Overlay::Signal(SignalView::Plan(plan)) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(
        plan.targets.iter().map(|t| t.pid).collect::<Vec<_>>(),
        vec![101]
    );
    // A poll meanwhile does not change the plan on screen.
    app.update(poll(fixtures::collision_gave_up(), 1));
    assert_eq!(app.overlay, Overlay::Signal(SignalView::Plan(plan.clone())));
    let effects = app.update(ch('Y'));
    assert_eq!(
        effects,
        vec![Effect::Signal(plan.clone())],
        "exactly the plan shown"
    );
    assert!(matches!(
        app.overlay,
        Overlay::Signal(SignalView::Running(_))
    ));
    assert_eq!(
        app.update(ch('x')),
        vec![],
        "a stray key does not interrupt"
    );
    let outcomes = vec![(
        plan.targets[0].clone(),
        Outcome::Signalled {
            exited: Some(true),
            idle_in_transaction: false,
        },
    )];
    let report = build_signal_report(&plan, Some(&outcomes));
    let effects = app.update(Event::SignalDone(Box::new(report)));
    assert_eq!(effects, vec![Effect::Refresh]);
    assert!(matches!(
        app.overlay,
        Overlay::Signal(SignalView::Finished(_))
    ));
    app.update(ch('x'));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn cancelling_a_session_from_the_lock_tree_and_from_its_detail() {
    use pgswarm::tui::app::SignalView;
    let mut app = app_with(fixtures::collision());
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Locks);
    let Some(RowKey::Lock { pid, .. }) = app.selected_key(Pane::Locks) else {
        panic!("a lock row is selected")
    };
    app.update(ch('c'));
    let Overlay::Signal(SignalView::Plan(plan)) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(plan.targets.len(), 1);
    assert_eq!(plan.targets[0].pid, pid);
    // Any other key cancels: nothing sent.
    assert_eq!(app.update(ch('n')), vec![]);
    assert_eq!(app.overlay, Overlay::None);
    // From the session's detail.
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::Detail(RowKey::Lock { .. })));
    app.update(ch('K'));
    assert!(matches!(app.overlay, Overlay::Signal(SignalView::Plan(_))));
}

#[test]
fn read_only_and_replay_disable_cancel_and_terminate() {
    use pgswarm::domain::snapshot::build_snapshot;
    use pgswarm::tui::app::SignalView;
    let mut app = app_with(fixtures::collision());
    app.read_only = true;
    select_invocation(&mut app, &fixture_namespace(1));
    assert_eq!(app.update(ch('K')), vec![]);
    assert_eq!(app.overlay, Overlay::Signal(SignalView::Disabled));
    assert_eq!(
        app.update(ch('Y')),
        vec![],
        "Y on the disabled overlay sends nothing"
    );
    let conv = Convention::default();
    let mut replay = App::new_replay(
        conv.clone(),
        vec![build_snapshot(fixtures::collision(), &conv)],
        fixture_now(),
    );
    replay.update(ch('K'));
    assert_eq!(replay.overlay, Overlay::Signal(SignalView::Disabled));
    // An incomplete picture: the plan is shown but Y sends nothing.
    let mut app = app_with(fixtures::unreachable());
    select_invocation(&mut app, &fixture_namespace(1));
    app.update(ch('K'));
    let Overlay::Signal(SignalView::Plan(plan)) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert!(!plan.unread.is_empty());
    assert_eq!(app.update(ch('Y')), vec![]);
}

#[test]
fn o_cycles_the_invocation_order_and_the_unlabeled_group_stays_last() {
    use pgswarm::tui::app::InvocationSort;
    let mut app = app_with(fixtures::collision());
    let trouble = invocation_order(&app);
    app.update(ch('o'));
    assert_eq!(app.sort, InvocationSort::Age);
    let by_age = invocation_order(&app);
    // fixture_namespace(i) started i+1 minutes before now: the oldest is 9.
    assert_eq!(by_age[0], RowKey::Invocation(fixture_namespace(9)));
    assert_eq!(by_age.last(), Some(&RowKey::OtherSessions));
    app.update(ch('o'));
    assert_eq!(
        invocation_order(&app)[0],
        RowKey::Invocation(fixture_namespace(2)),
        "the blocked run first"
    );
    app.update(ch('o'));
    app.update(ch('o'));
    assert_eq!(app.sort, InvocationSort::Name);
    let names = invocation_order(&app);
    let mut sorted = names.clone();
    sorted.sort_by_key(|k| match k {
        RowKey::Invocation(ns) => (false, ns.clone()),
        _ => (true, String::new()),
    });
    assert_eq!(names, sorted);
    app.update(ch('o'));
    assert_eq!(invocation_order(&app), trouble, "and back");
}

/// Issue 27: something becomes blocked while the user has not touched a key since the last calm
/// picture: the focus goes to Lock trees, on the first root. A key pressed since keeps it where
/// the user left it.
#[test]
fn the_focus_follows_new_trouble_until_the_user_moves() {
    let mut app = app_with(fixtures::empty());
    assert_eq!(app.focus, Pane::Invocations);
    app.update(poll(fixtures::collision(), 1));
    assert_eq!(
        app.focus,
        Pane::Locks,
        "nothing pressed since the calm picture"
    );
    assert!(matches!(
        app.selected_key(Pane::Locks),
        Some(RowKey::Lock { pid: 101, .. })
    ));
    // Calm again, then a key: the next trouble leaves the focus alone.
    app.update(poll(fixtures::empty(), 2));
    app.update(key(KeyCode::Tab));
    let chosen = app.focus;
    app.update(poll(fixtures::collision(), 3));
    assert_eq!(app.focus, chosen, "the user moved: the focus stays");
    // Trouble already on screen at start is not "becoming blocked": no jump.
    let app = app_with(fixtures::collision());
    assert_eq!(app.focus, Pane::Invocations);
}

/// Issue 27: the detail of a session that has left shows it as last seen, links to its ended lock
/// wait with `e`, and the wait's detail links back.
#[test]
fn a_detail_outlives_its_session_and_links_to_the_ended_wait() {
    let mut app = app_with(fixtures::busy_before());
    // Lock trees, the first tree: 101, then its victims 201, 202, 601, 602 in some order.
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Locks);
    let pos = app
        .model
        .keys(Pane::Locks)
        .iter()
        .position(|k| matches!(k, RowKey::Lock { pid: 601, .. }))
        .unwrap();
    for _ in 0..pos {
        app.update(ch('j'));
    }
    app.update(key(KeyCode::Enter));
    let Overlay::Detail(opened) = app.overlay.clone() else {
        panic!("detail open: {:?}", app.overlay)
    };
    assert_eq!(opened.session(), Some(("db0.internal:5432", 601)));
    // 601 leaves while its detail is open; the tracker reports its wait as ended.
    let (ended, _) = busy_episodes();
    app.update(poll(fixtures::busy(), 2));
    app.update(Event::Episodes {
        ended,
        ongoing: vec![],
    });
    let (s, last_seen) = app.session_seen("db0.internal:5432", 601).unwrap();
    assert_eq!(s.pid, 601);
    assert_eq!(last_seen, Some(fixture_now() - ChronoDuration::seconds(2)));
    app.update(ch('e'));
    let Overlay::Detail(RowKey::Incident(id)) = app.overlay.clone() else {
        panic!("e opens the ended wait: {:?}", app.overlay)
    };
    let e = app.episodes.iter().find(|e| e.id == id).unwrap();
    assert_eq!(e.waiter_pid, 601);
    app.update(ch('e'));
    assert_eq!(
        app.overlay,
        Overlay::Detail(RowKey::Session {
            server: "db0.internal:5432".into(),
            pid: 601
        }),
        "and back to the session"
    );
}

/// `busy_before` then `busy`: the waits of 601 and 602 end (their sessions left).
fn busy_episodes() -> (
    Vec<pgswarm::domain::incidents::Episode>,
    Vec<pgswarm::domain::incidents::Episode>,
) {
    use pgswarm::domain::incidents::EpisodeTracker;
    use pgswarm::domain::snapshot::build_snapshot;
    let conv = Convention::default();
    let mut tracker = EpisodeTracker::new();
    tracker.observe(&build_snapshot(fixtures::busy_before(), &conv));
    let ended = tracker.observe(&build_snapshot(fixtures::busy(), &conv));
    (ended, tracker.ongoing())
}

#[test]
fn the_last_seen_memory_is_bounded() {
    use pgswarm::tui::app::MAX_LAST_SEEN;
    let mut app = app_with(fixtures::synthetic(MAX_LAST_SEEN + 100, 50, 2, 1));
    app.update(poll(fixtures::empty(), 1));
    assert_eq!(app.last_seen.len(), MAX_LAST_SEEN);
}

/// Issue 27: the Sessions pane swaps in for Invocations, is in the Tab order in its place, sorts
/// by the key its title names, and shares the filter.
#[test]
fn the_sessions_pane_swaps_in_sorts_and_filters() {
    use pgswarm::tui::app::{DurationMode, SessionSort};
    let mut app = app_with(fixtures::busy());
    app.update(ch('s'));
    assert!(app.show_sessions);
    assert_eq!(app.focus, Pane::Sessions);
    assert_eq!(
        app.panes(),
        [Pane::Sessions, Pane::Schemas, Pane::Locks, Pane::Incidents]
    );
    let pids = |app: &App| -> Vec<i32> {
        app.model
            .keys(Pane::Sessions)
            .iter()
            .map(|k| k.session().unwrap().1)
            .collect()
    };
    // By wait: the longest lock wait first (201 waits 14 s), then 202 (9 s), 302 (8 s).
    assert_eq!(app.session_sort, SessionSort::Wait);
    assert_eq!(&pids(&app)[..3], &[201, 202, 302]);
    app.update(ch('o'));
    assert_eq!(app.session_sort, SessionSort::XactAge);
    assert_eq!(pids(&app)[0], 101, "the oldest transaction (41 s)");
    app.update(ch('o'));
    app.update(ch('o'));
    app.update(ch('o'));
    assert_eq!(app.session_sort, SessionSort::Pid);
    let sorted = pids(&app);
    assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
    assert_eq!(
        app.sort,
        Default::default(),
        "o on Sessions leaves Invocations' order"
    );
    app.update(ch('T'));
    assert_eq!(app.duration_mode, DurationMode::Transaction);
    // The filter is shared.
    app.update(ch('/'));
    for c in "gw2".chars() {
        app.update(ch(c));
    }
    app.update(key(KeyCode::Enter));
    assert_eq!(pids(&app), vec![303, 402]);
    // Enter opens the session's detail; c plans a cancel of that session.
    app.update(key(KeyCode::Enter));
    assert!(matches!(
        app.overlay,
        Overlay::Detail(RowKey::Session { pid: 303, .. })
    ));
    app.update(key(KeyCode::Esc));
    // Tab goes round the four panes on screen; s swaps back and the focus follows.
    for _ in 0..4 {
        app.update(key(KeyCode::Tab));
    }
    assert_eq!(app.focus, Pane::Sessions);
    app.update(ch('s'));
    assert_eq!(app.focus, Pane::Invocations);
}

/// Issue 27: pausing freezes the header's per-database line too (probe time, unreachable-since).
#[test]
fn pause_freezes_the_probe_times_and_unreachable_times() {
    let mut app = app_with(fixtures::collision());
    app.update(ch('p'));
    let frozen = app.shown_probe_time().clone();
    app.update(Event::Snapshot(
        std::sync::Arc::new(pgswarm::domain::snapshot::build_snapshot(
            fixtures::unreachable(),
            &Convention::default(),
        )),
        vec![("platform".into(), Duration::from_millis(250))],
        fixture_now() + ChronoDuration::seconds(5),
    ));
    assert_eq!(app.shown_probe_time(), &frozen);
    assert!(app.shown_unreachable_since().is_empty());
    assert_eq!(
        app.probe_time.get("platform"),
        Some(&Duration::from_millis(250)),
        "kept underneath"
    );
    app.update(ch('p'));
    assert_eq!(
        app.shown_probe_time().get("platform"),
        Some(&Duration::from_millis(250))
    );
    assert!(app.shown_unreachable_since().contains_key("tenant_b"));
}

/// Issue 27: `c` on an idle-in-transaction root says a cancel releases nothing and offers `K`,
/// which shows the terminate plan for the same session; still nothing is sent before `Y`.
#[test]
fn cancelling_an_idle_in_transaction_root_offers_terminate() {
    use pgswarm::domain::signal::{Action as SignalAction, Selector};
    use pgswarm::tui::app::SignalView;
    let mut app = app_with(fixtures::collision());
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Locks);
    let Some(RowKey::Lock { pid, .. }) = app.selected_key(Pane::Locks) else {
        panic!("a lock row is selected")
    };
    assert_eq!(pid, 101, "the idle-in-transaction root is the first row");
    app.update(ch('c'));
    let Overlay::Signal(SignalView::Plan(plan)) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(plan.action, SignalAction::Cancel);
    assert_eq!(plan.releasing_nothing().len(), 1);
    assert_eq!(app.update(ch('K')), vec![], "nothing is sent before Y");
    let Overlay::Signal(SignalView::Plan(terminate)) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(terminate.action, SignalAction::Terminate);
    assert_eq!(terminate.selector, plan.selector);
    assert!(matches!(
        terminate.selector,
        Selector::Session { pid: 101, .. }
    ));
    assert_eq!(app.update(ch('Y')), vec![Effect::Signal(terminate)]);

    // A cancel that helps (the waiter runs a statement) has no such offer: K closes.
    let mut app = app_with(fixtures::collision());
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Tab));
    app.update(ch('j'));
    let Some(RowKey::Lock { pid: 201, .. }) = app.selected_key(Pane::Locks) else {
        panic!(
            "the waiter is the second row: {:?}",
            app.selected_key(Pane::Locks)
        )
    };
    app.update(ch('c'));
    app.update(ch('K'));
    assert_eq!(app.overlay, Overlay::None);
}
