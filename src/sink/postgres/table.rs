//! The sink's tables as it connects: the progress table created if
//! missing, the target table's columns read (the table created from the
//! query's columns with `create_table`), and the query's columns matched
//! against them.

use datafusion::arrow::datatypes::Schema;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::copy::CopyColumn;
use super::options::quote_identifier;
use super::types::{created_type, encoding_for};
use super::{PostgresSinkOptions, UpsertMode, external, quoted_list};
use crate::error::{BrookError, Result};

/// A table column, as `pg_attribute` describes it.
pub(super) struct TableColumn {
    name: String,
    type_oid: u32,
    type_name: String,
    not_null: bool,
    has_default: bool,
}

/// Creates the progress table unless it exists.
pub(super) async fn create_progress_table(
    client: &Client,
    name: &str,
    options: &PostgresSinkOptions,
) -> Result<()> {
    let progress = &options.progress_table.quoted;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {progress} (\
             sink text NOT NULL, batch bigint NOT NULL, rows bigint NOT NULL, \
             written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sink, batch))"
        ))
        .await
        .or_else(|err| match err.code() {
            // Another sink created it at the same moment.
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => Ok(()),
            _ => Err(err),
        })
        .map_err(|err| {
            external(
                format!(
                    "sink '{name}': cannot create the progress table {}",
                    options.progress_table.display
                ),
                &err,
            )
        })
}

/// The sink's table's columns; with `create_table`, the table is created
/// from the query's columns (`schema`) first if it does not exist.
pub(super) async fn existing_table(
    client: &Client,
    name: &str,
    options: &PostgresSinkOptions,
    schema: &Schema,
) -> Result<Vec<TableColumn>> {
    let unreadable = |err: tokio_postgres::Error| {
        let server = options.server();
        external(
            format!("sink '{name}': cannot read the table's columns from {server}"),
            &err,
        )
    };
    let mut table = table_columns(client, options).await.map_err(unreadable)?;
    if table.is_none() && options.create_table {
        create_table(client, name, options, schema).await?;
        table = table_columns(client, options).await.map_err(unreadable)?;
    }
    table.ok_or_else(|| {
        BrookError::invalid(format!(
            "sink '{name}': table {} does not exist in {} (create it, or give create_table = 'true')",
            options.table.display,
            options.server()
        ))
    })
}

/// The table's columns in order, or `None` if it does not exist.
async fn table_columns(
    client: &Client,
    options: &PostgresSinkOptions,
) -> std::result::Result<Option<Vec<TableColumn>>, tokio_postgres::Error> {
    let table = &options.table.quoted;
    let exists: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[table])
        .await?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod), \
             a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' \
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[table],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|row| TableColumn {
                name: row.get(0),
                type_oid: row.get(1),
                type_name: row.get(2),
                not_null: row.get(3),
                has_default: row.get(4),
            })
            .collect(),
    ))
}

/// `CREATE TABLE IF NOT EXISTS` with the query's columns; an upsert's key
/// is the primary key.
async fn create_table(
    client: &Client,
    name: &str,
    options: &PostgresSinkOptions,
    schema: &Schema,
) -> Result<()> {
    let mut definitions = Vec::with_capacity(schema.fields().len() + 1);
    for field in schema.fields() {
        let Some(pg_type) = created_type(field.data_type()) else {
            return Err(BrookError::invalid(format!(
                "sink '{name}': column '{}' is {}, which brook cannot write to PostgreSQL",
                field.name(),
                field.data_type()
            )));
        };
        definitions.push(format!("{} {pg_type}", quote_identifier(field.name())));
    }
    if options.mode == UpsertMode::Upsert {
        check_key(name, options, schema)?;
        definitions.push(format!("PRIMARY KEY ({})", quoted_list(&options.key)));
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            options.table.quoted,
            definitions.join(", ")
        ))
        .await
        .map_err(|err| {
            external(
                format!(
                    "sink '{name}': cannot create table {} in {}",
                    options.table.display,
                    options.server()
                ),
                &err,
            )
        })
}

fn check_key(name: &str, options: &PostgresSinkOptions, schema: &Schema) -> Result<()> {
    for key in &options.key {
        if schema.field_with_name(key).is_err() {
            return Err(BrookError::invalid(format!(
                "sink '{name}': key column '{key}' is not a column of the query (its columns: {})",
                column_names(schema)
            )));
        }
    }
    Ok(())
}

fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each query column with the table column it fills; refuses a column the
/// table lacks or whose type it cannot take, and a required table column
/// the query does not give.
pub(super) fn match_columns(
    name: &str,
    options: &PostgresSinkOptions,
    schema: &Schema,
    table: &[TableColumn],
) -> Result<Vec<CopyColumn>> {
    let refuse = |message: String| {
        BrookError::invalid(format!(
            "sink '{name}': table {} does not fit the query: {message}",
            options.table.display
        ))
    };
    if options.mode == UpsertMode::Upsert {
        check_key(name, options, schema)?;
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let Some(column) = table.iter().find(|c| &c.name == field.name()) else {
            let names: Vec<&str> = table.iter().map(|c| c.name.as_str()).collect();
            return Err(refuse(format!(
                "it has no column '{}' (the query's column of type {}; its columns: {})",
                field.name(),
                field.data_type(),
                names.join(", ")
            )));
        };
        let Some(encoding) = encoding_for(field.data_type(), column.type_oid) else {
            return Err(refuse(format!(
                "column '{}' is {}, which cannot hold the query's {} values{}",
                column.name,
                column.type_name,
                field.data_type(),
                created_type(field.data_type())
                    .map(|t| format!(" (a {t} column can)"))
                    .unwrap_or_default()
            )));
        };
        columns.push(CopyColumn {
            index,
            name: field.name().clone(),
            encoding,
            type_name: column.type_name.clone(),
        });
    }
    if let Some(required) = table
        .iter()
        .find(|c| c.not_null && !c.has_default && schema.field_with_name(&c.name).is_err())
    {
        return Err(refuse(format!(
            "column '{}' is NOT NULL without a default, and the query has no such column",
            required.name
        )));
    }
    Ok(columns)
}
