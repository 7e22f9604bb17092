//! The flight log: ended lock-wait episodes, appended as JSON Lines to
//! `$XDG_STATE_HOME/pgswarm/incidents.jsonl` (else `~/.local/state/pgswarm/incidents.jsonl`, or
//! `PGSWARM_INCIDENTS_LOG`) by the dashboard, `record` and `incidents --follow`, so that "who blocked
//! my run?" has an answer after the dashboard is gone.
//!
//! Bounded: when the file would pass [`MAX_BYTES`] it is renamed to `incidents.jsonl.1` (replacing
//! the previous one) and a new file starts, so the history on disk never exceeds twice that. Each
//! line is written with one `write` on a file opened for appending, so several writers (a dashboard
//! and a recorder) interleave whole lines; readers drop the duplicates by episode id.
//!
//! This is file I/O next to the PostgreSQL I/O: it lives in `pg` so the dashboard (`tui`) and the
//! commands (`cmd`) can both use it without one importing the other.

use crate::domain::incidents::{Episode, EPISODES_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Read as _, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Rotation threshold of the flight log.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Lines longer than this are skipped when reading (an episode is a few KiB at most).
const MAX_LINE: usize = 1024 * 1024;

/// pgswarm's state directory: `$XDG_STATE_HOME/pgswarm`, else `~/.local/state/pgswarm`.
pub fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("pgswarm"))
}

/// Where the flight log is: `PGSWARM_INCIDENTS_LOG`, else `incidents.jsonl` in [`state_dir`].
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("PGSWARM_INCIDENTS_LOG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| state_dir().map(|d| d.join("incidents.jsonl")))
}

/// One line of the flight log.
#[derive(Serialize, Deserialize)]
struct Line {
    schema_version: u32,
    #[serde(flatten)]
    episode: Episode,
}

/// An appender to the flight log.
#[derive(Debug, Clone)]
pub struct FlightLog {
    path: PathBuf,
    max_bytes: u64,
}

impl FlightLog {
    pub fn new(path: PathBuf) -> Self {
        FlightLog {
            path,
            max_bytes: MAX_BYTES,
        }
    }

    /// With a different rotation threshold (tests).
    pub fn with_max_bytes(path: PathBuf, max_bytes: u64) -> Self {
        FlightLog { path, max_bytes }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends episodes, one line each, rotating first if the file would grow past the bound.
    pub fn append(&self, episodes: &[Episode]) -> std::io::Result<()> {
        if episodes.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for e in episodes {
            let line = Line {
                schema_version: EPISODES_VERSION,
                episode: e.clone(),
            };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, rotated(&self.path))?;
        }
        // Query texts are in it: readable by its owner only, like a shell history.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        // One write per batch: concurrent writers interleave whole lines.
        f.write_all(text.as_bytes())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// What reading the flight log found.
#[derive(Debug, Default)]
pub struct Read {
    /// Episodes, each id once (the last line with that id wins), oldest end first.
    pub episodes: Vec<Episode>,
    /// Lines that are not episodes of a known version (a newer pgswarm, a cut line).
    pub skipped: usize,
}

/// Reads the rotated file and the current one. A missing file is an empty history.
pub fn read(path: &Path) -> std::io::Result<Read> {
    let mut out = Read::default();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for p in [rotated(path), path.to_path_buf()] {
        // Checked before opening: opening a FIFO would wait for a writer.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    p.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let file = std::fs::File::open(&p)?;
        let mut reader = std::io::BufReader::new(file);
        loop {
            // A line is read into memory only up to MAX_LINE: a huge line is skipped, not loaded.
            let mut line = Vec::new();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
                out.skipped += 1;
                // Skip the rest of it without keeping it.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    let m = (&mut reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut sink)?;
                    if m == 0 || sink.last() == Some(&b'\n') {
                        break;
                    }
                }
                continue;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            match serde_json::from_slice::<Line>(&line) {
                Ok(l) if l.schema_version == EPISODES_VERSION => match by_id.get(&l.episode.id) {
                    Some(&i) => out.episodes[i] = l.episode,
                    None => {
                        by_id.insert(l.episode.id.clone(), out.episodes.len());
                        out.episodes.push(l.episode);
                    }
                },
                _ if line.iter().all(u8::is_ascii_whitespace) => {}
                _ => out.skipped += 1,
            }
        }
    }
    out.episodes.sort_by_key(|e| e.sort_time());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::incidents::episodes_of;
    use crate::domain::snapshot::{build_snapshot, Convention};

    fn some_episodes() -> Vec<Episode> {
        let snap = build_snapshot(fixtures::collision(), &Convention::default());
        episodes_of(&[snap])
    }

    #[test]
    fn appends_rotates_and_reads_back_each_episode_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/incidents.jsonl");
        let eps = some_episodes();
        assert!(!eps.is_empty());
        let one_line = serde_json::to_string(&Line {
            schema_version: 1,
            episode: eps[0].clone(),
        })
        .unwrap()
        .len() as u64;
        let log = FlightLog::with_max_bytes(path.clone(), one_line * 3);
        for _ in 0..4 {
            log.append(&eps[..1]).unwrap();
        }
        let mut other = eps[0].clone();
        other.id.push_str("/other");
        log.append(&[other]).unwrap();
        assert!(rotated(&path).exists(), "rotated past the bound");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.len() <= one_line * 3 + 10, "{}", meta.len());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "query texts: owner only"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"schema_version\":99}\nnot json\n\n")
            .unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.episodes.len(), 2, "duplicates by id dropped");
        assert_eq!(r.skipped, 2);
    }

    #[test]
    fn a_huge_line_is_skipped_without_stopping_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let mut junk = vec![b'x'; 3 * MAX_LINE + 17];
        junk.push(b'\n');
        std::fs::write(&path, &junk).unwrap();
        FlightLog::new(path.clone())
            .append(&some_episodes()[..1])
            .unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.skipped, 1);
        assert_eq!(r.episodes.len(), 1, "the line after it is read");
    }

    #[test]
    fn a_missing_log_is_an_empty_history_and_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = read(&dir.path().join("none.jsonl")).unwrap();
        assert!(r.episodes.is_empty());
        assert!(read(dir.path()).is_err());
    }
}
