//! The consumer's fetch queue: every assigned partition's messages routed
//! to one librdkafka queue of brook's own and taken from it many at a time
//! (`rd_kafka_consume_batch_queue`), so that reading costs a wake-up per
//! chunk rather than an event, a lock and a wake-up per message (what
//! rdkafka's one-message `recv` does). The group's events (rebalances,
//! errors, commit results) stay on the consumer's own queue, which the
//! reader serves between chunks, so a rebalance still runs between chunks
//! on the reader's thread.
//!
//! A partition is routed before it is assigned: librdkafka keeps a route
//! the application set when it starts fetching the partition.

use std::collections::HashMap;
use std::ffi::CString;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::bindings as rd;

/// Messages one take returns at most, so that the reader checks its
/// chunk's byte bound between takes (a chunk may otherwise hold all that
/// librdkafka fetched ahead).
pub(super) const MESSAGES_PER_TAKE: usize = 2048;

/// The queues behind [`FetchQueue`], owned: destroyed once, in
/// [`FetchQueue::close`].
struct Queues {
    client: *mut rd::rd_kafka_t,
    fetch: *mut rd::rd_kafka_queue_t,
    /// The consumer's own queue (the group's events), to tell whether
    /// events still wait.
    events: *mut rd::rd_kafka_queue_t,
    /// Room for the message pointers one take returns, kept between takes.
    slots: Vec<*mut rd::rd_kafka_message_t>,
    /// Each routed partition's queue handle (a reference librdkafka
    /// counts), kept so that the route can be undone at close.
    partitions: HashMap<i32, *mut rd::rd_kafka_queue_t>,
}

/// One queue that every assigned partition's messages are routed to.
pub(super) struct FetchQueue {
    topic: CString,
    queues: Mutex<Option<Queues>>,
}

// SAFETY: librdkafka's client and queue handles may be used from any
// thread; every use here is under the mutex, and the handles are
// destroyed once, in `close`, which the consumer calls before it is
// destroyed.
unsafe impl Send for FetchQueue {}
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A fetch queue of the client `client` for `topic` (a name without NUL
    /// bytes: Kafka's topic names are letters, digits, `.`, `_`, `-`).
    ///
    /// # Safety
    /// `client` must be a live consumer handle, and [`FetchQueue::close`]
    /// must be called before it is destroyed.
    pub(super) unsafe fn new(client: *mut rd::rd_kafka_t, topic: &str) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: `client` is live (the caller's promise).
        let fetch = unsafe { rd::rd_kafka_queue_new(client) };
        if fetch.is_null() {
            return None;
        }
        // SAFETY: as above.
        let events = unsafe { rd::rd_kafka_queue_get_consumer(client) };
        if events.is_null() {
            // SAFETY: created above, destroyed once.
            unsafe { rd::rd_kafka_queue_destroy(fetch) };
            return None;
        }
        Some(FetchQueue {
            topic,
            queues: Mutex::new(Some(Queues {
                client,
                fetch,
                events,
                slots: Vec::with_capacity(MESSAGES_PER_TAKE),
                partitions: HashMap::new(),
            })),
        })
    }

    /// Routes `partitions` of the topic to the fetch queue; called before
    /// they are assigned (and again by [`FetchQueue::reroute`]).
    pub(super) fn route(&self, partitions: &[i32]) {
        let mut queues = self.queues.lock();
        let Some(queues) = queues.as_mut() else {
            return;
        };
        for partition in partitions {
            let queue = match queues.partitions.get(partition) {
                Some(queue) => *queue,
                None => {
                    // SAFETY: the client is live until `close`; librdkafka
                    // creates the partition's state if it does not know it.
                    let queue = unsafe {
                        rd::rd_kafka_queue_get_partition(
                            queues.client,
                            self.topic.as_ptr(),
                            *partition,
                        )
                    };
                    if queue.is_null() {
                        continue;
                    }
                    queues.partitions.insert(*partition, queue);
                    queue
                }
            };
            // SAFETY: both queues are live.
            unsafe { rd::rd_kafka_queue_forward(queue, queues.fetch) };
        }
    }

    /// Routes every partition ever routed again. librdkafka clears a
    /// partition's route when it stops fetching it (a revoke), and keeps
    /// what then arrives in the partition's own queue; a partition
    /// assigned again is routed before it is, but the stop of the revoke
    /// may be served after that. Routing again moves what waits in the
    /// partition's queue to the fetch queue, in order, and costs a lock per
    /// partition: the reader does it before each chunk.
    pub(super) fn reroute(&self) {
        let queues = self.queues.lock();
        let Some(queues) = queues.as_ref() else {
            return;
        };
        for queue in queues.partitions.values() {
            // SAFETY: both queues are live.
            unsafe { rd::rd_kafka_queue_forward(*queue, queues.fetch) };
        }
    }

    /// Whether the group's events (rebalances, errors, commit results)
    /// wait on the consumer's own queue.
    pub(super) fn events_waiting(&self) -> bool {
        let queues = self.queues.lock();
        // SAFETY: a live queue handle.
        queues
            .as_ref()
            .is_some_and(|queues| unsafe { rd::rd_kafka_queue_length(queues.events) } > 0)
    }

    /// Moves up to `most` messages (at most [`MESSAGES_PER_TAKE`]) into
    /// `into`, waiting up to `wait` for the first one; returns how many.
    /// Nothing once closed.
    pub(super) fn take(
        &self,
        into: &mut Vec<FetchedMessage>,
        most: usize,
        wait: Duration,
    ) -> usize {
        let mut queues = self.queues.lock();
        let Some(queues) = queues.as_mut() else {
            return 0;
        };
        let most = most.min(MESSAGES_PER_TAKE);
        let mut taken = 0;
        // Waiting, take one (librdkafka's batch call waits for the whole
        // batch to fill); then what is there now.
        let mut wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        while taken < most {
            let room = if wait_ms > 0 { 1 } else { most - taken };
            queues.slots.clear();
            // SAFETY: `slots` has room for `room` <= MESSAGES_PER_TAKE
            // pointers; the queue is live.
            let got = unsafe {
                rd::rd_kafka_consume_batch_queue(
                    queues.fetch,
                    wait_ms,
                    queues.slots.as_mut_ptr(),
                    room,
                )
            };
            let got = usize::try_from(got).unwrap_or(0).min(room);
            if got == 0 {
                break;
            }
            // SAFETY: librdkafka wrote `got` message pointers from the front.
            unsafe { queues.slots.set_len(got) };
            into.extend(
                queues
                    .slots
                    .drain(..)
                    .filter(|m| !m.is_null())
                    .map(FetchedMessage),
            );
            taken += got;
            wait_ms = 0;
        }
        taken
    }

    /// Undoes the routes and destroys the queues; the messages still in
    /// them go. Called before the consumer is closed and destroyed.
    pub(super) fn close(&self) {
        let Some(queues) = self.queues.lock().take() else {
            return;
        };
        for (_, queue) in queues.partitions {
            // SAFETY: live handles, each destroyed once.
            unsafe {
                rd::rd_kafka_queue_forward(queue, std::ptr::null_mut());
                rd::rd_kafka_queue_destroy(queue);
            }
        }
        // SAFETY: live, destroyed once.
        unsafe {
            rd::rd_kafka_queue_destroy(queues.fetch);
            rd::rd_kafka_queue_destroy(queues.events);
        }
    }
}

/// What a taken "message" is.
pub(super) enum FetchedKind {
    Message,
    PartitionEnd,
    Error(rdkafka::error::KafkaError),
}

/// A message taken from the fetch queue; librdkafka's memory, given back
/// when dropped.
pub(super) struct FetchedMessage(*mut rd::rd_kafka_message_t);

// SAFETY: a message taken from a queue is the taker's alone, and
// librdkafka lets any thread destroy it.
unsafe impl Send for FetchedMessage {}

impl FetchedMessage {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: non-null (checked when taken), live until dropped.
        unsafe { &*self.0 }
    }

    /// What the "message" is: a message, the end of a partition (only
    /// with `enable.partition.eof`), or librdkafka's error for the
    /// partition.
    pub(super) fn kind(&self) -> FetchedKind {
        match self.raw().err {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => FetchedKind::Message,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => FetchedKind::PartitionEnd,
            err => FetchedKind::Error(rdkafka::error::KafkaError::MessageConsumption(err.into())),
        }
    }

    pub(super) fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub(super) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(super) fn key(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: librdkafka's key of `key_len` bytes, live with the message.
        (!raw.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.key as *const u8, raw.key_len) })
    }

    pub(super) fn payload(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: librdkafka's payload of `len` bytes, live with the message.
        (!raw.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.payload as *const u8, raw.len) })
    }

    /// The message's timestamp in milliseconds, when it has one.
    pub(super) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let at = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        // As rdkafka reads it: -1 is "none" (a create time before 1970 is
        // a time).
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && at != -1)
            .then_some(at)
    }
}

impl Drop for FetchedMessage {
    fn drop(&mut self) {
        // SAFETY: taken from a queue, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.0) };
    }
}
