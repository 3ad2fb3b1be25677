//! Where a window keeps its panes, and how a window's result is computed
//! from them: the one [`PaneStore`] trait, and its stores. A pane is a slice
//! of a stream that windows are made of: in processing time one micro-batch
//! (its key is the batch's number), in event time `gcd(slide, size)` of
//! event time (its key is its start, in milliseconds). The stores keep
//! partial aggregate state when the query's aggregates merge
//! ([`IncrementalPanes`], keyed panes in any order; [`StackedPanes`],
//! panes in arrival order, merged in two stacks), raw rows otherwise
//! ([`RowPanes`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{
    concat_batches, filter_record_batch, max, min, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::pane_runs::PaneRuns;
use super::split::{IncrementalPlan, WindowBound};
use super::state::{self, Part};
use super::{Rows, partial, reduce, run_on, timestamps, with_window};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::LiveBatch;

/// A window's bounds in milliseconds since the epoch: the values its
/// `window_start` and `window_end` columns take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub start: i64,
    pub end: i64,
}

/// Where a window keeps its panes, and how it computes a window's result
/// from them.
#[async_trait]
pub(crate) trait PaneStore: Send {
    /// The schema of a window's result.
    fn schema(&self) -> SchemaRef;
    /// How the panes are kept, for `EXPLAIN` (the engine adds when they go).
    fn describe(&self) -> String;
    /// Adds the rows `rows` of input `input` to the pane `pane`.
    async fn add(&mut self, input: usize, pane: i64, rows: &[RecordBatch]) -> Result<()>;
    /// Adds a whole micro-batch, every input, as the pane `pane`, reading
    /// it while it arrives where the store can; by default read whole.
    async fn add_live(&mut self, pane: i64, batch: &LiveBatch) -> Result<()> {
        let batch = batch.collect().await?;
        for (input, rows) in batch.inputs.iter().enumerate() {
            self.add(input, pane, rows).await?;
        }
        Ok(())
    }
    /// Whether rows added are folded into state (partial aggregates) rather
    /// than kept: then a batch is added while it arrives, chunk by chunk.
    fn folds_rows(&self) -> bool {
        false
    }
    /// Adds `rows` of input `input`, whose event times are `times`, to
    /// their panes of length `pane`; returns the panes they fell in.
    async fn add_rows(
        &mut self,
        input: usize,
        rows: RecordBatch,
        times: &TimestampMillisecondArray,
        pane: i64,
    ) -> Result<Vec<i64>> {
        add_pane_by_pane(self, input, rows, times, pane).await
    }
    /// The result of the window made of the panes `panes`, whose bounds
    /// are `bounds`.
    async fn window(&mut self, panes: Range<i64>, bounds: Bounds) -> Result<Vec<RecordBatch>>;
    /// Drops the panes before `pane`.
    async fn drop_before(&mut self, pane: i64) -> Result<()>;
    /// What the store holds.
    fn retained(&self) -> Retained;
    /// The panes as labelled record batches (see [`state`]).
    fn snapshot(&self) -> Result<Vec<RecordBatch>>;
    /// Replaces the panes by a snapshot's.
    async fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()>;
}

/// The pane a state batch holds.
fn pane_of(batch: &RecordBatch) -> Result<(i64, Option<usize>)> {
    match state::part_of(batch)? {
        Part::Pane { start, input } => Ok((start, input)),
        other => Err(BrookError::Internal(format!(
            "a window's panes hold a '{other}' state"
        ))),
    }
}

/// Adds `rows` to `store` one pane at a time (see [`PaneStore::add_rows`]).
async fn add_pane_by_pane<S: PaneStore + ?Sized>(
    store: &mut S,
    input: usize,
    rows: RecordBatch,
    times: &TimestampMillisecondArray,
    pane: i64,
) -> Result<Vec<i64>> {
    let mut panes = Vec::new();
    for (start, rows) in split_by_pane(&rows, times, pane)? {
        store.add(input, start, std::slice::from_ref(&rows)).await?;
        panes.push(start);
    }
    Ok(panes)
}

/// The rows of `rows` per pane of length `pane`, in pane order. Rows come
/// mostly in order, so a batch spans few panes: all in one costs nothing,
/// a few are filtered out one by one, many are gathered by index.
pub(crate) fn split_by_pane(
    rows: &RecordBatch,
    times: &TimestampMillisecondArray,
    pane: i64,
) -> Result<Vec<(i64, RecordBatch)>> {
    let (Some(earliest), Some(latest)) = (min(times), max(times)) else {
        return Ok(Vec::new());
    };
    let first = earliest.div_euclid(pane) * pane;
    let last = latest.div_euclid(pane) * pane;
    if first == last {
        return Ok(vec![(first, rows.clone())]);
    }
    let panes: Int64Array = times.unary(|time| time.div_euclid(pane) * pane);
    if (last - first) / pane < 4 {
        let mut out = Vec::new();
        let mut start = first;
        while start <= last {
            let mask = eq(&panes, &Int64Array::new_scalar(start))?;
            if mask.true_count() > 0 {
                out.push((start, filter_record_batch(rows, &mask)?));
            }
            start += pane;
        }
        return Ok(out);
    }
    let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, pane) in panes.values().iter().enumerate() {
        by_pane.entry(*pane).or_default().push(row as u32);
    }
    by_pane
        .into_iter()
        .map(|(pane, indices)| {
            let indices = UInt32Array::from(indices);
            Ok((pane, take_record_batch(rows, &indices)?))
        })
        .collect()
}

/// Panes of partial aggregate state: one row per group per pane; a window
/// is its panes merged.
pub(crate) struct IncrementalPanes {
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    scan: Arc<BatchSlot>,
    panes: BTreeMap<i64, RecordBatch>,
    /// Runs of merged panes, so a window merges two states.
    runs: PaneRuns,
}

impl IncrementalPanes {
    /// Merges `state` into the pane starting at `pane`.
    async fn merge(&mut self, pane: i64, state: RecordBatch) -> Result<()> {
        self.runs.changed(pane);
        let merged = match self.panes.remove(&pane) {
            None => state,
            Some(previous) => reduce(&self.plan, vec![previous, state], &self.task_ctx).await?,
        };
        self.panes.insert(pane, merged);
        Ok(())
    }

    pub fn new(plan: IncrementalPlan, task_ctx: Arc<TaskContext>, scan: Arc<BatchSlot>) -> Self {
        Self {
            plan,
            task_ctx,
            scan,
            panes: BTreeMap::new(),
            runs: PaneRuns::default(),
        }
    }
}

#[async_trait]
impl PaneStore for IncrementalPanes {
    fn describe(&self) -> String {
        "incremental: each batch's rows are aggregated once per pane (gcd of slide and size) into partial state; a window merges its panes, or, of 16 panes or more, two runs of merged panes (kept until a pane in them changes)".into()
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    fn folds_rows(&self) -> bool {
        true
    }

    async fn add(&mut self, _input: usize, pane: i64, rows: &[RecordBatch]) -> Result<()> {
        let state = partial(
            &self.plan,
            &self.scan,
            Rows::Whole(rows),
            &self.task_ctx,
            true,
        )
        .await?;
        self.merge(pane, state).await
    }

    /// When the query groups by a window column, the rows are aggregated
    /// once, whatever the panes they span: the column holds each row's
    /// pane (until a window's merge sets it to the window's bound), so the
    /// partial state comes out per pane and group, and is split by pane.
    async fn add_rows(
        &mut self,
        input: usize,
        rows: RecordBatch,
        times: &TimestampMillisecondArray,
        pane: i64,
    ) -> Result<Vec<i64>> {
        let Some(&(key_column, _)) = self.plan.window_keys.first() else {
            return add_pane_by_pane(self, input, rows, times, pane).await;
        };
        let (Some(earliest), Some(latest)) = (min(times), max(times)) else {
            return Ok(Vec::new());
        };
        let (first, last) = (
            earliest.div_euclid(pane) * pane,
            latest.div_euclid(pane) * pane,
        );
        let starts = times
            .unary::<_, datafusion::arrow::datatypes::TimestampMillisecondType>(|t| {
                t.div_euclid(pane) * pane
            })
            .with_timezone("+00:00");
        let ends = starts
            .unary::<_, datafusion::arrow::datatypes::TimestampMillisecondType>(|t| t + pane)
            .with_timezone("+00:00");
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        let input_rows = RecordBatch::try_new(Arc::clone(self.scan.schema_ref()), columns)?;
        let result = run_on(
            &self.plan.partial,
            &self.scan,
            vec![input_rows],
            &self.task_ctx,
        )
        .await?;
        let state = concat_batches(&self.plan.partial.schema(), &result)?;
        if first == last {
            self.merge(first, state).await?;
            return Ok(vec![first]);
        }
        // The key column holds a pane's start (`window_start`) or end.
        let keys = datafusion::arrow::compute::cast(state.column(key_column), &DataType::Int64)?;
        let keys = keys
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| BrookError::Internal("a pane key is not a time".into()))?;
        let offset = match self.plan.window_keys[0].1 {
            WindowBound::Start => 0,
            WindowBound::End => pane,
        };
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, key) in keys.iter().enumerate() {
            let start = key.unwrap_or(first + offset) - offset;
            by_pane.entry(start).or_default().push(row as u32);
        }
        let mut panes = Vec::with_capacity(by_pane.len());
        for (start, indices) in by_pane {
            let part = take_record_batch(&state, &UInt32Array::from(indices))?;
            self.merge(start, part).await?;
            panes.push(start);
        }
        Ok(panes)
    }

    /// The window's panes (as runs of merged panes when it has many),
    /// their window columns set to the window's bounds, through the final
    /// aggregate (which merges a group's partial states).
    async fn window(&mut self, panes: Range<i64>, bounds: Bounds) -> Result<Vec<RecordBatch>> {
        let keys = self.plan.window_keys.clone();
        let clear =
            move |state: &RecordBatch| fill_window_keys(state, &keys, Bounds { start: 0, end: 0 });
        let states = self
            .runs
            .window_states(&self.panes, panes, &self.plan, &self.task_ctx, &clear)
            .await?
            .iter()
            .map(|state| fill_window_keys(state, &self.plan.window_keys, bounds))
            .collect::<Result<Vec<_>>>()?;
        if states.is_empty() {
            return Ok(Vec::new());
        }
        run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            states,
            &self.task_ctx,
        )
        .await
    }

    async fn drop_before(&mut self, pane: i64) -> Result<()> {
        self.panes = self.panes.split_off(&pane);
        self.runs.drop_before(pane);
        Ok(())
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes.values().for_each(|state| held.add(state));
        self.runs.account(&mut held);
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.panes
            .iter()
            .map(|(start, pane)| {
                let part = Part::Pane {
                    start: *start,
                    input: None,
                };
                state::label(pane.clone(), part)
            })
            .collect()
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.panes.clear();
        self.runs.forget();
        for batch in batches {
            let (start, _) = pane_of(&batch)?;
            self.panes.insert(start, state::unlabel(batch)?);
        }
        Ok(())
    }
}

/// Panes of raw rows, per input; a window re-runs the query over its panes'
/// rows. For queries whose aggregates do not merge.
pub(crate) struct RowPanes {
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// Each scan's input (index into a batch's inputs) and slot.
    scans: Vec<(usize, Arc<BatchSlot>)>,
    /// Per pane, per input, the rows.
    panes: BTreeMap<i64, BTreeMap<usize, Vec<RecordBatch>>>,
    /// Why the rows are kept rather than merged (for `EXPLAIN`).
    reason: String,
}

impl RowPanes {
    pub fn new(
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        scans: Vec<(usize, Arc<BatchSlot>)>,
        reason: String,
    ) -> Self {
        Self {
            plan,
            task_ctx,
            scans,
            panes: BTreeMap::new(),
            reason,
        }
    }
}

#[async_trait]
impl PaneStore for RowPanes {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn describe(&self) -> String {
        format!(
            "recompute ({}): rows are kept per pane and the plan below runs over a window's rows when it is emitted",
            self.reason
        )
    }

    /// Rows of an input no scan reads are not kept (nothing reads them).
    async fn add(&mut self, input: usize, pane: i64, rows: &[RecordBatch]) -> Result<()> {
        if !self.scans.iter().any(|(read, _)| *read == input) {
            return Ok(());
        }
        self.panes
            .entry(pane)
            .or_default()
            .entry(input)
            .or_default()
            .extend(rows.iter().cloned());
        Ok(())
    }

    async fn window(&mut self, panes: Range<i64>, bounds: Bounds) -> Result<Vec<RecordBatch>> {
        let Bounds { start, end } = bounds;
        for (input, slot) in &self.scans {
            let schema = Arc::clone(slot.schema_ref());
            let rows = self
                .panes
                .range(panes.clone())
                .filter_map(|(_, inputs)| inputs.get(input))
                .flatten()
                .map(|rows| with_window(rows, &schema, Some((start, end))))
                .collect::<Result<Vec<_>>>()?;
            slot.set(rows);
        }
        let result = super::run(&self.plan, &self.task_ctx).await;
        for (_, slot) in &self.scans {
            slot.clear();
        }
        result
    }

    async fn drop_before(&mut self, pane: i64) -> Result<()> {
        self.panes = self.panes.split_off(&pane);
        Ok(())
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes
            .values()
            .flat_map(|inputs| inputs.values())
            .flatten()
            .for_each(|rows| held.add(rows));
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for (start, inputs) in &self.panes {
            for (input, rows) in inputs {
                let Some(first) = rows.first() else { continue };
                let joined = concat_batches(first.schema_ref(), rows)?;
                let part = Part::Pane {
                    start: *start,
                    input: Some(*input),
                };
                batches.push(state::label(joined, part)?);
            }
        }
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.panes.clear();
        for batch in batches {
            let (start, input) = pane_of(&batch)?;
            let input =
                input.ok_or_else(|| BrookError::Internal("a row pane without its input".into()))?;
            self.panes
                .entry(start)
                .or_default()
                .entry(input)
                .or_default()
                .push(state::unlabel(batch)?);
        }
        Ok(())
    }
}

/// A merged pane with its window-bound group keys set to the window's.
pub(super) fn fill_window_keys(
    state: &RecordBatch,
    keys: &[(usize, WindowBound)],
    bounds: Bounds,
) -> Result<RecordBatch> {
    if keys.is_empty() {
        return Ok(state.clone());
    }
    let mut columns = state.columns().to_vec();
    for (index, bound) in keys {
        let value = match bound {
            WindowBound::Start => bounds.start,
            WindowBound::End => bounds.end,
        };
        columns[*index] = timestamps(value, state.num_rows());
    }
    Ok(RecordBatch::try_new(state.schema(), columns)?)
}
