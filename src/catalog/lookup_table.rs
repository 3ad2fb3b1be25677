//! The table DataFusion sees for a lookup table: a continuous query's plan
//! scans a [`BatchSlot`] that the query fills, before each batch, with the
//! rows of the keys the batch holds (see `engine::lookup_join`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::PartitionStream;

use super::stream_table::{BatchSlot, BoundLookup, QueryBindings};
use crate::source::lookup::PostgresLookup;

/// A table looked up by key as batches need its rows.
#[derive(Debug)]
pub(crate) struct LookupTable {
    pub lookup: Arc<PostgresLookup>,
}

#[async_trait]
impl TableProvider for LookupTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.lookup.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let name = &self.lookup.name;
        let bindings = state
            .config()
            .get_extension::<QueryBindings>()
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "table '{name}' is looked up by key: join it with a stream (SELECT ... FROM stream s JOIN {name} t ON s.key = t.key)"
                ))
            })?;
        // One partition: a batch's looked-up rows are read once.
        let slot = Arc::new(BatchSlot::new(Arc::clone(&self.lookup.schema)));
        bindings.bind_lookup(BoundLookup {
            lookup: Arc::clone(&self.lookup),
            slot: Arc::clone(&slot),
        });
        let table = StreamingTable::try_new(
            Arc::clone(&self.lookup.schema),
            vec![slot as Arc<dyn PartitionStream>],
        )?;
        table.scan(state, projection, filters, limit).await
    }
}
