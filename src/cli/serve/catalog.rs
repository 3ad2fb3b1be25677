//! Enough of `pg_catalog` for psql's `\d` and `\d name`: psql's own
//! catalog queries, recognized by what they select, answered from brook's
//! catalog (streams, materialized views, tables), one relation per name in
//! schema `public`. Another query of `pg_catalog` that brook does not know
//! gets an empty result, so a client's optional look-ups find nothing
//! rather than fail.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::context::StreamContext;

/// The oid brook gives the `index`th relation.
const FIRST_OID: usize = 16384;

/// The rows answering `sql`, when it is a catalog query brook answers.
pub(super) fn answer(ctx: &StreamContext, sql: &str) -> Option<(SchemaRef, Vec<RecordBatch>)> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("pg_catalog.") && !lower.contains("information_schema.") {
        return None;
    }
    if lower.contains("information_schema.") && !lower.contains("pg_catalog.") {
        // DataFusion has information_schema itself.
        return None;
    }
    let relations = relations(ctx);
    if lower.contains("\"schema\"") && lower.contains("\"name\"") && lower.contains("\"type\"") {
        return Some(listing(&relations, &lower));
    }
    if lower.contains("operator(pg_catalog.~)") && lower.contains("c.relname") {
        let pattern = quoted_after(sql, "OPERATOR(pg_catalog.~)").unwrap_or_default();
        let name = pattern.trim_start_matches("^(").trim_end_matches(")$");
        let found: Vec<&Relation> = relations.iter().filter(|r| r.name == name).collect();
        return Some(text_rows(
            &["oid", "nspname", "relname"],
            found
                .iter()
                .map(|r| {
                    vec![
                        Some(r.oid.to_string()),
                        Some("public".into()),
                        Some(r.name.clone()),
                    ]
                })
                .collect(),
        ));
    }
    let oid = quoted_after(&lower, "c.oid = ").or_else(|| quoted_after(&lower, "a.attrelid = "));
    let relation = oid.and_then(|oid| relations.iter().find(|r| r.oid.to_string() == oid));
    if let Some(relation) = relation {
        if lower.contains("c.relchecks") {
            return Some(table_info());
        }
        if lower.contains("from pg_catalog.pg_attribute a") {
            return Some(columns(relation));
        }
    }
    Some((Arc::new(Schema::empty()), Vec::new()))
}

struct Relation {
    oid: usize,
    name: String,
    kind: &'static str,
    schema: SchemaRef,
}

fn relations(ctx: &StreamContext) -> Vec<Relation> {
    let session = ctx.session();
    let Some(catalog) = session.catalog("datafusion") else {
        return Vec::new();
    };
    let Some(schema) = catalog.schema("public") else {
        return Vec::new();
    };
    let streams = ctx.stream_names();
    let views = ctx.view_names();
    let mut names = schema.table_names();
    names.sort();
    names
        .into_iter()
        .enumerate()
        .filter_map(|(index, name)| {
            let table = futures::executor::block_on(schema.table(&name))
                .ok()
                .flatten()?;
            let kind = if views.contains(&name) {
                "materialized view"
            } else if streams.contains(&name) {
                "stream"
            } else {
                "table"
            };
            Some(Relation {
                oid: FIRST_OID + index,
                name,
                kind,
                schema: table.schema(),
            })
        })
        .collect()
}

/// psql's `\d` list (`\dt`, `\dv`, `\dm` alike): schema, name, type, owner.
fn listing(relations: &[Relation], lower: &str) -> (SchemaRef, Vec<RecordBatch>) {
    let pattern = lower
        .split("operator(pg_catalog.~) '^(")
        .nth(1)
        .and_then(|rest| rest.split(")$'").next())
        .map(str::to_string);
    let rows = relations
        .iter()
        .filter(|r| {
            pattern
                .as_deref()
                .is_none_or(|p| r.name.eq_ignore_ascii_case(p))
        })
        .map(|r| {
            vec![
                Some("public".to_string()),
                Some(r.name.clone()),
                Some(r.kind.to_string()),
                Some("brook".to_string()),
            ]
        })
        .collect();
    text_rows(&["Schema", "Name", "Type", "Owner"], rows)
}

/// The row psql reads about a relation before its columns.
fn table_info() -> (SchemaRef, Vec<RecordBatch>) {
    let names = [
        "relchecks",
        "relkind",
        "relhasindex",
        "relhasrules",
        "relhastriggers",
        "relrowsecurity",
        "relforcerowsecurity",
        "relhasoids",
        "relispartition",
        "reloptions",
        "reltablespace",
        "reloftype",
        "relpersistence",
        "relreplident",
        "amname",
    ];
    let values = [
        "0", "r", "f", "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d", "",
    ];
    text_rows(
        &names,
        vec![values.iter().map(|v| Some(v.to_string())).collect()],
    )
}

/// A relation's columns as psql's `\d name` reads them.
fn columns(relation: &Relation) -> (SchemaRef, Vec<RecordBatch>) {
    let fields = relation.schema.fields();
    let text = |values: Vec<Option<String>>| Arc::new(StringArray::from(values)) as ArrayRef;
    let schema = Arc::new(Schema::new(vec![
        Field::new("attname", DataType::Utf8, false),
        Field::new("format_type", DataType::Utf8, false),
        Field::new("attdefault", DataType::Utf8, true),
        Field::new("attnotnull", DataType::Boolean, false),
        Field::new("attcollation", DataType::Utf8, true),
        Field::new("attidentity", DataType::Utf8, false),
        Field::new("attgenerated", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        text(fields.iter().map(|f| Some(f.name().clone())).collect()),
        text(
            fields
                .iter()
                .map(|f| Some(type_name(f.data_type())))
                .collect(),
        ),
        text(vec![None; fields.len()]),
        Arc::new(BooleanArray::from(
            fields.iter().map(|f| !f.is_nullable()).collect::<Vec<_>>(),
        )),
        text(vec![None; fields.len()]),
        text(vec![Some(String::new()); fields.len()]),
        text(vec![Some(String::new()); fields.len()]),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).ok();
    (schema, batch.into_iter().collect())
}

/// PostgreSQL's name for a column type, as `format_type` writes it.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".into(),
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => "bytea".into(),
        other => other.to_string(),
    }
}

fn text_rows(names: &[&str], rows: Vec<Vec<Option<String>>>) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = (0..names.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).ok();
    (schema, batch.into_iter().collect())
}

/// The single-quoted text after `marker` in `sql`.
fn quoted_after<'a>(sql: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &sql[sql.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix('\'')?;
    rest.split('\'').next()
}
