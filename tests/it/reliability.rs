//! Overload and backpressure, bounded queues, a silent peer, and the CSV
//! bad-input catalogue (types, NULL spellings, quoted newlines).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brook::{QueueOptions, SocketOptions, StreamContext, StreamLimits, line_schema};
use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

use crate::common::{
    DEADLINE, chunk_server, collect_all, line_server, port_of, recording_warnings, rows, start,
};

/// About 30 MB of lines: more than loopback's socket buffers can hide.
const LINES: i64 = 4_000_000;

#[tokio::test]
async fn a_source_far_faster_than_its_query_is_held_back_and_loses_nothing() {
    // The sender writes as fast as TCP lets it.
    let sender_done = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&sender_done);
    let address = line_server(move |mut client| {
        let mut text = String::with_capacity(32 << 20);
        for i in 0..LINES {
            text.push_str(&i.to_string());
            text.push('\n');
        }
        let started = Instant::now();
        client.write_all(text.as_bytes()).ok();
        done.store(true, Ordering::SeqCst);
        eprintln!("sender: {LINES} lines written in {:?}", started.elapsed());
    });
    let limits = StreamLimits {
        max_pending_rows: 50_000,
        max_pending_bytes: 4 << 20,
        max_batch_rows: Some(20_000),
    };
    let ctx = StreamContext::new(Duration::from_millis(10));
    ctx.register_socket(
        "numbers",
        &address,
        line_schema(),
        SocketOptions::default().with_limits(limits),
    )
    .unwrap();
    let mut query = start(&ctx, "SELECT line FROM numbers").await;
    let started = Instant::now();
    let mut next_expected = 0;
    let mut lags = Vec::new();
    let mut slow_rows = 0;
    let slow_phase = Duration::from_millis(25);
    let mut sender_done_after_slow_phase = None;
    while let Some(output) = tokio::time::timeout(DEADLINE, query.next()).await.unwrap() {
        let output = output.unwrap();
        assert!(
            output.rows_in <= 20_000,
            "a batch over max_batch_rows: {}",
            output.rows_in
        );
        for batch in &output.batches {
            let column = batch.column(0).as_string_view();
            for value in column.iter() {
                // Every row, once, in order.
                assert_eq!(
                    value.and_then(|v| v.parse::<i64>().ok()),
                    Some(next_expected)
                );
                next_expected += 1;
            }
        }
        lags.push(output.lag);
        // The first 20 batches: a consumer far slower than the source.
        if lags.len() <= 20 {
            slow_rows += output.rows_in;
            tokio::time::sleep(slow_phase).await;
        } else if sender_done_after_slow_phase.is_none() {
            sender_done_after_slow_phase = Some(sender_done.load(Ordering::SeqCst));
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(next_expected, LINES);
    // brook did not take everything in while its query was slow: the
    // sender was held back (TCP flow control) until the query caught up.
    assert_eq!(sender_done_after_slow_phase, Some(false));
    let stream = &ctx.streams()[0];
    assert!(
        stream.peak_pending_rows <= 50_000,
        "{} rows waited",
        stream.peak_pending_rows
    );
    assert!(
        stream.peak_pending_bytes <= 4 << 20,
        "{} bytes waited",
        stream.peak_pending_bytes
    );
    // While the consumer was slow, batches started late, and it showed.
    assert!(
        lags[..20]
            .iter()
            .any(|lag| *lag >= Duration::from_millis(10)),
        "{lags:?}"
    );
    eprintln!(
        "overload: {LINES} lines in {elapsed:?}; slow phase consumed {:.0} rows/s; peak pending {} rows, {} bytes",
        slow_rows as f64 / (20.0 * slow_phase.as_secs_f64()),
        stream.peak_pending_rows,
        stream.peak_pending_bytes
    );
}

#[tokio::test]
async fn lag_shows_while_a_query_is_behind_and_returns_to_zero_when_it_catches_up() {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
    let ctx = StreamContext::new(Duration::from_millis(20));
    let queue = ctx
        .register_queue(
            "nums",
            Arc::clone(&schema),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    for i in 0..40 {
        queue
            .push(
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(vec![i]))],
                )
                .unwrap(),
            )
            .unwrap();
    }
    queue.close();
    let mut query = start(&ctx, "SELECT n FROM nums").await;
    let mut lags = Vec::new();
    let mut values = Vec::new();
    while let Some(output) = tokio::time::timeout(DEADLINE, query.next()).await.unwrap() {
        let output = output.unwrap();
        values.extend(rows(&output).into_iter().map(|r| r[0].clone()));
        lags.push((output.lag, query.stats().lag));
        // The first 10 batches: the consumer takes 3 intervals per batch.
        if lags.len() <= 10 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert_eq!(values, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
    // Behind: batches started late, by more than an interval.
    assert!(
        lags[5..10]
            .iter()
            .all(|(lag, _)| *lag > Duration::from_millis(20)),
        "{lags:?}"
    );
    // Caught up: the last batches started on time.
    assert!(
        lags[35..]
            .iter()
            .all(|(lag, _)| *lag < Duration::from_millis(10)),
        "{lags:?}"
    );
    // The query's stats (SHOW QUERIES) showed the lag too; they run one
    // batch ahead of the outputs taken.
    assert!(
        lags[3..10]
            .iter()
            .all(|(_, stats)| *stats > Duration::from_millis(20)),
        "{lags:?}"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_pushes_and_push_wait_waits_for_room() {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
    let ctx = StreamContext::new(Duration::from_millis(30));
    let queue = ctx
        .register_queue(
            "nums",
            Arc::clone(&schema),
            QueueOptions::default().with_limits(StreamLimits {
                max_pending_rows: 4,
                ..StreamLimits::default()
            }),
        )
        .unwrap();
    let item = |values: Vec<i64>| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(values))],
        )
        .unwrap()
    };
    queue.push(item(vec![1, 2, 3])).unwrap();
    let err = queue.push(item(vec![4, 5])).unwrap_err().to_string();
    assert!(err.starts_with("stream 'nums' is full: 3 rows"), "{err}");
    let err = ctx
        .sql("INSERT INTO nums VALUES (4), (5)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is full"), "{err}");
    // A producer that waits: it goes on once a query has taken the rows.
    let producer = {
        let queue = queue.clone();
        let item = item(vec![4, 5]);
        tokio::spawn(async move {
            queue.push_wait(item).await.unwrap();
            queue.close();
        })
    };
    let outputs = collect_all(start(&ctx, "SELECT n FROM nums").await).await;
    producer.await.unwrap();
    let values: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(values, vec!["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_silent_peer_keeps_the_stream_open_and_its_next_line_arrives() {
    let address = line_server(|mut client| {
        client.write_all(b"before\n").ok();
        std::thread::sleep(Duration::from_millis(1_500));
        client.write_all(b"after\n").ok();
    });
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.register_socket("talk", &address, line_schema(), SocketOptions::default())
        .unwrap();
    let outputs = collect_all(start(&ctx, "SELECT line FROM talk").await).await;
    let lines: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(lines, vec!["before", "after"]);
    let empty = outputs.iter().filter(|o| o.rows_in == 0).count();
    assert!(
        empty >= 8,
        "{empty} empty batches while the peer was silent"
    );
}

#[tokio::test]
async fn csv_types_null_spellings_and_quoted_newlines() {
    let text = b"1,2026-11-24,true,1.5,plain\n\
2,,false,,\n\
3,NULL,TRUE,\\N,null\n\
4,2026-02-30,true,1,bad date\n\
5,2026-11-24,maybe,1,bad boolean\n\
6,2026-11-24,false,1e3,\"quoted, with comma\"\n\
7,2026-11-24,true,2,\"a quoted\n\
newline\"\n\
8,24/11/2026,true,3,bad date format\n\
9,2026-11-24,f,x,bad number\n\
10,2026-11-24,TRUE,4,\"\"\n\
11,2026-11-24,t,5,t is not a boolean\n";
    let address = chunk_server(vec![text.to_vec()], Duration::ZERO);
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (id INT, day DATE, ok BOOLEAN, v DOUBLE, note TEXT) \
         WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv')",
        port_of(&address)
    ))
    .await
    .unwrap();
    let outputs = collect_all(
        start(
            &ctx,
            "SELECT id, day, ok, v, note, note IS NULL AS note_null FROM r ORDER BY id",
        )
        .await,
    )
    .await;
    let got: Vec<String> = outputs.iter().flat_map(rows).map(|r| r.join("|")).collect();
    assert_eq!(
        got,
        vec![
            "1|2026-11-24|true|1.5|plain|false",
            "2|NULL|false|NULL|NULL|true",
            "3|NULL|true|NULL|NULL|true",
            "6|2026-11-24|false|1000.0|quoted, with comma|false",
            // A quoted empty field reads as NULL too (CSV cannot tell).
            "10|2026-11-24|true|4.0|NULL|true",
        ]
    );
    let warnings = warnings.lock().unwrap().clone();
    let numbered: Vec<&str> = warnings
        .iter()
        .map(|w| w.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        numbered,
        vec![
            "stream 'r' line 4",
            "stream 'r' line 5",
            "stream 'r' line 7",
            "stream 'r' line 8",
            "stream 'r' line 9",
            "stream 'r' line 10",
            "stream 'r' line 12",
        ],
        "{warnings:#?}"
    );
    let stream = &ctx.streams()[0];
    assert!(
        warnings[2].contains("unterminated quoted field"),
        "{}",
        warnings[2]
    );
    assert_eq!(stream.rows_dropped, 7);
}
