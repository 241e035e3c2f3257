//! Compact JWS with algorithm allow-lists: parsing, verification with a certificate's key or a JWK, signing,
//! and the time-claim rules shared by every JWT Bluegate checks.
//!
//! Only RS256, RS384, ES256 and ES384 exist here. `none`, HMAC and everything else fail at parse time, and a
//! key is only used with the algorithm family it belongs to, so "HMAC with a public key" and "ES256 header
//! over an RSA key" cannot happen.
//!
//! The flow is typed: [`parse_compact`] gives an [`UnverifiedJws`] whose claims are only reachable through
//! the deliberately named [`UnverifiedJws::claims_unverified`]; a [`VerifiedJws`] exists only after one of
//! the `verify_*` functions checked the signature.
//!
//! Parsing is strict on purpose: exactly three unpadded base64url segments, header and payload JSON objects
//! without duplicate member names (so no two parsers can disagree on which `alg` or `aud` counts), no
//! `crit`, and `x5c` decoded as standard base64 DER before anything else looks at it.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Longest compact JWS accepted, checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Most certificates accepted in `x5c`.
pub const MAX_X5C: usize = 10;
/// Largest single `x5c` certificate (DER bytes).
pub const MAX_X5C_ENTRY: usize = 16 * 1024;
/// Largest clock-skew leeway [`check_time_claims`] applies, whatever it is asked for.
pub const MAX_LEEWAY: i64 = 60;
/// Smallest RSA modulus accepted for verification or signing.
pub const MIN_RSA_BITS: usize = 2048;

/// The JWS algorithms Bluegate knows. Anything else (`none`, `HS*`, `PS*`, `EdDSA`, ...) does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    RS384,
    ES256,
    ES384,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::RS256, Alg::RS384, Alg::ES256, Alg::ES384];

    /// The JOSE name, e.g. `"ES256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    /// RSASSA-PKCS1-v1_5 (RS256, RS384).
    pub fn is_rsa(self) -> bool {
        matches!(self, Alg::RS256 | Alg::RS384)
    }

    /// ECDSA (ES256 on P-256, ES384 on P-384).
    pub fn is_ec(self) -> bool {
        !self.is_rsa()
    }
}

impl FromStr for Alg {
    type Err = JoseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Alg::RS256),
            "RS384" => Ok(Alg::RS384),
            "ES256" => Ok(Alg::ES256),
            "ES384" => Ok(Alg::ES384),
            other => Err(JoseError::UnsupportedAlg(printable(other))),
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attacker-chosen text made safe to put in an error message or a log line: printable ASCII, at most 32
/// characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// What went wrong with a JWS. No variant carries key material; only [`JoseError::UnsupportedAlg`]
/// carries (sanitised, truncated) input text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    #[error("unsupported or forbidden algorithm `{0}`")]
    UnsupportedAlg(String),
    #[error("the `crit` header names extensions this server does not understand")]
    CritUnsupported,
    #[error("the key does not match the algorithm")]
    KeyMismatch,
    #[error("unusable key: {0}")]
    BadKey(&'static str),
    #[error("signature verification failed")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's lifetime (exp - iat) exceeds {0} seconds")]
    LifetimeTooLong(i64),
    #[error("missing or invalid claim `{0}`")]
    MissingClaim(&'static str),
    #[error("signing failed")]
    Signing,
}

/// The protected header, as far as Bluegate reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    pub alg: Alg,
    pub typ: Option<String>,
    pub kid: Option<String>,
    /// Standard base64 DER certificates, leaf first, as sent. [`UnverifiedJws::x5c_der`] has them decoded.
    pub x5c: Option<Vec<String>>,
    pub jku: Option<String>,
}

/// A JWS that parsed and passed the allow-list, not yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    header: JwsHeader,
    x5c_der: Option<Vec<Vec<u8>>>,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

/// A JWS whose signature verified. Only the `verify_*` functions of [`UnverifiedJws`] construct it.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    header: JwsHeader,
    claims: Map<String, Value>,
}

impl VerifiedJws {
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
    pub fn into_claims(self) -> Map<String, Value> {
        self.claims
    }
}

fn b64url_segment(s: &str) -> Result<Vec<u8>, JoseError> {
    if s.is_empty() {
        return Err(JoseError::Malformed("empty segment"));
    }
    if s.contains('=') {
        return Err(JoseError::Malformed(
            "base64url segments must not be padded",
        ));
    }
    // The engine also refuses non-alphabet bytes (including `+`, `/`, whitespace) and non-canonical
    // trailing bits.
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JoseError::Malformed("a segment is not base64url"))
}

/// A JSON object whose member names are unique. `serde_json` would silently keep the last of two `alg`s
/// or `aud`s; another JOSE library might keep the first. Refusing duplicates removes that ambiguity.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut m = Map::new();
                while let Some(k) = access.next_key::<String>()? {
                    if m.contains_key(&k) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    let v: Value = access.next_value()?;
                    m.insert(k, v);
                }
                Ok(UniqueObject(m))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JoseError> {
    serde_json::from_slice::<UniqueObject>(bytes)
        .map(|o| o.0)
        .map_err(|_| JoseError::Malformed(what))
}

fn opt_string(h: &Map<String, Value>, key: &'static str) -> Result<Option<String>, JoseError> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JoseError::Malformed(
            "a header parameter has the wrong type",
        )),
    }
}

/// `x5c`: 1 to [`MAX_X5C`] strings, each standard base64 (RFC 7515 §4.1.6; not base64url) of a DER
/// certificate of at most [`MAX_X5C_ENTRY`] bytes. Returns the text and the decoded DER.
type X5c = (Vec<String>, Vec<Vec<u8>>);

fn parse_x5c(v: &Value) -> Result<X5c, JoseError> {
    let Value::Array(items) = v else {
        return Err(JoseError::Malformed("x5c must be an array"));
    };
    if items.is_empty() || items.len() > MAX_X5C {
        return Err(JoseError::Malformed("x5c must hold 1 to 10 certificates"));
    }
    let mut text = Vec::with_capacity(items.len());
    let mut der = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(c) = item else {
            return Err(JoseError::Malformed("x5c entries must be strings"));
        };
        // Bound the text before decoding it: 16 KiB of DER is at most 21,848 base64 characters.
        if c.len() > MAX_X5C_ENTRY.div_ceil(3) * 4 {
            return Err(JoseError::Malformed("an x5c certificate is too large"));
        }
        let bytes = STANDARD.decode(c).map_err(|_| {
            JoseError::Malformed("x5c entries must be standard base64 (not base64url)")
        })?;
        if bytes.len() > MAX_X5C_ENTRY {
            return Err(JoseError::Malformed("an x5c certificate is too large"));
        }
        // A DER certificate is a SEQUENCE; anything else is not worth handing to the X.509 parser.
        if bytes.first() != Some(&0x30) {
            return Err(JoseError::Malformed(
                "an x5c entry is not a DER certificate",
            ));
        }
        text.push(c.clone());
        der.push(bytes);
    }
    Ok((text, der))
}

/// Parse a compact JWS: at most [`MAX_TOKEN_LEN`] bytes, exactly three non-empty unpadded base64url
/// segments, JSON-object header and payload (no duplicate member names), `alg` in `allowed`, no `crit`,
/// a well-formed `x5c` if present. Nothing is verified yet.
pub fn parse_compact(token: &str, allowed: &[Alg]) -> Result<UnverifiedJws, JoseError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JoseError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed(
            "a compact JWS has exactly three segments",
        ));
    };
    let header_map = json_object(&b64url_segment(h)?, "the header is not a JSON object")?;
    let alg_text = match header_map.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(JoseError::Malformed("the header's alg is not a string")),
        None => return Err(JoseError::Malformed("the header has no alg")),
    };
    let alg: Alg = alg_text.parse()?;
    if !allowed.contains(&alg) {
        return Err(JoseError::UnsupportedAlg(printable(alg_text)));
    }
    if header_map.contains_key("crit") {
        return Err(JoseError::CritUnsupported);
    }
    let (x5c, x5c_der) = match header_map.get("x5c") {
        None => (None, None),
        Some(v) => {
            let (text, der) = parse_x5c(v)?;
            (Some(text), Some(der))
        }
    };
    let header = JwsHeader {
        alg,
        typ: opt_string(&header_map, "typ")?,
        kid: opt_string(&header_map, "kid")?,
        x5c,
        jku: opt_string(&header_map, "jku")?,
    };
    let claims = json_object(&b64url_segment(p)?, "the payload is not a JSON object")?;
    let signature = b64url_segment(s)?;
    Ok(UnverifiedJws {
        header,
        x5c_der,
        claims,
        signing_input: format!("{h}.{p}"),
        signature,
    })
}

/// The kind of public key, for matching against `alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

fn key_fits(kind: KeyKind, alg: Alg) -> bool {
    matches!(
        (kind, alg),
        (KeyKind::Rsa, Alg::RS256 | Alg::RS384)
            | (KeyKind::P256, Alg::ES256)
            | (KeyKind::P384, Alg::ES384)
    )
}

/// aws-lc-rs verification algorithms. ECDSA uses the JOSE fixed-length `r || s` form (RFC 7518 §3.4), not
/// ASN.1 DER; RSA accepts 2048 to 8192-bit moduli.
fn verify_alg(alg: Alg) -> &'static sig::RsaParameters {
    match alg {
        Alg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn ec_verify_alg(alg: Alg) -> &'static sig::EcdsaVerificationAlgorithm {
    match alg {
        Alg::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        _ => &sig::ECDSA_P256_SHA256_FIXED,
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Bit length of a big-endian unsigned integer.
fn bit_len(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
        None => 0,
    }
}

/// Key kind and raw public key bytes (PKCS#1 RSAPublicKey for RSA, uncompressed point for EC) of a
/// SubjectPublicKeyInfo.
fn spki_key(spki_der: &[u8]) -> Result<(KeyKind, Vec<u8>), JoseError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| JoseError::BadKey("not an SPKI"))?;
    if !rest.is_empty() {
        return Err(JoseError::BadKey("trailing data after the SPKI"));
    }
    let raw = spki.subject_public_key.data.to_vec();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            if bit_len(rsa.modulus) < MIN_RSA_BITS {
                return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
            }
            Ok((KeyKind::Rsa, raw))
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Ok((KeyKind::P256, raw)),
                Some(OID_P384) => Ok((KeyKind::P384, raw)),
                _ => Err(JoseError::BadKey("unsupported elliptic curve")),
            }
        }
        _ => Err(JoseError::BadKey("unsupported key type")),
    }
}

impl UnverifiedJws {
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The claims before verification: for routing decisions only (which client, which community). Never
    /// base an authorization decision on them.
    pub fn claims_unverified(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// `x5c` as DER certificates, leaf first (already decoded and size-checked by [`parse_compact`]).
    pub fn x5c_der(&self) -> Result<Vec<Vec<u8>>, JoseError> {
        self.x5c_der
            .clone()
            .ok_or(JoseError::Malformed("the header has no x5c"))
    }

    /// Verify with the key of a full SubjectPublicKeyInfo DER (e.g. the `x5c` leaf's). The key type must
    /// match `alg`: RSA (≥ 2048 bits) for RS256/RS384, P-256 for ES256, P-384 for ES384.
    pub fn verify_with_spki(self, spki_der: &[u8]) -> Result<VerifiedJws, JoseError> {
        let (kind, raw) = spki_key(spki_der)?;
        self.verify_raw(kind, &raw)
    }

    fn verify_raw(self, kind: KeyKind, raw: &[u8]) -> Result<VerifiedJws, JoseError> {
        if !key_fits(kind, self.header.alg) {
            return Err(JoseError::KeyMismatch);
        }
        let ok = if self.header.alg.is_rsa() {
            sig::UnparsedPublicKey::new(verify_alg(self.header.alg), raw)
                .verify(self.signing_input.as_bytes(), &self.signature)
        } else {
            sig::UnparsedPublicKey::new(ec_verify_alg(self.header.alg), raw)
                .verify(self.signing_input.as_bytes(), &self.signature)
        };
        ok.map_err(|_| JoseError::BadSignature)?;
        Ok(self.into_verified())
    }

    fn into_verified(self) -> VerifiedJws {
        VerifiedJws {
            header: self.header,
            claims: self.claims,
        }
    }

    /// Verify with a public JWK (RSA `n`/`e`; EC `crv`/`x`/`y`). `kty`/`crv` must fit `alg`; the JWK's
    /// own `alg`, if present, must equal the header's; its `use`, if present, must be `sig`.
    pub fn verify_with_jwk(self, jwk: &Value) -> Result<VerifiedJws, JoseError> {
        let Value::Object(jwk) = jwk else {
            return Err(JoseError::BadKey("a JWK is a JSON object"));
        };
        match jwk.get("alg") {
            None => {}
            Some(Value::String(a)) if a == self.header.alg.as_str() => {}
            Some(_) => return Err(JoseError::KeyMismatch),
        }
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err(JoseError::BadKey("the JWK is not a signature key")),
        }
        let field = |k: &'static str| -> Result<Vec<u8>, JoseError> {
            let v = jwk
                .get(k)
                .and_then(Value::as_str)
                .ok_or(JoseError::BadKey("JWK member missing"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| JoseError::BadKey("JWK member is not base64url"))
        };
        match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                if !self.header.alg.is_rsa() {
                    return Err(JoseError::KeyMismatch);
                }
                let n = field("n")?;
                let e = field("e")?;
                if bit_len(&n) < MIN_RSA_BITS {
                    return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
                }
                let components = sig::RsaPublicKeyComponents { n: &n, e: &e };
                components
                    .verify(
                        verify_alg(self.header.alg),
                        self.signing_input.as_bytes(),
                        &self.signature,
                    )
                    .map_err(|_| JoseError::BadSignature)?;
                Ok(self.into_verified())
            }
            Some("EC") => {
                let (kind, len) = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (KeyKind::P256, 32),
                    Some("P-384") => (KeyKind::P384, 48),
                    _ => return Err(JoseError::BadKey("unsupported curve")),
                };
                if !key_fits(kind, self.header.alg) {
                    return Err(JoseError::KeyMismatch);
                }
                let x = field("x")?;
                let y = field("y")?;
                if x.len() != len || y.len() != len {
                    return Err(JoseError::BadKey("EC coordinates have the wrong length"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                // aws-lc-rs checks that the point is on the curve.
                self.verify_raw(kind, &point)
            }
            _ => Err(JoseError::BadKey("unsupported kty")),
        }
    }
}

/// Time rules for a JWT: `exp` required; a leeway (clamped to 0..=60 s) on `exp`, `iat` and `nbf`; an
/// optional maximum lifetime `exp - iat` that the leeway never widens (it then also requires `iat`).
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    /// Unix seconds.
    pub now: i64,
    pub leeway: i64,
    pub max_lifetime: Option<i64>,
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds, possibly fractional (floored). Absurdly
/// large values saturate rather than wrap. Any other JSON type is an invalid claim.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JoseError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if n.is_u64() {
                Ok(Some(i64::MAX))
            } else {
                match n.as_f64() {
                    // `as` saturates at the i64 bounds.
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                    _ => Err(JoseError::MissingClaim(name)),
                }
            }
        }
        Some(_) => Err(JoseError::MissingClaim(name)),
    }
}

/// Check `exp` (required, `exp > now - leeway`), `iat` (if present, `≤ now + leeway`), `nbf` (if present,
/// `≤ now + leeway`) and, with `max_lifetime`, `iat` present and `exp - iat ≤ max_lifetime`.
pub fn check_time_claims(claims: &Map<String, Value>, rules: &TimeRules) -> Result<(), JoseError> {
    let leeway = rules.leeway.clamp(0, MAX_LEEWAY);
    let exp = numeric_date(claims, "exp")?.ok_or(JoseError::MissingClaim("exp"))?;
    if exp <= rules.now.saturating_sub(leeway) {
        return Err(JoseError::Expired);
    }
    let iat = numeric_date(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > rules.now.saturating_add(leeway) {
            return Err(JoseError::IssuedInFuture);
        }
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > rules.now.saturating_add(leeway) {
            return Err(JoseError::NotYetValid);
        }
    }
    if let Some(max) = rules.max_lifetime {
        let iat = iat.ok_or(JoseError::MissingClaim("iat"))?;
        if exp.saturating_sub(iat) > max {
            return Err(JoseError::LifetimeTooLong(max));
        }
    }
    Ok(())
}

/// `aud` (a string or an array of strings) contains `expected`, compared exactly (no normalisation).
pub fn audience_contains(claims: &Map<String, Value>, expected: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == expected,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(expected)),
        _ => false,
    }
}

enum Private {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(sig::EcdsaKeyPair),
}

/// A private signing key with its algorithm and `kid`. Its `Debug` shows only `alg` and `kid`.
pub struct SigningKey {
    alg: Alg,
    kid: String,
    key: Private,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn ec_signing_alg(alg: Alg) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    match alg {
        Alg::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Alg::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => None,
    }
}

fn rsa_strong_enough(k: &aws_lc_rs::rsa::KeyPair) -> Result<(), JoseError> {
    if k.public_modulus_len() * 8 < MIN_RSA_BITS {
        return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
    }
    Ok(())
}

impl SigningKey {
    /// A fresh key: RSA-2048 for RS256/RS384, P-256 for ES256, P-384 for ES384. The `kid` is the RFC 7638
    /// JWK thumbprint.
    pub fn generate(alg: Alg) -> Result<Self, JoseError> {
        let key = if alg.is_rsa() {
            Private::Rsa(
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| JoseError::Signing)?,
            )
        } else {
            let ec = ec_signing_alg(alg).ok_or(JoseError::KeyMismatch)?;
            Private::Ec(sig::EcdsaKeyPair::generate(ec).map_err(|_| JoseError::Signing)?)
        };
        Ok(Self::with_thumbprint_kid(alg, key))
    }

    fn with_thumbprint_kid(alg: Alg, key: Private) -> Self {
        let mut k = SigningKey {
            alg,
            kid: String::new(),
            key,
        };
        k.kid = jwk_thumbprint(&k.public_jwk());
        k
    }

    /// From a PKCS#8 DER private key, keeping a known `kid` (an empty `kid` becomes the thumbprint). The key
    /// must fit `alg`.
    pub fn from_pkcs8_der(alg: Alg, kid: &str, der: &[u8]) -> Result<Self, JoseError> {
        let key = Self::load_pkcs8(alg, der)?;
        if kid.is_empty() {
            return Ok(Self::with_thumbprint_kid(alg, key));
        }
        Ok(SigningKey {
            alg,
            kid: kid.to_string(),
            key,
        })
    }

    fn load_pkcs8(alg: Alg, der: &[u8]) -> Result<Private, JoseError> {
        if alg.is_rsa() {
            let k = aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
                .map_err(|_| JoseError::BadKey("not an RSA PKCS#8 key"))?;
            rsa_strong_enough(&k)?;
            Ok(Private::Rsa(k))
        } else {
            let ec = ec_signing_alg(alg).ok_or(JoseError::KeyMismatch)?;
            Ok(Private::Ec(
                sig::EcdsaKeyPair::from_pkcs8(ec, der)
                    .map_err(|_| JoseError::BadKey("not a PKCS#8 key on the algorithm's curve"))?,
            ))
        }
    }

    fn load_der(alg: Alg, der: &rustls_pki_types::PrivateKeyDer<'_>) -> Result<Private, JoseError> {
        use rustls_pki_types::PrivateKeyDer;
        match der {
            PrivateKeyDer::Pkcs8(k) => Self::load_pkcs8(alg, k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) if alg.is_rsa() => {
                let k = aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(|_| JoseError::BadKey("not an RSA key"))?;
                rsa_strong_enough(&k)?;
                Ok(Private::Rsa(k))
            }
            PrivateKeyDer::Sec1(k) if alg.is_ec() => {
                let ec = ec_signing_alg(alg).ok_or(JoseError::KeyMismatch)?;
                sig::EcdsaKeyPair::from_private_key_der(ec, k.secret_sec1_der())
                    .map(Private::Ec)
                    .map_err(|_| JoseError::BadKey("not an EC key on this curve"))
            }
            _ => Err(JoseError::KeyMismatch),
        }
    }

    /// From the first PEM private key in `pem` (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`). Without
    /// `alg`, RSA keys sign RS256 and EC keys ES256 or ES384 by curve. The `kid` is the JWK thumbprint.
    pub fn from_pem(alg: Option<Alg>, pem: &str) -> Result<Self, JoseError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| JoseError::BadKey("no PEM private key found"))?;
        let candidates: &[Alg] = match &alg {
            Some(a) => std::slice::from_ref(a),
            None => &[Alg::RS256, Alg::ES256, Alg::ES384],
        };
        let mut last = JoseError::KeyMismatch;
        for a in candidates {
            match Self::load_der(*a, &der) {
                Ok(key) => return Ok(Self::with_thumbprint_kid(*a, key)),
                // A weak RSA key is refused outright rather than reported as "does not fit".
                Err(e @ JoseError::BadKey("RSA keys must have at least 2048 bits")) => {
                    return Err(e)
                }
                Err(e) => last = e,
            }
        }
        Err(match (alg, last) {
            (Some(_), e) => e,
            (None, _) => {
                JoseError::BadKey("the private key is neither RSA nor EC on P-256 or P-384")
            }
        })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 v1 DER, for the store. Treat the result as a secret.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, JoseError> {
        match &self.key {
            Private::Rsa(k) => {
                let der: Pkcs8V1Der = k.as_der().map_err(|_| JoseError::Signing)?;
                Ok(der.as_ref().to_vec())
            }
            Private::Ec(k) => Ok(k
                .to_pkcs8v1()
                .map_err(|_| JoseError::Signing)?
                .as_ref()
                .to_vec()),
        }
    }

    /// The public key as a SubjectPublicKeyInfo DER (empty only if aws-lc-rs cannot encode its own key).
    pub fn public_spki_der(&self) -> Vec<u8> {
        let der: Result<PublicKeyX509Der, _> = match &self.key {
            Private::Rsa(k) => k.public_key().as_der(),
            Private::Ec(k) => k.public_key().as_der(),
        };
        der.map(|d| d.as_ref().to_vec()).unwrap_or_default()
    }

    /// The public JWK: kty, n/e or crv/x/y, kid, alg, use = "sig". Never private members.
    pub fn public_jwk(&self) -> Value {
        let mut m = Map::new();
        match &self.key {
            Private::Rsa(k) => {
                let pk = k.public_key();
                m.insert("kty".into(), "RSA".into());
                m.insert(
                    "n".into(),
                    URL_SAFE_NO_PAD
                        .encode(pk.modulus().big_endian_without_leading_zero())
                        .into(),
                );
                m.insert(
                    "e".into(),
                    URL_SAFE_NO_PAD
                        .encode(pk.exponent().big_endian_without_leading_zero())
                        .into(),
                );
            }
            Private::Ec(k) => {
                // Uncompressed point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                let len = point.len().saturating_sub(1) / 2;
                let (x, y) = match point.get(1..1 + 2 * len) {
                    Some(xy) => xy.split_at(len),
                    None => (&[][..], &[][..]),
                };
                m.insert("kty".into(), "EC".into());
                m.insert(
                    "crv".into(),
                    if self.alg == Alg::ES384 {
                        "P-384"
                    } else {
                        "P-256"
                    }
                    .into(),
                );
                m.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
                m.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
            }
        }
        if !self.kid.is_empty() {
            m.insert("kid".into(), Value::String(self.kid.clone()));
        }
        m.insert("alg".into(), Value::String(self.alg.as_str().into()));
        m.insert("use".into(), Value::String("sig".into()));
        Value::Object(m)
    }

    /// Sign `claims` as a compact JWS. `alg` and `kid` are always this key's (whatever `header_extra`
    /// says); `header_extra` adds e.g. `x5c` or `typ`. `crit` is refused: no verifier here accepts it.
    pub fn sign_compact(
        &self,
        header_extra: &Map<String, Value>,
        claims: &Value,
    ) -> Result<String, JoseError> {
        if header_extra.contains_key("crit") {
            return Err(JoseError::CritUnsupported);
        }
        let mut header = header_extra.clone();
        header.insert("alg".into(), Value::String(self.alg.as_str().into()));
        if self.kid.is_empty() {
            header.remove("kid");
        } else {
            header.insert("kid".into(), Value::String(self.kid.clone()));
        }
        let h = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let signature = self.sign_bytes(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, JoseError> {
        let rng = SystemRandom::new();
        match &self.key {
            Private::Rsa(k) => {
                let enc: &'static dyn sig::RsaEncoding = match self.alg {
                    Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(enc, &rng, msg, &mut out)
                    .map_err(|_| JoseError::Signing)?;
                Ok(out)
            }
            // The *_FIXED_SIGNING algorithms produce the JOSE r || s form.
            Private::Ec(k) => Ok(k
                .sign(&rng, msg)
                .map_err(|_| JoseError::Signing)?
                .as_ref()
                .to_vec()),
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members of an RSA or EC key. Other key
/// types hash their whole JSON text (they never appear as Bluegate keys).
pub fn jwk_thumbprint(jwk: &Value) -> String {
    // A JSON string literal, escaped as serde_json does (RFC 7638 §3.3 uses the JSON string form).
    let lit = |k: &str| {
        let v = jwk.get(k).and_then(Value::as_str).unwrap_or_default();
        Value::String(v.to_string()).to_string()
    };
    // The required members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, lit("e"), lit("n")),
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            lit("crv"),
            lit("x"),
            lit("y")
        ),
        _ => jwk.to_string(),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://app.example/", "sub": "https://app.example/", "aud": "https://as.example/register",
               "iat": now, "exp": now + 300, "jti": "j1"})
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    /// A token with an arbitrary header text and a dummy signature (for parse-level tests).
    fn raw_token(header: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(&claims(1000).to_string()))
    }

    fn parse_err(token: &str) -> JoseError {
        parse_compact(token, &Alg::ALL).unwrap_err()
    }

    // --- DER helpers for hand-built keys and signatures -------------------------------------------
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n < 0x100 {
            out.extend_from_slice(&[0x81, n as u8]);
        } else {
            out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn der_uint(be: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| *b & 0x80 != 0) {
            v.insert(0, 0);
        }
        tlv(0x02, &v)
    }

    /// SubjectPublicKeyInfo for an RSA key with modulus `n` and exponent 65537.
    fn rsa_spki(n: &[u8]) -> Vec<u8> {
        let alg = tlv(
            0x30,
            &[
                tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let rsa_key = tlv(0x30, &[der_uint(n), der_uint(&[1, 0, 1])].concat());
        let bits = tlv(0x03, &[&[0u8][..], &rsa_key].concat());
        tlv(0x30, &[alg, bits].concat())
    }

    #[test]
    fn round_trips_for_every_algorithm_via_spki_and_jwk() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let token = key.sign_compact(&Map::new(), &claims(1000)).unwrap();
            let parsed = parse_compact(&token, &[alg]).unwrap();
            assert_eq!(parsed.header().alg, alg);
            assert_eq!(parsed.header().kid.as_deref(), Some(key.kid()));
            assert_eq!(parsed.claims_unverified()["jti"], "j1");
            let v = parsed
                .clone()
                .verify_with_spki(&key.public_spki_der())
                .unwrap();
            assert_eq!(v.claims()["jti"], "j1");
            assert_eq!(v.header().alg, alg);
            let v = parsed.verify_with_jwk(&key.public_jwk()).unwrap();
            assert_eq!(v.into_claims()["iss"], "https://app.example/");
            // PKCS#8 export and re-import keeps the key and the kid.
            let again =
                SigningKey::from_pkcs8_der(alg, key.kid(), &key.to_pkcs8_der().unwrap()).unwrap();
            assert_eq!(again.public_spki_der(), key.public_spki_der());
            assert_eq!(again.kid(), key.kid());
            // Without a kid, the thumbprint is the kid.
            let anon = SigningKey::from_pkcs8_der(alg, "", &key.to_pkcs8_der().unwrap()).unwrap();
            assert_eq!(anon.kid(), jwk_thumbprint(&key.public_jwk()));
        }
    }

    #[test]
    fn generated_keys_have_the_documented_sizes_and_jwks() {
        let rsa = SigningKey::generate(Alg::RS384).unwrap();
        let jwk = rsa.public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS384");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
        for (alg, crv, len) in [(Alg::ES256, "P-256", 32), (Alg::ES384, "P-384", 48)] {
            let jwk = SigningKey::generate(alg).unwrap().public_jwk();
            assert_eq!(jwk["crv"], crv);
            for c in ["x", "y"] {
                let bytes = URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
                assert_eq!(bytes.len(), len);
            }
            assert!(jwk.get("d").is_none());
        }
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none());
    }

    #[test]
    fn alg_strings_round_trip_and_serde_uses_jose_names() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>().unwrap(), alg);
            assert_eq!(serde_json::to_value(alg).unwrap(), json!(alg.as_str()));
            assert_eq!(
                serde_json::from_value::<Alg>(json!(alg.as_str())).unwrap(),
                alg
            );
        }
        assert!(serde_json::from_value::<Alg>(json!("none")).is_err());
        assert!(serde_json::from_value::<Alg>(json!("HS256")).is_err());
    }

    #[test]
    fn forbidden_and_unknown_algorithms_are_refused() {
        for alg in [
            "none", "None", "HS256", "HS384", "HS512", "PS256", "PS384", "EdDSA", "ES512", "RS512",
            "rs256", " RS256", "",
        ] {
            let t = raw_token(&json!({"alg": alg}).to_string());
            assert!(
                matches!(parse_err(&t), JoseError::UnsupportedAlg(_)),
                "{alg}"
            );
        }
        // `none` with an empty signature segment: refused (either reason is fine, it must not parse).
        let t = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&claims(1).to_string())
        );
        assert!(parse_compact(&t, &Alg::ALL).is_err());
        // alg missing or not a string.
        assert!(matches!(
            parse_err(&raw_token(r#"{"typ":"JWT"}"#)),
            JoseError::Malformed(_)
        ));
        assert!(matches!(
            parse_err(&raw_token(r#"{"alg":["RS256"]}"#)),
            JoseError::Malformed(_)
        ));
        // Allowed in general but not for this use.
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let t = key.sign_compact(&Map::new(), &claims(1)).unwrap();
        assert!(matches!(
            parse_compact(&t, &[Alg::RS256]),
            Err(JoseError::UnsupportedAlg(_))
        ));
        assert!(parse_compact(&t, &[]).is_err());
        // The error text is bounded and printable.
        let long = raw_token(&json!({"alg": format!("X\u{7}{}", "A".repeat(500))}).to_string());
        let JoseError::UnsupportedAlg(text) = parse_err(&long) else {
            panic!("wrong error")
        };
        assert!(text.len() <= 32 && text.chars().all(|c| c.is_ascii_graphic()));
    }

    #[test]
    fn structure_is_checked() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let good = key.sign_compact(&Map::new(), &claims(1)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let malformed = |t: &str| matches!(parse_err(t), JoseError::Malformed(_));
        // Two and four segments, and empty segments.
        assert!(malformed(&format!("{}.{}", parts[0], parts[1])));
        assert!(malformed(&format!("{good}.x")));
        assert!(malformed(&format!("{good}.")));
        assert!(malformed(&format!("{}.{}.", parts[0], parts[1])));
        assert!(malformed(&format!(".{}.{}", parts[1], parts[2])));
        assert!(malformed(&format!("{}..{}", parts[0], parts[2])));
        assert!(malformed(""));
        // Padding, standard-alphabet characters and junk.
        assert!(malformed(&format!(
            "{}=.{}.{}",
            parts[0], parts[1], parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}==",
            parts[0], parts[1], parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}+.{}",
            parts[0], parts[1], parts[2]
        )));
        assert!(malformed(&format!(
            "{} .{}.{}",
            parts[0], parts[1], parts[2]
        )));
        assert!(malformed("a.b!.c"));
        // Header and payload must be JSON objects.
        assert!(malformed(&format!(
            "{}.{}.{}",
            b64("[1]"),
            parts[1],
            parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}",
            b64("\"s\""),
            parts[1],
            parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}",
            b64("{"),
            parts[1],
            parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}",
            parts[0],
            b64("\"s\""),
            parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}",
            parts[0],
            b64("null"),
            parts[2]
        )));
        assert!(malformed(&format!(
            "{}.{}.{}",
            parts[0],
            b64("{} x"),
            parts[2]
        )));
        // Oversize tokens are refused before any decoding.
        assert_eq!(
            parse_err(&"a".repeat(MAX_TOKEN_LEN + 1)),
            JoseError::Malformed("token too long")
        );
        let huge_claims = json!({"exp": 1, "pad": "x".repeat(MAX_TOKEN_LEN)});
        let big = key.sign_compact(&Map::new(), &huge_claims).unwrap();
        assert_eq!(parse_err(&big), JoseError::Malformed("token too long"));
        // The well-formed original still parses.
        assert!(parse_compact(&good, &Alg::ALL).is_ok());
    }

    #[test]
    fn crit_is_refused() {
        let payload = b64(&claims(1).to_string());
        for crit in [json!(["exp"]), json!([]), json!("b64")] {
            let t = format!(
                "{}.{payload}.c2ln",
                b64(&json!({"alg": "ES256", "crit": crit}).to_string())
            );
            assert_eq!(parse_err(&t), JoseError::CritUnsupported);
        }
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let mut h = Map::new();
        h.insert("crit".into(), json!(["exp"]));
        assert_eq!(
            key.sign_compact(&h, &claims(1)).unwrap_err(),
            JoseError::CritUnsupported
        );
    }

    #[test]
    fn duplicate_members_and_wrongly_typed_headers_are_refused() {
        // Two `alg`s: one parser might take the first, another the last.
        let t = raw_token(r#"{"alg":"ES256","alg":"RS256"}"#);
        assert!(matches!(parse_err(&t), JoseError::Malformed(_)));
        let t = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"aud":"https://a/","aud":"https://b/","exp":1}"#)
        );
        assert!(matches!(parse_err(&t), JoseError::Malformed(_)));
        // Nested duplicates are the validators' business (serde_json keeps the last); top level is ours.
        for h in [
            r#"{"alg":"ES256","kid":7}"#,
            r#"{"alg":"ES256","typ":{}}"#,
            r#"{"alg":"ES256","jku":["x"]}"#,
        ] {
            assert!(
                matches!(parse_err(&raw_token(h)), JoseError::Malformed(_)),
                "{h}"
            );
        }
        let ok = parse_compact(
            &raw_token(r#"{"alg":"ES256","kid":"k","typ":"JWT","jku":"https://a/jwks"}"#),
            &Alg::ALL,
        )
        .unwrap();
        assert_eq!(ok.header().kid.as_deref(), Some("k"));
        assert_eq!(ok.header().typ.as_deref(), Some("JWT"));
        assert_eq!(ok.header().jku.as_deref(), Some("https://a/jwks"));
        assert!(ok.header().x5c.is_none());
        assert!(ok.x5c_der().is_err());
    }

    #[test]
    fn x5c_must_be_standard_base64_der_within_bounds() {
        let x5c_header = |x5c: Value| raw_token(&json!({"alg": "ES256", "x5c": x5c}).to_string());
        // 0x30 0xfb 0xff 0xbf: standard base64 "MPv/vw==", base64url "MPv_vw".
        let der = vec![0x30, 0xfb, 0xff, 0xbf];
        let parsed =
            parse_compact(&x5c_header(json!(["MPv/vw==", "MPv/vw=="])), &Alg::ALL).unwrap();
        assert_eq!(parsed.x5c_der().unwrap(), vec![der.clone(), der]);
        assert_eq!(
            parsed.header().x5c.as_deref(),
            Some(&["MPv/vw==".to_string(), "MPv/vw==".to_string()][..])
        );
        let malformed = |x5c: Value| matches!(parse_err(&x5c_header(x5c)), JoseError::Malformed(_));
        assert!(malformed(json!(["MPv_vw"])), "base64url");
        assert!(malformed(json!(["MPv_vw=="])), "base64url, padded");
        assert!(
            malformed(json!(["MPv/vw"])),
            "standard base64 without padding"
        );
        assert!(malformed(json!(["MPv/\nvw=="])), "line breaks");
        assert!(malformed(json!(["+/+/AA=="])), "not DER");
        assert!(malformed(json!([""])), "empty");
        assert!(malformed(json!("MPv/vw==")), "not an array");
        assert!(malformed(json!([])), "empty array");
        assert!(malformed(json!([48])), "not a string");
        assert!(malformed(json!(vec!["MPv/vw=="; MAX_X5C + 1])), "too many");
        // A certificate of more than 16 KiB.
        let mut big = vec![0x30u8];
        big.resize(MAX_X5C_ENTRY + 1, 0);
        assert!(malformed(json!([STANDARD.encode(&big)])), "too large");
        big.truncate(MAX_X5C_ENTRY);
        assert!(
            parse_compact(&x5c_header(json!([STANDARD.encode(&big)])), &Alg::ALL).is_ok(),
            "at the limit"
        );
    }

    #[test]
    fn key_type_must_match_alg() {
        let rsa = SigningKey::generate(Alg::RS256).unwrap();
        let ec = SigningKey::generate(Alg::ES256).unwrap();
        let p384 = SigningKey::generate(Alg::ES384).unwrap();
        let rs_token = rsa.sign_compact(&Map::new(), &claims(1)).unwrap();
        let es_token = ec.sign_compact(&Map::new(), &claims(1)).unwrap();
        let es384_token = p384.sign_compact(&Map::new(), &claims(1)).unwrap();
        let p = |t: &str| parse_compact(t, &Alg::ALL).unwrap();
        // RS256 header over an EC key, ES256 over an RSA key, ES256 over P-384 and ES384 over P-256.
        let cases = [
            (&rs_token, &ec),
            (&es_token, &rsa),
            (&es_token, &p384),
            (&es384_token, &ec),
        ];
        for (token, key) in cases {
            assert_eq!(
                p(token)
                    .verify_with_spki(&key.public_spki_der())
                    .unwrap_err(),
                JoseError::KeyMismatch
            );
            assert_eq!(
                p(token).verify_with_jwk(&key.public_jwk()).unwrap_err(),
                JoseError::KeyMismatch
            );
        }
        // A forged header: ES256 claimed over an RSA signature, checked with the RSA key.
        let parts: Vec<&str> = rs_token.split('.').collect();
        let forged = format!("{}.{}.{}", b64(r#"{"alg":"ES256"}"#), parts[1], parts[2]);
        assert_eq!(
            p(&forged)
                .verify_with_spki(&rsa.public_spki_der())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
        // The JWK's own alg must equal the header's, even within the RSA family.
        let mut jwk = rsa.public_jwk();
        jwk["alg"] = json!("RS384");
        assert_eq!(
            p(&rs_token).verify_with_jwk(&jwk).unwrap_err(),
            JoseError::KeyMismatch
        );
        jwk["alg"] = json!(7);
        assert_eq!(
            p(&rs_token).verify_with_jwk(&jwk).unwrap_err(),
            JoseError::KeyMismatch
        );
        // Without `alg` in the JWK, kty decides.
        let mut jwk = rsa.public_jwk();
        jwk.as_object_mut().unwrap().remove("alg");
        assert!(p(&rs_token).verify_with_jwk(&jwk).is_ok());
        // An encryption key, a symmetric key, a non-object.
        let mut jwk = rsa.public_jwk();
        jwk["use"] = json!("enc");
        assert!(matches!(
            p(&rs_token).verify_with_jwk(&jwk),
            Err(JoseError::BadKey(_))
        ));
        assert!(matches!(
            p(&rs_token).verify_with_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"})),
            Err(JoseError::BadKey(_))
        ));
        assert!(matches!(
            p(&rs_token).verify_with_jwk(&json!("key")),
            Err(JoseError::BadKey(_))
        ));
        // Junk SPKI.
        assert!(matches!(
            p(&rs_token).verify_with_spki(b"\x30\x03\x02\x01\x00"),
            Err(JoseError::BadKey(_))
        ));
    }

    #[test]
    fn weak_rsa_keys_are_refused() {
        let rsa = SigningKey::generate(Alg::RS256).unwrap();
        let token = rsa.sign_compact(&Map::new(), &claims(1)).unwrap();
        let p = || parse_compact(&token, &Alg::ALL).unwrap();
        // A 1024-bit and a 2047-bit modulus.
        for bytes in [128usize, 256] {
            let mut n = vec![0xffu8; bytes];
            if bytes == 256 {
                n[0] = 0x7f;
            }
            assert_eq!(
                p().verify_with_spki(&rsa_spki(&n)).unwrap_err(),
                JoseError::BadKey("RSA keys must have at least 2048 bits")
            );
            let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
            assert_eq!(
                p().verify_with_jwk(&jwk).unwrap_err(),
                JoseError::BadKey("RSA keys must have at least 2048 bits")
            );
        }
        // The helper builds SPKIs that do work when the key is real.
        let jwk = rsa.public_jwk();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert!(p().verify_with_spki(&rsa_spki(&n)).is_ok());
    }

    #[test]
    fn tampering_and_other_keys_fail() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let other = SigningKey::generate(alg).unwrap();
            let token = key.sign_compact(&Map::new(), &claims(1)).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let p = |t: &str| parse_compact(t, &Alg::ALL).unwrap();
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                b64(&json!({"iss": "evil", "exp": 9}).to_string()),
                parts[2]
            );
            // A changed header (kid) is covered by the signature too.
            let rehead = format!(
                "{}.{}.{}",
                b64(&json!({"alg": alg.as_str(), "kid": "other"}).to_string()),
                parts[1],
                parts[2]
            );
            let mut sig_bytes = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            sig_bytes[5] ^= 1;
            let flipped = format!("{}.{}.{}", parts[0], parts[1], b64u(&sig_bytes));
            let short = format!("{}.{}.{}", parts[0], parts[1], b64u(&sig_bytes[1..]));
            for t in [&tampered, &rehead, &flipped, &short] {
                assert_eq!(
                    p(t).verify_with_spki(&key.public_spki_der()).unwrap_err(),
                    JoseError::BadSignature,
                    "{alg}"
                );
                assert_eq!(
                    p(t).verify_with_jwk(&key.public_jwk()).unwrap_err(),
                    JoseError::BadSignature,
                    "{alg}"
                );
            }
            assert_eq!(
                p(&token)
                    .verify_with_spki(&other.public_spki_der())
                    .unwrap_err(),
                JoseError::BadSignature
            );
            assert_eq!(
                p(&token).verify_with_jwk(&other.public_jwk()).unwrap_err(),
                JoseError::BadSignature
            );
        }
    }

    fn b64u(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn ecdsa_signatures_are_fixed_length_r_s_not_der() {
        for (alg, len) in [(Alg::ES256, 32usize), (Alg::ES384, 48)] {
            let key = SigningKey::generate(alg).unwrap();
            let token = key.sign_compact(&Map::new(), &claims(1)).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let raw = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            assert_eq!(raw.len(), 2 * len);
            let (r, s) = raw.split_at(len);
            let der = tlv(0x30, &[der_uint(r), der_uint(s)].concat());
            let der_token = format!("{}.{}.{}", parts[0], parts[1], b64u(&der));
            assert_eq!(
                parse_compact(&der_token, &Alg::ALL)
                    .unwrap()
                    .verify_with_spki(&key.public_spki_der())
                    .unwrap_err(),
                JoseError::BadSignature
            );
        }
    }

    #[test]
    fn sign_compact_sets_alg_and_kid_itself() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let mut h = Map::new();
        h.insert("alg".into(), json!("none"));
        h.insert("kid".into(), json!("spoofed"));
        h.insert("typ".into(), json!("JWT"));
        h.insert("x5c".into(), json!(["MPv/vw=="]));
        let t = key.sign_compact(&h, &claims(1)).unwrap();
        let parsed = parse_compact(&t, &[Alg::ES256]).unwrap();
        assert_eq!(parsed.header().alg, Alg::ES256);
        assert_eq!(parsed.header().kid.as_deref(), Some(key.kid()));
        assert_eq!(parsed.header().typ.as_deref(), Some("JWT"));
        assert_eq!(parsed.x5c_der().unwrap().len(), 1);
        assert!(parsed.verify_with_spki(&key.public_spki_der()).is_ok());
    }

    #[test]
    fn time_rules() {
        let rules = TimeRules {
            now: 10_000,
            leeway: 60,
            max_lifetime: Some(300),
        };
        let check = |v: Value| check_time_claims(&obj(v), &rules);
        assert!(check(json!({"iat": 10_000, "exp": 10_300})).is_ok());
        // Lifetime: 301 s > 300 s, and the leeway does not widen it.
        assert_eq!(
            check(json!({"iat": 10_000, "exp": 10_301})),
            Err(JoseError::LifetimeTooLong(300))
        );
        assert_eq!(
            check(json!({"iat": 10_000, "exp": 10_360})),
            Err(JoseError::LifetimeTooLong(300))
        );
        // Expired, and expired beyond the leeway.
        assert_eq!(
            check(json!({"iat": 9_000, "exp": 9_900})),
            Err(JoseError::Expired)
        );
        assert_eq!(
            check(json!({"iat": 9_700, "exp": 9_940})),
            Err(JoseError::Expired),
            "exactly at now - leeway"
        );
        assert!(
            check(json!({"iat": 9_700, "exp": 9_941})).is_ok(),
            "within leeway"
        );
        // Issued in the future, beyond the leeway only.
        assert_eq!(
            check(json!({"iat": 10_061, "exp": 10_200})),
            Err(JoseError::IssuedInFuture)
        );
        assert!(check(json!({"iat": 10_060, "exp": 10_200})).is_ok());
        // nbf beyond the leeway.
        assert_eq!(
            check(json!({"iat": 10_000, "exp": 10_100, "nbf": 10_061})),
            Err(JoseError::NotYetValid)
        );
        assert!(check(json!({"iat": 10_000, "exp": 10_100, "nbf": 10_060})).is_ok());
        // Missing or ill-typed claims.
        assert_eq!(
            check(json!({"iat": 10_000})),
            Err(JoseError::MissingClaim("exp"))
        );
        assert_eq!(
            check(json!({"exp": 10_100})),
            Err(JoseError::MissingClaim("iat"))
        );
        for bad in [json!("10100"), json!(null), json!(true), json!([10_100])] {
            assert_eq!(
                check(json!({"iat": 10_000, "exp": bad})),
                Err(JoseError::MissingClaim("exp"))
            );
        }
        assert_eq!(
            check(json!({"iat": "now", "exp": 10_100})),
            Err(JoseError::MissingClaim("iat"))
        );
        // Fractional NumericDates are accepted.
        assert!(check(json!({"iat": 10_000.5, "exp": 10_200.25})).is_ok());
        // Extreme values neither overflow nor slip through.
        assert_eq!(
            check(json!({"iat": i64::MIN, "exp": u64::MAX})),
            Err(JoseError::LifetimeTooLong(300))
        );
        assert_eq!(
            check(json!({"iat": 10_000, "exp": -1e300})),
            Err(JoseError::Expired)
        );
        // Without a lifetime cap, iat is optional.
        let open = TimeRules {
            now: 10_000,
            leeway: 0,
            max_lifetime: None,
        };
        assert!(check_time_claims(&obj(json!({"exp": 20_000})), &open).is_ok());
        assert_eq!(
            check_time_claims(&obj(json!({"exp": 10_000})), &open),
            Err(JoseError::Expired)
        );
        // Leeway never exceeds 60 s even if asked, and a negative leeway counts as 0.
        let loose = TimeRules {
            now: 10_000,
            leeway: 600,
            max_lifetime: None,
        };
        assert_eq!(
            check_time_claims(&obj(json!({"exp": 9_900})), &loose),
            Err(JoseError::Expired)
        );
        let negative = TimeRules {
            now: 10_000,
            leeway: -100,
            max_lifetime: None,
        };
        assert!(check_time_claims(&obj(json!({"exp": 10_001})), &negative).is_ok());
    }

    #[test]
    fn audience_is_exact() {
        let m = |v: Value| obj(v);
        assert!(audience_contains(
            &m(json!({"aud": "https://a/x"})),
            "https://a/x"
        ));
        assert!(audience_contains(
            &m(json!({"aud": ["z", "https://a/x"]})),
            "https://a/x"
        ));
        assert!(!audience_contains(
            &m(json!({"aud": "https://a/x/"})),
            "https://a/x"
        ));
        assert!(!audience_contains(
            &m(json!({"aud": "https://A/x"})),
            "https://a/x"
        ));
        assert!(!audience_contains(
            &m(json!({"aud": [["https://a/x"]]})),
            "https://a/x"
        ));
        assert!(!audience_contains(&m(json!({"aud": null})), "https://a/x"));
        assert!(!audience_contains(&m(json!({})), "https://a/x"));
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn pem_keys_load_and_weak_or_wrong_keys_are_refused() {
        let rsa = SigningKey::generate(Alg::RS256).unwrap();
        let rsa_pem = pem("PRIVATE KEY", &rsa.to_pkcs8_der().unwrap());
        let loaded = SigningKey::from_pem(None, &rsa_pem).unwrap();
        assert_eq!(loaded.alg(), Alg::RS256);
        assert_eq!(loaded.public_spki_der(), rsa.public_spki_der());
        assert_eq!(loaded.kid(), rsa.kid(), "kid is the thumbprint");
        assert_eq!(
            SigningKey::from_pem(Some(Alg::RS384), &rsa_pem)
                .unwrap()
                .alg(),
            Alg::RS384
        );
        assert!(SigningKey::from_pem(Some(Alg::ES256), &rsa_pem).is_err());
        assert!(SigningKey::from_pem(None, "not a pem").is_err());
        assert!(SigningKey::from_pkcs8_der(Alg::ES256, "k", &rsa.to_pkcs8_der().unwrap()).is_err());
        assert!(SigningKey::from_pkcs8_der(Alg::RS256, "k", b"junk").is_err());
        for (alg, other) in [(Alg::ES256, Alg::ES384), (Alg::ES384, Alg::ES256)] {
            let ec = SigningKey::generate(alg).unwrap();
            let ec_pem = pem("PRIVATE KEY", &ec.to_pkcs8_der().unwrap());
            assert_eq!(SigningKey::from_pem(None, &ec_pem).unwrap().alg(), alg);
            assert!(SigningKey::from_pem(Some(Alg::RS256), &ec_pem).is_err());
            assert!(SigningKey::from_pem(Some(other), &ec_pem).is_err());
            assert!(SigningKey::from_pkcs8_der(other, "k", &ec.to_pkcs8_der().unwrap()).is_err());
        }
    }

    /// `RSA PRIVATE KEY` (PKCS#1) and `EC PRIVATE KEY` (SEC1) PEMs, made by OpenSSL when it is installed.
    #[test]
    fn traditional_pem_keys_load() {
        let openssl = std::path::Path::new("/usr/bin/openssl");
        if !openssl.exists() {
            eprintln!("skipped: no /usr/bin/openssl");
            return;
        }
        let dir = std::env::temp_dir().join(format!("bluegate-jose-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for alg in [Alg::RS256, Alg::ES256, Alg::ES384] {
            let key = SigningKey::generate(alg).unwrap();
            let input = dir.join(format!("{alg}.pem"));
            std::fs::write(&input, pem("PRIVATE KEY", &key.to_pkcs8_der().unwrap())).unwrap();
            let out = std::process::Command::new(openssl)
                .args(["pkey", "-traditional", "-in"])
                .arg(&input)
                .output()
                .unwrap();
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            let label = if alg.is_rsa() {
                "RSA PRIVATE KEY"
            } else {
                "EC PRIVATE KEY"
            };
            assert!(text.contains(label), "{text}");
            let loaded = SigningKey::from_pem(None, &text).unwrap();
            assert_eq!(loaded.alg(), alg);
            assert_eq!(loaded.public_spki_der(), key.public_spki_der());
            let t = loaded.sign_compact(&Map::new(), &claims(1)).unwrap();
            assert!(parse_compact(&t, &Alg::ALL)
                .unwrap()
                .verify_with_jwk(&key.public_jwk())
                .is_ok());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_and_errors_show_no_key_material() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains(key.kid()));
        let pkcs8 = STANDARD.encode(key.to_pkcs8_der().unwrap());
        assert!(!dbg.contains(&pkcs8[40..60]));
        assert!(!dbg.contains(key.public_jwk()["x"].as_str().unwrap()));
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(
            jwk_thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // Member values cannot inject members into the canonical form.
        let a = json!({"kty": "EC", "crv": "P-256", "x": "a\",\"y\":\"b", "y": "c"});
        let b = json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b\",\"y\":\"c"});
        assert_ne!(jwk_thumbprint(&a), jwk_thumbprint(&b));
    }
}
