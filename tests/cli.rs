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
    c.env_remove("XDG_CONFIG_HOME");
    c.env_remove("PGSWARM_CONFIG");
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

/// Issue 27: completion scripts for each shell name every subcommand; bash parses its own.
#[test]
fn completions_for_each_shell_name_every_subcommand() {
    let subcommands = [
        "watch",
        "snapshot",
        "sweep",
        "demo",
        "record",
        "incidents",
        "cancel",
        "terminate",
        "completions",
        "man",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let out = pgswarm().args(["completions", shell]).output().unwrap();
        assert_exit(&out, 0);
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in subcommands {
            assert!(script.contains(sub), "{shell}: {sub} missing");
        }
        assert!(script.contains("no-flight-log"), "{shell}");
        if shell == "bash" {
            let has_bash = std::process::Command::new("bash")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            if has_bash {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("pgswarm.bash");
                std::fs::write(&file, &script).unwrap();
                let check = std::process::Command::new("bash")
                    .arg("-n")
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(
                    check.status.success(),
                    "{}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
        }
    }
    pgswarm()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("tcsh"));
}

/// Issue 27: `pgswarm man` prints a roff page naming every subcommand; `man COMMAND` that
/// command's page, with the global options; an unknown command is named.
#[test]
fn man_pages_are_roff_and_name_every_subcommand() {
    let out = pgswarm().arg("man").output().unwrap();
    assert_exit(&out, 0);
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH pgswarm 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH OPTIONS"));
    for sub in [
        "watch",
        "snapshot",
        "sweep",
        "demo",
        "record",
        "incidents",
        "cancel",
        "terminate",
        "completions",
        "man",
    ] {
        assert!(page.contains(&format!("pgswarm\\-{sub}(1)")), "{sub}");
        let out = pgswarm().args(["man", sub]).output().unwrap();
        assert_exit(&out, 0);
        let sub_page = String::from_utf8(out.stdout).unwrap();
        assert!(
            sub_page.contains(&format!(".TH pgswarm-{sub} 1")),
            "{sub_page}"
        );
        assert!(sub_page.contains("\\-\\-db"), "global options: {sub}");
    }
    pgswarm()
        .args(["man", "swep"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"swep\"").and(predicate::str::contains("sweep")));
}

/// Issue 27: `$XDG_CONFIG_HOME/pgswarm/config.toml` is read when it exists; an invalid one is an
/// error naming it; `--config` wins over it; a missing one is nothing.
#[test]
fn the_default_config_file_is_read_when_present_and_named_when_invalid() {
    let xdg = tempfile::tempdir().unwrap();
    let file = xdg.path().join("pgswarm/config.toml");
    // Missing: nothing is read (sweep runs into the missing database, not a config error).
    let sweep = |extra: &[&str]| {
        let mut c = pgswarm();
        c.env("XDG_CONFIG_HOME", xdg.path())
            .args(["sweep", "--dry-run", "--db", "x=host=/nonexistent dbname=x"])
            .args(extra);
        c.output().unwrap()
    };
    let out = sweep(&[]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("config"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "read_only = true\n").unwrap();
    let out = sweep(&[]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains("config.toml"),
        "{err}"
    );
    std::fs::write(&file, "read_olny = true\n").unwrap();
    let out = sweep(&[]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("read_olny"),
        "{err}"
    );
    // An explicit --config (or PGSWARM_CONFIG) wins: the invalid default is not read.
    let other = xdg.path().join("other.toml");
    std::fs::write(&other, "read_only = true\n").unwrap();
    let out = sweep(&["--config", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.toml") && !err.contains("read_olny"),
        "{err}"
    );
    let out = pgswarm()
        .env("XDG_CONFIG_HOME", xdg.path())
        .env("PGSWARM_CONFIG", &other)
        .args(["sweep", "--dry-run", "--db", "x=host=/nonexistent dbname=x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.toml") && !err.contains("read_olny"),
        "{err}"
    );
}

/// Issue 27: `--no-flight-log` works before the subcommand for the dashboard (the default), and is
/// refused by name where it would be ignored.
#[test]
fn no_flight_log_works_without_watch_and_is_refused_where_it_means_nothing() {
    // The dashboard needs a terminal: the flag is accepted, the refusal is about the terminal.
    let out = pgswarm()
        .args(["--no-flight-log", "--db", "dbname=x"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pgswarm snapshot") && !err.contains("unexpected"),
        "{err}"
    );
    for args in [
        &["--no-flight-log", "watch", "--db", "dbname=x"][..],
        &["watch", "--no-flight-log", "--db", "dbname=x"][..],
    ] {
        let out = pgswarm().args(args).output().unwrap();
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("pgswarm snapshot"));
    }
    let out = pgswarm()
        .args(["--no-flight-log", "snapshot", "--db", "dbname=x"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-flight-log"));
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
    // Issue 27: single quotes around a NAME=value's value, as `pgswarm demo` prints them.
    let entries = format!(
        "platform='{}'   tenant_a='{}'",
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
    assert!(snap.databases.iter().all(|d| d.reachable), "{entries}");
    assert_eq!(snap.databases.len(), 2);
    // Unquoted, a key=value entry splits on its spaces: the error says how to quote it.
    let out = pgswarm()
        .args(["snapshot"])
        .env("PGSWARM_DB", srv.conninfo("platform"))
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quote an entry"), "{err}");

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
