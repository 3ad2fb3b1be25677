//! How queries share the clock: a query slower than the batch interval
//! holds back only the streams it reads.

use std::sync::Arc;
use std::time::Duration;

use brook::StreamContext;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use futures::StreamExt;

use crate::common::{DEADLINE, rows, start};

/// `slow(x)`: returns `x` after sleeping `pause` for each batch it runs on.
fn register_slow(ctx: &StreamContext, pause: Duration) {
    let slow = create_udf(
        "slow",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            std::thread::sleep(pause);
            Ok(args[0].clone())
        }),
    );
    ctx.session().register_udf(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_query_delays_only_the_streams_it_reads() {
    let interval = Duration::from_millis(100);
    let ctx = StreamContext::new(interval);
    register_slow(&ctx, Duration::from_millis(350));
    for stream in ["a", "b"] {
        ctx.sql(&format!(
            "CREATE STREAM {stream} (x BIGINT) WITH (connector = 'queue')"
        ))
        .await
        .unwrap();
    }
    let slow = start(&ctx, "SELECT slow(x) AS x FROM a").await;
    let fast = start(&ctx, "SELECT count(*) AS n FROM b").await;

    // Both streams get an item every 25 ms for 2 seconds.
    let items = 80;
    let feeder = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for i in 0..items {
                ctx.sql(&format!("INSERT INTO a VALUES ({i})"))
                    .await
                    .unwrap();
                ctx.sql(&format!("INSERT INTO b VALUES ({i})"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            ctx.close_queues();
        })
    };
    let collect = |query: brook::ContinuousQuery| {
        tokio::spawn(async move {
            tokio::time::timeout(
                DEADLINE,
                query.map(|o| o.expect("batch")).collect::<Vec<_>>(),
            )
            .await
            .expect("query ended")
        })
    };
    let (slow, fast) = (collect(slow), collect(fast));
    feeder.await.unwrap();
    let slow = slow.await.unwrap();
    let fast = fast.await.unwrap();

    // No row lost on either stream.
    let slow_rows: usize = slow.iter().map(|o| o.rows_out()).sum();
    assert_eq!(slow_rows, items);
    let fast_counts: i64 = fast
        .iter()
        .map(|o| rows(o)[0][0].parse::<i64>().unwrap())
        .sum();
    assert_eq!(fast_counts, items as i64);

    // The fast query kept (nearly) one batch per interval while the slow one
    // fell behind; a loaded 2-core machine may miss a few ticks. (Before,
    // the fast query got one batch per slow batch: about 30 % of nominal.)
    let fed_for = Duration::from_millis(25) * items as u32;
    let nominal = (fed_for.as_millis() / interval.as_millis()) as usize;
    assert!(
        fast.len() * 2 >= nominal,
        "fast query ran {} batches in {fed_for:?} (nominal {nominal}); slow one {}",
        fast.len(),
        slow.len()
    );
    assert!(
        slow.len() * 2 < fast.len(),
        "the slow query should fall behind: {} vs {}",
        slow.len(),
        fast.len()
    );
    let mut lags: Vec<Duration> = fast.iter().map(|o| o.lag).collect();
    lags.sort();
    let median = lags[lags.len() / 2];
    assert!(
        median < Duration::from_millis(60),
        "fast query's median lag {median:?}"
    );
}
