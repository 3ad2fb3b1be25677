//! A word count over a Kafka topic through brook's library API: a Kafka
//! stream declared in SQL, one word count per batch printed as it comes,
//! totals kept by the program. Each batch's offsets are committed to the
//! group once its output is printed and the next one is asked for (see the
//! README's Kafka section), so a second run with the same group goes on
//! where this one stopped.
//!
//! Needs a Kafka broker with a topic `lines` (with tansu: see
//! `queries/kafka_wordcount.sql`); every line of a message is a line of
//! text. Run: `cargo run --example kafka_wordcount -- 127.0.0.1:9092 lines 1000`
//! (broker, topic, and how many words to count before stopping).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use brook::sink::{ConsoleSink, OutputFormat};
use brook::{SqlOutput, StreamContext};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use futures::StreamExt;

/// Counts the words of `topic` on `bootstrap_servers` (group
/// `group_id`, from its committed offsets) until `words` were counted;
/// prints each batch's counts and returns the totals and the stream's
/// offsets as `SHOW STREAMS` shows them.
pub async fn run(
    bootstrap_servers: &str,
    topic: &str,
    group_id: &str,
    words: i64,
    batch_interval: Duration,
) -> brook::Result<(BTreeMap<String, i64>, String)> {
    let ctx = StreamContext::new(batch_interval);
    ctx.sql(&format!(
        "CREATE STREAM lines (line TEXT) WITH (connector = 'kafka', \
         bootstrap_servers = '{bootstrap_servers}', topic = '{topic}', group_id = '{group_id}', \
         'kafka.session.timeout.ms' = '6000')"
    ))
    .await?;
    let SqlOutput::Query(mut query) = ctx
        .sql(
            "SELECT word, COUNT(*) AS n
             FROM (SELECT unnest(split(line, ' ')) AS word FROM lines)
             WHERE word <> ''
             GROUP BY word ORDER BY n DESC, word",
        )
        .await?
    else {
        unreachable!("a SELECT over a stream is a continuous query");
    };

    let mut sink = ConsoleSink::new(OutputFormat::Table, 10, false);
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut counted = 0;
    let mut finishing = false;
    // Asking for the next output is what tells brook that this one is done
    // with: only then are its rows' offsets committed.
    while let Some(output) = query.next().await {
        let output = output?;
        sink.write_batch(&mut io::stdout(), &mut io::stderr(), &output)
            .map_err(|e| brook::BrookError::Internal(e.to_string()))?;
        for batch in &output.batches {
            let word = batch.column(0).as_string_view();
            let n = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                *totals.entry(word.value(row).to_string()).or_default() += n.value(row);
                counted += n.value(row);
            }
        }
        if counted >= words && !finishing {
            // One last batch of what has arrived, then the query ends.
            query.finish();
            finishing = true;
        }
    }
    let offsets = ctx
        .streams()
        .first()
        .map(|stream| stream.options.clone())
        .unwrap_or_default();
    // Dropping the context commits the finished offsets and waits (a
    // bounded time) for the broker's answer.
    drop(ctx);
    Ok((totals, offsets))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> brook::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let servers = args.first().map_or("127.0.0.1:9092", String::as_str);
    let topic = args.get(1).map_or("lines", String::as_str);
    let words = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (totals, offsets) = run(
        servers,
        topic,
        "brook-wordcount-example",
        words,
        Duration::from_secs(1),
    )
    .await?;
    println!("totals: {totals:?}");
    println!("stream: {offsets}");
    Ok(())
}
