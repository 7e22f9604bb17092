//! The non-interactive subcommands: the same domain and pg code as the dashboard, output as text or
//! JSON, results mapped to documented exit codes.

pub mod demo;
pub mod record;
pub mod replay;
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

/// Prints `pgswarm: error: MESSAGE` to stderr, sanitised: error messages quote values from the user
/// and from the database, and neither may drive the terminal.
pub fn print_error(message: impl std::fmt::Display) {
    eprintln!(
        "pgswarm: error: {}",
        crate::domain::text::sanitize_lines(&message.to_string())
    );
}

/// The multi-thread runtime every command runs on (2 workers: these machines have 2 cores). On failure
/// the error is printed and the exit code returned.
pub fn build_runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("pgswarm: error: cannot start the async runtime: {e}");
            exit::USAGE
        })
}
