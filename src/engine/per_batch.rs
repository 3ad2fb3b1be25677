//! The per-batch engine: one result per micro-batch, computed from that
//! batch alone; nothing is retained between batches.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::unnest::UnnestExec;

use crate::catalog::stream_table::BatchSlot;
use crate::error::Result;
use crate::exec::split_unnest::SplitUnnestExec;
use crate::exec::text_group_by::TextGroupByExec;
use crate::query::engine::{BatchEngine, Emission, LiveBatch, MicroBatch};

/// Rows per piece when a micro-batch is dealt out over partitions.
const PIECE_ROWS: usize = 8192;

/// A physical plan prepared once for one degree of parallelism.
pub(crate) struct PlanVariant {
    pub plan: Arc<dyn ExecutionPlan>,
    pub task_ctx: Arc<TaskContext>,
    /// Batches with at least this many rows use this variant.
    pub min_rows: usize,
    /// Each scan's slots (one per partition) with the index of its stream
    /// in the batch's inputs.
    pub scans: Vec<(usize, Vec<Arc<BatchSlot>>)>,
}

impl PlanVariant {
    /// Whether no stream is scanned twice by the plan.
    fn one_scan_per_input(&self) -> bool {
        let mut inputs: Vec<usize> = self.scans.iter().map(|(input, _)| *input).collect();
        inputs.sort_unstable();
        inputs.windows(2).all(|pair| pair[0] != pair[1])
    }
}

/// A query prepared once, executed per batch. It may hold a single-partition
/// plan for small batches and a parallel one for large batches; each batch
/// runs on the plan its size calls for.
pub(crate) struct PerBatchEngine {
    /// Ordered by `min_rows`, the first at 0.
    variants: Vec<PlanVariant>,
    schema: SchemaRef,
    /// Rows of the last batch: a batch read while it arrives runs on the
    /// plan the last one's size called for (its own is not known yet). The
    /// first batch, with no last one, runs on the parallel plan when that
    /// reads as rows arrive (an aggregate): a stream that starts with a
    /// flood (a socket's backlog, a directory's files, a long trigger
    /// interval) would otherwise run its whole first batch on one core. A
    /// plan that keeps its rows reads at most the stream's bound before the
    /// tick, and returns them in arrival order on one partition.
    last_rows: Option<usize>,
    /// Per variant, whether its plan may read a batch as fast as it comes
    /// (see [`reads_freely`]).
    reads_freely: Vec<bool>,
    /// The window of a `RUNNING` query whose plan reads no row of its
    /// stream (`WHERE false`): the same result every batch.
    constant: Option<String>,
}

impl PerBatchEngine {
    /// An engine over `first` (for every batch size) and, optionally, a
    /// parallel variant for large batches.
    pub fn new(first: PlanVariant, parallel: Option<PlanVariant>) -> Self {
        let schema = first.plan.schema();
        let mut variants = vec![first];
        variants.extend(parallel);
        let reads_freely = variants
            .iter()
            .map(|variant| reads_freely(&variant.plan, false))
            .collect();
        Self {
            variants,
            schema,
            last_rows: None,
            reads_freely,
            constant: None,
        }
    }

    /// A `RUNNING` query (`window` as `EXPLAIN` names it) whose plan reads
    /// no row of its stream: it runs once per batch, with the same result
    /// each time.
    pub fn constant(plan: PlanVariant, window: String) -> Self {
        Self {
            constant: Some(window),
            ..Self::new(plan, None)
        }
    }

    /// The plan for a batch of `rows` rows, and whether it reads freely.
    fn variant(&self, rows: usize) -> Option<(&PlanVariant, bool)> {
        let index = self.variants.iter().rposition(|v| v.min_rows <= rows)?;
        Some((&self.variants[index], self.reads_freely[index]))
    }
}

#[async_trait]
impl BatchEngine for PerBatchEngine {
    fn describe(&self) -> String {
        if let Some(window) = &self.constant {
            return format!(
                "window: {window}\nconstant: the plan reads no rows of its stream; it runs once per micro-batch"
            );
        }
        let reading = if self.reads_freely.first().copied().unwrap_or(false) {
            "it reads each batch's rows as they arrive"
        } else {
            "it keeps the rows it reads until the batch ends, so it reads at most the streams' bounds before each tick"
        };
        format!(
            "per batch: the plan below runs once per micro-batch; nothing is retained between batches; {reading}"
        )
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        let rows = self.last_rows.unwrap_or_else(|| {
            if self.reads_freely.last().copied().unwrap_or(false) {
                usize::MAX
            } else {
                0
            }
        });
        let Some((variant, reads_freely)) = self.variant(rows) else {
            return Ok(None);
        };
        if !variant.one_scan_per_input() {
            // A stream read twice (a self-join): each scan needs all of
            // the batch, not a share of one reader's pieces.
            let whole = batch.collect().await?;
            self.last_rows = Some(whole.rows);
            return self.on_batch(&whole).await;
        }
        // Every partition of a scan reads the same reader: each takes the
        // next piece when it is ready for one.
        for (input, slots) in &variant.scans {
            let reader = &batch.inputs[*input];
            if !reads_freely {
                reader.hold_rows();
            }
            for slot in slots {
                slot.set_live(Arc::clone(reader), None);
            }
        }
        let result = super::run(&variant.plan, &variant.task_ctx).await;
        for (_, slots) in &variant.scans {
            slots.iter().for_each(|slot| slot.clear());
        }
        self.last_rows = Some(batch.end().await.rows);
        Ok(Some(Emission {
            batches: result?,
            window: None,
            event: None,
        }))
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let Some((variant, _)) = self.variant(batch.rows) else {
            return Ok(None);
        };
        for (input, slots) in &variant.scans {
            for (slot, share) in slots.iter().zip(deal(&batch.inputs[*input], slots.len())) {
                slot.set(share);
            }
        }
        let result = super::run(&variant.plan, &variant.task_ctx).await;
        for (_, slots) in &variant.scans {
            slots.iter().for_each(|slot| slot.clear());
        }
        Ok(Some(Emission {
            batches: result?,
            window: None,
            event: None,
        }))
    }
}

/// Whether `plan` passes rows on without keeping them.
fn passes_rows_on(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<SplitUnnestExec>().is_some()
        || plan.downcast_ref::<UnnestExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
}

/// Whether `plan` aggregates (its state is one row per group).
fn aggregates(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>().is_some()
        || plan.downcast_ref::<TextGroupByExec>().is_some()
}

/// Whether every stream scan of `plan` reaches an aggregate (whose state is
/// one row per group, whatever the rows) through operators that only pass
/// rows on: then the plan may read a batch as fast as it comes. Otherwise
/// (rows returned, sorted, joined) the plan keeps what it reads until the
/// batch ends, and its readers hold to the stream's bounds.
pub(crate) fn reads_freely(plan: &Arc<dyn ExecutionPlan>, under_aggregate: bool) -> bool {
    if plan.downcast_ref::<StreamingTableExec>().is_some() {
        return under_aggregate;
    }
    let under_aggregate = aggregates(plan) || (under_aggregate && passes_rows_on(plan));
    plan.children()
        .iter()
        .all(|child| reads_freely(child, under_aggregate))
}

/// Deals `batches` out to `partitions` shares, round-robin, in pieces of at
/// most [`PIECE_ROWS`] rows (slicing copies nothing).
fn deal(batches: &[RecordBatch], partitions: usize) -> Vec<Vec<RecordBatch>> {
    if partitions <= 1 {
        return vec![batches.to_vec()];
    }
    let mut shares = vec![Vec::new(); partitions];
    let mut next = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = PIECE_ROWS.min(batch.num_rows() - offset);
            shares[next % partitions].push(batch.slice(offset, len));
            next += 1;
            offset += len;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn deal_slices_batches_round_robin_without_losing_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let batch = |from: i32, rows: i32| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from_iter_values(from..from + rows))],
            )
            .unwrap()
        };
        let input = vec![batch(0, 20_000), batch(20_000, 100)];
        let shares = deal(&input, 2);
        let sizes: Vec<Vec<usize>> = shares
            .iter()
            .map(|s| s.iter().map(RecordBatch::num_rows).collect())
            .collect();
        assert_eq!(sizes, vec![vec![8192, 3616], vec![8192, 100]]);
        let mut all: Vec<i32> = shares
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        all.sort();
        assert_eq!(all, (0..20_100).collect::<Vec<_>>());
        assert_eq!(deal(&input, 1), vec![input.clone()]);
    }
}
