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
    build_report, parse_proc_locks, AttributionVars, FirstSeen, LockRecord, ProcessInfo,
    ReportInput, ReportOptions, SqliteReport, DEFAULT_WRITE_LOCK_WARN_AFTER, MAX_ANCESTORS,
};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
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
    let (mut reports, databases) = expand_targets(targets);
    let located: Vec<targets::Located> = databases
        .iter()
        .map(|(_, path)| targets::locate(path))
        .collect();
    let mut common_errors: Vec<String> = Vec::new();
    let locks = read_lock_table(&opts.proc_root, &mut common_errors);
    let lock_table_read = locks.is_some();
    let open = scan_openers(&opts.proc_root, &located, &mut common_errors);
    let relevant = keep_target_locks(locks.unwrap_or_default(), &located);
    let processes = read_involved_processes(&opts.proc_root, &relevant, &open);
    let reading = Reading {
        located,
        relevant,
        open,
        processes,
        common_errors,
    };
    report_databases(&databases, &reading, &mut reports, tracker, now, opts);
    // Without the lock table nothing was touched: ending the observation would forget every age.
    if lock_table_read {
        tracker.end_observation();
    }
    // Files with holders first: with many targets the locked one must not hide among idle ones.
    let mut reports: Vec<SqliteReport> = reports.into_iter().flatten().collect();
    reports.sort_by_key(|r| r.holders.is_empty() && r.error.is_none());
    reports
}

/// A report slot per database file matched (filled in by [`report_databases`]), and a finished
/// report per pattern that matched nothing; the databases with their slots.
fn expand_targets(targets: &[String]) -> (Vec<Option<SqliteReport>>, Vec<(usize, PathBuf)>) {
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
    (reports, databases)
}

/// Reads and parses `/proc/locks`; `None` when it could not be read. What went wrong (or was not
/// understood) goes to `errors`, stated in every report.
fn read_lock_table(proc_root: &Path, errors: &mut Vec<String>) -> Option<Vec<LockRecord>> {
    let text = match std::fs::read_to_string(proc_root.join("locks")) {
        Ok(text) => text,
        Err(e) => {
            errors.push(format!("cannot read /proc/locks: {e}"));
            return None;
        }
    };
    let (locks, unparsed) = parse_proc_locks(&text);
    if unparsed > 0 {
        errors.push(format!("{unparsed} /proc/locks lines not understood"));
    }
    Some(locks)
}

/// Scans `/proc/*/fd` once for processes that have one of the located files open. Processes that
/// could not be listed, or a scan that failed, go to `errors`.
fn scan_openers(
    proc_root: &Path,
    located: &[targets::Located],
    errors: &mut Vec<String>,
) -> procfs::OpenFiles {
    let mut index = procfs::FileIndex::default();
    for (i, l) in located.iter().enumerate() {
        for (path, id) in &l.files {
            index.add(i, path, *id);
        }
    }
    let open = match procfs::scan_open_files(proc_root, &index) {
        Ok(open) => open,
        Err(e) => {
            errors.push(format!("cannot list processes: {e}"));
            procfs::OpenFiles::default()
        }
    };
    if open.unreadable > 0 {
        errors.push(format!(
            "{} process{} of other users could not be read (files they have open are unknown; run \
             as their user or root to see them)",
            open.unreadable,
            if open.unreadable == 1 { "" } else { "es" }
        ));
    }
    open
}

/// Only the locks on target files matter.
fn keep_target_locks(locks: Vec<LockRecord>, located: &[targets::Located]) -> Vec<LockRecord> {
    let target_ids: HashSet<_> = located
        .iter()
        .flat_map(|l| [l.ids.db, l.ids.journal, l.ids.wal, l.ids.shm])
        .flatten()
        .collect();
    locks
        .into_iter()
        .filter(|r| target_ids.contains(&r.file))
        .collect()
}

/// Reads just the holders of those locks and the openers, with their ancestors (for attribution).
fn read_involved_processes(
    proc_root: &Path,
    relevant: &[LockRecord],
    open: &procfs::OpenFiles,
) -> BTreeMap<u32, ProcessInfo> {
    let pids: BTreeSet<u32> = relevant
        .iter()
        .filter_map(|r| r.pid)
        .chain(open.by_target.values().flatten().copied())
        .collect();
    procfs::read_processes(proc_root, pids, MAX_ANCESTORS)
}

/// What one observation read, shared by every database's report.
struct Reading {
    /// Per database, in the order of `databases`.
    located: Vec<targets::Located>,
    /// The lock records on target files.
    relevant: Vec<LockRecord>,
    open: procfs::OpenFiles,
    processes: BTreeMap<u32, ProcessInfo>,
    /// What could not be read for all of them.
    common_errors: Vec<String>,
}

/// Builds each database's report into its slot. The same file reached through several paths (hard
/// or symbolic links, two patterns) is one database: reported once, under the first path.
fn report_databases(
    databases: &[(usize, PathBuf)],
    reading: &Reading,
    reports: &mut [Option<SqliteReport>],
    tracker: &mut FirstSeen,
    now: DateTime<Utc>,
    opts: &SqliteOptions,
) {
    let report_opts = ReportOptions {
        write_lock_warn_after: opts.write_lock_warn_after,
        vars: opts.vars.clone(),
    };
    let no_openers = BTreeSet::new();
    let mut reported: HashSet<crate::domain::sqlite::FileId> = HashSet::new();
    for (i, ((slot, path), l)) in databases.iter().zip(&reading.located).enumerate() {
        if let Some(id) = l.ids.db {
            if !reported.insert(id) {
                continue;
            }
        }
        let openers = reading.open.by_target.get(&i).unwrap_or(&no_openers);
        let mut errors = l.errors.clone();
        errors.extend(reading.common_errors.iter().cloned());
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        let path = path.to_string_lossy();
        let report = build_report(
            &ReportInput {
                path: &path,
                files: l.ids,
                write_marker: l.write_marker,
                locks: &reading.relevant,
                openers,
                processes: &reading.processes,
                error: error.as_deref(),
            },
            tracker,
            now,
            &report_opts,
        );
        reports[*slot] = Some(report);
    }
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
