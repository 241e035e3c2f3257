//! UDAP: software statements for Dynamic Client Registration (UDAP DCR, RFC 7591) and x5c client
//! assertions at the token endpoint (UDAP JWT-based client authentication).
//!
//! The validators return distinct types that only they construct, so the server can only register a client
//! from a [`ValidatedStatement`] and only authenticate one with a [`ValidatedAssertion`].
//!
//! Choices where the sources leave room (udap.md "Decisions" settle the rest):
//! - `token_endpoint_auth_method` is required: `private_key_jwt`, or `client_secret_basic` in CARIN mode
//!   for `authorization_code` clients only. Absent is refused rather than defaulted: RFC 7591's default
//!   (`client_secret_basic`) is what UDAP forbids, and guessing `private_key_jwt` would register
//!   something the client did not say.
//! - `scope` is required; requested scopes are intersected with the offered ones (request order kept,
//!   duplicates and unknown scopes dropped). An empty intersection is `invalid_client_metadata`
//!   (UR-19: "none of the scopes grantable"), not a registration with an empty scope.
//! - `contacts` must hold at least one `mailto:` URI (UR-10 SHALL); every entry must be a URI.
//! - `logo_uri`, when present, must be https (required with `authorization_code`).
//! - Certifications that do not validate are ignored (UR-22); a missing required one is
//!   `unapproved_software_statement`, and the description says why a supplied one did not count.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::jose::{self, Alg, JoseError, TimeRules};
use crate::trust::{ChainCache, Community, TrustError, ValidatedLeaf};

/// Algorithms accepted for every UDAP JWT (UC-6).
pub const ALGS: [Alg; 4] = [Alg::RS256, Alg::RS384, Alg::ES256, Alg::ES384];
/// Longest lifetime (`exp - iat`) of a software statement or a client assertion, in seconds.
pub const MAX_STATEMENT_LIFETIME: i64 = 300;
/// Longest lifetime of a certification (UR-22: three years).
pub const MAX_CERTIFICATION_LIFETIME: i64 = 3 * 366 * 86_400;
/// Most certifications read from one registration request.
pub const MAX_CERTIFICATIONS: usize = 16;
const MAX_JTI: usize = 256;
const MAX_CLIENT_NAME: usize = 200;

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
    /// Clock-skew leeway in seconds (clamped to 0..=60).
    pub leeway: i64,
    /// Scopes the server offers; requested scopes are intersected with these.
    pub scopes_offered: Vec<String>,
    /// CARIN mode: `client_secret_basic` registrations are accepted (udap.md decision 1).
    pub carin_mode: bool,
    /// Certification URIs a registration must carry.
    pub required_certifications: Vec<String>,
}

/// RFC 7591 §3.2.2 error codes, as udap.md decision 5 assigns them.
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

/// A refused registration: the wire `error` and an `error_description` written for the client's
/// developer (it names the rule, never key material or server internals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
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

fn invalid_redirect(d: impl Into<String>) -> RegistrationError {
    err(RegistrationErrorCode::InvalidRedirectUri, d)
}

/// Registered client metadata, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientMetadata {
    pub client_name: String,
    pub grant_types: Vec<String>,
    /// `["code"]` with `authorization_code`, empty otherwise.
    pub response_types: Vec<String>,
    /// Exactly as sent (compared by exact string match later).
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    /// The granted scopes: the requested ones that are offered, space-separated, never empty.
    pub scope: String,
    /// The scope string as requested.
    pub requested_scope: String,
    pub contacts: Vec<String>,
    pub logo_uri: Option<String>,
    /// Certification URIs carried by valid certifications.
    pub certification_uris: Vec<String>,
}

// Built once per registration and matched by value by the server: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    Register(ClientMetadata),
    /// `grant_types: []`: cancel the registration of this `iss` in this community (UR-21).
    Cancel,
}

/// Seals the validated types: only this module constructs them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sealed;

/// A software statement that passed every rule. Only [`validate_software_statement`] constructs it.
#[derive(Debug, Clone)]
pub struct ValidatedStatement {
    /// The client URI (a URI SAN of the leaf).
    pub iss: String,
    /// For the replay check in the store (per `iss`, kept until `exp`).
    pub jti: String,
    pub exp: i64,
    /// The community the certificate chained to.
    pub community: String,
    pub leaf: Arc<ValidatedLeaf>,
    pub kind: StatementKind,
    /// The statement exactly as received, to echo in the response (RFC 7591 §3.2.1).
    pub raw_statement: String,
    _sealed: Sealed,
}

fn trust_error(what: &str, e: TrustError) -> RegistrationError {
    let code = match e {
        // A certificate that does not even parse is a malformed statement, not an untrusted one.
        TrustError::Malformed(_) | TrustError::ChainTooLong => {
            RegistrationErrorCode::InvalidSoftwareStatement
        }
        _ => RegistrationErrorCode::UnapprovedSoftwareStatement,
    };
    err(
        code,
        format!("{what}: the x5c certificate is not accepted: {e}"),
    )
}

/// A description of a JOSE failure that does not reflect attacker-chosen text.
fn jose_text(e: &JoseError) -> String {
    match e {
        JoseError::UnsupportedAlg(_) => "alg must be one of RS256, RS384, ES256, ES384".to_string(),
        JoseError::KeyMismatch => {
            "alg does not match the key type of the x5c leaf certificate".to_string()
        }
        JoseError::BadSignature => {
            "the signature does not verify with the x5c leaf certificate's key".to_string()
        }
        other => other.to_string(),
    }
}

/// A JWS with an `x5c` header, parsed and its certificates decoded, not yet verified.
#[derive(Debug, Clone)]
pub struct X5cJws {
    jws: jose::UnverifiedJws,
    x5c: Vec<Vec<u8>>,
}

impl X5cJws {
    /// The `x5c` certificates as DER, leaf first (e.g. to fetch their CRLs before validation).
    pub fn x5c(&self) -> &[Vec<u8>] {
        &self.x5c
    }
}

/// Parse (algorithms from the allow-list) and take `x5c`, which must be there.
fn parse_x5c_jwt(token: &str, what: &str) -> Result<X5cJws, RegistrationError> {
    let bad = |e: JoseError| invalid_statement(format!("{what}: {}", jose_text(&e)));
    let jws = jose::parse_compact(token, &ALGS).map_err(bad)?;
    if jws.header().x5c.is_none() {
        return Err(invalid_statement(format!(
            "{what}: the JWS header must carry x5c (the certificate chain, leaf first)"
        )));
    }
    let x5c = jws.x5c_der().map_err(bad)?;
    Ok(X5cJws { jws, x5c })
}

/// Validate the chain (cached) and verify the signature with the leaf's key.
fn verify_parsed_x5c_jwt(
    parsed: &X5cJws,
    what: &str,
    community: &Community,
    cache: &ChainCache,
    now: i64,
) -> Result<(Map<String, Value>, Arc<ValidatedLeaf>), RegistrationError> {
    let bad = |e: JoseError| invalid_statement(format!("{what}: {}", jose_text(&e)));
    let leaf = cache
        .validate_cached(community, &parsed.x5c, now)
        .map_err(|e| trust_error(what, e))?;
    let verified = parsed
        .jws
        .clone()
        .verify_with_spki(&leaf.spki_der)
        .map_err(bad)?;
    Ok((verified.into_claims(), leaf))
}

/// Parse, take `x5c`, validate the chain (cached), verify the signature with the leaf's key.
fn verify_x5c_jwt(
    token: &str,
    what: &str,
    community: &Community,
    cache: &ChainCache,
    now: i64,
) -> Result<(Map<String, Value>, Arc<ValidatedLeaf>), RegistrationError> {
    verify_parsed_x5c_jwt(&parse_x5c_jwt(token, what)?, what, community, cache, now)
}

fn str_claim<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

fn int_claim(c: &Map<String, Value>, k: &str) -> Option<i64> {
    c.get(k).and_then(Value::as_i64)
}

fn jti_claim(c: &Map<String, Value>) -> Option<String> {
    str_claim(c, "jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
        .map(str::to_string)
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
        .filter(|x| x.scheme() == "https" && x.host_str().is_some_and(|h| !h.is_empty()))
}

fn time_rules(now: i64, leeway: i64, max_lifetime: i64) -> TimeRules {
    TimeRules {
        now,
        leeway: leeway.clamp(0, 60),
        max_lifetime: Some(max_lifetime),
    }
}

/// Validate a registration request against one community (udap.md UJ-*, UR-*, decisions 1, 4, 5).
/// The `jti` replay check is the caller's (the store): use [`ValidatedStatement::jti`] and `exp`.
pub fn validate_software_statement(
    input: &StatementInput,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    now: i64,
) -> Result<ValidatedStatement, RegistrationError> {
    let parsed = parse_software_statement(input)?;
    validate_parsed_statement(input, &parsed, community, cache, policy, now)
}

/// The first step of [`validate_software_statement`]: the request's `udap` marker, then the statement
/// parsed (allowed `alg`, `x5c` decoded). A server that tries several communities, or fetches the
/// certificates' CRLs first, parses once and validates the result against each.
pub fn parse_software_statement(input: &StatementInput) -> Result<X5cJws, RegistrationError> {
    if input.udap.as_deref() != Some("1") {
        return Err(invalid_statement("the request must carry \"udap\": \"1\""));
    }
    parse_x5c_jwt(&input.software_statement, "software_statement")
}

/// The rest of [`validate_software_statement`], for a statement parsed from `input` by
/// [`parse_software_statement`].
pub fn validate_parsed_statement(
    input: &StatementInput,
    parsed: &X5cJws,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    now: i64,
) -> Result<ValidatedStatement, RegistrationError> {
    let (claims, leaf) =
        verify_parsed_x5c_jwt(parsed, "software_statement", community, cache, now)?;
    let iss = str_claim(&claims, "iss")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid_statement("iss is required"))?
        .to_string();
    if str_claim(&claims, "sub") != Some(iss.as_str()) {
        return Err(invalid_statement("sub must equal iss"));
    }
    if !leaf.san_uris.contains(&iss) {
        return Err(invalid_statement(
            "iss must equal a uniformResourceIdentifier SAN of the x5c leaf certificate (exact match)",
        ));
    }
    if !jose::audience_contains(&claims, &policy.registration_endpoint) {
        return Err(invalid_statement(format!(
            "aud must be the registration endpoint {}",
            policy.registration_endpoint
        )));
    }
    if int_claim(&claims, "iat").is_none() {
        return Err(invalid_statement("iat is required (a number)"));
    }
    let exp =
        int_claim(&claims, "exp").ok_or_else(|| invalid_statement("exp is required (a number)"))?;
    jose::check_time_claims(
        &claims,
        &time_rules(now, policy.leeway, MAX_STATEMENT_LIFETIME),
    )
    .map_err(|e| invalid_statement(format!("software_statement: {}", jose_text(&e))))?;
    let jti = jti_claim(&claims)
        .ok_or_else(|| invalid_statement("jti is required (1 to 256 characters)"))?;
    let grant_types = string_array(&claims, "grant_types")?
        .ok_or_else(|| invalid_metadata("grant_types is required"))?;
    let kind = if grant_types.is_empty() {
        StatementKind::Cancel
    } else {
        let mut meta = client_metadata(&claims, grant_types, policy)?;
        meta.certification_uris = check_certifications(input, community, cache, policy, &iss, now)?;
        StatementKind::Register(meta)
    };
    Ok(ValidatedStatement {
        iss,
        jti,
        exp,
        community: community.uri().to_string(),
        leaf,
        kind,
        raw_statement: input.software_statement.clone(),
        _sealed: Sealed,
    })
}

/// The grant-type rules of UR-11 (also used for certifications).
fn check_grant_types(grant_types: &[String]) -> Result<(), RegistrationError> {
    for g in grant_types {
        if !matches!(
            g.as_str(),
            "authorization_code" | "refresh_token" | "client_credentials"
        ) {
            return Err(invalid_metadata(format!(
                "unsupported grant type `{}`",
                g.chars().take(64).collect::<String>()
            )));
        }
    }
    let has = |g: &str| grant_types.iter().any(|x| x == g);
    if has("authorization_code") && has("client_credentials") {
        return Err(invalid_metadata(
            "authorization_code and client_credentials cannot be registered together",
        ));
    }
    if has("refresh_token") && !has("authorization_code") {
        return Err(invalid_metadata(
            "refresh_token is only allowed together with authorization_code",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for g in grant_types {
        if seen.contains(&g.as_str()) {
            return Err(invalid_metadata("grant_types lists a grant type twice"));
        }
        seen.push(g);
    }
    Ok(())
}

fn client_metadata(
    claims: &Map<String, Value>,
    grant_types: Vec<String>,
    policy: &RegistrationPolicy,
) -> Result<ClientMetadata, RegistrationError> {
    check_grant_types(&grant_types)?;
    let auth_code = grant_types.iter().any(|g| g == "authorization_code");
    let client_name = match claims.get("client_name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= MAX_CLIENT_NAME => {
            n.clone()
        }
        _ => {
            return Err(invalid_metadata(
                "client_name is required (a non-empty string of at most 200 characters)",
            ))
        }
    };
    let response_types = string_array(claims, "response_types")?;
    let redirect_uris = string_array(claims, "redirect_uris")?;
    let logo_uri = match claims.get("logo_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if https_url(s).is_some() => Some(s.clone()),
        Some(_) => return Err(invalid_metadata("logo_uri must be an absolute https URL")),
    };
    let (response_types, redirect_uris) = if auth_code {
        if response_types.as_deref() != Some(&["code".to_string()][..]) {
            return Err(invalid_metadata(
                "response_types must be [\"code\"] with authorization_code",
            ));
        }
        let uris = redirect_uris
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid_redirect("redirect_uris is required with authorization_code"))?;
        for u in &uris {
            let ok = https_url(u).is_some_and(|x| x.fragment().is_none()) && !u.contains('#');
            if !ok {
                return Err(invalid_redirect(
                    "every redirect URI must be an absolute https URI without a fragment",
                ));
            }
        }
        if logo_uri.is_none() {
            return Err(invalid_metadata(
                "logo_uri (an https URL) is required with authorization_code",
            ));
        }
        (vec!["code".to_string()], uris)
    } else {
        if response_types.is_some_and(|r| !r.is_empty()) {
            return Err(invalid_metadata(
                "response_types must be omitted without authorization_code",
            ));
        }
        if redirect_uris.is_some_and(|r| !r.is_empty()) {
            return Err(invalid_redirect(
                "redirect_uris must be omitted without authorization_code",
            ));
        }
        (Vec::new(), Vec::new())
    };
    let method = match str_claim(claims, "token_endpoint_auth_method") {
        Some("private_key_jwt") => "private_key_jwt",
        Some("client_secret_basic") if policy.carin_mode && auth_code => "client_secret_basic",
        Some("client_secret_basic") => {
            return Err(invalid_metadata(
                "token_endpoint_auth_method client_secret_basic is not accepted here; use private_key_jwt",
            ))
        }
        Some(_) => {
            return Err(invalid_metadata(
                "token_endpoint_auth_method must be private_key_jwt",
            ))
        }
        None => {
            return Err(invalid_metadata(
                "token_endpoint_auth_method is required (private_key_jwt)",
            ))
        }
    };
    let requested = str_claim(claims, "scope")
        .ok_or_else(|| invalid_metadata("scope is required (space-separated scopes)"))?;
    let scope = intersect_scopes(requested, &policy.scopes_offered);
    if scope.is_empty() {
        return Err(invalid_metadata(
            "none of the requested scopes is offered by this server (see scopes_supported)",
        ));
    }
    let contacts = string_array(claims, "contacts")?.unwrap_or_default();
    if contacts.iter().any(|c| url::Url::parse(c).is_err()) {
        return Err(invalid_metadata("contacts must be an array of URIs"));
    }
    if !contacts.iter().any(|c| c.starts_with("mailto:")) {
        return Err(invalid_metadata(
            "contacts must include at least one mailto: URI",
        ));
    }
    Ok(ClientMetadata {
        client_name,
        grant_types,
        response_types,
        redirect_uris,
        token_endpoint_auth_method: method.to_string(),
        scope,
        requested_scope: requested.to_string(),
        contacts,
        logo_uri,
        certification_uris: Vec::new(),
    })
}

/// The requested scopes that are offered, in request order, without duplicates.
pub fn intersect_scopes(requested: &str, offered: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in requested.split_whitespace() {
        if offered.iter().any(|o| o == s) && !out.contains(&s) {
            out.push(s);
        }
    }
    out.join(" ")
}

/// One certification (UR-22): x5c chain to the community, signature, `iss` a SAN of its signer, `sub` the
/// client URI, `aud` (if present) the registration endpoint, `exp` ≤ `iat` + 3 years, `jti`,
/// `certification_uris`, and `grant_types` (if present) per UR-11. Returns its certification URIs.
fn check_certification(
    token: &str,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    client_uri: &str,
    now: i64,
) -> Result<Vec<String>, RegistrationError> {
    let (claims, leaf) = verify_x5c_jwt(token, "certification", community, cache, now)?;
    let bad = |d: &str| invalid_statement(format!("certification: {d}"));
    let iss = str_claim(&claims, "iss").ok_or_else(|| bad("iss is required"))?;
    if !leaf.san_uris.iter().any(|u| u == iss) {
        return Err(bad(
            "iss must equal a URI SAN of the certification's signing certificate",
        ));
    }
    if str_claim(&claims, "sub") != Some(client_uri) {
        return Err(bad("sub must equal the software statement's iss"));
    }
    if claims.contains_key("aud")
        && !jose::audience_contains(&claims, &policy.registration_endpoint)
    {
        return Err(bad(
            "aud, when present, must name this registration endpoint",
        ));
    }
    if int_claim(&claims, "iat").is_none() {
        return Err(bad("iat is required"));
    }
    jose::check_time_claims(
        &claims,
        &time_rules(now, policy.leeway, MAX_CERTIFICATION_LIFETIME),
    )
    .map_err(|e| bad(&jose_text(&e)))?;
    if jti_claim(&claims).is_none() {
        return Err(bad("jti is required"));
    }
    if let Some(g) = string_array(&claims, "grant_types")
        .map_err(|_| bad("grant_types must be an array of strings"))?
    {
        check_grant_types(&g).map_err(|e| bad(&e.description))?;
    }
    match string_array(&claims, "certification_uris") {
        Ok(Some(uris)) if !uris.is_empty() => Ok(uris),
        _ => Err(bad("certification_uris must be a non-empty array of URIs")),
    }
}

/// Validate the certifications that came with the request; invalid ones are ignored (UR-22), but every
/// required certification URI must be carried by a valid one.
fn check_certifications(
    input: &StatementInput,
    community: &Community,
    cache: &ChainCache,
    policy: &RegistrationPolicy,
    client_uri: &str,
    now: i64,
) -> Result<Vec<String>, RegistrationError> {
    let certifications = input.certifications.as_deref().unwrap_or_default();
    if certifications.len() > MAX_CERTIFICATIONS {
        return Err(invalid_metadata(format!(
            "at most {MAX_CERTIFICATIONS} certifications are accepted"
        )));
    }
    let mut covered: Vec<String> = Vec::new();
    let mut first_problem: Option<String> = None;
    for token in certifications {
        match check_certification(token, community, cache, policy, client_uri, now) {
            Ok(uris) => {
                for u in uris {
                    if !covered.contains(&u) {
                        covered.push(u);
                    }
                }
            }
            Err(e) => {
                first_problem.get_or_insert(e.description);
            }
        }
    }
    for required in &policy.required_certifications {
        if !covered.contains(required) {
            let mut d = format!("the certification {required} is required by this server");
            if let Some(p) = &first_problem {
                d.push_str(&format!(
                    "; a certification supplied was not accepted ({p})"
                ));
            }
            return Err(err(RegistrationErrorCode::UnapprovedSoftwareStatement, d));
        }
    }
    Ok(covered)
}

/// What the token endpoint knows when it checks a UDAP client assertion (udap.md UA-5..UA-7).
#[derive(Debug, Clone, Copy)]
pub struct AssertionContext<'a> {
    /// The registered client's `client_id` (= the assertion's `iss` and `sub`).
    pub client_id: &'a str,
    /// The client URI it registered with (its certificate's SAN must still be this one).
    pub registered_iss: &'a str,
    /// The token endpoint URL (= `aud`).
    pub token_endpoint: &'a str,
    /// Clock-skew leeway in seconds (clamped to 0..=60).
    pub leeway: i64,
}

/// Why a client assertion was refused (always `invalid_client` on the wire, UA-8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("{0}")]
    Jose(String),
    #[error("the JWS header must carry x5c")]
    MissingX5c,
    #[error("the x5c certificate is not accepted: {0}")]
    Certificate(TrustError),
    #[error("the certificate's URI SAN is not the one the client registered with")]
    WrongSan,
    #[error("iss and sub must both equal the client_id")]
    WrongIssuer,
    #[error("aud must be the token endpoint")]
    WrongAudience,
    #[error("iat is required")]
    MissingIat,
    #[error("jti is required (1 to 256 characters)")]
    MissingJti,
    #[error("extensions must be a JSON object")]
    BadExtensions,
}

/// A UDAP client assertion that passed every rule. Only [`validate_client_assertion`] constructs it.
/// The `jti` replay check (per client, until `exp`) is the caller's.
#[derive(Debug, Clone)]
pub struct ValidatedAssertion {
    pub client_id: String,
    pub jti: String,
    pub exp: i64,
    /// The `extensions` claim (e.g. `hl7-b2b`, see [`check_hl7_b2b`]), if any.
    pub extensions: Option<Map<String, Value>>,
    pub leaf: Arc<ValidatedLeaf>,
    _sealed: Sealed,
}

/// Former name of [`ValidatedAssertion`].
pub type ValidatedUdapAssertion = ValidatedAssertion;

/// UDAP JWT client authentication (udap.md UA-5..UA-7): alg allow-list, `x5c` chained to the client's
/// community with a leaf URI SAN equal to the registered `iss` (the registered certificate or a renewal
/// with the same SAN, decision 6), signature by the leaf, `iss` = `sub` = `client_id`, `aud` = the token
/// endpoint, `exp` in the future and ≤ 300 s after `iat`, a `jti`, and `extensions` an object if present.
pub fn validate_client_assertion(
    assertion: &str,
    community: &Community,
    cache: &ChainCache,
    ctx: &AssertionContext<'_>,
    now: i64,
) -> Result<ValidatedAssertion, AssertionError> {
    let bad = |e: JoseError| AssertionError::Jose(jose_text(&e));
    let parsed = jose::parse_compact(assertion, &ALGS).map_err(bad)?;
    if parsed.header().x5c.is_none() {
        return Err(AssertionError::MissingX5c);
    }
    let x5c = parsed.x5c_der().map_err(bad)?;
    let leaf = cache
        .validate_cached(community, &x5c, now)
        .map_err(AssertionError::Certificate)?;
    if !leaf.san_uris.iter().any(|u| u == ctx.registered_iss) {
        return Err(AssertionError::WrongSan);
    }
    let verified = parsed.verify_with_spki(&leaf.spki_der).map_err(bad)?;
    let claims = verified.claims();
    if str_claim(claims, "iss") != Some(ctx.client_id)
        || str_claim(claims, "sub") != Some(ctx.client_id)
    {
        return Err(AssertionError::WrongIssuer);
    }
    if !jose::audience_contains(claims, ctx.token_endpoint) {
        return Err(AssertionError::WrongAudience);
    }
    if int_claim(claims, "iat").is_none() {
        return Err(AssertionError::MissingIat);
    }
    jose::check_time_claims(claims, &time_rules(now, ctx.leeway, MAX_STATEMENT_LIFETIME))
        .map_err(bad)?;
    let exp =
        int_claim(claims, "exp").ok_or(AssertionError::Jose("exp must be a number".into()))?;
    let jti = jti_claim(claims).ok_or(AssertionError::MissingJti)?;
    let extensions = match claims.get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(AssertionError::BadExtensions),
    };
    Ok(ValidatedAssertion {
        client_id: ctx.client_id.to_string(),
        jti,
        exp,
        extensions,
        leaf,
        _sealed: Sealed,
    })
}

/// [`validate_client_assertion`] with positional arguments and a text error (kept for existing callers).
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
) -> Result<ValidatedAssertion, String> {
    validate_client_assertion(
        assertion,
        community,
        cache,
        &AssertionContext {
            client_id,
            registered_iss,
            token_endpoint,
            leeway,
        },
        now,
    )
    .map_err(|e| e.to_string())
}

/// The `hl7-b2b` authorization extension (UDAP B2B §5.2.1.1): `version` "1", `organization_id` (a URI),
/// `purpose_of_use` (a non-empty array of codes; bare codes such as `SYSDEV` are accepted). Returns a
/// description of what is wrong.
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
        Some(p) if !p.is_empty() && p.iter().all(|v| v.as_str().is_some_and(|s| !s.is_empty())) => {
            Ok(())
        }
        _ => Err("hl7-b2b purpose_of_use must be a non-empty array of codes".into()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use crate::trust::testpki::{x5c, Issued, Kind, TestCommunity};
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
        leaf: Issued,
        key: SigningKey,
    }

    fn fixture(kind: Kind) -> Fixture {
        let t = TestCommunity::new(kind);
        let leaf = t.leaf(Some(APP), kind, -1, 10);
        let alg = if kind == Kind::P256 {
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
        for kind in [Kind::P256, Kind::Rsa2048] {
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
        let f = fixture(Kind::P256);
        let mut c = claims();
        c["grant_types"] = json!([]);
        assert_eq!(run(&f, &c).unwrap().kind, StatementKind::Cancel);
    }

    #[test]
    fn statement_rules() {
        use RegistrationErrorCode::*;
        let f = fixture(Kind::P256);
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
        let f = fixture(Kind::P256);
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
        let f = fixture(Kind::P256);
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
        let stranger = fixture(Kind::P256);
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
        let f = fixture(Kind::P256);
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
        let f = fixture(Kind::Rsa2048);
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

    fn input(statement: String) -> StatementInput {
        StatementInput {
            software_statement: statement,
            certifications: None,
            udap: Some("1".into()),
        }
    }

    fn with_header(f: &Fixture, key: &SigningKey, c: &Value) -> String {
        let mut h = Map::new();
        let chain: Vec<String> = x5c(&f.leaf)
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect();
        h.insert("x5c".into(), json!(chain));
        key.sign_compact(&h, c).unwrap()
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn algorithms_and_envelope() {
        let f = fixture(Kind::Rsa2048);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(8);
        let chain: Vec<String> = x5c(&f.leaf)
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect();
        // alg none, HS256 (HMAC keyed with public material), unknown alg, crit.
        for header in [
            json!({"alg": "none", "x5c": chain}),
            json!({"alg": "HS256", "x5c": chain}),
            json!({"alg": "PS256", "x5c": chain}),
            json!({"alg": "RS256", "x5c": chain, "crit": ["exp"]}),
        ] {
            let token = format!("{}.{}.AAAA", b64(&header), b64(&claims()));
            let r = validate_software_statement(&input(token), &c, &cache, &policy(), now());
            assert_eq!(
                code(r),
                RegistrationErrorCode::InvalidSoftwareStatement,
                "{header}"
            );
        }
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "x5c": chain})),
            b64(&claims())
        );
        assert!(validate_software_statement(&input(token), &c, &cache, &policy(), now()).is_err());
        // ES256 header over the RSA leaf's chain.
        let ec = SigningKey::generate(Alg::ES256).unwrap();
        let r = validate_software_statement(
            &input(with_header(&f, &ec, &claims())),
            &c,
            &cache,
            &policy(),
            now(),
        );
        let e = r.unwrap_err();
        assert_eq!(e.code, RegistrationErrorCode::InvalidSoftwareStatement);
        assert!(e.description.contains("key type"), "{}", e.description);
        // RS256 signed by another RSA key (the Inferno negative test).
        let other = SigningKey::generate(Alg::RS256).unwrap();
        let e = validate_software_statement(
            &input(with_header(&f, &other, &claims())),
            &c,
            &cache,
            &policy(),
            now(),
        )
        .unwrap_err();
        assert_eq!(e.code, RegistrationErrorCode::InvalidSoftwareStatement);
        // udap must be "1".
        for udap in [None, Some("2".to_string()), Some("".to_string())] {
            let i = StatementInput {
                software_statement: sign(&f, &claims()),
                certifications: None,
                udap,
            };
            assert_eq!(
                code(validate_software_statement(
                    &i,
                    &c,
                    &cache,
                    &policy(),
                    now()
                )),
                RegistrationErrorCode::InvalidSoftwareStatement
            );
        }
        // x5c entries that are not certificates: a malformed statement.
        let token = format!(
            "{}.{}.AAAA",
            b64(&json!({"alg": "RS256", "x5c": ["AAAA"]})),
            b64(&claims())
        );
        assert_eq!(
            code(validate_software_statement(
                &input(token),
                &c,
                &cache,
                &policy(),
                now()
            )),
            RegistrationErrorCode::InvalidSoftwareStatement
        );
        // Descriptions leak no key material or internals.
        let e = validate_software_statement(
            &input(with_header(&f, &other, &claims())),
            &c,
            &cache,
            &policy(),
            now(),
        )
        .unwrap_err();
        assert!(!e.description.contains("BEGIN") && !e.description.contains("/src/"));
    }

    #[test]
    fn p384_es384_and_inferno_shaped_statements() {
        let t = TestCommunity::new(Kind::P384);
        let leaf = t.leaf(Some(APP), Kind::P384, -1, 10);
        let key = SigningKey::from_pem(Some(Alg::ES384), &leaf.key_pem).unwrap();
        let f = Fixture { t, leaf, key };
        assert!(run(&f, &claims()).is_ok());
        // What the UDAP test kit sends for client_credentials (test-kits.md §A.2): logo_uri included.
        let f = fixture(Kind::Rsa2048);
        let t0 = now();
        let cc = json!({"iss": APP, "sub": APP, "aud": REG, "iat": t0, "exp": t0 + 300,
            "jti": "a".repeat(64), "client_name": "Inferno UDAP Client Credentials Test Client",
            "contacts": ["mailto:inferno@groups.mitre.org"],
            "logo_uri": "https://inferno-framework.github.io/assets/inferno_logo.png",
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
            "scope": "system/Patient.read"});
        let v = run(&f, &cc).unwrap();
        let StatementKind::Register(m) = v.kind else {
            panic!("not a registration")
        };
        assert_eq!(m.grant_types, vec!["client_credentials"]);
        assert!(m.redirect_uris.is_empty() && m.response_types.is_empty());
        assert_eq!(v.jti, "a".repeat(64));
        assert_eq!(v.exp, t0 + 300);
        assert_eq!(v.leaf.san_uris, vec![APP]);
        // The kit's first negative test: iss = sub = "invalid_iss".
        let mut bad = cc.clone();
        bad["iss"] = json!("invalid_iss");
        bad["sub"] = json!("invalid_iss");
        assert_eq!(
            code(run(&f, &bad)),
            RegistrationErrorCode::InvalidSoftwareStatement
        );
    }

    #[test]
    fn more_statement_rules() {
        use RegistrationErrorCode::*;
        let f = fixture(Kind::P256);
        let t0 = now();
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change, RegistrationErrorCode)> = vec![
            (
                "iat in the future",
                Box::new(move |c| {
                    c["iat"] = json!(t0 + 200);
                    c["exp"] = json!(t0 + 400);
                }),
                InvalidSoftwareStatement,
            ),
            (
                "exp not a number",
                Box::new(|c| {
                    c["exp"] = json!("soon");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "no exp",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "empty jti",
                Box::new(|c| {
                    c["jti"] = json!("");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "long jti",
                Box::new(|c| {
                    c["jti"] = json!("j".repeat(257));
                }),
                InvalidSoftwareStatement,
            ),
            (
                "aud array without us",
                Box::new(|c| {
                    c["aud"] = json!(["https://x/"]);
                }),
                InvalidSoftwareStatement,
            ),
            (
                "SAN differs in case",
                Box::new(|c| {
                    c["iss"] = json!("https://APP.example/");
                    c["sub"] = json!("https://APP.example/");
                }),
                InvalidSoftwareStatement,
            ),
            (
                "duplicate grant",
                Box::new(|c| {
                    c["grant_types"] = json!(["authorization_code", "authorization_code"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "grant_types not array",
                Box::new(|c| {
                    c["grant_types"] = json!("authorization_code");
                }),
                InvalidClientMetadata,
            ),
            (
                "refresh with cc",
                Box::new(|c| {
                    c["grant_types"] = json!(["client_credentials", "refresh_token"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "client_name missing",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("client_name");
                }),
                InvalidClientMetadata,
            ),
            (
                "client_name number",
                Box::new(|c| {
                    c["client_name"] = json!(7);
                }),
                InvalidClientMetadata,
            ),
            (
                "response_types missing",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("response_types");
                }),
                InvalidClientMetadata,
            ),
            (
                "response_types two",
                Box::new(|c| {
                    c["response_types"] = json!(["code", "token"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "empty redirect list",
                Box::new(|c| {
                    c["redirect_uris"] = json!([]);
                }),
                InvalidRedirectUri,
            ),
            (
                "one bad redirect",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["https://app.example/cb", "app://cb"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "empty fragment",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["https://app.example/cb#"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "not a uri",
                Box::new(|c| {
                    c["redirect_uris"] = json!(["https//app"]);
                }),
                InvalidRedirectUri,
            ),
            (
                "logo relative",
                Box::new(|c| {
                    c["logo_uri"] = json!("/logo.png");
                }),
                InvalidClientMetadata,
            ),
            (
                "no auth method",
                Box::new(|c| {
                    c.as_object_mut()
                        .unwrap()
                        .remove("token_endpoint_auth_method");
                }),
                InvalidClientMetadata,
            ),
            (
                "secret post",
                Box::new(|c| {
                    c["token_endpoint_auth_method"] = json!("client_secret_post");
                }),
                InvalidClientMetadata,
            ),
            (
                "unknown scopes only",
                Box::new(|c| {
                    c["scope"] = json!("patient/Unknown.read");
                }),
                InvalidClientMetadata,
            ),
            (
                "empty scope",
                Box::new(|c| {
                    c["scope"] = json!("");
                }),
                InvalidClientMetadata,
            ),
            (
                "contacts not uris",
                Box::new(|c| {
                    c["contacts"] = json!(["dev at app"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "contacts no mailto",
                Box::new(|c| {
                    c["contacts"] = json!(["https://app.example/contact"]);
                }),
                InvalidClientMetadata,
            ),
            (
                "contacts not array",
                Box::new(|c| {
                    c["contacts"] = json!("mailto:a@b");
                }),
                InvalidClientMetadata,
            ),
        ];
        for (name, change, expected) in cases {
            let mut c = claims();
            change(&mut c);
            assert_eq!(code(run(&f, &c)), expected, "{name}");
        }
        // Client credentials: http logo, response_types, client_secret_basic (even in CARIN mode).
        let cc = || {
            let mut c = claims();
            c["grant_types"] = json!(["client_credentials"]);
            for k in ["response_types", "redirect_uris"] {
                c.as_object_mut().unwrap().remove(k);
            }
            c["scope"] = json!("system/Patient.read");
            c
        };
        assert!(run(&f, &cc()).is_ok());
        let mut c = cc();
        c["logo_uri"] = json!("http://app.example/l.png");
        assert_eq!(code(run(&f, &c)), InvalidClientMetadata);
        let mut c = cc();
        c["response_types"] = json!(["code"]);
        assert_eq!(code(run(&f, &c)), InvalidClientMetadata);
        let mut c = cc();
        c["token_endpoint_auth_method"] = json!("client_secret_basic");
        assert_eq!(code(run(&f, &c)), InvalidClientMetadata);
        // Lifetime exactly 300 s and aud as an array containing the endpoint are fine.
        let mut c = claims();
        c["aud"] = json!([REG, "https://other/"]);
        assert!(run(&f, &c).is_ok());
        // Cancellation needs no metadata at all.
        let t1 = now();
        let cancel = json!({"iss": APP, "sub": APP, "aud": REG, "iat": t1, "exp": t1 + 60, "jti": "x", "grant_types": []});
        assert_eq!(run(&f, &cancel).unwrap().kind, StatementKind::Cancel);
    }

    #[test]
    fn scope_intersection_keeps_order_and_drops_unknown() {
        let offered: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(intersect_scopes("c x a c  b", &offered), "c a b");
        assert_eq!(intersect_scopes("x y", &offered), "");
        let f = fixture(Kind::P256);
        let mut c = claims();
        c["scope"] = json!("patient/Patient.read unknown openid patient/Patient.read");
        let StatementKind::Register(m) = run(&f, &c).unwrap().kind else {
            panic!("not a registration")
        };
        assert_eq!(m.scope, "patient/Patient.read openid");
        assert_eq!(
            m.requested_scope,
            "patient/Patient.read unknown openid patient/Patient.read"
        );
    }

    #[test]
    fn trust_failures_are_unapproved_and_cached_successes_reused() {
        let f = fixture(Kind::P256);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(8);
        let a =
            validate_software_statement(&input(sign(&f, &claims())), &c, &cache, &policy(), now())
                .unwrap();
        let b =
            validate_software_statement(&input(sign(&f, &claims())), &c, &cache, &policy(), now())
                .unwrap();
        assert!(Arc::ptr_eq(&a.leaf, &b.leaf));
        assert_eq!(cache.len(), 1);
        // Expired certificate: unapproved (decision 5), and not cached.
        let expired = f.t.leaf(Some(APP), Kind::P256, -10, -1);
        let key = SigningKey::from_pem(Some(Alg::ES256), &expired.key_pem).unwrap();
        let old = Fixture {
            t: TestCommunity::new(Kind::P256),
            leaf: expired,
            key,
        };
        let e = validate_software_statement(
            &input(sign(&old, &claims())),
            &c,
            &cache,
            &policy(),
            now(),
        )
        .unwrap_err();
        assert_eq!(e.code, RegistrationErrorCode::UnapprovedSoftwareStatement);
        assert!(e.description.contains("expired"), "{}", e.description);
        assert_eq!(cache.len(), 1);
        // Revoked certificate.
        let crl = f.t.inter.crl(&[&f.leaf.serial], 1, -1, 1);
        let revoking = f.t.community(&[crl]);
        let e = validate_software_statement(
            &input(sign(&f, &claims())),
            &revoking,
            &cache,
            &policy(),
            now(),
        )
        .unwrap_err();
        assert_eq!(e.code, RegistrationErrorCode::UnapprovedSoftwareStatement);
        assert!(e.description.contains("revoked"), "{}", e.description);
    }

    #[test]
    fn certifications() {
        use RegistrationErrorCode::*;
        let f = fixture(Kind::P256);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(8);
        let mut p = policy();
        p.required_certifications = vec!["https://cert.example/c1".into()];
        let t0 = now();
        let good = json!({"iss": APP, "sub": APP, "iat": t0, "exp": t0 + 86_400, "jti": "c1",
            "certification_name": "Test", "certification_uris": ["https://cert.example/c1"], "grant_types": ["authorization_code"]});
        let reg = |certs: Vec<String>, p: &RegistrationPolicy| {
            validate_software_statement(
                &StatementInput {
                    software_statement: sign(&f, &claims()),
                    certifications: Some(certs),
                    udap: Some("1".into()),
                },
                &c,
                &cache,
                p,
                now(),
            )
        };
        let v = reg(vec![sign(&f, &good)], &p).unwrap();
        let StatementKind::Register(m) = v.kind else {
            panic!()
        };
        assert_eq!(m.certification_uris, vec!["https://cert.example/c1"]);
        type Change = Box<dyn Fn(&mut Value)>;
        let broken: Vec<(&str, Change)> = vec![
            (
                "iss not a SAN of the signer",
                Box::new(|x| {
                    x["iss"] = json!("https://certifier.example/");
                }),
            ),
            (
                "sub not the client",
                Box::new(|x| {
                    x["sub"] = json!("https://someone/");
                }),
            ),
            (
                "aud elsewhere",
                Box::new(|x| {
                    x["aud"] = json!("https://other-as/register");
                }),
            ),
            (
                "too long",
                Box::new(move |x| {
                    x["exp"] = json!(t0 + 4 * 366 * 86_400);
                }),
            ),
            (
                "no iat",
                Box::new(|x| {
                    x.as_object_mut().unwrap().remove("iat");
                }),
            ),
            (
                "no jti",
                Box::new(|x| {
                    x.as_object_mut().unwrap().remove("jti");
                }),
            ),
            (
                "no uris",
                Box::new(|x| {
                    x.as_object_mut().unwrap().remove("certification_uris");
                }),
            ),
            (
                "bad grants",
                Box::new(|x| {
                    x["grant_types"] = json!(["authorization_code", "client_credentials"]);
                }),
            ),
            (
                "expired",
                Box::new(move |x| {
                    x["iat"] = json!(t0 - 1000);
                    x["exp"] = json!(t0 - 500);
                }),
            ),
        ];
        for (name, change) in broken {
            let mut x = good.clone();
            change(&mut x);
            let e = reg(vec![sign(&f, &x)], &p).unwrap_err();
            assert_eq!(e.code, UnapprovedSoftwareStatement, "{name}");
            assert!(
                e.description.contains("not accepted"),
                "{name}: {}",
                e.description
            );
            // Not required: an invalid certification is ignored.
            assert!(reg(vec![sign(&f, &x)], &policy()).is_ok(), "{name}");
        }
        // Garbage and certifications from another community are ignored too.
        assert!(reg(vec!["junk".into()], &policy()).is_ok());
        let stranger = fixture(Kind::P256);
        assert_eq!(
            reg(vec![sign(&stranger, &good)], &p).unwrap_err().code,
            UnapprovedSoftwareStatement
        );
        // A valid one next to an invalid one suffices.
        assert!(reg(vec!["junk".into(), sign(&f, &good)], &p).is_ok());
        assert_eq!(
            reg(vec![sign(&f, &good); MAX_CERTIFICATIONS + 1], &p)
                .unwrap_err()
                .code,
            InvalidClientMetadata
        );
    }

    #[test]
    fn client_assertion_rules() {
        let f = fixture(Kind::Rsa2048);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(8);
        let ep = "https://as.example/oauth/token";
        let ctx = AssertionContext {
            client_id: "cid",
            registered_iss: APP,
            token_endpoint: ep,
            leeway: 60,
        };
        let t0 = now();
        let good =
            json!({"iss": "cid", "sub": "cid", "aud": ep, "iat": t0, "exp": t0 + 300, "jti": "a1"});
        let v = validate_client_assertion(&sign(&f, &good), &c, &cache, &ctx, t0).unwrap();
        assert_eq!(
            (v.client_id.as_str(), v.jti.as_str(), v.exp),
            ("cid", "a1", t0 + 300)
        );
        assert!(v.extensions.is_none());
        assert_eq!(v.leaf.san_uris, vec![APP]);
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change, AssertionError)> = vec![
            (
                "iss",
                Box::new(|x| {
                    x["iss"] = json!(APP);
                }),
                AssertionError::WrongIssuer,
            ),
            (
                "sub",
                Box::new(|x| {
                    x["sub"] = json!("other");
                }),
                AssertionError::WrongIssuer,
            ),
            (
                "aud",
                Box::new(|x| {
                    x["aud"] = json!("https://as.example/oauth/register");
                }),
                AssertionError::WrongAudience,
            ),
            (
                "no iat",
                Box::new(|x| {
                    x.as_object_mut().unwrap().remove("iat");
                }),
                AssertionError::MissingIat,
            ),
            (
                "no jti",
                Box::new(|x| {
                    x.as_object_mut().unwrap().remove("jti");
                }),
                AssertionError::MissingJti,
            ),
            (
                "ext",
                Box::new(|x| {
                    x["extensions"] = json!(["hl7-b2b"]);
                }),
                AssertionError::BadExtensions,
            ),
        ];
        for (name, change, expected) in cases {
            let mut x = good.clone();
            change(&mut x);
            assert_eq!(
                validate_client_assertion(&sign(&f, &x), &c, &cache, &ctx, t0).unwrap_err(),
                expected,
                "{name}"
            );
        }
        let mut long = good.clone();
        long["exp"] = json!(t0 + 301);
        assert!(matches!(
            validate_client_assertion(&sign(&f, &long), &c, &cache, &ctx, t0),
            Err(AssertionError::Jose(_))
        ));
        assert!(matches!(
            validate_client_assertion(&sign(&f, &good), &c, &cache, &ctx, t0 + 400),
            Err(AssertionError::Jose(_))
        ));
        // Another registered iss, another community, another signer, no x5c.
        let other_iss = AssertionContext {
            registered_iss: "https://someone-else/",
            ..ctx
        };
        assert_eq!(
            validate_client_assertion(&sign(&f, &good), &c, &cache, &other_iss, t0).unwrap_err(),
            AssertionError::WrongSan
        );
        let stranger = fixture(Kind::Rsa2048);
        assert!(matches!(
            validate_client_assertion(&sign(&stranger, &good), &c, &cache, &ctx, t0),
            Err(AssertionError::Certificate(_))
        ));
        let forger = SigningKey::generate(Alg::RS256).unwrap();
        assert!(matches!(
            validate_client_assertion(&with_header(&f, &forger, &good), &c, &cache, &ctx, t0),
            Err(AssertionError::Jose(_))
        ));
        let bare = f.key.sign_compact(&Map::new(), &good).unwrap();
        assert_eq!(
            validate_client_assertion(&bare, &c, &cache, &ctx, t0).unwrap_err(),
            AssertionError::MissingX5c
        );
        // A renewed certificate with the same SAN in the same community is accepted (decision 6).
        let renewed = f.t.leaf(Some(APP), Kind::P256, -1, 20);
        let key = SigningKey::from_pem(Some(Alg::ES256), &renewed.key_pem).unwrap();
        let r = Fixture {
            t: TestCommunity::new(Kind::P256),
            leaf: renewed,
            key,
        };
        assert!(validate_client_assertion(&sign(&r, &good), &c, &cache, &ctx, t0).is_ok());
        // B2B extension returned to the caller.
        let mut b2b = good.clone();
        b2b["extensions"] = json!({"hl7-b2b": {"version": "1", "organization_id": "https://inferno-framework.github.io/", "purpose_of_use": ["SYSDEV"]}});
        let v = validate_client_assertion(&sign(&f, &b2b), &c, &cache, &ctx, t0).unwrap();
        check_hl7_b2b(&v.extensions.unwrap()["hl7-b2b"]).unwrap();
        assert!(check_hl7_b2b(
            &json!({"version": "1", "organization_id": "https://o/", "purpose_of_use": [""]})
        )
        .is_err());
        assert!(check_hl7_b2b(&json!("x")).is_err());
    }

    #[test]
    fn random_assertions_never_panic() {
        let f = fixture(Kind::P256);
        let c = f.t.community(&[]);
        let cache = ChainCache::new(4);
        let ctx = AssertionContext {
            client_id: "cid",
            registered_iss: APP,
            token_endpoint: "https://t/",
            leeway: 60,
        };
        let mut x: u64 = 0xdead_beef_cafe_f00d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let chain: Vec<String> = x5c(&f.leaf)
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect();
        for i in 0..2000 {
            let header = match i % 4 {
                0 => json!({"alg": "ES256", "x5c": chain}),
                1 => {
                    json!({"alg": "ES256", "x5c": [chain[0].chars().take((next() % 400) as usize).collect::<String>()]})
                }
                2 => json!({"alg": ["ES256"], "x5c": 5}),
                _ => json!({"alg": "RS256", "x5c": [], "kid": null}),
            };
            let claims = json!({"iss": next() % 3, "exp": (next() % 10) as i64 - 5, "jti": null});
            let sig: Vec<u8> = (0..(next() % 80)).map(|_| next() as u8).collect();
            let token = format!(
                "{}.{}.{}",
                b64(&header),
                b64(&claims),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
            );
            assert!(validate_client_assertion(&token, &c, &cache, &ctx, now()).is_err());
            let i2 = input(token);
            assert!(validate_software_statement(&i2, &c, &cache, &policy(), now()).is_err());
        }
    }
}
