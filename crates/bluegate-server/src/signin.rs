//! Member sign-in, shared by the authorization flow and the account page: throttling of failures per
//! account and per address, constant-work password checks (no user enumeration by timing), the audit
//! trail, and the signed session cookie on success.

use std::net::SocketAddr;

use axum::http::HeaderValue;
use bluegate_store::MemberRecord;
use serde_json::json;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::error::{ApiError, Wire};
use crate::routes::authorize::audit;
use crate::session::{self, Session};

/// Failed sign-ins per account, and per address, within the store's window before sign-in is refused.
pub const MAX_FAILURES_PER_ACCOUNT: u32 = 5;
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;

pub enum SignIn {
    /// Signed in: the member and the `Set-Cookie` value of the new session.
    Ok(MemberRecord, HeaderValue),
    /// Too many recent failures for this account or address.
    Locked,
    /// Wrong username or password (deliberately not told apart).
    Failed,
    /// Empty or oversized input.
    Malformed,
}

/// Check credentials; `client_id` and `via` only label the audit events.
pub async fn sign_in(
    state: &AppState,
    username: &str,
    password: &str,
    peer: SocketAddr,
    client_id: Option<&str>,
    via: &str,
) -> Result<SignIn, ApiError> {
    if username.is_empty() || username.len() > 128 || password.is_empty() || password.len() > 1024 {
        return Ok(SignIn::Malformed);
    }
    let now = OffsetDateTime::now_utc();
    let acct_key = format!("account:{}", username.to_lowercase());
    let addr_key = format!("address:{}", peer.ip());
    let since = now - bluegate_store::LOGIN_FAILURE_WINDOW;
    let locked = state.store.count_login_failures(&acct_key, since).await?
        >= MAX_FAILURES_PER_ACCOUNT
        || state.store.count_login_failures(&addr_key, since).await? >= MAX_FAILURES_PER_ADDRESS;
    if locked {
        audit(
            state,
            "login.locked",
            "failure",
            client_id,
            None,
            None,
            Some(peer),
            json!({"username": username, "via": via}),
        )
        .await;
        return Ok(SignIn::Locked);
    }
    let member = state
        .store
        .get_member_by_username(username)
        .await?
        .filter(|m| !m.disabled);
    // Hash even for unknown users so that timing does not reveal which usernames exist.
    let ok = match &member {
        Some(m) => crate::passwords::verify(password, &m.password_hash),
        None => {
            crate::passwords::verify(password, crate::passwords::dummy_hash());
            false
        }
    };
    let Some(member) = member.filter(|_| ok) else {
        state.store.record_login_failure(&acct_key, now).await?;
        state.store.record_login_failure(&addr_key, now).await?;
        audit(
            state,
            "login.failure",
            "failure",
            client_id,
            None,
            None,
            Some(peer),
            json!({"username": username, "via": via}),
        )
        .await;
        return Ok(SignIn::Failed);
    };
    state.store.reset_login_failures(&acct_key).await?;
    audit(
        state,
        "login.success",
        "success",
        client_id,
        Some(&member.id),
        None,
        Some(peer),
        json!({"via": via}),
    )
    .await;
    let t = now.unix_timestamp();
    let sealed = session::seal_session(
        state,
        &Session {
            sub: member.id.clone(),
            iat: t,
            exp: t + session::SESSION_LIFETIME,
        },
    )
    .ok_or_else(|| ApiError::internal(Wire::OAuth, &"cannot sign the session"))?;
    Ok(SignIn::Ok(member, session::session_cookie(&sealed)))
}

/// The visible message for each outcome.
pub fn message(outcome: &SignIn) -> Option<&'static str> {
    match outcome {
        SignIn::Ok(..) => None,
        SignIn::Locked => Some("Too many failed sign-in attempts. Wait 15 minutes and try again."),
        SignIn::Failed => Some("The username or password is not correct."),
        SignIn::Malformed => Some("Enter your username and password."),
    }
}

pub fn status(outcome: &SignIn) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match outcome {
        SignIn::Ok(..) => StatusCode::OK,
        SignIn::Locked => StatusCode::TOO_MANY_REQUESTS,
        SignIn::Failed => StatusCode::UNAUTHORIZED,
        SignIn::Malformed => StatusCode::BAD_REQUEST,
    }
}
