//! SQLite test databases: who holds which lock on a per-worker database file, decided from what the
//! kernel says about POSIX locks.
//!
//! Parallel suites give each xdist worker its own SQLite file (`prefect_gw0.db`, ...). Inside one
//! worker the test process and a hosted API server it started write to the same file, and when one of
//! them waits past its busy timeout nothing says who held the lock: SQLite retries in user space, so
//! the waiter is invisible to the kernel, but the holder is not. SQLite on Unix takes its locks with
//! `fcntl` byte-range locks at documented offsets, and `/proc/locks` lists every such lock with its
//! pid, device, inode and range. This module owns the rules that turn that into a report:
//!
//! - [`parse_lock_line`]: one `/proc/locks` line, total (never panics; property-tested);
//! - [`decode_lock`]: a byte range on the database file or its `-shm` WAL index into SQLite lock
//!   states, from the offsets in SQLite's `os_unix.c` and `wal.c` (a range the kernel merged from
//!   adjacent locks is split back); anything else is kept as [`LockState::Other`] with its range;
//! - [`attribute`]: the xdist worker, run id and naming-convention namespace of a process from its
//!   environment, or from the nearest ancestor that has them (an API server started by the worker);
//! - [`FirstSeen`]: how long a lock has been held, counted from its first observation;
//! - [`build_report`]: one [`SqliteReport`] per database file.
//!
//! Pure like the rest of `domain`: the I/O layer (`crate::sqlite`) reads `/proc` and passes values in,
//! `now` included. Command lines are kept raw in the model (JSON gets what the process said); whatever
//! reaches a terminal goes through [`crate::domain::text::sanitize`] via the `*_display` methods.

use crate::domain::naming::{Namespace, Worker};
use crate::domain::text::sanitize;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

// SQLite's lock bytes for the database file (os_unix.c; "File Locking And Concurrency In SQLite
// Version 3"). They sit at 1 GiB so that they never overlap data a reader needs: that page is skipped.
/// Byte whose lock marks PENDING (a writer waiting for readers to leave) and guards new SHARED locks.
pub const PENDING_BYTE: u64 = 0x4000_0000;
/// Byte whose write lock is RESERVED (one connection intends to write).
pub const RESERVED_BYTE: u64 = PENDING_BYTE + 1;
/// First byte of the range a SHARED lock reads-locks and an EXCLUSIVE lock write-locks.
pub const SHARED_FIRST: u64 = PENDING_BYTE + 2;
/// Length of that range.
pub const SHARED_SIZE: u64 = 510;

// The WAL index (`-shm`) locks (wal.c, os_unix.c): WALINDEX_LOCK_OFFSET is two copies of the 48-byte
// WalIndexHdr plus the 24-byte WalCkptInfo; SQLITE_SHM_NLOCK slots follow, then the dead-man switch.
/// Offset of the first WAL index lock slot (`WALINDEX_LOCK_OFFSET`, `UNIX_SHM_BASE`).
pub const WAL_LOCK_OFFSET: u64 = 120;
/// Number of WAL index lock slots (`SQLITE_SHM_NLOCK`): write, checkpoint, recover, 5 read marks.
pub const WAL_NLOCK: u64 = 8;
/// Number of read marks (`WAL_NREADER`).
pub const WAL_NREADER: u64 = 5;
/// The dead-man switch byte (`UNIX_SHM_DMS`): every connection with the WAL index open holds it shared.
pub const SHM_DMS: u64 = WAL_LOCK_OFFSET + WAL_NLOCK;

/// Default age after which a held write lock is warned about.
pub const DEFAULT_WRITE_LOCK_WARN_AFTER: Duration = Duration::from_secs(5);
/// The naming convention's environment variable for the namespace.
pub const DEFAULT_NAMESPACE_VAR: &str = "HONEY_TEST_SCHEMA_NAMESPACE";
/// pytest-xdist's worker id variable (`gw0`, ...).
pub const XDIST_WORKER_VAR: &str = "PYTEST_XDIST_WORKER";
/// pytest-xdist's run id variable, the same in every worker of one run.
pub const XDIST_RUN_ID_VAR: &str = "PYTEST_XDIST_TESTRUNUID";
/// How far up the parent chain attribution looks: deep enough for shell wrappers and process
/// managers, bounded so a cycle in bad input (a pid reused as its own ancestor) cannot loop.
pub const MAX_ANCESTORS: usize = 16;

// ---------------------------------------------------------------------------------------------------
// /proc/locks

/// A file's identity as the kernel prints it in `/proc/locks`: device major:minor and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

/// The lock's class, the second column of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockClass {
    /// `fcntl` record lock, owned by a process: what SQLite uses.
    Posix,
    /// Open file description lock: owned by an open file, not a process, so the kernel prints pid -1.
    Ofd,
    /// `flock` whole-file lock.
    Flock,
    Lease,
    /// Anything a newer kernel prints (`DELEG`, ...): kept, never guessed at.
    Unknown(String),
}

impl fmt::Display for LockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockClass::Posix => f.write_str("POSIX"),
            LockClass::Ofd => f.write_str("OFDLCK"),
            LockClass::Flock => f.write_str("FLOCK"),
            LockClass::Lease => f.write_str("LEASE"),
            LockClass::Unknown(s) => f.write_str(s),
        }
    }
}

/// Read (shared) or write (exclusive) access, as the kernel prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Shared,
    Exclusive,
    /// `UNLCK` (a lease being broken) or anything else.
    Unknown,
}

impl LockMode {
    fn parse(s: &str) -> LockMode {
        match s {
            "READ" => LockMode::Shared,
            "WRITE" => LockMode::Exclusive,
            _ => LockMode::Unknown,
        }
    }
}

/// One parsed `/proc/locks` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// `->`: a process blocked in the kernel waiting for this lock (SQLite never does this: it polls
    /// with non-blocking `F_SETLK` and sleeps in user space, so its waiters never show here).
    pub blocked: bool,
    pub class: LockClass,
    pub mode: LockMode,
    /// `None` where the kernel prints -1 (OFD locks belong to an open file, not a process).
    pub pid: Option<u32>,
    pub file: FileId,
    pub start: u64,
    /// Inclusive; `None` for `EOF` (to the end of the file, however long it grows).
    pub end: Option<u64>,
}

/// Why a `/proc/locks` line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockLineError {
    #[error("missing field: {0}")]
    Missing(&'static str),
    #[error("bad {field}: {value:?}")]
    Bad { field: &'static str, value: String },
}

fn reject(field: &'static str, value: &str) -> LockLineError {
    LockLineError::Bad {
        field,
        value: value.chars().take(40).collect(),
    }
}

/// Parses one `/proc/locks` line, e.g.
/// `1: POSIX  ADVISORY  WRITE 12345 08:01:1234567 1073741825 1073741825` or its blocked-waiter form
/// `1: -> POSIX  ADVISORY  WRITE ...`. Total: any input gives a value or an error, never a panic.
pub fn parse_lock_line(line: &str) -> Result<LockRecord, LockLineError> {
    let mut fields = line.split_ascii_whitespace();
    let id = fields.next().ok_or(LockLineError::Missing("id"))?;
    let id_digits = id.strip_suffix(':').ok_or_else(|| reject("id", id))?;
    if id_digits.is_empty() || !id_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(reject("id", id));
    }
    let mut class = fields.next().ok_or(LockLineError::Missing("class"))?;
    let blocked = class == "->";
    if blocked {
        class = fields.next().ok_or(LockLineError::Missing("class"))?;
    }
    let class = match class {
        "POSIX" => LockClass::Posix,
        "OFDLCK" => LockClass::Ofd,
        "FLOCK" => LockClass::Flock,
        "LEASE" => LockClass::Lease,
        other => LockClass::Unknown(other.chars().take(16).collect()),
    };
    // ADVISORY / MANDATORY for locks, ACTIVE / BREAKING / BREAKER for leases: not needed here.
    fields.next().ok_or(LockLineError::Missing("kind"))?;
    let mode = LockMode::parse(fields.next().ok_or(LockLineError::Missing("mode"))?);
    let pid_s = fields.next().ok_or(LockLineError::Missing("pid"))?;
    let pid = match pid_s.parse::<i64>() {
        Ok(-1) => None,
        Ok(p) => Some(u32::try_from(p).map_err(|_| reject("pid", pid_s))?),
        Err(_) => return Err(reject("pid", pid_s)),
    };
    let file_s = fields.next().ok_or(LockLineError::Missing("file"))?;
    let file = parse_file_id(file_s).ok_or_else(|| reject("file", file_s))?;
    let start_s = fields.next().ok_or(LockLineError::Missing("start"))?;
    let start = start_s
        .parse::<u64>()
        .map_err(|_| reject("start", start_s))?;
    let end_s = fields.next().ok_or(LockLineError::Missing("end"))?;
    let end = match end_s {
        "EOF" => None,
        s => Some(s.parse::<u64>().map_err(|_| reject("end", s))?),
    };
    if end.is_some_and(|e| e < start) {
        return Err(reject("end", end_s));
    }
    Ok(LockRecord {
        blocked,
        class,
        mode,
        pid,
        file,
        start,
        end,
    })
}

/// `maj:min:inode`, device numbers in hex (the kernel's `%02x:%02x:%lu`).
fn parse_file_id(s: &str) -> Option<FileId> {
    let mut parts = s.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(FileId {
        major,
        minor,
        inode,
    })
}

/// Parses a whole `/proc/locks`: the records, and how many lines were not understood (counted so a
/// format change shows up as a number in the report instead of as locks silently missing).
pub fn parse_proc_locks(text: &str) -> (Vec<LockRecord>, usize) {
    let mut records = Vec::new();
    let mut unparsed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_lock_line(line) {
            Ok(r) => records.push(r),
            Err(_) => unparsed += 1,
        }
    }
    (records, unparsed)
}

// ---------------------------------------------------------------------------------------------------
// Decoding SQLite lock bytes

/// Which of a database's files a lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    Db,
    Journal,
    Wal,
    Shm,
}

impl FileRole {
    /// The suffix SQLite appends to the database path for this file.
    pub fn suffix(self) -> &'static str {
        match self {
            FileRole::Db => "",
            FileRole::Journal => "-journal",
            FileRole::Wal => "-wal",
            FileRole::Shm => "-shm",
        }
    }
}

/// A SQLite lock state, as shown in `holders[].lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockState {
    /// Rollback mode: a reader (read lock on the shared range).
    Shared,
    /// Rollback mode: one connection intends to write (write lock on RESERVED_BYTE).
    Reserved,
    /// Rollback mode: a writer waits for readers to leave; new readers are kept out.
    Pending,
    /// Rollback mode: writing the database file (write lock on the shared range).
    Exclusive,
    /// WAL: the one writer.
    WalWrite,
    /// WAL: a checkpoint is running.
    WalCheckpoint,
    /// WAL: the WAL index is being rebuilt.
    WalRecover,
    /// WAL: read mark 0..=4. Shared: a reader pinned to that snapshot. Exclusive: the mark is being
    /// moved (by a reader or a checkpoint), which is brief.
    WalRead(u8),
    /// The dead-man switch on `-shm`: "has the WAL index open", not a lock worth showing as a holder.
    Dms,
    /// Anything not decoded above: kept with its range, never dropped.
    Other,
}

impl LockState {
    /// Whether holding this state keeps other connections from writing (what the age warning is about).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            LockState::WalWrite | LockState::Reserved | LockState::Pending | LockState::Exclusive
        )
    }

    /// The state's name: `shared`, `reserved`, `pending`, `exclusive`, `wal_write`, `wal_checkpoint`,
    /// `wal_recover`, `wal_read0`..`wal_read4`, `dms`, `other`.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            LockState::Shared => "shared",
            LockState::Reserved => "reserved",
            LockState::Pending => "pending",
            LockState::Exclusive => "exclusive",
            LockState::WalWrite => "wal_write",
            LockState::WalCheckpoint => "wal_checkpoint",
            LockState::WalRecover => "wal_recover",
            LockState::WalRead(i) => return Cow::Owned(format!("wal_read{i}")),
            LockState::Dms => "dms",
            LockState::Other => "other",
        })
    }

    /// Rank on the rollback ladder (each state implies the ones below it for the same process).
    fn rollback_rank(self) -> Option<u8> {
        match self {
            LockState::Shared => Some(1),
            LockState::Reserved => Some(2),
            LockState::Pending => Some(3),
            LockState::Exclusive => Some(4),
            _ => None,
        }
    }
}

impl fmt::Display for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for LockState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl LockState {
    /// The inverse of [`LockState::name`] (recordings are read back).
    pub fn from_name(name: &str) -> Option<LockState> {
        Some(match name {
            "shared" => LockState::Shared,
            "reserved" => LockState::Reserved,
            "pending" => LockState::Pending,
            "exclusive" => LockState::Exclusive,
            "wal_write" => LockState::WalWrite,
            "wal_checkpoint" => LockState::WalCheckpoint,
            "wal_recover" => LockState::WalRecover,
            "dms" => LockState::Dms,
            "other" => LockState::Other,
            _ => {
                let i: u8 = name.strip_prefix("wal_read")?.parse().ok()?;
                return (i <= 4).then_some(LockState::WalRead(i));
            }
        })
    }
}

impl<'de> Deserialize<'de> for LockState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LockState::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a SQLite lock state: {s:?}")))
    }
}

/// One decoded lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub state: LockState,
    /// For [`LockState::Other`]: what was there (`POSIX WRITE on -journal bytes 0..EOF`).
    pub detail: Option<String>,
}

fn covers(start: u64, end: Option<u64>, first: u64, last: u64) -> bool {
    start <= first && end.is_none_or(|e| e >= last)
}

fn overlaps(start: u64, end: Option<u64>, first: u64, last: u64) -> bool {
    start <= last && end.is_none_or(|e| e >= first)
}

fn describe_range(role: FileRole, record: &LockRecord) -> String {
    let mode = match record.mode {
        LockMode::Shared => "READ",
        LockMode::Exclusive => "WRITE",
        LockMode::Unknown => "?",
    };
    let end = record
        .end
        .map_or_else(|| "EOF".to_owned(), |e| e.to_string());
    let file = match role {
        FileRole::Db => "database file".to_owned(),
        r => r.suffix().to_owned(),
    };
    format!(
        "{} {mode} on {file} bytes {}..{end}",
        record.class, record.start
    )
}

fn keep_as_other(role: FileRole, record: &LockRecord) -> Decoded {
    Decoded {
        state: LockState::Other,
        detail: Some(describe_range(role, record)),
    }
}

/// Decodes one lock on one of a database's files into SQLite lock states.
///
/// The kernel merges adjacent ranges of the same process and mode into one record (EXCLUSIVE is
/// PENDING + RESERVED + the shared range written as one `WRITE 1073741824 1073742335`; a WAL reader's
/// last read mark and the dead-man switch as `READ 127 128`), so a record is split back into every
/// slot it covers. A part that fits no slot, a partial overlap of the shared range, a read lock on
/// the reserved byte (SQLite only ever write-locks it), an flock or lease (OFD locks read like POSIX
/// ones), an unknown mode, or any lock on `-journal`/`-wal` becomes [`LockState::Other`]. On `-shm`
/// the mode is kept as read, not judged: SQLite takes some slots shared in rare paths.
pub fn decode_lock(role: FileRole, record: &LockRecord) -> Vec<Decoded> {
    let sqlite_like = matches!(record.class, LockClass::Posix | LockClass::Ofd);
    if !sqlite_like || record.mode == LockMode::Unknown {
        return vec![keep_as_other(role, record)];
    }
    let (start, end, mode) = (record.start, record.end, record.mode);
    let mut out = Vec::new();
    let mut unexplained = false;
    let state = |s: LockState| Decoded {
        state: s,
        detail: None,
    };
    match role {
        FileRole::Db => {
            let shared_last = SHARED_FIRST + SHARED_SIZE - 1;
            let mut explained_from = u64::MAX;
            let mut explained_to = 0;
            let mut explain = |first: u64, last: u64| {
                explained_from = explained_from.min(first);
                explained_to = explained_to.max(last);
            };
            if overlaps(start, end, PENDING_BYTE, PENDING_BYTE) {
                // A read lock here is the brief guard taken while acquiring SHARED; still PENDING's byte.
                out.push(state(LockState::Pending));
                explain(PENDING_BYTE, PENDING_BYTE);
            }
            if overlaps(start, end, RESERVED_BYTE, RESERVED_BYTE) {
                if mode == LockMode::Exclusive {
                    out.push(state(LockState::Reserved));
                    explain(RESERVED_BYTE, RESERVED_BYTE);
                } else {
                    unexplained = true;
                }
            }
            if overlaps(start, end, SHARED_FIRST, shared_last) {
                if covers(start, end, SHARED_FIRST, shared_last) {
                    out.push(state(match mode {
                        LockMode::Exclusive => LockState::Exclusive,
                        _ => LockState::Shared,
                    }));
                    explain(SHARED_FIRST, shared_last);
                } else {
                    unexplained = true;
                }
            }
            if start < explained_from || end.is_none_or(|e| e > explained_to) {
                unexplained = true;
            }
        }
        FileRole::Shm => {
            let mut explained = 0u64;
            for offset in WAL_LOCK_OFFSET..=SHM_DMS {
                if !overlaps(start, end, offset, offset) {
                    continue;
                }
                explained += 1;
                let slot = offset - WAL_LOCK_OFFSET;
                let s = match slot {
                    0 => LockState::WalWrite,
                    1 => LockState::WalCheckpoint,
                    2 => LockState::WalRecover,
                    i if i < 3 + WAL_NREADER => {
                        LockState::WalRead(u8::try_from(i - 3).expect("read mark index below 5"))
                    }
                    _ => LockState::Dms,
                };
                out.push(state(s));
            }
            let span = end.and_then(|e| (e - start).checked_add(1));
            if span != Some(explained) {
                unexplained = true;
            }
        }
        FileRole::Journal | FileRole::Wal => unexplained = true,
    }
    if unexplained {
        out.push(keep_as_other(role, record));
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Process attribution

/// What the I/O layer read about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): with the pid, it tells a
    /// process from a later one that reused the pid.
    pub start_ticks: Option<u64>,
    /// `None` when the environment could not be read (another user's process).
    pub environ: Option<BTreeMap<String, String>>,
    pub cmdline: Vec<String>,
}

impl ProcessInfo {
    /// The command line, arguments joined by spaces, raw.
    pub fn command(&self) -> String {
        self.cmdline.join(" ")
    }
}

/// Parses `/proc/PID/environ` (NUL-separated `KEY=value`; not UTF-8 safe, so lossy).
pub fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&entry[..eq]).into_owned(),
                String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// Parses `/proc/PID/cmdline` (NUL-separated arguments, usually NUL-terminated).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Parses `/proc/PID/stat` into (ppid, start time in ticks). The command name in parentheses may
/// itself hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the comm: state(3) ppid(4) ... starttime(22).
    let ppid = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(17)?.parse().ok()?;
    Some((ppid, start))
}

/// Which environment variables attribute a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionVars {
    pub worker: String,
    pub run_id: String,
    pub namespace: String,
}

impl Default for AttributionVars {
    fn default() -> Self {
        AttributionVars {
            worker: XDIST_WORKER_VAR.to_owned(),
            run_id: XDIST_RUN_ID_VAR.to_owned(),
            namespace: DEFAULT_NAMESPACE_VAR.to_owned(),
        }
    }
}

/// Who a process works for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pub worker: Option<Worker>,
    pub run_id: Option<String>,
    pub namespace: Option<Namespace>,
    /// Empty when the process's own environment carried the variables; otherwise the ancestors walked,
    /// parent first, ending with the one that carried them.
    pub via: Vec<u32>,
    /// The process's environment (or an ancestor's on the way) could not be read.
    pub unreadable: bool,
}

/// Attributes a process: the first of itself and its ancestors (parent first) whose environment sets
/// any of the variables supplies all three, so values from two different runs are never mixed. A
/// process without them, like an API server that a worker started with a cleaned environment, takes
/// them from its nearest ancestor that has them. Values that break the naming rules are `None`, never
/// guessed at. An unreadable environment stops the walk: what it would have said is unknown.
pub fn attribute(
    process: &ProcessInfo,
    ancestors: &[ProcessInfo],
    vars: &AttributionVars,
) -> Attribution {
    let mut via = Vec::new();
    for (i, p) in std::iter::once(process)
        .chain(ancestors.iter().take(MAX_ANCESTORS))
        .enumerate()
    {
        if i > 0 {
            // The machine's init is nobody's test run, and often unreadable even to root (in a
            // container): reaching it ends the walk with nothing found, not with an error.
            if p.pid == 1 {
                break;
            }
            via.push(p.pid);
        }
        let Some(env) = &p.environ else {
            return Attribution {
                unreadable: true,
                ..Attribution::default()
            };
        };
        let worker = env.get(&vars.worker);
        let run_id = env.get(&vars.run_id);
        let namespace = env.get(&vars.namespace);
        if worker.is_none() && run_id.is_none() && namespace.is_none() {
            continue;
        }
        return Attribution {
            worker: worker.and_then(|w| Worker::parse(w)),
            run_id: run_id.filter(|r| !r.is_empty()).cloned(),
            namespace: namespace.and_then(|n| Namespace::parse(n)),
            via,
            unreadable: false,
        };
    }
    Attribution::default()
}

// ---------------------------------------------------------------------------------------------------
// First observation

/// What identifies one held lock across observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldKey {
    pub pid: Option<u32>,
    pub start_ticks: Option<u64>,
    pub file: FileId,
    pub state: LockState,
    pub mode: LockMode,
    /// For a write lock, the file's write marker (`ReportInput::write_marker`); 0 otherwise.
    pub write_marker: u64,
}

/// When each held lock was first observed. `/proc/locks` has no timestamps, so a lock's age is the
/// time since pgswarm first saw it (a lower bound). A key not seen in an observation is forgotten at
/// the next [`FirstSeen::end_observation`], so a lock released and taken again starts from zero.
#[derive(Debug, Clone, Default)]
pub struct FirstSeen {
    seen: HashMap<HoldKey, (DateTime<Utc>, u64)>,
    generation: u64,
}

impl FirstSeen {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` is held now; returns when it was first seen.
    pub fn touch(&mut self, key: HoldKey, now: DateTime<Utc>) -> DateTime<Utc> {
        let generation = self.generation;
        let entry = self.seen.entry(key).or_insert((now, generation));
        entry.1 = generation;
        entry.0
    }

    /// Forgets every key not touched since the previous call.
    pub fn end_observation(&mut self) {
        let generation = self.generation;
        self.seen.retain(|_, (_, g)| *g == generation);
        self.generation += 1;
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------------
// The report

/// A process holding (or, for `waiters`, blocked in the kernel on) a lock of the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// `None` for an OFD lock (the kernel does not say which process).
    pub pid: Option<u32>,
    pub lock: LockState,
    pub mode: LockMode,
    pub file: FileRole,
    pub worker: Option<Worker>,
    pub run_id: Option<String>,
    pub namespace: Option<Namespace>,
    /// Raw; use [`Holder::command_display`] for a terminal.
    pub command: String,
    pub held_for_s: f64,
    /// Ancestors walked to find worker/namespace (parent first, ending with the one that had them).
    pub via: Vec<u32>,
    /// For `other`: what the lock was.
    pub detail: Option<String>,
}

impl Holder {
    pub fn command_display(&self) -> Cow<'_, str> {
        sanitize(&self.command)
    }

    pub fn detail_display(&self) -> Option<Cow<'_, str>> {
        self.detail.as_deref().map(sanitize)
    }
}

/// A process with one of the database's files open and no lock on it (the WAL index's dead-man switch
/// and, in WAL mode, the database file's SHARED lock only mean "connected").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenWithoutLock {
    pub pid: u32,
    pub worker: Option<Worker>,
    pub run_id: Option<String>,
    pub namespace: Option<Namespace>,
    pub command: String,
    pub via: Vec<u32>,
    /// Holds the dead-man switch (or WAL-mode SHARED): a live SQLite connection, idle.
    pub connected: bool,
}

impl OpenWithoutLock {
    pub fn command_display(&self) -> Cow<'_, str> {
        sanitize(&self.command)
    }
}

/// What a SQLite warning is about (scripts decide on this, never on the words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteWarningCode {
    /// A write lock held longer than the threshold.
    WriteLockHeld,
}

/// A write lock held longer than the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqliteWarning {
    pub code: SqliteWarningCode,
    pub pid: Option<u32>,
    pub lock: LockState,
    pub held_for_s: f64,
    pub threshold_s: f64,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalMode {
    Wal,
    Rollback,
    Unknown,
}

/// One database file: who holds which lock, who has it open without one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqliteReport {
    /// The database path (or, for a pattern that matched nothing, the pattern).
    pub path: String,
    pub journal_mode: JournalMode,
    pub holders: Vec<Holder>,
    /// Processes blocked in the kernel on a lock of these files (never SQLite itself, see module doc).
    pub waiters: Vec<Holder>,
    pub open_without_lock: Vec<OpenWithoutLock>,
    pub warnings: Vec<SqliteWarning>,
    /// What could not be read; stated, not hidden.
    pub error: Option<String>,
}

impl SqliteReport {
    /// A report for a target that could not be looked at at all.
    pub fn failed(path: impl Into<String>, error: impl Into<String>) -> SqliteReport {
        SqliteReport {
            path: path.into(),
            journal_mode: JournalMode::Unknown,
            holders: Vec::new(),
            waiters: Vec::new(),
            open_without_lock: Vec::new(),
            warnings: Vec::new(),
            error: Some(error.into()),
        }
    }

    /// The target could not be looked at at all (a pattern that matched nothing, a file that could
    /// not be read): the picture is partial, as for an unreachable PostgreSQL database.
    pub fn is_unreadable(&self) -> bool {
        self.error.is_some()
            && self.journal_mode == JournalMode::Unknown
            && self.holders.is_empty()
            && self.open_without_lock.is_empty()
    }

    /// The report as text lines (for the text report; sanitised, no colours).
    pub fn render_lines(&self) -> Vec<String> {
        let mode = match self.journal_mode {
            JournalMode::Wal => "WAL",
            JournalMode::Rollback => "rollback journal",
            JournalMode::Unknown => "journal mode unknown",
        };
        let mut lines = vec![format!("{}  ({mode})", self.path_display())];
        for h in &self.holders {
            if let Some(d) = h.detail_display() {
                lines.push(format!("  {:<14} {d}", h.lock.name()));
            }
            // Ages count from pgswarm's first sight of the lock: a lower bound, 0 in a one-shot.
            let age = if h.held_for_s > 0.0 {
                format!("held ≥{:.1} s", h.held_for_s)
            } else {
                "first seen now".to_string()
            };
            lines.push(format!(
                "  {:<14} {} {}  {age}  {}",
                h.lock.name(),
                h.pid.map_or("pid ?".to_string(), |p| format!("pid {p}")),
                describe_run(h.worker.as_ref(), h.namespace.as_ref(), &h.via),
                h.command_display()
            ));
        }
        for o in &self.open_without_lock {
            lines.push(format!(
                "  {:<14} pid {} {}  {}",
                if o.connected {
                    "connected"
                } else {
                    "open, no lock"
                },
                o.pid,
                describe_run(o.worker.as_ref(), o.namespace.as_ref(), &o.via),
                o.command_display()
            ));
        }
        if self.holders.is_empty() && self.open_without_lock.is_empty() && self.error.is_none() {
            lines.push("  no lock held, nobody has it open".into());
        }
        for w in &self.warnings {
            lines.push(format!("  ! {}", sanitize(&w.message)));
        }
        if let Some(e) = self.error_display() {
            lines.push(format!("  error: {e}"));
        }
        lines
    }

    pub fn path_display(&self) -> Cow<'_, str> {
        sanitize(&self.path)
    }

    pub fn error_display(&self) -> Option<Cow<'_, str>> {
        self.error.as_deref().map(sanitize)
    }
}

/// Something that observes the SQLite targets when called (the I/O layer builds it; the snapshot
/// stream calls it off the async threads at each refresh).
pub type ReportSource = Box<dyn FnMut(chrono::DateTime<chrono::Utc>) -> Vec<SqliteReport> + Send>;

/// `gw0 abc123` (and `via 1234` when attributed through a parent), or `unattributed`.
fn describe_run(worker: Option<&Worker>, namespace: Option<&Namespace>, via: &[u32]) -> String {
    let mut s = match (worker, namespace) {
        (Some(w), Some(n)) => format!("{w} {}", n.as_str()),
        (Some(w), None) => w.to_string(),
        (None, Some(n)) => n.as_str().to_string(),
        (None, None) => "unattributed".into(),
    };
    match via {
        [] => {}
        [parent] => s.push_str(&format!(" (via parent {parent})")),
        [.., from] => s.push_str(&format!(" (via ancestor {from})")),
    }
    s
}

/// The identities of a database's files; `None` for a file that does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetFiles {
    pub db: Option<FileId>,
    pub journal: Option<FileId>,
    pub wal: Option<FileId>,
    pub shm: Option<FileId>,
}

impl TargetFiles {
    /// Which of these files `file` is.
    pub fn role_of(&self, file: FileId) -> Option<FileRole> {
        [
            (self.db, FileRole::Db),
            (self.journal, FileRole::Journal),
            (self.wal, FileRole::Wal),
            (self.shm, FileRole::Shm),
        ]
        .into_iter()
        .find_map(|(id, role)| (id == Some(file)).then_some(role))
    }
}

/// Everything observed about one database.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub path: &'a str,
    pub files: TargetFiles,
    /// Changes when a write transaction ends (see `sqlite::targets::Located::write_marker`): a write
    /// lock seen again after it changed was released and taken again in between, so its age starts
    /// over. Without it, back-to-back short transactions sampled once a second would look like one
    /// long hold.
    pub write_marker: u64,
    /// Every `/proc/locks` record (filtered here by the files' identities).
    pub locks: &'a [LockRecord],
    /// Pids with one of the files open.
    pub openers: &'a BTreeSet<u32>,
    /// Every process read (holders, openers and their ancestors).
    pub processes: &'a BTreeMap<u32, ProcessInfo>,
    /// What the I/O layer could not read, to be stated in the report.
    pub error: Option<&'a str>,
}

/// How a report is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    pub write_lock_warn_after: Duration,
    pub vars: AttributionVars,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            write_lock_warn_after: DEFAULT_WRITE_LOCK_WARN_AFTER,
            vars: AttributionVars::default(),
        }
    }
}

/// The ancestors of `pid` among the processes read, parent first, bounded and cycle-safe.
pub fn collect_ancestors(pid: u32, processes: &BTreeMap<u32, ProcessInfo>) -> Vec<ProcessInfo> {
    let mut chain = Vec::new();
    let mut seen = BTreeSet::from([pid]);
    let mut next = processes.get(&pid).and_then(|p| p.ppid);
    while let Some(ppid) = next {
        if ppid == 0 || chain.len() >= MAX_ANCESTORS || !seen.insert(ppid) {
            break;
        }
        let Some(p) = processes.get(&ppid) else { break };
        chain.push(p.clone());
        next = p.ppid;
    }
    chain
}

fn attribute_pid(pid: Option<u32>, input: &ReportInput<'_>, vars: &AttributionVars) -> Attribution {
    let Some(process) = pid.and_then(|p| input.processes.get(&p)) else {
        return Attribution::default();
    };
    attribute(
        process,
        &collect_ancestors(process.pid, input.processes),
        vars,
    )
}

/// Builds the report of one database. Touches `tracker` for every lock held (the caller ends the
/// observation once every database is done, so one tracker serves all of them: keep one tracker per
/// list of targets, since a key not touched in an observation is forgotten). `error` is the input's
/// error plus a count of processes whose attribution failed on an unreadable environment.
pub fn build_report(
    input: &ReportInput<'_>,
    tracker: &mut FirstSeen,
    now: DateTime<Utc>,
    opts: &ReportOptions,
) -> SqliteReport {
    let decoded = decode_target_locks(input);
    let journal_mode = infer_journal_mode(&input.files, &decoded);
    let mut holds = sort_holds(input, decoded, journal_mode, tracker, now, opts);
    let warnings = warn_long_write_locks(&holds.holders, opts.write_lock_warn_after);
    let open_without_lock = list_open_without_lock(input, &mut holds, opts);
    SqliteReport {
        path: input.path.to_owned(),
        journal_mode,
        holders: holds.holders,
        waiters: holds.waiters,
        open_without_lock,
        warnings,
        error: join_errors(input.error, &holds.unattributable),
    }
}

/// One kernel lock record on one of the database's files, decoded into a SQLite state.
type DecodedLock<'a> = (&'a LockRecord, FileRole, Decoded);

/// The lock records on the database's own files, each decoded into the SQLite states it stands for.
fn decode_target_locks<'a>(input: &ReportInput<'a>) -> Vec<DecodedLock<'a>> {
    let mut decoded = Vec::new();
    for record in input.locks {
        let Some(role) = input.files.role_of(record.file) else {
            continue;
        };
        for d in decode_lock(role, record) {
            decoded.push((record, role, d));
        }
    }
    decoded
}

/// WAL when a `-wal` or `-shm` file exists or the WAL index is locked; rollback when only the
/// database file is there.
fn infer_journal_mode(files: &TargetFiles, decoded: &[DecodedLock<'_>]) -> JournalMode {
    let wal_locks_seen = decoded.iter().any(|(_, role, _)| *role == FileRole::Shm);
    if files.wal.is_some() || files.shm.is_some() || wal_locks_seen {
        JournalMode::Wal
    } else if files.db.is_some() {
        JournalMode::Rollback
    } else {
        JournalMode::Unknown
    }
}

/// The highest rollback state of each (process, blocked) pair on the database file. Each rollback
/// state implies the lower ones of the same process (EXCLUSIVE is even one merged kernel record
/// spanning PENDING, RESERVED and the shared range): only the highest is shown.
fn rank_rollback_states(decoded: &[DecodedLock<'_>]) -> HashMap<(Option<u32>, bool), u8> {
    let mut top_rollback: HashMap<(Option<u32>, bool), u8> = HashMap::new();
    for (record, role, d) in decoded {
        if *role == FileRole::Db {
            if let Some(rank) = d.state.rollback_rank() {
                let top = top_rollback
                    .entry((record.pid, record.blocked))
                    .or_insert(0);
                *top = (*top).max(rank);
            }
        }
    }
    top_rollback
}

/// The locks sorted into holders and waiters, and what the rest of the report needs from them.
#[derive(Default)]
struct Holds {
    holders: Vec<Holder>,
    waiters: Vec<Holder>,
    /// Processes whose only "lock" marks a live connection (the dead-man switch, WAL-mode SHARED).
    connected: BTreeSet<u32>,
    /// Processes that hold a real lock.
    lock_holding: BTreeSet<u32>,
    /// Processes whose worker and namespace stay unknown because an environment could not be read.
    unattributable: BTreeSet<u32>,
}

/// Sorts the decoded locks into holders (ordered by pid, file and state) and waiters: the lower
/// rollback states a process's highest one implies are dropped, a lock that only marks a connection
/// is counted as one, and the same state seen in two records (a split range) is shown once.
fn sort_holds(
    input: &ReportInput<'_>,
    decoded: Vec<DecodedLock<'_>>,
    journal_mode: JournalMode,
    tracker: &mut FirstSeen,
    now: DateTime<Utc>,
    opts: &ReportOptions,
) -> Holds {
    let top_rollback = rank_rollback_states(&decoded);
    let mut holds = Holds::default();
    let mut seen_holds = BTreeSet::new();
    for (record, role, d) in decoded {
        if let Some(rank) = d.state.rollback_rank() {
            if top_rollback.get(&(record.pid, record.blocked)) != Some(&rank) {
                continue;
            }
        }
        let marks_connection = d.state == LockState::Dms
            || (journal_mode == JournalMode::Wal
                && role == FileRole::Db
                && d.state == LockState::Shared);
        if marks_connection && !record.blocked {
            holds.connected.extend(record.pid);
            continue;
        }
        if !seen_holds.insert((record.pid, record.blocked, role, d.state, d.detail.clone())) {
            continue;
        }
        let holder = describe_holder(input, record, role, d, tracker, now, opts);
        if holder.attribution_unreadable {
            holds.unattributable.extend(record.pid);
        }
        if record.blocked {
            holds.waiters.push(holder.holder);
        } else {
            holds.lock_holding.extend(record.pid);
            holds.holders.push(holder.holder);
        }
    }
    holds.holders.sort_by_key(|h| (h.pid, h.file, h.lock));
    holds
}

/// A holder (or waiter) and whether its attribution failed on an unreadable environment.
struct DescribedHolder {
    holder: Holder,
    attribution_unreadable: bool,
}

/// One lock as a [`Holder`]: its process attributed to a worker and run, and how long the lock has
/// been held (0 for a waiter).
fn describe_holder(
    input: &ReportInput<'_>,
    record: &LockRecord,
    role: FileRole,
    d: Decoded,
    tracker: &mut FirstSeen,
    now: DateTime<Utc>,
    opts: &ReportOptions,
) -> DescribedHolder {
    let process = record.pid.and_then(|p| input.processes.get(&p));
    let attribution = attribute_pid(record.pid, input, &opts.vars);
    let held_for_s = if record.blocked {
        0.0
    } else {
        let key = HoldKey {
            pid: record.pid,
            start_ticks: process.and_then(|p| p.start_ticks),
            file: record.file,
            state: d.state,
            mode: record.mode,
            write_marker: if d.state.is_write() {
                input.write_marker
            } else {
                0
            },
        };
        let first = tracker.touch(key, now);
        (now - first).num_milliseconds().max(0) as f64 / 1000.0
    };
    let holder = Holder {
        pid: record.pid,
        lock: d.state,
        mode: record.mode,
        file: role,
        worker: attribution.worker,
        run_id: attribution.run_id,
        namespace: attribution.namespace,
        command: process.map(ProcessInfo::command).unwrap_or_default(),
        held_for_s,
        via: attribution.via,
        // An OFD lock has no pid in /proc/locks: say so instead of an empty holder.
        detail: d.detail.or_else(|| {
            record.pid.is_none().then(|| {
                "an open-file-description (OFD) lock: the kernel does not say which process \
                 holds it"
                    .to_string()
            })
        }),
    };
    DescribedHolder {
        holder,
        attribution_unreadable: attribution.unreadable,
    }
}

/// A warning for each write lock held longer than `warn_after`.
fn warn_long_write_locks(holders: &[Holder], warn_after: Duration) -> Vec<SqliteWarning> {
    let threshold = warn_after.as_secs_f64();
    holders
        .iter()
        .filter(|h| h.lock.is_write() && h.held_for_s > threshold)
        .map(|h| SqliteWarning {
            code: SqliteWarningCode::WriteLockHeld,
            pid: h.pid,
            lock: h.lock,
            held_for_s: h.held_for_s,
            threshold_s: threshold,
            message: format!(
                "{} held for {:.1} s by pid {} (longer than {:.1} s): other connections wait on it \
                 until their busy timeout",
                h.lock,
                h.held_for_s,
                h.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                threshold
            ),
        })
        .collect()
}

/// The processes that have one of the files open, or are connected, without holding a lock; adds
/// those whose environment could not be read to `holds.unattributable`.
fn list_open_without_lock(
    input: &ReportInput<'_>,
    holds: &mut Holds,
    opts: &ReportOptions,
) -> Vec<OpenWithoutLock> {
    let pids: BTreeSet<u32> = input
        .openers
        .iter()
        .chain(holds.connected.iter())
        .copied()
        .filter(|pid| !holds.lock_holding.contains(pid))
        .collect();
    pids.into_iter()
        .map(|pid| {
            let a = attribute_pid(Some(pid), input, &opts.vars);
            if a.unreadable {
                holds.unattributable.insert(pid);
            }
            OpenWithoutLock {
                pid,
                worker: a.worker,
                run_id: a.run_id,
                namespace: a.namespace,
                command: input
                    .processes
                    .get(&pid)
                    .map(ProcessInfo::command)
                    .unwrap_or_default(),
                via: a.via,
                connected: holds.connected.contains(&pid),
            }
        })
        .collect()
}

/// The input's error, and how many processes could not be attributed, as one message.
fn join_errors(input_error: Option<&str>, unattributable: &BTreeSet<u32>) -> Option<String> {
    let mut errors: Vec<String> = input_error.map(str::to_owned).into_iter().collect();
    if !unattributable.is_empty() {
        let n = unattributable.len();
        errors.push(format!(
            "the environment of {n} process{} (or of an ancestor) could not be read: worker and \
             namespace unknown for {}",
            if n == 1 { "" } else { "es" },
            if n == 1 { "it" } else { "them" }
        ));
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DB: FileId = FileId {
        major: 8,
        minor: 1,
        inode: 1234567,
    };
    const SHM: FileId = FileId {
        major: 8,
        minor: 1,
        inode: 7654321,
    };

    fn make_record(mode: LockMode, start: u64, end: Option<u64>) -> LockRecord {
        LockRecord {
            blocked: false,
            class: LockClass::Posix,
            mode,
            pid: Some(42),
            file: DB,
            start,
            end,
        }
    }

    fn decode_states(role: FileRole, r: &LockRecord) -> Vec<LockState> {
        decode_lock(role, r).into_iter().map(|d| d.state).collect()
    }

    #[test]
    fn parses_a_posix_line() {
        let r =
            parse_lock_line("1: POSIX  ADVISORY  WRITE 12345 08:01:1234567 1073741825 1073741825")
                .expect("valid line");
        assert_eq!(r, {
            let mut e = make_record(LockMode::Exclusive, RESERVED_BYTE, Some(RESERVED_BYTE));
            e.pid = Some(12345);
            e
        });
    }

    #[test]
    fn parses_waiters_ofd_flock_lease_eof_and_hex_devices() {
        let r = parse_lock_line("3: -> POSIX  ADVISORY  READ 99 fe:1a:10 0 EOF").expect("waiter");
        assert!(r.blocked);
        assert_eq!(r.mode, LockMode::Shared);
        assert_eq!(r.end, None);
        assert_eq!(
            r.file,
            FileId {
                major: 0xfe,
                minor: 0x1a,
                inode: 10
            }
        );
        let r = parse_lock_line("4: OFDLCK ADVISORY  WRITE -1 08:01:5 128 128").expect("ofd");
        assert_eq!((r.class, r.pid), (LockClass::Ofd, None));
        let r =
            parse_lock_line("5: FLOCK  ADVISORY  WRITE 14619 fe:00:5308615 0 EOF").expect("flock");
        assert_eq!(r.class, LockClass::Flock);
        let r = parse_lock_line("6: LEASE  ACTIVE    READ 1 08:01:2 0 EOF").expect("lease");
        assert_eq!(r.class, LockClass::Lease);
        let r =
            parse_lock_line("7: LEASE  BREAKER   UNLCK 1 08:01:2 0 EOF").expect("breaking lease");
        assert_eq!(r.mode, LockMode::Unknown);
        let r = parse_lock_line("8: DELEG  ACTIVE    READ 1 08:01:2 0 EOF").expect("unknown class");
        assert_eq!(r.class, LockClass::Unknown("DELEG".into()));
    }

    #[test]
    fn refuses_malformed_lines() {
        for line in [
            "",
            "1:",
            "x: POSIX ADVISORY WRITE 1 08:01:2 0 EOF",
            "1: POSIX ADVISORY WRITE abc 08:01:2 0 EOF",
            "1: POSIX ADVISORY WRITE -2 08:01:2 0 EOF",
            "1: POSIX ADVISORY WRITE 1 <none>:0 0 EOF",
            "1: POSIX ADVISORY WRITE 1 08:01:2:3 0 EOF",
            "1: POSIX ADVISORY WRITE 1 zz:01:2 0 EOF",
            "1: POSIX ADVISORY WRITE 1 08:01:2 5 4",
            "1: POSIX ADVISORY WRITE 1 08:01:2 0",
            "1: POSIX ADVISORY WRITE 1 08:01:2 0 99999999999999999999999",
        ] {
            assert!(parse_lock_line(line).is_err(), "{line:?} should not parse");
        }
        let (records, unparsed) =
            parse_proc_locks("1: POSIX ADVISORY WRITE 1 08:01:2 0 EOF\ngarbage\n\n");
        assert_eq!((records.len(), unparsed), (1, 1));
    }

    proptest! {
        #[test]
        fn lock_line_parsing_never_panics(line in "\\PC*") {
            let _ = parse_lock_line(&line);
        }

        #[test]
        fn lock_line_parsing_never_panics_on_near_misses(
            id in "[0-9:>-]{0,4}",
            class in "(POSIX|FLOCK|OFDLCK|LEASE|->|[A-Z]{0,6})",
            mode in "(READ|WRITE|UNLCK|x)",
            pid in "-?[0-9]{0,12}",
            dev in "[0-9a-fz:]{0,12}",
            start in "[0-9]{0,22}",
            end in "([0-9]{0,22}|EOF)",
        ) {
            let line = format!("{id} {class} ADVISORY {mode} {pid} {dev} {start} {end}");
            if let Ok(r) = parse_lock_line(&line) {
                prop_assert!(r.end.is_none_or(|e| e >= r.start));
            }
        }

        #[test]
        fn formatted_lock_lines_parse_back(
            blocked in any::<bool>(),
            class in prop_oneof![Just(LockClass::Posix), Just(LockClass::Ofd), Just(LockClass::Flock)],
            write in any::<bool>(),
            pid in proptest::option::of(0u32..=u32::MAX),
            major in 0u32..4096, minor in 0u32..1_048_576, inode in any::<u64>(),
            start in any::<u64>(), len in proptest::option::of(0u64..1_000_000),
        ) {
            let end = len.map(|l| start.saturating_add(l));
            let line = format!(
                "12: {}{class} ADVISORY  {} {} {major:02x}:{minor:02x}:{inode} {start} {}",
                if blocked { "-> " } else { "" },
                if write { "WRITE" } else { "READ" },
                pid.map_or(-1, i64::from),
                end.map_or_else(|| "EOF".to_owned(), |e| e.to_string()),
            );
            let want = LockRecord {
                blocked,
                class,
                mode: if write { LockMode::Exclusive } else { LockMode::Shared },
                pid,
                file: FileId { major, minor, inode },
                start,
                end,
            };
            prop_assert_eq!(parse_lock_line(&line), Ok(want));
        }

        #[test]
        fn decoding_never_panics_and_never_drops(start in 0u64..=u64::MAX, len in 0u64..2000, eof in any::<bool>(), write in any::<bool>(), shm in any::<bool>()) {
            let end = if eof { None } else { Some(start.saturating_add(len)) };
            let mode = if write { LockMode::Exclusive } else { LockMode::Shared };
            let role = if shm { FileRole::Shm } else { FileRole::Db };
            prop_assert!(!decode_lock(role, &make_record(mode, start, end)).is_empty());
        }
    }

    #[test]
    fn decodes_rollback_states_at_documented_offsets() {
        use LockState::*;
        // Offsets as in SQLite's os_unix.c: PENDING 0x40000000, RESERVED +1, SHARED +2 for 510 bytes.
        assert_eq!(PENDING_BYTE, 1073741824);
        let sh = (1073741826, Some(1073742335));
        assert_eq!(
            decode_states(FileRole::Db, &make_record(LockMode::Shared, sh.0, sh.1)),
            vec![Shared]
        );
        assert_eq!(
            decode_states(
                FileRole::Db,
                &make_record(LockMode::Exclusive, 1073741825, Some(1073741825))
            ),
            vec![Reserved]
        );
        assert_eq!(
            decode_states(
                FileRole::Db,
                &make_record(LockMode::Exclusive, 1073741824, Some(1073741824))
            ),
            vec![Pending]
        );
        assert_eq!(
            decode_states(FileRole::Db, &make_record(LockMode::Exclusive, sh.0, sh.1)),
            vec![Exclusive]
        );
        // What Linux shows for BEGIN EXCLUSIVE: one merged record.
        assert_eq!(
            decode_states(
                FileRole::Db,
                &make_record(LockMode::Exclusive, 1073741824, Some(1073742335))
            ),
            vec![Pending, Reserved, Exclusive]
        );
    }

    #[test]
    fn keeps_what_it_cannot_decode_with_its_range() {
        use LockState::*;
        let d = decode_lock(FileRole::Db, &make_record(LockMode::Exclusive, 0, Some(0)));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].state, Other);
        assert_eq!(
            d[0].detail.as_deref(),
            Some("POSIX WRITE on database file bytes 0..0")
        );
        // Partial shared range, read lock on the reserved byte, whole-file lock, journal lock.
        assert_eq!(
            decode_states(
                FileRole::Db,
                &make_record(LockMode::Shared, 1073741826, Some(1073741900))
            ),
            vec![Other]
        );
        assert_eq!(
            decode_states(
                FileRole::Db,
                &make_record(LockMode::Shared, 1073741825, Some(1073741825))
            ),
            vec![Other]
        );
        assert_eq!(
            decode_states(FileRole::Db, &make_record(LockMode::Exclusive, 0, None)),
            vec![Pending, Reserved, Exclusive, Other]
        );
        assert_eq!(
            decode_states(
                FileRole::Journal,
                &make_record(LockMode::Exclusive, 0, None)
            ),
            vec![Other]
        );
        let mut flock = make_record(LockMode::Exclusive, 0, None);
        flock.class = LockClass::Flock;
        let d = decode_lock(FileRole::Db, &flock);
        assert_eq!(d[0].state, Other);
        assert!(d[0]
            .detail
            .as_deref()
            .is_some_and(|s| s.starts_with("FLOCK WRITE")));
    }

    #[test]
    fn decodes_wal_index_slots_at_documented_offsets() {
        use LockState::*;
        let one = |off: u64, mode| decode_states(FileRole::Shm, &make_record(mode, off, Some(off)));
        assert_eq!(one(120, LockMode::Exclusive), vec![WalWrite]);
        assert_eq!(one(121, LockMode::Exclusive), vec![WalCheckpoint]);
        assert_eq!(one(122, LockMode::Exclusive), vec![WalRecover]);
        for i in 0..5u8 {
            assert_eq!(one(123 + u64::from(i), LockMode::Shared), vec![WalRead(i)]);
        }
        assert_eq!(one(128, LockMode::Shared), vec![Dms]);
        // Merged by the kernel: read mark 4 and the dead-man switch.
        assert_eq!(
            decode_states(
                FileRole::Shm,
                &make_record(LockMode::Shared, 127, Some(128))
            ),
            vec![WalRead(4), Dms]
        );
        // Recovery: every slot but the write lock, exclusive.
        assert_eq!(
            decode_states(
                FileRole::Shm,
                &make_record(LockMode::Exclusive, 121, Some(127))
            ),
            vec![
                WalCheckpoint,
                WalRecover,
                WalRead(0),
                WalRead(1),
                WalRead(2),
                WalRead(3),
                WalRead(4)
            ]
        );
        assert_eq!(one(0, LockMode::Exclusive), vec![Other]);
        assert_eq!(
            decode_states(
                FileRole::Shm,
                &make_record(LockMode::Shared, 128, Some(129))
            ),
            vec![Dms, Other]
        );
        assert!(
            WalWrite.is_write()
                && Reserved.is_write()
                && Pending.is_write()
                && Exclusive.is_write()
        );
        assert!(!WalRead(0).is_write() && !Shared.is_write() && !WalCheckpoint.is_write());
        assert_eq!(WalRead(3).to_string(), "wal_read3");
    }

    fn make_process(pid: u32, ppid: u32, env: &[(&str, &str)], cmd: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: Some(ppid),
            start_ticks: Some(u64::from(pid)),
            environ: Some(
                env.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            cmdline: cmd.split(' ').map(str::to_owned).collect(),
        }
    }

    #[test]
    fn attributes_from_own_environment() {
        let p = make_process(
            10,
            1,
            &[
                ("PYTEST_XDIST_WORKER", "gw3"),
                ("PYTEST_XDIST_TESTRUNUID", "abcdef"),
                ("HONEY_TEST_SCHEMA_NAMESPACE", "p1t2r0000000a"),
            ],
            "python -m pytest",
        );
        let a = attribute(&p, &[], &AttributionVars::default());
        assert_eq!(a.worker, Some(Worker::Gw(3)));
        assert_eq!(a.run_id.as_deref(), Some("abcdef"));
        assert_eq!(
            a.namespace.as_ref().map(Namespace::as_str),
            Some("p1t2r0000000a")
        );
        assert!(a.via.is_empty());
    }

    #[test]
    fn a_subprocess_inherits_from_its_nearest_attributed_ancestor() {
        let server = make_process(30, 20, &[("PATH", "/bin")], "uvicorn api");
        let shell = make_process(20, 10, &[], "sh -c uvicorn");
        let worker = make_process(
            10,
            5,
            &[
                ("PYTEST_XDIST_WORKER", "gw1"),
                ("HONEY_TEST_SCHEMA_NAMESPACE", "abc123"),
            ],
            "pytest",
        );
        let outer = make_process(5, 1, &[("PYTEST_XDIST_WORKER", "gw9")], "pytest outer");
        let a = attribute(
            &server,
            &[shell, worker, outer],
            &AttributionVars::default(),
        );
        assert_eq!(a.worker, Some(Worker::Gw(1)));
        assert_eq!(a.namespace.as_ref().map(Namespace::as_str), Some("abc123"));
        assert_eq!(a.via, vec![20, 10]);
    }

    #[test]
    fn attribution_never_mixes_processes_and_never_guesses() {
        // The nearest process setting any variable decides, even if it lacks the others.
        let child = make_process(2, 1, &[("HONEY_TEST_SCHEMA_NAMESPACE", "ns1")], "x");
        let parent = make_process(1, 0, &[("PYTEST_XDIST_WORKER", "gw0")], "y");
        let a = attribute(
            &child,
            std::slice::from_ref(&parent),
            &AttributionVars::default(),
        );
        assert_eq!(
            (a.worker, a.namespace.map(Namespace::into_string)),
            (None, Some("ns1".into()))
        );
        // Malformed values are dropped, not guessed.
        let bad = make_process(
            3,
            1,
            &[
                ("PYTEST_XDIST_WORKER", "gw01"),
                ("HONEY_TEST_SCHEMA_NAMESPACE", "Bad_NS"),
            ],
            "z",
        );
        let a = attribute(&bad, &[parent], &AttributionVars::default());
        assert_eq!((a.worker, a.namespace), (None, None));
        // A custom namespace variable.
        let vars = AttributionVars {
            namespace: "MY_NS".into(),
            ..AttributionVars::default()
        };
        let p = make_process(4, 1, &[("MY_NS", "zz9")], "z");
        assert_eq!(
            attribute(&p, &[], &vars)
                .namespace
                .map(Namespace::into_string),
            Some("zz9".into())
        );
        // An unreadable environment stops the walk.
        let mut hidden = make_process(5, 1, &[], "z");
        hidden.environ = None;
        let a = attribute(
            &hidden,
            &[make_process(1, 0, &[("PYTEST_XDIST_WORKER", "gw0")], "y")],
            &AttributionVars::default(),
        );
        assert!(a.unreadable && a.worker.is_none());
        // The machine's init ends the walk quietly: nobody's run, and often unreadable.
        let mut init = make_process(1, 0, &[], "init");
        init.environ = None;
        let a = attribute(
            &make_process(9, 8, &[], "server"),
            &[make_process(8, 1, &[], "sh"), init],
            &AttributionVars::default(),
        );
        assert!(!a.unreadable, "init's environment is not an error");
        assert_eq!(a.worker, None);
    }

    #[test]
    fn parses_proc_files() {
        let env = parse_environ(b"A=1\0PYTEST_XDIST_WORKER=gw2\0B=x=y\0junk\0\0");
        assert_eq!(
            env.get("PYTEST_XDIST_WORKER").map(String::as_str),
            Some("gw2")
        );
        assert_eq!(env.get("B").map(String::as_str), Some("x=y"));
        assert!(!env.contains_key("junk"));
        assert_eq!(
            parse_cmdline(b"python3\0-c\0print(1)\0"),
            vec!["python3", "-c", "print(1)"]
        );
        assert!(parse_cmdline(b"").is_empty());
        let stat =
            "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 1";
        assert_eq!(parse_stat(stat), Some((77, 98765)));
        assert_eq!(parse_stat("1234 (x"), None);
        assert_eq!(parse_stat("1234 (x) S"), None);
    }

    #[test]
    fn first_seen_counts_from_first_observation_and_forgets_released_locks() {
        let key = HoldKey {
            pid: Some(1),
            start_ticks: Some(5),
            file: DB,
            state: LockState::Reserved,
            mode: LockMode::Exclusive,
            write_marker: 0,
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).expect("valid");
        let t1 = t0 + chrono::Duration::seconds(3);
        let mut fs = FirstSeen::new();
        assert_eq!(fs.touch(key, t0), t0);
        fs.end_observation();
        assert_eq!(fs.touch(key, t1), t0);
        fs.end_observation();
        fs.end_observation(); // not touched in this observation: released
        assert!(fs.is_empty());
        assert_eq!(fs.touch(key, t1), t1);
        // A reused pid is another process.
        let reused = HoldKey {
            start_ticks: Some(6),
            ..key
        };
        assert_eq!(
            fs.touch(reused, t1 + chrono::Duration::seconds(1)),
            t1 + chrono::Duration::seconds(1)
        );
    }

    fn build_and_end_observation(
        locks: &[LockRecord],
        files: TargetFiles,
        processes: &BTreeMap<u32, ProcessInfo>,
        openers: &BTreeSet<u32>,
        tracker: &mut FirstSeen,
        now: DateTime<Utc>,
        opts: &ReportOptions,
    ) -> SqliteReport {
        let r = build_report(
            &ReportInput {
                path: "/tmp/prefect_gw0.db",
                files,
                write_marker: 0,
                locks,
                openers,
                processes,
                error: None,
            },
            tracker,
            now,
            opts,
        );
        tracker.end_observation();
        r
    }

    #[test]
    fn builds_a_rollback_report_with_attribution_ages_and_warnings() {
        let files = TargetFiles {
            db: Some(DB),
            ..TargetFiles::default()
        };
        let (records, unparsed) = parse_proc_locks(
            "1: POSIX  ADVISORY  WRITE 30 08:01:1234567 1073741825 1073741825\n\
             2: POSIX  ADVISORY  READ  30 08:01:1234567 1073741826 1073742335\n\
             3: POSIX  ADVISORY  READ  40 08:01:1234567 1073741826 1073742335\n\
             4: POSIX  ADVISORY  WRITE 50 08:01:999 0 EOF\n",
        );
        assert_eq!(unparsed, 0);
        let processes: BTreeMap<u32, ProcessInfo> = [
            make_process(30, 10, &[], "uvicorn\x1b[2J api"),
            make_process(10, 1, &[("PYTEST_XDIST_WORKER", "gw0")], "pytest"),
            make_process(40, 1, &[("PYTEST_XDIST_WORKER", "gw1")], "pytest"),
            make_process(60, 1, &[], "sqlite3 shell"),
        ]
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
        let openers = BTreeSet::from([30, 40, 60]);
        let opts = ReportOptions {
            write_lock_warn_after: Duration::from_secs(2),
            ..ReportOptions::default()
        };
        let mut tracker = FirstSeen::new();
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).expect("valid");
        let r = build_and_end_observation(
            &records,
            files,
            &processes,
            &openers,
            &mut tracker,
            t0,
            &opts,
        );
        assert_eq!(r.journal_mode, JournalMode::Rollback);
        let summary: Vec<_> = r
            .holders
            .iter()
            .map(|h| (h.pid, h.lock, h.worker))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some(30), LockState::Reserved, Some(Worker::Gw(0))),
                (Some(40), LockState::Shared, Some(Worker::Gw(1)))
            ]
        );
        assert_eq!(r.holders[0].via, vec![10]);
        assert_eq!(r.holders[0].command_display(), "uvicorn\\x1b[2J api");
        assert_eq!(r.holders[0].command, "uvicorn\x1b[2J api");
        assert_eq!(
            r.open_without_lock
                .iter()
                .map(|o| o.pid)
                .collect::<Vec<_>>(),
            vec![60]
        );
        assert!(r.warnings.is_empty());

        let t1 = t0 + chrono::Duration::milliseconds(2500);
        let r = build_and_end_observation(
            &records,
            files,
            &processes,
            &openers,
            &mut tracker,
            t1,
            &opts,
        );
        assert_eq!(r.holders[0].held_for_s, 2.5);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(
            (r.warnings[0].pid, r.warnings[0].lock),
            (Some(30), LockState::Reserved)
        );
        // A shared lock does not warn however old.
        assert_eq!(r.holders[1].held_for_s, 2.5);
        let json = serde_json::to_value(&r).expect("serialisable");
        assert_eq!(json["holders"][0]["lock"], "reserved");
        assert_eq!(json["holders"][0]["worker"], "gw0");
        assert_eq!(json["journal_mode"], "rollback");
        assert_eq!(json["holders"][0]["held_for_s"], 2.5);
        // Recordings are read back: the report survives a round trip unchanged.
        let back: SqliteReport = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, r);
    }

    #[test]
    fn every_lock_state_name_reads_back() {
        let mut states = vec![
            LockState::Shared,
            LockState::Reserved,
            LockState::Pending,
            LockState::Exclusive,
            LockState::WalWrite,
            LockState::WalCheckpoint,
            LockState::WalRecover,
            LockState::Dms,
            LockState::Other,
        ];
        states.extend((0..=4).map(LockState::WalRead));
        for s in states {
            assert_eq!(LockState::from_name(&s.name()), Some(s));
        }
        for bad in ["wal_read5", "wal_read", "WAL_WRITE", "", "wal_read-1"] {
            assert_eq!(LockState::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn builds_a_wal_report_where_dms_and_shared_only_mean_connected() {
        let files = TargetFiles {
            db: Some(DB),
            shm: Some(SHM),
            ..TargetFiles::default()
        };
        let (records, _) = parse_proc_locks(
            "1: POSIX  ADVISORY  WRITE 30 08:01:7654321 120 120\n\
             2: POSIX  ADVISORY  READ  30 08:01:7654321 124 124\n\
             3: POSIX  ADVISORY  READ  30 08:01:7654321 128 128\n\
             4: POSIX  ADVISORY  READ  30 08:01:1234567 1073741826 1073742335\n\
             5: POSIX  ADVISORY  READ  40 08:01:7654321 128 128\n\
             6: POSIX  ADVISORY  READ  40 08:01:1234567 1073741826 1073742335\n\
             7: -> POSIX  ADVISORY  WRITE 50 08:01:7654321 120 120\n",
        );
        let processes = BTreeMap::new();
        let mut tracker = FirstSeen::new();
        let now = DateTime::<Utc>::from_timestamp(1_000, 0).expect("valid");
        let r = build_and_end_observation(
            &records,
            files,
            &processes,
            &BTreeSet::new(),
            &mut tracker,
            now,
            &ReportOptions::default(),
        );
        assert_eq!(r.journal_mode, JournalMode::Wal);
        let held: Vec<_> = r.holders.iter().map(|h| (h.pid, h.lock)).collect();
        assert_eq!(
            held,
            vec![
                (Some(30), LockState::WalWrite),
                (Some(30), LockState::WalRead(1))
            ]
        );
        assert_eq!(r.open_without_lock.len(), 1);
        assert_eq!(
            (r.open_without_lock[0].pid, r.open_without_lock[0].connected),
            (40, true)
        );
        assert_eq!(r.waiters.len(), 1);
        assert_eq!(r.waiters[0].lock, LockState::WalWrite);
    }

    #[test]
    fn unreadable_environments_are_counted_in_error() {
        let files = TargetFiles {
            db: Some(DB),
            ..TargetFiles::default()
        };
        let (records, _) =
            parse_proc_locks("1: POSIX  ADVISORY  WRITE 30 08:01:1234567 1073741825 1073741825\n");
        let mut hidden = make_process(30, 10, &[], "server");
        hidden.environ = None;
        let mut hidden_parent = make_process(41, 1, &[], "someone else's shell");
        hidden_parent.environ = None;
        let processes: BTreeMap<u32, ProcessInfo> =
            [hidden, hidden_parent, make_process(40, 41, &[], "python")]
                .into_iter()
                .map(|p| (p.pid, p))
                .collect();
        let r = build_report(
            &ReportInput {
                path: "/tmp/x.db",
                files,
                write_marker: 0,
                locks: &records,
                openers: &BTreeSet::from([40]),
                processes: &processes,
                error: Some("3 processes of other users could not be read"),
            },
            &mut FirstSeen::new(),
            DateTime::<Utc>::from_timestamp(1_000, 0).expect("valid"),
            &ReportOptions::default(),
        );
        assert_eq!(
            r.error.as_deref(),
            Some(
                "3 processes of other users could not be read; the environment of 2 processes (or \
                 of an ancestor) could not be read: worker and namespace unknown for them"
            )
        );
        assert_eq!(r.holders[0].worker, None);
    }

    #[test]
    fn a_missing_database_is_unknown_and_the_error_is_kept() {
        let r = SqliteReport::failed("/x/*.db", "no file matches the pattern\x07");
        assert_eq!(r.journal_mode, JournalMode::Unknown);
        assert_eq!(
            r.error_display().as_deref(),
            Some("no file matches the pattern\\x07")
        );
    }
}
