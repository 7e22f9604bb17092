//! Each waiter's awaited lock, and what its blockers hold on that very object, against an oracle.
//!
//! pgswarm reads `pg_lock_status()` once per poll and joins the waiters' locks to the holders' by a
//! hash of a few object columns, comparing the rest only for pairs that hash alike (see
//! `pg::probe::locks_sql`). Whether that finds exactly the right holders is decided by the lock
//! manager, so it is tested on a real server: random sessions take random locks (every table lock
//! mode, row locks through UPDATE and FOR SHARE, advisory locks whose keys differ only in the
//! columns the hash leaves out: `0`, `2^32` and `(0,0)`), each statement either finishes (its
//! locks stay held in the open transaction) or waits. In every settled state, each waiter's lock
//! type, mode, relation (a row-lock wait's table comes from the tuple it queued for) and the
//! `(holder, mode)` pairs must equal a naive self-join of `pg_locks` that compares every object
//! column with `IS NOT DISTINCT FROM`.

mod common;

use common::*;
use pgswarm::pg::config::build_target;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe_once, ProbeOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

const SESSIONS: usize = 6;
const ROUNDS: usize = 80;
const TABLES: usize = 3;

const MODES: [&str; 8] = [
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];

/// One random statement that takes a lock (and may have to wait for it).
fn statement(rng: &mut Rng) -> String {
    let t = rng.below(TABLES);
    let row = 1 + rng.below(2);
    match rng.below(6) {
        0 | 1 => format!("LOCK TABLE t{t} IN {} MODE", MODES[rng.below(MODES.len())]),
        2 => format!("UPDATE t{t} SET v = v + 1 WHERE id = {row}"),
        3 => format!("SELECT * FROM t{t} WHERE id = {row} FOR SHARE"),
        _ => {
            // Keys 0, 2^32 and (0,0) share objid 0: only classid/objsubid tell them apart.
            let key = ["0", "4294967296", "0, 0", "7"][rng.below(4)];
            let shared = if rng.below(2) == 0 { "_shared" } else { "" };
            format!("SELECT pg_advisory_xact_lock{shared}({key})")
        }
    }
}

/// Per waiter: lock type, mode, relation, sorted `pid mode` of the holders pgswarm reports.
type Awaited = BTreeMap<i32, (String, String, Option<String>, Vec<String>)>;

/// The oracle: every lock not granted, its relation (or the table of the tuple its process holds,
/// for a row-lock wait), and every granted lock on the same object, all ten object columns compared
/// with `IS NOT DISTINCT FROM`, held by another waiter or by a blocker of any waiter (the sessions
/// pgswarm reports holds for).
const ORACLE: &str = "
WITH w AS (SELECT * FROM pg_locks WHERE NOT granted),
     involved AS (SELECT pid FROM w UNION SELECT unnest(pg_blocking_pids(pid)) FROM w)
SELECT w.pid, w.locktype, w.mode,
  (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = coalesce(w.relation,
      (SELECT t.relation FROM pg_locks t
        WHERE t.pid = w.pid AND t.granted AND t.locktype = 'tuple' LIMIT 1))),
  coalesce((SELECT array_agg(h.pid || ' ' || h.mode ORDER BY h.pid || ' ' || h.mode)
     FROM pg_locks h
    WHERE h.granted AND h.pid <> w.pid AND h.pid IN (SELECT pid FROM involved)
      AND h.locktype IS NOT DISTINCT FROM w.locktype
      AND h.database IS NOT DISTINCT FROM w.database
      AND h.relation IS NOT DISTINCT FROM w.relation
      AND h.page IS NOT DISTINCT FROM w.page
      AND h.tuple IS NOT DISTINCT FROM w.tuple
      AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
      AND h.transactionid IS NOT DISTINCT FROM w.transactionid
      AND h.classid IS NOT DISTINCT FROM w.classid
      AND h.objid IS NOT DISTINCT FROM w.objid
      AND h.objsubid IS NOT DISTINCT FROM w.objsubid), '{}')
FROM w";

async fn oracle(admin: &Client) -> Awaited {
    admin
        .query(ORACLE, &[])
        .await
        .expect("oracle query")
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
}

type Task = JoinHandle<(Client, Result<(), tokio_postgres::Error>)>;

/// Returns once `pid` waits on a lock or its statement finished.
async fn settle(admin: &Client, pid: i32, task: &Task) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if task.is_finished() {
            return;
        }
        let waiting: bool = admin
            .query_one(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} neither finished nor waited on a lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn every_waiter_gets_exactly_the_locks_its_blockers_hold_on_its_object() {
    let mut rng = Rng::seeded();
    let seed = rng.seed();

    let srv = Server::start(&["app_test"]);
    let mut setup = String::new();
    for t in 0..TABLES {
        setup.push_str(&format!(
            "CREATE TABLE t{t} (id int PRIMARY KEY, v int); INSERT INTO t{t} VALUES (1, 0), (2, 0);"
        ));
    }
    srv.psql("app_test", &setup);
    let ci = srv.conninfo("app_test");
    let targets = [build_target(Some("app_test"), &ci, "test", &ProcessEnv).unwrap()];
    let cfg = settings(&[entry("app_test", &ci)]);
    let opts = ProbeOptions::default();
    let admin = connect_as(&ci, "admin").await;

    let mut compared = 0usize;
    let mut waiters_seen = 0usize;
    let mut holders_seen = 0usize;
    for round in 0..ROUNDS {
        let mut running: Vec<(i32, Task, String)> = Vec::new();
        for s in 0..SESSIONS {
            let client = connect_as(&ci, &format!("pytest_gw{s}_{NS_A}")).await;
            let pid = backend_pid(&client).await;
            let mut sql = String::from("BEGIN;");
            for _ in 0..1 + rng.below(3) {
                sql.push_str(&statement(&mut rng));
                sql.push(';');
            }
            let batch = sql.clone();
            let task: Task = tokio::spawn(async move {
                let r = client.batch_execute(&batch).await;
                (client, r)
            });
            settle(&admin, pid, &task).await;
            running.push((pid, task, sql));
        }

        // A settled state: the oracle reads the same before and after pgswarm's read (a deadlock
        // being resolved changes it; then read again).
        let mut agreed = false;
        for _ in 0..5 {
            let before = oracle(&admin).await;
            let obs = observe_once(&targets, &cfg.session, &opts, &ProcessEnv).await;
            let after = oracle(&admin).await;
            if before != after {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let seen: Awaited = obs
                .sessions
                .iter()
                .filter_map(|s| {
                    let a = s.awaited.as_ref()?;
                    let mut held: Vec<String> =
                        a.held.iter().map(|(p, m)| format!("{p} {m}")).collect();
                    held.sort();
                    Some((
                        s.pid,
                        (
                            a.lock_type.clone(),
                            a.mode.clone(),
                            a.relation.clone(),
                            held,
                        ),
                    ))
                })
                .collect();
            let statements: Vec<String> = running
                .iter()
                .map(|(pid, _, sql)| format!("{pid}: {sql}"))
                .collect();
            assert_eq!(
                seen,
                before,
                "round {round} (seed {seed}): pgswarm (left) vs the pg_locks self-join (right); \
                 sessions:\n{}",
                statements.join("\n")
            );
            waiters_seen += before.len();
            holders_seen += before.values().map(|v| v.3.len()).sum::<usize>();
            compared += 1;
            agreed = true;
            break;
        }
        assert!(agreed, "round {round}: the lock table never settled");

        // Waits are cancelled (again, as a cancelled waiter can free the next statement of
        // another's batch to wait), then every transaction ends.
        let pids: Vec<i32> = running.iter().map(|(p, _, _)| *p).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.iter().any(|(_, t, _)| !t.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "round {round}: waits never ended"
            );
            admin
                .query(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                     WHERE pid = ANY($1) AND wait_event_type = 'Lock'",
                    &[&pids],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (_, task, _) in running {
            let (client, _) = task.await.unwrap();
            client.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    eprintln!(
        "{compared} settled states compared, {waiters_seen} waiters, {holders_seen} holder modes"
    );
    assert_eq!(compared, ROUNDS);
    // The random rounds must have exercised the join: waiters with holders on their object.
    assert!(
        waiters_seen >= ROUNDS && holders_seen >= ROUNDS,
        "too little contention to test anything ({waiters_seen} waiters, {holders_seen} holds)"
    );
}
