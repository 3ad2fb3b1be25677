//! PostgreSQL's own change log as a stream (`connector = 'postgres-cdc'`):
//! one table's inserts, updates and deletes, read through logical
//! replication, after a consistent snapshot of the rows it already has.
//!
//! brook polls a replication slot with SQL over an ordinary connection
//! (`pg_logical_slot_peek_binary_changes` with the `pgoutput` plugin), so
//! no replication-protocol client is needed. At start it makes sure of a
//! publication of the table and a slot (publication first: `pgoutput`
//! decodes only changes made after its publication exists), then reads
//! the table in a `REPEATABLE READ` snapshot. A transaction the slot
//! holds whose changes that snapshot already saw (its id is visible in
//! `pg_current_snapshot()`) is skipped, so snapshot and changes meet
//! exactly, without a replication connection's exported snapshot.
//!
//! The slot is advanced (`pg_replication_slot_advance`) only past
//! transactions whose batches every query has finished; for a query
//! keeping checkpoints, only to the position of the checkpoint before the
//! latest one written, so that whichever checkpoint a restart finds, the
//! slot still holds every change after it. Peeking does not consume: a
//! change read but not yet advanced past is skipped by its commit LSN.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::decode::LineDecoder;
use super::pgoutput::{lsn_text, parse_lsn};
use super::{Inbox, LineFormat, Source};
use crate::error::{BrookError, Result, WarningHandler};
use crate::options::{OptionReader, OptionSpec};
use crate::pg::{QualifiedName, connection_config, server, table_name};
use crate::stream::StreamLimits;
use reader::Reader;

mod reader;

/// Changes one peek reads at most (whole transactions: a larger one is
/// read whole).
const CHANGES_PER_PEEK: i32 = 100_000;
/// Snapshot rows per batch pushed.
const SNAPSHOT_ROWS_PER_PUSH: usize = 10_000;

/// The options of a `postgres-cdc` stream.
pub const POSTGRES_CDC_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'postgres-cdc'",
    },
    OptionSpec {
        key: "url",
        default: None,
        help: "postgres://user:password@host:port/database (required; the server needs wal_level = logical; the password is never shown)",
    },
    OptionSpec {
        key: "table",
        default: None,
        help: "the table whose changes are read: name or schema.name (required)",
    },
    OptionSpec {
        key: "slot.name",
        default: Some("brook_STREAM"),
        help: "the logical replication slot (pgoutput), created if missing; it holds WAL until brook has read it: drop it (pg_drop_replication_slot) when the stream is gone for good",
    },
    OptionSpec {
        key: "publication.name",
        default: Some("brook_STREAM"),
        help: "the publication of the table, created if missing",
    },
    OptionSpec {
        key: "poll_interval",
        default: Some("100ms"),
        help: "how often the slot is asked for new changes",
    },
    super::line_options::LIMIT_OPTIONS[0],
    super::line_options::LIMIT_OPTIONS[1],
    super::line_options::LIMIT_OPTIONS[2],
];

/// A `postgres-cdc` stream's options.
#[derive(Debug, Clone)]
pub struct PostgresCdcOptions {
    config: tokio_postgres::Config,
    table: QualifiedName,
    slot: String,
    publication: String,
    poll_interval: Duration,
    /// The stream's bounds.
    pub limits: StreamLimits,
}

impl PostgresCdcOptions {
    pub(crate) fn read(stream: &str, options: &[(String, String)]) -> Result<Self> {
        let owner = format!("stream '{stream}'");
        let options = OptionReader::new(owner.clone(), options, POSTGRES_CDC_OPTIONS)?;
        let bad = |message: String| BrookError::invalid(format!("{owner}: {message}"));
        let config = connection_config(&options, &bad, format!("brook cdc {stream}"))?;
        let table = table_name(&options, "table", None, &bad)?;
        let name = |key: &str| -> Result<String> {
            let value = options
                .text(key)
                .map(str::to_string)
                .unwrap_or_else(|| format!("brook_{stream}"));
            if value.is_empty()
                || value.len() > 63
                || !value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(options.bad(
                    key,
                    format_args!("'{value}' must be lower-case letters, digits and _ (at most 63)"),
                ));
            }
            Ok(value)
        };
        let poll_interval = match options.text("poll_interval") {
            None => Duration::from_millis(100),
            Some(text) => {
                crate::sql::parse_delay(text).map_err(|err| options.bad("poll_interval", err))?
            }
        };
        Ok(Self {
            config,
            table,
            slot: name("slot.name")?,
            publication: name("publication.name")?,
            poll_interval,
            limits: super::line_options::read_limits(&options)?,
        })
    }
}

/// Where the stream stands: what was pushed, up to which commit, and what
/// the slot may be advanced to.
#[derive(Debug, Default)]
struct Progress {
    /// Per push of changes: the inbox items pushed after it, and the LSN
    /// of the last commit it holds.
    pushed: VecDeque<(u64, u64)>,
    /// The inbox items pushed once the snapshot was read whole.
    snapshot_items: Option<u64>,
    /// The last commit read (skipped or pushed).
    read_upto: u64,
    /// The commit a checkpoint resumes after.
    resume: Option<u64>,
    /// Read by a query keeping checkpoints.
    checkpointed: bool,
    /// The position the latest checkpoint recorded, and the one before.
    checkpoint_lsns: (Option<u64>, Option<u64>),
    /// The slot has been advanced to this LSN.
    advanced: u64,
}

/// A `postgres-cdc` stream.
pub(crate) struct PostgresCdcSource {
    stream: String,
    schema: SchemaRef,
    options: PostgresCdcOptions,
    warn: WarningHandler,
    progress: Arc<Mutex<Progress>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresCdcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource")
            .field("stream", &self.stream)
            .field("table", &self.options.table.display)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresCdcSource {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

impl PostgresCdcSource {
    /// A source of `schema` (the changelog's: `op`, then the declared
    /// columns).
    pub fn try_new(
        stream: String,
        options: PostgresCdcOptions,
        schema: SchemaRef,
        warn: WarningHandler,
    ) -> Result<Self> {
        // The columns must be readable from text: checked here.
        LineDecoder::try_new(&stream, Arc::clone(&schema), LineFormat::Json, b',')?;
        Ok(Self {
            stream,
            schema,
            options,
            warn,
            progress: Arc::default(),
            task: Mutex::new(None),
        })
    }
}

#[async_trait]
impl Source for PostgresCdcSource {
    fn connector(&self) -> &'static str {
        "postgres-cdc"
    }

    fn describe(&self) -> String {
        format!(
            "{}, table {}, slot {}, publication {}",
            server(&self.options.config),
            self.options.table.display,
            self.options.slot,
            self.options.publication
        )
    }

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        let mut reader = Reader::new(
            self.stream.clone(),
            self.options.clone(),
            Arc::clone(&self.warn),
            Arc::clone(&self.progress),
            inbox,
            LineDecoder::try_new(
                &self.stream,
                Arc::clone(&self.schema),
                LineFormat::Json,
                b',',
            )?,
        );
        // The first connection and set-up fail the start (a wrong URL, a
        // server without logical replication); later losses reconnect.
        let client = reader.connect().await?;
        reader.set_up(&client).await?;
        let task = tokio::spawn(async move { reader.run(client).await });
        *self.task.lock() = Some(task);
        Ok(())
    }

    fn position_after(&self, items: u64) -> Option<serde_json::Value> {
        let mut progress = self.progress.lock();
        let snapshot_read =
            progress.snapshot_items.is_some_and(|done| done <= items) || progress.resume.is_some();
        let lsn = progress
            .pushed
            .iter()
            .take_while(|(after, _)| *after <= items)
            .map(|(_, lsn)| *lsn)
            .max()
            .or(progress.resume)
            .filter(|_| snapshot_read);
        // The checkpoint before this one is complete: the slot may move to it.
        progress.checkpoint_lsns = (lsn, progress.checkpoint_lsns.0);
        Some(serde_json::json!({
            "slot": self.options.slot,
            "lsn": lsn.map(lsn_text),
        }))
    }

    fn checkpointed_as(&self, _identity: &str) {
        self.progress.lock().checkpointed = true;
    }

    fn resume_from(&self, position: &serde_json::Value) -> Result<()> {
        if position["slot"].as_str() != Some(self.options.slot.as_str()) {
            return Err(BrookError::invalid(format!(
                "stream '{}': the checkpoint was taken reading slot {}, not '{}'; remove the query's checkpoint directory to start afresh",
                self.stream, position["slot"], self.options.slot
            )));
        }
        // A checkpoint taken before the snapshot was read whole holds no
        // position: the snapshot is read again.
        if let Some(lsn) = position["lsn"].as_str() {
            let lsn = parse_lsn(lsn).ok_or_else(|| {
                BrookError::invalid(format!(
                    "stream '{}': the checkpoint's position {position} is not an LSN",
                    self.stream
                ))
            })?;
            let mut progress = self.progress.lock();
            progress.resume = Some(lsn);
            progress.read_upto = lsn;
        }
        Ok(())
    }
}
