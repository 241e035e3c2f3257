//! Token introspection (RFC 7662 with SMART's fields), revocation (RFC 7009) and the OpenID Connect
//! userinfo endpoint.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bluegate_core::secrets;
use bluegate_core::tokens::{self, AccessClaims};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::app::{AppState, SharedState};
use crate::client_auth;
use crate::error::ApiError;
use crate::routes::authorize::{audit, first, pairs};

fn json_ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A live access token: signature, expiry, audience, and not revoked (itself or its grant).
pub async fn live_access_token(
    state: &AppState,
    token: &str,
) -> Result<Option<AccessClaims>, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let keys = state.signing.current();
    let Ok(claims) = tokens::verify_access_token(
        token,
        &keys,
        state.endpoints.issuer(),
        &state.endpoints.fhir_base,
        now,
        state.config.security.clock_skew_secs as i64,
    ) else {
        return Ok(None);
    };
    if state.store.is_access_token_revoked(&claims.jti).await? {
        return Ok(None);
    }
    if let Some(gid) = &claims.gid {
        match state.store.get_grant(gid).await? {
            Some(g) if g.revoked_at.is_none() => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(claims))
}

/// `POST {introspection_endpoint}`: for authenticated clients; a client sees its own tokens, a resource
/// server any token; everything else is `{"active": false}` (smart.md decision 4).
pub async fn introspect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form = pairs(&body);
    let auth =
        client_auth::authenticate(&state, &headers, &form, &state.endpoints.introspect).await?;
    let token = first(&form, "token")
        .filter(|t| !t.is_empty() && t.len() <= 8192)
        .ok_or_else(|| {
            ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "token is required",
            )
        })?;
    let inactive = json!({"active": false});
    let may_see =
        |client_id: &str| auth.client.is_resource_server || auth.client.client_id == client_id;
    if let Some(c) = live_access_token(&state, token).await? {
        if !may_see(&c.client_id) {
            return Ok(json_ok(inactive));
        }
        let mut body = json!({
            "active": true, "token_type": "Bearer", "scope": c.scope, "client_id": c.client_id,
            "exp": c.exp, "iat": c.iat, "sub": c.sub, "iss": c.iss, "aud": c.aud,
        });
        if let Some(p) = c.patient {
            body["patient"] = json!(p);
        }
        if let Some(f) = c.fhir_user {
            body["fhirUser"] = json!(f);
        }
        return Ok(json_ok(body));
    }
    if let Some(rt) = state
        .store
        .get_refresh_token(&secrets::token_hash(token))
        .await?
    {
        if rt.expires_at > OffsetDateTime::now_utc() {
            if let Some(g) = state
                .store
                .get_grant(&rt.grant_id)
                .await?
                .filter(|g| g.revoked_at.is_none())
            {
                if may_see(&g.client_id) {
                    let mut body = json!({
                        "active": true, "token_type": "refresh_token", "scope": g.scope, "client_id": g.client_id,
                        "exp": rt.expires_at.unix_timestamp(), "iat": rt.created_at.unix_timestamp(),
                        "sub": g.member_id.clone().unwrap_or_else(|| g.client_id.clone()),
                        "iss": state.endpoints.issuer(),
                    });
                    if let Some(p) = &g.patient {
                        body["patient"] = json!(p);
                    }
                    return Ok(json_ok(body));
                }
            }
        }
    }
    Ok(json_ok(inactive))
}

/// `POST {revocation_endpoint}` (RFC 7009): revoking a refresh token revokes its grant; revoking an access
/// token revokes that token everywhere. The answer is 200 whatever the token was.
pub async fn revoke(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form = pairs(&body);
    let auth = client_auth::authenticate(&state, &headers, &form, &state.endpoints.revoke).await?;
    let token = first(&form, "token")
        .filter(|t| !t.is_empty() && t.len() <= 8192)
        .ok_or_else(|| {
            ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "token is required",
            )
        })?;
    let now = OffsetDateTime::now_utc();
    let client_id = auth.client.client_id.clone();
    if let Some(c) = live_access_token(&state, token).await? {
        if c.client_id == client_id {
            let exp = OffsetDateTime::from_unix_timestamp(c.exp).unwrap_or(now);
            state.store.revoke_access_token(&c.jti, exp, now).await?;
            state.revocations.mark_stale();
            audit(
                &state,
                "token.revoked",
                "success",
                Some(&client_id),
                None,
                c.patient.as_deref(),
                None,
                json!({"kind": "access_token"}),
            )
            .await;
        }
    } else {
        let hash = secrets::token_hash(token);
        if let Some(rt) = state.store.get_refresh_token(&hash).await? {
            let owner = state
                .store
                .get_grant(&rt.grant_id)
                .await?
                .map(|g| g.client_id);
            if owner.as_deref() == Some(client_id.as_str()) {
                state.store.revoke_refresh_token(&hash, now).await?;
                state.revocations.mark_stale();
                audit(
                    &state,
                    "token.revoked",
                    "success",
                    Some(&client_id),
                    None,
                    None,
                    None,
                    json!({"kind": "refresh_token", "grant_id": rt.grant_id}),
                )
                .await;
            }
        }
    }
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The bearer token of a request (`Authorization: Bearer ...`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `GET {userinfo_endpoint}` (OpenID Connect Core §5.3).
pub async fn userinfo(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unauthorized = || {
        ApiError::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a valid access token with the openid scope is required",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )
    };
    let token = bearer(&headers).ok_or_else(unauthorized)?;
    let c = live_access_token(&state, token)
        .await?
        .ok_or_else(unauthorized)?;
    if !c.scope.split_whitespace().any(|s| s == "openid") {
        return Err(unauthorized());
    }
    let mut body = json!({"sub": c.sub});
    if let Some(f) = c.fhir_user {
        body["fhirUser"] = json!(f);
    }
    Ok(json_ok(body))
}
