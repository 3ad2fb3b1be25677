//! Regression tests for wrong results found by testing brook against an
//! independent engine (issue 12, items 1-5 and 7), each named for what it
//! found.

use std::time::Duration;

use brook::{BrookError, ErrorKind, SqlOutput, StreamContext};

use crate::common::{collect_all, rows, start, table_rows};

/// A queue `t (id BIGINT, k TEXT)` taken one item per 100 ms batch, holding
/// the given items (each a list of rows); closed, so queries end.
async fn queue_of(items: &[&str]) -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(
        "CREATE STREAM t (id BIGINT, k TEXT) WITH (connector = 'queue', one_at_a_time = 'true')",
    )
    .await
    .unwrap();
    for item in items {
        ctx.sql(&format!("INSERT INTO t VALUES {item}"))
            .await
            .unwrap();
    }
    ctx
}

/// The single value of each output, in order.
async fn values_of(ctx: &StreamContext, sql: &str) -> Vec<String> {
    let query = start(ctx, sql).await;
    ctx.close_queues();
    collect_all(query)
        .await
        .iter()
        .map(|output| {
            let rows = rows(output);
            assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
            rows[0][0].clone()
        })
        .collect()
}

#[tokio::test]
async fn regression_an_always_false_where_still_runs_every_batch() {
    for sql in [
        "SELECT count(*) AS n FROM t WHERE 1 = 0",
        "SELECT count(*) AS n FROM t WHERE 'a' = 'b'",
        "SELECT count(*) AS n FROM t WHERE id > 0 AND 1 = 0",
        "SELECT count(*) AS n FROM TUMBLE(t, INTERVAL '100 milliseconds') WHERE 1 = 0",
        "SELECT count(*) AS n FROM HOP(t, INTERVAL '100 milliseconds', INTERVAL '200 milliseconds') WHERE 1 = 0",
        "SELECT count(*) AS n FROM RUNNING(t) WHERE 1 = 0",
    ] {
        let ctx = queue_of(&["(1, 'a')", "(2, 'b')", "(3, 'a')"]).await;
        assert_eq!(values_of(&ctx, sql).await, vec!["0", "0", "0"], "{sql}");
    }
}

#[tokio::test]
async fn regression_a_limit_below_a_window_aggregate_counts_per_window() {
    let items = [
        "(1,'a'),(2,'b'),(3,'c')",
        "(4,'a'),(5,'b'),(6,'c')",
        "(7,'a')",
    ];
    let sql = "SELECT count(*) AS n FROM (SELECT id FROM HOP(t, INTERVAL '100 milliseconds', INTERVAL '200 milliseconds') LIMIT 4) AS q";
    let ctx = queue_of(&items).await;
    assert_eq!(values_of(&ctx, sql).await, vec!["3", "4", "4"]);
    // The recompute path, for comparison, agrees.
    let ctx = queue_of(&items).await;
    ctx.sql("SET incremental_windows = false").await.unwrap();
    assert_eq!(values_of(&ctx, sql).await, vec!["3", "4", "4"]);
    // RUNNING cannot keep every row since the start: a LIMIT below its
    // aggregate is refused, saying why.
    let ctx = queue_of(&items).await;
    let err = ctx
        .sql("SELECT count(*) AS n FROM (SELECT id FROM RUNNING(t) LIMIT 4) AS q")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LIMIT"), "{err}");
}

#[tokio::test]
async fn regression_insert_select_of_a_case_mixing_a_literal_and_a_function() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM t (line TEXT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT line FROM t").await;
    ctx.sql("INSERT INTO t SELECT CASE WHEN v > 1 THEN 'x' ELSE upper(CAST(v AS VARCHAR)) END FROM (VALUES (1), (2)) AS q(v)")
        .await
        .unwrap();
    ctx.close_queues();
    let lines: Vec<Vec<String>> = collect_all(query).await.iter().flat_map(rows).collect();
    assert_eq!(lines, vec![vec!["1".to_string()], vec!["x".to_string()]]);
}

#[tokio::test]
async fn regression_insert_of_a_value_that_does_not_fit_is_an_error_and_queues_nothing() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM t (id BIGINT, d DATE) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT id FROM t").await;
    for value in [
        "'abc'",
        "'12abc'",
        "99999999999999999999",
        "1e30",
        "1.7",
        "-9223372036854775809",
    ] {
        let err = ctx
            .sql(&format!("INSERT INTO t VALUES (5, NULL), ({value}, NULL)"))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("column id"), "{value}: {message}");
        assert_eq!(err.kind(), ErrorKind::User, "{value}");
    }
    let err = ctx
        .sql("INSERT INTO t VALUES (1, TIMESTAMP '2024-01-02 10:00:00')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("column d"), "{err}");
    // A value of the wrong type in a later row is still named.
    let err = ctx
        .sql("INSERT INTO t VALUES (1, DATE '2024-01-01'), ('x', '2024-01-02')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("column id"), "{err}");
    // What fits goes in whole, and only that reaches the query.
    ctx.sql("INSERT INTO t VALUES (9223372036854775807, DATE '2024-01-02'), ('42', TIMESTAMP '2024-01-03 00:00:00')")
        .await
        .unwrap();
    ctx.close_queues();
    let ids: Vec<Vec<String>> = collect_all(query).await.iter().flat_map(rows).collect();
    assert_eq!(
        ids,
        vec![
            vec!["9223372036854775807".to_string()],
            vec!["42".to_string()]
        ]
    );
}

#[tokio::test]
async fn regression_numbers_inserted_into_a_double_column_are_the_nearest_double() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM t (v DOUBLE) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT v FROM t").await;
    ctx.sql("INSERT INTO t VALUES (1e30), (0.1), (20.5), (-123456789.123456789)")
        .await
        .unwrap();
    ctx.close_queues();
    let values: Vec<String> = collect_all(query)
        .await
        .iter()
        .flat_map(rows)
        .map(|row| row[0].clone())
        .collect();
    // Rust's own parse is the nearest double to the text.
    let expected: Vec<String> = ["1e30", "0.1", "20.5", "-123456789.123456789"]
        .iter()
        .map(|text| format!("{:?}", text.parse::<f64>().unwrap()))
        .collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn regression_copy_and_insert_into_a_table_from_a_stream_are_refused() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM t (id BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    ctx.sql("CREATE TABLE m (id BIGINT)").await.unwrap();
    let file = std::env::temp_dir().join(format!("brook-copy-{}.csv", std::process::id()));
    for sql in [
        format!(
            "COPY (SELECT id FROM t) TO '{}' STORED AS CSV",
            file.display()
        ),
        "INSERT INTO m SELECT id FROM t".to_string(),
        "CREATE TABLE c AS SELECT * FROM t".to_string(),
    ] {
        let err = ctx.sql(&sql).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("can only be read by a continuous query")
                && message.contains("CREATE SINK"),
            "{sql}: {message}"
        );
        assert!(err.location().is_some(), "{sql}");
    }
    assert!(!file.exists());
    // EXPLAIN ANALYZE would run a continuous query to an end it never has.
    let err = ctx
        .sql("EXPLAIN ANALYZE SELECT id FROM t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use EXPLAIN"), "{err}");
    // A view over a stream is fine: queries read through it.
    ctx.sql("CREATE VIEW v AS SELECT id * 2 AS twice FROM t")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT twice FROM v").await;
    ctx.sql("INSERT INTO t VALUES (21)").await.unwrap();
    ctx.close_queues();
    let out: Vec<Vec<String>> = collect_all(query).await.iter().flat_map(rows).collect();
    assert_eq!(out, vec![vec!["42".to_string()]]);
}

#[tokio::test]
async fn regression_a_window_out_of_range_is_a_planning_error_not_a_panic() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM q (x BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let err = ctx
        .sql("SELECT COUNT(*) AS n, window_end FROM TUMBLE(q, INTERVAL '100000000 days') GROUP BY window_end")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "'100000000 days': it is longer than 11574 days, the longest duration brook accepts"
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::User);
    // The longest window allowed runs and emits.
    let query = start(
        &ctx,
        "SELECT COUNT(*) AS n, window_end FROM TUMBLE(q, INTERVAL '11574 days') GROUP BY window_end",
    )
    .await;
    ctx.sql("INSERT INTO q VALUES (1)").await.unwrap();
    ctx.close_queues();
    let outputs = collect_all(query).await;
    let total: usize = outputs.iter().map(|o| o.rows_out()).sum();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn regression_a_stream_with_a_column_declared_twice_is_refused() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    let err = ctx
        .sql("CREATE STREAM s (a INT, a INT) WITH (connector = 'queue')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'a' is declared twice"), "{err}");
    assert!(ctx.stream_names().is_empty());
}

#[tokio::test]
async fn regression_a_sink_whose_every_batch_fails_fails_the_run() {
    let ctx = StreamContext::with_warning_handler(
        Duration::from_millis(50),
        crate::common::recording_warnings().0,
    );
    let dir = std::env::temp_dir().join(format!("brook-failing-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ctx.sql("CREATE STREAM t (id BIGINT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    // The sink's name makes each batch's file name point into a directory
    // that does not exist: every write fails.
    ctx.sql(&format!(
        "CREATE SINK \"a/b\" WITH (connector = 'file', path = '{}', format = 'csv') AS SELECT id FROM t",
        dir.display()
    ))
    .await
    .unwrap();
    for id in 1..=5 {
        ctx.sql(&format!("INSERT INTO t VALUES ({id})"))
            .await
            .unwrap();
    }
    ctx.close_queues();
    let err = tokio::time::timeout(crate::common::DEADLINE, ctx.wait_for_sinks())
        .await
        .expect("the sink ends")
        .unwrap_err();
    assert!(matches!(err, BrookError::SinkFailed { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::External);
    assert!(err.to_string().contains("sink 'a/b'"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn show_queries_and_streams_read_system_tables_that_sql_can_query() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM t (id BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT id FROM t").await;
    ctx.sql("INSERT INTO t VALUES (1), (2)").await.unwrap();
    let deadline = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let SqlOutput::Rows { batches, .. } = ctx
            .sql("SELECT id, rows_in, lag_ms >= 0 AS ok FROM brook.queries WHERE rows_in > 0")
            .await
            .unwrap()
        else {
            panic!("rows")
        };
        let found = table_rows(&batches);
        if !found.is_empty() {
            assert_eq!(
                found,
                vec![vec![query.id().to_string(), "2".into(), "true".into()]]
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no batch ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let SqlOutput::Rows { batches, .. } = ctx
        .sql("SELECT name, connector, state FROM brook.streams")
        .await
        .unwrap()
    else {
        panic!("rows")
    };
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    drop(query);
}
