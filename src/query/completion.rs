//! What follows a batch once it is done with — run by the engine and, when
//! it has an output, that output handled (the consumer asked for the next
//! one: the console printed it, a sink wrote it). Both ends are calls:
//! [`BatchDone::complete`] writes the query's checkpoint after the batch,
//! then releases its streams' cuts (a Kafka stream may commit their
//! offsets once every query released them); [`BatchDone::abandon`], for
//! an output its consumer could not handle, writes no checkpoint and holds
//! the cuts back, so that no later checkpoint or commit is made. A
//! `BatchDone` dropped without either call writes no checkpoint.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;

use super::registry::QueryEntry;
use crate::checkpoint::QueryCheckpoints;
use crate::error::{Warning, WarningHandler};
use crate::stream::cuts::InFlight;

/// What is done once a batch is done with (see the module docs).
#[derive(Debug, Default)]
#[must_use = "a batch is done with by complete() or abandon()"]
pub(crate) struct BatchDone {
    checkpoint: Option<PendingCheckpoint>,
    cuts: InFlight,
}

impl BatchDone {
    /// What follows the batch: its checkpoint (if one is due) and its cuts.
    pub fn new(checkpoint: Option<PendingCheckpoint>, cuts: InFlight) -> Self {
        Self { checkpoint, cuts }
    }

    /// The batch is done with: its checkpoint is written, then its cuts are
    /// released (in that order, so that no offset is committed past a
    /// state that was not saved).
    pub fn complete(self) {
        if let Some(pending) = &self.checkpoint {
            pending.write();
        }
        self.cuts.release();
    }

    /// The batch was not handled (a sink failed to write its output): its
    /// checkpoint and cuts, and every later one of the query, do not count.
    pub fn abandon(self) {
        if let Some(pending) = &self.checkpoint {
            pending.checkpoints.abandoned.store(true, Ordering::Relaxed);
        }
        self.cuts.hold_back();
        self.cuts.release();
    }
}

/// A query's checkpoints as its batches complete.
pub(crate) struct CheckpointWriter {
    pub checkpoints: QueryCheckpoints,
    /// The streams the query reads, in input order: a checkpoint records
    /// where each one's source stands after the batch.
    pub sources: Vec<(String, Arc<dyn crate::source::Source>)>,
    /// A checkpoint every this many batches.
    pub interval: u64,
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
    /// Per input, the inbox items taken once the batch was cut.
    pub items_after: Vec<u64>,
}

impl PendingCheckpoint {
    /// Writes the checkpoint, unless the query's outputs were abandoned or
    /// a later checkpoint is already written.
    fn write(&self) {
        let writer = &self.checkpoints;
        if writer.abandoned.load(Ordering::Relaxed) {
            return;
        }
        let _writing = writer.writing.lock();
        if writer
            .entry
            .stats
            .lock()
            .checkpoint
            .is_some_and(|done| done >= self.batch)
        {
            return;
        }
        let positions = writer
            .sources
            .iter()
            .zip(&self.items_after)
            .filter_map(|((stream, source), items)| {
                Some((stream.clone(), source.position_after(*items)?))
            })
            .collect();
        match writer
            .checkpoints
            .commit(self.batch, self.batch_time, &self.state, positions)
        {
            Ok(bytes) => {
                let mut stats = writer.entry.stats.lock();
                stats.checkpoint = Some(self.batch);
                stats.checkpoint_bytes = bytes;
                stats.checkpoint_written = Some(Utc::now());
            }
            Err(err) => {
                // The next batch tries again; a restart resumes from the
                // last checkpoint written.
                (writer.warn)(&Warning::Checkpoint {
                    query: writer.entry.id,
                    batch: self.batch,
                    source: err,
                });
            }
        }
    }
}
