//! Avro message values into a stream's rows. Each message is one record:
//! its frame names the writer schema (asked of the registry once, then
//! kept), arrow-avro decodes the body into Arrow arrays, resolved against
//! the stream's reader schema, and the values go into the declared columns
//! strictly ([`crate::avro::convert`]).
//!
//! A message that cannot be read — no frame, an unknown schema id, a
//! registry that does not answer, a writer schema the reader schema cannot
//! resolve, a body that does not decode or holds more than one record, a
//! value that does not fit its column — is a bad row with the reason; the
//! rows around it are kept. Messages of one writer schema are decoded
//! together, so a chunk costs one arrow-avro batch per run of one schema.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;

use super::{BadLine, DecodedLines};
use crate::avro::convert::into_columns;
use crate::avro::{
    AvroValues, FRAME_LEN, MAGIC, RegistryError, SchemaSource, field_names, frame,
    with_null_defaults,
};

/// Rows one arrow-avro decoder holds before it is flushed.
const ROWS_PER_FLUSH: usize = 8192;
/// How long an id the registry did not know, or could not be asked about,
/// is refused before it is asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// Decodes a Kafka stream's Avro message values.
pub(crate) struct AvroDecoder {
    values: AvroValues,
    /// The declared columns the values go into.
    columns: SchemaRef,
    /// The reader schema's fields that are declared, when not all are.
    projection: Option<Vec<usize>>,
    /// A decoder per writer schema id seen, with its rows not yet flushed.
    writers: HashMap<u32, Writer>,
    /// Ids whose messages cannot be read, and why.
    refused: HashMap<u32, Refusal>,
}

struct Writer {
    schema: String,
    decoder: Decoder,
    /// The messages (indices in the chunk) whose rows the decoder holds.
    pending: Vec<usize>,
}

struct Refusal {
    why: String,
    /// When to ask the registry again (`None`: never, the schema itself
    /// cannot be read).
    ask_again: Option<Instant>,
}

/// What decoding a chunk has made so far.
#[derive(Default)]
struct Decoded {
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    /// Message index and why.
    bad: Vec<(usize, String)>,
}

impl AvroDecoder {
    /// A decoder of values read as `values` says, into `columns` (the
    /// stream's value columns).
    pub(crate) fn new(mut values: AvroValues, columns: SchemaRef) -> Self {
        values.reader_schema = values.reader_schema.as_deref().map(with_null_defaults);
        let projection = values.reader_schema.as_deref().and_then(|reader| {
            let fields = field_names(reader);
            let declared: Vec<usize> = (0..fields.len())
                .filter(|i| columns.field_with_name(&fields[*i]).is_ok())
                .collect();
            (!declared.is_empty() && declared.len() < fields.len()).then_some(declared)
        });
        Self {
            values,
            columns,
            projection,
            writers: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Decodes `messages` (one value each), numbered from `first_line`.
    pub(crate) async fn decode(&mut self, messages: &[&[u8]], first_line: u64) -> DecodedLines {
        let mut decoded = Decoded::default();
        let mut current: Option<u32> = None;
        for (index, message) in messages.iter().enumerate() {
            let (id, body) = match self.split(message) {
                Ok(split) => split,
                Err(why) => {
                    decoded.bad.push((index, why));
                    continue;
                }
            };
            if let Some(previous) = current.filter(|previous| *previous != id) {
                self.flush(previous, &mut decoded);
            }
            if let Err(why) = self.writer(id).await {
                decoded.bad.push((index, why));
                continue;
            }
            current = Some(id);
            self.feed(id, index, body, messages, &mut decoded);
        }
        if let Some(id) = current {
            self.flush(id, &mut decoded);
        }
        self.finish(decoded, messages.len(), first_line)
    }

    /// The writer schema's id and the body of `message`.
    fn split<'a>(&self, message: &'a [u8]) -> Result<(u32, &'a [u8]), String> {
        if let SchemaSource::Inline(_) = self.values.schemas {
            return Ok((0, message));
        }
        match message {
            [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
            [] => Err("an empty value (no schema registry frame)".into()),
            [first, ..] if *first != MAGIC => Err(format!(
                "the value does not start with the schema registry frame (magic byte 0x{first:02x}, expected 0x00)"
            )),
            short => Err(format!(
                "a value of {} bytes is shorter than the schema registry frame ({FRAME_LEN} bytes)",
                short.len()
            )),
        }
    }

    /// Makes sure `id` has a decoder: its schema asked of the registry (or
    /// the inline one) and resolved against the reader schema.
    async fn writer(&mut self, id: u32) -> Result<(), String> {
        if self.writers.contains_key(&id) {
            return Ok(());
        }
        if let Some(refusal) = self.refused.get(&id) {
            match refusal.ask_again {
                Some(at) if Instant::now() >= at => {
                    self.refused.remove(&id);
                }
                _ => return Err(refusal.why.clone()),
            }
        }
        let schema = match &self.values.schemas {
            SchemaSource::Inline(schema) => Ok(schema.clone()),
            SchemaSource::Registry(registry) => registry.schema_by_id(id).await,
        };
        let refusal = match schema {
            Ok(schema) => match self.build(id, &schema) {
                Ok(decoder) => {
                    let pending = Vec::new();
                    self.writers.insert(
                        id,
                        Writer {
                            schema,
                            decoder,
                            pending,
                        },
                    );
                    return Ok(());
                }
                Err(err) => Refusal {
                    why: format!("writer schema {id} cannot be read as the stream's schema: {err}"),
                    ask_again: None,
                },
            },
            Err(RegistryError::NotFound(message)) => Refusal {
                why: format!("unknown schema id {id} ({message})"),
                ask_again: Some(Instant::now() + ASK_AGAIN_AFTER),
            },
            Err(RegistryError::Failed(message)) => Refusal {
                why: format!("schema id {id} could not be fetched: {message}"),
                ask_again: Some(Instant::now() + ASK_AGAIN_AFTER),
            },
        };
        let why = refusal.why.clone();
        self.refused.insert(id, refusal);
        Err(why)
    }

    /// A decoder of bodies written with `schema` (id `id`).
    fn build(&self, id: u32, schema: &str) -> Result<Decoder, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(id), AvroSchema::new(schema.to_string()))
            .map_err(|err| err.to_string())?;
        // Strings as Utf8, cast to the columns' Utf8View afterwards:
        // arrow-avro 59's Utf8View output turns a null string into "".
        let mut builder = ReaderBuilder::new()
            .with_batch_size(ROWS_PER_FLUSH)
            .with_writer_schema_store(store);
        if let Some(reader) = &self.values.reader_schema {
            builder = builder.with_reader_schema(AvroSchema::new(reader.clone()));
            if let Some(projection) = &self.projection {
                builder = builder.with_projection(projection.clone());
            }
        }
        builder.build_decoder().map_err(|err| err.to_string())
    }

    /// Decodes message `index`'s body with `id`'s decoder. A body that does
    /// not decode to exactly one record is a bad row; the decoder, which
    /// may hold part of it, is built again with the rows it held.
    fn feed(
        &mut self,
        id: u32,
        index: usize,
        body: &[u8],
        messages: &[&[u8]],
        decoded: &mut Decoded,
    ) {
        let Some(mut writer) = self.writers.remove(&id) else {
            return;
        };
        match push(&mut writer.decoder, id, body) {
            Ok(()) => writer.pending.push(index),
            Err(why) => {
                decoded.bad.push((index, why));
                self.rebuild(id, &mut writer, messages, decoded);
            }
        }
        self.writers.insert(id, writer);
        if self
            .writers
            .get(&id)
            .is_some_and(|w| w.decoder.batch_is_full())
        {
            self.flush(id, decoded);
        }
    }

    /// A new decoder for `writer` (the old one may hold part of a bad
    /// body), fed again the bodies it held.
    fn rebuild(&self, id: u32, writer: &mut Writer, messages: &[&[u8]], decoded: &mut Decoded) {
        let pending = std::mem::take(&mut writer.pending);
        match self.build(id, &writer.schema) {
            Ok(decoder) => {
                writer.decoder = decoder;
                for index in pending {
                    let body = self
                        .split(messages[index])
                        .map(|(_, b)| b)
                        .unwrap_or_default();
                    match push(&mut writer.decoder, id, body) {
                        Ok(()) => writer.pending.push(index),
                        Err(why) => decoded.bad.push((index, why)),
                    }
                }
            }
            Err(why) => decoded
                .bad
                .extend(pending.into_iter().map(|i| (i, why.clone()))),
        }
    }

    /// The rows `id`'s decoder holds, into the declared columns.
    fn flush(&mut self, id: u32, decoded: &mut Decoded) {
        let Some(writer) = self.writers.get_mut(&id) else {
            return;
        };
        let pending = std::mem::take(&mut writer.pending);
        let batch = match writer.decoder.flush() {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(err) => {
                let why = format!("the body does not decode: {err}");
                decoded
                    .bad
                    .extend(pending.into_iter().map(|i| (i, why.clone())));
                return;
            }
        };
        match into_columns(&batch, &self.columns) {
            Ok((kept, refused)) => {
                decoded
                    .bad
                    .extend(refused.into_iter().map(|(row, why)| (pending[row], why)));
                decoded.batches.push(kept);
            }
            Err(err) => {
                let why = err.to_string();
                decoded
                    .bad
                    .extend(pending.into_iter().map(|i| (i, why.clone())));
            }
        }
    }

    fn finish(&self, mut decoded: Decoded, messages: usize, first_line: u64) -> DecodedLines {
        decoded.bad.sort_by_key(|(index, _)| *index);
        let mut bad_lines: Vec<BadLine> = decoded
            .bad
            .into_iter()
            .map(|(index, message)| BadLine {
                line: first_line + index as u64,
                message,
            })
            .collect();
        let batch = match decoded.batches.len() {
            0 => None,
            1 => decoded.batches.pop(),
            _ => match concat_batches(&self.columns, &decoded.batches) {
                Ok(batch) => Some(batch),
                Err(err) => {
                    bad_lines = (0..messages as u64)
                        .map(|i| BadLine {
                            line: first_line + i,
                            message: format!("joining decoded rows: {err}"),
                        })
                        .collect();
                    None
                }
            },
        };
        DecodedLines {
            batch: batch.filter(|b| b.num_rows() > 0),
            bad_lines,
            lines: messages as u64,
        }
    }
}

/// Feeds one body, framed with `id`, to `decoder`: exactly one record.
fn push(decoder: &mut Decoder, id: u32, body: &[u8]) -> Result<(), String> {
    let room = decoder.capacity();
    let framed = decoder
        .decode(&frame(id))
        .map_err(|err| format!("the body does not decode: {err}"))?;
    debug_assert_eq!(framed, FRAME_LEN);
    let read = decoder.decode(body).map_err(|err| {
        if decoder.capacity() + 1 == room {
            // The record was read, and what followed it was not a record.
            "bytes follow the record in the body".to_string()
        } else {
            format!("the body does not decode: {err}")
        }
    })?;
    if decoder.capacity() + 1 != room {
        return Err(format!(
            "the body ends inside its record ({} bytes)",
            body.len()
        ));
    }
    if read != body.len() {
        return Err(format!(
            "{} bytes follow the record in the body",
            body.len() - read
        ));
    }
    Ok(())
}
