//! The engines driven batch by batch through a planned query: a snapshot
//! restored into a fresh engine goes on as if never stopped (every engine,
//! processing and event time), and event-time state stays flat over a long
//! out-of-order run.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::context::{StreamContext, line_schema};
use crate::query::engine::MicroBatch;
use crate::source::QueueOptions;

async fn plan(ctx: &StreamContext, sql: &str) -> crate::planner::ContinuousPlan {
    ctx.plan_for_test(sql).await
}

fn words(number: u64, words: &[&str]) -> MicroBatch {
    let batch = RecordBatch::try_new(
        line_schema(),
        vec![Arc::new(StringViewArray::from(words.to_vec()))],
    )
    .unwrap();
    MicroBatch {
        number,
        time: chrono::DateTime::from_timestamp_millis(1_000_000 + number as i64 * 100).unwrap(),
        inputs: vec![vec![batch]],
        rows: words.len(),
        ended: vec![false],
    }
}

/// The emission's rows, sorted, as text.
fn shown(emission: Option<crate::query::engine::Emission>) -> Vec<String> {
    let Some(emission) = emission else {
        return Vec::new();
    };
    let text = pretty_format_batches(&emission.batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Runs `sql` over `batches` without a stop, and stopped after the
/// first `stop_after` (its state snapshot restored into a fresh engine):
/// both hold as much, and give the same results after.
async fn assert_restores_as_if_never_stopped(
    ctx: &StreamContext,
    sql: &str,
    batches: &[MicroBatch],
    stop_after: usize,
) {
    let mut uninterrupted = plan(ctx, sql).await.engine;
    let mut stopped = plan(ctx, sql).await.engine;
    for batch in &batches[..stop_after] {
        uninterrupted.on_batch(batch).await.unwrap();
        stopped.on_batch(batch).await.unwrap();
    }
    let mut restored = plan(ctx, sql).await.engine;
    restored.restore(stopped.snapshot().unwrap()).await.unwrap();
    // Rows and panes alike (bytes differ: restored rows are joined).
    let held = |engine: &dyn crate::query::engine::BatchEngine| {
        let retained = engine.retained();
        (retained.batches, retained.rows)
    };
    assert_eq!(
        held(restored.as_ref()),
        held(uninterrupted.as_ref()),
        "{sql}"
    );
    for batch in &batches[stop_after..] {
        let expected = shown(uninterrupted.on_batch(batch).await.unwrap());
        let got = shown(restored.on_batch(batch).await.unwrap());
        assert_eq!(got, expected, "{sql}: batch {}", batch.number);
    }
    assert_eq!(
        shown(restored.on_end().await.unwrap()),
        shown(uninterrupted.on_end().await.unwrap()),
        "{sql}: at the end"
    );
}

/// The schema of stream `readings (sensor TEXT, ts TIMESTAMP NOT NULL)`.
fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
            false,
        ),
    ]))
}

/// A context with queue stream `readings` whose watermark is `delay`
/// behind its event time `ts`.
fn readings_context(incremental: bool, delay: Duration) -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.set_incremental_windows(incremental);
    ctx.register_queue("readings", readings_schema(), QueueOptions::default())
        .unwrap();
    ctx.set_event_time("readings", crate::event_time::EventTime::new("ts", delay))
        .unwrap();
    ctx
}

/// A batch of `(key, event time in ms)` rows for stream `readings`.
fn readings_batch(number: u64, rows: &[(String, i64)]) -> MicroBatch {
    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
    let batch = RecordBatch::try_new(
        readings_schema(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampNanosecondArray::from(
                rows.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    MicroBatch {
        number,
        // The wall clock far ahead of the data: nothing is "far future".
        time: chrono::DateTime::from_timestamp_millis(4_000_000_000_000).unwrap(),
        inputs: vec![vec![batch]],
        rows: rows.len(),
        ended: vec![false],
    }
}

#[tokio::test]
async fn event_time_engines_restored_from_a_snapshot_go_on_as_if_never_stopped() {
    let batches: Vec<Vec<(String, i64)>> = (0..8)
        .map(|n| {
            (0..6)
                .map(|i| {
                    (
                        format!("k{}", (n + i) % 3),
                        n * 1_500 + i * 400 - (i % 2) * 1_800,
                    )
                })
                .collect()
        })
        .collect();
    for (sql, incremental) in [
        (
            "SELECT window_start, sensor, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '2' SECOND) GROUP BY window_start, sensor",
            true,
        ),
        (
            "SELECT window_start, sensor, COUNT(*) AS n FROM HOP(readings, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY window_start, sensor",
            false,
        ),
        (
            "SELECT window_start, window_end, sensor, COUNT(*) AS n FROM SESSION(readings, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, sensor EMIT ON UPDATE",
            true,
        ),
    ] {
        let ctx = readings_context(incremental, Duration::from_millis(500));
        let batches: Vec<MicroBatch> = batches
            .iter()
            .enumerate()
            .map(|(number, rows)| readings_batch(number as u64 + 1, rows))
            .collect();
        assert_restores_as_if_never_stopped(&ctx, sql, &batches, 4).await;
    }
}

#[tokio::test]
async fn event_time_state_stays_flat_over_a_long_out_of_order_run() {
    for (sql, incremental) in [
        (
            "SELECT window_start, sensor, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, sensor",
            true,
        ),
        (
            "SELECT window_start, sensor, COUNT(*) AS n FROM HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) GROUP BY window_start, sensor",
            true,
        ),
        (
            "SELECT window_start, COUNT(DISTINCT sensor) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start",
            true,
        ),
        (
            "SELECT window_start, window_end, sensor, COUNT(*) AS n FROM SESSION(readings, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, sensor",
            true,
        ),
    ] {
        let ctx = readings_context(incremental, Duration::from_secs(3));
        let mut engine = plan(&ctx, sql).await.engine;
        let mut rng = crate::testing::Rng::new(0x5eed);
        let mut random = move |n: u64| rng.below(n);
        let (mut at_500, mut most_after, mut late, mut emitted) = (0, 0, 0, 0);
        for number in 1..=2_000u64 {
            // 100 ms of event time per batch, 40 rows over 3 of 20
            // keys, some up to 6 s behind (a few of them late).
            let now = number as i64 * 100;
            let rows: Vec<(String, i64)> = (0..40)
                .map(|_| {
                    let behind = if random(10) == 0 {
                        random(6_000) as i64
                    } else {
                        0
                    };
                    // Keys take turns, so that sessions end.
                    let key = (number / 25 + random(3)) % 20;
                    (format!("k{key}"), now - behind)
                })
                .collect();
            let emission = engine
                .on_batch(&readings_batch(number, &rows))
                .await
                .unwrap()
                .unwrap();
            late += emission.event.as_ref().map_or(0, |e| e.late_rows);
            emitted += emission.batches.iter().map(|b| b.num_rows()).sum::<usize>();
            let held = engine.retained().rows;
            if number == 500 {
                at_500 = held;
            } else if number > 500 {
                most_after = most_after.max(held);
            }
        }
        // (Rows at most 6 s behind are never late for 1-minute windows.)
        assert!(
            emitted > 0 && (late > 0 || sql.contains("HOP")),
            "{sql}: {late} late, {emitted} emitted"
        );
        assert!(at_500 > 0, "{sql}");
        // Flat: what is held after 2,000 batches is no more than after 500,
        // give or take the jitter of which windows happen to be open.
        assert!(
            most_after <= at_500 * 3 / 2 + 40,
            "{sql}: {at_500} rows held at batch 500, up to {most_after} after"
        );
    }
}

#[tokio::test]
async fn engines_restored_from_a_snapshot_go_on_as_if_never_stopped() {
    let input: Vec<Vec<&str>> = vec![
        vec!["a", "b", "a"],
        vec!["c"],
        vec!["a", "c", "d"],
        vec![],
        vec!["b", "b"],
        vec!["a"],
    ];
    for (sql, incremental) in [
        (
            "SELECT line, COUNT(*) AS n FROM RUNNING(lines) GROUP BY line",
            true,
        ),
        (
            "SELECT line, COUNT(*) AS n FROM RUNNING(lines, 'update') GROUP BY line",
            true,
        ),
        (
            "SELECT line, COUNT(*) AS n, window_end FROM HOP(lines, INTERVAL '100 milliseconds', INTERVAL '300 milliseconds') GROUP BY line, window_end",
            true,
        ),
        (
            "SELECT line, COUNT(*) AS n, window_end FROM HOP(lines, INTERVAL '200 milliseconds', INTERVAL '400 milliseconds') GROUP BY line, window_end",
            false,
        ),
        (
            "SELECT COUNT(DISTINCT line) AS n FROM TUMBLE(lines, INTERVAL '300 milliseconds')",
            true,
        ),
        ("SELECT line FROM lines", true),
    ] {
        let ctx = StreamContext::new(Duration::from_millis(100));
        ctx.set_incremental_windows(incremental);
        ctx.register_queue("lines", line_schema(), QueueOptions::default())
            .unwrap();
        let batches: Vec<MicroBatch> = input
            .iter()
            .enumerate()
            .map(|(number, batch)| words(number as u64 + 1, batch))
            .collect();
        assert_restores_as_if_never_stopped(&ctx, sql, &batches, 3).await;
    }
}
