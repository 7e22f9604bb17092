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
//!
//! Only a regular file is read or appended to. The path comes from the user (`--log`,
//! `PGSWARM_INCIDENTS_LOG`), and anything else can hang its opener: a FIFO without a writer blocks a
//! reader's `open`, one without a reader blocks a writer's, and a device such as `/dev/zero` never
//! ends. So every open is non-blocking and the opened descriptor is checked (`fstat`), not the path
//! beforehand, which could be swapped between the check and the open. A stale network mount can
//! still block in the kernel: the dashboard, `record` and `incidents --follow` wait for it at most
//! [`ANSWER_WITHIN`] and then turn the flight log off for the run.

use crate::domain::incidents::{Episode, EPISODES_VERSION};
use crate::domain::public_write::PublicWrite;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Read as _, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Rotation threshold of the flight log.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Lines longer than this are skipped when reading (an episode is a few KiB at most).
const MAX_LINE: usize = 1024 * 1024;
/// How long a writer waits for the file system before it turns the flight log off: a local append
/// takes well under a millisecond, so this only ever fires on a file system that stopped answering.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

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

/// What a path that is not a regular file turned out to be (for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl FileKind {
    fn of(t: std::fs::FileType) -> FileKind {
        if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a file",
        })
    }
}

/// Why the flight log could not be read or appended to. Each names the file; what to do depends on
/// who asked (a reader is told about `--log`, a writer about `--no-flight-log`).
#[derive(Debug, thiserror::Error)]
pub enum FlightLogError {
    /// A FIFO, a device, a directory: refused, since opening or reading it could block for ever.
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    /// The file system did not answer in time (a stale network mount).
    #[error("{} did not answer within {} s (a stale network mount?)", path.display(), within.as_secs())]
    NoAnswer { path: PathBuf, within: Duration },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FlightLogError {
    fn io(path: &Path, source: std::io::Error) -> FlightLogError {
        FlightLogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// What a writer (the dashboard, `record`, `incidents --follow`) says when appending failed.
    pub fn to_write_message(&self) -> String {
        match self {
            FlightLogError::Io { .. } => format!("flight log not written: {self}"),
            FlightLogError::NotRegular { .. } => format!(
                "flight log not written: {self}; set PGSWARM_INCIDENTS_LOG to a regular file, or \
                 pass --no-flight-log"
            ),
            FlightLogError::NoAnswer { .. } => format!(
                "flight log off for the rest of this run: {self}; set PGSWARM_INCIDENTS_LOG to a \
                 local file, or pass --no-flight-log"
            ),
        }
    }

    /// What a writer says when the check before a run failed: the flight log is off for the run.
    pub fn to_off_message(&self) -> String {
        format!(
            "flight log off for this run, ended lock waits are not kept: {self}; set \
             PGSWARM_INCIDENTS_LOG to a regular local file, or pass --no-flight-log"
        )
    }
}

/// Opens `path` without blocking and clears `O_NONBLOCK` again, so that the descriptor behaves as an
/// ordinary one: a FIFO without a reader fails at once (`ENXIO`) instead of waiting for one.
pub fn open_nonblocking(
    path: &Path,
    options: &std::fs::OpenOptions,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut options = options.clone();
    let file = options.custom_flags(libc::O_NONBLOCK).open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns (`file`), with plain integer arguments.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Opens `path` as [`open_nonblocking`] does and keeps it only if the opened file is a regular one
/// (checked on the descriptor, so the path cannot be swapped after the check).
fn open_regular(
    path: &Path,
    options: &std::fs::OpenOptions,
) -> Result<std::fs::File, FlightLogError> {
    let file = open_nonblocking(path, options).map_err(|e| {
        // A FIFO without a reader or a socket fails to open (ENXIO), a directory to open for writing
        // (EISDIR): name what it is rather than the errno.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => FlightLogError::NotRegular {
                path: path.to_path_buf(),
                kind: FileKind::of(m.file_type()),
            },
            _ => FlightLogError::io(path, e),
        }
    })?;
    let meta = file.metadata().map_err(|e| FlightLogError::io(path, e))?;
    if !meta.is_file() {
        return Err(FlightLogError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        });
    }
    Ok(file)
}

/// One line of the flight log.
#[derive(Serialize, Deserialize)]
struct Line {
    schema_version: u32,
    #[serde(flatten)]
    episode: Episode,
}

/// A public write's line (`kind` is always `public_write`): lines of this kind sit beside the
/// episodes; a pgswarm that does not know them counts them as skipped.
#[derive(Serialize, Deserialize)]
struct PublicWriteLine {
    schema_version: u32,
    kind: String,
    id: String,
    #[serde(flatten)]
    write: PublicWrite,
}

/// The `kind` of a public write's line.
pub const PUBLIC_WRITE_KIND: &str = "public_write";

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

    /// Checks, before a run, that the flight log can be appended to: a missing file is fine (the
    /// first append creates it), a regular one is opened for appending and closed. Nothing is
    /// created or written.
    pub fn check_writable(&self) -> Result<(), FlightLogError> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true);
        match open_regular(&self.path, &options) {
            Err(FlightLogError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// [`FlightLog::check_writable`] on a thread of its own, waiting for it at most `within`: a
    /// stale network mount must not hold up the command that only wanted to know.
    pub fn check_writable_within(&self, within: Duration) -> Result<(), FlightLogError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.clone();
        let spawned = std::thread::Builder::new()
            .name("flight-log-check".into())
            .spawn(move || {
                let _ = tx.send(log.check_writable());
            });
        if let Err(e) = spawned {
            return Err(FlightLogError::io(&self.path, e));
        }
        match rx.recv_timeout(within) {
            Ok(checked) => checked,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(self.no_answer(within)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(FlightLogError::io(
                &self.path,
                std::io::Error::other("the check stopped without an answer"),
            )),
        }
    }

    fn no_answer(&self, within: Duration) -> FlightLogError {
        FlightLogError::NoAnswer {
            path: self.path.clone(),
            within,
        }
    }

    /// Appends episodes, one line each, rotating first if the file would grow past the bound.
    pub fn append(&self, episodes: &[Episode]) -> Result<(), FlightLogError> {
        if episodes.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for e in episodes {
            let line = Line {
                schema_version: EPISODES_VERSION,
                episode: e.clone(),
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| FlightLogError::io(&self.path, std::io::Error::other(e)))?;
            text.push_str(&json);
            text.push('\n');
        }
        self.append_text(&text)
    }

    /// Appends public writes that ended, one line each (kind `public_write`).
    pub fn append_public_writes(&self, writes: &[PublicWrite]) -> Result<(), FlightLogError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for w in writes {
            let line = PublicWriteLine {
                schema_version: EPISODES_VERSION,
                kind: PUBLIC_WRITE_KIND.into(),
                id: w.id(),
                write: w.clone(),
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| FlightLogError::io(&self.path, std::io::Error::other(e)))?;
            text.push_str(&json);
            text.push('\n');
        }
        self.append_text(&text)
    }

    /// [`FlightLog::append_public_writes`] off the async threads, waiting at most `within`.
    pub async fn append_public_writes_within(
        &self,
        writes: Vec<PublicWrite>,
        within: Duration,
    ) -> Result<(), FlightLogError> {
        if writes.is_empty() {
            return Ok(());
        }
        let log = self.clone();
        let write = tokio::task::spawn_blocking(move || log.append_public_writes(&writes));
        match tokio::time::timeout(within, write).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(FlightLogError::io(&self.path, std::io::Error::other(join))),
            Err(_) => Err(self.no_answer(within)),
        }
    }

    fn append_text(&self, text: &str) -> Result<(), FlightLogError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| FlightLogError::io(dir, e))?;
        }
        let mut f = self.open_for_append()?;
        let size = f
            .metadata()
            .map_err(|e| FlightLogError::io(&self.path, e))?
            .len();
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, rotated(&self.path))
                .map_err(|e| FlightLogError::io(&self.path, e))?;
            f = self.open_for_append()?;
        }
        // One write per batch: concurrent writers interleave whole lines.
        f.write_all(text.as_bytes())
            .map_err(|e| FlightLogError::io(&self.path, e))
    }

    /// [`FlightLog::append`] off the async threads, waiting for it at most `within`. On
    /// [`FlightLogError::NoAnswer`] the write may still complete later, or never: the caller should
    /// stop appending rather than pile up threads stuck on the same file system.
    pub async fn append_within(
        &self,
        episodes: Vec<Episode>,
        within: Duration,
    ) -> Result<(), FlightLogError> {
        if episodes.is_empty() {
            return Ok(());
        }
        let log = self.clone();
        let write = tokio::task::spawn_blocking(move || log.append(&episodes));
        match tokio::time::timeout(within, write).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(FlightLogError::io(&self.path, std::io::Error::other(join))),
            Err(_) => Err(self.no_answer(within)),
        }
    }

    fn open_for_append(&self) -> Result<std::fs::File, FlightLogError> {
        let mut options = std::fs::OpenOptions::new();
        // Query texts are in it: readable by its owner only, like a shell history.
        options.create(true).append(true).mode(0o600);
        open_regular(&self.path, &options)
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
    /// Public writes (lines of kind `public_write`), each id once, oldest last-seen first.
    pub public_writes: Vec<PublicWrite>,
}

/// Reads the rotated file and the current one. A missing file is an empty history; anything but a
/// regular file is refused before a byte is read.
pub fn read(path: &Path) -> Result<Read, FlightLogError> {
    let mut out = Read::default();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut writes: HashMap<String, usize> = HashMap::new();
    for p in [rotated(path), path.to_path_buf()] {
        let file = match open_regular(&p, std::fs::OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(FlightLogError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        read_lines(
            std::io::BufReader::new(file),
            &mut out,
            &mut by_id,
            &mut writes,
        )
        .map_err(|e| FlightLogError::io(&p, e))?;
    }
    out.episodes.sort_by_key(|e| e.sort_time());
    out.public_writes.sort_by_key(|w| w.last_seen.or(w.since));
    Ok(out)
}

/// Reads one file's lines into `out`, keeping each episode id once (the last line wins).
fn read_lines(
    mut reader: impl BufRead,
    out: &mut Read,
    by_id: &mut HashMap<String, usize>,
    writes: &mut HashMap<String, usize>,
) -> std::io::Result<()> {
    loop {
        // A line is read into memory only up to MAX_LINE: a huge line is skipped, not loaded.
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
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
        if let Some(w) = public_write_line(&line) {
            match writes.get(&w.0) {
                Some(&i) => out.public_writes[i] = w.1,
                None => {
                    writes.insert(w.0, out.public_writes.len());
                    out.public_writes.push(w.1);
                }
            }
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(mut l) if l.schema_version == EPISODES_VERSION => {
                l.episode.fill_sqlstate();
                keep_once(l.episode, out, by_id);
            }
            _ if line.iter().all(u8::is_ascii_whitespace) => {}
            _ => out.skipped += 1,
        }
    }
}

/// A line of kind `public_write` of a known version: its id and the write.
fn public_write_line(line: &[u8]) -> Option<(String, PublicWrite)> {
    let l: PublicWriteLine = serde_json::from_slice(line).ok()?;
    (l.kind == PUBLIC_WRITE_KIND && l.schema_version == EPISODES_VERSION).then_some((l.id, l.write))
}

/// Adds `e`, or replaces the earlier line with its id (the last line wins).
fn keep_once(e: Episode, out: &mut Read, by_id: &mut HashMap<String, usize>) {
    match by_id.get(&e.id) {
        Some(&i) => out.episodes[i] = e,
        None => {
            by_id.insert(e.id.clone(), out.episodes.len());
            out.episodes.push(e);
        }
    }
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

    /// Issue 27: a `gave_up` line written before `sqlstate` existed reads back with the inferred
    /// 55P03.
    #[test]
    fn a_line_without_sqlstate_gets_it_from_its_outcome() {
        use crate::domain::incidents::{Outcome, SqlstateSource};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let mut e = some_episodes().remove(0);
        e.outcome = Outcome::GaveUp;
        let mut line = serde_json::to_value(Line {
            schema_version: 1,
            episode: e,
        })
        .unwrap();
        let fields = line.as_object_mut().unwrap();
        fields.remove("sqlstate");
        fields.remove("sqlstate_source");
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.episodes[0].sqlstate.as_deref(), Some("55P03"));
        assert_eq!(
            r.episodes[0].sqlstate_source,
            Some(SqlstateSource::Inferred)
        );
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

    /// Runs `f` on a thread and fails the test if it takes longer than a few seconds: a regression
    /// here is a hang, and a hung test binary says nothing.
    fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} blocked for more than 5 s"))
    }

    fn make_fifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    fn assert_not_regular(r: Result<(), FlightLogError>, path: &Path, kind: FileKind) {
        match r {
            Err(FlightLogError::NotRegular { path: p, kind: k }) => {
                assert_eq!((p.as_path(), k), (path, kind))
            }
            other => panic!("{} as {kind:?}: {other:?}", path.display()),
        }
    }

    /// Issue 23: a FIFO or a device as the flight log is refused at once, by the reader and by the
    /// writer, with or without a process at the FIFO's other end; nothing is created in its place.
    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("incidents.jsonl");
        make_fifo(&fifo);
        let eps = some_episodes();
        let (f, e) = (fifo.clone(), eps.clone());
        let appended = promptly("append to a FIFO without a reader", move || {
            FlightLog::new(f).append(&e[..1])
        });
        assert_not_regular(appended, &fifo, FileKind::Fifo);
        let f = fifo.clone();
        let checked = promptly("check a FIFO", move || FlightLog::new(f).check_writable());
        assert_not_regular(checked, &fifo, FileKind::Fifo);
        let f = fifo.clone();
        let read_back = promptly("read a FIFO without a writer", move || read(&f).map(drop));
        assert_not_regular(read_back, &fifo, FileKind::Fifo);
        // With a reader at the other end the open succeeds: the opened descriptor is refused.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let (f, e) = (fifo.clone(), eps.clone());
        let appended = promptly("append to a FIFO with a reader", move || {
            FlightLog::new(f).append(&e[..1])
        });
        assert_not_regular(appended, &fifo, FileKind::Fifo);
        // /dev/zero would be read for ever, /dev/null would swallow every episode.
        let zero = promptly("read /dev/zero", || read(Path::new("/dev/zero")).map(drop));
        assert_not_regular(zero, Path::new("/dev/zero"), FileKind::CharDevice);
        let null = FlightLog::new("/dev/null".into()).append(&eps[..1]);
        assert_not_regular(null, Path::new("/dev/null"), FileKind::CharDevice);
        assert!(FlightLog::new(dir.path().join("missing.jsonl"))
            .check_writable()
            .is_ok());
        assert!(
            !dir.path().join("missing.jsonl").exists(),
            "check creates nothing"
        );
    }

    /// The rotated file is read first: a FIFO there is refused as well, naming it.
    #[test]
    fn a_fifo_in_place_of_the_rotated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        FlightLog::new(path.clone())
            .append(&some_episodes()[..1])
            .unwrap();
        make_fifo(&rotated(&path));
        let p = path.clone();
        let r = promptly("read with a FIFO as the rotated file", move || {
            read(&p).map(drop)
        });
        assert_not_regular(r, &rotated(&path), FileKind::Fifo);
    }
}
