//! The trigger clock. Every batch interval it cuts the batch each
//! subscribed stream has been filling ([`crate::stream::feed`]) and opens the next,
//! which it hands to each running query as the streams' [`BatchStart`].
//! Queries read a batch's rows while they arrive; the cut ends their input.
//!
//! Queries that share a stream (directly or through other queries) form a
//! group that is cut together. The clock never waits for a group: a group
//! in which a query is a batch behind (one batch cut and waiting, the next
//! being filled) is not cut at this tick but as soon as that query starts
//! its next batch, so the open batch goes on filling (its rows wait in the
//! streams' bounded inboxes, holding the sources back), while every other
//! group keeps its pace.
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::LiveStream;
use super::feed::{Feed, FeedReader};
use crate::error::BrookError;

/// One batch as one query sees it when it opens.
#[derive(Debug)]
pub(crate) struct BatchStart {
    /// Per stream the query reads, in subscription order, its reader of the
    /// stream's batch.
    pub inputs: Vec<Arc<FeedReader>>,
    /// When the batch opened (its previous batch was cut).
    pub opened: Instant,
    /// Set when a tick came while the query had no room for another
    /// batch; then the clock is to be told when the query
    /// starts this batch (`wake_clock`), and cuts the query's group.
    pub owed: Arc<AtomicBool>,
    pub wake_clock: Arc<Notify>,
}

impl BatchStart {
    /// Called by the query when it starts the batch: tells the clock if a
    /// cut is owed to it.
    pub fn started(&self) {
        // Paired with the clock's fence: either the clock saw the room this
        // start made, or this sees the cut owed.
        fence(Ordering::SeqCst);
        if self.owed.load(Ordering::SeqCst) {
            self.wake_clock.notify_one();
        }
    }
}

/// A stream that failed, as reported to each query that reads it.
#[derive(Debug, Clone)]
pub(crate) struct StreamFailure {
    pub stream: String,
    /// The failure, shared by every query that reads the stream.
    pub cause: Arc<BrookError>,
}

impl From<StreamFailure> for BrookError {
    fn from(failure: StreamFailure) -> Self {
        BrookError::StreamFailed {
            stream: failure.stream,
            source: failure.cause,
        }
    }
}

struct Subscription {
    query_id: u64,
    streams: Vec<Arc<LiveStream>>,
    /// The batches the query has been handed and not yet started: at most
    /// [`BATCHES_HANDED`].
    batches: mpsc::Sender<BatchStart>,
    /// A tick came while the query had no room for another batch: its
    /// group is cut as soon as it has (shared with the query's batches).
    owed_cut: Arc<AtomicBool>,
}

/// Batches a query may have been handed and not yet started: the one being
/// filled and one cut before it. A query slower than the interval delays
/// its own streams (and so their sources) instead of piling up batches in
/// memory.
const BATCHES_HANDED: usize = 2;

impl Subscription {
    /// Whether the query can be handed another batch.
    fn has_room(&self) -> bool {
        self.batches.capacity() > 0
    }
}

/// The clock shared by all queries of a context.
pub(crate) struct Batcher {
    batch_interval: Mutex<Duration>,
    subscriptions: Mutex<Vec<Subscription>>,
    /// The clock task, started by the first subscription.
    clock: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the clock to cut a batch at once, before the interval is up
    /// (the final batch of queries that are finishing).
    tick_now: Arc<Notify>,
    /// Told by a query that starts a batch: a cut owed to its group is made.
    batch_started: Arc<Notify>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("batch_interval", &self.batch_interval())
            .finish()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        if let Some(clock) = self.clock.get_mut().take() {
            clock.abort();
        }
    }
}

impl Batcher {
    pub fn new(batch_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            batch_interval: Mutex::new(batch_interval),
            subscriptions: Mutex::new(Vec::new()),
            clock: Mutex::new(None),
            tick_now: Arc::new(Notify::new()),
            batch_started: Arc::new(Notify::new()),
        })
    }

    /// Notifying this cuts a batch at once instead of at the next interval.
    /// A separate handle, so that holders do not keep the batcher alive.
    pub fn tick_now_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.tick_now)
    }

    pub fn batch_interval(&self) -> Duration {
        *self.batch_interval.lock()
    }

    pub fn set_batch_interval(&self, interval: Duration) {
        *self.batch_interval.lock() = interval;
    }

    /// Subscribes a query to `streams`: it reads the batch each is filling
    /// from now on, and receives every later batch, until the returned
    /// receiver is dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        query_id: u64,
        streams: Vec<Arc<LiveStream>>,
    ) -> mpsc::Receiver<BatchStart> {
        let (sender, receiver) = mpsc::channel(BATCHES_HANDED);
        let mut subscriptions = self.subscriptions.lock();
        for stream in &streams {
            stream.inbox.set_cut_request(Arc::clone(&self.tick_now));
        }
        let owed_cut = Arc::new(AtomicBool::new(false));
        let start = BatchStart {
            inputs: streams.iter().map(|stream| stream.join_feed()).collect(),
            opened: Instant::now(),
            owed: Arc::clone(&owed_cut),
            wake_clock: Arc::clone(&self.batch_started),
        };
        // A fresh channel has room for one.
        let _ = sender.try_send(start);
        subscriptions.push(Subscription {
            query_id,
            streams,
            batches: sender,
            owed_cut,
        });
        drop(subscriptions);
        let mut clock = self.clock.lock();
        if clock.is_none() {
            *clock = Some(tokio::spawn(run_clock(
                Arc::downgrade(self),
                Arc::clone(&self.tick_now),
                Arc::clone(&self.batch_started),
            )));
        }
        receiver
    }

    /// Query ids currently subscribed to `stream`.
    pub fn readers_of(&self, stream: &str) -> Vec<u64> {
        self.subscriptions
            .lock()
            .iter()
            .filter(|s| !s.batches.is_closed() && s.streams.iter().any(|st| st.name == stream))
            .map(|s| s.query_id)
            .collect()
    }

    /// Cuts, once each, the streams of every group whose queries all have
    /// room for another batch, and hands each query the next.
    /// A group that is not ready is owed the cut; `only_owed` cuts only
    /// groups owed one (a query has just started its batch).
    fn cut(&self, time: DateTime<Utc>, instant: Instant, only_owed: bool) {
        let mut subscriptions = self.subscriptions.lock();
        subscriptions.retain(|s| !s.batches.is_closed());
        for members in groups(&subscriptions) {
            let owed = |i: usize| subscriptions[i].owed_cut.load(Ordering::SeqCst);
            if only_owed && !members.iter().any(|&i| owed(i)) {
                continue;
            }
            let all_have_room = || members.iter().all(|&i| subscriptions[i].has_room());
            if !all_have_room() {
                // Cut once every query of the group has room again: each
                // tells the clock when it starts a batch.
                for &i in &members {
                    subscriptions[i].owed_cut.store(true, Ordering::SeqCst);
                }
                fence(Ordering::SeqCst);
                if !all_have_room() {
                    continue;
                }
            }
            for &i in &members {
                subscriptions[i].owed_cut.store(false, Ordering::SeqCst);
            }
            // Each stream of the group is cut once; its next batch has a
            // reader for each time a member reads it, handed out in order.
            let mut feeds: Vec<(*const LiveStream, Arc<Feed>, usize)> = Vec::new();
            let mut next_batch = |stream: &Arc<LiveStream>| {
                let key = Arc::as_ptr(stream);
                let index = match feeds.iter().position(|(k, _, _)| *k == key) {
                    Some(index) => index,
                    None => {
                        let readers = members
                            .iter()
                            .flat_map(|&j| &subscriptions[j].streams)
                            .filter(|s| Arc::ptr_eq(s, stream))
                            .count();
                        feeds.push((key, stream.next_feed(time, instant, readers), 0));
                        feeds.len() - 1
                    }
                };
                let (_, feed, handed) = &mut feeds[index];
                *handed += 1;
                feed.reader(*handed - 1)
            };
            for &i in &members {
                let subscription = &subscriptions[i];
                let inputs = subscription.streams.iter().map(&mut next_batch).collect();
                // Room was checked above, under the same lock; a closed
                // channel is a query that ended.
                let _ = subscription.batches.try_send(BatchStart {
                    inputs,
                    opened: instant,
                    owed: Arc::clone(&subscription.owed_cut),
                    wake_clock: Arc::clone(&self.batch_started),
                });
            }
        }
    }
}

/// The subscriptions grouped by shared streams (the connected components of
/// the query–stream graph), each group as indices in subscription order.
fn groups(subscriptions: &[Subscription]) -> Vec<Vec<usize>> {
    let shares_stream = |a: &Subscription, b: &Subscription| {
        a.streams
            .iter()
            .any(|x| b.streams.iter().any(|y| Arc::ptr_eq(x, y)))
    };
    let mut group_of: Vec<Option<usize>> = vec![None; subscriptions.len()];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for start in 0..subscriptions.len() {
        if group_of[start].is_some() {
            continue;
        }
        let id = groups.len();
        let mut members = vec![start];
        group_of[start] = Some(id);
        let mut next = 0;
        while next < members.len() {
            let current = members[next];
            next += 1;
            for other in 0..subscriptions.len() {
                if group_of[other].is_none()
                    && shares_stream(&subscriptions[current], &subscriptions[other])
                {
                    group_of[other] = Some(id);
                    members.push(other);
                }
            }
        }
        members.sort_unstable();
        groups.push(members);
    }
    groups
}

async fn run_clock(batcher: Weak<Batcher>, tick_now: Arc<Notify>, batch_started: Arc<Notify>) {
    let Some(interval) = batcher.upgrade().map(|b| b.batch_interval()) else {
        return;
    };
    let mut next_tick = Instant::now() + interval;
    loop {
        // A tick, or only the cuts owed to queries that started a batch.
        let only_owed = tokio::select! {
            _ = tokio::time::sleep_until(next_tick) => false,
            _ = tick_now.notified() => false,
            _ = batch_started.notified() => true,
        };
        let Some(batcher) = batcher.upgrade() else {
            return;
        };
        batcher.cut(Utc::now(), Instant::now(), only_owed);
        let interval = batcher.batch_interval();
        drop(batcher);
        if !only_owed {
            next_tick = (next_tick + interval).max(Instant::now());
        }
    }
}
