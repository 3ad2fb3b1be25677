//! Debezium's JSON envelope as the Kafka and file sinks write it: each row
//! of a result as `{"before": ..., "after": ..., "op": ...}`. A result of
//! changes (see [`crate::changelog::is_changes`]) gives each row's kind:
//! `+I` is `c`, `+U` is `u` (with `before` null: brook emits an update's
//! new row only), `-U` is `u` with the row in `before`, `-D` is `d` with
//! the row in `before`; any other result's rows are `c`.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use crate::changelog::{Op, is_changes};
use crate::error::{BrookError, Result};

/// Each row of `batch` (a result of changes, or of rows appended) with its
/// kind, the row as a JSON object without `op`.
pub(crate) fn rows_with_ops(batch: &RecordBatch) -> Result<Vec<(Op, Vec<u8>)>> {
    let (rows, ops) = if is_changes(batch.schema_ref()) {
        let columns: Vec<usize> = (1..batch.num_columns()).collect();
        (
            batch.project(&columns)?,
            Some(cast(batch.column(0), &DataType::Utf8)?),
        )
    } else {
        (batch.clone(), None)
    };
    let mut out = Vec::new();
    let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
    writer.write(&rows)?;
    writer.finish()?;
    let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').take(rows.num_rows()).collect();
    if lines.len() != rows.num_rows() {
        return Err(BrookError::Internal(format!(
            "{} rows encoded as {} JSON lines",
            rows.num_rows(),
            lines.len()
        )));
    }
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(row, line)| {
            let op = ops
                .as_ref()
                .and_then(|ops| Op::parse(ops.as_string::<i32>().value(row)))
                .unwrap_or(Op::Insert);
            (op, line.to_vec())
        })
        .collect())
}

/// A row (a JSON object) in Debezium's envelope for change `op`.
pub(crate) fn envelope(op: Op, row: &[u8]) -> Vec<u8> {
    let (before, after, code): (&[u8], &[u8], &str) = match op {
        Op::Insert => (b"null", row, "c"),
        Op::UpdateAfter => (b"null", row, "u"),
        Op::UpdateBefore => (row, b"null", "u"),
        Op::Delete => (row, b"null", "d"),
    };
    let mut out = Vec::with_capacity(row.len() + 40);
    out.extend_from_slice(b"{\"before\":");
    out.extend_from_slice(before);
    out.extend_from_slice(b",\"after\":");
    out.extend_from_slice(after);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::changelog::{CHANGES_METADATA, OP_COLUMN};

    #[test]
    fn changes_become_debeziums_c_u_and_d_and_appended_rows_are_c() {
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new(OP_COLUMN, DataType::Utf8, false),
                Field::new("status", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ],
            HashMap::from([(CHANGES_METADATA.to_string(), OP_COLUMN.to_string())]),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["+I", "+U", "-D"])),
                Arc::new(StringArray::from(vec!["new", "paid", "gone"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let lines: Vec<String> = rows_with_ops(&batch)
            .unwrap()
            .into_iter()
            .map(|(op, row)| String::from_utf8(envelope(op, &row)).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"before":null,"after":{"status":"new","n":1},"op":"c"}"#,
                r#"{"before":null,"after":{"status":"paid","n":2},"op":"u"}"#,
                r#"{"before":{"status":"gone","n":3},"after":null,"op":"d"}"#,
            ]
        );
        // Without the changes mark, `op` is a column like the others.
        let plain = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("op", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["+I"]))],
        )
        .unwrap();
        let (op, row) = rows_with_ops(&plain).unwrap().remove(0);
        assert_eq!(
            String::from_utf8(envelope(op, &row)).unwrap(),
            r#"{"before":null,"after":{"op":"+I"},"op":"c"}"#
        );
    }
}
