//! Rows into Avro message values for the Kafka sink: the query's columns
//! as an Avro record schema (arrow-avro's mapping: a nullable column is a
//! union with `null` first, `TIMESTAMP` is `local-timestamp-nanos` so no
//! digit is dropped, `DECIMAL(p,s)` is `bytes` with the `decimal` logical
//! type), registered under the topic's subject, and each row one value
//! framed with the schema's id. With `avro_schema` given instead of a
//! registry, rows are written as bare bodies of that schema.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_avro::schema::{AvroSchema, FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use arrow_avro::writer::{Encoder, WriterBuilder};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::{RegistryError, SchemaSource};
use crate::error::{BrookError, Result};

/// Encodes a sink's rows as Avro values.
pub struct AvroEncoder {
    /// The rows' schema, with the Avro schema in its metadata.
    schema: SchemaRef,
    encoder: Encoder,
    /// The registered schema's id (`None` for bare bodies).
    id: Option<u32>,
}

impl std::fmt::Debug for AvroEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroEncoder")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AvroEncoder {
    /// An encoder of rows of `columns`; with a registry, their schema is
    /// registered (or found) under `subject` first. `owner` names the sink.
    pub fn create(
        owner: &str,
        schemas: &SchemaSource,
        subject: &str,
        columns: &Schema,
    ) -> Result<Self> {
        let bad = |err: &dyn std::fmt::Display| BrookError::invalid(format!("{owner}: {err}"));
        let avro_schema = match schemas {
            SchemaSource::Inline(schema) => schema.clone(),
            SchemaSource::Registry(_) => {
                AvroSchema::try_from(columns)
                    .map_err(|err| bad(&err))?
                    .json_string
            }
        };
        let mut metadata: HashMap<String, String> = columns.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), avro_schema.clone());
        let schema = Arc::new(Schema::new_with_metadata(
            columns.fields().clone(),
            metadata,
        ));
        let (encoder, id) = match schemas {
            SchemaSource::Inline(_) => {
                let encoder = WriterBuilder::new(schema.as_ref().clone())
                    .build_encoder::<AvroBinaryFormat>()
                    .map_err(|err| {
                        bad(&format!(
                            "the rows cannot be written with avro_schema: {err}"
                        ))
                    })?;
                (encoder, None)
            }
            SchemaSource::Registry(registry) => {
                let asking = registry.clone();
                let (subject_owned, schema_text) = (subject.to_string(), avro_schema.clone());
                let id = registry
                    .blocking(async move { asking.register(&subject_owned, &schema_text).await })?
                    .map_err(|err| match err {
                        RegistryError::NotFound(m) | RegistryError::Failed(m) => {
                            BrookError::external(owner.to_string(), m)
                        }
                    })?;
                let encoder = WriterBuilder::new(schema.as_ref().clone())
                    .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                    .build_encoder::<AvroSoeFormat>()
                    .map_err(|err| bad(&err))?;
                (encoder, Some(id))
            }
        };
        Ok(Self {
            schema: encoder.schema(),
            encoder,
            id,
        })
    }

    /// The id the registry gave the sink's schema.
    pub fn schema_id(&self) -> Option<u32> {
        self.id
    }

    /// Each row of `batch` as one message value.
    pub fn values(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())?;
        self.encoder
            .encode(&batch)
            .map_err(|err| BrookError::Internal(format!("encoding Avro: {err}")))?;
        let rows = self.encoder.flush();
        Ok(rows.iter().map(|row| row.to_vec()).collect())
    }
}
