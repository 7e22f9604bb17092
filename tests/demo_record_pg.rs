//! `pgswarm demo` and record/replay, end to end with the real binary.

mod common;

use common::*;
use pgswarm::domain::snapshot::Snapshot;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgswarm")
}

/// `pgswarm demo --no-tui` with a private TMPDIR: whatever it leaves behind would be visible there.
fn spawn_demo() -> (tempfile::TempDir, std::process::Child) {
    let tmp = tempfile::tempdir().unwrap();
    // The server runs as the `postgres` OS user when we are root: it must reach its directory.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let demo = Command::new(bin())
        .args(["demo", "--no-tui"])
        .env("TMPDIR", tmp.path())
        // Its own log of lock waits goes to the state directory: keep it in the private TMPDIR.
        .env("XDG_STATE_HOME", tmp.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (tmp, demo)
}

#[test]
fn demo_produces_every_incident_and_cleans_up_on_sigterm() {
    let (tmp, mut demo) = spawn_demo();
    let stderr = demo.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let watch = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("the demo prints how to watch it");
        printed.push(line.clone());
        // `PGSWARM_INCIDENTS_LOG='…' pgswarm --db '…' …`: the watcher keeps the demo's waits apart.
        if let Some((env, args)) = line.trim().split_once("pgswarm --db") {
            assert!(env.starts_with("PGSWARM_INCIDENTS_LOG="), "{line}");
            break format!("--db{args}");
        }
    };
    while !printed.last().unwrap().contains("Ctrl-C or SIGTERM") {
        printed.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("more lines"),
        );
    }
    assert!(
        printed
            .iter()
            .any(|l| l.trim().starts_with("pgswarm incidents --log '")),
        "{printed:#?}"
    );
    // Issue 27: the printed PGSWARM_DB line works when pasted into a shell.
    let export = printed
        .iter()
        .find(|l| l.trim().starts_with("export PGSWARM_DB="))
        .unwrap_or_else(|| panic!("no PGSWARM_DB line: {printed:#?}"))
        .trim()
        .to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{export} && exec \"$0\" snapshot --json"))
        .arg(bin())
        .env_remove("PGSWARM_DB")
        .output()
        .unwrap();
    let snap: Snapshot = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {export}\n{}", String::from_utf8_lossy(&out.stderr)));
    let names: Vec<&str> = snap.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "platform_test",
            "tenant_a_test",
            "tenant_b_test",
            "tenant_c_test"
        ]
    );
    assert!(snap.databases.iter().all(|d| d.reachable), "{export}");
    // The printed command is shell-quoted: split it the way a shell would for these simple values.
    let args: Vec<String> = watch
        .split(" --db ")
        .map(|s| s.trim_start_matches("--db ").trim_matches('\'').to_string())
        .flat_map(|db| ["--db".to_string(), db])
        .collect();

    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < 7 && Instant::now() < deadline {
        let out = Command::new(bin())
            .args(["snapshot", "--json"])
            .args(&args)
            .output()
            .unwrap();
        let snap: Snapshot = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let shared = |rel: &str| {
            snap.blocking
                .iter()
                .any(|e| e.cross_invocation && e.relation.as_deref() == Some(rel))
        };
        if shared("public.shared_counters") {
            seen.insert("collision on a shared table in public");
        }
        if snap
            .lock_trees
            .iter()
            .any(|t| t.depth >= 2 && t.victims >= 2)
        {
            seen.insert("chain of three");
        }
        if snap.lock_trees.iter().any(|t| t.root_idle_in_transaction) {
            seen.insert("idle in transaction blocker");
        }
        if snap.blocking.iter().any(|e| e.queued_behind) {
            seen.insert("queued DDL making readers wait");
        }
        if snap
            .schemas
            .iter()
            .any(|s| s.status == pgswarm::domain::snapshot::SchemaStatus::Orphaned)
        {
            seen.insert("crashed invocation's orphaned schemas");
        }
        if snap
            .schemas
            .iter()
            .any(|s| s.status == pgswarm::domain::snapshot::SchemaStatus::Legacy)
        {
            seen.insert("legacy schema");
        }
        if snap.invocations.iter().any(|i| i.forced && i.live) {
            seen.insert("forced debug namespace");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(seen.len(), 7, "incident kinds seen: {seen:?}");

    // SIGTERM: the demo stops its server and removes its directory.
    unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) };
    let status = demo.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pgswarm-"))
        .collect();
    assert!(
        left.is_empty(),
        "left behind (the demo keeps no template either): {left:?}"
    );
    // Nothing still answers on the demo's socket.
    let out = Command::new(bin())
        .args(["snapshot", "--json"])
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the demo server is gone");
}

#[tokio::test]
async fn record_then_replay_round_trips() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE t (id int)");
    let c = srv.conninfo("platform");
    let admin = connect_as(&c, "admin").await;
    let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    holder.batch_execute("BEGIN; LOCK TABLE t").await.unwrap();
    let waiter = connect_as(&c, &format!("pytest_gw0_{NS_B}")).await;
    let pid = backend_pid(&waiter).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM t");
    wait_until_lock_wait(&admin, pid).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.jsonl");
    std::fs::write(&file, "").unwrap(); // appending to an existing file is fine
    let out = Command::new(bin())
        .args(["record", "--duration", "3s", "--interval", "0.5s", "--out"])
        .arg(&file)
        .arg("--db")
        .arg(entry("platform", &c))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{} lines", lines.len());
    for line in &lines {
        let recorded: Snapshot = serde_json::from_str(line).unwrap();
        assert_eq!(recorded.blocking.len(), 1);
        let out = Command::new(bin())
            .args(["snapshot", "--json", "--replay"])
            .arg(&file)
            .args(["--at", &recorded.taken_at.to_rfc3339()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let replayed: Snapshot = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            replayed, recorded,
            "what --replay --at prints is what was recorded"
        );
    }

    // A corrupt line in the middle is named and skipped; replay goes on past it.
    let mut broken = String::new();
    broken.push_str(lines[0]);
    broken.push_str("\n{\"schema_version\": 1, \"taken_at\n");
    broken.push_str(lines[1]);
    broken.push('\n');
    std::fs::write(&file, broken).unwrap();
    let out = Command::new(bin())
        .args(["snapshot", "--replay"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("CROSS-INVOCATION"));
    let out = Command::new(bin())
        .args(["snapshot", "--replay"])
        .arg(&file)
        .args(["--at", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"yesterday\""));

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

#[test]
fn the_bundled_recording_is_a_real_demo_recording() {
    let (snaps, bad) = pgswarm::cmd::recording::parse_recording(
        "bundled",
        pgswarm::cmd::recording::BUNDLED_RECORDING,
    )
    .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(snaps.len() >= 5);
    assert!(snaps
        .iter()
        .any(|s| s.blocking.iter().any(|e| e.cross_invocation)));
    assert!(snaps.iter().any(|s| !s.lock_trees.is_empty()));
}

#[test]
fn a_killed_demo_still_leaves_no_server_behind() {
    let (tmp, mut demo) = spawn_demo();
    let stderr = demo.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("Ctrl-C or SIGTERM") {
            break;
        }
    }
    let server_dirs = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pgswarm-pg-"))
            .collect()
    };
    assert_eq!(server_dirs().len(), 1, "the demo's server is running");
    // SIGKILL: no destructor runs; the watchdog sees the pipe close and stops the server.
    demo.kill().unwrap();
    demo.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server_dirs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            server_dirs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_refuses_databases_that_do_not_look_like_test_databases() {
    let out = Command::new(bin())
        .args([
            "demo",
            "--no-tui",
            "--db",
            "dbname=orders",
            "--db",
            "dbname=billing",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"orders\"") && err.contains("--force"),
        "{err}"
    );
}

/// Issue 11, finding 2: over two servers, every line of a recording lists every configured database;
/// a line written before both servers answered is incomplete, and no live run's schema is ever
/// called orphaned (the run's session is on the other server).
#[tokio::test]
async fn a_recording_over_two_servers_never_claims_more_than_it_read() {
    use pgswarm::domain::snapshot::SchemaStatus;
    let s1 = start_cluster(
        &["platform"],
        pgswarm::pg::cluster::ClusterOptions::default(),
    );
    let s2 = start_cluster(&["tenant"], pgswarm::pg::cluster::ClusterOptions::default());
    let schema = format!("test_{NS_A}_gw0");
    s1.psql("platform", &format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let _live = connect_as(&s2.conninfo("tenant"), &format!("pytest_gw0_{NS_A}")).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec.jsonl");
    let status = std::process::Command::new(bin())
        .args(["record", "--duration", "3s", "--interval", "0.5s", "--out"])
        .arg(&out)
        .arg("--db")
        .arg(entry("platform", &s1.conninfo("platform")))
        .arg("--db")
        .arg(entry("tenant", &s2.conninfo("tenant")))
        .output()
        .unwrap();
    assert_exit(&status, 0);
    let (snaps, bad) = pgswarm::cmd::recording::read_recording(&out).unwrap();
    assert!(
        bad.is_empty() && snaps.len() >= 2,
        "{bad:?} {}",
        snaps.len()
    );
    for (i, s) in snaps.iter().enumerate() {
        let names: Vec<&str> = s.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["platform", "tenant"], "line {}", i + 1);
        let unread = s.databases.iter().any(|d| d.not_read_yet);
        assert!(!(unread && s.active_detection_complete), "line {}", i + 1);
        let ours = s.schemas.iter().find(|x| x.schema == schema);
        if let Some(x) = ours {
            assert_ne!(x.status, SchemaStatus::Orphaned, "line {}: {s:#?}", i + 1);
        }
    }
    let last = snaps.last().unwrap();
    assert!(last.active_detection_complete);
    assert_eq!(
        last.schemas
            .iter()
            .find(|x| x.schema == schema)
            .map(|x| x.status),
        Some(SchemaStatus::Live)
    );
}
