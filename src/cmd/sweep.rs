//! `pgswarm sweep`: plan on read-only sessions, show the plan, confirm, drop exactly that plan.

use crate::cmd::exit;
use crate::domain::format::fmt_bytes;
use crate::domain::sweep::{
    summary_line, DatabaseOutcome, KeepReason, SweepPlan, SweepReport, SweepRules, SweepStatus,
};
use crate::domain::text::{sanitize, sanitize_lines};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::sweep::{execute_plan, DropSettings, Progress, SweepRun};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Exit code when drops failed (or could not run) in some database.
pub const SOME_FAILED: i32 = 4;

/// `: a; b; c` for a keep's detail: the first five, then how many more (the JSON has them all).
fn fmt_detail(detail: &[String]) -> String {
    const SHOWN: usize = 5;
    if detail.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = detail[..detail.len().min(SHOWN)]
        .iter()
        .map(|d| sanitize(d).into_owned())
        .collect();
    let mut s = format!(": {}", shown.join("; "));
    if detail.len() > SHOWN {
        let _ = write!(s, "; and {} more", detail.len() - SHOWN);
    }
    s
}

/// The plan as text, sanitised (object names and errors come from the database).
pub fn render_plan(plan: &SweepPlan) -> String {
    sanitize_lines(&render_plan_unchecked(plan)).into_owned()
}

fn render_plan_unchecked(plan: &SweepPlan) -> String {
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
        let _ = writeln!(out, "  ERROR {}: {}", e.database, sanitize(&e.error));
    }
    if !plan.unattributed_sessions.is_empty() {
        let _ = writeln!(
            out,
            "  {} session(s) carry the prefix but no attributable namespace: {}",
            plan.unattributed_sessions.len(),
            sanitize(&plan.unattributed_sessions.join(", "))
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
            let detail = fmt_detail(&k.detail);
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

/// What happened to the planned drops that were not dropped, then the summary line; sanitised.
pub fn render_outcome(plan: &SweepPlan, r: &SweepReport) -> String {
    sanitize_lines(&render_outcome_unchecked(plan, r)).into_owned()
}

fn render_outcome_unchecked(plan: &SweepPlan, r: &SweepReport) -> String {
    let mut out = String::new();
    for (p, d) in plan.databases.iter().zip(&r.databases) {
        for f in &d.failed {
            let _ = writeln!(
                out,
                "FAILED {}.{}: {} ({}, {})",
                d.name,
                f.schema,
                sanitize(&f.error),
                f.reason.as_str(),
                f.sqlstate.as_deref().unwrap_or("no SQLSTATE")
            );
        }
        let planned = |s: &str| p.drop.iter().any(|x| x.schema == s);
        for k in d.kept.iter().filter(|k| planned(&k.schema)) {
            if k.reason == KeepReason::NotConfirmed {
                continue;
            }
            let detail = fmt_detail(&k.detail);
            let _ = writeln!(
                out,
                "KEPT   {}.{}: {}{detail}",
                d.name,
                k.schema,
                k.reason.as_str()
            );
        }
    }
    let _ = writeln!(out, "{}", summary_line(r));
    out
}

/// The exit code of a sweep report: 3 beats 4 (README "Exit codes").
pub fn sweep_exit_code(r: &SweepReport) -> i32 {
    match r.status() {
        SweepStatus::Done => exit::OK,
        SweepStatus::DetectionIncomplete => exit::UNREACHABLE,
        SweepStatus::SomeFailed => SOME_FAILED,
    }
}

/// Runs the plan with a progress bar on a terminal (hidden otherwise).
pub async fn run_plan(
    plan: &SweepPlan,
    settings: &Settings,
    rules: &SweepRules,
    drop: &DropSettings,
    env: &(dyn Environment + Sync),
) -> (Vec<DatabaseOutcome>, Duration) {
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
    let run = SweepRun {
        plan,
        targets: &settings.databases,
        session: &settings.session,
        app_prefix: &settings.convention.app_prefix,
        rules,
        drop,
        env,
    };
    let outcomes = execute_plan(&run, &progress).await;
    bar.finish_and_clear();
    (outcomes, started.elapsed())
}
