//! The real binary in a real terminal, and what it costs: a private tmux server and /proc readings,
//! shared by the benchmarks that run `pgswarm` itself.
#![allow(dead_code)] // each benchmark uses part of it

use std::process::{Command, Output};

/// Clock ticks per second of /proc CPU times (USER_HZ on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// utime + stime of a process in clock ticks (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm field, which may hold spaces.
    let after_comm = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Resident memory of a running process.
pub fn rss_mib(pid: u32) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process is running");
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kib / 1024.0
}

/// A private tmux server (its own socket), killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("pgswarm-{tag}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux (apt-get install tmux)")
    }

    /// Runs `command` in a new 120x40 session `name` and returns the pane's pid.
    pub fn start(&self, name: &str, command: &str) -> u32 {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
        String::from_utf8_lossy(
            &self
                .run(&["display", "-p", "-t", name, "#{pane_pid}"])
                .stdout,
        )
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("tmux session {name} did not start: {command}"))
    }

    pub fn capture(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }

    /// Quits the dashboard in `name` the way a person would.
    pub async fn quit(&self, name: &str) {
        self.run(&["send-keys", "-t", name, "q"]);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
