//! The authorization request (SMART App Launch §authorization request, RFC 6749 §4.1.1, RFC 7636): which
//! parameters are required, when an error may be sent back to the client's redirect URI, and PKCE.
//!
//! The rule that matters most: an error is redirected only once the client and the redirect URI are known
//! to be valid; before that, the member sees an error page and nothing leaves the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest value accepted for any single parameter (state, nonce, scope have their own sanity limits).
pub const MAX_PARAM_LEN: usize = 2048;

/// What the server knows about the client, for validating the request.
#[derive(Debug, Clone)]
pub struct ClientView<'a> {
    pub active: bool,
    pub redirect_uris: &'a [String],
    pub grant_types: &'a [String],
    /// Public clients must use PKCE (smart.md decision 1).
    pub public: bool,
}

/// The raw parameters (first value of each; duplicates are detected by the caller and reported as
/// `duplicated`).
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub launch: Option<String>,
    /// Names of parameters that appeared more than once.
    pub duplicated: Vec<String>,
}

/// A request that may proceed to sign-in and consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
}

/// Why a request failed, and whether the failure may be reported to the redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Unknown or disabled client, missing/unregistered redirect URI: show an error page, never redirect.
    NoRedirect { description: String },
    /// Report to the client (`error`, `error_description`, `state` on the redirect URI).
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

fn too_long(v: &Option<String>) -> bool {
    v.as_ref().is_some_and(|s| s.len() > MAX_PARAM_LEN)
}

/// Validate an authorization request for a client looked up by `client_id` (None = unknown client).
/// `fhir_base` is the only acceptable `aud`.
pub fn validate(
    raw: &RawRequest,
    client: Option<&ClientView<'_>>,
    fhir_base: &str,
) -> Result<ValidRequest, RequestError> {
    let no_redirect = |d: &str| RequestError::NoRedirect {
        description: d.to_string(),
    };
    if raw
        .duplicated
        .iter()
        .any(|p| p == "client_id" || p == "redirect_uri")
    {
        return Err(no_redirect("client_id and redirect_uri must appear once"));
    }
    let client_id = match &raw.client_id {
        Some(c) if !c.is_empty() && c.len() <= 256 => c.clone(),
        _ => return Err(no_redirect("the request has no valid client_id")),
    };
    let Some(client) = client.filter(|c| c.active) else {
        return Err(no_redirect("unknown or disabled client"));
    };
    // Exact string match with a registered redirect URI (no normalisation, no prefix match).
    let redirect_uri = match &raw.redirect_uri {
        Some(r) if client.redirect_uris.iter().any(|u| u == r) => r.clone(),
        Some(_) => {
            return Err(no_redirect(
                "redirect_uri is not registered for this client",
            ))
        }
        // RFC 6749 §3.1.2.3 would allow omission with a single registered URI; SMART requires it.
        None => return Err(no_redirect("redirect_uri is required")),
    };
    let state = raw.state.clone();
    let redirect = |error: &'static str, d: &str| RequestError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description: d.to_string(),
        state: state.clone(),
    };
    if too_long(&raw.state) {
        // The state is unusable, so it is not echoed either.
        return Err(RequestError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error: "invalid_request",
            description: "state is too long".into(),
            state: None,
        });
    }
    if let Some(p) = raw.duplicated.first() {
        return Err(redirect(
            "invalid_request",
            &format!("parameter `{p}` appears more than once"),
        ));
    }
    match raw.response_type.as_deref() {
        Some("code") => {}
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
        None => return Err(redirect("invalid_request", "response_type is required")),
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(redirect(
            "unauthorized_client",
            "this client is not registered for the authorization code grant",
        ));
    }
    for (name, v) in [
        ("scope", &raw.scope),
        ("nonce", &raw.nonce),
        ("aud", &raw.aud),
        ("code_challenge", &raw.code_challenge),
    ] {
        if too_long(v) {
            return Err(redirect("invalid_request", &format!("{name} is too long")));
        }
    }
    let scope = match &raw.scope {
        Some(s) if !s.trim().is_empty() => s.clone(),
        _ => return Err(redirect("invalid_scope", "scope is required")),
    };
    match raw.aud.as_deref() {
        Some(a) if a == fhir_base || a.trim_end_matches('/') == fhir_base => {}
        Some(_) => {
            return Err(redirect(
                "invalid_request",
                "aud does not name this server's FHIR base",
            ))
        }
        None => return Err(redirect("invalid_request", "aud is required")),
    }
    if raw.launch.is_some() {
        return Err(redirect(
            "invalid_request",
            "EHR launch is not supported; use a standalone launch",
        ));
    }
    let code_challenge = match (&raw.code_challenge, raw.code_challenge_method.as_deref()) {
        (Some(c), Some("S256")) => {
            if !is_s256_challenge(c) {
                return Err(redirect(
                    "invalid_request",
                    "code_challenge must be 43 base64url characters (S256)",
                ));
            }
            Some(c.clone())
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(redirect(
                "invalid_request",
                "only code_challenge_method=S256 is supported",
            ))
        }
        (_, Some(_)) => {
            return Err(redirect(
                "invalid_request",
                "code_challenge_method must be S256 and come with a code_challenge",
            ))
        }
        (None, None) if client.public => {
            return Err(redirect(
                "invalid_request",
                "PKCE (code_challenge with S256) is required for public clients",
            ))
        }
        (None, None) => None,
    };
    Ok(ValidRequest {
        client_id,
        redirect_uri,
        scope,
        state,
        code_challenge,
        nonce: raw.nonce.clone(),
    })
}

fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43–128 unreserved characters.
pub fn is_valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Check a verifier against the stored challenge, in constant time. A verifier equal to the challenge
/// (the `plain` method in disguise) fails because its hash does not match.
pub fn verify_pkce(verifier: &str, challenge: &str) -> bool {
    is_valid_verifier(verifier) && bool::from(s256(verifier).as_bytes().ct_eq(challenge.as_bytes()))
}

/// The redirect URI with `code`/`error` parameters appended (query component, RFC 6749 §4.1.2).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return redirect_uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://as.example/fhir";

    fn uris() -> Vec<String> {
        vec!["https://app.example/cb".to_string()]
    }

    fn grants() -> Vec<String> {
        vec![
            "authorization_code".to_string(),
            "refresh_token".to_string(),
        ]
    }

    fn good() -> RawRequest {
        RawRequest {
            response_type: Some("code".into()),
            client_id: Some("c1".into()),
            redirect_uri: Some("https://app.example/cb".into()),
            scope: Some("openid patient/Patient.read".into()),
            state: Some("xyz".into()),
            aud: Some(BASE.into()),
            code_challenge: Some(s256(&"v".repeat(43))),
            code_challenge_method: Some("S256".into()),
            nonce: Some("n".into()),
            launch: None,
            duplicated: vec![],
        }
    }

    fn check(raw: &RawRequest, public: bool) -> Result<ValidRequest, RequestError> {
        let u = uris();
        let g = grants();
        let c = ClientView {
            active: true,
            redirect_uris: &u,
            grant_types: &g,
            public,
        };
        validate(raw, Some(&c), BASE)
    }

    fn redirect_error(r: Result<ValidRequest, RequestError>) -> &'static str {
        match r {
            Err(RequestError::Redirect { error, .. }) => error,
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_passes() {
        let v = check(&good(), true).unwrap();
        assert_eq!(v.redirect_uri, "https://app.example/cb");
        assert_eq!(v.state.as_deref(), Some("xyz"));
    }

    #[test]
    fn bad_client_or_redirect_never_redirects() {
        let u = uris();
        let g = grants();
        let c = ClientView {
            active: true,
            redirect_uris: &u,
            grant_types: &g,
            public: true,
        };
        assert!(matches!(
            validate(&good(), None, BASE),
            Err(RequestError::NoRedirect { .. })
        ));
        let disabled = ClientView {
            active: false,
            ..c.clone()
        };
        assert!(matches!(
            validate(&good(), Some(&disabled), BASE),
            Err(RequestError::NoRedirect { .. })
        ));
        for bad in [
            "https://app.example/cb/",
            "https://app.example/cB",
            "https://app.example/cb?x=1",
            "https://app.example/c",
            "http://app.example/cb",
        ] {
            let mut r = good();
            r.redirect_uri = Some(bad.into());
            assert!(
                matches!(
                    validate(&r, Some(&c), BASE),
                    Err(RequestError::NoRedirect { .. })
                ),
                "{bad}"
            );
        }
        let mut r = good();
        r.redirect_uri = None;
        assert!(matches!(
            validate(&r, Some(&c), BASE),
            Err(RequestError::NoRedirect { .. })
        ));
        let mut r = good();
        r.duplicated = vec!["redirect_uri".into()];
        assert!(matches!(
            validate(&r, Some(&c), BASE),
            Err(RequestError::NoRedirect { .. })
        ));
    }

    #[test]
    fn parameter_errors_redirect_with_state() {
        let mut r = good();
        r.response_type = Some("token".into());
        assert_eq!(redirect_error(check(&r, true)), "unsupported_response_type");
        let mut r = good();
        r.aud = Some("https://evil.example/fhir".into());
        match check(&r, true) {
            Err(RequestError::Redirect { error, state, .. }) => {
                assert_eq!(error, "invalid_request");
                assert_eq!(state.as_deref(), Some("xyz"));
            }
            other => panic!("{other:?}"),
        }
        let mut r = good();
        r.aud = None;
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
        let mut r = good();
        r.scope = Some("  ".into());
        assert_eq!(redirect_error(check(&r, true)), "invalid_scope");
        let mut r = good();
        r.duplicated = vec!["scope".into()];
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
        let mut r = good();
        r.launch = Some("abc".into());
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
    }

    #[test]
    fn pkce_rules() {
        // plain is refused, missing method refused, public clients must send PKCE.
        let mut r = good();
        r.code_challenge_method = Some("plain".into());
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
        let mut r = good();
        r.code_challenge_method = None;
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
        let mut r = good();
        r.code_challenge = None;
        r.code_challenge_method = None;
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");
        assert!(
            check(&r, false).is_ok(),
            "confidential clients may omit PKCE"
        );
        let mut r = good();
        r.code_challenge = Some("short".into());
        assert_eq!(redirect_error(check(&r, true)), "invalid_request");

        let verifier = "a".repeat(43) + "-._~";
        let challenge = s256(&verifier);
        assert!(verify_pkce(&verifier, &challenge));
        assert!(
            !verify_pkce(&challenge, &challenge),
            "verifier equal to the challenge"
        );
        assert!(!verify_pkce(&("b".repeat(43)), &challenge));
        assert!(!verify_pkce("short", &s256("short")));
        assert!(!verify_pkce(&"a".repeat(129), &s256(&"a".repeat(129))));
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn redirect_builder_appends_to_existing_query() {
        let u = redirect_with(
            "https://app.example/cb?x=1",
            &[("code", "a b"), ("state", "s&t")],
        );
        assert_eq!(u, "https://app.example/cb?x=1&code=a+b&state=s%26t");
    }
}
