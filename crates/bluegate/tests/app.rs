//! `bluegate app discover` against a real server: verified metadata, and refusal of metadata that does not
//! verify against the app's anchors.

mod common;

use serde_json::Value;

async fn app(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::bin())
            .args(&args)
            .output()
            .expect("runs")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn discover_verifies_signed_metadata_and_refuses_what_does_not_verify() {
    let s = common::start_server("").await;
    let root = s.pki.s("root-ca.pem");
    let out = app(vec![
        "app".into(),
        "discover".into(),
        s.fhir_base.clone(),
        "--ca".into(),
        root.clone(),
        "--trust-anchor".into(),
        root.clone(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata_verified"], true);
    assert_eq!(v["token_endpoint"], s.url("/oauth/token").as_str());
    assert_eq!(
        v["registration_endpoint"],
        s.url("/oauth/register").as_str()
    );

    // Anchors of another community: refused, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    common::run_ok(&[
        "pki",
        "community",
        "--out",
        other.to_str().unwrap(),
        "--name",
        "Other",
    ]);
    let other_root = other.join("root-ca.pem").to_str().unwrap().to_string();
    let out = app(vec![
        "app".into(),
        "discover".into(),
        s.fhir_base.clone(),
        "--ca".into(),
        root.clone(),
        "--trust-anchor".into(),
        other_root.clone(),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not verify"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // No anchors at all: refused.
    let out = app(vec![
        "app".into(),
        "discover".into(),
        s.fhir_base.clone(),
        "--ca".into(),
        root.clone(),
    ])
    .await;
    assert!(!out.status.success());
    // Explicit opt-out: accepted, and the reason is reported.
    let out = app(vec![
        "app".into(),
        "discover".into(),
        s.fhir_base.clone(),
        "--ca".into(),
        root.clone(),
        "--trust-anchor".into(),
        other_root,
        "--insecure-skip-metadata-verification".into(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata_verified"], false);
    assert!(
        v["verification_error"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{v}"
    );
    // A server whose TLS certificate is not trusted is refused before anything is read.
    let out = app(vec![
        "app".into(),
        "discover".into(),
        s.fhir_base.clone(),
        "--trust-anchor".into(),
        root,
    ])
    .await;
    assert!(!out.status.success());
    s.stop().await;
}
