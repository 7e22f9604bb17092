//! `serve` and a real Prometheus (issue 24): the shipped alert rules pass `promtool test rules`;
//! a Prometheus (the distribution's package) scrapes `serve` during a real collision between two
//! runs, parses the OpenMetrics exposition without error, and the shipped alerts go pending, read
//! from Prometheus's own HTTP API. Missing binaries fail loudly with what to install.

mod common;

use common::http::{http_get, try_http_get};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/prometheus")
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: apt-get install prometheus (.ci/run installs it)")
}

#[test]
fn the_shipped_alert_rules_pass_their_promtool_unit_tests() {
    let out = Command::new(binary("promtool"))
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(assets())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(binary("promtool"))
        .args(["check", "rules", "alerts.yml"])
        .current_dir(assets())
        .output()
        .unwrap();
    assert!(check.status.success());
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn until(what: &str, secs: u64, mut ok: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = ok() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_serve_during_a_collision_and_the_alerts_go_pending() {
    let prometheus = binary("prometheus");
    let srv = Server::start(&["app"]);
    srv.psql("app", "CREATE TABLE accounts (id int)");
    let ci = srv.conninfo("app");

    let state = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "0.25s"])
        .args(["--no-flight-log", "--db", &format!("app={ci}")])
        .env_remove("PGSWARM_DB")
        .env("XDG_STATE_HOME", state.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(serve.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let serve_port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    std::thread::spawn(move || {
        let _ = err.read_to_string(&mut String::new());
    });
    let _serve = Killed(serve);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pgswarm\n    static_configs:\n      - targets: ['127.0.0.1:{serve_port}']\n",
            assets().join("alerts.yml").display()
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let prom = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let _prom = Killed(prom);
    let api = |path: &str| -> Option<Value> {
        let (status, body) = try_http_get(prom_port, path, &[])?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    };

    // The scrape works: the target is up and its last scrape parsed without error.
    let target = until("the scrape target is up", 60, || {
        let v = api("/api/v1/targets")?;
        let t = v["data"]["activeTargets"][0].clone();
        (t["health"] == "up").then(|| t.to_string())
    });
    assert!(target.contains("\"lastError\":\"\""), "{target}");

    // A collision: run A holds the table, run B waits for it.
    let holder = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE accounts")
        .await
        .unwrap();
    let waiter = connect_as(&ci, &format!("pytest_gw1_{NS_B}")).await;
    let task = spawn_blocking_query(waiter, "SELECT * FROM accounts");

    let alerts = until("the shipped alerts go pending", 60, || {
        let v = api("/api/v1/alerts")?;
        let list = v["data"]["alerts"].as_array()?.clone();
        let named = |n: &str| {
            list.iter()
                .any(|a| a["labels"]["alertname"] == n && a["labels"]["database"] == "app")
        };
        (named("PgswarmSessionsBlocked") && named("PgswarmCrossInvocationCollision"))
            .then(|| Value::Array(list).to_string())
    });
    assert!(alerts.contains("\"state\":\"pending\"") || alerts.contains("\"state\":\"firing\""));
    // The gauge Prometheus stored is the one serve computed.
    let q = until("the blocked-sessions sample", 30, || {
        let v = api("/api/v1/query?query=pgswarm_blocked_sessions%7Bdatabase%3D%22app%22%7D")?;
        let value = v["data"]["result"][0]["value"][1].as_str()?.to_string();
        (value == "1").then_some(value)
    });
    assert_eq!(q, "1");

    // Every metric the shipped rules and dashboard name is one serve exposes.
    let (_, exposition) = http_get(serve_port, "/metrics", &[]);
    let grafana = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/grafana/pgswarm-dashboard.json"),
    )
    .unwrap();
    let rules = std::fs::read_to_string(assets().join("alerts.yml")).unwrap();
    for name in metric_names(&grafana)
        .into_iter()
        .chain(metric_names(&rules))
    {
        // A counter family with no series yet (no wait has ended) is still declared.
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            exposition.contains(&format!("\n{name}{{"))
                || exposition.contains(&format!("\n{name} "))
                || exposition.contains(&format!("# TYPE {family} ")),
            "{name} is not exposed:\n{exposition}"
        );
    }

    holder.batch_execute("ROLLBACK").await.unwrap();
    task.await.unwrap().1.unwrap();
}

/// The `pgswarm_*` names in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pgswarm_") && w.len() > "pgswarm_".len())
        .map(str::to_string)
        .collect()
}

/// Every query of the shipped Grafana dashboard is valid PromQL (checked by promtool as recording
/// rules, the dashboard's variables replaced by what Grafana would put there).
#[test]
fn the_grafana_dashboard_queries_parse() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/grafana/pgswarm-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr").replace("$server", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: pgswarm:panel_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(n >= 10, "{n} queries");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(binary("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
