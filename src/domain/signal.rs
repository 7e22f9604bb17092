//! Cancelling and terminating sessions: exactly whom, decided from one snapshot, never guessed.
//!
//! Triage ends with an action on a session or on a whole run. The plan names every target by
//! (server, pid, `backend_start`, `application_name`); the signal is sent in one statement that
//! re-checks all of them on the server, so a pid reused by a new session, or a session relabeled
//! since the snapshot, is skipped rather than hit (see `pg::signal`). This module decides who may be
//! a target at all:
//!
//! - only client backends (never autovacuum, walsenders, background workers);
//! - never pgswarm's own sessions;
//! - a run's sessions by their parsed label only: an unattributable or unlabeled session is a
//!   target only when named by its pid;
//! - only on configured servers, and only when every server the selection spans was read: if the
//!   picture is incomplete, nothing is signalled (`unread`).
//!
//! The outcome of each target (signalled, gone, skipped, failed) and the exit status are decided
//! here too, so the CLI and the dashboard report alike.
//!
//! A cancel reaches only a running statement. The usual root blocker is a session `idle in
//! transaction`: no statement runs, the backend ignores the cancel while it waits for its client,
//! and its locks stay until the transaction ends. The plan says so per target, and a cancel that
//! met such a session is reported as `released_nothing`, never among the signals that helped: only
//! a terminate ends that transaction.

use crate::domain::snapshot::{LabelKind, ReadStatus, SessionReport, Snapshot};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The JSON report's format version.
pub const SIGNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `pg_cancel_backend`: the running statement ends, the session stays.
    Cancel,
    /// `pg_terminate_backend`: the session ends; its transaction rolls back, its locks go.
    Terminate,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Terminate => "terminate",
        }
    }

    /// `Cancel`, `Terminate`: a title.
    pub fn title(self) -> &'static str {
        match self {
            Action::Cancel => "Cancel",
            Action::Terminate => "Terminate",
        }
    }

    /// `cancelled`, `terminated`.
    pub fn past(self) -> &'static str {
        match self {
            Action::Cancel => "cancelled",
            Action::Terminate => "terminated",
        }
    }

    /// What it does, for the confirmation prompt.
    pub fn effect(self) -> &'static str {
        match self {
            Action::Cancel => "cancel the running statement of",
            Action::Terminate => "terminate (disconnect, rolling back)",
        }
    }
}

/// Whom to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One session by pid; `database` names the configured database whose server it is on (needed
    /// when the pid is on more than one configured server).
    Pid { pid: i32, database: Option<String> },
    /// One session as the dashboard shows it: its server and pid.
    Session { server: String, pid: i32 },
    /// A run's sessions on every configured server, optionally one worker's, optionally only those
    /// blocking someone.
    Invocation {
        namespace: String,
        worker: Option<String>,
        only_blocking: bool,
    },
}

/// One session to signal, as the snapshot showed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub server: String,
    /// The session's database (configured name, else its `datname`).
    pub database: String,
    /// The configured database whose connection reaches the session's server.
    #[serde(skip)]
    pub via: String,
    pub pid: i32,
    pub backend_start: DateTime<Utc>,
    pub application_name: String,
    pub namespace: Option<String>,
    pub worker: Option<String>,
    pub state: Option<String>,
    /// Sessions it blocks.
    pub blocks: Vec<i32>,
    #[serde(skip)]
    pub query: Option<String>,
}

/// A session the selection matched that must not be signalled, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub server: String,
    pub database: String,
    pub pid: i32,
    pub backend_start: Option<DateTime<Utc>>,
    pub application_name: String,
    pub namespace: Option<String>,
    pub worker: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalPlan {
    pub action: Action,
    pub selector: Selector,
    pub targets: Vec<Target>,
    pub refused: Vec<Refused>,
    /// Configured databases whose sessions are not known: with any, nothing is signalled.
    pub unread: Vec<String>,
    /// The snapshot the plan was made from.
    pub taken_at: DateTime<Utc>,
}

impl SignalPlan {
    /// Whether it may be carried out: the picture is complete and there is someone to signal.
    pub fn actionable(&self) -> bool {
        self.unread.is_empty() && !self.targets.is_empty()
    }
}

/// What a cancel of a session idle in transaction does: nothing (shown per target in plans and
/// reports; the dashboard offers `K` beside it).
pub const IDLE_CANCEL_NOTE: &str = "idle in transaction: a cancel releases nothing (no statement \
     runs; its locks stay until the transaction ends); use terminate";

/// The report's note for a cancel sent to a session that was idle in transaction.
pub const IDLE_CANCELLED_NOTE: &str =
    "signalled, but idle in transaction: nothing released; use terminate";

/// Whether a session in `state` is inside a transaction with no statement running (`idle in
/// transaction`, or `idle in transaction (aborted)`).
pub fn is_idle_in_transaction(state: Option<&str>) -> bool {
    state.is_some_and(|s| s.starts_with("idle in transaction"))
}

impl Target {
    /// Whether `action` on this session, as planned, would release nothing: a cancel of a session
    /// idle in transaction.
    pub fn releases_nothing(&self, action: Action) -> bool {
        action == Action::Cancel && is_idle_in_transaction(self.state.as_deref())
    }
}

impl SignalPlan {
    /// The targets a cancel would not help (idle in transaction); empty for a terminate.
    pub fn releasing_nothing(&self) -> Vec<&Target> {
        self.targets
            .iter()
            .filter(|t| t.releases_nothing(self.action))
            .collect()
    }
}

/// A selection that cannot be planned (bad input: exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no configured database is named {0:?}; configured: {1}")]
    UnknownDatabase(String, String),
    #[error(
        "pid {pid} is on more than one configured server ({servers}); name one with --database"
    )]
    AmbiguousPid { pid: i32, servers: String },
    #[error("no client session with pid {pid} {where_}: it may have ended, or it is not a client backend or is pgswarm's own session (never signalled); `pgswarm snapshot` lists the sessions")]
    NoSuchPid { pid: i32, where_: String },
    #[error("pid 0 is a prepared transaction{gids}: it has no session to cancel or terminate; end it with COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid' (as its owner or a superuser)")]
    PreparedTransaction { gids: String },
}

/// Builds the plan from `snap`. pgswarm's own sessions are those marked `own` (this process's
/// backend pids), never those that merely carry its label.
pub fn plan_signal(
    snap: &Snapshot,
    selector: &Selector,
    action: Action,
) -> Result<SignalPlan, PlanError> {
    let via = |server: &str| {
        snap.databases
            .iter()
            .find(|d| d.server.as_deref() == Some(server) && known(d.read))
            .map(|d| d.name.clone())
    };
    let (candidates, unread) = match selector {
        Selector::Pid { pid: 0, .. } => {
            let gids: Vec<String> = snap
                .servers
                .iter()
                .flat_map(|s| s.prepared.iter().map(|p| format!("{:?}", p.gid)))
                .collect();
            return Err(PlanError::PreparedTransaction {
                gids: if gids.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", gids.join(", "))
                },
            });
        }
        Selector::Pid { pid, database } => pid_candidates(snap, *pid, database.as_deref())?,
        Selector::Session { server, pid } => {
            let unread: Vec<String> = snap
                .databases
                .iter()
                .filter(|d| d.server.as_deref() == Some(server.as_str()) && !known(d.read))
                .map(|d| d.name.clone())
                .collect();
            let found = snap
                .sessions
                .iter()
                .filter(|s| s.server == *server && s.pid == *pid)
                .collect();
            (found, unread)
        }
        Selector::Invocation {
            namespace,
            worker,
            only_blocking,
        } => {
            let matched = snap
                .sessions
                .iter()
                .filter(|s| s.label == LabelKind::Labeled)
                .filter(|s| s.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|s| worker.is_none() || s.worker == *worker)
                .filter(|s| !only_blocking || !s.blocking.is_empty())
                .collect();
            let unread = snap
                .databases
                .iter()
                .filter(|d| !known(d.read))
                .map(|d| d.name.clone())
                .collect();
            (matched, unread)
        }
    };
    let mut targets = Vec::new();
    let mut refused = Vec::new();
    for s in candidates {
        let refuse = |reason: &str| Refused {
            server: s.server.clone(),
            database: s.database.clone(),
            pid: s.pid,
            backend_start: s.backend_start,
            application_name: s.application_name.clone(),
            namespace: s.namespace.clone(),
            worker: s.worker.clone(),
            reason: reason.to_string(),
        };
        let via = via(&s.server);
        let client = s.backend_type.as_deref() == Some("client backend");
        match (s.backend_start.filter(|_| client), via) {
            _ if s.own => refused.push(refuse("pgswarm's own session")),
            _ if s.backend_type.is_some() && !client => refused.push(refuse(&format!(
                "not a client backend ({})",
                s.backend_type.as_deref().unwrap_or_default()
            ))),
            (None, _) => refused.push(refuse(
                "not visible to this role (its backend type or start is hidden), so a reused pid \
                 could not be told apart; grant pg_read_all_stats",
            )),
            (_, None) => refused.push(refuse("its server is not configured")),
            (Some(backend_start), Some(via)) => targets.push(Target {
                server: s.server.clone(),
                database: s.database.clone(),
                via,
                pid: s.pid,
                backend_start,
                application_name: s.application_name.clone(),
                namespace: s.namespace.clone(),
                worker: s.worker.clone(),
                state: s.state.clone(),
                blocks: s.blocking.clone(),
                query: s.query.clone(),
            }),
        }
    }
    targets.sort_by(|a, b| (&a.server, a.pid).cmp(&(&b.server, b.pid)));
    Ok(SignalPlan {
        action,
        selector: selector.clone(),
        targets,
        refused,
        unread,
        taken_at: snap.taken_at,
    })
}

/// Whether a database's sessions were read in this snapshot.
fn known(read: ReadStatus) -> bool {
    matches!(read, ReadStatus::Read | ReadStatus::SchemasFailed)
}

type Candidates<'a> = (Vec<&'a SessionReport>, Vec<String>);

fn pid_candidates<'a>(
    snap: &'a Snapshot,
    pid: i32,
    database: Option<&str>,
) -> Result<Candidates<'a>, PlanError> {
    let servers: Vec<&str> = match database {
        Some(name) => {
            let Some(d) = snap.databases.iter().find(|d| d.name == name) else {
                let names: Vec<&str> = snap.databases.iter().map(|d| d.name.as_str()).collect();
                return Err(PlanError::UnknownDatabase(name.into(), names.join(", ")));
            };
            if !known(d.read) {
                return Ok((Vec::new(), vec![d.name.clone()]));
            }
            d.server.as_deref().into_iter().collect()
        }
        None => {
            let unread: Vec<String> = snap
                .databases
                .iter()
                .filter(|d| !known(d.read))
                .map(|d| d.name.clone())
                .collect();
            if !unread.is_empty() {
                // The pid could be on a server that was not read.
                return Ok((Vec::new(), unread));
            }
            snap.databases
                .iter()
                .filter_map(|d| d.server.as_deref())
                .collect()
        }
    };
    let found: Vec<&SessionReport> = snap
        .sessions
        .iter()
        .filter(|s| s.pid == pid && servers.contains(&s.server.as_str()))
        .collect();
    let mut on: Vec<&str> = found.iter().map(|s| s.server.as_str()).collect();
    on.sort_unstable();
    on.dedup();
    match on.len() {
        0 => Err(PlanError::NoSuchPid {
            pid,
            where_: match database {
                Some(d) => format!("on the server of database {d:?}"),
                None => "on any configured server".into(),
            },
        }),
        1 => Ok((found, Vec::new())),
        _ => Err(PlanError::AmbiguousPid {
            pid,
            servers: on.join(", "),
        }),
    }
}

/// How one target's signal went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The signal was sent to the very session planned. For a terminate, whether it was seen to
    /// exit within the wait (`None`: not waited for). `idle_in_transaction`: the session was idle
    /// in transaction when the signal went out (read in the same statement), so a cancel
    /// released nothing.
    Signalled {
        exited: Option<bool>,
        idle_in_transaction: bool,
    },
    /// No session has that pid any more.
    Gone,
    /// The pid now belongs to another session, or the session changed its label.
    Skipped { reason: String },
    /// The server refused or the statement failed.
    Failed {
        sqlstate: Option<String>,
        error: String,
        hint: Option<String>,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub server: String,
    pub database: String,
    pub pid: i32,
    pub backend_start: Option<DateTime<Utc>>,
    pub application_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Terminate: whether the backend was seen to exit within the wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A cancel of this session releases (planned) or released (report) nothing: it is idle in
    /// transaction. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub releases_nothing: bool,
    /// Why, in words ([`IDLE_CANCEL_NOTE`], [`IDLE_CANCELLED_NOTE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What was done (JSON: `cancel --json`, `terminate --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalReport {
    pub schema_version: u32,
    pub action: Action,
    /// Whether the plan was carried out (false: not confirmed, `--dry-run`, or the picture was
    /// incomplete).
    pub executed: bool,
    /// `--dry-run`: the plan was only shown.
    pub dry_run: bool,
    /// Exactly whom the plan would signal (also when nothing was sent): scripts read the plan of
    /// `--dry-run --json` here.
    pub planned: Vec<Entry>,
    /// Signalled and it helped as far as pgswarm can tell (a cancel reached a running statement, a
    /// terminate was sent).
    pub signalled: Vec<Entry>,
    /// Cancels sent to sessions idle in transaction: nothing was released (never counted as
    /// signalled; terminate ends them).
    pub released_nothing: Vec<Entry>,
    pub gone: Vec<Entry>,
    pub skipped: Vec<Entry>,
    pub failed: Vec<Entry>,
    /// Databases whose sessions could not be read: nothing was signalled.
    pub unread: Vec<String>,
}

/// Exit status of a signal command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalStatus {
    /// Everything planned was signalled, gone or skipped safely (or nothing was confirmed).
    Done,
    /// The picture was incomplete: nothing was signalled.
    Incomplete,
    /// Some signal failed.
    SomeFailed,
}

impl SignalReport {
    /// Each entry with what became of it in words (`exited`, `already gone`, `skipped: …`,
    /// `FAILED …`), and whether it failed: the CLI and the dashboard say it alike.
    pub fn notes(&self) -> Vec<(&Entry, String, bool)> {
        let mut out = Vec::new();
        for e in &self.signalled {
            let note = match e.exited {
                Some(true) => "exited",
                Some(false) => "signalled, still running after the wait",
                None => "signalled",
            };
            out.push((e, note.to_string(), false));
        }
        out.extend(
            self.released_nothing
                .iter()
                .map(|e| (e, IDLE_CANCELLED_NOTE.to_string(), false)),
        );
        out.extend(
            self.gone
                .iter()
                .map(|e| (e, "already gone".to_string(), false)),
        );
        for e in &self.skipped {
            let note = format!("skipped: {}", e.reason.as_deref().unwrap_or(""));
            out.push((e, note, false));
        }
        for e in &self.failed {
            let hint = e
                .hint
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            let note = format!("FAILED: {}{hint}", e.error.as_deref().unwrap_or(""));
            out.push((e, note, true));
        }
        out
    }

    pub fn status(&self) -> SignalStatus {
        if !self.unread.is_empty() {
            SignalStatus::Incomplete
        } else if !self.failed.is_empty() {
            SignalStatus::SomeFailed
        } else {
            SignalStatus::Done
        }
    }
}

fn entry_of_target(t: &Target) -> Entry {
    Entry {
        releases_nothing: false,
        note: None,
        server: t.server.clone(),
        database: t.database.clone(),
        pid: t.pid,
        backend_start: Some(t.backend_start),
        application_name: t.application_name.clone(),
        namespace: t.namespace.clone(),
        worker: t.worker.clone(),
        exited: None,
        reason: None,
        sqlstate: None,
        error: None,
        hint: None,
    }
}

/// The report of a plan and the outcome of each target carried out (none when not executed).
pub fn build_signal_report(
    plan: &SignalPlan,
    outcomes: Option<&[(Target, Outcome)]>,
) -> SignalReport {
    let mut r = SignalReport {
        schema_version: SIGNAL_VERSION,
        action: plan.action,
        executed: outcomes.is_some(),
        dry_run: false,
        planned: plan
            .targets
            .iter()
            .map(|t| {
                let mut e = entry_of_target(t);
                if t.releases_nothing(plan.action) {
                    e.releases_nothing = true;
                    e.note = Some(IDLE_CANCEL_NOTE.into());
                }
                e
            })
            .collect(),
        signalled: Vec::new(),
        released_nothing: Vec::new(),
        gone: Vec::new(),
        skipped: plan
            .refused
            .iter()
            .map(|x| Entry {
                server: x.server.clone(),
                database: x.database.clone(),
                pid: x.pid,
                backend_start: x.backend_start,
                application_name: x.application_name.clone(),
                namespace: x.namespace.clone(),
                worker: x.worker.clone(),
                exited: None,
                reason: Some(x.reason.clone()),
                sqlstate: None,
                error: None,
                hint: None,
                releases_nothing: false,
                note: None,
            })
            .collect(),
        failed: Vec::new(),
        unread: plan.unread.clone(),
    };
    for (t, o) in outcomes.unwrap_or_default() {
        let mut e = entry_of_target(t);
        match o {
            Outcome::Signalled {
                idle_in_transaction: true,
                ..
            } if plan.action == Action::Cancel => {
                e.releases_nothing = true;
                e.note = Some(IDLE_CANCELLED_NOTE.into());
                r.released_nothing.push(e);
            }
            Outcome::Signalled { exited, .. } => {
                e.exited = *exited;
                r.signalled.push(e);
            }
            Outcome::Gone => r.gone.push(e),
            Outcome::Skipped { reason } => {
                e.reason = Some(reason.clone());
                r.skipped.push(e);
            }
            Outcome::Failed {
                sqlstate,
                error,
                hint,
            } => {
                e.sqlstate.clone_from(sqlstate);
                e.error = Some(error.clone());
                e.hint.clone_from(hint);
                r.failed.push(e);
            }
        }
    }
    r
}

/// The hint for a refused signal: what grant would allow it.
pub fn privilege_hint(message: &str, role: &str) -> String {
    if message.to_ascii_lowercase().contains("superuser") {
        "only a superuser may signal a superuser's session".into()
    } else {
        format!("a member of the session's role or of pg_signal_backend may: GRANT pg_signal_backend TO {role}")
    }
}

#[cfg(test)]
mod tests;
