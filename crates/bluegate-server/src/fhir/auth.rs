//! The FHIR API's bearer check (R-1..R-5): the access token is verified locally (signature by one of our
//! published keys, `typ`, issuer, audience = this FHIR base, expiry) and checked against the revocation
//! mirror, so a request costs no database round trip for its token.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bluegate_core::scopes::{Grant, Interaction, Level};
use bluegate_core::tokens::{self, AccessClaims};
use bluegate_store::fhir::ResourceType;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::policy::{self, Decision};
use crate::app::AppState;
use crate::error::ApiError;

/// An authenticated caller of the FHIR API.
pub struct Caller {
    pub claims: AccessClaims,
    pub grant: Grant,
    /// The member's patients, loaded only when a `user/` scope needs them.
    member_patients: OnceCell<Vec<String>>,
}

fn challenge(state: &AppState, error: Option<&str>) -> HeaderValue {
    let realm = &state.endpoints.fhir_base;
    let text = match error {
        None => format!("Bearer realm=\"{realm}\""),
        Some(e) => format!("Bearer realm=\"{realm}\", error=\"{e}\""),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// 401 without a token, or with an invalid one.
pub fn unauthorized(state: &AppState, invalid: bool) -> ApiError {
    let (error, text) = if invalid {
        (
            Some("invalid_token"),
            "the access token is invalid, expired or revoked",
        )
    } else {
        (None, "an access token is required (Authorization: Bearer)")
    };
    ApiError::fhir(StatusCode::UNAUTHORIZED, "login", text)
        .with_header(header::WWW_AUTHENTICATE, challenge(state, error))
}

/// 403 with the scope that would have allowed the interaction.
pub fn insufficient_scope(state: &AppState, needed: &str) -> ApiError {
    let realm = &state.endpoints.fhir_base;
    let value = HeaderValue::from_str(&format!(
        "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{needed}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"insufficient_scope\""));
    ApiError::fhir(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("the access token's scopes do not allow this interaction (needs {needed})"),
    )
    .with_header(header::WWW_AUTHENTICATE, value)
}

/// The token of `Authorization: Bearer ...` (never from the query string, R-1).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ())?;
    let (scheme, token) = v.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(());
    }
    Ok(Some(token))
}

/// Verifies the request's bearer token. The error is the 401 to send.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = match bearer(headers) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(unauthorized(state, false)),
        Err(()) => return Err(unauthorized(state, true)),
    };
    let claims = verify(state, token).ok_or_else(|| unauthorized(state, true))?;
    let revoked = state
        .revocations
        .is_revoked(state.store.as_ref(), &claims.jti, claims.gid.as_deref())
        .await
        .map_err(|e| ApiError::internal(crate::error::Wire::Fhir, &e))?;
    if revoked {
        return Err(unauthorized(state, true));
    }
    Ok(Caller {
        grant: Grant::from_scope_string(&claims.scope),
        claims,
        member_patients: OnceCell::new(),
    })
}

/// The local part of the check: signature, typ, issuer, audience, expiry.
pub fn verify(state: &AppState, token: &str) -> Option<AccessClaims> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    tokens::verify_access_token(
        token,
        &state.signing.current(),
        state.endpoints.issuer(),
        &state.endpoints.fhir_base,
        now,
        state.config.security.clock_skew_secs as i64,
    )
    .ok()
}

impl Caller {
    /// The member's patients (for `user/` scopes): the member named by the token's `sub`; none for a
    /// token that is not a member's.
    async fn member_patients(&self, state: &AppState) -> Result<&[String], ApiError> {
        let v = self
            .member_patients
            .get_or_try_init(|| async {
                let m = state
                    .store
                    .get_member(&self.claims.sub)
                    .await
                    .map_err(|e| ApiError::internal(crate::error::Wire::Fhir, &e))?;
                Ok::<_, ApiError>(m.map(|m| m.patients).unwrap_or_default())
            })
            .await?;
        Ok(v.as_slice())
    }

    /// The decision for `rt`/`interaction`, loading the member's patients only if a `user/` scope is what
    /// grants it.
    pub async fn decide(
        &self,
        state: &AppState,
        rt: ResourceType,
        interaction: Interaction,
    ) -> Result<Decision, ApiError> {
        let needs_member = !policy::is_directory(rt)
            && matches!(
                self.grant.access(rt.as_str(), interaction),
                bluegate_core::scopes::Access::Allowed {
                    level: Level::User,
                    ..
                }
            );
        let member: &[String] = if needs_member {
            self.member_patients(state).await?
        } else {
            &[]
        };
        let patient = self.claims.patient.as_deref();
        Ok(policy::decide(&self.grant, rt, interaction, |level| {
            policy::reach_for_level(level, patient, member)
        }))
    }

    /// The decision for showing an `_include`d resource of type `rt`: read or search permission suffices.
    pub async fn decide_include(
        &self,
        state: &AppState,
        rt: ResourceType,
    ) -> Result<Option<policy::Allowed>, ApiError> {
        for interaction in [Interaction::Read, Interaction::Search] {
            if let Decision::Allowed(a) = self.decide(state, rt, interaction).await? {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }
}
