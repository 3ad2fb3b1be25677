//! The dashboard's JSON: `/api/queries`, `/api/streams`, `/api/warnings`,
//! `/api/history`, and the page's live updates, which hold all four. SQL,
//! options and messages pass through [`redact_secrets`] first.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Value, json};

use super::history::{Dashboard, Sample};
use crate::error::ErrorKind;
use crate::query::registry::{LatestResult, QueryEnd};
use crate::query::{QueryInfo, QueryStats, SinkProgress};
use crate::redact::redact_secrets;

/// Characters of a result cell shown; longer values are cut.
const MAX_CELL_CHARS: usize = 200;

/// Every running query, then the recently ended ones, newest first.
pub(crate) fn queries(dashboard: &Dashboard) -> Value {
    let registry = dashboard.ctx.query_registry();
    let mut all = Vec::new();
    for entry in registry.all() {
        let info = entry.info();
        let latest = entry.latest.lock().clone();
        let rates = dashboard.latest_sample(info.id);
        all.push(query(&info, "running", None, None, latest.as_ref(), rates));
    }
    for ended in registry.ended().iter().rev() {
        let (state, error) = match &ended.end {
            QueryEnd::Finished => ("finished", None),
            QueryEnd::Stopped => ("stopped", None),
            QueryEnd::Failed(error) => ("failed", Some(error.as_str())),
        };
        all.push(query(
            &ended.info,
            state,
            error,
            Some(ended.ended_at),
            ended.latest.as_ref(),
            None,
        ));
    }
    Value::Array(all)
}

fn query(
    info: &QueryInfo,
    state: &str,
    error: Option<&str>,
    ended_at: Option<DateTime<Utc>>,
    latest: Option<&LatestResult>,
    rates: Option<Sample>,
) -> Value {
    let stats = &info.stats;
    json!({
        "id": info.id,
        "state": state,
        "error": error.map(redact_secrets),
        "output": redact_secrets(&info.output),
        "sql": redact_secrets(&info.sql),
        "started": timestamp(info.started),
        "ended": ended_at.map(timestamp),
        "batches": stats.batches,
        "rows_in": stats.rows_in,
        "rows_out": stats.rows_out,
        "rows_in_per_second": rates.map_or(0.0, |r| r.rows_in_per_second),
        "rows_out_per_second": rates.map_or(0.0, |r| r.rows_out_per_second),
        "last_batch_seconds": stats.last_batch.as_secs_f64(),
        "lag_seconds": stats.lag.as_secs_f64(),
        "retained_batches": stats.retained.batches,
        "retained_rows": stats.retained.rows,
        "retained_bytes": stats.retained.bytes,
        "retained_by_stream": stats.retained.by_stream_text(),
        "late_rows": stats.late_rows,
        "far_future_rows": stats.far_future_rows,
        "watermark": stats.watermark.map(timestamp),
        "event_time": event_time(stats),
        "checkpoint": stats.checkpoint.map(|batch| json!({
            "batch": batch,
            "written": stats.checkpoint_written.map(timestamp),
            "bytes": stats.checkpoint_bytes,
        })),
        "sink": stats.sink.as_ref().map(sink_progress),
        "latest_result": latest.map(latest_result),
    })
}

/// An event-time query's watermark (`ended` once every stream has ended),
/// how far it is behind the wall clock now, and its late and far-future
/// rows; `null` for a query that has neither a watermark nor such rows.
fn event_time(stats: &QueryStats) -> Value {
    if stats.watermark.is_none() && stats.late_rows == 0 && stats.far_future_rows == 0 {
        return Value::Null;
    }
    let ended = stats.watermark == Some(DateTime::<Utc>::MAX_UTC);
    let behind = stats
        .watermark
        .filter(|_| !ended)
        .map(|mark| (Utc::now() - mark).num_milliseconds() as f64 / 1000.0);
    json!({
        "watermark": stats.watermark.filter(|_| !ended).map(timestamp),
        "ended": ended,
        "behind_seconds": behind,
        "late_rows": stats.late_rows,
        "far_future_rows": stats.far_future_rows,
    })
}

/// What a sink's query has written.
fn sink_progress(progress: &SinkProgress) -> Value {
    json!({
        "batches_written": progress.batches_written,
        "rows_written": progress.rows_written,
        "last_batch": progress.last_written.map(|(batch, _)| batch),
        "last_written": progress.last_written.map(|(_, at)| timestamp(at)),
        "batches_skipped": progress.batches_skipped,
        "batches_failed": progress.batches_failed,
    })
}

/// The first rows of a result as text, column by column as brook prints
/// them (NULL for nulls).
fn latest_result(latest: &LatestResult) -> Value {
    let options = FormatOptions::default().with_null("NULL");
    let columns: Vec<&str> = latest
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in &latest.rows {
        let formatters: Vec<Option<ArrayFormatter<'_>>> = batch
            .columns()
            .iter()
            .map(|array| ArrayFormatter::try_new(array.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|formatter| match formatter {
                        Some(formatter) => cut(formatter.value(row).to_string()),
                        None => "?".to_string(),
                    })
                    .collect(),
            );
        }
    }
    json!({
        "batch": latest.batch_number,
        "columns": columns,
        "rows": rows,
        "total_rows": latest.total_rows,
    })
}

/// `text` cut to [`MAX_CELL_CHARS`] characters, with `…` when cut.
fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_CELL_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Every registered stream, by name.
pub(crate) fn streams(dashboard: &Dashboard) -> Value {
    let streams = dashboard.ctx.streams();
    Value::Array(
        streams
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "connector": s.connector,
                    "state": s.state,
                    "failure": s.failure.as_deref().map(redact_secrets),
                    "columns": s.columns(),
                    "options": redact_secrets(&s.options),
                    "rows_received": s.rows_received,
                    "rows_dropped": s.rows_dropped,
                    "rows_pending": s.rows_pending,
                    "peak_pending_rows": s.peak_pending_rows,
                    "peak_pending_bytes": s.peak_pending_bytes,
                    "max_pending_rows": s.limits.max_pending_rows,
                    "max_pending_bytes": s.limits.max_pending_bytes,
                    "max_batch_rows": s.limits.max_batch_rows,
                })
            })
            .collect(),
    )
}

/// The recent warnings, newest first, and how many there were in all.
pub(crate) fn warnings(dashboard: &Dashboard) -> Value {
    let (recent, total) = dashboard.ctx.recent_warnings().snapshot();
    let recent: Vec<Value> = recent
        .iter()
        .rev()
        .map(|w| {
            json!({
                "time": timestamp(w.time),
                "kind": match w.kind {
                    ErrorKind::User => "user",
                    ErrorKind::External => "external",
                    _ => "internal",
                },
                "message": redact_secrets(&w.message),
            })
        })
        .collect();
    json!({ "total": total, "recent": recent })
}

/// Each query's samples as `[unix_ms, rows_in_per_second,
/// rows_out_per_second, batch_seconds, lag_seconds]`, by id.
pub(crate) fn history(samples: &BTreeMap<u64, Vec<Sample>>) -> Value {
    Value::Object(
        samples
            .iter()
            .map(|(id, samples)| {
                let points: Vec<Value> = samples
                    .iter()
                    .map(|s| {
                        json!([
                            s.at_ms,
                            s.rows_in_per_second,
                            s.rows_out_per_second,
                            s.batch_seconds,
                            s.lag_seconds
                        ])
                    })
                    .collect();
                (id.to_string(), Value::Array(points))
            })
            .collect(),
    )
}

/// One live update of the page: everything, with only the samples this
/// connection has not been sent yet (`sent` remembers the newest sent).
pub(crate) fn update(dashboard: &Dashboard, sent: &mut BTreeMap<u64, i64>) -> Value {
    let samples = dashboard.samples_since(sent);
    sent.retain(|id, _| samples.contains_key(id));
    for (id, new) in &samples {
        if let Some(last) = new.last() {
            sent.insert(*id, last.at_ms);
        }
    }
    json!({
        "time": timestamp(Utc::now()),
        "queries": queries(dashboard),
        "streams": streams(dashboard),
        "warnings": warnings(dashboard),
        "history": history(&samples),
    })
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}
