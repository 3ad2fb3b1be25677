//! The directory source's throughput: rows per second from CSV files and
//! from Parquet files holding the same rows, through a `connector = 'files'`
//! stream to a query that counts them (and checks the count is exact). The
//! files are generated in a temporary directory first; the time to read
//! their bytes alone (from the page cache) is reported as the share outside
//! brook. A plain harness: it prints rows/s and MB/s per format.
//!
//! Run: `cargo bench --bench files_source` (about 200 MB of CSV), or set the
//! size: `BROOK_BENCH_FILES_MB=1024 cargo bench --bench files_source` (the
//! issue's 1 GB). Files of 32 MB each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use futures::StreamExt;

mod common;
use common::Rng;

/// CSV bytes per generated file.
const FILE_BYTES: usize = 32 << 20;
/// Rows per Parquet row group (and per record batch written).
const ROWS_PER_WRITE: usize = 64 * 1024;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, false),
        Field::new("reading", DataType::Int64, false),
        Field::new("temp", DataType::Float64, false),
    ]))
}

/// Rows of `(sensor, reading, temp)` for one write.
fn rows(rng: &mut Rng, count: usize) -> RecordBatch {
    let mut sensors = Vec::with_capacity(count);
    let mut readings = Vec::with_capacity(count);
    let mut temps = Vec::with_capacity(count);
    for _ in 0..count {
        let r = rng.next();
        sensors.push(format!("sensor-{}", r % 500));
        readings.push((r >> 9) as i64 % 1_000_000);
        temps.push(((r >> 20) % 4000) as f64 / 100.0);
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(sensors)),
            Arc::new(Int64Array::from(readings)),
            Arc::new(Float64Array::from(temps)),
        ],
    )
    .expect("rows")
}

/// Writes about `total_bytes` of CSV in files of [`FILE_BYTES`] under
/// `dir/csv`, and the same rows as Parquet files under `dir/parquet`.
/// Returns the rows written.
fn generate(dir: &Path, total_bytes: usize) -> usize {
    let (csv_dir, parquet_dir) = (dir.join("csv"), dir.join("parquet"));
    std::fs::create_dir_all(&csv_dir).expect("csv dir");
    std::fs::create_dir_all(&parquet_dir).expect("parquet dir");
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let (mut written, mut rows_written, mut file) = (0, 0, 0);
    while written < total_bytes {
        file += 1;
        let csv_path = csv_dir.join(format!("part-{file:05}.csv"));
        let mut csv = Vec::with_capacity(FILE_BYTES + 4096);
        let parquet_file =
            std::fs::File::create(parquet_dir.join(format!("part-{file:05}.parquet")))
                .expect("parquet file");
        let mut parquet = ArrowWriter::try_new(parquet_file, schema(), None).expect("writer");
        while csv.len() < FILE_BYTES {
            let batch = rows(&mut rng, ROWS_PER_WRITE);
            let mut writer = arrow_csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut csv);
            writer.write(&batch).expect("csv");
            parquet.write(&batch).expect("parquet");
            rows_written += batch.num_rows();
        }
        parquet.close().expect("parquet footer");
        written += csv.len();
        std::fs::write(&csv_path, &csv).expect("csv file");
    }
    rows_written
}

/// Bytes of the files under `dir`, and the time to read them all.
fn read_all(dir: &Path) -> (u64, Duration) {
    let started = Instant::now();
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("dir") {
        bytes += std::fs::read(entry.expect("entry").path())
            .expect("read")
            .len() as u64;
    }
    (bytes, started.elapsed())
}

/// Streams every file of `dir` in `format` and counts the rows; returns
/// the time from the query's start until the count reached `rows`.
async fn stream_files(dir: &Path, format: &str, rows: usize) -> Duration {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM r (sensor TEXT, reading BIGINT, temp DOUBLE) \
         WITH (connector = 'files', path = '{}', format = '{format}', settle = '0ms')",
        dir.display()
    ))
    .await
    .expect("stream");
    let started = Instant::now();
    let SqlOutput::Query(mut query) = ctx.sql("SELECT count(*) AS n FROM r").await.expect("query")
    else {
        panic!("a continuous query")
    };
    let mut counted = 0;
    while counted < rows as i64 {
        let output = tokio::time::timeout(Duration::from_secs(600), query.next())
            .await
            .expect("all rows within 10 minutes")
            .expect("the query runs")
            .expect("a batch");
        for batch in &output.batches {
            let counts = batch.column(0).as_primitive::<Int64Type>();
            counted += (0..counts.len()).map(|i| counts.value(i)).sum::<i64>();
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(counted, rows as i64, "every row once");
    elapsed
}

fn main() {
    let megabytes: usize = std::env::var("BROOK_BENCH_FILES_MB")
        .ok()
        .and_then(|mb| mb.parse().ok())
        .unwrap_or(200);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("brook-bench-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let generated = Instant::now();
    let rows = generate(&dir, megabytes << 20);
    println!(
        "generated {rows} rows as {megabytes} MB of CSV and as Parquet in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for format in ["csv", "parquet"] {
        let files = dir.join(format);
        // Warm the page cache, then time reading the bytes alone.
        read_all(&files);
        let (bytes, reading) = read_all(&files);
        let elapsed = runtime.block_on(stream_files(&files, format, rows));
        let seconds = elapsed.as_secs_f64();
        println!(
            "{format:>8}: {rows} rows, {:.0} MB in {seconds:.2} s: {:.2} M rows/s, {:.0} MB/s; \
             reading the bytes alone {:.2} s ({:.0} % of the time)",
            bytes as f64 / 1e6,
            rows as f64 / seconds / 1e6,
            bytes as f64 / 1e6 / seconds,
            reading.as_secs_f64(),
            100.0 * reading.as_secs_f64() / seconds
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
