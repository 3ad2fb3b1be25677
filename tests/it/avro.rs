//! Avro on Kafka with a schema registry: messages encoded by an independent
//! Avro implementation (the apache-avro crate) on a real broker (tansu),
//! schemas served by the registry the tests start (tests/support), read by
//! brook's Kafka source; brook's Avro sink decoded back by apache-avro.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value;
use brook::{SqlOutput, StreamContext};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::Offset;

use crate::common::{DEADLINE, next_batch, recording_warnings, rows, table_rows};
use crate::kafka_broker::KafkaBroker;
use crate::schema_registry::SchemaRegistry;

/// Short group timings so a group's first join takes ~3 s on tansu.
const GROUP: &str = "'kafka.session.timeout.ms' = '6000', 'kafka.heartbeat.interval.ms' = '500'";

const EVERY_TYPE: &str = r#"{"type": "record", "name": "Reading", "namespace": "test", "fields": [
  {"name": "id", "type": "int"},
  {"name": "big", "type": "long"},
  {"name": "ratio", "type": "float"},
  {"name": "value", "type": "double"},
  {"name": "ok", "type": "boolean"},
  {"name": "name", "type": "string"},
  {"name": "raw", "type": "bytes"},
  {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
  {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
  {"name": "note", "type": ["null", "string"], "default": null},
  {"name": "loc", "type": {"type": "record", "name": "Loc", "fields": [
    {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}]}},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "attrs", "type": {"type": "map", "values": "long"}}
]}"#;

/// The Confluent frame: magic byte 0, the schema id big-endian, the body.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut message = vec![0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// `fields` as a record of `schema`, encoded by apache-avro.
fn body(schema: &AvroSchema, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let record = Value::Record(
        fields
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    );
    apache_avro::to_avro_datum(schema, record).expect("apache-avro encodes the record")
}

async fn produce(broker: &KafkaBroker, topic: &str, messages: &[(i32, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (partition, value) in messages {
        let record: FutureRecord<'_, (), Vec<u8>> =
            FutureRecord::to(topic).partition(*partition).payload(value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered");
    }
}

/// Rows of `sql`'s batches until `count` rows arrived.
async fn rows_until(ctx: &StreamContext, sql: &str, count: usize) -> Vec<Vec<String>> {
    let SqlOutput::Query(mut query) = ctx.sql(sql).await.unwrap() else {
        panic!("{sql} is a continuous query");
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < count {
        assert!(Instant::now() < deadline, "rows so far: {got:?}");
        let output = next_batch(&mut query).await.unwrap().unwrap();
        got.extend(rows(&output));
    }
    got.sort();
    got
}

fn reading(schema: &AvroSchema, id: i32, note: Option<&str>) -> Vec<u8> {
    let note = match note {
        Some(text) => Value::Union(1, Box::new(Value::String(text.to_string()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    body(
        schema,
        vec![
            ("id", Value::Int(id)),
            ("big", Value::Long(9_007_199_254_740_993 * i64::from(id))),
            ("ratio", Value::Float(0.5 * id as f32)),
            ("value", Value::Double(-1.25 * f64::from(id))),
            ("ok", Value::Boolean(id % 2 == 0)),
            ("name", Value::String(format!("sensor-{id}"))),
            ("raw", Value::Bytes(vec![0, 0xff, id as u8])),
            (
                "at_ms",
                Value::TimestampMillis(1_700_000_000_123 + i64::from(id)),
            ),
            (
                "at_us",
                Value::TimestampMicros(1_700_000_000_123_456 + i64::from(id)),
            ),
            ("day", Value::Date(19_000 + id)),
            // 123.45 * id as an unscaled big-endian two's complement.
            (
                "price",
                Value::Decimal((12_345 * i64::from(id)).to_be_bytes().to_vec().into()),
            ),
            (
                "color",
                Value::Enum((id % 2) as u32, ["RED", "GREEN"][(id % 2) as usize].into()),
            ),
            ("note", note),
            (
                "loc",
                Value::Record(vec![
                    ("lat".into(), Value::Double(52.5 + f64::from(id))),
                    ("lon".into(), Value::Double(13.25)),
                ]),
            ),
            (
                "tags",
                Value::Array(vec![
                    Value::String(format!("t{id}")),
                    Value::String("x".into()),
                ]),
            ),
            (
                "attrs",
                Value::Map(HashMap::from([(
                    "n".to_string(),
                    Value::Long(i64::from(id)),
                )])),
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_messages_of_every_supported_type_decode_exactly_into_columns_taken_from_the_registry()
{
    let broker = KafkaBroker::start();
    broker.create_topic("readings", 2);
    let registry = SchemaRegistry::start();
    let id = registry.register("readings-value", EVERY_TYPE);
    let schema = AvroSchema::parse_str(EVERY_TYPE).unwrap();
    let messages: Vec<(i32, Vec<u8>)> = vec![
        (0, framed(id, &reading(&schema, 1, Some("first")))),
        (1, framed(id, &reading(&schema, 2, None))),
        (0, framed(id, &reading(&schema, 3, Some("")))),
    ];
    produce(&broker, "readings", &messages).await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM readings WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'readings', \
         format = 'avro', schema_registry = '{}', start_offset = 'earliest', {GROUP})",
        broker.address(),
        registry.url()
    ))
    .await
    .unwrap();
    let SqlOutput::Rows { batches, .. } = ctx.sql("DESCRIBE readings").await.unwrap() else {
        panic!("DESCRIBE returns rows");
    };
    let described: Vec<String> = table_rows(&batches)
        .into_iter()
        .map(|row| format!("{} {} {}", row[0], row[1], row[2]))
        .collect();
    assert_eq!(
        described[..13],
        [
            "id INT NO",
            "big BIGINT NO",
            "ratio REAL NO",
            "value DOUBLE NO",
            "ok BOOLEAN NO",
            "name TEXT NO",
            "raw Binary NO",
            "at_ms TIMESTAMP NO",
            "at_us TIMESTAMP NO",
            "day DATE NO",
            "price DECIMAL(10, 2) NO",
            "color TEXT NO",
            "note TEXT YES",
        ]
    );
    assert!(described[13].starts_with("loc Struct("), "{described:?}");
    assert!(described[14].starts_with("tags List("), "{described:?}");
    assert!(described[15].starts_with("attrs Map("), "{described:?}");
    let got = rows_until(
        &ctx,
        "SELECT id, big, ratio, value, ok, name, raw, at_ms, at_us, day, price, color, note, \
         loc['lat'], tags[1], array_length(tags), attrs['n'] FROM readings",
        3,
    )
    .await;
    let expected: Vec<Vec<String>> = [
        "1|9007199254740993|0.5|-1.25|false|sensor-1|00ff01|2023-11-14T22:13:20.124|2023-11-14T22:13:20.123457|2022-01-09|123.45|GREEN|first|53.5|t1|2|1",
        "2|18014398509481986|1.0|-2.5|true|sensor-2|00ff02|2023-11-14T22:13:20.125|2023-11-14T22:13:20.123458|2022-01-10|246.90|RED|NULL|54.5|t2|2|2",
        "3|27021597764222979|1.5|-3.75|false|sensor-3|00ff03|2023-11-14T22:13:20.126|2023-11-14T22:13:20.123459|2022-01-11|370.35|GREEN||55.5|t3|2|3",
    ]
    .iter()
    .map(|row| row.split('|').map(str::to_string).collect())
    .collect();
    assert_eq!(got, expected);
}

const V1: &str = r#"{"type": "record", "name": "Order", "fields": [
  {"name": "id", "type": "long"},
  {"name": "item", "type": "string"},
  {"name": "legacy", "type": "string"}
]}"#;

const V2: &str = r#"{"type": "record", "name": "Order", "fields": [
  {"name": "id", "type": "long"},
  {"name": "item", "type": "string"},
  {"name": "qty", "type": "int", "default": 1}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writer_schemas_on_one_topic_resolve_into_the_latest_a_missing_field_taking_its_default()
 {
    let broker = KafkaBroker::start();
    broker.create_topic("orders", 1);
    let registry = SchemaRegistry::start();
    let old = registry.register("orders-value", V1);
    let new = registry.register("orders-value", V2);
    let (v1, v2) = (
        AvroSchema::parse_str(V1).unwrap(),
        AvroSchema::parse_str(V2).unwrap(),
    );
    let by_v1 = |id: i64, item: &str| {
        framed(
            old,
            &body(
                &v1,
                vec![
                    ("id", Value::Long(id)),
                    ("item", Value::String(item.into())),
                    ("legacy", Value::String("dropped".into())),
                ],
            ),
        )
    };
    let by_v2 = |id: i64, item: &str, qty: i32| {
        framed(
            new,
            &body(
                &v2,
                vec![
                    ("id", Value::Long(id)),
                    ("item", Value::String(item.into())),
                    ("qty", Value::Int(qty)),
                ],
            ),
        )
    };
    produce(
        &broker,
        "orders",
        &[
            (0, by_v1(1, "apple")),
            (0, by_v2(2, "pear", 5)),
            (0, by_v1(3, "plum")),
            (0, by_v2(4, "fig", 7)),
        ],
    )
    .await;
    let ctx = StreamContext::new(Duration::from_millis(100));
    // Declared columns: a subset, in another order, one type widened.
    ctx.sql(&format!(
        "CREATE STREAM orders (qty BIGINT, id BIGINT, item TEXT, _offset BIGINT) WITH (connector = 'kafka', \
         bootstrap_servers = '{}', topic = 'orders', format = 'avro', schema_registry = '{}', \
         start_offset = 'earliest', {GROUP})",
        broker.address(),
        registry.url()
    ))
    .await
    .unwrap();
    let got = rows_until(&ctx, "SELECT id, item, qty, _offset FROM orders", 4).await;
    assert_eq!(
        got,
        [
            ["1", "apple", "1", "0"],
            ["2", "pear", "5", "1"],
            ["3", "plum", "1", "2"],
            ["4", "fig", "7", "3"]
        ]
        .map(|r| r.map(str::to_string).to_vec())
        .to_vec()
    );
    // Each schema was asked for once.
    let asked: Vec<String> = registry
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /schemas/ids/"))
        .collect();
    assert_eq!(
        asked,
        [
            format!("GET /schemas/ids/{old}"),
            format!("GET /schemas/ids/{new}")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_avro_messages_are_named_by_partition_and_offset_and_the_rows_around_them_are_kept() {
    let broker = KafkaBroker::start();
    broker.create_topic("bad", 1);
    let mut registry = SchemaRegistry::start();
    let schema_text = r#"{"type": "record", "name": "M", "fields": [
        {"name": "n", "type": "long"}, {"name": "s", "type": "string"}]}"#;
    let id = registry.register("bad-value", schema_text);
    let schema = AvroSchema::parse_str(schema_text).unwrap();
    let good = |n: i64| {
        body(
            &schema,
            vec![("n", Value::Long(n)), ("s", Value::String(format!("v{n}")))],
        )
    };
    let mut truncated = good(4);
    truncated.truncate(truncated.len() - 2);
    let mut trailing = good(5);
    trailing.extend_from_slice(b"xyz");
    // Registered, but asked for only while the registry is down.
    let later = registry.register(
        "other-value",
        r#"{"type": "record", "name": "M", "fields": [
        {"name": "n", "type": "long"}]}"#,
    );
    let later_schema = AvroSchema::parse_str(&registry.schema(later).unwrap()).unwrap();
    let by_later = framed(later, &body(&later_schema, vec![("n", Value::Long(9))]));
    produce(
        &broker,
        "bad",
        &[
            (0, framed(id, &good(1))),                 // offset 0
            (0, br#"{"n": 2, "s": "json"}"#.to_vec()), // 1: not framed
            (0, framed(999, &good(3))),                // 2: unknown id
            (0, framed(id, &truncated)),               // 3: ends inside its record
            (0, framed(id, &trailing)),                // 4: bytes after the record
            (0, framed(id, &good(1 << 40))),           // 5: does not fit INT
            (0, vec![0, 0]),                           // 6: shorter than a frame
            (0, framed(id, &good(7))),                 // 7
        ],
    )
    .await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM bad (n INT, s TEXT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
         topic = 'bad', format = 'avro', schema_registry = '{}', start_offset = 'earliest', {GROUP})",
        broker.address(),
        registry.url()
    ))
    .await
    .unwrap();
    let SqlOutput::Query(mut query) = ctx.sql("SELECT n, s FROM bad").await.unwrap() else {
        panic!("a query");
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "rows so far: {got:?}");
        got.extend(rows(&next_batch(&mut query).await.unwrap().unwrap()));
    }
    assert_eq!(
        got,
        [["1", "v1"], ["7", "v7"]].map(|r| r.map(str::to_string).to_vec())
    );
    let expected = [
        (
            1,
            "does not start with the schema registry frame (magic byte 0x7b",
        ),
        (2, "unknown schema id 999"),
        (3, "the body ends inside its record"),
        (4, "bytes follow the record in the body"),
        (5, "column n (INT): the value does not fit the column"),
        (
            6,
            "a value of 2 bytes is shorter than the schema registry frame",
        ),
    ];
    let seen = warnings.lock().unwrap().clone();
    for (offset, why) in expected {
        assert!(
            seen.iter().any(
                |w| w.contains(&format!("topic 'bad' partition 0 offset {offset}: "))
                    && w.contains(why)
            ),
            "offset {offset} ({why}) not reported: {seen:#?}"
        );
    }
    assert_eq!(ctx.streams()[0].rows_dropped, 6);

    // A schema registered after CREATE STREAM whose `n` became a string
    // cannot resolve to the reader schema (the latest at CREATE STREAM):
    // its messages are bad rows, the others still read.
    let incompatible = registry.register(
        "bad-value",
        r#"{"type": "record", "name": "M", "fields": [
        {"name": "n", "type": "string"}, {"name": "s", "type": "string"}]}"#,
    );
    let text_n = AvroSchema::parse_str(&registry.schema(incompatible).unwrap()).unwrap();
    let by_text_n = body(
        &text_n,
        vec![
            ("n", Value::String("ten".into())),
            ("s", Value::String("x".into())),
        ],
    );
    produce(
        &broker,
        "bad",
        &[
            (0, framed(incompatible, &by_text_n)),
            (0, framed(id, &good(11))),
        ],
    )
    .await;
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.is_empty() {
        assert!(Instant::now() < deadline, "rows so far: {got:?}");
        got.extend(rows(&next_batch(&mut query).await.unwrap().unwrap()));
    }
    assert_eq!(got, [["11".to_string(), "v11".to_string()]]);
    let refused = warnings.lock().unwrap().clone();
    assert!(
        refused.iter().any(|w| w.contains("offset 8: ")
            && w.contains(&format!(
                "writer schema {incompatible} cannot be read as the stream's schema"
            ))),
        "{refused:#?}"
    );

    // The registry goes away: a message of a schema not yet known is a bad
    // row naming the registry; once it is back, such messages are read.
    registry.stop();
    produce(&broker, "bad", &[(0, by_later.clone())]).await;
    let deadline = Instant::now() + DEADLINE;
    while !warnings
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("offset 10: "))
    {
        assert!(Instant::now() < deadline, "{:#?}", warnings.lock().unwrap());
        let _ = tokio::time::timeout(Duration::from_millis(200), next_batch(&mut query)).await;
    }
    let reported = warnings.lock().unwrap().clone();
    let down = reported.iter().find(|w| w.contains("offset 10: ")).unwrap();
    assert!(
        down.contains(&format!("schema id {later} could not be fetched")),
        "{down}"
    );
    assert!(down.contains(&registry.url()), "{down}");
    registry.restart();
    tokio::time::sleep(Duration::from_secs(6)).await;
    produce(&broker, "bad", &[(0, by_later)]).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.is_empty() {
        assert!(Instant::now() < deadline, "{:#?}", warnings.lock().unwrap());
        got.extend(rows(&next_batch(&mut query).await.unwrap().unwrap()));
    }
    assert_eq!(got, [["9".to_string(), "NULL".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_be_reached_or_refuses_the_password_is_an_error_at_create_and_never_shows_it()
 {
    let broker = KafkaBroker::start();
    broker.create_topic("t", 1);
    let registry = SchemaRegistry::start_with_user("alice", "hunter2");
    registry.register(
        "t-value",
        r#"{"type": "record", "name": "T", "fields": [{"name": "n", "type": "long"}]}"#,
    );
    let ctx = StreamContext::new(Duration::from_millis(100));
    let create = |name: &str, registry: String, extra: &str| {
        format!(
            "CREATE STREAM {name} WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 't', \
             format = 'avro', schema_registry = '{registry}'{extra})",
            broker.address()
        )
    };
    // Nothing listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = ctx
        .sql(&create("a", format!("http://bob:pw1@{closed}"), ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("http://{closed}")), "{err}");
    assert!(!err.contains("pw1"), "{err}");
    let err = ctx
        .sql(&create(
            "b",
            registry.url(),
            ", schema_registry_user = 'alice', schema_registry_password = 'wrong'",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    ctx.sql(&create(
        "c",
        registry.url(),
        ", schema_registry_user = 'alice', schema_registry_password = 'hunter2'",
    ))
    .await
    .unwrap();
    let url_with_password = registry.url().replace("http://", "http://alice:hunter2@");
    ctx.sql(&create("d", url_with_password, "")).await.unwrap();
    let SqlOutput::Rows { batches, .. } = ctx.sql("SHOW STREAMS").await.unwrap() else {
        panic!("SHOW STREAMS returns rows");
    };
    let shown = format!("{:?}", table_rows(&batches));
    assert!(shown.contains(&registry.url()), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    for stream in ctx.streams() {
        assert!(!format!("{stream:?}").contains("hunter2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_sinks_messages_decode_with_an_independent_reader_and_brook_reads_them_back_exactly()
 {
    let broker = KafkaBroker::start();
    broker.create_topic("out", 1);
    let registry = SchemaRegistry::start();
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(
        "CREATE STREAM events (word TEXT, v BIGINT, at TIMESTAMP, price DECIMAL(8, 3)) \
             WITH (connector = 'queue', one_at_a_time = 'true')",
    )
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'out', key = 'word', \
         format = 'avro', schema_registry = '{}') AS \
         SELECT word, v * 2 AS twice, at, price, CASE WHEN v > 1 THEN 'big' END AS size FROM events",
        broker.address(),
        registry.url()
    ))
    .await
    .unwrap();
    let versions = registry.versions("out-value");
    assert_eq!(
        versions.len(),
        1,
        "the sink's schema is registered at CREATE SINK"
    );
    ctx.sql(
        "INSERT INTO events VALUES ('a', 1, TIMESTAMP '2026-12-06 10:00:00.123456789', 1.5), \
             ('b', 2, TIMESTAMP '1999-01-02 03:04:05', -0.001)",
    )
    .await
    .unwrap();
    ctx.close_queues();
    tokio::time::timeout(DEADLINE, ctx.wait_for_sinks())
        .await
        .unwrap()
        .unwrap();

    // apache-avro reads each message by the schema its frame names.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "reader")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("out", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut decoded = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while decoded.len() < 2 {
        assert!(Instant::now() < deadline, "messages so far: {decoded:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            let message = message.unwrap();
            let value = message.payload().unwrap();
            assert_eq!(value[0], 0, "the magic byte");
            let id = u32::from_be_bytes(value[1..5].try_into().unwrap());
            assert_eq!(id, versions[0]);
            let schema = AvroSchema::parse_str(&registry.schema(id).unwrap()).unwrap();
            let record = apache_avro::from_avro_datum(&schema, &mut &value[5..], None).unwrap();
            let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
            decoded.push((key, record));
        }
    }
    let Value::Record(a) = &decoded[0].1 else {
        panic!("{decoded:?}")
    };
    assert_eq!(decoded[0].0, "a");
    let field = |record: &[(String, Value)], name: &str| {
        record.iter().find(|(n, _)| n == name).unwrap().1.clone()
    };
    assert_eq!(
        field(a, "word"),
        Value::Union(1, Box::new(Value::String("a".into())))
    );
    assert_eq!(field(a, "twice"), Value::Union(1, Box::new(Value::Long(2))));
    // Nanoseconds kept: local-timestamp-nanos.
    assert_eq!(
        field(a, "at"),
        Value::Union(
            1,
            Box::new(Value::LocalTimestampNanos(1_796_551_200_123_456_789))
        )
    );
    assert_eq!(field(a, "size"), Value::Union(0, Box::new(Value::Null)));
    let Value::Record(b) = &decoded[1].1 else {
        panic!("{decoded:?}")
    };
    assert_eq!(
        field(b, "size"),
        Value::Union(1, Box::new(Value::String("big".into())))
    );

    // brook reads its own messages back: the same rows.
    ctx.sql(&format!(
        "CREATE STREAM back WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'out', \
         format = 'avro', schema_registry = '{}', start_offset = 'earliest', {GROUP})",
        broker.address(),
        registry.url()
    ))
    .await
    .unwrap();
    let got = rows_until(&ctx, "SELECT word, twice, at, price, size FROM back", 2).await;
    assert_eq!(
        got,
        [
            ["a", "2", "2026-12-06T10:00:00.123456789", "1.500", "NULL"],
            ["b", "4", "1999-01-02T03:04:05", "-0.001", "big"],
        ]
        .map(|r| r.map(str::to_string).to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_avro_bodies_are_read_with_an_inline_schema() {
    let broker = KafkaBroker::start();
    broker.create_topic("bare", 1);
    let text = r#"{"type": "record", "name": "P", "fields": [{"name": "x", "type": "double"}, {"name": "y", "type": ["null", "long"]}]}"#;
    let schema = AvroSchema::parse_str(text).unwrap();
    let point = |x: f64, y: Option<i64>| {
        let y = match y {
            Some(y) => Value::Union(1, Box::new(Value::Long(y))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        body(&schema, vec![("x", Value::Double(x)), ("y", y)])
    };
    produce(
        &broker,
        "bare",
        &[
            (0, point(1.5, Some(2))),
            (0, b"x".to_vec()),
            (0, point(-3.0, None)),
        ],
    )
    .await;
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM bare WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'bare', \
         format = 'avro', avro_schema = '{text}', start_offset = 'earliest', {GROUP})",
        broker.address()
    ))
    .await
    .unwrap();
    let got = rows_until(&ctx, "SELECT x, y FROM bare", 2).await;
    assert_eq!(
        got,
        [["-3.0", "NULL"], ["1.5", "2"]].map(|r| r.map(str::to_string).to_vec())
    );
    let warnings = warnings.lock().unwrap().clone();
    assert!(
        warnings.iter().any(|w| w.contains("offset 1: ")),
        "{warnings:?}"
    );
}

const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
  {"name": "sensor", "type": "string"}, {"name": "value", "type": "double"},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_avro_readings_example_runs_as_written_and_its_sink_decodes_with_apache_avro() {
    let broker = KafkaBroker::start();
    broker.create_topic("readings", 2);
    broker.create_topic("hottest", 1);
    let registry = SchemaRegistry::start();
    let id = registry.register("readings-value", READING);
    let schema = AvroSchema::parse_str(READING).unwrap();
    let reading = |sensor: &str, value: f64, at: i64| {
        framed(
            id,
            &body(
                &schema,
                vec![
                    ("sensor", Value::String(sensor.into())),
                    ("value", Value::Double(value)),
                    ("at", Value::TimestampMillis(at)),
                ],
            ),
        )
    };
    produce(
        &broker,
        "readings",
        &[
            (0, reading("s1", 20.5, 1_000)),
            (1, reading("s2", 7.0, 2_000)),
            (0, reading("s1", 31.25, 3_000)),
        ],
    )
    .await;
    // The script as written, pointed at this test's broker and registry.
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/queries/avro_readings.sql"
    ))
    .unwrap()
    .replace("127.0.0.1:9092", &broker.address())
    .replace("http://127.0.0.1:8081", &registry.url());
    let dir = tempfile_dir();
    let path = dir.join("avro_readings.sql");
    std::fs::write(&path, script).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["run", path.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start brook");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "example-reader")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("hottest", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut latest: std::collections::BTreeMap<String, Vec<(String, Value)>> = Default::default();
    let deadline = Instant::now() + DEADLINE;
    let hottest_s1 = Value::Union(1, Box::new(Value::Double(31.25)));
    let done = |latest: &std::collections::BTreeMap<String, Vec<(String, Value)>>| {
        latest.contains_key("s2")
            && latest
                .get("s1")
                .is_some_and(|r| r.iter().any(|(n, v)| n == "hottest" && *v == hottest_s1))
    };
    while !done(&latest) {
        assert!(Instant::now() < deadline, "messages so far: {latest:?}");
        assert!(child.try_wait().unwrap().is_none(), "brook exited early");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            let message = message.unwrap();
            let value = message.payload().unwrap();
            let id = u32::from_be_bytes(value[1..5].try_into().unwrap());
            let schema = AvroSchema::parse_str(&registry.schema(id).unwrap()).unwrap();
            let Value::Record(fields) =
                apache_avro::from_avro_datum(&schema, &mut &value[5..], None).unwrap()
            else {
                panic!("a record");
            };
            latest.insert(
                String::from_utf8_lossy(message.key().unwrap()).into_owned(),
                fields,
            );
        }
    }
    let field = |sensor: &str, name: &str| {
        latest[sensor]
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(
        field("s1", "hottest"),
        Value::Union(1, Box::new(Value::Double(31.25)))
    );
    assert_eq!(
        field("s2", "hottest"),
        Value::Union(1, Box::new(Value::Double(7.0)))
    );
    assert_eq!(
        field("s1", "last_at"),
        Value::Union(1, Box::new(Value::LocalTimestampNanos(3_000_000_000)))
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "brook exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "brook did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "brook-avro-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
