//! From Arrow types to PostgreSQL's: the column type `create_table` gives
//! each Arrow type, and which existing columns a query's column may fill.
//!
//! | Arrow | created as | also fills |
//! |---|---|---|
//! | Boolean | boolean | |
//! | Int8, Int16, UInt8 | smallint | integer, bigint, numeric |
//! | Int32, UInt16 | integer | smallint*, bigint, numeric |
//! | Int64, UInt32 | bigint | smallint*, integer*, numeric |
//! | UInt64 | numeric(20,0) | smallint*, integer*, bigint* |
//! | Float16, Float32 | real | double precision |
//! | Float64 | double precision | |
//! | Decimal128(p, s) | numeric(p,s) | |
//! | Utf8, LargeUtf8, Utf8View | text | varchar, char |
//! | Binary, LargeBinary, BinaryView | bytea | |
//! | Date32, Date64 | date | |
//! | Time32, Time64 | time | |
//! | Timestamp (no zone) | timestamp | timestamptz (read as UTC) |
//! | Timestamp (zone) | timestamptz | |
//!
//! \* a value that does not fit the narrower column fails its batch with an
//! error naming the column; nothing is cut. Nanoseconds are truncated to
//! microseconds, PostgreSQL's precision. Other Arrow types (lists,
//! structs, intervals, durations) are refused at `CREATE SINK`.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// PostgreSQL type OIDs brook writes (`pg_type.oid`).
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
}

/// How one column's values are written in binary COPY: the PostgreSQL
/// type of the column they go into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
}

impl Encoding {
    /// The encoding for a column of PostgreSQL type `oid`.
    fn of_oid(oid: u32) -> Option<Self> {
        Some(match oid {
            oid::BOOL => Encoding::Bool,
            oid::INT2 => Encoding::Int2,
            oid::INT4 => Encoding::Int4,
            oid::INT8 => Encoding::Int8,
            oid::FLOAT4 => Encoding::Float4,
            oid::FLOAT8 => Encoding::Float8,
            oid::NUMERIC => Encoding::Numeric,
            oid::TEXT | oid::VARCHAR | oid::BPCHAR => Encoding::Text,
            oid::BYTEA => Encoding::Bytea,
            oid::DATE => Encoding::Date,
            oid::TIME => Encoding::Time,
            oid::TIMESTAMP => Encoding::Timestamp,
            oid::TIMESTAMPTZ => Encoding::TimestampTz,
            _ => return None,
        })
    }
}

fn is_integer(data_type: &DataType) -> bool {
    data_type.is_integer()
}

/// The column type `create_table` gives an Arrow column, or `None` for a
/// type brook cannot write.
pub(crate) fn created_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(precision, scale) if *scale >= 0 => {
            format!("numeric({precision},{scale})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        _ => return None,
    })
}

/// How a query column of `data_type` is written into an existing column of
/// PostgreSQL type `oid`, or `None` when it cannot be.
pub(crate) fn encoding_for(data_type: &DataType, oid: u32) -> Option<Encoding> {
    let encoding = Encoding::of_oid(oid)?;
    let fits = match encoding {
        Encoding::Bool => matches!(data_type, DataType::Boolean),
        Encoding::Int2 | Encoding::Int4 | Encoding::Int8 => is_integer(data_type),
        Encoding::Float4 => matches!(data_type, DataType::Float16 | DataType::Float32),
        Encoding::Float8 => matches!(
            data_type,
            DataType::Float16 | DataType::Float32 | DataType::Float64
        ),
        Encoding::Numeric => {
            is_integer(data_type) || matches!(data_type, DataType::Decimal128(_, _))
        }
        Encoding::Text => matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        Encoding::Bytea => matches!(
            data_type,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        ),
        Encoding::Date => matches!(data_type, DataType::Date32 | DataType::Date64),
        Encoding::Time => matches!(data_type, DataType::Time32(_) | DataType::Time64(_)),
        Encoding::Timestamp => matches!(data_type, DataType::Timestamp(_, None)),
        Encoding::TimestampTz => matches!(data_type, DataType::Timestamp(_, _)),
    };
    fits.then_some(encoding)
}

/// The Arrow type a column is cast to (strictly: a value that does not fit
/// is an error) before it is encoded as `encoding`.
pub(crate) fn staged_type(encoding: Encoding, data_type: &DataType) -> DataType {
    match encoding {
        Encoding::Bool => DataType::Boolean,
        Encoding::Int2 => DataType::Int16,
        Encoding::Int4 => DataType::Int32,
        Encoding::Int8 => DataType::Int64,
        Encoding::Float4 => DataType::Float32,
        Encoding::Float8 => DataType::Float64,
        Encoding::Numeric => match data_type {
            DataType::Decimal128(_, _) => data_type.clone(),
            _ => DataType::Decimal128(38, 0),
        },
        Encoding::Text => DataType::LargeUtf8,
        Encoding::Bytea => DataType::LargeBinary,
        Encoding::Date => DataType::Date32,
        Encoding::Time => DataType::Time64(TimeUnit::Microsecond),
        Encoding::Timestamp | Encoding::TimestampTz => match data_type {
            DataType::Timestamp(_, zone) => {
                DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            }
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_types_are_filled_by_their_own_arrow_type() {
        let pairs = [
            (DataType::Boolean, oid::BOOL),
            (DataType::Int16, oid::INT2),
            (DataType::Int32, oid::INT4),
            (DataType::Int64, oid::INT8),
            (DataType::UInt64, oid::NUMERIC),
            (DataType::Float32, oid::FLOAT4),
            (DataType::Float64, oid::FLOAT8),
            (DataType::Decimal128(10, 2), oid::NUMERIC),
            (DataType::Utf8View, oid::TEXT),
            (DataType::Binary, oid::BYTEA),
            (DataType::Date32, oid::DATE),
            (DataType::Time64(TimeUnit::Nanosecond), oid::TIME),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                oid::TIMESTAMP,
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                oid::TIMESTAMPTZ,
            ),
        ];
        for (data_type, oid) in pairs {
            assert!(created_type(&data_type).is_some(), "{data_type}");
            assert!(
                encoding_for(&data_type, oid).is_some(),
                "{data_type} into {oid}"
            );
        }
    }

    #[test]
    fn lossy_or_meaningless_pairs_are_refused() {
        assert_eq!(encoding_for(&DataType::Float64, oid::FLOAT4), None);
        assert_eq!(encoding_for(&DataType::Float64, oid::INT8), None);
        assert_eq!(encoding_for(&DataType::Utf8, oid::INT4), None);
        assert_eq!(encoding_for(&DataType::Int64, oid::TEXT), None);
        assert_eq!(
            encoding_for(
                &DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                oid::TIMESTAMP
            ),
            None
        );
        assert_eq!(created_type(&DataType::Duration(TimeUnit::Second)), None);
    }
}
