//! The interval join of two streams in event time: each side holds the
//! rows that can still match, each pair is emitted once (in the batch that
//! reads its second row), and a row of a preserved side (`LEFT`, `RIGHT`,
//! `FULL`) that never matched is emitted once with NULLs when it leaves the
//! state, in the batch after which the other stream's watermark passes the
//! last time a partner could have.
//!
//! DataFusion does the joining: the query's plan is cut at its join node
//! ([`super::join_bounds`]); each side's plan below the join runs once on
//! the side's new rows; an inner join of the same keys and filter runs on
//! new rows against held ones (rows carry an id, so that matched rows are
//! known); the plan above the join runs on the pairs and unmatched rows.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array, new_null_array,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, min};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::JoinType;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};

use super::event_clock::{LateRoute, filter_times};
use super::join_bounds::{JoinMatch, JoinSite, TimeBounds};
use super::state::{self, Part};
use super::{run, run_on};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::{END_OF_TIME, WatermarkClock, event_millis};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, EventReport, MicroBatch};

/// The column of row ids a side's held rows carry (last, after the side's
/// own columns).
const ROW_ID: &str = "__brook_row";

/// One side of the join: its plan below the join, its watermark and the
/// rows it holds.
pub(crate) struct Side {
    stream: String,
    /// The stream's schema, as its rows are read.
    raw_schema: SchemaRef,
    /// The stream's index among the batch's inputs.
    input: usize,
    clock: WatermarkClock,
    child: Arc<dyn ExecutionPlan>,
    child_slot: Arc<BatchSlot>,
    /// The column of the child's output holding the event time plus an
    /// offset (milliseconds).
    time: (usize, i64),
    /// The child's schema plus [`ROW_ID`].
    with_ids: SchemaRef,
    held: Vec<Held>,
    next_id: u64,
    /// Ids of held rows that matched (kept for preserved sides only).
    matched: HashSet<u64>,
    /// Whether an unmatched row of this side is emitted with NULLs.
    preserved: bool,
}

/// Rows a side holds (with their ids) and their event times.
struct Held {
    rows: RecordBatch,
    times: TimestampMillisecondArray,
}

/// What builds an [`IntervalJoinEngine`] besides the plan.
pub(crate) struct SideClock {
    pub stream: String,
    /// The stream's schema (its rows as read).
    pub schema: SchemaRef,
    pub clock: WatermarkClock,
    pub declared: String,
}

/// An interval join query.
pub(crate) struct IntervalJoinEngine {
    sides: [Side; 2],
    core: Arc<dyn ExecutionPlan>,
    core_slots: [Arc<BatchSlot>; 2],
    top: Arc<dyn ExecutionPlan>,
    top_slot: Arc<BatchSlot>,
    /// The join node's output schema, which the plan above reads.
    join_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    bounds: TimeBounds,
    join_type: JoinType,
    task_ctx: Arc<TaskContext>,
    declared: [String; 2],
    /// Where late rows go (`LATE DATA TO`).
    late: Option<LateRoute>,
}

impl IntervalJoinEngine {
    /// The engine for `site`, found in `physical`; `clocks` are the two
    /// sides' (physical left first).
    pub fn new(
        physical: &Arc<dyn ExecutionPlan>,
        site: JoinSite,
        clocks: [SideClock; 2],
        late: Option<LateRoute>,
        task_ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        check_above(physical, &site.node)?;
        let join_schema = site.node.schema();
        let (top_slot, top_scan) = BatchSlot::with_scan(&join_schema)?;
        let top = super::split::replace(physical, &site.node, &top_scan)?;
        let preserved = match site.join_type {
            JoinType::Inner => [false, false],
            JoinType::Left => [true, false],
            JoinType::Right => [false, true],
            JoinType::Full => [true, true],
            other => {
                return Err(BrookError::invalid(format!(
                    "an interval join is INNER, LEFT, RIGHT or FULL OUTER; this one is {other}"
                )));
            }
        };
        let [left, right] = site.sides;
        let [left_clock, right_clock] = clocks;
        let declared = [left_clock.declared.clone(), right_clock.declared.clone()];
        let make_side = |site: super::join_bounds::SideSite, clock: SideClock, preserved| {
            let with_ids = with_row_ids(&site.child.schema());
            Side {
                stream: clock.stream,
                raw_schema: clock.schema,
                input: site.input,
                clock: clock.clock,
                child: site.child,
                child_slot: site.slot,
                time: site.time,
                with_ids,
                held: Vec::new(),
                next_id: 0,
                matched: HashSet::new(),
                preserved,
            }
        };
        let sides = [
            make_side(left, left_clock, preserved[0]),
            make_side(right, right_clock, preserved[1]),
        ];
        let (left_slot, left_scan) = BatchSlot::with_scan(&sides[0].with_ids)?;
        let (right_slot, right_scan) = BatchSlot::with_scan(&sides[1].with_ids)?;
        let core: Arc<dyn ExecutionPlan> = match site.matching {
            JoinMatch::Hash { on, null_equality } => Arc::new(HashJoinExec::try_new(
                left_scan,
                right_scan,
                on,
                site.filter,
                &JoinType::Inner,
                None,
                PartitionMode::CollectLeft,
                null_equality,
                false,
            )?),
            JoinMatch::NestedLoop => Arc::new(NestedLoopJoinExec::try_new(
                left_scan,
                right_scan,
                site.filter,
                &JoinType::Inner,
                None,
            )?),
        };
        Ok(Self {
            sides,
            core,
            core_slots: [left_slot, right_slot],
            top,
            top_slot,
            join_schema,
            projection: site.projection,
            bounds: site.bounds,
            join_type: site.join_type,
            task_ctx,
            declared,
            late,
        })
    }

    /// The event time before which side `side`'s rows can match nothing
    /// more: the other side's watermark minus the bound (`None`: keep all).
    fn horizon(&self, side: usize) -> Option<i64> {
        let other = self.sides[1 - side].clock.current()?;
        if other == END_OF_TIME {
            return Some(END_OF_TIME);
        }
        match side {
            0 => self.bounds.hi.map(|hi| other.saturating_sub(hi)),
            _ => self.bounds.lo.map(|lo| other.saturating_add(lo)),
        }
    }

    /// Whether a row of `side` at `time` can match no row the other side
    /// holds, given the horizons `horizons` (before the batch).
    fn no_partner_held(&self, side: usize, time: i64, horizons: [Option<i64>; 2]) -> bool {
        let other = horizons[1 - side];
        match side {
            0 => {
                matches!((self.bounds.hi, other), (Some(hi), Some(h)) if time.saturating_add(hi) < h)
            }
            _ => {
                matches!((self.bounds.lo, other), (Some(lo), Some(h)) if time.saturating_sub(lo) < h)
            }
        }
    }

    /// Splits side `side`'s rows of `batch` into the on-time ones and
    /// counts the late ones (behind their side's horizon, with no partner
    /// held, or without an event time).
    fn on_time_rows(
        &mut self,
        side: usize,
        batch: &MicroBatch,
        horizons: [Option<i64>; 2],
        report: &mut EventReport,
    ) -> Result<Vec<RecordBatch>> {
        let input = self.sides[side].input;
        let mut kept = Vec::new();
        for rows in batch.inputs.get(input).into_iter().flatten() {
            if rows.num_rows() == 0 {
                continue;
            }
            let times = self.sides[side].clock.event_times(0, rows)?;
            let late: BooleanArray = times
                .iter()
                .map(|time| {
                    Some(match time {
                        None => true,
                        Some(t) => {
                            horizons[side].is_some_and(|h| t < h)
                                && self.no_partner_held(side, t, horizons)
                        }
                    })
                })
                .collect();
            let late_count = late.true_count();
            let (rows, times) = if late_count == 0 {
                (rows.clone(), times)
            } else {
                report.late_rows += late_count as u64;
                self.route_late(side, rows, &times, &late, report)?;
                let keep = datafusion::arrow::compute::not(&late)?;
                (
                    filter_record_batch(rows, &keep)?,
                    filter_times(&times, &keep)?,
                )
            };
            if rows.num_rows() > 0 {
                let clock = &mut self.sides[side].clock;
                report.far_future_rows += clock.observe_rows(0, &rows, &times, batch.time);
                kept.push(rows);
            }
        }
        Ok(kept)
    }

    /// Sends side `side`'s rows of `rows` that `late` marks where `LATE
    /// DATA TO` says: the side's columns, NULLs for the other's, and how
    /// far behind the side's watermark they were.
    fn route_late(
        &self,
        side: usize,
        rows: &RecordBatch,
        times: &TimestampMillisecondArray,
        late: &BooleanArray,
        report: &mut EventReport,
    ) -> Result<()> {
        let Some(route) = &self.late else {
            return Ok(());
        };
        let rows = filter_record_batch(rows, late)?;
        let times = filter_times(times, late)?;
        let n = rows.num_rows();
        let watermark = self.sides[side].clock.current();
        let own: Vec<ArrayRef> = rows.columns().to_vec();
        let other: Vec<ArrayRef> = self.sides[1 - side]
            .raw_schema
            .fields()
            .iter()
            .map(|field| new_null_array(field.data_type(), n))
            .collect();
        let (first, second) = if side == 0 {
            (own, other)
        } else {
            (other, own)
        };
        let lateness: Int64Array = times
            .iter()
            .map(|time| Some(watermark?.saturating_sub(time?)))
            .collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![
            self.sides[side]
                .stream
                .as_str();
            n
        ]))];
        columns.extend(first);
        columns.extend(second);
        columns.push(Arc::new(lateness));
        route.send(
            RecordBatch::try_new(Arc::clone(&route.schema), columns)?,
            report,
        );
        Ok(())
    }

    /// Side `side`'s new rows through its plan below the join, with ids.
    async fn new_rows(&mut self, side: usize, raw: Vec<RecordBatch>) -> Result<Option<Held>> {
        if raw.is_empty() {
            return Ok(None);
        }
        let side = &mut self.sides[side];
        let out = run_on(&side.child, &side.child_slot, raw, &self.task_ctx).await?;
        let rows = concat_batches(&side.child.schema(), &out)?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let ids =
            UInt64Array::from_iter_values(side.next_id..side.next_id + rows.num_rows() as u64);
        side.next_id += rows.num_rows() as u64;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(ids));
        let rows = RecordBatch::try_new(Arc::clone(&side.with_ids), columns)?;
        let times = time_of(&rows, side.time)?;
        Ok(Some(Held { rows, times }))
    }

    /// The pairs of `left` and `right` rows, in the join node's schema;
    /// the matched rows' ids are recorded.
    async fn pairs(
        &mut self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        if left.iter().all(|b| b.num_rows() == 0) || right.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        self.core_slots[0].set(left);
        self.core_slots[1].set(right);
        let result = run(&self.core, &self.task_ctx).await;
        self.core_slots[0].clear();
        self.core_slots[1].clear();
        let left_width = self.sides[0].with_ids.fields().len();
        let mut out = Vec::new();
        for batch in result? {
            if batch.num_rows() == 0 {
                continue;
            }
            let id_columns = [left_width - 1, batch.num_columns() - 1];
            for (side, column) in id_columns.into_iter().enumerate() {
                if self.sides[side].preserved {
                    let ids = ids_of(batch.column(column))?;
                    self.sides[side]
                        .matched
                        .extend(ids.values().iter().copied());
                }
            }
            let columns: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .enumerate()
                .filter(|(index, _)| !id_columns.contains(index))
                .map(|(_, column)| Arc::clone(column))
                .collect();
            out.push(self.as_join_output(columns)?);
        }
        Ok(out)
    }

    /// `columns` (the left side's, then the right's) as the join node
    /// outputs them: projected, in its schema.
    fn as_join_output(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let columns = match &self.projection {
            None => columns,
            Some(projection) => projection
                .iter()
                .map(|i| Arc::clone(&columns[*i]))
                .collect(),
        };
        Ok(RecordBatch::try_new(
            Arc::clone(&self.join_schema),
            columns,
        )?)
    }

    /// Drops side `side`'s rows before its horizon; returns the dropped
    /// rows that never matched, with NULLs for the other side, when the
    /// side is preserved.
    fn evict(&mut self, side: usize) -> Result<Vec<RecordBatch>> {
        let Some(horizon) = self.horizon(side) else {
            return Ok(Vec::new());
        };
        let mut unmatched = Vec::new();
        let held = std::mem::take(&mut self.sides[side].held);
        let mut kept = Vec::with_capacity(held.len());
        for chunk in held {
            if min(&chunk.times).is_some_and(|earliest| earliest >= horizon) {
                kept.push(chunk);
                continue;
            }
            let keep: BooleanArray = chunk
                .times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= horizon)))
                .collect();
            let gone = datafusion::arrow::compute::not(&keep)?;
            let gone_rows = filter_record_batch(&chunk.rows, &gone)?;
            if self.sides[side].preserved {
                unmatched.extend(self.unmatched(side, &gone_rows)?);
            }
            if keep.true_count() > 0 {
                kept.push(Held {
                    rows: filter_record_batch(&chunk.rows, &keep)?,
                    times: filter_times(&chunk.times, &keep)?,
                });
            }
        }
        self.sides[side].held = kept;
        Ok(unmatched)
    }

    /// The rows of `gone` (of side `side`, with ids) that never matched,
    /// with NULLs for the other side, in the join node's schema.
    fn unmatched(&mut self, side: usize, gone: &RecordBatch) -> Result<Option<RecordBatch>> {
        let ids = ids_of(gone.column(gone.num_columns() - 1))?;
        let matched = &mut self.sides[side].matched;
        let never: BooleanArray = ids
            .values()
            .iter()
            .map(|id| Some(!matched.remove(id)))
            .collect();
        if never.true_count() == 0 {
            return Ok(None);
        }
        let rows = filter_record_batch(gone, &never)?;
        let own: Vec<ArrayRef> = rows.columns()[..rows.num_columns() - 1].to_vec();
        let other = &self.sides[1 - side].with_ids;
        let nulls: Vec<ArrayRef> = other.fields()[..other.fields().len() - 1]
            .iter()
            .map(|field| new_null_array(field.data_type(), rows.num_rows()))
            .collect();
        let columns = if side == 0 {
            own.into_iter().chain(nulls).collect()
        } else {
            nulls.into_iter().chain(own).collect()
        };
        self.as_join_output(columns).map(Some)
    }

    /// The plan above the join over `rows`.
    async fn finish(&self, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        run_on(&self.top, &self.top_slot, rows, &self.task_ctx).await
    }

    /// The watermark a batch reports: the smaller of the two.
    fn watermark(&self) -> Option<i64> {
        Some(
            self.sides[0]
                .clock
                .current()?
                .min(self.sides[1].clock.current()?),
        )
    }

    fn side_name(&self, side: usize) -> &str {
        &self.sides[side].stream
    }

    fn bound_text(bound: Option<i64>) -> String {
        bound.map_or_else(|| "unbounded".to_string(), |ms| format!("{ms} ms"))
    }
}

/// "their time + 2000 ms", "their time - 1000 ms", "their time".
fn their_time(shift: i64) -> String {
    match shift {
        0 => "their time".to_string(),
        s if s > 0 => format!("their time + {s} ms"),
        s => format!("their time - {} ms", s.unsigned_abs()),
    }
}

/// Refuses what the join's result cannot go through per batch: anything
/// above the join but projections, filters and sorts.
fn check_above(plan: &Arc<dyn ExecutionPlan>, join: &Arc<dyn ExecutionPlan>) -> Result<()> {
    if Arc::ptr_eq(plan, join) {
        return Ok(());
    }
    let allowed = matches!(
        plan.name(),
        "ProjectionExec" | "FilterExec" | "CoalesceBatchesExec" | "CooperativeExec" | "SortExec"
    ) && plan.fetch().is_none();
    if !allowed {
        return Err(BrookError::invalid(format!(
            "an interval join's pairs can be projected, filtered and sorted; {} above the join (an aggregate, a LIMIT, another join) is not supported yet",
            plan.name()
        )));
    }
    for child in plan.children() {
        check_above(child, join)?;
    }
    Ok(())
}

/// `schema` with a row-id column after its own.
fn with_row_ids(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_ID, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// A column of row ids.
fn ids_of(column: &ArrayRef) -> Result<&UInt64Array> {
    column
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| BrookError::Internal("a join's row ids are not UInt64".into()))
}

/// The event times of rows whose column `time.0` holds the event time
/// plus `time.1` milliseconds.
fn time_of(rows: &RecordBatch, time: (usize, i64)) -> Result<TimestampMillisecondArray> {
    let times = event_millis(rows, time.0)?;
    Ok(if time.1 == 0 {
        times
    } else {
        times.unary(|t| t.saturating_sub(time.1))
    })
}

#[async_trait]
impl BatchEngine for IntervalJoinEngine {
    fn schema(&self) -> SchemaRef {
        self.top.schema()
    }

    fn describe(&self) -> String {
        let (left, right) = (self.side_name(0), self.side_name(1));
        let kind = match self.join_type {
            JoinType::Left => "LEFT JOIN",
            JoinType::Right => "RIGHT JOIN",
            JoinType::Full => "FULL JOIN",
            _ => "JOIN",
        };
        let (lo, hi) = (
            Self::bound_text(self.bounds.lo),
            Self::bound_text(self.bounds.hi),
        );
        let mut emit = "emit: each pair once, in the batch that reads its second row".to_string();
        if self.sides[0].preserved {
            emit.push_str(&format!(
                "; an unmatched {left} row once, with NULLs, in the batch after which the {right} watermark passes {}",
                self.bounds.hi.map_or_else(|| "the end of that stream".to_string(), their_time)
            ));
        }
        if self.sides[1].preserved {
            emit.push_str(&format!(
                "; an unmatched {right} row once, with NULLs, in the batch after which the {left} watermark passes {}",
                self.bounds.lo.map_or_else(|| "the end of that stream".to_string(), |lo| their_time(-lo))
            ));
        }
        let held = |side: usize, other: &str| {
            let shift = match side {
                0 => self.bounds.hi,
                _ => self.bounds.lo.map(|lo| -lo),
            };
            match shift {
                None => format!(
                    "{} rows until the {other} stream ends (no bound closes them)",
                    self.side_name(side)
                ),
                Some(shift) => format!(
                    "{} rows until the {other} watermark passes {}",
                    self.side_name(side),
                    their_time(shift)
                ),
            }
        };
        format!(
            "interval join (event time): {left} {kind} {right}: a pair when {right} time - {left} time is in [{lo}, {hi}] (and the rest of ON)\n{emit}\nheld: {}; {}\nwatermark: {left}: {}; {right}: {}\nlate rows (behind their stream's bound, with no partner still held): {}",
            held(0, right),
            held(1, left),
            self.declared[0],
            self.declared[1],
            match &self.late {
                Some(route) => format!(
                    "counted and sent to stream '{}' with the stream they came from and lateness_ms",
                    route.stream
                ),
                None => "counted and skipped".to_string(),
            }
        )
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let horizons = [self.horizon(0), self.horizon(1)];
        let mut report = EventReport::default();
        let raw_left = self.on_time_rows(0, batch, horizons, &mut report)?;
        let raw_right = self.on_time_rows(1, batch, horizons, &mut report)?;
        let new_left = self.new_rows(0, raw_left).await?;
        let new_right = self.new_rows(1, raw_right).await?;
        let rows_of = |held: &[Held]| held.iter().map(|h| h.rows.clone()).collect::<Vec<_>>();
        let mut output = Vec::new();
        if let Some(left) = &new_left {
            let mut right = rows_of(&self.sides[1].held);
            right.extend(new_right.iter().map(|h| h.rows.clone()));
            output.extend(self.pairs(vec![left.rows.clone()], right).await?);
        }
        if let Some(right) = &new_right {
            let left = rows_of(&self.sides[0].held);
            output.extend(self.pairs(left, vec![right.rows.clone()]).await?);
        }
        self.sides[0].held.extend(new_left);
        self.sides[1].held.extend(new_right);
        for side in &mut self.sides {
            let ended = batch.ended.get(side.input).copied().unwrap_or(false);
            side.clock.advance(batch.time, &[ended]);
        }
        output.extend(self.evict(0)?);
        output.extend(self.evict(1)?);
        report.watermark = self.watermark();
        Ok(Some(Emission {
            batches: self.finish(output).await?,
            window: None,
            event: Some(report),
        }))
    }

    /// Every stream ended: the held rows that never matched, with NULLs.
    async fn on_end(&mut self) -> Result<Option<Emission>> {
        if let Some(route) = &self.late {
            route.end();
        }
        for side in &mut self.sides {
            side.clock.advance(chrono::Utc::now(), &[true]);
        }
        let mut output = self.evict(0)?;
        output.extend(self.evict(1)?);
        if output.is_empty() {
            return Ok(None);
        }
        Ok(Some(Emission {
            batches: self.finish(output).await?,
            window: None,
            event: Some(EventReport {
                watermark: self.watermark(),
                ..EventReport::default()
            }),
        }))
    }

    /// A stop before the end emits nothing: the held rows are in the
    /// checkpoint.
    async fn on_stop(&mut self) -> Result<Option<Emission>> {
        Ok(None)
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        for side in &self.sides {
            let mut rows = 0;
            for chunk in &side.held {
                held.add(&chunk.rows);
                held.batches += 1;
                rows += chunk.rows.num_rows();
            }
            held.by_stream.push((side.stream.clone(), rows));
        }
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for (index, side) in self.sides.iter().enumerate() {
            batches.push(state::label(
                side.clock.snapshot()?,
                Part::JoinClock { side: index },
            )?);
            for chunk in &side.held {
                batches.push(state::label(
                    chunk.rows.clone(),
                    Part::JoinRows { side: index },
                )?);
            }
            let matched = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("id", DataType::UInt64, false)])),
                vec![Arc::new(UInt64Array::from_iter_values(
                    side.matched.iter().copied(),
                ))],
            )?;
            batches.push(state::label(matched, Part::JoinMatched { side: index })?);
        }
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for side in &mut self.sides {
            side.held.clear();
            side.matched.clear();
            side.next_id = 0;
        }
        for batch in batches {
            let part = state::part_of(&batch)?;
            let index = match part {
                Part::JoinClock { side } | Part::JoinRows { side } | Part::JoinMatched { side } => {
                    side
                }
                other => {
                    return Err(BrookError::Internal(format!(
                        "an interval join's state holds a '{other}' part"
                    )));
                }
            };
            let side = self.sides.get_mut(index).ok_or_else(|| {
                BrookError::Internal(format!("an interval join's state names side {index}"))
            })?;
            match part {
                Part::JoinClock { .. } => side.clock.restore(&batch)?,
                Part::JoinRows { .. } => {
                    let rows = RecordBatch::try_new(
                        Arc::clone(&side.with_ids),
                        state::unlabel(batch)?.columns().to_vec(),
                    )?;
                    let ids = ids_of(rows.column(rows.num_columns() - 1))?;
                    if let Some(last) = ids.values().iter().max() {
                        side.next_id = side.next_id.max(last + 1);
                    }
                    let times = time_of(&rows, side.time)?;
                    side.held.push(Held { rows, times });
                }
                _ => {
                    let ids = ids_of(batch.column(0))?;
                    side.matched.extend(ids.values().iter().copied());
                }
            }
        }
        Ok(())
    }
}
