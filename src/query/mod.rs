//! Running continuous queries: what a batch's result looks like
//! ([`BatchOutput`]), the trait every way of running a query implements
//! ([`BatchEngine`](engine::BatchEngine)), the driver that feeds an engine
//! its batches ([`ContinuousQuery`]), and the registry of running queries.

pub(crate) mod completion;
pub(crate) mod driver;
pub(crate) mod engine;
pub(crate) mod registry;

use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

pub use driver::ContinuousQuery;
pub use registry::{QueryInfo, QueryStats, SinkProgress};

/// The result of one batch of a continuous query.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// 1-based number of the batch within this query.
    pub batch_number: u64,
    /// Wall-clock time of the tick that cut the batch (or of the end of
    /// its streams, for a last batch cut by their end).
    pub batch_time: DateTime<Utc>,
    /// Rows the batch held, over all streams the query reads.
    pub rows_in: usize,
    /// The query's result for this batch.
    pub batches: Vec<RecordBatch>,
    /// The result's schema (also when there are no rows).
    pub schema: SchemaRef,
    /// Time from the cut (the tick) to the result. A batch is executed
    /// while its rows arrive, so this is what was left at the cut: rows the
    /// query had not read yet, and the end of the plan (a final aggregate's
    /// output, a window's merge).
    pub elapsed: Duration,
    /// Time the query spent on the batch, from its first row to the result,
    /// not counting waits for rows to arrive.
    pub execution: Duration,
    /// How late the batch started: from when it opened (the previous
    /// batch's cut) until the query began reading it, which is how long
    /// the query was still busy with the batches before. Near zero while
    /// the query keeps up with the batch interval.
    pub lag: Duration,
    /// For a `HOP` or `TUMBLE` query, the window this result covers.
    pub window: Option<WindowBounds>,
    /// What a window or running aggregate query holds after this batch
    /// (all zero for a per-batch query).
    pub retained: Retained,
    /// For an event-time window query: the watermark after this batch (the
    /// one the next batch's rows are judged by). `DateTime::<Utc>::MAX_UTC`
    /// once every stream has ended.
    pub watermark: Option<DateTime<Utc>>,
    /// Rows of this batch that were late (every window they belong to had
    /// closed); they are in no result.
    pub late_rows: u64,
    /// Rows of this batch whose event time was too far ahead of the wall
    /// clock to move the watermark (they are in their windows).
    pub far_future_rows: u64,
    /// With a checkpoint directory: the last batch whose checkpoint was
    /// written when this output was made (this batch's is written once the
    /// output has been handled: when its consumer asks for the next).
    pub checkpoint: Option<u64>,
}

impl BatchOutput {
    /// Rows in the result.
    pub fn rows_out(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What a query holds between batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// Micro-batches the query still needs (raw, or as partial aggregates).
    pub batches: usize,
    /// Rows held: raw rows, or rows of partial aggregate state (one per
    /// group per pane).
    pub rows: usize,
    /// Memory held by those rows, in bytes.
    pub bytes: usize,
    /// For a join of streams, the rows held per stream (its name, rows);
    /// empty otherwise.
    pub by_stream: Vec<(String, usize)>,
}

impl Retained {
    /// [`Retained::by_stream`] as text: `orders 120, payments 80`.
    pub fn by_stream_text(&self) -> Option<String> {
        (!self.by_stream.is_empty()).then(|| {
            self.by_stream
                .iter()
                .map(|(stream, rows)| format!("{stream} {rows}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

impl Retained {
    /// Counts `batch` as held.
    pub(crate) fn add(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
    }
}

/// The window a result covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowBounds {
    /// `window_start`: the start of the window's time range.
    pub start: DateTime<Utc>,
    /// `window_end`: the end of the window's time range.
    pub end: DateTime<Utc>,
    /// The first and last batch (numbers within the query) in the window.
    pub batches: (u64, u64),
}
