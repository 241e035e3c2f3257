//! `bluegate app fetch`: download everything the stored token opens (the context patient, their Coverage,
//! their ExplanationOfBenefits with `_include=ExplanationOfBenefit:*`) as NDJSON per resource type,
//! resumably, refreshing tokens as needed (each rotated refresh token is saved to the state file before it
//! is used), with a progress line on a terminal and a summary. The work is
//! `bluegate_client::download`; this is the state file and the printing.

use std::path::PathBuf;

use anyhow::Context;
use bluegate_client::download::{self, DownloadOptions};
use bluegate_client::fhir::FhirClient;
use bluegate_client::state::AppState;
use serde_json::json;

use crate::app_cmd::{
    base_key_pub, client_auth, discover_server, effective_trust, http_client, not_registered,
    StateArg, TrustArgs,
};

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The server's FHIR base.
    pub url: String,
    /// Output directory (created if needed); running again with the same directory resumes.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Resources per page to ask for (`_count`).
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Largest response accepted, in bytes.
    #[arg(long, default_value_t = bluegate_client::http::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: u64,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub state: StateArg,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: FetchArgs) -> anyhow::Result<()> {
    let state_path = a.state.path()?;
    let st = AppState::load(&state_path)?;
    let key_url = base_key_pub(&a.url);
    let server = st
        .server(&key_url)
        .cloned()
        .with_context(|| not_registered(&key_url, &state_path))?;
    let tokens = server
        .tokens
        .clone()
        .with_context(|| format!("no tokens for {key_url}; run `bluegate app launch {key_url}`"))?;
    let patient = tokens
        .patient
        .clone()
        .context("the stored token has no patient in context (launch with launch/patient)")?;
    let trust = effective_trust(&a.trust, Some(&server.trust))?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, &key_url, &trust).await?;
    let token_endpoint = d
        .token_endpoint()
        .context("the server advertises no token_endpoint")?;
    let auth = client_auth(&server)?;
    let persist_path = state_path.clone();
    let persist_key = key_url.clone();
    let mut fhir = FhirClient::new(http, &d.fhir_base, tokens)?
        .max_response_bytes(a.max_response_bytes)
        .with_refresh(&token_endpoint, auth)
        .on_refresh(Box::new(move |t| {
            let mut st = AppState::load(&persist_path)?;
            if let Some(s) = st.server_mut(&persist_key) {
                s.tokens = Some(t.clone());
            }
            st.save(&persist_path)
        }));
    let show_progress = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |search: &str, pages: u64, new: u64| {
        if show_progress {
            eprint!("\r{search}: page {pages}, {new} new resources so far        ");
        }
    };
    let report = download::download(
        &mut fhir,
        &patient,
        &a.out,
        &DownloadOptions {
            page_size: a.page_size,
        },
        &mut progress,
    )
    .await;
    if show_progress {
        eprintln!();
    }
    let report = report.with_context(|| {
        format!(
            "the download stopped; run the same command again to resume from {}",
            a.out.display()
        )
    })?;
    let summary = download::summarize(&a.out)?;
    if a.json {
        let mut s = summary.to_json();
        s["new_this_run"] = json!(report.new);
        s["skipped"] = json!(report.skipped);
        s["out"] = json!(a.out);
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("downloaded to {}", a.out.display());
        for l in summary.lines() {
            println!("{l}");
        }
        if report.skipped > 0 {
            println!(
                "  skipped {} entries without a usable resourceType/id",
                report.skipped
            );
        }
    }
    Ok(())
}
