//! The checkpoint file format: `BROOKCK2`, a JSON header (length-prefixed),
//! the number of state batches the file holds, each as an Arrow IPC stream
//! (length-prefixed; each keeps its schema and the schema's labels), and an
//! FNV-1a checksum of everything before it. Integers are little-endian.
//!
//! The header's `parts` is the state's layout: its batches in order, each
//! as `[checkpoint batch, index]`, the index-th batch held by the
//! checkpoint file of that batch: this file, or an earlier one that holds
//! the same bytes (an incremental checkpoint holds only what changed; see
//! the module above). Files of the first format, `BROOKCK1`, have no
//! layout and hold every batch; they still read.

use std::collections::BTreeMap;
use std::io::Cursor;

use chrono::{DateTime, Utc};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Value, json};

use crate::error::{BrookError, Result};

const MAGIC: &[u8; 8] = b"BROOKCK2";
/// The first format: every state batch held in the file, no layout.
const MAGIC_V1: &[u8; 8] = b"BROOKCK1";

/// Where one batch of a state is held: the `index`-th batch of the
/// checkpoint file of batch `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PartAt {
    pub batch: u64,
    pub index: u32,
}

/// A checkpoint file read back.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    pub header: CheckpointHeader,
    /// The state's batches in order, each where it is held.
    pub layout: Vec<PartAt>,
    /// The batches this file holds itself.
    pub held: Vec<RecordBatch>,
}

/// What a checkpoint says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The SQL of the query whose state it holds.
    pub sql: String,
    /// The last batch the state includes (0: none).
    pub batch: u64,
    /// When that batch was cut.
    pub batch_time: DateTime<Utc>,
    /// When the checkpoint was written.
    pub written: DateTime<Utc>,
    /// Per stream that can replay, where its source stood after the batch.
    pub positions: BTreeMap<String, Value>,
}

impl CheckpointHeader {
    /// No batch yet.
    pub(crate) fn empty(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            batch: 0,
            batch_time: DateTime::<Utc>::UNIX_EPOCH,
            written: DateTime::<Utc>::UNIX_EPOCH,
            positions: BTreeMap::new(),
        }
    }
}

/// The file's bytes: `header`, the state's `layout`, and the batches the
/// file holds (`held`, which the layout's entries of `header.batch` index).
pub(crate) fn encode(
    header: &CheckpointHeader,
    layout: &[PartAt],
    held: &[RecordBatch],
) -> Result<Vec<u8>> {
    let parts: Vec<[u64; 2]> = layout
        .iter()
        .map(|at| [at.batch, u64::from(at.index)])
        .collect();
    let mut header = header_json(header);
    header["parts"] = json!(parts);
    frame(MAGIC, &header, held)
}

/// What every format's header says.
fn header_json(header: &CheckpointHeader) -> Value {
    json!({
        "sql": header.sql,
        "batch": header.batch,
        "batch_time": header.batch_time.to_rfc3339(),
        "written": header.written.to_rfc3339(),
        "positions": header.positions,
    })
}

/// `magic`, `header`, the batches and the checksum, as the module says.
fn frame(magic: &[u8; 8], header: &Value, held: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    let header = header.to_string();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&(held.len() as u32).to_le_bytes());
    for batch in held {
        let mut writer = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
        writer.write(batch)?;
        writer.finish()?;
        let bytes = writer.into_inner()?;
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// A file that is not a whole checkpoint: torn by a crash, or changed by
/// something else. Not the user's doing nor a bug: external.
fn corrupt(why: &str) -> BrookError {
    BrookError::external("not a whole brook checkpoint", why)
}

/// Parses a file's bytes, checking its checksum first.
pub(crate) fn decode(bytes: &[u8]) -> Result<CheckpointFile> {
    let magic = bytes.get(..MAGIC.len());
    let first_format = magic == Some(MAGIC_V1.as_slice());
    if bytes.len() < MAGIC.len() + 8 || !(first_format || magic == Some(MAGIC.as_slice())) {
        return Err(corrupt("no BROOKCK2 header"));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 8);
    let mut expected = [0u8; 8];
    expected.copy_from_slice(checksum);
    if fnv1a(body) != u64::from_le_bytes(expected) {
        return Err(corrupt("its checksum does not match (torn or changed)"));
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| -> Result<&[u8]> {
        let slice = body
            .get(at..at + n)
            .ok_or_else(|| corrupt("it ends early"))?;
        at += n;
        Ok(slice)
    };
    let header_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("length"))?);
    let header: Value = serde_json::from_slice(take(header_len as usize)?)
        .map_err(|err| corrupt(&format!("its header is not JSON: {err}")))?;
    let time = |key: &str| -> Result<DateTime<Utc>> {
        header[key]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| corrupt(&format!("its header has no {key}")))
    };
    let layout: Option<Vec<PartAt>> = if first_format {
        None
    } else {
        let parts = header["parts"]
            .as_array()
            .ok_or_else(|| corrupt("its header has no parts"))?;
        let at = |part: &Value| -> Option<PartAt> {
            Some(PartAt {
                batch: part.get(0)?.as_u64()?,
                index: u32::try_from(part.get(1)?.as_u64()?).ok()?,
            })
        };
        Some(
            parts
                .iter()
                .map(|part| {
                    at(part).ok_or_else(|| corrupt("a part in its header is not [batch, index]"))
                })
                .collect::<Result<_>>()?,
        )
    };
    let header = CheckpointHeader {
        sql: header["sql"]
            .as_str()
            .ok_or_else(|| corrupt("its header has no sql"))?
            .to_string(),
        batch: header["batch"]
            .as_u64()
            .ok_or_else(|| corrupt("its header has no batch"))?,
        batch_time: time("batch_time")?,
        written: time("written")?,
        positions: header["positions"]
            .as_object()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    };
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("count"))?);
    let mut held = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt("length"))?);
        let len = usize::try_from(len).map_err(|_| corrupt("length"))?;
        let reader = StreamReader::try_new(Cursor::new(take(len)?), None)?;
        for batch in reader {
            held.push(batch?);
        }
    }
    let layout = match layout {
        Some(layout) => layout,
        None => (0..held.len() as u32)
            .map(|index| PartAt {
                batch: header.batch,
                index,
            })
            .collect(),
    };
    if let Some(missing) = layout
        .iter()
        .find(|at| at.batch == header.batch && at.index as usize >= held.len())
    {
        return Err(corrupt(&format!(
            "its layout names batch {} of {} it holds",
            missing.index + 1,
            held.len()
        )));
    }
    Ok(CheckpointFile {
        header,
        layout,
        held,
    })
}

/// FNV-1a, 64 bits: enough to tell a torn or altered file.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap()
    }

    /// The bytes of a file in the first format, as brook wrote them then.
    fn first_format(header: &CheckpointHeader, state: &[RecordBatch]) -> Vec<u8> {
        frame(MAGIC_V1, &header_json(header), state).unwrap()
    }

    #[test]
    fn a_checkpoint_of_the_first_format_reads_as_holding_every_batch() {
        let mut header = CheckpointHeader::empty("SELECT 1");
        header.batch = 9;
        let state = vec![batch(1), batch(2)];
        let file = decode(&first_format(&header, &state)).unwrap();
        assert_eq!(file.header, header);
        assert_eq!(file.held, state);
        assert_eq!(
            file.layout,
            vec![PartAt { batch: 9, index: 0 }, PartAt { batch: 9, index: 1 }]
        );
    }

    #[test]
    fn a_layout_naming_a_batch_the_file_lacks_is_not_a_whole_checkpoint() {
        let mut header = CheckpointHeader::empty("SELECT 1");
        header.batch = 4;
        let bytes = encode(&header, &[PartAt { batch: 4, index: 1 }], &[batch(1)]).unwrap();
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("its layout names batch 2 of 1"), "{err}");
    }
}
