//! What checkpoints cost: per-batch time with and without a checkpoint
//! after every batch, the checkpoint's size, and the time to restore.
//!
//! Queries: a running word count (`RUNNING`) with 1,000 and with 100,000
//! groups, and a sliding word count over 100 batches (`HOP` of 10 s by
//! 100 ms at a 100 ms interval) with 1,000 groups. 10,000 words per batch
//! from a queue (one item per batch; the clock at 1 ms so that the query
//! sets the pace), 300 batches. Per-batch time is the run's wall time over
//! its 300 input batches (the query's work plus, with checkpoints, writing
//! each); every input row must have been read, one input batch per batch.
//! Restore: from starting the query again on the checkpoint directory to
//! its return (planning and reading the checkpoint); its first batch, one
//! more input batch, must then give the counts of the restored state plus
//! that batch: every word's total for `RUNNING`, the last 100 batches' for
//! `HOP`.
//!
//! Run: `cargo bench --bench checkpoint`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{BatchOutput, SqlOutput, StreamContext};
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::compute::cast;
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

/// Word counts of a batch of words.
fn word_counts(batch: &RecordBatch) -> HashMap<String, i64> {
    let words = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("words");
    let mut counts = HashMap::new();
    for word in words.iter().flatten() {
        *counts.entry(word.to_string()).or_insert(0) += 1;
    }
    counts
}

/// The `(word, n)` rows of an output.
fn output_counts(output: &BatchOutput) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for batch in &output.batches {
        let words = cast(batch.column(0), &DataType::Utf8).expect("word column");
        let words = words.as_any().downcast_ref::<StringArray>().expect("words");
        let n = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("counts");
        for row in 0..batch.num_rows() {
            let earlier = counts.insert(words.value(row).to_string(), n.value(row));
            assert!(
                earlier.is_none(),
                "{} twice in one result",
                words.value(row)
            );
        }
    }
    counts
}

/// What a query's result holds at a batch: `RUNNING`, every batch so
/// far, or a window, this many of the last batches.
#[derive(Clone, Copy)]
enum Holds {
    Running,
    LastBatches(usize),
}

struct Measured {
    per_batch: Duration,
    /// The size of each checkpoint written (seen after each output).
    checkpoint_bytes: Vec<u64>,
    /// Each batch's number and the input batch it held, if any (the queue
    /// hands one item per batch, in order).
    inputs_of_batches: Vec<(u64, Option<usize>)>,
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
    let mut inputs_of_batches = Vec::new();
    let mut checkpoint_bytes = Vec::new();
    let mut inputs_read = 0;
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        // The end of input emits once more, as no batch of its own.
        if inputs_of_batches
            .last()
            .is_some_and(|(number, _)| *number == output.batch_number)
        {
            continue;
        }
        let input = match output.rows_in {
            0 => None,
            ROWS => {
                inputs_read += 1;
                Some(inputs_read - 1)
            }
            rows => panic!(
                "{sql}: batch {} read {rows} rows, not one input batch",
                output.batch_number
            ),
        };
        inputs_of_batches.push((output.batch_number, input));
        let stats = query.stats();
        if stats.checkpoint.is_some() {
            checkpoint_bytes.push(stats.checkpoint_bytes);
        }
    }
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    assert_eq!(inputs_read, batches.len(), "{sql}: input batches read");
    Measured {
        per_batch: elapsed / batches.len() as u32,
        checkpoint_bytes,
        inputs_of_batches,
    }
}

/// Starts `sql` again on `dir` with `batches[0]` queued: returns the time
/// until the query is returned (planning and reading the checkpoint; the
/// first output waits for the clock too), having checked that its first
/// batch counts the state of `checkpointed` plus that batch.
async fn restore(
    sql: &str,
    holds: Holds,
    batches: &[RecordBatch],
    checkpointed: &Measured,
    dir: PathBuf,
) -> Duration {
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
    let last = checkpointed
        .inputs_of_batches
        .last()
        .expect("batches ran")
        .0;
    assert_eq!(
        query.restored_batch(),
        Some(last),
        "{sql}: restored after batch"
    );
    let first = query
        .next()
        .await
        .expect("a first batch")
        .expect("the first batch runs");
    assert_eq!(first.batch_number, last + 1, "{sql}: numbered on");
    // The input batches the state holds, then the one just queued.
    let held: Vec<usize> = checkpointed
        .inputs_of_batches
        .iter()
        .filter(|(number, _)| match holds {
            Holds::Running => true,
            Holds::LastBatches(size) => *number + size as u64 > last + 1,
        })
        .filter_map(|(_, input)| *input)
        .collect();
    let mut expected: HashMap<String, i64> = word_counts(&batches[0]);
    for input in held {
        for (word, n) in word_counts(&batches[input]) {
            *expected.entry(word).or_insert(0) += n;
        }
    }
    assert!(
        output_counts(&first) == expected,
        "{sql}: the first batch after the restore does not count the restored state"
    );
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
            Holds::Running,
        ),
        (
            "running_100k_groups",
            100_000,
            "SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
            Holds::Running,
        ),
        (
            "hop_100_batches_1k_groups",
            1_000,
            "SELECT word, COUNT(*) AS n FROM HOP(words, INTERVAL '100 milliseconds', INTERVAL '10 seconds') GROUP BY word",
            Holds::LastBatches(100),
        ),
    ];
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, groups, sql, holds) in scenarios {
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
            let restored = runtime.block_on(restore(sql, holds, &input, &with, dir.clone()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut sizes = with.checkpoint_bytes.clone();
            sizes.sort_unstable();
            let kib = |at: f64| {
                sizes
                    .get(((sizes.len() as f64 - 1.0) * at).round() as usize)
                    .map_or(0.0, |b| *b as f64 / 1024.0)
            };
            println!(
                "checkpoint/{name} run {attempt}: {:.2} ms a batch without checkpoints, {:.2} ms with (+{:.2} ms), checkpoint median {:.1} KiB / p90 {:.1} / max {:.1} ({} seen), restore {:.1} ms",
                without.per_batch.as_secs_f64() * 1000.0,
                with.per_batch.as_secs_f64() * 1000.0,
                (with.per_batch.as_secs_f64() - without.per_batch.as_secs_f64()) * 1000.0,
                kib(0.5),
                kib(0.9),
                kib(1.0),
                sizes.len(),
                restored.as_secs_f64() * 1000.0
            );
        }
    }
}
