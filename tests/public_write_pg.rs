//! Writes into shared `public` (issue 25) against a real server: the search_path fall-through of a
//! seeder that composes a schema that does not exist, caught from the locks of its open transaction
//! (one poll, `snapshot --fail-on-public-write`), from the statistics when it inserts in short
//! autocommit statements (with the runs live then as candidates), kept in the flight log and
//! listed by `incidents --kind public-write`; and what must not be reported.
//!
//! Runs are simulated with labeled sessions (`pytest_gw0_<ns>[_suffix]`), as the tests of the
//! snapshot and the incidents do; each seeder runs exactly the statements the seed write-up shows.

mod common;

use common::*;
use pgswarm::cmd::snapshot::{snapshot_exit_public, take_snapshot};
use pgswarm::domain::public_write::{Evidence, PublicWrite};
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::flightlog::{self, FlightLog};
use pgswarm::pg::stream::{SnapshotStream, Update};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn server() -> (Server, String) {
    let srv = Server::start(&["tenant_a"]);
    srv.psql(
        "tenant_a",
        &format!(
            "CREATE TABLE operation_type (id serial PRIMARY KEY, name text); \
             CREATE TABLE role_type (id serial PRIMARY KEY, name text); \
             INSERT INTO operation_type (name) VALUES ('shared'); \
             CREATE SCHEMA test_{NS_A}_gw0; CREATE TABLE test_{NS_A}_gw0.operation_type (id int, name text); \
             CREATE SCHEMA test_{NS_B}_gw0; CREATE TABLE test_{NS_B}_gw0.operation_type (id int, name text);"
        ),
    );
    let c = srv.conninfo("tenant_a");
    (srv, c)
}

/// The stale seeder of the write-up: composes the legacy `test_gw0`, which does not exist, and its
/// rows fall through to `public`.
const SEED: &str = "SET LOCAL search_path TO test_gw0, public; \
                    INSERT INTO operation_type (name) VALUES ('seeded')";

/// Every update of a stream over `tenant_a`, kept.
struct Watch {
    updates: Arc<Mutex<Vec<Update>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(conninfo: &str, log: Option<FlightLog>) -> Watch {
        let settings = settings(&[entry("tenant_a", conninfo)]);
        let mut stream = SnapshotStream::spawn(
            &settings,
            Duration::from_millis(300),
            Arc::new(ProcessEnv),
            log,
            None,
        );
        let updates: Arc<Mutex<Vec<Update>>> = Arc::default();
        let sink = updates.clone();
        let task = tokio::spawn(async move {
            while let Some(u) = stream.updates.recv().await {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(u);
            }
        });
        Watch {
            updates,
            _task: task,
        }
    }

    fn all(&self) -> Vec<Update> {
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (bounded) until some update has a public write matching `f`.
    async fn public_write(&self, what: &str, f: impl Fn(&PublicWrite) -> bool) -> PublicWrite {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let found = self
                .all()
                .iter()
                .flat_map(|u| u.snapshot.public_writes.clone())
                .find(|w| f(w));
            if let Some(w) = found {
                return w;
            }
            assert!(Instant::now() < deadline, "no public write: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) for `n` more updates.
    async fn polls(&self, n: usize) {
        let start = self.all().len();
        let deadline = Instant::now() + Duration::from_secs(40);
        while self.all().len() < start + n {
            assert!(Instant::now() < deadline, "the stream stopped polling");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_seeder_is_caught_from_locks_in_one_poll_and_fails_the_snapshot() {
    let (_srv, c) = server();
    // Run A: its engine has its worker schema; its seeder composes the legacy name.
    let engine = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    engine
        .batch_execute(&format!("SET search_path TO test_{NS_A}_gw0; SELECT 1"))
        .await
        .unwrap();
    let seeder = connect_as(&c, &format!("pytest_gw0_{NS_A}_seed")).await;
    seeder
        .batch_execute(&format!("BEGIN; {SEED}"))
        .await
        .unwrap();
    let seeder_pid = backend_pid(&seeder).await;
    // Run C is connected without any worker schema: the precondition, before any write.
    let lost = connect_as(&c, &format!("pytest_gw3_{NS_C}")).await;
    lost.batch_execute("SELECT 1").await.unwrap();

    let settings = settings(&[entry("tenant_a", &c)]);
    let snap = take_snapshot(&settings, &ProcessEnv).await;
    assert_eq!(snap.public_writes.len(), 1, "{:#?}", snap.public_writes);
    let w = &snap.public_writes[0];
    assert_eq!(w.evidence, Evidence::Lock);
    assert_eq!(w.relation, "public.operation_type");
    assert_eq!(w.database, "tenant_a");
    assert_eq!(w.mode.as_deref(), Some("RowExclusiveLock"));
    assert_eq!(w.namespace.as_deref(), Some(NS_A));
    assert_eq!(w.worker.as_deref(), Some("gw0"));
    assert_eq!(w.suffix.as_deref(), Some("seed"));
    assert_eq!(w.pid, Some(seeder_pid));
    assert!(w.since.is_some());
    assert_eq!(snapshot_exit_public(&snap, false, true).code(), 1);
    assert_eq!(snapshot_exit_public(&snap, false, false).code(), 0);
    let missing: Vec<(&str, &str)> = snap
        .missing_worker_schemas
        .iter()
        .map(|m| (m.namespace.as_str(), m.worker.as_str()))
        .collect();
    assert_eq!(missing, vec![(NS_C, "gw3")], "A and its seeder have theirs");

    // The command: exit 1 with the flag, the finding in the JSON and in the text report.
    let db = entry("tenant_a", &c);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(["snapshot", "--db", &db])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--fail-on-public-write", "--json"]);
    assert_exit(&out, 1);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pw = &doc["public_writes"][0];
    assert_eq!(pw["evidence"], "lock");
    assert_eq!(pw["relation"], "public.operation_type");
    assert_eq!(pw["namespace"], NS_A);
    assert_eq!(pw["worker"], "gw0");
    assert_eq!(pw["pid"], seeder_pid);
    assert!(doc["warning_codes"]
        .as_array()
        .unwrap()
        .contains(&"public_write".into()));
    assert_eq!(doc["missing_worker_schemas"][0]["namespace"], NS_C);
    let out = run(&[]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PUBLIC WRITES") && text.contains("writes into public.operation_type"),
        "{text}"
    );
    // Only the configured shared schemas count.
    assert_exit(
        &run(&["--fail-on-public-write", "--shared-schema", "reference"]),
        0,
    );
    // A bad schema name is a usage error naming it.
    let out = run(&["--shared-schema", ""]);
    assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid shared schema \"\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seeder.batch_execute("ROLLBACK").await.unwrap();
    drop((engine, lost));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_seeders_are_caught_from_statistics_with_the_live_runs_as_candidates() {
    let (_srv, c) = server();
    let a = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    a.batch_execute("SELECT 1").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("incidents.jsonl");
    let watch = Watch::start(&c, Some(FlightLog::new(log_path.clone())));
    watch.polls(1).await;
    // Run A alone: five short autocommit inserts that fall through (no poll sees them as locks).
    let seeder = connect_as(&c, &format!("pytest_gw0_{NS_A}_seed")).await;
    for _ in 0..5 {
        seeder
            .batch_execute(&format!("BEGIN; {SEED}; COMMIT"))
            .await
            .unwrap();
    }
    let w = watch
        // Each backend flushes its counts at most once a second: the five may arrive in two
        // readings, which add up in one finding.
        .public_write("5 rows on public.operation_type from statistics", |w| {
            w.evidence == Evidence::Statistics
                && w.relation == "public.operation_type"
                && w.inserted == Some(5)
        })
        .await;
    assert_eq!(w.database, "tenant_a");
    assert_eq!(w.candidates, vec![NS_A.to_string()], "only A was connected");
    assert!(w.window_start < w.window_end);

    // Runs A and B live at once: both are candidates; neither is named the writer.
    let b = connect_as(&c, &format!("pytest_gw0_{NS_B}")).await;
    b.batch_execute("SELECT 1").await.unwrap();
    watch.polls(2).await;
    seeder
        .batch_execute(
            "SET search_path TO test_gw0, public; INSERT INTO role_type (name) VALUES ('x'), ('y')",
        )
        .await
        .unwrap();
    let w = watch
        .public_write("2 rows on public.role_type from statistics", |w| {
            w.evidence == Evidence::Statistics
                && w.relation == "public.role_type"
                && w.rows == Some(2)
        })
        .await;
    assert_eq!(w.candidates, vec![NS_A.to_string(), NS_B.to_string()]);
    assert_eq!(w.namespace, None, "statistics never name one writer");
    assert!(w.who().contains("one of runs"), "{}", w.who());

    // Once the counters have been still for a while, each finding ends and is in the flight log.
    let deadline = Instant::now() + Duration::from_secs(60);
    let logged = loop {
        let read = flightlog::read(&log_path).unwrap();
        let stats: Vec<PublicWrite> = read
            .public_writes
            .into_iter()
            .filter(|w| w.evidence == Evidence::Statistics)
            .collect();
        if stats.len() >= 2 {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "not in the flight log: {stats:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let op = logged
        .iter()
        .find(|w| w.relation == "public.operation_type")
        .expect("operation_type logged");
    assert_eq!(op.candidates, vec![NS_A.to_string()]);
    assert_eq!(op.inserted, Some(5));
    assert!(op.first_seen.is_some() && op.last_seen >= op.first_seen);
    let role = logged
        .iter()
        .find(|w| w.relation == "public.role_type")
        .expect("role_type logged");
    assert_eq!(role.candidates, vec![NS_A.to_string(), NS_B.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_own_schema_writes_maintenance_and_an_unlabeled_admin_are_not_public_writes() {
    let (_srv, c) = server();
    let watch = Watch::start(&c, None);
    watch.polls(1).await;
    let run = connect_as(&c, &format!("pytest_gw0_{NS_A}")).await;
    // Reads public, writes its own schema (an xid, so the lock read runs), locks a public row for
    // update, analyzes and vacuums a public table, and creates a worker table with a foreign key
    // to a shared reference table (ShareRowExclusive on it; the attack's false positive): none of
    // it writes into public.
    run.batch_execute(&format!(
        "BEGIN; SET LOCAL search_path TO test_{NS_A}_gw0, public; \
         SELECT * FROM public.operation_type; \
         INSERT INTO test_{NS_A}_gw0.operation_type VALUES (1, 'own'); \
         SELECT * FROM public.role_type FOR UPDATE; \
         ANALYZE public.operation_type; \
         CREATE TABLE test_{NS_A}_gw0.child (id int, op int REFERENCES public.operation_type (id))"
    ))
    .await
    .unwrap();
    // An unlabeled admin writes public in an open transaction while the run is connected (into
    // role_type: the run's new foreign key holds operation_type against writes).
    let admin = connect_as(&c, "psql").await;
    admin
        .batch_execute("BEGIN; INSERT INTO role_type (name) VALUES ('admin')")
        .await
        .unwrap();
    watch.polls(10).await;
    run.batch_execute("COMMIT").await.unwrap();
    run.batch_execute("VACUUM public.role_type").await.unwrap();
    for _ in 0..3 {
        run.batch_execute(&format!(
            "INSERT INTO test_{NS_A}_gw0.operation_type VALUES (2, 'autocommit')"
        ))
        .await
        .unwrap();
    }
    watch.polls(10).await;
    // The run leaves; the admin commits once its window has passed: nobody's test write.
    drop(run);
    tokio::time::sleep(Duration::from_secs(4)).await;
    admin.batch_execute("COMMIT").await.unwrap();
    // Long enough for two counter readings after the commit's statistics are flushed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all = watch.all();
    assert!(all.len() > 20, "the stream polled: {}", all.len());
    let found: Vec<PublicWrite> = all
        .iter()
        .flat_map(|u| u.snapshot.public_writes.clone())
        .collect();
    assert!(found.is_empty(), "false positives: {found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_public_write_is_in_the_flight_log_and_in_incidents_after_the_run() {
    let (_srv, c) = server();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("incidents.jsonl");
    let watch = Watch::start(&c, Some(FlightLog::new(log_path.clone())));
    watch.polls(1).await;
    let seeder = connect_as(&c, &format!("pytest_gw1_{NS_B}_seed")).await;
    let pid = backend_pid(&seeder).await;
    seeder
        .batch_execute(&format!("BEGIN; {SEED}"))
        .await
        .unwrap();
    watch
        .public_write("lock on public.operation_type", |w| {
            w.evidence == Evidence::Lock && w.pid == Some(pid)
        })
        .await;
    // The run ends: its transaction commits and its session goes away.
    seeder.batch_execute("COMMIT").await.unwrap();
    drop(seeder);
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let read = flightlog::read(&log_path).unwrap();
        if let Some(w) = read.public_writes.iter().find(|w| w.pid == Some(pid)) {
            break w.clone();
        }
        assert!(Instant::now() < deadline, "not in the flight log: {read:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logged.namespace.as_deref(), Some(NS_B));
    assert!(logged.first_seen.is_some() && logged.last_seen >= logged.first_seen);

    let incidents = |kind: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(["incidents", "--kind", kind, "--json", "--log"])
            .arg(&log_path)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let doc = incidents("public-write");
    let pw = &doc["public_writes"][0];
    assert_eq!(pw["evidence"], "lock");
    assert_eq!(pw["relation"], "public.operation_type");
    assert_eq!(pw["namespace"], NS_B);
    assert_eq!(pw["worker"], "gw1");
    assert_eq!(pw["pid"], pid);
    assert_eq!(doc["episodes"].as_array().unwrap().len(), 0);
    let doc = incidents("lock-wait");
    assert_eq!(doc["public_writes"].as_array().unwrap().len(), 0);
    // Text, filtered by run.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--namespace", NS_B, "--log"])
        .arg(&log_path)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PUBLIC WRITE into public.operation_type") && text.contains(NS_B),
        "{text}"
    );
    // A bad kind is a usage error naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["incidents", "--kind", "writes", "--log"])
        .arg(&log_path)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("writes"));
}

/// A seeder that wrote into public and then waits behind another run's row still holds its lock:
/// it is caught (the attack found waiting sessions skipped), in a one-shot snapshot too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_waiting_after_its_public_write_is_still_caught() {
    let (_srv, c) = server();
    let a = connect_as(&c, &format!("pytest_gw0_{NS_A}_seed")).await;
    a.batch_execute("BEGIN; INSERT INTO public.operation_type (id, name) VALUES (900, 'a')")
        .await
        .unwrap();
    let b = connect_as(&c, &format!("pytest_gw0_{NS_B}_seed")).await;
    let b_pid = backend_pid(&b).await;
    b.batch_execute("BEGIN; INSERT INTO public.role_type (id, name) VALUES (900, 'b')")
        .await
        .unwrap();
    let admin = connect_as(&c, "psql").await;
    let blocked = spawn_blocking_query(
        b,
        "INSERT INTO public.operation_type (id, name) VALUES (900, 'b')",
    );
    wait_until_lock_wait(&admin, b_pid).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["snapshot", "--json", "--fail-on-public-write", "--db"])
        .arg(format!("app={c}"))
        .env_remove("PGSWARM_DB")
        .env_remove("PGSWARM_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let writers: Vec<&str> = snap["public_writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["namespace"].as_str())
        .collect();
    assert!(
        writers.contains(&NS_A) && writers.contains(&NS_B),
        "{snap:#}"
    );
    a.batch_execute("ROLLBACK").await.unwrap();
    let _ = blocked.await;
}
