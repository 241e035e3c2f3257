//! The FHIR API under `{public_url}/fhir`: read, vread and search (GET and `POST _search`) of the CARIN
//! Blue Button resources, from the built-in store or, in gateway mode, from an upstream FHIR server.
//!
//! Every request passes the same steps: resource type and format (404/406, before any token check, as
//! they reveal nothing), bearer token (401), scopes (403), then the patient compartment and granular
//! filters applied to what is returned (another patient's resource is a 404, a search is restricted, never
//! refused). Every access is audited.

pub mod auth;
pub mod bundle;
pub mod gateway;
pub mod policy;
pub mod query;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bluegate_core::scopes::Interaction;
use bluegate_store::fhir::params::{self, is_valid_id};
use bluegate_store::fhir::{ResourceType, SearchQuery, StoredResource};
use bluegate_store::StoreError;
use serde_json::{json, Value};
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use self::auth::Caller;
use self::bundle::{Entry, Link};
use self::policy::{Allowed, Decision};
use self::query::{Handling, SearchRequest};
use crate::app::{AppState, SharedState};
use crate::error::ApiError;

/// The FHIR resource routes, with their CORS policy (R-11: bearer-token API, so any origin is safe unless
/// the operator restricts it).
pub fn router(state: &AppState) -> Router<SharedState> {
    let origins = match &state.config.fhir.cors_origins {
        None => AllowOrigin::from(Any),
        Some(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("prefer"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::CONTENT_LOCATION,
            header::WWW_AUTHENTICATE,
            header::LAST_MODIFIED,
        ])
        .max_age(Duration::from_secs(600));
    Router::new()
        .route("/fhir/{rtype}", get(search_get))
        .route("/fhir/{rtype}/_search", post(search_post))
        .route("/fhir/{rtype}/{id}", get(read))
        .route("/fhir/{rtype}/{id}/_history/{vid}", get(vread))
        .layer(cors)
}

fn fhir_error(status: StatusCode, code: &'static str, text: impl Into<String>) -> ApiError {
    ApiError::fhir(status, code, text)
}

fn not_found(rt: ResourceType, id: &str) -> ApiError {
    fhir_error(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("{rt}/{} is not known", clip(id)),
    )
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) => fhir_error(StatusCode::BAD_REQUEST, "invalid", m),
        other => ApiError::internal(crate::error::Wire::Fhir, &other),
    }
}

/// A FHIR JSON response that is never cached (it carries PHI).
fn fhir_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    resp
}

/// Resource type from the path: unknown or unsupported types are a 404 naming what is served.
fn resource_type(name: &str) -> Result<ResourceType, ApiError> {
    ResourceType::parse(name).ok_or_else(|| {
        fhir_error(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!(
                "resource type {} is not served here (see the CapabilityStatement at /fhir/metadata)",
                clip(name)
            ),
        )
    })
}

fn check_format(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<(), ApiError> {
    let format = pairs
        .iter()
        .find(|(k, _)| k == "_format")
        .map(|(_, v)| v.as_str());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match query::unacceptable_format(format, accept) {
        None => Ok(()),
        Some(why) => Err(fhir_error(StatusCode::NOT_ACCEPTABLE, "not-supported", why)),
    }
}

fn pairs_of(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// What the audit trail records about one access.
struct AccessRecord<'a> {
    event: &'static str,
    rt: ResourceType,
    target: Value,
    remote: Option<SocketAddr>,
    caller: Option<&'a Caller>,
}

/// (outcome, status) of a result, taken before awaiting (a response body is not `Sync`).
fn outcome_of(result: &Result<Response, ApiError>) -> (&'static str, u16) {
    match result {
        Ok(r) => ("success", r.status().as_u16()),
        Err(e) => ("failure", e.status.as_u16()),
    }
}

async fn audit(state: &AppState, rec: AccessRecord<'_>, (outcome, status): (&'static str, u16)) {
    let claims = rec.caller.map(|c| &c.claims);
    let member = claims
        .filter(|c| c.sub != c.client_id)
        .map(|c| c.sub.as_str());
    let mut detail = json!({"type": rec.rt.as_str(), "status": status});
    if let (Value::Object(d), Value::Object(t)) = (&mut detail, rec.target) {
        d.extend(t);
    }
    if let Some(c) = claims {
        detail["scope"] = json!(c.scope);
    }
    crate::routes::authorize::audit(
        state,
        rec.event,
        outcome,
        claims.map(|c| c.client_id.as_str()),
        member,
        claims.and_then(|c| c.patient.as_deref()),
        rec.remote,
        detail,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------------
// read / vread
// ---------------------------------------------------------------------------------------------------

async fn read(
    State(state): State<SharedState>,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    instance(state, rtype, id, None, raw, headers, Some(peer)).await
}

async fn vread(
    State(state): State<SharedState>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    instance(state, rtype, id, Some(vid), raw, headers, Some(peer)).await
}

async fn instance(
    state: SharedState,
    rtype: String,
    id: String,
    vid: Option<String>,
    raw: Option<String>,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
) -> Response {
    let rt = match resource_type(&rtype) {
        Ok(rt) => rt,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_format(&headers, &pairs_of(raw.as_deref())) {
        return e.into_response();
    }
    let caller = match auth::authenticate(&state, &headers).await {
        Ok(c) => c,
        Err(e) => {
            let result = Err(e);
            audit(
                &state,
                AccessRecord {
                    event: if vid.is_some() {
                        "fhir.vread"
                    } else {
                        "fhir.read"
                    },
                    rt,
                    target: json!({"id": clip(&id)}),
                    remote,
                    caller: None,
                },
                outcome_of(&result),
            )
            .await;
            return result.into_response();
        }
    };
    let result = read_checked(&state, &caller, rt, &id, vid.as_deref()).await;
    audit(
        &state,
        AccessRecord {
            event: if vid.is_some() {
                "fhir.vread"
            } else {
                "fhir.read"
            },
            rt,
            target: json!({"id": clip(&id), "version": vid.as_deref().map(clip)}),
            remote,
            caller: Some(&caller),
        },
        outcome_of(&result),
    )
    .await;
    result.into_response()
}

/// A resource as fetched from the built-in store or the upstream server.
pub struct Fetched {
    pub json: String,
    pub version_id: Option<String>,
    pub last_updated: Option<OffsetDateTime>,
}

impl From<StoredResource> for Fetched {
    fn from(r: StoredResource) -> Self {
        Fetched {
            json: r.json,
            version_id: Some(r.version_id.to_string()),
            last_updated: Some(r.last_updated),
        }
    }
}

async fn read_checked(
    state: &AppState,
    caller: &Caller,
    rt: ResourceType,
    id: &str,
    vid: Option<&str>,
) -> Result<Response, ApiError> {
    let allowed = match caller.decide(state, rt, Interaction::Read).await? {
        Decision::Denied { needed } => return Err(auth::insufficient_scope(state, &needed)),
        Decision::Allowed(a) => a,
    };
    if !is_valid_id(id) {
        return Err(fhir_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "not a valid resource id ([A-Za-z0-9-.]{1,64})",
        ));
    }
    let fetched = match &state.gateway {
        Some(gw) => gw.read(rt, id, vid).await?,
        None => {
            let r = match vid {
                None => state.store.read(rt, id).await.map_err(store_error)?,
                Some(v) => match v.parse::<i64>() {
                    Ok(v) if v > 0 => state.store.vread(rt, id, v).await.map_err(store_error)?,
                    _ => None,
                },
            };
            r.map(Fetched::from)
        }
    };
    let Some(fetched) = fetched else {
        return Err(not_found(rt, id));
    };
    // Another patient's resource, or one outside a granular scope, does not exist for this token.
    let visible = params::extract(rt, id, &fetched.json)
        .map(|entries| policy::permits(rt, &entries, &allowed))
        .unwrap_or(false);
    if !visible {
        return Err(not_found(rt, id));
    }
    let mut resp = fhir_response(StatusCode::OK, fetched.json);
    let h = resp.headers_mut();
    if let Some(v) = &fetched.version_id {
        if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{v}\"")) {
            h.insert(header::ETAG, etag);
        }
        if let Ok(loc) = HeaderValue::from_str(&format!(
            "{}/{rt}/{id}/_history/{v}",
            state.endpoints.fhir_base
        )) {
            h.insert(header::CONTENT_LOCATION, loc);
        }
    }
    if let Some(lm) = fetched.last_updated.and_then(|t| t.format(&Rfc2822).ok()) {
        if let Ok(v) = HeaderValue::from_str(&lm.replace("+0000", "GMT")) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------------
// search
// ---------------------------------------------------------------------------------------------------

async fn search_get(
    State(state): State<SharedState>,
    Path(rtype): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let pairs = pairs_of(raw.as_deref());
    search(state, rtype, pairs, headers, Some(peer)).await
}

async fn search_post(
    State(state): State<SharedState>,
    Path(rtype): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or(false);
    if !form && !body.is_empty() {
        return fhir_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "POST _search takes application/x-www-form-urlencoded parameters",
        )
        .into_response();
    }
    // Parameters in the URL and in the body are combined (FHIR R4 §3.1.1.3).
    let mut pairs = pairs_of(raw.as_deref());
    pairs.extend(pairs_of(std::str::from_utf8(&body).ok()));
    search(state, rtype, pairs, headers, Some(peer)).await
}

async fn search(
    state: SharedState,
    rtype: String,
    pairs: Vec<(String, String)>,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
) -> Response {
    let rt = match resource_type(&rtype) {
        Ok(rt) => rt,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_format(&headers, &pairs) {
        return e.into_response();
    }
    let names: Vec<String> = pairs.iter().take(32).map(|(k, _)| clip(k)).collect();
    let record = |caller| AccessRecord {
        event: "fhir.search",
        rt,
        target: json!({"params": names}),
        remote,
        caller,
    };
    let caller = match auth::authenticate(&state, &headers).await {
        Ok(c) => c,
        Err(e) => {
            let result = Err(e);
            audit(&state, record(None), outcome_of(&result)).await;
            return result.into_response();
        }
    };
    let handling = query::handling(headers.get("prefer").and_then(|v| v.to_str().ok()));
    let result = search_checked(&state, &caller, rt, &pairs, handling).await;
    audit(&state, record(Some(&caller)), outcome_of(&result)).await;
    result.into_response()
}

async fn search_checked(
    state: &AppState,
    caller: &Caller,
    rt: ResourceType,
    pairs: &[(String, String)],
    handling: Handling,
) -> Result<Response, ApiError> {
    let allowed = match caller.decide(state, rt, Interaction::Search).await? {
        Decision::Denied { needed } => return Err(auth::insufficient_scope(state, &needed)),
        Decision::Allowed(a) => a,
    };
    let req = query::parse_search(rt, pairs, handling)
        .map_err(|e| fhir_error(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    if let Some(gw) = &state.gateway {
        return gw.search(state, caller, rt, &req, &allowed).await;
    }
    search_builtin(state, caller, rt, req, &allowed).await
}

/// The Bundle links of a search: `self`, and `next` with the store's cursor.
pub fn links(
    base: &str,
    rt: ResourceType,
    req: &SearchRequest,
    next_cursor: Option<&str>,
) -> Vec<Link> {
    let make = |cursor: Option<&str>| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.used {
            ser.append_pair(k, v);
        }
        ser.append_pair("_count", &req.count.to_string());
        if !req.total {
            ser.append_pair("_total", "none");
        }
        if let Some(c) = cursor {
            ser.append_pair(query::CURSOR_PARAM, c);
        }
        format!("{base}/{rt}?{}", ser.finish())
    };
    let mut out = vec![Link {
        relation: "self",
        url: make(req.cursor.as_deref()),
    }];
    if let Some(c) = next_cursor {
        out.push(Link {
            relation: "next",
            url: make(Some(c)),
        });
    }
    out
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The OperationOutcome entry that tells the client which parameters were ignored (lenient handling).
fn ignored_outcome(req: &SearchRequest) -> Option<Value> {
    (!req.ignored.is_empty()).then(|| {
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "warning",
                "code": "not-supported",
                "diagnostics": format!("ignored unsupported search parameters: {}", req.ignored.join(", "))
            }]
        })
    })
}

async fn search_builtin(
    state: &AppState,
    caller: &Caller,
    rt: ResourceType,
    req: SearchRequest,
    allowed: &Allowed,
) -> Result<Response, ApiError> {
    let mut params = req.params.clone();
    let pushed = policy::pushdown(rt, &allowed.filters);
    let post_filter = !allowed.filters.is_empty() && pushed.is_none();
    if let Some(p) = pushed {
        params.push(p);
    }
    let q = SearchQuery {
        resource_type: rt,
        params,
        patient_compartment: allowed.compartment.clone(),
        count: if req.summary_count { 1 } else { req.count },
        cursor: req.cursor.clone(),
        // Counting is cheap on the first page; later pages skip it.
        with_total: req.total && (req.cursor.is_none() || req.summary_count) && !post_filter,
    };
    let page = state.store.search(&q).await.map_err(store_error)?;
    let base = &state.endpoints.fhir_base;
    if req.summary_count {
        let body = bundle::searchset(
            page.total,
            &links(base, rt, &req, None),
            &[],
            ignored_outcome(&req).as_ref(),
            &now_text(),
        );
        return Ok(fhir_response(StatusCode::OK, body));
    }
    let matches: Vec<&StoredResource> = page
        .resources
        .iter()
        .filter(|r| {
            !post_filter
                || params::extract(rt, &r.id, &r.json)
                    .map(|e| policy::permits(rt, &e, allowed))
                    .unwrap_or(false)
        })
        .collect();
    let included = if req.includes.is_empty() || matches.is_empty() {
        Vec::new()
    } else {
        // The page itself unless some of it was filtered out (no copy of the page on the common path).
        let filtered: Vec<StoredResource>;
        let sources: &[StoredResource] = if matches.len() == page.resources.len() {
            &page.resources
        } else {
            filtered = matches.iter().map(|r| (*r).clone()).collect();
            &filtered
        };
        let found = state
            .store
            .include(sources, &req.includes)
            .await
            .map_err(store_error)?;
        filter_included(state, caller, found).await?
    };
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(matches.len() + included.len());
    for r in &matches {
        entries.push(Entry {
            full_url: format!("{base}/{rt}/{}", r.id),
            json: &r.json,
            include: false,
        });
    }
    for r in &included {
        entries.push(Entry {
            full_url: format!("{base}/{}/{}", r.resource_type, r.id),
            json: &r.json,
            include: true,
        });
    }
    let body = bundle::searchset(
        page.total,
        &links(base, rt, &req, page.next_cursor.as_deref()),
        &entries,
        ignored_outcome(&req).as_ref(),
        &now_text(),
    );
    Ok(fhir_response(StatusCode::OK, body))
}

/// `_include`d resources pass the same rules as a read of them: scope for their type, the
/// compartment, granular filters.
async fn filter_included(
    state: &AppState,
    caller: &Caller,
    found: Vec<StoredResource>,
) -> Result<Vec<StoredResource>, ApiError> {
    let mut decisions: Vec<(ResourceType, Option<Allowed>)> = Vec::new();
    let mut out = Vec::with_capacity(found.len());
    for r in found {
        let rt = r.resource_type;
        let allowed = match decisions.iter().find(|(t, _)| *t == rt) {
            Some((_, a)) => a.clone(),
            None => {
                let a = caller.decide_include(state, rt).await?;
                decisions.push((rt, a.clone()));
                a
            }
        };
        let Some(allowed) = allowed else { continue };
        let ok = params::extract(rt, &r.id, &r.json)
            .map(|e| policy::permits(rt, &e, &allowed))
            .unwrap_or(false);
        if ok {
            out.push(r);
        }
    }
    Ok(out)
}
