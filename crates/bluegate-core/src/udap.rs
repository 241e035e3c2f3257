//! UDAP: software statements for Dynamic Client Registration (UDAP DCR, RFC 7591) and x5c client
//! assertions at the token endpoint (UDAP JWT-based client authentication).
//!
//! The validators return distinct types that only they construct, so the server can only register a client
//! from a [`ValidatedStatement`] and only authenticate one with a [`ValidatedUdapAssertion`].

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::jose::{self, Alg, JoseError, TimeRules};
use crate::trust::{ChainCache, Community, TrustError, ValidatedLeaf};

/// What the registration endpoint received.
#[derive(Debug, Clone)]
pub struct StatementInput {
    pub software_statement: String,
    pub certifications: Option<Vec<String>>,
    pub udap: Option<String>,
}

/// The server's registration policy.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    /// `aud` must equal this exactly.
    pub registration_endpoint: String,
    /// Clock-skew leeway in seconds (≤ 60).
    pub leeway: i64,
    /// Scopes the server offers; requested scopes are intersected with these.
    pub scopes_offered: Vec<String>,
    /// CARIN mode: `client_secret_basic` registrations are accepted (udap.md decision 1).
    pub carin_mode: bool,
    /// Certification URIs a registration must carry.
    pub required_certifications: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RegistrationErrorCode {
    InvalidSoftwareStatement,
    UnapprovedSoftwareStatement,
    InvalidClientMetadata,
    InvalidRedirectUri,
}

impl RegistrationErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSoftwareStatement => "invalid_software_statement",
            Self::UnapprovedSoftwareStatement => "unapproved_software_statement",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    pub code: RegistrationErrorCode,
    pub description: String,
}

fn err(code: RegistrationErrorCode, d: impl Into<String>) -> RegistrationError {
    RegistrationError {
        code,
        description: d.into(),
    }
}

fn invalid_statement(d: impl Into<String>) -> RegistrationError {
    err(RegistrationErrorCode::InvalidSoftwareStatement, d)
}

fn invalid_metadata(d: impl Into<String>) -> RegistrationError {
    err(RegistrationErrorCode::InvalidClientMetadata, d)
}

/// Registered client metadata, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientMetadata {
    pub client_name: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: String,
    pub contacts: Vec<String>,
    pub logo_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    Register(ClientMetadata),
    /// `grant_types: []`: cancel the registration of this `iss` in this community.
    Cancel,
}

/// A software statement that passed every rule. Only [`validate_software_statement`] constructs it.
#[derive(Debug, Clone)]
pub struct ValidatedStatement {
    pub iss: String,
    pub jti: String,
    pub exp: i64,
    pub community: String,
    pub leaf: Arc<ValidatedLeaf>,
    pub kind: StatementKind,
    pub raw_statement: String,
}

const ALGS: [Alg; 4] = Alg::ALL;

fn trust_error(e: TrustError) -> RegistrationError {
    err(
        RegistrationErrorCode::UnapprovedSoftwareStatement,
        format!("the certificate is not trusted here: {e}"),
    )
}

fn jose_statement_error(e: JoseError) -> RegistrationError {
    invalid_statement(format!("software_statement: {e}"))
}

/// Signature, chain and identity checks shared by statements and certifications: returns the claims and
/// the validated leaf.
fn verify_x5c_jwt(
    token: &str,
    community: &Community,
    cache: &ChainCache,
    now: i64,
) -> Result<(Map<String, Value>, Arc<ValidatedLeaf>), RegistrationError> {
    let parsed = jose::parse_compact(token, &ALGS).map_err(jose_statement_error)?;
    if parsed.header().x5c.is_none() {
        return Err(invalid_statement("the JWT header must carry x5c"));
    }
    let x5c = parsed.x5c_der().map_err(jose_statement_error)?;
    let leaf = cache
        .validate_cached(community, &x5c, now)
        .map_err(trust_error)?;
    let verified = parsed
        .verify_with_spki(&leaf.spki_der)
        .map_err(jose_statement_error)?;
    Ok((verified.into_claims(), leaf))
}

fn str_claim<'a>(c: &'a Map<String, Value>, k: &'static str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

fn string_array(
    c: &Map<String, Value>,
    k: &'static str,
) -> Result<Option<Vec<String>>, RegistrationError> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid_metadata(format!("{k} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid_metadata(format!("{k} must be an array of strings"))),
    }
}

fn https_url(u: &str) -> Option<url::Url> {
    url::Url::parse(u)
        .ok()
        .filter(|x| x.scheme() == "https" && x.host_str().is_some())
}

/// Validate a registration request against one community (udap.md UR-*, decisions 1, 4, 5).
pub fn validate_software_statement(
    input: &StatementInput,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    now: i64,
) -> Result<ValidatedStatement, RegistrationError> {
    if input.udap.as_deref() != Some("1") {
        return Err(invalid_statement("the request must carry \"udap\": \"1\""));
    }
    let (claims, leaf) = verify_x5c_jwt(&input.software_statement, community, cache, now)?;
    let iss = str_claim(&claims, "iss")
        .ok_or_else(|| invalid_statement("iss is required"))?
        .to_string();
    if str_claim(&claims, "sub") != Some(iss.as_str()) {
        return Err(invalid_statement("sub must equal iss"));
    }
    if !leaf.san_uris.contains(&iss) {
        return Err(invalid_statement(
            "iss must equal a uniformResourceIdentifier SAN of the signing certificate",
        ));
    }
    if !jose::audience_contains(&claims, &policy.registration_endpoint) {
        return Err(invalid_statement(format!(
            "aud must be the registration endpoint {}",
            policy.registration_endpoint
        )));
    }
    jose::check_time_claims(
        &claims,
        &TimeRules {
            now,
            leeway: policy.leeway,
            max_lifetime: Some(300),
        },
    )
    .map_err(jose_statement_error)?;
    let jti = str_claim(&claims, "jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| invalid_statement("jti is required"))?
        .to_string();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid_statement("exp must be a number"))?;
    check_certifications(input, community, cache, policy, &iss, now)?;
    let grant_types = string_array(&claims, "grant_types")?
        .ok_or_else(|| invalid_metadata("grant_types is required"))?;
    let kind = if grant_types.is_empty() {
        StatementKind::Cancel
    } else {
        StatementKind::Register(client_metadata(&claims, grant_types, policy)?)
    };
    Ok(ValidatedStatement {
        iss,
        jti,
        exp,
        community: community.uri().to_string(),
        leaf,
        kind,
        raw_statement: input.software_statement.clone(),
    })
}

fn client_metadata(
    claims: &Map<String, Value>,
    grant_types: Vec<String>,
    policy: &RegistrationPolicy,
) -> Result<ClientMetadata, RegistrationError> {
    for g in &grant_types {
        if !matches!(
            g.as_str(),
            "authorization_code" | "refresh_token" | "client_credentials"
        ) {
            return Err(invalid_metadata(format!("unsupported grant type `{g}`")));
        }
    }
    let has = |g: &str| grant_types.iter().any(|x| x == g);
    let auth_code = has("authorization_code");
    if auth_code && has("client_credentials") {
        return Err(invalid_metadata(
            "authorization_code and client_credentials cannot be registered together",
        ));
    }
    if has("refresh_token") && !auth_code {
        return Err(invalid_metadata(
            "refresh_token is only allowed with authorization_code",
        ));
    }
    let client_name = str_claim(claims, "client_name")
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 200)
        .ok_or_else(|| invalid_metadata("client_name is required (1 to 200 characters)"))?
        .to_string();
    let response_types = string_array(claims, "response_types")?;
    let redirect_uris = string_array(claims, "redirect_uris")?;
    let logo_uri = match claims.get("logo_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid_metadata("logo_uri must be a string")),
    };
    let (response_types, redirect_uris) = if auth_code {
        if response_types.as_deref() != Some(&["code".to_string()][..]) {
            return Err(invalid_metadata(
                "response_types must be [\"code\"] with authorization_code",
            ));
        }
        let uris = redirect_uris.filter(|u| !u.is_empty()).ok_or_else(|| {
            err(
                RegistrationErrorCode::InvalidRedirectUri,
                "redirect_uris is required with authorization_code",
            )
        })?;
        for u in &uris {
            let ok = https_url(u).is_some_and(|x| x.fragment().is_none());
            if !ok {
                return Err(err(
                    RegistrationErrorCode::InvalidRedirectUri,
                    format!("redirect URI `{u}` must be an absolute https URI without a fragment"),
                ));
            }
        }
        match &logo_uri {
            Some(l) if https_url(l).is_some() => {}
            _ => {
                return Err(invalid_metadata(
                    "logo_uri (an https URL) is required with authorization_code",
                ))
            }
        }
        (vec!["code".to_string()], uris)
    } else {
        if response_types.is_some_and(|r| !r.is_empty()) {
            return Err(invalid_metadata(
                "response_types must be omitted without authorization_code",
            ));
        }
        if redirect_uris.is_some_and(|r| !r.is_empty()) {
            return Err(err(
                RegistrationErrorCode::InvalidRedirectUri,
                "redirect_uris must be omitted for client_credentials",
            ));
        }
        (Vec::new(), Vec::new())
    };
    let method = str_claim(claims, "token_endpoint_auth_method")
        .ok_or_else(|| invalid_metadata("token_endpoint_auth_method is required"))?;
    match method {
        "private_key_jwt" => {}
        "client_secret_basic" if policy.carin_mode && auth_code => {}
        "client_secret_basic" => {
            return Err(invalid_metadata(
                "client_secret_basic is not accepted here; use private_key_jwt",
            ))
        }
        other => {
            return Err(invalid_metadata(format!(
                "token_endpoint_auth_method `{other}` is not supported"
            )))
        }
    }
    let requested =
        str_claim(claims, "scope").ok_or_else(|| invalid_metadata("scope is required"))?;
    let scope = requested
        .split_whitespace()
        .filter(|s| policy.scopes_offered.iter().any(|o| o == s))
        .fold(Vec::<&str>::new(), |mut acc, s| {
            if !acc.contains(&s) {
                acc.push(s);
            }
            acc
        })
        .join(" ");
    let contacts = string_array(claims, "contacts")?.unwrap_or_default();
    if contacts.is_empty() || !contacts.iter().any(|c| c.starts_with("mailto:")) {
        return Err(invalid_metadata(
            "contacts must include at least one mailto: address",
        ));
    }
    Ok(ClientMetadata {
        client_name,
        grant_types,
        response_types,
        redirect_uris,
        token_endpoint_auth_method: method.to_string(),
        scope,
        contacts,
        logo_uri,
    })
}

/// UDAP certifications: each is an x5c JWT in the same community, about the same `iss`; required
/// certification URIs must all be covered.
fn check_certifications(
    input: &StatementInput,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    iss: &str,
    now: i64,
) -> Result<(), RegistrationError> {
    let mut covered: Vec<String> = Vec::new();
    for cert_jwt in input.certifications.iter().flatten() {
        let (claims, _) = verify_x5c_jwt(cert_jwt, community, cache, now)
            .map_err(|e| invalid_statement(format!("certification: {}", e.description)))?;
        jose::check_time_claims(
            &claims,
            &TimeRules {
                now,
                leeway: policy.leeway,
                max_lifetime: None,
            },
        )
        .map_err(|e| invalid_statement(format!("certification: {e}")))?;
        if str_claim(&claims, "sub") != Some(iss) {
            return Err(invalid_statement(
                "certification: sub must equal the software statement's iss",
            ));
        }
        if let Some(uris) = claims.get("certification_uris").and_then(Value::as_array) {
            covered.extend(uris.iter().filter_map(Value::as_str).map(str::to_string));
        }
    }
    for required in &policy.required_certifications {
        if !covered.contains(required) {
            return Err(err(
                RegistrationErrorCode::UnapprovedSoftwareStatement,
                format!("the certification {required} is required in this community"),
            ));
        }
    }
    Ok(())
}

/// A UDAP client assertion that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidatedUdapAssertion {
    pub jti: String,
    pub exp: i64,
    /// The `extensions` claim (e.g. `hl7-b2b`), if any.
    pub extensions: Option<Map<String, Value>>,
}

/// UDAP JWT client authentication (udap.md UA-*): alg allow-list, `x5c` chained to the client's community
/// with the leaf's URI SAN equal to the registered `iss` (the registered certificate or a renewal with the
/// same SAN, decision 6), `iss` = `sub` = `client_id`, `aud` = the token endpoint, `exp` ≤ 5 minutes after
/// `iat`, a `jti` (replay is checked by the caller in the store).
#[allow(clippy::too_many_arguments)]
pub fn validate_udap_assertion(
    assertion: &str,
    community: &Community,
    cache: &ChainCache,
    registered_iss: &str,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
    leeway: i64,
) -> Result<ValidatedUdapAssertion, String> {
    let parsed = jose::parse_compact(assertion, &ALGS).map_err(|e| e.to_string())?;
    let x5c = parsed.x5c_der().map_err(|e| e.to_string())?;
    let leaf = cache
        .validate_cached(community, &x5c, now)
        .map_err(|e| format!("certificate: {e}"))?;
    if !leaf.san_uris.iter().any(|u| u == registered_iss) {
        return Err("the certificate's URI SAN is not the registered one".into());
    }
    let verified = parsed
        .verify_with_spki(&leaf.spki_der)
        .map_err(|e| e.to_string())?;
    let checked = crate::tokens::check_assertion_claims(
        verified.claims(),
        client_id,
        token_endpoint,
        now,
        leeway,
    )
    .map_err(|e| e.to_string())?;
    let extensions = match verified.claims().get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err("extensions must be a JSON object".into()),
    };
    Ok(ValidatedUdapAssertion {
        jti: checked.jti,
        exp: checked.exp,
        extensions,
    })
}

/// The `hl7-b2b` authorization extension (UDAP B2B §5.2.1.1): `version` "1", `organization_id` (a URI),
/// `purpose_of_use` (a non-empty array of codes). Returns a description of what is wrong.
pub fn check_hl7_b2b(ext: &Value) -> Result<(), String> {
    let obj = ext
        .as_object()
        .ok_or_else(|| "hl7-b2b must be an object".to_string())?;
    if obj.get("version").and_then(Value::as_str) != Some("1") {
        return Err("hl7-b2b version must be \"1\"".into());
    }
    match obj.get("organization_id").and_then(Value::as_str) {
        Some(o) if url::Url::parse(o).is_ok() => {}
        _ => return Err("hl7-b2b organization_id must be a URI".into()),
    }
    match obj.get("purpose_of_use").and_then(Value::as_array) {
        Some(p) if !p.is_empty() && p.iter().all(Value::is_string) => Ok(()),
        _ => Err("hl7-b2b purpose_of_use must be a non-empty array of codes".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use crate::pki::{IssuedCert, KeyKind};
    use crate::trust::testpki::{x5c, TestCommunity};
    use base64::Engine;
    use serde_json::json;

    const REG: &str = "https://as.example/oauth/register";
    const APP: &str = "https://app.example/";

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            registration_endpoint: REG.into(),
            leeway: 60,
            scopes_offered: vec![
                "openid".into(),
                "patient/Patient.read".into(),
                "system/Patient.read".into(),
            ],
            carin_mode: true,
            required_certifications: vec![],
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> Value {
        let t = now();
        json!({"iss": APP, "sub": APP, "aud": REG, "iat": t, "exp": t + 300, "jti": format!("j{t}"),
            "client_name": "App", "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "redirect_uris": ["https://app.example/cb"], "logo_uri": "https://app.example/logo.png",
            "contacts": ["mailto:dev@app.example"], "token_endpoint_auth_method": "private_key_jwt",
            "scope": "openid patient/Patient.read patient/Unknown.read openid"})
    }

    struct Fixture {
        t: TestCommunity,
        leaf: IssuedCert,
        key: SigningKey,
    }

    fn fixture(kind: KeyKind) -> Fixture {
        let t = TestCommunity::new(kind);
        let leaf = t.leaf(Some(APP), kind, -1, 10);
        let alg = if kind == KeyKind::P256 {
            Alg::ES256
        } else {
            Alg::RS256
        };
        let key = SigningKey::from_pem(Some(alg), &leaf.key_pem).unwrap();
        Fixture { t, leaf, key }
    }

    fn sign(f: &Fixture, c: &Value) -> String {
        let mut h = Map::new();
        let chain: Vec<String> = x5c(&f.leaf)
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect();
        h.insert("x5c".into(), json!(chain));
        f.key.sign_compact(&h, c).unwrap()
    }

    fn run(f: &Fixture, c: &Value) -> Result<ValidatedStatement, RegistrationError> {
        let input = StatementInput {
            software_statement: sign(f, c),
            certifications: None,
            udap: Some("1".into()),
        };
        validate_software_statement(
            &input,
            &f.t.community(&[]),
            &ChainCache::new(10),
            &policy(),
            now(),
        )
    }

    fn code(r: Result<ValidatedStatement, RegistrationError>) -> RegistrationErrorCode {
        r.expect_err("should fail").code
    }

    #[test]
    fn valid_statements_register() {
        for kind in [KeyKind::P256, KeyKind::Rsa2048] {
            let f = fixture(kind);
            let v = run(&f, &claims()).unwrap();
            assert_eq!(v.iss, APP);
            match v.kind {
                StatementKind::Register(m) => {
                    assert_eq!(m.scope, "openid patient/Patient.read");
                    assert_eq!(m.token_endpoint_auth_method, "private_key_jwt");
                }
                StatementKind::Cancel => panic!("not a cancel"),
            }
        }
    }

    #[test]
    fn cancellation() {
        let f = fixture(KeyKind::P256);
        let mut c = claims();
        c["grant_types"] = json!([]);
        assert_eq!(run(&f, &c).unwrap().kind, StatementKind::Cancel);
    }

    #[test]
    fn statement_rules() {
        use RegistrationErrorCode::*;
        let f = fixture(KeyKind::P256);
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change, RegistrationErrorCode)> = vec![
            (
                "wrong SAN",
                Box::new(|c| {
                    c["iss"] = json!("https://other/");
                    c["sub"] = json!("https://other/");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "sub differs",
                Box::new(|c| {
                    c["sub"] = json!("https://other/");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "wrong aud",
                Box::new(|c| {
                    c["aud"] = json!("https://as.example/oauth/token");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "too long",
                Box::new(|c| {
                    c["exp"] = json!(c["iat"].as_i64().unwrap() + 301);
                }),
                InvalidSoftwareStatement,
            ),
            (
                "expired",
                Box::new(|c| {
                    c["iat"] = json!(now() - 1000);
                    c["exp"] = json!(now() - 800);
                }),
                InvalidSoftwareStatement,
            ),
            (
                "no jti",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "no iat",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "no grant_types",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("grant_types");
                }),
                InvalidClientMetadata,
            ),
            (
                "mixed grants",
                Box::new(|c| {
                    c["grant_types"] = json!(["authorization_code", "client_credentials"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "refresh alone",
                Box::new(|c| {
                    c["grant_types"] = json!(["refresh_token"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "unknown grant",
                Box::new(|c| {
                    c["grant_types"] = json!(["password"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "response_types",
                Box::new(|c| {
                    c["response_types"] = json!(["token"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "no client_name",
                Box::new(|c| {
                    c["client_name"] = json!(" ");
                }),
                InvalidClientMetadata,
            ),
            (
                "http redirect",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["http://app.example/cb"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "fragment",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["https://app.example/cb#x"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "relative",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["/cb"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "no redirect",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("redirect_uris");
                }),
                InvalidRedirectUri,
            ),
            (
                "no logo",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("logo_uri");
                }),
                InvalidClientMetadata,
            ),
            (
                "http logo",
                Box::new(|c| {
                    c["logo_uri"] = json!("http://app.example/l.png");
                }),
                InvalidClientMetadata,
            ),
            (
                "bad method",
                Box::new(|c| {
                    c["token_endpoint_auth_method"] = json!("none");
                }),
                InvalidClientMetadata,
            ),
            (
                "no contacts",
                Box::new(|c| {
                    c["contacts"] = json!([]);
                }),
                InvalidClientMetadata,
            ),
            (
                "no scope",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("scope");
                }),
                InvalidClientMetadata,
            ),
            (
                "cc with redirect",
                Box::new(|c| {
                    c["grant_types"] = json!(["client_credentials"]);
                    c.as_object_mut().unwrap().remove("response_types");
                }),
                InvalidRedirectUri,
            ),
        ];
        for (name, change, expected) in cases {
            let mut c = claims();
            change(&mut c);
            assert_eq!(code(run(&f, &c)), expected, "{name}");
        }
        // client_credentials done right.
        let mut c = claims();
        c["grant_types"] = json!(["client_credentials"]);
        for k in ["response_types", "redirect_uris", "logo_uri"] {
            c.as_object_mut().unwrap().remove(k);
        }
        c["scope"] = json!("system/Patient.read");
        assert!(run(&f, &c).is_ok());
    }

    #[test]
    fn carin_mode_decides_client_secret_basic() {
        let f = fixture(KeyKind::P256);
        let mut c = claims();
        c["token_endpoint_auth_method"] = json!("client_secret_basic");
        assert!(run(&f, &c).is_ok());
        let input = StatementInput {
            software_statement: sign(&f, &c),
            certifications: None,
            udap: Some("1".into()),
        };
        let mut strict = policy();
        strict.carin_mode = false;
        let r = validate_software_statement(
            &input,
            &f.t.community(&[]),
            &ChainCache::new(10),
            &strict,
            now(),
        );
        assert_eq!(code(r), RegistrationErrorCode::InvalidClientMetadata);
    }

    #[test]
    fn signature_chain_and_envelope() {
        let f = fixture(KeyKind::P256);
        // Signed by another key than the x5c leaf.
        let other = SigningKey::generate(Alg::ES256).unwrap();
        let mut h = Map::new();
        let chain: Vec<String> = x5c(&f.leaf)
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect();
        h.insert("x5c".into(), json!(chain));
        let forged = other.sign_compact(&h, &claims()).unwrap();
        let input = StatementInput {
            software_statement: forged,
            certifications: None,
            udap: Some("1".into()),
        };
        let c = f.t.community(&[]);
        assert_eq!(
            code(validate_software_statement(
                &input,
                &c,
                &ChainCache::new(4),
                &policy(),
                now()
            )),
            RegistrationErrorCode::InvalidSoftwareStatement
        );
        // No x5c.
        let bare = f.key.sign_compact(&Map::new(), &claims()).unwrap();
        let input = StatementInput {
            software_statement: bare,
            certifications: None,
            udap: Some("1".into()),
        };
        assert_eq!(
            code(validate_software_statement(
                &input,
                &c,
                &ChainCache::new(4),
                &policy(),
                now()
            )),
            RegistrationErrorCode::InvalidSoftwareStatement
        );
        // Untrusted community.
        let stranger = fixture(KeyKind::P256);
        let input = StatementInput {
            software_statement: sign(&stranger, &claims()),
            certifications: None,
            udap: Some("1".into()),
        };
        assert_eq!(
            code(validate_software_statement(
                &input,
                &c,
                &ChainCache::new(4),
                &policy(),
                now()
            )),
            RegistrationErrorCode::UnapprovedSoftwareStatement
        );
        // udap missing.
        let input = StatementInput {
            software_statement: sign(&f, &claims()),
            certifications: None,
            udap: None,
        };
        assert_eq!(
            code(validate_software_statement(
                &input,
                &c,
                &ChainCache::new(4),
                &policy(),
                now()
            )),
            RegistrationErrorCode::InvalidSoftwareStatement
        );
        // Required certification missing.
        let mut p = policy();
        p.required_certifications = vec!["https://cert.example/c1".into()];
        let input = StatementInput {
            software_statement: sign(&f, &claims()),
            certifications: None,
            udap: Some("1".into()),
        };
        assert_eq!(
            code(validate_software_statement(
                &input,
                &c,
                &ChainCache::new(4),
                &p,
                now()
            )),
            RegistrationErrorCode::UnapprovedSoftwareStatement
        );
        // ...and present.
        let t = now();
        let cert = sign(
            &f,
            &json!({"iss": APP, "sub": APP, "iat": t, "exp": t + 3600, "jti": "c", "certification_uris": ["https://cert.example/c1"]}),
        );
        let input = StatementInput {
            software_statement: sign(&f, &claims()),
            certifications: Some(vec![cert]),
            udap: Some("1".into()),
        };
        assert!(validate_software_statement(&input, &c, &ChainCache::new(4), &p, now()).is_ok());
    }

    #[test]
    fn random_input_never_panics() {
        let f = fixture(KeyKind::P256);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(4);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"AZaz09-_.=+/{}\":, ";
        let good = sign(&f, &claims());
        for i in 0..3000 {
            let len = (next() % 200) as usize;
            let s: String = if i % 3 == 0 {
                // Mutate a valid statement.
                let mut b = good.clone().into_bytes();
                for _ in 0..(1 + next() % 4) {
                    let p = (next() as usize) % b.len();
                    b[p] = alphabet[(next() as usize) % alphabet.len()];
                }
                String::from_utf8_lossy(&b).to_string()
            } else if i % 3 == 1 {
                (0..len)
                    .map(|_| alphabet[(next() as usize) % alphabet.len()] as char)
                    .collect()
            } else {
                let seg = |n: &mut dyn FnMut() -> u64| -> String {
                    let bytes: Vec<u8> = (0..(n() % 64)).map(|_| n() as u8).collect();
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
                };
                format!("{}.{}.{}", seg(&mut next), seg(&mut next), seg(&mut next))
            };
            let input = StatementInput {
                software_statement: s.clone(),
                certifications: None,
                udap: Some("1".into()),
            };
            if s != good {
                assert!(validate_software_statement(&input, &c, &cache, &policy(), now()).is_err());
            }
        }
    }

    #[test]
    fn udap_assertions() {
        let f = fixture(KeyKind::Rsa2048);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(4);
        let ep = "https://as.example/oauth/token";
        let t = now();
        let good = json!({"iss": "cid", "sub": "cid", "aud": ep, "iat": t, "exp": t + 300, "jti": "a1",
                          "extensions": {"hl7-b2b": {"version": "1", "organization_id": "https://org.example/", "purpose_of_use": ["TREAT"]}}});
        let v =
            validate_udap_assertion(&sign(&f, &good), &c, &cache, APP, "cid", ep, t, 60).unwrap();
        assert_eq!(v.jti, "a1");
        check_hl7_b2b(&Value::Object(v.extensions.unwrap())["hl7-b2b"]).unwrap();
        assert!(validate_udap_assertion(
            &sign(&f, &good),
            &c,
            &cache,
            "https://someone-else/",
            "cid",
            ep,
            t,
            60
        )
        .is_err());
        assert!(
            validate_udap_assertion(&sign(&f, &good), &c, &cache, APP, "other", ep, t, 60).is_err()
        );
        assert!(validate_udap_assertion(
            &sign(&f, &good),
            &c,
            &cache,
            APP,
            "cid",
            "https://x/token",
            t,
            60
        )
        .is_err());
        assert!(validate_udap_assertion(
            &sign(&f, &good),
            &c,
            &cache,
            APP,
            "cid",
            ep,
            t + 1000,
            60
        )
        .is_err());
        assert!(check_hl7_b2b(&json!({"version": "1"})).is_err());
        assert!(check_hl7_b2b(
            &json!({"version": "1", "organization_id": "https://o/", "purpose_of_use": []})
        )
        .is_err());
    }
}
