//! The Kafka sink: each row of a batch one message (a JSON object or a CSV
//! line, without the batch columns), keyed by a column if asked. A batch
//! counts as written once the broker has acknowledged every message;
//! librdkafka retries each message until `message.timeout.ms` (30 s here
//! unless set), and a batch with an unacknowledged message fails (and may
//! have been delivered in part: at-least-once).

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{BatchSink, SinkWrite};
use crate::avro::encode::AvroEncoder;
use crate::avro::{AVRO_OPTIONS, SchemaSource};
use crate::changelog::Op;
use crate::error::{BrookError, Result};
use crate::options::OptionReader;
use crate::options::OptionSpec;
use crate::query::BatchOutput;

/// Messages awaiting the broker's acknowledgement at once.
const IN_FLIGHT: usize = 10_000;
/// The prefix of librdkafka properties passed through.
const PROPERTY_PREFIX: &str = "kafka.";

/// How a Kafka sink encodes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    /// One JSON object per message.
    Json,
    /// One CSV line per message, no header.
    Csv,
    /// Debezium's envelope per message: `{"before":..,"after":..,"op":..}`
    /// (`c` for an insert or any appended row, `u`, `d`).
    DebeziumJson,
    /// One Avro record per message, framed with its schema's registry id
    /// (or a bare body of `avro_schema`).
    Avro,
}

/// A Kafka sink's options.
#[derive(Debug, Clone)]
pub struct KafkaSinkOptions {
    /// `host:port[,...]`.
    pub bootstrap_servers: String,
    /// The topic written.
    pub topic: String,
    /// JSON or CSV.
    pub format: KafkaFormat,
    /// The column whose value (as text) is each message's key.
    pub key: Option<String>,
    /// Upsert: a delete of a changes result is a tombstone (the key, no
    /// value), and `op` is not written.
    pub upsert: bool,
    /// With format 'avro': the registry the schema is registered with, or
    /// the schema given inline.
    pub avro: Option<SchemaSource>,
    /// librdkafka properties given as `'kafka.name' = 'value'`.
    pub properties: Vec<(String, String)>,
}

/// The options of a Kafka sink (and any `kafka.*` librdkafka property).
pub const KAFKA_SINK_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'kafka'",
    },
    OptionSpec {
        key: "bootstrap_servers",
        default: None,
        help: "host:port of one or more brokers (required)",
    },
    OptionSpec {
        key: "topic",
        default: None,
        help: "the topic written (required)",
    },
    OptionSpec {
        key: "format",
        default: Some("json"),
        help: "'json' (an object per message), 'csv' (a line per message, no header), 'debezium-json' (Debezium's envelope) or 'avro' (a record per message; schema_registry or avro_schema)",
    },
    OptionSpec {
        key: "mode",
        default: Some("append"),
        help: "'append', or 'upsert': a delete is a tombstone (the key, no value); needs key",
    },
    OptionSpec {
        key: "key",
        default: None,
        help: "a column whose value is each message's key (default: no key)",
    },
    AVRO_OPTIONS[0],
    AVRO_OPTIONS[1],
    AVRO_OPTIONS[2],
    AVRO_OPTIONS[3],
];

impl KafkaSinkOptions {
    /// Reads the options of sink `sink`; `kafka.*` keys go to librdkafka.
    pub fn from_options(sink: &str, options: &[(String, String)]) -> Result<Self> {
        let (properties, own): (Vec<_>, Vec<_>) = options
            .iter()
            .cloned()
            .partition(|(key, _)| key.starts_with(PROPERTY_PREFIX));
        let options = OptionReader::new(format!("sink '{sink}'"), &own, KAFKA_SINK_OPTIONS)?;
        let required = |key: &str| {
            options.text(key).map(str::to_string).ok_or_else(|| {
                BrookError::invalid(format!(
                    "sink '{sink}': the kafka connector needs option {key}"
                ))
            })
        };
        let format = options
            .choice(
                "format",
                &[
                    ("json", KafkaFormat::Json),
                    ("csv", KafkaFormat::Csv),
                    ("debezium-json", KafkaFormat::DebeziumJson),
                    ("avro", KafkaFormat::Avro),
                ],
            )?
            .unwrap_or(KafkaFormat::Json);
        let avro = match format {
            KafkaFormat::Avro => Some(SchemaSource::read(&format!("sink '{sink}'"), &options)?),
            _ => {
                crate::avro::refuse_avro_options(&format!("sink '{sink}'"), &options)?;
                None
            }
        };
        Ok(Self {
            bootstrap_servers: required("bootstrap_servers")?,
            topic: required("topic")?,
            format,
            avro,
            key: options.text("key").map(str::to_string),
            upsert: options
                .choice("mode", &[("append", false), ("upsert", true)])?
                .unwrap_or(false),
            properties: properties
                .into_iter()
                .map(|(key, value)| (key[PROPERTY_PREFIX.len()..].to_string(), value))
                .collect(),
        })
    }
}

/// Writes a query's rows to a Kafka topic.
pub struct KafkaSink {
    name: String,
    options: KafkaSinkOptions,
    producer: FutureProducer,
    key_index: Option<usize>,
    /// The query's result is changes, each row's kind in column 0.
    changes: bool,
    /// With format 'avro', the rows' encoder (its schema registered).
    avro: Option<AvroEncoder>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("topic", &self.options.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer and checks the key column against the query's
    /// columns (`schema`).
    pub fn create(
        name: &str,
        options: KafkaSinkOptions,
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<Self> {
        let key_index = match &options.key {
            Some(key) => Some(schema.index_of(key).map_err(|_| {
                BrookError::invalid(format!(
                    "sink '{name}': key column '{key}' is not a column of the query"
                ))
            })?),
            None if options.upsert => {
                return Err(BrookError::invalid(format!(
                    "sink '{name}': mode = 'upsert' needs the key column (key = 'id'): a delete is a tombstone of its key"
                )));
            }
            None => None,
        };
        let changes = crate::changelog::is_changes(schema);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.bootstrap_servers)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        for (key, value) in &options.properties {
            config.set(key, value);
        }
        let producer = config.create().map_err(|err| {
            BrookError::invalid(format!(
                "sink '{name}': cannot create a Kafka producer: {err}"
            ))
        })?;
        let avro = match &options.avro {
            Some(schemas) => {
                let rows = match changes {
                    true => schema.project(&(1..schema.fields().len()).collect::<Vec<_>>())?,
                    false => schema.clone(),
                };
                let subject = format!("{}-value", options.topic);
                Some(AvroEncoder::create(
                    &format!("sink '{name}'"),
                    schemas,
                    &subject,
                    &rows,
                )?)
            }
            None => None,
        };
        Ok(Self {
            name: name.to_string(),
            options,
            producer,
            key_index,
            changes,
            avro,
        })
    }

    /// Each row of `batch` as a message value; `None` for a tombstone.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>> {
        let (rows, ops) = if self.changes {
            let ops = cast(batch.column(0), &DataType::Utf8)?;
            let columns: Vec<usize> = (1..batch.num_columns()).collect();
            (batch.project(&columns)?, Some(ops))
        } else {
            (batch.clone(), None)
        };
        let op_of = |row: usize| {
            ops.as_ref()
                .and_then(|ops| Op::parse(ops.as_string::<i32>().value(row)))
                .unwrap_or(Op::Insert)
        };
        let lines = self.lines(&rows)?;
        Ok(lines
            .into_iter()
            .enumerate()
            .map(|(row, line)| {
                let op = op_of(row);
                if self.options.format == KafkaFormat::DebeziumJson {
                    return Some(super::debezium::envelope(op, &line));
                }
                if self.options.upsert && op == Op::Delete {
                    return None;
                }
                Some(line)
            })
            .collect())
    }

    /// Each row of `batch` as a JSON object, CSV line or Avro record.
    fn lines(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        if let Some(avro) = &mut self.avro {
            return avro.values(batch);
        }
        let mut out = Vec::new();
        match self.options.format {
            KafkaFormat::Json | KafkaFormat::DebeziumJson => {
                let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
                writer.write(batch)?;
                writer.finish()?;
            }
            KafkaFormat::Avro => {
                return Err(BrookError::Internal(format!(
                    "sink '{}': format 'avro' without its encoder",
                    self.name
                )));
            }
            KafkaFormat::Csv => {
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut out);
                writer.write(batch)?;
            }
        }
        // Both writers end every row with a newline and escape newlines
        // inside values, so the lines are the rows.
        let rows: Vec<Vec<u8>> = out
            .split(|b| *b == b'\n')
            .take(batch.num_rows())
            .map(<[u8]>::to_vec)
            .collect();
        if rows.len() != batch.num_rows() {
            return Err(BrookError::Internal(format!(
                "sink '{}': {} rows encoded as {} lines",
                self.name,
                batch.num_rows(),
                rows.len()
            )));
        }
        Ok(rows)
    }
}

#[async_trait]
impl BatchSink for KafkaSink {
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        if output.rows_out() == 0 {
            return Ok(SinkWrite::Empty);
        }
        let mut sent = 0usize;
        let mut failures = 0usize;
        let mut first_failure = None;
        let mut pending = FuturesUnordered::new();
        for batch in &output.batches {
            let values = self.encode(batch)?;
            let keys = match self.key_index {
                Some(index) => Some(cast(batch.column(index), &DataType::Utf8)?),
                None => None,
            };
            for (row, value) in values.into_iter().enumerate() {
                let key = keys.as_ref().and_then(|keys| {
                    let keys = keys.as_string::<i32>();
                    (!keys.is_null(row)).then(|| keys.value(row).to_string())
                });
                let producer = self.producer.clone();
                let topic = self.options.topic.clone();
                pending.push(async move {
                    let mut record: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(&topic);
                    if let Some(value) = &value {
                        record = record.payload(value);
                    }
                    if let Some(key) = &key {
                        record = record.key(key);
                    }
                    producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map(|_| ())
                        .map_err(|(err, _)| err)
                });
                sent += 1;
                while pending.len() >= IN_FLIGHT {
                    if let Some(Err(err)) = pending.next().await {
                        failures += 1;
                        first_failure.get_or_insert(err);
                    }
                }
            }
        }
        while let Some(result) = pending.next().await {
            if let Err(err) = result {
                failures += 1;
                first_failure.get_or_insert(err);
            }
        }
        match first_failure {
            None => Ok(SinkWrite::Written),
            Some(err) => Err(BrookError::External {
                context: format!(
                    "batch {}: {failures} of {sent} messages to topic '{}' on {} were not acknowledged",
                    output.batch_number, self.options.topic, self.options.bootstrap_servers
                ),
                message: err.to_string(),
            }),
        }
    }
}
