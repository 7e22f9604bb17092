//! `pgswarm` / `pgswarm watch`: the live dashboard.

use crate::cmd::cli::{FlightLogArg, WatchArgs};
use crate::cmd::{CmdError, Exit};
use crate::pg::config::Settings;
use crate::pg::flightlog::{default_path, FlightLog};
use crate::tui::run::DashboardOptions;

/// Runs the dashboard until the user quits.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    args: &WatchArgs,
) -> Result<Exit, CmdError> {
    let options = DashboardOptions {
        interval: args.interval.interval,
        flight_log: flight_log(&args.flight_log),
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

/// The flight log to append to, unless `--no-flight-log` (or no state directory is known).
pub fn flight_log(arg: &FlightLogArg) -> Option<FlightLog> {
    if arg.no_flight_log {
        return None;
    }
    default_path().map(FlightLog::new)
}
