//! The member-facing side of the standalone launch: the authorization endpoint, sign-in, patient choice and
//! consent (SMART App Launch; DESIGN §2 form contract).
//!
//! Every step re-validates what it receives: the transaction token is signed and short-lived, the session
//! is signed, each POST carries the CSRF token and (when the browser sends one) our `Origin`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bluegate_core::authorize::{self as az, ClientView, RawRequest, RequestError};
use bluegate_core::scopes::{self, GrantContext, Scope, ServerPolicy};
use bluegate_core::secrets;
use bluegate_store::{
    AuditEvent, ClientRecord, ClientStatus, CodeRecord, ConsentRecord, GrantRecord, MemberRecord,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::{AppState, SharedState};
use crate::error::ApiError;
use crate::pages;
use crate::session::{self, Txn};

pub const SERVED_TYPES: &[&str] = bluegate_core::discovery::RESOURCE_TYPES;
/// Granular scope filters the FHIR API enforces.
pub const ENFORCEABLE_FILTERS: &[(&str, &str)] = &[("ExplanationOfBenefit", "type")];

pub fn server_policy() -> ServerPolicy<'static> {
    ServerPolicy {
        served_types: SERVED_TYPES,
        enforceable_filters: ENFORCEABLE_FILTERS,
    }
}

/// CSP for the member pages: no scripts at all; inline styles; https logos; forms post to us and the
/// consent redirect may go to the app (https or a loopback native app).
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; \
    form-action 'self' https: http://127.0.0.1:* http://localhost:* http://[::1]:*; \
    frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String, cookies: Vec<HeaderValue>) -> Response {
    html_with_csp(status, body, cookies, PAGE_CSP)
}

/// An HTML page: never cached, with the given CSP (every page CSP refuses framing).
pub(crate) fn html_with_csp(
    status: StatusCode,
    body: String,
    cookies: Vec<HeaderValue>,
    csp: &'static str,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        pages::error(&pages::ErrorPage { title, message }),
        Vec::new(),
    )
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn redirect_error(txn: &Txn, error: &str, description: &str) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = &txn.state {
        params.push(("state", s));
    }
    redirect(&az::redirect_with(&txn.redirect_uri, &params), Vec::new())
}

/// Form or query pairs, in order, with repeated names kept.
pub fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn raw_request(pairs: &[(String, String)]) -> RawRequest {
    let get = |n: &str| first(pairs, n).map(str::to_string);
    let mut duplicated = Vec::new();
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(p, _)| p == k) && !duplicated.contains(k) {
            duplicated.push(k.clone());
        }
    }
    RawRequest {
        response_type: get("response_type"),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        scope: get("scope"),
        state: get("state"),
        aud: get("aud"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        nonce: get("nonce"),
        launch: get("launch"),
        duplicated,
    }
}

fn meta_strings(c: &ClientRecord, key: &str) -> Vec<String> {
    c.metadata
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn client_name(c: &ClientRecord) -> String {
    c.metadata
        .get("client_name")
        .and_then(Value::as_str)
        .unwrap_or(&c.client_id)
        .to_string()
}

pub fn auth_method(c: &ClientRecord) -> &str {
    c.metadata
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("none")
}

#[allow(clippy::too_many_arguments)]
pub async fn audit(
    state: &AppState,
    event: &str,
    outcome: &str,
    client_id: Option<&str>,
    member_id: Option<&str>,
    patient: Option<&str>,
    remote: Option<SocketAddr>,
    detail: Value,
) {
    let e = AuditEvent {
        at: OffsetDateTime::now_utc(),
        event: event.to_string(),
        outcome: outcome.to_string(),
        client_id: client_id.map(str::to_string),
        member_id: member_id.map(str::to_string),
        patient: patient.map(str::to_string),
        remote_addr: remote.map(|r| r.ip().to_string()),
        detail,
    };
    state.audit.record(e).await;
}

/// `GET|POST {authorization_endpoint}`.
pub async fn authorize_get(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let p = pairs(query.unwrap_or_default().as_bytes());
    start(&state, &headers, &p).await
}

pub async fn authorize_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = pairs(&body);
    start(&state, &headers, &p).await
}

async fn start(
    state: &AppState,
    headers: &HeaderMap,
    p: &[(String, String)],
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let raw = raw_request(p);
    let client = match raw.client_id.as_deref() {
        Some(id) if !id.is_empty() && id.len() <= 256 => state.store.get_client(id).await?,
        _ => None,
    };
    let redirect_uris = client
        .as_ref()
        .map(|c| meta_strings(c, "redirect_uris"))
        .unwrap_or_default();
    let grant_types = client
        .as_ref()
        .map(|c| meta_strings(c, "grant_types"))
        .unwrap_or_default();
    let view = client.as_ref().map(|c| ClientView {
        active: c.status == ClientStatus::Active,
        redirect_uris: &redirect_uris,
        grant_types: &grant_types,
        public: auth_method(c) == "none",
    });
    let valid = match az::validate(&raw, view.as_ref(), &state.endpoints.fhir_base) {
        Ok(v) => v,
        Err(RequestError::NoRedirect { description }) => {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is not valid",
                &format!(
                "The app sent an invalid request ({description}). Return to the app and try again."
            ),
            ))
        }
        Err(RequestError::Redirect {
            redirect_uri,
            error,
            description,
            state: st,
        }) => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &st {
                params.push(("state", s));
            }
            return Ok(redirect(
                &az::redirect_with(&redirect_uri, &params),
                Vec::new(),
            ));
        }
    };
    let Some(client) = client else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "Unknown app",
            "This app is not registered.",
        ));
    };
    let registered = client
        .metadata
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut txn = Txn {
        client_id: valid.client_id,
        redirect_uri: valid.redirect_uri,
        scope: String::new(),
        state: valid.state,
        code_challenge: valid.code_challenge,
        nonce: valid.nonce,
        exp: now + session::TXN_LIFETIME,
    };
    match scopes::negotiate(
        &valid.scope,
        &registered,
        GrantContext::AppLaunch,
        &server_policy(),
    ) {
        Ok(granted) => txn.scope = scopes::to_string(&granted),
        Err(e) => return Ok(redirect_error(&txn, "invalid_scope", &e.to_string())),
    }
    let (csrf, set_csrf) = session::csrf_token(headers);
    let cookies: Vec<HeaderValue> = set_csrf.into_iter().collect();
    if let Some(sess) = session::current_session(state, headers, now) {
        if let Some(member) = state.store.get_member(&sess.sub).await? {
            if !member.disabled {
                return next_step(state, &client, &member, &txn, None, &csrf, cookies).await;
            }
        }
    }
    login_page(
        state,
        &client,
        &txn,
        &csrf,
        None,
        "",
        cookies,
        StatusCode::OK,
    )
}

#[allow(clippy::too_many_arguments)]
fn login_page(
    state: &AppState,
    client: &ClientRecord,
    txn: &Txn,
    csrf: &str,
    error: Option<&str>,
    username: &str,
    cookies: Vec<HeaderValue>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let sealed = session::seal_txn(state, txn).ok_or_else(|| {
        ApiError::internal(crate::error::Wire::OAuth, &"cannot sign the transaction")
    })?;
    let name = client_name(client);
    Ok(html(
        status,
        pages::login(&pages::LoginPage {
            app_name: &name,
            txn: &sealed,
            csrf,
            action: "/oauth/login",
            error,
            username,
        }),
        cookies,
    ))
}

/// After sign-in: choose the patient if the member acts for several, then consent (or reuse a consent
/// that already covers the request).
async fn next_step(
    state: &AppState,
    client: &ClientRecord,
    member: &MemberRecord,
    txn: &Txn,
    patient: Option<&str>,
    csrf: &str,
    cookies: Vec<HeaderValue>,
) -> Result<Response, ApiError> {
    let sealed = session::seal_txn(state, txn).ok_or_else(|| {
        ApiError::internal(crate::error::Wire::OAuth, &"cannot sign the transaction")
    })?;
    let name = client_name(client);
    let patient = match (patient, member.patients.as_slice()) {
        (Some(p), _) => Some(p.to_string()),
        (None, [only]) => Some(only.clone()),
        (None, []) => None,
        (None, many) => {
            let choices: Vec<pages::PatientChoice<'_>> = many
                .iter()
                .map(|p| pages::PatientChoice { id: p, label: p })
                .collect();
            return Ok(html(
                StatusCode::OK,
                pages::picker(&pages::PickerPage {
                    app_name: &name,
                    txn: &sealed,
                    csrf,
                    action: "/oauth/patient",
                    patients: &choices,
                }),
                cookies,
            ));
        }
    };
    // A remembered decision for this member, app and patient that covers every requested scope.
    if let Some(consent) = state
        .store
        .get_consent(&member.id, &client.client_id)
        .await?
    {
        let covered = txn
            .scope
            .split_whitespace()
            .all(|s| consent.scope.split_whitespace().any(|c| c == s));
        if covered && consent.patient == patient && !txn.scope.is_empty() {
            return issue_code(
                state,
                client,
                member,
                txn,
                patient.as_deref(),
                &txn.scope,
                cookies,
                None,
            )
            .await;
        }
    }
    let items: Vec<pages::ScopeItem<'_>> = txn
        .scope
        .split_whitespace()
        .map(pages::describe_scope)
        .collect();
    let contacts = meta_strings(client, "contacts");
    let logo = client.metadata.get("logo_uri").and_then(Value::as_str);
    Ok(html(
        StatusCode::OK,
        pages::consent(&pages::ConsentPage {
            app_name: &name,
            logo_uri: logo,
            contacts: &contacts,
            client_id: &client.client_id,
            patient_label: patient.as_deref(),
            scopes: &items,
            txn: &sealed,
            csrf,
            action: "/oauth/consent",
            patient: patient.as_deref(),
        }),
        cookies,
    ))
}

struct Posted {
    pairs: Vec<(String, String)>,
    txn: Txn,
    client: ClientRecord,
    csrf: String,
}

/// Common checks of every flow POST: CSRF, a valid transaction, an active client.
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<Posted, Response>, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let pairs = pairs(body);
    if !session::check_post(state, headers, first(&pairs, "csrf")) {
        return Ok(Err(error_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "For your security the form could not be accepted. Return to the app and start again.",
        )));
    }
    let Some(txn) = first(&pairs, "txn").and_then(|t| session::open_txn(state, t, now)) else {
        return Ok(Err(error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "Return to the app and start again.",
        )));
    };
    let client = match state.store.get_client(&txn.client_id).await? {
        Some(c) if c.status == ClientStatus::Active => c,
        _ => {
            return Ok(Err(error_page(
                StatusCode::BAD_REQUEST,
                "This app is not available",
                "The app is no longer registered.",
            )))
        }
    };
    let csrf = first(&pairs, "csrf").unwrap_or_default().to_string();
    Ok(Ok(Posted {
        pairs,
        txn,
        client,
        csrf,
    }))
}

/// `POST /oauth/login`.
pub async fn login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = match posted(&state, &headers, &body).await? {
        Ok(p) => p,
        Err(resp) => return Ok(resp),
    };
    let username = first(&p.pairs, "username")
        .unwrap_or_default()
        .trim()
        .to_string();
    let password = first(&p.pairs, "password").unwrap_or_default().to_string();
    let outcome = crate::signin::sign_in(
        &state,
        &username,
        &password,
        peer,
        Some(&p.client.client_id),
        "authorize",
    )
    .await?;
    let crate::signin::SignIn::Ok(member, cookie) = outcome else {
        return login_page(
            &state,
            &p.client,
            &p.txn,
            &p.csrf,
            crate::signin::message(&outcome),
            &username,
            vec![],
            crate::signin::status(&outcome),
        );
    };
    next_step(
        &state,
        &p.client,
        &member,
        &p.txn,
        None,
        &p.csrf,
        vec![cookie],
    )
    .await
}

async fn signed_in_member(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<MemberRecord>, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let Some(sess) = session::current_session(state, headers, now) else {
        return Ok(None);
    };
    Ok(state
        .store
        .get_member(&sess.sub)
        .await?
        .filter(|m| !m.disabled))
}

/// The member's session expired between two steps: sign in again, keeping the transaction.
fn session_ended(state: &AppState, p: &Posted) -> Result<Response, ApiError> {
    login_page(
        state,
        &p.client,
        &p.txn,
        &p.csrf,
        Some("Your session has ended. Sign in again."),
        "",
        vec![],
        StatusCode::UNAUTHORIZED,
    )
}

fn chosen_patient<'a>(member: &MemberRecord, p: Option<&'a str>) -> Option<&'a str> {
    p.filter(|p| member.patients.iter().any(|m| m == p))
}

/// `POST /oauth/patient`: the picker's answer.
pub async fn choose_patient(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = match posted(&state, &headers, &body).await? {
        Ok(p) => p,
        Err(resp) => return Ok(resp),
    };
    let Some(member) = signed_in_member(&state, &headers).await? else {
        return session_ended(&state, &p);
    };
    let Some(patient) = chosen_patient(&member, first(&p.pairs, "patient")) else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "Choose a person",
            "Choose one of the people listed.",
        ));
    };
    next_step(
        &state,
        &p.client,
        &member,
        &p.txn,
        Some(patient),
        &p.csrf,
        vec![],
    )
    .await
}

/// `POST /oauth/consent`: allow (with the scopes left ticked) or deny.
pub async fn consent(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = match posted(&state, &headers, &body).await? {
        Ok(p) => p,
        Err(resp) => return Ok(resp),
    };
    let Some(member) = signed_in_member(&state, &headers).await? else {
        return session_ended(&state, &p);
    };
    let patient = match first(&p.pairs, "patient") {
        Some(v) => match chosen_patient(&member, Some(v)) {
            Some(ok) => Some(ok.to_string()),
            None => {
                return Ok(error_page(
                    StatusCode::BAD_REQUEST,
                    "Not allowed",
                    "You cannot share records for that person.",
                ))
            }
        },
        None if member.patients.len() <= 1 => member.patients.first().cloned(),
        None => {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                "Choose a person",
                "Choose whose records to share.",
            ))
        }
    };
    if first(&p.pairs, "decision") != Some("allow") {
        audit(
            &state,
            "consent.denied",
            "success",
            Some(&p.client.client_id),
            Some(&member.id),
            patient.as_deref(),
            Some(peer),
            json!({}),
        )
        .await;
        return Ok(redirect_error(
            &p.txn,
            "access_denied",
            "the member did not allow access",
        ));
    }
    let chosen: Vec<String> = p
        .pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let offered: Vec<Scope> = p.txn.scope.split_whitespace().map(scopes::parse).collect();
    let kept = scopes::retain_chosen(offered, &chosen);
    let useful = kept
        .iter()
        .any(|s| matches!(s, Scope::Resource(_) | Scope::OpenId | Scope::FhirUser));
    if !useful {
        audit(
            &state,
            "consent.denied",
            "success",
            Some(&p.client.client_id),
            Some(&member.id),
            patient.as_deref(),
            Some(peer),
            json!({"reason": "nothing left ticked"}),
        )
        .await;
        return Ok(redirect_error(
            &p.txn,
            "access_denied",
            "the member did not allow any of the requested access",
        ));
    }
    let granted = scopes::to_string(&kept);
    state
        .store
        .upsert_consent(&ConsentRecord {
            member_id: member.id.clone(),
            client_id: p.client.client_id.clone(),
            patient: patient.clone(),
            scope: granted.clone(),
            updated_at: OffsetDateTime::now_utc(),
        })
        .await?;
    audit(
        &state,
        "consent.granted",
        "success",
        Some(&p.client.client_id),
        Some(&member.id),
        patient.as_deref(),
        Some(peer),
        json!({"scope": granted}),
    )
    .await;
    issue_code(
        &state,
        &p.client,
        &member,
        &p.txn,
        patient.as_deref(),
        &granted,
        vec![],
        Some(peer),
    )
    .await
}

/// Create the grant and a single-use code bound to everything the token request must match, and send the
/// member back to the app.
#[allow(clippy::too_many_arguments)]
async fn issue_code(
    state: &AppState,
    client: &ClientRecord,
    member: &MemberRecord,
    txn: &Txn,
    patient: Option<&str>,
    granted: &str,
    cookies: Vec<HeaderValue>,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let has_patient_scope = granted
        .split_whitespace()
        .any(|s| s.starts_with("patient/"));
    if has_patient_scope && patient.is_none() {
        return Ok(redirect_error(
            txn,
            "access_denied",
            "no patient is available for this member",
        ));
    }
    let grant = GrantRecord {
        id: crate::random::token(16),
        client_id: client.client_id.clone(),
        member_id: Some(member.id.clone()),
        patient: patient.map(str::to_string),
        scope: granted.to_string(),
        created_at: now,
        expires_at: None,
        revoked_at: None,
        data: json!({"fhir_user": member.fhir_user}),
    };
    state.store.insert_grant(&grant).await?;
    let code = crate::random::token(32);
    state
        .store
        .insert_code(&CodeRecord {
            code_hash: secrets::token_hash(&code),
            client_id: client.client_id.clone(),
            grant_id: Some(grant.id.clone()),
            expires_at: now
                + time::Duration::seconds(state.config.tokens.authorization_code as i64),
            payload: json!({
                "redirect_uri": txn.redirect_uri,
                "code_challenge": txn.code_challenge,
                "nonce": txn.nonce,
                "scope": granted,
                "patient": patient,
                "member_id": member.id,
                "fhir_user": member.fhir_user,
                "aud": state.endpoints.fhir_base,
            }),
        })
        .await?;
    audit(
        state,
        "code.issued",
        "success",
        Some(&client.client_id),
        Some(&member.id),
        patient,
        peer,
        json!({"grant_id": grant.id}),
    )
    .await;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &txn.state {
        params.push(("state", s));
    }
    Ok(redirect(
        &az::redirect_with(&txn.redirect_uri, &params),
        cookies,
    ))
}
