//! End-to-end socket word count: a generator thread on 127.0.0.1 sends lines
//! (8 words from a 1,000-word Zipf vocabulary) as fast as brook takes them;
//! brook connects as a client, cuts batches and counts words per batch.
//! Reports lines/s and words/s, per-batch latency (tick to result) p50/p99,
//! and peak RSS, and checks the word totals are exact.
//!
//! Run: `cargo bench --bench socket_e2e` (every scenario), or one scenario:
//! `cargo bench --bench socket_e2e -- --lines 2000000 --interval 1s [--rate 100000] [--sql "..."]`

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SocketOptions, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;

const WORDS_PER_LINE: usize = 8;
const VOCABULARY: usize = 1_000;
/// Distinct lines generated up front; the sender cycles through them.
const LINE_POOL: usize = 1 << 16;

mod common;
use common::{WORD_COUNT, WORD_COUNT_SPLIT};

struct Scenario {
    lines: usize,
    interval: Duration,
    /// Lines per second the sender keeps to; `None` is as fast as possible.
    rate: Option<u64>,
    sql: String,
}

struct LinePool {
    lines: Vec<Vec<u8>>,
    /// Word counts of each pool line.
    counts: Vec<Vec<(u16, u32)>>,
    words: Vec<String>,
}

fn line_pool() -> LinePool {
    let words: Vec<String> = (0..VOCABULARY).map(|i| format!("w{i}")).collect();
    // Zipf (s = 1): word i has weight 1 / (i + 1).
    let mut cumulative = Vec::with_capacity(VOCABULARY);
    let mut total = 0.0;
    for i in 0..VOCABULARY {
        total += 1.0 / (i as f64 + 1.0);
        cumulative.push(total);
    }
    let mut rng = common::Rng::new(0x2545_f491_4f6c_dd1d_u64);
    let mut uniform = || rng.uniform();
    let mut lines = Vec::with_capacity(LINE_POOL);
    let mut counts = Vec::with_capacity(LINE_POOL);
    for _ in 0..LINE_POOL {
        let mut line = Vec::with_capacity(WORDS_PER_LINE * 5);
        let mut line_counts: Vec<(u16, u32)> = Vec::new();
        for w in 0..WORDS_PER_LINE {
            let target = uniform() * total;
            let index = cumulative
                .partition_point(|c| *c < target)
                .min(VOCABULARY - 1);
            if w > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(words[index].as_bytes());
            match line_counts.iter_mut().find(|(i, _)| *i as usize == index) {
                Some((_, n)) => *n += 1,
                None => line_counts.push((index as u16, 1)),
            }
        }
        line.push(b'\n');
        lines.push(line);
        counts.push(line_counts);
    }
    LinePool {
        lines,
        counts,
        words,
    }
}

/// Starts the sender; returns its address and a handle yielding when it finished.
fn start_sender(
    pool: Arc<LinePool>,
    scenario_lines: usize,
    rate: Option<u64>,
) -> (String, std::thread::JoinHandle<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let handle = std::thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("accept");
        let started = Instant::now();
        let mut chunk = Vec::with_capacity(256 * 1024);
        let mut sent = 0;
        let lines_per_chunk = match rate {
            Some(rate) => (rate / 100).max(1) as usize, // 10 ms worth
            None => 4096,
        };
        while sent < scenario_lines {
            chunk.clear();
            let take = lines_per_chunk.min(scenario_lines - sent);
            for i in sent..sent + take {
                chunk.extend_from_slice(&pool.lines[i % LINE_POOL]);
            }
            client.write_all(&chunk).expect("send");
            sent += take;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        started.elapsed()
    });
    (address, handle)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS, so each
/// scenario reports its own peak (Linux: `5` to `/proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(pool: Arc<LinePool>, scenario: &Scenario) {
    let mut expected: HashMap<&str, i64> = HashMap::new();
    for i in 0..scenario.lines {
        for (word, n) in &pool.counts[i % LINE_POOL] {
            *expected
                .entry(pool.words[*word as usize].as_str())
                .or_default() += *n as i64;
        }
    }
    reset_peak_rss();
    let (address, sender) = start_sender(Arc::clone(&pool), scenario.lines, scenario.rate);
    let ctx = StreamContext::new(scenario.interval);
    ctx.register_socket("lines", &address, line_schema(), SocketOptions::default())
        .expect("register");
    let started = Instant::now();
    let SqlOutput::Query(mut query) = ctx.sql(&scenario.sql).await.expect("query") else {
        panic!("not a continuous query")
    };
    let mut totals: HashMap<String, i64> = HashMap::new();
    let mut latencies = Vec::new();
    let mut executions = Vec::new();
    let mut rows_in = 0;
    let mut batches = 0;
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        batches += 1;
        rows_in += output.rows_in;
        if output.rows_in > 0 {
            latencies.push(output.elapsed);
            executions.push(output.execution);
        }
        for batch in output.batches.iter().filter(|b| b.num_columns() == 2) {
            let words = cast(batch.column(0), &DataType::Utf8).expect("words");
            let words = words.as_string::<i32>();
            let Some(counts) = batch.column(1).as_primitive_opt::<Int64Type>() else {
                continue;
            };
            for row in 0..batch.num_rows() {
                if !words.is_null(row) {
                    *totals.entry(words.value(row).to_string()).or_default() += counts.value(row);
                }
            }
        }
    }
    let all_results = started.elapsed();
    let send_time = sender.join().expect("sender");
    let exact =
        totals.len() == expected.len() && expected.iter().all(|(w, n)| totals.get(*w) == Some(n));
    latencies.sort();
    executions.sort();
    let words = (scenario.lines * WORDS_PER_LINE) as f64;
    println!(
        "{}\nlines={} interval={:?} rate={} | batches={} rows_in={} exact={}",
        if scenario.sql.contains("split(") {
            "[split]"
        } else {
            "[string_to_array]"
        },
        scenario.lines,
        scenario.interval,
        scenario
            .rate
            .map_or("max".to_string(), |r| format!("{r}/s")),
        batches,
        rows_in,
        exact
    );
    println!(
        "  ingest (sender done):      {:>10.0} lines/s  {:>11.0} words/s  ({:.2} s)",
        scenario.lines as f64 / send_time.as_secs_f64(),
        words / send_time.as_secs_f64(),
        send_time.as_secs_f64()
    );
    println!(
        "  all results (incl. last tick): {:>6.0} lines/s  {:>11.0} words/s  ({:.2} s)",
        scenario.lines as f64 / all_results.as_secs_f64(),
        words / all_results.as_secs_f64(),
        all_results.as_secs_f64()
    );
    println!(
        "  tick to result: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms | execution p50 {:.2} ms  max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&executions, 0.5).as_secs_f64() * 1e3,
        executions.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!("  peak RSS (this scenario): {:.0} MiB", peak_rss_mib());
    // A custom --sql need not be a word count; only then are totals skipped.
    assert!(
        exact || scenario.sql != WORD_COUNT,
        "word totals differ from what was sent"
    );
    assert_eq!(rows_in, scenario.lines);
}

fn parse_args() -> Option<Scenario> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let lines = value("--lines")?;
    Some(Scenario {
        lines: lines.parse().expect("--lines N"),
        interval: value("--interval")
            .map(|i| brook::sql::parse_duration(&i).expect("--interval"))
            .unwrap_or(Duration::from_secs(1)),
        rate: value("--rate").map(|r| r.parse().expect("--rate N")),
        sql: value("--sql").unwrap_or_else(|| WORD_COUNT.to_string()),
    })
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; stay quick then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let pool = Arc::new(line_pool());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let scenarios = match parse_args() {
        Some(scenario) => vec![scenario],
        None => vec![
            Scenario {
                lines: 2_000_000,
                interval: Duration::from_secs(1),
                rate: None,
                sql: WORD_COUNT.to_string(),
            },
            Scenario {
                lines: 2_000_000,
                interval: Duration::from_secs(1),
                rate: None,
                sql: WORD_COUNT_SPLIT.to_string(),
            },
            Scenario {
                lines: 1_000_000,
                interval: Duration::from_millis(100),
                rate: Some(100_000),
                sql: WORD_COUNT.to_string(),
            },
            Scenario {
                lines: 1_000_000,
                interval: Duration::from_millis(100),
                rate: Some(100_000),
                sql: WORD_COUNT_SPLIT.to_string(),
            },
            // Sustained: far more than one batch holds, sent as fast as
            // brook takes it (the stream's bound, 4M pending rows, is what
            // one 1-second batch can hold).
            Scenario {
                lines: 20_000_000,
                interval: Duration::from_secs(1),
                rate: None,
                sql: WORD_COUNT.to_string(),
            },
            Scenario {
                lines: 20_000_000,
                interval: Duration::from_millis(100),
                rate: None,
                sql: WORD_COUNT.to_string(),
            },
        ],
    };
    for scenario in &scenarios {
        runtime.block_on(run(Arc::clone(&pool), scenario));
    }
}
