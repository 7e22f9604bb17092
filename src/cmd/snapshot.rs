//! `pgswarm snapshot`: one poll of every configured database, as a report or one JSON document.

use crate::cmd::cli::SnapshotArgs;
use crate::cmd::report::render_report;
use crate::cmd::{emit, CmdError, Exit};
use crate::domain::snapshot::{build_snapshot, ReadStatus, Snapshot};
use crate::domain::text::sanitize;
use crate::pg::config::Settings;
use crate::pg::conninfo::{Environment, ProcessEnv};
use crate::pg::probe::{observe_once, ProbeOptions};

/// Polls once, prints, and maps the result to an exit code.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &SnapshotArgs,
) -> Result<Exit, CmdError> {
    let snap = runtime.block_on(take_snapshot(settings, &ProcessEnv));
    emit(&render_snapshot(&snap, args.json, false));
    for d in snap.unreachable() {
        eprintln!(
            "pgswarm: database {:?} unreachable: {}",
            d.name,
            sanitize(d.error.as_deref().unwrap_or("?"))
        );
    }
    if let Some(hint) = nothing_configured_hint(settings, &snap) {
        eprintln!("pgswarm: {hint}");
    }
    Ok(snapshot_exit(&snap, args.fail_on_blocked))
}

/// When no database was configured and libpq's default could not be read either: what was tried,
/// and how to configure pgswarm.
pub fn nothing_configured_hint(settings: &Settings, snap: &Snapshot) -> Option<String> {
    let read = snap
        .databases
        .iter()
        .any(|d| matches!(d.read, ReadStatus::Read | ReadStatus::SchemasFailed));
    if !settings.nothing_configured || read {
        return None;
    }
    let tried = snap
        .databases
        .first()
        .map(|d| format!(" ({})", sanitize(&d.target)))
        .unwrap_or_default();
    Some(format!(
        "nothing is configured, so pgswarm tried libpq's default database{tried} and could not \
         read it. Name the databases to watch with --db NAME=CONNINFO (repeatable), PGSWARM_DB or \
         --config FILE (see pgswarm --help), or try `pgswarm demo`."
    ))
}

/// Polls once and builds the snapshot.
pub async fn take_snapshot(settings: &Settings, env: &(dyn Environment + Sync)) -> Snapshot {
    let opts = ProbeOptions {
        schema_prefix: settings.convention.schema_prefix.clone(),
        exact_sizes: true,
    };
    let obs = observe_once(&settings.databases, &settings.session, &opts, env).await;
    build_snapshot(obs, &settings.convention)
}

/// The exit code a snapshot maps to: unreachable (3) before blocked (1), since a partial picture
/// cannot promise that nothing is blocked. A database whose sessions could not be read makes the
/// picture partial; one whose schema listing alone failed does not.
pub fn snapshot_exit(snap: &Snapshot, fail_on_blocked: bool) -> Exit {
    let partial = snap
        .databases
        .iter()
        .any(|d| !matches!(d.read, ReadStatus::Read | ReadStatus::SchemasFailed));
    if partial {
        Exit::Unreachable
    } else if fail_on_blocked && snap.blocked_sessions() > 0 {
        Exit::Blocked
    } else {
        Exit::Ok
    }
}

/// Renders the snapshot as the text report or pretty JSON. A replayed snapshot says so in text.
pub fn render_snapshot(snap: &Snapshot, json: bool, replayed: bool) -> String {
    if json {
        let mut s = serde_json::to_string_pretty(snap).expect("snapshot serializes");
        s.push('\n');
        s
    } else if replayed {
        format!(
            "REPLAY of a recording: the state as recorded at {}\n{}",
            snap.taken_at.format("%Y-%m-%d %H:%M:%S UTC"),
            render_report(snap)
        )
    } else {
        render_report(snap)
    }
}
