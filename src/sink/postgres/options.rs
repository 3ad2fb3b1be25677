//! The PostgreSQL sink's options, and keeping its password out of sight.

use crate::error::{BrookError, Result};
use crate::options::OptionReader;
use crate::options::OptionSpec;
pub(crate) use crate::pg::{QualifiedName, quote_identifier};
use crate::pg::{connection_config, table_name};

/// How rows reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertMode {
    /// Every row is inserted (binary `COPY ... FROM STDIN`).
    Append,
    /// A row whose key is in the table replaces that row's other columns
    /// (`INSERT ... ON CONFLICT (key) DO UPDATE`).
    Upsert,
}

/// A PostgreSQL sink's options, from `CREATE SINK ... WITH (...)`.
#[derive(Clone)]
pub struct PostgresSinkOptions {
    /// Where to connect, parsed from `url`; holds the password, so it is
    /// never printed (see [`PostgresSinkOptions::server`]).
    pub(crate) config: tokio_postgres::Config,
    /// The table, as a quoted SQL name (`"public"."word_counts"`).
    pub(crate) table: QualifiedName,
    /// Append or upsert.
    pub mode: UpsertMode,
    /// The key columns of an upsert, as the query names them.
    pub key: Vec<String>,
    /// Create the table from the query's columns when it does not exist.
    pub create_table: bool,
    /// Connection attempts for one batch before the sink gives up.
    pub reconnect_attempts: u32,
    /// The table recording which batches each sink has written.
    pub(crate) progress_table: QualifiedName,
}

impl std::fmt::Debug for PostgresSinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkOptions")
            .field("server", &self.server())
            .field("table", &self.table.display)
            .field("mode", &self.mode)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PostgresSinkOptions {
    /// Reads `connector = 'postgres', url, table, mode, key, create_table,
    /// reconnect_attempts, progress_table` (keys lower-cased).
    pub fn from_options(sink: &str, options: &[(String, String)]) -> Result<Self> {
        let owner = format!("sink '{sink}'");
        let options = OptionReader::new(owner.clone(), options, POSTGRES_SINK_OPTIONS)?;
        let bad = |message: String| BrookError::invalid(format!("{owner}: {message}"));
        let config = connection_config(&options, &bad, format!("brook sink {sink}"))?;
        let table = table_name(&options, "table", None, &bad)?;
        let progress_table = table_name(
            &options,
            "progress_table",
            Some(DEFAULT_PROGRESS_TABLE),
            &bad,
        )?;
        let (mode, key) = mode_and_key(&options, &bad)?;
        Ok(Self {
            config,
            table,
            mode,
            key,
            create_table: options.bool("create_table")?.unwrap_or(false),
            reconnect_attempts: options
                .positive("reconnect_attempts")?
                .unwrap_or(DEFAULT_RECONNECT_ATTEMPTS),
            progress_table,
        })
    }

    /// The server and database, for messages: never the password.
    pub fn server(&self) -> String {
        crate::pg::server(&self.config)
    }

    /// The table, as the user named it (lower-cased).
    pub fn table(&self) -> &str {
        &self.table.display
    }
}

/// `mode` and `key`: an upsert needs key columns, and an append takes none.
fn mode_and_key(
    options: &OptionReader<'_>,
    bad: &impl Fn(String) -> BrookError,
) -> Result<(UpsertMode, Vec<String>)> {
    let mode = options
        .choice(
            "mode",
            &[
                ("append", UpsertMode::Append),
                ("upsert", UpsertMode::Upsert),
            ],
        )?
        .unwrap_or(UpsertMode::Append);
    let key: Vec<String> = options
        .text("key")
        .map(|text| {
            text.split(',')
                .map(|column| column.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    if key.iter().any(String::is_empty) {
        return Err(options.bad("key", "must be column names separated by commas"));
    }
    match mode {
        UpsertMode::Upsert if key.is_empty() => Err(bad(
            "mode = 'upsert' needs key = 'column' (or 'column1, column2')".into(),
        )),
        UpsertMode::Append if !key.is_empty() => Err(bad(
            "key applies to mode = 'upsert'; mode = 'append' inserts every row".into(),
        )),
        _ => Ok((mode, key)),
    }
}

/// The table where sinks record the batches they wrote.
pub const DEFAULT_PROGRESS_TABLE: &str = "brook_sink_progress";
/// Connection attempts for one batch before a sink gives up.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 10;

/// The options of a PostgreSQL sink.
pub const POSTGRES_SINK_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "connector",
        default: None,
        help: "'postgres'",
    },
    OptionSpec {
        key: "url",
        default: None,
        help: "postgres://user:password@host:port/database (required; the password is never shown)",
    },
    OptionSpec {
        key: "table",
        default: None,
        help: "the table written to: name or schema.name (required)",
    },
    OptionSpec {
        key: "mode",
        default: Some("append"),
        help: "'append' (binary COPY) or 'upsert' (INSERT ... ON CONFLICT (key) DO UPDATE)",
    },
    OptionSpec {
        key: "key",
        default: None,
        help: "upsert's key column(s), comma-separated; the table needs a unique index on them",
    },
    OptionSpec {
        key: "create_table",
        default: Some("false"),
        help: "create the table from the query's columns if it does not exist (key = primary key)",
    },
    OptionSpec {
        key: "reconnect_attempts",
        default: Some("10"),
        help: "tries per batch while the server is unreachable (backoff 100 ms doubling to 5 s) before the sink stops",
    },
    OptionSpec {
        key: "progress_table",
        default: Some(DEFAULT_PROGRESS_TABLE),
        help: "where each written (sink, batch) is recorded in the batch's own transaction",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_name_what_is_wrong_and_never_the_password() {
        let err = PostgresSinkOptions::from_options(
            "s",
            &options(&[
                ("connector", "postgres"),
                ("url", "postgres://u:topsecret@127.0.0.1:notaport/db"),
                ("table", "t"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("url is not a PostgreSQL connection URL"),
            "{err}"
        );
        assert!(!err.contains("topsecret"), "{err}");

        let err = PostgresSinkOptions::from_options(
            "s",
            &options(&[
                ("connector", "postgres"),
                ("url", "postgres://u@127.0.0.1/db"),
                ("table", "t"),
                ("mode", "upsert"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs key"), "{err}");

        let err = PostgresSinkOptions::from_options(
            "s",
            &options(&[
                ("connector", "postgres"),
                ("url", "postgres://u@127.0.0.1/db"),
                ("table", "drop table x; --"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be a table name"), "{err}");

        let ok = PostgresSinkOptions::from_options(
            "s",
            &options(&[
                ("connector", "postgres"),
                ("url", "postgres://u:pw@127.0.0.1:6543/db"),
                ("table", "Analytics.Word_Counts"),
                ("mode", "upsert"),
                ("key", "word, day"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.table.quoted, "\"analytics\".\"word_counts\"");
        assert_eq!(ok.key, ["word", "day"]);
        assert_eq!(
            ok.server(),
            "PostgreSQL at 127.0.0.1:6543 (database db, user u)"
        );
        assert!(!format!("{ok:?}").contains("pw"));
    }
}
