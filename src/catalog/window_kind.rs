//! The kinds of window a scan can read a stream through (sliding or
//! tumbling in processing time, event-time windows and sessions, running
//! aggregates), as the planner and the engines see them. The table
//! functions that name them are in [`super::windows`].

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::sql::format_duration;

/// The column a window adds for the start of its time range (inclusive).
pub const WINDOW_START: &str = "window_start";
/// The column a window adds for the end of its time range (exclusive).
pub const WINDOW_END: &str = "window_end";

/// What a running aggregate emits per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Every group, every batch.
    Complete,
    /// Only the groups that the batch changed.
    Update,
}

/// How a scan reads its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// `HOP` or `TUMBLE`: windows of whole micro-batches.
    Sliding(SlidingWindow),
    /// `RUNNING`: everything since the query started.
    Running(OutputMode),
    /// `TUMBLE`, `HOP` or `SESSION` on an event-time column.
    Event(EventWindow),
}

/// The shape of an event-time window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventShape {
    /// Windows of `size` starting every `slide` (`TUMBLE`: slide = size),
    /// aligned to the epoch.
    Hop { slide: i64, size: i64 },
    /// Per group, rows closer than `gap` to each other.
    Session { gap: i64 },
}

/// A window on a stream's event-time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventWindow {
    /// `TUMBLE`, `HOP` or `SESSION`, as the user wrote it.
    pub function: &'static str,
    pub shape: EventShape,
}

impl EventWindow {
    /// The earliest event time with a window still open once the watermark
    /// is `mark`: rows before it are late.
    pub fn first_open(&self, mark: i64) -> i64 {
        match self.shape {
            // The last window of `time` ends at or before `mark` exactly when
            // `floor(time / slide) * slide <= mark - size`.
            EventShape::Hop { slide, size } => mark
                .saturating_sub(size)
                .div_euclid(slide)
                .saturating_add(1)
                .saturating_mul(slide),
            EventShape::Session { gap } => mark.saturating_sub(gap).saturating_add(1),
        }
    }

    /// The largest window end of the windows holding event time `time`:
    /// a row is late once the watermark has reached it.
    #[cfg(test)]
    pub fn last_end(&self, time: i64) -> i64 {
        match self.shape {
            EventShape::Hop { slide, size } => {
                (time.div_euclid(slide) * slide).saturating_add(size)
            }
            EventShape::Session { gap } => time.saturating_add(gap),
        }
    }
}

/// A sliding (or tumbling) window in processing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlidingWindow {
    /// `HOP` or `TUMBLE`, as the user wrote it.
    pub function: &'static str,
    pub size: Duration,
    pub slide: Duration,
    /// The batch interval when the query was planned.
    pub interval: Duration,
}

impl SlidingWindow {
    /// Batches per window.
    pub fn size_batches(&self) -> u64 {
        batches_in(self.size, self.interval)
    }

    /// Batches per slide: a window is emitted after every this many batches.
    pub fn slide_batches(&self) -> u64 {
        batches_in(self.slide, self.interval)
    }
}

fn batches_in(span: Duration, interval: Duration) -> u64 {
    (span.as_nanos() / interval.as_nanos().max(1)) as u64
}

impl std::fmt::Display for WindowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowKind::Sliding(w) if w.function == "TUMBLE" => write!(
                f,
                "TUMBLE size {} ({} batches of {})",
                format_duration(w.size),
                w.size_batches(),
                format_duration(w.interval)
            ),
            WindowKind::Sliding(w) => write!(
                f,
                "HOP slide {} size {} ({} batches, emitted every {} of {})",
                format_duration(w.slide),
                format_duration(w.size),
                w.size_batches(),
                w.slide_batches(),
                format_duration(w.interval)
            ),
            WindowKind::Event(w) => {
                let ms = |v: i64| format_duration(Duration::from_millis(v.max(0) as u64));
                match w.shape {
                    EventShape::Hop { slide, size } if w.function == "TUMBLE" && slide == size => {
                        write!(f, "TUMBLE size {} in event time", ms(size))
                    }
                    EventShape::Hop { slide, size } => {
                        write!(f, "HOP slide {} size {} in event time", ms(slide), ms(size))
                    }
                    EventShape::Session { gap } => {
                        write!(f, "SESSION gap {} in event time", ms(gap))
                    }
                }
            }
            WindowKind::Running(OutputMode::Complete) => write!(f, "RUNNING (complete mode)"),
            WindowKind::Running(OutputMode::Update) => write!(f, "RUNNING (update mode)"),
        }
    }
}

/// The type of `window_start` and `window_end`: UTC timestamps in
/// milliseconds.
pub fn window_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
}
