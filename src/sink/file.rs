//! File sinks: each batch's result written with arrow-csv, arrow-json or
//! Parquet's `ArrowWriter`, with the batch number and time as the first two
//! columns.
//!
//! One file per batch (the default): written under a temporary name in the
//! same directory, synced and renamed when complete, so a reader never sees
//! a half-written file. Or `mode = 'append'` (CSV and JSON): every batch
//! appended to one file, flushed after each batch.
//!
//! The directory may be `s3://bucket/prefix/` (per batch only: an object
//! cannot be appended to): each batch's file is encoded in memory and
//! written by one PUT, so it appears whole or not at all. A failed request
//! is tried again with backoff and reported (see
//! [`FileSink::write_object`]).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use super::SinkWrite;
use super::console::with_batch_columns;
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::options::OptionReader;
use crate::options::OptionSpec;
use crate::query::BatchOutput;
use crate::storage::ObjectDir;

/// How a file sink encodes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
    /// Parquet, one file per batch (a Parquet file cannot be appended to).
    Parquet,
    /// Newline-delimited JSON, each row in Debezium's envelope (changes
    /// as `c`, `u`, `d`).
    DebeziumJson,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json | FileFormat::DebeziumJson => "json",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Where a file sink's batches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// One file per batch with rows, in the directory `path`.
    PerBatch,
    /// Every batch appended to the file `path`.
    Append,
}

/// A file sink's options, from `CREATE SINK ... WITH (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkOptions {
    /// A directory (one file per batch) or a file (append).
    pub path: PathBuf,
    /// CSV, JSON or Parquet.
    pub format: FileFormat,
    /// One file per batch, or one file.
    pub mode: FileMode,
    /// For an `s3://` path: the endpoint, region and keys given.
    pub s3: crate::storage::S3Options,
}

impl FileSinkOptions {
    /// Reads `connector = 'file', path = '...', format = 'csv' | 'json' | 'parquet'`,
    /// `mode = 'per_batch' | 'append'` (keys lower-cased).
    pub fn from_options(sink: &str, options: &[(String, String)]) -> Result<Self> {
        let bad = |message: String| BrookError::invalid(format!("sink '{sink}': {message}"));
        let specs = [FILE_SINK_OPTIONS, crate::storage::S3_OPTIONS].concat();
        let options = OptionReader::new(format!("sink '{sink}'"), options, &specs)?;
        match options
            .text("connector")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("file") => {}
            Some(other) => return Err(bad(format!("unknown connector '{other}' (sinks: 'file')"))),
            None => return Err(bad("give connector = 'file'".into())),
        }
        let path = options.text("path").map(PathBuf::from).ok_or_else(|| {
            bad("give path = 'directory/' (or a file with mode = 'append')".into())
        })?;
        let format = match options
            .text("format")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("csv") => FileFormat::Csv,
            Some("json") => FileFormat::Json,
            Some("parquet") => FileFormat::Parquet,
            Some("debezium-json") => FileFormat::DebeziumJson,
            Some(other) => {
                return Err(bad(format!(
                    "format is 'csv', 'json', 'debezium-json' or 'parquet', not '{other}'"
                )));
            }
        };
        let mode = match options.text("mode").map(str::to_ascii_lowercase).as_deref() {
            None | Some("per_batch" | "file_per_batch") => FileMode::PerBatch,
            Some("append") => FileMode::Append,
            Some(other) => {
                return Err(bad(format!(
                    "mode is 'per_batch' or 'append', not '{other}'"
                )));
            }
        };
        if format == FileFormat::Parquet && mode == FileMode::Append {
            return Err(bad(
                "format 'parquet' writes one file per batch: a Parquet file ends with its footer and cannot be appended to; leave out mode = 'append' (path is then a directory)"
                    .into(),
            ));
        }
        let s3 = crate::storage::S3Options::read(&options)?;
        if crate::storage::is_object_url(&path.to_string_lossy()) && mode == FileMode::Append {
            return Err(bad(
                "an object in S3 cannot be appended to: leave out mode = 'append' (one object per batch)"
                    .into(),
            ));
        }
        Ok(Self {
            path,
            format,
            mode,
            s3,
        })
    }
}

/// The options of a file sink.
pub const FILE_SINK_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'file'",
    },
    OptionSpec {
        key: "path",
        default: None,
        help: "a directory (one file per batch) or, with mode = 'append', a file (required)",
    },
    OptionSpec {
        key: "format",
        default: Some("csv"),
        help: "'csv', 'json' (newline-delimited) or 'parquet' (per_batch only)",
    },
    OptionSpec {
        key: "mode",
        default: Some("per_batch"),
        help: "'per_batch' (one file per batch) or 'append' (one file)",
    },
];

/// Writes a query's batches to files.
pub struct FileSink {
    name: String,
    options: FileSinkOptions,
    /// Append mode: the open file, and whether the CSV header is written.
    appending: Option<(BufWriter<File>, bool)>,
    /// For an `s3://` path, the bucket and prefix written to.
    object: Option<ObjectDir>,
    /// Where retried writes are reported.
    warn: Option<WarningHandler>,
    /// Set once a write failed every attempt.
    gave_up: bool,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

/// How many times a batch's object is tried before the sink gives up
/// (each try is itself retried by the S3 client for up to 20 s).
const OBJECT_WRITE_ATTEMPTS: u32 = 10;

impl FileSink {
    /// Creates the directory (or the appended file's directory) and, in
    /// append mode, opens the file.
    pub fn create(name: &str, options: FileSinkOptions) -> Result<Self> {
        let io_error = |what: &str, path: &Path, err: std::io::Error| {
            BrookError::io(
                format!("sink '{name}': cannot {what} {}", path.display()),
                err,
            )
        };
        let path = options.path.to_string_lossy().into_owned();
        if crate::storage::is_object_url(&path) {
            let dir = ObjectDir::open(&path, &options.s3)
                .map_err(|err| BrookError::invalid(format!("sink '{name}': {err}")))?;
            dir.check_blocking()
                .map_err(|err| BrookError::external(format!("sink '{name}'"), err))?;
            return Ok(Self {
                name: name.to_string(),
                options,
                appending: None,
                object: Some(dir),
                warn: None,
                gave_up: false,
            });
        }
        let appending = match options.mode {
            FileMode::PerBatch => {
                std::fs::create_dir_all(&options.path)
                    .map_err(|e| io_error("create directory", &options.path, e))?;
                None
            }
            FileMode::Append => {
                if let Some(parent) = options.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| io_error("create directory", parent, e))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&options.path)
                    .map_err(|e| io_error("open", &options.path, e))?;
                let has_content = file.metadata().map(|m| m.len() > 0).unwrap_or(false);
                Some((BufWriter::new(file), has_content))
            }
        };
        Ok(Self {
            name: name.to_string(),
            options,
            appending,
            object: None,
            warn: None,
            gave_up: false,
        })
    }

    /// Reports retried writes to `warn`.
    pub fn with_warning_handler(mut self, warn: WarningHandler) -> Self {
        self.warn = Some(warn);
        self
    }

    /// Whether the sink writes to an object store (asynchronously, see
    /// [`FileSink::write_object`]).
    pub(crate) fn writes_objects(&self) -> bool {
        self.object.is_some()
    }

    /// True once a batch's object could not be written in every attempt.
    pub(crate) fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// The file a batch is written to in per-batch mode.
    fn batch_file_name(&self, batch: u64) -> String {
        format!(
            "{}-{batch:06}.{}",
            self.name,
            self.options.format.extension()
        )
    }

    /// Writes one batch's result as one object: encoded in memory off the
    /// runtime, then put whole, tried again with backoff (each failure
    /// reported) up to [`OBJECT_WRITE_ATTEMPTS`] times.
    pub(crate) async fn write_object(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        let Some(dir) = self.object.clone() else {
            return Err(BrookError::Internal(format!(
                "sink '{}' writes no objects",
                self.name
            )));
        };
        if output.rows_out() == 0 {
            return Ok(SinkWrite::Empty);
        }
        let batch = output.batch_number;
        let format = self.options.format;
        let encoded = {
            let output = output.clone();
            tokio::task::spawn_blocking(move || encode_whole(format, &output)).await
        };
        let bytes = match encoded {
            Ok(bytes) => bytes?,
            Err(err) => {
                return Err(BrookError::Internal(format!(
                    "sink '{}': batch {batch}: encoding failed: {err}",
                    self.name
                )));
            }
        };
        let key = dir.key(&self.batch_file_name(batch));
        let shown = dir.show(&key);
        let mut backoff = crate::retry::Backoff::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let store = std::sync::Arc::clone(dir.store());
            let (put_key, payload) = (key.clone(), object_store::PutPayload::from(bytes.clone()));
            let err = match crate::storage::io::run(async move {
                object_store::ObjectStoreExt::put(&store, &put_key, payload).await
            })
            .await?
            {
                Ok(_) => {
                    if attempt > 1 {
                        self.report(format!(
                            "batch {batch}: {shown} written (attempt {attempt})"
                        ));
                    }
                    return Ok(SinkWrite::Written);
                }
                Err(err) => crate::storage::describe(&err),
            };
            if attempt >= OBJECT_WRITE_ATTEMPTS {
                self.gave_up = true;
                return Err(BrookError::external(
                    format!("batch {batch}: gave up after {attempt} attempts to write {shown}"),
                    err,
                ));
            }
            self.report(format!(
                "batch {batch}: cannot write {shown} (retrying in {} ms, attempt {} of {OBJECT_WRITE_ATTEMPTS}): {err}",
                backoff.next_wait().as_millis(),
                attempt + 1
            ));
            backoff.wait().await;
        }
    }

    fn report(&self, message: String) {
        if let Some(warn) = &self.warn {
            warn(&Warning::Sink(BrookError::external(
                format!("sink '{}'", self.name),
                message,
            )));
        }
    }

    /// For a query restored from its checkpoint after batch `batch`: removes
    /// this sink's per-batch files numbered after it (a run that crashed
    /// may have written them; their batches are numbered and written
    /// again). Returns how many went. An appended file cannot be undone.
    pub fn forget_after(&self, batch: u64) -> Result<usize> {
        if self.options.mode == FileMode::Append {
            return Ok(0);
        }
        let prefix = format!("{}-", self.name);
        let suffix = format!(".{}", self.options.format.extension());
        let numbered_after = |name: &str| {
            name.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(&suffix))
                .and_then(|number| number.parse::<u64>().ok())
                .is_some_and(|number| number > batch)
        };
        if let Some(dir) = &self.object {
            return forget_objects(dir, &self.name, numbered_after);
        }
        let entries = std::fs::read_dir(&self.options.path).map_err(|err| {
            BrookError::io(
                format!(
                    "sink '{}': cannot list {}",
                    self.name,
                    self.options.path.display()
                ),
                err,
            )
        })?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if numbered_after(&name) {
                std::fs::remove_file(entry.path()).map_err(|err| {
                    BrookError::io(format!("sink '{}': cannot remove {name}", self.name), err)
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// This sink, with its open file in append mode, leaving a copy without
    /// the file in its place: a write on another thread takes the sink
    /// along and puts it back.
    pub(crate) fn take_for_write(&mut self) -> FileSink {
        let left = FileSink {
            name: self.name.clone(),
            options: self.options.clone(),
            appending: None,
            object: self.object.clone(),
            warn: self.warn.clone(),
            gave_up: self.gave_up,
        };
        std::mem::replace(self, left)
    }

    /// Writes one batch's result; returns the file written, if any (a
    /// result without rows writes nothing).
    pub fn write(&mut self, output: &BatchOutput) -> Result<Option<PathBuf>> {
        if output.rows_out() == 0 {
            return Ok(None);
        }
        let format = self.options.format;
        // Debezium's envelope holds the row alone (the file's name says
        // its batch); the other formats lead each row with its batch.
        let (schema, batches) = match format {
            FileFormat::DebeziumJson => (
                std::sync::Arc::clone(&output.schema),
                output.batches.clone(),
            ),
            _ => with_batch_columns(output)?,
        };
        let failed = |path: &Path, err: std::io::Error| {
            BrookError::io(
                format!(
                    "batch {}: cannot write {}",
                    output.batch_number,
                    path.display()
                ),
                err,
            )
        };
        match self.options.mode {
            FileMode::Append => {
                let Some((file, header_written)) = &mut self.appending else {
                    return Err(BrookError::Internal(format!(
                        "sink '{}': batch {}: {} is not open (its last write did not finish)",
                        self.name,
                        output.batch_number,
                        self.options.path.display()
                    )));
                };
                let header = !*header_written;
                encode(file, format, &batches, header)
                    .and_then(|()| file.flush())
                    .map_err(|e| failed(&self.options.path, e))?;
                *header_written = true;
                Ok(Some(self.options.path.clone()))
            }
            FileMode::PerBatch => {
                let file_name = self.batch_file_name(output.batch_number);
                let path = self.options.path.join(&file_name);
                let temporary = self.options.path.join(format!(".{file_name}.tmp"));
                let written = File::create(&temporary).and_then(|file| {
                    let file = match format {
                        FileFormat::Parquet => write_parquet(file, &schema, &batches)?,
                        FileFormat::Csv | FileFormat::Json | FileFormat::DebeziumJson => {
                            let mut writer = BufWriter::new(file);
                            encode(&mut writer, format, &batches, true)?;
                            writer.into_inner().map_err(|e| e.into_error())?
                        }
                    };
                    file.sync_data()
                });
                if let Err(err) = written {
                    let _ = std::fs::remove_file(&temporary);
                    return Err(failed(&temporary, err));
                }
                std::fs::rename(&temporary, &path).map_err(|e| failed(&path, e))?;
                Ok(Some(path))
            }
        }
    }
}

/// Writes `batches` as one Parquet file (default writer properties) and
/// returns the file, complete with its footer.
fn write_parquet(file: File, schema: &SchemaRef, batches: &[RecordBatch]) -> std::io::Result<File> {
    parquet_into(BufWriter::new(file), schema, batches)?
        .into_inner()
        .map_err(|e| e.into_error())
}

/// Writes `batches` as one Parquet file into `out`.
fn parquet_into<W: Write + Send>(
    out: W,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::io::Result<W> {
    let mut writer = ArrowWriter::try_new(out, std::sync::Arc::clone(schema), None)
        .map_err(std::io::Error::other)?;
    for batch in batches {
        writer.write(batch).map_err(std::io::Error::other)?;
    }
    writer.into_inner().map_err(std::io::Error::other)
}

/// A batch's file as bytes, as the per-batch mode writes it.
fn encode_whole(format: FileFormat, output: &BatchOutput) -> Result<bytes::Bytes> {
    let (schema, batches) = match format {
        FileFormat::DebeziumJson => (
            std::sync::Arc::clone(&output.schema),
            output.batches.clone(),
        ),
        _ => with_batch_columns(output)?,
    };
    let failed = |err: std::io::Error| {
        BrookError::invalid(format!(
            "batch {}: cannot encode: {err}",
            output.batch_number
        ))
    };
    let bytes = match format {
        FileFormat::Parquet => parquet_into(Vec::new(), &schema, &batches).map_err(failed)?,
        _ => {
            let mut out = Vec::new();
            encode(&mut out, format, &batches, true).map_err(failed)?;
            out
        }
    };
    Ok(bytes::Bytes::from(bytes))
}

/// Removes the objects under `dir` whose names `remove` picks.
fn forget_objects(dir: &ObjectDir, sink: &str, remove: impl Fn(&str) -> bool) -> Result<usize> {
    let listing = {
        let (store, prefix) = (std::sync::Arc::clone(dir.store()), dir.prefix().clone());
        crate::storage::io::block_on(async move { store.list_with_delimiter(Some(&prefix)).await })?
            .map_err(|err| dir.error(&format!("sink '{sink}': cannot list"), &err))?
    };
    let mut removed = 0;
    for object in listing.objects {
        if dir
            .name_of(&object.location)
            .is_some_and(|name| remove(&name))
        {
            let store = std::sync::Arc::clone(dir.store());
            let key = object.location.clone();
            crate::storage::io::block_on(async move {
                object_store::ObjectStoreExt::delete(&store, &key).await
            })?
            .map_err(|err| dir.error(&format!("sink '{sink}': cannot remove"), &err))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn encode(
    out: &mut dyn Write,
    format: FileFormat,
    batches: &[RecordBatch],
    header: bool,
) -> std::io::Result<()> {
    match format {
        FileFormat::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new()
                .with_header(header)
                .build(out);
            for batch in batches {
                writer.write(batch).map_err(std::io::Error::other)?;
            }
        }
        FileFormat::Json => {
            let mut writer = arrow_json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch).map_err(std::io::Error::other)?;
            }
            writer.finish().map_err(std::io::Error::other)?;
        }
        FileFormat::DebeziumJson => {
            for batch in batches {
                let rows = super::debezium::rows_with_ops(batch).map_err(std::io::Error::other)?;
                for (op, row) in rows {
                    out.write_all(&super::debezium::envelope(op, &row))?;
                    out.write_all(b"\n")?;
                }
            }
        }
        // Written whole by `write_parquet`; an appended sink is never
        // Parquet (refused when the sink is created).
        FileFormat::Parquet => {
            return Err(std::io::Error::other(
                "a Parquet file cannot be appended to",
            ));
        }
    }
    Ok(())
}
