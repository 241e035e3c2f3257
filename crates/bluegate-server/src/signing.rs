//! The server's own signing keys: created on first start, kept in the store (so every node signs with the
//! same keys), published at the JWKS endpoint, rotated by `bluegate keys rotate`.

use std::sync::{Arc, RwLock};

use bluegate_core::jose::{Alg, SigningKey};
use bluegate_core::keys::{self, KeySet, StoredKey};
use bluegate_store::{SigningKeyRecord, Store, StoreError};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing key: {0}")]
    Jose(#[from] bluegate_core::jose::JoseError),
    #[error("signing key: {0}")]
    Keys(String),
}

fn to_stored(r: &SigningKeyRecord) -> Result<StoredKey, KeyError> {
    let alg: Alg = r
        .alg
        .parse()
        .map_err(|_| KeyError::Keys(format!("stored key {} has unknown alg {}", r.kid, r.alg)))?;
    Ok(StoredKey {
        kid: r.kid.clone(),
        alg,
        private_pkcs8_der: r.private_pkcs8_der.clone(),
        created_at: r.created_at.unix_timestamp(),
        retired_at: r.retired_at.map(|t| t.unix_timestamp()),
        publish_until: r.publish_until.map(|t| t.unix_timestamp()),
    })
}

async fn stored_keys(store: &dyn Store) -> Result<Vec<StoredKey>, KeyError> {
    store
        .list_signing_keys()
        .await?
        .iter()
        .map(to_stored)
        .collect()
}

/// Create the keys that have no active version yet: RS256 (RSA-2048) for id_tokens, ES256 (P-256) for
/// access tokens.
pub async fn ensure_keys(store: &dyn Store, now: OffsetDateTime) -> Result<Vec<String>, KeyError> {
    let existing = stored_keys(store).await?;
    let mut created = Vec::new();
    for alg in keys::needs_initial_keys(&existing) {
        let key = SigningKey::generate(alg)?;
        insert(store, &key, now).await?;
        created.push(key.kid().to_string());
    }
    Ok(created)
}

async fn insert(store: &dyn Store, key: &SigningKey, now: OffsetDateTime) -> Result<(), KeyError> {
    store
        .insert_signing_key(&SigningKeyRecord {
            kid: key.kid().to_string(),
            alg: key.alg().as_str().to_string(),
            private_pkcs8_der: key.to_pkcs8_der()?,
            public_jwk: key.public_jwk(),
            created_at: now,
            retired_at: None,
            publish_until: None,
        })
        .await?;
    Ok(())
}

/// Replace the active key for `alg` with a new one. The retired key stays in the JWKS for `publish_for`
/// seconds, the longest lifetime of a token it may have signed.
pub async fn rotate(
    store: &dyn Store,
    alg: Alg,
    now: OffsetDateTime,
    publish_for: i64,
) -> Result<(Option<String>, String), KeyError> {
    let existing = stored_keys(store).await?;
    let set = KeySet::from_stored(&existing, now.unix_timestamp())?;
    let old = set.active(alg).map(|k| k.kid().to_string());
    let key = SigningKey::generate(alg)?;
    insert(store, &key, now).await?;
    if let Some(kid) = &old {
        store
            .retire_signing_key(kid, now, now + time::Duration::seconds(publish_for))
            .await?;
    }
    Ok((old, key.kid().to_string()))
}

/// The key set as last loaded from the store.
pub struct Signing {
    current: RwLock<Arc<KeySet>>,
}

impl Signing {
    pub async fn load(store: &dyn Store, now: OffsetDateTime) -> Result<Self, KeyError> {
        let set = KeySet::from_stored(&stored_keys(store).await?, now.unix_timestamp())?;
        Ok(Signing {
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Re-read the keys (another node or the CLI may have rotated them).
    pub async fn reload(&self, store: &dyn Store, now: OffsetDateTime) -> Result<(), KeyError> {
        let set = KeySet::from_stored(&stored_keys(store).await?, now.unix_timestamp())?;
        if let Ok(mut guard) = self.current.write() {
            *guard = Arc::new(set);
        }
        Ok(())
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
