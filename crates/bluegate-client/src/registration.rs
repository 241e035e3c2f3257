//! UDAP Dynamic Client Registration, app side (udap.md UX-3, UR-2..UR-16, UR-20, UR-21): build and sign the
//! software statement, POST it, read the outcome (new, updated, cancelled).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::Error;
use crate::identity::AppIdentity;
use crate::secret::Secret;

/// Lifetime of a software statement: UDAP allows at most 300 s (UR-7).
pub const STATEMENT_LIFETIME: i64 = 300;

/// How the app will authenticate at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// UDAP JWT client authentication with the same certificate (the UDAP default, UR-15).
    PrivateKeyJwt,
    /// CARIN's alternative for apps that cannot protect a key at run time (CX-5): the server returns a
    /// `client_secret`, sent with HTTP Basic.
    ClientSecretBasic,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "private_key_jwt" => Ok(AuthMethod::PrivateKeyJwt),
            "client_secret_basic" => Ok(AuthMethod::ClientSecretBasic),
            _ => Err(format!(
                "`{s}`: expected private_key_jwt or client_secret_basic"
            )),
        }
    }
}

/// What the app asks to be registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    pub client_name: String,
    /// `["authorization_code", "refresh_token"]`, `["authorization_code"]` or `["client_credentials"]`;
    /// empty only to cancel.
    pub grant_types: Vec<String>,
    /// Required with `authorization_code`, absent otherwise.
    pub redirect_uris: Vec<String>,
    /// At least one `mailto:` URI (UR-10).
    pub contacts: Vec<String>,
    /// Required with `authorization_code` (UR-14).
    pub logo_uri: Option<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// Space-separated scopes.
    pub scope: String,
}

impl ClientMetadata {
    /// An app that launches users (`authorization_code` + `refresh_token`).
    pub fn authorization_code(
        client_name: &str,
        redirect_uris: Vec<String>,
        scope: &str,
        contacts: Vec<String>,
        logo_uri: &str,
        method: AuthMethod,
    ) -> Self {
        ClientMetadata {
            client_name: client_name.to_string(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            redirect_uris,
            contacts,
            logo_uri: Some(logo_uri.to_string()),
            token_endpoint_auth_method: method,
            scope: scope.to_string(),
        }
    }

    /// A B2B system (`client_credentials`, always `private_key_jwt`).
    pub fn client_credentials(client_name: &str, scope: &str, contacts: Vec<String>) -> Self {
        ClientMetadata {
            client_name: client_name.to_string(),
            grant_types: vec!["client_credentials".into()],
            redirect_uris: Vec::new(),
            contacts,
            logo_uri: None,
            token_endpoint_auth_method: AuthMethod::PrivateKeyJwt,
            scope: scope.to_string(),
        }
    }

    fn has_grant(&self, g: &str) -> bool {
        self.grant_types.iter().any(|x| x == g)
    }

    /// The rules a server will apply anyway (UR-10..UR-14), checked before anything is signed so that the
    /// app's developer gets a precise message.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Identity(format!("registration metadata: {m}")));
        if self.grant_types.is_empty() {
            return Ok(()); // cancellation
        }
        if self.client_name.trim().is_empty() {
            return bad("a client name is required");
        }
        let ac = self.has_grant("authorization_code");
        let cc = self.has_grant("client_credentials");
        if ac == cc {
            return bad("exactly one of authorization_code and client_credentials");
        }
        if ac {
            if self.redirect_uris.is_empty() {
                return bad("at least one redirect URI is required");
            }
            for u in &self.redirect_uris {
                match url::Url::parse(u) {
                    Ok(p) if p.fragment().is_none() && !p.cannot_be_a_base() => {}
                    _ => return bad(&format!("`{u}` is not an absolute URI without a fragment")),
                }
            }
            if self.logo_uri.is_none() {
                return bad("a logo URI (https, PNG/JPG/GIF) is required with authorization_code");
            }
        } else if self.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return bad("client_credentials clients authenticate with private_key_jwt");
        }
        if !self.contacts.iter().any(|c| c.starts_with("mailto:")) {
            return bad("at least one mailto: contact is required");
        }
        if self.scope.split_whitespace().next().is_none() {
            return bad("at least one scope is required");
        }
        Ok(())
    }
}

/// The claims of a software statement (UR-3..UR-16): `iss` = `sub` = the client URI, `aud` = the
/// registration endpoint exactly, `iat`, `exp` = `iat` + 300, `jti`, and the metadata. Pure: time and
/// `jti` are inputs.
pub fn statement_claims(
    client_uri: &str,
    registration_endpoint: &str,
    meta: &ClientMetadata,
    now: i64,
    jti: &str,
) -> Value {
    let mut c = json!({
        "iss": client_uri,
        "sub": client_uri,
        "aud": registration_endpoint,
        "iat": now,
        "exp": now + STATEMENT_LIFETIME,
        "jti": jti,
        "client_name": meta.client_name,
        "grant_types": meta.grant_types,
        "contacts": meta.contacts,
        "token_endpoint_auth_method": meta.token_endpoint_auth_method.as_str(),
        "scope": meta.scope,
    });
    if meta.has_grant("authorization_code") {
        c["redirect_uris"] = json!(meta.redirect_uris);
        c["response_types"] = json!(["code"]);
    }
    if let Some(l) = &meta.logo_uri {
        c["logo_uri"] = json!(l);
    }
    c
}

/// A signed software statement with a fresh `jti` (256 bits from the CSPRNG).
pub fn software_statement(
    identity: &AppIdentity,
    registration_endpoint: &str,
    meta: &ClientMetadata,
    now: i64,
) -> Result<String, Error> {
    meta.check()?;
    let jti = crate::util::random_b64url(32);
    identity.sign_with_x5c(&statement_claims(
        identity.client_uri(),
        registration_endpoint,
        meta,
        now,
        &jti,
    ))
}

/// What the server registered. `client_secret` only for `client_secret_basic`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_secret: Option<Secret>,
    /// 201 for a new registration, 200 for an update or a cancellation.
    pub http_status: u16,
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes granted at registration (may differ from the request, UX-6).
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
}

impl Registration {
    /// UR-21: an empty `grant_types` in any response means the registration is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.grant_types.is_empty()
    }
}

/// POST `{software_statement, udap: "1"}` to the registration endpoint and read the answer.
pub async fn post_statement(
    http: &reqwest::Client,
    registration_endpoint: &str,
    statement: &str,
) -> Result<Registration, Error> {
    let resp = http
        .post(registration_endpoint)
        .header("accept", "application/json")
        .json(&json!({"software_statement": statement, "udap": "1"}))
        .send()
        .await
        .map_err(|e| Error::transport(registration_endpoint, e))?;
    let status = resp.status().as_u16();
    let body = crate::http::read_json(resp).await;
    if !(status == 200 || status == 201) {
        let body = body.unwrap_or(Value::Null);
        return Err(Error::Registration {
            status,
            error: body["error"]
                .as_str()
                .unwrap_or("(no error code)")
                .to_string(),
            description: body["error_description"].as_str().map(str::to_string),
        });
    }
    let body = body?;
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let client_id = s("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::bad(registration_endpoint, "the response has no client_id"))?;
    let list = |k: &str| -> Vec<String> {
        body.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Registration {
        client_id,
        client_secret: s("client_secret").map(Secret::new),
        http_status: status,
        grant_types: list("grant_types"),
        redirect_uris: list("redirect_uris"),
        scope: s("scope").unwrap_or_default(),
        token_endpoint_auth_method: s("token_endpoint_auth_method"),
        client_name: s("client_name"),
    })
}

/// Register, or update the registration of the same client URI in the same community (UR-20).
pub async fn register(
    http: &reqwest::Client,
    registration_endpoint: &str,
    identity: &AppIdentity,
    meta: &ClientMetadata,
) -> Result<Registration, Error> {
    if meta.grant_types.is_empty() {
        return Err(Error::Identity(
            "registration metadata: grant types are required (use cancel to cancel)".into(),
        ));
    }
    let statement = software_statement(identity, registration_endpoint, meta, crate::util::now())?;
    let reg = post_statement(http, registration_endpoint, &statement).await?;
    if reg.is_cancelled() {
        return Err(Error::bad(
            registration_endpoint,
            "the server answered a registration with empty grant_types (cancelled)",
        ));
    }
    if meta.token_endpoint_auth_method == AuthMethod::ClientSecretBasic
        && reg.client_secret.is_none()
    {
        return Err(Error::bad(
            registration_endpoint,
            "client_secret_basic was registered but the server returned no client_secret",
        ));
    }
    Ok(reg)
}

/// Cancel the registration of this client URI (UR-21: the same statement with `grant_types: []`).
pub async fn cancel(
    http: &reqwest::Client,
    registration_endpoint: &str,
    identity: &AppIdentity,
    client_name: &str,
    contacts: Vec<String>,
) -> Result<Registration, Error> {
    let meta = ClientMetadata {
        client_name: client_name.to_string(),
        grant_types: Vec::new(),
        redirect_uris: Vec::new(),
        contacts,
        logo_uri: None,
        token_endpoint_auth_method: AuthMethod::PrivateKeyJwt,
        scope: String::new(),
    };
    let statement = software_statement(identity, registration_endpoint, &meta, crate::util::now())?;
    let reg = post_statement(http, registration_endpoint, &statement).await?;
    if !reg.is_cancelled() {
        return Err(Error::bad(
            registration_endpoint,
            "the server did not confirm the cancellation (grant_types is not empty)",
        ));
    }
    Ok(reg)
}
