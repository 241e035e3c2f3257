//! Client records, mirrored in memory for client authentication (token, introspection and revocation
//! endpoints), so that a token request makes no store round trip to find its client.
//!
//! An entry is used for at most `max_staleness` after the store read that filled it began; then the client
//! is read again. So a client disabled, cancelled or given a new secret on any node, or with
//! `bluegate client disable` (which writes the store directly), stops authenticating on every node within
//! that bound, the same bound [`crate::revocations`] gives revocations. Changes made through this node (UDAP
//! registration updates and cancellations) call [`ClientCache::invalidate`], so they take effect here on the
//! very next request. Unknown clients are never cached: every attempt with an unknown id reads the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bluegate_store::{ClientRecord, Store, StoreError};

struct Entry {
    /// When the store read that returned `client` began.
    read_at: Instant,
    client: Arc<ClientRecord>,
}

pub struct ClientCache {
    entries: RwLock<HashMap<String, Entry>>,
    /// Bumped by every invalidation: a read that began before one does not fill the cache, since it may
    /// have returned the record as it was before the change.
    generation: AtomicU64,
    max_staleness: Duration,
    capacity: usize,
}

impl ClientCache {
    pub fn new(max_staleness: Duration, capacity: usize) -> Self {
        ClientCache {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            max_staleness,
            capacity: capacity.max(1),
        }
    }

    /// The client as the store had it at most `max_staleness` ago (or as this node last changed it).
    pub async fn get(
        &self,
        store: &dyn Store,
        client_id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        self.get_at(store, client_id, Instant::now()).await
    }

    async fn get_at(
        &self,
        store: &dyn Store,
        client_id: &str,
        now: Instant,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if let Some(c) = self.fresh(client_id, now) {
            return Ok(Some(c));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let client = store.get_client(client_id).await?.map(Arc::new);
        if let Some(c) = &client {
            self.fill(client_id, c, generation, now);
        }
        Ok(client)
    }

    fn fresh(&self, client_id: &str, now: Instant) -> Option<Arc<ClientRecord>> {
        let entries = self.entries.read().ok()?;
        let e = entries.get(client_id)?;
        (now.saturating_duration_since(e.read_at) < self.max_staleness).then(|| e.client.clone())
    }

    fn fill(&self, client_id: &str, client: &Arc<ClientRecord>, generation: u64, read_at: Instant) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the lock that `invalidate` takes, so no invalidation falls in between.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(client_id) {
            let max = self.max_staleness;
            entries.retain(|_, e| read_at.saturating_duration_since(e.read_at) < max);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            client_id.to_string(),
            Entry {
                read_at,
                client: client.clone(),
            },
        );
    }

    /// Forget the client (call after changing it through this node): the next lookup reads the store.
    pub fn invalidate(&self, client_id: &str) {
        match self.entries.write() {
            Ok(mut entries) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                entries.remove(client_id);
            }
            Err(poisoned) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                poisoned.into_inner().clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegate_store::{ClientStatus, SqliteStore};
    use serde_json::json;
    use time::OffsetDateTime;

    fn record(id: &str) -> ClientRecord {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        ClientRecord {
            client_id: id.to_string(),
            status: ClientStatus::Active,
            community: None,
            iss: None,
            secret_hash: None,
            metadata: json!({"client_name": id}),
            is_resource_server: false,
            created_at: now,
            updated_at: now,
        }
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("s.db"))
            .await
            .expect("store");
        (dir, store)
    }

    async fn status_at(
        cache: &ClientCache,
        store: &dyn Store,
        id: &str,
        at: Instant,
    ) -> ClientStatus {
        cache
            .get_at(store, id, at)
            .await
            .expect("read")
            .expect("known client")
            .status
    }

    /// A store with active client `c1`, and a cache that has read it at the returned instant.
    async fn cached_c1(
        max_staleness: Duration,
    ) -> (tempfile::TempDir, SqliteStore, ClientCache, Instant) {
        let (dir, store) = store().await;
        store.insert_client(&record("c1")).await.expect("insert");
        let cache = ClientCache::new(max_staleness, 100);
        let t0 = Instant::now();
        assert_eq!(
            status_at(&cache, &store, "c1", t0).await,
            ClientStatus::Active
        );
        (dir, store, cache, t0)
    }

    #[tokio::test]
    async fn a_change_made_elsewhere_is_seen_within_max_staleness() {
        let (_dir, store, cache, t0) = cached_c1(Duration::from_secs(1)).await;
        // Another node (or the CLI) disables it: the store changes, this cache is not told.
        let now = OffsetDateTime::now_utc();
        assert!(store
            .set_client_status("c1", ClientStatus::Disabled, now)
            .await
            .expect("disable"));
        let within = t0 + Duration::from_millis(999);
        assert_eq!(
            status_at(&cache, &store, "c1", within).await,
            ClientStatus::Active
        );
        let after = t0 + Duration::from_secs(1);
        assert_eq!(
            status_at(&cache, &store, "c1", after).await,
            ClientStatus::Disabled
        );
    }

    #[tokio::test]
    async fn a_change_made_through_this_node_is_seen_at_once() {
        let (_dir, store, cache, t0) = cached_c1(Duration::from_secs(3600)).await;
        store
            .set_client_status("c1", ClientStatus::Cancelled, OffsetDateTime::now_utc())
            .await
            .expect("cancel");
        cache.invalidate("c1");
        assert_eq!(
            status_at(&cache, &store, "c1", t0).await,
            ClientStatus::Cancelled
        );
    }

    #[tokio::test]
    async fn unknown_clients_are_not_cached_and_the_size_is_bounded() {
        let (_dir, store) = store().await;
        let cache = ClientCache::new(Duration::from_secs(3600), 2);
        let t0 = Instant::now();
        assert!(cache
            .get_at(&store, "late", t0)
            .await
            .expect("read")
            .is_none());
        store.insert_client(&record("late")).await.expect("insert");
        assert!(cache
            .get_at(&store, "late", t0)
            .await
            .expect("read")
            .is_some());
        for id in ["a", "b", "c"] {
            store.insert_client(&record(id)).await.expect("insert");
            assert!(cache.get_at(&store, id, t0).await.expect("read").is_some());
        }
        assert!(cache.entries.read().expect("lock").len() <= 2);
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_does_not_fill_the_cache() {
        let cache = ClientCache::new(Duration::from_secs(3600), 100);
        let stale = Arc::new(record("c1"));
        let generation = cache.generation.load(Ordering::Acquire);
        cache.invalidate("c1");
        cache.fill("c1", &stale, generation, Instant::now());
        assert!(cache.fresh("c1", Instant::now()).is_none());
    }
}
