//! What the dashboard remembers between requests: per query, a bounded
//! history of rates and durations, sampled once a second by a timer so
//! that a query's batches never wait for the dashboard.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::context::StreamContext;
use crate::query::QueryInfo;

/// Points each query's charts keep: ten minutes at one a second.
pub(crate) const HISTORY_POINTS: usize = 600;

/// How often the history is sampled (and the page updated).
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One point of a query's charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Wall-clock time of the sample, in Unix milliseconds.
    pub at_ms: i64,
    /// Rows read per second since the previous sample.
    pub rows_in_per_second: f64,
    /// Rows produced per second since the previous sample.
    pub rows_out_per_second: f64,
    /// Execution time of the query's last batch, in seconds.
    pub batch_seconds: f64,
    /// The last batch's lag, in seconds.
    pub lag_seconds: f64,
}

#[derive(Debug, Default)]
struct QueryHistory {
    samples: VecDeque<Sample>,
    /// When the previous sample was taken, and the counters then.
    previous: Option<(Instant, u64, u64)>,
}

/// The dashboard's shared state: the context it shows and the history.
pub(crate) struct Dashboard {
    pub ctx: StreamContext,
    history: Mutex<BTreeMap<u64, QueryHistory>>,
}

impl Dashboard {
    pub fn new(ctx: StreamContext) -> Self {
        Self {
            ctx,
            history: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one sample of every running query; forgets the history of
    /// queries neither running nor among the recently ended.
    pub fn sample(&self) {
        let running = self.ctx.running_queries();
        let ended: Vec<u64> = self
            .ctx
            .query_registry()
            .ended()
            .iter()
            .map(|q| q.info.id)
            .collect();
        let now = Instant::now();
        let at_ms = Utc::now().timestamp_millis();
        let mut history = self.history.lock();
        history.retain(|id, _| running.iter().any(|q| q.id == *id) || ended.contains(id));
        for query in &running {
            let entry = history.entry(query.id).or_default();
            let sample = next_sample(entry.previous, query, now, at_ms);
            entry.previous = Some((now, query.stats.rows_in, query.stats.rows_out));
            if entry.samples.len() >= HISTORY_POINTS {
                entry.samples.pop_front();
            }
            entry.samples.push_back(sample);
        }
    }

    /// The newest sample of query `id`, if any.
    pub fn latest_sample(&self, id: u64) -> Option<Sample> {
        self.history
            .lock()
            .get(&id)
            .and_then(|h| h.samples.back().copied())
    }

    /// Each query's samples taken after `after_ms` (all of them for a
    /// query not in `after_ms`), by id.
    pub fn samples_since(&self, after_ms: &BTreeMap<u64, i64>) -> BTreeMap<u64, Vec<Sample>> {
        self.history
            .lock()
            .iter()
            .map(|(id, history)| {
                let after = after_ms.get(id).copied().unwrap_or(i64::MIN);
                let samples = history
                    .samples
                    .iter()
                    .filter(|s| s.at_ms > after)
                    .copied()
                    .collect();
                (*id, samples)
            })
            .collect()
    }
}

/// The sample of `query` now, with rates over the time since `previous`
/// (or since the query started, for its first sample).
fn next_sample(
    previous: Option<(Instant, u64, u64)>,
    query: &QueryInfo,
    now: Instant,
    at_ms: i64,
) -> Sample {
    let (seconds, rows_in, rows_out) = match previous {
        Some((then, rows_in, rows_out)) => {
            (now.duration_since(then).as_secs_f64(), rows_in, rows_out)
        }
        None => {
            let since_start = (Utc::now() - query.started).num_milliseconds().max(0);
            (since_start as f64 / 1000.0, 0, 0)
        }
    };
    let rate = |now: u64, then: u64| {
        if seconds > 0.0 {
            now.saturating_sub(then) as f64 / seconds
        } else {
            0.0
        }
    };
    Sample {
        at_ms,
        rows_in_per_second: rate(query.stats.rows_in, rows_in),
        rows_out_per_second: rate(query.stats.rows_out, rows_out),
        batch_seconds: query.stats.last_batch.as_secs_f64(),
        lag_seconds: query.stats.lag.as_secs_f64(),
    }
}

/// Samples `dashboard` every [`SAMPLE_INTERVAL`] until `stopped`'s sender
/// is dropped.
pub(crate) async fn sample_every_second(
    dashboard: Arc<Dashboard>,
    mut stopped: watch::Receiver<()>,
) {
    let mut timer = tokio::time::interval(SAMPLE_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => dashboard.sample(),
            changed = stopped.changed() => if changed.is_err() {
                return;
            },
        }
    }
}
