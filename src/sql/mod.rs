//! brook's SQL front end: splits a script into statements, parses brook's own
//! statements (`CREATE STREAM`, `DROP STREAM`, `SHOW STREAMS`,
//! `SET batch_interval`) with sqlparser, and hands every other statement to
//! DataFusion's parser. Tokens keep their positions in the whole script, so
//! every error names the line and column where it was found.

mod create_stream;
mod interval;
mod statement;
mod tokens;
mod types;

pub use interval::{
    format_duration, interval_duration, parse_delay, parse_duration, parse_timeout,
};
pub(crate) use statement::datafusion_sql_error;
pub use statement::{
    BrookStatement, CreateSink, CreateStream, EmitMode, ParsedStatement, StreamClauses, parse_sql,
};
pub(crate) use tokens::{normalize_ident, object_name};
pub use types::{column_list, sql_type_name};
