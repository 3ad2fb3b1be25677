//! Background queries writing to file sinks; SHOW QUERIES and STOP QUERY.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brook::{QueueOptions, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::StringViewArray;
use datafusion::arrow::record_batch::RecordBatch;

use crate::common::{DEADLINE, line_server};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-sink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Word totals from CSV files of `batch,batch_time,word,n` rows; checks
/// each file is complete (a header, whole rows, a final newline).
fn csv_totals(files: &[PathBuf]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.ends_with('\n'), "{} is cut short", file.display());
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("batch,batch_time,word,n"),
            "{}",
            file.display()
        );
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), 4, "{}: {line}", file.display());
            *totals.entry(cells[2].to_string()).or_insert(0) += cells[3].parse::<i64>().unwrap();
        }
    }
    totals
}

async fn rows_of(ctx: &StreamContext, sql: &str) -> Vec<RecordBatch> {
    match ctx.sql(sql).await.unwrap() {
        SqlOutput::Rows { batches, .. } => batches,
        other => panic!("{sql}: {other:?}"),
    }
}

#[tokio::test]
async fn a_file_sink_writes_one_complete_csv_file_per_batch() {
    let dir = temp_dir("per-batch");
    let ctx = StreamContext::new(Duration::from_millis(40));
    let queue = ctx
        .register_queue(
            "lines",
            line_schema(),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    let lines = ["a b a", "b c", "", "c c a", "d"];
    for line in lines {
        let words = StringViewArray::from(vec![line]);
        queue
            .push(RecordBatch::try_new(line_schema(), vec![Arc::new(words)]).unwrap())
            .unwrap();
    }
    queue.close();
    let created = ctx
        .sql(&format!(
            "CREATE SINK counts WITH (connector = 'file', path = '{}', format = 'csv') AS \
             SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) \
             GROUP BY word ORDER BY word",
            dir.display()
        ))
        .await
        .unwrap();
    assert!(matches!(created, SqlOutput::Done));
    assert_eq!(ctx.sink_names(), vec!["counts"]);
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();
    let files = files_in(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Batch 3 (the empty line) has no rows and writes no file.
    assert_eq!(
        names,
        vec![
            "counts-000001.csv",
            "counts-000002.csv",
            "counts-000004.csv",
            "counts-000005.csv"
        ]
    );
    let expected: BTreeMap<String, i64> = [("a", 3), ("b", 2), ("c", 3), ("d", 1)]
        .map(|(w, n)| (w.to_string(), n))
        .into();
    assert_eq!(csv_totals(&files), expected);
    assert!(ctx.running_queries().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn stop_query_stops_a_sink_on_a_live_socket_and_leaves_only_whole_files() {
    let dir = temp_dir("stop");
    let address = line_server(|mut client| {
        // A line every 5 ms until brook goes away (bounded: 60 s).
        for i in 0..12_000 {
            if client
                .write_all(format!("w{} x\n", i % 3).as_bytes())
                .is_err()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM lines WITH (connector = 'socket', host = '127.0.0.1', port = '{}')",
        crate::common::port_of(&address)
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'file', path = '{}') AS \
         SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word",
        dir.display()
    ))
    .await
    .unwrap();
    // Wait for a few files.
    let waited = tokio::time::timeout(DEADLINE, async {
        while files_in(&dir).len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no files written");
    let queries = ctx.running_queries();
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].output, "sink counts");
    assert!(queries[0].stats.batches >= 3, "{:?}", queries[0].stats);
    let shown = rows_of(&ctx, "SHOW QUERIES").await;
    assert_eq!(shown[0].num_rows(), 1);

    ctx.sql(&format!("STOP QUERY {}", queries[0].id))
        .await
        .unwrap();
    assert!(ctx.running_queries().is_empty());
    assert!(ctx.sink_names().is_empty());
    let files = files_in(&dir);
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "csv")),
        "a temporary file was left: {files:?}"
    );
    // Every file complete; each line has one x.
    let totals = csv_totals(&files);
    let words: i64 = ["w0", "w1", "w2"]
        .iter()
        .map(|w| totals.get(*w).copied().unwrap_or(0))
        .sum();
    assert_eq!(totals["x"], words);
    // No more files after the stop.
    let count = files.len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(files_in(&dir).len(), count);
    let err = ctx.sql("STOP QUERY 99").await.unwrap_err();
    assert!(
        err.to_string().contains("there is no running query 99"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A disk that takes its time, made with a FIFO where the sink writes
/// batch 1's temporary file: opening it blocks until a reader comes, as a
/// write or sync on a slow disk blocks its thread. The test's runtime has
/// one thread, so a sink that blocked it would stop everything.
#[tokio::test]
async fn a_sink_blocked_on_its_disk_holds_up_no_other_query_and_stop_query_waits_for_its_file() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = temp_dir("blocked");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join(".blocked-000001.csv.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM words (word TEXT) WITH (connector = 'queue')")
        .await
        .unwrap();
    ctx.sql("CREATE STREAM other (x BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    // Queued before the sink's query starts: its batch 1 holds the row.
    ctx.sql("INSERT INTO words VALUES ('a')").await.unwrap();
    ctx.sql(&format!(
        "CREATE SINK blocked WITH (connector = 'file', path = '{}') AS \
         SELECT word, COUNT(*) AS n FROM words GROUP BY word",
        dir.display()
    ))
    .await
    .unwrap();
    let mut other = crate::common::start(&ctx, "SELECT x FROM other").await;
    let disk_answered = Arc::new(AtomicBool::new(false));
    let disk = {
        let disk_answered = Arc::clone(&disk_answered);
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            disk_answered.store(true, Ordering::SeqCst);
            std::fs::read_to_string(&fifo).expect("read what the sink wrote")
        })
    };
    // For a second of the two the disk keeps the sink waiting, the other
    // query runs batch after batch (one every 50 ms).
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut batches_meanwhile = 0;
    while let Ok(output) =
        tokio::time::timeout_at(until, futures::StreamExt::next(&mut other)).await
    {
        output
            .expect("a query over another stream goes on")
            .unwrap();
        batches_meanwhile += 1;
    }
    assert!(
        !disk_answered.load(Ordering::SeqCst),
        "the other query waited for the sink's disk ({batches_meanwhile} batches)"
    );
    assert!(batches_meanwhile >= 5, "{batches_meanwhile} batches");
    // STOP QUERY returns once the sink's write in progress is done, however
    // long its disk takes (this write then fails: a FIFO cannot be synced,
    // and the sink reports it).
    let sink_query = ctx
        .running_queries()
        .into_iter()
        .find(|q| q.output == "sink blocked")
        .expect("the sink's query runs")
        .id;
    ctx.sql(&format!("STOP QUERY {sink_query}")).await.unwrap();
    assert!(disk_answered.load(Ordering::SeqCst));
    let written = disk.join().unwrap();
    let rows: Vec<String> = written
        .lines()
        .map(|line| line.split(',').skip(2).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(rows, vec!["word,n", "a,1"], "{written}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_append_sink_writes_json_lines_to_one_file() {
    let dir = temp_dir("append");
    let file = dir.join("out.json");
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM nums (n BIGINT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (1), (2)").await.unwrap();
    ctx.sql("INSERT INTO nums VALUES (3)").await.unwrap();
    ctx.sql(&format!(
        "CREATE SINK doubled WITH (connector = 'file', path = '{}', format = 'json', mode = 'append') \
         AS SELECT n * 2 AS twice FROM nums",
        file.display()
    ))
    .await
    .unwrap();
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let rows: Vec<String> = text
        .lines()
        .map(|line| {
            // Drop the batch time, which is a wall-clock value.
            let (_, rest) = line.split_once("\"batch_time\":").unwrap();
            let (_, rest) = rest.split_once(',').unwrap();
            let batch = line.split_once(',').unwrap().0;
            format!("{batch},{rest}")
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            "{\"batch\":1,\"twice\":2}",
            "{\"batch\":1,\"twice\":4}",
            "{\"batch\":2,\"twice\":6}"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A brook built without the `delta` feature (the default build) refuses
/// Delta sinks and tables, saying how to build one that has them.
#[cfg(not(feature = "delta"))]
#[tokio::test]
async fn without_the_delta_feature_delta_sinks_and_tables_are_refused_naming_the_feature() {
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM nums (n BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    for (sql, what) in [
        (
            "CREATE SINK d WITH (connector = 'delta', path = '/tmp/brook-no-delta') AS SELECT n FROM nums",
            "sink 'd'",
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '/tmp/brook-no-delta'",
            "table 't'",
        ),
    ] {
        let err = ctx.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
        assert!(err.contains("--features delta"), "{err}");
    }
    assert!(!std::path::Path::new("/tmp/brook-no-delta").exists());
}

#[tokio::test]
async fn bad_sinks_are_clear_errors() {
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM nums (n BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    for (sql, expected) in [
        (
            "CREATE SINK s WITH (connector = 'kinesis', path = 'x') AS SELECT n FROM nums",
            "sink 's': unknown connector 'kinesis' (sinks: 'file', 'postgres', 'kafka', 'delta')",
        ),
        (
            "CREATE SINK s WITH (connector = 'file') AS SELECT n FROM nums",
            "sink 's': give path = ",
        ),
        (
            "CREATE SINK s WITH (connector = 'file', path = '/tmp/x', format = 'xml') AS SELECT n FROM nums",
            "format is 'csv', 'json', 'debezium-json' or 'parquet', not 'xml'",
        ),
        (
            "CREATE SINK s WITH (connector = 'file', path = '/tmp/brook-never.parquet', format = 'parquet', mode = 'append') AS SELECT n FROM nums",
            "sink 's': format 'parquet' writes one file per batch: a Parquet file ends with its footer and cannot be appended to",
        ),
        (
            "CREATE SINK s WITH (connector = 'file', path = '/tmp/brook-never') AS SELECT 1",
            "AS needs a continuous query",
        ),
        ("CREATE SINK s AS SELECT n FROM nums", "Expected: WITH"),
        ("DROP SINK nope", "sink 'nope' does not exist"),
        ("STOP QUERY x", "Expected: a query number"),
    ] {
        let err = ctx.sql(sql).await.unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{sql}\n  gave: {err}\n  expected: {expected}"
        );
    }
    assert!(ctx.sql("DROP SINK IF EXISTS nope").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_files_read_back_by_the_files_source_and_by_datafusion_equal_the_query_output()
{
    let dir = temp_dir("parquet");
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM nums (n BIGINT, label TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (1, 'one'), (2, NULL), (3, 'three')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (-4, 'minus four')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (5, 'five'), (6, 'six')")
        .await
        .unwrap();
    let query = "SELECT n, n * 2.5 AS x, upper(label) AS loud, n % 2 = 0 AS even FROM nums";
    ctx.sql(&format!(
        "CREATE SINK halves WITH (connector = 'file', path = '{}', format = 'parquet') AS {query}",
        dir.display()
    ))
    .await
    .unwrap();
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();
    let names: Vec<String> = files_in(&dir)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "halves-000001.parquet",
            "halves-000002.parquet",
            "halves-000003.parquet"
        ]
    );
    // The query's output, batch by batch, as the sink saw it.
    let expected: Vec<Vec<String>> = [
        ["1", "1", "2.5", "ONE", "false"],
        ["1", "2", "5.0", "NULL", "true"],
        ["1", "3", "7.5", "THREE", "false"],
        ["2", "-4", "-10.0", "MINUS FOUR", "true"],
        ["3", "5", "12.5", "FIVE", "false"],
        ["3", "6", "15.0", "SIX", "true"],
    ]
    .iter()
    .map(|row| row.iter().map(|cell| cell.to_string()).collect())
    .collect();

    // (a) Read back by a directory stream.
    let reader = StreamContext::new(Duration::from_millis(30));
    reader
        .sql(&format!(
            "CREATE STREAM back (batch BIGINT, n BIGINT, x DOUBLE, loud TEXT, even BOOLEAN) \
             WITH (connector = 'files', path = '{}', format = 'parquet', settle = '0ms')",
            dir.display()
        ))
        .await
        .unwrap();
    let mut back = crate::common::start(&reader, "SELECT batch, n, x, loud, even FROM back").await;
    let mut streamed = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while streamed.len() < expected.len() {
        let output = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut back))
            .await
            .expect("rows in time")
            .unwrap()
            .unwrap();
        streamed.extend(crate::common::rows(&output));
    }
    assert_eq!(streamed, expected);
    drop(back);

    // (b) Read back by DataFusion as a table.
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE halves_table STORED AS PARQUET LOCATION '{}/'",
        dir.display()
    ))
    .await
    .unwrap();
    let table = rows_of(
        &ctx,
        "SELECT batch, n, x, loud, even FROM halves_table ORDER BY batch, n",
    )
    .await;
    assert_eq!(crate::common::table_rows(&table), expected);
    let times = rows_of(&ctx, "SELECT DISTINCT length(batch_time) FROM halves_table").await;
    assert_eq!(
        crate::common::table_rows(&times),
        vec![vec!["24".to_string()]]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
