//! A plain loop of word-count batches, for profilers: pushes `batches`
//! batches of `rows` lines (8 words each, 1,000-word vocabulary) through a
//! queue stream and `SELECT word, COUNT(*) ... GROUP BY word`, and prints
//! the mean execution and tick-to-result times. No statistics, no warm-up:
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
    runtime.block_on(async move {
        let batch = word_lines(rows);
        let ctx = StreamContext::new(interval);
        let query = query_over_batches(&ctx, &sql, &batch, batches).await;
        let (count, execution, elapsed) = query
            .fold(
                (0u32, Duration::ZERO, Duration::ZERO),
                |(n, execution, elapsed), output| async move {
                    let output = output.expect("batch");
                    (
                        n + 1,
                        execution + output.execution,
                        elapsed + output.elapsed,
                    )
                },
            )
            .await;
        println!(
            "{count} batches of {rows} lines: execution {:?}/batch, tick to result {:?}/batch",
            execution / count.max(1),
            elapsed / count.max(1)
        );
    });
}
