//! Entry points for the `cargo fuzz` targets in `fuzz/` and for the benches
//! (not a stable API). Each fuzz entry runs brook's code on arbitrary input
//! and panics only when one of brook's own promises is broken, so the fuzzer
//! reports exactly that.

use std::sync::Arc;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{BrookError, Result};
use crate::source::LineFormat;
use crate::source::decode::LineDecoder;
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

/// Decodes `input` as a socket stream would: cut into chunks of whole lines
/// (`cut` picks where), as text or as CSV of `(a INT, b TEXT, c DOUBLE)`.
/// Promises: no panic; every line is either a row or a reported bad line,
/// numbered in order, each number once.
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
    let Ok(decoder) = LineDecoder::try_new("fuzz", schema, format, b',') else {
        panic!("a valid schema was refused");
    };
    let mut decoder = decoder.with_max_line_bytes(max_line_bytes.max(1));
    let newlines = input.iter().filter(|b| **b == b'\n').count();
    let lines_in_input = newlines + usize::from(!input.is_empty() && !input.ends_with(b"\n"));
    let mut rest = input;
    let mut next_line = 1u64;
    let mut rows = 0usize;
    let mut last_bad = 0u64;
    let mut bad = 0usize;
    let mut chunk_lines = usize::from(cut % 7) + 1;
    while !rest.is_empty() {
        // The first `chunk_lines` lines (or everything left).
        let mut end = 0;
        for _ in 0..chunk_lines {
            match rest[end..].iter().position(|b| *b == b'\n') {
                Some(newline) => end += newline + 1,
                None => {
                    end = rest.len();
                    break;
                }
            }
            if end == rest.len() {
                break;
            }
        }
        let chunk = Buffer::from(&rest[..end]);
        rest = &rest[end..];
        let decoded = decoder.decode(&chunk, next_line);
        for line in &decoded.bad_lines {
            assert!(
                line.line >= next_line && line.line < next_line + decoded.lines,
                "bad line {} outside lines {next_line}..{}",
                line.line,
                next_line + decoded.lines
            );
            assert!(
                line.line > last_bad,
                "bad line {} reported twice or out of order",
                line.line
            );
            last_bad = line.line;
        }
        bad += decoded.bad_lines.len();
        rows += decoded.batch.as_ref().map_or(0, |b| b.num_rows());
        next_line += decoded.lines;
        chunk_lines = chunk_lines % 5 + 1;
    }
    assert_eq!(
        next_line - 1,
        lines_in_input as u64,
        "lines counted differ from the lines given"
    );
    assert_eq!(
        rows + bad,
        lines_in_input,
        "{rows} rows and {bad} bad lines from {lines_in_input} lines"
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
