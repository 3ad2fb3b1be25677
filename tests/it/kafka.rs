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
    produce_to(&broker.address(), topic, messages).await;
}

async fn produce_to(address: &str, topic: &str, messages: &[(i32, Option<String>, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
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
    let messages: Vec<(i32, Option<String>, String)> = (1..=100_000)
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
    let expected: i64 = (1..=100_000).sum();
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
    let err = ctx.sql("SELECT line FROM away").await.unwrap_err();
    // The broker's failure, not the statement's: no location in the SQL.
    assert_eq!(err.kind(), brook::ErrorKind::External, "{err:?}");
    assert!(err.location().is_none(), "{err:?}");
    let err = err.to_string();
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

    let err = ctx
        .sql(
            "CREATE STREAM auto (line TEXT) WITH (connector = 'kafka', topic = 't', \
             bootstrap_servers = '127.0.0.1:9', 'kafka.enable.auto.commit' = 'true')",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'kafka.enable.auto.commit' = 'true' is not supported"),
        "{err}"
    );
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

/// Produces `values` to partition `partition` as `batches` separate
/// requests, each answered before the next: tansu then holds as many
/// record batches.
async fn produce_in_batches(
    broker: &KafkaBroker,
    topic: &str,
    partition: i32,
    values: &[i64],
    batches: usize,
) {
    for part in values.chunks(values.len().div_ceil(batches)) {
        let messages: Vec<(i32, Option<String>, String)> = part
            .iter()
            .map(|n| (partition, None, n.to_string()))
            .collect();
        produce(broker, topic, &messages).await;
    }
}

/// The values of column 0 (BIGINT) of an output.
fn values_of(output: &BatchOutput) -> Vec<i64> {
    output
        .batches
        .iter()
        .flat_map(|b| {
            let values = b.column(0).as_primitive::<Int64Type>();
            (0..values.len())
                .map(|i| values.value(i))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until `condition` holds for stream 0 of `ctx`'s options text
/// (`SHOW STREAMS`), and returns that text.
async fn wait_for_stream(ctx: &StreamContext, condition: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let options = ctx.streams()[0].options.clone();
        if condition(&options) {
            return options;
        }
        assert!(Instant::now() < deadline, "stream options: {options}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_start_offset_skips_what_was_in_the_topic_but_for_tansus_last_record_batch() {
    let broker = KafkaBroker::start();
    broker.create_topic("latest", 1);
    let old: Vec<i64> = (1..=1000).collect();
    produce_in_batches(&broker, "latest", 0, &old, 10).await;
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM latest (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'latest', format = 'csv', start_offset = 'latest', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT n FROM latest").await;
    wait_for_stream(&ctx, |options| options.contains("assigned partitions 0")).await;
    // The assignment's start at the end is looked up after the assignment:
    // probe messages are produced until one arrives, so that the messages
    // below are all produced after the stream's start.
    let mut seen: Vec<i64> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut probe = 1_000_000;
    while !seen.iter().any(|n| *n >= 1_000_000) {
        assert!(Instant::now() < deadline, "no probe arrived: {seen:?}");
        probe += 1;
        produce(&broker, "latest", &[(0, None, probe.to_string())]).await;
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }
    let new: Vec<i64> = (2_000_001..=2_000_500).collect();
    produce_in_batches(&broker, "latest", 0, &new, 5).await;
    while !seen.contains(&2_000_500) {
        assert!(Instant::now() < deadline, "new messages missing");
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }
    let mut new_seen: Vec<i64> = seen.iter().copied().filter(|n| *n > 2_000_000).collect();
    new_seen.sort_unstable();
    assert_eq!(new_seen, new, "every new message exactly once");
    // tansu answers ListOffsets(latest) with the first offset of the last
    // record batch, not the end: that batch (901..=1000) may be read again.
    // Nothing older may be.
    let old_seen: Vec<i64> = seen.iter().copied().filter(|n| *n <= 1000).collect();
    assert!(
        old_seen.iter().all(|n| *n > 900),
        "old messages before tansu's last record batch were read: {old_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_a_slow_sink_has_written_the_batch() {
    let source = KafkaBroker::start();
    source.create_topic("orders", 1);
    let target = KafkaBroker::start();
    target.create_topic("copied", 1);
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE STREAM orders (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'orders', format = 'csv', group_id = 'copier', {GROUP})",
        source.address()
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK copied WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'copied', \
         format = 'csv') AS SELECT n FROM orders",
        target.address()
    ))
    .await
    .unwrap();
    wait_for_stream(&ctx, |options| options.contains("assigned partitions 0")).await;
    // The sink's broker stops answering: its write of the batch waits.
    target.pause();
    let values: Vec<i64> = (1..=100).collect();
    produce_in_batches(&source, "orders", 0, &values, 1).await;
    // The last message was cut into a batch (and handed to the sink, which
    // is stuck on it). Under load the 100 messages may come in two batches.
    wait_for_stream(&ctx, |options| {
        options
            .split_once("last batch offsets 0:")
            .is_some_and(|(_, range)| {
                range
                    .split([',', ' '])
                    .next()
                    .unwrap_or("")
                    .ends_with("-99")
            })
    })
    .await;
    let watched_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watched_until {
        assert_eq!(
            committed(&source, "copier", "orders", 1),
            [-1],
            "committed while the sink had not written the batch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    target.resume();
    let deadline = Instant::now() + DEADLINE;
    while committed(&source, "copier", "orders", 1) != [100] {
        assert!(Instant::now() < deadline, "not committed after the write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let options = ctx.streams()[0].options.clone();
    assert!(options.contains("committed 0:100"), "{options}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", target.address())
        .set("group.id", "check")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("copied", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut copied = Vec::new();
    while copied.len() < 100 {
        assert!(Instant::now() < deadline, "copied so far: {copied:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            let message = message.unwrap();
            let text = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            copied.push(text.trim().parse::<i64>().unwrap());
        }
    }
    assert_eq!(copied, values);
}

/// A `brook run` process printing CSV rows, its stdout read line by line.
/// Batches are a second apart, so that at a rebalance rows wait that no
/// batch has taken yet (without dropping them at the revoke, both
/// processes would count them: tried, and the test then fails).
struct BrookRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl BrookRun {
    fn start(sql: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
            .args(["--batch-interval", "1s", "--format", "csv", "-c", sql])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start brook");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The `n` of every CSV row (`batch,batch_time,n,_partition`) printed
    /// so far, with its partition.
    fn rows(&self, into: &mut Vec<(i64, i64)>) {
        while let Ok(line) = self.lines.try_recv() {
            let fields: Vec<&str> = line.split(',').collect();
            if let [_, _, n, partition] = fields[..]
                && let (Ok(n), Ok(partition)) = (n.parse(), partition.parse())
            {
                into.push((n, partition));
            }
        }
    }

    /// Ctrl-C: runs a last batch and exits 0, within the deadline.
    fn interrupt(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "brook exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "brook did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrookRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brook_processes_in_one_group_split_four_partitions_and_see_every_message_once() {
    let broker = KafkaBroker::start();
    broker.create_topic("shared", 4);
    let sql = format!(
        "CREATE STREAM shared (n BIGINT, _partition INT) WITH (connector = 'kafka', \
         bootstrap_servers = '{}', topic = 'shared', format = 'csv', group_id = 'split', {GROUP}); \
         SELECT n, _partition FROM shared",
        broker.address()
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut first_rows = Vec::new();
    let mut second_rows = Vec::new();
    let first = BrookRun::start(&sql);
    let mut second = None;
    // Messages flow all along: the first process reads all four partitions
    // alone, then the second joins (a rebalance mid-run) and they split them.
    let deadline = Instant::now() + DEADLINE;
    let mut produced = 0i64;
    while produced < 300 || second_rows.is_empty() || first_rows.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "first read {}, second read {} of {produced}",
            first_rows.len(),
            second_rows.len()
        );
        for _ in 0..10 {
            produced += 1;
            let value = produced.to_string();
            producer
                .send(
                    FutureRecord::<(), _>::to("shared")
                        .partition((produced % 4) as i32)
                        .payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .expect("delivered");
        }
        // The second starts once the first has read every partition: the
        // rebalance then takes two away from it mid-run.
        let partitions: std::collections::BTreeSet<i64> =
            first_rows.iter().map(|(_, p)| *p).collect();
        if second.is_none() && partitions.len() == 4 {
            second = Some(BrookRun::start(&sql));
        }
        first.rows(&mut first_rows);
        if let Some(second) = &second {
            second.rows(&mut second_rows);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = second.expect("started");
    // Everything produced is read by one or the other.
    let all_read = |first: &[(i64, i64)], second: &[(i64, i64)]| {
        let mut seen: Vec<i64> = first.iter().chain(second).map(|(n, _)| *n).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() as i64 == produced
    };
    while !all_read(&first_rows, &second_rows) {
        assert!(Instant::now() < deadline, "not all {produced} read");
        first.rows(&mut first_rows);
        second.rows(&mut second_rows);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = first;
    first.interrupt();
    second.interrupt();
    first.rows(&mut first_rows);
    second.rows(&mut second_rows);
    // Each process committed what it read before it exited.
    let per_partition: Vec<i64> = (0..4)
        .map(|p| (1..=produced).filter(|n| n % 4 == p).count() as i64)
        .collect();
    assert_eq!(committed(&broker, "split", "shared", 4), per_partition);
    let mut union: Vec<i64> = first_rows
        .iter()
        .chain(&second_rows)
        .map(|(n, _)| *n)
        .collect();
    union.sort_unstable();
    assert_eq!(
        union,
        (1..=produced).collect::<Vec<_>>(),
        "every message exactly once over both processes"
    );
    // After the rebalance each reads its own partitions: the last rows of
    // each process come from partitions the other does not read.
    let last_partitions = |rows: &[(i64, i64)]| -> std::collections::BTreeSet<i64> {
        rows.iter().rev().take(20).map(|(_, p)| *p).collect()
    };
    assert!(
        last_partitions(&first_rows).is_disjoint(&last_partitions(&second_rows)),
        "first {:?}, second {:?}",
        last_partitions(&first_rows),
        last_partitions(&second_rows)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_mid_run_is_reported_and_every_message_is_counted_after_it_returns()
{
    use crate::tcp_proxy::TcpProxy;
    // Clients reach tansu through a proxy that goes away and comes back on
    // the same port: tansu's in-memory storage would not survive a real
    // kill, and the clients see the same thing (connections cut, the port
    // refused, then the broker back with its data and offsets).
    let proxy_port = crate::kafka_broker::free_port();
    let broker_port = crate::kafka_broker::free_port();
    let broker = KafkaBroker::start_advertising(broker_port, proxy_port);
    let mut proxy = TcpProxy::start(proxy_port, &format!("127.0.0.1:{broker_port}"));
    let through_proxy = KafkaBroker::address_of(proxy_port);
    broker.create_topic("outage", 2);
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM outage (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{through_proxy}', \
         topic = 'outage', format = 'csv', group_id = 'survivor', {GROUP})"
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT n FROM outage").await;
    let producer_to = |values: std::ops::RangeInclusive<i64>| {
        values
            .map(|n| ((n % 2) as i32, None, n.to_string()))
            .collect::<Vec<_>>()
    };
    produce_to(&through_proxy, "outage", &producer_to(1..=1000)).await;
    let mut seen: Vec<i64> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    // Read, and committed (the broker has the offsets) before the outage.
    while seen.len() < 1000 || committed(&broker, "survivor", "outage", 2) != [500, 500] {
        assert!(Instant::now() < deadline, "only {} read", seen.len());
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }
    // Read, but the last of these batches is not done with (its output is
    // held) when the broker goes away: those offsets cannot be committed.
    produce_to(&through_proxy, "outage", &producer_to(1001..=1200)).await;
    while !(1001..=1200).all(|n| seen.contains(&n)) {
        assert!(Instant::now() < deadline, "phase two: {} read", seen.len());
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }

    proxy.go_away();
    // The broker stays away longer than the group's 6 s session: the group
    // drops the member, which must join again when the broker is back.
    let away_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < away_until {
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }
    let reported = warnings.lock().unwrap().clone();
    assert!(
        reported
            .iter()
            .any(|w| w.contains("reading topic 'outage' failed")),
        "{reported:?}"
    );
    proxy.come_back();
    produce_to(&through_proxy, "outage", &producer_to(1201..=2000)).await;
    while !(1..=2000).all(|n| seen.contains(&n)) {
        assert!(Instant::now() < deadline, "read {} so far", seen.len());
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen.extend(values_of(&output));
    }
    // Duplicates can only be rows read after the last commit the broker
    // got before the outage (1001..=1200: the held batch at least, and
    // any batch whose asynchronous commit was cut off): the member, dropped
    // by the group, reads its partitions again from the committed offsets.
    // Nothing committed before the outage is read twice, nor anything
    // twice more than once.
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for n in &seen {
        *counts.entry(*n).or_default() += 1;
    }
    let duplicates: Vec<i64> = counts
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(n, _)| *n)
        .collect();
    println!(
        "{} duplicates after the outage: {:?}..{:?}",
        duplicates.len(),
        duplicates.first(),
        duplicates.last()
    );
    assert!(
        duplicates.iter().all(|n| (1001..=1200).contains(n))
            && counts.values().all(|count| *count <= 2),
        "{duplicates:?}"
    );
    let reported = warnings.lock().unwrap().clone();
    assert!(
        reported
            .iter()
            .any(|w| w.contains("reading topic 'outage' again")),
        "{reported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_query_has_committed_every_row_it_read_once_its_context_is_dropped() {
    let broker = KafkaBroker::start();
    broker.create_topic("final", 2);
    let messages: Vec<(i32, Option<String>, String)> = (1..=300)
        .map(|n: i64| ((n % 2) as i32, None, n.to_string()))
        .collect();
    produce(&broker, "final", &messages).await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM final (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'final', format = 'csv', group_id = 'closing', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT n FROM final").await;
    let mut seen = 0;
    while seen < 300 {
        let output = crate::common::next_batch(&mut query)
            .await
            .unwrap()
            .unwrap();
        seen += values_of(&output).len();
    }
    query.finish();
    while crate::common::next_batch(&mut query).await.is_some() {}
    drop(query);
    // Dropping the context commits what was finished and waits (a bounded
    // time) for the broker's answer: no polling needed afterwards.
    drop(ctx);
    assert_eq!(committed(&broker, "closing", "final", 2), [150, 150]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_far_larger_than_the_bound_is_read_whole_with_at_most_the_bound_waiting() {
    let broker = KafkaBroker::start();
    broker.create_topic("big", 4);
    let messages: Vec<(i32, Option<String>, String)> = (1..=50_000)
        .map(|n: i64| ((n % 4) as i32, None, n.to_string()))
        .collect();
    produce(&broker, "big", &messages).await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM big (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'big', format = 'csv', start_offset = 'earliest', max_pending_rows = '2000', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT COUNT(*) AS rows, SUM(n) AS total FROM big").await;
    let expected: i64 = (1..=50_000).sum();
    assert_eq!(sum_until(&mut query, 1, expected).await, expected);
    let stream = &ctx.streams()[0];
    // The reader reads far faster than 2,000 rows a tick: it was held back
    // (partitions paused) rather than buffering.
    assert!(
        stream.peak_pending_rows > 0 && stream.peak_pending_rows <= 2000,
        "{stream:?}"
    );
    assert_eq!(stream.rows_received, 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_sink_failed_to_write_holds_the_streams_commits_back() {
    let source = KafkaBroker::start();
    source.create_topic("payments", 1);
    let target = KafkaBroker::start();
    target.create_topic("ledger", 1);
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), warn);
    ctx.sql(&format!(
        "CREATE STREAM payments (n BIGINT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'payments', format = 'csv', group_id = 'bookkeeper', {GROUP})",
        source.address()
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK ledger WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'ledger', \
         format = 'csv', 'kafka.message.timeout.ms' = '1000') AS SELECT n FROM payments",
        target.address()
    ))
    .await
    .unwrap();
    let values: Vec<i64> = (1..=10).collect();
    produce_in_batches(&source, "payments", 0, &values, 1).await;
    let deadline = Instant::now() + DEADLINE;
    while committed(&source, "bookkeeper", "payments", 1) != [10] {
        assert!(
            Instant::now() < deadline,
            "the first batch was not committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sink's broker is gone: its next batch is not acknowledged.
    drop(target);
    let values: Vec<i64> = (11..=20).collect();
    produce_in_batches(&source, "payments", 0, &values, 1).await;
    let options = wait_for_stream(&ctx, |options| options.contains("commits held back")).await;
    assert!(options.contains("committed 0:10"), "{options}");
    // Later batches (the sink stops after three failures; the stream goes
    // on) do not move the commit either.
    let values: Vec<i64> = (21..=30).collect();
    produce_in_batches(&source, "payments", 0, &values, 1).await;
    while ctx.streams()[0].rows_received < 30 || ctx.streams()[0].rows_pending > 0 {
        assert!(Instant::now() < deadline, "{:?}", ctx.streams());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed(&source, "bookkeeper", "payments", 1), [10]);
    let reported = warnings.lock().unwrap().clone();
    assert!(
        reported.iter().any(|w| w.contains("sink 'ledger'")),
        "{reported:?}"
    );
    // Dropping the stream says why nothing more was committed.
    drop(ctx);
    let reported = warnings.lock().unwrap().clone();
    assert!(
        reported
            .iter()
            .any(|w| w.contains("were not committed past a batch that was not delivered")),
        "{reported:?}"
    );
}

/// 2026-01-01 00:00:00 plus `millis`, as CSV writes a timestamp.
fn event_time_text(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(1_767_225_600_000 + millis)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

#[tokio::test]
async fn a_brook_reading_kafka_killed_ten_times_resumes_from_its_checkpoint_offsets_with_exact_results()
 {
    use std::process::{Command, Stdio};
    let broker = KafkaBroker::start();
    broker.create_topic("events", 4);
    let mut pg = crate::pg_server::PgServer::start().await;
    let base = std::env::temp_dir().join(format!("brook-it-kafka-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (checkpoints, windows) = (base.join("checkpoints"), base.join("windows"));
    std::fs::create_dir_all(&windows).unwrap();
    // Each run joins groups of its own (no wait for a killed member's
    // session to expire): the checkpoints' offsets, not the groups', say
    // where it starts. Each query reads the topic through a stream of its
    // own: a stream resumes from the checkpoint of one query. The windows'
    // stream keeps a watermark per partition, each in event-time order, so
    // a 2-second delay closes windows as the runs read and none is late.
    let script = |run: usize| -> std::path::PathBuf {
        let path = base.join(format!("run{run}.sql"));
        std::fs::write(
            &path,
            format!(
                "SET batch_interval = '100ms';\n\
                 CREATE STREAM events (word TEXT, ts TIMESTAMP) \
                   WITH (connector = 'kafka', bootstrap_servers = '{0}', topic = 'events', format = 'csv', \
                   group_id = 'kill-{run}-totals', start_offset = 'earliest', {GROUP});\n\
                 CREATE STREAM readings (word TEXT, ts TIMESTAMP, _partition INT, \
                   WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
                   WITH (connector = 'kafka', bootstrap_servers = '{0}', topic = 'events', format = 'csv', \
                   group_id = 'kill-{run}-windows', start_offset = 'earliest', idle_timeout = '1h', {GROUP});\n\
                 CREATE SINK totals WITH (connector = 'postgres', url = '{1}', table = 'totals', \
                   mode = 'upsert', key = 'word', create_table = 'true') AS \
                   SELECT word, COUNT(*) AS n FROM RUNNING(events) GROUP BY word;\n\
                 CREATE SINK windows WITH (connector = 'file', path = '{2}', format = 'parquet') AS \
                   SELECT window_start, word, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) \
                   GROUP BY window_start, word;\n",
                broker.address(),
                pg.url(),
                windows.display()
            ),
        )
        .unwrap();
        path
    };
    let brook = |run: usize| {
        Command::new(env!("CARGO_BIN_EXE_brook"))
            .args(["run", script(run).to_str().unwrap(), "--checkpoint"])
            .arg(&checkpoints)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Rounds of 200 messages over the four partitions, 2 s of event time
    // each: five (one 10-second window) produced while each killed run
    // runs, so that run k closes window k - 1; the rest before the last.
    const ROUNDS: i64 = 60;
    const ROUNDS_PER_RUN: i64 = 5;
    const RUNS_KILLED: i64 = 10;
    let round = |r: i64| -> Vec<(i32, Option<String>, String)> {
        (0..200)
            .map(|i| {
                let word = format!("w{}", (r * 7 + i * 13) % 40);
                let at = r * 2_000 + i * 10;
                (
                    (i % 4) as i32,
                    None,
                    format!("{word},{}", event_time_text(at)),
                )
            })
            .collect()
    };
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected_windows: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for r in 0..ROUNDS {
        for (_, _, message) in round(r) {
            let (word, _) = message.split_once(',').unwrap();
            *expected.entry(word.to_string()).or_default() += 1;
        }
        for i in 0..200 {
            let at = r * 2_000 + i * 10;
            let word = format!("w{}", (r * 7 + i * 13) % 40);
            *expected_windows
                .entry((at - at.rem_euclid(10_000), word))
                .or_default() += 1;
        }
    }
    // Messages the totals table has counted (the sink's committed batches).
    let counted = |pg: &crate::pg_server::PgServer| {
        let pg = pg.url();
        async move {
            let (client, connection) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
                .await
                .expect("connect to the test server");
            tokio::spawn(connection);
            // Before the first run creates the table, nothing is counted.
            match client
                .query_one("SELECT SUM(n)::BIGINT FROM totals", &[])
                .await
            {
                Ok(row) => row.get::<_, Option<i64>>(0).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    let window_starts = |dir: &std::path::Path| -> std::collections::BTreeSet<i64> {
        crate::checkpoint::window_rows(dir)
            .into_iter()
            .map(|((start, _), _)| start)
            .collect()
    };
    let mut rng = crate::common::Rng(0x00ca_fe00);
    let mut produced = 0;
    let mut counted_before = 0;
    for run in 0..RUNS_KILLED {
        let mut child = brook(run as usize);
        let rounds_by_now = (run + 1) * ROUNDS_PER_RUN;
        // The rounds the last run was killed before, and two of this run's,
        // wait for it. Before it is killed it must have made progress: once
        // it has joined its groups (~3 s), more messages counted than the
        // runs before it committed and, its second round taking the
        // watermark past the window's end, window run - 1 written.
        while produced < run * ROUNDS_PER_RUN + 2 {
            produce(&broker, "events", &round(produced)).await;
            produced += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counted_now = counted(&pg).await;
            let closed = run == 0 || window_starts(&windows).contains(&((run - 1) * 10_000));
            if counted_now > counted_before && closed {
                break;
            }
            if Instant::now() >= deadline {
                // Not left running past the test.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "run {run} made no progress: {counted_now} messages counted ({counted_before} \
                     before it), windows starting at {:?}",
                    window_starts(&windows)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then the rest of its rounds arrive, one every 150 ms, and it is
        // killed at a random moment.
        let until = Instant::now() + Duration::from_millis(rng.below(1_000));
        while Instant::now() < until {
            if produced < rounds_by_now {
                produce(&broker, "events", &round(produced)).await;
                produced += 1;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        counted_before = counted(&pg).await;
    }
    while produced < ROUNDS {
        produce(&broker, "events", &round(produced)).await;
        produced += 1;
    }
    let totals = |rows: Vec<Vec<String>>| -> BTreeMap<String, i64> {
        rows.into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect()
    };
    let mut child = brook(RUNS_KILLED as usize);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline {
        seen = totals(pg.rows("SELECT word, n FROM totals ORDER BY word").await);
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every message counted: one far ahead on each partition closes every
    // window.
    let ends: Vec<(i32, Option<String>, String)> = (0..4)
        .map(|partition| {
            (
                partition,
                None,
                format!("end,{}", event_time_text(10_000_000)),
            )
        })
        .collect();
    produce(&broker, "events", &ends).await;
    while Instant::now() < deadline {
        if crate::checkpoint::window_rows(&windows).len() >= expected_windows.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = totals(pg.rows("SELECT word, n FROM totals ORDER BY word").await);
    let rows = crate::checkpoint::window_rows(&windows);
    child.kill().unwrap();
    child.wait().unwrap();
    pg.stop();
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(
        crate::checkpoint::lost_and_doubled(&expected, &seen),
        (0, 0),
        "messages lost and counted twice"
    );
    // "end" counted once per partition by the running total.
    let mut expected_after = expected.clone();
    expected_after.insert("end".to_string(), 4);
    assert_eq!(after, expected_after);
    assert_eq!(crate::checkpoint::each_window_once(rows), expected_windows);
}

/// Found when brook's reader took messages from a queue of its own:
/// librdkafka clears a partition's route to that queue when a revoke stops
/// fetching it, so partitions given back by a later rebalance were never
/// read again. Here another member of the group takes two of the four
/// partitions and leaves; every message produced after it left, on every
/// partition, must be read, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_taken_by_another_member_and_given_back_are_read_again() {
    use futures::StreamExt;
    let broker = KafkaBroker::start();
    broker.create_topic("given_back", 4);
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM given_back (n BIGINT, _partition INT) WITH (connector = 'kafka', \
         bootstrap_servers = '{}', topic = 'given_back', format = 'csv', \
         start_offset = 'earliest', group_id = 'given_back', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let mut query = start(&ctx, "SELECT n, _partition FROM given_back").await;
    let deadline = Instant::now() + DEADLINE;
    let mut seen: Vec<i64> = Vec::new();
    let numbers = |from: i64, to: i64| -> Vec<(i32, Option<String>, String)> {
        (from..=to)
            .map(|n| ((n % 4) as i32, None, n.to_string()))
            .collect()
    };
    produce(&broker, "given_back", &numbers(1, 400)).await;
    read_until(&mut seen, &mut query, 400, deadline).await;

    // Another member joins: the group is rebalanced and it takes some
    // partitions; then it leaves, and brook is given them back.
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "given_back")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    other.subscribe(&["given_back"]).expect("subscribe");
    let mut other_had = Vec::new();
    while other_had.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the other member got no partition"
        );
        let _ = other.poll(Duration::from_millis(100));
        other_had = other
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        // brook keeps reading meanwhile.
        if let Ok(Some(Ok(output))) =
            tokio::time::timeout(Duration::from_millis(10), query.next()).await
        {
            seen.extend(values_of(&output));
        }
    }
    assert!(other_had.len() < 4, "brook kept some: {other_had:?}");
    other.unsubscribe();
    drop(other);

    // Produced after the other member left: brook must read them all.
    produce(&broker, "given_back", &numbers(401, 800)).await;
    read_until(&mut seen, &mut query, 800, deadline).await;
    // A few more batches for duplicates.
    for _ in 0..5 {
        seen.extend(next_values(&mut query).await);
    }
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for n in &seen {
        *counts.entry(*n).or_default() += 1;
    }
    // The other member committed nothing, so what brook read of the
    // partitions it took may be read again after they came back; nothing
    // produced after it left is read twice.
    let twice: Vec<i64> = counts
        .iter()
        .filter(|(n, count)| **n > 400 && **count > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    assert_eq!(counts.len(), 800);
}

/// Reads values (column 0) into `seen` until it holds every number up to
/// `last`.
async fn read_until(
    seen: &mut Vec<i64>,
    query: &mut brook::ContinuousQuery,
    last: i64,
    deadline: Instant,
) {
    while !(1..=last).all(|n| seen.contains(&n)) {
        assert!(Instant::now() < deadline, "read {} of {last}", seen.len());
        seen.extend(next_values(query).await);
    }
}

/// The values (column 0) of the query's next batch.
async fn next_values(query: &mut brook::ContinuousQuery) -> Vec<i64> {
    use futures::StreamExt;
    let output = tokio::time::timeout(DEADLINE, query.next())
        .await
        .expect("a batch")
        .expect("the query runs")
        .expect("the batch runs");
    values_of(&output)
}
