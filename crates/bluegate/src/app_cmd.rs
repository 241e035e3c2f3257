//! `bluegate app`: the client side, for app developers and testers.

use std::path::PathBuf;

use anyhow::Context;
use bluegate_client::{discover, DiscoveryOptions};
use bluegate_core::trust::Community;
use serde_json::{json, Value};

#[derive(clap::Subcommand)]
pub enum AppCmd {
    /// Show what a server supports and whether its UDAP metadata verifies against your trust anchors.
    Discover {
        /// The server's FHIR base, e.g. https://localhost:8443/fhir
        url: String,
        /// Extra CA certificate(s) to trust for HTTPS (PEM), e.g. a test community's root.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Trust anchor(s) for the server's signed metadata (PEM); repeat for several.
        #[arg(long = "trust-anchor", value_name = "FILE")]
        trust_anchors: Vec<PathBuf>,
        /// UDAP community URI (`?community=`).
        #[arg(long)]
        community: Option<String>,
        /// Accept metadata that does not verify (testing only).
        #[arg(long)]
        insecure_skip_metadata_verification: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: AppCmd) -> anyhow::Result<()> {
    match cmd {
        AppCmd::Discover {
            url,
            ca,
            trust_anchors,
            community,
            insecure_skip_metadata_verification,
            json: as_json,
        } => {
            let ca_pem = match &ca {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            let http = bluegate_client::http::client(ca_pem.as_deref())?;
            let anchors = if trust_anchors.is_empty() {
                None
            } else {
                let mut b = Community::builder(community.as_deref().unwrap_or("urn:bluegate:app"));
                for p in &trust_anchors {
                    let bytes =
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    b = b
                        .anchors_pem(&bytes)
                        .with_context(|| format!("{}", p.display()))?;
                }
                Some(b.build()?)
            };
            let d = discover(
                &http,
                &url,
                &DiscoveryOptions {
                    community: community.as_deref(),
                    anchors: anchors.as_ref(),
                    allow_unverified: insecure_skip_metadata_verification,
                    now: time::OffsetDateTime::now_utc().unix_timestamp(),
                },
            )
            .await?;
            let caps = d
                .smart
                .as_ref()
                .and_then(|s| s.get("capabilities"))
                .cloned()
                .unwrap_or(Value::Null);
            let summary = json!({
                "fhir_base": d.fhir_base,
                "udap": d.udap.is_some(),
                "metadata_verified": d.verified.is_some(),
                "verification_error": d.verification_error,
                "authorization_endpoint": d.authorization_endpoint(),
                "token_endpoint": d.token_endpoint(),
                "registration_endpoint": d.registration_endpoint(),
                "smart_capabilities": caps,
                "udap_profiles": d.udap.as_ref().and_then(|u| u.get("udap_profiles_supported")).cloned(),
            });
            if as_json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("FHIR base:             {}", d.fhir_base);
                println!(
                    "UDAP metadata:         {}",
                    match (&d.udap, &d.verified, &d.verification_error) {
                        (None, _, _) => "not offered".to_string(),
                        (Some(_), Some(v), _) =>
                            format!("verified (signed by the FHIR base, expires at {})", v.exp),
                        (Some(_), None, Some(e)) => format!("NOT VERIFIED: {e}"),
                        (Some(_), None, None) => "not verified".to_string(),
                    }
                );
                for (k, v) in [
                    ("authorization endpoint", d.authorization_endpoint()),
                    ("token endpoint", d.token_endpoint()),
                    ("registration endpoint", d.registration_endpoint()),
                ] {
                    println!("{:<23}{}", format!("{k}:"), v.unwrap_or_else(|| "-".into()));
                }
                if let Value::Array(c) = caps {
                    let list: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
                    println!("SMART capabilities:    {}", list.join(", "));
                }
            }
            Ok(())
        }
    }
}
