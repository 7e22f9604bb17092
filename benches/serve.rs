//! `pgswarm serve` (issue 24): what N watchers cost the database through one `serve` against N
//! direct clients, how fast the memory-only endpoints answer under concurrency, and what idle
//! event-stream clients cost in memory.
//!
//! Load: 1,000 client backends, 50 lock waiters, 2,513 pg_locks rows (`common/load.rs`). Server time
//! is summed per role from `pg_stat_statements` over a fixed window, each contender under its own
//! role, in rotating order: (a) one dashboard-like poller (`pgswarm record`, the same snapshot
//! stream); (b) one `serve` with 20 clients each asking `/api/v1/summary` every second; (c) 20 agents
//! each running `pgswarm snapshot --summary` every second against the database. Then, from memory:
//! p50/p99 of `/healthz`, `/metrics` and `/api/v1/summary` with 50 concurrent clients (a new
//! connection per request, and kept alive); freshness of the event stream; `serve`'s RSS before and
//! after 200 event-stream clients that never read, held for 30 s.
//!
//! Run: `cargo bench --bench serve` (PGSWARM_BENCH_WINDOW seconds per contender, default 10).

#[path = "common/load.rs"]
#[allow(dead_code)] // the seed query is for other benchmarks
mod load;
#[path = "common/process.rs"]
mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pgswarm");
const CLIENTS: usize = 20;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn db(conninfo: &str, role: &str) -> String {
    format!(
        "app={}",
        conninfo.replace("user=postgres", &format!("user={role}"))
    )
}

fn start_serve(db: &str) -> (Killed, u16) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-flight-log",
            "--db",
            db,
        ])
        .env_remove("PGSWARM_DB")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    std::thread::spawn(move || {
        let _ = err.read_to_string(&mut String::new());
    });
    (Killed(child), port)
}

fn get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `f` every second on `n` threads until `stop`.
fn every_second(
    n: usize,
    stop: Arc<AtomicBool>,
    f: Arc<dyn Fn() + Send + Sync>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let stop = stop.clone();
            let f = f.clone();
            std::thread::spawn(move || {
                // Spread the clients over the second, as agents started apart would be.
                std::thread::sleep(Duration::from_millis((i * 1000 / n) as u64));
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    f();
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
                }
            })
        })
        .collect()
}

async fn server_ms(admin: &tokio_postgres::Client, role: &str) -> f64 {
    admin
        .query_one(
            "SELECT coalesce(sum(s.total_exec_time), 0)::float8 FROM pg_stat_statements s \
             JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

/// One GET on a kept-alive HTTP/1.1 connection: reads the headers and `Content-Length` bytes.
fn get_kept(conn: &mut BufReader<TcpStream>, path: &str) -> Option<u16> {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut status = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).ok()?;
        if status.is_none() {
            status = line.split(' ').nth(1)?.parse().ok();
        } else if line == "\r\n" {
            break;
        } else if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).ok()?;
    status
}

/// `n` lock waits between two runs that give up (lock_timeout 300 ms), each followed on the event
/// stream; returns, per episode, the milliseconds from the `taken_at` of the summary published
/// with it to its arrival.
async fn freshness(ci: &str, port: u16, n: usize) -> Vec<f64> {
    let admin = load::client(ci, "application_name=bench_admin").await;
    admin
        .batch_execute("CREATE TABLE IF NOT EXISTS fresh (id int)")
        .await
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<f64>();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /api/v1/events HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut r = BufReader::new(s);
            let (mut kind, mut taken): (String, Option<chrono::DateTime<chrono::Utc>>) =
                (String::new(), None);
            while !stop.load(Ordering::Relaxed) {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let now = chrono::Utc::now();
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    let v: serde_json::Value =
                        serde_json::from_str(data.trim()).unwrap_or_default();
                    if kind == "summary" {
                        taken = v["taken_at"].as_str().and_then(|t| t.parse().ok());
                    } else if kind == "episode" {
                        if let Some(t) = taken {
                            let _ =
                                tx.send((now - t).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        }
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut delays = Vec::new();
    for _ in 0..n {
        let holder =
            load::client(ci, "application_name=pytest_gw0_p4100t1763900000r0a0a0a0a").await;
        let waiter =
            load::client(ci, "application_name=pytest_gw1_p4200t1763900100r0b0b0b0b").await;
        holder
            .batch_execute("BEGIN; LOCK TABLE fresh")
            .await
            .unwrap();
        waiter
            .batch_execute("SET lock_timeout = '300ms'")
            .await
            .unwrap();
        let _ = waiter.simple_query("SELECT * FROM fresh").await;
        holder.batch_execute("ROLLBACK").await.unwrap();
        if let Ok(ms) = rx.recv_timeout(Duration::from_secs(10)) {
            delays.push(ms);
        }
        drop((holder, waiter));
        std::thread::sleep(Duration::from_millis(300));
        while rx.try_recv().is_ok() {}
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    delays
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let window: u64 = std::env::var("PGSWARM_BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let srv = load::server(1000, &["app"]);
    let ci = srv.conninfo("app");
    for role in ["dash", "served", "direct"] {
        srv.psql("postgres", &format!("CREATE ROLE {role} LOGIN SUPERUSER"))
            .unwrap();
    }
    let admin = load::client(&ci, "application_name=bench_admin").await;
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    let work = load::Load::start(&ci, 1000, 50).await;

    let mut per_role: Vec<(String, f64)> = Vec::new();
    for contender in ["dash", "served", "direct"] {
        let before = server_ms(&admin, contender).await;
        let stop = Arc::new(AtomicBool::new(false));
        let d = db(&ci, contender);
        let mut children = Vec::new();
        let mut threads = Vec::new();
        match contender {
            "dash" => {
                let out = tempfile::NamedTempFile::new().unwrap();
                children.push(Killed(
                    Command::new(BIN)
                        .args(["record", "--no-flight-log", "--out"])
                        .arg(out.path())
                        .args(["--db", &d])
                        .env_remove("PGSWARM_DB")
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                ));
                tokio::time::sleep(Duration::from_secs(window)).await;
                drop(out);
            }
            "served" => {
                let (child, port) = start_serve(&d);
                children.push(child);
                threads = every_second(
                    CLIENTS,
                    stop.clone(),
                    Arc::new(move || {
                        let _ = get(port, "/api/v1/summary");
                    }),
                );
                tokio::time::sleep(Duration::from_secs(window)).await;
            }
            _ => {
                let d = d.clone();
                threads = every_second(
                    CLIENTS,
                    stop.clone(),
                    Arc::new(move || {
                        let _ = Command::new(BIN)
                            .args(["snapshot", "--summary", "--json", "--db", &d])
                            .env_remove("PGSWARM_DB")
                            .output();
                    }),
                );
                tokio::time::sleep(Duration::from_secs(window)).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        drop(children);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spent = server_ms(&admin, contender).await - before;
        per_role.push((contender.to_string(), spent / window as f64));
    }
    println!("| watchers (1,005 backends, 50 waiters) | server time per second of wall time |");
    println!("|---|---|");
    let names = [
        ("dash", "one dashboard-like poller (record)"),
        ("served", "one serve + 20 clients of /api/v1/summary at 1 s"),
        ("direct", "20 agents running snapshot --summary at 1 s"),
    ];
    for (role, ms) in &per_role {
        let name = names.iter().find(|n| n.0 == role).unwrap().1;
        println!("| {name} | {ms:.1} ms |");
    }
    let ms = |r: &str| per_role.iter().find(|p| p.0 == r).unwrap().1;
    println!(
        "\nserve + 20 / one poller: {:.2}x; 20 direct / serve + 20: {:.1}x",
        ms("served") / ms("dash"),
        ms("direct") / ms("served")
    );

    // From memory: latency under 50 concurrent clients, each on a new connection per request
    // (HTTP/1.0, the bench's earlier runs) and each on one kept-alive connection (HTTP/1.1, as
    // Prometheus scrapes); /healthz is the floor of this harness on this machine.
    let (child, port) = start_serve(&db(&ci, "served"));
    let pid = child.0.id();
    std::thread::sleep(Duration::from_secs(2));
    println!("\n| endpoint (50 concurrent clients x 40 requests) | new connection each: p50 / p99 | kept alive: p50 / p99 |");
    println!("|---|---|---|");
    for path in ["/healthz", "/metrics", "/api/v1/summary"] {
        let mut row = format!("| `{path}` |");
        for keep_alive in [false, true] {
            let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..50)
                    .map(|_| {
                        s.spawn(move || {
                            let mut conn = keep_alive.then(|| {
                                BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap())
                            });
                            (0..40)
                                .map(|_| {
                                    let t = Instant::now();
                                    let status = match conn.as_mut() {
                                        Some(c) => get_kept(c, path),
                                        None => get(port, path),
                                    };
                                    assert_eq!(status, Some(200));
                                    t.elapsed().as_secs_f64() * 1000.0
                                })
                                .collect::<Vec<f64>>()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut all: Vec<f64> = lat.into_iter().flatten().collect();
            let p50 = percentile(&mut all, 0.5);
            let p99 = percentile(&mut all, 0.99);
            row.push_str(&format!(" {p50:.2} / {p99:.2} ms |"));
        }
        println!("{row}");
    }

    // Freshness: how long after the poll that saw a wait end its episode reaches an event-stream
    // client (the arrival minus the `taken_at` of the summary published with it: an upper bound,
    // since it includes that poll's own read).
    let delays = freshness(&ci, port, 10).await;
    let mut d = delays.clone();
    println!(
        "\nfreshness ({} episodes, 1,005 backends): poll start -> episode event at the client: p50 {:.1} ms, max {:.1} ms",
        d.len(),
        percentile(&mut d, 0.5),
        d.iter().cloned().fold(0.0, f64::max)
    );

    // Memory with 200 event-stream clients that never read.
    let rss0 = process::rss_mib(pid);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let rss5 = process::rss_mib(pid);
    std::thread::sleep(Duration::from_secs(25));
    let rss30 = process::rss_mib(pid);
    println!(
        "serve RSS: {rss0:.1} MiB before, {rss5:.1} MiB with 200 idle event clients after 5 s, {rss30:.1} MiB after 30 s"
    );
    drop(idle);
    drop(child);
    work.release().await;
}
