//! The S3 server going away while brook runs: a server stopped and
//! started again, and a read cut off in the middle of an object. Each is
//! reported, naming what failed and never the secret, and once the
//! server is back every row lands exactly once.

use std::sync::Arc;
use std::time::Duration;

use brook::StreamContext;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::{DEADLINE, recording_warnings};
use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

async fn put(store: &Arc<dyn ObjectStore>, key: &str, text: String) {
    store
        .put(&ObjectPath::from(key), text.into())
        .await
        .unwrap();
}

/// The rows of every Parquet object under `prefix`, sorted, as text.
async fn parquet_rows(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<Vec<String>> {
    let names: Vec<ObjectPath> = store
        .list(Some(&ObjectPath::from(prefix)))
        .map(|o| o.unwrap().location)
        .collect()
        .await;
    let mut read = Vec::new();
    for name in names {
        let bytes = store.get(&name).await.unwrap().bytes().await.unwrap();
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes, 1024,
        )
        .unwrap();
        for batch in reader {
            // Without the batch and time columns the file sink adds.
            for row in crate::common::table_rows(&[batch.unwrap()]) {
                read.push(row[row.len() - 2..].to_vec());
            }
        }
    }
    read.sort();
    read
}

/// The rows of the Delta table `s3://flow/table`, read by delta-rs.
#[cfg(feature = "delta")]
async fn delta_rows(server: &S3Server) -> Vec<Vec<String>> {
    let table = crate::s3::s3_delta(server, "flow", "table").await;
    crate::delta::read_delta(table, "k", "typed_table").await.0
}

fn strings(rows: &[(&str, i64)]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.to_string()])
        .collect();
    rows.sort();
    rows
}

/// Polls `read` until it gives `expected` (or the deadline passes, when
/// the last read is returned).
async fn wait_for<F, Fut>(expected: &[Vec<String>], mut read: F) -> Vec<Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Vec<String>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = read().await;
        if got == expected || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_stopped_mid_run_and_started_again_is_reported_and_every_row_lands_once() {
    let mut server = S3Server::start_with_bucket("flow").await;
    let store = server.client("flow");
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    let s3 = server.options_sql();
    let mut statements = vec![
        format!(
            "CREATE STREAM landed (k TEXT, v BIGINT) WITH (connector = 'files', path = 's3://flow/in/', format = 'csv', header = 'true', settle = '0ms', {s3})"
        ),
        "CREATE STREAM typed (k TEXT, v BIGINT) WITH (connector = 'queue')".to_string(),
        format!(
            "CREATE SINK copies WITH (connector = 'file', path = 's3://flow/copies/', format = 'parquet', {s3}) AS SELECT k, v FROM landed"
        ),
        format!(
            "CREATE SINK typed_files WITH (connector = 'file', path = 's3://flow/typed/', format = 'parquet', {s3}) AS SELECT k, v FROM typed"
        ),
    ];
    if cfg!(feature = "delta") {
        statements.push(format!(
            "CREATE SINK typed_table WITH (connector = 'delta', path = 's3://flow/table', {s3}) AS SELECT k, v FROM typed"
        ));
    }
    for sql in statements {
        ctx.sql(&sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    put(&store, "in/a.csv", "k,v\na,1\nb,2\n".into()).await;
    ctx.sql("INSERT INTO typed VALUES ('t1', 10)")
        .await
        .unwrap();
    let before = strings(&[("a", 1), ("b", 2)]);
    assert_eq!(
        wait_for(&before, || parquet_rows(&store, "copies")).await,
        before
    );
    #[cfg(feature = "delta")]
    {
        let typed_before = strings(&[("t1", 10)]);
        assert_eq!(
            wait_for(&typed_before, || delta_rows(&server)).await,
            typed_before
        );
    }

    // The server goes away; a batch comes while it is gone.
    server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    ctx.sql("INSERT INTO typed VALUES ('t2', 20), ('t3', 30)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let store = server.client("flow");

    put(&store, "in/b.csv", "k,v\nc,3\n".into()).await;
    ctx.sql("INSERT INTO typed VALUES ('t4', 40)")
        .await
        .unwrap();
    let copies = strings(&[("a", 1), ("b", 2), ("c", 3)]);
    let typed = strings(&[("t1", 10), ("t2", 20), ("t3", 30), ("t4", 40)]);
    let seen = || warnings.lock().unwrap().join("\n");
    assert_eq!(
        wait_for(&copies, || parquet_rows(&store, "copies")).await,
        copies,
        "{}",
        seen()
    );
    assert_eq!(
        wait_for(&typed, || parquet_rows(&store, "typed")).await,
        typed,
        "{}",
        seen()
    );
    #[cfg(feature = "delta")]
    assert_eq!(
        wait_for(&typed, || delta_rows(&server)).await,
        typed,
        "{}",
        seen()
    );
    // Each outage was reported where it was met, naming the place.
    let seen = seen();
    let mut expected_reports = vec![
        "stream 'landed': cannot list s3://flow/in",
        "sink 'typed_files'",
        "cannot write s3://flow/typed/typed_files-",
        "the endpoint cannot be reached",
    ];
    if cfg!(feature = "delta") {
        expected_reports.push("sink 'typed_table'");
    }
    for expected in expected_reports {
        assert!(seen.contains(expected), "{expected} in:\n{seen}");
    }
    assert!(!seen.contains(SECRET_KEY));
    for name in ["copies", "typed_files"] {
        ctx.sql(&format!("DROP SINK {name}")).await.unwrap();
    }
    #[cfg(feature = "delta")]
    ctx.sql("DROP SINK typed_table").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_read_cut_off_midway_goes_on_where_it_stopped_and_counts_every_row_once() {
    let server = S3Server::start_with_bucket("cut").await;
    // brook reaches the server through a proxy that the test cuts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = server.endpoint().trim_start_matches("http://").to_string();
    let mut proxy = crate::tcp_proxy::TcpProxy::start(port, &target);
    let store = server.client("cut");
    let big_rows: i64 = 3_000_000;
    let mut big = String::from("k,v\n");
    for i in 0..big_rows {
        big.push_str(&format!("key{:06},{}\n", i % 1000, i % 7));
    }
    let big_sum: i64 = (0..big_rows).map(|i| i % 7).sum();
    put(&store, "in/big.csv", big).await;

    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (k TEXT, v BIGINT) WITH (connector = 'files', path = 's3://cut/in/', format = 'csv', header = 'true', settle = '0ms', s3.endpoint = 'http://{}', s3.access_key_id = '{ACCESS_KEY}', s3.secret_access_key = '{SECRET_KEY}', s3.allow_http = 'true')",
        proxy.address()
    ))
    .await
    .unwrap();
    let mut query =
        crate::common::start(&ctx, "SELECT count(*) AS n, sum(v) AS total FROM r").await;
    // Part of the object is read: every connection is cut, and the server
    // cannot be reached for three seconds (longer than the S3 client's own
    // retries of a body cut off).
    let (seen_at_cut, total_at_cut) = crate::s3::count_and_sum(&mut query, 1).await;
    assert!(
        seen_at_cut < big_rows,
        "the object was read whole before the cut"
    );
    let proxy = tokio::task::spawn_blocking(move || {
        proxy.go_away();
        std::thread::sleep(Duration::from_secs(3));
        proxy.come_back();
        proxy
    })
    .await
    .unwrap();
    let (seen, total) = crate::s3::count_and_sum(&mut query, big_rows - seen_at_cut).await;
    assert_eq!(
        (seen_at_cut + seen, total_at_cut + total),
        (big_rows, big_sum as f64)
    );
    let seen_warnings = warnings.lock().unwrap().join("\n");
    assert!(
        seen_warnings.contains("stream 'r': cannot read file s3://cut/in/big.csv")
            && seen_warnings.contains("reading on in"),
        "no retry reported: {seen_warnings}"
    );
    assert!(!seen_warnings.contains(SECRET_KEY));
    drop(proxy);
}
