//! A stream's inbox: where a source leaves decoded rows until the next tick,
//! bounded by rows and bytes, with the stream's counters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::Notify;

use super::StreamLimits;
use super::cuts::{CutInFlight, CutLedger};
use crate::error::{BrookError, Result};

/// Where a source leaves decoded rows until the next tick. Bounded by rows
/// and bytes: a socket that runs ahead waits in [`Inbox::push`]; a queue's
/// push is refused ([`Inbox::push_now`]).
#[derive(Debug)]
pub(crate) struct Inbox {
    stream: String,
    state: std::sync::Mutex<InboxState>,
    /// Woken after each cut, so a source waiting for space can go on.
    space_freed: Notify,
    limits: StreamLimits,
    pub rows_received: AtomicU64,
    pub rows_dropped: AtomicU64,
    /// The most rows and bytes the inbox has held at once.
    pub peak_pending_rows: AtomicU64,
    pub peak_pending_bytes: AtomicU64,
    /// Told when the source ends (closes or fails), so that the clock can
    /// cut the last batch at once instead of at the next tick.
    on_close: std::sync::Mutex<Vec<std::sync::Arc<Notify>>>,
    /// Which cuts every query has finished with: what a source that can
    /// replay (Kafka) may commit.
    ledger: Arc<CutLedger>,
}

/// What one cut took from an inbox.
#[derive(Debug)]
pub(crate) struct Taken {
    pub items: Vec<RecordBatch>,
    /// The source has ended and everything it delivered is now taken.
    pub ended: bool,
    /// Why the source failed, once every row before the failure is taken.
    pub failure: Option<Arc<BrookError>>,
    /// Shared by the queries the cut goes to; finished when all drop it.
    pub in_flight: Arc<CutInFlight>,
}

#[derive(Debug, Default)]
struct InboxState {
    items: VecDeque<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    closed: bool,
    failure: Option<Arc<BrookError>>,
    /// Items added so far, and items a cut took whole: a source that can
    /// replay (Kafka) commits what the items up to `taken` held.
    pushed: u64,
    taken: u64,
}

impl InboxState {
    /// Whether an item of `rows` and `bytes` fits under `limits`. An empty
    /// inbox takes any item, so one item larger than the bound still passes.
    fn has_room(&self, limits: &StreamLimits, rows: usize, bytes: usize) -> bool {
        self.items.is_empty()
            || (self.pending_rows + rows <= limits.max_pending_rows
                && self.pending_bytes + bytes <= limits.max_pending_bytes)
    }
}

/// Arrow memory a batch holds (shared buffers counted in full).
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch.get_array_memory_size()
}

impl Inbox {
    pub(crate) fn new(stream: String, limits: StreamLimits) -> Self {
        Self {
            stream,
            state: Default::default(),
            space_freed: Notify::new(),
            limits: StreamLimits {
                max_pending_rows: limits.max_pending_rows.max(1),
                max_pending_bytes: limits.max_pending_bytes.max(1),
                max_batch_rows: limits.max_batch_rows.filter(|rows| *rows > 0),
            },
            rows_received: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
            peak_pending_rows: AtomicU64::new(0),
            peak_pending_bytes: AtomicU64::new(0),
            on_close: std::sync::Mutex::new(Vec::new()),
            ledger: Arc::default(),
        }
    }

    /// Notifies `ended` when the source ends; at once if it already has.
    pub fn notify_on_close(&self, ended: std::sync::Arc<Notify>) {
        if self.is_closed() {
            ended.notify_one();
        }
        crate::sync::lock(&self.on_close).push(ended);
    }

    fn closed_now(&self) {
        for ended in crate::sync::lock(&self.on_close).iter() {
            ended.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        crate::sync::lock(&self.state)
    }

    fn add(&self, state: &mut InboxState, batch: RecordBatch, bytes: usize) {
        self.rows_received
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        state.pending_rows += batch.num_rows();
        state.pending_bytes += bytes;
        self.peak_pending_rows
            .fetch_max(state.pending_rows as u64, Ordering::Relaxed);
        self.peak_pending_bytes
            .fetch_max(state.pending_bytes as u64, Ordering::Relaxed);
        state.items.push_back(batch);
        state.pushed += 1;
    }

    fn closed_error(&self) -> BrookError {
        BrookError::invalid(format!("stream '{}' is closed", self.stream))
    }

    /// Adds `batch` if the inbox has room; a full inbox is an error that
    /// says so (a queue's `push`, `INSERT INTO`). Fails if closed.
    pub fn push_now(&self, batch: RecordBatch) -> Result<()> {
        let bytes = batch_bytes(&batch);
        let mut state = self.lock();
        if state.closed {
            return Err(self.closed_error());
        }
        if !state.has_room(&self.limits, batch.num_rows(), bytes) {
            return Err(BrookError::StreamFull {
                stream: self.stream.clone(),
                message: format!(
                    "stream '{}' is full: {} rows ({} bytes) wait for the next batch (max_pending_rows = {}, max_pending_bytes = {}); push again once a query has taken them",
                    self.stream,
                    state.pending_rows,
                    state.pending_bytes,
                    self.limits.max_pending_rows,
                    self.limits.max_pending_bytes
                ),
            });
        }
        self.add(&mut state, batch, bytes);
        Ok(())
    }

    /// Adds `batch`, first waiting for a tick to make room if the inbox is
    /// full (backpressure). A batch of more rows than the inbox may hold
    /// goes in as slices (copying nothing). Fails only if the inbox is
    /// closed.
    pub async fn push(&self, batch: RecordBatch) -> Result<()> {
        let most = self.limits.max_pending_rows;
        let mut offset = 0;
        while batch.num_rows() - offset > most {
            self.push_fitting(batch.slice(offset, most)).await?;
            offset += most;
        }
        self.push_fitting(batch.slice(offset, batch.num_rows() - offset))
            .await
    }

    async fn push_fitting(&self, batch: RecordBatch) -> Result<()> {
        let bytes = batch_bytes(&batch);
        loop {
            let space_freed = self.space_freed.notified();
            tokio::pin!(space_freed);
            space_freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(self.closed_error());
                }
                if state.has_room(&self.limits, batch.num_rows(), bytes) {
                    self.add(&mut state, batch, bytes);
                    return Ok(());
                }
            }
            space_freed.await;
        }
    }

    /// Marks the end of the source: once drained, the stream has ended.
    pub fn close(&self) {
        self.lock().closed = true;
        // Pushers waiting for room learn that the stream is closed.
        self.space_freed.notify_waiters();
        self.closed_now();
    }

    /// Records that the source failed; the next cut reports it to queries.
    pub fn fail(&self, error: BrookError) {
        {
            let mut state = self.lock();
            state.failure.get_or_insert_with(|| Arc::new(error));
            state.closed = true;
        }
        self.closed_now();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The bounds the inbox holds its source to.
    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Why the source failed, if it did.
    pub fn failure(&self) -> Option<Arc<BrookError>> {
        self.lock().failure.clone()
    }

    pub fn pending_rows(&self) -> usize {
        self.lock().pending_rows
    }

    /// Items (pushes, decoded reads) waiting for a batch.
    pub fn pending_items(&self) -> usize {
        self.lock().items.len()
    }

    /// Reports decoded lines' bad rows (each as a warning, or failing the
    /// stream under `on_error = 'fail'`) and queues their good rows, waiting
    /// for room. `describe` gives a bad line's message (a directory source
    /// adds the file's name). Returns false when the stream has failed or
    /// was closed: the source stops reading.
    pub(crate) async fn deliver(
        &self,
        decoded: super::decode::DecodedLines,
        on_error: super::OnError,
        warn: &crate::error::WarningHandler,
        describe: impl Fn(&super::decode::BadLine) -> String,
    ) -> bool {
        if !decoded.bad_lines.is_empty() {
            self.rows_dropped
                .fetch_add(decoded.bad_lines.len() as u64, Ordering::Relaxed);
        }
        for bad in &decoded.bad_lines {
            let error = BrookError::BadRow {
                stream: self.stream.clone(),
                line: bad.line,
                message: describe(bad),
            };
            if on_error == super::OnError::Fail {
                // Rows before the bad one in this chunk are lost with the
                // stream; the queries stop on the error.
                self.fail(error);
                return false;
            }
            warn(&error);
        }
        match decoded.batch {
            Some(batch) => self.push(batch).await.is_ok(),
            None => true,
        }
    }

    /// Items added so far (a batch pushed in slices counts each slice).
    pub fn items_pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// Drops the rows waiting for a cut (a Kafka source whose partitions
    /// were revoked: their new owner reads them again), counting their
    /// items as taken by no one. Returns the items cuts had taken before.
    pub fn discard_pending(&self) -> u64 {
        let mut state = self.lock();
        let taken = state.taken;
        self.rows_received
            .fetch_sub(state.pending_rows as u64, Ordering::Relaxed);
        state.taken += state.items.len() as u64;
        state.items.clear();
        state.pending_rows = 0;
        state.pending_bytes = 0;
        drop(state);
        self.space_freed.notify_waiters();
        taken
    }

    /// Which of the inbox's cuts every reader has finished.
    pub fn ledger(&self) -> &Arc<CutLedger> {
        &self.ledger
    }

    /// Waits until every row pushed so far has been taken by a cut (or the
    /// stream has closed). A directory source with `max_files_per_batch`
    /// waits here after its quota of files, so that the next file starts a
    /// new batch: the wait ends on the cut itself, not on a guess of time.
    pub async fn drained(&self) {
        loop {
            // Every take wakes `space_freed`; enabled before looking, so a
            // take between the look and the wait is not missed.
            let taken = self.space_freed.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let state = self.lock();
                if state.items.is_empty() || state.closed {
                    return;
                }
            }
            taken.await;
        }
    }

    /// Takes the first item (`one_item`) or all items; says whether the
    /// stream has ended with this take.
    pub(crate) fn take(&self, one_item: bool) -> Taken {
        let mut state = self.lock();
        let taken_before = state.taken;
        // Rows that arrived before the failure are still delivered first.
        if state.items.is_empty()
            && let Some(failure) = state.failure.clone()
        {
            return Taken {
                items: Vec::new(),
                ended: true,
                failure: Some(failure),
                in_flight: self.ledger.open(taken_before, taken_before),
            };
        }
        let mut items = Vec::new();
        let mut rows = 0;
        let cap = self.limits.max_batch_rows.unwrap_or(usize::MAX);
        while rows < cap {
            let Some(item) = state.items.pop_front() else {
                break;
            };
            let item = if rows + item.num_rows() > cap {
                // Slicing copies nothing; the rest waits for the next tick
                // and still holds the item's buffers.
                let keep = cap - rows;
                state
                    .items
                    .push_front(item.slice(keep, item.num_rows() - keep));
                item.slice(0, keep)
            } else {
                state.pending_bytes = state.pending_bytes.saturating_sub(batch_bytes(&item));
                state.taken += 1;
                item
            };
            rows += item.num_rows();
            items.push(item);
            if one_item {
                break;
            }
        }
        state.pending_rows -= rows;
        if state.items.is_empty() {
            state.pending_bytes = 0;
        }
        let ended = state.closed && state.items.is_empty() && state.failure.is_none();
        // Opened under the inbox's lock, so that cuts are recorded in order.
        let in_flight = self.ledger.open(taken_before, state.taken);
        drop(state);
        self.space_freed.notify_waiters();
        Taken {
            items,
            ended,
            failure: None,
            in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use std::sync::Arc;

    #[test]
    fn max_batch_rows_cuts_items_in_order_and_bytes_return_to_zero() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let item = |values: Vec<i32>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from(values))],
            )
            .unwrap()
        };
        let inbox = Inbox::new(
            "t".into(),
            StreamLimits {
                max_pending_rows: 8,
                max_pending_bytes: usize::MAX,
                max_batch_rows: Some(4),
            },
        );
        inbox.push_now(item(vec![1, 2, 3])).unwrap();
        inbox.push_now(item(vec![4, 5, 6, 7, 8])).unwrap();
        assert!(
            inbox.push_now(item(vec![9])).is_err(),
            "over max_pending_rows"
        );
        let values = |items: &[RecordBatch]| -> Vec<i32> {
            items
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect()
        };
        let first = inbox.take(false);
        assert_eq!(
            (values(&first.items), first.ended),
            (vec![1, 2, 3, 4], false)
        );
        assert_eq!(inbox.pending_rows(), 4);
        inbox.close();
        let second = inbox.take(false);
        assert_eq!(
            (values(&second.items), second.ended),
            (vec![5, 6, 7, 8], true)
        );
        assert_eq!(inbox.lock().pending_bytes, 0);
    }
}
