//! brook: declarative SQL over live streams.
//!
//! Register streams (a TCP socket of text or CSV lines, an in-memory queue),
//! and brook cuts what each received into one micro-batch of Arrow record
//! batches every batch interval, then runs each continuous query's
//! DataFusion plan, prepared once, on that batch.
//!
//! # Layout
//! - [`context`]: [`StreamContext`], the entry point: streams, the clock, `sql()`.
//! - [`sql`]: brook's statements (`CREATE STREAM`, `SET batch_interval`, ...)
//!   parsed with sqlparser; everything else goes to DataFusion.
//! - [`source`]: queue and socket sources, and decoding lines into Arrow.
//! - `stream`: a registered stream's inbox, where rows wait for a tick.
//! - `batcher`: the trigger clock that cuts batches and feeds queries.
//! - [`query`]: a running [`ContinuousQuery`] and its per-batch execution.
//! - [`window`]: `HOP`, `TUMBLE` and `RUNNING`: the table functions, the
//!   split of a plan into partial / merge / final aggregates, the window state.
//! - `running`: the running queries of a context (`SHOW QUERIES`, `STOP QUERY`).
//! - `functions`: SQL functions brook adds (`split`, a zero-copy word split).
//! - `exec`: brook's physical operators for common per-batch shapes
//!   (`unnest(split(...))`, `GROUP BY` one text column) and their rules.
//! - [`sink`]: console output (table, CSV, JSON) and file sinks (`CREATE SINK`).
//! - [`cli`]: the `brook` command line and, under it, the interactive shell
//!   (`cli::repl`).
//! - [`error`]: the error type, [`BrookError`].
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

pub(crate) mod batcher;
pub mod cli;
pub mod context;
pub mod error;
pub(crate) mod exec;
pub(crate) mod functions;
#[doc(hidden)]
pub mod fuzzing;
pub mod query;
pub(crate) mod running;
pub mod sink;
pub mod source;
pub mod sql;
pub(crate) mod stream;
pub mod window;

pub use context::{SqlOutput, StreamContext, StreamInfo, line_schema};
pub use error::{BrookError, Result, SqlLocation, WarningHandler};
pub use query::{BatchOutput, ContinuousQuery};
pub use running::{QueryInfo, QueryStats};
pub use source::{LineFormat, OnError, QueueHandle, QueueOptions, SocketOptions, StreamLimits};
pub use window::OutputMode;
pub use window::exec::{Retained, WindowBounds};
