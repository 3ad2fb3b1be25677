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
        html.push_str("<dl class=\"stats\">");
        for (label, value) in [
            ("batches", text(&query["batches"])),
            ("rows in", text(&query["rows_in"])),
            ("rows out", text(&query["rows_out"])),
            ("rows in/s", rate(&query["rows_in_per_second"])),
            ("rows out/s", rate(&query["rows_out_per_second"])),
            ("last batch", millis(&query["last_batch_seconds"])),
            ("lag", millis(&query["lag_seconds"])),
            ("retained rows", text(&query["retained_rows"])),
            ("retained bytes", text(&query["retained_bytes"])),
        ] {
            let _ = write!(
                html,
                "<div><dt>{label}</dt><dd>{}</dd></div>",
                escape(&value)
            );
        }
        html.push_str("</dl>");
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
