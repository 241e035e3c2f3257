//! The token endpoint, app side: client authentication (UDAP `private_key_jwt` with `x5c`, or
//! `client_secret_basic`), the authorization-code exchange, refresh with rotation, and B2B
//! `client_credentials` with the `hl7-b2b` extension (udap.md UA-4, UA-5, UB-1..UB-4; smart.md C-9..C-15).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::error::Error;
use crate::identity::AppIdentity;
use crate::secret::Secret;

/// Lifetime of a client assertion (UDAP allows at most 300 s, UA-5).
pub const ASSERTION_LIFETIME: i64 = 300;
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the app authenticates at the token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// UDAP JWT client authentication: a fresh assertion per request, `udap=1`.
    PrivateKeyJwt {
        client_id: String,
        identity: Arc<AppIdentity>,
    },
    /// HTTP Basic with the registered secret (CARIN's `client_secret_basic`).
    ClientSecretBasic { client_id: String, secret: Secret },
    /// A public client: `client_id` in the body, no secret.
    Public { client_id: String },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuth::ClientSecretBasic { .. } => "client_secret_basic",
            ClientAuth::Public { .. } => "public",
        };
        f.debug_struct("ClientAuth")
            .field("method", &kind)
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::PrivateKeyJwt { client_id, .. }
            | ClientAuth::ClientSecretBasic { client_id, .. }
            | ClientAuth::Public { client_id } => client_id,
        }
    }
}

/// Claims of a UDAP client assertion (UA-5): `iss` = `sub` = the client_id (not the client URI), `aud` =
/// the token endpoint, `iat`, `exp` = `iat` + 300, `jti`, and `extensions` only when given (B2B). Pure.
pub fn assertion_claims(
    client_id: &str,
    token_endpoint: &str,
    now: i64,
    jti: &str,
    extensions: Option<&Value>,
) -> Value {
    let mut c = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": jti,
    });
    if let Some(e) = extensions {
        c["extensions"] = e.clone();
    }
    c
}

/// A signed client assertion with `x5c` and a fresh `jti`.
pub fn client_assertion(
    identity: &AppIdentity,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
    extensions: Option<&Value>,
) -> Result<String, Error> {
    let jti = crate::util::random_b64url(32);
    identity.sign_with_x5c(&assertion_claims(
        client_id,
        token_endpoint,
        now,
        &jti,
        extensions,
    ))
}

/// The `hl7-b2b` authorization extension (UB-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B2bContext {
    /// A URI identifying the requesting organization (required).
    pub organization_id: String,
    pub organization_name: Option<String>,
    /// At least one purpose-of-use code, e.g. `urn:oid:2.16.840.1.113883.5.8#TREAT` (required).
    pub purpose_of_use: Vec<String>,
    pub subject_name: Option<String>,
    pub subject_id: Option<String>,
    pub subject_role: Option<String>,
    pub consent_policy: Vec<String>,
    pub consent_reference: Vec<String>,
}

impl B2bContext {
    /// The `extensions` claim: `{"hl7-b2b": {...}}` with `version` "1" and only the members that are set.
    pub fn extensions(&self) -> Result<Value, Error> {
        if url::Url::parse(&self.organization_id).is_err() {
            return Err(Error::Identity(
                "hl7-b2b organization_id must be a URI".into(),
            ));
        }
        if self.purpose_of_use.is_empty() {
            return Err(Error::Identity(
                "hl7-b2b needs at least one purpose_of_use".into(),
            ));
        }
        let mut b = json!({
            "version": "1",
            "organization_id": self.organization_id,
            "purpose_of_use": self.purpose_of_use,
        });
        for (k, v) in [
            ("organization_name", &self.organization_name),
            ("subject_name", &self.subject_name),
            ("subject_id", &self.subject_id),
            ("subject_role", &self.subject_role),
        ] {
            if let Some(v) = v {
                b[k] = json!(v);
            }
        }
        if !self.consent_policy.is_empty() {
            b["consent_policy"] = json!(self.consent_policy);
            if !self.consent_reference.is_empty() {
                b["consent_reference"] = json!(self.consent_reference);
            }
        }
        Ok(json!({ "hl7-b2b": b }))
    }
}

/// Tokens as held by the app. `Debug` never shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    /// Unix seconds, computed from `expires_in` when it was given.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// The scopes granted (may differ from those requested).
    #[serde(default)]
    pub scope: Option<String>,
    /// The patient in context (a logical id).
    #[serde(default)]
    pub patient: Option<String>,
    /// The raw `id_token` (validated before it is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<Secret>,
    /// `fhirUser` from the validated `id_token`.
    #[serde(default)]
    pub fhir_user: Option<String>,
}

impl TokenSet {
    /// Expired, or expiring within `margin` seconds.
    pub fn expires_within(&self, now: i64, margin: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now + margin)
    }
}

/// Read a token response (C-11, T-14..T-21): `access_token` required, `token_type` required and Bearer
/// (case-insensitive), `expires_in` a number when present.
pub fn parse_token_response(body: &Value, now: i64) -> Result<TokenSet, Error> {
    let bad = |m: &str| Err(Error::TokenResponse(m.to_string()));
    let Some(obj) = body.as_object() else {
        return bad("not a JSON object");
    };
    let access_token = match obj.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return bad("access_token is missing"),
    };
    match obj.get("token_type") {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(_)) => return bad("token_type is not Bearer"),
        _ => return bad("token_type is missing"),
    }
    let expires_at = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) if s > 0 => Some(now.saturating_add(s)),
            _ => return bad("expires_in is not a positive number of seconds"),
        },
        Some(_) => return bad("expires_in is not a number"),
    };
    let opt = |k: &str| -> Result<Option<String>, Error> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::TokenResponse(format!("{k} is not a string"))),
        }
    };
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        expires_at,
        refresh_token: opt("refresh_token")?
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        scope: opt("scope")?,
        patient: opt("patient")?,
        id_token: opt("id_token")?.map(Secret::new),
        fhir_user: None,
    })
}

/// POST a form to the token endpoint with the client's authentication; return the raw JSON answer.
pub async fn token_request(
    http: &reqwest::Client,
    token_endpoint: &str,
    auth: &ClientAuth,
    extensions: Option<&Value>,
    params: &[(&str, &str)],
) -> Result<Value, Error> {
    let mut form: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut req = http
        .post(token_endpoint)
        .header("accept", "application/json");
    match auth {
        ClientAuth::PrivateKeyJwt {
            client_id,
            identity,
        } => {
            let a = client_assertion(
                identity,
                client_id,
                token_endpoint,
                crate::util::now(),
                extensions,
            )?;
            form.push(("client_assertion_type".into(), JWT_BEARER.into()));
            form.push(("client_assertion".into(), a));
            form.push(("udap".into(), "1".into()));
        }
        ClientAuth::ClientSecretBasic { client_id, secret } => {
            // RFC 6749 §2.3.1: form-urlencode id and secret, then Basic.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret.expose())));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        ClientAuth::Public { client_id } => {
            form.push(("client_id".into(), client_id.to_string()));
        }
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let resp = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::transport(token_endpoint, e))?;
    let status = resp.status().as_u16();
    let json = crate::http::read_json(resp).await;
    if status != 200 {
        let body = json.unwrap_or(Value::Null);
        return Err(Error::Token {
            status,
            error: body["error"]
                .as_str()
                .unwrap_or("(no error code)")
                .to_string(),
            description: body["error_description"].as_str().map(str::to_string),
        });
    }
    json
}

/// Exchange an authorization code (C-9): `redirect_uri` identical to the authorization request's, and the
/// PKCE `code_verifier`. The `id_token`, if any, is not validated here: see [`crate::oidc`] (the
/// [`crate::launch`] flow does both).
pub async fn exchange_code(
    http: &reqwest::Client,
    token_endpoint: &str,
    auth: &ClientAuth,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> Result<TokenSet, Error> {
    let body = token_request(
        http,
        token_endpoint,
        auth,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ],
    )
    .await?;
    parse_token_response(&body, crate::util::now())
}

/// Refresh (C-15). Returns the new token set: the new refresh token when the server rotated it (the old
/// one is dead then), else the old one; `patient` and `fhirUser` carried over when not repeated.
pub async fn refresh(
    http: &reqwest::Client,
    token_endpoint: &str,
    auth: &ClientAuth,
    current: &TokenSet,
) -> Result<TokenSet, Error> {
    let rt = current
        .refresh_token
        .as_ref()
        .ok_or(Error::NoRefreshToken)?;
    let body = token_request(
        http,
        token_endpoint,
        auth,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.expose()),
        ],
    )
    .await?;
    let mut next = parse_token_response(&body, crate::util::now())?;
    if next.refresh_token.is_none() {
        next.refresh_token = current.refresh_token.clone();
    }
    if next.patient.is_none() {
        next.patient = current.patient.clone();
    }
    if next.scope.is_none() {
        next.scope = current.scope.clone();
    }
    // A refresh never yields a new identity; keep the one validated at launch.
    next.id_token = current.id_token.clone();
    next.fhir_user = current.fhir_user.clone();
    Ok(next)
}

/// B2B `client_credentials` (UB-1): UDAP assertion with the `hl7-b2b` extension, `scope` required.
pub async fn client_credentials(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    identity: Arc<AppIdentity>,
    b2b: &B2bContext,
    scope: &str,
) -> Result<TokenSet, Error> {
    let ext = b2b.extensions()?;
    let body = token_request(
        http,
        token_endpoint,
        &ClientAuth::PrivateKeyJwt {
            client_id: client_id.to_string(),
            identity,
        },
        Some(&ext),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await?;
    let t = parse_token_response(&body, crate::util::now())?;
    if t.refresh_token.is_some() {
        // UA-10: never for client_credentials; do not keep one if a server sends it anyway.
        return Ok(TokenSet {
            refresh_token: None,
            ..t
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses_without_bearer_type_are_refused() {
        let now = 1000;
        let ok =
            json!({"access_token": "a", "token_type": "bearer", "expires_in": 60, "patient": "p"});
        let t = parse_token_response(&ok, now).unwrap();
        assert_eq!(t.expires_at, Some(1060));
        assert_eq!(t.patient.as_deref(), Some("p"));
        for bad in [
            json!({"access_token": "a"}),
            json!({"access_token": "a", "token_type": "mac"}),
            json!({"access_token": "a", "token_type": 1}),
            json!({"token_type": "Bearer"}),
            json!({"access_token": "", "token_type": "Bearer"}),
            json!({"access_token": "a", "token_type": "Bearer", "expires_in": "60"}),
            json!({"access_token": "a", "token_type": "Bearer", "expires_in": -5}),
            json!("text"),
        ] {
            assert!(parse_token_response(&bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_set_debug_hides_tokens() {
        let t = parse_token_response(
            &json!({"access_token": "AT-SECRET", "token_type": "Bearer", "refresh_token": "RT-SECRET"}),
            0,
        )
        .unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("AT-SECRET") && !d.contains("RT-SECRET"), "{d}");
    }

    #[test]
    fn b2b_extension_has_the_required_members() {
        let b = B2bContext {
            organization_id: "https://org.example/".into(),
            organization_name: Some("Org".into()),
            purpose_of_use: vec!["urn:oid:2.16.840.1.113883.5.8#TREAT".into()],
            subject_name: None,
            subject_id: None,
            subject_role: None,
            consent_policy: vec![],
            consent_reference: vec!["https://org.example/Consent/1".into()],
        };
        let e = b.extensions().unwrap();
        assert_eq!(e["hl7-b2b"]["version"], "1");
        assert_eq!(e["hl7-b2b"]["organization_id"], "https://org.example/");
        assert!(e["hl7-b2b"].get("consent_reference").is_none());
        assert!(e["hl7-b2b"].get("subject_name").is_none());
        assert!(bluegate_core::udap::check_hl7_b2b(&e["hl7-b2b"]).is_ok());
        let none = B2bContext {
            purpose_of_use: vec![],
            ..b.clone()
        };
        assert!(none.extensions().is_err());
        let not_uri = B2bContext {
            organization_id: "org".into(),
            ..b
        };
        assert!(not_uri.extensions().is_err());
    }
}
