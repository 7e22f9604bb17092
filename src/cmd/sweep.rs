//! `pgswarm sweep`: plan on read-only sessions, show the plan, confirm, drop exactly that plan.

use crate::cmd::config::Settings;
use crate::cmd::exit;
use crate::cmd::report::fmt_bytes;
use crate::domain::snapshot::build_snapshot;
use crate::domain::sweep::{plan_sweep, KeepReason, Kept, SweepPlan, SweepRules};
use crate::pg::conninfo::Environment;
use crate::pg::probe::{observe, open_all, ProbeOptions};
use crate::pg::sweep::{
    execute_plan, external_dependents, DatabaseOutcome, DropSettings, FailedDrop, Progress,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Instant;

/// Exit code when drops failed (or could not run) in some database.
pub const SOME_FAILED: i32 = 4;

/// `sweep --json` (schema_version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub schema_version: u32,
    pub dry_run: bool,
    pub active_detection_complete: bool,
    pub active_namespaces: Vec<String>,
    pub unattributed_sessions: Vec<String>,
    pub errors: Vec<crate::domain::sweep::DatabaseError>,
    pub databases: Vec<DatabaseResult>,
    pub timings: Timings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseResult {
    pub name: String,
    pub dropped: Vec<String>,
    pub would_drop: Vec<String>,
    pub failed: Vec<FailedDrop>,
    pub kept: Vec<Kept>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub discovery_ms: f64,
    pub drop_ms: f64,
    pub total_ms: f64,
}

/// Discovers on read-only sessions and plans.
pub async fn discover_and_plan(
    settings: &Settings,
    rules: &SweepRules,
    env: &(dyn Environment + Sync),
) -> SweepPlan {
    let sessions = open_all(&settings.databases, &settings.session, env).await;
    let opts = ProbeOptions {
        schema_prefix: settings.convention.schema_prefix.clone(),
        exact_sizes: false,
    };
    let obs = observe(
        &settings.databases,
        &sessions,
        &opts,
        settings.session.statement_timeout,
    )
    .await;
    let snap = build_snapshot(obs, &settings.convention);
    let mut deps: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut dep_errors = Vec::new();
    for (t, s) in settings.databases.iter().zip(&sessions) {
        let Ok(s) = s else { continue };
        let names: Vec<String> = snap
            .schemas
            .iter()
            .filter(|x| x.database == t.name)
            .map(|x| x.schema.clone())
            .collect();
        match external_dependents(&s.client, &names).await {
            Ok(found) => {
                for (schema, d) in found {
                    deps.insert((t.name.clone(), schema), d);
                }
            }
            Err(e) => dep_errors.push((t.name.clone(), crate::pg::connect::describe_error(&e))),
        }
    }
    let mut plan = plan_sweep(&snap, &deps, rules, Utc::now());
    if !dep_errors.is_empty() {
        // Without the dependency check nothing in that database is provably safe: keep it all.
        for (db, e) in dep_errors {
            plan.errors.push(crate::domain::sweep::DatabaseError {
                database: db.clone(),
                error: format!("dependency check failed: {e}"),
            });
            if let Some(d) = plan.databases.iter_mut().find(|d| d.name == db) {
                for x in d.drop.drain(..) {
                    d.keep.push(Kept {
                        schema: x.schema,
                        reason: KeepReason::ActiveDetectionIncomplete,
                        detail: vec![],
                    });
                }
            }
        }
    }
    plan
}

/// The plan as text.
pub fn render_plan(plan: &SweepPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgswarm sweep plan {} · live set {} · {} live namespace{}",
        plan.planned_at.format("%Y-%m-%d %H:%M:%S UTC"),
        if plan.active_detection_complete {
            "complete"
        } else {
            "INCOMPLETE"
        },
        plan.active_namespaces.len(),
        if plan.active_namespaces.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    for e in &plan.errors {
        let _ = writeln!(out, "  ERROR {}: {}", e.database, e.error);
    }
    if !plan.unattributed_sessions.is_empty() {
        let _ = writeln!(
            out,
            "  {} session(s) carry the prefix but no attributable namespace: {}",
            plan.unattributed_sessions.len(),
            plan.unattributed_sessions.join(", ")
        );
    }
    for d in &plan.databases {
        if d.drop.is_empty() && d.keep.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {}{}",
            d.name,
            d.server
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        );
        for x in &d.drop {
            let _ = writeln!(
                out,
                "    drop  {:44} {:>5} tables  ~{}",
                x.schema,
                x.tables,
                fmt_bytes(x.bytes)
            );
        }
        for k in &d.keep {
            let detail = if k.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", k.detail.join("; "))
            };
            let _ = writeln!(
                out,
                "    keep  {:44} {}{}",
                k.schema,
                k.reason.as_str(),
                detail
            );
        }
    }
    let dbs = plan.databases.iter().filter(|d| !d.drop.is_empty()).count();
    if !plan.active_detection_complete {
        let _ = writeln!(out, "Nothing will be dropped: the live set could not be read from every database (fail-closed).");
    } else {
        let _ = writeln!(
            out,
            "Will drop {} schema{} in {dbs} database{}; keep {}.",
            plan.drop_count(),
            if plan.drop_count() == 1 { "" } else { "s" },
            if dbs == 1 { "" } else { "s" },
            plan.keep_count()
        );
    }
    out
}

/// Joins the plan and what happened into the report.
pub fn build_report(
    plan: &SweepPlan,
    outcomes: &[DatabaseOutcome],
    dry_run: bool,
    timings: Timings,
) -> SweepReport {
    let by_name: HashMap<&str, &DatabaseOutcome> =
        outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut errors = plan.errors.clone();
    let databases = plan
        .databases
        .iter()
        .map(|d| {
            let o = by_name.get(d.name.as_str());
            if let Some(e) = o.and_then(|o| o.error.clone()) {
                errors.push(crate::domain::sweep::DatabaseError {
                    database: d.name.clone(),
                    error: e,
                });
            }
            let mut kept = d.keep.clone();
            if let Some(o) = o {
                kept.extend(o.kept.iter().cloned());
            } else if !dry_run && plan.active_detection_complete {
                // Planned, but never attempted (cancelled).
                kept.extend(d.drop.iter().map(|x| Kept {
                    schema: x.schema.clone(),
                    reason: KeepReason::NotConfirmed,
                    detail: vec![],
                }));
            }
            DatabaseResult {
                name: d.name.clone(),
                dropped: o.map(|o| o.dropped.clone()).unwrap_or_default(),
                would_drop: if dry_run {
                    d.drop.iter().map(|x| x.schema.clone()).collect()
                } else {
                    vec![]
                },
                failed: o.map(|o| o.failed.clone()).unwrap_or_default(),
                kept,
            }
        })
        .collect();
    SweepReport {
        schema_version: 1,
        dry_run,
        active_detection_complete: plan.active_detection_complete,
        active_namespaces: plan.active_namespaces.clone(),
        unattributed_sessions: plan.unattributed_sessions.clone(),
        errors,
        databases,
        timings,
    }
}

/// The exit code of a sweep report.
pub fn sweep_exit_code(r: &SweepReport) -> i32 {
    if !r.active_detection_complete {
        exit::UNREACHABLE
    } else if r.databases.iter().any(|d| !d.failed.is_empty())
        || r.databases.iter().any(|d| {
            d.kept
                .iter()
                .any(|k| k.reason == KeepReason::SweepInProgress)
        })
    {
        SOME_FAILED
    } else {
        exit::OK
    }
}

/// One summary line.
pub fn summary_line(r: &SweepReport) -> String {
    let dropped: usize = r.databases.iter().map(|d| d.dropped.len()).sum();
    let would: usize = r.databases.iter().map(|d| d.would_drop.len()).sum();
    let failed: usize = r.databases.iter().map(|d| d.failed.len()).sum();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for k in r.databases.iter().flat_map(|d| &d.kept) {
        *reasons.entry(k.reason.as_str()).or_default() += 1;
    }
    let kept: usize = reasons.values().sum();
    let why: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let head = if r.dry_run {
        format!("dry run: would drop {would}")
    } else {
        format!("dropped {dropped}, failed {failed}")
    };
    format!(
        "{head}, kept {kept}{} in {:.1} s",
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        },
        r.timings.total_ms / 1000.0
    )
}

/// Runs the plan with a progress bar on a terminal (hidden otherwise).
pub async fn run_plan(
    plan: &SweepPlan,
    settings: &Settings,
    rules: &SweepRules,
    drop: &DropSettings,
    env: &(dyn Environment + Sync),
) -> (Vec<DatabaseOutcome>, f64) {
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(plan.drop_count() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .expect("static template"),
    );
    let progress = |p: Progress| match p {
        Progress::Dropping { database, schema } => bar.set_message(format!("{database}.{schema}")),
        Progress::Done { .. } => bar.inc(1),
    };
    let outcomes = execute_plan(
        plan,
        &settings.databases,
        &settings.session,
        &settings.convention,
        rules,
        drop,
        env,
        &progress,
    )
    .await;
    bar.finish_and_clear();
    (outcomes, started.elapsed().as_secs_f64() * 1000.0)
}
