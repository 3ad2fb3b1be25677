//! Connector options, from Rust builders or from `CREATE STREAM ... WITH (...)`.

use std::collections::BTreeMap;

use crate::error::{BrookError, Result};

/// The bounds between a stream's source and its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Rows held between ticks before the source waits (a socket stops
    /// reading; a queue refuses pushes); default 4,000,000.
    pub max_pending_rows: usize,
    /// Bytes of Arrow memory held between ticks before the source waits;
    /// default 256 MiB.
    pub max_pending_bytes: usize,
    /// Rows one batch takes at most; the rest waits for the next tick.
    /// Default: no cap.
    pub max_batch_rows: Option<usize>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_pending_rows: 4_000_000,
            max_pending_bytes: 256 << 20,
            max_batch_rows: None,
        }
    }
}

impl StreamLimits {
    /// Reads `max_pending_rows`, `max_pending_bytes` and `max_batch_rows`
    /// from `options`, removing them.
    fn take_from(stream: &str, options: &mut BTreeMap<&str, &str>) -> Result<Self> {
        let mut limits = Self::default();
        let mut positive = |key: &str| -> Result<Option<usize>> {
            options
                .remove(key)
                .map(|value| {
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        BrookError::invalid(format!(
                            "stream '{stream}': {key} must be a positive number, got '{value}'"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(rows) = positive("max_pending_rows")? {
            limits.max_pending_rows = rows;
        }
        if let Some(bytes) = positive("max_pending_bytes")? {
            limits.max_pending_bytes = bytes;
        }
        limits.max_batch_rows = positive("max_batch_rows")?;
        Ok(limits)
    }
}

/// Options of a queue stream (Spark's `queueStream`).
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Take one pushed item per batch interval (`true`) or everything queued
    /// at each tick (`false`, the default).
    pub one_at_a_time: bool,
    /// How much may wait for the next tick, and how much one batch takes.
    pub limits: StreamLimits,
}

impl QueueOptions {
    /// Sets [`QueueOptions::one_at_a_time`].
    pub fn with_one_at_a_time(mut self, one_at_a_time: bool) -> Self {
        self.one_at_a_time = one_at_a_time;
        self
    }

    /// Sets [`QueueOptions::limits`].
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// How a socket's lines become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineFormat {
    /// Each line is one row of one text column (default).
    #[default]
    Text,
    /// Each line is one CSV record in the stream's schema.
    Csv,
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

/// Options of a socket stream (Spark's `socketTextStream`).
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Line format; default [`LineFormat::Text`].
    pub format: LineFormat,
    /// Reconnect with backoff when the connection is refused or closes;
    /// default `false` (the stream ends when the peer closes).
    pub reconnect: bool,
    /// What to do with malformed rows; default [`OnError::Skip`].
    pub on_error: OnError,
    /// CSV field delimiter; default `,`.
    pub delimiter: u8,
    /// How much may wait for the next tick (then the socket stops reading
    /// and TCP flow control slows the sender), and how much one batch takes.
    pub limits: StreamLimits,
    /// With `reconnect`, consecutive failed reconnection attempts after which
    /// the stream fails; default `None` (keep trying).
    pub reconnect_attempts: Option<u32>,
    /// Longest line accepted; the rest of a longer line is discarded and the
    /// line reported. Default 1 MiB.
    pub max_line_bytes: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            format: LineFormat::Text,
            reconnect: false,
            on_error: OnError::Skip,
            delimiter: b',',
            limits: StreamLimits::default(),
            max_line_bytes: 1 << 20,
            reconnect_attempts: None,
        }
    }
}

impl SocketOptions {
    /// Sets [`SocketOptions::format`].
    pub fn with_format(mut self, format: LineFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets [`SocketOptions::reconnect`].
    pub fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets [`SocketOptions::on_error`].
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Sets [`SocketOptions::max_line_bytes`].
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// Sets [`SocketOptions::limits`].
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// A connector and its options, as given in `CREATE STREAM ... WITH (...)`.
#[derive(Debug, Clone)]
pub(crate) enum Connector {
    Queue(QueueOptions),
    Socket {
        address: String,
        options: SocketOptions,
    },
}

impl Connector {
    /// Reads `WITH (...)` options; every key must be known to the connector.
    pub fn from_options(stream: &str, options: &[(String, String)]) -> Result<Self> {
        let mut remaining: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in options {
            if remaining.insert(key, value).is_some() {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': option '{key}' is given twice"
                )));
            }
        }
        let connector = remaining.remove("connector").ok_or_else(|| {
            BrookError::invalid(format!(
                "stream '{stream}': missing option connector; use WITH (connector = 'queue') or WITH (connector = 'socket', port = '9000')"
            ))
        })?;
        let limits = StreamLimits::take_from(stream, &mut remaining)?;
        let mut take = |key: &str| remaining.remove(key);
        let parsed = match connector.to_ascii_lowercase().as_str() {
            "queue" => Connector::Queue(QueueOptions {
                one_at_a_time: take("one_at_a_time")
                    .map_or(Ok(false), |v| parse_bool(stream, "one_at_a_time", v))?,
                limits,
            }),
            "socket" => {
                let host = take("host").unwrap_or("localhost");
                let port = take("port").ok_or_else(|| {
                    BrookError::invalid(format!(
                        "stream '{stream}': the socket connector needs option port"
                    ))
                })?;
                let port: u16 = port.parse().map_err(|_| {
                    BrookError::invalid(format!(
                        "stream '{stream}': port must be a number from 1 to 65535, got '{port}'"
                    ))
                })?;
                let mut options = SocketOptions {
                    limits,
                    ..SocketOptions::default()
                };
                if let Some(format) = take("format") {
                    options.format = match format.to_ascii_lowercase().as_str() {
                        "text" => LineFormat::Text,
                        "csv" => LineFormat::Csv,
                        other => {
                            return Err(BrookError::invalid(format!(
                                "stream '{stream}': format must be 'text' or 'csv', got '{other}'"
                            )));
                        }
                    };
                }
                if let Some(reconnect) = take("reconnect") {
                    options.reconnect = parse_bool(stream, "reconnect", reconnect)?;
                }
                if let Some(on_error) = take("on_error") {
                    options.on_error = match on_error.to_ascii_lowercase().as_str() {
                        "skip" => OnError::Skip,
                        "fail" => OnError::Fail,
                        other => {
                            return Err(BrookError::invalid(format!(
                                "stream '{stream}': on_error must be 'skip' or 'fail', got '{other}'"
                            )));
                        }
                    };
                }
                if let Some(delimiter) = take("delimiter") {
                    options.delimiter = match delimiter.as_bytes() {
                        [byte] if byte.is_ascii() => *byte,
                        _ if delimiter == "\\t" => b'\t',
                        _ => {
                            return Err(BrookError::invalid(format!(
                                "stream '{stream}': delimiter must be one ASCII character, got '{delimiter}'"
                            )));
                        }
                    };
                }
                if let Some(attempts) = take("reconnect_attempts") {
                    options.reconnect_attempts = Some(attempts.parse().ok().filter(|a| *a > 0).ok_or_else(|| {
                        BrookError::invalid(format!(
                            "stream '{stream}': reconnect_attempts must be a positive number, got '{attempts}'"
                        ))
                    })?);
                }
                if let Some(bytes) = take("max_line_bytes") {
                    options.max_line_bytes = bytes.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                        BrookError::invalid(format!(
                            "stream '{stream}': max_line_bytes must be a positive number, got '{bytes}'"
                        ))
                    })?;
                }
                Connector::Socket {
                    address: format!("{host}:{port}"),
                    options,
                }
            }
            other => {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': unknown connector '{other}'; brook has 'queue' and 'socket'"
                )));
            }
        };
        if let Some((key, _)) = remaining.into_iter().next() {
            let known = match parsed {
                Connector::Queue(_) => {
                    "connector, one_at_a_time, max_pending_rows, max_pending_bytes, max_batch_rows"
                }
                Connector::Socket { .. } => {
                    "connector, host, port, format, reconnect, reconnect_attempts, on_error, delimiter, max_line_bytes, max_pending_rows, max_pending_bytes, max_batch_rows"
                }
            };
            return Err(BrookError::invalid(format!(
                "stream '{stream}': unknown option '{key}' for this connector (known: {known})"
            )));
        }
        Ok(parsed)
    }
}

fn parse_bool(stream: &str, key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(BrookError::invalid(format!(
            "stream '{stream}': option {key} must be 'true' or 'false', got '{value}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn socket_options_default_to_localhost_text() {
        let Connector::Socket { address, options } =
            Connector::from_options("ds", &options(&[("connector", "socket"), ("port", "9000")]))
                .unwrap()
        else {
            panic!("expected a socket")
        };
        assert_eq!(address, "localhost:9000");
        assert_eq!(options.format, LineFormat::Text);
        assert!(!options.reconnect);
    }

    #[test]
    fn unknown_and_bad_options_are_named() {
        let err = Connector::from_options(
            "ds",
            &options(&[("connector", "socket"), ("port", "9000"), ("colour", "red")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown option 'colour'"), "{err}");
        let err = Connector::from_options(
            "ds",
            &options(&[("connector", "socket"), ("port", "ninety")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("port must be a number"), "{err}");
        let err = Connector::from_options("q", &options(&[("connector", "kafka")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown connector 'kafka'"), "{err}");
    }
}
