//! The current row of each key of a changelog: what a query over changes
//! keeps so that an upsert or a delete, which may carry only the key, can
//! retract the row it replaces (see [`crate::changelog`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::changelog::{OP_COLUMN, Op};
use crate::error::{BrookError, Result};

type Bytes = Box<[u8]>;
type Hasher = foldhash::fast::FixedState;

/// A batch of changes as rows taken back and rows added.
pub(crate) struct Changes {
    /// The rows the changes replace or delete.
    pub retracted: RecordBatch,
    /// The rows the changes make current.
    pub added: RecordBatch,
}

/// The current rows of a changelog, by key, in the changelog's schema.
pub(crate) struct CurrentRows {
    schema: SchemaRef,
    op: usize,
    key: Vec<usize>,
    keys: RowConverter,
    rows: RowConverter,
    /// Key (row format) → the key's current row (row format).
    current: HashMap<Bytes, Bytes, Hasher>,
    bytes: usize,
}

impl CurrentRows {
    /// The rows of a changelog of `schema` keyed by the columns `key`.
    pub fn new(schema: SchemaRef, key: &[String]) -> Result<Self> {
        let index = |name: &str| {
            schema.index_of(name).map_err(|_| {
                BrookError::Internal(format!("changelog column '{name}' is not in its schema"))
            })
        };
        let op = index(OP_COLUMN)?;
        let key = key.iter().map(|k| index(k)).collect::<Result<Vec<_>>>()?;
        let sort_fields = |columns: &mut dyn Iterator<Item = usize>| {
            columns
                .map(|c| SortField::new(schema.field(c).data_type().clone()))
                .collect::<Vec<_>>()
        };
        let keys = RowConverter::new(sort_fields(&mut key.iter().copied()))?;
        let rows = RowConverter::new(sort_fields(&mut (0..schema.fields().len())))?;
        Ok(Self {
            schema,
            op,
            key,
            keys,
            rows,
            current: HashMap::with_hasher(Hasher::with_seed(0x6b65_7973)),
            bytes: 0,
        })
    }

    /// The keys held.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// The bytes the rows and keys take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies `batch`'s changes in order, and says which rows they took
    /// back and which they made current. A key changed several times in
    /// the batch retracts its row from before the batch and adds its row
    /// after it; a key whose row ends as it began is no change.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<Changes> {
        let ops = cast(batch.column(self.op), &DataType::Utf8)?;
        let ops = ops.as_string::<i32>();
        let key_columns: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        // Each key touched, in order, with its row from before the batch.
        let mut before: HashMap<&[u8], Option<Bytes>, Hasher> =
            HashMap::with_hasher(Hasher::with_seed(1));
        let mut touched: Vec<&[u8]> = Vec::new();
        for row in 0..batch.num_rows() {
            let op = match ops.is_valid(row).then(|| Op::parse(ops.value(row))) {
                Some(Some(op)) => op,
                _ => {
                    return Err(BrookError::invalid(format!(
                        "a change's '{OP_COLUMN}' is {:?}, not +I, -U, +U or -D",
                        ops.is_valid(row).then(|| ops.value(row))
                    )));
                }
            };
            if op == Op::UpdateBefore {
                continue;
            }
            let key = keys.row(row).data();
            before.entry(key).or_insert_with(|| {
                touched.push(key);
                self.current.get(key).cloned()
            });
            if op.upserts() {
                let new: Bytes = rows.row(row).data().into();
                self.bytes += new.len();
                match self.current.insert(key.into(), new) {
                    Some(old) => self.bytes -= old.len(),
                    None => self.bytes += key.len(),
                }
            } else if let Some(old) = self.current.remove(key) {
                self.bytes -= old.len() + key.len();
            }
        }
        let parser = self.rows.parser();
        let mut retracted = Vec::new();
        let mut added = Vec::new();
        for key in touched {
            let old = before.get(key).and_then(Option::as_deref);
            let new = self.current.get(key).map(AsRef::as_ref);
            if old == new {
                continue;
            }
            retracted.extend(old.map(|row| parser.parse(row)));
            added.extend(new.map(|row| parser.parse(row)));
        }
        Ok(Changes {
            retracted: self.batch_of(retracted)?,
            added: self.batch_of(added)?,
        })
    }

    /// Every current row, in the changelog's schema.
    pub fn all(&self) -> Result<RecordBatch> {
        let parser = self.rows.parser();
        self.batch_of(self.current.values().map(|row| parser.parse(row)).collect())
    }

    /// Makes `batch`'s rows (as [`CurrentRows::all`] gave them) current.
    pub fn load(&mut self, batch: &RecordBatch) -> Result<()> {
        let key_columns: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for row in 0..batch.num_rows() {
            let (key, value) = (keys.row(row).data(), rows.row(row).data());
            self.bytes += key.len() + value.len();
            self.current.insert(key.into(), value.into());
        }
        Ok(())
    }

    fn batch_of(&self, rows: Vec<datafusion::arrow::row::Row<'_>>) -> Result<RecordBatch> {
        let columns = self.rows.convert_rows(rows)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
