//! The sliding (and tumbling) window engine: windows of whole micro-batches
//! in processing time, one emitted every slide. When a window is due and
//! what it covers is decided here; what a window holds and how its result is
//! computed belong to a [`PaneStore`] whose panes are the batches, keyed
//! by their number (raw batches re-run, or partial state merged).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::panes::{Bounds, PaneStore};
use super::state::{self, Part};
use crate::catalog::windows::SlidingWindow;
use crate::error::{BrookError, Result};
use crate::query::engine::{BatchEngine, Emission, LiveBatch, MicroBatch};
use crate::query::{Retained, WindowBounds};

/// A `HOP` or `TUMBLE` query over a [`PaneStore`] of batches.
pub(crate) struct SlidingEngine<S> {
    window: SlidingWindow,
    store: S,
    batches_seen: u64,
    last_emitted: u64,
    last_time: Option<DateTime<Utc>>,
}

impl<S: PaneStore> SlidingEngine<S> {
    pub fn new(window: SlidingWindow, store: S) -> Self {
        Self {
            window,
            store,
            batches_seen: 0,
            last_emitted: 0,
            last_time: None,
        }
    }

    /// Computes the window that ends at `end` with batch `last_batch`.
    async fn emit(&mut self, end: DateTime<Utc>, last_batch: u64) -> Result<Emission> {
        let size = TimeDelta::from_std(self.window.size).map_err(out_of_range)?;
        let start = end.checked_sub_signed(size).ok_or_else(|| {
            BrookError::invalid(format!(
                "a window ending at {end} cannot start before year 0"
            ))
        })?;
        let bounds = WindowBounds {
            start,
            end,
            batches: (
                last_batch.saturating_sub(self.window.size_batches()) + 1,
                last_batch,
            ),
        };
        let size = self.window.size_batches() as i64;
        let last = last_batch as i64;
        let panes = (last - size + 1)..(last + 1);
        let millis = Bounds {
            start: start.timestamp_millis(),
            end: end.timestamp_millis(),
        };
        let batches = self.store.window(panes, millis).await?;
        Ok(Emission {
            batches,
            window: Some(bounds),
            event: None,
        })
    }
}

impl<S: PaneStore> SlidingEngine<S> {
    /// Counts a batch (cut at `time`) that the store has taken (or failed
    /// to: the batch still counts), and emits the window when a slide is
    /// complete.
    async fn after_add(
        &mut self,
        added: Result<()>,
        time: DateTime<Utc>,
    ) -> Result<Option<Emission>> {
        self.batches_seen += 1;
        self.last_time = Some(time);
        added?;
        self.keep_last(self.window.size_batches()).await?;
        if !self
            .batches_seen
            .is_multiple_of(self.window.slide_batches())
        {
            return Ok(None);
        }
        let emission = self.emit(time, self.batches_seen).await?;
        // The batches no later window needs go.
        self.last_emitted = self.batches_seen;
        let keep = (self.window.size_batches()).saturating_sub(self.window.slide_batches());
        self.keep_last(keep).await?;
        Ok(Some(emission))
    }

    /// Frees every batch but the last `keep` seen.
    async fn keep_last(&mut self, keep: u64) -> Result<()> {
        let first_kept = self.batches_seen as i64 - keep as i64 + 1;
        self.store.drop_before(first_kept).await
    }
}

fn out_of_range(err: chrono::OutOfRangeError) -> BrookError {
    BrookError::invalid(format!("window size out of range: {err}"))
}

#[async_trait]
impl<S: PaneStore> BatchEngine for SlidingEngine<S> {
    fn describe(&self) -> String {
        format!(
            "window: {}\n{}; a pane is one batch: retains at most {} panes",
            crate::catalog::windows::WindowKind::Sliding(self.window.clone()),
            self.store.describe(),
            self.window.size_batches()
        )
    }

    fn schema(&self) -> SchemaRef {
        self.store.schema()
    }

    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        let pane = self.batches_seen as i64 + 1;
        let added = self.store.add_live(pane, batch).await;
        let time = batch.end().await.time;
        self.after_add(added, time).await
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let pane = self.batches_seen as i64 + 1;
        let mut added = Ok(());
        for (input, rows) in batch.inputs.iter().enumerate() {
            added = self.store.add(input, pane, rows).await;
            if added.is_err() {
                break;
            }
        }
        self.after_add(added, batch.time).await
    }
    /// At the end of the streams: the window holding the last batches, if
    /// they were not yet emitted. Its bounds are the window's nominal ones
    /// (it ends at the next slide); the windows that would follow, with
    /// ever fewer batches, are not emitted.
    async fn on_end(&mut self) -> Result<Option<Emission>> {
        let Some(last_time) = self.last_time else {
            return Ok(None);
        };
        let seen = self.batches_seen;
        if seen == self.last_emitted {
            return Ok(None);
        }
        let slide = self.window.slide_batches();
        let boundary = seen.div_ceil(slide) * slide;
        let missing = boundary - seen;
        // The window ending at the boundary starts `missing` batches later
        // than the one ending now.
        let size = self.window.size_batches();
        self.keep_last(size - missing.min(size)).await?;
        let ahead = self
            .window
            .interval
            .checked_mul(u32::try_from(missing).unwrap_or(u32::MAX))
            .and_then(|d| TimeDelta::from_std(d).ok())
            .and_then(|d| last_time.checked_add_signed(d))
            .ok_or_else(|| BrookError::invalid("the last window's end is out of range"))?;
        let emission = self.emit(ahead, boundary).await?;
        self.last_emitted = seen;
        Ok(Some(emission))
    }

    fn retained(&self) -> Retained {
        self.store.retained()
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let counters = Schema::new(vec![
            Field::new("batches_seen", DataType::Int64, false),
            Field::new("last_emitted", DataType::Int64, false),
            Field::new("last_time_ms", DataType::Int64, true),
        ]);
        let header = RecordBatch::try_new(
            Arc::new(counters),
            vec![
                Arc::new(Int64Array::from(vec![self.batches_seen as i64])),
                Arc::new(Int64Array::from(vec![self.last_emitted as i64])),
                Arc::new(Int64Array::from(vec![
                    self.last_time.map(|t| t.timestamp_millis()),
                ])),
            ],
        )?;
        let mut batches = vec![state::label(header, Part::Sliding)?];
        batches.extend(self.store.snapshot()?);
        Ok(batches)
    }

    async fn restore(&mut self, mut batches: Vec<RecordBatch>) -> Result<()> {
        if batches.is_empty() {
            return Err(BrookError::Internal("an empty window state".into()));
        }
        let header = batches.remove(0);
        if state::part_of(&header)? != Part::Sliding || header.num_rows() != 1 {
            return Err(BrookError::Internal(
                "a window state without its header".into(),
            ));
        }
        let value = |column: usize| -> Option<i64> {
            let array = header
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()?;
            (!array.is_null(0)).then(|| array.value(0))
        };
        self.batches_seen = value(0).unwrap_or(0) as u64;
        self.last_emitted = value(1).unwrap_or(0) as u64;
        self.last_time = value(2).and_then(DateTime::from_timestamp_millis);
        self.store.restore(batches).await
    }
}
