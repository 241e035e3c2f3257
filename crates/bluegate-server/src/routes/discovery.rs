//! Public discovery documents: SMART configuration, OpenID configuration, UDAP metadata, the FHIR
//! CapabilityStatement and the JWKS.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bluegate_core::discovery;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::app::SharedState;
use crate::error::{ApiError, Wire};

fn json_response(content_type: &'static str, body: &Value, max_age: u32) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}

pub async fn smart_configuration(State(state): State<SharedState>) -> Response {
    json_response(
        "application/json",
        &discovery::smart_configuration(&state.endpoints),
        300,
    )
}

pub async fn openid_configuration(State(state): State<SharedState>) -> Response {
    json_response(
        "application/json",
        &discovery::openid_configuration(&state.endpoints),
        300,
    )
}

#[derive(Deserialize)]
pub struct UdapQuery {
    community: Option<String>,
}

/// `GET {fhir}/.well-known/udap[?community=URI]`. An unknown community gets 204 No Content
/// (udap.md decision 2).
pub async fn udap(
    State(state): State<SharedState>,
    Query(q): Query<UdapQuery>,
) -> Result<Response, ApiError> {
    let Some(community) = state.community(q.community.as_deref()) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let signed = community
        .signed_metadata(&state.endpoints, now)
        .map_err(|e| ApiError::internal(Wire::OAuth, &e))?;
    let mut doc = discovery::udap_metadata(&state.endpoints);
    doc.insert("signed_metadata".to_string(), Value::String(signed));
    Ok(json_response("application/json", &Value::Object(doc), 60))
}

pub async fn capability_statement(State(state): State<SharedState>) -> Response {
    let date = OffsetDateTime::now_utc().date().to_string();
    let body = discovery::capability_statement(
        &state.endpoints,
        env!("CARGO_PKG_VERSION"),
        &date,
        crate::fhir_capabilities::served_resources(),
    );
    json_response("application/fhir+json", &body, 300)
}

pub async fn jwks(State(state): State<SharedState>) -> Response {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    json_response("application/json", &state.signing.current().jwks(now), 300)
}
