//! Run-to-run spread of a per-batch workload that builds and frees the
//! same large state every batch: a `RUNNING` word count over 100,000
//! groups, 3,000,000 words in 300 batches (one queue item a batch, the
//! clock at 1 ms so that the query sets the pace). Prints the run's wall
//! time, its minor page faults and its peak resident memory, and checks
//! the totals. With `--keep-freed-memory` the process first calls
//! `brook::memory::keep_freed_memory()` (what the `brook` binary does).
//! Each run is one process: time several of each, alternating, from
//! outside (`/usr/bin/time -v`).
//!
//! Run: `cargo bench --bench steady_memory -- [--keep-freed-memory]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

mod common;

const BATCHES: usize = 300;
const WORDS_PER_BATCH: usize = 10_000;
const GROUPS: u64 = 100_000;

fn minor_faults_and_peak_kib() -> (i64, i64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (usage.ru_minflt, usage.ru_maxrss)
}

fn main() {
    if std::env::args().any(|a| a == "--keep-freed-memory") {
        brook::memory::keep_freed_memory();
    }
    let schema = Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, false)]));
    let mut rng = common::Rng::new(0x57ea_d001);
    let batches: Vec<RecordBatch> = (0..BATCHES)
        .map(|_| {
            let words: Vec<String> = (0..WORDS_PER_BATCH)
                .map(|_| format!("w{}", rng.next() % GROUPS))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(words))],
            )
            .expect("batch")
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (faults_before, _) = minor_faults_and_peak_kib();
    let started = Instant::now();
    let (total, last_groups) = runtime.block_on(async {
        let ctx = StreamContext::new(Duration::from_millis(1));
        let queue = common::one_item_queue(&ctx, "words", schema);
        let mut query = match ctx
            .sql("SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word")
            .await
        {
            Ok(SqlOutput::Query(query)) => query,
            other => panic!("{other:?}"),
        };
        let feeder = tokio::spawn(async move {
            for batch in batches {
                queue.push_wait(batch).await.expect("push");
            }
            queue.close();
        });
        let mut last = None;
        while let Some(output) = query.next().await {
            let output = output.expect("batch");
            if output.rows_in > 0 {
                last = Some(output);
            }
        }
        feeder.await.expect("feeder");
        let last = last.expect("a batch");
        let mut total = 0;
        for batch in &last.batches {
            let n = cast(batch.column(1), &DataType::Int64).expect("count");
            let n = n.as_any().downcast_ref::<Int64Array>().expect("int64");
            total += n.values().iter().sum::<i64>();
        }
        (total, last.rows_out())
    });
    let elapsed = started.elapsed();
    let (faults_after, peak_kib) = minor_faults_and_peak_kib();
    assert_eq!(
        total,
        (BATCHES * WORDS_PER_BATCH) as i64,
        "every word counted once"
    );
    println!(
        "steady_memory: {:.2} s, {} minor page faults, peak RSS {} MiB, {} groups",
        elapsed.as_secs_f64(),
        faults_after - faults_before,
        peak_kib / 1024,
        last_groups
    );
}
