//! `pgswarm` / `pgswarm watch`: the live dashboard.

use crate::cmd::{CmdError, Exit};
use crate::pg::config::Settings;
use std::time::Duration;

/// Runs the dashboard until the user quits.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    interval: Duration,
) -> Result<Exit, CmdError> {
    crate::tui::run::run_dashboard(runtime, settings, interval)?;
    Ok(Exit::Ok)
}
