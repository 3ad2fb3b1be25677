//! The table DataFusion sees for a table kept current from a changelog
//! (`CREATE TABLE ... WITH (connector = 'postgres-cdc' | format =
//! 'debezium-json' | mode = 'upsert')`): each time a plan reads it, it
//! reads the rows current then, from the table's own query
//! (`engine::table_maintainer`), built again only after a change.

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
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::stream_table::{BatchSlot, BoundVersioned, QueryBindings};

/// Where a table's current rows come from: the query that keeps them
/// (see `engine::table_maintainer`).
pub(crate) trait RowsSource: Send + Sync {
    /// Every current row, in the table's declared columns.
    fn rows(&self) -> datafusion::error::Result<RecordBatch>;
}

/// A table's current rows, built from their source when read after a
/// change (not at each change: a batch of changes costs no copy of the
/// table unless a plan reads it).
pub(crate) struct CurrentRows {
    pub name: String,
    schema: SchemaRef,
    source: RwLock<Option<Arc<dyn RowsSource>>>,
    /// Bumped by each change.
    version: AtomicU64,
    /// The rows built last, with the version they were built at.
    built: Mutex<(u64, RecordBatch)>,
}

impl std::fmt::Debug for CurrentRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentRows")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CurrentRows {
    /// An empty table of `schema`.
    pub fn new(name: String, schema: SchemaRef) -> Self {
        let empty = RecordBatch::new_empty(Arc::clone(&schema));
        Self {
            name,
            schema,
            source: RwLock::new(None),
            version: AtomicU64::new(0),
            built: Mutex::new((0, empty)),
        }
    }

    /// Reads the rows from `source` from now on.
    pub fn set_source(&self, source: Arc<dyn RowsSource>) {
        *self.source.write() = Some(source);
        self.changed();
    }

    /// Says the rows changed.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The rows current now.
    pub fn rows(&self) -> datafusion::error::Result<RecordBatch> {
        let version = self.version.load(Ordering::Acquire);
        let mut built = self.built.lock();
        if built.0 != version {
            let rows = match self.source.read().as_ref() {
                Some(source) => source.rows()?,
                None => RecordBatch::new_empty(Arc::clone(&self.schema)),
            };
            *built = (version, rows);
        }
        Ok(built.1.clone())
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
            futures::stream::once(async move { rows }),
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
                    rows: self.current.rows()?,
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
