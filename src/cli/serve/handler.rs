//! What a client's statements do: pgwire's query handlers over one shared
//! [`StreamContext`]. The simple protocol runs a string of statements as
//! the shell runs them; the extended protocol (prepared statements) plans
//! a statement to describe it and runs it with its parameters written in
//! as SQL literals. `BEGIN` / `COMMIT` / `ROLLBACK` are accepted (brook has
//! no transactions: each statement takes effect at once).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{Sink, stream};
use parking_lot::Mutex;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::encode::{fields, rows};
use super::errors::{error_info, user_error};
use super::{catalog, params, subscribe};
use crate::cli::session::Session;
use crate::context::{SqlOutput, StreamContext};
use crate::sql::{BrookStatement, ParsedStatement, parse_sql};

/// The state one connection keeps between statements.
#[derive(Default)]
pub(super) struct ConnectionState {
    /// `SET statement_timeout`.
    statement_timeout: Mutex<Option<Duration>>,
}

/// The query handlers every connection shares.
pub(super) struct Queries {
    pub(super) ctx: StreamContext,
    /// Whether clients may read and write server files (`COPY ... TO`,
    /// `CREATE EXTERNAL TABLE`).
    pub(super) allow_files: bool,
    pub(super) parser: Arc<SqlText>,
}

/// Statements of the extended protocol are kept as their text.
pub(super) struct SqlText;

#[async_trait]
impl QueryParser for SqlText {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = sql.trim().trim_end_matches(';').trim();
        Ok((!sql.is_empty()).then(|| sql.to_string()))
    }

    fn get_parameter_types(&self, statement: &String) -> PgWireResult<Vec<Type>> {
        Ok(vec![Type::TEXT; params::count(statement)])
    }

    fn get_result_schema(
        &self,
        _statement: &String,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

/// What a statement's first word makes it, for what brook answers itself.
enum Special {
    Begin,
    Commit,
    Rollback,
    Subscribe,
    /// A PostgreSQL session setting drivers set as they connect
    /// (`extra_float_digits`, `application_name`, ...): accepted, and
    /// without effect in brook.
    ClientSetting,
}

/// Settings PostgreSQL drivers set on their own; brook accepts them.
const CLIENT_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "lc_messages",
];

fn special(sql: &str) -> Option<Special> {
    let mut words = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == '=')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase);
    let first = words.next().unwrap_or_default();
    if first == "set" {
        let name = words.find(|w| w != "session" && w != "local")?;
        return CLIENT_SETTINGS
            .contains(&name.as_str())
            .then_some(Special::ClientSetting);
    }
    match first.as_str() {
        "begin" | "start" => Some(Special::Begin),
        "commit" | "end" => Some(Special::Commit),
        "rollback" | "abort" => Some(Special::Rollback),
        "subscribe" => Some(Special::Subscribe),
        _ => None,
    }
}

fn transaction(special: &Special) -> Option<Response> {
    match special {
        Special::Begin => Some(Response::TransactionStart(Tag::new("BEGIN"))),
        Special::Commit => Some(Response::TransactionEnd(Tag::new("COMMIT"))),
        Special::Rollback => Some(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        Special::ClientSetting => Some(Response::Execution(Tag::new("SET"))),
        Special::Subscribe => None,
    }
}

impl Queries {
    /// Runs one parsed statement with the connection's settings; its rows
    /// in `format(i)` per column.
    pub(super) async fn run<C: ClientInfo>(
        &self,
        client: &C,
        statement: &ParsedStatement,
        format: impl Fn(usize) -> FieldFormat,
    ) -> PgWireResult<Response> {
        if !self.allow_files
            && let Some(refused) = refuses_files(statement)
        {
            return Err(user_error("42501", refused));
        }
        let state = client
            .session_extensions()
            .get_or_insert_with(ConnectionState::default);
        let timeout = *state.statement_timeout.lock();
        let mut session = Session::with_timeout(self.ctx.clone(), timeout);
        let output = session
            .execute(statement, std::future::pending())
            .await
            .map_err(|err| PgWireError::UserError(Box::new(error_info(&err))))?;
        *state.statement_timeout.lock() = session.statement_timeout();
        match output {
            SqlOutput::Done => Ok(Response::Execution(Tag::new(&command_tag(statement)))),
            SqlOutput::Rows { schema, batches } => {
                let fields = fields(&schema, format);
                let rows = rows(&batches, &fields)?;
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(rows.into_iter().map(Ok)),
                )))
            }
            SqlOutput::Query(query) => {
                drop(query);
                Err(user_error(
                    "0A000",
                    "a continuous query never ends over a connection: use SUBSCRIBE (SELECT ...) to receive each batch's rows, or CREATE MATERIALIZED VIEW v AS SELECT ... and SELECT from v".to_string(),
                ))
            }
        }
    }

    /// The columns a statement's result has, for Describe: planned by
    /// DataFusion (a one-off SELECT, a view), or run when it is brook's
    /// own listing (`SHOW STREAMS`); none for other statements.
    async fn describe(
        &self,
        sql: &str,
    ) -> (Vec<Type>, Option<datafusion::arrow::datatypes::SchemaRef>) {
        let count = params::count(sql);
        if let Ok(plan) = self.ctx.session().state().create_logical_plan(sql).await {
            let types = params::types(&plan, count);
            let schema: datafusion::arrow::datatypes::Schema = plan.schema().as_arrow().clone();
            let schema = (!schema.fields().is_empty() && !is_dml(sql)).then(|| Arc::new(schema));
            return (types, schema);
        }
        let lower = sql.to_ascii_lowercase();
        if (lower.starts_with("show streams") || lower.starts_with("show queries"))
            && let Ok(SqlOutput::Rows { schema, .. }) = self.ctx.sql(sql).await
        {
            return (Vec::new(), Some(schema));
        }
        (vec![Type::TEXT; count], None)
    }
}

fn is_dml(sql: &str) -> bool {
    let lower = sql.trim_start().to_ascii_lowercase();
    [
        "insert", "create", "drop", "set", "copy", "delete", "update",
    ]
    .iter()
    .any(|word| lower.starts_with(word))
}

/// The tag psql prints after a statement without rows: its leading
/// keywords (`CREATE STREAM`, `INSERT 0 3`, `SET`).
fn command_tag(statement: &ParsedStatement) -> String {
    let words: Vec<String> = statement
        .sql
        .split_whitespace()
        .take(3)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    match words.first().map(String::as_str) {
        Some("INSERT") => format!("INSERT 0 {}", values_rows(statement)),
        Some("CREATE" | "DROP") => {
            let kind = words.iter().skip(1).take_while(|w| {
                matches!(
                    w.as_str(),
                    "STREAM" | "SINK" | "TABLE" | "MATERIALIZED" | "VIEW" | "EXTERNAL"
                )
            });
            std::iter::once(words[0].clone())
                .chain(kind.cloned())
                .collect::<Vec<_>>()
                .join(" ")
        }
        Some(first) => first.to_string(),
        None => String::new(),
    }
}

/// The rows of an `INSERT ... VALUES` (0 when they come from a query).
fn values_rows(statement: &ParsedStatement) -> usize {
    use datafusion::sql::parser::Statement as DataFusionStatement;
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
    let BrookStatement::DataFusion(statement) = &statement.statement else {
        return 0;
    };
    let DataFusionStatement::Statement(statement) = statement.as_ref() else {
        return 0;
    };
    let Statement::Insert(insert) = statement.as_ref() else {
        return 0;
    };
    match insert.source.as_ref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(values)) => values.rows.len(),
        _ => 0,
    }
}

/// Why `statement` is refused to a network client: it reads or writes the
/// server's files.
fn refuses_files(statement: &ParsedStatement) -> Option<String> {
    use datafusion::sql::parser::Statement as DataFusionStatement;
    let BrookStatement::DataFusion(statement) = &statement.statement else {
        return None;
    };
    match statement.as_ref() {
        DataFusionStatement::CopyTo(_) => Some("COPY ... TO writes a file on the server; brook serve refuses it to clients unless started with --pg-allow-files".to_string()),
        DataFusionStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE reads files on the server; brook serve refuses it to clients unless started with --pg-allow-files".to_string()),
        _ => None,
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let texts = params::statements(query);
        if texts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(texts.len());
        for text in texts {
            match self.simple_statement(client, text).await {
                Ok(mut more) => responses.append(&mut more),
                Err(PgWireError::UserError(info)) => {
                    // As PostgreSQL: the statements after a failed one do
                    // not run.
                    responses.push(Response::Error(info));
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(responses)
    }
}

impl Queries {
    /// One statement of a simple query's string.
    async fn simple_statement<C>(&self, client: &mut C, text: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(special) = special(text) {
            if let Some(response) = transaction(&special) {
                return Ok(vec![response]);
            }
            return subscribe::run(&self.ctx, client, text).await;
        }
        if let Some((schema, batches)) = catalog::answer(&self.ctx, text) {
            let fields = fields(&schema, |_| FieldFormat::Text);
            let rows = rows(&batches, &fields)?;
            return Ok(vec![Response::Query(QueryResponse::new(
                fields,
                stream::iter(rows.into_iter().map(Ok)),
            ))]);
        }
        let statements =
            parse_sql(text).map_err(|err| PgWireError::UserError(Box::new(error_info(&err))))?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            responses.push(self.run(client, statement, |_| FieldFormat::Text).await?);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = String;
    type QueryParser = SqlText;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (inferred, schema) = self.describe(&target.statement).await;
        let parameters = params::declared_or(&target.parameter_types, &inferred);
        let fields = schema
            .map(|schema| fields(&schema, |_| FieldFormat::Text).as_ref().clone())
            .unwrap_or_default();
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, schema) = self.describe(&target.statement.statement).await;
        let format = &target.result_column_format;
        let fields = schema
            .map(|schema| fields(&schema, |i| format.format_for(i)).as_ref().clone())
            .unwrap_or_default();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (inferred, _) = self.describe(&portal.statement.statement).await;
        let types = params::declared_or(&portal.statement.parameter_types, &inferred);
        let sql = params::bind(portal, &types)?;
        if let Some(special) = special(&sql) {
            return transaction(&special).ok_or_else(|| {
                user_error(
                    "0A000",
                    "SUBSCRIBE runs over the simple query protocol (psql, or a driver's simple_query)".to_string(),
                )
            });
        }
        let mut statements =
            parse_sql(&sql).map_err(|err| PgWireError::UserError(Box::new(error_info(&err))))?;
        if statements.len() != 1 {
            return Err(user_error(
                "42601",
                "a prepared statement holds exactly one statement".to_string(),
            ));
        }
        let statement = statements.remove(0);
        let format = portal.result_column_format.clone();
        self.run(client, &statement, |i| format.format_for(i)).await
    }
}
