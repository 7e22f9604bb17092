//! How values read as text: ages, sizes, session names, query text on one line. Pure, shared by the
//! text report, the sweep output and the dashboard, so a number or a name reads the same everywhere,
//! and everything from the database passes the sanitiser (`domain::text`) on its way.

use crate::domain::snapshot::{LabelKind, SessionReport};
use crate::domain::text::sanitize as t;

/// `42.0s`, `4m05s`, `2h03m`, `3d04h`, `1118d`: at most 6 characters up to 270 years, each unit
/// whole (an AGE column of 7 never cuts one).
pub fn fmt_age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        // At most 6 characters ("99d23h"): a 7-column AGE cell never cuts a unit.
        86_400..=8_639_999 => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
        // From 100 days the hours say nothing: whole days only ("1118d", not "1118d05h").
        _ => format!("{}d", s / 86_400),
    }
}

/// `1 session`, `2 sessions`, `0 sessions`: a count with its noun in the right number.
pub fn fmt_count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `512 B`, `8.0 KiB`, `1.2 MiB`.
pub fn fmt_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.max(0) as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// How a session is named in reports: `namespace/worker[_suffix]`, else its application name.
/// Safe to print: whatever the database said, it is one line with no control characters.
pub fn session_label(s: &SessionReport) -> String {
    t(&raw_session_label(s)).into_owned()
}

fn raw_session_label(s: &SessionReport) -> String {
    match s.label {
        LabelKind::Labeled => {
            let mut l = format!(
                "{}/{}",
                s.namespace.as_deref().unwrap_or("?"),
                s.worker.as_deref().unwrap_or("?")
            );
            if let Some(suffix) = &s.suffix {
                l.push('_');
                l.push_str(suffix);
                if s.suffix_maybe_truncated {
                    l.push('…');
                }
            }
            l
        }
        LabelKind::Unattributed => format!("{:?} (unattributed)", s.application_name),
        LabelKind::Unlabeled if s.application_name.is_empty() => "(no application_name)".into(),
        LabelKind::Unlabeled => format!("{:?} (unlabeled)", s.application_name),
    }
}

/// Query text on one line, cut to `max` characters, safe to print.
pub fn one_line(q: &str, max: usize) -> String {
    let flat: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = t(&flat).into_owned();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// `12ms`: a duration rounded to the nearest millisecond.
pub fn fmt_ms(d: std::time::Duration) -> String {
    format!("{}ms", (d.as_micros() + 500) / 1000)
}

/// One server's health in words, as the report and the dashboard say it:
/// `db1:5432 · 105/200 connections · oldest transaction 3m12s (p4100…/gw0, pid 123) · 2 idle in
/// transaction · lock table 2513/6400 (39%)`.
pub fn server_health(s: &crate::domain::snapshot::ServerReport) -> String {
    let mut parts = vec![s.server.clone()];
    parts.push(match s.max_connections {
        Some(m) => format!("{}/{m} connections", s.connections),
        None => format!("{} connections", s.connections),
    });
    match (s.oldest_xact_age_s, s.oldest_xact_pid) {
        // A prepared transaction has no session: its owner names its gid.
        (Some(age), Some(0)) => parts.push(format!(
            "oldest transaction {} ({})",
            fmt_age(age),
            s.oldest_xact_owner
                .as_deref()
                .unwrap_or("prepared transaction")
        )),
        (Some(age), Some(pid)) => parts.push(format!(
            "oldest transaction {} ({}, pid {pid})",
            fmt_age(age),
            s.oldest_xact_owner.as_deref().unwrap_or("?")
        )),
        _ => {}
    }
    if !s.prepared.is_empty() {
        parts.push(format!(
            "{} prepared transaction{}",
            s.prepared.len(),
            if s.prepared.len() == 1 { "" } else { "s" }
        ));
    }
    if s.idle_in_transaction > 0 {
        parts.push(format!("{} idle in transaction", s.idle_in_transaction));
    }
    match (s.lock_table_used, s.lock_table_capacity, s.lock_table_fill) {
        (Some(u), Some(c), Some(f)) => parts.push(format!(
            "lock table {u}/{c} ({:.0}%){}",
            f * 100.0,
            if s.lock_table_warning {
                " NEARLY FULL"
            } else {
                ""
            }
        )),
        _ => parts.push("lock table not read yet".into()),
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes() {
        assert_eq!(fmt_age(4.26), "4.3s");
        assert_eq!(fmt_age(245.0), "4m05s");
        assert_eq!(fmt_age(7380.0), "2h03m");
        assert_eq!(fmt_age(f64::NAN), "?");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(fmt_ms(std::time::Duration::from_micros(12_499)), "12ms");
        assert_eq!(fmt_ms(std::time::Duration::from_micros(12_500)), "13ms");
    }

    /// Issue 27: "1 session", "2 sessions" wherever counts are printed.
    #[test]
    fn counts_take_the_right_number() {
        assert_eq!(fmt_count(1, "session", "sessions"), "1 session");
        assert_eq!(fmt_count(0, "session", "sessions"), "0 sessions");
        assert_eq!(fmt_count(2, "lock wait", "lock waits"), "2 lock waits");
    }

    /// Issue 27: `1118d00` was seen in a 7-column AGE cell (`1118d00h` cut).
    #[test]
    fn long_ages_keep_whole_units_and_fit_six_characters() {
        let day = 86_400.0;
        assert_eq!(fmt_age(3.0 * day + 4.0 * 3600.0), "3d04h");
        assert_eq!(fmt_age(99.0 * day + 23.0 * 3600.0 + 59.0), "99d23h");
        assert_eq!(fmt_age(100.0 * day), "100d");
        assert_eq!(fmt_age(1118.0 * day + 5.0 * 3600.0), "1118d");
        let mut secs = 0.5;
        while secs < 8e9 {
            let a = fmt_age(secs);
            assert!(a.chars().count() <= 6, "{secs}: {a}");
            // Each unit letter is preceded by digits and ends the number: nothing is cut.
            assert!(a.ends_with(['s', 'm', 'h', 'd']), "{secs}: {a}");
            secs *= 1.37;
        }
    }
}
