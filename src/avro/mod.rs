//! Avro values on Kafka: how a stream reads them and a sink writes them.
//!
//! A message is framed as a Confluent-compatible schema registry frames it
//! (byte 0 is `0`, bytes 1–4 the writer schema's id, big-endian, then the
//! Avro body), or, with `avro_schema = '...'` and no registry, is a bare
//! Avro body of that schema. Bodies are decoded by arrow-avro straight into
//! Arrow arrays; the values are then put in the declared columns strictly
//! ([`convert`]).
//!
//! Schema evolution follows Avro's resolution rules: a stream reads with
//! the subject's latest schema at `CREATE STREAM` (`{topic}-value`) as the
//! reader schema, so a field a writer lacks takes that schema's default and
//! a field the reader schema lacks is skipped.

pub mod convert;
pub mod encode;
pub mod registry;

use std::sync::Arc;

use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, TimeUnit};

use crate::error::{BrookError, Result};
use crate::options::{OptionReader, OptionSpec};
pub use registry::{RegisteredSchema, Registry, RegistryError};

/// The first byte of a Confluent frame.
pub const MAGIC: u8 = 0;
/// A frame's bytes before the body: the magic byte and the schema id.
pub const FRAME_LEN: usize = 5;

/// The options that say how Avro values are framed and where their schemas
/// are, shared by the Kafka source and sink.
pub const AVRO_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "schema_registry",
        default: None,
        help: "format 'avro': the schema registry's URL (http://host:port), messages framed with a schema id",
    },
    OptionSpec {
        key: "schema_registry_user",
        default: None,
        help: "format 'avro': the registry's user (basic authentication)",
    },
    OptionSpec {
        key: "schema_registry_password",
        default: None,
        help: "format 'avro': the registry user's password",
    },
    OptionSpec {
        key: "avro_schema",
        default: None,
        help: "format 'avro' without a registry: the Avro schema (JSON) of bare message bodies",
    },
];

/// Refuses an Avro option (`schema_registry`, ...) given with another
/// format; `owner` names the stream or sink.
pub(crate) fn refuse_avro_options(owner: &str, options: &OptionReader<'_>) -> Result<()> {
    match AVRO_OPTIONS
        .iter()
        .map(|o| o.key)
        .find(|k| options.text(k).is_some())
    {
        Some(key) => Err(BrookError::invalid(format!(
            "{owner}: option {key} is for format = 'avro'"
        ))),
        None => Ok(()),
    }
}

/// Where a stream's or sink's Avro schemas come from.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    /// A schema registry: messages carry the id of their writer schema.
    Registry(Registry),
    /// One schema given inline: messages are bare bodies of it.
    Inline(String),
}

impl SchemaSource {
    /// Reads `schema_registry` (with its user and password) or
    /// `avro_schema` from `options`; `owner` names the stream or sink.
    pub(crate) fn read(owner: &str, options: &OptionReader<'_>) -> Result<Self> {
        let registry = options.text("schema_registry");
        let inline = options.text("avro_schema");
        match (registry, inline) {
            (Some(url), None) => Ok(SchemaSource::Registry(Registry::new(
                url,
                options.text("schema_registry_user"),
                options.text("schema_registry_password"),
            )?)),
            (None, Some(schema)) => {
                record_fields(owner, schema)?;
                Ok(SchemaSource::Inline(schema.to_string()))
            }
            (Some(_), Some(_)) => Err(BrookError::invalid(format!(
                "{owner}: give schema_registry or avro_schema, not both"
            ))),
            (None, None) => Err(BrookError::invalid(format!(
                "{owner}: format 'avro' needs schema_registry = 'http://host:port' (messages framed with a schema id) or avro_schema = '{{\"type\": \"record\", ...}}' (bare bodies)"
            ))),
        }
    }
}

/// How a stream reads Avro values: where the writer schemas are, and the
/// reader schema.
#[derive(Debug, Clone)]
pub struct AvroValues {
    /// The registry, or the one inline schema.
    pub schemas: SchemaSource,
    /// The schema values are read as: the inline one, or the subject's
    /// latest at `CREATE STREAM` (`None` when the subject had none yet:
    /// each message is then read by its own writer schema).
    pub reader_schema: Option<String>,
    resolved: bool,
}

impl AvroValues {
    /// Reads the options of stream `stream` (format 'avro').
    pub(crate) fn read(stream: &str, options: &OptionReader<'_>) -> Result<Self> {
        let schemas = SchemaSource::read(&format!("stream '{stream}'"), options)?;
        let reader_schema = match &schemas {
            SchemaSource::Inline(schema) => Some(schema.clone()),
            SchemaSource::Registry(_) => None,
        };
        Ok(Self {
            resolved: reader_schema.is_some(),
            schemas,
            reader_schema,
        })
    }

    /// Asks the registry (once) for `subject`'s latest schema, the reader
    /// schema. A registry that cannot be reached is an error naming it.
    pub fn resolve(&mut self, stream: &str, subject: &str) -> Result<()> {
        let SchemaSource::Registry(registry) = &self.schemas else {
            return Ok(());
        };
        if self.resolved {
            return Ok(());
        }
        let asking = registry.clone();
        let subject_owned = subject.to_string();
        let latest = registry.blocking(async move { asking.latest(&subject_owned).await })?;
        self.reader_schema = match latest {
            Ok(found) => {
                record_fields(
                    &format!("stream '{stream}': subject '{subject}'"),
                    &found.schema,
                )?;
                Some(found.schema)
            }
            Err(RegistryError::NotFound(_)) => None,
            Err(RegistryError::Failed(message)) => {
                return Err(BrookError::external(format!("stream '{stream}'"), message));
            }
        };
        self.resolved = true;
        Ok(())
    }

    /// The columns of the reader schema, for a stream that declares none.
    pub fn columns(&self, stream: &str, subject: &str) -> Result<Vec<FieldRef>> {
        let Some(schema) = &self.reader_schema else {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': subject '{subject}' has no schema in the registry yet; declare the columns"
            )));
        };
        let decoded = decoded_schema(schema)
            .map_err(|err| BrookError::invalid(format!("stream '{stream}': {err}")))?;
        Ok(decoded
            .fields()
            .iter()
            .map(|field| {
                Arc::new(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(column_type(field.data_type())),
                )
            })
            .collect())
    }

    /// Refuses a declared column the reader schema's field can never be
    /// read as (`BOOLEAN` for a string field, say).
    pub fn check_columns(&self, stream: &str, columns: &Schema) -> Result<()> {
        let Some(schema) = &self.reader_schema else {
            return Ok(());
        };
        let decoded = decoded_schema(schema)
            .map_err(|err| BrookError::invalid(format!("stream '{stream}': {err}")))?;
        for column in columns.fields() {
            if let Ok(field) = decoded.field_with_name(column.name())
                && !can_cast_types(field.data_type(), column.data_type())
            {
                return Err(BrookError::invalid(format!(
                    "stream '{stream}': column {} is {}, and the Avro schema's field {} ({}) cannot be read as that",
                    column.name(),
                    crate::sql::sql_type_name(column.data_type()),
                    field.name(),
                    field.data_type()
                )));
            }
        }
        Ok(())
    }
}

/// The Arrow schema arrow-avro decodes records of `schema` into.
pub fn decoded_schema(schema: &str) -> std::result::Result<Arc<Schema>, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(0), AvroSchema::new(schema.to_string()))
        .map_err(|err| format!("the Avro schema: {err}"))?;
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .build_decoder()
        .map(|decoder| decoder.schema())
        .map_err(|err| format!("the Avro schema: {err}"))
}

/// The column type brook gives an Avro field decoded as `data_type`:
/// every timestamp is `TIMESTAMP` (nanoseconds, UTC as brook's timestamps
/// are), an enum is `TEXT`, the rest as decoded.
fn column_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        DataType::Dictionary(_, value) if matches!(**value, DataType::Utf8) => DataType::Utf8View,
        DataType::Utf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// The field names of record schema `schema`; an error naming `owner` if
/// it is not JSON or not a record.
fn record_fields(owner: &str, schema: &str) -> Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(schema).map_err(|err| {
        BrookError::invalid(format!("{owner}: the Avro schema is not JSON: {err}"))
    })?;
    let is_record = value.get("type").and_then(|t| t.as_str()) == Some("record");
    let fields = value.get("fields").and_then(|f| f.as_array());
    match (is_record, fields) {
        (true, Some(fields)) => Ok(fields
            .iter()
            .filter_map(|f| f.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect()),
        _ => Err(BrookError::invalid(format!(
            "{owner}: the Avro schema is not a record; brook reads records, one column per field"
        ))),
    }
}

/// The field names of record schema `schema` (empty if it is not one).
pub fn field_names(schema: &str) -> Vec<String> {
    record_fields("", schema).unwrap_or_default()
}

/// `schema` (a record) as the reader schema a stream decodes with: a
/// top-level field without a default gets `null` as its default (its type
/// made a union with `null` first), so that a writer schema without that
/// field gives NULL rather than refusing every message (a `NOT NULL`
/// column then refuses the row, naming the field).
pub fn with_null_defaults(schema: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(schema) else {
        return schema.to_string();
    };
    let Some(fields) = value.get_mut("fields").and_then(|f| f.as_array_mut()) else {
        return schema.to_string();
    };
    for field in fields.iter_mut().filter_map(|f| f.as_object_mut()) {
        if field.contains_key("default") {
            continue;
        }
        let null = serde_json::Value::String("null".into());
        let branches: Vec<serde_json::Value> = match field.remove("type") {
            Some(serde_json::Value::Array(branches)) => branches,
            Some(other) => vec![other],
            None => continue,
        };
        let mut union = vec![null.clone()];
        union.extend(branches.into_iter().filter(|b| *b != null));
        field.insert("type".into(), serde_json::Value::Array(union));
        field.insert("default".into(), serde_json::Value::Null);
    }
    value.to_string()
}

/// `id`'s frame: the magic byte and the id, big-endian.
pub fn frame(id: u32) -> [u8; FRAME_LEN] {
    let id = id.to_be_bytes();
    [MAGIC, id[0], id[1], id[2], id[3]]
}
