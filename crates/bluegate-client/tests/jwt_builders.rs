//! The software statement and client assertion builders, checked by an independent verifier: the JWS is
//! taken apart by hand (base64url, JSON) and its signature verified by `openssl` with the public key of
//! the `x5c` leaf, whose URI SAN `openssl` reads too. Then the server's own validators accept them.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bluegate_client::registration::{self, AuthMethod, ClientMetadata};
use bluegate_client::token::{self, B2bContext};
use bluegate_client::AppIdentity;
use bluegate_core::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
use serde_json::Value;

const APP: &str = "https://app.example/bluegate";
const REG: &str = "https://as.example/oauth/register";
const TOKEN: &str = "https://as.example/oauth/token";

struct Issued {
    community: pki::Community,
    cert: pki::IssuedCert,
}

fn issue(key: KeyKind) -> Issued {
    let now = time::OffsetDateTime::now_utc();
    let community = pki::create_community(
        "Builders",
        KeyKind::Rsa2048,
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
        None,
    )
    .unwrap();
    let cert = community
        .issue_end_entity(&EndEntityRequest {
            common_name: "App".into(),
            san_uris: vec![APP.into()],
            dns_names: vec![],
            ip_addresses: vec![],
            key,
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(10),
            usage: EndEntityUsage::UdapClient,
        })
        .unwrap();
    Issued { community, cert }
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// DER length.
fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else if n < 256 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

/// JOSE ECDSA signature (r || s) to the DER form openssl verifies.
fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let mut v: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
        if v.first().is_none_or(|x| *x & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02];
        out.extend(der_len(v.len()));
        out.extend(v);
        out
    };
    let (r, s) = sig.split_at(sig.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

/// Take the JWS apart without any of our JOSE code and verify it with openssl. Returns (header, claims).
fn independently_verify(jws: &str, dir: &Path) -> (Value, Value) {
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    // x5c: standard base64 DER, leaf first.
    let x5c = header["x5c"].as_array().expect("x5c");
    let leaf = STANDARD
        .decode(x5c[0].as_str().unwrap())
        .expect("standard base64");
    let leaf_path = dir.join("leaf.der");
    std::fs::write(&leaf_path, &leaf).unwrap();
    let (ok, san) = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        leaf_path.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{san}");
    assert!(san.contains(&format!("URI:{APP}")), "{san}");
    let (ok, pubkey) = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        leaf_path.to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    assert!(ok, "{pubkey}");
    let pub_path = dir.join("pub.pem");
    std::fs::write(&pub_path, pubkey).unwrap();
    let input_path = dir.join("input");
    std::fs::write(&input_path, format!("{}.{}", parts[0], parts[1])).unwrap();
    let sig_path = dir.join("sig");
    let alg = header["alg"].as_str().unwrap();
    let sig_der = if alg.starts_with("ES") {
        ecdsa_der(&sig)
    } else {
        sig
    };
    std::fs::write(&sig_path, sig_der).unwrap();
    let digest = if alg.ends_with("384") {
        "-sha384"
    } else {
        "-sha256"
    };
    let (ok, text) = openssl(&[
        "dgst",
        digest,
        "-verify",
        pub_path.to_str().unwrap(),
        "-signature",
        sig_path.to_str().unwrap(),
        input_path.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("Verified OK"), "openssl: {text}");
    // Tampering is caught by the same verifier (the check above can fail).
    std::fs::write(&input_path, format!("{}.{}x", parts[0], parts[1])).unwrap();
    let (ok, _) = openssl(&[
        "dgst",
        digest,
        "-verify",
        pub_path.to_str().unwrap(),
        "-signature",
        sig_path.to_str().unwrap(),
        input_path.to_str().unwrap(),
    ]);
    assert!(!ok, "a tampered input verified");
    (header, claims)
}

fn meta(method: AuthMethod) -> ClientMetadata {
    ClientMetadata::authorization_code(
        "Builder test app",
        vec!["https://127.0.0.1:8765/".into()],
        "launch/patient openid fhirUser offline_access patient/ExplanationOfBenefit.read",
        vec!["mailto:dev@app.example".into()],
        "https://app.example/logo.png",
        method,
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn software_statements_verify_independently_with_rs256_and_es256() {
    for (kind, alg) in [(KeyKind::Rsa2048, "RS256"), (KeyKind::P256, "ES256")] {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(kind);
        let id =
            AppIdentity::from_pem(issued.cert.chain_pem.as_bytes(), &issued.cert.key_pem, None)
                .unwrap();
        let t = now();
        let jws =
            registration::software_statement(&id, REG, &meta(AuthMethod::ClientSecretBasic), t)
                .unwrap();
        let (h, c) = independently_verify(&jws, dir.path());
        assert_eq!(h["alg"], alg);
        assert_eq!(
            h["x5c"].as_array().unwrap().len(),
            2,
            "leaf and intermediate"
        );
        assert_eq!(c["iss"], APP);
        assert_eq!(c["sub"], APP);
        assert_eq!(c["aud"], REG);
        assert_eq!(c["iat"], t);
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
        assert!(c["jti"].as_str().unwrap().len() >= 22);
        assert_eq!(c["client_name"], "Builder test app");
        assert_eq!(c["redirect_uris"][0], "https://127.0.0.1:8765/");
        assert_eq!(c["response_types"], serde_json::json!(["code"]));
        assert_eq!(
            c["grant_types"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(c["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(c["contacts"][0], "mailto:dev@app.example");
        assert_eq!(c["logo_uri"], "https://app.example/logo.png");
        assert!(c["scope"].as_str().unwrap().contains("offline_access"));
        // A fresh jti every time.
        let again = registration::software_statement(&id, REG, &meta(AuthMethod::PrivateKeyJwt), t)
            .unwrap();
        let (_, c2) = independently_verify(&again, dir.path());
        assert_ne!(c["jti"], c2["jti"]);
        assert_eq!(c2["token_endpoint_auth_method"], "private_key_jwt");

        // And the server's validator (another implementation path) accepts it.
        let community = bluegate_core::trust::Community::builder("urn:test")
            .anchors_pem(issued.community.root_cert_pem.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        let v = bluegate_core::udap::validate_software_statement(
            &bluegate_core::udap::StatementInput {
                software_statement: jws,
                certifications: None,
                udap: Some("1".into()),
            },
            &community,
            &bluegate_core::trust::ChainCache::new(4),
            &bluegate_core::udap::RegistrationPolicy {
                registration_endpoint: REG.into(),
                leeway: 60,
                scopes_offered: bluegate_core::discovery::scopes_supported(),
                carin_mode: true,
                required_certifications: vec![],
            },
            t,
        )
        .unwrap();
        assert_eq!(v.iss, APP);
    }
}

#[test]
fn client_assertions_verify_independently_and_carry_b2b_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue(KeyKind::Rsa2048);
    let id = AppIdentity::from_pem(issued.cert.chain_pem.as_bytes(), &issued.cert.key_pem, None)
        .unwrap();
    let t = now();
    let a = token::client_assertion(&id, "client-123", TOKEN, t, None).unwrap();
    let (h, c) = independently_verify(&a, dir.path());
    assert_eq!(h["alg"], "RS256");
    assert_eq!(c["iss"], "client-123");
    assert_eq!(c["sub"], "client-123");
    assert_eq!(c["aud"], TOKEN);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert!(c.get("extensions").is_none());
    let b2b = B2bContext {
        organization_id: "https://org.example/".into(),
        organization_name: Some("Example Org".into()),
        purpose_of_use: vec!["urn:oid:2.16.840.1.113883.5.8#TREAT".into()],
        subject_name: None,
        subject_id: None,
        subject_role: None,
        consent_policy: vec![],
        consent_reference: vec![],
    };
    let ext = b2b.extensions().unwrap();
    let a2 = token::client_assertion(&id, "client-123", TOKEN, t, Some(&ext)).unwrap();
    let (_, c2) = independently_verify(&a2, dir.path());
    assert_eq!(c2["extensions"]["hl7-b2b"]["version"], "1");
    assert_eq!(
        c2["extensions"]["hl7-b2b"]["purpose_of_use"][0],
        "urn:oid:2.16.840.1.113883.5.8#TREAT"
    );
    assert_ne!(c["jti"], c2["jti"]);
}

#[test]
fn identities_whose_key_is_not_the_leafs_are_refused() {
    let a = issue(KeyKind::Rsa2048);
    let b = issue(KeyKind::Rsa2048);
    assert!(AppIdentity::from_pem(a.cert.chain_pem.as_bytes(), &b.cert.key_pem, None).is_err());
    assert!(AppIdentity::from_pem(
        a.cert.chain_pem.as_bytes(),
        &a.cert.key_pem,
        Some("https://other.example/")
    )
    .is_err());
    // A CA first in the chain is not an app certificate.
    assert!(AppIdentity::from_pem(
        a.community.intermediate_cert_pem.as_bytes(),
        &a.community.intermediate_key_pem,
        None
    )
    .is_err());
}

#[test]
fn metadata_rules_are_checked_before_signing() {
    let issued = issue(KeyKind::P256);
    let id = AppIdentity::from_pem(issued.cert.chain_pem.as_bytes(), &issued.cert.key_pem, None)
        .unwrap();
    let mut m = meta(AuthMethod::PrivateKeyJwt);
    m.contacts = vec!["https://app.example/contact".into()];
    assert!(registration::software_statement(&id, REG, &m, now()).is_err());
    let mut m = meta(AuthMethod::PrivateKeyJwt);
    m.redirect_uris.clear();
    assert!(registration::software_statement(&id, REG, &m, now()).is_err());
    let mut m = meta(AuthMethod::PrivateKeyJwt);
    m.grant_types.push("client_credentials".into());
    assert!(registration::software_statement(&id, REG, &m, now()).is_err());
    let cc = ClientMetadata::client_credentials(
        "B2B",
        "system/Patient.read",
        vec!["mailto:a@b.example".into()],
    );
    let jws = registration::software_statement(&id, REG, &cc, now()).unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("redirect_uris").is_none() && claims.get("response_types").is_none());
}
