//! `brook serve` against real PostgreSQL clients: psql (installed with
//! PostgreSQL) and tokio-postgres. A materialized view kept current while
//! batches land, read consistently by many clients at once; prepared
//! statements with typed parameters and results; SUBSCRIBE, its cancel,
//! and a slow subscriber beside a fast one; passwords checked with
//! SCRAM-SHA-256; the connection limit.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::common::DEADLINE;
use crate::kafka_broker::free_port;

/// A `brook serve` process on a free loopback port.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut args = vec!["--batch-interval", "100ms", "serve", "--pg", &address];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_brook"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start brook serve");
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "brook serve did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=brook dbname=brook", self.port)
    }

    async fn client(&self) -> Client {
        connect(&self.url()).await.expect("connect")
    }

    /// psql's output (stdout and stderr) for `args`.
    fn psql(&self, args: &[&str]) -> String {
        let output = Command::new(psql())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "brook",
                "-d",
                "brook",
            ])
            .args(["-X", "-v", "VERBOSITY=verbose"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

/// psql, beside the PostgreSQL server binaries the tests use, or on PATH.
fn psql() -> std::path::PathBuf {
    let beside = crate::pg_server::find_bin().join("psql");
    if beside.is_file() {
        beside
    } else {
        "psql".into()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The rows of a simple query, as text.
async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_creates_a_stream_and_a_view_reads_it_after_each_batch_lists_it_and_shows_errors() {
    let server = Server::start(&[]);
    let created = server.psql(&[
        "-c",
        "CREATE STREAM words (word TEXT) WITH (connector = 'queue')",
        "-c",
        "CREATE MATERIALIZED VIEW totals AS SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word",
    ]);
    assert_eq!(created, "CREATE STREAM\nCREATE MATERIALIZED VIEW\n");
    let batches = [
        (
            "INSERT INTO words VALUES ('a'), ('b'), ('a')",
            " a    | 2\n b    | 1\n",
        ),
        (
            "INSERT INTO words VALUES ('b'), ('c')",
            " a    | 2\n b    | 2\n c    | 1\n",
        ),
    ];
    for (insert, expected) in batches {
        assert!(server.psql(&["-c", insert]).starts_with("INSERT 0 "));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let shown = server.psql(&["-c", "SELECT word, n FROM totals ORDER BY word"]);
            if shown.contains(expected) {
                break;
            }
            assert!(Instant::now() < deadline, "{shown}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let listed = server.psql(&["-c", "\\d"]);
    assert!(
        listed.contains("public | totals | materialized view | brook"),
        "{listed}"
    );
    assert!(
        listed.contains("public | words  | stream            | brook"),
        "{listed}"
    );
    let described = server.psql(&["-c", "\\d totals"]);
    assert!(described.contains(" word   | text   |"), "{described}");
    assert!(
        described.contains(" n      | bigint |           | not null |"),
        "{described}"
    );
    let failed = server.psql(&["-c", "SELECT nope FROM totals"]);
    assert!(failed.starts_with("ERROR:  42703: "), "{failed}");
    let failed = server.psql(&["-c", "SELECT * FROM missing"]);
    assert!(failed.starts_with("ERROR:  42P01: "), "{failed}");
    // A continuous query cannot end over a connection: it is refused, and
    // the server goes on.
    let refused = server.psql(&["-c", "SELECT * FROM words"]);
    assert!(
        refused.contains("ERROR:  0A000: ") && refused.contains("SUBSCRIBE"),
        "{refused}"
    );
    let queries = server.psql(&["-A", "-t", "-c", "SELECT output FROM brook.queries"]);
    assert_eq!(queries, "materialized view totals\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_take_typed_parameters_and_give_typed_results() {
    let server = Server::start(&[]);
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM readings (sensor TEXT, v DOUBLE, n BIGINT, ok BOOLEAN, day DATE, at TIMESTAMP) \
             WITH (connector = 'queue');
             CREATE MATERIALIZED VIEW latest AS SELECT sensor, MAX(v) AS v, MAX(n) AS n, \
             MAX(ok) AS ok, MAX(day) AS day, MAX(at) AS at FROM RUNNING(readings) GROUP BY sensor",
        )
        .await
        .unwrap();
    // Parameters bound by a prepared INSERT.
    let insert = client
        .prepare("INSERT INTO readings VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
    let at = day.and_hms_micro_opt(10, 11, 12, 345_678).unwrap();
    client
        .execute(&insert, &[&"s'1", &21.5f64, &7i64, &true, &day, &at])
        .await
        .unwrap();
    let statement = client
        .prepare("SELECT sensor, v, n, ok, day, at FROM latest WHERE n >= $1 AND sensor = $2")
        .await
        .unwrap();
    assert_eq!(statement.params().len(), 2);
    let deadline = Instant::now() + DEADLINE;
    let rows = loop {
        let rows = client.query(&statement, &[&5i64, &"s'1"]).await.unwrap();
        if !rows.is_empty() {
            break rows;
        }
        assert!(Instant::now() < deadline, "no row in the view");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let row = &rows[0];
    assert_eq!(row.get::<_, String>(0), "s'1");
    assert_eq!(row.get::<_, f64>(1), 21.5);
    assert_eq!(row.get::<_, i64>(2), 7);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, chrono::NaiveDate>(4), day);
    assert_eq!(row.get::<_, chrono::NaiveDateTime>(5), at);
    let none = client.query(&statement, &[&8i64, &"s'1"]).await.unwrap();
    assert!(none.is_empty());
    // A string of statements runs each, BEGIN and COMMIT included.
    client
        .batch_execute(
            "BEGIN; INSERT INTO readings VALUES ('s2', 1.0, 9, false, DATE '2026-12-07', \
             TIMESTAMP '2026-12-07 00:00:00'); COMMIT",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while client
        .query(&statement, &[&9i64, &"s2"])
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the second row never reached the view"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Transactions and session settings drivers send on their own (JDBC's
    // start-up sets these two) are accepted.
    client.batch_execute("BEGIN; COMMIT").await.unwrap();
    client
        .batch_execute(
            "SET extra_float_digits = 3; SET application_name = 'PostgreSQL JDBC Driver'",
        )
        .await
        .unwrap();
    // An error carries its SQLSTATE.
    let err = client
        .query("SELECT * FROM nowhere", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_reading_a_view_while_batches_land_each_see_one_batchs_result() {
    let server = Server::start(&[]);
    let setup = server.client().await;
    setup
        .batch_execute(
            "CREATE STREAM ticks (k BIGINT) WITH (connector = 'queue');
             CREATE MATERIALIZED VIEW counts AS SELECT k, COUNT(*) AS n FROM RUNNING(ticks) GROUP BY k",
        )
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        // Each INSERT adds one row to each of ten keys: in any one batch's
        // result every key has the same count.
        for _ in 0..60 {
            setup
                .batch_execute("INSERT INTO ticks VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut readers = Vec::new();
    for _ in 0..20 {
        let client = server.client().await;
        readers.push(tokio::spawn(async move {
            let statement = client
                .prepare("SELECT k, n FROM counts ORDER BY k")
                .await
                .unwrap();
            let mut seen = 0;
            for _ in 0..30 {
                let rows = client.query(&statement, &[]).await.unwrap();
                let counts: Vec<i64> = rows.iter().map(|r| r.get::<_, i64>(1)).collect();
                if !counts.is_empty() {
                    assert_eq!(counts.len(), 10, "{counts:?}");
                    assert!(
                        counts.iter().all(|n| *n == counts[0]),
                        "half a batch: {counts:?}"
                    );
                    seen = seen.max(counts[0]);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }
    let mut largest = 0;
    for reader in readers {
        largest = largest.max(reader.await.unwrap());
    }
    writer.await.unwrap();
    assert!(largest > 0, "no reader saw a batch's result");
}

/// Reads a subscription's rows until `rows` arrived: (batch, values...).
async fn subscribed(
    stream: &mut (
             impl futures::Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>> + Unpin
         ),
    rows: usize,
) -> Vec<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < rows {
        let message = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("a row in time")
            .expect("the subscription goes on")
            .expect("no error");
        if let SimpleQueryMessage::Row(row) = message {
            got.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_every_batch_in_order_a_cancel_stops_it_and_a_slow_subscriber_holds_back_only_itself()
 {
    let server = Server::start(&[]);
    let setup = server.client().await;
    setup
        .batch_execute(
            "CREATE STREAM events (v BIGINT) WITH (connector = 'queue');
             CREATE MATERIALIZED VIEW total AS SELECT SUM(v) AS s FROM RUNNING(events)",
        )
        .await
        .unwrap();
    // A view's subscriber: its rows as they are now, then each batch's.
    let viewer = server.client().await;
    let view_rows = viewer.simple_query_raw("SUBSCRIBE TO total").await.unwrap();
    tokio::pin!(view_rows);
    // A query's subscriber.
    let fast = server.client().await;
    let fast_rows = fast
        .simple_query_raw("SUBSCRIBE (SELECT v * 10 AS w FROM events)")
        .await
        .unwrap();
    tokio::pin!(fast_rows);
    // A slow one that never reads: its own query waits for it.
    let slow = server.client().await;
    let _slow_rows = slow
        .simple_query_raw("SUBSCRIBE (SELECT v, repeat('x', 10000) AS pad FROM events)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for v in 1..=3 {
        setup
            .batch_execute(&format!("INSERT INTO events VALUES ({v})"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let got = subscribed(&mut fast_rows, 3).await;
    let values: Vec<&str> = got.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(values, ["10", "20", "30"]);
    let batches: Vec<i64> = got.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        batches.windows(2).all(|w| w[0] < w[1]),
        "in batch order: {batches:?}"
    );
    // A result is sent when it changes: the sum before any event (NULL,
    // if a batch ran before the subscription), then after each.
    let mut totals = Vec::new();
    while totals.last().map(String::as_str) != Some("6") {
        let row = subscribed(&mut view_rows, 1).await.remove(0);
        totals.push(row[1].clone());
    }
    totals.retain(|t| t != "NULL");
    assert_eq!(totals, ["1", "3", "6"]);
    // The slow subscriber's backlog does not slow the fast one down.
    for v in 4..=40 {
        setup
            .batch_execute(&format!("INSERT INTO events VALUES ({v})"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = subscribed(&mut fast_rows, 37).await;
    assert_eq!(got.last().unwrap()[1], "400");
    // Cancelling stops the fast subscriber's query only.
    let queries = text_rows(&setup, "SELECT output FROM brook.queries ORDER BY id").await;
    assert_eq!(queries.len(), 3, "{queries:?}");
    fast.cancel_token().cancel_query(NoTls).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout(DEADLINE, fast_rows.next())
            .await
            .expect("an end")
        {
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
                break;
            }
            None => break,
        }
        assert!(Instant::now() < deadline);
    }
    let deadline = Instant::now() + DEADLINE;
    while text_rows(&setup, "SELECT output FROM brook.queries")
        .await
        .len()
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "the cancelled subscription's query still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection is usable after the cancel.
    assert_eq!(text_rows(&fast, "SELECT 1 + 1").await, [["2"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked_with_scram_and_beyond_loopback_one_is_required() {
    let dir = std::env::temp_dir().join(format!("brook-serve-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    std::fs::write(&file, "# users\nalice:s3cret\n").unwrap();
    let server = Server::start(&["--pg-password-file", file.to_str().unwrap()]);
    let base = format!("host=127.0.0.1 port={} dbname=brook", server.port);
    let client = connect(&format!("{base} user=alice password=s3cret"))
        .await
        .unwrap();
    assert_eq!(text_rows(&client, "SELECT 40 + 2").await, [["42"]]);
    let refused = connect(&format!("{base} user=alice password=wrong"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("28P01"), "{refused}");
    let refused = connect(&format!("{base} user=mallory password=s3cret"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("28P01"), "{refused}");
    // Any other address without a password file: refused at start.
    let output = Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["serve", "--pg", &format!("0.0.0.0:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("--pg-password-file"), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_connection_limit_is_told_so_and_files_are_refused_to_clients() {
    let server = Server::start(&["--pg-max-connections", "2"]);
    let first = server.client().await;
    let _second = server.client().await;
    let third = connect(&server.url()).await.expect_err("refused");
    let said = third.as_db_error().expect("the server's error");
    assert_eq!(said.code().code(), "53300");
    assert_eq!(said.message(), "sorry, too many clients already");
    let err = first
        .simple_query("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let said = err.as_db_error().expect("the server's error").message();
    assert!(said.contains("--pg-allow-files"), "{said}");
    drop(first);
    // A freed place is taken again.
    let deadline = Instant::now() + DEADLINE;
    while connect(&server.url()).await.is_err() {
        assert!(Instant::now() < deadline, "the place was not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_and_key_psql_connects_over_tls() {
    let dir = std::env::temp_dir().join(format!("brook-tls-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = Server::start(&[
        "--pg-cert",
        cert.to_str().unwrap(),
        "--pg-key",
        key.to_str().unwrap(),
    ]);
    let output = Command::new(psql())
        .arg(format!(
            "host=127.0.0.1 port={} user=brook dbname=brook sslmode=require",
            server.port
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT 6 * 7", "-c", "\\conninfo"])
        .output()
        .expect("psql runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.starts_with("42\n"),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("SSL connection"), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_each_connections_own() {
    let server = Server::start(&[]);
    let slow = server.client().await;
    let other = server.client().await;
    slow.batch_execute("SET statement_timeout = '20ms'")
        .await
        .unwrap();
    let heavy = "SELECT COUNT(*) FROM generate_series(1, 2000000000)";
    let err = slow.simple_query(heavy).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    // The other connection has no timeout: its statement is not cut short.
    assert_eq!(
        text_rows(&other, "SELECT COUNT(*) FROM generate_series(1, 1000)").await,
        [["1000"]]
    );
    slow.batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    assert_eq!(text_rows(&slow, "SELECT 1").await, [["1"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_views_state_is_kept_in_checkpoints_and_comes_back_after_a_kill() {
    let dir = std::env::temp_dir().join(format!("brook-view-ck-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let setup = dir.join("setup.sql");
    std::fs::write(
        &setup,
        "CREATE STREAM words (word TEXT) WITH (connector = 'queue');
         CREATE MATERIALIZED VIEW totals AS SELECT word, COUNT(*) AS n FROM RUNNING(words) GROUP BY word;",
    )
    .unwrap();
    let checkpoint = dir.join("ck");
    let args = [
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "-f",
        setup.to_str().unwrap(),
    ];
    let rows = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(w, n)| vec![w.to_string(), n.to_string()])
            .collect::<Vec<_>>()
    };
    let first = Server::start(&args);
    let client = first.client().await;
    client
        .batch_execute("INSERT INTO words VALUES ('a'), ('b'), ('a')")
        .await
        .unwrap();
    view_until(&client, rows(&[("a", "2"), ("b", "1")])).await;
    // A checkpoint follows the batch; give it a moment, then SIGKILL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(client);
    drop(first);
    let second = Server::start(&args);
    let client = second.client().await;
    client
        .batch_execute("INSERT INTO words VALUES ('b')")
        .await
        .unwrap();
    view_until(&client, rows(&[("a", "2"), ("b", "2")])).await;
    drop(client);
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads view `totals` until it holds `expected`.
async fn view_until(client: &Client, expected: Vec<Vec<String>>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rows = text_rows(client, "SELECT word, n FROM totals ORDER BY word").await;
        if rows == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
