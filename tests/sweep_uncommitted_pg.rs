//! Issue 23: the sweep's dependency closure reads only committed catalog rows, so a transaction that
//! has not committed yet (idle in transaction, or prepared and left for days) can hold a reference
//! to a stale schema's type that the closure cannot see; dropping the schema would leave the
//! reference dangling once that transaction commits (`cache lookup failed for type`).
//!
//! The oracle: random rounds of stale schemas and other transactions (short data-only writers that
//! commit while the sweep waits, writers that stay open, uncommitted, running and prepared catalog
//! changes that refer to a stale schema, committed references), then a sweep, then every other
//! transaction commits. Afterwards no `pg_depend` row may point at a missing object and every
//! `public` table must be readable; a schema whose drop could not have hurt (no writer stayed open,
//! nothing refers to it) must have been dropped, so short writes never stall a sweep.
//! Mutation-checked: with `uncommitted_suspects` returning nothing, dangling references appear in
//! the first round.

mod common;

use common::*;
use pgswarm::pg::cluster::ClusterOptions;
use serde_json::Value;
use std::process::Command;
use tokio_postgres::Client;

fn sweep(conninfo: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "sweep",
            "--yes",
            "--json",
            "--connect-timeout",
            "5s",
            "--db",
        ])
        .arg(format!("d={conninfo}"))
        .env_remove("PGSWARM_DB")
        .env_remove("PGSWARM_CONFIG")
        .output()
        .expect("pgswarm runs");
    assert_ne!(out.status.code(), Some(101), "sweep panicked");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sweep --json ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Kept reasons by schema, and the dropped schemas.
fn outcome(v: &Value) -> (Vec<(String, String, String)>, Vec<String>) {
    let db = &v["databases"][0];
    let kept = db["kept"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            (
                k["schema"].as_str().unwrap_or_default().to_string(),
                k["reason"].as_str().unwrap_or_default().to_string(),
                k["detail"].to_string(),
            )
        })
        .collect();
    let dropped = db["dropped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    (kept, dropped)
}

/// What another transaction does while the sweep runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Other {
    Nothing,
    /// Inserts into a public table, stays idle in its transaction, and commits 300 ms later (while
    /// the sweep waits for it).
    DataWriter,
    /// Inserts into a public table and stays idle in its transaction through the sweep.
    LongWriter,
    /// A function taking the stale schema's domain, then a statement still running (`pg_sleep`)
    /// through the sweep: the transaction is active, holds only weak locks.
    Running,
    /// Adds a column of the stale schema's domain to a public table; idle in transaction.
    AddColumn,
    /// A function taking the stale schema's domain; idle in transaction.
    Function,
    /// A domain over the stale schema's domain; idle in transaction.
    Domain,
    /// One of the three above, prepared (`PREPARE TRANSACTION`).
    Prepared(u8),
    /// A committed column of the stale schema's domain (the closure sees it).
    Committed,
}

/// A session of another transaction: held here, or in a task that ends it on its own.
enum Held {
    Client(Client),
    Task(tokio::task::JoinHandle<Client>),
}

fn reference_sql(kind: u8, schema: &str, tag: &str) -> String {
    match kind {
        0 => format!("ALTER TABLE public.tab_{tag} ADD COLUMN c {schema}.d"),
        1 => format!(
            "CREATE FUNCTION public.f_{tag}({schema}.d) RETURNS int LANGUAGE sql AS 'SELECT 1'"
        ),
        _ => format!("CREATE DOMAIN public.d_{tag} AS {schema}.d"),
    }
}

async fn dangling(admin: &Client) -> Vec<String> {
    let rows = admin
        .query(
            "SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' -> ' \
                    || d.refclassid::regclass::text || ' ' || d.refobjid::text \
               FROM pg_depend d \
              WHERE (d.refclassid = 'pg_type'::regclass \
                     AND NOT EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = d.refobjid)) \
                 OR (d.refclassid = 'pg_class'::regclass \
                     AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.refobjid)) \
                 OR (d.refclassid = 'pg_proc'::regclass \
                     AND NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = d.refobjid)) \
                 OR (d.refclassid = 'pg_namespace'::regclass \
                     AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.oid = d.refobjid))",
            &[],
        )
        .await
        .expect("dangling query");
    rows.iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_and_prepared_catalog_changes_keep_their_schemas() {
    let srv = start_cluster(
        &["d"],
        ClusterOptions {
            settings: vec![("max_prepared_transactions".into(), "20".into())],
            ..Default::default()
        },
    );
    let ci = srv.conninfo("d");
    let admin = connect_as(&ci, "admin").await;
    admin
        .batch_execute("CREATE TABLE public.log (id int)")
        .await
        .unwrap();
    let mut rng = Rng::seeded();
    let rounds = std::env::var("PGSWARM_UNCOMMITTED_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds {
        let schemas: Vec<String> = (0..3)
            .map(|i| format!("test_{}_gw0", common::sweep::stale_ns(round * 10 + i)))
            .collect();
        let mut others = Vec::new();
        for (i, s) in schemas.iter().enumerate() {
            let tag = format!("{round}_{i}");
            admin
                .batch_execute(&format!(
                    "CREATE SCHEMA {s}; CREATE DOMAIN {s}.d AS int; CREATE TABLE {s}.t (id int); \
                     CREATE TABLE public.tab_{tag} (id int)"
                ))
                .await
                .unwrap();
            let other = match rng.below(12) {
                0 | 1 => Other::Nothing,
                2 | 3 => Other::DataWriter,
                4 => Other::LongWriter,
                5 => Other::Running,
                6 => Other::AddColumn,
                7 => Other::Function,
                8 => Other::Domain,
                9 | 10 => Other::Prepared(rng.below(3) as u8),
                _ => Other::Committed,
            };
            let c = connect_as(&ci, "other").await;
            let gid = format!("g_{tag}");
            match other {
                Other::Nothing => {}
                Other::DataWriter => c
                    .batch_execute("BEGIN; INSERT INTO public.log VALUES (1)")
                    .await
                    .unwrap(),
                Other::LongWriter => c
                    .batch_execute("BEGIN; INSERT INTO public.log VALUES (1)")
                    .await
                    .unwrap(),
                Other::Running => {
                    c.batch_execute(&format!("BEGIN; {}", reference_sql(1, s, &tag)))
                        .await
                        .unwrap();
                }
                Other::AddColumn | Other::Function | Other::Domain => {
                    let kind = match other {
                        Other::AddColumn => 0,
                        Other::Function => 1,
                        _ => 2,
                    };
                    c.batch_execute(&format!("BEGIN; {}", reference_sql(kind, s, &tag)))
                        .await
                        .unwrap()
                }
                Other::Prepared(kind) => c
                    .batch_execute(&format!(
                        "BEGIN; {}; PREPARE TRANSACTION '{gid}'",
                        reference_sql(kind, s, &tag)
                    ))
                    .await
                    .unwrap(),
                Other::Committed => c.batch_execute(&reference_sql(0, s, &tag)).await.unwrap(),
            }
            *seen.entry(format!("{other:?}")).or_default() += 1;
            let held = match other {
                // Commits while the sweep waits for it.
                Other::DataWriter => Held::Task(tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                    c.batch_execute("COMMIT").await.unwrap();
                    c
                })),
                // Still running its statement through the sweep, then commits.
                Other::Running => Held::Task(tokio::spawn(async move {
                    c.batch_execute("SELECT pg_sleep(12)").await.unwrap();
                    c.batch_execute("COMMIT").await.unwrap();
                    c
                })),
                _ => Held::Client(c),
            };
            others.push((s.clone(), other, held, gid));
        }
        let report = sweep(&ci);
        let (kept, dropped) = outcome(&report);
        // A writer still open after the sweep's patience, or a prepared transaction.
        let catalog_open = others.iter().any(|(_, o, _, _)| {
            matches!(
                o,
                Other::LongWriter
                    | Other::Running
                    | Other::AddColumn
                    | Other::Function
                    | Other::Domain
                    | Other::Prepared(_)
            )
        });
        for (s, o, _, gid) in &others {
            let k = kept.iter().find(|k| &k.0 == s);
            let why = format!(
                "round {round}: {s} ({o:?}), others {:?}\n{report:#}",
                others.iter().map(|x| x.1).collect::<Vec<_>>()
            );
            match (o, k) {
                (Other::Committed, Some(k)) => assert_eq!(k.1, "external_dependents", "{why}"),
                (_, Some(k)) if catalog_open => {
                    assert_eq!(k.1, "uncommitted_ddl", "{why}");
                    if let Other::Prepared(_) = o {
                        assert!(
                            k.2.contains(gid.as_str()),
                            "names the prepared transaction: {why}"
                        );
                    }
                }
                // Precision: no catalog change was open and nothing refers to it, so it went.
                (Other::Nothing | Other::DataWriter, None) if !catalog_open => {
                    assert!(dropped.contains(s), "neither dropped nor kept: {why}")
                }
                _ => panic!("wrong outcome: {why}"),
            }
        }
        if catalog_open {
            let named = kept
                .iter()
                .any(|k| k.2.contains("session pid") || k.2.contains("prepared transaction"));
            assert!(named, "the detail names the open transaction: {report:#}");
        }
        // Every other transaction commits now: nothing may be left dangling.
        for (_, o, held, gid) in others {
            let c = match held {
                Held::Client(c) => c,
                Held::Task(t) => t.await.unwrap(),
            };
            match o {
                Other::LongWriter | Other::AddColumn | Other::Function | Other::Domain => {
                    c.batch_execute("COMMIT").await.unwrap()
                }
                Other::Prepared(_) => admin
                    .batch_execute(&format!("COMMIT PREPARED '{gid}'"))
                    .await
                    .unwrap(),
                _ => {}
            }
        }
        let left = dangling(&admin).await;
        assert!(
            left.is_empty(),
            "round {round}: dangling references {left:?}\n{report:#}"
        );
        for (i, _) in schemas.iter().enumerate() {
            admin
                .batch_execute(&format!("SELECT * FROM public.tab_{round}_{i}"))
                .await
                .unwrap_or_else(|e| {
                    panic!("round {round}: public.tab_{round}_{i} unreadable: {e:?}")
                });
        }
        // The next round starts from a database without this round's schemas.
        for s in &schemas {
            admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .await
                .unwrap();
        }
    }
    eprintln!("cases: {seen:?}");
}

/// Issue 23: prepared transactions belong in the picture: the health line's oldest transaction
/// names the gid, `servers[].prepared[]` lists it, the session it blocks shows blocker pid 0, and
/// `terminate --pid 0` refuses with the statement that ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_shown_with_its_gid_and_never_signalled() {
    let srv = start_cluster(
        &["d"],
        ClusterOptions {
            settings: vec![("max_prepared_transactions".into(), "5".into())],
            ..Default::default()
        },
    );
    let ci = srv.conninfo("d");
    let admin = connect_as(&ci, "admin").await;
    admin
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    admin
        .batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE; PREPARE TRANSACTION 'stuck-migration'")
        .await
        .unwrap();
    let victim = connect_as(&ci, &format!("pytest_gw0_{NS_A}")).await;
    let victim_pid = backend_pid(&victim).await;
    let wait = spawn_blocking_query(victim, "INSERT INTO t VALUES (1)");
    wait_until_lock_wait(&admin, victim_pid).await;

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(args)
            .args(["--db", &format!("d={ci}")])
            .env_remove("PGSWARM_DB")
            .env_remove("PGSWARM_CONFIG")
            .output()
            .expect("pgswarm runs")
    };
    let out = run(&["snapshot", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let server = &v["servers"][0];
    assert_eq!(
        server["prepared"][0]["gid"], "stuck-migration",
        "{server:#}"
    );
    assert_eq!(server["oldest_xact_pid"], 0, "{server:#}");
    assert!(
        server["oldest_xact_owner"]
            .as_str()
            .is_some_and(|o| o.contains("stuck-migration")),
        "{server:#}"
    );
    let victim_row = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == victim_pid)
        .expect("the victim is shown");
    assert_eq!(victim_row["blocked_by"], serde_json::json!([0]));
    let text = run(&["snapshot"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("prepared transaction \"stuck-migration\""),
        "{text}"
    );
    // The lock tree's root names it too (pg_blocking_pids says only 0).
    assert!(
        text.contains("prepared transaction \"stuck-migration\" (pid 0)"),
        "{text}"
    );

    let t = run(&["terminate", "--pid", "0", "--yes"]);
    assert_eq!(
        t.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&t.stderr)
    );
    let err = String::from_utf8_lossy(&t.stderr);
    assert!(
        err.contains("ROLLBACK PREPARED") && err.contains("stuck-migration"),
        "{err}"
    );

    admin
        .batch_execute("ROLLBACK PREPARED 'stuck-migration'")
        .await
        .unwrap();
    wait.await.unwrap().1.unwrap();
}
