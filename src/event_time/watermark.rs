//! A query's watermark over the streams it reads (see the module docs of
//! [`crate::event_time`] for the definitions). Times are milliseconds since
//! the epoch, the unit of `window_start` and `window_end`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrowPrimitiveType, Int32Array, PrimitiveArray, RecordBatch, TimestampMillisecondArray,
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
    /// A Kafka stream's `_partition` column, when declared: each partition
    /// then keeps a watermark of its own.
    partition_column: Option<usize>,
    /// Per partition (one, 0, without a partition column).
    parts: BTreeMap<i32, PartClock>,
    ended: bool,
}

/// One partition's (or a whole stream's) clock.
#[derive(Debug, Default, Clone, Copy)]
struct PartClock {
    /// The largest event time read (far-future rows excepted).
    max_event: Option<i64>,
    /// The tick time of the last batch that held a row of it.
    last_row_at: Option<DateTime<Utc>>,
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
                    partition_column: None,
                    parts: BTreeMap::new(),
                    ended: false,
                })
                .collect(),
            started_at: None,
            current: None,
        }
    }

    /// Keeps a watermark per partition of input `input`, whose partition
    /// (an `INT`) is in column `column`: the input's watermark is the
    /// smallest over its partitions that are not idle.
    pub fn partition_by(&mut self, input: usize, column: usize) {
        if let Some(clock) = self.inputs.get_mut(input) {
            clock.partition_column = Some(column);
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

    /// Records the event times `times` of `rows` read from `input` in a
    /// batch cut at `now`; returns how many were too far ahead of `now` to
    /// move the watermark.
    pub fn observe_rows(
        &mut self,
        input: usize,
        rows: &RecordBatch,
        times: &TimestampMillisecondArray,
        now: DateTime<Utc>,
    ) -> u64 {
        let partitions = self
            .inputs
            .get(input)
            .and_then(|clock| clock.partition_column)
            .and_then(|column| {
                let partitions =
                    datafusion::arrow::compute::cast(rows.column(column), &DataType::Int32).ok()?;
                partitions.as_any().downcast_ref::<Int32Array>().cloned()
            });
        self.observe_parts(input, times, partitions.as_ref(), now)
    }

    /// [`WatermarkClock::observe_rows`] for an input without partitions.
    #[cfg(test)]
    pub fn observe(
        &mut self,
        input: usize,
        times: &TimestampMillisecondArray,
        now: DateTime<Utc>,
    ) -> u64 {
        self.observe_parts(input, times, None, now)
    }

    fn observe_parts(
        &mut self,
        input: usize,
        times: &TimestampMillisecondArray,
        partitions: Option<&Int32Array>,
        now: DateTime<Utc>,
    ) -> u64 {
        let Some(clock) = self.inputs.get_mut(input) else {
            return 0;
        };
        if times.is_empty() {
            return 0;
        }
        let limit = now
            .timestamp_millis()
            .saturating_add(millis(clock.event_time.max_ahead));
        // One clock for the whole input, no row too far ahead: the largest
        // event time is all there is to know.
        if partitions.is_none()
            && let Some(latest) = datafusion::arrow::compute::max(times)
            && latest <= limit
        {
            let part = clock.parts.entry(0).or_default();
            part.last_row_at = Some(now);
            if part.max_event.is_none_or(|max| latest > max) {
                part.max_event = Some(latest);
            }
            return 0;
        }
        let mut far_future = 0;
        for (row, time) in times.iter().enumerate() {
            let part = partitions
                .filter(|p| p.is_valid(row))
                .map_or(0, |p| p.value(row));
            let part = clock.parts.entry(part).or_default();
            part.last_row_at = Some(now);
            let Some(time) = time else { continue };
            if time > limit {
                far_future += 1;
            } else if part.max_event.is_none_or(|max| time > max) {
                part.max_event = Some(time);
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
                    .map(|clock| clock.watermark(now))
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
        let parts = || {
            self.inputs
                .iter()
                .flat_map(|c| c.parts.values().map(move |p| (c, p)))
        };
        let mark = parts().filter_map(|(c, p)| c.part_watermark(p)).max()?;
        let last_row = parts().filter_map(|(_, p)| p.last_row_at).max()?;
        let silent = (now - last_row).num_milliseconds().max(0);
        Some(mark.saturating_add(silent))
    }

    /// The clock's state as one record batch: a row per input and
    /// partition, the query's own values repeated on each.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        use datafusion::arrow::array::{BooleanArray, Int64Array, UInt32Array};
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let millis = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        let mut rows: Vec<(u32, Option<i32>, PartClock, bool)> = Vec::new();
        for (index, clock) in self.inputs.iter().enumerate() {
            // An input without rows keeps its `ended` in a row of its own.
            rows.push((index as u32, None, PartClock::default(), clock.ended));
            for (part, state) in &clock.parts {
                rows.push((index as u32, Some(*part), *state, clock.ended));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("input", DataType::UInt32, false),
            Field::new("partition", DataType::Int32, true),
            Field::new("max_event", DataType::Int64, true),
            Field::new("last_row_at", DataType::Int64, true),
            Field::new("ended", DataType::Boolean, false),
            Field::new("started_at", DataType::Int64, true),
            Field::new("current", DataType::Int64, true),
        ]));
        let count = rows.len();
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt32Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2.max_event).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| millis(r.2.last_row_at))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![millis(self.started_at); count])),
                Arc::new(Int64Array::from(vec![self.current; count])),
            ],
        )?)
    }

    /// Restores what [`WatermarkClock::snapshot`] saved.
    pub fn restore(&mut self, state: &RecordBatch) -> Result<()> {
        use datafusion::arrow::array::{BooleanArray, Int64Array, UInt32Array};
        let bad = || BrookError::Internal("a watermark state of another shape".into());
        if state.num_columns() != 7 {
            return Err(bad());
        }
        let inputs = state
            .column(0)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(bad)?;
        let parts = state
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(bad)?;
        let int = |column: usize| -> Result<&Int64Array> {
            state
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(bad)
        };
        // Columns 3 and 5 (last row, start) are not restored: see below.
        let (max_event, current) = (int(2)?, int(6)?);
        let ended = state
            .column(4)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(bad)?;
        let value = |array: &Int64Array, row: usize| array.is_valid(row).then(|| array.value(row));
        for clock in &mut self.inputs {
            clock.parts.clear();
        }
        for row in 0..state.num_rows() {
            let clock = self
                .inputs
                .get_mut(inputs.value(row) as usize)
                .ok_or_else(bad)?;
            clock.ended = ended.value(row);
            if parts.is_valid(row) {
                // Idleness starts afresh: the time the query was down is
                // not silence of its streams (it would move the watermark
                // on by the downtime and close windows early).
                clock.parts.insert(
                    parts.value(row),
                    PartClock {
                        max_event: value(max_event, row),
                        last_row_at: None,
                    },
                );
            }
        }
        self.started_at = None;
        if state.num_rows() > 0 {
            self.current = value(current, 0);
        }
        Ok(())
    }
}

impl InputClock {
    fn part_watermark(&self, part: &PartClock) -> Option<i64> {
        part.max_event
            .map(|max| max.saturating_sub(millis(self.event_time.delay)))
    }

    fn part_is_idle(&self, part: &PartClock, now: DateTime<Utc>) -> bool {
        part.last_row_at
            .is_some_and(|at| (now - at).num_milliseconds() >= millis(self.event_time.idle_timeout))
    }

    /// The smallest watermark over the partitions that are not idle (all of
    /// them if every one is idle: the input is then idle as a whole).
    fn watermark(&self, now: DateTime<Utc>) -> Option<i64> {
        let active: Vec<&PartClock> = self
            .parts
            .values()
            .filter(|part| !self.part_is_idle(part, now))
            .collect();
        let parts: Vec<&PartClock> = if active.is_empty() {
            self.parts.values().collect()
        } else {
            active
        };
        if parts.is_empty() {
            return None;
        }
        parts
            .into_iter()
            .map(|part| self.part_watermark(part))
            .collect::<Option<Vec<i64>>>()
            .and_then(|marks| marks.into_iter().min())
    }

    /// No batch of the last `idle_timeout` held a row of this input.
    fn is_idle(&self, now: DateTime<Utc>, started_at: DateTime<Utc>) -> bool {
        let since = self
            .parts
            .values()
            .filter_map(|p| p.last_row_at)
            .max()
            .unwrap_or(started_at);
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
        per_milli: i64,
    ) -> Result<TimestampMillisecondArray> {
        let values = array
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .ok_or_else(|| BrookError::Internal("an event-time column of the wrong type".into()))?;
        Ok(values.unary(|v| v.div_euclid(per_milli)))
    }
    match unit {
        TimeUnit::Second => {
            let values = array
                .as_any()
                .downcast_ref::<PrimitiveArray<TimestampSecondType>>()
                .ok_or_else(|| {
                    BrookError::Internal("an event-time column of the wrong type".into())
                })?;
            values
                .try_unary(|v| {
                    v.checked_mul(1000).ok_or_else(|| {
                        datafusion::arrow::error::ArrowError::ComputeError(format!(
                            "event time {v} s is out of range"
                        ))
                    })
                })
                .map_err(BrookError::from)
        }
        TimeUnit::Millisecond => convert::<TimestampMillisecondType>(array, 1),
        TimeUnit::Microsecond => convert::<TimestampMicrosecondType>(array, 1_000),
        TimeUnit::Nanosecond => convert::<TimestampNanosecondType>(array, 1_000_000),
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
    fn each_partition_keeps_its_watermark_and_an_idle_one_stops_holding_it_back() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let mut clock = clock(1);
        clock.partition_by(0, 1);
        let rows = |times_ms: &[i64], partitions: &[i32]| {
            RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(vec![
                    Field::new("ts", DataType::Int64, false),
                    Field::new("_partition", DataType::Int32, false),
                ])),
                vec![
                    std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(
                        times_ms.to_vec(),
                    )),
                    std::sync::Arc::new(Int32Array::from(partitions.to_vec())),
                ],
            )
            .unwrap()
        };
        // Partition 1 is behind partition 0: it holds the watermark.
        clock.observe_rows(
            0,
            &rows(&[60_000, 20_000], &[0, 1]),
            &times(&[60_000, 20_000]),
            at(0),
        );
        assert_eq!(clock.advance(at(0), &[false]), Some(15_000));
        clock.observe_rows(0, &rows(&[70_000], &[0]), &times(&[70_000]), at(1_000));
        assert_eq!(clock.advance(at(1_000), &[false]), Some(15_000));
        // Silent for the idle timeout (2 s): it no longer holds it back.
        clock.observe_rows(0, &rows(&[80_000], &[0]), &times(&[80_000]), at(2_000));
        assert_eq!(clock.advance(at(2_000), &[false]), Some(75_000));
        // The state survives a snapshot.
        let mut restored = self::clock(1);
        restored.partition_by(0, 1);
        restored.restore(&clock.snapshot().unwrap()).unwrap();
        assert_eq!(restored.current(), Some(75_000));
        restored.observe_rows(0, &rows(&[30_000], &[1]), &times(&[30_000]), at(2_100));
        assert_eq!(restored.advance(at(2_100), &[false]), Some(75_000));
    }

    #[test]
    fn when_every_stream_ended_the_watermark_is_the_end_of_time() {
        let mut clock = clock(2);
        clock.observe(0, &times(&[60_000]), at(0));
        assert_eq!(clock.advance(at(0), &[true, false]), None);
        assert_eq!(clock.advance(at(100), &[false, true]), Some(END_OF_TIME));
    }
}
