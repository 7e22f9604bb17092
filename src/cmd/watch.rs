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
    let end = crate::tui::run::run_dashboard(runtime, settings, options)?;
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
