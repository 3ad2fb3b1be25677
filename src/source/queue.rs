//! The queue source (Spark's `queueStream`): items pushed from Rust or by
//! `INSERT INTO`, taken one per tick or all at once.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::Inbox;
use super::{QueueOptions, Source};
use crate::error::{BrookError, Result};

#[derive(Debug)]
pub(crate) struct QueueSource {
    pub options: QueueOptions,
}

#[async_trait]
impl Source for QueueSource {
    fn connector(&self) -> &'static str {
        "queue"
    }

    fn describe(&self) -> String {
        self.options.describe()
    }

    fn one_item_per_batch(&self) -> bool {
        self.options.one_at_a_time
    }

    async fn start(&self, _inbox: Arc<Inbox>) -> Result<()> {
        Ok(())
    }
}

/// Pushes items into a queue stream. Cheap to clone; every clone feeds the
/// same queue.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub(crate) stream: String,
    pub(crate) schema: SchemaRef,
    pub(crate) inbox: Arc<Inbox>,
}

impl QueueHandle {
    /// The stream this handle feeds.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The schema pushed batches must have (column names may differ; types
    /// and count must match).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Queues one item. Items wait until a query reads the stream; with
    /// `one_at_a_time` each item is one batch.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let batch = self.conform(batch)?;
        self.inbox.push_now(batch)
    }

    /// Like [`QueueHandle::push`], but when the queue is full
    /// (`max_pending_rows` / `max_pending_bytes`) waits until a batch has
    /// taken enough of it (backpressure for a fast producer).
    pub async fn push_wait(&self, batch: RecordBatch) -> Result<()> {
        let batch = self.conform(batch)?;
        self.inbox.push(batch).await
    }

    /// `batch` with the stream's schema, or an error naming both.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let fields = self.schema.fields();
        let given = batch.schema();
        let types_match = given.fields().len() == fields.len()
            && given
                .fields()
                .iter()
                .zip(fields.iter())
                .all(|(g, f)| g.data_type() == f.data_type());
        if !types_match {
            return Err(BrookError::invalid(format!(
                "stream '{}' expects columns ({}), got ({})",
                self.stream,
                arrow_columns(&self.schema),
                arrow_columns(&given)
            )));
        }
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            batch.columns().to_vec(),
        )?)
    }

    /// Closes the queue: once the items already queued have been taken, the
    /// stream ends and the queries reading only it finish.
    pub fn close(&self) {
        self.inbox.close();
    }

    /// Whether [`QueueHandle::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }
}

/// `schema`'s columns as `name ArrowType, ...`: a batch pushed from Rust
/// is refused for its Arrow types (`Utf8` where the stream holds
/// `Utf8View`), which SQL type names would not tell apart.
fn arrow_columns(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}
