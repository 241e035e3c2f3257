//! TLS for the listener: rustls with the aws-lc-rs provider, TLS 1.3 and 1.2 only (CARIN CB-5).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls::sign::SingleCertAndKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsConfig};

/// Build the rustls server configuration, checking that the files exist, parse, and that the key belongs
/// to the first certificate.
pub fn server_config(source_name: &str, tls: &TlsConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    let err = |key: &str, msg: String| ConfigError {
        source_name: source_name.to_string(),
        key: key.to_string(),
        message: msg,
    };
    let chain = read_certs(&tls.cert).map_err(|m| err("tls.cert", m))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        err(
            "tls.key",
            format!(
                "cannot read a PEM private key from {}: {e}",
                tls.key.display()
            ),
        )
    })?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| err("tls.key", format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        err(
            "tls.key",
            format!(
                "the key in {} does not match the certificate in {}",
                tls.key.display(),
                tls.cert.display()
            ),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("tls", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}
