//! The Delta Lake sink: each batch with rows is one Delta commit (delta-rs,
//! the `deltalake` crate), to a local directory or `s3://bucket/prefix`.
//!
//! Exactly once: every commit carries the sink's application transaction
//! (`txn`: app id `brook-sink-<name>`, version = the batch number), and a
//! batch whose number the table already has is skipped, so a batch
//! replayed after a restart (its commit made, its checkpoint not) is not
//! written twice within a run. Files written without their commit (a crash
//! between the two) are never part of the table. A restart replays the
//! batches after its checkpoint, cut afresh, so the commits of those
//! batches (made after the checkpoint, before the crash) are undone first
//! (see [`super::delta_resume`]); a fresh start (no checkpoint restored)
//! numbers its batches from 1 again, so it first commits the sink's
//! transaction back to 0.
//!
//! `mode = 'append'` adds the rows; `mode = 'upsert'` is a Delta MERGE on
//! `key`: the last row (or change) of each key in the batch wins, a `-D`
//! change of a changelog result deletes the key's row. The table is created
//! from the query's columns if it does not exist; an existing one whose
//! columns differ is refused, naming the column.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use deltalake::kernel::StructType;
use deltalake::kernel::Transaction;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};

use super::{BatchSink, SinkWrite};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::options::{OptionReader, OptionSpec};
use crate::query::BatchOutput;
use crate::storage::S3Options;

/// How the Delta sink writes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMode {
    /// Every row added.
    Append,
    /// A MERGE on the key: a key's row replaced, or deleted by a `-D`.
    Upsert,
}

/// A Delta sink's options, from `CREATE SINK ... WITH (connector = 'delta', ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSinkOptions {
    /// The table's directory: a local path or `s3://bucket/prefix`.
    pub path: String,
    /// Append or upsert.
    pub mode: DeltaMode,
    /// Upsert's key columns.
    pub key: Vec<String>,
    /// The columns a new table is partitioned by.
    pub partition_by: Vec<String>,
    /// For an `s3://` path.
    pub s3: S3Options,
}

/// The options of a Delta sink.
pub const DELTA_SINK_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'delta'",
    },
    OptionSpec {
        key: "path",
        default: None,
        help: "the table's directory: a local path or s3://bucket/prefix (required)",
    },
    OptionSpec {
        key: "mode",
        default: Some("append"),
        help: "'append' or 'upsert' (a MERGE on key)",
    },
    OptionSpec {
        key: "key",
        default: None,
        help: "upsert's key columns, comma-separated",
    },
    OptionSpec {
        key: "partition_by",
        default: None,
        help: "columns a new table is partitioned by, comma-separated",
    },
];

fn column_list(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

impl DeltaSinkOptions {
    /// Reads the options of sink `sink`.
    pub fn from_options(sink: &str, options: &[(String, String)]) -> Result<Self> {
        let specs = [DELTA_SINK_OPTIONS, crate::storage::S3_OPTIONS].concat();
        let options = OptionReader::new(format!("sink '{sink}'"), options, &specs)?;
        let path = options
            .text("path")
            .ok_or_else(|| {
                BrookError::invalid(format!(
                    "sink '{sink}': give path = 'directory' or 's3://bucket/prefix' (the Delta table)"
                ))
            })?
            .to_string();
        let mode = options
            .choice(
                "mode",
                &[("append", DeltaMode::Append), ("upsert", DeltaMode::Upsert)],
            )?
            .unwrap_or(DeltaMode::Append);
        let key = column_list(options.text("key"));
        if mode == DeltaMode::Upsert && key.is_empty() {
            return Err(options.bad("key", "is required with mode = 'upsert' (the key columns)"));
        }
        Ok(Self {
            path,
            mode,
            key,
            partition_by: column_list(options.text("partition_by")),
            s3: S3Options::read(&options)?,
        })
    }
}

/// Writes a query's batches to a Delta table.
pub struct DeltaSink {
    name: String,
    options: DeltaSinkOptions,
    /// The table, loaded; taken while a write is in progress.
    table: Option<DeltaTable>,
    /// The columns written (the query's, less a changelog's `op`), as the
    /// table holds them.
    schema: SchemaRef,
    /// The query's result is changes (`op` first).
    changes: bool,
    /// The highest batch the table holds.
    last_written: Option<u64>,
    warn: WarningHandler,
    gave_up: bool,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("name", &self.name)
            .field("path", &self.options.path)
            .finish_non_exhaustive()
    }
}

/// How many times a batch's commit is tried before the sink gives up.
const COMMIT_ATTEMPTS: u32 = 10;

impl DeltaSink {
    /// The application transaction id of sink `name`.
    pub(super) fn app_id(name: &str) -> String {
        format!("brook-sink-{name}")
    }

    /// Opens the table (creating it from `schema` if it does not exist,
    /// refusing one whose columns do not fit), and reads which batch of
    /// this sink it holds last: for a query restored from its checkpoint
    /// after batch `resumed` those are skipped when replayed; on a fresh
    /// start (`None`) the sink's transaction is reset.
    pub async fn open(
        name: &str,
        options: DeltaSinkOptions,
        schema: &SchemaRef,
        warn: WarningHandler,
        resumed: Option<u64>,
    ) -> Result<Self> {
        let changes = crate::changelog::is_changes(schema);
        let schema = table_schema(name, schema, changes)?;
        for column in options.key.iter().chain(&options.partition_by) {
            if schema.field_with_name(column).is_err() {
                return Err(BrookError::invalid(format!(
                    "sink '{name}': column '{column}' (in key or partition_by) is not in the query's result"
                )));
            }
        }
        if changes && options.mode == DeltaMode::Append {
            return Err(BrookError::invalid(format!(
                "sink '{name}': the query's result is changes (op); use mode = 'upsert' with key = ..."
            )));
        }
        let shown = options.path.clone();
        let mut table = crate::storage::delta_table::open(&options.path, &options.s3, true)
            .await
            .map_err(|err| BrookError::external(format!("sink '{name}'"), err))?;
        if crate::storage::delta_table::load(&mut table, &shown).await? {
            check_fits(name, &table, &schema, &options)?;
        } else {
            let delta_schema: StructType = schema.as_ref().try_into_kernel().map_err(|err| {
                BrookError::invalid(format!(
                    "sink '{name}': a Delta table cannot hold the query's columns: {err}"
                ))
            })?;
            table = table
                .create()
                .with_columns(delta_schema.fields().cloned())
                .with_partition_columns(options.partition_by.clone())
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(|err| {
                    BrookError::external(
                        format!("sink '{name}': cannot create Delta table {shown}"),
                        err.to_string(),
                    )
                })?;
            check_fits(name, &table, &schema, &options)?;
        }
        let mut last_written = written_batch(&table, name).await?;
        match resumed {
            None if last_written.is_some_and(|batch| batch > 0) => {
                super::delta_resume::reset(&mut table, &Self::app_id(name)).await?;
                last_written = Some(0);
            }
            Some(resumed) if last_written.is_some_and(|batch| batch > resumed) => {
                table =
                    super::delta_resume::undo_after(table, &Self::app_id(name), resumed).await?;
                last_written = Some(resumed);
            }
            _ => {}
        }
        Ok(Self {
            name: name.to_string(),
            options,
            table: Some(table),
            schema,
            changes,
            last_written,
            warn,
            gave_up: false,
        })
    }

    /// The last batch the table holds of this sink.
    pub fn last_written(&self) -> Option<u64> {
        self.last_written
    }

    /// One attempt: reloads the table, skips a batch it holds, else
    /// commits the batch with its transaction.
    async fn write_once(
        &mut self,
        batch: u64,
        rows: &RecordBatch,
        delete: &BooleanArray,
    ) -> Result<SinkWrite> {
        let mut table = match self.table.take() {
            Some(table) => table,
            None => {
                crate::storage::delta_table::open(&self.options.path, &self.options.s3, true)
                    .await?
            }
        };
        let outcome = self.commit(&mut table, batch, rows, delete).await;
        self.table = Some(table);
        outcome
    }

    async fn commit(
        &mut self,
        table: &mut DeltaTable,
        batch: u64,
        rows: &RecordBatch,
        delete: &BooleanArray,
    ) -> Result<SinkWrite> {
        let failed =
            |err: DeltaTableError| BrookError::external(format!("batch {batch}"), err.to_string());
        table.update_state().await.map_err(failed)?;
        if written_batch(table, &self.name)
            .await?
            .is_some_and(|written| written >= batch)
        {
            self.last_written = Some(batch.max(self.last_written.unwrap_or(0)));
            return Ok(SinkWrite::Skipped);
        }
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(Self::app_id(&self.name), batch as i64));
        let written = match self.options.mode {
            DeltaMode::Append => table
                .clone()
                .write(vec![rows.clone()])
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(properties)
                .await
                .map_err(failed)?,
            DeltaMode::Upsert => super::delta_merge::merge(
                table.clone(),
                rows,
                delete,
                &self.options.key,
                properties,
            )
            .await
            .map_err(failed)?,
        };
        *table = written;
        self.last_written = Some(batch);
        Ok(SinkWrite::Written)
    }
}

#[async_trait]
impl BatchSink for DeltaSink {
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        let batch = output.batch_number;
        if output.rows_out() == 0 {
            return Ok(SinkWrite::Empty);
        }
        if self.last_written.is_some_and(|written| written >= batch) {
            return Ok(SinkWrite::Skipped);
        }
        let (rows, delete) = rows_to_write(output, &self.schema, self.changes, &self.options)?;
        let mut backoff = crate::retry::Backoff::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.write_once(batch, &rows, &delete).await {
                Ok(written) => {
                    if attempt > 1 {
                        self.report(format!("batch {batch} committed (attempt {attempt})"));
                    }
                    return Ok(written);
                }
                Err(err) => err,
            };
            if err.is_user_error() {
                return Err(err);
            }
            if attempt >= COMMIT_ATTEMPTS {
                self.gave_up = true;
                return Err(BrookError::external(
                    format!(
                        "batch {batch}: gave up after {attempt} attempts to commit to Delta table {}",
                        self.options.path
                    ),
                    err,
                ));
            }
            self.report(format!(
                "batch {batch}: cannot commit to Delta table {} (retrying in {} ms, attempt {} of {COMMIT_ATTEMPTS}): {err}",
                self.options.path,
                backoff.next_wait().as_millis(),
                attempt + 1
            ));
            backoff.wait().await;
        }
    }

    fn gave_up(&self) -> bool {
        self.gave_up
    }
}

impl DeltaSink {
    fn report(&self, message: String) {
        (self.warn)(&Warning::Sink(BrookError::external(
            format!("sink '{}'", self.name),
            message,
        )));
    }
}

/// The highest batch of sink `name` that `table` holds.
async fn written_batch(table: &DeltaTable, name: &str) -> Result<Option<u64>> {
    let snapshot = table
        .snapshot()
        .map_err(|err| BrookError::external(format!("sink '{name}'"), err.to_string()))?;
    let version = snapshot
        .transaction_version(table.log_store().as_ref(), DeltaSink::app_id(name))
        .await
        .map_err(|err| BrookError::external(format!("sink '{name}'"), err.to_string()))?;
    Ok(version.and_then(|v| u64::try_from(v).ok()))
}

/// The columns the table holds: the query's less `op`, strings as Utf8,
/// timestamps in microseconds (Delta's precision; a value with
/// nanoseconds is refused when written, never cut).
fn table_schema(name: &str, schema: &SchemaRef, changes: bool) -> Result<SchemaRef> {
    let fields = schema
        .fields()
        .iter()
        .skip(usize::from(changes))
        .map(|field| {
            let data_type = match field.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                DataType::Timestamp(_, zone) => {
                    DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
                }
                other => other.clone(),
            };
            if matches!(
                data_type,
                DataType::UInt64
                    | DataType::Time32(_)
                    | DataType::Time64(_)
                    | DataType::Interval(_)
                    | DataType::Duration(_)
            ) {
                return Err(BrookError::invalid(format!(
                    "sink '{name}': column '{}' is {}, which a Delta table cannot hold; cast it",
                    field.name(),
                    field.data_type()
                )));
            }
            Ok(Field::new(field.name(), data_type, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Refuses a table whose columns are not the query's (by name and type)
/// or whose partitioning differs.
fn check_fits(
    name: &str,
    table: &DeltaTable,
    schema: &SchemaRef,
    options: &DeltaSinkOptions,
) -> Result<()> {
    let snapshot = table
        .snapshot()
        .map_err(|err| BrookError::external(format!("sink '{name}'"), err.to_string()))?;
    let existing = snapshot.snapshot().arrow_schema();
    let shown = &options.path;
    for field in schema.fields() {
        let Ok(found) = existing.field_with_name(field.name()) else {
            return Err(BrookError::invalid(format!(
                "sink '{name}': Delta table {shown} has no column '{}' (its columns: {})",
                field.name(),
                names(&existing)
            )));
        };
        if found.data_type() != field.data_type() {
            return Err(BrookError::invalid(format!(
                "sink '{name}': column '{}' is {} in Delta table {shown}, but the query gives {}",
                field.name(),
                found.data_type(),
                field.data_type()
            )));
        }
    }
    if let Some(extra) = existing
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(BrookError::invalid(format!(
            "sink '{name}': Delta table {shown} has column '{}', which the query does not give",
            extra.name()
        )));
    }
    let partitions = snapshot.metadata().partition_columns();
    if !options.partition_by.is_empty() && *partitions != options.partition_by {
        return Err(BrookError::invalid(format!(
            "sink '{name}': Delta table {shown} is partitioned by ({}), not ({})",
            partitions.join(", "),
            options.partition_by.join(", ")
        )));
    }
    Ok(())
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch's rows in the table's columns, and which of them are deletes:
/// for upsert, only the last row (or change) of each key, in the order
/// they came.
fn rows_to_write(
    output: &BatchOutput,
    schema: &SchemaRef,
    changes: bool,
    options: &DeltaSinkOptions,
) -> Result<(RecordBatch, BooleanArray)> {
    let batch = output.batch_number;
    let all = concat_batches(&output.schema, &output.batches)?;
    let skip = usize::from(changes);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(all.columns().iter().skip(skip)) {
        columns.push(to_table_type(batch, field, column)?);
    }
    let rows = RecordBatch::try_new(Arc::clone(schema), columns)?;
    let delete: BooleanArray = if changes {
        let ops = cast(all.column(0), &DataType::Utf8)?;
        ops.as_string::<i32>()
            .iter()
            .map(|op| Some(op == Some("-D")))
            .collect()
    } else {
        BooleanArray::from(vec![false; rows.num_rows()])
    };
    if options.mode == DeltaMode::Append {
        return Ok((rows, delete));
    }
    // The last row of each key wins.
    let keys: Vec<ArrayRef> = options
        .key
        .iter()
        .map(|k| rows.column_by_name(k).map(Arc::clone))
        .collect::<Option<_>>()
        .ok_or_else(|| BrookError::Internal("a key column went missing".into()))?;
    let converter = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )?;
    let key_rows = converter.convert_columns(&keys)?;
    let mut last: HashMap<datafusion::arrow::row::Row<'_>, u32> =
        HashMap::with_capacity(rows.num_rows());
    for index in 0..rows.num_rows() {
        last.insert(key_rows.row(index), index as u32);
    }
    let mut kept: Vec<u32> = last.into_values().collect();
    kept.sort_unstable();
    let kept = UInt32Array::from(kept);
    let taken = rows
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &kept, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let delete = take(&delete, &kept, None)?.as_boolean().clone();
    Ok((RecordBatch::try_new(Arc::clone(schema), taken)?, delete))
}

/// `column` cast to the table's type `field`: strictly (a timestamp with
/// nanoseconds is refused, naming the value's row).
fn to_table_type(batch: u64, field: &Field, column: &ArrayRef) -> Result<ArrayRef> {
    if column.data_type() == field.data_type() {
        return Ok(Arc::clone(column));
    }
    if let (
        DataType::Timestamp(TimeUnit::Nanosecond, _),
        DataType::Timestamp(TimeUnit::Microsecond, _),
    ) = (column.data_type(), field.data_type())
    {
        let nanos = column.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
        if let Some(row) =
            (0..nanos.len()).find(|&i| nanos.is_valid(i) && nanos.value(i) % 1000 != 0)
        {
            return Err(BrookError::invalid(format!(
                "batch {batch}: column '{}' row {}: {} has nanoseconds, which a Delta timestamp (microseconds) cannot hold; round it (date_trunc('microsecond', ...))",
                field.name(),
                row + 1,
                datafusion::arrow::util::display::array_value_to_string(column, row)
                    .unwrap_or_default()
            )));
        }
    }
    Ok(cast(column, field.data_type())?)
}
