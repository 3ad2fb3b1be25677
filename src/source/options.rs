//! Connector options, from Rust builders or from `CREATE STREAM ... WITH (...)`.

use super::kafka::KafkaOptions;
use super::line_options::{
    FORMATS, LIMIT_OPTIONS, LINE_OPTIONS, ON_ERROR, choice_name, limit_value, read_delimiter,
    read_limits, read_timestamp_format,
};
pub use super::line_options::{LineFormat, OnError, TimestampFormat};
use crate::error::{BrookError, Result};
use crate::options::{self, OptionReader, OptionSpec};
pub use crate::stream::StreamLimits;

/// The options of a queue stream.
pub const QUEUE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'queue'",
    },
    OptionSpec {
        key: "one_at_a_time",
        default: Some("false"),
        help: "each batch takes one item ('true') or every item queued at the tick",
    },
    LIMIT_OPTIONS[0],
    LIMIT_OPTIONS[1],
    LIMIT_OPTIONS[2],
];

/// The options of a socket stream.
pub const SOCKET_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'socket'",
    },
    OptionSpec {
        key: "host",
        default: Some("localhost"),
        help: "server to connect to",
    },
    OptionSpec {
        key: "port",
        default: None,
        help: "its port (required)",
    },
    OptionSpec {
        key: "format",
        default: Some("text"),
        help: "'text' (one column per line), 'csv' or 'json' (one object per line)",
    },
    OptionSpec {
        key: "reconnect",
        default: Some("false"),
        help: "reconnect with backoff when the connection is refused or closes",
    },
    OptionSpec {
        key: "reconnect_attempts",
        default: None,
        help: "failed reconnection attempts in a row after which the stream fails",
    },
    OptionSpec {
        key: "on_error",
        default: Some("skip"),
        help: "'skip' a malformed row (counted, reported) or 'fail' the stream",
    },
    LINE_OPTIONS[0],
    LINE_OPTIONS[1],
    LINE_OPTIONS[2],
    LIMIT_OPTIONS[0],
    LIMIT_OPTIONS[1],
    LIMIT_OPTIONS[2],
];

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

/// How a directory source's files become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesFormat {
    /// Lines of text, CSV or JSON, decoded as a socket's are.
    Lines(LineFormat),
    /// Parquet files: columns matched by name to the stream's columns.
    Parquet,
}

impl Default for FilesFormat {
    /// Lines of text, one column per line.
    fn default() -> Self {
        FilesFormat::Lines(LineFormat::Text)
    }
}

impl FilesFormat {
    /// The line format, unless the files are Parquet.
    pub fn line_format(self) -> Option<LineFormat> {
        match self {
            FilesFormat::Lines(format) => Some(format),
            FilesFormat::Parquet => None,
        }
    }
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
    /// How TIMESTAMP columns are written in CSV and JSON lines; default
    /// [`TimestampFormat::Text`].
    pub timestamp_format: TimestampFormat,
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
            timestamp_format: TimestampFormat::Text,
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

    /// Sets [`SocketOptions::timestamp_format`].
    pub fn with_timestamp_format(mut self, format: TimestampFormat) -> Self {
        self.timestamp_format = format;
        self
    }

    /// Sets [`SocketOptions::limits`].
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// Options of a directory stream (Spark's `textFileStream`).
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// The directory watched: a local path, or `s3://bucket/prefix/`.
    pub path: std::path::PathBuf,
    /// For an `s3://` path: the endpoint, region and keys given (the
    /// standard AWS environment variables fill in the rest).
    pub s3: crate::storage::S3Options,
    /// File format; default lines of text (`FilesFormat::Lines(LineFormat::Text)`).
    pub format: FilesFormat,
    /// File names taken: `*` and `?` wildcards; default `*`. Names that start
    /// with `.` or `_` (files being written, by convention) never match.
    pub pattern: String,
    /// Take the files already there when the stream starts (`true`, the
    /// default) or only those that appear after.
    pub start_existing: bool,
    /// Each CSV file starts with a header line, which is skipped; default
    /// `false`.
    pub header: bool,
    /// A file is taken once its size and modification time have not
    /// changed for this long; default 1 second. A file renamed in whole is
    /// complete at once but still waits this long.
    pub settle: std::time::Duration,
    /// What to do with malformed rows; default [`OnError::Skip`].
    pub on_error: OnError,
    /// CSV field delimiter; default `,`.
    pub delimiter: u8,
    /// Longest line accepted; default 1 MiB.
    pub max_line_bytes: usize,
    /// How TIMESTAMP columns are written in CSV and JSON lines (Parquet has
    /// its own types); default [`TimestampFormat::Text`].
    pub timestamp_format: TimestampFormat,
    /// How much may wait for the next tick, and how much one batch takes.
    pub limits: StreamLimits,
    /// Files one batch takes at most; the rest wait, in order, for later
    /// batches. Default `None`: every file ready at the tick.
    pub max_files_per_batch: Option<usize>,
}

impl FilesOptions {
    /// Options for the directory `path`, with the defaults.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        let socket = SocketOptions::default();
        Self {
            path: path.into(),
            s3: Default::default(),
            format: FilesFormat::default(),
            pattern: "*".to_string(),
            start_existing: true,
            header: false,
            settle: std::time::Duration::from_secs(1),
            on_error: OnError::Skip,
            delimiter: socket.delimiter,
            max_line_bytes: socket.max_line_bytes,
            timestamp_format: socket.timestamp_format,
            limits: StreamLimits::default(),
            max_files_per_batch: None,
        }
    }

    /// Sets [`FilesOptions::format`].
    pub fn with_format(mut self, format: FilesFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets [`FilesOptions::timestamp_format`].
    pub fn with_timestamp_format(mut self, format: TimestampFormat) -> Self {
        self.timestamp_format = format;
        self
    }

    /// Sets [`FilesOptions::max_files_per_batch`].
    pub fn with_max_files_per_batch(mut self, files: usize) -> Self {
        self.max_files_per_batch = Some(files);
        self
    }

    /// The options as `SHOW STREAMS` shows them.
    pub(crate) fn describe(&self) -> String {
        let specs = [FILES_OPTIONS, crate::storage::S3_OPTIONS].concat();
        options::describe(&specs, |key| match key {
            "path" => Some(self.path.display().to_string()),
            "format" => choice_name(FILES_FORMATS, self.format),
            "max_files_per_batch" => self.max_files_per_batch.map(|n| n.to_string()),
            "pattern" => Some(self.pattern.clone()),
            "start" => Some(
                if self.start_existing {
                    "existing"
                } else {
                    "new"
                }
                .to_string(),
            ),
            "header" => Some(self.header.to_string()),
            "settle" => Some(format!("{}ms", self.settle.as_millis())),
            "on_error" => choice_name(ON_ERROR, self.on_error),
            "delimiter" => Some(char::from(self.delimiter).to_string()),
            "max_line_bytes" => Some(self.max_line_bytes.to_string()),
            "timestamp_format" => Some(self.timestamp_format.name().to_string()),
            other => self
                .s3
                .shown(other)
                .or_else(|| limit_value(&self.limits, other)),
        })
    }
}

/// The options of a directory stream.
pub const FILES_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'files'",
    },
    OptionSpec {
        key: "path",
        default: None,
        help: "the directory watched (required)",
    },
    OptionSpec {
        key: "format",
        default: Some("text"),
        help: "'text' (one column per line), 'csv', 'json' (one object per line) or 'parquet'",
    },
    OptionSpec {
        key: "pattern",
        default: Some("*"),
        help: "file names taken (* and ? wildcards); names starting with . or _ never are",
    },
    OptionSpec {
        key: "start",
        default: Some("existing"),
        help: "'existing': the files already there too; 'new': only files that appear later",
    },
    OptionSpec {
        key: "header",
        default: Some("false"),
        help: "each CSV file starts with a header line, skipped",
    },
    OptionSpec {
        key: "settle",
        default: Some("1s"),
        help: "a file is taken once unchanged (size, modification time) for this long",
    },
    OptionSpec {
        key: "max_files_per_batch",
        default: None,
        help: "files one batch takes at most; the rest wait, in order, for later batches (default: no cap)",
    },
    OptionSpec {
        key: "on_error",
        default: Some("skip"),
        help: "'skip' a malformed row (counted, reported with file and line) or 'fail' the stream",
    },
    LINE_OPTIONS[0],
    LINE_OPTIONS[1],
    LINE_OPTIONS[2],
    LIMIT_OPTIONS[0],
    LIMIT_OPTIONS[1],
    LIMIT_OPTIONS[2],
];

/// A connector and its options, as given in `CREATE STREAM ... WITH (...)`.
#[derive(Debug, Clone)]
pub(crate) enum Connector {
    Queue(QueueOptions),
    Socket {
        address: String,
        options: SocketOptions,
    },
    Files(FilesOptions),
    Kafka(Box<KafkaOptions>),
    PostgresCdc(Box<super::postgres_cdc::PostgresCdcOptions>),
}

impl Connector {
    /// Whether the connector's rows are changes (a changelog format, or
    /// upsert Kafka).
    pub(crate) fn reads_changes(&self) -> bool {
        match self {
            Connector::Queue(_) => false,
            Connector::Socket { options, .. } => options.format.is_changelog(),
            Connector::Files(options) => options
                .format
                .line_format()
                .is_some_and(LineFormat::is_changelog),
            Connector::Kafka(options) => {
                options.format.is_changelog() || options.mode == super::KafkaMode::Upsert
            }
            Connector::PostgresCdc(_) => true,
        }
    }

    /// Gives an upsert Kafka stream its key.
    pub(crate) fn set_key(&mut self, key: &[String]) {
        if let Connector::Kafka(options) = self {
            options.upsert_key = key.to_vec();
        }
    }
}

const FILES_FORMATS: &[(&str, FilesFormat)] = &[
    ("text", FilesFormat::Lines(LineFormat::Text)),
    ("csv", FilesFormat::Lines(LineFormat::Csv)),
    ("json", FilesFormat::Lines(LineFormat::Json)),
    (
        "debezium-json",
        FilesFormat::Lines(LineFormat::DebeziumJson),
    ),
    ("parquet", FilesFormat::Parquet),
];
impl Connector {
    /// Reads `WITH (...)` options; every key must be known to the connector.
    pub fn from_options(stream: &str, options: &[(String, String)]) -> Result<Self> {
        let connector = options
            .iter()
            .find(|(key, _)| key == "connector")
            .map(|(_, value)| value.to_ascii_lowercase())
            .ok_or_else(|| {
                BrookError::invalid(format!(
                    "stream '{stream}': missing option connector; use WITH (connector = 'queue') or WITH (connector = 'socket', port = '9000')"
                ))
            })?;
        let owner = format!("stream '{stream}'");
        match connector.as_str() {
            "queue" => read_queue(owner, options),
            "socket" => read_socket(stream, owner, options),
            "kafka" => Ok(Connector::Kafka(Box::new(
                super::kafka::KafkaOptions::read(stream, options)?,
            ))),
            "files" => read_files(stream, owner, options),
            "postgres-cdc" => Ok(Connector::PostgresCdc(Box::new(
                super::postgres_cdc::PostgresCdcOptions::read(stream, options)?,
            ))),
            other => Err(BrookError::invalid(format!(
                "stream '{stream}': unknown connector '{other}'; brook has 'queue', 'socket', 'files', 'kafka' and 'postgres-cdc'"
            ))),
        }
    }
}

/// A queue stream's options; `owner` names the stream in messages.
fn read_queue(owner: String, options: &[(String, String)]) -> Result<Connector> {
    let options = OptionReader::new(owner, options, QUEUE_OPTIONS)?;
    Ok(Connector::Queue(QueueOptions {
        one_at_a_time: options.bool("one_at_a_time")?.unwrap_or(false),
        limits: read_limits(&options)?,
    }))
}

/// A socket stream's address and options; `owner` names `stream` in
/// messages.
fn read_socket(stream: &str, owner: String, options: &[(String, String)]) -> Result<Connector> {
    let options = OptionReader::new(owner, options, SOCKET_OPTIONS)?;
    let host = options.text("host").unwrap_or("localhost");
    let port = options.text("port").ok_or_else(|| {
        BrookError::invalid(format!(
            "stream '{stream}': the socket connector needs option port"
        ))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        options.bad(
            "port",
            format_args!("must be a number from 1 to 65535, got '{port}'"),
        )
    })?;
    let defaults = SocketOptions::default();
    let delimiter = read_delimiter(&options)?.unwrap_or(defaults.delimiter);
    Ok(Connector::Socket {
        address: format!("{host}:{port}"),
        options: SocketOptions {
            format: options
                .choice("format", FORMATS)?
                .unwrap_or(defaults.format),
            reconnect: options.bool("reconnect")?.unwrap_or(defaults.reconnect),
            on_error: options
                .choice("on_error", ON_ERROR)?
                .unwrap_or(defaults.on_error),
            delimiter,
            limits: read_limits(&options)?,
            reconnect_attempts: options.positive("reconnect_attempts")?,
            max_line_bytes: options
                .positive("max_line_bytes")?
                .unwrap_or(defaults.max_line_bytes),
            timestamp_format: read_timestamp_format(&options)?.unwrap_or(defaults.timestamp_format),
        },
    })
}

/// A directory stream's options; `owner` names `stream` in messages.
fn read_files(stream: &str, owner: String, options: &[(String, String)]) -> Result<Connector> {
    let specs = [FILES_OPTIONS, crate::storage::S3_OPTIONS].concat();
    let options = OptionReader::new(owner, options, &specs)?;
    let path = options.text("path").ok_or_else(|| {
        BrookError::invalid(format!(
            "stream '{stream}': the files connector needs option path (a directory)"
        ))
    })?;
    let mut files = FilesOptions::new(path);
    files.s3 = crate::storage::S3Options::read(&options)?;
    files.format = options
        .choice("format", FILES_FORMATS)?
        .unwrap_or(files.format);
    if let Some(pattern) = options.text("pattern") {
        glob::Pattern::new(pattern).map_err(|err| {
            options.bad(
                "pattern",
                format_args!("is not a file-name wildcard: {err}"),
            )
        })?;
        files.pattern = pattern.to_string();
    }
    files.start_existing = options
        .choice("start", &[("existing", true), ("new", false)])?
        .unwrap_or(true);
    files.header = options.bool("header")?.unwrap_or(false);
    if let Some(settle) = options.text("settle") {
        files.settle = crate::sql::parse_timeout(settle)
            .map_err(|e| options.bad("settle", e))?
            .unwrap_or_default();
    }
    files.on_error = options
        .choice("on_error", ON_ERROR)?
        .unwrap_or(files.on_error);
    files.delimiter = read_delimiter(&options)?.unwrap_or(files.delimiter);
    files.max_line_bytes = options
        .positive("max_line_bytes")?
        .unwrap_or(files.max_line_bytes);
    files.timestamp_format = read_timestamp_format(&options)?.unwrap_or(files.timestamp_format);
    files.limits = read_limits(&options)?;
    files.max_files_per_batch = options.positive("max_files_per_batch")?;
    Ok(Connector::Files(files))
}

impl QueueOptions {
    /// The options as `SHOW STREAMS` shows them.
    pub(crate) fn describe(&self) -> String {
        options::describe(QUEUE_OPTIONS, |key| match key {
            "one_at_a_time" => Some(self.one_at_a_time.to_string()),
            other => limit_value(&self.limits, other),
        })
    }
}

impl SocketOptions {
    /// The options as `SHOW STREAMS` shows them, for a socket to `address`.
    pub(crate) fn describe(&self, address: &str) -> String {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        options::describe(SOCKET_OPTIONS, |key| match key {
            "host" => Some(host.to_string()),
            "port" => Some(port.to_string()),
            "format" => choice_name(FORMATS, self.format),
            "reconnect" => Some(self.reconnect.to_string()),
            "reconnect_attempts" => self.reconnect_attempts.map(|n| n.to_string()),
            "on_error" => choice_name(ON_ERROR, self.on_error),
            "delimiter" => Some(match self.delimiter {
                b'\t' => "\\t".to_string(),
                byte => char::from(byte).to_string(),
            }),
            "max_line_bytes" => Some(self.max_line_bytes.to_string()),
            "timestamp_format" => Some(self.timestamp_format.name().to_string()),
            other => limit_value(&self.limits, other),
        })
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
        let err = Connector::from_options("q", &options(&[("connector", "kinesis")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown connector 'kinesis'"), "{err}");
        let err = Connector::from_options("q", &options(&[("connector", "kafka")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs option bootstrap_servers"), "{err}");
    }

    #[test]
    fn timestamp_format_is_a_line_option_of_sockets_files_and_kafka_shown_in_effect() {
        let Connector::Socket {
            address,
            options: socket,
        } = Connector::from_options(
            "s",
            &options(&[
                ("connector", "socket"),
                ("port", "9000"),
                ("timestamp_format", "EPOCH_MS"),
            ]),
        )
        .unwrap()
        else {
            panic!("expected a socket")
        };
        assert_eq!(socket.timestamp_format, TimestampFormat::EpochMillis);
        assert!(
            socket
                .describe(&address)
                .contains("timestamp_format = 'epoch_ms'"),
            "{}",
            socket.describe(&address)
        );
        let Connector::Files(files) = Connector::from_options(
            "f",
            &options(&[
                ("connector", "files"),
                ("path", "/tmp"),
                ("timestamp_format", "epoch_s"),
            ]),
        )
        .unwrap() else {
            panic!("expected files")
        };
        assert_eq!(files.timestamp_format, TimestampFormat::EpochSeconds);
        assert!(files.describe().contains("timestamp_format = 'epoch_s'"));
        let Connector::Kafka(kafka) = Connector::from_options(
            "k",
            &options(&[
                ("connector", "kafka"),
                ("bootstrap_servers", "127.0.0.1:9092"),
                ("topic", "t"),
                ("timestamp_format", "epoch_ns"),
            ]),
        )
        .unwrap() else {
            panic!("expected kafka")
        };
        assert_eq!(kafka.timestamp_format, TimestampFormat::EpochNanos);
        // The default is today's text rules, and SHOW STREAMS says so.
        assert_eq!(
            SocketOptions::default().timestamp_format,
            TimestampFormat::Text
        );
        assert!(
            FilesOptions::new("/tmp")
                .describe()
                .contains("timestamp_format = 'text'")
        );
    }

    #[test]
    fn an_unknown_timestamp_format_names_the_known_ones() {
        let err = Connector::from_options(
            "s",
            &options(&[
                ("connector", "socket"),
                ("port", "9000"),
                ("timestamp_format", "unix"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "timestamp_format must be 'text' or 'epoch_s' or 'epoch_ms' or 'epoch_us' or 'epoch_ns', got 'unix'"
            ),
            "{err}"
        );
    }
}
