//! The recompute store of a sliding window: it keeps the window's raw
//! batches and re-runs the query's plan over them for each window. It
//! serves every query, at a cost that grows with the window.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::sliding::WindowStore;
use super::{state, with_window};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::query::Retained;

/// The raw batches of a window, and the plan to re-run over them.
pub(crate) struct RecomputeStore {
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// Each scan's input (index into a batch's inputs) and slot.
    scans: Vec<(usize, Arc<BatchSlot>)>,
    /// The number of inputs of a batch.
    #[cfg_attr(not(test), allow(dead_code))] // used by checkpoints and the state tests
    inputs: usize,
    /// Per retained batch, the record batches of every input.
    retained: VecDeque<Vec<Vec<RecordBatch>>>,
    /// Why the window is recomputed rather than merged (for `EXPLAIN`).
    reason: String,
}

impl RecomputeStore {
    pub fn new(
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        scans: Vec<(usize, Arc<BatchSlot>)>,
        inputs: usize,
        reason: String,
    ) -> Self {
        Self {
            plan,
            task_ctx,
            scans,
            inputs,
            retained: VecDeque::new(),
            reason,
        }
    }
}

#[async_trait]
impl WindowStore for RecomputeStore {
    fn describe(&self, size: u64) -> String {
        format!(
            "recompute ({}): the plan below runs over the window's raw batches; retains at most {size} batches",
            self.reason
        )
    }

    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    async fn add(&mut self, inputs: &[Vec<RecordBatch>]) -> Result<()> {
        self.retained.push_back(inputs.to_vec());
        Ok(())
    }

    async fn evict_to(&mut self, keep: usize) -> Result<()> {
        while self.retained.len() > keep {
            self.retained.pop_front();
        }
        Ok(())
    }

    async fn compute(&mut self, start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        for (input, slot) in &self.scans {
            let schema = Arc::clone(slot.schema_ref());
            let batches = self
                .retained
                .iter()
                .flat_map(|per_input| per_input[*input].iter())
                .map(|batch| with_window(batch, &schema, Some((start, end))))
                .collect::<Result<Vec<_>>>()?;
            slot.set(batches);
        }
        let result = super::run(&self.plan, &self.task_ctx).await;
        for (_, slot) in &self.scans {
            slot.clear();
        }
        result
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.retained
            .iter()
            .flatten()
            .flatten()
            .for_each(|batch| held.add(batch));
        held.batches = self.retained.len();
        held
    }

    /// One record batch per retained batch and input, labelled
    /// `batch:INPUT`, oldest first; inputs the plan does not read are left
    /// out (nothing reads them again).
    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for per_input in &self.retained {
            for (input, slot) in &self.scans {
                let schema = raw_schema(slot.schema_ref());
                let joined = concat_batches(&schema, &per_input[*input])?;
                batches.push(state::label(joined, &format!("batch:{input}"))?);
            }
        }
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.retained.clear();
        let per_batch = self.scans.len().max(1);
        let mut batches = batches.into_iter().peekable();
        while batches.peek().is_some() {
            let mut inputs = vec![Vec::new(); self.inputs];
            for _ in 0..per_batch {
                let Some(batch) = batches.next() else {
                    return Err(BrookError::Internal("a window state ends mid-batch".into()));
                };
                let input = state::label_of(&batch)
                    .and_then(|label| label.strip_prefix("batch:"))
                    .and_then(|index| index.parse::<usize>().ok())
                    .filter(|index| *index < self.inputs)
                    .ok_or_else(|| {
                        BrookError::Internal("a window state without input labels".into())
                    })?;
                inputs[input].push(state::unlabel(batch)?);
            }
            self.retained.push_back(inputs);
        }
        Ok(())
    }
}

/// A window scan's schema without the two window columns it adds.
#[cfg_attr(not(test), allow(dead_code))] // used by checkpoints and the state tests
fn raw_schema(window_schema: &SchemaRef) -> SchemaRef {
    let fields = window_schema.fields();
    let raw = &fields[..fields.len().saturating_sub(2)];
    Arc::new(Schema::new(raw.to_vec()))
}
