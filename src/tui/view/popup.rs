//! Overlays drawn over the panes, and the help overlay generated from the key map.

use crate::tui::app::App;
use crate::tui::keys::{writes, Action, Footer, BINDINGS};
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// A centred box, at most 100 columns wide, that scrolls (j/k, PgUp/PgDn, g/G) instead of cutting:
/// the last `pinned` lines (what the keys do) stay at the bottom, and when the body does not fit,
/// the bottom border says which lines are shown.
pub(super) fn draw_popup(
    frame: &mut Frame,
    app: &App,
    theme: &Theme,
    title: &str,
    mut body: Vec<Line<'static>>,
    pinned: usize,
) {
    let area = frame.area();
    let footer = body.split_off(body.len().saturating_sub(pinned));
    let w = (area.width.saturating_sub(4)).min(100);
    let inner_w = w.saturating_sub(2);
    let wrap = Wrap { trim: false };
    let body_par = Paragraph::new(body).wrap(wrap);
    let foot_par = Paragraph::new(footer).wrap(wrap);
    let body_lines = body_par.line_count(inner_w);
    let foot_lines = if pinned == 0 {
        0
    } else {
        foot_par.line_count(inner_w)
    };
    let h = (area.height.saturating_sub(2)).min((body_lines + foot_lines) as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let visible = (h as usize).saturating_sub(2 + foot_lines);
    let max = body_lines.saturating_sub(visible);
    app.overlay_scroll_max.set(max);
    let top = app.overlay_scroll.min(max);
    let mut block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme.focused_border())
        .title(Span::styled(
            format!(" {title} · Esc closes "),
            theme.title(),
        ));
    if max > 0 {
        block = block.title_bottom(Span::styled(
            format!(
                " lines {}–{} of {body_lines} · j/k PgUp/PgDn g/G scroll ",
                top + 1,
                (top + visible).min(body_lines)
            ),
            theme.warning(),
        ));
    }
    frame.render_widget(Clear, popup);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let [body_area, foot_area] = ratatui::layout::Layout::vertical([
        ratatui::layout::Constraint::Fill(1),
        ratatui::layout::Constraint::Length(foot_lines as u16),
    ])
    .areas(inner);
    frame.render_widget(body_par.scroll((top as u16, 0)), body_area);
    frame.render_widget(foot_par, foot_area);
}

/// The help overlay: the keys of the current mode (from the key map, so it cannot drift from what
/// the keys do), then what every marker and column on screen means.
pub(super) fn help_lines(theme: &Theme, read_only: bool, mode: Footer) -> Vec<Line<'static>> {
    let mut out: Vec<Line> = vec![Line::styled(" KEYS", theme.header())];
    out.extend(
        BINDINGS
            .iter()
            .filter(|b| acts_in(b.action, mode) && !(read_only && writes(b.action)))
            .map(|b| {
                Line::from(vec![
                    Span::styled(format!(" {:>6}  ", b.label), theme.header()),
                    Span::raw(b.help),
                ])
            }),
    );
    out.push(Line::raw(""));
    out.push(Line::styled(" MARKERS", theme.header()));
    for (marker, style, meaning) in [
        (
            "!!",
            theme.collision(),
            "a collision: a session blocked by another invocation",
        ),
        ("●", theme.live(), "invocation with live sessions"),
        (
            "○",
            theme.dim(),
            "invocation without sessions (its schemas may be stale)",
        ),
        (
            "*",
            Style::new(),
            "forced namespace (debug run): its age is unknown",
        ),
        (
            "■",
            theme.bad(),
            "root blocker of a lock tree; └ what waits behind it",
        ),
        (
            "IDLE IN TX",
            theme.idle_in_transaction(),
            "a root idle inside its transaction",
        ),
        (
            "~",
            Style::new(),
            "estimated size (exact sizes follow from the background sizer)",
        ),
        (
            "✓ ✗ ⟳ ⚠",
            Style::new(),
            "database read / unreachable / stale (last reading) / read failed",
        ),
    ] {
        out.push(Line::from(vec![
            Span::styled(format!(" {marker:>10}  "), style),
            Span::raw(meaning),
        ]));
    }
    out.push(Line::raw(""));
    out.push(Line::styled(" COLUMNS", theme.header()));
    for (column, meaning) in [
        ("WRK", "workers (xdist gwN) seen in the invocation"),
        ("SESS", "its sessions now, on every database"),
        ("DBS", "databases it has sessions or schemas in"),
        ("BLKD / BLKG", "its sessions blocked / blocking others"),
        ("SCH", "its test schemas"),
        (
            "STATUS",
            "schema: live (its run is connected), orphaned (stale), legacy, unknown",
        ),
        ("TBLS, SIZE", "tables in the schema, total size"),
        (
            "OUTCOME",
            "how a lock wait ended: acquired, gave up, blocker gone, waiter gone",
        ),
        (
            "WAITED, BEHIND",
            "how long it waited; the run it waited behind",
        ),
    ] {
        out.push(Line::from(vec![
            Span::styled(format!(" {column:>14}  "), theme.header()),
            Span::raw(meaning),
        ]));
    }
    out
}

/// Whether a key does something in this mode (the help lists only those).
fn acts_in(action: Action, mode: Footer) -> bool {
    use Action::*;
    let replay_only = matches!(
        action,
        PlayPause | StepForward | StepBack | SeekForward | SeekBack
    );
    let live_only = matches!(action, Pause | Refresh | Sweep | Cancel | Terminate);
    match mode {
        Footer::Live => !replay_only,
        Footer::Replay => !live_only,
    }
}
