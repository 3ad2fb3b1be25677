//! Where a query's checkpoint files are kept: a local directory, or a
//! prefix in an object store (`--checkpoint s3://bucket/ck`, reached with
//! the standard AWS environment variables).
//!
//! Either way a checkpoint becomes current in one atomic step: locally it
//! is written under a hidden temporary name, synced and renamed (and the
//! directory synced); in an object store it is one PUT, which makes the
//! object visible whole or not at all. The newest readable file is the
//! current checkpoint.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::{ObjectStoreExt, PutPayload};

use crate::error::{BrookError, Result};
use crate::storage::{ObjectDir, S3Options};

#[derive(Debug, Clone)]
pub(crate) enum Place {
    Local(PathBuf),
    Object(ObjectDir),
}

impl Place {
    /// The directory `root` (a path or an `s3://` URL).
    pub fn root(root: &Path) -> Result<Self> {
        let text = root.to_string_lossy();
        if crate::storage::is_object_url(&text) {
            let dir = ObjectDir::open(&text, &S3Options::default()).map_err(|err| {
                BrookError::invalid(format!("checkpoint directory {text}: {err}"))
            })?;
            return Ok(Place::Object(dir));
        }
        Ok(Place::Local(root.to_path_buf()))
    }

    /// Makes sure the directory can be used: created locally, its bucket
    /// reached in an object store.
    pub fn prepare(&self) -> Result<()> {
        match self {
            Place::Local(dir) => {
                fs::create_dir_all(dir).map_err(|err| io_error(dir, "create", err))
            }
            Place::Object(dir) => dir.check_blocking(),
        }
    }

    /// The directory `name` in this one.
    pub fn join(&self, name: &str) -> Self {
        match self {
            Place::Local(dir) => Place::Local(dir.join(name)),
            Place::Object(dir) => Place::Object(dir.subdir(name)),
        }
    }

    /// The directory, for messages.
    pub fn show(&self) -> String {
        match self {
            Place::Local(dir) => dir.display().to_string(),
            Place::Object(dir) => dir.url(),
        }
    }

    /// The file `name`, for messages.
    pub fn show_file(&self, name: &str) -> String {
        match self {
            Place::Local(dir) => dir.join(name).display().to_string(),
            Place::Object(dir) => dir.show(&dir.key(name)),
        }
    }

    /// The names of the files in the directory (and, for [`Place::dirs`],
    /// of the directories).
    fn listing(&self) -> Result<(Vec<String>, Vec<String>)> {
        match self {
            Place::Local(dir) => {
                let entries = fs::read_dir(dir).map_err(|err| io_error(dir, "read", err))?;
                let (mut files, mut dirs) = (Vec::new(), Vec::new());
                for entry in entries.filter_map(|e| e.ok()) {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if entry.path().is_dir() {
                        dirs.push(name);
                    } else {
                        files.push(name);
                    }
                }
                Ok((files, dirs))
            }
            Place::Object(dir) => {
                let (store, prefix) = (Arc::clone(dir.store()), dir.prefix().clone());
                let listing = crate::storage::io::block_on(async move {
                    store.list_with_delimiter(Some(&prefix)).await
                })?
                .map_err(|err| dir.error("cannot list checkpoints in", &err))?;
                let files = listing
                    .objects
                    .iter()
                    .filter_map(|o| dir.name_of(&o.location))
                    .collect();
                let dirs = listing
                    .common_prefixes
                    .iter()
                    .filter_map(|p| dir.name_of(p))
                    .collect();
                Ok((files, dirs))
            }
        }
    }

    /// The names of the files in the directory.
    pub fn files(&self) -> Result<Vec<String>> {
        Ok(self.listing()?.0)
    }

    /// The names of the directories in the directory.
    pub fn dirs(&self) -> Result<Vec<String>> {
        Ok(self.listing()?.1)
    }

    /// The bytes of file `name`.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        match self {
            Place::Local(dir) => {
                let path = dir.join(name);
                fs::read(&path).map_err(|source| BrookError::Io {
                    context: format!("cannot read checkpoint {}", path.display()),
                    source,
                })
            }
            Place::Object(dir) => {
                let (store, key) = (Arc::clone(dir.store()), dir.key(name));
                crate::storage::io::block_on(async move {
                    match store.get(&key).await {
                        Ok(got) => got.bytes().await.map(|b| b.to_vec()),
                        Err(err) => Err(err),
                    }
                })?
                .map_err(|err| {
                    BrookError::external(
                        format!("cannot read checkpoint {}", self.show_file(name)),
                        crate::storage::describe(&err),
                    )
                })
            }
        }
    }

    /// Writes file `name` whole, in one atomic step (see the module).
    pub fn write(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            Place::Local(dir) => {
                let path = dir.join(name);
                // The temporary name is the checkpoint's own (not a random
                // one), so that a run killed while writing leaves nothing
                // the next write does not replace.
                let temporary = dir.join(format!(".{name}.tmp"));
                let write = || -> std::io::Result<()> {
                    let mut out = fs::File::create(&temporary)?;
                    out.write_all(&bytes)?;
                    out.sync_all()?;
                    fs::rename(&temporary, &path)?;
                    // The rename itself is durable once the directory is synced.
                    fs::File::open(dir)?.sync_all()
                };
                write().map_err(|err| io_error(&path, "write", err))
            }
            Place::Object(dir) => {
                let (store, key) = (Arc::clone(dir.store()), dir.key(name));
                crate::storage::io::block_on(async move {
                    store.put(&key, PutPayload::from(bytes)).await
                })?
                .map(|_| ())
                .map_err(|err| {
                    BrookError::external(
                        format!("cannot write checkpoint {}", self.show_file(name)),
                        crate::storage::describe(&err),
                    )
                })
            }
        }
    }

    /// Removes file `name`; one that cannot be removed is only space.
    pub fn remove(&self, name: &str) {
        match self {
            Place::Local(dir) => {
                let _ = fs::remove_file(dir.join(name));
            }
            Place::Object(dir) => {
                let (store, key) = (Arc::clone(dir.store()), dir.key(name));
                let _ = crate::storage::io::block_on(async move { store.delete(&key).await });
            }
        }
    }
}

pub(crate) fn io_error(path: &Path, action: &str, err: std::io::Error) -> BrookError {
    BrookError::Io {
        context: format!("cannot {action} checkpoint {}", path.display()),
        source: err,
    }
}
