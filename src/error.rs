//! brook's error type: one enum for the library whose [`ErrorKind`] tells
//! the user's mistakes (bad SQL, bad options, bad input rows) apart from
//! failures outside brook (a peer, the file system) and internal faults (a
//! bug). Causes are kept as [`std::error::Error::source`]; a location is set
//! only on SQL errors.

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
    /// a lost connection); the cause names the stream.
    #[error("{source}")]
    StreamFailed {
        /// The stream that failed.
        stream: String,
        /// What happened, as first reported; shared by every query that
        /// reads the stream.
        source: std::sync::Arc<BrookError>,
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

    /// A queue stream refused an item because it holds as much as its
    /// bounds allow; push again once a query has taken some.
    #[error("{message}")]
    StreamFull {
        /// The stream that is full.
        stream: String,
        /// How full it is and which bound it reached.
        message: String,
    },

    /// A file or directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What brook was doing, naming the path.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },

    /// A sink could not write a batch.
    #[error("sink '{sink}': {source}")]
    SinkFailed {
        /// The sink's name.
        sink: String,
        /// Why the write failed.
        source: Box<BrookError>,
    },

    /// A server brook writes to (PostgreSQL) refused or failed a request,
    /// or could not be reached.
    #[error("{context}: {message}")]
    External {
        /// What brook was doing, and where (never a password).
        context: String,
        /// What the server or the network said.
        message: String,
    },

    /// A statement ran longer than its timeout and was cancelled.
    #[error("canceling statement due to statement timeout ({0:?})")]
    Timeout(std::time::Duration),

    /// A bug in brook: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose fault an error is, which decides what the user can do about it
/// (and the `brook` command's exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user's to fix: SQL, options, input data, a query that fails on
    /// its data (a division by zero).
    User,
    /// A failure outside brook: a peer, the network, the file system.
    External,
    /// A bug in brook.
    Internal,
}

impl BrookError {
    /// An [`BrookError::Invalid`] from anything printable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        BrookError::Invalid(message.into())
    }

    /// An [`BrookError::External`]: something outside brook (a broker, a
    /// server, the network) failed while brook was doing `context`.
    pub(crate) fn external(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        BrookError::External {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// Where in the SQL text the error was found, if it came from SQL.
    pub fn location(&self) -> Option<SqlLocation> {
        match self {
            BrookError::Sql { location, .. } => *location,
            _ => None,
        }
    }

    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BrookError::Sql { .. }
            | BrookError::Invalid(_)
            | BrookError::BadRow { .. }
            | BrookError::Timeout(_) => ErrorKind::User,
            BrookError::Connect { .. }
            | BrookError::SourceIo { .. }
            | BrookError::StreamFull { .. }
            | BrookError::Io { .. }
            | BrookError::External { .. } => ErrorKind::External,
            BrookError::BatchFailed { source, .. } | BrookError::SinkFailed { source, .. } => {
                source.kind()
            }
            BrookError::StreamFailed { source, .. } => source.kind(),
            BrookError::DataFusion(err) => datafusion_kind(err),
            BrookError::Arrow(err) => arrow_kind(err),
            BrookError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the error is the user's to fix (SQL, options, input data)
    /// rather than an external or internal fault.
    pub fn is_user_error(&self) -> bool {
        self.kind() == ErrorKind::User
    }

    /// An [`BrookError::Io`] saying what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        BrookError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Whose fault a DataFusion error is: planning and execution errors come
/// from the query and its data; I/O and object stores are outside; the rest
/// are bugs (in DataFusion or in brook's use of it).
fn datafusion_kind(err: &DataFusionError) -> ErrorKind {
    match err {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_kind(inner)
        }
        DataFusionError::Shared(inner) => datafusion_kind(inner),
        DataFusionError::ArrowError(inner, _) => arrow_kind(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<BrookError>() {
            Some(brook) => brook.kind(),
            None => match inner.downcast_ref::<io::Error>() {
                Some(_) => ErrorKind::External,
                None => ErrorKind::User,
            },
        },
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => ErrorKind::External,
        DataFusionError::Internal(_) => ErrorKind::Internal,
        DataFusionError::Collection(errors) => {
            errors.first().map_or(ErrorKind::Internal, datafusion_kind)
        }
        _ => ErrorKind::User,
    }
}

/// Whose fault an Arrow error is: I/O is outside; the rest comes from data
/// or types the user gave (a failed cast, a division by zero).
fn arrow_kind(err: &ArrowError) -> ErrorKind {
    match err {
        ArrowError::IoError(..) => ErrorKind::External,
        ArrowError::ExternalError(inner) => match inner.downcast_ref::<BrookError>() {
            Some(brook) => brook.kind(),
            None => ErrorKind::User,
        },
        _ => ErrorKind::User,
    }
}

/// `err` and its causes, each once, joined by `": "` (like anyhow's
/// alternate display): what the command line prints.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let part = next.to_string();
        // Messages that already include their cause are not repeated.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = next.source();
    }
    text
}

/// A problem that does not stop a query, reported to the context's
/// [`WarningHandler`] (the default prints it to stderr) and listed by the
/// dashboard. What happened is the [`BrookError`] it holds (its kind says
/// whose fault it is); the variant says what brook did about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// An input row could not be decoded and was skipped
    /// (`on_error = 'skip'`); the error names the stream and where.
    #[error(transparent)]
    SkippedRow(BrookError),
    /// A source could not read something (a file, a connection, a broker)
    /// and goes on: it retries, reconnects or skips what it cannot read.
    #[error(transparent)]
    Source(BrookError),
    /// A sink could not write and retries.
    #[error(transparent)]
    Sink(BrookError),
    /// A query's batch failed; the query goes on with the next batch.
    #[error(transparent)]
    Query(BrookError),
    /// A query's checkpoint could not be written; the next batch tries
    /// again, and a restart resumes from the last one written.
    #[error("query {query}: checkpoint after batch {batch} not written: {source}")]
    Checkpoint {
        /// The query's id.
        query: u64,
        /// The batch whose checkpoint it was.
        batch: u64,
        /// Why it was not written.
        source: BrookError,
    },
    /// Something brook does on its own failed (registering a system
    /// table); nothing the user ran stops.
    #[error(transparent)]
    Context(BrookError),
    /// Something the user should know that is not a failure (rows behind
    /// the watermark dropped, an unreadable checkpoint passed over for an
    /// older one); the text names the query or stream.
    #[error("{0}")]
    Notice(String),
}

impl Warning {
    /// Whose fault it is: its cause's kind; a notice is about the user's
    /// data.
    pub fn kind(&self) -> ErrorKind {
        self.cause().map_or(ErrorKind::User, BrookError::kind)
    }

    /// The error behind the warning, taken out of it.
    pub(crate) fn into_cause(self) -> Option<BrookError> {
        match self {
            Warning::SkippedRow(cause)
            | Warning::Source(cause)
            | Warning::Sink(cause)
            | Warning::Query(cause)
            | Warning::Context(cause)
            | Warning::Checkpoint { source: cause, .. } => Some(cause),
            Warning::Notice(_) => None,
        }
    }

    /// The error behind the warning, when there is one.
    pub fn cause(&self) -> Option<&BrookError> {
        match self {
            Warning::SkippedRow(cause)
            | Warning::Source(cause)
            | Warning::Sink(cause)
            | Warning::Query(cause)
            | Warning::Context(cause)
            | Warning::Checkpoint { source: cause, .. } => Some(cause),
            Warning::Notice(_) => None,
        }
    }
}

/// Receives [`Warning`]s: problems that do not stop a query.
pub type WarningHandler = std::sync::Arc<dyn Fn(&Warning) + Send + Sync>;

/// Shorthand for results in brook.
pub type Result<T, E = BrookError> = std::result::Result<T, E>;

/// Warnings kept for the dashboard: at most this many, the newest.
pub(crate) const RECENT_WARNINGS: usize = 100;

/// One warning as the dashboard lists it.
#[derive(Debug, Clone)]
pub struct ReportedWarning {
    /// When it was reported.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Whose fault it is.
    pub kind: ErrorKind,
    /// The warning and its causes ([`error_chain`]), as reported; the
    /// dashboard masks passwords before showing it.
    pub message: String,
}

/// A bounded ring of the most recent warnings of a context, fed by its
/// [`WarningHandler`] and by failed batches: what the dashboard's "recent
/// warnings" shows. Pushing is one short lock and the message's text,
/// which the handler formats anyway.
#[derive(Debug, Default)]
pub(crate) struct RecentWarnings {
    state: parking_lot::Mutex<RecentState>,
}

#[derive(Debug, Default)]
struct RecentState {
    warnings: std::collections::VecDeque<ReportedWarning>,
    /// Warnings ever pushed, kept and evicted ones alike.
    total: u64,
}

impl RecentWarnings {
    /// Records `warning`, evicting the oldest past [`RECENT_WARNINGS`].
    pub fn push(&self, warning: &Warning) {
        self.record(warning.kind(), error_chain(warning));
    }

    /// Records a query's failed batch (a [`Warning::Query`] the query
    /// reports itself).
    pub fn push_failure(&self, failure: &BrookError) {
        self.record(failure.kind(), error_chain(failure));
    }

    fn record(&self, kind: ErrorKind, message: String) {
        let entry = ReportedWarning {
            time: chrono::Utc::now(),
            kind,
            message,
        };
        let mut state = self.state.lock();
        if state.warnings.len() >= RECENT_WARNINGS {
            state.warnings.pop_front();
        }
        state.warnings.push_back(entry);
        state.total += 1;
    }

    /// The kept warnings, oldest first, and how many were ever pushed.
    pub fn snapshot(&self) -> (Vec<ReportedWarning>, u64) {
        let state = self.state.lock();
        (state.warnings.iter().cloned().collect(), state.total)
    }
}
