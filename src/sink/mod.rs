//! Sinks: where query results go. The console (a table drawn with
//! prettytable-rs, or plain CSV / JSON lines for pipes) for a query run in
//! the foreground; files and PostgreSQL tables for `CREATE SINK`, whose
//! background queries `lifecycle` runs.

mod console;
mod debezium;
#[cfg(feature = "delta")]
mod delta;
#[cfg(feature = "delta")]
mod delta_merge;
#[cfg(feature = "delta")]
mod delta_resume;
mod file;
mod kafka;
pub(crate) mod lifecycle;
pub mod postgres;
pub(crate) mod view;

use async_trait::async_trait;

use crate::error::{BrookError, Result};
use crate::query::BatchOutput;

pub use console::{ConsoleSink, OutputFormat};
#[cfg(feature = "delta")]
pub use delta::{DELTA_SINK_OPTIONS, DeltaMode, DeltaSink, DeltaSinkOptions};
pub use file::{FILE_SINK_OPTIONS, FileFormat, FileMode, FileSink, FileSinkOptions};
pub use kafka::{KAFKA_SINK_OPTIONS, KafkaFormat, KafkaSink, KafkaSinkOptions};
pub use lifecycle::MAX_CONSECUTIVE_FAILURES;
pub use postgres::{POSTGRES_SINK_OPTIONS, PostgresSink, PostgresSinkOptions, UpsertMode};

/// What a sink did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkWrite {
    /// The batch's rows were written (and committed, where the sink has
    /// transactions).
    Written,
    /// The batch had no rows; nothing was written.
    Empty,
    /// The sink had already written this batch (a replay); nothing was
    /// written again.
    Skipped,
}

/// Where a background query's batches go.
#[async_trait]
pub trait BatchSink: Send {
    /// Writes one batch's result: whole, or (where the sink can promise it)
    /// not at all.
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite>;

    /// True once the sink cannot go on (for example, its server stayed
    /// unreachable through every retry): its query stops at once.
    fn gave_up(&self) -> bool {
        false
    }
}

#[async_trait]
impl BatchSink for FileSink {
    /// Writes on tokio's blocking pool: encoding a batch and syncing its
    /// file hold a thread for as long as the disk takes, and on a runtime
    /// thread a slow disk would hold up the clock and every other query
    /// scheduled there (with a one-thread runtime, all of them).
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        if self.writes_objects() {
            return self.write_object(output).await;
        }
        let mut sink = self.take_for_write();
        let output = output.clone();
        let (sink, written) = match tokio::task::spawn_blocking(move || {
            let written = FileSink::write(&mut sink, &output);
            (sink, written)
        })
        .await
        {
            Ok(done) => done,
            // A panic in the write is the sink task's, as if it ran here.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => {
                return Err(BrookError::Internal(
                    "a file sink's write was cancelled (the runtime is shutting down)".into(),
                ));
            }
        };
        *self = sink;
        Ok(match written? {
            Some(_) => SinkWrite::Written,
            None => SinkWrite::Empty,
        })
    }

    fn gave_up(&self) -> bool {
        FileSink::gave_up(self)
    }
}

/// A sink's options, by connector, from `CREATE SINK ... WITH (...)`.
#[derive(Debug, Clone)]
pub enum SinkOptions {
    /// `connector = 'file'`.
    File(FileSinkOptions),
    /// `connector = 'postgres'`.
    Postgres(Box<PostgresSinkOptions>),
    /// `connector = 'kafka'`.
    Kafka(KafkaSinkOptions),
    /// `connector = 'delta'` (with the `delta` feature).
    #[cfg(feature = "delta")]
    Delta(DeltaSinkOptions),
}

impl SinkOptions {
    /// Reads the options of sink `sink`, choosing by `connector`.
    pub fn from_options(sink: &str, options: &[(String, String)]) -> Result<Self> {
        let connector = options
            .iter()
            .find(|(key, _)| key == "connector")
            .map(|(_, value)| value.to_ascii_lowercase());
        match connector.as_deref() {
            Some("file") => FileSinkOptions::from_options(sink, options).map(SinkOptions::File),
            Some("postgres" | "postgresql") => PostgresSinkOptions::from_options(sink, options)
                .map(|options| SinkOptions::Postgres(Box::new(options))),
            Some("kafka") => KafkaSinkOptions::from_options(sink, options).map(SinkOptions::Kafka),
            #[cfg(feature = "delta")]
            Some("delta") => DeltaSinkOptions::from_options(sink, options).map(SinkOptions::Delta),
            #[cfg(not(feature = "delta"))]
            Some("delta") => Err(BrookError::invalid(format!(
                "sink '{sink}': {}",
                crate::storage::DELTA_NOT_BUILT
            ))),
            Some(other) => Err(BrookError::invalid(format!(
                "sink '{sink}': unknown connector '{other}' (sinks: 'file', 'postgres', 'kafka', 'delta')"
            ))),
            None => Err(BrookError::invalid(format!(
                "sink '{sink}': give connector = 'file', 'postgres', 'kafka' or 'delta'"
            ))),
        }
    }
}
