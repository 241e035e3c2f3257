//! Trust communities: RFC 5280 path validation of an `x5c` chain against a community's anchors (never the
//! operating system's store), at a given time, with CRLs; and a cache of validated chains.
//!
//! Path building, signature checks, validity periods, basicConstraints/pathLen, name constraints and the
//! CRL look-up itself are rustls-webpki's. This module adds what UDAP asks on top (udap.md UC-*):
//!
//! - the leaf is an end entity, its keyUsage (when present) allows `digitalSignature`, it carries at least
//!   one `uniformResourceIdentifier` SAN, and its key is RSA ≥ 2048 (≤ 8192) or EC P-256 / P-384;
//! - **any** extended key usage, or none, is accepted (UC-4: the UDAP test kit's client certificates carry
//!   serverAuth + clientAuth + codeSigning + emailProtection, others carry none). webpki 0.103 takes an
//!   [`ExtendedKeyUsageValidator`]; ours accepts every well-formed EKU list;
//! - the community's revocation policy (see [`RevocationPolicy`] and
//!   [`CommunityBuilder::require_crl_for_every_issuer`]);
//! - a cache keyed by the exact `x5c` bytes and the community's contents ([`ChainCache`]).
//!
//! Nothing here reads the clock or the file system: the server passes bytes and the current time.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, ExtendedKeyUsageValidator,
    KeyPurposeIdIter, OwnedCertRevocationList, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::revocation_list::CertificateRevocationList;

/// Longest chain accepted in `x5c` (leaf included).
pub const MAX_CHAIN: usize = 10;
/// Largest single certificate accepted, in bytes of DER.
pub const MAX_CERT_DER: usize = 16 * 1024;
/// Default capacity of a [`ChainCache`].
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default longest time a validation is reused by a [`ChainCache`], in seconds.
pub const DEFAULT_CACHE_MAX_AGE: i64 = 3600;

/// Why a chain was refused. The messages say what is wrong without quoting certificate contents, so they
/// may be shown to the client's developer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("malformed certificate chain: {0}")]
    Malformed(&'static str),
    #[error(
        "the certificate chain is longer than {MAX_CHAIN} certificates or too complex to build"
    )]
    ChainTooLong,
    #[error("the leaf certificate has no uniformResourceIdentifier subject alternative name")]
    NoSanUri,
    #[error("a certificate in the chain has expired")]
    Expired,
    #[error("a certificate in the chain is not valid yet")]
    NotYetValid,
    #[error("the chain does not lead to a trust anchor of this community")]
    UnknownIssuer,
    #[error("a certificate in the chain is revoked")]
    Revoked,
    #[error("the revocation status of a certificate in the chain cannot be established")]
    RevocationUnknown,
    #[error("a signature in the chain does not verify")]
    BadSignature,
    #[error("a certificate in the chain uses an unsupported signature algorithm")]
    UnsupportedAlgorithm,
    #[error("the chain violates a path constraint (CA flag, path length or name constraints)")]
    PathConstraint,
    #[error("the leaf certificate is a CA certificate")]
    NotEndEntity,
    #[error("the leaf certificate's key usage does not allow digital signatures")]
    KeyUsage,
    #[error("unsupported leaf key: {0}")]
    UnsupportedKey(&'static str),
    #[error("the validation time is out of range")]
    InvalidTime,
    /// The community itself is unusable (bad anchor, CRL, ...): an operator error, not a client one.
    #[error("invalid trust community configuration: {0}")]
    Config(String),
}

/// What to do when the revocation status of a certificate in the chain cannot be established (no current
/// CRL from its issuer although one is expected, or only an expired one). udap.md decision 7: fail closed
/// by default, configurable per community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationPolicy {
    #[default]
    FailClosed,
    FailOpen,
}

/// The leaf's key, as far as JOSE algorithm matching needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKeyKind {
    Rsa { bits: usize },
    P256,
    P384,
}

/// Former name of [`LeafKeyKind`].
pub type LeafKey = LeafKeyKind;

/// Seals [`ValidatedLeaf`]: only this module can construct one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sealed;

/// A leaf whose chain validated against a community. Only [`validate_chain`] constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedLeaf {
    /// The leaf's SubjectPublicKeyInfo (DER): verify the JWT with this key.
    pub spki_der: Vec<u8>,
    /// Every `uniformResourceIdentifier` SAN of the leaf, in certificate order (never empty).
    pub san_uris: Vec<String>,
    /// The leaf's notAfter (unix seconds).
    pub not_after: i64,
    /// The earliest notAfter of the leaf and the intermediates of the validated path (unix seconds).
    pub chain_not_after: i64,
    /// The leaf's serial number: lower-case hex of the DER INTEGER content octets.
    pub serial_hex: String,
    /// SHA-256 of the leaf's DER.
    pub fingerprint_sha256: [u8; 32],
    pub key: LeafKeyKind,
    /// The URI of the community the chain validated against.
    pub community: String,
    _sealed: Sealed,
}

/// A CRL as loaded: webpki's form plus what the revocation-coverage check needs.
struct LoadedCrl {
    crl: CertRevocationList<'static>,
    der: Vec<u8>,
    issuer_raw: Vec<u8>,
    /// `None`: no issuingDistributionPoint, the CRL covers every certificate of its issuer.
    scope: Option<CrlScope>,
    this_update: i64,
    next_update: Option<i64>,
    number: Vec<u8>,
}

/// The parts of an issuingDistributionPoint extension that decide which certificates a CRL covers.
#[derive(Clone, PartialEq, Eq)]
struct CrlScope {
    uris: Vec<String>,
    only_user: bool,
    only_ca: bool,
    partial: bool,
}

impl LoadedCrl {
    /// Mirrors webpki's "authoritative" rule (rustls-webpki 0.103 `crl/types.rs`), conservatively: a CRL
    /// without an issuingDistributionPoint covers every certificate of its issuer; with one, the scope
    /// must include the certificate and a DP URI of the certificate must be among the IDP's URIs.
    fn covers(&self, issuer_raw: &[u8], cert_dps: &[String], is_ca: bool) -> bool {
        if self.issuer_raw != issuer_raw {
            return false;
        }
        let Some(scope) = &self.scope else {
            return true;
        };
        if scope.partial || (scope.only_ca && !is_ca) || (scope.only_user && is_ca) {
            return false;
        }
        cert_dps.is_empty() || cert_dps.iter().any(|u| scope.uris.contains(u))
    }
}

/// A trust community: anchors, extra intermediates, CRLs and the revocation policy. Built once from the
/// bytes of the configured files; rebuild (and [`ChainCache::invalidate_community`]) when they change.
pub struct Community {
    uri: String,
    anchors: Vec<TrustAnchor<'static>>,
    anchor_ders: Vec<Vec<u8>>,
    intermediates: Vec<CertificateDer<'static>>,
    crls: Vec<LoadedCrl>,
    policy: RevocationPolicy,
    strict_crls: bool,
    refresh_at: Option<i64>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Community")
            .field("uri", &self.uri)
            .field("anchors", &self.anchors.len())
            .field("intermediates", &self.intermediates.len())
            .field("crls", &self.crls.len())
            .field("policy", &self.policy)
            .field("require_crl_for_every_issuer", &self.strict_crls)
            .finish()
    }
}

fn has_pem_marker(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates from a PEM text (any number) or one DER certificate.
fn pem_or_der_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrustError> {
    if has_pem_marker(bytes) {
        crate::certs::pem_certs(bytes).map_err(|e| TrustError::Config(e.to_string()))
    } else if bytes.is_empty() {
        Err(TrustError::Config("empty certificate file".into()))
    } else {
        Ok(vec![bytes.to_vec()])
    }
}

fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, TrustError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateRevocationListDer;
    if has_pem_marker(bytes) {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map(|d| d.to_vec())
            .map_err(|_| TrustError::Config("no `X509 CRL` PEM block found".into()))
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parse a CRL, PEM (`-----BEGIN X509 CRL-----`) or DER. The signature is checked later, against the
/// issuer found while validating a chain.
pub fn parse_crl(bytes: &[u8]) -> Result<OwnedCertRevocationList, TrustError> {
    let der = crl_der(bytes)?;
    OwnedCertRevocationList::from_der(&der)
        .map_err(|e| TrustError::Config(format!("not a usable CRL: {e:?}")))
}

fn load_crl(der: Vec<u8>) -> Result<LoadedCrl, TrustError> {
    let owned = OwnedCertRevocationList::from_der(&der)
        .map_err(|e| TrustError::Config(format!("not a usable CRL: {e:?}")))?;
    let (rest, parsed) = CertificateRevocationList::from_der(&der)
        .map_err(|_| TrustError::Config("not a valid CRL".into()))?;
    if !rest.is_empty() {
        return Err(TrustError::Config("trailing data after the CRL".into()));
    }
    let mut scope = None;
    for ext in parsed.extensions() {
        if let ParsedExtension::IssuingDistributionPoint(idp) = ext.parsed_extension() {
            let mut uris = Vec::new();
            if let Some(DistributionPointName::FullName(names)) = &idp.distribution_point {
                for n in names {
                    if let GeneralName::URI(u) = n {
                        uris.push(u.to_string());
                    }
                }
            }
            scope = Some(CrlScope {
                uris,
                only_user: idp.only_contains_user_certs,
                only_ca: idp.only_contains_ca_certs,
                partial: idp.only_some_reasons.is_some()
                    || idp.indirect_crl
                    || idp.only_contains_attribute_certs,
            });
        }
    }
    Ok(LoadedCrl {
        issuer_raw: parsed.tbs_cert_list.issuer.as_raw().to_vec(),
        this_update: parsed.last_update().timestamp(),
        next_update: parsed.next_update().map(|t| t.timestamp()),
        number: parsed
            .crl_number()
            .map(|n| n.to_bytes_be())
            .unwrap_or_default(),
        scope,
        crl: CertRevocationList::from(owned),
        der,
    })
}

/// Compare CRL numbers given as big-endian magnitudes.
fn cmp_number(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let strip = |x: &[u8]| -> Vec<u8> { x.iter().copied().skip_while(|b| *b == 0).collect() };
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

/// Builds a [`Community`] from bytes the server read from its configured files.
pub struct CommunityBuilder {
    uri: String,
    anchors: Vec<Vec<u8>>,
    intermediates: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
    policy: RevocationPolicy,
    strict_crls: bool,
    refresh_at: Option<i64>,
}

impl CommunityBuilder {
    /// Trust anchors: a PEM text holding one or more certificates, or one DER certificate.
    pub fn anchors_pem(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.anchors.extend(pem_or_der_certs(bytes)?);
        Ok(self)
    }

    /// One DER trust anchor.
    pub fn anchor_der(mut self, der: &[u8]) -> Self {
        self.anchors.push(der.to_vec());
        self
    }

    /// Extra intermediates for path building: PEM (one or more) or one DER certificate.
    pub fn intermediates_pem(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.intermediates.extend(pem_or_der_certs(bytes)?);
        Ok(self)
    }

    /// A CRL, PEM or DER (configured, or fetched from a distribution point).
    pub fn crl(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.crls.push(crl_der(bytes)?);
        Ok(self)
    }

    pub fn unknown_revocation(mut self, policy: RevocationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// By default a certificate needs a CRL only when revocation information is expected for it: it
    /// names a CRL distribution point, or the community holds a CRL from its issuer (which must then be
    /// authoritative for it). With `true`, every certificate of the chain below the anchor needs a current
    /// CRL from its issuer, whatever it declares; [`RevocationPolicy`] decides when none is held.
    pub fn require_crl_for_every_issuer(mut self, strict: bool) -> Self {
        self.strict_crls = strict;
        self
    }

    /// Cached validations against this community end at this instant at the latest (e.g. when the server
    /// plans to re-fetch its CRLs).
    pub fn refresh_at(mut self, at: UnixTime) -> Self {
        self.refresh_at = Some(i64::try_from(at.as_secs()).unwrap_or(i64::MAX));
        self
    }

    pub fn build(self) -> Result<Community, TrustError> {
        if self.uri.is_empty() {
            return Err(TrustError::Config("a community needs a URI".into()));
        }
        if self.anchors.is_empty() {
            return Err(TrustError::Config(
                "a community needs at least one trust anchor".into(),
            ));
        }
        let mut anchors = Vec::new();
        for (i, der) in self.anchors.iter().enumerate() {
            let (rest, cert) = X509Certificate::from_der(der).map_err(|_| {
                TrustError::Config(format!(
                    "trust anchor #{} is not an X.509 certificate",
                    i + 1
                ))
            })?;
            if !rest.is_empty() {
                return Err(TrustError::Config(format!(
                    "trust anchor #{} has trailing data",
                    i + 1
                )));
            }
            if !cert.is_ca() {
                return Err(TrustError::Config(format!(
                    "trust anchor #{} is not a CA certificate (basicConstraints cA is not set)",
                    i + 1
                )));
            }
            let cert = CertificateDer::from(der.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| {
                TrustError::Config(format!("trust anchor #{} is unusable: {e:?}", i + 1))
            })?;
            anchors.push(anchor.to_owned());
        }
        for (i, der) in self.intermediates.iter().enumerate() {
            match X509Certificate::from_der(der) {
                Ok(([], _)) => {}
                _ => {
                    return Err(TrustError::Config(format!(
                        "intermediate #{} is not an X.509 certificate",
                        i + 1
                    )))
                }
            }
        }
        let mut h = Sha256::new();
        let mut put = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        put(self.uri.as_bytes());
        let policy_byte = match self.policy {
            RevocationPolicy::FailClosed => 0u8,
            RevocationPolicy::FailOpen => 1u8,
        };
        put(&[policy_byte, u8::from(self.strict_crls)]);
        put(&self.refresh_at.unwrap_or(0).to_be_bytes());
        for list in [&self.anchors, &self.intermediates, &self.crls] {
            put(&(list.len() as u64).to_be_bytes());
            for der in list.iter() {
                put(der);
            }
        }
        let fingerprint = h.finalize().into();
        // One CRL per (issuer, scope): the newest, so that an older CRL cannot shadow a newer one (webpki
        // uses the first authoritative CRL it finds).
        let mut crls: Vec<LoadedCrl> = Vec::new();
        for der in self.crls {
            let crl = load_crl(der)?;
            match crls
                .iter_mut()
                .find(|c| c.issuer_raw == crl.issuer_raw && c.scope == crl.scope)
            {
                Some(existing) => {
                    let newer = cmp_number(&crl.number, &existing.number)
                        .then(crl.this_update.cmp(&existing.this_update))
                        .is_gt();
                    if newer {
                        *existing = crl;
                    }
                }
                None => crls.push(crl),
            }
        }
        Ok(Community {
            uri: self.uri,
            anchors,
            anchor_ders: self.anchors,
            intermediates: self
                .intermediates
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            crls,
            policy: self.policy,
            strict_crls: self.strict_crls,
            refresh_at: self.refresh_at,
            fingerprint,
        })
    }
}

impl Community {
    pub fn builder(uri: &str) -> CommunityBuilder {
        CommunityBuilder {
            uri: uri.to_string(),
            anchors: Vec::new(),
            intermediates: Vec::new(),
            crls: Vec::new(),
            policy: RevocationPolicy::FailClosed,
            strict_crls: false,
            refresh_at: None,
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn revocation_policy(&self) -> RevocationPolicy {
        self.policy
    }

    /// When the first of the community's CRLs is due to be replaced (unix seconds).
    pub fn earliest_crl_next_update(&self) -> Option<i64> {
        self.crls.iter().filter_map(|c| c.next_update).min()
    }

    /// The CRLs in use (newest per issuer and scope), DER.
    pub fn crl_ders(&self) -> impl Iterator<Item = &[u8]> {
        self.crls.iter().map(|c| c.der.as_slice())
    }

    /// The http/https CRL distribution points named by the configured anchors and intermediates (the
    /// server fetches these in addition to those of the certificates clients present).
    pub fn crl_distribution_points(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let ders = self
            .anchor_ders
            .iter()
            .map(Vec::as_slice)
            .chain(self.intermediates.iter().map(|c| c.as_ref()));
        for der in ders {
            for u in crl_distribution_points(der) {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// A digest of everything that decides a validation (URI, policy, anchors, intermediates, CRLs).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Until when a validation made now may be reused.
    fn cache_horizon(&self) -> Option<i64> {
        match (self.earliest_crl_next_update(), self.refresh_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// UDAP does not constrain the extended key usage (udap.md UC-4), so any well-formed EKU list, or none, is
/// accepted; keyUsage is checked separately on the leaf.
struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for oid in iter {
            oid?;
        }
        Ok(())
    }
}

// The deprecated unit variants are still matched: they may be produced.
#[allow(deprecated)]
fn map_webpki(e: webpki::Error) -> TrustError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => TrustError::Expired,
        E::CertNotValidYet { .. } => TrustError::NotYetValid,
        E::UnknownIssuer => TrustError::UnknownIssuer,
        E::CertRevoked => TrustError::Revoked,
        E::UnknownRevocationStatus
        | E::CrlExpired { .. }
        | E::InvalidCrlSignatureForPublicKey
        | E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::IssuerNotCrlSigner => TrustError::RevocationUnknown,
        E::InvalidSignatureForPublicKey => TrustError::BadSignature,
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch => TrustError::UnsupportedAlgorithm,
        E::CaUsedAsEndEntity => TrustError::NotEndEntity,
        E::EndEntityUsedAsCa | E::PathLenConstraintViolated | E::NameConstraintViolation => {
            TrustError::PathConstraint
        }
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded
        | E::MaximumNameConstraintComparisonsExceeded => TrustError::ChainTooLong,
        E::InvalidCertValidity => {
            TrustError::Malformed("a certificate has an invalid validity period")
        }
        _ => TrustError::Malformed(
            "a certificate in the chain is malformed or uses an unsupported feature",
        ),
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, TrustError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| TrustError::Malformed("the leaf's subjectAltName extension is invalid"))?;
    let mut uris = Vec::new();
    if let Some(san) = san {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                uris.push(u.to_string());
            }
        }
    }
    Ok(uris)
}

fn leaf_key(cert: &X509Certificate<'_>) -> Result<LeafKeyKind, TrustError> {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                Err(TrustError::UnsupportedKey(
                    "RSA keys must have at least 2048 bits",
                ))
            } else if bits > 8192 {
                Err(TrustError::UnsupportedKey(
                    "RSA keys must have at most 8192 bits",
                ))
            } else {
                Ok(LeafKeyKind::Rsa { bits })
            }
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Ok(LeafKeyKind::P256),
                Some(OID_P384) => Ok(LeafKeyKind::P384),
                _ => Err(TrustError::UnsupportedKey(
                    "only the P-256 and P-384 curves are supported",
                )),
            }
        }
        _ => Err(TrustError::UnsupportedKey(
            "only RSA and EC keys are supported",
        )),
    }
}

/// The leaf rules webpki does not apply: end entity, keyUsage, URI SAN, key type.
type LeafFacts<'a> = (X509Certificate<'a>, Vec<String>, LeafKeyKind);

fn leaf_checks(der: &[u8]) -> Result<LeafFacts<'_>, TrustError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| TrustError::Malformed("the leaf is not an X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(TrustError::Malformed(
            "trailing data after the leaf certificate",
        ));
    }
    let bc = cert
        .basic_constraints()
        .map_err(|_| TrustError::Malformed("the leaf's basicConstraints extension is invalid"))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(TrustError::NotEndEntity);
    }
    let ku = cert
        .key_usage()
        .map_err(|_| TrustError::Malformed("the leaf's keyUsage extension is invalid"))?;
    if ku.is_some_and(|k| !k.value.digital_signature()) {
        return Err(TrustError::KeyUsage);
    }
    let uris = uri_sans(&cert)?;
    if uris.is_empty() {
        return Err(TrustError::NoSanUri);
    }
    let key = leaf_key(&cert)?;
    Ok((cert, uris, key))
}

/// The http/https CRL distribution point URIs of a DER certificate (none if it does not parse).
pub fn crl_distribution_points(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for u in dp_uris(&cert) {
        let lower = u.to_ascii_lowercase();
        if (lower.starts_with("http://") || lower.starts_with("https://")) && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// Every URI full name of every CRL distribution point of a certificate.
fn dp_uris(cert: &X509Certificate<'_>) -> Vec<String> {
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

fn unix_secs(t: UnixTime) -> Result<i64, TrustError> {
    i64::try_from(t.as_secs()).map_err(|_| TrustError::InvalidTime)
}

/// `UnixTime` from unix seconds (negative instants are refused).
pub fn unix_time(secs: i64) -> Result<UnixTime, TrustError> {
    let s = u64::try_from(secs).map_err(|_| TrustError::InvalidTime)?;
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(s)))
}

/// Validate `x5c_der` (DER certificates, leaf first, as decoded from a JWS `x5c` header) against
/// `community` at `now`: RFC 5280 path to one of the community's anchors (intermediates from `x5c` and
/// from the community), validity of every certificate at `now`, CRLs per the community's policy, and the
/// UDAP leaf rules (end entity, keyUsage, URI SAN, key type). Any EKU is accepted.
pub fn validate_chain(
    community: &Community,
    x5c_der: &[Vec<u8>],
    now: UnixTime,
) -> Result<ValidatedLeaf, TrustError> {
    let Some((leaf_der, rest)) = x5c_der.split_first() else {
        return Err(TrustError::Malformed("x5c is empty"));
    };
    if x5c_der.len() > MAX_CHAIN {
        return Err(TrustError::ChainTooLong);
    }
    if x5c_der
        .iter()
        .any(|c| c.is_empty() || c.len() > MAX_CERT_DER)
    {
        return Err(TrustError::Malformed("a certificate is empty or too large"));
    }
    unix_secs(now)?;
    let (leaf, san_uris, key) = leaf_checks(leaf_der)?;
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let ee = EndEntityCert::try_from(&leaf_cert).map_err(map_webpki)?;
    let mut intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    intermediates.extend(community.intermediates.iter().cloned());
    let crl_refs: Vec<&CertRevocationList<'_>> = community.crls.iter().map(|c| &c.crl).collect();
    let revocation = if crl_refs.is_empty() {
        None
    } else {
        let options = RevocationOptionsBuilder::new(&crl_refs)
            .map_err(|_| TrustError::RevocationUnknown)?
            .with_depth(RevocationCheckDepth::Chain)
            // Whether a certificate without an authoritative CRL is acceptable is decided below, where
            // the community's policy and what the certificate declares are known.
            .with_status_policy(UnknownStatusPolicy::Allow)
            // An expired CRL is "status unknown": refused under fail-closed; under fail-open it is still
            // consulted, so a serial it lists stays revoked.
            .with_expiration_policy(match community.policy {
                RevocationPolicy::FailClosed => ExpirationPolicy::Enforce,
                RevocationPolicy::FailOpen => ExpirationPolicy::Ignore,
            });
        Some(options.build())
    };
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &community.anchors,
            &intermediates,
            now,
            AnyEku,
            revocation,
            None,
        )
        .map_err(map_webpki)?;

    // Revocation coverage and the chain's earliest expiry, over the certificates of the path below the
    // anchor: the leaf, then the intermediates webpki chose.
    let mut chain_not_after = leaf.validity().not_after.timestamp();
    let path_intermediates: Vec<CertificateDer<'_>> =
        path.intermediate_certificates().map(|c| c.der()).collect();
    let path_ders =
        std::iter::once(leaf_der.as_slice()).chain(path_intermediates.iter().map(|c| c.as_ref()));
    for (i, der) in path_ders.enumerate() {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| TrustError::Malformed("a certificate in the chain does not parse"))?;
        chain_not_after = chain_not_after.min(cert.validity().not_after.timestamp());
        let issuer = cert.tbs_certificate.issuer.as_raw();
        let dps = dp_uris(&cert);
        let held_from_issuer = community.crls.iter().any(|c| c.issuer_raw == issuer);
        let expected = community.strict_crls || !dps.is_empty() || held_from_issuer;
        if !expected {
            continue;
        }
        let covered = community.crls.iter().any(|c| c.covers(issuer, &dps, i > 0));
        if !covered && community.policy == RevocationPolicy::FailClosed {
            return Err(TrustError::RevocationUnknown);
        }
    }
    Ok(ValidatedLeaf {
        spki_der: leaf.public_key().raw.to_vec(),
        san_uris,
        not_after: leaf.validity().not_after.timestamp(),
        chain_not_after,
        serial_hex: hex::encode(leaf.raw_serial()),
        fingerprint_sha256: Sha256::digest(leaf_der).into(),
        key,
        community: community.uri.clone(),
        _sealed: Sealed,
    })
}

/// One cached validation.
struct CacheEntry {
    leaf: Arc<ValidatedLeaf>,
    validated_at: i64,
    until: i64,
}

/// Validated chains by SHA-256 over the exact `x5c` bytes (length-prefixed), the community's URI and the
/// community's [`fingerprint`](Community::fingerprint) (so a rebuilt community with other CRLs or anchors
/// never hits an old entry). An entry is reused until the earliest of: the chain's first notAfter, the
/// community's earliest CRL nextUpdate, its configured refresh instant, and the cache's maximum age.
/// Failures are never cached. Bounded: when full, expired entries go first, then those expiring soonest.
pub struct ChainCache {
    capacity: usize,
    max_age: i64,
    entries: RwLock<HashMap<[u8; 32], CacheEntry>>,
}

impl std::fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainCache")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for ChainCache {
    fn default() -> Self {
        ChainCache::new(DEFAULT_CACHE_CAPACITY)
    }
}

fn cache_key(community: &Community, x5c: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bluegate x5c cache v1");
    h.update((community.uri.len() as u64).to_be_bytes());
    h.update(community.uri.as_bytes());
    h.update(community.fingerprint);
    h.update((x5c.len() as u64).to_be_bytes());
    for der in x5c {
        h.update((der.len() as u64).to_be_bytes());
        h.update(der);
    }
    h.finalize().into()
}

impl ChainCache {
    /// A cache of at most `capacity` chains (at least 1), each reused for at most an hour.
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            capacity: capacity.max(1),
            max_age: DEFAULT_CACHE_MAX_AGE,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The longest a validation is reused, in seconds (at least 1).
    pub fn with_max_age(mut self, seconds: i64) -> Self {
        self.max_age = seconds.max(1);
        self
    }

    /// [`validate_chain`] at `now` (unix seconds), reusing an earlier success for the same `x5c` bytes
    /// and community.
    pub fn validate_cached(
        &self,
        community: &Community,
        x5c: &[Vec<u8>],
        now: i64,
    ) -> Result<Arc<ValidatedLeaf>, TrustError> {
        let now_secs = now;
        let now = unix_time(now)?;
        let key = cache_key(community, x5c);
        {
            let map = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = map.get(&key) {
                if e.validated_at <= now_secs && now_secs < e.until {
                    return Ok(e.leaf.clone());
                }
            }
        }
        let leaf = Arc::new(validate_chain(community, x5c, now)?);
        let mut until = leaf
            .chain_not_after
            .min(now_secs.saturating_add(self.max_age));
        if let Some(h) = community.cache_horizon() {
            until = until.min(h);
        }
        if until > now_secs {
            let mut map = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= self.capacity && !map.contains_key(&key) {
                map.retain(|_, e| e.until > now_secs);
                while map.len() >= self.capacity {
                    let Some(victim) = map.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k)
                    else {
                        break;
                    };
                    map.remove(&victim);
                }
            }
            map.insert(
                key,
                CacheEntry {
                    leaf: leaf.clone(),
                    validated_at: now_secs,
                    until,
                },
            );
        }
        Ok(leaf)
    }

    /// Forget every chain validated against the community `uri` (call when its CRLs or anchors reload).
    pub fn invalidate_community(&self, uri: &str) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, e| e.leaf.community != uri);
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
#[cfg(test)]
pub(crate) mod testpki {
    //! A small PKI for tests, made with rcgen: root → intermediate → leaves, and CRLs.
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
        CrlIssuingDistributionPoint, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Rsa2048,
        P256,
        P384,
        Ed25519,
    }

    impl Kind {
        pub fn key(self) -> KeyPair {
            let alg = match self {
                Kind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
                Kind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                Kind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                Kind::Ed25519 => &rcgen::PKCS_ED25519,
            };
            KeyPair::generate_for(alg).unwrap()
        }
    }

    fn serial() -> Vec<u8> {
        let mut b = [0u8; 16];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        b[0] = (b[0] & 0x3f) | 0x10;
        b.to_vec()
    }

    fn days(d: i64) -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::days(d)
    }

    fn dn(cn: &str) -> DistinguishedName {
        let mut d = DistinguishedName::new();
        d.push(DnType::OrganizationName, "Bluegate tests");
        d.push(DnType::CommonName, cn);
        d
    }

    pub struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pub der: Vec<u8>,
        pub pem: String,
        pub serial: Vec<u8>,
    }

    fn ca_params(cn: &str, dp: Option<&str>) -> (CertificateParams, Vec<u8>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = days(-30);
        p.not_after = days(365);
        let s = serial();
        p.serial_number = Some(SerialNumber::from_slice(&s));
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(u) = dp {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![u.into()],
            }];
        }
        (p, s)
    }

    impl Ca {
        pub fn root(cn: &str, kind: Kind) -> Ca {
            let key = kind.key();
            let (params, serial) = ca_params(cn, None);
            let cert = params.self_signed(&key).unwrap();
            Ca {
                der: cert.der().to_vec(),
                pem: cert.pem(),
                params,
                key,
                serial,
            }
        }

        pub fn sub_ca(&self, cn: &str, kind: Kind, dp: Option<&str>) -> Ca {
            let key = kind.key();
            let (params, serial) = ca_params(cn, dp);
            let cert = params.signed_by(&key, &self.issuer()).unwrap();
            Ca {
                der: cert.der().to_vec(),
                pem: cert.pem(),
                params,
                key,
                serial,
            }
        }

        fn issuer(&self) -> Issuer<'_, &KeyPair> {
            Issuer::new(self.params.clone(), &self.key)
        }

        /// A PEM CRL by this CA listing `revoked` serials, valid from/to the given day offsets.
        pub fn crl(&self, revoked: &[&[u8]], number: u64, from: i64, to: i64) -> String {
            self.crl_idp(revoked, number, from, to, None)
        }

        pub fn crl_idp(
            &self,
            revoked: &[&[u8]],
            number: u64,
            from: i64,
            to: i64,
            idp: Option<&str>,
        ) -> String {
            let params = CertificateRevocationListParams {
                this_update: days(from),
                next_update: days(to),
                crl_number: SerialNumber::from(number),
                issuing_distribution_point: idp.map(|u| CrlIssuingDistributionPoint {
                    distribution_point: CrlDistributionPoint {
                        uris: vec![u.into()],
                    },
                    scope: None,
                }),
                revoked_certs: revoked
                    .iter()
                    .map(|s| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(s),
                        revocation_time: days(-1),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            params.signed_by(&self.issuer()).unwrap().pem().unwrap()
        }
    }

    /// What a test leaf looks like.
    pub struct LeafSpec {
        pub uris: Vec<String>,
        pub kind: Kind,
        pub from_days: i64,
        pub to_days: i64,
        pub ca: bool,
        pub key_usage: Option<Vec<KeyUsagePurpose>>,
        pub ekus: Vec<ExtendedKeyUsagePurpose>,
        pub crl_dp: Option<String>,
    }

    impl LeafSpec {
        pub fn new(uri: &str, kind: Kind) -> Self {
            LeafSpec {
                uris: vec![uri.to_string()],
                kind,
                from_days: -1,
                to_days: 30,
                ca: false,
                key_usage: Some(vec![KeyUsagePurpose::DigitalSignature]),
                ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
                crl_dp: None,
            }
        }
    }

    pub struct Issued {
        pub der: Vec<u8>,
        pub key_pem: String,
        pub serial: Vec<u8>,
        /// Leaf, then the issuing intermediate.
        pub chain: Vec<Vec<u8>>,
    }

    impl Ca {
        pub fn issue(&self, spec: &LeafSpec) -> Issued {
            let key = spec.kind.key();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name = dn("leaf");
            p.subject_alt_names = spec
                .uris
                .iter()
                .map(|u| SanType::URI(u.clone().try_into().unwrap()))
                .collect();
            if spec.uris.is_empty() {
                p.subject_alt_names = vec![SanType::DnsName("x.example".try_into().unwrap())];
            }
            p.is_ca = if spec.ca {
                IsCa::Ca(BasicConstraints::Unconstrained)
            } else {
                IsCa::ExplicitNoCa
            };
            p.key_usages = spec.key_usage.clone().unwrap_or_default();
            p.extended_key_usages = spec.ekus.clone();
            p.not_before = days(spec.from_days);
            p.not_after = days(spec.to_days);
            let s = serial();
            p.serial_number = Some(SerialNumber::from_slice(&s));
            p.use_authority_key_identifier_extension = true;
            if let Some(u) = &spec.crl_dp {
                p.crl_distribution_points = vec![CrlDistributionPoint {
                    uris: vec![u.clone()],
                }];
            }
            let cert = p.signed_by(&key, &self.issuer()).unwrap();
            Issued {
                der: cert.der().to_vec(),
                key_pem: key.serialize_pem(),
                serial: s,
                chain: vec![cert.der().to_vec(), self.der.clone()],
            }
        }
    }

    pub struct TestCommunity {
        pub root: Ca,
        pub inter: Ca,
    }

    pub const URI: &str = "urn:test";

    impl TestCommunity {
        pub fn new(kind: Kind) -> Self {
            Self::named("T", kind)
        }

        pub fn named(name: &str, kind: Kind) -> Self {
            let root = Ca::root(&format!("{name} Root CA"), kind);
            let inter = root.sub_ca(&format!("{name} Intermediate CA"), kind, None);
            TestCommunity { root, inter }
        }

        pub fn builder(&self, crls: &[String]) -> CommunityBuilder {
            let mut b = Community::builder(URI)
                .anchors_pem(self.root.pem.as_bytes())
                .unwrap();
            for crl in crls {
                b = b.crl(crl.as_bytes()).unwrap();
            }
            b
        }

        pub fn community(&self, crls: &[String]) -> Community {
            self.builder(crls).build().unwrap()
        }

        pub fn leaf(&self, uri: Option<&str>, kind: Kind, from_days: i64, to_days: i64) -> Issued {
            let mut spec = LeafSpec::new(uri.unwrap_or(""), kind);
            if uri.is_none() {
                spec.uris.clear();
            }
            spec.from_days = from_days;
            spec.to_days = to_days;
            self.inter.issue(&spec)
        }
    }

    pub fn x5c(issued: &Issued) -> Vec<Vec<u8>> {
        issued.chain.clone()
    }

    pub fn now() -> UnixTime {
        UnixTime::now()
    }

    pub fn now_secs() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    pub fn at_days_secs(d: i64) -> i64 {
        days(d).unix_timestamp()
    }

    pub fn at_days(d: i64) -> UnixTime {
        unix_time(days(d).unix_timestamp()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testpki::*;
    use super::*;
    use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};

    const APP: &str = "https://app.example/";

    fn check(c: &Community, chain: &[Vec<u8>]) -> Result<ValidatedLeaf, TrustError> {
        validate_chain(c, chain, now())
    }

    #[test]
    fn valid_rsa_p256_p384_chains() {
        for kind in [Kind::Rsa2048, Kind::P256, Kind::P384] {
            let t = TestCommunity::new(kind);
            let leaf = t.leaf(Some(APP), kind, -1, 10);
            let v = check(&t.community(&[]), &x5c(&leaf)).unwrap();
            assert_eq!(v.san_uris, vec![APP]);
            assert_eq!(v.serial_hex, hex::encode(&leaf.serial));
            assert_eq!(v.community, URI);
            assert_eq!(
                v.fingerprint_sha256,
                <[u8; 32]>::from(Sha256::digest(&leaf.der))
            );
            let expected = match kind {
                Kind::Rsa2048 => LeafKeyKind::Rsa { bits: 2048 },
                Kind::P256 => LeafKeyKind::P256,
                _ => LeafKeyKind::P384,
            };
            assert_eq!(v.key, expected);
            assert!(v.not_after >= v.chain_not_after);
        }
    }

    #[test]
    fn any_eku_or_none_and_multiple_sans() {
        let t = TestCommunity::new(Kind::P256);
        let c = t.community(&[]);
        let mut spec = LeafSpec::new(APP, Kind::P256);
        // What the UDAP test kit's client certificate carries.
        spec.ekus = vec![
            Eku::ServerAuth,
            Eku::ClientAuth,
            Eku::CodeSigning,
            Eku::EmailProtection,
        ];
        assert!(check(&c, &t.inter.issue(&spec).chain).is_ok());
        spec.ekus = vec![];
        assert!(check(&c, &t.inter.issue(&spec).chain).is_ok());
        spec.ekus = vec![Eku::CodeSigning];
        spec.key_usage = None;
        spec.uris = vec!["urn:a".into(), APP.into()];
        let v = check(&c, &t.inter.issue(&spec).chain).unwrap();
        assert_eq!(v.san_uris, vec!["urn:a", APP]);
    }

    #[test]
    fn leaf_rules() {
        let t = TestCommunity::new(Kind::P256);
        let c = t.community(&[]);
        let no_uri = t.leaf(None, Kind::P256, -1, 10);
        assert_eq!(check(&c, &x5c(&no_uri)), Err(TrustError::NoSanUri));
        let mut spec = LeafSpec::new(APP, Kind::P256);
        spec.ca = true;
        spec.key_usage = Some(vec![Ku::DigitalSignature, Ku::KeyCertSign]);
        assert_eq!(
            check(&c, &t.inter.issue(&spec).chain),
            Err(TrustError::NotEndEntity)
        );
        let mut spec = LeafSpec::new(APP, Kind::P256);
        spec.key_usage = Some(vec![Ku::KeyAgreement]);
        assert_eq!(
            check(&c, &t.inter.issue(&spec).chain),
            Err(TrustError::KeyUsage)
        );
        let spec = LeafSpec::new(APP, Kind::Ed25519);
        assert!(matches!(
            check(&c, &t.inter.issue(&spec).chain),
            Err(TrustError::UnsupportedKey(_))
        ));
        // The intermediate itself presented as the leaf.
        assert_eq!(
            check(&c, std::slice::from_ref(&t.inter.der)),
            Err(TrustError::NotEndEntity)
        );
    }

    #[test]
    fn time_and_trust_failures() {
        let t = TestCommunity::new(Kind::P256);
        let c = t.community(&[]);
        let expired = t.leaf(Some(APP), Kind::P256, -10, -1);
        assert_eq!(check(&c, &x5c(&expired)), Err(TrustError::Expired));
        let future = t.leaf(Some(APP), Kind::P256, 2, 10);
        assert_eq!(check(&c, &x5c(&future)), Err(TrustError::NotYetValid));
        // The same leaf is fine at a time inside its validity (time is an input).
        assert!(validate_chain(&c, &x5c(&future), at_days(3)).is_ok());
        let other = TestCommunity::named("Other", Kind::P256);
        let stranger = other.leaf(Some(APP), Kind::P256, -1, 10);
        assert_eq!(check(&c, &x5c(&stranger)), Err(TrustError::UnknownIssuer));
        // A look-alike community (same names, other keys) fails on the signature.
        let twin = TestCommunity::new(Kind::P256);
        let lookalike = twin.leaf(Some(APP), Kind::P256, -1, 10);
        assert_eq!(check(&c, &x5c(&lookalike)), Err(TrustError::BadSignature));
        // Leaf without its intermediate: no path; with the intermediate configured in the community: fine.
        let good = t.leaf(Some(APP), Kind::P256, -1, 10);
        assert_eq!(check(&c, &x5c(&good)[..1]), Err(TrustError::UnknownIssuer));
        let with_inter = t
            .builder(&[])
            .intermediates_pem(t.inter.pem.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        assert!(check(&with_inter, &x5c(&good)[..1]).is_ok());
        // A tampered leaf signature.
        let mut bad = x5c(&good);
        let n = bad[0].len();
        bad[0][n - 5] ^= 0xff;
        assert!(check(&c, &bad).is_err());
    }

    #[test]
    fn chain_length_and_shape() {
        let root = Ca::root("Deep Root", Kind::P256);
        let mut cas = vec![root.sub_ca("I0", Kind::P256, None)];
        for i in 1..10 {
            let next = cas[i - 1].sub_ca(&format!("I{i}"), Kind::P256, None);
            cas.push(next);
        }
        let c = Community::builder(URI)
            .anchor_der(&root.der)
            .build()
            .unwrap();
        let leaf = cas[9].issue(&LeafSpec::new(APP, Kind::P256));
        // 11 certificates: refused before any path building.
        let mut chain = vec![leaf.der.clone()];
        chain.extend(cas.iter().rev().map(|c| c.der.clone()));
        assert_eq!(chain.len(), 11);
        assert_eq!(check(&c, &chain), Err(TrustError::ChainTooLong));
        // 10 certificates (9 intermediates) is within x5c's limit but deeper than path building allows.
        let leaf9 = cas[8].issue(&LeafSpec::new(APP, Kind::P256));
        let mut chain = vec![leaf9.der.clone()];
        chain.extend(cas[..9].iter().rev().map(|c| c.der.clone()));
        assert_eq!(chain.len(), 10);
        assert_eq!(check(&c, &chain), Err(TrustError::ChainTooLong));
        // A short path through the same hierarchy works.
        let leaf1 = cas[1].issue(&LeafSpec::new(APP, Kind::P256));
        assert!(check(&c, &[leaf1.der, cas[1].der.clone(), cas[0].der.clone()]).is_ok());
        assert!(matches!(check(&c, &[]), Err(TrustError::Malformed(_))));
        assert!(matches!(
            check(&c, &[vec![1, 2, 3]]),
            Err(TrustError::Malformed(_))
        ));
        assert!(matches!(
            check(&c, &[vec![]]),
            Err(TrustError::Malformed(_))
        ));
    }

    #[test]
    fn revocation_by_crl() {
        let t = TestCommunity::new(Kind::P256);
        let revoked = t.leaf(Some("https://r/"), Kind::P256, -1, 10);
        let fine = t.leaf(Some("https://f/"), Kind::P256, -1, 10);
        let crl = t.inter.crl(&[&revoked.serial], 1, -1, 1);
        let c = t.community(std::slice::from_ref(&crl));
        assert_eq!(check(&c, &x5c(&revoked)), Err(TrustError::Revoked));
        assert!(check(&c, &x5c(&fine)).is_ok());
        // An older CRL listed first does not shadow the newer one.
        let older = t.inter.crl(&[], 0, -2, 1);
        let c = t.community(&[older.clone(), crl.clone()]);
        assert_eq!(check(&c, &x5c(&revoked)), Err(TrustError::Revoked));
        // The whole chain is checked: the root revokes the intermediate.
        let root_crl = t.root.crl(&[&t.inter.serial], 1, -1, 1);
        let c = t.community(&[root_crl, older]);
        assert_eq!(check(&c, &x5c(&fine)), Err(TrustError::Revoked));
        // An expired CRL: unknown status; fail-closed refuses, fail-open accepts but still honours it.
        let stale = t.inter.crl(&[&revoked.serial], 3, -3, -1);
        let c = t.community(std::slice::from_ref(&stale));
        assert_eq!(check(&c, &x5c(&fine)), Err(TrustError::RevocationUnknown));
        let open = t
            .builder(std::slice::from_ref(&stale))
            .unknown_revocation(RevocationPolicy::FailOpen)
            .build()
            .unwrap();
        assert!(check(&open, &x5c(&fine)).is_ok());
        assert_eq!(check(&open, &x5c(&revoked)), Err(TrustError::Revoked));
        // A CRL signed by someone else with the issuer's name does not count.
        let twin = TestCommunity::new(Kind::P256);
        let forged = twin.inter.crl(&[], 9, -1, 1);
        let c = t.community(&[forged]);
        assert_eq!(check(&c, &x5c(&fine)), Err(TrustError::RevocationUnknown));
    }

    #[test]
    fn unknown_revocation_status_policy() {
        let t = TestCommunity::new(Kind::P256);
        let mut spec = LeafSpec::new(APP, Kind::P256);
        spec.crl_dp = Some("http://crl.example/inter.crl".into());
        let with_dp = t.inter.issue(&spec);
        assert_eq!(
            crl_distribution_points(&with_dp.der),
            vec!["http://crl.example/inter.crl"]
        );
        assert!(crl_distribution_points(b"junk").is_empty());
        // It names a distribution point but no CRL is held: unknown.
        assert_eq!(
            check(&t.community(&[]), &with_dp.chain),
            Err(TrustError::RevocationUnknown)
        );
        let open = t
            .builder(&[])
            .unknown_revocation(RevocationPolicy::FailOpen)
            .build()
            .unwrap();
        assert!(check(&open, &with_dp.chain).is_ok());
        // With the CRL: fine.
        let crl = t.inter.crl(&[], 1, -1, 1);
        assert!(check(&t.community(std::slice::from_ref(&crl)), &with_dp.chain).is_ok());
        // A CRL scoped (issuingDistributionPoint) to another distribution point is not authoritative.
        let scoped = t.inter.crl_idp(
            &[&with_dp.serial],
            2,
            -1,
            1,
            Some("http://crl.example/other.crl"),
        );
        assert_eq!(
            check(&t.community(std::slice::from_ref(&scoped)), &with_dp.chain),
            Err(TrustError::RevocationUnknown)
        );
        let scoped_ok = t.inter.crl_idp(
            &[&with_dp.serial],
            2,
            -1,
            1,
            Some("http://crl.example/inter.crl"),
        );
        assert_eq!(
            check(&t.community(&[scoped_ok]), &with_dp.chain),
            Err(TrustError::Revoked)
        );
        // No distribution point and no CRL from its issuer: no revocation information is expected,
        // unless the community requires a CRL for every issuer.
        let plain = t.leaf(Some(APP), Kind::P256, -1, 10);
        assert!(check(&t.community(&[]), &x5c(&plain)).is_ok());
        let strict = t
            .builder(&[])
            .require_crl_for_every_issuer(true)
            .build()
            .unwrap();
        assert_eq!(
            check(&strict, &x5c(&plain)),
            Err(TrustError::RevocationUnknown)
        );
        // Strict: the intermediate's CRL alone does not cover the intermediate itself (root CRL needed).
        let strict = t
            .builder(std::slice::from_ref(&crl))
            .require_crl_for_every_issuer(true)
            .build()
            .unwrap();
        assert_eq!(
            check(&strict, &x5c(&plain)),
            Err(TrustError::RevocationUnknown)
        );
        let root_crl = t.root.crl(&[], 1, -1, 1);
        let strict = t
            .builder(&[crl, root_crl])
            .require_crl_for_every_issuer(true)
            .build()
            .unwrap();
        assert!(check(&strict, &x5c(&plain)).is_ok());
        let strict_open = t
            .builder(&[])
            .require_crl_for_every_issuer(true)
            .unknown_revocation(RevocationPolicy::FailOpen)
            .build()
            .unwrap();
        assert!(check(&strict_open, &x5c(&plain)).is_ok());
    }

    #[test]
    fn community_builder_errors_and_crl_parsing() {
        let t = TestCommunity::new(Kind::P256);
        assert!(matches!(
            Community::builder(URI).build(),
            Err(TrustError::Config(_))
        ));
        assert!(matches!(
            Community::builder(URI)
                .anchors_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
                .and_then(CommunityBuilder::build),
            Err(TrustError::Config(_))
        ));
        assert!(matches!(
            Community::builder(URI).anchor_der(b"garbage").build(),
            Err(TrustError::Config(_))
        ));
        let leaf = t.leaf(Some(APP), Kind::P256, -1, 10);
        let e = Community::builder(URI)
            .anchor_der(&leaf.der)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("not a CA"), "{e}");
        assert!(matches!(
            t.builder(&[]).crl(b"not a crl").unwrap().build(),
            Err(TrustError::Config(_))
        ));
        let pem = t.inter.crl(&[&leaf.serial], 1, -1, 1);
        let from_pem = parse_crl(pem.as_bytes()).unwrap();
        let der = crl_der(pem.as_bytes()).unwrap();
        assert!(parse_crl(&der).is_ok());
        assert!(CertRevocationList::from(from_pem)
            .find_serial(&leaf.serial)
            .unwrap()
            .is_some());
        assert!(parse_crl(b"junk").is_err());
        assert!(parse_crl(b"-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n").is_err());
        let c = t.community(&[pem]);
        assert!(c.earliest_crl_next_update().is_some());
        assert_eq!(c.crl_ders().count(), 1);
        // Distribution points of the configured CAs.
        let inter = t
            .root
            .sub_ca("I", Kind::P256, Some("https://ca.example/root.crl"));
        let c = t
            .builder(&[])
            .intermediates_pem(inter.pem.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            c.crl_distribution_points(),
            vec!["https://ca.example/root.crl"]
        );
    }

    #[test]
    fn cache_hits_invalidation_and_refresh() {
        let t = TestCommunity::new(Kind::P256);
        let c = t.community(&[]);
        let cache = ChainCache::new(4);
        let leaf = t.leaf(Some(APP), Kind::P256, -1, 10);
        let a = cache.validate_cached(&c, &x5c(&leaf), now_secs()).unwrap();
        let b = cache.validate_cached(&c, &x5c(&leaf), now_secs()).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "second validation should be a cache hit"
        );
        cache.invalidate_community("urn:other");
        let b = cache.validate_cached(&c, &x5c(&leaf), now_secs()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        cache.invalidate_community(URI);
        let d = cache.validate_cached(&c, &x5c(&leaf), now_secs()).unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        // A rebuilt community with a CRL revoking the leaf misses the cache even without invalidation.
        let crl = t.inter.crl(&[&leaf.serial], 1, -1, 1);
        let revoking = t.community(&[crl]);
        assert_eq!(
            cache
                .validate_cached(&revoking, &x5c(&leaf), now_secs())
                .unwrap_err(),
            TrustError::Revoked
        );
        // Failures are not cached.
        let expired = t.leaf(Some(APP), Kind::P256, -10, -1);
        let before = cache.len();
        assert!(cache
            .validate_cached(&c, &x5c(&expired), now_secs())
            .is_err());
        assert!(cache
            .validate_cached(&revoking, &x5c(&leaf), now_secs())
            .is_err());
        assert_eq!(cache.len(), before);
        // Other bytes (an extra certificate) are another entry.
        let mut longer = x5c(&leaf);
        longer.push(t.inter.der.clone());
        let e = cache.validate_cached(&c, &longer, now_secs()).unwrap();
        assert!(!Arc::ptr_eq(&d, &e));
        // Entries end with the chain.
        assert_eq!(
            cache
                .validate_cached(&c, &x5c(&leaf), at_days_secs(40))
                .unwrap_err(),
            TrustError::Expired
        );
        // A refresh instant bounds reuse.
        let refresh = t.builder(&[]).refresh_at(at_days(1)).build().unwrap();
        let f = cache
            .validate_cached(&refresh, &x5c(&leaf), now_secs())
            .unwrap();
        let g = cache
            .validate_cached(&refresh, &x5c(&leaf), now_secs())
            .unwrap();
        assert!(Arc::ptr_eq(&f, &g));
        let h = cache
            .validate_cached(&refresh, &x5c(&leaf), at_days_secs(2))
            .unwrap();
        assert!(!Arc::ptr_eq(&f, &h));
        // Bounded size.
        let small = ChainCache::new(2);
        for _ in 0..5 {
            let l = t.leaf(Some(APP), Kind::P256, -1, 10);
            small.validate_cached(&c, &x5c(&l), now_secs()).unwrap();
            assert!(small.len() <= 2);
        }
        small.clear();
        assert!(small.is_empty());
    }

    #[test]
    fn random_chains_never_panic() {
        let t = TestCommunity::new(Kind::P256);
        let c = t.community(&[]);
        let cache = ChainCache::new(16);
        let good = t.leaf(Some(APP), Kind::P256, -1, 10);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000 {
            if i % 2 == 0 {
                let len = (next() % 600) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if i % 4 == 0 && !bytes.is_empty() {
                    bytes[0] = 0x30; // looks like a DER SEQUENCE
                }
                assert!(check(&c, &[bytes.clone()]).is_err());
                assert!(cache
                    .validate_cached(&c, &[bytes, t.inter.der.clone()], now_secs())
                    .is_err());
            } else {
                let mut chain = x5c(&good);
                let which = (next() % 2) as usize;
                let n = chain[which].len();
                for _ in 0..(1 + next() % 3) {
                    let p = (next() as usize) % n;
                    chain[which][p] ^= (next() as u8) | 1;
                }
                let _ = check(&c, &chain);
            }
        }
    }
}

/// The `nextUpdate` of a CRL (PEM or DER), as unix seconds.
pub fn crl_next_update(bytes: &[u8]) -> Option<i64> {
    let der = crl_der_bytes(bytes)?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).ok()?;
    crl.next_update().map(|t| t.timestamp())
}

fn crl_der_bytes(bytes: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(bytes)
            .ok()
            .map(|d| d.to_vec())
    } else {
        Some(bytes.to_vec())
    }
}
