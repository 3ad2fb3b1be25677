//! Which rows a batch holds, however they arrive: in one burst, as a trickle
//! of tiny writes that cut lines in two, or all just before the tick. A row
//! the stream received before a tick is in that tick's batch (or an earlier
//! one), never in two; a batch may hold more rows than the stream's bound
//! lets wait at once; a slow query and a fast one on one stream get the same
//! batches.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::{BatchOutput, StreamContext};
use chrono::{DateTime, Utc};
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{
    DEADLINE, Rng, collect_all, line_server, next_batch, port_of, recording_warnings, rows, start,
    word_totals,
};

/// The batch interval of the arrival patterns: long next to a write.
const INTERVAL: Duration = Duration::from_secs(1);

const WORDS: [&str; 7] = [
    "ember", "fjord", "glade", "heath", "inlet", "knoll", "marsh",
];

/// The word of row `id` (a fixed scramble, so the batches' counts differ).
fn word_of(id: i64) -> &'static str {
    WORDS[((id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % WORDS.len()]
}

/// CSV lines `id,word` for `ids`.
fn csv_lines(ids: std::ops::Range<i64>) -> Vec<u8> {
    let mut text: Vec<u8> = Vec::new();
    for id in ids {
        writeln!(text, "{id},{}", word_of(id)).unwrap();
    }
    text
}

/// The word counts of rows `ids`.
fn words_of(ids: std::ops::RangeInclusive<i64>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(word_of(id).to_string()).or_insert(0) += 1;
    }
    counts
}

/// Per batch: how many rows, the lowest and highest id, and their sum.
fn ranges_sql(stream: &str) -> String {
    format!("SELECT count(*) AS n, min(id) AS lo, max(id) AS hi, sum(id) AS total FROM {stream}")
}

/// The ids of each non-empty batch of a [`ranges_sql`] query, checking that
/// each batch holds exactly the ids `lo..=hi` (its `rows_in` of them), and
/// that the batches follow each other from 0 without a gap or an overlap.
fn id_ranges(what: &str, outputs: &[BatchOutput]) -> Vec<(i64, i64)> {
    let mut ranges = Vec::new();
    let mut next = 0;
    for output in outputs {
        let result = rows(output);
        if output.rows_in == 0 {
            assert!(
                result.is_empty() || result[0][0] == "0",
                "{what}: empty batch {} counted rows: {result:?}",
                output.batch_number
            );
            continue;
        }
        assert_eq!(
            result.len(),
            1,
            "{what}: batch {}: {result:?}",
            output.batch_number
        );
        let number = |column: usize| {
            result[0][column]
                .parse::<i64>()
                .unwrap_or_else(|_| panic!("{what}: batch {}: {result:?}", output.batch_number))
        };
        let (n, lo, hi, total) = (number(0), number(1), number(2), number(3));
        assert_eq!(
            n as usize, output.rows_in,
            "{what}: batch {} counted {n} rows of its {}",
            output.batch_number, output.rows_in
        );
        assert_eq!(
            (lo, hi),
            (next, next + n - 1),
            "{what}: batch {} holds ids {lo}..={hi} ({n} rows); they should follow on from {next}",
            output.batch_number
        );
        assert_eq!(
            total,
            (lo + hi) * n / 2,
            "{what}: batch {} holds {n} rows between {lo} and {hi}, not each id once",
            output.batch_number
        );
        next = hi + 1;
        ranges.push((lo, hi));
    }
    ranges
}

/// The `rows_in` of each non-empty batch, in order.
fn non_empty_sizes(outputs: &[BatchOutput]) -> Vec<usize> {
    outputs
        .iter()
        .map(|o| o.rows_in)
        .filter(|rows| *rows > 0)
        .collect()
}

/// What the scripted sender does, in order.
enum Step {
    /// Writes the bytes (one `write_all`; the socket has `TCP_NODELAY`).
    Write(Vec<u8>),
    Sleep(Duration),
    /// Waits until a batch comes out after this step starts: a tick has
    /// just passed.
    AwaitTick,
    /// Records the wall-clock time (just before a send).
    Mark,
}

/// A scripted server: its address, the channel that tells it to go and then
/// that batches came out, and the times of its [`Step::Mark`]s.
struct Scripted {
    address: String,
    go: std::sync::mpsc::Sender<()>,
    marks: Arc<Mutex<Vec<DateTime<Utc>>>>,
}

/// A server that, once told to go, runs `steps` on its first client, then
/// closes. Every `()` sent on `go` after the first is a batch that came out
/// ([`Step::AwaitTick`]).
fn scripted_server(steps: Vec<Step>) -> Scripted {
    let (go, signals) = std::sync::mpsc::channel::<()>();
    let marks = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&marks);
    let address = line_server(move |mut client| {
        client.set_nodelay(true).ok();
        // Nothing is sent before the test has started its queries.
        if signals.recv_timeout(DEADLINE).is_err() {
            return;
        }
        for step in steps {
            match step {
                Step::Write(bytes) => {
                    if client.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Step::Sleep(pause) => std::thread::sleep(pause),
                Step::AwaitTick => {
                    while signals.try_recv().is_ok() {}
                    if signals.recv_timeout(DEADLINE).is_err() {
                        return;
                    }
                }
                Step::Mark => recorded.lock().unwrap().push(Utc::now()),
            }
        }
        // Dropping the client closes the connection: the stream ends.
    });
    Scripted { address, go, marks }
}

/// One arrival pattern's run: a socket stream of `id,word` CSV lines read
/// by two queries, a [`ranges_sql`] one and a word count.
struct Run {
    ranges: Vec<BatchOutput>,
    words: Vec<BatchOutput>,
    /// Looks at the stream while it ran: the wall-clock time just after
    /// each look, and the rows the stream had received by then.
    received: Vec<(DateTime<Utc>, u64)>,
    marks: Vec<DateTime<Utc>>,
    warnings: Vec<String>,
}

async fn run_pattern(steps: Vec<Step>) -> Run {
    let Scripted { address, go, marks } = scripted_server(steps);
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(INTERVAL, warn);
    ctx.sql(&format!(
        "CREATE STREAM s (id BIGINT, word TEXT) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let mut ranges = start(&ctx, &ranges_sql("s")).await;
    let words = start(&ctx, "SELECT word, count(*) AS count FROM s GROUP BY word").await;
    // Both queries read the stream: the sender may begin.
    go.send(()).unwrap();
    let done = Cell::new(false);
    let ranges_outputs = async {
        let mut outputs = Vec::new();
        while let Some(output) = next_batch(&mut ranges).await {
            outputs.push(output.expect("batch"));
            // A tick has passed: a sender waiting for one goes on.
            let _ = go.send(());
        }
        done.set(true);
        outputs
    };
    let monitor = async {
        let mut received = Vec::new();
        while !done.get() {
            let rows = ctx
                .streams()
                .iter()
                .find(|stream| stream.name == "s")
                .map_or(0, |stream| stream.rows_received);
            received.push((Utc::now(), rows));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        received
    };
    let (ranges, words, received) = tokio::join!(ranges_outputs, collect_all(words), monitor);
    let marks = marks.lock().unwrap().clone();
    let warnings = warnings.lock().unwrap().clone();
    Run {
        ranges,
        words,
        received,
        marks,
        warnings,
    }
}

/// What holds for every pattern: each row in exactly one batch, batches in
/// order, both queries with the same batches, each batch's word counts
/// those of its rows, and every row the stream had received before a tick
/// in that tick's batch or an earlier one.
fn check_run(pattern: &str, lines: i64, run: &Run) {
    assert!(run.warnings.is_empty(), "{pattern}: {:#?}", run.warnings);
    let ranges = id_ranges(pattern, &run.ranges);
    assert_eq!(
        ranges.last().map_or(0, |(_, hi)| hi + 1),
        lines,
        "{pattern}: every row, once: {ranges:?}"
    );
    assert_eq!(
        run.ranges.iter().map(|o| o.rows_in).sum::<usize>(),
        lines as usize,
        "{pattern}"
    );
    let word_batches: Vec<&BatchOutput> = run.words.iter().filter(|o| o.rows_in > 0).collect();
    assert_eq!(
        word_batches.iter().map(|o| o.rows_in).collect::<Vec<_>>(),
        ranges
            .iter()
            .map(|(lo, hi)| (hi - lo + 1) as usize)
            .collect::<Vec<_>>(),
        "{pattern}: both queries of the stream got the same batches"
    );
    for (output, &(lo, hi)) in word_batches.iter().zip(&ranges) {
        assert_eq!(
            word_totals(std::slice::from_ref(*output)),
            words_of(lo..=hi),
            "{pattern}: the word count's batch {} is not the words of ids {lo}..={hi}",
            output.batch_number
        );
    }
    assert_eq!(
        word_totals(&run.words),
        words_of(0..=lines - 1),
        "{pattern}"
    );
    let mut cumulative = 0;
    for output in &run.ranges {
        cumulative += output.rows_in as u64;
        // Looks that ended before the tick: those rows had arrived.
        let arrived = run
            .received
            .iter()
            .filter(|(seen, _)| *seen < output.batch_time)
            .map(|(_, rows)| *rows)
            .max()
            .unwrap_or(0);
        assert!(
            cumulative >= arrived,
            "{pattern}: {arrived} rows had arrived before the tick of batch {} ({}), but the batches up to it hold {cumulative}",
            output.batch_number,
            output.batch_time
        );
    }
    eprintln!(
        "{pattern}: batches of {:?} rows",
        ranges
            .iter()
            .map(|(lo, hi)| hi - lo + 1)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_batch_holds_the_same_rows_whatever_the_arrival_pattern() {
    // (i) One burst, sent just after a tick, then the socket closes.
    const BURST: i64 = 20_000;
    let burst = vec![
        Step::AwaitTick,
        Step::Mark,
        Step::Write(csv_lines(0..BURST)),
    ];

    // (ii) A trickle of 1- to 5-byte writes (most lines cut in two or
    // more), over about 2.5 intervals.
    const TRICKLE: i64 = 3_000;
    let text = csv_lines(0..TRICKLE);
    let mut rng = Rng(0x7a11_0c4e_5eed_0001);
    let mut trickle = Vec::new();
    let mut offset = 0;
    let mut writes_since_pause = 0;
    while offset < text.len() {
        let size = (1 + rng.below(5) as usize).min(text.len() - offset);
        trickle.push(Step::Write(text[offset..offset + size].to_vec()));
        offset += size;
        writes_since_pause += 1;
        if writes_since_pause == 20 {
            trickle.push(Step::Sleep(Duration::from_millis(5)));
            writes_since_pause = 0;
        }
    }

    // (iii) Groups sent at the very end of an interval (most of it slept
    // away after a tick), each group's last line cut in two: its first
    // part before the tick, its rest after.
    const GROUP: i64 = 5_000;
    const GROUPS: i64 = 3;
    let mut late = Vec::new();
    let mut rest_of_line: Vec<u8> = Vec::new();
    for group in 0..GROUPS {
        late.push(Step::AwaitTick);
        late.push(Step::Write(std::mem::take(&mut rest_of_line)));
        late.push(Step::Sleep(INTERVAL * 17 / 20));
        late.push(Step::Mark);
        let mut text = csv_lines(group * GROUP..(group + 1) * GROUP);
        rest_of_line = text.split_off(text.len() - 4);
        late.push(Step::Write(text));
    }
    late.push(Step::AwaitTick);
    late.push(Step::Write(rest_of_line));

    let (burst, trickle, late) =
        tokio::join!(run_pattern(burst), run_pattern(trickle), run_pattern(late));
    check_run("burst", BURST, &burst);
    check_run("trickle", TRICKLE, &trickle);
    check_run("end of interval", GROUP * GROUPS, &late);

    // The burst was sent within one interval and the socket closed: unless
    // a tick fell while it was on its way (a stalled machine), it is one
    // batch, the last, cut at once when the stream ended.
    let sent = burst.marks[0];
    let cut_after_sending: Vec<&BatchOutput> = burst
        .ranges
        .iter()
        .filter(|o| o.batch_time > sent)
        .collect();
    if cut_after_sending.len() == 1 {
        assert_eq!(cut_after_sending[0].rows_in, BURST as usize);
        assert_eq!(
            burst.ranges.last().map(|o| o.batch_number),
            Some(cut_after_sending[0].batch_number)
        );
    } else {
        eprintln!(
            "burst: {} ticks fell while it was on its way; not checked as one batch",
            cut_after_sending.len().saturating_sub(1)
        );
    }
}

#[tokio::test]
async fn a_batch_larger_than_the_inbox_bound_is_taken_whole_within_its_interval() {
    const LINES: i64 = 100_000;
    const BOUND: usize = 1_000;
    let (close, closing) = std::sync::mpsc::channel::<()>();
    let (wrote, written) = std::sync::mpsc::channel::<DateTime<Utc>>();
    let address = line_server(move |mut client| {
        let mut text: Vec<u8> = Vec::new();
        for id in 0..LINES {
            writeln!(text, "{id}").unwrap();
        }
        if client.write_all(&text).is_err() {
            return;
        }
        let _ = wrote.send(Utc::now());
        // The connection stays open until the test has its first batch.
        let _ = closing.recv_timeout(DEADLINE);
    });
    let ctx = StreamContext::new(Duration::from_secs(3));
    ctx.sql(&format!(
        "CREATE STREAM big (id BIGINT) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv', max_pending_rows = '{BOUND}')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, &ranges_sql("big")).await;
    let first = loop {
        let output = next_batch(&mut query)
            .await
            .expect("the stream is still open")
            .expect("batch");
        if output.rows_in > 0 {
            break output;
        }
    };
    let written_at = written.try_recv().ok();
    // The query took the rows while they arrived: the reader never waited
    // for the tick, and the first batch holds all 100,000 rows, 100 times
    // what may wait at once.
    assert_eq!(
        first.rows_in, LINES as usize,
        "batch {} (tick at {}); the sender had written every line at {written_at:?}",
        first.batch_number, first.batch_time
    );
    assert_eq!(
        id_ranges("first batch", std::slice::from_ref(&first)),
        vec![(0, LINES - 1)]
    );
    let stream = ctx.streams().into_iter().find(|s| s.name == "big").unwrap();
    assert_eq!(stream.limits.max_pending_rows, BOUND);
    assert!(
        stream.peak_pending_rows > 0 && stream.peak_pending_rows <= BOUND as u64,
        "the bound held: {} rows waited",
        stream.peak_pending_rows
    );

    // The peer closes: the stream ends, with nothing more.
    close.send(()).ok();
    let rest = collect_all(query).await;
    assert_eq!(rest.iter().map(|o| o.rows_in).sum::<usize>(), 0, "{rest:?}");
    let stream = ctx.streams().into_iter().find(|s| s.name == "big").unwrap();
    assert_eq!(stream.state, "closed");
    assert_eq!(stream.rows_received, LINES as u64);
}

#[tokio::test]
async fn two_queries_on_one_stream_one_slow_both_see_every_row_of_every_batch() {
    const BOUND: usize = 2_000;
    const PHASES: i64 = 4;
    const ITEMS_PER_PHASE: i64 = 8;
    const ITEM_ROWS: i64 = 500;
    const ROWS: i64 = PHASES * ITEMS_PER_PHASE * ITEM_ROWS;
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM nums (id BIGINT) WITH (connector = 'queue', max_pending_rows = '{BOUND}')"
    ))
    .await
    .unwrap();
    let queue = ctx.queue("nums").expect("a queue stream");
    let mut fast = start(&ctx, &ranges_sql("nums")).await;
    let mut slow = start(
        &ctx,
        "SELECT id % 10 AS k, count(*) AS c, sum(id) AS s FROM nums GROUP BY k",
    )
    .await;
    let (fast_rows, mut fast_rows_seen) = tokio::sync::watch::channel(0usize);

    // Each phase pushes twice the bound (waiting for room), then waits for a
    // batch holding its last row to come out: at least one batch per phase.
    let producer = async {
        let mut pushed = 0;
        for phase in 0..PHASES {
            for item in 0..ITEMS_PER_PHASE {
                let from = (phase * ITEMS_PER_PHASE + item) * ITEM_ROWS;
                let batch = RecordBatch::try_new(
                    queue.schema(),
                    vec![Arc::new(Int64Array::from_iter_values(
                        from..from + ITEM_ROWS,
                    ))],
                )
                .unwrap();
                tokio::time::timeout(DEADLINE, queue.push_wait(batch))
                    .await
                    .expect("room in time")
                    .unwrap();
            }
            pushed += (ITEMS_PER_PHASE * ITEM_ROWS) as usize;
            tokio::time::timeout(DEADLINE, fast_rows_seen.wait_for(|rows| *rows >= pushed))
                .await
                .expect("the phase's rows came out in time")
                .expect("the fast query runs");
        }
        queue.close();
    };
    let fast_outputs = async {
        let mut outputs = Vec::new();
        let mut rows_in = 0;
        while let Some(output) = next_batch(&mut fast).await {
            let output = output.expect("batch");
            rows_in += output.rows_in;
            let _ = fast_rows.send(rows_in);
            outputs.push(output);
        }
        outputs
    };
    // The slow one: its consumer takes 300 ms over each result.
    let slow_outputs = async {
        let mut outputs = Vec::new();
        while let Some(output) = next_batch(&mut slow).await {
            outputs.push(output.expect("batch"));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        outputs
    };
    let ((), fast_outputs, slow_outputs) = tokio::join!(producer, fast_outputs, slow_outputs);

    let ranges = id_ranges("fast query", &fast_outputs);
    assert_eq!(
        ranges.last().map(|(_, hi)| hi + 1),
        Some(ROWS),
        "{ranges:?}"
    );
    assert!(
        ranges.len() >= PHASES as usize,
        "one batch per phase at least: {ranges:?}"
    );
    assert_eq!(
        non_empty_sizes(&fast_outputs).iter().sum::<usize>(),
        ROWS as usize
    );
    assert_eq!(
        non_empty_sizes(&slow_outputs),
        non_empty_sizes(&fast_outputs),
        "both queries got the same batches"
    );

    // Each of the slow query's batches holds the rows of the fast query's
    // batch of the same rank, by residue.
    let by_residue = |ids: std::ops::RangeInclusive<i64>| {
        let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for id in ids {
            let group = groups.entry(id % 10).or_default();
            group.0 += 1;
            group.1 += id;
        }
        groups
    };
    let slow_batches: Vec<&BatchOutput> = slow_outputs.iter().filter(|o| o.rows_in > 0).collect();
    let mut totals: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (output, &(lo, hi)) in slow_batches.iter().zip(&ranges) {
        let groups: BTreeMap<i64, (i64, i64)> = rows(output)
            .iter()
            .map(|row| {
                let number = |i: usize| row[i].parse::<i64>().unwrap();
                (number(0), (number(1), number(2)))
            })
            .collect();
        assert_eq!(
            groups,
            by_residue(lo..=hi),
            "slow query's batch {} should hold ids {lo}..={hi}",
            output.batch_number
        );
        for (k, (c, s)) in groups {
            let total = totals.entry(k).or_default();
            total.0 += c;
            total.1 += s;
        }
    }
    assert_eq!(totals, by_residue(0..=ROWS - 1));

    // What waited for a batch stayed within the bound throughout.
    let stream = ctx
        .streams()
        .into_iter()
        .find(|s| s.name == "nums")
        .unwrap();
    assert!(
        stream.peak_pending_rows > 0 && stream.peak_pending_rows <= BOUND as u64,
        "{} rows waited (max_pending_rows = {BOUND})",
        stream.peak_pending_rows
    );
    assert_eq!(stream.rows_received, ROWS as u64);
    assert_eq!(stream.rows_pending, 0);
}

/// One value per batch of a one-row result (`s`, `n`), by batch number.
fn sums_by_batch(outputs: &[BatchOutput]) -> BTreeMap<u64, (i64, i64)> {
    let mut sums = BTreeMap::new();
    for output in outputs {
        let result = rows(output);
        assert_eq!(result.len(), 1, "batch {}: {result:?}", output.batch_number);
        let number = |cell: &str| {
            if cell == "NULL" {
                0
            } else {
                cell.parse::<i64>().unwrap()
            }
        };
        // An output at the end of input repeats the last batch's number;
        // the first one of each batch is the batch's own.
        sums.entry(output.batch_number)
            .or_insert((number(&result[0][0]), number(&result[0][1])));
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_running_aggregates_read_the_same_pieces_as_a_per_batch_query() {
    // Items of random sizes pushed at random moments, several per interval:
    // each batch arrives in pieces while its queries run. A per-batch
    // query, a running total and a sliding window of three batches (each
    // way) read one stream; the running total after batch k must be the
    // sum of the per-batch results up to k, and the window the sum of the
    // last three.
    for incremental in [true, false] {
        let ctx = StreamContext::new(Duration::from_millis(150));
        ctx.set_incremental_windows(incremental);
        ctx.sql("CREATE STREAM events (v BIGINT) WITH (connector = 'queue')")
            .await
            .unwrap();
        let per_batch = start(&ctx, "SELECT SUM(v) AS s, COUNT(*) AS n FROM events").await;
        let running = start(
            &ctx,
            "SELECT SUM(v) AS s, COUNT(*) AS n FROM RUNNING(events)",
        )
        .await;
        let window = start(
            &ctx,
            "SELECT SUM(v) AS s, COUNT(*) AS n \
             FROM HOP(events, INTERVAL '150 milliseconds', INTERVAL '450 milliseconds')",
        )
        .await;
        let consumers = [per_batch, running, window].map(|query| tokio::spawn(collect_all(query)));
        let mut rng = Rng(0x5eed_0013 + incremental as u64);
        let (mut total, mut count) = (0i64, 0i64);
        for _ in 0..120 {
            let values: Vec<String> = (0..1 + rng.below(40))
                .map(|_| {
                    let v = rng.below(1_000) as i64;
                    total += v;
                    count += 1;
                    format!("({v})")
                })
                .collect();
            ctx.sql(&format!("INSERT INTO events VALUES {}", values.join(", ")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(rng.below(25))).await;
        }
        ctx.close_queues();
        let [per_batch, running, window] = consumers;
        let per_batch = sums_by_batch(&per_batch.await.unwrap());
        let running = sums_by_batch(&running.await.unwrap());
        let window = sums_by_batch(&window.await.unwrap());
        let what = format!("incremental = {incremental}");
        assert_eq!(
            per_batch
                .values()
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            (total, count),
            "{what}: every row once"
        );
        assert!(
            per_batch.values().filter(|(_, n)| *n > 0).count() >= 5,
            "{what}: the rows came over several batches: {per_batch:?}"
        );
        let numbers: Vec<u64> = per_batch.keys().copied().collect();
        let mut so_far = (0, 0);
        for (k, &number) in numbers.iter().enumerate() {
            let own = per_batch[&number];
            so_far = (so_far.0 + own.0, so_far.1 + own.1);
            assert_eq!(
                running.get(&number),
                Some(&so_far),
                "{what}: running total after batch {number}"
            );
            let last_three = numbers[k.saturating_sub(2)..=k]
                .iter()
                .map(|n| per_batch[n])
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            assert_eq!(
                window.get(&number),
                Some(&last_three),
                "{what}: window ending with batch {number}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reading_one_stream_twice_sees_the_whole_batch_in_both_scans() {
    // A self-join per batch, next to a per-batch count of each key: the
    // join's count must be the sum of each key's count squared, batch by
    // batch, whatever pieces the batch arrived in.
    let ctx = StreamContext::new(Duration::from_millis(150));
    ctx.sql("CREATE STREAM keys (k BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let join = start(
        &ctx,
        "SELECT count(*) AS n FROM keys a JOIN keys b ON a.k = b.k",
    )
    .await;
    let counts = start(&ctx, "SELECT k, count(*) AS c FROM keys GROUP BY k").await;
    let [join, counts] = [join, counts].map(|query| tokio::spawn(collect_all(query)));
    let mut rng = Rng(0x5e1f_0013);
    for _ in 0..60 {
        let values: Vec<String> = (0..1 + rng.below(20))
            .map(|_| format!("({})", rng.below(7)))
            .collect();
        ctx.sql(&format!("INSERT INTO keys VALUES {}", values.join(", ")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
    ctx.close_queues();
    let join = join.await.unwrap();
    let counts = counts.await.unwrap();
    let mut expected: BTreeMap<u64, i64> = BTreeMap::new();
    for output in &counts {
        let squares: i64 = rows(output)
            .iter()
            .map(|row| row[1].parse::<i64>().unwrap().pow(2))
            .sum();
        expected.entry(output.batch_number).or_insert(squares);
    }
    let mut got: BTreeMap<u64, i64> = BTreeMap::new();
    for output in &join {
        got.entry(output.batch_number)
            .or_insert(rows(output)[0][0].parse().unwrap());
    }
    assert!(
        expected.values().filter(|n| **n > 0).count() >= 3,
        "several non-empty batches: {expected:?}"
    );
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_returns_its_rows_reads_at_most_the_bound_before_each_tick() {
    // The same 100,000 lines as above, to a query that returns every row:
    // its plan keeps what it reads until the batch ends, so it reads at most
    // the stream's bound before each tick and the rest waits in the inbox,
    // holding the sender back, as when a batch waited whole for its tick.
    const LINES: i64 = 100_000;
    const BOUND: usize = 1_000;
    let address = line_server(move |mut client| {
        let mut text: Vec<u8> = Vec::new();
        for id in 0..LINES {
            writeln!(text, "{id}").unwrap();
        }
        let _ = client.write_all(&text);
    });
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM big (id BIGINT) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv', max_pending_rows = '{BOUND}')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let outputs = collect_all(start(&ctx, "SELECT id FROM big").await).await;
    let mut next = 0i64;
    for output in &outputs {
        assert!(
            output.rows_in <= 4 * BOUND,
            "batch {} held {} rows",
            output.batch_number,
            output.rows_in
        );
        let ids: Vec<i64> = rows(output).iter().map(|r| r[0].parse().unwrap()).collect();
        assert_eq!(ids.len(), output.rows_in);
        assert_eq!(ids, (next..next + ids.len() as i64).collect::<Vec<_>>());
        next += ids.len() as i64;
    }
    assert_eq!(next, LINES, "every row once, in order");
    let stream = ctx.streams().into_iter().find(|s| s.name == "big").unwrap();
    assert!(stream.peak_pending_rows <= BOUND as u64);
}

#[tokio::test]
async fn explain_says_whether_a_query_reads_its_batch_as_it_arrives() {
    let ctx = StreamContext::new(Duration::from_secs(1));
    ctx.sql("CREATE STREAM s (word TEXT, v BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    for sql in [
        "SELECT word, count(*) AS n FROM s GROUP BY word",
        "SELECT sum(v) AS total FROM s WHERE v > 0",
        "SELECT word, count(*) AS n FROM (SELECT unnest(string_to_array(word, ' ')) AS word FROM s) GROUP BY word",
    ] {
        let plan = crate::common::explain(&ctx, sql).await;
        assert!(
            plan.contains("reads each batch's rows as they arrive"),
            "{sql}:\n{plan}"
        );
    }
    for sql in [
        "SELECT word, v FROM s",
        "SELECT word FROM s ORDER BY v",
        "SELECT count(*) AS n FROM (SELECT word FROM s ORDER BY v LIMIT 10)",
    ] {
        let plan = crate::common::explain(&ctx, sql).await;
        assert!(
            plan.contains("reads at most the streams' bounds before each tick"),
            "{sql}:\n{plan}"
        );
    }
}

/// 100,000 events `(id, ts)`, one a millisecond from 2026-01-01, sent at
/// once to a stream `ev` that lets 1,000 rows wait, read by `sql`: its
/// first batch must take them all, and its rows in the end, sorted, are
/// returned.
async fn fold_events_while_they_arrive(sql: &str) -> Vec<Vec<String>> {
    const EVENTS: i64 = 100_000;
    const BOUND: usize = 1_000;
    let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let (close, closing) = std::sync::mpsc::channel::<()>();
    let address = line_server(move |mut client| {
        let mut text: Vec<u8> = Vec::new();
        for id in 0..EVENTS {
            let ts = base + chrono::Duration::milliseconds(id);
            writeln!(text, "{id},{}", ts.format("%Y-%m-%d %H:%M:%S%.3f")).unwrap();
        }
        if client.write_all(&text).is_err() {
            return;
        }
        let _ = closing.recv_timeout(DEADLINE);
    });
    let ctx = StreamContext::new(Duration::from_secs(3));
    ctx.sql(&format!(
        "CREATE STREAM ev (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv', max_pending_rows = '{BOUND}')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, sql).await;
    let mut outputs = Vec::new();
    let first = loop {
        let output = next_batch(&mut query)
            .await
            .expect("the stream is still open")
            .expect("batch");
        let rows_in = output.rows_in;
        outputs.push(output);
        if rows_in > 0 {
            break rows_in;
        }
    };
    assert_eq!(first, EVENTS as usize, "the first batch folded every event");
    close.send(()).ok();
    outputs.extend(collect_all(query).await);
    let mut got: Vec<Vec<String>> = outputs.iter().flat_map(rows).collect();
    got.sort();
    let stream = ctx.streams().into_iter().find(|s| s.name == "ev").unwrap();
    assert!(
        stream.peak_pending_rows <= BOUND as u64,
        "the bound held: {} rows waited",
        stream.peak_pending_rows
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_time_window_folds_a_batch_larger_than_the_bound_while_it_arrives() {
    // A TUMBLE count folds the rows into its panes as they arrive, so its
    // first batch takes all 100,000 (a window that kept its rows would
    // read at most the bound before each tick), and each 10-second window
    // counts exactly its 10,000 events.
    let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let ctx = StreamContext::new(Duration::from_secs(1));
    ctx.sql(
        "CREATE STREAM ev (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'queue')",
    )
    .await
    .unwrap();
    let sql: &str = "SELECT window_start, COUNT(*) AS n, SUM(id) AS ids FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start";
    let plan = crate::common::explain(&ctx, sql).await;
    assert!(
        plan.contains("folded into their panes while the batch arrives"),
        "{plan}"
    );
    let recompute = crate::common::explain(
        &ctx,
        "SELECT window_start, COUNT(DISTINCT id) AS ids FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start",
    )
    .await;
    assert!(
        recompute.contains("a batch is read whole at its tick"),
        "{recompute}"
    );
    let windows = fold_events_while_they_arrive(sql).await;
    let expected: Vec<Vec<String>> = (0..10)
        .map(|w| {
            let start = base + chrono::Duration::seconds(10 * w);
            let ids: i64 = (w * 10_000..(w + 1) * 10_000).sum();
            vec![
                start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "10000".to_string(),
                ids.to_string(),
            ]
        })
        .collect();
    assert_eq!(windows, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_sessions_fold_a_batch_larger_than_the_bound_while_it_arrives() {
    // Four keys, each an event every 4 ms, with 20 s without events after
    // the first 40 s: two sessions per key, exactly counted, all folded
    // from one batch.
    let sql = "SELECT id % 4 AS k, window_start, window_end, COUNT(*) AS n \
               FROM SESSION(ev, ts, INTERVAL '2' SECOND) \
               WHERE id < 40000 OR id >= 60000 \
               GROUP BY id % 4, window_start, window_end";
    let sessions = fold_events_while_they_arrive(sql).await;
    let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let at = |millis: i64| {
        (base + chrono::Duration::milliseconds(millis))
            .format("%Y-%m-%dT%H:%M:%S%.fZ")
            .to_string()
    };
    let mut expected = Vec::new();
    for k in 0..4 {
        for (first, last) in [(k, 39_996 + k), (60_000 + k, 99_996 + k)] {
            expected.push(vec![
                k.to_string(),
                at(first),
                at(last + 2_000),
                "10000".to_string(),
            ]);
        }
    }
    expected.sort();
    assert_eq!(sessions, expected);
}
