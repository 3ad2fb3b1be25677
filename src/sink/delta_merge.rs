//! The Delta sink's upsert: one Delta MERGE per batch on the key columns.
//! A batch's rows (the last of each key) are the source, with a flag
//! column saying which are deletes: a matched key is deleted or has every
//! column replaced, a new key is inserted unless its change is a delete.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Column;
use datafusion::prelude::{Expr, SessionContext, lit};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaResult, DeltaTable};

/// The source's column saying a row is a delete (not a table column).
const DELETE_FLAG: &str = "__brook_delete";

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some("source"), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some("target"), name))
}

/// Merges `rows` (at most one per key; `delete` marks deletes) into
/// `table` on `key`, as one commit with `properties`.
pub(super) async fn merge(
    table: DeltaTable,
    rows: &RecordBatch,
    delete: &BooleanArray,
    key: &[String],
    properties: CommitProperties,
) -> DeltaResult<DeltaTable> {
    let mut fields: Vec<Arc<Field>> = rows.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(DELETE_FLAG, DataType::Boolean, false)));
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(delete.clone()));
    let with_flag = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let ctx = SessionContext::new();
    let source_rows = ctx.read_batch(with_flag)?;
    let on = key
        .iter()
        .map(|k| target(k).eq(source(k)))
        .reduce(Expr::and)
        .unwrap_or_else(|| lit(false));
    let names: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let is_delete = source(DELETE_FLAG);
    let (table, _metrics) = table
        .merge(source_rows, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(Arc::new(ctx.state()))
        .with_commit_properties(properties)
        .when_matched_delete(|d| d.predicate(is_delete.clone()))?
        .when_matched_update(|update| {
            names.iter().fold(update, |update, name| {
                update.update(Column::new_unqualified(name), source(name))
            })
        })?
        .when_not_matched_insert(|insert| {
            names
                .iter()
                .fold(insert.predicate(!is_delete.clone()), |insert, name| {
                    insert.set(Column::new_unqualified(name), source(name))
                })
        })?
        .await?;
    Ok(table)
}
