//! Joins of streams through the public API and the `brook` command: an
//! interval join pairs rows read in different batches, once; a join of two
//! streams without a time bound stays per batch and says so; what an
//! interval join cannot carry is refused with a message. (The exact
//! semantics against a model are in `src/engine/join_tests.rs`.)

use std::sync::Arc;
use std::time::Duration;

use brook::{EventTime, QueueOptions, StreamContext};
use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::common::{collect_all, explain, recording_warnings, rows, start};

/// 2026-01-01T00:00:00Z in milliseconds.
const BASE: i64 = 1_767_225_600_000;

fn schema(key: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

/// `(key, seconds after BASE)` rows.
fn batch(key: &str, rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(key),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| (BASE + r.1 * 1000) * 1_000_000),
            )),
        ],
    )
    .unwrap()
}

/// Queue streams `orders (id, ts)` and `payments (order_id, ts)`, one item
/// per batch, watermarks 1 s behind (`watermarks`), holding `orders` and
/// `payments` (one item each per batch), then closed.
fn streams(
    ctx: &StreamContext,
    orders: &[&[(i64, i64)]],
    payments: &[&[(i64, i64)]],
    watermarks: bool,
) {
    open_streams(ctx, orders, payments, watermarks);
    for name in ["orders", "payments"] {
        ctx.queue(name).unwrap().close();
    }
}

/// [`streams`], left open.
fn open_streams(
    ctx: &StreamContext,
    orders: &[&[(i64, i64)]],
    payments: &[&[(i64, i64)]],
    watermarks: bool,
) {
    for (name, key, items) in [("orders", "id", orders), ("payments", "order_id", payments)] {
        let queue = ctx
            .register_queue(
                name,
                schema(key),
                QueueOptions::default().with_one_at_a_time(true),
            )
            .unwrap();
        if watermarks {
            ctx.set_event_time(name, EventTime::new("ts", Duration::from_secs(1)))
                .unwrap();
        }
        for item in items {
            queue.push(batch(key, item)).unwrap();
        }
    }
}

#[tokio::test]
async fn an_order_and_its_payment_read_in_different_batches_are_joined_once() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    // Batch 1: order 1 at 0 s; payment 2 at 3 s (its order comes later).
    // Batch 2: order 2 at 2 s; payment 1 at 5 s; order 3 at 4 s.
    // Batch 3: payment 9 at 60 s: the payments' watermark (59 s) passes
    // order 3's 10 seconds: it comes out with NULLs.
    streams(
        &ctx,
        &[&[(1, 0)], &[(2, 2), (3, 4)], &[]],
        &[&[(2, 3)], &[(1, 5)], &[(9, 60)]],
        true,
    );
    let sql = "SELECT o.id, p.order_id FROM orders o LEFT JOIN payments p \
               ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND";
    let text = explain(&ctx, sql).await;
    assert!(text.contains("interval join (event time): "), "{text}");
    assert!(
        text.contains("emit: each pair once, in the batch that reads its second row"),
        "{text}"
    );
    let outputs = collect_all(start(&ctx, sql).await).await;
    let mut seen: Vec<(u64, Vec<String>)> = outputs
        .iter()
        .flat_map(|output| {
            rows(output)
                .into_iter()
                .map(move |row| (output.batch_number, row))
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (2, vec!["1".to_string(), "1".to_string()]),
            (2, vec!["2".to_string(), "2".to_string()]),
            (3, vec!["3".to_string(), "NULL".to_string()]),
        ]
    );
}

#[tokio::test]
async fn a_join_of_two_streams_without_a_time_bound_joins_rows_of_the_same_batch_only_and_says_so()
{
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(20), warn);
    streams(&ctx, &[&[(1, 0)], &[(2, 1)]], &[&[(2, 1)], &[(2, 2)]], true);
    let sql = "SELECT o.id, p.order_id FROM orders o JOIN payments p ON o.id = p.order_id";
    let text = explain(&ctx, sql).await;
    assert!(
        text.contains("join: rows of the same batch only (no bound on the streams' event times)"),
        "{text}"
    );
    assert!(!text.contains("interval join"), "{text}");
    let outputs = collect_all(start(&ctx, sql).await).await;
    // Order 2 (batch 2) meets payment 2 of batch 2 only, not that of batch 1.
    let joined: Vec<(u64, Vec<String>)> = outputs
        .iter()
        .flat_map(|o| rows(o).into_iter().map(move |r| (o.batch_number, r)))
        .collect();
    assert_eq!(joined, vec![(2, vec!["2".to_string(), "2".to_string()])]);
    let warnings = warnings.lock().unwrap();
    let notices: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("joins rows of the same batch only"))
        .collect();
    assert_eq!(notices.len(), 1, "{warnings:?}");
    assert!(notices[0].contains("BETWEEN"), "{warnings:?}");
}

#[tokio::test]
async fn a_stream_joined_with_a_static_table_runs_per_batch_as_before() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    streams(&ctx, &[&[(1, 0)]], &[], true);
    ctx.sql("CREATE TABLE customers AS VALUES (1, 'ann'), (2, 'bob')")
        .await
        .unwrap();
    let sql = "SELECT o.id, c.column2 AS name FROM orders o JOIN customers c ON o.id = c.column1";
    let text = explain(&ctx, sql).await;
    assert!(text.contains("per batch: "), "{text}");
    assert!(
        !text.contains("join: rows of the same batch only"),
        "{text}"
    );
    let outputs = collect_all(start(&ctx, sql).await).await;
    let joined: Vec<Vec<String>> = outputs.iter().flat_map(rows).collect();
    assert_eq!(joined, vec![vec!["1".to_string(), "ann".to_string()]]);
}

#[tokio::test]
async fn what_an_interval_join_cannot_carry_is_refused_with_a_message() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    streams(&ctx, &[], &[], true);
    let bound = "ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND";
    let err = ctx
        .sql(&format!(
            "SELECT o.id, COUNT(*) FROM orders o JOIN payments p {bound} GROUP BY o.id"
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("an interval join's pairs can be projected, filtered and sorted; "),
        "{err}"
    );
    assert!(err.is_user_error(), "{err:?}");
}

#[tokio::test]
async fn late_join_rows_of_both_streams_go_to_the_late_data_stream_with_their_stream_and_lateness()
{
    let ctx = StreamContext::new(Duration::from_millis(20));
    // After batch 2 both watermarks are at 29 s: orders before 19 s and
    // payments before 29 s can match nothing more. In batch 3, order 2 at
    // 5 s and payment 2 at 12 s are late; order 9 at 25 s still meets
    // payment 9.
    open_streams(
        &ctx,
        &[&[(1, 10)], &[(9, 30)], &[(2, 5), (9, 25)]],
        &[&[(1, 11)], &[(9, 30)], &[(2, 12)]],
        true,
    );
    let sql = "SELECT o.id, p.order_id FROM orders o JOIN payments p \
               ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND \
               LATE DATA TO late_pairs";
    let text = explain(&ctx, sql).await;
    assert!(
        text.contains("counted and sent to stream 'late_pairs'"),
        "{text}"
    );
    let query = start(&ctx, sql).await;
    let mut late = start(
        &ctx,
        "SELECT stream, orders_id, payments_order_id, lateness_ms FROM late_pairs",
    )
    .await;
    for name in ["orders", "payments"] {
        ctx.queue(name).unwrap().close();
    }
    let outputs = collect_all(query).await;
    let pairs: Vec<(u64, Vec<String>)> = outputs
        .iter()
        .flat_map(|o| rows(o).into_iter().map(move |r| (o.batch_number, r)))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (1, vec!["1".to_string(), "1".to_string()]),
            (2, vec!["9".to_string(), "9".to_string()]),
            (3, vec!["9".to_string(), "9".to_string()]),
        ]
    );
    let late_rows: u64 = outputs.iter().map(|o| o.late_rows).sum();
    assert_eq!(late_rows, 2);
    let mut routed = Vec::new();
    while routed.len() < 2 {
        let Some(output) = crate::common::next_batch(&mut late).await else {
            break;
        };
        routed.extend(rows(&output.unwrap()));
    }
    routed.sort();
    assert_eq!(
        routed,
        vec![
            vec!["orders", "2", "NULL", "24000"],
            vec!["payments", "NULL", "2", "17000"],
        ]
    );
}

/// `(window_start seconds, order id, payment id)` rows of `outputs` with
/// their batch (NULL as -1).
fn window_rows(outputs: &[brook::BatchOutput]) -> Vec<(u64, Vec<String>)> {
    let mut seen: Vec<(u64, Vec<String>)> = outputs
        .iter()
        .flat_map(|o| rows(o).into_iter().map(move |r| (o.batch_number, r)))
        .collect();
    seen.sort();
    seen
}

#[tokio::test]
async fn a_window_join_pairs_the_rows_of_each_window_when_it_closes_outer_rows_included() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    // 1-minute windows; watermarks 1 s behind. Batch 1: order 1 at 0 s,
    // order 2 at 1 s, payment 1 at 5 s. Batch 2: order 3 at 100 s,
    // payment 2 at 50 s (same window as order 2, a batch later), payment
    // 3 at 110 s, payment 5 at 111 s (no order): the watermark (the
    // smaller, 99 s) closes the window of 0 s. Batch 3: both streams at
    // 200 s: the window of 60 s closes, and at the end that of 180 s.
    streams(
        &ctx,
        &[&[(1, 0), (2, 1)], &[(3, 100)], &[(9, 200)]],
        &[&[(1, 5)], &[(2, 50), (3, 110), (5, 111)], &[(9, 200)]],
        true,
    );
    let sql = "SELECT o.window_start, o.id, p.order_id \
               FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) o \
               FULL JOIN TUMBLE(payments, ts, INTERVAL '1' MINUTE) p \
               ON o.window_start = p.window_start AND o.window_end = p.window_end AND o.id = p.order_id";
    let text = explain(&ctx, sql).await;
    assert!(
        text.contains("recompute (a window join of streams)"),
        "{text}"
    );
    assert!(text.contains("emit: on window close"), "{text}");
    let outputs = collect_all(start(&ctx, sql).await).await;
    let at = |secs: i64| {
        chrono::DateTime::from_timestamp_millis(BASE + secs * 1000)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let row = |batch: u64, window: Option<i64>, o: &str, p: &str| {
        (
            batch,
            vec![
                window.map_or("NULL".to_string(), at),
                o.to_string(),
                p.to_string(),
            ],
        )
    };
    let mut expected = vec![
        row(2, Some(0), "1", "1"),
        row(2, Some(0), "2", "2"),
        row(3, Some(60), "3", "3"),
        row(3, None, "NULL", "5"),
        // The window of 180 s closes at the end of input.
        row(3, Some(180), "9", "9"),
    ];
    expected.sort();
    assert_eq!(window_rows(&outputs), expected);
}

#[tokio::test]
async fn an_aggregate_over_a_window_join_in_one_statement_counts_each_window_once() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    streams(
        &ctx,
        &[&[(1, 0), (2, 1)], &[(3, 100)], &[]],
        &[&[(1, 5)], &[(2, 50), (3, 110), (3, 115)], &[(9, 300)]],
        true,
    );
    let sql = "SELECT o.window_start, COUNT(*) AS pairs \
               FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) o \
               JOIN TUMBLE(payments, ts, INTERVAL '1' MINUTE) p \
               ON o.window_start = p.window_start AND o.window_end = p.window_end AND o.id = p.order_id \
               GROUP BY o.window_start";
    let outputs = collect_all(start(&ctx, sql).await).await;
    let counts: Vec<String> = window_rows(&outputs)
        .into_iter()
        .map(|(batch, row)| format!("{batch} {}", row[1..].join(" ")))
        .collect();
    // Window 0 s (closed in batch 2 by the watermark, 99 s): orders 1 and
    // 2 paid; window 60 s (closed in batch 3): order 3 paid twice.
    assert_eq!(counts, vec!["2 2", "3 2"]);
}

#[tokio::test]
async fn show_queries_says_how_many_rows_an_interval_join_holds_per_stream() {
    let ctx = StreamContext::new(Duration::from_millis(20));
    // Two orders and one payment that match nothing yet, held.
    open_streams(&ctx, &[&[(1, 0), (2, 1)]], &[&[(7, 0)]], true);
    let mut query = start(
        &ctx,
        "SELECT o.id, p.order_id FROM orders o JOIN payments p \
         ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND",
    )
    .await;
    loop {
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        if output.rows_in > 0 {
            assert_eq!(
                output.retained.by_stream,
                vec![("orders".to_string(), 2), ("payments".to_string(), 1)]
            );
            break;
        }
    }
    let shown = match ctx
        .sql("SELECT retained_by_stream FROM brook.queries")
        .await
        .unwrap()
    {
        brook::SqlOutput::Rows { batches, .. } => crate::common::table_rows(&batches),
        other => panic!("{other:?}"),
    };
    assert_eq!(shown, vec![vec!["orders 2, payments 1".to_string()]]);
}
