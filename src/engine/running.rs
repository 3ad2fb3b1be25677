//! The running aggregate engine (`RUNNING(stream)`): one row of partial
//! state per group since the query started, merged with each batch's
//! partial aggregate; every batch emits every group (complete mode) or the
//! groups the batch changed (update mode).
//!
//! Once it keeps checkpoints, the engine also keeps the state as of a
//! recent batch (the base) and each batch's partial aggregate since: a snapshot is the
//! base and those panes, which the checkpoint file of the previous batch
//! already holds but for the newest pane (see `crate::checkpoint`), so a
//! checkpoint writes about a batch's groups, not every group. The base
//! moves to the current state every [`REBASE_AFTER`] batches; a restore
//! merges the base and the panes.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The base of the checkpointed state moves to the current state after
/// this many batches' panes.
const REBASE_AFTER: usize = 16;

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
    /// Once the query keeps checkpoints (a snapshot was taken or
    /// restored): the state as of a recent batch, and the panes of each
    /// batch since (merged, they are `state`), which a snapshot holds.
    /// Without checkpoints neither is kept.
    checkpointed: AtomicBool,
    base: Option<RecordBatch>,
    since_base: Vec<RecordBatch>,
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
            checkpointed: AtomicBool::new(false),
            base: None,
            since_base: Vec::new(),
        }
    }
}

impl RunningEngine {
    /// Aggregates a batch's rows into a pane, merges it into the running
    /// state and emits the result.
    async fn fold(&mut self, rows: Rows<'_>) -> Result<Option<Emission>> {
        let pane = partial(&self.plan, &self.scan, rows, &self.task_ctx, false).await?;
        let previous = self.state.take();
        let merged = match &previous {
            None => pane.clone(),
            Some(previous) => {
                reduce(
                    &self.plan,
                    vec![previous.clone(), pane.clone()],
                    &self.task_ctx,
                )
                .await?
            }
        };
        let shown = match self.mode {
            OutputMode::Complete => merged.clone(),
            OutputMode::Update => touched_groups(&merged, &pane, self.plan.group_columns)?,
        };
        if self.checkpointed.load(Ordering::Relaxed) {
            match (&self.base, previous) {
                (Some(_), _) if self.since_base.len() < REBASE_AFTER => self.since_base.push(pane),
                // The state the last checkpoint wrote whole becomes the base.
                (None, Some(previous)) => {
                    self.base = Some(previous);
                    self.since_base = vec![pane];
                }
                _ => {
                    self.base = Some(merged.clone());
                    self.since_base.clear();
                }
            }
        }
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
        // The base is the state's own arrays until the first pane after it.
        if let Some(base) = self.base.as_ref().filter(|_| !self.since_base.is_empty()) {
            held.add(base);
            held.batches += 1;
        }
        for pane in &self.since_base {
            held.add(pane);
            held.batches += 1;
        }
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.checkpointed.store(true, Ordering::Relaxed);
        let Some(base) = &self.base else {
            // The first checkpoint: the state whole (it becomes the base).
            return self
                .state
                .iter()
                .map(|state| state::label(state.clone(), Part::Running))
                .collect();
        };
        let mut batches = Vec::with_capacity(1 + self.since_base.len());
        batches.push(state::label(base.clone(), Part::Running)?);
        for pane in &self.since_base {
            batches.push(state::label(pane.clone(), Part::RunningPane)?);
        }
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        let mut batches = batches.into_iter();
        self.checkpointed.store(true, Ordering::Relaxed);
        let Some(base) = batches.next() else {
            self.state = None;
            self.base = None;
            self.since_base.clear();
            return Ok(());
        };
        let part = state::part_of(&base)?;
        if part != Part::Running {
            return Err(BrookError::Internal(format!(
                "a RUNNING state starts with a '{part}' part"
            )));
        }
        let base = state::unlabel(base)?;
        let mut panes = Vec::new();
        for pane in batches {
            let part = state::part_of(&pane)?;
            if part != Part::RunningPane {
                return Err(BrookError::Internal(format!(
                    "a RUNNING state holds a '{part}' part after its base"
                )));
            }
            panes.push(state::unlabel(pane)?);
        }
        let state = if panes.is_empty() {
            base.clone()
        } else {
            let mut all = Vec::with_capacity(1 + panes.len());
            all.push(base.clone());
            all.extend(panes.iter().cloned());
            reduce(&self.plan, all, &self.task_ctx).await?
        };
        self.state = Some(state);
        self.base = Some(base);
        self.since_base = panes;
        self.checkpointed.store(true, Ordering::Relaxed);
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
