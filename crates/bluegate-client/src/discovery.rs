//! Discovery: `/.well-known/udap` (with `community`) and `/.well-known/smart-configuration`, with the UDAP
//! `signed_metadata` verified against the app's trust anchors. A server whose metadata does not verify is
//! refused unless the caller explicitly opts out (for testing).

use bluegate_core::discovery::{verify_signed_metadata, VerifiedMetadata};
use bluegate_core::trust::Community;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("the server's UDAP metadata does not verify: {0}")]
    Metadata(String),
    #[error("no trust anchors were given, so the server's metadata cannot be verified (pass anchors, or opt out explicitly for testing)")]
    NoAnchors,
    #[error("the FHIR base `{0}` is not an absolute https URL")]
    BadBase(String),
}

pub struct DiscoveryOptions<'a> {
    /// `?community=` for `/.well-known/udap`.
    pub community: Option<&'a str>,
    /// The app's trust anchors for `signed_metadata`.
    pub anchors: Option<&'a Community>,
    /// Accept metadata that does not verify (testing only).
    pub allow_unverified: bool,
    pub now: i64,
}

/// What the server supports, with the verified values preferred over the plain ones (UM-20).
#[derive(Debug, Clone)]
pub struct Discovered {
    pub fhir_base: String,
    pub udap: Option<Value>,
    pub smart: Option<Value>,
    /// `Some` when `signed_metadata` verified.
    pub verified: Option<VerifiedMetadata>,
    /// Why it did not verify, when the caller opted out of refusing.
    pub verification_error: Option<String>,
}

impl Discovered {
    pub fn token_endpoint(&self) -> Option<String> {
        self.verified
            .as_ref()
            .map(|v| v.token_endpoint.clone())
            .or_else(|| self.plain("token_endpoint"))
    }

    pub fn registration_endpoint(&self) -> Option<String> {
        self.verified
            .as_ref()
            .map(|v| v.registration_endpoint.clone())
            .or_else(|| self.plain("registration_endpoint"))
    }

    pub fn authorization_endpoint(&self) -> Option<String> {
        self.verified
            .as_ref()
            .and_then(|v| v.authorization_endpoint.clone())
            .or_else(|| self.plain("authorization_endpoint"))
    }

    fn plain(&self, key: &str) -> Option<String> {
        [&self.udap, &self.smart]
            .into_iter()
            .flatten()
            .find_map(|d| d.get(key).and_then(Value::as_str).map(str::to_string))
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Option<Value>, DiscoveryError> {
    let err = |m: String| DiscoveryError::Http {
        url: url.to_string(),
        message: m,
    };
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    match resp.status().as_u16() {
        200 => {}
        204 | 404 => return Ok(None),
        s => return Err(err(format!("answered HTTP {s}"))),
    }
    // Discovery documents are small; refuse anything absurd before parsing.
    if resp.content_length().is_some_and(|l| l > 1024 * 1024) {
        return Err(err("document larger than 1 MiB".into()));
    }
    let bytes = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    if bytes.len() > 1024 * 1024 {
        return Err(err("document larger than 1 MiB".into()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| err("not JSON".into()))
}

/// Discover a server by its FHIR base.
pub async fn discover(
    http: &reqwest::Client,
    fhir_base: &str,
    opts: &DiscoveryOptions<'_>,
) -> Result<Discovered, DiscoveryError> {
    let base = fhir_base.trim_end_matches('/').to_string();
    match url::Url::parse(&base) {
        Ok(u) if u.scheme() == "https" => {}
        _ => return Err(DiscoveryError::BadBase(base)),
    }
    let mut udap_url = url::Url::parse(&format!("{base}/.well-known/udap"))
        .map_err(|_| DiscoveryError::BadBase(base.clone()))?;
    if let Some(c) = opts.community {
        udap_url.query_pairs_mut().append_pair("community", c);
    }
    let udap = get_json(http, udap_url.as_str()).await?;
    let smart = get_json(http, &format!("{base}/.well-known/smart-configuration")).await?;
    let mut out = Discovered {
        fhir_base: base.clone(),
        udap,
        smart,
        verified: None,
        verification_error: None,
    };
    if let Some(doc) = &out.udap {
        let outcome = match (
            opts.anchors,
            doc.get("signed_metadata").and_then(Value::as_str),
        ) {
            (None, _) => Err(DiscoveryError::NoAnchors.to_string()),
            (_, None) => Err("signed_metadata is missing".to_string()),
            (Some(anchors), Some(jwt)) => {
                verify_signed_metadata(jwt, &base, anchors, opts.now).map_err(|e| e.to_string())
            }
        };
        match outcome {
            Ok(v) => out.verified = Some(v),
            Err(e) if opts.allow_unverified => out.verification_error = Some(e),
            Err(_) if opts.anchors.is_none() => return Err(DiscoveryError::NoAnchors),
            Err(e) => return Err(DiscoveryError::Metadata(e)),
        }
    }
    Ok(out)
}

impl Discovered {
    /// The OAuth/OIDC issuer from the SMART configuration (the FHIR base on Bluegate).
    pub fn issuer(&self) -> Option<String> {
        self.smart
            .as_ref()
            .and_then(|s| s.get("issuer"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}
