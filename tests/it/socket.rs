//! Socket streams against real servers on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use brook::{BrookError, LineFormat, OnError, SocketOptions, StreamContext, line_schema};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::{
    Rng, chunk_server, closed_port_address, collect_all, line_server, recording_warnings, rows,
    start, word_totals,
};

const WORDS: [&str; 12] = [
    "spark", "brook", "stream", "batch", "arrow", "query", "socket", "window", "river", "delta",
    "flink", "table",
];

#[tokio::test]
async fn socket_word_count_totals_are_exact_over_50k_lines_in_irregular_chunks_with_both_splits() {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut text = Vec::new();
    for _ in 0..50_000 {
        let words: Vec<&str> = (0..1 + rng.below(8))
            .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
            .collect();
        for word in &words {
            *expected.entry(word.to_string()).or_insert(0) += 1;
        }
        text.extend_from_slice(words.join(" ").as_bytes());
        text.push(b'\n');
    }
    // Chunks of 1 byte to 16 KiB, so many lines are split across writes; a
    // pause now and then spreads them over many ticks.
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < text.len() {
        let size = (1 + rng.below(16 * 1024) as usize).min(text.len() - offset);
        chunks.push(text[offset..offset + size].to_vec());
        offset += size;
    }
    let pauses_every = chunks.len() / 20;
    let address = line_server(move |mut client| {
        for (index, chunk) in chunks.iter().enumerate() {
            if client.write_all(chunk).is_err() {
                return;
            }
            if index % pauses_every == 0 {
                client.flush().ok();
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    });

    let ctx = StreamContext::new(Duration::from_millis(20));
    ctx.register_socket("lines", &address, line_schema(), SocketOptions::default())
        .unwrap();
    // The same count twice on one stream: with string_to_array, and with
    // brook's zero-copy split.
    let with_string_to_array = start(&ctx, crate::common::WORD_COUNT_SQL).await;
    let with_split = start(
        &ctx,
        "SELECT word, COUNT(*) AS count FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word",
    )
    .await;
    let (outputs, split_outputs) =
        tokio::join!(collect_all(with_string_to_array), collect_all(with_split));
    assert!(
        outputs.len() > 3,
        "input spread over several batches, got {}",
        outputs.len()
    );
    assert_eq!(outputs.iter().map(|o| o.rows_in).sum::<usize>(), 50_000);
    assert_eq!(word_totals(&outputs), expected);
    assert_eq!(word_totals(&split_outputs), expected);
}

#[tokio::test]
async fn csv_socket_skips_and_reports_malformed_rows_and_keeps_running() {
    let first = b"s1,20.5\ns2,abc\ns1,21.5\n".to_vec();
    let second = b"s3,1,2\n\ns2,30\ns2,\xff\ns1,not-a-number\n".to_vec();
    let third = b"s3,10\r\ns3,12\n".to_vec();
    let address = chunk_server(vec![first, second, third], Duration::from_millis(120));

    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM readings (sensor TEXT, temp DOUBLE) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv')",
        crate::common::port_of(&address)
    ))
    .await
    .unwrap();
    let outputs = collect_all(
        start(
            &ctx,
            "SELECT sensor, SUM(temp) AS total, COUNT(*) AS n FROM readings GROUP BY sensor",
        )
        .await,
    )
    .await;

    let mut totals: BTreeMap<String, (f64, i64)> = BTreeMap::new();
    for row in outputs.iter().flat_map(rows) {
        let entry = totals.entry(row[0].clone()).or_default();
        entry.0 += row[1].parse::<f64>().unwrap();
        entry.1 += row[2].parse::<i64>().unwrap();
    }
    let expected: BTreeMap<String, (f64, i64)> =
        [("s1", (42.0, 2)), ("s2", (30.0, 1)), ("s3", (22.0, 2))]
            .into_iter()
            .map(|(s, v)| (s.to_string(), v))
            .collect();
    assert_eq!(totals, expected);

    let warnings = warnings.lock().unwrap().clone();
    let lines: Vec<&str> = warnings
        .iter()
        .map(|w| w.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        lines,
        vec![
            "stream 'readings' line 2",
            "stream 'readings' line 4",
            "stream 'readings' line 5",
            "stream 'readings' line 7",
            "stream 'readings' line 8",
        ],
        "{warnings:#?}"
    );
    assert!(warnings[0].contains("'abc'"), "{}", warnings[0]);
    assert!(warnings[1].contains("expected 2 got 3"), "{}", warnings[1]);
    assert!(warnings[2].contains("empty line"), "{}", warnings[2]);
    assert!(warnings[3].contains("invalid UTF-8"), "{}", warnings[3]);
}

#[tokio::test]
async fn on_error_fail_stops_the_query_with_the_bad_row() {
    let address = chunk_server(
        vec![b"a,1\n".to_vec(), b"b,oops\nc,3\n".to_vec()],
        Duration::from_millis(150),
    );
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.register_socket(
        "kv",
        &address,
        schema,
        SocketOptions::default()
            .with_format(LineFormat::Csv)
            .with_on_error(OnError::Fail),
    )
    .unwrap();
    let mut query = start(&ctx, "SELECT k, v FROM kv").await;
    let mut seen = Vec::new();
    let error = loop {
        match crate::common::next_batch(&mut query).await {
            Some(Ok(output)) => seen.extend(rows(&output)),
            Some(Err(err)) => break err,
            None => panic!("the query ended without the error; saw {seen:?}"),
        }
    };
    assert_eq!(seen, vec![vec!["a".to_string(), "1".to_string()]]);
    assert!(
        matches!(error, BrookError::StreamFailed { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("stream 'kv' line 2"), "{error}");
    // The bad row is kept as the cause, and says whose fault it is.
    let cause = std::error::Error::source(&error).expect("a cause");
    assert!(
        matches!(
            cause
                .downcast_ref::<std::sync::Arc<BrookError>>()
                .map(|c| c.as_ref()),
            Some(BrookError::BadRow { line: 2, .. })
        ),
        "{cause:?}"
    );
    assert_eq!(error.kind(), brook::ErrorKind::User);
    assert!(crate::common::next_batch(&mut query).await.is_none());
}

#[tokio::test]
async fn peer_close_ends_the_query_after_the_last_line_even_without_newline() {
    let address = chunk_server(
        vec![b"first\nsecond\nlast without newline".to_vec()],
        Duration::ZERO,
    );
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.register_socket("ds", &address, line_schema(), SocketOptions::default())
        .unwrap();
    let outputs = collect_all(start(&ctx, "SELECT line FROM ds").await).await;
    let lines: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(lines, vec!["first", "second", "last without newline"]);
}

#[tokio::test]
async fn connection_refused_is_an_error_naming_the_address() {
    let address = closed_port_address();
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.register_socket("ds", &address, line_schema(), SocketOptions::default())
        .unwrap();
    let err = ctx.sql("SELECT * FROM ds").await.unwrap_err();
    assert!(matches!(err, BrookError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&address), "{err}");
}

#[tokio::test]
async fn reconnect_reads_the_next_connection_after_the_peer_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for text in ["one\ntwo\n", "three\n"] {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            client.write_all(text.as_bytes()).ok();
        }
    });
    let (warn, _warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    ctx.register_socket(
        "ds",
        &address,
        line_schema(),
        SocketOptions::default().with_reconnect(true),
    )
    .unwrap();
    let mut query = start(&ctx, "SELECT line FROM ds").await;
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let output = crate::common::next_batch(&mut query)
            .await
            .expect("stream goes on")
            .unwrap();
        lines.extend(rows(&output).into_iter().map(|r| r[0].clone()));
    }
    assert_eq!(lines, vec!["one", "two", "three"]);
}

#[tokio::test]
async fn lines_over_max_line_bytes_are_reported_and_the_next_lines_are_fine() {
    let long_unterminated = vec![b'x'; 1500];
    let mut complete_long = vec![b'y'; 1500];
    complete_long.extend_from_slice(b"\nthird\n");
    let address = chunk_server(
        vec![
            b"first\n".to_vec(),
            long_unterminated.clone(),
            long_unterminated,
            b"xx\nsecond\n".to_vec(),
            complete_long,
        ],
        Duration::from_millis(20),
    );
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    ctx.sql(&format!(
        "CREATE STREAM ds WITH (connector = 'socket', host = '127.0.0.1', port = '{}', max_line_bytes = '1000')",
        crate::common::port_of(&address)
    ))
    .await
    .unwrap();
    let outputs = collect_all(start(&ctx, "SELECT line FROM ds").await).await;
    let lines: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(lines, vec!["first", "second", "third"]);
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("stream 'ds' line 2: line longer than max_line_bytes (1000)"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("stream 'ds' line 4: line longer than max_line_bytes (1000)"),
        "{warnings:#?}"
    );
}

#[tokio::test]
async fn a_peer_reset_mid_line_reports_the_partial_line_and_ends_the_stream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        client.write_all(b"good\npartial").await.ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SO_LINGER 0: closing sends a reset instead of a clean close.
        client.set_zero_linger().ok();
        drop(client);
    });
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.register_socket("ds", &address, line_schema(), SocketOptions::default())
        .unwrap();
    let outputs = collect_all(start(&ctx, "SELECT line FROM ds").await).await;
    let lines: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(lines, vec!["good"]);
    let warnings = warnings.lock().unwrap().clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("stream 'ds' line 2: incomplete line of 7 bytes dropped")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("connection to") && w.contains("lost")),
        "{warnings:#?}"
    );
}

#[tokio::test]
async fn reconnect_attempts_bounds_the_retries_then_the_query_fails_naming_the_address() {
    let address = closed_port_address();
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    ctx.sql(&format!(
        "CREATE STREAM ds WITH (connector = 'socket', host = '127.0.0.1', port = '{}', reconnect = 'true', reconnect_attempts = '2')",
        crate::common::port_of(&address)
    ))
    .await
    .unwrap();
    // With reconnect, a refused first connection does not fail the query's start.
    let mut query = start(&ctx, "SELECT line FROM ds").await;
    // Empty batches tick by while brook retries; then the stream fails.
    let error = loop {
        match crate::common::next_batch(&mut query).await {
            Some(Ok(output)) => assert_eq!(output.rows_in, 0),
            Some(Err(error)) => break error,
            None => panic!("the query ended without the error"),
        }
    };
    assert!(
        error
            .to_string()
            .contains(&format!("cannot connect to {address}")),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("gave up after 2 reconnect attempts"),
        "{error}"
    );
    // The first refusal and one retry were warnings; the second retry failed the stream.
    assert_eq!(
        warnings.lock().unwrap().len(),
        2,
        "{:#?}",
        warnings.lock().unwrap()
    );
}

#[tokio::test]
async fn warnings_say_what_brook_did_and_whose_fault_it_was() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for text in ["a,1\nb,x\n", "c,3\n"] {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            client.write_all(text.as_bytes()).ok();
        }
        // The listener goes: the next reconnect is refused.
    });
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let warn: brook::WarningHandler = std::sync::Arc::new(move |w: &brook::Warning| {
        let what = match w {
            brook::Warning::SkippedRow(_) => "skipped row",
            brook::Warning::Source(_) => "source",
            _ => "other",
        };
        record.lock().unwrap().push((what, w.kind(), w.to_string()));
    });
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    ctx.sql(&format!(
        "CREATE STREAM pairs (k TEXT, v BIGINT) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'csv', reconnect = 'true')",
        crate::common::port_of(&address)
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT k, v FROM pairs").await;
    let mut keys = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let refused = seen.lock().unwrap().iter().any(|w| w.0 == "source");
        if keys.len() == 2 && refused {
            break;
        }
        let Ok(Some(Ok(output))) = tokio::time::timeout(
            Duration::from_secs(1),
            crate::common::next_batch(&mut query),
        )
        .await
        else {
            continue;
        };
        keys.extend(rows(&output).into_iter().map(|r| r[0].clone()));
    }
    assert_eq!(keys, vec!["a", "c"]);
    let seen = seen.lock().unwrap();
    let skipped: Vec<_> = seen.iter().filter(|w| w.0 == "skipped row").collect();
    assert_eq!(skipped.len(), 1, "{seen:?}");
    assert_eq!(skipped[0].1, brook::ErrorKind::User, "{seen:?}");
    assert!(skipped[0].2.contains("stream 'pairs' line 2"), "{seen:?}");
    let refused = seen
        .iter()
        .find(|w| w.0 == "source")
        .expect("a refused reconnect is reported");
    assert_eq!(refused.1, brook::ErrorKind::External, "{seen:?}");
    assert!(refused.2.contains(&address), "{seen:?}");
    assert!(
        seen.iter().all(|w| w.0 != "other"),
        "every warning here is a skipped row or a source's: {seen:?}"
    );
}
