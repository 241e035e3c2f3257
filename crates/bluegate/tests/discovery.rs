//! Discovery documents over real HTTPS, checked field by field; `signed_metadata` is verified with
//! openssl (an implementation independent of the code that signed it).

mod common;

use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

async fn get_json(
    s: &common::TestServer,
    path: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = s
        .client
        .get(s.url(path))
        .header("Origin", "https://app.example")
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn assert_cors_any(headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("*")
    );
}

fn assert_json_ct(headers: &reqwest::header::HeaderMap) {
    let ct = headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
}

#[tokio::test]
async fn smart_configuration_is_complete_and_public() {
    let s = common::start_server("").await;
    let (status, headers, doc) = get_json(&s, "/fhir/.well-known/smart-configuration").await;
    assert_eq!(status, 200);
    assert_json_ct(&headers);
    assert_cors_any(&headers);
    let base = &s.public_url;
    assert_eq!(doc["issuer"], json!(s.fhir_base));
    for key in [
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "management_endpoint",
    ] {
        let url = doc[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            url.starts_with(base.as_str()),
            "{key} = {url} is not absolute under {base}"
        );
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code")));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    let methods = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(
        methods.contains(&json!("client_secret_basic"))
            && methods.contains(&json!("private_key_jwt"))
    );
    let algs = doc["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("RS384")) && algs.contains(&json!("ES384")));
    let caps = doc["capabilities"].as_array().unwrap();
    for c in [
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "sso-openid-connect",
        "context-standalone-patient",
        "permission-offline",
        "permission-patient",
        "permission-user",
    ] {
        assert!(caps.contains(&json!(c)), "capability {c} missing");
    }
    let scopes = doc["scopes_supported"].as_array().unwrap();
    for sc in [
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/ExplanationOfBenefit.read",
        "patient/Coverage.read",
        "patient/Patient.read",
        "patient/Organization.read",
        "patient/Practitioner.read",
        "user/ExplanationOfBenefit.read",
        "user/Coverage.read",
        "user/Patient.read",
        "user/Organization.read",
        "user/Practitioner.read",
    ] {
        assert!(scopes.contains(&json!(sc)), "scope {sc} missing");
    }
    // The OpenID configuration agrees with it.
    let (status, headers, oidc) = get_json(&s, "/fhir/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    assert_cors_any(&headers);
    assert_eq!(oidc["issuer"], doc["issuer"]);
    assert_eq!(oidc["jwks_uri"], doc["jwks_uri"]);
    assert_eq!(oidc["token_endpoint"], doc["token_endpoint"]);
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    s.stop().await;
}

#[tokio::test]
async fn capability_statement_instantiates_c4bb_and_matches_well_known() {
    let s = common::start_server("").await;
    let (status, headers, cs) = get_json(&s, "/fhir/metadata").await;
    assert_eq!(status, 200);
    assert_cors_any(&headers);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(
        cs["instantiates"],
        json!(["http://hl7.org/fhir/us/carin-bb/CapabilityStatement/c4bb"])
    );
    let (_, _, smart) = get_json(&s, "/fhir/.well-known/smart-configuration").await;
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let ext = security["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
        .expect("oauth-uris extension");
    let uris: Vec<(String, String)> = ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_string(),
                e["valueUri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, key) in [
        ("authorize", "authorization_endpoint"),
        ("token", "token_endpoint"),
        ("register", "registration_endpoint"),
        ("manage", "management_endpoint"),
        ("introspect", "introspection_endpoint"),
        ("revoke", "revocation_endpoint"),
    ] {
        let v = uris.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(v.as_deref(), smart[key].as_str(), "oauth-uris {name}");
    }
    s.stop().await;
}

#[tokio::test]
async fn jwks_publishes_rs256_and_es256_keys() {
    let s = common::start_server("").await;
    let (status, headers, jwks) = get_json(&s, "/oauth/jwks").await;
    assert_eq!(status, 200);
    assert_cors_any(&headers);
    let keys = jwks["keys"].as_array().unwrap();
    let rsa = keys
        .iter()
        .find(|k| k["alg"] == "RS256")
        .expect("RS256 key");
    assert_eq!(rsa["kty"], "RSA");
    assert!(rsa["n"].is_string() && rsa["e"].is_string() && rsa["kid"].is_string());
    assert!(rsa.get("d").is_none(), "private part published");
    let ec = keys
        .iter()
        .find(|k| k["alg"] == "ES256")
        .expect("ES256 key");
    assert_eq!(ec["kty"], "EC");
    assert_eq!(ec["crv"], "P-256");
    assert!(ec.get("d").is_none(), "private part published");
    s.stop().await;
}

fn b64url(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url")
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs")
}

#[tokio::test]
async fn udap_metadata_fields_and_signed_metadata_verify_independently() {
    let s = common::start_server("").await;
    let (status, headers, m) = get_json(&s, "/fhir/.well-known/udap").await;
    assert_eq!(status, 200);
    assert_json_ct(&headers);
    assert_cors_any(&headers);
    assert_eq!(m["udap_versions_supported"], json!(["1"]));
    let profiles = m["udap_profiles_supported"].as_array().unwrap();
    assert!(profiles.contains(&json!("udap_dcr")) && profiles.contains(&json!("udap_authn")));
    let grants = m["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!("authorization_code")));
    if grants.contains(&json!("client_credentials")) {
        assert!(profiles.contains(&json!("udap_authz")));
        assert!(m["udap_authorization_extensions_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("hl7-b2b")));
    }
    assert!(m["udap_authorization_extensions_supported"].is_array());
    assert!(m["udap_authorization_extensions_required"].is_array());
    assert!(m["udap_certifications_supported"].is_array());
    assert!(m["scopes_supported"].is_array());
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    for key in [
        "token_endpoint_auth_signing_alg_values_supported",
        "registration_endpoint_jwt_signing_alg_values_supported",
    ] {
        assert!(
            m[key].as_array().unwrap().contains(&json!("RS256")),
            "{key}"
        );
    }
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
    ] {
        assert!(m[key].as_str().unwrap().starts_with(&s.public_url), "{key}");
    }

    // signed_metadata: decode by hand, verify with openssl.
    let jwt = m["signed_metadata"].as_str().expect("signed_metadata");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
    assert_eq!(header["alg"], "RS256");
    let x5c = header["x5c"].as_array().expect("x5c");
    assert!(!x5c.is_empty());
    assert_eq!(claims["iss"], json!(s.fhir_base));
    assert_eq!(claims["sub"], claims["iss"]);
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > iat && exp - iat <= 365 * 24 * 3600);
    assert!(claims["jti"]
        .as_str()
        .map(|j| j.len() >= 16)
        .unwrap_or(false));
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
    ] {
        assert_eq!(
            claims[key], m[key],
            "signed {key} differs from the plain document"
        );
    }

    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut pems = Vec::new();
    for (i, c) in x5c.iter().enumerate() {
        // x5c is standard base64 (not base64url) DER.
        let der = base64::engine::general_purpose::STANDARD
            .decode(c.as_str().unwrap())
            .expect("x5c is standard base64");
        let name = format!("c{i}.der");
        std::fs::write(dir.join(&name), der).unwrap();
        let out = openssl(
            dir,
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                &name,
                "-out",
                &format!("c{i}.pem"),
            ],
        );
        assert!(out.status.success());
        pems.push(format!("c{i}.pem"));
    }
    // Chain: leaf -> (intermediates in x5c) -> the community's root, and nothing else.
    let untrusted: String = pems[1..]
        .iter()
        .map(|p| std::fs::read_to_string(dir.join(p)).unwrap())
        .collect();
    std::fs::write(dir.join("untrusted.pem"), untrusted).unwrap();
    let root = s.pki.s("root-ca.pem");
    let mut args = vec!["verify", "-CAfile", root.as_str()];
    if pems.len() > 1 {
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("c0.pem");
    let out = openssl(dir, &args);
    assert!(
        out.status.success(),
        "chain does not verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Leaf SAN carries the FHIR base.
    let out = openssl(
        dir,
        &["x509", "-in", "c0.pem", "-noout", "-ext", "subjectAltName"],
    );
    let san = String::from_utf8_lossy(&out.stdout);
    assert!(san.contains(&format!("URI:{}", s.fhir_base)), "SAN: {san}");
    // Signature over header.payload with the leaf key.
    let out = openssl(
        dir,
        &[
            "x509", "-in", "c0.pem", "-noout", "-pubkey", "-out", "pub.pem",
        ],
    );
    assert!(out.status.success());
    std::fs::write(dir.join("input"), format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(dir.join("sig"), b64url(parts[2])).unwrap();
    let out = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "input",
        ],
    );
    assert!(
        out.status.success(),
        "signature does not verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ...and a tampered payload does not.
    std::fs::write(dir.join("input"), format!("{}.{}x", parts[0], parts[1])).unwrap();
    let out = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "input",
        ],
    );
    assert!(!out.status.success(), "openssl accepted a tampered payload");

    // The community parameter: the configured one works, an unknown one gets 204 (udap.md decision 2).
    let resp = s
        .client
        .get(s.url("/fhir/.well-known/udap?community=urn:example:community:test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .client
        .get(s.url("/fhir/.well-known/udap?community=urn:example:nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    s.stop().await;
}

#[tokio::test]
async fn cors_preflight_is_answered_on_discovery() {
    let s = common::start_server("").await;
    for path in [
        "/fhir/.well-known/smart-configuration",
        "/fhir/metadata",
        "/fhir/.well-known/udap",
    ] {
        let resp = s
            .client
            .request(reqwest::Method::OPTIONS, s.url(path))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert_eq!(resp.headers()["access-control-allow-origin"], "*", "{path}");
        let methods = resp.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(methods.contains("GET"), "{path}: {methods}");
    }
    s.stop().await;
}

#[tokio::test]
async fn rotated_keys_stay_published_until_their_tokens_expire() {
    let s = common::start_server("").await;
    let (_, _, before) = get_json(&s, "/oauth/jwks").await;
    let old_es = before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256")
        .unwrap()["kid"]
        .clone();
    let store = s.running.state.store.clone();
    let now = time::OffsetDateTime::now_utc();
    let (retired, active) = bluegate_server::signing::rotate(
        store.as_ref(),
        bluegate_core::jose::Alg::ES256,
        now,
        3600,
    )
    .await
    .unwrap();
    assert_eq!(retired.map(serde_json::Value::String), Some(old_es.clone()));
    s.running
        .state
        .signing
        .reload(store.as_ref(), now)
        .await
        .unwrap();
    let (_, _, after) = get_json(&s, "/oauth/jwks").await;
    let kids: Vec<Value> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&old_es), "retired key dropped too early");
    assert!(kids.contains(&json!(active)), "new key not published");
    // Past publish_until the retired key disappears.
    let later = now + time::Duration::seconds(3601);
    s.running
        .state
        .signing
        .reload(store.as_ref(), later)
        .await
        .unwrap();
    let jwks = s
        .running
        .state
        .signing
        .current()
        .jwks(later.unix_timestamp());
    let kids: Vec<Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(
        !kids.contains(&old_es),
        "retired key still published after its tokens expired"
    );
    s.stop().await;
}
