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
    assert_eq!(
        store.body_encoding(),
        BodyEncoding::Zstd(Default::default())
    );
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

fn organization(i: usize) -> String {
    format!(
        r#"{{"resourceType":"Organization","id":"o{i}","meta":{{"profile":["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-Organization"]}},"identifier":[{{"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"NPI"}}]}},"system":"http://hl7.org/fhir/sid/us-npi","value":"{:010}"}}],"active":true,"name":"Organization number {i}","address":[{{"line":["{} Main Street"],"city":"Town {}","state":"MA","postalCode":"0{:04}"}}]}}"#,
        i * 7919 % 10_000_000_000,
        i * 13,
        i % 97,
        i % 10_000
    )
}

/// An import learns a dictionary per resource type from a batch with enough resources of that type:
/// its texts are frames that name the dictionary, it is kept in the store, the store compresses that
/// type with it from then on (also after reopening), and it is learned once.
#[tokio::test]
async fn fhir_learned_dictionaries_are_used_and_kept() {
    use bluegate_store::fhir::{
        prepare, render_batch_ahead, FhirStore, PreparedResource, ResourceType, MIN_DICT_SAMPLES,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut batch: Vec<PreparedResource> = (0..MIN_DICT_SAMPLES + 100)
        .map(|i| prepare(organization(i)).unwrap())
        .collect();
    batch
        .push(prepare(r#"{"resourceType":"Patient","id":"p1","gender":"female"}"#.into()).unwrap());
    let mut encoding = store.body_encoding();
    let learned = render_batch_ahead(&mut batch, t(0), &mut encoding).unwrap();
    assert_eq!(learned.len(), 1, "only Organizations are numerous enough");
    let (rt, dict) = learned[0];
    assert_eq!(rt, ResourceType::Organization);
    store.install_body_dictionary(rt, dict).await.unwrap();
    assert_eq!(store.body_encoding(), encoding);
    store.put_prepared(batch, t(0)).await.unwrap();

    let frame = |id: &'static str| {
        let pool = store.pool().clone();
        async move {
            let b: Vec<u8> = sqlx::query_scalar("SELECT json FROM fhir_resources WHERE id = ?")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
            b
        }
    };
    let o7 = frame("o7").await;
    assert_eq!(
        zstd::zstd_safe::get_dict_id_from_frame(&o7).map(|d| d.get()),
        Some(dict.id())
    );
    assert_eq!(
        zstd::zstd_safe::get_dict_id_from_frame(&frame("p1").await),
        None
    );
    // Far smaller than without the dictionary.
    let text = store
        .read(ResourceType::Organization, "o7")
        .await
        .unwrap()
        .unwrap()
        .json;
    assert!(text.contains("Organization number 7"));
    let plain = zstd::bulk::compress(text.as_bytes(), 1).unwrap();
    assert!(
        o7.len() * 2 < plain.len(),
        "{} vs {}",
        o7.len(),
        plain.len()
    );

    // A later batch does not learn again, and single writes use the dictionary too.
    let mut more: Vec<PreparedResource> = (1000..1000 + MIN_DICT_SAMPLES)
        .map(|i| prepare(organization(i)).unwrap())
        .collect();
    assert!(render_batch_ahead(&mut more, t(1), &mut encoding)
        .unwrap()
        .is_empty());
    store.put_resource(&organization(5000), t(2)).await.unwrap();
    assert_eq!(
        zstd::zstd_safe::get_dict_id_from_frame(&frame("o5000").await).map(|d| d.get()),
        Some(dict.id())
    );
    store.close().await;

    // Kept: a reopened store compresses with it and reads everything back.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.body_encoding(), encoding);
    let o7 = store
        .read(ResourceType::Organization, "o7")
        .await
        .unwrap()
        .unwrap();
    assert!(o7.json.contains("Organization number 7"));
    store.close().await;
}

/// A dictionary this process has never seen (learned by another process after this one opened the
/// store) is loaded from the store when a text needs it; a text whose dictionary is nowhere is an
/// error, not a panic.
#[tokio::test]
async fn fhir_dictionaries_of_other_processes_are_loaded() {
    use bluegate_store::fhir::{FhirStore, ResourceType};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("f.db")).await.unwrap();
    // A dictionary made here as another process would, with an id of its own, never registered in
    // this process.
    let samples: Vec<String> = (0..600).map(organization).collect();
    let mut dict = zstd::dict::from_samples(&samples, 16 * 1024).unwrap();
    let id: u32 = 0x4000_0000 | (std::process::id() & 0xffff) << 8 | 0x77;
    dict[4..8].copy_from_slice(&id.to_le_bytes());
    let text = r#"{"resourceType":"Organization","id":"x1","meta":{"versionId":"1","lastUpdated":"2020-01-01T00:00:00.000Z"},"name":"Organization number 1"}"#;
    let frame = zstd::bulk::Compressor::with_dictionary(1, &dict)
        .unwrap()
        .compress(text.as_bytes())
        .unwrap();
    assert_eq!(
        zstd::zstd_safe::get_dict_id_from_frame(&frame).map(|d| d.get()),
        Some(id)
    );
    for (rid, f) in [("x1", frame.clone()), ("x2", frame)] {
        sqlx::query("INSERT INTO fhir_resources (resource_type, id, version_id, last_updated, json) VALUES ('Organization', ?, 1, 1577836800000, ?)")
            .bind(rid)
            .bind(f)
            .execute(store.pool())
            .await
            .unwrap();
    }
    // Not in the store yet: a clear error.
    assert!(matches!(
        store.read(ResourceType::Organization, "x1").await,
        Err(StoreError::Corrupt(_))
    ));
    sqlx::query("INSERT INTO fhir_body_dicts (id, resource_type, dict, created_at) VALUES (?, 'Organization', ?, 0)")
        .bind(i64::from(id))
        .bind(&dict)
        .execute(store.pool())
        .await
        .unwrap();
    let x1 = store
        .read(ResourceType::Organization, "x1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x1.json, text);
    store.close().await;
}

/// The search indexes built after a bulk load are exactly those the migrations create.
#[tokio::test]
async fn rebuilt_search_indexes_match_the_migrations() {
    use bluegate_store::fhir::FhirStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("f.db")).await.unwrap();
    let definitions = || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'fhir_%' \
             ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(n, s)| (n, s.replace("IF NOT EXISTS ", "")))
            .collect::<Vec<_>>()
    };
    let migrated = definitions().await;
    assert!(migrated.len() >= 6, "{migrated:?}");
    assert!(store.defer_search_indexes().await.unwrap());
    assert_eq!(definitions().await.len(), migrated.len() - 5);
    assert_eq!(store.build_search_indexes().await.unwrap(), 5);
    assert_eq!(definitions().await, migrated);
    store.close().await;
}

/// A store written before resources were numbered (migration 0004) keeps every resource, version and
/// search through the migration, and goes on taking updates.
#[tokio::test]
async fn fhir_index_rows_survive_the_numbering_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let old = common::fhir::migrations_before(dir.path(), "sqlite", "0004");
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for stmt in common::fhir::rows_before_numbering() {
        sqlx::query(&stmt).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    common::fhir::check_after_numbering(&store).await;
    store.close().await;
}

/// A database whose parameter numbers differ from this build's is refused, not searched wrongly.
#[tokio::test]
async fn fhir_param_numbers_must_match_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::query("UPDATE fhir_params SET name = 'care-team-renamed' WHERE code = 109")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("care-team") && m.contains("109")),
        "{err:?}"
    );
}
