//! `pgswarm cancel` and `pgswarm terminate`: plan from a fresh read of every configured server, show
//! exactly whom, confirm (terminal or `--yes`), send each identity-checked signal, report.
//!
//! Whom is decided in `domain::signal`, the sending in `pg::signal`; this module reads, asks and
//! prints. Every string from a database is sanitised in text output (JSON keeps it raw).

use crate::cmd::cli::SignalArgs;
use crate::cmd::{emit, emit_stderr, CmdError, Exit};
use crate::domain::naming::{Namespace, Worker, MAX_NAMESPACE_LEN};
use crate::domain::signal::{
    build_signal_report, plan_signal, Action, Selector, SignalPlan, SignalReport, SignalStatus,
    IDLE_CANCEL_NOTE,
};
use crate::domain::snapshot::build_snapshot;
use crate::domain::text::sanitize_lines;
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::probe::{observe_once, ProbeOptions};
use std::fmt::Write;
use std::io::IsTerminal;

pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &SignalArgs,
    action: Action,
) -> Result<Exit, CmdError> {
    if settings.read_only {
        return Err(CmdError::Usage(format!(
            "{}: {} refuses to signal any session",
            settings.read_only_reason(),
            action.verb()
        )));
    }
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        return Err(CmdError::Usage(format!(
            "stdin is not a terminal, so pgswarm cannot ask before it signals: check with \
             --dry-run, then pass --yes (pgswarm {} ... --yes)",
            action.verb()
        )));
    }
    if let Some(ns) = &args.namespace {
        if Namespace::parse(ns).is_none() {
            return Err(CmdError::Usage(format!(
                "invalid --namespace {ns:?}: a namespace is 1 to {MAX_NAMESPACE_LEN} lowercase \
                 letters and digits (e.g. p4242t1795510800r0a1b2c3d)"
            )));
        }
    }
    if let Some(w) = &args.worker {
        if Worker::parse(w).is_none() {
            return Err(CmdError::Usage(format!(
                "invalid --worker {w:?}: use gw0, gw1, ... or master"
            )));
        }
    }
    let selector = match (&args.pid, &args.namespace) {
        (Some(pid), _) => Selector::Pid {
            pid: *pid,
            database: args.database.clone(),
        },
        (None, Some(ns)) => Selector::Invocation {
            namespace: ns.clone(),
            worker: args.worker.clone(),
            only_blocking: args.only_blocking,
        },
        (None, None) => return Err(CmdError::Usage("give --pid PID or --namespace NS".into())),
    };
    runtime.block_on(plan_confirm_send(settings, args, &selector, action))
}

async fn plan_confirm_send(
    settings: &Settings,
    args: &SignalArgs,
    selector: &Selector,
    action: Action,
) -> Result<Exit, CmdError> {
    let opts = ProbeOptions {
        // Public writes are not looked for here: neither a sweep nor a signal needs them.
        shared_schemas: Vec::new(),
        ..ProbeOptions::of(&settings.convention)
    };
    let obs = observe_once(&settings.databases, &settings.session, &opts, &ProcessEnv).await;
    let snap = build_snapshot(obs, &settings.convention);
    let plan = plan_signal(&snap, selector, action).map_err(|e| CmdError::Usage(e.to_string()))?;
    if !args.json {
        emit(&render_plan(&plan));
    }
    let confirmed = plan.actionable() && !args.dry_run && (args.yes || confirm_on_terminal(&plan));
    let outcomes = if confirmed {
        Some(crate::pg::signal::send(&plan, settings, &ProcessEnv).await)
    } else {
        None
    };
    let mut report = build_signal_report(&plan, outcomes.as_deref());
    report.dry_run = args.dry_run;
    if args.json {
        let mut text = serde_json::to_string_pretty(&report)
            .map_err(|e| CmdError::Io(format!("cannot encode JSON: {e}")))?;
        text.push('\n');
        emit(&text);
    } else {
        emit(&render_report(&report, &plan, args.dry_run));
    }
    Ok(match report.status() {
        SignalStatus::Done => Exit::Ok,
        SignalStatus::Incomplete => Exit::Unreachable,
        SignalStatus::SomeFailed => Exit::SomeFailed,
    })
}

/// Anything but "yes" cancels.
fn confirm_on_terminal(plan: &SignalPlan) -> bool {
    let n = plan.targets.len();
    emit_stderr(&format!(
        "{} {n} session{}? Type 'yes' to proceed: ",
        plan.action.title(),
        if n == 1 { "" } else { "s" }
    ));
    let mut answer = String::new();
    let ok = std::io::stdin().read_line(&mut answer).is_ok()
        && answer.trim_end_matches(['\n', '\r']) == "yes";
    if !ok {
        emit_stderr("cancelled: nothing signalled\n");
    }
    ok
}

/// The plan: whom, with what each blocks, and whom the selection matched but may not touch.
pub fn render_plan(plan: &SignalPlan) -> String {
    let mut out = String::new();
    let what = match &plan.selector {
        Selector::Pid { pid, .. } => format!("pid {pid}"),
        Selector::Session { server, pid } => format!("pid {pid} on {server}"),
        Selector::Invocation {
            namespace,
            worker,
            only_blocking,
        } => format!(
            "run {namespace}{}{}",
            worker
                .as_deref()
                .map(|w| format!(", worker {w}"))
                .unwrap_or_default(),
            if *only_blocking {
                ", only sessions blocking someone"
            } else {
                ""
            }
        ),
    };
    let _ = writeln!(
        out,
        "{}: {what} (read {})",
        plan.action.verb(),
        plan.taken_at.format("%H:%M:%S UTC")
    );
    if !plan.unread.is_empty() {
        let _ = writeln!(
            out,
            "cannot read {}: its sessions are unknown, so nothing will be signalled",
            plan.unread.join(", ")
        );
    }
    if plan.targets.is_empty() {
        let _ = writeln!(out, "no session to {}", plan.action.verb());
    } else {
        let _ = writeln!(
            out,
            "{} {}:",
            plan.action.effect(),
            plural(plan.targets.len(), "session")
        );
        let _ = writeln!(
            out,
            "  {:<22} {:<16} {:>7}  {:<40} {:<22} BLOCKS",
            "SERVER", "DATABASE", "PID", "APPLICATION_NAME", "STATE"
        );
        for t in &plan.targets {
            let blocks = if t.blocks.is_empty() {
                "-".to_string()
            } else {
                t.blocks
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                out,
                "  {:<22} {:<16} {:>7}  {:<40} {:<22} {blocks}",
                t.server,
                t.database,
                t.pid,
                t.application_name,
                t.state.as_deref().unwrap_or("?")
            );
            if t.releases_nothing(plan.action) {
                let _ = writeln!(
                    out,
                    "  {:>7}  {IDLE_CANCEL_NOTE} (pgswarm terminate --pid {})",
                    "^", t.pid
                );
            }
        }
    }
    for r in &plan.refused {
        let _ = writeln!(
            out,
            "  not {}: pid {} {:?} on {}: {}",
            plan.action.past(),
            r.pid,
            r.application_name,
            r.server,
            r.reason
        );
    }
    sanitize_lines(&out).into_owned()
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What happened to each target.
pub fn render_report(r: &SignalReport, plan: &SignalPlan, dry_run: bool) -> String {
    let mut out = String::new();
    if !r.executed {
        if dry_run && plan.actionable() {
            let _ = writeln!(out, "dry run: nothing signalled");
        } else if plan.actionable() {
            let _ = writeln!(out, "nothing signalled (not confirmed)");
        } else if !r.unread.is_empty() {
            let _ = writeln!(
                out,
                "nothing signalled: {} could not be read (exit 3)",
                r.unread.join(", ")
            );
        }
        return sanitize_lines(&out).into_owned();
    }
    let exited = r
        .signalled
        .iter()
        .filter(|e| e.exited == Some(true))
        .count();
    let _ = write!(out, "{}: {}", r.action.past(), r.signalled.len());
    if r.action == Action::Terminate {
        let _ = write!(out, " ({exited} exited)");
    }
    if !r.released_nothing.is_empty() {
        let _ = write!(
            out,
            ", released nothing {} (idle in transaction: use terminate)",
            r.released_nothing.len()
        );
    }
    let _ = writeln!(
        out,
        ", gone {}, skipped {}, failed {}",
        r.gone.len(),
        r.skipped.len(),
        r.failed.len()
    );
    for (e, note, _) in r.notes() {
        let _ = writeln!(out, "  {:>7}  {}  {note}", e.pid, e.server);
    }
    sanitize_lines(&out).into_owned()
}
