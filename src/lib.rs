//! pgswarm: lock triage and fail-closed schema sweeping for parallel test runs on shared PostgreSQL.
//!
//! Layers, each depending only on the ones before it (`domain` <- `pg` <- `tui` <- `cmd` <- `main`):
//!
//! - [`domain`]: pure rules. The naming convention, the snapshot model and its aggregation, lock
//!   graphs, the sweep's plan, verdicts and report, text sanitising. No I/O, no clock, no awaits.
//! - [`pg`]: all PostgreSQL I/O. libpq-style settings and configuration, the probe, the pollers and
//!   the snapshot stream, the sweep's execution, throwaway servers for tests and the demo. Turns rows
//!   into domain values; every decision is a call into `domain`.
//! - [`sqlite`]: SQLite I/O (Linux), an I/O layer beside `pg` that depends only on `domain`: reads
//!   `/proc/locks` and `/proc/PID/{fd,environ,cmdline,stat}` to tell who holds the locks of per-worker
//!   SQLite test databases; every decision is a call into `domain::sqlite`.
//! - [`tui`]: the dashboard. `app` is the state machine (events in, effects out, never awaits), `view`
//!   only draws, `run` is the loop that owns the terminal and turns effects into `pg` calls.
//! - [`cmd`]: one module per subcommand, the clap definitions, exit codes and output (text or JSON).
//!   `main.rs` parses, builds one runtime and dispatches.
//!
//! Reference documentation (JSON fields, naming, the sweep's guarantees, benchmarks) is in `docs/`.

// Output goes through `cmd::emit` / `cmd::emit_stderr`: the print macros panic on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cmd;
pub mod domain;
pub mod pg;
pub mod serve;
pub mod sqlite;
pub mod tui;
