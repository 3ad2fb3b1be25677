//! `GROUP BY` one text column runs on brook's `TextGroupByExec`. Its
//! results must be exactly DataFusion's, which brook still uses for every
//! other grouping (here: the same query grouped by one more, constant
//! column).

use std::sync::Arc;
use std::time::Duration;

use brook::{QueueOptions, SqlOutput, StreamContext};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::common::{Rng, collect_all, explain, rows, start};

const TICK: Duration = Duration::from_millis(20);

/// Keys of every kind: NULL, empty, short, exactly 12 bytes (the longest
/// inline view), 13 bytes, long, multi-byte.
const KEYS: [Option<&str>; 9] = [
    None,
    Some(""),
    Some("a"),
    Some("word"),
    Some("exactly12byt"),
    Some("thirteen-byte"),
    Some("a much longer key than twelve bytes"),
    Some("ünïcödé"),
    Some("a much longer key than twelve bytes, too"),
];

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8View, true),
        Field::new("z", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
    ]))
}

fn item(rng: &mut Rng, rows: usize) -> RecordBatch {
    let keys: Vec<Option<&str>> = (0..rows)
        .map(|_| KEYS[rng.below(KEYS.len() as u64) as usize])
        .collect();
    let values: Vec<Option<i64>> = (0..rows)
        .map(|_| (rng.below(5) != 0).then(|| rng.below(1_000) as i64 - 500))
        .collect();
    let floats: Vec<Option<f64>> = (0..rows)
        .map(|_| (rng.below(7) != 0).then(|| rng.below(10_000) as f64 / 7.0))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringViewArray::from(keys)),
            Arc::new(Int64Array::from(vec![0; rows])),
            Arc::new(Int64Array::from(values)),
            Arc::new(Float64Array::from(floats)),
        ],
    )
    .unwrap()
}

/// Runs `queries` together over three micro-batches: three items of 700
/// rows at once (several record batches in one run), one of 50, and one of
/// 60,000 (large enough for the plan over all cores, where brook runs the
/// first phase of a two-phase aggregate).
async fn run(queries: &[String]) -> Vec<Vec<Vec<Vec<String>>>> {
    let ctx = StreamContext::new(TICK);
    let queue = ctx
        .register_queue(
            "t",
            schema(),
            QueueOptions::default().with_one_at_a_time(false),
        )
        .unwrap();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..3 {
        queue.push(item(&mut rng, 700)).unwrap();
    }
    // Each query's outputs are read as they come: a query whose consumer
    // does not read holds its stream back, and its batches merge.
    let mut running = Vec::new();
    for sql in queries {
        let query = start(&ctx, sql).await;
        running.push(tokio::spawn(collect_all(query)));
    }
    // The first batch holds the three items; wait for it, then the others.
    tokio::time::sleep(TICK * 5).await;
    queue.push(item(&mut rng, 50)).unwrap();
    tokio::time::sleep(TICK * 5).await;
    queue.push(item(&mut rng, 60_000)).unwrap();
    queue.close();
    let outputs: Vec<_> = futures::future::join_all(running)
        .await
        .into_iter()
        .map(|outputs| outputs.expect("query task"))
        .collect();
    for o in &outputs[0] {
        eprintln!(
            "OUT {} {} rows {} el {:?}",
            o.batch_number,
            o.batch_time.format("%S%.3f"),
            o.rows_in,
            o.elapsed
        );
    }
    outputs
        .iter()
        .map(|batches| {
            batches
                .iter()
                .filter(|output| output.rows_in > 0)
                .map(|output| {
                    let mut rows = rows(output);
                    rows.sort();
                    rows
                })
                .collect()
        })
        .collect()
}

async fn physical_plan(sql: &str) -> String {
    let ctx = StreamContext::new(TICK);
    ctx.register_queue("t", schema(), QueueOptions::default())
        .unwrap();
    explain(&ctx, sql).await
}

#[tokio::test]
async fn text_group_by_gives_exactly_datafusions_results() {
    let pairs = [
        (
            "k, COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi, AVG(f) AS mean, MIN(k) AS first",
            "k",
            "",
        ),
        ("k, COUNT(*) AS n", "k", "HAVING COUNT(*) > 230"),
        ("upper(k) AS u, SUM(v) AS s, MAX(f) AS m", "upper(k)", ""),
        (
            "k, stddev(f) AS sd, bool_and(v > 0) AS all_positive",
            "k",
            "",
        ),
        ("k, COUNT(DISTINCT v) AS distinct_values", "k", ""),
    ];
    let mut queries = Vec::new();
    for (select, key, having) in pairs {
        queries.push(format!("SELECT {select} FROM t GROUP BY {key} {having}"));
        queries.push(format!("SELECT {select} FROM t GROUP BY {key}, z {having}"));
    }
    let results = run(&queries).await;
    for (pair, sql) in results.chunks(2).zip(queries.chunks(2)) {
        assert_eq!(pair[0].len(), 3, "{}: one result per micro-batch", sql[0]);
        assert!(!pair[0][0].is_empty(), "{}", sql[0]);
        assert_eq!(pair[0], pair[1], "{} against {}", sql[0], sql[1]);
    }
    // Every key, NULL included, is a group of the first batch (2,100 rows).
    assert_eq!(results[0][0].len(), KEYS.len());
    let counted: usize = results[0][0]
        .iter()
        .map(|row| row[1].parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, 2_100);
}

#[tokio::test]
async fn the_first_phase_of_a_two_phase_aggregate_gives_datafusions_results() {
    let ctx = StreamContext::new(TICK);
    let mut rng = Rng(0x0fed_cba9_8765_4321);
    ctx.session()
        .register_batch("s", item(&mut rng, 20_000))
        .unwrap();
    ctx.sql("SET datafusion.execution.target_partitions = 2")
        .await
        .unwrap();
    let select = "k, COUNT(*) AS n, SUM(v) AS s, AVG(f) AS mean, MIN(v) AS lo, stddev(f) AS sd";
    let mut results = Vec::new();
    for group_by in ["k", "k, z"] {
        let sql = format!("SELECT {select} FROM s GROUP BY {group_by}");
        let plan = explain(&ctx, &sql).await;
        assert_eq!(
            plan.contains("TextGroupByExec: mode=Partial, gby=[k@0]"),
            group_by == "k",
            "{plan}"
        );
        let SqlOutput::Rows { batches, .. } = ctx.sql(&sql).await.unwrap() else {
            panic!("a query over a table gives rows")
        };
        let mut rows: Vec<String> =
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
                .lines()
                .filter(|line| line.starts_with("| "))
                .map(str::to_string)
                .collect();
        rows.sort();
        results.push(rows);
    }
    assert_eq!(results[0].len(), KEYS.len() + 1, "the header and every key");
    assert_eq!(results[0], results[1]);
}

#[tokio::test]
async fn explain_shows_which_aggregates_brook_runs() {
    let fast = physical_plan("SELECT k, COUNT(*), SUM(v) FROM t GROUP BY k").await;
    assert!(
        fast.contains("TextGroupByExec: gby=[k@0], aggr=[count(Int64(1)) as count(*), sum(t.v)]"),
        "{fast}"
    );
    // COUNT(DISTINCT) is two aggregates: by (k, v), then a plain count by k.
    let distinct = physical_plan("SELECT k, COUNT(DISTINCT v) FROM t GROUP BY k").await;
    assert!(
        distinct
            .contains("TextGroupByExec: gby=[k@0], aggr=[count(alias1) as count(DISTINCT t.v)]")
            && distinct.contains("AggregateExec: mode=Single, gby=[k@0 as k, v@1 as alias1]"),
        "{distinct}"
    );
    for sql in [
        "SELECT k, SUM(v) FILTER (WHERE v > 0) FROM t GROUP BY k",
        "SELECT v, COUNT(*) FROM t GROUP BY v",
        "SELECT k, z, COUNT(*) FROM t GROUP BY k, z",
        "SELECT k, array_agg(v ORDER BY v) FROM t GROUP BY k",
    ] {
        let plan = physical_plan(sql).await;
        assert!(plan.contains("AggregateExec"), "{sql}: {plan}");
        assert!(!plan.contains("TextGroupByExec"), "{sql}: {plan}");
    }
}
