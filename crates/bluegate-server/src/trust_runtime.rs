//! Trust communities as the server validates against them: anchors, intermediates and CRLs from the
//! configured files (re-read when they change), CRLs fetched from the certificates' distribution points
//! (cached until their `nextUpdate`), and a chain cache per community.
//!
//! Distribution points are attacker-supplied URLs until the certificate that carries them is known to chain
//! to the community, so nothing is fetched for a chain that does not verify (no server-side request
//! forgery through a self-made certificate).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bluegate_core::jose;
use bluegate_core::trust::{self, ChainCache, Community, RevocationPolicy as CoreRevocation};

use crate::config::{CommunityConfig, ConfigError, RevocationPolicy};

/// Longest CRL accepted from a distribution point.
const MAX_CRL_BYTES: usize = 4 * 1024 * 1024;
/// A CRL without `nextUpdate`, or one that could not be fetched, is retried after this long.
const RETRY_SECS: i64 = 300;

struct Fetched {
    der: Option<Vec<u8>>,
    /// When to fetch again.
    refresh_at: i64,
}

pub struct TrustRuntime {
    pub uri: String,
    source_name: String,
    index: usize,
    config: CommunityConfig,
    community: RwLock<Arc<Community>>,
    /// The same anchors without revocation, used only to decide whether a chain is genuine enough for
    /// its distribution points to be fetched.
    anchors_only: Community,
    pub cache: ChainCache,
    crl_mtimes: RwLock<Vec<Option<SystemTime>>>,
    fetched: Mutex<HashMap<String, Fetched>>,
    /// The CRL distribution points of each chain seen (by a digest of its certificates), with the
    /// anchors' and intermediates': a pure function of the certificates, so that a request presenting a
    /// known chain does not parse its certificates again to find them.
    chain_points: Mutex<HashMap<[u8; 32], Arc<Vec<String>>>>,
    /// The distribution points of the anchors and configured intermediates.
    community_points: Vec<String>,
    http: reqwest::Client,
}

/// Most chains whose distribution points are remembered (the memo starts again when full).
const CHAIN_POINTS_CAPACITY: usize = 10_000;

/// A digest of a chain's certificates (each one's length, then its bytes).
fn chain_digest(x5c: &[Vec<u8>]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for der in x5c {
        ctx.update(&(der.len() as u64).to_be_bytes());
        ctx.update(der);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn mtimes(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(
    source_name: &str,
    index: usize,
    c: &CommunityConfig,
    extra_crls: &[Vec<u8>],
    with_revocation: bool,
) -> Result<Community, ConfigError> {
    let err = |k: String, m: String| ConfigError {
        source_name: source_name.to_string(),
        key: format!("communities[{index}].{k}"),
        message: m,
    };
    let read = |k: String, p: &PathBuf| {
        std::fs::read(p).map_err(|e| err(k, format!("cannot read {}: {e}", p.display())))
    };
    let mut builder = Community::builder(&c.uri);
    for (i, p) in c.trust_anchors.iter().enumerate() {
        let bytes = read(format!("trust_anchors[{i}]"), p)?;
        builder = builder.anchors_pem(&bytes).map_err(|e| {
            err(
                format!("trust_anchors[{i}]"),
                format!("{}: {e}", p.display()),
            )
        })?;
    }
    for (i, p) in c.intermediates.iter().enumerate() {
        let bytes = read(format!("intermediates[{i}]"), p)?;
        builder = builder.intermediates_pem(&bytes).map_err(|e| {
            err(
                format!("intermediates[{i}]"),
                format!("{}: {e}", p.display()),
            )
        })?;
    }
    if with_revocation {
        for (i, p) in c.crls.iter().enumerate() {
            let bytes = read(format!("crls[{i}]"), p)?;
            builder = builder
                .crl(&bytes)
                .map_err(|e| err(format!("crls[{i}]"), format!("{}: {e}", p.display())))?;
        }
        for der in extra_crls {
            // A fetched CRL that does not parse is skipped; the revocation policy then decides.
            if trust::parse_crl(der).is_ok() {
                builder = builder
                    .crl(der)
                    .map_err(|e| err("crls".into(), e.to_string()))?;
            }
        }
    }
    let policy = match (with_revocation, c.revocation) {
        (false, _) | (true, RevocationPolicy::FailOpen) => CoreRevocation::FailOpen,
        (true, RevocationPolicy::FailClosed) => CoreRevocation::FailClosed,
    };
    builder
        .unknown_revocation(policy)
        .build()
        .map_err(|e| err("trust_anchors".to_string(), e.to_string()))
}

impl TrustRuntime {
    pub fn load(source_name: &str, index: usize, c: &CommunityConfig) -> Result<Self, ConfigError> {
        let community = build(source_name, index, c, &[], true)?;
        let anchors_only = build(source_name, index, c, &[], false)?;
        let community_points = anchors_only.crl_distribution_points();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError {
                    source_name: source_name.to_string(),
                    key: String::new(),
                    message: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError {
                source_name: source_name.to_string(),
                key: String::new(),
                message: format!("cannot build the CRL client: {e}"),
            })?;
        Ok(TrustRuntime {
            uri: c.uri.clone(),
            source_name: source_name.to_string(),
            index,
            config: c.clone(),
            community: RwLock::new(Arc::new(community)),
            anchors_only,
            cache: ChainCache::new(10_000),
            crl_mtimes: RwLock::new(mtimes(&c.crls)),
            fetched: Mutex::new(HashMap::new()),
            chain_points: Mutex::new(HashMap::new()),
            community_points,
            http,
        })
    }

    pub fn community(&self) -> Arc<Community> {
        match self.community.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn rebuild(&self) {
        let extra: Vec<Vec<u8>> = self
            .fetched
            .lock()
            .map(|m| m.values().filter_map(|f| f.der.clone()).collect())
            .unwrap_or_default();
        match build(&self.source_name, self.index, &self.config, &extra, true) {
            Ok(c) => {
                if let Ok(mut g) = self.community.write() {
                    *g = Arc::new(c);
                }
                self.cache.invalidate_community(&self.uri);
                if let Ok(mut m) = self.crl_mtimes.write() {
                    *m = mtimes(&self.config.crls);
                }
            }
            Err(e) => tracing::warn!(error = %e, "CRL reload failed; keeping the previous CRLs"),
        }
    }

    /// Re-read the community when a configured CRL file changed; the chain cache is dropped so that a newly
    /// revoked certificate is refused at once.
    pub fn reload_if_changed(&self) {
        let now = mtimes(&self.config.crls);
        let changed = self
            .crl_mtimes
            .read()
            .map(|old| *old != now)
            .unwrap_or(true);
        if changed {
            tracing::info!(community = %self.uri, "reloading CRLs");
            self.rebuild();
        }
    }

    /// Before a JWT's `x5c` is validated: fetch the CRLs its certificates point to, if the chain is genuine
    /// and the CRLs are missing or due.
    pub async fn prepare_for_jwt(&self, token: &str, now: i64) {
        let Ok(parsed) = jose::parse_compact(token, &jose::Alg::ALL) else {
            return;
        };
        let Ok(x5c) = parsed.x5c_der() else {
            return;
        };
        self.prepare(&x5c, now).await;
    }

    pub async fn prepare(&self, x5c: &[Vec<u8>], now: i64) {
        let urls = self.distribution_points(x5c);
        let due: Vec<String> = match self.fetched.lock() {
            Ok(m) => urls
                .iter()
                .filter(|u| m.get(*u).is_none_or(|f| f.refresh_at <= now))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        if due.is_empty() {
            return;
        }
        let Ok(t) = trust::unix_time(now) else {
            return;
        };
        if trust::validate_chain(&self.anchors_only, x5c, t).is_err() {
            return;
        }
        for url in due {
            let fetched = self.fetch(&url, now).await;
            if let Ok(mut m) = self.fetched.lock() {
                m.insert(url, fetched);
            }
        }
        self.rebuild();
    }

    /// Every CRL distribution point that matters for `x5c` (its own and the community's), sorted, once.
    fn distribution_points(&self, x5c: &[Vec<u8>]) -> Arc<Vec<String>> {
        let key = chain_digest(x5c);
        if let Some(known) = self
            .chain_points
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return known;
        }
        let mut urls: Vec<String> = x5c
            .iter()
            .flat_map(|c| trust::crl_distribution_points(c))
            .chain(self.community_points.iter().cloned())
            .collect();
        urls.sort();
        urls.dedup();
        let urls = Arc::new(urls);
        if let Ok(mut m) = self.chain_points.lock() {
            if m.len() >= CHAIN_POINTS_CAPACITY {
                m.clear();
            }
            m.insert(key, urls.clone());
        }
        urls
    }

    async fn fetch(&self, url: &str, now: i64) -> Fetched {
        let failed = Fetched {
            der: None,
            refresh_at: now + RETRY_SECS,
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return failed;
        }
        let resp = match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(url, status = %r.status(), "CRL distribution point answered an error");
                return failed;
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "CRL distribution point unreachable");
                return failed;
            }
        };
        if resp
            .content_length()
            .is_some_and(|l| l as usize > MAX_CRL_BYTES)
        {
            return failed;
        }
        let Ok(bytes) = resp.bytes().await else {
            return failed;
        };
        if bytes.len() > MAX_CRL_BYTES || trust::parse_crl(&bytes).is_err() {
            tracing::warn!(url, "CRL distribution point served no valid CRL");
            return failed;
        }
        let next_update = trust::crl_next_update(&bytes);
        Fetched {
            der: Some(bytes.to_vec()),
            refresh_at: next_update.unwrap_or(now + RETRY_SECS).max(now + 60),
        }
    }
}
