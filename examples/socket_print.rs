//! Spark Streaming's `socketTextStream(...).print()` through brook's library
//! API. To run anywhere, it starts its own little line server on 127.0.0.1
//! that sends a few lines and closes; brook connects to it as a client and
//! prints each batch's lines until the server closes.
//!
//! Run: `cargo run --example socket_print`

use std::io::{self, Write};
use std::net::TcpListener;
use std::time::Duration;

use brook::sink::{ConsoleSink, OutputFormat};
use brook::{BatchOutput, SocketOptions, SqlOutput, StreamContext, line_schema};
use futures::StreamExt;

/// Starts a server on 127.0.0.1 that sends `lines` in two bursts, one
/// `pause` apart, then closes. Returns its address.
pub fn start_line_server(lines: Vec<String>, pause: Duration) -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else {
            return;
        };
        let (first, second) = lines.split_at(lines.len() / 2);
        for burst in [first, second] {
            for line in burst {
                if writeln!(client, "{line}").is_err() {
                    return;
                }
            }
            std::thread::sleep(pause);
        }
    });
    Ok(address)
}

/// Connects to a fresh line server and prints every batch; returns them.
pub async fn run(batch_interval: Duration) -> brook::Result<Vec<BatchOutput>> {
    let lines = [
        "hello brook",
        "lines arrive",
        "over TCP",
        "one batch per interval",
    ];
    let address = start_line_server(
        lines.iter().map(|l| l.to_string()).collect(),
        batch_interval * 2,
    )
    .map_err(|e| brook::BrookError::Internal(e.to_string()))?;

    let ctx = StreamContext::new(batch_interval);
    ctx.register_socket("ds", &address, line_schema(), SocketOptions::default())?;
    let SqlOutput::Query(mut query) = ctx.sql("SELECT * FROM ds").await? else {
        unreachable!("a SELECT over a stream is a continuous query");
    };
    let mut sink = ConsoleSink::new(OutputFormat::Table, 20, true);
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
    run(Duration::from_millis(500)).await.map(|_| ())
}
