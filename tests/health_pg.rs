//! The per-server health line against a real server: connections, the oldest transaction and whose
//! it is, and a lock table that fills up warns before the server fails with 53200.

mod common;

use common::*;
use pgswarm::domain::snapshot::{build_snapshot, WarningCode};
use pgswarm::pg::cluster::ClusterOptions;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe_once, ProbeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_lock_table_warns_before_out_of_shared_memory() {
    let srv = start_cluster(
        &["platform"],
        ClusterOptions {
            settings: vec![
                ("max_locks_per_transaction".into(), "10".into()),
                ("max_connections".into(), "20".into()),
            ],
            ..Default::default()
        },
    );
    let c = srv.conninfo("platform");
    let settings = settings(&[entry("platform", &c)]);
    let opts = ProbeOptions::default();
    let snapshot = || async {
        let obs = observe_once(&settings.databases, &settings.session, &opts, &ProcessEnv).await;
        build_snapshot(obs, &settings.convention)
    };
    let setup = connect_as(&c, &format!("pytest_gw0_{NS_A}_setup")).await;
    let setup_pid = backend_pid(&setup).await;
    setup.batch_execute("BEGIN").await.unwrap();

    let first = snapshot().await;
    let s = &first.servers[0];
    assert_eq!(s.max_connections, Some(20));
    assert_eq!(s.lock_table_capacity, Some(200), "10 x (20 + 0)");
    assert!(!s.lock_table_warning);
    assert_eq!(s.oldest_xact_pid, Some(setup_pid), "{s:?}");
    assert_eq!(
        s.oldest_xact_owner.as_deref(),
        Some(format!("{NS_A}/gw0").as_str())
    );
    assert!(s.connections >= 1);

    // A schema setup that keeps creating tables in one transaction, as the write-up's 56-schema
    // backlog did, until the server runs out of lock slots.
    let mut warned_at = None;
    let mut failed_at = None;
    for i in 0..5000 {
        match setup
            .batch_execute(&format!("CREATE TABLE t{i} (id int)"))
            .await
        {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("53200"), "{e}");
                failed_at = Some(i);
                break;
            }
        }
        if warned_at.is_none() && i % 5 == 0 {
            let snap = snapshot().await;
            if snap.servers.first().is_some_and(|s| s.lock_table_warning) {
                assert!(snap.warning_codes.contains(&WarningCode::LockTableFull));
                assert!(
                    snap.warnings.iter().any(|w| w.contains("53200")),
                    "{:?}",
                    snap.warnings
                );
                warned_at = Some(i);
            }
        }
    }
    let failed_at = failed_at.expect("the lock table filled up");
    let warned_at = warned_at.expect("a warning before out of shared memory");
    assert!(
        warned_at < failed_at,
        "warned at table {warned_at}, 53200 at {failed_at}"
    );
    setup.batch_execute("ROLLBACK").await.unwrap();
}
