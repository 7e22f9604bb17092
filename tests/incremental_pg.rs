//! The incremental activity read against an oracle. The dashboard and `record` poll over persistent
//! sessions and form whole rows only for backends the per-backend accessors say changed
//! (`domain::incremental`). Whether that is exact is decided by the server, so it is tested on one:
//! random histories of real sessions (statements, transactions, relabels, reconnects, lock waits
//! that end, are cancelled or change blockers, sleeps cancelled mid-statement), and after every
//! step the incremental read must equal a fresh full read, column by column.
//!
//! The 2 s margin is narrowed to zero here: each step happens after the previous poll, so only the
//! incremental rules (not "it is recent, send it again") can make the two reads agree.

mod common;

use common::*;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::probe::{observe, observe_once, open_all, ProbeOptions};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

type Task = JoinHandle<(Client, Result<u64, tokio_postgres::Error>)>;

enum Slot {
    Ready {
        client: Client,
        in_tx: bool,
        holds: Option<usize>,
    },
    /// Waiting for `table`'s lock (autocommit), or sleeping (`table` None) until cancelled; a
    /// sleep cancelled inside a transaction leaves it aborted.
    Running {
        task: Task,
        table: Option<usize>,
        in_tx: bool,
    },
    /// Idle in an aborted transaction: only its end is allowed.
    Aborted { client: Client },
    /// Moved out for the current step.
    Taken,
}

const TABLES: usize = 3;
const SLOTS: usize = 7;
const STEPS: usize = 120;

async fn wait_for(admin: &Client, pid: i32, sql_condition: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND ({sql_condition})");
    while admin
        .query_one(&sql, &[&pid])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never reached {sql_condition}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn random_session_histories_read_incrementally_equal_fresh_full_reads() {
    let mut rng = Rng::seeded();
    let seed = rng.seed();

    let srv = Server::start(&["app_test"]);
    srv.psql(
        "app_test",
        "CREATE TABLE t0 (id int); CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)",
    );
    let ci = srv.conninfo("app_test");
    let cfg = settings(&[entry("app_test", &ci)]);
    let opts = ProbeOptions::default();
    let admin = connect_as(&ci, "admin").await;
    let persistent = open_all(&cfg.databases, &cfg.session, &ProcessEnv).await;
    let monitor = persistent[0].as_ref().unwrap();
    monitor.set_margin_for_tests(chrono::Duration::zero());

    let mut label = 0usize;
    let mut next_label = || {
        label += 1;
        let ns = [NS_A, NS_B, NS_C][label % 3];
        format!("pytest_gw{label}_{ns}")
    };
    let mut slots: Vec<(i32, Slot)> = Vec::new();
    for _ in 0..SLOTS {
        let client = connect_as(&ci, &next_label()).await;
        let pid = backend_pid(&client).await;
        let slot = Slot::Ready {
            client,
            in_tx: false,
            holds: None,
        };
        slots.push((pid, slot));
    }
    let mut holder_of: [Option<usize>; TABLES] = [None; TABLES];
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    let mut delta_reads = 0;

    for step in 0..STEPS {
        let i = rng.below(SLOTS);
        let pid = slots[i].0;
        let slot = std::mem::replace(&mut slots[i].1, Slot::Taken);
        let (kind, new_slot) = match slot {
            Slot::Taken => unreachable!("every slot is put back at the end of its step"),
            Slot::Aborted { client } => {
                client.batch_execute("ROLLBACK").await.unwrap();
                (
                    "end aborted transaction",
                    Slot::Ready {
                        client,
                        in_tx: false,
                        holds: None,
                    },
                )
            }
            Slot::Running { task, table, in_tx } => {
                // Cancel the wait or the sleep: active -> idle without a new statement.
                admin
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .await
                    .unwrap();
                let (client, r) = task.await.unwrap();
                let _ = table;
                let _ = r; // Cancelled, or granted just before the cancel arrived.
                let slot = if in_tx {
                    Slot::Aborted { client }
                } else {
                    Slot::Ready {
                        client,
                        in_tx: false,
                        holds: None,
                    }
                };
                ("cancel", slot)
            }
            Slot::Ready {
                client,
                in_tx,
                holds,
            } => {
                let free: Vec<usize> = (0..TABLES).filter(|t| holder_of[*t].is_none()).collect();
                let held: Vec<usize> = (0..TABLES)
                    .filter(|t| holder_of[*t].is_some_and(|h| h != i))
                    .collect();
                // Lock steps twice as likely: waits whose blockers change need holders and queues.
                match [0, 1, 2, 3, 4, 5, 6, 7, 1, 4, 5, 5][rng.below(12)] {
                    0 => {
                        client
                            .batch_execute(&format!("SELECT {step}"))
                            .await
                            .unwrap();
                        (
                            "statement",
                            Slot::Ready {
                                client,
                                in_tx,
                                holds,
                            },
                        )
                    }
                    1 if !in_tx => {
                        client.batch_execute("BEGIN; SELECT 1").await.unwrap();
                        (
                            "begin",
                            Slot::Ready {
                                client,
                                in_tx: true,
                                holds,
                            },
                        )
                    }
                    2 if in_tx => {
                        let end = if rng.below(2) == 0 {
                            "COMMIT"
                        } else {
                            "ROLLBACK"
                        };
                        client.batch_execute(end).await.unwrap();
                        if let Some(t) = holds {
                            holder_of[t] = None;
                            // Everybody waiting for that table gets it and finishes.
                            for (_, s) in slots.iter_mut() {
                                if let Slot::Running {
                                    table: Some(tt), ..
                                } = s
                                {
                                    if *tt == t {
                                        let Slot::Running { task, .. } =
                                            std::mem::replace(s, Slot::Taken)
                                        else {
                                            unreachable!()
                                        };
                                        let (c, r) = task.await.unwrap();
                                        r.unwrap();
                                        *s = Slot::Ready {
                                            client: c,
                                            in_tx: false,
                                            holds: None,
                                        };
                                    }
                                }
                            }
                        }
                        (
                            "end transaction",
                            Slot::Ready {
                                client,
                                in_tx: false,
                                holds: None,
                            },
                        )
                    }
                    3 => {
                        client
                            .batch_execute(&format!("SET application_name = '{}'", next_label()))
                            .await
                            .unwrap();
                        (
                            "relabel",
                            Slot::Ready {
                                client,
                                in_tx,
                                holds,
                            },
                        )
                    }
                    4 if in_tx && holds.is_none() && !free.is_empty() => {
                        let t = free[rng.below(free.len())];
                        client
                            .batch_execute(&format!("LOCK TABLE t{t}"))
                            .await
                            .unwrap();
                        holder_of[t] = Some(i);
                        (
                            "lock",
                            Slot::Ready {
                                client,
                                in_tx,
                                holds: Some(t),
                            },
                        )
                    }
                    5 if !in_tx && !held.is_empty() => {
                        let t = held[rng.below(held.len())];
                        let sql: &'static str = match (t, rng.below(2)) {
                            (0, 0) => "SELECT count(*) FROM t0",
                            (1, 0) => "SELECT count(*) FROM t1",
                            (2, 0) => "SELECT count(*) FROM t2",
                            (0, _) => "TRUNCATE t0",
                            (1, _) => "TRUNCATE t1",
                            _ => "TRUNCATE t2",
                        };
                        eprintln!(
                            "step {step}: slot {i} (pid {pid}) runs {sql:?}, held by {:?}",
                            holder_of[t]
                        );
                        let task = spawn_blocking_query(client, sql);
                        wait_until_lock_wait(&admin, pid).await;
                        (
                            "wait",
                            Slot::Running {
                                task,
                                table: Some(t),
                                in_tx,
                            },
                        )
                    }
                    6 if holds.is_none() => {
                        let task = spawn_blocking_query(client, "SELECT pg_sleep(60)");
                        wait_for(&admin, pid, "wait_event = 'PgSleep'").await;
                        (
                            "sleep",
                            Slot::Running {
                                task,
                                table: None,
                                in_tx,
                            },
                        )
                    }
                    7 if !in_tx => {
                        drop(client);
                        wait_for_gone(&admin, pid).await;
                        let client = connect_as(&ci, &next_label()).await;
                        slots[i].0 = backend_pid(&client).await;
                        (
                            "reconnect",
                            Slot::Ready {
                                client,
                                in_tx: false,
                                holds: None,
                            },
                        )
                    }
                    _ => {
                        client.batch_execute("SELECT 'noop'").await.unwrap();
                        (
                            "statement",
                            Slot::Ready {
                                client,
                                in_tx,
                                holds,
                            },
                        )
                    }
                }
            }
        };
        eprintln!("step {step}: {kind} on slot {i} (pid {pid})");
        slots[i].1 = new_slot;
        *kinds.entry(kind).or_default() += 1;

        // A poll at any moment may catch a backend between its statement's end and its wait for
        // the next command; the poll after the sessions settle must have caught up anyway.
        let before = monitor.counters().full_reads;
        observe(&cfg.databases, &persistent, &opts, Duration::from_secs(10)).await;
        wait_until_all_settled(&admin).await;
        let incremental =
            observe(&cfg.databases, &persistent, &opts, Duration::from_secs(10)).await;
        delta_reads += 2 * usize::from(monitor.counters().full_reads == before);
        let full = observe_once(&cfg.databases, &cfg.session, &opts, &ProcessEnv).await;
        let (inc, fresh) = (session_rows(&incremental), session_rows(&full));
        let only_inc: Vec<&SessionRow> = inc.iter().filter(|r| !fresh.contains(r)).collect();
        let only_fresh: Vec<&SessionRow> = fresh.iter().filter(|r| !inc.contains(r)).collect();
        assert!(
            only_inc.is_empty() && only_fresh.is_empty(),
            "step {step} ({kind} on slot {i}, pid {pid}), seed {seed}:\n incremental only: \
             {only_inc:?}\n full read only: {only_fresh:?}"
        );
    }
    eprintln!(
        "steps: {kinds:?}; {delta_reads} of {} polls were incremental",
        2 * STEPS
    );
    assert!(kinds.len() >= 6, "too few kinds of step: {kinds:?}");
    // One read in FULL_READ_EVERY is full by design (and the first); a step with one counts both.
    let scheduled = 2 * (2 * STEPS / pgswarm::domain::incremental::FULL_READ_EVERY as usize + 1);
    assert!(
        delta_reads >= 2 * STEPS - scheduled,
        "incremental reads: {delta_reads} (a read the server did not answer fully forces a full one)"
    );

    // Leave nothing waiting or sleeping behind.
    for (pid, s) in slots {
        if let Slot::Running { task, .. } = s {
            admin
                .execute("SELECT pg_cancel_backend($1)", &[&pid])
                .await
                .unwrap();
            let _ = task.await;
        }
    }
}

async fn wait_for_gone(admin: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(Instant::now() < deadline, "pid {pid} never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every test session is settled (waiting for its client, a lock or its sleep) and
/// nothing in their rows moved for 50 ms. A client hears a statement's result, or its error,
/// before the backend has processed the protocol's Sync and reported `idle` again (a new
/// `state_change`, the same state); without this the two reads compared below could see one
/// session at two moments.
async fn wait_until_all_settled(admin: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = || async {
        admin
            .query(
                "SELECT pid, state, wait_event, state_change::text FROM pg_stat_activity \
                 WHERE application_name LIKE 'pytest\\_%' ORDER BY pid",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, i32>(0),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, Option<String>>(2),
                    r.get::<_, Option<String>>(3),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut last = read().await;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = read().await;
        let settled = now.iter().all(|r| {
            matches!(
                r.2.as_deref(),
                Some("ClientRead" | "PgSleep" | "relation" | "transactionid" | "tuple")
            )
        });
        if now == last && settled {
            return;
        }
        assert!(Instant::now() < deadline, "sessions never settled: {now:?}");
        last = now;
    }
}

/// A backend appears in the activity only once authenticated, which can be long after the
/// `backend_start` the incremental rules look at (here: a client that takes 3 s to send its
/// password). Its row was never formed; a live pid with no row must make the next read full, so the
/// session shows up one poll later instead of at the next scheduled full read, a minute on.
#[tokio::test]
async fn a_session_that_authenticates_slowly_still_appears() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = start_cluster(
        &["app_test"],
        pgswarm::pg::cluster::ClusterOptions {
            tcp: true,
            tcp_hba: vec!["host all all 127.0.0.1/32 password".into()],
            ..Default::default()
        },
    );
    srv.psql("postgres", "CREATE ROLE slow LOGIN PASSWORD 'pw'")
        .unwrap();
    let ci = srv.conninfo("app_test");
    let cfg = settings(&[entry("app_test", &ci)]);
    let opts = ProbeOptions::default();
    let persistent = open_all(&cfg.databases, &cfg.session, &ProcessEnv).await;
    persistent[0]
        .as_ref()
        .unwrap()
        .set_margin_for_tests(chrono::Duration::zero());
    let poll = || observe(&cfg.databases, &persistent, &opts, Duration::from_secs(10));
    let label = format!("pytest_gw7_{NS_A}");
    let shown = |o: &pgswarm::domain::snapshot::Observation| {
        o.sessions.iter().any(|s| s.application_name == label)
    };

    // The startup packet, then the server asks for the cleartext password: the backend exists
    // (its backend_start is now) but is not in the activity yet.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", srv.port()))
        .await
        .unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    for kv in ["user", "slow", "database", "app_test"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(b"application_name\0");
    body.extend_from_slice(label.as_bytes());
    body.extend_from_slice(&[0, 0]);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    sock.write_all(&packet).await.unwrap();
    let mut head = [0u8; 9];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(
        (head[0], &head[5..9]),
        (b'R', &3i32.to_be_bytes()[..]),
        "the server should ask for a cleartext password"
    );

    assert!(!shown(&poll().await), "not authenticated yet");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!shown(&poll().await));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shown(&poll().await));

    let mut msg = vec![b'p'];
    msg.extend_from_slice(&(4 + 3i32).to_be_bytes());
    msg.extend_from_slice(b"pw\0");
    sock.write_all(&msg).await.unwrap();
    // Read until ReadyForQuery: the backend is now in the activity, with a 3 s old backend_start.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        seen.extend_from_slice(&buf[..n]);
    }
    let first = poll().await;
    let second = poll().await;
    assert!(
        shown(&first) || shown(&second),
        "a session that took 3 s to authenticate must show up within two polls"
    );
    let third = poll().await;
    assert!(shown(&third), "and stay");
    drop(sock);
}
