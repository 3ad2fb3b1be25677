//! What the benches share: the word-count queries they time, and their input.
// Each bench uses part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use brook::line_schema;
use datafusion::arrow::array::StringViewArray;
use datafusion::arrow::record_batch::RecordBatch;

/// Word count with DataFusion's `string_to_array`.
pub const WORD_COUNT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) \
     GROUP BY word";

/// The same count with brook's zero-copy `split`.
pub const WORD_COUNT_SPLIT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) \
     GROUP BY word";

/// `rows` lines of 8 words from a 1,000-word vocabulary (`w0` .. `w999`).
pub fn word_lines(rows: usize) -> RecordBatch {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_word = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        format!("w{}", state % 1000)
    };
    let text: Vec<String> = (0..rows)
        .map(|_| (0..8).map(|_| next_word()).collect::<Vec<_>>().join(" "))
        .collect();
    RecordBatch::try_new(line_schema(), vec![Arc::new(StringViewArray::from(text))]).expect("batch")
}
