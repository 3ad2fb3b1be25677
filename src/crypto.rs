//! The process's TLS cryptography. rustls is built here with ring (which
//! pgwire's server feature enables) and, with the `delta` feature, also
//! aws-lc-rs (which deltalake's HTTP client enables); with two it picks
//! none by itself, and object_store's S3 client brings no provider of its
//! own. brook installs ring as the process's provider before it makes a
//! TLS configuration or an S3 client, so every build behaves alike.
//! (aws-lc-rs would add post-quantum key exchange, but needs a C build of
//! aws-lc that only the `delta` build pays for.)

use pgwire::tokio::tokio_rustls::rustls;

/// Makes ring the process's rustls provider, unless one is installed
/// already (by brook earlier, or by an application embedding brook).
pub(crate) fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // rustls marks ring's provider deprecated for its lack of
        // post-quantum key exchange; it is the provider every build has.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        // Fails only when another thread installed one in between.
        let _ = provider.install_default();
    }
}
