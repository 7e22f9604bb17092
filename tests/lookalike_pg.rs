//! Issue 23: no statement trusts the database. A database owner (no superuser) builds a look-alike
//! for every function, aggregate, operator, relation and type pgswarm's SQL text names
//! (`common::lookalike`, generated from `src/pg`), and puts it first in `search_path` three ways
//! at once: `ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET` and the URL's
//! `options=-c search_path=…`. Every scenario must give what it gives on a clean database: the same
//! snapshot, summary and recording; a sweep that drops exactly what the clean twin drops (an event
//! trigger records what was really dropped); a terminate or cancel that reaches exactly its target
//! and nobody else. Nothing may panic.
//!
//! The fixture checks itself first: through an unpinned session the look-alikes must lie (so a
//! pgswarm without the pin would see them). Mutation-checked: with the pin in `pg::connect`
//! removed, every scenario here fails.

mod common;

use common::lookalike::{lookalike_sql, sql_words};
use common::*;
use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

const HOSTILE_OPTIONS: &str = "options='-c search_path=evil,pg_catalog'";

/// Runs pgswarm with `db`'s lines as `--db` entries.
fn pgswarm(args: &[&str], db: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
    for entry in db.lines() {
        cmd.args(["--db", entry]);
    }
    cmd.args(args)
        .args(["--connect-timeout", "5s"])
        .env_remove("PGSWARM_DB")
        .env_remove("PGSWARM_CONFIG")
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("pgswarm-lookalike-state"),
        )
        .output()
        .expect("pgswarm runs")
}

fn no_panic(o: &Output, what: &str) {
    assert_ne!(
        o.status.code(),
        Some(101),
        "{what} panicked:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// psql as `user` (not the superuser): what a database owner can do.
fn psql_as(srv: &TempCluster, db: &str, user: &str, sql: &str) -> String {
    let conninfo = srv
        .conninfo(db)
        .replace("user=postgres", &format!("user={user}"));
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
        ])
        .args(["-c", sql])
        .output()
        .expect("psql runs (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql as {user} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `db` hostile: owned by `mallory`, who builds the look-alikes and sets the database's
/// search_path; the monitoring role's per-database setting points there too.
fn make_hostile(srv: &TempCluster, db: &str) {
    srv.psql(db, &format!("ALTER DATABASE {db} OWNER TO mallory"))
        .expect("owner");
    psql_as(srv, db, "mallory", &lookalike_sql(&sql_words()));
    let made = psql_as(
        srv,
        db,
        "mallory",
        "SELECT kind || ':' || count(*) FROM evil.made GROUP BY kind ORDER BY kind",
    );
    eprintln!("look-alikes in {db}: {}", made.replace('\n', " "));
    for must in [
        "pg_stat_get_activity",
        "pg_blocking_pids",
        "pg_lock_status",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_backend_pid",
        "current_setting",
        "pg_try_advisory_lock",
    ] {
        let n = psql_as(
            srv,
            db,
            "mallory",
            &format!("SELECT count(*) FROM evil.made WHERE name = '{must}'"),
        );
        assert_ne!(
            n.trim(),
            "0",
            "no look-alike for {must}: the generator missed it"
        );
    }
    // The fixture lies through an unpinned session (else this test could prove nothing).
    let lies = psql_as(
        srv,
        db,
        "mallory",
        "SET search_path = evil, pg_catalog; \
         SELECT 1 = 2, (SELECT count(*) FROM pg_stat_activity), pg_blocking_pids(1)",
    );
    assert_eq!(
        lies.trim(),
        "t|424242|{424242}",
        "the look-alikes do not lie"
    );
}

/// Turns the attack on for `db`: the search_path by database setting and role setting, and every
/// other setting an owner can give its database to steer a session (found by the black-box attack
/// on issue 23): acting as the owner's role, an isolation that judges on an old snapshot, a time
/// zone and date style that make one server read as two, NULL and backslash semantics.
fn attack(srv: &TempCluster, db: &str) {
    psql_as(
        srv,
        db,
        "mallory",
        &format!(
            "ALTER DATABASE {db} SET search_path = evil, pg_catalog, public; \
             ALTER DATABASE {db} SET role = 'mallory'; \
             ALTER DATABASE {db} SET default_transaction_isolation = 'repeatable read'; \
             ALTER DATABASE {db} SET default_transaction_deferrable = on; \
             ALTER DATABASE {db} SET TimeZone = 'Pacific/Chatham'; \
             ALTER DATABASE {db} SET DateStyle = 'SQL, DMY'; \
             ALTER DATABASE {db} SET transform_null_equals = on; \
             ALTER DATABASE {db} SET standard_conforming_strings = off"
        ),
    );
    srv.psql(
        "postgres",
        &format!("ALTER ROLE postgres IN DATABASE {db} SET search_path = evil, pg_catalog"),
    )
    .expect("role setting");
}

/// Drops what changes from one read to the next (times, ages, latencies: every `*_s`, `*_ms` and
/// `*_at` field and the few named here).
fn normalize(mut v: Value) -> Value {
    const VOLATILE: &[&str] = &[
        "taken_at",
        "latency_ms",
        "waiting_s",
        "backend_start",
        "xact_start",
        "query_start",
        "state_change",
        "wait_started_at",
        "oldest_xact_age_s",
        "lock_table_used",
        "lock_table_fill",
        "lock_table_read_at",
        "xacts",
        "target",
        "longest_wait_s",
        "duration_ms",
        "elapsed_ms",
        "planned_at",
        "finished_at",
        "age_s",
        "timings",
    ];
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| {
                    !(VOLATILE.contains(&k.as_str())
                        || k.ends_with("_s")
                        || k.ends_with("_ms")
                        || k.ends_with("_at"))
                });
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The paths at which two documents differ (for a readable failure).
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(l, r, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differences(l, r, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} != {b}")),
        _ => {}
    }
}

fn assert_same(hostile: Value, clean: Value, what: &str) {
    let (h, c) = (normalize(hostile), normalize(clean));
    let mut diff = Vec::new();
    differences(&h, &c, "", &mut diff);
    diff.dedup();
    assert!(
        diff.is_empty(),
        "{what} differs (hostile != clean):\n{}",
        diff.join("\n")
    );
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The read-only paths (snapshot, summary, a recording's incremental polls) under attack equal the
/// same reads without it, over a chain of three runs and a stale schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catalog_reads_equal_clean_reads_and_signals_reach_only_their_targets() {
    // With a structured log (issue 28): `record` reads it through the look-alikes too.
    let srv = start_cluster(
        &["work"],
        ClusterOptions {
            settings: pgswarm::pg::cluster::lock_log_settings(),
            ..Default::default()
        },
    );
    srv.psql("postgres", "CREATE ROLE mallory LOGIN").unwrap();
    srv.psql(
        "work",
        &format!(
            "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); \
             CREATE SCHEMA test_{NS_A}_gw0; CREATE SCHEMA test_{NS_B}_gw0; \
             CREATE SCHEMA test_{}_gw0; CREATE TABLE test_{}_gw0.x (id int)",
            common::sweep::stale_ns(1),
            common::sweep::stale_ns(1)
        ),
    )
    .unwrap();
    make_hostile(&srv, "work");
    let ci = srv.conninfo("work");
    let admin = connect_as(&srv.conninfo("postgres"), "admin").await;

    // A chain: A holds t1; B holds t2 and waits for t1; C waits for t2.
    let a0 = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    // Its transaction also writes into public (an xid): the public-write lock read runs too.
    a0.batch_execute("BEGIN; LOCK TABLE t1; INSERT INTO t1 DEFAULT VALUES")
        .await
        .unwrap();
    let b0 = connect_as(&ci, &format!("pytest_gw0_{NS_B}")).await;
    let b0_pid = backend_pid(&b0).await;
    b0.batch_execute("BEGIN; LOCK TABLE t2").await.unwrap();
    let b0_wait = spawn_blocking_query(b0, "LOCK TABLE t1");
    wait_until_lock_wait(&admin, b0_pid).await;
    let c0 = connect_as(&ci, &format!("pytest_gw0_{NS_C}")).await;
    let c0_pid = backend_pid(&c0).await;
    let c0_wait = spawn_blocking_query(c0, "SELECT count(*) FROM t2");
    wait_until_lock_wait(&admin, c0_pid).await;
    // Bystanders: a run's idle session, a psql in another database.
    let bystander = connect_as(&ci, &format!("pytest_gw1_{NS_A}")).await;
    let other_db = connect_as(&srv.conninfo("postgres"), "psql").await;
    let target = connect_as(&ci, "pytest_gw0_p4400t1763900300r0d0d0d0d").await;
    let target_pid = backend_pid(&target).await;

    // A clean database of the same server after the hostile one: the server's activity is read
    // through the first, and one server must read as one server.
    let other = srv.conninfo("postgres");
    let clean = format!("work={ci}\nother={other}");
    let reads = |db: String| {
        let rec = tempfile::NamedTempFile::new().unwrap();
        let snap = pgswarm(&["snapshot", "--json"], &db);
        let summary = pgswarm(&["snapshot", "--summary", "--json"], &db);
        let record = pgswarm(
            &[
                "record",
                "--out",
                rec.path().to_str().unwrap(),
                "--duration",
                "3s",
                "--interval",
                "0.25s",
                "--no-flight-log",
            ],
            &db,
        );
        for (o, what) in [
            (&snap, "snapshot"),
            (&summary, "summary"),
            (&record, "record"),
        ] {
            no_panic(o, what);
        }
        let last = std::fs::read_to_string(rec.path())
            .unwrap()
            .lines()
            .last()
            .map(|l| serde_json::from_str::<Value>(l).expect("recording line"))
            .expect("a recorded line");
        (snap, summary, record, last)
    };
    let (s0, m0, r0, l0) = reads(clean.clone());
    assert_exit(&s0, 0);
    let v0 = json(&s0);
    assert!(
        v0["lock_trees"].as_array().is_some_and(|t| !t.is_empty()),
        "the clean read sees the chain: {v0:#}"
    );
    assert_eq!(
        v0["public_writes"][0]["relation"], "public.t1",
        "the clean read sees A's write into public: {v0:#}"
    );

    attack(&srv, "work");
    let hostile = format!("work={ci} {HOSTILE_OPTIONS}\nother={other}");
    let (s1, m1, r1, l1) = reads(hostile.clone());
    assert_eq!(s1.status.code(), s0.status.code(), "snapshot exit codes");
    assert_same(json(&s1), v0, "snapshot");
    assert_eq!(m1.status.code(), m0.status.code(), "summary exit codes");
    assert_same(json(&m1), json(&m0), "summary");
    assert_eq!(r1.status.code(), r0.status.code(), "record exit codes");
    assert_same(l1, l0, "recording");

    // Terminate by pid through the hostile database: exactly the target ends.
    let alive = |pids: Vec<i32>| {
        let admin = &admin;
        async move {
            let rows = admin
                .query(
                    "SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
        }
    };
    let launchers = "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity \
                     WHERE backend_type <> 'client backend'";
    let background: i64 = admin.query_one(launchers, &[]).await.unwrap().get(0);
    let bystanders = vec![
        backend_pid(&bystander).await,
        backend_pid(&other_db).await,
        c0_pid,
        b0_pid,
    ];
    let t = pgswarm(
        &[
            "terminate",
            "--pid",
            &target_pid.to_string(),
            "--yes",
            "--json",
        ],
        &hostile,
    );
    no_panic(&t, "terminate --pid");
    assert_exit(&t, 0);
    let report = json(&t);
    let signalled: Vec<i64> = report["signalled"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["pid"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(signalled, vec![i64::from(target_pid)], "{report:#}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !alive(vec![target_pid]).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the target never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alive(bystanders.clone()).await.len(), bystanders.len());
    let after: i64 = admin.query_one(launchers, &[]).await.unwrap().get(0);
    assert_eq!(after, background, "a background process was terminated");

    // Cancel a run by namespace: only its waiting statement is cancelled.
    let c = pgswarm(
        &["cancel", "--namespace", NS_B, "--yes", "--json"],
        &hostile,
    );
    no_panic(&c, "cancel --namespace");
    assert_exit(&c, 0);
    let (b0, r) = tokio::time::timeout(Duration::from_secs(10), b0_wait)
        .await
        .expect("the cancelled statement returned")
        .unwrap();
    assert_eq!(r.unwrap_err().code().map(|c| c.code()), Some("57014"));
    assert_eq!(alive(bystanders.clone()).await.len(), bystanders.len());
    // B's aborted transaction released t2, so C's wait ends with its lock (not touched otherwise).
    let (c0, r) = tokio::time::timeout(Duration::from_secs(10), c0_wait)
        .await
        .expect("C got its lock once B's transaction aborted")
        .unwrap();
    r.expect("C's statement was not cancelled");

    // Terminate a run by namespace: C ends, nobody else.
    let k = pgswarm(
        &["terminate", "--namespace", NS_C, "--yes", "--json"],
        &hostile,
    );
    no_panic(&k, "terminate --namespace");
    assert_exit(&k, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !alive(vec![c0_pid]).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "C never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = vec![
        backend_pid(&bystander).await,
        backend_pid(&other_db).await,
        b0_pid,
    ];
    assert_eq!(alive(rest.clone()).await.len(), rest.len());
    drop((a0, b0, c0, bystander, other_db, target));
}

/// Sweeps of twin databases, one clean and one hostile, drop exactly the same objects (recorded by
/// an event trigger): the stale schema goes; a live run's schema and one a `public` column depends
/// on stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_catalog_sweeps_exactly_like_a_clean_one() {
    let srv = start_cluster(&["sw_clean", "sw_hostile"], ClusterOptions::default());
    srv.psql("postgres", "CREATE ROLE mallory LOGIN").unwrap();
    let stale = common::sweep::stale_ns(7);
    let used = common::sweep::stale_ns(8);
    for db in ["sw_clean", "sw_hostile"] {
        srv.psql(
            db,
            &format!(
                "CREATE TABLE public.dropped (schema_name text, identity text); \
                 CREATE FUNCTION public.record_drop() RETURNS event_trigger LANGUAGE plpgsql \
                   SET search_path = pg_catalog AS $$ BEGIN \
                   INSERT INTO public.dropped SELECT schema_name, object_identity \
                     FROM pg_event_trigger_dropped_objects(); END $$; \
                 CREATE EVENT TRIGGER record_drop ON sql_drop EXECUTE FUNCTION public.record_drop(); \
                 CREATE SCHEMA test_{stale}_gw0; CREATE TABLE test_{stale}_gw0.t (id int); \
                 CREATE SCHEMA test_{used}_gw0; CREATE DOMAIN test_{used}_gw0.d AS int; \
                 CREATE TABLE public.keep (v test_{used}_gw0.d); \
                 CREATE SCHEMA test_{NS_A}_gw0; CREATE TABLE test_{NS_A}_gw0.t (id int)"
            ),
        )
        .unwrap();
    }
    make_hostile(&srv, "sw_hostile");
    attack(&srv, "sw_hostile");
    // A live run of NS_A, connected to another database of the server.
    let _live = connect_as(&srv.conninfo("postgres"), &format!("pytest_gw0_{NS_A}")).await;

    let run = |db: String| {
        let o = pgswarm(&["sweep", "--yes", "--json"], &db);
        no_panic(&o, "sweep");
        o
    };
    let clean = run(format!("d={}", srv.conninfo("sw_clean")));
    let hostile = run(format!(
        "d={} {HOSTILE_OPTIONS}",
        srv.conninfo("sw_hostile")
    ));
    assert_eq!(hostile.status.code(), clean.status.code());
    assert_same(json(&hostile), json(&clean), "sweep report");
    let dropped = |db: &str| {
        // The hostile database makes every session act as mallory: the test's own too.
        srv.psql(
            db,
            "SET ROLE NONE; SELECT identity FROM public.dropped ORDER BY 1",
        )
        .unwrap()
    };
    let d = dropped("sw_clean");
    assert!(d.contains(&format!("test_{stale}_gw0")), "{d}");
    assert!(!d.contains(&used) && !d.contains(NS_A), "{d}");
    assert_eq!(dropped("sw_hostile"), d, "what was really dropped");
    srv.psql(
        "sw_hostile",
        "SET ROLE NONE; SELECT count(*) FROM public.keep",
    )
    .expect("the public table is still readable");
}
