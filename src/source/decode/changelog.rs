//! Changelog envelopes: a line that carries a change is unwrapped into the
//! changed row as a JSON object with its kind in `op` (see
//! [`crate::changelog`]), which [`super::json::JsonLines`] then decodes as
//! any JSON row.
//!
//! - **Debezium JSON**: `{"before": ..., "after": ..., "op": "c"|"u"|"d"|"r"}`,
//!   alone or wrapped in `{"schema": ..., "payload": {...}}`. `c` and `r`
//!   (a snapshot read) are inserts of `after`, `u` an update to `after`,
//!   `d` a delete of `before` (at least its key).
//! - **Upsert Kafka**: brook frames each message as
//!   `{"key": <the message key>, "value": <the value, or null>}`. A value is
//!   the key's new row (`+U`); a null value (a tombstone) deletes the key.
//!   The key is the key column's value as text (as brook's Kafka sink
//!   writes it) or a JSON object of the key columns (Flink's style); a key
//!   column the value lacks is taken from the key.

use serde_json::{Map, Value};

use crate::changelog::{OP_COLUMN, Op};

/// How a changelog's lines are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// Debezium's JSON envelope.
    Debezium,
    /// brook's frame of an upsert Kafka message, keyed by these columns.
    Upsert { key: Vec<String> },
}

/// A changed row with its kind in `op`, or why the line carries none.
pub(super) type ChangedRow = std::result::Result<Map<String, Value>, String>;

impl Envelope {
    /// The row `line` carries.
    pub(super) fn unwrap(&self, line: &[u8]) -> ChangedRow {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err("empty line".into());
        }
        match self {
            Envelope::Debezium => debezium_line(line),
            Envelope::Upsert { key } => {
                let value: Value =
                    serde_json::from_slice(line).map_err(|err| format!("not JSON: {err}"))?;
                upsert(value, key)
            }
        }
    }
}

/// Debezium's envelope: only the fields brook reads are built (a
/// `source` block or a `schema` is skipped as it is parsed).
#[derive(serde::Deserialize)]
struct DebeziumEnvelope {
    op: Option<Value>,
    before: Option<Value>,
    after: Option<Value>,
    payload: Option<Value>,
}

fn debezium_line(line: &[u8]) -> ChangedRow {
    let envelope: DebeziumEnvelope = match serde_json::from_slice(line) {
        Ok(envelope) => envelope,
        Err(err) if err.is_data() => return Err("a Debezium change is a JSON object".into()),
        Err(err) => return Err(format!("not JSON: {err}")),
    };
    match (envelope.op, envelope.payload) {
        (None, Some(payload)) => {
            let Value::Object(mut payload) = payload else {
                return Err("a Debezium 'payload' is a JSON object".into());
            };
            debezium(
                payload.remove("op"),
                payload.remove("before"),
                payload.remove("after"),
            )
        }
        (op, _) => debezium(op, envelope.before, envelope.after),
    }
}

fn debezium(op: Option<Value>, before: Option<Value>, after: Option<Value>) -> ChangedRow {
    let op = match op {
        Some(Value::String(op)) => op,
        Some(other) => return Err(format!("Debezium 'op' is {other}, not a string")),
        None => return Err("no Debezium 'op' (c, u, d or r)".into()),
    };
    let (op, image, value) = match op.as_str() {
        "c" | "r" => (Op::Insert, "after", after),
        "u" => (Op::UpdateAfter, "after", after),
        "d" => (Op::Delete, "before", before),
        other => {
            return Err(format!(
                "Debezium 'op' '{other}' is not c, u, d or r (insert, update, delete, snapshot read)"
            ));
        }
    };
    match value {
        Some(Value::Object(row)) => Ok(with_op(op, row)),
        Some(Value::Null) | None => Err(format!(
            "Debezium 'op' '{}' without '{image}'",
            debezium_code(op)
        )),
        Some(other) => Err(format!("Debezium '{image}' is {other}, not an object")),
    }
}

fn debezium_code(op: Op) -> &'static str {
    match op {
        Op::Insert => "c",
        Op::UpdateBefore | Op::UpdateAfter => "u",
        Op::Delete => "d",
    }
}

fn upsert(frame: Value, key_columns: &[String]) -> ChangedRow {
    let Value::Object(mut frame) = frame else {
        return Err("internal: an upsert frame is an object".into());
    };
    let key = frame.remove("key").unwrap_or(Value::Null);
    let value = frame.remove("value").unwrap_or(Value::Null);
    let key = key_fields(key, key_columns)?;
    match value {
        Value::Null => {
            let Some(key) = key else {
                return Err("a tombstone (a message without a value) without a key".into());
            };
            Ok(with_op(Op::Delete, key))
        }
        Value::Object(mut row) => {
            for column in key_columns {
                if !row.contains_key(column) {
                    match key.as_ref().and_then(|key| key.get(column)) {
                        Some(value) => {
                            row.insert(column.clone(), value.clone());
                        }
                        None => {
                            return Err(format!(
                                "key column '{column}' is in neither the message's value nor its key"
                            ));
                        }
                    }
                }
            }
            Ok(with_op(Op::UpdateAfter, row))
        }
        other => Err(format!(
            "the message's value is {}, not a JSON object",
            kind(&other)
        )),
    }
}

/// The key columns' values of a message key: a JSON object of them, or
/// the one key column's value as text.
fn key_fields(
    key: Value,
    key_columns: &[String],
) -> std::result::Result<Option<Map<String, Value>>, String> {
    match key {
        Value::Null => Ok(None),
        Value::Object(fields) => Ok(Some(fields)),
        Value::String(text) => {
            // A key written as JSON (`{"id":17}` or `17`) reads as JSON.
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(fields)) => Ok(Some(fields)),
                _ => match key_columns {
                    [column] => Ok(Some(Map::from_iter([(
                        column.clone(),
                        Value::String(text),
                    )]))),
                    _ => Err(format!(
                        "the key '{text}' is not a JSON object, and the stream's key has {} columns ({})",
                        key_columns.len(),
                        key_columns.join(", ")
                    )),
                },
            }
        }
        other => Err(format!("internal: an upsert key is {}", kind(&other))),
    }
}

fn with_op(op: Op, mut row: Map<String, Value>) -> Map<String, Value> {
    // A field named `op` in the row is replaced: the stream's `op` column
    // is the change's kind (a declared column cannot be named `op`).
    row.insert(OP_COLUMN.into(), Value::String(op.code().into()));
    row
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// brook's frame of an upsert Kafka message: its key (text, or none) and
/// its value (raw bytes, or none for a tombstone), on one line.
pub(crate) fn upsert_frame(key: Option<&[u8]>, value: Option<&[u8]>, line: &mut Vec<u8>) {
    line.extend_from_slice(b"{\"key\":");
    match key {
        Some(key) => {
            let text = String::from_utf8_lossy(key);
            line.extend_from_slice(Value::String(text.into_owned()).to_string().as_bytes());
        }
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"value\":");
    match value {
        // JSON's line breaks are whitespace outside strings (inside, they
        // must be escaped), so a value's lines join on spaces.
        Some(value) if !value.iter().all(u8::is_ascii_whitespace) => line.extend(
            value
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        ),
        _ => line.extend_from_slice(b"null"),
    }
    line.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(envelope: &Envelope, line: &str) -> String {
        match envelope.unwrap(line.as_bytes()) {
            Ok(row) => Value::Object(row).to_string(),
            Err(why) => format!("bad: {why}"),
        }
    }

    /// `json` with its keys in the order a row's are shown.
    fn norm(json: &str) -> String {
        serde_json::from_str::<Value>(json).unwrap().to_string()
    }

    #[test]
    fn debezium_ops_become_their_rows_with_and_without_the_payload_wrapper() {
        let d = Envelope::Debezium;
        assert_eq!(
            row(&d, r#"{"before":null,"after":{"id":1,"n":"a"},"op":"c"}"#),
            norm(r#"{"op":"+I","id":1,"n":"a"}"#)
        );
        assert_eq!(
            row(&d, r#"{"before":null,"after":{"id":1},"op":"r"}"#),
            norm(r#"{"op":"+I","id":1}"#)
        );
        assert_eq!(
            row(&d, r#"{"before":null,"after":{"id":1,"n":"b"},"op":"u"}"#),
            norm(r#"{"op":"+U","id":1,"n":"b"}"#)
        );
        assert_eq!(
            row(&d, r#"{"before":{"id":1},"after":null,"op":"d"}"#),
            norm(r#"{"op":"-D","id":1}"#)
        );
        assert_eq!(
            row(
                &d,
                r#"{"schema":{"type":"struct"},"payload":{"before":null,"after":{"id":2},"op":"c","ts_ms":1}}"#
            ),
            norm(r#"{"op":"+I","id":2}"#)
        );
    }

    #[test]
    fn malformed_debezium_changes_say_what_is_wrong() {
        let d = Envelope::Debezium;
        for (line, why) in [
            ("", "empty line"),
            ("[1]", "is a JSON object"),
            ("{\"after\":{\"id\":1}}", "no Debezium 'op'"),
            ("{\"op\":\"x\",\"after\":{}}", "'x' is not c, u, d or r"),
            ("{\"op\":\"c\",\"after\":null}", "'c' without 'after'"),
            ("{\"op\":\"d\",\"before\":null}", "'d' without 'before'"),
            ("{\"op\":\"c\",\"after\":[1]}", "not an object"),
            ("{\"op\":\"c\"", "not JSON"),
        ] {
            let got = row(&d, line);
            assert!(
                got.starts_with("bad: ") && got.contains(why),
                "{line}: {got}"
            );
        }
    }

    fn framed(key: Option<&str>, value: Option<&str>) -> String {
        let mut line = Vec::new();
        upsert_frame(key.map(str::as_bytes), value.map(str::as_bytes), &mut line);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn upsert_messages_are_the_keys_rows_and_tombstones_delete_them() {
        let u = Envelope::Upsert {
            key: vec!["id".into()],
        };
        let upserted = row(&u, &framed(Some("7"), Some("{\"id\":7,\n\"n\":\"a\"}")));
        assert_eq!(upserted, norm(r#"{"op":"+U","id":7,"n":"a"}"#));
        // The key column taken from the key when the value lacks it.
        assert_eq!(
            row(&u, &framed(Some("7"), Some("{\"n\":\"a\"}"))),
            norm(r#"{"op":"+U","n":"a","id":"7"}"#)
        );
        assert_eq!(
            row(&u, &framed(Some("abc"), Some("{\"n\":\"a\"}"))),
            norm(r#"{"op":"+U","n":"a","id":"abc"}"#)
        );
        assert_eq!(
            row(&u, &framed(Some("7"), None)),
            norm(r#"{"op":"-D","id":"7"}"#)
        );
        assert_eq!(
            row(&u, &framed(Some("{\"id\":8}"), Some(""))),
            norm(r#"{"op":"-D","id":8}"#)
        );
        assert!(row(&u, &framed(None, None)).contains("without a key"));
        assert!(row(&u, &framed(Some("1"), Some("[1]"))).contains("not a JSON object"));
        assert!(row(&u, &framed(Some("1"), Some("{oops"))).contains("not JSON"));
        assert!(row(&u, &framed(None, Some("{\"n\":1}"))).contains("neither"));
        let composite = Envelope::Upsert {
            key: vec!["a".into(), "b".into()],
        };
        assert!(row(&composite, &framed(Some("x"), None)).contains("2 columns"));
        assert_eq!(
            row(&composite, &framed(Some("{\"a\":1,\"b\":\"x\"}"), None)),
            norm(r#"{"op":"-D","a":1,"b":"x"}"#)
        );
    }
}
