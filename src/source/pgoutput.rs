//! PostgreSQL's logical replication messages as the `pgoutput` plugin
//! writes them (protocol version 1), as far as a change stream of one
//! table needs: transactions (`B`egin, `C`ommit), the table's columns
//! (`R`elation) and its rows inserted, updated and deleted (`I`, `U`, `D`).
//! Values come in PostgreSQL's text format. Other messages (types,
//! origins, truncates, logical messages) are recognised and skipped.

/// A column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelationColumn {
    pub name: String,
    /// The column's type (`pg_type` OID).
    pub type_oid: u32,
}

/// One column's value in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    /// A TOASTed value that did not change and was not sent.
    Unchanged,
    Text(String),
}

/// A message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Begin {
        xid: u32,
    },
    Commit {
        /// The commit's LSN.
        lsn: u64,
    },
    Relation {
        id: u32,
        namespace: String,
        name: String,
        columns: Vec<RelationColumn>,
    },
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or old row (`O`), when sent.
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        /// The old key (`K`) or, with `REPLICA IDENTITY FULL`, row (`O`).
        old: Vec<Value>,
    },
    /// Anything else (type, origin, truncate, logical message).
    Other(u8),
}

/// Reads big-endian fields off a message.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "message ends early (wanted {n} more bytes, {} left)",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string without its terminating zero")?;
        let text = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, String> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Value::Text(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                other => return Err(format!("unknown tuple value kind '{}'", other as char)),
            });
        }
        Ok(values)
    }
}

/// Decodes one `pgoutput` message.
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, String> {
    let mut r = Reader { bytes };
    let kind = r.u8()?;
    Ok(match kind {
        b'B' => {
            let _final_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Message::Begin { xid: r.u32()? }
        }
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit { lsn: r.u64()? }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let _flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
                columns.push(RelationColumn { name, type_oid });
            }
            Message::Relation {
                id,
                namespace,
                name,
                columns,
            }
        }
        b'I' => {
            let relation = r.u32()?;
            expect(&mut r, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    expect(&mut r, b'N')?;
                    (Some(old), r.tuple()?)
                }
                b'N' => (None, r.tuple()?),
                other => return Err(format!("unknown update part '{}'", other as char)),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {}
                other => return Err(format!("unknown delete part '{}'", other as char)),
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        other => Message::Other(other),
    })
}

fn expect(r: &mut Reader<'_>, tag: u8) -> Result<(), String> {
    match r.u8()? {
        found if found == tag => Ok(()),
        found => Err(format!(
            "expected '{}', found '{}'",
            tag as char, found as char
        )),
    }
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
pub(crate) fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// An LSN from PostgreSQL's text.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut out = (values.len() as u16).to_be_bytes().to_vec();
        for value in values {
            match value {
                None => out.push(b'n'),
                Some(text) => {
                    out.push(b't');
                    out.extend((text.len() as u32).to_be_bytes());
                    out.extend(text.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn messages_of_a_transaction_decode_with_their_rows() {
        let mut begin = vec![b'B'];
        begin.extend(7u64.to_be_bytes());
        begin.extend(0u64.to_be_bytes());
        begin.extend(42u32.to_be_bytes());
        assert_eq!(decode(&begin), Ok(Message::Begin { xid: 42 }));

        let mut relation = vec![b'R'];
        relation.extend(16_384u32.to_be_bytes());
        relation.extend(b"public\0orders\0");
        relation.push(b'd');
        relation.extend(2u16.to_be_bytes());
        for (name, oid) in [("id", 23u32), ("status", 25)] {
            relation.push(1);
            relation.extend(name.as_bytes());
            relation.push(0);
            relation.extend(oid.to_be_bytes());
            relation.extend((-1i32).to_be_bytes());
        }
        assert_eq!(
            decode(&relation),
            Ok(Message::Relation {
                id: 16_384,
                namespace: "public".into(),
                name: "orders".into(),
                columns: vec![
                    RelationColumn {
                        name: "id".into(),
                        type_oid: 23
                    },
                    RelationColumn {
                        name: "status".into(),
                        type_oid: 25
                    },
                ],
            })
        );

        let mut update = vec![b'U'];
        update.extend(16_384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple(&[Some("1"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("2"), Some("paid")]));
        assert_eq!(
            decode(&update),
            Ok(Message::Update {
                relation: 16_384,
                old: Some(vec![Value::Text("1".into()), Value::Null]),
                new: vec![Value::Text("2".into()), Value::Text("paid".into())],
            })
        );

        let mut delete = vec![b'D'];
        delete.extend(16_384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("2"), None]));
        assert!(matches!(decode(&delete), Ok(Message::Delete { .. })));

        let mut commit = vec![b'C', 0];
        commit.extend(0x16_B374_D848u64.to_be_bytes());
        assert_eq!(
            decode(&commit),
            Ok(Message::Commit {
                lsn: 0x16_B374_D848
            })
        );
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        // Truncated messages are errors, never panics.
        for cut in 0..update.len() {
            let _ = decode(&update[..cut]);
        }
        assert!(decode(&update[..update.len() - 2]).is_err());
    }
}
