//! The user's entry point: [`StreamContext`] holds the batch interval, the
//! registered streams and DataFusion's session, and runs SQL: it registers
//! streams and dispatches statements; planning belongs to
//! [`crate::planner`], running queries to [`crate::query`], sinks to
//! [`crate::sink`].

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DescribeTable, LogicalPlan};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DataFusionStatement;
use datafusion::sql::sqlparser::ast::{Insert, Statement as SqlStatement, TableObject};

use crate::catalog::StreamMap;
use crate::catalog::stream_table::StreamTable;
use crate::catalog::system::{self, SystemTable};
use crate::error::{BrookError, RecentWarnings, Result, SqlLocation, Warning, WarningHandler};
use crate::exec::PlanShape;
use crate::planner::{self, Planner};
use crate::query::ContinuousQuery;
use crate::query::registry::{QueryInfo, QueryRegistry, queries_rows, queries_schema};
use crate::redact::redact_secrets;
use crate::sink::lifecycle::SinkRegistry;
use crate::sink::{BatchSink, FileSink, PostgresSink, SinkOptions};
use crate::source::{
    Connector, FilesOptions, FilesSource, KafkaOptions, KafkaSource, QueueHandle, QueueOptions,
    QueueSource, SocketOptions, SocketSource, Source, StreamLimits, conform_insert,
};
use crate::sql::{
    BrookStatement, CreateSink, CreateStream, ParsedStatement, StreamClauses, datafusion_sql_error,
    parse_sql,
};
use crate::stream::clock::Batcher;
use crate::stream::{LiveStream, StreamInfo};

mod external;
mod insert;
mod sinks;
mod start;
mod streams;
mod tables;
mod views;

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
    /// Where continuous queries keep their checkpoints (`SET
    /// checkpoint_dir`, `brook run --checkpoint`); none by default.
    checkpoint_dir: parking_lot::Mutex<Option<std::path::PathBuf>>,
    /// A checkpoint every this many batches (`SET checkpoint_interval`).
    checkpoint_interval: AtomicU64,
    batcher: Arc<Batcher>,
    next_query_id: AtomicU64,
    /// The user's handler, behind one that also records each warning in
    /// `recent_warnings`.
    warn: WarningHandler,
    /// The latest warnings and failed batches, for the dashboard.
    recent_warnings: Arc<RecentWarnings>,
    queries: QueryRegistry,
    sinks: SinkRegistry,
    /// Materialized views by name: their rows, kept by their queries.
    views: parking_lot::Mutex<BTreeMap<String, Arc<crate::catalog::view_table::ViewTable>>>,
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
    /// to stderr, credentials masked; see
    /// [`StreamContext::with_warning_handler`].
    pub fn new(batch_interval: Duration) -> Self {
        Self::with_warning_handler(
            batch_interval,
            Arc::new(|warning: &Warning| {
                eprintln!("brook: warning: {}", redact_secrets(&warning.to_string()))
            }),
        )
    }

    /// Like [`StreamContext::new`], sending warnings to `warn`.
    pub fn with_warning_handler(batch_interval: Duration, warn: WarningHandler) -> Self {
        let recent_warnings = Arc::new(RecentWarnings::default());
        let warn: WarningHandler = {
            let recent_warnings = Arc::clone(&recent_warnings);
            Arc::new(move |warning: &Warning| {
                recent_warnings.push(warning);
                warn(warning);
            })
        };
        // One partition: micro-batches are small, and repartitioning them
        // costs more than it saves (see BUILD.md's measurements).
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(true);
        // Spans let planning errors ("no field named x") point at the column.
        config.options_mut().sql_parser.collect_spans = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(crate::exec::optimizer_rules(PlanShape::Executed))
            .build();
        let session = SessionContext::new_with_state(state);
        for function in crate::functions::all() {
            session.register_udf(function);
        }
        let streams: StreamMap = Arc::new(RwLock::new(BTreeMap::new()));
        let batcher = Batcher::new(batch_interval);
        for (name, function) in crate::catalog::windows::table_functions(&streams, &batcher) {
            // DataFusion looks table functions up by the name as written.
            let capitalized = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            for spelling in [name.to_string(), name.to_uppercase(), capitalized] {
                session.register_udtf(&spelling, Arc::clone(&function));
            }
        }
        let queries = QueryRegistry::default();
        let context = Self {
            inner: Arc::new(ContextInner {
                session,
                streams,
                incremental_windows: AtomicBool::new(true),
                stop_on_query_error: AtomicBool::new(false),
                checkpoint_dir: parking_lot::Mutex::new(None),
                checkpoint_interval: AtomicU64::new(1),
                batcher,
                next_query_id: AtomicU64::new(1),
                warn,
                recent_warnings,
                queries,
                sinks: SinkRegistry::default(),
                views: Default::default(),
            }),
        };
        context.register_system_tables();
        context
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

    /// Keeps the checkpoints of the continuous queries started from now on
    /// in `dir` (created if missing; or `s3://bucket/prefix`, reached with
    /// the AWS environment variables), and resumes each from its checkpoint
    /// there: a query named by its sink (`CREATE SINK name`), or by a hash of
    /// its SQL text, restores its state after the last batch checkpointed
    /// and numbers its batches on from it. `None` turns checkpoints off.
    pub fn set_checkpoint_dir(&self, dir: Option<std::path::PathBuf>) -> Result<()> {
        if let Some(dir) = &dir {
            // Created here, or (for s3://bucket/prefix) its bucket reached.
            crate::checkpoint::prepare_root(dir)?;
        }
        *self.inner.checkpoint_dir.lock() = dir;
        Ok(())
    }

    /// Queries started from now on write a checkpoint every `batches`
    /// batches (default 1, every batch): cheaper, and after a crash the
    /// replay covers up to that many batches (still exactly once at the
    /// sinks that are).
    pub fn set_checkpoint_interval(&self, batches: u64) {
        self.inner
            .checkpoint_interval
            .store(batches.max(1), Ordering::Relaxed);
    }

    /// The checkpoint directory, if set.
    pub fn checkpoint_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.checkpoint_dir.lock().clone()
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

    /// Registers a scalar function, DataFusion's own
    /// [`ScalarUDF`](datafusion::logical_expr::ScalarUDF) (made with
    /// `create_udf` or a `ScalarUDFImpl`), for every statement run from now
    /// on: one-off queries and continuous queries in every engine. A
    /// function of the same name is replaced.
    pub fn register_udf(&self, function: datafusion::logical_expr::ScalarUDF) {
        self.inner.session.register_udf(function);
    }

    /// Registers an aggregate function, DataFusion's own
    /// [`AggregateUDF`](datafusion::logical_expr::AggregateUDF) (made with
    /// `create_udaf` or an `AggregateUDFImpl`), for every statement run from
    /// now on. An aggregate whose accumulator gives its state
    /// (`Accumulator::state`) and merges states (`merge_batch`), as
    /// DataFusion's own do, runs incrementally like `SUM`: per-batch panes in
    /// `HOP` / `TUMBLE`, one state row per group in `RUNNING`, panes in
    /// event-time windows, partial state per session. A function of the
    /// same name is replaced.
    pub fn register_udaf(&self, function: datafusion::logical_expr::AggregateUDF) {
        self.inner.session.register_udaf(function);
    }

    /// The registry of running and recently ended queries (the dashboard
    /// reads it).
    pub(crate) fn query_registry(&self) -> &QueryRegistry {
        &self.inner.queries
    }

    /// The most recent warnings (the dashboard shows them).
    pub(crate) fn recent_warnings(&self) -> &RecentWarnings {
        &self.inner.recent_warnings
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
        // A request the statement made that cannot be carried out is the
        // statement's error, located at it; failures outside the user's
        // SQL (a full queue, the file system) keep their own kind.
        let located = |err: BrookError| match err {
            BrookError::Invalid(message) => BrookError::Sql {
                message,
                location: Some(statement.location),
            },
            other => other,
        };
        let done = |result: Result<()>| result.map(|()| SqlOutput::Done).map_err(located);
        match &statement.statement {
            BrookStatement::CreateStream(create) => done(self.create_stream(create)),
            BrookStatement::CreateLookupTable(create) => {
                done(self.create_table(create, &statement.sql).await)
            }
            BrookStatement::DropStream { name, if_exists } => match self.stream(name) {
                None if *if_exists => Ok(SqlOutput::Done),
                _ => done(self.deregister_stream(name)),
            },
            BrookStatement::ShowStreams => self.show("streams").await,
            BrookStatement::ShowQueries => self.show("queries").await,
            BrookStatement::StopQuery(id) => done(self.stop_query(*id).await),
            BrookStatement::CreateSink(create) => done(self.create_sink(create, statement).await),
            BrookStatement::CreateMaterializedView(create) => {
                done(self.create_view(create, statement).await)
            }
            BrookStatement::DropMaterializedView { name, if_exists } => match self.view(name) {
                None if *if_exists => Ok(SqlOutput::Done),
                _ => done(self.drop_view(name).await),
            },
            BrookStatement::DropSink { name, if_exists } => match self.drop_sink(name).await {
                Err(_) if *if_exists && !self.inner.sinks.contains(name) => Ok(SqlOutput::Done),
                result => done(result),
            },
            BrookStatement::SetStopOnQueryError(stop) => {
                self.set_stop_on_query_error(*stop);
                Ok(SqlOutput::Done)
            }
            BrookStatement::SetIncrementalWindows(on) => {
                self.set_incremental_windows(*on);
                Ok(SqlOutput::Done)
            }
            BrookStatement::SetBatchInterval(interval) => done(self.set_batch_interval(*interval)),
            BrookStatement::SetCheckpointInterval(batches) => {
                self.set_checkpoint_interval(*batches);
                Ok(SqlOutput::Done)
            }
            BrookStatement::SetCheckpointDir(dir) => {
                done(self.set_checkpoint_dir(dir.as_ref().map(std::path::PathBuf::from)))
            }
            BrookStatement::DataFusion(df_statement)
                if let Some(name) = self.dropped_changelog_table(df_statement) =>
            {
                done(self.drop_changelog_table(&name).await)
            }
            BrookStatement::DataFusion(df_statement) => self
                .execute_datafusion(
                    df_statement,
                    &statement.clauses,
                    &statement.sql,
                    statement.location,
                    None,
                )
                .await
                .map_err(located),
        }
    }

    /// `SHOW STREAMS` / `SHOW QUERIES`: the system table's rows.
    async fn show(&self, table: &str) -> Result<SqlOutput> {
        let frame = self
            .inner
            .session
            .table(format!("{}.{table}", system::SYSTEM_SCHEMA))
            .await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(SqlOutput::Rows { schema, batches })
    }

    fn planner<'a>(&'a self, clauses: &'a StreamClauses) -> Planner<'a> {
        Planner {
            session: &self.inner.session,
            batch_interval: self.batch_interval(),
            incremental_windows: self.inner.incremental_windows.load(Ordering::Relaxed),
            streams: &self.inner.streams,
            clauses,
        }
    }

    /// Runs a statement DataFusion parsed: an `INSERT` into a queue stream,
    /// a continuous query (started), or a statement run to its end.
    async fn execute_datafusion(
        &self,
        statement: &DataFusionStatement,
        clauses: &StreamClauses,
        sql: &str,
        location: SqlLocation,
        query_name: Option<&str>,
    ) -> Result<SqlOutput> {
        if let DataFusionStatement::Statement(inner) = statement
            && let SqlStatement::Insert(insert) = inner.as_ref()
            && let Some(queue) = self.insert_target(insert)
        {
            return self.insert_into_queue(insert, &queue, location).await;
        }
        let rewritten;
        let statement = match statement {
            DataFusionStatement::CreateExternalTable(create) => {
                match self.prepare_external_table(create).await? {
                    external::ExternalTable::AsWritten => statement,
                    external::ExternalTable::Rewritten(written) => {
                        rewritten = written;
                        rewritten.as_ref()
                    }
                    external::ExternalTable::Created => return Ok(SqlOutput::Done),
                }
            }
            _ => statement,
        };
        let state = self.inner.session.state();
        let plan = state
            .statement_to_plan(statement.clone())
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        planner::check_readable(&plan)?;
        if let LogicalPlan::DescribeTable(describe) = &plan {
            return describe_table(describe);
        }
        if !clauses.is_empty() && !planner::reads_streams(&plan)? {
            return Err(BrookError::Sql {
                message: "EMIT ON ... and LATE DATA TO ... follow a continuous query over an event-time window (TUMBLE, HOP or SESSION with a time column)".into(),
                location: clauses.location.or(Some(location)),
            });
        }
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            return self.execute_ddl(plan).await;
        }
        let planner = self.planner(clauses);
        if let LogicalPlan::Explain(explain) = &plan {
            if let Some(continuous) = planner
                .plan_continuous(&explain.plan, planner::Purpose::Explain)
                .await
                .map_err(|e| datafusion_sql_error_in(e, location))?
            {
                let (schema, batches) = planner::explain_rows(&continuous)?;
                return Ok(SqlOutput::Rows { schema, batches });
            }
        } else if let LogicalPlan::Analyze(analyze) = &plan
            && planner::reads_streams(&analyze.input)?
        {
            return Err(BrookError::invalid(
                "EXPLAIN ANALYZE runs a statement to its end, and a continuous query has none; use EXPLAIN",
            ));
        } else if let Some(continuous) = planner
            .plan_continuous(&plan, planner::Purpose::Run)
            .await
            .map_err(|e| datafusion_sql_error_in(e, location))?
        {
            return self
                .start(continuous, sql, query_name)
                .await
                .map(SqlOutput::Query);
        }
        run_static(&state, &plan, location).await
    }

    /// Runs a DDL or other statement plan (`CREATE TABLE`, `SET`, ...) on
    /// the session: done, or its rows if it returns any.
    async fn execute_ddl(&self, plan: LogicalPlan) -> Result<SqlOutput> {
        let frame = self.inner.session.execute_logical_plan(plan).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(if batches.iter().all(|b| b.num_rows() == 0) {
            SqlOutput::Done
        } else {
            SqlOutput::Rows { schema, batches }
        })
    }
}

/// `DESCRIBE table`: a row per column.
fn describe_table(describe: &DescribeTable) -> Result<SqlOutput> {
    let schema = Arc::clone(describe.output_schema.inner());
    let batch = system::describe_rows(&describe.schema, Arc::clone(&schema))?;
    Ok(SqlOutput::Rows {
        schema,
        batches: vec![batch],
    })
}

/// Runs `plan`, a statement over static tables only, to its end: its rows
/// (an `EXPLAIN`'s with secrets masked).
async fn run_static(
    state: &datafusion::execution::SessionState,
    plan: &LogicalPlan,
    location: SqlLocation,
) -> Result<SqlOutput> {
    let physical = state
        .create_physical_plan(plan)
        .await
        .map_err(|e| datafusion_sql_error(e, Some(location)))?;
    let schema = physical.schema();
    let mut batches = collect(physical, state.task_ctx()).await?;
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
        batches = planner::redact_explained(batches)?;
    }
    Ok(SqlOutput::Rows { schema, batches })
}

/// A planning error with the statement's location, when it is SQL's.
fn datafusion_sql_error_in(err: BrookError, location: SqlLocation) -> BrookError {
    match err {
        BrookError::DataFusion(err) => datafusion_sql_error(err, Some(location)),
        other => other,
    }
}

#[cfg(test)]
impl StreamContext {
    /// `sql`, with its `EMIT` / `LATE DATA TO` clauses, planned to run (for
    /// the engines' tests, which drive an engine batch by batch).
    pub(crate) async fn plan_for_test(&self, sql: &str) -> planner::ContinuousPlan {
        let statement = parse_sql(sql).unwrap().pop().unwrap();
        let clauses = statement.clauses;
        let BrookStatement::DataFusion(statement) = statement.statement else {
            panic!("a query")
        };
        let logical = self
            .inner
            .session
            .state()
            .statement_to_plan(*statement)
            .await
            .unwrap();
        self.planner(&clauses)
            .plan_continuous(&logical, planner::Purpose::Run)
            .await
            .unwrap()
            .expect("continuous")
    }
}
