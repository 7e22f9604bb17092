//! Shared test harness: real PostgreSQL servers, labeled client sessions, and waits with timeouts.
//!
//! Each test starts its own throwaway server from the installed binaries (`TempCluster`, stopped on
//! drop, also when the test panics). `PGSWARM_TEST_SERVER` (a libpq key=value string for a superuser,
//! without dbname) points single-server tests at an existing server instead: they then create uniquely
//! named databases there and drop them afterwards. Tests that need two servers always start their own.
//! Missing server binaries fail the test loudly with what to install.
#![allow(dead_code)]

use pgswarm::cmd::config::{resolve_settings, CliSettings, Settings};
use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
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
