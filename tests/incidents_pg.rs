//! Lock-wait episodes against a real server: the snapshot stream (pollers, aggregator, tracker) as
//! the dashboard and `record` run it, real waits that end in each way, the flight log, and the
//! `incidents` command over the flight log and over a recording.

mod common;

use common::*;
use pgswarm::domain::incidents::{Episode, Outcome};
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::flightlog::{self, FlightLog};
use pgswarm::pg::stream::SnapshotStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stream over `platform` whose ended episodes are collected (and appended to `log`).
struct Watch {
    ended: Arc<Mutex<Vec<Episode>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(conninfo: &str, log: Option<FlightLog>) -> Watch {
        let settings = settings(&[entry("platform", conninfo)]);
        let mut stream = SnapshotStream::spawn(
            &settings,
            // Half the shortest wait below: every wait is seen at least once (then the stream polls
            // at its fast rate while anything waits).
            Duration::from_millis(500),
            Arc::new(ProcessEnv),
            log,
            None,
        );
        let ended: Arc<Mutex<Vec<Episode>>> = Arc::default();
        let sink = ended.clone();
        let task = tokio::spawn(async move {
            while let Some(u) = stream.updates.recv().await {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(u.ended);
            }
        });
        Watch { ended, _task: task }
    }

    /// The first ended episode of `waiter_pid`, waiting (bounded) for it.
    async fn episode_of(&self, waiter_pid: i32) -> Episode {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(e) = ended.iter().find(|e| e.waiter_pid == waiter_pid) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no ended episode for pid {waiter_pid}; have {ended:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `holder` (run A) takes `accounts` and stays idle in its transaction.
async fn hold(conninfo: &str) -> tokio_postgres::Client {
    let holder = connect_as(conninfo, &format!("pytest_gw0_{NS_A}_fixture")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN SHARE MODE")
        .await
        .unwrap();
    holder
}

/// A session of run B (`gw1`) that starts an UPDATE on `accounts` in the background.
async fn wait_for_accounts(
    conninfo: &str,
    admin: &tokio_postgres::Client,
    lock_timeout: &str,
) -> (
    i32,
    tokio::task::JoinHandle<Result<u64, tokio_postgres::Error>>,
) {
    let waiter = connect_as(conninfo, &format!("pytest_gw1_{NS_B}")).await;
    waiter
        .batch_execute(&format!("SET lock_timeout = '{lock_timeout}'"))
        .await
        .unwrap();
    let pid = backend_pid(&waiter).await;
    let task = tokio::spawn(async move {
        let r = waiter.execute("UPDATE accounts SET n = n + 1", &[]).await;
        // Keep the session open a moment: its end is its statement's end, not a disconnect.
        tokio::time::sleep(Duration::from_secs(3)).await;
        r
    });
    wait_until_lock_wait(admin, pid).await;
    (pid, task)
}

fn server() -> (Server, String) {
    let srv = Server::start(&["platform"]);
    srv.psql(
        "platform",
        "CREATE TABLE accounts (n int); INSERT INTO accounts VALUES (0)",
    );
    let c = srv.conninfo("platform");
    (srv, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_is_a_gave_up_episode_naming_the_blocking_run_and_is_logged() {
    let (_srv, c) = server();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("incidents.jsonl");
    let watch = Watch::start(&c, Some(FlightLog::new(log_path.clone())));
    let admin = connect_as(&c, "admin").await;
    let holder = hold(&c).await;
    let holder_pid = backend_pid(&holder).await;
    let (pid, task) = wait_for_accounts(&c, &admin, "1s").await;
    let err = task.await.unwrap().expect_err("lock_timeout");
    assert_eq!(err.code().map(|s| s.code()), Some("55P03"));

    let e = watch.episode_of(pid).await;
    assert_eq!(e.outcome, Outcome::GaveUp, "{e:#?}");
    assert_eq!(e.waiter_namespace.as_deref(), Some(NS_B));
    assert_eq!(e.waiter_worker.as_deref(), Some("gw1"));
    assert_eq!(e.blocker_pids, vec![holder_pid]);
    assert_eq!(e.blocker_namespaces, vec![NS_A.to_string()]);
    assert_eq!(e.root_pid, Some(holder_pid));
    assert!(e.cross_invocation && e.blocker_idle_in_transaction);
    assert_eq!(e.blockers[0].suffix.as_deref(), Some("fixture"));
    assert_eq!(e.relation.as_deref(), Some("public.accounts"));
    assert_eq!(e.lock_mode.as_deref(), Some("RowExclusiveLock"));
    assert!(e.started_exact, "PostgreSQL 14+ reports waitstart");
    // The wait lasted lock_timeout: the server's own timestamps, not the poll times.
    assert!(
        (0.9..1.5).contains(&e.duration_s),
        "lock_timeout 1 s, measured {} s",
        e.duration_s
    );
    // The flight log has it.
    let logged = flightlog::read(&log_path).unwrap();
    assert!(logged.episodes.iter().any(|x| x.id == e.id), "{logged:?}");

    // `pgswarm incidents` answers for run B from that log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--namespace", NS_B, "--json", "--log"])
        .arg(&log_path)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let first = &doc["episodes"][0];
    assert_eq!(first["outcome"], "gave_up");
    // The server raised 55P03; pgswarm cannot see it and says it inferred the same.
    assert_eq!(first["sqlstate"], "55P03");
    assert_eq!(first["sqlstate_source"], "inferred");
    assert_eq!(first["waiter_pid"], pid);
    assert_eq!(first["root_namespace"], NS_A);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--namespace", NS_B, "--log"])
        .arg(&log_path)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ITS SESSIONS WAITED") && text.contains("GAVE UP"),
        "{text}"
    );
    assert!(text.contains(NS_A), "names the blocking run: {text}");
    assert!(
        text.contains("error   LockNotAvailable (55P03), inferred"),
        "{text}"
    );
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lock_is_acquired_and_a_disconnected_blocker_is_gone() {
    let (_srv, c) = server();
    let watch = Watch::start(&c, None);
    let admin = connect_as(&c, "admin").await;

    let holder = hold(&c).await;
    let (pid, task) = wait_for_accounts(&c, &admin, "30s").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    task.await.unwrap().expect("the update ran");
    let e = watch.episode_of(pid).await;
    assert_eq!(e.outcome, Outcome::Acquired, "{e:#?}");
    assert!(e.duration_s >= 1.4, "{}", e.duration_s);

    let holder = hold(&c).await;
    let (pid, task) = wait_for_accounts(&c, &admin, "30s").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(holder); // the connection closes: its transaction is rolled back
    task.await.unwrap().expect("the update ran");
    let e = watch.episode_of(pid).await;
    assert_eq!(e.outcome, Outcome::BlockerGone, "{e:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_names_the_root_and_a_waiter_that_disconnects_is_gone() {
    let (_srv, c) = server();
    let watch = Watch::start(&c, None);
    let admin = connect_as(&c, "admin").await;
    let holder = hold(&c).await;
    let holder_pid = backend_pid(&holder).await;
    // B waits for A; C queues behind B's ACCESS EXCLUSIVE request.
    let b = connect_as(&c, &format!("pytest_gw1_{NS_B}_migrate")).await;
    let b_pid = backend_pid(&b).await;
    let b_task = tokio::spawn(async move {
        let r = b
            .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            .await;
        (b, r)
    });
    wait_until_lock_wait(&admin, b_pid).await;
    let cc = connect_as(&c, &format!("pytest_gw2_{NS_C}")).await;
    let c_pid = backend_pid(&cc).await;
    let c_task =
        tokio::spawn(async move { cc.execute("SELECT count(*) FROM accounts", &[]).await });
    wait_until_lock_wait(&admin, c_pid).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // C gives up by disconnecting: the server ends its backend.
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&c_pid])
        .await
        .unwrap();
    let _ = c_task.await;
    let e = watch.episode_of(c_pid).await;
    assert_eq!(e.outcome, Outcome::WaiterGone, "{e:#?}");
    assert_eq!(e.root_pid, Some(holder_pid), "the root is A, two levels up");
    assert_eq!(e.root_namespace.as_deref(), Some(NS_A));
    assert_eq!(e.blocker_pids, vec![b_pid]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    let (b, r) = b_task.await.unwrap();
    r.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_the_wait_ends_is_unknown_not_a_guess() {
    let (srv, c) = server();
    let watch = Watch::start(&c, None);
    let admin = connect_as(&c, "admin").await;
    let holder = hold(&c).await;
    let (pid, task) = wait_for_accounts(&c, &admin, "3s").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The monitor loses its sessions and cannot reconnect while the wait times out.
    srv.psql(
        "postgres",
        "ALTER DATABASE platform ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgswarm'",
    );
    let _ = task.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    srv.psql("postgres", "ALTER DATABASE platform ALLOW_CONNECTIONS true");
    let e = watch.episode_of(pid).await;
    assert_eq!(e.outcome, Outcome::Unknown, "{e:#?}");
    assert_eq!(e.ended_at, None);
    drop(holder);
}

#[test]
fn incidents_from_a_recording_and_bad_input() {
    let (_srv, c) = server();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("run.jsonl");
    let log = dir.path().join("flight.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut recorder = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["record", "--interval", "250ms", "--duration", "6s", "--out"])
        .arg(&rec)
        .args(["--db", &entry("platform", &c)])
        .env("PGSWARM_INCIDENTS_LOG", &log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let admin = connect_as(&c, "admin").await;
        let holder = hold(&c).await;
        let (pid, task) = wait_for_accounts(&c, &admin, "1s").await;
        let _ = task.await;
        drop(holder);
        pid
    });
    assert!(recorder.wait().unwrap().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--json", "--from"])
        .arg(&rec)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eps = doc["episodes"].as_array().unwrap();
    let e = eps
        .iter()
        .find(|e| e["waiter_pid"] == pid)
        .expect("the wait");
    assert_eq!(e["outcome"], "gave_up", "{e}");
    // `record` appended the same episode to the flight log.
    let logged = flightlog::read(&log).unwrap();
    assert!(logged.episodes.iter().any(|x| x.waiter_pid == pid));

    // Bad input: a directory, a missing recording, a bad duration: exit 2, nothing printed on stdout.
    for args in [
        vec!["incidents", "--from", "/nonexistent/run.jsonl"],
        vec!["incidents", "--since", "soon"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(&args)
            .output()
            .unwrap();
        assert_exit(&out, 2);
        assert!(out.stdout.is_empty());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--log"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn follow_prints_each_episode_as_it_ends_for_an_agent_to_tail() {
    use std::io::BufRead;
    let (_srv, c) = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flight.jsonl");
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--follow", "--json", "--interval", "500ms"])
        .args(["--namespace", NS_B, "--db", &entry("platform", &c)])
        .env("PGSWARM_INCIDENTS_LOG", &log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (pid, other_pid) = rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let admin = connect_as(&c, "admin").await;
        // A wait of another run first: --namespace leaves it out.
        let holder = hold(&c).await;
        let other = connect_as(&c, &format!("pytest_gw3_{NS_C}")).await;
        let other_pid = backend_pid(&other).await;
        other
            .batch_execute("SET lock_timeout = '1s'")
            .await
            .unwrap();
        let r = other.batch_execute("UPDATE accounts SET n = n + 1").await;
        assert!(r.is_err(), "lock_timeout");
        let (pid, task) = wait_for_accounts(&c, &admin, "1s").await;
        let _ = task.await;
        drop(holder);
        (pid, other_pid)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = None;
    while Instant::now() < deadline && got.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object a line");
            assert_eq!(v["schema_version"], 1, "{v}");
            assert_ne!(
                v["waiter_pid"], other_pid,
                "another run's wait is filtered out"
            );
            if v["waiter_pid"] == pid {
                got = Some(v);
            }
        }
    }
    // SIGTERM ends the follow cleanly (exit 0).
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let status = follow.wait().unwrap();
    let e = got.expect("the episode was printed as it ended");
    assert_eq!(e["outcome"], "gave_up");
    assert_eq!(e["root_namespace"], NS_A);
    assert_eq!(status.code(), Some(0));
    // It went to the flight log as well.
    let logged = flightlog::read(&log).unwrap();
    assert!(logged
        .episodes
        .iter()
        .any(|x| x.waiter_pid == pid && x.involves(NS_B)));
}

/// The black-box attack's first finding: the blocker commits a moment after the waiter's
/// lock_timeout, before the next poll. The waiter gave up; it did not acquire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_just_before_the_blocker_commits_is_gave_up_not_acquired() {
    let (_srv, c) = server();
    let watch = Watch::start(&c, None);
    let admin = connect_as(&c, "admin").await;
    let holder = hold(&c).await;
    let (pid, task) = wait_for_accounts(&c, &admin, "1500ms").await;
    // Commit a moment after the waiter's statement failed: well inside one poll interval (and
    // clear of the 2 ms within which the two cannot be ordered).
    loop {
        let r = admin
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await
            .unwrap();
        if r.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let err = task.await.unwrap().expect_err("lock_timeout");
    assert_eq!(err.code().map(|s| s.code()), Some("55P03"));
    let e = watch.episode_of(pid).await;
    assert_eq!(e.outcome, Outcome::GaveUp, "{e:#?}");
}
