//! One side of an interval join: its stream's watermark, its plan below
//! the join, and the rows it holds (after that plan, each with an id, so
//! that the rows that matched are known), freed once the other stream's
//! watermark says they can match nothing more.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, min, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::event_clock::filter_times;
use super::join_bounds::SideSite;
use super::run_on;
use super::state::{self, Part};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::{WatermarkClock, event_millis};
use crate::query::Retained;

/// The column of row ids a side's held rows carry (last, after the side's
/// own columns).
const ROW_ID: &str = "__brook_row";

/// What the planner gives a side: its stream, the stream's schema and
/// watermark clock, and how `EXPLAIN` shows the watermark.
pub(crate) struct SideClock {
    pub stream: String,
    /// The stream's schema (its rows as read).
    pub schema: SchemaRef,
    pub clock: WatermarkClock,
    pub declared: String,
}

/// Rows a side holds (with their ids) and their event times.
pub(crate) struct Held {
    pub rows: RecordBatch,
    pub times: TimestampMillisecondArray,
}

/// One side of the join.
pub(crate) struct Side {
    pub stream: String,
    /// The stream's schema, as its rows are read.
    pub raw_schema: SchemaRef,
    /// The stream's index among the batch's inputs.
    pub input: usize,
    pub clock: WatermarkClock,
    pub declared: String,
    child: Arc<dyn ExecutionPlan>,
    child_slot: Arc<BatchSlot>,
    /// The column of the child's output holding the event time plus an
    /// offset (milliseconds).
    time: (usize, i64),
    /// The child's schema plus [`ROW_ID`].
    pub with_ids: SchemaRef,
    pub held: Vec<Held>,
    next_id: u64,
    /// Ids of held rows that matched (kept for preserved sides only).
    matched: HashSet<u64>,
    /// Whether an unmatched row of this side is emitted with NULLs.
    pub preserved: bool,
}

impl Side {
    pub fn new(site: SideSite, clock: SideClock, preserved: bool) -> Self {
        let with_ids = with_row_ids(&site.child.schema());
        Self {
            stream: clock.stream,
            raw_schema: clock.schema,
            input: site.input,
            clock: clock.clock,
            declared: clock.declared,
            child: site.child,
            child_slot: site.slot,
            time: site.time,
            with_ids,
            held: Vec::new(),
            next_id: 0,
            matched: HashSet::new(),
            preserved,
        }
    }

    /// `raw` (the stream's on-time rows of a batch) through the side's plan
    /// below the join, with ids; `None` when no row is left.
    pub async fn read(
        &mut self,
        raw: Vec<RecordBatch>,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Option<Held>> {
        if raw.is_empty() {
            return Ok(None);
        }
        let out = run_on(&self.child, &self.child_slot, raw, task_ctx).await?;
        let rows = concat_batches(&self.child.schema(), &out)?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let count = rows.num_rows() as u64;
        let ids = UInt64Array::from_iter_values(self.next_id..self.next_id + count);
        self.next_id += count;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(ids));
        let rows = RecordBatch::try_new(Arc::clone(&self.with_ids), columns)?;
        let times = time_of(&rows, self.time)?;
        Ok(Some(Held { rows, times }))
    }

    /// The held rows, as record batches.
    pub fn held_rows(&self) -> Vec<RecordBatch> {
        self.held.iter().map(|held| held.rows.clone()).collect()
    }

    /// Records the ids in `column` (of pairs just made) as matched.
    pub fn record_matches(&mut self, column: &ArrayRef) -> Result<()> {
        if self.preserved {
            self.matched
                .extend(ids_of(column)?.values().iter().copied());
        }
        Ok(())
    }

    /// Drops the held rows before `horizon`; returns those that never
    /// matched (with their ids), when the side is preserved.
    pub fn evict(&mut self, horizon: i64) -> Result<Vec<RecordBatch>> {
        let mut unmatched = Vec::new();
        let held = std::mem::take(&mut self.held);
        for chunk in held {
            if min(&chunk.times).is_some_and(|earliest| earliest >= horizon) {
                self.held.push(chunk);
                continue;
            }
            let keep: BooleanArray = chunk
                .times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= horizon)))
                .collect();
            if self.preserved {
                let gone = filter_record_batch(&chunk.rows, &not(&keep)?)?;
                unmatched.extend(self.never_matched(&gone)?);
            }
            if keep.true_count() > 0 {
                self.held.push(Held {
                    rows: filter_record_batch(&chunk.rows, &keep)?,
                    times: filter_times(&chunk.times, &keep)?,
                });
            }
        }
        Ok(unmatched)
    }

    /// The rows of `gone` that never matched; their ids are forgotten.
    fn never_matched(&mut self, gone: &RecordBatch) -> Result<Option<RecordBatch>> {
        let ids = ids_of(gone.column(gone.num_columns() - 1))?;
        let never: BooleanArray = ids
            .values()
            .iter()
            .map(|id| Some(!self.matched.remove(id)))
            .collect();
        if never.true_count() == 0 {
            return Ok(None);
        }
        Ok(Some(filter_record_batch(gone, &never)?))
    }

    /// Counts what the side holds into `held`.
    pub fn count(&self, held: &mut Retained) {
        let mut rows = 0;
        for chunk in &self.held {
            held.add(&chunk.rows);
            held.batches += 1;
            rows += chunk.rows.num_rows();
        }
        held.by_stream.push((self.stream.clone(), rows));
    }

    /// The side's clock, held rows and matched ids, labelled as side
    /// `index`'s.
    pub fn snapshot(&self, index: usize) -> Result<Vec<RecordBatch>> {
        let mut batches = vec![state::label(
            self.clock.snapshot()?,
            Part::JoinClock { side: index },
        )?];
        for chunk in &self.held {
            batches.push(state::label(
                chunk.rows.clone(),
                Part::JoinRows { side: index },
            )?);
        }
        let matched = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::UInt64, false)])),
            vec![Arc::new(UInt64Array::from_iter_values(
                self.matched.iter().copied(),
            ))],
        )?;
        batches.push(state::label(matched, Part::JoinMatched { side: index })?);
        Ok(batches)
    }

    /// Forgets what the side holds, before a restore.
    pub fn clear(&mut self) {
        self.held.clear();
        self.matched.clear();
        self.next_id = 0;
    }

    /// Takes one part of a snapshot of this side.
    pub fn restore(&mut self, part: Part, batch: RecordBatch) -> Result<()> {
        match part {
            Part::JoinClock { .. } => self.clock.restore(&batch),
            Part::JoinRows { .. } => {
                let rows = RecordBatch::try_new(
                    Arc::clone(&self.with_ids),
                    state::unlabel(batch)?.columns().to_vec(),
                )?;
                let ids = ids_of(rows.column(rows.num_columns() - 1))?;
                if let Some(last) = ids.values().iter().max() {
                    self.next_id = self.next_id.max(last + 1);
                }
                let times = time_of(&rows, self.time)?;
                self.held.push(Held { rows, times });
                Ok(())
            }
            Part::JoinMatched { .. } => {
                let ids = ids_of(batch.column(0))?;
                self.matched.extend(ids.values().iter().copied());
                Ok(())
            }
            other => Err(BrookError::Internal(format!(
                "an interval join's side holds a '{other}' part"
            ))),
        }
    }
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
