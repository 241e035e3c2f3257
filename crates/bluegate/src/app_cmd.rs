//! `bluegate app`: the client side, for app developers and testers: discover, register (UDAP DCR), launch
//! (loopback redirect), refresh, fetch. Built on `bluegate-client`; tokens live in the per-user state file
//! (0600) and are never printed unless `--show-tokens`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bluegate_client::state::{AppState, ServerState, Trust};
use bluegate_client::{
    discover, AppIdentity, AuthMethod, AuthorizationRequest, ClientAuth, ClientMetadata,
    Discovered, DiscoveryOptions, LoopbackListener, PendingAuthorization, TokenSet,
};
use bluegate_core::trust::Community;
use serde_json::{json, Value};

/// The scopes a CARIN Blue Button consumer app asks for by default (smart.md §3).
pub const DEFAULT_SCOPE: &str = "launch/patient openid fhirUser offline_access \
patient/ExplanationOfBenefit.read patient/Coverage.read patient/Patient.read \
patient/Organization.read patient/Practitioner.read";

/// How to reach and trust the server (saved at registration, reused later; flags override).
#[derive(clap::Args, Clone, Default)]
pub struct TrustArgs {
    /// Extra CA certificate(s) to trust for HTTPS (PEM), e.g. the demo's bluegate-data/pki/root-ca.pem.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Trust anchor(s) for the server's signed UDAP metadata (PEM); repeat for several.
    #[arg(long = "trust-anchor", value_name = "FILE")]
    pub trust_anchors: Vec<PathBuf>,
    /// UDAP community URI (`?community=`).
    #[arg(long)]
    pub community: Option<String>,
    /// Accept metadata that does not verify (testing only).
    #[arg(long)]
    pub insecure_skip_metadata_verification: bool,
}

/// The state file.
#[derive(clap::Args, Clone)]
pub struct StateArg {
    /// State file (registrations and tokens, written 0600). Default: $BLUEGATE_APP_STATE, else
    /// $XDG_STATE_HOME/bluegate/app.json, else ~/.local/state/bluegate/app.json.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

impl StateArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.state {
            Some(p) => Ok(p.clone()),
            None => Ok(bluegate_client::state::default_path()?),
        }
    }
}

#[derive(clap::Subcommand)]
pub enum AppCmd {
    /// Show what a server supports and whether its UDAP metadata verifies against your trust anchors.
    Discover {
        /// The server's FHIR base, e.g. https://localhost:8443/fhir
        url: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register this app with a server by UDAP Dynamic Client Registration (a signed software statement).
    /// Registering again with the same certificate URI updates the registration; the result (client_id,
    /// secret if any) is stored in the state file.
    Register {
        /// The server's FHIR base.
        url: String,
        /// The app's certificate chain (PEM, leaf first); its URI SAN is the app's identity.
        #[arg(long, value_name = "CHAIN.pem")]
        cert: PathBuf,
        /// The certificate's private key (PEM). RSA signs RS256, P-256 ES256.
        #[arg(long, value_name = "KEY.pem")]
        key: PathBuf,
        /// Redirect URI(s), exactly as `launch` will use them, e.g. http://127.0.0.1:8765/ or, for
        /// servers that require https (UDAP), https://127.0.0.1:8765/.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Token endpoint authentication.
        #[arg(long = "auth", default_value = "private_key_jwt", value_parser = ["private_key_jwt", "client_secret_basic"])]
        auth: String,
        /// Scopes to register for (space-separated).
        #[arg(long, default_value = DEFAULT_SCOPE)]
        scope: String,
        /// The app's name, shown to members on the consent page.
        #[arg(long, default_value = "Bluegate command-line app")]
        name: String,
        /// Contact URI(s); at least one mailto: is required.
        #[arg(long = "contact", value_name = "URI", required = true)]
        contacts: Vec<String>,
        /// An https URL of the app's logo (PNG, JPG or GIF).
        #[arg(long, value_name = "URL", required = true)]
        logo_uri: String,
        /// Which URI SAN of the certificate to register as (default: the first).
        #[arg(long, value_name = "URI")]
        client_uri: Option<String>,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        json: bool,
    },
    /// Cancel this app's registration with a server (a software statement with empty grant_types).
    Cancel {
        url: String,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        json: bool,
    },
    /// Sign a member in (SMART standalone launch): opens or prints the authorization URL, waits for the
    /// redirect on a loopback listener, exchanges the code and stores the tokens in the state file.
    Launch {
        url: String,
        /// Scopes to ask for (default: the registered ones).
        #[arg(long)]
        scope: Option<String>,
        /// Use the registered loopback redirect URI with this port.
        #[arg(long, value_name = "N")]
        redirect_port: Option<u16>,
        /// The registered redirect URI to use (default: the first loopback one).
        #[arg(long, value_name = "URI")]
        redirect_uri: Option<String>,
        /// TLS certificate chain (PEM) for an https loopback redirect URI.
        #[arg(long, value_name = "FILE")]
        redirect_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE")]
        redirect_key: Option<PathBuf>,
        /// Print the URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// Seconds to wait for the redirect.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print the tokens (they are secrets).
        #[arg(long)]
        show_tokens: bool,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        json: bool,
    },
    /// Refresh the stored tokens (the refresh token is rotated and the new one stored).
    Refresh {
        url: String,
        #[arg(long)]
        show_tokens: bool,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        json: bool,
    },
    /// Download everything the token opens (Patient, Coverage, ExplanationOfBenefit with includes) as
    /// NDJSON per resource type, resumably, and summarize it.
    Fetch(crate::app_fetch::FetchArgs),
}

pub async fn run(cmd: AppCmd) -> anyhow::Result<()> {
    match cmd {
        AppCmd::Discover { url, trust, json } => discover_cmd(&url, &trust, json).await,
        AppCmd::Register {
            url,
            cert,
            key,
            redirect_uris,
            auth,
            scope,
            name,
            contacts,
            logo_uri,
            client_uri,
            trust,
            state,
            json,
        } => {
            let method: AuthMethod = auth.parse().map_err(anyhow::Error::msg)?;
            let meta = ClientMetadata::authorization_code(
                &name,
                redirect_uris,
                &scope,
                contacts,
                &logo_uri,
                method,
            );
            register_cmd(
                &url,
                &cert,
                &key,
                client_uri.as_deref(),
                meta,
                &trust,
                &state,
                json,
            )
            .await
        }
        AppCmd::Cancel {
            url,
            trust,
            state,
            json,
        } => cancel_cmd(&url, &trust, &state, json).await,
        AppCmd::Launch {
            url,
            scope,
            redirect_port,
            redirect_uri,
            redirect_cert,
            redirect_key,
            no_browser,
            timeout,
            show_tokens,
            trust,
            state,
            json,
        } => {
            launch_cmd(LaunchOpts {
                url,
                scope,
                redirect_port,
                redirect_uri,
                redirect_cert,
                redirect_key,
                no_browser,
                timeout,
                show_tokens,
                trust,
                state,
                json,
            })
            .await
        }
        AppCmd::Refresh {
            url,
            show_tokens,
            trust,
            state,
            json,
        } => refresh_cmd(&url, &trust, &state, show_tokens, json).await,
        AppCmd::Fetch(args) => crate::app_fetch::run(args).await,
    }
}

fn abs(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Merge flags over what was saved at registration.
pub fn effective_trust(flags: &TrustArgs, saved: Option<&Trust>) -> anyhow::Result<TrustArgs> {
    let saved = saved.cloned().unwrap_or_default();
    Ok(TrustArgs {
        ca: match &flags.ca {
            Some(c) => Some(abs(c)?),
            None => saved.ca,
        },
        trust_anchors: if flags.trust_anchors.is_empty() {
            saved.trust_anchors
        } else {
            flags
                .trust_anchors
                .iter()
                .map(|p| abs(p))
                .collect::<anyhow::Result<_>>()?
        },
        community: flags.community.clone().or(saved.community),
        insecure_skip_metadata_verification: flags.insecure_skip_metadata_verification,
    })
}

fn to_saved(t: &TrustArgs) -> Trust {
    Trust {
        ca: t.ca.clone(),
        trust_anchors: t.trust_anchors.clone(),
        community: t.community.clone(),
    }
}

pub fn http_client(trust: &TrustArgs) -> anyhow::Result<reqwest::Client> {
    let ca_pem = match &trust.ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    Ok(bluegate_client::http::client(ca_pem.as_deref())?)
}

/// Discover the server; refuse unverified UDAP metadata unless the caller opted out.
pub async fn discover_server(
    http: &reqwest::Client,
    url: &str,
    trust: &TrustArgs,
) -> anyhow::Result<Discovered> {
    let anchors = if trust.trust_anchors.is_empty() {
        None
    } else {
        let mut b = Community::builder(trust.community.as_deref().unwrap_or("urn:bluegate:app"));
        for p in &trust.trust_anchors {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            b = b
                .anchors_pem(&bytes)
                .with_context(|| format!("{}", p.display()))?;
        }
        Some(b.build()?)
    };
    Ok(discover(
        http,
        url,
        &DiscoveryOptions {
            community: trust.community.as_deref(),
            anchors: anchors.as_ref(),
            allow_unverified: trust.insecure_skip_metadata_verification,
            now: bluegate_client::now(),
        },
    )
    .await?)
}

async fn discover_cmd(url: &str, trust: &TrustArgs, as_json: bool) -> anyhow::Result<()> {
    let trust = effective_trust(trust, None)?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, url, &trust).await?;
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
        return Ok(());
    }
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
    Ok(())
}

fn base_key(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// The state file's key for a server: its FHIR base without a trailing slash.
pub fn base_key_pub(url: &str) -> String {
    base_key(url)
}

#[allow(clippy::too_many_arguments)]
async fn register_cmd(
    url: &str,
    cert: &Path,
    key: &Path,
    client_uri: Option<&str>,
    meta: ClientMetadata,
    trust: &TrustArgs,
    state: &StateArg,
    as_json: bool,
) -> anyhow::Result<()> {
    if meta.redirect_uris.is_empty() {
        bail!("at least one --redirect-uri is required (e.g. http://127.0.0.1:8765/ or https://127.0.0.1:8765/)");
    }
    let identity = AppIdentity::from_files(cert, key, client_uri)?;
    let trust = effective_trust(trust, None)?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, url, &trust).await?;
    let endpoint = d
        .registration_endpoint()
        .context("the server advertises no registration_endpoint")?;
    let reg = bluegate_client::registration::register(&http, &endpoint, &identity, &meta).await?;
    let state_path = state.path()?;
    let mut st = AppState::load(&state_path)?;
    let key_url = base_key(url);
    // Tokens stay valid across an update of the same client; a new client_id starts over.
    let old_tokens = st
        .server(&key_url)
        .filter(|s| s.registration.client_id == reg.client_id)
        .and_then(|s| s.tokens.clone());
    st.servers.insert(
        key_url.clone(),
        ServerState {
            registration: reg.clone(),
            cert: abs(cert)?,
            key: abs(key)?,
            client_uri: identity.client_uri().to_string(),
            trust: to_saved(&trust),
            contacts: meta.contacts.clone(),
            tokens: old_tokens,
        },
    );
    st.save(&state_path)?;
    let outcome = if reg.http_status == 201 {
        "registered"
    } else {
        "updated"
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "outcome": outcome,
                "fhir_base": key_url,
                "client_id": reg.client_id,
                "client_uri": identity.client_uri(),
                "token_endpoint_auth_method": reg.token_endpoint_auth_method,
                "scope": reg.scope,
                "redirect_uris": reg.redirect_uris,
                "client_secret_stored": reg.client_secret.is_some(),
                "state_file": state_path,
            }))?
        );
    } else {
        println!("{outcome}: client_id {}", reg.client_id);
        println!("  server         {key_url}");
        println!("  as             {}", identity.client_uri());
        println!(
            "  authentication {}",
            reg.token_endpoint_auth_method.as_deref().unwrap_or("-")
        );
        println!("  scopes granted {}", reg.scope);
        println!("  redirect URIs  {}", reg.redirect_uris.join(" "));
        if reg.client_secret.is_some() {
            println!(
                "  client secret  stored in {} (not shown)",
                state_path.display()
            );
        }
        println!("  state file     {}", state_path.display());
    }
    Ok(())
}

async fn cancel_cmd(
    url: &str,
    trust: &TrustArgs,
    state: &StateArg,
    as_json: bool,
) -> anyhow::Result<()> {
    let state_path = state.path()?;
    let mut st = AppState::load(&state_path)?;
    let key_url = base_key(url);
    let server = st
        .server(&key_url)
        .cloned()
        .with_context(|| not_registered(&key_url, &state_path))?;
    let trust = effective_trust(trust, Some(&server.trust))?;
    let identity = AppIdentity::from_files(&server.cert, &server.key, Some(&server.client_uri))?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, url, &trust).await?;
    let endpoint = d
        .registration_endpoint()
        .context("the server advertises no registration_endpoint")?;
    let name = server
        .registration
        .client_name
        .clone()
        .unwrap_or_else(|| "Bluegate command-line app".into());
    let reg = bluegate_client::registration::cancel(
        &http,
        &endpoint,
        &identity,
        &name,
        server.contacts.clone(),
    )
    .await?;
    st.servers.remove(&key_url);
    st.save(&state_path)?;
    if as_json {
        println!(
            "{}",
            json!({"outcome": "cancelled", "client_id": reg.client_id})
        );
    } else {
        println!(
            "cancelled: client_id {} at {key_url} (removed from the state file)",
            reg.client_id
        );
    }
    Ok(())
}

pub fn not_registered(url: &str, state: &Path) -> String {
    format!(
        "this app is not registered with {url} in {} (run `bluegate app register {url} ...` first)",
        state.display()
    )
}

/// How this app authenticates at the token endpoint, from its stored registration.
pub fn client_auth(server: &ServerState) -> anyhow::Result<ClientAuth> {
    let client_id = server.registration.client_id.clone();
    match server.registration.token_endpoint_auth_method.as_deref() {
        Some("client_secret_basic") => {
            let secret = server
                .registration
                .client_secret
                .clone()
                .context("the registration uses client_secret_basic but no secret is stored")?;
            Ok(ClientAuth::ClientSecretBasic { client_id, secret })
        }
        _ => {
            let identity =
                AppIdentity::from_files(&server.cert, &server.key, Some(&server.client_uri))?;
            Ok(ClientAuth::PrivateKeyJwt {
                client_id,
                identity: Arc::new(identity),
            })
        }
    }
}

struct LaunchOpts {
    url: String,
    scope: Option<String>,
    redirect_port: Option<u16>,
    redirect_uri: Option<String>,
    redirect_cert: Option<PathBuf>,
    redirect_key: Option<PathBuf>,
    no_browser: bool,
    timeout: u64,
    show_tokens: bool,
    trust: TrustArgs,
    state: StateArg,
    json: bool,
}

fn is_loopback(uri: &str) -> Option<u16> {
    let u = url::Url::parse(uri).ok()?;
    let lb = match u.host()? {
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
        url::Host::Domain(d) => d == "localhost",
    };
    (lb && matches!(u.scheme(), "http" | "https"))
        .then(|| u.port())
        .flatten()
}

/// The registered redirect URI to listen on.
fn pick_redirect(
    registered: &[String],
    explicit: Option<&str>,
    port: Option<u16>,
) -> anyhow::Result<String> {
    let list = registered.join(", ");
    if let Some(e) = explicit {
        if !registered.iter().any(|r| r == e) {
            bail!("`{e}` is not a registered redirect URI (registered: {list})");
        }
        if is_loopback(e).is_none() {
            bail!("`{e}` is not a loopback URI with a port; the launch listens on loopback");
        }
        return Ok(e.to_string());
    }
    registered
        .iter()
        .find(|r| is_loopback(r).is_some_and(|p| port.is_none_or(|want| want == p)))
        .cloned()
        .with_context(|| match port {
            Some(p) => format!("no registered loopback redirect URI has port {p} (registered: {list}); the port must match exactly"),
            None => format!("no registered redirect URI is a loopback URI with a port (registered: {list}); register one such as http://127.0.0.1:8765/"),
        })
}

fn open_browser(url: &str) -> bool {
    let cmd = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(cmd)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

fn token_summary(t: &TokenSet, show_tokens: bool) -> Value {
    let mut v = json!({
        "patient": t.patient,
        "scope": t.scope,
        "expires_at": t.expires_at,
        "fhir_user": t.fhir_user,
        "refresh_token": t.refresh_token.is_some(),
    });
    if show_tokens {
        v["access_token"] = json!(t.access_token.expose());
        v["refresh_token"] = json!(t.refresh_token.as_ref().map(|r| r.expose()));
        v["id_token"] = json!(t.id_token.as_ref().map(|r| r.expose()));
    }
    v
}

fn print_tokens(what: &str, t: &TokenSet, state_path: &Path, show_tokens: bool) {
    println!("{what}");
    println!("  patient        {}", t.patient.as_deref().unwrap_or("-"));
    if let Some(u) = &t.fhir_user {
        println!("  fhirUser       {u}");
    }
    println!("  scopes granted {}", t.scope.as_deref().unwrap_or("-"));
    if let Some(e) = t.expires_at {
        println!("  expires in     {} s", (e - bluegate_client::now()).max(0));
    }
    println!(
        "  refresh token  {}",
        if t.refresh_token.is_some() {
            "yes"
        } else {
            "no"
        }
    );
    println!("  tokens stored  {}", state_path.display());
    if show_tokens {
        println!("  access token   {}", t.access_token.expose());
        if let Some(r) = &t.refresh_token {
            println!("  refresh token  {}", r.expose());
        }
    }
}

async fn launch_cmd(o: LaunchOpts) -> anyhow::Result<()> {
    let state_path = o.state.path()?;
    let mut st = AppState::load(&state_path)?;
    let key_url = base_key(&o.url);
    let server = st
        .server(&key_url)
        .cloned()
        .with_context(|| not_registered(&key_url, &state_path))?;
    let trust = effective_trust(&o.trust, Some(&server.trust))?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, &key_url, &trust).await?;
    let authz = d
        .authorization_endpoint()
        .context("the server advertises no authorization_endpoint")?;
    let token_endpoint = d
        .token_endpoint()
        .context("the server advertises no token_endpoint")?;
    let redirect = pick_redirect(
        &server.registration.redirect_uris,
        o.redirect_uri.as_deref(),
        o.redirect_port,
    )?;
    let tls = if redirect.starts_with("https:") {
        let (Some(c), Some(k)) = (&o.redirect_cert, &o.redirect_key) else {
            bail!("the redirect URI {redirect} is https: pass --redirect-cert and --redirect-key (a certificate for 127.0.0.1/localhost your browser trusts)");
        };
        let chain = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        let key = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
        Some(bluegate_client::launch::loopback_tls(&chain, &key)?)
    } else {
        None
    };
    let auth = client_auth(&server)?;
    let scope = o
        .scope
        .clone()
        .unwrap_or_else(|| server.registration.scope.clone());
    let listener = LoopbackListener::bind(&redirect, tls).await?;
    let pending = PendingAuthorization::new(&AuthorizationRequest {
        authorization_endpoint: &authz,
        client_id: auth.client_id(),
        redirect_uri: &redirect,
        scope: &scope,
        fhir_base: &d.fhir_base,
    })?;
    let opened = !o.no_browser && open_browser(pending.url());
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if opened {
            writeln!(
                out,
                "A browser window should open; if not, open this URL to sign in:"
            )?;
        } else {
            writeln!(out, "Open this URL in a browser to sign in:")?;
        }
        writeln!(out, "{}", pending.url())?;
        writeln!(
            out,
            "Waiting up to {} s for the redirect to {redirect} ...",
            o.timeout
        )?;
        out.flush()?;
    }
    let code = listener
        .wait(&pending, Duration::from_secs(o.timeout))
        .await?;
    let issuer = d.issuer();
    let tokens = bluegate_client::launch::finish(
        &http,
        &token_endpoint,
        issuer.as_deref(),
        &auth,
        &pending,
        &code,
    )
    .await?;
    if let Some(s) = st.server_mut(&key_url) {
        s.tokens = Some(tokens.clone());
    }
    st.save(&state_path)?;
    if o.json {
        println!("{}", token_summary(&tokens, o.show_tokens));
    } else {
        print_tokens("signed in", &tokens, &state_path, o.show_tokens);
    }
    Ok(())
}

async fn refresh_cmd(
    url: &str,
    trust: &TrustArgs,
    state: &StateArg,
    show_tokens: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let state_path = state.path()?;
    let mut st = AppState::load(&state_path)?;
    let key_url = base_key(url);
    let server = st
        .server(&key_url)
        .cloned()
        .with_context(|| not_registered(&key_url, &state_path))?;
    let current = server
        .tokens
        .clone()
        .with_context(|| format!("no tokens for {key_url}; run `bluegate app launch {key_url}`"))?;
    let trust = effective_trust(trust, Some(&server.trust))?;
    let http = http_client(&trust)?;
    let d = discover_server(&http, &key_url, &trust).await?;
    let token_endpoint = d
        .token_endpoint()
        .context("the server advertises no token_endpoint")?;
    let auth = client_auth(&server)?;
    match bluegate_client::token::refresh(&http, &token_endpoint, &auth, &current).await {
        Ok(next) => {
            if let Some(s) = st.server_mut(&key_url) {
                s.tokens = Some(next.clone());
            }
            st.save(&state_path)?;
            if as_json {
                println!("{}", token_summary(&next, show_tokens));
            } else {
                print_tokens("refreshed", &next, &state_path, show_tokens);
            }
            Ok(())
        }
        Err(e @ bluegate_client::Error::Token { .. }) if matches!(&e, bluegate_client::Error::Token { error, .. } if error == "invalid_grant") =>
        {
            // C-15: a refused refresh token is dead; drop it so nothing retries it.
            if let Some(s) = st.server_mut(&key_url) {
                if let Some(t) = s.tokens.as_mut() {
                    t.refresh_token = None;
                }
            }
            st.save(&state_path)?;
            Err(anyhow::Error::new(e).context("refresh failed; launch again"))
        }
        Err(e) => Err(e.into()),
    }
}
