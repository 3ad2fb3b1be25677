//! `CREATE TABLE ... WITH (...)`: a lookup table read by key from
//! PostgreSQL, or a table kept current from a changelog (Debezium JSON,
//! upsert Kafka, PostgreSQL CDC) by a query of its own.

use super::*;
use crate::catalog::changelog_table::{ChangelogTable, CurrentRows};
use crate::engine::table_maintainer::TableMaintainer;
use crate::query::engine::BatchEngine;
use datafusion::common::DFSchema;
use datafusion::logical_expr::EmptyRelation;
use datafusion::physical_plan::empty::EmptyExec;

impl StreamContext {
    /// `CREATE TABLE name (columns) WITH (options)`: kept current from a
    /// changelog when its options read changes, else looked up by key.
    pub(super) async fn create_table(&self, create: &CreateStream, sql: &str) -> Result<()> {
        let reads_changes = {
            let mut options = create.options.clone();
            options.retain(|(key, _)| key != "key");
            matches!(
                crate::source::Connector::from_options(&create.name, &options),
                Ok(connector) if connector.reads_changes()
            )
        };
        if !reads_changes {
            if create.watermark.is_some() {
                return Err(BrookError::invalid(format!(
                    "table '{}': WATERMARK FOR is for a table kept current from a changelog (format = 'debezium-json', mode = 'upsert', connector = 'postgres-cdc'), not a lookup table",
                    create.name
                )));
            }
            return self.create_lookup_table(create);
        }
        if create.if_not_exists && self.inner.session.table_exist(create.name.as_str())? {
            return Ok(());
        }
        // The changelog is a stream of the table's name, which DataFusion
        // sees as the table of current rows.
        self.create_stream(create)?;
        let name = create.name.as_str();
        let undo = |err: BrookError| {
            let _ = self.deregister_stream(name);
            err
        };
        let stream = self.stream(name).ok_or_else(|| {
            BrookError::Internal(format!("table '{name}': its changelog stream is gone"))
        })?;
        let Some(changelog) = stream.changelog().cloned() else {
            return Err(undo(BrookError::Internal(format!(
                "table '{name}': its stream is not a changelog"
            ))));
        };
        let declared = Arc::new(Schema::new(stream.schema.fields()[1..].to_vec()));
        let current = Arc::new(CurrentRows::new(name.to_string(), declared));
        let maintainer = TableMaintainer::new(
            Arc::clone(&stream.schema),
            &changelog.key,
            Arc::clone(&current),
        )
        .map_err(undo)?;
        self.inner
            .session
            .deregister_table(name)
            .map_err(|e| undo(e.into()))?;
        self.inner
            .session
            .register_table(
                name,
                Arc::new(ChangelogTable {
                    current,
                    versioned: stream.event_time().is_some(),
                }),
            )
            .map_err(|e| undo(e.into()))?;
        self.start_table_query(name, maintainer, sql).await
    }

    /// Starts the query that keeps table `name` current, and drains its
    /// (empty) results, reporting a failed batch.
    async fn start_table_query(
        &self,
        name: &str,
        maintainer: TableMaintainer,
        sql: &str,
    ) -> Result<()> {
        let plan = planner::ContinuousPlan {
            streams: vec![name.to_string()],
            description: format!(
                "table {name} kept current from its changelog (trigger interval {})\n{}",
                crate::sql::format_duration(self.batch_interval()),
                maintainer.describe()
            ),
            engine: Box::new(maintainer),
            physical: Arc::new(EmptyExec::new(Arc::new(Schema::empty()))),
            logical: LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::empty()),
            }),
            late_route: None,
            notices: Vec::new(),
        };
        let mut query = match self.start(plan, sql, Some(name)).await {
            Ok(query) => query,
            Err(err) => {
                let _ = self.inner.session.deregister_table(name);
                self.inner.streams.write().remove(name);
                return Err(err);
            }
        };
        let warn = Arc::clone(&self.inner.warn);
        let table = name.to_string();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(output) = query.next().await {
                if let Err(err) = output {
                    (warn)(&Warning::Query(BrookError::External {
                        context: format!("table '{table}'"),
                        message: crate::error::error_chain(&err),
                    }));
                }
            }
        });
        Ok(())
    }

    /// The table a `DROP TABLE` names, when it is kept current from a
    /// changelog (its stream has the table's name).
    pub(super) fn dropped_changelog_table(
        &self,
        statement: &DataFusionStatement,
    ) -> Option<String> {
        use datafusion::sql::sqlparser::ast::ObjectType;
        let DataFusionStatement::Statement(statement) = statement else {
            return None;
        };
        let SqlStatement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } = statement.as_ref()
        else {
            return None;
        };
        let [name] = names.as_slice() else {
            return None;
        };
        let name = crate::sql::object_name(name).ok()?;
        self.stream(&name)?.changelog()?;
        Some(name)
    }

    /// Stops the query keeping table `name` current, then removes the
    /// table and its changelog stream.
    pub(super) async fn drop_changelog_table(&self, name: &str) -> Result<()> {
        for id in self.inner.batcher.readers_of(name) {
            if let Some(entry) = self.inner.queries.get(id) {
                entry.stop();
            }
        }
        // The query leaves the stream once its batch in progress is done.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.inner.batcher.readers_of(name).is_empty()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.deregister_stream(name)
    }
}
