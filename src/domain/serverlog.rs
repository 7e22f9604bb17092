//! The server's own log as evidence of lock waits: parsing `jsonlog` and `csvlog` bytes into
//! records, classifying the records that speak of lock waits, and matching them to the episodes the
//! polls saw (or making episodes of them when no poll saw the wait).
//!
//! Polling samples: a `lock_timeout` of 150 ms between two polls a second apart leaves no trace in
//! `pg_stat_activity`. The server writes every one of them: the `ERROR` with SQLSTATE 55P03 (or
//! 40P01, or 57014 for a statement timeout or cancel while waiting), and with `log_lock_waits` a
//! `LOG` line naming the pids that hold the lock once a wait passes `deadlock_timeout`.
//!
//! The log is input. A record ends only where the format says it ends: in `jsonlog` a raw newline
//! never occurs inside a record (the server escapes it inside JSON strings), in `csvlog` a newline
//! inside a quoted field is part of the field. So a crafted `application_name` or statement with
//! newlines or control bytes can never forge another record. Records and fields are capped
//! ([`MAX_RECORD_BYTES`], [`MAX_FIELD_CHARS`]); a partial last record is kept for the next read.
//! Nothing here panics on any bytes (property-tested in `tests/properties.rs`).
//!
//! Pure: bytes and snapshots in, records and episodes out; `now` is a parameter.

use crate::domain::format::one_line;
use crate::domain::incidents::{BlockerSeen, Episode, Evidence, Outcome, SqlstateSource};
use crate::domain::naming::{parse_label, LabelParse};
use crate::domain::snapshot::{SessionReport, Snapshot};
use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// A record longer than this (a huge statement) is skipped whole.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Each text field is cut to this many characters.
pub const MAX_FIELD_CHARS: usize = 4096;
/// Query text kept per episode, in characters (as the polls keep it).
const QUERY_CHARS: usize = 200;
/// How long a poll-ended episode stays matchable by a log line that arrives later.
pub const MATCH_WINDOW: Duration = Duration::from_secs(120);
/// How long a log error waits for the poll episode that was still open when it arrived.
pub const PENDING_GRACE: Duration = Duration::from_secs(10);
/// How long an episode the polls ended is held back for the log read that may complete it (so it
/// is given once, complete), at most.
pub const HOLD_MAX: Duration = Duration::from_secs(5);
/// How long sessions seen by the polls are remembered for naming blockers and waiters.
pub const SEEN_FOR: Duration = Duration::from_secs(600);
/// Clock slack between a poll episode's window and a log line's timestamp (both are the server's
/// clock, but the log has millisecond precision and a poll episode's end can be an upper bound).
const TIME_SLACK: Duration = Duration::from_secs(3);

/// What an episode says when the log named no holder and no poll saw one.
pub const BLOCKER_UNKNOWN: &str =
    "blocker unknown: the wait was shorter than deadlock_timeout and than the poll interval";

/// The structured log formats pgswarm reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// PostgreSQL 15+: one JSON object per line.
    Jsonlog,
    /// One CSV record per entry; quoted fields may span lines.
    Csvlog,
}

impl LogFormat {
    /// The name in `log_destination` and `pg_current_logfile(...)`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Jsonlog => "jsonlog",
            LogFormat::Csvlog => "csvlog",
        }
    }
}

/// One log entry, the fields pgswarm uses (each cut to [`MAX_FIELD_CHARS`], raw otherwise:
/// sanitise before a terminal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    pub at: Option<DateTime<Utc>>,
    pub pid: Option<i32>,
    /// From `session_id` (hex backend start . hex pid): whole seconds.
    pub backend_start: Option<DateTime<Utc>>,
    pub database: Option<String>,
    pub application_name: Option<String>,
    pub severity: Option<String>,
    pub sqlstate: Option<String>,
    pub message: Option<String>,
    pub detail: Option<String>,
    pub statement: Option<String>,
}

/// Splits a stream of log bytes into records and parses them. Feed it consecutive reads of one
/// file; [`LogParser::reset`] when switching files.
#[derive(Debug, Clone)]
pub struct LogParser {
    format: LogFormat,
    /// Bytes of the record not yet complete.
    pending: Vec<u8>,
    /// csvlog: inside a quoted field at the end of `pending` (scanned so far).
    in_quotes: bool,
    /// How much of `pending` is scanned.
    scanned: usize,
    /// The current record went past [`MAX_RECORD_BYTES`]: dropped up to its end.
    skipping: bool,
    /// Seconds east of UTC of `log_timezone`, for timestamps whose zone is an abbreviation other
    /// than UTC/GMT.
    utc_offset_s: i32,
    /// Records that did not parse (or were too long), for the health line.
    pub malformed: u64,
}

impl LogParser {
    pub fn new(format: LogFormat, utc_offset_s: i32) -> Self {
        LogParser {
            format,
            pending: Vec::new(),
            in_quotes: false,
            scanned: 0,
            skipping: false,
            utc_offset_s,
            malformed: 0,
        }
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Forgets a partial record (another file starts).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.in_quotes = false;
        self.scanned = 0;
        self.skipping = false;
    }

    /// Bytes held back as the start of a record not yet complete.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next bytes of the file; returns the records they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            // Take in at most what fits the cap, so a record that never ends costs bounded memory.
            let room = (MAX_RECORD_BYTES + 1)
                .saturating_sub(self.pending.len())
                .max(1);
            let take = rest.len().min(room);
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.drain_records(&mut out);
            if self.pending.len() > MAX_RECORD_BYTES {
                // Too long: drop what we have and the rest of it up to its end.
                self.pending.clear();
                self.scanned = 0;
                if !self.skipping {
                    self.malformed += 1;
                }
                self.skipping = true;
            }
        }
        out
    }

    fn drain_records(&mut self, out: &mut Vec<LogRecord>) {
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.pending.len() {
            let b = self.pending[i];
            if self.format == LogFormat::Csvlog && b == b'"' {
                self.in_quotes = !self.in_quotes;
            } else if b == b'\n' && !self.in_quotes {
                let record = &self.pending[start..i];
                if self.skipping {
                    self.skipping = false;
                } else if !record.iter().all(|b| b.is_ascii_whitespace()) {
                    match parse_record(self.format, record, self.utc_offset_s) {
                        Some(r) => out.push(r),
                        None => self.malformed += 1,
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
    }
}

/// Parses one complete record (without its newline).
pub fn parse_record(format: LogFormat, bytes: &[u8], utc_offset_s: i32) -> Option<LogRecord> {
    match format {
        LogFormat::Jsonlog => parse_json(bytes, utc_offset_s),
        LogFormat::Csvlog => parse_csv(bytes, utc_offset_s),
    }
}

#[derive(Deserialize)]
struct JsonRecord {
    timestamp: Option<String>,
    pid: Option<i64>,
    session_id: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
    error_severity: Option<String>,
    state_code: Option<String>,
    message: Option<String>,
    detail: Option<String>,
    statement: Option<String>,
}

fn parse_json(bytes: &[u8], utc_offset_s: i32) -> Option<LogRecord> {
    let text = String::from_utf8_lossy(bytes);
    let j: JsonRecord = serde_json::from_str(&text).ok()?;
    let session = j.session_id.as_deref().and_then(parse_session_id);
    Some(LogRecord {
        at: j
            .timestamp
            .as_deref()
            .and_then(|t| parse_timestamp(t, utc_offset_s)),
        pid: j
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .or(session.map(|s| s.1)),
        backend_start: session.map(|s| s.0),
        database: j.dbname.map(cap),
        application_name: j.application_name.map(cap),
        severity: j.error_severity.map(cap),
        sqlstate: j.state_code.map(cap),
        message: j.message.map(cap),
        detail: j.detail.map(cap),
        statement: j.statement.map(cap),
    })
}

/// csvlog columns (PostgreSQL 13+; the ones used are the same since 9.0).
const CSV_TIME: usize = 0;
const CSV_DATABASE: usize = 2;
const CSV_PID: usize = 3;
const CSV_SESSION: usize = 5;
const CSV_SEVERITY: usize = 11;
const CSV_SQLSTATE: usize = 12;
const CSV_MESSAGE: usize = 13;
const CSV_DETAIL: usize = 14;
const CSV_QUERY: usize = 19;
const CSV_APPLICATION: usize = 22;

fn parse_csv(bytes: &[u8], utc_offset_s: i32) -> Option<LogRecord> {
    let fields = split_csv(bytes)?;
    if fields.len() < 23 {
        return None;
    }
    let text = |i: usize| -> Option<String> {
        let f = fields.get(i)?;
        (!f.is_empty()).then(|| cap(String::from_utf8_lossy(f).into_owned()))
    };
    let session = text(CSV_SESSION).as_deref().and_then(parse_session_id);
    Some(LogRecord {
        at: text(CSV_TIME)
            .as_deref()
            .and_then(|t| parse_timestamp(t, utc_offset_s)),
        pid: text(CSV_PID)
            .and_then(|p| p.parse().ok())
            .or(session.map(|s| s.1)),
        backend_start: session.map(|s| s.0),
        database: text(CSV_DATABASE),
        application_name: text(CSV_APPLICATION),
        severity: text(CSV_SEVERITY),
        sqlstate: text(CSV_SQLSTATE),
        message: text(CSV_MESSAGE),
        detail: text(CSV_DETAIL),
        statement: text(CSV_QUERY),
    })
}

/// RFC 4180 fields of one record; `None` when a quote is not closed or stray bytes follow one.
fn split_csv(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut i = 0;
    let mut quoted = false;
    let mut after_quote = false;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                    after_quote = true;
                }
            } else {
                field.push(b);
            }
        } else if b == b',' {
            fields.push(std::mem::take(&mut field));
            after_quote = false;
        } else if after_quote {
            return None;
        } else if b == b'"' && field.is_empty() {
            quoted = true;
        } else {
            field.push(b);
        }
        i += 1;
        if fields.len() > 64 {
            return None;
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_FIELD_CHARS {
        if let Some((i, _)) = s.char_indices().nth(MAX_FIELD_CHARS) {
            s.truncate(i);
        }
    }
    s
}

/// `6571a2b3.1f40`: backend start (seconds since the epoch) and pid, both hex.
pub fn parse_session_id(s: &str) -> Option<(DateTime<Utc>, i32)> {
    let (start, pid) = s.split_once('.')?;
    if start.len() > 16 || pid.len() > 8 {
        return None;
    }
    let start = i64::from_str_radix(start, 16).ok()?;
    let pid = i32::try_from(u32::from_str_radix(pid, 16).ok()?).ok()?;
    Some((Utc.timestamp_opt(start, 0).single()?, pid))
}

/// `2026-12-07 01:50:00.123 UTC` (the zone is `log_timezone`'s abbreviation or an offset like
/// `+01`); an abbreviation other than UTC/GMT is taken as `utc_offset_s`.
pub fn parse_timestamp(s: &str, utc_offset_s: i32) -> Option<DateTime<Utc>> {
    let (dt, zone) = s.trim().rsplit_once(' ')?;
    let naive = NaiveDateTime::parse_from_str(dt, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let offset_s: i64 = match zone {
        "UTC" | "GMT" | "Z" => 0,
        z if z.starts_with('+') || z.starts_with('-') => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: Vec<&str> = z[1..].split(':').collect();
            let h: i64 = digits.first()?.parse().ok()?;
            let m: i64 = digits.get(1).map_or(Some(0), |m| m.parse().ok())?;
            if h > 15 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => i64::from(utc_offset_s),
    };
    Some(Utc.from_utc_datetime(&naive) - ChronoDuration::seconds(offset_s))
}

/// How a statement that waited for a lock ended, by its SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockErrorKind {
    /// 55P03 `lock_not_available`: `lock_timeout` or `NOWAIT`.
    LockNotAvailable,
    /// 40P01 `deadlock_detected`: this session was the one the detector cancelled.
    Deadlock,
    /// 57014 `query_canceled` (statement timeout or cancel): a lock wait only when something shows
    /// the session was waiting.
    Canceled,
}

impl LockErrorKind {
    /// The kind of an error with this SQLSTATE, for the codes that can end a lock wait.
    pub fn of_sqlstate(code: &str) -> Option<LockErrorKind> {
        match code {
            "55P03" => Some(LockErrorKind::LockNotAvailable),
            "40P01" => Some(LockErrorKind::Deadlock),
            "57014" => Some(LockErrorKind::Canceled),
            _ => None,
        }
    }

    pub fn sqlstate(self) -> &'static str {
        match self {
            LockErrorKind::LockNotAvailable => "55P03",
            LockErrorKind::Deadlock => "40P01",
            LockErrorKind::Canceled => "57014",
        }
    }
}

/// A `log_lock_waits` line: the session has waited `waited` so far, behind `holders`.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitLine {
    pub at: DateTime<Utc>,
    pub pid: i32,
    pub backend_start: Option<DateTime<Utc>>,
    pub waited: Duration,
    pub holders: Vec<i32>,
    pub queue: Vec<i32>,
    pub lock_mode: Option<String>,
    pub lock_type: Option<String>,
}

/// An error that may have ended a lock wait.
#[derive(Debug, Clone, PartialEq)]
pub struct LockError {
    pub at: DateTime<Utc>,
    pub pid: i32,
    pub backend_start: Option<DateTime<Utc>>,
    pub database: Option<String>,
    pub application_name: String,
    pub statement: Option<String>,
    pub kind: LockErrorKind,
    /// 40P01: the pids of the cycle, this one included, in the order the server lists them.
    pub cycle: Vec<i32>,
}

/// What a log record says about lock waits.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    Waiting(WaitLine),
    Ended(LockError),
    /// `process N acquired … after X ms` (`log_lock_waits`): that wait ended with the lock, so its
    /// `still waiting` lines belong to no later error of the session.
    Acquired {
        at: DateTime<Utc>,
        pid: i32,
    },
}

/// Classifies a record; `None` for everything that does not speak of a lock wait. Needs English
/// server messages (`lc_messages = 'C'`) for the `log_lock_waits` lines; errors are read by
/// SQLSTATE alone.
pub fn classify(r: &LogRecord) -> Option<LogEvent> {
    let at = r.at?;
    let pid = r.pid?;
    let severity = r.severity.as_deref()?;
    match severity {
        "LOG" => {
            let message = r.message.as_deref()?;
            let rest = message.strip_prefix("process ")?;
            let (msg_pid, rest) = rest.split_once(' ')?;
            if msg_pid.parse::<i32>().ok()? != pid {
                return None;
            }
            if rest.starts_with("acquired ") {
                return Some(LogEvent::Acquired { at, pid });
            }
            let rest = rest.strip_prefix("still waiting for ")?;
            let (lock, after) = rest.rsplit_once(" after ")?;
            let ms: f64 = after.strip_suffix(" ms")?.parse().ok()?;
            if !(0.0..1e12).contains(&ms) {
                return None;
            }
            let (mode, object) = lock.split_once(" on ").unzip();
            let lock_type = object.and_then(|o| {
                let kind = o.split(' ').next()?;
                Some(match kind {
                    "transaction" => "transactionid".to_string(),
                    "virtual" => "virtualxid".to_string(),
                    "advisory" => "advisory".to_string(),
                    k => one_line(k, 32),
                })
            });
            let detail = r.detail.as_deref().unwrap_or("");
            Some(LogEvent::Waiting(WaitLine {
                at,
                pid,
                backend_start: r.backend_start,
                waited: Duration::from_secs_f64(ms / 1000.0),
                holders: pids_after(detail, "holding the lock: "),
                queue: pids_after(detail, "Wait queue: "),
                lock_mode: mode.map(|m| one_line(m, 40)),
                lock_type,
            }))
        }
        "ERROR" | "FATAL" => {
            let kind = LockErrorKind::of_sqlstate(r.sqlstate.as_deref()?)?;
            let cycle = match kind {
                LockErrorKind::Deadlock => deadlock_cycle(r.detail.as_deref().unwrap_or(""), pid),
                _ => Vec::new(),
            };
            Some(LogEvent::Ended(LockError {
                at,
                pid,
                backend_start: r.backend_start,
                database: r.database.clone(),
                application_name: r.application_name.clone().unwrap_or_default(),
                statement: r.statement.clone(),
                kind,
                cycle,
            }))
        }
        _ => None,
    }
}

/// `Processes holding the lock: 12, 34. Wait queue: 56.`: the pids after `key`, up to the period.
fn pids_after(detail: &str, key: &str) -> Vec<i32> {
    let Some((_, rest)) = detail.split_once(key) else {
        return Vec::new();
    };
    let list = rest.split('.').next().unwrap_or("");
    list.split(',')
        .filter_map(|p| p.trim().parse::<i32>().ok())
        .take(64)
        .collect()
}

/// The cycle of a 40P01's detail: its first lines, `Process 12 waits for ShareLock on
/// transaction 7; blocked by process 34.`, each blocked by the next and the last by the first.
/// Only those leading lines are read (the query texts the server adds after them, `Process 12:
/// UPDATE ...`, are input and may contain anything); a detail that does not form a cycle through
/// `pid` gives no cycle.
fn deadlock_cycle(detail: &str, pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut blocked_by = Vec::new();
    for line in detail.lines() {
        let Some(rest) = line.strip_prefix("Process ") else {
            break;
        };
        let Some((p, rest)) = rest.split_once(" waits for ") else {
            break;
        };
        let Some((_, by)) = rest.rsplit_once("; blocked by process ") else {
            break;
        };
        let (Ok(p), Ok(by)) = (p.parse::<i32>(), by.trim_end_matches('.').parse::<i32>()) else {
            break;
        };
        pids.push(p);
        blocked_by.push(by);
        if pids.len() > 64 {
            return Vec::new();
        }
    }
    let n = pids.len();
    let closed = n >= 2 && (0..n).all(|i| blocked_by[i] == pids[(i + 1) % n]);
    if closed && pids.contains(&pid) {
        pids
    } else {
        Vec::new()
    }
}

/// A session the polls saw, remembered to name the pids of log lines.
#[derive(Debug, Clone)]
struct Seen {
    backend_start: Option<DateTime<Utc>>,
    database: String,
    application_name: String,
    namespace: Option<String>,
    worker: Option<String>,
    suffix: Option<String>,
    state: Option<String>,
    /// One of pgswarm's own sessions (its sweeps' `lock_timeout` is no test's wait).
    own: bool,
    last_seen: DateTime<Utc>,
}

/// A log error held back because the polls had the same wait open when it arrived.
#[derive(Debug, Clone)]
struct Pending {
    server: String,
    error: LockError,
    /// The `still waiting` line of this wait, taken when the error arrived.
    wait: Option<WaitLine>,
    until: DateTime<Utc>,
}

/// Matches log events to the episodes the polls saw, per server. Feed it every snapshot
/// ([`LogMatcher::note_snapshot`]), every episode the polls ended ([`LogMatcher::note_poll_ended`],
/// which completes them from the log), and the events of each server's log
/// ([`LogMatcher::accept`]); [`LogMatcher::flush`] on every update.
///
/// One wait is one episode: a log error completes the poll episode of the same server and pid
/// (same backend start to the second, the same statement when both show it) whose time window
/// contains the error's timestamp. An episode the polls ended is held until its server's log has been
/// read past its end, so it comes out once, complete; only a log read later than [`HOLD_MAX`]
/// gives it again, completed, under the same `id` (readers of the flight log keep the last line
/// of an id).
#[derive(Debug, Clone, Default)]
pub struct LogMatcher {
    app_prefix: String,
    /// By server, then pid (looked up by `&str`: no allocation per session and poll).
    seen: HashMap<String, HashMap<i32, Vec<Seen>>>,
    waits: HashMap<(String, i32), Vec<WaitLine>>,
    recent: Vec<Episode>,
    pending: Vec<Pending>,
    /// Episodes the polls ended, held for the next log read of their server (with when).
    held: Vec<(Episode, DateTime<Utc>)>,
    /// When each session's last wait ended in the log (an error, or the lock acquired): a
    /// `still waiting` line from before belongs to that wait, never to a later error (the attack
    /// found one connection's errors merged into one ever longer episode).
    ends: HashMap<(String, i32), DateTime<Utc>>,
    /// Errors already taken (server, pid, time): the same record read twice is one wait, two
    /// records are two waits, whatever their statements.
    taken: std::collections::HashSet<(String, i32, i64)>,
    /// When each server's sessions were polled (recent ones): a session the polls saw, then missed
    /// at a later poll, had ended by then, so a later log line's pid is not it (pid reuse).
    polls: HashMap<String, Vec<DateTime<Utc>>>,
}

impl LogMatcher {
    pub fn new(app_prefix: &str) -> Self {
        LogMatcher {
            app_prefix: app_prefix.to_string(),
            ..Default::default()
        }
    }

    /// Remembers the sessions of a snapshot (by server, pid and backend start).
    pub fn note_snapshot(&mut self, snap: &Snapshot) {
        self.note_sessions(snap.taken_at, &snap.sessions);
    }

    /// Remembers sessions seen at `at`.
    pub fn note_sessions(&mut self, at: DateTime<Utc>, sessions: &[SessionReport]) {
        let mut servers: Vec<&str> = sessions.iter().map(|s| s.server.as_str()).collect();
        servers.dedup();
        for server in servers {
            let list = self.polls.entry(server.to_string()).or_default();
            if list.last().is_none_or(|t| *t < at) {
                list.push(at);
            }
        }
        for s in sessions {
            if !self.seen.contains_key(s.server.as_str()) {
                self.seen.insert(s.server.clone(), HashMap::new());
            }
            let by_pid = self.seen.get_mut(s.server.as_str()).expect("inserted");
            let list = by_pid.entry(s.pid).or_default();
            if let Some(x) = list.iter_mut().find(|x| x.backend_start == s.backend_start) {
                x.last_seen = at;
                if x.state != s.state {
                    x.state.clone_from(&s.state);
                }
                continue;
            }
            list.push(Seen {
                backend_start: s.backend_start,
                database: s.database.clone(),
                application_name: s.application_name.clone(),
                namespace: s.namespace.clone(),
                worker: s.worker.clone(),
                suffix: s.suffix.clone(),
                state: s.state.clone(),
                own: s.own,
                last_seen: at,
            });
        }
    }

    /// Drops what is too old to match (call now and then with the snapshots' clock).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let seen_for = ChronoDuration::from_std(SEEN_FOR).unwrap_or_default();
        let window = ChronoDuration::from_std(MATCH_WINDOW).unwrap_or_default();
        self.seen.retain(|_, by_pid| {
            by_pid.retain(|_, v| {
                v.retain(|x| now - x.last_seen < seen_for);
                !v.is_empty()
            });
            !by_pid.is_empty()
        });
        self.waits.retain(|_, v| {
            v.retain(|w| now - w.at < seen_for);
            !v.is_empty()
        });
        self.ends.retain(|_, t| now - *t < seen_for);
        self.taken.retain(|(_, _, micros)| {
            now.timestamp_micros() - micros < window.num_microseconds().unwrap_or(i64::MAX)
        });
        for list in self.polls.values_mut() {
            list.retain(|t| now - *t < seen_for);
        }
        self.recent.retain(|e| now - e.sort_time() < window);
    }

    /// Takes the episodes the polls ended at `now`; returns those that are complete: with
    /// `evidence`, completed from a log error that arrived while they were still open. An episode
    /// that may still get its error from the log (it gave up, or its waiter left, or how it ended
    /// was not seen) on a server whose log is read (`log_read`) is held back until that server's
    /// next log read ([`LogMatcher::release`]) or [`HOLD_MAX`], so that it is given once, complete.
    pub fn note_poll_ended(
        &mut self,
        ended: Vec<Episode>,
        now: DateTime<Utc>,
        log_read: impl Fn(&str) -> bool,
    ) -> Vec<Episode> {
        let mut out = Vec::with_capacity(ended.len());
        for mut e in ended {
            if e.evidence.is_empty() {
                e.evidence = vec![Evidence::Poll];
            }
            if let Some(i) = self
                .pending
                .iter()
                .position(|p| p.server == e.server && matches_episode(&p.error, &e))
            {
                let p = self.pending.remove(i);
                complete(&mut e, &p.error, p.wait.as_ref(), self);
            } else if log_read(&e.server)
                && matches!(
                    e.outcome,
                    Outcome::GaveUp | Outcome::WaiterGone | Outcome::Unknown
                )
            {
                self.held.push((e, now));
                continue;
            }
            self.recent.push(e.clone());
            out.push(e);
        }
        out
    }

    /// `server`'s log was read from `read_started` on to its end: the episodes held for it that
    /// ended before are complete as they are.
    pub fn release(&mut self, server: &str, read_started: DateTime<Utc>) -> Vec<Episode> {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(e, at)| e.server == server && *at <= read_started);
        self.held = keep;
        self.give(due)
    }

    fn give(&mut self, held: Vec<(Episode, DateTime<Utc>)>) -> Vec<Episode> {
        let out: Vec<Episode> = held.into_iter().map(|(e, _)| e).collect();
        self.recent.extend(out.iter().cloned());
        out
    }

    /// Takes the events of `server`'s log, in order, with the episodes the polls have open;
    /// returns the episodes they make or complete.
    pub fn accept(
        &mut self,
        server: &str,
        events: Vec<LogEvent>,
        open: &[Episode],
        now: DateTime<Utc>,
    ) -> Vec<Episode> {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                LogEvent::Waiting(w) => {
                    let list = self.waits.entry((server.to_string(), w.pid)).or_default();
                    list.push(w);
                    if list.len() > 16 {
                        list.remove(0);
                    }
                }
                LogEvent::Ended(err) => {
                    if let Some(e) = self.accept_error(server, err, open, now) {
                        out.push(e);
                    }
                }
                LogEvent::Acquired { at, pid } => {
                    self.ends.insert((server.to_string(), pid), at);
                }
            }
        }
        out
    }

    fn accept_error(
        &mut self,
        server: &str,
        err: LockError,
        open: &[Episode],
        now: DateTime<Utc>,
    ) -> Option<Episode> {
        if self
            .session_at(server, err.pid, err.backend_start, err.at)
            .is_some_and(|x| x.own)
        {
            return None;
        }
        if !self
            .taken
            .insert((server.to_string(), err.pid, err.at.timestamp_micros()))
        {
            return None;
        }
        let wait = self.wait_before(server, &err).cloned();
        // Whatever comes of it, this session's wait ended here.
        self.ends.insert((server.to_string(), err.pid), err.at);
        if let Some(i) = self
            .held
            .iter()
            .position(|(e, _)| e.server == server && matches_episode(&err, e))
        {
            let (mut e, _) = self.held.remove(i);
            complete(&mut e, &err, wait.as_ref(), self);
            self.recent.push(e.clone());
            return Some(e);
        }
        // A recent episode the log already completed ended with another error: this one is a wait
        // of its own.
        if let Some(i) = self.recent.iter().position(|e| {
            e.server == server
                && !e.evidence.contains(&Evidence::ServerLog)
                && matches_episode(&err, e)
        }) {
            let mut e = self.recent[i].clone();
            complete(&mut e, &err, wait.as_ref(), self);
            self.recent[i] = e.clone();
            return Some(e);
        }
        if open
            .iter()
            .any(|e| e.server == server && e.waiter_pid == err.pid && same_backend(&err, e))
        {
            self.pending.push(Pending {
                server: server.to_string(),
                error: err,
                wait,
                until: now + ChronoDuration::from_std(PENDING_GRACE).unwrap_or_default(),
            });
            return None;
        }
        // 57014 is a lock wait only when something showed the session waiting.
        if err.kind == LockErrorKind::Canceled && wait.is_none() {
            return None;
        }
        let e = self.episode_of(server, &err, wait.as_ref());
        self.recent.push(e.clone());
        Some(e)
    }

    /// Log errors whose poll episode did not end within [`PENDING_GRACE`] become episodes of their
    /// own; episodes held longer than [`HOLD_MAX`] are given as the polls saw them.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Episode> {
        let hold_max = ChronoDuration::from_std(HOLD_MAX).unwrap_or_default();
        let (late, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, at)| now - *at >= hold_max);
        self.held = held;
        let mut out = self.give(late);
        let (due, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.until <= now);
        self.pending = keep;
        for p in due {
            if p.error.kind == LockErrorKind::Canceled && p.wait.is_none() {
                continue;
            }
            let e = self.episode_of(&p.server, &p.error, p.wait.as_ref());
            self.recent.push(e.clone());
            out.push(e);
        }
        out
    }

    /// The latest `log_lock_waits` line of the same session before the error, if it is the same
    /// wait: it started after the session's previous wait ended (an error, or the lock acquired).
    fn wait_before(&self, server: &str, err: &LockError) -> Option<&WaitLine> {
        let key = (server.to_string(), err.pid);
        let previous_end = self.ends.get(&key).copied();
        self.waits.get(&key)?.iter().rev().find(|w| {
            let started = w.at - ChronoDuration::from_std(w.waited).unwrap_or_default();
            w.at <= err.at
                && previous_end.is_none_or(|end| started >= end - ChronoDuration::milliseconds(1))
                && match (w.backend_start, err.backend_start) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
                && err.at - w.at < ChronoDuration::seconds(3600)
        })
    }

    /// The session the polls saw with this pid, alive at `at` (by backend start).
    fn session_at(
        &self,
        server: &str,
        pid: i32,
        backend_start: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Option<&Seen> {
        self.seen
            .get(server)?
            .get(&pid)?
            .iter()
            .filter(|x| match (x.backend_start, backend_start) {
                (Some(a), Some(b)) => a.timestamp() == b.timestamp(),
                (Some(a), None) => a <= at + ChronoDuration::seconds(1),
                _ => true,
            })
            .max_by_key(|x| x.backend_start)
    }

    fn blocker(&self, server: &str, pid: i32, at: DateTime<Utc>) -> BlockerSeen {
        // A session the polls missed at a poll before `at` had ended: the pid is someone else's
        // now (pid reuse), whom the polls never saw.
        let polls = self.polls.get(server);
        let seen = self
            .session_at(server, pid, None, at)
            .filter(|x| !polls.is_some_and(|p| p.iter().any(|t| *t > x.last_seen && *t <= at)));
        BlockerSeen {
            pid,
            application_name: seen.map(|s| s.application_name.clone()),
            namespace: seen.and_then(|s| s.namespace.clone()),
            worker: seen.and_then(|s| s.worker.clone()),
            suffix: seen.and_then(|s| s.suffix.clone()),
            state: seen.and_then(|s| s.state.clone()),
            idle_in_transaction: seen
                .and_then(|s| s.state.as_deref())
                .is_some_and(|s| s.starts_with("idle in transaction")),
            xact_age_s: None,
            query: None,
        }
    }

    /// An episode that only the log saw.
    fn episode_of(&self, server: &str, err: &LockError, wait: Option<&WaitLine>) -> Episode {
        let me = self.session_at(server, err.pid, err.backend_start, err.at);
        let (namespace, worker, suffix) = match parse_label(&self.app_prefix, &err.application_name)
        {
            LabelParse::Labeled(l) => (
                Some(l.namespace.into_string()),
                Some(l.worker.to_string()),
                l.suffix,
            ),
            _ => (None, None, None),
        };
        let (started_at, started_exact) = match wait {
            Some(w) => (
                w.at - ChronoDuration::from_std(w.waited).unwrap_or_default(),
                true,
            ),
            None => (err.at, false),
        };
        let backend_start = me.and_then(|m| m.backend_start).or(err.backend_start);
        let mut e = Episode {
            id: format!(
                "{}/{}/{}/{}",
                server,
                err.pid,
                backend_start.map_or(0, |t| t.timestamp_micros()),
                started_at.timestamp_micros()
            ),
            server: server.to_string(),
            waiter_database: me
                .map(|m| m.database.clone())
                .or_else(|| err.database.clone())
                .unwrap_or_default(),
            waiter_pid: err.pid,
            waiter_backend_start: backend_start,
            waiter_application_name: err.application_name.clone(),
            waiter_namespace: namespace,
            waiter_worker: worker,
            waiter_suffix: suffix,
            waiter_query: err.statement.as_deref().map(|q| one_line(q, QUERY_CHARS)),
            lock_type: wait.and_then(|w| w.lock_type.clone()),
            lock_mode: wait.and_then(|w| w.lock_mode.clone()),
            relation: None,
            wait: None,
            blocker_pids: Vec::new(),
            blocker_namespaces: Vec::new(),
            blockers: Vec::new(),
            root_pid: None,
            root_namespace: None,
            cross_invocation: false,
            blocker_idle_in_transaction: false,
            victims_max: wait.map_or(0, |w| w.queue.len()),
            severe: false,
            started_at,
            started_exact,
            first_seen_at: err.at,
            last_seen_at: err.at,
            ended_at: None,
            duration_s: 0.0,
            outcome: Outcome::GaveUp,
            sqlstate: None,
            sqlstate_source: None,
            samples: 0,
            timeline: Vec::new(),
            evidence: Vec::new(),
            deadlock_pids: Vec::new(),
            blocker_note: None,
        };
        complete(&mut e, err, wait, self);
        e.evidence = vec![Evidence::ServerLog];
        e
    }
}

fn same_backend(err: &LockError, e: &Episode) -> bool {
    match (err.backend_start, e.waiter_backend_start) {
        (Some(a), Some(b)) => a.timestamp() == b.timestamp(),
        _ => true,
    }
}

/// Whether a log error ended this episode: same pid and backend start, the error inside the
/// episode's time window, and the same statement when both show it.
pub fn matches_episode(err: &LockError, e: &Episode) -> bool {
    if e.waiter_pid != err.pid || !same_backend(err, e) {
        return false;
    }
    let slack = ChronoDuration::from_std(TIME_SLACK).unwrap_or_default();
    let end = e.ended_at.unwrap_or(e.last_seen_at).max(e.last_seen_at);
    // An exact start is the server's own clock, as the log's (to the millisecond there): an error
    // before it ended an earlier wait (the attack found one given to the next wait of the same
    // statement, ending before it began).
    let before = if e.started_exact {
        ChronoDuration::milliseconds(1)
    } else {
        slack
    };
    if err.at < e.started_at - before || err.at > end + slack {
        return false;
    }
    match (&err.statement, &e.waiter_query) {
        (Some(s), Some(q)) if !q.starts_with('<') => {
            let a = one_line(s, QUERY_CHARS);
            let (a, b) = (a.trim_end_matches('…'), q.trim_end_matches('…'));
            let n = a.chars().count().min(b.chars().count()).min(100);
            a.chars().take(n).eq(b.chars().take(n))
        }
        _ => true,
    }
}

/// Completes `e` with what the log says: the error (observed), its end, the holders of the lock or
/// the deadlock's cycle.
fn complete(e: &mut Episode, err: &LockError, wait: Option<&WaitLine>, m: &LogMatcher) {
    e.outcome = match err.kind {
        LockErrorKind::Deadlock => Outcome::Deadlock,
        _ => Outcome::GaveUp,
    };
    e.sqlstate = Some(err.kind.sqlstate().to_string());
    e.sqlstate_source = Some(SqlstateSource::Observed);
    e.ended_at = Some(err.at);
    e.duration_s = ((err.at - e.started_at).num_milliseconds() as f64 / 1000.0).max(0.0);
    if !e.evidence.contains(&Evidence::ServerLog) {
        e.evidence.push(Evidence::ServerLog);
    }
    if e.lock_mode.is_none() {
        e.lock_mode = wait.and_then(|w| w.lock_mode.clone());
        e.lock_type = e
            .lock_type
            .clone()
            .or_else(|| wait.and_then(|w| w.lock_type.clone()));
    }
    let mut others: Vec<i32> = Vec::new();
    if err.kind == LockErrorKind::Deadlock {
        e.deadlock_pids = err.cycle.clone();
        others.extend(err.cycle.iter().copied().filter(|&p| p != err.pid));
    }
    if let Some(w) = wait {
        others.extend(w.holders.iter().copied());
    }
    for pid in others {
        if e.blocker_pids.contains(&pid) {
            continue;
        }
        let b = m.blocker(&e.server, pid, err.at);
        e.blocker_pids.push(pid);
        if let Some(ns) = &b.namespace {
            if !e.blocker_namespaces.contains(ns) {
                e.blocker_namespaces.push(ns.clone());
            }
        }
        e.blocker_idle_in_transaction |= b.idle_in_transaction;
        if e.root_pid.is_none() {
            e.root_pid = Some(pid);
            e.root_namespace.clone_from(&b.namespace);
        }
        e.blockers.push(b);
    }
    e.cross_invocation = e
        .blocker_namespaces
        .iter()
        .any(|b| Some(b) != e.waiter_namespace.as_ref());
    e.blocker_note = e
        .blocker_pids
        .is_empty()
        .then(|| BLOCKER_UNKNOWN.to_string());
    e.severe = e.severe || e.duration_s >= crate::domain::incidents::SEVERE_WAIT.as_secs_f64();
}

#[cfg(test)]
mod tests;
