//! A batch's rows merged into sessions before they are aggregated: per
//! group, the batch's rows whose sessions `[ts, ts + gap)` overlap become
//! one session, so the partial aggregate makes about one row per session
//! rather than one per row. The group keys are evaluated on the rows as
//! the aggregate sees them (below it: the query's filters and
//! projections), then the aggregate runs alone over the merged rows.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::run_on;
use super::split::IncrementalPlan;
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};

/// The partial aggregate of a `SESSION` query cut below it.
pub(crate) struct BatchSessions {
    /// The plan below the aggregate, reading the window scan.
    below: Arc<dyn ExecutionPlan>,
    /// The partial aggregate over `slot`.
    aggregate: Arc<dyn ExecutionPlan>,
    slot: Arc<BatchSlot>,
    /// The group keys but the window's, over `below`'s output.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// `below`'s columns holding `window_start` and `window_end`.
    start: usize,
    end: usize,
}

impl BatchSessions {
    /// The cut of `plan`, whose group keys `start_key` and `end_key` are
    /// the window's; `None` when the aggregate does not group by the
    /// window columns themselves (or by grouping sets).
    pub fn new(plan: &IncrementalPlan, start_key: usize, end_key: usize) -> Option<Self> {
        let aggregate = plan.partial.downcast_ref::<AggregateExec>()?;
        let group_by = aggregate.group_expr();
        if !group_by.is_single() {
            return None;
        }
        let exprs = group_by.expr();
        let column = |key: usize| {
            exprs
                .get(key)?
                .0
                .downcast_ref::<Column>()
                .map(Column::index)
        };
        let (start, end) = (column(start_key)?, column(end_key)?);
        let keys = exprs
            .iter()
            .enumerate()
            .filter(|(key, _)| *key != start_key && *key != end_key)
            .map(|(_, (expr, _))| Arc::clone(expr))
            .collect();
        let below = Arc::clone(aggregate.input());
        let (slot, scan) = BatchSlot::with_scan(&below.schema()).ok()?;
        let cut = super::split::replace(&plan.partial, &below, &scan).ok()?;
        Some(Self {
            below,
            aggregate: cut,
            slot,
            keys,
            start,
            end,
        })
    }

    /// `input` (rows with their own sessions as window columns, as the
    /// window scan reads them) merged into sessions per group and
    /// aggregated into partial state.
    pub async fn aggregate(
        &self,
        scan: &BatchSlot,
        input: Vec<RecordBatch>,
        gap: i64,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Option<RecordBatch>> {
        let below = run_on(&self.below, scan, input, task_ctx).await?;
        let rows = concat_batches(&self.below.schema(), &below)?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let rows = self.merged(rows, gap)?;
        let state = run_on(&self.aggregate, &self.slot, vec![rows], task_ctx).await?;
        Ok(Some(concat_batches(&self.aggregate.schema(), &state)?))
    }

    /// `rows` with each row's window columns set to the session its group's
    /// overlapping rows make.
    fn merged(&self, rows: RecordBatch, gap: i64) -> Result<RecordBatch> {
        let count = rows.num_rows();
        let keys: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|expr| expr.evaluate(&rows)?.into_array(count))
            .collect::<datafusion::error::Result<_>>()?;
        let converter = RowConverter::new(
            keys.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let keys = converter.convert_columns(&keys)?;
        let starts_column = rows.column(self.start);
        let starts = starts_column
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| BrookError::Internal("a session start is not a timestamp".into()))?;
        // Rows by group (hashing their keys), then each group's by time.
        let mut groups: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for row in 0..count {
            groups.entry(keys.row(row).data()).or_default().push(row);
        }
        let (mut new_start, mut new_end) = (vec![0i64; count], vec![0i64; count]);
        for rows_of_group in groups.values_mut() {
            rows_of_group.sort_unstable_by_key(|&row| starts.value(row));
            let mut first = 0;
            while first < rows_of_group.len() {
                let start = starts.value(rows_of_group[first]);
                let mut end = start.saturating_add(gap);
                let mut next = first + 1;
                while next < rows_of_group.len() && starts.value(rows_of_group[next]) < end {
                    end = end.max(starts.value(rows_of_group[next]).saturating_add(gap));
                    next += 1;
                }
                for &row in &rows_of_group[first..next] {
                    new_start[row] = start;
                    new_end[row] = end;
                }
                first = next;
            }
        }
        let timezone = match starts_column.data_type() {
            DataType::Timestamp(_, timezone) => timezone.clone(),
            _ => None,
        };
        let as_column = |values: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(timezone.clone()))
        };
        let mut columns = rows.columns().to_vec();
        columns[self.start] = as_column(new_start);
        columns[self.end] = as_column(new_end);
        Ok(RecordBatch::try_new(rows.schema(), columns)?)
    }
}
