//! The PostgreSQL sink: each batch's rows written to a table in one
//! transaction that also records `(sink, batch)` in a progress table, so a
//! batch is written whole or not at all, and a batch written before (a
//! retry after a lost connection whose commit had gone through, a replay)
//! is skipped rather than written twice.
//!
//! `append` sends the rows with binary `COPY ... FROM STDIN`, encoded
//! straight from the Arrow arrays (`copy`). `upsert` copies them into a
//! temporary table and moves them with `INSERT ... ON CONFLICT (key) DO
//! UPDATE` (the last row of a key in a batch wins). A lost connection is
//! reported and the batch retried with backoff until `reconnect_attempts`
//! is spent; then the sink stops with an error.

mod copy;
mod options;
mod table;
mod types;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use datafusion::arrow::datatypes::Schema;
use futures::SinkExt;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use self::copy::{CopyColumn, HEADER, TRAILER, stage};
use self::options::quote_identifier;
pub use self::options::{
    DEFAULT_PROGRESS_TABLE, DEFAULT_RECONNECT_ATTEMPTS, POSTGRES_SINK_OPTIONS, PostgresSinkOptions,
    UpsertMode,
};
use self::table::{create_progress_table, existing_table, match_columns};
use super::{BatchSink, SinkWrite};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::query::BatchOutput;

/// COPY data is sent in pieces of about this many bytes.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// The staging table's column holding each staged change's kind.
const STAGE_OP: &str = "brook_op";
/// PostgreSQL's `text` type.
const TEXT_OID: u32 = 25;

/// The temporary table an upsert copies a batch into.
const STAGE_TABLE: &str = "pg_temp.brook_stage";

/// Writes a query's batches to a PostgreSQL table.
pub struct PostgresSink {
    name: String,
    options: PostgresSinkOptions,
    /// The query's columns and the table columns they fill.
    columns: Vec<CopyColumn>,
    sql: Statements,
    connection: Option<Connection>,
    warn: WarningHandler,
    gave_up: bool,
    last_written: Option<u64>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The statements a sink runs, built once from the table and columns.
#[derive(Debug)]
struct Statements {
    /// `COPY table|stage (columns) FROM STDIN (FORMAT binary)`.
    copy: String,
    /// Upsert only: creates the session's staging table.
    create_stage: Option<String>,
    /// Upsert of changes only: deletes the keys whose last change in the
    /// batch is a delete.
    delete: Option<String>,
    /// Upsert only: moves the staged rows into the table.
    upsert: Option<String>,
    /// Records `(sink, batch, rows)`; affects no row if already recorded.
    record_progress: String,
}

struct Connection {
    client: Client,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresSink {
    /// Connects, creates the progress table (and with `create_table` the
    /// table) if missing, and checks that the table can take the query's
    /// columns (`schema`): each must name a table column of a type it fits,
    /// and every other column must be nullable or have a default. Nothing
    /// is written to the table here. The sink starts afresh: batches
    /// recorded by an earlier run of a sink of this name are forgotten.
    pub async fn connect(
        name: &str,
        options: PostgresSinkOptions,
        schema: &Schema,
        warn: WarningHandler,
    ) -> Result<Self> {
        Self::connect_resuming(name, options, schema, warn, None).await
    }

    /// As [`PostgresSink::connect`], for a query restored from its checkpoint
    /// after batch `resume_after`: the progress of batches up to it is kept,
    /// and that of later ones (written before a crash, but not in the
    /// restored state) is forgotten, so that the batches numbered after the
    /// checkpoint are written. With `None`, all of the sink's progress is
    /// reset (a fresh start).
    pub async fn connect_resuming(
        name: &str,
        options: PostgresSinkOptions,
        schema: &Schema,
        warn: WarningHandler,
        resume_after: Option<u64>,
    ) -> Result<Self> {
        let connection = open(&options).await.map_err(|err| {
            let server = options.server();
            external(format!("sink '{name}': cannot connect to {server}"), &err)
        })?;
        create_progress_table(&connection.client, name, &options).await?;
        // Changes upserted: `op` says what to do with the row, and is not
        // a column of the table.
        let changes = crate::changelog::is_changes(schema) && options.mode == UpsertMode::Upsert;
        let table_schema = if changes {
            Schema::new(schema.fields()[1..].to_vec())
        } else {
            schema.clone()
        };
        let table = existing_table(&connection.client, name, &options, &table_schema).await?;
        let mut columns = match_columns(name, &options, &table_schema, &table)?;
        if changes {
            for column in &mut columns {
                column.index += 1;
            }
            columns.push(CopyColumn {
                index: 0,
                name: STAGE_OP.to_string(),
                encoding: self::types::encoding_for(
                    &datafusion::arrow::datatypes::DataType::Utf8,
                    TEXT_OID,
                )
                .ok_or_else(|| BrookError::Internal("text has no COPY encoding".into()))?,
                type_name: "text".into(),
            });
        }
        let sql = statements(&options, &columns);
        let sink = Self {
            name: name.to_string(),
            options,
            columns,
            sql,
            connection: None,
            warn,
            gave_up: false,
            last_written: None,
        };
        sink.prepare_session(&connection.client)
            .await
            .map_err(|err| sink.unprepared(err))?;
        sink.forget_progress_after(&connection.client, resume_after)
            .await?;
        Ok(Self {
            connection: Some(connection),
            ..sink
        })
    }

    /// Why the session could not be prepared: for an upsert, a key the
    /// table has no unique index on, as far as the server says.
    fn unprepared(&self, err: tokio_postgres::Error) -> BrookError {
        let name = &self.name;
        match (&self.options.mode, err.as_db_error()) {
            (UpsertMode::Upsert, Some(db)) => BrookError::invalid(format!(
                "sink '{name}': upsert needs a primary key or unique index on ({}) in table {}: {}",
                self.options.key.join(", "),
                self.options.table.display,
                db.message()
            )),
            _ => external(
                format!("sink '{name}': cannot prepare its statements"),
                &err,
            ),
        }
    }

    /// Forgets the sink's progress after batch `resume_after` (all of it
    /// with `None`), so that those batches are written again.
    async fn forget_progress_after(
        &self,
        client: &Client,
        resume_after: Option<u64>,
    ) -> Result<()> {
        let progress = &self.options.progress_table.quoted;
        let after = resume_after.map_or(0, |batch| batch as i64);
        client
            .execute(
                &format!("DELETE FROM {progress} WHERE sink = $1 AND batch > $2"),
                &[&self.name, &after],
            )
            .await
            .map_err(|err| {
                let server = self.options.server();
                external(
                    format!(
                        "sink '{}': cannot reset its progress in {server}",
                        self.name
                    ),
                    &err,
                )
            })?;
        Ok(())
    }

    /// The binary COPY data this sink sends for `output`, in the pieces it
    /// sends them: what a write costs on brook's side.
    pub fn copy_data(&self, output: &BatchOutput) -> Result<Vec<Bytes>> {
        encode_batch(&self.columns, output)
    }

    /// The last batch this sink wrote and committed, if any.
    pub fn last_written(&self) -> Option<u64> {
        self.last_written
    }

    /// The session's staging table (upsert), and a check that every
    /// statement is valid against the table.
    async fn prepare_session(
        &self,
        client: &Client,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        if let Some(create_stage) = &self.sql.create_stage {
            client.batch_execute(create_stage).await?;
        }
        if let Some(upsert) = &self.sql.upsert {
            // Planning (not parsing) checks for a unique index on the key.
            client.batch_execute(&format!("EXPLAIN {upsert}")).await?;
        }
        if let Some(delete) = &self.sql.delete {
            client.batch_execute(&format!("EXPLAIN {delete}")).await?;
        }
        client.prepare(&self.sql.record_progress).await?;
        Ok(())
    }

    /// Writes `copy_data` as batch `batch` in one transaction, unless the
    /// progress table says it was written.
    async fn write_once(
        &mut self,
        batch: u64,
        rows: usize,
        copy_data: &[Bytes],
    ) -> std::result::Result<SinkWrite, tokio_postgres::Error> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let connection = open(&self.options).await?;
                self.prepare_session(&connection.client).await?;
                connection
            }
        };
        let client = &connection.client;
        let result = async {
            client.batch_execute("BEGIN").await?;
            let recorded = client
                .execute(
                    &self.sql.record_progress,
                    &[&self.name, &(batch as i64), &(rows as i64)],
                )
                .await?;
            if recorded == 0 {
                client.batch_execute("ROLLBACK").await?;
                return Ok(SinkWrite::Skipped);
            }
            let copy = client.copy_in::<_, Bytes>(&self.sql.copy).await?;
            futures::pin_mut!(copy);
            for piece in copy_data {
                copy.feed(piece.clone()).await?;
            }
            copy.as_mut().finish().await?;
            if let Some(delete) = &self.sql.delete {
                client.execute(delete, &[]).await?;
            }
            if let Some(upsert) = &self.sql.upsert {
                client.execute(upsert, &[]).await?;
            }
            client.batch_execute("COMMIT").await?;
            Ok(SinkWrite::Written)
        }
        .await;
        if result.is_err() && !client.is_closed() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        if !client.is_closed() {
            self.connection = Some(connection);
        }
        result
    }
}

#[async_trait]
impl BatchSink for PostgresSink {
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        let rows = output.rows_out();
        if rows == 0 {
            return Ok(SinkWrite::Empty);
        }
        let batch = output.batch_number;
        let copy_data = encode_batch(&self.columns, output)
            .map_err(|err| BrookError::invalid(format!("batch {batch}: {err}")))?;
        let mut attempt = 0;
        let mut backoff = crate::retry::Backoff::default();
        loop {
            attempt += 1;
            let err = match self.write_once(batch, rows, &copy_data).await {
                Ok(written) => {
                    if attempt > 1 {
                        (self.warn)(&Warning::Sink(BrookError::External {
                            context: format!("sink '{}'", self.name),
                            message: format!(
                                "reconnected to {}; batch {batch} {}",
                                self.options.server(),
                                match written {
                                    SinkWrite::Skipped =>
                                        "had been written before the connection was lost (not written again)",
                                    _ => "written",
                                }
                            ),
                        }));
                    }
                    if written == SinkWrite::Written || written == SinkWrite::Skipped {
                        self.last_written = Some(batch);
                    }
                    return Ok(written);
                }
                Err(err) => err,
            };
            if !is_retryable(&err) {
                return Err(external(
                    format!(
                        "batch {batch}: {} refused the write to table {}",
                        self.options.server(),
                        self.options.table.display
                    ),
                    &err,
                ));
            }
            self.connection = None;
            let limit = self.options.reconnect_attempts;
            if attempt >= limit {
                self.gave_up = true;
                return Err(external(
                    format!(
                        "batch {batch}: gave up after {limit} attempts to reach {}",
                        self.options.server()
                    ),
                    &err,
                ));
            }
            (self.warn)(&Warning::Sink(external(
                format!(
                    "sink '{}': batch {batch}: lost connection to {} (retrying in {} ms, attempt {} of {limit})",
                    self.name,
                    self.options.server(),
                    backoff.next_wait().as_millis(),
                    attempt + 1
                ),
                &err,
            )));
            backoff.wait().await;
        }
    }

    fn gave_up(&self) -> bool {
        self.gave_up
    }
}

/// Opens a connection and runs it in the background.
async fn open(
    options: &PostgresSinkOptions,
) -> std::result::Result<Connection, tokio_postgres::Error> {
    let (client, connection) = options.config.connect(NoTls).await?;
    let task = tokio::spawn(async move {
        // Its end (or error) shows in the client's next request.
        let _ = connection.await;
    });
    Ok(Connection { client, task })
}

/// A lost or refused connection, a server shutting down, a transaction
/// the server chose to abort: worth trying again. Anything else (a
/// constraint violated, a value too long) is the batch's or the table's.
fn is_retryable(err: &tokio_postgres::Error) -> bool {
    let Some(code) = err.code() else {
        // No SQLSTATE: the network or the connection, not the statement.
        return true;
    };
    let code = code.code();
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
}

/// An error from the server (or the connection), with brook's context.
fn external(context: String, err: &tokio_postgres::Error) -> BrookError {
    let message = match err.as_db_error() {
        Some(db) => {
            let mut message = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" (DETAIL: {detail})"));
            }
            message
        }
        None => crate::error::error_chain(err),
    };
    BrookError::External { context, message }
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_identifier(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn statements(options: &PostgresSinkOptions, columns: &[CopyColumn]) -> Statements {
    let staged: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let changes = staged.iter().any(|n| n == STAGE_OP);
    let names: Vec<String> = staged.iter().filter(|n| *n != STAGE_OP).cloned().collect();
    let column_list = quoted_list(&names);
    let table = &options.table.quoted;
    let record_progress = format!(
        "INSERT INTO {} (sink, batch, rows) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        options.progress_table.quoted
    );
    match options.mode {
        UpsertMode::Append => Statements {
            copy: format!("COPY {table} ({column_list}) FROM STDIN (FORMAT binary)"),
            create_stage: None,
            delete: None,
            upsert: None,
            record_progress,
        },
        UpsertMode::Upsert => {
            let keys = quoted_list(&options.key);
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !options.key.contains(n))
                .map(|n| format!("{0} = EXCLUDED.{0}", quote_identifier(n)))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            // The last change of a key in the batch wins.
            let (last, add_op, delete) = if changes {
                let last = format!(
                    "(SELECT DISTINCT ON ({keys}) * FROM {STAGE_TABLE} ORDER BY {keys}, brook_row DESC) AS last"
                );
                let matches: Vec<String> = options
                    .key
                    .iter()
                    .map(|k| format!("{table}.{0} = last.{0}", quote_identifier(k)))
                    .collect();
                (
                    format!("{last} WHERE {STAGE_OP} <> '-D'"),
                    format!("; ALTER TABLE {STAGE_TABLE} ADD COLUMN IF NOT EXISTS {STAGE_OP} text"),
                    Some(format!(
                        "DELETE FROM {table} USING {last} WHERE last.{STAGE_OP} = '-D' AND {}",
                        matches.join(" AND ")
                    )),
                )
            } else {
                (
                    format!(
                        "(SELECT DISTINCT ON ({keys}) * FROM {STAGE_TABLE} ORDER BY {keys}, brook_row DESC) AS last"
                    ),
                    String::new(),
                    None,
                )
            };
            Statements {
                copy: format!(
                    "COPY {STAGE_TABLE} ({}) FROM STDIN (FORMAT binary)",
                    quoted_list(&staged)
                ),
                create_stage: Some(format!(
                    "CREATE TEMP TABLE IF NOT EXISTS brook_stage ON COMMIT DELETE ROWS AS \
                     SELECT {column_list} FROM {table} WITH NO DATA; \
                     ALTER TABLE {STAGE_TABLE} ADD COLUMN IF NOT EXISTS brook_row bigint GENERATED ALWAYS AS IDENTITY{add_op}"
                )),
                delete,
                upsert: Some(format!(
                    "INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {last} \
                     ON CONFLICT ({keys}) DO {action}"
                )),
                record_progress,
            }
        }
    }
}

/// The batch's rows as binary COPY data, in pieces of about
/// [`COPY_CHUNK_BYTES`].
fn encode_batch(columns: &[CopyColumn], output: &BatchOutput) -> Result<Vec<Bytes>> {
    let mut pieces = Vec::new();
    let mut buffer = BytesMut::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
    buffer.extend_from_slice(HEADER);
    for batch in &output.batches {
        let staged = stage(batch, columns)?;
        // Rows at a time, so that a piece stays near its size.
        const ROWS: usize = 4096;
        let mut start = 0;
        while start < staged.rows() {
            let end = (start + ROWS).min(staged.rows());
            staged.encode(start, end, &mut buffer)?;
            start = end;
            if buffer.len() >= COPY_CHUNK_BYTES {
                pieces.push(buffer.split().freeze());
            }
        }
    }
    buffer.extend_from_slice(TRAILER);
    pieces.push(buffer.freeze());
    Ok(pieces)
}
