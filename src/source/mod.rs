//! Sources: where a stream's rows come from. One file per kind, all behind
//! `Source`; a source decodes what it receives into Arrow and leaves it in
//! the stream's `Inbox` for the next tick.

pub(crate) mod decode;
mod files;
mod kafka;
mod line_options;
pub(crate) mod lookup;
mod options;
mod parquet;
mod pgoutput;
pub(crate) mod postgres_cdc;
mod queue;
mod queue_insert;
mod socket;

use crate::error::{BrookError, Warning, WarningHandler};

pub use crate::options::OptionSpec;
pub(crate) use crate::stream::{Inbox, Source};
pub(crate) use files::FilesSource;
pub(crate) use kafka::KafkaSource;
pub use kafka::{KAFKA_OPTIONS, KafkaMode, KafkaOptions, StartOffset};
pub(crate) use options::Connector;
pub use options::{
    FILES_OPTIONS, FilesFormat, FilesOptions, LineFormat, OnError, QUEUE_OPTIONS, QueueOptions,
    SOCKET_OPTIONS, SocketOptions, StreamLimits, TimestampFormat,
};
pub use queue::QueueHandle;
pub(crate) use queue::QueueSource;
pub(crate) use queue_insert::conform_insert;
pub(crate) use socket::SocketSource;

/// Reports decoded lines' bad rows (each as a warning, or failing the
/// stream under `on_error = 'fail'`) and queues their good rows, waiting
/// for room. `describe` gives a bad line's message (a directory source
/// adds the file's name). Returns false when the stream has failed or
/// was closed: the source stops reading.
pub(crate) async fn deliver(
    inbox: &Inbox,
    decoded: decode::DecodedLines,
    on_error: OnError,
    warn: &WarningHandler,
    describe: impl Fn(&decode::BadLine) -> String,
) -> bool {
    if !decoded.bad_lines.is_empty() {
        inbox.rows_dropped.fetch_add(
            decoded.bad_lines.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    for bad in &decoded.bad_lines {
        let error = BrookError::BadRow {
            stream: inbox.stream().to_string(),
            line: bad.line,
            message: describe(bad),
        };
        if on_error == OnError::Fail {
            // Rows before the bad one in this chunk are lost with the
            // stream; the queries stop on the error.
            inbox.fail(error);
            return false;
        }
        warn(&Warning::SkippedRow(error));
    }
    match decoded.batch {
        Some(batch) => inbox.push(batch).await.is_ok(),
        None => true,
    }
}
