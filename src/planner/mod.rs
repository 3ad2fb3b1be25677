//! Planning a statement: whether it is continuous (decided from the streams
//! its logical plan reads, before any optimizer runs), which engine runs it,
//! its physical plan (built once, with the operators that engine can use),
//! and brook's part of `EXPLAIN`.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionContext;

use crate::catalog::stream_table::{BatchSlot, BoundScan, QueryBindings, StreamTable};
use crate::catalog::windows::{
    EventShape, EventWindow, OutputMode, SlidingWindow, WindowKind, format_duration,
};
use crate::engine::event_clock::{EventClock, LateRoute, late_schema};
use crate::engine::event_window::EventHopEngine;
use crate::engine::panes::{IncrementalPanes, RowPanes};
use crate::engine::per_batch::{PerBatchEngine, PlanVariant};
use crate::engine::running::RunningEngine;
use crate::engine::session::SessionEngine;
use crate::engine::sliding::SlidingEngine;
use crate::engine::split;
use crate::engine::stacked::StackedPanes;
use crate::error::{BrookError, Result};
use crate::event_time::EventTime;
use crate::event_time::watermark::WatermarkClock;
use crate::exec::PlanShape;
use crate::query::engine::BatchEngine;
use crate::redact::redact_secrets;
use crate::sql::StreamClauses;

mod changelog;
mod join;

/// Batches of at least this many rows run on a plan over all cores; smaller
/// ones on one partition, where repartitioning costs more than it saves.
const PARALLEL_BATCH_ROWS: usize = 50_000;

/// What the planner needs of the context.
pub(crate) struct Planner<'a> {
    pub session: &'a SessionContext,
    pub batch_interval: Duration,
    /// Whether windows may merge partial aggregates (`SET incremental_windows`).
    pub incremental_windows: bool,
    /// The registered streams (for their event-time declarations).
    pub streams: &'a crate::catalog::StreamMap,
    /// `EMIT ON ...` and `LATE DATA TO ...` given with the statement.
    pub clauses: &'a StreamClauses,
}

/// What a continuous plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// To be started.
    Run,
    /// To be shown by `EXPLAIN`.
    Explain,
}

/// Whether `plan` reads a stream, without planning it.
pub(crate) fn reads_streams(plan: &LogicalPlan) -> Result<bool> {
    Ok(!stream_reads(plan)?.is_empty())
}

/// A continuous query, planned and ready to start.
pub(crate) struct ContinuousPlan {
    /// The streams it reads, in the order of a batch's inputs.
    pub streams: Vec<String>,
    pub engine: Box<dyn BatchEngine>,
    /// brook's part of `EXPLAIN`: the trigger, the engine and what it keeps.
    pub description: String,
    /// The physical plan the engine runs (for `EXPLAIN`).
    pub physical: Arc<dyn ExecutionPlan>,
    /// The optimized logical plan (for `EXPLAIN`).
    pub logical: LogicalPlan,
    /// Where late rows go (`LATE DATA TO`), once the stream exists.
    pub late_route: Option<LateRoute>,
    /// What starting the query tells the user (a join of the same batch
    /// only).
    pub notices: Vec<String>,
}

/// A stream scan found in a logical plan.
struct StreamRead {
    stream: String,
    window: Option<WindowKind>,
}

/// The streams `plan` reads (with the window of each read), in the order
/// they appear, through subqueries and views. Optimizers have not run, so
/// a scan that a later rule removes (`WHERE 1 = 0`) still counts: whether a
/// statement is continuous depends on what it reads, not on what survives.
fn stream_reads(plan: &LogicalPlan) -> Result<Vec<StreamRead>> {
    let mut reads = Vec::new();
    collect_reads(plan, &mut reads)?;
    Ok(reads)
}

fn collect_reads(plan: &LogicalPlan, reads: &mut Vec<StreamRead>) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
        {
            if let Some(table) = provider.downcast_ref::<StreamTable>() {
                reads.push(StreamRead {
                    stream: table.name.clone(),
                    window: table.window.clone(),
                });
            } else if let Some(view) = provider.get_logical_plan() {
                collect_reads(&view, reads)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// Refuses a statement that reads `stream` but is not a query: its
/// results would have nowhere to go batch after batch.
pub(crate) fn check_readable(plan: &LogicalPlan) -> Result<()> {
    let what = match plan {
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Dml(_) => "INSERT INTO a table",
        LogicalPlan::Ddl(datafusion::logical_expr::DdlStatement::CreateMemoryTable(_)) => {
            "CREATE TABLE AS"
        }
        _ => return Ok(()),
    };
    if let Some(read) = stream_reads(plan)?.first() {
        return Err(BrookError::invalid(format!(
            "stream '{}' can only be read by a continuous query: {what} would run once per batch and keep only the last; to write a stream's results, use CREATE SINK name WITH (connector = 'file', path = '...') AS SELECT ...",
            read.stream
        )));
    }
    Ok(())
}

impl Planner<'_> {
    /// Plans `plan` as a continuous query if it reads a stream; `None` when
    /// it reads none (it then runs once).
    pub async fn plan_continuous(
        &self,
        plan: &LogicalPlan,
        purpose: Purpose,
    ) -> Result<Option<ContinuousPlan>> {
        let reads = stream_reads(plan)?;
        if reads.is_empty() {
            return Ok(None);
        }
        let mut streams = distinct_streams(&reads);
        let window = window_of(&reads)?;
        // LATE DATA TO without a window may be an interval join's: that
        // is known once the plan is.
        let late_only = self.clauses.emit.is_none() && window.is_none();
        if !self.clauses.is_empty() && !matches!(window, Some(WindowKind::Event(_))) && !late_only {
            return Err(clauses_misplaced());
        }
        let shape = self.shape_of(window.as_ref());
        let mut planned = self.physical_plan(plan, shape, 1).await?;
        let scans = index_scans(&streams, std::mem::take(&mut planned.bound));
        if !planned.lookups.is_empty() && window.is_some() {
            return Err(BrookError::invalid(format!(
                "a lookup join (table '{}') runs per batch: it cannot be read inside HOP, TUMBLE, SESSION or RUNNING yet; join the stream with the table in a query of its own, written to a stream, and window that",
                planned.lookups[0].lookup.name
            )));
        }
        let changelog = self.changelog_read(plan, &streams, window.as_ref())?;
        if let Some(plan) =
            self.temporal_join_plan(&planned, &scans, &mut streams, window.as_ref())?
        {
            return Ok(Some(plan));
        }
        let head = format!(
            "continuous query over {} (trigger interval {})",
            streams.join(", "),
            format_duration(self.batch_interval)
        );
        // The planner only chooses the engine; each engine is built from
        // the plan and says itself how it runs (`describe`).
        let mut notices = Vec::new();
        let (engine, late_route): (Box<dyn BatchEngine>, Option<LateRoute>) = match window {
            None => {
                self.unwindowed_engine(plan, &planned, scans, &streams, purpose, &mut notices)
                    .await?
            }
            Some(WindowKind::Running(mode)) => (
                running_engine(mode, &planned, window_scans(scans), changelog)?,
                None,
            ),
            Some(WindowKind::Sliding(window)) => (
                sliding_engine(window, &planned, shape, window_scans(scans)),
                None,
            ),
            Some(WindowKind::Event(window)) => {
                self.event_engine(window, &streams, &planned, shape, window_scans(scans))?
            }
        };
        let same_batch = if notices.is_empty() {
            ""
        } else {
            "\njoin: rows of the same batch only (no bound on the streams' event times)"
        };
        Ok(Some(ContinuousPlan {
            streams,
            description: format!("{head}\n{}{same_batch}", engine.describe()),
            notices,
            engine,
            physical: Arc::clone(&planned.physical),
            logical: planned.logical,
            late_route,
        }))
    }

    /// A query without a window: its plan per batch and, for large
    /// batches, a plan over every core.
    async fn per_batch_engine(
        &self,
        plan: &LogicalPlan,
        planned: &Planned,
        scans: Vec<(usize, Vec<Arc<BatchSlot>>)>,
        streams: &[String],
        purpose: Purpose,
    ) -> Box<dyn BatchEngine> {
        let first = PlanVariant {
            plan: Arc::clone(&planned.physical),
            task_ctx: planned.state.task_ctx(),
            min_rows: 0,
            scans,
        };
        // The parallel plan is an optimisation: if it cannot be planned,
        // every batch runs on the single-partition plan.
        let parallel = match purpose {
            // Lookups fill the one plan's table scans.
            Purpose::Run if planned.lookups.is_empty() => {
                self.parallel_variant(plan, streams).await.ok().flatten()
            }
            Purpose::Run => None,
            // EXPLAIN shows the plan small batches run; the all-cores
            // variant would be planned for nothing.
            Purpose::Explain => None,
        };
        Box::new(PerBatchEngine::new(first, parallel))
    }

    /// The engine of an event-time window query and where its late rows
    /// go.
    fn event_engine(
        &self,
        window: EventWindow,
        streams: &[String],
        planned: &Planned,
        shape: PlanShape,
        scans: Vec<(usize, Arc<BatchSlot>)>,
    ) -> Result<(Box<dyn BatchEngine>, Option<LateRoute>)> {
        let EventInputs {
            inputs,
            mut declared,
            source_schema,
        } = self.event_inputs(streams)?;
        let late_route = self.late_route(streams, source_schema)?;
        let emit = self.clauses.emit.unwrap_or_default();
        let clock = self.watermark_clock(streams, inputs, &mut declared);
        let shape_of_window = window.shape;
        let events = EventClock::new(window, emit, clock, late_route.clone(), declared.join("; "));
        let task_ctx = planned.state.task_ctx();
        let split = match shape {
            PlanShape::Executed => Err("SET incremental_windows = false".to_string()),
            PlanShape::Split => split_one_scan(&planned.physical, &scans),
        };
        let engine = event_window_engine(
            events,
            shape_of_window,
            split,
            task_ctx,
            &planned.physical,
            scans,
        )?;
        Ok((engine, late_route))
    }

    /// The event time of each of `streams`, which must all declare one.
    fn event_inputs(&self, streams: &[String]) -> Result<EventInputs> {
        let mut inputs = Vec::with_capacity(streams.len());
        let mut declared = Vec::new();
        let mut source_schema = None;
        for name in streams {
            let stream = self.streams.read().get(name).cloned().ok_or_else(|| {
                BrookError::Internal(format!("stream '{name}' was planned but is not registered"))
            })?;
            let Some(event_time) = stream.event_time() else {
                return Err(BrookError::invalid(format!(
                    "stream '{name}' declares no event time, and an event-time window reads every stream of its query"
                )));
            };
            let column = event_time.column_index(name, &stream.schema)?;
            declared.push(format!("{name}: {}", event_time.describe()));
            inputs.push((event_time, column));
            source_schema = Some(Arc::clone(&stream.schema));
        }
        Ok(EventInputs {
            inputs,
            declared,
            source_schema,
        })
    }

    /// Where `LATE DATA TO` sends the late rows of a query of `streams`
    /// (rows of `source_schema`), if it was given.
    fn late_route(
        &self,
        streams: &[String],
        source_schema: Option<SchemaRef>,
    ) -> Result<Option<LateRoute>> {
        match (&self.clauses.late_data_to, source_schema) {
            (None, _) => Ok(None),
            (Some(target), Some(schema)) if streams.len() == 1 => Ok(Some(LateRoute {
                stream: target.clone(),
                schema: late_schema(&schema),
                inbox: Arc::new(std::sync::OnceLock::new()),
            })),
            (Some(_), _) => Err(BrookError::invalid(
                "LATE DATA TO applies to a query that reads one stream",
            )),
        }
    }

    /// The watermarks of `streams`' event times (`inputs`). A Kafka stream
    /// that declares `_partition` keeps a watermark per partition, which is
    /// added to `declared`.
    pub(super) fn watermark_clock(
        &self,
        streams: &[String],
        inputs: Vec<(EventTime, usize)>,
        declared: &mut Vec<String>,
    ) -> WatermarkClock {
        let mut clock = WatermarkClock::new(inputs);
        for (input, name) in streams.iter().enumerate() {
            if let Some(stream) = self.streams.read().get(name)
                && stream.source.connector() == "kafka"
                && let Ok(column) = stream.schema.index_of("_partition")
                && stream.schema.field(column).data_type().is_integer()
            {
                clock.partition_by(input, column);
                declared.push(format!(
                    "{name}: one watermark per Kafka partition (_partition)"
                ));
            }
        }
        clock
    }

    /// A session state for planning a query of `shape` over `partitions`,
    /// which records the query's stream scans in `bindings`.
    fn state(
        &self,
        shape: PlanShape,
        partitions: usize,
        bindings: &Arc<QueryBindings>,
    ) -> SessionState {
        let mut state = SessionStateBuilder::new_from_existing(self.session.state())
            .with_physical_optimizer_rules(crate::exec::optimizer_rules(shape))
            .build();
        state.config_mut().options_mut().execution.target_partitions = partitions;
        state.config_mut().set_extension(Arc::clone(bindings));
        state
    }

    /// Optimizes and physically plans `plan` once.
    async fn physical_plan(
        &self,
        plan: &LogicalPlan,
        shape: PlanShape,
        partitions: usize,
    ) -> Result<Planned> {
        let bindings = Arc::new(QueryBindings::default());
        let state = self.state(shape, partitions, &bindings);
        let logical = state.optimize(plan)?;
        let physical = state
            .query_planner()
            .create_physical_plan(&logical, &state)
            .await?;
        Ok(Planned {
            bound: bindings.take(),
            lookups: bindings.take_lookups(),
            versioned: bindings.take_versioned(),
            physical,
            logical,
            state,
        })
    }

    /// A second physical plan of `plan` over all cores, for batches of at
    /// least [`PARALLEL_BATCH_ROWS`] rows; `None` on a single core.
    async fn parallel_variant(
        &self,
        plan: &LogicalPlan,
        streams: &[String],
    ) -> Result<Option<PlanVariant>> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if cores < 2 {
            return Ok(None);
        }
        let planned = self.physical_plan(plan, PlanShape::Executed, cores).await?;
        Ok(Some(PlanVariant {
            plan: planned.physical,
            task_ctx: planned.state.task_ctx(),
            min_rows: PARALLEL_BATCH_ROWS,
            scans: index_scans(streams, planned.bound),
        }))
    }
}

/// The streams `reads` names, each once, in order.
fn distinct_streams(reads: &[StreamRead]) -> Vec<String> {
    let mut streams: Vec<String> = Vec::new();
    for read in reads {
        if !streams.contains(&read.stream) {
            streams.push(read.stream.clone());
        }
    }
    streams
}

impl Planner<'_> {
    /// Whether a query with `window` runs on a split plan (partial
    /// aggregates merged) or executes its plan.
    fn shape_of(&self, window: Option<&WindowKind>) -> PlanShape {
        match window {
            Some(WindowKind::Running(_)) => PlanShape::Split,
            Some(WindowKind::Event(_)) if self.incremental_windows => PlanShape::Split,
            Some(WindowKind::Sliding(w)) if self.incremental_windows && w.size_batches() > 1 => {
                PlanShape::Split
            }
            _ => PlanShape::Executed,
        }
    }
}

/// One physical planning of a query.
struct Planned {
    bound: Vec<BoundScan>,
    /// The scans of versioned tables (an event-time temporal join).
    versioned: Vec<crate::catalog::stream_table::BoundVersioned>,
    /// The scans of lookup tables.
    lookups: Vec<crate::catalog::stream_table::BoundLookup>,
    physical: Arc<dyn ExecutionPlan>,
    logical: LogicalPlan,
    state: SessionState,
}

/// Each bound scan's slots with the index of its stream in `streams`.
fn index_scans(
    streams: &[String],
    bound: Vec<BoundScan>,
) -> Vec<(usize, Vec<Arc<crate::catalog::stream_table::BatchSlot>>)> {
    bound
        .into_iter()
        .filter_map(|BoundScan { stream, slots }| {
            streams
                .iter()
                .position(|s| *s == stream)
                .map(|index| (index, slots))
        })
        .collect()
}

/// A window query's scans, one slot each: window queries run on one
/// partition.
fn window_scans(scans: Vec<(usize, Vec<Arc<BatchSlot>>)>) -> Vec<(usize, Arc<BatchSlot>)> {
    scans
        .into_iter()
        .filter_map(|(input, slots)| slots.into_iter().next().map(|slot| (input, slot)))
        .collect()
}

/// A plan split for incremental execution, with the one scan it reads.
type OneScanSplit = (split::IncrementalPlan, usize, Arc<BatchSlot>);

/// `physical` split for incremental execution, when it reads exactly one
/// window scan; else why not.
fn split_one_scan(
    physical: &Arc<dyn ExecutionPlan>,
    scans: &[(usize, Arc<BatchSlot>)],
) -> std::result::Result<OneScanSplit, String> {
    match scans {
        [(input, slot)] => Ok((split::split(physical)?, *input, Arc::clone(slot))),
        [] => Err("the query reads no rows of its stream".to_string()),
        _ if scans.iter().any(|(input, _)| *input != scans[0].0) => {
            Err("a window join of streams".to_string())
        }
        _ => Err("the query reads more than one window scan".to_string()),
    }
}

/// The event times an event-time query reads, one per stream.
struct EventInputs {
    /// Each stream's event time and the column it is read from.
    inputs: Vec<(EventTime, usize)>,
    /// What each stream declares, for `EXPLAIN`.
    declared: Vec<String>,
    /// The schema of the (last) stream, for the rows `LATE DATA TO` routes.
    source_schema: Option<SchemaRef>,
}

/// The engine of an event-time window of `shape`: over the query's plan
/// `split` at its aggregate, or else over its rows (`physical` run per
/// window), which a `SESSION` window cannot do.
fn event_window_engine(
    events: EventClock,
    shape: EventShape,
    split: std::result::Result<OneScanSplit, String>,
    task_ctx: Arc<TaskContext>,
    physical: &Arc<dyn ExecutionPlan>,
    scans: Vec<(usize, Arc<BatchSlot>)>,
) -> Result<Box<dyn BatchEngine>> {
    Ok(match (shape, split) {
        (EventShape::Session { gap }, Ok((split, _, slot))) => Box::new(
            SessionEngine::new(events, gap, split, task_ctx, slot).map_err(BrookError::invalid)?,
        ),
        (EventShape::Session { .. }, Err(reason)) => {
            return Err(BrookError::invalid(format!(
                "SESSION needs a GROUP BY window_start, window_end query whose aggregates merge (COUNT, SUM, MIN, MAX, AVG, ...) over row-by-row operators; here {reason}"
            )));
        }
        (EventShape::Hop { slide, size }, Ok((split, _, slot))) => Box::new(EventHopEngine::new(
            events,
            slide,
            size,
            IncrementalPanes::new(split, task_ctx, slot),
        )),
        (EventShape::Hop { slide, size }, Err(reason)) => Box::new(EventHopEngine::new(
            events,
            slide,
            size,
            RowPanes::new(Arc::clone(physical), task_ctx, scans, reason),
        )),
    })
}

/// A `RUNNING` query: merged into one state row per group, or, over a
/// changelog (its schema and key), taking rows back.
fn running_engine(
    mode: OutputMode,
    planned: &Planned,
    scans: Vec<(usize, Arc<BatchSlot>)>,
    changelog: Option<(SchemaRef, Vec<String>)>,
) -> Result<Box<dyn BatchEngine>> {
    if let Some((schema, key)) = changelog {
        return changelog::retracting_engine(mode, planned, scans, schema, &key);
    }
    let task_ctx = planned.state.task_ctx();
    if scans.is_empty() {
        // A plan that reads nothing of its stream (`WHERE false`) gives
        // the same result every batch.
        return Ok(Box::new(PerBatchEngine::constant(
            PlanVariant {
                plan: Arc::clone(&planned.physical),
                task_ctx,
                min_rows: 0,
                scans: Vec::new(),
            },
            WindowKind::Running(mode).to_string(),
        )));
    }
    let (split, input, slot) = split_one_scan(&planned.physical, &scans).map_err(|reason| {
        BrookError::invalid(format!(
            "RUNNING needs a GROUP BY query whose aggregates merge (COUNT, SUM, MIN, MAX, AVG, ...) over row-by-row operators; here {reason}"
        ))
    })?;
    Ok(Box::new(RunningEngine::new(
        mode, split, task_ctx, input, slot,
    )))
}

/// A `HOP` or `TUMBLE` query in processing time: panes of partial state
/// when its plan splits, else the window's raw batches re-run.
fn sliding_engine(
    window: SlidingWindow,
    planned: &Planned,
    shape: PlanShape,
    scans: Vec<(usize, Arc<BatchSlot>)>,
) -> Box<dyn BatchEngine> {
    let task_ctx = planned.state.task_ctx();
    let split = match shape {
        PlanShape::Split => split_one_scan(&planned.physical, &scans),
        PlanShape::Executed if window.size_batches() == 1 => {
            Err("a window of one batch".to_string())
        }
        PlanShape::Executed => Err("SET incremental_windows = false".to_string()),
    };
    match split {
        Ok((split, input, slot)) => Box::new(SlidingEngine::new(
            window,
            StackedPanes::new(split, task_ctx, input, slot),
        )),
        Err(reason) => Box::new(SlidingEngine::new(
            window,
            RowPanes::new(Arc::clone(&planned.physical), task_ctx, scans, reason),
        )),
    }
}

/// The window every stream read of a query goes through, if any. A query
/// reads all its streams through the same window, or none.
fn window_of(reads: &[StreamRead]) -> Result<Option<WindowKind>> {
    let Some(kind) = reads.iter().find_map(|read| read.window.clone()) else {
        return Ok(None);
    };
    for read in reads {
        match &read.window {
            Some(other) if *other == kind => {}
            Some(other) => {
                return Err(BrookError::invalid(format!(
                    "a query reads all its streams through the same window; here {kind} and {other}"
                )));
            }
            None => {
                return Err(BrookError::invalid(format!(
                    "stream '{}' is read without a window in a query with {kind}; read every stream through the same window",
                    read.stream
                )));
            }
        }
    }
    Ok(Some(kind))
}

/// `EXPLAIN`'s rows for a continuous query: brook's part, then the
/// optimized logical plan and the physical plan the engine runs.
pub(crate) fn explain_rows(plan: &ContinuousPlan) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let logical = plan.logical.display_indent().to_string();
    let physical = displayable(plan.physical.as_ref()).indent(true).to_string();
    let types: ArrayRef = Arc::new(StringArray::from(vec![
        "brook",
        "logical_plan",
        "physical_plan",
    ]));
    let texts: ArrayRef = Arc::new(StringArray::from(vec![
        redact_secrets(&plan.description),
        redact_secrets(&logical),
        redact_secrets(&physical),
    ]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![types, texts])?;
    Ok((schema, vec![batch]))
}

/// DataFusion's own `EXPLAIN` rows with credentials masked in their text
/// columns: a plan quotes a statement's literals whole.
pub(crate) fn redact_explained(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .map(|column| {
                    let data_type = column.data_type();
                    if !matches!(
                        data_type,
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    ) {
                        return Ok(Arc::clone(column));
                    }
                    let text = cast(column, &DataType::Utf8)?;
                    let masked: StringArray = text
                        .as_string::<i32>()
                        .iter()
                        .map(|value| value.map(redact_secrets))
                        .collect();
                    Ok(cast(&masked, data_type)?)
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

/// `EMIT` or `LATE DATA TO` where they do not apply.
fn clauses_misplaced() -> BrookError {
    BrookError::invalid(
        "EMIT ON ... and LATE DATA TO ... apply to event-time windows: TUMBLE(stream, time_column, size), HOP(stream, time_column, slide, size) or SESSION(stream, time_column, gap); LATE DATA TO also to an interval join of two streams",
    )
}
