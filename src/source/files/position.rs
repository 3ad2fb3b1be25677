//! Where a directory stream stands: the files it took, and which rows of
//! which files each inbox item ends after (what a checkpoint records).

use std::collections::HashSet;
use std::ffi::OsString;

/// Where a directory stream stands: the files whose rows were all
/// consumed (or that are never read: present at the start under
/// `start = 'new'`), and the rows consumed of files read in part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FilePosition {
    pub(super) done: Vec<String>,
    pub(super) partial: Vec<(String, u64)>,
}

impl FilePosition {
    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "done": self.done,
            "partial": self.partial.iter().map(|(file, rows)| serde_json::json!({"file": file, "rows": rows})).collect::<Vec<_>>(),
        })
    }

    pub(super) fn from_json(value: &serde_json::Value) -> Option<Self> {
        let done = value["done"]
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?;
        let partial = value["partial"]
            .as_array()?
            .iter()
            .map(|v| Some((v["file"].as_str()?.to_string(), v["rows"].as_u64()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { done, partial })
    }
}

/// The history behind [`FilesSource::position_after`].
#[derive(Debug, Default)]
pub(super) struct FilePositions {
    /// Files done before the history starts.
    pub(super) done: Vec<String>,
    /// In push order: the inbox items pushed once a piece of a file was
    /// queued, the file, its rows queued so far, and whether it is whole.
    pub(super) log: std::collections::VecDeque<(u64, String, u64, bool)>,
}

impl FilePositions {
    pub(super) fn position_after(&self, items: u64) -> FilePosition {
        let mut done = self.done.clone();
        let mut partial: Vec<(String, u64)> = Vec::new();
        for (after, file, rows, whole) in &self.log {
            if *after > items {
                break;
            }
            partial.retain(|(f, _)| f != file);
            if *whole {
                done.push(file.clone());
            } else {
                partial.push((file.clone(), *rows));
            }
        }
        FilePosition { done, partial }
    }

    /// Folds the history of the first `items` items (finished by every
    /// query) into `done`, keeping the entries a later position needs.
    pub(super) fn compact(&mut self, items: u64) {
        if self.log.len() < 512 {
            return;
        }
        let folded = self.position_after(items);
        // Files read in part at `items` keep their last entry.
        let mut kept: Vec<(u64, String, u64, bool)> = Vec::new();
        while let Some(entry) = self.log.front() {
            if entry.0 > items {
                break;
            }
            if let Some(entry) = self.log.pop_front()
                && folded.partial.iter().any(|(f, _)| *f == entry.1)
            {
                kept.retain(|e| e.1 != entry.1);
                kept.push(entry);
            }
        }
        for entry in kept.into_iter().rev() {
            self.log.push_front(entry);
        }
        self.done = folded.done;
    }
}

/// The files a directory stream has taken, in the order taken. A file is
/// taken once, before it is read: a file that could not be read is not
/// taken again.
#[derive(Debug, Default, Clone)]
pub(crate) struct TakenFiles {
    in_order: Vec<OsString>,
    names: HashSet<OsString>,
}

impl TakenFiles {
    pub(super) fn contains(&self, name: &OsString) -> bool {
        self.names.contains(name)
    }

    /// Records `name` as taken; false if it already was.
    pub(super) fn insert(&mut self, name: OsString) -> bool {
        if !self.names.insert(name.clone()) {
            return false;
        }
        self.in_order.push(name);
        true
    }

    /// The names of the files taken, in the order they were taken.
    #[cfg(test)]
    pub fn in_order(&self) -> &[OsString] {
        &self.in_order
    }
}
