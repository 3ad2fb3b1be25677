//! The options every stream of lines shares (socket, files, Kafka): its
//! bounds, how its lines are read (format, delimiter, timestamps), and
//! what a bad line does. The connectors' own options build on these.

use crate::error::Result;
use crate::options::{OptionReader, OptionSpec};
use crate::stream::StreamLimits;

/// Reads `max_pending_rows`, `max_pending_bytes` and `max_batch_rows`.
pub(crate) fn read_limits(options: &OptionReader) -> Result<StreamLimits> {
    let defaults = StreamLimits::default();
    Ok(StreamLimits {
        max_pending_rows: options
            .positive("max_pending_rows")?
            .unwrap_or(defaults.max_pending_rows),
        max_pending_bytes: options
            .positive("max_pending_bytes")?
            .unwrap_or(defaults.max_pending_bytes),
        max_batch_rows: options.positive("max_batch_rows")?,
    })
}

/// The limits' values, by option key.
pub(crate) fn limit_value(limits: &StreamLimits, key: &str) -> Option<String> {
    match key {
        "max_pending_rows" => Some(limits.max_pending_rows.to_string()),
        "max_pending_bytes" => Some(limits.max_pending_bytes.to_string()),
        "max_batch_rows" => limits.max_batch_rows.map(|rows| rows.to_string()),
        _ => None,
    }
}

/// The bounds every stream takes.
pub(crate) const LIMIT_OPTIONS: [OptionSpec; 3] = [
    OptionSpec {
        key: "max_pending_rows",
        default: Some("1000000"),
        help: "rows waiting for the next batch before the source waits",
    },
    OptionSpec {
        key: "max_pending_bytes",
        default: Some("33554432"),
        help: "bytes of Arrow memory waiting for the next batch before the source waits",
    },
    OptionSpec {
        key: "max_batch_rows",
        default: None,
        help: "rows one batch takes at most; the rest waits for the next tick",
    },
];

/// How every stream of lines (socket, files, Kafka) cuts, splits and reads
/// them.
pub(crate) const LINE_OPTIONS: [OptionSpec; 3] = [
    OptionSpec {
        key: "delimiter",
        default: Some(","),
        help: "CSV field delimiter",
    },
    OptionSpec {
        key: "max_line_bytes",
        default: Some("1048576"),
        help: "longest line accepted",
    },
    OptionSpec {
        key: "timestamp_format",
        default: Some("text"),
        help: "how CSV and JSON lines write a TIMESTAMP: 'text' (2024-01-02 10:00:00), or 'epoch_s', 'epoch_ms', 'epoch_us', 'epoch_ns' since 1970-01-01 UTC",
    },
];

/// How a TIMESTAMP column's field is written in CSV and JSON lines. DATE
/// columns are read the same under every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    /// `YYYY-MM-DD`, then optionally `T` or a space and
    /// `HH:MM[:SS[.fraction]]`, then optionally `Z` or `+HH:MM` / `-HH:MM`
    /// (default).
    #[default]
    Text,
    /// Seconds since 1970-01-01T00:00:00Z: an integer with an optional sign
    /// and up to 9 fractional digits (`1700000000.5`).
    EpochSeconds,
    /// Whole milliseconds since 1970-01-01T00:00:00Z.
    EpochMillis,
    /// Whole microseconds since 1970-01-01T00:00:00Z.
    EpochMicros,
    /// Whole nanoseconds since 1970-01-01T00:00:00Z.
    EpochNanos,
}

impl TimestampFormat {
    /// Every format, in the order error messages list them.
    const ALL: [TimestampFormat; 5] = [
        TimestampFormat::Text,
        TimestampFormat::EpochSeconds,
        TimestampFormat::EpochMillis,
        TimestampFormat::EpochMicros,
        TimestampFormat::EpochNanos,
    ];

    /// The name written in `WITH (timestamp_format = '...')`.
    pub fn name(self) -> &'static str {
        match self {
            TimestampFormat::Text => "text",
            TimestampFormat::EpochSeconds => "epoch_s",
            TimestampFormat::EpochMillis => "epoch_ms",
            TimestampFormat::EpochMicros => "epoch_us",
            TimestampFormat::EpochNanos => "epoch_ns",
        }
    }
}

/// The stream's `timestamp_format`, if given.
pub(crate) fn read_timestamp_format(options: &OptionReader) -> Result<Option<TimestampFormat>> {
    options.choice(
        "timestamp_format",
        &TimestampFormat::ALL.map(|format| (format.name(), format)),
    )
}

/// How a socket's lines become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineFormat {
    /// Each line is one row of one text column (default).
    #[default]
    Text,
    /// Each line is one CSV record in the stream's schema.
    Csv,
    /// Each line is one JSON object; its fields are matched to the
    /// stream's columns by name, a missing field is NULL.
    Json,
    /// Each line is one change in Debezium's JSON envelope; the stream is
    /// a changelog (see [`crate::changelog`]).
    DebeziumJson,
}

impl LineFormat {
    /// Whether the format's rows are changes.
    pub fn is_changelog(self) -> bool {
        self == LineFormat::DebeziumJson
    }
}

/// What to do with a row that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Skip it, count it, report it, and go on (default).
    #[default]
    Skip,
    /// Fail the queries that read the stream.
    Fail,
}

pub(crate) const FORMATS: &[(&str, LineFormat)] = &[
    ("text", LineFormat::Text),
    ("csv", LineFormat::Csv),
    ("json", LineFormat::Json),
    ("debezium-json", LineFormat::DebeziumJson),
];
pub(crate) const ON_ERROR: &[(&str, OnError)] = &[("skip", OnError::Skip), ("fail", OnError::Fail)];

/// The CSV field delimiter: one ASCII character, or `\t` for a tab.
pub(crate) fn read_delimiter(options: &OptionReader) -> Result<Option<u8>> {
    options
        .text("delimiter")
        .map(|text| match text.as_bytes() {
            b"\\t" => Ok(b'\t'),
            [byte] if byte.is_ascii() => Ok(*byte),
            _ => Err(options.bad(
                "delimiter",
                format_args!("must be one ASCII character, got '{text}'"),
            )),
        })
        .transpose()
}

/// The name under which `value` is written.
pub(crate) fn choice_name<T: PartialEq>(choices: &[(&str, T)], value: T) -> Option<String> {
    choices
        .iter()
        .find(|(_, choice)| *choice == value)
        .map(|(name, _)| name.to_string())
}
