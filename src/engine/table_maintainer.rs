//! The query that keeps a table current from its changelog: each batch's
//! changes are applied to the current row of each key, and the table's
//! rows are published for the plans that read it (see
//! `catalog::changelog_table`). It emits nothing; its checkpoints hold
//! the current rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::current_rows::CurrentRows;
use super::state::{self, Part};
use crate::catalog::changelog_table::CurrentRows as PublishedRows;
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, MicroBatch};

/// A table kept current.
pub(crate) struct TableMaintainer {
    rows: CurrentRows,
    published: Arc<PublishedRows>,
}

impl TableMaintainer {
    /// Keeps `published` current from a changelog of `schema` keyed by
    /// `key`.
    pub fn new(schema: SchemaRef, key: &[String], published: Arc<PublishedRows>) -> Result<Self> {
        Ok(Self {
            rows: CurrentRows::new(schema, key)?,
            published,
        })
    }

    /// Publishes the current rows, without the changelog's `op` column.
    fn publish(&self) -> Result<()> {
        let all = self.rows.all()?;
        let columns: Vec<usize> = (1..all.num_columns()).collect();
        let rows = all.project(&columns)?;
        let rows = RecordBatch::try_new(
            Arc::clone(self.published.schema_ref()),
            rows.columns().to_vec(),
        )?;
        self.published.publish(rows);
        Ok(())
    }
}

#[async_trait]
impl BatchEngine for TableMaintainer {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::empty())
    }

    fn describe(&self) -> String {
        format!(
            "table {} kept current: each change replaces or deletes its key's row; retains the current rows",
            self.published.name
        )
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let mut changed = false;
        for changes in batch.inputs.first().into_iter().flatten() {
            let applied = self.rows.apply(changes)?;
            changed |= applied.added.num_rows() > 0 || applied.retracted.num_rows() > 0;
        }
        if changed {
            self.publish()?;
        }
        Ok(None)
    }

    fn retained(&self) -> Retained {
        Retained {
            batches: 1,
            rows: self.rows.len(),
            bytes: self.rows.bytes(),
            by_stream: Vec::new(),
        }
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        Ok(vec![state::label(self.rows.all()?, Part::ChangelogRows)?])
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for batch in batches {
            match state::part_of(&batch)? {
                Part::ChangelogRows => self.rows.load(&state::unlabel(batch)?)?,
                other => {
                    return Err(BrookError::Internal(format!(
                        "a table's state holds a '{other}' part"
                    )));
                }
            }
        }
        self.publish()
    }
}
