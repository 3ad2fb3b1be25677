//! A stream joined with a PostgreSQL lookup table, against a real
//! throwaway server on 127.0.0.1: 1,000,000 stream rows in batches of
//! 100,000 over 10,000 keys, the table holding the 10,000 keys. The cache
//! keeps every key (its TTL longer than the run), so after the first batch
//! it is warm: the rows per second of the whole run, of the batches after
//! the first, and the round trips per batch (counted in the server's
//! statement log). Three runs, each with a fresh context (a cold cache).
//!
//! Run: `cargo bench --bench lookup_join`. Needs PostgreSQL's server
//! binaries (initdb, postgres).

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::{Float64Array, Int32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use pg_server::PgServer;

const ROWS: usize = 1_000_000;
const PER_BATCH: usize = 100_000;
const KEYS: u64 = 10_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sensor_id", DataType::Int32, true),
        Field::new("temp", DataType::Float64, true),
    ]))
}

fn batches() -> Vec<RecordBatch> {
    let mut rng = common::Rng::new(0x100c_0001);
    (0..ROWS / PER_BATCH)
        .map(|_| {
            let ids: Vec<i32> = (0..PER_BATCH).map(|_| (rng.next() % KEYS) as i32).collect();
            let temps: Vec<f64> = (0..PER_BATCH)
                .map(|_| (rng.next() % 400) as f64 / 10.0)
                .collect();
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int32Array::from(ids)),
                    Arc::new(Float64Array::from(temps)),
                ],
            )
            .expect("batch")
        })
        .collect()
}

fn lookups_executed(pg: &PgServer) -> usize {
    let log = std::fs::read_to_string(pg.dir().join("server.log")).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("execute") && line.contains("FROM \"sensors\" WHERE"))
        .count()
}

struct Measured {
    rows_per_second: f64,
    warm_rows_per_second: f64,
    round_trips: Vec<usize>,
    rows_out: usize,
}

async fn run(pg: &PgServer, batches: &[RecordBatch]) -> Measured {
    // A 1 ms clock: the query, not the clock, sets the pace.
    let ctx = StreamContext::new(Duration::from_millis(1));
    let queue = common::one_item_queue(&ctx, "readings", schema());
    ctx.sql(&format!(
        "CREATE TABLE sensors (id INT, room TEXT) WITH (connector = 'postgres', url = '{}', table = 'sensors', lookup_cache_ttl = '1h', lookup_cache_rows = '100000')",
        pg.url()
    ))
    .await
    .expect("lookup table");
    let started = Instant::now();
    let mut query = match ctx
        .sql("SELECT r.sensor_id, r.temp, s.room FROM readings r JOIN sensors s ON r.sensor_id = s.id")
        .await
    {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{other:?}"),
    };
    let feed = batches.to_vec();
    let feeder = tokio::spawn(async move {
        for batch in feed {
            queue.push_wait(batch).await.expect("push");
        }
        queue.close();
    });
    let mut round_trips = Vec::new();
    let mut rows_out = 0;
    let mut first_done = None;
    let mut trips_before = lookups_executed(pg);
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        if output.rows_in == 0 {
            continue;
        }
        rows_out += output.rows_out();
        first_done.get_or_insert_with(Instant::now);
        let trips = lookups_executed(pg);
        round_trips.push(trips - trips_before);
        trips_before = trips;
    }
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    let warm = first_done.map_or(elapsed, |at| at.elapsed());
    Measured {
        rows_per_second: ROWS as f64 / elapsed.as_secs_f64(),
        warm_rows_per_second: (ROWS - PER_BATCH) as f64 / warm.as_secs_f64(),
        round_trips,
        rows_out,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut pg = PgServer::start().await;
        let client = pg.client().await;
        for statement in [
            "CREATE TABLE sensors (id INT PRIMARY KEY, room TEXT)",
            "INSERT INTO sensors SELECT i, 'room ' || i FROM generate_series(0, 9999) AS i",
            "ALTER SYSTEM SET log_statement = 'all'",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(statement).await.expect("setup");
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let batches = batches();
        for attempt in 1..=3 {
            let m = run(&pg, &batches).await;
            // Every stream row's key is in the table: one row out each.
            assert_eq!(m.rows_out, ROWS, "rows out");
            println!(
                "lookup_join run {attempt}: {:.2}M rows/s overall, {:.2}M rows/s with a warm cache, round trips per batch {:?}, {} rows out",
                m.rows_per_second / 1e6,
                m.warm_rows_per_second / 1e6,
                m.round_trips,
                m.rows_out
            );
        }
        pg.stop();
    });
}
