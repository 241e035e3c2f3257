//! Trust communities as the running server holds them: the metadata certificate and key that sign
//! `signed_metadata` for each community, and the cached signed document.

use std::sync::RwLock;

use base64::Engine;
use bluegate_core::discovery::{self, Endpoints};
use bluegate_core::jose::SigningKey;
use bluegate_core::{certs, jose};
use serde_json::{Map, Value};

use crate::config::{CommunityConfig, ConfigError};

pub struct CommunityRuntime {
    pub uri: String,
    /// DER certificates, leaf first, as sent in `x5c`.
    pub metadata_chain: Vec<Vec<u8>>,
    metadata_key: SigningKey,
    /// The signed metadata JWT and the time after which it is re-signed.
    signed: RwLock<Option<(String, i64)>>,
}

impl CommunityRuntime {
    /// Load a community's metadata certificate and key, checking what UDAP requires of them: the key
    /// matches the leaf, the key is RSA (`signed_metadata` is RS256, UM-19), and the leaf carries the FHIR
    /// base as a URI SAN (UC-1) so that `iss` verifies.
    pub fn load(
        source_name: &str,
        index: usize,
        c: &CommunityConfig,
        fhir_base: &str,
    ) -> Result<Self, ConfigError> {
        let err = |k: &str, m: String| ConfigError {
            source_name: source_name.to_string(),
            key: format!("communities[{index}].{k}"),
            message: m,
        };
        for (i, p) in c.trust_anchors.iter().enumerate() {
            let pem = std::fs::read(p).map_err(|e| {
                err(
                    &format!("trust_anchors[{i}]"),
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            certs::pem_certs(&pem).map_err(|e| {
                err(
                    &format!("trust_anchors[{i}]"),
                    format!("{}: {e}", p.display()),
                )
            })?;
        }
        let chain_pem = std::fs::read(&c.metadata_cert).map_err(|e| {
            err(
                "metadata_cert",
                format!("cannot read {}: {e}", c.metadata_cert.display()),
            )
        })?;
        let chain = certs::pem_certs(&chain_pem).map_err(|e| {
            err(
                "metadata_cert",
                format!("{}: {e}", c.metadata_cert.display()),
            )
        })?;
        let leaf = certs::leaf_info(&chain[0]).map_err(|e| {
            err(
                "metadata_cert",
                format!("{}: {e}", c.metadata_cert.display()),
            )
        })?;
        if !leaf.san_uris.iter().any(|u| u == fhir_base) {
            return Err(err(
                "metadata_cert",
                format!(
                    "the certificate's URI SANs {:?} do not include the FHIR base {fhir_base}",
                    leaf.san_uris
                ),
            ));
        }
        let key_pem = std::fs::read_to_string(&c.metadata_key).map_err(|e| {
            err(
                "metadata_key",
                format!("cannot read {}: {e}", c.metadata_key.display()),
            )
        })?;
        let key = SigningKey::from_pem(Some(jose::Alg::RS256), &key_pem).map_err(|e| {
            err(
                "metadata_key",
                format!(
                    "{} is not an RSA private key usable for RS256: {e}",
                    c.metadata_key.display()
                ),
            )
        })?;
        if key.public_spki_der() != leaf.spki_der {
            return Err(err(
                "metadata_key",
                format!(
                    "the key in {} does not match the certificate in {}",
                    c.metadata_key.display(),
                    c.metadata_cert.display()
                ),
            ));
        }
        Ok(CommunityRuntime {
            uri: c.uri.clone(),
            metadata_chain: chain,
            metadata_key: key,
            signed: RwLock::new(None),
        })
    }

    /// The `signed_metadata` JWT, re-signed (with a fresh `jti`) once half of its lifetime has passed.
    pub fn signed_metadata(&self, ep: &Endpoints, now: i64) -> Result<String, jose::JoseError> {
        if let Ok(guard) = self.signed.read() {
            if let Some((jwt, refresh_at)) = guard.as_ref() {
                if now < *refresh_at {
                    return Ok(jwt.clone());
                }
            }
        }
        let jti = crate::random::token(16);
        let claims = discovery::udap_signed_metadata_claims(ep, now, &jti);
        let x5c: Vec<Value> = self
            .metadata_chain
            .iter()
            .map(|der| Value::String(base64::engine::general_purpose::STANDARD.encode(der)))
            .collect();
        let mut header = Map::new();
        header.insert("x5c".to_string(), Value::Array(x5c));
        let jwt = self.metadata_key.sign_compact(&header, &claims)?;
        if let Ok(mut guard) = self.signed.write() {
            *guard = Some((jwt.clone(), now + discovery::SIGNED_METADATA_LIFETIME / 2));
        }
        Ok(jwt)
    }
}
