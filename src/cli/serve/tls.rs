//! TLS for `brook serve` when a certificate and key are given (PEM files):
//! rustls with the process's provider (see [`crate::crypto`]), through
//! pgwire's re-export of tokio-rustls. psql's `sslmode=require` and PostgreSQL 17's direct TLS
//! (ALPN `postgresql`) both work.

use std::path::Path;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{BrookError, Result};

/// An acceptor serving the certificate chain in `cert` with the key in `key`.
pub(super) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad = |what: &Path, err: &dyn std::fmt::Display| {
        BrookError::invalid(format!("brook serve: {}: {err}", what.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|err| bad(cert, &err))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|err| bad(cert, &err))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| bad(key, &err))?;
    crate::crypto::install_default_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| bad(cert, &err))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
