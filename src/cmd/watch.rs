//! `pgswarm` / `pgswarm watch`: the live dashboard.

use crate::cmd::cli::{FlightLogArg, WatchArgs};
use crate::cmd::{CmdError, Exit};
use crate::pg::config::Settings;
use crate::pg::flightlog::{default_path, FlightLog, FlightLogError, ANSWER_WITHIN};
use crate::tui::run::DashboardOptions;

/// Runs the dashboard until the user quits.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    args: &WatchArgs,
) -> Result<Exit, CmdError> {
    let (flight_log, flight_log_off) = match flight_log(&args.flight_log) {
        Ok(log) => (log, None),
        Err(e) => (None, Some(e.to_off_message())),
    };
    let options = DashboardOptions {
        interval: args.interval.interval,
        flight_log,
        flight_log_off,
        bell: args.bell,
    };
    let nothing_configured = settings.nothing_configured;
    let end = crate::tui::run::run_dashboard(runtime, settings, options, None)?;
    if end.ever_read {
        return Ok(Exit::Ok);
    }
    crate::cmd::print_error(if nothing_configured {
        "no database was read: nothing is configured and libpq's default database could not be \
         read. Name databases with --db NAME=CONNINFO, PGSWARM_DB or --config FILE (see pgswarm \
         --help), or try `pgswarm demo`."
    } else {
        "no configured database could be read while the dashboard ran (see `pgswarm snapshot` \
         for each error)"
    });
    Ok(Exit::Unreachable)
}

/// `pgswarm --server URL`: the dashboard over a running `pgswarm serve`. The first read happens
/// before the terminal is taken, so a server that does not answer is exit 3 with why, like
/// `snapshot --server`; later, one that stops answering is shown as such, with its last picture.
pub fn run_remote(
    runtime: &tokio::runtime::Runtime,
    mut settings: Settings,
    args: &WatchArgs,
) -> Result<Exit, CmdError> {
    use crate::cmd::snapshot::{remote_error, remote_of};
    let remote = remote_of(
        args.server.url.as_deref(),
        args.server.token_file.as_deref(),
        args.server.server_ca.as_deref(),
    )?;
    // A server started a moment ago has not finished its first poll: wait a little for it.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        match remote.live(None, 0) {
            Err(crate::serve::client::RemoteError::NotReady(_))
                if std::time::Instant::now() < patience =>
            {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            read => break read.map_err(remote_error)?,
        }
    };
    let Some(snapshot) = &first.snapshot else {
        return Err(CmdError::Unreachable(format!(
            "the pgswarm server at {} sent no picture",
            remote.url()
        )));
    };
    // The names as the server reads them: theirs, not this machine's configuration.
    settings.convention = crate::domain::snapshot::Convention {
        app_prefix: snapshot.app_prefix.clone(),
        schema_prefix: snapshot.schema_prefix.clone(),
        // The server looks for public writes with its own; its snapshots carry what it found.
        shared_schemas: settings.convention.shared_schemas.clone(),
    };
    settings.databases.clear();
    let databases = snapshot.databases.iter().map(|d| d.name.clone()).collect();
    let label = format!("serve {}", remote.url());
    let feed = crate::serve::client::spawn_live(remote, args.interval.interval, first);
    let (refresh, set_interval) = (feed.control.clone(), feed.control);
    let source = crate::tui::run::RemoteSource {
        label,
        databases,
        updates: feed.updates,
        status: feed.status,
        refresh: Box::new(move || {
            let _ = refresh.send(crate::serve::client::LiveControl::Refresh);
        }),
        set_interval: Box::new(move |d| {
            let _ = set_interval.send(crate::serve::client::LiveControl::Interval(d));
        }),
    };
    let options = DashboardOptions {
        interval: args.interval.interval,
        flight_log: None,
        flight_log_off: None,
        bell: args.bell,
    };
    crate::tui::run::run_dashboard(runtime, settings, options, Some(source))?;
    Ok(Exit::Ok)
}

/// The flight log to append to, unless `--no-flight-log` (or no state directory is known), checked
/// before the run: one that cannot be appended to (a FIFO, a device, a file system that does not
/// answer within [`ANSWER_WITHIN`]) is an error, and the caller runs without it and says why.
pub fn flight_log(arg: &FlightLogArg) -> Result<Option<FlightLog>, FlightLogError> {
    if arg.no_flight_log {
        return Ok(None);
    }
    let Some(log) = default_path().map(FlightLog::new) else {
        return Ok(None);
    };
    log.check_writable_within(ANSWER_WITHIN)?;
    Ok(Some(log))
}

/// [`flight_log`] for a command that writes to stderr: a flight log that cannot be appended to is a
/// warning, and the command runs without it.
pub fn flight_log_or_warn(arg: &FlightLogArg) -> Option<FlightLog> {
    flight_log(arg).unwrap_or_else(|e| {
        crate::cmd::print_warning(e.to_off_message());
        None
    })
}
