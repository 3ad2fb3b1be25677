//! End-to-end socket word count: a generator thread on 127.0.0.1 sends lines
//! (8 words from a 1,000-word Zipf vocabulary) as fast as brook takes them,
//! or at a given rate; brook connects as a client, cuts batches and counts
//! words per batch. Reports lines/s (up to the sender being done, up to the
//! last result, and from the sender's accept to the last result), words/s,
//! per-batch latency (tick to result: `BatchOutput::elapsed`, and tick to
//! the output's arrival at the consumer) p50/p99, and peak RSS, and checks
//! the totals are exact.
//!
//! Run: `cargo bench --bench socket_e2e` (the default scenarios), or named
//! ones: `SOCKET_E2E_SCENARIO=20m_1s cargo bench --bench socket_e2e`, or
//! `cargo bench --bench socket_e2e -- --scenario 2m_1s,20m_1s` (a
//! comma-separated list; `all` is every scenario, `default` the default
//! ones; an unknown name lists them all), or one custom scenario:
//! `cargo bench --bench socket_e2e -- --lines 2000000 --interval 1s [--rate 100000] [--sql "..."]`

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{SocketOptions, SqlOutput, StreamContext, line_schema};
use chrono::Utc;
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

/// A `GROUP BY` of the first word of each line: at most 1,000 groups, with
/// less work per line than the word count.
const FIRST_WORD_COUNT: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT split_part(line, ' ', 1) AS word FROM lines) \
     GROUP BY word";

/// What the summed `(word, count)` results are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every word of every line sent (the word counts).
    Words,
    /// The first word of every line sent.
    FirstWords,
    /// Only that every line was in a batch (a custom `--sql`).
    RowsOnly,
}

impl Check {
    fn of(sql: &str) -> Self {
        if sql == WORD_COUNT || sql == WORD_COUNT_SPLIT {
            Check::Words
        } else if sql == FIRST_WORD_COUNT {
            Check::FirstWords
        } else {
            Check::RowsOnly
        }
    }
}

struct Scenario {
    name: String,
    lines: usize,
    interval: Duration,
    /// Lines per second the sender keeps to; `None` is as fast as possible.
    rate: Option<u64>,
    sql: String,
}

impl Scenario {
    fn new(name: &str, lines: usize, interval: Duration, rate: Option<u64>, sql: &str) -> Self {
        Self {
            name: name.to_string(),
            lines,
            interval,
            rate,
            sql: sql.to_string(),
        }
    }
}

/// Every named scenario, and whether `cargo bench --bench socket_e2e` runs
/// it when none is named.
fn named_scenarios() -> Vec<(Scenario, bool)> {
    let second = Duration::from_secs(1);
    let tenth = Duration::from_millis(100);
    vec![
        // One 2M-line batch: all lines arrive well within the first
        // interval.
        (
            Scenario::new("2m_1s", 2_000_000, second, None, WORD_COUNT),
            true,
        ),
        (
            Scenario::new("2m_1s_split", 2_000_000, second, None, WORD_COUNT_SPLIT),
            true,
        ),
        // Latency at 10,000 lines per batch.
        (
            Scenario::new("1m_100ms_100k", 1_000_000, tenth, Some(100_000), WORD_COUNT),
            true,
        ),
        (
            Scenario::new(
                "1m_100ms_100k_split",
                1_000_000,
                tenth,
                Some(100_000),
                WORD_COUNT_SPLIT,
            ),
            true,
        ),
        // Sustained: far more than one batch holds, sent as fast as brook
        // takes it (the stream's bound, 4M pending rows, is what may wait
        // for a batch at once).
        (
            Scenario::new("20m_1s", 20_000_000, second, None, WORD_COUNT),
            true,
        ),
        (
            Scenario::new("20m_100ms", 20_000_000, tenth, None, WORD_COUNT),
            true,
        ),
        // Tick to result of a GROUP BY with 1,000 groups (the word count's
        // vocabulary) at 2M lines per 1-second batch, about ten batches.
        (
            Scenario::new(
                "tick_1000_groups",
                20_000_000,
                second,
                Some(2_000_000),
                WORD_COUNT,
            ),
            true,
        ),
        // The same with a cheaper GROUP BY (first word: up to 1,000 groups).
        (
            Scenario::new(
                "tick_1000_groups_first_word",
                20_000_000,
                second,
                Some(2_000_000),
                FIRST_WORD_COUNT,
            ),
            false,
        ),
    ]
}

struct LinePool {
    lines: Vec<Vec<u8>>,
    /// Word counts of each pool line.
    counts: Vec<Vec<(u16, u32)>>,
    /// The first word of each pool line.
    first: Vec<u16>,
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
    let mut first = Vec::with_capacity(LINE_POOL);
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
            } else {
                first.push(index as u16);
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
        first,
        words,
    }
}

/// The summed `(word, count)` results a scenario must produce: sending
/// `lines` lines cycles through the pool, so pool line `j` goes
/// `lines / LINE_POOL` times, once more if `j < lines % LINE_POOL`.
fn expected_totals(pool: &LinePool, lines: usize, check: Check) -> Option<HashMap<String, i64>> {
    if check == Check::RowsOnly {
        return None;
    }
    let full_cycles = (lines / LINE_POOL) as i64;
    let rest = lines % LINE_POOL;
    let mut by_word = vec![0i64; VOCABULARY];
    for (j, (counts, first)) in pool.counts.iter().zip(&pool.first).enumerate() {
        let times = full_cycles + i64::from(j < rest);
        if times == 0 {
            continue;
        }
        match check {
            Check::Words => {
                for (word, n) in counts {
                    by_word[*word as usize] += i64::from(*n) * times;
                }
            }
            Check::FirstWords => by_word[*first as usize] += times,
            Check::RowsOnly => {}
        }
    }
    Some(
        by_word
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(word, n)| (pool.words[word].clone(), n))
            .collect(),
    )
}

/// Starts the sender; returns its address and a handle yielding, when it
/// has sent everything, when it accepted brook's connection and how long
/// it took from then.
fn start_sender(
    pool: Arc<LinePool>,
    scenario_lines: usize,
    rate: Option<u64>,
) -> (String, std::thread::JoinHandle<(Instant, Duration)>) {
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
        (started, started.elapsed())
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

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `p50 .. ms  p99 .. ms  max .. ms` of `values`.
fn spread(mut values: Vec<Duration>) -> String {
    values.sort();
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(percentile(&values, 0.5)),
        ms(percentile(&values, 0.99)),
        ms(values.last().copied().unwrap_or_default()),
    )
}

/// The timings of one non-empty batch.
struct BatchTiming {
    /// `BatchOutput::elapsed`: from the tick to the result.
    elapsed: Duration,
    execution: Duration,
    /// From the tick (`batch_time`) to the output reaching this consumer,
    /// on the wall clock.
    tick_to_arrival: Duration,
}

async fn run(pool: Arc<LinePool>, scenario: &Scenario) {
    let check = Check::of(&scenario.sql);
    let expected = expected_totals(&pool, scenario.lines, check);
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
    let mut timings = Vec::new();
    let mut rows_in = 0;
    let mut batches = 0;
    let mut most_groups = 0;
    let mut last_result = Instant::now();
    while let Some(output) = query.next().await {
        let arrived = Utc::now();
        last_result = Instant::now();
        let output = output.expect("batch");
        batches += 1;
        rows_in += output.rows_in;
        if output.rows_in > 0 {
            timings.push(BatchTiming {
                elapsed: output.elapsed,
                execution: output.execution,
                tick_to_arrival: (arrived - output.batch_time).to_std().unwrap_or_default(),
            });
            most_groups = most_groups.max(output.rows_out());
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
    let (accepted, send_time) = sender.join().expect("sender");
    let accept_to_last = last_result.saturating_duration_since(accepted);
    let exact = expected.as_ref().map(|expected| *expected == totals);
    let words = (scenario.lines * WORDS_PER_LINE) as f64;
    let lines = scenario.lines as f64;
    println!(
        "[{}] {}\nlines={} interval={:?} rate={} | batches={} rows_in={} exact={}",
        scenario.name,
        if scenario.sql.contains("split_part(") {
            "first word"
        } else if scenario.sql.contains("split(") {
            "split"
        } else if scenario.sql.contains("string_to_array(") {
            "string_to_array"
        } else {
            scenario.sql.as_str()
        },
        scenario.lines,
        scenario.interval,
        scenario
            .rate
            .map_or("max".to_string(), |r| format!("{r}/s")),
        batches,
        rows_in,
        exact.map_or("not checked".to_string(), |exact| exact.to_string()),
    );
    println!(
        "  ingest (sender done):      {:>10.0} lines/s  {:>11.0} words/s  ({:.2} s)",
        lines / send_time.as_secs_f64(),
        words / send_time.as_secs_f64(),
        send_time.as_secs_f64()
    );
    println!(
        "  all results (incl. last tick): {:>6.0} lines/s  {:>11.0} words/s  ({:.2} s)",
        lines / all_results.as_secs_f64(),
        words / all_results.as_secs_f64(),
        all_results.as_secs_f64()
    );
    println!(
        "  accept to last result:     {:>10.0} lines/s  {:>11.0} words/s  ({:.2} s)",
        lines / accept_to_last.as_secs_f64(),
        words / accept_to_last.as_secs_f64(),
        accept_to_last.as_secs_f64()
    );
    println!(
        "  tick to result (elapsed), {} batches: {} | execution {}",
        timings.len(),
        spread(timings.iter().map(|t| t.elapsed).collect()),
        spread(timings.iter().map(|t| t.execution).collect()),
    );
    println!(
        "  tick to arrival (wall clock):        {}",
        spread(timings.iter().map(|t| t.tick_to_arrival).collect()),
    );
    // The first batch starts with the connection and the last is cut when
    // the input ends: the batches between are whole intervals.
    if timings.len() >= 3 {
        let steady = &timings[1..timings.len() - 1];
        println!(
            "  whole intervals ({} batches, all but the first and last): elapsed {} | tick to arrival {}",
            steady.len(),
            spread(steady.iter().map(|t| t.elapsed).collect()),
            spread(steady.iter().map(|t| t.tick_to_arrival).collect()),
        );
    }
    println!("  result rows (groups) per batch, most: {most_groups}");
    println!("  peak RSS (this scenario): {:.0} MiB", peak_rss_mib());
    assert_ne!(exact, Some(false), "totals differ from what was sent");
    assert_eq!(rows_in, scenario.lines);
}

/// The value after `flag` on the command line.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A custom scenario from `--lines N [--interval D] [--rate R] [--sql S]`.
fn custom_scenario(args: &[String]) -> Option<Scenario> {
    let lines = flag_value(args, "--lines")?;
    Some(Scenario {
        name: "custom".to_string(),
        lines: lines.parse().expect("--lines N"),
        interval: flag_value(args, "--interval")
            .map(|i| brook::sql::parse_duration(&i).expect("--interval"))
            .unwrap_or(Duration::from_secs(1)),
        rate: flag_value(args, "--rate").map(|r| r.parse().expect("--rate N")),
        sql: flag_value(args, "--sql").unwrap_or_else(|| WORD_COUNT.to_string()),
    })
}

/// The scenarios to run: a custom one, those named by `--scenario` or
/// `SOCKET_E2E_SCENARIO` (comma-separated; `all`, `default`), or the
/// default ones.
fn selected_scenarios(args: &[String]) -> Vec<Scenario> {
    if let Some(custom) = custom_scenario(args) {
        return vec![custom];
    }
    let named = flag_value(args, "--scenario")
        .or_else(|| std::env::var("SOCKET_E2E_SCENARIO").ok())
        .filter(|names| !names.trim().is_empty())
        .unwrap_or_else(|| "default".to_string());
    let mut available = named_scenarios();
    let names: Vec<String> = available.iter().map(|(s, _)| s.name.clone()).collect();
    let mut wanted: Vec<String> = Vec::new();
    for name in named.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "all" => wanted.extend(names.iter().cloned()),
            "default" => wanted.extend(
                available
                    .iter()
                    .filter(|(_, default)| *default)
                    .map(|(s, _)| s.name.clone()),
            ),
            name if names.iter().any(|n| n == name) => wanted.push(name.to_string()),
            unknown => panic!(
                "no scenario '{unknown}'; the scenarios are: {} (or 'all', 'default')",
                names.join(", ")
            ),
        }
    }
    let mut scenarios = Vec::new();
    for name in wanted {
        if let Some(index) = available.iter().position(|(s, _)| s.name == name) {
            scenarios.push(available.remove(index).0);
        }
    }
    scenarios
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; stay quick then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenarios = selected_scenarios(&args);
    let pool = Arc::new(line_pool());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for scenario in &scenarios {
        runtime.block_on(run(Arc::clone(&pool), scenario));
    }
}
