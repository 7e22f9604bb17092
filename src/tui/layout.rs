//! Pane heights by priority: a pure function from how many rows each pane has, the body's size and
//! the focus to the height of every band on screen. It lives apart from the drawing so that its
//! promises can be checked for every size, not only at the few sizes the render snapshots show:
//!
//! - every pane with content gets at least one row of it, and the focused pane at least
//!   [`FOCUS_MIN_ROWS`] (or all its rows, when it has fewer), whenever the body has
//!   [`BODY_MIN`] rows;
//! - lock trees come first (all their rows before the others grow), then the newest incidents,
//!   the focused pane, the invocations; schemas take what is left;
//! - the heights add up to the body exactly.
//!
//! Why this order: the dashboard exists to answer "who blocks my run?", and a backlog of stale
//! schemas is the least urgent thing on screen (the sweep plan lists every one of them anyway).

use crate::tui::app::Pane;

/// The focused pane never shows fewer content rows than this (unless it has fewer).
pub const FOCUS_MIN_ROWS: u16 = 3;
/// From this many body rows every promise of this module holds. An 80x24 terminal with one server
/// line, two lines of database cells, one notice and the footer has 18.
pub const BODY_MIN: u16 = 14;
/// From this size the first pane and Schemas sit side by side above full-width lock trees.
pub const WIDE_MIN_WIDTH: u16 = 120;
pub const WIDE_MIN_HEIGHT: u16 = 26;

/// How many rows each pane would like to show (its content, after the filter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Content {
    /// The first pane: Invocations, or Sessions when swapped in (`first` says which).
    pub first: usize,
    pub schemas: usize,
    pub locks: usize,
    pub incidents: usize,
}

/// Bands stacked from top to bottom; the panes of a band sit side by side and share its height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub wide: bool,
    pub bands: Vec<(Vec<Pane>, u16)>,
}

impl Plan {
    /// The height of the band `pane` is drawn in (0 when it is not drawn).
    pub fn height_of(&self, pane: Pane) -> u16 {
        self.bands
            .iter()
            .find(|(p, _)| p.contains(&pane))
            .map_or(0, |b| b.1)
    }
}

/// Rows a pane spends on its frame and column titles. Stacked panes have only a top border (the
/// side borders would cost two columns at 80, the bottom one a row each).
pub fn chrome(pane: Pane, wide: bool) -> u16 {
    let frame = if wide { 2 } else { 1 };
    match pane {
        // The lock trees have no column titles.
        Pane::Locks => frame,
        _ => frame + 1,
    }
}

/// One band in the making: what it holds and what it wants.
struct Band {
    panes: Vec<Pane>,
    chrome: u16,
    /// Rows its urgent content wants (for the top band: the first pane's).
    rows: u16,
    /// Rows it could show at most (for the top band: the longer of its two panes).
    all: u16,
    focused: bool,
    height: u16,
}

impl Band {
    fn has(&self, pane: Pane) -> bool {
        self.panes.contains(&pane)
    }
}

/// Gives `band` up to `target` rows in total, from what is left.
fn grant(band: &mut Band, target: u16, left: &mut u16) {
    let add = target.saturating_sub(band.height).min(*left);
    band.height += add;
    *left -= add;
}

/// The heights of every band for a body of `width` x `height`, in priority order (see the module
/// documentation). `first` is the pane drawn first (Invocations or Sessions).
pub fn plan_layout(content: Content, width: u16, height: u16, focus: Pane, first: Pane) -> Plan {
    let wide = width >= WIDE_MIN_WIDTH && height >= WIDE_MIN_HEIGHT;
    let rows = |n: usize| u16::try_from(n).unwrap_or(u16::MAX / 4);
    let band = |panes: Vec<Pane>, urgent: usize, all: usize| {
        let chrome = chrome(panes[0], wide);
        Band {
            focused: panes.contains(&focus),
            chrome,
            rows: rows(urgent),
            all: rows(all),
            panes,
            height: 0,
        }
    };
    let mut bands = if wide {
        vec![
            band(
                vec![first, Pane::Schemas],
                if focus == Pane::Schemas {
                    content.schemas
                } else {
                    content.first
                },
                content.first.max(content.schemas),
            ),
            band(vec![Pane::Locks], content.locks, content.locks),
            band(vec![Pane::Incidents], content.incidents, content.incidents),
        ]
    } else {
        vec![
            band(vec![first], content.first, content.first),
            band(vec![Pane::Schemas], content.schemas, content.schemas),
            band(vec![Pane::Locks], content.locks, content.locks),
            band(vec![Pane::Incidents], content.incidents, content.incidents),
        ]
    };
    let mut left = height;
    let idx = |bands: &[Band], p: Pane| {
        bands
            .iter()
            .position(|b| b.has(p))
            .expect("every pane has a band")
    };
    // An empty pane says so in one line; an empty, unfocused Incidents pane folds away when the
    // stacked body is short (Tab still shows it).
    // Its one line takes the place of the column titles.
    let empty = |b: &Band| {
        if b.has(Pane::Incidents) && !wide && !b.focused {
            0
        } else {
            chrome(Pane::Locks, wide) + 1
        }
    };
    // 1. The focused pane: a few rows, or its "nothing here" line.
    for b in bands.iter_mut().filter(|b| b.focused) {
        let target = if b.all == 0 {
            empty(b)
        } else {
            b.chrome + b.rows.clamp(1, FOCUS_MIN_ROWS)
        };
        grant(b, target, &mut left);
    }
    // 2. One row of every pane with content, most urgent first.
    let urgency = [Pane::Locks, Pane::Incidents, first, Pane::Schemas];
    for p in urgency {
        let i = idx(&bands, p);
        let b = &mut bands[i];
        if b.rows > 0 || (b.has(Pane::Schemas) && content.schemas > 0) {
            grant(b, b.chrome + 1, &mut left);
        }
    }
    // 3. Whole lock trees.
    let i = idx(&bands, Pane::Locks);
    let target = bands[i].chrome + bands[i].rows;
    grant(&mut bands[i], target, &mut left);
    // 4. Empty panes say that they are empty.
    for b in bands.iter_mut().filter(|b| b.all == 0) {
        let target = empty(b);
        grant(b, target, &mut left);
    }
    // 5. The newest incidents, the focused pane in full, the invocations (or sessions).
    let i = idx(&bands, Pane::Incidents);
    let target = bands[i].chrome + bands[i].rows.min(FOCUS_MIN_ROWS);
    grant(&mut bands[i], target, &mut left);
    for b in bands.iter_mut().filter(|b| b.focused) {
        let target = b.chrome + b.rows;
        grant(b, target, &mut left);
    }
    let i = idx(&bands, first);
    let target = bands[i].chrome + bands[i].rows;
    grant(&mut bands[i], target, &mut left);
    // 6. Incidents up to a third of the body, then schemas take what is left.
    let i = idx(&bands, Pane::Incidents);
    let target = (bands[i].chrome + bands[i].rows).min((height / 3).max(bands[i].height));
    grant(&mut bands[i], target, &mut left);
    for b in bands.iter_mut() {
        let target = b.chrome + b.all;
        grant(b, target, &mut left);
    }
    // 7. Room to spare goes to the focused pane (blank rows there cost nothing to read).
    if left > 0 {
        let i = bands.iter().position(|b| b.focused).unwrap_or(0);
        bands[i].height += left;
    }
    Plan {
        wide,
        bands: bands.into_iter().map(|b| (b.panes, b.height)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PANES: [Pane; 4] = [
        Pane::Invocations,
        Pane::Schemas,
        Pane::Locks,
        Pane::Incidents,
    ];

    fn rows_of(c: &Content, p: Pane) -> usize {
        match p {
            Pane::Schemas => c.schemas,
            Pane::Locks => c.locks,
            Pane::Incidents => c.incidents,
            _ => c.first,
        }
    }

    /// Content rows the pane shows: its band's height less its chrome.
    fn shown(plan: &Plan, p: Pane) -> u16 {
        plan.height_of(p).saturating_sub(chrome(p, plan.wide))
    }

    proptest! {
        #[test]
        fn every_pane_with_content_shows_rows_and_heights_add_up(
            first in 0usize..300, schemas in 0usize..300, locks in 0usize..300,
            incidents in 0usize..300, width in 60u16..260, height in BODY_MIN..80,
            focus in 0usize..4,
        ) {
            let content = Content { first, schemas, locks, incidents };
            let focus = PANES[focus];
            let plan = plan_layout(content, width, height, focus, Pane::Invocations);
            let sum: u16 = plan.bands.iter().map(|b| b.1).sum();
            prop_assert_eq!(sum, height, "{:?}", plan);
            for p in PANES {
                if rows_of(&content, p) > 0 {
                    prop_assert!(shown(&plan, p) >= 1, "{:?} has no row: {:?}", p, plan);
                }
            }
            if rows_of(&content, focus) == 0 {
                // An empty pane's one line ("nothing …") takes the place of its column titles.
                prop_assert!(
                    plan.height_of(focus) > chrome(Pane::Locks, plan.wide),
                    "empty focused {:?} says so: {:?}", focus, plan
                );
            } else {
                let want = (rows_of(&content, focus) as u16).clamp(1, FOCUS_MIN_ROWS);
                prop_assert!(shown(&plan, focus) >= want, "focused {:?}: {:?}", focus, plan);
            }
            // Lock trees are never cut while schemas have more than their one row.
            if shown(&plan, Pane::Locks) < locks as u16 && !plan.wide {
                let cap = if focus == Pane::Schemas { FOCUS_MIN_ROWS } else { 1 };
                prop_assert!(shown(&plan, Pane::Schemas) <= cap, "{:?}", plan);
            }
        }
    }

    #[test]
    fn a_schema_backlog_gives_way_to_lock_trees_and_incidents() {
        // The 160x45: 37 schemas took 20 rows while Lock trees got 7.
        let content = Content {
            first: 5,
            schemas: 56,
            locks: 12,
            incidents: 4,
        };
        let plan = plan_layout(content, 160, 38, Pane::Invocations, Pane::Invocations);
        assert!(plan.wide);
        assert_eq!(shown(&plan, Pane::Locks), 12, "{plan:?}");
        assert_eq!(shown(&plan, Pane::Incidents), 4, "{plan:?}");
        assert!(shown(&plan, Pane::Invocations) >= 5, "{plan:?}");
    }

    #[test]
    fn at_80x24_the_focused_pane_keeps_its_rows() {
        // The 80x24: the focused Invocations pane shrank to its header.
        let content = Content {
            first: 5,
            schemas: 56,
            locks: 7,
            incidents: 3,
        };
        let plan = plan_layout(content, 80, 18, Pane::Invocations, Pane::Invocations);
        assert!(!plan.wide);
        assert!(
            shown(&plan, Pane::Invocations) >= FOCUS_MIN_ROWS,
            "{plan:?}"
        );
        assert!(shown(&plan, Pane::Locks) >= 4, "{plan:?}");
        assert!(shown(&plan, Pane::Incidents) >= 1, "{plan:?}");
        assert!(shown(&plan, Pane::Schemas) >= 1, "{plan:?}");
    }
}
