//! Cancel and terminate against real servers: a whole invocation on two servers, a cancel that
//! leaves the session, a target whose identity changed after the plan (skipped, not hit), a role
//! without `pg_signal_backend` (42501 in `failed`), read-only and an unreadable server (nothing
//! sent), a cancel of an idle-in-transaction root (`released_nothing`).

mod common;

use common::*;
use pgswarm::domain::signal::{build_signal_report, plan_signal, Action, Selector};
use pgswarm::domain::snapshot::build_snapshot;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe_once, ProbeOptions};
use std::process::Command;
use std::time::Duration;

fn pgswarm(args: &[&str], dbs: &[String]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
    cmd.args(args);
    for d in dbs {
        cmd.args(["--db", d]);
    }
    cmd.output().expect("pgswarm runs")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn alive(admin: &tokio_postgres::Client, pid: i32) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .is_some()
}

#[test]
fn terminating_an_invocation_on_two_servers_frees_the_waiting_run_and_touches_nothing_else() {
    let one = Server::start(&["platform"]);
    let two = Server::start(&["tenant"]);
    one.psql("platform", "CREATE TABLE accounts (n int)");
    two.psql("tenant", "CREATE TABLE ledger (n int)");
    let (c1, c2) = (one.conninfo("platform"), two.conninfo("tenant"));
    let dbs = [entry("platform", &c1), entry("tenant", &c2)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin1 = connect_as(&c1, "admin").await;
        let admin2 = connect_as(&c2, "admin").await;
        // Run A holds a lock on each server; run B waits on server one; run C is bystanding.
        let a1 = connect_as(&c1, &format!("pytest_gw0_{NS_A}")).await;
        let a2 = connect_as(&c2, &format!("pytest_gw1_{NS_A}")).await;
        a1.batch_execute("BEGIN; LOCK TABLE accounts")
            .await
            .unwrap();
        a2.batch_execute("BEGIN; LOCK TABLE ledger").await.unwrap();
        let (a1_pid, a2_pid) = (backend_pid(&a1).await, backend_pid(&a2).await);
        let c = connect_as(&c1, &format!("pytest_gw0_{NS_C}")).await;
        let c_pid = backend_pid(&c).await;
        let b = connect_as(&c1, &format!("pytest_gw0_{NS_B}")).await;
        let b_pid = backend_pid(&b).await;
        let waiting =
            tokio::spawn(async move { b.execute("SELECT count(*) FROM accounts", &[]).await });
        wait_until_lock_wait(&admin1, b_pid).await;

        // Without --yes and without a terminal: refused, nothing sent.
        let out = pgswarm(&["terminate", "--namespace", NS_A], &dbs);
        assert_exit(&out, 2);
        assert!(alive(&admin1, a1_pid).await);

        let out = pgswarm(&["terminate", "--namespace", NS_A, "--yes", "--json"], &dbs);
        assert_exit(&out, 0);
        let doc = json(&out);
        assert_eq!(doc["schema_version"], 1);
        let mut pids: Vec<i64> = doc["signalled"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pid"].as_i64().unwrap())
            .collect();
        pids.sort();
        let mut want = vec![a1_pid as i64, a2_pid as i64];
        want.sort();
        assert_eq!(pids, want, "{doc:#}");
        for e in doc["signalled"].as_array().unwrap() {
            assert_eq!(e["exited"], true, "terminate waits for the exit: {e}");
            for k in ["server", "database", "backend_start", "application_name"] {
                assert!(!e[k].is_null(), "{k}: {e}");
            }
        }
        assert!(!alive(&admin1, a1_pid).await && !alive(&admin2, a2_pid).await);
        // Run B got its lock and finished; run C was not touched.
        let r = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting run proceeds")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(
            alive(&admin1, c_pid).await,
            "another run's session survives"
        );
        c.batch_execute("SELECT 1").await.unwrap();
    });
}

#[test]
fn cancel_ends_a_waiters_statement_and_keeps_its_session() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (n int)");
    let c = srv.conninfo("platform");
    let dbs = [entry("platform", &c)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let holder = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        holder
            .batch_execute("BEGIN; LOCK TABLE accounts")
            .await
            .unwrap();
        let w = std::sync::Arc::new(connect_as(&c, &format!("pytest_gw1_{NS_B}")).await);
        let w_pid = backend_pid(&w).await;
        let w2 = w.clone();
        let waiting =
            tokio::spawn(async move { w2.execute("SELECT count(*) FROM accounts", &[]).await });
        wait_until_lock_wait(&admin, w_pid).await;
        let out = pgswarm(
            &[
                "cancel",
                "--pid",
                &w_pid.to_string(),
                "--database",
                "platform",
                "--yes",
            ],
            &dbs,
        );
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("cancelled: 1"), "{text}");
        let err = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the statement ends")
            .unwrap()
            .expect_err("cancelled");
        assert_eq!(err.code().map(|c| c.code()), Some("57014"));
        assert!(alive(&admin, w_pid).await, "cancel leaves the session");
        w.batch_execute("SELECT 1")
            .await
            .expect("and it still works");
        holder.batch_execute("ROLLBACK").await.unwrap();
    });
}

/// Issue 27: the usual root blocker is idle in transaction; a cancel reaches no statement there.
/// The plan says so per target (text and JSON), the report puts it under `released_nothing` (never
/// `signalled`), exit 0 as documented, and the waiter still waits behind the same root.
#[test]
fn cancelling_an_idle_in_transaction_root_releases_nothing_and_says_so() {
    let srv = Server::start(&["platform"]);
    srv.psql("platform", "CREATE TABLE accounts (n int)");
    let c = srv.conninfo("platform");
    let dbs = [entry("platform", &c)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let root = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        root.batch_execute("BEGIN; LOCK TABLE accounts")
            .await
            .unwrap();
        let root_pid = backend_pid(&root).await;
        let w = connect_as(&c, &format!("pytest_gw1_{NS_B}")).await;
        let w_pid = backend_pid(&w).await;
        let waiting =
            tokio::spawn(async move { w.execute("SELECT count(*) FROM accounts", &[]).await });
        wait_until_lock_wait(&admin, w_pid).await;
        let root_s = root_pid.to_string();

        let out = pgswarm(&["cancel", "--pid", &root_s, "--dry-run"], &dbs);
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("idle in transaction: a cancel releases nothing")
                && text.contains(&format!("pgswarm terminate --pid {root_pid}")),
            "{text}"
        );

        let out = pgswarm(&["cancel", "--pid", &root_s, "--yes", "--json"], &dbs);
        assert_exit(&out, 0);
        let doc = json(&out);
        assert_eq!(doc["planned"][0]["releases_nothing"], true, "{doc:#}");
        assert!(doc["planned"][0]["note"]
            .as_str()
            .unwrap()
            .contains("releases nothing"));
        assert_eq!(doc["signalled"], serde_json::json!([]), "{doc:#}");
        assert_eq!(doc["released_nothing"][0]["pid"], root_pid, "{doc:#}");
        assert!(doc["released_nothing"][0]["note"]
            .as_str()
            .unwrap()
            .contains("nothing released; use terminate"));

        let out = pgswarm(&["cancel", "--pid", &root_s, "--yes"], &dbs);
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cancelled: 0, released nothing 1"),
            "never counted as helping: {text}"
        );
        // Nothing was released: the root is still there and the waiter still waits behind it.
        assert!(alive(&admin, root_pid).await);
        let blockers: Vec<i32> = admin
            .query_one("SELECT pg_blocking_pids($1)", &[&w_pid])
            .await
            .unwrap()
            .get(0);
        assert_eq!(blockers, vec![root_pid]);
        assert!(!waiting.is_finished());
        root.batch_execute("ROLLBACK").await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter proceeds once the transaction ends")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    });
}

#[test]
fn a_target_whose_identity_changed_after_the_plan_is_skipped_not_hit() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let settings = settings(&[entry("platform", &c)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let s1 = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        let s2 = connect_as(&c, &format!("pytest_gw1_{NS_A}")).await;
        let s3 = connect_as(&c, &format!("pytest_gw2_{NS_A}")).await;
        let (p1, p2, p3) = (
            backend_pid(&s1).await,
            backend_pid(&s2).await,
            backend_pid(&s3).await,
        );
        let opts = ProbeOptions::default();
        let obs = observe_once(&settings.databases, &settings.session, &opts, &ProcessEnv).await;
        let snap = build_snapshot(obs, &settings.convention);
        let sel = Selector::Invocation {
            namespace: NS_A.into(),
            worker: None,
            only_blocking: false,
        };
        let mut plan = plan_signal(&snap, &sel, Action::Terminate).unwrap();
        assert_eq!(plan.targets.len(), 3);
        // After the plan: s1 relabels itself; s2's pid "is reused" (its recorded start no longer
        // matches, as for a new backend that got the same pid); s3 disconnects.
        s1.batch_execute("SET application_name = 'pytest_gw0_somebody_else'")
            .await
            .unwrap();
        for t in plan.targets.iter_mut().filter(|t| t.pid == p2) {
            t.backend_start += chrono::Duration::microseconds(1);
        }
        drop(s3);
        for _ in 0..100 {
            if !alive(&admin, p3).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let outcomes = pgswarm::pg::signal::send(&plan, &settings, &ProcessEnv).await;
        let report = build_signal_report(&plan, Some(&outcomes));
        assert!(report.signalled.is_empty(), "{report:#?}");
        assert!(report.failed.is_empty(), "{report:#?}");
        let reason = |pid: i32| {
            report
                .skipped
                .iter()
                .find(|e| e.pid == pid)
                .and_then(|e| e.reason.clone())
                .unwrap_or_default()
        };
        assert!(reason(p1).contains("application_name"), "{report:#?}");
        assert!(reason(p2).contains("another session"), "{report:#?}");
        assert_eq!(
            report.gone.iter().map(|e| e.pid).collect::<Vec<_>>(),
            vec![p3]
        );
        assert!(
            alive(&admin, p1).await && alive(&admin, p2).await,
            "nobody was hit"
        );
        s1.batch_execute("SELECT 1").await.unwrap();
        s2.batch_execute("SELECT 1").await.unwrap();
    });
}

#[test]
fn a_role_without_pg_signal_backend_fails_with_42501_and_the_grant_that_would_allow_it() {
    let mut srv = Server::start(&["platform"]);
    let lowly = srv.create_role("lowly");
    let owner = srv.create_role("owner");
    srv.psql(
        "postgres",
        &format!("GRANT pg_read_all_stats TO \"{lowly}\"; GRANT CONNECT ON DATABASE platform TO \"{lowly}\", \"{owner}\""),
    );
    let c = srv.conninfo("platform");
    let as_lowly = [entry("platform", &format!("{c} user={lowly}"))];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let victim = connect_as(&format!("{c} user={owner}"), &format!("pytest_gw0_{NS_A}")).await;
        let pid = backend_pid(&victim).await;
        let out = pgswarm(
            &["terminate", "--namespace", NS_A, "--yes", "--json"],
            &as_lowly,
        );
        assert_exit(&out, 4);
        let doc = json(&out);
        let f = &doc["failed"][0];
        assert_eq!(f["sqlstate"], "42501", "{doc:#}");
        assert_eq!(f["pid"], pid);
        assert!(
            f["hint"]
                .as_str()
                .unwrap()
                .contains(&format!("GRANT pg_signal_backend TO {lowly}")),
            "{f}"
        );
        assert!(alive(&admin, pid).await);
        srv.psql(
            "postgres",
            &format!("GRANT pg_signal_backend TO \"{lowly}\""),
        );
        let out = pgswarm(
            &["terminate", "--namespace", NS_A, "--yes", "--json"],
            &as_lowly,
        );
        assert_exit(&out, 0);
        assert_eq!(json(&out)["signalled"][0]["pid"], pid);
        assert!(!alive(&admin, pid).await);
    });
}

#[test]
fn read_only_and_an_unreadable_server_send_nothing() {
    let srv = Server::start(&["platform"]);
    let c = srv.conninfo("platform");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let s = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        let pid = backend_pid(&s).await;
        let dbs = [entry("platform", &c)];
        let out = pgswarm(
            &["--read-only", "terminate", "--namespace", NS_A, "--yes"],
            &dbs,
        );
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
        // A second configured server that cannot be reached: the run may have sessions there.
        let dead = format!(
            "host=127.0.0.1 port={} dbname=x connect_timeout=1",
            blackhole_port()
        );
        let dbs = [entry("platform", &c), entry("elsewhere", &dead)];
        let out = pgswarm(
            &[
                "--connect-timeout",
                "1s",
                "terminate",
                "--namespace",
                NS_A,
                "--yes",
                "--json",
            ],
            &dbs,
        );
        assert_exit(&out, 3);
        let doc = json(&out);
        assert_eq!(doc["executed"], false);
        assert_eq!(doc["unread"][0], "elsewhere");
        assert!(alive(&admin, pid).await, "nothing was sent");
        // Bad input: a pid that is not there names the pid; flags that would be ignored, and
        // malformed names, are refused; exit 2, nothing sent.
        let one = [entry("platform", &c)];
        let out = pgswarm(&["cancel", "--pid", "999999", "--yes"], &one);
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("999999"));
        let pid_s = pid.to_string();
        for (args, names) in [
            (
                vec!["terminate", "--pid", &pid_s, "--worker", "gw7", "--yes"],
                "--worker",
            ),
            (
                vec!["terminate", "--pid", &pid_s, "--only-blocking", "--yes"],
                "--only-blocking",
            ),
            (
                vec![
                    "terminate",
                    "--namespace",
                    NS_A,
                    "--database",
                    "platform",
                    "--yes",
                ],
                "--database",
            ),
            (
                vec!["terminate", "--namespace", "P4100T", "--yes"],
                "\"P4100T\"",
            ),
            (
                vec![
                    "terminate",
                    "--namespace",
                    NS_A,
                    "--worker",
                    "gw01",
                    "--yes",
                ],
                "\"gw01\"",
            ),
        ] {
            let out = pgswarm(&args, &one);
            assert_exit(&out, 2);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(names),
                "{args:?}"
            );
            assert!(out.stdout.is_empty());
        }
        // --dry-run --json shows the plan and sends nothing.
        let out = pgswarm(
            &["terminate", "--namespace", NS_A, "--dry-run", "--json"],
            &one,
        );
        assert_exit(&out, 0);
        let doc = json(&out);
        assert_eq!(doc["executed"], false);
        assert_eq!(doc["dry_run"], true);
        assert_eq!(doc["planned"][0]["pid"], pid, "{doc:#}");
        assert!(alive(&admin, pid).await, "nothing was sent");
        drop(s);
    });
}

#[test]
fn a_server_that_freezes_mid_signal_is_bounded_and_reported_failed() {
    let srv = start_cluster(
        &["platform"],
        pgswarm::pg::cluster::ClusterOptions {
            tcp: true,
            ..Default::default()
        },
    );
    let c = srv.conninfo("platform");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = connect_as(&c, "admin").await;
        let s1 = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
        let s2 = connect_as(&c, &format!("pytest_gw1_{NS_A}")).await;
        let (p1, p2) = (backend_pid(&s1).await, backend_pid(&s2).await);
        // Everything after the first signal statement goes into a black hole.
        let proxy = FreezingProxy::start(srv.port(), &["pg_terminate_backend"]);
        let via = format!(
            "platform=host=127.0.0.1 port={} user=postgres dbname=platform sslmode=disable \
             options='-c statement_timeout=2s'",
            proxy.port
        );
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            pgswarm(
                &["terminate", "--namespace", NS_A, "--yes", "--json"],
                &[via],
            )
        })
        .await
        .unwrap();
        let took = started.elapsed();
        assert!(proxy.is_frozen(), "the proxy froze the signal statement");
        assert_exit(&out, 4);
        let doc = json(&out);
        let failed = doc["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 2, "{doc:#}");
        assert!(
            failed
                .iter()
                .any(|f| f["error"].as_str().unwrap().contains("client bound")),
            "{doc:#}"
        );
        assert!(
            failed
                .iter()
                .any(|f| f["error"].as_str().unwrap().contains("not tried")),
            "{doc:#}"
        );
        // Bounded: statement timeout (10 s by default for pgswarm's sessions) plus the margin, not
        // forever.
        assert!(took < Duration::from_secs(40), "{took:?}");
        drop((p1, p2, admin));
    });
}
