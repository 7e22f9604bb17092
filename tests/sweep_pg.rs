//! The fail-closed sweep against real servers: what is dropped, what is kept and why.

mod common;

use common::sweep::*;
use common::*;
use pgswarm::cmd::sweep::sweep_exit;
use pgswarm::domain::sweep::{KeepReason, SweepReport, SweepRules};
use pgswarm::pg::cluster::ClusterOptions;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::sweep::{discover_and_plan, DependencyCheck};
use pgswarm::pg::sweep::{DropSettings, SWEEP_LOCK_KEY};
use std::time::{Duration, Instant};

#[tokio::test]
async fn live_run_on_one_server_keeps_its_schemas_on_the_other_crashed_run_loses_all() {
    let s1 = start_cluster(&["platform"], ClusterOptions::default());
    let s2 = start_cluster(&["tenant_a", "tenant_b"], ClusterOptions::default());
    let (live, dead) = (stale_ns(1), stale_ns(2));
    for (srv, db) in [(&s1, "platform"), (&s2, "tenant_a"), (&s2, "tenant_b")] {
        create_schema(srv, db, &format!("test_{live}_gw0"), 3);
        create_schema(srv, db, &format!("test_{dead}_gw0"), 3);
    }
    // The live run holds a connection to `platform` only (first server).
    let _live = connect_as(&s1.conninfo("platform"), &format!("pytest_gw0_{live}")).await;
    let settings = settings(&[
        entry("platform", &s1.conninfo("platform")),
        entry("tenant_a", &s2.conninfo("tenant_a")),
        entry("tenant_b", &s2.conninfo("tenant_b")),
    ]);
    let r = sweep(&settings, &SweepRules::default(), &DropSettings::default()).await;
    assert_eq!(sweep_exit(&r).code(), 0, "{r:#?}");
    for (srv, db) in [(&s1, "platform"), (&s2, "tenant_a"), (&s2, "tenant_b")] {
        assert_eq!(dropped(&r, db), vec![format!("test_{dead}_gw0")]);
        assert_eq!(
            kept(&r, db, &format!("test_{live}_gw0")),
            Some(KeepReason::Live)
        );
        assert!(schema_exists(srv, db, &format!("test_{live}_gw0")));
        assert!(!schema_exists(srv, db, &format!("test_{dead}_gw0")));
    }
    assert!(r.active_namespaces.contains(&live));
}

#[tokio::test]
async fn unreachable_and_blackholed_databases_mean_nothing_is_dropped() {
    let s1 = start_cluster(&["platform"], ClusterOptions::default());
    let dead = stale_ns(3);
    create_schema(&s1, "platform", &format!("test_{dead}_gw0"), 2);
    let port = blackhole_port();
    let nowhere = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "sweep",
            "--yes",
            "--json",
            "--connect-timeout",
            "2s",
            "--db",
        ])
        .arg(entry("platform", &s1.conninfo("platform")))
        .arg("--db")
        .arg(format!(
            "gone=host={} dbname=gone user=x",
            nowhere.path().display()
        ))
        .arg("--db")
        .arg(format!(
            "blackhole=host=127.0.0.1 port={port} dbname=x user=x sslmode=disable"
        ))
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_exit(&out, 3);
    let r: SweepReport = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(!r.active_detection_complete);
    let errs: Vec<&str> = r.errors.iter().map(|e| e.database.as_str()).collect();
    assert!(
        errs.contains(&"gone") && errs.contains(&"blackhole"),
        "{errs:?}"
    );
    assert_eq!(
        kept(&r, "platform", &format!("test_{dead}_gw0")),
        Some(KeepReason::ActiveDetectionIncomplete)
    );
    assert!(r.databases.iter().all(|d| d.dropped.is_empty()));
    assert!(schema_exists(&s1, "platform", &format!("test_{dead}_gw0")));
    // Bounded by the 2 s connect timeout plus a generous margin for a loaded machine.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

#[tokio::test]
async fn the_seed_backlog_drops_cleanly_one_schema_per_transaction() {
    // Default lock settings: max_locks_per_transaction 64, max_connections 100.
    let srv = start_cluster(
        &["tenant"],
        ClusterOptions {
            settings: vec![("max_connections".into(), "100".into())],
            ..Default::default()
        },
    );
    let schemas: Vec<String> = (0..56)
        .map(|i| format!("test_{}_gw{}", stale_ns(100 + i), i % 8))
        .collect();
    let t = Instant::now();
    for s in &schemas {
        create_schema(&srv, "tenant", s, 220);
    }
    eprintln!("created 56 x 220 tables in {:?}", t.elapsed());

    // The same backlog in one transaction exhausts the lock table (so the sweep below means something).
    let c = connect_as(&srv.conninfo("tenant"), "one_transaction").await;
    let all: Vec<String> = schemas
        .iter()
        .map(|s| format!("DROP SCHEMA \"{s}\" CASCADE;"))
        .collect();
    let err = c
        .batch_execute(&format!("BEGIN; {} COMMIT;", all.join(" ")))
        .await
        .expect_err("56 x 220 tables in one transaction must not fit the lock table");
    assert_eq!(err.code().map(|c| c.code()), Some("53200"), "{err:?}");
    drop(c);
    assert!(
        schemas.iter().all(|s| schema_exists(&srv, "tenant", s)),
        "rolled back"
    );

    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let t = Instant::now();
    let r = sweep(&settings, &SweepRules::default(), &DropSettings::default()).await;
    eprintln!("swept 56 schemas in {:?}", t.elapsed());
    assert_eq!(dropped(&r, "tenant").len(), 56, "{r:#?}");
    assert!(r.databases[0].failed.is_empty());
    assert_eq!(sweep_exit(&r).code(), 0);
    assert!(schemas.iter().all(|s| !schema_exists(&srv, "tenant", s)));
}

#[tokio::test]
async fn a_schema_too_big_for_the_lock_table_is_dropped_in_batches() {
    // A tiny lock table: 10 locks per transaction slot.
    let srv = start_cluster(
        &["tenant"],
        ClusterOptions {
            settings: vec![
                ("max_connections".into(), "20".into()),
                ("max_locks_per_transaction".into(), "10".into()),
            ],
            ..Default::default()
        },
    );
    let big = format!("test_{}_gw0", stale_ns(7));
    // Created in chunks so the creation itself fits the lock table.
    srv.psql("tenant", &format!("CREATE SCHEMA \"{big}\""))
        .unwrap();
    for chunk in 0..15 {
        let sql: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "CREATE TABLE \"{big}\".t{} (id serial PRIMARY KEY, v text);",
                    chunk * 20 + i
                )
            })
            .collect();
        srv.psql("tenant", &sql.join(" ")).unwrap();
    }
    let c = connect_as(&srv.conninfo("tenant"), "probe").await;
    let err = c
        .batch_execute(&format!("BEGIN; DROP SCHEMA \"{big}\" CASCADE; ROLLBACK"))
        .await
        .expect_err("300 tables must not fit this lock table in one transaction");
    assert_eq!(err.code().map(|c| c.code()), Some("53200"));
    let _ = c.batch_execute("ROLLBACK").await;
    drop(c);

    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let drop = DropSettings {
        batch_tables: 10,
        ..Default::default()
    };
    let r = sweep(&settings, &SweepRules::default(), &drop).await;
    assert_eq!(dropped(&r, "tenant"), vec![big.clone()], "{r:#?}");
    assert!(!schema_exists(&srv, "tenant", &big));
}

#[tokio::test]
async fn a_locked_table_fails_its_drop_after_the_lock_timeout_and_the_rest_go_on() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let names: Vec<String> = (0..3)
        .map(|i| format!("test_{}_gw0", stale_ns(20 + i)))
        .collect();
    for n in &names {
        create_schema(&srv, "tenant", n, 2);
    }
    // Someone (not a test session) reads a table of the second schema in an open transaction.
    let holder = connect_as(&srv.conninfo("tenant"), "psql").await;
    holder
        .batch_execute(&format!("BEGIN; SELECT * FROM \"{}\".t0", names[1]))
        .await
        .unwrap();
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let drop = DropSettings {
        lock_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let r = sweep(&settings, &SweepRules::default(), &drop).await;
    let db = &r.databases[0];
    assert_eq!(db.failed.len(), 1, "{r:#?}");
    assert_eq!(db.failed[0].schema, names[1]);
    assert_eq!(db.failed[0].sqlstate.as_deref(), Some("55P03"));
    assert_eq!(
        dropped(&r, "tenant"),
        vec![names[0].clone(), names[2].clone()]
    );
    assert_eq!(sweep_exit(&r).code(), 4);
    // The sweep never cancels or terminates anyone: the holder's transaction is still usable.
    holder
        .batch_execute("SELECT 1; COMMIT")
        .await
        .expect("holder untouched");
    assert!(schema_exists(&srv, "tenant", &names[1]));
}

#[tokio::test]
async fn a_session_that_appears_between_discovery_and_drop_keeps_its_schema() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let ns = stale_ns(30);
    let schema = format!("test_{ns}_gw0");
    create_schema(&srv, "tenant", &schema, 2);
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let rules = SweepRules::default();
    let plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    assert_eq!(plan.drop_count(), 1, "{plan:#?}");
    // The invocation comes back before the drop runs.
    let _back = connect_as(&srv.conninfo("tenant"), &format!("pytest_gw0_{ns}_late")).await;
    let r = run_planned(&plan, &settings, &rules, &DropSettings::default()).await;
    assert!(r.databases[0].dropped.is_empty());
    assert_eq!(kept(&r, "tenant", &schema), Some(KeepReason::BecameLive));
    assert!(schema_exists(&srv, "tenant", &schema));
}

#[tokio::test]
async fn odd_names_are_never_dropped_whatever_the_flags() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let odd = [
        "Test_p1t1700000000r0000000a_gw0",
        "test_P1t1700000000r0000000a_gw0",
        "test_p1t1700000000r0000000a_gW0",
        "test_p1t1700000000r0000000a_gw0 ",
        "test_p1t1700000000r0000000a_gw0_x",
        "test_\"p1\"_gw0",
        "test_p1t1700000000r0000000a-gw0",
        "test_a'b_gw0",
        "test_",
        "public2",
    ];
    for o in odd {
        srv.psql(
            "tenant",
            &format!("CREATE SCHEMA \"{}\"", o.replace('"', "\"\"")),
        )
        .unwrap();
    }
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let all = SweepRules {
        min_age: Duration::ZERO,
        include_forced: true,
        include_legacy: true,
        allow_unattributed: true,
    };
    let r = sweep(&settings, &all, &DropSettings::default()).await;
    assert!(r.databases[0].dropped.is_empty(), "{r:#?}");
    for o in odd {
        assert!(schema_exists(&srv, "tenant", o), "{o:?} was touched");
    }
    assert!(schema_exists(&srv, "tenant", "public"));
}

#[tokio::test]
async fn outside_dependents_forced_and_legacy_are_kept_with_reasons() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let with_view = format!("test_{}_gw0", stale_ns(40));
    let self_contained = format!("test_{}_gw1", stale_ns(40));
    let with_fk = format!("test_{}_gw2", stale_ns(40));
    create_schema(&srv, "tenant", &with_view, 1);
    create_schema(&srv, "tenant", &self_contained, 1);
    create_schema(&srv, "tenant", &with_fk, 1);
    srv.psql(
        "tenant",
        &format!("CREATE TABLE public.orders (t0 int REFERENCES \"{with_fk}\".t0 (id))"),
    )
    .unwrap();
    srv.psql(
        "tenant",
        &format!(
            "CREATE VIEW public.report AS SELECT * FROM \"{with_view}\".t0; \
             CREATE VIEW \"{self_contained}\".inner_view AS SELECT * FROM \"{self_contained}\".t0; \
             CREATE SCHEMA test_mydebug_gw0; CREATE SCHEMA test_gw3"
        ),
    )
    .unwrap();
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let r = sweep(&settings, &SweepRules::default(), &DropSettings::default()).await;
    assert_eq!(
        kept(&r, "tenant", &with_view),
        Some(KeepReason::ExternalDependents),
        "{r:#?}"
    );
    let detail = &r.databases[0]
        .kept
        .iter()
        .find(|k| k.schema == with_view)
        .unwrap()
        .detail;
    assert!(detail.iter().any(|d| d.contains("report")), "{detail:?}");
    assert_eq!(
        kept(&r, "tenant", &with_fk),
        Some(KeepReason::ExternalDependents),
        "a foreign key from public into the schema"
    );
    assert_eq!(
        kept(&r, "tenant", "test_mydebug_gw0"),
        Some(KeepReason::UnknownAge)
    );
    assert_eq!(kept(&r, "tenant", "test_gw3"), Some(KeepReason::LegacyName));
    // A view inside the schema is not an outside dependent.
    assert_eq!(dropped(&r, "tenant"), vec![self_contained.clone()]);
    assert!(schema_exists(&srv, "tenant", &with_view));
    let n = srv
        .psql("tenant", "SELECT count(*) FROM public.report")
        .unwrap();
    assert_eq!(n.trim(), "0", "the outside view still works");
}

#[tokio::test]
async fn a_second_sweep_on_the_same_database_drops_nothing_there() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let schema = format!("test_{}_gw0", stale_ns(50));
    create_schema(&srv, "tenant", &schema, 1);
    let other = connect_as(&srv.conninfo("tenant"), "pgswarm-other").await;
    other
        .query_one("SELECT pg_advisory_lock($1)", &[&SWEEP_LOCK_KEY])
        .await
        .unwrap();
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let r = sweep(&settings, &SweepRules::default(), &DropSettings::default()).await;
    assert_eq!(
        kept(&r, "tenant", &schema),
        Some(KeepReason::SweepInProgress)
    );
    assert!(
        r.errors.iter().any(|e| e.error.contains("sweep lock")),
        "{r:#?}"
    );
    assert_eq!(sweep_exit(&r).code(), 4);
    assert!(schema_exists(&srv, "tenant", &schema));
}

#[tokio::test]
async fn cli_dry_run_confirmation_and_read_only() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let schema = format!("test_{}_gw0", stale_ns(60));
    create_schema(&srv, "tenant", &schema, 1);
    let db = entry("tenant", &srv.conninfo("tenant"));
    let bin = env!("CARGO_BIN_EXE_pgswarm");

    let out = std::process::Command::new(bin)
        .args(["sweep", "--dry-run", "--json", "--db", &db])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let r: SweepReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.dry_run);
    assert_eq!(r.databases[0].would_drop, vec![schema.clone()]);
    assert!(r.databases[0].dropped.is_empty());
    assert!(schema_exists(&srv, "tenant", &schema));

    // No terminal, no --yes: refuse before touching anything.
    let out = std::process::Command::new(bin)
        .args(["sweep", "--db", &db])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = std::process::Command::new(bin)
        .args(["sweep", "--yes", "--read-only", "--db", &db])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    assert!(schema_exists(&srv, "tenant", &schema));

    let out = std::process::Command::new(bin)
        .args(["sweep", "--yes", "--db", &db])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dropped 1, failed 0"), "{text}");
    assert!(!schema_exists(&srv, "tenant", &schema));
}

#[tokio::test]
async fn unattributed_sessions_drop_nothing_and_exit_3() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let schema = format!("test_{}_gw0", stale_ns(61));
    create_schema(&srv, "tenant", &schema, 1);
    let _odd = connect_as(&srv.conninfo("tenant"), "pytest_gw0_Not-A-Namespace").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["sweep", "--yes", "--json", "--db"])
        .arg(entry("tenant", &srv.conninfo("tenant")))
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let r: SweepReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        kept(&r, "tenant", &schema),
        Some(KeepReason::UnattributedSessions)
    );
    assert!(schema_exists(&srv, "tenant", &schema));
}

/// Issue 10, finding 3: a forced namespace that begins with a complete generated token, behind an
/// app prefix long enough that the server cuts the label right after the token. The cut label must
/// not be credited to the token (whose schemas would then look live while the forced run's look
/// stale): it is unattributable, so nothing is dropped.
#[tokio::test]
async fn a_label_cut_inside_a_forced_namespace_is_never_credited_to_a_token() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let token = "p4242t1700000000r0000beef";
    let forced = format!("{token}x");
    let prefix = "pytest_with_a_long_prefix_abcdefg";
    assert_eq!(prefix.len() + "_gw0_".len() + token.len(), 63);
    let forced_schema = format!("test_{forced}_gw0");
    create_schema(&srv, "tenant", &forced_schema, 1);
    let label = format!("{prefix}_gw0_{forced}");
    let live = connect_as(&srv.conninfo("tenant"), &label).await;
    let seen: String = live
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, format!("{prefix}_gw0_{token}"), "the server cut it");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args([
            "sweep",
            "--yes",
            "--json",
            "--include-forced",
            "--app-prefix",
            prefix,
            "--db",
        ])
        .arg(entry("tenant", &srv.conninfo("tenant")))
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let r: SweepReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        kept(&r, "tenant", &forced_schema),
        Some(KeepReason::UnattributedSessions),
        "{r:#?}"
    );
    assert!(schema_exists(&srv, "tenant", &forced_schema));
}

/// Each kind of outside dependent the first dependency check missed (issue 10, finding 1): an array of
/// the schema's row type, a function returning an array of its enum, a view casting to an array of
/// its domain, columns typed as its enum array / row type / domain array, and a partition of an
/// outside table. Each is kept, and the objects are named.
#[tokio::test]
async fn what_cascade_reaches_through_arrays_row_types_and_partitions_is_kept() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let setups = [
        ("CREATE TABLE {s}.t (id int); CREATE TABLE public.a1 (x {s}.t[])", "public.a1.x"),
        ("CREATE TYPE {s}.e AS ENUM ('a'); CREATE FUNCTION public.f2() RETURNS {s}.e[] LANGUAGE sql AS 'SELECT NULL::{s}.e[]'", "public.f2()"),
        ("CREATE DOMAIN {s}.d AS int; CREATE VIEW public.v3 AS SELECT NULL::{s}.d[] AS x", "public.v3"),
        ("CREATE TYPE {s}.e AS ENUM ('a'); CREATE TABLE public.a4 (x {s}.e[]); INSERT INTO public.a4 VALUES ('{a}')", "public.a4.x"),
        ("CREATE TABLE {s}.t (id int); CREATE TABLE public.a5 (x {s}.t)", "public.a5.x"),
        ("CREATE DOMAIN {s}.d AS int; CREATE TABLE public.a6 (x {s}.d[])", "public.a6.x"),
        ("CREATE TABLE public.p7 (id int) PARTITION BY RANGE (id); CREATE TABLE {s}.part PARTITION OF public.p7 FOR VALUES FROM (0) TO (10); INSERT INTO public.p7 VALUES (1)", "p7"),
    ];
    let mut schemas = Vec::new();
    for (i, (sql, _)) in setups.iter().enumerate() {
        let s = format!("test_{}_gw0", stale_ns(200 + i));
        srv.psql(
            "tenant",
            &format!("CREATE SCHEMA {s}; {}", sql.replace("{s}", &s)),
        )
        .unwrap();
        schemas.push(s);
    }
    // Through the CLI with --yes: the closure is computed only inside each drop's transaction.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
        .args(["sweep", "--yes", "--json", "--db"])
        .arg(entry("tenant", &srv.conninfo("tenant")))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let r: SweepReport = serde_json::from_slice(&out.stdout).unwrap();
    for (s, (_, named)) in schemas.iter().zip(setups) {
        let k = r.databases[0]
            .kept
            .iter()
            .find(|k| &k.schema == s)
            .unwrap_or_else(|| panic!("{s} was not kept: {r:#?}"));
        assert_eq!(k.reason, KeepReason::ExternalDependents);
        assert!(
            k.detail.iter().any(|d| d.contains(named)),
            "{named} not named in {:?}",
            k.detail
        );
        assert!(schema_exists(&srv, "tenant", s));
    }
    assert_eq!(
        srv.psql("tenant", "SELECT count(*) FROM public.p7")
            .unwrap()
            .trim(),
        "1"
    );
}

/// The plan-age rule lives in the executor, so the CLI prompt and the dashboard's `Y` share it.
#[tokio::test]
async fn a_plan_confirmed_too_late_runs_nothing() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let schema = format!("test_{}_gw0", stale_ns(62));
    create_schema(&srv, "tenant", &schema, 1);
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    let rules = SweepRules::default();
    let mut plan = discover_and_plan(&settings, &rules, DependencyCheck::AtPlan, &ProcessEnv).await;
    assert_eq!(plan.drop_count(), 1);
    plan.planned_at -= chrono::Duration::seconds(301);
    let r = run_planned(&plan, &settings, &rules, &DropSettings::default()).await;
    assert_eq!(kept(&r, "tenant", &schema), Some(KeepReason::PlanExpired));
    assert_eq!(sweep_exit(&r).code(), 4);
    assert!(schema_exists(&srv, "tenant", &schema));
}

/// Found by a black-box attack: an operator class of a stale schema that belongs to a `public`
/// operator family adds members to that family; dropping the class removes them and breaks a
/// `public` index that uses the family. The schema is kept, and the index still works.
#[tokio::test]
async fn an_operator_class_in_a_public_family_keeps_its_schema() {
    let srv = start_cluster(&["tenant"], ClusterOptions::default());
    let s = format!("test_{}_gw0", stale_ns(63));
    srv.psql(
        "tenant",
        &format!(
            "CREATE OPERATOR FAMILY public.fam_pub USING btree; CREATE SCHEMA {s}; \
             CREATE OPERATOR CLASS {s}.oc FOR TYPE int USING btree FAMILY public.fam_pub AS \
               OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, \
               FUNCTION 1 btint4cmp(int, int); \
             CREATE OPERATOR CLASS public.oc2 FOR TYPE int USING btree FAMILY public.fam_pub AS \
               STORAGE int; \
             CREATE TABLE public.opc_t (x int); CREATE INDEX opc_idx ON public.opc_t (x public.oc2)"
        ),
    )
    .unwrap();
    let settings = settings(&[entry("tenant", &srv.conninfo("tenant"))]);
    for check in [DependencyCheck::AtPlan, DependencyCheck::AtDropOnly] {
        let r = sweep_with(
            &settings,
            &SweepRules::default(),
            &DropSettings::default(),
            check,
        )
        .await;
        assert_eq!(
            kept(&r, "tenant", &s),
            Some(KeepReason::ExternalDependents),
            "{check:?}: {r:#?}"
        );
    }
    srv.psql("tenant", "INSERT INTO public.opc_t VALUES (1), (2)")
        .unwrap();
}

#[test]
fn timeouts_postgresql_would_refuse_are_usage_errors() {
    for flag in ["--statement-timeout", "--lock-timeout"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(["sweep", "--dry-run", flag, "100000h", "--db", "x=dbname=x"])
            .output()
            .unwrap();
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("24 days"));
    }
}
