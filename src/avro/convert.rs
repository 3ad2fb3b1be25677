//! Decoded Avro values into a stream's declared columns, strictly: a value
//! is kept only if its column holds it exactly. A value that does not fit
//! (a `long` over an `INT`'s range, a string that is not a number) or that
//! would only fit altered (a `double` with a fraction in an `INT`, a
//! microsecond timestamp in a unit that drops its digits) makes its row a
//! bad row, named with the column; a NULL in a `NOT NULL` column too.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::error::Result;
use crate::sql::sql_type_name;

/// Rows of a decoded batch that did not fit their columns: row index and why.
pub type RefusedRows = Vec<(usize, String)>;

/// `decoded`'s fields, found by name, as `columns` (a column the writer's
/// schema lacks is NULL), with the rows that do not fit removed and listed.
pub fn into_columns(
    decoded: &RecordBatch,
    columns: &SchemaRef,
) -> Result<(RecordBatch, RefusedRows)> {
    let rows = decoded.num_rows();
    let mut refused: Vec<Option<String>> = vec![None; rows];
    let mut arrays = Vec::with_capacity(columns.fields().len());
    for field in columns.fields() {
        let (array, why) = match decoded.column_by_name(field.name()) {
            Some(values) => strict_cast(values, field.data_type()),
            None => (new_null_array(field.data_type(), rows), Vec::new()),
        };
        for (row, message) in why {
            refused[row].get_or_insert_with(|| {
                format!(
                    "column {} ({}): {message}",
                    field.name(),
                    sql_type_name(field.data_type())
                )
            });
        }
        if !field.is_nullable() && array.null_count() > 0 {
            let absent = decoded.column_by_name(field.name()).is_none();
            for row in (0..rows).filter(|row| array.is_null(*row)) {
                refused[row].get_or_insert_with(|| match absent {
                    true => format!(
                        "column {} is NOT NULL and the message's schema has no field {}",
                        field.name(),
                        field.name()
                    ),
                    false => format!("column {} is NOT NULL and the value is null", field.name()),
                });
            }
        }
        arrays.push(array);
    }
    let options = RecordBatchOptions::new();
    if refused.iter().all(Option::is_none) {
        let options = options.with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::clone(columns), arrays, &options)?;
        return Ok((batch, Vec::new()));
    }
    let keep = BooleanArray::from(refused.iter().map(Option::is_none).collect::<Vec<_>>());
    let kept = arrays
        .iter()
        .map(|array| filter(array, &keep))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = options.with_row_count(Some(keep.true_count()));
    let batch = RecordBatch::try_new_with_options(Arc::clone(columns), kept, &options)?;
    let refused = refused
        .into_iter()
        .enumerate()
        .filter_map(|(row, why)| why.map(|why| (row, why)))
        .collect();
    Ok((batch, refused))
}

/// `values` as `to`, with the rows whose value would not be kept exactly.
fn strict_cast(values: &ArrayRef, to: &DataType) -> (ArrayRef, RefusedRows) {
    if values.data_type() == to {
        return (Arc::clone(values), Vec::new());
    }
    let cast = match cast_with_options(values, to, &CastOptions::default()) {
        Ok(cast) => cast,
        Err(_) => {
            let why = format!(
                "an Avro {} value cannot be read as {}",
                values.data_type(),
                sql_type_name(to)
            );
            let refused = (0..values.len())
                .filter(|row| values.is_valid(*row))
                .map(|row| (row, why.clone()))
                .collect();
            return (new_null_array(to, values.len()), refused);
        }
    };
    let mut refused: RefusedRows = (0..values.len())
        .filter(|row| values.is_valid(*row) && cast.is_null(*row))
        .map(|row| (row, "the value does not fit the column".to_string()))
        .collect();
    if is_text(values.data_type()) || is_text(to) || widens(values.data_type(), to) {
        // Text is parsed (refused above when it does not parse) or written,
        // and a wider type holds every value of a narrower one: none of
        // these alters a value.
        return (cast, refused);
    }
    // A value that comes back different from the column was altered on
    // the way (a fraction dropped, digits a unit cannot keep).
    if let Ok(back) = cast_with_options(&cast, values.data_type(), &CastOptions::default())
        && let Ok(changed) = distinct(values, &back)
    {
        for row in 0..values.len() {
            if values.is_valid(row) && cast.is_valid(row) && changed.value(row) {
                refused.push((
                    row,
                    "the value would be altered to fit the column".to_string(),
                ));
            }
        }
    }
    (cast, refused)
}

/// Whether every value of `from` is one of `to` (a timestamp in a finer
/// unit, out of range aside, which the cast refuses; a wider integer or
/// float).
fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Timestamp(from, _), Timestamp(to, _)) => from <= to,
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (Float32, Float64) | (Int8 | Int16 | Int32, Float64) => true,
        _ => false,
    }
}

fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_text(value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;

    #[test]
    fn values_that_fit_are_kept_and_those_that_would_change_are_refused_by_column() {
        let decoded = RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1 << 40),
                    None,
                    Some(7),
                ])) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![2.0, 3.0, 4.5, 5.0])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let columns = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("x", DataType::Int32, true),
            Field::new("missing", DataType::Utf8View, true),
        ]));
        let (kept, refused) = into_columns(&decoded, &columns).unwrap();
        assert_eq!(kept.num_rows(), 2);
        assert_eq!(
            kept.column(0)
                .as_primitive::<Int32Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(1), Some(7)]
        );
        assert_eq!(kept.column(1).as_primitive::<Int32Type>().values(), &[2, 5]);
        assert_eq!(kept.column(2).null_count(), 2);
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[0].0, 1);
        assert!(
            refused[0]
                .1
                .starts_with("column n (INT): the value does not fit"),
            "{refused:?}"
        );
        assert_eq!(refused[1].0, 2);
        assert!(
            refused[1]
                .1
                .contains("column x (INT): the value would be altered"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_millisecond_timestamp_past_what_nanoseconds_hold_is_refused_not_wrapped() {
        use datafusion::arrow::array::TimestampMillisecondArray;
        use datafusion::arrow::datatypes::TimeUnit;
        // 2023-11-14T22:13:20Z, and the year 3000, past 2262.
        let decoded = RecordBatch::try_from_iter([(
            "at",
            Arc::new(
                TimestampMillisecondArray::from(vec![1_700_000_000_000, 32_503_680_000_000])
                    .with_timezone("+00:00"),
            ) as ArrayRef,
        )])
        .unwrap();
        let columns = Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let (kept, refused) = into_columns(&decoded, &columns).unwrap();
        assert_eq!(
            crate::sql::sql_type_name(kept.column(0).data_type()),
            "TIMESTAMP"
        );
        assert_eq!(
            kept.column(0)
                .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
                .values(),
            &[1_700_000_000_000_000_000]
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 1);
    }

    #[test]
    fn a_null_in_a_not_null_column_is_a_bad_row() {
        let decoded = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        let columns = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let (kept, refused) = into_columns(&decoded, &columns).unwrap();
        assert_eq!(kept.num_rows(), 1);
        assert_eq!(
            refused,
            vec![(1, "column n is NOT NULL and the value is null".to_string())]
        );
    }
}
