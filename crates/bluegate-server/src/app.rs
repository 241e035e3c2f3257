//! The axum application: shared state, routes and the middleware every request passes through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bluegate_core::discovery::Endpoints;
use bluegate_store::Store;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::communities::CommunityRuntime;
use crate::config::Config;
use crate::error::{ApiError, Wire};
use crate::routes;
use crate::signing::Signing;

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub endpoints: Endpoints,
    pub store: Arc<dyn Store>,
    pub signing: Signing,
    pub communities: Vec<CommunityRuntime>,
    /// Trust anchors, CRLs and chain caches per community, in configuration order.
    pub trust: Vec<crate::trust_runtime::TrustRuntime>,
    pub registration_policy: bluegate_core::udap::RegistrationPolicy,
    pub audit: crate::audit::AuditSink,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Revoked tokens and grants, mirrored from the store for the FHIR API's bearer check.
    pub revocations: crate::revocations::Revocations,
    /// Client records, mirrored from the store for client authentication.
    pub clients: crate::clients::ClientCache,
    /// Gateway mode: the upstream FHIR server; `None` serves the built-in store.
    pub gateway: Option<Arc<crate::fhir::gateway::Gateway>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// The community selected by `?community=`; the first configured one when absent.
    pub fn community(&self, uri: Option<&str>) -> Option<&CommunityRuntime> {
        match uri {
            None => self.communities.first(),
            Some(u) => self.communities.iter().find(|c| c.uri == u),
        }
    }
}

/// The wire format for errors on a path: FHIR OperationOutcome under the FHIR base (except the
/// `.well-known` documents, which are OAuth metadata), OAuth JSON elsewhere.
pub fn wire_for_path(path: &str) -> Wire {
    if (path == "/fhir" || path.starts_with("/fhir/")) && !path.starts_with("/fhir/.well-known/") {
        Wire::Fhir
    } else {
        Wire::OAuth
    }
}

pub fn router(state: SharedState) -> Router {
    // Discovery documents are public and readable from any origin (smart.md D-5, D-13; UM-22).
    let public_cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::ACCEPT, header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let discovery = Router::new()
        .route(
            "/fhir/.well-known/smart-configuration",
            get(routes::discovery::smart_configuration),
        )
        .route(
            "/fhir/.well-known/openid-configuration",
            get(routes::discovery::openid_configuration),
        )
        .route("/fhir/.well-known/udap", get(routes::discovery::udap))
        .route(
            "/fhir/metadata",
            get(routes::discovery::capability_statement),
        )
        .route("/oauth/jwks", get(routes::discovery::jwks))
        .layer(public_cors);
    // Token-side endpoints answer browser apps too (smart.md T-35).
    let token_cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::ACCEPT, header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let oauth = Router::new()
        .route("/oauth/register", post(routes::register::register))
        .route(
            "/oauth/authorize",
            get(routes::authorize::authorize_get).post(routes::authorize::authorize_post),
        )
        .route("/oauth/login", post(routes::authorize::login))
        .route("/oauth/patient", post(routes::authorize::choose_patient))
        .route("/oauth/consent", post(routes::authorize::consent))
        .route("/account/apps", get(routes::account::show))
        .route("/account/login", post(routes::account::account_login))
        .route("/account/apps/revoke", post(routes::account::revoke))
        .route("/account/logout", post(routes::account::logout))
        .merge(
            Router::new()
                .route("/oauth/token", post(routes::token::token))
                .route("/oauth/introspect", post(routes::introspect::introspect))
                .route("/oauth/revoke", post(routes::introspect::revoke))
                .route(
                    "/oauth/userinfo",
                    get(routes::introspect::userinfo).post(routes::introspect::userinfo),
                )
                .layer(token_cors),
        );
    let ops = Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics));
    let limits = state.config.limits;
    let fhir = crate::fhir::router(&state);
    Router::new()
        .merge(discovery)
        .merge(fhir)
        .merge(oauth)
        .merge(ops)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        // Outside the limits, so that their plain-text rejections are rewritten too.
        .layer(middleware::from_fn(normalize_errors))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::for_status(StatusCode::NOT_FOUND, wire_for_path(req.uri().path()), None)
}

/// Refuse requests addressed to a host we do not serve (DNS rebinding, misrouted traffic) and `Origin`
/// headers that are not origins.
async fn check_host(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let wire = wire_for_path(req.uri().path());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host {
        let host = host.to_ascii_lowercase();
        if !state.config.security.allowed_hosts.contains(&host) {
            return ApiError::for_status(
                StatusCode::BAD_REQUEST,
                wire,
                Some("the Host header names a host this server does not serve".to_string()),
            )
            .into_response();
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .map(|o| o == "null" || is_origin(o))
            .unwrap_or(false);
        if !ok {
            return ApiError::for_status(
                StatusCode::BAD_REQUEST,
                wire,
                Some("the Origin header is not a valid origin".to_string()),
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn is_origin(o: &str) -> bool {
    match url::Url::parse(o) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && !o.ends_with('/')
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
        }
        Err(_) => false,
    }
}

/// Any error produced outside our handlers (framework rejections, the body limit, timeouts) is rewritten
/// into the wire format of its path, so clients never see a plain-text error.
async fn normalize_errors(req: Request, next: Next) -> Response {
    let wire = wire_for_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.starts_with("application/json")
                || ct.starts_with("application/fhir+json")
                || ct.starts_with("text/html")
        })
        .unwrap_or(false);
    // Our own error responses (JSON, OperationOutcome, member-facing HTML pages) pass; framework
    // rejections (plain text or no body) are rewritten.
    if is_json {
        return resp;
    }
    let detail = if status.is_server_error() {
        None
    } else {
        let bytes = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    // A 5xx from below us is never passed through as such: it becomes a 503 with no details.
    let status = if status.is_server_error() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    ApiError::for_status(status, wire, detail).into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// Request counts and latency by route template (never the concrete path, which may carry ids) and status.
async fn record_metrics(req: Request<Body>, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("bluegate_http_requests_total", &labels).increment(1);
    metrics::histogram!("bluegate_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_strictly() {
        assert!(is_origin("https://app.example"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("https://app.example/"));
        assert!(!is_origin("https://app.example/path"));
        assert!(!is_origin("javascript:alert(1)"));
        assert!(!is_origin("not an origin"));
    }

    #[test]
    fn wire_format_follows_the_path() {
        assert_eq!(wire_for_path("/fhir/Patient/1"), Wire::Fhir);
        assert_eq!(wire_for_path("/fhir/metadata"), Wire::Fhir);
        assert_eq!(wire_for_path("/fhir/.well-known/udap"), Wire::OAuth);
        assert_eq!(wire_for_path("/oauth/token"), Wire::OAuth);
        assert_eq!(wire_for_path("/fhirx"), Wire::OAuth);
    }
}
