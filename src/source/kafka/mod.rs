//! The Kafka source: a consumer in the stream's group (librdkafka through
//! rdkafka). Each line of a message's value is a row, decoded like a
//! socket's lines (text, CSV or JSON); declared columns named `_key`,
//! `_partition`, `_offset` and `_timestamp` are filled from the message.
//!
//! Offsets are tied to the stream's inbox: the offsets of the rows a cut
//! took are committed to the group once the cut has taken them, so a
//! restart with the same group resumes after the last row a batch took. A
//! full inbox pauses the assigned partitions (librdkafka stops fetching)
//! until a cut makes room.

mod options;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::task::JoinHandle;

pub use self::options::{KAFKA_OPTIONS, KafkaOptions, StartOffset};
use super::decode::{DecodedLines, LineDecoder};
use super::{Inbox, Source};
use crate::error::{BrookError, Result, WarningHandler};
use crate::sync::lock;

/// Messages decoded together at most.
const MESSAGES_PER_CHUNK: usize = 8192;
/// Bytes of message values decoded together at most.
const BYTES_PER_CHUNK: usize = 1 << 20;
/// How long `CREATE STREAM`'s first query waits for the broker's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Column names filled from the message rather than its value.
const METADATA_COLUMNS: [&str; 4] = ["_key", "_partition", "_offset", "_timestamp"];

pub(crate) struct KafkaSource {
    stream: String,
    options: KafkaOptions,
    schema: SchemaRef,
    warn: WarningHandler,
    /// Per partition, the next offset to read (after what was delivered).
    positions: Arc<Mutex<BTreeMap<i32, i64>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("stream", &self.stream)
            .field("topic", &self.options.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    pub fn try_new(
        stream: String,
        options: KafkaOptions,
        schema: SchemaRef,
        warn: WarningHandler,
    ) -> Result<Self> {
        // The value's columns must suit the format: checked here.
        LineDecoder::try_new(
            &stream,
            value_schema(&schema),
            options.format,
            options.delimiter,
        )?;
        for field in schema.fields() {
            if METADATA_COLUMNS.contains(&field.name().as_str()) {
                let value = metadata_array(field.name(), &[]);
                cast_with_options(&value, field.data_type(), &CastOptions::default()).map_err(
                    |_| {
                        BrookError::invalid(format!(
                            "stream '{stream}': column {} cannot be {} (it holds the message's {})",
                            field.name(),
                            field.data_type(),
                            &field.name()[1..]
                        ))
                    },
                )?;
            }
        }
        Ok(Self {
            stream,
            options,
            schema,
            warn,
            positions: Default::default(),
            tasks: Default::default(),
        })
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The declared columns that come from the message's value.
fn value_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !METADATA_COLUMNS.contains(&f.name().as_str()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Sets where each partition starts the first time this process is
/// assigned it (`earliest` / `latest`); later assignments resume from the
/// group's committed offsets.
struct StartContext {
    start: StartOffset,
    seen: Mutex<HashSet<i32>>,
    stream: String,
    warn: WarningHandler,
}

impl ClientContext for StartContext {}

impl ConsumerContext for StartContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(err) = result {
            (self.warn)(&BrookError::invalid(format!(
                "stream '{}': committing offsets failed: {err} (the next batch's commit carries them again)",
                self.stream
            )));
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let offset = match self.start {
                    StartOffset::Earliest => Some(Offset::Beginning),
                    StartOffset::Latest => Some(Offset::End),
                    StartOffset::Committed => None,
                };
                let mut seen = lock(&self.seen);
                for mut element in partitions.elements() {
                    let first_time = seen.insert(element.partition());
                    if let (true, Some(offset)) = (first_time, offset) {
                        let _ = element.set_offset(offset);
                    }
                }
                drop(seen);
                let _ = consumer.assign(partitions);
            }
            _ => {
                let _ = consumer.unassign();
            }
        }
    }
}

/// The consumer; closed on a thread of its own when the stream is dropped,
/// because librdkafka's close waits for the group to answer the leave
/// (seconds, or longer on a broker that does not answer), and that wait
/// must not hold up the runtime.
struct KafkaConsumer(Option<StreamConsumer<StartContext>>);

impl std::ops::Deref for KafkaConsumer {
    type Target = StreamConsumer<StartContext>;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(consumer) => consumer,
            // Taken only in drop.
            None => unreachable!("the consumer is taken only when dropped"),
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("brook-kafka-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn connector(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        let positions = lock(&self.positions);
        let read: Vec<String> = positions
            .iter()
            .map(|(partition, next)| format!("{partition}:{next}"))
            .collect();
        format!(
            "bootstrap_servers = '{}', topic = '{}', group_id = '{}', format = '{}', timestamp_format = '{}'{}",
            self.options.bootstrap_servers,
            self.options.topic,
            self.options.group_of(&self.stream),
            format!("{:?}", self.options.format).to_ascii_lowercase(),
            self.options.timestamp_format.name(),
            if read.is_empty() {
                String::new()
            } else {
                format!(", next offsets {}", read.join(" "))
            }
        )
    }

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        let consumer = Arc::new(KafkaConsumer(Some(self.consumer()?)));
        let stream = self.stream.clone();
        let topic = self.options.topic.clone();
        let servers = self.options.bootstrap_servers.clone();
        // The topic must exist: a clear error rather than a silent wait.
        let probe = Arc::clone(&consumer);
        let metadata = tokio::task::spawn_blocking(move || {
            probe.fetch_metadata(Some(&topic), METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| BrookError::Internal(format!("metadata task: {e}")))?;
        let topic = &self.options.topic;
        let unreachable = |err: &dyn std::fmt::Display| {
            BrookError::invalid(format!(
                "stream '{stream}': cannot reach Kafka at {servers}: {err}"
            ))
        };
        let metadata = metadata.map_err(|err| unreachable(&err))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(unreachable(&"no metadata for the topic"));
        };
        if found.error().is_some() || found.partitions().is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': topic '{topic}' does not exist on {servers}"
            )));
        }
        consumer
            .subscribe(&[topic])
            .map_err(|err| unreachable(&err))?;

        let decoder = LineDecoder::try_new(
            &self.stream,
            value_schema(&self.schema),
            self.options.format,
            self.options.delimiter,
        )?
        .with_max_line_bytes(self.options.max_line_bytes)
        .with_timestamp_format(self.options.timestamp_format);
        let delivered: Arc<Mutex<Delivered>> = Default::default();
        let reader = Reader {
            stream: self.stream.clone(),
            topic: topic.clone(),
            schema: Arc::clone(&self.schema),
            consumer: Arc::clone(&consumer),
            decoder,
            on_error: self.options.on_error,
            inbox: Arc::clone(&inbox),
            warn: Arc::clone(&self.warn),
            positions: Arc::clone(&self.positions),
            delivered: Arc::clone(&delivered),
            next_line: 1,
        };
        let committer = Committer {
            topic: topic.clone(),
            consumer,
            inbox,
            delivered,
        };
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(reader.run()));
        tasks.push(tokio::spawn(committer.run()));
        Ok(())
    }
}

impl KafkaSource {
    fn consumer(&self) -> Result<StreamConsumer<StartContext>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.options.bootstrap_servers)
            .set("group.id", self.options.group_of(&self.stream))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match self.options.start_offset {
                    StartOffset::Latest => "latest",
                    _ => "earliest",
                },
            )
            // What librdkafka fetches ahead stays small: the stream's
            // bounds are where rows wait.
            .set("queued.max.messages.kbytes", "16384")
            .set("partition.assignment.strategy", "range,roundrobin");
        for (key, value) in &self.options.properties {
            config.set(key, value);
        }
        config
            .create_with_context(StartContext {
                start: self.options.start_offset,
                seen: Default::default(),
                stream: self.stream.clone(),
                warn: Arc::clone(&self.warn),
            })
            .map_err(|err| {
                BrookError::invalid(format!(
                    "stream '{}': cannot create a Kafka consumer: {err}",
                    self.stream
                ))
            })
    }
}

/// Per item pushed into the inbox (its sequence number), the next offset
/// of every partition once that item's rows are taken.
type Delivered = VecDeque<(u64, BTreeMap<i32, i64>)>;

/// One message's place, for its rows' metadata columns and bad-row reports.
#[derive(Debug, Default, Clone)]
struct Place {
    key: Option<String>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

struct Reader {
    stream: String,
    topic: String,
    schema: SchemaRef,
    consumer: Arc<KafkaConsumer>,
    decoder: LineDecoder,
    on_error: super::OnError,
    inbox: Arc<Inbox>,
    warn: WarningHandler,
    positions: Arc<Mutex<BTreeMap<i32, i64>>>,
    /// Per item pushed (its sequence number), the next offsets after it.
    delivered: Arc<Mutex<Delivered>>,
    next_line: u64,
}

impl Reader {
    async fn run(mut self) {
        let mut lost = false;
        loop {
            // The first message waits; the rest are what is ready now.
            let mut chunk = Vec::new();
            let mut places = Vec::new();
            match self.consumer.recv().await {
                Ok(message) => {
                    if lost {
                        (self.warn)(&BrookError::invalid(format!(
                            "stream '{}': reading topic '{}' again",
                            self.stream, self.topic
                        )));
                        lost = false;
                    }
                    add_message(&message, &mut chunk, &mut places);
                }
                Err(err) => {
                    if !lost {
                        (self.warn)(&kafka_warning(&self.stream, &self.topic, &err));
                        lost = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            while places.len() < MESSAGES_PER_CHUNK && chunk.len() < BYTES_PER_CHUNK {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => add_message(&message, &mut chunk, &mut places),
                    _ => break,
                }
            }
            if !self.deliver(chunk, places).await {
                return;
            }
        }
    }

    /// Decodes a chunk of lines, reports bad ones with partition and
    /// offset, adds the metadata columns, and queues the rows (pausing the
    /// partitions while the inbox is full).
    async fn deliver(&mut self, chunk: Vec<u8>, places: Vec<Place>) -> bool {
        let first_line = self.next_line;
        self.next_line += places.len() as u64;
        let decoded: DecodedLines = self.decoder.decode(&Buffer::from(chunk), first_line);
        let mut next_offsets = BTreeMap::new();
        for place in &places {
            next_offsets.insert(place.partition, place.offset + 1);
        }
        let bad: HashSet<u64> = decoded.bad_lines.iter().map(|b| b.line).collect();
        if !decoded.bad_lines.is_empty() {
            self.inbox.rows_dropped.fetch_add(
                decoded.bad_lines.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for line in &decoded.bad_lines {
            let place = &places[(line.line - first_line) as usize];
            let error = BrookError::BadRow {
                stream: self.stream.clone(),
                line: line.line,
                message: format!(
                    "topic '{}' partition {} offset {}: {}",
                    self.topic, place.partition, place.offset, line.message
                ),
            };
            if self.on_error == super::OnError::Fail {
                self.inbox.fail(error);
                return false;
            }
            (self.warn)(&error);
        }
        if let Some(values) = decoded.batch {
            let kept: Vec<Place> = places
                .iter()
                .enumerate()
                .filter(|(index, _)| !bad.contains(&(first_line + *index as u64)))
                .map(|(_, place)| place.clone())
                .collect();
            let batch = match with_metadata(&self.schema, values, &kept) {
                Ok(batch) => batch,
                Err(err) => {
                    self.inbox.fail(err);
                    return false;
                }
            };
            if self.inbox.push_now(batch.clone()).is_err() {
                // Full: stop fetching until a cut makes room.
                let assigned = self.consumer.assignment().ok();
                if let Some(assigned) = &assigned {
                    let _ = self.consumer.pause(assigned);
                }
                let pushed = self.inbox.push(batch).await;
                if let Some(assigned) = &assigned {
                    let _ = self.consumer.resume(assigned);
                }
                if pushed.is_err() {
                    return false;
                }
            }
        }
        let mut positions = lock(&self.positions);
        positions.extend(next_offsets.iter().map(|(p, o)| (*p, *o)));
        let all = positions.clone();
        drop(positions);
        lock(&self.delivered).push_back((self.inbox.items_pushed(), all));
        true
    }
}

fn add_message(
    message: &rdkafka::message::BorrowedMessage<'_>,
    chunk: &mut Vec<u8>,
    places: &mut Vec<Place>,
) {
    let place = Place {
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
    };
    let value = message.payload().unwrap_or_default();
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    // Each line of the value is a row with the message's place.
    for line in value.split(|b| *b == b'\n') {
        chunk.extend_from_slice(line);
        chunk.push(b'\n');
        places.push(place.clone());
    }
}

fn metadata_array(name: &str, places: &[Place]) -> ArrayRef {
    match name {
        "_key" => Arc::new(StringArray::from(
            places.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        )),
        "_partition" => Arc::new(Int32Array::from(
            places.iter().map(|p| p.partition).collect::<Vec<_>>(),
        )),
        "_offset" => Arc::new(Int64Array::from(
            places.iter().map(|p| p.offset).collect::<Vec<_>>(),
        )),
        _ => Arc::new(TimestampMillisecondArray::from(
            places.iter().map(|p| p.timestamp).collect::<Vec<_>>(),
        )),
    }
}

/// The declared columns in order: value columns from `values`, metadata
/// columns from `places`.
fn with_metadata(schema: &SchemaRef, values: RecordBatch, places: &[Place]) -> Result<RecordBatch> {
    if values.num_columns() == schema.fields().len() {
        return Ok(values);
    }
    let mut value_columns = values.columns().iter();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            if METADATA_COLUMNS.contains(&field.name().as_str()) {
                let array = metadata_array(field.name(), places);
                Ok(cast_with_options(
                    &array,
                    field.data_type(),
                    &CastOptions::default(),
                )?)
            } else {
                value_columns
                    .next()
                    .cloned()
                    .ok_or_else(|| BrookError::Internal("a value column is missing".into()))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn kafka_warning(stream: &str, topic: &str, err: &KafkaError) -> BrookError {
    BrookError::invalid(format!(
        "stream '{stream}': reading topic '{topic}' failed: {err} (librdkafka retries; rows resume when the broker answers)"
    ))
}

/// Commits to the group the offsets of the rows cuts have taken.
struct Committer {
    topic: String,
    consumer: Arc<KafkaConsumer>,
    inbox: Arc<Inbox>,
    delivered: Arc<Mutex<Delivered>>,
}

impl Committer {
    async fn run(self) {
        let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
        loop {
            self.inbox.next_take().await;
            let taken = self.inbox.items_taken();
            let mut latest = None;
            {
                let mut delivered = lock(&self.delivered);
                while delivered.front().is_some_and(|(seq, _)| *seq <= taken) {
                    latest = delivered.pop_front().map(|(_, offsets)| offsets);
                }
            }
            let Some(offsets) = latest else {
                continue;
            };
            if offsets == committed {
                continue;
            }
            let mut list = TopicPartitionList::new();
            for (partition, offset) in &offsets {
                let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset));
            }
            // Asynchronous: a failure is reported by the consumer's commit
            // callback, and the next cut's commit carries these offsets too.
            if self.consumer.commit(&list, CommitMode::Async).is_ok() {
                committed = offsets;
            }
        }
    }
}
