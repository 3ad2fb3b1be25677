//! The running aggregate engine (`RUNNING(stream)`): one row of partial
//! state per group since the query started, merged with each batch's
//! partial aggregate; every batch emits every group (complete mode) or the
//! groups the batch changed (update mode).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;

use super::split::IncrementalPlan;
use super::state::{self, Part};
use super::{Rows, partial, reduce, run_on};
use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::OutputMode;
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, LiveBatch, MicroBatch};

/// A `RUNNING` query in progress.
pub(crate) struct RunningEngine {
    mode: OutputMode,
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    /// The input (index into a batch's inputs) the scan reads.
    input: usize,
    scan: Arc<BatchSlot>,
    /// The state since the query started: one row per group.
    state: Option<RecordBatch>,
}

impl RunningEngine {
    pub fn new(
        mode: OutputMode,
        plan: IncrementalPlan,
        task_ctx: Arc<TaskContext>,
        input: usize,
        scan: Arc<BatchSlot>,
    ) -> Self {
        Self {
            mode,
            plan,
            task_ctx,
            input,
            scan,
            state: None,
        }
    }
}

impl RunningEngine {
    /// Aggregates a batch's rows into a pane, merges it into the running
    /// state and emits the result.
    async fn fold(&mut self, rows: Rows<'_>) -> Result<Option<Emission>> {
        let pane = partial(&self.plan, &self.scan, rows, &self.task_ctx, false).await?;
        let merged = match self.state.take() {
            None => pane.clone(),
            Some(previous) => {
                reduce(&self.plan, vec![previous, pane.clone()], &self.task_ctx).await?
            }
        };
        let shown = match self.mode {
            OutputMode::Complete => merged.clone(),
            OutputMode::Update => touched_groups(&merged, &pane, self.plan.group_columns)?,
        };
        self.state = Some(merged);
        let batches = run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            vec![shown],
            &self.task_ctx,
        )
        .await?;
        Ok(Some(Emission {
            batches,
            window: None,
            event: None,
        }))
    }
}

#[async_trait]
impl BatchEngine for RunningEngine {
    fn describe(&self) -> String {
        format!(
            "window: {}\nincremental: each batch is aggregated once into partial state and merged into the running state; retains one state row per group",
            crate::catalog::windows::WindowKind::Running(self.mode)
        )
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        self.fold(Rows::Live(&batch.inputs[self.input])).await
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        self.fold(Rows::Whole(&batch.inputs[self.input])).await
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        if let Some(state) = &self.state {
            held.add(state);
            held.batches = 1;
        }
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.state
            .iter()
            .map(|state| state::label(state.clone(), Part::Running))
            .collect()
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.state = match <[RecordBatch; 1]>::try_from(batches) {
            Ok([state]) => match state::part_of(&state)? {
                Part::Running => Some(state::unlabel(state)?),
                other => {
                    return Err(BrookError::Internal(format!(
                        "a RUNNING state holds a '{other}' part"
                    )));
                }
            },
            Err(batches) if batches.is_empty() => None,
            Err(_) => return Err(BrookError::Internal("a running state is one batch".into())),
        };
        Ok(())
    }
}

/// The rows of `state` whose group keys occur in `pane`.
fn touched_groups(
    state: &RecordBatch,
    pane: &RecordBatch,
    group_columns: usize,
) -> Result<RecordBatch> {
    if group_columns == 0 {
        return Ok(state.clone());
    }
    let converter = RowConverter::new(
        state
            .schema()
            .fields()
            .iter()
            .take(group_columns)
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?;
    let touched = converter.convert_columns(&pane.columns()[..group_columns])?;
    let touched: HashSet<_> = touched.iter().collect();
    let keys = converter.convert_columns(&state.columns()[..group_columns])?;
    let mask: BooleanArray = keys
        .iter()
        .map(|key| Some(touched.contains(&key)))
        .collect();
    Ok(filter_record_batch(state, &mask)?)
}
