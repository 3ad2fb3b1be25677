//! Queue streams: which items land in which batch, several queries on one
//! stream, joins with static tables.

use std::sync::Arc;
use std::time::Duration;

use brook::{QueueOptions, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::{Int64Array, StringArray, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{WORD_COUNT_SQL, collect_all, next_batch, rows, start, word_totals};

const TICK: Duration = Duration::from_millis(50);

fn numbers_queue(ctx: &StreamContext, one_at_a_time: bool) -> brook::QueueHandle {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
    ctx.register_queue(
        "numbers",
        schema,
        QueueOptions::default().with_one_at_a_time(one_at_a_time),
    )
    .unwrap()
}

fn item(queue: &brook::QueueHandle, values: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        queue.schema(),
        vec![Arc::new(Int64Array::from(values.to_vec()))],
    )
    .unwrap()
}

fn batch_values(outputs: &[brook::BatchOutput]) -> Vec<Vec<String>> {
    outputs
        .iter()
        .map(|o| rows(o).into_iter().map(|r| r.join(",")).collect())
        .collect()
}

#[tokio::test]
async fn queue_one_at_a_time_emits_one_item_per_batch_in_order() {
    let ctx = StreamContext::new(TICK);
    let queue = numbers_queue(&ctx, true);
    for values in [&[1, 2][..], &[3], &[4, 5, 6]] {
        queue.push(item(&queue, values)).unwrap();
    }
    queue.close();
    let outputs = collect_all(start(&ctx, "SELECT n FROM numbers").await).await;
    assert_eq!(
        batch_values(&outputs),
        vec![vec!["1", "2"], vec!["3"], vec!["4", "5", "6"]]
    );
    assert_eq!(
        outputs.iter().map(|o| o.batch_number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        outputs.iter().map(|o| o.rows_in).collect::<Vec<_>>(),
        vec![2, 1, 3]
    );
}

#[tokio::test]
async fn queue_all_at_once_takes_everything_queued_at_a_tick() {
    let ctx = StreamContext::new(Duration::from_millis(100));
    let queue = numbers_queue(&ctx, false);
    queue.push(item(&queue, &[1])).unwrap();
    queue.push(item(&queue, &[2, 3])).unwrap();
    let mut query = start(&ctx, "SELECT n FROM numbers").await;
    let first = next_batch(&mut query).await.unwrap().unwrap();
    assert_eq!(
        batch_values(std::slice::from_ref(&first)),
        vec![vec!["1", "2", "3"]]
    );

    // Pushed right after batch 1: both items form batch 2, the last one.
    queue.push(item(&queue, &[4])).unwrap();
    queue.push(item(&queue, &[5])).unwrap();
    queue.close();
    let rest = collect_all(query).await;
    assert_eq!(batch_values(&rest), vec![vec!["4", "5"]]);
    assert_eq!(rest[0].batch_number, 2);
}

#[tokio::test]
async fn items_pushed_before_the_first_query_wait_for_it() {
    let ctx = StreamContext::new(TICK);
    let queue = numbers_queue(&ctx, true);
    queue.push(item(&queue, &[7])).unwrap();
    // Several ticks pass with no query: nothing is taken.
    tokio::time::sleep(TICK * 4).await;
    queue.close();
    let outputs = collect_all(start(&ctx, "SELECT n * 2 AS doubled FROM numbers").await).await;
    assert_eq!(batch_values(&outputs), vec![vec!["14"]]);
}

#[tokio::test]
async fn two_queries_on_one_stream_both_see_every_row() {
    let ctx = StreamContext::new(TICK);
    let lines = ctx
        .register_queue(
            "lines",
            line_schema(),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    let counts = start(&ctx, WORD_COUNT_SQL).await;
    let raw = start(&ctx, "SELECT line FROM lines").await;
    let texts = ["a b a", "c", "b b", "a c d"];
    for text in texts {
        lines
            .push(
                RecordBatch::try_new(
                    lines.schema(),
                    vec![Arc::new(StringViewArray::from(vec![text]))],
                )
                .unwrap(),
            )
            .unwrap();
    }
    lines.close();
    let (counts, raw) = tokio::join!(collect_all(counts), collect_all(raw));
    let totals = word_totals(&counts);
    let expected: std::collections::BTreeMap<String, i64> =
        [("a", 3), ("b", 3), ("c", 2), ("d", 1)]
            .into_iter()
            .map(|(w, c)| (w.to_string(), c))
            .collect();
    assert_eq!(totals, expected);
    let raw_lines: Vec<String> = raw.iter().flat_map(rows).map(|r| r[0].clone()).collect();
    assert_eq!(raw_lines, texts);
}

#[tokio::test]
async fn insert_into_a_queue_stream_is_one_item_per_statement() {
    let ctx = StreamContext::new(TICK);
    ctx.sql("CREATE STREAM events (id INT, name TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO events VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO events (name) VALUES ('nameless')")
        .await
        .unwrap();
    ctx.close_queues();
    let outputs = collect_all(start(&ctx, "SELECT id, name FROM events").await).await;
    assert_eq!(
        batch_values(&outputs),
        vec![vec!["1,one", "2,two"], vec!["NULL,nameless"]]
    );
}

#[tokio::test]
async fn a_stream_joins_a_static_csv_table() {
    let dir = std::env::temp_dir().join(format!("brook-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sensors.csv");
    std::fs::write(&path, "sensor,room\ns1,kitchen\ns2,hall\n").unwrap();
    let ctx = StreamContext::new(TICK);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE sensors STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        path.display()
    ))
    .await
    .unwrap();
    ctx.sql("CREATE STREAM readings (sensor TEXT, temp DOUBLE) WITH (connector = 'queue')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO readings VALUES ('s1', 20.0), ('s2', 18.5), ('s1', 22.0), ('s9', 1.0)")
        .await
        .unwrap();
    ctx.close_queues();
    let outputs = collect_all(
        start(
            &ctx,
            "SELECT s.room, AVG(r.temp) AS avg_temp FROM readings r JOIN sensors s ON r.sensor = s.sensor \
             GROUP BY s.room ORDER BY s.room",
        )
        .await,
    )
    .await;
    assert_eq!(
        batch_values(&outputs),
        vec![vec!["hall,18.5", "kitchen,21.0"]]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn static_queries_run_once_and_show_streams_lists_streams() {
    let ctx = StreamContext::new(TICK);
    ctx.sql("CREATE STREAM lines (line TEXT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let SqlOutput::Rows { batches, .. } = ctx.sql("SELECT 1 + 1 AS two").await.unwrap() else {
        panic!("a query without streams runs once")
    };
    assert_eq!(batches[0].num_rows(), 1);
    let SqlOutput::Rows { batches, schema } = ctx.sql("SHOW STREAMS").await.unwrap() else {
        panic!("SHOW STREAMS returns rows")
    };
    assert_eq!(schema.field(0).name(), "name");
    assert_eq!(
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0),
        "lines"
    );

    ctx.sql("DROP STREAM lines").await.unwrap();
    let err = ctx.sql("SELECT * FROM lines").await.unwrap_err();
    assert!(err.to_string().contains("lines"), "{err}");
    ctx.sql("DROP STREAM IF EXISTS lines").await.unwrap();
}

#[tokio::test]
async fn pushing_a_batch_of_the_wrong_shape_is_refused() {
    let ctx = StreamContext::new(TICK);
    let queue = numbers_queue(&ctx, false);
    let wrong = RecordBatch::try_new(
        line_schema(),
        vec![Arc::new(StringViewArray::from(vec!["x"]))],
    )
    .unwrap();
    let err = queue.push(wrong).unwrap_err().to_string();
    assert!(
        err.contains("stream 'numbers' expects columns (n Int64)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_closed_empty_queue_ends_its_query_without_a_batch() {
    let ctx = StreamContext::new(TICK);
    let queue = numbers_queue(&ctx, false);
    queue.close();
    let outputs = collect_all(start(&ctx, "SELECT n FROM numbers").await).await;
    assert!(outputs.is_empty(), "{outputs:?}");
}

#[tokio::test]
async fn large_batches_run_on_the_parallel_plan_with_exact_results_batch_after_batch() {
    // Items of 120,000 rows are above the parallel threshold: the query runs
    // its multi-partition plan, re-executed for each batch.
    let ctx = StreamContext::new(TICK);
    let queue = numbers_queue(&ctx, true);
    let per_item: i64 = 120_000;
    for batch in 0..2 {
        let values: Vec<i64> = (batch * per_item..(batch + 1) * per_item).collect();
        queue.push(item(&queue, &values)).unwrap();
    }
    queue.close();
    let grouped = start(
        &ctx,
        "SELECT n % 7 AS k, COUNT(*) AS c, SUM(n) AS s FROM numbers GROUP BY k ORDER BY k",
    )
    .await;
    let top = start(&ctx, "SELECT n FROM numbers ORDER BY n DESC LIMIT 3").await;
    let (grouped, top) = tokio::join!(collect_all(grouped), collect_all(top));
    for (batch, output) in grouped.iter().enumerate() {
        let from = batch as i64 * per_item;
        let expected: Vec<Vec<String>> = (0..7)
            .map(|k| {
                let members: Vec<i64> = (from..from + per_item).filter(|n| n % 7 == k).collect();
                vec![
                    k.to_string(),
                    members.len().to_string(),
                    members.iter().sum::<i64>().to_string(),
                ]
            })
            .collect();
        assert_eq!(rows(output), expected, "batch {}", batch + 1);
    }
    let tops: Vec<Vec<String>> = top
        .iter()
        .map(|o| rows(o).into_iter().map(|r| r[0].clone()).collect())
        .collect();
    assert_eq!(
        tops,
        vec![
            vec!["119999", "119998", "119997"],
            vec!["239999", "239998", "239997"]
        ]
    );
}

#[tokio::test]
async fn finish_runs_what_has_arrived_at_once_and_ends_the_query() {
    // A 10 s interval: without finish() the first batch would come much later.
    let ctx = StreamContext::new(Duration::from_secs(10));
    let queue = numbers_queue(&ctx, false);
    let query = start(&ctx, "SELECT SUM(n) AS total FROM numbers").await;
    queue.push(item(&queue, &[1, 2])).unwrap();
    queue.push(item(&queue, &[39])).unwrap();
    let started = std::time::Instant::now();
    query.finish();
    let outputs = collect_all(query).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(batch_values(&outputs), vec![vec!["42"]]);
}
