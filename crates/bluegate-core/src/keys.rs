//! The server's own signing keys as a set: which key signs now, which public keys the JWKS publishes, and
//! how a rotation changes the stored keys.
//!
//! A retired key keeps being published until `publish_until` (the longest lifetime of a token it may have
//! signed), so tokens issued just before a rotation still verify everywhere.

use std::collections::HashSet;
use std::fmt;

use serde_json::{json, Value};

use crate::jose::{Alg, JoseError, SigningKey};

/// A key as the store keeps it. `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: Alg,
    pub private_pkcs8_der: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` while the key is active.
    pub retired_at: Option<i64>,
    /// Unix seconds; a retired key stays in the JWKS while `publish_until > now`.
    pub publish_until: Option<i64>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pkcs8_der", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("publish_until", &self.publish_until)
            .finish()
    }
}

impl StoredKey {
    /// A freshly generated active key for `alg` (RSA-2048, P-256 or P-384), created at `now`; its `kid` is
    /// the JWK thumbprint.
    pub fn generate(alg: Alg, now: i64) -> Result<StoredKey, JoseError> {
        let key = SigningKey::generate(alg)?;
        Ok(StoredKey {
            kid: key.kid().to_string(),
            alg,
            private_pkcs8_der: key.to_pkcs8_der()?,
            created_at: now,
            retired_at: None,
            publish_until: None,
        })
    }

    /// Not retired.
    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }

    /// Active, or retired but still inside its publication window at `now`.
    pub fn is_published(&self, now: i64) -> bool {
        self.is_active() || self.publish_until.is_some_and(|t| t > now)
    }
}

/// The algorithms the server signs with: RS256 (RSA-2048) for `id_token`s, which SMART requires, and ES256
/// (P-256) for access tokens, which is much cheaper to sign.
pub const SERVER_ALGS: [Alg; 2] = [Alg::RS256, Alg::ES256];

/// Which server algorithms ([`SERVER_ALGS`]) have no active key yet.
pub fn needs_initial_keys(keys: &[StoredKey]) -> Vec<Alg> {
    SERVER_ALGS
        .into_iter()
        .filter(|alg| !keys.iter().any(|k| k.alg == *alg && k.is_active()))
        .collect()
}

/// One key to retire in a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub kid: String,
    pub retired_at: i64,
    pub publish_until: i64,
}

/// What a rotation changes: one new active key, and the previously active keys of that algorithm retired
/// now but published for `max_token_lifetime` more seconds.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    pub new_key: StoredKey,
    pub retire: Vec<Retirement>,
}

impl RotationPlan {
    /// The stored keys after the rotation (for stores that write the whole set, and for tests).
    pub fn apply_to(&self, keys: &[StoredKey]) -> Vec<StoredKey> {
        let mut out: Vec<StoredKey> = keys
            .iter()
            .map(|k| match self.retire.iter().find(|r| r.kid == k.kid) {
                Some(r) => StoredKey {
                    retired_at: Some(r.retired_at),
                    publish_until: Some(r.publish_until),
                    ..k.clone()
                },
                None => k.clone(),
            })
            .collect();
        out.push(self.new_key.clone());
        out
    }
}

/// Plan the rotation of `alg`: a new key created at `now`; every active key of `alg` (normally one; two if
/// nodes raced at start-up) gets `retired_at = now` and `publish_until = now + max_token_lifetime`, so the
/// tokens it signed keep verifying until they expire. Verifiers with clock-skew leeway may want
/// `max_token_lifetime` to include it.
pub fn rotation_plan(
    keys: &[StoredKey],
    alg: Alg,
    now: i64,
    max_token_lifetime: i64,
) -> Result<RotationPlan, JoseError> {
    let new_key = StoredKey::generate(alg, now)?;
    Ok(rotation_plan_with(keys, new_key, now, max_token_lifetime))
}

/// [`rotation_plan`] with a given new key (its `alg` decides which keys retire).
pub fn rotation_plan_with(
    keys: &[StoredKey],
    new_key: StoredKey,
    now: i64,
    max_token_lifetime: i64,
) -> RotationPlan {
    let publish_until = now.saturating_add(max_token_lifetime.max(0));
    let retire = keys
        .iter()
        .filter(|k| k.alg == new_key.alg && k.is_active() && k.kid != new_key.kid)
        .map(|k| Retirement {
            kid: k.kid.clone(),
            retired_at: now,
            publish_until,
        })
        .collect();
    RotationPlan { new_key, retire }
}

struct Entry {
    key: SigningKey,
    created_at: i64,
    active: bool,
    publish_until: Option<i64>,
}

impl Entry {
    fn published(&self, now: i64) -> bool {
        self.active || self.publish_until.is_some_and(|t| t > now)
    }
}

/// Loaded keys: the signers, and the public keys to publish.
pub struct KeySet {
    entries: Vec<Entry>,
    loaded_at: i64,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.entries.iter().map(|e| e.key.kid()).collect::<Vec<_>>(),
            )
            .field("loaded_at", &self.loaded_at)
            .finish()
    }
}

impl KeySet {
    /// Load every key that is active or still published at `now`; keys past their publication are left out
    /// entirely. A key that does not load (bad DER, wrong type for its `alg`, weak RSA) or two keys with the
    /// same `kid` make the whole set fail: silently skipping a key would change what verifies.
    pub fn from_stored(keys: &[StoredKey], now: i64) -> Result<KeySet, JoseError> {
        let mut entries = Vec::new();
        let mut kids = HashSet::new();
        for k in keys.iter().filter(|k| k.is_published(now)) {
            if !kids.insert(k.kid.as_str()) {
                return Err(JoseError::BadKey("two stored signing keys share a kid"));
            }
            entries.push(Entry {
                key: SigningKey::from_pkcs8_der(k.alg, &k.kid, &k.private_pkcs8_der)?,
                created_at: k.created_at,
                active: k.is_active(),
                publish_until: k.publish_until,
            });
        }
        // Newest first, so `active` picks the newest active key.
        entries.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        Ok(KeySet {
            entries,
            loaded_at: now,
        })
    }

    /// The newest active key for `alg`.
    pub fn active(&self, alg: Alg) -> Option<&SigningKey> {
        self.entries
            .iter()
            .find(|e| e.active && e.key.alg() == alg)
            .map(|e| &e.key)
    }

    /// A key published at `now` (active, or retired within its window) by `kid`, for verifying tokens this
    /// server issued.
    pub fn find(&self, kid: &str, now: i64) -> Option<&SigningKey> {
        self.entries
            .iter()
            .find(|e| e.key.kid() == kid && e.published(now))
            .map(|e| &e.key)
    }

    /// [`KeySet::find`] at the time the set was loaded.
    pub fn find_public(&self, kid: &str) -> Option<&SigningKey> {
        self.find(kid, self.loaded_at)
    }

    /// The JWKS document `{"keys": [...]}`: active keys and retired keys still within their publication
    /// window, newest first. Public members only.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<Value> = self
            .entries
            .iter()
            .filter(|e| e.published(now))
            .map(|e| e.key.public_jwk())
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(alg: Alg, created_at: i64) -> StoredKey {
        StoredKey::generate(alg, created_at).unwrap()
    }

    fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn initial_keys_are_rs256_and_es256() {
        assert_eq!(needs_initial_keys(&[]), vec![Alg::RS256, Alg::ES256]);
        let es = stored(Alg::ES256, 1);
        assert_eq!(
            needs_initial_keys(std::slice::from_ref(&es)),
            vec![Alg::RS256]
        );
        // An ES384 key does not count as ES256.
        assert_eq!(
            needs_initial_keys(&[stored(Alg::ES384, 1)]),
            vec![Alg::RS256, Alg::ES256]
        );
        let mut retired = es;
        retired.retired_at = Some(5);
        retired.publish_until = Some(500);
        assert_eq!(needs_initial_keys(&[retired]), vec![Alg::RS256, Alg::ES256]);
        let rs = stored(Alg::RS256, 1);
        let set = KeySet::from_stored(&[rs], 1).unwrap();
        let jwk = set.active(Alg::RS256).unwrap().public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
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
        let published = kids(&set.jwks(300));
        assert_eq!(published.len(), 3);
        assert!(published.contains(&old.kid) && published.contains(&new.kid));
        assert!(set.find(&old.kid, 300).is_some());
        assert!(set.find_public(&old.kid).is_some());
        assert!(set.find_public("nope").is_none());
        // The same loaded set, asked at the end of the window (publish_until is exclusive).
        assert!(!kids(&set.jwks(3800)).contains(&old.kid));
        assert!(set.find(&old.kid, 3800).is_none());
        assert!(kids(&set.jwks(3799)).contains(&old.kid));
        // Loaded after the window: the retired key is neither published nor usable for verification.
        let set = KeySet::from_stored(&[old.clone(), new, rsa], 3800).unwrap();
        assert!(!kids(&set.jwks(3800)).contains(&old.kid));
        assert!(set.find_public(&old.kid).is_none());
        // No private material in the JWKS.
        let text = set.jwks(3800).to_string();
        for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""] {
            assert!(!text.contains(private));
        }
    }

    #[test]
    fn newest_of_two_active_keys_wins_regardless_of_order() {
        let a = stored(Alg::ES256, 10);
        let b = stored(Alg::ES256, 20);
        for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let set = KeySet::from_stored(&order, 30).unwrap();
            assert_eq!(set.active(Alg::ES256).unwrap().kid(), b.kid);
        }
    }

    #[test]
    fn rotation_retires_the_active_key_and_keeps_it_published_for_the_token_lifetime() {
        let es_old = stored(Alg::ES256, 100);
        let rs = stored(Alg::RS256, 100);
        let keys = vec![es_old.clone(), rs.clone()];
        let plan = rotation_plan(&keys, Alg::ES256, 1000, 3600).unwrap();
        assert_eq!(plan.new_key.alg, Alg::ES256);
        assert_eq!(plan.new_key.created_at, 1000);
        assert!(plan.new_key.is_active());
        assert_eq!(
            plan.retire,
            vec![Retirement {
                kid: es_old.kid.clone(),
                retired_at: 1000,
                publish_until: 4600
            }]
        );
        let after = plan.apply_to(&keys);
        assert_eq!(after.len(), 3);
        assert!(needs_initial_keys(&after).is_empty());
        // A token signed by the old key just before the rotation still verifies afterwards...
        let old_signer = KeySet::from_stored(&keys, 999).unwrap();
        let token = old_signer
            .active(Alg::ES256)
            .unwrap()
            .sign_compact(&serde_json::Map::new(), &json!({"exp": 999 + 3600}))
            .unwrap();
        let verify_at = |now: i64| {
            let set = KeySet::from_stored(&after, now).unwrap();
            let parsed = crate::jose::parse_compact(&token, &[Alg::ES256]).unwrap();
            let kid = parsed.header().kid.clone().unwrap();
            set.find(&kid, now)
                .map(|k| parsed.verify_with_spki(&k.public_spki_der()).is_ok())
        };
        assert_eq!(verify_at(1001), Some(true));
        assert_eq!(verify_at(4599), Some(true));
        // ...and the key disappears once every token it signed has expired.
        assert_eq!(verify_at(4600), None);
        let set = KeySet::from_stored(&after, 1001).unwrap();
        assert_eq!(set.active(Alg::ES256).unwrap().kid(), plan.new_key.kid);
        assert_eq!(set.active(Alg::RS256).unwrap().kid(), rs.kid);
        assert!(kids(&set.jwks(1001)).contains(&es_old.kid));
        assert!(!kids(&set.jwks(4600)).contains(&es_old.kid));
        // The RS256 key is untouched by an ES256 rotation; a rotation with nothing active retires nothing.
        assert!(plan.retire.iter().all(|r| r.kid != rs.kid));
        assert!(rotation_plan(&[], Alg::RS256, 5, 60)
            .unwrap()
            .retire
            .is_empty());
        // Already-retired keys keep their own window.
        let mut retired = stored(Alg::ES256, 1);
        retired.retired_at = Some(2);
        retired.publish_until = Some(3);
        assert!(rotation_plan_with(&[retired], stored(Alg::ES256, 9), 9, 60)
            .retire
            .is_empty());
    }

    #[test]
    fn broken_or_ambiguous_stores_are_refused() {
        let a = stored(Alg::ES256, 1);
        let mut dup = stored(Alg::ES256, 2);
        dup.kid = a.kid.clone();
        assert!(KeySet::from_stored(&[a.clone(), dup], 3).is_err());
        let mut wrong_alg = stored(Alg::ES256, 1);
        wrong_alg.alg = Alg::RS256;
        assert!(KeySet::from_stored(&[wrong_alg], 3).is_err());
        let mut p384_as_p256 = stored(Alg::ES384, 1);
        p384_as_p256.alg = Alg::ES256;
        assert!(KeySet::from_stored(&[p384_as_p256], 3).is_err());
        let mut junk = stored(Alg::ES256, 1);
        junk.private_pkcs8_der = vec![0x30, 0x00];
        assert!(KeySet::from_stored(&[junk.clone()], 3).is_err());
        // A broken key that is no longer published is not even loaded.
        junk.retired_at = Some(1);
        junk.publish_until = Some(2);
        assert!(KeySet::from_stored(&[junk, a], 3).is_ok());
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let k = stored(Alg::ES256, 1);
        let text = format!("{k:?}");
        assert!(text.contains("redacted") && text.contains(&k.kid));
        assert!(!text.contains(&format!("{:?}", &k.private_pkcs8_der[..8])));
        let set = KeySet::from_stored(&[k], 1).unwrap();
        assert!(!format!("{set:?}").contains("pkcs8"));
    }
}
