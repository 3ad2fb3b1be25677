//! `TUMBLE` and `HOP` on a stream's event-time column, over panes of
//! `gcd(slide, size)` kept in a [`PaneStore`]; `SESSION` is in
//! [`super::session`]. What every event-time engine shares (judging rows
//! against the watermark, moving it) is [`super::event_clock`].
//!
//! Window `[start, end)` closes when the watermark reaches `end`
//! (`watermark >= end`). A row is late when every window it belongs to had
//! closed by the end of the previous batch.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::state::{self, Part};
use crate::error::{BrookError, Result};
use crate::event_time::watermark::END_OF_TIME;
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, EventReport, LiveBatch, MicroBatch};
use crate::sql::EmitMode;

use super::event_clock::{EventClock, OnTime};
use super::panes::{Bounds, PaneStore};

/// Rows an event-time engine judges and folds into its state at once while
/// a batch arrives (fewer when fewer are there).
pub(crate) const FOLD_CHUNK_ROWS: usize = 131_072;

/// `TUMBLE` / `HOP` in event time.
pub(crate) struct EventHopEngine<S> {
    events: EventClock,
    slide: i64,
    size: i64,
    /// The pane length: the greatest common divisor of slide and size.
    pane: i64,
    store: S,
    /// The starts of the windows that hold rows and have not closed.
    open: BTreeSet<i64>,
}

impl<S: PaneStore> EventHopEngine<S> {
    /// A window of `size` every `slide` (milliseconds; a `TUMBLE` has
    /// `slide == size`).
    pub fn new(events: EventClock, slide: i64, size: i64, store: S) -> Self {
        Self {
            events,
            slide,
            size,
            pane: gcd(slide, size),
            store,
            open: BTreeSet::new(),
        }
    }

    /// The starts of the windows that hold the pane starting at `pane`.
    fn windows_of(&self, pane: i64) -> impl Iterator<Item = i64> + use<S> {
        let last = pane.div_euclid(self.slide) * self.slide;
        let (slide, size) = (self.slide, self.size);
        (0..)
            .map(move |k: i64| last - k * slide)
            .take_while(move |start| start + size > pane)
    }

    /// The results of the windows starting at `starts`, in order.
    async fn results(&mut self, starts: Vec<i64>) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for start in starts {
            let end = start + self.size;
            let window = self.store.window(start..end, Bounds { start, end }).await?;
            batches.extend(window);
        }
        Ok(batches)
    }

    /// Adds on-time rows to their panes; `touched` gets the windows they
    /// changed that had not closed by the watermark `before` the batch.
    async fn fold(
        &mut self,
        on_time: Vec<OnTime>,
        before: Option<i64>,
        touched: &mut BTreeSet<i64>,
    ) -> Result<()> {
        for OnTime { input, rows, times } in on_time {
            for pane in self.store.add_rows(input, rows, &times, self.pane).await? {
                for start in self.windows_of(pane).collect::<Vec<_>>() {
                    let closed = before.is_some_and(|mark| start + self.size <= mark);
                    if !closed {
                        self.open.insert(start);
                        touched.insert(start);
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends a batch after which the watermark is `mark`: what the emit mode
    /// says to emit (the windows `touched` changed, or those `mark`
    /// closed), and the panes no window needs any more freed.
    async fn emit(
        &mut self,
        mark: Option<i64>,
        touched: BTreeSet<i64>,
        report: EventReport,
    ) -> Result<Option<Emission>> {
        let mut batches = Vec::new();
        match self.events.emit {
            EmitMode::OnUpdate => {
                batches = self.results(touched.into_iter().collect()).await?;
                if let Some(mark) = mark {
                    self.close(mark, false).await?;
                }
            }
            EmitMode::OnWindowClose => {
                if let Some(mark) = mark {
                    batches = self.close(mark, true).await?;
                }
            }
        }
        Ok(Some(Emission {
            batches,
            window: None,
            event: Some(report),
        }))
    }

    /// Closes the windows the watermark `mark` has reached: their results
    /// (when emitted on close), and their panes freed.
    async fn close(&mut self, mark: i64, emit: bool) -> Result<Vec<RecordBatch>> {
        let closing: Vec<i64> = self
            .open
            .iter()
            .copied()
            .take_while(|start| start.saturating_add(self.size) <= mark)
            .collect();
        for start in &closing {
            self.open.remove(start);
        }
        let batches = if emit {
            self.results(closing).await?
        } else {
            Vec::new()
        };
        // A pane goes once the last window holding it has closed.
        let first_needed = mark
            .saturating_sub(self.size)
            .div_euclid(self.slide)
            .saturating_add(1)
            .saturating_mul(self.slide);
        self.store.drop_before(first_needed).await?;
        Ok(batches)
    }
}

#[async_trait]
impl<S: PaneStore> BatchEngine for EventHopEngine<S> {
    fn describe(&self) -> String {
        let arrival = if self.store.folds_rows() {
            "a batch's rows are judged and folded into their panes while the batch arrives; its tick moves the watermark and emits"
        } else {
            "a batch is read whole at its tick (its rows are kept)"
        };
        format!(
            "{}\n{}; a pane is {}: freed once the watermark passes the last window holding it\n{arrival}",
            self.events.describe(),
            self.store.describe(),
            crate::sql::format_duration(std::time::Duration::from_millis(self.pane.max(0) as u64))
        )
    }

    fn schema(&self) -> SchemaRef {
        self.store.schema()
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let before = self.events.clock.current();
        let (on_time, mut report) = self.events.judge(batch)?;
        let mut touched = BTreeSet::new();
        self.fold(on_time, before, &mut touched).await?;
        let mark = self.events.advance(batch.time, &batch.ended);
        report.watermark = mark;
        self.emit(mark, touched, report).await
    }

    /// With panes of partial state, each chunk of the batch is judged and
    /// folded into its panes as it arrives; the tick only moves the
    /// watermark and emits. Rows kept for a recompute are read whole.
    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        if !self.store.folds_rows() {
            let batch = batch.collect().await?;
            return self.on_batch(&batch).await;
        }
        let before = self.events.clock.current();
        let mut report = EventReport::default();
        let mut touched = BTreeSet::new();
        while let Some(chunk) = batch.next_chunk(FOLD_CHUNK_ROWS).await {
            let (on_time, part) = self.events.judge_rows(&chunk, Utc::now())?;
            report.absorb(part);
            self.fold(on_time, before, &mut touched).await?;
        }
        let end = batch.end().await;
        let mark = self.events.advance(end.time, &end.ended());
        report.watermark = mark;
        self.emit(mark, touched, report).await
    }

    async fn on_end(&mut self) -> Result<Option<Emission>> {
        self.events.end();
        let emit = self.events.emit == EmitMode::OnWindowClose;
        let batches = self.close(END_OF_TIME, emit).await?;
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(end_of_input(batches)))
    }

    async fn on_stop(&mut self) -> Result<Option<Emission>> {
        self.events.end();
        Ok(None)
    }

    fn retained(&self) -> Retained {
        self.store.retained()
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let open: Int64Array = self.open.iter().copied().map(Some).collect();
        let open = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("open", DataType::Int64, true)])),
            vec![Arc::new(open)],
        )?;
        let mut batches = vec![
            self.events.snapshot()?,
            state::label(open, Part::OpenWindows)?,
        ];
        batches.extend(self.store.snapshot()?);
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.events.restore(&batches)?;
        let mut panes = Vec::new();
        self.open.clear();
        for batch in batches {
            match state::part_of(&batch)? {
                Part::EventClock => {}
                Part::OpenWindows => {
                    let open = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| BrookError::Internal("open windows".into()))?;
                    self.open.extend(open.iter().flatten());
                }
                _ => panes.push(batch),
            }
        }
        self.store.restore(panes).await
    }
}

/// The emission of the windows every stream's end closed.
pub(crate) fn end_of_input(batches: Vec<RecordBatch>) -> Emission {
    Emission {
        batches,
        window: None,
        event: Some(EventReport {
            watermark: Some(END_OF_TIME),
            ..EventReport::default()
        }),
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs().max(1)
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::windows::{EventShape, EventWindow};
    use crate::engine::panes::split_by_pane;
    use datafusion::arrow::array::TimestampMillisecondArray;

    fn hop(slide: i64, size: i64) -> EventWindow {
        EventWindow {
            function: "HOP",
            shape: EventShape::Hop { slide, size },
        }
    }

    #[test]
    fn a_row_is_late_once_its_last_window_has_ended() {
        assert_eq!(hop(10, 10).last_end(25), 30);
        assert_eq!(hop(5, 10).last_end(25), 35);
        assert_eq!(hop(10, 10).last_end(-5), 0);
        let session = EventWindow {
            function: "SESSION",
            shape: EventShape::Session { gap: 7 },
        };
        assert_eq!(session.last_end(25), 32);
    }

    #[test]
    fn first_open_agrees_with_the_last_window_of_each_event_time() {
        let session = EventWindow {
            function: "SESSION",
            shape: EventShape::Session { gap: 7 },
        };
        for window in [hop(10, 10), hop(5, 10), hop(3, 10), session] {
            for mark in -40..40 {
                let first = window.first_open(mark);
                for time in -60..60 {
                    assert_eq!(
                        time < first,
                        window.last_end(time) <= mark,
                        "{window:?} mark {mark} time {time}"
                    );
                }
            }
        }
    }

    #[test]
    fn panes_split_rows_by_their_event_time() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4]))])
            .unwrap();
        let times = TimestampMillisecondArray::from(vec![12, 3, 15, -1]);
        let panes = split_by_pane(&rows, &times, 10).unwrap();
        let shown: Vec<(i64, usize)> = panes.iter().map(|(p, r)| (*p, r.num_rows())).collect();
        assert_eq!(shown, vec![(-10, 1), (0, 1), (10, 2)]);
        assert_eq!(gcd(10, 4), 2);
        assert_eq!(gcd(5, 5), 5);
    }
}
