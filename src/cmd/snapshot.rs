//! `pgswarm snapshot`: one poll of every configured database, as a report or one JSON document.

use crate::cmd::exit;
use crate::cmd::report::render_report;
use crate::domain::snapshot::{build_snapshot, Snapshot};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::probe::{observe_once, ProbeOptions};

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
/// cannot promise that nothing is blocked.
pub fn snapshot_exit_code(snap: &Snapshot, fail_on_blocked: bool) -> i32 {
    let incomplete = snap.unreachable().next().is_some()
        || snap.databases.iter().any(|d| {
            d.error
                .as_deref()
                .is_some_and(|e| e.starts_with("activity scan failed"))
        });
    if incomplete {
        exit::UNREACHABLE
    } else if fail_on_blocked && snap.blocked_sessions() > 0 {
        exit::BLOCKED
    } else {
        exit::OK
    }
}

/// Renders the snapshot as the text report or pretty JSON.
pub fn render_snapshot(snap: &Snapshot, json: bool) -> String {
    if json {
        let mut s = serde_json::to_string_pretty(snap).expect("snapshot serializes");
        s.push('\n');
        s
    } else {
        render_report(snap)
    }
}
