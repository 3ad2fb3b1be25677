//! JSON lines: one object per line, decoded with arrow-json. Each field is
//! matched to the stream's column of the same name; a missing field is
//! NULL, a field no column names is ignored. Values are read as PostgreSQL's
//! `json_populate_record` reads them: a JSON value's text (a number as
//! written, `true`, a string's contents) must be a value of its column's
//! type by the rules CSV fields follow ([`super::values`]), so `300` in a
//! TINYINT column, `1.5` or `"abc"` in an INT column are bad rows, never
//! altered values. Only JSON `null` (or a missing field) is NULL.

use std::sync::Arc;

use arrow_json::reader::{Decoder, ReaderBuilder};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::changelog::Envelope;
use super::values::{self, ColumnInput};
use super::{BadLine, DecodedLines, line_ranges, too_long_message, without_refused};
use crate::error::{BrookError, Result};
use crate::source::TimestampFormat;

/// Decodes chunks of JSON lines into a stream's schema.
pub(super) struct JsonLines {
    /// The stream's columns.
    schema: SchemaRef,
    /// What arrow-json decodes: text columns as declared, every other
    /// column as the text of its value, parsed afterwards by brook's rules
    /// (arrow-json itself would truncate `1.5` into an INT column).
    text_schema: SchemaRef,
}

impl JsonLines {
    /// A decoder for `schema`; every column must be of a type brook reads
    /// from text.
    pub fn try_new(stream: &str, schema: SchemaRef) -> Result<Self> {
        let mut fields = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            if let Some(why) = values::unsupported(field.data_type()) {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': column '{}': format 'json' cannot read {why}",
                    field.name()
                )));
            }
            fields.push(if is_text(field.data_type()) {
                Arc::clone(field)
            } else {
                Arc::new(Field::new(field.name(), DataType::Utf8, true))
            });
        }
        Ok(Self {
            schema,
            text_schema: Arc::new(Schema::new(fields)),
        })
    }

    fn decoder(&self, rows: usize) -> std::result::Result<Decoder, ArrowError> {
        ReaderBuilder::new(Arc::clone(&self.text_schema))
            .with_batch_size(rows.max(1))
            .with_coerce_primitive(true)
            .build_decoder()
    }

    /// Decodes `chunk`'s lines; `first_line` numbers the first one, and
    /// `timestamps` says how TIMESTAMP values are written. The
    /// whole chunk is decoded at once; if any line is not exactly one good
    /// object, the chunk is decoded again line by line, so that each bad
    /// line is reported with its number and the others are kept.
    pub fn decode(
        &self,
        chunk: &[u8],
        first_line: u64,
        max_line_bytes: usize,
        timestamps: TimestampFormat,
    ) -> DecodedLines {
        let ranges: Vec<(usize, usize)> = line_ranges(chunk).collect();
        let mut decoded = DecodedLines {
            lines: ranges.len() as u64,
            ..Default::default()
        };
        if ranges.is_empty() {
            return decoded;
        }
        let (text_rows, row_lines) = match self.decode_whole(chunk, &ranges, max_line_bytes) {
            Some(batch) => (
                batch,
                (0..ranges.len() as u64).map(|i| first_line + i).collect(),
            ),
            None => {
                let mut batches = Vec::new();
                let mut row_lines = Vec::new();
                for (index, &(start, end)) in ranges.iter().enumerate() {
                    let line = first_line + index as u64;
                    match self.decode_line(&chunk[start..end], max_line_bytes) {
                        Ok(batch) => {
                            batches.push(batch);
                            row_lines.push(line);
                        }
                        Err(message) => decoded.bad_lines.push(BadLine { line, message }),
                    }
                }
                if batches.is_empty() {
                    return decoded;
                }
                match self.joined(&batches, &row_lines, &mut decoded) {
                    Some(batch) => (batch, row_lines),
                    None => return decoded,
                }
            }
        };
        self.finish(decoded, &text_rows, &row_lines, timestamps)
    }

    /// Decodes `chunk`'s lines, each a change in `envelope`, into the
    /// changed rows with their kinds (see [`super::changelog`]); a line
    /// that is not a change, or whose row does not fit the columns, is a
    /// bad line.
    pub fn decode_changes(
        &self,
        chunk: &[u8],
        first_line: u64,
        max_line_bytes: usize,
        timestamps: TimestampFormat,
        envelope: &Envelope,
    ) -> DecodedLines {
        let ranges: Vec<(usize, usize)> = line_ranges(chunk).collect();
        let mut decoded = DecodedLines {
            lines: ranges.len() as u64,
            ..Default::default()
        };
        let mut rows = Vec::with_capacity(ranges.len());
        let mut row_lines = Vec::with_capacity(ranges.len());
        for (index, &(start, end)) in ranges.iter().enumerate() {
            let line = first_line + index as u64;
            let unwrapped = if end - start > max_line_bytes {
                Err(too_long_message(max_line_bytes))
            } else {
                envelope.unwrap(&chunk[start..end])
            };
            match unwrapped {
                Ok(row) => {
                    rows.push(serde_json::Value::Object(row));
                    row_lines.push(line);
                }
                Err(message) => decoded.bad_lines.push(BadLine { line, message }),
            }
        }
        if rows.is_empty() {
            return decoded;
        }
        let text_rows = match self.serialized(&rows) {
            Ok(batch) => batch,
            Err(_) => {
                // Find the rows arrow-json refuses, one by one.
                let mut batches = Vec::new();
                let mut kept = Vec::new();
                for (row, line) in rows.iter().zip(&row_lines) {
                    match self.serialized(std::slice::from_ref(row)) {
                        Ok(batch) => {
                            batches.push(batch);
                            kept.push(*line);
                        }
                        Err(err) => decoded.bad_lines.push(BadLine {
                            line: *line,
                            message: json_message(err),
                        }),
                    }
                }
                row_lines = kept;
                match self.joined(&batches, &row_lines, &mut decoded) {
                    Some(batch) => batch,
                    None => return decoded,
                }
            }
        };
        self.finish(decoded, &text_rows, &row_lines, timestamps)
    }

    /// Rows decoded one by one, joined; `None` (each line reported in
    /// `decoded`) if they cannot be, which is not expected: every batch
    /// has the same schema.
    fn joined(
        &self,
        batches: &[RecordBatch],
        row_lines: &[u64],
        decoded: &mut DecodedLines,
    ) -> Option<RecordBatch> {
        match concat_batches(&self.text_schema, batches) {
            Ok(batch) => Some(batch),
            Err(err) => {
                decoded
                    .bad_lines
                    .extend(row_lines.iter().map(|&line| BadLine {
                        line,
                        message: format!("internal error joining the rows: {err}"),
                    }));
                decoded.bad_lines.sort_by_key(|bad| bad.line);
                None
            }
        }
    }

    /// `decoded` with the stream's columns from `text_rows` (whose rows
    /// came from `row_lines`), and the rows a value was refused in as bad
    /// lines.
    fn finish(
        &self,
        mut decoded: DecodedLines,
        text_rows: &RecordBatch,
        row_lines: &[u64],
        timestamps: TimestampFormat,
    ) -> DecodedLines {
        let (batch, refused) = self.typed(text_rows, timestamps);
        decoded.batch = batch;
        if !refused.is_empty() {
            decoded
                .bad_lines
                .extend(refused.into_iter().map(|(row, message)| BadLine {
                    line: row_lines[row],
                    message,
                }));
            decoded.bad_lines.sort_by_key(|bad| bad.line);
        }
        decoded
    }

    /// `rows` (JSON values) decoded at once.
    fn serialized(
        &self,
        rows: &[serde_json::Value],
    ) -> std::result::Result<RecordBatch, ArrowError> {
        let mut decoder = self.decoder(rows.len())?;
        decoder.serialize(rows)?;
        decoder
            .flush()?
            .ok_or_else(|| ArrowError::JsonError("no rows".into()))
    }

    /// The chunk decoded at once, if every line holds exactly one object
    /// that arrow-json decodes.
    fn decode_whole(
        &self,
        chunk: &[u8],
        ranges: &[(usize, usize)],
        max_line_bytes: usize,
    ) -> Option<RecordBatch> {
        // Room for one object more than there are lines: the decoder stops
        // reading at its batch size, and a line of two objects must be seen.
        let mut decoder = self.decoder(ranges.len() + 1).ok()?;
        for (index, &(start, end)) in ranges.iter().enumerate() {
            if end - start > max_line_bytes {
                return None;
            }
            let consumed = decoder.decode(&chunk[start..end]).ok()?;
            if consumed != end - start || decoder.has_partial_record() || decoder.len() != index + 1
            {
                return None;
            }
        }
        decoder.flush().ok()?
    }

    /// One line's row, or why the line is bad.
    fn decode_line(
        &self,
        line: &[u8],
        max_line_bytes: usize,
    ) -> std::result::Result<RecordBatch, String> {
        if line.len() > max_line_bytes {
            return Err(too_long_message(max_line_bytes));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err("empty line".to_string());
        }
        // Room for two objects, so that a second one on the line is seen.
        let mut decoder = self.decoder(3).map_err(json_message)?;
        let consumed = decoder.decode(line).map_err(json_message)?;
        if decoder.has_partial_record() {
            return Err("the JSON object does not end on its line".to_string());
        }
        if consumed < line.len() || decoder.len() != 1 {
            return Err("more than one JSON value on the line".to_string());
        }
        match decoder.flush().map_err(json_message)? {
            Some(batch) if batch.num_rows() == 1 => Ok(batch),
            _ => Err("not a JSON object".to_string()),
        }
    }

    /// The stream's columns from the decoded text, without the rows a
    /// value was refused in, and those rows with why.
    fn typed(
        &self,
        text_rows: &RecordBatch,
        timestamps: TimestampFormat,
    ) -> (Option<RecordBatch>, Vec<(usize, String)>) {
        let rows = text_rows.num_rows();
        let mut refused: Vec<Option<String>> = vec![None; rows];
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (index, field) in self.schema.fields().iter().enumerate() {
            let decoded = text_rows.column(index);
            if is_text(field.data_type()) {
                columns.push(Arc::clone(decoded));
                continue;
            }
            let Some(text) = decoded.as_string_opt::<i32>() else {
                columns.push(Arc::clone(decoded));
                continue;
            };
            // CSV spells NULL as an empty field or `NULL`; in JSON only
            // `null` is NULL, and such a string is refused.
            for (row, why) in refused.iter_mut().enumerate() {
                if why.is_none()
                    && text.is_valid(row)
                    && values::is_null(text.value(row).as_bytes())
                {
                    *why = Some(format!(
                        "column '{}': \"{}\" is not a value of type {} (NULL is written null)",
                        field.name(),
                        text.value(row),
                        field.data_type()
                    ));
                }
            }
            let fields: Vec<(usize, usize)> = text
                .offsets()
                .windows(2)
                .map(|pair| (pair[0] as usize, pair[1] as usize))
                .collect();
            let values_buffer = text.values().clone();
            columns.push(values::build_column(
                field,
                ColumnInput {
                    chunk: values_buffer.as_slice(),
                    unescaped: &[],
                    fields: &fields,
                    columns: 1,
                    column: 0,
                    refused: &mut refused,
                },
                &values_buffer,
                timestamps,
            ));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        match RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options) {
            Ok(batch) => without_refused(batch, refused),
            Err(err) => {
                let message = format!("internal error building the rows: {err}");
                (None, (0..rows).map(|row| (row, message.clone())).collect())
            }
        }
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    )
}

/// arrow-json's message without its "Json error: " prefix.
fn json_message(err: ArrowError) -> String {
    match err {
        ArrowError::JsonError(message) => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::decode::line_ranges;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8View, true),
            Field::new("level", DataType::Int8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("temp", DataType::Float64, true),
        ]))
    }

    fn rows(decoded: &DecodedLines) -> Vec<Vec<String>> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let options = FormatOptions::default().with_null("NULL");
        let Some(batch) = &decoded.batch else {
            return Vec::new();
        };
        (0..batch.num_rows())
            .map(|row| {
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        ArrayFormatter::try_new(c.as_ref(), &options)
                            .unwrap()
                            .value(row)
                            .to_string()
                    })
                    .collect()
            })
            .collect()
    }

    fn bad(decoded: &DecodedLines) -> Vec<u64> {
        decoded.bad_lines.iter().map(|b| b.line).collect()
    }

    #[test]
    fn fields_match_columns_by_name_and_missing_ones_are_null() {
        let json = JsonLines::try_new("j", schema()).unwrap();
        let decoded = json.decode(
            br#"{"n": 3, "sensor": "s1", "temp": 1.5, "extra": [1]}
{"sensor": "s2"}
{"temp": -2e3, "level": -128, "n": null}
"#,
            1,
            usize::MAX,
            TimestampFormat::Text,
        );
        assert!(decoded.bad_lines.is_empty(), "{:?}", decoded.bad_lines);
        assert_eq!(decoded.lines, 3);
        assert_eq!(
            rows(&decoded),
            vec![
                vec!["s1", "NULL", "3", "1.5"],
                vec!["s2", "NULL", "NULL", "NULL"],
                vec!["NULL", "-128", "NULL", "-2000.0"],
            ]
        );
    }

    #[test]
    fn regression_values_that_do_not_fit_their_column_are_bad_rows_not_altered() {
        let json = JsonLines::try_new("j", schema()).unwrap();
        let decoded = json.decode(
            br#"{"sensor": "ok", "level": 127}
{"level": 300}
{"n": "abc"}
{"n": 1.5}
{"n": 1e3}
{"n": ""}
{"temp": 1e999}
{"level": true}
{"sensor": {"nested": 1}}
{"sensor": "fine", "n": "12"}
"#,
            1,
            usize::MAX,
            TimestampFormat::Text,
        );
        assert_eq!(bad(&decoded), vec![2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            rows(&decoded),
            vec![
                vec!["ok", "127", "NULL", "NULL"],
                vec!["fine", "NULL", "12", "NULL"],
            ]
        );
        let messages: Vec<&str> = decoded
            .bad_lines
            .iter()
            .map(|b| b.message.as_str())
            .collect();
        assert!(
            messages[0].contains("column 'level': '300'"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("'abc' is not an integer"),
            "{messages:?}"
        );
        assert!(
            messages[2].contains("'1.5' is not an integer"),
            "{messages:?}"
        );
    }

    #[test]
    fn malformed_lines_are_reported_with_their_numbers_and_the_rest_kept() {
        let json = JsonLines::try_new("j", schema()).unwrap();
        let decoded = json.decode(
            b"{\"n\": 1}\n{\"n\": \n\n[1, 2]\n{\"n\": 2} {\"n\": 3}\nnot json\n{\"n\": 4}",
            10,
            usize::MAX,
            TimestampFormat::Text,
        );
        assert_eq!(bad(&decoded), vec![11, 12, 13, 14, 15]);
        assert_eq!(decoded.bad_lines[1].message, "empty line");
        let ns: Vec<String> = rows(&decoded).into_iter().map(|r| r[2].clone()).collect();
        assert_eq!(ns, vec!["1", "4"]);
        assert_eq!(decoded.lines, 7);
    }

    #[test]
    fn regression_two_objects_on_the_last_line_of_a_chunk_are_a_bad_line() {
        // The whole-chunk decoder stopped at its batch size (one row per
        // line) in the middle of the last line and took its first object.
        let json = JsonLines::try_new("j", schema()).unwrap();
        let decoded = json.decode(
            b"{\"n\": 26}\n{\"n\": 1} {\"n\": 2}\n",
            1,
            usize::MAX,
            TimestampFormat::Text,
        );
        assert_eq!(rows(&decoded), vec![vec!["NULL", "NULL", "26", "NULL"]]);
        assert_eq!(decoded.bad_lines[0].line, 2);
        assert_eq!(
            decoded.bad_lines[0].message,
            "more than one JSON value on the line"
        );
    }

    #[test]
    fn the_same_rows_whatever_the_chunks() {
        let json = JsonLines::try_new("j", schema()).unwrap();
        let text: &[u8] =
            b"{\"n\": 1}\n{\"n\": 300000000000}\n{\"n\": 2, \"sensor\": \"a\"}\nbad\n{\"n\": 3}\n";
        let whole = json.decode(text, 1, usize::MAX, TimestampFormat::Text);
        let ranges: Vec<(usize, usize)> = line_ranges(text).collect();
        // Every cut between lines gives the same rows and bad lines.
        for (cut, &(at, _)) in ranges.iter().enumerate().skip(1) {
            let first = json.decode(&text[..at], 1, usize::MAX, TimestampFormat::Text);
            let second = json.decode(
                &text[at..],
                1 + first.lines,
                usize::MAX,
                TimestampFormat::Text,
            );
            let mut joined = rows(&first);
            joined.extend(rows(&second));
            assert_eq!(joined, rows(&whole), "cut at line {cut}");
            let mut lines = bad(&first);
            lines.extend(bad(&second));
            assert_eq!(lines, bad(&whole), "cut at line {cut}");
        }
        assert_eq!(bad(&whole), vec![2, 4]);
    }
}
