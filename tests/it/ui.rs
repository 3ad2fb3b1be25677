//! The dashboard (`brook::ui`): its JSON, its Prometheus metrics and its
//! page over real HTTP on 127.0.0.1, `--ui` on the command line, and the
//! page in a real headless Chromium while a socket word count runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brook::StreamContext;
use brook::ui::UiHandle;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{closed_port_address, line_server, port_of, start};

/// Upper bound on any one wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

fn loopback_any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A response, as the tiny client below reads it.
struct Response {
    status: u16,
    headers: String,
    body: String,
}

/// `GET path` over a fresh 127.0.0.1 connection (`Connection: close`).
async fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the dashboard");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    let bytes = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} took over {WAIT:?}"));
    let text = String::from_utf8(bytes).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    let response = request(addr, "GET", path).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let response = get(addr, path).await;
    assert!(response.headers.contains("content-type: application/json"));
    serde_json::from_str(&response.body).expect("JSON")
}

/// Polls `path` until `done` holds for its JSON, and returns that JSON.
async fn wait_for_json(addr: SocketAddr, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let value = get_json(addr, path).await;
        if done(&value) {
            return value;
        }
        assert!(
            started.elapsed() < WAIT,
            "{path} never got there; last: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first `count` server-sent events of `/events`, parsed.
async fn first_events(addr: SocketAddr, count: usize) -> Vec<Value> {
    let read = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        let mut buffer = [0u8; 65536];
        loop {
            let events: Vec<Value> = text
                .split("\n\n")
                .filter_map(|part| part.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|data| serde_json::from_str(data).ok())
                .collect();
            if events.len() >= count {
                assert!(
                    text.to_ascii_lowercase()
                        .contains("content-type: text/event-stream")
                );
                return events;
            }
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "/events ended early");
            text.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("events in time")
}

// ---------------------------------------------------------------------------
// A strict reader of Prometheus' text format (0.0.4).

/// Every sample as `name{label="value",...}` (labels sorted) → value, and
/// each family's type. Panics, naming the line, on anything malformed.
fn parse_prometheus(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: Vec<String> = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    for (number, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().expect(&at);
                    assert!(is_metric_name(name), "{at}: bad name");
                    assert!(!helps.contains(&name.to_string()), "{at}: HELP twice");
                    helps.push(name.to_string());
                }
                Some("TYPE") => {
                    let name = words.next().expect(&at);
                    let kind = words.next().expect(&at);
                    assert!(is_metric_name(name), "{at}: bad name");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{at}: bad type"
                    );
                    assert!(
                        !samples.keys().any(|k: &String| series_name(k) == name),
                        "{at}: TYPE after the family's samples"
                    );
                    assert!(
                        types.insert(name.to_string(), kind.to_string()).is_none(),
                        "{at}: TYPE twice"
                    );
                }
                _ => {}
            }
            continue;
        }
        let (series, value) = parse_sample(line, &at);
        let name = series_name(&series).to_string();
        assert!(types.contains_key(&name), "{at}: a sample without TYPE");
        assert!(
            samples.insert(series, value).is_none(),
            "{at}: series twice"
        );
    }
    (samples, types)
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn series_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// One sample line: `name{labels} value [timestamp]`.
fn parse_sample(line: &str, at: &str) -> (String, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("{at}: no value"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "{at}: bad metric name");
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // A label name, `=`, a quoted value with \\ \" \n escapes.
            let start = chars.peek().map(|(i, _)| *i).expect(at);
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find('=').map(|i| start + i).expect(at);
            let label = &inner[start..eq];
            assert!(is_label_name(label), "{at}: bad label name {label:?}");
            assert_eq!(inner[eq + 1..].chars().next(), Some('"'), "{at}: unquoted");
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().expect(at) {
                    (_, '\\') => match chars.next().expect(at).1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("{at}: bad escape \\{other}"),
                    },
                    (_, '"') => break,
                    (_, '\n') => panic!("{at}: raw line feed in a label"),
                    (_, c) => value.push(c),
                }
            }
            assert!(!labels.iter().any(|(l, _)| l == label), "{at}: label twice");
            labels.push((label.to_string(), value));
            match chars.next().expect(at) {
                (_, ',') => {}
                (i, '}') => {
                    rest = &inner[i + 1..];
                    break;
                }
                (_, other) => panic!("{at}: {other:?} after a label value"),
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("{at}: one space before the value"));
    let mut parts = rest.split(' ');
    let value = parts.next().expect(at);
    let value: f64 = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("{at}: {number:?} is not a float")),
    };
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("{at}: bad timestamp"));
    }
    assert!(parts.next().is_none(), "{at}: trailing text");
    labels.sort();
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        let labels: Vec<String> = labels.iter().map(|(l, v)| format!("{l}={v:?}")).collect();
        format!("{name}{{{}}}", labels.join(","))
    };
    (series, value)
}

/// `/metrics`, parsed strictly; also checks brook's naming conventions.
async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let response = get(addr, "/metrics").await;
    assert!(
        response
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        response.headers
    );
    let (samples, types) = parse_prometheus(&response.body);
    for (name, kind) in &types {
        assert!(name.starts_with("brook_"), "{name}");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    samples
}

#[test]
fn the_prometheus_reader_refuses_what_is_not_the_text_format() {
    let good =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\",y=\"\"} 1.5e3\nb 2\n";
    for bad in [
        "a_total 1\n",                                  // no TYPE
        "# TYPE a gauge\na{x=q} 1\n",                   // unquoted label value
        "# TYPE a gauge\na 1,5\n",                      // not a float
        "# TYPE 1a gauge\n1a 1\n",                      // bad metric name
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n", // series twice
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",             // bad escape
        "# TYPE a gauge\na  1\n",                       // two spaces
        "# TYPE a gauge\na 1\n# TYPE a gauge\n",        // TYPE twice
    ] {
        let parsed = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(parsed.is_err(), "accepted {bad:?}");
    }
    let parsed = std::panic::catch_unwind(|| parse_prometheus(good));
    assert!(parsed.is_err(), "b has no TYPE");
    let (samples, _) = parse_prometheus(&good.replace("b 2\n", ""));
    assert_eq!(samples["a_total{x=\"q\\\"\\n\",y=\"\"}"], 1500.0);
}

// ---------------------------------------------------------------------------

async fn serve(ctx: &StreamContext) -> (UiHandle, SocketAddr) {
    let handle = brook::ui::serve(ctx, loopback_any_port())
        .await
        .expect("serve the dashboard");
    let addr = handle.local_addr();
    assert!(addr.ip().is_loopback());
    (handle, addr)
}

/// Reads a query's outputs in the background (a query waits for its
/// reader), keeping the number of outputs.
fn drain(mut query: brook::ContinuousQuery) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut outputs = 0;
        while let Some(output) = query.next().await {
            if output.is_ok() {
                outputs += 1;
            }
        }
        outputs
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_metrics_count_exactly_the_rows_a_running_query_read() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    let (_ui, addr) = serve(&ctx).await;
    ctx.sql("CREATE STREAM words (word TEXT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(
        &ctx,
        "SELECT word, COUNT(*) AS n FROM words GROUP BY word ORDER BY word",
    )
    .await;
    let id = query.id();
    let reader = drain(query);
    for values in [
        "('apple'), ('banana')",
        "('apple'), ('cherry'), ('apple')",
        "('banana'), ('apple'), ('apple'), ('date'), ('elder')",
    ] {
        ctx.sql(&format!("INSERT INTO words VALUES {values}"))
            .await
            .unwrap();
    }
    let queries = wait_for_json(addr, "/api/queries", |q| q[0]["rows_in"] == json!(10)).await;
    let query = &queries[0];
    assert_eq!(query["id"], json!(id));
    assert_eq!(query["state"], "running");
    assert_eq!(query["output"], "console");
    assert!(query["sql"].as_str().unwrap().contains("GROUP BY word"));
    assert!(query["batches"].as_u64().unwrap() >= 1);
    assert!(query["last_batch_seconds"].as_f64().unwrap() > 0.0);
    assert!(query["lag_seconds"].as_f64().unwrap() >= 0.0);
    for field in [
        "rows_in_per_second",
        "rows_out_per_second",
        "retained_rows",
        "retained_bytes",
    ] {
        assert!(query[field].is_number(), "{field}");
    }
    // The latest result: the last batch's groups, first rows.
    let latest = wait_for_json(addr, "/api/queries", |q| {
        q[0]["latest_result"]["columns"] == json!(["word", "n"])
    })
    .await;
    let result = &latest[0]["latest_result"];
    assert!(!result["rows"].as_array().unwrap().is_empty());
    assert!(result["batch"].as_u64().unwrap() >= 1);

    let streams = get_json(addr, "/api/streams").await;
    assert_eq!(streams[0]["name"], "words");
    assert_eq!(streams[0]["connector"], "queue");
    assert_eq!(streams[0]["state"], "running");
    assert_eq!(streams[0]["rows_received"], json!(10));
    assert_eq!(streams[0]["rows_dropped"], json!(0));
    assert_eq!(streams[0]["max_pending_rows"], json!(1_000_000));

    let samples = metrics(addr).await;
    let query_label = format!("{{query=\"{id}\"}}");
    assert_eq!(
        samples[&format!("brook_query_rows_in_total{query_label}")],
        10.0
    );
    assert!(samples[&format!("brook_query_batches_total{query_label}")] >= 1.0);
    assert!(samples[&format!("brook_query_rows_out_total{query_label}")] >= 1.0);
    assert!(samples.contains_key(&format!(
        "brook_query_last_batch_duration_seconds{query_label}"
    )));
    assert!(samples.contains_key(&format!("brook_query_lag_seconds{query_label}")));
    assert!(samples.contains_key(&format!("brook_query_retained_bytes{query_label}")));
    assert_eq!(
        samples[&format!("brook_query_info{{output=\"console\",query=\"{id}\"}}")],
        1.0
    );
    assert_eq!(
        samples["brook_stream_rows_received_total{stream=\"words\"}"],
        10.0
    );
    assert_eq!(
        samples["brook_stream_rows_dropped_total{stream=\"words\"}"],
        0.0
    );
    assert_eq!(samples["brook_stream_rows_pending{stream=\"words\"}"], 0.0);
    assert_eq!(
        samples["brook_stream_info{connector=\"queue\",state=\"running\",stream=\"words\"}"],
        1.0
    );
    assert_eq!(samples["brook_queries_running"], 1.0);
    assert_eq!(samples["brook_warnings_total"], 0.0);

    // The page's live updates carry the same query, and its history.
    let events = first_events(addr, 2).await;
    assert_eq!(events[0]["queries"][0]["rows_in"], json!(10));
    assert_eq!(events[0]["streams"][0]["name"], "words");
    let history = wait_for_json(addr, "/api/history", |h| {
        h[id.to_string()]
            .as_array()
            .is_some_and(|points| points.len() >= 2)
    })
    .await;
    let point = &history[id.to_string()][0];
    assert_eq!(point.as_array().unwrap().len(), 5, "{point}");

    ctx.close_queues();
    tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_page_with_no_queries_says_so_and_serves_only_reads() {
    let ctx = StreamContext::new(Duration::from_millis(100));
    let (_ui, addr) = serve(&ctx).await;
    let page = get(addr, "/").await;
    assert!(page.headers.contains("content-type: text/html"));
    for text in [
        "<title>brook dashboard</title>",
        "No queries running.",
        "No streams.",
        "No warnings.",
        "<script src=\"/dashboard.js\"></script>",
    ] {
        assert!(page.body.contains(text), "the page lacks {text:?}");
    }
    // Nothing from the internet: every script and style sheet is ours.
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    let script = get(addr, "/dashboard.js").await;
    assert!(script.body.contains("new EventSource(\"/events\")"));
    assert!(!script.body.contains("http"));
    let style = get(addr, "/dashboard.css").await;
    assert!(style.headers.contains("content-type: text/css"));

    assert_eq!(get_json(addr, "/api/queries").await, json!([]));
    assert_eq!(get_json(addr, "/api/streams").await, json!([]));
    assert_eq!(
        get_json(addr, "/api/warnings").await,
        json!({"total": 0, "recent": []})
    );
    let samples = metrics(addr).await;
    assert_eq!(samples["brook_queries_running"], 0.0);
    assert!(!samples.keys().any(|k| k.contains("query=")));

    assert_eq!(request(addr, "POST", "/api/queries").await.status, 405);
    assert_eq!(request(addr, "DELETE", "/").await.status, 405);
    assert_eq!(request(addr, "GET", "/nothing/here").await.status, 404);
    assert_eq!(request(addr, "GET", "/../../etc/passwd").await.status, 404);
    // A request that is not HTTP gets no answer, and the server goes on.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"\x00\x01 not http\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut answer)).await;
    assert_eq!(get(addr, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_shows_as_failed_with_its_error_and_hides_passwords() {
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(50), Arc::new(|_| {}));
    let (_ui, addr) = serve(&ctx).await;
    let gone = closed_port_address();
    ctx.sql(&format!(
        "CREATE STREAM feed WITH (connector = 'socket', host = '127.0.0.1', port = '{}', reconnect = 'true', reconnect_attempts = '1')",
        port_of(&gone)
    ))
    .await
    .unwrap();
    let query = start(
        &ctx,
        "SELECT line FROM feed WHERE line <> 'postgres://bob:hunter2@db.example/app'",
    )
    .await;
    let reader = drain(query);
    let streams = wait_for_json(addr, "/api/streams", |s| s[0]["state"] == "failed").await;
    let failure = streams[0]["failure"].as_str().unwrap();
    assert!(failure.contains(&gone), "{failure}");
    let queries = wait_for_json(addr, "/api/queries", |q| q[0]["state"] == "failed").await;
    assert!(queries[0]["error"].as_str().unwrap().contains(&gone));
    let warnings = get_json(addr, "/api/warnings").await;
    assert!(warnings["total"].as_u64().unwrap() >= 1);
    assert!(
        warnings["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains(&gone)),
        "{warnings:#}"
    );

    let page = get(addr, "/").await.body;
    assert!(page.contains("<span class=\"state state-failed\">failed</span>"));
    assert!(page.contains(&gone));
    assert!(page.contains("postgres://bob:***@db.example/app"), "{page}");
    for path in [
        "/",
        "/api/queries",
        "/api/streams",
        "/api/warnings",
        "/metrics",
    ] {
        assert!(!get(addr, path).await.body.contains("hunter2"), "{path}");
    }
    let samples = metrics(addr).await;
    assert_eq!(
        samples["brook_stream_info{connector=\"socket\",state=\"failed\",stream=\"feed\"}"],
        1.0
    );
    tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_query_stays_on_the_page_as_stopped_with_its_last_numbers() {
    let ctx = StreamContext::new(Duration::from_millis(50));
    let (_ui, addr) = serve(&ctx).await;
    ctx.sql("CREATE STREAM q (n INT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let query = start(&ctx, "SELECT n * 2 AS twice FROM q").await;
    let id = query.id();
    let reader = drain(query);
    ctx.sql("INSERT INTO q VALUES (1), (2), (3)").await.unwrap();
    wait_for_json(addr, "/api/queries", |q| q[0]["rows_in"] == json!(3)).await;
    ctx.sql(&format!("STOP QUERY {id}")).await.unwrap();
    let queries = wait_for_json(addr, "/api/queries", |q| q[0]["state"] == "stopped").await;
    assert_eq!(queries[0]["id"], json!(id));
    assert_eq!(queries[0]["rows_in"], json!(3));
    assert_eq!(queries[0]["rows_out"], json!(3));
    assert!(queries[0]["ended"].is_string());
    assert_eq!(
        queries[0]["latest_result"]["rows"],
        json!([["2"], ["4"], ["6"]])
    );
    let page = get(addr, "/").await.body;
    assert!(page.contains("<span class=\"state state-stopped\">stopped</span>"));
    assert!(page.contains("SELECT n * 2 AS twice FROM q"));
    assert!(!page.contains("No queries running."));
    assert!(page.contains("<td>6</td>"), "{page}");
    let samples = metrics(addr).await;
    assert_eq!(samples["brook_queries_running"], 0.0);
    assert!(!samples.keys().any(|k| k.contains("query=")));
    tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let ctx = StreamContext::new(Duration::from_millis(100));
    let err = brook::ui::serve(&ctx, addr).await.unwrap_err();
    let message = brook::error_chain(&err);
    assert!(
        message.starts_with(&format!("cannot serve the dashboard on {addr}: ")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("in use"), "{message}");
}

fn brook_command(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start brook")
}

fn wait_with_deadline(mut child: Child) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > WAIT {
            child.kill().ok();
            panic!("brook did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn brook_ui_on_a_port_in_use_exits_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = wait_with_deadline(brook_command(&[
        "-c",
        "SELECT 1 AS one",
        &format!("--ui={addr}"),
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("brook: cannot serve the dashboard on {addr}: ")),
        "{stderr}"
    );
    // Nothing ran.
    assert!(output.stdout.is_empty());
}

#[test]
fn brook_run_with_ui_prints_the_address_and_serves_while_it_runs() {
    let words = line_server(|mut client| {
        for _ in 0..100 {
            if client.write_all(b"to be or not to be\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let sql = format!(
        "CREATE STREAM lines WITH (connector = 'socket', host = '127.0.0.1', port = '{}'); SELECT line FROM lines;",
        port_of(&words)
    );
    let mut child = brook_command(&["--quiet", "-c", &sql, "--ui=127.0.0.1:0"]);
    let mut stderr = child.stderr.take().unwrap();
    // The first line on stderr names the address.
    let mut first_line = Vec::new();
    let mut byte = [0u8; 1];
    while stderr.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first_line.push(byte[0]);
    }
    let first_line = String::from_utf8(first_line).unwrap();
    let url = first_line
        .strip_prefix("brook: dashboard at http://")
        .unwrap_or_else(|| panic!("{first_line}"));
    let addr: SocketAddr = url.trim_end_matches('/').parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let queries = runtime.block_on(wait_for_json(addr, "/api/queries", |q| {
        q[0]["rows_in"].as_u64().is_some_and(|n| n > 0)
    }));
    assert!(queries[0]["sql"].as_str().unwrap().contains("FROM lines"));
    // brook ends when its stream does, dashboard or not.
    let output = wait_with_deadline(child);
    assert!(output.status.success());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still served after the run"
    );
}

// ---------------------------------------------------------------------------
// A real browser, driven over the DevTools protocol on a pipe
// (`--remote-debugging-pipe`: commands in on fd 3, replies out on fd 4,
// each a JSON text ended by a NUL byte).

/// Chromium: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium_path() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium is needed for the browser test and is not at {}: install Debian's `chromium` \
         package (apt-get install -y --no-install-recommends chromium; .ci/run does) or set CHROMIUM",
        path.display()
    );
    path
}

/// A headless Chromium and the DevTools session on one page; killed, and
/// its temporary directory removed, when dropped.
struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    replies: std::sync::mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    temp: PathBuf,
}

impl Browser {
    fn launch(temp: &Path) -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(temp).unwrap();
        let (command_reader, commands) = std::io::pipe().unwrap();
        let (mut reply_reader, reply_writer) = std::io::pipe().unwrap();
        let mut command = Command::new(chromium_path());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                temp.join("profile").display()
            ))
            .arg("about:blank")
            .env("TMPDIR", temp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(temp.join("chromium.log")).unwrap());
        let (from, to) = (command_reader.as_raw_fd(), reply_writer.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls
        // (fcntl, dup2) on descriptors this process owns. Both ends are
        // first copied above 10 so that placing one at 3 cannot overwrite
        // the other.
        unsafe {
            command.pre_exec(move || {
                let from = libc::fcntl(from, libc::F_DUPFD, 10);
                let to = libc::fcntl(to, libc::F_DUPFD, 10);
                if from < 0 || to < 0 || libc::dup2(from, 3) < 0 || libc::dup2(to, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        // Our copies of Chromium's ends: closed, so its exit ends our reads.
        drop(command_reader);
        drop(reply_writer);
        let (sender, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buffer = [0u8; 65536];
            while let Ok(read) = reply_reader.read(&mut buffer) {
                if read == 0 {
                    return;
                }
                pending.extend_from_slice(&buffer[..read]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(value) = serde_json::from_slice(&message[..end])
                        && sender.send(value).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Browser {
            child,
            commands,
            replies,
            next_id: 0,
            session: None,
            temp: temp.to_path_buf(),
        }
    }

    /// Sends a DevTools command (to the page's session once attached) and
    /// waits for its reply's `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).unwrap_or_else(|_| {
                let log =
                    std::fs::read_to_string(self.temp.join("chromium.log")).unwrap_or_default();
                panic!("no reply from chromium to {method} in {WAIT:?}; its stderr:\n{log}")
            });
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        );
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    fn body_text(&mut self) -> String {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": "document.body ? document.body.innerText : ''", "returnByValue": true}),
        );
        result["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls the page's text until `done` holds; returns that text.
    fn wait_for_text(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.body_text();
            if done(&text) {
                return text;
            }
            assert!(
                started.elapsed() < WAIT,
                "the page never showed {what}; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.temp).ok();
    }
}

/// What the page's text shows under `label` (`label\nvalue`), the first
/// time it shows `label`.
fn shown<'a>(text: &'a str, label: &str) -> &'a str {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == label {
            return lines.next().unwrap_or_default().trim();
        }
    }
    panic!("the page shows no {label}:\n{text}")
}

/// The number shown under `label`.
fn shown_number(text: &str, label: &str) -> f64 {
    let value = shown(text, label);
    value
        .trim_end_matches(" ms")
        .parse()
        .unwrap_or_else(|_| panic!("{label}: {value:?}"))
}

/// A duration shown under `label` (`42.0 s`, `1.5 min`, ...), in seconds.
fn shown_seconds(text: &str, label: &str) -> f64 {
    let value = shown(text, label);
    let (number, unit) = value
        .split_once(' ')
        .unwrap_or_else(|| panic!("{label}: {value:?}"));
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{label}: {value:?}"));
    number
        * match unit {
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => panic!("{label}: {value:?}"),
        }
}

/// A short directory under /tmp for Chromium (see the word count test).
fn chromium_temp() -> PathBuf {
    std::env::temp_dir().join(format!(
        "brook-cr-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_a_socket_word_count_live() {
    let chromium = chromium_path();
    assert!(chromium.exists());
    // The words the socket sends switch from apples to bananas when told.
    let bananas = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let words = line_server({
        let bananas = Arc::clone(&bananas);
        let stop = Arc::clone(&stop);
        move |mut client| {
            while !stop.load(Ordering::Relaxed) {
                let line: &[u8] = if bananas.load(Ordering::Relaxed) {
                    b"banana banana cherry\n"
                } else {
                    b"apple apple cherry\n"
                };
                if client.write_all(line).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let ctx = StreamContext::new(Duration::from_millis(200));
    let (_ui, addr) = serve(&ctx).await;
    ctx.sql(&format!(
        "CREATE STREAM lines WITH (connector = 'socket', host = '127.0.0.1', port = '{}')",
        port_of(&words)
    ))
    .await
    .unwrap();
    let query = start(
        &ctx,
        "SELECT word, COUNT(*) AS count FROM (SELECT unnest(string_to_array(line, ' ')) AS word FROM lines) GROUP BY word ORDER BY count DESC, word",
    )
    .await;
    let reader = drain(query);

    // A short path under /tmp, not the target directory: Chromium puts its
    // singleton socket under TMPDIR, and a Unix socket path over 107 bytes
    // makes it abort (SIGTRAP) at start; a clone in a deep directory hit it.
    let temp = chromium_temp();
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-dashboard.png");
    let url = format!("http://{addr}/");
    let browse = {
        let bananas = Arc::clone(&bananas);
        let screenshot = screenshot.clone();
        tokio::task::spawn_blocking(move || {
            let mut browser = Browser::launch(&temp);
            browser.open(&url);
            let first = browser.wait_for_text("the query with apples and a rate", |text| {
                text.contains("Query 1")
                    && text.contains("string_to_array(line, ' ')")
                    && text.contains("live · updated")
                    && text.contains("apple")
                    && shown_number(text, "rows in/s") > 0.0
            });
            bananas.store(true, Ordering::Relaxed);
            let later = browser.wait_for_text("bananas in the latest result", |text| {
                text.contains("banana")
                    && shown_number(text, "batches") > shown_number(&first, "batches")
            });
            // Enough points for the charts to draw lines.
            std::thread::sleep(Duration::from_secs(2));
            browser.screenshot(&screenshot);
            (first, later)
        })
    };
    let (first, later) = tokio::time::timeout(Duration::from_secs(120), browse)
        .await
        .expect("the browser test finished in time")
        .expect("the browser test passed");
    stop.store(true, Ordering::Relaxed);
    assert!(first.contains("lines\tsocket\trunning"), "{first}");
    assert!(shown_number(&later, "rows in") > shown_number(&first, "rows in"));
    assert!(later.contains("rows/s") && later.contains("batch duration") && later.contains("lag"));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    drop(ctx);
    reader.abort();
}

/// Issue 31, item 8: the page showed none of an event-time query's
/// watermark and late rows, a query's checkpoints, a sink's progress, nor a
/// stream that is reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_watermarks_late_rows_checkpoints_sink_progress_and_reconnecting() {
    use chrono::{DateTime, TimeDelta, Utc};
    let chromium = chromium_path();
    assert!(chromium.exists());
    let scratch = std::env::temp_dir().join(format!("brook-ui-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    // The socket's failed reconnect attempts are warnings: not printed.
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), Arc::new(|_| {}));
    ctx.set_checkpoint_dir(Some(scratch.join("checkpoints")))
        .unwrap();
    let (_ui, addr) = serve(&ctx).await;

    // Event time, a batch per INSERT: the first moves the watermark to
    // base + 11 s, closing the window [base, base + 10 s); the second's
    // row at base + 3.25 s is then late, and its row at base + 13 s moves
    // the watermark to base + 12 s. No idleness moves it on after.
    let now = Utc::now() - TimeDelta::seconds(40);
    let base = DateTime::from_timestamp_millis(now.timestamp_millis() / 10_000 * 10_000).unwrap();
    let at = |millis: i64| {
        (base + TimeDelta::milliseconds(millis))
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
    };
    let watermark = base + TimeDelta::seconds(12);
    let watermark_text = watermark.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for statement in [
        "CREATE STREAM readings (v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'queue', one_at_a_time = 'true', idle_timeout = '1h')"
            .to_string(),
        format!(
            "INSERT INTO readings VALUES (1, '{}'), (2, '{}')",
            at(1_000),
            at(12_000)
        ),
        format!(
            "INSERT INTO readings VALUES (3, '{}'), (4, '{}')",
            at(3_250),
            at(13_000)
        ),
    ] {
        ctx.sql(&statement).await.unwrap();
    }
    let windows = start(
        &ctx,
        "SELECT window_start, COUNT(*) AS n FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY window_start",
    )
    .await;
    let windows_id = windows.id();
    let windows_reader = drain(windows);

    // A sink: one batch of three rows written.
    ctx.sql("CREATE STREAM events (n INT) WITH (connector = 'queue')")
        .await
        .unwrap();
    ctx.sql(&format!(
        "CREATE SINK out WITH (connector = 'file', path = '{}', format = 'csv') AS SELECT n FROM events",
        scratch.join("out").display()
    ))
    .await
    .unwrap();
    ctx.sql("INSERT INTO events VALUES (1), (2), (3)")
        .await
        .unwrap();

    // A socket stream whose peer is gone, trying again.
    let gone = closed_port_address();
    ctx.sql(&format!(
        "CREATE STREAM feed WITH (connector = 'socket', host = '127.0.0.1', port = '{}', reconnect = 'true')",
        port_of(&gone)
    ))
    .await
    .unwrap();
    let feed_reader = drain(start(&ctx, "SELECT line FROM feed").await);

    // The API first: the exact values the page must show.
    let of = |queries: &Value, id: u64| -> Value {
        queries
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == json!(id))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let queries = wait_for_json(addr, "/api/queries", |q| {
        let windows = of(q, windows_id);
        windows["event_time"]["late_rows"] == json!(1)
            && windows["event_time"]["watermark"] == json!(watermark_text)
            && windows["checkpoint"]["batch"].as_u64() >= Some(2)
            && q.as_array()
                .unwrap()
                .iter()
                .any(|q| q["sink"]["rows_written"] == json!(3))
    })
    .await;
    let windows = of(&queries, windows_id);
    assert_eq!(windows["event_time"]["ended"], json!(false));
    assert_eq!(windows["event_time"]["far_future_rows"], json!(0));
    let behind = windows["event_time"]["behind_seconds"].as_f64().unwrap();
    let expected_behind = (Utc::now() - watermark).num_milliseconds() as f64 / 1000.0;
    assert!(
        (behind - expected_behind).abs() < 2.0,
        "{behind} vs {expected_behind}"
    );
    assert!(windows["checkpoint"]["written"].is_string());
    assert!(windows["checkpoint"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(windows["sink"], Value::Null);
    let sink = queries
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["output"] == "sink out")
        .unwrap();
    let sink_id = sink["id"].as_u64().unwrap();
    assert_eq!(sink["event_time"], Value::Null);
    assert_eq!(sink["sink"]["batches_written"], json!(1));
    assert_eq!(sink["sink"]["batches_skipped"], json!(0));
    assert_eq!(sink["sink"]["batches_failed"], json!(0));
    assert!(sink["sink"]["last_batch"].as_u64().unwrap() >= 1);
    let streams = wait_for_json(addr, "/api/streams", |s| {
        s.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "feed" && s["state"] == "reconnecting")
    })
    .await;
    assert!(
        streams
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "readings" && s["state"] == "running"),
        "{streams:#}"
    );
    let samples = metrics(addr).await;
    assert_eq!(
        samples[&format!("brook_query_late_rows_total{{query=\"{windows_id}\"}}")],
        1.0
    );
    assert_eq!(
        samples[&format!("brook_query_watermark_seconds{{query=\"{windows_id}\"}}")],
        watermark.timestamp() as f64
    );
    assert!(samples[&format!("brook_query_checkpoint_batch{{query=\"{windows_id}\"}}")] >= 2.0);
    assert_eq!(
        samples[&format!("brook_query_sink_rows_written_total{{query=\"{sink_id}\"}}")],
        3.0
    );
    assert_eq!(
        samples[&format!("brook_query_sink_batches_written_total{{query=\"{sink_id}\"}}")],
        1.0
    );
    assert!(!samples.contains_key(&format!(
        "brook_query_sink_rows_written_total{{query=\"{windows_id}\"}}"
    )));
    assert_eq!(
        samples["brook_stream_info{connector=\"socket\",state=\"reconnecting\",stream=\"feed\"}"],
        1.0
    );

    // Then the page, live in a browser.
    let temp = chromium_temp();
    let url = format!("http://{addr}/");
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-progress.png");
    let browse = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch(&temp);
        browser.open(&url);
        let text = browser.wait_for_text(
            "the progress of each query, and the reconnecting stream",
            |text| {
                text.contains("live · updated")
                    && text.contains("sink rows written")
                    && text.contains("feed\tsocket\treconnecting")
            },
        );
        browser.screenshot(&screenshot);
        text
    });
    let page = tokio::time::timeout(Duration::from_secs(120), browse)
        .await
        .expect("the browser test finished in time")
        .expect("the browser test passed");
    // The event-time query is the first on the page: its section shows
    // the first watermark, late rows and checkpoint.
    assert_eq!(shown(&page, "watermark"), watermark_text, "{page}");
    let shown_behind = shown_seconds(&page, "watermark behind");
    let expected_behind = (Utc::now() - watermark).num_milliseconds() as f64 / 1000.0;
    assert!(
        (shown_behind - expected_behind).abs() < 3.0,
        "{shown_behind} vs {expected_behind}"
    );
    assert_eq!(shown_number(&page, "late rows"), 1.0);
    assert_eq!(shown_number(&page, "far-future rows"), 0.0);
    let checkpoint = shown(&page, "checkpoint");
    let checkpoint_batch: u64 = checkpoint
        .strip_prefix("batch ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("checkpoint: {checkpoint:?}"));
    assert!(checkpoint_batch >= 2, "{page}");
    assert!(shown(&page, "checkpoint written").ends_with('Z'), "{page}");
    assert_eq!(shown_number(&page, "sink batches written"), 1.0);
    assert_eq!(shown_number(&page, "sink rows written"), 3.0);
    assert!(
        shown(&page, "sink last written").starts_with("batch "),
        "{page}"
    );
    assert_eq!(shown_number(&page, "sink batches failed"), 0.0);
    // The page's first rendering, before any script, says the same.
    let first = get(addr, "/").await.body;
    for text in [
        format!("<dt>watermark</dt><dd>{watermark_text}</dd>"),
        "<dt>late rows</dt><dd>1</dd>".to_string(),
        "<dt>sink rows written</dt><dd>3</dd>".to_string(),
        "<span class=\"state state-reconnecting\">reconnecting</span>".to_string(),
    ] {
        assert!(first.contains(&text), "the page lacks {text:?}: {first}");
    }
    drop(ctx);
    windows_reader.abort();
    feed_reader.abort();
    let _ = std::fs::remove_dir_all(&scratch);
}
