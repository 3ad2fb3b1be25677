//! A stream joined with a lookup table (`CREATE TABLE ... WITH (connector
//! = 'postgres')`): before each batch runs, the distinct keys it holds are
//! looked up (one round trip for those the cache lacks) and the table's
//! scan reads their rows; the query's plan, per batch, does the rest.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;

use super::join_bounds::{linear, scan_of, trace};
use crate::catalog::stream_table::{BatchSlot, BoundLookup};
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, MicroBatch};
use crate::source::lookup::PostgresLookup;

/// Where a query looks a table up: the table, the slot its scan reads,
/// and which column of which stream holds the key.
pub(crate) struct LookupSite {
    lookup: Arc<PostgresLookup>,
    slot: Arc<BatchSlot>,
    /// The stream's index among the batch's inputs, and the key column in
    /// the stream's schema.
    stream_key: (usize, usize),
    /// The table's key column.
    table_key: usize,
}

/// Finds, for each lookup scan of `plan`, the hash join that joins it with
/// a stream scan (`streams`: input and slot) on an equality of columns.
pub(crate) fn find_sites(
    plan: &Arc<dyn ExecutionPlan>,
    streams: &[(usize, Arc<BatchSlot>)],
    lookups: Vec<BoundLookup>,
) -> Result<Vec<LookupSite>> {
    lookups
        .into_iter()
        .map(|bound| {
            site_in(plan, streams, &bound).ok_or_else(|| {
                BrookError::invalid(format!(
                    "table '{0}' is looked up by key: join it with a stream on an equality of one of its columns with a stream's column (SELECT ... FROM readings r JOIN {0} t ON r.key = t.key)",
                    bound.lookup.name
                ))
            })
        })
        .collect()
}

/// The site of `bound` in `plan`, if a hash join under it joins the
/// lookup scan with a stream scan on columns.
fn site_in(
    plan: &Arc<dyn ExecutionPlan>,
    streams: &[(usize, Arc<BatchSlot>)],
    bound: &BoundLookup,
) -> Option<LookupSite> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let lookup_scan = [(usize::MAX, Arc::clone(&bound.slot))];
        let children = [join.left(), join.right()];
        let lookup_side = children
            .iter()
            .position(|child| scan_of(child, &lookup_scan).is_some());
        if let Some(lookup_side) = lookup_side {
            let stream_child = children[1 - lookup_side];
            let (input, _) = scan_of(stream_child, streams)?;
            for (left, right) in join.on() {
                let (lookup_expr, stream_expr) = if lookup_side == 0 {
                    (left, right)
                } else {
                    (right, left)
                };
                let (Some((lookup_column, 0)), Some((stream_column, 0))) =
                    (linear(lookup_expr), linear(stream_expr))
                else {
                    continue;
                };
                let (Some((table_key, 0)), Some((stream_key, 0))) = (
                    trace(children[lookup_side], lookup_column),
                    trace(stream_child, stream_column),
                ) else {
                    continue;
                };
                return Some(LookupSite {
                    lookup: Arc::clone(&bound.lookup),
                    slot: Arc::clone(&bound.slot),
                    stream_key: (input, stream_key),
                    table_key,
                });
            }
        }
    }
    plan.children()
        .into_iter()
        .find_map(|child| site_in(child, streams, bound))
}

/// A per-batch query that looks tables up.
pub(crate) struct LookupJoinEngine {
    inner: Box<dyn BatchEngine>,
    sites: Vec<LookupSite>,
}

impl LookupJoinEngine {
    pub fn new(inner: Box<dyn BatchEngine>, sites: Vec<LookupSite>) -> Result<Self> {
        for site in &sites {
            site.lookup.key_type(site.table_key)?;
        }
        Ok(Self { inner, sites })
    }
}

/// Fills each lookup scan of `sites` with the rows of the keys `batch`
/// holds.
async fn look_up(sites: &[LookupSite], batch: &MicroBatch) -> Result<()> {
    {
        for site in sites {
            let (input, column) = site.stream_key;
            let keys: Vec<ArrayRef> = batch
                .inputs
                .get(input)
                .into_iter()
                .flatten()
                .map(|rows| Arc::clone(rows.column(column)))
                .collect();
            let keys: Vec<&dyn datafusion::arrow::array::Array> =
                keys.iter().map(|k| k.as_ref()).collect();
            let rows = if keys.is_empty() {
                datafusion::arrow::record_batch::RecordBatch::new_empty(Arc::clone(
                    &site.lookup.schema,
                ))
            } else {
                let keys = datafusion::arrow::compute::concat(&keys)?;
                site.lookup.rows_for(site.table_key, &keys).await?
            };
            site.slot.set(vec![rows]);
        }
        Ok(())
    }
}

#[async_trait]
impl BatchEngine for LookupJoinEngine {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn describe(&self) -> String {
        let mut text = self.inner.describe();
        for site in &self.sites {
            let lookup = &site.lookup;
            text.push_str(&format!(
                "\nlookup join: table '{}' by its column '{}': each batch's distinct keys read in one round trip for those the cache lacks ({})",
                lookup.name,
                lookup.schema.field(site.table_key).name(),
                lookup.describe_cache()
            ));
        }
        text
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let looked_up = look_up(&self.sites, batch).await;
        let result = match looked_up {
            Ok(()) => self.inner.on_batch(batch).await,
            Err(err) => Err(err),
        };
        for site in &self.sites {
            site.slot.clear();
        }
        result
    }

    async fn on_end(&mut self) -> Result<Option<Emission>> {
        self.inner.on_end().await
    }

    fn retained(&self) -> Retained {
        self.inner.retained()
    }
}
