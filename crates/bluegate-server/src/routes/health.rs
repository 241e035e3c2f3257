//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::SharedState;
use crate::error::ApiError;

/// The process is up.
pub async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "ok"}).to_string(),
    )
        .into_response()
}

/// The store answers; load balancers stop sending traffic to a node that cannot reach it.
pub async fn readyz(State(state): State<SharedState>) -> Result<Response, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"status": "ready", "store": state.store.backend_name()}).to_string(),
        )
            .into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::oauth(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the store is not reachable",
            ))
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
