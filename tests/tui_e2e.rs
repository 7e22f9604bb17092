//! The real binary in a real terminal (tmux) against a throwaway server with real contention: the
//! blocked pair must appear under both invocations, `q` must quit and give the terminal back.

mod common;

use common::serve::Serve;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "this test drives the dashboard in tmux: install it (Debian/Ubuntu: apt-get install tmux)"
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("pgswarm-e2e-{}-{n}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Starts `command` (a shell line) in a 120x40 session named `e2e`.
    fn start(&self, command: &str) {
        self.start_sized(command, 120, 40);
    }

    /// Starts `command` in a `width` x `height` session named `e2e`.
    fn start_sized(&self, command: &str, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        let ok = self
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "e2e",
                "-x",
                &w,
                "-y",
                &h,
                command,
            ])
            .status()
            .expect("tmux new-session")
            .success();
        assert!(ok, "tmux could not start the session");
    }

    fn keys(&self, keys: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "e2e", keys])
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "tmux send-keys {keys:?} failed");
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "e2e"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `pred` holds, or fails with the last screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_blocked_pair_and_quits_cleanly() {
    let srv = Server::start(&["platform", "tenant_a"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let command = format!(
        "XDG_STATE_HOME='{}' '{}' --interval 0.5s --db 'platform={c}' --db 'tenant_a={}'; \
         echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
        srv.conninfo("tenant_a"),
    );
    tmux.start(&command);

    // NS_A = p4100t…r0a0a0a0a and NS_B = p4200t…r0b0b0b0b, shown compactly in the tree.
    let screen = tmux.wait_for("the blocked pair under both invocations", |s| {
        s.contains("p4100…0a0a/gw0") && s.contains("p4200…0b0b/gw1") && s.contains("COLLISION")
    });
    assert!(screen.contains(NS_A) && screen.contains(NS_B), "{screen}");
    assert!(screen.contains("public.accounts"), "{screen}");

    tmux.keys("q");
    let after = tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
    // The alternate screen is gone: nothing of the dashboard is left on the terminal.
    assert!(
        !after.contains("Lock trees"),
        "terminal not restored:\n{after}"
    );
    // Logs went to the state directory, not to the screen.
    let log = std::fs::read_to_string(state.path().join("pgswarm/pgswarm.log")).unwrap();
    assert!(log.contains("dashboard starting"), "{log}");

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

/// The dashboard over a `pgswarm serve` (issue 24): the same picture with where it comes from in the
/// header, read-only; a server that goes away is shown as not answering with its last picture,
/// never as an empty "nothing blocked" one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_over_a_server_shows_its_picture_then_says_it_went_away() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let serve = Serve::start(&format!("platform={c}"), &[]);
    let url = format!("http://127.0.0.1:{}", serve.port);
    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    // No database is configured on this side: everything comes from the server.
    let command = format!(
        "env -u PGSWARM_DB -u PGSWARM_CONFIG XDG_STATE_HOME='{}' '{}' --server {url} \
         --interval 0.5s; echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    );
    tmux.start(&command);
    let screen = tmux.wait_for("the blocked pair through the server", |s| {
        s.contains("p4100…0a0a/gw0") && s.contains("p4200…0b0b/gw1") && s.contains("COLLISION")
    });
    assert!(screen.contains(&format!("via serve {url}")), "{screen}");
    assert!(screen.contains("public.accounts"), "{screen}");

    // Actions need the databases' credentials: refused, with why.
    tmux.keys("K");
    tmux.wait_for("the read-only refusal", |s| s.contains("read-only mode"));
    tmux.keys("Escape");

    drop(serve);
    let gone = tmux.wait_for("the server shown as gone", |s| {
        s.contains("not answering since")
    });
    // Its last picture stays, marked: never an empty one.
    assert!(gone.contains("p4200…0b0b/gw1"), "{gone}");
    assert!(gone.contains("stale"), "{gone}");

    tmux.keys("q");
    let after = tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

#[test]
fn refuses_to_start_without_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["--db", "dbname=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pgswarm snapshot"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_key_shows_the_plan_and_capital_y_drops_exactly_it() {
    let srv = Server::start(&["platform"]);
    let stale = "test_p4900t1700000000r0c0ffee0_gw0";
    let live = format!("test_{NS_A}_gw0");
    srv.psql(
        "platform",
        &format!("CREATE SCHEMA {stale}; CREATE TABLE {stale}.t (id int); CREATE SCHEMA {live}"),
    );
    let c = srv.conninfo("platform");
    let _live = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let command = format!(
        "XDG_STATE_HOME='{}' '{}' --db 'platform={c}'; echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    );
    tmux.start(&command);
    tmux.wait_for("the orphaned schema", |s| s.contains("orphaned"));
    tmux.keys("S");
    let plan = tmux.wait_for("the sweep plan", |s| {
        s.contains("Y (capital) drops exactly this 1 schema")
    });
    assert!(plan.contains(&format!("drop {stale}")), "{plan}");
    assert!(plan.contains(&format!("keep {live}")), "{plan}");
    // A lower-case y cancels.
    tmux.keys("y");
    tmux.wait_for("the plan to close", |s| !s.contains("Y (capital)"));
    assert_eq!(
        srv.psql(
            "platform",
            &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{stale}'")
        )
        .trim(),
        "1",
        "cancelled: nothing dropped"
    );
    tmux.keys("S");
    tmux.wait_for("the sweep plan again", |s| s.contains("Y (capital)"));
    tmux.keys("Y");
    tmux.wait_for("the sweep result", |s| s.contains("dropped 1, failed 0"));
    let count = |name: &str| {
        srv.psql(
            "platform",
            &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'"),
        )
        .trim()
        .to_string()
    };
    assert_eq!(count(stale), "0");
    assert_eq!(count(&live), "1");
    tmux.keys("Escape");
    // Sent at once, Escape and q can reach the dashboard as one Alt-q, which only closes the
    // overlay: quit once it is closed.
    tmux.wait_for("the overlay to close", |s| !s.contains("Esc closes"));
    tmux.keys("q");
    let after = tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capital_k_on_the_root_blocker_terminates_exactly_it_and_frees_the_waiter() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let command = format!(
        "XDG_STATE_HOME='{}' '{}' --db 'platform={c}'; echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    );
    tmux.start(&command);
    tmux.wait_for("the blocked pair", |s| s.contains("COLLISION"));
    // Lock trees (third in Tab order): the root (the holder) is the first row.
    tmux.keys("Tab");
    tmux.keys("Tab");
    tmux.keys("K");
    let plan = tmux.wait_for("the terminate plan", |s| {
        s.contains("Y (capital): terminate")
    });
    assert!(plan.contains(&format!("pytest_gw0_{NS_A}")), "{plan}");
    assert!(plan.contains(&format!("blocks {waiter_pid}")), "{plan}");
    tmux.keys("Y");
    tmux.wait_for("the result", |s| s.contains("terminated: 1"));
    let gone = admin
        .query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1",
            &[&holder_pid],
        )
        .await
        .unwrap();
    assert!(gone.is_none(), "the holder was terminated");
    let (_, r) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the waiter proceeds")
        .unwrap();
    r.expect("its query ran");
    tmux.keys("Escape");
    // Sent at once, Escape and q can reach the dashboard as one Alt-q, which only closes the
    // overlay: quit once it is closed.
    tmux.wait_for("the overlay to close", |s| !s.contains("Esc closes"));
    tmux.keys("q");
    let after = tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
}

#[test]
fn replay_and_the_demo_fallback_without_server_binaries() {
    let tmux = Tmux::new();
    let state = tempfile::tempdir().unwrap();
    let command = format!(
        "XDG_STATE_HOME='{}' PGSWARM_PG_BINDIR=/nonexistent '{}' demo; echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    );
    tmux.start(&command);
    // A capture can land mid-frame (header drawn, panes not yet): wait for the whole frame.
    let screen = tmux.wait_for("the bundled recording in replay", |s| {
        s.contains("REPLAY") && s.contains("Lock trees")
    });
    assert!(screen.contains("Lock trees"), "{screen}");
    tmux.keys("S");
    tmux.wait_for("the sweep to be disabled", |s| {
        s.contains("the sweep is disabled")
    });
    tmux.keys("Escape");
    // Sent at once, Escape and q can reach the dashboard as one Alt-q, which only closes the
    // overlay: quit once it is closed.
    tmux.wait_for("the overlay to close", |s| !s.contains("Esc closes"));
    tmux.keys("q");
    let after = tmux.wait_for("exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
    assert!(
        after.contains("apt-get install postgresql"),
        "says what to install:\n{after}"
    );
}

#[test]
fn with_nothing_configured_the_dashboard_says_how_to_configure_and_exits_3() {
    // libpq's default points at an empty socket directory: nothing listens there.
    let empty = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let command = format!(
        "env -u PGSWARM_DB -u PGSWARM_CONFIG -u PGDATABASE -u PGPORT PGHOST='{}' XDG_STATE_HOME='{}' '{}'; \
         echo PGSWARM_EXITED=$?; sleep 600",
        empty.path().display(),
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    );
    tmux.start(&command);
    let screen = tmux.wait_for("the hint", |s| s.contains("nothing is configured"));
    assert!(screen.contains("--db NAME=CONNINFO"), "{screen}");
    assert!(screen.contains("pgswarm demo"), "{screen}");
    tmux.keys("q");
    let after = tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(
        after.contains("PGSWARM_EXITED=3"),
        "no database was ever read: {after}"
    );
    assert!(after.contains("nothing is configured"), "{after}");
}

/// The dashboard's command line for `dbs` (name, conninfo), in a private state directory.
fn dashboard(state: &std::path::Path, dbs: &[(&str, String)]) -> String {
    let mut cmd = format!(
        "XDG_STATE_HOME='{}' '{}' --interval 0.25s",
        state.display(),
        env!("CARGO_BIN_EXE_pgswarm")
    );
    for (name, c) in dbs {
        cmd.push_str(&format!(" --db '{name}={c}'"));
    }
    cmd + "; echo PGSWARM_EXITED=$?; sleep 600"
}

/// Issue 27: at 80x24, with a backlog of orphaned schemas, a lock tree and healthy runs, the
/// screen shows a tree root, its victims (or what is cut, counted), and an invocation row: the
/// focused Invocations pane no longer shrinks to its header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_80x24_a_tree_its_victims_and_the_invocations_are_all_visible() {
    let srv = Server::start(&["platform"]);
    let mut ddl = String::from("CREATE TABLE accounts (id int);");
    for i in 0..40 {
        ddl.push_str(&format!(
            "CREATE SCHEMA test_p49{i:02}t1700000000r0c0ffe{i:02}_gw0;"
        ));
    }
    srv.psql("platform", &ddl);
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let mut tasks = Vec::new();
    let mut victims = Vec::new();
    for w in ["gw0", "gw1"] {
        let waiter = connect_as(&c, &format!("pytest_{w}_{NS_B}")).await;
        let pid = backend_pid(&waiter).await;
        tasks.push(spawn_blocking_query(waiter, "SELECT * FROM accounts"));
        wait_until_lock_wait(&admin, pid).await;
        victims.push(pid);
    }
    let _healthy = connect_as(&c, &format!("pytest_gw0_{NS_C}")).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    tmux.start_sized(&dashboard(state.path(), &[("platform", c.clone())]), 80, 24);
    let invocation_row = |s: &str| {
        s.lines().any(|l| {
            [NS_A, NS_B, NS_C]
                .iter()
                .any(|ns| l.contains(ns) && !l.contains(&format!("test_{ns}")))
        })
    };
    let screen = tmux.wait_for("a root, its victims and an invocation row", |s| {
        let root = s.lines().any(|l| l.contains(&format!("■ {holder_pid} ")));
        let all_victims = victims.iter().all(|p| s.contains(&format!(" {p} ")));
        let cut_said = s.contains("hidden") || s.contains("+1 tree");
        root && (all_victims || cut_said) && invocation_row(s) && s.contains("orphaned")
    });
    // The schema backlog is cut, and says so.
    assert!(screen.contains(" more"), "{screen}");
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "{line}");
    }
    tmux.keys("q");
    tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED=0"));
    holder.batch_execute("ROLLBACK").await.unwrap();
    for t in tasks {
        t.await.unwrap().1.unwrap();
    }
}

/// Issue 27: Enter on a waiter, then the waiter's session ends: the detail shows it as last seen
/// (not "no longer present"), links to its ended wait with `e`, and that links back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_of_a_session_that_ended_shows_its_last_seen_state() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    tmux.start(&dashboard(state.path(), &[("platform", c.clone())]));
    tmux.wait_for("the blocked pair", |s| s.contains("COLLISION"));
    // Lock trees (third in Tab order): the root, then the waiter.
    tmux.keys("Tab");
    tmux.keys("Tab");
    tmux.keys("j");
    tmux.keys("Enter");
    tmux.wait_for("the waiter's detail", |s| {
        s.contains("Session · Esc closes") && s.contains(&format!("pid               {waiter_pid}"))
    });
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&waiter_pid])
        .await
        .unwrap();
    let screen = tmux.wait_for("the last-seen state and the ended wait", |s| {
        s.contains("GONE: not in the latest poll; as last seen at") && s.contains("e: open it")
    });
    assert!(!screen.contains("no longer present"), "{screen}");
    assert!(screen.contains("waiter gone"), "{screen}");
    assert!(
        screen.contains("SELECT * FROM accounts"),
        "the query as last seen: {screen}"
    );
    tmux.keys("e");
    // The whole popup, not only its title: tmux can be read between two writes of one frame
    // (in CI it showed the new title over the old popup's rows).
    let episode = tmux.wait_for("the ended wait's detail", |s| {
        s.contains("Lock wait · Esc closes") && s.contains("waiter's session")
    });
    assert!(
        episode.contains(&format!("pid {waiter_pid} gone, last seen")),
        "{episode}"
    );
    tmux.keys("e");
    tmux.wait_for("back to the session", |s| {
        s.contains("GONE: not in the latest poll")
    });
    tmux.keys("Escape");
    // Sent at once, Escape and q can reach the dashboard as one Alt-q, which only closes the
    // overlay: quit once it is closed.
    tmux.wait_for("the overlay to close", |s| !s.contains("Esc closes"));
    tmux.keys("q");
    tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED=0"));
    holder.batch_execute("ROLLBACK").await.unwrap();
    let _ = task.await;
}

/// Issue 27: pausing freezes everything but the picture's age, the per-database line included,
/// even when a poll meanwhile takes a second and a half (a catalog lock holds it up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_the_header_while_polls_go_on() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    tmux.start(&dashboard(state.path(), &[("platform", c.clone())]));
    tmux.wait_for("the first poll", |s| s.contains("platform ✓"));
    tmux.keys("p");
    let paused = tmux.wait_for("the pause", |s| s.contains("PAUSED · picture of"));
    // Everything under the status line, as first drawn paused.
    let below = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    let frozen = below(&paused);
    // A slow poll while paused: the probe waits for this lock for 1.5 s.
    admin
        .batch_execute(
            "BEGIN; LOCK TABLE pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE; \
             SELECT pg_sleep(1.5); COMMIT",
        )
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut ages = std::collections::BTreeSet::new();
    while Instant::now() < until {
        let s = tmux.capture();
        assert_eq!(below(&s), frozen, "changed while paused:\n{s}");
        ages.insert(s.lines().next().unwrap_or_default().to_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ages.len() > 1, "the picture's age keeps counting: {ages:?}");
    tmux.keys("p");
    tmux.wait_for("live again", |s| s.contains("● live"));
    tmux.keys("q");
    tmux.wait_for("the dashboard to exit", |s| s.contains("PGSWARM_EXITED=0"));
}

/// Issue 27: `c` on the usual root blocker (idle in transaction) says a cancel releases nothing and
/// offers `K`, which shows the terminate plan for the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_an_idle_in_transaction_root_offers_terminate() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder_pid = backend_pid(&holder).await;
    let waiter = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
    let waiter_pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");
    wait_until_lock_wait(&admin, waiter_pid).await;

    let state = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    tmux.start(&format!(
        "XDG_STATE_HOME='{}' '{}' --interval 0.5s --db 'platform={c}'; sleep 600",
        state.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    ));
    tmux.wait_for("the blocked pair", |s| {
        s.contains("p4100…0a0a/gw0") && s.contains("p4200…0b0b/gw1")
    });
    // Move focus to Lock trees, whichever pane has it now: `c` elsewhere says to select a session.
    let mut screen = String::new();
    for _ in 0..6 {
        tmux.keys("c");
        screen = tmux.wait_for("the cancel overlay", |s| {
            s.contains("releases nothing") || s.contains("select a session")
        });
        if screen.contains("releases nothing") {
            break;
        }
        tmux.keys("Escape");
        tmux.wait_for("the overlay to close", |s| !s.contains("select a session"));
        tmux.keys("Tab");
    }
    assert!(screen.contains(&holder_pid.to_string()), "{screen}");
    assert!(screen.contains("K: terminate instead"), "{screen}");
    tmux.keys("K");
    let screen = tmux.wait_for("the terminate plan", |s| {
        s.contains("Y (capital): terminate")
    });
    assert!(screen.contains(&holder_pid.to_string()), "{screen}");
    tmux.keys("Escape");
    tmux.wait_for("the overlay to close", |s| !s.contains("Y (capital)"));
    holder.batch_execute("ROLLBACK").await.unwrap();
    let _ = task.await;
}

/// Issue 27: the demo's dashboard keeps its lock waits in its own flight log and ends with the
/// `pgswarm incidents --log …` line that lists them (it once said `no lock waits recorded`).
#[test]
fn the_demo_ends_with_an_incidents_line_that_lists_its_lock_waits() {
    let state = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The server runs as the `postgres` OS user when we are root: it must reach its directory.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tmux = Tmux::new();
    tmux.start(&format!(
        "XDG_STATE_HOME='{}' TMPDIR='{}' '{}' demo --interval 0.5s; echo PGSWARM_EXITED=$?; sleep 600",
        state.path().display(),
        tmp.path().display(),
        env!("CARGO_BIN_EXE_pgswarm"),
    ));
    let ended = |s: &str| {
        s.lines().any(|l| {
            l.split_once("Incidents (")
                .is_some_and(|(_, n)| n.starts_with(|c: char| ('1'..='9').contains(&c)))
        })
    };
    tmux.wait_for("a lock wait of the demo to end", |s| {
        ended(s) && !s.contains("REPLAY")
    });
    tmux.keys("q");
    let after = tmux.wait_for("the demo to exit", |s| s.contains("PGSWARM_EXITED="));
    assert!(after.contains("PGSWARM_EXITED=0"), "{after}");
    // The line may wrap at 120 columns: join the screen's lines before looking.
    let joined: String = after.lines().map(str::trim_end).collect();
    let start = joined
        .find("pgswarm incidents --log '")
        .unwrap_or_else(|| panic!("no incidents line:\n{after}"));
    let path = joined[start + "pgswarm incidents --log '".len()..]
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    assert!(path.ends_with("demo-incidents.jsonl"), "{path}");
    assert!(
        !state.path().join("pgswarm/incidents.jsonl").exists(),
        "the real flight log is not written by the demo"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--json", "--log", &path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !doc["episodes"].as_array().unwrap().is_empty(),
        "{doc:#}\n{after}"
    );
}
