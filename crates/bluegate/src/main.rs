//! `bluegate`: the one command line of Bluegate (DESIGN §2, Contract: CLI).

mod admin;
mod app_cmd;
mod app_fetch;
mod bench;
mod bench_fhir_api;
mod bench_token;
mod fhir_cmd;
mod pki_cmd;
mod serve_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ENV_HELP: &str = "Every configuration key can be overridden by an environment variable \
BLUEGATE_<SECTION>_<KEY>, e.g. BLUEGATE_PUBLIC_URL, BLUEGATE_DATABASE_URL, BLUEGATE_TLS_CERT, \
BLUEGATE_TOKENS_ACCESS_TOKEN, BLUEGATE_LOG_FORMAT (see the README).";

#[derive(Parser)]
#[command(
    name = "bluegate",
    version,
    about = "Bluegate: CARIN Blue Button authorization server (SMART App Launch + UDAP), FHIR API and app toolkit",
    after_help = ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config: demo mode on embedded defaults (./bluegate-data, generated
    /// development PKI, demo members, https://localhost:8443).
    Serve(serve_cmd::ServeArgs),
    /// Manage members (the people who sign in) and the patients they may act for.
    #[command(subcommand)]
    Member(admin::MemberCmd),
    /// Manage OAuth clients: out-of-band SMART clients and UDAP-registered ones.
    #[command(subcommand)]
    Client(admin::ClientCmd),
    /// List and rotate the server's signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCmd),
    /// FHIR data in the built-in store.
    #[command(subcommand)]
    Fhir(fhir_cmd::FhirCmd),
    /// Read the audit log.
    Audit(admin::AuditArgs),
    /// Make trust communities for testing: CAs, end-entity certificates with URI SANs, CRLs.
    #[command(subcommand)]
    Pki(pki_cmd::PkiCmd),
    /// The client side: discover a server, register (UDAP), launch (sign a member in), refresh, fetch.
    #[command(subcommand)]
    App(app_cmd::AppCmd),
    /// Benchmarks of the hot paths against the cost of their cryptography, measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// `--config FILE`, defaulting to the demo configuration that `bluegate serve` writes.
#[derive(clap::Args, Clone)]
pub struct ConfigArg {
    /// Configuration file (TOML). Default: ./bluegate-data/bluegate.toml, written by demo mode.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> anyhow::Result<bluegate_server::config::Config> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None => {
                let demo = bluegate_server::demo::demo_config_path(std::path::Path::new(
                    bluegate_server::demo::DEMO_DATA_DIR,
                ));
                if !demo.exists() {
                    anyhow::bail!(
                        "no --config given and no demo configuration at {} (run `bluegate serve` once, or pass --config FILE)",
                        demo.display()
                    );
                }
                demo
            }
        };
        Ok(bluegate_server::config::load_file(
            &path,
            &bluegate_server::config::process_env(),
        )?)
    }
}

/// mimalloc rather than glibc's allocator: with parsing, database and TLS threads allocating and freeing
/// each other's buffers, glibc's arena upkeep took about a tenth of an import's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve_cmd::run(args).await,
            Command::Member(cmd) => admin::member(cmd).await,
            Command::Client(cmd) => admin::client(cmd).await,
            Command::Keys(cmd) => admin::keys(cmd).await,
            Command::Audit(args) => admin::audit(args).await,
            Command::Fhir(cmd) => fhir_cmd::run(cmd).await,
            Command::Pki(cmd) => pki_cmd::run(cmd),
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::App(cmd) => app_cmd::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
