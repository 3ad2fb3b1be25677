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
pub(crate) async fn count_and_sum(
    query: &mut brook::ContinuousQuery,
    rows_expected: i64,
) -> (i64, f64) {
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
    let server = S3Server::start_with_bucket("landing").await;
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
    let server = S3Server::start_with_bucket("there").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_written_to_s3_read_back_exactly_by_an_external_table_and_by_the_parquet_reader()
 {
    let server = S3Server::start_with_bucket("out").await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(30), warn);
    ctx.sql("CREATE STREAM nums (n BIGINT, label TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (1, 'one'), (2, NULL)")
        .await
        .unwrap();
    ctx.sql("INSERT INTO nums VALUES (3, 'three')")
        .await
        .unwrap();
    ctx.sql(&format!(
        "CREATE SINK halves WITH (connector = 'file', path = 's3://out/halves/', format = 'parquet', {}) AS SELECT n, n * 2.5 AS x, upper(label) AS loud FROM nums",
        server.options_sql()
    ))
    .await
    .unwrap();
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();
    let store = server.client("out");
    let mut names: Vec<String> = store
        .list(Some(&ObjectPath::from("halves")))
        .map(|o| o.unwrap().location.to_string())
        .collect()
        .await;
    names.sort();
    assert_eq!(
        names,
        [
            "halves/halves-000001.parquet",
            "halves/halves-000002.parquet"
        ]
    );
    // The parquet crate, on the bytes fetched.
    let mut read = Vec::new();
    for name in &names {
        let bytes = store
            .get(&ObjectPath::from(name.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes, 1024,
        )
        .unwrap();
        for batch in reader {
            read.extend(crate::common::table_rows(&[batch.unwrap()]));
        }
    }
    let expected = [
        ["1", "1", "2.5", "ONE"],
        ["1", "2", "5.0", "NULL"],
        ["2", "3", "7.5", "THREE"],
    ];
    let without_time: Vec<Vec<String>> = read
        .iter()
        .map(|r| vec![r[0].clone(), r[2].clone(), r[3].clone(), r[4].clone()])
        .collect();
    assert_eq!(without_time, expected);
    // An external table over the prefix, read by DataFusion inside brook.
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE halves STORED AS PARQUET LOCATION 's3://out/halves/' OPTIONS ('s3.endpoint' '{}', 's3.access_key_id' '{}', 's3.secret_access_key' '{SECRET_KEY}', 's3.allow_http' 'true')",
        server.endpoint(),
        crate::s3_server::ACCESS_KEY
    ))
    .await
    .unwrap();
    let brook::SqlOutput::Rows { batches, .. } = ctx
        .sql("SELECT batch, n, x, loud FROM halves ORDER BY n")
        .await
        .unwrap()
    else {
        panic!("rows expected");
    };
    assert_eq!(crate::common::table_rows(&batches), expected);
    assert!(warnings.lock().unwrap().is_empty());
}

/// A Delta table in the S3 server, opened as brook opens it.
#[cfg(feature = "delta")]
pub(crate) async fn s3_delta(
    server: &S3Server,
    bucket: &str,
    prefix: &str,
) -> deltalake::DeltaTable {
    let url = url::Url::parse(&format!("s3://{bucket}/{prefix}")).unwrap();
    let root = server.client(bucket);
    let config = deltalake::logstore::StorageConfig::default();
    let prefixed: Arc<dyn ObjectStore> =
        Arc::from(config.decorate_store(Arc::clone(&root), &url).unwrap());
    let mut table = deltalake::DeltaTable::new(deltalake::logstore::default_logstore(
        prefixed, root, &url, &config,
    ));
    table.load().await.unwrap();
    table
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brook_killed_six_times_with_checkpoints_and_delta_tables_on_s3_holds_every_batch_once() {
    use std::collections::BTreeMap;
    let server = S3Server::start_with_bucket("lake").await;
    let store = server.client("lake");
    let script = std::env::temp_dir().join(format!("brook-s3-kill-{}.sql", std::process::id()));
    // Streams and sinks take the server from the AWS environment. Each
    // query reads a stream of its own (a stream resumes from one query's
    // checkpoint).
    std::fs::write(
        &script,
        "SET batch_interval = '100ms';\n\
         CREATE STREAM lines (line TEXT) WITH (connector = 'files', path = 's3://lake/in/', settle = '0ms', start = 'new');\n\
         CREATE SINK totals WITH (connector = 'delta', path = 's3://lake/totals', mode = 'upsert', key = 'word') AS \
           SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM RUNNING(lines)) GROUP BY word;\n\
         CREATE STREAM lines2 (line TEXT) WITH (connector = 'files', path = 's3://lake/in/', settle = '0ms', start = 'new');\n\
         CREATE SINK counts WITH (connector = 'delta', path = 's3://lake/counts') AS \
           SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines2) GROUP BY word;\n",
    )
    .unwrap();
    let brook = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
            .args([
                "run",
                script.to_str().unwrap(),
                "--checkpoint",
                "s3://lake/ck",
            ])
            .env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    const FILES: u64 = 30;
    let words_of = |n: u64| -> String {
        let mut rng = crate::common::Rng(0x5eed ^ ((n + 1) * 0x9e37_79b9));
        (0..100)
            .map(|_| {
                (0..3)
                    .map(|_| format!("w{}", rng.below(40)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for n in 0..FILES {
        for word in words_of(n).split_whitespace() {
            *expected.entry(word.to_string()).or_default() += 1;
        }
    }
    let mut first = Some(brook());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for n in 0..FILES {
                put(&store, &format!("in/f{n:03}.txt"), words_of(n)).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let mut rng = crate::common::Rng(0xfeed_f00d);
    for _ in 0..6 {
        let mut child = first.take().unwrap_or_else(brook);
        tokio::time::sleep(Duration::from_millis(500 + rng.below(900))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    writer.await.unwrap();
    let mut child = brook();
    let totals = |rows: Vec<Vec<String>>| -> BTreeMap<String, i64> {
        let mut sums = BTreeMap::new();
        for row in rows {
            *sums.entry(row[0].clone()).or_default() += row[1].parse::<i64>().unwrap();
        }
        sums
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (mut upserted, mut appended) = (BTreeMap::new(), BTreeMap::new());
    while std::time::Instant::now() < deadline {
        upserted = totals(
            crate::delta::read_delta(s3_delta(&server, "lake", "totals").await, "word", "totals")
                .await
                .0,
        );
        appended = totals(
            crate::delta::read_delta(s3_delta(&server, "lake", "counts").await, "word", "counts")
                .await
                .0,
        );
        if upserted == expected && appended == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&script);
    assert_eq!(upserted, expected, "the upserted totals");
    assert_eq!(appended, expected, "the appended per-batch counts, summed");
    // The checkpoints are in the bucket.
    let checkpoints: Vec<_> = store
        .list(Some(&ObjectPath::from("ck")))
        .map(|o| o.unwrap().location.to_string())
        .collect()
        .await;
    assert!(
        checkpoints.iter().any(|c| c.ends_with(".ckpt")),
        "{checkpoints:?}"
    );
}

#[cfg(feature = "delta")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_lake_example_runs_as_written_against_a_local_s3_server() {
    let server = S3Server::start_with_bucket("lake").await;
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/queries/delta_lake.sql"
    ))
    .unwrap()
    .replace("http://127.0.0.1:8333", &server.endpoint());
    let path = std::env::temp_dir().join(format!("brook-delta-example-{}.sql", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let status = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
                .args(["run", path.to_str().unwrap()])
                .env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_REGION", "us-east-1")
                .env_remove("AWS_ENDPOINT_URL")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "{status}");
    let (pages, _, txn) =
        crate::delta::read_delta(s3_delta(&server, "lake", "pages").await, "page", "pages").await;
    assert_eq!(pages, [["/docs", "2"], ["/home", "3"]]);
    assert_eq!(txn, Some(3));
    let (clicks, version, _) = crate::delta::read_delta(
        s3_delta(&server, "lake", "clicks").await,
        "ts",
        "all_clicks",
    )
    .await;
    assert_eq!(version, Some(3));
    assert_eq!(
        clicks,
        [
            ["2026-12-01", "1", "/home", "2026-12-01T09:00:00"],
            ["2026-12-01", "2", "/docs", "2026-12-01T09:00:05"],
            ["2026-12-01", "1", "/docs", "2026-12-01T23:59:59"],
            ["2026-12-02", "3", "/home", "2026-12-02T00:00:01"],
            ["2026-12-02", "2", "/home", "2026-12-02T08:30:00"],
        ]
    );
}
