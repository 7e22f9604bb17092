//! `snapshot --replay FILE [--at TIME]` (a recorded moment as text or JSON) and `watch --replay FILE`
//! (the recording in the dashboard). Neither touches a database.

use crate::cmd::cli::SnapshotArgs;
use crate::cmd::recording::{parse_at, read_snapshots, snapshot_at};
use crate::cmd::snapshot::render_snapshot;
use crate::cmd::{emit, CmdError, Exit};
use crate::pg::config::Settings;
use std::path::Path;

/// Prints the state recorded at `--at` (the last snapshot at or before it; the end by default).
pub fn snapshot(args: &SnapshotArgs) -> Result<Exit, CmdError> {
    let path = args.replay.as_deref().expect("dispatched with --replay");
    let snaps = read_snapshots(path)?;
    let first = snaps[0].taken_at;
    let snap = match args.at.as_deref() {
        None => snaps
            .last()
            .expect("read_snapshots returns at least one snapshot"),
        Some(t) => snapshot_at(&snaps, parse_at(t, first).map_err(CmdError::Usage)?)
            .map_err(|outside| CmdError::Usage(outside.to_message(t)))?,
    };
    emit(&render_snapshot(snap, args.json, true));
    Ok(Exit::Ok)
}

/// Replays the recording in the dashboard.
pub fn watch(
    runtime: &tokio::runtime::Runtime,
    path: &Path,
    settings: Settings,
) -> Result<Exit, CmdError> {
    let snaps = read_snapshots(path)?;
    crate::tui::run::run_replay(runtime, snaps, settings)?;
    Ok(Exit::Ok)
}
