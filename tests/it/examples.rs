//! The examples in examples/ run here, through the same code.

use std::time::Duration;

use crate::common::rows;

#[path = "../../examples/kafka_wordcount.rs"]
mod kafka_wordcount;
#[path = "../../examples/queue_wordcount.rs"]
mod queue_wordcount;
#[path = "../../examples/socket_print.rs"]
mod socket_print;

#[tokio::test]
async fn queue_wordcount_example_prints_sparks_two_batches() {
    let outputs = queue_wordcount::run(Duration::from_millis(50))
        .await
        .unwrap();
    let batches: Vec<_> = outputs.iter().map(|o| (o.batch_number, rows(o))).collect();
    let row = |w: &str, c: &str| vec![w.to_string(), c.to_string()];
    assert_eq!(
        batches,
        vec![
            (
                1,
                vec![
                    row("Sample", "1"),
                    row("Spark", "1"),
                    row("Streaming", "1"),
                    row("ssc", "1")
                ]
            ),
            (
                2,
                vec![row("Spark", "2"), row("API", "1"), row("Queue", "1")]
            ),
        ]
    );
}

#[tokio::test]
async fn socket_print_example_prints_every_line_once_in_order() {
    let outputs = socket_print::run(Duration::from_millis(100)).await.unwrap();
    let lines: Vec<String> = outputs
        .iter()
        .flat_map(rows)
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        lines,
        vec![
            "hello brook",
            "lines arrive",
            "over TCP",
            "one batch per interval"
        ]
    );
    assert!(
        outputs.len() >= 2,
        "two bursts a pause apart make two batches: {outputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_wordcount_example_counts_every_word_and_commits_what_it_counted() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = crate::kafka_broker::KafkaBroker::start();
    broker.create_topic("lines", 2);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let lines = ["a b a", "c a\nb", "b c d"];
    for (i, line) in lines.iter().enumerate() {
        producer
            .send(
                FutureRecord::<(), _>::to("lines")
                    .partition(i as i32 % 2)
                    .payload(*line),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let (totals, offsets) = tokio::time::timeout(
        crate::common::DEADLINE,
        kafka_wordcount::run(
            &broker.address(),
            "lines",
            "example",
            9,
            Duration::from_millis(100),
        ),
    )
    .await
    .expect("the example ends")
    .unwrap();
    let expected: std::collections::BTreeMap<String, i64> =
        [("a", 3), ("b", 3), ("c", 2), ("d", 1)]
            .into_iter()
            .map(|(w, n)| (w.to_string(), n))
            .collect();
    assert_eq!(totals, expected);
    assert!(offsets.contains("next offsets 0:2 1:1"), "{offsets}");
    // The example's context is dropped: what it counted is committed.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "example")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition("lines", 0);
    list.add_partition("lines", 1);
    let committed: Vec<_> = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.offset())
        .collect();
    assert_eq!(
        committed,
        [rdkafka::Offset::Offset(2), rdkafka::Offset::Offset(1)]
    );
}

#[test]
fn every_example_in_queries_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("queries/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let text = std::fs::read_to_string(&path).expect("read");
            let statements = brook::sql::parse_sql(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(!statements.is_empty(), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} examples");
}
