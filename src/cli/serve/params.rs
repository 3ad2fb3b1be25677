//! Parameters of prepared statements (`$1`, `$2`, ...): how many, their
//! types (the client's, else what DataFusion infers, else text), and the
//! statement with each written in as a SQL literal of its type.

use chrono::{NaiveDate, NaiveDateTime};
use datafusion::logical_expr::LogicalPlan;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::{PgWireError, PgWireResult};

use super::encode::pg_type;
use super::errors::user_error;

/// Where in `sql` the code is, outside quotes and `--` comments: each
/// byte index of code, in order.
fn code_bytes(sql: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = sql.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        loop {
            let at = i;
            let byte = *bytes.get(at)?;
            i += 1;
            match byte {
                quote @ (b'\'' | b'"') => {
                    while i < bytes.len() && bytes[i] != quote {
                        i += 1;
                    }
                    i += 1;
                }
                b'-' if bytes.get(at + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => return Some(at),
            }
        }
    })
}

/// The statements of a string, cut at each `;` outside quotes and comments,
/// trimmed, empty ones left out.
pub(super) fn statements(sql: &str) -> Vec<&str> {
    let mut cuts = Vec::new();
    let mut start = 0;
    for i in code_bytes(sql).filter(|i| sql.as_bytes()[*i] == b';') {
        cuts.push(&sql[start..i]);
        start = i + 1;
    }
    cuts.push(&sql[start..]);
    cuts.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Where each `$n` outside quotes and comments is in `sql`: (start, end, n).
fn placeholders(sql: &str) -> Vec<(usize, usize, usize)> {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut after = 0;
    for start in code_bytes(sql).filter(|i| bytes[*i] == b'$') {
        if start < after {
            continue;
        }
        let mut end = start + 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if let Ok(n) = sql[start + 1..end].parse::<usize>()
            && n > 0
        {
            found.push((start, end, n));
        }
        after = end;
    }
    found
}

/// How many parameters `sql` takes (its highest `$n`).
pub(super) fn count(sql: &str) -> usize {
    placeholders(sql)
        .iter()
        .map(|(_, _, n)| *n)
        .max()
        .unwrap_or(0)
}

/// The parameters' types DataFusion infers from `plan` (text where it
/// cannot).
pub(super) fn types(plan: &LogicalPlan, count: usize) -> Vec<Type> {
    let inferred = plan.get_parameter_types().unwrap_or_default();
    (1..=count)
        .map(|n| {
            inferred
                .get(&format!("${n}"))
                .and_then(|t| t.as_ref())
                .map(pg_type)
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// The client's declared types, the inferred ones where it gave none.
pub(super) fn declared_or(declared: &[Option<Type>], inferred: &[Type]) -> Vec<Type> {
    let len = declared.len().max(inferred.len());
    (0..len)
        .map(|i| {
            declared
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| inferred.get(i).cloned())
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// `portal`'s statement with its parameters written in as literals.
pub(super) fn bind(portal: &Portal<String>, types: &[Type]) -> PgWireResult<String> {
    let sql = &portal.statement.statement;
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (start, end, n) in placeholders(sql) {
        let index = n - 1;
        if index >= portal.parameter_len() {
            return Err(user_error(
                "08P01",
                format!(
                    "the statement uses ${n}, and {} parameters were bound",
                    portal.parameter_len()
                ),
            ));
        }
        let pg_type = types.get(index).cloned().unwrap_or(Type::TEXT);
        out.push_str(&sql[copied..start]);
        out.push_str(&literal(portal, index, &pg_type)?);
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// Parameter `index` as a SQL literal of `pg_type`.
fn literal(portal: &Portal<String>, index: usize, pg_type: &Type) -> PgWireResult<String> {
    let bad = |err: PgWireError| user_error("22P02", format!("parameter ${}: {err}", index + 1));
    macro_rules! value {
        ($rust:ty) => {
            portal.parameter::<$rust>(index, pg_type).map_err(bad)?
        };
    }
    let text = match *pg_type {
        Type::INT2 => value!(i16).map(|v| v.to_string()),
        Type::INT4 => value!(i32).map(|v| v.to_string()),
        Type::INT8 => value!(i64).map(|v| v.to_string()),
        Type::FLOAT4 => value!(f32).map(|v| format!("CAST({v:?} AS REAL)")),
        Type::FLOAT8 => value!(f64).map(|v| format!("CAST({v:?} AS DOUBLE)")),
        Type::BOOL => value!(bool).map(|v| v.to_string()),
        Type::DATE => value!(NaiveDate).map(|v| format!("DATE '{v}'")),
        Type::TIMESTAMP => value!(NaiveDateTime).map(|v| format!("TIMESTAMP '{v}'")),
        _ => match portal.parameter::<String>(index, pg_type) {
            Ok(value) => value.map(|v| quoted(&v)),
            Err(_) => match portal.parameters.get(index).cloned().flatten() {
                None => None,
                Some(bytes) if !portal.parameter_format.is_binary(index) => {
                    Some(quoted(&String::from_utf8_lossy(&bytes)))
                }
                Some(_) => {
                    return Err(user_error(
                        "0A000",
                        format!(
                            "parameter ${}: a binary {} parameter is not supported; send it as text",
                            index + 1,
                            pg_type.name()
                        ),
                    ));
                }
            },
        },
    };
    Ok(text.unwrap_or_else(|| "NULL".to_string()))
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_in_quotes_and_comments_are_not_parameters() {
        let sql = "SELECT '$1', \"$2\", $1 -- $3\n, $2 FROM t WHERE x = $10";
        let found: Vec<usize> = placeholders(sql).iter().map(|(_, _, n)| *n).collect();
        assert_eq!(found, [1, 2, 10]);
        assert_eq!(count(sql), 10);
        assert_eq!(quoted("it's"), "'it''s'");
        assert_eq!(
            statements("BEGIN; INSERT INTO t VALUES ('a;b'); -- c;\nCOMMIT;;"),
            ["BEGIN", "INSERT INTO t VALUES ('a;b')", "-- c;\nCOMMIT"]
        );
    }
}
