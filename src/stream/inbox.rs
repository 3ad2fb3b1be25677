//! A stream's inbox: where a source leaves decoded rows until the next tick,
//! bounded by rows and bytes, with the stream's counters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::Notify;

use super::cuts::{CutInFlight, CutLedger};
use crate::error::{BrookError, Result};

/// The bounds between a stream's source and its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Rows waiting to be read before the source waits (a socket stops
    /// reading; a queue refuses pushes); default 1,000,000.
    pub max_pending_rows: usize,
    /// Bytes of Arrow memory waiting to be read before the source waits;
    /// default 32 MiB.
    pub max_pending_bytes: usize,
    /// Rows one batch takes at most; the rest waits for the next tick.
    /// Default: no cap.
    pub max_batch_rows: Option<usize>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_pending_rows: 1_000_000,
            max_pending_bytes: 32 << 20,
            max_batch_rows: None,
        }
    }
}

/// Where a source leaves decoded rows until the next tick. Bounded by rows
/// and bytes: a socket that runs ahead waits in [`Inbox::push`]; a queue's
/// push is refused ([`Inbox::push_now`]).
#[derive(Debug)]
pub(crate) struct Inbox {
    stream: String,
    state: parking_lot::Mutex<InboxState>,
    /// Woken after each take, so a source waiting for space can go on.
    space_freed: Notify,
    /// Woken when an item arrives or the source ends, so that a batch
    /// reading the stream as it arrives takes it at once.
    arrived: Notify,
    limits: StreamLimits,
    pub rows_received: AtomicU64,
    pub rows_dropped: AtomicU64,
    /// The most rows and bytes the inbox has held at once.
    pub peak_pending_rows: AtomicU64,
    pub peak_pending_bytes: AtomicU64,
    /// Set while a source that reconnects (a socket with `reconnect`) has
    /// no connection and is trying to get one: the stream's `reconnecting`
    /// state.
    reconnecting: AtomicBool,
    /// Asks the clock for a cut now (a Kafka rebalance that must wait for
    /// the open batch to be done with); set when a query subscribes.
    cut_now: parking_lot::Mutex<Option<Arc<Notify>>>,
    /// Which cuts every query has finished with: what a source that can
    /// replay (Kafka) may commit.
    ledger: Arc<CutLedger>,
}

/// What a batch took from an inbox in one go.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub items: Vec<RecordBatch>,
    /// Rows in `items`.
    pub rows: usize,
    /// Set when the source has ended and nothing is left to take: whether
    /// it ended or failed (why, once every row before the failure is
    /// taken).
    pub exhausted: Option<Exhausted>,
}

/// How a source that has nothing left ended.
#[derive(Debug, Clone)]
pub(crate) enum Exhausted {
    Closed,
    Failed(Arc<BrookError>),
}

#[derive(Debug, Default)]
struct InboxState {
    items: VecDeque<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    closed: bool,
    failure: Option<Arc<BrookError>>,
    /// Items added so far, items batches took whole, and the items of
    /// batches that are cut: a source that can replay (Kafka) commits what
    /// the items up to `taken` held, once their batches are finished.
    pushed: u64,
    taken: u64,
    cut: u64,
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
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch.get_array_memory_size()
}

impl Inbox {
    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub(crate) fn new(stream: String, limits: StreamLimits) -> Self {
        Self {
            stream,
            state: Default::default(),
            space_freed: Notify::new(),
            arrived: Notify::new(),
            limits: StreamLimits {
                max_pending_rows: limits.max_pending_rows.max(1),
                max_pending_bytes: limits.max_pending_bytes.max(1),
                max_batch_rows: limits.max_batch_rows.filter(|rows| *rows > 0),
            },
            rows_received: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
            peak_pending_rows: AtomicU64::new(0),
            peak_pending_bytes: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            ledger: Arc::default(),
            cut_now: parking_lot::Mutex::new(None),
        }
    }

    /// Where [`Inbox::request_cut`] goes: the clock of the queries that
    /// read the stream.
    pub fn set_cut_request(&self, clock: Arc<Notify>) {
        *self.cut_now.lock() = Some(clock);
    }

    /// Asks the clock to cut the open batch now, rather than at its tick.
    pub fn request_cut(&self) {
        if let Some(clock) = self.cut_now.lock().as_ref() {
            clock.notify_one();
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, InboxState> {
        self.state.lock()
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
        self.arrived.notify_waiters();
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
        self.arrived.notify_waiters();
    }

    /// Records that the source failed; the next cut reports it to queries.
    pub fn fail(&self, error: BrookError) {
        {
            let mut state = self.lock();
            state.failure.get_or_insert_with(|| Arc::new(error));
            state.closed = true;
        }
        self.arrived.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Says whether the source is between connections, trying to get one.
    pub fn set_reconnecting(&self, reconnecting: bool) {
        self.reconnecting.store(reconnecting, Ordering::Relaxed);
    }

    /// Whether the source is between connections, trying to get one.
    pub fn is_reconnecting(&self) -> bool {
        self.reconnecting.load(Ordering::Relaxed)
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

    /// Waits until every row pushed so far is in a batch that has been cut
    /// (or the stream has closed). A directory source with `max_files_per_batch`
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
                if state.cut >= state.pushed || state.closed {
                    return;
                }
            }
            taken.await;
        }
    }

    /// A future that completes when an item arrives or the source ends;
    /// enabled, so that an arrival after this call is not missed.
    pub fn arrival(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut arrival = Box::pin(self.arrived.notified());
        arrival.as_mut().enable();
        arrival
    }

    /// Takes waiting items for the open batch of a stream: at most `room`
    /// rows, and at most one item with `one_item` (a queue that gives each
    /// push a batch of its own). Says when nothing is left of a source that
    /// has ended.
    pub(crate) fn take(&self, one_item: bool, room: usize) -> Taken {
        let mut state = self.lock();
        let taken = self.take_locked(&mut state, one_item, room);
        drop(state);
        if !taken.items.is_empty() {
            self.space_freed.notify_waiters();
        }
        taken
    }

    /// Ends a batch: takes what waits for it (as [`Inbox::take`]) and
    /// records the batch's cut, which took the items from `taken_before` on.
    pub(crate) fn cut(
        &self,
        one_item: bool,
        room: usize,
        taken_before: u64,
    ) -> (Taken, Arc<CutInFlight>) {
        let mut state = self.lock();
        let taken = self.take_locked(&mut state, one_item, room);
        state.cut = state.taken;
        // Opened under the inbox's lock, so that cuts are recorded in order.
        let in_flight = self.ledger.open(taken_before, state.taken);
        drop(state);
        self.space_freed.notify_waiters();
        (taken, in_flight)
    }

    /// Whether every item pushed so far is in a batch that has been cut.
    pub fn all_cut(&self) -> bool {
        let state = self.lock();
        state.cut >= state.pushed
    }

    /// Items batches have taken so far.
    pub(crate) fn items_taken(&self) -> u64 {
        self.lock().taken
    }

    fn take_locked(&self, state: &mut InboxState, one_item: bool, room: usize) -> Taken {
        let mut items = Vec::new();
        let mut rows = 0;
        while rows < room {
            let Some(item) = state.items.pop_front() else {
                break;
            };
            let item = if rows + item.num_rows() > room {
                // Slicing copies nothing; the rest waits for the next batch
                // and still holds the item's buffers.
                let keep = room - rows;
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
        let exhausted = (state.closed && state.items.is_empty()).then(|| match &state.failure {
            Some(failure) => Exhausted::Failed(Arc::clone(failure)),
            None => Exhausted::Closed,
        });
        Taken {
            items,
            rows,
            exhausted,
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
        let first = inbox.take(false, 4);
        assert_eq!(
            (values(&first.items), first.exhausted.is_some()),
            (vec![1, 2, 3, 4], false)
        );
        assert_eq!(inbox.pending_rows(), 4);
        inbox.close();
        let second = inbox.take(false, 4);
        assert_eq!(
            (values(&second.items), second.exhausted.is_some()),
            (vec![5, 6, 7, 8], true)
        );
        assert_eq!(inbox.lock().pending_bytes, 0);
    }
}
