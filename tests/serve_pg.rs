//! `pgswarm serve` (issue 24) against real servers: a collision between two runs seen through the
//! API, the event stream and `/metrics`; the token rule off loopback; a server that goes away shown
//! as stale, then live again; SIGTERM stops it.

mod common;

use common::http::http_get;
use common::serve::Serve;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// The value of the sample `name{labels}` in an OpenMetrics exposition (sums matching lines).
fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collision_is_seen_through_the_api_the_events_and_metrics() {
    let srv = Server::start(&["app"]);
    srv.psql("app", "CREATE TABLE accounts (id int)");
    let ci = srv.conninfo("app");
    let serve = Serve::start(&format!("app={ci}"), &[]);
    serve.until("/healthz", "first poll", |b| b.contains("\"ok\""));

    // The event stream, opened before the collision, read until the episode's event (bounded).
    let port = serve.port;
    let reader = std::thread::spawn(move || read_events_until(port, None, "\"gave_up\"", 40));
    let holder = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts")
        .await
        .unwrap();
    let waiter = connect_as(&ci, &format!("pytest_gw1_{NS_B}")).await;
    waiter
        .batch_execute("SET lock_timeout = '3s'")
        .await
        .unwrap();
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");

    let metrics = serve.until("/metrics", "blocked while waiting", |m| {
        sample(m, "pgswarm_blocked_sessions", "database=\"app\"").is_some_and(|v| v >= 1.0)
    });
    assert!(
        sample(&metrics, "pgswarm_cross_invocation_collisions", "app").is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    let snap = serve.json("/api/v1/snapshot");
    assert_eq!(snap["lock_trees"][0]["root_namespace"], NS_A, "{snap:#}");
    let summary = serve.json("/api/v1/summary");
    assert_eq!(summary["blocked"], 1, "{summary:#}");
    assert_eq!(summary["collisions"], 1, "{summary:#}");
    // A client of the server: no database credentials, the same output and exit codes.
    let url = format!("http://127.0.0.1:{}", serve.port);
    let out = client(&[
        "snapshot",
        "--summary",
        "--json",
        "--fail-on-blocked",
        "--server",
        &url,
    ]);
    assert_exit(&out, 1);
    let remote: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(remote["collisions"], 1, "{remote:#}");
    let text = client_text(&["snapshot", "--server", &url]);
    assert!(
        text.contains(NS_A) && text.contains("public.accounts"),
        "{text}"
    );

    // The waiter stays connected: a session that gave up and then left would read as waiter_gone.
    let (_waiter, r) = task.await.unwrap();
    let err = r.expect_err("lock_timeout");
    assert_eq!(err.code().map(|c| c.code()), Some("55P03"));
    let body = serve.until("/api/v1/incidents", "the ended episode", |b| {
        b.contains("\"gave_up\"")
    });
    let doc: Value = serde_json::from_str(&body).unwrap();
    let e = &doc["episodes"][0];
    assert_eq!(e["outcome"], "gave_up", "{e:#}");
    assert_eq!(e["waiter_namespace"], NS_B);
    assert_eq!(e["root_namespace"], NS_A);
    assert_eq!(e["relation"], "public.accounts");
    let filtered = serve.json(&format!("/api/v1/incidents?namespace={NS_B}&since=1h"));
    assert_eq!(filtered["episodes"].as_array().map(Vec::len), Some(1));
    let remote = client(&["incidents", "--json", "--namespace", NS_B, "--server", &url]);
    assert_exit(&remote, 0);
    let remote: Value = serde_json::from_slice(&remote.stdout).unwrap();
    assert_eq!(remote["episodes"][0]["outcome"], "gave_up", "{remote:#}");
    let other = serve.json("/api/v1/incidents?namespace=p1t1r1");
    assert_eq!(other["episodes"].as_array().map(Vec::len), Some(0));
    let (status, bad) = serve.get("/api/v1/incidents?since=yesterday");
    assert_eq!(status, 400, "{bad}");
    let metrics = serve.until("/metrics", "the episode counted", |m| {
        sample(m, "pgswarm_lock_wait_episodes_total", "outcome=\"gave_up\"")
            .is_some_and(|v| v >= 1.0)
    });
    assert!(sample(&metrics, "pgswarm_lock_wait_seconds_count", "").is_some_and(|v| v >= 1.0));

    let seen = reader.join().unwrap();
    let seen: Vec<String> = seen.lines().map(str::to_string).collect();
    assert!(seen.iter().any(|l| l == "event: summary"), "{seen:?}");
    assert!(seen.iter().any(|l| l == "event: episode"), "{seen:?}");
    let ids: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("id:")?.trim().parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // A client resuming after the first id gets what followed, from the kept history.
    let next = format!("id: {}", ids[1]);
    let resume = read_events_until(serve.port, Some(ids[0]), &next, 5);
    assert!(resume.contains(&next), "{resume}");
    assert!(
        !resume.contains(&format!("id: {}\n", ids[0])),
        "the event already seen is not sent again: {resume}"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
}

/// Runs a pgswarm client command (no database configured).
fn client(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(args)
        .env_remove("PGSWARM_DB")
        .env_remove("PGSWARM_CONFIG")
        .env_remove("PGSWARM_SERVER")
        .output()
        .unwrap()
}

fn client_text(args: &[&str]) -> String {
    let out = client(args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client of a server that does not answer: exit 3 and the reason, never "nothing blocked".
#[test]
fn a_client_of_a_dead_server_exits_3_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["snapshot", "--server", url.as_str()],
        vec!["snapshot", "--summary", "--json", "--server", url.as_str()],
        vec!["incidents", "--server", url.as_str()],
        vec!["incidents", "--follow", "--server", url.as_str()],
        // The dashboard reads once before it takes the terminal.
        vec!["--server", url.as_str()],
        vec!["watch", "--server", url.as_str()],
    ] {
        let out = client(&args);
        assert_exit(&out, 3);
        assert!(out.stdout.is_empty(), "{args:?} printed a picture");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not answer"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = client(&["snapshot", "--server", "ftp://x"]);
    assert_exit(&bad, 2);
}

/// Reads `/api/v1/events` (with `Last-Event-ID: last` when given), decoding the chunked body,
/// until the text contains `needle` or `secs` pass; returns the event-stream text.
fn read_events_until(port: u16, last: Option<u64>, needle: &str, secs: u64) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resume = last
        .map(|l| format!("Last-Event-ID: {l}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n{resume}\r\n").as_bytes(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let body = decode_chunked(&raw);
        if body.contains(needle) || Instant::now() >= deadline {
            return body;
        }
        match s.read(&mut buf) {
            Ok(0) => return decode_chunked(&raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// The body of a chunked HTTP/1.1 response received so far (an incomplete last chunk included).
fn decode_chunked(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let Some((_, mut rest)) = text.split_once("\r\n\r\n") else {
        return String::new();
    };
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let take = n.min(after.len());
        body.push_str(&after[..take]);
        if take < n || after.len() < n + 2 {
            break;
        }
        rest = &after[n + 2..];
    }
    body
}

#[test]
fn off_loopback_needs_a_token_and_requests_need_it_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--db",
            "x=host=/nonexistent",
        ])
        .env_remove("PGSWARM_DB")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["serve", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&token)
        .args(["--db", "x=host=/nonexistent"])
        .env_remove("PGSWARM_DB")
        .output()
        .unwrap();
    assert_exit(&loose, 2);
    assert!(String::from_utf8_lossy(&loose.stderr).contains("chmod 600"));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    let serve = Serve::start(
        "x=host=/nonexistent",
        &["--token-file", token.to_str().unwrap(), "--no-flight-log"],
    );
    let (status, _) = serve.get("/api/v1/summary");
    assert_eq!(status, 401);
    let (status, _) = http_get(serve.port, "/metrics", &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, body) = http_get(
        serve.port,
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(status, 200, "{body}");
    // A client without the token is told what to give; with it, it reads.
    let url = format!("http://127.0.0.1:{}", serve.port);
    let out = client(&["snapshot", "--summary", "--server", &url]);
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));
    let out = client(&[
        "snapshot",
        "--summary",
        "--json",
        "--server",
        &url,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["unreachable"][0], "x", "{summary:#}");
    assert_exit(&out, 3);
    // An unreachable database is down, never "nothing blocked" by omission.
    assert!(
        body.contains("pgswarm_database_up{database=\"x\"} 0"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_stale_then_live_again_and_sigterm_stops_serve() {
    let srv = start_cluster(&["app"], pgswarm::pg::cluster::ClusterOptions::default());
    let ci = srv.conninfo("app");
    let serve = Serve::start(&format!("app={ci}"), &["--no-flight-log"]);
    serve.until("/healthz", "first poll", |b| b.contains("\"ok\""));
    srv.stop_server().expect("server stops");
    let body = serve.until("/metrics", "down after the server stopped", |m| {
        m.contains("pgswarm_database_up{database=\"app\"} 0")
    });
    assert!(body.contains("pgswarm_database_up"));
    let health = serve.until("/healthz", "degraded", |b| b.contains("degraded"));
    assert!(health.contains("\"databases_read\":0"), "{health}");
    let summary = serve.json("/api/v1/summary");
    assert_eq!(summary["unreachable"][0], "app", "{summary:#}");
    srv.start_server().expect("server starts again");
    serve.until("/healthz", "live again", |b| b.contains("\"ok\""));

    let mut serve = serve;
    let started = Instant::now();
    // SAFETY: kill(2) with a pid of a child this test started and has not reaped.
    unsafe {
        libc::kill(serve.child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = serve.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// One lock wait between two runs that gives up after `timeout` (lock_timeout), on `table`. The
/// sessions are returned: a waiter that disconnected before the next poll would read `waiter_gone`.
async fn give_up_once(
    ci: &str,
    table: &str,
    timeout: &str,
) -> (tokio_postgres::Client, tokio_postgres::Client) {
    let holder = connect_as(ci, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute(&format!("BEGIN; LOCK TABLE {table}"))
        .await
        .unwrap();
    let waiter = connect_as(ci, &format!("pytest_gw1_{NS_B}")).await;
    waiter
        .batch_execute(&format!("SET lock_timeout = '{timeout}'"))
        .await
        .unwrap();
    let err = waiter
        .simple_query(&format!("SELECT * FROM {table}"))
        .await
        .expect_err("the wait gives up");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
    );
    // The holder keeps the lock for a few polls after the waiter gave up: released at once, a
    // poll could not tell the order of the two and may read the wait as acquired (CI did).
    tokio::time::sleep(Duration::from_secs(1)).await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    (holder, waiter)
}

/// `incidents --follow --server`: each ended wait as the server's event stream announces it; when
/// the server restarts (same address), the client says so, reconnects, and the next wait comes
/// through too (event ids keep increasing across instances, so nothing is skipped as seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_follow_over_a_server_prints_each_wait_and_survives_a_restart() {
    let srv = Server::start(&["app"]);
    srv.psql("app", "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)");
    let ci = srv.conninfo("app");
    let serve = Serve::start(&format!("app={ci}"), &[]);
    serve.until("/healthz", "first poll", |b| b.contains("\"ok\""));
    let port = serve.port;
    let url = format!("http://127.0.0.1:{port}");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "incidents",
            "--follow",
            "--json",
            "--kind",
            "lock-wait",
            "--server",
            &url,
        ])
        .env_remove("PGSWARM_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before its SIGTERM: a failing run must not leave it running.
    struct KillOnDrop(Option<std::process::Child>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let stdout = follow.stdout.take().unwrap();
    let stderr = follow.stderr.take().unwrap();
    let mut follow = KillOnDrop(Some(follow));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let (err_tx, errs) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = err_tx.send(line);
        }
    });
    let next_episode = |what: &str| -> Value {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no episode line for {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };

    let _first_pair = give_up_once(&ci, "t1", "1500ms").await;
    let first = next_episode("the first wait");
    assert_eq!(first["outcome"], "gave_up", "{first:#}");
    assert_eq!(first["waiter_namespace"], NS_B, "{first:#}");
    assert_eq!(first["root_namespace"], NS_A, "{first:#}");
    assert!(
        first["wait"].as_str().unwrap_or("").contains("t1"),
        "{first:#}"
    );

    // Let this instance send more events (a summary per poll) than the next will have sent by its
    // wait: resuming with this instance's last id must not skip the next one's events.
    std::thread::sleep(Duration::from_secs(6));
    // The server goes away: said on stderr, nothing printed as an episode.
    drop(serve);
    let said = errs
        .recv_timeout(Duration::from_secs(30))
        .expect("the outage is said on stderr");
    assert!(
        said.contains("does not answer") || said.contains("ended"),
        "{said}"
    );
    let serve = Serve::start_on(&format!("app={ci}"), port, &[]);
    serve.until("/healthz", "first poll again", |b| b.contains("\"ok\""));
    // At once, whether or not the client has reconnected yet: the event is in the server's
    // history if it has not.
    let _second_pair = give_up_once(&ci, "t2", "1500ms").await;
    let second = next_episode("the wait after the restart");
    let back = errs
        .recv_timeout(Duration::from_secs(5))
        .expect("the return is said on stderr");
    assert!(back.contains("answers again"), "{back}");
    assert_eq!(second["outcome"], "gave_up", "{second:#}");
    assert!(
        second["wait"].as_str().unwrap_or("").contains("t2"),
        "{second:#}"
    );
    assert!(
        lines.try_recv().is_err(),
        "no other episode (e.g. a replay of the first)"
    );

    let mut child = follow.0.take().expect("still running");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends --follow cleanly");
    drop(serve);
}

/// TLS on the listener: a client that trusts serve's CA reads it over https; one that does not is
/// refused with why (exit 3); plain HTTP to the TLS port gets nothing; a key that cannot be read is
/// a usage error naming the file, before anything listens.
#[test]
fn tls_serves_https_to_clients_that_trust_its_ca_only() {
    let srv = Server::start(&["app"]);
    let pki = common::pki::make_pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let (cert_s, key_s, ca_s) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        ca.to_str().unwrap(),
    );
    let serve = Serve::start(
        &format!("app={}", srv.conninfo("app")),
        &["--tls-cert", cert_s, "--tls-key", key_s],
    );
    let url = format!("https://127.0.0.1:{}", serve.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ok = loop {
        let out = client(&[
            "snapshot",
            "--summary",
            "--json",
            "--server",
            &url,
            "--server-ca",
            ca_s,
        ]);
        if out.status.code() == Some(0) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_exit(&ok, 0);
    let summary: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(summary["blocked"], 0, "{summary:#}");

    // Not trusting the CA: refused, and why.
    let untrusted = client(&["snapshot", "--server", &url]);
    assert_exit(&untrusted, 3);
    assert!(untrusted.stdout.is_empty());
    let why = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(
        why.contains("certificate") || why.contains("issuer"),
        "{why}"
    );
    // Plain HTTP to the TLS port: no document.
    let plain = client(&[
        "snapshot",
        "--server",
        &format!("http://127.0.0.1:{}", serve.port),
    ]);
    assert_exit(&plain, 3);
    // A CA file without a certificate is a usage error naming it.
    let bad_ca = client(&["snapshot", "--server", &url, "--server-ca", key_s]);
    assert_exit(&bad_ca, 2);
    assert!(String::from_utf8_lossy(&bad_ca.stderr).contains("key.pem"));
    drop(serve);

    let missing = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert_s])
        .args([
            "--tls-key",
            "/nonexistent/key.pem",
            "--db",
            "app=dbname=app",
        ])
        .output()
        .unwrap();
    assert_exit(&missing, 2);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/key.pem"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Actions over the API (`--allow-actions`): refused by a read-only serve and without the token;
/// `--allow-actions` without a token refuses to start; a terminate plan names exactly the run's
/// sessions and its confirmation terminates exactly those, once, with an audit line; a sweep plan
/// drops the orphaned schema and keeps the live run's; bad requests are 400s naming the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_over_the_api_are_planned_confirmed_once_and_audited() {
    use common::http::http_post;
    use std::os::unix::fs::PermissionsExt;
    let srv = Server::start(&["app"]);
    let stale = "test_p4900t1700000000r0c0ffee0_gw0";
    let live_schema = format!("test_{NS_B}_gw0");
    srv.psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id int); CREATE SCHEMA {stale}; CREATE TABLE {stale}.t (id int); \
             CREATE SCHEMA {live_schema}"
        ),
    );
    let ci = srv.conninfo("app");
    let db = format!("app={ci}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "act-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token_s = token.to_str().unwrap();

    // --allow-actions without a token: refuses to start, even on loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-actions",
            "--db",
            &db,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    let a = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    let a1 = connect_as(&ci, &format!("pytest_gw1_{NS_A}")).await;
    let b = connect_as(&ci, &format!("pytest_gw0_{NS_B}")).await;
    let admin = connect_as(&ci, "admin").await;
    let (pa, pa1, pb) = (
        backend_pid(&a).await,
        backend_pid(&a1).await,
        backend_pid(&b).await,
    );
    let body = format!(r#"{{"action": "terminate", "namespace": "{NS_A}"}}"#);

    // A read-only serve (with a token) refuses, and says how to turn actions on.
    let ro = Serve::start(&db, &["--token-file", token_s]);
    let auth = [("Authorization", "Bearer act-token")];
    let (status, text) = http_post(ro.port, "/api/v1/actions/plan", &auth, &body);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("--allow-actions"), "{text}");
    drop(ro);

    let serve = Serve::start(&db, &["--token-file", token_s, "--allow-actions"]);
    serve.until("/healthz", "first poll", |b| b.contains("\"ok\""));
    let (status, _) = http_post(serve.port, "/api/v1/actions/plan", &[], &body);
    assert_eq!(status, 401, "no token, no plan");
    for (bad, needle) in [
        (r#"{"action": "kill", "pid": 1}"#, "\"kill\""),
        (
            r#"{"action": "terminate", "namespace": "NOT A NS"}"#,
            "NOT A NS",
        ),
        (r#"{"action": "terminate", "worker": "gw0"}"#, "namespace"),
        (r#"{"action": "terminate", "pid": 1, "bogus": 1}"#, "bogus"),
        ("not json", "plan request"),
    ] {
        let (status, text) = http_post(serve.port, "/api/v1/actions/plan", &auth, bad);
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains(needle), "{bad}: {text}");
    }

    let (status, text) = http_post(serve.port, "/api/v1/actions/plan", &auth, &body);
    assert_eq!(status, 200, "{text}");
    let plan: Value = serde_json::from_str(&text).unwrap();
    let id = plan["plan_id"]
        .as_str()
        .expect("an actionable plan has an id")
        .to_string();
    assert_eq!(id.len(), 32, "{plan:#}");
    let planned: Vec<i64> = plan["plan"]["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    let mut want = vec![i64::from(pa), i64::from(pa1)];
    want.sort();
    let mut got = planned.clone();
    got.sort();
    assert_eq!(got, want, "exactly run A's sessions: {plan:#}");
    // Nothing happened yet: planning is not doing.
    let alive = |pids: &[i32]| {
        let list = pids
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        format!("SELECT count(*) FROM pg_stat_activity WHERE pid IN ({list})")
    };
    let n: i64 = admin
        .query_one(&alive(&[pa, pa1, pb]), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    let (status, text) = http_post(serve.port, "/api/v1/actions/0123/confirm", &auth, "");
    assert_eq!(status, 404, "an unknown plan id: {text}");
    let confirm = format!("/api/v1/actions/{id}/confirm");
    let (status, text) = http_post(serve.port, &confirm, &auth, "");
    assert_eq!(status, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["executed"], true, "{report:#}");
    assert_eq!(
        report["signalled"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
    // Exactly run A's sessions ended; B and the admin stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = admin
            .query_one(&alive(&[pa, pa1]), &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "run A's sessions still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = admin.query_one(&alive(&[pb]), &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "run B untouched");
    // Once only.
    let (status, _) = http_post(serve.port, &confirm, &auth, "");
    assert_eq!(status, 404, "a plan runs once");

    // A sweep: the orphaned schema goes, the live run's stays.
    let (status, text) = http_post(
        serve.port,
        "/api/v1/actions/plan",
        &auth,
        r#"{"action": "sweep"}"#,
    );
    assert_eq!(status, 200, "{text}");
    let plan: Value = serde_json::from_str(&text).unwrap();
    let id = plan["plan_id"]
        .as_str()
        .expect("a sweep with a drop has an id");
    let (status, text) = http_post(
        serve.port,
        &format!("/api/v1/actions/{id}/confirm"),
        &auth,
        "",
    );
    assert_eq!(status, 200, "{text}");
    let schemas = srv.psql(
        "app",
        "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname LIKE 'test\\_%'",
    );
    assert_eq!(
        schemas.trim(),
        live_schema,
        "only the live run's schema is left"
    );

    // The audit lines: each plan and each confirmation, with the client's address.
    let log = serve.log.lock().unwrap().clone();
    let confirmed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit") && l.contains("confirmed"))
        .collect();
    assert_eq!(confirmed.len(), 2, "{log}");
    assert!(
        confirmed[0].contains("terminate") && confirmed[0].contains("127.0.0.1"),
        "{log}"
    );
    assert!(confirmed[1].contains("sweep"), "{log}");
    drop(b);
}

/// Connections are bounded, idle kept-alive ones included: with every slot held by a client that
/// never speaks, the next client waits; when one closes, it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_a_freed_slot_serves_the_next() {
    use pgswarm::serve::{routes::Limits, ServeOptions};
    let srv = Server::start(&["app"]);
    let settings = settings(&[format!("app={}", srv.conninfo("app"))]);
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        interval: Duration::from_millis(250),
        limits: Limits {
            max_connections: 4,
            ..Limits::default()
        },
        tls: None,
        allow_actions: false,
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        pgswarm::serve::run(
            &settings,
            &opts,
            std::sync::Arc::new(pgswarm::pg::conninfo::ProcessEnv),
            None,
            |a| {
                let _ = addr_tx.send(a);
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let port = addr_rx.await.unwrap().port();
    let ask = move || std::thread::spawn(move || common::http::try_http_get(port, "/healthz", &[]));
    // Served while slots are free.
    let first = tokio::task::spawn_blocking(move || ask().join().unwrap())
        .await
        .unwrap();
    assert!(first.is_some());
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = ask();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a fifth connection is not served while four are held"
    );
    drop(idle);
    let answer = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    assert!(
        answer.is_some_and(|(s, _)| s == 200 || s == 503),
        "served once a slot is free"
    );
    let _ = stop_tx.send(());
    let _ = server.await;
}

/// Idle, slow and silent clients give their slot back (found by the black-box attack: a few
/// thousand silent connections, or 130 on a TLS port, locked everyone out): a connection that sends
/// nothing, one that sends its headers a line at a time too slowly, and one idle after a kept-alive
/// request are closed after the header timeout; silent connections to a TLS port do not hold up
/// another client's handshake; one address cannot take more than its share of the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_silent_clients_are_closed_and_hold_up_no_one() {
    use pgswarm::serve::{routes::Limits, ServeOptions};
    let srv = Server::start(&["app"]);
    let pki = common::pki::make_pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let start = |tls: bool| {
        let settings = settings(&[format!("app={}", srv.conninfo("app"))]);
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            interval: Duration::from_millis(250),
            limits: Limits {
                max_connections: 64,
                max_connections_per_address: 40,
                header_timeout: Duration::from_secs(1),
                // Longer than the client below waits: blocked handshakes would fail it.
                handshake_timeout: Duration::from_secs(30),
                ..Limits::default()
            },
            tls: tls.then(|| pgswarm::serve::tls::server_config(&cert, &key).unwrap()),
            allow_actions: false,
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = pgswarm::serve::run(
                &settings,
                &opts,
                std::sync::Arc::new(pgswarm::pg::conninfo::ProcessEnv),
                None,
                move |a| {
                    let _ = addr_tx.send(a);
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
        });
        (addr_rx.recv().unwrap().port(), stop_tx)
    };
    /// Whether the server closes `s` within `within` (reads until EOF or an error).
    fn closed_within(mut s: TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }

    let (port, stop) = start(false);
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let slow_writer = std::thread::spawn(move || {
        // One more header line every 300 ms: never done within the timeout.
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                return true;
            }
        }
        false
    });
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(silent, Duration::from_secs(5)),
        "a silent connection is closed"
    );
    assert!(
        closed_within(kept, Duration::from_secs(5)),
        "an idle kept-alive one too"
    );
    assert!(slow_writer.join().unwrap(), "a slowloris client is cut off");
    // One address gets at most its share: the 41st connection is closed at once.
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        closed_within(extra, Duration::from_millis(800)),
        "over the per-address share: closed before its header timeout"
    );
    drop(held);
    let _ = stop.send(());

    // TLS: 30 silent connections do not hold up a real client's handshake.
    let (port, stop) = start(true);
    let silent: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let url = format!("https://127.0.0.1:{port}");
    let ca_s = ca.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = client(&[
                "snapshot",
                "--summary",
                "--server",
                &url,
                "--server-ca",
                &ca_s,
            ]);
            if out.status.code() == Some(0) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_exit(&out, 0);
    drop(silent);
    let _ = stop.send(());
}

/// A fake server on a free port: `answer` gets each accepted connection (in a thread of its own).
fn fake_server(answer: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            let answer = answer.clone();
            std::thread::spawn(move || answer(s));
        }
    });
    port
}

/// Clients against servers that misbehave (found by the black-box attack): one that accepts and
/// never answers makes `incidents --follow` exit 3 (it waited for ever), an error body is shown
/// cut, a wrong token is said as such, a CA certificate used as the server's own is refused with
/// how to make one that works, and a CA file that is a device is a usage error.
#[test]
fn clients_of_misbehaving_servers_say_what_is_wrong() {
    let silent = fake_server(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_secs(60));
    });
    let url = format!("http://127.0.0.1:{silent}");
    let out = client(&["incidents", "--follow", "--server", &url]);
    assert_exit(&out, 3);
    assert!(out.stdout.is_empty());

    let noisy = fake_server(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let body = "\x1b]0;owned\x07".to_string() + &"x".repeat(1_000_000);
        let _ = s.write_all(
            format!(
                "HTTP/1.1 500 Oops\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    });
    let out = client(&["snapshot", "--server", &format!("http://127.0.0.1:{noisy}")]);
    assert_exit(&out, 3);
    assert!(
        out.stderr.len() < 2_000,
        "{} bytes on stderr",
        out.stderr.len()
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "no escape reaches the terminal"
    );

    let refusing = fake_server(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "not-the-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = client(&[
        "snapshot",
        "--server",
        &format!("http://127.0.0.1:{refusing}"),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused the token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = client(&[
        "snapshot",
        "--server",
        "https://127.0.0.1:1",
        "--server-ca",
        "/dev/zero",
    ]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

/// The usual self-signed certificate (`openssl req -x509`: CA:TRUE) is refused by TLS clients as a
/// server's own certificate; the client says so and how to make one that works.
#[test]
fn a_ca_certificate_used_as_the_servers_own_is_explained() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let srv = Server::start(&["app"]);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let serve = Serve::start(
        &format!("app={}", srv.conninfo("app")),
        &[
            "--tls-cert",
            c.to_str().unwrap(),
            "--tls-key",
            k.to_str().unwrap(),
        ],
    );
    let out = client(&[
        "snapshot",
        "--server",
        &format!("https://127.0.0.1:{}", serve.port),
        "--server-ca",
        c.to_str().unwrap(),
    ]);
    assert_exit(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot verify the TLS certificate"), "{err}");
    assert!(err.contains("CA:FALSE"), "{err}");
}

/// Public writes (issue 25) through `serve`: seen live in the snapshot, kept once ended in
/// `/api/v1/incidents`, announced on the event stream, and printed by `incidents --server --kind
/// public-write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_write_is_seen_and_kept_through_serve() {
    let srv = Server::start(&["app"]);
    srv.psql("app", "CREATE TABLE operation_type (id int)");
    let ci = srv.conninfo("app");
    let serve = Serve::start(&format!("app={ci}"), &[]);
    serve.until("/healthz", "first poll", |b| b.contains("\"ok\""));
    let port = serve.port;
    let reader =
        std::thread::spawn(move || read_events_until(port, None, "event: public_write", 40));
    let seeder = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    seeder
        .batch_execute("BEGIN; INSERT INTO operation_type VALUES (1)")
        .await
        .unwrap();
    let live = serve.until("/api/v1/snapshot", "the write, live", |b| {
        b.contains("\"public_writes\":[{")
    });
    assert!(live.contains("operation_type"), "{live}");
    seeder.batch_execute("COMMIT").await.unwrap();
    let kept = serve.until("/api/v1/incidents", "the write, kept", |b| {
        b.contains("\"public_writes\":[{")
    });
    let doc: Value = serde_json::from_str(&kept).unwrap();
    let w = &doc["public_writes"][0];
    assert_eq!(w["namespace"], NS_A, "{doc:#}");
    assert_eq!(w["evidence"], "lock", "{doc:#}");
    assert!(w["relation"].as_str().unwrap().contains("operation_type"));
    let events = reader.join().unwrap();
    assert!(events.contains("event: public_write"), "{events}");
    let url = format!("http://127.0.0.1:{port}");
    let out = client(&[
        "incidents",
        "--server",
        &url,
        "--kind",
        "public-write",
        "--json",
    ]);
    assert_exit(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["public_writes"][0]["namespace"], NS_A, "{doc:#}");
    assert_eq!(
        doc["episodes"].as_array().unwrap().len(),
        0,
        "--kind public-write only"
    );
}
