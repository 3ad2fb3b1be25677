//! Column types of `CREATE STREAM`: SQL type names mapped to Arrow types.

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo};

use crate::error::{BrookError, Result};

/// The Arrow type for a SQL column type, following DataFusion's choices
/// (`TEXT` is `Utf8View`, `DOUBLE` is `Float64`, `TIMESTAMP` is nanoseconds).
pub(super) fn arrow_type(sql_type: &ast::DataType) -> Result<DataType> {
    use ast::DataType as Sql;
    Ok(match sql_type {
        Sql::Boolean | Sql::Bool => DataType::Boolean,
        Sql::TinyInt(_) => DataType::Int8,
        Sql::SmallInt(_) | Sql::Int2(_) => DataType::Int16,
        Sql::Int(_) | Sql::Integer(_) | Sql::Int4(_) => DataType::Int32,
        Sql::BigInt(_) | Sql::Int8(_) => DataType::Int64,
        Sql::TinyIntUnsigned(_) => DataType::UInt8,
        Sql::SmallIntUnsigned(_) => DataType::UInt16,
        Sql::IntUnsigned(_) | Sql::IntegerUnsigned(_) => DataType::UInt32,
        Sql::BigIntUnsigned(_) => DataType::UInt64,
        Sql::Real | Sql::Float4 => DataType::Float32,
        Sql::Float(_) | Sql::Double(_) | Sql::DoublePrecision | Sql::Float8 => DataType::Float64,
        Sql::Text | Sql::String(_) | Sql::Varchar(_) | Sql::Char(_) | Sql::CharVarying(_) => {
            DataType::Utf8View
        }
        Sql::Date => DataType::Date32,
        Sql::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Sql::Decimal(info) | Sql::Numeric(info) => match info {
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(
                decimal_part(*p, "precision")?,
                i8::try_from(*s).map_err(|_| BrookError::invalid("DECIMAL scale is too large"))?,
            ),
            ExactNumberInfo::Precision(p) => {
                DataType::Decimal128(decimal_part(*p, "precision")?, 0)
            }
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
        },
        other => {
            return Err(BrookError::invalid(format!(
                "unsupported column type {other} in CREATE STREAM; use BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL(p,s), TEXT, DATE or TIMESTAMP"
            )));
        }
    })
}

fn decimal_part(value: u64, what: &str) -> Result<u8> {
    match u8::try_from(value) {
        Ok(v) if (1..=38).contains(&v) => Ok(v),
        _ => Err(BrookError::invalid(format!(
            "DECIMAL {what} must be between 1 and 38, got {value}"
        ))),
    }
}

/// A schema's columns as `name type, ...`, the way brook lists them in
/// messages and `SHOW STREAMS`.
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}
