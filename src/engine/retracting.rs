//! `RUNNING` over a changelog: aggregates that go down as well as up.
//!
//! The engine keeps the changelog's current row of each key
//! ([`CurrentRows`]); each batch's changes become the rows they take back
//! and the rows they add. Both run through the query's plan below its
//! aggregate (filters, projections), and are folded into each group's
//! [`Retractable`] state with sign -1 and +1. A group whose rows are all
//! gone disappears. The result is the query's plan above the aggregate
//! (`HAVING`, the select list, `ORDER BY`) over the groups' values:
//! every group (complete mode), or, in update mode, each changed group's
//! new row (`+I` for a new one, `+U`) and each vanished group's last row
//! (`-D`), keyed by the `GROUP BY` columns in the select list.
//!
//! A checkpoint holds the current rows only: the groups' states are a
//! function of them, rebuilt on restore.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::current_rows::CurrentRows;
use super::retractable::{Retractable, Slots};
use super::run_on;
use super::state::{self, Part};
use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::OutputMode;
use crate::changelog::{CHANGES_METADATA, OP_COLUMN, Op};
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, MicroBatch};

/// One aggregate of the query.
struct Aggregate {
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    state: Retractable,
}

/// A `RUNNING` query over a changelog in progress.
pub(crate) struct RetractingEngine {
    mode: OutputMode,
    task_ctx: Arc<TaskContext>,
    input: usize,
    scan: Arc<BatchSlot>,
    /// The plan below the aggregate, reading `scan`.
    below: Arc<dyn ExecutionPlan>,
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Aggregate>,
    /// The aggregate's output: the group keys, then each aggregate.
    aggregate_schema: SchemaRef,
    /// The plan above the aggregate, reading `above_input`.
    above: Arc<dyn ExecutionPlan>,
    above_input: Arc<BatchSlot>,
    /// Update mode: the result's columns holding the group keys.
    result_keys: Vec<usize>,
    table: CurrentRows,
    slots: Slots,
    group_keys: RowConverter,
    /// Current rows per group slot.
    rows: Vec<i64>,
}

impl RetractingEngine {
    /// The engine of `plan` (a `RUNNING` query over the changelog `scan`
    /// reads, keyed by `key`), or why the query cannot take rows back.
    pub fn new(
        mode: OutputMode,
        plan: &Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        input: usize,
        scan: Arc<BatchSlot>,
        changelog_schema: SchemaRef,
        key: &[String],
    ) -> std::result::Result<Self, String> {
        let super::split::SplitPoint { top, raw } = super::split::aggregate_of(plan)?;
        let aggregate = raw
            .downcast_ref::<AggregateExec>()
            .ok_or("unexpected aggregate plan")?;
        if !aggregate.group_expr().is_single() {
            return Err("grouping sets cannot take rows back".into());
        }
        let below = Arc::clone(aggregate.input());
        let below_schema = below.schema();
        let group_by: Vec<Arc<dyn PhysicalExpr>> = aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(expr, _)| Arc::clone(expr))
            .collect();
        let aggregates = aggregates_of(aggregate, &below_schema)?;
        let aggregate_schema = top.schema();
        let (above_input, above_scan) =
            BatchSlot::with_scan(&aggregate_schema).map_err(|e| e.to_string())?;
        let above = super::split::replace(plan, &top, &above_scan).map_err(|e| e.to_string())?;
        let result_keys = match mode {
            OutputMode::Complete => Vec::new(),
            OutputMode::Update => {
                result_keys(plan, &top, group_by.len()).ok_or_else(|| {
                    "RUNNING(..., 'update') over a changelog keys its changes by the GROUP BY columns: select each of them, unchanged".to_string()
                })?
            }
        };
        let group_keys = RowConverter::new(
            group_by
                .iter()
                .map(|expr| Ok(SortField::new(expr.data_type(&below_schema)?)))
                .collect::<datafusion::error::Result<Vec<_>>>()
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let table = CurrentRows::new(changelog_schema, key).map_err(|e| e.to_string())?;
        let mut engine = Self {
            mode,
            task_ctx,
            input,
            scan,
            below,
            group_by,
            aggregates,
            aggregate_schema,
            above,
            above_input,
            result_keys,
            table,
            slots: Slots::default(),
            group_keys,
            rows: Vec::new(),
        };
        if engine.group_by.is_empty() {
            // One group, there even when no row is.
            engine.slot_of(&[]);
        }
        Ok(engine)
    }

    fn slot_of(&mut self, key: &[u8]) -> usize {
        let (slot, new) = self.slots.get_or_insert(key);
        if new {
            if self.rows.len() <= slot {
                self.rows.resize(slot + 1, 0);
            }
            self.rows[slot] = 0;
            for aggregate in &mut self.aggregates {
                aggregate.state.reset(slot);
            }
        }
        slot
    }

    /// `rows` (changelog rows) through the plan below the aggregate.
    async fn through_below(&self, rows: RecordBatch) -> Result<Option<RecordBatch>> {
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let out = run_on(&self.below, &self.scan, vec![rows], &self.task_ctx).await?;
        let out = concat_batches(&self.below.schema(), &out)?;
        Ok((out.num_rows() > 0).then_some(out))
    }

    /// The group key (row format) of each of `rows`.
    fn keys_of(&self, rows: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        if self.group_by.is_empty() {
            // One group; a row converter of no columns makes no rows.
            return Ok(vec![Box::default(); rows.num_rows()]);
        }
        let columns: Vec<ArrayRef> = self
            .group_by
            .iter()
            .map(|expr| expr.evaluate(rows)?.into_array(rows.num_rows()))
            .collect::<datafusion::error::Result<_>>()?;
        let keys = self.group_keys.convert_columns(&columns)?;
        Ok(keys.iter().map(|key| key.data().into()).collect())
    }

    /// Folds `rows` into their groups with `sign`; the slots touched.
    fn fold(&mut self, rows: &RecordBatch, keys: &[Box<[u8]>], sign: i64) -> Result<Vec<usize>> {
        let slots: Vec<usize> = keys.iter().map(|key| self.slot_of(key)).collect();
        for &slot in &slots {
            self.rows[slot] += sign;
        }
        for aggregate in &mut self.aggregates {
            let args: Vec<ArrayRef> = aggregate
                .args
                .iter()
                .map(|expr| expr.evaluate(rows)?.into_array(rows.num_rows()))
                .collect::<datafusion::error::Result<_>>()?;
            let filter = match &aggregate.filter {
                Some(filter) => Some(
                    filter
                        .evaluate(rows)?
                        .into_array(rows.num_rows())?
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| {
                            BrookError::Internal("an aggregate FILTER is not boolean".into())
                        })?,
                ),
                None => None,
            };
            aggregate
                .state
                .update(&args, filter.as_ref(), &slots, sign)?;
        }
        Ok(slots)
    }

    /// The aggregate's rows of `slots`.
    fn aggregate_rows(&self, slots: &[usize]) -> Result<RecordBatch> {
        let parser = self.group_keys.parser();
        let mut columns = self
            .group_keys
            .convert_rows(slots.iter().map(|&s| parser.parse(self.slots.key(s))))?;
        let groups = columns.len();
        for (index, aggregate) in self.aggregates.iter().enumerate() {
            let field = self.aggregate_schema.field(groups + index);
            columns.push(aggregate.state.results(slots, field)?);
        }
        let columns = columns
            .into_iter()
            .zip(self.aggregate_schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column)
                } else {
                    Ok(datafusion::arrow::compute::cast(
                        &column,
                        field.data_type(),
                    )?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.aggregate_schema),
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(slots.len())),
        )?)
    }

    /// The query's result rows for `slots`.
    async fn result(&self, slots: &[usize]) -> Result<RecordBatch> {
        let rows = self.aggregate_rows(slots)?;
        let out = run_on(&self.above, &self.above_input, vec![rows], &self.task_ctx).await?;
        Ok(concat_batches(&self.above.schema(), &out)?)
    }

    /// Applies the changes of `batch` and emits the result.
    async fn apply(&mut self, batch: &[RecordBatch]) -> Result<Option<Emission>> {
        let mut retracted = Vec::new();
        let mut added = Vec::new();
        for changes in batch {
            let changes = self.table.apply(changes)?;
            retracted.extend(self.through_below(changes.retracted).await?);
            added.extend(self.through_below(changes.added).await?);
        }
        let retracted_keys = retracted
            .iter()
            .map(|rows| self.keys_of(rows))
            .collect::<Result<Vec<_>>>()?;
        let added_keys = added
            .iter()
            .map(|rows| self.keys_of(rows))
            .collect::<Result<Vec<_>>>()?;
        // Update mode: the touched groups' result rows before the batch.
        let before = match self.mode {
            OutputMode::Complete => None,
            OutputMode::Update => {
                let mut existing: Vec<usize> = retracted_keys
                    .iter()
                    .chain(&added_keys)
                    .flatten()
                    .filter_map(|key| self.slots.get(key))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                existing.sort_unstable();
                Some(self.result(&existing).await?)
            }
        };
        let mut touched = HashSet::new();
        for (rows, keys) in retracted.iter().zip(&retracted_keys) {
            touched.extend(self.fold(rows, keys, -1)?);
        }
        for (rows, keys) in added.iter().zip(&added_keys) {
            touched.extend(self.fold(rows, keys, 1)?);
        }
        let mut touched: Vec<usize> = touched.into_iter().collect();
        touched.sort_unstable();
        if !self.group_by.is_empty() {
            for &slot in &touched {
                if self.rows[slot] == 0 {
                    self.slots.remove(slot);
                }
            }
            touched.retain(|&slot| self.rows[slot] != 0);
        }
        let batches = match before {
            None => vec![self.result(&self.slots.in_use()).await?],
            Some(before) => {
                let after = self.result(&touched).await?;
                changed_rows(&before, &after, &self.result_keys)?
                    .into_iter()
                    .collect()
            }
        };
        Ok(Some(Emission {
            batches,
            window: None,
            event: None,
        }))
    }
}

/// The aggregates of `aggregate` (over rows of `below_schema`), each with
/// a state that takes rows back; or why one cannot.
fn aggregates_of(
    aggregate: &AggregateExec,
    below_schema: &SchemaRef,
) -> std::result::Result<Vec<Aggregate>, String> {
    let mut aggregates = Vec::new();
    for (index, function) in aggregate.aggr_expr().iter().enumerate() {
        if !function.order_bys().is_empty() {
            return Err(format!(
                "{}(... ORDER BY ...) cannot take rows back",
                function.fun().name()
            ));
        }
        let args = function.expressions();
        let arg_type = match args.first() {
            Some(arg) => Some(arg.data_type(below_schema).map_err(|e| e.to_string())?),
            None => None,
        };
        let name = function.fun().name().to_ascii_lowercase();
        aggregates.push(Aggregate {
            state: Retractable::new(&name, function.is_distinct(), arg_type.as_ref())?,
            args,
            filter: aggregate.filter_expr().get(index).cloned().flatten(),
        });
    }
    Ok(aggregates)
}

/// The changes from `before` to `after` (result rows of the same groups,
/// keyed by the columns `keys`), with their kinds in a first `op` column:
/// `-D` for a row whose key is gone, then `+I` for a new key and `+U` for
/// a changed row, in `after`'s order.
fn changed_rows(
    before: &RecordBatch,
    after: &RecordBatch,
    keys: &[usize],
) -> Result<Option<RecordBatch>> {
    let schema = with_op(after.schema_ref());
    let fields: Vec<SortField> = after
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let whole = RowConverter::new(fields.clone())?;
    let key_converter = RowConverter::new(keys.iter().map(|&k| fields[k].clone()).collect())?;
    let key_columns = |batch: &RecordBatch| -> Vec<ArrayRef> {
        keys.iter().map(|&k| Arc::clone(batch.column(k))).collect()
    };
    let before_keys = key_converter.convert_columns(&key_columns(before))?;
    let after_keys = key_converter.convert_columns(&key_columns(after))?;
    let before_rows = whole.convert_columns(before.columns())?;
    let after_rows = whole.convert_columns(after.columns())?;
    let was: HashMap<&[u8], usize> = (0..before.num_rows())
        .map(|row| (before_keys.row(row).data(), row))
        .collect();
    let now: HashSet<&[u8]> = (0..after.num_rows())
        .map(|row| after_keys.row(row).data())
        .collect();
    let mut ops: Vec<&str> = Vec::new();
    let mut picked = Vec::new();
    for row in 0..before.num_rows() {
        if !now.contains(before_keys.row(row).data()) {
            ops.push(Op::Delete.code());
            picked.push(before_rows.row(row));
        }
    }
    for row in 0..after.num_rows() {
        match was.get(after_keys.row(row).data()) {
            Some(&old) if before_rows.row(old) == after_rows.row(row) => {}
            Some(_) => {
                ops.push(Op::UpdateAfter.code());
                picked.push(after_rows.row(row));
            }
            None => {
                ops.push(Op::Insert.code());
                picked.push(after_rows.row(row));
            }
        }
    }
    if picked.is_empty() {
        return Ok(None);
    }
    // Rows of both batches share one converter, so they convert back
    // together.
    let mut columns = whole.convert_rows(picked)?;
    columns.insert(0, Arc::new(StringArray::from(ops)));
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

/// `schema` with an `op` column first.
fn with_op(schema: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false))];
    fields.extend(schema.fields().iter().cloned());
    let mut metadata = schema.metadata().clone();
    metadata.insert(CHANGES_METADATA.into(), OP_COLUMN.into());
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// For each group key of the aggregate `top` (of `groups` keys), the
/// column of `plan`'s result that holds it unchanged; `None` when one is
/// not selected (or an operator between hides which column it is).
fn result_keys(
    plan: &Arc<dyn ExecutionPlan>,
    top: &Arc<dyn ExecutionPlan>,
    groups: usize,
) -> Option<Vec<usize>> {
    let columns = passed_through(plan, top)?;
    (0..groups)
        .map(|group| columns.iter().position(|c| *c == Some(group)))
        .collect()
}

/// For each column of `node`'s output, the column of `top`'s output it
/// passes on unchanged, if it does.
fn passed_through(
    node: &Arc<dyn ExecutionPlan>,
    top: &Arc<dyn ExecutionPlan>,
) -> Option<Vec<Option<usize>>> {
    if Arc::ptr_eq(node, top) {
        return Some((0..top.schema().fields().len()).map(Some).collect());
    }
    let child = node.children().first().map(|c| (*c).clone())?;
    let below = passed_through(&child, top)?;
    let through_columns = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
        exprs
            .map(|expr| {
                expr.downcast_ref::<Column>()
                    .and_then(|c| below.get(c.index()).copied().flatten())
            })
            .collect::<Vec<_>>()
    };
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        return Some(through_columns(
            &mut projection.expr().iter().map(|e| &e.expr),
        ));
    }
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        return Some(match filter.projection() {
            Some(columns) => columns
                .iter()
                .map(|&c| below.get(c).copied().flatten())
                .collect(),
            None => below,
        });
    }
    let passes = node.downcast_ref::<SortExec>().is_some()
        || node.downcast_ref::<SortPreservingMergeExec>().is_some()
        || node.downcast_ref::<CoalescePartitionsExec>().is_some()
        || node.downcast_ref::<RepartitionExec>().is_some()
        || node.downcast_ref::<CooperativeExec>().is_some()
        || node.downcast_ref::<GlobalLimitExec>().is_some()
        || node.downcast_ref::<LocalLimitExec>().is_some();
    passes.then_some(below)
}

#[async_trait]
impl BatchEngine for RetractingEngine {
    fn describe(&self) -> String {
        format!(
            "window: {} over a changelog\nretracting: keeps the current row of each key; each change takes back the row it replaces and adds its own, through COUNT/SUM/AVG (a count and a sum per group) and MIN/MAX/COUNT(DISTINCT) (each distinct value per group)",
            crate::catalog::windows::WindowKind::Running(self.mode)
        )
    }

    fn schema(&self) -> SchemaRef {
        match self.mode {
            OutputMode::Complete => self.above.schema(),
            OutputMode::Update => with_op(&self.above.schema()),
        }
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        self.apply(&batch.inputs[self.input]).await
    }

    fn retained(&self) -> Retained {
        let values: usize = self.aggregates.iter().map(|a| a.state.entries()).sum();
        Retained {
            batches: 1,
            rows: self.table.len() + self.slots.len() + values,
            bytes: self.table.bytes(),
            by_stream: Vec::new(),
        }
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        Ok(vec![state::label(self.table.all()?, Part::ChangelogRows)?])
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for batch in batches {
            match state::part_of(&batch)? {
                Part::ChangelogRows => {
                    let rows = state::unlabel(batch)?;
                    self.table.load(&rows)?;
                    if let Some(rows) = self.through_below(rows).await? {
                        let keys = self.keys_of(&rows)?;
                        self.fold(&rows, &keys, 1)?;
                    }
                }
                other => {
                    return Err(BrookError::Internal(format!(
                        "a RUNNING state over a changelog holds a '{other}' part"
                    )));
                }
            }
        }
        Ok(())
    }
}
