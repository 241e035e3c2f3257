//! The server's one error type and its mapping to wire errors.
//!
//! OAuth endpoints answer RFC 6749 §5.2 JSON (`error`, `error_description`), registration answers RFC 7591
//! errors in the same shape, and everything under the FHIR base answers a FHIR `OperationOutcome`. The
//! mapping lives here and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which wire format an error is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `{"error": ..., "error_description": ...}`
    OAuth,
    /// FHIR R4 OperationOutcome, `application/fhir+json`.
    Fhir,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub wire: Wire,
    /// OAuth error code (`invalid_request`, ...) or FHIR issue code (`not-found`, ...).
    pub code: &'static str,
    pub description: String,
    /// Extra headers such as `WWW-Authenticate`.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn oauth(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            wire: Wire::OAuth,
            code,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    pub fn fhir(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            wire: Wire::Fhir,
            code,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(wire: Wire, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        let (code, description) = match wire {
            Wire::OAuth => ("server_error", "the server could not complete the request"),
            Wire::Fhir => ("exception", "the server could not complete the request"),
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            wire,
            code,
            description: description.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The error for a status produced outside our handlers (404 fallback, 405, 413, 408, extractor
    /// rejections), in the wire format of the path it happened on.
    pub fn for_status(status: StatusCode, wire: Wire, detail: Option<String>) -> Self {
        let (oauth_code, fhir_code, text) = match status {
            StatusCode::NOT_FOUND => ("not_found", "not-found", "no such endpoint"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "invalid_request",
                "not-supported",
                "method not allowed on this endpoint",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "invalid_request",
                "too-costly",
                "request body is larger than the server accepts",
            ),
            StatusCode::REQUEST_TIMEOUT => ("invalid_request", "timeout", "request timed out"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "invalid_request",
                "not-supported",
                "unsupported content type",
            ),
            s if s.is_server_error() => ("server_error", "exception", "server error"),
            _ => ("invalid_request", "invalid", "the request is not valid"),
        };
        let description = detail.unwrap_or_else(|| text.to_string());
        match wire {
            Wire::OAuth => ApiError::oauth(status, oauth_code, description),
            Wire::Fhir => ApiError::fhir(status, fhir_code, description),
        }
    }
}

/// A FHIR OperationOutcome with one issue.
pub fn operation_outcome(code: &str, diagnostics: &str) -> serde_json::Value {
    let severity = if code == "informational" {
        "information"
    } else {
        "error"
    };
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (content_type, body) = match self.wire {
            Wire::OAuth => (
                "application/json",
                json!({"error": self.code, "error_description": self.description}),
            ),
            Wire::Fhir => (
                "application/fhir+json",
                operation_outcome(self.code, &self.description),
            ),
        };
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.description)
    }
}

impl From<bluegate_store::StoreError> for ApiError {
    fn from(e: bluegate_store::StoreError) -> Self {
        ApiError::internal(Wire::OAuth, &e)
    }
}
