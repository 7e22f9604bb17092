//! The `pgswarm` binary: exit codes, error messages, JSON output, and that no password ever leaks.

mod common;

use assert_cmd::Command;
use common::*;
use pgswarm::domain::snapshot::Snapshot;
use predicates::prelude::*;

/// The binary with a clean environment (no PG* or PGSWARM_* leaking in from the caller).
fn pgswarm() -> Command {
    let mut c = Command::cargo_bin("pgswarm").expect("binary built");
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") && k != "PGSWARM_PG_BINDIR" {
            c.env_remove(k);
        }
    }
    c.env("HOME", std::env::temp_dir());
    c
}

#[test]
fn help_shows_examples_and_exit_codes() {
    pgswarm()
        .args(["snapshot", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--fail-on-blocked"));
    pgswarm()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("Exit codes"));
}

#[test]
fn configuration_errors_exit_2_and_name_the_value() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["snapshot", "--db", "x=sslmode=sometimes"],
            "\"sometimes\"",
        ),
        (
            &["snapshot", "--db", "x=host=/tmp frobnicate=1"],
            "\"frobnicate\"",
        ),
        (&["snapshot", "--db", "x=port=70000"], "\"70000\""),
        (
            &["snapshot", "--app-prefix", "Py-Test", "--db", "dbname=x"],
            "\"Py-Test\"",
        ),
        (
            &["snapshot", "--schema-prefix", "test_", "--db", "dbname=x"],
            "\"test_\"",
        ),
        (
            &["snapshot", "--connect-timeout", "soon", "--db", "dbname=x"],
            "\"soon\"",
        ),
        (
            &["snapshot", "--db", "a=dbname=x", "--db", "a=dbname=y"],
            "configured twice",
        ),
        (
            &["snapshot", "--config", "/nonexistent/pgswarm.toml"],
            "/nonexistent/pgswarm.toml",
        ),
    ];
    for (args, needle) in cases {
        pgswarm()
            .args(*args)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains(*needle));
    }
}

#[test]
fn config_file_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[[databases]]\nname = \"a\"\nuri = \"dbname=x\"\n").unwrap();
    pgswarm()
        .args(["snapshot", "--config"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("uri"));
    std::fs::write(&f, "\u{0}\u{ff}[[[").unwrap();
    pgswarm()
        .args(["snapshot", "--config"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("c.toml"));
}

#[test]
fn unknown_subcommand_and_flag_are_usage_errors() {
    pgswarm().arg("snapshoot").assert().code(2);
    pgswarm().args(["snapshot", "--jsn"]).assert().code(2);
}

#[test]
fn a_password_never_appears_in_any_output() {
    let nowhere = tempfile::tempdir().unwrap();
    for db in [
        "x=postgres://alice:S3cr3tPw@127.0.0.1:1/db?connect_timeout=2".to_string(),
        format!(
            "x=host={} user=alice password=S3cr3tPw dbname=db",
            nowhere.path().display()
        ),
    ] {
        for json in [false, true] {
            let mut c = pgswarm();
            c.args(["snapshot", "--db", &db]);
            if json {
                c.arg("--json");
            }
            let out = c.output().unwrap();
            assert_eq!(out.status.code(), Some(3));
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains("S3cr3tPw"), "password leaked: {all}");
            assert!(
                all.contains("alice@"),
                "target is shown without the password: {all}"
            );
        }
    }
}

/// Issue 11, finding 4: malformed entries in every configuration source print errors that name the
/// problem, exit 2, and never show the password (the property test covers many more shapes).
#[test]
fn malformed_entries_print_no_password_from_any_source() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        "x=postgres://alice:S3cr3tPw@db1:99999/x",
        "x=postgres://alice:S3cr3tPw@[::1/x",
        "x=host=db1 password='S3cr3tPw sslmode=bogus",
        "x=host=db1 password=S3cr3tPw sslmode=bogus",
        "x=host=db1 password=S3cr3tPw nonsense=1",
    ];
    for entry in entries {
        let toml = dir.path().join("c.toml");
        std::fs::write(
            &toml,
            format!(
                "[[databases]]\nurl = \"{}\n",
                entry.trim_start_matches("x=")
            ),
        )
        .unwrap();
        let runs: [(&str, Vec<String>, Option<String>); 3] = [
            (
                "--db",
                vec!["snapshot".into(), "--db".into(), entry.into()],
                None,
            ),
            (
                "PGSWARM_DB",
                vec!["snapshot".into()],
                Some(format!("\"{entry}\"")),
            ),
            (
                "--config",
                vec![
                    "snapshot".into(),
                    "--config".into(),
                    toml.display().to_string(),
                ],
                None,
            ),
        ];
        for (source, args, env) in runs {
            let mut c = pgswarm();
            c.args(&args);
            if let Some(v) = env {
                c.env("PGSWARM_DB", v);
            }
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{source} {entry}: {err}");
            assert!(!err.contains("S3cr3tPw"), "{source} leaked: {err}");
            assert!(err.contains("pgswarm: error:"), "{source}: {err}");
        }
    }
}

#[test]
fn snapshot_json_exit_codes_and_blocked() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE t (id int)");
    let c = srv.conninfo("platform");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = entry("platform", &c);

    // Nothing blocked: 0, with or without --fail-on-blocked.
    pgswarm()
        .args(["snapshot", "--fail-on-blocked", "--db", &db])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("nothing is blocked"));

    // Make a blocked pair.
    let (holder, task) = rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        holder.batch_execute("BEGIN; LOCK TABLE t").await.unwrap();
        let waiter = connect_as(&c, &format!("pytest_gw0_{NS_B}")).await;
        let pid = backend_pid(&waiter).await;
        let task = spawn_blocking_query(waiter, "SELECT * FROM t");
        wait_until_lock_wait(&admin, pid).await;
        (holder, task)
    });
    let out = pgswarm()
        .args(["snapshot", "--json", "--fail-on-blocked", "--db", &db])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let snap: Snapshot = serde_json::from_slice(&out.stdout).expect("stdout is one JSON snapshot");
    assert_eq!(snap.schema_version, 1);
    assert_eq!(snap.blocking.len(), 1);
    assert!(snap.blocking[0].cross_invocation);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "schema_version",
        "taken_at",
        "databases",
        "invocations",
        "sessions",
        "blocking",
        "schemas",
    ] {
        assert!(value.get(key).is_some(), "missing top-level {key}");
    }
    for key in [
        "database",
        "blocked_pid",
        "blocker_pid",
        "blocked_namespace",
        "blocker_namespace",
        "cross_invocation",
        "lock_type",
        "lock_mode",
        "relation",
        "waiting_s",
        "root_pid",
    ] {
        assert!(
            value["blocking"][0].get(key).is_some(),
            "missing blocking[].{key}"
        );
    }
    // Text report shows the collision.
    pgswarm()
        .args(["snapshot", "--db", &db])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("CROSS-INVOCATION"))
        .stdout(predicate::str::contains("public.t"));

    // One reachable and one unreachable database: 3, and the reachable one is still reported.
    let nowhere = tempfile::tempdir().unwrap();
    let out = pgswarm()
        .args([
            "snapshot",
            "--json",
            "--fail-on-blocked",
            "--db",
            &db,
            "--db",
        ])
        .arg(format!(
            "gone=host={} dbname=gone",
            nowhere.path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let snap: Snapshot = serde_json::from_slice(&out.stdout).unwrap();
    assert!(snap.databases[0].reachable && !snap.databases[1].reachable);
    assert_eq!(snap.blocking.len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"gone\" unreachable"));

    rt.block_on(async {
        holder.batch_execute("ROLLBACK").await.unwrap();
        task.await.unwrap().1.unwrap();
    });
}

#[test]
fn pgswarm_db_environment_and_libpq_environment() {
    let srv = Server::start(&["platform", "tenant_a"]);
    let entries = format!(
        "\"platform={}\" \"tenant_a={}\"",
        srv.conninfo("platform"),
        srv.conninfo("tenant_a")
    );
    let out = pgswarm()
        .args(["snapshot", "--json"])
        .env("PGSWARM_DB", &entries)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let snap: Snapshot = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = snap.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["platform", "tenant_a"]);

    // No --db, no PGSWARM_DB: one database from PGHOST/PGPORT/PGUSER/PGDATABASE, like psql.
    let info = srv.conninfo("tenant_a");
    let field = |k: &str| {
        info.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    if let (Some(host), Some(port)) = (field("host"), field("port")) {
        let out = pgswarm()
            .args(["snapshot", "--json"])
            .env("PGHOST", host)
            .env("PGPORT", port)
            .env("PGUSER", "postgres")
            .env("PGDATABASE", srv.dbname("tenant_a"))
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let snap: Snapshot = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(snap.databases.len(), 1);
        assert_eq!(snap.databases[0].name, srv.dbname("tenant_a"));
        assert!(snap.databases[0].reachable);
    }
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let nowhere = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgswarm"))
        .args(["snapshot", "--db"])
        .arg(format!("x=host={} dbname=x", nowhere.path().display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    // Exit 3 for the unreachable database, not a panic (101) on the closed pipe.
    assert_eq!(status.code(), Some(3));
}
