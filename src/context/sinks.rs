//! Running queries and sinks: `SHOW QUERIES`' source, `STOP QUERY`,
//! `CREATE SINK`, `DROP SINK`, and a graceful finish.

use super::*;

impl StreamContext {
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
        match self.inner.sinks.of_query(id) {
            Some(name) => {
                self.inner
                    .sinks
                    .stop_and_wait(&name, |_| entry.stop())
                    .await;
            }
            None => entry.stop(),
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
    /// Fails if a sink failed to write a batch (the first such failure).
    pub async fn wait_for_sinks(&self) -> Result<()> {
        self.inner.sinks.wait_all().await
    }

    /// Names of the sinks whose queries run.
    pub fn sink_names(&self) -> Vec<String> {
        self.inner.sinks.names()
    }

    pub(super) async fn create_sink(
        &self,
        create: &CreateSink,
        statement: &ParsedStatement,
    ) -> Result<()> {
        if self.inner.sinks.contains(&create.name) {
            if create.if_not_exists {
                return Ok(());
            }
            return Err(BrookError::invalid(format!(
                "sink '{}' already exists",
                create.name
            )));
        }
        let options = SinkOptions::from_options(&create.name, &create.options)?;
        let query = self
            .background_query(create, statement, &format!("sink '{}'", create.name))
            .await?;
        // Dropping the query on an error here stops it.
        let sink: Box<dyn BatchSink> = match options {
            SinkOptions::File(options) => {
                let sink = FileSink::create(&create.name, options)?
                    .with_warning_handler(Arc::clone(&self.inner.warn));
                if let Some(batch) = query.restored_batch() {
                    sink.forget_after(batch)?;
                }
                Box::new(sink)
            }
            SinkOptions::Kafka(options) => Box::new(crate::sink::KafkaSink::create(
                &create.name,
                options,
                &query.schema(),
            )?),
            #[cfg(feature = "delta")]
            SinkOptions::Delta(options) => Box::new(
                crate::sink::DeltaSink::open(
                    &create.name,
                    options,
                    &query.schema(),
                    Arc::clone(&self.inner.warn),
                    query.restored_batch(),
                )
                .await?,
            ),
            SinkOptions::Postgres(options) => Box::new(
                PostgresSink::connect_resuming(
                    &create.name,
                    *options,
                    &query.schema(),
                    Arc::clone(&self.inner.warn),
                    query.restored_batch(),
                )
                .await?,
            ),
        };
        self.inner.sinks.start(
            &create.name,
            format!("sink {}", create.name),
            query,
            sink,
            Arc::clone(&self.inner.warn),
        );
        Ok(())
    }

    /// Starts `create`'s query, which must be continuous; `what` names the
    /// sink or view in errors.
    pub(super) async fn background_query(
        &self,
        create: &CreateSink,
        statement: &ParsedStatement,
        what: &str,
    ) -> Result<crate::query::ContinuousQuery> {
        match self
            .execute_datafusion(
                &create.query,
                &create.clauses,
                &statement.sql,
                statement.location,
                Some(&create.name),
            )
            .await?
        {
            SqlOutput::Query(query) => Ok(query),
            _ => Err(BrookError::invalid(format!(
                "{what}: AS needs a continuous query (a SELECT that reads a stream)"
            ))),
        }
    }

    /// Stops sink `name`'s query after its batch in progress and waits for
    /// its last file to be written.
    pub(super) async fn drop_sink(&self, name: &str) -> Result<()> {
        let queries = &self.inner.queries;
        let stopped = self
            .inner
            .sinks
            .stop_and_wait(name, |query_id| {
                if let Some(entry) = queries.get(query_id) {
                    entry.stop();
                }
            })
            .await;
        match stopped {
            Some(_) => Ok(()),
            None => Err(BrookError::invalid(format!("sink '{name}' does not exist"))),
        }
    }
}
