//! Windows (`HOP`, `TUMBLE`) and running aggregates (`RUNNING`) over queue
//! streams fed one item per batch, so every batch's content is known.
//! Each window query runs both ways, incremental and recompute, and both
//! must give the exact rows expected.

use std::time::Duration;

use brook::{BatchOutput, BrookError, StreamContext};

use crate::common::{Rng, collect_all, explain, rows, start};

const TICK: Duration = Duration::from_millis(50);

/// A context with a queue stream `events (word TEXT, v BIGINT)` holding
/// `batches`, one per tick, then closed.
fn events(batches: &[&[(&str, i64)]], incremental: bool, tick: Duration) -> StreamContext {
    crate::common::word_events(batches, incremental, tick, |_| {})
}

/// Each output's rows, each row's cells joined with `,`.
fn results(outputs: &[BatchOutput]) -> Vec<Vec<String>> {
    outputs
        .iter()
        .map(|o| rows(o).into_iter().map(|r| r.join(",")).collect())
        .collect()
}

/// Runs `sql` over `batches` both ways; checks both give `expected` and
/// returns the incremental run's outputs.
async fn both_ways(
    batches: &[&[(&str, i64)]],
    sql: &str,
    expected: &[&[&str]],
) -> Vec<BatchOutput> {
    let mut kept = Vec::new();
    for incremental in [true, false] {
        let ctx = events(batches, incremental, TICK);
        let outputs = collect_all(start(&ctx, sql).await).await;
        assert_eq!(
            results(&outputs),
            expected
                .iter()
                .map(|rows| rows.iter().map(|r| r.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "incremental = {incremental}: {sql}"
        );
        if incremental {
            kept = outputs;
        }
    }
    kept
}

const B1: &[(&str, i64)] = &[("a", 1), ("b", 2)];
const B2: &[(&str, i64)] = &[("a", 3)];
const B3: &[(&str, i64)] = &[("c", 4)];
const B4: &[(&str, i64)] = &[("b", 5)];
const B5: &[(&str, i64)] = &[("a", 6), ("a", 7)];
const B6: &[(&str, i64)] = &[("d", 8)];
const B7: &[(&str, i64)] = &[("b", 9)];

#[tokio::test]
async fn sliding_window_of_three_batches_sliding_by_one() {
    let outputs = both_ways(
        &[B1, B2, B3, B4, B5, B6],
        "SELECT word, COUNT(*) AS n, SUM(v) AS total \
         FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '150 milliseconds') \
         GROUP BY word ORDER BY word",
        &[
            // The first windows are not full yet.
            &["a,1,1", "b,1,2"],
            &["a,2,4", "b,1,2"],
            &["a,2,4", "b,1,2", "c,1,4"],
            // Batches 2-4.
            &["a,1,3", "b,1,5", "c,1,4"],
            // Batches 3-5.
            &["a,2,13", "b,1,5", "c,1,4"],
            // Batches 4-6: c has left the window.
            &["a,2,13", "b,1,5", "d,1,8"],
        ],
    )
    .await;
    for (index, output) in outputs.iter().enumerate() {
        let window = output.window.as_ref().expect("window bounds");
        assert_eq!(
            window.end - window.start,
            chrono::Duration::milliseconds(150)
        );
        assert_eq!(window.end, output.batch_time);
        let n = index as u64 + 1;
        assert_eq!(window.batches, (n.saturating_sub(3) + 1, n));
        assert!(output.retained.batches <= 3, "{:?}", output.retained);
    }
}

#[tokio::test]
async fn sliding_window_of_four_batches_sliding_by_two_ends_with_the_last_window() {
    let outputs = both_ways(
        &[B1, B2, B3, B4, B5, B6, B7],
        "SELECT word, lo, hi, window_end - window_start AS span FROM ( \
           SELECT word, MIN(v) AS lo, MAX(v) AS hi, window_start, window_end \
           FROM HOP(events, INTERVAL '100 milliseconds', INTERVAL '200 milliseconds') \
           GROUP BY word, window_start, window_end) ORDER BY word",
        &[
            // Batches 1-2 (emitted after batch 2, the first slide).
            &["a,1,3,PT0.2S", "b,2,2,PT0.2S"],
            // Batches 1-4.
            &["a,1,3,PT0.2S", "b,2,5,PT0.2S", "c,4,4,PT0.2S"],
            // Batches 3-6.
            &[
                "a,6,7,PT0.2S",
                "b,5,5,PT0.2S",
                "c,4,4,PT0.2S",
                "d,8,8,PT0.2S",
            ],
            // The streams end after batch 7: the window of batches 5-8.
            &["a,6,7,PT0.2S", "b,9,9,PT0.2S", "d,8,8,PT0.2S"],
        ],
    )
    .await;
    let windows: Vec<(u64, u64)> = outputs
        .iter()
        .map(|o| o.window.as_ref().expect("bounds").batches)
        .collect();
    assert_eq!(windows, vec![(1, 2), (1, 4), (3, 6), (5, 8)]);
    // The last window ends one batch interval after the last batch.
    let last = outputs.last().unwrap();
    let bounds = last.window.as_ref().unwrap();
    assert_eq!(
        bounds.end - last.batch_time,
        chrono::Duration::milliseconds(50)
    );
}

#[tokio::test]
async fn window_columns_hold_the_window_bounds() {
    for incremental in [true, false] {
        let ctx = events(&[B1, B2, B3], incremental, TICK);
        let sql = "SELECT CAST(window_start AS BIGINT) AS s, CAST(window_end AS BIGINT) AS e, COUNT(*) AS n \
                   FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') \
                   GROUP BY window_start, window_end";
        let outputs = collect_all(start(&ctx, sql).await).await;
        assert_eq!(outputs.len(), 3);
        for (output, n) in outputs.iter().zip(["2", "3", "2"]) {
            let bounds = output.window.as_ref().unwrap();
            assert_eq!(
                rows(output),
                vec![vec![
                    bounds.start.timestamp_millis().to_string(),
                    bounds.end.timestamp_millis().to_string(),
                    n.to_string()
                ]],
                "incremental = {incremental}"
            );
        }
    }
}

#[tokio::test]
async fn tumbling_windows_do_not_overlap_and_the_last_partial_window_is_emitted() {
    both_ways(
        &[B1, B2, B3, B4, B5, B6, B7],
        "SELECT word, COUNT(*) AS n FROM TUMBLE(events, INTERVAL '150 milliseconds') \
         GROUP BY word ORDER BY word",
        &[
            &["a,2", "b,1", "c,1"],
            &["a,2", "b,1", "d,1"],
            // Batch 7 alone: the streams ended before the window filled.
            &["b,1"],
        ],
    )
    .await;
}

#[tokio::test]
async fn queries_that_cannot_merge_partial_state_recompute_the_window() {
    both_ways(
        &[B1, B2, B3, B4, B5],
        "SELECT COUNT(DISTINCT word) AS words, median(v) AS mid \
         FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds')",
        &[&["2,1.5"], &["2,2.0"], &["2,3.5"], &["2,4.5"], &["2,6.0"]],
    )
    .await;
    both_ways(
        &[B1, B2, B3],
        "SELECT word, v FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') \
         ORDER BY v DESC LIMIT 2",
        &[&["b,2", "a,1"], &["a,3", "b,2"], &["c,4", "a,3"]],
    )
    .await;
}

#[tokio::test]
async fn explain_shows_the_window_and_whether_it_is_incremental() {
    let ctx = events(&[], true, TICK);
    let text = explain(
        &ctx,
        "SELECT word, COUNT(*) FROM HOP(events, INTERVAL '50 milliseconds', INTERVAL '150 milliseconds') GROUP BY word",
    )
    .await;
    assert!(
        text.contains("window: HOP slide 50ms size 150ms (3 batches"),
        "{text}"
    );
    assert!(
        text.contains("incremental: each batch is aggregated once"),
        "{text}"
    );
    assert!(text.contains("retains at most 3 panes"), "{text}");
    let text = explain(
        &ctx,
        "SELECT COUNT(DISTINCT word) FROM TUMBLE(events, INTERVAL '100 milliseconds')",
    )
    .await;
    // COUNT(DISTINCT) plans as two aggregates.
    assert!(
        text.contains("recompute (the query aggregates more than once)"),
        "{text}"
    );
    assert!(
        text.contains("a pane is one batch: retains at most 2 panes"),
        "{text}"
    );
    let text = explain(&ctx, "SELECT word FROM events").await;
    assert!(
        text.contains("per batch: the plan below runs once per micro-batch"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_window_arguments_are_located_errors() {
    let ctx = events(&[], true, Duration::from_secs(1));
    ctx.sql("CREATE TABLE fixed (x INT)").await.unwrap();
    let cases = [
        (
            "SELECT * FROM HOP(events, INTERVAL '1 second', INTERVAL '2.5 seconds')",
            "HOP: slide 1s and size 2.5s must be positive multiples of the batch interval (1s)",
        ),
        (
            "SELECT * FROM TUMBLE(events, INTERVAL '0 seconds')",
            "TUMBLE: size 0s must be a positive multiple of the batch interval (1s)",
        ),
        (
            "SELECT * FROM HOP(events, INTERVAL '3 seconds', INTERVAL '2 seconds')",
            "HOP: slide 3s and size 2s: the slide must not exceed the size",
        ),
        (
            "SELECT * FROM TUMBLE(fixed, INTERVAL '2 seconds')",
            "TUMBLE: 'fixed' is not a stream; windows read streams",
        ),
        (
            "SELECT * FROM HOP(events, INTERVAL '2 seconds')",
            "HOP: expected HOP(stream, INTERVAL 'slide', INTERVAL 'size'), got 2 arguments",
        ),
        (
            "SELECT * FROM TUMBLE(events, 5)",
            "TUMBLE: the size must be an interval such as INTERVAL '2 seconds', not Int64(5)",
        ),
        (
            "SELECT * FROM RUNNING(events, 'append')",
            "RUNNING: the output mode is 'complete' or 'update'",
        ),
        (
            "SELECT word FROM RUNNING(events)",
            "RUNNING needs a GROUP BY query whose aggregates merge",
        ),
    ];
    for (sql, expected) in cases {
        let err = match ctx.sql(sql).await {
            Err(err) => err,
            Ok(other) => panic!("{sql}: expected an error, got {other:?}"),
        };
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{sql}\n  gave: {text}\n  expected: {expected}"
        );
        let BrookError::Sql {
            location: Some(location),
            ..
        } = err
        else {
            panic!("{sql}: no location in {err:?}");
        };
        assert_eq!(location.line, 1, "{sql}");
    }
}

#[tokio::test]
async fn running_aggregates_in_complete_and_update_mode() {
    let batches = [B1, B2, B3, B4];
    for (sql, expected) in [
        (
            "SELECT word, COUNT(*) AS n, SUM(v) AS total, AVG(v) AS mean FROM RUNNING(events) \
             GROUP BY word ORDER BY word",
            vec![
                vec!["a,1,1,1.0", "b,1,2,2.0"],
                vec!["a,2,4,2.0", "b,1,2,2.0"],
                vec!["a,2,4,2.0", "b,1,2,2.0", "c,1,4,4.0"],
                vec!["a,2,4,2.0", "b,2,7,3.5", "c,1,4,4.0"],
            ],
        ),
        (
            "SELECT word, COUNT(*) AS n FROM RUNNING(events, 'update') GROUP BY word ORDER BY word",
            vec![vec!["a,1", "b,1"], vec!["a,2"], vec!["c,1"], vec!["b,2"]],
        ),
    ] {
        let ctx = events(&batches, true, TICK);
        let outputs = collect_all(start(&ctx, sql).await).await;
        assert_eq!(results(&outputs), expected, "{sql}");
        // One state row per group, however many rows came in.
        let state_rows: Vec<usize> = outputs.iter().map(|o| o.retained.rows).collect();
        assert_eq!(state_rows, vec![2, 2, 3, 3], "{sql}");
    }
}

/// Random batches of words and values.
fn random_batches(rng: &mut Rng, count: usize) -> Vec<Vec<(&'static str, i64)>> {
    const WORDS: [&str; 6] = ["ant", "bee", "cat", "dog", "eel", "fox"];
    (0..count)
        .map(|_| {
            let rows = rng.below(6) as usize;
            (0..rows)
                .map(|_| {
                    (
                        WORDS[rng.below(WORDS.len() as u64) as usize],
                        rng.below(100) as i64 - 20,
                    )
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn incremental_and_recompute_agree_on_random_input() {
    let queries = [
        "SELECT word, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS mean \
         FROM HOP(events, INTERVAL '30 milliseconds', INTERVAL '90 milliseconds') GROUP BY word ORDER BY word",
        "SELECT COUNT(*) AS n, SUM(v) AS s FROM HOP(events, INTERVAL '60 milliseconds', INTERVAL '120 milliseconds') WHERE v > 10",
        "SELECT word, COUNT(v) AS n FROM TUMBLE(events, INTERVAL '60 milliseconds') \
         GROUP BY word HAVING COUNT(v) > 1 ORDER BY n DESC, word LIMIT 3",
        "SELECT upper(word) AS w, v % 3 AS m, COUNT(*) AS n, window_end - window_start AS span \
         FROM HOP(events, INTERVAL '30 milliseconds', INTERVAL '120 milliseconds') \
         GROUP BY upper(word), v % 3, window_start, window_end ORDER BY w, m",
    ];
    let mut rng = Rng(0x5eed_1234_abcd);
    for round in 0..3 {
        let batches = random_batches(&mut rng, 14);
        let slices: Vec<&[(&str, i64)]> = batches.iter().map(Vec::as_slice).collect();
        for sql in queries {
            let mut results_both = Vec::new();
            for incremental in [true, false] {
                let ctx = events(&slices, incremental, Duration::from_millis(30));
                let outputs = collect_all(start(&ctx, sql).await).await;
                assert!(!outputs.is_empty());
                results_both.push(results(&outputs));
            }
            assert_eq!(results_both[0], results_both[1], "round {round}: {sql}");
        }
    }
}

#[tokio::test]
async fn retention_stays_at_the_window_size_over_a_thousand_batches() {
    let batches: Vec<Vec<(&str, i64)>> =
        (0..1000).map(|i| vec![("w", i as i64), ("x", 1)]).collect();
    let slices: Vec<&[(&str, i64)]> = batches.iter().map(Vec::as_slice).collect();
    for incremental in [true, false] {
        let ctx = events(&slices, incremental, Duration::from_millis(2));
        let outputs = collect_all(
            start(
                &ctx,
                "SELECT word, SUM(v) AS s FROM HOP(events, INTERVAL '2 milliseconds', INTERVAL '10 milliseconds') GROUP BY word ORDER BY word",
            )
            .await,
        )
        .await;
        assert_eq!(outputs.len(), 1000, "incremental = {incremental}");
        // Between batches a window of 5 batches sliding by 1 holds the 4
        // that the next window shares; 5 while a window is computed.
        let most = outputs.iter().map(|o| o.retained.batches).max().unwrap();
        assert_eq!(most, 4, "incremental = {incremental}");
        let most_rows = outputs.iter().map(|o| o.retained.rows).max().unwrap();
        // Raw: 2 rows per batch; panes: 2 groups per pane, plus at most
        // two merged panes of 2 groups.
        assert!(
            most_rows <= 14,
            "incremental = {incremental}: {most_rows} rows"
        );
        // The last window: batches 996-1000, w summing 995..=999.
        assert_eq!(
            rows(outputs.last().unwrap()),
            vec![
                vec!["w".to_string(), (995..1000).sum::<i64>().to_string()],
                vec!["x".to_string(), "5".to_string()]
            ]
        );
    }
}

#[tokio::test]
async fn a_join_of_two_windows_recomputes_over_both_and_mixing_windows_is_refused() {
    let ctx = StreamContext::new(TICK);
    for name in ["left_s", "right_s"] {
        ctx.sql(&format!(
            "CREATE STREAM {name} (k TEXT) WITH (connector = 'queue', one_at_a_time = 'true')"
        ))
        .await
        .unwrap();
    }
    for (left, right) in [("a", "a"), ("b", "a"), ("a", "c")] {
        ctx.sql(&format!("INSERT INTO left_s VALUES ('{left}')"))
            .await
            .unwrap();
        ctx.sql(&format!("INSERT INTO right_s VALUES ('{right}')"))
            .await
            .unwrap();
    }
    ctx.close_queues();
    let outputs = collect_all(
        start(
            &ctx,
            "SELECT l.k, COUNT(*) AS pairs \
             FROM HOP(left_s, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') AS l \
             JOIN HOP(right_s, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') AS r ON l.k = r.k \
             GROUP BY l.k ORDER BY l.k",
        )
        .await,
    )
    .await;
    // Windows: batches 1 (a|a), 1-2 (a,b|a,a), 2-3 (b,a|a,c).
    assert_eq!(
        results(&outputs),
        vec![vec!["a,1"], vec!["a,2"], vec!["a,1"]]
    );
    let err = ctx
        .sql(
            "SELECT * FROM HOP(left_s, INTERVAL '50 milliseconds', INTERVAL '100 milliseconds') \
             JOIN right_s ON true",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("stream 'right_s' is read without a window"),
        "{err}"
    );
}
