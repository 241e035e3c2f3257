//! Gateway mode: Bluegate in front of an existing FHIR server (`[fhir] upstream`).
//!
//! The same token checks run as for the built-in store; the upstream is asked only for what the token may
//! see (the patient restriction is added to every search), and everything that comes back is checked
//! again before it is passed on: a resource of another patient, or of a type or kind the token does not
//! cover, is dropped, whatever the upstream sent. Links are rewritten to Bluegate's base; the upstream's
//! paging links travel as our opaque cursor. Upstream failures become OperationOutcomes (502/504) without
//! the upstream's details.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bluegate_store::fhir::params;
use bluegate_store::fhir::ResourceType;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

use super::auth::Caller;
use super::bundle::{self, Entry};
use super::policy::{self, Allowed};
use super::query::SearchRequest;
use super::Fetched;
use crate::app::AppState;
use crate::config::{UpstreamAuth, UpstreamConfig};
use crate::error::ApiError;

/// Largest upstream response accepted (a bigger one is refused, never buffered whole).
pub const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("fhir.{key}: {message}")]
    Config { key: &'static str, message: String },
}

fn cfg_err(key: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::Config {
        key,
        message: message.into(),
    }
}

pub struct Gateway {
    /// Upstream FHIR base, without a trailing slash.
    base: String,
    base_url: Url,
    client: reqwest::Client,
    authorization: Option<reqwest::header::HeaderValue>,
}

fn read_secret(path: &std::path::Path, key: &'static str) -> Result<String, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(key, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(cfg_err(key, format!("{} is empty", path.display())));
    }
    Ok(text)
}

impl Gateway {
    /// Builds the upstream client (connection pooling, timeouts, trust, credentials) from configuration.
    pub fn new(cfg: &UpstreamConfig) -> Result<Arc<Gateway>, GatewayError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &cfg.ca {
            let pem = std::fs::read(ca).map_err(|e| {
                cfg_err("upstream_ca", format!("cannot read {}: {e}", ca.display()))
            })?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| cfg_err("upstream_ca", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| cfg_err("upstream_ca", e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(cfg_err(
                    "upstream_ca",
                    format!("{} holds no PEM certificate", ca.display()),
                ));
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err("upstream", e.to_string()))?
        .with_root_certificates(roots);
        let mut authorization = None;
        let tls = match &cfg.auth {
            UpstreamAuth::MutualTls { cert, key } => {
                let pem = std::fs::read(cert).map_err(|e| {
                    cfg_err(
                        "upstream_client_cert",
                        format!("cannot read {}: {e}", cert.display()),
                    )
                })?;
                let chain = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| cfg_err("upstream_client_cert", e.to_string()))?;
                if chain.is_empty() {
                    return Err(cfg_err("upstream_client_cert", "no PEM certificate found"));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| cfg_err("upstream_client_key", e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| cfg_err("upstream_client_key", e.to_string()))?
            }
            other => {
                authorization = match other {
                    UpstreamAuth::Bearer { token_file } => Some(format!(
                        "Bearer {}",
                        read_secret(token_file, "upstream_token_file")?
                    )),
                    UpstreamAuth::Basic {
                        username,
                        password_file,
                    } => {
                        let pw = read_secret(password_file, "upstream_password_file")?;
                        Some(format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD
                                .encode(format!("{username}:{pw}"))
                        ))
                    }
                    _ => None,
                };
                builder.with_no_client_auth()
            }
        };
        let authorization = match authorization {
            None => None,
            Some(v) => {
                let mut v = reqwest::header::HeaderValue::from_str(&v).map_err(|_| {
                    cfg_err(
                        "upstream_auth",
                        "the credential is not a valid header value",
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| cfg_err("upstream", e.to_string()))?;
        let base = cfg.base.as_str().trim_end_matches('/').to_string();
        let base_url =
            Url::parse(&format!("{base}/")).map_err(|e| cfg_err("upstream", e.to_string()))?;
        Ok(Arc::new(Gateway {
            base,
            base_url,
            client,
            authorization,
        }))
    }

    fn upstream_error(status: StatusCode, text: &str) -> ApiError {
        ApiError::fhir(
            status,
            "transient",
            format!("the upstream FHIR server {text}"),
        )
    }

    /// GET from the upstream; `Ok(None)` for 404/410. Bodies are read up to [`MAX_UPSTREAM_BODY`].
    async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/fhir+json");
        if let Some(a) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %without_url(&e), "upstream FHIR request failed");
            if e.is_timeout() {
                Self::upstream_error(StatusCode::GATEWAY_TIMEOUT, "did not answer in time")
            } else {
                Self::upstream_error(StatusCode::BAD_GATEWAY, "could not be reached")
            }
        })?;
        let status = resp.status();
        match status.as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            401 | 403 => {
                tracing::warn!(
                    status = status.as_u16(),
                    "upstream FHIR server refused Bluegate's credentials"
                );
                return Err(Self::upstream_error(
                    StatusCode::BAD_GATEWAY,
                    "refused the request",
                ));
            }
            400 => {
                return Err(ApiError::fhir(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the upstream FHIR server refused the search as invalid",
                ))
            }
            s => {
                tracing::warn!(status = s, "upstream FHIR server error");
                return Err(Self::upstream_error(StatusCode::BAD_GATEWAY, "failed"));
            }
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
        {
            return Err(Self::upstream_error(
                StatusCode::BAD_GATEWAY,
                "sent a response that is too large",
            ));
        }
        let mut body = Vec::new();
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                        return Err(Self::upstream_error(
                            StatusCode::BAD_GATEWAY,
                            "sent a response that is too large",
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %without_url(&e), "upstream FHIR response failed");
                    let status = if e.is_timeout() {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    return Err(Self::upstream_error(status, "broke off its response"));
                }
            }
        }
        Ok(Some(body))
    }

    /// Reads one resource (vread with `vid`). A response that is not that resource is an upstream error.
    pub async fn read(
        &self,
        rt: ResourceType,
        id: &str,
        vid: Option<&str>,
    ) -> Result<Option<Fetched>, ApiError> {
        let url = match vid {
            None => format!("{}/{rt}/{id}", self.base),
            Some(v) if params::is_valid_id(v) => format!("{}/{rt}/{id}/_history/{v}", self.base),
            Some(_) => return Ok(None),
        };
        let Some(body) = self.get(&url).await? else {
            return Ok(None);
        };
        let json = String::from_utf8(body).map_err(|_| {
            Self::upstream_error(StatusCode::BAD_GATEWAY, "sent a response that is not UTF-8")
        })?;
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "resourceType")]
            resource_type: &'a str,
            id: Option<&'a str>,
            meta: Option<Meta>,
        }
        #[derive(Deserialize)]
        struct Meta {
            #[serde(rename = "versionId")]
            version_id: Option<String>,
            #[serde(rename = "lastUpdated")]
            last_updated: Option<String>,
        }
        let head: Head<'_> = serde_json::from_str(&json).map_err(|_| {
            Self::upstream_error(
                StatusCode::BAD_GATEWAY,
                "sent a response that is not a FHIR resource",
            )
        })?;
        if head.resource_type != rt.as_str() || head.id != Some(id) {
            return Err(Self::upstream_error(
                StatusCode::BAD_GATEWAY,
                "answered with a different resource than the one asked for",
            ));
        }
        let meta = head.meta;
        let version_id = meta.as_ref().and_then(|m| m.version_id.clone());
        let last_updated = meta.and_then(|m| m.last_updated).and_then(|t| {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        });
        Ok(Some(Fetched {
            json,
            version_id,
            last_updated,
        }))
    }

    /// The upstream URL for a search: the caller's parameters, the patient restriction and the granular
    /// filter (when expressible), or the upstream paging link carried by our cursor.
    fn search_url(
        &self,
        rt: ResourceType,
        req: &SearchRequest,
        allowed: &Allowed,
    ) -> Result<Option<String>, ApiError> {
        if let Some(cursor) = &req.cursor {
            let bad = || {
                ApiError::fhir(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "malformed paging cursor",
                )
            };
            let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
            let rel = String::from_utf8(bytes).map_err(|_| bad())?;
            // The cursor may only name a URL under the upstream base (it cannot send us elsewhere).
            let url = self.base_url.join(&rel).map_err(|_| bad())?;
            if !self.is_under_base(&url) {
                return Err(bad());
            }
            return Ok(Some(url.to_string()));
        }
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.used {
            ser.append_pair(k, v);
        }
        ser.append_pair("_count", &req.count.to_string());
        if let Some(patients) = &allowed.compartment {
            if patients.is_empty() {
                return Ok(None);
            }
            let list = patients.join(",");
            match rt {
                ResourceType::Patient => ser.append_pair("_id", &list),
                _ => ser.append_pair("patient", &list),
            };
        }
        if let Some(p) = policy::pushdown(rt, &allowed.filters) {
            if let Some(alts) = allowed
                .filters
                .iter()
                .map(|alt| alt.first().map(|(_, v)| v.clone()))
                .collect::<Option<Vec<_>>>()
            {
                ser.append_pair(p.name, &alts.join(","));
            }
        }
        Ok(Some(format!("{}/{rt}?{}", self.base, ser.finish())))
    }

    fn is_under_base(&self, url: &Url) -> bool {
        url.scheme() == self.base_url.scheme()
            && url.host_str() == self.base_url.host_str()
            && url.port_or_known_default() == self.base_url.port_or_known_default()
            && url.path().starts_with(self.base_url.path())
            && !url.path().contains("/../")
            && url.username().is_empty()
    }

    /// Turns an upstream `next` link into our cursor: its path and query relative to the upstream base.
    fn cursor_for(&self, next: &str) -> Option<String> {
        let url = Url::parse(next).ok()?;
        if !self.is_under_base(&url) {
            tracing::warn!("upstream next link outside the upstream base dropped");
            return None;
        }
        let rel = &url.as_str()[self.base_url.as_str().len()..];
        Some(URL_SAFE_NO_PAD.encode(rel))
    }

    pub async fn search(
        &self,
        state: &AppState,
        caller: &Caller,
        rt: ResourceType,
        req: &SearchRequest,
        allowed: &Allowed,
    ) -> Result<Response, ApiError> {
        let ours = &state.endpoints.fhir_base;
        let Some(url) = self.search_url(rt, req, allowed)? else {
            let body = bundle::searchset(
                Some(0),
                &super::links(ours, rt, req, None),
                &[],
                None,
                &super::now_text(),
            );
            return Ok(super::fhir_response(StatusCode::OK, body));
        };
        let body = self.get(&url).await?.ok_or_else(|| {
            Self::upstream_error(StatusCode::BAD_GATEWAY, "does not serve this search")
        })?;
        #[derive(Deserialize)]
        struct UpBundle<'a> {
            #[serde(rename = "resourceType")]
            resource_type: &'a str,
            total: Option<u64>,
            #[serde(default)]
            link: Vec<UpLink>,
            #[serde(default, borrow)]
            entry: Vec<UpEntry<'a>>,
        }
        #[derive(Deserialize)]
        struct UpLink {
            relation: String,
            url: String,
        }
        #[derive(Deserialize)]
        struct UpEntry<'a> {
            #[serde(borrow)]
            resource: Option<&'a RawValue>,
            search: Option<UpSearch>,
        }
        #[derive(Deserialize)]
        struct UpSearch {
            mode: Option<String>,
        }
        #[derive(Deserialize)]
        struct Ident<'a> {
            #[serde(rename = "resourceType")]
            resource_type: &'a str,
            id: Option<String>,
        }
        let text = std::str::from_utf8(&body).map_err(|_| {
            Self::upstream_error(StatusCode::BAD_GATEWAY, "sent a response that is not UTF-8")
        })?;
        let up: UpBundle<'_> = serde_json::from_str(text).map_err(|_| {
            Self::upstream_error(
                StatusCode::BAD_GATEWAY,
                "sent a response that is not a Bundle",
            )
        })?;
        if up.resource_type != "Bundle" {
            return Err(Self::upstream_error(
                StatusCode::BAD_GATEWAY,
                "sent a response that is not a Bundle",
            ));
        }
        let mut dropped = 0usize;
        let mut entries: Vec<Entry<'_>> = Vec::new();
        let mut include_decisions: Vec<(ResourceType, Option<Allowed>)> = Vec::new();
        for e in &up.entry {
            let Some(raw) = e.resource else { continue };
            let mode = e
                .search
                .as_ref()
                .and_then(|s| s.mode.as_deref())
                .unwrap_or("match");
            if mode == "outcome" {
                continue;
            }
            let Ok(ident) = serde_json::from_str::<Ident<'_>>(raw.get()) else {
                dropped += 1;
                continue;
            };
            let (Some(ert), Some(id)) = (ResourceType::parse(ident.resource_type), ident.id) else {
                dropped += 1;
                continue;
            };
            let include = mode == "include" || ert != rt;
            let rule = if include {
                match include_decisions.iter().find(|(t, _)| *t == ert) {
                    Some((_, a)) => a.clone(),
                    None => {
                        let a = caller.decide_include(state, ert).await?;
                        include_decisions.push((ert, a.clone()));
                        a
                    }
                }
            } else {
                Some(allowed.clone())
            };
            let visible = rule.is_some_and(|a| {
                params::is_valid_id(&id)
                    && params::extract(ert, &id, raw.get())
                        .map(|x| policy::permits(ert, &x, &a))
                        .unwrap_or(false)
            });
            if !visible {
                dropped += 1;
                continue;
            }
            entries.push(Entry {
                full_url: format!("{ours}/{ert}/{id}"),
                json: raw.get(),
                include,
            });
        }
        if dropped > 0 {
            tracing::warn!(dropped, resource_type = %rt, "upstream search returned resources outside the token's reach; dropped");
        }
        let next = up
            .link
            .iter()
            .find(|l| l.relation == "next")
            .and_then(|l| self.cursor_for(&l.url));
        let total = if dropped == 0 { up.total } else { None };
        let body = bundle::searchset(
            total,
            &super::links(ours, rt, req, next.as_deref()),
            &entries,
            super::ignored_outcome(req).as_ref(),
            &super::now_text(),
        );
        Ok(super::fhir_response(StatusCode::OK, body))
    }
}

/// A reqwest error without the URL (which may carry search values).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<upstream>");
    }
    s
}
