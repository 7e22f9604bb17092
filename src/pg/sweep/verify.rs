//! Liveness checks on every configured server, on sessions of their own: "which test sessions are
//! connected right now?", asked before each drop and again after it, before the commit.

use crate::domain::sweep::LivenessAnswer;
use crate::pg::connect::{connect, describe_error, SessionSettings};
use crate::pg::conninfo::{Environment, Target};
use crate::pg::probe::{server_label, DbTarget};
use crate::pg::row::RowExt;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::{Client, Statement};

use super::CLIENT_MARGIN;

/// The verifiers' own `statement_timeout` never drops below this, however tight the bound.
const MIN_VERIFY_STATEMENT: Duration = Duration::from_secs(1);

/// One autocommit session per configured server, asked "which test sessions are connected?" before
/// and after every drop. A server whose session breaks gets one reconnection; if that fails too, it
/// answers with the error from then on, and every later drop is kept (fail closed).
pub struct Verifiers {
    list: Vec<Verifier>,
    session: SessionSettings,
    pattern: String,
    bound: Duration,
}

struct Verifier {
    server: String,
    target: Target,
    conn: tokio::sync::Mutex<VerifierConn>,
}

enum VerifierConn {
    Open(Client, Statement),
    Closed,
    Dead(String),
}

const LIVENESS_SQL: &str =
    "SELECT coalesce(application_name, '') FROM pg_catalog.pg_stat_activity \
                            WHERE application_name LIKE $1 AND pid <> pg_catalog.pg_backend_pid()";

impl Verifiers {
    /// One verifier per distinct server among `targets` (by host list), connected concurrently.
    /// Every question is bounded by `bound` on the client (the server is told the same, less the
    /// margin), which must stay below the dropping sessions' idle-in-transaction timeout: a drop
    /// waits in its open transaction for these answers.
    pub async fn open(
        targets: &[DbTarget],
        session: &SessionSettings,
        app_prefix: &str,
        bound: Duration,
        env: &(dyn Environment + Sync),
    ) -> Verifiers {
        let mut by_server: BTreeMap<String, Target> = BTreeMap::new();
        for t in targets {
            by_server
                .entry(server_label(&t.target))
                .or_insert_with(|| t.target.clone());
        }
        let v = Verifiers {
            list: by_server
                .into_iter()
                .map(|(server, target)| Verifier {
                    server,
                    target,
                    conn: tokio::sync::Mutex::new(VerifierConn::Closed),
                })
                .collect(),
            session: SessionSettings {
                read_only: true,
                statement_timeout: bound
                    .saturating_sub(CLIENT_MARGIN)
                    .max(MIN_VERIFY_STATEMENT),
                ..session.clone()
            },
            pattern: format!("{}\\_%", like_escape(app_prefix)),
            bound,
        };
        join_all(v.list.iter().map(|x| v.ensure_open(x, env))).await;
        v
    }

    async fn ensure_open(&self, v: &Verifier, env: &(dyn Environment + Sync)) {
        let mut conn = v.conn.lock().await;
        let usable = matches!(&*conn, VerifierConn::Open(c, _) if !c.is_closed());
        if usable || matches!(&*conn, VerifierConn::Dead(_)) {
            return;
        }
        let opened = async {
            let client = connect(&v.target, &self.session, env)
                .await
                .map_err(|e| e.message)?;
            let stmt = tokio::time::timeout(self.bound, client.prepare(LIVENESS_SQL))
                .await
                .map_err(|_| "no answer while preparing the liveness check".to_string())?
                .map_err(|e| describe_error(&e))?;
            Ok::<_, String>((client, stmt))
        };
        *conn = match opened.await {
            Ok((c, s)) => VerifierConn::Open(c, s),
            Err(e) => VerifierConn::Dead(e),
        };
    }

    async fn ask_one(&self, v: &Verifier, env: &(dyn Environment + Sync)) -> LivenessAnswer {
        self.ensure_open(v, env).await;
        let mut conn = v.conn.lock().await;
        let labels = match &*conn {
            VerifierConn::Dead(e) => Err(e.clone()),
            VerifierConn::Closed => Err("not connected".to_string()),
            VerifierConn::Open(client, stmt) => {
                match tokio::time::timeout(self.bound, client.query(stmt, &[&self.pattern])).await {
                    Ok(Ok(rows)) => rows
                        .iter()
                        .map(|r| r.col::<String>(0))
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string()),
                    Ok(Err(e)) => Err(describe_error(&e)),
                    Err(_) => Err(format!(
                        "no answer within {:.0} s",
                        self.bound.as_secs_f64()
                    )),
                }
            }
        };
        if labels.is_err() && matches!(&*conn, VerifierConn::Open(..)) {
            // Next time: one reconnection attempt.
            *conn = VerifierConn::Closed;
        }
        LivenessAnswer {
            server: v.server.clone(),
            labels,
        }
    }

    /// Every server's answer, asked in parallel.
    pub async fn ask(&self, env: &(dyn Environment + Sync)) -> Vec<LivenessAnswer> {
        join_all(self.list.iter().map(|v| self.ask_one(v, env))).await
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
