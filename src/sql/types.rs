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

/// The SQL name brook shows for a column of `data_type` (`\d`,
/// `DESCRIBE`, `SHOW STREAMS`): the type a user would write in `CREATE
/// STREAM` to get it, one name per Arrow type (`TEXT` for `Utf8View`,
/// `Utf8` and `LargeUtf8`). A type `CREATE STREAM` cannot declare keeps
/// its Arrow name.
pub fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INT",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "TINYINT UNSIGNED",
        DataType::UInt16 => "SMALLINT UNSIGNED",
        DataType::UInt32 => "INT UNSIGNED",
        DataType::UInt64 => "BIGINT UNSIGNED",
        DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "TEXT",
        DataType::Date32 => "DATE",
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP",
        // DataFusion's `now()` and `TIMESTAMP WITH TIME ZONE` casts; brook's
        // own streams hold none.
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) => "TIMESTAMP WITH TIME ZONE",
        DataType::Decimal128(precision, scale) => return format!("DECIMAL({precision}, {scale})"),
        other => return other.to_string(),
    }
    .to_string()
}

/// A schema's columns as `name TYPE, ...` ([`sql_type_name`]), the way
/// `SHOW STREAMS`, `brook.streams` and `\d` list them.
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::Field;

    use super::*;
    use crate::sql::{BrookStatement, parse_sql};

    /// The Arrow type of `sql_type` as `CREATE STREAM` declares it.
    fn declared(sql_type: &str) -> DataType {
        let sql = format!("CREATE STREAM s (c {sql_type}) WITH (connector = 'queue')");
        let statement = parse_sql(&sql).unwrap().remove(0).statement;
        let BrookStatement::CreateStream(create) = statement else {
            panic!("{sql} is not a CREATE STREAM");
        };
        create.columns[0].data_type().clone()
    }

    #[test]
    fn every_type_create_stream_declares_is_shown_by_a_name_that_declares_it_again() {
        for (written, shown) in [
            ("BOOLEAN", "BOOLEAN"),
            ("BOOL", "BOOLEAN"),
            ("TINYINT", "TINYINT"),
            ("SMALLINT", "SMALLINT"),
            ("INT", "INT"),
            ("INTEGER", "INT"),
            ("BIGINT", "BIGINT"),
            ("TINYINT UNSIGNED", "TINYINT UNSIGNED"),
            ("SMALLINT UNSIGNED", "SMALLINT UNSIGNED"),
            ("INT UNSIGNED", "INT UNSIGNED"),
            ("INTEGER UNSIGNED", "INT UNSIGNED"),
            ("BIGINT UNSIGNED", "BIGINT UNSIGNED"),
            ("REAL", "REAL"),
            ("FLOAT", "DOUBLE"),
            ("DOUBLE", "DOUBLE"),
            ("DOUBLE PRECISION", "DOUBLE"),
            ("DECIMAL(10, 2)", "DECIMAL(10, 2)"),
            ("NUMERIC(5)", "DECIMAL(5, 0)"),
            ("DECIMAL", "DECIMAL(38, 10)"),
            ("TEXT", "TEXT"),
            ("VARCHAR", "TEXT"),
            ("VARCHAR(20)", "TEXT"),
            ("STRING", "TEXT"),
            ("CHAR(3)", "TEXT"),
            ("DATE", "DATE"),
            ("TIMESTAMP", "TIMESTAMP"),
        ] {
            let data_type = declared(written);
            assert_eq!(sql_type_name(&data_type), shown, "{written}");
            assert_eq!(declared(shown), data_type, "{shown}");
        }
    }

    #[test]
    fn string_types_are_text_and_a_type_create_stream_cannot_declare_keeps_its_arrow_name() {
        assert_eq!(sql_type_name(&DataType::Utf8), "TEXT");
        assert_eq!(sql_type_name(&DataType::LargeUtf8), "TEXT");
        assert_eq!(
            sql_type_name(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("+00:00".into())
            )),
            "TIMESTAMP WITH TIME ZONE"
        );
        assert_eq!(
            sql_type_name(&DataType::Timestamp(TimeUnit::Millisecond, None)),
            "Timestamp(ms)"
        );
        assert_eq!(sql_type_name(&DataType::Date64), "Date64");
        assert_eq!(
            sql_type_name(&DataType::List(Arc::new(Field::new_list_field(
                DataType::Int64,
                true
            )))),
            "List(Int64)"
        );
    }

    #[test]
    fn a_column_list_names_sql_types() {
        let schema = Schema::new(vec![
            Field::new("word", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]);
        assert_eq!(column_list(&schema), "word TEXT, n BIGINT");
    }
}
