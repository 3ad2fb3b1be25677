//! S3 settings: the `s3.*` options of a stream, sink or table over the
//! standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), as
//! object_store's S3 builder reads them.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::client::SpawnedReqwestConnector;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::{BrookError, Result};
use crate::options::{OptionReader, OptionSpec, parse_bool};

/// The `s3.*` options every connector with a path takes.
pub const S3_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "s3.endpoint",
        default: None,
        help: "the S3 endpoint URL (a local server: 'http://127.0.0.1:8333'); else AWS_ENDPOINT_URL or AWS",
    },
    OptionSpec {
        key: "s3.region",
        default: None,
        help: "the bucket's region; else AWS_REGION / AWS_DEFAULT_REGION, or us-east-1",
    },
    OptionSpec {
        key: "s3.access_key_id",
        default: None,
        help: "the access key; else AWS_ACCESS_KEY_ID",
    },
    OptionSpec {
        key: "s3.secret_access_key",
        default: None,
        help: "the secret key (never shown); else AWS_SECRET_ACCESS_KEY",
    },
    OptionSpec {
        key: "s3.allow_http",
        default: None,
        help: "'true' to allow an http:// endpoint; else AWS_ALLOW_HTTP",
    },
];

/// How long one request may take to connect. Past it the request is
/// retried; an endpoint that is not there is reported in seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The S3 options given; what is not given comes from the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `s3.endpoint`.
    pub endpoint: Option<String>,
    /// `s3.region`.
    pub region: Option<String>,
    /// `s3.access_key_id`.
    pub access_key_id: Option<String>,
    /// `s3.secret_access_key`: never shown.
    pub secret_access_key: Option<String>,
    /// `s3.allow_http`.
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Options {
    /// The `s3.*` options of a `WITH (...)` list read by `reader` (whose
    /// specs include [`S3_OPTIONS`]).
    pub(crate) fn read(reader: &OptionReader<'_>) -> Result<Self> {
        Ok(Self {
            endpoint: reader.text("s3.endpoint").map(str::to_string),
            region: reader.text("s3.region").map(str::to_string),
            access_key_id: reader.text("s3.access_key_id").map(str::to_string),
            secret_access_key: reader.text("s3.secret_access_key").map(str::to_string),
            allow_http: reader.bool("s3.allow_http")?,
        })
    }

    /// Takes the `s3.*` options out of `options` (a table's `OPTIONS`),
    /// leaving the others.
    pub fn take_from(options: &mut Vec<(String, String)>, owner: &str) -> Result<Self> {
        let mut taken = Self::default();
        let mut rest = Vec::with_capacity(options.len());
        for (key, value) in options.drain(..) {
            match key.to_ascii_lowercase().as_str() {
                "s3.endpoint" => taken.endpoint = Some(value),
                "s3.region" => taken.region = Some(value),
                "s3.access_key_id" => taken.access_key_id = Some(value),
                "s3.secret_access_key" => taken.secret_access_key = Some(value),
                "s3.allow_http" => {
                    taken.allow_http = Some(parse_bool(&value).ok_or_else(|| {
                        BrookError::invalid(format!(
                            "{owner}: s3.allow_http must be 'true' or 'false', got '{value}'"
                        ))
                    })?)
                }
                lower if lower.starts_with("s3.") => {
                    return Err(BrookError::invalid(format!(
                        "{owner}: unknown option '{key}' (S3 options: {})",
                        super::S3_OPTIONS
                            .iter()
                            .map(|spec| spec.key)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                _ => rest.push((key, value)),
            }
        }
        *options = rest;
        Ok(taken)
    }

    /// The value of option `key` for `SHOW`: the endpoint and region as
    /// given, the keys never.
    pub fn shown(&self, key: &str) -> Option<String> {
        match key {
            "s3.endpoint" => self.endpoint.clone(),
            "s3.region" => self.region.clone(),
            "s3.access_key_id" | "s3.secret_access_key" => None,
            "s3.allow_http" => self.allow_http.map(|on| on.to_string()),
            _ => None,
        }
    }

    /// The store for `bucket`: the environment, then these options over it.
    pub(crate) fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        crate::crypto::install_default_provider();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: crate::retry::FIRST_WAIT,
                max_backoff: crate::retry::MAX_WAIT,
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        // Client options first: they hold allow_http, which the options
        // below may set.
        let mut builder = AmazonS3Builder::new()
            .with_retry(retry)
            .with_client_options(ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT))
            .with_http_connector(SpawnedReqwestConnector::new(super::io::handle()?));
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_")
                && let Ok(config) = key.to_ascii_lowercase().parse()
            {
                builder = builder.with_config(config, value);
            }
        }
        builder = builder.with_bucket_name(bucket);

        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(allow) = self.allow_http {
            builder = builder.with_allow_http(allow);
        } else if self
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
            && std::env::var_os("AWS_ALLOW_HTTP").is_none()
        {
            return Err(BrookError::invalid(format!(
                "s3.endpoint '{}' is plain http: add s3.allow_http = 'true' to use it",
                self.endpoint.as_deref().unwrap_or_default()
            )));
        }
        let store = builder.build().map_err(|err| {
            BrookError::invalid(format!("bucket '{bucket}': {}", super::describe(&err)))
        })?;
        Ok(Arc::new(store))
    }
}
