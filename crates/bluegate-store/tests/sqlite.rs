//! The conformance suite against the SQLite backend (a fresh file per test), plus SQLite specifics:
//! durability across reopen, pragmas, and corrupt rows.

#[macro_use]
mod common;

use std::sync::Arc;

use bluegate_store::{connect, ClientStatus, SqliteStore, Store, StoreError, StoreLocation};
use common::t;

struct Harness {
    store: Arc<dyn Store>,
    sqlite: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Option<Harness> {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = SqliteStore::open(dir.path().join("store.db"))
            .await
            .expect("open sqlite store");
        Some(Harness {
            store: Arc::new(sqlite.clone()),
            sqlite,
            _dir: dir,
        })
    }

    async fn finish(self) {
        self.sqlite.close().await;
    }
}

all_conformance_tests!();

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-does-not-matter.db");
    let location = StoreLocation::Sqlite(path.clone());
    let client = common::client("c1", Some(("https://comm", "https://iss")), 1);
    let member = common::member("m1", "alice", &["Patient/1", "Patient/2"]);
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_client(&client).await.unwrap();
        store.insert_member(&member).await.unwrap();
        store
            .insert_grant(&common::grant("g", Some("m1"), 0, None))
            .await
            .unwrap();
        store
            .insert_refresh_token(&common::refresh("r", "g", 0, 100))
            .await
            .unwrap();
        store.insert_code(&common::code("h", 60)).await.unwrap();
        assert!(store.remember_jti("iss", "j", t(60), t(0)).await.unwrap());
        store
            .append_audit(&common::audit(0, "client.registered", "success"))
            .await
            .unwrap();
        store.close().await;
    }
    // Reopen through the public constructor (migrations run again and are a no-op).
    let store = connect(&location).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    assert_eq!(store.get_client("c1").await.unwrap(), Some(client));
    assert_eq!(
        store.get_member_by_username("alice").await.unwrap(),
        Some(member)
    );
    assert!(store.get_refresh_token("r").await.unwrap().is_some());
    assert!(
        !store.remember_jti("iss", "j", t(60), t(1)).await.unwrap(),
        "replay cache persisted"
    );
    assert!(matches!(
        store.redeem_code("h", t(1)).await.unwrap(),
        bluegate_store::CodeRedemption::Redeemed(_)
    ));
    assert_eq!(store.list_audit(10, None).await.unwrap().len(), 1);
    drop(store);

    // And a write committed by a store that is dropped without close() is there too.
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store
        .set_client_status("c1", ClientStatus::Disabled, t(5))
        .await
        .unwrap());
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.get_client("c1").await.unwrap().unwrap().status,
        ClientStatus::Disabled
    );
    assert!(matches!(
        store.redeem_code("h", t(2)).await.unwrap(),
        bluegate_store::CodeRedemption::AlreadyUsed { .. }
    ));
}

#[tokio::test]
async fn pragmas_are_durable_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("p.db")).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(busy >= 5000, "busy_timeout {busy}");
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("c.db")).await.unwrap();
    store
        .insert_client(&common::client("c1", None, 0))
        .await
        .unwrap();
    store
        .insert_client(&common::client("c2", None, 0))
        .await
        .unwrap();
    sqlx::query("UPDATE clients SET metadata = '{not json' WHERE client_id = 'c1'")
        .execute(store.pool())
        .await
        .unwrap();
    // The schema itself refuses an unknown status...
    let bad_status = sqlx::query("UPDATE clients SET status = 'weird' WHERE client_id = 'c2'")
        .execute(store.pool())
        .await;
    assert!(bad_status.is_err(), "CHECK constraint on clients.status");
    // ...but a timestamp outside the representable range still gets in.
    sqlx::query("UPDATE clients SET created_at = 99999999999999999 WHERE client_id = 'c2'")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store.get_client("c1").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.get_client("c2").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_clients().await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn refresh_token_needs_an_existing_grant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("fk.db")).await.unwrap();
    let r = store
        .insert_refresh_token(&common::refresh("r", "no-such-grant", 0, 10))
        .await;
    assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
}
