//! Decoding CSV lines: each line split into its fields (a quoted field
//! holds delimiters and doubled quotes, within its line), then each column
//! parsed over all the good rows of a chunk at once.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::values;
use super::{
    BadLine, DecodedLines, LineDecoder, invalid_utf8_message, line_ranges, too_long_message,
    without_refused,
};

impl LineDecoder {
    /// Splits every line into its fields (setting bad lines aside), then
    /// parses each column over all good rows at once, then drops the rows
    /// a value was refused in. No line is decoded twice and no line's
    /// result depends on its neighbours.
    pub(super) fn decode_csv(&mut self, chunk: &Buffer, first_line: u64) -> DecodedLines {
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        let mut splitter = CsvSplitter {
            delimiter: self.delimiter,
            columns: self.schema.fields().len(),
            marks: ChunkMarks::of(chunk),
            fields,
            unescaped: Vec::new(),
        };
        let mut row_lines = Vec::new();
        let mut decoded = DecodedLines::default();
        // Bytes before this offset are valid UTF-8; checked a run at a time.
        let mut valid_until = 0;
        for (index, (start, end)) in line_ranges(chunk).enumerate() {
            decoded.lines += 1;
            let line_number = first_line + index as u64;
            let line = &chunk[start..end];
            if end > valid_until {
                valid_until = match std::str::from_utf8(&chunk[start..]) {
                    Ok(_) => chunk.len(),
                    Err(err) => start + err.valid_up_to(),
                };
            }
            let problem = self
                .csv_line_problem(line, end <= valid_until, splitter.marks)
                .or_else(|| splitter.split(chunk, start, end));
            match problem {
                Some(message) => decoded.bad_lines.push(BadLine {
                    line: line_number,
                    message,
                }),
                None => row_lines.push(line_number),
            }
        }
        if !row_lines.is_empty() {
            let (fields, unescaped) = (&splitter.fields, &splitter.unescaped);
            self.add_csv_rows(&mut decoded, chunk, unescaped, fields, &row_lines);
        }
        self.fields = splitter.fields;
        decoded
    }

    /// Why a CSV `line` is not a record, as far as can be told before it is
    /// split: too long, empty, not UTF-8 (`valid_utf8` false), or holding a
    /// `\r` where no quote can make it data.
    fn csv_line_problem(&self, line: &[u8], valid_utf8: bool, marks: ChunkMarks) -> Option<String> {
        if line.len() > self.max_line_bytes {
            Some(too_long_message(self.max_line_bytes))
        } else if line.is_empty() {
            Some("empty line".to_string())
        } else if !valid_utf8 {
            Some(invalid_utf8_message(line))
        } else if marks.carriage_return
            && !marks.quoted(line)
            && memchr::memchr(b'\r', line).is_some()
        {
            // A record with quotes is checked field by field: a `\r`
            // inside quotes is data (RFC 4180), outside it is not.
            Some(CARRIAGE_RETURN_OUTSIDE_QUOTES.to_string())
        } else {
            None
        }
    }

    /// Builds the batch of the good rows (their line numbers `row_lines`)
    /// into `decoded`; a row a value was refused in becomes a bad line, in
    /// line order.
    fn add_csv_rows(
        &self,
        decoded: &mut DecodedLines,
        chunk: &Buffer,
        unescaped: &[u8],
        fields: &[(usize, usize)],
        row_lines: &[u64],
    ) {
        let (batch, refused) = self.build_rows(chunk, unescaped, fields, row_lines.len());
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
    }

    /// The batch of `rows` rows from their fields, without the rows a
    /// value was refused in, and those rows with why.
    fn build_rows(
        &self,
        chunk: &Buffer,
        unescaped: &[u8],
        fields: &[(usize, usize)],
        rows: usize,
    ) -> (Option<RecordBatch>, Vec<(usize, String)>) {
        let columns = self.schema.fields().len();
        let mut refused: Vec<Option<String>> = vec![None; rows];
        let arrays: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(column, field)| {
                values::build_column(
                    field,
                    values::ColumnInput {
                        chunk,
                        unescaped,
                        fields,
                        columns,
                        column,
                        refused: &mut refused,
                    },
                    chunk,
                    self.timestamps,
                )
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch =
            match RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options) {
                Ok(batch) => batch,
                Err(err) => {
                    // Not expected for the types `values` builds; reported
                    // on every row rather than lost silently.
                    let message = format!("internal error building the rows: {err}");
                    return (None, (0..rows).map(|row| (row, message.clone())).collect());
                }
            };
        without_refused(batch, refused)
    }
}

/// What a chunk of CSV holds anywhere, checked once per chunk: most chunks
/// have no quote, and no `\r` but the ones of `\r\n` line ends.
#[derive(Clone, Copy)]
struct ChunkMarks {
    quote: bool,
    carriage_return: bool,
}

impl ChunkMarks {
    /// The marks of `chunk`.
    fn of(chunk: &[u8]) -> Self {
        ChunkMarks {
            quote: memchr::memchr(b'"', chunk).is_some(),
            carriage_return: memchr::memchr(b'\r', chunk).is_some(),
        }
    }

    /// Whether `line`, of the chunk, holds a quote.
    #[inline]
    fn quoted(self, line: &[u8]) -> bool {
        self.quote && memchr::memchr(b'"', line).is_some()
    }
}

/// Splits the records of a chunk into their fields, each record's after
/// the one before.
struct CsvSplitter {
    delimiter: u8,
    /// The number of fields a record has.
    columns: usize,
    marks: ChunkMarks,
    /// Each field's byte range: in the chunk, or for a quoted field in
    /// `unescaped`, counted from the chunk's end.
    fields: Vec<(usize, usize)>,
    /// Quoted fields, unescaped.
    unescaped: Vec<u8>,
}

impl CsvSplitter {
    /// Splits the record `chunk[start..end]` into `fields`; why not, with
    /// none of its fields kept, when it cannot be split or has the wrong
    /// number of fields.
    fn split(&mut self, chunk: &[u8], start: usize, end: usize) -> Option<String> {
        let columns = self.columns;
        let fields = &mut self.fields;
        let row_start = fields.len();
        let line = &chunk[start..end];
        let split = if self.marks.quoted(line) {
            split_quoted(
                chunk,
                start,
                end,
                self.delimiter,
                fields,
                &mut self.unescaped,
            )
        } else {
            split_plain(line, start, self.delimiter, fields);
            Ok(())
        };
        let found = fields.len() - row_start;
        match split {
            Err(message) => {
                fields.truncate(row_start);
                Some(message)
            }
            Ok(()) if found != columns => {
                fields.truncate(row_start);
                Some(format!(
                    "incorrect number of fields: expected {columns} got {found}"
                ))
            }
            Ok(()) => None,
        }
    }
}

/// Splits a line without quotes at every delimiter. `start` is the line's
/// offset in the chunk.
fn split_plain(line: &[u8], start: usize, delimiter: u8, fields: &mut Vec<(usize, usize)>) {
    let mut field_start = start;
    for at in memchr::memchr_iter(delimiter, line) {
        fields.push((field_start, start + at));
        field_start = start + at + 1;
    }
    fields.push((field_start, start + line.len()));
}

/// Why a record with a `\r` outside quotes is refused.
const CARRIAGE_RETURN_OUTSIDE_QUOTES: &str =
    "a carriage return inside a CSV record, outside quotes (a CSV line ends with \\n or \\r\\n)";

/// Splits the line `chunk[start..end]`, which holds a quote. A quoted field
/// starts with `"` right after a delimiter (or at the line's start), ends
/// with `"` right before a delimiter (or at the line's end), and writes a
/// quote inside as `""`; such a field is unescaped into `unescaped`, its
/// range then counted from `chunk.len()`. Any other quote is an error.
fn split_quoted(
    chunk: &[u8],
    start: usize,
    end: usize,
    delimiter: u8,
    fields: &mut Vec<(usize, usize)>,
    unescaped: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let mut position = start;
    let mut field = 1;
    loop {
        if position < end && chunk[position] == b'"' {
            let content_start = position + 1;
            let mut search = content_start;
            let mut escaped = false;
            let close = loop {
                let Some(quote) = memchr::memchr(b'"', &chunk[search..end]).map(|q| search + q)
                else {
                    return Err("unterminated quoted field: a CSV record is one line, so a quoted field cannot hold a newline".to_string());
                };
                if quote + 1 < end && chunk[quote + 1] == b'"' {
                    escaped = true;
                    search = quote + 2;
                    continue;
                }
                break quote;
            };
            if escaped {
                let from = chunk.len() + unescaped.len();
                let mut rest = &chunk[content_start..close];
                while let Some(quote) = memchr::memchr(b'"', rest) {
                    // `quote` is the first of a `""` pair: keep one.
                    unescaped.extend_from_slice(&rest[..=quote]);
                    rest = &rest[quote + 2..];
                }
                unescaped.extend_from_slice(rest);
                fields.push((from, chunk.len() + unescaped.len()));
            } else {
                fields.push((content_start, close));
            }
            position = close + 1;
            if position == end {
                return Ok(());
            }
            if chunk[position] != delimiter {
                return Err(format!(
                    "field {field}: characters after its closing quote (a quoted field ends at the quote)"
                ));
            }
        } else {
            let field_end =
                memchr::memchr(delimiter, &chunk[position..end]).map_or(end, |at| position + at);
            if memchr::memchr(b'"', &chunk[position..field_end]).is_some() {
                return Err(format!(
                    "field {field}: a quote inside an unquoted field (quote the whole field and double the quotes inside it)"
                ));
            }
            if memchr::memchr(b'\r', &chunk[position..field_end]).is_some() {
                return Err(format!("field {field}: {CARRIAGE_RETURN_OUTSIDE_QUOTES}"));
            }
            fields.push((position, field_end));
            if field_end == end {
                return Ok(());
            }
            position = field_end;
        }
        // `position` is at a delimiter: the next field starts after it.
        position += 1;
        field += 1;
    }
}
