//! Discovery documents: SMART configuration, UDAP metadata (and the claims of its signed form), OpenID
//! configuration and the FHIR CapabilityStatement.
//!
//! They are built from one [`Endpoints`] value so that the four documents can never disagree about a URL
//! (Inferno compares the CapabilityStatement's `oauth-uris` with the SMART configuration one for one).

use serde_json::{json, Map, Value};

/// The resource types Bluegate serves, in the order they are advertised.
pub const RESOURCE_TYPES: &[&str] = &[
    "ExplanationOfBenefit",
    "Coverage",
    "Patient",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Location",
];

/// The canonical URL that the CapabilityStatement instantiates (CARIN BB CB-9).
pub const C4BB_CAPABILITY_STATEMENT: &str =
    "http://hl7.org/fhir/us/carin-bb/CapabilityStatement/c4bb";

/// The SMART `oauth-uris` extension URL (v1 discovery through the CapabilityStatement).
pub const OAUTH_URIS_EXTENSION: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// Client-assertion and software-statement algorithms accepted (UDAP UC-6 and SMART v2 asymmetric auth).
pub const ASSERTION_ALGS: &[&str] = &["RS256", "RS384", "ES256", "ES384"];

/// Every absolute URL that discovery advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub fhir_base: String,
    pub authorize: String,
    pub token: String,
    pub register: String,
    pub introspect: String,
    pub revoke: String,
    pub userinfo: String,
    pub jwks: String,
    pub manage: String,
}

impl Endpoints {
    /// The endpoints for a public origin such as `https://localhost:8443` (no trailing slash, no path is
    /// required but one is allowed: `https://payer.example/api`).
    pub fn for_public_url(public_url: &str) -> Self {
        let origin = public_url.trim_end_matches('/');
        let at = |path: &str| format!("{origin}{path}");
        Endpoints {
            fhir_base: at("/fhir"),
            authorize: at("/oauth/authorize"),
            token: at("/oauth/token"),
            register: at("/oauth/register"),
            introspect: at("/oauth/introspect"),
            revoke: at("/oauth/revoke"),
            userinfo: at("/oauth/userinfo"),
            jwks: at("/oauth/jwks"),
            manage: at("/account/apps"),
        }
    }

    /// The OAuth / OpenID Connect issuer is the FHIR base (DESIGN §2).
    pub fn issuer(&self) -> &str {
        &self.fhir_base
    }
}

/// Scopes advertised in `scopes_supported`: the identity and launch scopes, then v1 (`.read`) and v2 (`.rs`)
/// spellings of patient-, user- and system-level read access for every served type.
pub fn scopes_supported() -> Vec<String> {
    let mut scopes: Vec<String> = [
        "openid",
        "fhirUser",
        "profile",
        "launch/patient",
        "offline_access",
        "online_access",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for level in ["patient", "user", "system"] {
        for ty in RESOURCE_TYPES {
            scopes.push(format!("{level}/{ty}.read"));
            scopes.push(format!("{level}/{ty}.rs"));
        }
        scopes.push(format!("{level}/*.read"));
        scopes.push(format!("{level}/*.rs"));
    }
    scopes
}

/// SMART capabilities (smart.md D-7): the CARIN set plus what Bluegate adds.
pub const SMART_CAPABILITIES: &[&str] = &[
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// `{fhir}/.well-known/smart-configuration` (SMART App Launch 2.2 §conformance, smart.md §1a).
pub fn smart_configuration(ep: &Endpoints) -> Value {
    json!({
        "issuer": ep.issuer(),
        "jwks_uri": ep.jwks,
        "authorization_endpoint": ep.authorize,
        "token_endpoint": ep.token,
        "registration_endpoint": ep.register,
        "introspection_endpoint": ep.introspect,
        "revocation_endpoint": ep.revoke,
        "management_endpoint": ep.manage,
        "userinfo_endpoint": ep.userinfo,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes_supported(),
        "capabilities": SMART_CAPABILITIES,
    })
}

/// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3).
pub fn openid_configuration(ep: &Endpoints) -> Value {
    json!({
        "issuer": ep.issuer(),
        "authorization_endpoint": ep.authorize,
        "token_endpoint": ep.token,
        "userinfo_endpoint": ep.userinfo,
        "jwks_uri": ep.jwks,
        "registration_endpoint": ep.register,
        "introspection_endpoint": ep.introspect,
        "revocation_endpoint": ep.revoke,
        "scopes_supported": scopes_supported(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "userinfo_signing_alg_values_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    })
}

/// Community-independent part of `{fhir}/.well-known/udap` (UDAP UM-1..UM-18). The caller adds
/// `signed_metadata`, signed with the selected community's certificate.
pub fn udap_metadata(ep: &Endpoints) -> Map<String, Value> {
    let value = json!({
        "udap_versions_supported": ["1"],
        "udap_profiles_supported": ["udap_dcr", "udap_authn", "udap_authz"],
        "udap_authorization_extensions_supported": ["hl7-b2b"],
        "udap_authorization_extensions_required": [],
        "udap_certifications_supported": [],
        "udap_certifications_required": [],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": scopes_supported(),
        "authorization_endpoint": ep.authorize,
        "token_endpoint": ep.token,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "registration_endpoint": ep.register,
        "registration_endpoint_jwt_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint": ep.introspect,
        "revocation_endpoint": ep.revoke,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Maximum lifetime of `signed_metadata` allowed by UM-19 is one year; Bluegate signs for one day and
/// re-signs well before expiry.
pub const SIGNED_METADATA_LIFETIME: i64 = 24 * 3600;

/// Claims of `signed_metadata` (UM-19): `iss` = `sub` = the FHIR base, the endpoints, `iat`, `exp`, `jti`.
pub fn udap_signed_metadata_claims(ep: &Endpoints, iat: i64, jti: &str) -> Value {
    json!({
        "iss": ep.fhir_base,
        "sub": ep.fhir_base,
        "iat": iat,
        "exp": iat + SIGNED_METADATA_LIFETIME,
        "jti": jti,
        "authorization_endpoint": ep.authorize,
        "token_endpoint": ep.token,
        "registration_endpoint": ep.register,
    })
}

/// What one resource type supports, for the CapabilityStatement.
#[derive(Debug, Clone)]
pub struct ResourceCapability {
    pub resource_type: &'static str,
    pub profiles: Vec<&'static str>,
    /// (name, FHIR search parameter type, definition URL)
    pub search_params: Vec<(&'static str, &'static str, &'static str)>,
    pub search_includes: Vec<&'static str>,
}

/// `{fhir}/metadata`: a FHIR R4 CapabilityStatement that instantiates CARIN's `c4bb` and carries the SMART
/// security extension (smart.md D-11..D-14). `resources` lists exactly the types the API serves.
pub fn capability_statement(
    ep: &Endpoints,
    software_version: &str,
    date: &str,
    resources: &[ResourceCapability],
) -> Value {
    let uri = |name: &str, url: &str| json!({"url": name, "valueUri": url});
    let resource: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut entry = json!({
                "type": r.resource_type,
                "supportedProfile": r.profiles,
                "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
                "versioning": "versioned",
                "readHistory": false,
                "searchParam": r.search_params.iter().map(|(name, ty, def)| json!({
                    "name": name, "type": ty, "definition": def
                })).collect::<Vec<_>>(),
            });
            if !r.search_includes.is_empty() {
                entry["searchInclude"] = json!(r.search_includes);
            }
            entry
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "Bluegate",
        "kind": "instance",
        "instantiates": [C4BB_CAPABILITY_STATEMENT],
        "software": {"name": "Bluegate", "version": software_version},
        "implementation": {"description": "Bluegate CARIN Blue Button API", "url": ep.fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": true,
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"
                    }],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
                }],
                "extension": [{
                    "url": OAUTH_URIS_EXTENSION,
                    "extension": [
                        uri("authorize", &ep.authorize),
                        uri("token", &ep.token),
                        uri("register", &ep.register),
                        uri("manage", &ep.manage),
                        uri("introspect", &ep.introspect),
                        uri("revoke", &ep.revoke),
                    ]
                }],
                "description": "Requests without a valid bearer token get 401; a token whose scopes do not cover \
                    the interaction gets 403; resources outside the patient in context get 404. Organization, \
                    Practitioner, PractitionerRole and Location are directory data without PHI: a token with the \
                    matching patient/ or user/ scope may read and search them whatever the patient in context."
            },
            "resource": resource,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoints {
        Endpoints::for_public_url("https://payer.example:8443/")
    }

    #[test]
    fn endpoints_are_absolute_and_under_the_origin() {
        let e = ep();
        assert_eq!(e.fhir_base, "https://payer.example:8443/fhir");
        assert_eq!(e.issuer(), e.fhir_base);
        for u in [&e.authorize, &e.token, &e.register, &e.jwks, &e.manage] {
            assert!(u.starts_with("https://payer.example:8443/"), "{u}");
            assert!(!u.contains("//oauth"), "{u}");
        }
    }

    #[test]
    fn smart_configuration_has_carin_fields() {
        let doc = smart_configuration(&ep());
        let caps: Vec<&str> = doc["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for c in [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "sso-openid-connect",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
        ] {
            assert!(caps.contains(&c), "missing {c}");
        }
        assert!(!caps.contains(&"launch-ehr"));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        let scopes = doc["scopes_supported"].as_array().unwrap();
        for s in [
            "openid",
            "fhirUser",
            "launch/patient",
            "patient/ExplanationOfBenefit.read",
            "patient/Coverage.read",
            "patient/Patient.read",
            "patient/Organization.read",
            "patient/Practitioner.read",
            "user/ExplanationOfBenefit.read",
            "user/Coverage.read",
            "user/Patient.read",
            "user/Organization.read",
            "user/Practitioner.read",
            "offline_access",
        ] {
            assert!(scopes.contains(&json!(s)), "missing scope {s}");
        }
    }

    #[test]
    fn udap_metadata_follows_um_rules() {
        let m = udap_metadata(&ep());
        assert_eq!(m["udap_versions_supported"], json!(["1"]));
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt"])
        );
        let profiles = m["udap_profiles_supported"].as_array().unwrap();
        assert!(profiles.contains(&json!("udap_dcr")) && profiles.contains(&json!("udap_authn")));
        // client_credentials is offered, so udap_authz and hl7-b2b must be present (UM-5, UM-6).
        assert!(profiles.contains(&json!("udap_authz")));
        assert!(m["udap_authorization_extensions_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("hl7-b2b")));
        for key in [
            "token_endpoint_auth_signing_alg_values_supported",
            "registration_endpoint_jwt_signing_alg_values_supported",
        ] {
            assert!(
                m[key].as_array().unwrap().contains(&json!("RS256")),
                "{key}"
            );
        }
    }

    #[test]
    fn signed_metadata_claims_bind_the_fhir_base() {
        let e = ep();
        let c = udap_signed_metadata_claims(&e, 1_000, "abc");
        assert_eq!(c["iss"], json!(e.fhir_base));
        assert_eq!(c["sub"], c["iss"]);
        let lifetime = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
        assert!(lifetime > 0 && lifetime <= 365 * 24 * 3600);
        assert_eq!(c["registration_endpoint"], json!(e.register));
    }

    #[test]
    fn capability_statement_oauth_uris_match_smart_configuration() {
        let e = ep();
        let cs = capability_statement(&e, "0.1.0", "2026-01-01", &[]);
        assert_eq!(cs["instantiates"], json!([C4BB_CAPABILITY_STATEMENT]));
        let smart = smart_configuration(&e);
        let ext = &cs["rest"][0]["security"]["extension"][0];
        assert_eq!(ext["url"], json!(OAUTH_URIS_EXTENSION));
        let find = |name: &str| {
            ext["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["url"] == json!(name))
                .map(|x| x["valueUri"].clone())
        };
        for (name, key) in [
            ("authorize", "authorization_endpoint"),
            ("token", "token_endpoint"),
            ("register", "registration_endpoint"),
            ("manage", "management_endpoint"),
            ("introspect", "introspection_endpoint"),
            ("revoke", "revocation_endpoint"),
        ] {
            assert_eq!(find(name), Some(smart[key].clone()), "{name}");
        }
    }
}

/// Why `signed_metadata` was not accepted (client side, UX / UM-19).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("signed_metadata is missing")]
    Missing,
    #[error("signed_metadata is not a valid JWS: {0}")]
    Jose(#[from] crate::jose::JoseError),
    #[error("the metadata certificate is not trusted: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("signed_metadata iss `{found}` is not the FHIR base `{expected}`")]
    Issuer { expected: String, found: String },
    #[error("signed_metadata sub must equal iss")]
    Subject,
    #[error("the metadata certificate's URI SANs do not include the FHIR base")]
    San,
    #[error("signed_metadata lives longer than one year")]
    Lifetime,
    #[error("signed_metadata lacks {0}")]
    Claim(&'static str),
}

/// The endpoints a client may rely on after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMetadata {
    pub iss: String,
    pub token_endpoint: String,
    pub registration_endpoint: String,
    pub authorization_endpoint: Option<String>,
    pub exp: i64,
}

/// Verify a server's `signed_metadata` as an app must before trusting it (UM-19, UX-*): RS256/RS384/ES256/
/// ES384 only, `x5c` chained to the app's trust anchors, signature by the leaf, `iss` = `sub` = the FHIR base
/// exactly and a URI SAN of the leaf, unexpired, `exp - iat` ≤ 1 year, and the endpoints present.
pub fn verify_signed_metadata(
    jwt: &str,
    fhir_base: &str,
    community: &crate::trust::Community,
    now: i64,
) -> Result<VerifiedMetadata, MetadataError> {
    use crate::jose::{self, Alg, TimeRules};
    let parsed = jose::parse_compact(jwt, &Alg::ALL)?;
    let x5c = parsed.x5c_der()?;
    let leaf = crate::trust::validate_chain(community, &x5c, crate::trust::unix_time(now)?)?;
    let verified = parsed.verify_with_spki(&leaf.spki_der)?;
    let c = verified.claims();
    jose::check_time_claims(
        c,
        &TimeRules {
            now,
            leeway: 60,
            max_lifetime: Some(365 * 24 * 3600),
        },
    )
    .map_err(|e| match e {
        jose::JoseError::LifetimeTooLong(_) => MetadataError::Lifetime,
        other => MetadataError::Jose(other),
    })?;
    let s = |k: &'static str| c.get(k).and_then(Value::as_str);
    let iss = s("iss").ok_or(MetadataError::Claim("iss"))?;
    if iss != fhir_base {
        return Err(MetadataError::Issuer {
            expected: fhir_base.to_string(),
            found: iss.to_string(),
        });
    }
    if s("sub") != Some(iss) {
        return Err(MetadataError::Subject);
    }
    if !leaf.san_uris.iter().any(|u| u == iss) {
        return Err(MetadataError::San);
    }
    if s("jti").is_none() {
        return Err(MetadataError::Claim("jti"));
    }
    Ok(VerifiedMetadata {
        iss: iss.to_string(),
        token_endpoint: s("token_endpoint")
            .ok_or(MetadataError::Claim("token_endpoint"))?
            .to_string(),
        registration_endpoint: s("registration_endpoint")
            .ok_or(MetadataError::Claim("registration_endpoint"))?
            .to_string(),
        authorization_endpoint: s("authorization_endpoint").map(str::to_string),
        exp: c.get("exp").and_then(Value::as_i64).unwrap_or_default(),
    })
}

#[cfg(test)]
mod metadata_tests {
    use super::*;
    use crate::jose::SigningKey;
    use crate::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
    use base64::Engine;
    use time::{Duration, OffsetDateTime};

    struct Fx {
        community: crate::trust::Community,
        key: SigningKey,
        x5c: Vec<String>,
    }

    fn fixture(san: &str) -> Fx {
        let now = OffsetDateTime::now_utc();
        let c = pki::create_community(
            "Meta",
            KeyKind::P256,
            now - Duration::days(1),
            now + Duration::days(30),
            None,
        )
        .unwrap();
        let leaf = pki::issue_end_entity(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &EndEntityRequest {
                common_name: "meta".into(),
                san_uris: vec![san.into()],
                dns_names: vec![],
                ip_addresses: vec![],
                key: KeyKind::Rsa2048,
                not_before: now - Duration::hours(1),
                not_after: now + Duration::days(10),
                usage: EndEntityUsage::UdapServer,
            },
        )
        .unwrap();
        Fx {
            community: crate::trust::Community::builder("urn:t")
                .anchors_pem(c.root_cert_pem.as_bytes())
                .unwrap()
                .build()
                .unwrap(),
            key: SigningKey::from_pem(Some(crate::jose::Alg::RS256), &leaf.key_pem).unwrap(),
            x5c: crate::certs::pem_certs(leaf.chain_pem.as_bytes())
                .unwrap()
                .iter()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                .collect(),
        }
    }

    fn sign(f: &Fx, claims: &Value) -> String {
        let mut h = Map::new();
        h.insert("x5c".into(), json!(f.x5c));
        f.key.sign_compact(&h, claims).unwrap()
    }

    const BASE: &str = "https://payer.example/fhir";

    #[test]
    fn genuine_metadata_verifies_and_every_lie_is_caught() {
        let f = fixture(BASE);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ep = Endpoints::for_public_url("https://payer.example");
        let good = udap_signed_metadata_claims(&ep, now, "j1");
        let v = verify_signed_metadata(&sign(&f, &good), BASE, &f.community, now).unwrap();
        assert_eq!(v.token_endpoint, ep.token);
        // Another server's base.
        assert!(matches!(
            verify_signed_metadata(
                &sign(&f, &good),
                "https://other.example/fhir",
                &f.community,
                now
            ),
            Err(MetadataError::Issuer { .. })
        ));
        // Expired.
        assert!(
            verify_signed_metadata(&sign(&f, &good), BASE, &f.community, now + 2 * 86_400).is_err()
        );
        // Lifetime over a year.
        let mut long = good.clone();
        long["exp"] = json!(now + 400 * 86_400);
        assert_eq!(
            verify_signed_metadata(&sign(&f, &long), BASE, &f.community, now),
            Err(MetadataError::Lifetime)
        );
        // sub differs.
        let mut sub = good.clone();
        sub["sub"] = json!("https://x/");
        assert_eq!(
            verify_signed_metadata(&sign(&f, &sub), BASE, &f.community, now),
            Err(MetadataError::Subject)
        );
        // Missing endpoint.
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("token_endpoint");
        assert_eq!(
            verify_signed_metadata(&sign(&f, &missing), BASE, &f.community, now),
            Err(MetadataError::Claim("token_endpoint"))
        );
        // Untrusted signer (another community), and a certificate for another base.
        let stranger = fixture(BASE);
        assert!(matches!(
            verify_signed_metadata(&sign(&stranger, &good), BASE, &f.community, now),
            Err(MetadataError::Trust(_))
        ));
        let wrong_san = fixture("https://elsewhere.example/fhir");
        assert_eq!(
            verify_signed_metadata(&sign(&wrong_san, &good), BASE, &wrong_san.community, now),
            Err(MetadataError::San)
        );
        // Tampered payload.
        let t = sign(&f, &good);
        let parts: Vec<&str> = t.split('.').collect();
        let mut forged = good.clone();
        forged["token_endpoint"] = json!("https://evil.example/token");
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(verify_signed_metadata(
            &format!("{}.{}.{}", parts[0], p, parts[2]),
            BASE,
            &f.community,
            now
        )
        .is_err());
    }
}
