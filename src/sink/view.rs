//! The sink of a materialized view: each batch's result replaces the
//! view's rows.

use std::sync::Arc;

use async_trait::async_trait;

use super::{BatchSink, SinkWrite};
use crate::catalog::view_table::ViewTable;
use crate::error::Result;
use crate::query::BatchOutput;

/// Keeps a view's rows: the latest batch's result.
pub(crate) struct ViewSink {
    table: Arc<ViewTable>,
}

impl ViewSink {
    pub(crate) fn new(table: Arc<ViewTable>) -> Self {
        Self { table }
    }
}

#[async_trait]
impl BatchSink for ViewSink {
    async fn write(&mut self, output: &BatchOutput) -> Result<SinkWrite> {
        self.table
            .replace(output.batch_number, output.batches.clone());
        Ok(if output.rows_out() == 0 {
            SinkWrite::Empty
        } else {
            SinkWrite::Written
        })
    }
}
