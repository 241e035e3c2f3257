//! Starting and stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use bluegate_core::discovery::Endpoints;
use bluegate_store::{Store, StoreError, StoreLocation};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::app::{router, AppState, SharedState};
use crate::communities::CommunityRuntime;
use crate::config::{Config, ConfigError};
use crate::signing::{self, KeyError, Signing};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How stale this node's in-memory mirrors of the store (revocations, client records) may be: a change made
/// on another node (or with the CLI) takes effect here within this bound.
pub const MIRROR_STALENESS: Duration = Duration::from_secs(1);
/// Most client records kept in memory.
const CLIENT_CACHE_CAPACITY: usize = 10_000;

/// Open the store named by the configuration: PostgreSQL when `database_url` is set, else SQLite in
/// `data_dir`.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let location = match &config.database_url {
        Some(url) => StoreLocation::Postgres(url.clone()),
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                StartError::Config(ConfigError {
                    source_name: config.source_name.clone(),
                    key: "data_dir".to_string(),
                    message: format!("cannot create {}: {e}", config.data_dir.display()),
                })
            })?;
            StoreLocation::Sqlite(config.sqlite_path())
        }
    };
    Ok(bluegate_store::connect(&location).await?)
}

/// Everything the server needs, loaded and checked, before anything listens.
pub async fn build_state(config: Config) -> Result<SharedState, StartError> {
    let endpoints = Endpoints::for_public_url(config.public_url.as_str());
    let mut communities = Vec::new();
    for (i, c) in config.communities.iter().enumerate() {
        communities.push(CommunityRuntime::load(
            &config.source_name,
            i,
            c,
            &endpoints.fhir_base,
        )?);
    }
    let mut trust = Vec::new();
    for (i, c) in config.communities.iter().enumerate() {
        trust.push(crate::trust_runtime::TrustRuntime::load(
            &config.source_name,
            i,
            c,
        )?);
    }
    let registration_policy = bluegate_core::udap::RegistrationPolicy {
        registration_endpoint: endpoints.register.clone(),
        leeway: config.security.clock_skew_secs as i64,
        scopes_offered: bluegate_core::discovery::scopes_supported(),
        carin_mode: config.security.carin_mode,
        required_certifications: Vec::new(),
    };
    let store = open_store(&config).await?;
    // A first bulk import drops the search indexes and builds them at its end; if it was interrupted,
    // they are built here, before anything is served (searches without them would scan).
    let built = store.build_search_indexes().await?;
    if built > 0 {
        tracing::warn!(
            built,
            "built missing FHIR search indexes (after an interrupted import)"
        );
    }
    let now = OffsetDateTime::now_utc();
    let created = signing::ensure_keys(store.as_ref(), now).await?;
    if !created.is_empty() {
        tracing::info!(kids = ?created, "created signing keys");
    }
    let signing = Signing::load(store.as_ref(), now).await?;
    let gateway = match &config.fhir.upstream {
        None => None,
        Some(up) => Some(crate::fhir::gateway::Gateway::new(up).map_err(|e| {
            StartError::Config(ConfigError {
                source_name: config.source_name.clone(),
                key: String::new(),
                message: e.to_string(),
            })
        })?),
    };
    let revocations =
        crate::revocations::Revocations::new(now, config.tokens.access_token, MIRROR_STALENESS);
    let clients = crate::clients::ClientCache::new(MIRROR_STALENESS, CLIENT_CACHE_CAPACITY);
    let audit = crate::audit::AuditSink::start(store.clone());
    Ok(Arc::new(AppState {
        config,
        endpoints,
        store,
        signing,
        communities,
        trust,
        registration_policy,
        audit,
        metrics: crate::telemetry::prometheus(),
        revocations,
        clients,
        gateway,
    }))
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: SharedState,
    handle: Handle,
    server: JoinHandle<std::io::Result<()>>,
    upkeep: JoinHandle<()>,
}

impl Running {
    /// Stop accepting connections and let open requests finish (up to `grace`).
    pub async fn shutdown(self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
        let _ = self.server.await;
        self.upkeep.abort();
        self.state.audit.flush().await;
    }

    /// Wait until the server stops by itself (it only does on an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Load everything, bind, and serve in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::server_config(&config.source_name, t)?),
        None => None,
    };
    let listen = config.listen;
    let state = build_state(config).await?;
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::new();
    // Bind here, not inside the spawned task, so that "address in use" is reported as a start error.
    let listener = std::net::TcpListener::bind(listen).map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    // TCP_NODELAY: a response written in more than one segment must not wait for the client's delayed
    // ACK (Nagle), which costs up to 40 ms.
    let server = match tls {
        Some(tls) => {
            let acceptor =
                RustlsAcceptor::new(RustlsConfig::from_config(tls)).acceptor(NoDelayAcceptor);
            let server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor)
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    let upkeep = tokio::spawn(upkeep(state.clone()));
    Ok(Running {
        addr,
        state,
        handle,
        server,
        upkeep,
    })
}

/// Periodic chores: drop expired replay-cache entries and codes, pick up rotated keys, keep the metrics
/// recorder's histograms fresh.
async fn upkeep(state: SharedState) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let now = OffsetDateTime::now_utc();
        if let Err(e) = state.store.purge_expired(now).await {
            tracing::warn!(error = %e, "purging expired entries failed");
        }
        if let Err(e) = state.signing.reload(state.store.as_ref(), now).await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
        for t in &state.trust {
            t.reload_if_changed();
        }
        state.metrics.run_upkeep();
    }
}
