//! Test trust communities: a root CA, an intermediate CA, end-entity certificates with URI SANs, and CRLs.
//! This is tooling for development and conformance testing (`bluegate pki`), not a production CA.
//!
//! Layout and names follow the CLI's files: the root is `root-ca`, the intermediate `intermediate-ca`, and
//! their CRLs `root-ca.crl.pem` / `intermediate-ca.crl.pem`. A community created with a CRL base URL names
//! `{base}/root-ca.crl.pem` in the intermediate and `{base}/intermediate-ca.crl.pem` in the leaves issued
//! through [`Community::issue_end_entity`] (the CLI passes the same URL to [`issue_end_entity_with_crl`]),
//! so relying parties can fetch revocation data for every certificate below the anchor.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Name of the root CA: its files and its CRL (`{crl_base_url}/root-ca.crl.pem`).
pub const ROOT_CA_NAME: &str = "root-ca";
/// Name of the intermediate CA: its files and its CRL (`{crl_base_url}/intermediate-ca.crl.pem`).
pub const INTERMEDIATE_CA_NAME: &str = "intermediate-ca";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not a usable certificate: {0}")]
    BadCertificate(&'static str),
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
    /// The CRL base URL the community was created with, without a trailing slash.
    pub crl_base_url: Option<String>,
}

impl Community {
    /// Issue an end-entity certificate from the intermediate; with a CRL base URL it names
    /// `{base}/intermediate-ca.crl.pem` as its CRL distribution point.
    pub fn issue_end_entity(&self, req: &EndEntityRequest) -> Result<IssuedCert, PkiError> {
        let crl = self
            .crl_base_url
            .as_deref()
            .map(|b| crl_url(b, INTERMEDIATE_CA_NAME));
        issue_end_entity_with_crl(
            &self.intermediate_cert_pem,
            &self.intermediate_key_pem,
            req,
            crl.as_deref(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndEntityUsage {
    /// TLS server: DNS/IP SANs, serverAuth (+ keyEncipherment for RSA).
    TlsServer,
    /// UDAP client (software statements, client assertions): URI SAN, clientAuth.
    UdapClient,
    /// UDAP server (signed metadata, Tiered OAuth): URI SAN = FHIR base; serverAuth and clientAuth.
    UdapServer,
}

#[derive(Debug, Clone)]
pub struct EndEntityRequest {
    pub common_name: String,
    /// Absolute URIs; at least one for the UDAP usages (it is the entity's identity, UC-1).
    pub san_uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub key: KeyKind,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub usage: EndEntityUsage,
}

/// An issued certificate. `key_pem` is the PKCS#8 private key: a secret.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Leaf then issuer (the issuer PEM's certificates, re-encoded).
    pub chain_pem: String,
    /// The serial number as lowercase hex, as in [`CertInfo::serial_hex`] and [`RevokedEntry`].
    pub serial_hex: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial_hex", &self.serial_hex)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Hex serial (`0x` prefix, `:` separators and leading zeros are tolerated).
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<rcgen::RevocationReason>,
}

/// What the CLI and the server show about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 form.
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex of the (positive) serial number, without sign padding.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub san_uris: Vec<String>,
    pub san_dns: Vec<String>,
    pub san_ips: Vec<IpAddr>,
    pub crl_distribution_points: Vec<String>,
    pub is_ca: bool,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub sha256_fingerprint: String,
}

/// `{base}/{issuer_name}.crl.pem`, the CRL distribution point convention of this module and the CLI (which
/// writes `{issuer_name}.crl.pem` files that a plain file server can publish).
pub fn crl_url(base: &str, issuer_name: &str) -> String {
    format!("{}/{issuer_name}.crl.pem", base.trim_end_matches('/'))
}

/// A positive serial of 128 bits, 122 of them random (RFC 5280 allows up to 20 octets; ≥ 64 bits of
/// entropy is the CA/B Forum floor). The first octet is 0x10..=0x7f: positive, never sign-padded, and
/// always 16 octets, so the hex form is stable.
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

fn check_validity(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<(), PkiError> {
    if not_after <= not_before {
        return Err(PkiError::Invalid(
            "not_after must be after not_before".into(),
        ));
    }
    Ok(())
}

/// An http(s) URL without whitespace, usable as a CRL distribution point base.
fn check_crl_base(base: &str) -> Result<(), PkiError> {
    let ok = base.chars().all(|c| c.is_ascii_graphic())
        && url::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !ok {
        return Err(PkiError::Invalid(format!(
            "the CRL base URL `{}` is not an absolute http(s) URL",
            base.escape_debug()
        )));
    }
    Ok(())
}

/// An absolute URI for a SAN: printable ASCII only (IA5String, no whitespace: `Url::parse` would silently
/// trim it and the certificate would then carry a different identity than the one checked), with a scheme.
fn check_san_uri(u: &str) -> Result<(), PkiError> {
    if u.is_empty() || !u.chars().all(|c| c.is_ascii_graphic()) || url::Url::parse(u).is_err() {
        return Err(PkiError::Invalid(format!(
            "`{}` is not an absolute URI",
            u.escape_debug()
        )));
    }
    Ok(())
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

/// Root CA (self-signed, CA:TRUE, keyCertSign + cRLSign) and an intermediate CA (CA:TRUE, path length 0)
/// signed by it. With `crl_base_url` (an http(s) URL), the intermediate names `{base}/root-ca.crl.pem` as
/// its CRL distribution point and [`Community::issue_end_entity`] gives leaves
/// `{base}/intermediate-ca.crl.pem`.
pub fn create_community(
    name: &str,
    key: KeyKind,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    crl_base_url: Option<&str>,
) -> Result<Community, PkiError> {
    check_validity(not_before, not_after)?;
    if name.trim().is_empty() {
        return Err(PkiError::Invalid("a community needs a name".into()));
    }
    let crl_base_url = match crl_base_url {
        Some(b) => {
            check_crl_base(b)?;
            Some(b.trim_end_matches('/').to_string())
        }
        None => None,
    };
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
        crl_base_url.as_deref().map(|b| crl_url(b, ROOT_CA_NAME)),
    )?;
    let root_issuer = Issuer::new(root_params, &root_key);
    let inter = inter_params.signed_by(&inter_key, &root_issuer)?;
    Ok(Community {
        root_cert_pem: root.pem(),
        root_key_pem: root_key.serialize_pem(),
        intermediate_cert_pem: inter.pem(),
        intermediate_key_pem: inter_key.serialize_pem(),
        crl_base_url,
    })
}

/// A CA ready to sign: its certificate is a CA and its private key belongs to it.
struct LoadedIssuer {
    issuer: Issuer<'static, KeyPair>,
    /// The issuer PEM's certificates, DER, the CA first.
    certs: Vec<Vec<u8>>,
}

fn load_issuer(cert_pem: &str, key_pem: &str) -> Result<LoadedIssuer, PkiError> {
    let certs = parse_pem_certs(cert_pem)?;
    let ca_der = &certs[0];
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|_| PkiError::BadCertificate("the issuer certificate does not parse"))?;
    if !ca.is_ca() {
        return Err(PkiError::Invalid(
            "the issuer certificate is not a CA".into(),
        ));
    }
    let key = KeyPair::from_pem(key_pem)
        .map_err(|_| PkiError::Invalid("the issuer key is not a PEM private key".into()))?;
    if key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
        return Err(PkiError::Invalid(
            "the issuer key does not belong to the issuer certificate".into(),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), key)?;
    Ok(LoadedIssuer { issuer, certs })
}

/// Issue an end-entity certificate from a CA (normally the community's intermediate), without a CRL
/// distribution point. The issuer certificate must be a CA and `issuer_key_pem` its key.
pub fn issue_end_entity(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    req: &EndEntityRequest,
) -> Result<IssuedCert, PkiError> {
    issue_end_entity_with_crl(issuer_cert_pem, issuer_key_pem, req, None)
}

/// [`issue_end_entity`] with a CRL distribution point URI (e.g. [`crl_url`]`(base, INTERMEDIATE_CA_NAME)`).
pub fn issue_end_entity_with_crl(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    req: &EndEntityRequest,
    crl_url: Option<&str>,
) -> Result<IssuedCert, PkiError> {
    check_request(req)?;
    if let Some(u) = crl_url {
        check_san_uri(u)?;
    }
    let loaded = load_issuer(issuer_cert_pem, issuer_key_pem)?;
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
    let cert = p.signed_by(&key, &loaded.issuer)?;
    let cert_pem = cert.pem();
    let mut chain_pem = cert_pem.clone();
    for der in &loaded.certs {
        chain_pem.push_str(&pem_encode("CERTIFICATE", der));
    }
    Ok(IssuedCert {
        cert_pem,
        key_pem: key.serialize_pem(),
        chain_pem,
        serial_hex,
    })
}

/// A TLS server certificate for `dns_names` / `ip_addresses` (the first one is the CN).
pub fn issue_tls_server(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    key: KeyKind,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<IssuedCert, PkiError> {
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ip_addresses.first().map(IpAddr::to_string))
        .ok_or_else(|| {
            PkiError::Invalid("a TLS server certificate needs a DNS or IP SAN".into())
        })?;
    issue_end_entity(
        issuer_cert_pem,
        issuer_key_pem,
        &EndEntityRequest {
            common_name,
            san_uris: Vec::new(),
            dns_names: dns_names.to_vec(),
            ip_addresses: ip_addresses.to_vec(),
            key,
            not_before,
            not_after,
            usage: EndEntityUsage::TlsServer,
        },
    )
}

fn check_request(req: &EndEntityRequest) -> Result<(), PkiError> {
    check_validity(req.not_before, req.not_after)?;
    if req.common_name.trim().is_empty() {
        return Err(PkiError::Invalid("the common name is empty".into()));
    }
    let udap = matches!(
        req.usage,
        EndEntityUsage::UdapClient | EndEntityUsage::UdapServer
    );
    if udap && req.san_uris.is_empty() {
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
        check_san_uri(u)?;
    }
    for d in &req.dns_names {
        let ok = !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
        if !ok {
            return Err(PkiError::Invalid(format!(
                "`{}` is not a DNS name",
                d.escape_debug()
            )));
        }
    }
    Ok(())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A serial number given as hex, as its minimal positive big-endian bytes.
fn parse_serial_hex(s: &str) -> Result<Vec<u8>, PkiError> {
    let bad = || PkiError::Invalid(format!("`{}` is not a hex serial number", s.escape_debug()));
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let mut digits: String = t.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    if digits.len() % 2 == 1 {
        digits.insert(0, '0');
    }
    let bytes = hex::decode(&digits).map_err(|_| bad())?;
    let first = bytes.iter().position(|b| *b != 0).ok_or_else(bad)?;
    let bytes = bytes[first..].to_vec();
    // RFC 5280 §4.1.2.2: at most 20 octets (counting a sign octet).
    let encoded_len = bytes.len() + usize::from(bytes[0] & 0x80 != 0);
    if encoded_len > 20 {
        return Err(bad());
    }
    Ok(bytes)
}

/// A CRL signed by `issuer` (which must be a CA holding the key), listing `revoked` (duplicates are
/// listed once), as PEM.
pub fn make_crl(
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, PkiError> {
    if next_update <= this_update {
        return Err(PkiError::Invalid(
            "next_update must be after this_update".into(),
        ));
    }
    let loaded = load_issuer(issuer_cert_pem, issuer_key_pem)?;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut revoked_certs = Vec::new();
    for r in revoked {
        let bytes = parse_serial_hex(&r.serial_hex)?;
        if seen.contains(&bytes) {
            continue;
        }
        seen.push(bytes.clone());
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
    Ok(params.signed_by(&loaded.issuer)?.pem()?)
}

/// The DER certificates of a PEM text, in order (other PEM sections, such as keys, are skipped).
pub fn parse_pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::BadCertificate("the PEM text does not parse"))?;
    if certs.is_empty() {
        return Err(PkiError::BadCertificate("no PEM certificate found"));
    }
    Ok(certs)
}

fn distribution_points(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            out.push(u.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

fn time_of(t: x509_parser::time::ASN1Time) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|_| PkiError::BadCertificate("a validity date is out of range"))
}

/// Subject, issuer, serial, validity, SANs, CA flag and SHA-256 fingerprint of a certificate given as PEM
/// (the first certificate) or DER.
pub fn cert_info(pem_or_der: &[u8]) -> Result<CertInfo, PkiError> {
    let der = if pem_or_der.trim_ascii_start().starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(pem_or_der)
            .map_err(|_| PkiError::BadCertificate("the PEM text is not UTF-8"))?;
        parse_pem_certs(text)?.swap_remove(0)
    } else {
        pem_or_der.to_vec()
    };
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|_| PkiError::BadCertificate("not an X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(PkiError::BadCertificate(
            "trailing data after the certificate",
        ));
    }
    let mut san_uris = Vec::new();
    let mut san_dns = Vec::new();
    let mut san_ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => san_uris.push(u.to_string()),
                GeneralName::DNSName(d) => san_dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => {
                        let b: [u8; 4] = [ip[0], ip[1], ip[2], ip[3]];
                        san_ips.push(IpAddr::from(b));
                    }
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        san_ips.push(IpAddr::from(b));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let raw_serial = cert.raw_serial();
    let first = raw_serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw_serial.len().saturating_sub(1));
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: hex::encode(&raw_serial[first..]),
        not_before: time_of(cert.validity().not_before)?,
        not_after: time_of(cert.validity().not_after)?,
        san_uris,
        san_dns,
        san_ips,
        crl_distribution_points: distribution_points(&cert),
        is_ca: cert.is_ca(),
        sha256_fingerprint: hex::encode(Sha256::digest(&der)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::time::Duration;
    use aws_lc_rs::signature as sig;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use x509_parser::prelude::{CertificateRevocationList, X509Certificate};
    use x509_parser::x509::SubjectPublicKeyInfo;

    const OPENSSL: &str = "/usr/bin/openssl";

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

    fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
        verify(
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
            issuer.public_key(),
        )
    }

    fn der(pem: &str) -> Vec<u8> {
        parse_pem_certs(pem).unwrap().remove(0)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn community(kind: KeyKind, crl: Option<&str>) -> Community {
        create_community(
            "Test",
            kind,
            now() - Duration::hours(1),
            now() + Duration::days(10),
            crl,
        )
        .unwrap()
    }

    fn udap_client(kind: KeyKind, uri: &str) -> EndEntityRequest {
        EndEntityRequest {
            common_name: "app".into(),
            san_uris: vec![uri.into()],
            dns_names: vec![],
            ip_addresses: vec![],
            key: kind,
            not_before: now() - Duration::hours(1),
            not_after: now() + Duration::days(1),
            usage: EndEntityUsage::UdapClient,
        }
    }

    /// A scratch directory for OpenSSL, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Option<Scratch> {
            if !Path::new(OPENSSL).exists() {
                eprintln!("skipped the OpenSSL cross-check: no {OPENSSL}");
                return None;
            }
            let nonce = hex::encode(random_serial().ok()?.1.as_bytes().get(..6)?);
            let dir = std::env::temp_dir().join(format!("bluegate-pki-{tag}-{nonce}"));
            std::fs::create_dir_all(&dir).ok()?;
            Some(Scratch(dir))
        }
        fn file(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn openssl(args: &[&str]) -> (bool, String) {
        let out = Command::new(OPENSSL).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn community_leaf_chains_to_the_root_and_carries_its_san() {
        for kind in [KeyKind::P256, KeyKind::Rsa2048] {
            let c = community(kind, None);
            let leaf = issue_end_entity(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                &udap_client(kind, "https://app.example/"),
            )
            .unwrap();
            let root_der = der(&c.root_cert_pem);
            let inter_der = der(&c.intermediate_cert_pem);
            let leaf_der = der(&leaf.cert_pem);
            let (_, root) = X509Certificate::from_der(&root_der).unwrap();
            let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
            let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
            // Signatures: leaf by intermediate, intermediate by root, root by itself; name chaining.
            assert!(signed_by(&cert, &inter));
            assert!(signed_by(&inter, &root));
            assert!(signed_by(&root, &root));
            assert!(!signed_by(&cert, &root));
            assert_eq!(cert.issuer(), inter.subject());
            assert_eq!(inter.issuer(), root.subject());
            // CA flags and path length.
            assert!(root.is_ca() && inter.is_ca() && !cert.is_ca());
            let bc = inter.basic_constraints().unwrap().unwrap().value;
            assert_eq!(bc.path_len_constraint, Some(0));
            let ku = root.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.crl_sign());
            let ku = cert.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_cert_sign());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            // SAN, serial and chain.
            let info = cert_info(leaf.cert_pem.as_bytes()).unwrap();
            assert_eq!(info.san_uris, vec!["https://app.example/"]);
            assert!(!info.is_ca);
            assert_eq!(info.serial_hex, leaf.serial_hex);
            assert_eq!(hex::encode(cert.raw_serial()), leaf.serial_hex);
            assert_eq!(
                parse_pem_certs(&leaf.chain_pem).unwrap(),
                vec![leaf_der.clone(), inter_der.clone()]
            );
            assert!(c.crl_base_url.is_none());
            assert!(info.crl_distribution_points.is_empty());
            // The leaf key is a PKCS#8 PEM that signs JWTs whose key the certificate carries.
            let alg = match kind {
                KeyKind::P256 => crate::jose::Alg::ES256,
                KeyKind::Rsa2048 => crate::jose::Alg::RS256,
            };
            let jwk = crate::jose::SigningKey::from_pem(Some(alg), &leaf.key_pem).unwrap();
            assert_eq!(jwk.public_spki_der(), cert.public_key().raw);
            assert!(!format!("{leaf:?}").contains("PRIVATE"));
        }
    }

    #[test]
    fn openssl_verifies_the_chain_independently() {
        let Some(dir) = Scratch::new("verify") else {
            return;
        };
        for kind in [KeyKind::P256, KeyKind::Rsa2048] {
            let c = community(kind, None);
            let leaf = c
                .issue_end_entity(&udap_client(kind, "https://app.example/"))
                .unwrap();
            let root = dir.file("root.pem", &c.root_cert_pem);
            let inter = dir.file("inter.pem", &c.intermediate_cert_pem);
            let leaf_path = dir.file("leaf.pem", &leaf.cert_pem);
            let (ok, text) = openssl(&[
                "verify",
                "-x509_strict",
                "-CAfile",
                &root,
                "-untrusted",
                &inter,
                &leaf_path,
            ]);
            assert!(ok, "{text}");
            assert!(text.contains(": OK"), "{text}");
            // Without the intermediate, or against another community's root, it does not verify.
            let (ok, _) = openssl(&["verify", "-CAfile", &root, &leaf_path]);
            assert!(!ok);
            let other = community(kind, None);
            let other_root = dir.file("other.pem", &other.root_cert_pem);
            let (ok, _) = openssl(&[
                "verify",
                "-CAfile",
                &other_root,
                "-untrusted",
                &inter,
                &leaf_path,
            ]);
            assert!(!ok);
            // The URI SAN as OpenSSL reads it.
            let (ok, text) = openssl(&[
                "x509",
                "-noout",
                "-ext",
                "subjectAltName",
                "-in",
                &leaf_path,
            ]);
            assert!(ok && text.contains("URI:https://app.example/"), "{text}");
            // TLS server certificates verify for their purpose.
            let tls = issue_tls_server(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                &["localhost".to_string()],
                &["127.0.0.1".parse().unwrap()],
                kind,
                now() - Duration::hours(1),
                now() + Duration::days(1),
            )
            .unwrap();
            let tls_path = dir.file("tls.pem", &tls.cert_pem);
            let (ok, text) = openssl(&[
                "verify",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                &root,
                "-untrusted",
                &inter,
                &tls_path,
            ]);
            assert!(ok, "{text}");
        }
    }

    #[test]
    fn tls_and_udap_server_certificates_have_their_usages() {
        let c = community(KeyKind::Rsa2048, None);
        let tls = issue_tls_server(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            KeyKind::Rsa2048,
            now(),
            now() + Duration::days(1),
        )
        .unwrap();
        let d = der(&tls.cert_pem);
        let (_, cert) = X509Certificate::from_der(&d).unwrap();
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let info = cert_info(&d).unwrap();
        assert_eq!(info.san_dns, vec!["localhost"]);
        assert_eq!(
            info.san_ips,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(info.subject.contains("CN=localhost"), "{}", info.subject);
        assert!(info.issuer.contains("Intermediate CA"), "{}", info.issuer);
        assert_eq!(info.sha256_fingerprint, hex::encode(Sha256::digest(&d)));
        assert_eq!(info.sha256_fingerprint.len(), 64);
        let mut req = udap_client(KeyKind::P256, "https://fhir.example/fhir");
        req.usage = EndEntityUsage::UdapServer;
        let server = c.issue_end_entity(&req).unwrap();
        let d = der(&server.cert_pem);
        let (_, cert) = X509Certificate::from_der(&d).unwrap();
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment());
        assert!(!cert.is_ca());
        assert_eq!(
            cert_info(server.cert_pem.as_bytes()).unwrap().san_uris,
            vec!["https://fhir.example/fhir"]
        );
    }

    #[test]
    fn serials_are_random_positive_and_at_least_64_bits() {
        let c = community(KeyKind::P256, None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            let leaf = c
                .issue_end_entity(&udap_client(KeyKind::P256, "urn:example:app"))
                .unwrap();
            let bytes = hex::decode(&leaf.serial_hex).unwrap();
            assert_eq!(bytes.len(), 16);
            assert!(bytes[0] & 0x80 == 0 && bytes[0] != 0);
            assert!(seen.insert(leaf.serial_hex));
        }
    }

    #[test]
    fn crl_distribution_points_follow_the_community_layout() {
        let c = community(KeyKind::P256, Some("http://crl.example/test/"));
        assert_eq!(c.crl_base_url.as_deref(), Some("http://crl.example/test"));
        let root = cert_info(c.root_cert_pem.as_bytes()).unwrap();
        assert!(root.crl_distribution_points.is_empty());
        let inter = cert_info(c.intermediate_cert_pem.as_bytes()).unwrap();
        assert_eq!(
            inter.crl_distribution_points,
            vec!["http://crl.example/test/root-ca.crl.pem"]
        );
        let expected = vec!["http://crl.example/test/intermediate-ca.crl.pem".to_string()];
        let via_community = c
            .issue_end_entity(&udap_client(KeyKind::P256, "https://app.example/"))
            .unwrap();
        assert_eq!(
            cert_info(via_community.cert_pem.as_bytes())
                .unwrap()
                .crl_distribution_points,
            expected
        );
        // The CLI path: PEM files and the URL it keeps in its index.
        let via_files = issue_end_entity_with_crl(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &udap_client(KeyKind::P256, "https://app.example/"),
            Some(&crl_url("http://crl.example/test", INTERMEDIATE_CA_NAME)),
        )
        .unwrap();
        assert_eq!(
            cert_info(via_files.cert_pem.as_bytes())
                .unwrap()
                .crl_distribution_points,
            expected
        );
        // Plain issue: no distribution point; a malformed one is refused.
        let none = issue_end_entity(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &udap_client(KeyKind::P256, "https://app.example/"),
        )
        .unwrap();
        assert!(matches!(
            issue_end_entity_with_crl(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                &udap_client(KeyKind::P256, "https://app.example/"),
                Some("not a url"),
            ),
            Err(PkiError::Invalid(_))
        ));
        assert!(cert_info(none.cert_pem.as_bytes())
            .unwrap()
            .crl_distribution_points
            .is_empty());
        assert_eq!(
            crl_url("https://x/", "root-ca"),
            "https://x/root-ca.crl.pem"
        );
        // A CRL base must be an http(s) URL.
        for bad in ["ftp://crl.example/", "crl.example", "http://crl example/"] {
            assert!(matches!(
                create_community(
                    "T",
                    KeyKind::P256,
                    now(),
                    now() + Duration::days(1),
                    Some(bad)
                ),
                Err(PkiError::Invalid(_))
            ));
        }
    }

    #[test]
    fn invalid_requests_are_refused() {
        let c = community(KeyKind::P256, None);
        let issue_req = |req: &EndEntityRequest| {
            issue_end_entity(&c.intermediate_cert_pem, &c.intermediate_key_pem, req)
        };
        let invalid = |r: Result<IssuedCert, PkiError>| matches!(r, Err(PkiError::Invalid(_)));
        // UDAP without a URI SAN; relative, spaced or non-ASCII URIs.
        let mut req = udap_client(KeyKind::P256, "https://app.example/");
        req.san_uris.clear();
        assert!(invalid(issue_req(&req)));
        req.usage = EndEntityUsage::UdapServer;
        assert!(invalid(issue_req(&req)));
        for bad in [
            "app.example/x",
            "/relative",
            " https://app.example/",
            "https://app.example/ x",
            "https://app.example/\n",
            "https://äpp.example/",
            "",
        ] {
            let r = udap_client(KeyKind::P256, bad);
            assert!(invalid(issue_req(&r)), "{bad:?}");
        }
        // TLS without DNS/IP, bad DNS names.
        let mut tls = udap_client(KeyKind::P256, "https://app.example/");
        tls.usage = EndEntityUsage::TlsServer;
        assert!(invalid(issue_req(&tls)));
        tls.dns_names = vec!["local host".into()];
        assert!(invalid(issue_req(&tls)));
        // Validity the wrong way round, empty CN.
        let mut r = udap_client(KeyKind::P256, "https://app.example/");
        r.not_after = r.not_before;
        assert!(invalid(issue_req(&r)));
        let mut r = udap_client(KeyKind::P256, "https://app.example/");
        r.common_name = " ".into();
        assert!(invalid(issue_req(&r)));
        let t = now();
        assert!(create_community("T", KeyKind::P256, t, t, None).is_err());
        assert!(create_community(" ", KeyKind::P256, t, t + Duration::days(1), None).is_err());
        // A leaf cannot issue; a CA's certificate with another CA's key cannot either.
        let leaf = c
            .issue_end_entity(&udap_client(KeyKind::P256, "https://app.example/"))
            .unwrap();
        let good = udap_client(KeyKind::P256, "https://other.example/");
        assert!(invalid(issue_end_entity(
            &leaf.cert_pem,
            &leaf.key_pem,
            &good
        )));
        assert!(invalid(issue_end_entity(
            &c.intermediate_cert_pem,
            &c.root_key_pem,
            &good
        )));
        assert!(issue_end_entity("junk", &c.intermediate_key_pem, &good).is_err());
        assert!(issue_end_entity(&c.intermediate_cert_pem, "junk", &good).is_err());
        // A chain PEM with a private key in it: only certificates reach the chain.
        let mixed = format!("{}{}", c.intermediate_cert_pem, c.intermediate_key_pem);
        let issued = issue_end_entity(&mixed, &c.intermediate_key_pem, &good).unwrap();
        assert!(!issued.chain_pem.contains("PRIVATE"));
        assert_eq!(parse_pem_certs(&issued.chain_pem).unwrap().len(), 2);
    }

    fn crl_der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn crl_lists_revoked_serials_and_is_signed_by_the_issuer() {
        for kind in [KeyKind::P256, KeyKind::Rsa2048] {
            let c = community(kind, None);
            let t = now();
            let pem = make_crl(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                &[
                    RevokedEntry {
                        serial_hex: "1a2b3c".into(),
                        revoked_at: t,
                        reason: Some(rcgen::RevocationReason::KeyCompromise),
                    },
                    RevokedEntry {
                        serial_hex: "0x1A:2B:3C".into(),
                        revoked_at: t,
                        reason: None,
                    },
                    RevokedEntry {
                        serial_hex: "abc".into(),
                        revoked_at: t,
                        reason: None,
                    },
                ],
                7,
                t,
                t + Duration::days(1),
            )
            .unwrap();
            let d = crl_der(&pem);
            let (_, crl) = CertificateRevocationList::from_der(&d).unwrap();
            let serials: Vec<String> = crl
                .iter_revoked_certificates()
                .map(|r| hex::encode(r.raw_serial()))
                .collect();
            assert_eq!(serials, vec!["1a2b3c", "0abc"], "duplicates listed once");
            assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
            let inter_der = der(&c.intermediate_cert_pem);
            let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
            assert_eq!(crl.issuer(), inter.subject());
            assert!(verify(
                crl.tbs_cert_list.as_ref(),
                &crl.signature_value.data,
                inter.public_key()
            ));
            let root_der = der(&c.root_cert_pem);
            let (_, root) = X509Certificate::from_der(&root_der).unwrap();
            assert!(!verify(
                crl.tbs_cert_list.as_ref(),
                &crl.signature_value.data,
                root.public_key()
            ));
        }
    }

    #[test]
    fn crl_requests_are_checked() {
        let c = community(KeyKind::P256, None);
        let t = now();
        let entry = |s: &str| RevokedEntry {
            serial_hex: s.into(),
            revoked_at: t,
            reason: None,
        };
        let crl = |revoked: &[RevokedEntry], next: OffsetDateTime| {
            make_crl(
                &c.intermediate_cert_pem,
                &c.intermediate_key_pem,
                revoked,
                1,
                t,
                next,
            )
        };
        assert!(crl(&[], t).is_err(), "next_update == this_update");
        assert!(crl(&[], t - Duration::seconds(1)).is_err());
        assert!(
            crl(&[], t + Duration::days(1)).is_ok(),
            "an empty CRL is fine"
        );
        for bad in ["", "xyz", "00", "0x", &"7f".repeat(21)] {
            assert!(
                matches!(
                    crl(&[entry(bad)], t + Duration::days(1)),
                    Err(PkiError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(crl(&[entry(&"7f".repeat(20))], t + Duration::days(1)).is_ok());
        // Only a CA with its own key signs CRLs.
        let leaf = c
            .issue_end_entity(&udap_client(KeyKind::P256, "https://app.example/"))
            .unwrap();
        assert!(make_crl(
            &leaf.cert_pem,
            &leaf.key_pem,
            &[],
            1,
            t,
            t + Duration::days(1)
        )
        .is_err());
        assert!(make_crl(
            &c.root_cert_pem,
            &c.intermediate_key_pem,
            &[],
            1,
            t,
            t + Duration::days(1)
        )
        .is_err());
    }

    #[test]
    fn openssl_sees_the_revocation() {
        let Some(dir) = Scratch::new("crl") else {
            return;
        };
        let c = community(KeyKind::Rsa2048, None);
        let revoked = c
            .issue_end_entity(&udap_client(KeyKind::Rsa2048, "https://revoked.example/"))
            .unwrap();
        let fine = c
            .issue_end_entity(&udap_client(KeyKind::Rsa2048, "https://fine.example/"))
            .unwrap();
        let t = now() - Duration::minutes(5);
        let crl_pem = make_crl(
            &c.intermediate_cert_pem,
            &c.intermediate_key_pem,
            &[RevokedEntry {
                serial_hex: revoked.serial_hex.clone(),
                revoked_at: t,
                reason: Some(rcgen::RevocationReason::KeyCompromise),
            }],
            3,
            t,
            t + Duration::days(1),
        )
        .unwrap();
        let crl = dir.file("inter.crl.pem", &crl_pem);
        let root = dir.file("root.pem", &c.root_cert_pem);
        let inter = dir.file("inter.pem", &c.intermediate_cert_pem);
        let (ok, text) = openssl(&["crl", "-noout", "-text", "-in", &crl]);
        assert!(ok, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("serial number: {}", revoked.serial_hex)),
            "{text}"
        );
        assert!(text.contains("Key Compromise"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains(&fine.serial_hex),
            "{text}"
        );
        // Signature check by OpenSSL.
        let (ok, text) = openssl(&["crl", "-noout", "-CAfile", &inter, "-in", &crl]);
        assert!(ok && text.contains("verify OK"), "{text}");
        // Path validation with the CRL: the revoked leaf fails, the other passes.
        let verify_leaf = |leaf: &IssuedCert, name: &str| {
            let p = dir.file(name, &leaf.cert_pem);
            openssl(&[
                "verify",
                "-crl_check",
                "-CAfile",
                &root,
                "-untrusted",
                &inter,
                "-CRLfile",
                &crl,
                &p,
            ])
        };
        let (ok, text) = verify_leaf(&revoked, "revoked.pem");
        assert!(!ok && text.contains("revoked"), "{text}");
        let (ok, text) = verify_leaf(&fine, "fine.pem");
        assert!(ok, "{text}");
    }

    #[test]
    fn cert_info_reads_pem_and_der_and_refuses_junk() {
        let c = community(KeyKind::P256, None);
        let d = der(&c.root_cert_pem);
        let from_pem = cert_info(c.root_cert_pem.as_bytes()).unwrap();
        let from_der = cert_info(&d).unwrap();
        assert_eq!(from_pem, from_der);
        assert!(from_pem.is_ca);
        assert_eq!(from_pem.subject, from_pem.issuer);
        assert!(from_pem.subject.contains("CN=Test Root CA"));
        assert!(from_pem.not_before < from_pem.not_after);
        assert!((from_pem.not_after - (now() + Duration::days(10))).abs() < Duration::minutes(5));
        let mut trailing = d.clone();
        trailing.push(0);
        assert!(cert_info(&trailing).is_err());
        assert!(cert_info(b"junk").is_err());
        assert!(
            cert_info(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert!(parse_pem_certs("no pem here").is_err());
        assert!(
            parse_pem_certs(&c.root_key_pem).is_err(),
            "keys are not certificates"
        );
        // A serial with the high bit set is reported without its sign octet.
        assert_eq!(parse_serial_hex("00ff").unwrap(), vec![0xff]);
        assert_eq!(parse_serial_hex("F").unwrap(), vec![0x0f]);
    }
}
