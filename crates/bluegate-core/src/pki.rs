//! Test trust communities: a root CA, an intermediate CA, end-entity certificates with URI SANs, and CRLs.
//! This is tooling for development and conformance testing (`bluegate pki`), not a production CA.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("random number generator failed")]
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    P256,
}

impl KeyKind {
    fn generate(self) -> Result<KeyPair, PkiError> {
        let alg = match self {
            KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        Ok(KeyPair::generate_for(alg)?)
    }
}

/// A community's two CAs, as PEM (keys are PKCS#8).
#[derive(Debug, Clone)]
pub struct Community {
    pub root_cert_pem: String,
    pub root_key_pem: String,
    pub intermediate_cert_pem: String,
    pub intermediate_key_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndEntityUsage {
    /// TLS server: DNS/IP SANs, serverAuth.
    TlsServer,
    /// UDAP client (software statements, client assertions): URI SAN, clientAuth.
    UdapClient,
    /// UDAP server (signed metadata): URI SAN = FHIR base.
    UdapServer,
}

#[derive(Debug, Clone)]
pub struct EndEntityRequest {
    pub common_name: String,
    pub san_uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub key: KeyKind,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub usage: EndEntityUsage,
}

#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Leaf then issuer.
    pub chain_pem: String,
    pub serial_hex: String,
}

#[derive(Debug, Clone)]
pub struct RevokedEntry {
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<rcgen::RevocationReason>,
}

/// A positive serial of 128 random bits (RFC 5280 allows up to 20 octets; ≥ 64 bits of entropy is the
/// CA/B Forum floor).
fn random_serial() -> Result<(SerialNumber, String), PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x10;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, org);
    d.push(DnType::CommonName, cn);
    d
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn ca_params(
    cn: &str,
    org: &str,
    constraint: BasicConstraints,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    crl_url: Option<String>,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(cn, org);
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(random_serial()?.0);
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    if let Some(u) = crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![u] }];
    }
    Ok(p)
}

/// Root CA (self-signed) and an intermediate CA (path length 0) signed by it. With `crl_base_url`, the
/// intermediate carries the root's CRL distribution point `{base}/root-ca.crl.pem`.
pub fn create_community(
    name: &str,
    key: KeyKind,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    crl_base_url: Option<&str>,
) -> Result<Community, PkiError> {
    if not_after <= not_before {
        return Err(PkiError::Invalid(
            "not_after must be after not_before".into(),
        ));
    }
    let root_key = key.generate()?;
    let root_params = ca_params(
        &format!("{name} Root CA"),
        name,
        BasicConstraints::Unconstrained,
        not_before,
        not_after,
        None,
    )?;
    let root = root_params.self_signed(&root_key)?;
    let inter_key = key.generate()?;
    let inter_params = ca_params(
        &format!("{name} Intermediate CA"),
        name,
        BasicConstraints::Constrained(0),
        not_before,
        not_after,
        crl_base_url.map(|b| format!("{}/root-ca.crl.pem", b.trim_end_matches('/'))),
    )?;
    let root_issuer = Issuer::new(root_params, &root_key);
    let inter = inter_params.signed_by(&inter_key, &root_issuer)?;
    let _ = slug;
    Ok(Community {
        root_cert_pem: root.pem(),
        root_key_pem: root_key.serialize_pem(),
        intermediate_cert_pem: inter.pem(),
        intermediate_key_pem: inter_key.serialize_pem(),
    })
}

/// Issue an end-entity certificate from a CA (normally the community's intermediate).
/// `crl_url`, when given, becomes the certificate's CRL distribution point.
pub fn issue_end_entity(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    req: &EndEntityRequest,
) -> Result<IssuedCert, PkiError> {
    issue_end_entity_with_crl(issuer_cert_pem, issuer_key_pem, req, None)
}

pub fn issue_end_entity_with_crl(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    req: &EndEntityRequest,
    crl_url: Option<&str>,
) -> Result<IssuedCert, PkiError> {
    if req.not_after <= req.not_before {
        return Err(PkiError::Invalid(
            "not_after must be after not_before".into(),
        ));
    }
    let needs_uri = matches!(
        req.usage,
        EndEntityUsage::UdapClient | EndEntityUsage::UdapServer
    );
    if needs_uri && req.san_uris.is_empty() {
        return Err(PkiError::Invalid(
            "a UDAP certificate needs a URI SAN".into(),
        ));
    }
    if req.usage == EndEntityUsage::TlsServer
        && req.dns_names.is_empty()
        && req.ip_addresses.is_empty()
    {
        return Err(PkiError::Invalid(
            "a TLS server certificate needs a DNS or IP SAN".into(),
        ));
    }
    for u in &req.san_uris {
        if url::Url::parse(u).is_err() {
            return Err(PkiError::Invalid(format!("`{u}` is not an absolute URI")));
        }
    }
    let issuer_key = KeyPair::from_pem(issuer_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, issuer_key)?;
    let key = req.key.generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(&req.common_name, "Bluegate test PKI");
    let mut sans = Vec::new();
    for u in &req.san_uris {
        sans.push(SanType::URI(u.clone().try_into()?));
    }
    for d in &req.dns_names {
        sans.push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in &req.ip_addresses {
        sans.push(SanType::IpAddress(*ip));
    }
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if req.usage == EndEntityUsage::TlsServer && req.key == KeyKind::Rsa2048 {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = match req.usage {
        EndEntityUsage::TlsServer => vec![ExtendedKeyUsagePurpose::ServerAuth],
        EndEntityUsage::UdapClient => vec![ExtendedKeyUsagePurpose::ClientAuth],
        EndEntityUsage::UdapServer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    p.not_before = req.not_before;
    p.not_after = req.not_after;
    let (serial, serial_hex) = random_serial()?;
    p.serial_number = Some(serial);
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    if let Some(u) = crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![u.to_string()],
        }];
    }
    let cert = p.signed_by(&key, &issuer)?;
    let cert_pem = cert.pem();
    let mut chain_pem = cert_pem.clone();
    chain_pem.push_str(issuer_cert_pem.trim_end());
    chain_pem.push('\n');
    Ok(IssuedCert {
        cert_pem,
        key_pem: key.serialize_pem(),
        chain_pem,
        serial_hex,
    })
}

/// A CRL signed by `issuer`, listing `revoked`.
pub fn make_crl(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, PkiError> {
    let issuer_key = KeyPair::from_pem(issuer_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, issuer_key)?;
    let mut revoked_certs = Vec::new();
    for r in revoked {
        let bytes = hex::decode(r.serial_hex.trim_start_matches("0x"))
            .map_err(|_| PkiError::Invalid(format!("`{}` is not a hex serial", r.serial_hex)))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: r.revoked_at,
            reason_code: r.reason,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&issuer)?.pem()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::time::Duration;
    use aws_lc_rs::signature as sig;
    use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};
    use x509_parser::x509::SubjectPublicKeyInfo;

    /// Verify an X.509 signature with aws-lc-rs directly (independent of rcgen's signing path).
    fn verify(tbs: &[u8], signature: &[u8], issuer: &SubjectPublicKeyInfo<'_>) -> bool {
        let key = issuer.subject_public_key.data.as_ref();
        let rsa = issuer.algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
        let alg: &dyn sig::VerificationAlgorithm = if rsa {
            &sig::RSA_PKCS1_2048_8192_SHA256
        } else {
            &sig::ECDSA_P256_SHA256_ASN1
        };
        sig::UnparsedPublicKey::new(alg, key)
            .verify(tbs, signature)
            .is_ok()
    }

    fn check(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
        verify(
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
            issuer.public_key(),
        )
    }

    fn der(pem: &str) -> Vec<u8> {
        crate::certs::pem_certs(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn community_leaf_chains_and_carries_its_san() {
        let now = OffsetDateTime::now_utc();
        for kind in [KeyKind::P256, KeyKind::Rsa2048] {
            let c = create_community(
                "Test",
                kind,
                now - Duration::hours(1),
                now + Duration::days(10),
                None,
            )
            .unwrap();
            let leaf = issue_end_entity(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                &EndEntityRequest {
                    common_name: "app".into(),
                    san_uris: vec!["https://app.example/".into()],
                    dns_names: vec![],
                    ip_addresses: vec![],
                    key: kind,
                    not_before: now - Duration::hours(1),
                    not_after: now + Duration::days(1),
                    usage: EndEntityUsage::UdapClient,
                },
            )
            .unwrap();
            let root_der = der(&c.root_cert_pem);
            let inter_der = der(&c.intermediate_cert_pem);
            let leaf_der = der(&leaf.cert_pem);
            let (_, root) = X509Certificate::from_der(&root_der).unwrap();
            let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
            let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
            // Signatures: leaf by intermediate, intermediate by root, root by itself.
            assert!(check(&cert, &inter));
            assert!(check(&inter, &root));
            assert!(check(&root, &root));
            assert!(!check(&cert, &root));
            assert!(inter.is_ca() && root.is_ca() && !cert.is_ca());
            let info = crate::certs::leaf_info(&leaf_der).unwrap();
            assert_eq!(info.san_uris, vec!["https://app.example/"]);
            assert_eq!(leaf.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
            assert_eq!(hex::encode(cert.raw_serial()), leaf.serial_hex);
        }
    }

    #[test]
    fn udap_leaf_without_uri_is_refused() {
        let now = OffsetDateTime::now_utc();
        let c = create_community("T", KeyKind::P256, now, now + Duration::days(1), None).unwrap();
        let err = issue_end_entity(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &EndEntityRequest {
                common_name: "x".into(),
                san_uris: vec![],
                dns_names: vec![],
                ip_addresses: vec![],
                key: KeyKind::P256,
                not_before: now,
                not_after: now + Duration::days(1),
                usage: EndEntityUsage::UdapClient,
            },
        );
        assert!(matches!(err, Err(PkiError::Invalid(_))));
    }

    #[test]
    fn crl_lists_revoked_serials_and_is_signed_by_the_issuer() {
        let now = OffsetDateTime::now_utc();
        let c = create_community(
            "T",
            KeyKind::P256,
            now - Duration::hours(1),
            now + Duration::days(1),
            None,
        )
        .unwrap();
        let pem = make_crl(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &[RevokedEntry {
                serial_hex: "1a2b3c".into(),
                revoked_at: now,
                reason: None,
            }],
            7,
            now,
            now + Duration::days(1),
        )
        .unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        let crl_der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&crl_der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec!["1a2b3c"]);
        let inter_der = der(&c.intermediate_cert_pem);
        let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
        assert!(verify(
            crl.tbs_cert_list.as_ref(),
            &crl.signature_value.data,
            inter.public_key()
        ));
        assert!(make_crl(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &[],
            1,
            now,
            now
        )
        .is_err());
    }
}
