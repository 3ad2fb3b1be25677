//! Reading Kafka: 5,000,000 small messages pre-produced to a 4-partition
//! topic on a tansu broker (127.0.0.1, in-memory storage), then consumed
//! by a word count over text lines and by a `GROUP BY` over JSON records;
//! then the same readings (a sensor, a double, a timestamp) as Avro records
//! framed by a schema registry (the tests' own, tests/support) and as JSON
//! lines, each into the same `GROUP BY`.
//! Messages per second from the query's start (before the first fetch) to
//! the result that holds the last message. Each run must read every
//! message exactly once (no batch more, however long it waits after) and
//! its per-batch results must add up to the exact counts and sums.
//!
//! Run: `cargo bench --bench kafka_source` (tansu at `target/tools/tansu`,
//! or `BROOK_TANSU`; `bash .ci/install-tansu` fetches it).
//! `KAFKA_BENCH_MESSAGES` overrides the count; `KAFKA_BENCH_CASES=avro`
//! runs only the Avro/JSON readings, `=lines` only the first two.

#[path = "../tests/support/kafka_broker.rs"]
mod kafka_broker;
#[path = "../tests/support/schema_registry.rs"]
mod schema_registry;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brook::{BatchOutput, SqlOutput, StreamContext};
use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
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
    message: impl Fn(usize) -> Vec<u8>,
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
        let mut record = BaseRecord::<(), Vec<u8>>::to(topic)
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

/// Per group key, the sums of the per-batch results' columns (for an
/// average, times the batch's count): what a run's batches add up to.
type Totals = HashMap<String, Vec<i64>>;

/// Adds an output's rows to `totals`: the first column is the key, the
/// others Int64 counts or Float64 averages, an average weighted by the
/// row's last column (its count) and kept in halves (every value here is
/// a whole number and a half, so the sum is exact).
fn add_output(totals: &mut Totals, output: &BatchOutput) {
    for batch in &output.batches {
        let keys = cast(batch.column(0), &DataType::Utf8).expect("key column");
        let keys = keys.as_any().downcast_ref::<StringArray>().expect("keys");
        let last = batch.num_columns() - 1;
        let counts = batch
            .column(last)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("the last column is a count");
        for row in 0..batch.num_rows() {
            let sums = totals
                .entry(keys.value(row).to_string())
                .or_insert_with(|| vec![0; last]);
            for (column, sum) in (1..=last).zip(sums.iter_mut()) {
                let values = batch.column(column);
                *sum += match values.as_any().downcast_ref::<Float64Array>() {
                    Some(averages) => {
                        (averages.value(row) * counts.value(row) as f64 * 2.0).round() as i64
                    }
                    None => values
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("an Int64 or Float64 column")
                        .value(row),
                };
            }
        }
    }
}

/// Consumes `count` messages of `topic` with `sql` in a group of its own;
/// returns the time from the query's start and from its first batch with
/// rows (after the group join and the first fetch) to the last message,
/// having checked that no batch read a message more and that the batches'
/// results add up to `expected`.
async fn consume(
    broker: &KafkaBroker,
    topic: &str,
    (columns, with): (&str, &str),
    sql: &str,
    count: usize,
    expected: &Totals,
    attempt: u32,
) -> (Duration, Duration) {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM {topic} ({columns}) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = '{topic}', {with}, start_offset = 'earliest', group_id = 'bench-{topic}-{attempt}', \
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
    let mut totals = Totals::new();
    let mut end = None;
    // Past the last message, a second of batches that must read nothing.
    let mut quiet_until = None;
    while quiet_until.is_none_or(|until| Instant::now() < until) {
        match tokio::time::timeout(Duration::from_secs(120), query.next()).await {
            Ok(Some(Ok(output))) => {
                if output.rows_in > 0 && first_rows.is_none() {
                    // The batch cut at this tick held the first fetch.
                    first_rows = Some(Instant::now() - output.elapsed);
                }
                seen += output.rows_in;
                add_output(&mut totals, &output);
            }
            other => panic!("{sql}: stopped at {seen} of {count}: {other:?}"),
        }
        assert!(seen <= count, "{sql}: read {seen} messages of {count}");
        if seen == count && end.is_none() {
            let now = Instant::now();
            end = Some(now);
            quiet_until = Some(now + Duration::from_secs(1));
        }
    }
    assert!(
        totals == *expected,
        "{sql}: the batches' results do not add up"
    );
    let end = end.expect("every message read");
    (end - started, end - first_rows.unwrap_or(started))
}

/// Readings as Avro: a sensor, a double, a timestamp in milliseconds.
const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
  {"name": "sensor", "type": "string"},
  {"name": "value", "type": "double"},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
]}"#;

/// Reading `n`: its sensor, value and time (ms since the epoch).
fn reading(n: usize) -> (String, f64, i64) {
    (
        format!("s{}", n % 1000),
        (n % 40) as f64 + 0.5,
        1_796_551_200_000 + n as i64,
    )
}

/// Per sensor, the value in halves and one more reading.
fn reading_totals(count: usize) -> Totals {
    let mut sensors = Totals::new();
    for n in 0..count {
        let sums = sensors
            .entry(format!("s{}", n % 1000))
            .or_insert_with(|| vec![0, 0]);
        sums[0] += (n % 40) as i64 * 2 + 1;
        sums[1] += 1;
    }
    sensors
}

/// The same readings as Avro (framed with the registry's id, encoded by
/// apache-avro) and as JSON lines, each into one `GROUP BY`.
fn avro_beside_json(broker: &KafkaBroker, runtime: &tokio::runtime::Runtime, count: usize) {
    use apache_avro::types::Value;
    let registry = schema_registry::SchemaRegistry::start();
    let id = registry.register("avro_readings-value", READING);
    let schema = apache_avro::Schema::parse_str(READING).expect("schema");
    broker.create_topic("avro_readings", 4);
    broker.create_topic("json_readings", 4);
    let produced_avro = produce(broker, "avro_readings", count, |n| {
        let (sensor, value, at) = reading(n);
        let record = Value::Record(vec![
            ("sensor".into(), Value::String(sensor)),
            ("value".into(), Value::Double(value)),
            ("at".into(), Value::TimestampMillis(at)),
        ]);
        let mut message = vec![0];
        message.extend_from_slice(&id.to_be_bytes());
        message.extend(apache_avro::to_avro_datum(&schema, record).expect("encoded"));
        message
    });
    let produced_json = produce(broker, "json_readings", count, |n| {
        let (sensor, value, at) = reading(n);
        let at = chrono::DateTime::from_timestamp_millis(at).expect("a time");
        format!(
            "{{\"sensor\":\"{sensor}\",\"value\":{value},\"at\":\"{}\"}}",
            at.format("%Y-%m-%dT%H:%M:%S%.3f")
        )
        .into_bytes()
    });
    println!(
        "kafka_source: produced {count} Avro readings in {:.1} s, {count} JSON readings in {:.1} s",
        produced_avro.as_secs_f64(),
        produced_json.as_secs_f64()
    );
    let expected = reading_totals(count);
    let columns = "sensor TEXT, value DOUBLE, at TIMESTAMP";
    let avro_with = format!("format = 'avro', schema_registry = '{}'", registry.url());
    for attempt in 1..=3 {
        let mut rates = Vec::new();
        for (topic, with) in [
            ("avro_readings", avro_with.as_str()),
            ("json_readings", "format = 'json'"),
        ] {
            let sql = format!(
                "SELECT sensor, AVG(value) AS v, COUNT(*) AS n FROM {topic} GROUP BY sensor"
            );
            let (_, from_fetch) = runtime.block_on(consume(
                broker,
                topic,
                (columns, with),
                &sql,
                count,
                &expected,
                attempt,
            ));
            rates.push(count as f64 / from_fetch.as_secs_f64() / 1e6);
        }
        println!(
            "kafka_source run {attempt}: readings GROUP BY from the first fetch: Avro {:.2}M messages/s, JSON {:.2}M messages/s (Avro / JSON {:.2})",
            rates[0],
            rates[1],
            rates[0] / rates[1]
        );
    }
}

fn main() {
    let count = messages();
    let broker = KafkaBroker::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cases = std::env::var("KAFKA_BENCH_CASES").unwrap_or_default();
    if cases != "lines" {
        avro_beside_json(&broker, &runtime, count);
    }
    if cases == "avro" {
        return;
    }
    broker.create_topic("lines", 4);
    broker.create_topic("records", 4);
    let produced_text = produce(&broker, "lines", count, |n| {
        format!("w{} w{} w{}", n % 1000, (n * 7) % 1000, (n * 13) % 1000).into_bytes()
    });
    let produced_json = produce(&broker, "records", count, |n| {
        format!("{{\"sensor\":\"s{}\",\"temp\":{}.5}}", n % 1000, n % 40).into_bytes()
    });
    println!(
        "kafka_source: produced {count} text messages in {:.1} s, {count} JSON messages in {:.1} s",
        produced_text.as_secs_f64(),
        produced_json.as_secs_f64()
    );
    // What every message adds: three words of a line; a sensor's reading.
    let mut words = Totals::new();
    for n in 0..count {
        for word in [n % 1000, (n * 7) % 1000, (n * 13) % 1000] {
            words.entry(format!("w{word}")).or_insert_with(|| vec![0])[0] += 1;
        }
    }
    let sensors = reading_totals(count);
    // Each run reads the topic from the start, in a group of its own.
    for attempt in 1..=3 {
        let (text_all, text) = runtime.block_on(consume(
            &broker,
            "lines",
            ("line TEXT", "format = 'text'"),
            "SELECT word, COUNT(*) AS n FROM (SELECT unnest(split(line, ' ')) AS word FROM lines) GROUP BY word",
            count,
            &words,
            attempt,
        ));
        let (json_all, json) = runtime.block_on(consume(
            &broker,
            "records",
            ("sensor TEXT, temp DOUBLE", "format = 'json'"),
            "SELECT sensor, AVG(temp) AS t, COUNT(*) AS n FROM records GROUP BY sensor",
            count,
            &sensors,
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
