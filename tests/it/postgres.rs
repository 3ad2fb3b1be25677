//! The PostgreSQL sink against a real server started by the test
//! (`tests/support/pg_server.rs`): exact table contents for append and
//! upsert, a server stopped and started mid-run, a replayed batch, types,
//! and the errors that write nothing.

use std::sync::Arc;
use std::time::Duration;

use brook::sink::{BatchSink, PostgresSink, PostgresSinkOptions, SinkWrite};
use brook::{BatchOutput, QueueOptions, Retained, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::{Int64Array, StringArray, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{DEADLINE, recording_warnings};
use crate::pg_server::{PASSWORD, PgServer};

fn line(text: &str) -> RecordBatch {
    RecordBatch::try_new(
        line_schema(),
        vec![Arc::new(StringViewArray::from(vec![text]))],
    )
    .unwrap()
}

const WORD_COUNT: &str = "SELECT word, COUNT(*) AS n FROM \
     (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word";

/// A context with queue stream `lines` holding `texts`, one batch each,
/// closed.
fn queue_of(ctx: &StreamContext, texts: &[&str]) -> brook::QueueHandle {
    let queue = ctx
        .register_queue(
            "lines",
            line_schema(),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    for text in texts {
        queue.push(line(text)).unwrap();
    }
    queue
}

async fn wait_for_sinks(ctx: &StreamContext) -> brook::Result<()> {
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .expect("sinks finish within the deadline")
}

#[tokio::test]
async fn append_copies_each_batch_once_and_records_it_in_the_progress_table() {
    let pg = PgServer::start().await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    let queue = queue_of(&ctx, &["a b a", "b c", "", "c c a", "d"]);
    queue.close();
    let created = ctx
        .sql(&format!(
            "CREATE SINK counts WITH (connector = 'postgres', url = '{}', table = 'word_counts', \
             create_table = 'true') AS {WORD_COUNT}",
            pg.url()
        ))
        .await
        .unwrap();
    assert!(matches!(created, SqlOutput::Done));
    wait_for_sinks(&ctx).await.unwrap();

    // The query's own columns only; the batch numbers are in the progress table.
    assert_eq!(
        pg.rows(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'word_counts' ORDER BY ordinal_position"
        )
        .await,
        [["word", "text"], ["n", "bigint"]]
    );
    assert_eq!(
        pg.rows("SELECT word, SUM(n) FROM word_counts GROUP BY word ORDER BY word")
            .await,
        [["a", "3"], ["b", "2"], ["c", "3"], ["d", "1"]]
    );
    assert_eq!(pg.rows("SELECT COUNT(*) FROM word_counts").await, [["7"]]);
    // Batch 3 (an empty line) had no rows and wrote nothing.
    assert_eq!(
        pg.rows("SELECT sink, batch, rows FROM brook_sink_progress ORDER BY batch")
            .await,
        [
            ["counts", "1", "2"],
            ["counts", "2", "2"],
            ["counts", "4", "2"],
            ["counts", "5", "1"]
        ]
    );
}

#[tokio::test]
async fn upsert_of_running_totals_leaves_one_row_per_word_with_its_total() {
    let pg = PgServer::start().await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    let queue = queue_of(
        &ctx,
        &[
            "to be or not to be",
            "that is the question",
            "to sleep perchance to dream",
        ],
    );
    queue.close();
    ctx.sql(&format!(
        "CREATE SINK totals WITH (connector = 'postgres', url = '{}', table = 'totals', \
         mode = 'upsert', key = 'word', create_table = 'true') AS \
         SELECT word, COUNT(*) AS total FROM \
         (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines)) GROUP BY word",
        pg.url()
    ))
    .await
    .unwrap();
    wait_for_sinks(&ctx).await.unwrap();
    assert_eq!(
        pg.rows("SELECT word, total FROM totals ORDER BY word")
            .await,
        [
            ["be", "2"],
            ["dream", "1"],
            ["is", "1"],
            ["not", "1"],
            ["or", "1"],
            ["perchance", "1"],
            ["question", "1"],
            ["sleep", "1"],
            ["that", "1"],
            ["the", "1"],
            ["to", "4"]
        ]
    );
    // The key is the table's primary key.
    assert_eq!(
        pg.rows(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'totals'::regclass AND i.indisprimary"
        )
        .await,
        [["word"]]
    );
}

#[tokio::test]
async fn upsert_into_an_existing_table_updates_rows_and_keeps_other_keys() {
    let pg = PgServer::start().await;
    pg.rows(
        "CREATE TABLE counts (word varchar(20) PRIMARY KEY, n integer NOT NULL, \
         note text DEFAULT 'kept'); INSERT INTO counts VALUES ('old', 9, 'x'), ('a', 100, 'y')",
    )
    .await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    // Within one batch the same key comes twice: the last row wins.
    let queue = ctx
        .register_queue(
            "pairs",
            Arc::new(Schema::new(vec![
                Field::new("word", DataType::Utf8, false),
                Field::new("n", DataType::Int64, false),
            ])),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    let batch = RecordBatch::try_new(
        queue.schema(),
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "a"])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    queue.push(batch).unwrap();
    queue.close();
    ctx.sql(&format!(
        "CREATE SINK s WITH (connector = 'postgres', url = '{}', table = 'counts', \
         mode = 'upsert', key = 'word') AS SELECT word, n FROM pairs",
        pg.url()
    ))
    .await
    .unwrap();
    wait_for_sinks(&ctx).await.unwrap();
    assert_eq!(
        pg.rows("SELECT word, n, note FROM counts ORDER BY word")
            .await,
        [["a", "3", "y"], ["b", "2", "kept"], ["old", "9", "x"]]
    );
}

#[tokio::test]
async fn a_server_stopped_and_started_mid_run_gets_every_batch_once() {
    let mut pg = PgServer::start().await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    let queue = queue_of(&ctx, &["a", "b"]);
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'postgres', url = '{}', table = 'word_counts', \
         create_table = 'true', reconnect_attempts = '40') AS {WORD_COUNT}",
        pg.url()
    ))
    .await
    .unwrap();
    // The first two batches reach the table.
    let deadline = std::time::Instant::now() + DEADLINE;
    while pg.rows("SELECT COUNT(*) FROM word_counts").await != [["2"]] {
        assert!(
            std::time::Instant::now() < deadline,
            "batches 1-2 not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.stop();
    for word in ["c", "d", "e", "f"] {
        queue.push(line(word)).unwrap();
    }
    // The sink notices and retries while the server is down.
    while !warnings
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("lost connection"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no lost connection reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.run().await;
    queue.push(line("g")).unwrap();
    queue.close();
    wait_for_sinks(&ctx).await.unwrap();
    assert_eq!(
        pg.rows("SELECT word, n FROM word_counts ORDER BY word")
            .await,
        [
            ["a", "1"],
            ["b", "1"],
            ["c", "1"],
            ["d", "1"],
            ["e", "1"],
            ["f", "1"],
            ["g", "1"]
        ]
    );
    // The progress table and the data agree: one row per batch, seven batches.
    assert_eq!(
        pg.rows("SELECT COUNT(*), COUNT(DISTINCT batch), SUM(rows) FROM brook_sink_progress")
            .await,
        [["7", "7", "7"]]
    );
    let warnings = warnings.lock().unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("reconnected")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().all(|w| !w.contains(PASSWORD)),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_server_that_stays_down_stops_the_sink_after_its_attempts() {
    let mut pg = PgServer::start().await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    let queue = queue_of(&ctx, &[]);
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'postgres', url = '{}', table = 'word_counts', \
         create_table = 'true', reconnect_attempts = '3') AS {WORD_COUNT}",
        pg.url()
    ))
    .await
    .unwrap();
    pg.stop();
    queue.push(line("a")).unwrap();
    let err = wait_for_sinks(&ctx).await.unwrap_err().to_string();
    assert!(err.contains("sink 'counts'"), "{err}");
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(ctx.sink_names().is_empty());
    let warnings = warnings.lock().unwrap();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("lost connection"))
            .count(),
        2,
        "{warnings:?}"
    );
}

fn output(batch_number: u64, words: &[&str], counts: &[i64]) -> BatchOutput {
    let schema = Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(words.to_vec())),
            Arc::new(Int64Array::from(counts.to_vec())),
        ],
    )
    .unwrap();
    BatchOutput {
        batch_number,
        batch_time: chrono::Utc::now(),
        rows_in: words.len(),
        batches: vec![batch],
        schema,
        elapsed: Duration::ZERO,
        execution: Duration::ZERO,
        lag: Duration::ZERO,
        window: None,
        retained: Retained::default(),
        watermark: None,
        late_rows: 0,
        far_future_rows: 0,
        checkpoint: None,
    }
}

fn options(pg: &PgServer, extra: &[(&str, &str)]) -> PostgresSinkOptions {
    let mut options: Vec<(String, String)> = vec![
        ("connector".into(), "postgres".into()),
        ("url".into(), pg.url()),
        ("table".into(), "counts".into()),
        ("create_table".into(), "true".into()),
    ];
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PostgresSinkOptions::from_options("replay", &options).unwrap()
}

#[tokio::test]
async fn a_batch_written_twice_on_purpose_is_skipped_the_second_time() {
    let pg = PgServer::start().await;
    let (warn, _) = recording_warnings();
    let first = output(1, &["a", "b"], &[1, 2]);
    let mut sink = PostgresSink::connect("replay", options(&pg, &[]), &first.schema, warn)
        .await
        .unwrap();
    assert_eq!(sink.write(&first).await.unwrap(), SinkWrite::Written);
    assert_eq!(sink.write(&first).await.unwrap(), SinkWrite::Skipped);
    // Same number, other rows: still the same batch, still skipped.
    assert_eq!(
        sink.write(&output(1, &["zzz"], &[5])).await.unwrap(),
        SinkWrite::Skipped
    );
    assert_eq!(
        sink.write(&output(2, &["c"], &[3])).await.unwrap(),
        SinkWrite::Written
    );
    assert_eq!(sink.last_written(), Some(2));
    assert_eq!(
        pg.rows("SELECT word, n FROM counts ORDER BY word").await,
        [["a", "1"], ["b", "2"], ["c", "3"]]
    );
}

#[tokio::test]
async fn a_value_that_does_not_fit_its_column_fails_the_batch_and_writes_none_of_it() {
    let pg = PgServer::start().await;
    pg.rows("CREATE TABLE counts (word text, n smallint)").await;
    let (warn, _) = recording_warnings();
    let mut options = options(&pg, &[]);
    options.create_table = false;
    let batch = output(1, &["fits", "too big"], &[7, 70_000]);
    let mut sink = PostgresSink::connect("replay", options, &batch.schema, warn)
        .await
        .unwrap();
    let err = sink.write(&batch).await.unwrap_err().to_string();
    assert!(err.contains("batch 1"), "{err}");
    assert!(err.contains("column 'n'"), "{err}");
    assert!(err.contains("smallint"), "{err}");
    assert_eq!(pg.rows("SELECT COUNT(*) FROM counts").await, [["0"]]);
    assert_eq!(
        pg.rows("SELECT COUNT(*) FROM brook_sink_progress").await,
        [["0"]]
    );
    // The next batch that fits is written.
    assert_eq!(
        sink.write(&output(2, &["ok"], &[-32768])).await.unwrap(),
        SinkWrite::Written
    );
    assert_eq!(
        pg.rows("SELECT word, n FROM counts").await,
        [["ok", "-32768"]]
    );
}

#[tokio::test]
async fn arrow_types_arrive_as_their_postgresql_types_with_exact_values() {
    let pg = PgServer::start().await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    let queue = queue_of(&ctx, &["x"]);
    queue.close();
    ctx.sql(&format!(
        "CREATE SINK types WITH (connector = 'postgres', url = '{}', table = 'typed', \
         create_table = 'true') AS SELECT \
         true AS b, CAST(-7 AS SMALLINT) AS i2, CAST(2147483647 AS INT) AS i4, \
         CAST(-9223372036854775807 AS BIGINT) AS i8, CAST(1.5 AS REAL) AS f4, \
         CAST(-2.25 AS DOUBLE) AS f8, CAST('-12345.678' AS DECIMAL(12, 3)) AS d, \
         CAST('0.0001' AS DECIMAL(10, 4)) AS small, CAST(0 AS DECIMAL(5, 2)) AS zero, \
         'héllo ''quoted''' AS t, CAST(NULL AS VARCHAR) AS nothing, \
         DATE '1999-12-31' AS day, TIMESTAMP '2026-11-30 12:34:56.789012' AS ts, \
         CAST('1969-07-20 20:17:40' AS TIMESTAMP) AS old_ts, \
         arrow_cast('2026-01-02T03:04:05Z', 'Timestamp(Microsecond, Some(\"UTC\"))') AS tz, \
         line FROM lines",
        pg.url()
    ))
    .await
    .unwrap();
    wait_for_sinks(&ctx).await.unwrap();
    assert_eq!(
        pg.rows(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'typed' ORDER BY ordinal_position"
        )
        .await,
        [
            ["b", "boolean"],
            ["i2", "smallint"],
            ["i4", "integer"],
            ["i8", "bigint"],
            ["f4", "real"],
            ["f8", "double precision"],
            ["d", "numeric"],
            ["small", "numeric"],
            ["zero", "numeric"],
            ["t", "text"],
            ["nothing", "text"],
            ["day", "date"],
            ["ts", "timestamp without time zone"],
            ["old_ts", "timestamp without time zone"],
            ["tz", "timestamp with time zone"],
            ["line", "text"],
        ]
    );
    assert_eq!(
        pg.rows(
            "SET TIME ZONE 'UTC'; SELECT b::text, i2::text, i4::text, i8::text, f4::text, \
             f8::text, d::text, small::text, zero::text, t, nothing, day::text, ts::text, \
             old_ts::text, tz::text, line FROM typed"
        )
        .await,
        [[
            "true",
            "-7",
            "2147483647",
            "-9223372036854775807",
            "1.5",
            "-2.25",
            "-12345.678",
            "0.0001",
            "0.00",
            "héllo 'quoted'",
            "NULL",
            "1999-12-31",
            "2026-11-30 12:34:56.789012",
            "1969-07-20 20:17:40",
            "2026-01-02 03:04:05+00",
            "x"
        ]]
    );
}

#[tokio::test]
async fn bad_url_refused_connection_wrong_password_and_unfit_tables_are_clear_errors() {
    let pg = PgServer::start().await;
    pg.rows("CREATE TABLE counts (word text, n text); CREATE TABLE strict (word text, n bigint, needed int NOT NULL)")
        .await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    let _queue = queue_of(&ctx, &[]);
    let attempt = |url: String, table: &str, extra: &str| {
        format!(
            "CREATE SINK s WITH (connector = 'postgres', url = '{url}', table = '{table}'{extra}) AS {WORD_COUNT}"
        )
    };
    let cases = [
        (
            attempt("http://nowhere".into(), "counts", ""),
            "url is not a PostgreSQL connection URL",
        ),
        (
            attempt(
                format!(
                    "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
                    crate::common::port_of(&crate::common::closed_port_address())
                        .parse::<u16>()
                        .unwrap()
                ),
                "counts",
                "",
            ),
            "cannot connect to PostgreSQL at 127.0.0.1:",
        ),
        (
            attempt(
                format!(
                    "postgres://postgres:wrong-{PASSWORD}@127.0.0.1:{}/postgres",
                    pg.port()
                ),
                "counts",
                "",
            ),
            "password authentication failed for user \"postgres\"",
        ),
        (
            attempt(pg.url(), "counts", ""),
            "column 'n' is text, which cannot hold the query's Int64 values (a bigint column can)",
        ),
        (
            attempt(pg.url(), "strict", ""),
            "column 'needed' is NOT NULL without a default",
        ),
        (
            attempt(pg.url(), "missing", ""),
            "table missing does not exist",
        ),
        (
            attempt(pg.url(), "counts", ", mode = 'upsert', key = 'nope'"),
            "key column 'nope' is not a column of the query",
        ),
    ];
    for (sql, expected) in cases {
        let err = match ctx.sql(&sql).await {
            Ok(output) => panic!("{sql}: {output:?}"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(expected), "{sql}\n{err}");
        assert!(!err.contains(PASSWORD), "{err}");
        assert!(ctx.sink_names().is_empty());
        assert!(ctx.running_queries().is_empty(), "{sql}");
    }
    // An existing table with a fitting shape but no unique index on the key.
    pg.rows("CREATE TABLE nokey (word text, n bigint)").await;
    let err = ctx
        .sql(&attempt(
            pg.url(),
            "nokey",
            ", mode = 'upsert', key = 'word'",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upsert needs a primary key or unique index on (word) in table nokey"),
        "{err}"
    );
    // Nothing was written anywhere.
    assert_eq!(pg.rows("SELECT COUNT(*) FROM counts").await, [["0"]]);
    assert_eq!(pg.rows("SELECT COUNT(*) FROM nokey").await, [["0"]]);
}

#[tokio::test]
async fn show_queries_and_brook_queries_never_show_the_password() {
    let pg = PgServer::start().await;
    let ctx = StreamContext::new(Duration::from_millis(30));
    let _queue = queue_of(&ctx, &[]);
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'postgres', url = '{}', table = 'word_counts', \
         create_table = 'true') AS {WORD_COUNT}",
        pg.url()
    ))
    .await
    .unwrap();
    for sql in ["SHOW QUERIES", "SELECT * FROM brook.queries"] {
        let SqlOutput::Rows { batches, .. } = ctx.sql(sql).await.unwrap() else {
            panic!("{sql} gives rows");
        };
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            shown.contains("postgres://postgres:***@127.0.0.1"),
            "{shown}"
        );
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
    ctx.close_queues();
    wait_for_sinks(&ctx).await.unwrap();
}

/// Runs the `brook` binary with `args`; bounded at 60 s.
async fn brook_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start brook");
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > DEADLINE {
                child.kill().ok();
                panic!("brook {args:?} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn brook_run_writes_a_script_s_sink_to_postgres_and_never_prints_the_password() {
    let pg = PgServer::start().await;
    let script = format!(
        "CREATE STREAM readings (sensor TEXT, temp DOUBLE) WITH (connector = 'queue', one_at_a_time = 'true'); \
         CREATE SINK averages WITH (connector = 'postgres', url = '{}', table = 'sensor_averages', \
           mode = 'upsert', key = 'sensor', create_table = 'true') \
         AS SELECT sensor, AVG(temp) AS avg_temp, COUNT(*) AS readings FROM RUNNING(readings, 'update') GROUP BY sensor; \
         SHOW QUERIES; \
         INSERT INTO readings VALUES ('s1', 20.0), ('s2', 10.0); \
         INSERT INTO readings VALUES ('s1', 22.0); \
         INSERT INTO readings VALUES ('s3', -1.5), ('s1', 24.0);",
        pg.url()
    );
    let output = brook_binary(vec![
        "--batch-interval".into(),
        "50ms".into(),
        "-c".into(),
        script,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("postgres://postgres:***@127.0.0.1"),
        "{stdout}"
    );
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    assert_eq!(
        pg.rows("SELECT sensor, avg_temp, readings FROM sensor_averages ORDER BY sensor")
            .await,
        [["s1", "22", "3"], ["s2", "10", "1"], ["s3", "-1.5", "1"]]
    );

    // A wrong password: exit 1, the server's reason, no password.
    let output = brook_binary(vec![
        "-c".into(),
        format!(
            "CREATE STREAM q (n INT) WITH (connector = 'queue'); \
             CREATE SINK s WITH (connector = 'postgres', url = 'postgres://postgres:not-{PASSWORD}@127.0.0.1:{}/postgres', \
             table = 't', create_table = 'true') AS SELECT n FROM q",
            pg.port()
        ),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert_eq!(
        pg.rows("SELECT COUNT(*) FROM pg_tables WHERE tablename = 't'")
            .await,
        [["0"]]
    );
}

#[tokio::test]
async fn the_repl_history_keeps_no_password() {
    let dir = std::env::temp_dir().join(format!("brook-pg-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history");
    let port = crate::common::port_of(&crate::common::closed_port_address()).to_string();
    let statement = format!(
        "CREATE STREAM q (n INT) WITH (connector = 'queue');\n\
         CREATE SINK s WITH (connector = 'postgres', url = 'postgres://me:{PASSWORD}@127.0.0.1:{port}/db', \
         table = 't') AS SELECT n FROM q;\n"
    );
    let history_path = history.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
            .env("BROOK_HISTORY", &history_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start brook");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(statement.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("postgres://me:***@127.0.0.1"), "{saved}");
    assert!(!saved.contains(PASSWORD), "{saved}");
    let _ = std::fs::remove_dir_all(&dir);
}
