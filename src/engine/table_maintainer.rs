//! The query that keeps a table current from its changelog: each batch's
//! changes are applied to the current row of each key, from which the
//! plans that read the table get its rows (see
//! `catalog::changelog_table`). It emits nothing; its checkpoints hold
//! the current rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::current_rows::CurrentRows;
use super::state::{self, Part};
use crate::catalog::changelog_table::{CurrentRows as PublishedRows, RowsSource};
use crate::error::{BrookError, Result};
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, MicroBatch};
use parking_lot::Mutex;

/// A table kept current.
pub(crate) struct TableMaintainer {
    rows: Arc<Mutex<CurrentRows>>,
    published: Arc<PublishedRows>,
}

/// The table's rows as plans read them: the current rows without the
/// changelog's `op` column.
struct Published {
    rows: Arc<Mutex<CurrentRows>>,
    schema: SchemaRef,
}

impl RowsSource for Published {
    fn rows(&self) -> datafusion::error::Result<RecordBatch> {
        let all = self
            .rows
            .lock()
            .all()
            .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
        let columns: Vec<usize> = (1..all.num_columns()).collect();
        let rows = all.project(&columns)?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            rows.columns().to_vec(),
        )?)
    }
}

impl TableMaintainer {
    /// Keeps `published` current from a changelog of `schema` keyed by
    /// `key`.
    pub fn new(schema: SchemaRef, key: &[String], published: Arc<PublishedRows>) -> Result<Self> {
        let rows = Arc::new(Mutex::new(CurrentRows::new(schema, key)?));
        published.set_source(Arc::new(Published {
            rows: Arc::clone(&rows),
            schema: Arc::clone(published.schema_ref()),
        }));
        Ok(Self { rows, published })
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
            let applied = self.rows.lock().apply(changes)?;
            changed |= applied.added.num_rows() > 0 || applied.retracted.num_rows() > 0;
        }
        if changed {
            self.published.changed();
        }
        Ok(None)
    }

    fn retained(&self) -> Retained {
        // One lock: parking_lot's mutex is not reentrant.
        let rows = self.rows.lock();
        Retained {
            batches: 1,
            rows: rows.len(),
            bytes: rows.bytes(),
            by_stream: Vec::new(),
        }
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        Ok(vec![state::label(
            self.rows.lock().all()?,
            Part::ChangelogRows,
        )?])
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for batch in batches {
            match state::part_of(&batch)? {
                Part::ChangelogRows => self.rows.lock().load(&state::unlabel(batch)?)?,
                other => {
                    return Err(BrookError::Internal(format!(
                        "a table's state holds a '{other}' part"
                    )));
                }
            }
        }
        self.published.changed();
        Ok(())
    }
}
