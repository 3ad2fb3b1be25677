//! Changelog streams: rows that are changes to a table keyed by its primary
//! key, each with its kind in the stream's first column, `op`, spelled as
//! Flink does: `+I` (insert), `-U` (the row before an update), `+U` (the
//! row after an update, or an upsert), `-D` (delete).
//!
//! What a source reads is a change, not always a whole picture: an upsert
//! says only "this key's row is now ...", a Debezium delete from a table
//! with PostgreSQL's default replica identity carries only the key. A query
//! over a changelog therefore keeps the current row of each key (the
//! table's state) and derives the retractions from it: a `+I` or `+U` of a
//! key retracts the key's current row, if any, and adds the new one; a `-D`
//! retracts the current row; a `-U` is informational only.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{BrookError, Result};

/// The name of a changelog's kind column.
pub const OP_COLUMN: &str = "op";

/// The schema metadata key marking a query's result as changes (its
/// first column is `op`).
pub const CHANGES_METADATA: &str = "brook.changes";

/// Whether a result of `schema` is changes, each row's kind in its first
/// column `op` (a `RUNNING(changelog, 'update')` query's result).
pub fn is_changes(schema: &Schema) -> bool {
    schema.metadata().contains_key(CHANGES_METADATA)
        && schema
            .fields()
            .first()
            .is_some_and(|f| f.name() == OP_COLUMN)
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+I`: a new row.
    Insert,
    /// `-U`: the row as it was before an update.
    UpdateBefore,
    /// `+U`: the row as it is after an update (or an upsert).
    UpdateAfter,
    /// `-D`: a row deleted.
    Delete,
}

impl Op {
    /// Every kind, in the order of [`Op::code`].
    pub const ALL: [Op; 4] = [Op::Insert, Op::UpdateBefore, Op::UpdateAfter, Op::Delete];

    /// The kind as the `op` column spells it.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "+I",
            Op::UpdateBefore => "-U",
            Op::UpdateAfter => "+U",
            Op::Delete => "-D",
        }
    }

    /// The kind `code` spells, if it spells one.
    pub fn parse(code: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Whether the change makes its row the key's current row.
    pub fn upserts(self) -> bool {
        matches!(self, Op::Insert | Op::UpdateAfter)
    }
}

/// What makes a stream a changelog: its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changelog {
    /// The primary key's columns.
    pub key: Vec<String>,
}

impl Changelog {
    /// A changelog keyed by `key`, which must name columns of `declared`
    /// (the stream's columns without `op`), none of them named `op`.
    pub fn new(stream: &str, key: Vec<String>, declared: &Schema) -> Result<Self> {
        if key.is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{stream}' is a changelog: declare its primary key (PRIMARY KEY (id), or key = 'id'), by which updates and deletes find their row"
            )));
        }
        if declared.field_with_name(OP_COLUMN).is_ok() {
            return Err(BrookError::invalid(format!(
                "stream '{stream}' is a changelog, whose first column '{OP_COLUMN}' holds each change's kind (+I, -U, +U, -D): rename the declared column '{OP_COLUMN}'"
            )));
        }
        for column in &key {
            if declared.field_with_name(column).is_err() {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': key column '{column}' is not declared"
                )));
            }
        }
        Ok(Self { key })
    }

    /// The changelog's schema: `op`, then the declared columns.
    pub fn schema(declared: &Schema) -> SchemaRef {
        let mut fields = vec![Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false))];
        fields.extend(declared.fields().iter().cloned());
        Arc::new(Schema::new(fields))
    }

    /// What `SHOW STREAMS` says of it.
    pub fn describe(&self) -> String {
        format!("changelog keyed by ({})", self.key.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_round_trip_and_only_inserts_and_update_afters_upsert() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.code()), Some(op));
        }
        assert_eq!(Op::parse("+X"), None);
        let upserting: Vec<Op> = Op::ALL.into_iter().filter(|op| op.upserts()).collect();
        assert_eq!(upserting, vec![Op::Insert, Op::UpdateAfter]);
    }

    #[test]
    fn a_changelog_needs_a_declared_key_and_no_column_named_op() {
        let declared = Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        assert!(Changelog::new("s", vec![], &declared).is_err());
        assert!(Changelog::new("s", vec!["nope".into()], &declared).is_err());
        assert!(Changelog::new("s", vec!["id".into()], &declared).is_ok());
        let with_op = Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("op", DataType::Utf8, true),
        ]);
        let err = Changelog::new("s", vec!["id".into()], &with_op).unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
        let schema = Changelog::schema(&declared);
        assert_eq!(schema.field(0).name(), "op");
        assert_eq!(schema.fields().len(), 3);
    }
}
