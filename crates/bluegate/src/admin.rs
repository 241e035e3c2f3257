//! Administration commands that work on the store directly: members, clients, keys, audit.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bluegate_core::jose::Alg;
use bluegate_core::secrets;
use bluegate_server::{passwords, random, serve, signing};
use bluegate_store::{ClientRecord, ClientStatus, MemberRecord};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ConfigArg;

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        bail!("the {what} on standard input is empty");
    }
    Ok(s)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

#[derive(clap::Subcommand)]
pub enum MemberCmd {
    /// Add a member who may sign in and act for one or more patients (e.g. a parent for children).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Sign-in name.
        #[arg(long)]
        username: String,
        /// Read the password from standard input (it is stored as an argon2id hash).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// A Patient id this member may act for; repeat for several.
        #[arg(long = "patient", value_name = "ID", required = true)]
        patients: Vec<String>,
        /// The member's own FHIR resource, `Patient/ID` or `RelatedPerson/ID` (default: Patient/<first --patient>).
        #[arg(long)]
        fhir_user: Option<String>,
    },
    /// List members (no password hashes).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn member(cmd: MemberCmd) -> anyhow::Result<()> {
    match cmd {
        MemberCmd::Add {
            config,
            username,
            password_stdin: _,
            patients,
            fhir_user,
        } => {
            let cfg = config.load()?;
            let username = username.trim().to_string();
            if username.is_empty() || username.len() > 128 {
                bail!("--username must be 1 to 128 characters");
            }
            for p in &patients {
                if !valid_fhir_id(p) {
                    bail!(
                        "--patient `{p}` is not a FHIR id ([A-Za-z0-9-.], at most 64 characters)"
                    );
                }
            }
            let fhir_user = match fhir_user {
                Some(f) => {
                    let ok = f
                        .split_once('/')
                        .map(|(t, id)| {
                            (t == "Patient" || t == "RelatedPerson") && valid_fhir_id(id)
                        })
                        .unwrap_or(false);
                    if !ok {
                        bail!("--fhir-user must be Patient/ID or RelatedPerson/ID");
                    }
                    f
                }
                None => format!("Patient/{}", patients[0]),
            };
            let password = read_stdin_line("password")?;
            if password.chars().count() < 8 {
                bail!("the password must be at least 8 characters");
            }
            let hash = passwords::hash(&password).map_err(anyhow::Error::msg)?;
            let store = serve::open_store(&cfg).await?;
            let record = MemberRecord {
                id: random::token(12),
                username,
                password_hash: hash,
                fhir_user: Some(fhir_user),
                patients,
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
            };
            store.insert_member(&record).await.map_err(|e| match e {
                bluegate_store::StoreError::Conflict(_) => {
                    anyhow::anyhow!("a member named `{}` already exists", record.username)
                }
                e => e.into(),
            })?;
            print_json(&json!({
                "id": record.id,
                "username": record.username,
                "fhir_user": record.fhir_user,
                "patients": record.patients,
            }));
            Ok(())
        }
        MemberCmd::List { config } => {
            let cfg = config.load()?;
            let store = serve::open_store(&cfg).await?;
            let members: Vec<Value> = store
                .list_members()
                .await?
                .into_iter()
                .map(|m| {
                    json!({
                        "id": m.id, "username": m.username, "fhir_user": m.fhir_user,
                        "patients": m.patients, "disabled": m.disabled,
                    })
                })
                .collect();
            print_json(&Value::Array(members));
            Ok(())
        }
    }
}

pub fn valid_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[derive(clap::Subcommand)]
pub enum ClientCmd {
    /// Register a SMART client out of band; prints JSON with its client_id.
    Add(ClientAddArgs),
    /// List all clients, out-of-band and UDAP-registered.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show one client.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        client_id: String,
    },
    /// Disable a client: it can no longer obtain or use tokens.
    Disable {
        #[command(flatten)]
        config: ConfigArg,
        client_id: String,
    },
    /// Re-enable a disabled client.
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        client_id: String,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["public", "secret_stdin", "jwks_uri", "jwks_file"])))]
pub struct ClientAddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app's name, shown to members on the consent page.
    #[arg(long)]
    name: String,
    /// An exact redirect URI; repeat for several.
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// A public client (browser or native app): no secret, PKCE required.
    #[arg(long)]
    public: bool,
    /// A confidential client using client_secret_basic; the secret (≥32 characters) is read from standard input.
    #[arg(long)]
    secret_stdin: bool,
    /// A confidential asymmetric client (private_key_jwt) whose keys are published at this URL.
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// A confidential asymmetric client (private_key_jwt) whose JWKS is in this file.
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// Scopes the client may ask for (space separated). Default: every scope the server offers.
    #[arg(long)]
    scope: Option<String>,
    /// Allow this client to introspect any token (a resource server).
    #[arg(long)]
    resource_server: bool,
}

fn client_json(c: &ClientRecord) -> Value {
    let m = &c.metadata;
    json!({
        "client_id": c.client_id,
        "status": status_name(c.status),
        "client_name": m.get("client_name"),
        "iss": c.iss,
        "community": c.community,
        "grant_types": m.get("grant_types"),
        "token_endpoint_auth_method": m.get("token_endpoint_auth_method"),
        "redirect_uris": m.get("redirect_uris"),
        "scope": m.get("scope"),
        "resource_server": c.is_resource_server,
        "created_at": c.created_at.unix_timestamp(),
        "updated_at": c.updated_at.unix_timestamp(),
    })
}

fn status_name(s: ClientStatus) -> &'static str {
    match s {
        ClientStatus::Active => "active",
        ClientStatus::Disabled => "disabled",
        ClientStatus::Cancelled => "cancelled",
    }
}

pub async fn client(cmd: ClientCmd) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Add(args) => client_add(args).await,
        ClientCmd::List { config } => {
            let store = serve::open_store(&config.load()?).await?;
            let all: Vec<Value> = store
                .list_clients()
                .await?
                .iter()
                .map(client_json)
                .collect();
            print_json(&Value::Array(all));
            Ok(())
        }
        ClientCmd::Show { config, client_id } => {
            let store = serve::open_store(&config.load()?).await?;
            let Some(c) = store.get_client(&client_id).await? else {
                bail!("no client with client_id `{client_id}`");
            };
            let mut v = client_json(&c);
            v["metadata"] = c.metadata.clone();
            print_json(&v);
            Ok(())
        }
        ClientCmd::Disable { config, client_id } => {
            set_status(config, &client_id, ClientStatus::Disabled).await
        }
        ClientCmd::Enable { config, client_id } => {
            set_status(config, &client_id, ClientStatus::Active).await
        }
    }
}

async fn set_status(
    config: ConfigArg,
    client_id: &str,
    status: ClientStatus,
) -> anyhow::Result<()> {
    let store = serve::open_store(&config.load()?).await?;
    let now = OffsetDateTime::now_utc();
    if !store.set_client_status(client_id, status, now).await? {
        bail!("no client with client_id `{client_id}`");
    }
    store
        .append_audit(&bluegate_store::AuditEvent {
            at: now,
            event: format!("client.{}", status_name(status)),
            outcome: "success".to_string(),
            client_id: Some(client_id.to_string()),
            member_id: None,
            patient: None,
            remote_addr: None,
            detail: json!({"by": "cli"}),
        })
        .await?;
    println!("{client_id}: {}", status_name(status));
    Ok(())
}

async fn client_add(args: ClientAddArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let name = args.name.trim();
    if name.is_empty() || name.len() > 200 {
        bail!("--name must be 1 to 200 characters");
    }
    if args.redirect_uris.is_empty() {
        bail!("at least one --redirect-uri is required");
    }
    for uri in &args.redirect_uris {
        check_redirect_uri(uri)?;
    }
    let offered = bluegate_core::discovery::scopes_supported();
    let scope = match &args.scope {
        Some(s) => {
            for sc in s.split_whitespace() {
                if !offered.iter().any(|o| o == sc) {
                    bail!("--scope: `{sc}` is not a scope this server offers");
                }
            }
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        None => offered.join(" "),
    };
    let mut metadata = json!({
        "client_name": name,
        "redirect_uris": args.redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": scope,
    });
    let mut secret_hash = None;
    if args.public {
        metadata["token_endpoint_auth_method"] = json!("none");
    } else if args.secret_stdin {
        let secret = read_stdin_line("client secret")?;
        if secret.len() < secrets::MIN_SECRET_LEN {
            bail!(
                "the client secret must be at least {} characters",
                secrets::MIN_SECRET_LEN
            );
        }
        secret_hash = Some(secrets::hash_client_secret(&secret));
        metadata["token_endpoint_auth_method"] = json!("client_secret_basic");
    } else if args.jwks_uri.is_some() {
        // The server does not fetch client key sets from URLs yet; registering such a client would leave
        // it unable to authenticate.
        bail!("--jwks-uri is not supported yet: download the JWKS and pass it with --jwks-file");
    } else if let Some(path) = &args.jwks_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let jwks: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let keys = jwks.get("keys").and_then(Value::as_array);
        if keys.map(|k| k.is_empty()).unwrap_or(true) {
            bail!("{} must be a JWKS: {{\"keys\": [...]}}", path.display());
        }
        metadata["token_endpoint_auth_method"] = json!("private_key_jwt");
        metadata["jwks"] = jwks;
    }
    let now = OffsetDateTime::now_utc();
    let record = ClientRecord {
        client_id: random::token(16),
        status: ClientStatus::Active,
        community: None,
        iss: None,
        secret_hash,
        metadata,
        is_resource_server: args.resource_server,
        created_at: now,
        updated_at: now,
    };
    let store = serve::open_store(&cfg).await?;
    store.insert_client(&record).await?;
    store
        .append_audit(&bluegate_store::AuditEvent {
            at: now,
            event: "client.registered".to_string(),
            outcome: "success".to_string(),
            client_id: Some(record.client_id.clone()),
            member_id: None,
            patient: None,
            remote_addr: None,
            detail: json!({"by": "cli", "client_name": name}),
        })
        .await?;
    print_json(&client_json(&record));
    Ok(())
}

/// Redirect URIs are absolute, without fragment; https, or http only for loopback (RFC 8252 §7.3).
fn check_redirect_uri(uri: &str) -> anyhow::Result<()> {
    let u =
        url::Url::parse(uri).with_context(|| format!("redirect URI `{uri}` is not absolute"))?;
    if u.fragment().is_some() {
        bail!("redirect URI `{uri}` must not have a fragment");
    }
    let loopback = matches!(
        u.host_str(),
        Some("127.0.0.1") | Some("[::1]") | Some("localhost")
    );
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!("redirect URI `{uri}` must be https (http is allowed for loopback only)"),
    }
}

#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// List signing keys (public parts only).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the active key for an algorithm; the old public key stays published until every token it
    /// signed has expired.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// ES256 (access tokens) or RS256 (id_tokens).
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
}

pub async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::List { config } => {
            let store = serve::open_store(&config.load()?).await?;
            let keys: Vec<Value> = store
                .list_signing_keys()
                .await?
                .into_iter()
                .map(|k| {
                    json!({
                        "kid": k.kid, "alg": k.alg,
                        "created_at": k.created_at.unix_timestamp(),
                        "retired_at": k.retired_at.map(|t| t.unix_timestamp()),
                        "publish_until": k.publish_until.map(|t| t.unix_timestamp()),
                    })
                })
                .collect();
            print_json(&Value::Array(keys));
            Ok(())
        }
        KeysCmd::Rotate { config, alg } => {
            let alg: Alg = alg
                .parse()
                .map_err(|_| anyhow::anyhow!("--alg must be ES256 or RS256"))?;
            if !matches!(alg, Alg::ES256 | Alg::RS256) {
                bail!("--alg must be ES256 or RS256");
            }
            let cfg = config.load()?;
            let store = serve::open_store(&cfg).await?;
            // Tokens signed by the old key live at most as long as the longest-lived signed token.
            let publish_for = cfg.tokens.access_token.max(3600) as i64;
            let (old, new) =
                signing::rotate(store.as_ref(), alg, OffsetDateTime::now_utc(), publish_for)
                    .await?;
            print_json(&json!({"retired": old, "active": new, "alg": alg.as_str()}));
            Ok(())
        }
    }
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// How many events, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only events whose name starts with this (e.g. `client.` or `login.`).
    #[arg(long)]
    event: Option<String>,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let store = serve::open_store(&args.config.load()?).await?;
    let events = store.list_audit(args.limit, args.event.as_deref()).await?;
    for e in events {
        println!("{}", serde_json::to_string(&e).unwrap_or_default());
    }
    Ok(())
}
