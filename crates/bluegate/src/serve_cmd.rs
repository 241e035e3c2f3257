//! `bluegate serve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bluegate_server::{config, demo, serve, telemetry};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it Bluegate runs in demo mode: it creates ./bluegate-data with a
    /// development PKI, demo members and a configuration file, and serves https://localhost:8443.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env = config::process_env();
    let (cfg, demo_info) = match &args.config {
        Some(path) => (config::load_file(path, &env)?, None),
        None => {
            let dir = Path::new(demo::DEMO_DATA_DIR);
            let prepared = demo::prepare(dir).context("preparing demo mode")?;
            let cfg = config::load_file(&prepared.config_path, &env)?;
            (cfg, Some(prepared))
        }
    };
    telemetry::init_logging(&cfg.log);
    let mut running = serve::start(cfg).await?;
    if let Some(prepared) = demo_info {
        demo::seed(&running.state)
            .await
            .map_err(|e| anyhow::anyhow!("seeding demo members: {e}"))?;
        println!("{}", demo::banner(&running.state, &prepared, running.addr));
    } else {
        tracing::info!(addr = %running.addr, fhir_base = %running.state.endpoints.fhir_base, "listening");
    }
    tokio::select! {
        r = running.wait() => {
            r.context("server stopped")?;
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            running.shutdown(Duration::from_secs(10)).await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
