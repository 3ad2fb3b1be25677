//! Materialized views: `CREATE MATERIALIZED VIEW name AS SELECT ...` runs
//! the query in the background (as a sink's query runs, listed in `SHOW
//! QUERIES`, checkpointed like any query) and keeps its latest batch's
//! result as the table `name`; `DROP MATERIALIZED VIEW` stops it.

use std::sync::Arc;

use super::StreamContext;
use crate::catalog::view_table::ViewTable;
use crate::error::{BrookError, Result};
use crate::sink::view::ViewSink;
use crate::sql::{CreateSink, ParsedStatement};

impl StreamContext {
    pub(super) async fn create_view(
        &self,
        create: &CreateSink,
        statement: &ParsedStatement,
    ) -> Result<()> {
        let name = &create.name;
        if self.view(name).is_some() {
            if create.if_not_exists {
                return Ok(());
            }
            return Err(BrookError::invalid(format!(
                "materialized view '{name}' already exists"
            )));
        }
        if self.inner.sinks.contains(name)
            || self.stream(name).is_some()
            || self
                .inner
                .session
                .table_exist(name.as_str())
                .unwrap_or(false)
        {
            return Err(BrookError::invalid(format!(
                "materialized view '{name}': the name is taken by a stream, table or sink"
            )));
        }
        let query = self
            .background_query(create, statement, &format!("materialized view '{name}'"))
            .await?;
        let table = Arc::new(ViewTable::new(query.schema()));
        self.inner
            .session
            .register_table(name.as_str(), Arc::clone(&table) as _)?;
        self.inner
            .views
            .lock()
            .insert(name.clone(), Arc::clone(&table));
        self.inner.sinks.start(
            name,
            format!("materialized view {name}"),
            query,
            Box::new(ViewSink::new(table)),
            Arc::clone(&self.inner.warn),
        );
        Ok(())
    }

    pub(super) async fn drop_view(&self, name: &str) -> Result<()> {
        if self.view(name).is_none() {
            return Err(BrookError::invalid(format!(
                "materialized view '{name}' does not exist"
            )));
        }
        self.drop_sink(name).await?;
        self.inner.views.lock().remove(name);
        self.inner.session.deregister_table(name)?;
        Ok(())
    }

    /// Materialized view `name`'s rows (to read, or to subscribe to).
    pub fn view(&self, name: &str) -> Option<Arc<ViewTable>> {
        self.inner.views.lock().get(name).cloned()
    }

    /// The names of the materialized views.
    pub fn view_names(&self) -> Vec<String> {
        self.inner.views.lock().keys().cloned().collect()
    }
}
