//! The server's own signing keys as a set: which key signs now, which public keys the JWKS publishes.
//!
//! A retired key keeps being published until `publish_until` (the longest lifetime of a token it may have
//! signed), so tokens issued just before a rotation still verify everywhere.

use serde_json::{json, Value};

use crate::jose::{Alg, JoseError, SigningKey};

/// A key as the store keeps it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: Alg,
    pub private_pkcs8_der: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

impl StoredKey {
    fn active(&self) -> bool {
        self.retired_at.is_none()
    }

    fn published(&self, now: i64) -> bool {
        self.active() || self.publish_until.is_some_and(|t| t > now)
    }
}

/// The algorithms the server signs with: RS256 (RSA-2048) for `id_token`s, which SMART requires, and ES256
/// (P-256) for access tokens, which is much cheaper to sign.
pub const SERVER_ALGS: [Alg; 2] = [Alg::RS256, Alg::ES256];

/// Which server algorithms have no active key yet.
pub fn needs_initial_keys(keys: &[StoredKey]) -> Vec<Alg> {
    SERVER_ALGS
        .into_iter()
        .filter(|alg| !keys.iter().any(|k| k.alg == *alg && k.active()))
        .collect()
}

struct Entry {
    key: SigningKey,
    created_at: i64,
    active: bool,
    publish_until: Option<i64>,
}

/// Loaded keys: the signers, and the public keys to publish.
pub struct KeySet {
    entries: Vec<Entry>,
}

impl KeySet {
    /// Load every key that is active or still published at `now`; keys past their publication are left
    /// out entirely.
    pub fn from_stored(keys: &[StoredKey], now: i64) -> Result<KeySet, JoseError> {
        let mut entries = Vec::new();
        for k in keys.iter().filter(|k| k.published(now)) {
            entries.push(Entry {
                key: SigningKey::from_pkcs8_der(k.alg, &k.kid, &k.private_pkcs8_der)?,
                created_at: k.created_at,
                active: k.active(),
                publish_until: k.publish_until,
            });
        }
        // Newest first, so `active` picks the newest active key.
        entries.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        Ok(KeySet { entries })
    }

    /// The newest active key for `alg`.
    pub fn active(&self, alg: Alg) -> Option<&SigningKey> {
        self.entries
            .iter()
            .find(|e| e.active && e.key.alg() == alg)
            .map(|e| &e.key)
    }

    /// A published key by `kid` (active or retired), for verifying tokens this server issued.
    pub fn find(&self, kid: &str, now: i64) -> Option<&SigningKey> {
        self.entries
            .iter()
            .find(|e| e.key.kid() == kid && (e.active || e.publish_until.is_some_and(|t| t > now)))
            .map(|e| &e.key)
    }

    /// The JWKS document: active keys and retired keys still within their publication window.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<Value> = self
            .entries
            .iter()
            .filter(|e| e.active || e.publish_until.is_some_and(|t| t > now))
            .map(|e| e.key.public_jwk())
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(alg: Alg, created_at: i64) -> StoredKey {
        let k = SigningKey::generate(alg).unwrap();
        StoredKey {
            kid: k.kid().to_string(),
            alg,
            private_pkcs8_der: k.to_pkcs8_der().unwrap(),
            created_at,
            retired_at: None,
            publish_until: None,
        }
    }

    #[test]
    fn initial_keys_are_rs256_and_es256() {
        assert_eq!(needs_initial_keys(&[]), vec![Alg::RS256, Alg::ES256]);
        let es = stored(Alg::ES256, 1);
        assert_eq!(
            needs_initial_keys(std::slice::from_ref(&es)),
            vec![Alg::RS256]
        );
        let mut retired = es;
        retired.retired_at = Some(5);
        assert_eq!(needs_initial_keys(&[retired]), vec![Alg::RS256, Alg::ES256]);
    }

    #[test]
    fn newest_active_key_signs_and_retired_keys_stay_published_until_their_window_ends() {
        let mut old = stored(Alg::ES256, 100);
        let new = stored(Alg::ES256, 200);
        let rsa = stored(Alg::RS256, 50);
        old.retired_at = Some(200);
        old.publish_until = Some(3800);
        let set = KeySet::from_stored(&[old.clone(), new.clone(), rsa.clone()], 300).unwrap();
        assert_eq!(set.active(Alg::ES256).unwrap().kid(), new.kid);
        assert_eq!(set.active(Alg::RS256).unwrap().kid(), rsa.kid);
        assert!(set.active(Alg::ES384).is_none());
        let kids: Vec<String> = set.jwks(300)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        assert!(kids.contains(&old.kid) && kids.contains(&new.kid) && kids.contains(&rsa.kid));
        assert!(set.find(&old.kid, 300).is_some());
        // After the window, the retired key is neither published nor usable for verification.
        let set = KeySet::from_stored(&[old.clone(), new, rsa], 3800).unwrap();
        assert!(!set.jwks(3800).to_string().contains(&old.kid));
        assert!(set.find(&old.kid, 3800).is_none());
        // No private material in the JWKS.
        assert!(!set.jwks(3800).to_string().contains("\"d\""));
    }
}
