//! The process's TLS cryptography. rustls is built here with two
//! providers (ring, which pgwire's server feature enables, and aws-lc-rs,
//! which the S3 client's HTTP stack enables), and with two it picks none
//! by itself: brook installs aws-lc-rs (rustls' own default, with
//! post-quantum key exchange) as the process's provider before it makes a
//! TLS configuration.

use pgwire::tokio::tokio_rustls::rustls;

/// Makes aws-lc-rs the process's rustls provider, unless one is installed
/// already (by brook earlier, or by an application embedding brook).
pub(crate) fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one in between.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
