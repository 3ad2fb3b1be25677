//! An event-time temporal join: a stream joined with a table kept current
//! from a changelog that declares an event time (`WATERMARK FOR`), each
//! stream row meeting the table's rows as they were at the row's event
//! time (Flink's join with a versioned table, `FOR SYSTEM_TIME AS OF
//! o.ts`).
//!
//! The query reads the table's changelog itself and keeps, per key, the
//! versions its rows went through (from the table's rows when the query
//! started). A stream row waits until the watermarks of both the stream
//! and the table have passed its event time, so that every version it
//! could meet has arrived; then the query's plan runs over the waiting
//! rows, once per stretch of event time in which the table did not
//! change, with the table's scan holding its rows as of that time.
//! Versions a row can no longer meet (older than the last version before
//! the watermark) are dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::run;
use crate::catalog::stream_table::BatchSlot;
use crate::changelog::Op;
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, MicroBatch};

/// Where an input's event time is, and how far its watermark stays behind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventColumn {
    pub column: usize,
    pub delay_ms: i64,
}

/// A key's versions: each change's time and the row it made current.
type KeyVersions = BTreeMap<i64, Option<Box<[u8]>>>;

/// The table's versions, per key: each change's event time and the row it
/// made current (`None`: deleted), in the table's declared columns.
struct Versions {
    keys: RowConverter,
    rows: RowConverter,
    key_columns: Vec<usize>,
    by_key: HashMap<Box<[u8]>, KeyVersions>,
    schema: SchemaRef,
}

impl Versions {
    fn new(schema: SchemaRef, key_columns: Vec<usize>) -> Result<Self> {
        let field = |c: usize| SortField::new(schema.field(c).data_type().clone());
        Ok(Self {
            keys: RowConverter::new(key_columns.iter().map(|&c| field(c)).collect())?,
            rows: RowConverter::new((0..schema.fields().len()).map(field).collect())?,
            key_columns,
            by_key: HashMap::new(),
            schema,
        })
    }

    /// Records `rows` (declared columns) as versions at `times`; `deleted`
    /// says which rows are deletes.
    fn record(&mut self, rows: &RecordBatch, times: &[i64], deleted: &[bool]) -> Result<()> {
        let key_columns: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&c| Arc::clone(rows.column(c)))
            .collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let values = self.rows.convert_columns(rows.columns())?;
        for row in 0..rows.num_rows() {
            let version = (!deleted[row]).then(|| values.row(row).data().into());
            self.by_key
                .entry(keys.row(row).data().into())
                .or_default()
                .insert(times[row], version);
        }
        Ok(())
    }

    /// Every time at which some key's row changed, in order.
    fn change_times(&self) -> Vec<i64> {
        let mut times: Vec<i64> = self
            .by_key
            .values()
            .flat_map(|versions| versions.keys().copied())
            .collect();
        times.sort_unstable();
        times.dedup();
        times
    }

    /// The table's rows as they were at `time`.
    fn as_of(&self, time: i64) -> Result<RecordBatch> {
        let parser = self.rows.parser();
        let rows: Vec<_> = self
            .by_key
            .values()
            .filter_map(|versions| versions.range(..=time).next_back())
            .filter_map(|(_, row)| row.as_deref())
            .map(|row| parser.parse(row))
            .collect();
        let columns = self.rows.convert_rows(rows)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Drops the versions no row from `mark` on can meet: of each key, all
    /// but the last at or before `mark` (and that one too if a delete).
    fn drop_before(&mut self, mark: i64) {
        self.by_key.retain(|_, versions| {
            if let Some((&last, _)) = versions.range(..=mark).next_back() {
                let newer = versions.split_off(&last);
                *versions = newer;
                if versions.len() == 1 && versions.get(&last).is_some_and(Option::is_none) {
                    versions.clear();
                }
            }
            !versions.is_empty()
        });
    }

    fn len(&self) -> usize {
        self.by_key.values().map(BTreeMap::len).sum()
    }
}

/// A stream joined with a versioned table, in event time.
pub(crate) struct TemporalJoinEngine {
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// The stream's scan slots (one per partition).
    stream_slots: Vec<Arc<BatchSlot>>,
    /// The table's scan slot.
    table_slot: Arc<BatchSlot>,
    stream_time: EventColumn,
    /// In the changelog's columns (`op` first).
    table_time: EventColumn,
    versions: Versions,
    /// Stream rows waiting for the watermarks.
    held: Vec<RecordBatch>,
    stream_max: Option<i64>,
    table_max: Option<i64>,
    table_name: String,
}

impl TemporalJoinEngine {
    /// The join of `plan`, whose stream (input 0) is read by `stream_slots`
    /// and whose table (input 1, its changelog) by `table_slot`; the
    /// table's versions start from `current` (its rows now) and follow its
    /// changelog keyed by `key` (declared columns).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        stream_slots: Vec<Arc<BatchSlot>>,
        table_slot: Arc<BatchSlot>,
        (stream_time, table_time): (EventColumn, EventColumn),
        (table_name, key, current): (String, Vec<usize>, RecordBatch),
    ) -> Result<Self> {
        let mut versions = Versions::new(current.schema(), key)?;
        let rows = current.num_rows();
        versions.record(&current, &vec![i64::MIN; rows], &vec![false; rows])?;
        Ok(Self {
            plan,
            task_ctx,
            stream_slots,
            table_slot,
            stream_time,
            table_time,
            versions,
            held: Vec::new(),
            stream_max: None,
            table_max: None,
            table_name,
        })
    }

    /// Takes in the table's changes (changelog rows, `op` first).
    fn take_changes(&mut self, changes: &RecordBatch) -> Result<()> {
        if changes.num_rows() == 0 {
            return Ok(());
        }
        let ops = cast(changes.column(0), &DataType::Utf8)?;
        let ops = ops.as_string::<i32>();
        let times = millis(changes.column(self.table_time.column))?;
        let mut kept = Vec::new();
        let mut at = Vec::new();
        let mut deleted = Vec::new();
        for row in 0..changes.num_rows() {
            let op = Op::parse(ops.value(row));
            if matches!(op, None | Some(Op::UpdateBefore)) {
                continue;
            }
            // A delete carrying only its key (no time) happens at the
            // latest time the table has seen.
            let time = if times.is_valid(row) {
                times.value(row)
            } else {
                self.table_max.unwrap_or(i64::MIN)
            };
            if times.is_valid(row) {
                self.table_max = Some(self.table_max.map_or(time, |max| max.max(time)));
            }
            kept.push(row as u32);
            at.push(time);
            deleted.push(op == Some(Op::Delete));
        }
        let columns: Vec<usize> = (1..changes.num_columns()).collect();
        let declared = changes.project(&columns)?;
        let rows = take_record_batch(&declared, &UInt32Array::from(kept))?;
        let rows =
            RecordBatch::try_new(Arc::clone(&self.versions.schema), rows.columns().to_vec())?;
        self.versions.record(&rows, &at, &deleted)
    }

    /// The join's watermark: the smaller of the stream's and the table's.
    fn watermark(&self) -> Option<i64> {
        let stream = self.stream_max?.saturating_sub(self.stream_time.delay_ms);
        let table = self.table_max?.saturating_sub(self.table_time.delay_ms);
        Some(stream.min(table))
    }

    /// Joins the held rows at or before `mark`, in stretches of time in
    /// which the table did not change.
    async fn emit(&mut self, mark: i64) -> Result<Vec<RecordBatch>> {
        if self.held.is_empty() {
            return Ok(Vec::new());
        }
        let schema = self.held[0].schema();
        let held = concat_batches(&schema, &self.held)?;
        self.held.clear();
        let times = millis(held.column(self.stream_time.column))?;
        let ready: datafusion::arrow::array::BooleanArray = (0..held.num_rows())
            .map(|r| Some(times.value(r) <= mark))
            .collect();
        let waiting = filter_record_batch(&held, &datafusion::arrow::compute::not(&ready)?)?;
        if waiting.num_rows() > 0 {
            self.held.push(waiting);
        }
        let mut order: Vec<u32> = (0..held.num_rows() as u32)
            .filter(|&r| ready.value(r as usize))
            .collect();
        order.sort_by_key(|&r| times.value(r as usize));
        let changes = self.versions.change_times();
        let stretch = |time: i64| changes.partition_point(|&t| t <= time);
        let mut out = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let first = times.value(order[start] as usize);
            let mut end = start + 1;
            while end < order.len() && stretch(times.value(order[end] as usize)) == stretch(first) {
                end += 1;
            }
            let rows = take_record_batch(&held, &UInt32Array::from(order[start..end].to_vec()))?;
            out.extend(self.run_with(rows, self.versions.as_of(first)?).await?);
            start = end;
        }
        self.versions.drop_before(mark);
        Ok(out)
    }

    async fn run_with(&self, rows: RecordBatch, table: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.table_slot.set(vec![table]);
        for (index, slot) in self.stream_slots.iter().enumerate() {
            slot.set(if index == 0 {
                vec![rows.clone()]
            } else {
                Vec::new()
            });
        }
        let result = run(&self.plan, &self.task_ctx).await;
        self.table_slot.clear();
        for slot in &self.stream_slots {
            slot.clear();
        }
        result
    }
}

/// An event-time column in milliseconds.
fn millis(
    column: &ArrayRef,
) -> Result<datafusion::arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    let cast = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    cast.as_primitive_opt::<TimestampMillisecondType>()
        .cloned()
        .ok_or_else(|| BrookError::Internal("an event time is not a timestamp".into()))
}

#[async_trait]
impl BatchEngine for TemporalJoinEngine {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn describe(&self) -> String {
        format!(
            "event-time temporal join with table {}: each row meets the table's rows as of its event time, once the stream's and the table's watermarks have passed it; holds the rows waiting and the table's versions newer than the watermark",
            self.table_name
        )
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        for changes in batch.inputs.get(1).into_iter().flatten() {
            self.take_changes(changes)?;
        }
        for rows in batch.inputs.first().into_iter().flatten() {
            if rows.num_rows() == 0 {
                continue;
            }
            let times = millis(rows.column(self.stream_time.column))?;
            if let Some(max) = datafusion::arrow::compute::max(&times) {
                self.stream_max = Some(self.stream_max.map_or(max, |m| m.max(max)));
            }
            self.held.push(rows.clone());
        }
        let batches = match self.watermark() {
            Some(mark) => self.emit(mark).await?,
            None => Vec::new(),
        };
        Ok(Some(Emission {
            batches,
            window: None,
            event: None,
        }))
    }

    async fn on_end(&mut self) -> Result<Option<Emission>> {
        let batches = self.emit(i64::MAX).await?;
        Ok(Some(Emission {
            batches,
            window: None,
            event: None,
        }))
    }

    fn retained(&self) -> Retained {
        let held: usize = self.held.iter().map(RecordBatch::num_rows).sum();
        Retained {
            batches: self.held.len(),
            rows: held + self.versions.len(),
            bytes: self
                .held
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum(),
            by_stream: Vec::new(),
        }
    }
}
