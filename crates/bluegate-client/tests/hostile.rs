//! The library against a small authorization + FHIR server written here (axum over TLS on loopback). It
//! plays a good server first, then a hostile one: a redirect with the wrong `state`, `id_token`s for
//! another audience or issuer or nonce, a token response without `token_type`, a Bundle `next` link to
//! another host (the token must never reach it), bodies that never end, bad signed metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use bluegate_client::fhir::FhirClient;
use bluegate_client::{
    discover, launch, AppIdentity, AuthorizationRequest, ClientAuth, DiscoveryOptions, Error,
    LoopbackListener, PendingAuthorization, TokenSet,
};
use bluegate_core::discovery::Endpoints;
use bluegate_core::jose::{Alg, SigningKey};
use bluegate_core::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum TokenMode {
    #[default]
    Good,
    NoTokenType,
    IdTokenOtherAudience,
    IdTokenOtherIssuer,
    IdTokenOtherNonce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum NextMode {
    #[default]
    SameBase,
    OtherHost,
    OtherPort,
    PlainHttp,
}

#[derive(Default)]
struct Knobs {
    token: TokenMode,
    next: NextMode,
    forge_state: bool,
    /// Sign the metadata for another base.
    metadata_for_other_base: bool,
    /// FHIR answers 401 to every token (even refreshed ones).
    always_401: bool,
    /// This EOB page answers 500 once.
    fail_page: Option<u32>,
}

#[derive(Default)]
struct Record {
    /// Authorization headers the FHIR endpoints saw.
    fhir_auth: Vec<String>,
    token_forms: Vec<HashMap<String, String>>,
    /// The authorize request's parameters, by code.
    codes: HashMap<String, HashMap<String, String>>,
    access_token: String,
    refresh_token: String,
    counter: u64,
    /// EOB pages requested, in order.
    eob_pages: Vec<u32>,
}

struct Mock {
    base: String,
    ep: Endpoints,
    knobs: Mutex<Knobs>,
    rec: Mutex<Record>,
    id_key: SigningKey,
    meta_key: SigningKey,
    meta_x5c: Vec<String>,
    evil_base: String,
    evil_seen: Arc<Mutex<Vec<Option<String>>>>,
}

struct Fixture {
    mock: Arc<Mock>,
    fhir_base: String,
    root_pem: String,
    http: reqwest::Client,
    identity: Arc<AppIdentity>,
    other_root_pem: String,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn std_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn tls_config(cert: &pki::IssuedCert) -> axum_server::tls_rustls::RustlsConfig {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg))
}

fn oo(status: StatusCode, text: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "login", "diagnostics": text}]})),
    )
        .into_response();
    r.headers_mut()
        .insert("www-authenticate", "Bearer".parse().unwrap());
    r
}

async fn start() -> Fixture {
    let t = time::OffsetDateTime::now_utc();
    let community = pki::create_community(
        "Mock",
        KeyKind::Rsa2048,
        t - time::Duration::hours(1),
        t + time::Duration::days(10),
        None,
    )
    .unwrap();
    let other = pki::create_community(
        "Other",
        KeyKind::P256,
        t - time::Duration::hours(1),
        t + time::Duration::days(10),
        None,
    )
    .unwrap();
    let (listener, port) = std_listener();
    let (evil_listener, evil_port) = std_listener();
    let base = format!("https://localhost:{port}");
    let ep = Endpoints::for_public_url(&base);
    let req = |usage, uris: Vec<String>, key| EndEntityRequest {
        common_name: "mock".into(),
        san_uris: uris,
        dns_names: vec![],
        ip_addresses: vec![],
        key,
        not_before: t - time::Duration::hours(1),
        not_after: t + time::Duration::days(5),
        usage,
    };
    let tls = pki::issue_tls_server(
        &community.intermediate_cert_pem,
        &community.intermediate_key_pem,
        &["localhost".into()],
        &["127.0.0.1".parse().unwrap()],
        KeyKind::P256,
        t - time::Duration::hours(1),
        t + time::Duration::days(5),
    )
    .unwrap();
    let meta = community
        .issue_end_entity(&req(
            EndEntityUsage::UdapServer,
            vec![ep.fhir_base.clone()],
            KeyKind::Rsa2048,
        ))
        .unwrap();
    let app = community
        .issue_end_entity(&req(
            EndEntityUsage::UdapClient,
            vec!["https://app.example/".into()],
            KeyKind::P256,
        ))
        .unwrap();
    let meta_x5c = bluegate_core::certs::pem_certs(meta.chain_pem.as_bytes())
        .unwrap()
        .iter()
        .map(|d| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(d)
        })
        .collect();
    let evil_seen = Arc::new(Mutex::new(Vec::new()));
    let mock = Arc::new(Mock {
        base: base.clone(),
        ep: ep.clone(),
        knobs: Mutex::new(Knobs::default()),
        rec: Mutex::new(Record::default()),
        id_key: SigningKey::generate(Alg::RS256).unwrap(),
        meta_key: SigningKey::from_pem(Some(Alg::RS256), &meta.key_pem).unwrap(),
        meta_x5c,
        evil_base: format!("https://127.0.0.1:{evil_port}"),
        evil_seen: evil_seen.clone(),
    });
    let router = Router::new()
        .route("/fhir/.well-known/udap", get(udap))
        .route("/fhir/.well-known/smart-configuration", get(smart))
        .route("/fhir/.well-known/openid-configuration", get(openid))
        .route("/oauth/jwks", get(jwks))
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/oauth/register", post(register))
        .route("/fhir/Patient/{id}", get(patient))
        .route("/fhir/ExplanationOfBenefit", get(eobs))
        .route("/fhir/Coverage", get(coverage))
        .route("/fhir/Endless", get(endless))
        .route("/fhir/Huge", get(huge))
        .with_state(mock.clone());
    let cfg = tls_config(&tls);
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, cfg)
            .serve(router.into_make_service())
            .await
            .unwrap();
    });
    let evil = Router::new().fallback(move |h: HeaderMap| {
        let seen = evil_seen.clone();
        async move {
            seen.lock().unwrap().push(
                h.get("authorization")
                    .map(|v| v.to_str().unwrap_or("").to_string()),
            );
            Json(json!({"resourceType": "Bundle", "type": "searchset", "entry": []}))
        }
    });
    let cfg = tls_config(&tls);
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(evil_listener, cfg)
            .serve(evil.into_make_service())
            .await
            .unwrap();
    });
    let http = bluegate_client::http::client(Some(community.root_cert_pem.as_bytes())).unwrap();
    let identity =
        Arc::new(AppIdentity::from_pem(app.chain_pem.as_bytes(), &app.key_pem, None).unwrap());
    Fixture {
        mock,
        fhir_base: ep.fhir_base.clone(),
        root_pem: community.root_cert_pem.clone(),
        http,
        identity,
        other_root_pem: other.root_cert_pem,
    }
}

async fn udap(State(m): State<Arc<Mock>>) -> Json<Value> {
    let mut doc = bluegate_core::discovery::udap_metadata(&m.ep);
    let mut ep = m.ep.clone();
    if m.knobs.lock().unwrap().metadata_for_other_base {
        ep.fhir_base = format!("{}/other-fhir", m.base);
    }
    let claims = bluegate_core::discovery::udap_signed_metadata_claims(&ep, now(), "jti-1");
    let mut h = Map::new();
    h.insert("x5c".into(), json!(m.meta_x5c));
    doc.insert(
        "signed_metadata".into(),
        json!(m.meta_key.sign_compact(&h, &claims).unwrap()),
    );
    Json(Value::Object(doc))
}

async fn smart(State(m): State<Arc<Mock>>) -> Json<Value> {
    Json(bluegate_core::discovery::smart_configuration(&m.ep))
}

async fn openid(State(m): State<Arc<Mock>>) -> Json<Value> {
    Json(bluegate_core::discovery::openid_configuration(&m.ep))
}

async fn jwks(State(m): State<Arc<Mock>>) -> Json<Value> {
    Json(json!({"keys": [m.id_key.public_jwk()]}))
}

async fn authorize(
    State(m): State<Arc<Mock>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = bluegate_client::random_b64url(16);
    let forge = m.knobs.lock().unwrap().forge_state;
    let state = if forge {
        "forged-state".to_string()
    } else {
        q["state"].clone()
    };
    let mut u = url::Url::parse(&q["redirect_uri"]).unwrap();
    u.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    m.rec.lock().unwrap().codes.insert(code, q);
    (StatusCode::FOUND, [("location", u.to_string())]).into_response()
}

fn issue_tokens(m: &Mock, nonce: Option<&str>, mode: TokenMode) -> Value {
    let mut rec = m.rec.lock().unwrap();
    rec.counter += 1;
    rec.access_token = format!("at-{}", rec.counter);
    rec.refresh_token = format!("rt-{}", rec.counter);
    let mut iss = m.ep.fhir_base.clone();
    let mut aud = "client-1".to_string();
    let mut nonce = nonce.map(str::to_string);
    match mode {
        TokenMode::IdTokenOtherAudience => aud = "another-client".into(),
        TokenMode::IdTokenOtherIssuer => iss = "https://evil.example/fhir".into(),
        TokenMode::IdTokenOtherNonce => nonce = Some("not-yours".into()),
        _ => {}
    }
    let t = now();
    let claims = bluegate_core::tokens::id_token_claims(
        &iss,
        "member-1",
        &aud,
        t,
        t + 300,
        nonce.as_deref(),
        Some(&format!("{}/Patient/p1", m.ep.fhir_base)),
        None,
    );
    let id = m.id_key.sign_compact(&Map::new(), &claims).unwrap();
    let mut body = json!({"access_token": rec.access_token, "token_type": "Bearer", "expires_in": 3600,
        "refresh_token": rec.refresh_token, "scope": "launch/patient openid fhirUser patient/*.read",
        "patient": "p1", "id_token": id});
    if mode == TokenMode::NoTokenType {
        body.as_object_mut().unwrap().remove("token_type");
    }
    body
}

async fn token(State(m): State<Arc<Mock>>, Form(f): Form<HashMap<String, String>>) -> Response {
    m.rec.lock().unwrap().token_forms.push(f.clone());
    let mode = m.knobs.lock().unwrap().token;
    let bad = |d: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": d})),
        )
            .into_response()
    };
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(req) = m.rec.lock().unwrap().codes.remove(&f["code"]) else {
                return bad("unknown code");
            };
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            if bluegate_core::authorize::s256(&verifier) != req["code_challenge"]
                || f.get("redirect_uri") != req.get("redirect_uri")
            {
                return bad("PKCE or redirect_uri mismatch");
            }
            Json(issue_tokens(&m, req.get("nonce").map(String::as_str), mode)).into_response()
        }
        Some("refresh_token") => {
            if m.rec.lock().unwrap().refresh_token != f["refresh_token"] {
                return bad("refresh token reused or unknown");
            }
            Json(issue_tokens(&m, None, TokenMode::Good)).into_response()
        }
        _ => bad("unsupported grant"),
    }
}

async fn register() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "unapproved_software_statement",
            "error_description": "the certificate is revoked"})),
    )
        .into_response()
}

/// The bearer check of every FHIR route: the current access token only.
/// `Some(401 response)` when the token is not the current one.
fn check(m: &Mock, h: &HeaderMap) -> Option<Response> {
    let auth = h
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut rec = m.rec.lock().unwrap();
    rec.fhir_auth.push(auth.clone());
    if m.knobs.lock().unwrap().always_401 || auth != format!("Bearer {}", rec.access_token) {
        return Some(oo(StatusCode::UNAUTHORIZED, "the access token has expired"));
    }
    None
}

async fn patient(
    State(m): State<Arc<Mock>>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Some(r) = check(&m, &h) {
        return r;
    }
    Json(json!({"resourceType": "Patient", "id": id})).into_response()
}

async fn eobs(
    State(m): State<Arc<Mock>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = check(&m, &h) {
        return r;
    }
    let page: u32 = q.get("_page").and_then(|p| p.parse().ok()).unwrap_or(1);
    m.rec.lock().unwrap().eob_pages.push(page);
    {
        let mut k = m.knobs.lock().unwrap();
        if k.fail_page == Some(page) {
            k.fail_page = None;
            drop(k);
            return oo(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the claims store is unavailable",
            );
        }
    }
    let next_base = match m.knobs.lock().unwrap().next {
        NextMode::SameBase => m.ep.fhir_base.clone(),
        NextMode::OtherHost => format!("{}/fhir", m.evil_base),
        NextMode::OtherPort => format!(
            "https://localhost:{}/fhir",
            url::Url::parse(&m.evil_base).unwrap().port().unwrap()
        ),
        NextMode::PlainHttp => m.ep.fhir_base.replace("https:", "http:"),
    };
    let mut links = vec![
        json!({"relation": "self", "url": format!("{}/ExplanationOfBenefit?_page={page}", m.ep.fhir_base)}),
    ];
    if page < 3 {
        links.push(json!({"relation": "next",
            "url": format!("{next_base}/ExplanationOfBenefit?patient=p1&_page={}", page + 1)}));
    }
    Json(json!({"resourceType": "Bundle", "type": "searchset", "link": links,
        "entry": [
            {"resource": {"resourceType": "ExplanationOfBenefit", "id": format!("e{page}"),
                "type": {"coding": [{"code": if page == 2 { "professional" } else { "pharmacy" }}]},
                "billablePeriod": {"start": format!("2023-0{page}-01")},
                "total": [{"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": 10.5, "currency": "USD"}}],
                "payment": {"amount": {"value": 7.25, "currency": "USD"}}},
             "search": {"mode": "match"}},
            {"resource": {"resourceType": "Organization", "id": "org-1"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "../../escape", "id": "x"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}}
        ]}))
    .into_response()
}

async fn coverage(State(m): State<Arc<Mock>>, h: HeaderMap) -> Response {
    if let Some(r) = check(&m, &h) {
        return r;
    }
    Json(json!({"resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": {"resourceType": "Coverage", "id": "cov-1"}, "search": {"mode": "match"}}]}))
    .into_response()
}

fn spaces() -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::repeat(Ok(Bytes::from(vec![b' '; 64 * 1024])))
}

async fn endless() -> Response {
    Response::builder()
        .header("content-type", "application/fhir+json")
        .body(Body::from_stream(spaces()))
        .unwrap()
}

async fn huge() -> Response {
    Response::builder()
        .header("content-type", "application/fhir+json")
        .header("content-length", "5368709120")
        .body(Body::from_stream(spaces()))
        .unwrap()
}

fn anchors(pem: &str) -> bluegate_core::trust::Community {
    bluegate_core::trust::Community::builder("urn:test")
        .anchors_pem(pem.as_bytes())
        .unwrap()
        .build()
        .unwrap()
}

/// Discovery, authorization (a browser task follows the mock's redirect to the loopback listener), code
/// exchange with UDAP private_key_jwt, id_token validation.
async fn launch_flow(f: &Fixture) -> Result<TokenSet, Error> {
    let a = anchors(&f.root_pem);
    let d = discover(
        &f.http,
        &f.fhir_base,
        &DiscoveryOptions {
            community: None,
            anchors: Some(&a),
            allow_unverified: false,
            now: now(),
        },
    )
    .await?;
    assert!(d.verified.is_some());
    let listener = LoopbackListener::bind("http://127.0.0.1:0/callback", None).await?;
    let redirect = listener.redirect_uri().to_string();
    let pending = PendingAuthorization::new(&AuthorizationRequest {
        authorization_endpoint: &d.authorization_endpoint().unwrap(),
        client_id: "client-1",
        redirect_uri: &redirect,
        scope: "launch/patient openid fhirUser patient/*.read",
        fhir_base: &d.fhir_base,
    })?;
    let http = f.http.clone();
    let url = pending.url().to_string();
    let browser = tokio::spawn(async move {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let _ = bluegate_client::http::client(None)
            .unwrap()
            .get(loc)
            .send()
            .await;
    });
    let code = listener.wait(&pending, Duration::from_secs(20)).await;
    browser.await.unwrap();
    let auth = ClientAuth::PrivateKeyJwt {
        client_id: "client-1".into(),
        identity: f.identity.clone(),
    };
    launch::finish(
        &f.http,
        &d.token_endpoint().unwrap(),
        d.issuer().as_deref(),
        &auth,
        &pending,
        &code?,
    )
    .await
}

fn fhir_client(f: &Fixture, t: TokenSet, refreshed: Arc<Mutex<Vec<String>>>) -> FhirClient {
    FhirClient::new(f.http.clone(), &f.fhir_base, t)
        .unwrap()
        .with_refresh(
            &format!("{}/oauth/token", f.mock.base),
            ClientAuth::PrivateKeyJwt {
                client_id: "client-1".into(),
                identity: f.identity.clone(),
            },
        )
        .on_refresh(Box::new(move |t| {
            refreshed
                .lock()
                .unwrap()
                .push(t.refresh_token.as_ref().unwrap().expose().to_string());
            Ok(())
        }))
}

#[tokio::test]
async fn a_good_server_launch_paging_and_one_refresh_on_401() {
    let f = start().await;
    let t = launch_flow(&f).await.unwrap();
    assert_eq!(t.patient.as_deref(), Some("p1"));
    assert_eq!(
        t.fhir_user.as_deref(),
        Some(format!("{}/Patient/p1", f.fhir_base).as_str())
    );
    {
        let rec = f.mock.rec.lock().unwrap();
        let form = &rec.token_forms[0];
        assert_eq!(form["udap"], "1");
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert!(!form.contains_key("client_secret"));
    }
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    let mut c = fhir_client(&f, t.clone(), refreshed.clone());
    let p = c.get("Patient/p1").await.unwrap();
    assert_eq!(p["id"], "p1");
    let pages = c
        .search_all("ExplanationOfBenefit?patient=p1", 10)
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    assert!(refreshed.lock().unwrap().is_empty());

    // The server forgets the token (as after expiry): one refresh, then the retry succeeds, and the
    // rotated refresh token is handed over before use.
    f.mock.rec.lock().unwrap().access_token = "rotated-away".into();
    let p = c.get("Patient/p1").await.unwrap();
    assert_eq!(p["id"], "p1");
    let got = refreshed.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_ne!(
        Some(got[0].as_str()),
        t.refresh_token.as_ref().map(|r| r.expose())
    );
    assert_eq!(
        c.tokens().refresh_token.as_ref().unwrap().expose(),
        got[0].as_str()
    );
    assert_eq!(c.tokens().patient.as_deref(), Some("p1"));

    // A server that keeps answering 401: one refresh, one retry, then the OperationOutcome's text.
    f.mock.knobs.lock().unwrap().always_401 = true;
    let before = f.mock.rec.lock().unwrap().fhir_auth.len();
    match c.get("Patient/p1").await {
        Err(Error::Fhir {
            status, outcome, ..
        }) => {
            assert_eq!(status, 401);
            assert_eq!(outcome.as_deref(), Some("the access token has expired"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.mock.rec.lock().unwrap().fhir_auth.len() - before, 2);
    assert_eq!(refreshed.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_redirect_with_a_forged_state_is_refused_and_nothing_is_exchanged() {
    let f = start().await;
    f.mock.knobs.lock().unwrap().forge_state = true;
    assert!(matches!(launch_flow(&f).await, Err(Error::StateMismatch)));
    assert!(f.mock.rec.lock().unwrap().token_forms.is_empty());
}

#[tokio::test]
async fn bad_id_tokens_and_token_responses_are_refused() {
    let f = start().await;
    for mode in [
        TokenMode::IdTokenOtherAudience,
        TokenMode::IdTokenOtherIssuer,
        TokenMode::IdTokenOtherNonce,
    ] {
        f.mock.knobs.lock().unwrap().token = mode;
        match launch_flow(&f).await {
            Err(Error::IdToken(_)) => {}
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    f.mock.knobs.lock().unwrap().token = TokenMode::NoTokenType;
    match launch_flow(&f).await {
        Err(Error::TokenResponse(m)) => assert!(m.contains("token_type"), "{m}"),
        other => panic!("{other:?}"),
    }
    f.mock.knobs.lock().unwrap().token = TokenMode::Good;
    assert!(launch_flow(&f).await.is_ok());
}

#[tokio::test]
async fn next_links_off_the_fhir_base_are_refused_and_the_token_never_leaves() {
    let f = start().await;
    let t = launch_flow(&f).await.unwrap();
    for mode in [
        NextMode::OtherHost,
        NextMode::OtherPort,
        NextMode::PlainHttp,
    ] {
        f.mock.knobs.lock().unwrap().next = mode;
        let mut c = fhir_client(&f, t.clone(), Arc::new(Mutex::new(Vec::new())));
        match c.search_all("ExplanationOfBenefit?patient=p1", 10).await {
            Err(Error::ForeignLink { .. }) => {}
            other => panic!("{mode:?}: {other:?}"),
        }
        // Absolute URLs given directly are refused the same way.
        let evil = format!("{}/fhir/Patient/p1", f.mock.evil_base);
        assert!(matches!(c.get(&evil).await, Err(Error::ForeignLink { .. })));
    }
    assert!(f.mock.evil_seen.lock().unwrap().is_empty());
    // The recorder works: a direct request does get recorded (without a token).
    let r = f
        .http
        .get(format!("{}/fhir/x", f.mock.evil_base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(*f.mock.evil_seen.lock().unwrap(), vec![None]);
}

#[tokio::test]
async fn endless_and_huge_bodies_are_refused_at_the_cap() {
    let f = start().await;
    let t = launch_flow(&f).await.unwrap();
    let mut c = fhir_client(&f, t, Arc::new(Mutex::new(Vec::new()))).max_response_bytes(1 << 20);
    for path in ["Endless", "Huge"] {
        let r = tokio::time::timeout(Duration::from_secs(30), c.get(path))
            .await
            .expect("refused promptly, not read to the end");
        match r {
            Err(Error::TooLarge { limit, .. }) => assert_eq!(limit, 1 << 20),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn signed_metadata_that_does_not_verify_is_refused_unless_opted_out() {
    let f = start().await;
    let other = anchors(&f.other_root_pem);
    let opts = |a, allow| DiscoveryOptions {
        community: None,
        anchors: a,
        allow_unverified: allow,
        now: now(),
    };
    let e = discover(&f.http, &f.fhir_base, &opts(Some(&other), false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    let d = discover(&f.http, &f.fhir_base, &opts(Some(&other), true))
        .await
        .unwrap();
    assert!(d.verified.is_none() && d.verification_error.is_some());
    assert!(discover(&f.http, &f.fhir_base, &opts(None, false))
        .await
        .is_err());
    // Signed by a trusted certificate, but for another base.
    f.mock.knobs.lock().unwrap().metadata_for_other_base = true;
    let good = anchors(&f.root_pem);
    let e = discover(&f.http, &f.fhir_base, &opts(Some(&good), false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("iss"), "{e}");
}

#[tokio::test]
async fn registration_errors_quote_the_servers_description() {
    let f = start().await;
    let meta = bluegate_client::ClientMetadata::authorization_code(
        "App",
        vec!["https://127.0.0.1:9/".into()],
        "openid",
        vec!["mailto:a@b.example".into()],
        "https://app.example/logo.png",
        bluegate_client::AuthMethod::PrivateKeyJwt,
    );
    let e = bluegate_client::registration::register(
        &f.http,
        &format!("{}/oauth/register", f.mock.base),
        &f.identity,
        &meta,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Registration { status: 400, .. }));
    assert!(e.to_string().contains("the certificate is revoked"), "{e}");
}

#[tokio::test]
async fn download_is_deduplicated_resumable_and_summarized() {
    use bluegate_client::download::{self, DownloadOptions};
    let f = start().await;
    let t = launch_flow(&f).await.unwrap();
    let mut c = fhir_client(&f, t, Arc::new(Mutex::new(Vec::new())));
    let dir = tempfile::tempdir().unwrap();
    let opts = DownloadOptions { page_size: 1 };
    let mut calls = Vec::new();

    // Page 2 fails: the error quotes the OperationOutcome, and what came before is kept.
    f.mock.knobs.lock().unwrap().fail_page = Some(2);
    let e = download::download(&mut c, "p1", dir.path(), &opts, &mut |s, p, _| {
        calls.push((s.to_string(), p))
    })
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("the claims store is unavailable"),
        "{e}"
    );
    let eobs = dir.path().join("ExplanationOfBenefit.ndjson");
    assert_eq!(std::fs::read_to_string(&eobs).unwrap().lines().count(), 1);

    // Run again: resumes at page 2 (page 1 is not fetched again).
    let r = download::download(&mut c, "p1", dir.path(), &opts, &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(f.mock.rec.lock().unwrap().eob_pages, vec![1, 2, 2, 3]);
    assert_eq!(r.new["ExplanationOfBenefit"], 2);
    assert!(r.skipped >= 2, "the unsafe resourceType is skipped");
    // The included Organization, on every page, is written once; nothing escapes the directory.
    let org = std::fs::read_to_string(dir.path().join("Organization.ndjson")).unwrap();
    assert_eq!(org.lines().count(), 1);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ".bluegate-fetch.json",
            "Coverage.ndjson",
            "ExplanationOfBenefit.ndjson",
            "Organization.ndjson",
            "Patient.ndjson"
        ]
    );
    assert!(!dir.path().parent().unwrap().join("escape.ndjson").exists());

    let s = download::summarize(dir.path()).unwrap();
    assert_eq!(s.counts["ExplanationOfBenefit"], 3);
    assert_eq!(s.counts["Patient"], 1);
    assert_eq!(s.counts["Coverage"], 1);
    assert_eq!(s.claim_types["pharmacy"], 2);
    assert_eq!(s.claim_types["professional"], 1);
    assert_eq!(s.first_service.as_deref(), Some("2023-01-01"));
    assert_eq!(s.last_service.as_deref(), Some("2023-03-01"));
    assert_eq!(s.billed["USD"], 3150);
    assert_eq!(s.paid["USD"], 2175);

    // Complete: a third run asks the server nothing.
    let before = f.mock.rec.lock().unwrap().fhir_auth.len();
    let r = download::download(&mut c, "p1", dir.path(), &opts, &mut |_, _, _| {})
        .await
        .unwrap();
    assert!(r.new.is_empty());
    assert_eq!(f.mock.rec.lock().unwrap().fhir_auth.len(), before);
    // Another patient's download never mixes into this directory.
    assert!(
        download::download(&mut c, "p2", dir.path(), &opts, &mut |_, _, _| {})
            .await
            .is_err()
    );
    assert!(calls.iter().any(|(s, _)| s == "Coverage"));
}
