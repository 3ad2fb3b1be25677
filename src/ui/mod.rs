//! The dashboard: one live page of every query and stream of a
//! [`StreamContext`], JSON under `/api/`, and Prometheus metrics at
//! `/metrics`, served over HTTP by [`serve`]. Read-only: nothing it serves
//! changes the context.
//!
//! - `history`: the charts' bounded history, sampled once a second by a
//!   timer (never on a query's batch path).
//! - `json`: the `/api/...` documents and the page's live updates.
//! - `metrics`: the Prometheus text format.
//! - `page`: the page, rendered once on the server, then kept live by its
//!   own script (`assets/`, compiled into the binary) over server-sent
//!   events.
//! - `server`: HTTP (hyper) and the routes.

mod history;
mod json;
mod metrics;
mod page;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::StreamContext;
use crate::error::{BrookError, Result};

pub use metrics::METRICS;

/// Where `brook --ui` serves the dashboard unless told otherwise: loopback,
/// on Spark's UI port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4040";

/// Rows of each query's latest result the dashboard shows.
pub const LATEST_ROWS: usize = 20;

/// A dashboard being served. Dropping it (or [`UiHandle::shutdown`]) stops
/// the server and closes its connections, live pages included.
#[derive(Debug)]
pub struct UiHandle {
    local_addr: SocketAddr,
    /// Dropped to stop: every connection and the sampler wait on it, and
    /// end once it is gone.
    _shutdown: watch::Sender<()>,
    /// The accept loop.
    server: JoinHandle<()>,
}

impl UiHandle {
    /// The address the dashboard is served on (with the port the system
    /// chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The page's URL, e.g. `http://127.0.0.1:4040/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Stops serving.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for UiHandle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves `ctx`'s dashboard on `addr` until the returned handle is dropped.
/// Fails with an error naming the address when it cannot listen there (a
/// port in use, an address not of this machine).
///
/// From now on the context's queries keep the first [`LATEST_ROWS`] rows
/// of their latest result for the page.
pub async fn serve(ctx: &StreamContext, addr: SocketAddr) -> Result<UiHandle> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|err| BrookError::io(format!("cannot serve the dashboard on {addr}"), err))?;
    let local_addr = listener
        .local_addr()
        .map_err(|err| BrookError::io(format!("cannot serve the dashboard on {addr}"), err))?;
    ctx.query_registry().keep_latest_rows(LATEST_ROWS);
    let dashboard = Arc::new(history::Dashboard::new(ctx.clone()));
    let (shutdown, stopped) = watch::channel(());
    tokio::spawn(history::sample_every_second(
        Arc::clone(&dashboard),
        stopped.clone(),
    ));
    let server = tokio::spawn(server::accept(listener, dashboard, stopped));
    Ok(UiHandle {
        local_addr,
        _shutdown: shutdown,
        server,
    })
}
