//! The sweep overlay: the plan being confirmed (what is dropped, what is kept and why), progress,
//! and the outcome.

use crate::domain::format::fmt_bytes;
use crate::domain::sweep::{summary_line, SweepPlan, SweepReport};
use crate::tui::app::{App, SweepView};
use crate::tui::theme::Theme;
use ratatui::text::{Line, Span};

pub(super) fn sweep_lines(app: &App, theme: &Theme, view: &SweepView) -> Vec<Line<'static>> {
    match view {
        SweepView::Disabled => vec![Line::styled(
            if app.replay.is_some() {
                " replaying a recording: nothing here touches a database, the sweep is disabled"
                    .to_string()
            } else {
                format!(" {}: the sweep is disabled", app.read_only_reason())
            },
            theme.warning(),
        )],
        SweepView::Planning => vec![Line::raw(
            " planning: reading sessions and schemas from every configured database…",
        )],
        SweepView::Plan(plan) => {
            let mut out = plan_lines(app, theme, plan);
            out.push(Line::raw(""));
            if plan.active_detection_complete && plan.drop_count() > 0 {
                out.push(Line::styled(
                    format!(
                        " Y (capital) drops exactly these {} schemas · any other key cancels",
                        plan.drop_count()
                    ),
                    theme.bad(),
                ));
            } else {
                out.push(Line::styled(
                    " nothing to drop · any key closes",
                    theme.dim(),
                ));
            }
            out
        }
        SweepView::Running {
            plan,
            done,
            current,
        } => {
            let mut out = vec![Line::styled(
                format!(" dropping {done}/{} …", plan.drop_count()),
                theme.header(),
            )];
            if let Some(c) = current {
                out.push(Line::raw(format!("   {c}")));
            }
            out
        }
        SweepView::Finished(report) => finished_lines(theme, report),
    }
}

fn plan_lines(app: &App, theme: &Theme, plan: &SweepPlan) -> Vec<Line<'static>> {
    let age = (app.now - plan.planned_at).num_seconds().max(0);
    let mut out = vec![Line::from(vec![
        Span::styled(
            format!(
                " plan made {} ({age} s ago) · live set ",
                plan.planned_at
                    .with_timezone(&app.utc_offset)
                    .format("%H:%M:%S")
            ),
            theme.header(),
        ),
        if plan.active_detection_complete {
            Span::styled("complete", theme.ok())
        } else {
            Span::styled("INCOMPLETE: nothing will be dropped", theme.bad())
        },
    ])];
    for e in &plan.errors {
        out.push(Line::styled(
            format!("   {}: {}", e.database, e.error),
            theme.bad(),
        ));
    }
    for d in &plan.databases {
        if d.drop.is_empty() && d.keep.is_empty() {
            continue;
        }
        out.push(Line::styled(format!(" {}", d.name), theme.header()));
        for x in &d.drop {
            out.push(Line::from(vec![
                Span::styled("   drop ", theme.orphaned()),
                Span::raw(format!(
                    "{} ({} tables, ~{})",
                    x.schema,
                    x.tables,
                    fmt_bytes(x.bytes)
                )),
            ]));
        }
        for k in &d.keep {
            out.push(Line::from(vec![
                Span::styled("   keep ", theme.dim()),
                Span::raw(format!("{} ", k.schema)),
                Span::styled(k.reason.as_str(), theme.dim()),
            ]));
        }
    }
    out
}

fn finished_lines(theme: &Theme, report: &SweepReport) -> Vec<Line<'static>> {
    let mut out = vec![Line::styled(
        format!(" {}", summary_line(report)),
        theme.header(),
    )];
    for d in &report.databases {
        for f in &d.failed {
            out.push(Line::styled(
                format!(
                    "   FAILED {}.{}: {} ({})",
                    d.name,
                    f.schema,
                    f.error,
                    f.sqlstate.as_deref().unwrap_or("-")
                ),
                theme.bad(),
            ));
        }
    }
    for e in &report.errors {
        out.push(Line::styled(
            format!("   {}: {}", e.database, e.error),
            theme.bad(),
        ));
    }
    out.push(Line::styled(" any key closes", theme.dim()));
    out
}
