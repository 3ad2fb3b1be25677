//! Running a window query batch by batch: what it retains, when it emits,
//! and the two ways it computes a window (incremental or recompute).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, BooleanArray, TimestampMillisecondArray, new_null_array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::incremental::{IncrementalPlan, WindowBound};
use super::{OutputMode, SlidingWindow, WindowKind, window_time_type};
use crate::error::{BrookError, Result};
use crate::query::BatchSlot;

/// What a window query holds between batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// Micro-batches the query still needs (raw, or as partial aggregates).
    pub batches: usize,
    /// Rows held: raw rows, or rows of partial aggregate state (one per
    /// group per pane).
    pub rows: usize,
    /// Memory held by those rows, in bytes.
    pub bytes: usize,
}

/// The window a result covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowBounds {
    /// `window_start`: the start of the window's time range.
    pub start: DateTime<Utc>,
    /// `window_end`: the end of the window's time range.
    pub end: DateTime<Utc>,
    /// The first and last batch (numbers within the query) in the window.
    pub batches: (u64, u64),
}

/// One result of a window query.
#[derive(Debug)]
pub(crate) struct Emission {
    pub batches: Vec<RecordBatch>,
    pub window: Option<WindowBounds>,
}

/// A window (or running aggregate) query in progress.
pub(crate) struct WindowedQuery {
    kind: WindowKind,
    engine: Engine,
    task_ctx: Arc<TaskContext>,
    batches_seen: u64,
    last_emitted: u64,
    last_time: Option<DateTime<Utc>>,
}

enum Engine {
    /// Keeps the raw batches of the window and re-runs the plan over them.
    Recompute {
        plan: Arc<dyn ExecutionPlan>,
        /// Each scan's input (index into a tick's inputs) and slot.
        scans: Vec<(usize, Arc<BatchSlot>)>,
        /// Per retained batch, the batches of every input.
        retained: VecDeque<Vec<Vec<RecordBatch>>>,
    },
    /// Aggregates each batch into a pane of partial state and merges panes.
    Incremental {
        plan: Box<IncrementalPlan>,
        input: usize,
        scan: Arc<BatchSlot>,
        panes: Panes,
    },
}

enum Panes {
    Sliding(TwoStacks),
    /// The state since the query started: one row per group.
    Running(Option<RecordBatch>),
}

impl WindowedQuery {
    /// Prepares a window query over `plan`, whose scans read window slots.
    /// Tries the incremental path unless `incremental` is false; a running
    /// aggregate must be incremental.
    pub fn prepare(
        kind: WindowKind,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        scans: Vec<(usize, Arc<BatchSlot>)>,
        incremental: bool,
    ) -> Result<Self> {
        let split = incremental_plan(&kind, scans.len(), &plan);
        let engine = match (split, &kind) {
            (Ok(split), _) if incremental || matches!(kind, WindowKind::Running(_)) => {
                let (input, scan) = scans
                    .into_iter()
                    .next()
                    .ok_or_else(|| BrookError::Internal("a window query without a scan".into()))?;
                let panes = match kind {
                    WindowKind::Sliding(_) => Panes::Sliding(TwoStacks::default()),
                    WindowKind::Running(_) => Panes::Running(None),
                };
                Engine::Incremental {
                    plan: Box::new(split),
                    input,
                    scan,
                    panes,
                }
            }
            (Err(reason), WindowKind::Running(_)) => {
                return Err(BrookError::invalid(format!(
                    "RUNNING needs a GROUP BY query whose aggregates merge (COUNT, SUM, MIN, MAX, AVG, ...); here {reason}"
                )));
            }
            _ => Engine::Recompute {
                plan,
                scans,
                retained: VecDeque::new(),
            },
        };
        Ok(Self {
            kind,
            engine,
            task_ctx,
            batches_seen: 0,
            last_emitted: 0,
            last_time: None,
        })
    }

    /// The result schema.
    pub fn schema(&self) -> SchemaRef {
        match &self.engine {
            Engine::Recompute { plan, .. } => plan.schema(),
            Engine::Incremental { plan, .. } => plan.finish.schema(),
        }
    }

    /// What the query holds now.
    pub fn retained(&self) -> Retained {
        let mut held = Retained::default();
        let mut add = |batch: &RecordBatch| {
            held.rows += batch.num_rows();
            held.bytes += batch.get_array_memory_size();
        };
        match &self.engine {
            Engine::Recompute { retained, .. } => {
                for batch in retained.iter().flatten().flatten() {
                    add(batch);
                }
                held.batches = retained.len();
            }
            Engine::Incremental { panes, .. } => match panes {
                Panes::Sliding(stacks) => {
                    stacks.states().for_each(&mut add);
                    held.batches = stacks.len();
                }
                Panes::Running(state) => {
                    if let Some(state) = state {
                        add(state);
                    }
                    held.batches = usize::from(state.is_some());
                }
            },
        }
        held
    }

    /// Takes the next batch (the batches of each input, cut at `time`);
    /// returns a result when the batch completes a window.
    pub async fn on_batch(
        &mut self,
        inputs: &[Vec<RecordBatch>],
        time: DateTime<Utc>,
    ) -> Result<Option<Emission>> {
        self.batches_seen += 1;
        self.last_time = Some(time);
        let window = match &self.kind {
            WindowKind::Running(mode) => {
                let mode = *mode;
                return self.on_running_batch(inputs, mode).await.map(Some);
            }
            WindowKind::Sliding(window) => window.clone(),
        };
        self.add(inputs).await?;
        let size = window.size_batches() as usize;
        self.evict_to(size).await?;
        if self.batches_seen.is_multiple_of(window.slide_batches()) {
            let emission = self.emit(&window, time, self.batches_seen).await?;
            self.after_emit(&window).await?;
            return Ok(Some(emission));
        }
        Ok(None)
    }

    /// At the end of the streams: the window holding the last batches, if
    /// they were not yet emitted. Its bounds are the window's nominal ones
    /// (it ends at the next slide); the windows that would follow, with
    /// ever fewer batches, are not emitted.
    pub async fn flush(&mut self) -> Result<Option<Emission>> {
        let (WindowKind::Sliding(window), Some(last_time)) = (&self.kind, self.last_time) else {
            return Ok(None);
        };
        let window = window.clone();
        let seen = self.batches_seen;
        if seen == self.last_emitted {
            return Ok(None);
        }
        let slide = window.slide_batches();
        let boundary = seen.div_ceil(slide) * slide;
        let missing = boundary - seen;
        // The window ending at the boundary starts `missing` batches later
        // than the one ending now.
        self.evict_to((window.size_batches() - missing.min(window.size_batches())) as usize)
            .await?;
        let end = last_time
            + chrono::Duration::from_std(window.interval * missing as u32).unwrap_or_default();
        let emission = self.emit(&window, end, boundary).await?;
        self.last_emitted = seen;
        Ok(Some(emission))
    }

    /// Adds one batch to what the window holds.
    async fn add(&mut self, inputs: &[Vec<RecordBatch>]) -> Result<()> {
        match &mut self.engine {
            Engine::Recompute { retained, .. } => {
                retained.push_back(inputs.to_vec());
                Ok(())
            }
            Engine::Incremental {
                plan,
                input,
                scan,
                panes: Panes::Sliding(stacks),
            } => {
                let pane = partial(plan, scan, &inputs[*input], &self.task_ctx, true).await?;
                stacks.push(pane, plan, &self.task_ctx).await
            }
            Engine::Incremental { .. } => Ok(()),
        }
    }

    /// Drops the oldest batches until `keep` remain.
    async fn evict_to(&mut self, keep: usize) -> Result<()> {
        match &mut self.engine {
            Engine::Recompute { retained, .. } => {
                while retained.len() > keep {
                    retained.pop_front();
                }
                Ok(())
            }
            Engine::Incremental {
                plan,
                panes: Panes::Sliding(stacks),
                ..
            } => stacks.evict_to(keep, plan, &self.task_ctx).await,
            Engine::Incremental { .. } => Ok(()),
        }
    }

    /// After a window is emitted, the batches no later window needs go.
    async fn after_emit(&mut self, window: &SlidingWindow) -> Result<()> {
        self.last_emitted = self.batches_seen;
        let keep = window.size_batches().saturating_sub(window.slide_batches());
        self.evict_to(keep as usize).await
    }

    /// Computes the window that ends at `end` with batch `last_batch`.
    async fn emit(
        &mut self,
        window: &SlidingWindow,
        end: DateTime<Utc>,
        last_batch: u64,
    ) -> Result<Emission> {
        let start = end - chrono::Duration::from_std(window.size).unwrap_or_default();
        let bounds = WindowBounds {
            start,
            end,
            batches: (
                last_batch.saturating_sub(window.size_batches()) + 1,
                last_batch,
            ),
        };
        let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
        let batches = match &mut self.engine {
            Engine::Recompute {
                plan,
                scans,
                retained,
            } => {
                for (input, slot) in scans.iter() {
                    let schema = Arc::clone(slot.schema_ref());
                    let batches = retained
                        .iter()
                        .flat_map(|per_input| per_input[*input].iter())
                        .map(|batch| with_window(batch, &schema, Some((start_ms, end_ms))))
                        .collect::<Result<Vec<_>>>()?;
                    slot.set(batches);
                }
                let result = run(plan, &self.task_ctx).await;
                for (_, slot) in scans.iter() {
                    slot.set(Vec::new());
                }
                result?
            }
            Engine::Incremental {
                plan,
                panes: Panes::Sliding(stacks),
                ..
            } => {
                let states = stacks
                    .window_states()
                    .map(|state| fill_window_keys(state, &plan.window_keys, start_ms, end_ms))
                    .collect::<Result<Vec<_>>>()?;
                plan.finish_input.set(states);
                let result = run(&plan.finish, &self.task_ctx).await;
                plan.finish_input.set(Vec::new());
                result?
            }
            Engine::Incremental { .. } => {
                return Err(BrookError::Internal(
                    "a running aggregate has no windows".into(),
                ));
            }
        };
        Ok(Emission {
            batches,
            window: Some(bounds),
        })
    }

    /// A running aggregate: merges the batch into the state and emits every
    /// group (complete) or the groups the batch touched (update).
    async fn on_running_batch(
        &mut self,
        inputs: &[Vec<RecordBatch>],
        mode: OutputMode,
    ) -> Result<Emission> {
        let Engine::Incremental {
            plan,
            input,
            scan,
            panes: Panes::Running(state),
        } = &mut self.engine
        else {
            return Err(BrookError::Internal(
                "a running aggregate is always incremental".into(),
            ));
        };
        let pane = partial(plan, scan, &inputs[*input], &self.task_ctx, false).await?;
        let merged = match state.take() {
            None => pane.clone(),
            Some(previous) => reduce(plan, vec![previous, pane.clone()], &self.task_ctx).await?,
        };
        let shown = match mode {
            OutputMode::Complete => merged.clone(),
            OutputMode::Update => touched_groups(&merged, &pane, plan.group_columns)?,
        };
        *state = Some(merged);
        plan.finish_input.set(vec![shown]);
        let result = run(&plan.finish, &self.task_ctx).await;
        plan.finish_input.set(Vec::new());
        Ok(Emission {
            batches: result?,
            window: None,
        })
    }
}

/// The incremental form of a window query's `plan` with `scans` stream
/// scans, or why it has none.
pub(crate) fn incremental_plan(
    kind: &WindowKind,
    scans: usize,
    plan: &Arc<dyn ExecutionPlan>,
) -> std::result::Result<IncrementalPlan, String> {
    match kind {
        // A window of one batch is the batch: re-running the plan on it
        // costs less than a partial and a final aggregate (measured in
        // benches/window.rs).
        WindowKind::Sliding(window) if window.size_batches() == 1 => {
            Err("a window of one batch".to_string())
        }
        _ if scans != 1 => Err("the query reads more than one window scan".to_string()),
        _ => {
            let plan = crate::exec::restore_aggregates(plan).map_err(|e| e.to_string())?;
            super::incremental::split(&plan)
        }
    }
}

/// Runs a cached plan once more.
async fn run(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    let plan = reset_plan_states(Arc::clone(plan))?;
    Ok(collect(plan, Arc::clone(task_ctx)).await?)
}

/// Aggregates one batch into a pane of partial state.
async fn partial(
    plan: &IncrementalPlan,
    scan: &BatchSlot,
    batches: &[RecordBatch],
    task_ctx: &Arc<TaskContext>,
    windowed: bool,
) -> Result<RecordBatch> {
    let schema = Arc::clone(scan.schema_ref());
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
    scan.set(input);
    let result = run(&plan.partial, task_ctx).await;
    scan.set(Vec::new());
    Ok(concat_batches(&plan.partial.schema(), &result?)?)
}

/// Merges panes into one.
async fn reduce(
    plan: &IncrementalPlan,
    panes: Vec<RecordBatch>,
    task_ctx: &Arc<TaskContext>,
) -> Result<RecordBatch> {
    plan.reduce_input.set(panes);
    let result = run(&plan.reduce, task_ctx).await;
    plan.reduce_input.set(Vec::new());
    Ok(concat_batches(&plan.reduce.schema(), &result?)?)
}

/// `batch` with the window columns appended: the window's bounds, or
/// nulls while the window is not known yet.
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

/// A merged pane with its window-bound group keys set to this window's.
fn fill_window_keys(
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

/// A FIFO of panes that answers "all panes merged" with at most two merges
/// per batch, amortised, however many panes it holds (the two-stacks
/// sliding aggregation). `front` holds merged suffixes of the older panes,
/// the oldest pane's suffix last; `back` holds the newer panes one by one
/// and `back_merged` all of them merged.
#[derive(Default)]
struct TwoStacks {
    front: Vec<RecordBatch>,
    back: Vec<RecordBatch>,
    back_merged: Option<RecordBatch>,
}

impl TwoStacks {
    fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    /// Every state held, for accounting.
    fn states(&self) -> impl Iterator<Item = &RecordBatch> {
        self.front
            .iter()
            .chain(self.back.iter())
            .chain(self.back_merged.iter())
    }

    /// The (at most two) states whose merge is the whole window.
    fn window_states(&self) -> impl Iterator<Item = &RecordBatch> {
        self.front.last().into_iter().chain(self.back_merged.iter())
    }

    async fn push(
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

    async fn evict_to(
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
}
