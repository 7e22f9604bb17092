//! `pgswarm snapshot --summary`: the few numbers an agent polls between test runs (how many sessions
//! are blocked, how many by another run, the longest wait, how full each lock table is), from a
//! read that costs about one bare activity scan instead of a whole snapshot.
//!
//! The counts come from the same rules as the full snapshot: the summary's read keeps only the
//! waiting sessions and their blockers, and `build_snapshot` decides what is blocked and what is a
//! collision, so the two can never disagree on a definition.

use crate::domain::snapshot::Snapshot;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// The one-line answer (JSON fields in docs/json.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub taken_at: DateTime<Utc>,
    /// Sessions waiting for a lock another session holds or is queued for.
    pub blocked: usize,
    /// Of those, the ones held up by another invocation (a different namespace).
    pub collisions: usize,
    /// The longest current lock wait, from `waitstart` (PostgreSQL 14+) where known.
    pub longest_wait_s: Option<f64>,
    pub lock_tables: Vec<LockTableFill>,
    /// Configured databases whose sessions could not be read (unreachable, or their server's
    /// activity scan failed): the counts above leave them out.
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockTableFill {
    pub server: String,
    pub used: Option<i64>,
    pub capacity: Option<i64>,
    pub fill: Option<f64>,
    pub warning: bool,
}

/// When each waiter's lock wait began, per server label and pid, and each server's clock.
#[derive(Debug, Clone, Default)]
pub struct WaitStarts {
    pub started: HashMap<(String, i32), DateTime<Utc>>,
    pub server_now: HashMap<String, DateTime<Utc>>,
}

/// Summarises a snapshot built from the summary's read.
pub fn summarize(snap: &Snapshot, waits: &WaitStarts) -> Summary {
    let blocked: Vec<_> = snap
        .sessions
        .iter()
        .filter(|s| !s.blocked_by.is_empty())
        .collect();
    let colliding: BTreeSet<(&str, i32)> = snap
        .blocking
        .iter()
        .filter(|e| e.cross_invocation)
        .map(|e| (e.server.as_str(), e.blocked_pid))
        .collect();
    let longest_wait_s = blocked
        .iter()
        .filter_map(|s| {
            let key = (s.server.clone(), s.pid);
            match (waits.started.get(&key), waits.server_now.get(&s.server)) {
                (Some(start), Some(now)) => {
                    Some(((*now - *start).num_milliseconds().max(0)) as f64 / 1000.0)
                }
                _ => s.waiting_s,
            }
        })
        .reduce(f64::max);
    Summary {
        schema_version: 1,
        taken_at: snap.taken_at,
        blocked: blocked.len(),
        collisions: colliding.len(),
        longest_wait_s,
        lock_tables: snap
            .servers
            .iter()
            .map(|s| LockTableFill {
                server: s.server.clone(),
                used: s.lock_table_used,
                capacity: s.lock_table_capacity,
                fill: s.lock_table_fill,
                warning: s.lock_table_warning,
            })
            .collect(),
        // Every database left out of the counts, whether it could not be reached or its server's
        // activity scan failed: a bare `blocked 0` must not pass for a full reading.
        unreachable: snap.unread().map(|d| d.name.clone()).collect(),
    }
}

/// The summary as one line of text.
pub fn render_summary_line(s: &Summary) -> String {
    let wait = s
        .longest_wait_s
        .map(|w| format!("longest wait {w:.1} s"))
        .unwrap_or_else(|| "no lock wait".into());
    let tables: Vec<String> = s
        .lock_tables
        .iter()
        .map(|t| match t.fill {
            Some(f) => format!(
                "lock table {:.0}%{} ({})",
                f * 100.0,
                if t.warning { " !" } else { "" },
                crate::domain::text::sanitize(&t.server)
            ),
            None => format!(
                "lock table ? ({})",
                crate::domain::text::sanitize(&t.server)
            ),
        })
        .collect();
    let mut line = format!(
        "blocked {} · collisions {} · {wait}",
        s.blocked, s.collisions
    );
    for t in tables {
        line.push_str(" · ");
        line.push_str(&t);
    }
    if !s.unreachable.is_empty() {
        let names: Vec<_> = s
            .unreachable
            .iter()
            .map(|n| crate::domain::text::sanitize(n))
            .collect();
        line.push_str(&format!(" · not read: {}", names.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::snapshot::{build_snapshot, Convention};

    /// Issue 23: a server whose activity scan failed is reachable, yet its databases were not
    /// read. The summary lists them with the unreachable one, and the line names them all, where it
    /// used to say a bare `blocked 0` (and only counted the unreachable one).
    #[test]
    fn the_summary_names_every_database_it_could_not_read() {
        let mut o = fixtures::unreachable();
        o.servers[0].activity_error = Some("permission denied for function pg_lock_status".into());
        o.sessions.clear();
        let snap = build_snapshot(o, &Convention::default());
        let s = summarize(&snap, &WaitStarts::default());
        assert_eq!(s.blocked, 0);
        assert_eq!(s.unreachable, vec!["platform", "tenant_a", "tenant_b"]);
        let line = render_summary_line(&s);
        assert!(
            line.ends_with(" · not read: platform, tenant_a, tenant_b"),
            "{line}"
        );
        let readable = build_snapshot(fixtures::collision(), &Convention::default());
        let s = summarize(&readable, &WaitStarts::default());
        assert!(s.unreachable.is_empty());
        assert!(!render_summary_line(&s).contains("not read"));
    }
}
