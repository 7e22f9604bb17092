//! Actions over the API (`serve --allow-actions`): cancel, terminate and sweep, planned and carried
//! out exactly as the CLI does them.
//!
//! Two requests, like the CLI's plan-then-`yes`: `POST /api/v1/actions/plan` makes a plan from a
//! fresh read of every configured database (never from the last poll: a plan must rest on a
//! complete, current picture) and answers it with a random plan id; `POST
//! /api/v1/actions/{id}/confirm` carries out exactly that plan, once, with the same identity
//! re-checks (`pg::signal::send` compares pid and backend start; the sweep re-reads every database
//! inside each drop's transaction). Unconfirmed plans expire. Every plan and every confirmation is
//! an audit line in the service log (`target: "audit"`), with the client's address.
//!
//! Why a token is required even on loopback: `serve` holds database credentials that can
//! terminate sessions and drop schemas; without a token, any local user could use them.

use crate::domain::naming::{Namespace, Worker, MAX_NAMESPACE_LEN};
use crate::domain::signal::{build_signal_report, plan_signal, Action, Selector, SignalPlan};
use crate::domain::snapshot::build_snapshot;
use crate::domain::sweep::{build_report, RunMode, SweepPlan, SweepRules, Timings};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::probe::{observe_once, ProbeOptions};
use crate::pg::sweep::{discover_and_plan, execute_plan, DependencyCheck, DropSettings, SweepRun};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a plan waits for its confirmation.
pub const PLAN_TTL: Duration = Duration::from_secs(120);
/// Plans waiting at once; planning more is refused until some are confirmed or expire.
pub const PLANS_KEPT: usize = 64;

/// A plan request: `{"action": "cancel" | "terminate", "pid": N, "database": "..."}`,
/// `{"action": ..., "namespace": "...", "worker": "gw0", "only_blocking": true}`, or
/// `{"action": "sweep"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub action: String,
    pub pid: Option<i32>,
    pub database: Option<String>,
    pub namespace: Option<String>,
    pub worker: Option<String>,
    #[serde(default)]
    pub only_blocking: bool,
}

/// Why an action request was refused; the words name the value and the way out.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no plan {0:?} is waiting: plans run once and expire after 120 s; plan again")]
    NoSuchPlan(String),
    #[error("{PLANS_KEPT} plans are waiting for confirmation already: confirm or let them expire")]
    TooManyPlans,
}

enum Planned {
    Signal(SignalPlan),
    Sweep(SweepPlan),
}

struct Pending {
    planned: Planned,
    made: Instant,
}

/// The action side of a `serve`: its settings (the databases and their credentials) and the
/// plans waiting for confirmation.
pub struct Actions {
    settings: Settings,
    env: Arc<dyn Environment + Send + Sync>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A plan as answered: its id and what it would do (the `--dry-run --json` document of the CLI).
#[derive(Debug, Serialize)]
pub struct PlanAnswer {
    pub plan_id: Option<String>,
    pub expires_in_s: u64,
    pub action: String,
    /// Whether confirming it would do anything (a complete picture and someone or something to act on).
    pub actionable: bool,
    pub plan: serde_json::Value,
}

fn plan_id() -> String {
    let mut bytes = [0u8; 16];
    // The kernel's generator; a failure here would make ids guessable, so it is not ignored.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Actions {
    pub fn new(settings: Settings, env: Arc<dyn Environment + Send + Sync>) -> Arc<Actions> {
        Arc::new(Actions {
            settings,
            env,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|_, v| v.made.elapsed() < PLAN_TTL);
        p
    }

    /// Plans from a fresh read; the plan is kept for confirmation when it could do something.
    pub async fn plan(
        &self,
        req: PlanRequest,
        peer: Option<SocketAddr>,
    ) -> Result<PlanAnswer, ActionError> {
        if self.settings.read_only {
            return Err(ActionError::Forbidden(format!(
                "{}: serve refuses every action",
                self.settings.read_only_reason()
            )));
        }
        if self.pending().len() >= PLANS_KEPT {
            return Err(ActionError::TooManyPlans);
        }
        let (planned, actionable, plan_json) = match req.action.as_str() {
            "cancel" | "terminate" => {
                let action = if req.action == "cancel" {
                    Action::Cancel
                } else {
                    Action::Terminate
                };
                let selector = selector_of(&req)?;
                let opts = ProbeOptions {
                    // Public writes are not looked for here: a signal does not need them.
                    shared_schemas: Vec::new(),
                    ..ProbeOptions::of(&self.settings.convention)
                };
                let obs = observe_once(
                    &self.settings.databases,
                    &self.settings.session,
                    &opts,
                    self.env.as_ref(),
                )
                .await;
                let snap = build_snapshot(obs, &self.settings.convention);
                let plan = plan_signal(&snap, &selector, action)
                    .map_err(|e| ActionError::BadRequest(e.to_string()))?;
                let json =
                    serde_json::to_value(build_signal_report(&plan, None)).unwrap_or_default();
                (Planned::Signal(plan.clone()), plan.actionable(), json)
            }
            "sweep" => {
                if req.pid.is_some() || req.namespace.is_some() || req.worker.is_some() {
                    return Err(ActionError::BadRequest(
                        "a sweep takes no pid, namespace or worker: it plans every stale schema \
                         by the sweep rules"
                            .into(),
                    ));
                }
                let plan = discover_and_plan(
                    &self.settings,
                    &SweepRules::default(),
                    DependencyCheck::AtPlan,
                    self.env.as_ref(),
                )
                .await;
                let actionable = plan.active_detection_complete && plan.drop_count() > 0;
                let json = serde_json::to_value(&plan).unwrap_or_default();
                (Planned::Sweep(plan), actionable, json)
            }
            other => {
                return Err(ActionError::BadRequest(format!(
                    "action {other:?} is not one of cancel, terminate, sweep"
                )))
            }
        };
        let id = actionable.then(plan_id);
        tracing::info!(
            target: "audit",
            event = "plan",
            action = %req.action,
            plan_id = id.as_deref().unwrap_or("-"),
            actionable,
            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
            plan = %plan_json,
            "audit: action planned"
        );
        if let Some(id) = &id {
            self.pending().insert(
                id.clone(),
                Pending {
                    planned,
                    made: Instant::now(),
                },
            );
        }
        Ok(PlanAnswer {
            plan_id: id,
            expires_in_s: PLAN_TTL.as_secs(),
            action: req.action,
            actionable,
            plan: plan_json,
        })
    }

    /// Carries out plan `id` exactly, once; the report is the CLI's `--json` report.
    pub async fn confirm(
        self: &Arc<Self>,
        id: &str,
        peer: Option<SocketAddr>,
    ) -> Result<serde_json::Value, ActionError> {
        let Some(pending) = self.pending().remove(id) else {
            return Err(ActionError::NoSuchPlan(
                crate::domain::text::sanitize(id).chars().take(64).collect(),
            ));
        };
        // In a task of its own: a client that goes away does not stop it half-way.
        let me = self.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let (action, report) = match &pending.planned {
                Planned::Signal(plan) => {
                    let outcomes =
                        crate::pg::signal::send(plan, &me.settings, me.env.as_ref()).await;
                    let report = build_signal_report(plan, Some(&outcomes));
                    (plan.action.verb(), serde_json::to_value(report))
                }
                Planned::Sweep(plan) => {
                    let started = Instant::now();
                    let rules = SweepRules::default();
                    let drop = DropSettings::default();
                    let run = SweepRun {
                        plan,
                        targets: &me.settings.databases,
                        session: &me.settings.session,
                        app_prefix: &me.settings.convention.app_prefix,
                        rules: &rules,
                        drop: &drop,
                        env: me.env.as_ref(),
                    };
                    let outcomes = execute_plan(&run, &|_| {}).await;
                    let timings = Timings {
                        drop: started.elapsed(),
                        total: started.elapsed(),
                        ..Default::default()
                    };
                    let report = build_report(plan, &outcomes, RunMode::Executed, timings);
                    ("sweep", serde_json::to_value(report))
                }
            };
            let report = report.unwrap_or_default();
            tracing::warn!(
                target: "audit",
                event = "confirmed",
                action,
                plan_id = %id,
                peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                report = %report,
                "audit: action confirmed"
            );
            report
        });
        task.await
            .map_err(|e| ActionError::Forbidden(format!("the action failed: {e}")))
    }
}

fn selector_of(req: &PlanRequest) -> Result<Selector, ActionError> {
    if let Some(ns) = &req.namespace {
        if Namespace::parse(ns).is_none() {
            return Err(ActionError::BadRequest(format!(
                "invalid namespace {ns:?}: a namespace is 1 to {MAX_NAMESPACE_LEN} lowercase \
                 letters and digits (e.g. p4242t1795510800r0a1b2c3d)"
            )));
        }
    }
    if let Some(w) = &req.worker {
        if Worker::parse(w).is_none() {
            return Err(ActionError::BadRequest(format!(
                "invalid worker {w:?}: use gw0, gw1, ... or master"
            )));
        }
    }
    match (req.pid, &req.namespace) {
        (Some(_), Some(_)) => Err(ActionError::BadRequest(
            "give pid or namespace, not both".into(),
        )),
        (Some(pid), None) => Ok(Selector::Pid {
            pid,
            database: req.database.clone(),
        }),
        (None, Some(ns)) => Ok(Selector::Invocation {
            namespace: ns.clone(),
            worker: req.worker.clone(),
            only_blocking: req.only_blocking,
        }),
        (None, None) => Err(ActionError::BadRequest(
            "give pid (and database when it is on several servers) or namespace".into(),
        )),
    }
}
