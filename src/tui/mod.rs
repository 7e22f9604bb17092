//! The live dashboard. `app` holds state and turns events into effects, `view` draws it, `keys` is the
//! key map, `theme` the styles; `run` is the only part that touches the terminal, the pollers and
//! signals, and it never awaits the database: polls arrive as messages.

pub mod app;
pub mod keys;
pub mod layout;
pub mod run;
pub mod theme;
pub mod view;
