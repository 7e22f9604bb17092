//! A running `pgswarm serve` for tests: started on a free port (read from its first stderr line),
//! its stderr drained, killed on drop.

use super::http::http_get;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `pgswarm serve`, killed on drop.
pub struct Serve {
    pub child: Child,
    pub port: u16,
    /// Everything it wrote to stderr after the address line (the service log).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    _state: tempfile::TempDir,
}

impl Serve {
    pub fn start(db: &str, extra: &[&str]) -> Serve {
        Serve::start_on(db, 0, extra)
    }

    /// On `port` (0: a free one).
    pub fn start_on(db: &str, port: u16, extra: &[&str]) -> Serve {
        let state = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgswarm"))
            .args(["serve", "--listen", &listen, "--interval", "0.25s"])
            .args(extra)
            .args(["--db", db])
            .env_remove("PGSWARM_DB")
            .env_remove("PGSWARM_CONFIG")
            .env("XDG_STATE_HOME", state.path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("pgswarm serve starts");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep draining stderr so the child never blocks on it; kept for tests of the log.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).is_ok_and(|n| n > 0) {
                kept.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Serve {
            child,
            port,
            log,
            _state: state,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path, &[])
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Polls `path` until `ok` holds (bounded).
    pub fn until(&self, path: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path);
            if status == 200 && ok(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what}: last {status} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
