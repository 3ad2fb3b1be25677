//! Checkpoints: a query's engine state after a batch, written to a
//! checkpoint directory once the batch's output has been handled, and read
//! back when the same query starts again with the same directory.
//!
//! Layout: `DIR/<query name>/batch-<number>.ckpt`, one file per committed
//! batch (see [`file`] for its format: a header with the query's SQL and
//! the batch, the state as Arrow IPC, a checksum). Each file is written to a
//! temporary name, synced, and renamed, and the directory synced, so a torn
//! write is never taken for a checkpoint; a file whose checksum does not
//! match is skipped with a warning and the one before it is used. The newest
//! [`KEPT_CHECKPOINTS`] files are kept.
//!
//! `DIR` may be `s3://bucket/prefix` (see [`place`]): each checkpoint is
//! then one PUT, visible whole or not at all.

pub(crate) mod file;
pub(crate) mod place;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{BrookError, Result};
pub use file::CheckpointHeader;
use place::Place;

/// How many checkpoints of a query are kept (the newest).
pub const KEPT_CHECKPOINTS: usize = 3;

/// The checkpoints of one query in a checkpoint directory.
#[derive(Debug, Clone)]
pub struct QueryCheckpoints {
    /// `DIR/<query name>`.
    dir: Place,
    /// The query's name.
    name: String,
    /// The query's SQL (credentials masked), which a checkpoint must match
    /// to be restored.
    sql: String,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Restored {
    /// What the checkpoint says of itself.
    pub header: CheckpointHeader,
    /// The engine state.
    pub state: Vec<RecordBatch>,
    /// Newer checkpoint files that could not be read, each with why.
    pub skipped: Vec<String>,
}

impl QueryCheckpoints {
    /// The checkpoints of query `name` (its SQL `sql`) under `root`,
    /// creating the directory.
    pub fn open(root: &Path, name: &str, sql: &str) -> Result<Self> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(BrookError::invalid(format!(
                "'{name}' cannot name a query's checkpoints (no '/', no leading '.')"
            )));
        }
        let dir = Place::root(root)?.join(name);
        dir.prepare()?;
        Ok(Self {
            dir,
            name: name.to_string(),
            sql: sql.to_string(),
        })
    }

    /// Where they are kept: a path or an `s3://` URL.
    pub fn dir(&self) -> String {
        self.dir.show()
    }

    /// The newest readable checkpoint, if any. Fails when it was taken for
    /// a different SQL text: the state would not fit.
    pub fn latest(&self) -> Result<Option<Restored>> {
        let mut skipped = Vec::new();
        for (batch, name) in list(&self.dir)?.into_iter().rev() {
            match self.dir.read(&name).and_then(|bytes| file::decode(&bytes)) {
                Ok((header, state)) => {
                    if header.sql != self.sql {
                        return Err(BrookError::invalid(format!(
                            "query '{}' has checkpoints in {} for different SQL:\n  {}\nIt is now:\n  {}\nRemove that directory (or use another checkpoint directory) to start this query afresh.",
                            self.name,
                            self.dir.show(),
                            header.sql,
                            self.sql
                        )));
                    }
                    return Ok(Some(Restored {
                        header,
                        state,
                        skipped,
                    }));
                }
                Err(err) => skipped.push(format!(
                    "checkpoint {} of query '{}' ({}) cannot be read and is skipped: {err}",
                    batch,
                    self.name,
                    self.dir.show_file(&name)
                )),
            }
        }
        if skipped.is_empty() {
            Ok(None)
        } else {
            Ok(Some(Restored {
                header: CheckpointHeader::empty(&self.sql),
                state: Vec::new(),
                skipped,
            }))
        }
    }

    /// Writes the state after batch `batch` (cut at `batch_time`) durably,
    /// then removes all but the newest [`KEPT_CHECKPOINTS`]. Returns the
    /// file's size in bytes.
    pub fn commit(
        &self,
        batch: u64,
        batch_time: DateTime<Utc>,
        state: &[RecordBatch],
        positions: BTreeMap<String, serde_json::Value>,
    ) -> Result<u64> {
        let header = CheckpointHeader {
            sql: self.sql.clone(),
            batch,
            batch_time,
            written: Utc::now(),
            positions,
        };
        let bytes = file::encode(&header, state)?;
        let size = bytes.len() as u64;
        self.dir.write(&file_name(batch), bytes)?;
        for (_, old) in list(&self.dir)?.iter().rev().skip(KEPT_CHECKPOINTS) {
            self.dir.remove(old);
        }
        Ok(size)
    }
}

/// `batch-0000000042.ckpt`: names sort by batch.
fn file_name(batch: u64) -> String {
    format!("batch-{batch:010}.ckpt")
}

/// The checkpoint files in `dir`, oldest first, with their batch numbers.
fn list(dir: &Place) -> Result<Vec<(u64, String)>> {
    let mut files: Vec<(u64, String)> = dir
        .files()?
        .into_iter()
        .filter_map(|name| {
            let batch = name
                .strip_prefix("batch-")?
                .strip_suffix(".ckpt")?
                .parse::<u64>()
                .ok()?;
            Some((batch, name))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// One line per query and checkpoint in `root`, for `brook checkpoints`:
/// the query, the batch, when it was written, its size, and whether it
/// reads.
pub fn describe_dir(root: &Path) -> Result<Vec<String>> {
    let root = Place::root(root)?;
    let mut lines = Vec::new();
    let mut queries = root.dirs()?;
    queries.sort();
    for name in queries {
        let query = root.join(&name);
        for (batch, file_name) in list(&query)? {
            let read = query.read(&file_name);
            let size = read.as_ref().map(|b| b.len()).unwrap_or(0);
            let line = match read.and_then(|bytes| file::decode(&bytes)) {
                Ok((header, state)) => format!(
                    "{name}\tbatch {batch}\twritten {}\t{size} bytes\t{} state batches\t{}\t{}",
                    header.written.format("%Y-%m-%d %H:%M:%S%.3f"),
                    state.len(),
                    serde_json::to_string(&header.positions).unwrap_or_default(),
                    crate::redact::redact_secrets(&header.sql).replace('\n', " ")
                ),
                Err(err) => format!("{name}\tbatch {batch}\tunreadable: {err}"),
            };
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Makes the checkpoint directory `root` ready: created, or its bucket
/// reached (a missing bucket or refused credentials is an error now).
pub fn prepare_root(root: &Path) -> Result<()> {
    Place::root(root)?.prepare()
}

/// The name of a query's checkpoints when the user gave none: `query-`
/// and a hash of its SQL text, so that the same statement finds its
/// checkpoints again and a changed one starts afresh.
pub fn default_query_name(sql: &str) -> String {
    let normalized: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("query-{:016x}", file::fnv1a(normalized.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::fs;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A fresh directory under the system's temporary directory.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "brook-checkpoint-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn state(value: i64) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap();
        vec![crate::engine::state::label(batch, crate::engine::state::Part::Running).unwrap()]
    }

    #[test]
    fn the_newest_readable_checkpoint_is_restored_and_old_ones_are_removed() {
        let root = TempDir::new();
        let checkpoints = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        assert!(checkpoints.latest().unwrap().is_none());
        for batch in 1..=5 {
            checkpoints
                .commit(batch, Utc::now(), &state(batch as i64), BTreeMap::new())
                .unwrap();
        }
        assert_eq!(list(&checkpoints.dir).unwrap().len(), KEPT_CHECKPOINTS);
        let restored = checkpoints.latest().unwrap().unwrap();
        assert_eq!(restored.header.batch, 5);
        assert_eq!(restored.state, state(5));
        assert!(restored.skipped.is_empty());
    }

    #[test]
    fn a_corrupt_or_truncated_checkpoint_is_skipped_for_the_one_before() {
        let root = TempDir::new();
        let checkpoints = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        for batch in 1..=3 {
            checkpoints
                .commit(batch, Utc::now(), &state(batch as i64), BTreeMap::new())
                .unwrap();
        }
        // Batch 3 torn, batch 2 with a flipped byte.
        let dir = root.path().join("q");
        let files: Vec<(u64, PathBuf)> = list(&checkpoints.dir)
            .unwrap()
            .into_iter()
            .map(|(batch, name)| (batch, dir.join(name)))
            .collect();
        let last = fs::read(&files[2].1).unwrap();
        fs::write(&files[2].1, &last[..last.len() / 2]).unwrap();
        let mut second = fs::read(&files[1].1).unwrap();
        let middle = second.len() / 2;
        second[middle] ^= 0x40;
        fs::write(&files[1].1, &second).unwrap();
        let restored = checkpoints.latest().unwrap().unwrap();
        assert_eq!(restored.header.batch, 1);
        assert_eq!(restored.state, state(1));
        assert_eq!(restored.skipped.len(), 2, "{:?}", restored.skipped);
    }

    #[test]
    fn a_checkpoint_of_different_sql_is_refused_saying_how_to_start_afresh() {
        let root = TempDir::new();
        QueryCheckpoints::open(root.path(), "q", "SELECT 1")
            .unwrap()
            .commit(1, Utc::now(), &state(1), BTreeMap::new())
            .unwrap();
        let err = QueryCheckpoints::open(root.path(), "q", "SELECT 2")
            .unwrap()
            .latest()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("different SQL") && err.contains("Remove"),
            "{err}"
        );
    }

    #[test]
    fn default_names_follow_the_sql_text_not_its_spacing() {
        assert_eq!(
            default_query_name("SELECT a\n  FROM s"),
            default_query_name("SELECT a FROM s")
        );
        assert_ne!(
            default_query_name("SELECT a FROM s"),
            default_query_name("SELECT b FROM s")
        );
    }
}
