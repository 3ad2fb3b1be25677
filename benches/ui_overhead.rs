//! The dashboard's cost to queries: the word count of `word_count_loop`
//! run with the dashboard off and on, alternating, and with it on a
//! client reading the page's live updates (`/events`, as an open browser
//! does) while another fetches `/metrics` and `/api/queries` every 100 ms
//! (far more often than Prometheus scrapes). Prints the median over the
//! rounds of the mean execution and tick-to-result time per batch, per
//! mode. With the dashboard on, each batch also keeps its result's first
//! rows (a slice) for the page: the one thing it adds to a batch.
//!
//! A third mode serves the dashboard with no client: what the queries
//! pay per batch, apart from the CPU the clients' requests take from them.
//!
//! Run: `cargo bench --bench ui_overhead -- [rows] [batches] [rounds] [interval_ms]`
//! (defaults 100 rows, 2,000 batches, 5 rounds, 1 ms batch interval). At
//! an interval shorter than a batch's execution the query is always behind
//! and "tick to result" measures the backlog more than the batch; choose
//! an interval the query keeps up with to read it as latency.

use std::net::SocketAddr;
use std::time::Duration;

use brook::StreamContext;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{WORD_COUNT, query_over_batches, word_lines};

/// Means per batch of one run: execution, tick to result.
type Run = (Duration, Duration);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number = |at: usize, default: u64| {
        args.get(at)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let rows = number(0, 100) as usize;
    let batches = number(1, 2_000);
    let rounds = number(2, 5);
    let interval = Duration::from_millis(number(3, 1));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let batch = word_lines(rows);
        let mut off: Vec<Run> = Vec::new();
        let mut idle: Vec<Run> = Vec::new();
        let mut on: Vec<Run> = Vec::new();
        for _ in 0..rounds {
            off.push(run(&batch, batches, interval, Mode::Off).await);
            idle.push(run(&batch, batches, interval, Mode::NoClient).await);
            on.push(run(&batch, batches, interval, Mode::PageOpen).await);
        }
        for (mode, runs) in [
            ("dashboard off", off),
            ("dashboard on, no client", idle),
            ("dashboard on, page open", on),
        ] {
            let (execution, elapsed) = medians(runs);
            println!(
                "{mode:>24}: {batches} batches of {rows} lines, execution {execution:?}/batch, tick to result {elapsed:?}/batch (median of {rounds})"
            );
        }
    });
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    NoClient,
    PageOpen,
}

async fn run(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    batches: u64,
    interval: Duration,
    mode: Mode,
) -> Run {
    let ctx = StreamContext::new(interval);
    let mut clients = Vec::new();
    let _dashboard = if mode == Mode::Off {
        None
    } else {
        let handle = brook::ui::serve(&ctx, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let addr = handle.local_addr();
        if mode == Mode::PageOpen {
            clients.push(tokio::spawn(read_events(addr)));
            clients.push(tokio::spawn(scrape(addr)));
        }
        Some(handle)
    };
    let mut query = query_over_batches(&ctx, WORD_COUNT, batch, batches).await;
    // Each result must count exactly its batch's 8 words a line, one
    // result a batch, whatever the dashboard does beside it.
    let (mut count, mut execution, mut elapsed) = (0u32, Duration::ZERO, Duration::ZERO);
    while let Some(output) = query.next().await {
        let output = output.expect("batch");
        common::assert_counts_words(&output, batch.num_rows());
        count += 1;
        execution += output.execution;
        elapsed += output.elapsed;
    }
    assert_eq!(u64::from(count), batches, "one result a batch");
    for client in clients {
        client.abort();
    }
    (execution / count.max(1), elapsed / count.max(1))
}

/// Reads `/events` as a browser does, until aborted.
async fn read_events(addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    let request = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 1 << 16];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            return;
        }
    }
}

/// Fetches `/metrics` and `/api/queries` every 100 ms, until aborted.
async fn scrape(addr: SocketAddr) {
    let mut timer = tokio::time::interval(Duration::from_millis(100));
    loop {
        timer.tick().await;
        for path in ["/metrics", "/api/queries"] {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_err() {
                return;
            }
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
        }
    }
}

fn medians(mut runs: Vec<Run>) -> Run {
    let middle = runs.len() / 2;
    runs.sort_by_key(|r| r.0);
    let execution = runs.get(middle).map_or(Duration::ZERO, |r| r.0);
    runs.sort_by_key(|r| r.1);
    let elapsed = runs.get(middle).map_or(Duration::ZERO, |r| r.1);
    (execution, elapsed)
}
