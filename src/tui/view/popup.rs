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
    let hang = |lines: Vec<Line<'static>>| -> Vec<Line<'static>> {
        lines
            .into_iter()
            .flat_map(|l| wrap_hanging(l, inner_w as usize))
            .collect()
    };
    let (body, footer) = (hang(body), hang(footer));
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

/// Wraps `line` to `width` columns at spaces, each continuation indented under the line's text: a
/// line that starts with a label span (`" {key:>6}  "`, `" {name:<18}"`: more than one span, the first
/// ending in a space) continues under the second span, any other under its own leading spaces. A
/// word longer than the room left is cut. Styles stay with their text. When the indent would leave
/// fewer than 10 columns, continuations start at the left edge.
pub(super) fn wrap_hanging(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    if width == 0 || line.width() <= width {
        return vec![line];
    }
    let indent = hanging_indent(&line, width);
    let pieces = pieces_of(&line);
    let width_of = |s: &str| Span::raw(s.to_string()).width();
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    let mut continuation = false;
    let push_line = |spans: &mut Vec<Span<'static>>, out: &mut Vec<Line<'static>>| {
        out.push(Line::from(std::mem::take(spans)).style(line.style));
    };
    for (text, style) in pieces {
        let is_space = text.starts_with(' ');
        let w = width_of(&text);
        if used + w <= width {
            spans.push(Span::styled(text, style));
            used += w;
            continue;
        }
        if is_space {
            // A break: the spaces go with it.
            push_line(&mut spans, &mut out);
            spans.push(Span::raw(" ".repeat(indent)));
            used = indent;
            continuation = true;
            continue;
        }
        if used > (if continuation { indent } else { 0 }) {
            push_line(&mut spans, &mut out);
            spans.push(Span::raw(" ".repeat(indent)));
            used = indent;
            continuation = true;
        }
        // The word itself, cut where it does not fit on a line of its own.
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let room = width.saturating_sub(used).max(1);
            let mut cut = 0;
            let mut cut_w = 0;
            for (i, c) in rest.char_indices() {
                let cw = width_of(&c.to_string());
                if cut_w + cw > room && cut > 0 {
                    break;
                }
                cut = i + c.len_utf8();
                cut_w += cw;
            }
            spans.push(Span::styled(rest[..cut].to_string(), style));
            used += cut_w;
            rest = &rest[cut..];
            if !rest.is_empty() {
                push_line(&mut spans, &mut out);
                spans.push(Span::raw(" ".repeat(indent)));
                used = indent;
                continuation = true;
            }
        }
    }
    if !spans.is_empty() {
        push_line(&mut spans, &mut out);
    }
    out
}

/// Where continuations of `line` start: under the second span of a labelled line, else under the
/// line's leading spaces; 0 when that would leave fewer than 10 columns.
fn hanging_indent(line: &Line<'static>, width: usize) -> usize {
    let first = line.spans.first().map(|s| s.content.to_string());
    let indent = match first {
        Some(f) if line.spans.len() > 1 && f.ends_with(' ') => Span::raw(f).width(),
        _ => {
            let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
            text.len() - text.trim_start_matches(' ').len()
        }
    };
    if width.saturating_sub(indent) < 10 {
        0
    } else {
        indent
    }
}

/// `line` as runs of spaces and words, each with its span's style.
fn pieces_of(line: &Line<'static>) -> Vec<(String, Style)> {
    let mut pieces = Vec::new();
    for span in &line.spans {
        let mut cur = String::new();
        for c in span.content.chars() {
            if !cur.is_empty() && (c == ' ') != cur.ends_with(' ') {
                pieces.push((std::mem::take(&mut cur), span.style));
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            pieces.push((cur, span.style));
        }
    }
    pieces
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
