//! The trigger clock. Every batch interval it cuts what each subscribed
//! stream received since the last tick into one micro-batch (possibly empty)
//! and hands each running query the micro-batches of the streams it reads.
//!
//! Queries that share a stream (directly or through other queries) form a
//! group that ticks together. The clock never waits for a group: it hands
//! a group's ticks to a delivery task, which waits while a query of the
//! group is behind, and skips the group at later ticks until that delivery
//! is done. So a query that falls behind holds back the streams it reads
//! (whose rows wait in their bounded inboxes), while every other group
//! keeps its pace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::BrookError;
use crate::stream::{LiveStream, StreamCut};
use crate::sync::lock;

/// Ticks a query may have waiting before its group's delivery waits for
/// it: one being executed and one queued. A query slower than the interval
/// delays its own streams (and so their sources) instead of piling up
/// batches in memory.
const TICKS_IN_FLIGHT: usize = 2;

/// One tick as seen by one query.
#[derive(Debug)]
pub(crate) struct Tick {
    /// Wall-clock time of the tick.
    pub time: DateTime<Utc>,
    /// The tick on the monotonic clock, to measure time to result.
    pub instant: Instant,
    /// One entry per stream the query reads, in subscription order.
    pub inputs: Vec<Result<StreamCut, StreamFailure>>,
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
    ticks: mpsc::Sender<Tick>,
    /// Set while a delivery task still has to hand this query a tick; its
    /// group is not cut again until then.
    delivering: Arc<AtomicBool>,
}

/// One group's ticks, to be handed over in order by a delivery task.
struct Delivery {
    ticks: Vec<(mpsc::Sender<Tick>, Tick, Arc<AtomicBool>)>,
    /// Set when the group's streams had all ended at the cut: once the
    /// ticks are handed over, the clock looks again (their last rows may
    /// still be waiting if a query had no room).
    recheck: bool,
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
    /// Wakes the clock when a stream's source ends: a group whose streams
    /// have all ended gets its last batch at once, not at the next tick.
    input_ended: Arc<Notify>,
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
        if let Some(clock) = self.clock.get_mut().ok().and_then(Option::take) {
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
            input_ended: Arc::new(Notify::new()),
        })
    }

    /// Notifying this cuts a batch at once instead of at the next interval.
    /// A separate handle, so that holders do not keep the batcher alive.
    pub fn tick_now_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.tick_now)
    }

    pub fn batch_interval(&self) -> Duration {
        *lock(&self.batch_interval)
    }

    pub fn set_batch_interval(&self, interval: Duration) {
        *lock(&self.batch_interval) = interval;
    }

    /// Subscribes a query to `streams`; it receives every tick from the next
    /// one on, until the returned receiver is dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        query_id: u64,
        streams: Vec<Arc<LiveStream>>,
    ) -> mpsc::Receiver<Tick> {
        let (sender, receiver) = mpsc::channel(TICKS_IN_FLIGHT);
        for stream in &streams {
            stream.inbox.notify_on_close(Arc::clone(&self.input_ended));
        }
        lock(&self.subscriptions).push(Subscription {
            query_id,
            streams,
            ticks: sender,
            delivering: Arc::new(AtomicBool::new(false)),
        });
        let mut clock = lock(&self.clock);
        if clock.is_none() {
            *clock = Some(tokio::spawn(run_clock(
                Arc::downgrade(self),
                Arc::clone(&self.tick_now),
                Arc::clone(&self.input_ended),
            )));
        }
        receiver
    }

    /// Query ids currently subscribed to `stream`.
    pub fn readers_of(&self, stream: &str) -> Vec<u64> {
        lock(&self.subscriptions)
            .iter()
            .filter(|s| !s.ticks.is_closed() && s.streams.iter().any(|st| st.name == stream))
            .map(|s| s.query_id)
            .collect()
    }

    /// Cuts, once each, the streams of every group whose previous delivery
    /// is done (with `only_ended`, only of groups whose every stream's next
    /// cut is its last), and builds each such group's ticks.
    fn cut(&self, time: DateTime<Utc>, instant: Instant, only_ended: bool) -> Vec<Delivery> {
        let mut subscriptions = lock(&self.subscriptions);
        subscriptions.retain(|s| !s.ticks.is_closed());
        let groups = groups(&subscriptions);
        let mut cuts: Vec<(*const LiveStream, Result<StreamCut, StreamFailure>)> = Vec::new();
        let mut deliveries = Vec::new();
        for members in groups {
            if members
                .iter()
                .any(|&i| subscriptions[i].delivering.load(Ordering::Acquire))
            {
                continue;
            }
            if only_ended
                && !members.iter().all(|&i| {
                    subscriptions[i]
                        .streams
                        .iter()
                        .all(|stream| stream.next_cut_is_last())
                })
            {
                continue;
            }
            let recheck = members.iter().all(|&i| {
                subscriptions[i]
                    .streams
                    .iter()
                    .all(|stream| stream.inbox.is_closed())
            });
            let mut delivery = Vec::with_capacity(members.len());
            for i in members {
                let subscription = &subscriptions[i];
                let inputs = subscription
                    .streams
                    .iter()
                    .map(|stream| {
                        let key = Arc::as_ptr(stream);
                        if let Some((_, cut)) = cuts.iter().find(|(k, _)| *k == key) {
                            return cut.clone();
                        }
                        let cut = stream.cut().map_err(|err| StreamFailure {
                            stream: stream.name.clone(),
                            cause: match err {
                                // The inbox's own failure, not wrapped twice.
                                BrookError::StreamFailed { source, .. } => source,
                                other => Arc::new(other),
                            },
                        });
                        cuts.push((key, cut.clone()));
                        cut
                    })
                    .collect();
                subscription.delivering.store(true, Ordering::Release);
                delivery.push((
                    subscription.ticks.clone(),
                    Tick {
                        time,
                        instant,
                        inputs,
                    },
                    Arc::clone(&subscription.delivering),
                ));
            }
            deliveries.push(Delivery {
                ticks: delivery,
                recheck,
            });
        }
        deliveries
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

/// Hands a group's ticks over: at once where the queries have room (the
/// usual case, no task needed), else from a task that waits while a query
/// is behind, which is backpressure on the group's streams, not buffering.
fn deliver(delivery: Delivery, input_ended: &Arc<Notify>) {
    let mut ticks = delivery.ticks.into_iter();
    while let Some((sender, tick, delivering)) = ticks.next() {
        match sender.try_send(tick) {
            // A closed channel is a query that ended.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                delivering.store(false, Ordering::Release);
            }
            Err(mpsc::error::TrySendError::Full(tick)) => {
                let rest: Vec<_> = std::iter::once((sender, tick, delivering))
                    .chain(ticks)
                    .collect();
                let input_ended = Arc::clone(input_ended);
                let recheck = delivery.recheck;
                tokio::spawn(async move {
                    for (sender, tick, delivering) in rest {
                        let _ = sender.send(tick).await;
                        delivering.store(false, Ordering::Release);
                    }
                    if recheck {
                        input_ended.notify_one();
                    }
                });
                return;
            }
        }
    }
    if delivery.recheck {
        input_ended.notify_one();
    }
}

async fn run_clock(batcher: Weak<Batcher>, tick_now: Arc<Notify>, input_ended: Arc<Notify>) {
    let Some(interval) = batcher.upgrade().map(|b| b.batch_interval()) else {
        return;
    };
    let mut next_tick = Instant::now() + interval;
    loop {
        // A tick, or only the groups whose input has ended.
        let only_ended = tokio::select! {
            _ = tokio::time::sleep_until(next_tick) => false,
            _ = tick_now.notified() => false,
            _ = input_ended.notified() => true,
        };
        let Some(batcher) = batcher.upgrade() else {
            return;
        };
        let deliveries = batcher.cut(Utc::now(), Instant::now(), only_ended);
        let interval = batcher.batch_interval();
        drop(batcher);
        for delivery in deliveries {
            deliver(delivery, &input_ended);
        }
        if !only_ended {
            next_tick = (next_tick + interval).max(Instant::now());
        }
    }
}
