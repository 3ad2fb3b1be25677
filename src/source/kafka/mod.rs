//! The Kafka source: a consumer in the stream's group (librdkafka through
//! rdkafka). Each line of a message's value is a row, decoded like a
//! socket's lines (text, CSV or JSON); declared columns named `_key`,
//! `_partition`, `_offset` and `_timestamp` are filled from the message.
//!
//! Offsets belong to batches. Every chunk of messages queued in the
//! stream's inbox is recorded with its offset range per partition; the
//! offsets are committed to the group only once every query reading the
//! stream has finished the cuts that took the chunk (see
//! [`cuts`](crate::stream::cuts)): its engine ran the batch and its output was
//! written. Delivery is at-least-once end to end: a restart, or a new owner
//! of a partition, reads again whatever was not finished.
//!
//! A rebalance (eager: every partition is revoked, then the new assignment
//! is made) waits a bounded time for the batches in progress to finish,
//! commits them, and drops the rows of revoked partitions that no batch has
//! taken yet: their new owner reads them from the committed offset. So,
//! unless a batch outlasts the wait, no message is processed twice.
//!
//! A full inbox pauses the assigned partitions (librdkafka stops fetching)
//! until a cut makes room. The consumer is read on a thread of its own, so
//! that a rebalance may block while the batches in progress finish.

mod fetch;
mod offsets;
mod options;
mod reader;
mod rebalance;

use self::fetch::FetchQueue;
use self::offsets::{Offsets, offsets_text};
use self::reader::{Framing, Reader, ValueDecoder, metadata_array};
use self::rebalance::{Committer, KafkaConsumer, StartContext};

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use self::options::{KAFKA_OPTIONS, KafkaMode, KafkaOptions, StartOffset};
use super::LineFormat;
use super::decode::{AvroDecoder, Envelope, LineDecoder};
use super::{Inbox, Source};
use crate::error::{BrookError, Result, Warning, WarningHandler};

/// Messages decoded together at most.
pub(super) const MESSAGES_PER_CHUNK: usize = 8192;
/// Bytes of message values decoded together at most.
pub(super) const BYTES_PER_CHUNK: usize = 1 << 20;
/// How long the reader waits for a message on the fetch queue before it
/// serves the group's events again (rebalances wait at most this long).
pub(super) const FETCH_WAIT: Duration = Duration::from_millis(50);
/// How long `CREATE STREAM`'s first query waits for the broker's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a rebalance waits for the batches in progress to finish before
/// it commits what is finished and lets the partitions go.
pub(super) const REBALANCE_WAIT: Duration = Duration::from_secs(10);
/// How long dropping a stream waits for its last commit to be answered.
pub(super) const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// The group session brook asks for unless `kafka.session.timeout.ms` is
/// given (librdkafka's default is 45 s).
const DEFAULT_SESSION_TIMEOUT_MS: &str = "6000";
/// Heartbeats well within the session (unless
/// `kafka.heartbeat.interval.ms` is given).
const DEFAULT_HEARTBEAT_INTERVAL_MS: &str = "1000";

/// Column names filled from the message rather than its value.
pub(super) const METADATA_COLUMNS: [&str; 4] = ["_key", "_partition", "_offset", "_timestamp"];

pub(crate) struct KafkaSource {
    stream: String,
    options: KafkaOptions,
    schema: SchemaRef,
    warn: WarningHandler,
    /// The consumer and its offsets once a query has started the stream:
    /// read by `SHOW STREAMS`, and committed one last time on drop.
    running: Mutex<Option<Running>>,
    /// The committer task.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Per partition, the offset a checkpoint recorded: where the first
    /// assignment of that partition starts (before `start_offset` and the
    /// group's committed offset).
    resume: Mutex<BTreeMap<i32, i64>>,
    /// The static group member this stream is (`group.instance.id`), when
    /// a query keeping checkpoints started it: see [`static_member_id`].
    static_member: Mutex<Option<String>>,
}

/// What a started Kafka stream shares between its reader thread, its
/// committer task, the consumer's rebalance callback and `SHOW STREAMS`.
struct Running {
    consumer: Arc<KafkaConsumer>,
    offsets: Arc<Offsets>,
    /// Tells the reader thread to stop.
    stop_reader: Arc<Notify>,
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
        mut options: KafkaOptions,
        schema: SchemaRef,
        warn: WarningHandler,
    ) -> Result<Self> {
        let subject = options.value_subject();
        if let Some(avro) = &mut options.avro {
            avro.resolve(&stream, &subject)?;
        }
        // The value's columns must suit the format: checked here.
        value_decoder(&stream, &options, &schema)?;
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
            running: Default::default(),
            tasks: Default::default(),
            resume: Default::default(),
            static_member: Default::default(),
        })
    }
}

impl KafkaSource {
    /// The format as `SHOW STREAMS` shows it (a registry by its URL
    /// without credentials).
    fn format_shown(&self) -> String {
        match &self.options.avro {
            Some(avro) => match &avro.schemas {
                crate::avro::SchemaSource::Registry(registry) => {
                    format!("avro', schema_registry = '{}", registry.shown())
                }
                crate::avro::SchemaSource::Inline(_) => "avro', avro_schema = '...".to_string(),
            },
            None => format!("{:?}", self.options.format).to_ascii_lowercase(),
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        if let Some(running) = self.running.lock().take() {
            running.offsets.closing.store(true, Ordering::Release);
            running.stop_reader.notify_one();
            running.commit_finished_before_close();
        }
    }
}

impl Running {
    /// Commits what every query has finished, waiting at most
    /// [`FINAL_COMMIT_WAIT`] for the broker's answer (on a thread of its
    /// own: a broker that does not answer must not hold the caller up).
    fn commit_finished_before_close(&self) {
        let offsets = &self.offsets;
        if offsets.inbox.ledger().is_held_back() {
            (offsets.warn)(&Warning::Source(BrookError::external(
                format!("stream '{}'", offsets.stream),
                format!(
                    "offsets of topic '{}' were not committed past a batch that was not delivered; a restart reads those rows again",
                    offsets.topic
                ),
            )));
        }
        // All finished offsets, also those an asynchronous commit still
        // carries: this answer is the one waited for.
        let Some(list) = offsets.finished_commit() else {
            return;
        };
        let (answered, answer) = std::sync::mpsc::channel();
        let consumer = Arc::clone(&self.consumer);
        let spawned = std::thread::Builder::new()
            .name("brook-kafka-commit".into())
            .spawn(move || {
                let _ = answered.send(consumer.commit(&list, CommitMode::Sync));
            });
        let failure = match spawned.map(|_| answer.recv_timeout(FINAL_COMMIT_WAIT)) {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(err))) => err.to_string(),
            Ok(Err(_)) => format!("no answer within {} s", FINAL_COMMIT_WAIT.as_secs()),
            Err(err) => err.to_string(),
        };
        (offsets.warn)(&Warning::Source(BrookError::external(
            format!("stream '{}'", offsets.stream),
            format!(
                "the last commit of offsets {} of topic '{}' failed: {failure} (a restart may read those rows again)",
                offsets.describe_commit(),
                offsets.topic
            ),
        )));
    }
}

/// The decoder of stream `stream`'s message values.
fn value_decoder(stream: &str, options: &KafkaOptions, schema: &Schema) -> Result<ValueDecoder> {
    if let Some(avro) = &options.avro {
        if options.mode == KafkaMode::Upsert {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': mode = 'upsert' reads JSON values; format 'avro' is read in mode 'append'"
            )));
        }
        let columns = value_schema(schema);
        avro.check_columns(stream, &columns)?;
        return Ok(ValueDecoder::Avro(Box::new(AvroDecoder::new(
            avro.clone(),
            columns,
        ))));
    }
    let decoder = LineDecoder::try_new(
        stream,
        value_schema(schema),
        options.format,
        options.delimiter,
    )?
    .with_max_line_bytes(options.max_line_bytes)
    .with_timestamp_format(options.timestamp_format);
    Ok(ValueDecoder::Lines(match options.mode {
        KafkaMode::Append => decoder,
        KafkaMode::Upsert => {
            if options.format != LineFormat::Json {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': mode = 'upsert' reads each message's value as one JSON object: use format = 'json'"
                )));
            }
            if options.upsert_key.is_empty() {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': mode = 'upsert' needs the key its messages are keyed by (key = 'id', or PRIMARY KEY (id))"
                )));
            }
            decoder.with_envelope(Envelope::Upsert {
                key: options.upsert_key.clone(),
            })
        }
    }))
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

#[async_trait]
impl Source for KafkaSource {
    fn connector(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "bootstrap_servers = '{}', topic = '{}', group_id = '{}', format = '{}', timestamp_format = '{}'",
            self.options.bootstrap_servers,
            self.options.topic,
            self.options.group_of(&self.stream),
            self.format_shown(),
            self.options.timestamp_format.name(),
        );
        let running = self.running.lock();
        let Some(offsets) = running.as_ref().map(|r| &r.offsets) else {
            return text;
        };
        let last_cut = offsets.inbox.ledger().last_cut();
        let book = offsets.book.lock();
        if !book.assigned.is_empty() {
            let assigned: Vec<String> = book.assigned.keys().map(i32::to_string).collect();
            text += &format!(", assigned partitions {}", assigned.join(" "));
        }
        if !book.read.is_empty() {
            text += &format!(
                ", next offsets {}",
                offsets_text(book.read.iter().map(|(p, o)| (*p, *o)))
            );
        }
        let ranges = book.ranges(last_cut);
        if !ranges.is_empty() {
            let ranges: Vec<String> = ranges
                .iter()
                .map(|(partition, (first, last))| format!("{partition}:{first}-{last}"))
                .collect();
            text += &format!(", last batch offsets {}", ranges.join(" "));
        }
        if !book.committed.is_empty() {
            text += &format!(
                ", committed {}",
                offsets_text(book.committed.iter().map(|(p, o)| (*p, *o)))
            );
        }
        drop(book);
        if offsets.inbox.ledger().is_held_back() {
            text += ", commits held back after a batch was not delivered";
        }
        text
    }

    fn position_after(&self, items: u64) -> Option<serde_json::Value> {
        let running = self.running.lock();
        let offsets = &running.as_ref()?.offsets;
        let book = offsets.book.lock();
        // Where the run started (a checkpoint's offsets), moved on by what
        // it has read since.
        let mut next = self.resume.lock().clone();
        for (partition, offset) in &book.finished {
            let at = next.entry(*partition).or_insert(*offset);
            *at = (*at).max(*offset);
        }
        for chunk in book.chunks.iter().skip(book.folded) {
            if chunk.items > items {
                break;
            }
            for (partition, (_, last)) in &chunk.ranges {
                if book
                    .assigned
                    .get(partition)
                    .is_some_and(|since| chunk.rebalance >= *since)
                {
                    let at = next.entry(*partition).or_insert(last + 1);
                    *at = (*at).max(last + 1);
                }
            }
        }
        let next: serde_json::Map<String, serde_json::Value> = next
            .into_iter()
            .map(|(partition, offset)| (partition.to_string(), offset.into()))
            .collect();
        Some(serde_json::json!({"topic": self.options.topic, "offsets": next}))
    }

    fn checkpointed_as(&self, identity: &str) {
        *self.static_member.lock() = Some(static_member_id(&self.stream, identity));
    }

    fn resume_from(&self, position: &serde_json::Value) -> Result<()> {
        let bad = || {
            BrookError::invalid(format!(
                "stream '{}': the checkpoint's position is not a Kafka stream's: {position}",
                self.stream
            ))
        };
        if position["topic"].as_str() != Some(self.options.topic.as_str()) {
            return Err(BrookError::invalid(format!(
                "stream '{}': the checkpoint was taken reading topic {}, not '{}'; remove the query's checkpoint directory to start afresh",
                self.stream, position["topic"], self.options.topic
            )));
        }
        let offsets = position["offsets"].as_object().ok_or_else(bad)?;
        let mut resume = BTreeMap::new();
        for (partition, offset) in offsets {
            let partition: i32 = partition.parse().map_err(|_| bad())?;
            resume.insert(partition, offset.as_i64().ok_or_else(bad)?);
        }
        *self.resume.lock() = resume;
        Ok(())
    }

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        let offsets = Arc::new(Offsets {
            stream: self.stream.clone(),
            topic: self.options.topic.clone(),
            warn: Arc::clone(&self.warn),
            inbox: Arc::clone(&inbox),
            book: Default::default(),
            rebalances: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let consumer = self.consumer(Arc::clone(&offsets))?;
        // SAFETY: the consumer is live; `KafkaConsumer`'s drop closes the
        // fetch queue before the consumer.
        let fetch = unsafe { FetchQueue::new(consumer.client().native_ptr(), &self.options.topic) };
        if let Some(fetch) = fetch {
            let _ = consumer.context().fetch.set(fetch);
        }
        let consumer = Arc::new(KafkaConsumer(Some(consumer)));
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
            BrookError::external(
                format!("stream '{stream}'"),
                format!("cannot reach Kafka at {servers}: {err}"),
            )
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

        let decoder = value_decoder(&self.stream, &self.options, &self.schema)?;
        let stop_reader = Arc::new(Notify::new());
        let reader = Reader {
            stream: self.stream.clone(),
            topic: topic.clone(),
            schema: Arc::clone(&self.schema),
            consumer: Arc::clone(&consumer),
            decoder,
            framing: Framing::of(&self.options),
            keeps_keys: self.schema.fields().iter().any(|f| f.name() == "_key"),
            on_error: self.options.on_error,
            inbox: Arc::clone(&inbox),
            warn: Arc::clone(&self.warn),
            offsets: Arc::clone(&offsets),
            next_line: 1,
            resume: self.resume.lock().clone(),
        };
        reader.spawn(Arc::clone(&stop_reader))?;
        let committer = Committer {
            consumer: Arc::clone(&consumer),
            offsets: Arc::clone(&offsets),
        };
        self.tasks.lock().push(tokio::spawn(committer.run()));
        *self.running.lock() = Some(Running {
            consumer,
            offsets,
            stop_reader,
        });
        Ok(())
    }
}

impl KafkaSource {
    fn consumer(&self, offsets: Arc<Offsets>) -> Result<StreamConsumer<StartContext>> {
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
            // Small messages filled librdkafka's default queue of 100,000
            // messages per partition long before its 16 MiB, and each time
            // it waited `fetch.queue.backoff.ms` (1 s) before fetching
            // again: 0.24M messages/s with the CPU idle. Bytes bound the
            // queue instead, and a fetch goes out as soon as there is room
            // (1.4-1.7M text messages/s; benches/kafka_source.rs).
            .set("queued.min.messages", "10000000")
            .set("fetch.queue.backoff.ms", "0")
            .set("partition.assignment.strategy", "range,roundrobin")
            // librdkafka's 45 s session made a restart wait: a group's
            // first join is answered after about half the session on
            // tansu, and a killed member keeps its partitions for a whole
            // session. 6 s (Kafka's own default was 10 s before 3.0):
            // a member whose heartbeats stop for 6 s leaves the group.
            .set("session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", DEFAULT_HEARTBEAT_INTERVAL_MS);
        // A query keeping checkpoints is a static member: its restart takes
        // over the killed run's partitions without waiting for its session
        // to expire (and without a rebalance of the others).
        if let Some(member) = self.static_member.lock().as_ref() {
            config.set("group.instance.id", member);
        }
        for (key, value) in &self.options.properties {
            config.set(key, value);
        }
        config
            .create_with_context(StartContext {
                start: self.options.start_offset,
                resume: self.resume.lock().clone(),
                seen: Default::default(),
                offsets,
                fetch: Default::default(),
            })
            .map_err(|err| {
                BrookError::invalid(format!(
                    "stream '{}': cannot create a Kafka consumer: {err}",
                    self.stream
                ))
            })
    }
}

/// The `group.instance.id` of stream `stream` started by the query whose
/// checkpoints `identity` names: the same in every run that resumes from
/// them, different for another query or checkpoint directory. Kafka allows
/// letters, digits, `.`, `_` and `-` in it.
fn static_member_id(stream: &str, identity: &str) -> String {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x6272_6f6f_6b00).hash_one(identity);
    let stream: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("brook-{stream}-{hash:016x}")
}
