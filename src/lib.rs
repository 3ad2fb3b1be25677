//! brook: declarative SQL over live streams.
//!
//! Register streams (a TCP socket of text, CSV or JSON lines, a directory
//! of text, CSV, JSON or Parquet files, an in-memory queue),
//! and brook cuts what each received into one micro-batch of Arrow record
//! batches every batch interval, then runs each continuous query's
//! DataFusion plan, prepared once, on that batch.
//!
//! # Layout
//! Dependencies run one way, from the bottom up:
//!
//! - [`error`]: [`BrookError`] and whose fault it is ([`ErrorKind`]).
//! - [`options`]: each source's and sink's options declared once
//!   ([`options::OptionSpec`]) and read from `WITH (...)`.
//! - [`redact`]: credentials masked out of every text brook shows.
//! - [`sql`]: brook's statements (`CREATE STREAM`, `SET batch_interval`, ...)
//!   parsed with sqlparser; everything else goes to DataFusion.
//! - [`changelog`]: what makes a stream a changelog (its primary key) and
//!   the kinds of change in its `op` column (`+I`, `-U`, `+U`, `-D`).
//! - [`event_time`]: a stream's event-time column and watermark
//!   declaration, and the watermark a query keeps over its streams.
//! - `stream`: a stream's runtime in one place: the `Source` trait, the
//!   bounded inbox, the open batch its queries read while it arrives, the
//!   ledger of which cuts every query has finished (what a Kafka stream may
//!   commit), the registered stream and the trigger clock.
//! - [`source`]: queue, socket, directory and Kafka sources, decoding lines
//!   (text, CSV, JSON) and reading Parquet files into Arrow.
//! - `catalog`: what DataFusion sees: the table of each stream and the batch
//!   slots its scans read, the window table functions (`HOP`, `TUMBLE`,
//!   `SESSION`, `RUNNING`), the system tables (`brook.queries`, `brook.streams`).
//! - [`query`]: a running [`ContinuousQuery`]: its output, the
//!   `BatchEngine` trait every way of running a query implements, the
//!   driver, the registry of running queries.
//! - `engine`: the engines: per batch, sliding windows (recompute or
//!   incremental), running aggregates, event-time windows and sessions; with `exec`, brook's physical
//!   operators and rules, and `functions`, the SQL functions brook adds.
//! - `planner`: decides whether a statement is continuous, picks its
//!   engine, plans it once, and explains it.
//! - [`sink`]: console output and file sinks of CSV, JSON or Parquet
//!   (`CREATE SINK`).
//! - [`context`]: [`StreamContext`], the entry point: streams, `sql()`.
//! - [`ui`]: the dashboard: a live page, JSON under `/api/`, Prometheus
//!   metrics, served over HTTP for a context.
//! - [`cli`]: the `brook` command line and, under it, the interactive shell
//!   (`cli::repl`).
//!
//! # Example
//! Spark's `queueStream` word count, with two items taken one per batch:
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use brook::{SqlOutput, StreamContext};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> brook::Result<()> {
//! let ctx = StreamContext::new(Duration::from_millis(50));
//! ctx.sql("CREATE STREAM lines (line TEXT) WITH (connector = 'queue', one_at_a_time = 'true')").await?;
//! ctx.sql("INSERT INTO lines VALUES ('Spark Streaming Sample ssc')").await?;
//! ctx.sql("INSERT INTO lines VALUES ('Spark Queue Spark API')").await?;
//! let SqlOutput::Query(mut query) = ctx
//!     .sql("SELECT word, COUNT(*) AS count \
//!           FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) \
//!           GROUP BY word ORDER BY count DESC, word")
//!     .await?
//! else {
//!     unreachable!("a SELECT over a stream is a continuous query")
//! };
//! ctx.close_queues(); // the stream ends once both items are taken
//! let mut batches = Vec::new();
//! while let Some(output) = query.next().await {
//!     let output = output?;
//!     batches.push((output.batch_number, output.rows_out()));
//! }
//! assert_eq!(batches, vec![(1, 4), (2, 3)]);
//! # Ok(())
//! # }
//! ```

// Nothing derived from user input or the network may panic: library code
// returns errors instead (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod avro;
pub(crate) mod catalog;
pub mod changelog;
pub mod checkpoint;
pub mod cli;
pub mod context;
pub(crate) mod crypto;
pub(crate) mod engine;
pub mod error;
pub mod event_time;
pub(crate) mod exec;
pub(crate) mod functions;
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
pub mod options;
pub(crate) mod pg;
pub(crate) mod planner;
pub mod query;
pub mod redact;
pub(crate) mod retry;
pub mod sink;
pub mod source;
pub mod sql;
pub mod storage;
pub(crate) mod stream;
#[doc(hidden)]
pub mod testing;
pub mod ui;

pub use catalog::windows::OutputMode;
pub use context::{SqlOutput, StreamContext, line_schema};
pub use error::{
    BrookError, ErrorKind, ReportedWarning, Result, SqlLocation, Warning, WarningHandler,
    error_chain,
};
pub use event_time::EventTime;
pub use query::{
    BatchOutput, ContinuousQuery, QueryInfo, QueryStats, Retained, SinkProgress, WindowBounds,
};
pub use source::{
    FilesFormat, FilesOptions, KafkaOptions, LineFormat, OnError, QueueHandle, QueueOptions,
    SocketOptions, StartOffset, StreamLimits, TimestampFormat,
};
pub use stream::StreamInfo;
