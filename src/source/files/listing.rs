//! What a directory stream watches: a local directory or a prefix in an
//! object store. Both are listed the same way (the regular files, or
//! objects, directly under it whose names match the pattern; names that
//! start with `.` or `_` never do), and a file's bytes are read in pieces
//! from either.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::AsyncReadExt;

use crate::storage::ObjectDir;

/// The directory watched.
#[derive(Debug, Clone)]
pub(super) enum Watched {
    /// A directory on the local file system.
    Local(PathBuf),
    /// A prefix in a bucket: an object is whole once it is listed (a
    /// single PUT, or a multipart upload once completed).
    Object(ObjectDir),
}

/// A file (or object) seen in a listing.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub name: OsString,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl Watched {
    /// `path/name` or `s3://bucket/prefix/name`, for messages.
    pub fn show(&self, name: &str) -> String {
        match self {
            Watched::Local(dir) => dir.join(name).display().to_string(),
            Watched::Object(dir) => dir.show(&dir.key(name)),
        }
    }

    /// The directory, for messages.
    pub fn show_dir(&self) -> String {
        match self {
            Watched::Local(dir) => dir.display().to_string(),
            Watched::Object(dir) => dir.url(),
        }
    }

    /// Whether objects found at the same look are taken in the order they
    /// were written (an object store's listing is in name order and holds
    /// each object's upload time); local files at the same look go in
    /// name order.
    pub fn orders_by_time(&self) -> bool {
        matches!(self, Watched::Object(_))
    }

    /// The files directly under the directory whose names `matches`.
    pub async fn list(
        &self,
        matches: impl Fn(&str) -> bool,
    ) -> std::result::Result<Vec<Listed>, String> {
        let taken = |name: &str| !name.starts_with('.') && !name.starts_with('_') && matches(name);
        match self {
            Watched::Local(dir) => {
                let mut files = Vec::new();
                let mut entries = tokio::fs::read_dir(dir)
                    .await
                    .map_err(|err| err.to_string())?;
                while let Ok(Some(entry)) = entries.next_entry().await {
                    let name = entry.file_name();
                    if !name.to_str().is_some_and(taken) {
                        continue;
                    }
                    if let Ok(metadata) = entry.metadata().await
                        && metadata.is_file()
                    {
                        files.push(Listed {
                            name,
                            len: metadata.len(),
                            modified: metadata.modified().ok(),
                        });
                    }
                }
                Ok(files)
            }
            Watched::Object(dir) => {
                let store = std::sync::Arc::clone(dir.store());
                let prefix = dir.prefix().clone();
                let listing = crate::storage::io::run(async move {
                    store.list_with_delimiter(Some(&prefix)).await
                })
                .await
                .map_err(|err| err.to_string())?
                .map_err(|err| crate::storage::describe(&err))?;
                Ok(listing
                    .objects
                    .into_iter()
                    .filter_map(|object| {
                        let name = dir.name_of(&object.location)?;
                        taken(&name).then(|| Listed {
                            name: OsString::from(name),
                            len: object.size,
                            modified: Some(SystemTime::from(object.last_modified)),
                        })
                    })
                    .collect())
            }
        }
    }

    /// Opens file `name` (of `len` bytes when listed) to be read in
    /// pieces. An object is asked for at the first read.
    pub async fn open(&self, name: &str, len: u64) -> std::result::Result<FileBytes, String> {
        match self {
            Watched::Local(dir) => tokio::fs::File::open(dir.join(name))
                .await
                .map(FileBytes::Local)
                .map_err(|err| err.to_string()),
            Watched::Object(dir) => Ok(FileBytes::Object(ObjectBytes {
                dir: dir.clone(),
                key: dir.key(name),
                read: 0,
                size: len,
                e_tag: None,
                body: None,
            })),
        }
    }
}

/// Why a piece of a file could not be read.
#[derive(Debug)]
pub(super) struct ReadFailure {
    pub why: String,
    /// A request that failed on the way (the store unreachable, a
    /// connection cut): reading again goes on where it stopped.
    pub transient: bool,
}

impl ReadFailure {
    fn lasting(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            transient: false,
        }
    }
}

/// A file being read.
pub(super) enum FileBytes {
    Local(tokio::fs::File),
    Object(ObjectBytes),
}

/// How many bytes of an object one request asks for. The S3 client takes
/// a response's body as fast as the network gives it, so this bounds the
/// memory an object's read holds, and where a read cut off starts again.
const RANGE_BYTES: u64 = 8 * 1024 * 1024;

/// An object being read, [`RANGE_BYTES`] at a time, each range of the
/// version (ETag) the first request saw. After a failed request the next
/// read asks again from the first byte not yet read, so a read cut off
/// goes on with nothing read twice.
pub(super) struct ObjectBytes {
    dir: ObjectDir,
    key: object_store::path::Path,
    /// Bytes read so far.
    read: u64,
    /// The object's size: as listed, then as the first response said.
    size: u64,
    /// The object's ETag, once the first response gave it.
    e_tag: Option<String>,
    /// The range being read.
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
}

impl ObjectBytes {
    async fn request(&mut self) -> std::result::Result<(), ReadFailure> {
        let end = self.size.min(self.read + RANGE_BYTES);
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(self.read..end)),
            if_match: self.e_tag.clone(),
            ..Default::default()
        };
        let store = std::sync::Arc::clone(self.dir.store());
        let key = self.key.clone();
        let got = crate::storage::io::run(async move { store.get_opts(&key, options).await })
            .await
            .map_err(|err| ReadFailure::lasting(err.to_string()))?
            .map_err(|err| failure(&err))?;
        if self.e_tag.is_none() {
            self.e_tag = got.meta.e_tag.clone();
            self.size = got.meta.size;
        }
        self.body = Some(got.into_stream());
        Ok(())
    }

    async fn read_into(&mut self, buffer: &mut Vec<u8>) -> std::result::Result<usize, ReadFailure> {
        loop {
            if self.body.is_none() {
                if self.read >= self.size {
                    return Ok(0);
                }
                self.request().await?;
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match body.next().await {
                // The range is read; the next one, if any, comes next.
                None => self.body = None,
                Some(Ok(chunk)) => {
                    buffer.extend_from_slice(&chunk);
                    self.read += chunk.len() as u64;
                    return Ok(chunk.len());
                }
                Some(Err(err)) => {
                    self.body = None;
                    return Err(failure(&err));
                }
            }
        }
    }
}

/// A failed request: transient unless the object is gone or was replaced
/// while it was read.
fn failure(err: &object_store::Error) -> ReadFailure {
    let replaced = matches!(err, object_store::Error::Precondition { .. });
    let transient = !replaced && !matches!(err, object_store::Error::NotFound { .. });
    let described = crate::storage::describe(err);
    let why = if replaced {
        format!("the object was replaced while it was read: {described}")
    } else {
        described
    };
    ReadFailure { why, transient }
}

impl FileBytes {
    /// Appends the next piece of the file to `buffer`; 0 at its end.
    pub async fn read_into(
        &mut self,
        buffer: &mut Vec<u8>,
    ) -> std::result::Result<usize, ReadFailure> {
        match self {
            FileBytes::Local(file) => file
                .read_buf(buffer)
                .await
                .map_err(|err| ReadFailure::lasting(err.to_string())),
            FileBytes::Object(object) => object.read_into(buffer).await,
        }
    }
}
