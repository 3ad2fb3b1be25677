//! Rows per second into PostgreSQL through brook's sink, against a real
//! throwaway server on 127.0.0.1 (fsync off, as the tests run it): binary
//! COPY (`mode = 'append'`), and upsert into an empty table and then over
//! every existing key. Also the time brook spends encoding the COPY data,
//! so the share spent outside brook (the server, the socket) shows.
//!
//! Run: `cargo bench --bench postgres_sink -- [rows] [runs]` (defaults
//! 1,000,000 rows of (id BIGINT, word TEXT, value DOUBLE), 3 runs). Needs
//! PostgreSQL's server binaries (initdb, postgres).

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::sink::{BatchSink, PostgresSink, PostgresSinkOptions, SinkWrite};
use brook::{BatchOutput, Retained};
use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use pg_server::PgServer;

const WORDS: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

fn output(batch_number: u64, rows: usize) -> BatchOutput {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("word", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batches = (0..rows)
        .step_by(8192)
        .map(|start| {
            let end = (start + 8192).min(rows);
            let ids: Vec<i64> = (start as i64..end as i64).collect();
            let words: Vec<&str> = (start..end).map(|i| WORDS[i % WORDS.len()]).collect();
            let values: Vec<f64> = (start..end)
                .map(|i| i as f64 * 0.25 + batch_number as f64)
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(words)),
                    Arc::new(Float64Array::from(values)),
                ],
            )
            .expect("batch")
        })
        .collect();
    BatchOutput {
        batch_number,
        batch_time: chrono::Utc::now(),
        rows_in: rows,
        batches,
        schema,
        elapsed: Duration::ZERO,
        execution: Duration::ZERO,
        lag: Duration::ZERO,
        window: None,
        retained: Retained::default(),
        watermark: None,
        late_rows: 0,
        far_future_rows: 0,
        checkpoint: None,
    }
}

fn options(pg: &PgServer, table: &str, upsert: bool) -> PostgresSinkOptions {
    let mut options = vec![
        ("connector".to_string(), "postgres".to_string()),
        ("url".to_string(), pg.url()),
        ("table".to_string(), table.to_string()),
        ("create_table".to_string(), "true".to_string()),
    ];
    if upsert {
        options.push(("mode".into(), "upsert".into()));
        options.push(("key".into(), "id".into()));
    }
    PostgresSinkOptions::from_options("bench", &options).expect("options")
}

fn report(what: &str, rows: usize, took: Duration, encode: Duration) {
    println!(
        "{what:<28} {:>10.0} rows/s  {:>8.1} ms  encode {:>6.1} ms ({:>4.1}% in brook, {:>4.1}% server + socket)",
        rows as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
        100.0 * encode.as_secs_f64() / took.as_secs_f64(),
        100.0 * (1.0 - encode.as_secs_f64() / took.as_secs_f64()),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rows: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pg = PgServer::start().await;
        let warn: brook::WarningHandler = Arc::new(|w| eprintln!("warning: {w}"));
        println!("{rows} rows of (id BIGINT, word TEXT, value DOUBLE), {runs} runs");
        for run in 1..=runs {
            // Append: one batch of `rows` rows by binary COPY.
            let table = format!("append_{run}");
            let first = output(1, rows);
            let mut sink = PostgresSink::connect(
                "bench",
                options(&pg, &table, false),
                &first.schema,
                Arc::clone(&warn),
            )
            .await
            .expect("connect");
            let started = Instant::now();
            let bytes: usize = sink
                .copy_data(&first)
                .expect("encode")
                .iter()
                .map(|b| b.len())
                .sum();
            let encode = started.elapsed();
            let started = Instant::now();
            assert_eq!(sink.write(&first).await.expect("write"), SinkWrite::Written);
            report(
                &format!("append (COPY) run {run}"),
                rows,
                started.elapsed(),
                encode,
            );
            if run == 1 {
                println!("  COPY data: {:.1} MB", bytes as f64 / 1e6);
            }

            // Upsert: new keys into an empty table, then every key again.
            let table = format!("upsert_{run}");
            let mut sink = PostgresSink::connect(
                "bench",
                options(&pg, &table, true),
                &first.schema,
                Arc::clone(&warn),
            )
            .await
            .expect("connect");
            for (batch, label) in [(1, "upsert new keys"), (2, "upsert existing keys")] {
                let data = output(batch, rows);
                let started = Instant::now();
                sink.copy_data(&data).expect("encode");
                let encode = started.elapsed();
                let started = Instant::now();
                assert_eq!(sink.write(&data).await.expect("write"), SinkWrite::Written);
                report(
                    &format!("{label} run {run}"),
                    rows,
                    started.elapsed(),
                    encode,
                );
            }
            let count = pg.rows(&format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(count, [[rows.to_string()]]);
        }
    });
}
