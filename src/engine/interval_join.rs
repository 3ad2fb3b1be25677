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

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    new_null_array,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::JoinType;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;

use super::event_clock::{LateRoute, filter_times};
use super::join_bounds::{JoinMatch, JoinSite, TimeBounds};
use super::join_side::{Side, SideClock};
use super::run;
use super::run_on;
use super::state;
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::END_OF_TIME;
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, EventReport, MicroBatch};

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
        let preserved = preserved_sides(site.join_type)?;
        let [left, right] = site.sides;
        let [left_clock, right_clock] = clocks;
        let sides = [
            Side::new(left, left_clock, preserved[0]),
            Side::new(right, right_clock, preserved[1]),
        ];
        let (left_slot, left_scan) = BatchSlot::with_scan(&sides[0].with_ids)?;
        let (right_slot, right_scan) = BatchSlot::with_scan(&sides[1].with_ids)?;
        let core = inner_join(site.matching, site.filter, left_scan, right_scan)?;
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
                self.sides[side].record_matches(batch.column(column))?;
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
        let gone = self.sides[side].evict(horizon)?;
        gone.iter()
            .map(|rows| self.with_nulls(side, rows))
            .collect()
    }

    /// Side `side`'s `rows` (with their ids) with NULLs for the other
    /// side, in the join node's schema.
    fn with_nulls(&self, side: usize, rows: &RecordBatch) -> Result<RecordBatch> {
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
        self.as_join_output(columns)
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

/// Which sides keep their unmatched rows (left, right).
fn preserved_sides(join_type: JoinType) -> Result<[bool; 2]> {
    match join_type {
        JoinType::Inner => Ok([false, false]),
        JoinType::Left => Ok([true, false]),
        JoinType::Right => Ok([false, true]),
        JoinType::Full => Ok([true, true]),
        other => Err(BrookError::invalid(format!(
            "an interval join is INNER, LEFT, RIGHT or FULL OUTER; this one is {other}"
        ))),
    }
}

/// The inner join of the two scans with the query's keys and filter:
/// the pairs, every column of both sides (ids included).
fn inner_join(
    matching: JoinMatch,
    filter: Option<datafusion::physical_plan::joins::utils::JoinFilter>,
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(match matching {
        JoinMatch::Hash { on, null_equality } => Arc::new(HashJoinExec::try_new(
            left,
            right,
            on,
            filter,
            &JoinType::Inner,
            None,
            PartitionMode::CollectLeft,
            null_equality,
            false,
        )?),
        JoinMatch::NestedLoop => Arc::new(NestedLoopJoinExec::try_new(
            left,
            right,
            filter,
            &JoinType::Inner,
            None,
        )?),
    })
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
    let allowed = (plan.is::<ProjectionExec>()
        || plan.is::<FilterExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<SortExec>())
        && plan.fetch().is_none();
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
            self.sides[0].declared,
            self.sides[1].declared,
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
        let new_left = self.sides[0].read(raw_left, &self.task_ctx).await?;
        let new_right = self.sides[1].read(raw_right, &self.task_ctx).await?;
        let mut output = Vec::new();
        if let Some(left) = &new_left {
            let mut right = self.sides[1].held_rows();
            right.extend(new_right.iter().map(|h| h.rows.clone()));
            output.extend(self.pairs(vec![left.rows.clone()], right).await?);
        }
        if let Some(right) = &new_right {
            let left = self.sides[0].held_rows();
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
            side.count(&mut held);
        }
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = self.sides[0].snapshot(0)?;
        batches.extend(self.sides[1].snapshot(1)?);
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for side in &mut self.sides {
            side.clear();
        }
        for batch in batches {
            let part = state::part_of(&batch)?;
            let index = match part {
                state::Part::JoinClock { side }
                | state::Part::JoinRows { side }
                | state::Part::JoinMatched { side } => side,
                other => {
                    return Err(BrookError::Internal(format!(
                        "an interval join's state holds a '{other}' part"
                    )));
                }
            };
            let side = self.sides.get_mut(index).ok_or_else(|| {
                BrookError::Internal(format!("an interval join's state names side {index}"))
            })?;
            side.restore(part, batch)?;
        }
        Ok(())
    }
}
