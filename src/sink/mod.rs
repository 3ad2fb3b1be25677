//! Sinks: where query results go. For now the console (a table drawn with
//! prettytable-rs, or plain CSV / JSON lines for pipes).

mod console;

pub use console::{ConsoleSink, OutputFormat};
