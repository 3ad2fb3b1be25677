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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use super::decode::LineDecoder;
use super::pgoutput::{self, Message, RelationColumn, Value, lsn_text, parse_lsn};
use super::{Inbox, LineFormat, Source};
use crate::changelog::{OP_COLUMN, Op};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::options::{OptionReader, OptionSpec};
use crate::pg::{QualifiedName, connection_config, quote_identifier, server, table_name};
use crate::retry::Backoff;
use crate::stream::StreamLimits;

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
        let mut reader = Reader {
            stream: self.stream.clone(),
            options: self.options.clone(),
            warn: Arc::clone(&self.warn),
            progress: Arc::clone(&self.progress),
            inbox,
            decoder: LineDecoder::try_new(
                &self.stream,
                Arc::clone(&self.schema),
                LineFormat::Json,
                b',',
            )?,
            relations: HashMap::new(),
            visible: None,
            next_line: 1,
        };
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

/// Which transactions a snapshot saw: `xmin:xmax:xip,...` of
/// `pg_current_snapshot()`.
#[derive(Debug, Clone)]
struct Visible {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Visible {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?,
        };
        Some(Self {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether the snapshot saw the commit of transaction `xid` (32 bits,
    /// as `pgoutput` sends it).
    fn saw(&self, xid: u32) -> bool {
        let epoch = self.xmax >> 32;
        let mut full = (epoch << 32) | u64::from(xid);
        if full > self.xmax + (1 << 31) && full >= 1 << 32 {
            full -= 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.in_progress.contains(&full))
    }
}

/// The task that reads the table and its changes into the inbox.
struct Reader {
    stream: String,
    options: PostgresCdcOptions,
    warn: WarningHandler,
    progress: Arc<Mutex<Progress>>,
    inbox: Arc<Inbox>,
    decoder: LineDecoder,
    relations: HashMap<u32, (bool, Vec<RelationColumn>)>,
    /// The snapshot's visibility, while transactions it saw may come.
    visible: Option<Visible>,
    next_line: u64,
}

/// A pending transaction's rows.
struct Transaction {
    xid: u32,
    rows: Vec<Map<String, Json>>,
    bad: Vec<String>,
}

impl Reader {
    fn context(&self) -> String {
        format!("stream '{}'", self.stream)
    }

    async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .options
            .config
            .connect(NoTls)
            .await
            .map_err(|err| self.external("cannot connect to", &err))?;
        tokio::spawn(async move {
            // Ends when the connection does; errors show on the next query.
            let _ = connection.await;
        });
        // Values in text as brook reads them.
        client
            .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
            .await
            .map_err(|err| self.external("cannot set up the session on", &err))?;
        Ok(client)
    }

    fn external(&self, what: &str, err: &tokio_postgres::Error) -> BrookError {
        BrookError::External {
            context: format!(
                "{}: {what} {}",
                self.context(),
                server(&self.options.config)
            ),
            message: crate::error::error_chain(err),
        }
    }

    /// The publication, then the slot, if missing.
    async fn set_up(&mut self, client: &Client) -> Result<()> {
        let table = &self.options.table;
        let publication = &self.options.publication;
        let slot = &self.options.slot;
        let failed = |what: &str, err: tokio_postgres::Error| self.external(what, &err);
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await
            .map_err(|e| failed("cannot read the publications of", e))?;
        if exists.is_none() {
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_identifier(publication),
                    table.quoted
                ))
                .await
                .map_err(|e| {
                    failed(
                        &format!(
                            "cannot create publication {publication} of table {} on",
                            table.display
                        ),
                        e,
                    )
                })?;
        } else {
            // A publication that lost the table (dropped and created
            // again) gets it back; one of all tables has it.
            let publishes = client
                .query_one(
                    "SELECT p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_rel r \
                     WHERE r.prpubid = p.oid AND r.prrelid = $2::text::regclass) \
                     FROM pg_publication p WHERE p.pubname = $1",
                    &[publication, &table.quoted],
                )
                .await
                .map_err(|e| {
                    failed(
                        &format!(
                            "cannot read publication {publication} of table {} on",
                            table.display
                        ),
                        e,
                    )
                })?
                .get::<_, bool>(0);
            if !publishes {
                client
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE {}",
                        quote_identifier(publication),
                        table.quoted
                    ))
                    .await
                    .map_err(|e| {
                        failed(
                            &format!(
                                "cannot add table {} to publication {publication} on",
                                table.display
                            ),
                            e,
                        )
                    })?;
            }
        }
        let existing = client
            .query_opt(
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .map_err(|e| failed("cannot read the replication slots of", e))?;
        match existing {
            Some(row) if row.get::<_, Option<String>>(0).as_deref() != Some("pgoutput") => {
                return Err(BrookError::invalid(format!(
                    "{}: slot {slot} exists with plugin {:?}, not pgoutput; give another slot.name",
                    self.context(),
                    row.get::<_, Option<String>>(0)
                )));
            }
            Some(_) => {}
            None => {
                client
                    .query(
                        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[slot],
                    )
                    .await
                    .map_err(|e| {
                        failed(
                            "cannot create a logical replication slot (is wal_level = logical?) on",
                            e,
                        )
                    })?;
            }
        }
        let resume = self.progress.lock().resume;
        if let Some(lsn) = resume {
            // The checkpoint is complete: the slot need keep nothing
            // before it.
            self.advance_to(client, lsn).await;
        }
        Ok(())
    }

    /// The table's rows as of a snapshot, as inserts.
    async fn snapshot(&mut self, client: &Client) -> Result<()> {
        use futures::{StreamExt, pin_mut};
        let context = format!(
            "{}: cannot read table {} from {}",
            self.context(),
            self.options.table.display,
            server(&self.options.config)
        );
        let failed = |err: tokio_postgres::Error| BrookError::External {
            context: context.clone(),
            message: crate::error::error_chain(&err),
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(failed)?;
        let snapshot: String = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(failed)?
            .get(0);
        self.visible = Visible::parse(&snapshot);
        let rows = client
            .query_raw(
                &format!(
                    "SELECT row_to_json(t)::text FROM {} AS t",
                    self.options.table.quoted
                ),
                std::iter::empty::<i32>(),
            )
            .await
            .map_err(failed)?;
        pin_mut!(rows);
        let mut chunk = Vec::new();
        let mut count = 0usize;
        while let Some(row) = rows.next().await {
            let json: String = row.map_err(failed)?.get(0);
            // `{"op":"+I",` then the row's fields.
            chunk.extend_from_slice(b"{\"op\":\"+I\"");
            if json.len() > 2 {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&json.as_bytes()[1..]);
            chunk.push(b'\n');
            count += 1;
            if count.is_multiple_of(SNAPSHOT_ROWS_PER_PUSH) {
                self.push_lines(std::mem::take(&mut chunk), None, |line| {
                    format!("snapshot row {line}")
                })
                .await?;
            }
        }
        client.batch_execute("COMMIT").await.map_err(failed)?;
        self.push_lines(chunk, None, |line| format!("snapshot row {line}"))
            .await?;
        let items = self.inbox.items_pushed();
        self.progress.lock().snapshot_items = Some(items);
        Ok(())
    }

    /// Decodes `chunk`'s lines, reports bad ones (`place` words where a
    /// line came from), and pushes the rows; records `lsn` as read.
    async fn push_lines(
        &mut self,
        chunk: Vec<u8>,
        lsn: Option<u64>,
        place: impl Fn(u64) -> String,
    ) -> Result<()> {
        let first = self.next_line;
        let decoded = self.decoder.decode(&Buffer::from(chunk), first);
        self.next_line += decoded.lines;
        for bad in &decoded.bad_lines {
            self.bad_row(
                bad.line,
                format!("{}: {}", place(bad.line - first + 1), bad.message),
            );
        }
        if let Some(batch) = decoded.batch {
            self.inbox.push(batch).await?;
        }
        if let Some(lsn) = lsn {
            let items = self.inbox.items_pushed();
            let mut progress = self.progress.lock();
            progress.pushed.push_back((items, lsn));
        }
        Ok(())
    }

    fn bad_row(&self, line: u64, message: String) {
        self.inbox
            .rows_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.warn)(&Warning::SkippedRow(BrookError::BadRow {
            stream: self.stream.clone(),
            line,
            message,
        }));
    }

    /// Polls the slot until the stream is dropped, reconnecting when the
    /// connection is lost.
    async fn run(mut self, mut client: Client) {
        // Read in the task: the inbox makes room as the queries take rows.
        if self.progress.lock().resume.is_none()
            && let Err(err) = self.snapshot(&client).await
        {
            self.inbox.fail(err);
            return;
        }
        let mut backoff = Backoff::default();
        let mut reported = false;
        loop {
            match self.poll(&client).await {
                Ok(()) => {
                    if reported {
                        self.inbox.set_reconnecting(false);
                        reported = false;
                        backoff.reset();
                    }
                    tokio::time::sleep(self.options.poll_interval).await;
                }
                Err(err) if self.inbox.is_closed() => {
                    drop(err);
                    return;
                }
                Err(err) => {
                    if !reported {
                        (self.warn)(&Warning::Source(err));
                        self.inbox.set_reconnecting(true);
                        reported = true;
                    }
                    backoff.wait().await;
                    if let Ok(again) = self.connect().await {
                        client = again;
                    }
                }
            }
        }
    }

    /// Advances the slot past what is finished, then reads new changes.
    async fn poll(&mut self, client: &Client) -> Result<()> {
        if let Some(lsn) = self.finished_lsn() {
            self.advance_to(client, lsn).await;
        }
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1::text::name, NULL, $2, 'proto_version', '1', 'publication_names', $3::text)",
                &[&self.options.slot, &CHANGES_PER_PEEK, &self.options.publication],
            )
            .await
            .map_err(|err| self.external("lost the change stream of", &err))?;
        let mut transaction: Option<Transaction> = None;
        let mut chunk = Vec::new();
        let mut lines_lsn: Vec<u64> = Vec::new();
        let mut last_commit = None;
        for row in &rows {
            let data: Vec<u8> = row.get(1);
            let message = match pgoutput::decode(&data) {
                Ok(message) => message,
                Err(why) => {
                    let lsn: String = row.get(0);
                    self.bad_row(
                        self.next_line,
                        format!("LSN {lsn}: a change PostgreSQL sent could not be read: {why}"),
                    );
                    continue;
                }
            };
            match message {
                Message::Begin { xid } => {
                    transaction = Some(Transaction {
                        xid,
                        rows: Vec::new(),
                        bad: Vec::new(),
                    });
                }
                Message::Relation {
                    id,
                    namespace,
                    name,
                    columns,
                } => {
                    let ours = self.is_our_table(&namespace, &name);
                    self.relations.insert(id, (ours, columns));
                }
                Message::Commit { lsn } => {
                    let Some(done) = transaction.take() else {
                        continue;
                    };
                    if lsn <= self.progress.lock().read_upto {
                        continue;
                    }
                    let seen = self.visible.as_ref().is_some_and(|v| v.saw(done.xid));
                    if !seen {
                        for why in done.bad {
                            self.bad_row(self.next_line, format!("LSN {}: {why}", lsn_text(lsn)));
                        }
                        for row in done.rows {
                            chunk
                                .extend(serde_json::to_vec(&Json::Object(row)).unwrap_or_default());
                            chunk.push(b'\n');
                            lines_lsn.push(lsn);
                        }
                    }
                    self.progress.lock().read_upto = lsn;
                    last_commit = Some(lsn);
                }
                Message::Insert { relation, new } => {
                    self.change(transaction.as_mut(), relation, Op::Insert, &new);
                }
                Message::Update { relation, old, new } => {
                    if let Some(old) = old {
                        self.change(transaction.as_mut(), relation, Op::Delete, &old);
                    }
                    self.change(transaction.as_mut(), relation, Op::UpdateAfter, &new);
                }
                Message::Delete { relation, old } => {
                    self.change(transaction.as_mut(), relation, Op::Delete, &old);
                }
                Message::Other(_) => {}
            }
        }
        if let Some(lsn) = last_commit {
            let lines = lines_lsn;
            self.push_lines(chunk, Some(lsn), move |line| {
                format!("LSN {}", lsn_text(lines[(line - 1) as usize]))
            })
            .await?;
        }
        Ok(())
    }

    fn is_our_table(&self, namespace: &str, name: &str) -> bool {
        match self.options.table.display.split_once('.') {
            Some((schema, table)) => schema == namespace && table == name,
            None => name == self.options.table.display,
        }
    }

    /// Adds a row of `relation` to `transaction`, as change `op`.
    fn change(
        &self,
        transaction: Option<&mut Transaction>,
        relation: u32,
        op: Op,
        values: &[Value],
    ) {
        let Some(transaction) = transaction else {
            return;
        };
        let Some((ours, columns)) = self.relations.get(&relation) else {
            transaction.bad.push(format!(
                "a change of relation {relation} came before its columns"
            ));
            return;
        };
        if !ours {
            return;
        }
        let mut row = Map::with_capacity(columns.len() + 1);
        row.insert(OP_COLUMN.into(), Json::String(op.code().into()));
        for (column, value) in columns.iter().zip(values) {
            let json = match value {
                Value::Null => Json::Null,
                Value::Unchanged => {
                    if op == Op::Delete {
                        continue;
                    }
                    transaction.bad.push(format!(
                        "column '{}' holds a large (TOASTed) value PostgreSQL did not send because it did not change; give the table REPLICA IDENTITY FULL to have it sent",
                        column.name
                    ));
                    return;
                }
                Value::Text(text) => text_value(column.type_oid, text),
            };
            row.insert(column.name.clone(), json);
        }
        transaction.rows.push(row);
    }

    /// The LSN every query has finished up to (bounded, with checkpoints,
    /// by the checkpoint before the latest), if past the slot's position.
    fn finished_lsn(&self) -> Option<u64> {
        let finished = self.inbox.ledger().items_finished();
        let mut progress = self.progress.lock();
        let mut lsn = None;
        while let Some(&(items, at)) = progress.pushed.front() {
            if items > finished {
                break;
            }
            lsn = Some(at);
            progress.pushed.pop_front();
        }
        // Popped entries are gone from `position_after`'s view: keep the
        // last as the floor of what a checkpoint may record.
        if let Some(at) = lsn {
            progress.pushed.push_front((0, at));
        }
        let lsn = lsn.or(Some(progress.advanced))?;
        let bound = if progress.checkpointed {
            progress.checkpoint_lsns.1?
        } else {
            lsn
        };
        let target = lsn.min(bound);
        (target > progress.advanced).then_some(target)
    }

    /// Moves the slot to `lsn`; a failure is reported and tried again at
    /// the next poll.
    async fn advance_to(&self, client: &Client, lsn: u64) {
        let result = client
            .query(
                "SELECT pg_replication_slot_advance($1::text::name, $2::text::pg_lsn)",
                &[&self.options.slot, &lsn_text(lsn)],
            )
            .await;
        match result {
            Ok(_) => {
                let mut progress = self.progress.lock();
                progress.advanced = progress.advanced.max(lsn);
            }
            Err(err) => (self.warn)(&Warning::Source(
                self.external("cannot advance the replication slot on", &err),
            )),
        }
    }
}

/// A column's value in PostgreSQL's text format, as JSON brook's strict
/// rules read: booleans as booleans, a `timestamptz`'s `+00` offset as
/// `+00:00`, everything else as text.
fn text_value(type_oid: u32, text: &str) -> Json {
    const BOOL: u32 = 16;
    const TIMESTAMPTZ: u32 = 1184;
    match type_oid {
        BOOL => match text {
            "t" => Json::Bool(true),
            "f" => Json::Bool(false),
            other => Json::String(other.into()),
        },
        TIMESTAMPTZ => {
            let bytes = text.as_bytes();
            let n = bytes.len();
            if n > 3
                && matches!(bytes[n - 3], b'+' | b'-')
                && bytes[n - 2..].iter().all(u8::is_ascii_digit)
            {
                Json::String(format!("{text}:00"))
            } else {
                Json::String(text.into())
            }
        }
        _ => Json::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_saw_the_transactions_before_it_and_not_those_running_or_after() {
        let visible = Visible::parse("100:105:101,103").unwrap();
        assert!(visible.saw(99));
        assert!(visible.saw(100));
        assert!(!visible.saw(101));
        assert!(visible.saw(102));
        assert!(!visible.saw(103));
        assert!(visible.saw(104));
        assert!(!visible.saw(105));
        assert!(!visible.saw(200));
        // In a later epoch, a 32-bit xid is read near the snapshot's.
        let later =
            Visible::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 20)).unwrap();
        assert!(later.saw(5));
        assert!(!later.saw(25));
        assert!(later.saw(u32::MAX - 5));
        assert!(Visible::parse("nonsense").is_none());
    }

    #[test]
    fn text_values_become_what_brooks_json_rules_read() {
        assert_eq!(text_value(16, "t"), Json::Bool(true));
        assert_eq!(text_value(16, "f"), Json::Bool(false));
        assert_eq!(
            text_value(1184, "2024-01-02 10:00:00+00"),
            Json::String("2024-01-02 10:00:00+00:00".into())
        );
        assert_eq!(
            text_value(1184, "2024-01-02 10:00:00+05:30"),
            Json::String("2024-01-02 10:00:00+05:30".into())
        );
        assert_eq!(text_value(23, "17"), Json::String("17".into()));
    }
}
