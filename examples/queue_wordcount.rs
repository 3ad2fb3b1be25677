//! Spark Streaming's `queueStream` word count through brook's library API:
//! two items pushed onto a queue stream, taken one per batch, counted with SQL.
//!
//! Run: `cargo run --example queue_wordcount`

use std::io;
use std::sync::Arc;
use std::time::Duration;

use brook::sink::{ConsoleSink, OutputFormat};
use brook::{BatchOutput, QueueOptions, SqlOutput, StreamContext, line_schema};
use datafusion::arrow::array::StringViewArray;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

/// Pushes the two items, runs the word count, prints each batch and returns
/// the outputs.
pub async fn run(batch_interval: Duration) -> brook::Result<Vec<BatchOutput>> {
    let ctx = StreamContext::new(batch_interval);
    let lines = ctx.register_queue(
        "lines",
        line_schema(),
        QueueOptions::default().with_one_at_a_time(true),
    )?;
    for item in ["Spark Streaming Sample ssc", "Spark Queue Spark API"] {
        let column = Arc::new(StringViewArray::from(vec![item]));
        lines.push(RecordBatch::try_new(lines.schema(), vec![column])?)?;
    }
    // A closed queue's stream ends once drained, and so does the query.
    lines.close();

    let SqlOutput::Query(mut query) = ctx
        .sql(
            "SELECT word, COUNT(*) AS count
             FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines)
             GROUP BY word ORDER BY count DESC, word",
        )
        .await?
    else {
        unreachable!("a SELECT over a stream is a continuous query");
    };

    let mut sink = ConsoleSink::new(OutputFormat::Table, 20, false);
    let mut outputs = Vec::new();
    while let Some(output) = query.next().await {
        let output = output?;
        sink.write_batch(&mut io::stdout(), &mut io::stderr(), &output)
            .map_err(|e| brook::BrookError::Internal(e.to_string()))?;
        outputs.push(output);
    }
    Ok(outputs)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> brook::Result<()> {
    run(Duration::from_secs(1)).await.map(|_| ())
}
