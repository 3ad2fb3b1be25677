//! A query's watermark over the streams it reads (see the module docs of
//! [`crate::event_time`] for the definitions). Times are milliseconds since
//! the epoch, the unit of `window_start` and `window_end`.

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};

use super::EventTime;
use crate::error::{BrookError, Result};

/// The watermark once every input has ended: every window closes.
pub(crate) const END_OF_TIME: i64 = i64::MAX;

/// What the query knows of one input's event time.
#[derive(Debug)]
struct InputClock {
    event_time: EventTime,
    /// The event-time column's index in the input's batches.
    column: usize,
    /// The largest event time read (far-future rows excepted).
    max_event: Option<i64>,
    /// The tick time of the last batch that held a row of this input.
    last_row_at: Option<DateTime<Utc>>,
    ended: bool,
}

/// The watermark of one query.
#[derive(Debug)]
pub(crate) struct WatermarkClock {
    inputs: Vec<InputClock>,
    /// When the query's first batch was cut: a stream that never sends a row
    /// becomes idle `idle_timeout` after it.
    started_at: Option<DateTime<Utc>>,
    /// The watermark as of the end of the last batch; never decreases.
    current: Option<i64>,
}

impl WatermarkClock {
    /// A clock over inputs declared as `(event time, column index)`.
    pub fn new(inputs: Vec<(EventTime, usize)>) -> Self {
        Self {
            inputs: inputs
                .into_iter()
                .map(|(event_time, column)| InputClock {
                    event_time,
                    column,
                    max_event: None,
                    last_row_at: None,
                    ended: false,
                })
                .collect(),
            started_at: None,
            current: None,
        }
    }

    /// The watermark as of the end of the last batch (`None` before any
    /// event time was read).
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// The event-time column of input `input`, in milliseconds.
    pub fn event_times(
        &self,
        input: usize,
        batch: &RecordBatch,
    ) -> Result<TimestampMillisecondArray> {
        let clock = self.inputs.get(input).ok_or_else(|| {
            BrookError::Internal(format!("no event time declared for input {input}"))
        })?;
        event_millis(batch, clock.column)
    }

    /// Records the event times `times` of rows read from `input` in a batch
    /// cut at `now`; returns how many were too far ahead of `now` to move
    /// the watermark.
    pub fn observe(
        &mut self,
        input: usize,
        times: &TimestampMillisecondArray,
        now: DateTime<Utc>,
    ) -> u64 {
        let Some(clock) = self.inputs.get_mut(input) else {
            return 0;
        };
        if times.is_empty() {
            return 0;
        }
        clock.last_row_at = Some(now);
        let limit = now
            .timestamp_millis()
            .saturating_add(millis(clock.event_time.max_ahead));
        let mut far_future = 0;
        for time in times.iter().flatten() {
            if time > limit {
                far_future += 1;
            } else if clock.max_event.is_none_or(|max| time > max) {
                clock.max_event = Some(time);
            }
        }
        far_future
    }

    /// Ends the batch cut at `now`, in which `ended` says which inputs have
    /// ended: the watermark after it.
    pub fn advance(&mut self, now: DateTime<Utc>, ended: &[bool]) -> Option<i64> {
        let started_at = *self.started_at.get_or_insert(now);
        for (clock, ended) in self.inputs.iter_mut().zip(ended) {
            clock.ended |= *ended;
        }
        let candidate = if self.inputs.iter().all(|c| c.ended) {
            Some(END_OF_TIME)
        } else {
            let active: Vec<&InputClock> = self
                .inputs
                .iter()
                .filter(|clock| !clock.ended && !clock.is_idle(now, started_at))
                .collect();
            if active.is_empty() {
                self.idle_watermark(now)
            } else {
                // One active stream that has not read a row yet holds the
                // watermark where it is.
                active
                    .iter()
                    .map(|clock| clock.watermark())
                    .collect::<Option<Vec<i64>>>()
                    .and_then(|marks| marks.into_iter().min())
            }
        };
        if let Some(candidate) = candidate
            && self.current.is_none_or(|current| candidate > current)
        {
            self.current = Some(candidate);
        }
        self.current
    }

    /// Every input idle (or ended): the largest of their watermarks, moved on
    /// by the processing time since the last row arrived.
    fn idle_watermark(&self, now: DateTime<Utc>) -> Option<i64> {
        let mark = self.inputs.iter().filter_map(InputClock::watermark).max()?;
        let last_row = self.inputs.iter().filter_map(|c| c.last_row_at).max()?;
        let silent = (now - last_row).num_milliseconds().max(0);
        Some(mark.saturating_add(silent))
    }
}

impl WatermarkClock {
    /// The clock's state as one record batch: a row per input, the query's
    /// own values repeated on each.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        use datafusion::arrow::array::{BooleanArray, Int64Array};
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let millis = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        let schema = Arc::new(Schema::new(vec![
            Field::new("max_event", DataType::Int64, true),
            Field::new("last_row_at", DataType::Int64, true),
            Field::new("ended", DataType::Boolean, false),
            Field::new("started_at", DataType::Int64, true),
            Field::new("current", DataType::Int64, true),
        ]));
        let rows = self.inputs.len();
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(
                    self.inputs.iter().map(|c| c.max_event).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    self.inputs
                        .iter()
                        .map(|c| millis(c.last_row_at))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    self.inputs.iter().map(|c| c.ended).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![millis(self.started_at); rows])),
                Arc::new(Int64Array::from(vec![self.current; rows])),
            ],
        )?)
    }

    /// Restores what [`WatermarkClock::snapshot`] saved.
    pub fn restore(&mut self, state: &RecordBatch) -> Result<()> {
        use datafusion::arrow::array::{BooleanArray, Int64Array};
        if state.num_rows() != self.inputs.len() || state.num_columns() != 5 {
            return Err(BrookError::Internal(
                "a watermark state for other inputs".into(),
            ));
        }
        let int = |column: usize| -> Result<Vec<Option<i64>>> {
            Ok(state
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| BrookError::Internal("a watermark state column".into()))?
                .iter()
                .collect())
        };
        let time = |t: Option<i64>| t.and_then(DateTime::from_timestamp_millis);
        let (max_event, last_row_at) = (int(0)?, int(1)?);
        let ended = state
            .column(2)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| BrookError::Internal("a watermark state column".into()))?;
        for (index, clock) in self.inputs.iter_mut().enumerate() {
            clock.max_event = max_event[index];
            clock.last_row_at = time(last_row_at[index]);
            clock.ended = ended.value(index);
        }
        self.started_at = int(3)?
            .first()
            .copied()
            .flatten()
            .and_then(DateTime::from_timestamp_millis);
        self.current = int(4)?.first().copied().flatten();
        Ok(())
    }
}

impl InputClock {
    fn watermark(&self) -> Option<i64> {
        self.max_event
            .map(|max| max.saturating_sub(millis(self.event_time.delay)))
    }

    fn is_idle(&self, now: DateTime<Utc>, started_at: DateTime<Utc>) -> bool {
        let since = self.last_row_at.unwrap_or(started_at);
        (now - since).num_milliseconds() >= millis(self.event_time.idle_timeout)
    }
}

/// A duration in whole milliseconds (saturating).
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Column `column` of `batch` as milliseconds since the epoch, rounded
/// down (also before 1970), the unit of `window_start` and `window_end`.
pub(crate) fn event_millis(
    batch: &RecordBatch,
    column: usize,
) -> Result<TimestampMillisecondArray> {
    let array = batch.column(column);
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return Err(BrookError::Internal(format!(
            "the event-time column is {}, not a timestamp",
            array.data_type()
        )));
    };
    fn convert<T: ArrowPrimitiveType<Native = i64>>(
        array: &dyn Array,
        to_millis: impl Fn(i64) -> Option<i64>,
    ) -> Result<TimestampMillisecondArray> {
        let values = array
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .ok_or_else(|| BrookError::Internal("an event-time column of the wrong type".into()))?;
        values
            .iter()
            .map(|value| match value {
                None => Ok(None),
                Some(value) => to_millis(value).map(Some).ok_or_else(|| {
                    BrookError::invalid(format!("event time {value} s is out of range"))
                }),
            })
            .collect()
    }
    match unit {
        TimeUnit::Second => convert::<TimestampSecondType>(array, |v| v.checked_mul(1000)),
        TimeUnit::Millisecond => convert::<TimestampMillisecondType>(array, Some),
        TimeUnit::Microsecond => {
            convert::<TimestampMicrosecondType>(array, |v| Some(v.div_euclid(1000)))
        }
        TimeUnit::Nanosecond => {
            convert::<TimestampNanosecondType>(array, |v| Some(v.div_euclid(1_000_000)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap()
    }

    fn times(values: &[i64]) -> TimestampMillisecondArray {
        TimestampMillisecondArray::from(values.to_vec())
    }

    fn clock(inputs: usize) -> WatermarkClock {
        WatermarkClock::new(
            (0..inputs)
                .map(|_| {
                    (
                        EventTime::new("ts", Duration::from_secs(5))
                            .with_idle_timeout(Duration::from_secs(2)),
                        0,
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn the_watermark_is_the_largest_event_time_minus_the_delay_and_never_goes_back() {
        let mut clock = clock(1);
        let now = at(100_000);
        clock.observe(0, &times(&[50_000, 60_000, 55_000]), now);
        assert_eq!(clock.advance(now, &[false]), Some(55_000));
        clock.observe(0, &times(&[40_000]), at(100_100));
        assert_eq!(clock.advance(at(100_100), &[false]), Some(55_000));
    }

    #[test]
    fn a_far_future_row_is_counted_and_does_not_move_the_watermark() {
        let mut clock = clock(1);
        let now = at(100_000);
        let far = 100_000 + 3_600_000 + 1;
        assert_eq!(clock.observe(0, &times(&[60_000, far]), now), 1);
        assert_eq!(clock.advance(now, &[false]), Some(55_000));
    }

    #[test]
    fn the_slowest_active_stream_holds_the_watermark_until_it_is_idle() {
        let mut clock = clock(2);
        clock.observe(0, &times(&[60_000]), at(0));
        clock.observe(1, &times(&[30_000]), at(0));
        assert_eq!(clock.advance(at(0), &[false, false]), Some(25_000));
        clock.observe(0, &times(&[70_000]), at(1_000));
        assert_eq!(clock.advance(at(1_000), &[false, false]), Some(25_000));
        // Stream 1 has been silent for the idle timeout (2 s).
        clock.observe(0, &times(&[80_000]), at(2_000));
        assert_eq!(clock.advance(at(2_000), &[false, false]), Some(75_000));
    }

    #[test]
    fn a_stream_without_rows_holds_the_watermark_until_idle() {
        let mut clock = clock(2);
        clock.observe(0, &times(&[60_000]), at(0));
        assert_eq!(clock.advance(at(0), &[false, false]), None);
        clock.observe(0, &times(&[61_000]), at(2_000));
        assert_eq!(clock.advance(at(2_000), &[false, false]), Some(56_000));
    }

    #[test]
    fn with_every_stream_idle_the_watermark_moves_with_processing_time() {
        let mut clock = clock(1);
        clock.observe(0, &times(&[60_000]), at(0));
        assert_eq!(clock.advance(at(0), &[false]), Some(55_000));
        assert_eq!(clock.advance(at(1_000), &[false]), Some(55_000));
        assert_eq!(clock.advance(at(3_000), &[false]), Some(58_000));
    }

    #[test]
    fn when_every_stream_ended_the_watermark_is_the_end_of_time() {
        let mut clock = clock(2);
        clock.observe(0, &times(&[60_000]), at(0));
        assert_eq!(clock.advance(at(0), &[true, false]), None);
        assert_eq!(clock.advance(at(100), &[false, true]), Some(END_OF_TIME));
    }
}
