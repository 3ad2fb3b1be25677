//! `INSERT INTO queue_stream ...`: evaluating the statement's rows, and
//! naming the column whose values do not fit.

use super::*;

impl StreamContext {
    /// The queue behind `INSERT INTO name`, when `name` is a stream.
    pub(super) fn insert_target(&self, insert: &Insert) -> Option<Arc<LiveStream>> {
        let TableObject::TableName(name) = &insert.table else {
            return None;
        };
        let [part] = name.0.as_slice() else {
            return None;
        };
        self.stream(&crate::sql::normalize_ident(part.as_ident()?))
    }

    /// `INSERT INTO queue_stream ...`: all rows of the statement are one item.
    pub(super) async fn insert_into_queue(
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
        let batch = match self.evaluate(source, location).await {
            Ok(rows) => conform_insert(&stream.name, &stream.schema, &named, &rows)?,
            // DataFusion gives each column of a VALUES list one type over all
            // rows, and refuses `(true), ('false')`; the stream's columns say
            // what each value must be, so each row is read on its own.
            Err(err) => match self.rows_one_by_one(source, &named, stream, location).await {
                Some(batch) => batch?,
                None => return Err(self.name_failing_column(source, &named, stream, err).await),
            },
        };
        queue.push(batch)?;
        Ok(SqlOutput::Done)
    }

    /// The rows of a `VALUES` list, each evaluated and conformed alone, as
    /// one batch; `None` when the source is not a list of several rows.
    async fn rows_one_by_one(
        &self,
        source: &datafusion::sql::sqlparser::ast::Query,
        named: &[String],
        stream: &LiveStream,
        location: SqlLocation,
    ) -> Option<Result<RecordBatch>> {
        use datafusion::sql::sqlparser::ast::{SetExpr, Values};
        let SetExpr::Values(values) = source.body.as_ref() else {
            return None;
        };
        if values.rows.len() < 2 {
            return None;
        }
        let mut batches = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            let mut alone = source.clone();
            *alone.body = SetExpr::Values(Values {
                rows: vec![row.clone()],
                ..values.clone()
            });
            let conformed = match self.evaluate(&alone, location).await {
                Ok(rows) => conform_insert(&stream.name, &stream.schema, named, &rows),
                Err(err) => Err(self.name_failing_column(&alone, named, stream, err).await),
            };
            match conformed {
                Ok(batch) => batches.push(batch),
                Err(err) => return Some(Err(err)),
            }
        }
        Some(concat_batches(&stream.schema, &batches).map_err(BrookError::from))
    }

    /// The rows of a query over static tables (an INSERT's source).
    pub(super) async fn evaluate(
        &self,
        query: &datafusion::sql::sqlparser::ast::Query,
        location: SqlLocation,
    ) -> Result<RecordBatch> {
        let statement =
            DataFusionStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
        let mut state = self.inner.session.state();
        // Numbers as written, exactly: a literal too large for a float or
        // with more digits than it holds must not be rounded before it is
        // checked against its column.
        state
            .config_mut()
            .options_mut()
            .sql_parser
            .parse_float_as_decimal = true;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        // The physical plan's schema is the one its batches have (the
        // logical one may say Utf8 where execution gives Utf8View).
        let physical = state
            .create_physical_plan(&plan)
            .await
            .map_err(|e| datafusion_sql_error(e, Some(location)))?;
        let schema = physical.schema();
        Ok(concat_batches(
            &schema,
            &collect(physical, state.task_ctx()).await?,
        )?)
    }

    /// `err`, from evaluating an INSERT's `VALUES`, with the stream column
    /// whose values failed (found by evaluating each column alone); other
    /// errors as they are.
    pub(super) async fn name_failing_column(
        &self,
        source: &datafusion::sql::sqlparser::ast::Query,
        named: &[String],
        stream: &LiveStream,
        err: BrookError,
    ) -> BrookError {
        use datafusion::sql::sqlparser::ast::{SetExpr, Values};
        let SetExpr::Values(values) = source.body.as_ref() else {
            return err;
        };
        let width = values.rows.first().map_or(0, |row| row.content.len());
        for column in 0..width {
            let mut alone = source.clone();
            *alone.body = SetExpr::Values(Values {
                rows: values
                    .rows
                    .iter()
                    .map(|row| {
                        let mut alone = row.clone();
                        alone.content = row.content.get(column).cloned().into_iter().collect();
                        alone
                    })
                    .collect(),
                ..values.clone()
            });
            if self
                .evaluate(&alone, SqlLocation { line: 1, column: 1 })
                .await
                .is_err()
            {
                let name = match named.get(column) {
                    Some(name) => name.clone(),
                    None => stream
                        .schema
                        .fields()
                        .get(column)
                        .map_or_else(|| format!("#{}", column + 1), |f| f.name().clone()),
                };
                return BrookError::invalid(format!(
                    "INSERT INTO {}: column {name}: {}",
                    stream.name,
                    crate::error::error_chain(&err)
                ));
            }
        }
        err
    }
}
