//! Trust communities as the server validates against them: anchors, intermediates and CRLs read from the
//! configured files, a chain cache per community, and CRL files re-read when they change.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use bluegate_core::trust::{ChainCache, Community, RevocationPolicy as CoreRevocation};

use crate::config::{CommunityConfig, ConfigError, RevocationPolicy};

pub struct TrustRuntime {
    pub uri: String,
    config: CommunityConfig,
    community: RwLock<std::sync::Arc<Community>>,
    pub cache: ChainCache,
    crl_mtimes: RwLock<Vec<Option<SystemTime>>>,
}

fn mtimes(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(source_name: &str, index: usize, c: &CommunityConfig) -> Result<Community, ConfigError> {
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
    for (i, p) in c.crls.iter().enumerate() {
        let bytes = read(format!("crls[{i}]"), p)?;
        builder = builder
            .crl(&bytes)
            .map_err(|e| err(format!("crls[{i}]"), format!("{}: {e}", p.display())))?;
    }
    let policy = match c.revocation {
        RevocationPolicy::FailClosed => CoreRevocation::FailClosed,
        RevocationPolicy::FailOpen => CoreRevocation::FailOpen,
    };
    builder
        .unknown_revocation(policy)
        .build()
        .map_err(|e| err("trust_anchors".to_string(), e.to_string()))
}

impl TrustRuntime {
    pub fn load(source_name: &str, index: usize, c: &CommunityConfig) -> Result<Self, ConfigError> {
        let community = build(source_name, index, c)?;
        Ok(TrustRuntime {
            uri: c.uri.clone(),
            config: c.clone(),
            community: RwLock::new(std::sync::Arc::new(community)),
            cache: ChainCache::new(10_000),
            crl_mtimes: RwLock::new(mtimes(&c.crls)),
        })
    }

    pub fn community(&self) -> std::sync::Arc<Community> {
        match self.community.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-read the community when a CRL file changed; the chain cache is dropped so that a newly revoked
    /// certificate is refused at once.
    pub fn reload_if_changed(&self, source_name: &str, index: usize) {
        let now = mtimes(&self.config.crls);
        let changed = self
            .crl_mtimes
            .read()
            .map(|old| *old != now)
            .unwrap_or(true);
        if !changed {
            return;
        }
        match build(source_name, index, &self.config) {
            Ok(c) => {
                if let Ok(mut g) = self.community.write() {
                    *g = std::sync::Arc::new(c);
                }
                self.cache.invalidate_community(&self.uri);
                if let Ok(mut m) = self.crl_mtimes.write() {
                    *m = now;
                }
                tracing::info!(community = %self.uri, "reloaded CRLs");
            }
            Err(e) => tracing::warn!(error = %e, "CRL reload failed; keeping the previous CRLs"),
        }
    }
}
