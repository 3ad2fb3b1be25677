//! Which cuts of a stream every reader has finished: the acknowledgements a
//! source that can replay (Kafka) waits for before it commits offsets.
//!
//! Each cut of a stream's inbox is numbered and carries a [`CutInFlight`],
//! shared by every query the tick hands the cut to. A query keeps its
//! share until its engine has run the batch and, when the batch produced
//! an output, until the output's consumer (the console printer, a sink's
//! writer, a library user) asks for the next one. When the last share is
//! dropped the cut is finished, and the [`CutLedger`] advances the count
//! of inbox items finished, in cut order: a later cut finishing first waits
//! for the earlier ones.
//!
//! Rows a window or running aggregate still holds in its state count as
//! finished once their batch has run: there are no checkpoints yet to keep
//! them safe across a restart.
//!
//! A cut can be held back ([`CutInFlight::hold_back`]): a sink that failed
//! to write its batch, or a query that ended on another stream's failure.
//! Nothing after such a cut ever counts as finished in this run, so a
//! source commits nothing past it and a restart reads those rows again.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The cuts of one stream still in flight, in order, and how many inbox
/// items the finished ones took.
#[derive(Debug)]
pub(crate) struct CutLedger {
    state: Mutex<LedgerState>,
    /// Inbox items whose cuts, and every cut before them, are finished.
    /// A watch, so that a committer task waits for it to move.
    items_finished: watch::Sender<u64>,
    /// Woken when `items_finished` moves, for a thread that must block (a
    /// Kafka rebalance waiting for the batches in progress).
    moved: Condvar,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// The number the next cut gets.
    next_cut: u64,
    /// The number of the first cut in `open`.
    first_open: u64,
    /// The cuts from `first_open` on that are not yet counted: per cut, the
    /// inbox items taken once it was cut, and whether it is finished.
    open: VecDeque<(u64, bool)>,
    /// The first cut held back, if one was: nothing from it on finishes.
    held_back_at: Option<u64>,
    /// Inbox items taken before and after the latest cut.
    last_cut: (u64, u64),
    /// As `CutLedger::items_finished`, under the lock the condvar needs.
    items_finished: u64,
}

impl Default for CutLedger {
    fn default() -> Self {
        Self {
            state: Mutex::new(LedgerState::default()),
            items_finished: watch::Sender::new(0),
            moved: Condvar::new(),
        }
    }
}

impl CutLedger {
    /// Records a cut that took the inbox's items up to `taken_after` (they
    /// were `taken_before` before it). Called in cut order.
    pub fn open(self: &Arc<Self>, taken_before: u64, taken_after: u64) -> Arc<CutInFlight> {
        let mut state = self.state.lock();
        let cut = state.next_cut;
        state.next_cut += 1;
        state.last_cut = (taken_before, taken_after);
        if state.held_back_at.is_none() {
            state.open.push_back((taken_after, false));
        }
        drop(state);
        Arc::new(CutInFlight {
            ledger: Arc::clone(self),
            cut,
            items_after: taken_after,
            held_back: AtomicBool::new(false),
        })
    }

    fn finish(&self, cut: u64, held_back: bool) {
        let mut state = self.state.lock();
        let Some(index) = cut.checked_sub(state.first_open) else {
            return;
        };
        if held_back {
            if state.held_back_at.is_none_or(|at| cut < at) {
                state.held_back_at = Some(cut);
            }
            // The cuts after it will never count: no need to keep them.
            state.open.truncate(index as usize);
        } else if let Some(entry) = state.open.get_mut(index as usize) {
            entry.1 = true;
        }
        let mut finished = None;
        while state.open.front().is_some_and(|(_, done)| *done) {
            finished = state.open.pop_front().map(|(items, _)| items);
            state.first_open += 1;
        }
        if let Some(items) = finished {
            state.items_finished = items;
            drop(state);
            self.items_finished.send_replace(items);
            self.moved.notify_all();
        }
    }

    /// Blocks until the cuts that took the first `items` inbox items are
    /// all finished, or `timeout` has passed; says whether they are.
    pub fn wait_finished(&self, items: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.items_finished < items {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.held_back_at.is_some() {
                return false;
            }
            self.moved.wait_for(&mut state, left);
        }
        true
    }

    /// Waits for and reads the count of inbox items whose cuts are all
    /// finished.
    pub fn watch_finished(&self) -> watch::Receiver<u64> {
        self.items_finished.subscribe()
    }

    /// Inbox items whose cuts, and all cuts before them, are finished.
    pub fn items_finished(&self) -> u64 {
        *self.items_finished.borrow()
    }

    /// Inbox items taken before and after the latest cut.
    pub fn last_cut(&self) -> (u64, u64) {
        self.state.lock().last_cut
    }

    /// Whether a cut was held back: nothing after it will finish.
    pub fn is_held_back(&self) -> bool {
        self.state.lock().held_back_at.is_some()
    }
}

/// One cut of a stream, shared by the queries working on it; when the last
/// share is dropped the cut is finished (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct CutInFlight {
    ledger: Arc<CutLedger>,
    cut: u64,
    /// The inbox items taken once this cut was made (a checkpoint records
    /// where the source stands after them).
    pub items_after: u64,
    held_back: AtomicBool,
}

impl CutInFlight {
    /// Marks the cut as not done by one of its readers: when it is dropped,
    /// it and every later cut of the stream stay unfinished.
    pub fn hold_back(&self) {
        self.held_back.store(true, Ordering::Release);
    }
}

impl Drop for CutInFlight {
    fn drop(&mut self) {
        self.ledger
            .finish(self.cut, self.held_back.load(Ordering::Acquire));
    }
}

/// The cuts a micro-batch was made of, kept until the batch is done with:
/// by the driver while the engine runs it, then with the batch's output
/// until its consumer asks for the next one.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Vec<Arc<CutInFlight>>);

impl InFlight {
    pub fn push(&mut self, cut: Arc<CutInFlight>) {
        self.0.push(cut);
    }

    /// Holds back every cut (see [`CutInFlight::hold_back`]).
    pub fn hold_back(&self) {
        for cut in &self.0 {
            cut.hold_back();
        }
    }

    /// This query is done with the cuts: each is finished once every query
    /// it went to has released it.
    pub fn release(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_count_as_finished_in_order_once_every_share_is_dropped() {
        let ledger = Arc::new(CutLedger::default());
        let first = ledger.open(0, 2);
        let first_again = Arc::clone(&first);
        let second = ledger.open(2, 5);
        drop(second);
        assert_eq!(ledger.items_finished(), 0, "waits for the first cut");
        drop(first);
        assert_eq!(ledger.items_finished(), 0, "one share is still held");
        drop(first_again);
        assert_eq!(ledger.items_finished(), 5);
        assert_eq!(ledger.last_cut(), (2, 5));
        assert!(ledger.wait_finished(5, Duration::ZERO));
        assert!(!ledger.wait_finished(6, Duration::from_millis(10)));
    }

    #[test]
    fn a_cut_held_back_stops_everything_after_it() {
        let ledger = Arc::new(CutLedger::default());
        let first = ledger.open(0, 1);
        let second = ledger.open(1, 2);
        let third = ledger.open(2, 3);
        second.hold_back();
        drop(third);
        drop(second);
        drop(first);
        assert_eq!(ledger.items_finished(), 1);
        drop(ledger.open(3, 4));
        assert_eq!(ledger.items_finished(), 1);
        assert!(ledger.is_held_back());
    }
}
