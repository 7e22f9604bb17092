//! The `pgswarm` binary: parse the command line, build the one runtime, dispatch, map the outcome to
//! an exit code. Everything else lives in the library (`pgswarm::cmd` and below).

// Output goes through `cmd::emit` / `cmd::emit_stderr`: the print macros panic on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::Parser;
use pgswarm::cmd::cli::Cli;
use pgswarm::cmd::{print_error, Exit};
use std::process::ExitCode;

/// The poll -> snapshot path allocates per session; glibc malloc spent half its time there (and in
/// page faults from trimming). mimalloc keeps that path ~3x cheaper (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Worker threads of the runtime: the work is waiting on sockets, two threads are plenty.
const WORKERS: usize = 2;

/// How long tasks still running at exit (a poller mid-query) may hold the process up.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match &cli.command {
        // A service logs to stderr (the journal, the container log), as text or JSON lines.
        Some(pgswarm::cmd::cli::Command::Serve(args)) => {
            pgswarm::serve::init_service_log(args.log_format == "json")
        }
        // Everything else logs to $XDG_STATE_HOME/pgswarm/pgswarm.log, never to the terminal.
        _ => {
            pgswarm::tui::run::init_logging();
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_error(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::Usage.code());
        }
    };
    let exit = match pgswarm::cmd::run(cli, &runtime) {
        Ok(exit) => exit,
        Err(e) => {
            print_error(&e);
            e.exit()
        }
    };
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    ExitCode::from(exit.code())
}

/// The allocator hands freed memory back to the kernel between polls and faults it in again on the
/// next one. With transparent huge pages each of those faults zeroes 2 MiB: profiled at 1,000
/// sessions and a 1 s refresh, that was about 15% of the process's CPU. A monitor wants small pages.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
