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

mod options;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use tokio::sync::Notify;
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
/// How long a rebalance waits for the batches in progress to finish before
/// it commits what is finished and lets the partitions go.
const REBALANCE_WAIT: Duration = Duration::from_secs(10);
/// How long dropping a stream waits for its last commit to be answered.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// The group session brook asks for unless `kafka.session.timeout.ms` is
/// given (librdkafka's default is 45 s).
const DEFAULT_SESSION_TIMEOUT_MS: &str = "6000";
/// Heartbeats well within the session (unless
/// `kafka.heartbeat.interval.ms` is given).
const DEFAULT_HEARTBEAT_INTERVAL_MS: &str = "1000";

/// Column names filled from the message rather than its value.
const METADATA_COLUMNS: [&str; 4] = ["_key", "_partition", "_offset", "_timestamp"];

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
            running: Default::default(),
            tasks: Default::default(),
            resume: Default::default(),
            static_member: Default::default(),
        })
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Some(running) = lock(&self.running).take() {
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
            (offsets.warn)(&BrookError::external(
                format!("stream '{}'", offsets.stream),
                format!(
                    "offsets of topic '{}' were not committed past a batch that was not delivered; a restart reads those rows again",
                    offsets.topic
                ),
            ));
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
        (offsets.warn)(&BrookError::external(
            format!("stream '{}'", offsets.stream),
            format!(
                "the last commit of offsets {} of topic '{}' failed: {failure} (a restart may read those rows again)",
                offsets.describe_commit(),
                offsets.topic
            ),
        ));
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

/// The offsets of a stream's topic: what was read, which rows every query
/// has finished, and what was committed.
struct Offsets {
    stream: String,
    topic: String,
    warn: WarningHandler,
    inbox: Arc<Inbox>,
    book: Mutex<OffsetBook>,
    /// Bumped at every rebalance. The reader notes it with each chunk, so
    /// that rows read before a partition was revoked never commit it.
    rebalances: AtomicU64,
    /// Set when the stream is dropped: a rebalance (the consumer's close)
    /// then does not wait for batches that will never finish.
    closing: AtomicBool,
}

/// The bookkeeping behind [`Offsets`].
#[derive(Debug, Default)]
struct OffsetBook {
    /// Per partition, the offset after the last message read.
    read: BTreeMap<i32, i64>,
    /// Per chunk queued in the inbox, in order: its place among the inbox's
    /// items and its offsets; kept until folded into `finished` and older
    /// than the latest cut.
    chunks: VecDeque<Chunk>,
    /// How many of `chunks` (from the front) are folded into `finished`.
    folded: usize,
    /// The assigned partitions, each with the rebalance it was assigned at.
    assigned: BTreeMap<i32, u64>,
    /// Per assigned partition, the offset after the rows every query has
    /// finished: what may be committed.
    finished: BTreeMap<i32, i64>,
    /// Per assigned partition, the offset last committed (or being so).
    committed: BTreeMap<i32, i64>,
}

/// The messages of one push into the inbox.
#[derive(Debug)]
struct Chunk {
    /// Inbox items pushed once this chunk's rows were (a chunk of only bad
    /// messages has the number of the item before it).
    items: u64,
    /// The value of `Offsets::rebalances` when it was read.
    rebalance: u64,
    /// Per partition, the first and last offset of its messages.
    ranges: BTreeMap<i32, (i64, i64)>,
}

impl OffsetBook {
    /// Folds the chunks whose items are finished into `finished`, and
    /// forgets those the latest cut (starting after `last_cut_start`
    /// items) no longer shows. Once commits are `held_back`, chunks that
    /// will never be folded are forgotten too.
    fn fold(&mut self, items_finished: u64, last_cut_start: u64, held_back: bool) {
        while let Some(chunk) = self.chunks.get(self.folded) {
            if chunk.items > items_finished {
                break;
            }
            for (partition, (_, last)) in &chunk.ranges {
                // Rows read before the partition was (re)assigned count
                // for its previous assignment, which is over.
                if self
                    .assigned
                    .get(partition)
                    .is_some_and(|since| chunk.rebalance >= *since)
                {
                    let next = self.finished.entry(*partition).or_insert(last + 1);
                    *next = (*next).max(last + 1);
                }
            }
            self.folded += 1;
        }
        while (self.folded > 0 || held_back)
            && self
                .chunks
                .front()
                .is_some_and(|chunk| chunk.items <= last_cut_start)
        {
            self.chunks.pop_front();
            self.folded = self.folded.saturating_sub(1);
        }
    }

    /// Per partition, the first and last offset of the chunks among inbox
    /// items `(before, after]`.
    fn ranges(&self, (before, after): (u64, u64)) -> BTreeMap<i32, (i64, i64)> {
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for chunk in &self.chunks {
            if chunk.items <= before || chunk.items > after {
                continue;
            }
            for (partition, (first, last)) in &chunk.ranges {
                let range = ranges.entry(*partition).or_insert((*first, *last));
                range.0 = range.0.min(*first);
                range.1 = range.1.max(*last);
            }
        }
        ranges
    }
}

impl Offsets {
    /// The finished offsets not yet committed (of `only` these partitions),
    /// marked as committed.
    fn pending_commit(&self, only: Option<&[i32]>) -> Option<TopicPartitionList> {
        let ledger = self.inbox.ledger();
        let items_finished = ledger.items_finished();
        let last_cut_start = ledger.last_cut().0;
        let held_back = ledger.is_held_back();
        let mut book = lock(&self.book);
        book.fold(items_finished, last_cut_start, held_back);
        let due: Vec<(i32, i64)> = book
            .finished
            .iter()
            .filter(|(partition, _)| only.is_none_or(|only| only.contains(partition)))
            .filter(|(partition, offset)| book.committed.get(partition) != Some(offset))
            .map(|(partition, offset)| (*partition, *offset))
            .collect();
        if due.is_empty() {
            return None;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in due {
            book.committed.insert(partition, offset);
            let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        Some(list)
    }

    /// Every finished offset (of the assigned partitions), marked as
    /// committed.
    fn finished_commit(&self) -> Option<TopicPartitionList> {
        self.pending_commit(None);
        let mut book = lock(&self.book);
        if book.finished.is_empty() {
            return None;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in book.finished.clone() {
            book.committed.insert(partition, offset);
            let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        Some(list)
    }

    /// A commit of `list` failed: its offsets are due again.
    fn commit_failed(&self, list: &TopicPartitionList) {
        let mut book = lock(&self.book);
        for element in list.elements() {
            if let Offset::Offset(offset) = element.offset()
                && book.committed.get(&element.partition()) == Some(&offset)
            {
                book.committed.remove(&element.partition());
            }
        }
    }

    /// The committed offsets as `partition:offset ...`.
    fn describe_commit(&self) -> String {
        let book = lock(&self.book);
        offsets_text(book.committed.iter().map(|(p, o)| (*p, *o)))
    }

    /// Records a chunk pushed into the inbox (and folds, so that chunks
    /// are forgotten even while nothing finishes: commits held back).
    fn record(&self, items: u64, rebalance: u64, ranges: BTreeMap<i32, (i64, i64)>) {
        let ledger = self.inbox.ledger();
        let (items_finished, last_cut_start) = (ledger.items_finished(), ledger.last_cut().0);
        let held_back = ledger.is_held_back();
        let mut book = lock(&self.book);
        for (partition, (_, last)) in &ranges {
            book.read.insert(*partition, last + 1);
        }
        book.chunks.push_back(Chunk {
            items,
            rebalance,
            ranges,
        });
        book.fold(items_finished, last_cut_start, held_back);
    }

    /// Partitions assigned at rebalance `rebalance`.
    fn assigned(&self, partitions: &[i32], rebalance: u64) {
        let mut book = lock(&self.book);
        for partition in partitions {
            book.assigned.insert(*partition, rebalance);
        }
    }

    /// Partitions revoked: forgotten until assigned again.
    fn revoked(&self, partitions: &[i32]) {
        let mut book = lock(&self.book);
        for partition in partitions {
            book.assigned.remove(partition);
            book.finished.remove(partition);
            book.committed.remove(partition);
            book.read.remove(partition);
        }
    }

    /// Partitions are being revoked (not lost): waits a bounded time for
    /// the batches in progress, drops the rows no batch has taken (the
    /// partitions' next owner reads them again), and commits what is
    /// finished, synchronously, before the partitions go.
    fn before_revoke(&self, consumer: &BaseConsumer<StartContext>, partitions: &[i32]) {
        let taken = self.inbox.discard_pending();
        // The open batch has taken rows of these partitions: it is cut now
        // instead of at its tick, so the wait below is short.
        self.inbox.request_cut();
        if !self.closing.load(Ordering::Acquire)
            && !self.inbox.ledger().wait_finished(taken, REBALANCE_WAIT)
        {
            (self.warn)(&BrookError::external(
                format!("stream '{}'", self.stream),
                format!(
                    "the batches in progress did not finish within {} s of a rebalance of topic '{}'; the partitions' next owner may read their rows again",
                    REBALANCE_WAIT.as_secs(),
                    self.topic
                ),
            ));
        }
        if let Some(list) = self.pending_commit(Some(partitions))
            && let Err(err) = consumer.commit(&list, CommitMode::Sync)
        {
            self.commit_failed(&list);
            (self.warn)(&BrookError::external(
                format!("stream '{}'", self.stream),
                format!(
                    "committing offsets of topic '{}' before a rebalance failed: {err} (the partitions' next owner may read some rows again)",
                    self.topic
                ),
            ));
        }
    }
}

/// `partition:offset ...`.
fn offsets_text(offsets: impl Iterator<Item = (i32, i64)>) -> String {
    offsets
        .map(|(partition, offset)| format!("{partition}:{offset}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sets where each partition starts the first time this process is
/// assigned it (`earliest` / `latest`); later assignments resume from the
/// group's committed offsets. Commits finished offsets before partitions
/// are revoked.
struct StartContext {
    start: StartOffset,
    /// Offsets a checkpoint recorded, which win over `start`.
    resume: BTreeMap<i32, i64>,
    seen: Mutex<HashSet<i32>>,
    offsets: Arc<Offsets>,
}

impl ClientContext for StartContext {}

impl ConsumerContext for StartContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, list: &TopicPartitionList) {
        if let Err(err) = result {
            self.offsets.commit_failed(list);
            (self.offsets.warn)(&BrookError::external(
                format!("stream '{}'", self.offsets.stream),
                format!(
                    "committing offsets of topic '{}' failed: {err} (the next commit carries them again)",
                    self.offsets.topic
                ),
            ));
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let numbers: Vec<i32> = partitions
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let offset = match self.start {
                    StartOffset::Earliest => Some(Offset::Beginning),
                    StartOffset::Latest => Some(Offset::End),
                    StartOffset::Committed => None,
                };
                let mut seen = lock(&self.seen);
                let committed: HashSet<i32> =
                    lock(&self.offsets.book).committed.keys().copied().collect();
                for mut element in partitions.elements() {
                    let partition = element.partition();
                    let first_time = seen.insert(partition);
                    // A checkpoint's offset holds until this run has
                    // committed the partition itself: a group may assign a
                    // partition more than once while it forms (tansu does),
                    // and a group of its own has no committed offset to
                    // fall back on.
                    let resumed = self
                        .resume
                        .get(&partition)
                        .copied()
                        .filter(|_| !committed.contains(&partition));
                    match (first_time, resumed, offset) {
                        (_, Some(at), _) => {
                            let _ = element.set_offset(Offset::Offset(at));
                        }
                        (true, None, Some(offset)) => {
                            let _ = element.set_offset(offset);
                        }
                        _ => {}
                    }
                }
                drop(seen);
                let rebalance = self.offsets.rebalances.fetch_add(1, Ordering::AcqRel) + 1;
                self.offsets.assigned(&numbers, rebalance);
                if let Err(err) = consumer.assign(partitions) {
                    (self.offsets.warn)(&BrookError::external(
                        format!("stream '{}'", self.offsets.stream),
                        format!(
                            "taking partitions {numbers:?} of topic '{}' failed: {err}",
                            self.offsets.topic
                        ),
                    ));
                }
            }
            _ => {
                if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                    && !consumer.assignment_lost()
                {
                    self.offsets.before_revoke(consumer, &numbers);
                } else {
                    // Lost (the session expired): others may own them now,
                    // so nothing is committed; rows not yet taken go.
                    self.offsets.inbox.discard_pending();
                }
                self.offsets.rebalances.fetch_add(1, Ordering::AcqRel);
                self.offsets.revoked(&numbers);
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
        let mut text = format!(
            "bootstrap_servers = '{}', topic = '{}', group_id = '{}', format = '{}', timestamp_format = '{}'",
            self.options.bootstrap_servers,
            self.options.topic,
            self.options.group_of(&self.stream),
            format!("{:?}", self.options.format).to_ascii_lowercase(),
            self.options.timestamp_format.name(),
        );
        let running = lock(&self.running);
        let Some(offsets) = running.as_ref().map(|r| &r.offsets) else {
            return text;
        };
        let last_cut = offsets.inbox.ledger().last_cut();
        let book = lock(&offsets.book);
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
        let running = lock(&self.running);
        let offsets = &running.as_ref()?.offsets;
        let book = lock(&offsets.book);
        // Where the run started (a checkpoint's offsets), moved on by what
        // it has read since.
        let mut next = lock(&self.resume).clone();
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
        *lock(&self.static_member) = Some(static_member_id(&self.stream, identity));
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
        *lock(&self.resume) = resume;
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
        let consumer = Arc::new(KafkaConsumer(Some(self.consumer(Arc::clone(&offsets))?)));
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

        let decoder = LineDecoder::try_new(
            &self.stream,
            value_schema(&self.schema),
            self.options.format,
            self.options.delimiter,
        )?
        .with_max_line_bytes(self.options.max_line_bytes)
        .with_timestamp_format(self.options.timestamp_format);
        let stop_reader = Arc::new(Notify::new());
        let reader = Reader {
            stream: self.stream.clone(),
            topic: topic.clone(),
            schema: Arc::clone(&self.schema),
            consumer: Arc::clone(&consumer),
            decoder,
            on_error: self.options.on_error,
            inbox: Arc::clone(&inbox),
            warn: Arc::clone(&self.warn),
            offsets: Arc::clone(&offsets),
            next_line: 1,
            resume: lock(&self.resume).clone(),
        };
        reader.spawn(Arc::clone(&stop_reader))?;
        let committer = Committer {
            consumer: Arc::clone(&consumer),
            offsets: Arc::clone(&offsets),
        };
        lock(&self.tasks).push(tokio::spawn(committer.run()));
        *lock(&self.running) = Some(Running {
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
        if let Some(member) = lock(&self.static_member).as_ref() {
            config.set("group.instance.id", member);
        }
        for (key, value) in &self.options.properties {
            config.set(key, value);
        }
        config
            .create_with_context(StartContext {
                start: self.options.start_offset,
                resume: lock(&self.resume).clone(),
                seen: Default::default(),
                offsets,
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
    offsets: Arc<Offsets>,
    next_line: u64,
    /// A checkpoint's offsets: a message before them is in the restored
    /// state already and is skipped, whatever offset the group's
    /// assignment started the partition at.
    resume: BTreeMap<i32, i64>,
}

impl Reader {
    /// Whether `message` was already read before the checkpoint the stream
    /// resumed from.
    fn before_checkpoint(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        self.resume
            .get(&message.partition())
            .is_some_and(|at| message.offset() < *at)
    }
    /// Reads on a thread of its own (with a runtime of its own), so that
    /// the rebalance callback, which librdkafka runs inside `recv`, may
    /// block while the batches in progress finish, without holding up a
    /// thread of the runtime that runs them.
    fn spawn(self, stop: Arc<Notify>) -> Result<()> {
        let stream = self.stream.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|err| {
                BrookError::Internal(format!(
                    "stream '{stream}': a runtime for its reader: {err}"
                ))
            })?;
        std::thread::Builder::new()
            .name("brook-kafka-read".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = self.run() => {}
                        _ = stop.notified() => {}
                    }
                })
            })
            .map(|_| ())
            .map_err(|err| {
                BrookError::Internal(format!("stream '{stream}': a thread for its reader: {err}"))
            })
    }

    async fn run(mut self) {
        let mut lost = false;
        loop {
            // The first message waits; the rest are what is ready now. A
            // rebalance inside `recv` ends the chunk (it returns pending).
            let mut chunk = Vec::new();
            let mut places = Vec::new();
            match self.consumer.recv().await {
                Ok(message) if self.before_checkpoint(&message) => continue,
                Ok(message) => {
                    if lost {
                        (self.warn)(&BrookError::external(
                            format!("stream '{}'", self.stream),
                            format!("reading topic '{}' again", self.topic),
                        ));
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
            let rebalance = self.offsets.rebalances.load(Ordering::Acquire);
            // A chunk fits in the inbox's bound (an empty inbox would take
            // a larger one whole).
            let most = MESSAGES_PER_CHUNK.min(self.inbox.limits().max_pending_rows);
            while places.len() < most && chunk.len() < BYTES_PER_CHUNK {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) if self.before_checkpoint(&message) => {}
                    Some(Ok(message)) => add_message(&message, &mut chunk, &mut places),
                    _ => break,
                }
            }
            if self.offsets.rebalances.load(Ordering::Acquire) != rebalance {
                // Read before its partitions were revoked: their next
                // owner reads these messages again from the committed
                // offset.
                continue;
            }
            if !self.deliver(chunk, places, rebalance).await {
                return;
            }
        }
    }

    /// Decodes a chunk of lines, reports bad ones with partition and
    /// offset, adds the metadata columns, queues the rows (pausing the
    /// partitions while the inbox is full) and records the chunk's offsets.
    async fn deliver(&mut self, chunk: Vec<u8>, places: Vec<Place>, rebalance: u64) -> bool {
        let first_line = self.next_line;
        self.next_line += places.len() as u64;
        let decoded: DecodedLines = self.decoder.decode(&Buffer::from(chunk), first_line);
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for place in &places {
            let range = ranges
                .entry(place.partition)
                .or_insert((place.offset, place.offset));
            range.0 = range.0.min(place.offset);
            range.1 = range.1.max(place.offset);
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
            // A message of many lines can still make more rows than the
            // bound: `push` then queues it in slices.
            let fits = batch.num_rows() <= self.inbox.limits().max_pending_rows;
            if !fits || self.inbox.push_now(batch.clone()).is_err() {
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
        self.offsets
            .record(self.inbox.items_pushed(), rebalance, ranges);
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
    BrookError::external(
        format!("stream '{stream}'"),
        format!(
            "reading topic '{topic}' failed: {err} (librdkafka retries; rows resume when the broker answers)"
        ),
    )
}

/// Commits to the group the offsets of the rows every query has finished,
/// each time the stream's finished cuts move on.
struct Committer {
    consumer: Arc<KafkaConsumer>,
    offsets: Arc<Offsets>,
}

impl Committer {
    async fn run(self) {
        let mut finished = self.offsets.inbox.ledger().watch_finished();
        while finished.changed().await.is_ok() {
            let Some(list) = self.offsets.pending_commit(None) else {
                continue;
            };
            // Asynchronous: a failure is reported by the consumer's commit
            // callback, and the offsets are due again at the next commit.
            if let Err(err) = self.consumer.commit(&list, CommitMode::Async) {
                self.offsets.commit_failed(&list);
                (self.offsets.warn)(&BrookError::external(
                    format!("stream '{}'", self.offsets.stream),
                    format!(
                        "committing offsets of topic '{}' failed: {err} (the next commit carries them again)",
                        self.offsets.topic
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(items: u64, rebalance: u64, ranges: &[(i32, i64, i64)]) -> Chunk {
        Chunk {
            items,
            rebalance,
            ranges: ranges.iter().map(|(p, f, l)| (*p, (*f, *l))).collect(),
        }
    }

    #[test]
    fn finished_offsets_count_only_chunks_read_since_their_partitions_assignment() {
        let mut book = OffsetBook::default();
        book.assigned.insert(0, 1);
        book.assigned.insert(1, 3);
        book.chunks.push_back(chunk(1, 1, &[(0, 0, 9), (1, 0, 4)]));
        book.chunks
            .push_back(chunk(2, 3, &[(0, 10, 19), (1, 5, 9)]));
        book.chunks.push_back(chunk(3, 3, &[(0, 20, 29)]));
        book.fold(2, 0, false);
        // Partition 1's first rows were read in an assignment that is over.
        assert_eq!(book.finished, BTreeMap::from([(0, 20), (1, 10)]));
        assert_eq!(
            book.ranges((1, 3)),
            BTreeMap::from([(0, (10, 29)), (1, (5, 9))])
        );
        // Folded chunks before the latest cut are forgotten.
        book.fold(2, 2, false);
        assert_eq!(book.chunks.len(), 1);
        assert_eq!(book.folded, 0);
    }

    #[test]
    fn chunks_are_forgotten_once_commits_are_held_back() {
        let mut book = OffsetBook::default();
        book.assigned.insert(0, 0);
        for items in 1..=100 {
            book.chunks
                .push_back(chunk(items, 0, &[(0, items as i64, items as i64)]));
            book.fold(0, items - 1, true);
        }
        assert_eq!(book.chunks.len(), 1);
        assert!(book.finished.is_empty());
    }
}
