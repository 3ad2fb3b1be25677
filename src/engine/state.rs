//! Engine state as Arrow record batches, for checkpoints: each batch of a
//! snapshot carries a label in its schema metadata saying which [`Part`] of
//! the state it is, so that a snapshot written as Arrow IPC restores itself.
//! Labels are written and read here only, as [`Part`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{BrookError, Result};

/// The schema metadata key holding a state batch's label.
const LABEL_KEY: &str = "brook.state";

/// What part of an engine's state a snapshot batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// A processing-time window's counters (batches seen, last emitted).
    Sliding,
    /// `RUNNING`'s merged state (as of its base, see `running`).
    Running,
    /// A batch's partial aggregate since a `RUNNING` state's base.
    RunningPane,
    /// The current rows of a changelog a `RUNNING` query reads.
    ChangelogRows,
    /// An event-time query's clock (watermarks, late counts).
    EventClock,
    /// The starts of the event-time windows not yet emitted.
    OpenWindows,
    /// `SESSION`'s open sessions.
    Sessions,
    /// A pane's partial state (`input` is `None`) or one input's rows.
    Pane { start: i64, input: Option<usize> },
    /// The keys of the panes a [`super::two_stacks::TwoStacks`] holds, oldest first.
    PaneKeys,
    /// A pane on the front (newest) stack of a `TwoStacks`.
    Front,
    /// A pane on the back (oldest) stack of a `TwoStacks`.
    Back,
    /// The back stack merged.
    BackMerged,
    /// An interval join side's watermark clock (0: left, 1: right).
    JoinClock { side: usize },
    /// Rows an interval join side holds, with their ids.
    JoinRows { side: usize },
    /// The ids of an interval join side's held rows that matched.
    JoinMatched { side: usize },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Sliding => f.write_str("sliding"),
            Part::Running => f.write_str("running"),
            Part::RunningPane => f.write_str("running_pane"),
            Part::ChangelogRows => f.write_str("changelog_rows"),
            Part::EventClock => f.write_str("event_clock"),
            Part::OpenWindows => f.write_str("open_windows"),
            Part::Sessions => f.write_str("sessions"),
            Part::Pane { start, input: None } => write!(f, "pane:{start}"),
            Part::Pane {
                start,
                input: Some(input),
            } => write!(f, "pane:{start}:{input}"),
            Part::PaneKeys => f.write_str("pane_keys"),
            Part::Front => f.write_str("front"),
            Part::Back => f.write_str("back"),
            Part::BackMerged => f.write_str("back_merged"),
            Part::JoinClock { side } => write!(f, "join_clock:{side}"),
            Part::JoinRows { side } => write!(f, "join_rows:{side}"),
            Part::JoinMatched { side } => write!(f, "join_matched:{side}"),
        }
    }
}

impl Part {
    /// The part a label names, if it names one.
    fn parse(label: &str) -> Option<Part> {
        let part = match label {
            "sliding" => Part::Sliding,
            "running" => Part::Running,
            "running_pane" => Part::RunningPane,
            "changelog_rows" => Part::ChangelogRows,
            "event_clock" => Part::EventClock,
            "open_windows" => Part::OpenWindows,
            "sessions" => Part::Sessions,
            "pane_keys" => Part::PaneKeys,
            "front" => Part::Front,
            "back" => Part::Back,
            "back_merged" => Part::BackMerged,
            _ => {
                if let Some((kind, side)) = label.split_once(':')
                    && let Some(make) = join_part(kind)
                {
                    return Some(make(side.parse().ok()?));
                }
                let mut fields = label.strip_prefix("pane:")?.split(':');
                let start = fields.next()?.parse().ok()?;
                let input = match fields.next() {
                    None => None,
                    Some(input) => Some(input.parse().ok()?),
                };
                if fields.next().is_some() {
                    return None;
                }
                Part::Pane { start, input }
            }
        };
        Some(part)
    }
}

/// The join part a label's kind names.
fn join_part(kind: &str) -> Option<fn(usize) -> Part> {
    match kind {
        "join_clock" => Some(|side| Part::JoinClock { side }),
        "join_rows" => Some(|side| Part::JoinRows { side }),
        "join_matched" => Some(|side| Part::JoinMatched { side }),
        _ => None,
    }
}

/// `batch` labelled as `part`.
pub(crate) fn label(batch: RecordBatch, part: Part) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut metadata: HashMap<String, String> = schema.metadata().clone();
    metadata.insert(LABEL_KEY.to_string(), part.to_string());
    let schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
    Ok(batch.with_schema(schema)?)
}

/// The part a state batch holds; an error names a batch brook did not
/// label (a checkpoint written by something else, or damaged).
pub(crate) fn part_of(batch: &RecordBatch) -> Result<Part> {
    let label = batch.schema_ref().metadata().get(LABEL_KEY);
    label
        .and_then(|label| Part::parse(label))
        .ok_or_else(|| match label {
            Some(label) => BrookError::Internal(format!(
                "a checkpoint's state holds a part labelled '{label}', which brook does not write"
            )),
            None => BrookError::Internal("a checkpoint's state holds an unlabelled batch".into()),
        })
}

/// `batch` without its label, with the schema it had before labelling.
pub(crate) fn unlabel(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut metadata = schema.metadata().clone();
    metadata.remove(LABEL_KEY);
    let schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema,
        batch.columns().to_vec(),
        &options,
    )?)
}

#[cfg(test)]
mod tests {
    use super::Part;

    #[test]
    fn every_part_reads_back_as_itself() {
        let parts = [
            Part::Sliding,
            Part::Running,
            Part::RunningPane,
            Part::EventClock,
            Part::OpenWindows,
            Part::Sessions,
            Part::Pane {
                start: -60_000,
                input: None,
            },
            Part::Pane {
                start: 1_700_000_000_000,
                input: Some(2),
            },
            Part::PaneKeys,
            Part::Front,
            Part::Back,
            Part::BackMerged,
            Part::JoinClock { side: 0 },
            Part::JoinRows { side: 1 },
            Part::JoinMatched { side: 1 },
        ];
        for part in parts {
            assert_eq!(Part::parse(&part.to_string()), Some(part), "{part}");
        }
        for label in [
            "pane:",
            "pane:x",
            "pane:1:2:3",
            "pane:1:-1",
            "window",
            "join_rows:",
            "join_rows:x",
        ] {
            assert_eq!(Part::parse(label), None, "{label}");
        }
    }
}
