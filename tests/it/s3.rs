//! S3 paths against a real S3 server (SeaweedFS on 127.0.0.1): the
//! directory source over a prefix, the file sinks, external tables and
//! checkpoints; wrong credentials, a missing bucket and an endpoint not
//! there are errors at CREATE that name the cause and never the secret.

use std::sync::Arc;
use std::time::Duration;

use brook::StreamContext;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::common::{DEADLINE, recording_warnings, rows};
use crate::s3_server::{S3Server, SECRET_KEY};

async fn put(store: &Arc<dyn ObjectStore>, key: &str, bytes: impl Into<PutPayload>) {
    store
        .put(&ObjectPath::from(key), bytes.into())
        .await
        .unwrap();
}

/// Sums `count(*)` and `sum(v)` over the query's batches until `rows`
/// rows were counted.
async fn count_and_sum(query: &mut brook::ContinuousQuery, rows_expected: i64) -> (i64, f64) {
    let (mut seen, mut total) = (0, 0.0);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen < rows_expected {
        let output = tokio::time::timeout_at(deadline, query.next())
            .await
            .expect("all rows in time")
            .expect("the query runs")
            .expect("a batch");
        for row in rows(&output) {
            seen += row[0].parse::<i64>().unwrap();
            if row[1] != "NULL" {
                total += row[1].parse::<f64>().unwrap();
            }
        }
    }
    (seen, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_added_under_an_s3_prefix_are_each_read_once_and_a_multipart_upload_only_whole() {
    let server = tokio::task::spawn_blocking(|| {
        let server = S3Server::start();
        server.create_bucket("landing");
        server
    })
    .await
    .unwrap();
    let store = server.client("landing");
    put(&store, "in/a.csv", "k,v\na,1\nb,2\n").await;
    // Not under the prefix's top level, not matching, hidden: never read.
    put(&store, "in/deeper/x.csv", "k,v\nz,1000\n").await;
    put(&store, "in/notes.txt", "k,v\nz,1000\n").await;
    put(&store, "in/_tmp.csv", "k,v\nz,1000\n").await;
    put(&store, "other/b.csv", "k,v\nz,1000\n").await;

    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM r (k TEXT, v DOUBLE) WITH (connector = 'files', path = 's3://landing/in/', format = 'csv', header = 'true', pattern = '*.csv', settle = '200ms', {})",
        server.options_sql()
    ))
    .await
    .unwrap();
    let shown = format!("{:?}", ctx.sql("SHOW STREAMS").await.unwrap());
    assert!(!shown.contains(SECRET_KEY), "{shown}");
    let mut query =
        crate::common::start(&ctx, "SELECT count(*) AS n, sum(v) AS total FROM r").await;

    // While brook runs: a small object, and a large one uploaded in parts
    // with pauses longer than the settle time between them.
    put(&store, "in/b.csv", "k,v\nc,3\nd,4\nbad,x\n").await;
    // Three parts (S3's smallest part is 5 MiB), with pauses of several
    // listings between them: the object is listed only once complete.
    let large_rows = 1_600_000;
    let mut large = String::from("k,v\n");
    for i in 0..large_rows {
        large.push_str(&format!("key{:05},1\n", i % 11));
    }
    let mut upload = store
        .put_multipart(&ObjectPath::from("in/c.csv"))
        .await
        .unwrap();
    let bytes = bytes::Bytes::from(large);
    assert!(bytes.len() > 10 * 1024 * 1024);
    for piece in bytes.chunks(5 * 1024 * 1024) {
        upload
            .put_part(bytes.slice_ref(piece).into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    upload.complete().await.unwrap();

    let (seen, total) = count_and_sum(&mut query, 2 + 2 + large_rows).await;
    assert_eq!(seen, 4 + large_rows);
    assert_eq!(total, 1.0 + 2.0 + 3.0 + 4.0 + large_rows as f64);
    // Nothing more comes (each object read once).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let more = tokio::time::timeout(Duration::from_millis(300), query.next()).await;
    if let Ok(Some(Ok(output))) = more {
        assert!(
            rows(&output).iter().all(|r| r[0] == "0"),
            "{:?}",
            rows(&output)
        );
    }
    let warnings = warnings.lock().unwrap().join("\n");
    assert!(
        warnings.contains("b.csv") && warnings.contains("line 4"),
        "{warnings}"
    );
    assert!(!warnings.contains(SECRET_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_a_missing_bucket_and_no_server_are_errors_at_create_without_the_secret()
{
    let server = tokio::task::spawn_blocking(|| {
        let server = S3Server::start();
        server.create_bucket("there");
        server
    })
    .await
    .unwrap();
    let ctx = StreamContext::new(Duration::from_millis(100));
    let create = |path: &str, options: String| {
        format!(
            "CREATE STREAM s (line TEXT) WITH (connector = 'files', path = '{path}', {options})"
        )
    };
    let wrong = server
        .options_sql()
        .replace(SECRET_KEY, "not-the-secret-123");
    let err = ctx
        .sql(&create("s3://there/in/", wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("credentials were refused"), "{err}");
    assert!(
        !err.contains("not-the-secret-123") && !err.contains(SECRET_KEY),
        "{err}"
    );

    let err = ctx
        .sql(&create("s3://nowhere/in/", server.options_sql()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket does not exist"), "{err}");
    assert!(err.contains("s3://nowhere/in"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = std::time::Instant::now();
    let err = ctx
        .sql(&create(
            "s3://there/in/",
            server
                .options_sql()
                .replace(&server.endpoint(), &format!("http://127.0.0.1:{port}")),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // A plain-http endpoint needs s3.allow_http.
    let err = ctx
        .sql(&create(
            "s3://there/in/",
            format!("s3.endpoint = '{}'", server.endpoint()),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3.allow_http"), "{err}");
}
