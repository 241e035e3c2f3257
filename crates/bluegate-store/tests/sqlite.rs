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

/// SQLite keeps resource texts as zstd frames and gives back exactly what was stored; rows written as
/// TEXT (before compression) still read, update and vread; a damaged frame is an error, not a panic.
#[tokio::test]
async fn fhir_texts_are_compressed_and_read_back_exactly() {
    use bluegate_store::fhir::{prepare, BodyEncoding, FhirStore, ResourceType};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("f.db")).await.unwrap();
    assert_eq!(store.body_encoding(), BodyEncoding::Zstd);
    let text = "{\"resourceType\" : \"Patient\",\n \"id\":\"p1\", \"x\": 12.50, \"y\": 1e2, \"name\":[{\"family\":\"Zoë\"}]}";
    let stored = store.put_resource(text, t(0)).await.unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT typeof(json) FROM fhir_resources WHERE id = 'p1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(kind, "blob");
    let read = store
        .read(ResourceType::Patient, "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.json, stored.json);
    assert!(
        read.json.contains("\"x\": 12.50, \"y\": 1e2"),
        "{}",
        read.json
    );

    // Rendered ahead (as an import does): stored with the reading time, version 1.
    let mut p =
        prepare(r#"{"resourceType":"Organization","id":"o1","name":"Acme"}"#.into()).unwrap();
    p.render_ahead(t(100), store.body_encoding()).unwrap();
    assert_eq!(store.put_prepared(vec![p], t(9_000)).await.unwrap(), 1);
    let o1 = store
        .read(ResourceType::Organization, "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o1.version_id, 1);
    assert_eq!(o1.last_updated, t(100));
    let lu = bluegate_store::fhir::params::format_instant_ms(t(100).unix_timestamp() * 1000);
    assert_eq!(
        o1.json,
        format!(
            r#"{{"resourceType":"Organization","id":"o1","meta":{{"versionId":"1","lastUpdated":"{lu}"}},"name":"Acme"}}"#
        )
    );
    // The same resource rendered ahead again is not new: the write renders version 2 itself.
    let mut p =
        prepare(r#"{"resourceType":"Organization","id":"o1","name":"Acme 2"}"#.into()).unwrap();
    p.render_ahead(t(200), store.body_encoding()).unwrap();
    store.put_prepared(vec![p], t(300)).await.unwrap();
    let o1 = store
        .read(ResourceType::Organization, "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o1.version_id, o1.last_updated), (2, t(300)));
    assert!(o1.json.contains(r#""versionId":"2""#) && o1.json.contains("Acme 2"));

    // A row written as TEXT.
    let legacy = r#"{"resourceType":"Organization","id":"old","meta":{"versionId":"1","lastUpdated":"2020-01-01T00:00:00.000Z"}}"#;
    sqlx::query("INSERT INTO fhir_resources (resource_type, id, version_id, last_updated, json) VALUES ('Organization', 'old', 1, 1577836800000, ?)")
        .bind(legacy)
        .execute(store.pool())
        .await
        .unwrap();
    let old = store
        .read(ResourceType::Organization, "old")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.json, legacy);
    store
        .put_resource(
            r#"{"resourceType":"Organization","id":"old","name":"New"}"#,
            t(0),
        )
        .await
        .unwrap();
    let v1 = store
        .vread(ResourceType::Organization, "old", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.json, legacy);
    let v2 = store
        .vread(ResourceType::Organization, "old", 2)
        .await
        .unwrap()
        .unwrap();
    assert!(v2.json.contains("\"New\""));

    // A damaged frame.
    sqlx::query(
        "UPDATE fhir_resources SET json = substr(json, 1, length(json) - 3) WHERE id = 'p1'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert!(matches!(
        store.read(ResourceType::Patient, "p1").await,
        Err(StoreError::Corrupt(_))
    ));
    store.close().await;
}
