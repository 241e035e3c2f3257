//! The member's account page (`management_endpoint`): which apps have access, and revoking it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use time::OffsetDateTime;

use crate::app::{AppState, SharedState};
use crate::error::ApiError;
use crate::pages;
use crate::routes::authorize::{audit, client_name, first, pairs};
use crate::session;

const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String, cookies: Vec<HeaderValue>) -> Response {
    crate::routes::authorize::html_with_csp(status, body, cookies, PAGE_CSP)
}

fn login(
    csrf: &str,
    error: Option<&str>,
    status: StatusCode,
    cookies: Vec<HeaderValue>,
) -> Response {
    html(
        status,
        pages::login(&pages::LoginPage {
            app_name: "your account",
            txn: "",
            csrf,
            action: "/account/login",
            error,
            username: "",
        }),
        cookies,
    )
}

async fn apps_page(
    state: &AppState,
    member_id: &str,
    csrf: &str,
    notice: Option<&str>,
    cookies: Vec<HeaderValue>,
) -> Result<Response, ApiError> {
    let Some(member) = state.store.get_member(member_id).await? else {
        return Ok(login(csrf, None, StatusCode::OK, cookies));
    };
    let grants = state.store.list_grants_for_member(&member.id).await?;
    let mut names = Vec::new();
    for g in &grants {
        let name = match state.store.get_client(&g.client_id).await? {
            Some(c) => client_name(&c),
            None => g.client_id.clone(),
        };
        names.push(name);
    }
    let apps: Vec<pages::AppGrant<'_>> = grants
        .iter()
        .zip(names.iter())
        .map(|(g, name)| pages::AppGrant {
            grant_id: &g.id,
            app_name: name,
            patient_label: g.patient.as_deref().unwrap_or("-"),
            scopes: g
                .scope
                .split_whitespace()
                .map(pages::describe_scope)
                .collect(),
            granted_at: g.created_at.date().to_string(),
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        pages::apps(&pages::AppsPage {
            username: &member.username,
            apps: &apps,
            csrf,
            revoke_action: "/account/apps/revoke",
            logout_action: "/account/logout",
            notice,
        }),
        cookies,
    ))
}

/// `GET /account/apps`.
pub async fn show(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (csrf, set) = session::csrf_token(&headers);
    let cookies: Vec<HeaderValue> = set.into_iter().collect();
    match session::current_session(&state, &headers, now) {
        Some(s) => apps_page(&state, &s.sub, &csrf, None, cookies).await,
        None => Ok(login(&csrf, None, StatusCode::OK, cookies)),
    }
}

/// `POST /account/login`.
pub async fn account_login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form = pairs(&body);
    let csrf = first(&form, "csrf").unwrap_or_default().to_string();
    if !session::check_post(&state, &headers, Some(&csrf)) {
        return Ok(login(
            &session::csrf_token(&headers).0,
            Some("The form expired; try again."),
            StatusCode::FORBIDDEN,
            vec![],
        ));
    }
    let username = first(&form, "username")
        .unwrap_or_default()
        .trim()
        .to_string();
    let password = first(&form, "password").unwrap_or_default();
    let outcome =
        crate::signin::sign_in(&state, &username, password, peer, None, "account").await?;
    let crate::signin::SignIn::Ok(member, cookie) = outcome else {
        return Ok(login(
            &csrf,
            crate::signin::message(&outcome),
            crate::signin::status(&outcome),
            vec![],
        ));
    };
    apps_page(&state, &member.id, &csrf, None, vec![cookie]).await
}

/// `POST /account/apps/revoke`: revoke a grant (its refresh tokens and access tokens die with it) and
/// forget the remembered consent, so the app must ask again.
pub async fn revoke(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form = pairs(&body);
    let csrf = first(&form, "csrf").unwrap_or_default().to_string();
    let now = OffsetDateTime::now_utc();
    if !session::check_post(&state, &headers, Some(&csrf)) {
        return Ok(login(
            &session::csrf_token(&headers).0,
            Some("The form expired; try again."),
            StatusCode::FORBIDDEN,
            vec![],
        ));
    }
    let Some(sess) = session::current_session(&state, &headers, now.unix_timestamp()) else {
        return Ok(login(
            &csrf,
            Some("Your session has ended. Sign in again."),
            StatusCode::UNAUTHORIZED,
            vec![],
        ));
    };
    let grant_id = first(&form, "grant_id").unwrap_or_default();
    let notice = match state.store.get_grant(grant_id).await? {
        Some(g) if g.member_id.as_deref() == Some(sess.sub.as_str()) => {
            state.store.revoke_grant(&g.id, now).await?;
            state.revocations.mark_stale();
            state.store.delete_consent(&sess.sub, &g.client_id).await?;
            audit(
                &state,
                "grant.revoked",
                "success",
                Some(&g.client_id),
                Some(&sess.sub),
                g.patient.as_deref(),
                Some(peer),
                json!({"grant_id": g.id, "by": "member"}),
            )
            .await;
            "Access revoked."
        }
        _ => "Nothing to revoke.",
    };
    apps_page(&state, &sess.sub, &csrf, Some(notice), vec![]).await
}

/// `POST /account/logout`.
pub async fn logout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let form = pairs(&body);
    let csrf = first(&form, "csrf").unwrap_or_default().to_string();
    if !session::check_post(&state, &headers, Some(&csrf)) {
        return Ok(login(
            &session::csrf_token(&headers).0,
            None,
            StatusCode::FORBIDDEN,
            vec![],
        ));
    }
    Ok(login(
        &csrf,
        Some("You are signed out."),
        StatusCode::OK,
        vec![session::clear_session_cookie()],
    ))
}
