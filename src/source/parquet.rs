//! Reading Parquet files into a stream's schema, in pieces: the file's
//! columns are matched to the stream's by name, and a column of another type
//! is converted strictly. A value that does not fit its column (300 in a
//! TINYINT, 1.5 in an INT, a string that is not a number) makes its row a
//! bad row, reported with its row number in the file; nothing is altered.
//! Blocking file I/O: the directory source calls this off the async runtime.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::file::reader::ChunkReader;

use super::decode::{BadLine, DecodedLines};

/// One stream column as found in the file.
struct ColumnSource {
    /// Its position among the columns read from the file.
    read_index: usize,
    /// Whether the file's type differs from the column's.
    convert: bool,
}

/// An open Parquet file, read a piece (a bounded number of rows) at a time.
pub(crate) struct ParquetPieces {
    reader: ParquetRecordBatchReader,
    schema: SchemaRef,
    columns: Vec<ColumnSource>,
    /// Rows of the file read so far; numbers the bad rows.
    rows_read: u64,
}

impl ParquetPieces {
    /// Opens `path` for the stream columns `schema`, reading `piece_rows`
    /// rows at a time. An error says why the file cannot be read: not
    /// Parquet, truncated, a column missing or of a type that cannot be
    /// converted.
    pub fn open(
        path: &Path,
        schema: SchemaRef,
        piece_rows: usize,
    ) -> std::result::Result<Self, String> {
        let file = File::open(path).map_err(|err| err.to_string())?;
        Self::read(file, schema, piece_rows)
    }

    /// [`ParquetPieces::open`] for a file's bytes (an object read whole).
    pub fn read(
        input: impl ChunkReader + 'static,
        schema: SchemaRef,
        piece_rows: usize,
    ) -> std::result::Result<Self, String> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input)
            .map_err(|err| format!("not a readable Parquet file: {err}"))?;
        let file_schema = Arc::clone(builder.schema());
        let mut found = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let index = file_column(&file_schema, field.name()).ok_or_else(|| {
                let names: Vec<&str> = file_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                format!(
                    "column '{}' is not in the file (its columns: {})",
                    field.name(),
                    names.join(", ")
                )
            })?;
            let file_type = file_schema.field(index).data_type();
            if file_type != field.data_type() && !can_cast_types(file_type, field.data_type()) {
                return Err(format!(
                    "column '{}': the file's type {file_type} cannot be read as {}",
                    field.name(),
                    field.data_type()
                ));
            }
            found.push((index, file_type != field.data_type()));
        }
        let mut read: Vec<usize> = found.iter().map(|(index, _)| *index).collect();
        read.sort_unstable();
        read.dedup();
        let columns = found
            .iter()
            .map(|&(index, convert)| ColumnSource {
                read_index: read.binary_search(&index).unwrap_or_default(),
                convert,
            })
            .collect();
        let projection = ProjectionMask::roots(builder.parquet_schema(), read.iter().copied());
        let reader = builder
            .with_projection(projection)
            .with_batch_size(piece_rows.max(1))
            .build()
            .map_err(|err| format!("not a readable Parquet file: {err}"))?;
        Ok(Self {
            reader,
            schema,
            columns,
            rows_read: 0,
        })
    }

    /// The next piece of the file's rows in the stream's columns, with its
    /// bad rows (numbered by row in the file, from 1); `None` at the end. An
    /// error (a damaged page) ends the file.
    pub fn next_piece(&mut self) -> Option<std::result::Result<DecodedLines, String>> {
        let piece = match self.reader.next()? {
            Ok(piece) => piece,
            Err(err) => return Some(Err(format!("cannot read the file's rows: {err}"))),
        };
        let rows = piece.num_rows();
        let first_row = self.rows_read + 1;
        self.rows_read += rows as u64;
        let mut refused: Vec<Option<String>> = vec![None; rows];
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, source)| {
                let read = piece.column(source.read_index);
                let column = if source.convert {
                    convert(read, field, &mut refused)
                } else {
                    Arc::clone(read)
                };
                if !field.is_nullable() && column.null_count() > 0 {
                    for (row, why) in refused.iter_mut().enumerate() {
                        if column.is_null(row) && why.is_none() {
                            *why = Some(format!(
                                "column '{}' is NOT NULL but the value is null",
                                field.name()
                            ));
                        }
                    }
                }
                column
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch =
            match RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options) {
                Ok(batch) => batch,
                Err(err) => return Some(Err(format!("cannot build the rows: {err}"))),
            };
        let mut decoded = DecodedLines {
            lines: rows as u64,
            ..Default::default()
        };
        if refused.iter().all(Option::is_none) {
            decoded.batch = Some(batch).filter(|b| b.num_rows() > 0);
            return Some(Ok(decoded));
        }
        let keep: BooleanArray = refused.iter().map(|why| Some(why.is_none())).collect();
        decoded.batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)
            .ok()
            .filter(|b| b.num_rows() > 0);
        decoded.bad_lines = refused
            .into_iter()
            .enumerate()
            .filter_map(|(row, why)| {
                why.map(|message| BadLine {
                    line: first_row + row as u64,
                    message,
                })
            })
            .collect();
        Some(Ok(decoded))
    }
}

/// The file's column named `name`: spelled the same, or else the one
/// column whose name differs only in case.
fn file_column(file_schema: &SchemaRef, name: &str) -> Option<usize> {
    if let Ok(index) = file_schema.index_of(name) {
        return Some(index);
    }
    let mut matching = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| field.name().eq_ignore_ascii_case(name));
    match (matching.next(), matching.next()) {
        (Some((index, _)), None) => Some(index),
        _ => None,
    }
}

/// `read` converted to `field`'s type; rows whose value does not fit are
/// refused (the first refusal of a row is kept) and left NULL.
fn convert(read: &ArrayRef, field: &Field, refused: &mut [Option<String>]) -> ArrayRef {
    let target = field.data_type();
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    // A strict cast fails on the first value that does not convert; the
    // lenient one then finds every such row (it leaves them NULL).
    let converted = cast_with_options(read, target, &strict).or_else(|_| {
        cast_with_options(
            read,
            target,
            &CastOptions {
                safe: true,
                ..Default::default()
            },
        )
    });
    let converted = match converted {
        Ok(converted) => converted,
        Err(err) => {
            for why in refused.iter_mut().filter(|why| why.is_none()) {
                *why = Some(format!("column '{}': {err}", field.name()));
            }
            return datafusion::arrow::array::new_null_array(target, read.len());
        }
    };
    let kept = kept_exactly(read, &converted);
    let formatter = ArrayFormatter::try_new(read.as_ref(), &FormatOptions::default()).ok();
    for (row, why) in refused.iter_mut().enumerate() {
        let lost = read.is_valid(row)
            && (converted.is_null(row) || kept.as_ref().is_some_and(|kept| !kept.value(row)));
        if lost && why.is_none() {
            let value = formatter
                .as_ref()
                .map(|f| f.value(row).to_string())
                .unwrap_or_default();
            *why = Some(format!(
                "column '{}': {value} ({}) does not fit {}",
                field.name(),
                read.data_type(),
                target
            ));
        }
    }
    converted
}

/// Per row, whether `converted` holds `read`'s value exactly, where that can
/// be told: a number or time converted back must equal the original (so
/// 1.5 into an INT, which a cast truncates, is caught). Into floating point
/// a value is kept if it stays finite (a DOUBLE holds the nearest value, as
/// a CSV field's); text read from or written to is its own check (a cast
/// from text fails on text that is not a value).
fn kept_exactly(read: &ArrayRef, converted: &ArrayRef) -> Option<BooleanArray> {
    let is_text = |data_type: &DataType| {
        matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    };
    if is_text(read.data_type()) || is_text(converted.data_type()) {
        return None;
    }
    if converted.data_type().is_floating() {
        let as_double =
            |array: &ArrayRef| datafusion::arrow::compute::cast(array, &DataType::Float64).ok();
        let (before, after) = (as_double(read)?, as_double(converted)?);
        let (before, after) = (
            before.as_primitive::<datafusion::arrow::datatypes::Float64Type>(),
            after.as_primitive::<datafusion::arrow::datatypes::Float64Type>(),
        );
        return Some(
            before
                .values()
                .iter()
                .zip(after.values().iter())
                .map(|(b, a)| Some(!b.is_finite() || a.is_finite()))
                .collect(),
        );
    }
    let back = cast_with_options(converted, read.data_type(), &CastOptions::default()).ok()?;
    not_distinct(&back, read).ok()
}
