//! The trigger clock. Every batch interval it cuts what each subscribed
//! stream received since the last tick into one micro-batch (possibly empty)
//! and hands each running query the micro-batches of the streams it reads.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::BrookError;
use crate::stream::{LiveStream, StreamCut};

/// Ticks a query may have waiting before the clock waits for it: one being
/// executed and one queued. A query slower than the interval delays the
/// clock (and so the sources) instead of piling up batches in memory.
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
    pub message: String,
}

impl From<StreamFailure> for BrookError {
    fn from(failure: StreamFailure) -> Self {
        BrookError::StreamFailed {
            stream: failure.stream,
            message: failure.message,
        }
    }
}

struct Subscription {
    query_id: u64,
    streams: Vec<Arc<LiveStream>>,
    ticks: mpsc::Sender<Tick>,
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Batcher {
    pub fn new(batch_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            batch_interval: Mutex::new(batch_interval),
            subscriptions: Mutex::new(Vec::new()),
            clock: Mutex::new(None),
            tick_now: Arc::new(Notify::new()),
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
        lock(&self.subscriptions).push(Subscription {
            query_id,
            streams,
            ticks: sender,
        });
        let mut clock = lock(&self.clock);
        if clock.is_none() {
            *clock = Some(tokio::spawn(run_clock(
                Arc::downgrade(self),
                Arc::clone(&self.tick_now),
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

    /// Cuts every subscribed stream once and builds each query's tick.
    fn cut(&self, time: DateTime<Utc>, instant: Instant) -> Vec<(mpsc::Sender<Tick>, Tick)> {
        let mut subscriptions = lock(&self.subscriptions);
        subscriptions.retain(|s| !s.ticks.is_closed());
        let mut cuts: Vec<(*const LiveStream, Result<StreamCut, StreamFailure>)> = Vec::new();
        let mut deliveries = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions.iter() {
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
                        message: err.to_string(),
                    });
                    cuts.push((key, cut.clone()));
                    cut
                })
                .collect();
            deliveries.push((
                subscription.ticks.clone(),
                Tick {
                    time,
                    instant,
                    inputs,
                },
            ));
        }
        deliveries
    }
}

async fn run_clock(batcher: Weak<Batcher>, tick_now: Arc<Notify>) {
    let Some(interval) = batcher.upgrade().map(|b| b.batch_interval()) else {
        return;
    };
    let mut next_tick = Instant::now() + interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_tick) => {}
            _ = tick_now.notified() => {}
        }
        let Some(batcher) = batcher.upgrade() else {
            return;
        };
        let deliveries = batcher.cut(Utc::now(), Instant::now());
        let interval = batcher.batch_interval();
        drop(batcher);
        for (ticks, tick) in deliveries {
            // Waits while the query is behind: backpressure, not buffering.
            let _ = ticks.send(tick).await;
        }
        next_tick = (next_tick + interval).max(Instant::now());
    }
}
