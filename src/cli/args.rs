//! Command-line arguments, parsed once by clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::sink::OutputFormat;

const EXAMPLES: &str = "Examples:
  brook                                    (the interactive shell: type SQL against live streams)
  brook run queries/wordcount.sql
  brook serve                              (then: psql -h 127.0.0.1 -p 5433)
  brook --batch-interval 500ms run queries/socket_wordcount.sql     (feed it with: nc -lk 9000)
  brook run queries/socket_wordcount.sql --ui    (and open http://127.0.0.1:4040/)
  brook --format csv -c \"CREATE STREAM ds WITH (connector = 'socket', port = '9000'); SELECT * FROM ds\"";

/// SQL over live streams: micro-batches on DataFusion.
#[derive(Debug, Parser)]
#[command(name = "brook", version, about, after_help = EXAMPLES)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Run SQL statements given as a string (repeatable).
    #[arg(short = 'c', long = "command", value_name = "SQL", global = true)]
    pub commands: Vec<String>,

    /// Run the statements of a .sql file (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
    pub files: Vec<PathBuf>,

    /// Batch interval (trigger interval), e.g. 1s, 500ms; `SET batch_interval` in SQL overrides it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub batch_interval: Option<Duration>,

    /// Keep each continuous query's checkpoints in DIR, and resume each from
    /// its checkpoint there (`SET checkpoint_dir` in SQL does the same).
    #[arg(long, value_name = "DIR", global = true)]
    pub checkpoint: Option<PathBuf>,

    /// Output format: table, csv or json.
    #[arg(long, default_value = "table", global = true)]
    pub format: OutputFormat,

    /// Rows shown per batch in table format.
    #[arg(long, default_value_t = 20, value_name = "N", global = true)]
    pub max_rows: usize,

    /// Print nothing for empty batches, and no batch headers with csv/json.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Stop each continuous query after N batches.
    #[arg(long, value_name = "N", global = true)]
    pub batches: Option<u64>,

    /// Stop after this long, e.g. 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub duration: Option<Duration>,

    /// Serve the dashboard (a live page, /api/..., /metrics) on ADDR while
    /// brook runs; 127.0.0.1:4040 when no ADDR is given. Put it after the
    /// file (`brook run FILE --ui`) or write `--ui=ADDR`.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = crate::ui::DEFAULT_ADDR,
        global = true
    )]
    pub ui: Option<SocketAddr>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a .sql file: statements in order; continuous queries keep running
    /// until their streams end (queues created by the file are closed at its end).
    Run {
        /// The .sql file.
        file: PathBuf,
    },
    /// List the checkpoints a checkpoint directory holds: per query, each
    /// batch checkpointed, when, its size, and whether it reads.
    Checkpoints {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// Serve the PostgreSQL wire protocol: psql, drivers and BI tools run
    /// statements in one shared brook (-f / -c statements run first).
    Serve {
        /// Where to listen (loopback unless a password file is given).
        #[arg(long = "pg", value_name = "ADDR", default_value = crate::cli::serve::DEFAULT_PG_ADDR)]
        pg: SocketAddr,
        /// Users who may sign in, one `user:password` per line (SCRAM-SHA-256).
        #[arg(long = "pg-password-file", value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Clients served at once.
        #[arg(long = "pg-max-connections", value_name = "N", default_value_t = crate::cli::serve::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Let clients use COPY ... TO and CREATE EXTERNAL TABLE (the server's files).
        #[arg(long = "pg-allow-files")]
        allow_files: bool,
        /// A certificate chain (PEM) for TLS; needs --pg-key.
        #[arg(long = "pg-cert", value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM); needs --pg-cert.
        #[arg(long = "pg-key", value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// The interactive shell (also what `brook` with no arguments starts):
    /// line editing, history in ~/.brook_history (or $BROOK_HISTORY),
    /// meta-commands (\\? lists them).
    Repl,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::sql::parse_duration(text).map_err(|e| e.to_string())
}
