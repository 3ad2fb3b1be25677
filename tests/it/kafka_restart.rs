//! A brook killed while reading Kafka, restarted with its checkpoint under
//! librdkafka's default group settings, reads again within seconds: it
//! does not wait for the killed member's session to expire.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka_broker::KafkaBroker;

async fn produce(address: &str, topic: &str, word: &str, count: i32) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = (0..count).map(|i| {
        producer.send(
            FutureRecord::<(), _>::to(topic)
                .partition(i % 4)
                .payload(word),
            Duration::from_secs(30),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("delivered");
    }
}

/// Word totals over the per-batch CSV files (`batch,batch_time,word,n`)
/// in `dir`.
fn totals(dir: &Path) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            if let [_, _, word, n] = fields[..] {
                *totals.entry(word.to_string()).or_default() += n.parse::<i64>().unwrap();
            }
        }
    }
    totals
}

/// Waits (at most `limit`) until the files in `dir` hold `count` of
/// `word`; returns how long that took.
fn wait_for(dir: &Path, word: &str, count: i64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if totals(dir).get(word).copied().unwrap_or(0) >= count {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn a_killed_brook_restarted_with_its_checkpoint_reads_kafka_again_within_ten_seconds() {
    let broker = KafkaBroker::start();
    broker.create_topic("clicks", 4);
    let base = std::env::temp_dir().join(format!("brook-it-kafka-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (checkpoints, out) = (base.join("checkpoints"), base.join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let script = base.join("clicks.sql");
    // librdkafka's defaults: no session or heartbeat settings.
    std::fs::write(
        &script,
        format!(
            "SET batch_interval = '100ms';\n\
             CREATE STREAM clicks (word TEXT) WITH (connector = 'kafka', bootstrap_servers = '{}', \
               topic = 'clicks', group_id = 'restarts', start_offset = 'earliest');\n\
             CREATE SINK counts WITH (connector = 'file', path = '{}', format = 'csv') AS \
               SELECT word, COUNT(*) AS n FROM clicks GROUP BY word;\n",
            broker.address(),
            out.display()
        ),
    )
    .unwrap();
    let brook = || -> Child {
        Command::new(env!("CARGO_BIN_EXE_brook"))
            .args(["run", script.to_str().unwrap(), "--checkpoint"])
            .arg(&checkpoints)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = brook();
    produce(&broker.address(), "clicks", "before", 200).await;
    // A first join of a group: up to half of the 45 s default session on
    // tansu.
    let read = wait_for(&out, "before", 200, Duration::from_secs(60));
    // Let a checkpoint follow the batch.
    std::thread::sleep(Duration::from_millis(500));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(read.is_some(), "the first run read {:?}", totals(&out));

    let mut second = brook();
    let restarted = Instant::now();
    produce(&broker.address(), "clicks", "after", 200).await;
    let resumed =
        wait_for(&out, "after", 200, Duration::from_secs(90)).map(|_| restarted.elapsed());
    // Nothing read twice, nothing lost.
    std::thread::sleep(Duration::from_millis(1_000));
    let seen = totals(&out);
    second.kill().unwrap();
    second.wait().unwrap();
    let _ = std::fs::remove_dir_all(&base);
    eprintln!("restart to the first batch of new messages: {resumed:?}");
    assert_eq!(
        seen,
        BTreeMap::from([("after".to_string(), 200), ("before".to_string(), 200)])
    );
    let resumed = resumed.expect("the restarted brook read the new messages");
    assert!(
        resumed < Duration::from_secs(10),
        "the restarted brook read again only after {resumed:?}"
    );
}
