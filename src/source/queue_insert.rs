//! `INSERT INTO queue_stream ...`: the rows of a statement conformed to the
//! stream's columns, strictly. A value that does not fit its column (text
//! that is not a number, a number out of range, a fraction into an integer
//! column, a time part into a DATE) is an error naming the column and the
//! value, as PostgreSQL does; nothing of that INSERT is queued.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{BrookError, Result};

/// `rows` as a batch of `target`: column by column in order, or, when the
/// INSERT named its columns, by name (the rest NULL).
pub(crate) fn conform_insert(
    stream: &str,
    target: &SchemaRef,
    named: &[String],
    rows: &RecordBatch,
) -> Result<RecordBatch> {
    let expected = if named.is_empty() {
        target.fields().len()
    } else {
        named.len()
    };
    if rows.num_columns() != expected {
        return Err(BrookError::invalid(format!(
            "INSERT INTO {stream} gives {} values per row; the stream has {expected} columns",
            rows.num_columns(),
        )));
    }
    if let Some(unknown) = named.iter().find(|n| target.field_with_name(n).is_err()) {
        return Err(BrookError::invalid(format!(
            "stream '{stream}' has no column '{unknown}'"
        )));
    }
    let mut columns = Vec::with_capacity(target.fields().len());
    for (index, field) in target.fields().iter().enumerate() {
        let position = if named.is_empty() {
            Some(index)
        } else {
            named.iter().position(|n| n == field.name())
        };
        let column = match position {
            Some(position) => {
                strict_cast(rows.column(position), field.data_type()).map_err(|message| {
                    BrookError::invalid(format!(
                        "INSERT INTO {stream}: column {} ({}): {message}",
                        field.name(),
                        field.data_type()
                    ))
                })?
            }
            None => new_null_array(field.data_type(), rows.num_rows()),
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::clone(target), columns)?)
}

/// `values` cast to `to`, failing where a value does not fit instead of
/// becoming NULL or changing.
fn strict_cast(values: &ArrayRef, to: &DataType) -> std::result::Result<ArrayRef, String> {
    if values.data_type() == to {
        return Ok(Arc::clone(values));
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let cast = if is_decimal(values.data_type()) && to.is_floating() {
        // Through the decimal's text: the nearest float to the number as
        // written (arrow's direct cast divides in floating point and can
        // land a unit off).
        let text =
            cast_with_options(values, &DataType::Utf8, &options).map_err(|e| e.to_string())?;
        cast_with_options(&text, to, &options).map_err(|e| e.to_string())?
    } else {
        cast_with_options(values, to, &options).map_err(|e| e.to_string())?
    };
    if loses_information(values.data_type(), to) {
        // Casting back must give the value that was given: 1.7 into a
        // BIGINT would come back as 1, a timestamp into a DATE without
        // its time.
        let back =
            cast_with_options(&cast, values.data_type(), &options).map_err(|e| e.to_string())?;
        for row in 0..values.len() {
            let same = values.is_null(row) == back.is_null(row)
                && (values.is_null(row) || values.slice(row, 1) == back.slice(row, 1));
            if !same {
                return Err(format!("value {} does not fit", display_value(values, row)));
            }
        }
    }
    Ok(cast)
}

/// Whether a cast from `from` to `to` can succeed and yet change a value:
/// fractions into integers or narrower decimals, floats into decimals,
/// timestamps into dates.
fn loses_information(from: &DataType, to: &DataType) -> bool {
    let exact_target =
        to.is_integer() || matches!(to, DataType::Decimal128(..) | DataType::Decimal256(..));
    let inexact_source =
        from.is_floating() || matches!(from, DataType::Decimal128(..) | DataType::Decimal256(..));
    (inexact_source && exact_target)
        || (matches!(from, DataType::Timestamp(..))
            && matches!(to, DataType::Date32 | DataType::Date64))
}

fn is_decimal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Decimal128(..) | DataType::Decimal256(..)
    )
}

fn display_value(values: &ArrayRef, row: usize) -> String {
    ArrayFormatter::try_new(values.as_ref(), &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".to_string())
}
