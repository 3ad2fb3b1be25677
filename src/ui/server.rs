//! HTTP for the dashboard: hyper's HTTP/1 server on a tokio listener, the
//! routes, and the page's server-sent events. Only `GET` and `HEAD` are
//! served: the dashboard changes nothing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::history::{Dashboard, SAMPLE_INTERVAL};
use super::{json, metrics, page};

/// Connections served at once; more wait in the listener's backlog. Each
/// open page holds one for its live updates.
const MAX_CONNECTIONS: usize = 64;

type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections until `stopped`'s sender is dropped; each is served
/// on its own task, which also ends then.
pub(crate) async fn accept(
    listener: TcpListener,
    dashboard: Arc<Dashboard>,
    stopped: watch::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let mut stop = stopped.clone();
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that failed before it was accepted (reset,
                // or out of file descriptors for a moment).
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            changed = stop.changed() => if changed.is_err() {
                return;
            } else {
                continue;
            },
        };
        let dashboard = Arc::clone(&dashboard);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let dashboard = Arc::clone(&dashboard);
                async move { Ok::<_, Infallible>(route(&dashboard, &request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                // A client that goes away is no error of brook's.
                _ = connection => {}
                _ = stop.changed() => {}
            }
            drop(permit);
        });
    }
}

/// The response to `request`.
fn route(dashboard: &Arc<Dashboard>, request: &Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only: GET only\n",
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => respond("text/html; charset=utf-8", page::render(dashboard).into()),
        "/dashboard.js" => respond(
            "text/javascript; charset=utf-8",
            Bytes::from_static(page::DASHBOARD_JS.as_bytes()),
        ),
        "/dashboard.css" => respond(
            "text/css; charset=utf-8",
            Bytes::from_static(page::DASHBOARD_CSS.as_bytes()),
        ),
        "/api/queries" => json_response(&json::queries(dashboard)),
        "/api/streams" => json_response(&json::streams(dashboard)),
        "/api/warnings" => json_response(&json::warnings(dashboard)),
        "/api/history" => json_response(&json::history(&dashboard.samples_since(&BTreeMap::new()))),
        "/metrics" => respond(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(dashboard).into(),
        ),
        "/events" => events(Arc::clone(dashboard)),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn respond(content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = respond(
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    );
    *response.status_mut() = status;
    response
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    respond("application/json", value.to_string().into())
}

/// `/events`: a server-sent event at once and then every
/// [`SAMPLE_INTERVAL`], each one [`json::update`]. Each connection
/// remembers which history samples it has sent, so an update carries only
/// new points after the first.
fn events(dashboard: Arc<Dashboard>) -> Response<Body> {
    struct Events {
        dashboard: Arc<Dashboard>,
        sent: BTreeMap<u64, i64>,
        timer: tokio::time::Interval,
    }
    let mut timer = tokio::time::interval(SAMPLE_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Events {
        dashboard,
        sent: BTreeMap::new(),
        timer,
    };
    let updates = futures::stream::unfold(state, |mut state| async move {
        // The first tick completes at once.
        state.timer.tick().await;
        let update = json::update(&state.dashboard, &mut state.sent);
        let event = format!("data: {update}\n\n");
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), state))
    });
    let mut response = Response::new(StreamBody::new(updates).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
