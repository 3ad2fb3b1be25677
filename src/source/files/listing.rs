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
use object_store::ObjectStoreExt;
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

    /// Opens file `name` to be read in pieces.
    pub async fn open(&self, name: &str) -> std::result::Result<FileBytes, String> {
        match self {
            Watched::Local(dir) => tokio::fs::File::open(dir.join(name))
                .await
                .map(FileBytes::Local)
                .map_err(|err| err.to_string()),
            Watched::Object(dir) => {
                let store = std::sync::Arc::clone(dir.store());
                let key = dir.key(name);
                let got = crate::storage::io::run(async move { store.get(&key).await })
                    .await
                    .map_err(|err| err.to_string())?
                    .map_err(|err| crate::storage::describe(&err))?;
                Ok(FileBytes::Object(got.into_stream()))
            }
        }
    }

    /// Reads object `name` whole (a Parquet file is read from its footer).
    pub async fn read_whole(&self, name: &str) -> std::result::Result<Bytes, String> {
        let mut bytes = Vec::new();
        let mut file = self.open(name).await?;
        while file.read_into(&mut bytes).await? > 0 {}
        Ok(Bytes::from(bytes))
    }
}

/// A file being read.
pub(super) enum FileBytes {
    Local(tokio::fs::File),
    Object(BoxStream<'static, object_store::Result<Bytes>>),
}

impl FileBytes {
    /// Appends the next piece of the file to `buffer`; 0 at its end.
    pub async fn read_into(&mut self, buffer: &mut Vec<u8>) -> std::result::Result<usize, String> {
        match self {
            FileBytes::Local(file) => file.read_buf(buffer).await.map_err(|err| err.to_string()),
            FileBytes::Object(stream) => match stream.next().await {
                None => Ok(0),
                Some(Ok(chunk)) => {
                    buffer.extend_from_slice(&chunk);
                    Ok(chunk.len())
                }
                Some(Err(err)) => Err(crate::storage::describe(&err)),
            },
        }
    }
}
