//! `pgswarm record`: one snapshot per tick as JSON Lines, until interrupted, `--duration` or
//! `--max-bytes`. Appending to an existing file is safe (each line is one write); an outage is
//! recorded as snapshots whose databases are unreachable (or stale), never as a gap.

use crate::cmd::cli::RecordArgs;
use crate::cmd::recording::append_snapshot;
use crate::cmd::{CmdError, Exit};
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::stream::SnapshotStream;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

/// Records until a stop condition.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &RecordArgs,
) -> Result<Exit, CmdError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .map_err(|e| {
            CmdError::Io(format!(
                "cannot open {} for appending: {e}",
                args.out.display()
            ))
        })?;
    runtime.block_on(record(settings, args, &mut file))
}

async fn record(
    settings: &Settings,
    args: &RecordArgs,
    file: &mut std::fs::File,
) -> Result<Exit, CmdError> {
    let interval = args.interval.interval;
    let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut stream = SnapshotStream::spawn(settings, interval, Arc::new(ProcessEnv));
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
    // With several server groups, write at most one merged snapshot per interval.
    let mut last_write: Option<Instant> = None;
    loop {
        let update = tokio::select! {
            Some(u) = stream.updates.recv() => u,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        };
        if last_write.is_some_and(|t| t.elapsed() < interval / 2) && stream.groups() > 1 {
            continue;
        }
        written += append_snapshot(file, &update.snapshot)
            .map_err(|e| CmdError::Io(format!("writing {}: {e}", args.out.display())))?
            as u64;
        last_write = Some(Instant::now());
        count += 1;
        if progress {
            eprint!(
                "\rpgswarm record: {count} snapshot{}, {} KiB, {:.0} s",
                if count == 1 { "" } else { "s" },
                written / 1024,
                started.elapsed().as_secs_f64()
            );
        }
        if args.max_bytes.is_some_and(|m| written >= m) {
            if progress {
                eprintln!();
            }
            eprintln!("pgswarm record: reached --max-bytes, stopping");
            break;
        }
    }
    if progress {
        eprintln!();
    }
    eprintln!(
        "pgswarm record: {count} snapshot{} written to {} ({} KiB)",
        if count == 1 { "" } else { "s" },
        args.out.display(),
        written / 1024
    );
    Ok(Exit::Ok)
}
