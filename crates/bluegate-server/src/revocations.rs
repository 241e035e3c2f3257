//! Revoked access tokens and grants, mirrored in memory for the resource server's bearer check.
//!
//! The store logs every revocation (`Store::revocations_since`). Each node polls that log at most once per
//! `max_staleness`, on demand from the request path, so a revocation made on any node is honoured by every
//! node within that bound and a request costs no database round trip of its own. Revocations made through
//! this node call [`Revocations::mark_stale`], so they take effect here on the very next request.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bluegate_store::{Revocation, Store, StoreError};
use time::OffsetDateTime;

struct Inner {
    /// jti -> unix expiry of the token (kept until then).
    jtis: HashMap<String, i64>,
    /// grant id -> unix time of the revocation (kept while tokens issued before it may live).
    grants: HashMap<String, i64>,
    /// Where the next poll starts (inclusive; the log has one-second precision).
    since: OffsetDateTime,
    polled_at: Option<Instant>,
}

pub struct Revocations {
    inner: RwLock<Inner>,
    /// One poll at a time; concurrent requests wait for it instead of polling too.
    poll: tokio::sync::Mutex<()>,
    max_staleness: Duration,
    /// How long a grant revocation matters: the longest access-token lifetime plus clock skew.
    grant_retention_secs: i64,
}

impl Revocations {
    pub fn new(
        now: OffsetDateTime,
        access_token_lifetime_secs: u64,
        max_staleness: Duration,
    ) -> Self {
        let retention = access_token_lifetime_secs as i64 + 120;
        Revocations {
            inner: RwLock::new(Inner {
                jtis: HashMap::new(),
                grants: HashMap::new(),
                since: now - time::Duration::seconds(retention),
                polled_at: None,
            }),
            poll: tokio::sync::Mutex::new(()),
            max_staleness,
            grant_retention_secs: retention,
        }
    }

    /// The next check reads the store's log first (call after revoking something on this node).
    pub fn mark_stale(&self) {
        if let Ok(mut g) = self.inner.write() {
            g.polled_at = None;
        }
    }

    fn fresh(&self) -> bool {
        self.inner
            .read()
            .map(|g| {
                g.polled_at
                    .is_some_and(|t| t.elapsed() < self.max_staleness)
            })
            .unwrap_or(false)
    }

    /// Is the token with this `jti` (of grant `gid`) revoked, as of at most `max_staleness` ago?
    pub async fn is_revoked(
        &self,
        store: &dyn Store,
        jti: &str,
        gid: Option<&str>,
    ) -> Result<bool, StoreError> {
        if !self.fresh() {
            self.poll(store).await?;
        }
        let g = self
            .inner
            .read()
            .map_err(|_| StoreError::Corrupt("revocation cache poisoned".into()))?;
        Ok(g.jtis.contains_key(jti) || gid.is_some_and(|id| g.grants.contains_key(id)))
    }

    async fn poll(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one = self.poll.lock().await;
        if self.fresh() {
            return Ok(());
        }
        let started = Instant::now();
        let now = OffsetDateTime::now_utc();
        let since = self
            .inner
            .read()
            .map_err(|_| StoreError::Corrupt("revocation cache poisoned".into()))?
            .since;
        let entries = store.revocations_since(since).await?;
        let mut g = self
            .inner
            .write()
            .map_err(|_| StoreError::Corrupt("revocation cache poisoned".into()))?;
        for (at, r) in entries {
            match r {
                Revocation::AccessToken { jti, expires_at } => {
                    g.jtis.insert(jti, expires_at.unix_timestamp());
                }
                Revocation::Grant { grant_id } => {
                    g.grants.insert(grant_id, at.unix_timestamp());
                }
            }
        }
        let t = now.unix_timestamp();
        let retention = self.grant_retention_secs;
        g.jtis.retain(|_, exp| *exp + 120 > t);
        g.grants.retain(|_, at| *at + retention > t);
        // Entries written in the second the poll started may still be committing: start there next time.
        g.since = now - time::Duration::seconds(1);
        g.polled_at = Some(started);
        Ok(())
    }
}
