//! The consumer's side of the group: where each assigned partition starts
//! (a checkpoint's offset, `start_offset`, or the group's commit), and
//! what a rebalance does (wait for the batches in progress, commit, drop
//! what no batch took); the consumer, closed off the runtime; and the task
//! that commits to the group as the stream's finished cuts move on.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::options::StartOffset;
use crate::error::{BrookError, Warning};

use super::fetch::FetchQueue;
use super::offsets::Offsets;

/// Sets where each partition starts the first time this process is
/// assigned it (`earliest` / `latest`); later assignments resume from the
/// group's committed offsets. Commits finished offsets before partitions
/// are revoked.
pub(super) struct StartContext {
    pub(super) start: StartOffset,
    /// Offsets a checkpoint recorded, which win over `start`.
    pub(super) resume: BTreeMap<i32, i64>,
    pub(super) seen: Mutex<HashSet<i32>>,
    pub(super) offsets: Arc<Offsets>,
    /// Where assigned partitions' messages go, set once the consumer exists
    /// (it needs the consumer's handle).
    pub(super) fetch: OnceLock<FetchQueue>,
}

impl ClientContext for StartContext {}

impl ConsumerContext for StartContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, list: &TopicPartitionList) {
        if let Err(err) = result {
            self.offsets.commit_failed(list);
            (self.offsets.warn)(&Warning::Source(BrookError::external(
                format!("stream '{}'", self.offsets.stream),
                format!(
                    "committing offsets of topic '{}' failed: {err} (the next commit carries them again)",
                    self.offsets.topic
                ),
            )));
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
                let mut seen = self.seen.lock();
                let committed: HashSet<i32> =
                    self.offsets.book.lock().committed.keys().copied().collect();
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
                // Routed before they are assigned, so that librdkafka keeps
                // the route when it starts fetching them.
                if let Some(fetch) = self.fetch.get() {
                    fetch.route(&numbers);
                }
                if let Err(err) = consumer.assign(partitions) {
                    (self.offsets.warn)(&Warning::Source(BrookError::external(
                        format!("stream '{}'", self.offsets.stream),
                        format!(
                            "taking partitions {numbers:?} of topic '{}' failed: {err}",
                            self.offsets.topic
                        ),
                    )));
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
pub(super) struct KafkaConsumer(pub(super) Option<StreamConsumer<StartContext>>);

impl KafkaConsumer {
    /// The queue assigned partitions' messages are routed to.
    pub(super) fn fetch(&self) -> Option<&FetchQueue> {
        self.context().fetch.get()
    }
}

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
            // The fetch queue goes before the consumer it belongs to (here:
            // the reader, which takes from it, is gone, so this does not
            // wait).
            if let Some(fetch) = consumer.context().fetch.get() {
                fetch.close();
            }
            let _ = std::thread::Builder::new()
                .name("brook-kafka-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

/// Commits to the group the offsets of the rows every query has finished,
/// each time the stream's finished cuts move on.
pub(super) struct Committer {
    pub(super) consumer: Arc<KafkaConsumer>,
    pub(super) offsets: Arc<Offsets>,
}

impl Committer {
    pub(super) async fn run(self) {
        let mut finished = self.offsets.inbox.ledger().watch_finished();
        while finished.changed().await.is_ok() {
            let Some(list) = self.offsets.pending_commit(None) else {
                continue;
            };
            // Asynchronous: a failure is reported by the consumer's commit
            // callback, and the offsets are due again at the next commit.
            if let Err(err) = self.consumer.commit(&list, CommitMode::Async) {
                self.offsets.commit_failed(&list);
                (self.offsets.warn)(&Warning::Source(BrookError::external(
                    format!("stream '{}'", self.offsets.stream),
                    format!(
                        "committing offsets of topic '{}' failed: {err} (the next commit carries them again)",
                        self.offsets.topic
                    ),
                )));
            }
        }
    }
}
