//! Small, read-only views of certificates that the server needs at start-up (the metadata certificate's
//! key and URI SANs). Path validation lives in [`crate::trust`]; issuing lives in [`crate::pki`].

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a PEM certificate file: {0}")]
    Pem(String),
    #[error("no certificate found")]
    Empty,
    #[error("not a valid X.509 certificate")]
    Der,
}

/// What Bluegate needs to know about its own certificates.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    pub spki_der: Vec<u8>,
    pub san_uris: Vec<String>,
    pub not_after: i64,
    pub is_ca: bool,
}

/// The DER certificates of a PEM text, in file order.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(certs)
}

/// Key, URI SANs and expiry of a DER certificate.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Der)?;
    if !rest.is_empty() {
        return Err(CertError::Der);
    }
    let mut san_uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                san_uris.push(u.to_string());
            }
        }
    }
    Ok(LeafInfo {
        spki_der: cert.public_key().raw.to_vec(),
        san_uris,
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}
