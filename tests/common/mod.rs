//! Shared test harness: real PostgreSQL servers, labeled client sessions, and waits with timeouts.
//!
//! Each test starts its own throwaway server from the installed binaries (`TempCluster`, stopped on
//! drop, also when the test panics). `PGSWARM_TEST_SERVER` (a libpq key=value string for a superuser,
//! without dbname) points single-server tests at an existing server instead: they then create uniquely
//! named databases there and drop them afterwards. Tests that need two servers always start their own.
//! Missing server binaries fail the test loudly with what to install.
#![allow(dead_code)]

pub mod http;
pub mod lookalike;
pub mod pki;
pub mod serve;
pub mod sweep;

use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use pgswarm::pg::config::{resolve_settings, CliSettings, Settings};
use pgswarm::pg::conninfo::ProcessEnv;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

pub const NS_A: &str = "p4100t1763900000r0a0a0a0a";
pub const NS_B: &str = "p4200t1763900100r0b0b0b0b";
pub const NS_C: &str = "p4300t1763900200r0c0c0c0c";

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A server for one test.
pub enum Server {
    Temp(TempCluster),
    External {
        base: String,
        prefix: String,
        created: Vec<String>,
        roles: Vec<String>,
    },
}

impl Server {
    /// A server with the given databases (logical names; on an external server they get a unique
    /// prefix, see [`Server::dbname`]).
    pub fn start(databases: &[&str]) -> Server {
        if let Ok(base) = std::env::var("PGSWARM_TEST_SERVER") {
            let prefix = format!(
                "pgswarm_t{}_{}_",
                std::process::id(),
                UNIQUE.fetch_add(1, Ordering::Relaxed)
            );
            let mut s = Server::External {
                base,
                prefix,
                created: Vec::new(),
                roles: Vec::new(),
            };
            for d in databases {
                let real = s.dbname(d);
                s.psql("postgres", &format!("CREATE DATABASE \"{real}\""));
                if let Server::External { created, .. } = &mut s {
                    created.push(real);
                }
            }
            return s;
        }
        Server::Temp(start_cluster(databases, ClusterOptions::default()))
    }

    /// The real database name behind a logical one.
    pub fn dbname(&self, logical: &str) -> String {
        match self {
            Server::Temp(_) => logical.to_string(),
            Server::External { .. } if logical == "postgres" => logical.to_string(),
            Server::External { prefix, .. } => format!("{prefix}{logical}"),
        }
    }

    pub fn conninfo(&self, logical: &str) -> String {
        match self {
            Server::Temp(c) => c.conninfo(logical),
            Server::External { base, .. } => format!("{base} dbname={}", self.dbname(logical)),
        }
    }

    pub fn psql(&self, logical: &str, sql: &str) -> String {
        match self {
            Server::Temp(c) => c
                .psql(logical, sql)
                .unwrap_or_else(|e| panic!("psql failed: {e}")),
            Server::External { .. } => {
                let out = std::process::Command::new("psql")
                    .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
                    .arg(self.conninfo(logical))
                    .args(["-c", sql])
                    .output()
                    .expect("psql runs");
                assert!(
                    out.status.success(),
                    "psql failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }
}

impl Server {
    /// Creates a login role (unique per test on an external server; dropped afterwards).
    pub fn create_role(&mut self, logical: &str) -> String {
        let name = match self {
            Server::Temp(_) => logical.to_string(),
            Server::External { prefix, .. } => format!("{prefix}{logical}"),
        };
        self.psql("postgres", &format!("CREATE ROLE \"{name}\" LOGIN"));
        if let Server::External { roles, .. } = self {
            roles.push(name.clone());
        }
        name
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::External {
            base,
            created,
            roles,
            ..
        } = self
        {
            let drops: Vec<String> = created
                .drain(..)
                .map(|d| format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"))
                .chain(
                    roles
                        .drain(..)
                        .map(|r| format!("DROP ROLE IF EXISTS \"{r}\"")),
                )
                .collect();
            for sql in drops {
                let _ = std::process::Command::new("psql")
                    .args(["-X", "-q", "-d"])
                    .arg(format!("{base} dbname=postgres"))
                    .args(["-c", &sql])
                    .output();
            }
        }
    }
}

/// Starts a throwaway server or fails the test with what to fix (each cluster error names its fix:
/// binaries to install, a directory to make reachable, ...).
pub fn start_cluster(databases: &[&str], mut opts: ClusterOptions) -> TempCluster {
    opts.databases = databases.iter().map(|s| s.to_string()).collect();
    TempCluster::start(&opts)
        .unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL server for this test: {e}"))
}

/// Opens a session labeled `application_name` (the way a test worker would).
pub async fn connect_as(conninfo: &str, application_name: &str) -> Client {
    let config = format!("{conninfo} application_name='{application_name}'");
    let (client, conn) = tokio_postgres::connect(&config, NoTls)
        .await
        .unwrap_or_else(|e| panic!("test connection to {conninfo} failed: {e:?}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub async fn backend_pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Waits (bounded, polling) until `pid` waits on a heavyweight lock.
pub async fn wait_until_lock_wait(admin: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = admin
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity \
                 WHERE pid = $1",
                &[&pid],
            )
            .await;
        if matches!(row, Ok(r) if r.get::<_, bool>(0)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never started waiting on a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `sql` on `client` in the background (it is expected to block) and returns the task.
pub fn spawn_blocking_query(
    client: Client,
    sql: &'static str,
) -> tokio::task::JoinHandle<(Client, Result<u64, tokio_postgres::Error>)> {
    tokio::spawn(async move {
        let r = client.execute(sql, &[]).await;
        (client, r)
    })
}

/// Settings as the CLI would build them from `--db` entries.
pub fn settings(dbs: &[String]) -> Settings {
    let mut s = resolve_settings(
        &CliSettings {
            db: dbs.to_vec(),
            ..Default::default()
        },
        &ProcessEnv,
    )
    .expect("valid test settings");
    s.session.connect_timeout = Duration::from_secs(3);
    s
}

/// `NAME=conninfo` entry for `--db`.
pub fn entry(name: &str, conninfo: &str) -> String {
    format!("{name}={conninfo}")
}

/// Asserts a finished command's exit code, showing what it printed when it differs.
pub fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr:\n{}\nstdout:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A local TCP port that accepts connections and never says a word (a blackholed host).
pub fn blackhole_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A TCP proxy in front of a server that stops forwarding, in both directions and on every
/// connection, once the client-to-server stream has carried each of `triggers` in turn (the chunk with
/// the last one is swallowed): to the client, a server frozen mid-statement. Sockets stay open.
pub struct FreezingProxy {
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sockets: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl FreezingProxy {
    pub fn start(upstream_port: u16, triggers: &[&str]) -> FreezingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let triggers: Arc<Vec<Vec<u8>>> =
            Arc::new(triggers.iter().map(|t| t.as_bytes().to_vec()).collect());
        let sockets: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (f, s) = (frozen.clone(), sockets.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                {
                    let mut all = s.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                let pump = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            watch: bool,
                            frozen: Arc<AtomicBool>,
                            seen: Arc<AtomicUsize>,
                            triggers: Arc<Vec<Vec<u8>>>| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let chunk = &buf[..n];
                            if watch && !frozen.load(Ordering::SeqCst) {
                                let i = seen.load(Ordering::SeqCst);
                                if let Some(t) = triggers.get(i) {
                                    if chunk.windows(t.len()).any(|w| w == t.as_slice()) {
                                        seen.store(i + 1, Ordering::SeqCst);
                                        if i + 1 == triggers.len() {
                                            frozen.store(true, Ordering::SeqCst);
                                        }
                                    }
                                }
                            }
                            if frozen.load(Ordering::SeqCst) {
                                // Hold everything from now on; the sockets stay open.
                                continue;
                            }
                            if to.write_all(chunk).is_err() {
                                return;
                            }
                        }
                    });
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    true,
                    f.clone(),
                    seen.clone(),
                    triggers.clone(),
                );
                pump(
                    server,
                    client,
                    false,
                    f.clone(),
                    seen.clone(),
                    triggers.clone(),
                );
            }
        });
        FreezingProxy {
            port,
            frozen,
            sockets,
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The pid of the first session on the server labeled `application_name` that waits on a lock,
/// waiting (bounded) until there is one.
pub async fn wait_for_lock_waiter(admin: &Client, application_name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock' LIMIT 1",
                &[&application_name],
            )
            .await
            .unwrap();
        if let Some(r) = row {
            return r.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "no session labeled {application_name} started waiting on a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test session's row, every column the probe reads (blockers sorted), for comparing two reads.
pub type SessionRow = (
    i32,
    String,
    Option<String>,
    Option<String>,
    (Option<String>, Option<String>),
    Vec<Option<chrono::DateTime<chrono::Utc>>>,
    Vec<i32>,
    Option<(String, Option<String>)>,
    (Option<String>, Option<String>),
);

pub fn session_rows(o: &pgswarm::domain::snapshot::Observation) -> Vec<SessionRow> {
    let mut v: Vec<SessionRow> = o
        .sessions
        .iter()
        .filter(|s| s.application_name.starts_with("pytest_"))
        .map(|s| {
            let mut blockers = s.blocked_by.clone();
            blockers.sort_unstable();
            (
                s.pid,
                s.application_name.clone(),
                s.state.clone(),
                s.query.clone(),
                (s.wait_event_type.clone(), s.wait_event.clone()),
                vec![s.backend_start, s.xact_start, s.query_start, s.state_change],
                blockers,
                s.awaited
                    .as_ref()
                    .map(|a| (a.mode.clone(), a.relation.clone())),
                (s.datname.clone(), s.usename.clone()),
            )
        })
        .collect();
    v.sort();
    v
}

/// A small deterministic generator for randomized tests: the seed comes from `PGSWARM_TEST_SEED`
/// (to replay a failure) or the clock, and is printed.
pub struct Rng {
    state: u64,
    seed: u64,
}

impl Rng {
    pub fn seeded() -> Rng {
        let seed: u64 = std::env::var("PGSWARM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (replay with PGSWARM_TEST_SEED={seed})");
        Rng { state: seed, seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// xorshift64*: a value in `0..n`. The multiply and the high bits matter: plain xorshift's
    /// low bits made consecutive draws correlated (a draw of 6 or 7 out of 9 was always followed by
    /// 2 out of 3).
    pub fn below(&mut self, n: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n as u64) as usize
    }
}
