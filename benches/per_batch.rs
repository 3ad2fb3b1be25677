//! Per-batch cost of a continuous word count: brook's prepared plan (from
//! the tick to the result) against parsing and planning the SQL every batch.
//!
//! Run: `cargo bench --bench per_batch`

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{BatchOutput, StreamContext};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

mod common;
use common::{WORD_COUNT, WORD_COUNT_SPLIT, column_sum, query_over_batches, word_lines};

/// Sum of tick-to-result times over `iters` batches of a prepared query.
/// The batch interval leaves the query idle at each tick, so the time is
/// the batch's own cost, not time spent waiting behind the previous batch.
/// Each result must count exactly the batch's words (8 a line), and there
/// must be `iters` of them.
async fn prepared_batches(
    sql: &str,
    batch: &RecordBatch,
    iters: u64,
    measure: fn(&BatchOutput) -> Duration,
) -> Duration {
    let interval = Duration::from_millis(1 + batch.num_rows() as u64 / 2_000);
    let ctx = StreamContext::new(interval);
    let mut query = query_over_batches(&ctx, sql, batch, iters).await;
    let words = batch.num_rows() as i64 * 8;
    let (mut total, mut results) = (Duration::ZERO, 0);
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        assert_eq!(
            column_sum(&output.batches, "count"),
            words,
            "batch {}",
            output.batch_number
        );
        total += measure(&output);
        results += 1;
    }
    assert_eq!(results, iters, "one result a batch");
    total
}

/// Time to register the batch, parse, plan and run the SQL, `iters` times.
async fn planned_every_batch(batch: &RecordBatch, iters: u64) -> Duration {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let started = Instant::now();
    for _ in 0..iters {
        ctx.deregister_table("lines").expect("deregister");
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).expect("table");
        ctx.register_table("lines", Arc::new(table))
            .expect("register");
        let counts = ctx
            .sql(WORD_COUNT)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        assert_eq!(column_sum(&counts, "count"), batch.num_rows() as i64 * 8);
    }
    started.elapsed()
}

fn per_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("per_batch");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for rows in [100, 1_000, 10_000, 100_000] {
        let batch = word_lines(rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("prepared", rows), &batch, |b, batch| {
            b.iter_custom(|iters| {
                runtime.block_on(prepared_batches(WORD_COUNT, batch, iters, |o| o.elapsed))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("prepared_execution_only", rows),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    runtime.block_on(prepared_batches(WORD_COUNT, batch, iters, |o| o.execution))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("prepared_split", rows),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    runtime.block_on(prepared_batches(WORD_COUNT_SPLIT, batch, iters, |o| {
                        o.elapsed
                    }))
                })
            },
        );
        if rows <= 10_000 {
            group.bench_with_input(
                BenchmarkId::new("plan_every_batch", rows),
                &batch,
                |b, batch| {
                    b.iter_custom(|iters| runtime.block_on(planned_every_batch(batch, iters)))
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, per_batch);
criterion_main!(benches);
