//! The ways a continuous query runs, one file each, all implementing
//! [`BatchEngine`](crate::query::engine::BatchEngine):
//!
//! - [`per_batch`]: one result per micro-batch, from the batch alone;
//! - [`sliding`]: `HOP` / `TUMBLE` windows of whole micro-batches, emitted
//!   once per slide, each batch a pane;
//! - [`event_window`]: `TUMBLE` / `HOP` on an event-time column, closed by
//!   the watermark, each `gcd(slide, size)` of event time a pane;
//! - [`panes`]: the one [`panes::PaneStore`] both keep their panes in: raw
//!   rows re-run through the plan, or partial aggregate state (see
//!   [`split`]) merged per window, in any order or, in processing time,
//!   stacked in arrival order ([`stacked`], [`two_stacks`]);
//! - [`running`]: `RUNNING`, one state row per group since the start;
//! - [`retracting`]: `RUNNING` over a changelog: the current rows by key
//!   ([`current_rows`]) and aggregates that take rows back
//!   ([`retractable`]);
//! - [`session`]: `SESSION` windows per group in event time;
//! - [`event_clock`]: what the event-time engines share: judging rows
//!   against the watermark, late rows, moving the watermark.
//!
//! The planner ([`crate::planner`]) chooses the engine; each engine says
//! how it runs (`BatchEngine::describe`).

pub(crate) mod current_rows;
pub(crate) mod event_clock;
pub(crate) mod event_window;
pub(crate) mod interval_join;
pub(crate) mod join_bounds;
pub(crate) mod join_side;
#[cfg(test)]
mod join_tests;
pub(crate) mod lookup_join;
mod pane_runs;
pub(crate) mod panes;
pub(crate) mod per_batch;
pub(crate) mod retractable;
pub(crate) mod retracting;
#[cfg(test)]
mod retracting_tests;
pub(crate) mod running;
pub(crate) mod session;
pub(crate) mod session_batch;
pub(crate) mod sliding;
pub(crate) mod split;
pub(crate) mod stacked;
pub(crate) mod state;
pub(crate) mod table_maintainer;
pub(crate) mod temporal_join;
#[cfg(test)]
mod tests;
pub(crate) mod two_stacks;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, TimestampMillisecondArray, new_null_array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::catalog::stream_table::{BatchSlot, PieceMap};
use crate::catalog::windows::window_time_type;
use crate::error::Result;
use crate::stream::feed::FeedReader;
use split::IncrementalPlan;

/// Runs a cached plan once more. Operators keep run state (TopK heaps,
/// repartition channels); a fresh copy of that state per run makes the
/// cached plan reusable.
pub(crate) async fn run(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    let plan = reset_plan_states(Arc::clone(plan))?;
    Ok(collect(plan, Arc::clone(task_ctx)).await?)
}

/// Runs `plan` with `slot` holding `input`, and empties the slot after.
async fn run_on(
    plan: &Arc<dyn ExecutionPlan>,
    slot: &BatchSlot,
    input: Vec<RecordBatch>,
    task_ctx: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    slot.set(input);
    let result = run(plan, task_ctx).await;
    slot.clear();
    result
}

/// A batch's rows from one input, as an engine gets them.
pub(crate) enum Rows<'a> {
    /// Read whole.
    Whole(&'a [RecordBatch]),
    /// Read while they arrive.
    Live(&'a Arc<FeedReader>),
}

/// Aggregates one batch into a pane of partial state. `windowed` scans
/// carry the window columns, null until the window is known.
async fn partial(
    plan: &IncrementalPlan,
    scan: &BatchSlot,
    rows: Rows<'_>,
    task_ctx: &Arc<TaskContext>,
    windowed: bool,
) -> Result<RecordBatch> {
    let schema = Arc::clone(scan.schema_ref());
    let result = match rows {
        Rows::Whole(batches) => {
            let input = batches
                .iter()
                .map(|batch| {
                    if windowed {
                        with_window(batch, &schema, None)
                    } else {
                        Ok(batch.clone())
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            run_on(&plan.partial, scan, input, task_ctx).await?
        }
        Rows::Live(reader) => {
            let extend: Option<PieceMap> = windowed.then(|| {
                Arc::new(move |piece: RecordBatch| {
                    with_window(&piece, &schema, None)
                        .map_err(|err| DataFusionError::External(Box::new(err)))
                }) as PieceMap
            });
            scan.set_live(Arc::clone(reader), extend);
            let result = run(&plan.partial, task_ctx).await;
            scan.clear();
            result?
        }
    };
    Ok(concat_batches(&plan.partial.schema(), &result)?)
}

/// Merges panes into one.
async fn reduce(
    plan: &IncrementalPlan,
    panes: Vec<RecordBatch>,
    task_ctx: &Arc<TaskContext>,
) -> Result<RecordBatch> {
    let result = run_on(&plan.reduce, &plan.reduce_input, panes, task_ctx).await?;
    Ok(concat_batches(&plan.reduce.schema(), &result)?)
}

/// `batch` with the window columns appended: the window's bounds (in
/// milliseconds), or nulls while the window is not known yet.
fn with_window(
    batch: &RecordBatch,
    schema: &SchemaRef,
    bounds: Option<(i64, i64)>,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    match bounds {
        Some((start, end)) => {
            columns.push(timestamps(start, rows));
            columns.push(timestamps(end, rows));
        }
        None => {
            columns.push(new_null_array(&window_time_type(), rows));
            columns.push(new_null_array(&window_time_type(), rows));
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn timestamps(millis: i64, rows: usize) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_value(millis, rows).with_timezone("+00:00"))
}
