//! An interval join of two streams: 1,000,000 orders and 1,000,000
//! payments, 10,000 keys, 100,000 rows of each per batch, event time
//! advancing 10 minutes per batch, 5 % of the rows up to 4 s out of order
//! (within the 5 s watermark delay), a payment matching an order when it
//! is paid within a minute of it (about one pair per order).
//!
//! For each join type: input rows per second (both streams) from the
//! query's start to its last result, pairs (and unmatched rows) per second,
//! the median execution time per batch and the most rows held after any
//! batch. Three runs each.
//!
//! Run: `cargo bench --bench interval_join` (`-- left` for one scenario;
//! `JOIN_ROWS=200000` for a quick check).

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{EventTime, SqlOutput, StreamContext};
use datafusion::arrow::array::{Float64Array, Int64Array, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

mod common;

const ROWS: usize = 1_000_000;
const PER_BATCH: usize = 100_000;
const KEYS: u64 = 10_000;
/// Event time per batch, in milliseconds.
const EVENT_TIME_PER_BATCH: i64 = 600_000;

/// `JOIN_ROWS` overrides [`ROWS`] (for a quick check).
fn rows() -> usize {
    std::env::var("JOIN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROWS)
}

fn schema(key: &str, value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, DataType::Int64, true),
        Field::new(value, DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

/// The batches of one stream, with its own random sequence.
fn batches(seed: u64, key: &str, value: &str) -> Vec<RecordBatch> {
    let mut rng = common::Rng::new(seed);
    let base: i64 = 1_767_225_600_000;
    let step = EVENT_TIME_PER_BATCH as f64 / PER_BATCH as f64;
    (0..rows() / PER_BATCH)
        .map(|batch| {
            let mut keys = Vec::with_capacity(PER_BATCH);
            let mut values = Vec::with_capacity(PER_BATCH);
            let mut times = Vec::with_capacity(PER_BATCH);
            for row in 0..PER_BATCH {
                let at = base + batch as i64 * EVENT_TIME_PER_BATCH + (row as f64 * step) as i64;
                let behind = if rng.next().is_multiple_of(20) {
                    (rng.next() % 4_000) as i64
                } else {
                    0
                };
                keys.push((rng.next() % KEYS) as i64);
                values.push((rng.next() % 10_000) as f64 / 100.0);
                times.push((at - behind) * 1_000_000);
            }
            RecordBatch::try_new(
                schema(key, value),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Float64Array::from(values)),
                    Arc::new(TimestampNanosecondArray::from(times)),
                ],
            )
            .expect("batch")
        })
        .collect()
}

struct Measured {
    input_rows_per_second: f64,
    output_rows_per_second: f64,
    median_batch: Duration,
    peak_retained_rows: usize,
    peak_retained_bytes: usize,
    rows_out: usize,
}

async fn run(sql: &str, orders: &[RecordBatch], payments: &[RecordBatch]) -> Measured {
    // A 1 ms clock: the query, not the clock, sets the pace.
    let ctx = StreamContext::new(Duration::from_millis(1));
    let order_queue = common::one_item_queue(&ctx, "orders", schema("id", "total"));
    let payment_queue = common::one_item_queue(&ctx, "payments", schema("order_id", "amount"));
    for name in ["orders", "payments"] {
        ctx.set_event_time(name, EventTime::new("ts", Duration::from_secs(5)))
            .expect("event time");
    }
    let started = Instant::now();
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    let feed = |queue: brook::QueueHandle, batches: Vec<RecordBatch>| {
        tokio::spawn(async move {
            for batch in batches {
                queue.push_wait(batch).await.expect("push");
            }
            queue.close();
        })
    };
    let feeders = [
        feed(order_queue, orders.to_vec()),
        feed(payment_queue, payments.to_vec()),
    ];
    let mut executions = Vec::new();
    let (mut peak_rows, mut peak_bytes, mut rows_out) = (0, 0, 0);
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        if output.rows_in > 0 {
            executions.push(output.execution);
        }
        peak_rows = peak_rows.max(output.retained.rows);
        peak_bytes = peak_bytes.max(output.retained.bytes);
        rows_out += output.rows_out();
    }
    let elapsed = started.elapsed();
    for feeder in feeders {
        feeder.await.expect("feeder");
    }
    executions.sort();
    Measured {
        input_rows_per_second: (2 * rows()) as f64 / elapsed.as_secs_f64(),
        output_rows_per_second: rows_out as f64 / elapsed.as_secs_f64(),
        median_batch: executions[executions.len() / 2],
        peak_retained_rows: peak_rows,
        peak_retained_bytes: peak_bytes,
        rows_out,
    }
}

/// The rows of `sql` over all of `orders` and `payments` at once, by
/// DataFusion's batch engine.
async fn batch_join_rows(sql: &str, orders: &[RecordBatch], payments: &[RecordBatch]) -> usize {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, batches) in [("orders", orders), ("payments", payments)] {
        let table =
            datafusion::datasource::MemTable::try_new(batches[0].schema(), vec![batches.to_vec()])
                .expect("table");
        ctx.register_table(name, Arc::new(table)).expect("register");
    }
    let rows = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    rows.iter().map(RecordBatch::num_rows).sum()
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let bound = "ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '1' MINUTE";
    let scenarios = [
        (
            "inner",
            format!("SELECT o.id, o.total, p.amount FROM orders o JOIN payments p {bound}"),
        ),
        (
            "left",
            format!("SELECT o.id, o.total, p.amount FROM orders o LEFT JOIN payments p {bound}"),
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let orders = batches(0x0de5_0001, "id", "total");
    let payments = batches(0x9a1d_0002, "order_id", "amount");
    for (name, sql) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        // No row is late (all within the watermark's delay), so the stream
        // join must give exactly the rows DataFusion's batch join gives.
        let expected = runtime.block_on(batch_join_rows(&sql, &orders, &payments));
        for attempt in 1..=3 {
            let m = runtime.block_on(run(&sql, &orders, &payments));
            assert_eq!(
                m.rows_out, expected,
                "{name}: rows out against DataFusion's batch join"
            );
            println!(
                "interval_join/{name} run {attempt}: {:.2}M input rows/s, {:.2}M output rows/s ({} rows), median batch {:.1} ms, peak held {} rows / {:.1} MiB",
                m.input_rows_per_second / 1e6,
                m.output_rows_per_second / 1e6,
                m.rows_out,
                m.median_batch.as_secs_f64() * 1000.0,
                m.peak_retained_rows,
                m.peak_retained_bytes as f64 / (1 << 20) as f64,
            );
        }
    }
}
