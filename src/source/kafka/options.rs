//! A Kafka stream's options: where, what, how to decode, where to start, and
//! librdkafka properties passed through with the `kafka.` prefix.

use super::super::line_options::{
    LIMIT_OPTIONS, LINE_OPTIONS, LineFormat, OnError, TimestampFormat, read_delimiter, read_limits,
    read_timestamp_format,
};
use std::sync::Arc;

use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};

use crate::avro::{AVRO_OPTIONS, AvroValues};
use crate::error::{BrookError, Result};
use crate::options::{OptionReader, OptionSpec};
use crate::stream::StreamLimits;

/// Where a consumer starts in partitions it has not read before in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first message still in the partition.
    Earliest,
    /// Only messages produced after the stream starts.
    Latest,
    /// The group's committed offset; the earliest message where none is.
    Committed,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaMode {
    /// Each line of a message's value is a row (default).
    #[default]
    Append,
    /// A message's value (one JSON object) is its key's new row; a message
    /// without a value (a tombstone) deletes the key. The stream is a
    /// changelog keyed by its `key` (see [`crate::changelog`]).
    Upsert,
}

/// A Kafka stream's options, from `CREATE STREAM ... WITH (connector = 'kafka', ...)`.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// The topic read.
    pub topic: String,
    /// Text, CSV or JSON (one row per line of each message), or Debezium
    /// JSON (one change per message).
    pub format: LineFormat,
    /// Rows appended, or upserts and deletes by key.
    pub mode: KafkaMode,
    /// The key columns of an upsert stream (set with the stream's key).
    pub upsert_key: Vec<String>,
    /// The consumer group; default `brook-STREAM`.
    pub group_id: Option<String>,
    /// Where to start.
    pub start_offset: StartOffset,
    /// A malformed message: skipped (counted, reported) or fail the stream.
    pub on_error: OnError,
    /// CSV field delimiter.
    pub delimiter: u8,
    /// Longest line accepted.
    pub max_line_bytes: usize,
    /// How TIMESTAMP columns are written in CSV and JSON lines; default
    /// [`TimestampFormat::Text`].
    pub timestamp_format: TimestampFormat,
    /// With format 'avro': where the schemas are, and the reader schema
    /// (`format` is then unused).
    pub avro: Option<AvroValues>,
    /// The stream's bounds.
    pub limits: StreamLimits,
    /// librdkafka properties given as `'kafka.name' = 'value'`.
    pub properties: Vec<(String, String)>,
}

/// The prefix of librdkafka properties passed through.
pub const PROPERTY_PREFIX: &str = "kafka.";

/// The options of a Kafka stream (and any `kafka.*` librdkafka property).
pub const KAFKA_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'kafka'",
    },
    OptionSpec {
        key: "bootstrap_servers",
        default: None,
        help: "host:port of one or more brokers, comma-separated (required)",
    },
    OptionSpec {
        key: "topic",
        default: None,
        help: "the topic read (required)",
    },
    OptionSpec {
        key: "format",
        default: Some("text"),
        help: "'text', 'csv' or 'json': each line of a message's value is a row; 'debezium-json': each message is a change; 'avro': each message is a record (schema_registry or avro_schema)",
    },
    OptionSpec {
        key: "mode",
        default: Some("append"),
        help: "'append', or 'upsert': a message is its key's new row, a tombstone deletes the key (format 'json'; needs key = 'column')",
    },
    OptionSpec {
        key: "group_id",
        default: Some("brook-STREAM"),
        help: "the consumer group: processes with the same group split the partitions",
    },
    OptionSpec {
        key: "start_offset",
        default: Some("committed"),
        help: "'earliest', 'latest', or 'committed' (the group's offsets; earliest where none)",
    },
    OptionSpec {
        key: "on_error",
        default: Some("skip"),
        help: "'skip' a malformed message (counted, reported with partition and offset) or 'fail' the stream",
    },
    LINE_OPTIONS[0],
    LINE_OPTIONS[1],
    LINE_OPTIONS[2],
    LIMIT_OPTIONS[0],
    LIMIT_OPTIONS[1],
    LIMIT_OPTIONS[2],
    AVRO_OPTIONS[0],
    AVRO_OPTIONS[1],
    AVRO_OPTIONS[2],
    AVRO_OPTIONS[3],
];

const FORMATS: &[(&str, LineFormat)] = &[
    ("text", LineFormat::Text),
    ("csv", LineFormat::Csv),
    ("json", LineFormat::Json),
    ("debezium-json", LineFormat::DebeziumJson),
];

impl KafkaOptions {
    /// Reads the options of stream `stream`; `kafka.*` keys go to librdkafka.
    pub(crate) fn read(stream: &str, options: &[(String, String)]) -> Result<Self> {
        let (properties, own): (Vec<_>, Vec<_>) = options
            .iter()
            .cloned()
            .partition(|(key, _)| key.starts_with(PROPERTY_PREFIX));
        let options = OptionReader::new(format!("stream '{stream}'"), &own, KAFKA_OPTIONS)?;
        let required = |key: &str, example: &str| {
            options.text(key).map(str::to_string).ok_or_else(|| {
                BrookError::invalid(format!(
                    "stream '{stream}': the kafka connector needs option {key} (e.g. {key} = '{example}')"
                ))
            })
        };
        let bootstrap_servers = required("bootstrap_servers", "127.0.0.1:9092")?;
        let topic = required("topic", "events")?;
        let properties: Vec<(String, String)> = properties
            .into_iter()
            .map(|(key, value)| (key[PROPERTY_PREFIX.len()..].to_string(), value))
            .collect();
        for (key, value) in &properties {
            // brook commits the offsets of finished batches itself, and
            // its rebalance handling is for the eager protocol.
            let refused = match key.as_str() {
                "enable.auto.commit" | "enable.auto.offset.store" => value != "false",
                "partition.assignment.strategy" => value.contains("cooperative"),
                _ => false,
            };
            if refused {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': 'kafka.{key}' = '{value}' is not supported: brook commits the offsets of finished batches itself and handles eager rebalances (range, roundrobin)"
                )));
            }
        }
        let avro = read_avro(stream, &options)?;
        Ok(Self {
            bootstrap_servers,
            topic,
            format: match avro {
                Some(_) => LineFormat::Text,
                None => options
                    .choice("format", FORMATS)?
                    .unwrap_or(LineFormat::Text),
            },
            avro,
            mode: options
                .choice(
                    "mode",
                    &[("append", KafkaMode::Append), ("upsert", KafkaMode::Upsert)],
                )?
                .unwrap_or_default(),
            upsert_key: Vec::new(),
            group_id: options.text("group_id").map(str::to_string),
            start_offset: options
                .choice(
                    "start_offset",
                    &[
                        ("earliest", StartOffset::Earliest),
                        ("latest", StartOffset::Latest),
                        ("committed", StartOffset::Committed),
                    ],
                )?
                .unwrap_or(StartOffset::Committed),
            on_error: options
                .choice(
                    "on_error",
                    &[("skip", OnError::Skip), ("fail", OnError::Fail)],
                )?
                .unwrap_or(OnError::Skip),
            delimiter: read_delimiter(&options)?.unwrap_or(b','),
            max_line_bytes: options.positive("max_line_bytes")?.unwrap_or(1 << 20),
            timestamp_format: read_timestamp_format(&options)?.unwrap_or_default(),
            limits: read_limits(&options)?,
            properties,
        })
    }

    /// The registry subject of the topic's values (TopicNameStrategy).
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.topic)
    }

    /// The stream's columns: `declared`, or with format 'avro' and no value
    /// column declared, the fields of the subject's latest schema (asked
    /// of the registry here) followed by the declared metadata columns.
    pub fn columns(&mut self, stream: &str, declared: SchemaRef) -> Result<Option<SchemaRef>> {
        let subject = self.value_subject();
        let Some(avro) = &mut self.avro else {
            return Ok(None);
        };
        avro.resolve(stream, &subject)?;
        let metadata: Vec<FieldRef> = declared
            .fields()
            .iter()
            .filter(|f| super::METADATA_COLUMNS.contains(&f.name().as_str()))
            .cloned()
            .collect();
        if metadata.len() < declared.fields().len() {
            return Ok(Some(declared));
        }
        let mut columns = avro.columns(stream, &subject)?;
        columns.extend(metadata);
        Ok(Some(Arc::new(Schema::new(columns))))
    }

    /// The consumer group of stream `stream`.
    pub fn group_of(&self, stream: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("brook-{stream}"))
    }
}

/// With `format = 'avro'`, where its schemas are; the Avro options refused
/// with another format.
fn read_avro(stream: &str, options: &OptionReader<'_>) -> Result<Option<AvroValues>> {
    match options.text("format") {
        Some(format) if format.eq_ignore_ascii_case("avro") => {
            Ok(Some(AvroValues::read(stream, options)?))
        }
        _ => {
            crate::avro::refuse_avro_options(&format!("stream '{stream}'"), options)?;
            Ok(None)
        }
    }
}
