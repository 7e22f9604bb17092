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
    crate::tui::run::run_dashboard(runtime, settings, options)?;
    Ok(Exit::Ok)
}

/// The flight log to append to, unless `--no-flight-log` (or no state directory is known).
pub fn flight_log(arg: &FlightLogArg) -> Option<FlightLog> {
    if arg.no_flight_log {
        return None;
    }
    default_path().map(FlightLog::new)
}
