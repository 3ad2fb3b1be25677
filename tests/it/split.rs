//! `unnest(split(text, 'd'))` runs as brook's fused `SplitUnnestExec`. Its
//! rows must be exactly those of DataFusion's own plan (a list per row, then
//! `UnnestExec`), which brook still uses when the delimiter is a column.

use std::sync::Arc;
use std::time::Duration;

use brook::{QueueOptions, StreamContext};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::{Rng, collect_all, rows, start};

const TICK: Duration = Duration::from_millis(20);

/// Lines that probe the edges: NULL, empty, only delimiters, runs of them,
/// multi-byte characters, parts of 12 and 13 bytes (inline views and views
/// into a data buffer), a delimiter at the very end.
const EDGES: [Option<&str>; 13] = [
    None,
    Some(""),
    Some(" "),
    Some("a"),
    Some("a b"),
    Some("  a  b  "),
    Some("ünïcödé wörds hére"),
    Some("a considerably longer line: internationalization, de-duplication"),
    Some("exactly12byt exactly12byt"),
    Some("thirteen-byte thirteen-bytes"),
    Some("trailing, "),
    Some(", , ,"),
    Some("no-delimiter-at-all-but-long"),
];

/// `rows` random lines of 0-12 words of 1-16 letters, single or double spaced.
fn random_lines(rng: &mut Rng, rows: usize) -> Vec<Option<String>> {
    (0..rows)
        .map(|_| {
            let words = rng.below(13);
            let mut line = String::new();
            for i in 0..words {
                if i > 0 {
                    line.push_str(if rng.below(10) == 0 { "  " } else { " " });
                }
                for _ in 0..=rng.below(16) {
                    line.push((b'a' + rng.below(26) as u8) as char);
                }
            }
            (rng.below(50) != 0).then_some(line)
        })
        .collect()
}

fn item(first_id: i64, lines: &[Option<String>], delimiter: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("line", DataType::Utf8View, true),
        Field::new("sep", DataType::Utf8View, false),
    ]));
    let ids: Vec<i64> = (first_id..first_id + lines.len() as i64).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringViewArray::from_iter(
                lines.iter().map(|l| l.as_deref()),
            )),
            Arc::new(StringViewArray::from(vec![delimiter; lines.len()])),
        ],
    )
    .unwrap()
}

/// Runs `queries` together over the same two items (the edge cases, then
/// 3,000 random lines: more parts than one output batch holds), split at
/// `delimiter`; each query's rows per batch.
async fn run(delimiter: &str, queries: &[String]) -> Vec<Vec<Vec<Vec<String>>>> {
    let ctx = StreamContext::new(TICK);
    let edges: Vec<Option<String>> = EDGES.iter().map(|l| l.map(str::to_string)).collect();
    let random = random_lines(&mut Rng(0x05ee_d0f5_1117), 3_000);
    let first = item(0, &edges, delimiter);
    let queue = ctx
        .register_queue(
            "t",
            first.schema(),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    let mut running = Vec::new();
    for sql in queries {
        running.push(start(&ctx, sql).await);
    }
    queue.push(first).unwrap();
    queue.push(item(100, &random, delimiter)).unwrap();
    queue.close();
    let outputs = futures::future::join_all(running.into_iter().map(collect_all)).await;
    outputs
        .iter()
        .map(|batches| batches.iter().map(rows).collect())
        .collect()
}

async fn explain(sql: &str) -> String {
    let ctx = StreamContext::new(TICK);
    ctx.sql("CREATE STREAM t (id BIGINT, line TEXT, sep TEXT) WITH (connector = 'queue')")
        .await
        .unwrap();
    crate::common::explain(&ctx, sql).await
}

#[tokio::test]
async fn the_fused_split_gives_exactly_the_rows_of_datafusions_unnest() {
    for delimiter in [" ", ", ", ""] {
        let literal = delimiter.replace('\'', "''");
        let mut queries = Vec::new();
        for function in ["unnest", "unnest_outer"] {
            for columns in ["id, ", ""] {
                // Fused (constant delimiter), then DataFusion's plan.
                queries.push(format!(
                    "SELECT {columns}{function}(split(line, '{literal}')) AS part FROM t"
                ));
                queries.push(format!(
                    "SELECT {columns}{function}(split(line, sep)) AS part FROM t"
                ));
            }
            // DataFusion's own function, fused too.
            queries.push(format!(
                "SELECT id, {function}(string_to_array(line, '{literal}')) AS part FROM t"
            ));
            queries.push(format!(
                "SELECT id, {function}(string_to_array(line, sep)) AS part FROM t"
            ));
        }
        let results = run(delimiter, &queries).await;
        for (pair, sql) in results.chunks(2).zip(queries.chunks(2)) {
            assert_eq!(pair[0].len(), 2, "{}: one result per item", sql[0]);
            assert_eq!(pair[0], pair[1], "{} against {}", sql[0], sql[1]);
        }

        // And the rows themselves, for the edge cases: each line's parts in
        // order; a NULL or empty line has none (`unnest`) or one NULL row
        // (`unnest_outer`).
        for (query, outer) in [(0, false), (6, true)] {
            let mut expected = Vec::new();
            for (id, line) in EDGES.iter().enumerate() {
                match line {
                    Some(text) if !text.is_empty() => {
                        let parts: Vec<&str> = if delimiter.is_empty() {
                            vec![text]
                        } else {
                            text.split(delimiter).collect()
                        };
                        for part in parts {
                            expected.push(vec![id.to_string(), part.to_string()]);
                        }
                    }
                    _ if outer => expected.push(vec![id.to_string(), "NULL".to_string()]),
                    _ => {}
                }
            }
            assert_eq!(results[query][0], expected, "{}", queries[query]);
        }
    }
}

#[tokio::test]
async fn explain_shows_where_the_split_is_fused() {
    let fused = explain("SELECT unnest(split(line, ' ')) AS w, id FROM t").await;
    assert!(
        fused.contains("SplitUnnestExec: unnest(split(line@"),
        "{fused}"
    );
    assert!(!fused.contains("UnnestExec\n"), "{fused}");
    let outer = explain("SELECT unnest_outer(split(upper(line), '--')) AS w FROM t").await;
    assert!(
        outer.contains("SplitUnnestExec: unnest_outer(split(upper(line@"),
        "{outer}"
    );
    let builtin = explain("SELECT unnest(string_to_array(line, ' ')) AS w FROM t").await;
    assert!(
        builtin.contains("SplitUnnestExec: unnest(string_to_array(line@"),
        "{builtin}"
    );
    // A delimiter that is a column or NULL, or a list of anything else than
    // a split, stays DataFusion's.
    for sql in [
        "SELECT unnest(split(line, sep)) AS w FROM t",
        "SELECT unnest(string_to_array(line, NULL)) AS w FROM t",
        "SELECT unnest(string_to_array(line, ' ', 'x')) AS w FROM t",
        "SELECT unnest(make_array(line, sep)) AS w FROM t",
    ] {
        let plan = explain(sql).await;
        assert!(plan.contains("UnnestExec"), "{plan}");
        assert!(!plan.contains("SplitUnnestExec"), "{plan}");
    }
}
