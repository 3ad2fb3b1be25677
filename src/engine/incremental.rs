//! The incremental store of a sliding window: each batch is aggregated once
//! into a pane of partial state (one row per group), and a window is the
//! merge of its panes, kept in [`TwoStacks`] so that a slide costs one
//! partial aggregate plus a few merges, whatever the window's length.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;

use super::sliding::WindowStore;
use super::split::{IncrementalPlan, WindowBound};
use super::two_stacks::TwoStacks;
use super::{Rows, partial, run_on, timestamps};
use crate::catalog::stream_table::BatchSlot;
use crate::error::Result;
use crate::query::Retained;
use crate::query::engine::LiveBatch;

/// Panes of partial aggregate state, and the plans that make and merge them.
pub(crate) struct IncrementalStore {
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    /// The input (index into a batch's inputs) the window scan reads.
    input: usize,
    scan: Arc<BatchSlot>,
    panes: TwoStacks,
}

impl IncrementalStore {
    pub fn new(
        plan: IncrementalPlan,
        task_ctx: Arc<TaskContext>,
        input: usize,
        scan: Arc<BatchSlot>,
    ) -> Self {
        Self {
            plan,
            task_ctx,
            input,
            scan,
            panes: TwoStacks::default(),
        }
    }
}

impl IncrementalStore {
    /// Aggregates a batch's rows into a pane, the window's newest.
    async fn add_pane(&mut self, rows: Rows<'_>) -> Result<()> {
        let pane = partial(&self.plan, &self.scan, rows, &self.task_ctx, true).await?;
        self.panes.push(pane, &self.plan, &self.task_ctx).await
    }
}

#[async_trait]
impl WindowStore for IncrementalStore {
    fn describe(&self, size: u64) -> String {
        format!(
            "incremental: each batch is aggregated once into partial state (a pane); a window merges at most 2 merged panes; retains at most {size} panes"
        )
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    async fn add(&mut self, inputs: &[Vec<RecordBatch>]) -> Result<()> {
        self.add_pane(Rows::Whole(&inputs[self.input])).await
    }

    async fn add_live(&mut self, batch: &LiveBatch) -> Result<()> {
        self.add_pane(Rows::Live(&batch.inputs[self.input])).await
    }

    async fn evict_to(&mut self, keep: usize) -> Result<()> {
        self.panes.evict_to(keep, &self.plan, &self.task_ctx).await
    }

    async fn compute(&mut self, start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        let states = self
            .panes
            .window_states()
            .map(|state| fill_window_keys(state, &self.plan.window_keys, start, end))
            .collect::<Result<Vec<_>>>()?;
        run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            states,
            &self.task_ctx,
        )
        .await
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes.states().for_each(|state| held.add(state));
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.panes.snapshot()
    }

    async fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        self.panes = TwoStacks::restore(state)?;
        Ok(())
    }
}

/// A merged pane with its window-bound group keys set to this window's.
pub(super) fn fill_window_keys(
    state: &RecordBatch,
    keys: &[(usize, WindowBound)],
    start: i64,
    end: i64,
) -> Result<RecordBatch> {
    if keys.is_empty() {
        return Ok(state.clone());
    }
    let mut columns = state.columns().to_vec();
    for (index, bound) in keys {
        let value = match bound {
            WindowBound::Start => start,
            WindowBound::End => end,
        };
        columns[*index] = timestamps(value, state.num_rows());
    }
    Ok(RecordBatch::try_new(state.schema(), columns)?)
}
