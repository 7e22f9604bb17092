//! The pure core: the naming convention, the snapshot model, lock graphs, the sweep's rules, SQLite
//! lock decoding, and the rules for text that reaches a person (sanitising, redaction).
//!
//! Nothing in here does I/O, awaits, draws or reads the clock: `now` and every observation come in as
//! values. That keeps the rules that decide what a person sees, and above all what a sweep may drop,
//! testable in microseconds and identical across the CLI, the dashboard and replay.

pub mod aggregate;
#[cfg(any(test, feature = "testkit"))]
pub mod fixtures;
pub mod format;
pub mod incidents;
pub mod incremental;
pub mod lockgraph;
pub mod millis;
pub mod naming;
pub mod public_write;
pub mod serverlog;
pub mod signal;
pub mod snapshot;
pub mod sqlite;
pub mod summary;
pub mod sweep;
pub mod text;
