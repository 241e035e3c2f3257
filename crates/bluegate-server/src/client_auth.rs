//! Client authentication at the token, introspection and revocation endpoints: public clients
//! (`client_id` only), `client_secret_basic`, UDAP `private_key_jwt` with `x5c`, and SMART asymmetric
//! `private_key_jwt` with a registered JWKS. Exactly one method per request.
//!
//! A client assertion's `jti` is accepted once. [`authenticate`] records it at once; the token endpoint
//! uses [`authenticate_deferred`] and hands the [`PendingJti`] to the store write that issues the tokens,
//! so the replay check and the issue are one transaction (one durable commit per request), and
//! [`PendingJti::settle`] records it on any path that ended without that write.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use base64::Engine;
use bluegate_core::{secrets, tokens, udap};
use bluegate_store::{ClientRecord, ClientStatus, JtiRecord};
use serde_json::Value;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::authorize::{auth_method, first};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Public,
    SecretBasic,
    UdapAssertion,
    JwksAssertion,
}

#[derive(Debug)]
pub struct Authenticated {
    /// As the store had it at most [`crate::serve::MIRROR_STALENESS`] ago (see [`crate::clients`]).
    pub client: Arc<ClientRecord>,
    pub method: Method,
    /// UDAP assertion `extensions` (e.g. `hl7-b2b`).
    pub extensions: Option<serde_json::Map<String, Value>>,
}

fn invalid_client(basic: bool, description: &str) -> ApiError {
    let e = ApiError::oauth(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if basic {
        e.with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"bluegate\""),
        )
    } else {
        e
    }
}

fn bad_request(description: &str) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// `Authorization: Basic` credentials, form-urldecoded as RFC 6749 §2.3.1 requires.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| invalid_client(true, "malformed Authorization header"))?;
    let Some(b64) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Err(invalid_client(
            true,
            "only HTTP Basic client authentication is accepted here",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| invalid_client(true, "malformed Basic credentials"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| invalid_client(true, "malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| invalid_client(true, "malformed Basic credentials"))?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((dec(id), dec(secret))))
}

async fn load_client(
    state: &AppState,
    id: &str,
    basic: bool,
) -> Result<Arc<ClientRecord>, ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(invalid_client(basic, "unknown client"));
    }
    match state.clients.get(state.store.as_ref(), id).await? {
        Some(c) if c.status == ClientStatus::Active => Ok(c),
        _ => Err(invalid_client(
            basic,
            "unknown, disabled or cancelled client",
        )),
    }
}

/// A verified client assertion's `jti`, not yet in the replay cache. Give it to the store write that
/// records it ([`PendingJti::take`]), then [`PendingJti::settle`] before answering: that records it if
/// no write took it, so every authenticated request spends its assertion.
#[must_use = "an assertion's jti must be recorded: take() it into a store write, then settle()"]
#[derive(Debug)]
pub struct PendingJti(Option<JtiRecord>);

impl PendingJti {
    /// The jti for a store write that records it in its transaction; `None` after the first call, or
    /// when the client did not authenticate with an assertion.
    pub fn take(&mut self) -> Option<JtiRecord> {
        self.0.take()
    }

    /// Records the jti if no store write took it. A replay is `invalid_client`.
    pub async fn settle(self, state: &AppState) -> Result<(), ApiError> {
        let Some(j) = self.0 else { return Ok(()) };
        if state
            .store
            .remember_jti(&j.issuer, &j.jti, j.expires_at, OffsetDateTime::now_utc())
            .await?
        {
            Ok(())
        } else {
            Err(replayed(state, &j.issuer).await)
        }
    }
}

/// The answer to a replayed client assertion (audited).
pub async fn replayed(state: &AppState, client_id: &str) -> ApiError {
    audit_failure(state, client_id, "assertion replay").await;
    invalid_client(false, "client_assertion jti was already used")
}

/// Authenticate the client of a token-endpoint-style request, recording an assertion's `jti`.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
    audience: &str,
) -> Result<Authenticated, ApiError> {
    let (auth, jti) = authenticate_deferred(state, headers, form, audience).await?;
    jti.settle(state).await?;
    Ok(auth)
}

/// Authenticate the client, leaving an assertion's `jti` to the caller's store write (see [`PendingJti`]).
pub async fn authenticate_deferred(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
    audience: &str,
) -> Result<(Authenticated, PendingJti), ApiError> {
    let basic = basic_credentials(headers)?;
    let assertion = first(form, "client_assertion");
    let assertion_type = first(form, "client_assertion_type");
    let form_client_id = first(form, "client_id");
    if first(form, "client_secret").is_some() {
        return Err(bad_request(
            "client_secret in the request body is not supported; use HTTP Basic",
        ));
    }
    if basic.is_some() && (assertion.is_some() || assertion_type.is_some()) {
        return Err(bad_request("use exactly one client authentication method"));
    }
    let now = OffsetDateTime::now_utc();
    if let Some((id, secret)) = basic {
        if form_client_id.is_some_and(|f| f != id) {
            return Err(bad_request(
                "client_id does not match the authenticated client",
            ));
        }
        let client = load_client(state, &id, true).await?;
        let ok = auth_method(&client) == "client_secret_basic"
            && client
                .secret_hash
                .as_deref()
                .is_some_and(|h| secrets::verify_client_secret(&secret, h));
        if !ok {
            audit_failure(state, &id, "client_secret_basic").await;
            return Err(invalid_client(true, "client authentication failed"));
        }
        return Ok((
            Authenticated {
                client,
                method: Method::SecretBasic,
                extensions: None,
            },
            PendingJti(None),
        ));
    }
    if let Some(assertion) = assertion {
        if assertion_type != Some(JWT_BEARER) {
            return Err(bad_request(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        // The issuer names the client; the signature below proves it.
        let parsed = bluegate_core::jose::parse_compact(assertion, &bluegate_core::jose::Alg::ALL)
            .map_err(|e| invalid_client(false, &format!("client_assertion: {e}")))?;
        let iss = parsed
            .claims_unverified()
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if form_client_id.is_some_and(|f| f != iss) {
            return Err(bad_request("client_id does not match the assertion's iss"));
        }
        let client = load_client(state, &iss, false).await?;
        if auth_method(&client) != "private_key_jwt" {
            return Err(invalid_client(
                false,
                "this client is not registered for private_key_jwt",
            ));
        }
        let leeway = state.config.security.clock_skew_secs as i64;
        let t = now.unix_timestamp();
        let (jti, exp, method, extensions) = if let (Some(community), Some(reg_iss)) =
            (client.community.as_deref(), client.iss.as_deref())
        {
            let Some(trust) = state.trust.iter().find(|c| c.uri == community) else {
                return Err(invalid_client(
                    false,
                    "the client's trust community is no longer configured",
                ));
            };
            trust.prepare_for_jwt(assertion, t).await;
            let v = udap::validate_udap_assertion(
                assertion,
                &trust.community(),
                &trust.cache,
                reg_iss,
                &client.client_id,
                audience,
                t,
                leeway,
            )
            .map_err(|e| invalid_client(false, &format!("client_assertion: {e}")));
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    audit_failure(state, &client.client_id, "udap_private_key_jwt").await;
                    return Err(e);
                }
            };
            (v.jti, v.exp, Method::UdapAssertion, v.extensions)
        } else {
            let Some(jwks) = client.metadata.get("jwks") else {
                return Err(invalid_client(false, "the client has no registered keys"));
            };
            match tokens::validate_jwks_assertion(
                assertion,
                jwks,
                &client.client_id,
                audience,
                t,
                leeway,
            ) {
                Ok(v) => (v.jti, v.exp, Method::JwksAssertion, None),
                Err(e) => {
                    audit_failure(state, &client.client_id, "private_key_jwt").await;
                    return Err(invalid_client(false, &format!("client_assertion: {e}")));
                }
            }
        };
        let pending = PendingJti(Some(JtiRecord {
            issuer: client.client_id.clone(),
            jti,
            expires_at: OffsetDateTime::from_unix_timestamp(exp).unwrap_or(now),
        }));
        return Ok((
            Authenticated {
                client,
                method,
                extensions,
            },
            pending,
        ));
    }
    if assertion_type.is_some() {
        return Err(bad_request(
            "client_assertion_type without client_assertion",
        ));
    }
    let Some(id) = form_client_id else {
        return Err(invalid_client(false, "client authentication is required"));
    };
    let client = load_client(state, id, false).await?;
    if auth_method(&client) != "none" {
        audit_failure(state, id, "missing credentials").await;
        return Err(invalid_client(false, "this client must authenticate"));
    }
    Ok((
        Authenticated {
            client,
            method: Method::Public,
            extensions: None,
        },
        PendingJti(None),
    ))
}

async fn audit_failure(state: &AppState, client_id: &str, method: &str) {
    crate::routes::authorize::audit(
        state,
        "client.authentication_failed",
        "failure",
        Some(client_id),
        None,
        None,
        None,
        serde_json::json!({ "method": method }),
    )
    .await;
}
