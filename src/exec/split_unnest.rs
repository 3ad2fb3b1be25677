//! `unnest(split(text, 'd'))` (or `unnest(string_to_array(text, 'd'))`) as
//! one operator.
//!
//! DataFusion plans the word split as a projection that builds a list per
//! row (`split`), then an `UnnestExec` that takes the lists apart again:
//! it measures every list, builds take indices, and copies the values out.
//! [`SplitUnnestRule`] spots that pair in a physical plan and replaces it
//! with [`SplitUnnestExec`], which writes each part's view straight into
//! one flat string column (no list, no copy of string bytes) and repeats
//! the row's other columns once per part. The result is the same rows, in
//! the same order, with the same NULL handling as the plan it replaces.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{NullHandling, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use datafusion::functions_nested::string::StringToArray;

use crate::functions::{Split, parts_array, push_parts};

/// Rewrites `UnnestExec(ProjectionExec[.., split(text, 'd'), ..])` into
/// [`SplitUnnestExec`] over the projection with `text` in place of the
/// split; the same for `string_to_array(text, 'd')` of a text column (its
/// parts are text views too). Any other unnest (of structs, of several lists, recursive, of a
/// split with a non-constant delimiter) is left to DataFusion.
#[derive(Debug, Default)]
pub(crate) struct SplitUnnestRule;

impl PhysicalOptimizerRule for SplitUnnestRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        super::replace_each(plan, fuse)
    }

    fn name(&self) -> &str {
        "brook_split_unnest"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The fused operator for `node`, when it is an unnest of a split.
fn fuse(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(unnest) = node.downcast_ref::<UnnestExec>() else {
        return Ok(None);
    };
    let ([list], []) = (unnest.list_column_indices(), unnest.struct_column_indices()) else {
        return Ok(None);
    };
    let Some(projection) = unnest.input().downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    let column = list.index_in_input_schema;
    let output = unnest.schema();
    if list.depth != 1
        || unnest.options().recursions.iter().any(|r| r.depth != 1)
        || output.fields().len() != projection.expr().len()
        || output.field(column).data_type() != &DataType::Utf8View
    {
        return Ok(None);
    }
    let Some(item) = projection.expr().get(column) else {
        return Ok(None);
    };
    let Some(call) = item.expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    // DataFusion's string_to_array(text, delimiter) splits the same way
    // (views in, views out) when the delimiter is not NULL.
    let splits = call.fun().inner().is::<Split>() || call.fun().inner().is::<StringToArray>();
    let (true, [text, delimiter]) = (splits, call.args()) else {
        return Ok(None);
    };
    let Some(delimiter) =
        delimiter
            .downcast_ref::<Literal>()
            .and_then(|literal| match literal.value() {
                ScalarValue::Utf8(Some(d))
                | ScalarValue::Utf8View(Some(d))
                | ScalarValue::LargeUtf8(Some(d)) => Some(d.as_bytes().to_vec()),
                _ => None,
            })
    else {
        return Ok(None);
    };
    if text.data_type(&projection.input().schema())? != DataType::Utf8View {
        return Ok(None);
    }
    let mut exprs: Vec<ProjectionExpr> = projection.expr().to_vec();
    exprs[column] = ProjectionExpr::new(Arc::clone(text), item.alias.clone());
    // A projection that only renames its input's columns in place is left
    // out: the fused operator has its own output schema.
    let below = projection.input();
    let renames_only = exprs.len() == below.schema().fields().len()
        && exprs.iter().enumerate().all(|(index, item)| {
            item.expr
                .downcast_ref::<Column>()
                .is_some_and(|c| c.index() == index)
        });
    let input: Arc<dyn ExecutionPlan> = if renames_only {
        Arc::clone(below)
    } else {
        Arc::new(ProjectionExec::try_new(exprs, Arc::clone(below))?)
    };
    Ok(Some(Arc::new(SplitUnnestExec {
        input,
        column,
        function: call.fun().name().to_string(),
        text: Arc::clone(text),
        delimiter,
        null_handling: unnest.options().null_handling,
        schema: output,
        // The same rows and columns as the unnest it replaces.
        properties: Arc::clone(unnest.properties()),
        metrics: ExecutionPlanMetricsSet::new(),
    })))
}

/// Splits the string column `column` of its input at `delimiter` and
/// unnests the parts: one output row per part, the row's other columns
/// repeated. A NULL string, or an empty one (which has no parts), gives no
/// row under `unnest` and one NULL row under `unnest_outer`.
#[derive(Debug, Clone)]
pub(crate) struct SplitUnnestExec {
    input: Arc<dyn ExecutionPlan>,
    /// The input column split and replaced by its parts.
    column: usize,
    /// The split function and what the column holds, for display.
    function: String,
    text: Arc<dyn PhysicalExpr>,
    delimiter: Vec<u8>,
    null_handling: NullHandling,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SplitUnnestExec {
    /// The same operator with the output `schema` and `properties` of a
    /// projection that renamed its columns.
    pub(crate) fn renamed(&self, schema: SchemaRef, properties: Arc<PlanProperties>) -> Self {
        Self {
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            ..self.clone()
        }
    }
}

impl DisplayAs for SplitUnnestExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let unnest = match self.null_handling {
            NullHandling::Drop => "unnest",
            _ => "unnest_outer",
        };
        write!(
            f,
            "SplitUnnestExec: {unnest}({}({}, '{}')) as {}",
            self.function,
            self.text,
            String::from_utf8_lossy(&self.delimiter).replace('\'', "''"),
            self.schema.field(self.column).name()
        )?;
        if self.null_handling == NullHandling::Preserve {
            write!(f, " preserving NULLs")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SplitUnnestExec {
    fn name(&self) -> &str {
        "SplitUnnestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::only_child(children, "SplitUnnestExec")?;
        // Nothing is known of the order or partitioning of the new rows
        // beyond the number of partitions.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&self.schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Ok(Arc::new(Self {
            input,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            ..(*self).clone()
        }))
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::only_child(children, "SplitUnnestExec")?;
        Ok(Arc::new(Self {
            input,
            metrics: ExecutionPlanMetricsSet::new(),
            ..(*self).clone()
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let splitter = Splitter {
            column: self.column,
            delimiter: self.delimiter.clone(),
            null_handling: self.null_handling,
            schema: Arc::clone(&self.schema),
            batch_size: context.session_config().batch_size().max(1),
        };
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let input = self.input.execute(partition, context)?;
        let output = input.flat_map(move |batch| {
            let timer = metrics.elapsed_compute().timer();
            let result = batch.and_then(|batch| splitter.unnest(&batch));
            timer.done();
            let items: Vec<Result<RecordBatch>> = match result {
                Ok(batches) => {
                    for batch in &batches {
                        metrics.record_output(batch.num_rows());
                    }
                    batches.into_iter().map(Ok).collect()
                }
                Err(error) => vec![Err(error)],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// What one execution of [`SplitUnnestExec`] needs to unnest a batch.
struct Splitter {
    column: usize,
    delimiter: Vec<u8>,
    null_handling: NullHandling,
    schema: SchemaRef,
    /// Output batches are cut after the row that reaches this many rows.
    batch_size: usize,
}

impl Splitter {
    /// The unnested rows of `batch`, in batches of about `batch_size` rows
    /// (a row's parts are never cut apart).
    fn unnest(&self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let text = batch.column(self.column).as_string_view();
        let repeat_others = batch.num_columns() > 1;
        let has_nulls = text.null_count() > 0;
        // Room for a whole output batch (and a last row past it), so the
        // views are never copied to grow.
        let capacity = self.batch_size.min(text.len() * 8) + 64;
        let mut out = Vec::new();
        let mut views: Vec<u128> = Vec::with_capacity(capacity);
        // Input row of each output row, when other columns repeat.
        let mut rows: Vec<u32> = Vec::new();
        // Output rows that are NULL (outer unnest of a NULL or empty string).
        let mut null_rows: Vec<usize> = Vec::new();
        for (row, view) in text.views().iter().enumerate() {
            let before = views.len();
            let null = has_nulls && text.is_null(row);
            // The length is the view's low 32 bits.
            let empty = null || *view as u32 == 0;
            if !empty {
                push_parts(text, row, &self.delimiter, &mut views);
            }
            let null_row = match self.null_handling {
                NullHandling::Drop => false,
                NullHandling::Preserve => null,
                NullHandling::PreserveAndExpandEmpty => empty,
            };
            if null_row {
                null_rows.push(views.len());
                views.push(0);
            }
            if repeat_others {
                rows.extend(std::iter::repeat_n(row as u32, views.len() - before));
            }
            if views.len() >= self.batch_size {
                out.push(self.output(batch, text, &mut views, &mut rows, &mut null_rows)?);
                views.reserve(capacity);
            }
        }
        if !views.is_empty() {
            out.push(self.output(batch, text, &mut views, &mut rows, &mut null_rows)?);
        }
        Ok(out)
    }

    /// One output batch of the views gathered so far (emptying the buffers).
    fn output(
        &self,
        batch: &RecordBatch,
        text: &datafusion::arrow::array::StringViewArray,
        views: &mut Vec<u128>,
        rows: &mut Vec<u32>,
        null_rows: &mut Vec<usize>,
    ) -> Result<RecordBatch> {
        let len = views.len();
        let nulls = (!null_rows.is_empty()).then(|| {
            let mut valid = vec![true; len];
            for at in null_rows.drain(..) {
                valid[at] = false;
            }
            NullBuffer::from(valid)
        });
        // SAFETY: the views come from `push_parts` over `text`, except the
        // zero views of NULL rows, which `nulls` marks.
        let parts = unsafe { parts_array(std::mem::take(views), text, nulls) };
        let indices = UInt32Array::from(std::mem::take(rows));
        let columns = (0..batch.num_columns())
            .map(|index| {
                if index == self.column {
                    Ok(Arc::new(parts.clone()) as ArrayRef)
                } else {
                    Ok(take(batch.column(index).as_ref(), &indices, None)?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn unnest(null_handling: NullHandling, batch_size: usize) -> Vec<Vec<(i64, Option<String>)>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("part", DataType::Utf8View, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringViewArray::from(vec![
                    Some("a b c"),
                    None,
                    Some(""),
                    Some("d e"),
                ])),
            ],
        )
        .unwrap();
        let splitter = Splitter {
            column: 1,
            delimiter: b" ".to_vec(),
            null_handling,
            schema,
            batch_size,
        };
        splitter
            .unnest(&batch)
            .unwrap()
            .iter()
            .map(|out| {
                let ids = out
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let parts = out.column(1).as_string_view();
                (0..out.num_rows())
                    .map(|row| {
                        (
                            ids.value(row),
                            parts.is_valid(row).then(|| parts.value(row).to_string()),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn part(id: i64, text: Option<&str>) -> (i64, Option<String>) {
        (id, text.map(str::to_string))
    }

    #[test]
    fn null_handling_modes() {
        let words = [part(1, Some("a")), part(1, Some("b")), part(1, Some("c"))];
        let tail = [part(4, Some("d")), part(4, Some("e"))];
        assert_eq!(
            unnest(NullHandling::Drop, 100),
            vec![[&words[..], &tail[..]].concat()]
        );
        assert_eq!(
            unnest(NullHandling::Preserve, 100),
            vec![[&words[..], &[part(2, None)], &tail[..]].concat()]
        );
        assert_eq!(
            unnest(NullHandling::PreserveAndExpandEmpty, 100),
            vec![[&words[..], &[part(2, None), part(3, None)], &tail[..]].concat()]
        );
    }

    #[test]
    fn output_batches_end_at_a_row_boundary_past_the_batch_size() {
        let batches = unnest(NullHandling::PreserveAndExpandEmpty, 2);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        // "a b c" (3 rows), then NULL and '' (1 row each), then "d e" (2).
        assert_eq!(sizes, vec![3, 2, 2]);
        assert_eq!(batches[1], vec![part(2, None), part(3, None)]);
    }
}
