//! The app's UDAP identity: its certificate chain (leaf first) and the leaf's private key. The leaf's URI
//! SAN is the app's client URI (the software statement's `iss`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bluegate_core::jose::{Alg, SigningKey};
use serde_json::{json, Map, Value};

use crate::error::Error;

/// A certificate chain and the leaf's key. `Debug` shows the client URI and algorithm only.
pub struct AppIdentity {
    key: SigningKey,
    chain_der: Vec<Vec<u8>>,
    client_uri: String,
}

impl std::fmt::Debug for AppIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppIdentity")
            .field("client_uri", &self.client_uri)
            .field("alg", &self.key.alg())
            .finish_non_exhaustive()
    }
}

impl AppIdentity {
    /// From PEM: `chain_pem` holds the leaf first, then any intermediates; `key_pem` the leaf's private key
    /// (PKCS#8, PKCS#1 or SEC1). RSA keys sign RS256, P-256 keys ES256 (P-384 ES384). The key must be the
    /// leaf's, and the leaf must carry a URI SAN; with several, `client_uri` picks one.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &str,
        client_uri: Option<&str>,
    ) -> Result<Self, Error> {
        let chain_der = bluegate_core::certs::pem_certs(chain_pem)
            .map_err(|e| Error::Identity(format!("certificate chain: {e}")))?;
        let leaf = bluegate_core::certs::leaf_info(&chain_der[0])
            .map_err(|e| Error::Identity(format!("leaf certificate: {e}")))?;
        if leaf.is_ca {
            return Err(Error::Identity(
                "the first certificate is a CA; the chain must start with the app's own certificate"
                    .into(),
            ));
        }
        let key = SigningKey::from_pem(None, key_pem)
            .map_err(|e| Error::Identity(format!("private key: {e}")))?;
        if key.public_spki_der() != leaf.spki_der {
            return Err(Error::Identity(
                "the private key does not belong to the leaf certificate".into(),
            ));
        }
        let client_uri = match client_uri {
            Some(u) if leaf.san_uris.iter().any(|s| s == u) => u.to_string(),
            Some(u) => {
                return Err(Error::Identity(format!(
                    "`{u}` is not a URI SAN of the certificate (it has: {})",
                    leaf.san_uris.join(", ")
                )))
            }
            None => leaf.san_uris.first().cloned().ok_or_else(|| {
                Error::Identity("the certificate has no URI SAN (the app's client URI)".into())
            })?,
        };
        Ok(AppIdentity {
            key,
            chain_der,
            client_uri,
        })
    }

    /// From files.
    pub fn from_files(
        chain: &std::path::Path,
        key: &std::path::Path,
        client_uri: Option<&str>,
    ) -> Result<Self, Error> {
        let chain_pem = std::fs::read(chain)
            .map_err(|e| Error::io(format!("reading {}", chain.display()), e))?;
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| Error::io(format!("reading {}", key.display()), e))?;
        Self::from_pem(&chain_pem, &key_pem, client_uri)
    }

    /// The client URI (the leaf's URI SAN): `iss` and `sub` of software statements.
    pub fn client_uri(&self) -> &str {
        &self.client_uri
    }

    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    /// The leaf certificate (DER).
    pub fn leaf_der(&self) -> &[u8] {
        &self.chain_der[0]
    }

    /// `x5c`: standard base64 (not base64url) DER, leaf first (UJ-2).
    pub fn x5c(&self) -> Vec<String> {
        self.chain_der.iter().map(|d| STANDARD.encode(d)).collect()
    }

    /// Sign `claims` with `alg` and `x5c` in the header (and the key's `kid`).
    pub fn sign_with_x5c(&self, claims: &Value) -> Result<String, Error> {
        let mut header = Map::new();
        header.insert("x5c".into(), json!(self.x5c()));
        self.key
            .sign_compact(&header, claims)
            .map_err(|e| Error::Identity(format!("signing failed: {e}")))
    }
}
