//! Reading a server's own log (`jsonlog` or `csvlog`) over SQL, incrementally, for the lock-wait
//! episodes the polls cannot see (see `domain::serverlog` for what is read and why).
//!
//! One [`LogReader`] per server, on its own task and its own session: a slow read never holds up a
//! poll or the dashboard. Each read goes on from the last offset of the current file
//! (`pg_current_logfile(format)`, `pg_read_binary_file(file, offset, length, true)`), bounded by
//! [`READ_BYTES_PER_POLL`] and [`READ_TIME_PER_POLL`]; the rest waits for the next poll. When the
//! server switches files (rotation, a restart) the old file is read to its end first, then the new
//! one from its start; a file that shrank (truncated in place) is read again from its start. A
//! reader starts at the end of the current file: history before pgswarm started is not replayed.
//!
//! Without a structured log, or without the privileges to read it, nothing is read and
//! [`LogStatus::Unavailable`] says which setting or grant would turn it on.

use crate::domain::serverlog::{classify, LogEvent, LogFormat, LogParser};
use crate::pg::connect::{connect, SessionSettings};
use crate::pg::conninfo::{Environment, Target};
use crate::pg::probe::server_label;
use crate::pg::row::RowExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// At most this much log is read per poll; a backlog is read over the next polls.
pub const READ_BYTES_PER_POLL: i64 = 8 * 1024 * 1024;
/// One `pg_read_binary_file` call reads at most this much.
pub const READ_CHUNK: i64 = 1024 * 1024;
/// The first call of a read asks for this much: the server allocates the whole length asked for,
/// and a quiet log has nothing new.
pub const FIRST_CHUNK: i64 = 64 * 1024;
/// No new chunk is started after this long in one poll.
pub const READ_TIME_PER_POLL: Duration = Duration::from_millis(250);
/// How often an unavailable log is checked again (settings and grants can change).
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Whether a server's log is being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogStatus {
    /// Not checked yet (not connected).
    Unknown,
    Reading {
        format: LogFormat,
        file: String,
    },
    /// Why not, with the setting or grant that would turn it on.
    Unavailable(String),
}

/// What one poll of a server's log gave.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub server: String,
    pub events: Vec<LogEvent>,
    pub bytes: u64,
    pub status: LogStatus,
    /// Unread bytes left for later polls (a backlog above the per-poll bound).
    pub behind: bool,
    /// When this read began (this machine's clock): every line written before is read, unless
    /// `behind`.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
struct Position {
    file: String,
    offset: i64,
}

/// Reads one server's log, poll by poll.
pub struct LogReader {
    server: String,
    target: Target,
    session: SessionSettings,
    env: Arc<dyn Environment + Send + Sync>,
    client: Option<Client>,
    /// The read statement, prepared once per session.
    read_statement: Option<tokio_postgres::Statement>,
    /// Files to read after the one being read, before the current one.
    queue: VecDeque<String>,
    format: Option<LogFormat>,
    parser: Option<LogParser>,
    position: Option<Position>,
    status: LogStatus,
    checked_at: Option<Instant>,
    /// Total bytes read, for the cost measurements.
    pub bytes_total: u64,
}

const SETUP: &str = "SELECT pg_catalog.current_setting('logging_collector'), \
     pg_catalog.current_setting('log_destination'), \
     pg_catalog.has_function_privilege('pg_catalog.pg_read_binary_file(pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.bool)', 'EXECUTE') \
       AND pg_catalog.has_function_privilege('pg_catalog.pg_current_logfile(pg_catalog.text)', 'EXECUTE') \
       AND pg_catalog.has_function_privilege('pg_catalog.pg_stat_file(pg_catalog.text, pg_catalog.bool)', 'EXECUTE'), \
     pg_catalog.date_part('epoch', pg_catalog.timezone(pg_catalog.current_setting('log_timezone'), pg_catalog.now()) \
       - pg_catalog.timezone('UTC', pg_catalog.now()))::pg_catalog.int4, \
     pg_catalog.current_setting('server_version_num')::pg_catalog.int4";
const CURRENT_FILE: &str = "SELECT pg_catalog.pg_current_logfile($1::pg_catalog.text)";
const READ: &str = "SELECT pg_catalog.pg_current_logfile($1::pg_catalog.text), \
     pg_catalog.pg_read_binary_file($2::pg_catalog.text, $3::pg_catalog.int8, $4::pg_catalog.int8, true), \
     (SELECT s.size FROM pg_catalog.pg_stat_file($2::pg_catalog.text, true) AS s)";

/// One chunk's read: the server's current file, the bytes read (0 when the file is gone), the size
/// of the file read.
struct Chunk {
    current: Option<String>,
    read: i64,
    size: Option<i64>,
}

fn no_file_yet(format: LogFormat) -> LogStatus {
    LogStatus::Unavailable(format!(
        "server log not read: the server writes no {} file yet (logging_collector starts with the server: restart it)",
        format.name()
    ))
}
const LIST: &str =
    "SELECT f.name FROM pg_catalog.pg_ls_logdir() AS f ORDER BY f.modification, f.name";
const SIZE: &str = "SELECT s.size FROM pg_catalog.pg_stat_file($1::pg_catalog.text, true) AS s";

impl LogReader {
    pub fn new(
        target: Target,
        session: SessionSettings,
        env: Arc<dyn Environment + Send + Sync>,
    ) -> Self {
        LogReader {
            server: server_label(&target),
            target,
            session,
            env,
            client: None,
            read_statement: None,
            queue: VecDeque::new(),
            format: None,
            parser: None,
            position: None,
            status: LogStatus::Unknown,
            checked_at: None,
            bytes_total: 0,
        }
    }

    pub fn status(&self) -> &LogStatus {
        &self.status
    }

    /// Reads what the log gained since the last poll (bounded). Errors become the status; the
    /// position is kept, so a reconnect (a restart) goes on where it stopped.
    pub async fn poll(&mut self) -> LogRead {
        let started_at = chrono::Utc::now();
        let (events, bytes, behind) = match self.poll_inner().await {
            Ok(r) => r,
            Err(e) => {
                self.client = None;
                if !matches!(self.status, LogStatus::Unavailable(_)) {
                    self.status = LogStatus::Unknown;
                }
                tracing::debug!(server = %self.server, error = %e, "server log read failed");
                (Vec::new(), 0, false)
            }
        };
        LogRead {
            server: self.server.clone(),
            events,
            bytes,
            status: self.status.clone(),
            behind,
            started_at,
        }
    }

    async fn poll_inner(&mut self) -> Result<(Vec<LogEvent>, u64, bool), String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let client = connect(&self.target, &self.session, self.env.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            self.client = Some(client);
            self.read_statement = None;
            self.checked_at = None;
        }
        let due = self.checked_at.is_none_or(|t| t.elapsed() >= RECHECK_EVERY);
        if matches!(self.status, LogStatus::Unavailable(_)) && !due {
            return Ok((Vec::new(), 0, false));
        }
        if self.format.is_none() || due {
            self.check().await?;
            self.checked_at = Some(Instant::now());
        }
        let Some(format) = self.format else {
            return Ok((Vec::new(), 0, false));
        };
        let Some(mut pos) = self.position.clone() else {
            // First read: start at the end of the current file.
            let client = self.client.as_ref().ok_or("not connected")?;
            let current: Option<String> = client
                .query_one(CURRENT_FILE, &[&format.name()])
                .await
                .map_err(|e| crate::pg::connect::describe_error(&e))?
                .col(0)
                .map_err(|e| e.to_string())?;
            let Some(current) = current else {
                self.status = no_file_yet(format);
                return Ok((Vec::new(), 0, false));
            };
            let size = self.size_of(&current).await?.unwrap_or(0);
            self.status = LogStatus::Reading {
                format,
                file: current.clone(),
            };
            self.position = Some(Position {
                file: current,
                offset: size,
            });
            return Ok((Vec::new(), 0, false));
        };
        let started = Instant::now();
        let mut events = Vec::new();
        let mut bytes = 0u64;
        let mut length = FIRST_CHUNK;
        loop {
            let chunk = self.read_chunk(format, &pos, length, &mut events).await?;
            let Some(current) = chunk.current else {
                self.status = no_file_yet(format);
                break;
            };
            self.status = LogStatus::Reading {
                format,
                file: current.clone(),
            };
            bytes += chunk.read as u64;
            pos.offset += chunk.read;
            let over =
                bytes as i64 >= READ_BYTES_PER_POLL || started.elapsed() >= READ_TIME_PER_POLL;
            if chunk.read < length {
                if pos.file != current {
                    // Rotation or restart: the old file is done; the files the server wrote
                    // after it (several, when it rotated by size during a burst) come next, each
                    // from its start, the current one last.
                    let next = match self.queue.pop_front() {
                        Some(f) => f,
                        None => {
                            self.queue = self.files_between(&pos.file, &current).await;
                            self.queue.pop_front().unwrap_or(current)
                        }
                    };
                    pos = Position {
                        file: next,
                        offset: 0,
                    };
                    if let Some(p) = self.parser.as_mut() {
                        p.reset();
                    }
                    if over {
                        break;
                    }
                    continue;
                }
                if chunk.size.is_some_and(|size| size < pos.offset) {
                    // Shrunk in place (truncated): read it again from the start.
                    pos.offset = 0;
                    if let Some(p) = self.parser.as_mut() {
                        p.reset();
                    }
                    if over {
                        break;
                    }
                    continue;
                }
                self.position = Some(pos);
                self.bytes_total += bytes;
                return Ok((events, bytes, false));
            }
            if over {
                break;
            }
            length = READ_CHUNK;
        }
        self.position = Some(pos);
        self.bytes_total += bytes;
        Ok((events, bytes, true))
    }

    /// Reads one chunk at `pos` and, in the same statement, the current file's name and the size
    /// of `pos`'s file: one round trip, one statement per poll of a quiet log.
    async fn read_chunk(
        &mut self,
        format: LogFormat,
        pos: &Position,
        length: i64,
        events: &mut Vec<LogEvent>,
    ) -> Result<Chunk, String> {
        let client = self.client.as_ref().ok_or("not connected")?;
        let statement = match &self.read_statement {
            Some(s) => s.clone(),
            None => {
                let s = client
                    .prepare(READ)
                    .await
                    .map_err(|e| crate::pg::connect::describe_error(&e))?;
                self.read_statement = Some(s.clone());
                s
            }
        };
        let row = client
            .query_one(
                &statement,
                &[&format.name(), &pos.file, &pos.offset, &length],
            )
            .await
            .map_err(|e| crate::pg::connect::describe_error(&e))?;
        let current: Option<String> = row.col(0).map_err(|e| e.to_string())?;
        let data: Option<Vec<u8>> = row.col(1).map_err(|e| e.to_string())?;
        let size: Option<i64> = row.col(2).map_err(|e| e.to_string())?;
        let data = data.unwrap_or_default();
        if let Some(parser) = self.parser.as_mut() {
            events.extend(parser.feed(&data).iter().filter_map(classify));
        }
        Ok(Chunk {
            current,
            read: data.len() as i64,
            size,
        })
    }

    /// The log files written after `old` and before `current`, oldest first (`pg_ls_logdir`, by
    /// modification time; needs `pg_monitor`). Without that privilege, none: a burst that rotated
    /// more than once between two reads then loses the files in between.
    async fn files_between(&self, old: &str, current: &str) -> VecDeque<String> {
        let Some(client) = self.client.as_ref() else {
            return VecDeque::new();
        };
        let Ok(rows) = client.query(LIST, &[]).await else {
            return VecDeque::new();
        };
        let names: Vec<String> = rows
            .iter()
            .filter_map(|r| r.col::<String>(0).ok())
            .collect();
        let (dir, current_name) = match current.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), current),
        };
        let old_name = old.rsplit_once('/').map_or(old, |(_, n)| n);
        let ext = current_name.rsplit_once('.').map(|(_, e)| e);
        let same_kind = |n: &&String| n.rsplit_once('.').map(|(_, e)| e) == ext;
        let kind: Vec<&String> = names.iter().filter(same_kind).collect();
        // An old file that is gone leaves nothing known to read between (never history).
        let Some(from) = kind
            .iter()
            .position(|n| n.as_str() == old_name)
            .map(|i| i + 1)
        else {
            return VecDeque::new();
        };
        let to = kind
            .iter()
            .position(|n| n.as_str() == current_name)
            .unwrap_or(kind.len());
        if from >= to {
            return VecDeque::new();
        }
        kind[from..to]
            .iter()
            .filter(|n| n.as_str() != old_name)
            .map(|n| format!("{dir}{n}"))
            .collect()
    }

    async fn size_of(&self, file: &str) -> Result<Option<i64>, String> {
        let client = self.client.as_ref().ok_or("not connected")?;
        let rows = client
            .query(SIZE, &[&file])
            .await
            .map_err(|e| crate::pg::connect::describe_error(&e))?;
        match rows.first() {
            Some(r) => r.col::<Option<i64>>(0).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Reads the settings and grants; sets the format or says why not.
    async fn check(&mut self) -> Result<(), String> {
        let client = self.client.as_ref().ok_or("not connected")?;
        let row = client
            .query_one(SETUP, &[])
            .await
            .map_err(|e| crate::pg::connect::describe_error(&e))?;
        let collector: String = row.col(0).map_err(|e| e.to_string())?;
        let destination: String = row.col(1).map_err(|e| e.to_string())?;
        let may_read: bool = row.col(2).map_err(|e| e.to_string())?;
        let offset: i32 = row.col(3).map_err(|e| e.to_string())?;
        let version: i32 = row.col(4).map_err(|e| e.to_string())?;
        match choose_format(&collector, &destination, may_read, version) {
            Ok(format) => {
                if self.format != Some(format) {
                    self.format = Some(format);
                    self.position = None;
                    self.queue.clear();
                }
                let parser = self
                    .parser
                    .get_or_insert_with(|| LogParser::new(format, offset));
                if parser.format() != format {
                    *parser = LogParser::new(format, offset);
                }
            }
            Err(why) => {
                self.format = None;
                self.parser = None;
                self.position = None;
                self.queue.clear();
                self.status = LogStatus::Unavailable(why);
            }
        }
        Ok(())
    }
}

/// The format to read, or why none can be read (with what would turn it on).
pub fn choose_format(
    collector: &str,
    destination: &str,
    may_read: bool,
    server_version_num: i32,
) -> Result<LogFormat, String> {
    let dests: Vec<String> = destination
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let format = if dests.iter().any(|d| d == "jsonlog") {
        LogFormat::Jsonlog
    } else if dests.iter().any(|d| d == "csvlog") {
        LogFormat::Csvlog
    } else {
        let add = if server_version_num >= 150000 {
            "jsonlog"
        } else {
            "csvlog"
        };
        return Err(format!(
            "server log not read: log_destination = '{destination}' has no jsonlog or csvlog \
             (set log_destination = '{add}' and logging_collector = on)"
        ));
    };
    if collector != "on" {
        return Err(
            "server log not read: logging_collector is off (set logging_collector = on, restart)"
                .to_string(),
        );
    }
    if !may_read {
        return Err(
            "server log not read: the role may not read it (GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean), pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_current_logfile(text) TO the monitoring role, or use a superuser)"
                .to_string(),
        );
    }
    Ok(format)
}
