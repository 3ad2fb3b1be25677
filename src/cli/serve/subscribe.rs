//! `SUBSCRIBE TO view` and `SUBSCRIBE (SELECT ...)` (Materialize's words):
//! each batch's rows go to the client as they come, written and flushed
//! here (pgwire would hold a result's rows until it ends), each row led by
//! the batch's number. It runs until the client cancels (the protocol's
//! cancel request drops this future, which stops the subscription's own
//! query) or goes away (a write fails). A slow client holds back only its
//! own query; a view's subscriber that falls behind by more than the
//! view's backlog is told how many results it missed.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::results::{FieldFormat, Response, Tag};
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::RowDescription;
use pgwire::messages::response::NoticeResponse;
use tokio::sync::broadcast::error::RecvError;

use super::encode::{fields, rows};
use super::errors::{error_info, user_error};
use crate::context::{SqlOutput, StreamContext};

/// What a `SUBSCRIBE` names.
enum Target {
    View(String),
    Query(String),
}

fn target(text: &str) -> PgWireResult<Target> {
    let rest = text["subscribe".len()..].trim();
    let usage = || {
        user_error(
            "42601",
            "SUBSCRIBE TO view, or SUBSCRIBE (SELECT ...)".to_string(),
        )
    };
    if let Some(inner) = rest.strip_prefix('(') {
        let inner = inner.trim_end().strip_suffix(')').ok_or_else(usage)?;
        return Ok(Target::Query(inner.trim().to_string()));
    }
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("select") || lower.starts_with("with") {
        return Ok(Target::Query(rest.to_string()));
    }
    if lower == "to" {
        return Err(usage());
    }
    let name = match lower.strip_prefix("to") {
        Some(after) if after.starts_with(char::is_whitespace) => rest[2..].trim(),
        _ => rest,
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(usage());
    }
    // A name as SQL reads it: lower-cased unless quoted.
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => name.to_ascii_lowercase(),
    };
    Ok(Target::View(name))
}

/// Runs a `SUBSCRIBE`, writing its rows to `client`.
pub(super) async fn run<C>(
    ctx: &StreamContext,
    client: &mut C,
    text: &str,
) -> PgWireResult<Vec<Response>>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let sent = match target(text)? {
        Target::View(name) => view(ctx, client, &name).await?,
        Target::Query(sql) => query(ctx, client, &sql).await?,
    };
    Ok(vec![Response::Execution(
        Tag::new("SUBSCRIBE").with_rows(sent),
    )])
}

async fn view<C>(ctx: &StreamContext, client: &mut C, name: &str) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let Some(table) = ctx.view(name) else {
        return Err(user_error(
            "42P01",
            format!("materialized view '{name}' does not exist"),
        ));
    };
    let (current, mut updates) = table.subscribe();
    let schema = with_batch_column(&datafusion::catalog::TableProvider::schema(table.as_ref()));
    let mut writer = Writer::start(client, schema).await?;
    if let Some(batch) = current.batch_number {
        writer.send(batch, &current.batches).await?;
    }
    loop {
        match updates.recv().await {
            Ok(rows) => {
                let batch = rows.batch_number.unwrap_or_default();
                writer.send(batch, &rows.batches).await?;
            }
            Err(RecvError::Lagged(missed)) => writer.notice(missed).await?,
            Err(RecvError::Closed) => return Ok(writer.sent),
        }
    }
}

async fn query<C>(ctx: &StreamContext, client: &mut C, sql: &str) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut query = match ctx.sql(sql).await {
        Ok(SqlOutput::Query(query)) => query,
        Ok(_) => {
            return Err(user_error(
                "0A000",
                "SUBSCRIBE needs a continuous query (a SELECT that reads a stream); run a one-off SELECT as it is".to_string(),
            ));
        }
        Err(err) => return Err(PgWireError::UserError(Box::new(error_info(&err)))),
    };
    let mut writer = Writer::start(client, with_batch_column(&query.schema())).await?;
    while let Some(output) = query.next().await {
        match output {
            Ok(output) => writer.send(output.batch_number, &output.batches).await?,
            Err(err) => return Err(PgWireError::UserError(Box::new(error_info(&err)))),
        }
    }
    Ok(writer.sent)
}

fn with_batch_column(schema: &SchemaRef) -> SchemaRef {
    let mut columns = vec![Arc::new(Field::new("batch", DataType::Int64, false))];
    columns.extend(schema.fields().iter().cloned());
    Arc::new(Schema::new(columns))
}

/// Writes a subscription's rows to its client, a flush per batch.
struct Writer<'a, C> {
    client: &'a mut C,
    schema: SchemaRef,
    fields: Arc<Vec<pgwire::api::results::FieldInfo>>,
    sent: usize,
}

impl<'a, C> Writer<'a, C>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    async fn start(client: &'a mut C, schema: SchemaRef) -> PgWireResult<Self> {
        let fields = fields(&schema, |_| FieldFormat::Text);
        let description = RowDescription::new(fields.iter().map(Into::into).collect());
        client
            .send(PgWireBackendMessage::RowDescription(description))
            .await?;
        Ok(Self {
            client,
            schema,
            fields,
            sent: 0,
        })
    }

    async fn send(&mut self, batch_number: u64, batches: &[RecordBatch]) -> PgWireResult<()> {
        let mut led = Vec::with_capacity(batches.len());
        for batch in batches {
            let number: ArrayRef = Arc::new(Int64Array::from(vec![
                batch_number as i64;
                batch.num_rows()
            ]));
            let mut columns = vec![number];
            columns.extend(batch.columns().iter().cloned());
            let led_batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
                .map_err(|err| PgWireError::ApiError(Box::new(err)))?;
            led.push(led_batch);
        }
        for row in rows(&led, &self.fields)? {
            self.client.feed(PgWireBackendMessage::DataRow(row)).await?;
            self.sent += 1;
        }
        self.client.flush().await?;
        Ok(())
    }

    async fn notice(&mut self, missed: u64) -> PgWireResult<()> {
        let info = ErrorInfo::new(
            "NOTICE".to_string(),
            "01000".to_string(),
            format!("this subscriber fell behind and missed {missed} results of the view"),
        );
        self.client
            .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_names_a_view_or_a_query() {
        assert!(matches!(target("SUBSCRIBE TO totals"), Ok(Target::View(v)) if v == "totals"));
        assert!(matches!(target("subscribe totals"), Ok(Target::View(v)) if v == "totals"));
        assert!(
            matches!(target("SUBSCRIBE (SELECT * FROM s)"), Ok(Target::Query(q)) if q == "SELECT * FROM s")
        );
        assert!(matches!(target("SUBSCRIBE SELECT 1"), Ok(Target::Query(q)) if q == "SELECT 1"));
        assert!(target("SUBSCRIBE TO").is_err());
    }
}
