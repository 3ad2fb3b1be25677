//! When every stream a query reads has ended, its last batch is cut and run
//! at once, not at the next tick.

use std::time::{Duration, Instant};

use brook::StreamContext;

use crate::common::{DEADLINE, chunk_server, collect_all, port_of, rows, start};

/// An interval far longer than any test waits for its last batch.
const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_closed_queue_gets_its_last_batch_at_once() {
    let ctx = StreamContext::new(LONG);
    ctx.sql("CREATE STREAM q (n BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT sum(n) AS total, count(*) AS rows FROM q").await;
    ctx.sql("INSERT INTO q VALUES (1), (2), (3)").await.unwrap();
    ctx.sql("INSERT INTO q VALUES (4)").await.unwrap();
    let closed = Instant::now();
    ctx.close_queues();
    let outputs = collect_all(query).await;
    assert!(closed.elapsed() < LONG / 4, "took {:?}", closed.elapsed());
    let results: Vec<Vec<String>> = outputs.iter().flat_map(rows).collect();
    assert_eq!(results, vec![vec!["10".to_string(), "4".to_string()]]);
}

#[tokio::test]
async fn a_closed_socket_gets_its_last_batch_at_once() {
    let lines: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let address = chunk_server(lines, Duration::ZERO);
    let ctx = StreamContext::new(LONG);
    ctx.sql(&format!(
        "CREATE STREAM s (line TEXT) WITH (connector = 'socket', host = '127.0.0.1', port = '{}')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let query = start(&ctx, "SELECT count(*) AS n FROM s").await;
    let outputs = tokio::time::timeout(DEADLINE, collect_all(query))
        .await
        .unwrap();
    assert!(started.elapsed() < LONG / 4, "took {:?}", started.elapsed());
    let total: i64 = outputs
        .iter()
        .flat_map(rows)
        .map(|row| row[0].parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 50);
}

#[tokio::test]
async fn a_queue_taking_one_item_per_batch_keeps_one_per_tick_to_its_end() {
    let interval = Duration::from_millis(200);
    let ctx = StreamContext::new(interval);
    ctx.sql("CREATE STREAM q (n BIGINT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    for n in 1..=3 {
        ctx.sql(&format!("INSERT INTO q VALUES ({n})"))
            .await
            .unwrap();
    }
    let query = start(&ctx, "SELECT n FROM q").await;
    ctx.close_queues();
    let outputs = collect_all(query).await;
    let values: Vec<Vec<String>> = outputs.iter().flat_map(rows).collect();
    assert_eq!(
        values,
        vec![vec!["1".to_string()], vec!["2".into()], vec!["3".into()]]
    );
    // Still a tick apart: the end of input does not hurry them (a late
    // tick on a loaded machine brings the next one closer, hence a quarter).
    for pair in outputs.windows(2) {
        let gap = (pair[1].batch_time - pair[0].batch_time).to_std().unwrap();
        assert!(gap >= interval / 4, "items {gap:?} apart");
    }
}
