//! `pgswarm incidents`: lock waits after the fact, from the flight log or a recording, or as they end
//! (`--follow`). Answers "who blocked my run?" for a person (text) or an agent (JSON) in one command.
//!
//! The episodes come from `domain::incidents`; this module only selects, orders and prints them.
//! Every string that came from a database is sanitised in text output (JSON keeps it raw).

use crate::cmd::cli::IncidentKind;
use crate::cmd::cli::IncidentsArgs;
use crate::cmd::recording::read_snapshots;
use crate::cmd::{emit, emit_open, print_error, print_warning, CmdError, Exit};
use crate::domain::format::{fmt_age, fmt_count};
use crate::domain::incidents::{episodes_of, Episode, EPISODES_VERSION};
use crate::domain::public_write::{public_writes_of, PublicWrite};
use crate::domain::text::{sanitize, sanitize_lines};
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::flightlog::{self, default_path, FlightLogError};
use crate::pg::stream::SnapshotStream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;

/// `incidents --json`.
#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    /// `flight log PATH` or `recording PATH`.
    source: String,
    episodes: Vec<&'a Episode>,
    /// Writes of test sessions into shared schemas (`--kind public-write`, or both kinds).
    public_writes: Vec<&'a PublicWrite>,
}

/// Prints the episodes of the flight log (or `--from` a recording), newest first.
pub fn run(args: &IncidentsArgs) -> Result<Exit, CmdError> {
    let (source, mut episodes, mut writes) = load(args)?;
    episodes.sort_by_key(|e| std::cmp::Reverse(e.sort_time()));
    writes.sort_by_key(|w| std::cmp::Reverse(write_time(w)));
    let now = episodes
        .first()
        .map(|e| e.sort_time())
        .into_iter()
        .chain(writes.first().and_then(write_time))
        .max()
        .filter(|_| args.from.is_some())
        .unwrap_or_else(Utc::now);
    let chosen: Vec<&Episode> = episodes
        .iter()
        .filter(|e| wants_kind(args, IncidentKind::LockWait) && wanted(e, args, now))
        .collect();
    let writes: Vec<&PublicWrite> = writes
        .iter()
        .filter(|w| wants_kind(args, IncidentKind::PublicWrite) && wanted_write(w, args, now))
        .collect();
    print_incidents(args, source, chosen, writes)
}

/// `--kind` picks one kind; without it, both.
fn wants_kind(args: &IncidentsArgs, kind: IncidentKind) -> bool {
    args.kind.is_none_or(|k| k == kind)
}

/// When a public write was last seen (what `--since` and the order go by).
fn write_time(w: &PublicWrite) -> Option<DateTime<Utc>> {
    w.last_seen.or(w.window_end).or(w.since)
}

fn wanted_write(w: &PublicWrite, args: &IncidentsArgs, now: DateTime<Utc>) -> bool {
    let recent = args.since.is_none_or(|since| {
        chrono::Duration::from_std(since)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .is_none_or(|from| write_time(w).is_none_or(|t| t >= from))
    });
    let run = args.namespace.as_deref().is_none_or(|ns| w.involves(ns));
    let worker = args
        .worker
        .as_deref()
        .is_none_or(|wk| w.worker.as_deref() == Some(wk));
    recent && run && worker
}

/// The episodes and public writes: the JSON document, or the text list of each kind asked for.
fn print_incidents(
    args: &IncidentsArgs,
    source: String,
    chosen: Vec<&Episode>,
    writes: Vec<&PublicWrite>,
) -> Result<Exit, CmdError> {
    if args.json {
        let doc = Document {
            schema_version: EPISODES_VERSION,
            source,
            episodes: chosen,
            public_writes: writes,
        };
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CmdError::Io(format!("cannot encode JSON: {e}")))?;
        emit(&(text + "\n"));
        return Ok(Exit::Ok);
    }
    let mut out = String::new();
    if wants_kind(args, IncidentKind::LockWait) {
        out.push_str(&render(&chosen, args.namespace.as_deref(), &source));
    }
    if args.kind == Some(IncidentKind::PublicWrite) || !writes.is_empty() {
        out.push_str(&render_public_writes(&writes, &source));
    }
    emit(&out);
    Ok(Exit::Ok)
}

/// Text: public writes, newest first, one block each.
fn render_public_writes(writes: &[&PublicWrite], source: &str) -> String {
    let mut out = String::new();
    if writes.is_empty() {
        let _ = writeln!(out, "no public writes recorded ({source})");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{}, newest first ({source})",
        fmt_count(writes.len(), "public write", "public writes")
    );
    writes.iter().for_each(|w| render_public_write(&mut out, w));
    sanitize_lines(&out).into_owned()
}

/// One public write; every field from the database sanitised on its own first.
fn render_public_write(out: &mut String, w: &PublicWrite) {
    let f = |s: &str| sanitize(s).into_owned();
    let fmt = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into())
    };
    let _ = writeln!(
        out,
        "\nlast seen {}  PUBLIC WRITE into {}  [{}]  evidence: {}",
        fmt(write_time(w)),
        f(&w.relation),
        f(&w.database),
        w.evidence.words()
    );
    let _ = writeln!(out, "  first seen {}", fmt(w.first_seen.or(w.since)));
    match (&w.namespace, w.pid) {
        (Some(_), Some(pid)) => {
            let _ = writeln!(
                out,
                "  writer  pid {pid}  {}  {}",
                f(&w.who()),
                f(w.mode.as_deref().unwrap_or(""))
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  rows    {} (inserted {}, updated {}, deleted {})",
                w.rows.unwrap_or(0),
                w.inserted.unwrap_or(0),
                w.updated.unwrap_or(0),
                w.deleted.unwrap_or(0)
            );
            let _ = writeln!(out, "  runs    {}", f(&w.who()));
        }
    }
}

/// `incidents --server URL`: the ended lock waits a running `pgswarm serve` remembers, filtered
/// there (`since`, `namespace`, `worker`), printed as from the flight log.
pub fn run_remote(args: &IncidentsArgs) -> Result<Exit, CmdError> {
    use crate::cmd::snapshot::{remote_error, remote_of};
    #[derive(serde::Deserialize)]
    struct Remote {
        episodes: Vec<Episode>,
        #[serde(default)]
        public_writes: Vec<PublicWrite>,
    }
    let remote = remote_of(
        args.server.as_deref(),
        args.token_file.as_deref(),
        args.server_ca.as_deref(),
    )?;
    let mut query = Vec::new();
    if let Some(d) = args.since {
        query.push(format!("since={}s", d.as_secs().max(1)));
    }
    for (key, value) in [("namespace", &args.namespace), ("worker", &args.worker)] {
        if let Some(v) = value {
            query.push(format!(
                "{key}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    let path = format!("/api/v1/incidents?{}", query.join("&"));
    let doc: Remote = remote.get_json(&path).map_err(remote_error)?;
    let source = format!(
        "pgswarm serve {}",
        args.server.as_deref().unwrap_or_default()
    );
    let episodes = doc
        .episodes
        .iter()
        .filter(|_| wants_kind(args, IncidentKind::LockWait))
        .collect();
    let writes = doc
        .public_writes
        .iter()
        .filter(|_| wants_kind(args, IncidentKind::PublicWrite))
        .collect();
    print_incidents(args, source, episodes, writes)
}

/// The episodes, the public writes and where they came from.
fn load(args: &IncidentsArgs) -> Result<(String, Vec<Episode>, Vec<PublicWrite>), CmdError> {
    if let Some(path) = &args.from {
        let snaps = read_snapshots(path)?;
        return Ok((
            format!("recording {}", path.display()),
            episodes_of(&snaps),
            public_writes_of(&snaps),
        ));
    }
    let path = match args.log.clone().or_else(default_path) {
        Some(p) => p,
        None => {
            return Err(CmdError::Usage(
                "no flight log location: set XDG_STATE_HOME or HOME, or give --log FILE".into(),
            ))
        }
    };
    let read = flightlog::read(&path).map_err(|e| match e {
        FlightLogError::NotRegular { .. } => CmdError::Io(format!(
            "cannot read the flight log: {e}; give --log (or PGSWARM_INCIDENTS_LOG) the path of \
             a regular file, such as the default $XDG_STATE_HOME/pgswarm/incidents.jsonl"
        )),
        e => CmdError::Io(format!("cannot read the flight log: {e}")),
    })?;
    if read.skipped > 0 {
        print_warning(format!(
            "{}: skipped {} that are not episodes this version reads",
            path.display(),
            fmt_count(read.skipped, "line", "lines")
        ));
    }
    Ok((
        format!("flight log {}", path.display()),
        read.episodes,
        read.public_writes,
    ))
}

fn wanted(e: &Episode, args: &IncidentsArgs, now: DateTime<Utc>) -> bool {
    // A --since reaching before the calendar's start means "everything".
    let recent = args.since.is_none_or(|since| {
        chrono::Duration::from_std(since)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .is_none_or(|from| e.sort_time() >= from)
    });
    let run = args.namespace.as_deref().is_none_or(|ns| e.involves(ns));
    let worker = args.worker.as_deref().is_none_or(|w| {
        e.waiter_worker.as_deref() == Some(w)
            || e.blockers.iter().any(|b| b.worker.as_deref() == Some(w))
    });
    recent && run && worker
}

/// Text: one block per episode, newest first; for one run, what its sessions waited for first, then
/// the waits it caused.
fn render(episodes: &[&Episode], namespace: Option<&str>, source: &str) -> String {
    let mut out = String::new();
    if episodes.is_empty() {
        let _ = writeln!(out, "no lock waits recorded ({source})");
        return out;
    }
    match namespace {
        Some(ns) => {
            let (waited, caused): (Vec<&Episode>, Vec<&Episode>) = episodes
                .iter()
                .partition(|e| e.waiter_namespace.as_deref() == Some(ns));
            let _ = writeln!(
                out,
                "run {ns}: its sessions waited {}; it made others wait {} ({source})",
                fmt_count(waited.len(), "time", "times"),
                fmt_count(caused.len(), "time", "times")
            );
            if !waited.is_empty() {
                out.push_str("\nITS SESSIONS WAITED\n");
                waited.iter().for_each(|e| render_episode(&mut out, e));
            }
            if !caused.is_empty() {
                out.push_str("\nIT MADE OTHERS WAIT\n");
                caused.iter().for_each(|e| render_episode(&mut out, e));
            }
        }
        None => {
            let _ = writeln!(
                out,
                "{}, newest first ({source})",
                fmt_count(episodes.len(), "lock wait", "lock waits")
            );
            episodes.iter().for_each(|e| render_episode(&mut out, e));
        }
    }
    sanitize_lines(&out).into_owned()
}

/// One episode. Every field from the database is sanitised on its own first (a newline in a relation
/// name must not forge a line of the report).
fn render_episode(out: &mut String, e: &Episode) {
    let f = |s: &str| sanitize(s).into_owned();
    let when = e
        .ended_at
        .map(|t| format!("ended {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_else(|| {
            format!(
                "last seen {}",
                e.last_seen_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        });
    let _ = writeln!(
        out,
        "\n{when}  {} after {}{}  [{}] on {}{}{}",
        e.outcome.words().to_uppercase(),
        fmt_age(e.duration_s),
        if e.started_exact { "" } else { " (at most)" },
        f(&e.waiter_database),
        f(&e.server),
        if e.cross_invocation {
            "  COLLISION between invocations"
        } else {
            ""
        },
        if e.severe { "  SEVERE" } else { "" },
    );
    let _ = writeln!(
        out,
        "  waiter  pid {}  {}  {}",
        e.waiter_pid,
        f(&who(
            e.waiter_namespace.as_deref(),
            e.waiter_worker.as_deref(),
            e.waiter_suffix.as_deref(),
            &e.waiter_application_name
        )),
        f(e.waiter_query.as_deref().unwrap_or(""))
    );
    if let Some(w) = &e.wait {
        let _ = writeln!(out, "  waited  {}", f(w));
    }
    if let Some(error) = e.error_words() {
        let _ = writeln!(
            out,
            "  error   {error}, {}",
            e.sqlstate_source.map_or("inferred", |s| s.words())
        );
    }
    if let Some(note) = &e.blocker_note {
        let _ = writeln!(out, "  behind  {}", f(note));
    }
    for b in &e.blockers {
        let state = match (&b.state, b.xact_age_s) {
            (Some(st), Some(age)) => format!("{}, transaction {}", f(st), fmt_age(age)),
            (Some(st), None) => f(st),
            (None, _) => "state not visible".into(),
        };
        let _ = writeln!(
            out,
            "  behind  pid {}  {}  ({state})  {}",
            b.pid,
            f(&who(
                b.namespace.as_deref(),
                b.worker.as_deref(),
                b.suffix.as_deref(),
                b.application_name.as_deref().unwrap_or("?")
            )),
            f(b.query.as_deref().unwrap_or(""))
        );
    }
    if let Some(root) = e.root_pid.filter(|r| !e.blocker_pids.contains(r)) {
        let _ = writeln!(
            out,
            "  root    pid {root}  {}",
            f(e.root_namespace.as_deref().unwrap_or("(unlabeled)"))
        );
    }
}

/// `NAMESPACE/worker_suffix`, or the application name for a session outside the convention.
fn who(ns: Option<&str>, worker: Option<&str>, suffix: Option<&str>, app: &str) -> String {
    match (ns, worker) {
        (Some(ns), Some(w)) => match suffix {
            Some(s) => format!("{ns}/{w}_{s}"),
            None => format!("{ns}/{w}"),
        },
        _ => format!("{app:?}"),
    }
}

/// `--follow`: polls like the dashboard and prints each episode as it ends, until interrupted.
pub fn follow(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &IncidentsArgs,
) -> Result<Exit, CmdError> {
    runtime.block_on(follow_loop(settings, args))
}

async fn follow_loop(settings: &Settings, args: &IncidentsArgs) -> Result<Exit, CmdError> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Err(CmdError::Io("cannot install signal handlers".into()));
    };
    let log = crate::cmd::watch::flight_log_or_warn(&args.flight_log);
    let mut stream = SnapshotStream::spawn(
        settings,
        args.interval.interval,
        Arc::new(ProcessEnv),
        log,
        None,
    );
    let mut unreadable: Vec<String> = Vec::new();
    let mut flight_log_error: Option<String> = None;
    loop {
        let update = tokio::select! {
            Some(u) = stream.updates.recv() => u,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let now: Vec<String> = update
            .snapshot
            .databases
            .iter()
            .filter(|d| !d.reachable && !d.not_read_yet)
            .map(|d| d.name.clone())
            .collect();
        if now != unreadable && !now.is_empty() {
            print_error(format!(
                "cannot read {}: waits there are not seen until it answers",
                now.join(", ")
            ));
        }
        unreadable = now;
        if let Some(e) = &update.flight_log_error {
            if flight_log_error.as_ref() != Some(e) {
                print_error(e);
            }
        }
        flight_log_error = update.flight_log_error.clone();
        let writes = update.ended_public_writes.iter().filter(|w| {
            wants_kind(args, IncidentKind::PublicWrite) && wanted_write(w, args, update.at)
        });
        for w in writes {
            if !print_followed_write(w, args)? {
                return Ok(Exit::Ok);
            }
        }
        let episodes = update
            .ended
            .iter()
            .filter(|e| wants_kind(args, IncidentKind::LockWait) && wanted(e, args, update.at));
        for e in episodes {
            if !print_followed(e, args)? {
                return Ok(Exit::Ok);
            }
        }
    }
    Ok(Exit::Ok)
}

/// Prints one public write as `--follow` does; false when stdout is gone.
fn print_followed_write(w: &PublicWrite, args: &IncidentsArgs) -> Result<bool, CmdError> {
    let text = if args.json {
        let mut line = serde_json::to_value(w)
            .map_err(|e| CmdError::Io(format!("cannot encode JSON: {e}")))?;
        if let Some(o) = line.as_object_mut() {
            o.insert("schema_version".into(), EPISODES_VERSION.into());
            o.insert("kind".into(), "public_write".into());
            o.insert("id".into(), w.id().into());
        }
        format!("{line}\n")
    } else {
        let mut out = String::new();
        render_public_write(&mut out, w);
        sanitize_lines(&out).into_owned()
    };
    Ok(emit_open(&text))
}

/// Prints one episode as `--follow` does; false when stdout is gone.
fn print_followed(e: &Episode, args: &IncidentsArgs) -> Result<bool, CmdError> {
    if args.json {
        // The flight log's line format: the episode with its schema_version.
        let mut line = serde_json::to_value(e)
            .map_err(|e| CmdError::Io(format!("cannot encode JSON: {e}")))?;
        if let Some(o) = line.as_object_mut() {
            o.insert("schema_version".into(), EPISODES_VERSION.into());
        }
        Ok(emit_open(&format!("{line}\n")))
    } else {
        let mut out = String::new();
        render_episode(&mut out, e);
        Ok(emit_open(&sanitize_lines(&out)))
    }
}

/// What the event-stream reader tells the printing loop.
enum Followed {
    Episode(Box<Episode>),
    PublicWrite(Box<PublicWrite>),
    Unreadable(Vec<String>),
    /// The server stopped answering (why), or answers again (`None`).
    Server(Option<String>),
}

/// `incidents --follow --server URL`: each episode as the server's event stream announces it. The
/// stream resumes with `Last-Event-ID` after an outage, so episodes that ended meanwhile come late
/// but come (from the server's last 1,024 events).
pub fn follow_remote(
    runtime: &tokio::runtime::Runtime,
    args: &IncidentsArgs,
) -> Result<Exit, CmdError> {
    use crate::cmd::snapshot::{remote_error, remote_of};
    use crate::serve::client::RemoteError;
    let remote = remote_of(
        args.server.as_deref(),
        args.token_file.as_deref(),
        args.server_ca.as_deref(),
    )?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Followed>();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<Result<(), RemoteError>>();
    // The reader blocks on the network: a thread of its own, never the loop that handles signals.
    std::thread::spawn(move || {
        let mut last_id: Option<u64> = None;
        let first = std::cell::RefCell::new(Some(first_tx));
        let mut down = false;
        let mut unreadable: Vec<String> = Vec::new();
        loop {
            let opened = || {
                if let Some(f) = first.borrow_mut().take() {
                    let _ = f.send(Ok(()));
                }
            };
            let result = remote.follow_events(last_id, opened, |event| {
                if down {
                    down = false;
                    if tx.send(Followed::Server(None)).is_err() {
                        return false;
                    }
                }
                last_id = event.id.or(last_id);
                let sent = match event.kind.as_str() {
                    "episode" => match serde_json::from_str::<Episode>(&event.data) {
                        Ok(e) => tx.send(Followed::Episode(Box::new(e))),
                        Err(_) => Ok(()),
                    },
                    "public_write" => match serde_json::from_str::<PublicWrite>(&event.data) {
                        Ok(w) => tx.send(Followed::PublicWrite(Box::new(w))),
                        Err(_) => Ok(()),
                    },
                    "summary" => {
                        match serde_json::from_str::<crate::domain::summary::Summary>(&event.data) {
                            Ok(s) if s.unreachable != unreadable => {
                                unreadable = s.unreachable.clone();
                                tx.send(Followed::Unreadable(s.unreachable))
                            }
                            _ => Ok(()),
                        }
                    }
                    _ => Ok(()),
                };
                sent.is_ok()
            });
            match result {
                Ok(()) => return,
                Err(e) => {
                    if let Some(f) = first.borrow_mut().take() {
                        let _ = f.send(Err(e));
                        return;
                    }
                    if !down {
                        down = true;
                        if tx.send(Followed::Server(Some(e.to_string()))).is_err() {
                            return;
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    });
    // The first connection decides: a server that does not answer (the client's connect and
    // response timeouts bound the wait) is exit 3, before any output.
    match first_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(remote_error(e)),
        Err(_) => return Err(CmdError::Io("the event-stream reader stopped".into())),
    }
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return Err(CmdError::Io("cannot install signal handlers".into()));
        };
        loop {
            let got = tokio::select! {
                f = rx.recv() => match f {
                    Some(f) => f,
                    // The reader is gone (it only stops when this loop has): nothing more comes.
                    None => break,
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            };
            match got {
                Followed::Episode(e) => {
                    if wants_kind(args, IncidentKind::LockWait)
                        && wanted(&e, args, Utc::now())
                        && !print_followed(&e, args)?
                    {
                        break;
                    }
                }
                Followed::PublicWrite(w) => {
                    if wants_kind(args, IncidentKind::PublicWrite)
                        && wanted_write(&w, args, Utc::now())
                        && !print_followed_write(&w, args)?
                    {
                        break;
                    }
                }
                Followed::Unreadable(names) if !names.is_empty() => print_error(format!(
                    "the server cannot read {}: waits there are not seen until it answers",
                    names.join(", ")
                )),
                Followed::Unreadable(_) => {}
                Followed::Server(Some(why)) => print_error(format!(
                    "{why}; retrying every second: episodes that end meanwhile are printed when \
                     it answers again (the server keeps its last 1,024 events)"
                )),
                Followed::Server(None) => print_warning("the pgswarm server answers again"),
            }
        }
        Ok(Exit::Ok)
    })
}
