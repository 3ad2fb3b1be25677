//! Event time: a stream's declared time column and watermark
//! (`WATERMARK FOR ts AS ts - INTERVAL '5' SECOND`), the options that shape
//! it (`idle_timeout`, `max_ahead`), and the watermark a query keeps over the
//! streams it reads ([`watermark`]).
//!
//! The definitions, which the README repeats:
//! - a stream's watermark is the largest event time a query has read from
//!   it, minus the declared delay; it never goes backwards;
//! - a row more than `max_ahead` ahead of the wall clock (the tick's time)
//!   does not move it (it is counted as a far-future row);
//! - a stream is idle when no batch of the last `idle_timeout` held a row
//!   from it (a backlog still being drained is not idle: each batch takes
//!   rows from it); an idle or ended stream does not hold the query's
//!   watermark back;
//! - a query's watermark is the smallest over the streams it reads that are
//!   neither idle nor ended; when all are idle, it advances with processing
//!   time from the last row's arrival; when all have ended, it is the end of
//!   time.

pub(crate) mod watermark;

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Schema};

use crate::error::{BrookError, Result};
use crate::sql::{format_duration, parse_duration};

/// The default [`EventTime::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`EventTime::max_ahead`].
pub const DEFAULT_MAX_AHEAD: Duration = Duration::from_secs(3600);

/// The options a stream with a `WATERMARK` takes besides its connector's.
pub const EVENT_TIME_OPTIONS: &[crate::options::OptionSpec] = &[
    crate::options::OptionSpec {
        key: "idle_timeout",
        default: Some("5s"),
        help: "a stream that receives no row for this long stops holding the watermark back",
    },
    crate::options::OptionSpec {
        key: "max_ahead",
        default: Some("1h"),
        help: "a row whose event time is further ahead of the wall clock does not move the watermark",
    },
];

/// A stream's event-time declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The event-time column (a `TIMESTAMP`).
    pub column: String,
    /// How far the watermark stays behind the largest event time seen.
    pub delay: Duration,
    /// How long a stream may receive nothing before it stops holding the
    /// watermark back; default 5 seconds.
    pub idle_timeout: Duration,
    /// How far ahead of the wall clock an event time may be and still move
    /// the watermark; default 1 hour.
    pub max_ahead: Duration,
}

impl EventTime {
    /// Event time in `column`, with the watermark `delay` behind the largest
    /// event time seen, and the default idle timeout and far-future bound.
    pub fn new(column: impl Into<String>, delay: Duration) -> Self {
        Self {
            column: column.into(),
            delay,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_ahead: DEFAULT_MAX_AHEAD,
        }
    }

    /// Sets how long a silent stream holds the watermark back (default 5 s).
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets how far ahead of the wall clock an event time may move the
    /// watermark (default 1 hour).
    pub fn with_max_ahead(mut self, max_ahead: Duration) -> Self {
        self.max_ahead = max_ahead;
        self
    }

    /// Reads `idle_timeout` and `max_ahead` out of `options`, leaving the
    /// connector's own options.
    pub(crate) fn take_options(
        mut self,
        stream: &str,
        options: &mut Vec<(String, String)>,
    ) -> Result<Self> {
        let mut rest = Vec::with_capacity(options.len());
        for (key, value) in options.drain(..) {
            let duration = || {
                parse_duration(&value).map_err(|err| {
                    BrookError::invalid(format!("stream '{stream}': option '{key}': {err}"))
                })
            };
            match key.as_str() {
                "idle_timeout" => self.idle_timeout = duration()?,
                "max_ahead" => self.max_ahead = duration()?,
                _ => rest.push((key, value)),
            }
        }
        *options = rest;
        Ok(self)
    }

    /// The index of the event-time column in `schema`, checking that it is
    /// a timestamp.
    pub(crate) fn column_index(&self, stream: &str, schema: &Schema) -> Result<usize> {
        let Ok(index) = schema.index_of(&self.column) else {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': the WATERMARK is for column '{}', which the stream does not declare",
                self.column
            )));
        };
        match schema.field(index).data_type() {
            DataType::Timestamp(_, _) => Ok(index),
            other => Err(BrookError::invalid(format!(
                "stream '{stream}': the event-time column '{}' must be a TIMESTAMP, not {other}",
                self.column
            ))),
        }
    }

    /// The declaration as `SHOW STREAMS` shows it.
    pub(crate) fn describe(&self) -> String {
        let watermark = if self.delay.is_zero() {
            self.column.clone()
        } else {
            format!("{} - {}", self.column, format_duration(self.delay))
        };
        format!(
            "watermark = '{watermark}', idle_timeout = '{}', max_ahead = '{}'",
            format_duration(self.idle_timeout),
            format_duration(self.max_ahead)
        )
    }
}
