//! pgswarm: lock triage and fail-closed schema sweeping for parallel test runs on shared PostgreSQL.
//!
//! Layers, with dependencies pointing one way only (`domain` <- `pg` <- `cmd`):
//!
//! - [`domain`]: pure rules. The naming convention, the snapshot model, lock graphs. No I/O, no clock.
//! - [`pg`]: all PostgreSQL I/O. libpq-style connection settings, the probe, the throwaway servers used
//!   by tests and the demo. Turns rows into domain values and makes no decisions.
//! - [`cmd`]: the subcommands: configuration, output as text or JSON, exit codes.

pub mod cmd;
pub mod domain;
pub mod pg;
pub mod tui;
