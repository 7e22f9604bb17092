//! `pgswarm sweep`: plan on read-only sessions, show the plan, confirm, drop exactly that plan.

use crate::cmd::cli::SweepArgs;
use crate::cmd::{emit, emit_stderr, CmdError, Exit};
use crate::domain::format::fmt_bytes;
use crate::domain::sweep::{
    build_report, summary_line, DatabaseOutcome, DatabasePlan, KeepReason, RunMode, SweepPlan,
    SweepReport, SweepRules, SweepStatus, Timings,
};
use crate::domain::text::{sanitize, sanitize_lines};
use crate::pg::config::Settings;
use crate::pg::conninfo::{Environment, ProcessEnv};
use crate::pg::sweep::{
    discover_and_plan, execute_plan, DependencyCheck, DropSettings, Progress, SweepRun,
};
use std::fmt::Write;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Plans, shows the plan, asks (on a terminal) or takes `--yes`, drops exactly the plan, reports.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &SweepArgs,
) -> Result<Exit, CmdError> {
    if settings.read_only {
        return Err(CmdError::Usage(format!(
            "{}: sweep refuses to drop anything",
            settings.read_only_reason()
        )));
    }
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        return Err(CmdError::Usage(
            "stdin is not a terminal, so pgswarm cannot ask before dropping: check with \
             --dry-run, then pass --yes"
                .into(),
        ));
    }
    let rules = SweepRules {
        min_age: args.min_age,
        include_forced: args.include_forced,
        include_legacy: args.include_legacy,
        allow_unattributed: args.allow_unattributed,
    };
    let drop = DropSettings {
        lock_timeout: args.lock_timeout,
        statement_timeout: args.statement_timeout,
        jobs: usize::from(args.jobs),
        ..Default::default()
    };
    let report = runtime.block_on(plan_confirm_run(settings, args, &rules, &drop));
    Ok(sweep_exit(&report))
}

async fn plan_confirm_run(
    settings: &Settings,
    args: &SweepArgs,
    rules: &SweepRules,
    drop: &DropSettings,
) -> SweepReport {
    let started = Instant::now();
    // With --yes nobody reads the plan before it runs: the dependency closure is computed once,
    // inside each drop's transaction, where it decides anyway.
    let check = if args.yes && !args.dry_run {
        DependencyCheck::AtDropOnly
    } else {
        DependencyCheck::AtPlan
    };
    let plan = discover_and_plan(settings, rules, check, &ProcessEnv).await;
    let discovery = started.elapsed();
    if !args.json {
        emit(&render_plan(&plan));
    }
    let proceed = plan.active_detection_complete && plan.drop_count() > 0 && !args.dry_run;
    let confirmed = proceed && (args.yes || confirm_on_terminal(plan.drop_count()));
    let (outcomes, drop_time) = if confirmed {
        // The executor refuses a plan older than PLAN_MAX_AGE (a slow answer at the prompt).
        run_plan(&plan, settings, rules, drop, &ProcessEnv).await
    } else {
        (Vec::new(), Duration::ZERO)
    };
    let mode = match (args.dry_run, confirmed) {
        (true, _) => RunMode::DryRun,
        (false, true) => RunMode::Executed,
        (false, false) => RunMode::Cancelled,
    };
    let timings = Timings {
        discovery,
        drop: drop_time,
        total: started.elapsed(),
        ..Default::default()
    };
    let report = build_report(&plan, &outcomes, mode, timings);
    if args.json {
        let mut text = serde_json::to_string_pretty(&report).expect("report serializes");
        text.push('\n');
        emit(&text);
    } else {
        emit(&render_outcome(&plan, &report));
    }
    report
}

/// Asks on the terminal; anything but "yes" cancels.
fn confirm_on_terminal(drops: usize) -> bool {
    emit_stderr(&format!(
        "Drop {}? Type 'yes' to proceed: ",
        crate::domain::format::fmt_count(drops, "schema", "schemas")
    ));
    let mut answer = String::new();
    let ok = std::io::stdin().read_line(&mut answer).is_ok()
        && answer.trim_end_matches(['\n', '\r']) == "yes";
    if !ok {
        emit_stderr("cancelled: nothing dropped\n");
    }
    ok
}

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
            "  {} the prefix but no attributable namespace: {}",
            match plan.unattributed_sessions.len() {
                1 => "1 session carries".to_string(),
                n => format!("{n} sessions carry"),
            },
            sanitize(&plan.unattributed_sessions.join(", "))
        );
    }
    for d in &plan.databases {
        render_database_plan(&mut out, d);
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

/// One database's drops and keeps, each keep with its reason.
fn render_database_plan(out: &mut String, d: &DatabasePlan) {
    if d.drop.is_empty() && d.keep.is_empty() {
        return;
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
        let _ = writeln!(
            out,
            "    keep  {:44} {}{}",
            k.schema,
            k.reason.as_str(),
            fmt_detail(&k.detail)
        );
    }
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

/// The exit code of a sweep report (docs/sweep.md, "Exit codes").
pub fn sweep_exit(r: &SweepReport) -> Exit {
    match r.status() {
        SweepStatus::Done => Exit::Ok,
        SweepStatus::DetectionIncomplete => Exit::Unreachable,
        SweepStatus::SomeFailed => Exit::SomeFailed,
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
