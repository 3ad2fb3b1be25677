//! The checkpoint file format: `BROOKCK1`, a JSON header (length-prefixed),
//! the number of state batches, each state batch as an Arrow IPC stream
//! (length-prefixed; each keeps its schema and the schema's labels), and an
//! FNV-1a checksum of everything before it. Integers are little-endian.

use std::collections::BTreeMap;
use std::io::Cursor;

use chrono::{DateTime, Utc};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Value, json};

use crate::error::{BrookError, Result};

const MAGIC: &[u8; 8] = b"BROOKCK1";

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

/// The file's bytes.
pub(crate) fn encode(header: &CheckpointHeader, state: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let header = json!({
        "sql": header.sql,
        "batch": header.batch,
        "batch_time": header.batch_time.to_rfc3339(),
        "written": header.written.to_rfc3339(),
        "positions": header.positions,
    })
    .to_string();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&(state.len() as u32).to_le_bytes());
    for batch in state {
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
pub(crate) fn decode(bytes: &[u8]) -> Result<(CheckpointHeader, Vec<RecordBatch>)> {
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("no BROOKCK1 header"));
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
    let mut state = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt("length"))?);
        let len = usize::try_from(len).map_err(|_| corrupt("length"))?;
        let reader = StreamReader::try_new(Cursor::new(take(len)?), None)?;
        for batch in reader {
            state.push(batch?);
        }
    }
    Ok((header, state))
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
