//! A plain loop of word-count batches, for profilers: pushes `batches`
//! batches of `rows` lines (8 words each, 1,000-word vocabulary) through a
//! queue stream and `SELECT word, COUNT(*) ... GROUP BY word`, and prints
//! the mean execution and tick-to-result times, and the CPU time the whole
//! process spent per batch (every thread: the clock, the queue's producer,
//! the query). Since a batch is run while it arrives, tick to result is
//! only what is left after the cut; CPU per batch is what a batch costs.
//! No statistics, no warm-up:
//! it is the thing to run under `valgrind --tool=callgrind`, which counts
//! instructions the same way on every run.
//!
//! Run: `cargo bench --bench word_count_loop -- [rows] [batches] [interval_ms] [sql]`
//! (defaults 100 rows, 2,000 batches, 1 ms). Under callgrind:
//! `cargo bench --bench word_count_loop --no-run`, then
//! `valgrind --tool=callgrind target/release/deps/word_count_loop-<hash> 100 2000`.

use std::time::Duration;

use brook::StreamContext;
use futures::StreamExt;

mod common;
use common::{WORD_COUNT, query_over_batches, word_lines};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number = |at: usize, default: u64| {
        args.get(at)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let rows = number(0, 100) as usize;
    let batches = number(1, 2_000);
    let interval = Duration::from_millis(number(2, 1));
    let sql = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| WORD_COUNT.to_string());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cpu_before = process_cpu();
    runtime.block_on(async move {
        let batch = word_lines(rows);
        let ctx = StreamContext::new(interval);
        let mut query = query_over_batches(&ctx, &sql, &batch, batches).await;
        // The word counts (the default query, or one with a `count`
        // column) must count exactly the batch's 8 words a line.
        let checks_counts = sql == WORD_COUNT || sql.contains("AS count");
        let (mut count, mut execution, mut elapsed) = (0u32, Duration::ZERO, Duration::ZERO);
        while let Some(output) = query.next().await {
            let output = output.expect("batch");
            if checks_counts {
                common::assert_counts_words(&output, rows);
            }
            count += 1;
            execution += output.execution;
            elapsed += output.elapsed;
        }
        assert_eq!(u64::from(count), batches, "one result a batch");
        let cpu = process_cpu().saturating_sub(cpu_before);
        println!(
            "{count} batches of {rows} lines: execution {:?}/batch, tick to result {:?}/batch, CPU {:?}/batch",
            execution / count.max(1),
            elapsed / count.max(1),
            cpu / count.max(1)
        );
    });
}

/// CPU time of every thread of the process so far (Linux's schedstat: ns
/// on a CPU per thread). Threads that ended are not counted; the runtime's
/// live for the whole run.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
