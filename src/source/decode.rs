//! Decoding a stream's bytes into Arrow: cutting them into lines
//! ([`LineSplitter`]), then one text column per line, one CSV record or one
//! JSON object per line ([`LineDecoder`]). Every line is decoded on its own bytes alone, so
//! the rows and the bad lines reported are the same however the bytes were
//! cut into reads. Bad lines are set aside with their line numbers; good
//! lines around them are decoded in bulk and kept, in order.

mod avro;
mod changelog;
mod csv;
mod json;

pub(crate) use avro::AvroDecoder;
pub(crate) use changelog::{Envelope, upsert_frame};
mod values;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, StringBuilder, StringViewBuilder};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::{LineFormat, TimestampFormat};
use crate::error::{BrookError, Result};

/// A UTF-8 byte-order mark, which some writers put at the start of a file.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

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

/// The message for a line over `max_line_bytes`. One wording whether the
/// line was caught whole or while it was still arriving, so that the report
/// does not depend on how the line was cut into reads.
fn too_long_message(max_line_bytes: usize) -> String {
    format!("line longer than max_line_bytes ({max_line_bytes}): skipped")
}

/// Cuts a stream's bytes, as they arrive in reads of any size, into
/// complete lines for a [`LineDecoder`], and numbers them over all the
/// connections of the stream.
///
/// A line ends at `\n` (a `\r` before it belongs to the line end). A line
/// over `max_line_bytes` is reported as soon as that is certain and its
/// bytes are dropped as they arrive, so a runaway line cannot grow memory.
/// A byte-order mark at the start of a connection is dropped.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    decoder: LineDecoder,
    /// Bytes read and not yet decoded: the start of a line.
    buffer: Vec<u8>,
    /// Bytes before this offset in `buffer` are known to hold no newline.
    scanned: usize,
    /// Inside a line over max_line_bytes, already reported: drop bytes up
    /// to its newline.
    discarding: bool,
    /// No byte of the current connection has been decoded yet, so a
    /// byte-order mark may still be arriving.
    at_connection_start: bool,
    /// Number of the next line to arrive, counted over all connections.
    next_line: u64,
    /// Bytes asked for per read.
    read_bytes: usize,
}

impl LineSplitter {
    /// Splits for `decoder`, reading `read_bytes` at a time.
    pub fn new(decoder: LineDecoder, read_bytes: usize) -> Self {
        Self {
            decoder,
            buffer: Vec::with_capacity(read_bytes),
            scanned: 0,
            discarding: false,
            at_connection_start: true,
            next_line: 1,
            read_bytes,
        }
    }

    /// Numbers the next line `line` (a file whose header line was skipped
    /// starts at 2).
    pub fn starting_at_line(mut self, line: u64) -> Self {
        self.next_line = line;
        self
    }

    /// The buffer the next read appends to, with room for a read.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        if self.buffer.capacity() - self.buffer.len() < self.read_bytes / 4 {
            self.buffer.reserve(self.read_bytes);
        }
        &mut self.buffer
    }

    /// Decodes the complete lines the reads so far have brought, and
    /// reports a line that has grown too long.
    pub fn decode_read(&mut self) -> DecodedLines {
        if self.at_connection_start {
            if self.buffer.len() < BYTE_ORDER_MARK.len()
                && BYTE_ORDER_MARK.starts_with(&self.buffer)
            {
                return DecodedLines::default();
            }
            if self.buffer.starts_with(BYTE_ORDER_MARK) {
                self.buffer.drain(..BYTE_ORDER_MARK.len());
            }
            self.at_connection_start = false;
        }
        if self.discarding {
            let Some(newline) = memchr::memchr(b'\n', &self.buffer) else {
                self.buffer.clear();
                return DecodedLines::default();
            };
            self.buffer.drain(..=newline);
            self.next_line += 1;
            self.scanned = 0;
            self.discarding = false;
        }
        let mut decoded = DecodedLines::default();
        if let Some(last_newline) =
            memchr::memrchr(b'\n', &self.buffer[self.scanned..]).map(|i| self.scanned + i)
        {
            let lines = take_lines(&mut self.buffer, last_newline + 1, self.read_bytes);
            decoded = self.decoder.decode(&lines, self.next_line);
            self.next_line += decoded.lines;
        }
        self.scanned = self.buffer.len();
        // A `\r` at the end may be the start of a `\r\n` line end, which is
        // not part of the line's length.
        let known_length = self.buffer.len() - usize::from(self.buffer.ends_with(b"\r"));
        if known_length > self.decoder.max_line_bytes {
            decoded.bad_lines.push(BadLine {
                line: self.next_line,
                message: too_long_message(self.decoder.max_line_bytes),
            });
            self.buffer.clear();
            self.scanned = 0;
            self.discarding = true;
        }
        decoded
    }

    /// The connection was closed by the peer: a last line without a
    /// newline is still a line.
    pub fn decode_close(&mut self) -> DecodedLines {
        let mut decoded = DecodedLines::default();
        if self.discarding {
            self.next_line += 1;
        } else if !self.buffer.is_empty() {
            let len = self.buffer.len();
            let lines = take_lines(&mut self.buffer, len, self.read_bytes);
            decoded = self.decoder.decode(&lines, self.next_line);
            self.next_line += decoded.lines;
        }
        self.start_connection();
        decoded
    }

    /// The connection was lost: an incomplete line is dropped, reported,
    /// and keeps its number, so the next connection's lines do not reuse
    /// it.
    pub fn decode_loss(&mut self) -> Option<BadLine> {
        let mut dropped = None;
        if self.discarding {
            self.next_line += 1;
        } else if !self.buffer.is_empty() {
            dropped = Some(BadLine {
                line: self.next_line,
                message: format!(
                    "incomplete line of {} bytes dropped: the connection was lost",
                    self.buffer.len()
                ),
            });
            self.next_line += 1;
        }
        self.start_connection();
        dropped
    }

    fn start_connection(&mut self) {
        self.buffer.clear();
        self.scanned = 0;
        self.discarding = false;
        self.at_connection_start = true;
    }
}

/// Takes the first `len` bytes of `buffer` (whole lines) as an Arrow buffer
/// that decoded rows may point into, leaving the rest in `buffer`. A large
/// part is handed over without copying; a small one is copied, so that a
/// trickle of tiny reads does not pin a large allocation per read.
fn take_lines(buffer: &mut Vec<u8>, len: usize, read_bytes: usize) -> Buffer {
    if len * 4 < buffer.capacity() {
        let lines = Buffer::from(&buffer[..len]);
        buffer.drain(..len);
        return lines;
    }
    let mut rest = Vec::with_capacity(read_bytes.max(buffer.len() - len));
    rest.extend_from_slice(&buffer[len..]);
    buffer.truncate(len);
    Buffer::from_vec(std::mem::replace(buffer, rest))
}

/// Turns chunks of complete lines into record batches of a stream's schema.
pub(crate) struct LineDecoder {
    schema: SchemaRef,
    format: LineFormat,
    delimiter: u8,
    /// Lines longer than this are rejected.
    max_line_bytes: usize,
    /// How CSV and JSON write TIMESTAMP values.
    timestamps: TimestampFormat,
    /// Where each CSV field of the chunk being decoded lies, `columns` per
    /// good row; kept between chunks to reuse its allocation.
    fields: Vec<(usize, usize)>,
    /// The JSON decoder, for format JSON.
    json: Option<json::JsonLines>,
    /// How each line wraps a change, for a changelog.
    envelope: Option<Envelope>,
}

impl std::fmt::Debug for LineDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineDecoder")
            .field("format", &self.format)
            .field("timestamps", &self.timestamps)
            .field("schema", &self.schema)
            .finish()
    }
}

impl LineDecoder {
    /// A decoder for `schema`; text format needs exactly one text column,
    /// CSV columns of types it can read.
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
        if format == LineFormat::Csv {
            if matches!(delimiter, b'"' | b'\n' | b'\r') {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': the CSV delimiter cannot be a quote or a line end"
                )));
            }
            for field in schema.fields() {
                if let Some(why) = values::unsupported(field.data_type()) {
                    return Err(BrookError::invalid(format!(
                        "stream '{stream}': column '{}': format 'csv' cannot read {why}",
                        field.name()
                    )));
                }
            }
        }
        let json = match format {
            LineFormat::Json | LineFormat::DebeziumJson => {
                Some(json::JsonLines::try_new(stream, Arc::clone(&schema))?)
            }
            LineFormat::Text | LineFormat::Csv => None,
        };
        let envelope = (format == LineFormat::DebeziumJson).then_some(Envelope::Debezium);
        Ok(Self {
            schema,
            format,
            delimiter,
            max_line_bytes: usize::MAX,
            timestamps: TimestampFormat::Text,
            fields: Vec::new(),
            json,
            envelope,
        })
    }

    /// Reads each JSON line as a change wrapped in `envelope` (format JSON
    /// only).
    pub fn with_envelope(mut self, envelope: Envelope) -> Self {
        if self.json.is_some() {
            self.envelope = Some(envelope);
        }
        self
    }

    /// Rejects lines longer than `max_line_bytes` (default: no limit).
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Self {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// Reads TIMESTAMP fields as `timestamps` says (default:
    /// [`TimestampFormat::Text`]).
    pub fn with_timestamp_format(mut self, timestamps: TimestampFormat) -> Self {
        self.timestamps = timestamps;
        self
    }

    /// The bad line for a line of `len` bytes that is too long, if it is.
    fn too_long(&self, len: usize, line: u64) -> Option<BadLine> {
        (len > self.max_line_bytes).then(|| BadLine {
            line,
            message: too_long_message(self.max_line_bytes),
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
            LineFormat::Json | LineFormat::DebeziumJson => match (&self.json, &self.envelope) {
                (Some(json), None) => {
                    json.decode(chunk, first_line, self.max_line_bytes, self.timestamps)
                }
                (Some(json), Some(envelope)) => json.decode_changes(
                    chunk,
                    first_line,
                    self.max_line_bytes,
                    self.timestamps,
                    envelope,
                ),
                // try_new builds it for the JSON formats.
                (None, _) => DecodedLines::default(),
            },
        }
    }

    /// Text lines as views into `chunk`: no line's bytes are copied (lines
    /// of up to 12 bytes are stored inline in their view).
    fn decode_text_views(&self, chunk: &Buffer, first_line: u64) -> DecodedLines {
        let mut builder = StringViewBuilder::with_capacity(chunk.len() / 16 + 1);
        // Views address a block with u32 offsets; a larger chunk is copied.
        let block = (chunk.len() < u32::MAX as usize).then(|| builder.append_block(chunk.clone()));
        let mut decoded = DecodedLines::default();
        for (index, (start, end)) in line_ranges(chunk).enumerate() {
            decoded.lines += 1;
            if let Some(bad) = self.too_long(end - start, first_line + index as u64) {
                decoded.bad_lines.push(bad);
                continue;
            }
            let appended = match block {
                Some(block) => u32::try_from(start)
                    .ok()
                    .zip(u32::try_from(end - start).ok())
                    .is_some_and(|(offset, len)| {
                        builder.try_append_view(block, offset, len).is_ok()
                    }),
                None => std::str::from_utf8(&chunk[start..end])
                    .map(|text| builder.append_value(text))
                    .is_ok(),
            };
            if !appended {
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
            decoded.lines += 1;
            if let Some(bad) = self.too_long(line.len(), first_line + index as u64) {
                decoded.bad_lines.push(bad);
                continue;
            }
            match std::str::from_utf8(line) {
                Ok(text) => builder.append_value(text),
                Err(_) => decoded.bad_lines.push(BadLine {
                    line: first_line + index as u64,
                    message: invalid_utf8_message(line),
                }),
            }
        }
        let column: ArrayRef = Arc::new(builder.finish());
        if !column.is_empty() {
            decoded.batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![column]).ok();
        }
        decoded
    }
}

/// `batch` without the rows refused (each with why), and those rows' indexes
/// with why. A batch left without rows is none.
fn without_refused(
    batch: RecordBatch,
    refused: Vec<Option<String>>,
) -> (Option<RecordBatch>, Vec<(usize, String)>) {
    if refused.iter().all(Option::is_none) {
        return (Some(batch).filter(|b| b.num_rows() > 0), Vec::new());
    }
    let keep: BooleanArray = refused.iter().map(|r| Some(r.is_none())).collect();
    let kept = filter_record_batch(&batch, &keep)
        .ok()
        .filter(|b| b.num_rows() > 0);
    let refused = refused
        .into_iter()
        .enumerate()
        .filter_map(|(row, why)| why.map(|why| (row, why)))
        .collect();
    (kept, refused)
}

/// The lines of `chunk` without their `\n` or `\r\n`.
fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_ranges(chunk).map(move |(start, end)| &chunk[start..end])
}

/// Byte ranges of the lines of `chunk`, without their `\n` or `\r\n`; a
/// last line without a newline counts (a `\r` ending it is dropped too: the
/// stream ended in the middle of a `\r\n`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Float64Array};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

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
    fn regression_a_long_line_cut_off_with_its_connection_keeps_its_number() {
        for lost in [false, true] {
            let text = Arc::new(Schema::new(vec![Field::new(
                "line",
                DataType::Utf8View,
                true,
            )]));
            let decoder = LineDecoder::try_new("t", text, LineFormat::Text, b',')
                .unwrap()
                .with_max_line_bytes(4);
            let mut lines = LineSplitter::new(decoder, 1024);
            lines.read_buffer().extend_from_slice(b"ok\nmuch too long");
            let first = lines.decode_read();
            assert_eq!(first.batch.unwrap().num_rows(), 1);
            assert_eq!(
                first.bad_lines,
                vec![BadLine {
                    line: 2,
                    message: "line longer than max_line_bytes (4): skipped".into()
                }]
            );
            if lost {
                assert_eq!(lines.decode_loss(), None);
            } else {
                let closed = lines.decode_close();
                assert!(closed.batch.is_none() && closed.bad_lines.is_empty());
            }
            // The next connection's first line is line 3, not 2 again.
            lines.read_buffer().extend_from_slice(b"\xff\n");
            let next = lines.decode_read();
            assert_eq!(
                next.bad_lines.iter().map(|b| b.line).collect::<Vec<_>>(),
                vec![3],
                "lost: {lost}"
            );
        }
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

    fn formatted_rows(batch: &RecordBatch) -> Vec<String> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let options = FormatOptions::default().with_null("NULL");
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
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[test]
    fn csv_timestamps_in_epoch_milliseconds_are_exact_and_dates_stay_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("day", DataType::Date32, true),
        ]));
        let mut decoder = LineDecoder::try_new("e", schema, LineFormat::Csv, b',')
            .unwrap()
            .with_timestamp_format(TimestampFormat::EpochMillis);
        let decoded = decoder.decode(
            &buffer(
                b"1700000000123,2023-11-14\n-1,1969-12-31\n2023-11-14 22:13:20,2023-11-14\n\
                  1700000000123.5,2023-11-14\n,\n1e3,2023-11-14\n0,19000\n",
            ),
            1,
        );
        assert_eq!(
            formatted_rows(&decoded.batch.unwrap()),
            vec![
                "2023-11-14T22:13:20.123|2023-11-14",
                "1969-12-31T23:59:59.999|1969-12-31",
                "NULL|NULL",
            ]
        );
        assert_eq!(
            decoded.bad_lines,
            vec![
                BadLine {
                    line: 3,
                    message: "column 'at': '2023-11-14 22:13:20' is not a TIMESTAMP in epoch milliseconds (an integer with an optional sign)".into(),
                },
                BadLine {
                    line: 4,
                    message: "column 'at': '1700000000123.5' is not a whole number of milliseconds (timestamp_format 'epoch_ms' takes integers)".into(),
                },
                BadLine {
                    line: 6,
                    message: "column 'at': '1e3' is not a TIMESTAMP in epoch milliseconds (an integer with an optional sign)".into(),
                },
                BadLine {
                    line: 7,
                    message: "column 'day': '19000' is not a DATE (YYYY-MM-DD)".into(),
                },
            ]
        );
    }

    #[test]
    fn csv_timestamps_are_text_unless_an_epoch_format_is_set() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let text = b"2023-11-14T22:13:20Z\n1700000000\n";
        let mut decoder =
            LineDecoder::try_new("e", Arc::clone(&schema), LineFormat::Csv, b',').unwrap();
        let decoded = decoder.decode(&buffer(text), 1);
        assert_eq!(
            formatted_rows(&decoded.batch.unwrap()),
            vec!["2023-11-14T22:13:20"]
        );
        assert_eq!(decoded.bad_lines[0].line, 2);
        let mut decoder = LineDecoder::try_new("e", schema, LineFormat::Csv, b',')
            .unwrap()
            .with_timestamp_format(TimestampFormat::EpochSeconds);
        let decoded = decoder.decode(&buffer(text), 1);
        assert_eq!(
            formatted_rows(&decoded.batch.unwrap()),
            vec!["2023-11-14T22:13:20"]
        );
        assert_eq!(decoded.bad_lines[0].line, 1);
    }

    #[test]
    fn json_epoch_timestamps_are_numbers_or_strings_holding_one() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]));
        let mut decoder = LineDecoder::try_new("e", schema, LineFormat::Json, b',')
            .unwrap()
            .with_timestamp_format(TimestampFormat::EpochSeconds);
        let decoded = decoder.decode(
            &buffer(
                br#"{"id": 1, "at": 1700000000.5}
{"id": 2, "at": "1700000000"}
{"id": 3, "at": -0.000000001}
{"id": 4, "at": null}
{"id": 5, "at": 1.7e9}
{"id": 6, "at": "2023-11-14T22:13:20Z"}
{"id": 7, "at": " 1700000000"}
{"id": 8, "at": true}
{"id": 9, "at": 99999999999999999999999}
{"id": 10}
"#,
            ),
            1,
        );
        assert_eq!(
            formatted_rows(&decoded.batch.unwrap()),
            vec![
                "1|2023-11-14T22:13:20.500",
                "2|2023-11-14T22:13:20",
                "3|1969-12-31T23:59:59.999999999",
                "4|NULL",
                "10|NULL",
            ]
        );
        let bad: Vec<(u64, &str)> = decoded
            .bad_lines
            .iter()
            .map(|b| (b.line, b.message.as_str()))
            .collect();
        assert_eq!(
            bad.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9]
        );
        assert!(
            bad[0]
                .1
                .starts_with("column 'at': '1.7e9' is not a TIMESTAMP in epoch seconds"),
            "{bad:?}"
        );
        assert!(bad[4].1.contains("out of range"), "{bad:?}");
    }
}
