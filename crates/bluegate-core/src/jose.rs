//! Compact JWS with algorithm allow-lists: parsing, verification with a certificate's key or a JWK, signing,
//! and the time-claim rules shared by every JWT Bluegate checks.
//!
//! Only RS256, RS384, ES256 and ES384 exist here. `none`, HMAC and everything else fail at parse time, and a
//! key is only used with the algorithm family it belongs to, so "HMAC with a public key" and "ES256 header
//! over an RSA key" cannot happen.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Longest compact JWS accepted, before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Most certificates accepted in `x5c`.
pub const MAX_X5C: usize = 10;
/// Longest single `x5c` entry (base64 text).
pub const MAX_X5C_ENTRY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    RS384,
    ES256,
    ES384,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::RS256, Alg::RS384, Alg::ES256, Alg::ES384];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, Alg::RS256 | Alg::RS384)
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
            other => Err(JoseError::UnsupportedAlg(truncate(other))),
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

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
    pub x5c: Option<Vec<String>>,
    pub jku: Option<String>,
}

/// A JWS that parsed and passed the allow-list, not yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    header: JwsHeader,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

/// A JWS whose signature verified. Only the `verify_*` functions construct it.
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
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JoseError::Malformed("a segment is not base64url"))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JoseError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JoseError::Malformed(what)),
    }
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

/// Parse a compact JWS: exactly three base64url segments, JSON-object header and payload, `alg` in
/// `allowed`, no `crit`, a well-formed `x5c` if present.
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
        _ => return Err(JoseError::Malformed("the header has no alg")),
    };
    let alg: Alg = alg_text.parse()?;
    if !allowed.contains(&alg) {
        return Err(JoseError::UnsupportedAlg(alg_text.to_string()));
    }
    if header_map.contains_key("crit") {
        return Err(JoseError::CritUnsupported);
    }
    let x5c = match header_map.get("x5c") {
        None => None,
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_X5C {
                return Err(JoseError::Malformed("x5c must hold 1 to 10 certificates"));
            }
            let mut certs = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(c) = item else {
                    return Err(JoseError::Malformed("x5c entries must be strings"));
                };
                if c.len() > MAX_X5C_ENTRY {
                    return Err(JoseError::Malformed("an x5c entry is too long"));
                }
                certs.push(c.clone());
            }
            Some(certs)
        }
        Some(_) => return Err(JoseError::Malformed("x5c must be an array")),
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

fn verify_alg(alg: Alg) -> &'static dyn sig::VerificationAlgorithm {
    match alg {
        Alg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Alg::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Alg::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Key kind and raw public key bytes (PKCS#1 for RSA, uncompressed point for EC) of a SubjectPublicKeyInfo.
fn spki_key(spki_der: &[u8]) -> Result<(KeyKind, Vec<u8>), JoseError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| JoseError::BadKey("not an SPKI"))?;
    if !rest.is_empty() {
        return Err(JoseError::BadKey("trailing data after the SPKI"));
    }
    let raw = spki.subject_public_key.data.to_vec();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            if rsa.key_size() < 2048 {
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

    /// The claims before verification: for routing decisions only (which client, which community).
    pub fn claims_unverified(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// `x5c` as DER certificates, leaf first. `x5c` is standard base64 (RFC 7515 §4.1.6), not base64url.
    pub fn x5c_der(&self) -> Result<Vec<Vec<u8>>, JoseError> {
        let Some(x5c) = &self.header.x5c else {
            return Err(JoseError::Malformed("the header has no x5c"));
        };
        x5c.iter()
            .map(|c| {
                STANDARD
                    .decode(c)
                    .map_err(|_| JoseError::Malformed("x5c entries must be standard base64 DER"))
            })
            .collect()
    }

    /// Verify with the key of a SubjectPublicKeyInfo (e.g. the `x5c` leaf's).
    pub fn verify_with_spki(self, spki_der: &[u8]) -> Result<VerifiedJws, JoseError> {
        let (kind, raw) = spki_key(spki_der)?;
        self.verify_raw(kind, &raw)
    }

    fn verify_raw(self, kind: KeyKind, raw: &[u8]) -> Result<VerifiedJws, JoseError> {
        if !key_fits(kind, self.header.alg) {
            return Err(JoseError::KeyMismatch);
        }
        sig::UnparsedPublicKey::new(verify_alg(self.header.alg), raw)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JoseError::BadSignature)?;
        Ok(VerifiedJws {
            header: self.header,
            claims: self.claims,
        })
    }

    /// Verify with a public JWK (RSA `n`/`e`, EC `crv`/`x`/`y`).
    pub fn verify_with_jwk(self, jwk: &Value) -> Result<VerifiedJws, JoseError> {
        if let Some(a) = jwk.get("alg").and_then(Value::as_str) {
            if a != self.header.alg.as_str() {
                return Err(JoseError::KeyMismatch);
            }
        }
        let field = |k: &'static str| -> Result<Vec<u8>, JoseError> {
            let v = jwk
                .get(k)
                .and_then(Value::as_str)
                .ok_or(JoseError::BadKey("JWK member missing"))?;
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .map_err(|_| JoseError::BadKey("JWK member is not base64url"))
        };
        match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                if !self.header.alg.is_rsa() {
                    return Err(JoseError::KeyMismatch);
                }
                let n = field("n")?;
                let e = field("e")?;
                let n_trim: &[u8] = {
                    let first = n.iter().position(|b| *b != 0).unwrap_or(n.len());
                    &n[first..]
                };
                if n_trim.len() * 8 < 2048 {
                    return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
                }
                let components = sig::RsaPublicKeyComponents { n: &n, e: &e };
                let params: &sig::RsaParameters = match self.header.alg {
                    Alg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    _ => &sig::RSA_PKCS1_2048_8192_SHA384,
                };
                components
                    .verify(params, self.signing_input.as_bytes(), &self.signature)
                    .map_err(|_| JoseError::BadSignature)?;
                Ok(VerifiedJws {
                    header: self.header,
                    claims: self.claims,
                })
            }
            Some("EC") => {
                let (kind, len) = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (KeyKind::P256, 32),
                    Some("P-384") => (KeyKind::P384, 48),
                    _ => return Err(JoseError::BadKey("unsupported curve")),
                };
                let x = field("x")?;
                let y = field("y")?;
                if x.len() != len || y.len() != len {
                    return Err(JoseError::BadKey("EC coordinates have the wrong length"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                self.verify_raw(kind, &point)
            }
            _ => Err(JoseError::BadKey("unsupported kty")),
        }
    }
}

/// Time rules for a JWT: `exp` required; leeway (≤ 60 s) on `exp`, `iat`, `nbf`; optional maximum lifetime
/// that leeway never widens.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    pub now: i64,
    pub leeway: i64,
    pub max_lifetime: Option<i64>,
}

fn int_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JoseError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(JoseError::MissingClaim(name)),
    }
}

pub fn check_time_claims(claims: &Map<String, Value>, rules: &TimeRules) -> Result<(), JoseError> {
    let leeway = rules.leeway.clamp(0, 60);
    let exp = int_claim(claims, "exp")?.ok_or(JoseError::MissingClaim("exp"))?;
    if exp <= rules.now - leeway {
        return Err(JoseError::Expired);
    }
    let iat = int_claim(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > rules.now + leeway {
            return Err(JoseError::IssuedInFuture);
        }
    }
    if let Some(nbf) = int_claim(claims, "nbf")? {
        if nbf > rules.now + leeway {
            return Err(JoseError::NotYetValid);
        }
    }
    if let Some(max) = rules.max_lifetime {
        let iat = iat.ok_or(JoseError::MissingClaim("iat"))?;
        if exp - iat > max {
            return Err(JoseError::LifetimeTooLong(max));
        }
    }
    Ok(())
}

/// `aud` (a string or an array of strings) contains `expected`, compared exactly.
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

/// A private signing key with its algorithm and `kid`.
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

impl SigningKey {
    /// A fresh key: RSA-2048 for RS*, P-256 for ES256, P-384 for ES384. The `kid` is the JWK thumbprint.
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
        Self::with_thumbprint_kid(alg, key)
    }

    fn with_thumbprint_kid(alg: Alg, key: Private) -> Result<Self, JoseError> {
        let mut k = SigningKey {
            alg,
            kid: String::new(),
            key,
        };
        k.kid = jwk_thumbprint(&k.public_jwk());
        Ok(k)
    }

    /// From a PKCS#8 DER private key, keeping a known `kid`.
    pub fn from_pkcs8_der(alg: Alg, kid: &str, der: &[u8]) -> Result<Self, JoseError> {
        let key = Self::load_pkcs8(alg, der)?;
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
            if k.public_modulus_len() * 8 < 2048 {
                return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
            }
            Ok(Private::Rsa(k))
        } else {
            let ec = ec_signing_alg(alg).ok_or(JoseError::KeyMismatch)?;
            Ok(Private::Ec(
                sig::EcdsaKeyPair::from_pkcs8(ec, der)
                    .map_err(|_| JoseError::BadKey("not a PKCS#8 key on the algorithm's curve"))?,
            ))
        }
    }

    /// From a PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`). Without `alg`, RSA
    /// keys sign RS256 and EC keys ES256 or ES384 by curve.
    pub fn from_pem(alg: Option<Alg>, pem: &str) -> Result<Self, JoseError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| JoseError::BadKey("no PEM private key found"))?;
        let candidates: Vec<Alg> = match alg {
            Some(a) => vec![a],
            None => vec![Alg::RS256, Alg::ES256, Alg::ES384],
        };
        for a in candidates {
            let key = match &der {
                PrivateKeyDer::Pkcs8(k) => Self::load_pkcs8(a, k.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(k) if a.is_rsa() => {
                    aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der())
                        .map(Private::Rsa)
                        .map_err(|_| JoseError::BadKey("not an RSA key"))
                }
                PrivateKeyDer::Sec1(k) if !a.is_rsa() => match ec_signing_alg(a) {
                    Some(ec) => sig::EcdsaKeyPair::from_private_key_der(ec, k.secret_sec1_der())
                        .map(Private::Ec)
                        .map_err(|_| JoseError::BadKey("not an EC key on this curve")),
                    None => Err(JoseError::KeyMismatch),
                },
                _ => Err(JoseError::KeyMismatch),
            };
            if let Ok(key) = key {
                if let Private::Rsa(k) = &key {
                    if k.public_modulus_len() * 8 < 2048 {
                        return Err(JoseError::BadKey("RSA keys must have at least 2048 bits"));
                    }
                }
                return Self::with_thumbprint_kid(a, key);
            }
        }
        Err(JoseError::BadKey(
            "the private key does not fit the algorithm (RS256/RS384 need RSA, ES256 P-256, ES384 P-384)",
        ))
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

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

    /// The public key as a SubjectPublicKeyInfo DER.
    pub fn public_spki_der(&self) -> Vec<u8> {
        let der: Result<PublicKeyX509Der, _> = match &self.key {
            Private::Rsa(k) => k.public_key().as_der(),
            Private::Ec(k) => k.public_key().as_der(),
        };
        der.map(|d| d.as_ref().to_vec()).unwrap_or_default()
    }

    /// The public JWK: kty, n/e or crv/x/y, kid, alg, use.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.key {
            Private::Rsa(k) => {
                let pk = k.public_key();
                serde_json::json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Private::Ec(k) => {
                let point = k.public_key().as_ref();
                let len = (point.len().saturating_sub(1)) / 2;
                let (x, y) = if point.len() == 1 + 2 * len && len > 0 {
                    (&point[1..1 + len], &point[1 + len..])
                } else {
                    (&point[..0], &point[..0])
                };
                serde_json::json!({
                    "kty": "EC",
                    "crv": if self.alg == Alg::ES384 { "P-384" } else { "P-256" },
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        };
        if let Value::Object(m) = &mut jwk {
            if !self.kid.is_empty() {
                m.insert("kid".into(), Value::String(self.kid.clone()));
            }
            m.insert("alg".into(), Value::String(self.alg.as_str().into()));
            m.insert("use".into(), Value::String("sig".into()));
        }
        jwk
    }

    /// Sign `claims` as a compact JWS. `alg` and `kid` are set here; `header_extra` adds e.g. `x5c`, `typ`
    /// (it cannot override `alg`).
    pub fn sign_compact(
        &self,
        header_extra: &Map<String, Value>,
        claims: &Value,
    ) -> Result<String, JoseError> {
        let mut header = header_extra.clone();
        header.insert("alg".into(), Value::String(self.alg.as_str().into()));
        if !self.kid.is_empty() && !header.contains_key("x5c") {
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
            Private::Ec(k) => Ok(k
                .sign(&rng, msg)
                .map_err(|_| JoseError::Signing)?
                .as_ref()
                .to_vec()),
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url).
pub fn jwk_thumbprint(jwk: &Value) -> String {
    let get = |k: &str| jwk.get(k).and_then(Value::as_str).unwrap_or_default();
    // The required members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = match get("kty") {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, get("e"), get("n")),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            get("crv"),
            get("x"),
            get("y")
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

    #[test]
    fn round_trips_for_every_algorithm_via_spki_and_jwk() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let token = key.sign_compact(&Map::new(), &claims(1000)).unwrap();
            let parsed = parse_compact(&token, &Alg::ALL).unwrap();
            assert_eq!(parsed.header().alg, alg);
            assert_eq!(parsed.header().kid.as_deref(), Some(key.kid()));
            let v = parsed
                .clone()
                .verify_with_spki(&key.public_spki_der())
                .unwrap();
            assert_eq!(v.claims()["jti"], "j1");
            parsed.verify_with_jwk(&key.public_jwk()).unwrap();
            // PKCS#8 export and re-import keeps the key.
            let again =
                SigningKey::from_pkcs8_der(alg, key.kid(), &key.to_pkcs8_der().unwrap()).unwrap();
            assert_eq!(again.public_spki_der(), key.public_spki_der());
        }
    }

    #[test]
    fn forbidden_and_unknown_algorithms_are_refused() {
        let payload = b64(&claims(1000).to_string());
        for alg in ["none", "HS256", "HS512", "PS256", "EdDSA", "rs256", ""] {
            let t = format!("{}.{payload}.c2ln", b64(&json!({"alg": alg}).to_string()));
            assert!(
                matches!(
                    parse_compact(&t, &Alg::ALL),
                    Err(JoseError::UnsupportedAlg(_))
                ),
                "{alg}"
            );
        }
        let t = format!("{}.{payload}.", b64(r#"{"alg":"none"}"#));
        assert!(parse_compact(&t, &Alg::ALL).is_err());
        // Allowed in general but not for this use.
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let t = key.sign_compact(&Map::new(), &claims(1)).unwrap();
        assert!(matches!(
            parse_compact(&t, &[Alg::RS256]),
            Err(JoseError::UnsupportedAlg(_))
        ));
    }

    #[test]
    fn structure_is_checked() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let good = key.sign_compact(&Map::new(), &claims(1)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        assert!(parse_compact(&format!("{}.{}", parts[0], parts[1]), &Alg::ALL).is_err());
        assert!(parse_compact(&format!("{good}.x"), &Alg::ALL).is_err());
        assert!(parse_compact(
            &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            &Alg::ALL
        )
        .is_err());
        assert!(parse_compact(&format!("{}.{}.", parts[0], parts[1]), &Alg::ALL).is_err());
        assert!(parse_compact(
            &format!("{}.{}.{}", b64("[1]"), parts[1], parts[2]),
            &Alg::ALL
        )
        .is_err());
        assert!(parse_compact(
            &format!("{}.{}.{}", parts[0], b64("\"s\""), parts[2]),
            &Alg::ALL
        )
        .is_err());
        assert!(parse_compact("a.b!.c", &Alg::ALL).is_err());
        assert!(parse_compact(&"a".repeat(MAX_TOKEN_LEN + 1), &Alg::ALL).is_err());
        let crit = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256","crit":["exp"]}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(
            parse_compact(&crit, &Alg::ALL).unwrap_err(),
            JoseError::CritUnsupported
        );
    }

    #[test]
    fn key_type_must_match_alg() {
        let rsa = SigningKey::generate(Alg::RS256).unwrap();
        let ec = SigningKey::generate(Alg::ES256).unwrap();
        let p384 = SigningKey::generate(Alg::ES384).unwrap();
        let rs_token = rsa.sign_compact(&Map::new(), &claims(1)).unwrap();
        let es_token = ec.sign_compact(&Map::new(), &claims(1)).unwrap();
        // RS256 token checked with an EC key, ES256 token with an RSA key.
        assert_eq!(
            parse_compact(&rs_token, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&ec.public_spki_der())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
        assert_eq!(
            parse_compact(&es_token, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&rsa.public_spki_der())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
        assert_eq!(
            parse_compact(&es_token, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&p384.public_spki_der())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
        // A forged header: ES256 claimed over an RSA signature.
        let parts: Vec<&str> = rs_token.split('.').collect();
        let forged = format!("{}.{}.{}", b64(r#"{"alg":"ES256"}"#), parts[1], parts[2]);
        assert_eq!(
            parse_compact(&forged, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&rsa.public_spki_der())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
        assert_eq!(
            parse_compact(&es_token, &Alg::ALL)
                .unwrap()
                .verify_with_jwk(&rsa.public_jwk())
                .unwrap_err(),
            JoseError::KeyMismatch
        );
    }

    #[test]
    fn tampering_and_other_keys_fail() {
        let key = SigningKey::generate(Alg::RS256).unwrap();
        let other = SigningKey::generate(Alg::RS256).unwrap();
        let token = key.sign_compact(&Map::new(), &claims(1)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&json!({"iss": "evil"}).to_string()),
            parts[2]
        );
        assert_eq!(
            parse_compact(&tampered, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&key.public_spki_der())
                .unwrap_err(),
            JoseError::BadSignature
        );
        assert_eq!(
            parse_compact(&token, &Alg::ALL)
                .unwrap()
                .verify_with_spki(&other.public_spki_der())
                .unwrap_err(),
            JoseError::BadSignature
        );
        assert_eq!(
            parse_compact(&token, &Alg::ALL)
                .unwrap()
                .verify_with_jwk(&other.public_jwk())
                .unwrap_err(),
            JoseError::BadSignature
        );
    }

    #[test]
    fn x5c_must_be_standard_base64() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let mut h = Map::new();
        h.insert("x5c".into(), json!(["+/+/AA=="]));
        let t = key.sign_compact(&h, &claims(1)).unwrap();
        assert_eq!(
            parse_compact(&t, &Alg::ALL).unwrap().x5c_der().unwrap(),
            vec![vec![0xfb, 0xff, 0xbf, 0]]
        );
        h.insert("x5c".into(), json!(["-_-_AA"]));
        let t = key.sign_compact(&h, &claims(1)).unwrap();
        assert!(parse_compact(&t, &Alg::ALL).unwrap().x5c_der().is_err());
        h.insert("x5c".into(), json!("not-an-array"));
        let t = key.sign_compact(&h, &claims(1)).unwrap();
        assert!(parse_compact(&t, &Alg::ALL).is_err());
        h.insert("x5c".into(), json!(vec!["AA=="; 11]));
        let t = key.sign_compact(&h, &claims(1)).unwrap();
        assert!(parse_compact(&t, &Alg::ALL).is_err());
    }

    #[test]
    fn time_rules() {
        let rules = TimeRules {
            now: 10_000,
            leeway: 60,
            max_lifetime: Some(300),
        };
        let m = |v: Value| v.as_object().unwrap().clone();
        assert!(check_time_claims(&m(json!({"iat": 10_000, "exp": 10_300})), &rules).is_ok());
        assert_eq!(
            check_time_claims(&m(json!({"iat": 10_000, "exp": 10_301})), &rules),
            Err(JoseError::LifetimeTooLong(300))
        );
        assert_eq!(
            check_time_claims(&m(json!({"iat": 9_000, "exp": 9_900})), &rules),
            Err(JoseError::Expired)
        );
        assert!(
            check_time_claims(&m(json!({"iat": 9_700, "exp": 9_970})), &rules).is_ok(),
            "within leeway"
        );
        assert_eq!(
            check_time_claims(&m(json!({"iat": 10_061, "exp": 10_200})), &rules),
            Err(JoseError::IssuedInFuture)
        );
        assert_eq!(
            check_time_claims(&m(json!({"iat": 10_000})), &rules),
            Err(JoseError::MissingClaim("exp"))
        );
        assert_eq!(
            check_time_claims(&m(json!({"exp": 10_100})), &rules),
            Err(JoseError::MissingClaim("iat"))
        );
        assert_eq!(
            check_time_claims(&m(json!({"iat": 10_000, "exp": "soon"})), &rules),
            Err(JoseError::MissingClaim("exp"))
        );
        assert_eq!(
            check_time_claims(
                &m(json!({"iat": 10_000, "exp": 10_100, "nbf": 10_500})),
                &rules
            ),
            Err(JoseError::NotYetValid)
        );
        // Leeway never exceeds 60 s even if asked.
        let loose = TimeRules {
            now: 10_000,
            leeway: 600,
            max_lifetime: None,
        };
        assert_eq!(
            check_time_claims(&m(json!({"exp": 9_900})), &loose),
            Err(JoseError::Expired)
        );
    }

    #[test]
    fn audience_is_exact() {
        let m = |v: Value| v.as_object().unwrap().clone();
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
        assert!(!audience_contains(&m(json!({})), "https://a/x"));
    }

    #[test]
    fn pem_keys_load_and_weak_or_wrong_keys_are_refused() {
        let rsa = SigningKey::generate(Alg::RS256).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(rsa.to_pkcs8_der().unwrap())
        );
        let loaded = SigningKey::from_pem(None, &pem).unwrap();
        assert_eq!(loaded.alg(), Alg::RS256);
        assert_eq!(loaded.public_spki_der(), rsa.public_spki_der());
        assert!(SigningKey::from_pem(Some(Alg::ES256), &pem).is_err());
        assert!(SigningKey::from_pem(None, "not a pem").is_err());
        let ec = SigningKey::generate(Alg::ES256).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(ec.to_pkcs8_der().unwrap())
        );
        assert_eq!(SigningKey::from_pem(None, &pem).unwrap().alg(), Alg::ES256);
        assert!(SigningKey::from_pem(Some(Alg::RS256), &pem).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty": "RSA", "e": "AQAB", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(
            jwk_thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
