//! The panes of a processing-time window whose aggregates merge: each
//! micro-batch is aggregated once into a pane of partial state (one row per
//! group), and a window is the merge of its panes, kept in [`TwoStacks`] so
//! that a slide costs one partial aggregate plus a few merges, whatever the
//! window's length.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;

use super::panes::{Bounds, PaneStore, fill_window_keys};
use super::split::IncrementalPlan;
use super::state::{self, Part};
use super::two_stacks::TwoStacks;
use super::{Rows, partial, run_on};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::LiveBatch;

/// Panes of partial aggregate state in arrival order, and the plans that
/// make and merge them. Panes come with increasing keys (batch numbers)
/// and go from the oldest: a window is every pane held from its first on.
pub(crate) struct StackedPanes {
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    /// The input (index into a batch's inputs) the window scan reads.
    input: usize,
    scan: Arc<BatchSlot>,
    panes: TwoStacks,
    /// The keys of the panes held, oldest first.
    keys: VecDeque<i64>,
}

impl StackedPanes {
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
            keys: VecDeque::new(),
        }
    }

    /// Aggregates a batch's rows into the pane `pane`, the newest.
    async fn push(&mut self, pane: i64, rows: Rows<'_>) -> Result<()> {
        if self.keys.back().is_some_and(|newest| *newest >= pane) {
            return Err(BrookError::Internal(format!(
                "a window's pane {pane} came after pane {:?}",
                self.keys.back()
            )));
        }
        let state = partial(&self.plan, &self.scan, rows, &self.task_ctx, true).await?;
        self.panes.push(state, &self.plan, &self.task_ctx).await?;
        self.keys.push_back(pane);
        Ok(())
    }
}

#[async_trait]
impl PaneStore for StackedPanes {
    fn describe(&self) -> String {
        "incremental: each batch is aggregated once into partial state (a pane); a window merges at most 2 merged panes".into()
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    /// Rows of an input the window does not scan are not kept.
    async fn add(&mut self, input: usize, pane: i64, rows: &[RecordBatch]) -> Result<()> {
        if input != self.input {
            return Ok(());
        }
        self.push(pane, Rows::Whole(rows)).await
    }

    async fn add_live(&mut self, pane: i64, batch: &LiveBatch) -> Result<()> {
        self.push(pane, Rows::Live(&batch.inputs[self.input])).await
    }

    /// The panes before the window's first are dropped first: windows are
    /// asked for in order, and none ends before the newest pane.
    async fn window(&mut self, panes: Range<i64>, bounds: Bounds) -> Result<Vec<RecordBatch>> {
        self.drop_before(panes.start).await?;
        let states = self
            .panes
            .window_states()
            .map(|state| fill_window_keys(state, &self.plan.window_keys, bounds))
            .collect::<Result<Vec<_>>>()?;
        run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            states,
            &self.task_ctx,
        )
        .await
    }

    async fn drop_before(&mut self, pane: i64) -> Result<()> {
        let going = self.keys.iter().take_while(|key| **key < pane).count();
        if going == 0 {
            return Ok(());
        }
        self.keys.drain(..going);
        self.panes
            .evict_to(self.keys.len(), &self.plan, &self.task_ctx)
            .await
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes.states().for_each(|state| held.add(state));
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let keys = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "pane",
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(Int64Array::from_iter_values(
                self.keys.iter().copied(),
            ))],
        )?;
        let mut batches = vec![state::label(keys, Part::PaneKeys)?];
        batches.extend(self.panes.snapshot()?);
        Ok(batches)
    }

    async fn restore(&mut self, mut batches: Vec<RecordBatch>) -> Result<()> {
        let keys = match batches.first().map(state::part_of).transpose()? {
            Some(Part::PaneKeys) => batches.remove(0),
            _ => {
                return Err(BrookError::Internal(
                    "a window's stacked panes come without their keys".into(),
                ));
            }
        };
        let keys = keys
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| BrookError::Internal("a window's pane keys are not integers".into()))?;
        let panes = TwoStacks::restore(batches)?;
        if panes.len() != keys.len() {
            return Err(BrookError::Internal(format!(
                "a window's state holds {} panes and {} keys",
                panes.len(),
                keys.len()
            )));
        }
        self.keys = keys.values().iter().copied().collect();
        self.panes = panes;
        Ok(())
    }
}
