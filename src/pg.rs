//! PostgreSQL connections, as the PostgreSQL sink and lookup tables both
//! make them: the connection from a `url` option, the server as messages
//! show it (never the password), and table names quoted for SQL.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::error::{BrookError, Result};
use crate::options::OptionReader;

/// A table's name: as the user wrote it, and quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QualifiedName {
    /// As written, folded to lower case as PostgreSQL folds unquoted names.
    pub display: String,
    /// Quoted for SQL text.
    pub quoted: String,
}

impl QualifiedName {
    /// Parses `name` or `schema.name`: unquoted SQL identifiers.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let identifier = |part: &str| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| identifier(part)) || text.len() > 127 {
            return None;
        }
        let display = text.to_ascii_lowercase();
        let quoted = display
            .split('.')
            .map(quote_identifier)
            .collect::<Vec<_>>()
            .join(".");
        Some(Self { display, quoted })
    }
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect, from option `url`: it must name a host and a user;
/// brook's connect timeout applies unless it sets one, and the connection
/// is named `application`. `bad` words an error about the options.
pub(crate) fn connection_config(
    options: &OptionReader<'_>,
    bad: &impl Fn(String) -> BrookError,
    application: String,
) -> Result<tokio_postgres::Config> {
    let url = options
        .text("url")
        .ok_or_else(|| bad("give url = 'postgres://user:password@host:port/database'".into()))?;
    let mut config = tokio_postgres::Config::from_str(url).map_err(|err| {
        // The parser's messages name an option, never a value.
        bad(format!(
            "url is not a PostgreSQL connection URL (postgres://user:password@host:port/database): {}",
            crate::error::error_chain(&err)
        ))
    })?;
    if config.get_hosts().is_empty() {
        return Err(bad(
            "url names no host (postgres://user@127.0.0.1:5432/database)".into(),
        ));
    }
    if config.get_user().is_none() {
        return Err(bad(
            "url names no user (postgres://user@host:port/database)".into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name(application);
    Ok(config)
}

/// The server and database of `config`, for messages: never the
/// password.
pub(crate) fn server(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = config
                .get_ports()
                .get(index)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let user = config.get_user().unwrap_or("?");
    let database = config.get_dbname().unwrap_or(user);
    format!(
        "PostgreSQL at {} (database {database}, user {user})",
        hosts.join(",")
    )
}

/// The table named by option `key` (or `default`), `name` or `schema.name`.
pub(crate) fn table_name(
    options: &OptionReader<'_>,
    key: &str,
    default: Option<&str>,
    bad: &impl Fn(String) -> BrookError,
) -> Result<QualifiedName> {
    let text = options
        .text(key)
        .or(default)
        .ok_or_else(|| bad(format!("give {key} = 'name' (or 'schema.name')")))?;
    QualifiedName::parse(text).ok_or_else(|| {
        options.bad(
            key,
            format_args!(
                "must be a table name such as word_counts or analytics.word_counts, got '{text}'"
            ),
        )
    })
}
