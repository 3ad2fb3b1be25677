//! What follows a batch once its output has been handled: the query's
//! checkpoint after the batch is written when the last copy of the
//! [`BatchOutput`](super::BatchOutput) is dropped — after the console
//! printed it or a sink wrote it — unless the consumer said the output was
//! not handled ([`BatchCompletion::abandon`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;

use super::registry::QueryEntry;
use crate::checkpoint::QueryCheckpoints;
use crate::error::{BrookError, WarningHandler};
use crate::sync::lock;

/// Attached to a [`BatchOutput`](super::BatchOutput); see the module docs.
/// Outputs made outside brook (for a sink's tests) take
/// `BatchCompletion::default()`, which does nothing.
#[derive(Debug, Clone, Default)]
pub struct BatchCompletion(Option<Arc<PendingCheckpoint>>);

impl BatchCompletion {
    pub(crate) fn checkpoint(pending: PendingCheckpoint) -> Self {
        Self(Some(Arc::new(pending)))
    }

    /// The output was not handled (a sink failed to write it): its
    /// checkpoint, and every later one of the query, is not written, so
    /// that a restart resumes before it.
    pub fn abandon(&self) {
        if let Some(pending) = &self.0 {
            pending.checkpoints.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// A query's checkpoints as its batches complete.
pub(crate) struct CheckpointWriter {
    pub checkpoints: QueryCheckpoints,
    pub entry: Arc<QueryEntry>,
    pub warn: WarningHandler,
    /// Set once an output was abandoned: no later checkpoint is written.
    pub abandoned: AtomicBool,
    /// Serialises the writes (they complete in batch order).
    pub writing: Mutex<()>,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("dir", &self.checkpoints.dir())
            .finish_non_exhaustive()
    }
}

/// The state after one batch, written when its output is done with.
#[derive(Debug)]
pub(crate) struct PendingCheckpoint {
    pub checkpoints: Arc<CheckpointWriter>,
    pub batch: u64,
    pub batch_time: DateTime<Utc>,
    pub state: Vec<RecordBatch>,
}

impl PendingCheckpoint {
    /// Writes the checkpoint, unless the query's outputs were abandoned or
    /// a later checkpoint is already written.
    fn write(&self) {
        let writer = &self.checkpoints;
        if writer.abandoned.load(Ordering::Relaxed) {
            return;
        }
        let _writing = lock(&writer.writing);
        if lock(&writer.entry.stats)
            .checkpoint
            .is_some_and(|done| done >= self.batch)
        {
            return;
        }
        match writer
            .checkpoints
            .commit(self.batch, self.batch_time, &self.state)
        {
            Ok(bytes) => {
                let mut stats = lock(&writer.entry.stats);
                stats.checkpoint = Some(self.batch);
                stats.checkpoint_bytes = bytes;
            }
            Err(err) => {
                // The next batch tries again; a restart resumes from the
                // last checkpoint written.
                (writer.warn)(&BrookError::invalid(format!(
                    "query {}: checkpoint after batch {} not written: {err}",
                    writer.entry.id, self.batch
                )));
            }
        }
    }
}

impl Drop for PendingCheckpoint {
    fn drop(&mut self) {
        self.write();
    }
}
