use super::*;
use crate::domain::snapshot::SessionReport;

const BS: i64 = 0x6571_a2b3;

fn json_line(
    pid: i32,
    severity: &str,
    code: &str,
    message: &str,
    detail: &str,
    app: &str,
) -> String {
    let mut v = serde_json::json!({
        "timestamp": "2023-12-07 10:00:01.500 UTC",
        "user": "postgres",
        "dbname": "platform",
        "pid": pid,
        "session_id": format!("{BS:x}.{pid:x}"),
        "error_severity": severity,
        "state_code": code,
        "message": message,
        "statement": "UPDATE accounts SET n = n + 1",
        "application_name": app,
        "backend_type": "client backend",
    });
    if !detail.is_empty() {
        v["detail"] = detail.into();
    }
    format!("{v}\n")
}

fn csv_line(
    pid: i32,
    severity: &str,
    code: &str,
    message: &str,
    detail: &str,
    app: &str,
) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let fields = [
        "2023-12-07 10:00:01.500 UTC".to_string(),
        q("postgres"),
        q("platform"),
        pid.to_string(),
        q("[local]"),
        format!("{BS:x}.{pid:x}"),
        "3".into(),
        q("UPDATE"),
        "2023-12-07 10:00:00 UTC".into(),
        "4/12".into(),
        "0".into(),
        severity.into(),
        code.into(),
        q(message),
        if detail.is_empty() {
            String::new()
        } else {
            q(detail)
        },
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        q("UPDATE accounts SET n = n + 1"),
        String::new(),
        String::new(),
        q(app),
        q("client backend"),
        String::new(),
        "0".into(),
    ];
    format!("{}\n", fields.join(","))
}

fn timeout_record(format: LogFormat, app: &str) -> String {
    let f = if format == LogFormat::Jsonlog {
        json_line
    } else {
        csv_line
    };
    f(
        1234,
        "ERROR",
        "55P03",
        "canceling statement due to lock timeout",
        "",
        app,
    )
}

#[test]
fn a_jsonlog_lock_timeout_is_an_ended_event_with_its_session() {
    let mut p = LogParser::new(LogFormat::Jsonlog, 0);
    let recs = p.feed(timeout_record(LogFormat::Jsonlog, "pytest_gw1_b").as_bytes());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.pid, Some(1234));
    assert_eq!(r.backend_start.map(|t| t.timestamp()), Some(BS));
    assert_eq!(r.at.map(|t| t.timestamp_millis() % 1000), Some(500));
    let Some(LogEvent::Ended(e)) = classify(r) else {
        panic!("{r:?}")
    };
    assert_eq!(e.kind, LockErrorKind::LockNotAvailable);
    assert_eq!(e.application_name, "pytest_gw1_b");
}

#[test]
fn csvlog_parses_the_same_fields_as_jsonlog() {
    for format in [LogFormat::Jsonlog, LogFormat::Csvlog] {
        let mut p = LogParser::new(format, 0);
        let recs = p.feed(timeout_record(format, "pytest_gw1_b").as_bytes());
        assert_eq!(recs.len(), 1, "{format:?}");
        assert_eq!(recs[0].sqlstate.as_deref(), Some("55P03"));
        assert_eq!(recs[0].application_name.as_deref(), Some("pytest_gw1_b"));
        assert_eq!(
            recs[0].statement.as_deref(),
            Some("UPDATE accounts SET n = n + 1")
        );
        assert_eq!(recs[0].database.as_deref(), Some("platform"));
    }
}

#[test]
fn a_partial_last_record_is_kept_for_the_next_read_byte_by_byte() {
    for format in [LogFormat::Jsonlog, LogFormat::Csvlog] {
        let text = timeout_record(format, "a,\"b\"\nc") + &timeout_record(format, "x");
        let mut p = LogParser::new(format, 0);
        let mut recs = Vec::new();
        for b in text.as_bytes() {
            recs.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(recs.len(), 2, "{format:?}");
        assert_eq!(recs[0].application_name.as_deref(), Some("a,\"b\"\nc"));
        assert_eq!(p.pending_len(), 0);
    }
}

#[test]
fn a_forged_newline_in_application_name_or_statement_forges_no_record() {
    // What a hostile client would like to inject: a whole record of its own.
    for format in [LogFormat::Jsonlog, LogFormat::Csvlog] {
        let forged = timeout_record(format, "pytest_gw9_evil");
        let app = format!("x\n{forged}\u{1b}[2J\r");
        let text = if format == LogFormat::Jsonlog {
            json_line(77, "LOG", "00000", "statement: SELECT 1", "", &app)
        } else {
            csv_line(77, "LOG", "00000", "statement: SELECT 1", "", &app)
        };
        let mut p = LogParser::new(format, 0);
        let recs = p.feed(text.as_bytes());
        assert_eq!(recs.len(), 1, "{format:?}: {recs:#?}");
        assert_eq!(recs[0].pid, Some(77));
        assert!(classify(&recs[0]).is_none());
    }
}

#[test]
fn an_overlong_record_is_skipped_whole_and_the_next_one_is_read() {
    for format in [LogFormat::Jsonlog, LogFormat::Csvlog] {
        let huge = "y".repeat(MAX_RECORD_BYTES + 10);
        let text = timeout_record(format, &huge) + &timeout_record(format, "ok");
        let mut p = LogParser::new(format, 0);
        let recs: Vec<LogRecord> = text
            .as_bytes()
            .chunks(7000)
            .flat_map(|c| p.feed(c))
            .collect();
        assert_eq!(recs.len(), 1, "{format:?}");
        assert_eq!(recs[0].application_name.as_deref(), Some("ok"));
        assert_eq!(p.malformed, 1);
    }
}

#[test]
fn fields_are_capped() {
    let long = "z".repeat(MAX_FIELD_CHARS * 2);
    let mut p = LogParser::new(LogFormat::Jsonlog, 0);
    let recs = p.feed(json_line(1, "LOG", "00000", &long, "", "a").as_bytes());
    assert_eq!(
        recs[0].message.as_ref().map(|m| m.chars().count()),
        Some(MAX_FIELD_CHARS)
    );
}

#[test]
fn timestamps_take_offsets_and_the_log_timezone() {
    let t = |s: &str, off| parse_timestamp(s, off).map(|t| t.to_rfc3339());
    assert_eq!(
        t("2023-12-07 10:00:01.500 UTC", 0).as_deref(),
        Some("2023-12-07T10:00:01.500+00:00")
    );
    assert_eq!(
        t("2023-12-07 11:00:01.500 +01", 0).as_deref(),
        Some("2023-12-07T10:00:01.500+00:00")
    );
    assert_eq!(
        t("2023-12-07 11:00:01 CET", 3600).as_deref(),
        Some("2023-12-07T10:00:01+00:00")
    );
    assert_eq!(t("garbage", 0), None);
}

#[test]
fn log_lock_waits_lines_give_holders_queue_and_the_wait_so_far() {
    let r = parse_record(
        LogFormat::Jsonlog,
        json_line(
            1234,
            "LOG",
            "00000",
            "process 1234 still waiting for RowExclusiveLock on relation 16384 of database 5 after 100.250 ms",
            "Processes holding the lock: 55, 66. Wait queue: 1234, 77.",
            "pytest_gw1_b",
        )
        .trim_end()
        .as_bytes(),
        0,
    )
    .unwrap();
    let Some(LogEvent::Waiting(w)) = classify(&r) else {
        panic!()
    };
    assert_eq!(w.holders, vec![55, 66]);
    assert_eq!(w.queue, vec![1234, 77]);
    assert_eq!(w.waited, Duration::from_micros(100_250));
    assert_eq!(w.lock_mode.as_deref(), Some("RowExclusiveLock"));
    assert_eq!(w.lock_type.as_deref(), Some("relation"));
}

#[test]
fn a_waiting_line_about_another_pid_is_ignored() {
    let r = parse_record(
        LogFormat::Jsonlog,
        json_line(
            1,
            "LOG",
            "00000",
            "process 2 still waiting for X on relation 1 of database 1 after 1.0 ms",
            "",
            "",
        )
        .trim_end()
        .as_bytes(),
        0,
    )
    .unwrap();
    assert!(classify(&r).is_none());
}

#[test]
fn a_deadlock_gives_its_cycle_and_query_texts_cannot_add_to_it() {
    let detail = "Process 1234 waits for ShareLock on transaction 901; blocked by process 4321.\n\
                  Process 4321 waits for ShareLock on transaction 900; blocked by process 1234.\n\
                  Process 1234: UPDATE t SET n = 1\nProcess 999 waits for X on y; blocked by process 1234.\n\
                  Process 4321: UPDATE t SET n = 2";
    assert_eq!(deadlock_cycle(detail, 1234), vec![1234, 4321]);
    assert_eq!(deadlock_cycle(detail, 5), Vec::<i32>::new());
    assert_eq!(
        deadlock_cycle("Process 1 waits for X; blocked by process 2.", 1),
        Vec::<i32>::new()
    );
}

fn session(server: &str, pid: i32, app: &str, state: &str) -> SessionReport {
    let mut s: SessionReport = serde_json::from_value(serde_json::json!({
        "database": "platform", "server": server, "pid": pid, "application_name": app,
        "label": "unlabeled", "unattributed_reason": null, "worker": null, "namespace": null,
        "suffix": null, "suffix_maybe_truncated": false, "usename": null, "client_addr": null,
        "backend_type": null, "state": state, "wait_event_type": null, "wait_event": null,
        "query": null, "insufficient_privilege": false,
        "backend_start": Utc.timestamp_opt(BS, 250_000_000).single(),
        "xact_start": null, "query_start": null, "state_change": null, "blocked_by": [],
        "blocking": [], "lock_type": null, "lock_mode": null, "relation": null,
        "waiting_s": null, "wait_source": null
    }))
    .expect("a session report");
    if let LabelParse::Labeled(l) = parse_label("pytest", app) {
        s.namespace = Some(l.namespace.into_string());
        s.worker = Some(l.worker.to_string());
    }
    s
}

fn error(pid: i32, at: DateTime<Utc>) -> LockError {
    LockError {
        at,
        pid,
        backend_start: Utc.timestamp_opt(BS, 0).single(),
        database: Some("platform".into()),
        application_name: "pytest_gw1_b".into(),
        statement: Some("UPDATE accounts SET n = n + 1".into()),
        kind: LockErrorKind::LockNotAvailable,
        cycle: Vec::new(),
    }
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(BS + 10, 0).single().unwrap() + ChronoDuration::milliseconds(ms)
}

#[test]
fn a_short_wait_only_the_log_saw_names_the_holding_run() {
    let mut m = LogMatcher::new("pytest");
    m.note_sessions(
        t(0),
        &[session(
            "s:5432",
            55,
            "pytest_gw0_a_fixture",
            "idle in transaction",
        )],
    );
    let wait = LogEvent::Waiting(WaitLine {
        at: t(1100),
        pid: 1234,
        backend_start: Utc.timestamp_opt(BS, 0).single(),
        waited: Duration::from_millis(100),
        holders: vec![55],
        queue: vec![1234],
        lock_mode: Some("RowExclusiveLock".into()),
        lock_type: Some("relation".into()),
    });
    let out = m.accept(
        "s:5432",
        vec![wait, LogEvent::Ended(error(1234, t(1150)))],
        &[],
        t(2000),
    );
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.outcome, Outcome::GaveUp);
    assert_eq!(e.sqlstate.as_deref(), Some("55P03"));
    assert_eq!(e.sqlstate_source, Some(SqlstateSource::Observed));
    assert_eq!(e.evidence, vec![Evidence::ServerLog]);
    assert_eq!(e.waiter_namespace.as_deref(), Some("b"));
    assert_eq!(e.blocker_pids, vec![55]);
    assert_eq!(e.blocker_namespaces, vec!["a".to_string()]);
    assert!(e.cross_invocation && e.blocker_idle_in_transaction);
    assert_eq!(e.started_at, t(1000));
    assert!((e.duration_s - 0.15).abs() < 1e-9);
    assert_eq!(e.blocker_note, None);
}

#[test]
fn pgswarms_own_sessions_errors_are_no_episodes() {
    let mut m = LogMatcher::new("pytest");
    let mut own = session("s", 1234, "pgswarm", "active");
    own.own = true;
    m.note_sessions(t(0), &[own]);
    assert!(m
        .accept("s", vec![LogEvent::Ended(error(1234, t(100)))], &[], t(100))
        .is_empty());
}

#[test]
fn without_a_waiting_line_or_a_poll_the_blocker_is_unknown_and_said_so() {
    let mut m = LogMatcher::new("pytest");
    let out = m.accept("s", vec![LogEvent::Ended(error(1234, t(0)))], &[], t(0));
    assert_eq!(out[0].blocker_note.as_deref(), Some(BLOCKER_UNKNOWN));
    assert!(out[0].blocker_pids.is_empty());
}

fn poll_episode(pid: i32, start: DateTime<Utc>, end: DateTime<Utc>) -> Episode {
    let mut m = LogMatcher::new("pytest");
    let mut e = m.episode_of("s", &error(pid, end), None);
    e.id = "poll-id".into();
    e.evidence = vec![Evidence::Poll];
    e.started_at = start;
    e.first_seen_at = start;
    e.last_seen_at = end;
    e.ended_at = Some(end);
    e.sqlstate_source = Some(SqlstateSource::Inferred);
    e.blocker_pids = vec![55];
    e.blocker_note = None;
    m.recent.clear();
    e
}

#[test]
fn an_error_after_the_poll_ended_the_episode_completes_it_under_the_same_id() {
    let mut m = LogMatcher::new("pytest");
    let polled = m.note_poll_ended(vec![poll_episode(1234, t(0), t(1600))], t(1700), |_| false);
    assert_eq!(polled[0].evidence, vec![Evidence::Poll]);
    let out = m.accept(
        "s",
        vec![LogEvent::Ended(error(1234, t(1500)))],
        &[],
        t(2000),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, "poll-id");
    assert_eq!(out[0].evidence, vec![Evidence::Poll, Evidence::ServerLog]);
    assert_eq!(out[0].sqlstate_source, Some(SqlstateSource::Observed));
    assert_eq!(out[0].ended_at, Some(t(1500)));
    // Read again (a second read of the same bytes): no second completion.
    assert!(m
        .accept(
            "s",
            vec![LogEvent::Ended(error(1234, t(1500)))],
            &[],
            t(2000)
        )
        .is_empty());
}

#[test]
fn an_error_while_the_poll_episode_is_open_waits_for_it_and_is_merged() {
    let mut m = LogMatcher::new("pytest");
    let open = poll_episode(1234, t(0), t(1000));
    let out = m.accept(
        "s",
        vec![LogEvent::Ended(error(1234, t(1500)))],
        std::slice::from_ref(&open),
        t(1500),
    );
    assert!(out.is_empty());
    let mut ended = open;
    ended.last_seen_at = t(1250);
    ended.ended_at = Some(t(1600));
    let done = m.note_poll_ended(vec![ended], t(1700), |_| true);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].evidence, vec![Evidence::Poll, Evidence::ServerLog]);
    assert!(m.flush(t(60_000)).is_empty());
}

#[test]
fn an_episode_the_polls_ended_is_held_for_the_next_log_read_and_given_once_complete() {
    let mut m = LogMatcher::new("pytest");
    let e = poll_episode(1234, t(0), t(1600));
    assert!(m.note_poll_ended(vec![e], t(1700), |s| s == "s").is_empty());
    // The log read that started before the poll ended it does not release it.
    assert!(m.release("s", t(1650)).is_empty());
    let out = m.accept(
        "s",
        vec![LogEvent::Ended(error(1234, t(1500)))],
        &[],
        t(2000),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, "poll-id");
    assert_eq!(out[0].evidence, vec![Evidence::Poll, Evidence::ServerLog]);
    assert!(m.release("s", t(2000)).is_empty());
    // Nothing in the log for another one: the next read releases it as the polls saw it.
    let e = poll_episode(99, t(0), t(1600));
    assert!(m.note_poll_ended(vec![e], t(1700), |_| true).is_empty());
    assert_eq!(m.release("s", t(1800))[0].evidence, vec![Evidence::Poll]);
    // A log that is never read again: given after HOLD_MAX.
    let e = poll_episode(98, t(0), t(1600));
    assert!(m.note_poll_ended(vec![e], t(1700), |_| true).is_empty());
    assert!(m.flush(t(2000)).is_empty());
    assert_eq!(m.flush(t(1700) + ChronoDuration::seconds(6)).len(), 1);
}

#[test]
fn a_pending_error_whose_poll_episode_never_ends_becomes_its_own_episode() {
    let mut m = LogMatcher::new("pytest");
    let open = poll_episode(1234, t(0), t(1000));
    assert!(m
        .accept(
            "s",
            vec![LogEvent::Ended(error(1234, t(1500)))],
            &[open],
            t(1500)
        )
        .is_empty());
    assert!(m.flush(t(2000)).is_empty());
    assert_eq!(m.flush(t(1500) + ChronoDuration::seconds(11)).len(), 1);
}

#[test]
fn another_session_or_another_time_does_not_match() {
    let e = poll_episode(1234, t(0), t(1000));
    assert!(matches_episode(&error(1234, t(900)), &e));
    assert!(!matches_episode(&error(1235, t(900)), &e));
    assert!(!matches_episode(&error(1234, t(60_000)), &e));
    let mut other = error(1234, t(900));
    other.backend_start = Utc.timestamp_opt(BS + 5, 0).single();
    assert!(!matches_episode(&other, &e));
    other = error(1234, t(900));
    other.statement = Some("DELETE FROM x".into());
    assert!(!matches_episode(&other, &e));
}

#[test]
fn a_statement_timeout_is_a_lock_wait_only_when_something_showed_it_waiting() {
    let mut m = LogMatcher::new("pytest");
    let mut err = error(1234, t(0));
    err.kind = LockErrorKind::Canceled;
    assert!(m
        .accept("s", vec![LogEvent::Ended(err.clone())], &[], t(0))
        .is_empty());
    let wait = LogEvent::Waiting(WaitLine {
        at: t(-500),
        pid: 1234,
        backend_start: err.backend_start,
        waited: Duration::from_millis(100),
        holders: vec![55],
        queue: vec![],
        lock_mode: None,
        lock_type: None,
    });
    let mut m = LogMatcher::new("pytest");
    let out = m.accept("s", vec![wait, LogEvent::Ended(err)], &[], t(0));
    assert_eq!(out[0].sqlstate.as_deref(), Some("57014"));
}

fn wait_line(pid: i32, at: DateTime<Utc>, waited_ms: u64) -> LogEvent {
    LogEvent::Waiting(WaitLine {
        at,
        pid,
        backend_start: Utc.timestamp_opt(BS, 0).single(),
        waited: Duration::from_millis(waited_ms),
        holders: vec![55],
        queue: vec![],
        lock_mode: None,
        lock_type: None,
    })
}

/// One connection, several waits (found by the black-box attack: every later error took the
/// first wait's start and id, one ever longer episode): each error is a wait of its own, a
/// `still waiting` line belongs to the wait it was written in, and the same statement failing
/// again is another wait.
#[test]
fn one_connections_errors_are_one_episode_each() {
    let mut m = LogMatcher::new("pytest");
    let mut events = vec![
        wait_line(1234, t(50), 50),
        LogEvent::Ended(error(1234, t(100))),
    ];
    for at in [400, 1400, 3400, 7400] {
        events.push(LogEvent::Ended(error(1234, t(at))));
    }
    let out = m.accept("s", events, &[], t(8000));
    assert_eq!(out.len(), 5, "{out:#?}");
    let ids: std::collections::BTreeSet<&str> = out.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "five ids");
    assert!(out[0].started_exact && (out[0].duration_s - 0.1).abs() < 1e-9);
    for e in &out[1..] {
        assert!(!e.started_exact, "no wait line of its own: {e:#?}");
        assert!(e.duration_s < 0.001, "{e:#?}");
    }
    // The same record read twice is one wait.
    assert!(m
        .accept(
            "s",
            vec![LogEvent::Ended(error(1234, t(7400)))],
            &[],
            t(8000)
        )
        .is_empty());
}

/// A wait that ended with the lock (`acquired … after`) lends its `still waiting` line to no
/// later statement timeout of the session (the attack: an 8 s `pg_sleep` timeout blamed on a run).
#[test]
fn a_statement_timeout_after_an_acquired_wait_is_no_lock_wait() {
    let mut m = LogMatcher::new("pytest");
    let mut timeout = error(1234, t(8500));
    timeout.kind = LockErrorKind::Canceled;
    let out = m.accept(
        "s",
        vec![
            wait_line(1234, t(50), 50),
            LogEvent::Acquired {
                at: t(200),
                pid: 1234,
            },
            LogEvent::Ended(timeout),
        ],
        &[],
        t(9000),
    );
    assert!(out.is_empty(), "{out:#?}");
}

/// An error a millisecond or more before a poll episode's exact start ended an earlier wait (the
/// attack: it was given to the next wait of the same statement, ending before it began).
#[test]
fn an_error_before_an_exact_start_is_not_that_waits() {
    let m = LogMatcher::new("pytest");
    let mut e = m.episode_of("s", &error(1234, t(0)), None);
    e.started_at = t(1001) + ChronoDuration::microseconds(331);
    e.started_exact = true;
    e.last_seen_at = t(2500);
    e.ended_at = None;
    assert!(!matches_episode(&error(1234, t(1000)), &e));
    assert!(matches_episode(&error(1234, t(2400)), &e));
}

/// A holder the polls saw, then missed at a later poll, had ended: a log line naming its pid
/// afterwards is someone else's (pid reuse), not named as that run.
#[test]
fn a_pid_the_polls_saw_end_is_not_named_after_it_ended() {
    let mut m = LogMatcher::new("pytest");
    m.note_sessions(
        t(0),
        &[session("s", 55, "pytest_gw0_a", "idle in transaction")],
    );
    // The next poll no longer has pid 55 (another session keeps the server in the picture).
    m.note_sessions(t(1000), &[session("s", 77, "pytest_gw0_c", "idle")]);
    let out = m.accept(
        "s",
        vec![
            wait_line(1234, t(1400), 50),
            LogEvent::Ended(error(1234, t(1500))),
        ],
        &[],
        t(1600),
    );
    assert_eq!(out[0].blocker_pids, vec![55]);
    assert!(out[0].blocker_namespaces.is_empty(), "{:#?}", out[0]);
    // While it is still there, it is named.
    let mut m = LogMatcher::new("pytest");
    m.note_sessions(
        t(0),
        &[session("s", 55, "pytest_gw0_a", "idle in transaction")],
    );
    let out = m.accept(
        "s",
        vec![
            wait_line(1234, t(400), 50),
            LogEvent::Ended(error(1234, t(500))),
        ],
        &[],
        t(600),
    );
    assert_eq!(out[0].blocker_namespaces, vec!["a".to_string()]);
}

#[test]
fn a_deadlock_episode_names_the_cycle_and_both_runs() {
    let mut m = LogMatcher::new("pytest");
    m.note_sessions(
        t(0),
        &[
            session("s", 1234, "pytest_gw1_b", "active"),
            session("s", 4321, "pytest_gw0_a", "active"),
        ],
    );
    let mut err = error(1234, t(1000));
    err.kind = LockErrorKind::Deadlock;
    err.cycle = vec![1234, 4321];
    let out = m.accept("s", vec![LogEvent::Ended(err)], &[], t(1000));
    let e = &out[0];
    assert_eq!(e.outcome, Outcome::Deadlock);
    assert_eq!(e.sqlstate.as_deref(), Some("40P01"));
    assert_eq!(e.deadlock_pids, vec![1234, 4321]);
    assert_eq!(e.blocker_pids, vec![4321]);
    assert_eq!(e.waiter_namespace.as_deref(), Some("b"));
    assert_eq!(e.blocker_namespaces, vec!["a".to_string()]);
}

#[test]
fn an_old_flight_log_line_reads_as_poll_evidence() {
    let m = LogMatcher::new("pytest");
    let e = m.episode_of("s", &error(1, t(0)), None);
    let mut v = serde_json::to_value(&e).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("evidence");
    o.remove("blocker_note");
    let back: Episode = serde_json::from_value(v).unwrap();
    assert_eq!(back.evidence, vec![Evidence::Poll]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn formats() -> impl Strategy<Value = LogFormat> {
        prop_oneof![Just(LogFormat::Jsonlog), Just(LogFormat::Csvlog)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any bytes, cut anywhere: no panic, and every record's fields stay capped.
        #[test]
        fn no_panic_on_any_bytes(format in formats(), bytes in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
            let mut p = LogParser::new(format, 0);
            let cut = cut.min(bytes.len());
            let mut recs = p.feed(&bytes[..cut]);
            recs.extend(p.feed(&bytes[cut..]));
            for r in &recs {
                prop_assert!(r.message.as_ref().is_none_or(|m| m.chars().count() <= MAX_FIELD_CHARS));
                let _ = classify(r);
            }
        }

        /// Reading in pieces gives what reading at once gives (a partial last record is kept).
        #[test]
        fn pieces_read_as_the_whole(format in formats(), apps in proptest::collection::vec(".{0,40}", 1..5), cuts in proptest::collection::vec(0usize..4000, 0..6)) {
            let text: String = apps.iter().map(|a| timeout_record(format, a)).collect();
            let whole = LogParser::new(format, 0).feed(text.as_bytes());
            prop_assert_eq!(whole.len(), apps.len());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut p = LogParser::new(format, 0);
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                pieces.extend(p.feed(&text.as_bytes()[from..c]));
                from = c;
            }
            prop_assert_eq!(&pieces, &whole);
            // Whatever an application_name holds, it is one record with that name.
            for (r, a) in whole.iter().zip(&apps) {
                prop_assert_eq!(r.application_name.as_deref().unwrap_or(""), a.as_str());
                prop_assert_eq!(r.pid, Some(1234));
            }
        }
    }
}
