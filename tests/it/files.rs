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
