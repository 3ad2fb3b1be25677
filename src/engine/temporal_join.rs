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
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{
    cast, concat, concat_batches, filter_record_batch, take_record_batch,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::run;
use super::state::{self, Part};
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

    /// Every version as a row of the declared columns (a delete: its key,
    /// the rest NULL), then its time and whether it is a delete.
    fn snapshot(&self) -> Result<RecordBatch> {
        let (row_parser, key_parser) = (self.rows.parser(), self.keys.parser());
        let (mut kept, mut kept_at) = (Vec::new(), Vec::new());
        let (mut gone, mut gone_at) = (Vec::new(), Vec::new());
        for (key, versions) in &self.by_key {
            for (&time, row) in versions {
                match row {
                    Some(row) => {
                        kept.push(row_parser.parse(row));
                        kept_at.push(time);
                    }
                    None => {
                        gone.push(key_parser.parse(key));
                        gone_at.push(time);
                    }
                }
            }
        }
        let kept_rows = self.rows.convert_rows(kept)?;
        let gone_keys = self.keys.convert_rows(gone)?;
        let mut columns = Vec::with_capacity(self.schema.fields().len() + 2);
        for (index, field) in self.schema.fields().iter().enumerate() {
            let deleted = match self.key_columns.iter().position(|&k| k == index) {
                Some(key) => Arc::clone(&gone_keys[key]),
                None => new_null_array(field.data_type(), gone_at.len()),
            };
            columns.push(concat(&[kept_rows[index].as_ref(), deleted.as_ref()])?);
        }
        let times: Vec<i64> = kept_at.iter().chain(&gone_at).copied().collect();
        columns.push(Arc::new(Int64Array::from(times)));
        let deleted: Vec<bool> = (0..kept_at.len() + gone_at.len())
            .map(|i| i >= kept_at.len())
            .collect();
        columns.push(Arc::new(BooleanArray::from(deleted)));
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new("version_time", DataType::Int64, false));
        fields.push(Field::new("version_deleted", DataType::Boolean, false));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Versions as [`Versions::snapshot`] gave them.
    fn restore(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = self.schema.fields().len();
        let bad = || BrookError::Internal("a temporal join's versions do not fit its table".into());
        if batch.num_columns() != n + 2 {
            return Err(bad());
        }
        let columns: Vec<ArrayRef> = (0..n)
            .map(|c| cast(batch.column(c), self.schema.field(c).data_type()))
            .collect::<std::result::Result<_, _>>()?;
        let rows = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(
                self.schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        let times = batch
            .column(n)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?;
        let deleted = batch.column(n + 1).as_boolean_opt().ok_or_else(bad)?;
        let times: Vec<i64> = times.values().to_vec();
        let deleted: Vec<bool> = (0..batch.num_rows()).map(|r| deleted.value(r)).collect();
        let rows =
            RecordBatch::try_new(Arc::clone(&self.schema), rows.columns().to_vec()).unwrap_or(rows);
        self.record(&rows, &times, &deleted)
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

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut parts = vec![
            state::label(self.versions.snapshot()?, Part::JoinRows { side: 1 })?,
            state::label(
                RecordBatch::try_new(
                    Arc::new(Schema::new(vec![
                        Field::new("stream_max", DataType::Int64, true),
                        Field::new("table_max", DataType::Int64, true),
                    ])),
                    vec![
                        Arc::new(Int64Array::from(vec![self.stream_max])),
                        Arc::new(Int64Array::from(vec![self.table_max])),
                    ],
                )?,
                Part::JoinClock { side: 0 },
            )?,
        ];
        if let Some(first) = self.held.first() {
            let held = concat_batches(&first.schema(), &self.held)?;
            parts.push(state::label(held, Part::JoinRows { side: 0 })?);
        }
        Ok(parts)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.versions.by_key.clear();
        self.held.clear();
        for batch in batches {
            let part = state::part_of(&batch)?;
            let batch = state::unlabel(batch)?;
            match part {
                Part::JoinRows { side: 1 } => self.versions.restore(&batch)?,
                Part::JoinRows { side: 0 } => self.held.push(batch),
                Part::JoinClock { side: 0 } => {
                    let value = |c: usize| {
                        batch
                            .column(c)
                            .as_primitive_opt::<Int64Type>()
                            .and_then(|v| v.is_valid(0).then(|| v.value(0)))
                    };
                    self.stream_max = value(0);
                    self.table_max = value(1);
                }
                other => {
                    return Err(BrookError::Internal(format!(
                        "a temporal join's state holds a '{other}' part"
                    )));
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, true),
            Field::new("rate", DataType::Float64, true),
        ]))
    }

    fn rows(rows: &[(&str, Option<f64>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn shown(batch: &RecordBatch) -> String {
        pretty_format_batches(std::slice::from_ref(batch))
            .unwrap()
            .to_string()
    }

    #[test]
    fn versions_answer_as_of_a_time_drop_what_no_row_can_meet_and_survive_a_snapshot() {
        let mut versions = Versions::new(schema(), vec![0]).unwrap();
        versions
            .record(
                &rows(&[
                    ("EUR", Some(1.0)),
                    ("EUR", Some(1.1)),
                    ("EUR", None),
                    ("USD", Some(0.9)),
                ]),
                &[10, 20, 30, 5],
                &[false, false, true, false],
            )
            .unwrap();
        let rate_at = |versions: &Versions, time: i64| {
            let batch = versions.as_of(time).unwrap();
            let mut text: Vec<String> = (0..batch.num_rows())
                .map(|r| {
                    shown(&batch.slice(r, 1))
                        .lines()
                        .nth(3)
                        .unwrap()
                        .to_string()
                })
                .collect();
            text.sort();
            text.join(" ")
        };
        assert_eq!(rate_at(&versions, 4), "");
        assert!(
            rate_at(&versions, 15).contains("EUR      | 1.0"),
            "{}",
            rate_at(&versions, 15)
        );
        assert!(rate_at(&versions, 25).contains("1.1"));
        assert!(!rate_at(&versions, 35).contains("EUR"));
        let mut restored = Versions::new(schema(), vec![0]).unwrap();
        restored.restore(&versions.snapshot().unwrap()).unwrap();
        for time in [4, 10, 15, 20, 25, 30, 35] {
            assert_eq!(
                rate_at(&restored, time),
                rate_at(&versions, time),
                "at {time}"
            );
        }
        // Past 25, only the version of 20 and later ones are needed.
        versions.drop_before(25);
        assert_eq!(versions.len(), 3);
        assert_eq!(rate_at(&versions, 25), rate_at(&restored, 25));
        // Past 30, EUR is deleted: nothing of it is kept.
        versions.drop_before(30);
        assert_eq!(versions.len(), 1);
    }
}
