//! The directory source (Spark's `textFileStream`): brook watches a
//! directory and reads each new file once, in full, in pieces, in the order
//! the files appeared (name order among files found at the same look). A
//! file is taken once it is complete: unchanged in size and modification
//! time for the stream's settle time. Names starting with `.` or `_` are
//! files being written, by convention, and are never taken.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::decode::{DecodedLines, LineDecoder, LineSplitter};
use super::{FilesOptions, Inbox, LineFormat, Source};
use crate::error::{BrookError, Result, WarningHandler};

/// Bytes read from a file at a time: files larger than the stream's bounds
/// go through in pieces.
const READ_BYTES: usize = 256 * 1024;
/// How often the directory is listed.
const POLL: Duration = Duration::from_millis(100);

pub(crate) struct FilesSource {
    stream: String,
    options: FilesOptions,
    schema: SchemaRef,
    warn: WarningHandler,
    /// The watching task; aborted when the stream is dropped.
    watcher: std::sync::Mutex<Option<JoinHandle<()>>>,
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
        LineDecoder::try_new(
            &stream,
            Arc::clone(&schema),
            options.format,
            options.delimiter,
        )?;
        Ok(Self {
            stream,
            options,
            schema,
            warn,
            watcher: Default::default(),
        })
    }
}

impl Drop for FilesSource {
    fn drop(&mut self) {
        if let Some(watcher) = crate::sync::lock(&self.watcher).take() {
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

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        let path = &self.options.path;
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
        let mut watcher = Watcher {
            stream: self.stream.clone(),
            options: self.options.clone(),
            schema: Arc::clone(&self.schema),
            warn: Arc::clone(&self.warn),
            inbox,
            taken: HashSet::new(),
            pending: HashMap::new(),
        };
        if !self.options.start_existing {
            for (name, _) in watcher.list().await {
                watcher.taken.insert(name);
            }
        }
        *crate::sync::lock(&self.watcher) = Some(tokio::spawn(watcher.run()));
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
    schema: SchemaRef,
    warn: WarningHandler,
    inbox: Arc<Inbox>,
    /// Names of the files already read (kept so that a file is read once).
    taken: HashSet<OsString>,
    pending: HashMap<OsString, Pending>,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            let mut ready: Vec<(Instant, OsString)> = Vec::new();
            for (name, metadata) in self.list().await {
                if self.taken.contains(&name) {
                    continue;
                }
                let (len, modified) = (metadata.len(), metadata.modified().ok());
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
                    ready.push((entry.first_seen, name));
                }
            }
            ready.sort();
            for (_, name) in ready {
                self.pending.remove(&name);
                self.taken.insert(name.clone());
                let path = self.options.path.join(&name);
                if !self.read_file(&path).await {
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The regular files of the directory whose names match the pattern.
    async fn list(&self) -> Vec<(OsString, std::fs::Metadata)> {
        let mut files = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.options.path).await {
            Ok(entries) => entries,
            Err(err) => {
                (self.warn)(&BrookError::io(
                    format!(
                        "stream '{}': cannot list directory {}",
                        self.stream,
                        self.options.path.display()
                    ),
                    err,
                ));
                return files;
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let Some(text) = name.to_str() else {
                continue;
            };
            if text.starts_with('.')
                || text.starts_with('_')
                || !matches(&self.options.pattern, text)
            {
                continue;
            }
            if let Ok(metadata) = entry.metadata().await
                && metadata.is_file()
            {
                files.push((name, metadata));
            }
        }
        files
    }

    /// Reads one file in pieces into the inbox. Returns false when the
    /// stream has failed or was dropped.
    async fn read_file(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cannot_read = |err: std::io::Error| {
            BrookError::io(
                format!(
                    "stream '{}': cannot read file {}",
                    self.stream,
                    path.display()
                ),
                err,
            )
        };
        let mut file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(err) => {
                (self.warn)(&cannot_read(err));
                return true;
            }
        };
        let decoder = match LineDecoder::try_new(
            &self.stream,
            Arc::clone(&self.schema),
            self.options.format,
            self.options.delimiter,
        ) {
            Ok(decoder) => decoder.with_max_line_bytes(self.options.max_line_bytes),
            Err(err) => {
                self.inbox.fail(err);
                return false;
            }
        };
        let skip_header = self.options.header && self.options.format == LineFormat::Csv;
        let mut lines = LineSplitter::new(decoder, READ_BYTES);
        let mut header_left = skip_header;
        if skip_header {
            lines = lines.starting_at_line(2);
        }
        loop {
            let read = file.read_buf(lines.read_buffer()).await;
            let decoded = match read {
                Ok(0) => {
                    let decoded = lines.decode_close();
                    return self.deliver(&name, decoded).await;
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
                Err(err) => {
                    (self.warn)(&cannot_read(err));
                    return true;
                }
            };
            if !self.deliver(&name, decoded).await {
                return false;
            }
        }
    }

    /// Reports a file's bad lines, naming the file, and queues its rows.
    async fn deliver(&self, file: &str, decoded: DecodedLines) -> bool {
        self.inbox
            .deliver(decoded, self.options.on_error, &self.warn, |bad| {
                format!("file '{file}': {}", bad.message)
            })
            .await
    }
}

/// Whether `name` matches `pattern`, whose `*` stands for any run of
/// characters and `?` for one.
fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // The classic two-pointer wildcard match with backtracking to the last *.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards_match_as_shells_do() {
        assert!(matches("*", "a.csv"));
        assert!(matches("*.csv", "a.csv"));
        assert!(!matches("*.csv", "a.csv.tmp"));
        assert!(matches("part-??.csv", "part-07.csv"));
        assert!(!matches("part-??.csv", "part-7.csv"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
    }
}
