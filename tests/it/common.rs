//! Helpers shared by the integration tests: line servers on 127.0.0.1,
//! collecting a query's batches with a deadline, reading result columns.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::{BatchOutput, BrookError, ContinuousQuery, QueueOptions, SqlOutput, StreamContext};
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use futures::StreamExt;

/// Every test's upper bound on waiting for a query.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A listener on an ephemeral 127.0.0.1 port; `serve` runs on the first
/// client in a thread. Returns the `127.0.0.1:port` address.
pub fn line_server(serve: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local addr").to_string();
    std::thread::spawn(move || {
        listener.set_nonblocking(false).ok();
        if let Ok((client, _)) = listener.accept() {
            client.set_write_timeout(Some(DEADLINE)).ok();
            serve(client);
        }
    });
    address
}

/// A server that sends `chunks` with `pause` after each, then closes.
pub fn chunk_server(chunks: Vec<Vec<u8>>, pause: Duration) -> String {
    line_server(move |mut client| {
        for chunk in chunks {
            if client.write_all(&chunk).is_err() {
                return;
            }
            client.flush().ok();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    })
}

/// The port of a `127.0.0.1:port` address, for `CREATE STREAM ... port = '...'`.
pub fn port_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(_, port)| port)
}

/// An address nothing listens on.
pub fn closed_port_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    drop(listener);
    address
}

/// Starts `sql` on `ctx`, which must be a continuous query.
pub async fn start(ctx: &StreamContext, sql: &str) -> ContinuousQuery {
    match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        Ok(other) => panic!("expected a continuous query for {sql}, got {other:?}"),
        Err(err) => panic!("{sql}: {err}"),
    }
}

/// The text of `EXPLAIN sql` on `ctx`, as a table.
pub async fn explain(ctx: &StreamContext, sql: &str) -> String {
    match ctx.sql(&format!("EXPLAIN {sql}")).await {
        Ok(SqlOutput::Rows { batches, .. }) => {
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string()
        }
        other => panic!("EXPLAIN {sql}: {other:?}"),
    }
}

/// All outputs of `query` until it ends; fails the test past [`DEADLINE`].
pub async fn collect_all(query: ContinuousQuery) -> Vec<BatchOutput> {
    tokio::time::timeout(
        DEADLINE,
        query.map(|o| o.expect("batch")).collect::<Vec<_>>(),
    )
    .await
    .expect("query did not end in time")
}

/// The next output of `query`, within [`DEADLINE`].
pub async fn next_batch(query: &mut ContinuousQuery) -> Option<Result<BatchOutput, BrookError>> {
    tokio::time::timeout(DEADLINE, query.next())
        .await
        .expect("no batch in time")
}

/// Rows of an output as strings, one `Vec` per row (cells formatted by Arrow).
pub fn rows(output: &BatchOutput) -> Vec<Vec<String>> {
    table_rows(&output.batches)
}

/// Rows of record batches as strings, one `Vec` per row (NULL as `NULL`).
pub fn table_rows(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

/// Sums `(word, count)` results over all batches.
pub fn word_totals(outputs: &[BatchOutput]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for output in outputs {
        for batch in &output.batches {
            let words = datafusion::arrow::compute::cast(
                batch.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .expect("words as text");
            let words = words.as_string::<i32>();
            let counts = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                assert!(!words.is_null(row));
                *totals.entry(words.value(row).to_string()).or_insert(0) += counts.value(row);
            }
        }
    }
    totals
}

/// A warning handler that keeps warnings for the test to inspect.
pub fn recording_warnings() -> (brook::WarningHandler, Arc<Mutex<Vec<String>>>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&warnings);
    let handler: brook::WarningHandler =
        Arc::new(move |w: &brook::Warning| sink.lock().unwrap().push(w.to_string()));
    (handler, warnings)
}

/// A deterministic pseudo-random sequence, so inputs repeat exactly.
pub use brook::testing::Rng;

pub const WORD_COUNT_SQL: &str = "SELECT word, COUNT(*) AS count \
     FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) \
     GROUP BY word ORDER BY count DESC, word";

/// A context with a queue stream `events (word TEXT, v BIGINT)` holding
/// `batches`, one per tick, then closed; `prepare` runs on the context
/// first (registering functions, say).
pub fn word_events(
    batches: &[&[(&str, i64)]],
    incremental: bool,
    tick: Duration,
    prepare: impl FnOnce(&StreamContext),
) -> StreamContext {
    let ctx = StreamContext::new(tick);
    prepare(&ctx);
    ctx.set_incremental_windows(incremental);
    let schema = Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let queue = ctx
        .register_queue(
            "events",
            Arc::clone(&schema),
            QueueOptions::default().with_one_at_a_time(true),
        )
        .unwrap();
    for batch in batches {
        let words: Vec<&str> = batch.iter().map(|(w, _)| *w).collect();
        let values: Vec<i64> = batch.iter().map(|(_, v)| *v).collect();
        queue
            .push(
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from(words)),
                        Arc::new(Int64Array::from(values)),
                    ],
                )
                .unwrap(),
            )
            .unwrap();
    }
    queue.close();
    ctx
}
