//! Client secrets at rest. Secrets are generated with ≥256 bits of entropy (or required to be at least 32
//! characters when an operator supplies one), so a single SHA-256 is enough to make a leaked table useless
//! and keeps the token endpoint fast; comparison is constant-time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "sha256:";

/// Shortest secret an operator may supply.
pub const MIN_SECRET_LEN: usize = 32;

pub fn hash_client_secret(secret: &str) -> String {
    format!("{PREFIX}{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// Constant-time check of a presented secret against a stored hash.
pub fn verify_client_secret(presented: &str, stored: &str) -> bool {
    let Some(hex_digest) = stored.strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let actual = Sha256::digest(presented.as_bytes());
    expected.len() == actual.len() && bool::from(actual.as_slice().ct_eq(&expected))
}

/// SHA-256 of an opaque token (authorization codes, refresh tokens) as stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_themselves() {
        let h = hash_client_secret("s3cret-s3cret-s3cret-s3cret-s3cret");
        assert!(h.starts_with("sha256:"));
        assert!(!h.contains("s3cret"));
        assert!(verify_client_secret(
            "s3cret-s3cret-s3cret-s3cret-s3cret",
            &h
        ));
        assert!(!verify_client_secret(
            "s3cret-s3cret-s3cret-s3cret-s3creT",
            &h
        ));
        assert!(!verify_client_secret("", &h));
        assert!(!verify_client_secret("x", "plain-text-secret"));
        assert!(!verify_client_secret("x", "sha256:zz"));
    }

    #[test]
    fn token_hashes_are_stable_hex() {
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }
}
