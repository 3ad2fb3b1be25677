//! The runtime every object store request runs on: one thread of brook's
//! own, started on first use and kept for the process. Requests made from
//! any runtime (a query's, the REPL's) or from plain threads (checkpoints)
//! are spawned here, so a store's pooled connections always belong to a
//! runtime that is alive.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

use crate::error::{BrookError, Result};

/// The storage runtime's handle.
pub(crate) fn handle() -> Result<Handle> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("brook-storage")
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map(|runtime| runtime.handle().clone())
        .map_err(|err| BrookError::Internal(format!("the storage runtime did not start: {err}")))
}

/// Runs `work` on the storage runtime and waits for it.
pub(crate) async fn run<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    handle()?
        .spawn(work)
        .await
        .map_err(|err| BrookError::Internal(format!("a storage request did not finish: {err}")))
}

/// Runs `work` on the storage runtime from code that is not async (or
/// that must not be: a checkpoint's write), blocking this thread until it
/// ends.
pub(crate) fn block_on<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (done, answer) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = done.send(work.await);
    });
    answer
        .recv()
        .map_err(|_| BrookError::Internal("a storage request did not finish".into()))
}
