//! Landing results in the lake: Parquet per-batch files and Delta commits,
//! each to local disk and to a local S3 server (SeaweedFS, started here on
//! 127.0.0.1), in rows per second; and the directory source reading CSV
//! objects from S3 beside the same files from local disk.
//!
//! Sinks: a queue of `BROOK_BENCH_LAKE_BATCHES` items (default 100) of
//! 100,000 rows each (`INSERT ... SELECT FROM generate_series`), one per
//! batch, through `SELECT *` into the sink; the time from `CREATE SINK` to
//! the last batch written. The table or files are then read back and the
//! row count checked exactly.
//!
//! Run: `cargo bench --bench lake` (SeaweedFS from `.ci/install-weed`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

#[path = "../tests/support/s3_server.rs"]
mod s3_server;
use s3_server::S3Server;

const ROWS_PER_BATCH: u64 = 100_000;

fn batches() -> u64 {
    std::env::var("BROOK_BENCH_LAKE_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-bench-lake-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Fills a queue with the bench's rows, then times `CREATE SINK ... WITH
/// (with) AS SELECT * FROM r` to its last batch.
async fn sink_rows_per_second(with: &str) -> f64 {
    let ctx = StreamContext::new(Duration::from_millis(10));
    ctx.sql("CREATE STREAM r (id BIGINT, sensor TEXT, day TEXT, v DOUBLE) WITH (connector = 'queue', one_at_a_time = 'true', max_pending_rows = '20000000', max_batch_rows = '200000')")
        .await
        .unwrap();
    for b in 0..batches() {
        let from = b * ROWS_PER_BATCH;
        ctx.sql(&format!(
            "INSERT INTO r SELECT g, 'sensor-' || (g % 500), 'd' || (g % 4), g * 0.5 FROM generate_series({from}, {}) AS t(g)",
            from + ROWS_PER_BATCH - 1
        ))
        .await
        .unwrap();
    }
    let started = Instant::now();
    ctx.sql(&format!("CREATE SINK out WITH ({with}) AS SELECT * FROM r"))
        .await
        .unwrap();
    ctx.close_queues();
    ctx.wait_for_sinks().await.unwrap();
    (batches() * ROWS_PER_BATCH) as f64 / started.elapsed().as_secs_f64()
}

async fn count(ctx: &StreamContext, sql: &str) -> i64 {
    let SqlOutput::Rows { batches, .. } = ctx.sql(sql).await.unwrap() else {
        panic!("rows expected")
    };
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Counts `rows` rows through a files stream at `path`; rows per second.
async fn source_rows_per_second(path: &str, options: &str, rows: u64) -> f64 {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM s (id BIGINT, sensor TEXT, v DOUBLE) WITH (connector = 'files', path = '{path}', format = 'csv', settle = '0ms'{options})"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let SqlOutput::Query(mut query) = ctx.sql("SELECT count(*) AS n FROM s").await.unwrap() else {
        panic!("a query expected")
    };
    let mut seen = 0u64;
    while seen < rows {
        let output = query.next().await.unwrap().unwrap();
        for batch in &output.batches {
            seen += batch
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0) as u64;
        }
    }
    assert_eq!(seen, rows, "every row once");
    rows as f64 / started.elapsed().as_secs_f64()
}

/// The `OPTIONS (...)` of an external table on `server`.
fn table_options(server: &S3Server) -> String {
    format!(
        "'s3.endpoint' '{}', 's3.access_key_id' '{}', 's3.secret_access_key' '{}', 's3.allow_http' 'true'",
        server.endpoint(),
        s3_server::ACCESS_KEY,
        s3_server::SECRET_KEY
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = batches() * ROWS_PER_BATCH;
    let server = S3Server::start_with_bucket("bench").await;
    let s3 = server.options_sql();
    println!("{total} rows in batches of {ROWS_PER_BATCH}");

    let local = temp_dir("parquet");
    let rate = sink_rows_per_second(&format!(
        "connector = 'file', format = 'parquet', path = '{}'",
        local.display()
    ))
    .await;
    let reader = StreamContext::new(Duration::from_millis(100));
    reader
        .sql(&format!(
            "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{}/'",
            local.display()
        ))
        .await
        .unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM p").await, total as i64);
    println!("parquet sink, local disk:  {rate:>12.0} rows/s");
    let rate = sink_rows_per_second(&format!(
        "connector = 'file', format = 'parquet', path = 's3://bench/parquet/', {s3}"
    ))
    .await;
    reader
        .sql(&format!(
            "CREATE EXTERNAL TABLE p3 STORED AS PARQUET LOCATION 's3://bench/parquet/' OPTIONS ({})",
            table_options(&server)
        ))
        .await
        .unwrap();
    assert_eq!(
        count(&reader, "SELECT count(*) FROM p3").await,
        total as i64
    );
    println!("parquet sink, S3:          {rate:>12.0} rows/s");
    let _ = std::fs::remove_dir_all(&local);

    let local = temp_dir("delta");
    let rate = sink_rows_per_second(&format!(
        "connector = 'delta', path = '{}'",
        local.display()
    ))
    .await;
    reader
        .sql(&format!(
            "CREATE EXTERNAL TABLE d STORED AS DELTA LOCATION '{}'",
            local.display()
        ))
        .await
        .unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM d").await, total as i64);
    println!("delta sink, local disk:    {rate:>12.0} rows/s");
    let rate = sink_rows_per_second(&format!(
        "connector = 'delta', path = 's3://bench/delta', {s3}"
    ))
    .await;
    reader
        .sql(&format!(
            "CREATE EXTERNAL TABLE d3 STORED AS DELTA LOCATION 's3://bench/delta' OPTIONS ({})",
            table_options(&server)
        ))
        .await
        .unwrap();
    assert_eq!(
        count(&reader, "SELECT count(*) FROM d3").await,
        total as i64
    );
    println!("delta sink, S3:            {rate:>12.0} rows/s");
    let _ = std::fs::remove_dir_all(&local);

    // The directory source: the same CSV files on disk and as objects.
    let files = 20u64;
    let per_file = total / files;
    let dir = temp_dir("csv");
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn ObjectStore> = server.client("bench");
    for f in 0..files {
        let mut text = String::with_capacity(per_file as usize * 24);
        for i in 0..per_file {
            let id = f * per_file + i;
            text.push_str(&format!("{id},sensor-{},{}\n", id % 500, id as f64 * 0.5));
        }
        std::fs::write(dir.join(format!("f{f:03}.csv")), &text).unwrap();
        store
            .put(&ObjectPath::from(format!("csv/f{f:03}.csv")), text.into())
            .await
            .unwrap();
    }
    let rate = source_rows_per_second(&dir.display().to_string(), "", total).await;
    println!("files source, local disk:  {rate:>12.0} rows/s");
    let rate = source_rows_per_second("s3://bench/csv/", &format!(", {s3}"), total).await;
    println!("files source, S3:          {rate:>12.0} rows/s");
    let _ = std::fs::remove_dir_all(&dir);
    let listed: Vec<_> = store.list(None).collect().await;
    println!("({} objects in the bucket at the end)", listed.len());
}
