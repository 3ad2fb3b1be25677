//! The one trait every way of running a continuous query implements. The
//! planner picks an engine per query; the driver hands it each micro-batch
//! as it opens, the engine reads it while it arrives, and the driver turns
//! what it emits into [`BatchOutput`](super::BatchOutput)s.
//!
//! Adding a way to run a query is one new engine in [`crate::engine`] plus
//! the planner's choice of it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::{Retained, WindowBounds};
use crate::error::Result;
use crate::stream::feed::{FeedEnd, FeedReader};

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

/// One micro-batch while it arrives: the query's readers of its streams'
/// batches, which end when the clock cuts them (or the streams end).
#[derive(Debug)]
pub(crate) struct LiveBatch {
    /// The batch's number within the query, from 1.
    pub number: u64,
    /// Per stream the query reads (in the order the planner listed them).
    pub inputs: Vec<std::sync::Arc<FeedReader>>,
}

/// How a micro-batch ended, once every input has.
#[derive(Debug)]
pub(crate) struct BatchEnd {
    /// The wall-clock time it was cut (the latest of its inputs').
    pub time: DateTime<Utc>,
    pub instant: tokio::time::Instant,
    /// Rows over all inputs.
    pub rows: usize,
    /// Per input, how its batch ended.
    pub inputs: Vec<FeedEnd>,
}

impl BatchEnd {
    /// Per input, whether its stream has ended.
    pub fn ended(&self) -> Vec<bool> {
        self.inputs.iter().map(|input| input.ended).collect()
    }
}

impl LiveBatch {
    /// Waits until the batch has a row to read or has ended; says whether
    /// it has a row.
    pub async fn wait_for_rows(&self) -> bool {
        let mut waiting: Vec<_> = self
            .inputs
            .iter()
            .map(|input| Box::pin(input.ready()))
            .collect();
        while !waiting.is_empty() {
            let (has_row, _, rest) = futures::future::select_all(waiting).await;
            if has_row {
                return true;
            }
            waiting = rest;
        }
        false
    }

    /// The batch's next rows per input, for an engine that folds them into
    /// its state as they arrive: what is there now, up to about `max_rows`
    /// (more pieces are not waited for while some are in hand, so what
    /// arrived is folded while the source is slow), waiting only when
    /// nothing is. `None` once every input has ended and all is read.
    pub async fn next_chunk(&self, max_rows: usize) -> Option<Vec<Vec<RecordBatch>>> {
        loop {
            let mut chunk = vec![Vec::new(); self.inputs.len()];
            let mut rows = 0;
            'fill: loop {
                let mut took = false;
                for (input, reader) in self.inputs.iter().enumerate() {
                    if let Some(piece) = reader.try_next() {
                        took = true;
                        rows += piece.num_rows();
                        chunk[input].push(piece);
                        if rows >= max_rows {
                            break 'fill;
                        }
                    }
                }
                if !took {
                    break;
                }
            }
            if rows > 0 {
                // The fold that follows may find its next chunk ready each
                // time: the clock and the other queries get their turn.
                tokio::task::yield_now().await;
                return Some(chunk);
            }
            if !self.wait_for_rows().await {
                return None;
            }
        }
    }

    /// Waits for every input's end, skipping what was not read.
    pub async fn end(&self) -> BatchEnd {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            inputs.push(input.end().await);
        }
        let latest = inputs.iter().max_by_key(|input| input.instant);
        BatchEnd {
            time: latest.map_or_else(Utc::now, |input| input.time),
            instant: latest.map_or_else(tokio::time::Instant::now, |input| input.instant),
            rows: inputs.iter().map(|input| input.rows).sum(),
            inputs,
        }
    }

    /// Time spent waiting for the sources (the most of any input).
    pub fn waited(&self) -> std::time::Duration {
        self.inputs
            .iter()
            .map(|input| input.waited())
            .max()
            .unwrap_or_default()
    }

    /// Reads the whole batch: returns once it has ended. It is held whole,
    /// so each input reads at most its stream's bounds before the cut.
    pub async fn collect(&self) -> Result<MicroBatch> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            input.hold_rows();
        }
        for input in &self.inputs {
            let mut pieces = Vec::new();
            while let Some(piece) = input.next().await {
                pieces.push(piece?);
            }
            inputs.push(pieces);
        }
        let end = self.end().await;
        Ok(MicroBatch {
            number: self.number,
            time: end.time,
            inputs,
            rows: end.rows,
            ended: end.ended(),
        })
    }
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

impl EventReport {
    /// Adds the counts and warnings of `part` (a chunk of the same batch).
    pub fn absorb(&mut self, part: EventReport) {
        self.late_rows += part.late_rows;
        self.far_future_rows += part.far_future_rows;
        self.warnings.extend(part.warnings);
        if part.watermark.is_some() {
            self.watermark = part.watermark;
        }
    }
}

/// A way of running a continuous query, batch by batch.
#[async_trait]
pub(crate) trait BatchEngine: Send {
    /// The schema of every result.
    fn schema(&self) -> SchemaRef;

    /// How the query runs, as `EXPLAIN` says it under the query's head:
    /// the window, what is retained, what is emitted when.
    fn describe(&self) -> String;

    /// Takes the next micro-batch; returns a result when the batch completes
    /// one (every batch for a per-batch query; once per slide for a window).
    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>>;

    /// Takes the next micro-batch as it arrives. By default it is read
    /// whole and handed to [`BatchEngine::on_batch`]; engines whose plans
    /// can consume it piece by piece do so while it arrives.
    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        let batch = batch.collect().await?;
        self.on_batch(&batch).await
    }

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
