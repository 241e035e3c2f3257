//! Authorized FHIR reads, app side (smart.md C-14): `Authorization: Bearer` and `Accept:
//! application/fhir+json`, only to URLs under the FHIR base the token was issued for (a Bundle `next` link
//! elsewhere is refused and the token never goes there), one refresh on 401 then one retry, response bodies
//! capped, errors carrying the OperationOutcome's text.

use serde_json::Value;

use crate::error::Error;
use crate::token::{ClientAuth, TokenSet};

/// Called with the new tokens after every refresh, before they are used: persist them here (a rotated
/// refresh token is the only one that still works).
pub type OnRefresh = Box<dyn FnMut(&TokenSet) -> Result<(), Error> + Send>;

/// Refresh this many seconds before `expires_at`.
const REFRESH_MARGIN: i64 = 30;

/// One page of a search.
#[derive(Debug, Clone)]
pub struct Page {
    pub bundle: Value,
    /// The `next` link, already checked to be under the FHIR base.
    pub next: Option<String>,
}

/// A FHIR client bound to one FHIR base and one token set.
pub struct FhirClient {
    http: reqwest::Client,
    base: url::Url,
    base_str: String,
    tokens: TokenSet,
    refresh: Option<(String, ClientAuth)>,
    on_refresh: Option<OnRefresh>,
    max_response_bytes: u64,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.base_str)
            .finish_non_exhaustive()
    }
}

impl FhirClient {
    /// `fhir_base` must be an absolute https URL.
    pub fn new(http: reqwest::Client, fhir_base: &str, tokens: TokenSet) -> Result<Self, Error> {
        let base_str = fhir_base.trim_end_matches('/').to_string();
        let base = url::Url::parse(&base_str)
            .ok()
            .filter(|u| u.scheme() == "https" && u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| Error::bad(fhir_base, "the FHIR base must be an absolute https URL"))?;
        Ok(FhirClient {
            http,
            base,
            base_str,
            tokens,
            refresh: None,
            on_refresh: None,
            max_response_bytes: crate::http::DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Refresh at `token_endpoint` with `auth` when the token expires or a request gets 401.
    pub fn with_refresh(mut self, token_endpoint: &str, auth: ClientAuth) -> Self {
        self.refresh = Some((token_endpoint.to_string(), auth));
        self
    }

    /// See [`OnRefresh`].
    pub fn on_refresh(mut self, f: OnRefresh) -> Self {
        self.on_refresh = Some(f);
        self
    }

    /// Cap on one response body (default 64 MiB).
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    pub fn base(&self) -> &str {
        &self.base_str
    }

    pub fn tokens(&self) -> &TokenSet {
        &self.tokens
    }

    /// `Type/id?query` relative to the base, or an absolute URL that must be under the base.
    pub fn resolve(&self, reference: &str) -> Result<url::Url, Error> {
        // Absolute only if it parses as an absolute URL (`Patient?identifier=http://x|1` is relative).
        let abs = if url::Url::parse(reference).is_ok() {
            reference.to_string()
        } else {
            format!("{}/{}", self.base_str, reference.trim_start_matches('/'))
        };
        self.under_base(&abs)
    }

    /// Same scheme, host and port as the FHIR base, no user info, and a path at or below the base's.
    fn under_base(&self, u: &str) -> Result<url::Url, Error> {
        let foreign = || Error::ForeignLink {
            url: crate::util::redact_url(u),
            base: self.base_str.clone(),
        };
        let p = url::Url::parse(u).map_err(|_| foreign())?;
        let base_path = self.base.path().trim_end_matches('/');
        let path_ok = p.path() == base_path || p.path().starts_with(&format!("{base_path}/"));
        if p.scheme() != self.base.scheme()
            || p.host() != self.base.host()
            || p.port_or_known_default() != self.base.port_or_known_default()
            || !p.username().is_empty()
            || p.password().is_some()
            || !path_ok
        {
            return Err(foreign());
        }
        Ok(p)
    }

    /// Refresh now (C-15); the new tokens go to [`OnRefresh`] before use.
    pub async fn refresh_now(&mut self) -> Result<(), Error> {
        let (endpoint, auth) = self.refresh.as_ref().ok_or(Error::NoRefreshToken)?;
        let next = crate::token::refresh(&self.http, endpoint, auth, &self.tokens).await?;
        if let Some(f) = self.on_refresh.as_mut() {
            f(&next)?;
        }
        self.tokens = next;
        Ok(())
    }

    fn can_refresh(&self) -> bool {
        self.refresh.is_some() && self.tokens.refresh_token.is_some()
    }

    /// GET a resource or a search (relative or absolute under the base) and return its JSON.
    pub async fn get(&mut self, reference: &str) -> Result<Value, Error> {
        let url = self.resolve(reference)?;
        if self.can_refresh()
            && self
                .tokens
                .expires_within(crate::util::now(), REFRESH_MARGIN)
        {
            self.refresh_now().await?;
        }
        let mut refreshed = false;
        loop {
            let resp = self
                .http
                .get(url.clone())
                .header("accept", "application/fhir+json")
                .bearer_auth(self.tokens.access_token.expose())
                .send()
                .await
                .map_err(|e| Error::transport(url.as_str(), e))?;
            let status = resp.status().as_u16();
            if status == 401 && !refreshed && self.can_refresh() {
                refreshed = true;
                self.refresh_now().await?;
                continue;
            }
            let body = crate::http::read_limited(resp, self.max_response_bytes).await?;
            if !(200..300).contains(&status) {
                return Err(Error::Fhir {
                    url: crate::util::redact_url(url.as_str()),
                    status,
                    outcome: serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| outcome_text(&v)),
                });
            }
            return serde_json::from_slice(&body)
                .map_err(|_| Error::bad(url.as_str(), "the response is not JSON"));
        }
    }

    /// GET one page of a search: a Bundle and its checked `next` link.
    pub async fn search_page(&mut self, reference: &str) -> Result<Page, Error> {
        let bundle = self.get(reference).await?;
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(Error::bad(reference, "a search did not return a Bundle"));
        }
        let next = next_link(&bundle)
            .map(|n| self.under_base(n).map(|u| u.to_string()))
            .transpose()?;
        Ok(Page { bundle, next })
    }

    /// Every page of a search, following `next` links (each checked), up to `max_pages`.
    pub async fn search_all(
        &mut self,
        reference: &str,
        max_pages: usize,
    ) -> Result<Vec<Value>, Error> {
        let mut pages = Vec::new();
        let mut next = Some(reference.to_string());
        while let Some(u) = next.take() {
            if pages.len() >= max_pages {
                return Err(Error::bad(
                    reference,
                    format!("more than {max_pages} pages"),
                ));
            }
            let p = self.search_page(&u).await?;
            pages.push(p.bundle);
            next = p.next;
        }
        Ok(pages)
    }
}

/// `link[relation = next].url` of a Bundle.
pub fn next_link(bundle: &Value) -> Option<&str> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
}

/// The human-readable text of an OperationOutcome: each issue's `details.text` or `diagnostics`.
pub fn outcome_text(v: &Value) -> Option<String> {
    if v.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
        return None;
    }
    let texts: Vec<String> = v
        .get("issue")?
        .as_array()?
        .iter()
        .filter_map(|i| {
            i.pointer("/details/text")
                .and_then(Value::as_str)
                .or_else(|| i.get("diagnostics").and_then(Value::as_str))
                .or_else(|| i.get("code").and_then(Value::as_str))
        })
        .map(|t| crate::util::printable(t, 300))
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(base: &str) -> FhirClient {
        let t = crate::token::parse_token_response(
            &json!({"access_token": "a", "token_type": "Bearer"}),
            0,
        )
        .unwrap();
        FhirClient::new(crate::http::client(None).unwrap(), base, t).unwrap()
    }

    #[test]
    fn only_urls_under_the_fhir_base_are_followed() {
        let c = client("https://payer.example/fhir/");
        for ok in [
            "https://payer.example/fhir/ExplanationOfBenefit?patient=1&_page=2",
            "https://payer.example:443/fhir/Patient/1",
            "https://payer.example/fhir",
            "Patient/1",
            "Patient?identifier=http://hospital.example|123",
        ] {
            assert!(c.resolve(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example/fhir/Patient/1",
            "http://payer.example/fhir/Patient/1",
            "https://payer.example:8443/fhir/Patient/1",
            "https://payer.example/fhirx/Patient/1",
            "https://payer.example/other/Patient/1",
            "https://payer.example/fhir/../admin",
            "https://user:pw@payer.example/fhir/Patient/1",
            "https://payer.example.evil.example/fhir/Patient/1",
            "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
        ] {
            match c.resolve(bad) {
                Err(Error::ForeignLink { .. }) => {}
                Ok(u) => panic!("{bad} accepted as {u}"),
                Err(e) => panic!("{bad}: {e}"),
            }
        }
        assert!(FhirClient::new(
            crate::http::client(None).unwrap(),
            "http://payer.example/fhir",
            c.tokens().clone()
        )
        .is_err());
    }

    #[test]
    fn operation_outcome_text_is_quoted() {
        let oo = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "forbidden", "diagnostics": "insufficient scope"},
            {"severity": "error", "code": "invalid", "details": {"text": "bad _count"}}]});
        assert_eq!(
            outcome_text(&oo).as_deref(),
            Some("insufficient scope; bad _count")
        );
        assert_eq!(outcome_text(&json!({"error": "x"})), None);
        let b = json!({"resourceType": "Bundle", "link": [{"relation": "self", "url": "s"}, {"relation": "next", "url": "n"}]});
        assert_eq!(next_link(&b), Some("n"));
    }
}
