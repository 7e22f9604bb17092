//! The non-interactive subcommands: the same domain and pg code as the dashboard, output as text or
//! JSON, results mapped to documented exit codes.

pub mod config;
pub mod report;
pub mod snapshot;
pub mod sweep;

/// Documented exit codes (README "Exit codes").
pub mod exit {
    /// Done; nothing to report as a failure.
    pub const OK: i32 = 0;
    /// `--fail-on-blocked` and some session is blocked.
    pub const BLOCKED: i32 = 1;
    /// Usage or configuration error: the message names the bad value.
    pub const USAGE: i32 = 2;
    /// Some configured database (or a server's activity) could not be read; the rest is reported.
    pub const UNREACHABLE: i32 = 3;
}
