//! The one trait every way of running a continuous query implements. The
//! planner picks an engine per query; the driver feeds it one micro-batch
//! per tick and turns what it emits into [`BatchOutput`](super::BatchOutput)s.
//!
//! Adding a way to run a query is one new engine in [`crate::engine`] plus
//! the planner's choice of it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::{Retained, WindowBounds};
use crate::error::Result;

/// One micro-batch as a query sees it.
#[derive(Debug)]
pub(crate) struct MicroBatch {
    /// The batch's number within the query, from 1.
    pub number: u64,
    /// The wall-clock time of the tick that cut it.
    pub time: DateTime<Utc>,
    /// Per stream the query reads (in the order the planner listed them),
    /// the record batches the tick cut from it.
    pub inputs: Vec<Vec<RecordBatch>>,
    /// Rows over all inputs.
    pub rows: usize,
    /// Per input, whether its stream has ended (this batch holds its last
    /// rows, or none).
    pub ended: Vec<bool>,
}

/// What an engine produced for a batch (or at the end of input).
#[derive(Debug)]
pub(crate) struct Emission {
    pub batches: Vec<RecordBatch>,
    /// The window the result covers, for windowed engines.
    pub window: Option<WindowBounds>,
    /// For event-time windows: the watermark and the late rows.
    pub event: Option<EventReport>,
}

/// What an event-time query reports of a batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventReport {
    /// The watermark after the batch, in milliseconds since the epoch.
    pub watermark: Option<i64>,
    /// Rows of the batch that were late.
    pub late_rows: u64,
    /// Rows of the batch too far ahead of the wall clock to move the
    /// watermark.
    pub far_future_rows: u64,
    /// Things to warn about (late rows that could not be routed).
    pub warnings: Vec<String>,
}

/// A way of running a continuous query, batch by batch.
#[async_trait]
pub(crate) trait BatchEngine: Send {
    /// The schema of every result.
    fn schema(&self) -> SchemaRef;

    /// Takes the next micro-batch; returns a result when the batch completes
    /// one (every batch for a per-batch query; once per slide for a window).
    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>>;

    /// Every input has ended: the result still owed, if any (the window
    /// holding the last batches).
    async fn on_end(&mut self) -> Result<Option<Emission>> {
        Ok(None)
    }

    /// The query is stopping (a graceful stop) before its inputs ended: the
    /// result still owed, if any. By default what [`BatchEngine::on_end`]
    /// gives; event-time windows emit nothing (their open windows are not
    /// complete; a checkpoint keeps them).
    async fn on_stop(&mut self) -> Result<Option<Emission>> {
        self.on_end().await
    }

    /// What the engine holds between batches.
    fn retained(&self) -> Retained {
        Retained::default()
    }

    /// The engine's state as Arrow record batches, from which
    /// [`BatchEngine::restore`] rebuilds it (for checkpoints).
    #[cfg_attr(not(test), allow(dead_code))] // used by checkpoints and the state tests
    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Replaces the engine's state by one that [`BatchEngine::snapshot`]
    /// returned.
    #[cfg_attr(not(test), allow(dead_code))] // used by checkpoints and the state tests
    async fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(crate::error::BrookError::Internal(
                "a state was given to an engine that keeps none".into(),
            ))
        }
    }
}
