//! `pgswarm record`: one snapshot per tick as JSON Lines, until interrupted, `--duration` or
//! `--max-bytes`. Appending to an existing file is safe (each line is one write); an outage is
//! recorded as snapshots whose databases are unreachable, never as a gap.

use crate::cmd::exit;
use crate::cmd::replay::append_snapshot;
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::poller::{group_targets, spawn_pollers, PollControl};
use crate::tui::app::Aggregator;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub out: PathBuf,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// Records until a stop condition; returns the exit code.
pub async fn record(settings: &Settings, opts: &RecordOptions) -> i32 {
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.out)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "pgswarm: error: cannot open {} for appending: {e}",
                opts.out.display()
            );
            return exit::USAGE;
        }
    };
    let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (control_tx, control_rx) = tokio::sync::watch::channel(PollControl {
        interval: opts.interval,
        refresh_seq: 0,
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let groups = group_targets(&settings.databases).len();
    let pollers = spawn_pollers(
        &settings.databases,
        &settings.session,
        &settings.convention.schema_prefix,
        Arc::new(ProcessEnv),
        control_rx,
        tx,
    );
    let names = settings.databases.iter().map(|d| d.name.clone()).collect();
    let mut aggregator = Aggregator::new(settings.convention.clone(), names, groups);
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("pgswarm: error: cannot install signal handlers");
        return exit::USAGE;
    };
    let started = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut count = 0usize;
    let mut code = exit::OK;
    // With several server groups, write at most one merged snapshot per interval.
    let mut last_write: Option<Instant> = None;
    loop {
        let result = tokio::select! {
            Some(r) = rx.recv() => r,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        };
        let snap = aggregator.accept(result);
        if last_write.is_some_and(|t| t.elapsed() < opts.interval / 2) && groups > 1 {
            continue;
        }
        match append_snapshot(&mut file, &snap) {
            Ok(n) => written += n as u64,
            Err(e) => {
                eprintln!("pgswarm: error: writing {}: {e}", opts.out.display());
                code = exit::USAGE;
                break;
            }
        }
        last_write = Some(Instant::now());
        count += 1;
        eprint!(
            "\rpgswarm record: {count} snapshots, {} KiB, {:.0} s",
            written / 1024,
            started.elapsed().as_secs_f64()
        );
        if opts.max_bytes.is_some_and(|m| written >= m) {
            eprintln!("\npgswarm record: reached --max-bytes, stopping");
            break;
        }
    }
    eprintln!();
    drop(control_tx);
    for p in pollers {
        p.abort();
    }
    code
}
