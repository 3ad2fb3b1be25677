//! The Kafka source against a real Kafka-protocol broker (tansu) started by
//! the test: exact totals over partitions, metadata columns, bad messages
//! named by partition and offset, a second run of a group continuing where
//! the first stopped, and clear errors for a missing topic or broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook::{BatchOutput, SqlOutput, StreamContext};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::Offset;

use crate::common::{DEADLINE, recording_warnings};
use crate::kafka_broker::KafkaBroker;

/// Short group timings so a group's first join takes ~3 s on tansu.
const GROUP: &str = "'kafka.session.timeout.ms' = '6000', 'kafka.heartbeat.interval.ms' = '500'";

async fn produce(broker: &KafkaBroker, topic: &str, messages: &[(i32, Option<String>, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = messages.iter().map(|(partition, key, value)| {
        let mut record = FutureRecord::to(topic).partition(*partition).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer.send(record, Duration::from_secs(30))
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("delivered");
    }
}

fn total_of(output: &BatchOutput, column: usize) -> i64 {
    output
        .batches
        .iter()
        .map(|b| {
            let values = b.column(column).as_primitive::<Int64Type>();
            (0..values.len()).map(|i| values.value(i)).sum::<i64>()
        })
        .sum()
}

/// Sums column `column` over batches until `expected` is reached, then
/// watches a few more batches for duplicates.
async fn sum_until(query: &mut brook::ContinuousQuery, column: usize, expected: i64) -> i64 {
    use futures::StreamExt;
    let deadline = Instant::now() + DEADLINE;
    let mut total = 0;
    let mut after = 0;
    while after < 5 {
        assert!(
            Instant::now() < deadline,
            "only {total} of {expected} arrived"
        );
        let output = tokio::time::timeout(DEADLINE, query.next())
            .await
            .expect("a batch")
            .expect("the query runs")
            .expect("the batch runs");
        total += total_of(&output, column);
        if total >= expected {
            after += 1;
        }
    }
    total
}

async fn start(ctx: &StreamContext, sql: &str) -> brook::ContinuousQuery {
    match ctx.sql(sql).await.unwrap() {
        SqlOutput::Query(query) => query,
        other => panic!("{sql}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_four_partitions_is_counted_exactly_once() {
    let broker = KafkaBroker::start();
    broker.create_topic("numbers", 4);
    let messages: Vec<(i32, Option<String>, String)> = (1..=20_000)
        .map(|n: i64| ((n % 4) as i32, None, n.to_string()))
        .collect();
    produce(&broker, "numbers", &messages).await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM numbers (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'numbers', format = 'csv', start_offset = 'earliest', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(
        &ctx,
        "SELECT COUNT(*) AS rows, SUM(n) AS total FROM numbers",
    )
    .await;
    let expected: i64 = (1..=20_000).sum();
    assert_eq!(sum_until(&mut query, 1, expected).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_messages_fill_metadata_columns_and_bad_ones_are_named_by_partition_and_offset() {
    let broker = KafkaBroker::start();
    broker.create_topic("readings", 2);
    let messages = vec![
        (
            0,
            Some("a".to_string()),
            r#"{"sensor": "s1", "temp": 20.5}"#.to_string(),
        ),
        (0, Some("b".to_string()), "not json".to_string()),
        (1, None, r#"{"sensor": "s2", "temp": 7}"#.to_string()),
        (
            1,
            Some("c".to_string()),
            r#"{"sensor": "s3", "temp": "warm"}"#.to_string(),
        ),
        (
            0,
            Some("d".to_string()),
            r#"{"sensor": "s4", "temp": -1.25}"#.to_string(),
        ),
    ];
    produce(&broker, "readings", &messages).await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM readings (sensor TEXT, temp DOUBLE, _key TEXT, _partition INT, _offset BIGINT) \
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'readings', format = 'json', \
         start_offset = 'earliest', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(
        &ctx,
        "SELECT sensor, temp, _key, _partition, _offset FROM readings",
    )
    .await;
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    while rows.len() < 3 {
        assert!(Instant::now() < deadline, "rows so far: {rows:?}");
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        for row in crate::common::rows(&output) {
            rows.insert(row[0].clone(), row[1..].join(" "));
        }
    }
    assert_eq!(
        rows,
        BTreeMap::from([
            ("s1".to_string(), "20.5 a 0 0".to_string()),
            ("s2".to_string(), "7.0 NULL 1 0".to_string()),
            ("s4".to_string(), "-1.25 d 0 2".to_string()),
        ])
    );
    let warnings = warnings.lock().unwrap().clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("topic 'readings' partition 0 offset 1")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("topic 'readings' partition 1 offset 1")),
        "{warnings:?}"
    );
    let streams = ctx.streams();
    assert_eq!(streams[0].rows_dropped, 2, "{streams:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_messages_with_timestamp_format_epoch_ms_give_exact_instants_and_bad_ones_are_named() {
    let broker = KafkaBroker::start();
    broker.create_topic("clicks", 1);
    let messages: Vec<(i32, Option<String>, String)> = [
        "u1,1700000000123",
        "u2,1700000000123.5",
        "u3,-1",
        "u4,2023-11-14 22:13:20",
    ]
    .iter()
    .map(|value| (0, None, value.to_string()))
    .collect();
    produce(&broker, "clicks", &messages).await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM clicks (user_id TEXT, at TIMESTAMP) WITH (connector = 'kafka', \
         bootstrap_servers = '{}', topic = 'clicks', format = 'csv', timestamp_format = 'epoch_ms', \
         start_offset = 'earliest', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT user_id, at FROM clicks").await;
    let mut rows = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while rows.len() < 2 {
        assert!(Instant::now() < deadline, "rows so far: {rows:?}");
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        rows.extend(crate::common::rows(&output));
    }
    assert_eq!(
        rows,
        vec![
            vec!["u1", "2023-11-14T22:13:20.123"],
            vec!["u3", "1969-12-31T23:59:59.999"],
        ]
    );
    let streams = ctx.streams();
    assert!(
        streams[0].options.contains("timestamp_format = 'epoch_ms'"),
        "{}",
        streams[0].options
    );
    assert_eq!(streams[0].rows_dropped, 2, "{streams:?}");
    let warnings = warnings.lock().unwrap().clone();
    for (offset, why) in [
        (1, "'1700000000123.5' is not a whole number of milliseconds"),
        (
            3,
            "'2023-11-14 22:13:20' is not a TIMESTAMP in epoch milliseconds",
        ),
    ] {
        assert!(
            warnings.iter().any(|w| w
                .contains(&format!("topic 'clicks' partition 0 offset {offset}"))
                && w.contains(why)),
            "offset {offset}: {warnings:?}"
        );
    }
}

/// The group's committed offsets of `topic`'s partitions.
fn committed(broker: &KafkaBroker, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => -1,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_group_continues_where_the_first_stopped() {
    let broker = KafkaBroker::start();
    broker.create_topic("events", 2);
    let first: Vec<(i32, Option<String>, String)> = (1..=1000)
        .map(|n: i64| ((n % 2) as i32, None, n.to_string()))
        .collect();
    produce(&broker, "events", &first).await;
    let create = format!(
        "CREATE STREAM events (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'events', format = 'csv', group_id = 'g1', {GROUP})",
        broker.address()
    );
    {
        let ctx = StreamContext::new(Duration::from_millis(100));
        ctx.sql(&create).await.unwrap();
        let mut query = start(&ctx, "SELECT COUNT(*) AS rows, SUM(n) AS total FROM events").await;
        assert_eq!(
            sum_until(&mut query, 1, (1..=1000).sum()).await,
            (1..=1000).sum::<i64>()
        );
        // The offsets of what the batches took are committed.
        let deadline = Instant::now() + DEADLINE;
        while committed(&broker, "g1", "events", 2) != [500, 500] {
            assert!(Instant::now() < deadline, "offsets not committed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let second: Vec<(i32, Option<String>, String)> = (1001..=1500)
        .map(|n: i64| ((n % 2) as i32, None, n.to_string()))
        .collect();
    produce(&broker, "events", &second).await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&create).await.unwrap();
    let mut query = start(&ctx, "SELECT COUNT(*) AS rows, SUM(n) AS total FROM events").await;
    let expected: i64 = (1001..=1500).sum();
    assert_eq!(sum_until(&mut query, 1, expected).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_or_broker_is_a_clear_error() {
    let broker = KafkaBroker::start();
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM nothing (line TEXT) WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'nope')",
        broker.address()
    ))
    .await
    .unwrap();
    let err = ctx
        .sql("SELECT line FROM nothing")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic 'nope' does not exist"), "{err}");

    let closed = crate::common::closed_port_address();
    ctx.sql(&format!(
        "CREATE STREAM away (line TEXT) WITH (connector = 'kafka', bootstrap_servers = '{closed}', topic = 't')"
    ))
    .await
    .unwrap();
    let err = ctx
        .sql("SELECT line FROM away")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot reach Kafka at {closed}")),
        "{err}"
    );

    let err = ctx
        .sql("CREATE STREAM bad (line TEXT) WITH (connector = 'kafka', topic = 't')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs option bootstrap_servers"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinks_rows_land_in_a_topic_as_keyed_json_messages() {
    let broker = KafkaBroker::start();
    broker.create_topic("counts", 1);
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql("CREATE STREAM lines (line TEXT) WITH (connector = 'queue', one_at_a_time = 'true')")
        .await
        .unwrap();
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'counts', \
         key = 'word') AS SELECT word, COUNT(*) AS n FROM \
         (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word ORDER BY word",
        broker.address()
    ))
    .await
    .unwrap();
    ctx.sql("INSERT INTO lines VALUES ('a b a')").await.unwrap();
    ctx.sql("INSERT INTO lines VALUES ('c, \"quoted\"')")
        .await
        .unwrap();
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("counts", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while messages.len() < 4 {
        assert!(Instant::now() < deadline, "messages so far: {messages:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            let message = message.unwrap();
            messages.push((
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    assert_eq!(
        messages,
        [
            ("a".to_string(), r#"{"word":"a","n":2}"#.to_string()),
            ("b".to_string(), r#"{"word":"b","n":1}"#.to_string()),
            (
                "\"quoted\"".to_string(),
                r#"{"word":"\"quoted\"","n":1}"#.to_string()
            ),
            ("c,".to_string(), r#"{"word":"c,","n":1}"#.to_string()),
        ]
    );
}
