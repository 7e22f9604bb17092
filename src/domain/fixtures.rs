//! Deterministic, hand-built observations: the scenarios the render snapshots, the app tests and the
//! frame benchmark are made of. Real-server behaviour is tested against real servers; these exist so
//! that *drawing* and *state handling* can be tested exactly and measured at any size.

use crate::domain::snapshot::{
    AwaitedLock, DatabaseInfo, Observation, ObservedDatabase, ObservedSchema, ObservedServer,
    ObservedSession,
};
use chrono::{DateTime, TimeZone, Utc};

/// The fixed "now" of every fixture: 2026-11-23 12:00:00 UTC.
pub fn fixture_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// A generated namespace for invocation `i` (started `i` minutes before [`fixture_now`]).
pub fn fixture_namespace(i: usize) -> String {
    let started = fixture_now().timestamp() - 60 * (i as i64 + 1);
    format!(
        "p{}t{}r{:08x}",
        10_000 + i,
        started,
        0x1000_0000u32 + i as u32 * 7919
    )
}

fn at(secs_before_now: i64) -> DateTime<Utc> {
    fixture_now() - chrono::Duration::seconds(secs_before_now)
}

fn server(i: usize) -> ObservedServer {
    ObservedServer {
        key: format!("server{i}"),
        label: format!("db{i}.internal:5432"),
        now: fixture_now(),
        activity_error: None,
        health: crate::domain::snapshot::ObservedHealth {
            max_connections: Some(100),
            lock_table_capacity: Some(6400),
            lock_table_used: Some(230),
            lock_table_read_at: Some(fixture_now()),
            prepared: Vec::new(),
            xacts: Some(1_000_000),
        },
    }
}

fn database(name: &str, server: usize) -> ObservedDatabase {
    ObservedDatabase {
        name: name.into(),
        target: format!("ci@db{server}.internal:5432/{name}"),
        outcome: Ok(DatabaseInfo {
            server,
            server_version: "15.18".into(),
            datname: name.into(),
            latency: std::time::Duration::from_micros(1500),
            schema_error: None,
        }),
        stale: None,
        not_read_yet: false,
    }
}

fn labeled(server: usize, db: &str, pid: i32, worker: &str, ns: &str) -> ObservedSession {
    ObservedSession {
        server,
        datname: Some(db.into()),
        pid,
        usename: Some("ci".into()),
        application_name: format!("pytest_{worker}_{ns}"),
        backend_type: Some("client backend".into()),
        state: Some("idle".into()),
        query: Some("SELECT 1".into()),
        backend_start: Some(at(120)),
        query_start: Some(at(5)),
        state_change: Some(at(5)),
        ..Default::default()
    }
}

fn waiting(
    mut s: ObservedSession,
    blockers: &[i32],
    mode: &str,
    rel: &str,
    secs: i64,
) -> ObservedSession {
    s.state = Some("active".into());
    s.wait_event_type = Some("Lock".into());
    s.wait_event = Some("relation".into());
    s.query = Some(format!("SELECT * FROM {rel}"));
    s.query_start = Some(at(secs + 1));
    s.blocked_by = blockers.to_vec();
    s.awaited = Some(AwaitedLock {
        lock_type: "relation".into(),
        mode: mode.into(),
        relation: Some(rel.into()),
        waitstart: Some(at(secs)),
        object: format!("relation:{rel}"),
        ..Default::default()
    });
    s
}

fn schema(db: &str, ns: &str, worker: &str, tables: i64) -> ObservedSchema {
    ObservedSchema {
        database: db.into(),
        schema: format!("test_{ns}_{worker}"),
        tables,
        bytes: tables * 16_384,
        bytes_exact: true,
    }
}

fn observation(
    databases: Vec<ObservedDatabase>,
    servers: usize,
    sessions: Vec<ObservedSession>,
    schemas: Vec<ObservedSchema>,
) -> Observation {
    Observation {
        shared: Default::default(),
        taken_at: fixture_now(),
        databases,
        servers: (0..servers).map(server).collect(),
        sessions,
        schemas,
    }
}

/// Nothing running: two reachable databases, no sessions, no schemas.
pub fn empty() -> Observation {
    observation(
        vec![database("platform", 0), database("tenant_a", 0)],
        1,
        vec![],
        vec![],
    )
}

/// Invocation 1 (idle in transaction) holds `public.accounts`; invocation 2 waits: a collision. A
/// third invocation is healthy, a fourth crashed and left orphaned schemas, plus a legacy schema.
pub fn collision() -> Observation {
    let (a, b, c, d) = (
        fixture_namespace(1),
        fixture_namespace(2),
        fixture_namespace(3),
        fixture_namespace(9),
    );
    let mut holder = labeled(0, "platform", 101, "gw0", &a);
    holder.state = Some("idle in transaction".into());
    holder.xact_start = Some(at(95));
    holder.query = Some("UPDATE accounts SET balance = balance - 1 WHERE id = 7".into());
    let sessions = vec![
        holder,
        labeled(0, "tenant_a", 102, "gw1", &a),
        waiting(
            labeled(0, "platform", 201, "gw0", &format!("{b}_setup")),
            &[101],
            "AccessExclusiveLock",
            "public.accounts",
            42,
        ),
        labeled(0, "tenant_a", 202, "gw1", &b),
        labeled(0, "platform", 301, "master", &c),
        ObservedSession {
            application_name: "psql".into(),
            ..labeled(0, "platform", 900, "x", "y")
        },
    ];
    let schemas = vec![
        schema("platform", &a, "gw0", 220),
        schema("tenant_a", &a, "gw1", 220),
        schema("platform", &b, "gw0", 220),
        schema("platform", &d, "gw0", 220),
        schema("tenant_a", &d, "gw0", 220),
        ObservedSchema {
            schema: "test_gw0".into(),
            ..schema("platform", &d, "gw0", 12)
        },
    ];
    observation(
        vec![database("platform", 0), database("tenant_a", 0)],
        1,
        sessions,
        schemas,
    )
}

/// [`collision`] three seconds later: the waiter (201) gave up (its `lock_timeout` fired: the
/// statement failed inside its transaction) while the holder is still idle in its transaction.
pub fn collision_gave_up() -> Observation {
    let mut obs = collision();
    let later = fixture_now() + chrono::Duration::seconds(3);
    obs.taken_at = later;
    for s in &mut obs.servers {
        s.now = later;
    }
    for s in obs.sessions.iter_mut().filter(|s| s.pid == 201) {
        s.blocked_by.clear();
        s.awaited = None;
        s.wait_event_type = None;
        s.wait_event = None;
        s.state = Some("idle in transaction (aborted)".into());
        s.state_change = Some(fixture_now() + chrono::Duration::seconds(2));
        s.xact_start = s.query_start;
    }
    obs
}

/// A chain `depth` long: each session waits for the one before it, all in one invocation except the
/// last, which is another invocation's.
pub fn deep_chain(depth: usize) -> Observation {
    let a = fixture_namespace(1);
    let b = fixture_namespace(2);
    let mut sessions = vec![labeled(0, "platform", 1000, "gw0", &a)];
    sessions[0].state = Some("active".into());
    sessions[0].query = Some("ALTER TABLE t0 ADD COLUMN x int".into());
    for i in 1..depth {
        let ns = if i + 1 == depth { &b } else { &a };
        sessions.push(waiting(
            labeled(0, "platform", 1000 + i as i32, &format!("gw{i}"), ns),
            &[999 + i as i32],
            "AccessExclusiveLock",
            &format!("public.t{}", i - 1),
            (depth - i) as i64 * 3,
        ));
    }
    observation(vec![database("platform", 0)], 1, sessions, vec![])
}

/// `tenant_b` on a second server is unreachable; the rest is fine.
pub fn unreachable() -> Observation {
    let mut o = collision();
    o.servers.push(server(1));
    o.databases.push(ObservedDatabase {
        name: "tenant_b".into(),
        target: "ci@db1.internal:5432/tenant_b".into(),
        outcome: Err("db1.internal:5432: timed out after 5 s (connect_timeout)".into()),
        stale: None,
        not_read_yet: false,
    });
    o
}

/// The monitoring role lacks `pg_read_all_stats`: other roles' sessions are hidden.
pub fn permission_limited() -> Observation {
    let mut o = collision();
    for s in o.sessions.iter_mut().skip(3) {
        s.query = Some(crate::domain::snapshot::INSUFFICIENT_PRIVILEGE.into());
        s.state = None;
        s.backend_type = None;
    }
    o
}

/// A large, deterministic swarm: `invocations` invocations spread over `databases` databases on
/// `servers` servers, `sessions` sessions in all, one blocked pair in every 20th invocation (half of
/// them collisions), and one schema per worker and database.
pub fn synthetic(
    sessions: usize,
    invocations: usize,
    databases: usize,
    servers: usize,
) -> Observation {
    let dbs: Vec<String> = (0..databases).map(|i| format!("db{i}")).collect();
    let workers_per_inv = (sessions / invocations.max(1)).max(1);
    let mut out = Vec::with_capacity(sessions);
    let mut schemas = Vec::new();
    let mut pid = 10_000;
    for inv in 0..invocations {
        let ns = fixture_namespace(inv);
        for w in 0..workers_per_inv {
            if out.len() >= sessions {
                break;
            }
            let db_i = (inv + w) % databases.max(1);
            let srv = db_i % servers.max(1);
            pid += 1;
            let mut s = labeled(srv, &dbs[db_i], pid, &format!("gw{w}"), &ns);
            if inv % 20 == 0 && w == 1 {
                // Blocked by this invocation's gw0 (or, in every other case, another invocation's).
                let blocker = if inv % 40 == 0 {
                    pid - 1 - workers_per_inv as i32
                } else {
                    pid - 1
                };
                s = waiting(s, &[blocker], "RowExclusiveLock", "public.shared", 7);
                s.server = out
                    .iter()
                    .find(|o: &&ObservedSession| o.pid == blocker)
                    .map(|o| o.server)
                    .unwrap_or(srv);
            }
            out.push(s);
            if w < 4 {
                schemas.push(schema(&dbs[db_i], &ns, &format!("gw{w}"), 220));
            }
        }
    }
    observation(
        dbs.iter()
            .enumerate()
            .map(|(i, d)| database(d, i % servers.max(1)))
            .collect(),
        servers.max(1),
        out,
        schemas,
    )
}

/// A busy swarm as the demo makes it: four databases, three lock trees (an idle-in-transaction
/// holder with two victims from another run, a chain of three, a cross-run pair), healthy sessions,
/// and a backlog of 56 orphaned schemas from 14 crashed runs.
pub fn busy() -> Observation {
    let dbs = [
        "platform_test",
        "tenant_a_test",
        "tenant_b_test",
        "tenant_c_test",
    ];
    let ns: Vec<String> = (1..=5).map(fixture_namespace).collect();
    let mut holder = labeled(0, dbs[0], 101, "gw0", &ns[0]);
    holder.state = Some("idle in transaction".into());
    holder.xact_start = Some(at(41));
    holder.query = Some("UPDATE shared_counters SET n = n + 1 WHERE id = 1".into());
    let mut chain_root = labeled(0, dbs[1], 301, "gw0", &ns[2]);
    chain_root.state = Some("active".into());
    chain_root.xact_start = Some(at(30));
    chain_root.query = Some("ALTER TABLE orders ADD COLUMN note text".into());
    let mut pair_root = labeled(0, dbs[2], 401, "gw0", &ns[3]);
    pair_root.state = Some("idle in transaction".into());
    pair_root.xact_start = Some(at(12));
    let sessions = vec![
        holder,
        waiting(
            labeled(0, dbs[0], 201, "gw0", &ns[1]),
            &[101],
            "RowExclusiveLock",
            "public.shared_counters",
            14,
        ),
        waiting(
            labeled(0, dbs[0], 202, "gw1", &ns[1]),
            &[101],
            "RowExclusiveLock",
            "public.shared_counters",
            9,
        ),
        chain_root,
        waiting(
            labeled(0, dbs[1], 302, "gw1", &ns[2]),
            &[301],
            "AccessShareLock",
            "public.orders",
            8,
        ),
        waiting(
            labeled(0, dbs[1], 303, "gw2", &ns[2]),
            &[302],
            "AccessShareLock",
            "public.orders",
            5,
        ),
        pair_root,
        waiting(
            labeled(0, dbs[2], 402, "gw2", &ns[0]),
            &[401],
            "ShareLock",
            "public.invoices",
            3,
        ),
        labeled(0, dbs[3], 501, "gw0", &ns[4]),
        labeled(0, dbs[3], 502, "gw1", &ns[4]),
        labeled(0, dbs[0], 102, "gw1", &ns[0]),
    ];
    let mut schemas = Vec::new();
    for crashed in 20..34 {
        let gone = fixture_namespace(crashed);
        for w in 0..4 {
            schemas.push(schema(dbs[w % 4], &gone, &format!("gw{w}"), 16));
        }
    }
    for (i, n) in ns.iter().enumerate() {
        schemas.push(schema(dbs[i % 4], n, "gw0", 16));
    }
    observation(
        dbs.iter().map(|d| database(d, 0)).collect(),
        1,
        sessions,
        schemas,
    )
}

/// [`busy`] two seconds earlier, with two more waiters behind the idle-in-transaction holder (pids
/// 601 and 602, a run's gw3 and gw4) that are gone in [`busy`]: their waits end as `waiter gone`.
pub fn busy_before() -> Observation {
    let mut obs = busy();
    let earlier = fixture_now() - chrono::Duration::seconds(2);
    obs.taken_at = earlier;
    for s in &mut obs.servers {
        s.now = earlier;
        s.health.xacts = s.health.xacts.map(|x| x - 500);
    }
    let ns = fixture_namespace(2);
    for (pid, worker) in [(601, "gw3"), (602, "gw4")] {
        let mut w = waiting(
            labeled(0, "platform_test", pid, worker, &ns),
            &[101],
            "RowExclusiveLock",
            "public.shared_counters",
            6,
        );
        w.backend_start = Some(at(60));
        obs.sessions.push(w);
    }
    obs
}
