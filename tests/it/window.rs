//! Windows (`HOP`, `TUMBLE`) and running aggregates (`RUNNING`) over queue
//! streams fed one item per batch, so every batch's content is known.
//! Each window query runs both ways, incremental and recompute, and both
//! must give the exact rows expected.

use std::sync::Arc;
use std::time::Duration;

use brook::{BatchOutput, QueueOptions, SqlOutput, StreamContext};
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{Rng, collect_all, rows, start};

const TICK: Duration = Duration::from_millis(50);

/// A context with a queue stream `events (word TEXT, v BIGINT)` holding
/// `batches`, one per tick, then closed.
fn events(batches: &[&[(&str, i64)]], incremental: bool, tick: Duration) -> StreamContext {
    let ctx = StreamContext::new(tick);
    ctx.set_incremental_windows(incremental);
    let schema = Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let queue = ctx
        .register_queue(
            "events",
            Arc::clone(&schema),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    for batch in batches {
        let words: Vec<&str> = batch.iter().map(|(w, _)| *w).collect();
        let values: Vec<i64> = batch.iter().map(|(_, v)| *v).collect();
        queue
            .push(
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from(words)),
                        Arc::new(Int64Array::from(values)),
                    ],
                )
                .unwrap(),
            )
            .unwrap();
    }
    queue.close();
    ctx
}

/// Each output's rows, each row's cells joined with `,`.
fn results(outputs: &[BatchOutput]) -> Vec<Vec<String>> {
    outputs
        .iter()
        .map(|o| rows(o).into_iter().map(|r| r.join(",")).collect())
        .collect()
}

/// Runs `sql` over `batches` both ways; checks both give `expected` and
/// returns the incremental run's outputs.
async fn both_ways(
    batches: &[&[(&str, i64)]],
    sql: &str,
    expected: &[&[&str]],
) -> Vec<BatchOutput> {
    let mut kept = Vec::new();
    for incremental in [true, false] {
        let ctx = events(batches, incremental, TICK);
        let outputs = collect_all(start(&ctx, sql).await).await;
        assert_eq!(
            results(&outputs),
            expected
                .iter()
                .map(|rows| rows.iter().map(|r| r.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "incremental = {incremental}: {sql}"
        );
        if incremental {
            kept = outputs;
        }
    }
    kept
}

const B1: &[(&str, i64)] = &[("a", 1), ("b", 2)];
const B2: &[(&str, i64)] = &[("a", 3)];
const B3: &[(&str, i64)] = &[("c", 4)];
const B4: &[(&str, i64)] = &[("b", 5)];
const B5: &[(&str, i64)] = &[("a", 6), ("a", 7)];
const B6: &[(&str, i64)] = &[("d", 8)];
const B7: &[(&str, i64)] = &[("b", 9)];

#[tokio::test]
async fn sliding_window_of_three_batches_sliding_by_one() {
    let outputs = both_ways(
        &[B1, B2, B3, B4, B5, B6],
        "SELECT word, COUNT(*) AS n, SUM(v) AS total \
         FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '150 milliseconds') \
         GROUP BY word ORDER BY word",
        &[
            // The first windows are not full yet.
            &["a,1,1", "b,1,2"],
            &["a,2,4", "b,1,2"],
            &["a,2,4", "b,1,2", "c,1,4"],
            // Batches 2-4.
            &["a,1,3", "b,1,5", "c,1,4"],
            // Batches 3-5.
            &["a,2,13", "b,1,5", "c,1,4"],
            // Batches 4-6: c has left the window.
            &["a,2,13", "b,1,5", "d,1,8"],
        ],
    )
    .await;
    for (index, output) in outputs.iter().enumerate() {
        let window = output.window.as_ref().expect("window bounds");
        assert_eq!(window.end - window.start, chrono::Duration::milliseconds(150));
        assert_eq!(window.end, output.batch_time);
        let n = index as u64 + 1;
        assert_eq!(window.batches, (n.saturating_sub(3) + 1, n));
        assert!(output.retained.batches <= 3, "{:?}", output.retained);
    }
}

#[tokio::test]
async fn sliding_window_of_four_batches_sliding_by_two_ends_with_the_last_window() {
    let outputs = both_ways(
        &[B1, B2, B3, B4, B5, B6, B7],
        "SELECT word, lo, hi, window_end - window_start AS span FROM ( \
           SELECT word, MIN(v) AS lo, MAX(v) AS hi, window_start, window_end \
           FROM HOP(events, INTERVAL '100 milliseconds', INTERVAL '200 milliseconds') \
           GROUP BY word, window_start, window_end) ORDER BY word",
        &[
            // Batches 1-2 (emitted after batch 2, the first slide).
            &["a,1,3,PT0.2S", "b,2,2,PT0.2S"],
            // Batches 1-4.
            &["a,1,3,PT0.2S", "b,2,5,PT0.2S", "c,4,4,PT0.2S"],
            // Batches 3-6.
            &["a,6,7,PT0.2S", "b,5,5,PT0.2S", "c,4,4,PT0.2S", "d,8,8,PT0.2S"],
            // The streams end after batch 7: the window of batches 5-8.
            &["a,6,7,PT0.2S", "b,9,9,PT0.2S", "d,8,8,PT0.2S"],
        ],
    )
    .await;
    let windows: Vec<(u64, u64)> = outputs
        .iter()
        .map(|o| o.window.as_ref().expect("bounds").batches)
        .collect();
    assert_eq!(windows, vec![(1, 2), (1, 4), (3, 6), (5, 8)]);
    // The last window ends one batch interval after the last batch.
    let last = outputs.last().unwrap();
    let bounds = last.window.as_ref().unwrap();
    assert_eq!(bounds.end - last.batch_time, chrono::Duration::milliseconds(50));
}

#[tokio::test]
async fn window_columns_hold_the_window_bounds() {
    for incremental in [true, false] {
        let ctx = events(&[B1, B2, B3], incremental, TICK);
        let sql = "SELECT CAST(window_start AS BIGINT) AS s, CAST(window_end AS BIGINT) AS e, COUNT(*) AS n \
                   FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') \
                   GROUP BY window_start, window_end";
        let outputs = collect_all(start(&ctx, sql).await).await;
        assert_eq!(outputs.len(), 3);
        for (output, n) in outputs.iter().zip(["2", "3", "2"]) {
            let bounds = output.window.as_ref().unwrap();
            assert_eq!(
                rows(output),
                vec![vec![
                    bounds.start.timestamp_millis().to_string(),
                    bounds.end.timestamp_millis().to_string(),
                    n.to_string()
                ]],
                "incremental = {incremental}"
            );
        }
    }
}

#[tokio::test]
async fn tumbling_windows_do_not_overlap_and_the_last_partial_window_is_emitted() {
    both_ways(
        &[B1, B2, B3, B4, B5, B6, B7],
        "SELECT word, COUNT(*) AS n FROM TUMBLE(events, INTERVAL '150 milliseconds') \
         GROUP BY word ORDER BY word",
        &[
            &["a,2", "b,1", "c,1"],
            &["a,2", "b,1", "d,1"],
            // Batch 7 alone: the streams ended before the window filled.
            &["b,1"],
        ],
    )
    .await;
}
