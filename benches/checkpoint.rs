//! What checkpoints cost: per-batch time with and without a checkpoint
//! after every batch, the checkpoint's size, and the time to restore.
//!
//! Queries: a running word count (`RUNNING`) with 1,000 and with 100,000
//! groups, and a sliding word count over 100 batches (`HOP` of 10 s by
//! 100 ms at a 100 ms interval) with 1,000 groups. 10,000 words per batch
//! from a queue (one item per batch; the clock at 1 ms so that the query
//! sets the pace), 300 batches. Per-batch time is the run's wall time over
//! its batches (the query's work plus, with checkpoints, writing each).
//! Restore: from starting the query again on the checkpoint directory to
//! its first output.
//!
//! Run: `cargo bench --bench checkpoint`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

mod common;

const BATCHES: usize = 300;
const ROWS: usize = 10_000;

fn batches(groups: u64) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, true)]));
    let mut rng = common::Rng::new(0x00c0_ffee);
    (0..BATCHES)
        .map(|_| {
            let words: Vec<String> = (0..ROWS)
                .map(|_| format!("w{}", rng.next() % groups))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(words))],
            )
            .expect("batch")
        })
        .collect()
}

struct Measured {
    per_batch: Duration,
    checkpoint_bytes: u64,
}

async fn run(sql: &str, batches: &[RecordBatch], dir: Option<PathBuf>) -> Measured {
    let ctx = StreamContext::new(Duration::from_millis(1));
    ctx.sql("SET batch_interval = '100ms'")
        .await
        .expect("interval");
    ctx.set_checkpoint_dir(dir).expect("dir");
    let queue = common::one_item_queue(&ctx, "words", batches[0].schema());
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    // The window is planned for 100 ms batches; the clock then runs at 1 ms
    // so that the query, not the clock, sets the pace.
    ctx.sql("SET batch_interval = '1ms'")
        .await
        .expect("interval");
    let feed = batches.to_vec();
    let started = Instant::now();
    let feeder = tokio::spawn(async move {
        for batch in feed {
            queue.push_wait(batch).await.expect("push");
        }
        queue.close();
    });
    let mut outputs = 0;
    while let Some(output) = query.next().await {
        output.expect("batch");
        outputs += 1;
    }
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    let stats = query.stats();
    Measured {
        per_batch: elapsed / outputs.max(1),
        checkpoint_bytes: stats.checkpoint_bytes,
    }
}

/// From starting `sql` again on `dir` to its first output.
async fn restore(sql: &str, batches: &[RecordBatch], dir: PathBuf) -> Duration {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.set_checkpoint_dir(Some(dir)).expect("dir");
    let queue = common::one_item_queue(&ctx, "words", batches[0].schema());
    queue.push(batches[0].clone()).expect("push");
    let started = Instant::now();
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    let restored = started.elapsed();
    let _ = query.next().await;
    // The restore itself: planning and reading the checkpoint happen before
    // the query is returned; the first output waits for the clock too.
    restored
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scenarios = [
        (
            "running_1k_groups",
            1_000,
            "SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
        ),
        (
            "running_100k_groups",
            100_000,
            "SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
        ),
        (
            "hop_100_batches_1k_groups",
            1_000,
            "SELECT word, COUNT(*) AS n FROM HOP(words, INTERVAL '100 milliseconds', INTERVAL '10 seconds') GROUP BY word",
        ),
    ];
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, groups, sql) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let input = batches(groups);
        for attempt in 1..=3 {
            let without = runtime.block_on(run(sql, &input, None));
            let dir = std::env::temp_dir().join(format!(
                "brook-bench-checkpoint-{}-{name}-{attempt}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let with = runtime.block_on(run(sql, &input, Some(dir.clone())));
            let restored = runtime.block_on(restore(sql, &input, dir.clone()));
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "checkpoint/{name} run {attempt}: {:.2} ms a batch without checkpoints, {:.2} ms with (+{:.2} ms), checkpoint {:.1} KiB, restore {:.1} ms",
                without.per_batch.as_secs_f64() * 1000.0,
                with.per_batch.as_secs_f64() * 1000.0,
                (with.per_batch.as_secs_f64() - without.per_batch.as_secs_f64()) * 1000.0,
                with.checkpoint_bytes as f64 / 1024.0,
                restored.as_secs_f64() * 1000.0
            );
        }
    }
}
