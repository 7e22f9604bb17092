//! The dashboard's pollers against a real server: a terminated monitor session comes back by itself.

mod common;

use common::*;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::poller::{spawn_pollers, PollControl};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_terminated_monitor_session_reconnects() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let settings = settings(&[entry("platform", &c)]);
    let (_control_tx, control_rx) = tokio::sync::watch::channel(PollControl {
        interval: Duration::from_millis(200),
        refresh_seq: 0,
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pollers = spawn_pollers(
        &settings.databases,
        &settings.session,
        "test",
        Arc::new(ProcessEnv),
        control_rx,
        tx,
    );
    let reachable =
        |r: &pgswarm::pg::poller::GroupResult| r.observation.databases[0].outcome.is_ok();
    let first = rx.recv().await.unwrap();
    assert!(reachable(&first));

    let admin = connect_as(&c, "admin").await;
    let monitor_pid = || async {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgswarm' LIMIT 1",
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
