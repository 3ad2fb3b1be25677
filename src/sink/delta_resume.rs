//! Where a Delta sink starts again. Its commits carry its application
//! transaction (app id, version = batch number), so the table says which
//! batches it holds. A query restored from its checkpoint after batch B
//! replays the batches after B, cut afresh from the sources' positions at
//! B (not necessarily where the crashed run cut them), so the commits the
//! crashed run made for batches after B are undone first: a Delta RESTORE
//! to the version that held batch B, committed with the transaction back
//! at B. Only this sink's commits are undone: if another writer committed
//! after them, the sink refuses to start rather than undo its work.
//!
//! A fresh start (no checkpoint) keeps what the table holds and commits
//! the transaction back to 0, as its batches are numbered from 1 again.

use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};

use crate::error::{BrookError, Result};

fn failed(doing: &str) -> impl Fn(DeltaTableError) -> BrookError + '_ {
    move |err| BrookError::external(format!("Delta table: cannot {doing}"), err.to_string())
}

/// Commits transaction `app_id` at version 0, without rows (logged as a
/// streaming update).
pub(super) async fn reset(table: &mut DeltaTable, app_id: &str) -> Result<()> {
    let properties = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id.to_string(), 0));
    let snapshot = table
        .snapshot()
        .map_err(failed("reset the sink's progress"))?;
    CommitBuilder::from(properties)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: app_id.to_string(),
                epoch_id: 0,
            },
        )
        .await
        .map_err(failed("reset the sink's progress"))?;
    table
        .update_state()
        .await
        .map_err(failed("reset the sink's progress"))
}

/// The version of transaction `app_id` that commit `version` carries, if
/// it carries one.
async fn commit_batch(table: &DeltaTable, app_id: &str, version: u64) -> Result<Option<i64>> {
    let Some(bytes) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(failed("read its log"))?
    else {
        return Ok(None);
    };
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if action["txn"]["appId"].as_str() == Some(app_id) {
            return Ok(action["txn"]["version"].as_i64());
        }
    }
    Ok(None)
}

/// Undoes this sink's commits of batches after `batch` (see the module).
pub(super) async fn undo_after(table: DeltaTable, app_id: &str, batch: u64) -> Result<DeltaTable> {
    let latest = table.version().unwrap_or(0);
    let mut target = None;
    for version in (0..=latest).rev() {
        match commit_batch(&table, app_id, version).await? {
            Some(held) if held > batch as i64 => continue,
            // At or before the checkpoint; or the table's first version
            // (created without rows, or by someone else before the sink).
            Some(_) | None if version == 0 => {
                target = Some(version);
                break;
            }
            Some(_) => {
                target = Some(version);
                break;
            }
            None => {
                return Err(BrookError::invalid(format!(
                    "the Delta table holds batches of this sink after batch {batch} (its checkpoint), and version {version} was committed by another writer after them; brook will not undo another writer's commit. Restore the table (RESTORE) or start afresh without the checkpoint"
                )));
            }
        }
    }
    let target = target.ok_or_else(|| {
        BrookError::invalid(format!(
            "the Delta table holds no commit of this sink at or before batch {batch}"
        ))
    })?;
    let properties = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id.to_string(), batch as i64));
    let (restored, _metrics) = table
        .restore()
        .with_version_to_restore(target)
        .with_commit_properties(properties)
        .await
        .map_err(failed("undo the batches after the checkpoint"))?;
    Ok(restored)
}
