//! A materialized view's rows: the latest result of its continuous query,
//! replaced whole after each batch, so that a read sees one batch's result
//! (never half of one). Subscribers are told of each new result.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use tokio::sync::broadcast;

/// Results a slow subscriber may fall behind by before it misses some (it
/// is then told how many it missed).
const SUBSCRIBER_BACKLOG: usize = 64;

/// One result of a view's query.
#[derive(Debug, Clone, Default)]
pub struct ViewRows {
    /// The batch whose result this is (`None` before the first).
    pub batch_number: Option<u64>,
    /// The result's rows.
    pub batches: Vec<RecordBatch>,
}

/// The rows of a materialized view.
pub struct ViewTable {
    schema: SchemaRef,
    current: RwLock<Arc<ViewRows>>,
    updates: broadcast::Sender<Arc<ViewRows>>,
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ViewTable {
    /// An empty view of rows of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            current: RwLock::new(Arc::new(ViewRows::default())),
            updates: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }

    /// Replaces the rows with batch `batch_number`'s result. Subscribers
    /// hear of it when the rows changed (a `RUNNING` result is emitted
    /// every batch, mostly the same).
    pub fn replace(&self, batch_number: u64, batches: Vec<RecordBatch>) {
        let rows = Arc::new(ViewRows {
            batch_number: Some(batch_number),
            batches,
        });
        let previous = std::mem::replace(&mut *self.current.write(), Arc::clone(&rows));
        let changed =
            previous.batch_number.is_none() || !same_rows(&previous.batches, &rows.batches);
        if changed && self.updates.receiver_count() > 0 {
            // No subscriber is no error.
            let _ = self.updates.send(rows);
        }
    }

    /// The current rows.
    pub fn current(&self) -> Arc<ViewRows> {
        Arc::clone(&self.current.read())
    }

    /// The current rows, and each result after them.
    pub fn subscribe(&self) -> (Arc<ViewRows>, broadcast::Receiver<Arc<ViewRows>>) {
        // Subscribed under the read lock: no result falls between the two.
        let current = self.current.read();
        (Arc::clone(&current), self.updates.subscribe())
    }
}

/// Whether two results hold the same rows in the same order, however they
/// are cut into batches.
fn same_rows(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    let rows = |batches: &[RecordBatch]| batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    if rows(a) != rows(b) {
        return false;
    }
    let (Some(first), Some(_)) = (a.first(), b.first()) else {
        return true;
    };
    let schema = first.schema();
    match (
        datafusion::arrow::compute::concat_batches(&schema, a),
        datafusion::arrow::compute::concat_batches(&schema, b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let rows = self.current();
        Ok(MemorySourceConfig::try_new_exec(
            std::slice::from_ref(&rows.batches),
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
