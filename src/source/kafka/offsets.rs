//! The offsets of a Kafka stream's topic: what was read per partition,
//! which rows every query has finished (chunk by chunk, against the
//! stream's cut ledger), and what was committed.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::{BrookError, Warning, WarningHandler};
use crate::stream::Inbox;

use super::REBALANCE_WAIT;

/// The offsets of a stream's topic: what was read, which rows every query
/// has finished, and what was committed.
pub(super) struct Offsets {
    pub(super) stream: String,
    pub(super) topic: String,
    pub(super) warn: WarningHandler,
    pub(super) inbox: Arc<Inbox>,
    pub(super) book: Mutex<OffsetBook>,
    /// Bumped at every rebalance. The reader notes it with each chunk, so
    /// that rows read before a partition was revoked never commit it.
    pub(super) rebalances: AtomicU64,
    /// Set when the stream is dropped: a rebalance (the consumer's close)
    /// then does not wait for batches that will never finish.
    pub(super) closing: AtomicBool,
}

/// The bookkeeping behind [`Offsets`].
#[derive(Debug, Default)]
pub(super) struct OffsetBook {
    /// Per partition, the offset after the last message read.
    pub(super) read: BTreeMap<i32, i64>,
    /// Per chunk queued in the inbox, in order: its place among the inbox's
    /// items and its offsets; kept until folded into `finished` and older
    /// than the latest cut.
    pub(super) chunks: VecDeque<Chunk>,
    /// How many of `chunks` (from the front) are folded into `finished`.
    pub(super) folded: usize,
    /// The assigned partitions, each with the rebalance it was assigned at.
    pub(super) assigned: BTreeMap<i32, u64>,
    /// Per assigned partition, the offset after the rows every query has
    /// finished: what may be committed.
    pub(super) finished: BTreeMap<i32, i64>,
    /// Per assigned partition, the offset last committed (or being so).
    pub(super) committed: BTreeMap<i32, i64>,
}

/// The messages of one push into the inbox.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Inbox items pushed once this chunk's rows were (a chunk of only bad
    /// messages has the number of the item before it).
    pub(super) items: u64,
    /// The value of `Offsets::rebalances` when it was read.
    pub(super) rebalance: u64,
    /// Per partition, the first and last offset of its messages.
    pub(super) ranges: BTreeMap<i32, (i64, i64)>,
}

impl OffsetBook {
    /// Folds the chunks whose items are finished into `finished`, and
    /// forgets those the latest cut (starting after `last_cut_start`
    /// items) no longer shows. Once commits are `held_back`, chunks that
    /// will never be folded are forgotten too.
    pub(super) fn fold(&mut self, items_finished: u64, last_cut_start: u64, held_back: bool) {
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
    pub(super) fn ranges(&self, (before, after): (u64, u64)) -> BTreeMap<i32, (i64, i64)> {
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
    pub(super) fn pending_commit(&self, only: Option<&[i32]>) -> Option<TopicPartitionList> {
        let ledger = self.inbox.ledger();
        let items_finished = ledger.items_finished();
        let last_cut_start = ledger.last_cut().0;
        let held_back = ledger.is_held_back();
        let mut book = self.book.lock();
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
    pub(super) fn finished_commit(&self) -> Option<TopicPartitionList> {
        self.pending_commit(None);
        let mut book = self.book.lock();
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
    pub(super) fn commit_failed(&self, list: &TopicPartitionList) {
        let mut book = self.book.lock();
        for element in list.elements() {
            if let Offset::Offset(offset) = element.offset()
                && book.committed.get(&element.partition()) == Some(&offset)
            {
                book.committed.remove(&element.partition());
            }
        }
    }

    /// The committed offsets as `partition:offset ...`.
    pub(super) fn describe_commit(&self) -> String {
        let book = self.book.lock();
        offsets_text(book.committed.iter().map(|(p, o)| (*p, *o)))
    }

    /// Records a chunk pushed into the inbox (and folds, so that chunks
    /// are forgotten even while nothing finishes: commits held back).
    pub(super) fn record(&self, items: u64, rebalance: u64, ranges: BTreeMap<i32, (i64, i64)>) {
        let ledger = self.inbox.ledger();
        let (items_finished, last_cut_start) = (ledger.items_finished(), ledger.last_cut().0);
        let held_back = ledger.is_held_back();
        let mut book = self.book.lock();
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
    pub(super) fn assigned(&self, partitions: &[i32], rebalance: u64) {
        let mut book = self.book.lock();
        for partition in partitions {
            book.assigned.insert(*partition, rebalance);
        }
    }

    /// Partitions revoked: forgotten until assigned again.
    pub(super) fn revoked(&self, partitions: &[i32]) {
        let mut book = self.book.lock();
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
    pub(super) fn before_revoke<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
    ) {
        let taken = self.inbox.discard_pending();
        // The open batch has taken rows of these partitions: it is cut now
        // instead of at its tick, so the wait below is short.
        self.inbox.request_cut();
        if !self.closing.load(Ordering::Acquire)
            && !self.inbox.ledger().wait_finished(taken, REBALANCE_WAIT)
        {
            (self.warn)(&Warning::Source(BrookError::external(
                format!("stream '{}'", self.stream),
                format!(
                    "the batches in progress did not finish within {} s of a rebalance of topic '{}'; the partitions' next owner may read their rows again",
                    REBALANCE_WAIT.as_secs(),
                    self.topic
                ),
            )));
        }
        if let Some(list) = self.pending_commit(Some(partitions))
            && let Err(err) = consumer.commit(&list, CommitMode::Sync)
        {
            self.commit_failed(&list);
            (self.warn)(&Warning::Source(BrookError::external(
                format!("stream '{}'", self.stream),
                format!(
                    "committing offsets of topic '{}' before a rebalance failed: {err} (the partitions' next owner may read some rows again)",
                    self.topic
                ),
            )));
        }
    }
}

/// `partition:offset ...`.
pub(super) fn offsets_text(offsets: impl Iterator<Item = (i32, i64)>) -> String {
    offsets
        .map(|(partition, offset)| format!("{partition}:{offset}"))
        .collect::<Vec<_>>()
        .join(" ")
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
