//! The directory source: files dropped into a directory over several ticks
//! are each read once and in full; bad rows name their file and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use brook::StreamContext;
use futures::StreamExt;

use crate::common::{DEADLINE, recording_warnings, rows};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` elsewhere in `dir` and renames it in, as Spark asks.
fn drop_file(dir: &Path, name: &str, text: &str) {
    let hidden = dir.join(format!(".{name}.tmp"));
    std::fs::write(&hidden, text).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_over_several_ticks_are_each_read_once_in_full() {
    let dir = temp_dir("drop");
    // One file is there before the stream starts.
    drop_file(&dir, "a.csv", "sensor,temp\ns1,1.5\ns2,2.5\n");
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (sensor TEXT, temp DOUBLE) WITH (connector = 'files', path = '{}', format = 'csv', header = 'true', pattern = '*.csv', settle = '500ms')",
        dir.display()
    ))
    .await
    .unwrap();
    let mut query =
        crate::common::start(&ctx, "SELECT count(*) AS n, sum(temp) AS total FROM r").await;

    let writer = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(250));
            // A large file, read in pieces.
            let mut large = String::from("sensor,temp\n");
            for i in 0..20_000 {
                large.push_str(&format!("s{},1\n", i % 7));
            }
            drop_file(&dir, "b.csv", &large);
            // An empty file, a file another pattern ignores, a hidden one.
            drop_file(&dir, "c.csv", "");
            std::fs::write(dir.join("notes.txt"), "s9,100\n").unwrap();
            std::fs::write(dir.join(".half.csv"), "s9,100\n").unwrap();
            // A file written slowly, in two parts well within the settle time.
            let slow = dir.join("d.csv");
            std::fs::write(&slow, "sensor,temp\ns3,").unwrap();
            std::thread::sleep(Duration::from_millis(60));
            std::fs::write(&slow, "sensor,temp\ns3,10\ns4,warm\ns5,20\n").unwrap();
        })
    };
    writer.await.unwrap();

    // 2 + 20,000 + 2 good rows; s4,warm is bad.
    let expected_rows = 20_004;
    let mut rows_seen = 0;
    let mut total = 0.0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while rows_seen < expected_rows {
        let output = tokio::time::timeout_at(deadline, query.next())
            .await
            .expect("all rows in time")
            .expect("the query runs")
            .expect("a batch");
        for row in rows(&output) {
            rows_seen += row[0].parse::<i64>().unwrap();
            if row[1] != "NULL" {
                total += row[1].parse::<f64>().unwrap();
            }
        }
    }
    // Nothing more comes: each file was read once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    query.finish();
    while let Some(output) = tokio::time::timeout(DEADLINE, query.next()).await.unwrap() {
        for row in rows(&output.unwrap()) {
            rows_seen += row[0].parse::<i64>().unwrap();
        }
    }
    assert_eq!(rows_seen, expected_rows);
    assert_eq!(total, 1.5 + 2.5 + 20_000.0 + 10.0 + 20.0);
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("line 3") && warnings[0].contains("file 'd.csv'"),
        "{warnings:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_directory_that_does_not_exist_is_a_clear_error() {
    let ctx = StreamContext::new(Duration::from_millis(100));
    let missing = std::env::temp_dir().join(format!("brook-files-missing-{}", std::process::id()));
    ctx.sql(&format!(
        "CREATE STREAM r (line TEXT) WITH (connector = 'files', path = '{}')",
        missing.display()
    ))
    .await
    .unwrap();
    let err = ctx.sql("SELECT line FROM r").await.unwrap_err();
    assert!(err.to_string().contains("cannot watch directory"), "{err}");
    assert_eq!(err.kind(), brook::ErrorKind::External);
}

/// Reads outputs of `query` until `rows` rows have come (within
/// [`DEADLINE`]), then finishes it and checks that no row more comes.
/// Returns the rows of each output that had rows, output by output.
async fn outputs_until(query: &mut brook::ContinuousQuery, rows: usize) -> Vec<Vec<Vec<String>>> {
    let mut outputs = Vec::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen < rows {
        let output = tokio::time::timeout_at(deadline, query.next())
            .await
            .expect("all rows in time")
            .expect("the query runs")
            .expect("a batch");
        let output_rows = crate::common::rows(&output);
        if !output_rows.is_empty() {
            seen += output_rows.len();
            outputs.push(output_rows);
        }
    }
    // Nothing more comes: each file was read once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    query.finish();
    while let Some(output) = tokio::time::timeout(DEADLINE, query.next()).await.unwrap() {
        let output_rows = crate::common::rows(&output.unwrap());
        assert!(output_rows.is_empty(), "rows read twice: {output_rows:?}");
    }
    outputs
}

fn text_rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| row.iter().map(|cell| cell.to_string()).collect())
        .collect()
}

// ---- JSON lines ----

#[tokio::test]
async fn json_lines_over_a_socket_give_exact_rows_and_bad_lines_by_number() {
    let text = concat!(
        "{\"sensor\": \"s1\", \"level\": 3, \"temp\": 1.5}\n",
        "{\"sensor\": \"s2\", \"extra\": {\"a\": [1, 2]}}\n",
        "{\"level\": 300}\n",
        "not json\n",
        "{\"temp\": -0.25, \"level\": -7, \"sensor\": \"s3\"}\r\n",
        "{\"sensor\": \"s4\", \"level\": \"12\"}",
    );
    // The same rows however the bytes are cut into reads.
    for cut in [1, 7, 40, text.len()] {
        let chunks: Vec<Vec<u8>> = text.as_bytes().chunks(cut).map(<[u8]>::to_vec).collect();
        let address = crate::common::chunk_server(chunks, Duration::ZERO);
        let (warn, warnings) = recording_warnings();
        let ctx = StreamContext::with_warning_handler(Duration::from_millis(20), warn);
        ctx.sql(&format!(
            "CREATE STREAM r (sensor TEXT, level TINYINT, temp DOUBLE) WITH (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'json')",
            crate::common::port_of(&address)
        ))
        .await
        .unwrap();
        let query = crate::common::start(&ctx, "SELECT sensor, level, temp FROM r").await;
        let outputs = crate::common::collect_all(query).await;
        let rows: Vec<Vec<String>> = outputs.iter().flat_map(rows).collect();
        assert_eq!(
            rows,
            text_rows(&[
                &["s1", "3", "1.5"],
                &["s2", "NULL", "NULL"],
                &["s3", "-7", "-0.25"],
                &["s4", "12", "NULL"],
            ]),
            "reads of {cut} bytes"
        );
        let warnings = warnings.lock().unwrap().clone();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("line 3") && warnings[0].contains("column 'level': '300'"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("line 4"), "{warnings:?}");
        let stream = &ctx.streams()[0];
        assert_eq!((stream.rows_received, stream.rows_dropped), (4, 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_json_values_that_do_not_fit_their_column_are_bad_rows_naming_file_and_line() {
    let dir = temp_dir("json");
    drop_file(
        &dir,
        "a.json",
        concat!(
            "{\"id\": 1, \"small\": 127, \"n\": 10, \"ok\": true}\n",
            "{\"id\": 2, \"small\": 300}\n",
            "{\"id\": 3, \"n\": \"ten\"}\n",
            "{\"id\": 4, \"n\": 2.5}\n",
            "{\"id\": 5, \"n\": 3000000000}\n",
            "{\"id\": 6, \"ok\": 1}\n",
            "{\"id\": 7, \"n\": -3, \"small\": -128, \"ok\": false}\n",
        ),
    );
    drop_file(&dir, "b.json", "{\"id\": 8}\n\n{\"id\": 9, \"n\": 1e2}\n");
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (id BIGINT, small TINYINT, n INT, ok BOOLEAN) WITH (connector = 'files', path = '{}', format = 'json', settle = '0ms')",
        dir.display()
    ))
    .await
    .unwrap();
    let mut query = crate::common::start(&ctx, "SELECT id, small, n, ok FROM r").await;
    let rows: Vec<Vec<String>> = outputs_until(&mut query, 3).await.concat();
    assert_eq!(
        rows,
        text_rows(&[
            &["1", "127", "10", "true"],
            &["7", "-128", "-3", "false"],
            &["8", "NULL", "NULL", "NULL"],
        ])
    );
    let warnings = warnings.lock().unwrap().clone();
    let expected = [
        ("a.json", "line 2", "'300'"),
        ("a.json", "line 3", "'ten' is not an integer"),
        ("a.json", "line 4", "'2.5' is not an integer"),
        ("a.json", "line 5", "'3000000000'"),
        ("a.json", "line 6", "is not a BOOLEAN"),
        ("b.json", "line 2", "empty line"),
        ("b.json", "line 3", "'1e2' is not an integer"),
    ];
    assert_eq!(warnings.len(), expected.len(), "{warnings:?}");
    for (warning, (file, line, why)) in warnings.iter().zip(expected) {
        assert!(
            warning.contains(&format!("file '{file}'"))
                && warning.contains(&format!("{line}:"))
                && warning.contains(why),
            "{warning} should name {file}, {line}, {why}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Epoch timestamps ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_files_with_timestamp_format_epoch_ms_give_exact_instants_and_report_bad_values_by_line()
 {
    let dir = temp_dir("epoch-ms");
    drop_file(
        &dir,
        "readings.csv",
        concat!(
            "sensor,at,day\n",
            "s1,1700000000123,2023-11-14\n",
            "s2,-1,1969-12-31\n",
            "s3,2023-11-14 22:13:20,2023-11-14\n",
            "s4,1700000000123.5,2023-11-14\n",
            "s5,0,1970-01-01\n",
            "s6,1e3,1970-01-01\n",
        ),
    );
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (sensor TEXT, at TIMESTAMP, day DATE) WITH (connector = 'files', path = '{}', format = 'csv', header = 'true', settle = '0ms', timestamp_format = 'epoch_ms')",
        dir.display()
    ))
    .await
    .unwrap();
    assert!(
        ctx.streams()[0]
            .options
            .contains("timestamp_format = 'epoch_ms'"),
        "{}",
        ctx.streams()[0].options
    );
    let mut query = crate::common::start(
        &ctx,
        "SELECT sensor, at, CAST(at AS BIGINT) AS nanos, day FROM r",
    )
    .await;
    let rows: Vec<Vec<String>> = outputs_until(&mut query, 3).await.concat();
    assert_eq!(
        rows,
        text_rows(&[
            &[
                "s1",
                "2023-11-14T22:13:20.123",
                "1700000000123000000",
                "2023-11-14"
            ],
            &["s2", "1969-12-31T23:59:59.999", "-1000000", "1969-12-31"],
            &["s5", "1970-01-01T00:00:00", "0", "1970-01-01"],
        ])
    );
    let warnings = warnings.lock().unwrap().clone();
    let expected = [
        (
            "line 4",
            "column 'at': '2023-11-14 22:13:20' is not a TIMESTAMP in epoch milliseconds",
        ),
        (
            "line 5",
            "column 'at': '1700000000123.5' is not a whole number of milliseconds",
        ),
        (
            "line 7",
            "column 'at': '1e3' is not a TIMESTAMP in epoch milliseconds",
        ),
    ];
    assert_eq!(warnings.len(), expected.len(), "{warnings:?}");
    for (warning, (line, why)) in warnings.iter().zip(expected) {
        assert!(
            warning.contains("stream 'r'")
                && warning.contains("file 'readings.csv'")
                && warning.contains(&format!("{line}:"))
                && warning.contains(why),
            "{warning} should name readings.csv, {line}, {why}"
        );
    }
    let stream = &ctx.streams()[0];
    assert_eq!((stream.rows_received, stream.rows_dropped), (3, 3));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Parquet ----

/// Writes `batch` as the Parquet file `name` in `dir` (renamed in whole).
fn drop_parquet(dir: &Path, name: &str, batch: &datafusion::arrow::record_batch::RecordBatch) {
    let hidden = dir.join(format!(".{name}.tmp"));
    let file = std::fs::File::create(&hidden).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

fn id_value_batch(ids: Vec<i64>, values: Vec<f64>) -> datafusion::arrow::record_batch::RecordBatch {
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    datafusion::arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("value", DataType::Float64, true),
        ])),
        vec![
            std::sync::Arc::new(Int64Array::from(ids)),
            std::sync::Arc::new(Float64Array::from(values)),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_file_larger_than_the_streams_bounds_goes_through_whole() {
    let dir = temp_dir("parquet-large");
    let rows = 50_000;
    drop_parquet(
        &dir,
        "large.parquet",
        &id_value_batch(
            (0..rows).collect(),
            (0..rows).map(|i| (i % 10) as f64).collect(),
        ),
    );
    let ctx = StreamContext::new(Duration::from_millis(20));
    ctx.sql(&format!(
        "CREATE STREAM r (value DOUBLE, id BIGINT) WITH (connector = 'files', path = '{}', format = 'parquet', settle = '0ms', max_pending_rows = '1000')",
        dir.display()
    ))
    .await
    .unwrap();
    let mut query = crate::common::start(
        &ctx,
        "SELECT count(*) AS n, sum(value) AS total, min(id) AS low, max(id) AS high FROM r",
    )
    .await;
    let mut count = 0;
    let (mut total, mut low, mut high) = (0.0, i64::MAX, i64::MIN);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while count < rows {
        let output = tokio::time::timeout_at(deadline, query.next())
            .await
            .expect("all rows in time")
            .unwrap()
            .unwrap();
        for row in rows_of_output(&output) {
            let n: i64 = row[0].parse().unwrap();
            if n > 0 {
                count += n;
                total += row[1].parse::<f64>().unwrap();
                low = low.min(row[2].parse().unwrap());
                high = high.max(row[3].parse().unwrap());
            }
        }
    }
    assert_eq!(
        (count, total, low, high),
        (rows, 4.5 * rows as f64, 0, rows - 1)
    );
    let stream = &ctx.streams()[0];
    assert!(
        stream.peak_pending_rows <= 1000,
        "the bound held: {}",
        stream.peak_pending_rows
    );
    drop(query);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rows_of_output(output: &brook::BatchOutput) -> Vec<Vec<String>> {
    rows(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_parquet_file_is_reported_by_name_and_the_others_are_counted() {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let dir = temp_dir("parquet-bad");
    drop_parquet(
        &dir,
        "a.parquet",
        &id_value_batch(vec![1, 2], vec![0.5, 1.5]),
    );
    // Not Parquet at all, and a good file cut short.
    drop_file(&dir, "b.parquet", "id,value\n3,4\n");
    let mut good = Vec::new();
    {
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
            &mut good,
            id_value_batch(vec![5], vec![5.0]).schema(),
            None,
        )
        .unwrap();
        writer.write(&id_value_batch(vec![5], vec![5.0])).unwrap();
        writer.close().unwrap();
    }
    std::fs::write(dir.join("c.parquet"), &good[..good.len() - 20]).unwrap();
    // A file without the column `value`.
    let ids_only = datafusion::arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![std::sync::Arc::new(Int64Array::from(vec![6]))],
    )
    .unwrap();
    drop_parquet(&dir, "d.parquet", &ids_only);
    // Values that do not fit the stream's columns: bad rows, numbered by row.
    drop_parquet(
        &dir,
        "e.parquet",
        &id_value_batch(vec![7, 300, 8], vec![7.0, 1.0, 8.25]),
    );
    drop_parquet(&dir, "f.parquet", &id_value_batch(vec![9], vec![9.0]));
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (id TINYINT, value DOUBLE) WITH (connector = 'files', path = '{}', format = 'parquet', settle = '0ms')",
        dir.display()
    ))
    .await
    .unwrap();
    let mut query = crate::common::start(&ctx, "SELECT id, value FROM r").await;
    let rows: Vec<Vec<String>> = outputs_until(&mut query, 5).await.concat();
    assert_eq!(
        rows,
        text_rows(&[
            &["1", "0.5"],
            &["2", "1.5"],
            &["7", "7.0"],
            &["8", "8.25"],
            &["9", "9.0"],
        ])
    );
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings[0].contains("b.parquet") && warnings[0].contains("not a readable Parquet file"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("c.parquet"), "{warnings:?}");
    assert!(
        warnings[2].contains("d.parquet")
            && warnings[2].contains("column 'value' is not in the file"),
        "{warnings:?}"
    );
    assert!(
        warnings[3].contains("line 2")
            && warnings[3].contains("file 'e.parquet'")
            && warnings[3].contains("column 'id': 300 (Int64) does not fit Int8"),
        "{warnings:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_files_per_batch_one_takes_one_file_per_batch_in_name_order() {
    let dir = temp_dir("max-files");
    // Dropped in another order than their names'.
    drop_file(&dir, "c.csv", "c,1\nc,2\n");
    drop_file(&dir, "a.csv", "a,1\na,2\na,3\n");
    drop_file(&dir, "b.csv", "b,1\n");
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM r (file TEXT, n INT) WITH (connector = 'files', path = '{}', format = 'csv', settle = '0ms', max_files_per_batch = '1')",
        dir.display()
    ))
    .await
    .unwrap();
    let mut query = crate::common::start(
        &ctx,
        "SELECT file, count(*) AS n FROM r GROUP BY file ORDER BY file",
    )
    .await;
    let outputs = outputs_until(&mut query, 3).await;
    assert_eq!(
        outputs,
        vec![
            text_rows(&[&["a", "3"]]),
            text_rows(&[&["b", "1"]]),
            text_rows(&[&["c", "2"]]),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
