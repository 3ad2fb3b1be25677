//! The examples in examples/ run here, through the same code.

use std::time::Duration;

use crate::common::rows;

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
