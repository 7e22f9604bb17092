//! The load the server-side benchmarks run against: what a swarm of test runs looks like to the
//! server. N client backends, most idle and labeled `pytest_…`; some waiting on a lock; one open
//! transaction holding a few thousand locks (240 tables created and not committed, as schema setup
//! does).

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub async fn client(conninfo: &str, extra: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(&format!("{conninfo} {extra}"), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// A throwaway server sized for `backends` connections, with pg_stat_statements loaded.
pub fn server(backends: usize, databases: &[&str]) -> TempCluster {
    TempCluster::start(&ClusterOptions {
        databases: databases.iter().map(|s| s.to_string()).collect(),
        settings: vec![
            ("max_connections".into(), format!("{}", backends + 80)),
            (
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            ),
            ("pg_stat_statements.track".into(), "'all'".into()),
            ("shared_buffers".into(), "128MB".into()),
        ],
        ..Default::default()
    })
    .expect(
        "throwaway server (PostgreSQL server binaries with contrib: apt-get install postgresql)",
    )
}

/// The running load; dropping it without `release` leaves the server to clean up on stop.
pub struct Load {
    _idle: Vec<Client>,
    setup: Client,
    waiters: Vec<JoinHandle<Result<(), tokio_postgres::Error>>>,
}

impl Load {
    /// Opens `backends` sessions in total, `waiters` of them blocked behind the setup transaction.
    pub async fn start(conninfo: &str, backends: usize, waiters: usize) -> Load {
        let admin = client(conninfo, "application_name=bench_admin").await;
        admin
            .batch_execute("CREATE TABLE IF NOT EXISTS hot (id int)")
            .await
            .unwrap();
        let mut idle = Vec::new();
        for i in 0..backends.saturating_sub(waiters + 2) {
            let ns = format!("p{}t1763900000r{:08x}", 20_000 + i % 40, i % 40);
            let c = client(
                conninfo,
                &format!("application_name=pytest_gw{}_{ns}", i / 40),
            )
            .await;
            // Idle test sessions have run something: their last query is still in the row.
            c.batch_execute("SELECT 1 AS warm_up_after_connecting_to_the_test_database")
                .await
                .unwrap();
            idle.push(c);
        }
        let setup = client(
            conninfo,
            "application_name=pytest_gw0_p1t1763900000r000000aa_setup",
        )
        .await;
        let ddl: Vec<String> = (0..240)
            .map(|i| format!("CREATE TABLE setup_{i} (id serial PRIMARY KEY, v text);"))
            .collect();
        setup
            .batch_execute(&format!("BEGIN; LOCK TABLE hot; {}", ddl.join(" ")))
            .await
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..waiters {
            let c = Arc::new(
                client(
                    conninfo,
                    &format!("application_name=pytest_gw{i}_p2t1763900000r000000bb"),
                )
                .await,
            );
            handles.push(tokio::spawn(async move {
                c.batch_execute("SELECT * FROM hot").await
            }));
        }
        wait_for_lock_waits(&admin, waiters as i64).await;
        Load {
            _idle: idle,
            setup,
            waiters: handles,
        }
    }

    /// Ends the setup transaction and lets the waiters finish.
    pub async fn release(self) {
        self.setup.batch_execute("ROLLBACK").await.unwrap();
        for w in self.waiters {
            let _ = w.await;
        }
    }
}

/// Returns once at least `n` sessions wait for a lock.
pub async fn wait_for_lock_waits(admin: &Client, n: i64) {
    loop {
        let r = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        if r.get::<_, i64>(0) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed write-up's diagnose query: pg_blocking_pids for every backend, two activity scans.
pub const SEED: &str = "SELECT blocked.pid AS blocked_pid, blocked.application_name AS blocked_app,
  blocked.wait_event, blocked.query AS blocked_query, blocker.pid AS blocker_pid,
  blocker.application_name AS blocker_app, blocker.query AS blocker_query
FROM pg_stat_activity blocked
JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS blockers(pid) ON true
JOIN pg_stat_activity blocker ON blocker.pid = blockers.pid";
