//! Recordings: one `snapshot --json` document per line (JSON Lines), written by `pgswarm record`,
//! read back by `snapshot --replay` and `watch --replay`, and bundled in `assets/` for the demo's
//! fallback when no PostgreSQL server binaries are installed.
//!
//! A corrupt or truncated line (a recorder killed mid-write, a hand edit) is reported with its line
//! number and skipped; the rest of the recording still replays.

use crate::cmd::demo::DemoOptions;
use crate::cmd::exit;
use crate::domain::snapshot::Snapshot;
use chrono::{DateTime, NaiveTime, Utc};
use std::io::{BufRead, Write};
use std::path::Path;

/// The recording shipped with pgswarm (made from `pgswarm demo`).
pub const BUNDLED_RECORDING: &str = include_str!("../../assets/demo-recording.jsonl");

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub error: String,
}

/// Parses a recording from text; good snapshots in order, bad lines reported.
pub fn parse_recording(text: &str) -> (Vec<Snapshot>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Snapshot>(line) {
            Ok(s) => good.push(s),
            Err(e) => bad.push(BadLine {
                line: i + 1,
                error: e.to_string(),
            }),
        }
    }
    good.sort_by_key(|s| s.taken_at);
    (good, bad)
}

/// Reads a recording file.
pub fn read_recording(path: &Path) -> Result<(Vec<Snapshot>, Vec<BadLine>), String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read recording {}: {e}", path.display()))?;
    let mut text = String::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        match line {
            Ok(l) => {
                text.push_str(&l);
                text.push('\n');
            }
            // Not UTF-8: keep the line numbering, let the parser report it.
            Err(_) => text.push_str(&format!("<line {} is not UTF-8>\n", i + 1)),
        }
    }
    Ok(parse_recording(&text))
}

/// Prints bad lines to stderr, naming each.
pub fn report_bad_lines(source: &str, bad: &[BadLine]) {
    for b in bad {
        eprintln!(
            "pgswarm: {source} line {}: not a snapshot, skipped ({})",
            b.line, b.error
        );
    }
}

/// Parses `--at`: an RFC 3339 time, `HH:MM:SS` (UTC, on the recording's first day), or `+90s` /
/// `+2m` from the start of the recording.
pub fn parse_at(s: &str, start: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Some(offset) = t.strip_prefix('+') {
        let d = crate::cmd::config::parse_duration("--at", offset).map_err(|e| e.0)?;
        return Ok(start + chrono::Duration::from_std(d).map_err(|e| e.to_string())?);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(time) = NaiveTime::parse_from_str(t, "%H:%M:%S") {
        return Ok(start.date_naive().and_time(time).and_utc());
    }
    Err(format!(
        "invalid --at {s:?}: use an RFC 3339 time (2026-11-23T12:04:31Z), HH:MM:SS (UTC), or +90s from \
         the start of the recording"
    ))
}

/// The state at `at`: the last snapshot taken at or before it.
pub fn snapshot_at(snaps: &[Snapshot], at: DateTime<Utc>) -> Option<&Snapshot> {
    let i = snaps.partition_point(|s| s.taken_at <= at);
    i.checked_sub(1).map(|i| &snaps[i])
}

/// Appends one snapshot as one line (a single write, flushed), so concurrent readers and an
/// interrupted recorder never leave half a document in the middle of the file.
pub fn append_snapshot(out: &mut std::fs::File, snap: &Snapshot) -> std::io::Result<usize> {
    let mut line = serde_json::to_string(snap).expect("snapshot serializes");
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(line.len())
}

/// Without server binaries the demo says how to install them and replays the bundled recording.
pub fn fallback_to_recording(opts: &DemoOptions, base: &crate::cmd::config::Settings) -> i32 {
    eprintln!(
        "pgswarm demo: to run the live demo, install the PostgreSQL server binaries (Debian/Ubuntu: \
         apt-get install postgresql; or set PGSWARM_PG_BINDIR). Showing the bundled recording \
         instead, marked REPLAY."
    );
    let (snaps, bad) = parse_recording(BUNDLED_RECORDING);
    report_bad_lines("bundled recording", &bad);
    if snaps.is_empty() {
        eprintln!("pgswarm demo: the bundled recording is empty");
        return exit::USAGE;
    }
    if opts.no_tui {
        eprintln!("pgswarm demo: --no-tui needs a server to simulate against; nothing to do");
        return exit::USAGE;
    }
    crate::tui::run::run_replay(snaps, base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::snapshot::{build_snapshot, Convention};

    fn snaps() -> Vec<Snapshot> {
        (0..3)
            .map(|i| {
                let mut o = fixtures::collision();
                o.taken_at = fixtures::fixture_now() + chrono::Duration::seconds(10 * i);
                build_snapshot(o, &Convention::default())
            })
            .collect()
    }

    #[test]
    fn round_trip_and_bad_lines_are_named_and_skipped() {
        let s = snaps();
        let mut text = String::new();
        for (i, snap) in s.iter().enumerate() {
            text.push_str(&serde_json::to_string(snap).unwrap());
            text.push('\n');
            if i == 0 {
                text.push_str("{\"schema_version\": 1, \"taken_at\": \n"); // truncated
                text.push_str("not json at all\n");
            }
        }
        let (good, bad) = parse_recording(&text);
        assert_eq!(good, s);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn at_picks_the_last_snapshot_not_after_the_time() {
        let s = snaps();
        let start = s[0].taken_at;
        assert_eq!(snapshot_at(&s, start - chrono::Duration::seconds(1)), None);
        assert_eq!(
            snapshot_at(&s, parse_at("+0s", start).unwrap()),
            Some(&s[0])
        );
        assert_eq!(
            snapshot_at(&s, parse_at("+15s", start).unwrap()),
            Some(&s[1])
        );
        assert_eq!(
            snapshot_at(&s, parse_at("12:00:20", start).unwrap()),
            Some(&s[2])
        );
        assert_eq!(
            snapshot_at(&s, parse_at("2026-11-23T12:00:09Z", start).unwrap()),
            Some(&s[0])
        );
        let e = parse_at("noon", start).unwrap_err();
        assert!(e.contains("\"noon\""));
    }
}
