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
use bluegate_store::{CodeRedemption, GrantRecord, RefreshRotation, RefreshTokenRecord};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::{AppState, SharedState};
use crate::client_auth::{self, Authenticated};
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
    let auth = client_auth::authenticate(&state, &headers, &form, &state.endpoints.token).await?;
    let granted_types: Vec<&str> = auth
        .client
        .metadata
        .get("grant_types")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // A refresh token is usable by any client registered for the authorization code grant.
    let allowed = granted_types.contains(&grant_type.as_str())
        || (grant_type == "refresh_token" && granted_types.contains(&"authorization_code"));
    if !allowed {
        return Err(oauth(
            "unauthorized_client",
            "this client is not registered for that grant type",
        ));
    }
    match grant_type.as_str() {
        "authorization_code" => authorization_code(&state, &auth, &form, peer).await,
        "refresh_token" => refresh(&state, &auth, &form, peer).await,
        _ => client_credentials(&state, &auth, &form, peer).await,
    }
}

async fn authorization_code(
    state: &AppState,
    auth: &Authenticated,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let code = first(form, "code")
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or_else(|| oauth("invalid_request", "code is required"))?;
    let redirect_uri = first(form, "redirect_uri")
        .ok_or_else(|| oauth("invalid_request", "redirect_uri is required"))?;
    let client_id = &auth.client.client_id;
    let record = match state
        .store
        .redeem_code(&secrets::token_hash(code), now)
        .await?
    {
        CodeRedemption::Redeemed(r) => r,
        CodeRedemption::AlreadyUsed { grant_id } => {
            // A replayed code: whatever the first redemption issued is revoked (RFC 6749 §4.1.2).
            if let Some(g) = &grant_id {
                state.store.revoke_grant(g, now).await?;
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
        CodeRedemption::Expired => {
            return Err(oauth("invalid_grant", "the authorization code has expired"))
        }
        CodeRedemption::NotFound => {
            return Err(oauth("invalid_grant", "unknown authorization code"))
        }
    };
    let p = &record.payload;
    let s = |k: &str| p.get(k).and_then(Value::as_str);
    if record.client_id != *client_id {
        if let Some(g) = &record.grant_id {
            state.store.revoke_grant(g, now).await?;
            state.revocations.mark_stale();
        }
        return Err(oauth(
            "invalid_grant",
            "the authorization code was issued to another client",
        ));
    }
    if s("redirect_uri") != Some(redirect_uri) {
        return Err(oauth(
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        ));
    }
    match (s("code_challenge"), first(form, "code_verifier")) {
        (Some(challenge), Some(verifier)) if verify_pkce(verifier, challenge) => {}
        (Some(_), Some(_)) => {
            return Err(oauth(
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            ))
        }
        (Some(_), None) => return Err(oauth("invalid_request", "code_verifier is required")),
        (None, Some(_)) => {
            return Err(oauth(
                "invalid_request",
                "code_verifier sent but no code_challenge was",
            ))
        }
        (None, None) => {}
    }
    let grant_id = record
        .grant_id
        .clone()
        .ok_or_else(|| oauth("invalid_grant", "the code has no grant"))?;
    let grant = state
        .store
        .get_grant(&grant_id)
        .await?
        .filter(|g| g.revoked_at.is_none())
        .ok_or_else(|| oauth("invalid_grant", "the authorization was revoked"))?;
    let body = issue(state, &grant, s("nonce"), true, now).await?;
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

/// Access token (+ id_token, + refresh token) for a grant.
async fn issue(
    state: &AppState,
    grant: &GrantRecord,
    nonce: Option<&str>,
    with_id_token: bool,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    issue_scoped(state, grant, &grant.scope, nonce, with_id_token, now, true).await
}

#[allow(clippy::too_many_arguments)]
async fn issue_scoped(
    state: &AppState,
    grant: &GrantRecord,
    scope: &str,
    nonce: Option<&str>,
    with_id_token: bool,
    now: OffsetDateTime,
    new_refresh: bool,
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
    if new_refresh && (has("offline_access") || has("online_access")) {
        let refresh = crate::random::token(32);
        state
            .store
            .insert_refresh_token(&RefreshTokenRecord {
                token_hash: secrets::token_hash(&refresh),
                grant_id: grant.id.clone(),
                expires_at: now + refresh_lifetime(state, scope),
                created_at: now,
            })
            .await?;
        body["refresh_token"] = json!(refresh);
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
    form: &[(String, String)],
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let presented = first(form, "refresh_token")
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .ok_or_else(|| oauth("invalid_request", "refresh_token is required"))?;
    let old_hash = secrets::token_hash(presented);
    // Check ownership before rotating, so that another client's token is refused without side effects.
    let Some(current) = state.store.get_refresh_token(&old_hash).await? else {
        // Unknown, revoked or already rotated: rotation below tells reuse apart and revokes the grant.
        let placeholder = RefreshTokenRecord {
            token_hash: secrets::token_hash(&crate::random::token(32)),
            grant_id: String::new(),
            expires_at: now,
            created_at: now,
        };
        if let RefreshRotation::Reused { grant_id } = state
            .store
            .rotate_refresh_token(&old_hash, &placeholder, now)
            .await?
        {
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
        return Err(oauth("invalid_grant", "the refresh token is not valid"));
    };
    let grant = state
        .store
        .get_grant(&current.grant_id)
        .await?
        .filter(|g| g.revoked_at.is_none())
        .ok_or_else(|| oauth("invalid_grant", "the authorization was revoked"))?;
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
    match state
        .store
        .rotate_refresh_token(&old_hash, &new_record, now)
        .await?
    {
        RefreshRotation::Rotated(_) => {}
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
    }
    let mut body = issue_scoped(state, &grant, &scope, None, true, now, false).await?;
    body["refresh_token"] = json!(new_token);
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
    state.store.insert_grant(&grant).await?;
    let body = issue_scoped(state, &grant, &scope, None, false, now, false).await?;
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
