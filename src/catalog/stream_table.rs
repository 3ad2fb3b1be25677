//! The table DataFusion sees for a stream, and how planning a continuous
//! query binds each of its scans to a [`BatchSlot`] that the query fills
//! with each batch (or points at the batch while it arrives).

use parking_lot::Mutex;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::window_kind::WindowKind;
use crate::stream::feed::FeedReader;

/// The table DataFusion sees for a stream. It can only be scanned while
/// planning a continuous query, which binds each scan to a [`BatchSlot`].
#[derive(Debug)]
pub(crate) struct StreamTable {
    pub name: String,
    pub schema: SchemaRef,
    /// Set when the stream is read through `HOP`, `TUMBLE` or `RUNNING`.
    pub window: Option<WindowKind>,
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let bindings = state
            .config()
            .get_extension::<QueryBindings>()
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "stream '{}' can only be read by a continuous query (SELECT ... FROM {})",
                    self.name, self.name
                ))
            })?;
        // One slot per partition the session plans for.
        let slots: Vec<Arc<BatchSlot>> = (0..state.config().target_partitions().max(1))
            .map(|_| Arc::new(BatchSlot::new(Arc::clone(&self.schema))))
            .collect();
        bindings.bind(BoundScan {
            stream: self.name.clone(),
            slots: slots.clone(),
        });
        let partitions = slots
            .into_iter()
            .map(|slot| slot as Arc<dyn PartitionStream>)
            .collect();
        let table = StreamingTable::try_new(Arc::clone(&self.schema), partitions)?;
        // A window's LIMIT applies to the window, not to each batch: a
        // windowed scan never takes a limit, so an operator above it does.
        let limit = if self.window.is_some() { None } else { limit };
        table.scan(state, projection, filters, limit).await
    }
}

/// Collects the stream scans made while planning one query: for each scan,
/// the stream and one slot per partition.
#[derive(Debug, Default)]
pub(crate) struct QueryBindings {
    scans: Mutex<Vec<BoundScan>>,
    lookups: Mutex<Vec<BoundLookup>>,
    versioned: Mutex<Vec<BoundVersioned>>,
}

/// One scan of a table kept current from a changelog with event time,
/// made while planning a continuous query: the slot an event-time
/// temporal join fills with the table's rows as of a stream row's time.
#[derive(Debug, Clone)]
pub(crate) struct BoundVersioned {
    /// The table, and its changelog stream, by name.
    pub table: String,
    /// The table's rows when the query was planned (its declared columns).
    pub rows: RecordBatch,
    pub slot: Arc<BatchSlot>,
}

/// One scan of a lookup table made while planning: the slot the query
/// fills with a batch's looked-up rows.
#[derive(Debug, Clone)]
pub(crate) struct BoundLookup {
    pub lookup: Arc<crate::source::lookup::PostgresLookup>,
    pub slot: Arc<BatchSlot>,
}

/// One scan of a stream made while planning.
#[derive(Debug)]
pub(crate) struct BoundScan {
    pub stream: String,
    /// One slot per partition.
    pub slots: Vec<Arc<BatchSlot>>,
}

impl QueryBindings {
    fn bind(&self, scan: BoundScan) {
        self.scans.lock().push(scan);
    }

    /// The scans bound so far.
    pub fn take(&self) -> Vec<BoundScan> {
        std::mem::take(&mut *self.scans.lock())
    }

    pub(super) fn bind_lookup(&self, lookup: BoundLookup) {
        self.lookups.lock().push(lookup);
    }

    /// The lookup-table scans bound so far.
    pub fn take_lookups(&self) -> Vec<BoundLookup> {
        std::mem::take(&mut *self.lookups.lock())
    }

    pub(super) fn bind_versioned(&self, versioned: BoundVersioned) {
        self.versioned.lock().push(versioned);
    }

    /// The scans of versioned tables bound so far.
    pub fn take_versioned(&self) -> Vec<BoundVersioned> {
        std::mem::take(&mut *self.versioned.lock())
    }
}

/// What a scan reads on its next execution: record batches, or a stream's
/// batch while it arrives.
pub(crate) struct BatchSlot {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
    live: Mutex<Option<(Arc<FeedReader>, Option<PieceMap>)>>,
}

/// Turns each piece of a live batch into what the scan reads (a window's
/// scan adds its window columns).
pub(crate) type PieceMap =
    Arc<dyn Fn(RecordBatch) -> datafusion::error::Result<RecordBatch> + Send + Sync>;

impl std::fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSlot")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl BatchSlot {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Mutex::new(Vec::new()),
            live: Mutex::new(None),
        }
    }

    /// A fresh slot with `schema` and a one-partition scan that reads it.
    pub fn with_scan(
        schema: &SchemaRef,
    ) -> datafusion::error::Result<(Arc<BatchSlot>, Arc<dyn ExecutionPlan>)> {
        let slot = Arc::new(BatchSlot::new(Arc::clone(schema)));
        let scan = StreamingTableExec::try_new(
            Arc::clone(schema),
            vec![Arc::clone(&slot) as Arc<dyn PartitionStream>],
            None,
            Vec::new(),
            false,
            None,
        )?;
        Ok((slot, Arc::new(scan)))
    }

    /// The schema of the batches the slot holds.
    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    /// What the next execution reads.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock() = batches;
    }

    /// What the next execution reads: the pieces of a stream's batch as
    /// they arrive. Partitions given the same reader share out its pieces.
    /// With `map`, each piece is what it makes of it.
    pub fn set_live(&self, reader: Arc<FeedReader>, map: Option<PieceMap>) {
        *self.live.lock() = Some((reader, map));
    }

    /// Empties the slot, so that it holds no batch between executions.
    pub fn clear(&self) {
        self.batches.lock().clear();
        *self.live.lock() = None;
    }
}

impl PartitionStream for BatchSlot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        if let Some((reader, map)) = self.live.lock().as_ref() {
            let pieces = reader.stream();
            return match map {
                None => pieces,
                Some(map) => {
                    let map = Arc::clone(map);
                    Box::pin(RecordBatchStreamAdapter::new(
                        Arc::clone(&self.schema),
                        futures::StreamExt::map(pieces, move |piece| piece.and_then(|p| map(p))),
                    ))
                }
            };
        }
        let batches = self.batches.lock().clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}
