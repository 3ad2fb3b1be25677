//! Event-time windows: watermarks, `TUMBLE` / `HOP` / `SESSION` on an
//! event-time column, emit modes, late rows, idle streams and far-future
//! rows. Inputs are queue streams fed one item per batch with explicit
//! timestamps, so every batch's content is known; a seeded random
//! differential test checks each window kind against a plain model of the
//! documented semantics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use brook::{BatchOutput, EventTime, QueueOptions, SqlOutput, StreamContext};
use datafusion::arrow::array::{
    Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::StreamExt;

use crate::common::{Rng, collect_all, explain, next_batch, start};

const TICK: Duration = Duration::from_millis(20);
/// 2026-01-01T00:00:00Z in milliseconds.
const BASE: i64 = 1_767_225_600_000;

/// One row: key, value, event time in milliseconds after [`BASE`].
type Row = (&'static str, i64, i64);

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

fn record_batch(rows: &[(String, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampNanosecondArray::from(
                rows.iter()
                    .map(|r| (BASE + r.2) * 1_000_000)
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// A context with queue stream `readings (sensor, v, ts)` whose watermark
/// is `delay_ms` behind, holding `batches` (one per tick); closed after
/// them when `close`.
fn readings(
    batches: &[Vec<(String, i64, i64)>],
    delay_ms: u64,
    incremental: bool,
    close: bool,
) -> StreamContext {
    let ctx = StreamContext::new(TICK);
    ctx.set_incremental_windows(incremental);
    let queue = ctx
        .register_queue(
            "readings",
            schema(),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    ctx.set_event_time(
        "readings",
        EventTime::new("ts", Duration::from_millis(delay_ms)),
    )
    .unwrap();
    for batch in batches {
        queue.push(record_batch(batch)).unwrap();
    }
    if close {
        queue.close();
    }
    ctx
}

fn owned(batches: &[&[Row]]) -> Vec<Vec<(String, i64, i64)>> {
    batches
        .iter()
        .map(|rows| {
            rows.iter()
                .map(|(k, v, t)| (k.to_string(), *v, *t))
                .collect()
        })
        .collect()
}

/// One result row: window start and end (ms after [`BASE`]), key, count,
/// sum.
type Result5 = (i64, i64, String, i64, i64);

/// The rows of one output as [`Result5`]s, sorted.
fn results(output: &BatchOutput) -> Vec<Result5> {
    let mut rows = Vec::new();
    for batch in &output.batches {
        let millis = |name: &str| -> Vec<i64> {
            let column = cast(
                batch.column_by_name(name).unwrap(),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )
            .unwrap();
            let column = column
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap();
            (0..column.len()).map(|i| column.value(i) - BASE).collect()
        };
        let starts = millis("window_start");
        let ends = millis("window_end");
        let sensor = cast(batch.column_by_name("sensor").unwrap(), &DataType::Utf8).unwrap();
        let sensor = sensor.as_any().downcast_ref::<StringArray>().unwrap();
        let int = |name: &str| -> Vec<i64> {
            let column = batch.column_by_name(name).unwrap();
            let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
            (0..column.len()).map(|i| column.value(i)).collect()
        };
        let (n, total) = (int("n"), int("total"));
        for row in 0..batch.num_rows() {
            rows.push((
                starts[row],
                ends[row],
                sensor.value(row).to_string(),
                n[row],
                total[row],
            ));
        }
    }
    rows.sort();
    rows
}

/// Per batch number, its sorted results, and per batch its late rows.
fn by_batch(outputs: &[BatchOutput]) -> (BTreeMap<u64, Vec<Result5>>, BTreeMap<u64, u64>) {
    let mut emitted: BTreeMap<u64, Vec<Result5>> = BTreeMap::new();
    let mut late = BTreeMap::new();
    for output in outputs {
        let rows = results(output);
        if !rows.is_empty() {
            emitted.entry(output.batch_number).or_default().extend(rows);
        }
        if output.late_rows > 0 {
            *late.entry(output.batch_number).or_default() += output.late_rows;
        }
    }
    for rows in emitted.values_mut() {
        rows.sort();
    }
    (emitted, late)
}

fn window_sql(window: &str, emit: &str) -> String {
    format!(
        "SELECT window_start, window_end, sensor, COUNT(*) AS n, SUM(v) AS total \
         FROM {window} GROUP BY window_start, window_end, sensor {emit}"
    )
}

fn r(start: i64, end: i64, key: &str, n: i64, total: i64) -> Result5 {
    (start, end, key.to_string(), n, total)
}

#[tokio::test]
async fn tumble_emits_each_window_once_in_the_batch_after_which_the_watermark_reaches_its_end() {
    // Windows of 10 s, watermark 2 s behind; out of order within the delay.
    let batches: &[&[Row]] = &[
        &[("a", 1, 1_000), ("b", 2, 4_000)],
        &[("a", 3, 9_000), ("a", 4, 11_000)], // wm 9 s
        &[("b", 5, 8_500)],                   // within the delay: window 0-10 still open
        &[("a", 6, 12_500)],                  // wm 10.5 s: window 0-10 closes
        &[("a", 7, 25_000)],                  // wm 23 s: window 10-20 closes
    ];
    for incremental in [true, false] {
        let ctx = readings(&owned(batches), 2_000, incremental, true);
        let query = start(
            &ctx,
            &window_sql("TUMBLE(readings, ts, INTERVAL '10' SECOND)", ""),
        )
        .await;
        let outputs = collect_all(query).await;
        let (emitted, late) = by_batch(&outputs);
        let expected = BTreeMap::from([
            (4, vec![r(0, 10_000, "a", 2, 4), r(0, 10_000, "b", 2, 7)]),
            (
                5,
                vec![r(10_000, 20_000, "a", 2, 10), r(20_000, 30_000, "a", 1, 7)],
            ),
        ]);
        assert_eq!(emitted, expected, "incremental = {incremental}");
        assert!(late.is_empty());
        // The last batch ended the stream: the watermark is the end of time.
        assert_eq!(
            outputs[4].watermark,
            Some(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        );
        assert_eq!(
            outputs[3].watermark.unwrap().timestamp_millis() - BASE,
            10_500
        );
    }
}

#[tokio::test]
async fn a_window_query_need_not_group_by_the_window_columns() {
    // Each window's result comes alone, so grouping by the key is enough.
    let batches: &[&[Row]] = &[
        &[("a", 1, 1_000), ("b", 2, 4_000), ("a", 3, 12_000)],
        &[("a", 4, 9_000), ("a", 5, 25_000)],
    ];
    for incremental in [true, false] {
        let ctx = readings(&owned(batches), 5_000, incremental, true);
        let query = start(
            &ctx,
            "SELECT sensor, COUNT(*) AS n, SUM(v) AS total FROM HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) GROUP BY sensor",
        )
        .await;
        let outputs = collect_all(query).await;
        let mut per_batch: Vec<(u64, Vec<Vec<String>>)> = outputs
            .iter()
            .map(|o| {
                let mut rows = crate::common::rows(o);
                rows.sort();
                (o.batch_number, rows)
            })
            .filter(|(_, rows)| !rows.is_empty())
            .collect();
        per_batch.sort();
        let row = |k: &str, n: &str, t: &str| vec![k.to_string(), n.to_string(), t.to_string()];
        assert_eq!(
            per_batch,
            vec![
                // wm 7 s: window -5..5 closes (a 1, b 2).
                (1, vec![row("a", "1", "1"), row("b", "1", "2")]),
                // The end: 0..10 (a 1+4, b 2), 5..15 (a 4+3), 10..20 (a 3),
                // 20..30 and 25..35 hold a 5; emitted in window order.
                (
                    2,
                    vec![
                        row("a", "1", "3"),
                        row("a", "1", "5"),
                        row("a", "1", "5"),
                        row("a", "2", "5"),
                        row("a", "2", "7"),
                        row("b", "1", "2"),
                    ]
                ),
            ],
            "incremental = {incremental}"
        );
    }
}

#[tokio::test]
async fn hop_windows_overlap_and_each_is_emitted_once() {
    // Windows of 10 s every 5 s; no delay.
    let batches: &[&[Row]] = &[
        &[("a", 1, 2_000), ("a", 2, 7_000)],
        &[("a", 4, 12_000)], // wm 12: window 0-10 closes
        &[("a", 8, 16_000)], // wm 16: window 5-15 closes
    ];
    for incremental in [true, false] {
        let ctx = readings(&owned(batches), 0, incremental, true);
        let query = start(
            &ctx,
            &window_sql(
                "HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
                "",
            ),
        )
        .await;
        let (emitted, _) = by_batch(&collect_all(query).await);
        let expected = BTreeMap::from([
            // wm 7 s: window -5..5 (the row at 2 s) has ended.
            (1, vec![r(-5_000, 5_000, "a", 1, 1)]),
            (2, vec![r(0, 10_000, "a", 2, 3)]),
            // The last batch ends the stream: every open window closes.
            (
                3,
                vec![
                    r(5_000, 15_000, "a", 2, 6),
                    r(10_000, 20_000, "a", 2, 12),
                    r(15_000, 25_000, "a", 1, 8),
                ],
            ),
        ]);
        assert_eq!(emitted, expected, "incremental = {incremental}");
    }
}

#[tokio::test]
async fn emit_on_update_shows_each_changed_window_every_batch() {
    let batches: &[&[Row]] = &[
        &[("a", 1, 1_000)],
        &[("a", 2, 3_000), ("b", 5, 12_000)],
        &[("a", 4, 4_000)], // wm 12 - 0: window 0-10 closed: late
        &[("b", 1, 13_000)],
    ];
    let ctx = readings(&owned(batches), 0, true, true);
    let query = start(
        &ctx,
        &window_sql(
            "TUMBLE(readings, ts, INTERVAL '10' SECOND)",
            "EMIT ON UPDATE",
        ),
    )
    .await;
    let (emitted, late) = by_batch(&collect_all(query).await);
    let expected = BTreeMap::from([
        (1, vec![r(0, 10_000, "a", 1, 1)]),
        (
            2,
            vec![r(0, 10_000, "a", 2, 3), r(10_000, 20_000, "b", 1, 5)],
        ),
        (4, vec![r(10_000, 20_000, "b", 2, 6)]),
    ]);
    assert_eq!(emitted, expected);
    assert_eq!(late, BTreeMap::from([(3, 1)]));
}

#[tokio::test]
async fn sessions_close_after_a_gap_per_key_and_a_bridging_row_merges_two() {
    // Gap 5 s, watermark 10 s behind.
    let batches: &[&[Row]] = &[
        &[("a", 1, 1_000), ("b", 10, 1_500), ("a", 2, 9_000)], // a: [1,6) and [9,14)
        &[("a", 3, 5_500)],                                    // bridges a's two sessions: [1,14)
        &[("b", 20, 30_000)], // wm 20: a [1,14) and b [1.5,6.5) close
        &[("a", 4, 31_000)],  // the end: b [30,35) and a [31,36) close
    ];
    let ctx = readings(&owned(batches), 10_000, true, true);
    let query = start(
        &ctx,
        &window_sql("SESSION(readings, ts, INTERVAL '5' SECOND)", ""),
    )
    .await;
    let outputs = collect_all(query).await;
    let (emitted, late) = by_batch(&outputs);
    assert!(late.is_empty(), "{late:?}");
    let expected = BTreeMap::from([
        (
            3,
            vec![r(1_000, 14_000, "a", 3, 6), r(1_500, 6_500, "b", 1, 10)],
        ),
        (
            4,
            vec![r(30_000, 35_000, "b", 1, 20), r(31_000, 36_000, "a", 1, 4)],
        ),
    ]);
    assert_eq!(emitted, expected);
}

#[tokio::test]
async fn a_batchs_rows_of_one_key_are_merged_into_their_sessions_before_they_are_aggregated() {
    // Gap 5 s, watermark 30 s behind. One batch: a's rows at 1, 3, 5 and
    // 7 s chain into [1, 12); a's row at 20 s is a session of its own; b
    // has one. Three sessions held after the batch, not six rows.
    let batches: &[&[Row]] = &[
        &[
            ("a", 1, 5_000),
            ("b", 10, 2_000),
            ("a", 2, 1_000),
            ("a", 3, 20_000),
            ("a", 4, 7_000),
            ("a", 5, 3_000),
        ],
        &[("c", 0, 60_000)], // wm 30 s: a's and b's close
    ];
    let ctx = readings(&owned(batches), 30_000, true, true);
    let sql = window_sql("SESSION(readings, ts, INTERVAL '5' SECOND)", "");
    let text = explain(&ctx, &sql).await;
    assert!(
        text.contains("a batch's rows of one group whose sessions [ts, ts + gap) overlap are merged into one session"),
        "{text}"
    );
    let outputs = collect_all(start(&ctx, &sql).await).await;
    assert_eq!(
        outputs[0].retained.rows, 3,
        "sessions held after the first batch"
    );
    let (emitted, late) = by_batch(&outputs);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(
        emitted.get(&2),
        Some(&vec![
            r(1_000, 12_000, "a", 4, 12),
            r(2_000, 7_000, "b", 1, 10),
            r(20_000, 25_000, "a", 1, 3),
            // The stream's end closes c's too.
            r(60_000, 65_000, "c", 1, 0),
        ])
    );
}

/// Found by a differential test: the row at 28.984 s has its own session
/// `[28.984, 33.984)` behind the watermark (35.495 s), but it overlaps the
/// open session `[30.739, 35.739)`; merged, that session is still open, so
/// the row is not late (Flink merges first, then judges the merged window).
#[tokio::test]
async fn a_row_behind_the_watermark_that_overlaps_an_open_session_joins_it_and_is_not_late() {
    let (all, late) = five_second_sessions(&[
        &[("a", 1, 30_739)],
        &[("a", 2, 37_495)], // watermark 35.495: [30.739, 35.739) still open
        &[("a", 4, 28_984)], // own session closed, overlaps the open one
        // Behind and overlapping nothing open: late.
        &[("a", 8, 20_000), ("b", 16, 28_000)],
    ])
    .await;
    assert_eq!(late, BTreeMap::from([(4, 2)]));
    assert_eq!(
        all,
        vec![r(28_984, 35_739, "a", 2, 5), r(37_495, 42_495, "a", 1, 2)]
    );
}

/// Every session of a 5-second `SESSION` query over `batches` (watermark
/// 2 s behind), in order, and the late rows per batch.
async fn five_second_sessions(batches: &[&[Row]]) -> (Vec<Result5>, BTreeMap<u64, u64>) {
    let ctx = readings(&owned(batches), 2_000, true, true);
    let query = start(
        &ctx,
        &window_sql("SESSION(readings, ts, INTERVAL '5' SECOND)", ""),
    )
    .await;
    let (emitted, late) = by_batch(&collect_all(query).await);
    (emitted.into_values().flatten().collect(), late)
}

/// Two rows behind the watermark at the same event time, in two groups:
/// one overlaps its group's open session, the other does not.
#[tokio::test]
async fn rows_behind_the_watermark_at_one_time_are_judged_by_their_own_group() {
    let (all, late) = five_second_sessions(&[
        &[("a", 1, 30_739), ("b", 1, 10_000)],
        &[("a", 2, 37_495)],
        &[("a", 4, 28_984), ("b", 8, 28_984)],
    ])
    .await;
    assert_eq!(late, BTreeMap::from([(3, 1)]));
    assert_eq!(
        all,
        vec![
            r(10_000, 15_000, "b", 1, 1),
            r(28_984, 35_739, "a", 2, 5),
            r(37_495, 42_495, "a", 1, 2)
        ]
    );
}

#[tokio::test]
async fn late_rows_are_counted_routed_with_their_lateness_and_never_in_a_result() {
    let ctx = StreamContext::new(TICK);
    for statement in [
        "CREATE STREAM readings (sensor TEXT, v BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'queue', one_at_a_time = 'true')",
        "INSERT INTO readings VALUES ('a', 1, '2026-01-01 00:00:01'), ('a', 2, '2026-01-01 00:00:12')",
        "INSERT INTO readings VALUES ('a', 100, '2026-01-01 00:00:03.250'), ('a', 3, '2026-01-01 00:00:13')",
        "INSERT INTO readings VALUES ('a', 4, '2026-01-01 00:00:25')",
    ] {
        ctx.sql(statement).await.unwrap();
    }
    let query = start(
        &ctx,
        &window_sql(
            "TUMBLE(readings, ts, INTERVAL '10' SECOND)",
            "LATE DATA TO late_readings",
        ),
    )
    .await;
    let mut late_query = start(&ctx, "SELECT sensor, v, ts, lateness_ms FROM late_readings").await;
    ctx.queue("readings").unwrap().close();
    let outputs = collect_all(query).await;
    let (emitted, late) = by_batch(&outputs);
    assert_eq!(late, BTreeMap::from([(2, 1)]));
    let all: Vec<Result5> = emitted.values().flatten().cloned().collect();
    assert_eq!(
        all,
        vec![
            r(0, 10_000, "a", 1, 1),
            r(10_000, 20_000, "a", 2, 5),
            r(20_000, 30_000, "a", 1, 4)
        ]
    );
    // The late row reached the named stream, 7.75 s behind the watermark (11 s).
    let mut routed = Vec::new();
    while routed.is_empty() {
        let output = next_batch(&mut late_query).await.unwrap().unwrap();
        routed.extend(crate::common::rows(&output));
    }
    assert_eq!(
        routed,
        vec![vec![
            "a".to_string(),
            "100".to_string(),
            "2026-01-01T00:00:03.250".to_string(),
            "7750".to_string()
        ]]
    );
}

#[tokio::test]
async fn describe_shows_sql_types_of_the_late_rows_stream_brook_creates_lateness_ms_as_bigint() {
    let ctx = StreamContext::new(TICK);
    ctx.sql(
        "CREATE STREAM readings (sensor TEXT, v BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'queue')",
    )
    .await
    .unwrap();
    let _query = start(
        &ctx,
        &window_sql(
            "TUMBLE(readings, ts, INTERVAL '10' SECOND)",
            "LATE DATA TO late_readings",
        ),
    )
    .await;
    // The event-time column holds no NULLs (a row without one is dropped).
    let SqlOutput::Rows { batches, .. } = ctx.sql("DESCRIBE late_readings").await.unwrap() else {
        panic!("DESCRIBE returns rows");
    };
    let row =
        |column: &str, shown: &str| vec![column.to_string(), shown.to_string(), "YES".to_string()];
    assert_eq!(
        crate::common::table_rows(&batches),
        vec![
            row("sensor", "TEXT"),
            row("v", "BIGINT"),
            vec!["ts".to_string(), "TIMESTAMP".to_string(), "NO".to_string()],
            row("lateness_ms", "BIGINT"),
        ]
    );
}

#[tokio::test]
async fn show_queries_and_explain_show_the_watermark_the_emit_mode_and_late_rows() {
    let batches: &[&[Row]] = &[&[("a", 1, 12_000)], &[("a", 2, 1_000)]];
    let ctx = readings(&owned(batches), 0, true, false);
    let sql = window_sql("TUMBLE(readings, ts, INTERVAL '10' SECOND)", "");
    let plan = explain(&ctx, &sql).await;
    assert!(plan.contains("TUMBLE size 10s in event time"), "{plan}");
    assert!(plan.contains("emit: on window close"), "{plan}");
    assert!(plan.contains("watermark = 'ts'"), "{plan}");
    let mut query = start(&ctx, &sql).await;
    let mut seen = 0;
    while seen < 2 {
        let output = next_batch(&mut query).await.unwrap().unwrap();
        seen = output.batch_number;
    }
    let SqlOutput::Rows { batches, .. } = ctx
        .sql("SELECT late_rows, watermark FROM brook.queries")
        .await
        .unwrap()
    else {
        panic!("rows")
    };
    assert_eq!(
        crate::common::table_rows(&batches),
        vec![vec!["1".to_string(), "2026-01-01T00:00:12Z".to_string()]]
    );
}

#[tokio::test]
async fn a_far_future_row_is_counted_and_does_not_move_the_watermark() {
    let now = chrono::Utc::now().timestamp_millis() - BASE;
    let second = now - now.rem_euclid(10_000) - 60_000;
    let batches = vec![
        vec![("a".to_string(), 1, second + 1_000)],
        vec![("a".to_string(), 2, second + 3 * 3_600_000)],
        vec![("a".to_string(), 3, second + 2_000)],
        vec![("a".to_string(), 4, second + 12_000)],
    ];
    let ctx = readings(&batches, 0, true, true);
    let query = start(
        &ctx,
        &window_sql("TUMBLE(readings, ts, INTERVAL '10' SECOND)", ""),
    )
    .await;
    let outputs = collect_all(query).await;
    assert_eq!(outputs[1].far_future_rows, 1);
    assert_eq!(outputs[1].watermark, outputs[0].watermark);
    let (emitted, late) = by_batch(&outputs);
    assert!(late.is_empty());
    // The window of the first rows closes normally; the far-future row's
    // window comes out at the end of input.
    let all: Vec<Result5> = emitted.values().flatten().cloned().collect();
    let window = |offset: i64| second - second.rem_euclid(10_000) + offset;
    assert_eq!(
        all,
        vec![
            r(window(0), window(10_000), "a", 2, 4),
            r(window(10_000), window(20_000), "a", 1, 4),
            r(
                window(3 * 3_600_000),
                window(3 * 3_600_000 + 10_000),
                "a",
                1,
                2
            ),
        ]
    );
}

/// Two streams with their own watermarks, read through one window.
fn two_streams(idle_timeout_b: Duration) -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.set_incremental_windows(true);
    for (name, idle) in [("a", Duration::from_secs(3600)), ("b", idle_timeout_b)] {
        let queue = ctx
            .register_queue(
                name,
                schema(),
                QueueOptions::default().with_one_at_a_time(true),
            )
            .unwrap();
        ctx.set_event_time(
            name,
            EventTime::new("ts", Duration::ZERO).with_idle_timeout(idle),
        )
        .unwrap();
        let items: Vec<i64> = if name == "a" {
            (1..=60).map(|s| s * 1_000).collect()
        } else {
            vec![1_000]
        };
        for ts in items {
            queue
                .push(record_batch(&[(name.to_string(), 1, ts)]))
                .unwrap();
        }
    }
    ctx
}

const TWO_STREAMS_SQL: &str = "SELECT window_start, window_end, sensor, COUNT(*) AS n, SUM(v) AS total FROM \
     (SELECT * FROM TUMBLE(a, ts, INTERVAL '10' SECOND) UNION ALL SELECT * FROM TUMBLE(b, ts, INTERVAL '10' SECOND)) \
     GROUP BY window_start, window_end, sensor";

#[tokio::test]
async fn a_silent_stream_stops_holding_the_watermark_back_after_its_idle_timeout() {
    let ctx = two_streams(Duration::from_millis(300));
    let mut query = start(&ctx, TWO_STREAMS_SQL).await;
    loop {
        let output = next_batch(&mut query).await.unwrap().unwrap();
        let rows = results(&output);
        if !rows.is_empty() {
            assert_eq!(rows, vec![r(0, 10_000, "a", 9, 9), r(0, 10_000, "b", 1, 1)]);
            // Stream a's items are not all read yet (60, one per batch).
            assert!(output.batch_number < 60, "{}", output.batch_number);
            break;
        }
    }
}

#[tokio::test]
async fn a_silent_stream_holds_the_watermark_back_until_it_is_idle() {
    let ctx = two_streams(Duration::from_secs(3600));
    let mut query = start(&ctx, TWO_STREAMS_SQL).await;
    for _ in 0..30 {
        let output = next_batch(&mut query).await.unwrap().unwrap();
        assert!(results(&output).is_empty());
        // b's only row (1 s) holds the watermark.
        assert_eq!(output.watermark.unwrap().timestamp_millis() - BASE, 1_000);
    }
}

#[tokio::test]
async fn with_every_stream_silent_the_watermark_moves_with_processing_time_and_the_last_window_closes()
 {
    let batches = [vec![("a".to_string(), 1, 200), ("a".to_string(), 2, 500)]];
    let ctx = StreamContext::new(Duration::from_millis(50));
    let queue = ctx
        .register_queue("readings", schema(), QueueOptions::default())
        .unwrap();
    ctx.set_event_time(
        "readings",
        EventTime::new("ts", Duration::ZERO).with_idle_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    queue.push(record_batch(&batches[0])).unwrap();
    let mut query = start(
        &ctx,
        &window_sql("TUMBLE(readings, ts, INTERVAL '1' SECOND)", ""),
    )
    .await;
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let output = query.next().await.unwrap().unwrap();
            let rows = results(&output);
            if !rows.is_empty() {
                return rows;
            }
        }
    })
    .await
    .expect("the last window closed");
    assert_eq!(found, vec![r(0, 1_000, "a", 2, 3)]);
}

#[tokio::test]
async fn declaring_event_time_is_checked_and_a_null_event_time_is_a_bad_row() {
    let ctx = StreamContext::new(TICK);
    let err = ctx
        .sql("CREATE STREAM s (ts TEXT, WATERMARK FOR ts AS ts) WITH (connector = 'queue')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be a TIMESTAMP"), "{err}");
    let err = ctx
        .sql("CREATE STREAM s (t TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'queue')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not declare"), "{err}");
    let err = ctx
        .sql("CREATE STREAM s (t TIMESTAMP) WITH (connector = 'queue', idle_timeout = '1s')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs an event-time column"),
        "{err}"
    );
    ctx.sql(
        "CREATE STREAM s (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2 seconds') \
         WITH (connector = 'queue', idle_timeout = '1s')",
    )
    .await
    .unwrap();
    let err = ctx
        .sql("INSERT INTO s VALUES ('x', NULL)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ts"), "{err}");
    // A window on a stream without event time says how to declare it.
    ctx.sql("CREATE STREAM plain (k TEXT, ts TIMESTAMP) WITH (connector = 'queue')")
        .await
        .unwrap();
    let err = ctx
        .sql("SELECT window_start, COUNT(*) FROM TUMBLE(plain, ts, INTERVAL '1' SECOND) GROUP BY window_start")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WATERMARK FOR ts"), "{err}");
    // EMIT belongs to event-time windows.
    let err = ctx.sql("SELECT k FROM s EMIT ON UPDATE").await.unwrap_err();
    assert!(err.to_string().contains("event-time windows"), "{err}");
}

/// Found from outside: `ts - INTERVAL '0' SECOND` was refused ("it must be
/// greater than zero"); Flink, RisingWave and Arroyo read it as no delay.
#[tokio::test]
async fn a_zero_watermark_delay_is_accepted_and_means_no_delay() {
    let mut emitted = Vec::new();
    for watermark in [
        "ts - INTERVAL '0' SECOND",
        "ts - INTERVAL '0 seconds'",
        "ts",
    ] {
        let ctx = StreamContext::new(TICK);
        for statement in [
            format!(
                "CREATE STREAM readings (sensor TEXT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS {watermark}) \
                 WITH (connector = 'queue', one_at_a_time = 'true')"
            ),
            "INSERT INTO readings VALUES ('a', 1, '2026-01-01 00:00:01')".into(),
            "INSERT INTO readings VALUES ('a', 2, '2026-01-01 00:00:10')".into(),
            "INSERT INTO readings VALUES ('a', 4, '2026-01-01 00:00:09.999')".into(),
            "INSERT INTO readings VALUES ('a', 8, '2026-01-01 00:00:20')".into(),
        ] {
            ctx.sql(&statement).await.unwrap();
        }
        let mut query = start(
            &ctx,
            &window_sql("TUMBLE(readings, ts, INTERVAL '10' SECOND)", ""),
        )
        .await;
        let mut per_batch = Vec::new();
        for _ in 0..4 {
            let output = next_batch(&mut query).await.unwrap().unwrap();
            per_batch.push((output.batch_number, results(&output), output.late_rows));
        }
        emitted.push(per_batch);
    }
    // With no delay, [0 s, 10 s) closes in the batch that reads 10 s, the
    // row at 9.999 s after it is late, and [10 s, 20 s) closes at 20 s.
    assert_eq!(
        emitted[0],
        vec![
            (1, vec![], 0),
            (2, vec![r(0, 10_000, "a", 1, 1)], 0),
            (3, vec![], 1),
            (4, vec![r(10_000, 20_000, "a", 1, 2)], 0),
        ]
    );
    assert_eq!(emitted[1], emitted[0]);
    assert_eq!(emitted[2], emitted[0]);
    // A window of zero length stays an error, as does a negative delay.
    let ctx = StreamContext::new(TICK);
    ctx.sql(
        "CREATE STREAM s (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '0' SECOND) \
         WITH (connector = 'queue')",
    )
    .await
    .unwrap();
    let err = ctx
        .sql("SELECT window_start, COUNT(*) FROM TUMBLE(s, ts, INTERVAL '0' SECOND) GROUP BY window_start")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
    let err = ctx
        .sql(
            "CREATE STREAM t (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '-1' SECOND) \
             WITH (connector = 'queue')",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
}

// ---------------------------------------------------------------------------
// Differential: brook against a plain model of the documented semantics.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumble(i64),
    Hop(i64, i64),
    Session(i64),
}

/// The model: per batch, its emitted windows and its late rows.
fn model(
    kind: Kind,
    delay: i64,
    on_update: bool,
    batches: &[Vec<(String, i64, i64)>],
) -> (BTreeMap<u64, Vec<Result5>>, BTreeMap<u64, u64>) {
    let mut emitted: BTreeMap<u64, Vec<Result5>> = BTreeMap::new();
    let mut late: BTreeMap<u64, u64> = BTreeMap::new();
    let mut watermark: Option<i64> = None;
    let mut max_event: Option<i64> = None;
    // Hop / tumble: every on-time row; windows emitted so far.
    let mut rows: Vec<(String, i64, i64)> = Vec::new();
    // Sessions: per key, open sessions (start, end, n, total).
    let mut sessions: BTreeMap<String, Vec<(i64, i64, i64, i64)>> = BTreeMap::new();
    let last_end = |t: i64| match kind {
        Kind::Tumble(size) => t.div_euclid(size) * size + size,
        Kind::Hop(slide, size) => t.div_euclid(slide) * slide + size,
        Kind::Session(gap) => t + gap,
    };
    for (index, batch) in batches.iter().enumerate() {
        let number = index as u64 + 1;
        let previous = watermark.unwrap_or(i64::MIN);
        let mut fresh = Vec::new();
        for row in batch {
            let behind = watermark.is_some_and(|w| last_end(row.2) <= w);
            // A SESSION row behind the watermark is late only when the
            // session it makes, merged with its key's open sessions and
            // the batch's rows, has closed too.
            let rescued = behind
                && matches!(kind, Kind::Session(_))
                && merged_end(
                    kind,
                    &row.0,
                    row.2,
                    sessions.get(&row.0).map_or(&[][..], Vec::as_slice),
                    batch,
                ) > previous;
            if behind && !rescued {
                *late.entry(number).or_default() += 1;
            } else {
                fresh.push(row.clone());
                max_event = Some(max_event.map_or(row.2, |m: i64| m.max(row.2)));
            }
        }
        // The last batch ends the stream.
        let w = if number == batches.len() as u64 {
            i64::MAX
        } else {
            max_event.map_or(i64::MIN, |m| m - delay)
        };
        watermark = Some(watermark.map_or(w, |old: i64| old.max(w)));
        let w = watermark.unwrap_or(i64::MIN);
        let mut out = Vec::new();
        match kind {
            Kind::Tumble(_) | Kind::Hop(..) => {
                let (slide, size) = match kind {
                    Kind::Tumble(size) => (size, size),
                    Kind::Hop(slide, size) => (slide, size),
                    Kind::Session(_) => unreachable!(),
                };
                let windows_of = |rows: &[(String, i64, i64)]| {
                    let mut starts: BTreeSet<i64> = BTreeSet::new();
                    for row in rows {
                        let mut start = row.2.div_euclid(slide) * slide;
                        while start + size > row.2 {
                            starts.insert(start);
                            start -= slide;
                        }
                    }
                    starts
                };
                // On update: each window (still open before the batch) that
                // the batch's rows fall in. On close: each window closing in
                // the batch after which the watermark reaches its end; one
                // that had closed before takes no rows.
                let touched = windows_of(&fresh);
                rows.extend(fresh);
                for start in windows_of(&rows) {
                    let end = start.saturating_add(size);
                    let shown = if on_update {
                        touched.contains(&start) && end > previous
                    } else {
                        end > previous && end <= w
                    };
                    if !shown {
                        continue;
                    }
                    let mut per_key: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                    for row in &rows {
                        if row.2 >= start && row.2 < start + size {
                            let e = per_key.entry(row.0.clone()).or_default();
                            e.0 += 1;
                            e.1 += row.1;
                        }
                    }
                    for (key, (n, total)) in per_key {
                        out.push((start, start + size, key, n, total));
                    }
                }
                // Rows whose every window is done can go.
                rows.retain(|row| last_end(row.2) > w);
            }
            Kind::Session(gap) => {
                // (start, end, n, total, holds a row of this batch)
                type Session = (i64, i64, i64, i64, bool);
                let mut per_key: BTreeMap<String, Vec<Session>> = sessions
                    .iter()
                    .map(|(k, list)| {
                        (
                            k.clone(),
                            list.iter().map(|s| (s.0, s.1, s.2, s.3, false)).collect(),
                        )
                    })
                    .collect();
                for (key, v, t) in fresh {
                    per_key
                        .entry(key)
                        .or_default()
                        .push((t, t + gap, 1, v, true));
                }
                sessions.clear();
                for (key, mut list) in per_key {
                    list.sort_by_key(|s| (s.0, s.1));
                    let mut merged: Vec<Session> = Vec::new();
                    for s in list {
                        match merged.last_mut() {
                            Some(last) if s.0 < last.1 => {
                                last.1 = last.1.max(s.1);
                                last.2 += s.2;
                                last.3 += s.3;
                                last.4 |= s.4;
                            }
                            _ => merged.push(s),
                        }
                    }
                    for s in &merged {
                        let shown = if on_update { s.4 } else { s.1 <= w };
                        if shown {
                            out.push((s.0, s.1, key.clone(), s.2, s.3));
                        }
                    }
                    let merged: Vec<(i64, i64, i64, i64)> = merged
                        .into_iter()
                        .filter(|s| s.1 > w)
                        .map(|s| (s.0, s.1, s.2, s.3))
                        .collect();
                    if !merged.is_empty() {
                        sessions.insert(key, merged);
                    }
                }
            }
        }
        if !out.is_empty() {
            out.sort();
            emitted.insert(number, out);
        }
    }
    (emitted, late)
}

/// The end of the session that the row of `key` at `t` makes, merged with
/// the key's open sessions and every row of its batch.
fn merged_end(
    kind: Kind,
    key: &str,
    t: i64,
    open: &[(i64, i64, i64, i64)],
    batch: &[(String, i64, i64)],
) -> i64 {
    let Kind::Session(gap) = kind else {
        unreachable!()
    };
    let mut spans: Vec<(i64, i64)> = open.iter().map(|s| (s.0, s.1)).collect();
    spans.extend(
        batch
            .iter()
            .filter(|row| row.0 == key)
            .map(|row| (row.2, row.2 + gap)),
    );
    spans.sort();
    let (mut start, mut end) = (i64::MIN, i64::MIN);
    for (s, e) in spans {
        if s < end {
            end = end.max(e);
        } else {
            if (start..end).contains(&t) {
                return end;
            }
            (start, end) = (s, e);
        }
    }
    if (start..end).contains(&t) {
        end
    } else {
        t + gap
    }
}

fn random_batches(rng: &mut Rng) -> Vec<Vec<(String, i64, i64)>> {
    let keys = ["a", "b", "c"];
    let batches = 4 + rng.below(8) as usize;
    let mut clock = rng.below(5_000) as i64;
    let mut out = Vec::new();
    for _ in 0..batches {
        let rows = 1 + rng.below(5) as usize;
        let mut batch = Vec::new();
        for _ in 0..rows {
            clock += rng.below(2_500) as i64;
            // Mostly in order; some behind by up to 12 s (late or not).
            let behind = if rng.below(4) == 0 {
                rng.below(12_000) as i64
            } else {
                0
            };
            let key = keys[rng.below(keys.len() as u64) as usize].to_string();
            let value = rng.below(100) as i64;
            batch.push((key, value, clock - behind));
        }
        out.push(batch);
    }
    out
}

async fn differential(kind: Kind, seed: u64, on_update: bool) {
    differential_over(kind, seed, on_update, random_batches).await;
}

/// Batches of `(key, value, event time)` rows.
type Batches = Vec<Vec<(String, i64, i64)>>;

/// Batches with a row every 100 ms of event time (so every pane of a
/// window holds rows), some up to 12 s behind.
fn dense_batches(rng: &mut Rng) -> Batches {
    let keys = ["a", "b", "c"];
    let mut clock = rng.below(5_000) as i64;
    let mut out = Vec::new();
    for _ in 0..(6 + rng.below(6) as usize) {
        let mut batch = Vec::new();
        for _ in 0..(10 + rng.below(20) as usize) {
            clock += 100;
            let behind = if rng.below(6) == 0 {
                rng.below(12_000) as i64
            } else {
                0
            };
            let key = keys[rng.below(keys.len() as u64) as usize].to_string();
            batch.push((key, rng.below(100) as i64, clock - behind));
        }
        out.push(batch);
    }
    out
}

async fn differential_over(
    kind: Kind,
    seed: u64,
    on_update: bool,
    make_batches: fn(&mut Rng) -> Batches,
) {
    let mut rng = Rng(seed);
    let (mut late_rows, mut windows) = (0, 0);
    for case in 0..20 {
        let batches = make_batches(&mut rng);
        let delay = rng.below(3_000) as i64;
        let window = match kind {
            Kind::Tumble(size) => format!("TUMBLE(readings, ts, INTERVAL '{size} milliseconds')"),
            Kind::Hop(slide, size) => format!(
                "HOP(readings, ts, INTERVAL '{slide} milliseconds', INTERVAL '{size} milliseconds')"
            ),
            Kind::Session(gap) => format!("SESSION(readings, ts, INTERVAL '{gap} milliseconds')"),
        };
        let incremental = matches!(kind, Kind::Session(_)) || case % 2 == 0;
        let ctx = readings(&batches, delay as u64, incremental, true);
        let emit = if on_update { "EMIT ON UPDATE" } else { "" };
        let query = start(&ctx, &window_sql(&window, emit)).await;
        let outputs = collect_all(query).await;
        let expected = model(kind, delay, on_update, &batches);
        late_rows += expected.1.values().sum::<u64>();
        windows += expected.0.values().map(Vec::len).sum::<usize>();
        assert_eq!(
            by_batch(&outputs),
            expected,
            "{kind:?} case {case} (incremental = {incremental}, on update = {on_update}, delay {delay}): {batches:?}"
        );
    }
    // The cases exercise what they are for.
    assert!(late_rows >= 5, "{kind:?}: only {late_rows} late rows");
    assert!(windows >= 40, "{kind:?}: only {windows} windows");
}

#[tokio::test]
async fn tumble_matches_the_model_on_random_out_of_order_input() {
    differential(Kind::Tumble(4_000), 0x7e57_0001, false).await;
    differential(Kind::Tumble(4_000), 0x7e57_0011, true).await;
}

#[tokio::test]
async fn hop_matches_the_model_on_random_out_of_order_input() {
    differential(Kind::Hop(1_500, 4_000), 0x7e57_0002, false).await;
    differential(Kind::Hop(1_500, 4_000), 0x7e57_0012, true).await;
}

/// Windows of 24 panes, every pane holding rows, close from runs of
/// merged panes that rows on time for open windows keep changing.
#[tokio::test]
async fn a_hop_of_many_panes_closed_from_merged_runs_matches_the_model_on_random_out_of_order_input()
 {
    differential_over(Kind::Hop(250, 6_000), 0x7e57_0004, false, dense_batches).await;
    differential_over(Kind::Hop(250, 6_000), 0x7e57_0024, true, dense_batches).await;
}

#[tokio::test]
async fn session_matches_the_model_on_random_out_of_order_input() {
    differential(Kind::Session(3_000), 0x7e57_0003, false).await;
    differential(Kind::Session(3_000), 0x7e57_0013, true).await;
}
