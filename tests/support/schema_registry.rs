//! A small schema registry for tests and benches: the few endpoints of a
//! Confluent-compatible registry brook uses (no registry server ships in a
//! package here), on 127.0.0.1 at a free port, on a thread of its own.
//!
//! - `GET /schemas/ids/{id}` → `{"schema": "..."}`
//! - `GET /subjects/{subject}/versions/latest` → `{"subject", "version", "id", "schema"}`
//! - `POST /subjects/{subject}/versions` with `{"schema": "..."}` → `{"id": N}`
//!   (the same schema under the same subject keeps its id)
//!
//! With a user set, a request without its basic-auth credentials gets 401.
//! Unknown ids and subjects get 404 with the registry's error codes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct State {
    /// Every schema by id (ids start at 1).
    schemas: Vec<String>,
    /// Each subject's versions: the ids, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    /// `Basic ...` a request must carry, when set.
    authorization: Option<String>,
    /// Requests answered, by path.
    requests: Vec<String>,
}

pub struct SchemaRegistry {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SchemaRegistry {
    /// A registry that asks for no credentials.
    pub fn start() -> Self {
        Self::start_on(None, "127.0.0.1:0".parse().unwrap())
    }

    /// A registry that answers only `user` with `password`.
    pub fn start_with_user(user: &str, password: &str) -> Self {
        let registry = Self::start();
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        registry.state.lock().unwrap().authorization = Some(format!("Basic {pair}"));
        registry
    }

    fn start_on(state: Option<Arc<Mutex<State>>>, address: SocketAddr) -> Self {
        let state = state.unwrap_or_default();
        let listener = std::net::TcpListener::bind(address).expect("a port for the registry");
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = Arc::clone(&serving);
                        tokio::spawn(async move {
                            let service = service_fn(move |request| {
                                let state = Arc::clone(&state);
                                async move { Ok::<_, Infallible>(answer(&state, request).await) }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            address,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Registers `schema` under `subject` (as `POST` would) and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        register(&mut self.state.lock().unwrap(), subject, schema)
    }

    /// The schema with id `id`.
    pub fn schema(&self, id: u32) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.schemas.get(id as usize - 1).cloned()
    }

    /// The ids registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        let state = self.state.lock().unwrap();
        state.subjects.get(subject).cloned().unwrap_or_default()
    }

    /// The paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stops answering (the port is closed) until [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Answers again on the same port, with the same schemas.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(Some(Arc::clone(&self.state)), self.address);
        let mut again = std::mem::ManuallyDrop::new(again);
        self.stop = again.stop.take();
        self.thread = again.thread.take();
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn register(state: &mut State, subject: &str, schema: &str) -> u32 {
    let parsed: serde_json::Value = serde_json::from_str(schema).expect("schema JSON");
    let same = |id: &u32| {
        serde_json::from_str::<serde_json::Value>(&state.schemas[*id as usize - 1]).ok()
            == Some(parsed.clone())
    };
    if let Some(id) = state
        .subjects
        .get(subject)
        .and_then(|v| v.iter().copied().find(same))
    {
        return id;
    }
    state.schemas.push(schema.to_string());
    let id = state.schemas.len() as u32;
    state
        .subjects
        .entry(subject.to_string())
        .or_default()
        .push(id);
    id
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn not_found(code: u32, message: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error_code": code, "message": message}),
    )
}

async fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let authorized = {
        let mut state = state.lock().unwrap();
        state.requests.push(format!("{method} {path}"));
        match &state.authorization {
            None => true,
            Some(expected) => request
                .headers()
                .get("authorization")
                .is_some_and(|given| given.as_bytes() == expected.as_bytes()),
        }
    };
    if !authorized {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error_code": 401, "message": "Unauthorized"}),
        );
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut state = state.lock().unwrap();
    match (method, parts.as_slice()) {
        (Method::GET, ["schemas", "ids", id]) => {
            match id
                .parse::<usize>()
                .ok()
                .and_then(|id| state.schemas.get(id.wrapping_sub(1)))
            {
                Some(schema) => json(StatusCode::OK, serde_json::json!({"schema": schema})),
                None => not_found(40403, "Schema not found"),
            }
        }
        (Method::GET, ["subjects", subject, "versions", "latest"]) => {
            let subject = decode(subject);
            match state
                .subjects
                .get(&subject)
                .and_then(|v| v.last().map(|id| (v.len(), *id)))
            {
                Some((version, id)) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "subject": subject,
                        "version": version,
                        "id": id,
                        "schema": state.schemas[id as usize - 1],
                    }),
                ),
                None => not_found(40401, "Subject not found"),
            }
        }
        (Method::POST, ["subjects", subject, "versions"]) => {
            let subject = decode(subject);
            let request: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(request) => request,
                Err(_) => {
                    return json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({"error_code": 42201, "message": "Invalid schema"}),
                    );
                }
            };
            let Some(schema) = request.get("schema").and_then(|s| s.as_str()) else {
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            if serde_json::from_str::<serde_json::Value>(schema).is_err() {
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            }
            let id = register(&mut state, &subject, schema);
            json(StatusCode::OK, serde_json::json!({"id": id}))
        }
        _ => not_found(404, "Not found"),
    }
}

/// A path segment percent-decoded.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
