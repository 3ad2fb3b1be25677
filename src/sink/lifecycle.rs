//! The background queries of `CREATE SINK`: each runs in a task that writes
//! every batch to its sink, until its streams end, `DROP SINK` or
//! `STOP QUERY`. A write that fails is reported; after
//! [`MAX_CONSECUTIVE_FAILURES`] failed batches in a row the sink stops, and
//! every failure is remembered so that `brook run` exits non-zero. What the
//! sink wrote is kept in its query's stats
//! ([`SinkProgress`](crate::query::SinkProgress)) for the dashboard.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{BatchSink, SinkWrite};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::query::{BatchOutput, ContinuousQuery};

/// Failed batches in a row after which a sink stops its query.
pub const MAX_CONSECUTIVE_FAILURES: usize = 3;

/// Records in `query`'s stats what its sink did with `output`: `written`,
/// or `None` when the write failed.
fn record(query: &ContinuousQuery, output: &BatchOutput, written: Option<&SinkWrite>) {
    query.record_sink(|progress| match written {
        Some(SinkWrite::Written) => {
            progress.batches_written += 1;
            progress.rows_written += output.rows_out() as u64;
            progress.last_written = Some((output.batch_number, Utc::now()));
        }
        Some(SinkWrite::Skipped) => progress.batches_skipped += 1,
        Some(SinkWrite::Empty) => {}
        None => progress.batches_failed += 1,
    });
}

/// Records in `query`'s stats a batch the query itself failed.
fn record_failure(query: &ContinuousQuery) {
    query.record_sink(|progress| progress.batches_failed += 1);
}

/// Writes each output of `query` to `sink` until the query ends or the sink
/// stops (it gave up, or [`MAX_CONSECUTIVE_FAILURES`] batches in a row
/// failed), reporting each failure to `warn`; the first failure, if any.
async fn write_all(
    query: &mut ContinuousQuery,
    sink: &mut dyn BatchSink,
    sink_name: &str,
    warn: &WarningHandler,
) -> Option<BrookError> {
    let mut failed_in_a_row = 0;
    let mut first_failure = None;
    while let Some(output) = query.next().await {
        let Err(err) = write_one(query, sink, output).await else {
            failed_in_a_row = 0;
            continue;
        };
        let err = BrookError::SinkFailed {
            sink: sink_name.to_string(),
            source: Box::new(err),
        };
        let warning = Warning::Sink(err);
        warn(&warning);
        failed_in_a_row += 1;
        let gave_up = sink.gave_up();
        let stopping = gave_up || failed_in_a_row >= MAX_CONSECUTIVE_FAILURES;
        first_failure = first_failure.or(warning.into_cause());
        let sink_context = || format!("sink '{sink_name}'");
        if gave_up {
            warn(&Warning::Sink(BrookError::external(
                sink_context(),
                "stopped",
            )));
            break;
        }
        if stopping {
            warn(&Warning::Sink(BrookError::external(
                sink_context(),
                format!("stopped after {MAX_CONSECUTIVE_FAILURES} failed batches in a row"),
            )));
            break;
        }
    }
    first_failure
}

/// Writes one output of `query` to `sink` and records what became of it in
/// the query's stats; a batch the query failed is an error too.
async fn write_one(
    query: &mut ContinuousQuery,
    sink: &mut dyn BatchSink,
    output: Result<BatchOutput>,
) -> Result<SinkWrite> {
    match output {
        Ok(output) => {
            let written = sink.write(&output).await;
            if written.is_err() {
                // Not written: no checkpoint may claim it was, and its
                // rows' offsets must not be committed.
                query.abandon_last_output();
            }
            record(query, &output, written.as_ref().ok());
            written
        }
        Err(err) => {
            record_failure(query);
            Err(err)
        }
    }
}

/// The running sinks of a context, by name.
#[derive(Clone, Default)]
pub(crate) struct SinkRegistry {
    running: Arc<Mutex<BTreeMap<String, SinkTask>>>,
    /// The first failure of each sink that failed, in order.
    failures: Arc<Mutex<Vec<BrookError>>>,
}

/// A sink's running query.
struct SinkTask {
    query_id: u64,
    task: JoinHandle<()>,
}

impl SinkRegistry {
    pub fn contains(&self, name: &str) -> bool {
        self.running.lock().contains_key(name)
    }

    /// Names of the sinks whose queries run.
    pub fn names(&self) -> Vec<String> {
        self.running.lock().keys().cloned().collect()
    }

    /// The sink whose query is `query_id`.
    pub fn of_query(&self, query_id: u64) -> Option<String> {
        self.running
            .lock()
            .iter()
            .find(|(_, sink)| sink.query_id == query_id)
            .map(|(name, _)| name.clone())
    }

    /// Runs `query` in the background, writing each batch to `sink`;
    /// `output` is what `SHOW QUERIES` says it writes to.
    pub fn start(
        &self,
        name: &str,
        output: String,
        query: ContinuousQuery,
        mut sink: Box<dyn BatchSink>,
        warn: WarningHandler,
    ) {
        query.set_output(output);
        // Shown as a sink's query, with nothing written yet.
        query.record_sink(|_| {});
        let query_id = query.id();
        let running = Arc::clone(&self.running);
        let failures = Arc::clone(&self.failures);
        let sink_name = name.to_string();
        let task = tokio::spawn(async move {
            let mut query = query;
            if let Some(failure) = write_all(&mut query, sink.as_mut(), &sink_name, &warn).await {
                failures.lock().push(failure);
            }
            // Gone from the list once done, unless DROP SINK took it first.
            let mut running = running.lock();
            if running
                .get(&sink_name)
                .is_some_and(|s| s.query_id == query_id)
            {
                running.remove(&sink_name);
            }
        });
        self.running
            .lock()
            .insert(name.to_string(), SinkTask { query_id, task });
    }

    /// Takes sink `name` out of the registry, then has `stop` stop its
    /// query (given its id) and waits for its task: taken first, so that
    /// the task ending at once cannot remove it in between. The query's id,
    /// or `None` when there is no such sink.
    pub async fn stop_and_wait(&self, name: &str, stop: impl FnOnce(u64)) -> Option<u64> {
        let sink = self.running.lock().remove(name)?;
        stop(sink.query_id);
        let _ = sink.task.await;
        Some(sink.query_id)
    }

    /// Waits until every sink's query has ended and its files are closed;
    /// fails with the first failure of a sink, if any failed.
    pub async fn wait_all(&self) -> Result<()> {
        loop {
            let next = self.running.lock().pop_first();
            let Some((_, sink)) = next else {
                break;
            };
            let _ = sink.task.await;
        }
        let mut failures = self.failures.lock();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.remove(0))
        }
    }
}
