//! `/metrics`: the running queries and the streams in Prometheus' text
//! format (version 0.0.4). Counters end in `_total`, durations are in
//! seconds and sizes in bytes; a query's series carry `query="ID"`, a
//! stream's `stream="NAME"`. Queries that ended have no series.

use std::fmt::Write;

use super::history::Dashboard;

/// A metric family: name, type and help.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// What it measures.
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: &'static str, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

const QUERY_INFO: Metric = metric(
    "brook_query_info",
    "gauge",
    "A running continuous query (always 1); output is where its results go.",
);
const QUERY_BATCHES: Metric = metric(
    "brook_query_batches_total",
    "counter",
    "Batches the query has run.",
);
const QUERY_ROWS_IN: Metric = metric(
    "brook_query_rows_in_total",
    "counter",
    "Rows the query has read, over all its streams.",
);
const QUERY_ROWS_OUT: Metric = metric(
    "brook_query_rows_out_total",
    "counter",
    "Rows the query has produced.",
);
const QUERY_LAST_BATCH: Metric = metric(
    "brook_query_last_batch_duration_seconds",
    "gauge",
    "Execution time of the query's last batch.",
);
const QUERY_LAG: Metric = metric(
    "brook_query_lag_seconds",
    "gauge",
    "How late the query's last batch started after its tick.",
);
const QUERY_RETAINED_BATCHES: Metric = metric(
    "brook_query_retained_batches",
    "gauge",
    "Micro-batches a window or running query holds.",
);
const QUERY_RETAINED_ROWS: Metric = metric(
    "brook_query_retained_rows",
    "gauge",
    "Rows a window or running query holds (raw rows or partial aggregates).",
);
const QUERY_RETAINED_BYTES: Metric = metric(
    "brook_query_retained_bytes",
    "gauge",
    "Arrow memory a window or running query holds.",
);
const QUERY_RETAINED_ROWS_BY_STREAM: Metric = metric(
    "brook_query_retained_rows_by_stream",
    "gauge",
    "Rows a join of streams holds, per stream.",
);
const QUERY_LATE_ROWS: Metric = metric(
    "brook_query_late_rows_total",
    "counter",
    "Rows an event-time query took as late (every window they belong to had closed).",
);
const QUERY_WATERMARK: Metric = metric(
    "brook_query_watermark_seconds",
    "gauge",
    "An event-time query's watermark, in seconds since the epoch (absent before its first event time).",
);
const QUERY_CHECKPOINT_BATCH: Metric = metric(
    "brook_query_checkpoint_batch",
    "gauge",
    "The last batch whose checkpoint the query wrote (with a checkpoint directory).",
);
const QUERY_CHECKPOINT_BYTES: Metric = metric(
    "brook_query_checkpoint_bytes",
    "gauge",
    "The size of the query's last checkpoint.",
);
const QUERY_SINK_BATCHES: Metric = metric(
    "brook_query_sink_batches_written_total",
    "counter",
    "Batches a sink's query has written (and committed, where the sink has transactions).",
);
const QUERY_SINK_ROWS: Metric = metric(
    "brook_query_sink_rows_written_total",
    "counter",
    "Rows a sink's query has written.",
);
const QUERY_SINK_FAILED: Metric = metric(
    "brook_query_sink_batches_failed_total",
    "counter",
    "Batches a sink's query failed to write.",
);
const STREAM_INFO: Metric = metric(
    "brook_stream_info",
    "gauge",
    "A registered stream (always 1), with its connector and state.",
);
const STREAM_RECEIVED: Metric = metric(
    "brook_stream_rows_received_total",
    "counter",
    "Rows the stream has received.",
);
const STREAM_DROPPED: Metric = metric(
    "brook_stream_rows_dropped_total",
    "counter",
    "Rows the stream has dropped (malformed, too long), each reported as a warning.",
);
const STREAM_PENDING: Metric = metric(
    "brook_stream_rows_pending",
    "gauge",
    "Rows received and not yet cut into a batch.",
);
const STREAM_PEAK_ROWS: Metric = metric(
    "brook_stream_peak_pending_rows",
    "gauge",
    "The most rows that have waited for a batch at once.",
);
const STREAM_PEAK_BYTES: Metric = metric(
    "brook_stream_peak_pending_bytes",
    "gauge",
    "The most bytes of Arrow memory that have waited for a batch at once.",
);
const STREAM_MAX_ROWS: Metric = metric(
    "brook_stream_max_pending_rows",
    "gauge",
    "The stream's bound on rows waiting for a batch (max_pending_rows).",
);
const STREAM_MAX_BYTES: Metric = metric(
    "brook_stream_max_pending_bytes",
    "gauge",
    "The stream's bound on bytes waiting for a batch (max_pending_bytes).",
);
const QUERIES_RUNNING: Metric = metric(
    "brook_queries_running",
    "gauge",
    "Continuous queries running.",
);
const WARNINGS: Metric = metric(
    "brook_warnings_total",
    "counter",
    "Warnings reported: bad rows, lost connections, failed batches and streams.",
);

/// Every metric `/metrics` serves (the README documents each).
pub const METRICS: &[Metric] = &[
    QUERIES_RUNNING,
    QUERY_INFO,
    QUERY_BATCHES,
    QUERY_ROWS_IN,
    QUERY_ROWS_OUT,
    QUERY_LAST_BATCH,
    QUERY_LAG,
    QUERY_RETAINED_BATCHES,
    QUERY_RETAINED_ROWS,
    QUERY_RETAINED_BYTES,
    QUERY_RETAINED_ROWS_BY_STREAM,
    QUERY_LATE_ROWS,
    QUERY_WATERMARK,
    QUERY_CHECKPOINT_BATCH,
    QUERY_CHECKPOINT_BYTES,
    QUERY_SINK_BATCHES,
    QUERY_SINK_ROWS,
    QUERY_SINK_FAILED,
    STREAM_INFO,
    STREAM_RECEIVED,
    STREAM_DROPPED,
    STREAM_PENDING,
    STREAM_PEAK_ROWS,
    STREAM_PEAK_BYTES,
    STREAM_MAX_ROWS,
    STREAM_MAX_BYTES,
    WARNINGS,
];

/// A query's value of one metric.
type QueryValue = fn(&crate::query::QueryInfo) -> f64;
/// A query's value of a metric only some queries have (a checkpoint, a
/// sink).
type OptionalQueryValue = fn(&crate::query::QueryInfo) -> Option<f64>;
/// A stream's value of one metric.
type StreamValue = fn(&crate::StreamInfo) -> f64;

/// The text `/metrics` serves.
pub(crate) fn render(dashboard: &Dashboard) -> String {
    let queries = dashboard.ctx.running_queries();
    let streams = dashboard.ctx.streams();
    let (_, warnings) = dashboard.ctx.recent_warnings().snapshot();
    let mut text = String::new();
    family(
        &mut text,
        QUERIES_RUNNING,
        [(String::new(), queries.len() as f64)],
    );
    query_families(&mut text, &queries);
    optional_query_families(&mut text, &queries);
    stream_families(&mut text, &streams);
    family(&mut text, WARNINGS, [(String::new(), warnings as f64)]);
    text
}

/// A query's labels.
fn query_label(id: u64) -> String {
    format!("query=\"{id}\"")
}

/// A stream's labels.
fn stream_label(name: &str) -> String {
    format!("stream=\"{}\"", escape(name))
}

/// The families every running query has a sample in, then the watermark.
fn query_families(text: &mut String, queries: &[crate::query::QueryInfo]) {
    family(
        text,
        QUERY_INFO,
        queries.iter().map(|q| {
            let output = crate::redact::redact_secrets(&q.output);
            (
                format!("{},output=\"{}\"", query_label(q.id), escape(&output)),
                1.0,
            )
        }),
    );
    let per_query: [(Metric, QueryValue); 9] = [
        (QUERY_BATCHES, |q| q.stats.batches as f64),
        (QUERY_ROWS_IN, |q| q.stats.rows_in as f64),
        (QUERY_ROWS_OUT, |q| q.stats.rows_out as f64),
        (QUERY_LAST_BATCH, |q| q.stats.last_batch.as_secs_f64()),
        (QUERY_LAG, |q| q.stats.lag.as_secs_f64()),
        (QUERY_RETAINED_BATCHES, |q| q.stats.retained.batches as f64),
        (QUERY_RETAINED_ROWS, |q| q.stats.retained.rows as f64),
        (QUERY_RETAINED_BYTES, |q| q.stats.retained.bytes as f64),
        (QUERY_LATE_ROWS, |q| q.stats.late_rows as f64),
    ];
    for (metric, value) in per_query {
        family(
            text,
            metric,
            queries.iter().map(|q| (query_label(q.id), value(q))),
        );
    }
    // Only joins of streams hold rows per stream.
    family(
        text,
        QUERY_RETAINED_ROWS_BY_STREAM,
        queries.iter().flat_map(|q| {
            q.stats.retained.by_stream.iter().map(|(stream, rows)| {
                (
                    format!("{},stream=\"{}\"", query_label(q.id), escape(stream)),
                    *rows as f64,
                )
            })
        }),
    );
    // Only queries that have a watermark (event-time windows) report one;
    // the end of input is +Inf.
    family(
        text,
        QUERY_WATERMARK,
        queries.iter().filter_map(|q| {
            let mark = q.stats.watermark?;
            let seconds = if mark == chrono::DateTime::<chrono::Utc>::MAX_UTC {
                f64::INFINITY
            } else {
                mark.timestamp_millis() as f64 / 1000.0
            };
            Some((query_label(q.id), seconds))
        }),
    );
}

/// The families of what only some queries have: a checkpoint, a sink.
fn optional_query_families(text: &mut String, queries: &[crate::query::QueryInfo]) {
    let optional: [(Metric, OptionalQueryValue); 5] = [
        (QUERY_CHECKPOINT_BATCH, |q| {
            q.stats.checkpoint.map(|b| b as f64)
        }),
        (QUERY_CHECKPOINT_BYTES, |q| {
            q.stats.checkpoint.map(|_| q.stats.checkpoint_bytes as f64)
        }),
        (QUERY_SINK_BATCHES, |q| {
            q.stats.sink.as_ref().map(|s| s.batches_written as f64)
        }),
        (QUERY_SINK_ROWS, |q| {
            q.stats.sink.as_ref().map(|s| s.rows_written as f64)
        }),
        (QUERY_SINK_FAILED, |q| {
            q.stats.sink.as_ref().map(|s| s.batches_failed as f64)
        }),
    ];
    for (metric, value) in optional {
        family(
            text,
            metric,
            queries
                .iter()
                .filter_map(|q| Some((query_label(q.id), value(q)?))),
        );
    }
}

/// The stream families: each stream's info, then its counts.
fn stream_families(text: &mut String, streams: &[crate::StreamInfo]) {
    family(
        text,
        STREAM_INFO,
        streams.iter().map(|s| {
            (
                format!(
                    "{},connector=\"{}\",state=\"{}\"",
                    stream_label(&s.name),
                    escape(&s.connector),
                    escape(&s.state)
                ),
                1.0,
            )
        }),
    );
    let per_stream: [(Metric, StreamValue); 7] = [
        (STREAM_RECEIVED, |s| s.rows_received as f64),
        (STREAM_DROPPED, |s| s.rows_dropped as f64),
        (STREAM_PENDING, |s| s.rows_pending as f64),
        (STREAM_PEAK_ROWS, |s| s.peak_pending_rows as f64),
        (STREAM_PEAK_BYTES, |s| s.peak_pending_bytes as f64),
        (STREAM_MAX_ROWS, |s| s.limits.max_pending_rows as f64),
        (STREAM_MAX_BYTES, |s| s.limits.max_pending_bytes as f64),
    ];
    for (metric, value) in per_stream {
        family(
            text,
            metric,
            streams.iter().map(|s| (stream_label(&s.name), value(s))),
        );
    }
}

/// Writes one family: its HELP and TYPE lines, then one line per
/// `(labels, value)` (labels already written as `a="x",b="y"`, or empty).
fn family(text: &mut String, metric: Metric, samples: impl IntoIterator<Item = (String, f64)>) {
    // Writing to a String cannot fail.
    let _ = writeln!(text, "# HELP {} {}", metric.name, metric.help);
    let _ = writeln!(text, "# TYPE {} {}", metric.name, metric.kind);
    for (labels, value) in samples {
        let value = number(value);
        if labels.is_empty() {
            let _ = writeln!(text, "{} {value}", metric.name);
        } else {
            let _ = writeln!(text, "{}{{{labels}}} {value}", metric.name);
        }
    }
}

/// A sample value as Prometheus writes floats.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

/// A label value escaped: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        for metric in METRICS {
            assert!(
                readme.contains(&format!("`{}`", metric.name)),
                "README.md does not document {}",
                metric.name
            );
        }
    }

    #[test]
    fn counters_end_in_total_and_gauges_do_not() {
        for metric in METRICS {
            assert!(metric.name.starts_with("brook_"));
            assert_eq!(
                metric.kind == "counter",
                metric.name.ends_with("_total"),
                "{}",
                metric.name
            );
        }
    }
}
