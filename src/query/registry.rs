//! The running queries of a context: what `SHOW QUERIES` and `brook.queries`
//! list, and the handle `STOP QUERY n` uses.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Retained;
use crate::error::Result;

/// What a query has been asked to do about stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Stop now, leaving the open batch.
    Now,
    /// Stop after running the first batch cut at or after this instant.
    AfterBatchCutAt(Instant),
}

/// A query's progress so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Batches run.
    pub batches: u64,
    /// Rows read, over all batches.
    pub rows_in: u64,
    /// Rows produced, over all results.
    pub rows_out: u64,
    /// Execution time of the last batch.
    pub last_batch: Duration,
    /// How late the last batch started: from its tick until the query
    /// began executing it (cutting it, and waiting for the batch before).
    /// It grows while the query is slower than the batch interval.
    pub lag: Duration,
    /// What a window or running query holds now.
    pub retained: Retained,
    /// Late rows so far (event-time windows).
    pub late_rows: u64,
    /// Far-future rows so far (event-time windows).
    pub far_future_rows: u64,
    /// The watermark after the last batch (event-time windows).
    pub watermark: Option<DateTime<Utc>>,
    /// The last batch whose checkpoint was written (with a checkpoint
    /// directory).
    pub checkpoint: Option<u64>,
    /// The size of that checkpoint, in bytes.
    pub checkpoint_bytes: u64,
    /// When that checkpoint was written (`None` for one restored at start
    /// until the next is written).
    pub checkpoint_written: Option<DateTime<Utc>>,
    /// For a sink's query (`CREATE SINK`): what the sink has written.
    pub sink: Option<SinkProgress>,
}

/// What a sink has done with its query's outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Batches whose rows the sink wrote (and committed, where it has
    /// transactions).
    pub batches_written: u64,
    /// Rows in those batches.
    pub rows_written: u64,
    /// The last batch written, and when its write completed.
    pub last_written: Option<(u64, DateTime<Utc>)>,
    /// Batches a replay after a restart found already written (and did not
    /// write again).
    pub batches_skipped: u64,
    /// Batches that failed: the sink's write, or the query's batch.
    pub batches_failed: u64,
}

/// A running query as `SHOW QUERIES` lists it.
#[derive(Debug, Clone)]
pub struct QueryInfo {
    /// The query's number within its context.
    pub id: u64,
    /// Where its results go: `console`, or `sink NAME`.
    pub output: String,
    /// Its SQL text.
    pub sql: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Its progress.
    pub stats: QueryStats,
}

/// One running query's shared record: its stats and how to stop it.
pub(crate) struct QueryEntry {
    pub id: u64,
    pub sql: String,
    pub started: DateTime<Utc>,
    pub output: Mutex<String>,
    pub stats: Mutex<QueryStats>,
    pub stop: watch::Sender<Stop>,
    /// Asks the clock for a batch at once.
    pub tick_now: Arc<Notify>,
    /// The first rows of the latest result, kept only while the registry's
    /// `latest_rows` asks for them (a dashboard is served).
    pub latest: Mutex<Option<LatestResult>>,
}

/// The first rows of a query's latest result, as the dashboard shows them.
#[derive(Debug, Clone)]
pub(crate) struct LatestResult {
    /// The batch that produced it.
    pub batch_number: u64,
    /// The result's schema.
    pub schema: SchemaRef,
    /// Its first rows: zero-copy slices of the result's batches.
    pub rows: Vec<RecordBatch>,
    /// Rows in the whole result.
    pub total_rows: usize,
}

impl LatestResult {
    /// The first `limit` rows of `batches`. Slicing shares the arrays, so
    /// this costs a few reference counts per column, whatever the size.
    pub fn first_rows(
        batch_number: u64,
        schema: SchemaRef,
        batches: &[RecordBatch],
        limit: usize,
    ) -> Self {
        let mut rows = Vec::new();
        let mut kept = 0;
        for batch in batches {
            if kept >= limit {
                break;
            }
            let take = batch.num_rows().min(limit - kept);
            if take > 0 {
                rows.push(batch.slice(0, take));
                kept += take;
            }
        }
        Self {
            batch_number,
            schema,
            rows,
            total_rows: batches.iter().map(RecordBatch::num_rows).sum(),
        }
    }

    /// Memory the kept rows hold alive: the whole buffers they slice.
    pub fn memory_bytes(&self) -> usize {
        self.rows
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }
}

/// How a query ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryEnd {
    /// Every stream it reads ended and it ran what they delivered.
    Finished,
    /// Stopped by `STOP QUERY`, a graceful finish, or its output dropped.
    Stopped,
    /// A stream it reads failed, or a batch failed with
    /// `on_query_error = 'stop'`; the error as reported.
    Failed(String),
}

/// A query that has ended, as the dashboard still shows it for a while.
#[derive(Debug, Clone)]
pub(crate) struct EndedQuery {
    /// Its last state while it ran.
    pub info: QueryInfo,
    pub end: QueryEnd,
    pub ended_at: DateTime<Utc>,
    pub latest: Option<LatestResult>,
}

/// Ended queries the registry remembers, the most recent.
pub(crate) const ENDED_QUERIES: usize = 20;

/// Memory an ended query's latest result may keep alive. Its rows are
/// slices, which hold the whole result's buffers: an ended query kept for
/// the dashboard must not pin a large last result for good.
const ENDED_LATEST_BYTES: usize = 1 << 20;

impl QueryEntry {
    /// Stop now, leaving the open batch.
    pub fn stop(&self) {
        let _ = self.stop.send(Stop::Now);
    }

    /// Cut a batch now, run it, then end.
    pub fn finish(&self) {
        let _ = self.stop.send(Stop::AfterBatchCutAt(Instant::now()));
        self.tick_now.notify_one();
    }

    pub fn info(&self) -> QueryInfo {
        QueryInfo {
            id: self.id,
            output: self.output.lock().clone(),
            sql: self.sql.clone(),
            started: self.started,
            stats: self.stats.lock().clone(),
        }
    }
}

/// The running queries of a context, by id, and the last few that ended.
#[derive(Clone, Default)]
pub(crate) struct QueryRegistry {
    entries: Arc<Mutex<BTreeMap<u64, Arc<QueryEntry>>>>,
    /// The most recent [`ENDED_QUERIES`] ended queries, oldest first.
    ended: Arc<Mutex<VecDeque<EndedQuery>>>,
    /// Rows of each query's latest result to keep (0: none). A served
    /// dashboard sets it; without one the drivers keep nothing.
    latest_rows: Arc<AtomicUsize>,
}

impl QueryRegistry {
    pub fn insert(&self, entry: Arc<QueryEntry>) {
        self.entries.lock().insert(entry.id, entry);
    }

    /// Removes running query `id` and remembers how it ended; a second
    /// call for the same query does nothing (the first says how it ended).
    pub fn retire(&self, id: u64, end: QueryEnd) {
        let Some(entry) = self.entries.lock().remove(&id) else {
            return;
        };
        let ended = EndedQuery {
            info: entry.info(),
            end,
            ended_at: Utc::now(),
            latest: entry
                .latest
                .lock()
                .take()
                .filter(|latest| latest.memory_bytes() <= ENDED_LATEST_BYTES),
        };
        let mut all = self.ended.lock();
        if all.len() >= ENDED_QUERIES {
            all.pop_front();
        }
        all.push_back(ended);
    }

    /// The queries that ended, oldest first.
    pub fn ended(&self) -> Vec<EndedQuery> {
        self.ended.lock().iter().cloned().collect()
    }

    /// Rows of each latest result to keep (0: none).
    pub fn latest_rows(&self) -> usize {
        self.latest_rows.load(Ordering::Relaxed)
    }

    /// Keeps the first `rows` rows of each query's latest result from the
    /// next batch on.
    pub fn keep_latest_rows(&self, rows: usize) {
        self.latest_rows.store(rows, Ordering::Relaxed);
    }

    pub fn get(&self, id: u64) -> Option<Arc<QueryEntry>> {
        self.entries.lock().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<QueryEntry>> {
        self.entries.lock().values().cloned().collect()
    }
}

/// The columns of `brook.queries` (and `SHOW QUERIES`).
pub(crate) fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("output", DataType::Utf8, false),
        Field::new("batches", DataType::UInt64, false),
        Field::new("rows_in", DataType::UInt64, false),
        Field::new("rows_out", DataType::UInt64, false),
        Field::new("last_batch_ms", DataType::Float64, false),
        Field::new("lag_ms", DataType::Float64, false),
        Field::new("retained_rows", DataType::UInt64, false),
        Field::new("retained_bytes", DataType::UInt64, false),
        Field::new("retained_by_stream", DataType::Utf8, true),
        Field::new("late_rows", DataType::UInt64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("watermark_behind_ms", DataType::Float64, true),
        Field::new("checkpoint", DataType::UInt64, true),
        Field::new("sql", DataType::Utf8, false),
    ]))
}

/// The rows of `brook.queries`, one per running query.
pub(crate) fn queries_rows(queries: &[QueryInfo]) -> Result<RecordBatch> {
    let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let count = |values: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(values)) };
    // Milliseconds to a tenth, as users read them.
    let millis = |values: Vec<Duration>| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            values
                .into_iter()
                .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
        ))
    };
    Ok(RecordBatch::try_new(
        queries_schema(),
        vec![
            count(queries.iter().map(|q| q.id).collect()),
            text(queries.iter().map(|q| q.output.clone()).collect()),
            count(queries.iter().map(|q| q.stats.batches).collect()),
            count(queries.iter().map(|q| q.stats.rows_in).collect()),
            count(queries.iter().map(|q| q.stats.rows_out).collect()),
            millis(queries.iter().map(|q| q.stats.last_batch).collect()),
            millis(queries.iter().map(|q| q.stats.lag).collect()),
            count(
                queries
                    .iter()
                    .map(|q| q.stats.retained.rows as u64)
                    .collect(),
            ),
            count(
                queries
                    .iter()
                    .map(|q| q.stats.retained.bytes as u64)
                    .collect(),
            ),
            Arc::new(StringArray::from(
                queries
                    .iter()
                    .map(|q| q.stats.retained.by_stream_text())
                    .collect::<Vec<_>>(),
            )),
            count(queries.iter().map(|q| q.stats.late_rows).collect()),
            Arc::new(
                TimestampMillisecondArray::from(
                    queries
                        .iter()
                        .map(|q| q.stats.watermark.map(|w| w.timestamp_millis()))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("+00:00"),
            ),
            // How far the watermark is behind the wall clock, now.
            Arc::new(Float64Array::from(
                queries
                    .iter()
                    .map(|q| {
                        q.stats
                            .watermark
                            .filter(|w| *w != DateTime::<Utc>::MAX_UTC)
                            .map(|w| (Utc::now() - w).num_milliseconds() as f64)
                    })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(UInt64Array::from(
                queries
                    .iter()
                    .map(|q| q.stats.checkpoint)
                    .collect::<Vec<_>>(),
            )),
            text(queries.iter().map(|q| q.sql.clone()).collect()),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_slice_across_batches_and_count_the_whole_result() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::UInt64, false)]));
        let batch = |values: Vec<u64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(UInt64Array::from(values)) as ArrayRef],
            )
            .unwrap()
        };
        let batches = [
            batch(vec![1, 2]),
            batch(vec![]),
            batch(vec![3, 4, 5]),
            batch(vec![6]),
        ];
        let latest = LatestResult::first_rows(7, Arc::clone(&schema), &batches, 4);
        let kept: Vec<usize> = latest.rows.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(kept, vec![2, 2]);
        assert_eq!(latest.total_rows, 6);
        assert_eq!(latest.batch_number, 7);
        assert!(
            LatestResult::first_rows(1, schema, &batches, 0)
                .rows
                .is_empty()
        );
    }
}
