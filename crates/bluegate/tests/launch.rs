//! The SMART standalone launch end to end over HTTPS: an HTTP client plays the browser (fills the login,
//! picker and consent forms) and the app (token requests), for every client type.

mod common;

use std::collections::HashMap;

use base64::Engine;
use bluegate_core::jose::{self, Alg, SigningKey};
use bluegate_core::scopes;
use bluegate_store::{ClientRecord, ClientStatus, MemberRecord};
use serde_json::{json, Map, Value};

const REDIRECT: &str = "https://app.example/callback";
const SCOPE: &str = "launch/patient openid fhirUser offline_access patient/ExplanationOfBenefit.read patient/Coverage.read patient/Patient.read";

/// A browser: keeps cookies, never follows redirects, sends our Origin on POST.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    origin: String,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Browser {
    fn new(s: &common::TestServer) -> Self {
        Browser {
            http: common::https_client_no_redirect(&s.pki.path("root-ca.pem")),
            cookies: HashMap::new(),
            origin: s.public_url.clone(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn absorb(&mut self, resp: reqwest::Response) -> Page {
        for sc in resp.headers().get_all("set-cookie") {
            let text = sc.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let location = headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        Page {
            status,
            location,
            body: resp.text().await.unwrap(),
            headers,
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let resp = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(resp).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("origin", &self.origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.absorb(resp).await
    }
}

/// Attributes of every `<input>` in a page.
fn inputs(html: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map(|e| i + e).unwrap_or(rest.len());
        let tag = &rest[i + 6..tag_end];
        let mut attrs = HashMap::new();
        let mut t = tag;
        while let Some(eq) = t.find('=') {
            let name = t[..eq]
                .trim()
                .rsplit(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string();
            let after = &t[eq + 1..];
            let (value, next) = if let Some(stripped) = after.strip_prefix('"') {
                let end = stripped.find('"').unwrap_or(stripped.len());
                (&stripped[..end], &stripped[(end + 1).min(stripped.len())..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            attrs.insert(name, unescape(value));
            t = next;
        }
        // Boolean attributes (checked).
        if tag
            .split_whitespace()
            .any(|w| w == "checked" || w.starts_with("checked"))
        {
            attrs.entry("checked".into()).or_insert_with(String::new);
        }
        out.push(attrs);
        rest = &rest[tag_end..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

fn hidden(html: &str, name: &str) -> String {
    inputs(html)
        .into_iter()
        .find(|a| a.get("name").map(String::as_str) == Some(name))
        .and_then(|a| a.get("value").cloned())
        .unwrap_or_else(|| panic!("no input {name} in page:\n{html}"))
}

fn values_of(html: &str, name: &str) -> Vec<String> {
    inputs(html)
        .into_iter()
        .filter(|a| a.get("name").map(String::as_str) == Some(name))
        .filter_map(|a| a.get("value").cloned())
        .collect()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = format!("verifier-{}-{}", std::process::id(), "x".repeat(40));
    Pkce {
        challenge: bluegate_core::authorize::s256(&verifier),
        verifier,
    }
}

fn authorize_url(
    s: &common::TestServer,
    client_id: &str,
    scope: &str,
    state: &str,
    challenge: Option<&str>,
) -> String {
    let mut u = url::Url::parse(&s.url("/oauth/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("aud", &s.fhir_base)
            .append_pair("nonce", "nonce-123");
        if let Some(c) = challenge {
            q.append_pair("code_challenge", c)
                .append_pair("code_challenge_method", "S256");
        }
    }
    u.to_string()
}

async fn add_member(
    s: &common::TestServer,
    username: &str,
    patients: &[&str],
    fhir_user: &str,
) -> MemberRecord {
    let m = MemberRecord {
        id: format!("member-{username}"),
        username: username.to_string(),
        password_hash: bluegate_server::passwords::hash("correct horse battery").unwrap(),
        fhir_user: Some(fhir_user.to_string()),
        patients: patients.iter().map(|p| p.to_string()).collect(),
        disabled: false,
        created_at: time::OffsetDateTime::now_utc(),
    };
    s.running.state.store.insert_member(&m).await.unwrap();
    m
}

async fn add_client(
    s: &common::TestServer,
    id: &str,
    method: &str,
    secret: Option<&str>,
    extra: Value,
) -> ClientRecord {
    let now = time::OffsetDateTime::now_utc();
    let mut metadata = json!({
        "client_name": format!("App {id}"),
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": method,
        "scope": bluegate_core::discovery::scopes_supported().join(" "),
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut metadata, extra) {
        m.extend(e);
    }
    let c = ClientRecord {
        client_id: id.to_string(),
        status: ClientStatus::Active,
        community: None,
        iss: None,
        secret_hash: secret.map(bluegate_core::secrets::hash_client_secret),
        metadata,
        is_resource_server: false,
        created_at: now,
        updated_at: now,
    };
    s.running.state.store.insert_client(&c).await.unwrap();
    c
}

/// Sign in and consent; returns the redirect back to the app.
async fn launch(
    b: &mut Browser,
    s: &common::TestServer,
    url: &str,
    user: &str,
    patient: Option<&str>,
    untick: &[&str],
) -> String {
    let page = b.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let txn = hidden(&page.body, "txn");
    let csrf = hidden(&page.body, "csrf");
    let mut page = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", user),
                ("password", "correct horse battery"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    if let Some(p) = patient {
        let choices = values_of(&page.body, "patient");
        assert!(
            choices.len() >= 2,
            "expected a patient picker: {}",
            page.body
        );
        let txn = hidden(&page.body, "txn");
        page = b
            .post(
                &s.url("/oauth/patient"),
                &[("patient", p), ("txn", &txn), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let offered = values_of(&page.body, "scope");
    assert!(!offered.is_empty(), "no consent form: {}", page.body);
    let txn = hidden(&page.body, "txn");
    let mut form: Vec<(&str, &str)> = vec![("txn", &txn), ("csrf", &csrf), ("decision", "allow")];
    let patient_field = inputs(&page.body)
        .into_iter()
        .find(|a| a.get("name").map(String::as_str) == Some("patient"))
        .and_then(|a| a.get("value").cloned());
    if let Some(p) = &patient_field {
        form.push(("patient", p));
    }
    for sc in &offered {
        if !untick.contains(&sc.as_str()) {
            form.push(("scope", sc));
        }
    }
    let page = b.post(&s.url("/oauth/consent"), &form).await;
    assert_eq!(page.status, 302, "{}", page.body);
    page.location.unwrap()
}

async fn token_request(
    s: &common::TestServer,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = s
        .client
        .post(s.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((u, p)) = basic {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn verify_with_jwks(s: &common::TestServer, token: &str) -> Value {
    let jwks: Value = s
        .client
        .get(s.url("/oauth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parsed = jose::parse_compact(token, &Alg::ALL).unwrap();
    let kid = parsed.header().kid.clone().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid published")
        .clone();
    Value::Object(parsed.verify_with_jwk(&jwk).unwrap().into_claims())
}

#[tokio::test]
async fn public_client_full_launch_refresh_introspect_revoke() {
    public_flow(common::start_server("").await).await;
}

#[tokio::test]
async fn public_client_full_launch_refresh_introspect_revoke_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    public_flow(common::start_server(&db).await).await;
}

async fn public_flow(s: common::TestServer) {
    add_member(&s, "alice", &["pat-alice"], "Patient/pat-alice").await;
    add_client(&s, "public-app", "none", None, json!({})).await;
    let mut b = Browser::new(&s);
    let p = pkce();
    let back = launch(
        &mut b,
        &s,
        &authorize_url(&s, "public-app", SCOPE, "st-1", Some(&p.challenge)),
        "alice",
        None,
        &[],
    )
    .await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    let code = query_param(&back, "code").unwrap();

    // A wrong verifier, and a verifier equal to the challenge, are refused without consuming... the code is
    // single use, so test those on separate codes below; here the right one.
    let (status, tok, headers) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "public-app"),
            ("code_verifier", &p.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["patient"], "pat-alice");
    assert!(tok["expires_in"].as_i64().unwrap() > 0);
    let granted = tok["scope"].as_str().unwrap();
    for sc in SCOPE.split_whitespace() {
        assert!(
            granted.split_whitespace().any(|g| g == sc),
            "{sc} not granted: {granted}"
        );
    }
    // The access token is an ES256 JWT for the FHIR base, signed by a published key.
    let at = tok["access_token"].as_str().unwrap();
    let claims = verify_with_jwks(&s, at).await;
    assert_eq!(claims["aud"], json!(s.fhir_base));
    assert_eq!(claims["iss"], json!(s.fhir_base));
    assert_eq!(claims["patient"], "pat-alice");
    assert_eq!(claims["client_id"], "public-app");
    // The id_token: RS256, aud = client, nonce, fhirUser absolute.
    let id = tok["id_token"].as_str().unwrap();
    assert_eq!(
        jose::parse_compact(id, &Alg::ALL).unwrap().header().alg,
        Alg::RS256
    );
    let idc = verify_with_jwks(&s, id).await;
    assert_eq!(idc["aud"], "public-app");
    assert_eq!(idc["iss"], json!(s.fhir_base));
    assert_eq!(idc["nonce"], "nonce-123");
    assert_eq!(
        idc["fhirUser"],
        json!(format!("{}/Patient/pat-alice", s.fhir_base))
    );
    assert_eq!(idc["sub"], "member-alice");

    // The code is single use; its replay revokes what it issued.
    let (status, err, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "public-app"),
            ("code_verifier", &p.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
    let intro = introspect(&s, at, "public-app").await;
    assert_eq!(
        intro,
        json!({"active": false}),
        "tokens of a replayed code still active"
    );

    // A second launch: the consent is remembered, so no consent page; new tokens.
    let p2 = pkce();
    let page = b
        .get(&authorize_url(
            &s,
            "public-app",
            SCOPE,
            "st-2",
            Some(&p2.challenge),
        ))
        .await;
    assert_eq!(
        page.status, 302,
        "remembered consent and session should skip straight back: {}",
        page.body
    );
    let code = query_param(&page.location.unwrap(), "code").unwrap();
    let (status, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "public-app"),
            ("code_verifier", &p2.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    let at = tok["access_token"].as_str().unwrap().to_string();
    let rt = tok["refresh_token"].as_str().unwrap().to_string();
    s.running
        .state
        .store
        .put_resource(
            r#"{"resourceType":"Patient","id":"pat-alice"}"#,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let read_alice = |token: String| {
        s.client
            .get(format!("{}/Patient/pat-alice", s.fhir_base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(read_alice(at.clone()).await.unwrap().status(), 200);

    let intro = introspect(&s, &at, "public-app").await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["patient"], "pat-alice");
    assert_eq!(intro["client_id"], "public-app");
    assert_eq!(
        introspect(&s, &at, "someone-else").await["error"],
        "invalid_client"
    );

    // Refresh rotates; narrowing works; widening does not; reuse revokes the grant.
    let (status, r1, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "public-app"),
            ("scope", "patient/Patient.read offline_access"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{r1}");
    assert_eq!(r1["scope"], "patient/Patient.read offline_access");
    assert_eq!(r1["patient"], "pat-alice");
    let rt2 = r1["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt);
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("client_id", "public-app"),
            ("scope", "patient/Patient.read user/Patient.read"),
        ],
        None,
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_scope")));
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "public-app"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "reused refresh token accepted"
    );
    let (status, _, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("client_id", "public-app"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400, "grant not revoked after refresh-token reuse");
    assert_eq!(introspect(&s, &at, "public-app").await["active"], false);
    assert_eq!(
        read_alice(at.clone()).await.unwrap().status(),
        401,
        "a token of the revoked grant still opens the FHIR API"
    );
    let audit = common::audit_events(
        &s.running.state.store,
        &[
            "login.success",
            "consent.granted",
            "code.issued",
            "token.issued",
            "token.refreshed",
            "refresh.reuse_detected",
            "code.replayed",
        ],
    )
    .await;
    let names: Vec<&str> = audit.iter().map(|e| e.event.event.as_str()).collect();
    for n in [
        "login.success",
        "consent.granted",
        "code.issued",
        "token.issued",
        "token.refreshed",
        "refresh.reuse_detected",
        "code.replayed",
    ] {
        assert!(names.contains(&n), "{n} not audited: {names:?}");
    }
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains(&at) && !text.contains(&rt),
        "a token reached the audit log"
    );
    s.stop().await;
}

async fn introspect(s: &common::TestServer, token: &str, client_id: &str) -> Value {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("token", token), ("client_id", client_id)])
        .finish();
    s.client
        .post(s.url("/oauth/introspect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn confidential_client_two_patients_unticked_scopes_and_revocation() {
    confidential_flow(common::start_server("").await).await;
}

#[tokio::test]
async fn confidential_client_two_patients_unticked_scopes_and_revocation_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    confidential_flow(common::start_server(&db).await).await;
}

async fn confidential_flow(s: common::TestServer) {
    add_member(&s, "parent", &["kid-1", "kid-2"], "RelatedPerson/parent-1").await;
    let secret = "a-very-long-client-secret-of-forty-chars!!";
    add_client(
        &s,
        "conf-app",
        "client_secret_basic",
        Some(secret),
        json!({}),
    )
    .await;
    let mut b = Browser::new(&s);
    // Confidential clients may omit PKCE (smart.md decision 1).
    let back = launch(
        &mut b,
        &s,
        &authorize_url(&s, "conf-app", SCOPE, "st", None),
        "parent",
        Some("kid-2"),
        &["patient/Coverage.read", "offline_access"],
    )
    .await;
    let code = query_param(&back, "code").unwrap();
    // Wrong secret: 401 with WWW-Authenticate.
    let (status, e, headers) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        Some(("conf-app", "wrong-secret")),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
    assert!(headers.get("www-authenticate").is_some());
    let (status, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        Some(("conf-app", secret)),
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["patient"], "kid-2");
    let scope = tok["scope"].as_str().unwrap();
    assert!(
        !scope.contains("patient/Coverage.read") && !scope.contains("offline_access"),
        "unticked scope granted: {scope}"
    );
    assert!(scope.contains("patient/ExplanationOfBenefit.read"));
    assert!(
        tok.get("refresh_token").is_none(),
        "refresh token without offline_access"
    );
    let idc = jwt_claims(tok["id_token"].as_str().unwrap());
    assert_eq!(
        idc["fhirUser"],
        json!(format!("{}/RelatedPerson/parent-1", s.fhir_base))
    );
    // The token opens the FHIR API for the chosen child only.
    let kid = tok["patient"].as_str().unwrap().to_string();
    let eobs: Vec<String> = ["kid-1", "kid-2"]
        .iter()
        .map(|k| {
            json!({"resourceType": "ExplanationOfBenefit", "id": format!("eob-{k}"),
                   "status": "active", "patient": {"reference": format!("Patient/{k}")}})
            .to_string()
        })
        .collect();
    s.running
        .state
        .store
        .put_batch(&eobs, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let at = tok["access_token"].as_str().unwrap();
    let fhir_get = |path: &str| {
        s.client
            .get(format!("{}/{path}", s.fhir_base))
            .bearer_auth(at)
            .send()
    };
    let bundle: Value = fhir_get("ExplanationOfBenefit")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![format!("eob-{kid}")], "{bundle}");
    // Revocation of the access token reaches introspection and the FHIR API at once.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("token", at)])
        .finish();
    let resp = s
        .client
        .post(s.url("/oauth/revoke"))
        .basic_auth("conf-app", Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("token", at)])
        .finish();
    let intro: Value = s
        .client
        .post(s.url("/oauth/introspect"))
        .basic_auth("conf-app", Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro, json!({"active": false}));
    let resp = fhir_get("ExplanationOfBenefit").await.unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a revoked token still opens the FHIR API"
    );
    // Picking a patient the member may not act for is refused.
    let mut b2 = Browser::new(&s);
    let page = b2
        .get(&authorize_url(&s, "conf-app", SCOPE, "st", None))
        .await;
    let txn = hidden(&page.body, "txn");
    let csrf = hidden(&page.body, "csrf");
    let page = b2
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "parent"),
                ("password", "correct horse battery"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    let txn = hidden(&page.body, "txn");
    let page = b2
        .post(
            &s.url("/oauth/patient"),
            &[
                ("patient", "someone-elses-kid"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn token_endpoint_negative_cases() {
    let s = common::start_server("").await;
    add_member(&s, "bob", &["pat-bob"], "Patient/pat-bob").await;
    add_client(&s, "pub", "none", None, json!({})).await;
    add_client(&s, "other", "none", None, json!({})).await;
    let mut b = Browser::new(&s);
    let fresh_code = |pk: &Pkce| {
        let url = authorize_url(&s, "pub", SCOPE, "s", Some(&pk.challenge));
        async move { url }
    };
    let mut codes = Vec::new();
    for _ in 0..5 {
        let pk = pkce();
        let url = fresh_code(&pk).await;
        let page = b.get(&url).await;
        let loc = if page.status == 302 {
            page.location.unwrap()
        } else {
            let txn = hidden(&page.body, "txn");
            let csrf = hidden(&page.body, "csrf");
            let page = b
                .post(
                    &s.url("/oauth/login"),
                    &[
                        ("username", "bob"),
                        ("password", "correct horse battery"),
                        ("txn", &txn),
                        ("csrf", &csrf),
                    ],
                )
                .await;
            let txn = hidden(&page.body, "txn");
            let mut form = vec![
                ("txn", txn.as_str()),
                ("csrf", csrf.as_str()),
                ("decision", "allow"),
            ];
            let offered = values_of(&page.body, "scope");
            for sc in &offered {
                form.push(("scope", sc));
            }
            let page = b.post(&s.url("/oauth/consent"), &form).await;
            page.location.unwrap()
        };
        codes.push((query_param(&loc, "code").unwrap(), pk));
    }
    let (c0, p0) = &codes[0];
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![(
        "verifier equals challenge",
        vec![
            ("grant_type", "authorization_code"),
            ("code", c0),
            ("redirect_uri", REDIRECT),
            ("client_id", "pub"),
            ("code_verifier", &p0.challenge),
        ],
        "invalid_grant",
    )];
    for (name, form, expected) in cases {
        let (status, e, _) = token_request(&s, &form, None).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some(expected)),
            "{name}: {e}"
        );
    }
    let (c1, p1) = &codes[1];
    let (_, e, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", c1),
            ("redirect_uri", &format!("{REDIRECT}/")),
            ("client_id", "pub"),
            ("code_verifier", &p1.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(
        e["error"], "invalid_grant",
        "trailing-slash redirect_uri: {e}"
    );
    let (c2, p2) = &codes[2];
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", c2),
            ("redirect_uri", REDIRECT),
            ("client_id", "other"),
            ("code_verifier", &p2.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "another client's code: {e}"
    );
    let (c3, _) = &codes[3];
    let (_, e, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", c3),
            ("redirect_uri", REDIRECT),
            ("client_id", "pub"),
        ],
        None,
    )
    .await;
    assert_eq!(e["error"], "invalid_request", "missing verifier: {e}");
    // Malformed requests.
    let (c4, p4) = &codes[4];
    type Bad<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let bad: Vec<Bad> = vec![
        (
            vec![("grant_type", "password"), ("client_id", "pub")],
            400,
            "unsupported_grant_type",
        ),
        (vec![("client_id", "pub")], 400, "invalid_request"),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("grant_type", "authorization_code"),
                ("client_id", "pub"),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", c4),
                ("redirect_uri", REDIRECT),
                ("client_id", "nobody"),
                ("code_verifier", &p4.verifier),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", "not-a-code"),
                ("redirect_uri", REDIRECT),
                ("client_id", "pub"),
                ("code_verifier", &p4.verifier),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", c4),
                ("redirect_uri", REDIRECT),
                ("client_id", "pub"),
                ("client_secret", "x"),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", c4),
                ("client_id", "pub"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "a.b.c"),
            ],
            401,
            "invalid_client",
        ),
    ];
    for (form, status, error) in bad {
        let (st, e, _) = token_request(&s, &form, None).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (status, Some(error)),
            "{form:?}: {e}"
        );
    }
    // Basic and assertion together.
    let (st, e, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", c4),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", "a.b.c"),
        ],
        Some(("pub", "x")),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    // Wrong content type.
    let resp = s
        .client
        .post(s.url("/oauth/token"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn authorize_errors_and_page_protections() {
    let s = common::start_server("").await;
    add_member(&s, "carol", &["pat-carol"], "Patient/pat-carol").await;
    add_client(&s, "pub", "none", None, json!({})).await;
    let mut b = Browser::new(&s);
    let p = pkce();
    // Unknown client and unregistered redirect URIs: an error page, never a redirect.
    let page = b
        .get(&authorize_url(&s, "nobody", SCOPE, "s", Some(&p.challenge)))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.location.is_none());
    let bad_redirect =
        authorize_url(&s, "pub", SCOPE, "s", Some(&p.challenge)).replace("callback", "callbacK");
    let page = b.get(&bad_redirect).await;
    assert_eq!((page.status, page.location.is_none()), (400, true));
    // Bad aud: redirected error with state.
    let url = authorize_url(&s, "pub", SCOPE, "s-aud", Some(&p.challenge)).replace(
        &url::form_urlencoded::byte_serialize(s.fhir_base.as_bytes()).collect::<String>(),
        "https%3A%2F%2Fevil.example%2Ffhir",
    );
    let page = b.get(&url).await;
    assert_eq!(page.status, 302);
    let loc = page.location.unwrap();
    assert_eq!(
        query_param(&loc, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&loc, "state").as_deref(), Some("s-aud"));
    // Public client without PKCE.
    let page = b.get(&authorize_url(&s, "pub", SCOPE, "s", None)).await;
    assert_eq!(
        query_param(&page.location.unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    // plain PKCE.
    let page = b
        .get(&authorize_url(&s, "pub", SCOPE, "s", Some(&p.challenge)).replace("S256", "plain"))
        .await;
    assert_eq!(
        query_param(&page.location.unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    // Nothing grantable.
    let page = b
        .get(&authorize_url(
            &s,
            "pub",
            "patient/Foo.write",
            "s",
            Some(&p.challenge),
        ))
        .await;
    assert_eq!(
        query_param(&page.location.unwrap(), "error").as_deref(),
        Some("invalid_scope")
    );

    // The login form without the CSRF token is refused; wrong passwords lock the account after 5 tries,
    // and the message never says whether the user exists.
    let page = b
        .get(&authorize_url(&s, "pub", SCOPE, "s", Some(&p.challenge)))
        .await;
    let txn = hidden(&page.body, "txn");
    let csrf = hidden(&page.body, "csrf");
    let resp = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "carol"),
                ("password", "correct horse battery"),
                ("txn", &txn),
            ],
        )
        .await;
    assert_eq!(resp.status, 403);
    let resp = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "carol"),
                ("password", "correct horse battery"),
                ("txn", &txn),
                ("csrf", "forged-forged-forged-forged"),
            ],
        )
        .await;
    assert_eq!(resp.status, 403);
    let unknown = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "nobody"),
                ("password", "x"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    let wrong = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "carol"),
                ("password", "x"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.status, 401);
    let msg = |body: &str| body.contains("The username or password is not correct.");
    assert!(
        msg(&unknown.body) && msg(&wrong.body),
        "{}\n----\n{}",
        unknown.body,
        wrong.body
    );
    for _ in 0..4 {
        b.post(
            &s.url("/oauth/login"),
            &[
                ("username", "carol"),
                ("password", "x"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    }
    let locked = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "carol"),
                ("password", "correct horse battery"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(
        locked.status, 429,
        "account not locked after repeated failures"
    );
    // Deny: access_denied with state.
    add_member(&s, "dave", &["pat-dave"], "Patient/pat-dave").await;
    let mut b = Browser::new(&s);
    let page = b
        .get(&authorize_url(
            &s,
            "pub",
            SCOPE,
            "s-deny",
            Some(&p.challenge),
        ))
        .await;
    let txn = hidden(&page.body, "txn");
    let csrf = hidden(&page.body, "csrf");
    let page = b
        .post(
            &s.url("/oauth/login"),
            &[
                ("username", "dave"),
                ("password", "correct horse battery"),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    let txn = hidden(&page.body, "txn");
    let page = b
        .post(
            &s.url("/oauth/consent"),
            &[("txn", &txn), ("csrf", &csrf), ("decision", "deny")],
        )
        .await;
    let loc = page.location.unwrap();
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("s-deny"));
    // A tampered transaction is refused.
    let page = b
        .post(
            &s.url("/oauth/consent"),
            &[
                ("txn", &format!("{txn}x")),
                ("csrf", &csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    s.stop().await;
}

fn assertion(
    key: &SigningKey,
    x5c: Option<&[String]>,
    client_id: &str,
    aud: &str,
    jti: &str,
    extra: Value,
) -> String {
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut c = json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": t, "exp": t + 300, "jti": jti});
    if let (Value::Object(m), Value::Object(e)) = (&mut c, extra) {
        m.extend(e);
    }
    let mut h = Map::new();
    if let Some(x) = x5c {
        h.insert("x5c".into(), json!(x));
    }
    key.sign_compact(&h, &c).unwrap()
}

fn issue_app_cert(s: &common::TestServer, name: &str, uri: &str) -> (SigningKey, Vec<String>) {
    common::run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &s.pki.s(""),
        "--kind",
        "udap-client",
        "--uri",
        uri,
        "--key",
        "rsa",
        "--out",
        &s.pki.s(name),
    ]);
    let key = SigningKey::from_pem(
        Some(Alg::RS256),
        &std::fs::read_to_string(s.pki.path(&format!("{name}-key.pem"))).unwrap(),
    )
    .unwrap();
    let x5c = bluegate_core::certs::pem_certs(
        &std::fs::read(s.pki.path(&format!("{name}-chain.pem"))).unwrap(),
    )
    .unwrap()
    .iter()
    .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
    .collect();
    (key, x5c)
}

async fn udap_register(
    s: &common::TestServer,
    key: &SigningKey,
    x5c: &[String],
    uri: &str,
    grant_types: Value,
    scope: &str,
) -> String {
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut c = json!({"iss": uri, "sub": uri, "aud": s.url("/oauth/register"), "iat": t, "exp": t + 300, "jti": format!("reg-{t}-{uri}"),
        "client_name": "UDAP App", "contacts": ["mailto:dev@app.example"], "grant_types": grant_types,
        "token_endpoint_auth_method": "private_key_jwt", "scope": scope});
    if c["grant_types"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code"))
    {
        c["response_types"] = json!(["code"]);
        c["redirect_uris"] = json!([REDIRECT]);
        c["logo_uri"] = json!("https://app.example/logo.png");
    }
    let mut h = Map::new();
    h.insert("x5c".into(), json!(x5c));
    let statement = key.sign_compact(&h, &c).unwrap();
    let resp = s
        .client
        .post(s.url("/oauth/register"))
        .json(&json!({"software_statement": statement, "udap": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn udap_private_key_jwt_client_launch_and_assertion_rules() {
    udap_flow(common::start_server("").await).await;
}

#[tokio::test]
async fn udap_private_key_jwt_client_launch_and_assertion_rules_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    udap_flow(common::start_server(&db).await).await;
}

async fn udap_flow(s: common::TestServer) {
    add_member(&s, "erin", &["pat-erin"], "Patient/pat-erin").await;
    let uri = "https://udap-app.example/";
    let (key, x5c) = issue_app_cert(&s, "udap-app", uri);
    let client_id = udap_register(
        &s,
        &key,
        &x5c,
        uri,
        json!(["authorization_code", "refresh_token"]),
        SCOPE,
    )
    .await;
    let mut b = Browser::new(&s);
    let back = launch(
        &mut b,
        &s,
        &authorize_url(&s, &client_id, SCOPE, "u", None),
        "erin",
        None,
        &[],
    )
    .await;
    let code = query_param(&back, "code").unwrap();
    let token_ep = s.url("/oauth/token");
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    // Negative assertions first (they do not consume the code).
    let (other_key, _) = issue_app_cert(&s, "other-app", "https://other-app.example/");
    let bad: Vec<(&str, String)> = vec![
        (
            "signed by another key than the x5c leaf",
            assertion(
                &other_key,
                Some(&x5c),
                &client_id,
                &token_ep,
                "n1",
                json!({}),
            ),
        ),
        (
            "wrong audience",
            assertion(
                &key,
                Some(&x5c),
                &client_id,
                "https://elsewhere.example/token",
                "n2",
                json!({}),
            ),
        ),
        (
            "expired",
            assertion(
                &key,
                Some(&x5c),
                &client_id,
                &token_ep,
                "n3",
                json!({"iat": 1000, "exp": 1200}),
            ),
        ),
        (
            "not yet valid",
            assertion(
                &key,
                Some(&x5c),
                &client_id,
                &token_ep,
                "n4",
                json!({"nbf": time::OffsetDateTime::now_utc().unix_timestamp() + 3600}),
            ),
        ),
        (
            "no x5c",
            assertion(&key, None, &client_id, &token_ep, "n5", json!({})),
        ),
    ];
    for (name, a) in bad {
        let (status, e, _) = token_request(
            &s,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_assertion_type", jwt_bearer),
                ("client_assertion", &a),
                ("udap", "1"),
            ],
            None,
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{name}: {e}"
        );
    }
    let good = assertion(&key, Some(&x5c), &client_id, &token_ep, "good-1", json!({}));
    let (status, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &good),
            ("udap", "1"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["patient"], "pat-erin");
    // The same assertion again is a replay.
    let rt = tok["refresh_token"].as_str().unwrap();
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &good),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed assertion: {e}"
    );
    let fresh = assertion(&key, Some(&x5c), &client_id, &token_ep, "good-2", json!({}));
    let (status, r, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &fresh),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    // An assertion spent on a refused request (before any store write took it) cannot be used again.
    let spent = assertion(
        &key,
        Some(&x5c),
        &client_id,
        &token_ep,
        "spent-1",
        json!({}),
    );
    let refresh_with = |a: &str, rt: &str| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), rt.to_string()),
            ("client_assertion_type".to_string(), jwt_bearer.to_string()),
            ("client_assertion".to_string(), a.to_string()),
            (
                "scope".to_string(),
                "patient/Patient.rs not-granted".to_string(),
            ),
        ]
    };
    let rt2 = r["refresh_token"].as_str().unwrap();
    for (expected, form) in [
        ((400, Some("invalid_scope")), refresh_with(&spent, rt2)),
        ((401, Some("invalid_client")), refresh_with(&spent, rt2)),
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, e, _) = token_request(&s, &form, None).await;
        assert_eq!((status, e["error"].as_str()), expected, "{e}");
    }
    s.stop().await;
}

#[tokio::test]
async fn smart_asymmetric_client_and_b2b_client_credentials() {
    asym_b2b_flow(common::start_server("").await).await;
}

#[tokio::test]
async fn smart_asymmetric_client_and_b2b_client_credentials_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    asym_b2b_flow(common::start_server(&db).await).await;
}

async fn asym_b2b_flow(s: common::TestServer) {
    add_member(&s, "fay", &["pat-fay"], "Patient/pat-fay").await;
    let key = SigningKey::generate(Alg::ES384).unwrap();
    add_client(
        &s,
        "asym-app",
        "private_key_jwt",
        None,
        json!({"jwks": {"keys": [key.public_jwk()]}}),
    )
    .await;
    let mut b = Browser::new(&s);
    let back = launch(
        &mut b,
        &s,
        &authorize_url(&s, "asym-app", SCOPE, "a", None),
        "fay",
        None,
        &[],
    )
    .await;
    let code = query_param(&back, "code").unwrap();
    let token_ep = s.url("/oauth/token");
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let a = assertion(&key, None, "asym-app", &token_ep, "asym-1", json!({}));
    let (status, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &a),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tok}");

    // B2B: a UDAP client registered for client_credentials gets a system-level token.
    let uri = "https://b2b-app.example/";
    let (bkey, x5c) = issue_app_cert(&s, "b2b-app", uri);
    let client_id = udap_register(
        &s,
        &bkey,
        &x5c,
        uri,
        json!(["client_credentials"]),
        "system/ExplanationOfBenefit.read system/Coverage.rs",
    )
    .await;
    let b2b = json!({"extensions": {"hl7-b2b": {"version": "1", "organization_id": "https://org.example/", "purpose_of_use": ["urn:oid:2.16.840.1.113883.5.8#TREAT"]}}});
    let a = assertion(&bkey, Some(&x5c), &client_id, &token_ep, "b2b-1", b2b);
    let (status, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/ExplanationOfBenefit.read"),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &a),
            ("udap", "1"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["scope"], "system/ExplanationOfBenefit.read");
    assert!(tok.get("refresh_token").is_none() && tok.get("patient").is_none());
    // A malformed hl7-b2b extension is refused.
    let a = assertion(
        &bkey,
        Some(&x5c),
        &client_id,
        &token_ep,
        "b2b-2",
        json!({"extensions": {"hl7-b2b": {"version": "2"}}}),
    );
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/ExplanationOfBenefit.read"),
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &a),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400, "{e}");
    // The B2B client cannot use the authorization code grant.
    let (status, e, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", REDIRECT),
            ("client_assertion_type", jwt_bearer),
            (
                "client_assertion",
                &assertion(&bkey, Some(&x5c), &client_id, &token_ep, "b2b-3", json!({})),
            ),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{e}"
    );
    let _ = scopes::MAX_SCOPE_LEN;
    s.stop().await;
}

#[tokio::test]
async fn account_page_lists_and_revokes_app_access() {
    let s = common::start_server("").await;
    add_member(&s, "ivy", &["pat-ivy"], "Patient/pat-ivy").await;
    add_client(&s, "acct-app", "none", None, json!({})).await;
    let mut b = Browser::new(&s);
    let p = pkce();
    let back = launch(
        &mut b,
        &s,
        &authorize_url(&s, "acct-app", SCOPE, "st", Some(&p.challenge)),
        "ivy",
        None,
        &[],
    )
    .await;
    let code = query_param(&back, "code").unwrap();
    let (_, tok, _) = token_request(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "acct-app"),
            ("code_verifier", &p.verifier),
        ],
        None,
    )
    .await;
    let rt = tok["refresh_token"].as_str().unwrap().to_string();
    let at = tok["access_token"].as_str().unwrap().to_string();

    // A fresh browser must sign in first; wrong credentials are refused.
    let mut other = Browser::new(&s);
    let page = other.get(&s.url("/account/apps")).await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf");
    let page = other
        .post(
            &s.url("/account/login"),
            &[("username", "ivy"), ("password", "wrong"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, 401);
    let page = other
        .post(
            &s.url("/account/login"),
            &[
                ("username", "ivy"),
                ("password", "correct horse battery"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("App acct-app"), "{}", page.body);
    let grant_id = hidden(&page.body, "grant_id");
    // Revoking needs the CSRF token.
    let page = other
        .post(&s.url("/account/apps/revoke"), &[("grant_id", &grant_id)])
        .await;
    assert_eq!(page.status, 403);
    let page = other
        .post(
            &s.url("/account/apps/revoke"),
            &[("grant_id", &grant_id), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Access revoked."), "{}", page.body);
    assert!(
        !page.body.contains("App acct-app"),
        "revoked app still listed"
    );
    // The app's tokens are dead, and the next launch asks for consent again.
    assert_eq!(introspect(&s, &at, "acct-app").await["active"], false);
    let (status, _, _) = token_request(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "acct-app"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400);
    let p2 = pkce();
    let page = b
        .get(&authorize_url(
            &s,
            "acct-app",
            SCOPE,
            "st2",
            Some(&p2.challenge),
        ))
        .await;
    assert_eq!(
        page.status, 200,
        "consent should be asked again after revocation"
    );
    assert!(!values_of(&page.body, "scope").is_empty());
    s.stop().await;
}
