//! Event-time windows over 10,000,000 events: 1,000 keys, 100,000 events
//! per batch, event time advancing 10 s per batch, 5 % of the events up to
//! 4 s out of order (within the 5 s watermark delay).
//!
//! Scenarios: event-time `TUMBLE` (10 s) count, the same count in
//! processing time (`TUMBLE` of 10 batches), `HOP` (1 min / 5 s) average,
//! `HOP` (10 min / 5 s) average (cost per batch against size / slide) and
//! `SESSION` (30 s gap) count. For each: events per second from the query's
//! start to its last result, the median execution time per batch, and the
//! most state retained after any batch. Three runs each.
//!
//! Run: `cargo bench --bench event_time` (`-- tumble` for one scenario).
//!
//! `-- tick_to_result` (not in the default set: it runs 110 s): the
//! event-time `TUMBLE` count at a 1 s trigger, fed 1,000,000 events a
//! second in pushes of 100,000 every 100 ms (event time advancing with the
//! wall clock), 110 batches. Per batch with rows: the time from its tick
//! to its result, and its execution; p50 / p90 / p99 / max over the
//! batches after the first ten. The counts out are checked to sum to the
//! events in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{EventTime, SqlOutput, StreamContext};
use datafusion::arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

mod common;

const EVENTS: usize = 10_000_000;

/// `EVENT_TIME_EVENTS` overrides [`EVENTS`] (for a quick check).
fn events() -> usize {
    std::env::var("EVENT_TIME_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS)
}
const PER_BATCH: usize = 100_000;
const KEYS: u64 = 1_000;
/// Event time per batch, in milliseconds.
const EVENT_TIME_PER_BATCH: i64 = 10_000;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, true),
        Field::new("temp", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

fn batches() -> Vec<RecordBatch> {
    let mut rng = common::Rng::new(0x000e_7e47);
    let base: i64 = 1_767_225_600_000;
    let step = EVENT_TIME_PER_BATCH as f64 / PER_BATCH as f64;
    (0..events() / PER_BATCH)
        .map(|batch| {
            let mut sensors = Vec::with_capacity(PER_BATCH);
            let mut temps = Vec::with_capacity(PER_BATCH);
            let mut times = Vec::with_capacity(PER_BATCH);
            for row in 0..PER_BATCH {
                let at = base + batch as i64 * EVENT_TIME_PER_BATCH + (row as f64 * step) as i64;
                let behind = if rng.next().is_multiple_of(20) {
                    (rng.next() % 4_000) as i64
                } else {
                    0
                };
                sensors.push(format!("k{}", rng.next() % KEYS));
                temps.push((rng.next() % 400) as f64 / 10.0);
                times.push((at - behind) * 1_000_000);
            }
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(sensors)),
                    Arc::new(Float64Array::from(temps)),
                    Arc::new(TimestampNanosecondArray::from(times)),
                ],
            )
            .expect("batch")
        })
        .collect()
}

struct Measured {
    events_per_second: f64,
    median_batch: Duration,
    peak_retained_rows: usize,
    peak_retained_bytes: usize,
    rows_out: usize,
    /// The sum of the result's `n` column (a count), when it has one.
    counted: i64,
    late_rows: u64,
}

async fn run(sql: &str, batches: &[RecordBatch]) -> Measured {
    // A 1 ms clock: the query, not the clock, sets the pace.
    let ctx = StreamContext::new(Duration::from_millis(1));
    let queue = common::one_item_queue(&ctx, "readings", schema());
    ctx.set_event_time("readings", EventTime::new("ts", Duration::from_secs(5)))
        .expect("event time");
    let started = Instant::now();
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    let feed = batches.to_vec();
    let feeder = tokio::spawn(async move {
        for batch in feed {
            queue.push_wait(batch).await.expect("push");
        }
        queue.close();
    });
    let mut executions = Vec::new();
    let (mut peak_rows, mut peak_bytes, mut rows_out) = (0, 0, 0);
    let (mut counted, mut late_rows) = (0, 0);
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        if output.rows_in > 0 {
            executions.push(output.execution);
        }
        peak_rows = peak_rows.max(output.retained.rows);
        peak_bytes = peak_bytes.max(output.retained.bytes);
        rows_out += output.rows_out();
        late_rows += output.late_rows;
        if output.schema.column_with_name("n").is_some() {
            counted += common::column_sum(&output.batches, "n");
        }
    }
    let elapsed = started.elapsed();
    feeder.await.expect("feeder");
    executions.sort();
    Measured {
        events_per_second: events() as f64 / elapsed.as_secs_f64(),
        median_batch: executions[executions.len() / 2],
        peak_retained_rows: peak_rows,
        peak_retained_bytes: peak_bytes,
        rows_out,
        counted,
        late_rows,
    }
}

/// The tick-to-result run (see the module's notes).
async fn tick_to_result() {
    const TRIGGER: Duration = Duration::from_secs(1);
    const PUSH_ROWS: usize = 100_000;
    const PUSHES_PER_TICK: usize = 10;
    const BATCHES: usize = 110;
    let ctx = StreamContext::new(TRIGGER);
    let queue = ctx
        .register_queue("readings", schema(), brook::QueueOptions::default())
        .expect("queue");
    ctx.set_event_time("readings", EventTime::new("ts", Duration::from_secs(5)))
        .expect("event time");
    let sql = "SELECT window_start, sensor, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, sensor";
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        other => panic!("{sql}: {other:?}"),
    };
    // One push's sensors and temperatures, reused; its event times made
    // per push, 1 ms of event time per 1,000 events from the first push.
    let template = batches().into_iter().next().expect("a batch");
    let pushes = BATCHES * PUSHES_PER_TICK;
    let feeder = tokio::spawn(async move {
        let base: i64 = 1_767_225_600_000;
        let mut every = tokio::time::interval(TRIGGER / PUSHES_PER_TICK as u32);
        for push in 0..pushes {
            every.tick().await;
            let times: Vec<i64> = (0..PUSH_ROWS)
                .map(|row| (base + ((push * PUSH_ROWS + row) / 1_000) as i64) * 1_000_000)
                .collect();
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::clone(template.column(0)),
                    Arc::clone(template.column(1)),
                    Arc::new(TimestampNanosecondArray::from(times)),
                ],
            )
            .expect("batch");
            queue.push_wait(batch).await.expect("push");
        }
        queue.close();
    });
    let (mut ticks, mut executions) = (Vec::new(), Vec::new());
    let (mut rows_in, mut counted) = (0usize, 0i64);
    let mut with_rows = 0;
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        rows_in += output.rows_in;
        for batch in &output.batches {
            let n = batch
                .column(2)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .expect("counts");
            counted += n.iter().flatten().sum::<i64>();
        }
        if output.rows_in > 0 {
            with_rows += 1;
            // The first batches include the start (plans, first pushes).
            if with_rows > 10 {
                ticks.push(output.elapsed);
                executions.push(output.execution);
            }
        }
    }
    feeder.await.expect("feeder");
    assert_eq!(rows_in, pushes * PUSH_ROWS, "every event read");
    assert_eq!(counted, rows_in as i64, "every event counted once");
    let show = |name: &str, mut times: Vec<Duration>| {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "event_time/tick_to_result {name} over {} batches of ~1M events: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            times.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.9).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            at(1.0).as_secs_f64() * 1e3,
        );
    };
    show("tick to result", ticks);
    show("execution", executions);
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios = [
        (
            "tumble_10s_count",
            "SELECT window_start, sensor, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start, sensor",
        ),
        (
            "processing_time_tumble_10_batches_count",
            "SELECT window_start, sensor, COUNT(*) AS n FROM TUMBLE(readings, INTERVAL '10 milliseconds') GROUP BY window_start, sensor",
        ),
        (
            "hop_1min_5s_avg",
            "SELECT window_start, sensor, AVG(temp) AS t FROM HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) GROUP BY window_start, sensor",
        ),
        (
            "hop_10min_5s_avg",
            "SELECT window_start, sensor, AVG(temp) AS t FROM HOP(readings, ts, INTERVAL '5' SECOND, INTERVAL '10' MINUTE) GROUP BY window_start, sensor",
        ),
        (
            "session_30s_count",
            "SELECT window_start, window_end, sensor, COUNT(*) AS n FROM SESSION(readings, ts, INTERVAL '30' SECOND) GROUP BY window_start, window_end, sensor",
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if filter.as_deref() == Some("tick_to_result") {
        runtime.block_on(tick_to_result());
        return;
    }
    let batches = batches();
    for (name, sql) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        for attempt in 1..=3 {
            let m = runtime.block_on(run(sql, &batches));
            // Every event is within the watermark's delay: none is late,
            // and a count counts each once.
            assert_eq!(m.late_rows, 0, "{name}: late rows");
            if sql.contains("COUNT(*) AS n") {
                assert_eq!(m.counted, events() as i64, "{name}: events counted");
            }
            println!(
                "event_time/{name} run {attempt}: {:.2}M events/s, median batch {:.1} ms, peak retained {} rows / {:.1} MiB, {} rows out",
                m.events_per_second / 1e6,
                m.median_batch.as_secs_f64() * 1000.0,
                m.peak_retained_rows,
                m.peak_retained_bytes as f64 / (1 << 20) as f64,
                m.rows_out
            );
        }
    }
}
