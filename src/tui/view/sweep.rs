//! The sweep overlay: the plan being confirmed (what is dropped, what is kept and why), progress,
//! and the outcome.

use super::cells::fmt_bytes_short;
use crate::domain::naming::{parse_schema_name, SchemaName};
use crate::domain::sweep::DatabasePlan;
use crate::domain::sweep::{summary_line, SweepPlan, SweepReport};
use crate::tui::app::{App, SweepView};
use crate::tui::theme::Theme;
use ratatui::text::{Line, Span};
use std::collections::{BTreeMap, BTreeSet};

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
                        " Y (capital) drops exactly {} · any other key cancels",
                        match plan.drop_count() {
                            1 => "this 1 schema".to_string(),
                            n => format!("these {n} schemas"),
                        }
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
    // First a summary per database, grouped by reason; the full list below.
    for d in &plan.databases {
        if d.drop.is_empty() && d.keep.is_empty() {
            continue;
        }
        out.push(Line::from(vec![
            Span::styled(format!(" {}: ", d.name), theme.header()),
            Span::raw(database_summary(app, d)),
        ]));
    }
    out.push(Line::raw(""));
    for d in &plan.databases {
        if d.drop.is_empty() && d.keep.is_empty() {
            continue;
        }
        out.push(Line::styled(format!(" {}", d.name), theme.header()));
        for x in &d.drop {
            out.push(Line::from(vec![
                Span::styled("   drop ", theme.orphaned()),
                Span::raw(format!(
                    "{} ({} tables, {})",
                    x.schema,
                    x.tables,
                    fmt_bytes_short(x.bytes)
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

/// `drop 56 (12.3M) · keep 12 live (2 invocations) · 36 too_young`: one database's plan in a line.
fn database_summary(app: &App, d: &DatabasePlan) -> String {
    let bytes: i64 = d.drop.iter().map(|x| x.bytes).sum();
    let mut parts = vec![format!(
        "drop {} ({})",
        d.drop.len(),
        fmt_bytes_short(bytes)
    )];
    let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in &d.keep {
        reasons
            .entry(k.reason.as_str())
            .or_default()
            .push(&k.schema);
    }
    let prefix = app
        .model
        .snapshot
        .as_ref()
        .map_or("test".to_string(), |s| s.schema_prefix.clone());
    for (i, (reason, schemas)) in reasons.iter().enumerate() {
        let keep = if i == 0 { "keep " } else { "" };
        let runs: BTreeSet<String> = schemas
            .iter()
            .filter_map(|s| match parse_schema_name(&prefix, s) {
                Some(SchemaName::Namespaced { namespace, .. }) => Some(namespace.to_string()),
                _ => None,
            })
            .collect();
        let runs = if *reason == "live" && !runs.is_empty() {
            format!(
                " ({} invocation{})",
                runs.len(),
                if runs.len() == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        };
        parts.push(format!("{keep}{} {reason}{runs}", schemas.len()));
    }
    parts.join(" · ")
}
