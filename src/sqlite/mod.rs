//! SQLite I/O (Linux): who holds the locks of per-worker SQLite test databases, read from `/proc`.
//!
//! A layer beside [`crate::pg`] that depends only on [`crate::domain`]: it reads and stats, every
//! decision is a call into [`crate::domain::sqlite`]. One [`observe`] reads `/proc/locks` once, stats
//! each target and its `-journal`/`-wal`/`-shm`, scans `/proc/*/fd` once for processes that have
//! them open, and reads those processes and their parents for attribution. It is synchronous (it only
//! reads `/proc`, a few milliseconds): an async caller runs it in `spawn_blocking`.
//!
//! What the kernel does not tell is stated, never hidden: processes of other users whose descriptors
//! could not be listed are counted in each report's `error`, and so are lock lines not understood.
//! See `docs/sqlite.md` for what is read and what cannot be known.

mod procfs;
pub mod targets;

use crate::domain::sqlite::{
    build_report, parse_proc_locks, AttributionVars, FirstSeen, LockRecord, ReportInput,
    ReportOptions, SqliteReport, DEFAULT_WRITE_LOCK_WARN_AFTER, MAX_ANCESTORS,
};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// How to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// A write lock (`reserved`, `pending`, `exclusive`, `wal_write`) held longer is warned about.
    pub write_lock_warn_after: Duration,
    /// The environment variables that attribute a process to a worker, run and namespace.
    pub vars: AttributionVars,
    /// Where procfs is mounted (`/proc`); a parameter so that a test can point elsewhere.
    pub proc_root: PathBuf,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            write_lock_warn_after: DEFAULT_WRITE_LOCK_WARN_AFTER,
            vars: AttributionVars::default(),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// One observation of every target: a report per database file matched, and one per pattern that
/// matched nothing (with the reason in `error`). Updates `tracker`, which the caller keeps across
/// observations so that `held_for_s` counts from the first time a lock was seen.
pub fn observe(
    targets: &[String],
    opts: &SqliteOptions,
    tracker: &mut FirstSeen,
    now: DateTime<Utc>,
) -> Vec<SqliteReport> {
    let mut reports: Vec<Option<SqliteReport>> = Vec::new();
    let mut databases: Vec<(usize, PathBuf)> = Vec::new();
    for expanded in targets::expand(targets) {
        match expanded {
            targets::Expanded::Files(files) => {
                for f in files {
                    databases.push((reports.len(), f));
                    reports.push(None);
                }
            }
            targets::Expanded::Failed { pattern, error } => {
                reports.push(Some(SqliteReport::failed(pattern, error.to_string())));
            }
        }
    }

    let located: Vec<targets::Located> = databases
        .iter()
        .map(|(_, path)| targets::locate(path))
        .collect();

    let mut common_errors: Vec<String> = Vec::new();
    let lock_text = std::fs::read_to_string(opts.proc_root.join("locks"));
    let (locks, unparsed): (Vec<LockRecord>, usize) = match &lock_text {
        Ok(text) => parse_proc_locks(text),
        Err(e) => {
            common_errors.push(format!("cannot read /proc/locks: {e}"));
            (Vec::new(), 0)
        }
    };
    if unparsed > 0 {
        common_errors.push(format!("{unparsed} /proc/locks lines not understood"));
    }

    let mut index = procfs::FileIndex::default();
    for (i, l) in located.iter().enumerate() {
        for (path, id) in &l.files {
            index.add(i, path, *id);
        }
    }
    let open = match procfs::scan_open_files(&opts.proc_root, &index) {
        Ok(open) => open,
        Err(e) => {
            common_errors.push(format!("cannot list processes: {e}"));
            procfs::OpenFiles::default()
        }
    };
    if open.unreadable > 0 {
        common_errors.push(format!(
            "{} process{} of other users could not be read (files they have open are unknown; run \
             as their user or root to see them)",
            open.unreadable,
            if open.unreadable == 1 { "" } else { "es" }
        ));
    }

    // Only the locks on target files matter: read just their holders and the openers.
    let target_ids: HashSet<_> = located
        .iter()
        .flat_map(|l| [l.ids.db, l.ids.journal, l.ids.wal, l.ids.shm])
        .flatten()
        .collect();
    let relevant: Vec<LockRecord> = locks
        .into_iter()
        .filter(|r| target_ids.contains(&r.file))
        .collect();
    let pids: BTreeSet<u32> = relevant
        .iter()
        .filter_map(|r| r.pid)
        .chain(open.by_target.values().flatten().copied())
        .collect();
    let processes = procfs::read_processes(&opts.proc_root, pids, MAX_ANCESTORS);

    let report_opts = ReportOptions {
        write_lock_warn_after: opts.write_lock_warn_after,
        vars: opts.vars.clone(),
    };
    let no_openers = BTreeSet::new();
    // The same file reached through several paths (hard or symbolic links, two patterns) is one
    // database: reported once, under the first path.
    let mut reported: HashSet<crate::domain::sqlite::FileId> = HashSet::new();
    for (i, ((slot, path), l)) in databases.iter().zip(&located).enumerate() {
        if let Some(id) = l.ids.db {
            if !reported.insert(id) {
                continue;
            }
        }
        let openers = open.by_target.get(&i).unwrap_or(&no_openers);
        let mut errors = l.errors.clone();
        errors.extend(common_errors.iter().cloned());
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        let path = path.to_string_lossy();
        let report = build_report(
            &ReportInput {
                path: &path,
                files: l.ids,
                write_marker: l.write_marker,
                locks: &relevant,
                openers,
                processes: &processes,
                error: error.as_deref(),
            },
            tracker,
            now,
            &report_opts,
        );
        reports[*slot] = Some(report);
    }
    // Without the lock table nothing was touched: ending the observation would forget every age.
    if lock_text.is_ok() {
        tracker.end_observation();
    }
    // Files with holders first: with many targets the locked one must not hide among idle ones.
    let mut reports: Vec<SqliteReport> = reports.into_iter().flatten().collect();
    reports.sort_by_key(|r| r.holders.is_empty() && r.error.is_none());
    reports
}

/// A source for the snapshot stream: observes `targets` at each call, keeping its own first-seen
/// tracker so that `held_for_s` grows across refreshes. `None` when there are no targets.
pub fn report_source(targets: &[String]) -> Option<crate::domain::sqlite::ReportSource> {
    if targets.is_empty() {
        return None;
    }
    let targets = targets.to_vec();
    let opts = SqliteOptions::default();
    let mut tracker = FirstSeen::new();
    Some(Box::new(move |now| {
        observe(&targets, &opts, &mut tracker, now)
    }))
}
