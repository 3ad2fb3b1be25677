//! The interval join driven batch by batch against a plain model (a nested
//! loop over all rows): every pair once, in the batch that reads its second
//! row; every unmatched row of a preserved side once, in the batch after
//! which the other stream's watermark passes its bound; the same whatever
//! the cuts. Late rows, flat state and checkpoints too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::context::StreamContext;
use crate::query::engine::MicroBatch;
use crate::source::QueueOptions;
use crate::testing::Rng;

/// Milliseconds of event time of the first rows.
const BASE: i64 = 1_700_000_000_000;
/// Both streams' watermark delay, milliseconds.
const DELAY: i64 = 2_000;

/// `(key, seq, ts)` as a stream's schema, with the key column `key`.
fn schema(key: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, DataType::Int64, true),
        Field::new("seq", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

fn context() -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(100));
    for (name, key) in [("orders", "id"), ("payments", "order_id")] {
        ctx.register_queue(name, schema(key), QueueOptions::default())
            .unwrap();
        ctx.set_event_time(
            name,
            crate::event_time::EventTime::new("ts", Duration::from_millis(DELAY as u64)),
        )
        .unwrap();
    }
    ctx
}

/// A row: key, sequence number (unique per side), event time (ms; `None`
/// for a row without one).
#[derive(Debug, Clone, Copy)]
struct Row {
    key: i64,
    seq: i64,
    ts: Option<i64>,
}

fn record_batch(key: &str, rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema(key),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq))),
            Arc::new(TimestampNanosecondArray::from_iter(
                rows.iter().map(|r| r.ts.map(|t| t * 1_000_000)),
            )),
        ],
    )
    .unwrap()
}

/// Batch `number` of orders and payments rows, inputs in `streams`' order;
/// `last` ends both streams.
fn micro_batch(
    number: u64,
    streams: &[String],
    orders: &[Row],
    payments: &[Row],
    last: bool,
) -> MicroBatch {
    let inputs = streams
        .iter()
        .map(|stream| match stream.as_str() {
            "orders" => vec![record_batch("id", orders)],
            _ => vec![record_batch("order_id", payments)],
        })
        .collect();
    MicroBatch {
        number,
        time: chrono::DateTime::from_timestamp_millis(4_000_000_000_000).unwrap(),
        inputs,
        rows: orders.len() + payments.len(),
        ended: vec![last; 2],
    }
}

/// A result row: the order's and the payment's sequence numbers.
type Pair = (Option<i64>, Option<i64>);

/// Runs `sql` over the batches; per batch, the pairs it emitted, sorted.
async fn run(
    ctx: &StreamContext,
    sql: &str,
    batches: &[(Vec<Row>, Vec<Row>)],
) -> (BTreeMap<u64, Vec<Pair>>, u64) {
    let plan = ctx.plan_for_test(sql).await;
    let mut engine = plan.engine;
    let mut out: BTreeMap<u64, Vec<Pair>> = BTreeMap::new();
    let mut late = 0;
    for (index, (orders, payments)) in batches.iter().enumerate() {
        let number = index as u64 + 1;
        let last = index + 1 == batches.len();
        let batch = micro_batch(number, &plan.streams, orders, payments, last);
        let emission = engine.on_batch(&batch).await.unwrap().unwrap();
        late += emission.event.as_ref().map_or(0, |e| e.late_rows);
        for rows in &emission.batches {
            let seq = |i: usize| {
                let column =
                    datafusion::arrow::compute::cast(rows.column(i), &DataType::Int64).unwrap();
                column
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone()
            };
            let (o, p) = (seq(0), seq(1));
            for row in 0..rows.num_rows() {
                let get = |a: &Int64Array| (!a.is_null(row)).then(|| a.value(row));
                out.entry(number).or_default().push((get(&o), get(&p)));
            }
        }
    }
    if let Some(emission) = engine.on_end().await.unwrap() {
        assert!(
            emission.batches.iter().all(|b| b.num_rows() == 0),
            "{sql}: rows after the last batch"
        );
    }
    for pairs in out.values_mut() {
        pairs.sort();
    }
    (out, late)
}

/// The time bound of a case, and the predicate it is on `d = p.ts - o.ts`.
struct Bound {
    sql: &'static str,
    lo: Option<i64>,
    hi: Option<i64>,
    holds: fn(i64) -> bool,
}

const BOUNDS: [Bound; 4] = [
    Bound {
        sql: "p.ts BETWEEN o.ts AND o.ts + INTERVAL '3' SECOND",
        lo: Some(0),
        hi: Some(3_000),
        holds: |d| (0..=3_000).contains(&d),
    },
    Bound {
        sql: "p.ts >= o.ts - INTERVAL '1' SECOND AND p.ts < o.ts + INTERVAL '2' SECOND",
        lo: Some(-1_000),
        hi: Some(2_000),
        holds: |d| (-1_000..2_000).contains(&d),
    },
    Bound {
        sql: "o.ts > p.ts - INTERVAL '2' SECOND AND o.ts <= p.ts",
        lo: Some(0),
        hi: Some(2_000),
        holds: |d| (0..2_000).contains(&d),
    },
    Bound {
        sql: "p.ts <= o.ts + INTERVAL '2' SECOND",
        lo: None,
        hi: Some(2_000),
        holds: |d| d <= 2_000,
    },
];

/// Each side's watermark after each batch (`None` before any row; the
/// end of time after the last batch).
fn watermarks(batches: &[Vec<Row>]) -> Vec<Option<i64>> {
    let mut latest: Option<i64> = None;
    let mut marks = Vec::new();
    for (index, rows) in batches.iter().enumerate() {
        for ts in rows.iter().filter_map(|r| r.ts) {
            latest = Some(latest.map_or(ts, |l| l.max(ts)));
        }
        marks.push(if index + 1 == batches.len() {
            Some(i64::MAX)
        } else {
            latest.map(|l| l - DELAY)
        });
    }
    marks
}

/// What the join must emit per batch, by a nested loop over all rows.
fn model(
    batches: &[(Vec<Row>, Vec<Row>)],
    bound: &Bound,
    preserved: (bool, bool),
) -> BTreeMap<u64, Vec<Pair>> {
    let orders: Vec<Vec<Row>> = batches.iter().map(|b| b.0.clone()).collect();
    let payments: Vec<Vec<Row>> = batches.iter().map(|b| b.1.clone()).collect();
    let (order_marks, payment_marks) = (watermarks(&orders), watermarks(&payments));
    let mut out: BTreeMap<u64, Vec<Pair>> = BTreeMap::new();
    let all = |side: &[Vec<Row>]| -> Vec<(usize, Row)> {
        side.iter()
            .enumerate()
            .flat_map(|(b, rows)| rows.iter().map(move |r| (b, *r)))
            .collect()
    };
    let (all_orders, all_payments) = (all(&orders), all(&payments));
    let matches = |o: &Row, p: &Row| {
        o.key == p.key && matches!((o.ts, p.ts), (Some(ot), Some(pt)) if (bound.holds)(pt - ot))
    };
    for (ob, o) in &all_orders {
        for (pb, p) in &all_payments {
            if matches(o, p) {
                out.entry((*ob.max(pb) + 1) as u64)
                    .or_default()
                    .push((Some(o.seq), Some(p.seq)));
            }
        }
    }
    // The first batch from `from` after which `passed(mark)` holds.
    let first = |from: usize, marks: &[Option<i64>], passed: &dyn Fn(i64) -> bool| {
        (from..marks.len())
            .find(|b| marks[*b].is_some_and(passed))
            .unwrap_or(marks.len() - 1)
    };
    if preserved.0 {
        for (ob, o) in &all_orders {
            if all_payments.iter().any(|(_, p)| matches(o, p)) {
                continue;
            }
            let ts = o.ts.unwrap();
            let b = match bound.hi {
                Some(hi) => first(*ob, &payment_marks, &|w| w > ts + hi),
                None => batches.len() - 1,
            };
            out.entry(b as u64 + 1)
                .or_default()
                .push((Some(o.seq), None));
        }
    }
    if preserved.1 {
        for (pb, p) in &all_payments {
            if all_orders.iter().any(|(_, o)| matches(o, p)) {
                continue;
            }
            let ts = p.ts.unwrap();
            let b = match bound.lo {
                Some(lo) => first(*pb, &order_marks, &|w| w > ts - lo),
                None => batches.len() - 1,
            };
            out.entry(b as u64 + 1)
                .or_default()
                .push((None, Some(p.seq)));
        }
    }
    for pairs in out.values_mut() {
        pairs.sort();
    }
    out
}

/// Rows of one side: keys of 5, event times rising with a jitter within
/// the watermark delay, so that no row is ever behind its own watermark.
fn side_rows(rng: &mut Rng, start: i64) -> Vec<Row> {
    let mut clock = start;
    (0..20 + rng.below(41) as i64)
        .map(|seq| {
            clock += rng.below(800) as i64;
            Row {
                key: rng.below(5) as i64,
                seq,
                ts: Some(clock - rng.below(DELAY as u64) as i64),
            }
        })
        .collect()
}

/// `rows` cut into `n` consecutive batches at random (some empty).
fn cut(rng: &mut Rng, rows: &[Row], n: usize) -> Vec<Vec<Row>> {
    let mut points: Vec<usize> = (0..n - 1)
        .map(|_| rng.below(rows.len() as u64 + 1) as usize)
        .collect();
    points.sort_unstable();
    let mut out = Vec::with_capacity(n);
    let mut from = 0;
    for point in points.into_iter().chain([rows.len()]) {
        out.push(rows[from..point].to_vec());
        from = point;
    }
    out
}

#[tokio::test]
async fn interval_joins_emit_what_a_nested_loop_says_in_the_batch_it_says_whatever_the_cuts() {
    let ctx = context();
    let kinds = [
        ("JOIN", (false, false)),
        ("LEFT JOIN", (true, false)),
        ("RIGHT JOIN", (false, true)),
        ("FULL JOIN", (true, true)),
    ];
    let (mut pairs, mut unmatched, mut payment_first) = (0, 0, 0);
    for case in 0..32u64 {
        let (kind, preserved) = kinds[(case % 4) as usize];
        let bound = &BOUNDS[((case / 4) % 4) as usize];
        let mut rng = Rng::new(0x701d_0000 + case);
        let (order_start, payment_start) = (rng.below(4_000) as i64, rng.below(4_000) as i64);
        let orders = side_rows(&mut rng, BASE + order_start);
        let payments = side_rows(&mut rng, BASE + payment_start);
        let sql = format!(
            "SELECT o.seq AS o_seq, p.seq AS p_seq FROM orders o {kind} payments p ON o.id = p.order_id AND {}",
            bound.sql
        );
        for cutting in 0..2 {
            let n = 1 + rng.below(12) as usize;
            let batches: Vec<(Vec<Row>, Vec<Row>)> = cut(&mut rng, &orders, n)
                .into_iter()
                .zip(cut(&mut rng, &payments, n))
                .collect();
            let expected = model(&batches, bound, preserved);
            let (got, late) = run(&ctx, &sql, &batches).await;
            assert_eq!(late, 0, "case {case}, cutting {cutting}: {sql}");
            assert_eq!(got, expected, "case {case}, cutting {cutting}: {sql}");
            for (batch, rows) in &expected {
                for (o, p) in rows {
                    match (o, p) {
                        (Some(o), Some(p)) => {
                            pairs += 1;
                            let read = |side: usize, seq: i64| {
                                batches.iter().position(|b| {
                                    let rows = if side == 0 { &b.0 } else { &b.1 };
                                    rows.iter().any(|r| r.seq == seq)
                                })
                            };
                            if read(1, *p) < read(0, *o) {
                                payment_first += 1;
                            }
                        }
                        _ => unmatched += 1,
                    }
                    let _ = batch;
                }
            }
        }
    }
    // The cases exercise what they are for.
    assert!(pairs >= 150, "{pairs} pairs");
    assert!(unmatched >= 20, "{unmatched} unmatched rows");
    assert!(
        payment_first >= 20,
        "{payment_first} payments read before their order"
    );
}

#[tokio::test]
async fn join_rows_behind_every_partner_are_late_and_a_row_behind_that_can_still_match_joins() {
    let ctx = context();
    let sql = "SELECT o.seq AS o_seq, p.seq AS p_seq FROM orders o JOIN payments p ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND";
    let row = |key, seq, secs: f64| Row {
        key,
        seq,
        ts: Some(BASE + (secs * 1000.0) as i64),
    };
    let batches = vec![
        (vec![row(1, 0, 10.0)], vec![row(1, 0, 10.5)]),
        // Both watermarks to 28 s: orders rows before 18 s and payments
        // rows before 28 s can match nothing more.
        (vec![row(9, 1, 30.0)], vec![row(9, 1, 30.0)]),
        (
            // Order 2 at 5 s: its partners (5..15 s) are gone: late.
            // Order 9 at 25 s is behind the orders watermark, but payment
            // 9 at 30 s is still held: it joins.
            vec![row(2, 2, 5.0), row(9, 3, 25.0)],
            // Payment 2 at 12 s: its partners (2..12 s) are gone: late.
            vec![row(2, 2, 12.0)],
        ),
        (Vec::new(), Vec::new()),
    ];
    let (got, late) = run(&ctx, sql, &batches).await;
    assert_eq!(late, 2);
    let expected: BTreeMap<u64, Vec<Pair>> = [
        (1, vec![(Some(0), Some(0))]),
        (2, vec![(Some(1), Some(1))]),
        (3, vec![(Some(3), Some(1))]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn interval_join_state_stays_flat_over_two_thousand_batches() {
    let ctx = context();
    let sql = "SELECT o.seq AS o_seq, p.seq AS p_seq FROM orders o FULL JOIN payments p ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '1' SECOND";
    let plan = ctx.plan_for_test(sql).await;
    let mut engine = plan.engine;
    let mut rng = Rng::new(7);
    let mut held_at_500 = 0;
    let mut seq = 0;
    for number in 1..=2_000u64 {
        // 100 ms of event time per batch, 40 rows a side, up to the delay
        // behind.
        let now = BASE + number as i64 * 100;
        let mut rows = |rng: &mut Rng| -> Vec<Row> {
            (0..40)
                .map(|_| {
                    seq += 1;
                    Row {
                        key: rng.below(20) as i64,
                        seq,
                        ts: Some(now - rng.below(DELAY as u64 / 2) as i64),
                    }
                })
                .collect()
        };
        let (orders, payments) = (rows(&mut rng), rows(&mut rng));
        let batch = micro_batch(number, &plan.streams, &orders, &payments, false);
        engine.on_batch(&batch).await.unwrap();
        let held = engine.retained().rows;
        if number == 500 {
            held_at_500 = held;
        }
        // 400 rows a second a side, held for the bound, the delay and a
        // batch: at most 2 * 400 * (1 + 2 + 0.1) s.
        assert!(
            held <= 2 * 400 * 31 / 10,
            "batch {number}: {held} rows held"
        );
        if number > 500 {
            assert!(
                held <= held_at_500 * 3 / 2 + 100,
                "batch {number}: {held} rows held, {held_at_500} at batch 500"
            );
        }
    }
    assert!(held_at_500 > 0);
}

#[tokio::test]
async fn an_interval_join_restored_from_a_snapshot_goes_on_as_if_never_stopped() {
    let ctx = context();
    let mut rng = Rng::new(11);
    let orders = side_rows(&mut rng, BASE);
    let payments = side_rows(&mut rng, BASE + 1_000);
    let batches: Vec<(Vec<Row>, Vec<Row>)> = cut(&mut rng, &orders, 8)
        .into_iter()
        .zip(cut(&mut rng, &payments, 8))
        .collect();
    for kind in ["JOIN", "FULL JOIN"] {
        let sql = format!(
            "SELECT o.seq AS o_seq, p.seq AS p_seq FROM orders o {kind} payments p ON o.id = p.order_id AND p.ts BETWEEN o.ts - INTERVAL '1' SECOND AND o.ts + INTERVAL '2' SECOND"
        );
        let (expected, _) = run(&ctx, &sql, &batches).await;
        let plan = ctx.plan_for_test(&sql).await;
        let streams = plan.streams.clone();
        let mut stopped = plan.engine;
        let mut got: BTreeMap<u64, Vec<Pair>> = BTreeMap::new();
        let mut record = |number: u64, emission: Option<crate::query::engine::Emission>| {
            for rows in emission.into_iter().flat_map(|e| e.batches) {
                let o = rows
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                let p = rows
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                for row in 0..rows.num_rows() {
                    let get = |a: &Int64Array| (!a.is_null(row)).then(|| a.value(row));
                    got.entry(number).or_default().push((get(&o), get(&p)));
                }
            }
        };
        for (index, (o, p)) in batches.iter().enumerate().take(4) {
            let batch = micro_batch(index as u64 + 1, &streams, o, p, false);
            record(index as u64 + 1, stopped.on_batch(&batch).await.unwrap());
        }
        let mut restored = ctx.plan_for_test(&sql).await.engine;
        restored.restore(stopped.snapshot().unwrap()).await.unwrap();
        assert_eq!(restored.retained().rows, stopped.retained().rows, "{sql}");
        for (index, (o, p)) in batches.iter().enumerate().skip(4) {
            let last = index + 1 == batches.len();
            let batch = micro_batch(index as u64 + 1, &streams, o, p, last);
            record(index as u64 + 1, restored.on_batch(&batch).await.unwrap());
        }
        for pairs in got.values_mut() {
            pairs.sort();
        }
        assert_eq!(got, expected, "{sql}");
    }
}
