//! A registered stream at run time: its schema, its source, the inbox where
//! rows wait to be read, the batch being filled, and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::datatypes::SchemaRef;

use super::feed::{Feed, FeedReader};
use super::{Inbox, Source, StreamLimits};
use crate::error::Result;

/// A registered stream, as `SHOW STREAMS`, `brook.streams` and `\\d NAME`
/// show it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// `queue` or `socket`.
    pub connector: String,
    /// The stream's columns.
    pub schema: SchemaRef,
    /// The connector's options as a user would write them.
    pub options: String,
    /// `idle` (no query reads it), `running`, `reconnecting` (a socket
    /// with `reconnect` that lost its peer, or never reached it, and tries
    /// again), `closed` (its source ended) or `failed` (see `failure`).
    pub state: String,
    /// Why the stream failed, when it did.
    pub failure: Option<String>,
    /// Rows received since the stream started.
    pub rows_received: u64,
    /// Rows dropped (malformed, too long, cut off), each reported.
    pub rows_dropped: u64,
    /// Rows received and not yet cut into a batch.
    pub rows_pending: u64,
    /// The most rows waiting for a batch at any time.
    pub peak_pending_rows: u64,
    /// The most bytes of Arrow memory waiting for a batch at any time.
    pub peak_pending_bytes: u64,
    /// The bounds on what waits for a batch.
    pub limits: StreamLimits,
}

impl StreamInfo {
    /// The columns as `name TYPE, ...`, with SQL type names (`word TEXT`).
    pub fn columns(&self) -> String {
        crate::sql::column_list(&self.schema)
    }
}

/// A stream registered in a [`crate::StreamContext`].
#[derive(Debug)]
pub(crate) struct LiveStream {
    pub name: String,
    pub schema: SchemaRef,
    pub source: Arc<dyn Source>,
    pub inbox: Arc<Inbox>,
    /// Set once the source has been started by the first query that reads it.
    pub started: AtomicBool,
    /// The stream's event-time column and watermark, when declared; set
    /// once, before a query reads the stream.
    pub event_time: std::sync::OnceLock<crate::event_time::EventTime>,
    /// Set when the stream's rows are changes to a keyed table; set once,
    /// before a query reads the stream.
    pub changelog: std::sync::OnceLock<crate::changelog::Changelog>,
    /// Fed by a query (late rows), which closes it when it ends: not closed
    /// with the queues at the end of a script.
    pub fed_by_query: AtomicBool,
    /// The batch being filled, once a query reads the stream.
    feed: parking_lot::Mutex<Option<Arc<Feed>>>,
}

impl LiveStream {
    pub fn new(
        name: String,
        schema: SchemaRef,
        source: Arc<dyn Source>,
        limits: StreamLimits,
    ) -> Self {
        let inbox = Arc::new(Inbox::new(name.clone(), limits));
        Self {
            name,
            schema,
            source,
            inbox,
            started: AtomicBool::new(false),
            event_time: std::sync::OnceLock::new(),
            changelog: std::sync::OnceLock::new(),
            fed_by_query: AtomicBool::new(false),
            feed: parking_lot::Mutex::new(None),
        }
    }

    /// The stream's event-time declaration, if any.
    pub fn event_time(&self) -> Option<crate::event_time::EventTime> {
        self.event_time.get().cloned()
    }

    /// The stream's changelog declaration, if its rows are changes.
    pub fn changelog(&self) -> Option<&crate::changelog::Changelog> {
        self.changelog.get()
    }

    /// Starts the source if no query has started it yet.
    pub async fn ensure_started(&self) -> Result<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.source.start(Arc::clone(&self.inbox)).await;
        if result.is_err() {
            self.started.store(false, Ordering::SeqCst);
        }
        result
    }

    /// What `SHOW STREAMS` shows of the stream; `read` says whether a
    /// running query reads it.
    pub fn info(&self, read: bool) -> StreamInfo {
        let inbox = &self.inbox;
        let failure = inbox.failure().map(|err| crate::error::error_chain(&*err));
        StreamInfo {
            name: self.name.clone(),
            connector: self.source.connector().to_string(),
            schema: Arc::clone(&self.schema),
            options: {
                let mut options = self.source.describe();
                if let Some(event_time) = self.event_time.get() {
                    options = format!("{options}, {}", event_time.describe());
                }
                if let Some(changelog) = self.changelog.get() {
                    options = format!("{options}, {}", changelog.describe());
                }
                options
            },
            state: if failure.is_some() {
                "failed"
            } else if inbox.is_closed() {
                "closed"
            } else if inbox.is_reconnecting() {
                "reconnecting"
            } else if read {
                "running"
            } else {
                "idle"
            }
            .to_string(),
            failure,
            rows_received: inbox.rows_received.load(Ordering::Relaxed),
            rows_dropped: inbox.rows_dropped.load(Ordering::Relaxed),
            rows_pending: inbox.pending_rows() as u64,
            peak_pending_rows: inbox.peak_pending_rows.load(Ordering::Relaxed),
            peak_pending_bytes: inbox.peak_pending_bytes.load(Ordering::Relaxed),
            limits: inbox.limits(),
        }
    }

    /// A reader of the batch being filled, for a query that starts reading
    /// the stream now (the batch opens if none is).
    pub fn join_feed(&self) -> Arc<FeedReader> {
        let mut current = self.feed.lock();
        if let Some(feed) = current.as_ref()
            && !feed.has_readers()
        {
            // Left by queries that ended: its rows were theirs. A new batch
            // starts for the new query.
            feed.cut(chrono::Utc::now(), tokio::time::Instant::now());
            *current = None;
        }
        match current.as_ref() {
            Some(feed) => feed.join(),
            None => {
                let feed = Feed::open(
                    &self.inbox,
                    &self.schema,
                    self.source.one_item_per_batch(),
                    1,
                    true,
                );
                let reader = feed.reader(0);
                *current = Some(feed);
                reader
            }
        }
    }

    /// The tick: cuts the batch being filled and opens the next one, with
    /// `readers` readers.
    pub fn next_feed(
        &self,
        time: chrono::DateTime<chrono::Utc>,
        instant: tokio::time::Instant,
        readers: usize,
    ) -> Arc<Feed> {
        let mut current = self.feed.lock();
        if let Some(feed) = current.as_ref() {
            feed.cut(time, instant);
        }
        let feed = Feed::open(
            &self.inbox,
            &self.schema,
            self.source.one_item_per_batch(),
            readers,
            false,
        );
        *current = Some(Arc::clone(&feed));
        feed
    }
}
