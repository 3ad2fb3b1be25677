//! `GROUP BY` one text column, tuned for re-running every micro-batch.
//!
//! A per-batch plan runs its aggregate from scratch at every tick. For the
//! most common streaming shape, grouping by one string column (words, keys,
//! hosts), DataFusion's hash aggregate spends a small batch mostly growing
//! a fresh hash table from empty and setting up its machinery. [`TextGroupByRule`]
//! replaces such an `AggregateExec` with [`TextGroupByExec`], which:
//! - keys short strings (at most 12 bytes, Arrow's inline views) by their
//!   16-byte view, so most lookups compare two integers and never touch
//!   string bytes; longer keys are compared by their bytes;
//! - sizes its table from the number of groups the previous run had;
//! - feeds DataFusion's own group accumulators (`COUNT`, `SUM`, `AVG`, ...),
//!   so every aggregate computes exactly what it computes in DataFusion.
//!
//! Groups come out in the order they were first seen, as DataFusion's do.
//! Only plain aggregates qualify: one grouping expression of type text, no
//! grouping sets, no `DISTINCT`, `FILTER` or `ORDER BY` inside an aggregate,
//! no limit pushed into the aggregate, unsorted input; a single phase
//! (`mode=Single`) or the first of two (`mode=Partial`, per partition of the
//! plan for large batches, whose final phase stays DataFusion's). Everything
//! else stays DataFusion's.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringViewArray, builder::make_view,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, resources_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::functions::INLINE_VIEW_MASKS;

/// Replaces each qualifying `AggregateExec` with a [`TextGroupByExec`].
#[derive(Debug, Default)]
pub(crate) struct TextGroupByRule;

impl PhysicalOptimizerRule for TextGroupByRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        super::replace_each(plan, |node| {
            Ok(TextGroupByExec::replacing(node)?.map(|exec| Arc::new(exec) as _))
        })
    }

    fn name(&self) -> &str {
        "brook_text_group_by"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` over a new `input`, its properties derived again.
fn rebuilt(
    plan: &Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan).replace_children(
        vec![input],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// A hash aggregate grouping by one text column; see the [module](self).
#[derive(Debug, Clone)]
pub(crate) struct TextGroupByExec {
    /// The aggregate this replaces (for display, and rebuilt over new children).
    original: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    group: Arc<dyn PhysicalExpr>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's argument expressions.
    arguments: Arc<Vec<Vec<Arc<dyn PhysicalExpr>>>>,
    /// The first phase of a two-phase aggregate (the plan for large batches
    /// over all cores): outputs each group's intermediate state, which
    /// DataFusion's final phase merges, instead of the final values.
    partial: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Groups in the last run, to size the next run's table.
    groups_last_run: Arc<AtomicUsize>,
}

impl TextGroupByExec {
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

    /// The replacement for `node`, if it is an aggregate that qualifies.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Self>> {
        let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let group_by = aggregate.group_expr();
        let [(group, _)] = group_by.expr() else {
            return Ok(None);
        };
        let plain = |a: &Arc<AggregateFunctionExpr>| {
            a.groups_accumulator_supported() && !a.is_distinct() && a.order_bys().is_empty()
        };
        let partial = match aggregate.mode() {
            AggregateMode::Single => false,
            AggregateMode::Partial => true,
            _ => return Ok(None),
        };
        if group_by.has_grouping_set()
            || group.data_type(&aggregate.input_schema())? != DataType::Utf8View
            || !aggregate.aggr_expr().iter().all(plain)
            || aggregate.filter_expr().iter().any(Option::is_some)
            || aggregate.limit_options().is_some()
            || !aggregate.dynamic_expressions_produced().is_empty()
            || !matches!(aggregate.input_order_mode(), InputOrderMode::Linear)
        {
            return Ok(None);
        }
        Ok(Some(Self {
            original: Arc::clone(node),
            input: Arc::clone(aggregate.input()),
            group: Arc::clone(group),
            aggregates: aggregate.aggr_expr().to_vec(),
            arguments: Arc::new(
                aggregate
                    .aggr_expr()
                    .iter()
                    .map(|a| a.expressions())
                    .collect(),
            ),
            partial,
            schema: aggregate.schema(),
            properties: Arc::clone(aggregate.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
            groups_last_run: Arc::new(AtomicUsize::new(0)),
        }))
    }
}

impl DisplayAs for TextGroupByExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // Each computed column, named as it comes out.
        let named = |what: String, column: usize| match self.schema.fields().get(column) {
            Some(field) if field.name() != &what => format!("{what} as {}", field.name()),
            _ => what,
        };
        let aggregates: Vec<String> = self
            .aggregates
            .iter()
            .enumerate()
            .map(|(index, a)| match self.partial {
                // The columns are intermediate states, not one per aggregate.
                true => a.name().to_string(),
                false => named(a.name().to_string(), index + 1),
            })
            .collect();
        let group = match self.group.downcast_ref::<Column>() {
            Some(column)
                if Some(column.name())
                    == self.schema.fields().first().map(|f| f.name().as_str()) =>
            {
                self.group.to_string()
            }
            _ => named(self.group.to_string(), 0),
        };
        let mode = if self.partial { "mode=Partial, " } else { "" };
        write!(
            f,
            "TextGroupByExec: {mode}gby=[{group}], aggr=[{}]",
            aggregates.join(", ")
        )
    }
}

impl ExecutionPlan for TextGroupByExec {
    fn name(&self) -> &str {
        "TextGroupByExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.group)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::only_child(children, "TextGroupByExec")?;
        // Re-derive everything from the aggregate over the new input (and
        // keep a renaming this absorbed as a projection).
        let aggregate = rebuilt(&self.original, input)?;
        let replaced: Arc<dyn ExecutionPlan> = match Self::replacing(&aggregate)? {
            Some(exec) => Arc::new(Self {
                groups_last_run: Arc::clone(&self.groups_last_run),
                ..exec
            }),
            None => aggregate,
        };
        if replaced.schema() == self.schema {
            Ok(replaced)
        } else {
            super::renaming(replaced, &self.schema)
        }
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::only_child(children, "TextGroupByExec")?;
        // A fresh run of the same plan: new metrics, the same size hint.
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
        let mut input = self.input.execute(partition, context)?;
        let group = Arc::clone(&self.group);
        let aggregates = self.aggregates.clone();
        let arguments = Arc::clone(&self.arguments);
        let schema = Arc::clone(&self.schema);
        let partial = self.partial;
        let groups_last_run = Arc::clone(&self.groups_last_run);
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let run = async move {
            let mut groups = TextGroups::with_capacity(groups_last_run.load(Ordering::Relaxed));
            let mut accumulators = aggregates
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<Vec<_>>>()?;
            let mut group_of_row = Vec::new();
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let timer = metrics.elapsed_compute().timer();
                let rows = batch.num_rows();
                let keys = group.evaluate(&batch)?.into_array(rows)?;
                groups.intern(keys.as_string_view(), &mut group_of_row)?;
                for (accumulator, arguments) in accumulators.iter_mut().zip(arguments.iter()) {
                    let values = arguments
                        .iter()
                        .map(|argument| argument.evaluate(&batch)?.into_array(rows))
                        .collect::<Result<Vec<ArrayRef>>>()?;
                    accumulator.update_batch(&values, &group_of_row, None, groups.len())?;
                }
                timer.done();
            }
            if groups.len() == 0 {
                return Ok(None);
            }
            let _timer = metrics.elapsed_compute().timer();
            groups_last_run.store(groups.len(), Ordering::Relaxed);
            let mut columns: Vec<ArrayRef> = vec![Arc::new(groups.into_array())];
            for mut accumulator in accumulators {
                if partial {
                    columns.extend(accumulator.state(EmitTo::All)?);
                } else {
                    columns.push(accumulator.evaluate(EmitTo::All)?);
                }
            }
            let output = RecordBatch::try_new(schema, columns)?;
            metrics.record_output(output.num_rows());
            Ok(Some(output))
        };
        let output =
            futures::stream::once(run).filter_map(|result| async move { result.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The distinct keys seen so far, each with its group number (the order in
/// which it was first seen).
struct TextGroups {
    /// Group numbers, hashed by key.
    table: hashbrown::HashTable<u32>,
    /// The key of each group as a string view: inline when at most 12
    /// bytes, else pointing into `long_keys`.
    views: Vec<u128>,
    /// Each group's hash, to re-hash the table as it grows.
    hashes: Vec<u64>,
    /// The bytes of keys longer than 12 bytes.
    long_keys: Vec<u8>,
    /// The group of NULL, once seen.
    null_group: Option<u32>,
    hasher: foldhash::fast::FixedState,
}

impl TextGroups {
    fn with_capacity(groups: usize) -> Self {
        Self {
            table: hashbrown::HashTable::with_capacity(groups),
            views: Vec::with_capacity(groups),
            hashes: Vec::with_capacity(groups),
            long_keys: Vec::new(),
            null_group: None,
            hasher: foldhash::fast::FixedState::with_seed(0x0b00_c0de),
        }
    }

    fn len(&self) -> usize {
        self.views.len()
    }

    /// Sets `group_of_row` to the group of each row of `keys`, adding the
    /// keys not seen before.
    fn intern(&mut self, keys: &StringViewArray, group_of_row: &mut Vec<usize>) -> Result<()> {
        group_of_row.clear();
        group_of_row.reserve(keys.len());
        let has_nulls = keys.null_count() > 0;
        for (row, view) in keys.views().iter().enumerate() {
            let group = if has_nulls && keys.is_null(row) {
                self.null_group()
            } else if (*view as u32) <= 12 {
                self.intern_inline(*view)
            } else {
                self.intern_long(keys.value(row).as_bytes())?
            };
            group_of_row.push(group as usize);
        }
        Ok(())
    }

    /// The group of NULL. It is not in the table: its zero view is also
    /// the empty string's key.
    fn null_group(&mut self) -> u32 {
        if let Some(group) = self.null_group {
            return group;
        }
        let group = self.views.len() as u32;
        self.views.push(0);
        self.hashes.push(0);
        self.null_group = Some(group);
        group
    }

    /// The group of an inline view: its length and bytes are the key.
    #[inline]
    fn intern_inline(&mut self, view: u128) -> u32 {
        // Only the string's own bytes count, whatever follows them.
        let key = view & INLINE_VIEW_MASKS[(view as u32) as usize];
        let hash = self.hasher.hash_one(key);
        let views = &self.views;
        if let Some(group) = self.table.find(hash, |&g| views[g as usize] == key) {
            return *group;
        }
        self.add(key, hash)
    }

    /// The group of a key longer than 12 bytes, compared by its bytes.
    fn intern_long(&mut self, bytes: &[u8]) -> Result<u32> {
        let hash = self.hasher.hash_one(bytes);
        let (views, long_keys) = (&self.views, &self.long_keys);
        let found = self.table.find(hash, |&g| {
            let view = views[g as usize];
            (view as u32) as usize == bytes.len() && {
                let offset = (view >> 96) as usize;
                long_keys.get(offset..offset + bytes.len()) == Some(bytes)
            }
        });
        if let Some(group) = found {
            return Ok(*group);
        }
        let Ok(offset) = u32::try_from(self.long_keys.len()) else {
            return resources_err!("GROUP BY keys longer than 12 bytes exceed 4 GiB in one batch");
        };
        self.long_keys.extend_from_slice(bytes);
        Ok(self.add(make_view(bytes, 0, offset), hash))
    }

    /// Adds a group with key `view` (not NULL's) to the table.
    fn add(&mut self, view: u128, hash: u64) -> u32 {
        let group = self.views.len() as u32;
        self.views.push(view);
        self.hashes.push(hash);
        let hashes = &self.hashes;
        self.table
            .insert_unique(hash, group, |&g| hashes[g as usize]);
        group
    }

    /// The keys, one row per group in group order.
    fn into_array(self) -> StringViewArray {
        let nulls = self.null_group.map(|group| {
            let mut valid = vec![true; self.views.len()];
            valid[group as usize] = false;
            NullBuffer::from(valid)
        });
        let buffers = if self.long_keys.is_empty() {
            Vec::new()
        } else {
            vec![Buffer::from_vec(self.long_keys)]
        };
        // SAFETY: inline views hold a valid UTF-8 string's bytes (copied
        // from a valid view, zero past the string); the others point at
        // offset/length ranges of `long_keys` (buffer 0) that hold a whole
        // key copied from a valid string; the NULL group's zero view is
        // marked null.
        unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(self.views), buffers, nulls) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups_of(keys: &[Option<&str>]) -> (Vec<usize>, Vec<Option<String>>) {
        let mut groups = TextGroups::with_capacity(0);
        let mut of_row = Vec::new();
        let array = StringViewArray::from(keys.to_vec());
        groups.intern(&array, &mut of_row).unwrap();
        // A second batch: the same keys find the same groups.
        let mut again = Vec::new();
        groups.intern(&array, &mut again).unwrap();
        assert_eq!(of_row, again);
        let keys = groups.into_array();
        (of_row, keys.iter().map(|k| k.map(str::to_string)).collect())
    }

    #[test]
    fn groups_short_long_null_and_empty_keys_in_first_seen_order() {
        let long = "a key well over twelve bytes";
        let (of_row, keys) = groups_of(&[
            Some("b"),
            Some(long),
            None,
            Some(""),
            Some("b"),
            Some("exactly12byt"),
            Some(long),
            None,
            Some("exactly12by"),
            Some("a key well over twelve bytes!"),
        ]);
        assert_eq!(of_row, vec![0, 1, 2, 3, 0, 4, 1, 2, 5, 6]);
        assert_eq!(
            keys,
            vec![
                Some("b".to_string()),
                Some(long.to_string()),
                None,
                Some(String::new()),
                Some("exactly12byt".to_string()),
                Some("exactly12by".to_string()),
                Some("a key well over twelve bytes!".to_string()),
            ]
        );
    }

    #[test]
    fn bytes_after_a_short_key_in_its_view_do_not_matter() {
        let clean = make_view(b"key", 0, 0);
        let dirty = clean | (0xff_u128 << 120);
        let mut groups = TextGroups::with_capacity(0);
        assert_eq!(groups.intern_inline(clean), groups.intern_inline(dirty));
        assert_eq!(groups.len(), 1);
    }

    #[test]
    fn many_groups_grow_the_table() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
        let refs: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let (of_row, out) = groups_of(&refs);
        assert_eq!(of_row, (0..10_000).collect::<Vec<_>>());
        assert_eq!(out, keys.into_iter().map(Some).collect::<Vec<_>>());
    }
}
