//! Real SQLite locks, taken by Python's `sqlite3` in child processes, observed through `/proc`.
//!
//! Each holder takes its lock, prints `ready <pid>` and waits on stdin; the test observes, then closes
//! stdin and kills the pids it spawned. These tests need `python3` with its `sqlite3` module (SQLite
//! 3.x on Linux); without it they fail and say what to install.

mod common;

use chrono::Utc;
use pgswarm::domain::naming::Worker;
use pgswarm::domain::sqlite::{FirstSeen, JournalMode, LockMode, LockState, SqliteReport};
use pgswarm::sqlite::{observe, SqliteOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Takes a lock as told and holds it until stdin closes.
const HOLDER: &str = r#"
import os, sqlite3, sys
path, mode, action = sys.argv[1:4]
if action == "open":
    held = open(path, "rb")
else:
    c = sqlite3.connect(path, isolation_level=None, timeout=0)
    c.execute("pragma journal_mode=" + mode)
    c.execute("create table if not exists t(x)")
    if action == "immediate":
        c.execute("begin immediate")
    elif action == "write":
        c.execute("begin immediate")
        c.execute("insert into t values (1)")
    elif action == "exclusive":
        c.execute("begin exclusive")
    elif action == "read":
        c.execute("begin")
        c.execute("select count(*) from t").fetchall()
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"#;

/// Starts the holder as a child with a stripped environment, and waits for it like the holder does.
const PARENT: &str = r#"
import os, subprocess, sys
env = {k: v for k, v in os.environ.items()
       if k not in ("PYTEST_XDIST_WORKER", "HONEY_TEST_SCHEMA_NAMESPACE", "PYTEST_XDIST_TESTRUNUID")}
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]] + sys.argv[2:], env=env)
child.wait()
"#;

/// Children this test spawned; killed (by their own pids only) when dropped.
struct Held {
    children: Vec<Child>,
    pid: u32,
    extra_pids: Vec<u32>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for pid in &self.extra_pids {
            // SAFETY: kill(2) with a pid this test started (the grandchild reported its own pid).
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn prepare_python() -> Command {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Spawns `python3 -c script args`, waits for `ready <pid>` and returns the holding pid.
fn spawn(script: &str, args: &[&str], env: &[(&str, &str)]) -> Held {
    let mut cmd = prepare_python();
    cmd.arg("-c").arg(script).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "these tests need python3 with the sqlite3 module (Debian: apt-get install python3); \
             spawning it failed: {e}"
        )
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the holder's ready line");
    let mut held = Held {
        pid: child.id(),
        children: vec![child],
        extra_pids: Vec::new(),
    };
    let pid: u32 = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("holder did not get ready, it said {line:?}"));
    if pid != held.pid {
        held.extra_pids.push(pid);
        held.pid = pid;
    }
    held
}

/// Creates a database in the given journal mode (and closes it, so nothing is held).
fn create_db(dir: &Path, mode: &str) -> PathBuf {
    create_named_db(dir, "prefect_gw0.db", mode)
}

fn create_named_db(dir: &Path, name: &str, mode: &str) -> PathBuf {
    let db = dir.join(name);
    let status = prepare_python()
        .stdin(Stdio::null())
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute('pragma journal_mode=' + sys.argv[2]); c.execute('create table t(x)'); \
             c.commit(); c.close()",
        )
        .arg(&db)
        .arg(mode)
        .status()
        .expect("python3 with the sqlite3 module is needed (Debian: apt-get install python3)");
    assert!(status.success(), "creating the database with python3 failed (is its sqlite3 module installed? Debian: apt-get install python3)");
    db
}

fn observe_one(db: &Path, opts: &SqliteOptions, tracker: &mut FirstSeen) -> SqliteReport {
    let mut reports = observe(
        &[db.to_string_lossy().into_owned()],
        opts,
        tracker,
        Utc::now(),
    );
    assert_eq!(reports.len(), 1, "{reports:#?}");
    reports.remove(0)
}

fn collect_locks_of(report: &SqliteReport, pid: u32) -> Vec<LockState> {
    report
        .holders
        .iter()
        .filter(|h| h.pid == Some(pid))
        .map(|h| h.lock)
        .collect()
}

#[test]
fn begin_immediate_in_rollback_mode_is_reserved_by_its_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "delete");
    let held = spawn(
        HOLDER,
        &[&db.to_string_lossy(), "delete", "immediate"],
        &[("PYTEST_XDIST_WORKER", "gw0")],
    );
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    assert_eq!(r.journal_mode, JournalMode::Rollback);
    assert_eq!(
        collect_locks_of(&r, held.pid),
        vec![LockState::Reserved],
        "{r:#?}"
    );
    let h = &r.holders[0];
    assert_eq!(h.worker, Some(Worker::Gw(0)));
    assert!(h.via.is_empty());
    assert!(h.command.contains("python"), "{:?}", h.command);
    assert!(r.open_without_lock.iter().all(|o| o.pid != held.pid));
}

#[test]
fn begin_exclusive_in_rollback_mode_is_exclusive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "delete");
    let held = spawn(HOLDER, &[&db.to_string_lossy(), "delete", "exclusive"], &[]);
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    assert_eq!(
        collect_locks_of(&r, held.pid),
        vec![LockState::Exclusive],
        "{r:#?}"
    );
    assert_eq!(r.holders[0].worker, None);
}

#[test]
fn a_wal_write_transaction_holds_wal_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "wal");
    let held = spawn(HOLDER, &[&db.to_string_lossy(), "wal", "write"], &[]);
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    assert_eq!(r.journal_mode, JournalMode::Wal);
    let locks = collect_locks_of(&r, held.pid);
    assert!(locks.contains(&LockState::WalWrite), "{r:#?}");
    // The database file's SHARED lock and the dead-man switch only mean "connected" in WAL mode.
    assert!(!locks.contains(&LockState::Shared) && !locks.contains(&LockState::Dms));
}

#[test]
fn a_wal_reader_holds_a_read_mark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "wal");
    let held = spawn(HOLDER, &[&db.to_string_lossy(), "wal", "read"], &[]);
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    let locks = collect_locks_of(&r, held.pid);
    assert_eq!(locks.len(), 1, "{r:#?}");
    assert!(matches!(locks[0], LockState::WalRead(_)), "{r:#?}");
    assert_eq!(r.holders[0].mode, LockMode::Shared);
    assert!(!locks[0].is_write());
}

#[test]
fn a_subprocess_without_the_variables_is_attributed_via_its_parent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "delete");
    let held = spawn(
        PARENT,
        &[HOLDER, &db.to_string_lossy(), "delete", "immediate"],
        &[
            ("PYTEST_XDIST_WORKER", "gw1"),
            ("HONEY_TEST_SCHEMA_NAMESPACE", "abc123"),
        ],
    );
    let parent = held.children[0].id();
    assert_ne!(held.pid, parent, "the lock must be held by the child");
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    assert_eq!(
        collect_locks_of(&r, held.pid),
        vec![LockState::Reserved],
        "{r:#?}"
    );
    let h = &r.holders[0];
    assert_eq!(h.worker, Some(Worker::Gw(1)));
    assert_eq!(h.namespace.as_ref().map(|n| n.as_str()), Some("abc123"));
    assert_eq!(h.via, vec![parent]);
}

#[test]
fn a_process_with_the_file_open_and_no_lock_is_open_without_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "delete");
    let held = spawn(
        HOLDER,
        &[&db.to_string_lossy(), "delete", "open"],
        &[("PYTEST_XDIST_WORKER", "gw2")],
    );
    let r = observe_one(&db, &SqliteOptions::default(), &mut FirstSeen::new());
    assert!(collect_locks_of(&r, held.pid).is_empty(), "{r:#?}");
    let open: Vec<_> = r
        .open_without_lock
        .iter()
        .filter(|o| o.pid == held.pid)
        .collect();
    assert_eq!(open.len(), 1, "{r:#?}");
    assert_eq!(open[0].worker, Some(Worker::Gw(2)));
    assert!(!open[0].connected);
}

#[test]
fn held_for_grows_and_an_old_write_lock_is_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = create_db(dir.path(), "delete");
    let held = spawn(HOLDER, &[&db.to_string_lossy(), "delete", "immediate"], &[]);
    let opts = SqliteOptions {
        write_lock_warn_after: Duration::from_millis(200),
        ..SqliteOptions::default()
    };
    let mut tracker = FirstSeen::new();
    let first = observe_one(&db, &opts, &mut tracker);
    assert_eq!(
        collect_locks_of(&first, held.pid),
        vec![LockState::Reserved]
    );
    assert!(first.warnings.is_empty(), "{first:#?}");
    std::thread::sleep(Duration::from_millis(400));
    let second = observe_one(&db, &opts, &mut tracker);
    assert!(
        second.holders[0].held_for_s >= first.holders[0].held_for_s + 0.3,
        "{first:#?} {second:#?}"
    );
    assert_eq!(second.warnings.len(), 1, "{second:#?}");
    assert_eq!(second.warnings[0].pid, Some(held.pid));
    assert_eq!(second.warnings[0].lock, LockState::Reserved);
}

#[test]
fn a_pattern_matching_nothing_is_an_error_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pattern = format!("{}/prefect_gw*.db", dir.path().display());
    let reports = observe(
        std::slice::from_ref(&pattern),
        &SqliteOptions::default(),
        &mut FirstSeen::new(),
        Utc::now(),
    );
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].path, pattern);
    assert_eq!(reports[0].journal_mode, JournalMode::Unknown);
    assert!(reports[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("no file matches")));
}

#[test]
fn one_pattern_gives_one_report_per_worker_database_with_its_own_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut held = Vec::new();
    for i in 0..4 {
        let db = create_named_db(dir.path(), &format!("prefect_gw{i}.db"), "delete");
        let worker = format!("gw{i}");
        held.push(spawn(
            HOLDER,
            &[&db.to_string_lossy(), "delete", "immediate"],
            &[("PYTEST_XDIST_WORKER", &worker)],
        ));
    }
    let pattern = format!("{}/prefect_gw*.db", dir.path().display());
    let started = std::time::Instant::now();
    let reports = observe(
        &[pattern],
        &SqliteOptions::default(),
        &mut FirstSeen::new(),
        Utc::now(),
    );
    let elapsed = started.elapsed();
    eprintln!(
        "observe() of 4 databases took {elapsed:?}; error: {:?}",
        reports[0].error
    );
    assert_eq!(reports.len(), 4, "{reports:#?}");
    for (i, (r, h)) in reports.iter().zip(&held).enumerate() {
        assert!(r.path.ends_with(&format!("prefect_gw{i}.db")), "{r:#?}");
        assert_eq!(
            collect_locks_of(r, h.pid),
            vec![LockState::Reserved],
            "{r:#?}"
        );
        assert_eq!(r.holders.len(), 1, "{r:#?}");
        assert_eq!(r.holders[0].worker, Some(Worker::Gw(i as u32)));
    }
}

/// The command line (issue 17): `snapshot --sqlite` with no PostgreSQL configured reports the holder
/// by worker in JSON and text, a `[[sqlite]]` config entry does the same, and a pattern matching
/// nothing exits 3 and says so.
#[test]
fn snapshot_with_only_sqlite_targets_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = create_db(dir.path(), "delete");
    let _holder = spawn(
        HOLDER,
        &[db.to_str().unwrap(), "delete", "immediate"],
        &[("PYTEST_XDIST_WORKER", "gw0")],
    );
    let pattern = format!("{}/prefect_gw*.db", dir.path().display());
    let pgswarm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(args)
            // Nothing from a developer's environment may add a PostgreSQL database.
            .env_remove("PGSWARM_DB")
            .env("PGHOST", "/nonexistent")
            .output()
            .unwrap()
    };
    let out = pgswarm(&["snapshot", "--json", "--sqlite", &pattern]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["databases"].as_array().unwrap().len(),
        0,
        "no PostgreSQL tried"
    );
    let report = &json["sqlite"][0];
    assert_eq!(report["path"], db.to_str().unwrap());
    assert_eq!(report["journal_mode"], "rollback");
    assert_eq!(report["holders"][0]["lock"], "reserved");
    assert_eq!(report["holders"][0]["worker"], "gw0");

    let text = pgswarm(&["snapshot", "--sqlite", &pattern]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("SQLITE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("reserved") && l.contains("gw0")),
        "{text}"
    );

    let config = dir.path().join("pgswarm.toml");
    std::fs::write(&config, format!("[[sqlite]]\npath = {pattern:?}\n")).unwrap();
    let out = pgswarm(&["snapshot", "--json", "--config", config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["sqlite"][0]["holders"][0]["lock"], "reserved");

    let missing = format!("{}/nothing_*.db", dir.path().display());
    let out = pgswarm(&["snapshot", "--sqlite", &missing]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file matches"));
}

/// `record` with SQLite targets only (issue 17): the stream observes them at each refresh, so a
/// held lock's age grows from one recorded snapshot to the next, and so does the snapshot's time.
#[test]
fn record_keeps_sqlite_holders_and_their_growing_age() {
    let dir = tempfile::tempdir().unwrap();
    let db = create_db(dir.path(), "wal");
    let _holder = spawn(
        HOLDER,
        &[db.to_str().unwrap(), "wal", "write"],
        &[("PYTEST_XDIST_WORKER", "gw0")],
    );
    let out_file = dir.path().join("rec.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "record",
            "--sqlite",
            db.to_str().unwrap(),
            "--interval",
            "0.5s",
        ])
        .args(["--duration", "2.6s", "--out", out_file.to_str().unwrap()])
        .env_remove("PGSWARM_DB")
        .env("PGHOST", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{} snapshots", lines.len());
    let ages: Vec<f64> = lines
        .iter()
        .map(|s| s["sqlite"][0]["holders"][0]["held_for_s"].as_f64().unwrap())
        .collect();
    assert_eq!(lines[0]["sqlite"][0]["holders"][0]["lock"], "wal_write");
    assert!(ages.windows(2).all(|w| w[1] > w[0]), "ages {ages:?}");
    let times: Vec<&str> = lines
        .iter()
        .map(|s| s["taken_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "times {times:?}");
}

/// Black-box attack finding (issue 17): back-to-back short write transactions, sampled every 0.7 s,
/// must not add up to one long hold and a false "held too long" warning: a commit between two
/// observations restarts the write lock's age.
#[test]
fn short_write_transactions_in_a_row_are_not_one_long_hold() {
    const LOOPER: &str = r#"
import os, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("create table if not exists t(x)")
print("ready", os.getpid(), flush=True)
end = time.time() + 6
while time.time() < end:
    c.execute("begin immediate"); c.execute("insert into t values (1)")
    time.sleep(0.3)
    c.execute("commit")
    time.sleep(0.002)
sys.stdin.read()
"#;
    let dir = tempfile::tempdir().unwrap();
    let db = create_db(dir.path(), "delete");
    let _looper = spawn(LOOPER, &[db.to_str().unwrap()], &[]);
    let opts = SqliteOptions {
        write_lock_warn_after: Duration::from_millis(1_000),
        ..SqliteOptions::default()
    };
    let mut tracker = FirstSeen::new();
    let mut seen_writer = 0;
    for _ in 0..6 {
        let r = observe_one(&db, &opts, &mut tracker);
        for h in r.holders.iter().filter(|h| h.lock.is_write()) {
            seen_writer += 1;
            assert!(h.held_for_s < 1.0, "one 0.3 s transaction at a time: {h:?}");
        }
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(seen_writer >= 3, "the writer was seen {seen_writer} times");
}

/// Black-box attack findings (issue 17): a file whose name has glob characters is found by its
/// plain name, and the same file reached through a hard link, a symbolic link and a second pattern
/// is one database, reported once.
#[test]
fn one_file_through_links_and_odd_names_is_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = create_named_db(dir.path(), "glob[1]*.db", "delete");
    let _holder = spawn(
        HOLDER,
        &[db.to_str().unwrap(), "delete", "immediate"],
        &[("PYTEST_XDIST_WORKER", "gw4")],
    );
    std::fs::hard_link(&db, dir.path().join("hard.db")).unwrap();
    std::os::unix::fs::symlink(&db, dir.path().join("sym.db")).unwrap();
    let targets = [
        db.to_string_lossy().into_owned(),
        format!("{}/*.db", dir.path().display()),
        dir.path().join("hard.db").to_string_lossy().into_owned(),
    ];
    let reports = observe(
        &targets,
        &SqliteOptions::default(),
        &mut FirstSeen::new(),
        Utc::now(),
    );
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0].path, db.to_string_lossy());
    assert_eq!(reports[0].holders.len(), 1);
    assert_eq!(reports[0].holders[0].lock, LockState::Reserved);
}

/// Issue 17: SQLite holders are grouped with the PostgreSQL invocation of the same run (by the
/// namespace in their environment), against a real server.
#[tokio::test(flavor = "multi_thread")]
async fn a_runs_sqlite_lock_is_counted_with_its_postgresql_invocation() {
    let srv = common::Server::start(&["app_test"]);
    let ci = srv.conninfo("app_test");
    let _session = common::connect_as(&ci, &format!("pytest_gw0_{}", common::NS_A)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = create_db(dir.path(), "delete");
    let _holder = spawn(
        HOLDER,
        &[db.to_str().unwrap(), "delete", "immediate"],
        &[
            ("PYTEST_XDIST_WORKER", "gw0"),
            ("HONEY_TEST_SCHEMA_NAMESPACE", common::NS_A),
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["snapshot", "--json", "--db", &format!("app={ci}")])
        .args(["--sqlite", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inv = json["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["namespace"] == common::NS_A)
        .expect("the run's invocation");
    assert_eq!(inv["sessions"], 1);
    assert_eq!(inv["sqlite_locks"], 1);
}
