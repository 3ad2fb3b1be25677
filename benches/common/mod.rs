//! What the benches share: the word-count queries they time.

/// Word count with DataFusion's `string_to_array`.
pub const WORD_COUNT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) \
     GROUP BY word";

/// The same count with brook's zero-copy `split`.
pub const WORD_COUNT_SPLIT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) \
     GROUP BY word";
