//! A running continuous query: its plan, prepared once, executed per batch
//! against the batch cut at each tick; its output as an async stream of
//! [`BatchOutput`]s; stopped when dropped.
//!
//! How per-batch execution works: each stream is registered in DataFusion as
//! a `StreamTable`. Planning a query happens once, on a copy of the session
//! state that carries `QueryBindings`; every scan of a stream then gets its
//! own `BatchSlot` (a one-partition `StreamingTable` whose partition reads
//! the slot). At each tick brook puts the new batch into the slots, resets
//! the physical plan's run state, and executes it: no parsing, no logical or
//! physical planning per batch.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, collect};
use futures::Stream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::batcher::Tick;
use crate::error::{BrookError, Result};
use crate::running::{QueryEntry, QueryRegistry, QueryStats, Stop, lock};
use crate::window::WindowKind;
use crate::window::exec::{Retained, WindowBounds, WindowedQuery};

/// The table DataFusion sees for a stream. It can only be scanned while
/// planning a continuous query, which binds each scan to a [`BatchSlot`].
#[derive(Debug)]
pub(crate) struct StreamTable {
    pub name: String,
    pub schema: SchemaRef,
    /// Set when the stream is read through `HOP`, `TUMBLE` or `RUNNING`.
    pub window: Option<WindowKind>,
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let bindings = state
            .config()
            .get_extension::<QueryBindings>()
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "stream '{}' can only be read by a continuous query (SELECT ... FROM {})",
                    self.name, self.name
                ))
            })?;
        // One slot per partition the session plans for.
        let slots: Vec<Arc<BatchSlot>> = (0..state.config().target_partitions().max(1))
            .map(|_| Arc::new(BatchSlot::new(Arc::clone(&self.schema))))
            .collect();
        bindings.bind(BoundScan {
            stream: self.name.clone(),
            slots: slots.clone(),
            window: self.window.clone(),
        });
        let partitions = slots
            .into_iter()
            .map(|slot| slot as Arc<dyn PartitionStream>)
            .collect();
        let table = StreamingTable::try_new(Arc::clone(&self.schema), partitions)?;
        table.scan(state, projection, filters, limit).await
    }
}

/// Collects the stream scans made while planning one query: for each scan,
/// the stream and one slot per partition.
#[derive(Debug, Default)]
pub(crate) struct QueryBindings {
    scans: Mutex<Vec<BoundScan>>,
}

/// One scan of a stream made while planning.
#[derive(Debug)]
pub(crate) struct BoundScan {
    pub stream: String,
    /// One slot per partition.
    pub slots: Vec<Arc<BatchSlot>>,
    /// The window the scan reads through, if any.
    pub window: Option<WindowKind>,
}

impl QueryBindings {
    fn bind(&self, scan: BoundScan) {
        lock(&self.scans).push(scan);
    }

    /// The scans bound so far.
    pub fn take(&self) -> Vec<BoundScan> {
        std::mem::take(&mut *lock(&self.scans))
    }
}

/// The batch a stream scan reads on its next execution.
#[derive(Debug)]
pub(crate) struct BatchSlot {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
}

impl BatchSlot {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Mutex::new(Vec::new()),
        }
    }

    /// The schema of the batches the slot holds.
    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    /// What the next execution reads.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *lock(&self.batches) = batches;
    }
}

impl PartitionStream for BatchSlot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = lock(&self.batches).clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

/// The result of one batch of a continuous query.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// 1-based number of the batch within this query.
    pub batch_number: u64,
    /// Wall-clock time of the tick that cut the batch.
    pub batch_time: DateTime<Utc>,
    /// Rows the batch held, over all streams the query reads.
    pub rows_in: usize,
    /// The query's result for this batch.
    pub batches: Vec<RecordBatch>,
    /// The result's schema (also when there are no rows).
    pub schema: SchemaRef,
    /// Time from the tick to the result: cutting the batch, waiting for the
    /// query to be free, and executing the plan.
    pub elapsed: Duration,
    /// Time spent executing the plan alone.
    pub execution: Duration,
    /// How late the batch started: from its tick until the query began
    /// executing it (cutting, and waiting for the query's previous batch).
    /// Near zero while the query keeps up with the batch interval.
    pub lag: Duration,
    /// For a `HOP` or `TUMBLE` query, the window this result covers.
    pub window: Option<WindowBounds>,
    /// What a window or running aggregate query holds after this batch
    /// (all zero for a per-batch query).
    pub retained: Retained,
}

impl BatchOutput {
    /// Rows in the result.
    pub fn rows_out(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Rows per piece when a micro-batch is dealt out over partitions.
const PIECE_ROWS: usize = 8192;

/// A physical plan prepared once for one degree of parallelism.
pub(crate) struct PlanVariant {
    pub plan: Arc<dyn ExecutionPlan>,
    pub task_ctx: Arc<TaskContext>,
    /// Batches with at least this many rows use this variant.
    pub min_rows: usize,
    /// Each scan's slots (one per partition) with the index of its stream
    /// in the tick's inputs.
    pub scans: Vec<(usize, Vec<Arc<BatchSlot>>)>,
}

/// A query prepared once, executed per batch. It may hold a single-partition
/// plan for small batches and a parallel one for large batches; each batch
/// runs on the plan its size calls for.
pub(crate) struct PreparedQuery {
    /// Ordered by `min_rows`, the first at 0.
    pub variants: Vec<PlanVariant>,
}

impl PreparedQuery {
    /// The schema of the query's results.
    pub fn schema(&self) -> SchemaRef {
        self.variants.first().map_or_else(
            || Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            |v| v.plan.schema(),
        )
    }

    /// Runs the plan over the batches of one tick.
    pub async fn execute(
        &self,
        inputs: &[Vec<RecordBatch>],
        rows_in: usize,
    ) -> Result<Vec<RecordBatch>> {
        let Some(variant) = self.variants.iter().rev().find(|v| v.min_rows <= rows_in) else {
            return Ok(Vec::new());
        };
        for (input, slots) in &variant.scans {
            for (slot, share) in slots.iter().zip(deal(&inputs[*input], slots.len())) {
                slot.set(share);
            }
        }
        // Operators keep run state (TopK heaps, repartition channels); a
        // fresh copy of that state per run makes the cached plan reusable.
        let plan = reset_plan_states(Arc::clone(&variant.plan))?;
        let result = collect(plan, Arc::clone(&variant.task_ctx)).await;
        for (_, slots) in &variant.scans {
            for slot in slots {
                lock(&slot.batches).clear();
            }
        }
        Ok(result?)
    }
}

/// How a continuous query computes its results.
pub(crate) enum QueryPlan {
    /// One result per batch, from the batch alone.
    PerBatch(PreparedQuery),
    /// Results per window (or per batch, over all batches so far).
    Windowed(Box<WindowedQuery>),
}

impl QueryPlan {
    fn schema(&self) -> SchemaRef {
        match self {
            QueryPlan::PerBatch(prepared) => prepared.schema(),
            QueryPlan::Windowed(windowed) => windowed.schema(),
        }
    }
}

/// Deals `batches` out to `partitions` shares, round-robin, in pieces of at
/// most [`PIECE_ROWS`] rows (slicing copies nothing).
fn deal(batches: &[RecordBatch], partitions: usize) -> Vec<Vec<RecordBatch>> {
    if partitions <= 1 {
        return vec![batches.to_vec()];
    }
    let mut shares = vec![Vec::new(); partitions];
    let mut next = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = PIECE_ROWS.min(batch.num_rows() - offset);
            shares[next % partitions].push(batch.slice(offset, len));
            next += 1;
            offset += len;
        }
    }
    shares
}

/// A continuous query: an async [`Stream`] of one [`BatchOutput`] per batch.
///
/// It ends when every stream it reads has ended, or after a stream fails
/// (that error is the last item). A batch whose execution fails yields
/// [`BrookError::BatchFailed`] and the query goes on with the next batch. Dropping it stops the query; [`ContinuousQuery::stop`] stops it
/// after the batch in progress.
pub struct ContinuousQuery {
    entry: Arc<QueryEntry>,
    registry: QueryRegistry,
    schema: SchemaRef,
    outputs: mpsc::Receiver<Result<BatchOutput>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ContinuousQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousQuery")
            .field("id", &self.entry.id)
            .field("sql", &self.entry.sql)
            .finish()
    }
}

impl ContinuousQuery {
    pub(crate) fn start(
        id: u64,
        sql: String,
        prepared: QueryPlan,
        ticks: mpsc::Receiver<Tick>,
        tick_now: Arc<Notify>,
        registry: QueryRegistry,
        stop_on_error: bool,
    ) -> Self {
        let schema = prepared.schema();
        let (output_sender, outputs) = mpsc::channel(1);
        let (stop, stop_requested) = watch::channel(Stop::Running);
        let entry = Arc::new(QueryEntry {
            id,
            sql,
            started: Utc::now(),
            output: std::sync::Mutex::new("console".to_string()),
            stats: std::sync::Mutex::new(QueryStats::default()),
            stop,
            tick_now,
        });
        registry.insert(Arc::clone(&entry));
        let task = tokio::spawn(run_query(
            prepared,
            ticks,
            output_sender,
            stop_requested,
            Arc::clone(&entry),
            registry.clone(),
            stop_on_error,
        ));
        Self {
            entry,
            registry,
            schema,
            outputs,
            task,
        }
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
        lock(&self.entry.stats).clone()
    }

    /// Names where the results go, for `SHOW QUERIES` (`console` unless set).
    pub(crate) fn set_output(&self, output: String) {
        *lock(&self.entry.output) = output;
    }

    /// The schema of every result batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Asks the query to stop after the batch in progress; the stream then
    /// yields that batch's output (if any) and ends. Rows not yet cut into
    /// a batch are left to other queries.
    pub fn stop(&self) {
        self.entry.stop();
    }

    /// Asks the query to finish: brook cuts a batch at once (in every query
    /// of the context), this query runs it, and its stream ends. What its
    /// streams received so far is processed; this is a graceful shutdown.
    pub fn finish(&self) {
        self.entry.finish();
    }
}

impl Drop for ContinuousQuery {
    fn drop(&mut self) {
        self.task.abort();
        self.registry.remove(self.entry.id);
    }
}

impl Stream for ContinuousQuery {
    type Item = Result<BatchOutput>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outputs.poll_recv(cx)
    }
}

async fn run_query(
    plan: QueryPlan,
    ticks: mpsc::Receiver<Tick>,
    outputs: mpsc::Sender<Result<BatchOutput>>,
    stop_requested: watch::Receiver<Stop>,
    entry: Arc<QueryEntry>,
    registry: QueryRegistry,
    stop_on_error: bool,
) {
    run_batches(plan, ticks, outputs, stop_requested, &entry, stop_on_error).await;
    registry.remove(entry.id);
}

async fn run_batches(
    mut plan: QueryPlan,
    mut ticks: mpsc::Receiver<Tick>,
    outputs: mpsc::Sender<Result<BatchOutput>>,
    mut stop_requested: watch::Receiver<Stop>,
    entry: &QueryEntry,
    stop_on_error: bool,
) {
    let schema = plan.schema();
    let mut batch_number = 0;
    loop {
        let tick = tokio::select! {
            biased;
            _ = stop_requested.wait_for(|stop| *stop == Stop::Now) => return,
            tick = ticks.recv() => match tick {
                Some(tick) => tick,
                None => return,
            },
        };
        let mut inputs = Vec::with_capacity(tick.inputs.len());
        let mut all_ended = true;
        let mut rows_in = 0;
        for input in tick.inputs {
            match input {
                Ok(cut) => {
                    all_ended &= cut.ended;
                    rows_in += cut.rows;
                    inputs.push(cut.batches);
                }
                Err(failure) => {
                    let _ = outputs.send(Err(failure.into())).await;
                    return;
                }
            }
        }
        let finished =
            matches!(*stop_requested.borrow(), Stop::AfterBatchCutAt(at) if tick.instant >= at);
        let ending = all_ended || finished;
        if !(all_ended && rows_in == 0) {
            batch_number += 1;
            let lag = tick.instant.elapsed();
            let started = std::time::Instant::now();
            let result = match &mut plan {
                QueryPlan::PerBatch(prepared) => prepared
                    .execute(&inputs, rows_in)
                    .await
                    .map(|batches| Some((batches, None))),
                QueryPlan::Windowed(windowed) => windowed
                    .on_batch(&inputs, tick.time)
                    .await
                    .map(|emitted| emitted.map(|e| (e.batches, e.window))),
            };
            let output = match result {
                Ok(None) => None,
                Ok(Some((batches, window))) => Some(Ok(BatchOutput {
                    batch_number,
                    batch_time: tick.time,
                    rows_in,
                    batches,
                    schema: Arc::clone(&schema),
                    elapsed: tick.instant.elapsed(),
                    execution: started.elapsed(),
                    lag,
                    window,
                    retained: retained(&plan),
                })),
                // A batch the plan cannot run (a division by zero, a failed
                // cast) is reported with its number; the next batch runs as
                // usual.
                Err(err) => Some(Err(BrookError::BatchFailed {
                    batch_number,
                    source: Box::new(err),
                })),
            };
            {
                let mut stats = lock(&entry.stats);
                stats.batches = batch_number;
                stats.rows_in += rows_in as u64;
                stats.rows_out += output
                    .as_ref()
                    .and_then(|o| o.as_ref().ok())
                    .map_or(0, |o| o.rows_out() as u64);
                stats.last_batch = started.elapsed();
                stats.lag = lag;
                stats.retained = retained(&plan);
            }
            let failed = matches!(output, Some(Err(_)));
            if let Some(output) = output
                && outputs.send(output).await.is_err()
            {
                return;
            }
            if failed && stop_on_error {
                return;
            }
        }
        if ending {
            // A window query emits the window holding its last batches.
            if let QueryPlan::Windowed(windowed) = &mut plan {
                let started = std::time::Instant::now();
                let output = match windowed.flush().await {
                    Ok(None) => None,
                    Ok(Some(emission)) => Some(Ok(BatchOutput {
                        batch_number,
                        batch_time: tick.time,
                        rows_in: 0,
                        batches: emission.batches,
                        schema: Arc::clone(&schema),
                        elapsed: tick.instant.elapsed(),
                        execution: started.elapsed(),
                        lag: Duration::ZERO,
                        window: emission.window,
                        retained: windowed.retained(),
                    })),
                    Err(err) => Some(Err(BrookError::BatchFailed {
                        batch_number,
                        source: Box::new(err),
                    })),
                };
                if let Some(output) = output {
                    let _ = outputs.send(output).await;
                }
            }
            return;
        }
    }
}

fn retained(plan: &QueryPlan) -> Retained {
    match plan {
        QueryPlan::PerBatch(_) => Retained::default(),
        QueryPlan::Windowed(windowed) => windowed.retained(),
    }
}

/// Turns the bound scans into stream indices, adding unseen streams to
/// `streams` (the order of a tick's inputs).
pub(crate) fn index_scans(
    streams: &mut Vec<String>,
    bound: Vec<BoundScan>,
) -> Vec<(usize, Vec<Arc<BatchSlot>>)> {
    bound
        .into_iter()
        .map(|BoundScan { stream, slots, .. }| {
            let index = streams
                .iter()
                .position(|s| *s == stream)
                .unwrap_or_else(|| {
                    streams.push(stream);
                    streams.len() - 1
                });
            (index, slots)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn deal_slices_batches_round_robin_without_losing_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let batch = |from: i32, rows: i32| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from_iter_values(from..from + rows))],
            )
            .unwrap()
        };
        let input = vec![batch(0, 20_000), batch(20_000, 100)];
        let shares = deal(&input, 2);
        let sizes: Vec<Vec<usize>> = shares
            .iter()
            .map(|s| s.iter().map(RecordBatch::num_rows).collect())
            .collect();
        assert_eq!(sizes, vec![vec![8192, 3616], vec![8192, 100]]);
        let mut all: Vec<i32> = shares
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        all.sort();
        assert_eq!(all, (0..20_100).collect::<Vec<_>>());
        assert_eq!(deal(&input, 1), vec![input.clone()]);
    }
}
