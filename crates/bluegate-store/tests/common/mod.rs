//! The conformance suite every `Store` backend must pass. Each function gets a fresh, empty store.
//! `tests/sqlite.rs` and `tests/postgres.rs` expand [`all_conformance_tests!`] with their own `Harness`.
#![allow(dead_code)]

pub mod fhir;

pub use fhir::*;

use std::collections::HashSet;
use std::sync::Arc;

use bluegate_store::*;
use serde_json::json;
use time::OffsetDateTime;

/// Generates one `#[tokio::test]` per suite function, running it on a fresh store from `Harness::start()`
/// (which returns `None` to skip) and cleaning up through `Harness::finish()` even when the check panics.
macro_rules! conformance_tests {
    (
        plain: [$($plain:ident),* $(,)?],
        shared: [$($shared:ident),* $(,)?],
        ignored: [$($ignored:ident),* $(,)?]
    ) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $plain() {
                let Some(h) = Harness::start().await else { return };
                let store = h.store.clone();
                let result = tokio::spawn(async move { common::$plain(&*store).await }).await;
                h.finish().await;
                if let Err(e) = result {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $shared() {
                let Some(h) = Harness::start().await else { return };
                let store = h.store.clone();
                let result = tokio::spawn(async move { common::$shared(store).await }).await;
                h.finish().await;
                if let Err(e) = result {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "benchmark: run with --release -- --ignored --nocapture"]
            async fn $ignored() {
                let Some(h) = Harness::start().await else { return };
                let store = h.store.clone();
                let result = tokio::spawn(async move { common::$ignored(&*store).await }).await;
                h.finish().await;
                if let Err(e) = result {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        )*
    };
}

macro_rules! all_conformance_tests {
    () => {
        conformance_tests!(
            plain: [
                ping_and_backend,
                clients,
                members,
                jti_replay_cache,
                signing_keys,
                audit_log,
                grants,
                codes,
                refresh_tokens,
                code_exchange,
                code_exchange_decided_in_the_transaction,
                refresh_with_assertions,
                grant_with_assertion,
                udap_registration,
                access_token_revocation,
                consents,
                login_failures,
                purge_expired,
                fhir_import_read_and_exact_text,
                fhir_rejects_invalid_resources,
                fhir_versions_and_batches,
                fhir_eob_search,
                fhir_other_searches,
                fhir_patient_compartment,
                fhir_paging,
                fhir_includes,
                fhir_put_prepared_synthetic,
                fhir_deferred_search_indexes,
            ],
            shared: [
                concurrent_remember_jti,
                concurrent_redeem_code,
                concurrent_rotate_refresh_token,
                concurrent_exchange_code,
                concurrent_udap_registration,
                concurrent_writers,
                concurrent_fhir_updates,
            ],
            ignored: [fhir_import_throughput]
        );
    };
}

/// A fixed base time (whole seconds: the store keeps one-second precision).
pub const T0: i64 = 1_700_000_000;

pub fn t(offset_secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T0 + offset_secs).expect("valid time")
}

pub fn client(id: &str, udap: Option<(&str, &str)>, created: i64) -> ClientRecord {
    ClientRecord {
        client_id: id.to_owned(),
        status: ClientStatus::Active,
        community: udap.map(|(c, _)| c.to_owned()),
        iss: udap.map(|(_, i)| i.to_owned()),
        secret_hash: None,
        metadata: json!({
            "client_name": format!("App {id} – ünïcode ✓"),
            "redirect_uris": ["https://app.example/cb", "http://127.0.0.1:8080/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid patient/*.read",
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "abc", "y": "def"}]},
            "nested": {"n": 1.5, "b": true, "null": null}
        }),
        is_resource_server: false,
        created_at: t(created),
        updated_at: t(created),
    }
}

pub fn member(id: &str, username: &str, patients: &[&str]) -> MemberRecord {
    MemberRecord {
        id: id.to_owned(),
        username: username.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${id}"),
        fhir_user: Some(format!("Patient/{id}")),
        patients: patients.iter().map(|p| (*p).to_owned()).collect(),
        disabled: false,
        created_at: t(0),
    }
}

pub fn grant(id: &str, member_id: Option<&str>, created: i64, expires: Option<i64>) -> GrantRecord {
    GrantRecord {
        id: id.to_owned(),
        client_id: "client-1".to_owned(),
        member_id: member_id.map(str::to_owned),
        patient: Some("Patient/p1".to_owned()),
        scope: "openid offline_access patient/*.rs".to_owned(),
        created_at: t(created),
        expires_at: expires.map(t),
        revoked_at: None,
        data: json!({"aud": "https://fhir.example/r4", "nonce": "n-0S6"}),
    }
}

pub fn refresh(hash: &str, grant_id: &str, created: i64, expires: i64) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: hash.to_owned(),
        grant_id: grant_id.to_owned(),
        expires_at: t(expires),
        created_at: t(created),
    }
}

pub fn code(hash: &str, expires: i64) -> CodeRecord {
    CodeRecord {
        code_hash: hash.to_owned(),
        client_id: "client-1".to_owned(),
        grant_id: None,
        expires_at: t(expires),
        payload: json!({
            "redirect_uri": "https://app.example/cb",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "scope": "launch/patient patient/*.rs",
            "patient": "Patient/p1"
        }),
    }
}

pub fn jti(issuer: &str, id: &str, expires: i64) -> JtiRecord {
    JtiRecord {
        issuer: issuer.to_owned(),
        jti: id.to_owned(),
        expires_at: t(expires),
    }
}

fn code_with_grant(hash: &str, grant_id: Option<&str>, expires: i64) -> CodeRecord {
    let mut c = code(hash, expires);
    c.grant_id = grant_id.map(str::to_owned);
    c
}

fn exchange<'a>(
    hash: &'a str,
    client_id: &'a str,
    assertion_jti: Option<&'a JtiRecord>,
    action: CodeAction<'a>,
) -> CodeExchange<'a> {
    CodeExchange {
        code_hash: hash,
        client_id,
        assertion_jti,
        action,
    }
}

const ISSUE: CodeAction<'static> = CodeAction::Issue {
    refresh_token: None,
};

pub fn audit(at: i64, event: &str, outcome: &str) -> AuditEvent {
    AuditEvent {
        at: t(at),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        client_id: Some("client-1".to_owned()),
        member_id: None,
        patient: Some("Patient/p1".to_owned()),
        remote_addr: Some("203.0.113.7".to_owned()),
        detail: json!({"event": event, "reason": null, "n": at}),
    }
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

pub async fn ping_and_backend(store: &dyn Store) {
    store.ping().await.expect("ping");
    assert!(matches!(store.backend_name(), "sqlite" | "postgres"));
}

pub async fn clients(store: &dyn Store) {
    let comm_a = "https://community-a.example/udap";
    let comm_b = "https://community-b.example/udap";
    let c1 = client("c1", Some((comm_a, "https://app1.example")), 10);
    store.insert_client(&c1).await.expect("insert c1");
    assert_eq!(store.get_client("c1").await.unwrap(), Some(c1.clone()));
    assert_eq!(store.get_client("nope").await.unwrap(), None);

    // Duplicate client_id, even with another iss.
    let mut dup = client("c1", Some((comm_a, "https://other.example")), 11);
    dup.metadata = json!({"x": 1});
    assert_conflict(store.insert_client(&dup).await, "duplicate client_id");
    // Duplicate (community, iss).
    let c2 = client("c2", Some((comm_a, "https://app1.example")), 11);
    assert_conflict(store.insert_client(&c2).await, "duplicate community+iss");
    assert_eq!(store.get_client("c2").await.unwrap(), None);
    assert_eq!(
        store.get_client("c1").await.unwrap(),
        Some(c1.clone()),
        "c1 untouched"
    );

    // Same iss in another community is another client.
    let c3 = client("c3", Some((comm_b, "https://app1.example")), 5);
    store
        .insert_client(&c3)
        .await
        .expect("same iss, other community");
    // Out-of-band clients (no community/iss) never collide; nor do partial pairs.
    let mut c4 = client("c4", None, 10);
    c4.secret_hash = Some("sha256:abcdef".to_owned());
    c4.is_resource_server = true;
    store.insert_client(&c4).await.expect("c4");
    store
        .insert_client(&client("c5", None, 20))
        .await
        .expect("c5");
    let mut c6 = client("c6", Some((comm_a, "x")), 20);
    c6.iss = None;
    let mut c7 = c6.clone();
    c7.client_id = "c7".to_owned();
    store.insert_client(&c6).await.expect("c6");
    store.insert_client(&c7).await.expect("c7");
    assert_eq!(store.get_client("c4").await.unwrap(), Some(c4.clone()));

    assert_eq!(
        store
            .find_client_by_iss(comm_a, "https://app1.example")
            .await
            .unwrap(),
        Some(c1.clone())
    );
    assert_eq!(
        store
            .find_client_by_iss(comm_b, "https://app1.example")
            .await
            .unwrap(),
        Some(c3.clone())
    );
    assert_eq!(
        store
            .find_client_by_iss(comm_b, "https://app2.example")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .find_client_by_iss("https://app1.example", comm_a)
            .await
            .unwrap(),
        None
    );

    let ids: Vec<String> = store
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    assert_eq!(
        ids,
        ["c3", "c1", "c4", "c5", "c6", "c7"],
        "ordered by created_at, client_id"
    );

    // update_client changes everything but created_at.
    let mut u = c1.clone();
    u.status = ClientStatus::Disabled;
    u.secret_hash = Some("sha256:new".to_owned());
    u.metadata = json!({"client_name": "renamed", "redirect_uris": []});
    u.iss = Some("https://app1-moved.example".to_owned());
    u.is_resource_server = true;
    u.updated_at = t(99);
    u.created_at = t(12345);
    store.update_client(&u).await.expect("update");
    let got = store.get_client("c1").await.unwrap().expect("c1 exists");
    assert_eq!(got.created_at, t(10), "created_at is not updated");
    assert_eq!(
        got,
        ClientRecord {
            created_at: t(10),
            ..u.clone()
        }
    );
    assert_eq!(
        store
            .find_client_by_iss(comm_a, "https://app1.example")
            .await
            .unwrap(),
        None
    );
    // The freed (community, iss) can be taken by another client now.
    store.insert_client(&c2).await.expect("c2 after c1 moved");

    // Updating into an occupied (community, iss) conflicts and changes nothing.
    let mut c3b = c3.clone();
    c3b.community = Some(comm_a.to_owned());
    assert_conflict(
        store.update_client(&c3b).await,
        "update into taken community+iss",
    );
    assert_eq!(store.get_client("c3").await.unwrap(), Some(c3.clone()));

    match store.update_client(&client("ghost", None, 0)).await {
        Err(StoreError::NotFound) => {}
        other => panic!("update of a missing client: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        store.get_client("ghost").await.unwrap(),
        None,
        "update never inserts"
    );

    assert!(store
        .set_client_status("c4", ClientStatus::Cancelled, t(500))
        .await
        .unwrap());
    let c4b = store.get_client("c4").await.unwrap().expect("c4");
    assert_eq!(c4b.status, ClientStatus::Cancelled);
    assert_eq!(c4b.updated_at, t(500));
    assert_eq!(c4b.metadata, c4.metadata);
    assert!(!store
        .set_client_status("ghost", ClientStatus::Active, t(500))
        .await
        .unwrap());
}

pub async fn members(store: &dyn Store) {
    let m1 = member("m1", "alice", &["Patient/p2", "Patient/p1", "Patient/p3"]);
    store.insert_member(&m1).await.expect("m1");
    assert_eq!(
        store.get_member("m1").await.unwrap(),
        Some(m1.clone()),
        "patients keep their order"
    );
    assert_eq!(
        store.get_member_by_username("alice").await.unwrap(),
        Some(m1.clone())
    );
    assert_eq!(store.get_member("m9").await.unwrap(), None);
    assert_eq!(store.get_member_by_username("Alice").await.unwrap(), None);

    // Duplicate username: conflict, and nothing of the failed member is left behind.
    let dup = member("m2", "alice", &["Patient/x"]);
    assert_conflict(store.insert_member(&dup).await, "duplicate username");
    assert_eq!(store.get_member("m2").await.unwrap(), None);
    // Duplicate id.
    assert_conflict(
        store.insert_member(&member("m1", "alice2", &[])).await,
        "duplicate id",
    );

    // m2 with another username succeeds and has exactly its own patients.
    let m2 = member("m2", "bob", &["Patient/b1"]);
    store.insert_member(&m2).await.expect("m2");
    assert_eq!(store.get_member("m2").await.unwrap(), Some(m2.clone()));

    let mut m3 = member("m3", "aaron", &["Patient/x", "Patient/y", "Patient/x"]);
    m3.disabled = true;
    m3.fhir_user = None;
    store
        .insert_member(&m3)
        .await
        .expect("m3 (duplicate patient entries)");
    let got = store
        .get_member_by_username("aaron")
        .await
        .unwrap()
        .expect("m3");
    assert_eq!(got.patients, ["Patient/x", "Patient/y"]);
    assert!(got.disabled);
    assert_eq!(got.fhir_user, None);

    let m4 = member("m4", "carol", &[]);
    store.insert_member(&m4).await.expect("m4");

    let all = store.list_members().await.unwrap();
    let names: Vec<&str> = all.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(names, ["aaron", "alice", "bob", "carol"]);
    assert_eq!(all[1], m1);
    assert_eq!(all[2], m2);
    assert_eq!(all[3], m4);
}

pub async fn jti_replay_cache(store: &dyn Store) {
    assert!(
        store
            .remember_jti("iss-1", "j1", t(60), t(0))
            .await
            .unwrap(),
        "first use"
    );
    assert!(
        !store
            .remember_jti("iss-1", "j1", t(60), t(10))
            .await
            .unwrap(),
        "replay"
    );
    assert!(
        !store
            .remember_jti("iss-1", "j1", t(90), t(59))
            .await
            .unwrap(),
        "replay just before expiry"
    );
    assert!(
        store
            .remember_jti("iss-2", "j1", t(60), t(10))
            .await
            .unwrap(),
        "jti is per issuer"
    );
    assert!(
        store
            .remember_jti("iss-1", "j2", t(60), t(10))
            .await
            .unwrap(),
        "another jti"
    );
    // Once the entry has expired the jti may be used again, with its new expiry.
    assert!(
        store
            .remember_jti("iss-1", "j1", t(120), t(60))
            .await
            .unwrap(),
        "reuse after expiry"
    );
    assert!(
        !store
            .remember_jti("iss-1", "j1", t(200), t(61))
            .await
            .unwrap(),
        "new expiry is kept"
    );
    assert!(!store
        .remember_jti("iss-1", "j1", t(200), t(119))
        .await
        .unwrap());
    assert!(store
        .remember_jti("iss-1", "j1", t(200), t(120))
        .await
        .unwrap());
}

pub async fn signing_keys(store: &dyn Store) {
    let key = |kid: &str, alg: &str, created: i64| SigningKeyRecord {
        kid: kid.to_owned(),
        alg: alg.to_owned(),
        private_pkcs8_der: vec![0x30, 0x00, 0x81, 0xff, 0x00, kid.len() as u8],
        public_jwk: json!({"kty": if alg == "ES256" { "EC" } else { "RSA" }, "kid": kid, "use": "sig"}),
        created_at: t(created),
        retired_at: None,
        publish_until: None,
    };
    let k1 = key("k1", "RS256", 0);
    let k2 = key("k2", "ES256", 10);
    let k3 = key("k3", "ES256", 10);
    for k in [&k1, &k2, &k3] {
        store.insert_signing_key(k).await.expect("insert key");
    }
    assert_conflict(
        store.insert_signing_key(&key("k2", "RS256", 20)).await,
        "duplicate kid",
    );
    assert_eq!(
        store.list_signing_keys().await.unwrap(),
        vec![k3.clone(), k2.clone(), k1.clone()]
    );

    assert!(store.retire_signing_key("k1", t(20), t(100)).await.unwrap());
    assert!(!store.retire_signing_key("k9", t(20), t(100)).await.unwrap());
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys[2],
        SigningKeyRecord {
            retired_at: Some(t(20)),
            publish_until: Some(t(100)),
            ..k1.clone()
        }
    );
    assert_eq!(keys[0], k3);
}

pub async fn audit_log(store: &dyn Store) {
    let events = [
        audit(0, "client.registered", "success"),
        audit(1, "login.failure", "failure"),
        audit(2, "client.updated", "success"),
        audit(2, "client_x", "success"),
        audit(2, "clientXx", "success"),
        audit(3, "Client.registered", "success"),
    ];
    let mut bare = audit(1, "token.issued", "success");
    bare.client_id = None;
    bare.patient = None;
    bare.remote_addr = None;
    bare.member_id = Some("m1".to_owned());
    bare.detail = json!([1, "two", {"three": 3}]);
    for e in events.iter().chain([&bare]) {
        store.append_audit(e).await.expect("append");
    }
    let all = store.list_audit(100, None).await.unwrap();
    assert_eq!(all.len(), 7);
    let names: Vec<&str> = all.iter().map(|r| r.event.event.as_str()).collect();
    // Newest first; equal times by insertion order, newest first.
    assert_eq!(
        names,
        [
            "Client.registered",
            "clientXx",
            "client_x",
            "client.updated",
            "token.issued",
            "login.failure",
            "client.registered"
        ]
    );
    for pair in all.windows(2) {
        assert!(pair[0].event.at >= pair[1].event.at);
    }
    let mut ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "ids are unique");
    let bare_rec = all
        .iter()
        .find(|r| r.event.event == "token.issued")
        .expect("bare");
    assert_eq!(bare_rec.event, bare);
    let first = all.last().expect("oldest");
    assert_eq!(first.event, events[0]);
    // ids grow with insertion order.
    let id_of = |name: &str| all.iter().find(|r| r.event.event == name).map(|r| r.id);
    let inserted: Vec<Option<i64>> = events
        .iter()
        .chain([&bare])
        .map(|e| id_of(&e.event))
        .collect();
    assert!(inserted.windows(2).all(|w| w[0] < w[1]), "{inserted:?}");

    let two = store.list_audit(2, None).await.unwrap();
    assert_eq!(two, all[..2].to_vec());

    // A batch is stored in order, after what came before; an empty batch is a no-op.
    store.append_audit_batch(&[]).await.expect("empty batch");
    let batch = [
        audit(5, "batch.one", "success"),
        audit(5, "batch.two", "failure"),
    ];
    store.append_audit_batch(&batch).await.expect("batch");
    let after = store.list_audit(100, Some("batch.")).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].event, batch[1]);
    assert_eq!(after[1].event, batch[0]);
    assert!(after[0].id > after[1].id && after[1].id > all[0].id);
    store
        .append_audit_batch(&[])
        .await
        .expect("empty batch again");
    assert_eq!(store.list_audit(100, None).await.unwrap().len(), 9);
    assert!(store.list_audit(0, None).await.unwrap().is_empty());

    let clients: Vec<String> = store
        .list_audit(100, Some("client."))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event)
        .collect();
    assert_eq!(
        clients,
        ["client.updated", "client.registered"],
        "prefix is literal, case-sensitive"
    );
    let underscore: Vec<String> = store
        .list_audit(100, Some("client_"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event)
        .collect();
    assert_eq!(underscore, ["client_x"], "'_' is not a wildcard");
    assert!(
        store.list_audit(100, Some("%")).await.unwrap().is_empty(),
        "'%' is not a wildcard"
    );
    assert_eq!(
        store.list_audit(1, Some("client")).await.unwrap().len(),
        1,
        "limit applies with a prefix"
    );

    // A batch larger than one INSERT statement holds is stored whole and in order.
    let big: Vec<AuditEvent> = (0..1100)
        .map(|i| audit(6, &format!("big.{i:04}"), "success"))
        .collect();
    store.append_audit_batch(&big).await.expect("big batch");
    let stored = store.list_audit(2000, Some("big.")).await.unwrap();
    let mut names: Vec<String> = stored.into_iter().map(|r| r.event.event).collect();
    names.reverse();
    let expected: Vec<String> = big.iter().map(|e| e.event.clone()).collect();
    assert_eq!(names, expected);
}

pub async fn grants(store: &dyn Store) {
    let g1 = grant("g1", Some("m1"), 0, None);
    let g2 = grant("g2", Some("m1"), 5, Some(1000));
    let mut g3 = grant("g3", Some("m2"), 1, None);
    g3.patient = None;
    g3.data = json!({});
    for g in [&g1, &g2, &g3] {
        store.insert_grant(g).await.expect("insert grant");
    }
    assert_conflict(
        store.insert_grant(&grant("g1", None, 9, None)).await,
        "duplicate grant id",
    );
    assert_eq!(store.get_grant("g1").await.unwrap(), Some(g1.clone()));
    assert_eq!(store.get_grant("g3").await.unwrap(), Some(g3.clone()));
    assert_eq!(store.get_grant("g9").await.unwrap(), None);
    assert_eq!(
        store.list_grants_for_member("m1").await.unwrap(),
        vec![g1.clone(), g2.clone()]
    );
    assert!(store.list_grants_for_member("m9").await.unwrap().is_empty());

    store
        .insert_refresh_token(&refresh("r1", "g1", 0, 1000))
        .await
        .expect("r1");
    store
        .insert_refresh_token(&refresh("r2", "g2", 0, 1000))
        .await
        .expect("r2");
    assert!(
        store.revoke_grant("g1", t(50)).await.unwrap(),
        "first revocation"
    );
    assert!(
        !store.revoke_grant("g1", t(60)).await.unwrap(),
        "already revoked"
    );
    assert!(
        !store.revoke_grant("g9", t(60)).await.unwrap(),
        "unknown grant"
    );
    let got = store.get_grant("g1").await.unwrap().expect("g1");
    assert_eq!(got.revoked_at, Some(t(50)), "first revocation time is kept");
    assert_eq!(
        store.list_grants_for_member("m1").await.unwrap(),
        vec![g2.clone()]
    );
    assert_eq!(
        store.get_refresh_token("r1").await.unwrap(),
        None,
        "its refresh tokens die with it"
    );
    assert!(
        store.get_refresh_token("r2").await.unwrap().is_some(),
        "other grants untouched"
    );
    assert_eq!(
        store
            .rotate_refresh_token("r1", &refresh("r1b", "g1", 70, 2000), None, t(70))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    let revs = store.revocations_since(t(0)).await.unwrap();
    assert_eq!(
        revs,
        vec![(
            t(50),
            Revocation::Grant {
                grant_id: "g1".to_owned()
            }
        )]
    );
}

pub async fn codes(store: &dyn Store) {
    let c1 = code("h1", 60);
    store.insert_code(&c1).await.expect("insert code");
    assert_conflict(
        store.insert_code(&code("h1", 90)).await,
        "duplicate code hash",
    );
    assert_eq!(
        store.redeem_code("h1", t(10)).await.unwrap(),
        CodeRedemption::Redeemed(c1.clone())
    );
    assert_eq!(
        store.redeem_code("h1", t(11)).await.unwrap(),
        CodeRedemption::AlreadyUsed { grant_id: None }
    );
    store
        .set_code_grant("h1", "g-issued")
        .await
        .expect("set grant");
    let used = CodeRedemption::AlreadyUsed {
        grant_id: Some("g-issued".to_owned()),
    };
    assert_eq!(store.redeem_code("h1", t(12)).await.unwrap(), used);
    assert_eq!(
        store.redeem_code("h1", t(600)).await.unwrap(),
        used,
        "reuse after expiry still reported"
    );

    let c2 = code("h2", 60);
    store.insert_code(&c2).await.expect("c2");
    assert_eq!(
        store.redeem_code("h2", t(60)).await.unwrap(),
        CodeRedemption::Expired
    );
    assert_eq!(
        store.redeem_code("h2", t(61)).await.unwrap(),
        CodeRedemption::Expired
    );
    assert_eq!(
        store.redeem_code("zz", t(0)).await.unwrap(),
        CodeRedemption::NotFound
    );
    match store.set_code_grant("zz", "g").await {
        Err(StoreError::NotFound) => {}
        other => panic!("set_code_grant on a missing code: expected NotFound, got {other:?}"),
    }

    let mut c3 = code("h3", 60);
    c3.grant_id = Some("g-pre".to_owned());
    store.insert_code(&c3).await.expect("c3");
    assert_eq!(
        store.redeem_code("h3", t(59)).await.unwrap(),
        CodeRedemption::Redeemed(c3)
    );
    assert_eq!(
        store.redeem_code("h3", t(59)).await.unwrap(),
        CodeRedemption::AlreadyUsed {
            grant_id: Some("g-pre".to_owned())
        }
    );
}

pub async fn refresh_tokens(store: &dyn Store) {
    let g = grant("g", Some("m1"), 0, None);
    store.insert_grant(&g).await.unwrap();
    let r1 = refresh("r1", "g", 0, 1000);
    store.insert_refresh_token(&r1).await.expect("r1");
    assert_conflict(
        store.insert_refresh_token(&refresh("r1", "g", 1, 9)).await,
        "duplicate hash",
    );
    assert_eq!(
        store.get_refresh_token("r1").await.unwrap(),
        Some(r1.clone())
    );
    assert_eq!(store.get_refresh_token("nope").await.unwrap(), None);

    // Rotation: the new token belongs to the old token's grant, whatever the caller put in it.
    assert_eq!(
        store
            .rotate_refresh_token("r1", &refresh("r2", "not-g", 10, 1010), None, t(10))
            .await
            .unwrap(),
        RefreshRotation::Rotated(g.clone())
    );
    assert_eq!(
        store.get_refresh_token("r1").await.unwrap(),
        None,
        "rotated token is gone"
    );
    assert_eq!(
        store.get_refresh_token("r2").await.unwrap(),
        Some(refresh("r2", "g", 10, 1010))
    );
    assert_eq!(
        store
            .rotate_refresh_token("r2", &refresh("r3", "g", 20, 1020), None, t(20))
            .await
            .unwrap(),
        RefreshRotation::Rotated(g.clone())
    );
    // Reuse of a rotated token revokes the whole grant.
    assert_eq!(
        store
            .rotate_refresh_token("r1", &refresh("r4", "g", 30, 1030), None, t(30))
            .await
            .unwrap(),
        RefreshRotation::Reused {
            grant_id: "g".to_owned()
        }
    );
    assert_eq!(
        store.get_grant("g").await.unwrap().expect("g").revoked_at,
        Some(t(30))
    );
    assert_eq!(
        store.get_refresh_token("r3").await.unwrap(),
        None,
        "current token revoked too"
    );
    assert_eq!(
        store.get_refresh_token("r4").await.unwrap(),
        None,
        "reuse issued nothing"
    );
    assert_eq!(
        store
            .rotate_refresh_token("r3", &refresh("r5", "g", 31, 1031), None, t(31))
            .await
            .unwrap(),
        RefreshRotation::Invalid,
        "rotation is invalid after the grant is revoked"
    );
    assert!(store.list_grants_for_member("m1").await.unwrap().is_empty());
    assert_eq!(
        store.revocations_since(t(0)).await.unwrap(),
        vec![(
            t(30),
            Revocation::Grant {
                grant_id: "g".to_owned()
            }
        )]
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", &refresh("r6", "g", 31, 1031), None, t(31))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );

    // Expired token.
    store
        .insert_grant(&grant("h", None, 0, None))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("e1", "h", 0, 100))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("e1", &refresh("e2", "h", 100, 200), None, t(100))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    assert_eq!(store.get_refresh_token("e2").await.unwrap(), None);
    assert!(
        store
            .get_grant("h")
            .await
            .unwrap()
            .expect("h")
            .revoked_at
            .is_none(),
        "expiry is no reuse"
    );

    // Expired grant.
    store
        .insert_grant(&grant("k", None, 0, Some(50)))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("k1", "k", 0, 1000))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("k1", &refresh("k2", "k", 50, 1050), None, t(50))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    assert_eq!(store.get_refresh_token("k2").await.unwrap(), None);

    // Grant revoked directly.
    store
        .insert_grant(&grant("m", None, 0, None))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("m1", "m", 0, 1000))
        .await
        .unwrap();
    assert!(store.revoke_grant("m", t(5)).await.unwrap());
    assert_eq!(
        store
            .rotate_refresh_token("m1", &refresh("m2", "m", 6, 1006), None, t(6))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );

    // revoke_refresh_token revokes the grant (RFC 7009 practice).
    store
        .insert_grant(&grant("n", None, 0, None))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("n1", "n", 0, 1000))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("n1", &refresh("n2", "n", 1, 1001), None, t(1))
            .await
            .unwrap(),
        RefreshRotation::Rotated(grant("n", None, 0, None))
    );
    assert_eq!(
        store.revoke_refresh_token("n2", t(2)).await.unwrap(),
        Some("n".to_owned())
    );
    assert_eq!(
        store.get_grant("n").await.unwrap().expect("n").revoked_at,
        Some(t(2))
    );
    assert_eq!(store.get_refresh_token("n2").await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh_token("n2", &refresh("n3", "n", 3, 1003), None, t(3))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    assert_eq!(
        store.revoke_refresh_token("unknown", t(2)).await.unwrap(),
        None
    );
}

/// `find_code` and `exchange_code`: the token endpoint's read and its one transaction.
pub async fn code_exchange(store: &dyn Store) {
    let g1 = grant("g1", Some("m1"), 0, None);
    store.insert_grant(&g1).await.unwrap();
    let c1 = code_with_grant("c1", Some("g1"), 60);
    store.insert_code(&c1).await.unwrap();
    assert_eq!(
        store.find_code("c1").await.unwrap(),
        Some(CodeInfo {
            code: c1.clone(),
            consumed_at: None,
            grant: Some(g1.clone()),
        })
    );
    assert_eq!(store.find_code("nope").await.unwrap(), None);
    store.insert_code(&code("c-nogrant", 60)).await.unwrap();
    let info = store.find_code("c-nogrant").await.unwrap().expect("code");
    assert_eq!((info.code.grant_id, info.grant), (None, None));

    // A replayed assertion changes nothing: the code stays unspent, no refresh token is stored.
    assert!(store
        .remember_jti("client-1", "seen", t(300), t(0))
        .await
        .unwrap());
    let seen = jti("client-1", "seen", 300);
    let rt = refresh("rt1", "not-g1", 1, 1000);
    let with_rt = CodeAction::Issue {
        refresh_token: Some(&rt),
    };
    assert_eq!(
        store
            .exchange_code(&exchange("c1", "client-1", Some(&seen), with_rt), t(1))
            .await
            .unwrap(),
        CodeExchangeOutcome::AssertionReplayed
    );
    assert_eq!(
        store.find_code("c1").await.unwrap().unwrap().consumed_at,
        None
    );
    assert_eq!(store.find_refresh_token("rt1").await.unwrap(), None);

    // First use: spent, refresh token stored for the code's grant, jti recorded.
    let j1 = jti("client-1", "j1", 300);
    assert_eq!(
        store
            .exchange_code(&exchange("c1", "client-1", Some(&j1), with_rt), t(1))
            .await
            .unwrap(),
        CodeExchangeOutcome::Issued {
            code: Box::new(c1.clone()),
            grant: Box::new(g1.clone())
        }
    );
    assert_eq!(
        store.find_code("c1").await.unwrap().unwrap().consumed_at,
        Some(t(1))
    );
    assert_eq!(
        store.get_refresh_token("rt1").await.unwrap(),
        Some(refresh("rt1", "g1", 1, 1000))
    );
    assert!(
        !store
            .remember_jti("client-1", "j1", t(300), t(2))
            .await
            .unwrap(),
        "the exchange recorded its jti"
    );

    // Second use: the grant the first one issued is revoked, with its refresh token, and logged.
    let j2 = jti("client-1", "j2", 300);
    assert_eq!(
        store
            .exchange_code(&exchange("c1", "client-1", Some(&j2), ISSUE), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::AlreadyUsed {
            grant_id: Some("g1".into())
        }
    );
    assert!(store
        .get_grant("g1")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert_eq!(store.get_refresh_token("rt1").await.unwrap(), None);
    assert!(store
        .revocations_since(t(0))
        .await
        .unwrap()
        .iter()
        .any(|(_, r)| *r
            == Revocation::Grant {
                grant_id: "g1".into()
            }));
    assert!(!store
        .remember_jti("client-1", "j2", t(300), t(3))
        .await
        .unwrap());

    // Expired (left unspent) and unknown codes; the jti is recorded all the same.
    store
        .insert_code(&code_with_grant("c2", Some("g1"), 60))
        .await
        .unwrap();
    let j3 = jti("client-1", "j3", 300);
    assert_eq!(
        store
            .exchange_code(&exchange("c2", "client-1", Some(&j3), ISSUE), t(60))
            .await
            .unwrap(),
        CodeExchangeOutcome::Expired
    );
    assert_eq!(
        store.find_code("c2").await.unwrap().unwrap().consumed_at,
        None
    );
    let j4 = jti("client-1", "j4", 300);
    assert_eq!(
        store
            .exchange_code(&exchange("zz", "client-1", Some(&j4), ISSUE), t(1))
            .await
            .unwrap(),
        CodeExchangeOutcome::NotFound
    );
    for j in ["j3", "j4"] {
        assert!(!store
            .remember_jti("client-1", j, t(300), t(4))
            .await
            .unwrap());
    }

    // Another client's code: spent, and its grant revoked.
    store
        .insert_grant(&grant("g3", None, 0, None))
        .await
        .unwrap();
    store
        .insert_code(&code_with_grant("c3", Some("g3"), 60))
        .await
        .unwrap();
    assert_eq!(
        store
            .exchange_code(&exchange("c3", "client-2", None, ISSUE), t(1))
            .await
            .unwrap(),
        CodeExchangeOutcome::WrongClient {
            grant_id: Some("g3".into())
        }
    );
    assert!(store
        .get_grant("g3")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert_eq!(
        store
            .exchange_code(&exchange("c3", "client-1", None, ISSUE), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::AlreadyUsed {
            grant_id: Some("g3".into())
        }
    );

    // Refused: spent, nothing issued, the grant untouched until the code comes back.
    store
        .insert_grant(&grant("g4", None, 0, None))
        .await
        .unwrap();
    store
        .insert_code(&code_with_grant("c4", Some("g4"), 60))
        .await
        .unwrap();
    assert_eq!(
        store
            .exchange_code(&exchange("c4", "client-1", None, CodeAction::Refuse), t(1))
            .await
            .unwrap(),
        CodeExchangeOutcome::Refused
    );
    assert!(store
        .find_code("c4")
        .await
        .unwrap()
        .unwrap()
        .consumed_at
        .is_some());
    assert!(store
        .get_grant("g4")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert_eq!(
        store
            .exchange_code(&exchange("c4", "client-1", None, ISSUE), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::AlreadyUsed {
            grant_id: Some("g4".into())
        }
    );
    assert!(store
        .get_grant("g4")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());

    // A revoked, expired or missing grant: the code is spent, no refresh token stored.
    let g5 = grant("g5", None, 0, None);
    store.insert_grant(&g5).await.unwrap();
    assert!(store.revoke_grant("g5", t(0)).await.unwrap());
    store
        .insert_grant(&grant("g6", None, 0, Some(5)))
        .await
        .unwrap();
    for (c, g) in [("c5", Some("g5")), ("c6", Some("g6")), ("c7", None)] {
        store.insert_code(&code_with_grant(c, g, 60)).await.unwrap();
        let rt = refresh(&format!("rt-{c}"), "g5", 10, 1000);
        let action = CodeAction::Issue {
            refresh_token: Some(&rt),
        };
        assert_eq!(
            store
                .exchange_code(&exchange(c, "client-1", None, action), t(10))
                .await
                .unwrap(),
            CodeExchangeOutcome::GrantInactive,
            "{c}"
        );
        assert!(store
            .find_code(c)
            .await
            .unwrap()
            .unwrap()
            .consumed_at
            .is_some());
        assert_eq!(
            store.find_refresh_token(&rt.token_hash).await.unwrap(),
            None
        );
    }
}

/// `find_refresh_token`, `rotate_refresh_token` with an assertion jti, and `reject_refresh_token`.
pub async fn refresh_with_assertions(store: &dyn Store) {
    let g = grant("g", Some("m1"), 0, None);
    store.insert_grant(&g).await.unwrap();
    store
        .insert_refresh_token(&refresh("r1", "g", 0, 1000))
        .await
        .unwrap();
    let info = store.find_refresh_token("r1").await.unwrap().expect("r1");
    assert_eq!(
        info,
        RefreshTokenInfo {
            token: refresh("r1", "g", 0, 1000),
            rotated_at: None,
            revoked_at: None,
            grant: g.clone(),
        }
    );
    assert!(info.is_active(t(999)));
    assert!(!info.is_active(t(1000)), "expired");
    assert_eq!(store.find_refresh_token("nope").await.unwrap(), None);

    // A replayed assertion changes nothing.
    assert!(store
        .remember_jti("client-1", "seen", t(300), t(0))
        .await
        .unwrap());
    let seen = jti("client-1", "seen", 300);
    assert_eq!(
        store
            .rotate_refresh_token("r1", &refresh("r2", "g", 10, 1010), Some(&seen), t(10))
            .await
            .unwrap(),
        RefreshRotation::AssertionReplayed
    );
    assert!(store.get_refresh_token("r1").await.unwrap().is_some());
    assert_eq!(store.find_refresh_token("r2").await.unwrap(), None);

    let j1 = jti("client-1", "j1", 300);
    assert_eq!(
        store
            .rotate_refresh_token("r1", &refresh("r2", "g", 10, 1010), Some(&j1), t(10))
            .await
            .unwrap(),
        RefreshRotation::Rotated(g.clone())
    );
    assert!(!store
        .remember_jti("client-1", "j1", t(300), t(11))
        .await
        .unwrap());
    let old = store.find_refresh_token("r1").await.unwrap().expect("r1");
    assert_eq!(old.rotated_at, Some(t(10)));
    assert!(!old.is_active(t(11)));
    assert!(store
        .find_refresh_token("r2")
        .await
        .unwrap()
        .expect("r2")
        .is_active(t(11)));

    // Refusals: a replayed assertion still changes nothing, even for a rotated token...
    assert_eq!(
        store
            .reject_refresh_token("r1", Some(&seen), t(12))
            .await
            .unwrap(),
        RefreshRotation::AssertionReplayed
    );
    assert!(store
        .get_grant("g")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    // ...an active or unknown token is left alone (the jti is recorded)...
    let j2 = jti("client-1", "j2", 300);
    assert_eq!(
        store
            .reject_refresh_token("r2", Some(&j2), t(12))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    assert!(store.get_refresh_token("r2").await.unwrap().is_some());
    assert!(!store
        .remember_jti("client-1", "j2", t(300), t(13))
        .await
        .unwrap());
    assert_eq!(
        store
            .reject_refresh_token("unknown", None, t(12))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    // ...and a rotated token coming back revokes the whole grant.
    assert_eq!(
        store.reject_refresh_token("r1", None, t(13)).await.unwrap(),
        RefreshRotation::Reused {
            grant_id: "g".into()
        }
    );
    assert!(store
        .get_grant("g")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert_eq!(store.get_refresh_token("r2").await.unwrap(), None);
    let r2 = store.find_refresh_token("r2").await.unwrap().expect("r2");
    assert!(r2.revoked_at.is_some() && !r2.is_active(t(14)));
}

/// `insert_grant_once`: the client_credentials grant and its assertion's jti together.
pub async fn grant_with_assertion(store: &dyn Store) {
    let j = jti("client-1", "j", 300);
    let g1 = grant("g1", None, 0, Some(3600));
    assert!(store.insert_grant_once(&g1, Some(&j), t(0)).await.unwrap());
    assert_eq!(store.get_grant("g1").await.unwrap(), Some(g1));
    assert!(
        !store
            .insert_grant_once(&grant("g2", None, 0, None), Some(&j), t(1))
            .await
            .unwrap(),
        "replayed jti"
    );
    assert_eq!(store.get_grant("g2").await.unwrap(), None);
    assert!(store
        .insert_grant_once(&grant("g2", None, 0, None), None, t(1))
        .await
        .unwrap());
    let j2 = jti("client-1", "j2", 300);
    assert_conflict(
        store
            .insert_grant_once(&grant("g2", None, 0, None), Some(&j2), t(1))
            .await,
        "duplicate grant id",
    );
    assert!(
        store
            .remember_jti("client-1", "j2", t(300), t(2))
            .await
            .unwrap(),
        "a failed insert does not record its jti"
    );
}

/// `register_udap_client`: the statement's jti with the create, update or cancel.
pub async fn udap_registration(store: &dyn Store) {
    let (comm, iss) = ("urn:comm", "https://app.example/");
    let meta = json!({"client_name": "App", "redirect_uris": ["https://app.example/cb"]});
    let j1 = jti(iss, "s1", 300);
    let upsert = |id, secret, meta| RegistrationChange::Upsert {
        new_client_id: id,
        secret_hash: secret,
        metadata: meta,
    };
    let reg = |j, change| UdapRegistration {
        statement_jti: j,
        community: comm,
        iss,
        change,
    };
    assert_eq!(
        store
            .register_udap_client(&reg(&j1, upsert("c-new", Some("hash-1"), &meta)), t(0))
            .await
            .unwrap(),
        RegistrationOutcome::Created {
            client_id: "c-new".into()
        }
    );
    let created = store.get_client("c-new").await.unwrap().expect("created");
    assert_eq!(
        created,
        ClientRecord {
            client_id: "c-new".into(),
            status: ClientStatus::Active,
            community: Some(comm.into()),
            iss: Some(iss.into()),
            secret_hash: Some("hash-1".into()),
            metadata: meta.clone(),
            is_resource_server: false,
            created_at: t(0),
            updated_at: t(0),
        }
    );
    // The same statement again changes nothing.
    let meta2 = json!({"client_name": "App 2"});
    assert_eq!(
        store
            .register_udap_client(&reg(&j1, upsert("c-x", None, &meta2)), t(5))
            .await
            .unwrap(),
        RegistrationOutcome::StatementReplayed
    );
    assert_eq!(
        store.get_client("c-new").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.get_client("c-x").await.unwrap(), None);

    // A new statement for the same (community, iss) updates that client, keeping id and creation time.
    let j_s2 = jti(iss, "s2", 300);
    assert_eq!(
        store
            .register_udap_client(&reg(&j_s2, upsert("c-x", None, &meta2)), t(10))
            .await
            .unwrap(),
        RegistrationOutcome::Updated {
            client_id: "c-new".into()
        }
    );
    assert_eq!(store.get_client("c-x").await.unwrap(), None);
    let updated = store.get_client("c-new").await.unwrap().expect("c-new");
    assert_eq!(
        (
            updated.metadata,
            updated.secret_hash,
            updated.created_at,
            updated.updated_at
        ),
        (meta2.clone(), None, t(0), t(10))
    );

    // Cancel, then register again: active once more.
    let j_s3 = jti(iss, "s3", 300);
    assert_eq!(
        store
            .register_udap_client(&reg(&j_s3, RegistrationChange::Cancel), t(20))
            .await
            .unwrap(),
        RegistrationOutcome::Cancelled {
            client_id: "c-new".into()
        }
    );
    let cancelled = store.get_client("c-new").await.unwrap().unwrap();
    assert_eq!(
        (cancelled.status, cancelled.updated_at),
        (ClientStatus::Cancelled, t(20))
    );
    let j_s4 = jti(iss, "s4", 300);
    assert_eq!(
        store
            .register_udap_client(&reg(&j_s4, upsert("c-y", None, &meta)), t(30))
            .await
            .unwrap(),
        RegistrationOutcome::Updated {
            client_id: "c-new".into()
        }
    );
    assert_eq!(
        store.get_client("c-new").await.unwrap().unwrap().status,
        ClientStatus::Active
    );

    // Cancelling what was never registered: nothing to cancel, but the statement is spent.
    let other = UdapRegistration {
        statement_jti: &jti("https://other.example/", "s5", 300),
        community: comm,
        iss: "https://other.example/",
        change: RegistrationChange::Cancel,
    };
    assert_eq!(
        store.register_udap_client(&other, t(40)).await.unwrap(),
        RegistrationOutcome::NotRegistered
    );
    assert!(!store
        .remember_jti("https://other.example/", "s5", t(300), t(41))
        .await
        .unwrap());

    // The same iss in another community is another client; out-of-band clients are not touched.
    store.insert_client(&client("oob", None, 0)).await.unwrap();
    let elsewhere = UdapRegistration {
        statement_jti: &jti(iss, "s6", 300),
        community: "urn:other-comm",
        iss,
        change: upsert("c-z", None, &meta),
    };
    assert_eq!(
        store.register_udap_client(&elsewhere, t(50)).await.unwrap(),
        RegistrationOutcome::Created {
            client_id: "c-z".into()
        }
    );
    assert_eq!(store.list_clients().await.unwrap().len(), 3);
    assert_eq!(
        store.get_client("oob").await.unwrap(),
        Some(client("oob", None, 0))
    );
}

pub async fn access_token_revocation(store: &dyn Store) {
    store
        .revoke_access_token("a1", t(100), t(10))
        .await
        .expect("revoke a1");
    store
        .revoke_access_token("a1", t(100), t(15))
        .await
        .expect("revoking twice is fine");
    assert!(store.is_access_token_revoked("a1").await.unwrap());
    assert!(!store.is_access_token_revoked("a2").await.unwrap());
    store
        .revoke_access_token("a2", t(200), t(20))
        .await
        .unwrap();
    store
        .insert_grant(&grant("g", None, 0, None))
        .await
        .unwrap();
    assert!(store.revoke_grant("g", t(30)).await.unwrap());

    let a1 = (
        t(10),
        Revocation::AccessToken {
            jti: "a1".to_owned(),
            expires_at: t(100),
        },
    );
    let a2 = (
        t(20),
        Revocation::AccessToken {
            jti: "a2".to_owned(),
            expires_at: t(200),
        },
    );
    let g = (
        t(30),
        Revocation::Grant {
            grant_id: "g".to_owned(),
        },
    );
    assert_eq!(
        store.revocations_since(t(0)).await.unwrap(),
        vec![a1.clone(), a2.clone(), g.clone()]
    );
    assert_eq!(
        store.revocations_since(t(20)).await.unwrap(),
        vec![a2.clone(), g.clone()],
        "inclusive"
    );
    assert_eq!(
        store.revocations_since(t(21)).await.unwrap(),
        vec![g.clone()]
    );
    assert!(store.revocations_since(t(31)).await.unwrap().is_empty());

    assert_eq!(
        store.purge_expired(t(150)).await.unwrap(),
        1,
        "only a1 has expired"
    );
    assert!(!store.is_access_token_revoked("a1").await.unwrap());
    assert!(store.is_access_token_revoked("a2").await.unwrap());
    assert_eq!(store.revocations_since(t(0)).await.unwrap(), vec![a2, g]);
}

pub async fn consents(store: &dyn Store) {
    let c = ConsentRecord {
        member_id: "m1".to_owned(),
        client_id: "c1".to_owned(),
        patient: Some("Patient/p1".to_owned()),
        scope: "launch/patient patient/*.rs".to_owned(),
        updated_at: t(0),
    };
    store.upsert_consent(&c).await.expect("insert");
    assert_eq!(
        store.get_consent("m1", "c1").await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(store.get_consent("m1", "c2").await.unwrap(), None);
    assert_eq!(store.get_consent("m2", "c1").await.unwrap(), None);
    let c2 = ConsentRecord {
        patient: None,
        scope: "openid".to_owned(),
        updated_at: t(5),
        ..c.clone()
    };
    store.upsert_consent(&c2).await.expect("update");
    assert_eq!(store.get_consent("m1", "c1").await.unwrap(), Some(c2));
    let other = ConsentRecord {
        client_id: "c2".to_owned(),
        ..c.clone()
    };
    store.upsert_consent(&other).await.unwrap();
    assert!(store.delete_consent("m1", "c1").await.unwrap());
    assert!(!store.delete_consent("m1", "c1").await.unwrap());
    assert_eq!(store.get_consent("m1", "c1").await.unwrap(), None);
    assert_eq!(store.get_consent("m1", "c2").await.unwrap(), Some(other));
}

pub async fn login_failures(store: &dyn Store) {
    let alice = "user:alice";
    assert_eq!(store.record_login_failure(alice, t(0)).await.unwrap(), 1);
    assert_eq!(store.record_login_failure(alice, t(10)).await.unwrap(), 2);
    assert_eq!(store.record_login_failure(alice, t(20)).await.unwrap(), 3);
    assert_eq!(
        store
            .record_login_failure("addr:203.0.113.7", t(20))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.count_login_failures(alice, t(0)).await.unwrap(), 3);
    assert_eq!(store.count_login_failures(alice, t(10)).await.unwrap(), 2);
    assert_eq!(store.count_login_failures(alice, t(21)).await.unwrap(), 0);
    // 15 minutes after the first failure, it no longer counts.
    assert_eq!(
        store.record_login_failure(alice, t(900)).await.unwrap(),
        3,
        "t(0) left the window"
    );
    assert_eq!(
        store.record_login_failure(alice, t(2000)).await.unwrap(),
        1,
        "all old ones left"
    );
    store.reset_login_failures(alice).await.unwrap();
    assert_eq!(
        store
            .count_login_failures(alice, t(-100_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.record_login_failure(alice, t(2001)).await.unwrap(), 1);
    assert_eq!(
        store
            .count_login_failures("addr:203.0.113.7", t(0))
            .await
            .unwrap(),
        1,
        "other keys kept"
    );
}

pub async fn purge_expired(store: &dyn Store) {
    assert!(store.remember_jti("i", "j-old", t(10), t(0)).await.unwrap());
    assert!(store
        .remember_jti("i", "j-new", t(100), t(0))
        .await
        .unwrap());
    store.insert_code(&code("c-old", 10)).await.unwrap();
    store.insert_code(&code("c-new", 100)).await.unwrap();
    store
        .insert_grant(&grant("g", None, 0, None))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("r-old", "g", 0, 10))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("r-new", "g", 0, 100))
        .await
        .unwrap();
    store
        .revoke_access_token("a-old", t(10), t(0))
        .await
        .unwrap();
    store
        .revoke_access_token("a-new", t(100), t(0))
        .await
        .unwrap();
    store.record_login_failure("k-old", t(-1000)).await.unwrap();
    store.record_login_failure("k", t(40)).await.unwrap();
    assert!(store.revoke_grant("g2-missing", t(0)).await.is_ok());

    assert_eq!(store.purge_expired(t(50)).await.unwrap(), 5);
    assert_eq!(
        store.purge_expired(t(50)).await.unwrap(),
        0,
        "nothing left to purge"
    );

    assert!(
        !store
            .remember_jti("i", "j-new", t(200), t(50))
            .await
            .unwrap(),
        "live jti kept"
    );
    assert!(store
        .remember_jti("i", "j-old", t(200), t(50))
        .await
        .unwrap());
    assert_eq!(
        store.redeem_code("c-old", t(50)).await.unwrap(),
        CodeRedemption::NotFound
    );
    assert!(matches!(
        store.redeem_code("c-new", t(50)).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert_eq!(store.get_refresh_token("r-old").await.unwrap(), None);
    assert!(store.get_refresh_token("r-new").await.unwrap().is_some());
    assert!(!store.is_access_token_revoked("a-old").await.unwrap());
    assert!(store.is_access_token_revoked("a-new").await.unwrap());
    assert_eq!(
        store.count_login_failures("k", t(-100_000)).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .count_login_failures("k-old", t(-100_000))
            .await
            .unwrap(),
        0
    );
    assert!(
        store.get_grant("g").await.unwrap().is_some(),
        "grants are not purged"
    );
}

/// Runs `n` copies of `f(i)` on separate tasks at once (a barrier lines them up) and returns results.
async fn race<T, F, Fut>(store: &Arc<dyn Store>, n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut handles = Vec::new();
    for i in 0..n {
        let fut = f(store.clone(), i);
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

pub async fn concurrent_remember_jti(store: Arc<dyn Store>) {
    for round in 0..5 {
        let jti = format!("jti-{round}");
        let results = race(&store, 8, |s, _| {
            let jti = jti.clone();
            async move {
                s.remember_jti("iss", &jti, t(60), t(0))
                    .await
                    .expect("remember_jti")
            }
        })
        .await;
        assert_eq!(
            results.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {results:?}"
        );
    }
}

pub async fn concurrent_redeem_code(store: Arc<dyn Store>) {
    for round in 0..5 {
        let hash = format!("code-{round}");
        store.insert_code(&code(&hash, 60)).await.unwrap();
        let results = race(&store, 8, |s, _| {
            let hash = hash.clone();
            async move { s.redeem_code(&hash, t(1)).await.expect("redeem_code") }
        })
        .await;
        let redeemed = results
            .iter()
            .filter(|r| matches!(r, CodeRedemption::Redeemed(_)))
            .count();
        assert_eq!(redeemed, 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|r| matches!(
                r,
                CodeRedemption::Redeemed(_) | CodeRedemption::AlreadyUsed { grant_id: None }
            )),
            "round {round}: {results:?}"
        );
    }
}

pub async fn concurrent_rotate_refresh_token(store: Arc<dyn Store>) {
    store
        .insert_grant(&grant("g", None, 0, None))
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("r0", "g", 0, 1000))
        .await
        .unwrap();
    let results = race(&store, 6, |s, i| async move {
        s.rotate_refresh_token("r0", &refresh(&format!("r1-{i}"), "g", 1, 1001), None, t(1))
            .await
            .expect("rotate")
    })
    .await;
    let rotated = results
        .iter()
        .filter(|r| matches!(r, RefreshRotation::Rotated(_)))
        .count();
    assert_eq!(rotated, 1, "{results:?}");
    assert!(results.iter().all(|r| match r {
        RefreshRotation::Rotated(g) => g.id == "g",
        RefreshRotation::Reused { grant_id } => grant_id == "g",
        RefreshRotation::Invalid | RefreshRotation::AssertionReplayed => false,
    }));
    assert!(
        store
            .get_grant("g")
            .await
            .unwrap()
            .expect("g")
            .revoked_at
            .is_some(),
        "reuse revoked it"
    );
    for i in 0..6 {
        assert_eq!(
            store.get_refresh_token(&format!("r1-{i}")).await.unwrap(),
            None
        );
    }
}

/// `CodeAction::Decide`: the caller's check runs inside the exchange, only once the code is claimed for
/// the right client and its grant is active, and its answer is applied like `Refuse` or `Issue`.
pub async fn code_exchange_decided_in_the_transaction(store: &dyn Store) {
    let g = grant("gd", Some("m1"), 0, None);
    store.insert_grant(&g).await.unwrap();
    let calls = std::sync::Mutex::new(Vec::new());
    let decide = |c: &CodeRecord, gr: &GrantRecord| {
        calls
            .lock()
            .unwrap()
            .push((c.code_hash.clone(), gr.id.clone()));
        if c.code_hash == "d-refuse" {
            CodeDecision::Refuse
        } else {
            CodeDecision::Issue {
                refresh_token: Some(refresh(&format!("rt-{}", c.code_hash), "ignored", 1, 1000)),
            }
        }
    };
    let action = CodeAction::Decide(&decide);
    for c in ["d-issue", "d-refuse", "d-other", "d-expired"] {
        let expires = if c == "d-expired" { 1 } else { 60 };
        store
            .insert_code(&code_with_grant(c, Some("gd"), expires))
            .await
            .unwrap();
    }

    // Issued: the decider saw the code and its grant; its refresh token is stored for the grant.
    let j = jti("client-1", "d1", 300);
    let outcome = store
        .exchange_code(&exchange("d-issue", "client-1", Some(&j), action), t(2))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, CodeExchangeOutcome::Issued { grant, .. } if grant.id == "gd"),
        "{outcome:?}"
    );
    assert_eq!(
        store.get_refresh_token("rt-d-issue").await.unwrap(),
        Some(refresh("rt-d-issue", "gd", 1, 1000))
    );

    // Refused by the decider: spent, nothing stored, the grant untouched.
    assert_eq!(
        store
            .exchange_code(&exchange("d-refuse", "client-1", None, action), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::Refused
    );
    assert!(store
        .find_code("d-refuse")
        .await
        .unwrap()
        .unwrap()
        .consumed_at
        .is_some());
    assert_eq!(store.get_refresh_token("rt-d-refuse").await.unwrap(), None);
    assert!(store
        .get_grant("gd")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    // Never asked about an expired code, a replayed assertion, or another client's code.
    let j2 = jti("client-1", "d2", 300);
    assert_eq!(
        store
            .exchange_code(&exchange("d-expired", "client-1", Some(&j2), action), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::Expired
    );
    assert_eq!(
        store
            .exchange_code(&exchange("d-other", "client-1", Some(&j), action), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::AssertionReplayed
    );
    assert_eq!(
        store
            .exchange_code(&exchange("d-other", "client-2", None, action), t(2))
            .await
            .unwrap(),
        CodeExchangeOutcome::WrongClient {
            grant_id: Some("gd".into())
        }
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            ("d-issue".to_owned(), "gd".to_owned()),
            ("d-refuse".to_owned(), "gd".to_owned())
        ]
    );
}

/// Concurrent exchanges of one code (each with its own assertion): one is issued, the others find it
/// used and revoke what it issued.
pub async fn concurrent_exchange_code(store: Arc<dyn Store>) {
    for round in 0..3 {
        let (g, c) = (format!("g-{round}"), format!("code-{round}"));
        store.insert_grant(&grant(&g, None, 0, None)).await.unwrap();
        store
            .insert_code(&code_with_grant(&c, Some(&g), 60))
            .await
            .unwrap();
        let results = race(&store, 6, |s, i| {
            let c = c.clone();
            async move {
                let j = jti("client-1", &format!("j-{round}-{i}"), 300);
                let rt = refresh(&format!("rt-{round}-{i}"), "x", 1, 1000);
                let action = CodeAction::Issue {
                    refresh_token: Some(&rt),
                };
                s.exchange_code(&exchange(&c, "client-1", Some(&j), action), t(1))
                    .await
                    .expect("exchange_code")
            }
        })
        .await;
        let issued = results
            .iter()
            .filter(|r| matches!(r, CodeExchangeOutcome::Issued { .. }))
            .count();
        assert_eq!(issued, 1, "round {round}: {results:?}");
        assert!(results.iter().all(|r| match r {
            CodeExchangeOutcome::Issued { grant, .. } => grant.id == g,
            CodeExchangeOutcome::AlreadyUsed { grant_id } => grant_id.as_deref() == Some(&g),
            _ => false,
        }));
        assert!(store
            .get_grant(&g)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }
}

/// Concurrent registrations of one (community, iss): one client, created once.
pub async fn concurrent_udap_registration(store: Arc<dyn Store>) {
    let results = race(&store, 8, |s, i| async move {
        let meta = json!({"n": i});
        let id = format!("c-{i}");
        let j = jti("https://app.example/", &format!("s-{i}"), 300);
        s.register_udap_client(
            &UdapRegistration {
                statement_jti: &j,
                community: "urn:comm",
                iss: "https://app.example/",
                change: RegistrationChange::Upsert {
                    new_client_id: &id,
                    secret_hash: None,
                    metadata: &meta,
                },
            },
            t(i as i64),
        )
        .await
        .expect("register_udap_client")
    })
    .await;
    let created: Vec<&String> = results
        .iter()
        .filter_map(|r| match r {
            RegistrationOutcome::Created { client_id } => Some(client_id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| match r {
        RegistrationOutcome::Created { client_id } | RegistrationOutcome::Updated { client_id } =>
            client_id == created[0],
        _ => false,
    }));
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
}

/// Many tasks writing at once must all succeed (no SQLITE_BUSY, no lost rows).
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    let results = race(&store, 8, |s, i| async move {
        for j in 0..8 {
            s.append_audit(&audit(j, &format!("load.{i}"), "success"))
                .await?;
            s.insert_grant(&grant(
                &format!("g-{i}-{j}"),
                Some(&format!("m{i}")),
                j,
                None,
            ))
            .await?;
            s.record_login_failure(&format!("k{}", i % 2), t(j)).await?;
            s.remember_jti("iss", &format!("j-{i}-{j}"), t(60), t(0))
                .await?;
        }
        Ok::<_, StoreError>(())
    })
    .await;
    for r in results {
        r.expect("concurrent write failed");
    }
    assert_eq!(
        store.list_audit(1000, Some("load.")).await.unwrap().len(),
        64
    );
    let ids: HashSet<i64> = store
        .list_audit(1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 64);
    for i in 0..8 {
        assert_eq!(
            store
                .list_grants_for_member(&format!("m{i}"))
                .await
                .unwrap()
                .len(),
            8
        );
    }
    assert_eq!(store.count_login_failures("k0", t(0)).await.unwrap(), 32);
}
