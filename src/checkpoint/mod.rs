//! Checkpoints: a query's engine state after a batch, written to a
//! checkpoint directory once the batch's output has been handled, and read
//! back when the same query starts again with the same directory.
//!
//! Layout: `DIR/<query name>/batch-<number>.ckpt`, one file per committed
//! batch (see [`file`] for its format: a header with the query's SQL and
//! the batch, the state as Arrow IPC, a checksum). Each file is written to a
//! temporary name, synced, and renamed, and the directory synced, so a torn
//! write is never taken for a checkpoint; a file whose checksum does not
//! match is skipped with a warning and the one before it is used.
//!
//! Checkpoints are incremental: a state is a list of record batches
//! (panes, stacks, clocks), and a batch of the state that is the very
//! same in memory as one the previous checkpoint wrote or restored (the
//! same Arrow arrays, which never change once made) is not written again:
//! the new file's layout names it where it is already held. So a window
//! of 100 panes writes its new pane and its small counters, not the 100.
//! A batch is held again by a new file once the file holding it is
//! [`REWRITE_AFTER`] checkpoints old, so a restore reads at most that many
//! files. The newest [`KEPT_CHECKPOINTS`] checkpoints are kept, with every
//! older file they read.
//!
//! `DIR` may be `s3://bucket/prefix` (see [`place`]): each checkpoint is
//! then one PUT, visible whole or not at all.

pub(crate) mod file;
pub(crate) mod place;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::error::{BrookError, Result};
pub use file::CheckpointHeader;
use file::{CheckpointFile, PartAt};
use place::Place;

/// How many checkpoints of a query are kept (the newest), besides the
/// older files they read.
pub const KEPT_CHECKPOINTS: usize = 3;

/// A state batch held by a checkpoint file this many checkpoints old is
/// written again by the next one: a restore reads at most this many files.
pub const REWRITE_AFTER: usize = 32;

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
    /// What the newest checkpoint written or restored holds where.
    last: Arc<Mutex<LastCheckpoint>>,
}

/// The newest checkpoint written or restored, for the next one to refer to.
#[derive(Default)]
struct LastCheckpoint {
    /// Its state's batches, each with where it is held. Holding the
    /// batches keeps their arrays alive, so an array at the same address
    /// later is the same array.
    parts: Vec<(RecordBatch, PartAt)>,
    /// The batches of the newest checkpoint files, oldest first (at most
    /// [`REWRITE_AFTER`]).
    recent: VecDeque<u64>,
    /// Per checkpoint file, the files its layout reads (itself among them).
    reads: BTreeMap<u64, BTreeSet<u64>>,
}

impl std::fmt::Debug for LastCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastCheckpoint")
            .field("parts", &self.parts.len())
            .field("recent", &self.recent)
            .finish_non_exhaustive()
    }
}

impl LastCheckpoint {
    /// Where `batch` is already held, when it is the same in memory as a
    /// part of the last checkpoint held by one of the newest files.
    fn find(
        &self,
        batch: &RecordBatch,
        by_first_column: &HashMap<*const (), Vec<usize>>,
        usable_from: u64,
    ) -> Option<PartAt> {
        let candidates = by_first_column.get(&first_column(batch))?;
        candidates.iter().find_map(|&i| {
            let (held, at) = &self.parts[i];
            (at.batch >= usable_from && same_in_memory(held, batch)).then_some(*at)
        })
    }

    /// Notes checkpoint `batch` (its state and layout) as the newest.
    fn remember(&mut self, batch: u64, state: &[RecordBatch], layout: &[PartAt]) {
        self.parts = state.iter().cloned().zip(layout.iter().copied()).collect();
        if self.recent.back() != Some(&batch) {
            self.recent.push_back(batch);
        }
        while self.recent.len() > REWRITE_AFTER {
            self.recent.pop_front();
        }
        self.reads.insert(batch, files_read(batch, layout));
    }
}

/// The files checkpoint `batch` of `layout` reads, itself among them.
fn files_read(batch: u64, layout: &[PartAt]) -> BTreeSet<u64> {
    layout
        .iter()
        .map(|at| at.batch)
        .chain(std::iter::once(batch))
        .collect()
}

/// The address of a batch's first array (null for a batch of no columns).
fn first_column(batch: &RecordBatch) -> *const () {
    batch
        .columns()
        .first()
        .map_or(std::ptr::null(), |column| Arc::as_ptr(column) as *const ())
}

/// Whether two batches are the same arrays under the same schema (so the
/// same bytes, arrays being immutable).
fn same_in_memory(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_rows() == b.num_rows()
        && a.num_columns() == b.num_columns()
        && a.columns()
            .iter()
            .zip(b.columns())
            .all(|(x, y)| std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(y)))
        && a.schema_ref() == b.schema_ref()
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
            last: Arc::default(),
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
        let files = list(&self.dir)?;
        for (batch, name) in files.iter().rev() {
            match self.read_whole(*batch, name) {
                Ok((header, state, layout)) => {
                    if header.sql != self.sql {
                        return Err(BrookError::invalid(format!(
                            "query '{}' has checkpoints in {} for different SQL:\n  {}\nIt is now:\n  {}\nRemove that directory (or use another checkpoint directory) to start this query afresh.",
                            self.name,
                            self.dir.show(),
                            header.sql,
                            self.sql
                        )));
                    }
                    let mut last = self.last.lock();
                    *last = LastCheckpoint::default();
                    for (older, _) in files.iter().filter(|(older, _)| older < batch) {
                        last.recent.push_back(*older);
                    }
                    last.remember(*batch, &state, &layout);
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
                    self.dir.show_file(name)
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

    /// Checkpoint `batch` (file `name`) with its whole state: the batches
    /// it holds and those it names in older files.
    fn read_whole(
        &self,
        batch: u64,
        name: &str,
    ) -> Result<(CheckpointHeader, Vec<RecordBatch>, Vec<PartAt>)> {
        let CheckpointFile {
            header,
            layout,
            held,
        } = file::decode(&self.dir.read(name)?)?;
        let mut older: HashMap<u64, Vec<RecordBatch>> = HashMap::new();
        let mut state = Vec::with_capacity(layout.len());
        for at in &layout {
            let holder: &Vec<RecordBatch> = if at.batch == batch {
                &held
            } else {
                match older.entry(at.batch) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(unknown) => {
                        let bytes = self.dir.read(&file_name(at.batch))?;
                        let file = file::decode(&bytes).map_err(|err| {
                            BrookError::external(
                                format!("the older checkpoint {} it reads", at.batch),
                                err.to_string(),
                            )
                        })?;
                        unknown.insert(file.held)
                    }
                }
            };
            let part = holder.get(at.index as usize).ok_or_else(|| {
                BrookError::external(
                    "not a whole brook checkpoint",
                    format!("checkpoint {} holds no batch {}", at.batch, at.index + 1),
                )
            })?;
            state.push(part.clone());
        }
        Ok((header, state, layout))
    }

    /// Writes the state after batch `batch` (cut at `batch_time`) durably,
    /// then removes the files no longer needed (see the module). Returns
    /// the file's size in bytes.
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
        let mut last = self.last.lock();
        // A batch held by a file older than the newest REWRITE_AFTER - 1 is
        // written again.
        let usable_from = last
            .recent
            .iter()
            .rev()
            .nth(REWRITE_AFTER.saturating_sub(2))
            .copied()
            .unwrap_or(0);
        let mut by_first_column: HashMap<*const (), Vec<usize>> = HashMap::new();
        for (i, (held, _)) in last.parts.iter().enumerate() {
            by_first_column
                .entry(first_column(held))
                .or_default()
                .push(i);
        }
        let mut layout = Vec::with_capacity(state.len());
        let mut held = Vec::new();
        for part in state {
            let at = last
                .find(part, &by_first_column, usable_from)
                .filter(|at| at.batch < batch)
                .unwrap_or_else(|| {
                    held.push(part.clone());
                    PartAt {
                        batch,
                        index: (held.len() - 1) as u32,
                    }
                });
            layout.push(at);
        }
        let bytes = file::encode(&header, &layout, &held)?;
        let size = bytes.len() as u64;
        self.dir.write(&file_name(batch), bytes)?;
        last.remember(batch, state, &layout);
        self.remove_unneeded(&mut last)?;
        Ok(size)
    }

    /// Removes the files that neither are among the newest
    /// [`KEPT_CHECKPOINTS`] checkpoints nor hold a batch one of those reads.
    fn remove_unneeded(&self, last: &mut LastCheckpoint) -> Result<()> {
        let files = list(&self.dir)?;
        let mut needed = BTreeSet::new();
        for (batch, name) in files.iter().rev().take(KEPT_CHECKPOINTS) {
            if !last.reads.contains_key(batch) {
                // A file of an earlier run: its layout says.
                let read = self
                    .dir
                    .read(name)
                    .and_then(|bytes| file::decode(&bytes))
                    .map(|file| files_read(*batch, &file.layout))
                    .unwrap_or_else(|_| BTreeSet::from([*batch]));
                last.reads.insert(*batch, read);
            }
            needed.extend(last.reads[batch].iter().copied());
        }
        for (batch, name) in &files {
            if !needed.contains(batch) {
                self.dir.remove(name);
                last.reads.remove(batch);
            }
        }
        Ok(())
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
                Ok(CheckpointFile {
                    header,
                    layout,
                    held,
                }) => format!(
                    "{name}\tbatch {batch}\twritten {}\t{size} bytes\t{} state batches ({} held here)\t{}\t{}",
                    header.written.format("%Y-%m-%d %H:%M:%S%.3f"),
                    layout.len(),
                    held.len(),
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

    /// Commits checkpoint `batch` of a state of two batches: `kept`, and
    /// one made for this batch.
    fn commit_kept_and_new(checkpoints: &QueryCheckpoints, batch: u64, kept: &RecordBatch) {
        let new = state(batch as i64).remove(0);
        checkpoints
            .commit(batch, Utc::now(), &[kept.clone(), new], BTreeMap::new())
            .unwrap();
    }

    /// The layout of checkpoint `batch`, and how many batches it holds.
    fn layout_of(checkpoints: &QueryCheckpoints, batch: u64) -> (Vec<PartAt>, usize) {
        let file = file::decode(&checkpoints.dir.read(&file_name(batch)).unwrap()).unwrap();
        (file.layout, file.held.len())
    }

    #[test]
    fn a_state_batch_unchanged_since_the_last_checkpoint_is_named_not_written_again() {
        let root = TempDir::new();
        let checkpoints = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        let kept = state(100).remove(0);
        for batch in 1..=5u64 {
            commit_kept_and_new(&checkpoints, batch, &kept);
        }
        // Batch 1's file holds `kept`; the later ones hold only their own.
        let at_one = PartAt { batch: 1, index: 0 };
        assert_eq!(
            layout_of(&checkpoints, 1),
            (vec![at_one, PartAt { batch: 1, index: 1 }], 2)
        );
        assert_eq!(
            layout_of(&checkpoints, 5),
            (vec![at_one, PartAt { batch: 5, index: 0 }], 1)
        );
        // Batch 1's file stays while a kept checkpoint reads it; 2 goes.
        let batches: Vec<u64> = list(&checkpoints.dir)
            .unwrap()
            .iter()
            .map(|(b, _)| *b)
            .collect();
        assert_eq!(batches, vec![1, 3, 4, 5]);
        // Read back by a new run: the whole state, in order.
        let again = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        let restored = again.latest().unwrap().unwrap();
        assert_eq!(restored.header.batch, 5);
        assert_eq!(restored.state, vec![kept.clone(), state(5).remove(0)]);
        // The restored batches are known to the new run: its next
        // checkpoint names them too.
        again
            .commit(6, Utc::now(), &restored.state, BTreeMap::new())
            .unwrap();
        assert_eq!(
            layout_of(&again, 6),
            (vec![at_one, PartAt { batch: 5, index: 0 }], 0)
        );
    }

    #[test]
    fn a_batch_held_by_an_old_file_is_written_again_so_a_restore_reads_few_files() {
        let root = TempDir::new();
        let checkpoints = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        let kept = state(7).remove(0);
        let last = 3 * REWRITE_AFTER as u64;
        for batch in 1..=last {
            commit_kept_and_new(&checkpoints, batch, &kept);
            let (layout, _) = layout_of(&checkpoints, batch);
            assert!(
                layout[0].batch + REWRITE_AFTER as u64 > batch,
                "batch {batch} reads {:?}",
                layout[0]
            );
        }
        let files = list(&checkpoints.dir).unwrap();
        assert!(files.len() <= REWRITE_AFTER + KEPT_CHECKPOINTS, "{files:?}");
        let restored = checkpoints.latest().unwrap().unwrap();
        assert_eq!(restored.state, vec![kept, state(last as i64).remove(0)]);
    }

    #[test]
    fn a_checkpoint_whose_older_file_is_damaged_is_skipped_naming_that_file() {
        let root = TempDir::new();
        let checkpoints = QueryCheckpoints::open(root.path(), "q", "SELECT 1").unwrap();
        let kept = state(100).remove(0);
        for batch in 1..=3u64 {
            commit_kept_and_new(&checkpoints, batch, &kept);
        }
        let first = root.path().join("q").join(file_name(1));
        let mut bytes = fs::read(&first).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&first, bytes).unwrap();
        let restored = checkpoints.latest().unwrap().unwrap();
        assert_eq!(restored.header.batch, 0, "nothing whole is left");
        assert_eq!(restored.skipped.len(), 3, "{:?}", restored.skipped);
        assert!(
            restored.skipped[0].contains("the older checkpoint 1 it reads"),
            "{:?}",
            restored.skipped
        );
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
