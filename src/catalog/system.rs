//! System tables: brook's own state as tables that SQL can query, like
//! `information_schema` (`SELECT * FROM brook.queries WHERE lag_ms > 100`).
//! `SHOW QUERIES` and `SHOW STREAMS` read them. Also `DESCRIBE`'s rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::sql::sql_type_name;
use crate::stream::StreamInfo;

/// The schema system tables live in.
pub const SYSTEM_SCHEMA: &str = "brook";

/// Builds a system table's rows when it is read.
pub(crate) type RowSource = Arc<dyn Fn() -> Result<RecordBatch> + Send + Sync>;

/// A table whose rows are built from brook's state at each scan.
pub(crate) struct SystemTable {
    schema: SchemaRef,
    rows: RowSource,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl SystemTable {
    pub fn new(schema: SchemaRef, rows: RowSource) -> Self {
        Self { schema, rows }
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch = (self.rows)()
            .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// Registers `brook.NAME` in `session`, creating the `brook` schema first.
pub(crate) fn register(session: &SessionContext, name: &str, table: SystemTable) -> Result<()> {
    let catalog_name = session
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    if let Some(catalog) = session.catalog(&catalog_name)
        && catalog.schema(SYSTEM_SCHEMA).is_none()
    {
        catalog.register_schema(SYSTEM_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
    }
    session.register_table(format!("{SYSTEM_SCHEMA}.{name}"), Arc::new(table))?;
    Ok(())
}

/// The columns of `brook.streams` (and `SHOW STREAMS`).
pub(crate) fn streams_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("columns", DataType::Utf8, false),
        Field::new("options", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows_received", DataType::UInt64, false),
        Field::new("rows_dropped", DataType::UInt64, false),
        Field::new("rows_pending", DataType::UInt64, false),
    ]))
}

/// `DESCRIBE`'s rows for a table or stream of `columns`, in DataFusion's
/// `output_schema` (`column_name`, `data_type`, `is_nullable`), with the
/// SQL type names `CREATE STREAM` takes where DataFusion shows Arrow's.
pub(crate) fn describe_rows(columns: &Schema, output_schema: SchemaRef) -> Result<RecordBatch> {
    let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let fields = columns.fields();
    Ok(RecordBatch::try_new(
        output_schema,
        vec![
            text(fields.iter().map(|f| f.name().clone()).collect()),
            text(
                fields
                    .iter()
                    .map(|f| sql_type_name(f.data_type()))
                    .collect(),
            ),
            text(
                fields
                    .iter()
                    .map(|f| if f.is_nullable() { "YES" } else { "NO" }.to_string())
                    .collect(),
            ),
        ],
    )?)
}

/// The rows of `brook.streams`.
pub(crate) fn streams_rows(streams: &[StreamInfo]) -> Result<RecordBatch> {
    let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let count = |values: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(values)) };
    Ok(RecordBatch::try_new(
        streams_schema(),
        vec![
            text(streams.iter().map(|s| s.name.clone()).collect()),
            text(streams.iter().map(|s| s.connector.clone()).collect()),
            text(streams.iter().map(StreamInfo::columns).collect()),
            text(
                streams
                    .iter()
                    .map(|s| crate::redact::redact_secrets(&s.options))
                    .collect(),
            ),
            text(streams.iter().map(|s| s.state.clone()).collect()),
            count(streams.iter().map(|s| s.rows_received).collect()),
            count(streams.iter().map(|s| s.rows_dropped).collect()),
            count(streams.iter().map(|s| s.rows_pending).collect()),
        ],
    )?)
}
