//! The Delta Lake sink and Delta tables read back: each batch one commit
//! carrying the sink's transaction, append and upsert (a MERGE on the
//! key), partitioned; read back by delta-rs's own reader (independent of
//! brook's sink code) and by brook's `CREATE EXTERNAL TABLE ... STORED AS
//! DELTA`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use brook::StreamContext;
use datafusion::prelude::SessionContext;

use crate::common::DEADLINE;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-delta-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The table at `url` read by delta-rs (its latest version): its rows,
/// sorted, as text; its version; and sink `sink`'s transaction.
pub(crate) async fn read_delta(
    table: deltalake::DeltaTable,
    sql_order: &str,
    sink: &str,
) -> (Vec<Vec<String>>, Option<u64>, Option<i64>) {
    let version = table.version();
    let txn = table
        .snapshot()
        .unwrap()
        .transaction_version(table.log_store().as_ref(), format!("brook-sink-{sink}"))
        .await
        .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql(&format!("SELECT * FROM t ORDER BY {sql_order}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    (crate::common::table_rows(&batches), version, txn)
}

async fn open_local(dir: &Path) -> deltalake::DeltaTable {
    let url = url::Url::from_directory_path(std::fs::canonicalize(dir).unwrap()).unwrap();
    deltalake::open_table(url).await.unwrap()
}

fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

async fn run_to_end(ctx: &StreamContext) {
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .expect("the sinks finish in time")
        .expect("the sinks write every batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_sink_commits_each_batch_once_partitioned_and_reads_back_exactly() {
    let dir = temp_dir("append");
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM r (day TEXT, sensor TEXT, v BIGINT, ts TIMESTAMP) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO r VALUES ('2024-01-01', 's1', 1, TIMESTAMP '2024-01-01 10:00:00.123456'), ('2024-01-02', 's2', NULL, TIMESTAMP '2024-01-02 00:00:00')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO r VALUES ('2024-01-01', 's3', -3, NULL)")
        .await
        .unwrap();
    ctx.sql("INSERT INTO r VALUES ('2024-01-02', 's4', 4, TIMESTAMP '2024-01-02 23:59:59.999999'), ('2024-01-03', 'é', 5, TIMESTAMP '1999-12-31 23:59:59')")
        .await
        .unwrap();
    ctx.sql(&format!(
        "CREATE SINK lake WITH (connector = 'delta', path = '{}', partition_by = 'day') AS SELECT day, sensor, v * 10 AS v10, ts FROM r",
        dir.display()
    ))
    .await
    .unwrap();
    run_to_end(&ctx).await;

    let expected = strings(&[
        &["2024-01-01", "s1", "10", "2024-01-01T10:00:00.123456"],
        &["2024-01-01", "s3", "-30", "NULL"],
        &["2024-01-02", "s2", "NULL", "2024-01-02T00:00:00"],
        &["2024-01-02", "s4", "40", "2024-01-02T23:59:59.999999"],
        &["2024-01-03", "é", "50", "1999-12-31T23:59:59"],
    ]);
    let (rows, version, txn) = read_delta(open_local(&dir).await, "day, sensor", "lake").await;
    assert_eq!(rows, expected);
    // Created at version 0, then one commit per batch.
    assert_eq!(version, Some(3));
    assert_eq!(txn, Some(3));
    assert!(dir.join("day=2024-01-01").is_dir());
    assert!(dir.join("day=2024-01-03").is_dir());

    // brook reads it back as a table.
    let reader = StreamContext::new(Duration::from_millis(30));
    reader
        .sql(&format!(
            "CREATE EXTERNAL TABLE lake STORED AS DELTA LOCATION '{}'",
            dir.display()
        ))
        .await
        .unwrap();
    let out = reader
        .sql("SELECT day, sensor, v10, ts FROM lake ORDER BY day, sensor")
        .await
        .unwrap();
    let brook::SqlOutput::Rows { batches, .. } = out else {
        panic!("rows expected");
    };
    assert_eq!(crate::common::table_rows(&batches), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_upsert_sink_merges_on_the_key_and_a_changelog_delete_removes_the_row() {
    let dir = temp_dir("upsert");
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM words (word TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    for item in ["a b a", "b c", "a d d d"] {
        let values: Vec<String> = item.split(' ').map(|w| format!("('{w}')")).collect();
        ctx.sql(&format!("INSERT INTO words VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    ctx.sql(&format!(
        "CREATE SINK totals WITH (connector = 'delta', path = '{}', mode = 'upsert', key = 'word') AS SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
        dir.display()
    ))
    .await
    .unwrap();
    run_to_end(&ctx).await;
    let (rows, _, txn) = read_delta(open_local(&dir).await, "word", "totals").await;
    assert_eq!(
        rows,
        strings(&[&["a", "3"], &["b", "2"], &["c", "1"], &["d", "3"]])
    );
    assert_eq!(txn, Some(3));

    // A changelog's result: a status whose last order left it is deleted
    // (`-D`), the others replaced. Two files, one batch each.
    let input = temp_dir("upsert-input");
    let dir2 = temp_dir("upsert-changes");
    std::fs::create_dir_all(&input).unwrap();
    let change = |op: &str, before: Option<(i64, &str)>, after: Option<(i64, &str)>| {
        let row = |r: Option<(i64, &str)>| {
            r.map_or("null".to_string(), |(id, status)| {
                format!(r#"{{"id": {id}, "status": "{status}"}}"#)
            })
        };
        format!(
            r#"{{"before": {}, "after": {}, "op": "{op}"}}"#,
            row(before),
            row(after)
        )
    };
    std::fs::write(
        input.join("1.json"),
        [
            change("c", None, Some((1, "new"))),
            change("c", None, Some((2, "new"))),
            change("c", None, Some((3, "paid"))),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    std::fs::write(
        input.join("2.json"),
        [
            change("u", Some((1, "new")), Some((1, "paid"))),
            change("d", Some((3, "paid")), None),
            change("u", Some((2, "new")), Some((2, "shipped"))),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM orders (id INT PRIMARY KEY, status TEXT) WITH (connector = 'files', path = '{}', format = 'debezium-json', settle = '0ms', max_files_per_batch = '1')",
        input.display()
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK by_status WITH (connector = 'delta', path = '{}', mode = 'upsert', key = 'status') AS SELECT status, COUNT(*) AS n FROM RUNNING(orders, 'update') GROUP BY status",
        dir2.display()
    ))
    .await
    .unwrap();
    let expected = strings(&[&["paid", "1"], &["shipped", "1"]]);
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut rows = Vec::new();
    while std::time::Instant::now() < deadline {
        if dir2.join("_delta_log").is_dir() {
            rows = read_delta(open_local(&dir2).await, "status", "by_status")
                .await
                .0;
            if rows == expected {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, expected);
    let _ = std::fs::remove_dir_all(&input);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_delta_table_whose_columns_differ_is_refused_naming_the_column() {
    let dir = temp_dir("mismatch");
    let ctx = StreamContext::new(Duration::from_millis(30));
    ctx.sql("CREATE STREAM r (k TEXT, v BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    ctx.sql(&format!(
        "CREATE SINK first WITH (connector = 'delta', path = '{}') AS SELECT k, v FROM r",
        dir.display()
    ))
    .await
    .unwrap();
    let err = ctx
        .sql(&format!(
            "CREATE SINK second WITH (connector = 'delta', path = '{}') AS SELECT k, CAST(v AS DOUBLE) AS v FROM r",
            dir.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column 'v'") && err.contains("Float64"),
        "{err}"
    );
    let err = ctx
        .sql(&format!(
            "CREATE SINK third WITH (connector = 'delta', path = '{}') AS SELECT k, v, v AS w FROM r",
            dir.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column 'w'"), "{err}");
    let err = ctx
        .sql("CREATE SINK fourth WITH (connector = 'delta', path = '/tmp/x', mode = 'upsert') AS SELECT k, v FROM r")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn lines_in(dir: &Path) -> Vec<Vec<String>> {
    if !dir.join("_delta_log").is_dir() {
        return Vec::new();
    }
    read_delta(open_local(dir).await, "line", "landed").await.0
}

async fn wait_for_lines(dir: &Path, expected: &[Vec<String>]) -> Vec<Vec<String>> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let rows = lines_in(dir).await;
        if rows == expected || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A restart from a checkpoint older than the table's last commit (a
/// crash after a commit, before its checkpoint), with Parquet files the
/// table never committed (a crash between writing them and the commit):
/// the commits after the checkpoint are undone, the batches replayed, and
/// the table holds every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_delta_sink_restarted_from_an_older_checkpoint_holds_every_row_once() {
    // Also found here: DROP SINK said the sink did not exist when its
    // query ended between DROP SINK's lookup and its wait (a Delta sink's
    // query stops at once).
    let input = temp_dir("resume-input");
    let table = temp_dir("resume-table");
    let checkpoints = temp_dir("resume-ck");
    let old = temp_dir("resume-ck-old");
    std::fs::create_dir_all(&input).unwrap();
    let file = |n: usize| -> Vec<String> { (0..50).map(|i| format!("f{n}-{i:02}")).collect() };
    let put = |n: usize| {
        let hidden = input.join(format!(".f{n}.txt"));
        std::fs::write(&hidden, file(n).join("\n") + "\n").unwrap();
        std::fs::rename(&hidden, input.join(format!("f{n}.txt"))).unwrap();
    };
    let expected = |files: &[usize]| -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = files
            .iter()
            .flat_map(|n| file(*n))
            .map(|l| vec![l])
            .collect();
        rows.sort();
        rows
    };
    let start = |checkpoints: PathBuf| {
        let input = input.clone();
        let table = table.clone();
        async move {
            let (warn, warnings) = crate::common::recording_warnings();
            let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
            ctx.set_checkpoint_dir(Some(checkpoints)).unwrap();
            ctx.sql(&format!(
                "CREATE STREAM lines (line TEXT) WITH (connector = 'files', path = '{}', settle = '0ms', max_files_per_batch = '1')",
                input.display()
            ))
            .await
            .unwrap();
            ctx.sql(&format!(
                "CREATE SINK landed WITH (connector = 'delta', path = '{}') AS SELECT line FROM lines",
                table.display()
            ))
            .await
            .unwrap();
            (ctx, warnings)
        }
    };
    let (ctx, warnings) = start(checkpoints.clone()).await;
    put(1);
    assert_eq!(
        wait_for_lines(&table, &expected(&[1])).await,
        expected(&[1])
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The checkpoints as they were after file 1.
    copy_dir(&checkpoints, &old);
    put(2);
    assert_eq!(
        wait_for_lines(&table, &expected(&[1, 2])).await,
        expected(&[1, 2])
    );
    if let Err(err) = ctx.sql("DROP SINK landed").await {
        let seen = warnings.lock().unwrap().clone();
        panic!("{err}: {seen:?} {:?}", ctx.wait_for_sinks().await);
    }
    drop(ctx);
    let version_before = open_local(&table).await.version().unwrap();
    // Files written but never committed.
    std::fs::write(
        table.join("part-00000-never-committed.parquet"),
        b"PAR1 torn",
    )
    .unwrap();
    put(3);
    let (ctx, warnings) = start(old.clone()).await;
    let rows = wait_for_lines(&table, &expected(&[1, 2, 3])).await;
    assert_eq!(
        rows,
        expected(&[1, 2, 3]),
        "every line once: {:?}",
        warnings.lock().unwrap()
    );
    // The restart undid file 2's commit (RESTORE) before writing again.
    let after = open_local(&table).await;
    assert!(after.version().unwrap() > version_before + 1);
    if let Err(err) = ctx.sql("DROP SINK landed").await {
        let seen = warnings.lock().unwrap().clone();
        panic!("{err}: {seen:?} {:?}", ctx.wait_for_sinks().await);
    }
    for dir in [&input, &table, &checkpoints, &old] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
