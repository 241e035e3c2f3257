//! `bluegate pki`: trust communities for testing. A community directory holds the root and intermediate
//! CAs, their keys, and `index.json` (issued and revoked serials, CRL number) so that `revoke` and `crl`
//! can work later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bluegate_core::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind, RevokedEntry};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KeyArg {
    Rsa,
    P256,
}

impl From<KeyArg> for KeyKind {
    fn from(k: KeyArg) -> Self {
        match k {
            KeyArg::Rsa => KeyKind::Rsa2048,
            KeyArg::P256 => KeyKind::P256,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// A TLS server certificate (DNS/IP SANs, serverAuth).
    TlsServer,
    /// A UDAP server metadata certificate; its URI SAN is the FHIR base.
    UdapServer,
    /// A UDAP client certificate; its URI SAN is the app's software statement `iss`.
    UdapClient,
}

#[derive(clap::Subcommand)]
pub enum PkiCmd {
    /// Create a community: a root CA and an intermediate CA signed by it.
    Community {
        /// Directory to create the community in.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Community name, used in the CA subjects.
        #[arg(long)]
        name: String,
        /// CA key type.
        #[arg(long, value_enum, default_value = "rsa")]
        key: KeyArg,
        /// CA validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Base URL where the CRLs will be published; issued certificates then carry a CRL distribution point.
        #[arg(long, value_name = "URL")]
        crl_url: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue an end-entity certificate from a community's intermediate CA.
    Issue {
        /// The community directory.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        /// URI SAN; repeat for several (required for udap-server and udap-client).
        #[arg(long = "uri", value_name = "URI")]
        uris: Vec<String>,
        /// DNS SAN (tls-server); repeat for several.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP SAN (tls-server); repeat for several.
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// Subject common name (default: the first SAN).
        #[arg(long)]
        cn: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        key: KeyArg,
        /// Validity in days (negative values make an already expired certificate, for tests).
        #[arg(long, default_value_t = 365, allow_hyphen_values = true)]
        days: i64,
        /// Output prefix: writes PREFIX.pem, PREFIX-chain.pem and PREFIX-key.pem.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Mark a certificate as revoked (run `crl` afterwards to publish it).
    Revoke {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Serial number in hex, as printed by `issue`.
        #[arg(long)]
        serial: String,
    },
    /// (Re)issue the community's CRLs: root-ca.crl.pem and intermediate-ca.crl.pem.
    Crl {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Days until nextUpdate.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
}

const ROOT: &str = "root-ca";
const INTERMEDIATE: &str = "intermediate-ca";

fn check_free(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            bail!("{} exists; pass --force to overwrite it", p.display());
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("protecting {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_index(dir: &Path) -> anyhow::Result<Value> {
    let text = read(&dir.join("index.json"))?;
    serde_json::from_str(&text).context("index.json is not valid JSON")
}

fn write_index(dir: &Path, index: &Value) -> anyhow::Result<()> {
    write(
        &dir.join("index.json"),
        &serde_json::to_string_pretty(index)?,
        false,
    )
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn run(cmd: PkiCmd) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        PkiCmd::Community {
            out,
            name,
            key,
            days,
            crl_url,
            force,
        } => {
            if days <= 0 {
                bail!("--days must be positive");
            }
            let files = [
                out.join(format!("{ROOT}.pem")),
                out.join(format!("{ROOT}-key.pem")),
                out.join(format!("{INTERMEDIATE}.pem")),
                out.join(format!("{INTERMEDIATE}-key.pem")),
            ];
            check_free(
                &files.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
                force,
            )?;
            if let Some(u) = &crl_url {
                url::Url::parse(u).context("--crl-url is not an absolute URL")?;
            }
            let c = pki::create_community(
                &name,
                key.into(),
                now - Duration::hours(1),
                now + Duration::days(days),
                crl_url.as_deref(),
            )?;
            write(&files[0], &c.root_cert_pem, false)?;
            write(&files[1], &c.root_key_pem, true)?;
            write(&files[2], &c.intermediate_cert_pem, false)?;
            write(&files[3], &c.intermediate_key_pem, true)?;
            write_index(
                &out,
                &json!({"name": name, "crl_number": 0, "issued": [], "revoked": [],
                        "crl_url": crl_url.as_deref().map(|u| u.trim_end_matches('/'))}),
            )?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "trust_anchor": files[0], "intermediate": files[2],
                }))?
            );
            Ok(())
        }
        PkiCmd::Issue {
            ca_dir,
            kind,
            uris,
            dns,
            ips,
            cn,
            key,
            days,
            out,
            force,
        } => {
            let usage = match kind {
                Kind::TlsServer => EndEntityUsage::TlsServer,
                Kind::UdapServer => EndEntityUsage::UdapServer,
                Kind::UdapClient => EndEntityUsage::UdapClient,
            };
            match kind {
                Kind::TlsServer if dns.is_empty() && ips.is_empty() => {
                    bail!("a tls-server certificate needs at least one --dns or --ip")
                }
                Kind::UdapServer | Kind::UdapClient if uris.is_empty() => {
                    bail!("a UDAP certificate needs a --uri (the FHIR base or the app's iss)")
                }
                _ => {}
            }
            for u in &uris {
                url::Url::parse(u)
                    .with_context(|| format!("--uri `{u}` is not an absolute URI"))?;
            }
            if days == 0 {
                bail!("--days must not be 0");
            }
            let cert_path = with_suffix(&out, ".pem");
            let chain_path = with_suffix(&out, "-chain.pem");
            let key_path = with_suffix(&out, "-key.pem");
            check_free(&[&cert_path, &chain_path, &key_path], force)?;
            let issuer_cert = read(&ca_dir.join(format!("{INTERMEDIATE}.pem")))?;
            let issuer_key = read(&ca_dir.join(format!("{INTERMEDIATE}-key.pem")))?;
            let (not_before, not_after) = if days > 0 {
                (now - Duration::hours(1), now + Duration::days(days))
            } else {
                (
                    now + Duration::days(days) - Duration::days(1),
                    now + Duration::days(days),
                )
            };
            let common_name = cn
                .or_else(|| uris.first().cloned())
                .or_else(|| dns.first().cloned())
                .or_else(|| ips.first().map(|i| i.to_string()))
                .unwrap_or_else(|| "bluegate".to_string());
            let index = read_index(&ca_dir)?;
            // Certificates of a community with a CRL URL point to the intermediate's CRL there.
            let crl_dp = index["crl_url"]
                .as_str()
                .map(|base| format!("{base}/{INTERMEDIATE}.crl.pem"));
            let issued = pki::issue_end_entity_with_crl(
                &issuer_cert,
                &issuer_key,
                &EndEntityRequest {
                    common_name: common_name.clone(),
                    san_uris: uris.clone(),
                    dns_names: dns,
                    ip_addresses: ips,
                    key: key.into(),
                    not_before,
                    not_after,
                    usage,
                },
                crl_dp.as_deref(),
            )?;
            write(&cert_path, &issued.cert_pem, false)?;
            write(&chain_path, &issued.chain_pem, false)?;
            write(&key_path, &issued.key_pem, true)?;
            let mut index = index;
            if let Some(list) = index["issued"].as_array_mut() {
                list.push(json!({
                    "serial": issued.serial_hex, "subject": common_name, "uris": uris,
                    "issuer": INTERMEDIATE, "cert": cert_path,
                }));
            }
            write_index(&ca_dir, &index)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "serial": issued.serial_hex, "cert": cert_path, "chain": chain_path, "key": key_path,
                }))?
            );
            Ok(())
        }
        PkiCmd::Revoke { ca_dir, serial } => {
            let serial = serial.trim().trim_start_matches("0x").to_ascii_lowercase();
            if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("--serial must be a hexadecimal serial number");
            }
            let mut index = read_index(&ca_dir)?;
            let known = index["issued"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .any(|e| e["serial"].as_str() == Some(serial.as_str()))
                })
                .unwrap_or(false);
            if !known {
                bail!("serial {serial} was not issued from {}", ca_dir.display());
            }
            let already = index["revoked"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .any(|e| e["serial"].as_str() == Some(serial.as_str()))
                })
                .unwrap_or(false);
            if !already {
                if let Some(list) = index["revoked"].as_array_mut() {
                    list.push(json!({"serial": serial, "revoked_at": now.unix_timestamp(), "issuer": INTERMEDIATE}));
                }
                write_index(&ca_dir, &index)?;
            }
            println!(
                "revoked {serial}; run `bluegate pki crl --ca-dir {}` to publish it",
                ca_dir.display()
            );
            Ok(())
        }
        PkiCmd::Crl { ca_dir, days } => {
            if days <= 0 {
                bail!("--days must be positive");
            }
            let mut index = read_index(&ca_dir)?;
            let number = index["crl_number"].as_u64().unwrap_or(0) + 1;
            index["crl_number"] = json!(number);
            let mut written = Vec::new();
            for issuer in [ROOT, INTERMEDIATE] {
                let revoked: Vec<RevokedEntry> = index["revoked"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter(|e| e["issuer"].as_str() == Some(issuer))
                            .filter_map(|e| {
                                Some(RevokedEntry {
                                    serial_hex: e["serial"].as_str()?.to_string(),
                                    revoked_at: OffsetDateTime::from_unix_timestamp(
                                        e["revoked_at"].as_i64()?,
                                    )
                                    .ok()?,
                                    reason: None,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let crl = pki::make_crl(
                    &read(&ca_dir.join(format!("{issuer}.pem")))?,
                    &read(&ca_dir.join(format!("{issuer}-key.pem")))?,
                    &revoked,
                    number,
                    now,
                    now + Duration::days(days),
                )?;
                let path = ca_dir.join(format!("{issuer}.crl.pem"));
                write(&path, &crl, false)?;
                written.push(path);
            }
            write_index(&ca_dir, &index)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"crl_number": number, "crls": written}))?
            );
            Ok(())
        }
    }
}
