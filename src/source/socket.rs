//! The socket source (Spark's `socketTextStream`): brook connects to
//! `host:port` as a TCP client and reads newline-terminated lines, decoding
//! them straight from large reads. A line is only ever decoded whole, however
//! the bytes were split across reads or ticks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::Inbox;
use super::decode::{DecodedLines, LineDecoder, LineSplitter};
use super::{SocketOptions, Source};
use crate::error::{BrookError, Result, Warning, WarningHandler};

/// Bytes asked for per read; lines are decoded a read at a time.
const READ_BYTES: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct SocketSource {
    stream: String,
    address: String,
    options: SocketOptions,
    schema: SchemaRef,
    warn: WarningHandlerDebug,
    /// The reading task; aborted when the stream is dropped.
    reader: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// A [`WarningHandler`] that can sit in a `#[derive(Debug)]` struct.
#[derive(Clone)]
struct WarningHandlerDebug(WarningHandler);

impl std::fmt::Debug for WarningHandlerDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarningHandler")
    }
}

impl SocketSource {
    pub fn try_new(
        stream: String,
        address: String,
        options: SocketOptions,
        schema: SchemaRef,
        warn: WarningHandler,
    ) -> Result<Self> {
        // Validate the schema against the format now, at CREATE STREAM time.
        LineDecoder::try_new(
            &stream,
            Arc::clone(&schema),
            options.format,
            options.delimiter,
        )?;
        Ok(Self {
            stream,
            address,
            options,
            schema,
            warn: WarningHandlerDebug(warn),
            reader: Default::default(),
        })
    }
}

impl Drop for SocketSource {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.lock().take() {
            reader.abort();
        }
    }
}

#[async_trait]
impl Source for SocketSource {
    fn connector(&self) -> &'static str {
        "socket"
    }

    fn describe(&self) -> String {
        self.options.describe(&self.address)
    }

    async fn start(&self, inbox: Arc<Inbox>) -> Result<()> {
        let first_connection = match connect(&self.address).await {
            Ok(socket) => Some(socket),
            Err(source) if !self.options.reconnect => {
                return Err(BrookError::Connect {
                    stream: self.stream.clone(),
                    address: self.address.clone(),
                    source,
                });
            }
            Err(source) => {
                (self.warn.0)(&Warning::Source(BrookError::Connect {
                    stream: self.stream.clone(),
                    address: self.address.clone(),
                    source,
                }));
                None
            }
        };
        let reader = SocketReader {
            stream: self.stream.clone(),
            address: self.address.clone(),
            options: self.options.clone(),
            lines: LineSplitter::new(
                LineDecoder::try_new(
                    &self.stream,
                    Arc::clone(&self.schema),
                    self.options.format,
                    self.options.delimiter,
                )?
                .with_max_line_bytes(self.options.max_line_bytes)
                .with_timestamp_format(self.options.timestamp_format),
                READ_BYTES,
            ),
            inbox,
            warn: self.warn.0.clone(),
        };
        let task = tokio::spawn(reader.run(first_connection));
        *self.reader.lock() = Some(task);
        Ok(())
    }
}

async fn connect(address: &str) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection timed out",
        )),
    }
}

/// Why one connection's reading stopped.
enum Disconnect {
    /// The peer closed the connection.
    Closed,
    /// Reading failed (reset, ...).
    Lost(std::io::Error),
    /// A bad row with `on_error = 'fail'`: the stream has failed.
    Failed,
}

struct SocketReader {
    stream: String,
    address: String,
    options: SocketOptions,
    /// Cuts reads into lines and decodes them; numbers lines over all
    /// connections.
    lines: LineSplitter,
    inbox: Arc<Inbox>,
    warn: WarningHandler,
}

impl SocketReader {
    async fn run(mut self, first_connection: Option<TcpStream>) {
        let mut connection = first_connection;
        let mut backoff = crate::retry::Backoff::default();
        let mut failed_attempts: u32 = 0;
        loop {
            if let Some(socket) = connection.take() {
                self.inbox.set_reconnecting(false);
                backoff.reset();
                failed_attempts = 0;
                match self.read_connection(socket).await {
                    Disconnect::Failed => return,
                    Disconnect::Closed => {}
                    Disconnect::Lost(source) => {
                        (self.warn)(&Warning::Source(BrookError::SourceIo {
                            stream: self.stream.clone(),
                            source: std::io::Error::new(
                                source.kind(),
                                format!("connection to {} lost: {source}", self.address),
                            ),
                        }))
                    }
                }
                if !self.options.reconnect {
                    self.inbox.close();
                    return;
                }
            }
            self.inbox.set_reconnecting(true);
            backoff.wait().await;
            match connect(&self.address).await {
                Ok(socket) => connection = Some(socket),
                Err(source) => {
                    failed_attempts += 1;
                    if self
                        .options
                        .reconnect_attempts
                        .is_some_and(|limit| failed_attempts >= limit)
                    {
                        let source = std::io::Error::new(
                            source.kind(),
                            format!(
                                "{source} (gave up after {failed_attempts} reconnect attempts)"
                            ),
                        );
                        self.inbox.fail(BrookError::Connect {
                            stream: self.stream.clone(),
                            address: self.address.clone(),
                            source,
                        });
                        return;
                    }
                    (self.warn)(&Warning::Source(BrookError::Connect {
                        stream: self.stream.clone(),
                        address: self.address.clone(),
                        source,
                    }));
                }
            }
        }
    }

    /// Reads one connection until it closes or fails.
    async fn read_connection(&mut self, mut socket: TcpStream) -> Disconnect {
        loop {
            let decoded = match socket.read_buf(self.lines.read_buffer()).await {
                Ok(0) => {
                    let decoded = self.lines.decode_close();
                    if !self.deliver(decoded).await {
                        return Disconnect::Failed;
                    }
                    return Disconnect::Closed;
                }
                Ok(_) => self.lines.decode_read(),
                Err(err) => {
                    if let Some(dropped) = self.lines.decode_loss() {
                        (self.warn)(&Warning::Source(BrookError::BadRow {
                            stream: self.stream.clone(),
                            line: dropped.line,
                            message: dropped.message,
                        }));
                        self.inbox
                            .rows_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Disconnect::Lost(err);
                }
            };
            if !self.deliver(decoded).await {
                return Disconnect::Failed;
            }
        }
    }

    /// Reports the bad lines and puts the rows in the inbox. Returns false
    /// when the stream has failed (`on_error = 'fail'`) or was dropped.
    async fn deliver(&mut self, decoded: DecodedLines) -> bool {
        super::deliver(
            &self.inbox,
            decoded,
            self.options.on_error,
            &self.warn,
            |bad| bad.message.clone(),
        )
        .await
    }
}
