//! Functions a library user registers (`StreamContext::register_udf` and
//! `register_udaf`, DataFusion's own types) work in every engine: per
//! batch, processing-time windows incremental and recomputed, `RUNNING`,
//! event-time windows and sessions. An aggregate whose state merges runs
//! incrementally.

use std::sync::Arc;
use std::time::Duration;

use brook::StreamContext;
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DataFusionResult;
use datafusion::logical_expr::{Accumulator, ColumnarValue, Volatility, create_udaf, create_udf};

use crate::common::{collect_all, explain, rows, start};

const TICK: Duration = Duration::from_millis(50);

/// `times_ten(v BIGINT) -> BIGINT`.
fn times_ten() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "times_ten",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let values = match &args[0] {
                ColumnarValue::Array(array) => Arc::clone(array),
                ColumnarValue::Scalar(scalar) => scalar.to_array()?,
            };
            let values = values.as_primitive::<Int64Type>();
            let tens: Int64Array = values.iter().map(|v| v.map(|v| v * 10)).collect();
            Ok(ColumnarValue::Array(Arc::new(tens) as ArrayRef))
        }),
    )
}

/// The sum of squares of its input, with a state that merges: the partial
/// sums add up.
#[derive(Debug, Default)]
struct SumOfSquares {
    total: f64,
}

impl Accumulator for SumOfSquares {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DataFusionResult<()> {
        let values = values[0].as_primitive::<Float64Type>();
        self.total += values.iter().flatten().map(|v| v * v).sum::<f64>();
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DataFusionResult<()> {
        let states = states[0].as_primitive::<Float64Type>();
        self.total += states.iter().flatten().sum::<f64>();
        Ok(())
    }

    fn state(&mut self) -> DataFusionResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Float64(Some(self.total))])
    }

    fn evaluate(&mut self) -> DataFusionResult<ScalarValue> {
        Ok(ScalarValue::Float64(Some(self.total)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

fn sum_of_squares() -> datafusion::logical_expr::AggregateUDF {
    create_udaf(
        "sum_of_squares",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(SumOfSquares::default()))),
        Arc::new(vec![DataType::Float64]),
    )
}

/// A context with both functions and a queue stream `events (word, v)`
/// holding `batches`, one per tick, then closed.
fn events(batches: &[&[(&str, i64)]], incremental: bool) -> StreamContext {
    crate::common::word_events(batches, incremental, TICK, |ctx| {
        ctx.register_udf(times_ten());
        ctx.register_udaf(sum_of_squares());
    })
}

const BATCHES: &[&[(&str, i64)]] = &[&[("a", 1), ("b", 2)], &[("a", 3)], &[("b", 4), ("a", 5)]];

/// Each output's rows, cells joined with `,`.
async fn run(ctx: &StreamContext, sql: &str) -> Vec<Vec<String>> {
    collect_all(start(ctx, sql).await)
        .await
        .iter()
        .map(|o| rows(o).into_iter().map(|r| r.join(",")).collect())
        .collect()
}

#[tokio::test]
async fn a_registered_scalar_function_runs_per_batch_and_in_windows() {
    let ctx = events(BATCHES, true);
    assert_eq!(
        run(
            &ctx,
            "SELECT word, times_ten(v) AS t FROM events ORDER BY word"
        )
        .await,
        [vec!["a,10", "b,20"], vec!["a,30"], vec!["a,50", "b,40"]]
    );
    for incremental in [true, false] {
        let ctx = events(BATCHES, incremental);
        assert_eq!(
            run(
                &ctx,
                "SELECT word, SUM(times_ten(v)) AS t FROM HOP(events, INTERVAL '50 milliseconds', \
                 INTERVAL '100 milliseconds') GROUP BY word ORDER BY word"
            )
            .await,
            [
                vec!["a,10", "b,20"],
                vec!["a,40", "b,20"],
                vec!["a,80", "b,40"]
            ],
            "incremental = {incremental}"
        );
    }
    let ctx = events(BATCHES, true);
    assert_eq!(
        run(
            &ctx,
            "SELECT word, SUM(times_ten(v)) AS t FROM RUNNING(events) GROUP BY word ORDER BY word"
        )
        .await,
        [
            vec!["a,10", "b,20"],
            vec!["a,40", "b,20"],
            vec!["a,90", "b,60"]
        ]
    );
}

#[tokio::test]
async fn a_registered_aggregate_that_merges_runs_incrementally_in_windows_and_running() {
    let ctx = events(&[], true);
    let text = explain(
        &ctx,
        "SELECT word, sum_of_squares(v) FROM HOP(events, INTERVAL '50 milliseconds', \
         INTERVAL '100 milliseconds') GROUP BY word",
    )
    .await;
    assert!(
        text.contains("incremental: each batch is aggregated once"),
        "{text}"
    );
    assert_eq!(
        run(
            &ctx,
            "SELECT word, sum_of_squares(v) AS s FROM events GROUP BY word ORDER BY word"
        )
        .await,
        Vec::<Vec<String>>::new()
    );
    for incremental in [true, false] {
        let ctx = events(BATCHES, incremental);
        assert_eq!(
            run(
                &ctx,
                "SELECT word, sum_of_squares(v) AS s FROM HOP(events, INTERVAL '50 milliseconds', \
                 INTERVAL '100 milliseconds') GROUP BY word ORDER BY word"
            )
            .await,
            // 1, 1+9, 9+25 for a; 4, 4, 16 for b.
            [
                vec!["a,1.0", "b,4.0"],
                vec!["a,10.0", "b,4.0"],
                vec!["a,34.0", "b,16.0"]
            ],
            "incremental = {incremental}"
        );
    }
    let ctx = events(BATCHES, true);
    assert_eq!(
        run(
            &ctx,
            "SELECT word, sum_of_squares(v) AS s FROM RUNNING(events) GROUP BY word ORDER BY word"
        )
        .await,
        [
            vec!["a,1.0", "b,4.0"],
            vec!["a,10.0", "b,4.0"],
            vec!["a,35.0", "b,20.0"]
        ]
    );
}

#[tokio::test]
async fn a_registered_aggregate_runs_in_event_time_windows_and_sessions() {
    let ctx = StreamContext::new(TICK);
    ctx.register_udaf(sum_of_squares());
    for statement in [
        "CREATE STREAM readings (k TEXT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
         WITH (connector = 'queue', one_at_a_time = 'true')",
        "INSERT INTO readings VALUES ('a', 1, '2026-01-01 00:00:01'), ('a', 2, '2026-01-01 00:00:02')",
        "INSERT INTO readings VALUES ('a', 3, '2026-01-01 00:00:04'), ('b', 4, '2026-01-01 00:00:11')",
        "INSERT INTO readings VALUES ('a', 5, '2026-01-01 00:00:30')",
    ] {
        ctx.sql(statement).await.unwrap();
    }
    ctx.close_queues();
    let windows: Vec<String> = run(
        &ctx,
        "SELECT window_start, k, sum_of_squares(v) AS s FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) \
         GROUP BY window_start, k ORDER BY window_start, k",
    )
    .await
    .concat();
    assert_eq!(
        windows,
        [
            "2026-01-01T00:00:00Z,a,14.0",
            "2026-01-01T00:00:10Z,b,16.0",
            "2026-01-01T00:00:30Z,a,25.0"
        ]
    );
    let ctx2 = StreamContext::new(TICK);
    ctx2.register_udaf(sum_of_squares());
    for statement in [
        "CREATE STREAM readings (k TEXT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
         WITH (connector = 'queue', one_at_a_time = 'true')",
        "INSERT INTO readings VALUES ('a', 1, '2026-01-01 00:00:01'), ('a', 2, '2026-01-01 00:00:02')",
        "INSERT INTO readings VALUES ('a', 3, '2026-01-01 00:00:04'), ('a', 4, '2026-01-01 00:00:30')",
    ] {
        ctx2.sql(statement).await.unwrap();
    }
    ctx2.close_queues();
    let sessions: Vec<String> = run(
        &ctx2,
        "SELECT window_start, window_end, k, sum_of_squares(v) AS s \
         FROM SESSION(readings, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k \
         ORDER BY window_start",
    )
    .await
    .concat();
    assert_eq!(
        sessions,
        [
            "2026-01-01T00:00:01Z,2026-01-01T00:00:09Z,a,14.0",
            "2026-01-01T00:00:30Z,2026-01-01T00:00:35Z,a,16.0"
        ]
    );
}
