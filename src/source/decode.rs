//! Decoding newline-terminated input into Arrow: one text column per line, or
//! one CSV record per line through arrow-csv. Bad lines are set aside with
//! their line numbers; good lines around them are kept, in order.

use std::sync::Arc;

use arrow_csv::reader::{Decoder as CsvDecoder, ReaderBuilder};
use datafusion::arrow::array::{ArrayRef, StringBuilder, StringViewBuilder};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::LineFormat;
use crate::error::{BrookError, Result};

/// Rows per arrow-csv batch on the fast path.
const CSV_BATCH_ROWS: usize = 8192;

/// A line that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// 1-based line number in the stream.
    pub line: u64,
    /// Why it was rejected.
    pub message: String,
}

/// What one chunk of lines decoded to.
#[derive(Debug, Default)]
pub(crate) struct DecodedLines {
    /// The good rows, if any.
    pub batch: Option<RecordBatch>,
    /// The rejected lines, in order.
    pub bad_lines: Vec<BadLine>,
    /// How many lines the chunk held.
    pub lines: u64,
}

/// Turns chunks of complete lines into record batches of a stream's schema.
pub(crate) struct LineDecoder {
    schema: SchemaRef,
    format: LineFormat,
    delimiter: u8,
    /// Lines longer than this are rejected.
    max_line_bytes: usize,
    csv: Option<CsvDecoder>,
}

impl std::fmt::Debug for LineDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineDecoder")
            .field("format", &self.format)
            .field("schema", &self.schema)
            .finish()
    }
}

impl LineDecoder {
    /// A decoder for `schema`; text format needs exactly one text column.
    pub fn try_new(
        stream: &str,
        schema: SchemaRef,
        format: LineFormat,
        delimiter: u8,
    ) -> Result<Self> {
        if format == LineFormat::Text
            && !(schema.fields().len() == 1
                && matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8View | DataType::Utf8
                ))
        {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': format 'text' gives one TEXT column (e.g. (line TEXT)); use format = 'csv' for several columns"
            )));
        }
        if schema.fields().is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': declare at least one column"
            )));
        }
        Ok(Self {
            schema,
            format,
            delimiter,
            max_line_bytes: usize::MAX,
            csv: None,
        })
    }

    /// Rejects lines longer than `max_line_bytes` (default: no limit).
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Self {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// The bad line for a line of `len` bytes that is too long, if it is.
    fn too_long(&self, len: usize, line: u64) -> Option<BadLine> {
        (len > self.max_line_bytes).then(|| BadLine {
            line,
            message: format!(
                "line of {len} bytes is longer than max_line_bytes ({})",
                self.max_line_bytes
            ),
        })
    }

    /// Decodes `chunk`, whose lines all end with `\n` except perhaps the
    /// last one at the end of input. `first_line` numbers the first line.
    pub fn decode(&mut self, chunk: &Buffer, first_line: u64) -> DecodedLines {
        match self.format {
            LineFormat::Text if self.schema.field(0).data_type() == &DataType::Utf8View => {
                self.decode_text_views(chunk, first_line)
            }
            LineFormat::Text => self.decode_text(chunk, first_line),
            LineFormat::Csv => self.decode_csv(chunk, first_line),
        }
    }

    /// Text lines as views into `chunk`: no line's bytes are copied (lines
    /// of up to 12 bytes are stored inline in their view).
    fn decode_text_views(&self, chunk: &Buffer, first_line: u64) -> DecodedLines {
        let mut builder = StringViewBuilder::with_capacity(chunk.len() / 16 + 1);
        let block = builder.append_block(chunk.clone());
        let mut decoded = DecodedLines::default();
        for (index, (start, end)) in line_ranges(chunk).enumerate() {
            decoded.lines += 1;
            if let Some(bad) = self.too_long(end - start, first_line + index as u64) {
                decoded.bad_lines.push(bad);
                continue;
            }
            // Views address a block with u32 offsets; reads are far smaller.
            let appended = u32::try_from(start)
                .ok()
                .zip(u32::try_from(end - start).ok())
                .map(|(offset, len)| builder.try_append_view(block, offset, len));
            if !matches!(appended, Some(Ok(()))) {
                decoded.bad_lines.push(BadLine {
                    line: first_line + index as u64,
                    message: invalid_utf8_message(&chunk[start..end]),
                });
            }
        }
        let column: ArrayRef = Arc::new(builder.finish());
        if !column.is_empty() {
            decoded.batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![column]).ok();
        }
        decoded
    }

    fn decode_text(&self, chunk: &[u8], first_line: u64) -> DecodedLines {
        let mut builder = StringBuilder::with_capacity(chunk.len() / 16 + 1, chunk.len());
        let mut decoded = DecodedLines::default();
        for (index, line) in lines(chunk).enumerate() {
            if let Some(bad) = self.too_long(line.len(), first_line + index as u64) {
                decoded.bad_lines.push(bad);
                decoded.lines += 1;
                continue;
            }
            match std::str::from_utf8(line) {
                Ok(text) => builder.append_value(text),
                Err(_) => decoded.bad_lines.push(BadLine {
                    line: first_line + index as u64,
                    message: invalid_utf8_message(line),
                }),
            }
            decoded.lines += 1;
        }
        let column: ArrayRef = Arc::new(builder.finish());
        if !column.is_empty() {
            decoded.batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![column]).ok();
        }
        decoded
    }

    fn csv_decoder(&mut self) -> &mut CsvDecoder {
        let (schema, delimiter) = (Arc::clone(&self.schema), self.delimiter);
        self.csv.get_or_insert_with(|| {
            ReaderBuilder::new(schema)
                .with_header(false)
                .with_delimiter(delimiter)
                .with_batch_size(CSV_BATCH_ROWS)
                .with_null_regex(null_spellings())
                .build_decoder()
        })
    }

    fn decode_csv(&mut self, chunk: &[u8], first_line: u64) -> DecodedLines {
        let (line_count, longest) = line_ranges(chunk)
            .fold((0u64, 0usize), |(count, longest), (start, end)| {
                (count + 1, longest.max(end - start))
            });
        // Fast path: the whole chunk in one go. Anything unusual (an error,
        // an empty line, a row count that does not match the line count)
        // goes line by line, so every bad line is found and numbered.
        let has_empty_line = chunk.first() == Some(&b'\n')
            || memchr::memmem::find(chunk, b"\n\n").is_some()
            || memchr::memmem::find(chunk, b"\n\r\n").is_some()
            || chunk.starts_with(b"\r\n");
        if !has_empty_line
            && longest <= self.max_line_bytes
            && let Ok(batch) = self.decode_csv_rows(chunk)
            && batch.as_ref().map_or(0, |b| b.num_rows() as u64) == line_count
        {
            return DecodedLines {
                batch,
                bad_lines: Vec::new(),
                lines: line_count,
            };
        }
        self.csv = None;
        self.decode_csv_line_by_line(chunk, first_line)
    }

    fn decode_csv_line_by_line(&mut self, chunk: &[u8], first_line: u64) -> DecodedLines {
        let mut decoded = DecodedLines::default();
        let mut good_rows = Vec::new();
        for (index, line) in lines(chunk).enumerate() {
            decoded.lines += 1;
            let line_number = first_line + index as u64;
            if let Some(bad) = self.too_long(line.len(), line_number) {
                decoded.bad_lines.push(bad);
                continue;
            }
            if line.is_empty() {
                decoded.bad_lines.push(BadLine {
                    line: line_number,
                    message: "empty line".into(),
                });
                continue;
            }
            if std::str::from_utf8(line).is_err() {
                decoded.bad_lines.push(BadLine {
                    line: line_number,
                    message: invalid_utf8_message(line),
                });
                continue;
            }
            match self.decode_csv_rows(line) {
                Ok(Some(row)) if row.num_rows() == 1 => good_rows.push(row),
                Ok(other) => {
                    self.csv = None;
                    let found = other.map_or(0, |b| b.num_rows());
                    let quotes = line.iter().filter(|b| **b == b'"').count();
                    let message = if found == 0 && quotes % 2 == 1 {
                        "unterminated quoted field: a CSV record is one line, so a quoted field cannot hold a newline".to_string()
                    } else {
                        format!("expected one CSV record, found {found}")
                    };
                    decoded.bad_lines.push(BadLine {
                        line: line_number,
                        message,
                    });
                }
                Err(err) => {
                    self.csv = None;
                    decoded.bad_lines.push(BadLine {
                        line: line_number,
                        message: clean_csv_message(&err.to_string()),
                    });
                }
            }
        }
        decoded.batch = match good_rows.len() {
            0 => None,
            _ => concat_batches(&self.schema, &good_rows).ok(),
        };
        decoded
    }

    /// Runs arrow-csv over `bytes` (complete records) and returns all rows.
    fn decode_csv_rows(&mut self, bytes: &[u8]) -> Result<Option<RecordBatch>> {
        let terminated;
        let mut input = bytes;
        if !bytes.ends_with(b"\n") {
            terminated = [bytes, b"\n"].concat();
            input = &terminated;
        }
        let schema = Arc::clone(&self.schema);
        let decoder = self.csv_decoder();
        let mut batches = Vec::new();
        while !input.is_empty() {
            let consumed = decoder.decode(input)?;
            input = &input[consumed..];
            if decoder.capacity() == 0 || consumed == 0 {
                batches.extend(decoder.flush()?);
            }
        }
        batches.extend(decoder.flush()?);
        Ok(match batches.len() {
            0 => None,
            1 => batches.pop(),
            _ => Some(concat_batches(&schema, &batches)?),
        })
    }
}

/// The lines of `chunk` without their `\n` or `\r\n`.
fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_ranges(chunk).map(move |(start, end)| &chunk[start..end])
}

/// Byte ranges of the lines of `chunk`, without their `\n` or `\r\n`; a
/// last line without a newline counts.
fn line_ranges(chunk: &[u8]) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', chunk)
        .map(Some)
        .chain(std::iter::once(None));
    ends.filter_map(move |newline| {
        let line_start = start;
        let end = match newline {
            Some(newline) => newline,
            None if start < chunk.len() => chunk.len(),
            None => return None,
        };
        start = end + 1;
        let end = if end > line_start && chunk[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        Some((line_start, end))
    })
}

fn invalid_utf8_message(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Err(err) => format!("invalid UTF-8 at byte {}", err.valid_up_to() + 1),
        Ok(_) => "line does not fit in a view".to_string(),
    }
}

/// arrow-csv's messages count lines within its own input; brook reports the
/// stream's line number instead, so drop theirs.
fn clean_csv_message(message: &str) -> String {
    let message = message
        .trim_start_matches("Csv error: ")
        .trim_start_matches("Parser error: ");
    let mut cleaned = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" line ") {
        let (before, after) = rest.split_at(at);
        let digits = after[" line ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        if digits == 0 {
            cleaned.push_str(&rest[..at + " line ".len()]);
            rest = &rest[at + " line ".len()..];
            continue;
        }
        let before = before
            .strip_suffix(" at")
            .or_else(|| before.strip_suffix(" for"))
            .unwrap_or(before);
        cleaned.push_str(before);
        rest = &after[" line ".len() + digits..];
    }
    cleaned.push_str(rest);
    cleaned
}

/// What CSV writers use for NULL: an empty field, `NULL`, `null`, and `\N`
/// (PostgreSQL's COPY, MySQL's dumps).
fn null_spellings() -> regex::Regex {
    static NULLS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        #[allow(clippy::expect_used)]
        regex::Regex::new(r"^(|NULL|null|\\N)$").expect("a fixed, valid pattern")
    });
    NULLS.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Float64Array};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn csv_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8View, true),
            Field::new("temp", DataType::Float64, true),
        ]))
    }

    fn buffer(bytes: &[u8]) -> Buffer {
        Buffer::from(bytes)
    }

    #[test]
    fn text_lines_strip_crlf_and_keep_empty_lines() {
        for text_type in [DataType::Utf8View, DataType::Utf8] {
            let schema = Arc::new(Schema::new(vec![Field::new("line", text_type, true)]));
            let mut decoder = LineDecoder::try_new("t", schema, LineFormat::Text, b',').unwrap();
            let decoded = decoder.decode(
                &buffer(b"a b\r\n\na line longer than twelve bytes\nlast"),
                1,
            );
            let column = cast(decoded.batch.unwrap().column(0), &DataType::Utf8).unwrap();
            let values: Vec<_> = column
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap())
                .collect();
            assert_eq!(
                values,
                vec!["a b", "", "a line longer than twelve bytes", "last"]
            );
            assert_eq!(decoded.lines, 4);
        }
    }

    #[test]
    fn text_invalid_utf8_is_a_bad_line_with_its_number() {
        for text_type in [DataType::Utf8View, DataType::Utf8] {
            let schema = Arc::new(Schema::new(vec![Field::new("line", text_type, true)]));
            let mut decoder = LineDecoder::try_new("t", schema, LineFormat::Text, b',').unwrap();
            let decoded = decoder.decode(&buffer(b"ok\nbad \xff\nfine\n"), 10);
            assert_eq!(decoded.batch.unwrap().num_rows(), 2);
            assert_eq!(
                decoded.bad_lines,
                vec![BadLine {
                    line: 11,
                    message: "invalid UTF-8 at byte 5".into()
                }]
            );
        }
    }

    #[test]
    fn csv_bad_rows_are_skipped_and_numbered() {
        let mut decoder = LineDecoder::try_new("r", csv_schema(), LineFormat::Csv, b',').unwrap();
        let decoded = decoder.decode(&buffer(b"s1,1.5\ns2,abc\ns3,2.5,extra\n\ns4,4\n"), 1);
        let batch = decoded.batch.unwrap();
        let temps: &Float64Array = batch.column(1).as_primitive();
        assert_eq!(temps.values().to_vec(), vec![1.5, 4.0]);
        let lines: Vec<u64> = decoded.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(
            decoded.bad_lines[0].message.contains("abc"),
            "{:?}",
            decoded.bad_lines[0]
        );
        assert!(
            !decoded.bad_lines[0].message.contains("line 0"),
            "{:?}",
            decoded.bad_lines[0]
        );
        assert!(
            decoded.bad_lines[1].message.contains("fields"),
            "{:?}",
            decoded.bad_lines[1]
        );
        assert_eq!(decoded.bad_lines[2].message, "empty line");
    }

    #[test]
    fn csv_fast_path_decodes_a_clean_chunk_and_a_final_unterminated_line() {
        let mut decoder = LineDecoder::try_new("r", csv_schema(), LineFormat::Csv, b',').unwrap();
        let decoded = decoder.decode(&buffer(b"a,1\r\nb,2\nc,3"), 1);
        assert_eq!(decoded.batch.unwrap().num_rows(), 3);
        assert!(decoded.bad_lines.is_empty());
    }

    #[test]
    fn lines_over_max_line_bytes_are_bad_lines_in_both_formats() {
        let text = Arc::new(Schema::new(vec![Field::new(
            "line",
            DataType::Utf8View,
            true,
        )]));
        let mut decoder = LineDecoder::try_new("t", text, LineFormat::Text, b',')
            .unwrap()
            .with_max_line_bytes(5);
        let decoded = decoder.decode(
            &buffer(
                b"short
much too long
ok
",
            ),
            1,
        );
        assert_eq!(decoded.batch.unwrap().num_rows(), 2);
        assert_eq!(decoded.lines, 3);
        assert_eq!(decoded.bad_lines[0].line, 2);
        assert!(
            decoded.bad_lines[0]
                .message
                .contains("longer than max_line_bytes (5)")
        );

        let mut decoder = LineDecoder::try_new("r", csv_schema(), LineFormat::Csv, b',')
            .unwrap()
            .with_max_line_bytes(6);
        let decoded = decoder.decode(
            &buffer(
                b"a,1
bbbbbbbb,2
c,3
",
            ),
            1,
        );
        assert_eq!(decoded.batch.unwrap().num_rows(), 2);
        assert_eq!(
            decoded.bad_lines.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn line_ranges_cover_every_line_once() {
        assert_eq!(line_ranges(b"").collect::<Vec<_>>(), vec![]);
        assert_eq!(line_ranges(b"\n").collect::<Vec<_>>(), vec![(0, 0)]);
        assert_eq!(
            line_ranges(b"ab\r\ncd").collect::<Vec<_>>(),
            vec![(0, 2), (4, 6)]
        );
        assert_eq!(
            line_ranges(b"ab\n\n").collect::<Vec<_>>(),
            vec![(0, 2), (3, 3)]
        );
    }
}
