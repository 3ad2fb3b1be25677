//! Checkpoints: a query started again with the same checkpoint directory
//! resumes its state and its batch numbers; a changed query is refused; a
//! corrupt checkpoint is skipped for the one before, with a warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use brook::{BatchOutput, StreamContext};

use crate::common::{collect_all, recording_warnings, rows, start};

const TICK: Duration = Duration::from_millis(30);

/// A temporary checkpoint directory, removed at the end.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("brook-it-checkpoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RUNNING_SQL: &str =
    "SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word ORDER BY word";

/// Runs `sql` over a queue `words` holding `items` (one per batch), to its
/// end, with checkpoints in `dir` (if any). A batch's checkpoint is written
/// when the next output is asked for (or the query ends).
async fn run(dir: Option<&Path>, sql: &str, items: &[&[&str]]) -> Vec<BatchOutput> {
    let (warn, _) = recording_warnings();
    run_with(dir, sql, items, warn, &[]).await
}

/// As [`run`], reporting warnings to `warn`, after `settings` (`SET ...`).
async fn run_with(
    dir: Option<&Path>,
    sql: &str,
    items: &[&[&str]],
    warn: brook::WarningHandler,
    settings: &[&str],
) -> Vec<BatchOutput> {
    let ctx = StreamContext::with_warning_handler(TICK, warn);
    ctx.set_checkpoint_dir(dir.map(Path::to_path_buf)).unwrap();
    for setting in settings {
        ctx.sql(setting).await.unwrap();
    }
    ctx.sql("CREATE STREAM words (word TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    for item in items {
        let values: Vec<String> = item.iter().map(|w| format!("('{w}')")).collect();
        ctx.sql(&format!("INSERT INTO words VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    ctx.close_queues();
    collect_all(start(&ctx, sql).await).await
}

/// The directory of the one query checkpointed under `root`.
fn only_query_dir(root: &Path) -> PathBuf {
    let mut entries = std::fs::read_dir(root).unwrap();
    let dir = entries.next().unwrap().unwrap().path();
    assert!(entries.next().is_none(), "one query in {}", root.display());
    dir
}

fn last_rows(outputs: &[BatchOutput]) -> Vec<Vec<String>> {
    rows(outputs.last().expect("an output"))
}

fn row(word: &str, n: &str) -> Vec<String> {
    vec![word.to_string(), n.to_string()]
}

#[tokio::test]
async fn a_restarted_running_query_resumes_its_totals_and_batch_numbers() {
    let dir = Dir::new("resume");
    let first = run(Some(dir.path()), RUNNING_SQL, &[&["a", "b"], &["a"]]).await;
    assert_eq!(last_rows(&first), vec![row("a", "2"), row("b", "1")]);
    drop(first);
    let second = run(Some(dir.path()), RUNNING_SQL, &[&["b"], &["c", "a"]]).await;
    let numbers: Vec<u64> = second.iter().map(|o| o.batch_number).collect();
    assert_eq!(numbers, vec![3, 4]);
    assert_eq!(
        last_rows(&second),
        vec![row("a", "3"), row("b", "2"), row("c", "1")]
    );
    // The header's checkpoint: the last one written when the batch ran
    // (batch 3's is written once the next output is asked for).
    assert_eq!(second[0].checkpoint, Some(2));
    assert!(matches!(second[1].checkpoint, Some(2 | 3)));
    let query_dir = only_query_dir(dir.path());
    assert!(query_dir.join("batch-0000000004.ckpt").exists());
}

#[tokio::test]
async fn without_a_checkpoint_directory_a_query_starts_afresh() {
    let dir = Dir::new("fresh");
    run(Some(dir.path()), RUNNING_SQL, &[&["a", "b"]]).await;
    let fresh = run(None, RUNNING_SQL, &[&["a"]]).await;
    assert_eq!(fresh[0].batch_number, 1);
    assert_eq!(last_rows(&fresh), vec![row("a", "1")]);
    assert_eq!(fresh[0].checkpoint, None);
}

#[tokio::test]
async fn a_sink_whose_query_changed_is_refused_saying_how_to_start_afresh() {
    let dir = Dir::new("changed");
    let out = Dir::new("changed-out");
    for (sql, expect_error) in [
        (
            "SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
            false,
        ),
        (
            "SELECT word, SUM(1) AS n FROM RUNNING(words) GROUP BY word",
            true,
        ),
    ] {
        let ctx = StreamContext::new(TICK);
        ctx.set_checkpoint_dir(Some(dir.path().to_path_buf()))
            .unwrap();
        ctx.sql("CREATE STREAM words (word TEXT) WITH (connector = 'queue')")
            .await
            .unwrap();
        ctx.sql("INSERT INTO words VALUES ('a')").await.unwrap();
        let result = ctx
            .sql(&format!(
                "CREATE SINK counts WITH (connector = 'file', path = '{}', format = 'csv') AS {sql}",
                out.path().display()
            ))
            .await;
        if expect_error {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("different SQL") && err.contains("counts"),
                "{err}"
            );
        } else {
            result.unwrap();
            ctx.close_queues();
            ctx.wait_for_sinks().await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_corrupt_last_checkpoint_is_skipped_for_the_one_before_with_a_warning() {
    let dir = Dir::new("corrupt");
    run(Some(dir.path()), RUNNING_SQL, &[&["a"], &["a"], &["b"]]).await;
    // The query's newest checkpoint (after batch 3) loses its second half.
    let query_dir = only_query_dir(dir.path());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&query_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let newest = files.last().unwrap();
    assert!(newest.to_string_lossy().ends_with("batch-0000000003.ckpt"));
    let bytes = std::fs::read(newest).unwrap();
    std::fs::write(newest, &bytes[..bytes.len() / 2]).unwrap();
    let (warn, warnings) = recording_warnings();
    let resumed = run_with(Some(dir.path()), RUNNING_SQL, &[&["c"]], warn, &[]).await;
    // Restored after batch 2: a twice, b not yet; batch 3 is numbered again.
    assert_eq!(resumed[0].batch_number, 3);
    assert_eq!(last_rows(&resumed), vec![row("a", "2"), row("c", "1")]);
    let warnings = warnings.lock().unwrap().join("\n");
    assert!(
        warnings.contains("checkpoint 3") && warnings.contains("skipped"),
        "{warnings}"
    );
}

#[tokio::test]
async fn an_event_time_window_open_at_a_restart_closes_with_rows_from_both_runs() {
    let dir = Dir::new("event-time");
    let sql = "SELECT window_start, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start";
    let mut results = Vec::new();
    for items in [
        &["2026-01-01 00:00:01", "2026-01-01 00:00:04"][..],
        &["2026-01-01 00:00:07", "2026-01-01 00:00:15"][..],
    ] {
        let ctx = StreamContext::new(TICK);
        ctx.set_checkpoint_dir(Some(dir.path().to_path_buf()))
            .unwrap();
        ctx.sql(
            "CREATE STREAM readings (ts TIMESTAMP, WATERMARK FOR ts AS ts) \
             WITH (connector = 'queue', one_at_a_time = 'true')",
        )
        .await
        .unwrap();
        for ts in items {
            ctx.sql(&format!("INSERT INTO readings VALUES ('{ts}')"))
                .await
                .unwrap();
        }
        // The first run stops without ending its input (the window stays
        // open); the second ends it.
        let mut query = start(&ctx, sql).await;
        if results.is_empty() {
            let mut seen = 0;
            while seen < 2 {
                let output = crate::common::next_batch(&mut query)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(output.batches.iter().all(|b| b.num_rows() == 0));
                seen = output.batch_number;
            }
            drop(query);
            results.push(Vec::new());
        } else {
            ctx.close_queues();
            let outputs = collect_all(query).await;
            assert_eq!(outputs[0].batch_number, 3);
            results.push(outputs.iter().flat_map(rows).collect());
        }
    }
    assert_eq!(
        results[1],
        vec![
            vec!["2026-01-01T00:00:00Z".to_string(), "3".to_string()],
            vec!["2026-01-01T00:00:10Z".to_string(), "1".to_string()],
        ]
    );
}

/// Checkpoints are incremental: a `RUNNING` count checkpointed after every
/// batch writes the batch's groups and names the rest in older files; its
/// state moves to a new base every 16 batches. Restarted twice across
/// those moves, every total is exact.
#[tokio::test]
async fn a_running_count_checkpointed_every_batch_writes_only_what_changed_and_restores_exact_totals()
 {
    let dir = Dir::new("incremental");
    let words_of = |batch: usize| -> Vec<String> {
        (0..6)
            .map(|i| format!("w{}", (batch * 7 + i * 13) % 97))
            .collect()
    };
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    let mut next = 0;
    for run_batches in [40, 9, 30] {
        let items: Vec<Vec<String>> = (next..next + run_batches).map(words_of).collect();
        next += run_batches;
        for word in items.iter().flatten() {
            *expected.entry(word.clone()).or_default() += 1;
        }
        let items: Vec<Vec<&str>> = items
            .iter()
            .map(|item| item.iter().map(String::as_str).collect())
            .collect();
        let items: Vec<&[&str]> = items.iter().map(Vec::as_slice).collect();
        let outputs = run(Some(dir.path()), RUNNING_SQL, &items).await;
        assert_eq!(outputs.last().unwrap().batch_number, next as u64);
        let totals: Vec<Vec<String>> = expected
            .iter()
            .map(|(word, n)| row(word, &n.to_string()))
            .collect();
        assert_eq!(last_rows(&outputs), totals, "after batch {next}");
    }
    // What the files hold: the newest names most of its state in older
    // files. The files kept are the newest three and those they read: a
    // base and at most 16 panes since it, for each.
    let listed = brook::checkpoint::describe_dir(dir.path()).unwrap();
    let held: Vec<(usize, usize)> = listed
        .iter()
        .map(|line| {
            let field = line.split('\t').nth(4).unwrap();
            let (parts, rest) = field.split_once(" state batches (").unwrap();
            let here = rest.split_once(' ').unwrap().0;
            (parts.parse().unwrap(), here.parse().unwrap())
        })
        .collect();
    assert!(held.iter().any(|(parts, here)| here < parts), "{listed:#?}");
    assert!(listed.len() <= 20, "{listed:#?}");
}

#[test]
fn brook_checkpoints_lists_what_a_directory_holds() {
    let dir = Dir::new("cli");
    let brook = env!("CARGO_BIN_EXE_brook");
    let script = dir.path().with_extension("sql");
    std::fs::write(
        &script,
        "SET batch_interval = '50ms';\n\
         CREATE STREAM words (word TEXT) WITH (connector = 'queue', one_at_a_time = 'true');\n\
         INSERT INTO words VALUES ('a');\n\
         INSERT INTO words VALUES ('b');\n\
         SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word;\n",
    )
    .unwrap();
    let run = std::process::Command::new(brook)
        .args(["run", script.to_str().unwrap(), "--checkpoint"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listed = std::process::Command::new(brook)
        .args(["checkpoints"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("batch 2") && text.contains("FROM RUNNING(words)"),
        "{text}"
    );
    let _ = std::fs::remove_file(script);
}

/// Words of file `n`: 200 lines of three words from a 50-word vocabulary.
fn words_of_file(n: u64) -> Vec<String> {
    let mut rng = crate::common::Rng(0x5eed ^ ((n + 1) * 0x9e37_79b9));
    (0..200)
        .map(|_| {
            (0..3)
                .map(|_| format!("w{}", rng.below(50)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test]
async fn a_brook_killed_ten_times_restarts_where_it_stopped_with_exact_totals_in_postgres_and_windows_in_parquet()
 {
    use std::collections::BTreeMap;
    let mut pg = crate::pg_server::PgServer::start().await;
    let input = Dir::new("kill-input");
    let readings = Dir::new("kill-readings");
    let windows = Dir::new("kill-windows");
    let checkpoints = Dir::new("kill-checkpoints");
    for dir in [&input, &readings, &windows] {
        std::fs::create_dir_all(dir.path()).unwrap();
    }
    let script = checkpoints.path().with_extension("sql");
    std::fs::write(
        &script,
        format!(
            "SET batch_interval = '100ms';\n\
             CREATE STREAM lines (line TEXT) WITH (connector = 'files', path = '{}', settle = '0ms', start = 'new');\n\
             CREATE SINK totals WITH (connector = 'postgres', url = '{}', table = 'totals', \
               mode = 'upsert', key = 'word', create_table = 'true') AS \
               SELECT word, COUNT(*) AS n FROM \
               (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines)) GROUP BY word;\n\
             CREATE STREAM readings (word TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
               WITH (connector = 'files', path = '{}', format = 'csv', settle = '0ms', start = 'new', idle_timeout = '1h');\n\
             CREATE SINK windows WITH (connector = 'file', path = '{}', format = 'parquet') AS \
               SELECT window_start, word, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) \
               GROUP BY window_start, word;\n",
            input.path().display(),
            pg.url(),
            readings.path().display(),
            windows.path().display()
        ),
    )
    .unwrap();
    let brook = || spawn_checkpointed(&script, checkpoints.path());
    const FILES: u64 = 40;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for n in 0..FILES {
        for line in words_of_file(n) {
            for word in line.split(' ') {
                *expected.entry(word.to_string()).or_default() += 1;
            }
        }
    }
    // `start = 'new'`: a run without its checkpoint would skip the files
    // that appeared while brook was down, and one that re-read files would
    // count them twice. The first run is up before the first file.
    let mut first = Some(brook());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The same words with event times, 2 s of event time per file, in
    // order: 10-second windows, each emitted once when the watermark (2 s
    // behind) passes its end; a last reading far ahead closes them all.
    let reading_rows = |n: u64| -> Vec<(String, i64)> {
        words_of_file(n)
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let word = line.split(' ').next().unwrap().to_string();
                (word, n as i64 * 2_000 + i as i64 * 10)
            })
            .collect()
    };
    let mut expected_windows: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for n in 0..FILES {
        for (word, at) in reading_rows(n) {
            *expected_windows
                .entry((at - at.rem_euclid(10_000), word))
                .or_default() += 1;
        }
    }
    // Files appear while brook runs, is killed and restarts: written under a
    // hidden name, then renamed.
    let writer = {
        let dir = input.path().to_path_buf();
        let readings_dir = readings.path().to_path_buf();
        std::thread::spawn(move || {
            let put = put_whole;
            for n in 0..FILES {
                put(
                    &dir,
                    format!("f{n:03}.txt"),
                    words_of_file(n).join("\n") + "\n",
                );
                let csv: String = reading_rows(n)
                    .iter()
                    .map(|(word, at)| format!("{word},{}\n", timestamp(*at)))
                    .collect();
                put(&readings_dir, format!("r{n:03}.csv"), csv);
                std::thread::sleep(Duration::from_millis(150));
            }
            put(
                &readings_dir,
                "r999.csv".to_string(),
                format!("end,{}\n", timestamp(1_000_000)),
            );
        })
    };
    let mut rng = crate::common::Rng(0xdead_beef);
    for _ in 0..10 {
        let mut child = first.take().unwrap_or_else(brook);
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    writer.join().unwrap();
    // The last run reads what is left; the table must reach the exact
    // totals (and stay there: no batch counted twice), and the windows'
    // files must each hold their window once, exact.
    let mut child = brook();
    let totals = |rows: Vec<Vec<String>>| -> BTreeMap<String, i64> {
        rows.into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    while std::time::Instant::now() < deadline {
        seen = totals(pg.rows("SELECT word, n FROM totals ORDER BY word").await);
        if seen == expected && window_rows(windows.path()).len() >= expected_windows.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more batches: nothing moves past the exact totals.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = totals(pg.rows("SELECT word, n FROM totals ORDER BY word").await);
    let windows_written = window_rows(windows.path());
    child.kill().unwrap();
    child.wait().unwrap();
    pg.stop();
    let _ = std::fs::remove_file(&script);
    assert_eq!(
        lost_and_doubled(&expected, &seen),
        (0, 0),
        "rows lost and counted twice"
    );
    assert_eq!(after, expected);
    assert_eq!(each_window_once(windows_written), expected_windows);
}

#[tokio::test]
async fn with_a_checkpoint_interval_only_every_nth_batch_is_checkpointed_and_a_restart_resumes_from_the_last()
 {
    let dir = Dir::new("interval");
    let interval = ["SET checkpoint_interval = 2"];
    let run_with_interval = |items: &'static [&'static [&'static str]]| {
        let (warn, _) = recording_warnings();
        let dir = dir.path().to_path_buf();
        async move { run_with(Some(&dir), RUNNING_SQL, items, warn, &interval).await }
    };
    run_with_interval(&[&["a"], &["a"], &["b"], &["b"], &["c"]]).await;
    let query_dir = only_query_dir(dir.path());
    let mut files: Vec<String> = std::fs::read_dir(&query_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["batch-0000000002.ckpt", "batch-0000000004.ckpt"]
    );
    // Restored after batch 4 (batch 5's "c" is gone with the queue).
    let resumed = run_with_interval(&[&["d"]]).await;
    assert_eq!(resumed[0].batch_number, 5);
    assert_eq!(
        last_rows(&resumed),
        vec![row("a", "2"), row("b", "2"), row("d", "1")]
    );
}

/// `2026-01-01 00:00:00` plus `millis`, as CSV writes a timestamp.
fn timestamp(millis: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(1_767_225_600_000 + millis).unwrap();
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Every `(window_start ms after 2026-01-01, word) -> n` row of the
/// Parquet files in `dir`.
pub(crate) fn window_rows(dir: &Path) -> Vec<((i64, String), i64)> {
    use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
    let mut rows = Vec::new();
    for batch in parquet_batches(dir) {
        let starts = datafusion::arrow::compute::cast(
            batch.column_by_name("window_start").unwrap(),
            &datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Millisecond,
                None,
            ),
        )
        .unwrap();
        let starts = starts
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let words = datafusion::arrow::compute::cast(
            batch.column_by_name("word").unwrap(),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let words = words.as_any().downcast_ref::<StringArray>().unwrap();
        let counts = batch.column_by_name("n").unwrap();
        let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
        for row in 0..batch.num_rows() {
            rows.push((
                (
                    starts.value(row) - 1_767_225_600_000,
                    words.value(row).to_string(),
                ),
                counts.value(row),
            ));
        }
    }
    rows
}

/// Window rows as a map from window to count; fails naming a window that
/// was written more than once (a batch written again after a restart).
pub(crate) fn each_window_once(
    rows: Vec<((i64, String), i64)>,
) -> std::collections::BTreeMap<(i64, String), i64> {
    let mut once = std::collections::BTreeMap::new();
    for (window, n) in rows {
        if let Some(earlier) = once.insert(window.clone(), n) {
            panic!("window {window:?} written twice: {earlier} and {n}");
        }
    }
    once
}

/// How many counts `seen` lacks and how many it has too many, against
/// `expected`, over all keys.
pub(crate) fn lost_and_doubled(
    expected: &std::collections::BTreeMap<String, i64>,
    seen: &std::collections::BTreeMap<String, i64>,
) -> (i64, i64) {
    let short = |a: &std::collections::BTreeMap<String, i64>,
                 b: &std::collections::BTreeMap<String, i64>| {
        a.iter()
            .map(|(key, n)| (n - b.get(key).copied().unwrap_or(0)).max(0))
            .sum::<i64>()
    };
    (short(expected, seen), short(seen, expected))
}

/// Every `(o_seq, p_seq)` row (NULL as -1) of the Parquet files in `dir`.
fn pair_rows(dir: &Path) -> Vec<(i64, i64)> {
    use datafusion::arrow::array::{Array, Int64Array};
    let mut rows = Vec::new();
    for batch in parquet_batches(dir) {
        let column = |name: &str| {
            batch
                .column(batch.schema().index_of(name).unwrap())
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (o, p) = (column("o_seq"), column("p_seq"));
        for row in 0..batch.num_rows() {
            let get = |a: &Int64Array| if a.is_null(row) { -1 } else { a.value(row) };
            rows.push((get(&o), get(&p)));
        }
    }
    rows.sort_unstable();
    rows
}

/// Issue 25: an interval join's held rows are in its checkpoints: a brook
/// killed (SIGKILL) five times while orders and payments arrive as CSV
/// files writes exactly the pairs and unmatched orders an uninterrupted
/// run writes, each once.
#[tokio::test]
async fn a_brook_killed_five_times_writes_each_join_pair_once() {
    let orders = Dir::new("join-orders");
    let payments = Dir::new("join-payments");
    let pairs = Dir::new("join-pairs");
    let checkpoints = Dir::new("join-checkpoints");
    for dir in [&orders, &payments, &pairs] {
        std::fs::create_dir_all(dir.path()).unwrap();
    }
    let script = checkpoints.path().with_extension("sql");
    std::fs::write(
        &script,
        format!(
            "SET batch_interval = '100ms';\n\
             CREATE STREAM orders (id BIGINT, seq BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
               WITH (connector = 'files', path = '{}', format = 'csv', settle = '0ms', start = 'new', idle_timeout = '1h');\n\
             CREATE STREAM payments (order_id BIGINT, seq BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
               WITH (connector = 'files', path = '{}', format = 'csv', settle = '0ms', start = 'new', idle_timeout = '1h');\n\
             CREATE SINK pairs WITH (connector = 'file', path = '{}', format = 'parquet') AS \
               SELECT o.seq AS o_seq, p.seq AS p_seq FROM orders o LEFT JOIN payments p \
               ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '3' SECOND;\n",
            orders.path().display(),
            payments.path().display(),
            pairs.path().display()
        ),
    )
    .unwrap();
    let brook = || spawn_checkpointed(&script, checkpoints.path());
    // 30 files a side, 10 rows each, 1 s of event time per file; a
    // payment 0-4 s after its order (those after 3 s do not match), some
    // orders without one. The payments' file of second n comes with the
    // orders' file of second n + 1, so pairs span files and runs.
    const FILES: i64 = 30;
    let mut rng = crate::common::Rng(0x5eed_0025);
    let mut order_rows = Vec::new();
    let mut payment_rows = Vec::new();
    for n in 0..FILES {
        for i in 0..10 {
            let seq = n * 10 + i;
            let at = n * 1_000 + i * 50;
            order_rows.push((n, seq, at));
            if rng.below(4) > 0 {
                payment_rows.push((n, seq, at + rng.below(4_000) as i64));
            }
        }
    }
    let mut expected: Vec<(i64, i64)> = Vec::new();
    for (_, o, ot) in &order_rows {
        let matched: Vec<i64> = payment_rows
            .iter()
            .filter(|(_, p, pt)| p == o && (0..=3_000).contains(&(pt - ot)))
            .map(|(_, p, _)| *p)
            .collect();
        if matched.is_empty() {
            expected.push((*o, -1));
        }
        expected.extend(matched.into_iter().map(|p| (*o, p)));
    }
    expected.sort_unstable();
    let mut first = Some(brook());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let writer = {
        let (orders_dir, payments_dir) =
            (orders.path().to_path_buf(), payments.path().to_path_buf());
        std::thread::spawn(move || {
            let put = put_whole;
            let csv = |rows: Vec<(i64, i64, i64)>| -> String {
                rows.iter()
                    .map(|(_, seq, at)| format!("{seq},{seq},{}\n", timestamp(*at)))
                    .collect()
            };
            for n in 0..=FILES {
                let of = |rows: &[(i64, i64, i64)], file: i64| {
                    rows.iter()
                        .filter(|r| r.0 == file)
                        .copied()
                        .collect::<Vec<_>>()
                };
                if n < FILES {
                    put(&orders_dir, format!("o{n:03}.csv"), csv(of(&order_rows, n)));
                }
                if n > 0 {
                    put(
                        &payments_dir,
                        format!("p{:03}.csv", n - 1),
                        csv(of(&payment_rows, n - 1)),
                    );
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            // Far ahead on both: every order's 3 seconds are over.
            put(
                &orders_dir,
                "o999.csv".into(),
                format!("-1,-1,{}\n", timestamp(1_000_000)),
            );
            put(
                &payments_dir,
                "p999.csv".into(),
                format!("-2,-2,{}\n", timestamp(1_000_000)),
            );
        })
    };
    let mut rng = crate::common::Rng(0xfeed_0025);
    for _ in 0..5 {
        let mut child = first.take().unwrap_or_else(brook);
        tokio::time::sleep(Duration::from_millis(400 + rng.below(900))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    writer.join().unwrap();
    let mut child = brook();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        seen = pair_rows(pairs.path());
        seen.retain(|(o, _)| *o >= 0);
        if seen.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = pair_rows(pairs.path());
    after.retain(|(o, _)| *o >= 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&script);
    assert_eq!(seen, expected, "pairs lost or written twice");
    assert_eq!(after, expected, "pairs written after the exact set");
}

/// The record batches of the whole Parquet files in `dir` (a file being
/// written is skipped).
fn parquet_batches(dir: &Path) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut batches = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(|batch| batch.unwrap()));
    }
    batches
}

/// `brook run script --checkpoint dir`, its output discarded.
pub(crate) fn spawn_checkpointed(script: &Path, checkpoints: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["run", script.to_str().unwrap(), "--checkpoint"])
        .arg(checkpoints)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Writes `text` to `dir/name` whole: under a hidden name (never read),
/// then renamed.
fn put_whole(dir: &Path, name: String, text: String) {
    let hidden = dir.join(format!(".{name}"));
    std::fs::write(&hidden, text).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}
