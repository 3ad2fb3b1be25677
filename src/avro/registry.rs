//! A client of a Confluent-compatible schema registry: the three requests
//! brook makes (a schema by id, a subject's latest schema, registering a
//! schema under a subject), over HTTP/1.1 with hyper's client, with basic
//! authentication when a user is given. Credentials never leave this
//! module: [`Registry::shown`] is the URL without them, and every error
//! names the registry by it.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::error::{BrookError, Result};

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The registry's content type.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where a schema registry is and how to sign in to it.
#[derive(Clone)]
pub struct Registry {
    /// `host:port` to connect to.
    authority: String,
    /// The URL's path, without a trailing `/` (usually empty).
    prefix: String,
    /// `Basic ...`, when a user is given.
    authorization: Option<String>,
    /// The URL without credentials, for messages.
    shown: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// A registry's answer that is not a success.
#[derive(Debug)]
pub enum RegistryError {
    /// The registry answered 404: no such schema or subject.
    NotFound(String),
    /// The registry could not be reached, or answered with an error.
    Failed(String),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::NotFound(message) | RegistryError::Failed(message) => {
                f.write_str(message)
            }
        }
    }
}

/// A schema the registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its id, the one messages carry in their frame.
    pub id: u32,
    /// The Avro schema, as JSON text.
    pub schema: String,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct SubjectAnswer {
    id: u32,
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

impl Registry {
    /// A registry at `url` (`http://host:port[/path]`, credentials allowed
    /// in it), signed in to as `user` with `password` when given.
    pub fn new(url: &str, user: Option<&str>, password: Option<&str>) -> Result<Self> {
        let unsupported = |why: &str| {
            BrookError::invalid(format!(
                "schema_registry '{}': {why}",
                crate::redact::redact_secrets(url)
            ))
        };
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(unsupported(
                "brook speaks plain HTTP to a schema registry (no TLS yet); use an http:// URL",
            ));
        } else {
            return Err(unsupported("expected a URL such as http://127.0.0.1:8081"));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (credentials, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(unsupported("the URL names no host"));
        }
        let host_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let (url_user, url_password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        let user = user.map(str::to_string).or(url_user);
        let password = password.map(str::to_string).or(url_password);
        let authorization = user.map(|user| {
            let pair = format!("{user}:{}", password.unwrap_or_default());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let prefix = path.trim_end_matches('/').to_string();
        Ok(Self {
            shown: format!("http://{host}{prefix}"),
            authority: host_port,
            prefix,
            authorization,
        })
    }

    /// The registry's URL without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The schema with id `id` (`GET /schemas/ids/{id}`).
    pub async fn schema_by_id(&self, id: u32) -> std::result::Result<String, RegistryError> {
        let body = self
            .request(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        let answer: SchemaAnswer = self.parse(&body)?;
        self.check_avro(answer.schema_type.as_deref(), &format!("schema {id}"))?;
        Ok(answer.schema)
    }

    /// The latest schema of `subject` (`GET /subjects/{subject}/versions/latest`).
    pub async fn latest(
        &self,
        subject: &str,
    ) -> std::result::Result<RegisteredSchema, RegistryError> {
        let body = self
            .request(
                Method::GET,
                &format!("/subjects/{}/versions/latest", path_segment(subject)),
                None,
            )
            .await?;
        let answer: SubjectAnswer = self.parse(&body)?;
        self.check_avro(
            answer.schema_type.as_deref(),
            &format!("subject '{subject}'"),
        )?;
        Ok(RegisteredSchema {
            id: answer.id,
            schema: answer.schema,
        })
    }

    /// Registers `schema` under `subject`, or finds it there, and returns
    /// its id (`POST /subjects/{subject}/versions`).
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
    ) -> std::result::Result<u32, RegistryError> {
        let request = serde_json::json!({ "schema": schema }).to_string();
        let body = self
            .request(
                Method::POST,
                &format!("/subjects/{}/versions", path_segment(subject)),
                Some(request),
            )
            .await?;
        let answer: IdAnswer = self.parse(&body)?;
        Ok(answer.id)
    }

    fn check_avro(
        &self,
        schema_type: Option<&str>,
        what: &str,
    ) -> std::result::Result<(), RegistryError> {
        match schema_type {
            None | Some("AVRO") => Ok(()),
            Some(other) => Err(RegistryError::Failed(format!(
                "schema registry {}: {what} is a {other} schema, not Avro",
                self.shown
            ))),
        }
    }

    fn parse<'a, T: Deserialize<'a>>(
        &self,
        body: &'a [u8],
    ) -> std::result::Result<T, RegistryError> {
        serde_json::from_slice(body).map_err(|err| {
            RegistryError::Failed(format!(
                "schema registry {}: an answer brook cannot read: {err}",
                self.shown
            ))
        })
    }

    /// One request; the answer's body when its status is a success.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> std::result::Result<Bytes, RegistryError> {
        let what = format!(
            "schema registry {}: {method} {}{path}",
            self.shown, self.prefix
        );
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| {
                RegistryError::Failed(format!(
                    "{what}: no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?;
        let (status, bytes) =
            answer.map_err(|err| RegistryError::Failed(format!("{what}: {err}")))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        let message = format!("{what}: {status}: {message}");
        Err(if status == StatusCode::NOT_FOUND {
            RegistryError::NotFound(message)
        } else {
            RegistryError::Failed(message)
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> std::result::Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// Runs `request` to its end from code that is not async (`CREATE
    /// STREAM`, `CREATE SINK`), on a thread of its own, so that it works
    /// whether or not the caller is inside a runtime.
    pub fn blocking<T: Send + 'static>(
        &self,
        request: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let shown = self.shown.clone();
        std::thread::Builder::new()
            .name("brook-registry".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(request))
            })
            .map_err(|err| BrookError::Internal(format!("a thread to ask {shown}: {err}")))?
            .join()
            .map_err(|_| {
                BrookError::Internal(format!("asking {}: the thread panicked", self.shown))
            })?
            .map_err(|err| BrookError::Internal(format!("a runtime to ask {}: {err}", self.shown)))
    }
}

/// `text` percent-encoded for one path segment (a subject's name may hold
/// any character).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_or_options_sign_in_and_never_show() {
        let registry =
            Registry::new("http://alice:s3cret@127.0.0.1:8081/reg/", None, None).unwrap();
        assert_eq!(registry.shown(), "http://127.0.0.1:8081/reg");
        assert_eq!(registry.authority, "127.0.0.1:8081");
        let expected = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        assert_eq!(registry.authorization, Some(format!("Basic {expected}")));
        assert!(!format!("{registry:?}").contains("s3cret"));
        let registry = Registry::new("http://h:1", Some("bob"), Some("pw")).unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        assert_eq!(registry.authorization, Some(format!("Basic {expected}")));
        let err = Registry::new("https://u:pw@h:1", None, None).unwrap_err();
        assert!(err.to_string().contains("no TLS"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert_eq!(path_segment("orders-value"), "orders-value");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
