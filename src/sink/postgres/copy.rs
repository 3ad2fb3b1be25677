//! PostgreSQL's binary `COPY` format, written straight from Arrow arrays:
//! a header, then per row the field count and each field as a length and
//! its bytes in network order, then a trailer. No per-value allocation.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, LargeBinaryArray, LargeStringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Decimal128Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::types::{Encoding, staged_type};
use crate::error::{BrookError, Result};

/// The signature, flags and header extension length of binary COPY.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of binary COPY data: a field count of -1.
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One column written by COPY: where it is in the query's output and the
/// type of the table column it goes into.
#[derive(Debug, Clone)]
pub(crate) struct CopyColumn {
    pub index: usize,
    pub name: String,
    pub encoding: Encoding,
    /// The table column's type, for messages.
    pub type_name: String,
}

/// A batch's columns cast to the types their encodings read.
pub(crate) struct StagedBatch {
    columns: Vec<(Encoding, ArrayRef)>,
    rows: usize,
}

/// Casts each column strictly to what its encoding reads: a value that does
/// not fit its table column fails the batch, naming the column.
pub(crate) fn stage(batch: &RecordBatch, columns: &[CopyColumn]) -> Result<StagedBatch> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let staged = columns
        .iter()
        .map(|column| {
            let array = batch.column(column.index);
            let target = staged_type(column.encoding, array.data_type());
            let cast = if array.data_type() == &target {
                Ok(array.clone())
            } else {
                cast_with_options(array, &target, &strict)
            };
            cast.map(|cast| (column.encoding, cast)).map_err(|err| {
                BrookError::invalid(format!(
                    "column '{}': a value does not fit the table's {} column: {err}",
                    column.name, column.type_name
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StagedBatch {
        columns: staged,
        rows: batch.num_rows(),
    })
}

/// A staged column, downcast once.
enum Values<'a> {
    Bool(&'a BooleanArray),
    Int2(&'a Int16Array),
    Int4(&'a Int32Array),
    Int8(&'a Int64Array),
    Float4(&'a Float32Array),
    Float8(&'a Float64Array),
    Numeric(&'a Decimal128Array, i8),
    Text(&'a LargeStringArray),
    Bytea(&'a LargeBinaryArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Timestamp(&'a TimestampMicrosecondArray),
}

impl StagedBatch {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Encodes rows `start..end` onto `out`.
    pub fn encode(&self, start: usize, end: usize, out: &mut BytesMut) -> Result<()> {
        let values: Vec<Values<'_>> = self
            .columns
            .iter()
            .map(|(encoding, array)| values_of(*encoding, array))
            .collect::<Result<_>>()?;
        let field_count = i16::try_from(values.len())
            .map_err(|_| BrookError::invalid("COPY takes at most 32767 columns"))?;
        for row in start..end {
            out.put_i16(field_count);
            for (column, (_, array)) in values.iter().zip(&self.columns) {
                if array.is_null(row) {
                    out.put_i32(-1);
                    continue;
                }
                encode_value(column, row, out)?;
            }
        }
        Ok(())
    }
}

fn values_of(encoding: Encoding, array: &ArrayRef) -> Result<Values<'_>> {
    let wrong = || {
        BrookError::Internal(format!(
            "COPY column staged as {} for {encoding:?}",
            array.data_type()
        ))
    };
    Ok(match encoding {
        Encoding::Bool => Values::Bool(array.as_boolean_opt().ok_or_else(wrong)?),
        Encoding::Int2 => Values::Int2(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Int4 => Values::Int4(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Int8 => Values::Int8(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Float4 => Values::Float4(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Float8 => Values::Float8(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Numeric => {
            let DataType::Decimal128(_, scale) = array.data_type() else {
                return Err(wrong());
            };
            Values::Numeric(
                array
                    .as_primitive_opt::<Decimal128Type>()
                    .ok_or_else(wrong)?,
                *scale,
            )
        }
        Encoding::Text => Values::Text(array.as_string_opt().ok_or_else(wrong)?),
        Encoding::Bytea => Values::Bytea(array.as_binary_opt().ok_or_else(wrong)?),
        Encoding::Date => Values::Date(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Time => Values::Time(array.as_primitive_opt().ok_or_else(wrong)?),
        Encoding::Timestamp | Encoding::TimestampTz => {
            Values::Timestamp(array.as_primitive_opt().ok_or_else(wrong)?)
        }
    })
}

fn encode_value(values: &Values<'_>, row: usize, out: &mut BytesMut) -> Result<()> {
    match values {
        Values::Bool(array) => {
            out.put_i32(1);
            out.put_u8(u8::from(array.value(row)));
        }
        Values::Int2(array) => {
            out.put_i32(2);
            out.put_i16(array.value(row));
        }
        Values::Int4(array) => {
            out.put_i32(4);
            out.put_i32(array.value(row));
        }
        Values::Int8(array) => {
            out.put_i32(8);
            out.put_i64(array.value(row));
        }
        Values::Float4(array) => {
            out.put_i32(4);
            out.put_f32(array.value(row));
        }
        Values::Float8(array) => {
            out.put_i32(8);
            out.put_f64(array.value(row));
        }
        Values::Numeric(array, scale) => encode_numeric(array.value(row), *scale, out)?,
        Values::Text(array) => put_bytes(array.value(row).as_bytes(), out)?,
        Values::Bytea(array) => put_bytes(array.value(row), out)?,
        Values::Date(array) => {
            out.put_i32(4);
            out.put_i32(array.value(row).saturating_sub(PG_EPOCH_DAYS));
        }
        Values::Time(array) => {
            out.put_i32(8);
            out.put_i64(array.value(row));
        }
        Values::Timestamp(array) => {
            let micros = array
                .value(row)
                .checked_sub(PG_EPOCH_MICROS)
                .ok_or_else(|| {
                    BrookError::invalid(format!(
                        "timestamp {} µs is out of PostgreSQL's range",
                        array.value(row)
                    ))
                })?;
            out.put_i32(8);
            out.put_i64(micros);
        }
    }
    Ok(())
}

fn put_bytes(bytes: &[u8], out: &mut BytesMut) -> Result<()> {
    let len = i32::try_from(bytes.len())
        .map_err(|_| BrookError::invalid("a value longer than 2 GiB cannot be written by COPY"))?;
    out.put_i32(len);
    out.put_slice(bytes);
    Ok(())
}

/// PostgreSQL's binary numeric: digit count, weight (of the first digit,
/// in powers of 10,000), sign, display scale, then base-10,000 digits.
fn encode_numeric(value: i128, scale: i8, out: &mut BytesMut) -> Result<()> {
    // A negative scale multiplies out: 12 with scale -3 is 12,000.
    let (value, scale) = if scale < 0 {
        let factor = 10i128.checked_pow(u32::from(scale.unsigned_abs()));
        let value = factor
            .and_then(|factor| value.checked_mul(factor))
            .ok_or_else(|| BrookError::invalid("a decimal value is too large for numeric"))?;
        (value, 0u16)
    } else {
        (value, u16::from(scale.unsigned_abs()))
    };
    let negative = value < 0;
    let magnitude = value.unsigned_abs().to_string();
    let scale_digits = usize::from(scale);
    // Integer and fraction digits, the fraction padded to `scale` digits.
    let (integer, fraction) = if magnitude.len() > scale_digits {
        magnitude.split_at(magnitude.len() - scale_digits)
    } else {
        ("", magnitude.as_str())
    };
    let mut fraction = format!("{fraction:0>scale_digits$}");
    // Groups of four: the integer part padded on the left, the fraction on
    // the right.
    let integer = format!("{integer:0>width$}", width = integer.len().div_ceil(4) * 4);
    while fraction.len() % 4 != 0 {
        fraction.push('0');
    }
    let group = |digits: &str| -> Vec<i16> {
        digits
            .as_bytes()
            .chunks(4)
            .map(|chunk| {
                chunk
                    .iter()
                    .fold(0i16, |acc, digit| acc * 10 + i16::from(digit - b'0'))
            })
            .collect()
    };
    let integer_groups = group(&integer);
    let mut digits = integer_groups.clone();
    digits.extend(group(&fraction));
    let mut weight = integer_groups.len() as i32 - 1;
    // No leading or trailing zero digits.
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= leading as i32;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let count = digits.len();
    out.put_i32(8 + 2 * count as i32);
    out.put_i16(count as i16);
    out.put_i16(weight as i16);
    out.put_u16(if negative && count > 0 { 0x4000 } else { 0 });
    out.put_u16(scale);
    for digit in digits {
        out.put_i16(digit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(value: i128, scale: i8) -> Vec<i16> {
        let mut out = BytesMut::new();
        encode_numeric(value, scale, &mut out).unwrap();
        out[4..]
            .chunks(2)
            .map(|pair| i16::from_be_bytes([pair[0], pair[1]]))
            .collect()
    }

    #[test]
    fn numeric_digits_weight_sign_and_scale() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(numeric(1_234_567, 2), [3, 1, 0, 2, 1, 2345, 6700]);
        assert_eq!(numeric(12, 4), [1, -1, 0, 4, 12]);
        assert_eq!(numeric(-5, 0), [1, 0, 0x4000, 0, 5]);
        assert_eq!(numeric(0, 3), [0, 0, 0, 3]);
        assert_eq!(numeric(100_000_000, 0), [1, 2, 0, 0, 1]);
        assert_eq!(numeric(12, -3), [2, 1, 0, 0, 1, 2000]);
        assert_eq!(numeric(i128::MAX, 0)[0], 10);
    }
}
