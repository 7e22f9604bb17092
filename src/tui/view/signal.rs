//! The cancel / terminate overlay: exactly whom the plan signals (server, database, pid, label,
//! state, whom each blocks), whom it will not touch and why, then what happened to each.

use crate::domain::signal::{Selector, SignalPlan, SignalReport};
use crate::tui::app::{App, SignalView};
use crate::tui::theme::Theme;
use ratatui::text::{Line, Span};

pub(super) fn signal_lines(app: &App, theme: &Theme, view: &SignalView) -> Vec<Line<'static>> {
    match view {
        SignalView::Disabled => vec![Line::styled(
            if app.replay.is_some() {
                " replaying a recording: nothing here touches a database; cancel and terminate are disabled"
                    .to_string()
            } else {
                format!(
                    " {}: cancel and terminate are disabled",
                    app.read_only_reason()
                )
            },
            theme.warning(),
        )],
        SignalView::Nothing(why) => vec![
            Line::styled(format!(" {why}"), theme.warning()),
            Line::raw(""),
            Line::styled(" any key closes", theme.dim()),
        ],
        SignalView::Plan(plan) => {
            let mut out = plan_lines(theme, plan);
            out.push(Line::raw(""));
            // Two short lines (the last two are never cut, and must not wrap at 80 columns).
            let terminate = if plan.releasing_nothing().is_empty() {
                ""
            } else {
                " K: terminate instead ·"
            };
            let keys = if matches!(plan.selector, Selector::Invocation { .. }) {
                format!("{terminate} b: only those blocking someone (toggle) · other keys cancel")
            } else {
                format!("{terminate} any other key cancels")
            };
            if plan.actionable() {
                out.push(Line::styled(
                    format!(
                        " Y (capital): {} exactly {}{}",
                        plan.action.verb(),
                        if plan.targets.len() == 1 {
                            "this "
                        } else {
                            "these "
                        },
                        plural(plan.targets.len())
                    ),
                    theme.bad(),
                ));
            } else {
                out.push(Line::styled(
                    format!(" nothing to {}", plan.action.verb()),
                    theme.dim(),
                ));
            }
            out.push(Line::styled(keys, theme.dim()));
            out
        }
        SignalView::Running(plan) => vec![Line::styled(
            format!(
                " sending {} to {} …",
                plan.action.verb(),
                plural(plan.targets.len())
            ),
            theme.header(),
        )],
        SignalView::Finished(report) => finished_lines(theme, report),
    }
}

fn plural(n: usize) -> String {
    format!("{n} session{}", if n == 1 { "" } else { "s" })
}

fn plan_lines(theme: &Theme, plan: &SignalPlan) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let what = match &plan.selector {
        Selector::Pid { pid, .. } | Selector::Session { pid, .. } => format!("session {pid}"),
        Selector::Invocation {
            namespace,
            only_blocking,
            ..
        } => format!(
            "invocation {namespace}{}",
            if *only_blocking {
                ", only sessions blocking someone"
            } else {
                ", all its sessions on every server"
            }
        ),
    };
    // Lines stay short: the overlay is at most 100 columns and must not wrap away its last line.
    out.push(Line::styled(
        format!(" {}:", plan.action.effect()),
        theme.header(),
    ));
    out.push(Line::raw(format!(" {what}")));
    if !plan.unread.is_empty() {
        out.push(Line::styled(
            format!(
                " cannot read {}: its sessions are unknown, so nothing will be sent",
                plan.unread.join(", ")
            ),
            theme.bad(),
        ));
    }
    if plan.targets.is_empty() {
        out.push(Line::styled(" no session to signal", theme.dim()));
    }
    for t in &plan.targets {
        let blocks = if t.blocks.is_empty() {
            String::new()
        } else {
            let pids: Vec<String> = t.blocks.iter().map(|p| p.to_string()).collect();
            format!("  blocks {}", pids.join(","))
        };
        out.push(Line::from(vec![
            Span::styled(format!(" {:>7}  ", t.pid), theme.header()),
            Span::raw(format!(
                "{}  {}",
                t.application_name,
                t.state.as_deref().unwrap_or("?")
            )),
        ]));
        out.push(Line::from(vec![
            Span::raw(format!("          {} [{}]", t.server, t.database)),
            Span::styled(blocks, theme.blocked()),
        ]));
        if let Some(q) = &t.query {
            out.push(Line::styled(
                format!("          {}", crate::domain::format::one_line(q, 80)),
                theme.dim(),
            ));
        }
        if t.releases_nothing(plan.action) {
            out.push(Line::styled(
                "          idle in transaction: a cancel releases nothing (no statement runs;"
                    .to_string(),
                theme.warning(),
            ));
            out.push(Line::styled(
                "          its locks stay until the transaction ends): K terminates it".to_string(),
                theme.warning(),
            ));
        }
    }
    for r in &plan.refused {
        out.push(Line::styled(
            format!(
                " not {}: {} {:?}: {}",
                plan.action.past(),
                r.pid,
                r.application_name,
                r.reason
            ),
            theme.dim(),
        ));
    }
    out
}

fn finished_lines(theme: &Theme, r: &SignalReport) -> Vec<Line<'static>> {
    let mut out = vec![Line::styled(
        format!(
            " {}: {} · gone {} · skipped {} · failed {}",
            r.action.past(),
            r.signalled.len(),
            r.gone.len(),
            r.skipped.len(),
            r.failed.len()
        ),
        if r.failed.is_empty() {
            theme.ok()
        } else {
            theme.bad()
        },
    )];
    for (e, note, failed) in r.notes() {
        let text = format!(
            " {:>7} {} {:?}: {note}",
            e.pid, e.server, e.application_name
        );
        out.push(if failed {
            Line::styled(text, theme.bad())
        } else {
            Line::raw(text)
        });
    }
    out.push(Line::raw(""));
    out.push(Line::styled(" any key closes", theme.dim()));
    out
}
