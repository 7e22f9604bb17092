//! The recording format: one `snapshot --json` document per line (JSON Lines), written by `pgswarm
//! record`, read back by `snapshot --replay` and `watch --replay`, and bundled in `assets/` for the
//! demo's fallback when no PostgreSQL server binaries are installed.
//!
//! A corrupt or truncated line (a recorder killed mid-write, a hand edit) is reported with its line
//! number and skipped; the rest of the recording still replays. Input is bounded: only a regular
//! file, streamed, each line at most [`MAX_LINE_BYTES`]; a recording of another `schema_version` is
//! refused as a whole, with what to do.

use crate::domain::snapshot::{Snapshot, SCHEMA_VERSION};
use chrono::{DateTime, NaiveTime, Utc};
use std::io::{BufRead, Read, Write};
use std::path::Path;

/// The recording shipped with pgswarm (made from `pgswarm demo`).
pub const BUNDLED_RECORDING: &str = include_str!("../../assets/demo-recording.jsonl");

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub error: String,
}

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read recording {path}: {error}")]
    Io { path: String, error: String },
    #[error("{path} is not a regular file (a directory, a pipe or a device): give the path of a recording written by `pgswarm record`")]
    NotAFile { path: String },
    #[error("{source_name}: read error at line {line}: {error}")]
    Read {
        source_name: String,
        line: usize,
        error: String,
    },
    #[error("{source_name}: line {line} has schema_version {found}, and this pgswarm reads version {SCHEMA_VERSION}: replay it with the pgswarm that recorded it")]
    Version {
        source_name: String,
        line: usize,
        found: u32,
    },
    #[error("{source_name} holds no readable snapshot")]
    Empty { source_name: String },
}

/// The longest line a recording may have (a snapshot of 5,000 sessions is about 3 MiB). A longer
/// line is skipped and named, without ever being held in memory whole.
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// Parses a recording from text; good snapshots in order, bad lines reported.
pub fn parse_recording(
    source_name: &str,
    text: &str,
) -> Result<(Vec<Snapshot>, Vec<BadLine>), RecordingError> {
    parse_stream(source_name, text.as_bytes())
}

/// Reads a recording file: only a regular file, streamed line by line (each at most
/// [`MAX_LINE_BYTES`]), every snapshot of the schema version this pgswarm reads.
pub fn read_recording(path: &Path) -> Result<(Vec<Snapshot>, Vec<BadLine>), RecordingError> {
    let shown = path.display().to_string();
    let cannot = |e: std::io::Error| RecordingError::Io {
        path: shown.clone(),
        error: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(RecordingError::NotAFile { path: shown });
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    parse_stream(&shown, std::io::BufReader::new(file))
}

/// Reads a recording that must hold at least one snapshot; bad lines are reported on stderr.
pub fn read_snapshots(path: &Path) -> Result<Vec<Snapshot>, RecordingError> {
    let (snaps, bad) = read_recording(path)?;
    report_bad_lines(&path.display().to_string(), &bad);
    if snaps.is_empty() {
        return Err(RecordingError::Empty {
            source_name: path.display().to_string(),
        });
    }
    Ok(snaps)
}

/// Only what a line's version needs: cheap to parse, and it tells a newer recording from a corrupt
/// one.
#[derive(serde::Deserialize)]
struct VersionProbe {
    schema_version: u32,
}

fn parse_stream(
    source_name: &str,
    mut reader: impl BufRead,
) -> Result<(Vec<Snapshot>, Vec<BadLine>), RecordingError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    let read_error = |line: usize, e: std::io::Error| RecordingError::Read {
        source_name: source_name.to_string(),
        line,
        error: e.to_string(),
    };
    let version_error = |line: usize, found: u32| RecordingError::Version {
        source_name: source_name.to_string(),
        line,
        found,
    };
    for number in 1.. {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_error(number, e))?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            skip_rest_of_line(&mut reader).map_err(|e| read_error(number, e))?;
            bad.push(BadLine {
                line: number,
                error: format!("longer than {} MiB", MAX_LINE_BYTES / (1024 * 1024)),
            });
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Snapshot>(&buf) {
            Ok(s) if s.schema_version == SCHEMA_VERSION => good.push(s),
            Ok(s) => return Err(version_error(number, s.schema_version)),
            Err(e) => match serde_json::from_slice::<VersionProbe>(&buf) {
                Ok(p) if p.schema_version != SCHEMA_VERSION => {
                    return Err(version_error(number, p.schema_version))
                }
                _ => bad.push(BadLine {
                    line: number,
                    error: e.to_string(),
                }),
            },
        }
    }
    good.sort_by_key(|s| s.taken_at);
    Ok((good, bad))
}

/// Consumes input up to and including the next newline, holding at most one buffer of it.
fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// Prints bad lines to stderr, naming each.
pub fn report_bad_lines(source: &str, bad: &[BadLine]) {
    for b in bad {
        super::emit_stderr(&format!(
            "pgswarm: {} line {}: not a snapshot, skipped ({})\n",
            crate::domain::text::sanitize(source),
            b.line,
            crate::domain::text::sanitize(&b.error)
        ));
    }
}

/// Parses `--at`: an RFC 3339 time, `HH:MM:SS` (UTC, on the recording's first day), or `+90s` /
/// `+2m` from the start of the recording.
pub fn parse_at(s: &str, start: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Some(offset) = t.strip_prefix('+') {
        let d = crate::pg::config::parse_duration("--at", offset).map_err(|e| e.0)?;
        // An offset past the calendar is after any recording's end: said so, never a panic.
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| start.checked_add_signed(d))
            .ok_or_else(|| {
                format!(
                    "invalid --at {s:?}: the offset is beyond any date; give an offset within the \
                     recording (e.g. +90s from its start)"
                )
            });
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

/// Which side of the recording a time falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    BeforeStart,
    AfterEnd,
}

/// A time outside the recording: nothing was recorded before its first snapshot, and after its last
/// one the state is unknown (the recorder stopped), so neither has a state to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideRecording {
    pub side: Side,
    pub at: DateTime<Utc>,
    /// The first and the last snapshot's times.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl OutsideRecording {
    /// The message for `--at GIVEN`: the value, the time it means, the recording's span (in a form
    /// `--at` accepts), and what to give instead.
    pub fn to_message(&self, given: &str) -> String {
        let (side, instead) = match self.side {
            Side::BeforeStart => (
                "before the recording starts",
                "a time within it, such as +0s for its first snapshot",
            ),
            Side::AfterEnd => (
                "after the recording ends",
                "a time within it, or leave --at out for its last snapshot",
            ),
        };
        format!(
            "--at {given:?} is {}, {side}: the recording spans {} to {} ({}); give {instead}",
            format_at(self.at),
            format_at(self.start),
            format_at(self.end),
            crate::domain::format::fmt_age(
                (self.end - self.start).num_milliseconds() as f64 / 1000.0
            ),
        )
    }
}

/// A time as `--at` takes it back: RFC 3339 in UTC, with as many digits as it has, so that the
/// span's bounds given back as `--at` are within it (rounded to milliseconds, the last snapshot's
/// time could round past it).
fn format_at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The state at `at`: the last snapshot taken at or before it, if `at` is within the recording
/// (from its first snapshot to its last).
pub fn snapshot_at(snaps: &[Snapshot], at: DateTime<Utc>) -> Result<&Snapshot, OutsideRecording> {
    let (Some(first), Some(last)) = (snaps.first(), snaps.last()) else {
        // read_snapshots never returns an empty recording; answer sensibly anyway.
        return Err(OutsideRecording {
            side: Side::AfterEnd,
            at,
            start: at,
            end: at,
        });
    };
    let outside = |side| OutsideRecording {
        side,
        at,
        start: first.taken_at,
        end: last.taken_at,
    };
    if at > last.taken_at {
        return Err(outside(Side::AfterEnd));
    }
    let i = snaps.partition_point(|s| s.taken_at <= at);
    i.checked_sub(1)
        .map(|i| &snaps[i])
        .ok_or_else(|| outside(Side::BeforeStart))
}

/// Appends one snapshot as one line (a single write, flushed), so concurrent readers and an
/// interrupted recorder never leave half a document in the middle of the file.
pub fn append_snapshot(mut out: &std::fs::File, snap: &Snapshot) -> std::io::Result<usize> {
    let mut line = serde_json::to_string(snap).expect("snapshot serializes");
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(line.len())
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
        let (good, bad) = parse_recording("test", &text).unwrap();
        assert_eq!(good, s);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn bounded_input_refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        // A directory is refused at once (it used to spin while memory grew).
        let err = read_recording(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // Another schema_version is refused as a whole, with what to do, whether or not the rest of
        // the line parses.
        let mut future = serde_json::to_value(&snaps()[0]).unwrap();
        future["schema_version"] = 99.into();
        for line in [
            future.to_string(),
            r#"{"schema_version": 99, "something": "else"}"#.to_string(),
        ] {
            let err = parse_recording("test", &line).unwrap_err().to_string();
            assert!(err.contains("schema_version 99"), "{err}");
            assert!(err.contains("reads version 1"), "{err}");
        }
        // A line longer than the cap is named and skipped without holding it; the rest replays.
        let path = dir.path().join("big.jsonl");
        {
            let mut f = std::fs::File::create(&path).unwrap();
            let chunk = vec![b'x'; 1024 * 1024];
            for _ in 0..(MAX_LINE_BYTES / chunk.len() + 2) {
                f.write_all(&chunk).unwrap();
            }
            f.write_all(b"\n").unwrap();
            f.write_all(serde_json::to_string(&snaps()[1]).unwrap().as_bytes())
                .unwrap();
            f.write_all(b"\n").unwrap();
        }
        let (good, bad) = read_recording(&path).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 1);
        assert!(bad[0].error.contains("longer than"), "{:?}", bad[0]);
    }

    #[test]
    fn at_picks_the_last_snapshot_not_after_the_time() {
        let s = snaps();
        let start = s[0].taken_at;
        let before = snapshot_at(&s, start - chrono::Duration::seconds(1)).unwrap_err();
        assert_eq!(before.side, Side::BeforeStart);
        assert_eq!(snapshot_at(&s, parse_at("+0s", start).unwrap()), Ok(&s[0]));
        assert_eq!(snapshot_at(&s, parse_at("+15s", start).unwrap()), Ok(&s[1]));
        assert_eq!(
            snapshot_at(&s, parse_at("12:00:20", start).unwrap()),
            Ok(&s[2])
        );
        assert_eq!(
            snapshot_at(&s, parse_at("2026-11-23T12:00:09Z", start).unwrap()),
            Ok(&s[0])
        );
        let e = parse_at("noon", start).unwrap_err();
        assert!(e.contains("\"noon\""));
        for huge in [
            "+9223372036854s",
            "+99999999999999s",
            "+1000000000000000000s",
        ] {
            let e = parse_at(huge, Utc::now()).unwrap_err();
            assert!(e.contains(huge), "{e}");
        }
    }

    /// Issue 23: a time after the last snapshot is an error, as one before the first already was,
    /// naming the value, the recording's span and what to give instead; the last snapshot's own time
    /// is still within it.
    #[test]
    fn at_after_the_end_of_the_recording_is_an_error_naming_its_span() {
        let s = snaps();
        let start = s[0].taken_at;
        assert_eq!(snapshot_at(&s, s[2].taken_at), Ok(&s[2]));
        for given in ["+21s", "12:00:21", "2026-11-24T00:00:00Z"] {
            let e = snapshot_at(&s, parse_at(given, start).unwrap()).unwrap_err();
            assert_eq!(e.side, Side::AfterEnd, "{given}");
            let m = e.to_message(given);
            assert!(m.contains(&format!("--at {given:?}")), "{m}");
            assert!(m.contains("after the recording ends"), "{m}");
            assert!(
                m.contains("spans 2026-11-23T12:00:00Z to 2026-11-23T12:00:20Z (20.0s)"),
                "{m}"
            );
            assert!(m.contains("leave --at out"), "{m}");
        }
        let e = snapshot_at(&s, parse_at("11:59:59", start).unwrap()).unwrap_err();
        let m = e.to_message("11:59:59");
        assert!(m.contains("before the recording starts"), "{m}");
        assert!(m.contains("+0s"), "{m}");
    }
}
