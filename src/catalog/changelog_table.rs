//! The table DataFusion sees for a table kept current from a changelog
//! (`CREATE TABLE ... WITH (connector = 'postgres-cdc' | format =
//! 'debezium-json' | mode = 'upsert')`): each time a plan reads it, it
//! reads the rows current then, which the table's own query
//! (`engine::table_maintainer`) publishes after each batch of changes.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use parking_lot::RwLock;

use super::stream_table::{BatchSlot, BoundVersioned, QueryBindings};

/// A table's current rows, as last published.
#[derive(Debug)]
pub(crate) struct CurrentRows {
    pub name: String,
    schema: SchemaRef,
    rows: RwLock<RecordBatch>,
}

impl CurrentRows {
    /// An empty table of `schema`.
    pub fn new(name: String, schema: SchemaRef) -> Self {
        let rows = RwLock::new(RecordBatch::new_empty(Arc::clone(&schema)));
        Self { name, schema, rows }
    }

    /// Makes `rows` (of the table's schema) the current rows.
    pub fn publish(&self, rows: RecordBatch) {
        *self.rows.write() = rows;
    }

    /// The rows current now.
    pub fn rows(&self) -> RecordBatch {
        self.rows.read().clone()
    }

    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }
}

impl PartitionStream for CurrentRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rows = self.rows();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(async move { Ok(rows) }),
        ))
    }
}

/// A table whose rows follow a changelog.
#[derive(Debug)]
pub(crate) struct ChangelogTable {
    pub current: Arc<CurrentRows>,
    /// The table declares an event time (`WATERMARK FOR`): a continuous
    /// query reads it through a slot of its own, filled with its versions
    /// as of its rows' event times (an event-time temporal join).
    pub versioned: bool,
}

#[async_trait]
impl TableProvider for ChangelogTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.current.schema)
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
        let bindings = state.config().get_extension::<QueryBindings>();
        let partition: Arc<dyn PartitionStream> = match bindings {
            Some(bindings) if self.versioned => {
                let slot = Arc::new(BatchSlot::new(Arc::clone(&self.current.schema)));
                bindings.bind_versioned(BoundVersioned {
                    table: self.current.name.clone(),
                    rows: self.current.rows(),
                    slot: Arc::clone(&slot),
                });
                slot
            }
            _ => Arc::clone(&self.current) as Arc<dyn PartitionStream>,
        };
        let table = StreamingTable::try_new(Arc::clone(&self.current.schema), vec![partition])?;
        table.scan(state, projection, filters, limit).await
    }
}
