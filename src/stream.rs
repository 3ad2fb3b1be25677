//! A registered stream at run time: its schema, its source, the inbox where
//! rows wait for the next tick, and its counters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::Notify;

use crate::error::{BrookError, Result};
use crate::source::Source;

/// Rows a source may hold in its inbox before it waits for the next tick
/// (socket sources stop reading; TCP flow control slows the sender).
pub(crate) const DEFAULT_MAX_PENDING_ROWS: usize = 4_000_000;

/// A stream registered in a [`crate::StreamContext`].
#[derive(Debug)]
pub(crate) struct LiveStream {
    pub name: String,
    pub schema: SchemaRef,
    pub source: Arc<dyn Source>,
    pub inbox: Arc<Inbox>,
    /// Set once the source has been started by the first query that reads it.
    pub started: AtomicBool,
}

impl LiveStream {
    pub fn new(
        name: String,
        schema: SchemaRef,
        source: Arc<dyn Source>,
        max_pending_rows: usize,
    ) -> Self {
        let inbox = Arc::new(Inbox::new(name.clone(), max_pending_rows));
        Self {
            name,
            schema,
            source,
            inbox,
            started: AtomicBool::new(false),
        }
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

    /// Cuts what arrived since the last tick into one micro-batch.
    pub fn cut(&self) -> Result<StreamCut> {
        let (items, ended, failure) = self.inbox.take(self.source.one_item_per_batch());
        if let Some(message) = failure {
            return Err(BrookError::StreamFailed {
                stream: self.name.clone(),
                message,
            });
        }
        let rows = items.iter().map(RecordBatch::num_rows).sum();
        Ok(StreamCut {
            batches: coalesce(&self.schema, items)?,
            rows,
            ended,
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
}

/// Where a source leaves decoded rows until the next tick. Bounded: a
/// source that runs ahead waits in [`Inbox::push`].
#[derive(Debug)]
pub(crate) struct Inbox {
    stream: String,
    state: std::sync::Mutex<InboxState>,
    /// Woken after each cut, so a source waiting for space can go on.
    space_freed: Notify,
    max_pending_rows: usize,
    pub rows_received: AtomicU64,
    pub rows_dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct InboxState {
    items: VecDeque<RecordBatch>,
    pending_rows: usize,
    closed: bool,
    failure: Option<String>,
}

impl Inbox {
    fn new(stream: String, max_pending_rows: usize) -> Self {
        Self {
            stream,
            state: Default::default(),
            space_freed: Notify::new(),
            max_pending_rows: max_pending_rows.max(1),
            rows_received: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        // A panic while holding this lock cannot leave the queue half-updated
        // in a way that matters more than losing the stream, so recover.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one item now, however full the inbox is (queues: the caller
    /// decided to push it). Fails if the inbox was closed.
    pub fn push_now(&self, batch: RecordBatch) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(BrookError::invalid(format!(
                "stream '{}' is closed",
                self.stream
            )));
        }
        self.rows_received
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        state.pending_rows += batch.num_rows();
        state.items.push_back(batch);
        Ok(())
    }

    /// Adds rows, first waiting for a tick to make room if the inbox is full.
    pub async fn push(&self, batch: RecordBatch) {
        loop {
            let space_freed = self.space_freed.notified();
            tokio::pin!(space_freed);
            space_freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.pending_rows == 0
                    || state.pending_rows + batch.num_rows() <= self.max_pending_rows
                {
                    self.rows_received
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    state.pending_rows += batch.num_rows();
                    state.items.push_back(batch);
                    return;
                }
            }
            space_freed.await;
        }
    }

    /// Marks the end of the source: once drained, the stream has ended.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Records that the source failed; the next cut reports it to queries.
    pub fn fail(&self, message: String) {
        let mut state = self.lock();
        state.failure.get_or_insert(message);
        state.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn pending_rows(&self) -> usize {
        self.lock().pending_rows
    }

    /// Takes the first item (`one_item`) or all items; says whether the
    /// stream has ended with this take.
    fn take(&self, one_item: bool) -> (Vec<RecordBatch>, bool, Option<String>) {
        let mut state = self.lock();
        // Rows that arrived before the failure are still delivered first.
        if state.items.is_empty()
            && let Some(failure) = state.failure.clone()
        {
            return (Vec::new(), true, Some(failure));
        }
        let items: Vec<RecordBatch> = if one_item {
            state.items.pop_front().into_iter().collect()
        } else {
            state.items.drain(..).collect()
        };
        state.pending_rows -= items.iter().map(RecordBatch::num_rows).sum::<usize>();
        let ended = state.closed && state.items.is_empty() && state.failure.is_none();
        drop(state);
        self.space_freed.notify_waiters();
        (items, ended, None)
    }
}
