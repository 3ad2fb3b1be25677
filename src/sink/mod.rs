//! Sinks: where query results go. The console (a table drawn with
//! prettytable-rs, or plain CSV / JSON lines for pipes) for a query run in
//! the foreground; files for `CREATE SINK`.

mod console;
mod file;

pub use console::{ConsoleSink, OutputFormat};
pub use file::{FileFormat, FileMode, FileSink, FileSinkOptions};
