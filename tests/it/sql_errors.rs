//! Bad SQL in library calls: located errors that leave running queries alone.

use std::sync::Arc;
use std::time::Duration;

use brook::{QueueOptions, SqlLocation, StreamContext};
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{collect_all, next_batch, rows, start};

#[tokio::test]
async fn a_bad_statement_returns_a_located_error_and_running_queries_go_on() {
    let ctx = StreamContext::new(Duration::from_millis(40));
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
    let queue = ctx
        .register_queue(
            "numbers",
            schema,
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    let push = |n: i64| {
        queue
            .push(
                RecordBatch::try_new(queue.schema(), vec![Arc::new(Int64Array::from(vec![n]))])
                    .unwrap(),
            )
            .unwrap()
    };
    push(1);
    let mut query = start(&ctx, "SELECT n + 100 AS m FROM numbers").await;
    let first = next_batch(&mut query).await.unwrap().unwrap();
    assert_eq!(rows(&first), vec![vec!["101".to_string()]]);

    let err = ctx.sql("SELECT n FROM numbers WHERE").await.unwrap_err();
    assert_eq!(err.location().map(|l| l.line), Some(1), "{err}");
    let err = ctx
        .sql("SELECT missing_column FROM numbers")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing_column"), "{err}");
    assert_eq!(
        err.location(),
        Some(SqlLocation { line: 1, column: 8 }),
        "{err}"
    );
    let err = ctx.sql("SELECT * FROM no_such_stream").await.unwrap_err();
    assert!(err.to_string().contains("no_such_stream"), "{err}");
    let err = ctx
        .sql("CREATE STREAM s (a INT) WITH (connector = 'queue', colour = 'red')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown option 'colour'"), "{err}");

    push(2);
    queue.close();
    let rest = collect_all(query).await;
    assert_eq!(
        rest.iter().flat_map(rows).collect::<Vec<_>>(),
        vec![vec!["102".to_string()]]
    );
}

#[tokio::test]
async fn reading_a_stream_outside_a_continuous_query_is_refused() {
    let ctx = StreamContext::new(Duration::from_millis(40));
    ctx.sql("CREATE STREAM s (a INT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let err = ctx
        .sql("CREATE TABLE t AS SELECT * FROM s")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("can only be read by a continuous query"),
        "{err}"
    );
}

/// A context whose closed queue stream `q (n INT)` holds 5, 0 and 2, one
/// per batch: `10 / n` fails on the second batch.
async fn queue_of_5_0_2() -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(40));
    ctx.sql("CREATE STREAM q (n INT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    for n in [5, 0, 2] {
        ctx.sql(&format!("INSERT INTO q VALUES ({n})"))
            .await
            .unwrap();
    }
    ctx.close_queues();
    ctx
}

#[tokio::test]
async fn a_batch_that_fails_to_execute_is_reported_with_its_number_and_the_query_goes_on() {
    let ctx = queue_of_5_0_2().await;
    let mut query = start(&ctx, "SELECT 10 / n AS tenth FROM q").await;
    let mut seen = Vec::new();
    while let Some(output) = next_batch(&mut query).await {
        seen.push(match output {
            Ok(output) => format!("{}: {}", output.batch_number, rows(&output)[0][0]),
            Err(brook::BrookError::BatchFailed {
                batch_number,
                source,
            }) => {
                assert!(
                    source.to_string().to_lowercase().contains("divide by zero"),
                    "{source}"
                );
                format!("{batch_number}: failed")
            }
            Err(other) => panic!("unexpected error {other}"),
        });
    }
    assert_eq!(seen, vec!["1: 2", "2: failed", "3: 5"]);
}

#[tokio::test]
async fn on_query_error_stop_ends_the_query_at_the_failing_batch_and_spares_others() {
    let ctx = queue_of_5_0_2().await;
    let other = start(&ctx, "SELECT n FROM q").await;
    ctx.sql("SET on_query_error = 'stop'").await.unwrap();
    let mut query = start(&ctx, "SELECT 10 / n AS tenth FROM q").await;
    let mut seen = Vec::new();
    while let Some(output) = next_batch(&mut query).await {
        seen.push(match output {
            Ok(output) => format!("{}: {}", output.batch_number, rows(&output)[0][0]),
            Err(err) => format!("error: {err}"),
        });
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "1: 2");
    assert!(seen[1].starts_with("error: batch 2: "), "{seen:?}");
    // The query that started before (and reads the same stream) goes on.
    let values: Vec<String> = crate::common::collect_all(other)
        .await
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(values, vec!["5", "0", "2"]);
    let err = ctx.sql("SET on_query_error = 'panic'").await.unwrap_err();
    assert!(err.to_string().contains("'continue' or 'stop'"), "{err}");
}
