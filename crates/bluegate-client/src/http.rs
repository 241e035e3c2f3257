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

/// Default cap on a FHIR response body (configurable per client).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Cap on OAuth/registration/discovery JSON responses.
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// Read a response body, refusing it as soon as it is known to exceed `limit` bytes: a `Content-Length`
/// over the limit is refused before reading, and a chunked or lying body is cut off at the limit. Never
/// buffers more than `limit` bytes.
pub async fn read_limited(
    resp: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, crate::error::Error> {
    use crate::error::Error;
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(Error::TooLarge {
            url: crate::util::redact_url(&url),
            limit,
        });
    }
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::transport(&url, e))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::TooLarge {
                url: crate::util::redact_url(&url),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_limited`] at [`MAX_JSON_BYTES`], parsed as JSON.
pub async fn read_json(resp: reqwest::Response) -> Result<serde_json::Value, crate::error::Error> {
    let url = resp.url().to_string();
    let bytes = read_limited(resp, MAX_JSON_BYTES).await?;
    serde_json::from_slice(&bytes)
        .map_err(|_| crate::error::Error::bad(&url, "the response is not JSON"))
}
