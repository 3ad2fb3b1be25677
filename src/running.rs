//! The running queries of a context: what `SHOW QUERIES` lists, and the
//! handle `STOP QUERY n` uses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::window::exec::Retained;

/// What a query has been asked to do about stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Stop after the batch in progress.
    Now,
    /// Stop after running the first batch cut at or after this instant.
    AfterBatchCutAt(Instant),
}

/// A query's progress so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Batches run.
    pub batches: u64,
    /// Rows read, over all batches.
    pub rows_in: u64,
    /// Rows produced, over all results.
    pub rows_out: u64,
    /// Execution time of the last batch.
    pub last_batch: Duration,
    /// How late the last batch started: from its tick until the query
    /// began executing it (cutting it, and waiting for the batch before).
    /// It grows while the query is slower than the batch interval.
    pub lag: Duration,
    /// What a window or running query holds now.
    pub retained: Retained,
}

/// A running query as `SHOW QUERIES` lists it.
#[derive(Debug, Clone)]
pub struct QueryInfo {
    /// The query's number within its context.
    pub id: u64,
    /// Where its results go: `console`, or `sink NAME`.
    pub output: String,
    /// Its SQL text.
    pub sql: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Its progress.
    pub stats: QueryStats,
}

/// One running query's shared record: its stats and how to stop it.
pub(crate) struct QueryEntry {
    pub id: u64,
    pub sql: String,
    pub started: DateTime<Utc>,
    pub output: Mutex<String>,
    pub stats: Mutex<QueryStats>,
    pub stop: watch::Sender<Stop>,
    /// Asks the clock for a batch at once.
    pub tick_now: Arc<Notify>,
}

impl QueryEntry {
    /// Stop after the batch in progress.
    pub fn stop(&self) {
        let _ = self.stop.send(Stop::Now);
    }

    /// Cut a batch now, run it, then end.
    pub fn finish(&self) {
        let _ = self.stop.send(Stop::AfterBatchCutAt(Instant::now()));
        self.tick_now.notify_one();
    }

    pub fn info(&self) -> QueryInfo {
        QueryInfo {
            id: self.id,
            output: lock(&self.output).clone(),
            sql: self.sql.clone(),
            started: self.started,
            stats: lock(&self.stats).clone(),
        }
    }
}

/// The running queries of a context, by id.
#[derive(Clone, Default)]
pub(crate) struct QueryRegistry {
    entries: Arc<Mutex<BTreeMap<u64, Arc<QueryEntry>>>>,
}

impl QueryRegistry {
    pub fn insert(&self, entry: Arc<QueryEntry>) {
        lock(&self.entries).insert(entry.id, entry);
    }

    pub fn remove(&self, id: u64) {
        lock(&self.entries).remove(&id);
    }

    pub fn get(&self, id: u64) -> Option<Arc<QueryEntry>> {
        lock(&self.entries).get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<QueryEntry>> {
        lock(&self.entries).values().cloned().collect()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
