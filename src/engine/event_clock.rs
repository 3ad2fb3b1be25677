//! What every event-time engine does with a batch before its windows see
//! it, and after: judging each row against the watermark the previous
//! batch left (late rows are counted, routed with `LATE DATA TO`, and never
//! reach a window), moving the watermark, and what `EXPLAIN` says of it.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{filter, filter_record_batch, min, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::state::{self, Part};
use crate::catalog::windows::EventWindow;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::WatermarkClock;
use crate::query::engine::{EventReport, MicroBatch};
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
        self.judge_rows(&batch.inputs, batch.time)
    }

    /// [`EventClock::judge`] for some of a batch's rows per input (a chunk
    /// read while the batch arrives; every row is judged against the
    /// watermark the previous batch left), read by `time`.
    pub fn judge_rows(
        &mut self,
        inputs: &[Vec<RecordBatch>],
        time: DateTime<Utc>,
    ) -> Result<(Vec<OnTime>, EventReport)> {
        let (on_time, behind, mut report) = self.sort_out_rows(inputs, time)?;
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
        self.sort_out_rows(&batch.inputs, batch.time)
    }

    /// [`EventClock::sort_out`] for some of a batch's rows per input, read
    /// by `time` (the wall-clock time rows too far ahead are judged by).
    pub fn sort_out_rows(
        &mut self,
        inputs: &[Vec<RecordBatch>],
        time: DateTime<Utc>,
    ) -> Result<(Vec<OnTime>, Vec<OnTime>, EventReport)> {
        let before = self.clock.current();
        let first_open = before.map(|mark| self.window.first_open(mark));
        let mut report = EventReport::default();
        let (mut on_time, mut behind) = (Vec::new(), Vec::new());
        for (input, batches) in inputs.iter().enumerate() {
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
                    report.far_future_rows += self.clock.observe_rows(input, &rows, &times, time);
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

    /// Ends the batch cut at `time`, after which the inputs `ended` say
    /// have ended: the watermark after it.
    pub fn advance(&mut self, time: DateTime<Utc>, ended: &[bool]) -> Option<i64> {
        self.clock.advance(time, ended)
    }

    /// The clock's state, labelled.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        state::label(self.clock.snapshot()?, Part::EventClock)
    }

    /// Restores the clock from a snapshot's batches (finding its own).
    pub fn restore(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let clock = batches
            .iter()
            .find(|b| matches!(state::part_of(b), Ok(Part::EventClock)))
            .ok_or_else(|| BrookError::Internal("an event-time state without its clock".into()))?;
        self.clock.restore(clock)
    }

    /// The query's input has ended: so does a late-rows stream made for it.
    pub fn end(&self) {
        if let Some(route) = &self.late {
            route.end();
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
        route.send(late, report);
        Ok(())
    }
}

impl LateRoute {
    /// Sends `late` (in the route's schema) to the stream, or says in
    /// `report` why it could not.
    pub fn send(&self, late: RecordBatch, report: &mut EventReport) {
        let rows = late.num_rows();
        match self.inbox.get() {
            Some(LateInbox { inbox, .. }) => {
                if let Err(err) = inbox.push_now(late) {
                    report.warnings.push(format!(
                        "{rows} late rows were counted but not sent to stream '{}': {err}",
                        self.stream
                    ));
                }
            }
            None => report.warnings.push(format!(
                "stream '{}' for late rows does not exist",
                self.stream
            )),
        }
    }

    /// The query's input has ended: so does a late-rows stream brook made
    /// for it.
    pub fn end(&self) {
        if let Some(late) = self.inbox.get()
            && late.close_at_end
        {
            late.inbox.close();
        }
    }
}

/// The schema of the stream late rows of an interval join of `streams`
/// go to: which stream a row came from, each stream's columns (named
/// `{stream}_{column}`, NULL for the other stream's rows), and how late.
pub(crate) fn join_late_schema(streams: [(&str, &Schema); 2]) -> SchemaRef {
    let mut fields = vec![Field::new("stream", DataType::Utf8, false)];
    for (name, schema) in streams {
        fields.extend(schema.fields().iter().map(|field| {
            Field::new(
                format!("{name}_{}", field.name()),
                field.data_type().clone(),
                true,
            )
        }));
    }
    fields.push(Field::new(LATENESS_COLUMN, DataType::Int64, true));
    Arc::new(Schema::new(fields))
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
