//! The member-facing pages in a real headless Chromium (Debian's `chromium`, driven by Playwright):
//! sign in, untick a scope, allow, come back to the app with a code; and the pages refuse to be framed.
//! Needs `chromium`, `node` and `npm install` in tests/browser (done by .ci/run); without them the test
//! says it skipped, except under `CI=true`, where it fails.

mod common;

use std::path::PathBuf;
use std::process::Command;

use bluegate_store::{ClientRecord, ClientStatus, MemberRecord};
use serde_json::{json, Value};

fn tooling() -> Result<(PathBuf, PathBuf), String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("BG_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no node".into());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core not installed (run npm install in {})",
            dir.display()
        ));
    }
    Ok((dir, chromium))
}

#[tokio::test]
async fn sign_in_and_consent_in_headless_chromium() {
    let (dir, chromium) = match tooling() {
        Ok(t) => t,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("browser test tooling missing in CI: {why}");
            }
            eprintln!("SKIPPED: headless Chromium test ({why})");
            return;
        }
    };
    let s = common::start_server("").await;
    let now = time::OffsetDateTime::now_utc();
    s.running
        .state
        .store
        .insert_member(&MemberRecord {
            id: "member-grace".into(),
            username: "grace".into(),
            password_hash: bluegate_server::passwords::hash("grace-password-123").unwrap(),
            fhir_user: Some("Patient/pat-grace".into()),
            patients: vec!["pat-grace".into()],
            disabled: false,
            created_at: now,
        })
        .await
        .unwrap();
    let redirect = "https://app.example/callback";
    s.running.state.store.insert_client(&ClientRecord {
        client_id: "browser-app".into(),
        status: ClientStatus::Active,
        community: None,
        iss: None,
        secret_hash: None,
        metadata: json!({"client_name": "Browser App", "redirect_uris": [redirect], "grant_types": ["authorization_code"],
                         "token_endpoint_auth_method": "none", "scope": bluegate_core::discovery::scopes_supported().join(" ")}),
        is_resource_server: false,
        created_at: now,
        updated_at: now,
    }).await.unwrap();
    let verifier = "browser-test-verifier-0123456789-abcdefghijklmnop";
    let challenge = bluegate_core::authorize::s256(verifier);
    let mut url = url::Url::parse(&s.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "browser-app")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "launch/patient openid fhirUser patient/ExplanationOfBenefit.read patient/Coverage.read")
        .append_pair("state", "browser-state")
        .append_pair("aud", &s.fhir_base)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let shot = std::env::temp_dir().join("bluegate-consent.png");
    let out = tokio::task::spawn_blocking({
        let url = url.to_string();
        let shot = shot.clone();
        move || {
            Command::new("node")
                .arg("launch.mjs")
                .current_dir(&dir)
                .env("BG_AUTHORIZE_URL", url)
                .env("BG_REDIRECT_PREFIX", "https://app.example/")
                .env("BG_USERNAME", "grace")
                .env("BG_PASSWORD", "grace-password-123")
                .env("BG_UNTICK", "patient/Coverage.read")
                .env("BG_CHROMIUM", chromium)
                .env("BG_SCREENSHOT", shot)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "browser script output: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        result.get("error").is_none(),
        "browser run failed: {result}"
    );
    let scopes = result["scopes"].as_array().unwrap();
    assert!(
        scopes.iter().all(|s| s["checked"] == true),
        "scopes must be ticked by default: {scopes:?}"
    );
    let back = url::Url::parse(result["redirect"].as_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(q.get("state").map(String::as_str), Some("browser-state"));
    let code = q.get("code").expect("code in the redirect");
    assert_eq!(
        result["framedForm"], false,
        "the login page rendered inside a frame"
    );
    // The unticked scope was not granted.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", "browser-app"),
            ("code_verifier", verifier),
        ])
        .finish();
    let tok: Value = s
        .client
        .post(s.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scope = tok["scope"].as_str().unwrap_or_else(|| panic!("{tok}"));
    assert!(
        scope.contains("patient/ExplanationOfBenefit.read")
            && !scope.contains("patient/Coverage.read"),
        "{scope}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_official_smart_js_client_completes_a_standalone_launch() {
    let (dir, chromium) = match tooling() {
        Ok(t) if t.0.join("node_modules/fhirclient").exists() => t,
        Ok(_) | Err(_) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("browser test tooling (chromium, node, playwright-core, fhirclient) missing in CI");
            }
            eprintln!("SKIPPED: fhirclient browser test (tooling missing)");
            return;
        }
    };
    let s = common::start_server("").await;
    let now = time::OffsetDateTime::now_utc();
    s.running
        .state
        .store
        .insert_member(&MemberRecord {
            id: "member-hana".into(),
            username: "hana".into(),
            password_hash: bluegate_server::passwords::hash("hana-password-123").unwrap(),
            fhir_user: Some("Patient/pat-hana".into()),
            patients: vec!["pat-hana".into()],
            disabled: false,
            created_at: now,
        })
        .await
        .unwrap();
    s.running.state.store.insert_client(&ClientRecord {
        client_id: "fhirclient-app".into(),
        status: ClientStatus::Active,
        community: None,
        iss: None,
        secret_hash: None,
        metadata: json!({"client_name": "SMART JS app", "redirect_uris": ["http://localhost:47999/index.html"],
                         "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none",
                         "scope": bluegate_core::discovery::scopes_supported().join(" ")}),
        is_resource_server: false,
        created_at: now,
        updated_at: now,
    }).await.unwrap();
    // The member's data, and another patient's claim that the app must not see.
    let resources: Vec<String> = [
        json!({"resourceType": "Patient", "id": "pat-hana", "name": [{"family": "Hana"}]}),
        json!({"resourceType": "ExplanationOfBenefit", "id": "eob-hana-1", "status": "active",
               "patient": {"reference": "Patient/pat-hana"}}),
        json!({"resourceType": "ExplanationOfBenefit", "id": "eob-other-1", "status": "active",
               "patient": {"reference": "Patient/pat-other"}}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    s.running
        .state
        .store
        .put_batch(&resources, now)
        .await
        .unwrap();
    let iss = s.fhir_base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("fhirclient.mjs")
            .current_dir(&dir)
            .env("BG_ISS", iss)
            .env("BG_CLIENT_ID", "fhirclient-app")
            .env("BG_SCOPE", "launch/patient openid fhirUser patient/Patient.read patient/ExplanationOfBenefit.read")
            .env("BG_USERNAME", "hana")
            .env("BG_PASSWORD", "hana-password-123")
            .env("BG_CHROMIUM", chromium)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "script output: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        result.get("error").is_none(),
        "fhirclient launch failed: {result}"
    );
    assert_eq!(result["patient"], "pat-hana", "{result}");
    assert_eq!(result["patientResource"], "Patient/pat-hana", "{result}");
    assert_eq!(result["eobs"], json!(["eob-hana-1"]), "{result}");
    assert_eq!(result["hasToken"], true);
    assert_eq!(result["hasIdToken"], true);
    assert!(
        result["scope"]
            .as_str()
            .unwrap()
            .contains("patient/ExplanationOfBenefit.read"),
        "{result}"
    );
    s.stop().await;
}
