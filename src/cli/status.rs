//! The live status line of a long `brook run` on a terminal: batches, rows
//! per second in, lag. Redrawn on stderr once a second; cleared before any
//! batch is printed so it never mixes with results.

use parking_lot::Mutex;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::context::StreamContext;

/// The status line, shared by the ticker and the printers.
#[derive(Clone, Default)]
pub(crate) struct StatusLine {
    shown: Arc<AtomicBool>,
    /// Held while a printer writes a batch, so the ticker waits.
    writing: Arc<Mutex<()>>,
}

impl StatusLine {
    /// Starts redrawing once a second when stderr is a terminal and
    /// `quiet` is off; otherwise the line stays off.
    pub fn start(ctx: &StreamContext, quiet: bool) -> Self {
        let status = Self::default();
        if quiet || !std::io::stderr().is_terminal() {
            return status;
        }
        let ticker = status.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut last_rows = total_rows(&ctx);
            let mut last_time = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let rows = total_rows(&ctx);
                let now = Instant::now();
                let rate = (rows - last_rows) as f64 / (now - last_time).as_secs_f64();
                (last_rows, last_time) = (rows, now);
                let queries = ctx.running_queries();
                let batches: u64 = queries.iter().map(|q| q.stats.batches).sum();
                let lag = queries
                    .iter()
                    .map(|q| q.stats.lag)
                    .max()
                    .unwrap_or_default();
                let line = format!(
                    "brook: {} quer{} | {batches} batches | {:.0} rows/s in | lag {:.0} ms",
                    queries.len(),
                    if queries.len() == 1 { "y" } else { "ies" },
                    rate,
                    lag.as_secs_f64() * 1000.0
                );
                let _guard = ticker.writing.lock();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
                ticker.shown.store(true, Ordering::SeqCst);
            }
        });
        status
    }

    /// Clears the line (if shown) and holds it off while `write` runs.
    pub fn around<T>(&self, write: impl FnOnce() -> T) -> T {
        let _guard = self.writing.lock();
        if self.shown.swap(false, Ordering::SeqCst) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        write()
    }
}

fn total_rows(ctx: &StreamContext) -> u64 {
    ctx.streams().iter().map(|s| s.rows_received).sum()
}
