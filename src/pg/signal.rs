//! Sends a planned cancel or terminate, each in one statement that re-checks the target's identity
//! on the server: the function is called only for the row whose pid, `backend_start`,
//! `application_name` and backend type all still match the plan. A pid reused by a new session, a
//! session that relabeled itself, or one that ended is reported (`skipped`, `gone`), never hit.
//!
//! Connections go only to configured databases (the plan's `via`), one per database, in parallel
//! per server; a terminate waits for the backend to exit (PostgreSQL 14+: `pg_terminate_backend(pid,
//! timeout)`; older: by watching `pg_stat_activity`) and says whether it did.

use crate::domain::signal::{
    is_idle_in_transaction, privilege_hint, Action, Outcome, SignalPlan, Target,
};
use crate::pg::config::Settings;
use crate::pg::connect::{connect, describe_error};
use crate::pg::conninfo::Environment;
use crate::pg::row::RowExt;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::Client;

/// How long a terminate waits for the backend to exit (bounded by the session's statement timeout).
pub const TERMINATE_WAIT: Duration = Duration::from_secs(5);
/// Past the server's statement timeout, how long the client still waits for an answer before it
/// gives up on that server (a frozen server or network must not hang pgswarm).
pub const CLIENT_MARGIN: Duration = Duration::from_secs(3);

const IDENTITY: &str = "FROM pg_catalog.pg_stat_activity
     WHERE pid = $1 AND backend_start = $2 AND application_name = $3
       AND backend_type = 'client backend'";

/// Carries out `plan` (which must be actionable) and returns each target's outcome, in plan order.
pub async fn send(
    plan: &SignalPlan,
    settings: &Settings,
    env: &(dyn Environment + Sync),
) -> Vec<(Target, Outcome)> {
    let mut by_via: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
    for t in &plan.targets {
        by_via.entry(t.via.as_str()).or_default().push(t);
    }
    let groups = by_via
        .into_iter()
        .map(|(via, targets)| send_via(via, targets, plan.action, settings, env));
    let mut out: Vec<(Target, Outcome)> = join_all(groups).await.into_iter().flatten().collect();
    let order = |t: &Target| {
        plan.targets
            .iter()
            .position(|p| p.server == t.server && p.pid == t.pid)
    };
    out.sort_by_key(|(t, _)| order(t));
    out
}

async fn send_via(
    via: &str,
    targets: Vec<&Target>,
    action: Action,
    settings: &Settings,
    env: &(dyn Environment + Sync),
) -> Vec<(Target, Outcome)> {
    let fail_all = |error: String| {
        targets
            .iter()
            .map(|t| {
                (
                    (*t).clone(),
                    Outcome::Failed {
                        sqlstate: None,
                        error: error.clone(),
                        hint: None,
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let Some(db) = settings.databases.iter().find(|d| d.name == via) else {
        return fail_all(format!("database {via:?} is not configured"));
    };
    let client = match connect(&db.target, &settings.session, env).await {
        Ok(c) => c,
        Err(e) => return fail_all(format!("cannot connect to {via}: {e}")),
    };
    let wait = TERMINATE_WAIT.min(
        settings
            .session
            .statement_timeout
            .saturating_sub(Duration::from_secs(1)),
    );
    let bound = settings.session.statement_timeout + CLIENT_MARGIN;
    let facts = tokio::time::timeout(
        bound,
        client.query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int, current_user::pg_catalog.text",
            &[],
        ),
    )
    .await;
    let (version, role) = match facts {
        Ok(Ok(r)) => match (r.col::<i32>(0), r.col::<String>(1)) {
            (Ok(version), Ok(role)) => (version, role),
            (Err(e), _) | (_, Err(e)) => return fail_all(e.to_string()),
        },
        Ok(Err(e)) => return fail_all(describe_error(&e)),
        Err(_) => return fail_all(format!("{via}: no answer within {bound:?}")),
    };
    let mut out = Vec::new();
    let mut stuck = false;
    for t in targets {
        let outcome = if stuck {
            Outcome::Failed {
                sqlstate: None,
                error: "not tried: this server did not answer an earlier signal".into(),
                hint: None,
            }
        } else {
            match tokio::time::timeout(bound, signal_one(&client, t, action, version, wait, &role))
                .await
            {
                Ok(o) => o,
                Err(_) => {
                    stuck = true;
                    Outcome::Failed {
                        sqlstate: None,
                        error: format!(
                            "no answer within {bound:?} (client bound): whether the signal was \
                             sent is unknown"
                        ),
                        hint: None,
                    }
                }
            }
        };
        out.push((t.clone(), outcome));
    }
    out
}

/// One target: the identity-checked signal, then what became of it.
async fn signal_one(
    client: &Client,
    t: &Target,
    action: Action,
    version: i32,
    wait: Duration,
    role: &str,
) -> Outcome {
    let wait_ms = wait.as_millis() as i64;
    let waits_in_server = action == Action::Terminate && version >= 140_000 && wait_ms > 0;
    let sql = match action {
        // `state` is read in the same row as the signal: whether a cancel met a session idle in
        // transaction (which it cannot help) is what the server showed at that moment.
        Action::Cancel => format!("SELECT pg_catalog.pg_cancel_backend(pid), state {IDENTITY}"),
        Action::Terminate if waits_in_server => format!(
            "SELECT pg_catalog.pg_terminate_backend(pid, $4::pg_catalog.int8), state {IDENTITY}"
        ),
        Action::Terminate => {
            format!("SELECT pg_catalog.pg_terminate_backend(pid), state {IDENTITY}")
        }
    };
    let rows = if waits_in_server {
        client
            .query(
                &sql,
                &[&t.pid, &t.backend_start, &t.application_name, &wait_ms],
            )
            .await
    } else {
        client
            .query(&sql, &[&t.pid, &t.backend_start, &t.application_name])
            .await
    };
    let rows = match rows {
        Ok(r) => r,
        // The statement timed out while the server waited for the exit: the signal was sent
        // when the target is gone now.
        Err(e) if e.code().map(|c| c.code()) == Some("57014") && !alive(client, t).await => {
            return Outcome::Gone;
        }
        Err(e) => return failed(&e, role),
    };
    let Some(row) = rows.first() else {
        return why_not(client, t).await;
    };
    let sent: bool = match row.col(0) {
        Ok(sent) => sent,
        // Whether the signal went out is unknown: say so, never guess.
        Err(e) => {
            return Outcome::Failed {
                sqlstate: None,
                error: format!("whether the signal was sent is unknown: {e}"),
                hint: None,
            }
        }
    };
    // A state hidden from this role falls back to the one the plan showed.
    let state: Option<String> = row.col(1).ok().flatten().or_else(|| t.state.clone());
    let idle_in_transaction = is_idle_in_transaction(state.as_deref());
    match action {
        Action::Cancel if sent => Outcome::Signalled {
            exited: None,
            idle_in_transaction,
        },
        Action::Terminate if waits_in_server => Outcome::Signalled {
            // false: still running after the wait (the server warned), or already gone.
            exited: Some(sent || !alive(client, t).await),
            idle_in_transaction,
        },
        Action::Terminate if sent => Outcome::Signalled {
            exited: Some(wait_for_exit(client, t, wait).await),
            idle_in_transaction,
        },
        // The server could not signal it: it exited in between.
        _ => Outcome::Gone,
    }
}

/// Why the identity check matched nothing: the pid is free, or another session has it.
async fn why_not(client: &Client, t: &Target) -> Outcome {
    let now = client
        .query_opt(
            "SELECT backend_start, application_name FROM pg_catalog.pg_stat_activity WHERE pid = $1",
            &[&t.pid],
        )
        .await;
    match now {
        Ok(None) => Outcome::Gone,
        Ok(Some(r)) => {
            let start: Option<chrono::DateTime<chrono::Utc>> = r.col(0).ok().flatten();
            let app: Option<String> = r.col(1).ok().flatten();
            let reason = if start != Some(t.backend_start) {
                "the pid now belongs to another session (it reconnected or the pid was reused)"
                    .to_string()
            } else if app.as_deref() != Some(t.application_name.as_str()) {
                format!(
                    "the session changed its application_name to {:?} since the plan",
                    app.unwrap_or_default()
                )
            } else {
                "it no longer matched the plan".to_string()
            };
            Outcome::Skipped { reason }
        }
        Err(_) => Outcome::Skipped {
            reason: "it no longer matched the plan".into(),
        },
    }
}

async fn alive(client: &Client, t: &Target) -> bool {
    client
        .query_opt(
            &format!("SELECT 1 {IDENTITY}"),
            &[&t.pid, &t.backend_start, &t.application_name],
        )
        .await
        .map_or(true, |r| r.is_some())
}

/// Before PostgreSQL 14 the server cannot wait: watch for the backend to leave.
async fn wait_for_exit(client: &Client, t: &Target, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if !alive(client, t).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failed(e: &tokio_postgres::Error, role: &str) -> Outcome {
    let sqlstate = e.code().map(|c| c.code().to_string());
    let hint = (sqlstate.as_deref() == Some("42501")).then(|| {
        let text = e.as_db_error().map_or(String::new(), |d| {
            format!("{} {}", d.message(), d.detail().unwrap_or_default())
        });
        privilege_hint(&text, role)
    });
    Outcome::Failed {
        sqlstate,
        error: describe_error(e),
        hint,
    }
}
