//! Object storage: `s3://bucket/prefix` wherever brook takes a path (the
//! directory source, the file sinks, external tables, checkpoints, Delta
//! tables). object_store's S3 client makes the requests; this module reads
//! the `s3.*` options over the standard AWS environment variables, checks a
//! location when it is named (`CREATE`), and words the errors, never with a
//! secret in them.
//!
//! Every request's network I/O runs on one runtime of brook's own (see
//! [`io`]), so a store made in one place can be used from any runtime or
//! thread.

#[cfg(feature = "delta")]
pub(crate) mod delta_table;
pub(crate) mod io;
mod s3;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::error::{BrookError, Result};
pub use s3::{S3_OPTIONS, S3Options};

/// What a Delta sink or table says in a brook built without the `delta`
/// feature.
#[cfg(not(feature = "delta"))]
pub(crate) const DELTA_NOT_BUILT: &str = "Delta Lake is not in this build of brook; build it with `cargo build --release --features delta`";

/// True for a path brook reads as an object store URL (`s3://`, `s3a://`).
pub fn is_object_url(path: &str) -> bool {
    let lower = path.trim_start().to_ascii_lowercase();
    lower.starts_with("s3://") || lower.starts_with("s3a://")
}

/// A "directory" in an object store: a bucket and a key prefix, and the
/// store that reaches it.
#[derive(Clone)]
pub struct ObjectDir {
    /// `s3://bucket`, how DataFusion's registry knows the store.
    bucket_url: url::Url,
    /// The key prefix (no leading or trailing `/`; empty for the bucket).
    prefix: ObjectPath,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ObjectDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

impl PartialEq for ObjectDir {
    fn eq(&self, other: &Self) -> bool {
        self.bucket_url == other.bucket_url && self.prefix == other.prefix
    }
}

impl Eq for ObjectDir {}

impl ObjectDir {
    /// The directory `url` (`s3://bucket/some/prefix/`) reached with
    /// `options` over the AWS environment. Makes no request: see
    /// [`ObjectDir::check`].
    pub fn open(url: &str, options: &S3Options) -> Result<Self> {
        let parsed = url::Url::parse(url.trim())
            .map_err(|err| BrookError::invalid(format!("'{url}' is not a URL: {err}")))?;
        let bucket = parsed
            .host_str()
            .filter(|bucket| !bucket.is_empty())
            .ok_or_else(|| BrookError::invalid(format!("'{url}' names no bucket")))?
            .to_string();
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|err| {
            BrookError::invalid(format!("'{url}' is not a valid object path: {err}"))
        })?;
        let bucket_url = url::Url::parse(&format!("s3://{bucket}"))
            .map_err(|err| BrookError::invalid(format!("bucket '{bucket}': {err}")))?;
        let store = options.build(&bucket)?;
        Ok(Self {
            bucket_url,
            prefix,
            store,
        })
    }

    /// `s3://bucket/prefix` (the prefix without a trailing `/`).
    pub fn url(&self) -> String {
        if self.prefix.as_ref().is_empty() {
            self.bucket_url.to_string()
        } else {
            format!("{}/{}", self.bucket_url, self.prefix)
        }
    }

    /// `s3://bucket`, the URL DataFusion's object store registry keys by.
    pub fn bucket_url(&self) -> &url::Url {
        &self.bucket_url
    }

    /// The bucket's store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// The key of `name` under the prefix (`name` may hold `/`).
    pub fn key(&self, name: &str) -> ObjectPath {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// The directory `name` under this one.
    pub fn subdir(&self, name: &str) -> ObjectDir {
        ObjectDir {
            bucket_url: self.bucket_url.clone(),
            prefix: self.key(name),
            store: Arc::clone(&self.store),
        }
    }

    /// The URL of `key`, for messages.
    pub fn show(&self, key: &ObjectPath) -> String {
        format!("{}/{key}", self.bucket_url)
    }

    /// `key`'s name relative to the prefix.
    pub fn name_of(&self, key: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = key
            .prefix_match(&self.prefix)?
            .map(|part| part.as_ref().to_string())
            .collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    /// Lists one object under the prefix: a missing bucket, refused
    /// credentials or an unreachable endpoint is an error naming it.
    pub async fn check(&self) -> Result<()> {
        let store = Arc::clone(&self.store);
        let prefix = self.prefix.clone();
        let listed = io::run(async move {
            use futures::StreamExt;
            let mut listing = store.list(Some(&prefix));
            listing.next().await.transpose().map(|_| ())
        })
        .await?;
        listed.map_err(|err| self.error("cannot reach", &err))
    }

    /// [`ObjectDir::check`] from code that is not async.
    pub fn check_blocking(&self) -> Result<()> {
        let dir = self.clone();
        io::block_on(async move { dir.check().await })?
    }

    /// An error about a request for `what` under this directory, worded
    /// for the user: [`describe`] names the likely cause.
    pub fn error(&self, doing: &str, err: &object_store::Error) -> BrookError {
        BrookError::external(format!("{doing} {}", self.url()), describe(err))
    }
}

/// What an object store error means, in a user's words first (a missing
/// bucket, refused credentials, an unreachable endpoint), then the store's
/// own message. Never holds a secret: object_store's messages hold URLs
/// without credentials, and the signature is not echoed.
pub fn describe(err: &object_store::Error) -> String {
    let text = crate::error::error_chain(err);
    let lower = text.to_ascii_lowercase();
    // A connection that never happened is told first: its message holds the
    // endpoint's URL, whose port may read like a status code (port 40321
    // holds "403").
    let cause = if lower.contains("connection refused")
        || lower.contains("tcp connect")
        || lower.contains("dns error")
        || lower.contains("error sending request")
        || lower.contains("timed out")
    {
        Some("the endpoint cannot be reached")
    } else if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") {
        Some("the bucket does not exist")
    } else if lower.contains("signaturedoesnotmatch")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("accessdenied")
        || lower.contains("403 forbidden")
        || lower.contains("status 403")
    {
        Some(
            "the credentials were refused (check s3.access_key_id / s3.secret_access_key or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        )
    } else {
        None
    };
    let text = crate::redact::redact_secrets(&text);
    match cause {
        Some(cause) => format!("{cause}: {text}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: message.to_string().into(),
        }
    }

    #[test]
    fn regression_an_endpoint_whose_port_holds_403_is_unreachable_not_refused_credentials() {
        let err = generic(
            "Error performing PUT http://127.0.0.1:40321/flow/a.parquet in 409ms, after 3 retries \
             - HTTP error: error sending request: client error (Connect): tcp connect error: \
             Connection refused (os error 111)",
        );
        let told = describe(&err);
        assert!(told.starts_with("the endpoint cannot be reached"), "{told}");
    }

    #[test]
    fn a_forbidden_answer_is_refused_credentials_and_a_missing_bucket_is_named() {
        let refused = describe(&generic(
            "Error performing GET http://127.0.0.1:9000/b: Client error with status 403 Forbidden: \
             <Code>SignatureDoesNotMatch</Code>",
        ));
        assert!(
            refused.starts_with("the credentials were refused"),
            "{refused}"
        );
        let missing = describe(&generic(
            "Client error with status 404 Not Found: <Code>NoSuchBucket</Code>",
        ));
        assert!(
            missing.starts_with("the bucket does not exist"),
            "{missing}"
        );
        let other = describe(&generic("Client error with status 500: boom"));
        assert!(!other.starts_with("the "), "{other}");
    }
}
