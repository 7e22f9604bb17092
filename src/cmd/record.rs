//! `pgswarm record`: one snapshot per tick as JSON Lines, until interrupted, `--duration` or
//! `--max-bytes`. Appending to an existing file is safe (each line is one write); an outage is
//! recorded as snapshots whose databases are unreachable (or stale), never as a gap.
//!
//! `--duration` and SIGTERM / Ctrl-C always stop it: `--out` is opened without waiting for a FIFO's
//! reader, and each line is written off the loop that watches the clock and the signals, so a reader
//! that stops reading (or a file system that stops answering) cannot hold the recorder past them.

use crate::cmd::cli::RecordArgs;
use crate::cmd::recording::append_snapshot;
use crate::cmd::{emit_stderr, print_error, CmdError, Exit};
use crate::domain::snapshot::Snapshot;
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::flightlog::open_nonblocking;
use crate::pg::stream::SnapshotStream;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Records until a stop condition.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &RecordArgs,
) -> Result<Exit, CmdError> {
    let file = open_out(&args.out)?;
    runtime.block_on(record(settings, args, Arc::new(file)))
}

/// Opens `--out` for appending without waiting: a FIFO that nobody reads is an error at once, where
/// a plain open would block before `--duration` or a signal could stop it. A pipe with a reader
/// (`--out /dev/stdout | gzip`) is fine.
fn open_out(path: &Path) -> Result<std::fs::File, CmdError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    open_nonblocking(path, &options).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) {
            CmdError::Io(format!(
                "cannot record to {}: it is a FIFO (or socket) that nobody reads; start its reader \
                 first, or give --out a regular file",
                path.display()
            ))
        } else {
            CmdError::Io(format!("cannot open {} for appending: {e}", path.display()))
        }
    })
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn record(
    settings: &Settings,
    args: &RecordArgs,
    file: Arc<std::fs::File>,
) -> Result<Exit, CmdError> {
    let interval = args.interval.interval;
    let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let log = crate::cmd::watch::flight_log_or_warn(&args.flight_log);
    let mut stream = SnapshotStream::spawn(
        settings,
        interval,
        Arc::new(ProcessEnv),
        log,
        crate::sqlite::report_source(&settings.sqlite),
    );
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Err(CmdError::Io("cannot install signal handlers".into()));
    };
    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let progress = std::io::stderr().is_terminal();
    let mut count = 0usize;
    let mut last_write: Option<Instant> = None;
    let mut last_waits = BTreeSet::new();
    let mut flight_log_error: Option<String> = None;
    loop {
        let update = tokio::select! {
            Some(u) = stream.updates.recv() => u,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = sleep_until(deadline) => break,
        };
        if let Some(e) = &update.flight_log_error {
            if flight_log_error.as_ref() != Some(e) {
                print_error(e);
            }
        }
        flight_log_error = update.flight_log_error.clone();
        // About one snapshot per interval (several server groups each deliver one, and while a
        // session waits the pollers run faster), but every snapshot in which a wait started or
        // ended: `incidents --from` the recording then finds the episodes the flight log has.
        let waits = waiting(&update.snapshot);
        let news = !update.ended.is_empty() || waits != last_waits;
        if !news && last_write.is_some_and(|t| t.elapsed() < interval * 3 / 4) {
            continue;
        }
        last_waits = waits;
        // Written off this loop, so that the clock and the signals are still watched while it waits.
        let (out, snapshot) = (Arc::clone(&file), Arc::clone(&update.snapshot));
        let write = tokio::task::spawn_blocking(move || append_snapshot(&out, &snapshot));
        let wrote = tokio::select! {
            w = write => w.map_err(std::io::Error::other).and_then(|w| w),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = sleep_until(deadline) => break,
        };
        written +=
            wrote.map_err(|e| CmdError::Io(format!("writing {}: {e}", args.out.display())))? as u64;
        last_write = Some(Instant::now());
        count += 1;
        if progress {
            emit_stderr(&format!(
                "\rpgswarm record: {count} snapshot{}, {} KiB, {:.0} s",
                if count == 1 { "" } else { "s" },
                written / 1024,
                started.elapsed().as_secs_f64()
            ));
        }
        if args.max_bytes.is_some_and(|m| written >= m) {
            if progress {
                emit_stderr("\n");
            }
            emit_stderr("pgswarm record: reached --max-bytes, stopping\n");
            break;
        }
    }
    if progress {
        emit_stderr("\n");
    }
    emit_stderr(&format!(
        "pgswarm record: {count} snapshot{} written to {} ({} KiB)\n",
        if count == 1 { "" } else { "s" },
        args.out.display(),
        written / 1024
    ));
    Ok(Exit::Ok)
}

/// The waits a snapshot shows: (server, pid, statement start).
fn waiting(snap: &Snapshot) -> BTreeSet<(String, i32, Option<DateTime<Utc>>)> {
    snap.sessions
        .iter()
        .filter(|s| !s.blocked_by.is_empty())
        .map(|s| (s.server.clone(), s.pid, s.query_start))
        .collect()
}
