//! Changelogs: (1) Debezium JSON from Kafka into a `RUNNING` count per
//! status: 1,000,000 changes (inserts, updates, deletes) over 100,000 keys,
//! partitioned by key over 4 partitions of a tansu topic, read from the
//! query's first rows to the result holding the last change; the final
//! counts are checked against a model of the table. (2) PostgreSQL CDC: a
//! table of 10,000 rows updated by a writer as fast as it can, 100 rows a
//! transaction, for 10 s, read into a `RUNNING` sum: changes per second
//! until the result equals the table; then the lag from a one-row
//! update's commit to the result that shows it (p50, p99 of 200).
//!
//! Run: `cargo bench --bench changelog` (tansu as for the Kafka bench;
//! PostgreSQL's server binaries as for the tests).
//! `CHANGELOG_BENCH_CHANGES` overrides the Kafka count.

#[path = "../tests/support/kafka_broker.rs"]
mod kafka_broker;
#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use brook::testing::Rng;
use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::Array;
use futures::StreamExt;
use kafka_broker::KafkaBroker;
use pg_server::PgServer;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const STATUSES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

fn changes() -> usize {
    std::env::var("CHANGELOG_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The Debezium messages, keyed and partitioned by id, and the counts per
/// status of the table they leave.
fn debezium_messages(count: usize) -> (Vec<(u64, String)>, BTreeMap<String, i64>) {
    let mut rng = Rng::new(0x00de_be21_u64);
    let mut table: HashMap<u64, &str> = HashMap::new();
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let id = rng.below(100_000);
        let status = STATUSES[rng.below(STATUSES.len() as u64) as usize];
        let message = match (table.contains_key(&id), rng.below(10)) {
            (true, 0) => {
                table.remove(&id);
                format!(r#"{{"before":{{"id":{id}}},"after":null,"op":"d","ts_ms":1}}"#)
            }
            (true, _) => {
                table.insert(id, status);
                format!(
                    r#"{{"before":null,"after":{{"id":{id},"status":"{status}","amount":{id}}},"op":"u","ts_ms":1}}"#
                )
            }
            (false, _) => {
                table.insert(id, status);
                format!(
                    r#"{{"before":null,"after":{{"id":{id},"status":"{status}","amount":{id}}},"op":"c","ts_ms":1}}"#
                )
            }
        };
        messages.push((id, message));
    }
    let mut counts = BTreeMap::new();
    for status in table.values() {
        *counts.entry(status.to_string()).or_default() += 1;
    }
    (messages, counts)
}

fn produce(broker: &KafkaBroker, topic: &str, messages: &[(u64, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "16777216")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "none")
        .create()
        .expect("producer");
    for (id, payload) in messages {
        let key = id.to_string();
        let mut record = BaseRecord::<String, String>::to(topic)
            .key(&key)
            .payload(payload)
            .partition((id % 4) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Reads the topic into a running count per status until it equals
/// `expected`; the time from the first batch with rows to the last.
async fn debezium_run(
    broker: &KafkaBroker,
    expected: &BTreeMap<String, i64>,
    expected_rows: usize,
    run: u32,
) -> Duration {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM orders (id BIGINT, status TEXT, amount BIGINT, PRIMARY KEY (id)) WITH (\
         connector = 'kafka', bootstrap_servers = '{}', topic = 'orders', format = 'debezium-json', \
         start_offset = 'earliest', group_id = 'bench-{run}', \
         'kafka.session.timeout.ms' = '6000', 'kafka.heartbeat.interval.ms' = '500')",
        broker.address()
    ))
    .await
    .expect("stream");
    let SqlOutput::Query(mut query) = ctx
        .sql("SELECT status, COUNT(*) AS n FROM RUNNING(orders) GROUP BY status")
        .await
        .expect("query")
    else {
        panic!("a query");
    };
    let mut first = None;
    let mut seen = 0;
    loop {
        let output = tokio::time::timeout(Duration::from_secs(120), query.next())
            .await
            .expect("a batch in time")
            .expect("running")
            .expect("the batch runs");
        if output.rows_in > 0 && first.is_none() {
            first = Some(Instant::now() - output.elapsed);
        }
        seen += output.rows_in;
        let mut counts = BTreeMap::new();
        for batch in &output.batches {
            let status = datafusion::arrow::compute::cast(
                batch.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let status = status
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            let n = batch
                .column(1)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap();
            for row in 0..batch.num_rows() {
                counts.insert(status.value(row).to_string(), n.value(row));
            }
        }
        assert!(
            seen <= expected_rows,
            "{seen} changes read, {expected_rows} produced"
        );
        if seen == expected_rows {
            // Every change is in: the running counts must be the model's
            // table exactly, in this batch's result.
            assert_eq!(counts, *expected, "the counts after every change");
            return Instant::now() - first.unwrap_or_else(Instant::now);
        }
    }
}

/// A table of 10,000 rows updated as fast as one writer can for `for_how_long`,
/// read by CDC into a running sum; changes per second until the result
/// equals the table, then the commit-to-result lag of single updates.
async fn postgres_run(pg: &PgServer) -> (f64, Vec<Duration>) {
    let client = pg.client().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS accounts; \
             CREATE TABLE accounts (id int PRIMARY KEY, grp int, balance bigint); \
             INSERT INTO accounts SELECT g, g % 10, 0 FROM generate_series(1, 10000) g;",
        )
        .await
        .unwrap();
    let _ = client
        .batch_execute("SELECT pg_drop_replication_slot('brook_accounts')")
        .await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM accounts (id INT, grp INT, balance BIGINT, PRIMARY KEY (id)) \
         WITH (connector = 'postgres-cdc', url = '{}', table = 'accounts')",
        pg.url()
    ))
    .await
    .unwrap();
    let SqlOutput::Query(mut query) = ctx
        .sql("SELECT SUM(balance) AS total, COUNT(*) AS n FROM RUNNING(accounts)")
        .await
        .unwrap()
    else {
        panic!("a query");
    };
    // The one value of column `column` of a result (the sum, the count).
    let value_of = |output: &brook::BatchOutput, column: usize| -> Option<i64> {
        let batch = output.batches.first()?;
        let values = batch
            .column(column)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()?;
        (values.len() == 1 && values.is_valid(0)).then(|| values.value(0))
    };
    let total_of = |output: &brook::BatchOutput| value_of(output, 0);
    let count_of = |output: &brook::BatchOutput| value_of(output, 1);
    // Wait for the snapshot.
    loop {
        let output = query.next().await.unwrap().unwrap();
        if total_of(&output) == Some(0) {
            break;
        }
    }
    // The writer: 100 rows a transaction, each +1.
    let writer_url = pg.url();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&writer_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut rng = Rng::new(7);
        let mut changes = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            let first = rng.below(9_900) + 1;
            client
                .batch_execute(&format!(
                    "UPDATE accounts SET balance = balance + 1 WHERE id BETWEEN {first} AND {}",
                    first + 99
                ))
                .await
                .unwrap();
            changes += 100;
        }
        changes
    });
    let changes = writer.await.unwrap();
    println!(
        "changelog: the writer made {changes} changes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut shown = Instant::now();
    let writer_done = Instant::now();
    loop {
        let output = query.next().await.unwrap().unwrap();
        let total = total_of(&output);
        assert!(
            total.is_none_or(|total| total <= changes as i64),
            "a running sum of {total:?} over {changes} committed +1 updates"
        );
        if total == Some(changes as i64) {
            assert_eq!(count_of(&output), Some(10_000), "the table's rows");
            break;
        }
        assert!(
            writer_done.elapsed() < Duration::from_secs(300),
            "the result still {total:?} of {changes} five minutes after the writer stopped"
        );
        if shown.elapsed() > Duration::from_secs(5) {
            println!(
                "changelog: {total:?} of {changes} changes after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
    }
    let rate = changes as f64 / started.elapsed().as_secs_f64();
    // Lag: one update at a time, timed from its commit to the result.
    let mut lags = Vec::new();
    let mut expected = changes as i64;
    for _ in 0..200 {
        client
            .batch_execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            .await
            .unwrap();
        let committed = Instant::now();
        expected += 1;
        loop {
            let output = query.next().await.unwrap().unwrap();
            let total = total_of(&output);
            assert!(
                total.is_none_or(|total| total <= expected),
                "a running sum of {total:?} after {expected} +1 updates"
            );
            if total == Some(expected) {
                lags.push(committed.elapsed());
                break;
            }
        }
    }
    lags.sort();
    drop(query);
    (rate, lags)
}

fn main() {
    let count = changes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kafka_runs = if std::env::var("CHANGELOG_BENCH_POSTGRES_ONLY").is_ok() {
        0
    } else {
        3
    };
    let broker = KafkaBroker::start();
    broker.create_topic("orders", 4);
    let (messages, expected) = debezium_messages(count);
    produce(&broker, "orders", &messages);
    drop(messages);
    for run in 1..=kafka_runs {
        let took = runtime.block_on(debezium_run(&broker, &expected, count, run));
        println!(
            "changelog run {run}: Debezium JSON from Kafka into RUNNING COUNT(*) per status: {count} changes in {:.2} s from the first fetch, {:.0}k changes/s",
            took.as_secs_f64(),
            count as f64 / took.as_secs_f64() / 1e3
        );
    }
    drop(broker);
    let pg = runtime.block_on(PgServer::start());
    for run in 1..=2 {
        let (rate, lags) = runtime.block_on(postgres_run(&pg));
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "changelog run {run}: PostgreSQL CDC, 100-row update transactions for 10 s: {:.0}k changes/s to the result; commit-to-result lag of one-row updates p50 {:.0} ms, p99 {:.0} ms (100 ms batches, 100 ms polls)",
            rate / 1e3,
            at(0.5),
            at(0.99)
        );
    }
}
