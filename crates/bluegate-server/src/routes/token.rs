//! The token endpoint (RFC 6749 §3.2, SMART App Launch, UDAP): `authorization_code`, `refresh_token` and
//! `client_credentials` grants.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bluegate_core::authorize::verify_pkce;
use bluegate_core::jose::Alg;
use bluegate_core::scopes::{self, GrantContext};
use bluegate_core::tokens::{self, AccessClaims};
use bluegate_core::{secrets, udap};
use bluegate_store::{
    CodeAction, CodeDecision, CodeExchange, CodeExchangeOutcome, CodeRecord, GrantRecord,
    RefreshRotation, RefreshTokenInfo, RefreshTokenRecord,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::{AppState, SharedState};
use crate::client_auth::{self, Authenticated, PendingJti};
use crate::error::{ApiError, Wire};
use crate::routes::authorize::{audit, first, pairs, server_policy};

fn oauth(code: &'static str, description: &str) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, code, description)
}

fn token_response(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// `POST {token_endpoint}`.
pub async fn token(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form_ct {
        return Err(oauth(
            "invalid_request",
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    let form = pairs(&body);
    for (i, (k, _)) in form.iter().enumerate() {
        if form[..i].iter().any(|(p, _)| p == k) {
            return Err(oauth(
                "invalid_request",
                &format!("parameter `{k}` appears more than once"),
            ));
        }
    }
    let grant_type = first(&form, "grant_type").unwrap_or_default().to_string();
    if !matches!(
        grant_type.as_str(),
        "authorization_code" | "refresh_token" | "client_credentials"
    ) {
        return Err(if grant_type.is_empty() {
            oauth("invalid_request", "grant_type is required")
        } else {
            oauth(
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token, client_credentials",
            )
        });
    }
    // A refresh grant's first read runs beside client authentication; it is only used once that
    // succeeds. (The authorization_code grant reads nothing before its one write.)
    let (auth, lookup) = tokio::join!(
        client_auth::authenticate_deferred(&state, &headers, &form, &state.endpoints.token),
        lookup(&state, &grant_type, &form),
    );
    let (auth, mut jti) = auth?;
    // A failed lookup is simply done again (and its error reported) by the grant.
    let lookup = lookup.unwrap_or(Lookup::Nothing);
    // Each grant below makes one store write, which also records the client assertion's jti.
    let result = grant(&state, &auth, &mut jti, &grant_type, lookup, &form, peer).await;
    // A request refused before its write still spends the assertion (and a replay is told as such).
    jti.settle(&state).await?;
    result
}

/// What a grant reads first: the refresh token, with its grant.
enum Lookup {
    RefreshToken(Box<Option<RefreshTokenInfo>>),
    Nothing,
}

fn code_param(form: &[(String, String)]) -> Option<&str> {
    first(form, "code").filter(|c| !c.is_empty() && c.len() <= 512)
}

fn refresh_token_param(form: &[(String, String)]) -> Option<&str> {
    first(form, "refresh_token").filter(|t| !t.is_empty() && t.len() <= 512)
}

/// Reads (never writes) what the grant will need first, so that it can run beside client authentication.
async fn lookup(
    state: &AppState,
    grant_type: &str,
    form: &[(String, String)],
) -> Result<Lookup, bluegate_store::StoreError> {
    Ok(match grant_type {
        "refresh_token" => match refresh_token_param(form) {
            Some(t) => Lookup::RefreshToken(Box::new(
                state
                    .store
                    .find_refresh_token(&secrets::token_hash(t))
                    .await?,
            )),
            None => Lookup::Nothing,
        },
        _ => Lookup::Nothing,
    })
}

async fn grant(
    state: &AppState,
    auth: &Authenticated,
    jti: &mut PendingJti,
    grant_type: &str,
    lookup: Lookup,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let granted_types: Vec<&str> = auth
        .client
        .metadata
        .get("grant_types")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // A refresh token is usable by any client registered for the authorization code grant.
    let allowed = granted_types.contains(&grant_type)
        || (grant_type == "refresh_token" && granted_types.contains(&"authorization_code"));
    if !allowed {
        return Err(oauth(
            "unauthorized_client",
            "this client is not registered for that grant type",
        ));
    }
    match grant_type {
        "authorization_code" => authorization_code(state, auth, jti, form, peer).await,
        "refresh_token" => refresh(state, auth, jti, lookup, form, peer).await,
        _ => client_credentials(state, auth, jti, form, peer).await,
    }
}

/// Does the token request match what the code was issued for (redirect URI, PKCE)? The refusal is an
/// OAuth error code and its description.
fn check_code_request(
    code: &CodeRecord,
    redirect_uri: &str,
    code_verifier: Option<&str>,
) -> Result<(), (&'static str, &'static str)> {
    let s = |k: &str| code.payload.get(k).and_then(Value::as_str);
    if s("redirect_uri") != Some(redirect_uri) {
        return Err((
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        ));
    }
    match (s("code_challenge"), code_verifier) {
        (Some(challenge), Some(verifier)) if verify_pkce(verifier, challenge) => Ok(()),
        (Some(_), Some(_)) => Err((
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        )),
        (Some(_), None) => Err(("invalid_request", "code_verifier is required")),
        (None, Some(_)) => Err((
            "invalid_request",
            "code_verifier sent but no code_challenge was",
        )),
        (None, None) => Ok(()),
    }
}

async fn authorization_code(
    state: &AppState,
    auth: &Authenticated,
    jti: &mut PendingJti,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let code = code_param(form).ok_or_else(|| oauth("invalid_request", "code is required"))?;
    let redirect_uri = first(form, "redirect_uri")
        .ok_or_else(|| oauth("invalid_request", "redirect_uri is required"))?;
    let code_verifier = first(form, "code_verifier");
    let client_id = &auth.client.client_id;
    let code_hash = secrets::token_hash(code);
    // One store round trip: the transaction claims the code for this client, then asks `decide` (the
    // request against the code, and the refresh token its grant's scope calls for) before it stores
    // anything; the code's row is read and spent by the same statement.
    let refresh_secret = crate::random::token(32);
    let refusal = std::sync::OnceLock::new();
    let decide = |code: &CodeRecord, grant: &GrantRecord| match check_code_request(
        code,
        redirect_uri,
        code_verifier,
    ) {
        Ok(()) => CodeDecision::Issue {
            refresh_token: refresh_record(state, &refresh_secret, &grant.scope, &grant.id, now),
        },
        Err(e) => {
            let _ = refusal.set(e);
            CodeDecision::Refuse
        }
    };
    let assertion_jti = jti.take();
    let outcome = state
        .store
        .exchange_code(
            &CodeExchange {
                code_hash: &code_hash,
                client_id,
                assertion_jti: assertion_jti.as_ref(),
                action: CodeAction::Decide(&decide),
            },
            now,
        )
        .await?;
    let (record, grant) = match outcome {
        CodeExchangeOutcome::Issued { code, grant } => (code, grant),
        CodeExchangeOutcome::AssertionReplayed => {
            return Err(client_auth::replayed(state, client_id).await)
        }
        CodeExchangeOutcome::AlreadyUsed { grant_id } => {
            // A replayed code: whatever the first redemption issued is now revoked.
            if grant_id.is_some() {
                state.revocations.mark_stale();
            }
            audit(
                state,
                "code.replayed",
                "failure",
                Some(client_id),
                None,
                None,
                Some(peer),
                json!({"grant_id": grant_id}),
            )
            .await;
            return Err(oauth(
                "invalid_grant",
                "the authorization code was already used",
            ));
        }
        CodeExchangeOutcome::WrongClient { grant_id } => {
            if grant_id.is_some() {
                state.revocations.mark_stale();
            }
            return Err(oauth(
                "invalid_grant",
                "the authorization code was issued to another client",
            ));
        }
        CodeExchangeOutcome::Refused => {
            let (code, description) = refusal.get().copied().unwrap_or((
                "invalid_grant",
                "the authorization code does not match this request",
            ));
            return Err(oauth(code, description));
        }
        CodeExchangeOutcome::Expired => {
            return Err(oauth("invalid_grant", "the authorization code has expired"))
        }
        CodeExchangeOutcome::NotFound => {
            return Err(oauth("invalid_grant", "unknown authorization code"))
        }
        CodeExchangeOutcome::GrantInactive => {
            return Err(oauth("invalid_grant", "the authorization was revoked"))
        }
    };
    let nonce = record.payload.get("nonce").and_then(Value::as_str);
    // The same test `decide` made on this grant: the secret was stored if and only if it passes.
    let refresh_token = wants_refresh_token(&grant.scope).then_some(refresh_secret.as_str());
    let body = token_body(state, &grant, &grant.scope, nonce, true, refresh_token, now)?;
    audit(
        state,
        "token.issued",
        "success",
        Some(client_id),
        grant.member_id.as_deref(),
        grant.patient.as_deref(),
        Some(peer),
        json!({"grant_id": grant.id, "grant_type": "authorization_code", "scope": grant.scope}),
    )
    .await;
    Ok(token_response(body))
}

/// Does the granted scope ask for a refresh token?
fn wants_refresh_token(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| s == "offline_access" || s == "online_access")
}

/// The record of refresh token `secret` for a grant, if its scope asks for one.
fn refresh_record(
    state: &AppState,
    secret: &str,
    scope: &str,
    grant_id: &str,
    now: OffsetDateTime,
) -> Option<RefreshTokenRecord> {
    wants_refresh_token(scope).then(|| RefreshTokenRecord {
        token_hash: secrets::token_hash(secret),
        grant_id: grant_id.to_string(),
        expires_at: now + refresh_lifetime(state, scope),
        created_at: now,
    })
}

/// The token response for a grant: an access token for `scope`, an id_token if asked (and `openid` was
/// granted), and the refresh token already stored by the caller's write, if any.
fn token_body(
    state: &AppState,
    grant: &GrantRecord,
    scope: &str,
    nonce: Option<&str>,
    with_id_token: bool,
    refresh_token: Option<&str>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let keys = state.signing.current();
    let es = keys
        .active(Alg::ES256)
        .ok_or_else(|| ApiError::internal(Wire::OAuth, &"no active ES256 key"))?;
    let t = now.unix_timestamp();
    let lifetime = state.config.tokens.access_token as i64;
    let fhir_user = grant
        .data
        .get("fhir_user")
        .and_then(Value::as_str)
        .map(|f| format!("{}/{}", state.endpoints.fhir_base, f));
    let has = |s: &str| scope.split_whitespace().any(|x| x == s);
    let claims = AccessClaims {
        iss: state.endpoints.issuer().to_string(),
        sub: grant
            .member_id
            .clone()
            .unwrap_or_else(|| grant.client_id.clone()),
        aud: state.endpoints.fhir_base.clone(),
        exp: t + lifetime,
        iat: t,
        jti: crate::random::token(16),
        client_id: grant.client_id.clone(),
        scope: scope.to_string(),
        patient: grant.patient.clone(),
        fhir_user: fhir_user.clone().filter(|_| has("fhirUser")),
        gid: Some(grant.id.clone()),
    };
    let access =
        tokens::sign_access_token(es, &claims).map_err(|e| ApiError::internal(Wire::OAuth, &e))?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": scope,
    });
    if let Some(p) = &grant.patient {
        body["patient"] = json!(p);
    }
    if with_id_token && has("openid") {
        if let (Some(rs), Some(member)) = (keys.active(Alg::RS256), &grant.member_id) {
            let id = tokens::id_token_claims(
                state.endpoints.issuer(),
                member,
                &grant.client_id,
                t,
                t + lifetime,
                nonce,
                fhir_user.as_deref().filter(|_| has("fhirUser")),
                Some(&tokens::at_hash(&access)),
            );
            body["id_token"] = json!(rs
                .sign_compact(&serde_json::Map::new(), &id)
                .map_err(|e| ApiError::internal(Wire::OAuth, &e))?);
        }
    }
    if let Some(r) = refresh_token {
        body["refresh_token"] = json!(r);
    }
    Ok(body)
}

fn refresh_lifetime(state: &AppState, scope: &str) -> time::Duration {
    if scope.split_whitespace().any(|s| s == "offline_access") {
        time::Duration::seconds(state.config.tokens.refresh_token as i64)
    } else {
        // online_access: usable while the member's sign-in would be.
        time::Duration::seconds(crate::session::SESSION_LIFETIME)
    }
}

async fn refresh(
    state: &AppState,
    auth: &Authenticated,
    jti: &mut PendingJti,
    lookup: Lookup,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let presented = refresh_token_param(form)
        .ok_or_else(|| oauth("invalid_request", "refresh_token is required"))?;
    let old_hash = secrets::token_hash(presented);
    let info = match lookup {
        Lookup::RefreshToken(info) => *info,
        _ => state.store.find_refresh_token(&old_hash).await?,
    };
    let Some(info) = info.filter(|i| i.is_active(now)) else {
        // Unknown, expired, revoked or already rotated. The store tells a rotated token coming back (a
        // reuse) apart, and then revokes its grant.
        let assertion_jti = jti.take();
        match state
            .store
            .reject_refresh_token(&old_hash, assertion_jti.as_ref(), now)
            .await?
        {
            RefreshRotation::AssertionReplayed => {
                return Err(client_auth::replayed(state, &auth.client.client_id).await)
            }
            RefreshRotation::Reused { grant_id } => {
                state.revocations.mark_stale();
                audit(
                    state,
                    "refresh.reuse_detected",
                    "failure",
                    Some(&auth.client.client_id),
                    None,
                    None,
                    Some(peer),
                    json!({"grant_id": grant_id}),
                )
                .await;
            }
            RefreshRotation::Rotated(_) | RefreshRotation::Invalid => {}
        }
        return Err(oauth("invalid_grant", "the refresh token is not valid"));
    };
    // Ownership and scope are checked before rotating, so that a refused request changes nothing.
    let grant = info.grant;
    if grant.client_id != auth.client.client_id {
        return Err(oauth(
            "invalid_grant",
            "the refresh token was issued to another client",
        ));
    }
    // An optional narrower scope (RFC 6749 §6): every requested scope must have been granted.
    let scope = match first(form, "scope") {
        Some(req) => {
            let toks = scopes::tokenize(req).map_err(|e| oauth("invalid_scope", &e.to_string()))?;
            if toks.is_empty()
                || toks
                    .iter()
                    .any(|t| !grant.scope.split_whitespace().any(|g| g == *t))
            {
                return Err(oauth(
                    "invalid_scope",
                    "a refresh may only narrow the granted scope",
                ));
            }
            toks.join(" ")
        }
        None => grant.scope.clone(),
    };
    let new_token = crate::random::token(32);
    let new_record = RefreshTokenRecord {
        token_hash: secrets::token_hash(&new_token),
        grant_id: grant.id.clone(),
        expires_at: now + refresh_lifetime(state, &grant.scope),
        created_at: now,
    };
    let assertion_jti = jti.take();
    let grant = match state
        .store
        .rotate_refresh_token(&old_hash, &new_record, assertion_jti.as_ref(), now)
        .await?
    {
        RefreshRotation::Rotated(g) => g,
        RefreshRotation::AssertionReplayed => {
            return Err(client_auth::replayed(state, &auth.client.client_id).await)
        }
        RefreshRotation::Reused { grant_id } => {
            state.revocations.mark_stale();
            audit(
                state,
                "refresh.reuse_detected",
                "failure",
                Some(&auth.client.client_id),
                grant.member_id.as_deref(),
                grant.patient.as_deref(),
                Some(peer),
                json!({"grant_id": grant_id}),
            )
            .await;
            return Err(oauth(
                "invalid_grant",
                "the refresh token was already used; the authorization is revoked",
            ));
        }
        RefreshRotation::Invalid => {
            return Err(oauth("invalid_grant", "the refresh token is not valid"))
        }
    };
    let body = token_body(state, &grant, &scope, None, true, Some(&new_token), now)?;
    audit(
        state,
        "token.refreshed",
        "success",
        Some(&auth.client.client_id),
        grant.member_id.as_deref(),
        grant.patient.as_deref(),
        Some(peer),
        json!({"grant_id": grant.id, "scope": scope}),
    )
    .await;
    Ok(token_response(body))
}

async fn client_credentials(
    state: &AppState,
    auth: &Authenticated,
    jti: &mut PendingJti,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    if auth.method != client_auth::Method::UdapAssertion
        && auth.method != client_auth::Method::JwksAssertion
    {
        return Err(ApiError::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_credentials requires private_key_jwt",
        ));
    }
    if let Some(b2b) = auth.extensions.as_ref().and_then(|e| e.get("hl7-b2b")) {
        udap::check_hl7_b2b(b2b).map_err(|e| oauth("invalid_grant", &e))?;
    }
    let now = OffsetDateTime::now_utc();
    let requested = first(form, "scope").unwrap_or_default();
    let registered = auth
        .client
        .metadata
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let granted = scopes::negotiate(
        requested,
        registered,
        GrantContext::Backend,
        &server_policy(),
    )
    .map_err(|e| oauth("invalid_scope", &e.to_string()))?;
    let scope = scopes::to_string(&granted);
    let grant = GrantRecord {
        id: crate::random::token(16),
        client_id: auth.client.client_id.clone(),
        member_id: None,
        patient: None,
        scope: scope.clone(),
        created_at: now,
        expires_at: Some(now + time::Duration::seconds(state.config.tokens.access_token as i64)),
        revoked_at: None,
        data: json!({"b2b": auth.extensions.as_ref().and_then(|e| e.get("hl7-b2b"))}),
    };
    let assertion_jti = jti.take();
    if !state
        .store
        .insert_grant_once(&grant, assertion_jti.as_ref(), now)
        .await?
    {
        return Err(client_auth::replayed(state, &auth.client.client_id).await);
    }
    let body = token_body(state, &grant, &scope, None, false, None, now)?;
    audit(
        state,
        "token.issued",
        "success",
        Some(&auth.client.client_id),
        None,
        None,
        Some(peer),
        json!({"grant_type": "client_credentials", "scope": scope}),
    )
    .await;
    Ok(token_response(body))
}
