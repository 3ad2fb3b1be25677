//! A table whose rows are looked up by key in PostgreSQL as batches need
//! them (`CREATE TABLE ... WITH (connector = 'postgres', ...)`): each batch
//! asks for its distinct keys in one round trip, through a cache whose
//! entries (found rows and absent keys alike) live `lookup_cache_ttl` and
//! of which at most `lookup_cache_rows` are kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;
use tokio_postgres::{Client, NoTls};

use crate::error::{BrookError, Result};
use crate::options::{OptionReader, OptionSpec};
use crate::pg::{QualifiedName, connection_config, quote_identifier, server, table_name};
use crate::retry::Backoff;

/// How many times a lookup is tried before its batch fails.
const ATTEMPTS: u32 = 5;

/// The options of a lookup table.
pub(crate) const LOOKUP_OPTIONS: &[OptionSpec] = &[
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
        help: "the PostgreSQL table looked up: name or schema.name (required)",
    },
    OptionSpec {
        key: "lookup_cache_ttl",
        default: Some("10s"),
        help: "how long a key looked up (found or not) is kept before it is read again",
    },
    OptionSpec {
        key: "lookup_cache_rows",
        default: Some("100000"),
        help: "how many keys the cache keeps at most (the oldest go first)",
    },
];

/// What the cache holds for a key: its rows (none when PostgreSQL has
/// none), as text, and when they were read.
struct Entry {
    read_at: Instant,
    rows: KeyRows,
}

/// The rows of one key.
type KeyRows = Arc<Vec<Vec<Option<String>>>>;

/// Looked-up keys, per key column, with their age.
#[derive(Default)]
struct Cache {
    /// Per key column, per key (as text).
    entries: HashMap<usize, HashMap<String, Entry>>,
    /// How many keys `entries` holds.
    len: usize,
    /// Keys in the order they were read, to free the oldest first.
    order: VecDeque<((usize, String), Instant)>,
}

impl Cache {
    fn get(&self, column: usize, key: &str) -> Option<&Entry> {
        self.entries.get(&column)?.get(key)
    }
}

/// A table looked up in PostgreSQL.
pub(crate) struct PostgresLookup {
    /// The table's name in brook.
    pub name: String,
    /// The declared columns.
    pub schema: SchemaRef,
    config: tokio_postgres::Config,
    table: QualifiedName,
    ttl: Duration,
    max_keys: usize,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: parking_lot::Mutex<Cache>,
}

impl std::fmt::Debug for PostgresLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLookup")
            .field("name", &self.name)
            .field("table", &self.table.display)
            .finish_non_exhaustive()
    }
}

impl PostgresLookup {
    /// A lookup table `name` with columns `schema`, from its `WITH`
    /// options.
    pub fn from_options(
        name: &str,
        schema: SchemaRef,
        options: &[(String, String)],
    ) -> Result<Self> {
        let owner = format!("table '{name}'");
        let options = OptionReader::new(owner.clone(), options, LOOKUP_OPTIONS)?;
        let bad = |message: String| BrookError::invalid(format!("{owner}: {message}"));
        if let Some(connector) = options.text("connector")
            && connector != "postgres"
        {
            return Err(bad(format!(
                "a lookup table's connector is 'postgres', not '{connector}'"
            )));
        }
        let config = connection_config(&options, &bad, format!("brook lookup {name}"))?;
        let table = table_name(&options, "table", None, &bad)?;
        let ttl = match options.text("lookup_cache_ttl") {
            None => Duration::from_secs(10),
            Some(text) => {
                crate::sql::parse_delay(text).map_err(|err| options.bad("lookup_cache_ttl", err))?
            }
        };
        let max_keys = options
            .positive::<usize>("lookup_cache_rows")?
            .unwrap_or(100_000);
        Ok(Self {
            name: name.to_string(),
            schema,
            config,
            table,
            ttl,
            max_keys,
            client: tokio::sync::Mutex::new(None),
            cache: parking_lot::Mutex::new(Cache::default()),
        })
    }

    /// The PostgreSQL type name a key column's values are sent as.
    pub fn key_type(&self, column: usize) -> Result<&'static str> {
        let field = self.schema.field(column);
        match field.data_type() {
            DataType::Int16 => Ok("int2"),
            DataType::Int32 => Ok("int4"),
            DataType::Int64 => Ok("int8"),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok("text"),
            other => Err(BrookError::invalid(format!(
                "table '{}': a lookup key is an integer or text column; '{}' is {other}",
                self.name,
                field.name()
            ))),
        }
    }

    /// The cache's bounds, as `EXPLAIN` shows them.
    pub fn describe_cache(&self) -> String {
        format!(
            "cache: lookup_cache_ttl = '{}', lookup_cache_rows = '{}'; {}, table {}",
            crate::sql::format_duration(self.ttl),
            self.max_keys,
            server(&self.config),
            self.table.display
        )
    }

    /// The rows whose column `column` holds one of `keys` (the stream's
    /// key column of a batch), in the table's schema: from the cache, the
    /// keys it lacks read in one round trip.
    pub async fn rows_for(&self, column: usize, keys: &ArrayRef) -> Result<RecordBatch> {
        let pg_type = self.key_type(column)?;
        let wanted = distinct_text(keys)?;
        let now = Instant::now();
        let (mut found, missing) = self.cached(column, &wanted, now);
        if !missing.is_empty() {
            let read = self.read(column, pg_type, &missing).await?;
            let mut by_key: HashMap<String, Vec<Vec<Option<String>>>> = HashMap::new();
            for (key, row) in read {
                by_key.entry(key).or_default().push(row);
            }
            let mut cache = self.cache.lock();
            for key in missing {
                let rows = Arc::new(by_key.remove(&key).unwrap_or_default());
                found.push(Arc::clone(&rows));
                remember(&mut cache, (column, key), rows, now, self.max_keys);
            }
        }
        self.batch(found)
    }

    /// The cached rows of `wanted` keys still fresh at `now`, and the keys
    /// to read.
    fn cached(
        &self,
        column: usize,
        wanted: &HashSet<String>,
        now: Instant,
    ) -> (Vec<KeyRows>, Vec<String>) {
        let cache = self.cache.lock();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for key in wanted {
            match cache.get(column, key) {
                Some(entry) if now.duration_since(entry.read_at) < self.ttl => {
                    found.push(Arc::clone(&entry.rows));
                }
                _ => missing.push(key.clone()),
            }
        }
        (found, missing)
    }

    /// Reads the rows of `keys` in one statement: `(key, row)` pairs, as
    /// text. A lost connection is reconnected, with a backoff.
    async fn read(
        &self,
        column: usize,
        pg_type: &str,
        keys: &[String],
    ) -> Result<Vec<(String, Vec<Option<String>>)>> {
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}::text", quote_identifier(f.name())))
            .collect();
        let key_name = quote_identifier(self.schema.field(column).name());
        let sql = format!(
            "SELECT {key_name}::text, {} FROM {} WHERE {key_name} = ANY($1::text[]::{pg_type}[])",
            columns.join(", "),
            self.table.quoted
        );
        let mut backoff = Backoff::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.query(&sql, keys).await {
                Ok(rows) => return Ok(rows),
                Err(error) => error,
            };
            if attempt >= ATTEMPTS || !error.lost_connection {
                return Err(BrookError::external(
                    format!(
                        "table '{}': looking up {} keys in {}",
                        self.name,
                        keys.len(),
                        server(&self.config)
                    ),
                    error.message,
                ));
            }
            *self.client.lock().await = None;
            backoff.wait().await;
        }
    }

    /// One attempt of [`PostgresLookup::read`].
    async fn query(
        &self,
        sql: &str,
        keys: &[String],
    ) -> std::result::Result<Vec<(String, Vec<Option<String>>)>, QueryError> {
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(Client::is_closed) {
            let (connected, connection) =
                self.config.connect(NoTls).await.map_err(QueryError::lost)?;
            tokio::spawn(async move {
                // Ends when the connection does; errors show on the next query.
                let _ = connection.await;
            });
            *client = Some(connected);
        }
        let Some(connected) = client.as_ref() else {
            return Err(QueryError::lost("no connection"));
        };
        let rows = connected
            .query(sql, &[&keys])
            .await
            .map_err(|err| QueryError {
                lost_connection: err.is_closed() || connected.is_closed(),
                message: crate::error::error_chain(&err),
            })?;
        Ok(rows
            .iter()
            .map(|row| {
                let key: Option<String> = row.get(0);
                let values = (1..row.len())
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect();
                (key.unwrap_or_default(), values)
            })
            .collect())
    }

    /// `rows` (text) as a batch of the table's schema; a value that does
    /// not fit its column is an error naming it.
    fn batch(&self, found: Vec<KeyRows>) -> Result<RecordBatch> {
        let rows: Vec<&Vec<Option<String>>> = found.iter().flat_map(|rows| rows.iter()).collect();
        let options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let text: ArrayRef = Arc::new(StringArray::from_iter(
                    rows.iter().map(|row| row[index].as_deref()),
                ));
                cast_with_options(&text, field.data_type(), &options).map_err(|err| {
                    BrookError::invalid(format!(
                        "table '{}': column '{}' of {} holds a value that is not {}: {err}",
                        self.name,
                        field.name(),
                        self.table.display,
                        field.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

/// Why one attempt to read failed.
struct QueryError {
    lost_connection: bool,
    message: String,
}

impl QueryError {
    fn lost(err: impl std::fmt::Display) -> Self {
        Self {
            lost_connection: true,
            message: err.to_string(),
        }
    }
}

/// Keeps `rows` for `key`, freeing the oldest keys past `max_keys`.
fn remember(cache: &mut Cache, key: (usize, String), rows: KeyRows, now: Instant, max_keys: usize) {
    cache.order.push_back((key.clone(), now));
    let (column, key) = key;
    let entry = Entry { read_at: now, rows };
    if cache
        .entries
        .entry(column)
        .or_default()
        .insert(key, entry)
        .is_none()
    {
        cache.len += 1;
    }
    while cache.len > max_keys {
        let Some(((column, oldest), read_at)) = cache.order.pop_front() else {
            break;
        };
        // A key read again since is newer than this place in the order.
        if let Some(keys) = cache.entries.get_mut(&column)
            && keys.get(&oldest).is_some_and(|e| e.read_at == read_at)
        {
            keys.remove(&oldest);
            cache.len -= 1;
        }
    }
    // Places of keys read again pile up: drop them once they outnumber
    // the keys.
    if cache.order.len() > 2 * max_keys.max(cache.len) {
        let entries = &cache.entries;
        cache.order.retain(|((column, key), at)| {
            entries
                .get(column)
                .and_then(|keys| keys.get(key))
                .is_some_and(|e| e.read_at == *at)
        });
    }
}

/// The distinct non-null values of `keys`, as text.
fn distinct_text(keys: &ArrayRef) -> Result<HashSet<String>> {
    let text = datafusion::arrow::compute::cast(keys, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| BrookError::Internal("a key cast to text is not text".into()))?;
    Ok(text.iter().flatten().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_bound_of_keys_freeing_the_oldest_first() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let rows = |v: &str| Arc::new(vec![vec![Some(v.to_string())]]);
        for key in ["1", "2", "3"] {
            remember(&mut cache, (0, key.to_string()), rows(key), now, 2);
        }
        assert_eq!(cache.len, 2);
        assert!(cache.get(0, "1").is_none());
        assert!(cache.get(0, "2").is_some() && cache.get(0, "3").is_some());
        // Read again, 2 is now newer than 3: 3 goes next.
        let later = now + Duration::from_millis(1);
        remember(&mut cache, (0, "2".to_string()), rows("2"), later, 2);
        remember(&mut cache, (1, "2".to_string()), rows("x"), later, 2);
        assert_eq!(cache.len, 2);
        assert!(cache.get(0, "3").is_none());
        assert!(cache.get(0, "2").is_some() && cache.get(1, "2").is_some());
    }
}
