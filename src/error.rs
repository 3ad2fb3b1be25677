//! brook's error type: one enum for the library, telling the user's mistakes
//! (bad SQL, bad options, bad input rows) apart from faults of external systems
//! (a refused connection) and internal ones.

use std::io;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// A position in SQL text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SqlLocation {
    /// 1-based line number.
    pub line: u64,
    /// 1-based column number, counted in characters.
    pub column: u64,
}

impl std::fmt::Display for SqlLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Everything that can go wrong in brook.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrookError {
    /// The SQL could not be parsed or planned. `location` points into the
    /// text that was given to [`crate::StreamContext::sql`] (or the script).
    #[error("{message}")]
    Sql {
        /// What is wrong, without the position.
        message: String,
        /// Where in the SQL text, when known.
        location: Option<SqlLocation>,
    },

    /// A request that is well-formed SQL but cannot be carried out: an unknown
    /// stream, a bad connector option, a type the stream does not support.
    #[error("{0}")]
    Invalid(String),

    /// A row of input that could not be decoded into the stream's schema.
    #[error("stream '{stream}' line {line}: {message}")]
    BadRow {
        /// The stream that received the row.
        stream: String,
        /// 1-based line number since the stream started reading.
        line: u64,
        /// Why the row was rejected.
        message: String,
    },

    /// A socket source could not connect to its address.
    #[error("stream '{stream}': cannot connect to {address}: {source}")]
    Connect {
        /// The stream whose source failed.
        stream: String,
        /// `host:port` as configured.
        address: String,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// A source failed while reading (for example, the connection was reset).
    #[error("stream '{stream}': {source}")]
    SourceIo {
        /// The stream whose source failed.
        stream: String,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// A stream a query reads has failed (a bad row with `on_error = 'fail'`,
    /// a lost connection); the message names the stream and the cause.
    #[error("{message}")]
    StreamFailed {
        /// The stream that failed.
        stream: String,
        /// What happened, as first reported.
        message: String,
    },

    /// One batch of a continuous query failed to execute; the query goes on.
    #[error("batch {batch_number}: {source}")]
    BatchFailed {
        /// The batch's number within its query.
        batch_number: u64,
        /// Why it failed.
        source: Box<BrookError>,
    },

    /// DataFusion failed while planning or executing a query.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    /// Arrow failed while building or converting a batch.
    #[error(transparent)]
    Arrow(#[from] ArrowError),

    /// A bug in brook: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrookError {
    /// An [`BrookError::Invalid`] from anything printable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        BrookError::Invalid(message.into())
    }

    /// Where in the SQL text the error was found, if it came from SQL.
    pub fn location(&self) -> Option<SqlLocation> {
        match self {
            BrookError::Sql { location, .. } => *location,
            _ => None,
        }
    }

    /// True when the error is the user's to fix (SQL, options, input data)
    /// rather than an external or internal fault.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            BrookError::Sql { .. } | BrookError::Invalid(_) | BrookError::BadRow { .. }
        )
    }
}

/// Receives problems that do not stop a query: skipped rows, lost
/// connections, reconnect attempts. The default prints them to stderr.
pub type WarningHandler = std::sync::Arc<dyn Fn(&BrookError) + Send + Sync>;

/// Shorthand for results in brook.
pub type Result<T, E = BrookError> = std::result::Result<T, E>;
