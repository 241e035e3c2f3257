//! Demo mode: `bluegate serve` without `--config`. Creates (once) a data directory with a development PKI
//! and a configuration file, then seeds demo members and synthetic CARIN BB data for their patients. Everything it makes is an ordinary configuration
//! that `--config bluegate-data/bluegate.toml` also accepts.

use std::path::{Path, PathBuf};

use bluegate_core::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
use bluegate_store::MemberRecord;
use time::{Duration, OffsetDateTime};

use crate::app::SharedState;

pub const DEMO_DATA_DIR: &str = "bluegate-data";
pub const DEMO_COMMUNITY: &str = "urn:bluegate:community:demo";
pub const DEMO_PUBLIC_URL: &str = "https://localhost:8443";
pub const DEMO_LISTEN: &str = "127.0.0.1:8443";
pub const SAMPLE_CLIENT_URI: &str = "https://demo-app.bluegate.test/";

/// Demo members: (username, password, patients, fhirUser).
pub const DEMO_MEMBERS: &[(&str, &str, &[&str], &str)] = &[
    (
        "alice",
        "alice-demo-password",
        &["demo-alice"],
        "Patient/demo-alice",
    ),
    (
        "bob",
        "bob-demo-password",
        &["demo-bob-child-1", "demo-bob-child-2"],
        "RelatedPerson/demo-bob",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the development PKI: {0}")]
    Pki(String),
}

pub fn demo_config_path(dir: &Path) -> PathBuf {
    dir.join("bluegate.toml")
}

/// What demo mode prepared, for the start-up banner.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub ca_path: PathBuf,
    pub sample_client_chain: PathBuf,
    pub sample_client_key: PathBuf,
    pub created: bool,
}

fn write(path: &Path, contents: &str) -> Result<(), DemoError> {
    std::fs::write(path, contents).map_err(|source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<(), DemoError> {
    write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| DemoError::Io {
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Create the demo data directory on first start; reuse it afterwards. `BLUEGATE_PUBLIC_URL` and
/// `BLUEGATE_LISTEN`, when set at first start, shape the generated configuration and certificates.
pub fn prepare(dir: &Path) -> Result<Prepared, DemoError> {
    let pki_dir = dir.join("pki");
    let config_path = demo_config_path(dir);
    let prepared = Prepared {
        dir: dir.to_path_buf(),
        config_path: config_path.clone(),
        ca_path: pki_dir.join("root-ca.pem"),
        sample_client_chain: pki_dir.join("sample-client-chain.pem"),
        sample_client_key: pki_dir.join("sample-client-key.pem"),
        created: false,
    };
    if config_path.exists() {
        return Ok(prepared);
    }
    std::fs::create_dir_all(&pki_dir).map_err(|source| DemoError::Io {
        path: pki_dir.clone(),
        source,
    })?;
    let public_url =
        std::env::var("BLUEGATE_PUBLIC_URL").unwrap_or_else(|_| DEMO_PUBLIC_URL.into());
    let public_url = public_url.trim_end_matches('/').to_string();
    let listen = std::env::var("BLUEGATE_LISTEN").unwrap_or_else(|_| DEMO_LISTEN.into());
    let fhir_base = format!("{public_url}/fhir");

    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let pki_err = |e: pki::PkiError| DemoError::Pki(e.to_string());
    let community = pki::create_community(
        "Bluegate Demo Community",
        KeyKind::Rsa2048,
        not_before,
        now + Duration::days(3650),
        None,
    )
    .map_err(pki_err)?;
    write(&pki_dir.join("root-ca.pem"), &community.root_cert_pem)?;
    write_private(&pki_dir.join("root-ca-key.pem"), &community.root_key_pem)?;
    write(
        &pki_dir.join("intermediate-ca.pem"),
        &community.intermediate_cert_pem,
    )?;
    write_private(
        &pki_dir.join("intermediate-ca-key.pem"),
        &community.intermediate_key_pem,
    )?;
    let issue = |name: &str, req: EndEntityRequest| -> Result<(), DemoError> {
        let cert = pki::issue_end_entity(
            &community.intermediate_cert_pem,
            &community.intermediate_key_pem,
            &req,
        )
        .map_err(pki_err)?;
        write(&pki_dir.join(format!("{name}.pem")), &cert.cert_pem)?;
        write(&pki_dir.join(format!("{name}-chain.pem")), &cert.chain_pem)?;
        write_private(&pki_dir.join(format!("{name}-key.pem")), &cert.key_pem)?;
        Ok(())
    };
    let host = url::Url::parse(&public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".to_string());
    let mut dns = vec![host.clone()];
    if host != "localhost" {
        dns.push("localhost".to_string());
    }
    issue(
        "tls",
        EndEntityRequest {
            common_name: host.clone(),
            san_uris: vec![public_url.clone()],
            dns_names: dns,
            ip_addresses: vec!["127.0.0.1"
                .parse()
                .map_err(|_| DemoError::Pki("ip".into()))?],
            key: KeyKind::P256,
            not_before,
            not_after: now + Duration::days(397),
            usage: EndEntityUsage::TlsServer,
        },
    )?;
    issue(
        "metadata",
        EndEntityRequest {
            common_name: "Bluegate demo UDAP metadata".to_string(),
            san_uris: vec![fhir_base.clone()],
            dns_names: vec![],
            ip_addresses: vec![],
            key: KeyKind::Rsa2048,
            not_before,
            not_after: now + Duration::days(397),
            usage: EndEntityUsage::UdapServer,
        },
    )?;
    issue(
        "sample-client",
        EndEntityRequest {
            common_name: "Bluegate demo app".to_string(),
            san_uris: vec![SAMPLE_CLIENT_URI.to_string()],
            dns_names: vec![],
            ip_addresses: vec![],
            key: KeyKind::Rsa2048,
            not_before,
            not_after: now + Duration::days(397),
            usage: EndEntityUsage::UdapClient,
        },
    )?;
    let config = format!(
        r#"# Written by `bluegate serve` in demo mode. Edit freely; paths are relative to this file.
public_url = "{public_url}"
listen = "{listen}"
data_dir = "."

[tls]
cert = "pki/tls-chain.pem"
key = "pki/tls-key.pem"

[[communities]]
uri = "{DEMO_COMMUNITY}"
trust_anchors = ["pki/root-ca.pem"]
intermediates = ["pki/intermediate-ca.pem"]
metadata_cert = "pki/metadata-chain.pem"
metadata_key = "pki/metadata-key.pem"
"#
    );
    write(&config_path, &config)?;
    Ok(Prepared {
        created: true,
        ..prepared
    })
}

/// Insert the demo members that do not exist yet, and the demo's synthetic FHIR data on first start.
pub async fn seed(state: &SharedState) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for (username, password, patients, fhir_user) in DEMO_MEMBERS {
        if state
            .store
            .get_member_by_username(username)
            .await?
            .is_some()
        {
            continue;
        }
        let record = MemberRecord {
            id: crate::random::token(12),
            username: username.to_string(),
            password_hash: crate::passwords::hash(password)?,
            fhir_user: Some(fhir_user.to_string()),
            patients: patients.iter().map(|p| p.to_string()).collect(),
            disabled: false,
            created_at: OffsetDateTime::now_utc(),
        };
        match state.store.insert_member(&record).await {
            Ok(()) | Err(bluegate_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    seed_fhir_data(state.store.as_ref()).await?;
    Ok(())
}

/// Other members seeded beside the demo patients, so that one member's token visibly sees only that
/// member's data.
pub const DEMO_OTHER_MEMBERS: u64 = 50;
/// EOBs per seeded member.
pub const DEMO_EOBS_PER_MEMBER: u32 = 20;
/// Seed of the demo data (fixed: every demo has the same claims).
pub const DEMO_DATA_SEED: u64 = 2024;

/// The synthetic data set of demo mode: the demo members' patients (Alice; Bob's two children, with
/// `RelatedPerson/demo-bob` as their representative and subscriber) and [`DEMO_OTHER_MEMBERS`] others.
pub fn demo_data_options() -> bluegate_store::fhir::synthetic::SyntheticOptions {
    use bluegate_store::fhir::synthetic::{GuardianSpec, PatientSpec, SyntheticOptions};
    SyntheticOptions {
        seed: DEMO_DATA_SEED,
        id_prefix: "demo".into(),
        patients: vec![
            PatientSpec {
                id: "demo-alice".into(),
                name: Some(("Alice".into(), "Demo".into())),
            },
            PatientSpec {
                id: "demo-bob-child-1".into(),
                name: Some(("Charlie".into(), "Demo".into())),
            },
            PatientSpec {
                id: "demo-bob-child-2".into(),
                name: Some(("Dana".into(), "Demo".into())),
            },
        ],
        numbered_members: DEMO_OTHER_MEMBERS,
        eobs_per_member: DEMO_EOBS_PER_MEMBER,
        guardians: vec![GuardianSpec {
            id: "demo-bob".into(),
            patients: vec!["demo-bob-child-1".into(), "demo-bob-child-2".into()],
            name: Some(("Bob".into(), "Demo".into())),
        }],
    }
}

/// Seeds the synthetic CARIN BB data once: skipped when `Patient/demo-alice` exists (a previous start
/// seeded it; the whole set goes in one transaction, so it is all there or not at all). Returns the
/// number of resources written (0 when already seeded).
pub async fn seed_fhir_data(
    store: &dyn bluegate_store::Store,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use bluegate_store::fhir::params::ResourceType;
    use bluegate_store::fhir::{prepare, synthetic::Synthetic};
    if store
        .read(ResourceType::Patient, "demo-alice")
        .await?
        .is_some()
    {
        return Ok(0);
    }
    // Generating and indexing ~1,200 resources is CPU work: off the async runtime.
    let batch = tokio::task::spawn_blocking(|| {
        Synthetic::new(demo_data_options())?
            .map(|r| prepare(r.json).map_err(|e| e.error))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    })
    .await??;
    Ok(store.put_prepared(batch, OffsetDateTime::now_utc()).await?)
}

/// What demo mode prints once it listens.
pub fn banner(state: &SharedState, p: &Prepared, addr: std::net::SocketAddr) -> String {
    let ep = &state.endpoints;
    let mut s = String::new();
    s.push_str("Bluegate is running in demo mode.\n\n");
    s.push_str(&format!("  listening on       {addr}\n"));
    s.push_str(&format!("  FHIR base          {}\n", ep.fhir_base));
    s.push_str(&format!(
        "  SMART config       {}/.well-known/smart-configuration\n",
        ep.fhir_base
    ));
    s.push_str(&format!(
        "  UDAP metadata      {}/.well-known/udap\n",
        ep.fhir_base
    ));
    s.push_str(&format!(
        "  configuration      {}\n",
        p.config_path.display()
    ));
    s.push_str(&format!(
        "  CA to trust        {}   (curl --cacert {} ...)\n",
        p.ca_path.display(),
        p.ca_path.display()
    ));
    s.push_str(&format!(
        "  sample app cert    {} (key {}), URI SAN {}\n",
        p.sample_client_chain.display(),
        p.sample_client_key.display(),
        SAMPLE_CLIENT_URI
    ));
    s.push_str("\n  demo sign-ins:\n");
    for (user, password, patients, _) in DEMO_MEMBERS {
        s.push_str(&format!(
            "    {user} / {password}   (patients: {})\n",
            patients.join(", ")
        ));
    }
    if p.created {
        s.push_str("\n  (the data directory was created on this start; later starts reuse it)\n");
    }
    s.push_str(&format!(
        "\n  check it as an app would:\n    bluegate app discover {} --ca {} --trust-anchor {}\n",
        ep.fhir_base,
        p.ca_path.display(),
        p.ca_path.display()
    ));
    s.push_str(&format!(
        "\n  try: curl --cacert {} {}/.well-known/smart-configuration\n",
        p.ca_path.display(),
        ep.fhir_base
    ));
    s
}
