//! OpenID Connect `id_token` validation, app side (smart.md C-12, OIDC Core §3.1.3.7): signature with a key
//! of the issuer's JWKS (found through `{issuer}/.well-known/openid-configuration`), algorithms from an
//! allow-list only, `iss` exactly the issuer, `aud` containing our client_id (`azp` when there are several),
//! `exp`/`iat`, `sub`, and the `nonce` we sent.

use bluegate_core::jose::{self, Alg, TimeRules};
use serde_json::{Map, Value};

use crate::error::Error;

/// Algorithms accepted for `id_token`s when the server does not narrow them (SMART requires RS256).
pub const DEFAULT_ID_TOKEN_ALGS: [Alg; 1] = [Alg::RS256];

/// What an `id_token` must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The issuer from discovery, compared exactly.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent in the authorization request, if any.
    pub nonce: Option<&'a str>,
    pub now: i64,
    /// Clock-skew leeway in seconds (clamped to 0..=60).
    pub leeway: i64,
}

/// The issuer's OpenID configuration, as far as validation needs it.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub jwks_uri: String,
    /// `id_token_signing_alg_values_supported` ∩ the algorithms Bluegate implements; RS256 when absent.
    pub algs: Vec<Alg>,
}

/// Fetch `{issuer}/.well-known/openid-configuration`; its `issuer` must be exactly `issuer`, `jwks_uri`
/// an https URL.
pub async fn openid_configuration(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<OidcConfig, Error> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| Error::transport(&url, e))?;
    if resp.status().as_u16() != 200 {
        return Err(Error::bad(&url, format!("HTTP {}", resp.status().as_u16())));
    }
    let doc = crate::http::read_json(resp).await?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(Error::bad(
            &url,
            "its issuer is not the issuer we asked for",
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .filter(|u| url::Url::parse(u).is_ok_and(|p| p.scheme() == "https"))
        .ok_or_else(|| Error::bad(&url, "jwks_uri is missing or not https"))?
        .to_string();
    let algs = match doc
        .get("id_token_signing_alg_values_supported")
        .and_then(Value::as_array)
    {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|a| a.parse::<Alg>().ok())
            .collect(),
        None => DEFAULT_ID_TOKEN_ALGS.to_vec(),
    };
    Ok(OidcConfig {
        issuer: issuer.to_string(),
        jwks_uri,
        algs,
    })
}

/// GET a JWKS (at most 1 MiB).
pub async fn fetch_jwks(http: &reqwest::Client, jwks_uri: &str) -> Result<Value, Error> {
    let resp = http
        .get(jwks_uri)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| Error::transport(jwks_uri, e))?;
    if resp.status().as_u16() != 200 {
        return Err(Error::bad(
            jwks_uri,
            format!("HTTP {}", resp.status().as_u16()),
        ));
    }
    let jwks = crate::http::read_json(resp).await?;
    if !jwks.get("keys").is_some_and(Value::is_array) {
        return Err(Error::bad(jwks_uri, "not a JWKS (no keys array)"));
    }
    Ok(jwks)
}

fn kty_fits(jwk: &Value, alg: Alg) -> bool {
    match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => alg.is_rsa(),
        Some("EC") => alg.is_ec(),
        _ => false,
    }
}

/// Validate an `id_token` against a JWKS; returns its claims. Pure (time is in `expected`).
pub fn validate_id_token(
    token: &str,
    jwks: &Value,
    allowed: &[Alg],
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, Error> {
    let e = |m: String| Error::IdToken(m);
    let parsed = jose::parse_compact(token, allowed).map_err(|x| e(x.to_string()))?;
    let alg = parsed.header().alg;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| e("the issuer's JWKS has no keys".into()))?;
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| kty_fits(k, alg))
        .filter(|k| match &parsed.header().kid {
            Some(kid) => k.get("kid").and_then(Value::as_str) == Some(kid.as_str()),
            None => true,
        })
        .collect();
    let jwk = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(e(
                "no key of the issuer's JWKS matches its kid and alg".into()
            ))
        }
        _ => {
            return Err(e(
                "several keys of the issuer's JWKS match; the kid is ambiguous".into(),
            ))
        }
    };
    let verified = parsed.verify_with_jwk(jwk).map_err(|x| e(x.to_string()))?;
    let claims = verified.into_claims();
    let s = |k: &str| claims.get(k).and_then(Value::as_str);
    if s("iss") != Some(expected.issuer) {
        return Err(e(format!(
            "iss is `{}`, not the issuer `{}`",
            crate::util::printable(s("iss").unwrap_or("(none)"), 200),
            expected.issuer
        )));
    }
    if !jose::audience_contains(&claims, expected.client_id) {
        return Err(e("aud does not contain this app's client_id".into()));
    }
    if let Some(Value::Array(auds)) = claims.get("aud") {
        if auds.len() > 1 && s("azp") != Some(expected.client_id) {
            return Err(e(
                "several audiences and azp is not this app's client_id".into()
            ));
        }
    }
    if s("sub").is_none_or(|x| x.is_empty()) {
        return Err(e("sub is missing".into()));
    }
    if claims.get("iat").and_then(Value::as_i64).is_none() {
        return Err(e("iat is missing".into()));
    }
    jose::check_time_claims(
        &claims,
        &TimeRules {
            now: expected.now,
            leeway: expected.leeway,
            max_lifetime: None,
        },
    )
    .map_err(|x| e(x.to_string()))?;
    if let Some(n) = expected.nonce {
        if !s("nonce").is_some_and(|got| crate::util::ct_eq(got, n)) {
            return Err(e("nonce is missing or not the one this app sent".into()));
        }
    }
    Ok(claims)
}

/// Discover the issuer's keys and validate (the network part of [`validate_id_token`]).
pub async fn verify_id_token(
    http: &reqwest::Client,
    token: &str,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, Error> {
    let cfg = openid_configuration(http, expected.issuer).await?;
    let jwks = fetch_jwks(http, &cfg.jwks_uri).await?;
    validate_id_token(token, &jwks, &cfg.algs, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegate_core::jose::SigningKey;
    use serde_json::json;

    const ISS: &str = "https://as.example/fhir";

    fn claims(now: i64) -> Value {
        json!({"iss": ISS, "sub": "member-1", "aud": "client-1", "iat": now, "exp": now + 300,
               "nonce": "n-1", "fhirUser": "https://as.example/fhir/Patient/p1"})
    }

    fn exp(now: i64) -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: "client-1",
            nonce: Some("n-1"),
            now,
            leeway: 60,
        }
    }

    fn jwks(keys: &[&SigningKey]) -> Value {
        json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()})
    }

    #[test]
    fn a_good_id_token_validates_and_every_deviation_is_refused() {
        let now = 1_700_000_000;
        let key = SigningKey::generate(Alg::RS256).unwrap();
        let other = SigningKey::generate(Alg::RS256).unwrap();
        let set = jwks(&[&key]);
        let sign = |c: &Value| key.sign_compact(&Map::new(), c).unwrap();
        let ok = validate_id_token(&sign(&claims(now)), &set, &[Alg::RS256], &exp(now)).unwrap();
        assert_eq!(ok["sub"], "member-1");

        let mut cases: Vec<(&str, Value)> = Vec::new();
        let mut c = claims(now);
        c["aud"] = json!("someone-else");
        cases.push(("other audience", c));
        let mut c = claims(now);
        c["iss"] = json!("https://evil.example/fhir");
        cases.push(("other issuer", c));
        let mut c = claims(now);
        c["exp"] = json!(now - 120);
        cases.push(("expired", c));
        let mut c = claims(now);
        c["nonce"] = json!("n-2");
        cases.push(("other nonce", c));
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("nonce");
        cases.push(("no nonce", c));
        let mut c = claims(now);
        c["aud"] = json!(["client-1", "client-2"]);
        cases.push(("several audiences without azp", c));
        for (what, c) in cases {
            assert!(
                validate_id_token(&sign(&c), &set, &[Alg::RS256], &exp(now)).is_err(),
                "{what} accepted"
            );
        }
        // Signed by a key that is not the issuer's.
        let forged = other.sign_compact(&Map::new(), &claims(now)).unwrap();
        assert!(validate_id_token(&forged, &set, &[Alg::RS256], &exp(now)).is_err());
        // An algorithm outside the allow-list.
        let es = SigningKey::generate(Alg::ES256).unwrap();
        let t = es.sign_compact(&Map::new(), &claims(now)).unwrap();
        assert!(validate_id_token(&t, &jwks(&[&key, &es]), &[Alg::RS256], &exp(now)).is_err());
        // alg none.
        use base64::Engine;
        let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b(&json!({"alg": "none"})), b(&claims(now)));
        assert!(validate_id_token(&none, &set, &[Alg::RS256], &exp(now)).is_err());
    }
}
