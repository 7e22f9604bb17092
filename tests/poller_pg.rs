//! The dashboard's pollers against a real server: a terminated monitor session comes back by itself;
//! exact schema sizes arrive from the background sizer, outside the polls.

mod common;

use common::*;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::poller::{spawn_pollers, GroupResult, PollControl};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Results = tokio::sync::mpsc::UnboundedReceiver<GroupResult>;

/// Pollers for one database at a 200 ms interval, as the dashboard starts them.
fn start_pollers(
    conninfo: &str,
) -> (
    tokio::sync::watch::Sender<PollControl>,
    Results,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let settings = settings(&[entry("platform", conninfo)]);
    let (control_tx, control_rx) = tokio::sync::watch::channel(PollControl {
        interval: Duration::from_millis(200),
        refresh_seq: 0,
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let pollers = spawn_pollers(
        &settings.databases,
        &settings.session,
        &pgswarm::pg::probe::ProbeOptions::default(),
        Arc::new(ProcessEnv),
        control_rx,
        tx,
    );
    (control_tx, rx, pollers)
}

#[tokio::test]
async fn a_terminated_monitor_session_reconnects() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let (_control_tx, mut rx, pollers) = start_pollers(&c);
    let reachable = |r: &GroupResult| r.observation.databases[0].outcome.is_ok();
    let first = rx.recv().await.unwrap();
    assert!(reachable(&first));

    let admin = connect_as(&c, "admin").await;
    let monitor_pid = || async {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgswarm' \
                 ORDER BY backend_start LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    };
    let old = monitor_pid()
        .await
        .expect("the poller's session is connected");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&old])
        .await
        .unwrap();

    // Polls go on; the session is replaced by a new one (57P01 seen as a closed client).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("polls keep coming")
            .unwrap();
        let now = monitor_pid().await;
        if reachable(&r)
            && now.is_some_and(|p| p != old)
            && r.observation.servers[0].activity_error.is_none()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the poller never reconnected");
    }
    for p in pollers {
        p.abort();
    }
}

#[tokio::test]
async fn exact_sizes_come_from_the_sizer_and_match_the_server() {
    let srv = Server::start(&["platform"]);
    let schema = format!("test_{NS_A}_gw0");
    srv.psql(
        "platform",
        &format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int PRIMARY KEY, v text); \
             INSERT INTO {schema}.t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
        ),
    );
    let expected: i64 = srv
        .psql(
            "platform",
            &format!(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p', 'm')"
            ),
        )
        .trim()
        .parse()
        .unwrap();
    let c = srv.conninfo("platform");
    let (_control_tx, mut rx, pollers) = start_pollers(&c);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut estimates_seen = 0;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("polls keep coming")
            .unwrap();
        let s = r
            .observation
            .schemas
            .iter()
            .find(|s| s.schema == schema)
            .expect("the test schema is listed on every poll");
        if s.bytes_exact {
            assert_eq!(s.bytes, expected, "exact size as the server computes it");
            break;
        }
        estimates_seen += 1;
        assert!(Instant::now() < deadline, "exact sizes never arrived");
    }
    assert!(
        estimates_seen > 0,
        "polls must not wait for the sizer: the first ones carry estimates"
    );
    for p in pollers {
        p.abort();
    }
}

/// Issue 11, finding 3: after the monitor's backend is terminated, no snapshot shows the database as
/// read and empty: the poll that failed shows the previous reading marked stale, and the next ones
/// are fresh again.
#[tokio::test]
async fn no_frame_of_zeros_after_the_monitor_is_terminated() {
    use pgswarm::domain::aggregate::Aggregator;
    use pgswarm::domain::snapshot::Convention;
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let mut sessions = Vec::new();
    for w in 0..3 {
        sessions.push(connect_as(&c, &format!("pytest_gw{w}_{NS_A}")).await);
    }
    let (_control_tx, mut rx, pollers) = start_pollers(&c);
    let mut agg = Aggregator::new(Convention::default(), vec!["platform".into()], 1);
    let counted = |s: &pgswarm::domain::snapshot::Snapshot| {
        s.sessions
            .iter()
            .filter(|x| x.namespace.as_deref() == Some(NS_A))
            .count()
    };
    loop {
        let s = {
            let r = rx.recv().await.unwrap();
            agg.accept(r.group, r.observation)
        };
        if counted(&s) == 3 {
            break;
        }
    }
    let admin = connect_as(&c, "admin").await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgswarm'",
            &[],
        )
        .await
        .unwrap();
    let (mut stale_seen, mut fresh_after) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(stale_seen && fresh_after) {
        assert!(
            Instant::now() < deadline,
            "stale {stale_seen}, fresh {fresh_after}"
        );
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("polls keep coming")
            .unwrap();
        let s = agg.accept(r.group, r.observation);
        let d = &s.databases[0];
        let looks_read = d.reachable && d.error.is_none() && d.stale_since.is_none();
        if looks_read || d.stale_since.is_some() {
            assert_eq!(counted(&s), 3, "a frame of zeros: {d:?}");
        }
        stale_seen |= d.stale_since.is_some();
        fresh_after |= stale_seen && looks_read;
    }
    for p in pollers {
        p.abort();
    }
}
