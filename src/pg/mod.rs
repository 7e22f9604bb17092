//! All PostgreSQL I/O: connection settings with libpq's rules, the probe that reads sessions, locks
//! and schemas, and the throwaway servers that tests and the demo run. This layer turns rows into
//! domain values and decides nothing: what is blocked, live or stale is decided in `domain`.

pub mod cluster;
pub mod config;
pub mod connect;
pub mod conninfo;
pub mod flightlog;
pub mod poller;
pub mod probe;
pub mod public_write;
pub mod row;
pub mod serverlog;
pub mod signal;
pub mod simulator;
pub mod stream;
pub mod sweep;
