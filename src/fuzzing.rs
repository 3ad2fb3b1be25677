//! Entry points for the `cargo fuzz` targets in `fuzz/` and for the benches
//! (not a stable API). Each fuzz entry runs brook's code on arbitrary input
//! and panics only when one of brook's own promises is broken, so the fuzzer
//! reports exactly that.

use std::sync::Arc;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{BrookError, Result};
use crate::source::LineFormat;
use crate::source::decode::{DecodedLines, LineDecoder, LineSplitter};
use crate::sql::parse_sql;

/// Parses `sql` as a script. Promises: no panic; an error's location lies
/// within the script (a line that exists, a column at most one past its end).
pub fn parse_script(sql: &str) {
    let Err(err) = parse_sql(sql) else {
        return;
    };
    let Some(location) = err.location() else {
        return;
    };
    let lines: Vec<&str> = sql.split('\n').collect();
    let line = usize::try_from(location.line).unwrap_or(usize::MAX);
    assert!(
        line >= 1 && line <= lines.len(),
        "error at line {} of a {}-line script: {err}",
        location.line,
        lines.len()
    );
    let width = lines[line - 1].chars().count() as u64;
    assert!(
        location.column >= 1 && location.column <= width + 2,
        "error at column {} of a {width}-character line: {err}",
        location.column
    );
    assert!(
        !matches!(err, BrookError::Internal(_)),
        "internal error: {err}"
    );
}

/// What a socket stream made of some bytes: its rows (cells joined by
/// `|`, NULL as `NULL`) and its reports (line number, message), each in
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    /// The rows, in order, each as its cells joined by `|`.
    pub rows: Vec<String>,
    /// The bad lines reported, in order: line number and message.
    pub reports: Vec<(u64, String)>,
}

/// Decodes `reads` as one connection of a socket stream of `schema` in
/// `format` delivers them, read after read, then the peer closing. This is
/// the socket's own line splitting and decoding, without the socket.
pub fn decode_reads(
    schema: SchemaRef,
    format: LineFormat,
    max_line_bytes: usize,
    reads: &[&[u8]],
) -> Result<Transcript> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let decoder =
        LineDecoder::try_new("fuzz", schema, format, b',')?.with_max_line_bytes(max_line_bytes);
    let mut lines = LineSplitter::new(decoder, 64 * 1024);
    let mut transcript = Transcript::default();
    let mut record = |decoded: DecodedLines| -> Result<()> {
        transcript.reports.extend(
            decoded
                .bad_lines
                .into_iter()
                .map(|bad| (bad.line, bad.message)),
        );
        let Some(batch) = decoded.batch else {
            return Ok(());
        };
        let options = FormatOptions::default().with_null("NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            transcript.rows.push(cells.join("|"));
        }
        Ok(())
    };
    for read in reads {
        lines.read_buffer().extend_from_slice(read);
        record(lines.decode_read())?;
    }
    record(lines.decode_close())?;
    Ok(transcript)
}

/// Decodes `input` as a socket stream would, as text or as CSV of
/// `(a INT, b TEXT, c DOUBLE)`: once in one read, once cut into reads at
/// arbitrary byte positions (`cut` seeds where). Promises: no panic; the
/// same rows and reports however the bytes were cut; every line is either
/// a row or one report, numbered in order.
pub fn decode_lines(input: &[u8], csv: bool, cut: u8, max_line_bytes: usize) {
    let schema = if csv {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("c", DataType::Float64, true),
        ]))
    } else {
        Arc::new(Schema::new(vec![Field::new(
            "line",
            DataType::Utf8View,
            true,
        )]))
    };
    let format = if csv {
        LineFormat::Csv
    } else {
        LineFormat::Text
    };
    let max_line_bytes = max_line_bytes.max(1);
    let decode =
        |reads: &[&[u8]]| match decode_reads(Arc::clone(&schema), format, max_line_bytes, reads) {
            Ok(transcript) => transcript,
            Err(err) => panic!("decoding failed: {err}"),
        };
    let whole = decode(&[input]);
    // Reads of 1 to 16 bytes, their lengths from a xorshift seeded by `cut`.
    let mut rng = crate::testing::Rng::new(u64::from(cut).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut reads = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let len = (rng.below(16) + 1).min(rest.len() as u64) as usize;
        let (read, after) = rest.split_at(len);
        reads.push(read);
        rest = after;
    }
    let cut_up = decode(&reads);
    assert_eq!(
        cut_up,
        whole,
        "cut into reads of {:?} bytes",
        reads.iter().map(|r| r.len()).collect::<Vec<_>>()
    );

    let mut last_reported = 0;
    for (line, _) in &whole.reports {
        assert!(
            *line > last_reported,
            "line {line} reported twice or out of order"
        );
        last_reported = *line;
    }
    let text = input
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(input);
    let lines_in_input = text.iter().filter(|b| **b == b'\n').count()
        + usize::from(!text.is_empty() && !text.ends_with(b"\n"));
    assert!(
        last_reported <= lines_in_input as u64,
        "line {last_reported} reported of {lines_in_input}"
    );
    assert_eq!(
        whole.rows.len() + whole.reports.len(),
        lines_in_input,
        "{} rows and {} reports from {lines_in_input} lines",
        whole.rows.len(),
        whole.reports.len()
    );
}

/// Decodes `chunks` (each a run of whole lines, as the socket hands them
/// over) with the socket's decoder for `schema` and `format`, and returns
/// the rows decoded and the lines reported bad. For `benches/csv_decode.rs`.
pub fn decode_chunks(
    schema: SchemaRef,
    format: LineFormat,
    chunks: &[Buffer],
) -> Result<(usize, usize)> {
    let mut decoder = LineDecoder::try_new("bench", schema, format, b',')?;
    let (mut rows, mut bad, mut next_line) = (0, 0, 1);
    for chunk in chunks {
        let decoded = decoder.decode(chunk, next_line);
        next_line += decoded.lines;
        rows += decoded.batch.as_ref().map_or(0, |b| b.num_rows());
        bad += decoded.bad_lines.len();
    }
    Ok((rows, bad))
}
