//! The user's entry point: [`StreamContext`] holds the batch interval, the
//! registered streams and DataFusion's session, and runs SQL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array, new_null_array};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DataFusionStatement;
use datafusion::sql::sqlparser::ast::{Insert, Statement as SqlStatement, TableObject};

use crate::batcher::Batcher;
use crate::error::{BrookError, Result, SqlLocation, WarningHandler};
use crate::query::{
    BoundScan, ContinuousQuery, PlanVariant, PreparedQuery, QueryBindings, QueryPlan, StreamTable,
    index_scans,
};
use crate::running::{QueryInfo, QueryRegistry, lock};
use crate::sink::{FileSink, FileSinkOptions};
use crate::source::{
    Connector, QueueHandle, QueueOptions, QueueSource, SocketOptions, SocketSource, Source,
    StreamLimits,
};
use crate::sql::{
    BrookStatement, CreateSink, CreateStream, ParsedStatement, datafusion_sql_error, parse_sql,
};
use crate::stream::LiveStream;
use crate::window::exec::WindowedQuery;
use crate::window::{StreamMap, WindowKind};

/// Batches of at least this many rows run on a plan over all cores; smaller
/// ones on one partition, where repartitioning costs more than it saves.
const PARALLEL_BATCH_ROWS: usize = 50_000;

/// What running one statement produced.
#[derive(Debug)]
pub enum SqlOutput {
    /// The statement was carried out and has nothing to show
    /// (`CREATE STREAM`, `INSERT`, `SET`, ...).
    Done,
    /// A one-off result: a query over static tables only, `SHOW STREAMS`,
    /// `EXPLAIN`, ...
    Rows {
        /// The result's schema.
        schema: SchemaRef,
        /// The result's rows.
        batches: Vec<RecordBatch>,
    },
    /// A continuous query over one or more streams, now running.
    Query(ContinuousQuery),
}

/// A registered stream, as `SHOW STREAMS` and `\\d NAME` show it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// `queue` or `socket`.
    pub connector: String,
    /// The stream's columns.
    pub schema: SchemaRef,
    /// The connector's options as a user would write them.
    pub options: String,
    /// `idle` (no query reads it), `running` or `closed`.
    pub state: String,
    /// Rows received since the stream started.
    pub rows_received: u64,
    /// Rows dropped (malformed, too long, cut off), each reported.
    pub rows_dropped: u64,
    /// Rows received and not yet cut into a batch.
    pub rows_pending: u64,
    /// The most rows waiting for a batch at any time.
    pub peak_pending_rows: u64,
    /// The most bytes of Arrow memory waiting for a batch at any time.
    pub peak_pending_bytes: u64,
}

impl StreamInfo {
    /// The columns as `name type, ...`.
    pub fn columns(&self) -> String {
        self.schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The schema of a text stream: one column `line TEXT` (Arrow `Utf8View`,
/// as DataFusion maps `TEXT`).
pub fn line_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "line",
        DataType::Utf8View,
        true,
    )]))
}

/// Streams, static tables and the trigger clock; runs SQL against them.
///
/// Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct StreamContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    session: SessionContext,
    streams: StreamMap,
    /// Whether window queries use partial aggregates when they can.
    incremental_windows: AtomicBool,
    /// Whether a query stops after a batch it cannot execute.
    stop_on_query_error: AtomicBool,
    batcher: Arc<Batcher>,
    next_query_id: AtomicU64,
    warn: WarningHandler,
    queries: QueryRegistry,
    /// Background queries writing to sinks, by sink name.
    sinks: Arc<Mutex<BTreeMap<String, SinkTask>>>,
}

/// A sink's running query.
struct SinkTask {
    query_id: u64,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext")
            .field("batch_interval", &self.batch_interval())
            .field("streams", &self.stream_names())
            .finish()
    }
}

impl Default for StreamContext {
    /// A context with a batch interval of one second.
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}

impl StreamContext {
    /// A context whose clock cuts a batch every `batch_interval`. Problems
    /// that do not stop a query (skipped rows, lost connections) are printed
    /// to stderr; see [`StreamContext::with_warning_handler`].
    pub fn new(batch_interval: Duration) -> Self {
        Self::with_warning_handler(
            batch_interval,
            Arc::new(|warning: &BrookError| eprintln!("brook: warning: {warning}")),
        )
    }

    /// Like [`StreamContext::new`], sending warnings to `warn`.
    pub fn with_warning_handler(batch_interval: Duration, warn: WarningHandler) -> Self {
        // One partition: micro-batches are small, and repartitioning them
        // costs more than it saves (see BUILD.md's measurements).
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(true);
        // Spans let planning errors ("no field named x") point at the column.
        config.options_mut().sql_parser.collect_spans = true;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        for rule in crate::exec::optimizer_rules() {
            state = state.with_physical_optimizer_rule(rule);
        }
        let state = state.build();
        let session = SessionContext::new_with_state(state);
        for function in crate::functions::all() {
            session.register_udf(function);
        }
        let streams: StreamMap = Arc::new(RwLock::new(BTreeMap::new()));
        let batcher = Batcher::new(batch_interval);
        for (name, function) in crate::window::table_functions(&streams, &batcher) {
            // DataFusion looks table functions up by the name as written.
            let capitalized = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            for spelling in [name.to_string(), name.to_uppercase(), capitalized] {
                session.register_udtf(&spelling, Arc::clone(&function));
            }
        }
        Self {
            inner: Arc::new(ContextInner {
                session,
                streams,
                incremental_windows: AtomicBool::new(true),
                stop_on_query_error: AtomicBool::new(false),
                batcher,
                next_query_id: AtomicU64::new(1),
                warn,
                queries: QueryRegistry::default(),
                sinks: Arc::new(Mutex::new(BTreeMap::new())),
            }),
        }
    }

    /// The interval at which batches are cut.
    pub fn batch_interval(&self) -> Duration {
        self.inner.batcher.batch_interval()
    }

    /// Changes the batch interval; running queries see it from the next tick.
    pub fn set_batch_interval(&self, batch_interval: Duration) -> Result<()> {
        if batch_interval.is_zero() {
            return Err(BrookError::invalid(
                "batch_interval must be greater than zero",
            ));
        }
        self.inner.batcher.set_batch_interval(batch_interval);
        Ok(())
    }

    /// Whether window and running aggregate queries started from now on
    /// merge per-batch partial aggregates when their plan allows (the
    /// default), or re-run the query over the window's raw batches.
    /// Running aggregates are always incremental.
    pub fn set_incremental_windows(&self, on: bool) {
        self.inner.incremental_windows.store(on, Ordering::Relaxed);
    }

    /// Whether queries started from now on stop after a batch they cannot
    /// execute (`true`), or report it and go on with the next batch
    /// (`false`, the default). `SET on_query_error = 'stop' | 'continue'`.
    pub fn set_stop_on_query_error(&self, stop: bool) {
        self.inner
            .stop_on_query_error
            .store(stop, Ordering::Relaxed);
    }

    /// DataFusion's session, for registering static tables and functions.
    pub fn session(&self) -> &SessionContext {
        &self.inner.session
    }

    /// Registers a queue stream (Spark's `queueStream`) and returns the
    /// handle that feeds it.
    pub fn register_queue(
        &self,
        name: &str,
        schema: SchemaRef,
        options: QueueOptions,
    ) -> Result<QueueHandle> {
        if schema.fields().is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{name}': declare at least one column"
            )));
        }
        let limits = options.limits;
        let stream = self.register_stream(
            name,
            Arc::clone(&schema),
            Arc::new(QueueSource { options }),
            limits,
        )?;
        Ok(QueueHandle {
            stream: name.to_string(),
            schema,
            inbox: Arc::clone(&stream.inbox),
        })
    }

    /// Registers a socket stream (Spark's `socketTextStream`): brook connects
    /// to `address` (`host:port`) when the first query reads the stream.
    /// For text lines use [`line_schema`].
    pub fn register_socket(
        &self,
        name: &str,
        address: &str,
        schema: SchemaRef,
        options: SocketOptions,
    ) -> Result<()> {
        let limits = options.limits;
        let source = SocketSource::try_new(
            name.to_string(),
            address.to_string(),
            options,
            Arc::clone(&schema),
            Arc::clone(&self.inner.warn),
        )?;
        self.register_stream(name, schema, Arc::new(source), limits)?;
        Ok(())
    }

    fn register_stream(
        &self,
        name: &str,
        schema: SchemaRef,
        source: Arc<dyn Source>,
        limits: StreamLimits,
    ) -> Result<Arc<LiveStream>> {
        let mut streams = self
            .inner
            .streams
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if streams.contains_key(name) {
            return Err(BrookError::invalid(format!(
                "stream '{name}' already exists"
            )));
        }
        if self.inner.session.table_exist(name)? {
            return Err(BrookError::invalid(format!(
                "a table named '{name}' already exists"
            )));
        }
        let stream = Arc::new(LiveStream::new(
            name.to_string(),
            Arc::clone(&schema),
            source,
            limits,
        ));
        self.inner.session.register_table(
            name,
            Arc::new(StreamTable {
                name: name.to_string(),
                schema,
                window: None,
            }),
        )?;
        streams.insert(name.to_string(), Arc::clone(&stream));
        Ok(stream)
    }

    fn stream(&self, name: &str) -> Option<Arc<LiveStream>> {
        self.inner
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names of the registered streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        self.inner
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The handle of queue stream `name`, if there is one.
    pub fn queue(&self, name: &str) -> Option<QueueHandle> {
        let stream = self.stream(name)?;
        (stream.source.connector() == "queue").then(|| QueueHandle {
            stream: stream.name.clone(),
            schema: Arc::clone(&stream.schema),
            inbox: Arc::clone(&stream.inbox),
        })
    }

    /// Removes stream `name`. Fails while a query reads it.
    pub fn deregister_stream(&self, name: &str) -> Result<()> {
        let readers = self.inner.batcher.readers_of(name);
        if !readers.is_empty() {
            let ids: Vec<String> = readers.iter().map(u64::to_string).collect();
            return Err(BrookError::invalid(format!(
                "stream '{name}' is read by running query {}; stop it first",
                ids.join(", ")
            )));
        }
        let removed = self
            .inner
            .streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        match removed {
            Some(_) => {
                self.inner.session.deregister_table(name)?;
                Ok(())
            }
            None => Err(BrookError::invalid(format!(
                "stream '{name}' does not exist"
            ))),
        }
    }

    /// Runs one SQL statement (a trailing `;` is fine). Errors name the line
    /// and column in `sql`.
    pub async fn sql(&self, sql: &str) -> Result<SqlOutput> {
        let mut statements = parse_sql(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.execute(&statement).await,
            (None, _) => Err(BrookError::Sql {
                message: "no statement to run".into(),
                location: None,
            }),
            (Some(_), false) => Err(BrookError::Sql {
                message: "sql() runs one statement; split the script with brook::sql::parse_sql and execute each".into(),
                location: None,
            }),
        }
    }

    /// Runs one statement parsed by [`crate::sql::parse_sql`].
    pub async fn execute(&self, statement: &ParsedStatement) -> Result<SqlOutput> {
        let located = |err: BrookError| match err {
            BrookError::Invalid(message) => BrookError::Sql {
                message,
                location: Some(statement.location),
            },
            other => other,
        };
        match &statement.statement {
            BrookStatement::CreateStream(create) => self.create_stream(create).map_err(located),
            BrookStatement::DropStream { name, if_exists } => match self.stream(name) {
                None if *if_exists => Ok(SqlOutput::Done),
                _ => self
                    .deregister_stream(name)
                    .map(|()| SqlOutput::Done)
                    .map_err(located),
            },
            BrookStatement::ShowStreams => self.show_streams(),
            BrookStatement::ShowQueries => self.show_queries(),
            BrookStatement::StopQuery(id) => self
                .stop_query(*id)
                .await
                .map(|()| SqlOutput::Done)
                .map_err(located),
            BrookStatement::CreateSink(create) => {
                self.create_sink(create, statement).await.map_err(located)
            }
            BrookStatement::DropSink { name, if_exists } => match self.drop_sink(name).await {
                Ok(()) => Ok(SqlOutput::Done),
                Err(_) if *if_exists => Ok(SqlOutput::Done),
                Err(err) => Err(located(err)),
            },
            BrookStatement::SetStopOnQueryError(stop) => {
                self.set_stop_on_query_error(*stop);
                Ok(SqlOutput::Done)
            }
            BrookStatement::SetIncrementalWindows(on) => {
                self.set_incremental_windows(*on);
                Ok(SqlOutput::Done)
            }
            BrookStatement::SetBatchInterval(interval) => self
                .set_batch_interval(*interval)
                .map(|()| SqlOutput::Done)
                .map_err(located),
            BrookStatement::DataFusion(df_statement) => self
                .execute_datafusion(df_statement, &statement.sql, statement.location)
                .await
                .map_err(located),
        }
    }

    fn create_stream(&self, create: &CreateStream) -> Result<SqlOutput> {
        if create.if_not_exists && self.stream(&create.name).is_some() {
            return Ok(SqlOutput::Done);
        }
        let connector = Connector::from_options(&create.name, &create.options)?;
        let schema = Arc::new(Schema::new(create.columns.clone()));
        match connector {
            Connector::Queue(options) => {
                if create.columns.is_empty() {
                    return Err(BrookError::invalid(format!(
                        "stream '{}': a queue stream needs a column list, e.g. CREATE STREAM {} (line TEXT) WITH (connector = 'queue')",
                        create.name, create.name
                    )));
                }
                self.register_queue(&create.name, schema, options)?;
            }
            Connector::Socket { address, options } => {
                let schema = if create.columns.is_empty() {
                    line_schema()
                } else {
                    schema
                };
                self.register_socket(&create.name, &address, schema, options)?;
            }
        }
        Ok(SqlOutput::Done)
    }

    /// The running continuous queries, by id.
    pub fn running_queries(&self) -> Vec<QueryInfo> {
        self.inner.queries.all().iter().map(|q| q.info()).collect()
    }

    /// Stops running query `id` after its batch in progress. A sink's query
    /// stops its sink; this returns once the sink's files are closed.
    pub async fn stop_query(&self, id: u64) -> Result<()> {
        let Some(entry) = self.inner.queries.get(id) else {
            return Err(BrookError::invalid(format!(
                "there is no running query {id} (SHOW QUERIES lists them)"
            )));
        };
        entry.stop();
        let sink = lock(&self.inner.sinks)
            .iter()
            .find(|(_, sink)| sink.query_id == id)
            .map(|(name, _)| name.clone());
        if let Some(name) = sink {
            self.drop_sink(&name).await?;
        }
        Ok(())
    }

    /// Runs what every running query's streams received so far through one
    /// last batch and ends the queries (a graceful shutdown).
    pub fn finish_queries(&self) {
        for entry in self.inner.queries.all() {
            entry.finish();
        }
    }

    /// Waits until every sink's query has ended and its files are closed.
    pub async fn wait_for_sinks(&self) {
        loop {
            let next = lock(&self.inner.sinks).pop_first();
            let Some((_, sink)) = next else {
                return;
            };
            let _ = sink.task.await;
        }
    }

    /// Names of the sinks whose queries run.
    pub fn sink_names(&self) -> Vec<String> {
        lock(&self.inner.sinks).keys().cloned().collect()
    }

    async fn create_sink(
        &self,
        create: &CreateSink,
        statement: &ParsedStatement,
    ) -> Result<SqlOutput> {
        if lock(&self.inner.sinks).contains_key(&create.name) {
            if create.if_not_exists {
                return Ok(SqlOutput::Done);
            }
            return Err(BrookError::invalid(format!(
                "sink '{}' already exists",
                create.name
            )));
        }
        let options = FileSinkOptions::from_options(&create.name, &create.options)?;
        let query = match self
            .execute_datafusion(&create.query, &statement.sql, statement.location)
            .await?
        {
            SqlOutput::Query(query) => query,
            _ => {
                return Err(BrookError::invalid(format!(
                    "sink '{}': AS needs a continuous query (a SELECT that reads a stream)",
                    create.name
                )));
            }
        };
        // Dropping the query on an error here stops it.
        let mut sink = FileSink::create(&create.name, options)?;
        query.set_output(format!("sink {}", create.name));
        let query_id = query.id();
        let name = create.name.clone();
        let warn = Arc::clone(&self.inner.warn);
        let sinks = Arc::clone(&self.inner.sinks);
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            let mut query = query;
            while let Some(output) = query.next().await {
                let written = output.and_then(|output| sink.write(&output));
                if let Err(err) = written {
                    warn(&BrookError::invalid(format!("sink '{name}': {err}")));
                }
            }
            // Gone from the list once done, unless DROP SINK took it first.
            let mut sinks = lock(&sinks);
            if sinks.get(&name).is_some_and(|s| s.query_id == query_id) {
                sinks.remove(&name);
            }
        });
        lock(&self.inner.sinks).insert(create.name.clone(), SinkTask { query_id, task });
        Ok(SqlOutput::Done)
    }

    /// Stops sink `name`'s query after its batch in progress and waits for
    /// its last file to be written.
    async fn drop_sink(&self, name: &str) -> Result<()> {
        let Some(sink) = lock(&self.inner.sinks).remove(name) else {
            return Err(BrookError::invalid(format!("sink '{name}' does not exist")));
        };
        if let Some(entry) = self.inner.queries.get(sink.query_id) {
            entry.stop();
        }
        let _ = sink.task.await;
        Ok(())
    }

    fn show_queries(&self) -> Result<SqlOutput> {
        let queries = self.running_queries();
        let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let count = |values: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(values)) };
        let millis = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("output", DataType::Utf8, false),
            Field::new("batches", DataType::UInt64, false),
            Field::new("rows_in", DataType::UInt64, false),
            Field::new("rows_out", DataType::UInt64, false),
            Field::new("last_batch_ms", DataType::Utf8, false),
            Field::new("lag_ms", DataType::Utf8, false),
            Field::new("retained_rows", DataType::UInt64, false),
            Field::new("sql", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                count(queries.iter().map(|q| q.id).collect()),
                text(queries.iter().map(|q| q.output.clone()).collect()),
                count(queries.iter().map(|q| q.stats.batches).collect()),
                count(queries.iter().map(|q| q.stats.rows_in).collect()),
                count(queries.iter().map(|q| q.stats.rows_out).collect()),
                text(queries.iter().map(|q| millis(q.stats.last_batch)).collect()),
                text(queries.iter().map(|q| millis(q.stats.lag)).collect()),
                count(
                    queries
                        .iter()
                        .map(|q| q.stats.retained.rows as u64)
                        .collect(),
                ),
                text(queries.iter().map(|q| q.sql.clone()).collect()),
            ],
        )?;
        Ok(SqlOutput::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// What `SHOW STREAMS` shows of each stream, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let streams: Vec<Arc<LiveStream>> = self
            .inner
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        streams
            .iter()
            .map(|s| StreamInfo {
                name: s.name.clone(),
                connector: s.source.connector().to_string(),
                schema: Arc::clone(&s.schema),
                options: s.source.describe(),
                state: if s.inbox.is_closed() {
                    "closed"
                } else if !self.inner.batcher.readers_of(&s.name).is_empty() {
                    "running"
                } else {
                    "idle"
                }
                .to_string(),
                rows_received: s.inbox.rows_received.load(Ordering::Relaxed),
                rows_dropped: s.inbox.rows_dropped.load(Ordering::Relaxed),
                rows_pending: s.inbox.pending_rows() as u64,
                peak_pending_rows: s.inbox.peak_pending_rows.load(Ordering::Relaxed),
                peak_pending_bytes: s.inbox.peak_pending_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn show_streams(&self) -> Result<SqlOutput> {
        let streams = self.streams();
        let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let count = |values: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(values)) };
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("connector", DataType::Utf8, false),
            Field::new("columns", DataType::Utf8, false),
            Field::new("options", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("rows_received", DataType::UInt64, false),
            Field::new("rows_dropped", DataType::UInt64, false),
            Field::new("rows_pending", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                text(streams.iter().map(|s| s.name.clone()).collect()),
                text(streams.iter().map(|s| s.connector.clone()).collect()),
                text(streams.iter().map(StreamInfo::columns).collect()),
                text(streams.iter().map(|s| s.options.clone()).collect()),
                text(streams.iter().map(|s| s.state.clone()).collect()),
                count(streams.iter().map(|s| s.rows_received).collect()),
                count(streams.iter().map(|s| s.rows_dropped).collect()),
                count(streams.iter().map(|s| s.rows_pending).collect()),
            ],
        )?;
        Ok(SqlOutput::Rows {
            schema,
            batches: vec![batch],
        })
    }

    async fn execute_datafusion(
        &self,
        statement: &DataFusionStatement,
        sql: &str,
        location: SqlLocation,
    ) -> Result<SqlOutput> {
        if let DataFusionStatement::Statement(inner) = statement
            && let SqlStatement::Insert(insert) = inner.as_ref()
            && let Some(queue) = self.insert_target(insert)
        {
            return self.insert_into_queue(insert, &queue, location).await;
        }
        let bindings = Arc::new(QueryBindings::default());
        let mut state = self.inner.session.state();
        state.config_mut().set_extension(Arc::clone(&bindings));
        let plan = state
            .statement_to_plan(statement.clone())
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            let frame = self.inner.session.execute_logical_plan(plan).await?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await?;
            return Ok(if batches.iter().all(|b| b.num_rows() == 0) {
                SqlOutput::Done
            } else {
                SqlOutput::Rows { schema, batches }
            });
        }
        let one_off = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let physical = state
            .create_physical_plan(&plan)
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        let bound = bindings.take();
        if bound.is_empty() || one_off {
            let schema = physical.schema();
            let mut batches = collect(physical, state.task_ctx()).await?;
            if let LogicalPlan::Explain(explain) = &plan
                && !bound.is_empty()
            {
                let note = self.describe_continuous(&explain.plan).await?;
                batches.insert(0, explain_row(&schema, "brook", &note)?);
            }
            return Ok(SqlOutput::Rows { schema, batches });
        }
        let mut stream_names = Vec::new();
        let query_plan = match window_of(&bound)? {
            None => {
                let mut variants = vec![PlanVariant {
                    plan: physical,
                    task_ctx: state.task_ctx(),
                    min_rows: 0,
                    scans: index_scans(&mut stream_names, bound),
                }];
                // The parallel plan is an optimisation: if it cannot be
                // planned, every batch runs on the single-partition plan.
                if let Ok(Some(parallel)) = self.plan_parallel(&plan, &mut stream_names).await {
                    variants.push(parallel);
                }
                QueryPlan::PerBatch(PreparedQuery { variants })
            }
            Some(kind) => {
                // Window queries run on one partition: one slot per scan.
                let scans = index_scans(&mut stream_names, bound)
                    .into_iter()
                    .filter_map(|(input, slots)| slots.into_iter().next().map(|s| (input, s)))
                    .collect();
                QueryPlan::Windowed(Box::new(WindowedQuery::prepare(
                    kind,
                    physical,
                    state.task_ctx(),
                    scans,
                    self.inner.incremental_windows.load(Ordering::Relaxed),
                )?))
            }
        };
        let mut streams = Vec::with_capacity(stream_names.len());
        for name in &stream_names {
            let stream = self.stream(name).ok_or_else(|| {
                BrookError::Internal(format!("stream '{name}' was planned but is not registered"))
            })?;
            stream.ensure_started().await?;
            streams.push(stream);
        }
        let id = self.inner.next_query_id.fetch_add(1, Ordering::Relaxed);
        let ticks = self.inner.batcher.subscribe(id, streams);
        Ok(SqlOutput::Query(ContinuousQuery::start(
            id,
            sql.to_string(),
            query_plan,
            ticks,
            self.inner.batcher.tick_now_handle(),
            self.inner.queries.clone(),
            self.inner.stop_on_query_error.load(Ordering::Relaxed),
        )))
    }

    /// brook's part of `EXPLAIN` for a query over streams: the trigger, the
    /// window, whether it is incremental and what it retains.
    async fn describe_continuous(&self, plan: &LogicalPlan) -> Result<String> {
        let bindings = Arc::new(QueryBindings::default());
        let mut state = self.inner.session.state();
        state.config_mut().set_extension(Arc::clone(&bindings));
        let physical = state.create_physical_plan(plan).await?;
        let bound = bindings.take();
        let mut streams: Vec<&str> = bound.iter().map(|s| s.stream.as_str()).collect();
        streams.dedup();
        let interval = crate::window::format_duration(self.batch_interval());
        let head = format!(
            "continuous query over {} (trigger interval {interval})",
            streams.join(", ")
        );
        let Some(kind) = window_of(&bound)? else {
            return Ok(format!(
                "{head}\nper batch: the plan below runs once per micro-batch; nothing is retained between batches"
            ));
        };
        let incremental_on = self.inner.incremental_windows.load(Ordering::Relaxed);
        let split = crate::window::exec::incremental_plan(&kind, bound.len(), &physical);
        let how = match (&kind, split) {
            (WindowKind::Running(_), Ok(_)) => {
                "incremental: each batch is aggregated once into partial state and merged into the running state; retains one state row per group".to_string()
            }
            (WindowKind::Running(_), Err(reason)) => {
                format!("not runnable: RUNNING needs mergeable aggregates; {reason}")
            }
            (WindowKind::Sliding(window), Ok(_)) if incremental_on => format!(
                "incremental: each batch is aggregated once into partial state (a pane); a window merges at most 2 merged panes; retains at most {} panes",
                window.size_batches()
            ),
            (WindowKind::Sliding(window), Ok(_)) => format!(
                "recompute (SET incremental_windows = false): the plan below runs over the window's raw batches; retains at most {} batches",
                window.size_batches()
            ),
            (WindowKind::Sliding(window), Err(reason)) => format!(
                "recompute ({reason}): the plan below runs over the window's raw batches; retains at most {} batches",
                window.size_batches()
            ),
        };
        Ok(format!("{head}\nwindow: {kind}\n{how}"))
    }

    /// A second physical plan of `plan` over all cores, for batches of at
    /// least [`PARALLEL_BATCH_ROWS`] rows; `None` on a single core.
    async fn plan_parallel(
        &self,
        plan: &LogicalPlan,
        stream_names: &mut Vec<String>,
    ) -> Result<Option<PlanVariant>> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if cores < 2 {
            return Ok(None);
        }
        let bindings = Arc::new(QueryBindings::default());
        let mut state = self.inner.session.state();
        state.config_mut().options_mut().execution.target_partitions = cores;
        state.config_mut().set_extension(Arc::clone(&bindings));
        let physical = state.create_physical_plan(plan).await?;
        Ok(Some(PlanVariant {
            plan: physical,
            task_ctx: state.task_ctx(),
            min_rows: PARALLEL_BATCH_ROWS,
            scans: index_scans(stream_names, bindings.take()),
        }))
    }

    /// The queue behind `INSERT INTO name`, when `name` is a stream.
    fn insert_target(&self, insert: &Insert) -> Option<Arc<LiveStream>> {
        let TableObject::TableName(name) = &insert.table else {
            return None;
        };
        let [part] = name.0.as_slice() else {
            return None;
        };
        self.stream(&crate::sql::normalize_ident(part.as_ident()?))
    }

    /// `INSERT INTO queue_stream ...`: all rows of the statement are one item.
    async fn insert_into_queue(
        &self,
        insert: &Insert,
        stream: &LiveStream,
        location: SqlLocation,
    ) -> Result<SqlOutput> {
        let Some(queue) = self.queue(&stream.name) else {
            return Err(BrookError::invalid(format!(
                "stream '{}' reads from a {} connector; INSERT works on queue streams",
                stream.name,
                stream.source.connector()
            )));
        };
        let Some(source) = &insert.source else {
            return Err(BrookError::invalid(
                "INSERT INTO a stream needs VALUES or a SELECT",
            ));
        };
        let query = DataFusionStatement::Statement(Box::new(SqlStatement::Query(source.clone())));
        let state = self.inner.session.state();
        let plan = state
            .statement_to_plan(query)
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        let frame = self.inner.session.execute_logical_plan(plan).await?;
        let input_schema = Arc::new(frame.schema().as_arrow().clone());
        let rows = concat_batches(&input_schema, &frame.collect().await?)?;

        let target = &stream.schema;
        let named: Vec<String> = insert
            .columns
            .iter()
            .map(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(crate::sql::normalize_ident)
                    .unwrap_or_default()
            })
            .collect();
        let expected = if named.is_empty() {
            target.fields().len()
        } else {
            named.len()
        };
        if rows.num_columns() != expected {
            return Err(BrookError::invalid(format!(
                "INSERT INTO {} gives {} values per row; the stream has {} columns",
                stream.name,
                rows.num_columns(),
                expected
            )));
        }
        let mut columns = Vec::with_capacity(target.fields().len());
        for (index, field) in target.fields().iter().enumerate() {
            let position = if named.is_empty() {
                Some(index)
            } else {
                named.iter().position(|n| n == field.name())
            };
            let column = match position {
                Some(position) => cast(rows.column(position), field.data_type()).map_err(|e| {
                    BrookError::invalid(format!(
                        "INSERT INTO {}: column {}: {e}",
                        stream.name,
                        field.name()
                    ))
                })?,
                None => new_null_array(field.data_type(), rows.num_rows()),
            };
            columns.push(column);
        }
        if let Some(unknown) = named.iter().find(|n| target.field_with_name(n).is_err()) {
            return Err(BrookError::invalid(format!(
                "stream '{}' has no column '{unknown}'",
                stream.name
            )));
        }
        queue.push(RecordBatch::try_new(Arc::clone(target), columns)?)?;
        Ok(SqlOutput::Done)
    }

    /// Closes every queue stream (what `brook run` does at the end of a file).
    pub fn close_queues(&self) {
        for name in self.stream_names() {
            if let Some(queue) = self.queue(&name) {
                queue.close();
            }
        }
    }
}

/// The window every stream scan of a query reads through, if any. A query
/// reads all its streams through the same window, or none.
fn window_of(bound: &[BoundScan]) -> Result<Option<WindowKind>> {
    let Some(kind) = bound.iter().find_map(|scan| scan.window.clone()) else {
        return Ok(None);
    };
    for scan in bound {
        match &scan.window {
            Some(other) if *other == kind => {}
            Some(other) => {
                return Err(BrookError::invalid(format!(
                    "a query reads all its streams through the same window; here {kind} and {other}"
                )));
            }
            None => {
                return Err(BrookError::invalid(format!(
                    "stream '{}' is read without a window in a query with {kind}; read every stream through the same window",
                    scan.stream
                )));
            }
        }
    }
    Ok(Some(kind))
}

/// One more row for `EXPLAIN`'s output.
fn explain_row(schema: &SchemaRef, plan_type: &str, plan: &str) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .zip([plan_type, plan])
        .map(|(field, value)| {
            let text: ArrayRef = Arc::new(StringArray::from(vec![value]));
            cast(&text, field.data_type())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
