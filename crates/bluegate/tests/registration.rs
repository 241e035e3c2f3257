//! UDAP Dynamic Client Registration over HTTPS with a test PKI made by `bluegate pki`.

mod common;

use base64::Engine;
use bluegate_core::jose::{Alg, SigningKey};
use serde_json::{json, Map, Value};

struct AppCert {
    key: SigningKey,
    x5c: Vec<String>,
    uri: String,
}

fn issue_client(s: &common::TestServer, name: &str, uri: &str, key: &str, days: &str) -> AppCert {
    let out = common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &s.pki.s(""),
        "--kind",
        "udap-client",
        "--uri",
        uri,
        "--key",
        key,
        "--days",
        days,
        "--out",
        &s.pki.s(name),
    ]);
    let _: Value = serde_json::from_str(&out).unwrap();
    load_client(
        &s.pki.path(&format!("{name}-chain.pem")),
        &s.pki.path(&format!("{name}-key.pem")),
        uri,
        key,
    )
}

fn load_client(
    chain: &std::path::Path,
    key_path: &std::path::Path,
    uri: &str,
    key: &str,
) -> AppCert {
    let alg = if key == "rsa" { Alg::RS256 } else { Alg::ES256 };
    let key = SigningKey::from_pem(Some(alg), &std::fs::read_to_string(key_path).unwrap()).unwrap();
    let ders = bluegate_core::certs::pem_certs(&std::fs::read(chain).unwrap()).unwrap();
    let x5c = ders
        .iter()
        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
        .collect();
    AppCert {
        key,
        x5c,
        uri: uri.to_string(),
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(s: &common::TestServer, app: &AppCert) -> Value {
    let t = now();
    json!({
        "iss": app.uri,
        "sub": app.uri,
        "aud": s.url("/oauth/register"),
        "iat": t,
        "exp": t + 300,
        "jti": format!("jti-{}-{}", t, rand_suffix()),
        "client_name": "Test App",
        "redirect_uris": ["https://app.example/callback"],
        "contacts": ["mailto:dev@app.example"],
        "logo_uri": "https://app.example/logo.png",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "openid fhirUser launch/patient patient/ExplanationOfBenefit.read patient/Coverage.read unknown/Scope.read",
    })
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn sign(app: &AppCert, claims: &Value) -> String {
    let mut header = Map::new();
    header.insert("x5c".into(), json!(app.x5c));
    app.key.sign_compact(&header, claims).unwrap()
}

async fn post(s: &common::TestServer, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = s
        .client
        .post(s.url("/oauth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

async fn register(
    s: &common::TestServer,
    statement: String,
) -> (u16, Value, reqwest::header::HeaderMap) {
    post(s, json!({"software_statement": statement, "udap": "1"})).await
}

/// A token request authenticated with a UDAP client assertion: (status, OAuth error code).
async fn token_attempt(s: &common::TestServer, app: &AppCert, client_id: &str) -> (u16, Value) {
    let t = now();
    let assertion = sign(
        app,
        &json!({"iss": client_id, "sub": client_id, "aud": s.url("/oauth/token"), "iat": t,
                "exp": t + 300, "jti": format!("a-{}", rand_suffix())}),
    );
    let resp = s
        .client
        .post(s.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
            ("udap", "1"),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["error"].clone())
}

#[tokio::test]
async fn rsa_and_ec_clients_register_update_and_cancel() {
    register_update_cancel(common::start_server("").await, "sqlite").await;
}

#[tokio::test]
async fn rsa_and_ec_clients_register_update_and_cancel_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    register_update_cancel(common::start_server(&db).await, "postgres").await;
}

async fn register_update_cancel(s: common::TestServer, backend: &str) {
    assert_eq!(s.running.state.store.backend_name(), backend);
    for (name, key) in [("rsa-app", "rsa"), ("ec-app", "p256")] {
        let app = issue_client(&s, name, &format!("https://{name}.example/"), key, "30");
        let (status, body, headers) = register(&s, sign(&app, &claims(&s, &app))).await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(headers["cache-control"], "no-store");
        let client_id = body["client_id"].as_str().unwrap().to_string();
        assert_eq!(body["client_name"], "Test App");
        assert_eq!(body["token_endpoint_auth_method"], "private_key_jwt");
        assert!(body.get("client_secret").is_none());
        assert!(body["software_statement"].is_string());
        let scope = body["scope"].as_str().unwrap();
        assert!(scope.contains("patient/ExplanationOfBenefit.read"));
        assert!(
            !scope.contains("unknown/Scope.read"),
            "unoffered scope granted: {scope}"
        );

        // Same iss again: 200, same client_id, metadata replaced.
        let mut c = claims(&s, &app);
        c["client_name"] = json!("Renamed App");
        let (status, body, _) = register(&s, sign(&app, &c)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], json!(client_id));
        assert_eq!(body["client_name"], "Renamed App");

        // The client authenticates at the token endpoint (it is not registered for client_credentials,
        // which is refused only after authentication), so this node now holds its record in memory.
        assert_eq!(
            token_attempt(&s, &app, &client_id).await,
            (400, json!("unauthorized_client"))
        );

        // Empty grant_types cancels.
        let mut c = claims(&s, &app);
        c["grant_types"] = json!([]);
        c.as_object_mut().unwrap().remove("response_types");
        let (status, body, _) = register(&s, sign(&app, &c)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_id"], json!(client_id));
        assert_eq!(body["grant_types"], json!([]));
        let client = s
            .running
            .state
            .store
            .get_client(&client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.status, bluegate_store::ClientStatus::Cancelled);
        // A cancellation through this node takes effect on the very next token request.
        assert_eq!(
            token_attempt(&s, &app, &client_id).await,
            (401, json!("invalid_client"))
        );
    }
    // The audit log has the story.
    let events = common::audit_events(
        &s.running.state.store,
        &["client.registered", "client.updated", "client.cancelled"],
    )
    .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.event.as_str()).collect();
    for n in ["client.registered", "client.updated", "client.cancelled"] {
        assert!(names.contains(&n), "{n} not audited: {names:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn client_secret_basic_registration_returns_a_secret_stored_hashed() {
    let s = common::start_server("").await;
    let app = issue_client(&s, "secret-app", "https://secret-app.example/", "rsa", "30");
    let mut c = claims(&s, &app);
    c["token_endpoint_auth_method"] = json!("client_secret_basic");
    let (status, body, _) = register(&s, sign(&app, &c)).await;
    assert_eq!(status, 201, "{body}");
    let secret = body["client_secret"].as_str().expect("client_secret");
    assert!(secret.len() >= 40);
    let client = s
        .running
        .state
        .store
        .get_client(body["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let stored = client.secret_hash.unwrap();
    assert!(!stored.contains(secret));
    assert!(bluegate_core::secrets::verify_client_secret(
        secret, &stored
    ));
    s.stop().await;
}

#[tokio::test]
async fn bad_statements_are_refused_with_the_right_error_and_nothing_stored() {
    let s = common::start_server("").await;
    let app = issue_client(&s, "app", "https://app.example/", "rsa", "30");
    issue_client(&s, "other", "https://other.example/", "rsa", "30");
    let expired = issue_client(&s, "expired", "https://expired.example/", "rsa", "-1");

    // An app from a community the server does not trust.
    let dir = tempfile::tempdir().unwrap();
    let foreign_dir = dir.path().join("foreign");
    common::run_ok(&[
        "pki",
        "community",
        "--out",
        foreign_dir.to_str().unwrap(),
        "--name",
        "Foreign",
    ]);
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        foreign_dir.to_str().unwrap(),
        "--kind",
        "udap-client",
        "--uri",
        "https://foreign.example/",
        "--out",
        foreign_dir.join("app").to_str().unwrap(),
    ]);
    let foreign = load_client(
        &foreign_dir.join("app-chain.pem"),
        &foreign_dir.join("app-key.pem"),
        "https://foreign.example/",
        "rsa",
    );

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let req = |st: String| json!({"software_statement": st, "udap": "1"});
    cases.push((
        "untrusted root",
        req(sign(&foreign, &claims(&s, &foreign))),
        "unapproved_software_statement",
    ));
    cases.push((
        "expired cert",
        req(sign(&expired, &claims(&s, &expired))),
        "unapproved_software_statement",
    ));
    let mut c = claims(&s, &app);
    c["iss"] = json!("https://not-my-san.example/");
    c["sub"] = c["iss"].clone();
    cases.push((
        "wrong SAN",
        req(sign(&app, &c)),
        "invalid_software_statement",
    ));
    // Signed by another key than the x5c leaf.
    let forged = AppCert {
        key: SigningKey::from_pem(
            Some(Alg::RS256),
            &std::fs::read_to_string(s.pki.path("other-key.pem")).unwrap(),
        )
        .unwrap(),
        x5c: app.x5c.clone(),
        uri: app.uri.clone(),
    };
    cases.push((
        "wrong key",
        req(sign(&forged, &claims(&s, &app))),
        "invalid_software_statement",
    ));
    let mut c = claims(&s, &app);
    c["aud"] = json!("https://elsewhere.example/register");
    cases.push((
        "wrong aud",
        req(sign(&app, &c)),
        "invalid_software_statement",
    ));
    let mut c = claims(&s, &app);
    c["exp"] = json!(now() + 3600);
    cases.push((
        "exp too far",
        req(sign(&app, &c)),
        "invalid_software_statement",
    ));
    let mut c = claims(&s, &app);
    c["iat"] = json!(now() - 900);
    c["exp"] = json!(now() - 600);
    cases.push((
        "expired statement",
        req(sign(&app, &c)),
        "invalid_software_statement",
    ));
    let mut c = claims(&s, &app);
    c["redirect_uris"] = json!(["http://app.example/callback"]);
    cases.push(("http redirect", req(sign(&app, &c)), "invalid_redirect_uri"));
    let mut c = claims(&s, &app);
    c["grant_types"] = json!(["authorization_code", "client_credentials"]);
    cases.push((
        "mixed grants",
        req(sign(&app, &c)),
        "invalid_client_metadata",
    ));
    let mut c = claims(&s, &app);
    c.as_object_mut().unwrap().remove("client_name");
    cases.push((
        "no client_name",
        req(sign(&app, &c)),
        "invalid_client_metadata",
    ));
    let mut c = claims(&s, &app);
    c.as_object_mut().unwrap().remove("logo_uri");
    cases.push((
        "no logo_uri",
        req(sign(&app, &c)),
        "invalid_client_metadata",
    ));
    cases.push((
        "no udap",
        json!({"software_statement": sign(&app, &claims(&s, &app))}),
        "invalid_software_statement",
    ));
    cases.push((
        "two segments",
        req("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0".into()),
        "invalid_software_statement",
    ));
    cases.push((
        "four segments",
        req("a.b.c.d".into()),
        "invalid_software_statement",
    ));
    cases.push((
        "alg none",
        req(format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&claims(&s, &app).to_string())
        )),
        "invalid_software_statement",
    ));
    cases.push((
        "HS256",
        req(format!(
            "{}.{}.c2ln",
            b64(&json!({"alg":"HS256","x5c":app.x5c}).to_string()),
            b64(&claims(&s, &app).to_string())
        )),
        "invalid_software_statement",
    ));
    cases.push((
        "x5c garbage",
        req(format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","x5c":["!!!notbase64"]}"#),
            b64(&claims(&s, &app).to_string())
        )),
        "invalid_software_statement",
    ));
    cases.push((
        "statement not a string",
        json!({"software_statement": 42, "udap": "1"}),
        "invalid_software_statement",
    ));

    for (name, body, expected) in cases {
        let (status, resp, _) = post(&s, body).await;
        assert_eq!(status, 400, "{name}: {resp}");
        assert_eq!(resp["error"], expected, "{name}: {resp}");
        assert!(
            resp["error_description"]
                .as_str()
                .map(|d| !d.is_empty())
                .unwrap_or(false),
            "{name}"
        );
    }

    s.stop().await;

    // Unparseable JSON and wrong content type.
    let s2 = common::start_server("").await;
    let resp = s2
        .client
        .post(s2.url("/oauth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(
        s2.running
            .state
            .store
            .list_clients()
            .await
            .unwrap()
            .is_empty(),
        "something was stored"
    );
    s2.stop().await;
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn replayed_statement_is_refused() {
    replay(common::start_server("").await).await;
}

#[tokio::test]
async fn replayed_statement_is_refused_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    replay(common::start_server(&db).await).await;
}

async fn replay(s: common::TestServer) {
    let app = issue_client(&s, "app", "https://app.example/", "p256", "30");
    let statement = sign(&app, &claims(&s, &app));
    let (status, _, _) = register(&s, statement.clone()).await;
    assert_eq!(status, 201);
    let (status, body, _) = register(&s, statement).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_software_statement");
    assert!(body["error_description"].as_str().unwrap().contains("jti"));
    s.stop().await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_once_the_crl_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let fhir_base = format!("https://localhost:{port}/fhir");
    let pki = common::make_pki(dir.path(), &fhir_base);
    let out = common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &pki.s(""),
        "--kind",
        "udap-client",
        "--uri",
        "https://revoked.example/",
        "--key",
        "p256",
        "--out",
        &pki.s("revoked"),
    ]);
    let serial = serde_json::from_str::<Value>(&out).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &pki.s(""),
        "--kind",
        "udap-client",
        "--uri",
        "https://good.example/",
        "--key",
        "p256",
        "--out",
        &pki.s("good"),
    ]);
    common::run_ok(&["pki", "revoke", "--ca-dir", &pki.s(""), "--serial", &serial]);
    common::run_ok(&["pki", "crl", "--ca-dir", &pki.s("")]);
    let config = common::write_config(dir.path(), port, &pki, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "metadata_cert = ",
        "crls = [\"pki/root-ca.crl.pem\", \"pki/intermediate-ca.crl.pem\"]\nmetadata_cert = ",
    );
    std::fs::write(&config, text).unwrap();
    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let running = bluegate_server::serve::start(cfg).await.unwrap();
    let client = common::https_client(&pki.path("root-ca.pem"));
    let url = format!("https://localhost:{port}/oauth/register");
    for (name, uri, expect) in [
        ("revoked", "https://revoked.example/", 400),
        ("good", "https://good.example/", 201),
    ] {
        let app = load_client(
            &pki.path(&format!("{name}-chain.pem")),
            &pki.path(&format!("{name}-key.pem")),
            uri,
            "p256",
        );
        let t = now();
        let c = json!({
            "iss": uri, "sub": uri, "aud": url, "iat": t, "exp": t + 300, "jti": rand_suffix(),
            "client_name": name, "contacts": ["mailto:a@b.example"], "redirect_uris": ["https://app.example/cb"], "logo_uri": "https://app.example/l.png",
            "grant_types": ["authorization_code"], "response_types": ["code"], "token_endpoint_auth_method": "private_key_jwt",
            "scope": "openid",
        });
        let resp = client
            .post(&url)
            .json(&json!({"software_statement": sign(&app, &c), "udap": "1"}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, expect, "{name}: {body}");
        if expect == 400 {
            assert_eq!(body["error"], "unapproved_software_statement");
        }
    }
    running.shutdown(std::time::Duration::from_secs(2)).await;
}

/// A minimal HTTP server on loopback that serves the files of `dir` (GET /name), as a CRL distribution
/// point does. Returns its base URL.
async fn serve_dir(dir: std::path::PathBuf) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let resp = match std::fs::read(dir.join(&path)) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = sock.write_all(&resp).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn crls_are_fetched_from_distribution_points() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let crl_base = serve_dir(pki_dir.clone()).await;
    let port = common::free_port();
    let fhir_base = format!("https://localhost:{port}/fhir");
    let d = pki_dir.to_str().unwrap().to_string();
    common::run_ok(&[
        "pki",
        "community",
        "--out",
        &d,
        "--name",
        "DP Community",
        "--crl-url",
        &crl_base,
        "--force",
    ]);
    let p = |n: &str| pki_dir.join(n).to_str().unwrap().to_string();
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "tls-server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--key",
        "p256",
        "--out",
        &p("tls"),
    ]);
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "udap-server",
        "--uri",
        &fhir_base,
        "--key",
        "rsa",
        "--out",
        &p("metadata"),
    ]);
    let out = common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "udap-client",
        "--uri",
        "https://revoked.example/",
        "--key",
        "p256",
        "--out",
        &p("revoked"),
    ]);
    let serial = serde_json::from_str::<Value>(&out).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "udap-client",
        "--uri",
        "https://good.example/",
        "--key",
        "p256",
        "--out",
        &p("good"),
    ]);
    common::run_ok(&["pki", "revoke", "--ca-dir", &d, "--serial", &serial]);
    common::run_ok(&["pki", "crl", "--ca-dir", &d]);
    // The configuration names no CRL file: the server must fetch them from the distribution points.
    let pki = common::TestPki {
        dir: pki_dir.clone(),
    };
    let config = common::write_config(dir.path(), port, &pki, "");
    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let running = bluegate_server::serve::start(cfg).await.unwrap();
    let client = common::https_client(&pki_dir.join("root-ca.pem"));
    let url = format!("https://localhost:{port}/oauth/register");
    for (name, uri, expect) in [
        ("revoked", "https://revoked.example/", 400),
        ("good", "https://good.example/", 201),
    ] {
        let app = load_client(
            &pki_dir.join(format!("{name}-chain.pem")),
            &pki_dir.join(format!("{name}-key.pem")),
            uri,
            "p256",
        );
        let t = now();
        let c = json!({
            "iss": uri, "sub": uri, "aud": url, "iat": t, "exp": t + 300, "jti": rand_suffix(),
            "client_name": name, "contacts": ["mailto:a@b.example"], "redirect_uris": ["https://app.example/cb"],
            "logo_uri": "https://app.example/l.png", "grant_types": ["authorization_code"], "response_types": ["code"],
            "token_endpoint_auth_method": "private_key_jwt", "scope": "openid",
        });
        let resp = client
            .post(&url)
            .json(&json!({"software_statement": sign(&app, &c), "udap": "1"}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, expect, "{name}: {body}");
        if expect == 400 {
            assert_eq!(body["error"], "unapproved_software_statement", "{body}");
        }
    }
    running.shutdown(std::time::Duration::from_secs(2)).await;
}
