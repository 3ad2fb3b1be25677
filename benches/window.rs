//! Per-slide cost of a sliding word count as the window grows: windows of
//! K = 1, 10 and 100 batches sliding by one batch, 10,000 words per batch
//! (1,000-word vocabulary), incremental (per-batch partial aggregates merged
//! with two stacks) against recompute (the plan re-run over the window's
//! raw batches).
//!
//! The measured time is the query's own work per batch (`execution`): for
//! the incremental path, aggregating the new batch, merging panes and the
//! final aggregate; for recompute, the plan over all K batches. Before
//! measuring, K batches fill the window.
//!
//! Run: `cargo bench --bench window`

mod common;

use std::sync::Arc;
use std::time::Duration;

use brook::{SqlOutput, StreamContext};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::StringViewArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

const ROWS: usize = 10_000;

/// `ROWS` words from a 1,000-word vocabulary.
fn words(schema: &Arc<Schema>, seed: u64) -> RecordBatch {
    let mut rng = common::Rng::new(seed | 1);
    let words: Vec<String> = (0..ROWS)
        .map(|_| format!("w{}", rng.next() % 1000))
        .collect();
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![Arc::new(StringViewArray::from(words))],
    )
    .expect("batch")
}

/// Sum of execution times of `iters` slides, after `window` batches
/// filled the window.
async fn slides(window: u64, incremental: bool, iters: u64, batches: &[RecordBatch]) -> Duration {
    // A 1 ms clock: the query, not the clock, sets the pace (the clock
    // waits for a busy query).
    let ctx = StreamContext::new(Duration::from_millis(1));
    ctx.set_incremental_windows(incremental);
    let queue = common::one_item_queue(&ctx, "words", batches[0].schema());
    // Pushed from a task that waits when the queue is full (its bound).
    let batches = batches.to_vec();
    tokio::spawn(async move {
        for i in 0..window + iters {
            queue
                .push_wait(batches[i as usize % batches.len()].clone())
                .await
                .expect("push");
        }
        queue.close();
    });
    let sql = format!(
        "SELECT word, COUNT(*) AS n FROM HOP(words, INTERVAL '1 millisecond', INTERVAL '{window} milliseconds') GROUP BY word"
    );
    let SqlOutput::Query(query) = ctx.sql(&sql).await.expect("query") else {
        unreachable!("continuous query")
    };
    // Each slide after the window filled counts exactly its `window`
    // batches' words.
    let mut query = query.skip(window as usize);
    let mut total = Duration::ZERO;
    while let Some(output) = query.next().await {
        let output = output.expect("slide");
        if output.rows_in > 0 {
            assert_eq!(
                common::column_sum(&output.batches, "n"),
                (window as usize * ROWS) as i64,
                "slide {}",
                output.batch_number
            );
        }
        total += output.execution;
    }
    total
}

fn window(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let schema = Arc::new(Schema::new(vec![Field::new(
        "word",
        DataType::Utf8View,
        true,
    )]));
    let batches: Vec<RecordBatch> = (0..16).map(|seed| words(&schema, 0x9e37 + seed)).collect();
    let mut group = c.benchmark_group("window_slide");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(ROWS as u64));
    for size in [1, 10, 100] {
        for (name, incremental) in [("incremental", true), ("recompute", false)] {
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter_custom(|iters| runtime.block_on(slides(size, incremental, iters, &batches)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, window);
criterion_main!(benches);
