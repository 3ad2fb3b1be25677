//! Reading Kafka: 5,000,000 small messages pre-produced to a 4-partition
//! topic on a tansu broker (127.0.0.1, in-memory storage), then consumed
//! by a word count over text lines and by a `GROUP BY` over JSON records.
//! Messages per second from the query's start (before the first fetch) to
//! the result that holds the last message.
//!
//! Run: `cargo bench --bench kafka_source` (tansu at `target/tools/tansu`,
//! or `BROOK_TANSU`; `bash .ci/install-tansu` fetches it).
//! `KAFKA_BENCH_MESSAGES` overrides the count.

#[path = "../tests/support/kafka_broker.rs"]
mod kafka_broker;

use std::time::{Duration, Instant};

use brook::{SqlOutput, StreamContext};
use futures::StreamExt;
use kafka_broker::KafkaBroker;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn messages() -> usize {
    std::env::var("KAFKA_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000)
}

/// Produces `count` messages made by `message` round-robin over 4
/// partitions; returns the time it took.
fn produce(
    broker: &KafkaBroker,
    topic: &str,
    count: usize,
    message: impl Fn(usize) -> String,
) -> Duration {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "16777216")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "none")
        .create()
        .expect("producer");
    let started = Instant::now();
    for n in 0..count {
        let payload = message(n);
        let mut record = BaseRecord::<(), String>::to(topic)
            .payload(&payload)
            .partition((n % 4) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    // The local queue is full: let deliveries drain.
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    started.elapsed()
}

/// Consumes `count` messages of `topic` with `sql` in a group of its own;
/// returns the time from the query's start and from its first batch with
/// rows (after the group join and the first fetch) to the last message.
async fn consume(
    broker: &KafkaBroker,
    topic: &str,
    (format, columns): (&str, &str),
    sql: &str,
    count: usize,
    attempt: u32,
) -> (Duration, Duration) {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM {topic} ({columns}) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = '{topic}', format = '{format}', start_offset = 'earliest', group_id = 'bench-{topic}-{attempt}', \
         'kafka.session.timeout.ms' = '6000', 'kafka.heartbeat.interval.ms' = '500'{})",
        broker.address(),
        std::env::var("KAFKA_BENCH_OPTIONS").unwrap_or_default()
    ))
    .await
    .expect("stream");
    let started = Instant::now();
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    let mut seen = 0;
    let mut first_rows = None;
    while seen < count {
        match tokio::time::timeout(Duration::from_secs(120), query.next()).await {
            Ok(Some(Ok(output))) => {
                if output.rows_in > 0 && first_rows.is_none() {
                    // The batch cut at this tick held the first fetch.
                    first_rows = Some(Instant::now() - output.elapsed);
                }
                seen += output.rows_in;
            }
            other => panic!("{sql}: stopped at {seen} of {count}: {other:?}"),
        }
    }
    let end = Instant::now();
    (end - started, end - first_rows.unwrap_or(started))
}

fn main() {
    let count = messages();
    let broker = KafkaBroker::start();
    broker.create_topic("lines", 4);
    broker.create_topic("records", 4);
    let produced_text = produce(&broker, "lines", count, |n| {
        format!("w{} w{} w{}", n % 1000, (n * 7) % 1000, (n * 13) % 1000)
    });
    let produced_json = produce(&broker, "records", count, |n| {
        format!("{{\"sensor\":\"s{}\",\"temp\":{}.5}}", n % 1000, n % 40)
    });
    println!(
        "kafka_source: produced {count} text messages in {:.1} s, {count} JSON messages in {:.1} s",
        produced_text.as_secs_f64(),
        produced_json.as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Each run reads the topic from the start, in a group of its own.
    for attempt in 1..=3 {
        let (text_all, text) = runtime.block_on(consume(
            &broker,
            "lines",
            ("text", "line TEXT"),
            "SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word",
            count,
            attempt,
        ));
        let (json_all, json) = runtime.block_on(consume(
            &broker,
            "records",
            ("json", "sensor TEXT, temp DOUBLE"),
            "SELECT sensor, AVG(temp) AS t, COUNT(*) AS n FROM records GROUP BY sensor",
            count,
            attempt,
        ));
        let rate = |d: Duration| count as f64 / d.as_secs_f64() / 1e6;
        println!(
            "kafka_source run {attempt}: text word count {:.2}M messages/s from the first fetch ({:.2}M/s with the group join, {:.1} s), JSON GROUP BY {:.2}M messages/s from the first fetch ({:.2}M/s with the join, {:.1} s)",
            rate(text),
            rate(text_all),
            text_all.as_secs_f64(),
            rate(json),
            rate(json_all),
            json_all.as_secs_f64()
        );
    }
}
