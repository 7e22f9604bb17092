//! The subcommands: the same domain, pg and tui code, output as text or JSON, results mapped to the
//! documented exit codes. `main` parses the command line and calls [`run`]; each subcommand lives in
//! its own module and returns an [`Exit`] or a [`CmdError`].

pub mod cli;
pub mod demo;
pub mod incidents;
pub mod record;
pub mod recording;
pub mod replay;
pub mod report;
pub mod serve;
pub mod shell;
pub mod signal;
pub mod snapshot;
pub mod sweep;
pub mod watch;

use crate::domain::signal::Action;
use crate::pg::config::{resolve_offline, resolve_settings, CliSettings, ConfigError, Settings};
use crate::pg::conninfo::ProcessEnv;
use cli::{Cli, Command, WatchArgs};

/// The documented exit codes (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; nothing to report as a failure.
    Ok = 0,
    /// `--fail-on-blocked` and some session is blocked, or `--fail-on-public-write` and some test
    /// session writes into a shared schema.
    Blocked = 1,
    /// Usage or configuration error: the message names the bad value; nothing was touched.
    Usage = 2,
    /// Some configured database (or a server's activity) could not be read; the rest is reported.
    /// For `sweep`: the live set could not be established, and nothing was dropped.
    Unreachable = 3,
    /// `sweep`: some drop failed or could not run.
    SomeFailed = 4,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why a subcommand could not do its job: each maps to an exit code, and its message is printed
/// (sanitised) by [`print_error`].
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Recording(#[from] recording::RecordingError),
    #[error(transparent)]
    Dashboard(#[from] crate::tui::run::TuiError),
    #[error("{0}")]
    Io(String),
    /// What should have been read could not be (a `serve` that does not answer): exit 3.
    #[error("{0}")]
    Unreachable(String),
}

impl CmdError {
    pub fn exit(&self) -> Exit {
        match self {
            CmdError::Unreachable(_) => Exit::Unreachable,
            _ => Exit::Usage,
        }
    }
}

/// A warning on stderr: something was skipped or degraded, the command still did its job.
pub fn print_warning(message: impl std::fmt::Display) {
    emit_stderr(&format!(
        "pgswarm: warning: {}\n",
        crate::domain::text::sanitize_lines(&message.to_string())
    ));
}

/// Prints `pgswarm: error: MESSAGE` to stderr, sanitised: error messages quote values from the user
/// and from the database, and neither may drive the terminal.
pub fn print_error(message: impl std::fmt::Display) {
    emit_stderr(&format!(
        "pgswarm: error: {}\n",
        crate::domain::text::sanitize_lines(&message.to_string())
    ));
}

/// Writes to stderr, the one way anything in pgswarm does. `eprintln!` panics when stderr is a pipe
/// whose reader has gone (`2>&1 | head -1`): a closed stderr has nobody left to tell, so its errors
/// are dropped, and the exit code still says how the command went.
pub fn emit_stderr(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

/// Writes to stdout; a closed pipe (`| head`) is success, not an error.
pub fn emit(text: &str) {
    let _ = emit_open(text);
}

/// [`emit`], saying whether stdout is still open: false once the reader has gone (a closed pipe),
/// so that a command that prints until interrupted can stop.
pub fn emit_open(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            print_error(format!("cannot write output: {e}"));
            false
        }
    }
}

fn cli_settings(cli: &Cli) -> CliSettings {
    let g = &cli.global;
    CliSettings {
        db: g.db.clone(),
        sqlite: g.sqlite.clone(),
        env_db: std::env::var("PGSWARM_DB").ok(),
        // --config, else PGSWARM_CONFIG (clap reads both), else the default file if it exists.
        config: g
            .config
            .clone()
            .or_else(|| crate::pg::config::default_config_file(&ProcessEnv)),
        app_prefix: g.app_prefix.clone(),
        schema_prefix: g.schema_prefix.clone(),
        shared_schemas: g.shared_schema.clone(),
        connect_timeout: g.connect_timeout.clone(),
        read_only: g.read_only,
    }
}

/// `--no-flight-log` given before the subcommand's name (`pgswarm --no-flight-log record …`) counts
/// for the subcommands that keep a flight log; for the others it would be ignored, so it is refused.
fn with_flight_log_flag(mut command: Command, no_flight_log: bool) -> Result<Command, CmdError> {
    if !no_flight_log {
        return Ok(command);
    }
    let arg = match &mut command {
        Command::Watch(a) => &mut a.flight_log,
        Command::Record(a) => &mut a.flight_log,
        Command::Incidents(a) => &mut a.flight_log,
        Command::Demo(a) => &mut a.flight_log,
        Command::Serve(a) => &mut a.flight_log,
        Command::Snapshot(_)
        | Command::Sweep(_)
        | Command::Cancel(_)
        | Command::Terminate(_)
        | Command::Completions(_)
        | Command::Man(_) => {
            return Err(CmdError::Usage(
                "--no-flight-log: this command writes no flight log (only the dashboard, \
                 record, incidents --follow, demo and serve do); drop the flag"
                    .into(),
            ))
        }
    };
    arg.no_flight_log = true;
    Ok(command)
}

/// Runs the parsed command line on `runtime` (the one runtime of the process).
pub fn run(cli: Cli, runtime: &tokio::runtime::Runtime) -> Result<Exit, CmdError> {
    let given = cli_settings(&cli);
    let settings = || -> Result<Settings, CmdError> { Ok(resolve_settings(&given, &ProcessEnv)?) };
    // Replays and a demo on its own server need no database: only the convention matters.
    let offline = || -> Result<Settings, CmdError> { Ok(resolve_offline(&given)?) };
    let command = with_flight_log_flag(
        cli.command.unwrap_or(Command::Watch(WatchArgs {
            replay: None,
            bell: false,
            flight_log: Default::default(),
            interval: cli.interval,
            server: cli.server,
        })),
        cli.flight_log.no_flight_log,
    )?;
    match command {
        Command::Watch(WatchArgs {
            replay: Some(_),
            server: cli::DashboardServerArg { url: Some(url), .. },
            ..
        }) => Err(CmdError::Usage(format!(
            "--replay shows a recording and --server {url:?} a running pgswarm serve: give one \
             (PGSWARM_SERVER counts as --server)"
        ))),
        Command::Watch(WatchArgs {
            replay: Some(path), ..
        }) => replay::watch(runtime, &path, offline()?),
        Command::Watch(args) if args.server.url.is_some() => {
            watch::run_remote(runtime, offline()?, &args)
        }
        Command::Watch(args) => watch::run(runtime, settings()?, &args),
        Command::Snapshot(args) if args.replay.is_some() => replay::snapshot(&args),
        Command::Snapshot(args) if args.server.url.is_some() => snapshot::run_remote(&args),
        Command::Incidents(args) if args.server.is_some() && args.follow => {
            incidents::follow_remote(runtime, &args)
        }
        Command::Incidents(args) if args.server.is_some() => incidents::run_remote(&args),
        Command::Snapshot(args) => snapshot::run(runtime, &settings()?, &args),
        Command::Sweep(args) => sweep::run(runtime, &settings()?, &args),
        Command::Record(args) => record::run(runtime, &settings()?, &args),
        Command::Incidents(args) if args.follow => incidents::follow(runtime, &settings()?, &args),
        Command::Incidents(args) => incidents::run(&args),
        Command::Cancel(args) => signal::run(runtime, &settings()?, &args, Action::Cancel),
        Command::Terminate(args) => signal::run(runtime, &settings()?, &args, Action::Terminate),
        Command::Completions(args) => shell::print_completions(&args),
        Command::Man(args) => shell::print_man(&args),
        Command::Demo(args) if given.db.is_empty() => demo::run(runtime, &offline()?, &args, false),
        Command::Demo(args) => demo::run(runtime, &settings()?, &args, true),
        Command::Serve(args) => serve::run(runtime, &settings()?, &args),
    }
}
