//! Trust communities: RFC 5280 path validation of an `x5c` chain against a community's anchors (never the
//! operating system's store), at a given time, with CRLs; and a cache of validated chains.
//!
//! Path building and signature checks are rustls-webpki's; this module adds what UDAP asks on top: a URI
//! SAN on the leaf, an end-entity leaf whose key usage allows signing, supported key types, the
//! community's revocation policy, and caching by the exact `x5c` bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Longest chain accepted in `x5c`.
pub const MAX_CHAIN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("the certificate chain is longer than {MAX_CHAIN}")]
    ChainTooLong,
    #[error("the leaf certificate has no URI subject alternative name")]
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
    #[error("the leaf certificate is a CA certificate")]
    NotEndEntity,
    #[error("the leaf certificate's key usage does not allow digital signatures")]
    KeyUsage,
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    #[error("invalid community configuration: {0}")]
    Config(String),
}

/// What to do when a certificate's revocation status cannot be established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationPolicy {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKey {
    Rsa { bits: usize },
    P256,
    P384,
}

/// A leaf whose chain validated. Only this module constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedLeaf {
    pub spki_der: Vec<u8>,
    pub san_uris: Vec<String>,
    pub not_after: i64,
    pub serial_hex: String,
    pub fingerprint_sha256: [u8; 32],
    pub key: LeafKey,
    pub community: String,
}

struct LoadedCrl {
    crl: CertRevocationList<'static>,
    issuer_raw: Vec<u8>,
    next_update: Option<i64>,
}

/// A trust community: anchors, extra intermediates, CRLs and the revocation policy.
pub struct Community {
    uri: String,
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    crls: Vec<LoadedCrl>,
    policy: RevocationPolicy,
}

impl std::fmt::Debug for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Community")
            .field("uri", &self.uri)
            .field("anchors", &self.anchors.len())
            .field("intermediates", &self.intermediates.len())
            .field("crls", &self.crls.len())
            .field("policy", &self.policy)
            .finish()
    }
}

fn pem_or_der_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrustError> {
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        crate::certs::pem_certs(bytes).map_err(|e| TrustError::Config(e.to_string()))
    } else {
        Ok(vec![bytes.to_vec()])
    }
}

/// Parse a CRL, PEM or DER.
pub fn parse_crl(bytes: &[u8]) -> Result<OwnedCertRevocationList, TrustError> {
    crl_der(bytes).and_then(|der| {
        OwnedCertRevocationList::from_der(&der)
            .map_err(|e| TrustError::Config(format!("not a valid CRL: {e:?}")))
    })
}

fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, TrustError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateRevocationListDer;
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map(|d| d.to_vec())
            .map_err(|_| TrustError::Config("no PEM CRL found".into()))
    } else {
        Ok(bytes.to_vec())
    }
}

/// Builds a [`Community`] from bytes the server read from its configured files.
pub struct CommunityBuilder {
    uri: String,
    anchors: Vec<Vec<u8>>,
    intermediates: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
    policy: RevocationPolicy,
}

impl CommunityBuilder {
    pub fn anchors_pem(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.anchors.extend(pem_or_der_certs(bytes)?);
        Ok(self)
    }
    pub fn intermediates_pem(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.intermediates.extend(pem_or_der_certs(bytes)?);
        Ok(self)
    }
    pub fn crl(mut self, bytes: &[u8]) -> Result<Self, TrustError> {
        self.crls.push(crl_der(bytes)?);
        Ok(self)
    }
    pub fn unknown_revocation(mut self, policy: RevocationPolicy) -> Self {
        self.policy = policy;
        self
    }
    pub fn build(self) -> Result<Community, TrustError> {
        if self.anchors.is_empty() {
            return Err(TrustError::Config(
                "a community needs a trust anchor".into(),
            ));
        }
        let mut anchors = Vec::new();
        for der in &self.anchors {
            let cert = CertificateDer::from(der.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| TrustError::Config(format!("unusable trust anchor: {e:?}")))?;
            anchors.push(anchor.to_owned());
        }
        let mut crls = Vec::new();
        for der in &self.crls {
            let owned = OwnedCertRevocationList::from_der(der)
                .map_err(|e| TrustError::Config(format!("not a valid CRL: {e:?}")))?;
            let (_, parsed) = CertificateRevocationList::from_der(der)
                .map_err(|_| TrustError::Config("not a valid CRL".into()))?;
            crls.push(LoadedCrl {
                issuer_raw: parsed.tbs_cert_list.issuer.as_raw().to_vec(),
                next_update: parsed.next_update().map(|t| t.timestamp()),
                crl: CertRevocationList::from(owned),
            });
        }
        Ok(Community {
            uri: self.uri,
            anchors,
            intermediates: self
                .intermediates
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            crls,
            policy: self.policy,
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
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// When the first of the community's CRLs is due to be replaced.
    pub fn earliest_crl_next_update(&self) -> Option<i64> {
        self.crls.iter().filter_map(|c| c.next_update).min()
    }
}

/// UDAP does not constrain the extended key usage of a leaf (test-kits.md §A.6), so any EKU, or none, is
/// accepted; key usage is checked separately.
struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for oid in iter {
            oid?;
        }
        Ok(())
    }
}

fn map_webpki(e: webpki::Error) -> TrustError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => TrustError::Expired,
        E::CertNotValidYet { .. } => TrustError::NotYetValid,
        E::UnknownIssuer => TrustError::UnknownIssuer,
        E::CertRevoked => TrustError::Revoked,
        E::UnknownRevocationStatus | E::CrlExpired { .. } => TrustError::RevocationUnknown,
        E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedSignatureAlgorithmContext(_) => TrustError::BadSignature,
        E::CaUsedAsEndEntity => TrustError::NotEndEntity,
        E::MaximumPathDepthExceeded | E::MaximumPathBuildCallsExceeded => TrustError::ChainTooLong,
        other => TrustError::Malformed(format!("{other:?}")),
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn leaf_checks(der: &[u8]) -> Result<(X509Certificate<'_>, Vec<String>, LeafKey), TrustError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| TrustError::Malformed("the leaf is not an X.509 certificate".into()))?;
    if !rest.is_empty() {
        return Err(TrustError::Malformed("trailing data after the leaf".into()));
    }
    if cert.is_ca() {
        return Err(TrustError::NotEndEntity);
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        if !ku.value.digital_signature() {
            return Err(TrustError::KeyUsage);
        }
    }
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                uris.push(u.to_string());
            }
        }
    }
    if uris.is_empty() {
        return Err(TrustError::NoSanUri);
    }
    let key = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => LeafKey::Rsa {
            bits: rsa.key_size(),
        },
        Ok(PublicKey::RSA(_)) => {
            return Err(TrustError::UnsupportedKey(
                "RSA keys must have at least 2048 bits".into(),
            ))
        }
        Ok(PublicKey::EC(_)) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => LeafKey::P256,
                Some(OID_P384) => LeafKey::P384,
                _ => return Err(TrustError::UnsupportedKey("unsupported curve".into())),
            }
        }
        _ => return Err(TrustError::UnsupportedKey("unsupported key type".into())),
    };
    Ok((cert, uris, key))
}

/// CRL distribution point URLs (http/https) of a certificate.
pub fn crl_distribution_points(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            if u.starts_with("http://") || u.starts_with("https://") {
                                out.push(u.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Validate `x5c` (leaf first) against `community` at `now` (unix seconds).
pub fn validate_chain(
    community: &Community,
    x5c: &[Vec<u8>],
    now: i64,
) -> Result<ValidatedLeaf, TrustError> {
    if x5c.is_empty() {
        return Err(TrustError::Malformed("x5c is empty".into()));
    }
    if x5c.len() > MAX_CHAIN {
        return Err(TrustError::ChainTooLong);
    }
    let (leaf, san_uris, key) = leaf_checks(&x5c[0])?;
    let leaf_der = CertificateDer::from(x5c[0].as_slice());
    let ee = EndEntityCert::try_from(&leaf_der).map_err(map_webpki)?;
    let mut intermediates: Vec<CertificateDer<'_>> = x5c[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    intermediates.extend(community.intermediates.iter().cloned());
    let crl_refs: Vec<&CertRevocationList<'_>> = community.crls.iter().map(|c| &c.crl).collect();
    let revocation = if crl_refs.is_empty() {
        None
    } else {
        let builder = RevocationOptionsBuilder::new(&crl_refs)
            .map_err(|_| TrustError::RevocationUnknown)?
            .with_depth(RevocationCheckDepth::Chain)
            // A certificate whose issuer publishes no CRL we hold is checked against its distribution
            // points below; the policy decides only for those that declare one.
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(match community.policy {
                RevocationPolicy::FailClosed => ExpirationPolicy::Enforce,
                RevocationPolicy::FailOpen => ExpirationPolicy::Ignore,
            });
        Some(builder.build())
    };
    let secs = u64::try_from(now).map_err(|_| TrustError::Malformed("time before 1970".into()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &community.anchors,
            &intermediates,
            time,
            AnyEku,
            revocation,
            None,
        )
        .map_err(map_webpki)?;
    // Certificates that declare a CRL distribution point must have their status known: either a CRL from
    // their issuer is held (and was checked above) or the community's policy allows the unknown.
    if community.policy == RevocationPolicy::FailClosed {
        let mut chain: Vec<Vec<u8>> = vec![x5c[0].clone()];
        for c in path.intermediate_certificates() {
            chain.push(c.der().to_vec());
        }
        for der in &chain {
            if crl_distribution_points(der).is_empty() {
                continue;
            }
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                return Err(TrustError::Malformed(
                    "unparseable certificate in the chain".into(),
                ));
            };
            let issuer = cert.tbs_certificate.issuer.as_raw();
            if !community.crls.iter().any(|c| c.issuer_raw == issuer) {
                return Err(TrustError::RevocationUnknown);
            }
        }
    }
    let mut not_after = leaf.validity().not_after.timestamp();
    for der in &x5c[1..] {
        if let Ok((_, c)) = X509Certificate::from_der(der) {
            not_after = not_after.min(c.validity().not_after.timestamp());
        }
    }
    Ok(ValidatedLeaf {
        spki_der: leaf.public_key().raw.to_vec(),
        san_uris,
        not_after,
        serial_hex: hex::encode(leaf.raw_serial()),
        fingerprint_sha256: Sha256::digest(&x5c[0]).into(),
        key,
        community: community.uri.clone(),
    })
}

/// A cached validation and the time it stays valid until.
type CacheEntry = (Arc<ValidatedLeaf>, i64);

/// Validated chains by a hash of the exact `x5c` bytes and the community, valid until the earliest of the
/// chain's expiry and the community's next CRL update. Failures are never cached.
pub struct ChainCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

fn cache_key(community: &str, x5c: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((community.len() as u64).to_be_bytes());
    h.update(community.as_bytes());
    for der in x5c {
        h.update((der.len() as u64).to_be_bytes());
        h.update(der);
    }
    h.finalize().into()
}

impl ChainCache {
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn validate_cached(
        &self,
        community: &Community,
        x5c: &[Vec<u8>],
        now: i64,
    ) -> Result<Arc<ValidatedLeaf>, TrustError> {
        let key = cache_key(&community.uri, x5c);
        if let Ok(map) = self.entries.lock() {
            if let Some((leaf, until)) = map.get(&key) {
                if now < *until {
                    return Ok(leaf.clone());
                }
            }
        }
        let leaf = Arc::new(validate_chain(community, x5c, now)?);
        let until = community
            .earliest_crl_next_update()
            .map_or(leaf.not_after, |t| t.min(leaf.not_after));
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.capacity {
                map.retain(|_, (_, u)| *u > now);
                if map.len() >= self.capacity {
                    map.clear();
                }
            }
            map.insert(key, (leaf.clone(), until));
        }
        Ok(leaf)
    }

    /// Forget every chain validated against `uri` (its CRLs or anchors changed).
    pub fn invalidate_community(&self, uri: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, (leaf, _)| leaf.community != uri);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod testpki {
    //! A small PKI for tests.
    use super::*;
    use crate::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
    use time::{Duration, OffsetDateTime};

    pub struct TestCommunity {
        pub c: pki::Community,
    }

    impl TestCommunity {
        pub fn new(kind: KeyKind) -> Self {
            Self::named("T", kind)
        }

        pub fn named(name: &str, kind: KeyKind) -> Self {
            let now = OffsetDateTime::now_utc();
            TestCommunity {
                c: pki::create_community(
                    name,
                    kind,
                    now - Duration::days(2),
                    now + Duration::days(30),
                    None,
                )
                .unwrap(),
            }
        }

        pub fn community(&self, crls: &[String]) -> Community {
            let mut b = Community::builder("urn:test")
                .anchors_pem(self.c.root_cert_pem.as_bytes())
                .unwrap();
            for crl in crls {
                b = b.crl(crl.as_bytes()).unwrap();
            }
            b.build().unwrap()
        }

        pub fn leaf(
            &self,
            uri: Option<&str>,
            kind: KeyKind,
            from_days: i64,
            to_days: i64,
        ) -> pki::IssuedCert {
            self.leaf_crl(uri, kind, from_days, to_days, None)
        }

        pub fn leaf_crl(
            &self,
            uri: Option<&str>,
            kind: KeyKind,
            from_days: i64,
            to_days: i64,
            crl: Option<&str>,
        ) -> pki::IssuedCert {
            let now = OffsetDateTime::now_utc();
            let req = EndEntityRequest {
                common_name: "leaf".into(),
                san_uris: uri.map(|u| vec![u.to_string()]).unwrap_or_default(),
                dns_names: if uri.is_none() {
                    vec!["x.example".into()]
                } else {
                    vec![]
                },
                ip_addresses: vec![],
                key: kind,
                not_before: now + Duration::days(from_days),
                not_after: now + Duration::days(to_days),
                usage: if uri.is_some() {
                    EndEntityUsage::UdapClient
                } else {
                    EndEntityUsage::TlsServer
                },
            };
            pki::issue_end_entity_with_crl(
                &self.c.intermediate_cert_pem,
                &self.c.intermediate_key_pem,
                &req,
                crl,
            )
            .unwrap()
        }
    }

    pub fn x5c(issued: &pki::IssuedCert) -> Vec<Vec<u8>> {
        crate::certs::pem_certs(issued.chain_pem.as_bytes()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testpki::*;
    use super::*;
    use crate::pki::{self, KeyKind, RevokedEntry};
    use time::{Duration, OffsetDateTime};

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn valid_rsa_and_ec_chains() {
        for kind in [KeyKind::Rsa2048, KeyKind::P256] {
            let t = TestCommunity::new(kind);
            let leaf = t.leaf(Some("https://app.example/"), kind, -1, 10);
            let v = validate_chain(&t.community(&[]), &x5c(&leaf), now()).unwrap();
            assert_eq!(v.san_uris, vec!["https://app.example/"]);
            assert_eq!(v.serial_hex, leaf.serial_hex);
            assert_eq!(v.community, "urn:test");
        }
    }

    #[test]
    fn time_trust_and_shape_failures() {
        let t = TestCommunity::new(KeyKind::P256);
        let c = t.community(&[]);
        let expired = t.leaf(Some("https://a/"), KeyKind::P256, -10, -1);
        assert_eq!(
            validate_chain(&c, &x5c(&expired), now()),
            Err(TrustError::Expired)
        );
        let future = t.leaf(Some("https://a/"), KeyKind::P256, 2, 10);
        assert_eq!(
            validate_chain(&c, &x5c(&future), now()),
            Err(TrustError::NotYetValid)
        );
        let other = TestCommunity::named("Other", KeyKind::P256);
        let stranger = other.leaf(Some("https://a/"), KeyKind::P256, -1, 10);
        assert_eq!(
            validate_chain(&c, &x5c(&stranger), now()),
            Err(TrustError::UnknownIssuer)
        );
        // A look-alike community (same names, other keys) fails on the signature.
        let twin = TestCommunity::new(KeyKind::P256);
        let lookalike = twin.leaf(Some("https://a/"), KeyKind::P256, -1, 10);
        assert_eq!(
            validate_chain(&c, &x5c(&lookalike), now()),
            Err(TrustError::BadSignature)
        );
        let no_uri = t.leaf(None, KeyKind::P256, -1, 10);
        assert_eq!(
            validate_chain(&c, &x5c(&no_uri), now()),
            Err(TrustError::NoSanUri)
        );
        // Leaf without its intermediate: no path.
        let good = t.leaf(Some("https://a/"), KeyKind::P256, -1, 10);
        assert_eq!(
            validate_chain(&c, &x5c(&good)[..1], now()),
            Err(TrustError::UnknownIssuer)
        );
        // A CA presented as the leaf.
        let inter = crate::certs::pem_certs(t.c.intermediate_cert_pem.as_bytes()).unwrap();
        assert_eq!(
            validate_chain(&c, &inter, now()),
            Err(TrustError::NotEndEntity)
        );
        // Too long, empty, garbage.
        let long = vec![x5c(&good)[0].clone(); 11];
        assert_eq!(
            validate_chain(&c, &long, now()),
            Err(TrustError::ChainTooLong)
        );
        assert!(validate_chain(&c, &[], now()).is_err());
        assert!(matches!(
            validate_chain(&c, &[vec![1, 2, 3]], now()),
            Err(TrustError::Malformed(_))
        ));
        // A tampered leaf signature.
        let mut bad = x5c(&good);
        let n = bad[0].len();
        bad[0][n - 5] ^= 0xff;
        assert!(validate_chain(&c, &bad, now()).is_err());
    }

    #[test]
    fn revocation_by_crl() {
        let t = TestCommunity::new(KeyKind::P256);
        let revoked = t.leaf(Some("https://r/"), KeyKind::P256, -1, 10);
        let fine = t.leaf(Some("https://f/"), KeyKind::P256, -1, 10);
        let n = OffsetDateTime::now_utc();
        let crl = pki::make_crl(
            &t.c.intermediate_cert_pem,
            &t.c.intermediate_key_pem,
            &[RevokedEntry {
                serial_hex: revoked.serial_hex.clone(),
                revoked_at: n,
                reason: None,
            }],
            1,
            n - Duration::hours(1),
            n + Duration::days(1),
        )
        .unwrap();
        let c = t.community(&[crl]);
        assert_eq!(
            validate_chain(&c, &x5c(&revoked), now()),
            Err(TrustError::Revoked)
        );
        assert!(validate_chain(&c, &x5c(&fine), now()).is_ok());
        // An expired CRL makes the status unknown under fail-closed.
        let stale = pki::make_crl(
            &t.c.intermediate_cert_pem,
            &t.c.intermediate_key_pem,
            &[],
            2,
            n - Duration::days(3),
            n - Duration::days(1),
        )
        .unwrap();
        let c = t.community(std::slice::from_ref(&stale));
        assert_eq!(
            validate_chain(&c, &x5c(&fine), now()),
            Err(TrustError::RevocationUnknown)
        );
        let open = Community::builder("urn:test")
            .anchors_pem(t.c.root_cert_pem.as_bytes())
            .unwrap()
            .crl(stale.as_bytes())
            .unwrap()
            .unknown_revocation(RevocationPolicy::FailOpen)
            .build()
            .unwrap();
        assert!(validate_chain(&open, &x5c(&fine), now()).is_ok());
        // A leaf that declares a distribution point whose CRL is not held: unknown, fail closed.
        let with_dp = t.leaf_crl(
            Some("https://d/"),
            KeyKind::P256,
            -1,
            10,
            Some("http://127.0.0.1:9/x.crl"),
        );
        assert_eq!(
            crl_distribution_points(&x5c(&with_dp)[0]),
            vec!["http://127.0.0.1:9/x.crl"]
        );
        assert_eq!(
            validate_chain(&t.community(&[]), &x5c(&with_dp), now()),
            Err(TrustError::RevocationUnknown)
        );
    }

    #[test]
    fn cache_hits_and_invalidation() {
        let t = TestCommunity::new(KeyKind::P256);
        let c = t.community(&[]);
        let cache = ChainCache::new(4);
        let leaf = t.leaf(Some("https://a/"), KeyKind::P256, -1, 10);
        let a = cache.validate_cached(&c, &x5c(&leaf), now()).unwrap();
        let b = cache.validate_cached(&c, &x5c(&leaf), now()).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "second validation should be a cache hit"
        );
        cache.invalidate_community("urn:test");
        let d = cache.validate_cached(&c, &x5c(&leaf), now()).unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        // Failures are not cached; entries expire with the chain.
        let expired = t.leaf(Some("https://e/"), KeyKind::P256, -10, -1);
        assert!(cache.validate_cached(&c, &x5c(&expired), now()).is_err());
        assert_eq!(cache.len(), 1);
        let far = now() + 40 * 86_400;
        assert!(cache.validate_cached(&c, &x5c(&leaf), far).is_err());
    }
}
