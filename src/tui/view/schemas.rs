//! The schemas pane: every test schema with its status (live, orphaned, legacy, unknown), database,
//! tables and size.

use super::cells::{compact_schema, fmt_bytes_short};
use super::{empty, pane_block, window};
use crate::domain::snapshot::{SchemaReport, SchemaStatus, Snapshot};
use crate::tui::app::{App, Pane};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

/// Full generated-token schema names need about this many columns with the other fields.
const FULL_NAMES: u16 = 72;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    area: Rect,
    selected: Option<usize>,
) {
    let rows = &app.model.schemas;
    let block = pane_block(app, theme, Pane::Schemas, rows.len());
    if rows.is_empty() {
        let text = format!("no {}_* schemas", snap.schema_prefix);
        return empty(frame, block, theme, &text, area);
    }
    let height = area.height.saturating_sub(3) as usize;
    let (start, end) = window(selected, rows.len(), height);
    let compact = area.width < FULL_NAMES;
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, (_, idx))| {
            let row = schema_row(theme, &snap.schemas[*idx], &snap.schema_prefix, compact);
            if Some(start + i) == selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Min(20),
            Constraint::Length(4),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["STATUS", "DATABASE", "SCHEMA", "TBLS", "SIZE"]).style(theme.header()))
    .column_spacing(1)
    .block(block);
    frame.render_widget(table, area);
}

fn schema_row(theme: &Theme, s: &SchemaReport, prefix: &str, compact: bool) -> Row<'static> {
    let (word, style) = match s.status {
        SchemaStatus::Live => ("live", theme.live()),
        SchemaStatus::Orphaned => ("orphaned", theme.orphaned()),
        SchemaStatus::Legacy => ("legacy", theme.legacy()),
        SchemaStatus::Unknown => ("unknown", theme.dim()),
    };
    let size = if s.bytes_exact {
        fmt_bytes_short(s.bytes)
    } else {
        format!("~{}", fmt_bytes_short(s.bytes))
    };
    let name = if compact {
        compact_schema(&s.schema, prefix)
    } else {
        s.schema.clone()
    };
    Row::new(vec![
        Cell::from(Span::styled(word, style)),
        Cell::from(s.database.clone()),
        Cell::from(name),
        Cell::from(s.tables.to_string()),
        Cell::from(size),
    ])
}
