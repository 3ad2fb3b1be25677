//! Event-time windows: `TUMBLE` and `HOP` on a stream's event-time column,
//! over panes of `gcd(slide, size)`, and `SESSION` per group (in
//! [`super::session`]). What the two share is here: judging each batch's
//! rows against the watermark of the batch before (late rows are counted,
//! routed, and never reach a window), moving the watermark, and the report
//! each batch carries.
//!
//! Window `[start, end)` closes when the watermark reaches `end`
//! (`watermark >= end`). A row is late when every window it belongs to had
//! closed by the end of the previous batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{
    concat_batches, filter, filter_record_batch, max, min, not, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::split::{IncrementalPlan, WindowBound};
use super::{Rows, partial, reduce, run_on, state, with_window};
use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::EventWindow;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::{END_OF_TIME, WatermarkClock};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, EventReport, MicroBatch};
use crate::source::Inbox;
use crate::sql::EmitMode;

/// The column late rows carry besides their stream's: how far behind the
/// watermark their event time was, in milliseconds.
pub const LATENESS_COLUMN: &str = "lateness_ms";

/// The schema of the stream late rows of `source` go to.
pub(crate) fn late_schema(source: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(LATENESS_COLUMN, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

/// Where late rows go: the inbox of the stream `LATE DATA TO` names, set
/// once the stream exists.
#[derive(Debug, Clone)]
pub(crate) struct LateRoute {
    pub stream: String,
    pub schema: SchemaRef,
    pub inbox: Arc<OnceLock<LateInbox>>,
}

/// The inbox late rows go to.
#[derive(Debug)]
pub(crate) struct LateInbox {
    pub inbox: Arc<Inbox>,
    /// brook created the stream for this query: it ends when the query's
    /// input ends, so that its readers end too.
    pub close_at_end: bool,
}

/// One input's rows of a batch that are not late, with their event times.
pub(crate) struct OnTime {
    pub input: usize,
    pub rows: RecordBatch,
    pub times: TimestampMillisecondArray,
}

/// What every event-time engine does with a batch before its windows see
/// it, and after.
pub(crate) struct EventClock {
    pub window: EventWindow,
    pub emit: EmitMode,
    pub clock: WatermarkClock,
    pub late: Option<LateRoute>,
    /// Late rows since the query started (for the report).
    late_total: u64,
    /// The streams' watermark declarations, as `EXPLAIN` shows them.
    declared: String,
}

impl EventClock {
    pub fn new(
        window: EventWindow,
        emit: EmitMode,
        clock: WatermarkClock,
        late: Option<LateRoute>,
        declared: String,
    ) -> Self {
        Self {
            window,
            emit,
            clock,
            late,
            late_total: 0,
            declared,
        }
    }

    /// The window, when it emits, the watermark and where late rows go, as
    /// `EXPLAIN` shows them.
    pub fn describe(&self) -> String {
        let emit = match self.emit {
            EmitMode::OnWindowClose => {
                "emit: on window close (each window's final result once, in the batch after which the watermark reaches window_end)"
            }
            EmitMode::OnUpdate => {
                "emit: on update (every batch, the current result of each window the batch changed; a window is dropped once the watermark reaches window_end)"
            }
        };
        let late = match &self.late {
            Some(route) => format!(
                "late rows (every window of the row already closed): counted and sent to stream '{}' with {LATENESS_COLUMN}",
                route.stream
            ),
            None => "late rows (every window of the row already closed): counted and skipped"
                .to_string(),
        };
        format!(
            "window: {}\n{emit}\nwatermark: {}\n{late}",
            crate::catalog::windows::WindowKind::Event(self.window.clone()),
            self.declared
        )
    }

    /// Splits `batch` into the rows windows take and the late ones (counted
    /// and routed); records the event times read. Returns the on-time rows
    /// and the batch's partial report (the watermark is set by
    /// [`EventClock::advance`]).
    pub fn judge(&mut self, batch: &MicroBatch) -> Result<(Vec<OnTime>, EventReport)> {
        let (on_time, behind, mut report) = self.sort_out(batch)?;
        for rows in behind {
            self.late(rows, &mut report)?;
        }
        Ok((on_time, report))
    }

    /// Splits `batch` into the rows with a window still open and the rows
    /// behind: those whose own windows have all closed (by the watermark
    /// the previous batch left). A row without an event time is late at
    /// once; the behind rows are for the caller to judge (a `SESSION` row
    /// behind may still join a session that is open), then pass to
    /// [`EventClock::late`] or [`EventClock::rescued`]. The on-time rows'
    /// event times are recorded.
    pub fn sort_out(
        &mut self,
        batch: &MicroBatch,
    ) -> Result<(Vec<OnTime>, Vec<OnTime>, EventReport)> {
        let before = self.clock.current();
        let first_open = before.map(|mark| self.window.first_open(mark));
        let mut report = EventReport::default();
        let (mut on_time, mut behind) = (Vec::new(), Vec::new());
        for (input, batches) in batch.inputs.iter().enumerate() {
            for rows in batches {
                if rows.num_rows() == 0 {
                    continue;
                }
                let times = self.clock.event_times(input, rows)?;
                // Behind: before the first event time whose last window is
                // still open (one comparison per row).
                let none_behind = first_open
                    .is_none_or(|first| min(&times).is_none_or(|earliest| earliest >= first));
                let (rows, times) = if times.null_count() > 0 {
                    let timeless = is_null(&times)?;
                    let late_rows = filter_record_batch(rows, &timeless)?;
                    let late_times = filter_times(&times, &timeless)?;
                    self.late(
                        OnTime {
                            input,
                            rows: late_rows,
                            times: late_times,
                        },
                        &mut report,
                    )?;
                    let keep = not(&timeless)?;
                    (
                        filter_record_batch(rows, &keep)?,
                        filter_times(&times, &keep)?,
                    )
                } else {
                    (rows.clone(), times)
                };
                let (rows, times) = match first_open {
                    Some(first) if !none_behind => {
                        let is_behind: BooleanArray = times
                            .iter()
                            .map(|time| Some(time.is_some_and(|t| t < first)))
                            .collect();
                        if is_behind.true_count() > 0 {
                            behind.push(OnTime {
                                input,
                                rows: filter_record_batch(&rows, &is_behind)?,
                                times: filter_times(&times, &is_behind)?,
                            });
                        }
                        let keep = not(&is_behind)?;
                        (
                            filter_record_batch(&rows, &keep)?,
                            filter_times(&times, &keep)?,
                        )
                    }
                    _ => (rows, times),
                };
                if rows.num_rows() > 0 {
                    report.far_future_rows +=
                        self.clock.observe_rows(input, &rows, &times, batch.time);
                    on_time.push(OnTime { input, rows, times });
                }
            }
        }
        Ok((on_time, behind, report))
    }

    /// Counts `rows` as late and routes them where `LATE DATA TO` says.
    pub fn late(&mut self, rows: OnTime, report: &mut EventReport) -> Result<()> {
        if rows.rows.num_rows() == 0 {
            return Ok(());
        }
        let before = self.clock.current();
        self.route_late(&rows.rows, &rows.times, before, report)?;
        report.late_rows += rows.rows.num_rows() as u64;
        self.late_total += rows.rows.num_rows() as u64;
        Ok(())
    }

    /// Rows behind the watermark that a window still open takes after all:
    /// their event times are recorded as on-time rows' are.
    pub fn rescued(&mut self, rows: &OnTime, time: DateTime<Utc>, report: &mut EventReport) {
        report.far_future_rows +=
            self.clock
                .observe_rows(rows.input, &rows.rows, &rows.times, time);
    }

    /// Ends the batch: the watermark after it.
    pub fn advance(&mut self, batch: &MicroBatch) -> Option<i64> {
        self.clock.advance(batch.time, &batch.ended)
    }

    /// The clock's state, labelled.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        state::label(self.clock.snapshot()?, "event_clock")
    }

    /// Restores the clock from a snapshot's batches (finding its own).
    pub fn restore(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let clock = batches
            .iter()
            .find(|b| state::label_of(b) == Some("event_clock"))
            .ok_or_else(|| BrookError::Internal("an event-time state without its clock".into()))?;
        self.clock.restore(clock)
    }

    /// The query's input has ended: so does a late-rows stream made for it.
    pub fn end(&self) {
        if let Some(route) = &self.late
            && let Some(late) = route.inbox.get()
            && late.close_at_end
        {
            late.inbox.close();
        }
    }

    fn route_late(
        &self,
        rows: &RecordBatch,
        times: &TimestampMillisecondArray,
        watermark: Option<i64>,
        report: &mut EventReport,
    ) -> Result<()> {
        let Some(route) = &self.late else {
            return Ok(());
        };
        let lateness: Int64Array = times
            .iter()
            .map(|time| Some(watermark?.saturating_sub(time?)))
            .collect();
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(lateness));
        let late = RecordBatch::try_new(Arc::clone(&route.schema), columns)?;
        match route.inbox.get() {
            Some(LateInbox { inbox, .. }) => {
                if let Err(err) = inbox.push_now(late) {
                    report.warnings.push(format!(
                        "{} late rows were counted but not sent to stream '{}': {err}",
                        rows.num_rows(),
                        route.stream
                    ));
                }
            }
            None => report.warnings.push(format!(
                "stream '{}' for late rows does not exist",
                route.stream
            )),
        }
        Ok(())
    }
}

/// The rows of `times` that are null.
fn is_null(times: &TimestampMillisecondArray) -> Result<BooleanArray> {
    Ok(datafusion::arrow::compute::is_null(times)?)
}

/// `times` filtered by `keep`, keeping its type.
pub(crate) fn filter_times(
    times: &TimestampMillisecondArray,
    keep: &BooleanArray,
) -> Result<TimestampMillisecondArray> {
    filter(times, keep)?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned()
        .ok_or_else(|| BrookError::Internal("event times lost their type".into()))
}

/// Where a `TUMBLE` or `HOP` window keeps its panes.
#[async_trait]
pub(crate) trait PaneStore: Send {
    fn schema(&self) -> SchemaRef;
    /// How the panes are kept, for `EXPLAIN`.
    fn describe(&self) -> String;
    /// Adds `rows` of input `input`, all in the pane starting at `pane`.
    async fn add(&mut self, input: usize, pane: i64, rows: RecordBatch) -> Result<()>;
    /// Adds `rows` of input `input`, whose event times are `times`, to
    /// their panes of length `pane`; returns the panes they fell in.
    async fn add_rows(
        &mut self,
        input: usize,
        rows: RecordBatch,
        times: &TimestampMillisecondArray,
        pane: i64,
    ) -> Result<Vec<i64>> {
        add_pane_by_pane(self, input, rows, times, pane).await
    }
    /// The result of window `[start, end)` from the panes it holds.
    async fn window(&mut self, start: i64, end: i64) -> Result<Vec<RecordBatch>>;
    /// Drops the panes starting before `pane`.
    fn drop_before(&mut self, pane: i64);
    fn retained(&self) -> Retained;
    /// The panes as labelled record batches.
    fn snapshot(&self) -> Result<Vec<RecordBatch>>;
    /// Replaces the panes by a snapshot's.
    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()>;
}

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
            batches.extend(self.store.window(start, start + self.size).await?);
        }
        Ok(batches)
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
        self.store.drop_before(first_needed);
        Ok(batches)
    }
}

#[async_trait]
impl<S: PaneStore> BatchEngine for EventHopEngine<S> {
    fn describe(&self) -> String {
        format!("{}\n{}", self.events.describe(), self.store.describe())
    }

    fn schema(&self) -> SchemaRef {
        self.store.schema()
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let before = self.events.clock.current();
        let (on_time, mut report) = self.events.judge(batch)?;
        let mut touched = BTreeSet::new();
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
        let mark = self.events.advance(batch);
        report.watermark = mark;
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
        let mut batches = vec![self.events.snapshot()?, state::label(open, "open_windows")?];
        batches.extend(self.store.snapshot()?);
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.events.restore(&batches)?;
        let mut panes = Vec::new();
        self.open.clear();
        for batch in batches {
            match state::label_of(&batch) {
                Some("event_clock") => {}
                Some("open_windows") => {
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
        self.store.restore(panes)
    }
}

/// The pane a labelled state batch holds: `pane:<start>[:<input>]`.
fn pane_label(batch: &RecordBatch) -> Result<(i64, Option<usize>)> {
    let label = state::label_of(batch)
        .and_then(|l| l.strip_prefix("pane:"))
        .ok_or_else(|| BrookError::Internal("a pane state without its label".into()))?;
    let mut parts = label.split(':');
    let start = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(|| BrookError::Internal(format!("a pane label '{label}'")))?;
    let input = parts.next().and_then(|p| p.parse::<usize>().ok());
    Ok((start, input))
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

/// Adds `rows` to `store` one pane at a time (see [`PaneStore::add_rows`]).
async fn add_pane_by_pane<S: PaneStore + ?Sized>(
    store: &mut S,
    input: usize,
    rows: RecordBatch,
    times: &TimestampMillisecondArray,
    pane: i64,
) -> Result<Vec<i64>> {
    let mut panes = Vec::new();
    for (start, rows) in split_by_pane(&rows, times, pane)? {
        store.add(input, start, rows).await?;
        panes.push(start);
    }
    Ok(panes)
}

/// The rows of `rows` per pane of length `pane`, in pane order. Rows come
/// mostly in order, so a batch spans few panes: all in one costs nothing,
/// a few are filtered out one by one, many are gathered by index.
pub(crate) fn split_by_pane(
    rows: &RecordBatch,
    times: &TimestampMillisecondArray,
    pane: i64,
) -> Result<Vec<(i64, RecordBatch)>> {
    let (Some(earliest), Some(latest)) = (min(times), max(times)) else {
        return Ok(Vec::new());
    };
    let first = earliest.div_euclid(pane) * pane;
    let last = latest.div_euclid(pane) * pane;
    if first == last {
        return Ok(vec![(first, rows.clone())]);
    }
    let panes: Int64Array = times.unary(|time| time.div_euclid(pane) * pane);
    if (last - first) / pane < 4 {
        let mut out = Vec::new();
        let mut start = first;
        while start <= last {
            let mask = eq(&panes, &Int64Array::new_scalar(start))?;
            if mask.true_count() > 0 {
                out.push((start, filter_record_batch(rows, &mask)?));
            }
            start += pane;
        }
        return Ok(out);
    }
    let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, pane) in panes.values().iter().enumerate() {
        by_pane.entry(*pane).or_default().push(row as u32);
    }
    by_pane
        .into_iter()
        .map(|(pane, indices)| {
            let indices = UInt32Array::from(indices);
            Ok((pane, take_record_batch(rows, &indices)?))
        })
        .collect()
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs().max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Panes of partial aggregate state: one row per group per pane; a window
/// is its panes merged.
pub(crate) struct IncrementalPanes {
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    scan: Arc<BatchSlot>,
    panes: BTreeMap<i64, RecordBatch>,
}

impl IncrementalPanes {
    /// Merges `state` into the pane starting at `pane`.
    async fn merge(&mut self, pane: i64, state: RecordBatch) -> Result<()> {
        let merged = match self.panes.remove(&pane) {
            None => state,
            Some(previous) => reduce(&self.plan, vec![previous, state], &self.task_ctx).await?,
        };
        self.panes.insert(pane, merged);
        Ok(())
    }

    pub fn new(plan: IncrementalPlan, task_ctx: Arc<TaskContext>, scan: Arc<BatchSlot>) -> Self {
        Self {
            plan,
            task_ctx,
            scan,
            panes: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl PaneStore for IncrementalPanes {
    fn describe(&self) -> String {
        "incremental: each batch's rows are aggregated once per pane (gcd of slide and size) into partial state; a window merges its panes; a pane is freed once the watermark passes the last window holding it".into()
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    async fn add(&mut self, _input: usize, pane: i64, rows: RecordBatch) -> Result<()> {
        let state = partial(
            &self.plan,
            &self.scan,
            Rows::Whole(&[rows]),
            &self.task_ctx,
            true,
        )
        .await?;
        self.merge(pane, state).await
    }

    /// When the query groups by a window column, the rows are aggregated
    /// once, whatever the panes they span: the column holds each row's
    /// pane (until a window's merge sets it to the window's bound), so the
    /// partial state comes out per pane and group, and is split by pane.
    async fn add_rows(
        &mut self,
        input: usize,
        rows: RecordBatch,
        times: &TimestampMillisecondArray,
        pane: i64,
    ) -> Result<Vec<i64>> {
        let Some(&(key_column, _)) = self.plan.window_keys.first() else {
            return add_pane_by_pane(self, input, rows, times, pane).await;
        };
        let (Some(earliest), Some(latest)) = (min(times), max(times)) else {
            return Ok(Vec::new());
        };
        let (first, last) = (
            earliest.div_euclid(pane) * pane,
            latest.div_euclid(pane) * pane,
        );
        let starts = times
            .unary::<_, datafusion::arrow::datatypes::TimestampMillisecondType>(|t| {
                t.div_euclid(pane) * pane
            })
            .with_timezone("+00:00");
        let ends = starts
            .unary::<_, datafusion::arrow::datatypes::TimestampMillisecondType>(|t| t + pane)
            .with_timezone("+00:00");
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        let input_rows = RecordBatch::try_new(Arc::clone(self.scan.schema_ref()), columns)?;
        let result = run_on(
            &self.plan.partial,
            &self.scan,
            vec![input_rows],
            &self.task_ctx,
        )
        .await?;
        let state = concat_batches(&self.plan.partial.schema(), &result)?;
        if first == last {
            self.merge(first, state).await?;
            return Ok(vec![first]);
        }
        // The key column holds a pane's start (`window_start`) or end.
        let keys = datafusion::arrow::compute::cast(state.column(key_column), &DataType::Int64)?;
        let keys = keys
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| BrookError::Internal("a pane key is not a time".into()))?;
        let offset = match self.plan.window_keys[0].1 {
            WindowBound::Start => 0,
            WindowBound::End => pane,
        };
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, key) in keys.iter().enumerate() {
            let start = key.unwrap_or(first + offset) - offset;
            by_pane.entry(start).or_default().push(row as u32);
        }
        let mut panes = Vec::with_capacity(by_pane.len());
        for (start, indices) in by_pane {
            let part = take_record_batch(&state, &UInt32Array::from(indices))?;
            self.merge(start, part).await?;
            panes.push(start);
        }
        Ok(panes)
    }

    /// The window's panes, their window columns set to the window's bounds,
    /// through the final aggregate (which merges a group's partial states).
    async fn window(&mut self, start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        let states = self
            .panes
            .range(start..end)
            .map(|(_, state)| {
                super::incremental::fill_window_keys(state, &self.plan.window_keys, start, end)
            })
            .collect::<Result<Vec<_>>>()?;
        if states.is_empty() {
            return Ok(Vec::new());
        }
        run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            states,
            &self.task_ctx,
        )
        .await
    }

    fn drop_before(&mut self, pane: i64) {
        self.panes = self.panes.split_off(&pane);
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes.values().for_each(|state| held.add(state));
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        self.panes
            .iter()
            .map(|(start, pane)| state::label(pane.clone(), &format!("pane:{start}")))
            .collect()
    }

    fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.panes.clear();
        for batch in batches {
            let (start, _) = pane_label(&batch)?;
            self.panes.insert(start, state::unlabel(batch)?);
        }
        Ok(())
    }
}

/// Panes of raw rows, per input; a window re-runs the query over its panes'
/// rows. For queries whose aggregates do not merge.
pub(crate) struct RowPanes {
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// Each scan's input (index into a batch's inputs) and slot.
    scans: Vec<(usize, Arc<BatchSlot>)>,
    /// Per pane, per input, the rows.
    panes: BTreeMap<i64, BTreeMap<usize, Vec<RecordBatch>>>,
    /// Why the rows are kept rather than merged (for `EXPLAIN`).
    reason: String,
}

impl RowPanes {
    pub fn new(
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        scans: Vec<(usize, Arc<BatchSlot>)>,
        reason: String,
    ) -> Self {
        Self {
            plan,
            task_ctx,
            scans,
            panes: BTreeMap::new(),
            reason,
        }
    }
}

#[async_trait]
impl PaneStore for RowPanes {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn describe(&self) -> String {
        format!(
            "recompute ({}): rows are kept per pane and the plan below runs over a window's rows when it is emitted; a pane is freed once the watermark passes the last window holding it",
            self.reason
        )
    }

    async fn add(&mut self, input: usize, pane: i64, rows: RecordBatch) -> Result<()> {
        self.panes
            .entry(pane)
            .or_default()
            .entry(input)
            .or_default()
            .push(rows);
        Ok(())
    }

    async fn window(&mut self, start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        for (input, slot) in &self.scans {
            let schema = Arc::clone(slot.schema_ref());
            let rows = self
                .panes
                .range(start..end)
                .filter_map(|(_, inputs)| inputs.get(input))
                .flatten()
                .map(|rows| with_window(rows, &schema, Some((start, end))))
                .collect::<Result<Vec<_>>>()?;
            slot.set(rows);
        }
        let result = super::run(&self.plan, &self.task_ctx).await;
        for (_, slot) in &self.scans {
            slot.clear();
        }
        result
    }

    fn drop_before(&mut self, pane: i64) {
        self.panes = self.panes.split_off(&pane);
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        self.panes
            .values()
            .flat_map(|inputs| inputs.values())
            .flatten()
            .for_each(|rows| held.add(rows));
        held.batches = self.panes.len();
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for (start, inputs) in &self.panes {
            for (input, rows) in inputs {
                let Some(first) = rows.first() else { continue };
                let joined = concat_batches(first.schema_ref(), rows)?;
                batches.push(state::label(joined, &format!("pane:{start}:{input}"))?);
            }
        }
        Ok(batches)
    }

    fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.panes.clear();
        for batch in batches {
            let (start, input) = pane_label(&batch)?;
            let input =
                input.ok_or_else(|| BrookError::Internal("a row pane without its input".into()))?;
            self.panes
                .entry(start)
                .or_default()
                .entry(input)
                .or_default()
                .push(state::unlabel(batch)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::windows::EventShape;

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
