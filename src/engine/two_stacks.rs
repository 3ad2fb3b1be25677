//! A FIFO of panes that answers "all panes merged" with at most two merges
//! per batch, amortised, however many panes it holds (the two-stacks
//! sliding aggregation).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;

use super::reduce;
use super::split::IncrementalPlan;
use super::state::{self, Part};
use crate::error::{BrookError, Result};

/// `front` holds merged suffixes of the older panes, the oldest pane's
/// suffix last; `back` holds the newer panes one by one and `back_merged`
/// all of them merged.
#[derive(Default)]
pub(crate) struct TwoStacks {
    front: Vec<RecordBatch>,
    back: Vec<RecordBatch>,
    back_merged: Option<RecordBatch>,
}

impl TwoStacks {
    /// Panes held.
    pub fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    /// Every state held, for accounting.
    pub fn states(&self) -> impl Iterator<Item = &RecordBatch> {
        self.front
            .iter()
            .chain(self.back.iter())
            .chain(self.back_merged.iter())
    }

    /// The (at most two) states whose merge is the whole window.
    pub fn window_states(&self) -> impl Iterator<Item = &RecordBatch> {
        self.front.last().into_iter().chain(self.back_merged.iter())
    }

    pub async fn push(
        &mut self,
        pane: RecordBatch,
        plan: &IncrementalPlan,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<()> {
        self.back_merged = Some(match self.back_merged.take() {
            None => pane.clone(),
            Some(merged) => reduce(plan, vec![merged, pane.clone()], task_ctx).await?,
        });
        self.back.push(pane);
        Ok(())
    }

    pub async fn evict_to(
        &mut self,
        keep: usize,
        plan: &IncrementalPlan,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<()> {
        if keep == 0 {
            *self = Self::default();
            return Ok(());
        }
        while self.len() > keep {
            if self.front.is_empty() {
                // Turn the newer panes into merged suffixes, newest first,
                // so the oldest pane's suffix ends on top.
                let mut suffix: Option<RecordBatch> = None;
                for pane in std::mem::take(&mut self.back).into_iter().rev() {
                    let merged = match suffix.take() {
                        None => pane,
                        Some(newer) => reduce(plan, vec![pane, newer], task_ctx).await?,
                    };
                    self.front.push(merged.clone());
                    suffix = Some(merged);
                }
                self.back_merged = None;
            }
            self.front.pop();
        }
        Ok(())
    }

    /// The stacks as labelled batches: `front`, `back`, `back_merged`.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::with_capacity(self.len() + 1);
        for (part, states) in [(Part::Front, &self.front), (Part::Back, &self.back)] {
            for pane in states {
                batches.push(state::label(pane.clone(), part)?);
            }
        }
        if let Some(merged) = &self.back_merged {
            batches.push(state::label(merged.clone(), Part::BackMerged)?);
        }
        Ok(batches)
    }

    /// Stacks rebuilt from [`TwoStacks::snapshot`]'s batches.
    pub fn restore(batches: Vec<RecordBatch>) -> Result<Self> {
        let mut stacks = Self::default();
        for batch in batches {
            let part = state::part_of(&batch)?;
            let batch = state::unlabel(batch)?;
            match part {
                Part::Front => stacks.front.push(batch),
                Part::Back => stacks.back.push(batch),
                Part::BackMerged => stacks.back_merged = Some(batch),
                other => {
                    return Err(BrookError::Internal(format!(
                        "a window's stacked panes hold a '{other}' state"
                    )));
                }
            }
        }
        Ok(stacks)
    }
}
