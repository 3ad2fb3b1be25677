//! Changelog streams end to end: Debezium JSON and upsert Kafka on a real
//! broker (tansu), Debezium JSON over a socket into a PostgreSQL upsert
//! sink that deletes a vanished group's row, and tombstones out of the
//! Kafka sink.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{DEADLINE, line_server, port_of, recording_warnings, table_rows};
use crate::kafka_broker::KafkaBroker;
use crate::pg_server::PgServer;

const GROUP: &str = "'kafka.session.timeout.ms' = '6000', 'kafka.heartbeat.interval.ms' = '500'";

/// Sends `(key, value)` messages to partition 0 of `topic`, in order; a
/// `None` value is a tombstone.
async fn produce(address: &str, topic: &str, messages: &[(Option<&str>, Option<&str>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "0")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("producer");
    for (key, value) in messages {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(0);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(value) = value {
            record = record.payload(*value);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered");
    }
}

/// Runs `sql` and returns each batch's rows until one equals `expected`.
async fn until_result(ctx: &StreamContext, sql: &str, expected: &[&[&str]]) {
    let SqlOutput::Query(mut query) = ctx.sql(sql).await.unwrap() else {
        panic!("{sql}: not a query");
    };
    let deadline = Instant::now() + DEADLINE;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let Ok(Some(output)) = tokio::time::timeout(DEADLINE, query.next()).await else {
            break;
        };
        last = table_rows(&output.expect("the batch runs").batches);
        if last == expected {
            return;
        }
    }
    panic!("{sql}: last result {last:?}, expected {expected:?}");
}

/// Reads `topic` until the last message of each key is as `expected`
/// (`None`: a tombstone).
fn read_until(
    consumer: &BaseConsumer,
    last: &mut BTreeMap<String, Option<String>>,
    expected: &BTreeMap<String, Option<String>>,
) {
    let deadline = Instant::now() + DEADLINE;
    while last != expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let value = message
                .payload()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            last.insert(key, value);
        }
    }
    assert_eq!(last, expected);
}

fn current(entries: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_and_upsert_kafka_changes_move_running_counts_down_and_tombstones_go_out() {
    let broker = KafkaBroker::start();
    for topic in ["orders_cdc", "users_upsert", "status_counts"] {
        broker.create_topic(topic, 1);
    }
    let address = broker.address();
    let wrapped = r#"{"schema":{"type":"struct","optional":false},"payload":{"before":null,"after":{"id":3,"status":"paid","amount":5},"op":"r","ts_ms":1}}"#;
    produce(
        &address,
        "orders_cdc",
        &[
            (
                Some("1"),
                Some(r#"{"before":null,"after":{"id":1,"status":"new","amount":10},"op":"c"}"#),
            ),
            (
                Some("2"),
                Some(r#"{"before":null,"after":{"id":2,"status":"new","amount":20},"op":"c"}"#),
            ),
            (Some("3"), Some(wrapped)),
            // Offset 3: malformed (no op).
            (Some("4"), Some(r#"{"before":null,"after":{"id":4}}"#)),
        ],
    )
    .await;
    produce(
        &address,
        "users_upsert",
        &[
            (Some("1"), Some(r#"{"id":1,"name":"ann"}"#)),
            (Some("2"), Some(r#"{"id":2,"name":"bob"}"#)),
            (Some("1"), Some(r#"{"name":"amy"}"#)),
            (Some(r#"{"id":3}"#), Some(r#"{"name":"cy"}"#)),
            (Some("2"), None),
            // Offset 5: a value that is not an object.
            (Some("4"), Some("[1,2]")),
        ],
    )
    .await;

    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM orders (id INT, status TEXT, amount BIGINT, PRIMARY KEY (id) NOT ENFORCED) \
         WITH (connector = 'kafka', bootstrap_servers = '{address}', topic = 'orders_cdc', \
         format = 'debezium-json', start_offset = 'earliest', {GROUP})"
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE STREAM users (id INT, name TEXT) WITH (connector = 'kafka', \
         bootstrap_servers = '{address}', topic = 'users_upsert', format = 'json', \
         mode = 'upsert', key = 'id', start_offset = 'earliest', {GROUP})"
    ))
    .await
    .unwrap();
    let streams = table_rows(&match ctx.sql("SHOW STREAMS").await.unwrap() {
        SqlOutput::Rows { batches, .. } => batches,
        other => panic!("{other:?}"),
    });
    assert!(
        format!("{streams:?}").contains("changelog keyed by (id)"),
        "{streams:?}"
    );
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'kafka', bootstrap_servers = '{address}', \
         topic = 'status_counts', mode = 'upsert', key = 'status') AS \
         SELECT status, COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS hi \
         FROM RUNNING(orders, 'update') GROUP BY status"
    ))
    .await
    .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("group.id", "changelog-test-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&["status_counts"]).unwrap();
    let mut last = BTreeMap::new();
    read_until(
        &consumer,
        &mut last,
        &current(&[
            ("new", Some(r#"{"status":"new","n":2,"total":30,"hi":20}"#)),
            ("paid", Some(r#"{"status":"paid","n":1,"total":5,"hi":5}"#)),
        ]),
    );
    produce(
        &address,
        "orders_cdc",
        &[
            // An update without its before image, a delete with the key only.
            (
                Some("1"),
                Some(r#"{"before":null,"after":{"id":1,"status":"paid","amount":10},"op":"u"}"#),
            ),
            (
                Some("2"),
                Some(r#"{"before":{"id":2},"after":null,"op":"d"}"#),
            ),
            // Debezium's tombstone after a delete: nothing.
            (Some("2"), None),
        ],
    )
    .await;
    // 'new', whose orders all moved on or went, ends with a tombstone.
    read_until(
        &consumer,
        &mut last,
        &current(&[
            ("new", None),
            (
                "paid",
                Some(r#"{"status":"paid","n":2,"total":15,"hi":10}"#),
            ),
        ]),
    );
    until_result(
        &ctx,
        "SELECT id, name FROM RUNNING(users) GROUP BY id, name ORDER BY id",
        &[&["1", "amy"], &["3", "cy"]],
    )
    .await;
    let warnings = warnings.lock().unwrap().join("\n");
    assert!(
        warnings.contains("topic 'orders_cdc' partition 0 offset 3")
            && warnings.contains("no Debezium 'op'"),
        "{warnings}"
    );
    assert!(
        warnings.contains("topic 'users_upsert' partition 0 offset 5")
            && warnings.contains("not a JSON object"),
        "{warnings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_upsert_sink_deletes_the_row_of_a_group_whose_rows_are_all_gone() {
    let pg = PgServer::start().await;
    let lines: Vec<(&str, u64)> = vec![
        (
            r#"{"before":null,"after":{"id":1,"status":"new","amount":10},"op":"c"}"#,
            0,
        ),
        (
            r#"{"before":null,"after":{"id":2,"status":"new","amount":20},"op":"c"}"#,
            0,
        ),
        (
            r#"{"before":null,"after":{"id":3,"status":"paid","amount":5},"op":"c"}"#,
            400,
        ),
        ("not json", 0),
        (
            r#"{"before":null,"after":{"id":1,"status":"paid","amount":10},"op":"u"}"#,
            0,
        ),
        (r#"{"before":{"id":3},"after":null,"op":"d"}"#, 400),
        (r#"{"before":{"id":2},"after":null,"op":"d"}"#, 400),
    ];
    let address = line_server(move |mut client| {
        for (line, pause) in lines {
            writeln!(client, "{line}").unwrap();
            client.flush().unwrap();
            std::thread::sleep(Duration::from_millis(pause));
        }
    });
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM orders (id INT PRIMARY KEY, status TEXT, amount BIGINT) WITH \
         (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'debezium-json')",
        port_of(&address)
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK status_counts WITH (connector = 'postgres', url = '{}', table = 'status_counts', \
         mode = 'upsert', key = 'status', create_table = 'true') AS \
         SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM RUNNING(orders, 'update') GROUP BY status",
        pg.url()
    ))
    .await
    .unwrap();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .expect("the sink finishes")
        .unwrap();
    // The table holds the query's columns, not `op`.
    assert_eq!(
        pg.rows(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_name = 'status_counts' ORDER BY ordinal_position"
        )
        .await,
        [["status"], ["n"], ["total"]]
    );
    assert_eq!(
        pg.rows("SELECT status, n, total FROM status_counts ORDER BY status")
            .await,
        [["paid", "1", "10"]]
    );
    let warnings = warnings.lock().unwrap().join("\n");
    assert!(
        warnings.contains("line 4") && warnings.contains("not JSON"),
        "{warnings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sink_writes_changes_in_debeziums_envelope() {
    let lines: Vec<(&str, u64)> = vec![
        (
            r#"{"before":null,"after":{"id":1,"status":"new","amount":10},"op":"c"}"#,
            0,
        ),
        (
            r#"{"before":null,"after":{"id":2,"status":"new","amount":20},"op":"c"}"#,
            300,
        ),
        (
            r#"{"before":null,"after":{"id":1,"status":"paid","amount":10},"op":"u"}"#,
            300,
        ),
        (r#"{"before":{"id":2},"after":null,"op":"d"}"#, 300),
    ];
    let address = line_server(move |mut client| {
        for (line, pause) in lines {
            writeln!(client, "{line}").unwrap();
            client.flush().unwrap();
            std::thread::sleep(Duration::from_millis(pause));
        }
    });
    let dir = std::env::temp_dir().join(format!("brook-it-debezium-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM orders (id INT PRIMARY KEY, status TEXT, amount BIGINT) WITH \
         (connector = 'socket', host = '127.0.0.1', port = '{}', format = 'debezium-json')",
        port_of(&address)
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK changes WITH (connector = 'file', path = '{}', format = 'debezium-json') AS \
         SELECT status, COUNT(*) AS n FROM RUNNING(orders, 'update') GROUP BY status",
        dir.display()
    ))
    .await
    .unwrap();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .expect("the sink finishes")
        .unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    // Applied in order, the envelopes leave the result's current rows.
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let mut ops = Vec::new();
    for file in &files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            let op = envelope["op"].as_str().unwrap().to_string();
            let image = if op == "d" {
                &envelope["before"]
            } else {
                &envelope["after"]
            };
            let status = image["status"].as_str().unwrap().to_string();
            match op.as_str() {
                "d" => assert!(current.remove(&status).is_some(), "{line}"),
                "c" | "u" => {
                    current.insert(status, image.to_string());
                }
                other => panic!("op {other}"),
            }
            ops.push(op);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        current,
        BTreeMap::from([("paid".to_string(), r#"{"n":1,"status":"paid"}"#.to_string())])
    );
    assert!(ops.contains(&"d".to_string()) && ops[0] == "c", "{ops:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_time_temporal_join_meets_each_rows_version_as_of_its_event_time() {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let at = |s: u32| format!("1970-01-01 00:{:02}:{:02}", s / 60, s % 60);
    let rates: Vec<String> = vec![
        format!(
            r#"{{"before":null,"after":{{"currency":"EUR","rate":1.0,"ts":"{}"}},"op":"c"}}"#,
            at(10)
        ),
        format!(
            r#"{{"before":null,"after":{{"currency":"EUR","rate":1.1,"ts":"{}"}},"op":"u"}}"#,
            at(20)
        ),
        format!(
            r#"{{"before":{{"currency":"EUR","ts":"{}"}},"after":null,"op":"d"}}"#,
            at(30)
        ),
        format!(
            r#"{{"before":null,"after":{{"currency":"EUR","rate":1.3,"ts":"{}"}},"op":"c"}}"#,
            at(40)
        ),
        // Far ahead: the table's watermark passes every order.
        format!(
            r#"{{"before":null,"after":{{"currency":"USD","rate":0.9,"ts":"{}"}},"op":"c"}}"#,
            at(300)
        ),
    ];
    let address = line_server(move |mut client| {
        let _ = wait.recv_timeout(DEADLINE);
        for line in rates {
            writeln!(client, "{line}").unwrap();
        }
        client.flush().unwrap();
        std::thread::sleep(DEADLINE);
    });
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE TABLE rates (currency TEXT, rate DOUBLE, ts TIMESTAMP, PRIMARY KEY (currency), \
         WATERMARK FOR ts AS ts - INTERVAL '0' SECOND) WITH (connector = 'socket', host = '127.0.0.1', \
         port = '{}', format = 'debezium-json')",
        port_of(&address)
    ))
    .await
    .unwrap();
    ctx.sql(
        "CREATE STREAM orders (id INT, currency TEXT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '0' SECOND) WITH (connector = 'queue')",
    )
    .await
    .unwrap();
    let SqlOutput::Query(mut query) = ctx
        .sql(
            "SELECT o.id, r.rate FROM orders AS o \
             LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency",
        )
        .await
        .unwrap()
    else {
        panic!("a continuous query");
    };
    // The orders come first: each waits for the table's watermark.
    for (id, second) in [(1, 15), (2, 25), (3, 35), (4, 45), (5, 200)] {
        ctx.sql(&format!(
            "INSERT INTO orders VALUES ({id}, 'EUR', TIMESTAMP '{}')",
            at(second)
        ))
        .await
        .unwrap();
    }
    go.send(()).unwrap();
    let mut joined = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while joined.len() < 5 && Instant::now() < deadline {
        let Ok(Some(output)) = tokio::time::timeout(DEADLINE, query.next()).await else {
            break;
        };
        joined.extend(table_rows(&output.expect("the batch runs").batches));
    }
    joined.sort();
    assert_eq!(
        joined,
        [
            ["1", "1.0"],
            ["2", "1.1"],
            ["3", "NULL"],
            ["4", "1.3"],
            ["5", "1.3"]
        ]
    );
}
