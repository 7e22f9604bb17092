//! `pgswarm snapshot`: one poll of every configured database, as a report or one JSON document.

use crate::cmd::cli::SnapshotArgs;
use crate::cmd::report::render_report;
use crate::cmd::{emit, emit_stderr, CmdError, Exit};
use crate::domain::snapshot::{build_snapshot, Snapshot};
use crate::domain::summary::{render_summary_line, summarize, Summary};
use crate::domain::text::sanitize;
use crate::pg::config::Settings;
use crate::pg::conninfo::{Environment, ProcessEnv};
use crate::pg::probe::{observe_once, summarize_once, ProbeOptions};

/// Polls once, prints, and maps the result to an exit code.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &SnapshotArgs,
) -> Result<Exit, CmdError> {
    let snap = if args.summary {
        let (snap, summary) = runtime.block_on(take_summary(settings, &ProcessEnv));
        let out = if args.json {
            serde_json::to_string(&summary).expect("summary serializes")
        } else {
            render_summary_line(&summary)
        };
        emit(&format!("{out}\n"));
        snap
    } else {
        let snap = runtime.block_on(take_snapshot_with(settings, &ProcessEnv, args.exact_sizes));
        emit(&render_snapshot(&snap, args.json, false));
        snap
    };
    for d in snap.unread() {
        emit_stderr(&format!(
            "pgswarm: database {:?} {}: {}\n",
            d.name,
            if d.reachable {
                "not read"
            } else {
                "unreachable"
            },
            sanitize(d.error.as_deref().unwrap_or("?"))
        ));
    }
    for r in snap.sqlite.iter().filter(|r| r.is_unreadable()) {
        emit_stderr(&format!(
            "pgswarm: SQLite target \"{}\" could not be read: {}\n",
            r.path_display(),
            r.error_display().unwrap_or_default()
        ));
    }
    if let Some(hint) = nothing_configured_hint(settings, &snap) {
        emit_stderr(&format!("pgswarm: {hint}\n"));
    }
    Ok(snapshot_exit_public(
        &snap,
        args.fail_on_blocked,
        args.fail_on_public_write,
    ))
}

/// `snapshot --server URL` (with `--summary`, `--json`, `--fail-on-blocked`): the same output and
/// exit codes, read from a running `pgswarm serve`. A server that cannot be read is exit 3 with
/// the reason, never an empty picture.
pub fn run_remote(args: &SnapshotArgs) -> Result<Exit, CmdError> {
    let remote = remote_of(
        args.server.url.as_deref(),
        args.server.token_file.as_deref(),
        args.server.server_ca.as_deref(),
    )?;
    if args.summary {
        let summary: crate::domain::summary::Summary =
            remote.get_json("/api/v1/summary").map_err(remote_error)?;
        let out = if args.json {
            serde_json::to_string(&summary).expect("summary serializes")
        } else {
            render_summary_line(&summary)
        };
        emit(&format!("{out}\n"));
        return Ok(if !summary.unreachable.is_empty() {
            Exit::Unreachable
        } else if args.fail_on_blocked && summary.blocked > 0 {
            Exit::Blocked
        } else {
            Exit::Ok
        });
    }
    let snap: Snapshot = remote.get_json("/api/v1/snapshot").map_err(remote_error)?;
    emit(&render_snapshot(&snap, args.json, false));
    for d in snap.unread() {
        emit_stderr(&format!(
            "pgswarm: database {:?} not read by the server: {}\n",
            d.name,
            sanitize(d.error.as_deref().unwrap_or("?"))
        ));
    }
    Ok(snapshot_exit_public(
        &snap,
        args.fail_on_blocked,
        args.fail_on_public_write,
    ))
}

/// The server named by `--server`, with its token.
pub fn remote_of(
    url: Option<&str>,
    token_file: Option<&std::path::Path>,
    ca: Option<&std::path::Path>,
) -> Result<crate::serve::client::Remote, CmdError> {
    let url = url.unwrap_or_default();
    let token = token_file.map(crate::cmd::serve::read_token).transpose()?;
    crate::serve::client::Remote::new(url, token, ca).map_err(|e| CmdError::Usage(e.to_string()))
}

/// A server that could not be read: exit 3, with what happened (usage errors stay exit 2).
pub fn remote_error(e: crate::serve::client::RemoteError) -> CmdError {
    CmdError::Unreachable(e.to_string())
}

/// When no database was configured and libpq's default could not be read either: what was tried,
/// and how to configure pgswarm.
pub fn nothing_configured_hint(settings: &Settings, snap: &Snapshot) -> Option<String> {
    let read = snap.databases.iter().any(|d| d.read.sessions_read());
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

/// Reads what `--summary` needs once; returns the partial snapshot it was decided from (waiting
/// sessions and their blockers only: for exit codes and warnings) and the summary.
pub async fn take_summary(
    settings: &Settings,
    env: &(dyn Environment + Sync),
) -> (Snapshot, Summary) {
    let (obs, waits) = summarize_once(&settings.databases, &settings.session, env).await;
    let snap = build_snapshot(obs, &settings.convention);
    let summary = summarize(&snap, &waits);
    (snap, summary)
}

/// Polls once and builds the snapshot, with estimated schema sizes.
pub async fn take_snapshot(settings: &Settings, env: &(dyn Environment + Sync)) -> Snapshot {
    take_snapshot_with(settings, env, false).await
}

/// Polls once and builds the snapshot. Sizes are the planner's estimates unless `exact_sizes`:
/// exact sizing takes a lock per test table and, with thousands of test tables, was most of a
/// one-shot's server time (docs/benchmarks.md).
pub async fn take_snapshot_with(
    settings: &Settings,
    env: &(dyn Environment + Sync),
    exact_sizes: bool,
) -> Snapshot {
    let opts = ProbeOptions {
        exact_sizes,
        ..ProbeOptions::of(&settings.convention)
    };
    let (obs, sqlite) = futures_util::future::join(
        observe_once(&settings.databases, &settings.session, &opts, env),
        observe_sqlite_once(settings),
    )
    .await;
    let mut snap = build_snapshot(obs, &settings.convention);
    snap.attach_sqlite(sqlite);
    snap
}

/// Reads the SQLite targets once, off the async threads (it reads `/proc`). A one-shot sees each
/// lock for the first time, so `held_for_s` is 0: ages need the dashboard or `record`.
async fn observe_sqlite_once(settings: &Settings) -> Vec<crate::domain::sqlite::SqliteReport> {
    if settings.sqlite.is_empty() {
        return Vec::new();
    }
    let targets = settings.sqlite.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::sqlite::observe(
            &targets,
            &crate::sqlite::SqliteOptions::default(),
            &mut crate::domain::sqlite::FirstSeen::new(),
            chrono::Utc::now(),
        )
    });
    read.await.unwrap_or_default()
}

/// The exit code a snapshot maps to: unreachable (3) before blocked (1), since a partial picture
/// cannot promise that nothing is blocked. A database whose sessions could not be read makes the
/// picture partial; one whose schema listing alone failed does not.
pub fn snapshot_exit(snap: &Snapshot, fail_on_blocked: bool) -> Exit {
    let partial = snap.unread().next().is_some() || snap.sqlite.iter().any(|r| r.is_unreadable());
    if partial {
        Exit::Unreachable
    } else if fail_on_blocked && snap.blocked_sessions() > 0 {
        Exit::Blocked
    } else {
        Exit::Ok
    }
}

/// [`snapshot_exit`], and with `fail_on_public_write` exit 1 when a test session writes into a
/// shared schema (`public_writes`), after unreachable (3) like blocked.
pub fn snapshot_exit_public(
    snap: &Snapshot,
    fail_on_blocked: bool,
    fail_on_public_write: bool,
) -> Exit {
    match snapshot_exit(snap, fail_on_blocked) {
        Exit::Ok if fail_on_public_write && !snap.public_writes.is_empty() => Exit::Blocked,
        exit => exit,
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
