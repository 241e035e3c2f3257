//! The HTTPS client apps use: rustls with the aws-lc-rs provider, the Mozilla root set plus any extra CA
//! the caller trusts (e.g. a test community's root), no redirects followed silently.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("extra CA file: {0}")]
    Ca(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// An HTTPS client trusting the Mozilla roots and the PEM certificates in `extra_ca_pem`.
pub fn client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| HttpError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| HttpError::Ca(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| HttpError::Tls(e.to_string()))
}
