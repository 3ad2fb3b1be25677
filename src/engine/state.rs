//! Engine state as Arrow record batches, for checkpoints: each batch of a
//! snapshot carries a label in its schema metadata saying what part of the
//! state it is, so that a snapshot written as Arrow IPC restores itself.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::Result;

/// The schema metadata key holding a state batch's label.
#[cfg_attr(not(test), allow(dead_code))]
const LABEL_KEY: &str = "brook.state";

/// `batch` labelled as `label`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn label(batch: RecordBatch, label: &str) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut metadata: HashMap<String, String> = schema.metadata().clone();
    metadata.insert(LABEL_KEY.to_string(), label.to_string());
    let schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
    Ok(batch.with_schema(schema)?)
}

/// The label of a state batch.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn label_of(batch: &RecordBatch) -> Option<&str> {
    batch
        .schema_ref()
        .metadata()
        .get(LABEL_KEY)
        .map(String::as_str)
}

/// `batch` without its label, with the schema it had before labelling.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn unlabel(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut metadata = schema.metadata().clone();
    metadata.remove(LABEL_KEY);
    let schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema,
        batch.columns().to_vec(),
        &options,
    )?)
}
