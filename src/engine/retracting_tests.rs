//! `RUNNING` over a changelog, driven batch by batch: exact changes out of
//! a known sequence, and a seeded random sequence of inserts, updates and
//! deletes compared after every batch with the aggregate computed afresh
//! over the table's current rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::context::StreamContext;
use crate::query::engine::{BatchEngine, MicroBatch};
use crate::source::QueueOptions;
use crate::testing::Rng;

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("op", DataType::Utf8, false),
        Field::new("id", DataType::Int32, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]))
}

fn orders_context() -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.register_queue("orders", orders_schema(), QueueOptions::default())
        .unwrap();
    ctx.declare_changelog("orders", &["id"]).unwrap();
    ctx
}

type Change = (&'static str, i32, Option<String>, Option<i64>);

fn changes(number: u64, rows: &[Change]) -> MicroBatch {
    let batch = RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    MicroBatch {
        number,
        time: chrono::DateTime::from_timestamp_millis(1_000_000 + number as i64 * 100).unwrap(),
        inputs: vec![vec![batch]],
        rows: rows.len(),
        ended: vec![false],
    }
}

/// Each row of `batches` as `a|b|c` text, in order.
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

async fn run(engine: &mut Box<dyn BatchEngine>, batch: &MicroBatch) -> Vec<String> {
    let emission = engine.on_batch(batch).await.unwrap();
    lines(&emission.map(|e| e.batches).unwrap_or_default())
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[tokio::test]
async fn updates_and_deletes_move_counts_sums_and_extremes_down_as_well_as_up() {
    let ctx = orders_context();
    let sql = "SELECT status, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo, MAX(amount) AS hi \
               FROM RUNNING(orders, 'update') GROUP BY status ORDER BY status";
    let mut engine = ctx.plan_for_test(sql).await.engine;
    assert_eq!(
        engine
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["op", "status", "n", "total", "lo", "hi"]
    );
    let first = changes(
        1,
        &[
            ("+I", 1, s("new"), Some(10)),
            ("+I", 2, s("new"), Some(20)),
            ("+I", 3, s("paid"), Some(5)),
        ],
    );
    assert_eq!(
        run(&mut engine, &first).await,
        ["+I|new|2|30|10|20", "+I|paid|1|5|5|5"]
    );
    // An upsert without its old row, and a delete carrying only the key:
    // the engine's current rows say what they take back.
    let second = changes(2, &[("+U", 1, s("paid"), Some(10)), ("-D", 3, None, None)]);
    assert_eq!(
        run(&mut engine, &second).await,
        ["+U|new|1|20|20|20", "+U|paid|1|10|10|10"]
    );
    // The last row of a group deleted: the group goes, with its last row.
    let third = changes(3, &[("-D", 2, None, None), ("-D", 99, None, None)]);
    assert_eq!(run(&mut engine, &third).await, ["-D|new|1|20|20|20"]);
    // A key deleted and inserted again within one batch; a change that
    // leaves every group as it was emits nothing.
    let fourth = changes(4, &[("-D", 1, None, None), ("+I", 1, s("paid"), Some(10))]);
    assert_eq!(run(&mut engine, &fourth).await, Vec::<String>::new());
    let fifth = changes(5, &[("+I", 4, s("paid"), None)]);
    assert_eq!(run(&mut engine, &fifth).await, ["+U|paid|2|10|10|10"]);

    // Complete mode: every current group, no op column.
    let mut complete = ctx
        .plan_for_test(
            "SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM RUNNING(orders) GROUP BY status ORDER BY status",
        )
        .await
        .engine;
    for batch in [&first, &second, &third] {
        run(&mut complete, batch).await;
    }
    assert_eq!(run(&mut complete, &fifth).await, ["paid|2|10"]);
}

#[tokio::test]
async fn regression_an_aggregate_without_group_by_over_a_changelog_counts_its_rows() {
    let ctx = orders_context();
    let mut engine = ctx
        .plan_for_test("SELECT COUNT(*) AS n, SUM(amount) AS total FROM RUNNING(orders)")
        .await
        .engine;
    let first = changes(
        1,
        &[("+I", 1, s("new"), Some(10)), ("+I", 2, s("new"), Some(20))],
    );
    assert_eq!(run(&mut engine, &first).await, ["2|30"]);
    let second = changes(2, &[("-D", 1, None, None), ("-D", 2, None, None)]);
    // No row left: the one group stays, as SQL's aggregate of nothing.
    assert_eq!(run(&mut engine, &second).await, ["0|NULL"]);
}

#[tokio::test]
async fn a_changelog_read_per_batch_or_in_a_window_is_refused_with_why() {
    let ctx = orders_context();
    for (sql, says) in [
        (
            "SELECT status, COUNT(*) FROM orders GROUP BY status",
            "an aggregate would treat a delete as a row",
        ),
        (
            "SELECT status, COUNT(*) FROM TUMBLE(orders, '1 second') GROUP BY status",
            "cannot take back a row",
        ),
    ] {
        let err = ctx
            .sql(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql}"))
            .to_string();
        assert!(
            err.contains(says) && err.contains("RUNNING(orders)"),
            "{sql}: {err}"
        );
    }
    // Filtering and projecting changes per batch is fine.
    assert!(
        ctx.sql("SELECT op, id FROM orders WHERE id > 1")
            .await
            .is_ok()
    );
    let err = ctx
        .sql("SELECT COUNT(*) AS n FROM RUNNING(orders, 'update')")
        .await
        .map(|_| ())
        .err();
    assert!(err.is_none(), "{err:?}");
    let err = ctx
        .sql("SELECT status || 'x' AS s, COUNT(*) FROM RUNNING(orders, 'update') GROUP BY status")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("select each of them, unchanged"), "{err}");
    let err = ctx
        .sql("SELECT status, STDDEV(amount) FROM RUNNING(orders) GROUP BY status")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("COUNT, SUM, AVG, MIN, MAX"), "{err}");
}

/// What the model says the result is: per status, the count, the sum
/// (NULL without a non-null amount), the minimum and the maximum.
type Model = BTreeMap<String, (i64, Option<i64>, Option<i64>, Option<i64>)>;

fn model(table: &HashMap<i32, (String, Option<i64>)>) -> Model {
    let mut groups: Model = BTreeMap::new();
    for (status, amount) in table.values() {
        let entry = groups
            .entry(status.clone())
            .or_insert((0, None, None, None));
        entry.0 += 1;
        if let Some(amount) = amount {
            entry.1 = Some(entry.1.unwrap_or(0) + amount);
            entry.2 = Some(entry.2.map_or(*amount, |m| m.min(*amount)));
            entry.3 = Some(entry.3.map_or(*amount, |m| m.max(*amount)));
        }
    }
    groups
}

fn model_lines(model: &Model) -> Vec<String> {
    let text = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    model
        .iter()
        .map(|(status, (n, sum, lo, hi))| {
            format!("{status}|{n}|{}|{}|{}", text(*sum), text(*lo), text(*hi))
        })
        .collect()
}

#[tokio::test]
async fn random_changes_cut_into_random_batches_match_the_aggregate_over_the_current_rows() {
    for seed in [7u64, 1_234, 99_991] {
        let ctx = orders_context();
        let complete_sql = "SELECT status, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo, MAX(amount) AS hi \
                            FROM RUNNING(orders) GROUP BY status ORDER BY status";
        let update_sql = complete_sql.replace("RUNNING(orders)", "RUNNING(orders, 'update')");
        let mut complete = ctx.plan_for_test(complete_sql).await.engine;
        let mut update = ctx.plan_for_test(&update_sql).await.engine;
        // The update stream applied to a table of its own must give the
        // complete result too.
        let mut followed: BTreeMap<String, String> = BTreeMap::new();
        let mut table: HashMap<i32, (String, Option<i64>)> = HashMap::new();
        let mut rng = Rng::new(seed);
        let statuses = ["new", "paid", "shipped", "returned", "lost"];
        for number in 1..=120u64 {
            let size = rng.below(40) as usize;
            let mut rows: Vec<Change> = Vec::new();
            for _ in 0..size {
                let id = rng.below(300) as i32;
                let status = statuses[rng.below(statuses.len() as u64) as usize].to_string();
                let amount = (rng.below(10) != 0).then(|| rng.below(1_000) as i64 - 200);
                match rng.below(10) {
                    0..=2 => {
                        table.remove(&id);
                        rows.push(("-D", id, None, None));
                    }
                    3 => {
                        // Debezium with a full before image, then the after.
                        if let Some((old_status, old_amount)) = table.get(&id).cloned() {
                            rows.push(("-U", id, Some(old_status), old_amount));
                        }
                        table.insert(id, (status.clone(), amount));
                        rows.push(("+U", id, Some(status), amount));
                    }
                    4..=6 => {
                        table.insert(id, (status.clone(), amount));
                        rows.push(("+U", id, Some(status), amount));
                    }
                    _ => {
                        table.insert(id, (status.clone(), amount));
                        rows.push(("+I", id, Some(status), amount));
                    }
                }
            }
            let batch = changes(number, &rows);
            let expected = model_lines(&model(&table));
            assert_eq!(
                run(&mut complete, &batch).await,
                expected,
                "seed {seed}, batch {number}"
            );
            for line in run(&mut update, &batch).await {
                let (op, row) = line.split_once('|').unwrap();
                let status = row.split('|').next().unwrap().to_string();
                match op {
                    "-D" => assert!(followed.remove(&status).is_some(), "{line}"),
                    "+I" => assert!(followed.insert(status, row.to_string()).is_none(), "{line}"),
                    "+U" => assert!(followed.insert(status, row.to_string()).is_some(), "{line}"),
                    other => panic!("op {other}"),
                }
            }
            assert_eq!(
                followed.values().cloned().collect::<Vec<_>>(),
                expected,
                "seed {seed}, batch {number}: the update stream applied"
            );
        }
        // A snapshot restored into a fresh engine goes on alike.
        let mut restored = ctx.plan_for_test(complete_sql).await.engine;
        restored
            .restore(complete.snapshot().unwrap())
            .await
            .unwrap();
        let next = changes(500, &[("-D", 1, None, None), ("+I", 1, s("new"), Some(1))]);
        assert_eq!(
            run(&mut restored, &next).await,
            run(&mut complete, &next).await,
            "seed {seed}: restored"
        );
    }
}
