//! Sinks: where query results go. The console (a table drawn with
//! prettytable-rs, or plain CSV / JSON lines for pipes) for a query run in
//! the foreground; files for `CREATE SINK`, whose background queries
//! `lifecycle` runs.

mod console;
mod file;
pub(crate) mod lifecycle;

pub use console::{ConsoleSink, OutputFormat};
pub use file::{FILE_SINK_OPTIONS, FileFormat, FileMode, FileSink, FileSinkOptions};
pub use lifecycle::MAX_CONSECUTIVE_FAILURES;
