//! `CREATE EXTERNAL TABLE` over object storage and Delta Lake: a
//! `LOCATION 's3://bucket/prefix/'` takes its `s3.*` settings from
//! `OPTIONS (...)` (over the AWS environment), and the bucket's store is
//! registered with DataFusion before DataFusion creates the table;
//! `STORED AS DELTA` reads a Delta table (local or in S3) as of its latest
//! version when created (a snapshot, as DataFusion's tables are).

use datafusion::sql::parser::CreateExternalTable;

use super::*;
use crate::storage::{ObjectDir, S3Options};

/// What brook did with a `CREATE EXTERNAL TABLE` before DataFusion.
pub(super) enum ExternalTable {
    /// Nothing: DataFusion creates it as written.
    AsWritten,
    /// Its `s3.*` options taken out (the store registered): DataFusion
    /// creates this one.
    Rewritten(Box<DataFusionStatement>),
    /// Created by brook (a Delta table).
    #[cfg_attr(not(feature = "delta"), allow(dead_code))]
    Created,
}

impl StreamContext {
    pub(super) async fn prepare_external_table(
        &self,
        create: &CreateExternalTable,
    ) -> Result<ExternalTable> {
        let delta = create.file_type.eq_ignore_ascii_case("delta");
        let on_s3 = create
            .locations
            .iter()
            .any(|location| crate::storage::is_object_url(location));
        if !delta && !on_s3 {
            return Ok(ExternalTable::AsWritten);
        }
        let mut options: Vec<(String, String)> = create
            .options
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s)
                    | datafusion::sql::sqlparser::ast::Value::DoubleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect();
        let table = create.name.to_string();
        let s3 = S3Options::take_from(&mut options, &format!("table '{table}'"))?;
        if delta {
            #[cfg(feature = "delta")]
            return self.create_delta_table(create, &options, &s3).await;
            #[cfg(not(feature = "delta"))]
            return Err(BrookError::invalid(format!(
                "table '{table}': {}",
                crate::storage::DELTA_NOT_BUILT
            )));
        }
        for location in &create.locations {
            let dir = ObjectDir::open(location, &s3)
                .map_err(|err| BrookError::invalid(format!("table '{table}': {err}")))?;
            dir.check()
                .await
                .map_err(|err| BrookError::external(format!("table '{table}'"), err))?;
            self.inner
                .session
                .runtime_env()
                .register_object_store(dir.bucket_url(), Arc::clone(dir.store()));
        }
        let mut rewritten = create.clone();
        rewritten
            .options
            .retain(|(key, _)| !key.to_ascii_lowercase().starts_with("s3."));
        Ok(ExternalTable::Rewritten(Box::new(
            DataFusionStatement::CreateExternalTable(rewritten),
        )))
    }

    #[cfg(feature = "delta")]
    async fn create_delta_table(
        &self,
        create: &CreateExternalTable,
        other_options: &[(String, String)],
        s3: &S3Options,
    ) -> Result<ExternalTable> {
        use datafusion::sql::planner::object_name_to_table_reference;
        let name = object_name_to_table_reference(create.name.clone(), true)
            .map_err(BrookError::DataFusion)?;
        if let Some((key, _)) = other_options.first() {
            return Err(BrookError::invalid(format!(
                "table '{name}': option '{key}' is not one a Delta table takes (only s3.*)"
            )));
        }
        if !create.columns.is_empty() || !create.table_partition_cols.is_empty() {
            return Err(BrookError::invalid(format!(
                "table '{name}': a Delta table's columns and partitions come from its log; leave out the column list and PARTITIONED BY"
            )));
        }
        let [location] = create.locations.as_slice() else {
            return Err(BrookError::invalid(format!(
                "table '{name}': a Delta table has one LOCATION"
            )));
        };
        if self.inner.session.table_exist(name.clone())? {
            if create.if_not_exists {
                return Ok(ExternalTable::Created);
            }
            if !create.or_replace {
                return Err(BrookError::invalid(format!(
                    "table '{name}' already exists"
                )));
            }
        }
        let mut table = crate::storage::delta_table::open(location, s3, false).await?;
        if !crate::storage::delta_table::load(&mut table, location).await? {
            return Err(BrookError::invalid(format!(
                "table '{name}': {location} is not a Delta table (no _delta_log)"
            )));
        }
        if let Some(dir) = crate::storage::is_object_url(location)
            .then(|| ObjectDir::open(location, s3))
            .transpose()?
        {
            self.inner
                .session
                .runtime_env()
                .register_object_store(dir.bucket_url(), Arc::clone(dir.store()));
        }
        let provider = table.table_provider().await.map_err(|err| {
            BrookError::external(format!("Delta table {location}"), err.to_string())
        })?;
        self.inner.session.deregister_table(name.clone())?;
        self.inner.session.register_table(name, provider)?;
        Ok(ExternalTable::Created)
    }
}
