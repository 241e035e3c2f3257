//! `bluegate-client` against Bluegate over HTTPS for a B2B system: UDAP registration for
//! `client_credentials`, a token with the `hl7-b2b` extension, and refusals the server makes.

mod client_support;
mod common;

use std::sync::Arc;

use bluegate_client::token::{self, B2bContext};
use bluegate_client::{discover, AppIdentity, ClientMetadata, DiscoveryOptions, Error};

#[tokio::test]
async fn b2b_client_credentials_with_hl7_b2b() {
    let s = common::start_server("").await;
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) =
        client_support::app_cert(&s, dir.path(), "https://b2b.example/system", "p256");
    let root = std::fs::read(s.pki.path("root-ca.pem")).unwrap();
    let http = bluegate_client::http::client(Some(&root)).unwrap();
    let anchors = bluegate_core::trust::Community::builder("urn:test")
        .anchors_pem(&root)
        .unwrap()
        .build()
        .unwrap();
    let d = discover(
        &http,
        &s.fhir_base,
        &DiscoveryOptions {
            community: None,
            anchors: Some(&anchors),
            allow_unverified: false,
            now: bluegate_client::now(),
        },
    )
    .await
    .unwrap();
    let identity = Arc::new(AppIdentity::from_files(&chain, &key, None).unwrap());
    let reg = bluegate_client::registration::register(
        &http,
        &d.registration_endpoint().unwrap(),
        &identity,
        &ClientMetadata::client_credentials(
            "B2B system",
            "system/ExplanationOfBenefit.read system/Patient.read",
            vec!["mailto:ops@b2b.example".into()],
        ),
    )
    .await
    .unwrap();
    assert_eq!(reg.http_status, 201);
    assert_eq!(reg.grant_types, vec!["client_credentials".to_string()]);

    let b2b = B2bContext {
        organization_id: "https://b2b.example/org".into(),
        organization_name: Some("B2B Example".into()),
        purpose_of_use: vec!["urn:oid:2.16.840.1.113883.5.8#TREAT".into()],
        subject_name: None,
        subject_id: None,
        subject_role: None,
        consent_policy: vec![],
        consent_reference: vec![],
    };
    let token_endpoint = d.token_endpoint().unwrap();
    let t = token::client_credentials(
        &http,
        &token_endpoint,
        &reg.client_id,
        identity.clone(),
        &b2b,
        "system/ExplanationOfBenefit.read",
    )
    .await
    .unwrap();
    assert!(t.refresh_token.is_none());
    assert!(t
        .scope
        .as_deref()
        .unwrap()
        .contains("system/ExplanationOfBenefit.read"));
    assert!(t.expires_at.unwrap() > bluegate_client::now());

    // The server refuses an assertion signed for another client_id, and says why.
    let e = token::client_credentials(
        &http,
        &token_endpoint,
        "not-a-client",
        identity.clone(),
        &b2b,
        "system/ExplanationOfBenefit.read",
    )
    .await
    .unwrap_err();
    match e {
        Error::Token { error, .. } => assert_eq!(error, "invalid_client"),
        other => panic!("{other:?}"),
    }

    // Cancelled: no more tokens.
    let c = bluegate_client::registration::cancel(
        &http,
        &d.registration_endpoint().unwrap(),
        &identity,
        "B2B system",
        vec!["mailto:ops@b2b.example".into()],
    )
    .await
    .unwrap();
    assert!(c.is_cancelled());
    assert_eq!(c.client_id, reg.client_id);
    let e = token::client_credentials(
        &http,
        &token_endpoint,
        &reg.client_id,
        identity,
        &b2b,
        "system/ExplanationOfBenefit.read",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Token { .. }), "{e:?}");
    s.stop().await;
}
