//! What the benches share: the word-count queries they time, and their input.
// Each bench uses part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use brook::{ContinuousQuery, QueueHandle, QueueOptions, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::StringViewArray;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// Word count with DataFusion's `string_to_array`.
pub const WORD_COUNT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) \
     GROUP BY word";

/// The same count with brook's zero-copy `split`.
pub const WORD_COUNT_SPLIT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) \
     GROUP BY word";

/// The benches' one pseudo-random sequence: inputs repeat exactly from
/// run to run.
pub use brook::testing::Rng;

/// A queue stream `name` that gives each push a batch of its own.
pub fn one_item_queue(ctx: &StreamContext, name: &str, schema: SchemaRef) -> QueueHandle {
    ctx.register_queue(
        name,
        schema,
        QueueOptions::default().with_one_at_a_time(true),
    )
    .expect("queue")
}

/// `rows` lines of 8 words from a 1,000-word vocabulary (`w0` .. `w999`).
pub fn word_lines(rows: usize) -> RecordBatch {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15_u64);
    let mut next_word = || format!("w{}", rng.next() % 1000);
    let text: Vec<String> = (0..rows)
        .map(|_| (0..8).map(|_| next_word()).collect::<Vec<_>>().join(" "))
        .collect();
    RecordBatch::try_new(line_schema(), vec![Arc::new(StringViewArray::from(text))]).expect("batch")
}

/// Starts `sql` over a queue stream `lines` that gets `batch` as `batches`
/// items, one per tick: pushed from a task that waits when the queue is
/// full (its bound). Must run inside a tokio runtime.
pub async fn query_over_batches(
    ctx: &StreamContext,
    sql: &str,
    batch: &RecordBatch,
    batches: u64,
) -> ContinuousQuery {
    let queue = one_item_queue(ctx, "lines", line_schema());
    let batch = batch.clone();
    tokio::spawn(async move {
        for _ in 0..batches {
            queue.push_wait(batch.clone()).await.expect("push");
        }
        queue.close();
    });
    let SqlOutput::Query(query) = ctx.sql(sql).await.expect("query") else {
        panic!("not a continuous query: {sql}")
    };
    query
}

/// The sum of the integer column `column` over `batches` (a count's
/// total), for benches that check their answer.
pub fn column_sum(batches: &[RecordBatch], column: &str) -> i64 {
    batches
        .iter()
        .map(|batch| {
            let values = batch
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"));
            let values = datafusion::arrow::compute::cast(
                values,
                &datafusion::arrow::datatypes::DataType::Int64,
            )
            .expect("an integer column");
            let values = values
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .expect("int64");
            values.iter().flatten().sum::<i64>()
        })
        .sum()
}

/// Asserts that a word count's result counts exactly `rows` lines of 8
/// words (the batches `word_lines` makes).
pub fn assert_counts_words(output: &brook::BatchOutput, rows: usize) {
    assert_eq!(
        column_sum(&output.batches, "count"),
        rows as i64 * 8,
        "batch {}",
        output.batch_number
    );
}
