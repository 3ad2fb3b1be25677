//! The reader thread: messages taken from the consumer in chunks, decoded
//! like a socket's lines, bad ones reported by partition and offset, the
//! metadata columns (`_key`, `_partition`, `_offset`, `_timestamp`) added,
//! and the rows queued in the stream's inbox (pausing the partitions while
//! it is full).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::Notify;

use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::source::decode::{AvroDecoder, DecodedLines, LineDecoder, upsert_frame};
use crate::stream::Inbox;

use super::fetch::{FetchedKind, FetchedMessage};
use super::offsets::Offsets;
use super::rebalance::KafkaConsumer;
use super::{BYTES_PER_CHUNK, FETCH_WAIT, MESSAGES_PER_CHUNK, METADATA_COLUMNS};

/// One message's place, for its rows' metadata columns and bad-row reports.
#[derive(Debug, Default, Clone)]
pub(super) struct Place {
    pub(super) key: Option<String>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) timestamp: Option<i64>,
}

/// How a message's value becomes lines for the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Each line of the value is a row.
    Lines,
    /// The value is one change (Debezium); a tombstone after a delete
    /// carries nothing and is skipped.
    Change,
    /// The key and the value (or none, a tombstone) framed on one line.
    Upsert,
    /// The value is one Avro record; a message without a value is skipped.
    Avro,
}

impl Framing {
    pub(super) fn of(options: &super::KafkaOptions) -> Self {
        if options.avro.is_some() {
            return Framing::Avro;
        }
        match (options.mode, options.format.is_changelog()) {
            (super::KafkaMode::Upsert, _) => Framing::Upsert,
            (super::KafkaMode::Append, true) => Framing::Change,
            (super::KafkaMode::Append, false) => Framing::Lines,
        }
    }
}

/// How a chunk of message values becomes rows.
pub(super) enum ValueDecoder {
    /// Values cut into lines, decoded as text, CSV or JSON.
    Lines(LineDecoder),
    /// Each value one Avro record.
    Avro(Box<AvroDecoder>),
}

/// Messages read together: their values (lines, or one value each ending
/// at `ends`) and each row's place.
#[derive(Default)]
pub(super) struct Chunk {
    pub(super) bytes: Vec<u8>,
    /// With [`Framing::Avro`], where each message's value ends in `bytes`.
    pub(super) ends: Vec<usize>,
    pub(super) places: Vec<Place>,
}

impl ValueDecoder {
    async fn decode(&mut self, chunk: Chunk, first_line: u64) -> DecodedLines {
        match self {
            ValueDecoder::Lines(decoder) => decoder.decode(&Buffer::from(chunk.bytes), first_line),
            ValueDecoder::Avro(decoder) => {
                let mut start = 0;
                let values: Vec<&[u8]> = chunk
                    .ends
                    .iter()
                    .map(|end| {
                        let value = &chunk.bytes[start..*end];
                        start = *end;
                        value
                    })
                    .collect();
                decoder.decode(&values, first_line).await
            }
        }
    }
}

pub(super) struct Reader {
    pub(super) stream: String,
    pub(super) topic: String,
    pub(super) schema: SchemaRef,
    pub(super) consumer: Arc<KafkaConsumer>,
    pub(super) decoder: ValueDecoder,
    pub(super) framing: Framing,
    /// The stream declares `_key`: each message's key is kept for it.
    pub(super) keeps_keys: bool,
    pub(super) on_error: crate::source::OnError,
    pub(super) inbox: Arc<Inbox>,
    pub(super) warn: WarningHandler,
    pub(super) offsets: Arc<Offsets>,
    pub(super) next_line: u64,
    /// A checkpoint's offsets: a message before them is in the restored
    /// state already and is skipped, whatever offset the group's
    /// assignment started the partition at.
    pub(super) resume: BTreeMap<i32, i64>,
}

impl Reader {
    /// Whether the message at `partition`/`offset` was already read before
    /// the checkpoint the stream resumed from.
    pub(super) fn before_checkpoint(&self, partition: i32, offset: i64) -> bool {
        self.resume.get(&partition).is_some_and(|at| offset < *at)
    }

    /// Reads on a thread of its own (with a runtime of its own), so that
    /// the rebalance callback, which librdkafka runs inside `recv`, may
    /// block while the batches in progress finish, without holding up a
    /// thread of the runtime that runs them.
    pub(super) fn spawn(self, stop: Arc<Notify>) -> Result<()> {
        let stream = self.stream.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
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

    pub(super) async fn run(mut self) {
        let mut lost = false;
        let mut fetched: Vec<FetchedMessage> = Vec::new();
        loop {
            // The reader is stopped where it waits: here, between chunks.
            tokio::task::yield_now().await;
            // The group's events first (a rebalance runs here, between
            // chunks); the consumer's own queue has messages only of a
            // partition not routed to the fetch queue.
            let mut chunk = Chunk::default();
            let rebalance = self.offsets.rebalances.load(Ordering::Acquire);
            let most = MESSAGES_PER_CHUNK.min(self.inbox.limits().max_pending_rows);
            self.serve_events(&mut chunk, most, &mut lost);
            if self.offsets.rebalances.load(Ordering::Acquire) != rebalance {
                // A rebalance: what was read before it is read again from
                // the committed offsets by the partitions' owner.
                continue;
            }
            // Then the fetch queue, waiting a little for a first message
            // when there is none yet (the events are served again after).
            if let Some(fetch) = self.consumer.fetch() {
                fetch.reroute();
                while chunk.places.len() < most && chunk.bytes.len() < BYTES_PER_CHUNK {
                    // Messages are taken at most as many as rows are still
                    // wanted (a message holds at least one row).
                    let room = most - chunk.places.len();
                    let wait = if chunk.places.is_empty() {
                        FETCH_WAIT
                    } else {
                        Duration::ZERO
                    };
                    if fetch.take(&mut fetched, room, wait) == 0 {
                        break;
                    }
                    for message in fetched.drain(..) {
                        match message.kind() {
                            FetchedKind::Message => {}
                            FetchedKind::PartitionEnd => continue,
                            FetchedKind::Error(err) => {
                                self.report_lost(&err, &mut lost);
                                continue;
                            }
                        }
                        let message = MessageView::of_fetched(&message);
                        if !self.before_checkpoint(message.partition, message.offset) {
                            add_message(&message, self.framing, self.keeps_keys, &mut chunk);
                        }
                    }
                }
            } else if chunk.places.is_empty() {
                // No fetch queue (librdkafka could not make one): messages
                // come on the consumer's own queue, served above.
                tokio::time::sleep(FETCH_WAIT).await;
            }
            if chunk.places.is_empty() && chunk.ends.is_empty() {
                continue;
            }
            if lost {
                (self.warn)(&Warning::Source(BrookError::external(
                    format!("stream '{}'", self.stream),
                    format!("reading topic '{}' again", self.topic),
                )));
                lost = false;
            }
            if !self.deliver(chunk, rebalance).await {
                return;
            }
        }
    }

    /// Serves the group's events waiting on the consumer's own queue (a
    /// rebalance runs its callback here), adding any message found there to
    /// `chunk`; reports the first error of an outage.
    fn serve_events(&mut self, chunk: &mut Chunk, most: usize, lost: &mut bool) {
        // rdkafka returns nothing for a served rebalance or commit result
        // (as if the queue were empty): ask librdkafka whether more wait.
        // Bounded, so that a flood of events cannot hold the reader here.
        let mut served = 0;
        while served < 256 && chunk.places.len() < most && chunk.bytes.len() < BYTES_PER_CHUNK {
            served += 1;
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    let message = MessageView::of_borrowed(&message);
                    if !self.before_checkpoint(message.partition, message.offset) {
                        add_message(&message, self.framing, self.keeps_keys, chunk);
                    }
                }
                Some(Err(err)) => self.report_lost(&err, lost),
                None => {
                    if !self.consumer.fetch().is_some_and(|f| f.events_waiting()) {
                        break;
                    }
                }
            }
        }
    }

    /// Reports a read failure once per outage (`lost` until rows come again).
    fn report_lost(&self, err: &KafkaError, lost: &mut bool) {
        if !*lost {
            (self.warn)(&Warning::Source(kafka_warning(
                &self.stream,
                &self.topic,
                err,
            )));
            *lost = true;
        }
    }

    /// Decodes a chunk of lines, reports bad ones with partition and
    /// offset, adds the metadata columns, queues the rows (pausing the
    /// partitions while the inbox is full) and records the chunk's offsets.
    pub(super) async fn deliver(&mut self, mut chunk: Chunk, rebalance: u64) -> bool {
        let places = std::mem::take(&mut chunk.places);
        let first_line = self.next_line;
        self.next_line += places.len() as u64;
        let decoded: DecodedLines = self.decoder.decode(chunk, first_line).await;
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
            if self.on_error == crate::source::OnError::Fail {
                self.inbox.fail(error);
                return false;
            }
            (self.warn)(&Warning::SkippedRow(error));
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

/// What the reader takes of a message, whichever queue it came from.
pub(super) struct MessageView<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Milliseconds since the epoch, when the message has a timestamp.
    pub(super) timestamp: Option<i64>,
}

impl<'a> MessageView<'a> {
    pub(super) fn of_borrowed(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Self {
        MessageView {
            key: message.key(),
            payload: message.payload(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
        }
    }

    pub(super) fn of_fetched(message: &'a FetchedMessage) -> Self {
        MessageView {
            key: message.key(),
            payload: message.payload(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp_ms(),
        }
    }
}

/// Appends `message` to `chunk`: its value framed as `framing` says, and
/// its place (with its key when `keeps_key`: `_key` is declared, or the
/// upsert framing reads it).
pub(super) fn add_message(
    message: &MessageView<'_>,
    framing: Framing,
    keeps_key: bool,
    chunk: &mut Chunk,
) {
    let Chunk {
        bytes: chunk,
        ends,
        places,
    } = chunk;
    let place = Place {
        key: message
            .key
            .filter(|_| keeps_key)
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        partition: message.partition,
        offset: message.offset,
        timestamp: message.timestamp,
    };
    match framing {
        Framing::Lines => {}
        Framing::Change => {
            let Some(value) = message.payload.filter(|v| !v.is_empty()) else {
                return;
            };
            // One change per message: JSON's line breaks are whitespace.
            chunk.extend(
                value
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
            chunk.push(b'\n');
            places.push(place);
            return;
        }
        Framing::Avro => {
            let Some(value) = message.payload else {
                return;
            };
            chunk.extend_from_slice(value);
            ends.push(chunk.len());
            places.push(place);
            return;
        }
        Framing::Upsert => {
            upsert_frame(message.key, message.payload, chunk);
            chunk.push(b'\n');
            places.push(place);
            return;
        }
    }
    let value = message.payload.unwrap_or_default();
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    // Each line of the value is a row with the message's place.
    for line in value.split(|b| *b == b'\n') {
        chunk.extend_from_slice(line);
        chunk.push(b'\n');
        places.push(place.clone());
    }
}

pub(super) fn metadata_array(name: &str, places: &[Place]) -> ArrayRef {
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
pub(super) fn with_metadata(
    schema: &SchemaRef,
    values: RecordBatch,
    places: &[Place],
) -> Result<RecordBatch> {
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

pub(super) fn kafka_warning(stream: &str, topic: &str, err: &KafkaError) -> BrookError {
    BrookError::external(
        format!("stream '{stream}'"),
        format!(
            "reading topic '{topic}' failed: {err} (librdkafka retries; rows resume when the broker answers)"
        ),
    )
}
