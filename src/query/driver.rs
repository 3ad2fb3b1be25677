//! The driver of a continuous query: it receives each micro-batch as it
//! opens, has the query's engine run it while it arrives, and sends the
//! results out, once the batch is cut, as an async stream of
//! [`BatchOutput`]s. Dropping the stream stops the query.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use futures::Stream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::BatchOutput;
use super::completion::{BatchDone, CheckpointWriter, PendingCheckpoint};
use super::engine::{BatchEnd, BatchEngine, Emission, LiveBatch, MicroBatch};
use super::registry::{
    LatestResult, QueryEnd, QueryEntry, QueryRegistry, QueryStats, SinkProgress, Stop,
};
use crate::checkpoint::QueryCheckpoints;
use crate::error::{BrookError, RecentWarnings, Result, Warning, WarningHandler, error_chain};
use crate::stream::clock::{BatchStart, StreamFailure};
use crate::stream::cuts::InFlight;

/// A continuous query: an async [`Stream`] of one [`BatchOutput`] per batch.
///
/// It ends when every stream it reads has ended, or after a stream fails
/// (that error is the last item). A batch whose execution fails yields
/// [`BrookError::BatchFailed`] and the query goes on with the next batch.
/// Dropping it stops the query; [`ContinuousQuery::stop`] stops it after the
/// batch in progress.
///
/// An output counts as done with when the next one is asked for (or the
/// query is dropped): only then may a Kafka stream commit the offsets of
/// the rows behind it, so a consumer that writes each output before
/// polling again gets at-least-once delivery.
pub struct ContinuousQuery {
    entry: Arc<QueryEntry>,
    registry: QueryRegistry,
    schema: SchemaRef,
    outputs: mpsc::Receiver<(Result<BatchOutput>, BatchDone)>,
    /// The cuts behind the output last handed out, released when the next
    /// one is asked for.
    in_flight: BatchDone,
    /// The driver task; taken once it has ended, so that a panic in it is
    /// reported as the stream's last item instead of a silent end.
    task: Option<JoinHandle<()>>,
    restored_batch: Option<u64>,
}

impl std::fmt::Debug for ContinuousQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousQuery")
            .field("id", &self.entry.id)
            .field("sql", &self.entry.sql)
            .finish()
    }
}

/// What the driver needs besides the engine and its ticks.
pub(crate) struct DriverSettings {
    pub id: u64,
    pub sql: String,
    /// Asks the clock for a batch at once (a graceful finish).
    pub tick_now: Arc<Notify>,
    pub registry: QueryRegistry,
    /// Stop after a batch the engine cannot run.
    pub stop_on_error: bool,
    /// Where failed batches and failed streams are recorded for the
    /// dashboard (the query's consumer reports them too).
    pub warnings: Arc<RecentWarnings>,
    /// Where the query's checkpoints go, and the batch its engine's
    /// restored state ends with (numbering goes on after it).
    /// and every how many batches to write one.
    pub checkpoints: Option<(QueryCheckpoints, u64, u64)>,
    /// The streams the query reads, in input order, with their sources.
    pub sources: Vec<(String, Arc<dyn crate::source::Source>)>,
    /// Reports a checkpoint that could not be written.
    pub warn: WarningHandler,
}

impl ContinuousQuery {
    pub(crate) fn start(
        engine: Box<dyn BatchEngine>,
        batches: mpsc::Receiver<BatchStart>,
        settings: DriverSettings,
    ) -> Self {
        let schema = engine.schema();
        let (output_sender, outputs) = mpsc::channel(1);
        let (stop, stop_requested) = watch::channel(Stop::Running);
        let entry = Arc::new(QueryEntry {
            id: settings.id,
            sql: settings.sql,
            started: Utc::now(),
            output: parking_lot::Mutex::new("console".to_string()),
            stats: parking_lot::Mutex::new(QueryStats::default()),
            stop,
            tick_now: settings.tick_now,
            latest: parking_lot::Mutex::new(None),
        });
        let registry = settings.registry;
        registry.insert(Arc::clone(&entry));
        let (checkpoints, first_batch) = match settings.checkpoints {
            Some((checkpoints, restored, interval)) => {
                entry.stats.lock().checkpoint = (restored > 0).then_some(restored);
                (
                    Some(Arc::new(CheckpointWriter {
                        checkpoints,
                        sources: settings.sources,
                        interval: interval.max(1),
                        entry: Arc::clone(&entry),
                        warn: settings.warn,
                        abandoned: AtomicBool::new(false),
                        writing: parking_lot::Mutex::new(()),
                    })),
                    restored,
                )
            }
            None => (None, 0),
        };
        let driver = Driver {
            engine,
            schema: Arc::clone(&schema),
            outputs: output_sender,
            entry: Arc::clone(&entry),
            stop_on_error: settings.stop_on_error,
            batch_number: first_batch,
            checkpoints,
            registry: registry.clone(),
            warnings: settings.warnings,
        };
        let task = tokio::spawn({
            let registry = registry.clone();
            async move {
                let id = driver.entry.id;
                let end = driver.run(batches, stop_requested).await;
                registry.retire(id, end);
            }
        });
        Self {
            entry,
            registry,
            schema,
            outputs,
            in_flight: BatchDone::default(),
            task: Some(task),
            restored_batch: (first_batch > 0).then_some(first_batch),
        }
    }

    /// The batch after which the query's state was restored from a
    /// checkpoint (its batches are numbered on from it), if it was.
    pub fn restored_batch(&self) -> Option<u64> {
        self.restored_batch
    }

    /// The query's number within its context (1, 2, ...).
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// The SQL text of the query.
    pub fn sql(&self) -> &str {
        &self.entry.sql
    }

    /// The query's progress so far.
    pub fn stats(&self) -> QueryStats {
        self.entry.stats.lock().clone()
    }

    /// Names where the results go, for `SHOW QUERIES` (`console` unless set).
    pub(crate) fn set_output(&self, output: String) {
        *self.entry.output.lock() = output;
    }

    /// Records what the query's sink did (a sink's query only: its stats
    /// carry a [`SinkProgress`] from the first call on).
    pub(crate) fn record_sink(&self, update: impl FnOnce(&mut SinkProgress)) {
        update(self.entry.stats.lock().sink.get_or_insert_default());
    }

    /// The schema of every result batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Asks the query to stop now; the stream ends. The rows its open
    /// batch has read go with it; rows not yet read are left to other
    /// queries of the stream. [`ContinuousQuery::finish`] is the graceful
    /// stop.
    pub fn stop(&self) {
        self.entry.stop();
    }

    /// Asks the query to finish: brook cuts a batch at once, this query runs
    /// it, and its stream ends. What its streams received so far is
    /// processed; this is a graceful shutdown.
    pub fn finish(&self) {
        self.entry.finish();
    }

    /// The output last handed out could not be delivered (a sink failed to
    /// write it): neither its checkpoint nor any later one is written, and
    /// its streams' offsets are not committed past its rows, so that a
    /// restart reads them again.
    pub fn abandon_last_output(&mut self) {
        std::mem::take(&mut self.in_flight).abandon();
    }
}

impl Drop for ContinuousQuery {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        // Dropping a query is the user's choice not to read on: the output
        // last handed out, and those still queued, are done with.
        std::mem::take(&mut self.in_flight).complete();
        self.outputs.close();
        while let Ok((_, done)) = self.outputs.try_recv() {
            done.complete();
        }
        // A no-op when the driver already said how the query ended.
        self.registry.retire(self.entry.id, QueryEnd::Stopped);
    }
}

impl Stream for ContinuousQuery {
    type Item = Result<BatchOutput>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Asking for the next output: the last one is done with.
        std::mem::take(&mut self.in_flight).complete();
        match self.outputs.poll_recv(cx) {
            Poll::Ready(None) => {}
            Poll::Ready(Some((output, in_flight))) => {
                self.in_flight = in_flight;
                return Poll::Ready(Some(output));
            }
            Poll::Pending => return Poll::Pending,
        }
        // The driver has dropped its sender: it ended, or it panicked.
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = std::task::ready!(Pin::new(task).poll(cx));
        self.task = None;
        Poll::Ready(match ended {
            Err(err) if err.is_panic() => {
                let payload = err.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                Some(Err(BrookError::Internal(format!(
                    "query {} stopped: {message}",
                    self.entry.id
                ))))
            }
            _ => None,
        })
    }
}

/// A watermark in milliseconds as a time; the end of time (every stream
/// ended) and anything past chrono's range as its largest time.
fn watermark_time(millis: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_millis(millis).unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// Waits for the next batch to open: `None` when the query is to stop now
/// or no batch will open again.
async fn next_batch(
    batches: &mut mpsc::Receiver<BatchStart>,
    stop: &mut watch::Receiver<Stop>,
) -> Option<BatchStart> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop == Stop::Now) => None,
        start = batches.recv() => start,
    }
}

/// The cuts behind a batch that `end` describes, to hold until it is done
/// with, and per input the inbox items taken once it was cut.
fn hold_cuts(end: &BatchEnd) -> (InFlight, Vec<u64>) {
    let mut in_flight = InFlight::default();
    let mut items_after = Vec::with_capacity(end.inputs.len());
    for input in &end.inputs {
        items_after.push(input.in_flight.items_after);
        in_flight.push(Arc::clone(&input.in_flight));
    }
    (in_flight, items_after)
}

/// The error of the first of the batch's streams that failed, if one did.
fn stream_failure(live: &LiveBatch, end: &BatchEnd) -> Option<BrookError> {
    let (input, failure) = live
        .inputs
        .iter()
        .zip(&end.inputs)
        .find_map(|(reader, input)| Some((reader, input.failure.clone()?)))?;
    Some(BrookError::from(StreamFailure {
        stream: input.stream_name().to_string(),
        cause: failure,
    }))
}

/// Time on the batch's rows, not waiting for them to arrive (at least the
/// time from the cut at `cut` to the result): the engine began at
/// `started`, when the readers had waited `waited_before`.
fn execution_time(
    live: &LiveBatch,
    started: std::time::Instant,
    waited_before: Duration,
    cut: tokio::time::Instant,
) -> Duration {
    started
        .elapsed()
        .saturating_sub(live.waited().saturating_sub(waited_before))
        .max(cut.elapsed())
}

/// When a batch's output was cut, and how long it took: for its
/// [`BatchOutput`] and the query's stats.
struct OutputTimes {
    /// When the batch was cut.
    cut: tokio::time::Instant,
    /// Time on the batch's rows (see [`execution_time`]).
    execution: Duration,
    /// How late the batch started: from when it opened until the query
    /// began reading it.
    lag: Duration,
}

/// The task behind a [`ContinuousQuery`].
struct Driver {
    engine: Box<dyn BatchEngine>,
    schema: SchemaRef,
    /// Each output goes with the cuts behind it (see [`ContinuousQuery`]).
    outputs: mpsc::Sender<(Result<BatchOutput>, BatchDone)>,
    /// The registry's record of this query: stats and stop requests.
    entry: Arc<QueryEntry>,
    stop_on_error: bool,
    batch_number: u64,
    /// Where checkpoints go, when the context has a checkpoint directory.
    checkpoints: Option<Arc<CheckpointWriter>>,
    /// Says whether to keep the latest result's first rows.
    registry: QueryRegistry,
    warnings: Arc<RecentWarnings>,
}

impl Driver {
    /// Runs the query until it ends, and says how it ended.
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<BatchStart>,
        mut stop: watch::Receiver<Stop>,
    ) -> QueryEnd {
        loop {
            let Some(start) = next_batch(&mut batches, &mut stop).await else {
                return QueryEnd::Stopped;
            };
            let lag = start.opened.elapsed();
            start.started();
            let live = LiveBatch {
                number: self.batch_number + 1,
                inputs: start.inputs,
            };
            // The batch runs while it arrives; a stop ends it where it is.
            let (result, end, started, waited_before) = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop == Stop::Now) => return QueryEnd::Stopped,
                ran = self.run_batch(&live) => ran,
            };
            // Held until the batch is done with: past the engine, and with
            // its output until the output's consumer asks for the next.
            let (mut in_flight, mut items_after) = hold_cuts(&end);
            if let Some(error) = stream_failure(&live, &end) {
                return self.fail_on_stream(error, in_flight).await;
            }
            let ended = end.ended();
            let all_ended = ended.iter().all(|ended| *ended);
            let finished = matches!(*stop.borrow(), Stop::AfterBatchCutAt(at) if end.instant >= at);
            if let Some(result) = result {
                self.batch_number += 1;
                let batch = MicroBatch {
                    number: self.batch_number,
                    time: end.time,
                    inputs: Vec::new(),
                    rows: end.rows,
                    ended,
                };
                let times = OutputTimes {
                    cut: end.instant,
                    execution: execution_time(&live, started, waited_before, end.instant),
                    lag,
                };
                // The state after the batch, written once it is done with.
                let checkpoint = self.checkpoint_after(&result, &batch, &mut items_after);
                let delivered = self
                    .deliver(result, &batch, checkpoint, &times, &mut in_flight)
                    .await;
                if let Some(query_end) = delivered {
                    return query_end;
                }
            }
            if all_ended || finished {
                return self.end_query(all_ended, &end, in_flight).await;
            }
            // A batch without rows ran nothing: its cuts are done with.
            in_flight.release();
        }
    }

    /// Reports `error`, a stream of the batch that failed, as the query's
    /// last output, with the batch's cuts held back: the other streams'
    /// rows of this batch are not delivered.
    async fn fail_on_stream(&mut self, error: BrookError, in_flight: InFlight) -> QueryEnd {
        in_flight.hold_back();
        self.warnings.push_failure(&error);
        let end = QueryEnd::Failed(error_chain(&error));
        let done = BatchDone::new(None, in_flight);
        if let Err(unsent) = self.outputs.send((Err(error), done)).await {
            (unsent.0).1.abandon();
        }
        end
    }

    /// The checkpoint of the state after `batch`, when its engine ran it
    /// and one is due; `items_after` is taken into it.
    fn checkpoint_after(
        &self,
        result: &Result<Option<Emission>>,
        batch: &MicroBatch,
        items_after: &mut Vec<u64>,
    ) -> Option<PendingCheckpoint> {
        let checkpoints = match (result, &self.checkpoints) {
            (Ok(_), Some(checkpoints)) if batch.number.is_multiple_of(checkpoints.interval) => {
                checkpoints
            }
            _ => return None,
        };
        match self.engine.snapshot() {
            Ok(state) => Some(PendingCheckpoint {
                checkpoints: Arc::clone(checkpoints),
                batch: batch.number,
                batch_time: batch.time,
                state,
                items_after: std::mem::take(items_after),
            }),
            Err(err) => {
                self.warnings.push(&Warning::Checkpoint {
                    query: self.entry.id,
                    batch: batch.number,
                    source: err,
                });
                None
            }
        }
    }

    /// Sends the output of a batch the engine ran, with its checkpoint and
    /// the cuts taken from `in_flight`, once its stats are recorded; how
    /// the query ends, if it ends here (its consumer is gone, or the batch
    /// failed and the query stops on errors).
    async fn deliver(
        &mut self,
        result: Result<Option<Emission>>,
        batch: &MicroBatch,
        checkpoint: Option<PendingCheckpoint>,
        times: &OutputTimes,
        in_flight: &mut InFlight,
    ) -> Option<QueryEnd> {
        let output = self.output(result, batch, times);
        let done = BatchDone::new(checkpoint, std::mem::take(in_flight));
        self.record(batch, output.as_ref(), times.execution, times.lag);
        let failure = match &output {
            Some(Err(err)) => {
                self.warnings.push_failure(err);
                Some(error_chain(err))
            }
            _ => None,
        };
        match output {
            // Without an output the batch is done with here.
            None => done.complete(),
            Some(output) => {
                if let Err(unsent) = self.outputs.send((output, done)).await {
                    // The query was dropped: stopping is the user's
                    // choice not to read on.
                    (unsent.0).1.complete();
                    return Some(QueryEnd::Stopped);
                }
            }
        }
        if let Some(failure) = failure
            && self.stop_on_error
        {
            return Some(QueryEnd::Failed(failure));
        }
        None
    }

    /// Ends the query after the batch that `end` describes: every stream
    /// has ended (`all_ended`), or the query was asked to finish. What the
    /// engine emits at the end goes out with that batch's cuts.
    async fn end_query(
        &mut self,
        all_ended: bool,
        end: &BatchEnd,
        mut in_flight: InFlight,
    ) -> QueryEnd {
        let started = std::time::Instant::now();
        let result = if all_ended {
            self.engine.on_end().await
        } else {
            self.engine.on_stop().await
        };
        let last = MicroBatch {
            number: self.batch_number,
            time: end.time,
            inputs: Vec::new(),
            rows: 0,
            ended: Vec::new(),
        };
        let times = OutputTimes {
            cut: end.instant,
            execution: started.elapsed(),
            lag: Duration::ZERO,
        };
        if let Some(output) = self.output(result, &last, &times) {
            self.keep_latest(output.as_ref().ok());
            // With the last batch's cuts, if its own run emitted
            // nothing (a window emits its rows here).
            let done = BatchDone::new(None, std::mem::take(&mut in_flight));
            if let Err(unsent) = self.outputs.send((output, done)).await {
                (unsent.0).1.complete();
            }
        }
        in_flight.release();
        if all_ended {
            QueryEnd::Finished
        } else {
            QueryEnd::Stopped
        }
    }

    /// Runs the engine on `batch` while it arrives, unless it holds no row
    /// and every stream has ended (then there is no batch: `None`). Returns
    /// the engine's result, how the batch ended, when the engine began, and
    /// how long the readers had waited for rows by then.
    async fn run_batch(
        &mut self,
        batch: &LiveBatch,
    ) -> (
        Option<Result<Option<Emission>>>,
        BatchEnd,
        std::time::Instant,
        Duration,
    ) {
        let has_rows = batch.wait_for_rows().await;
        let started = std::time::Instant::now();
        let waited_before = batch.waited();
        if !has_rows {
            let end = batch.end().await;
            let nothing_left = end.inputs.iter().all(|input| input.ended);
            if nothing_left || end.inputs.iter().any(|input| input.failure.is_some()) {
                return (None, end, started, waited_before);
            }
        }
        let result = self.engine.on_live_batch(batch).await;
        (Some(result), batch.end().await, started, waited_before)
    }

    /// The output for an engine's result on `batch`, if it emitted one.
    fn output(
        &self,
        result: Result<Option<Emission>>,
        batch: &MicroBatch,
        times: &OutputTimes,
    ) -> Option<Result<BatchOutput>> {
        match result {
            Ok(None) => None,
            Ok(Some(emission)) => {
                let event = emission.event.unwrap_or_default();
                for warning in &event.warnings {
                    self.warnings.push(&Warning::Notice(format!(
                        "query {}: {warning}",
                        self.entry.id
                    )));
                }
                Some(Ok(BatchOutput {
                    batch_number: batch.number,
                    batch_time: batch.time,
                    rows_in: batch.rows,
                    batches: emission.batches,
                    schema: Arc::clone(&self.schema),
                    elapsed: times.cut.elapsed(),
                    execution: times.execution,
                    lag: times.lag,
                    window: emission.window,
                    retained: self.engine.retained(),
                    watermark: event.watermark.map(watermark_time),
                    late_rows: event.late_rows,
                    far_future_rows: event.far_future_rows,
                    checkpoint: self.entry.stats.lock().checkpoint,
                }))
            }
            // A batch the plan cannot run (a division by zero, a failed
            // cast) is reported with its number; the next batch runs as
            // usual.
            Err(err) => Some(Err(BrookError::BatchFailed {
                batch_number: batch.number,
                source: Box::new(err),
            })),
        }
    }

    /// Updates the query's stats after `batch`.
    fn record(
        &self,
        batch: &MicroBatch,
        output: Option<&Result<BatchOutput>>,
        execution: Duration,
        lag: Duration,
    ) {
        let mut stats = self.entry.stats.lock();
        stats.batches = batch.number;
        stats.rows_in += batch.rows as u64;
        stats.rows_out += output
            .and_then(|o| o.as_ref().ok())
            .map_or(0, |o| o.rows_out() as u64);
        stats.last_batch = execution;
        stats.lag = lag;
        stats.retained = self.engine.retained();
        if let Some(Ok(output)) = output {
            stats.late_rows += output.late_rows;
            stats.far_future_rows += output.far_future_rows;
            if output.watermark.is_some() {
                stats.watermark = output.watermark;
            }
        }
        drop(stats);
        self.keep_latest(output.and_then(|o| o.as_ref().ok()));
    }

    /// Keeps the first rows of `output` as the latest result, when a
    /// dashboard asks for them: O(columns), whatever the result's size.
    fn keep_latest(&self, output: Option<&BatchOutput>) {
        let limit = self.registry.latest_rows();
        if limit == 0 {
            return;
        }
        if let Some(output) = output {
            let latest = LatestResult::first_rows(
                output.batch_number,
                Arc::clone(&output.schema),
                &output.batches,
                limit,
            );
            *self.entry.latest.lock() = Some(latest);
        }
    }
}
