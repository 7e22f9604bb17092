//! The schemas pane: every test schema with its status (live, orphaned, legacy, unknown), database,
//! tables and size.

use super::cells::{compact_schema, fit, fmt_bytes_short};
use super::{cut_note, empty, pane_block, window, PaneArea};
use crate::domain::snapshot::{SchemaReport, SchemaStatus, Snapshot};
use crate::tui::app::{App, Pane};
use crate::tui::theme::Theme;
use ratatui::layout::Constraint;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

pub(super) fn draw(
    frame: &mut Frame,
    app: &App,
    snap: &Snapshot,
    theme: &Theme,
    at: PaneArea,
    selected: Option<usize>,
) {
    let area = at.rect;
    let rows = &app.model.schemas;
    let height = at.rows(Pane::Schemas);
    let (start, end) = window(selected, rows.len(), height);
    let block = pane_block(
        app,
        theme,
        Pane::Schemas,
        rows.len(),
        at,
        cut_note(start, end, rows.len()),
    );
    if rows.is_empty() {
        let text = format!("no {}_* schemas", snap.schema_prefix);
        return empty(frame, block, theme, &text, area);
    }
    // Columns sized to what is shown: the database column as wide as its longest name (up to a
    // third of the pane), schema names in full when they fit, compact (`test_p4100…0a0a_gw0`)
    // when not, and an ellipsis wherever something is still cut.
    let shown: Vec<&SchemaReport> = rows[start..end]
        .iter()
        .map(|(_, i)| &snap.schemas[*i])
        .collect();
    let inner = at.inner_width() as usize;
    let longest_db = shown
        .iter()
        .map(|s| s.database.chars().count())
        .max()
        .unwrap_or(8);
    let db_w = longest_db.clamp(8, (inner / 3).max(8));
    let name_w = inner.saturating_sub(8 + db_w + 4 + 6 + 4).max(12);
    let longest_name = shown
        .iter()
        .map(|s| s.schema.chars().count())
        .max()
        .unwrap_or(0);
    let compact = longest_name > name_w;
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let row = schema_row(theme, s, &snap.schema_prefix, compact, db_w, name_w);
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
            Constraint::Length(db_w as u16),
            Constraint::Min(12),
            Constraint::Length(4),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["STATUS", "DATABASE", "SCHEMA", "TBLS", "SIZE"]).style(theme.header()))
    .column_spacing(1)
    .block(block);
    frame.render_widget(table, area);
}

fn schema_row(
    theme: &Theme,
    s: &SchemaReport,
    prefix: &str,
    compact: bool,
    db_w: usize,
    name_w: usize,
) -> Row<'static> {
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
        Cell::from(fit(&s.database, db_w)),
        Cell::from(fit(&name, name_w)),
        Cell::from(s.tables.to_string()),
        Cell::from(size),
    ])
}
