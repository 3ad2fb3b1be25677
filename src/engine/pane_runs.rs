//! Merged runs of event-time panes, so that closing a `HOP` window merges
//! two states whatever its number of panes: the two-stacks scheme, kept
//! correct for panes that still change.
//!
//! A split point `split` lies inside the windows being closed. `suffix[p]`
//! is panes `p..split` merged, `prefix[p]` panes `split..=p` merged; a
//! window `[a, b)` with `a < split <= b` is `suffix[first pane >= a]` and
//! `prefix[last pane < b]`. Windows close in order of their start, so one
//! split serves `size / slide` windows; when a window starts at or after
//! it, the split moves to that window's end and the runs are built again
//! (lazily, one merge per pane: one per closing window, amortised).
//!
//! A pane that changes (rows on time for a window still open) drops the
//! runs that hold it: the suffixes at or below it, or the prefixes at or
//! above it. Valid suffixes are thus always an upper set of the panes
//! below `split`, and valid prefixes a lower set of those above it, and a
//! missing run is merged from its neighbour.
//!
//! Runs are derived state: never checkpointed, rebuilt after a restore.
//! They hold at most two states per pane of the windows being closed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::TaskContext;

use super::reduce;
use super::split::IncrementalPlan;
use crate::error::Result;
use crate::query::Retained;

/// Windows of fewer panes than this are merged pane by pane (a `TUMBLE`
/// is one pane): one final aggregate over a few panes costs less than the
/// merges that keep runs (measured: a 12-pane HOP was no faster with
/// runs); runs pay for themselves from here.
const FEWEST_PANES: usize = 16;

/// Sets a pane's window columns to one value, so that the same group in
/// different panes merges into one row (a window's own bounds are set
/// when it is finished).
pub(crate) type ClearWindowKeys = dyn Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync;

#[derive(Default)]
pub(crate) struct PaneRuns {
    /// The greatest window start asked for: runs serve windows asked for
    /// in order of their start, as they close; a window before it (`EMIT
    /// ON UPDATE` showing the open windows again) merges its panes.
    last_start: Option<i64>,
    split: Option<i64>,
    suffix: BTreeMap<i64, RecordBatch>,
    prefix: BTreeMap<i64, RecordBatch>,
}

impl PaneRuns {
    /// Pane `pane` was added or changed: the runs holding it go.
    pub fn changed(&mut self, pane: i64) {
        let Some(split) = self.split else {
            return;
        };
        if pane < split {
            // Keep the suffixes above the pane.
            self.suffix = self.suffix.split_off(&pane.saturating_add(1));
        } else {
            let _above = self.prefix.split_off(&pane);
        }
    }

    /// The panes before `pane` are gone.
    pub fn drop_before(&mut self, pane: i64) {
        self.suffix = self.suffix.split_off(&pane);
        if self.split.is_some_and(|split| split <= pane) {
            self.clear_runs();
        }
    }

    /// Forgets every run (after a restore).
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Forgets the runs, not the order of the windows asked for.
    fn clear_runs(&mut self) {
        self.split = None;
        self.suffix.clear();
        self.prefix.clear();
    }

    /// Adds the runs' states to `held`.
    pub fn account(&self, held: &mut Retained) {
        self.suffix
            .values()
            .chain(self.prefix.values())
            .for_each(|state| held.add(state));
    }

    /// The states whose merge is the window over the panes starting in
    /// `window` (of `panes`): two runs, or the panes themselves when the
    /// window has few or comes out of order.
    pub async fn window_states(
        &mut self,
        panes: &BTreeMap<i64, RecordBatch>,
        window: Range<i64>,
        plan: &IncrementalPlan,
        task_ctx: &Arc<TaskContext>,
        clear: &ClearWindowKeys,
    ) -> Result<Vec<RecordBatch>> {
        let starts: Vec<i64> = panes
            .range(window.clone())
            .map(|(start, _)| *start)
            .collect();
        let in_order = self.last_start.is_none_or(|last| last <= window.start);
        self.last_start = Some(
            self.last_start
                .map_or(window.start, |last| last.max(window.start)),
        );
        if starts.len() < FEWEST_PANES || !in_order {
            return Ok(starts.iter().map(|start| panes[start].clone()).collect());
        }
        let split = match self.split {
            Some(split) if window.start < split && split <= window.end => split,
            _ => {
                self.clear_runs();
                self.split = Some(window.end);
                window.end
            }
        };
        let mut states = Vec::with_capacity(2);
        if let Some(&first) = starts.first().filter(|first| **first < split) {
            states.push(
                self.suffix_at(panes, first, split, (plan, task_ctx), clear)
                    .await?,
            );
        }
        if let Some(&last) = starts.last().filter(|last| **last >= split) {
            states.push(
                self.prefix_at(panes, last, split, (plan, task_ctx), clear)
                    .await?,
            );
        }
        Ok(states)
    }

    /// Panes `first..split` merged, merging the missing suffixes from the
    /// lowest one held downwards.
    async fn suffix_at(
        &mut self,
        panes: &BTreeMap<i64, RecordBatch>,
        first: i64,
        split: i64,
        (plan, task_ctx): (&IncrementalPlan, &Arc<TaskContext>),
        clear: &ClearWindowKeys,
    ) -> Result<RecordBatch> {
        if let Some(state) = self.suffix.get(&first) {
            return Ok(state.clone());
        }
        let (top, mut above) = match self.suffix.first_key_value() {
            Some((&lowest, state)) => (lowest, Some(state.clone())),
            None => (split, None),
        };
        let missing: Vec<i64> = panes
            .range(first..top)
            .map(|(start, _)| *start)
            .rev()
            .collect();
        for start in missing {
            let pane = clear(&panes[&start])?;
            let merged = match above {
                None => pane,
                Some(above) => reduce(plan, vec![pane, above], task_ctx).await?,
            };
            self.suffix.insert(start, merged.clone());
            above = Some(merged);
        }
        Ok(self.suffix[&first].clone())
    }

    /// Panes `split..=last` merged, merging the missing prefixes from the
    /// highest one held upwards.
    async fn prefix_at(
        &mut self,
        panes: &BTreeMap<i64, RecordBatch>,
        last: i64,
        split: i64,
        (plan, task_ctx): (&IncrementalPlan, &Arc<TaskContext>),
        clear: &ClearWindowKeys,
    ) -> Result<RecordBatch> {
        if let Some(state) = self.prefix.get(&last) {
            return Ok(state.clone());
        }
        let (from, mut below) = match self.prefix.last_key_value() {
            Some((&highest, state)) => (highest.saturating_add(1), Some(state.clone())),
            None => (split, None),
        };
        let missing: Vec<i64> = panes.range(from..=last).map(|(start, _)| *start).collect();
        for start in missing {
            let pane = clear(&panes[&start])?;
            let merged = match below {
                None => pane,
                Some(below) => reduce(plan, vec![below, pane], task_ctx).await?,
            };
            self.prefix.insert(start, merged.clone());
            below = Some(merged);
        }
        Ok(self.prefix[&last].clone())
    }
}
