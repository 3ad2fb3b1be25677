//! The task of a `postgres-cdc` stream: the table's snapshot, then the
//! slot polled for the changes after it (see the module above).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::buffer::Buffer;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json};
use tokio_postgres::{Client, NoTls};

use super::super::Inbox;
use super::super::decode::LineDecoder;
use super::super::pgoutput::{self, Message, RelationColumn, Value, lsn_text};
use super::{CHANGES_PER_PEEK, PostgresCdcOptions, Progress, SNAPSHOT_ROWS_PER_PUSH};
use crate::changelog::{OP_COLUMN, Op};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::pg::{quote_identifier, server};
use crate::retry::Backoff;

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
pub(super) struct Reader {
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

/// What one peek read: the transaction in progress, and the lines of
/// the committed ones with each line's commit LSN.
#[derive(Default)]
struct Peeked {
    transaction: Option<Transaction>,
    chunk: Vec<u8>,
    lines_lsn: Vec<u64>,
    last_commit: Option<u64>,
}

/// A pending transaction's rows.
struct Transaction {
    xid: u32,
    rows: Vec<Map<String, Json>>,
    bad: Vec<String>,
}

impl Reader {
    pub(super) fn new(
        stream: String,
        options: PostgresCdcOptions,
        warn: WarningHandler,
        progress: Arc<Mutex<Progress>>,
        inbox: Arc<Inbox>,
        decoder: LineDecoder,
    ) -> Self {
        Self {
            stream,
            options,
            warn,
            progress,
            inbox,
            decoder,
            relations: HashMap::new(),
            visible: None,
            next_line: 1,
        }
    }

    fn context(&self) -> String {
        format!("stream '{}'", self.stream)
    }

    pub(super) async fn connect(&self) -> Result<Client> {
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
    pub(super) async fn set_up(&mut self, client: &Client) -> Result<()> {
        self.ensure_publication(client).await?;
        self.ensure_slot(client).await?;
        let resume = self.progress.lock().resume;
        if let Some(lsn) = resume {
            // The checkpoint is complete: the slot need keep nothing
            // before it.
            self.advance_to(client, lsn).await;
        }
        Ok(())
    }

    /// The publication of the table: created, or given the table back.
    async fn ensure_publication(&self, client: &Client) -> Result<()> {
        let table = &self.options.table;
        let publication = &self.options.publication;
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
        Ok(())
    }

    /// The `pgoutput` slot: created if missing.
    async fn ensure_slot(&self, client: &Client) -> Result<()> {
        let slot = &self.options.slot;
        let failed = |what: &str, err: tokio_postgres::Error| self.external(what, &err);
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
    pub(super) async fn run(mut self, mut client: Client) {
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
        let mut read = Peeked::default();
        for row in &rows {
            let data: Vec<u8> = row.get(1);
            match pgoutput::decode(&data) {
                Ok(message) => self.read(message, &mut read),
                Err(why) => {
                    let lsn: String = row.get(0);
                    self.bad_row(
                        self.next_line,
                        format!("LSN {lsn}: a change PostgreSQL sent could not be read: {why}"),
                    );
                }
            }
        }
        if let Some(lsn) = read.last_commit {
            let lines = read.lines_lsn;
            self.push_lines(read.chunk, Some(lsn), move |line| {
                format!("LSN {}", lsn_text(lines[(line - 1) as usize]))
            })
            .await?;
        }
        Ok(())
    }

    /// Takes in one message of a peek: a transaction's rows are added to
    /// `read` at its commit, unless read before or seen by the snapshot.
    fn read(&mut self, message: Message, read: &mut Peeked) {
        let transaction = read.transaction.as_mut();
        match message {
            Message::Begin { xid } => {
                read.transaction = Some(Transaction {
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
                let Some(done) = read.transaction.take() else {
                    return;
                };
                if lsn <= self.progress.lock().read_upto {
                    return;
                }
                if !self.visible.as_ref().is_some_and(|v| v.saw(done.xid)) {
                    for why in done.bad {
                        self.bad_row(self.next_line, format!("LSN {}: {why}", lsn_text(lsn)));
                    }
                    for row in done.rows {
                        read.chunk
                            .extend(serde_json::to_vec(&Json::Object(row)).unwrap_or_default());
                        read.chunk.push(b'\n');
                        read.lines_lsn.push(lsn);
                    }
                }
                self.progress.lock().read_upto = lsn;
                read.last_commit = Some(lsn);
            }
            Message::Insert { relation, new } => {
                self.change(transaction, relation, Op::Insert, &new);
            }
            Message::Update { relation, old, new } => {
                if let Some(old) = old {
                    self.change(read.transaction.as_mut(), relation, Op::Delete, &old);
                }
                self.change(read.transaction.as_mut(), relation, Op::UpdateAfter, &new);
            }
            Message::Delete { relation, old } => {
                self.change(transaction, relation, Op::Delete, &old);
            }
            Message::Other(_) => {}
        }
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
