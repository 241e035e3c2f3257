//! The whole app side in one program: discover a server (verifying its signed UDAP metadata), register by
//! UDAP DCR, sign a member in through the browser (loopback redirect listener), then read the member's
//! Patient and page through their ExplanationOfBenefits.
//!
//! Against the demo server (`bluegate serve`), from the directory holding `bluegate-data`:
//!
//! ```sh
//! cargo run -p bluegate-client --example launch_and_fetch -- \
//!     https://localhost:8443/fhir bluegate-data/pki
//! ```
//!
//! It uses the demo PKI: `root-ca.pem` (HTTPS and metadata anchor), the sample app certificate
//! (`sample-client-chain.pem`, `sample-client-key.pem`) and, for the https loopback redirect that UDAP
//! requires, the demo TLS certificate (`tls-chain.pem`, `tls-key.pem`, valid for 127.0.0.1). Open the
//! printed URL in a browser that trusts the demo CA and sign in as alice / alice-demo-password.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bluegate_client::fhir::FhirClient;
use bluegate_client::{
    discover, AppIdentity, AuthMethod, AuthorizationRequest, ClientAuth, ClientMetadata,
    DiscoveryOptions, LoopbackListener, PendingAuthorization,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(fhir_base), Some(pki)) = (args.next(), args.next().map(PathBuf::from)) else {
        eprintln!("usage: launch_and_fetch FHIR_BASE PKI_DIR");
        std::process::exit(2);
    };
    let root = std::fs::read(pki.join("root-ca.pem"))?;
    let http = bluegate_client::http::client(Some(&root))?;

    // 1. Discovery: refuse the server unless its signed metadata chains to our anchor.
    let anchors = bluegate_core::trust::Community::builder("urn:example:anchors")
        .anchors_pem(&root)?
        .build()?;
    let server = discover(
        &http,
        &fhir_base,
        &DiscoveryOptions {
            community: None,
            anchors: Some(&anchors),
            allow_unverified: false,
            now: bluegate_client::now(),
        },
    )
    .await?;
    let register_at = server
        .registration_endpoint()
        .ok_or("no registration endpoint")?;
    let token_endpoint = server.token_endpoint().ok_or("no token endpoint")?;

    // 2. Registration (or update of an earlier one) with a signed software statement.
    let identity = Arc::new(AppIdentity::from_files(
        &pki.join("sample-client-chain.pem"),
        &pki.join("sample-client-key.pem"),
        None,
    )?);
    let redirect_uri = "https://127.0.0.1:8765/";
    let scope = "launch/patient openid fhirUser offline_access patient/ExplanationOfBenefit.read patient/Patient.read";
    let reg = bluegate_client::registration::register(
        &http,
        &register_at,
        &identity,
        &ClientMetadata::authorization_code(
            "Example app",
            vec![redirect_uri.into()],
            scope,
            vec!["mailto:dev@app.example".into()],
            "https://app.example/logo.png",
            AuthMethod::PrivateKeyJwt,
        ),
    )
    .await?;
    println!("client_id {}", reg.client_id);

    // 3. Launch: listen first, then send the user to the authorization URL.
    let tls = bluegate_client::launch::loopback_tls(
        &std::fs::read(pki.join("tls-chain.pem"))?,
        &std::fs::read(pki.join("tls-key.pem"))?,
    )?;
    let listener = LoopbackListener::bind(redirect_uri, Some(tls)).await?;
    let auth = ClientAuth::PrivateKeyJwt {
        client_id: reg.client_id.clone(),
        identity,
    };
    let authorize_at = server
        .authorization_endpoint()
        .ok_or("no authorization endpoint")?;
    let pending = PendingAuthorization::new(&AuthorizationRequest {
        authorization_endpoint: &authorize_at,
        client_id: &reg.client_id,
        redirect_uri,
        scope,
        fhir_base: &server.fhir_base,
    })?;
    println!("open this URL to sign in:\n{}", pending.url());
    let code = listener.wait(&pending, Duration::from_secs(300)).await?;
    let tokens = bluegate_client::launch::finish(
        &http,
        &token_endpoint,
        server.issuer().as_deref(),
        &auth,
        &pending,
        &code,
    )
    .await?;
    let patient = tokens.patient.clone().ok_or("no patient in context")?;
    println!("signed in; patient {patient}; scopes {:?}", tokens.scope);

    // 4. FHIR: the token only ever goes to URLs under the FHIR base; one refresh on 401.
    let mut fhir = FhirClient::new(http, &server.fhir_base, tokens)?
        .with_refresh(&token_endpoint, auth)
        .on_refresh(Box::new(|_| {
            println!("(tokens refreshed; a real app stores the new refresh token here)");
            Ok(())
        }));
    let p = fhir.get(&format!("Patient/{patient}")).await?;
    println!("Patient/{patient}: {}", p["name"]);
    let pages = fhir
        .search_all(&format!("ExplanationOfBenefit?patient={patient}"), 100)
        .await?;
    let eobs: usize = pages
        .iter()
        .map(|b| b["entry"].as_array().map_or(0, Vec::len))
        .sum();
    println!(
        "{eobs} ExplanationOfBenefit entries in {} pages",
        pages.len()
    );
    Ok(())
}
