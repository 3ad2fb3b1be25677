//! A micro-batch's input from one stream, read while it arrives.
//!
//! A stream has one open [`Feed`] at a time: the batch the trigger clock
//! cuts next. Each query reading the stream holds a [`FeedReader`] of it,
//! which takes the stream's pieces from the inbox as the source delivers
//! them and hands them to the query's plan: the batch is executed while it
//! arrives. At the tick the clock cuts the feed ([`Feed::cut`]): what still
//! waits in the inbox goes to it, and each reader's input ends once it has
//! read that. A feed also ends by itself once its stream's source has ended
//! and everything is read, so the last batch does not wait for a tick.
//!
//! The rows of a batch are those that arrived before its cut, as when the
//! clock took them all at the tick; only when they are processed changed.
//!
//! Several queries of a stream share its feed. A piece stays in the feed
//! until every reader has read it, and a reader ahead of the others takes
//! no more from the inbox while the feed holds the stream's bounds
//! (`max_pending_rows`, `max_pending_bytes`) for them: a slow query holds
//! its source back through the bounded inbox, not through a growing buffer.
//! A consumer that keeps what it reads until the batch ends (a plan that
//! returns or sorts its rows, a window that recomputes) reads at most those
//! bounds before the cut ([`FeedReader::hold_rows`]).

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cuts::CutInFlight;
use super::inbox::{Exhausted, Inbox, batch_bytes};
use crate::error::BrookError;

/// Rows a reader hands on in one record batch at least, where the source
/// delivered smaller pieces and more are already there (DataFusion's
/// default batch size). Larger pieces pass through without copying.
const MIN_CHUNK_ROWS: usize = 8192;

/// Rows and bytes.
#[derive(Debug, Clone, Copy)]
struct Bound {
    rows: usize,
    bytes: usize,
}

/// One stream's input to the batch being filled.
#[derive(Debug)]
pub(crate) struct Feed {
    stream: String,
    schema: SchemaRef,
    inbox: Arc<Inbox>,
    /// A queue that gives each push a batch of its own.
    one_item: bool,
    /// Rows the batch may take (`max_batch_rows`).
    max_rows: usize,
    /// Rows and bytes the feed holds for slower readers before a reader
    /// ahead waits (the stream's `max_pending_rows` and
    /// `max_pending_bytes`); a reader that holds what it reads (see
    /// [`FeedReader::hold_rows`]) reads at most as much before the cut.
    bound: Bound,
    /// Inbox items taken before this batch.
    taken_before: u64,
    state: Mutex<FeedState>,
    /// Woken when a piece comes in, a reader moves on, or the feed ends.
    changed: Notify,
}

#[derive(Debug)]
struct FeedState {
    /// Pieces taken from the inbox that some reader has not read yet.
    pieces: VecDeque<RecordBatch>,
    /// The sequence number of `pieces[0]`.
    first: u64,
    /// Rows and bytes in `pieces`.
    held_rows: usize,
    held_bytes: usize,
    /// Per reader, the sequence number of the next piece it reads; `None`
    /// once the reader is gone.
    cursors: Vec<Option<u64>>,
    /// Rows and items the batch has taken so far.
    rows: usize,
    items: usize,
    end: Option<FeedEnd>,
    /// The first batch of a stream keeps its pieces until it is cut, so
    /// that every query started before its tick reads all of it (a script's
    /// queries over rows inserted before them), as far as the stream's
    /// bound: past it, queries that join read from then on.
    keep_for_joiners: bool,
}

impl FeedState {
    fn next_seq(&self) -> u64 {
        self.first + self.pieces.len() as u64
    }

    /// Whether the pieces held reach `bound`.
    fn holds_enough(&self, bound: Bound) -> bool {
        self.held_rows >= bound.rows || self.held_bytes >= bound.bytes
    }

    /// Drops the pieces every reader has read (unless kept for queries
    /// that join, within `bound`); says whether any went.
    fn forget_read(&mut self, bound: Bound) -> bool {
        if self.keep_for_joiners {
            if !self.holds_enough(bound) {
                return false;
            }
            self.keep_for_joiners = false;
        }
        let oldest = self.cursors.iter().flatten().min().copied();
        let mut forgot = false;
        while !self.pieces.is_empty() && oldest.is_none_or(|oldest| self.first < oldest) {
            if let Some(piece) = self.pieces.pop_front() {
                self.held_rows -= piece.num_rows();
                self.held_bytes = self.held_bytes.saturating_sub(batch_bytes(&piece));
            }
            self.first += 1;
            forgot = true;
        }
        forgot
    }

    fn add(&mut self, items: Vec<RecordBatch>, rows: usize) {
        self.rows += rows;
        self.items += items.len();
        self.held_rows += rows;
        self.held_bytes += items.iter().map(batch_bytes).sum::<usize>();
        self.pieces
            .extend(items.into_iter().filter(|item| item.num_rows() > 0));
    }
}

/// How a feed's batch ended.
#[derive(Debug, Clone)]
pub(crate) struct FeedEnd {
    /// When it was cut (the tick), or when the stream's end was read.
    pub time: DateTime<Utc>,
    pub instant: Instant,
    /// Rows the batch held from this stream.
    pub rows: usize,
    /// The stream has ended: this batch holds its last rows, or none.
    pub ended: bool,
    /// The stream failed before this batch took any row.
    pub failure: Option<Arc<BrookError>>,
    /// Shared by every query the batch went to (see [`crate::stream::cuts`]).
    pub in_flight: Arc<CutInFlight>,
}

impl Feed {
    /// The next batch of the stream whose rows of `schema` wait in
    /// `inbox`, with `readers` readers (more can join); `one_item` when a
    /// batch takes one inbox item; `first` for a stream's first batch (see
    /// `keep_for_joiners`).
    pub fn open(
        inbox: &Arc<Inbox>,
        schema: &SchemaRef,
        one_item: bool,
        readers: usize,
        first: bool,
    ) -> Arc<Feed> {
        let inbox = Arc::clone(inbox);
        let limits = inbox.limits();
        Arc::new(Feed {
            stream: inbox.stream().to_string(),
            schema: Arc::clone(schema),
            one_item,
            max_rows: limits.max_batch_rows.unwrap_or(usize::MAX),
            bound: Bound {
                rows: limits.max_pending_rows,
                bytes: limits.max_pending_bytes,
            },
            taken_before: inbox.items_taken(),
            inbox,
            state: Mutex::new(FeedState {
                pieces: VecDeque::new(),
                first: 0,
                held_rows: 0,
                held_bytes: 0,
                cursors: vec![Some(0); readers],
                rows: 0,
                items: 0,
                end: None,
                keep_for_joiners: first,
            }),
            changed: Notify::new(),
        })
    }

    /// Reader `index` of the feed (one of those it was opened with).
    pub fn reader(self: &Arc<Self>, index: usize) -> Arc<FeedReader> {
        Arc::new(FeedReader {
            feed: Arc::clone(self),
            index,
            waited_nanos: AtomicU64::new(0),
            created: std::time::Instant::now(),
            gave_back_nanos: AtomicU64::new(0),
            holds: AtomicBool::new(false),
            read_rows: AtomicUsize::new(0),
            read_bytes: AtomicUsize::new(0),
        })
    }

    /// A new reader, which reads the pieces taken from now on (in a
    /// stream's first batch, from its start).
    pub fn join(self: &Arc<Self>) -> Arc<FeedReader> {
        let mut state = self.state.lock();
        let next = if state.keep_for_joiners {
            state.first
        } else {
            state.next_seq()
        };
        state.cursors.push(Some(next));
        let index = state.cursors.len() - 1;
        drop(state);
        self.reader(index)
    }

    /// Whether a reader is still reading the feed.
    pub fn has_readers(&self) -> bool {
        self.state.lock().cursors.iter().any(Option::is_some)
    }

    /// The tick: the batch takes what waits in the inbox and ends.
    pub fn cut(&self, time: DateTime<Utc>, instant: Instant) {
        let mut state = self.state.lock();
        if state.end.is_none() {
            self.end(&mut state, time, instant);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Rows the batch may still take.
    fn room(&self, state: &FeedState) -> usize {
        if self.one_item && state.items > 0 {
            0
        } else {
            self.max_rows.saturating_sub(state.rows)
        }
    }

    /// Ends the batch before its tick (its source has ended), then wakes
    /// the readers.
    fn end_now(&self, mut state: MutexGuard<'_, FeedState>) {
        self.end(&mut state, Utc::now(), Instant::now());
        drop(state);
        self.changed.notify_waiters();
    }

    fn end(&self, state: &mut FeedState, time: DateTime<Utc>, instant: Instant) {
        let (taken, in_flight) = self
            .inbox
            .cut(self.one_item, self.room(state), self.taken_before);
        state.add(taken.items, taken.rows);
        let (ended, failure) = match taken.exhausted {
            Some(Exhausted::Closed) => (true, None),
            // Rows before the failure are a batch of their own; the next
            // batch reports the failure.
            Some(Exhausted::Failed(failure)) if state.rows == 0 => (true, Some(failure)),
            _ => (false, None),
        };
        state.end = Some(FeedEnd {
            time,
            instant,
            rows: state.rows,
            ended,
            failure,
            in_flight,
        });
        state.keep_for_joiners = false;
        state.forget_read(self.bound);
    }
}

/// One query's reading of a feed.
#[derive(Debug)]
pub(crate) struct FeedReader {
    feed: Arc<Feed>,
    index: usize,
    /// Time spent waiting for pieces, in nanoseconds.
    waited_nanos: AtomicU64,
    created: std::time::Instant,
    /// When the reader last gave its thread back (waited for a piece or
    /// yielded), in nanoseconds since `created`.
    gave_back_nanos: AtomicU64,
    /// Set when the consumer keeps what it reads until the batch ends.
    holds: AtomicBool,
    /// Rows and bytes read so far.
    read_rows: AtomicUsize,
    read_bytes: AtomicUsize,
}

/// How long a plan may run on pieces that are all there before its reader
/// gives the thread back.
const YIELD_AFTER: Duration = Duration::from_millis(1);

/// What one look at a feed's state found.
enum Glance {
    /// What [`FeedReader::look`] returns.
    Found(Next),
    /// The feed changed (pieces came in, the batch ended): look again.
    Changed,
    /// Nothing yet: wait for the feed to change or the source to deliver.
    Nothing,
}

/// What a reader found when it looked for its next piece.
enum Next {
    Piece(RecordBatch),
    /// A piece is there (when only looking).
    Ready,
    End,
}

impl FeedReader {
    /// The name of the stream.
    pub fn stream_name(&self) -> &str {
        &self.feed.stream
    }

    /// The next piece of the batch (small pieces joined up to
    /// [`MIN_CHUNK_ROWS`] rows), or `None` once the batch has ended and
    /// everything is read.
    pub async fn next(&self) -> Option<datafusion::error::Result<RecordBatch>> {
        match self.look(Look::Take).await {
            Next::Piece(piece) => {
                // A plan that always finds its next piece there would never
                // give its thread back: the clock or another query woken on
                // it would wait as long as the batch runs.
                let now = self.created.elapsed().as_nanos() as u64;
                let gave_back = self.gave_back_nanos.load(Ordering::Relaxed);
                if now.saturating_sub(gave_back) >= YIELD_AFTER.as_nanos() as u64 {
                    tokio::task::yield_now().await;
                    self.gave_back_nanos.store(now, Ordering::Relaxed);
                }
                Some(Ok(piece))
            }
            Next::Ready | Next::End => None,
        }
    }

    /// The next piece if one is there now, without waiting for the source
    /// or the other readers: `None` when the reader would wait (or the
    /// batch has ended; [`FeedReader::ready`] tells which).
    pub fn try_next(&self) -> Option<RecordBatch> {
        loop {
            match self.glance(Look::Take) {
                Glance::Found(Next::Piece(piece)) => return Some(piece),
                Glance::Found(_) | Glance::Nothing => return None,
                Glance::Changed => continue,
            }
        }
    }

    /// The consumer keeps what it reads until the batch ends (a window
    /// that recomputes, a plan that sorts or returns its rows): it reads at
    /// most the stream's bounds before the cut, and the rest waits in the
    /// inbox, holding the source back, as when a batch waited whole for its
    /// tick.
    pub fn hold_rows(&self) {
        self.holds.store(true, Ordering::Relaxed);
    }

    /// Whether a reader that holds what it reads has read its bound.
    fn read_enough(&self, bound: Bound) -> bool {
        self.holds.load(Ordering::Relaxed)
            && (self.read_rows.load(Ordering::Relaxed) >= bound.rows
                || self.read_bytes.load(Ordering::Relaxed) >= bound.bytes)
    }

    /// Waits until a piece is there to read or the batch has ended; says
    /// whether a piece is.
    pub async fn ready(&self) -> bool {
        matches!(self.look(Look::Peek).await, Next::Ready)
    }

    /// Skips the rest of the batch (a plan that did not read it all, such
    /// as one with a `LIMIT`) and says how it ended.
    pub async fn end(&self) -> FeedEnd {
        loop {
            let changed = self.feed.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Next::End = self.look(Look::Skip).await {
                if let Some(end) = self.feed.state.lock().end.clone() {
                    return end;
                }
                changed.await;
            }
        }
    }

    /// Time this reader spent waiting for the source.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    /// The batch as a record batch stream, for a plan's scan.
    pub fn stream(self: &Arc<Self>) -> SendableRecordBatchStream {
        let reader = Arc::clone(self);
        let schema = Arc::clone(&reader.feed.schema);
        let pieces = futures::stream::unfold(reader, |reader| async move {
            let piece = reader.next().await?;
            Some((piece, reader))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, pieces))
    }

    /// Looks for the reader's next piece as `look` asks, waiting for the
    /// source or the other readers while there is none and the batch goes on.
    async fn look(&self, look: Look) -> Next {
        let feed = &*self.feed;
        // Made only when the reader has to wait, then the state is looked
        // at once more: a piece that came in between is not missed, and a
        // reader that finds its piece there allocates nothing.
        let mut wake_ups = None;
        loop {
            match self.glance(look) {
                Glance::Found(next) => return next,
                Glance::Changed => continue,
                Glance::Nothing => {}
            }
            let Some((changed, arrival)) = wake_ups.take() else {
                let mut changed = Box::pin(feed.changed.notified());
                changed.as_mut().enable();
                wake_ups = Some((changed, feed.inbox.arrival()));
                continue;
            };
            let waiting = std::time::Instant::now();
            tokio::select! {
                _ = changed => {}
                _ = arrival => {}
            }
            self.waited_nanos
                .fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.gave_back_nanos
                .store(self.created.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// One look at the feed under its lock: reads a piece if there is one
    /// for this reader, else takes from the inbox or ends the batch when it
    /// may.
    fn glance(&self, look: Look) -> Glance {
        let feed = &*self.feed;
        let mut state = feed.state.lock();
        let Some(cursor) = state.cursors.get(self.index).copied().flatten() else {
            return Glance::Found(Next::End);
        };
        // A reader that holds what it reads waits for the cut once
        // it has read its bound.
        let held_enough =
            matches!(look, Look::Take) && state.end.is_none() && self.read_enough(feed.bound);
        if cursor < state.next_seq() && !held_enough {
            return Glance::Found(self.read(state, look, cursor));
        }
        if state.end.is_some() {
            return Glance::Found(Next::End);
        }
        // This reader is ahead of the others: it takes from the
        // inbox, unless the feed already holds enough for them.
        if held_enough {
            // Waits for the cut, or for the source's end: then the
            // batch takes the rest and ends.
            if feed.inbox.is_closed() {
                feed.end_now(state);
                return Glance::Changed;
            }
        } else if state.holds_enough(feed.bound) {
            state.forget_read(feed.bound);
        }
        if !held_enough && (!state.holds_enough(feed.bound) || state.pieces.is_empty()) {
            return self.take_from_inbox(state);
        }
        Glance::Nothing
    }

    /// Reads at `cursor`, where a piece is there, as `look` asks; drops the
    /// pieces every reader has read, waking the others if any went.
    fn read(&self, mut state: MutexGuard<'_, FeedState>, look: Look, cursor: u64) -> Next {
        let feed = &*self.feed;
        let next = match look {
            Look::Peek => return Next::Ready,
            Look::Skip => {
                state.cursors[self.index] = Some(state.next_seq());
                Next::Ready
            }
            Look::Take => {
                let piece = self.take(&mut state, cursor);
                self.read_rows
                    .fetch_add(piece.num_rows(), Ordering::Relaxed);
                self.read_bytes
                    .fetch_add(batch_bytes(&piece), Ordering::Relaxed);
                Next::Piece(piece)
            }
        };
        if state.forget_read(feed.bound) {
            drop(state);
            feed.changed.notify_waiters();
        }
        next
    }

    /// Takes what the inbox holds into the feed, or ends the batch once the
    /// source has ended and everything is taken.
    fn take_from_inbox(&self, mut state: MutexGuard<'_, FeedState>) -> Glance {
        let feed = &*self.feed;
        let taken = feed.inbox.take(feed.one_item, feed.room(&state));
        if !taken.items.is_empty() {
            state.add(taken.items, taken.rows);
            if state.cursors.iter().flatten().count() > 1 {
                drop(state);
                feed.changed.notify_waiters();
            }
            return Glance::Changed;
        }
        // A queue's item waits for its tick, as every item does.
        if taken.exhausted.is_some() && !(feed.one_item && state.items > 0) {
            // The source has ended and everything is taken: the
            // batch ends now, not at the next tick.
            feed.end_now(state);
            return Glance::Changed;
        }
        Glance::Nothing
    }

    /// The pieces from `cursor` on, up to [`MIN_CHUNK_ROWS`] rows, as one
    /// record batch; moves the cursor past them.
    fn take(&self, state: &mut FeedState, cursor: u64) -> RecordBatch {
        let start = (cursor - state.first) as usize;
        let mut end = start;
        let mut rows = 0;
        while end < state.pieces.len() && (end == start || rows < MIN_CHUNK_ROWS) {
            let piece_rows = state.pieces[end].num_rows();
            if end > start
                && (piece_rows >= MIN_CHUNK_ROWS || rows + piece_rows > 4 * MIN_CHUNK_ROWS)
            {
                break;
            }
            rows += piece_rows;
            end += 1;
        }
        state.cursors[self.index] = Some(state.first + end as u64);
        if end == start + 1 {
            return state.pieces[start].clone();
        }
        let pieces: Vec<RecordBatch> = state.pieces.range(start..end).cloned().collect();
        match concat_batches(&self.feed.schema, &pieces) {
            Ok(joined) => joined,
            // Pieces of one stream share its schema; should joining fail
            // anyway, the first goes alone and the rest follow.
            Err(_) => {
                state.cursors[self.index] = Some(cursor + 1);
                pieces[0].clone()
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Look {
    Take,
    Peek,
    Skip,
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        let mut state = self.feed.state.lock();
        if let Some(cursor) = state.cursors.get_mut(self.index) {
            *cursor = None;
        }
        state.forget_read(self.feed.bound);
        drop(state);
        self.feed.changed.notify_waiters();
    }
}
