//! Access tokens, id_tokens, and client assertions with registered keys (SMART asymmetric client
//! authentication): what they contain and how they are checked.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::jose::{self, Alg, JoseError, SigningKey, TimeRules, VerifiedJws};
use crate::keys::KeySet;

/// `typ` of Bluegate access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The grant this token belongs to; revoking the grant revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
}

/// Sign an access token (ES256 by design: cheap to sign, verified locally by every node).
pub fn sign_access_token(key: &SigningKey, claims: &AccessClaims) -> Result<String, JoseError> {
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(ACCESS_TOKEN_TYP.into()));
    let body = serde_json::to_value(claims).map_err(|_| JoseError::Signing)?;
    key.sign_compact(&header, &body)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Jose(#[from] JoseError),
    #[error("unknown signing key")]
    UnknownKey,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("not an access token")]
    Type,
    #[error("malformed claims")]
    Claims,
}

/// Verify an access token issued by this server: signature by a published key (by `kid`), `typ`, issuer,
/// audience (the FHIR base) and expiry.
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    audience: &str,
    now: i64,
    leeway: i64,
) -> Result<AccessClaims, TokenError> {
    let parsed = jose::parse_compact(token, &[Alg::ES256, Alg::RS256])?;
    if parsed.header().typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
        return Err(TokenError::Type);
    }
    let kid = parsed.header().kid.clone().ok_or(TokenError::UnknownKey)?;
    let key = keys.find(&kid, now).ok_or(TokenError::UnknownKey)?;
    if key.alg() != parsed.header().alg {
        return Err(TokenError::Jose(JoseError::KeyMismatch));
    }
    let verified = parsed.verify_with_spki(&key.public_spki_der())?;
    jose::check_time_claims(
        verified.claims(),
        &TimeRules {
            now,
            leeway,
            max_lifetime: None,
        },
    )?;
    let claims: AccessClaims = serde_json::from_value(Value::Object(verified.into_claims()))
        .map_err(|_| TokenError::Claims)?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer);
    }
    if claims.aud != audience {
        return Err(TokenError::Audience);
    }
    Ok(claims)
}

/// OpenID Connect id_token claims (RS256, as SMART requires): `sub` is a stable, opaque member id;
/// `fhirUser` is an absolute URL.
#[allow(clippy::too_many_arguments)]
pub fn id_token_claims(
    issuer: &str,
    sub: &str,
    client_id: &str,
    iat: i64,
    exp: i64,
    nonce: Option<&str>,
    fhir_user_url: Option<&str>,
    at_hash: Option<&str>,
) -> Value {
    let mut c = json!({
        "iss": issuer,
        "sub": sub,
        "aud": client_id,
        "iat": iat,
        "exp": exp,
        "auth_time": iat,
    });
    if let Some(n) = nonce {
        c["nonce"] = json!(n);
    }
    if let Some(f) = fhir_user_url {
        c["fhirUser"] = json!(f);
    }
    if let Some(h) = at_hash {
        c["at_hash"] = json!(h);
    }
    c
}

/// OIDC `at_hash`: left half of the SHA-256 of the access token, base64url (RS256/ES256).
pub fn at_hash(access_token: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16])
}

/// A client assertion that verified against one of the client's registered keys.
#[derive(Debug, Clone)]
pub struct ValidatedAssertion {
    pub jti: String,
    pub exp: i64,
}

/// SMART asymmetric client authentication (`private_key_jwt` with a registered JWKS): `iss` = `sub` =
/// client_id, `aud` = the token endpoint, `exp` at most 5 minutes after `iat`, a `jti`, signed by a key of
/// the client's JWKS (chosen by `kid` when present). The caller checks `jti` replay in the store.
pub fn validate_jwks_assertion(
    assertion: &str,
    jwks: &Value,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
    leeway: i64,
) -> Result<ValidatedAssertion, JoseError> {
    let parsed = jose::parse_compact(assertion, &Alg::ALL)?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JoseError::BadKey("the client has no JWKS"))?;
    let kid = parsed.header().kid.clone();
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| match (&kid, k.get("kid").and_then(Value::as_str)) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    let mut verified: Option<VerifiedJws> = None;
    let mut last_err = JoseError::BadKey("no registered key matches the assertion's kid");
    for k in candidates {
        match parsed.clone().verify_with_jwk(k) {
            Ok(v) => {
                verified = Some(v);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let verified = verified.ok_or(last_err)?;
    check_assertion_claims(verified.claims(), client_id, token_endpoint, now, leeway)
}

/// The claim rules shared by every client assertion (RFC 7523 §3, SMART, UDAP).
pub fn check_assertion_claims(
    claims: &Map<String, Value>,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
    leeway: i64,
) -> Result<ValidatedAssertion, JoseError> {
    let s = |k: &'static str| claims.get(k).and_then(Value::as_str);
    if s("iss") != Some(client_id) {
        return Err(JoseError::MissingClaim("iss"));
    }
    if s("sub") != Some(client_id) {
        return Err(JoseError::MissingClaim("sub"));
    }
    if !jose::audience_contains(claims, token_endpoint) {
        return Err(JoseError::MissingClaim("aud"));
    }
    let jti = s("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(JoseError::MissingClaim("jti"))?
        .to_string();
    jose::check_time_claims(
        claims,
        &TimeRules {
            now,
            leeway,
            max_lifetime: Some(300),
        },
    )?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JoseError::MissingClaim("exp"))?;
    Ok(ValidatedAssertion { jti, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::StoredKey;

    fn keyset() -> (KeySet, SigningKey) {
        let k = SigningKey::generate(Alg::ES256).unwrap();
        let stored = StoredKey {
            kid: k.kid().to_string(),
            alg: Alg::ES256,
            private_pkcs8_der: k.to_pkcs8_der().unwrap(),
            created_at: 0,
            retired_at: None,
            publish_until: None,
        };
        (KeySet::from_stored(&[stored], 0).unwrap(), k)
    }

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://as/fhir".into(),
            sub: "m1".into(),
            aud: "https://as/fhir".into(),
            exp: now + 60,
            iat: now,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "patient/Patient.read".into(),
            patient: Some("p1".into()),
            fhir_user: None,
            gid: Some("g".into()),
        }
    }

    #[test]
    fn access_tokens_verify_and_every_rule_bites() {
        let (set, key) = keyset();
        let t = sign_access_token(&key, &claims(100)).unwrap();
        let c =
            verify_access_token(&t, &set, "https://as/fhir", "https://as/fhir", 100, 0).unwrap();
        assert_eq!(c.patient.as_deref(), Some("p1"));
        assert_eq!(
            verify_access_token(&t, &set, "https://other/fhir", "https://as/fhir", 100, 0),
            Err(TokenError::Issuer)
        );
        assert_eq!(
            verify_access_token(&t, &set, "https://as/fhir", "https://other/fhir", 100, 0),
            Err(TokenError::Audience)
        );
        assert!(matches!(
            verify_access_token(&t, &set, "https://as/fhir", "https://as/fhir", 1000, 0),
            Err(TokenError::Jose(JoseError::Expired))
        ));
        // Another server's key (same kid format, unknown kid).
        let (_, stranger) = keyset();
        let t2 = sign_access_token(&stranger, &claims(100)).unwrap();
        assert_eq!(
            verify_access_token(&t2, &set, "https://as/fhir", "https://as/fhir", 100, 0),
            Err(TokenError::UnknownKey)
        );
        // Tampered payload.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(100);
        c.patient = Some("p2".into());
        use base64::Engine;
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_string(&c).unwrap());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(
            verify_access_token(&forged, &set, "https://as/fhir", "https://as/fhir", 100, 0),
            Err(TokenError::Jose(JoseError::BadSignature))
        ));
        // An id_token-like JWT signed by the same key but without typ at+jwt is not an access token.
        let plain = key
            .sign_compact(&Map::new(), &serde_json::to_value(claims(100)).unwrap())
            .unwrap();
        assert_eq!(
            verify_access_token(&plain, &set, "https://as/fhir", "https://as/fhir", 100, 0),
            Err(TokenError::Type)
        );
    }

    #[test]
    fn jwks_assertions() {
        let key = SigningKey::generate(Alg::ES384).unwrap();
        let jwks = json!({"keys": [key.public_jwk()]});
        let ep = "https://as/oauth/token";
        let good = json!({"iss": "c1", "sub": "c1", "aud": ep, "iat": 100, "exp": 400, "jti": "a"});
        let t = key.sign_compact(&Map::new(), &good).unwrap();
        assert_eq!(
            validate_jwks_assertion(&t, &jwks, "c1", ep, 100, 0)
                .unwrap()
                .jti,
            "a"
        );
        assert!(validate_jwks_assertion(&t, &jwks, "c2", ep, 100, 0).is_err());
        assert!(validate_jwks_assertion(&t, &jwks, "c1", "https://as/other", 100, 0).is_err());
        assert!(validate_jwks_assertion(&t, &jwks, "c1", ep, 1000, 0).is_err());
        let mut long = good.clone();
        long["exp"] = json!(401);
        let t = key.sign_compact(&Map::new(), &long).unwrap();
        assert_eq!(
            validate_jwks_assertion(&t, &jwks, "c1", ep, 100, 0).unwrap_err(),
            JoseError::LifetimeTooLong(300)
        );
        let mut nojti = good.clone();
        nojti.as_object_mut().unwrap().remove("jti");
        let t = key.sign_compact(&Map::new(), &nojti).unwrap();
        assert!(validate_jwks_assertion(&t, &jwks, "c1", ep, 100, 0).is_err());
        // Signed by a key that is not registered.
        let other = SigningKey::generate(Alg::ES384).unwrap();
        let t = other.sign_compact(&Map::new(), &good).unwrap();
        assert!(validate_jwks_assertion(&t, &jwks, "c1", ep, 100, 0).is_err());
    }

    #[test]
    fn id_token_claims_and_at_hash() {
        let c = id_token_claims(
            "https://as/fhir",
            "m1",
            "c1",
            10,
            70,
            Some("n"),
            Some("https://as/fhir/Patient/p1"),
            Some("h"),
        );
        assert_eq!(c["aud"], "c1");
        assert_eq!(c["nonce"], "n");
        assert_eq!(c["fhirUser"], "https://as/fhir/Patient/p1");
        assert_eq!(at_hash("abc").len(), 22);
    }
}
