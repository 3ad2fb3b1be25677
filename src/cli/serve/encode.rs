//! Arrow columns as PostgreSQL values: each column's PostgreSQL type, and
//! each row as a `DataRow` in the format the client asked for (text for
//! psql and the simple protocol, binary where a driver asks for it).

use std::error::Error;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, Schema, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions as PgFormatOptions;
use tokio_postgres::types::{IsNull, ToSql, to_sql_checked};

/// The PostgreSQL type of a column of `data_type`; a type PostgreSQL has
/// no match for (lists, structs, maps) is sent as its text.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(_, _) => Type::NUMERIC,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Date32 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        _ => Type::TEXT,
    }
}

/// The result columns of `schema`, in `format(i)` each.
pub fn fields(schema: &Schema, format: impl Fn(usize) -> FieldFormat) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| field_info(field, format(i)))
            .collect(),
    )
}

fn field_info(field: &Field, format: FieldFormat) -> FieldInfo {
    FieldInfo::new(
        field.name().clone(),
        None,
        None,
        pg_type(field.data_type()),
        format,
    )
}

/// Every row of `batches` as a `DataRow` of `fields`.
pub fn rows(batches: &[RecordBatch], fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let mut out = Vec::new();
    let options = FormatOptions::default();
    for batch in batches {
        let texts: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(api_error)?;
        let mut encoder = DataRowEncoder::new(Arc::clone(fields));
        for row in 0..batch.num_rows() {
            for (index, column) in batch.columns().iter().enumerate() {
                encode(&mut encoder, column, row, &texts[index])?;
            }
            out.push(encoder.take_row());
        }
    }
    Ok(out)
}

fn api_error(err: impl Error + Send + Sync + 'static) -> PgWireError {
    PgWireError::ApiError(Box::new(err))
}

/// One value: typed where the column's PostgreSQL type has a binary form
/// brook writes, else its text.
fn encode(
    encoder: &mut DataRowEncoder,
    column: &ArrayRef,
    row: usize,
    text: &ArrayFormatter<'_>,
) -> PgWireResult<()> {
    if column.is_null(row) {
        return encoder.encode_field(&None::<i16>);
    }
    macro_rules! typed {
        ($arrow:ty, $rust:ty) => {
            encoder.encode_field(&(column.as_primitive::<$arrow>().value(row) as $rust))
        };
    }
    match column.data_type() {
        DataType::Boolean => encoder.encode_field(&column.as_boolean().value(row)),
        DataType::Int8 => typed!(Int8Type, i16),
        DataType::Int16 => typed!(Int16Type, i16),
        DataType::UInt8 => typed!(UInt8Type, i16),
        DataType::Int32 => typed!(Int32Type, i32),
        DataType::UInt16 => typed!(UInt16Type, i32),
        DataType::Int64 => typed!(Int64Type, i64),
        DataType::UInt32 => typed!(UInt32Type, i64),
        DataType::Float32 => encoder.encode_field(&column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&column.as_primitive::<Float64Type>().value(row)),
        DataType::UInt64 => encoder.encode_field(&Numeric {
            unscaled: i128::from(column.as_primitive::<UInt64Type>().value(row)),
            scale: 0,
        }),
        DataType::Decimal128(_, scale) => encoder.encode_field(&Numeric {
            unscaled: column.as_primitive::<Decimal128Type>().value(row),
            scale: *scale,
        }),
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            let date = NaiveDate::from_num_days_from_ce_opt(days + 719_163);
            match date {
                Some(date) => encoder.encode_field(&date),
                None => encode_text(encoder, text, row),
            }
        }
        DataType::Timestamp(unit, zone) => {
            let nanos = timestamp_nanos(column, row, unit);
            let instant = DateTime::<Utc>::from_timestamp_nanos(nanos);
            match zone {
                None => encoder.encode_field(&instant.naive_utc()),
                Some(_) => encoder.encode_field(&instant),
            }
        }
        DataType::Binary => encoder.encode_field(&column.as_binary::<i32>().value(row)),
        DataType::LargeBinary => encoder.encode_field(&column.as_binary::<i64>().value(row)),
        DataType::BinaryView => encoder.encode_field(&column.as_binary_view().value(row)),
        _ => encode_text(encoder, text, row),
    }
}

fn encode_text(
    encoder: &mut DataRowEncoder,
    text: &ArrayFormatter<'_>,
    row: usize,
) -> PgWireResult<()> {
    encoder.encode_field(&text.value(row).to_string())
}

fn timestamp_nanos(column: &ArrayRef, row: usize, unit: &TimeUnit) -> i64 {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => column
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => column
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Microsecond => column
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .saturating_mul(1_000),
        TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

/// A DECIMAL value as PostgreSQL's NUMERIC: text, or the binary form
/// (base-10000 digits, weight, sign, display scale).
#[derive(Debug, Clone, Copy)]
pub struct Numeric {
    /// The value times 10^scale.
    pub unscaled: i128,
    /// Digits after the point.
    pub scale: i8,
}

impl Numeric {
    fn text(&self) -> String {
        let digits = self.unscaled.unsigned_abs().to_string();
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let scale = self.scale.max(0) as usize;
        if scale == 0 {
            let zeros = "0".repeat((-self.scale).max(0) as usize);
            return format!("{sign}{digits}{zeros}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{sign}{whole}.{fraction}")
    }
}

impl ToSqlText for Numeric {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &PgFormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.text().as_bytes());
        Ok(IsNull::No)
    }
}

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let text = self.text();
        let negative = text.starts_with('-');
        let text = text.trim_start_matches('-');
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let dscale = fraction.len();
        // Group digits by four around the point.
        let whole_padded = format!("{}{whole}", "0".repeat((4 - whole.len() % 4) % 4));
        let fraction_padded = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
        let mut groups: Vec<i16> = Vec::new();
        for chunk in whole_padded
            .as_bytes()
            .chunks(4)
            .chain(fraction_padded.as_bytes().chunks(4))
        {
            let group = std::str::from_utf8(chunk)?.parse::<i16>()?;
            groups.push(group);
        }
        let mut weight = (whole_padded.len() / 4) as i16 - 1;
        while groups.first() == Some(&0) && weight >= 0 {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        out.put_i16(groups.len() as i16);
        out.put_i16(weight);
        out.put_u16(if negative && !groups.is_empty() {
            0x4000
        } else {
            0
        });
        out.put_u16(dscale as u16);
        for group in groups {
            out.put_i16(group);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_text_and_binary_hold_every_digit() {
        let n = |unscaled, scale| Numeric { unscaled, scale };
        assert_eq!(n(12345, 2).text(), "123.45");
        assert_eq!(n(-5, 3).text(), "-0.005");
        assert_eq!(n(7, 0).text(), "7");
        let mut out = BytesMut::new();
        n(-1_234_567_891, 4)
            .to_sql(&Type::NUMERIC, &mut out)
            .unwrap();
        // -123456.7891: digits 12, 3456, 7891; weight 1; negative; scale 4.
        assert_eq!(
            out.as_ref(),
            &[0, 3, 0, 1, 0x40, 0, 0, 4, 0, 12, 0x0d, 0x80, 0x1e, 0xd3]
        );
    }
}
