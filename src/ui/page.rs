//! The dashboard page: `assets/index.html` with the state at the time of
//! the request rendered in (so the page reads right before its script
//! runs, and without one); `assets/dashboard.js` then keeps it live from
//! `/events`, drawing the charts.

use std::fmt::Write;

use serde_json::Value;

use super::history::Dashboard;
use super::json;

/// The page's HTML template.
pub(crate) const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page's script: live updates and SVG charts, no libraries.
pub(crate) const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
/// The page's style sheet.
pub(crate) const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// The page with the current state in it.
pub(crate) fn render(dashboard: &Dashboard) -> String {
    INDEX_HTML
        .replace("<!--queries-->", &queries(&json::queries(dashboard)))
        .replace("<!--streams-->", &streams(&json::streams(dashboard)))
        .replace("<!--warnings-->", &warnings(&json::warnings(dashboard)))
}

fn queries(queries: &Value) -> String {
    let Some(queries) = queries.as_array().filter(|q| !q.is_empty()) else {
        return "<p class=\"empty\">No queries running.</p>".to_string();
    };
    let mut html = String::new();
    for query in queries {
        let state = text(&query["state"]);
        let _ = write!(
            html,
            "<section class=\"query\"><h3>Query {} <span class=\"state state-{}\">{}</span> <span class=\"output\">→ {}</span></h3><pre class=\"sql\">{}</pre>",
            text(&query["id"]),
            escape(&state),
            escape(&state),
            escape(&text(&query["output"])),
            escape(&text(&query["sql"])),
        );
        if let Some(error) = query["error"].as_str() {
            let _ = write!(html, "<p class=\"error\">{}</p>", escape(error));
        }
        stats(
            &mut html,
            "stats",
            &[
                ("batches", text(&query["batches"])),
                ("rows in", text(&query["rows_in"])),
                ("rows out", text(&query["rows_out"])),
                ("rows in/s", rate(&query["rows_in_per_second"])),
                ("rows out/s", rate(&query["rows_out_per_second"])),
                ("last batch", millis(&query["last_batch_seconds"])),
                ("lag", millis(&query["lag_seconds"])),
                ("retained rows", text(&query["retained_rows"])),
                ("retained bytes", text(&query["retained_bytes"])),
                ("held per stream", text(&query["retained_by_stream"])),
            ],
        );
        let progress = progress(query);
        if !progress.is_empty() {
            stats(&mut html, "stats progress", &progress);
        }
        let result = &query["latest_result"];
        if let (Some(columns), Some(rows)) =
            (result["columns"].as_array(), result["rows"].as_array())
        {
            let _ = write!(
                html,
                "<p class=\"caption\">Latest result (batch {}, {} rows)</p><table class=\"result\"><tr>",
                text(&result["batch"]),
                text(&result["total_rows"])
            );
            for column in columns {
                let _ = write!(html, "<th>{}</th>", escape(&text(column)));
            }
            html.push_str("</tr>");
            for row in rows {
                html.push_str("<tr>");
                for cell in row.as_array().into_iter().flatten() {
                    let _ = write!(html, "<td>{}</td>", escape(&text(cell)));
                }
                html.push_str("</tr>");
            }
            html.push_str("</table>");
        }
        html.push_str("</section>");
    }
    html
}

/// A `<dl>` of `(label, value)` pairs.
fn stats(html: &mut String, class: &str, pairs: &[(&str, String)]) {
    let _ = write!(html, "<dl class=\"{class}\">");
    for (label, value) in pairs {
        let _ = write!(
            html,
            "<div><dt>{label}</dt><dd>{}</dd></div>",
            escape(value)
        );
    }
    html.push_str("</dl>");
}

/// What a query has got to, where it has any of it: its event time
/// (watermark, how far behind, late rows), its last checkpoint, and what
/// its sink has written. `assets/dashboard.js` shows the same.
fn progress(query: &Value) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    let event_time = &query["event_time"];
    if event_time.is_object() {
        let ended = event_time["ended"] == Value::Bool(true);
        pairs.push((
            "watermark",
            if ended {
                "end of input".to_string()
            } else {
                text(&event_time["watermark"])
            },
        ));
        pairs.push((
            "watermark behind",
            if event_time["behind_seconds"].is_number() {
                duration(&event_time["behind_seconds"])
            } else {
                "—".to_string()
            },
        ));
        pairs.push(("late rows", text(&event_time["late_rows"])));
        pairs.push(("far-future rows", text(&event_time["far_future_rows"])));
    }
    let checkpoint = &query["checkpoint"];
    if checkpoint.is_object() {
        pairs.push((
            "checkpoint",
            format!("batch {}", text(&checkpoint["batch"])),
        ));
        pairs.push((
            "checkpoint written",
            if checkpoint["written"].is_string() {
                text(&checkpoint["written"])
            } else {
                "restored at start".to_string()
            },
        ));
        pairs.push(("checkpoint bytes", text(&checkpoint["bytes"])));
    }
    let sink = &query["sink"];
    if sink.is_object() {
        pairs.push(("sink batches written", text(&sink["batches_written"])));
        pairs.push(("sink rows written", text(&sink["rows_written"])));
        pairs.push((
            "sink last written",
            if sink["last_batch"].is_number() {
                format!(
                    "batch {} at {}",
                    text(&sink["last_batch"]),
                    text(&sink["last_written"])
                )
            } else {
                "none yet".to_string()
            },
        ));
        pairs.push(("sink batches skipped", text(&sink["batches_skipped"])));
        pairs.push(("sink batches failed", text(&sink["batches_failed"])));
    }
    pairs
}

fn streams(streams: &Value) -> String {
    let Some(streams) = streams.as_array().filter(|s| !s.is_empty()) else {
        return "<p class=\"empty\">No streams.</p>".to_string();
    };
    let mut html = String::from(
        "<table class=\"streams\"><tr><th>stream</th><th>connector</th><th>state</th><th>received</th><th>dropped</th><th>pending</th><th>bounds</th><th>options</th></tr>",
    );
    for stream in streams {
        let state = text(&stream["state"]);
        let failure = stream["failure"]
            .as_str()
            .map(|f| format!("<div class=\"error\">{}</div>", escape(f)))
            .unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td><span class=\"state state-{}\">{}</span>{failure}</td><td>{}</td><td>{}</td><td>{}</td><td>{} rows, {} bytes</td><td>{}</td></tr>",
            escape(&text(&stream["name"])),
            escape(&text(&stream["connector"])),
            escape(&state),
            escape(&state),
            text(&stream["rows_received"]),
            text(&stream["rows_dropped"]),
            text(&stream["rows_pending"]),
            text(&stream["max_pending_rows"]),
            text(&stream["max_pending_bytes"]),
            escape(&text(&stream["options"])),
        );
    }
    html.push_str("</table>");
    html
}

fn warnings(warnings: &Value) -> String {
    let Some(recent) = warnings["recent"].as_array().filter(|w| !w.is_empty()) else {
        return "<p class=\"empty\">No warnings.</p>".to_string();
    };
    let mut html = String::from("<ul class=\"warnings\">");
    for warning in recent {
        let _ = write!(
            html,
            "<li><time>{}</time> <span class=\"kind\">{}</span> {}</li>",
            escape(&text(&warning["time"])),
            escape(&text(&warning["kind"])),
            escape(&text(&warning["message"]))
        );
    }
    html.push_str("</ul>");
    html
}

/// A JSON value as text: strings as they are, `null` as empty.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rate(value: &Value) -> String {
    format!("{:.1}", value.as_f64().unwrap_or(0.0))
}

fn millis(seconds: &Value) -> String {
    format!("{:.1} ms", seconds.as_f64().unwrap_or(0.0) * 1000.0)
}

/// Seconds in the unit that reads best: `42.0 s`, `12.5 min`, `3.0 h`,
/// `400.2 d`.
fn duration(seconds: &Value) -> String {
    let seconds = seconds.as_f64().unwrap_or(0.0);
    let (value, unit) = if seconds.abs() < 90.0 {
        (seconds, "s")
    } else if seconds.abs() < 90.0 * 60.0 {
        (seconds / 60.0, "min")
    } else if seconds.abs() < 36.0 * 3600.0 {
        (seconds / 3600.0, "h")
    } else {
        (seconds / 86_400.0, "d")
    };
    format!("{value:.1} {unit}")
}

/// `text` safe inside HTML elements and quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        let shown = |seconds: f64| duration(&serde_json::json!(seconds));
        assert_eq!(shown(33.94), "33.9 s");
        assert_eq!(shown(-2.0), "-2.0 s");
        assert_eq!(shown(90.0), "1.5 min");
        assert_eq!(shown(7200.0), "2.0 h");
        assert_eq!(shown(36.0 * 3600.0), "1.5 d");
    }
}
