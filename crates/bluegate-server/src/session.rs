//! Browser state for the member-facing flow, kept without server-side sessions so that any node can serve
//! any step:
//! - the **transaction** (a validated authorization request on its way through sign-in, patient choice and
//!   consent) travels in a hidden form field as a short-lived JWT signed with the server's key;
//! - the **session** (a signed-in member) is a `__Host-` cookie holding another such JWT;
//! - **CSRF** protection is a double-submit token: a random `__Host-` cookie repeated in every form, plus
//!   an `Origin` check on every POST.
//!
//! Each token kind has its own `typ`, so none can be replayed as another (or as an access token).

use axum::http::{header, HeaderMap, HeaderValue};
use bluegate_core::jose::{self, Alg, TimeRules};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::app::AppState;

pub const SESSION_COOKIE: &str = "__Host-bluegate_session";
pub const CSRF_COOKIE: &str = "__Host-bluegate_csrf";
/// How long a member stays signed in.
pub const SESSION_LIFETIME: i64 = 30 * 60;
/// How long a member has to get through sign-in and consent.
pub const TXN_LIFETIME: i64 = 15 * 60;

const TXN_TYP: &str = "bluegate-txn+jwt";
const SESSION_TYP: &str = "bluegate-session+jwt";

/// A validated authorization request in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Txn {
    pub client_id: String,
    pub redirect_uri: String,
    /// Negotiated scopes (what the member may grant), in requested spelling.
    pub scope: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    pub exp: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

fn sign<T: Serialize>(state: &AppState, typ: &str, body: &T) -> Option<String> {
    let keys = state.signing.current();
    let key = keys.active(Alg::ES256)?;
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(typ.into()));
    let claims = serde_json::to_value(body).ok()?;
    key.sign_compact(&header, &claims).ok()
}

fn verify<T: DeserializeOwned>(state: &AppState, typ: &str, token: &str, now: i64) -> Option<T> {
    let parsed = jose::parse_compact(token, &[Alg::ES256]).ok()?;
    if parsed.header().typ.as_deref() != Some(typ) {
        return None;
    }
    let kid = parsed.header().kid.clone()?;
    let keys = state.signing.current();
    let key = keys.find(&kid, now)?;
    let verified = parsed.verify_with_spki(&key.public_spki_der()).ok()?;
    jose::check_time_claims(
        verified.claims(),
        &TimeRules {
            now,
            leeway: 0,
            max_lifetime: None,
        },
    )
    .ok()?;
    serde_json::from_value(Value::Object(verified.into_claims())).ok()
}

pub fn seal_txn(state: &AppState, txn: &Txn) -> Option<String> {
    sign(state, TXN_TYP, txn)
}

pub fn open_txn(state: &AppState, token: &str, now: i64) -> Option<Txn> {
    verify(state, TXN_TYP, token, now)
}

pub fn seal_session(state: &AppState, s: &Session) -> Option<String> {
    sign(state, SESSION_TYP, s)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The signed-in member, if the session cookie is valid.
pub fn current_session(state: &AppState, headers: &HeaderMap, now: i64) -> Option<Session> {
    let token = cookie(headers, SESSION_COOKIE)?;
    verify(state, SESSION_TYP, &token, now)
}

pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={SESSION_LIFETIME}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-bluegate_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
    )
}

/// The CSRF token for this browser: the existing cookie, or a new one (with the `Set-Cookie` to send).
pub fn csrf_token(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(t) = cookie(headers, CSRF_COOKIE).filter(|t| t.len() >= 22 && t.len() <= 64) {
        return (t, None);
    }
    let t = crate::random::token(24);
    let set = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={t}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .ok();
    (t, set)
}

/// A POST is genuine when its form carries the browser's CSRF cookie value and, if the browser sent an
/// `Origin`, it is this server's.
pub fn check_post(state: &AppState, headers: &HeaderMap, form_csrf: Option<&str>) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if origin != state.config.public_url.origin().ascii_serialization() {
            return false;
        }
    }
    match (cookie(headers, CSRF_COOKIE), form_csrf) {
        (Some(c), Some(f)) => !c.is_empty() && bool::from(c.as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    }
}
