//! The directory source (Spark's `textFileStream`): brook watches a
//! directory and reads each new file once, in full, in pieces, in the order
//! the files appeared (name order among files found at the same look). A
//! file is taken once it is complete: unchanged in size and modification
//! time for the stream's settle time. Names starting with `.` or `_` are
//! files being written, by convention, and are never taken. Files of lines
//! (text, CSV, JSON) are decoded as a socket's lines are; Parquet files are
//! read a row group piece at a time off the async runtime.
//!
//! The directory may be a prefix in an object store (`s3://bucket/prefix/`,
//! see [`listing`]): the objects directly under it are taken the same way,
//! those found at the same look in the order they were written.

mod listing;
mod position;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::decode::{DecodedLines, LineDecoder, LineSplitter};
use super::parquet::ParquetPieces;
use super::{FilesFormat, FilesOptions, Inbox, LineFormat, Source};
use crate::error::{BrookError, Result, Warning, WarningHandler};
use crate::storage::ObjectDir;
use listing::{FileBytes, Listed, Watched};
pub(crate) use position::TakenFiles;
use position::{FilePosition, FilePositions};

/// Bytes read from a file at a time: files larger than the stream's bounds
/// go through in pieces.
const READ_BYTES: usize = 256 * 1024;
/// Rows read from a Parquet file at a time (fewer if the stream's
/// `max_pending_rows` is smaller), so a large file goes through in pieces.
const PARQUET_PIECE_ROWS: usize = 32 * 1024;
/// How often the directory is listed.
const POLL: Duration = Duration::from_millis(100);

/// How many times a piece of an object is asked for before the file is
/// given up (reported, and the stream goes on with the next).
const READ_ATTEMPTS: u32 = 32;

pub(crate) struct FilesSource {
    stream: String,
    options: FilesOptions,
    /// The directory, local or in an object store.
    watched: Watched,
    schema: SchemaRef,
    warn: WarningHandler,
    /// The watching task; aborted when the stream is dropped.
    watcher: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// The files taken so far, shared with the watching task.
    taken: Arc<parking_lot::Mutex<TakenFiles>>,
    /// Which rows of which files each inbox item ends after: what a
    /// checkpoint records so that a restart reads no row twice.
    positions: Arc<parking_lot::Mutex<FilePositions>>,
    /// Set by [`Source::resume_from`] before the start.
    resume: parking_lot::Mutex<Option<FilePosition>>,
}

impl std::fmt::Debug for FilesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSource")
            .field("stream", &self.stream)
            .field("path", &self.options.path)
            .finish_non_exhaustive()
    }
}

impl FilesSource {
    pub fn try_new(
        stream: String,
        options: FilesOptions,
        schema: SchemaRef,
        warn: WarningHandler,
    ) -> Result<Self> {
        // The schema must suit the format: checked at CREATE STREAM.
        match options.format {
            FilesFormat::Lines(format) => {
                LineDecoder::try_new(&stream, Arc::clone(&schema), format, options.delimiter)?;
            }
            // Each file's columns are checked when it is read.
            FilesFormat::Parquet if schema.fields().is_empty() => {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': declare the columns to read from the Parquet files"
                )));
            }
            FilesFormat::Parquet => {}
        }
        let path = options.path.to_string_lossy();
        let watched = if crate::storage::is_object_url(&path) {
            // A missing bucket, refused credentials or an endpoint not there
            // is the CREATE STREAM's error.
            let dir = ObjectDir::open(&path, &options.s3)
                .map_err(|err| BrookError::invalid(format!("stream '{stream}': {err}")))?;
            dir.check_blocking()
                .map_err(|err| BrookError::external(format!("stream '{stream}'"), err))?;
            Watched::Object(dir)
        } else {
            Watched::Local(options.path.clone())
        };
        Ok(Self {
            stream,
            options,
            watched,
            schema,
            warn,
            watcher: Default::default(),
            taken: Default::default(),
            positions: Default::default(),
            resume: Default::default(),
        })
    }
}

impl Drop for FilesSource {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.abort();
        }
    }
}

#[async_trait]
impl Source for FilesSource {
    fn connector(&self) -> &'static str {
        "files"
    }

    fn describe(&self) -> String {
        self.options.describe()
    }

    fn position_after(&self, items: u64) -> Option<serde_json::Value> {
        Some(self.positions.lock().position_after(items).to_json())
    }

    fn resume_from(&self, position: &serde_json::Value) -> Result<()> {
        let position = FilePosition::from_json(position).ok_or_else(|| {
            BrookError::invalid(format!(
                "stream '{}': the checkpoint's position is not a directory stream's: {position}",
                self.stream
            ))
        })?;
        *self.resume.lock() = Some(position);
        Ok(())
    }

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        match &self.watched {
            Watched::Local(path) => {
                let metadata = tokio::fs::metadata(path).await.map_err(|err| {
                    BrookError::io(
                        format!(
                            "stream '{}': cannot watch directory {}",
                            self.stream,
                            path.display()
                        ),
                        err,
                    )
                })?;
                if !metadata.is_dir() {
                    return Err(BrookError::invalid(format!(
                        "stream '{}': path {} is not a directory",
                        self.stream,
                        path.display()
                    )));
                }
            }
            Watched::Object(dir) => dir
                .check()
                .await
                .map_err(|err| BrookError::external(format!("stream '{}'", self.stream), err))?,
        }
        let watcher = Watcher {
            stream: self.stream.clone(),
            options: self.options.clone(),
            watched: self.watched.clone(),
            schema: Arc::clone(&self.schema),
            warn: Arc::clone(&self.warn),
            inbox,
            taken: Arc::clone(&self.taken),
            pending: HashMap::new(),
            files_in_batch: 0,
            positions: Arc::clone(&self.positions),
            skip_rows: HashMap::new(),
        };
        let mut watcher = watcher;
        let resume = self.resume.lock().take();
        match resume {
            // Where a checkpoint left the stream: its files done are not read
            // again, and a file read in part goes on after its rows.
            Some(position) => {
                let mut taken = watcher.taken.lock();
                for file in &position.done {
                    taken.insert(OsString::from(file));
                }
                drop(taken);
                watcher.skip_rows = position.partial.iter().cloned().collect();
                let mut positions = self.positions.lock();
                // Files read in part stay so until more of them is read.
                for (file, rows) in &position.partial {
                    positions.log.push_back((0, file.clone(), *rows, false));
                }
                positions.done = position.done;
            }
            None if !self.options.start_existing => {
                let mut present = Vec::new();
                let listed = watcher.list_matching().await.map_err(|why| {
                    BrookError::external(
                        format!(
                            "stream '{}': cannot list {} to pass over what is there",
                            self.stream,
                            watcher.watched.show_dir()
                        ),
                        why,
                    )
                })?;
                for Listed { name, .. } in listed {
                    present.push(name.to_string_lossy().to_string());
                    watcher.taken.lock().insert(name);
                }
                // Never read, so never to be read after a restart either.
                self.positions.lock().done = present;
            }
            None => {}
        }
        *self.watcher.lock() = Some(tokio::spawn(watcher.run()));
        Ok(())
    }
}

/// A file seen but not yet taken: how it looked, and since when.
struct Pending {
    len: u64,
    modified: Option<SystemTime>,
    unchanged_since: Instant,
    /// When the file was first seen, which orders the files taken.
    first_seen: Instant,
}

/// The task that watches the directory and reads its files.
struct Watcher {
    stream: String,
    options: FilesOptions,
    watched: Watched,
    schema: SchemaRef,
    warn: WarningHandler,
    inbox: Arc<Inbox>,
    /// The files already taken (kept so that a file is read once).
    taken: Arc<parking_lot::Mutex<TakenFiles>>,
    pending: HashMap<OsString, Pending>,
    /// Files read since the inbox was last empty: with
    /// `max_files_per_batch`, how many the coming batch holds.
    files_in_batch: usize,
    /// Which rows of which files the inbox's items hold (see
    /// [`FilesSource::position_after`]).
    positions: Arc<parking_lot::Mutex<FilePositions>>,
    /// Per file read in part before a restart, the rows to skip.
    skip_rows: HashMap<String, u64>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = crate::retry::Backoff::default();
        let mut listing_failed = false;
        loop {
            let listed = match self.list(backoff.next_wait()).await {
                Some(listed) => listed,
                None => {
                    listing_failed = true;
                    self.inbox.set_reconnecting(true);
                    backoff.wait().await;
                    continue;
                }
            };
            if listing_failed {
                listing_failed = false;
                backoff.reset();
                self.inbox.set_reconnecting(false);
            }
            let now = Instant::now();
            let mut ready: Vec<(Instant, Option<SystemTime>, OsString, u64)> = Vec::new();
            let by_time = self.watched.orders_by_time();
            for Listed {
                name,
                len,
                modified,
            } in listed
            {
                if self.taken.lock().contains(&name) {
                    continue;
                }
                let entry = self.pending.entry(name.clone()).or_insert(Pending {
                    len,
                    modified,
                    unchanged_since: now,
                    first_seen: now,
                });
                if entry.len != len || entry.modified != modified {
                    entry.len = len;
                    entry.modified = modified;
                    entry.unchanged_since = now;
                } else if now.duration_since(entry.unchanged_since) >= self.options.settle {
                    ready.push((entry.first_seen, modified.filter(|_| by_time), name, len));
                }
            }
            ready.sort();
            for (_, _, name, len) in ready {
                self.pending.remove(&name);
                self.wait_for_room_in_batch().await;
                self.taken.lock().insert(name.clone());
                let name = name.to_string_lossy().into_owned();
                let went_on = match self.options.format {
                    FilesFormat::Lines(format) => self.read_lines(&name, len, format).await,
                    FilesFormat::Parquet => self.read_parquet(&name, len).await,
                };
                if !went_on {
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The files of the directory whose names match the pattern.
    async fn list_matching(&self) -> std::result::Result<Vec<Listed>, String> {
        // Checked when the stream was created; a library user's invalid
        // pattern matches nothing.
        let pattern = glob::Pattern::new(&self.options.pattern).ok();
        self.watched
            .list(|name| pattern.as_ref().is_some_and(|p| p.matches(name)))
            .await
    }

    /// The regular files of the directory whose names match the pattern;
    /// `None`, reported, when the directory cannot be listed (it is listed
    /// again after `retry_in`).
    async fn list(&self, retry_in: Duration) -> Option<Vec<Listed>> {
        match self.list_matching().await {
            Ok(listed) => Some(listed),
            Err(why) => {
                (self.warn)(&Warning::Source(BrookError::external(
                    format!(
                        "stream '{}': cannot list {} (listing again in {} ms)",
                        self.stream,
                        self.watched.show_dir(),
                        retry_in.as_millis()
                    ),
                    why,
                )));
                None
            }
        }
    }

    /// With `max_files_per_batch`, waits before the next file until a cut
    /// has taken the files read so far if the coming batch is full.
    async fn wait_for_room_in_batch(&mut self) {
        let Some(most) = self.options.max_files_per_batch else {
            return;
        };
        // Rows are queued before a read ends, so when every item pushed is
        // in a batch that was cut, every file read so far is.
        if self.inbox.all_cut() {
            self.files_in_batch = 0;
        }
        if self.files_in_batch >= most {
            self.inbox.drained().await;
            self.files_in_batch = 0;
        }
        self.files_in_batch += 1;
    }

    /// Reads the next piece of file `name` into `buffer` (0 at its end).
    /// A request to an object store that fails on the way is reported and
    /// made again, with backoff (up to [`READ_ATTEMPTS`] times, about two
    /// and a half minutes), going on where it stopped: a store that is down
    /// for a while loses nothing.
    async fn read_piece(
        &self,
        name: &str,
        file: &mut FileBytes,
        buffer: &mut Vec<u8>,
    ) -> std::result::Result<usize, String> {
        let mut backoff = crate::retry::Backoff::default();
        let mut attempt = 1;
        loop {
            match file.read_into(buffer).await {
                Ok(read) => {
                    if attempt > 1 {
                        self.inbox.set_reconnecting(false);
                    }
                    return Ok(read);
                }
                Err(failure)
                    if failure.transient && attempt < READ_ATTEMPTS && !self.inbox.is_closed() =>
                {
                    attempt += 1;
                    self.inbox.set_reconnecting(true);
                    (self.warn)(&Warning::Source(self.cannot_read(
                        name,
                        format!(
                            "{} (reading on in {} ms, attempt {attempt})",
                            failure.why,
                            backoff.next_wait().as_millis()
                        ),
                    )));
                    backoff.wait().await;
                }
                Err(failure) => {
                    self.inbox.set_reconnecting(false);
                    if failure.transient {
                        return Err(format!("gave up after {attempt} attempts: {}", failure.why));
                    }
                    return Err(failure.why);
                }
            }
        }
    }

    /// Reads object `name` whole (a Parquet object is read from its
    /// footer), as [`Watcher::read_piece`] reads.
    async fn read_whole(&self, name: &str, len: u64) -> std::result::Result<bytes::Bytes, String> {
        let mut bytes = Vec::new();
        let mut file = self.watched.open(name, len).await?;
        while self.read_piece(name, &mut file, &mut bytes).await? > 0 {}
        Ok(bytes::Bytes::from(bytes))
    }

    /// The error for a file that cannot be read.
    fn cannot_read(&self, name: &str, why: impl std::fmt::Display) -> BrookError {
        BrookError::external(
            format!(
                "stream '{}': cannot read file {}",
                self.stream,
                self.watched.show(name)
            ),
            why,
        )
    }

    /// Reads one Parquet file in pieces into the inbox, off the async
    /// runtime. A file that cannot be read is reported and skipped. Returns
    /// false when the stream has failed or was dropped.
    async fn read_parquet(&mut self, name: &str, len: u64) -> bool {
        let schema = Arc::clone(&self.schema);
        let piece_rows = PARQUET_PIECE_ROWS.min(self.options.limits.max_pending_rows.max(1));
        let opened = match &self.watched {
            Watched::Local(dir) => {
                let path = dir.join(name);
                tokio::task::spawn_blocking(move || ParquetPieces::open(&path, schema, piece_rows))
                    .await
            }
            // An object is read whole: a Parquet file is read from its footer.
            Watched::Object(_) => match self.read_whole(name, len).await {
                Ok(bytes) => {
                    tokio::task::spawn_blocking(move || {
                        ParquetPieces::read(bytes, schema, piece_rows)
                    })
                    .await
                }
                Err(why) => Ok(Err(why)),
            },
        };
        let mut pieces = match opened {
            Ok(Ok(pieces)) => pieces,
            Ok(Err(why)) => {
                (self.warn)(&Warning::Source(self.cannot_read(name, why)));
                return true;
            }
            Err(panicked) => {
                (self.warn)(&Warning::Source(self.cannot_read(
                    name,
                    format!("the Parquet reader failed: {panicked}"),
                )));
                return true;
            }
        };
        loop {
            // The reader moves to a blocking thread for each piece and back.
            let read = tokio::task::spawn_blocking(move || {
                let piece = pieces.next_piece();
                (pieces, piece)
            })
            .await;
            let piece = match read {
                Ok((rest, piece)) => {
                    pieces = rest;
                    piece
                }
                Err(panicked) => {
                    (self.warn)(&Warning::Source(self.cannot_read(
                        name,
                        format!("the Parquet reader failed: {panicked}"),
                    )));
                    return true;
                }
            };
            match piece {
                None => {
                    self.file_done(name);
                    return true;
                }
                Some(Ok(decoded)) => {
                    if !self.deliver(name, decoded).await {
                        return false;
                    }
                }
                Some(Err(why)) => {
                    (self.warn)(&Warning::Source(self.cannot_read(name, why)));
                    return true;
                }
            }
        }
    }

    /// Reads one file of lines in pieces into the inbox. Returns false when
    /// the stream has failed or was dropped.
    async fn read_lines(&mut self, name: &str, len: u64, format: LineFormat) -> bool {
        let mut file = match self.watched.open(name, len).await {
            Ok(file) => file,
            Err(why) => {
                (self.warn)(&Warning::Source(self.cannot_read(name, why)));
                return true;
            }
        };
        let decoder = match LineDecoder::try_new(
            &self.stream,
            Arc::clone(&self.schema),
            format,
            self.options.delimiter,
        ) {
            Ok(decoder) => decoder
                .with_max_line_bytes(self.options.max_line_bytes)
                .with_timestamp_format(self.options.timestamp_format),
            Err(err) => {
                self.inbox.fail(err);
                return false;
            }
        };
        let skip_header = self.options.header && format == LineFormat::Csv;
        let mut lines = LineSplitter::new(decoder, READ_BYTES);
        let mut header_left = skip_header;
        if skip_header {
            lines = lines.starting_at_line(2);
        }
        loop {
            let read = self.read_piece(name, &mut file, lines.read_buffer()).await;
            let decoded = match read {
                Ok(0) => {
                    let decoded = lines.decode_close();
                    let went_on = self.deliver(name, decoded).await;
                    self.file_done(name);
                    return went_on;
                }
                Ok(_) => {
                    if header_left {
                        // Drop the header line's bytes once it is whole.
                        let buffer = lines.read_buffer();
                        match memchr::memchr(b'\n', buffer) {
                            Some(end) => {
                                buffer.drain(..=end);
                                header_left = false;
                            }
                            None => continue,
                        }
                    }
                    lines.decode_read()
                }
                Err(why) => {
                    (self.warn)(&Warning::Source(self.cannot_read(name, why)));
                    return true;
                }
            };
            if !self.deliver(name, decoded).await {
                return false;
            }
        }
    }

    /// Reports a file's bad lines, naming the file, and queues its rows
    /// (less those a checkpoint says were consumed before a restart),
    /// recording where the file stands after them.
    async fn deliver(&mut self, file: &str, mut decoded: DecodedLines) -> bool {
        let mut rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows()) as u64;
        if let Some(skip) = self.skip_rows.get_mut(file)
            && *skip > 0
            && let Some(batch) = decoded.batch.take()
        {
            let skipped = (*skip).min(batch.num_rows() as u64);
            *skip -= skipped;
            rows -= skipped;
            let rest = batch.slice(skipped as usize, batch.num_rows() - skipped as usize);
            decoded.batch = (rest.num_rows() > 0).then_some(rest);
        }
        let went_on = super::deliver(
            &self.inbox,
            decoded,
            self.options.on_error,
            &self.warn,
            |bad| format!("file '{file}': {}", bad.message),
        )
        .await;
        if rows > 0 {
            let items = self.inbox.items_pushed();
            let mut positions = self.positions.lock();
            // Rows of the file queued before (in this run, or before the
            // checkpoint it resumed from).
            let so_far = positions
                .log
                .iter()
                .rev()
                .find(|entry| entry.1 == file)
                .map_or(0, |entry| entry.2);
            positions
                .log
                .push_back((items, file.to_string(), so_far + rows, false));
            let finished = self.inbox.ledger().items_finished();
            positions.compact(finished);
        }
        went_on
    }

    /// Records file `name` as read whole.
    fn file_done(&mut self, name: &str) {
        let items = self.inbox.items_pushed();
        let mut positions = self.positions.lock();
        let rows = positions
            .log
            .iter()
            .rev()
            .find(|entry| entry.1 == name)
            .map_or(0, |entry| entry.2);
        positions
            .log
            .push_back((items, name.to_string(), rows, true));
    }
}

#[cfg(test)]
mod tests {
    use super::position::TakenFiles;

    fn matches(pattern: &str, name: &str) -> bool {
        glob::Pattern::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn files_taken_are_listed_once_in_the_order_taken() {
        let mut taken = TakenFiles::default();
        for name in ["b.csv", "a.csv", "b.csv", "c.csv"] {
            taken.insert(name.into());
        }
        assert!(taken.contains(&"a.csv".into()));
        assert_eq!(taken.in_order(), ["b.csv", "a.csv", "c.csv"]);
    }

    #[test]
    fn patterns_match_names_as_shells_do() {
        assert!(matches("*", "a.csv"));
        assert!(matches("*.csv", "a.csv"));
        assert!(!matches("*.csv", "a.csv.tmp"));
        assert!(matches("part-??.csv", "part-07.csv"));
        assert!(!matches("part-??.csv", "part-7.csv"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("part-[0-9]*.csv", "part-7.csv"));
        assert!(!matches("part-[0-9]*.csv", "part-x.csv"));
    }
}
