//! What a CSV field may look like for each column type, and turning a
//! column's fields into an Arrow array. A value that does not fit its
//! column, or that would only fit by losing information (a float that
//! overflows to infinity or underflows to zero, a DATE with a time part,
//! digits a DECIMAL or a TIMESTAMP unit cannot keep), is refused, so its row
//! is reported rather than stored altered. A TIMESTAMP is read as text or
//! as a count since the epoch, as the stream's [`TimestampFormat`] says. The
//! README's table of CSV values documents these rules.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, GenericStringBuilder, PrimitiveBuilder, StringViewBuilder,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

use crate::source::TimestampFormat;

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;
/// 0000-01-01T00:00:00Z, the earliest instant a text TIMESTAMP can write,
/// in nanoseconds since the epoch.
const EARLIEST_NANOS: i128 = -62_167_219_200 * NANOS_PER_SECOND;
/// 10000-01-01T00:00:00Z, just past the latest instant a text TIMESTAMP can
/// write. Epoch counts are held to the same years, 0000 to 9999.
const END_NANOS: i128 = 253_402_300_800 * NANOS_PER_SECOND;

/// Whether format 'csv' can read a column of `data_type`; `None` if it can,
/// otherwise why not.
pub(super) fn unsupported(data_type: &DataType) -> Option<String> {
    match data_type {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Date32
        | DataType::Timestamp(_, None) => None,
        DataType::Timestamp(_, Some(zone)) if is_utc(zone) => None,
        DataType::Timestamp(_, Some(zone)) => Some(format!(
            "a timestamp in time zone '{zone}' (only UTC or no time zone)"
        )),
        other => Some(format!("type {other}")),
    }
}

fn is_utc(zone: &str) -> bool {
    matches!(zone, "UTC" | "utc" | "Z" | "+00:00" | "Etc/UTC")
}

/// One column of a chunk's good rows: where each row's field lies, and
/// the rows refused so far (a row refused by an earlier column is not
/// parsed again: its first bad value is the one reported).
pub(super) struct ColumnInput<'a> {
    /// The chunk the fields were split from.
    pub chunk: &'a [u8],
    /// Fields that had to be unescaped (`""` in a quoted field) live here,
    /// at offsets past `chunk.len()`.
    pub unescaped: &'a [u8],
    /// `columns` field ranges per row, row after row.
    pub fields: &'a [(usize, usize)],
    pub columns: usize,
    pub column: usize,
    /// Why each row was refused, if it was; parsing refuses more.
    pub refused: &'a mut [Option<String>],
}

impl<'a> ColumnInput<'a> {
    fn rows(&self) -> usize {
        self.refused.len()
    }

    /// The range of `row`'s field: in the chunk when `start < chunk.len()`.
    fn range(&self, row: usize) -> (usize, usize) {
        self.fields[row * self.columns + self.column]
    }

    fn value(&self, row: usize) -> &'a [u8] {
        let (start, end) = self.range(row);
        let (chunk, unescaped) = (self.chunk, self.unescaped);
        if start < chunk.len() || start == end {
            chunk.get(start..end).unwrap_or_default()
        } else {
            unescaped
                .get(start - chunk.len()..end - chunk.len())
                .unwrap_or_default()
        }
    }

    fn refuse(&mut self, row: usize, field: &Field, value: &[u8], why: &str) {
        self.refused[row] = Some(format!(
            "column '{}': '{}' {why}",
            field.name(),
            String::from_utf8_lossy(value)
        ));
    }
}

/// A field that reads as NULL: empty, `NULL`, `null` or `\N`.
pub(super) fn is_null(value: &[u8]) -> bool {
    matches!(value, b"" | b"NULL" | b"null" | b"\\N")
}

/// The array for `field` from `input`'s fields; `chunk` is the buffer the
/// fields were split from, which text views point into rather than copy.
/// `timestamps` says how a TIMESTAMP field is written.
pub(super) fn build_column(
    field: &Field,
    mut input: ColumnInput<'_>,
    chunk: &Buffer,
    timestamps: TimestampFormat,
) -> ArrayRef {
    macro_rules! primitive {
        ($arrow:ty, $parse:expr) => {
            Arc::new(build_primitive::<$arrow>(field, &mut input, $parse)) as ArrayRef
        };
    }
    match field.data_type() {
        DataType::Boolean => Arc::new(build_boolean(field, &mut input)),
        DataType::Int8 => primitive!(Int8Type, parse_integer::<i8>),
        DataType::Int16 => primitive!(Int16Type, parse_integer::<i16>),
        DataType::Int32 => primitive!(Int32Type, parse_integer::<i32>),
        DataType::Int64 => primitive!(Int64Type, parse_integer::<i64>),
        DataType::UInt8 => primitive!(UInt8Type, parse_integer::<u8>),
        DataType::UInt16 => primitive!(UInt16Type, parse_integer::<u16>),
        DataType::UInt32 => primitive!(UInt32Type, parse_integer::<u32>),
        DataType::UInt64 => primitive!(UInt64Type, parse_integer::<u64>),
        DataType::Float32 => primitive!(Float32Type, parse_float::<f32>),
        DataType::Float64 => primitive!(Float64Type, parse_float::<f64>),
        DataType::Decimal128(precision, scale) => {
            build_decimal(field, &mut input, *precision, *scale)
        }
        DataType::Date32 => primitive!(Date32Type, parse_date),
        DataType::Timestamp(unit, zone) => {
            build_timestamp(field, &mut input, *unit, zone.clone(), timestamps)
        }
        DataType::Utf8View => Arc::new(build_text_views(field, &mut input, chunk)),
        DataType::LargeUtf8 => Arc::new(build_text::<i64>(field, &mut input)),
        // Utf8, and any type `unsupported` refuses (never reached: such a
        // stream cannot be created).
        _ => Arc::new(build_text::<i32>(field, &mut input)),
    }
}

/// A DECIMAL(`precision`, `scale`) column.
fn build_decimal(field: &Field, input: &mut ColumnInput<'_>, precision: u8, scale: i8) -> ArrayRef {
    let array = build_primitive::<Decimal128Type>(field, input, |value| {
        parse_decimal(value, precision, scale)
    });
    // The type's own precision and scale were checked when the
    // stream was created; a failure here leaves the default type,
    // which RecordBatch::try_new then refuses with a clear error.
    Arc::new(
        array
            .clone()
            .with_precision_and_scale(precision, scale)
            .unwrap_or(array),
    )
}

/// A TIMESTAMP column of `unit` in `zone`, its fields written as
/// `timestamps` says.
fn build_timestamp(
    field: &Field,
    input: &mut ColumnInput<'_>,
    unit: TimeUnit,
    zone: Option<Arc<str>>,
    timestamps: TimestampFormat,
) -> ArrayRef {
    let unit_nanos = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    let parse = |value: &[u8]| match timestamps {
        TimestampFormat::Text => parse_timestamp(value, unit_nanos),
        TimestampFormat::EpochSeconds => parse_epoch(value, &EPOCH_SECONDS, unit_nanos),
        TimestampFormat::EpochMillis => parse_epoch(value, &EPOCH_MILLIS, unit_nanos),
        TimestampFormat::EpochMicros => parse_epoch(value, &EPOCH_MICROS, unit_nanos),
        TimestampFormat::EpochNanos => parse_epoch(value, &EPOCH_NANOS, unit_nanos),
    };
    match unit {
        TimeUnit::Second => Arc::new(
            build_primitive::<TimestampSecondType>(field, input, parse).with_timezone_opt(zone),
        ),
        TimeUnit::Millisecond => Arc::new(
            build_primitive::<TimestampMillisecondType>(field, input, parse)
                .with_timezone_opt(zone),
        ),
        TimeUnit::Microsecond => Arc::new(
            build_primitive::<TimestampMicrosecondType>(field, input, parse)
                .with_timezone_opt(zone),
        ),
        TimeUnit::Nanosecond => Arc::new(
            build_primitive::<TimestampNanosecondType>(field, input, parse).with_timezone_opt(zone),
        ),
    }
}

/// Appends a NULL for a NULL spelling, refusing it in a NOT NULL column.
/// Returns whether the value was handled (refused rows count as handled).
fn null_or_refused(field: &Field, input: &mut ColumnInput<'_>, row: usize, value: &[u8]) -> bool {
    if input.refused[row].is_some() {
        return true;
    }
    if is_null(value) {
        if !field.is_nullable() {
            input.refused[row] = Some(format!(
                "column '{}' is NOT NULL but the field is empty or NULL",
                field.name()
            ));
        }
        return true;
    }
    false
}

fn build_primitive<T: ArrowPrimitiveType>(
    field: &Field,
    input: &mut ColumnInput<'_>,
    parse: impl Fn(&[u8]) -> Result<T::Native, &'static str>,
) -> datafusion::arrow::array::PrimitiveArray<T> {
    let mut builder = PrimitiveBuilder::<T>::with_capacity(input.rows());
    for row in 0..input.rows() {
        let value = input.value(row);
        if null_or_refused(field, input, row, value) {
            builder.append_null();
            continue;
        }
        match parse(value) {
            Ok(parsed) => builder.append_value(parsed),
            Err(why) => {
                input.refuse(row, field, value, why);
                builder.append_null();
            }
        }
    }
    builder.finish()
}

fn build_boolean(
    field: &Field,
    input: &mut ColumnInput<'_>,
) -> datafusion::arrow::array::BooleanArray {
    let mut builder = BooleanBuilder::with_capacity(input.rows());
    for row in 0..input.rows() {
        let value = input.value(row);
        if null_or_refused(field, input, row, value) {
            builder.append_null();
        } else if value.eq_ignore_ascii_case(b"true") {
            builder.append_value(true);
        } else if value.eq_ignore_ascii_case(b"false") {
            builder.append_value(false);
        } else {
            input.refuse(row, field, value, "is not a BOOLEAN (true or false)");
            builder.append_null();
        }
    }
    builder.finish()
}

fn build_text<O: datafusion::arrow::array::OffsetSizeTrait>(
    field: &Field,
    input: &mut ColumnInput<'_>,
) -> datafusion::arrow::array::GenericStringArray<O> {
    let mut builder = GenericStringBuilder::<O>::with_capacity(input.rows(), input.rows() * 8);
    for row in 0..input.rows() {
        let value = input.value(row);
        if null_or_refused(field, input, row, value) {
            builder.append_null();
            continue;
        }
        match std::str::from_utf8(value) {
            Ok(text) => builder.append_value(text),
            Err(_) => {
                input.refuse(row, field, value, "is not valid UTF-8");
                builder.append_null();
            }
        }
    }
    builder.finish()
}

/// Text values as views into `chunk` (no bytes copied; values of up to 12
/// bytes are stored inline in their view), copied when unescaped.
fn build_text_views(
    field: &Field,
    input: &mut ColumnInput<'_>,
    chunk: &Buffer,
) -> datafusion::arrow::array::StringViewArray {
    let mut builder = StringViewBuilder::with_capacity(input.rows());
    // Views address a block with u32 offsets; a larger chunk is copied from.
    let block = (chunk.len() < u32::MAX as usize).then(|| builder.append_block(chunk.clone()));
    for row in 0..input.rows() {
        let value = input.value(row);
        if null_or_refused(field, input, row, value) {
            builder.append_null();
            continue;
        }
        let (start, end) = input.range(row);
        let appended = match block {
            Some(block) if end <= chunk.len() => u32::try_from(start)
                .ok()
                .zip(u32::try_from(end - start).ok())
                .is_some_and(|(offset, len)| builder.try_append_view(block, offset, len).is_ok()),
            _ => match std::str::from_utf8(value) {
                Ok(text) => {
                    builder.append_value(text);
                    true
                }
                Err(_) => false,
            },
        };
        if !appended {
            input.refuse(row, field, value, "is not valid UTF-8");
            builder.append_null();
        }
    }
    builder.finish()
}

/// An integer: an optional sign and decimal digits, nothing else.
pub(super) fn parse_integer<T: TryFrom<i128>>(value: &[u8]) -> Result<T, &'static str> {
    let (negative, digits) = match value {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, value),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("is not an integer");
    }
    let mut magnitude: i128 = 0;
    for digit in digits {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(digit - b'0')))
            .ok_or("is out of range for the column's integer type")?;
    }
    let signed = if negative { -magnitude } else { magnitude };
    T::try_from(signed).map_err(|_| "is out of range for the column's integer type")
}

/// A float the way Rust and PostgreSQL spell them: digits with an optional
/// sign, decimal point and exponent, or `NaN` / `inf` / `Infinity` in any
/// case. A finite spelling that overflows to infinity or a non-zero one
/// that underflows to zero is refused.
pub(super) fn parse_float<F>(value: &[u8]) -> Result<F, &'static str>
where
    F: std::str::FromStr + FloatValue,
{
    let text = std::str::from_utf8(value).map_err(|_| "is not a number")?;
    let parsed: F = text.parse().map_err(|_| "is not a number")?;
    // Only the rare infinite or zero results need their text looked at again.
    if parsed.is_infinite() {
        let unsigned = text.trim_start_matches(['+', '-']);
        if !(unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity")) {
            return Err("is out of range for the column's float type (it would be infinity)");
        }
    } else if parsed.is_zero() {
        let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
        if mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            return Err("is too small for the column's float type (it would be 0)");
        }
    }
    Ok(parsed)
}

/// The two float types' checks, for [`parse_float`].
pub(super) trait FloatValue {
    fn is_infinite(&self) -> bool;
    fn is_zero(&self) -> bool;
}

impl FloatValue for f64 {
    fn is_infinite(&self) -> bool {
        f64::is_infinite(*self)
    }
    fn is_zero(&self) -> bool {
        *self == 0.0
    }
}

impl FloatValue for f32 {
    fn is_infinite(&self) -> bool {
        f32::is_infinite(*self)
    }
    fn is_zero(&self) -> bool {
        *self == 0.0
    }
}

/// A decimal number (optional sign, digits, optional point and exponent)
/// as the unscaled integer of `DECIMAL(precision, scale)`. Digits the scale
/// cannot keep must be zeros: `1.50` fits `DECIMAL(3, 1)`, `1.55` does not.
pub(super) fn parse_decimal(value: &[u8], precision: u8, scale: i8) -> Result<i128, &'static str> {
    const NOT_A_NUMBER: &str = "is not a decimal number";
    let (negative, rest) = match value {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, value),
    };
    let (number, exponent) = match rest.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let exponent: i64 = match exponent {
        None => 0,
        Some(text) => {
            let parsed = parse_integer::<i64>(text).map_err(|_| NOT_A_NUMBER)?;
            // Beyond this no DECIMAL(38, s) can hold the value anyway.
            parsed.clamp(-1000, 1000)
        }
    };
    // Zeros are counted, not multiplied in, until a non-zero digit follows,
    // so long runs of zeros (`1.000...0`) do not overflow the mantissa.
    let (mut mantissa, mut pending_zeros, mut fraction_digits, mut digits) = (0i128, 0i64, 0i64, 0);
    let mut seen_point = false;
    for byte in number {
        match byte {
            b'.' if !seen_point => seen_point = true,
            b'0'..=b'9' => {
                digits += 1;
                if seen_point {
                    fraction_digits += 1;
                }
                if *byte == b'0' {
                    pending_zeros += 1;
                    continue;
                }
                let shift = u32::try_from(pending_zeros + 1).map_err(|_| TOO_LARGE)?;
                mantissa = 10i128
                    .checked_pow(shift)
                    .and_then(|p| mantissa.checked_mul(p))
                    .and_then(|m| m.checked_add(i128::from(byte - b'0')))
                    .ok_or(TOO_LARGE)?;
                pending_zeros = 0;
            }
            _ => return Err(NOT_A_NUMBER),
        }
    }
    if digits == 0 {
        return Err(NOT_A_NUMBER);
    }
    // value = mantissa * 10^(pending_zeros - fraction_digits + exponent);
    // unscaled = value * 10^scale.
    let shift = pending_zeros - fraction_digits + exponent + i64::from(scale);
    let unscaled = if mantissa == 0 {
        0
    } else if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .and_then(|p| mantissa.checked_mul(p))
            .ok_or(TOO_LARGE)?
    } else {
        let divisor = u32::try_from(-shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s));
        match divisor {
            Some(divisor) if mantissa % divisor == 0 => mantissa / divisor,
            _ => return Err("has more decimal places than the column's DECIMAL scale keeps"),
        }
    };
    let limit = 10i128
        .checked_pow(u32::from(precision))
        .unwrap_or(i128::MAX);
    if unscaled >= limit {
        return Err(TOO_LARGE);
    }
    Ok(if negative { -unscaled } else { unscaled })
}

const TOO_LARGE: &str = "has more digits than the column's DECIMAL precision allows";

/// Exactly `YYYY-MM-DD`, a date that exists, as days since 1970-01-01.
pub(super) fn parse_date(value: &[u8]) -> Result<i32, &'static str> {
    const NOT_A_DATE: &str = "is not a DATE (YYYY-MM-DD)";
    if value.len() > 10 && date(&value[..10]).is_some() {
        return Err("is not a DATE: a DATE has no time part (declare the column TIMESTAMP)");
    }
    let day = date(value).ok_or(NOT_A_DATE)?;
    i32::try_from(day).map_err(|_| NOT_A_DATE)
}

/// `YYYY-MM-DD` as days since 1970-01-01, if it is one and exists.
fn date(value: &[u8]) -> Option<i64> {
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = value else {
        return None;
    };
    let year = digits(&[*y1, *y2, *y3, *y4])?;
    let month = digits(&[*m1, *m2])?;
    let day = digits(&[*d1, *d2])?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE)
}

/// The value of ASCII decimal digits, if they all are.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space and
/// `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or `+HH:MM` /
/// `-HH:MM` (the instant is then converted to UTC). Returns the instant in
/// units of `unit_nanos` nanoseconds since the epoch; digits of a fraction
/// the unit cannot keep must be zeros.
pub(super) fn parse_timestamp(value: &[u8], unit_nanos: i128) -> Result<i64, &'static str> {
    const NOT_A_TIMESTAMP: &str = "is not a TIMESTAMP (YYYY-MM-DD HH:MM:SS[.fraction][Z|+HH:MM])";
    let day = value.get(..10).and_then(date).ok_or(NOT_A_TIMESTAMP)?;
    let mut nanos = i128::from(day) * NANOS_PER_DAY;
    let mut rest = &value[10..];
    if let [b'T' | b' ', time @ ..] = rest {
        let [h1, h2, b':', m1, m2, after_minutes @ ..] = time else {
            return Err(NOT_A_TIMESTAMP);
        };
        let hours = digits(&[*h1, *h2])
            .filter(|h| *h < 24)
            .ok_or(NOT_A_TIMESTAMP)?;
        let minutes = digits(&[*m1, *m2])
            .filter(|m| *m < 60)
            .ok_or(NOT_A_TIMESTAMP)?;
        let mut seconds = 0;
        rest = after_minutes;
        if let [b':', s1, s2, after_seconds @ ..] = rest {
            // 60 (a leap second) is refused: the types have no leap seconds.
            seconds = digits(&[*s1, *s2])
                .filter(|s| *s < 60)
                .ok_or(NOT_A_TIMESTAMP)?;
            rest = after_seconds;
            if let [b'.', fraction @ ..] = rest {
                let length = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
                if length == 0 {
                    return Err(NOT_A_TIMESTAMP);
                }
                let (kept, dropped) = fraction[..length].split_at(length.min(9));
                if dropped.iter().any(|b| *b != b'0') {
                    return Err("has more fractional digits than nanoseconds");
                }
                let mut fraction_nanos = i128::from(digits(kept).ok_or(NOT_A_TIMESTAMP)?);
                for _ in kept.len()..9 {
                    fraction_nanos *= 10;
                }
                nanos += fraction_nanos;
                rest = &fraction[length..];
            }
        }
        nanos += (i128::from(hours) * 3600 + i128::from(minutes) * 60 + i128::from(seconds))
            * NANOS_PER_SECOND;
    }
    match rest {
        [] => {}
        [b'Z' | b'z'] => {}
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])
                .filter(|h| *h < 24)
                .ok_or(NOT_A_TIMESTAMP)?;
            let minutes = digits(&[*m1, *m2])
                .filter(|m| *m < 60)
                .ok_or(NOT_A_TIMESTAMP)?;
            let offset = (i128::from(hours) * 3600 + i128::from(minutes) * 60) * NANOS_PER_SECOND;
            // Local time minus its offset is UTC.
            nanos += if *sign == b'+' { -offset } else { offset };
        }
        _ => return Err(NOT_A_TIMESTAMP),
    }
    if nanos % unit_nanos != 0 {
        return Err("has more fractional digits than the column's TIMESTAMP unit keeps");
    }
    i64::try_from(nanos / unit_nanos).map_err(|_| "is out of range for the column's TIMESTAMP type")
}

/// How one epoch `timestamp_format` writes an instant: a count of units
/// since 1970-01-01T00:00:00Z.
struct EpochUnit {
    /// Nanoseconds in one unit of the count.
    nanos: i128,
    /// Fractional digits the count may have; at most as many as keep whole
    /// nanoseconds.
    fraction_digits: usize,
    /// Why a value that is not such a count is refused.
    not_a_count: &'static str,
    /// Why a count with more fractional digits than `fraction_digits` is
    /// refused.
    too_fine: &'static str,
}

const EPOCH_SECONDS: EpochUnit = EpochUnit {
    nanos: NANOS_PER_SECOND,
    fraction_digits: 9,
    not_a_count: "is not a TIMESTAMP in epoch seconds (digits with an optional sign and fraction, as 1700000000.5)",
    too_fine: "has more fractional digits than nanoseconds (timestamp_format 'epoch_s' takes up to 9)",
};
const EPOCH_MILLIS: EpochUnit = EpochUnit {
    nanos: 1_000_000,
    fraction_digits: 0,
    not_a_count: "is not a TIMESTAMP in epoch milliseconds (an integer with an optional sign)",
    too_fine: "is not a whole number of milliseconds (timestamp_format 'epoch_ms' takes integers)",
};
const EPOCH_MICROS: EpochUnit = EpochUnit {
    nanos: 1_000,
    fraction_digits: 0,
    not_a_count: "is not a TIMESTAMP in epoch microseconds (an integer with an optional sign)",
    too_fine: "is not a whole number of microseconds (timestamp_format 'epoch_us' takes integers)",
};
const EPOCH_NANOS: EpochUnit = EpochUnit {
    nanos: 1,
    fraction_digits: 0,
    not_a_count: "is not a TIMESTAMP in epoch nanoseconds (an integer with an optional sign)",
    too_fine: "is not a whole number of nanoseconds (timestamp_format 'epoch_ns' takes integers)",
};

/// A count of `epoch` units since 1970-01-01T00:00:00Z: an optional `+` or
/// `-`, digits, and (for units that allow one) a `.` and fractional digits.
/// Returns the instant in units of `unit_nanos` nanoseconds; an instant
/// outside the years 0000 to 9999, or finer than the unit keeps, is
/// refused, never rounded.
fn parse_epoch(value: &[u8], epoch: &EpochUnit, unit_nanos: i128) -> Result<i64, &'static str> {
    const OUT_OF_RANGE: &str = "is out of range for a TIMESTAMP (years 0000 to 9999)";
    let (negative, unsigned) = match value {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, value),
    };
    let (whole, fraction) = match memchr::memchr(b'.', unsigned) {
        Some(point) => (&unsigned[..point], Some(&unsigned[point + 1..])),
        None => (unsigned, None),
    };
    let all_digits = |bytes: &[u8]| !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(epoch.not_a_count);
    }
    // Past this many units the instant is out of range whatever follows;
    // stopping there also keeps the arithmetic from overflowing.
    let most_units = END_NANOS / epoch.nanos + 1;
    let mut units: i128 = 0;
    for digit in whole {
        units = units * 10 + i128::from(digit - b'0');
        if units > most_units {
            return Err(OUT_OF_RANGE);
        }
    }
    let mut nanos = units * epoch.nanos;
    if let Some(fraction) = fraction {
        if fraction.len() > epoch.fraction_digits {
            return Err(epoch.too_fine);
        }
        // At most 9 digits: 10^len divides the unit's nanoseconds.
        let mut scale = epoch.nanos;
        for digit in fraction {
            scale /= 10;
            nanos += i128::from(digit - b'0') * scale;
        }
    }
    if negative {
        nanos = -nanos;
    }
    if !(EARLIEST_NANOS..END_NANOS).contains(&nanos) {
        return Err(OUT_OF_RANGE);
    }
    if nanos % unit_nanos != 0 {
        return Err("has more fractional digits than the column's TIMESTAMP unit keeps");
    }
    i64::try_from(nanos / unit_nanos).map_err(|_| "is out of range for the column's TIMESTAMP type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_a_sign_and_digits_only() {
        assert_eq!(parse_integer::<i32>(b"+2"), Ok(2));
        assert_eq!(parse_integer::<i32>(b"-17"), Ok(-17));
        assert_eq!(parse_integer::<i64>(b"007"), Ok(7));
        for bad in [
            &b" 1"[..],
            b"1 ",
            b"1.0",
            b"1e3",
            b"0x10",
            b"1_000",
            b"+",
            b"",
            b"--1",
        ] {
            assert!(parse_integer::<i32>(bad).is_err(), "{bad:?}");
        }
        assert!(parse_integer::<i8>(b"128").is_err());
        assert_eq!(parse_integer::<i8>(b"-128"), Ok(-128));
        assert!(parse_integer::<u8>(b"-1").is_err());
        assert_eq!(parse_integer::<u64>(b"18446744073709551615"), Ok(u64::MAX));
        assert!(parse_integer::<u64>(b"18446744073709551616").is_err());
        assert!(parse_integer::<i64>(&[b'9'; 60]).is_err());
    }

    #[test]
    fn floats_refuse_overflow_and_underflow_but_keep_spelled_infinity_and_zero() {
        assert_eq!(parse_float::<f64>(b"+2"), Ok(2.0));
        assert_eq!(parse_float::<f64>(b"1e3"), Ok(1000.0));
        assert_eq!(parse_float::<f64>(b"-0.0"), Ok(-0.0));
        assert_eq!(parse_float::<f64>(b"0e999"), Ok(0.0));
        assert_eq!(parse_float::<f64>(b"-Infinity"), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_float::<f64>(b"inf"), Ok(f64::INFINITY));
        assert!(parse_float::<f64>(b"NaN").is_ok_and(f64::is_nan));
        assert!(parse_float::<f64>(b"1e-310").is_ok_and(|v| v > 0.0));
        for bad in [
            &b"1e999"[..],
            b"-1e999",
            b"1e-999",
            b" 1.5",
            b"1.5 ",
            b"1,5",
            b"0x1p3",
            b"",
        ] {
            assert!(parse_float::<f64>(bad).is_err(), "{bad:?}");
        }
        assert!(parse_float::<f32>(b"1e39").is_err());
        assert!(parse_float::<f32>(b"1e-50").is_err());
        assert_eq!(parse_float::<f32>(b"1.5"), Ok(1.5));
    }

    #[test]
    fn decimals_refuse_digits_their_scale_or_precision_cannot_keep() {
        assert_eq!(parse_decimal(b"1.5", 5, 2), Ok(150));
        assert_eq!(parse_decimal(b"-1.50", 5, 2), Ok(-150));
        assert_eq!(parse_decimal(b"1.500000", 5, 2), Ok(150));
        assert_eq!(parse_decimal(b"+.5", 5, 2), Ok(50));
        assert_eq!(parse_decimal(b"1.5e2", 5, 2), Ok(15_000));
        assert_eq!(parse_decimal(b"15e-1", 5, 2), Ok(150));
        assert_eq!(parse_decimal(b"999.99", 5, 2), Ok(99_999));
        let long_zeros = format!("1.{}", "0".repeat(60));
        assert_eq!(parse_decimal(long_zeros.as_bytes(), 5, 2), Ok(100));
        assert!(parse_decimal(b"1.555", 5, 2).is_err());
        assert!(parse_decimal(b"1000.00", 5, 2).is_err());
        assert!(parse_decimal(b"1e999", 38, 10).is_err());
        for bad in [&b"1.2.3"[..], b"", b".", b"-", b"1 ", b"1e", b"abc", b"NaN"] {
            assert!(parse_decimal(bad, 10, 2).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_exactly_year_month_day_and_exist() {
        assert_eq!(parse_date(b"1970-01-01"), Ok(0));
        assert_eq!(parse_date(b"2024-01-02"), Ok(19_724));
        assert_eq!(parse_date(b"1969-12-31"), Ok(-1));
        for bad in [
            &b"20240102"[..],
            b"2024-1-2",
            b"2024-02-30",
            b"2024-01-02T10:00:00",
            b"2024-01-02 00:00:00",
            b" 2024-01-02",
            b"24/11/2026",
            b"+2024-01-02",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?}");
        }
        assert!(parse_date(b"2024-01-02T10:00:00").is_err_and(|why| why.contains("no time part")));
    }

    #[test]
    fn timestamps_keep_every_digit_and_convert_offsets_to_utc() {
        let base = 19_724i64 * 86_400 * 1_000_000_000;
        let hour = 3_600 * 1_000_000_000i64;
        assert_eq!(parse_timestamp(b"2024-01-02", 1), Ok(base));
        assert_eq!(
            parse_timestamp(b"2024-01-02 10:00", 1),
            Ok(base + 10 * hour)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00Z", 1),
            Ok(base + 10 * hour)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00.5", 1),
            Ok(base + 10 * hour + 500_000_000)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00.123456789", 1),
            Ok(base + 10 * hour + 123_456_789)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00+05:00", 1),
            Ok(base + 5 * hour)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00-01:30", 1),
            Ok(base + 11 * hour + hour / 2)
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02T10:00:00.250", 1_000_000),
            Ok((base + 10 * hour) / 1_000_000 + 250)
        );
        assert!(parse_timestamp(b"2024-01-02T10:00:00.2501", 1_000_000).is_err());
        for bad in [
            &b"2024-01-02T23:59:60"[..],
            b"2024-01-02T24:00:00",
            b"2024-01-02T10",
            b"2024-01-02T10:00:00.",
            b"2024-01-02T10:00:00.1234567891",
            b"2024-01-02T10:00:00+05",
            b"2024-01-02T10:00:00 +05:00",
            b"20240102T100000",
            b"2024-1-2 10:00:00",
            b"1500-01-01",
            b"2024-01-02T10:00:00Zjunk",
        ] {
            assert!(parse_timestamp(bad, 1).is_err(), "{bad:?}");
        }
    }

    const SECOND: i128 = 1_000_000_000;

    #[test]
    fn epoch_seconds_take_a_sign_and_up_to_nine_fractional_digits_exactly() {
        let seconds = |text: &[u8]| parse_epoch(text, &EPOCH_SECONDS, 1);
        assert_eq!(seconds(b"0"), Ok(0));
        assert_eq!(seconds(b"1700000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(seconds(b"1700000000.5"), Ok(1_700_000_000_500_000_000));
        assert_eq!(
            seconds(b"1700000000.123456789"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(seconds(b"+1.000000001"), Ok(1_000_000_001));
        assert_eq!(seconds(b"007"), Ok(7_000_000_000));
        // Before 1970: the sign applies to the whole count.
        assert_eq!(seconds(b"-1"), Ok(-1_000_000_000));
        assert_eq!(seconds(b"-1.5"), Ok(-1_500_000_000));
        assert_eq!(seconds(b"-0.000000001"), Ok(-1));
        assert_eq!(
            seconds(b"1.1234567891"),
            Err(EPOCH_SECONDS.too_fine),
            "no rounding past nanoseconds"
        );
        for bad in [
            &b""[..],
            b"-",
            b"+",
            b".5",
            b"5.",
            b"1.2.3",
            b"1e3",
            b"1E3",
            b" 1",
            b"1 ",
            b"1,5",
            b"0x10",
            b"1_000",
            b"--1",
            b"+-1",
            b"NaN",
            b"inf",
            b"2024-01-02",
            b"2024-01-02T10:00:00Z",
        ] {
            assert_eq!(seconds(bad), Err(EPOCH_SECONDS.not_a_count), "{bad:?}");
        }
    }

    #[test]
    fn epoch_milliseconds_microseconds_and_nanoseconds_are_whole_counts() {
        assert_eq!(
            parse_epoch(b"1700000000123", &EPOCH_MILLIS, 1),
            Ok(1_700_000_000_123_000_000)
        );
        assert_eq!(parse_epoch(b"-1", &EPOCH_MILLIS, 1), Ok(-1_000_000));
        assert_eq!(
            parse_epoch(b"1700000000123456", &EPOCH_MICROS, 1),
            Ok(1_700_000_000_123_456_000)
        );
        assert_eq!(
            parse_epoch(b"1700000000123456789", &EPOCH_NANOS, 1),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_epoch(b"-5", &EPOCH_NANOS, 1), Ok(-5));
        for (text, epoch) in [
            (&b"1700000000000.5"[..], &EPOCH_MILLIS),
            (b"1700000000000.0", &EPOCH_MILLIS),
            (b"1.5", &EPOCH_MICROS),
            (b"1.0", &EPOCH_NANOS),
        ] {
            assert_eq!(parse_epoch(text, epoch, 1), Err(epoch.too_fine), "{text:?}");
        }
        assert!(
            EPOCH_MILLIS
                .too_fine
                .contains("not a whole number of milliseconds")
        );
        for epoch in [&EPOCH_MILLIS, &EPOCH_MICROS, &EPOCH_NANOS] {
            for bad in [&b"1e3"[..], b"12 ", b"", b"1700000000000ms", b"1.x"] {
                assert_eq!(
                    parse_epoch(bad, epoch, 1),
                    Err(epoch.not_a_count),
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn epoch_counts_fill_the_columns_unit_or_are_refused_never_rounded() {
        // A millisecond count into a millisecond, a second and a nanosecond
        // column.
        assert_eq!(
            parse_epoch(b"1700000000123", &EPOCH_MILLIS, 1_000_000),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_epoch(b"1700000000123", &EPOCH_MILLIS, SECOND),
            Err("has more fractional digits than the column's TIMESTAMP unit keeps")
        );
        assert_eq!(
            parse_epoch(b"1700000000000", &EPOCH_MILLIS, SECOND),
            Ok(1_700_000_000)
        );
        assert_eq!(parse_epoch(b"-1.25", &EPOCH_SECONDS, 1_000_000), Ok(-1_250));
    }

    #[test]
    fn epoch_counts_hold_to_the_years_text_timestamps_can_write() {
        // The bounds are those of the text form, 0000-01-01 to 9999-12-31.
        assert_eq!(
            parse_timestamp(b"0000-01-01", SECOND).map(i128::from),
            Ok(EARLIEST_NANOS / SECOND)
        );
        assert_eq!(
            parse_timestamp(b"9999-12-31T23:59:59", SECOND).map(|s| i128::from(s) + 1),
            Ok(END_NANOS / SECOND)
        );
        let seconds = |text: &[u8]| parse_epoch(text, &EPOCH_SECONDS, SECOND);
        assert_eq!(seconds(b"-62167219200"), Ok(-62_167_219_200));
        assert_eq!(seconds(b"253402300799"), Ok(253_402_300_799));
        let out_of_range = Err("is out of range for a TIMESTAMP (years 0000 to 9999)");
        assert_eq!(seconds(b"-62167219201"), out_of_range);
        assert_eq!(seconds(b"253402300800"), out_of_range);
        assert_eq!(seconds("9".repeat(60).as_bytes()), out_of_range);
        assert_eq!(
            parse_epoch("9".repeat(60).as_bytes(), &EPOCH_NANOS, 1),
            out_of_range
        );
        // Leading zeros are not magnitude.
        let padded = format!("{}1", "0".repeat(60));
        assert_eq!(
            parse_epoch(padded.as_bytes(), &EPOCH_MILLIS, 1),
            Ok(1_000_000)
        );
        // A nanosecond column ends in 2262: i64 nanoseconds.
        assert_eq!(
            parse_epoch(b"9223372036854775807", &EPOCH_NANOS, 1),
            Ok(i64::MAX)
        );
        assert_eq!(
            parse_epoch(b"9223372036854775808", &EPOCH_NANOS, 1),
            Err("is out of range for the column's TIMESTAMP type")
        );
        assert_eq!(
            parse_epoch(b"10000000000", &EPOCH_SECONDS, 1),
            Err("is out of range for the column's TIMESTAMP type")
        );
    }

    #[test]
    fn every_instant_written_in_epoch_seconds_reads_back_to_the_nanosecond() {
        let mut rng = crate::testing::Rng::new(0x9E37_79B9_7F4A_7C15);
        for _ in 0..10_000 {
            let nanos = rng.next() as i64;
            let (sign, magnitude) = if nanos < 0 {
                ("-", nanos.unsigned_abs())
            } else {
                ("", nanos.unsigned_abs())
            };
            let text = format!(
                "{sign}{}.{:09}",
                magnitude / 1_000_000_000,
                magnitude % 1_000_000_000
            );
            assert_eq!(
                parse_epoch(text.as_bytes(), &EPOCH_SECONDS, 1),
                Ok(nanos),
                "{text}"
            );
            assert_eq!(
                parse_epoch(nanos.to_string().as_bytes(), &EPOCH_NANOS, 1),
                Ok(nanos)
            );
        }
    }
}
