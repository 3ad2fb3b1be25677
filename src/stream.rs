//! A registered stream at run time: its schema, its source, the inbox where
//! rows wait for the next tick, and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{BrookError, Result};
use crate::source::{Inbox, Source, StreamLimits};

/// A registered stream, as `SHOW STREAMS`, `brook.streams` and `\\d NAME`
/// show it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// `queue` or `socket`.
    pub connector: String,
    /// The stream's columns.
    pub schema: SchemaRef,
    /// The connector's options as a user would write them.
    pub options: String,
    /// `idle` (no query reads it), `running`, `closed` (its source ended)
    /// or `failed` (see `failure`).
    pub state: String,
    /// Why the stream failed, when it did.
    pub failure: Option<String>,
    /// Rows received since the stream started.
    pub rows_received: u64,
    /// Rows dropped (malformed, too long, cut off), each reported.
    pub rows_dropped: u64,
    /// Rows received and not yet cut into a batch.
    pub rows_pending: u64,
    /// The most rows waiting for a batch at any time.
    pub peak_pending_rows: u64,
    /// The most bytes of Arrow memory waiting for a batch at any time.
    pub peak_pending_bytes: u64,
    /// The bounds on what waits for a batch.
    pub limits: StreamLimits,
}

impl StreamInfo {
    /// The columns as `name type, ...`.
    pub fn columns(&self) -> String {
        crate::sql::column_list(&self.schema)
    }
}

/// A stream registered in a [`crate::StreamContext`].
#[derive(Debug)]
pub(crate) struct LiveStream {
    pub name: String,
    pub schema: SchemaRef,
    pub source: Arc<dyn Source>,
    pub inbox: Arc<Inbox>,
    /// Set once the source has been started by the first query that reads it.
    pub started: AtomicBool,
    /// The stream's event-time column and watermark, when declared; set
    /// once, before a query reads the stream.
    pub event_time: std::sync::OnceLock<crate::event_time::EventTime>,
    /// Fed by a query (late rows), which closes it when it ends: not closed
    /// with the queues at the end of a script.
    pub fed_by_query: AtomicBool,
}

impl LiveStream {
    pub fn new(
        name: String,
        schema: SchemaRef,
        source: Arc<dyn Source>,
        limits: StreamLimits,
    ) -> Self {
        let inbox = Arc::new(Inbox::new(name.clone(), limits));
        Self {
            name,
            schema,
            source,
            inbox,
            started: AtomicBool::new(false),
            event_time: std::sync::OnceLock::new(),
            fed_by_query: AtomicBool::new(false),
        }
    }

    /// The stream's event-time declaration, if any.
    pub fn event_time(&self) -> Option<crate::event_time::EventTime> {
        self.event_time.get().cloned()
    }

    /// Starts the source if no query has started it yet.
    pub async fn ensure_started(&self) -> Result<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.source.start(Arc::clone(&self.inbox)).await;
        if result.is_err() {
            self.started.store(false, Ordering::SeqCst);
        }
        result
    }

    /// What `SHOW STREAMS` shows of the stream; `read` says whether a
    /// running query reads it.
    pub fn info(&self, read: bool) -> StreamInfo {
        let inbox = &self.inbox;
        let failure = inbox.failure().map(|err| crate::error::error_chain(&*err));
        StreamInfo {
            name: self.name.clone(),
            connector: self.source.connector().to_string(),
            schema: Arc::clone(&self.schema),
            options: match self.event_time.get() {
                Some(event_time) => {
                    format!("{}, {}", self.source.describe(), event_time.describe())
                }
                None => self.source.describe(),
            },
            state: if failure.is_some() {
                "failed"
            } else if inbox.is_closed() {
                "closed"
            } else if read {
                "running"
            } else {
                "idle"
            }
            .to_string(),
            failure,
            rows_received: inbox.rows_received.load(Ordering::Relaxed),
            rows_dropped: inbox.rows_dropped.load(Ordering::Relaxed),
            rows_pending: inbox.pending_rows() as u64,
            peak_pending_rows: inbox.peak_pending_rows.load(Ordering::Relaxed),
            peak_pending_bytes: inbox.peak_pending_bytes.load(Ordering::Relaxed),
            limits: inbox.limits(),
        }
    }

    /// Whether the stream's source has ended and nothing is left that is
    /// owed its own tick: the next cut takes what is left and ends the
    /// stream. A queue taking one item per batch keeps one item per tick
    /// to its end.
    pub fn next_cut_is_last(&self) -> bool {
        self.inbox.is_closed()
            && (!self.source.one_item_per_batch() || self.inbox.pending_items() == 0)
    }

    /// Cuts what arrived since the last tick into one micro-batch.
    pub fn cut(&self) -> Result<StreamCut> {
        let taken = self.inbox.take(self.source.one_item_per_batch());
        if let Some(source) = taken.failure {
            return Err(BrookError::StreamFailed {
                stream: self.name.clone(),
                source,
            });
        }
        let rows = taken.items.iter().map(RecordBatch::num_rows).sum();
        Ok(StreamCut {
            batches: coalesce(&self.schema, taken.items)?,
            rows,
            ended: taken.ended,
            in_flight: taken.in_flight,
        })
    }
}

/// Rows a micro-batch's record batches hold at least, where the source
/// delivered smaller pieces (DataFusion's default batch size).
const MIN_CHUNK_ROWS: usize = 8192;

/// Joins runs of small pieces into record batches of at least
/// [`MIN_CHUNK_ROWS`] rows; larger pieces pass through without copying.
fn coalesce(schema: &SchemaRef, items: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut chunks = Vec::with_capacity(items.len());
    let mut small: Vec<RecordBatch> = Vec::new();
    let mut small_rows = 0;
    let flush = |small: &mut Vec<RecordBatch>, chunks: &mut Vec<RecordBatch>| -> Result<()> {
        match small.len() {
            0 => {}
            1 => chunks.append(small),
            _ => chunks.push(concat_batches(schema, &std::mem::take(small))?),
        }
        Ok(())
    };
    for item in items {
        if item.num_rows() >= MIN_CHUNK_ROWS {
            flush(&mut small, &mut chunks)?;
            small_rows = 0;
            chunks.push(item);
        } else if item.num_rows() > 0 {
            small_rows += item.num_rows();
            small.push(item);
            if small_rows >= MIN_CHUNK_ROWS {
                flush(&mut small, &mut chunks)?;
                small_rows = 0;
            }
        }
    }
    flush(&mut small, &mut chunks)?;
    Ok(chunks)
}

/// What one tick took from a stream: one micro-batch, held as the record
/// batches the source delivered (small pieces joined), so that a large
/// micro-batch streams through the plan instead of being copied into one
/// array first.
#[derive(Debug, Clone)]
pub(crate) struct StreamCut {
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub rows: usize,
    /// The source has ended and everything it delivered has now been cut.
    pub ended: bool,
    /// Shared by every query the cut is handed to; the cut is finished
    /// (a Kafka source may commit its offsets) once all have dropped it.
    pub in_flight: Arc<crate::source::cuts::CutInFlight>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn coalesce_joins_small_pieces_and_passes_large_ones_through() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let piece = |rows: usize| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from(vec![1; rows]))],
            )
            .unwrap()
        };
        let large = piece(MIN_CHUNK_ROWS + 1);
        let items = vec![
            piece(3),
            piece(0),
            piece(5),
            large.clone(),
            piece(MIN_CHUNK_ROWS - 1),
            piece(2),
            piece(4),
        ];
        let chunks = coalesce(&schema, items).unwrap();
        let sizes: Vec<usize> = chunks.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![8, MIN_CHUNK_ROWS + 1, MIN_CHUNK_ROWS + 1, 4]);
        // The large piece is the same arrays, not a copy.
        assert!(Arc::ptr_eq(chunks[1].column(0), large.column(0)));
    }
}
