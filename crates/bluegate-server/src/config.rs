//! Configuration: the TOML file of DESIGN §2, environment overrides, and validation at start-up.
//!
//! Loading is two steps on purpose: [`RawConfig`] is what the file (plus `BLUEGATE_*` variables) says, and
//! [`Config`] is what survived validation, with every path made absolute and every URL parsed. The server
//! only ever sees a [`Config`], so it never starts half-configured.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

/// A configuration error: which key (and which file) is wrong and why.
#[derive(Debug)]
pub struct ConfigError {
    pub source_name: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(source_name: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            source_name: source_name.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source_name, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.source_name, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    public_url: Option<String>,
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    tls: Option<RawTls>,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    communities: Vec<RawCommunity>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    fhir: RawFhir,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFhir {
    upstream: Option<String>,
    upstream_auth: Option<String>,
    upstream_token_file: Option<String>,
    upstream_username: Option<String>,
    upstream_password_file: Option<String>,
    upstream_client_cert: Option<String>,
    upstream_client_key: Option<String>,
    upstream_ca: Option<String>,
    upstream_timeout_secs: Option<u64>,
    cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    #[serde(default = "default_code_lifetime")]
    authorization_code: u64,
    #[serde(default = "default_access_lifetime")]
    access_token: u64,
    #[serde(default = "default_refresh_lifetime")]
    refresh_token: u64,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            authorization_code: default_code_lifetime(),
            access_token: default_access_lifetime(),
            refresh_token: default_refresh_lifetime(),
        }
    }
}

fn default_code_lifetime() -> u64 {
    60
}
fn default_access_lifetime() -> u64 {
    3600
}
fn default_refresh_lifetime() -> u64 {
    90 * 24 * 3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommunity {
    uri: String,
    #[serde(default)]
    trust_anchors: Vec<String>,
    #[serde(default)]
    intermediates: Vec<String>,
    #[serde(default)]
    crls: Vec<String>,
    metadata_cert: String,
    metadata_key: String,
    #[serde(default)]
    revocation: RevocationPolicy,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    level: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    clock_skew_secs: Option<u64>,
    carin_mode: Option<bool>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// What to do when a certificate's revocation status cannot be established (udap.md decision 7).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationPolicy {
    #[default]
    FailClosed,
    FailOpen,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a file path, or "embedded demo defaults").
    pub source_name: String,
    pub public_url: Url,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub tls: Option<TlsConfig>,
    pub tokens: TokenLifetimes,
    pub communities: Vec<CommunityConfig>,
    pub log: LogConfig,
    pub limits: Limits,
    pub security: Security,
    pub fhir: FhirConfig,
}

/// `[fhir]`: where FHIR resources come from and which browser origins may call the FHIR API.
#[derive(Debug, Clone)]
pub struct FhirConfig {
    /// Gateway mode: an existing FHIR server behind Bluegate. `None`: the built-in store.
    pub upstream: Option<UpstreamConfig>,
    /// Origins allowed by CORS on the FHIR API; `None` means any origin (`*`), which is safe because the
    /// API is authorized by bearer tokens, never by cookies.
    pub cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream FHIR base URL, without a trailing slash.
    pub base: Url,
    pub auth: UpstreamAuth,
    /// Extra trust anchor (PEM) for the upstream's TLS certificate.
    pub ca: Option<PathBuf>,
    pub timeout_secs: u64,
}

/// How Bluegate authenticates to the upstream FHIR server. Secrets are read from files at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    None,
    Bearer {
        token_file: PathBuf,
    },
    Basic {
        username: String,
        password_file: PathBuf,
    },
    MutualTls {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub authorization_code: u64,
    pub access_token: u64,
    pub refresh_token: u64,
}

#[derive(Debug, Clone)]
pub struct CommunityConfig {
    pub uri: String,
    pub trust_anchors: Vec<PathBuf>,
    pub intermediates: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub metadata_cert: PathBuf,
    pub metadata_key: PathBuf,
    pub revocation: RevocationPolicy,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone)]
pub struct Security {
    pub clock_skew_secs: u64,
    pub carin_mode: bool,
    /// `Host` header values (host[:port]) the server answers to.
    pub allowed_hosts: Vec<String>,
}

impl Config {
    /// The FHIR base: `{public_url}/fhir` (DESIGN §2, Contract: URLs).
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.public_origin())
    }

    /// `public_url` without a trailing slash.
    pub fn public_origin(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_string()
    }

    /// SQLite file used when `database_url` is not set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("bluegate.db")
    }
}

/// Every key an environment variable may set, as (section, key). Communities are an array of tables and
/// are configured in the file only.
const ENV_KEYS: &[(&str, &str)] = &[
    ("", "public_url"),
    ("", "listen"),
    ("", "data_dir"),
    ("", "database_url"),
    ("tls", "cert"),
    ("tls", "key"),
    ("tokens", "authorization_code"),
    ("tokens", "access_token"),
    ("tokens", "refresh_token"),
    ("log", "format"),
    ("log", "level"),
    ("limits", "max_body_bytes"),
    ("limits", "request_timeout_secs"),
    ("security", "clock_skew_secs"),
    ("security", "carin_mode"),
    ("security", "allowed_hosts"),
    ("fhir", "upstream"),
    ("fhir", "upstream_auth"),
    ("fhir", "upstream_token_file"),
    ("fhir", "upstream_username"),
    ("fhir", "upstream_password_file"),
    ("fhir", "upstream_client_cert"),
    ("fhir", "upstream_client_key"),
    ("fhir", "upstream_ca"),
    ("fhir", "upstream_timeout_secs"),
    ("fhir", "cors_origins"),
];

/// The environment variable that overrides `key` in `section` (`BLUEGATE_<SECTION>_<KEY>`).
pub fn env_var_name(section: &str, key: &str) -> String {
    if section.is_empty() {
        format!("BLUEGATE_{}", key.to_uppercase())
    } else {
        format!("BLUEGATE_{}_{}", section.to_uppercase(), key.to_uppercase())
    }
}

/// Every documented environment variable, for `--help` and the README.
pub fn env_var_names() -> Vec<String> {
    ENV_KEYS.iter().map(|(s, k)| env_var_name(s, k)).collect()
}

/// An environment value becomes a TOML value: integers and booleans as such, comma-separated lists for
/// list keys, anything else as a string.
fn env_value(key: &str, raw: &str) -> toml::Value {
    if key == "allowed_hosts" || key == "cors_origins" {
        return toml::Value::Array(
            raw.split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        );
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) {
    for (section, key) in ENV_KEYS {
        let Some(raw) = env.get(&env_var_name(section, key)) else {
            continue;
        };
        let value = env_value(key, raw);
        if section.is_empty() {
            table.insert(key.to_string(), value);
        } else {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(key.to_string(), value);
            }
        }
    }
}

/// Load and validate a configuration file, with `BLUEGATE_*` overrides from `env`.
pub fn load_file(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&source_name, "", format!("cannot read the file: {e}")))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    load_str(&text, &source_name, &base_dir, env)
}

/// Load and validate configuration text; relative paths are resolved against `base_dir`.
pub fn load_str(
    text: &str,
    source_name: &str,
    base_dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigError::new(source_name, "", format!("not valid TOML: {e}")))?;
    apply_env(&mut table, env);
    let raw: RawConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::new(source_name, "", e.message().to_string()))?;
    validate(raw, source_name, base_dir)
}

/// The process environment's `BLUEGATE_*` variables.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("BLUEGATE_"))
        .collect()
}

fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn validate(raw: RawConfig, src: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let public_url_text = raw
        .public_url
        .ok_or_else(|| ConfigError::new(src, "public_url", "is required"))?;
    let public_url =
        parse_public_url(&public_url_text).map_err(|m| ConfigError::new(src, "public_url", m))?;
    let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8443".to_string());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ConfigError::new(
            src,
            "listen",
            format!("`{listen_text}` is not an address:port such as 127.0.0.1:8443"),
        )
    })?;
    let data_dir = resolve(base_dir, raw.data_dir.as_deref().unwrap_or("bluegate-data"));
    if let Some(url) = &raw.database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                src,
                "database_url",
                "must be a postgres:// URL (leave it out to use SQLite in data_dir)",
            ));
        }
    }
    let tls = raw.tls.map(|t| TlsConfig {
        cert: resolve(base_dir, &t.cert),
        key: resolve(base_dir, &t.key),
    });
    let tokens = TokenLifetimes {
        authorization_code: raw.tokens.authorization_code,
        access_token: raw.tokens.access_token,
        refresh_token: raw.tokens.refresh_token,
    };
    if !(1..=600).contains(&tokens.authorization_code) {
        return Err(ConfigError::new(
            src,
            "tokens.authorization_code",
            "must be between 1 and 600 seconds",
        ));
    }
    if !(1..=86_400).contains(&tokens.access_token) {
        return Err(ConfigError::new(
            src,
            "tokens.access_token",
            "must be between 1 and 86400 seconds",
        ));
    }
    if tokens.refresh_token == 0 {
        return Err(ConfigError::new(
            src,
            "tokens.refresh_token",
            "must be positive",
        ));
    }
    if raw.communities.is_empty() {
        return Err(ConfigError::new(
            src,
            "communities",
            "at least one [[communities]] entry is required (UDAP metadata is signed per community)",
        ));
    }
    let mut communities = Vec::new();
    for (i, c) in raw.communities.into_iter().enumerate() {
        let key = |k: &str| format!("communities[{i}].{k}");
        if Url::parse(&c.uri).is_err() {
            return Err(ConfigError::new(
                src,
                key("uri"),
                format!("`{}` is not an absolute URI", c.uri),
            ));
        }
        if communities.iter().any(|x: &CommunityConfig| x.uri == c.uri) {
            return Err(ConfigError::new(
                src,
                key("uri"),
                "the same community is configured twice",
            ));
        }
        if c.trust_anchors.is_empty() {
            return Err(ConfigError::new(
                src,
                key("trust_anchors"),
                "a community needs at least one trust anchor",
            ));
        }
        communities.push(CommunityConfig {
            uri: c.uri,
            trust_anchors: c
                .trust_anchors
                .iter()
                .map(|p| resolve(base_dir, p))
                .collect(),
            intermediates: c
                .intermediates
                .iter()
                .map(|p| resolve(base_dir, p))
                .collect(),
            crls: c.crls.iter().map(|p| resolve(base_dir, p)).collect(),
            metadata_cert: resolve(base_dir, &c.metadata_cert),
            metadata_key: resolve(base_dir, &c.metadata_key),
            revocation: c.revocation,
        });
    }
    let level = raw.log.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(ConfigError::new(
            src,
            "log.level",
            format!("`{level}` is not a log filter (try info, debug, or bluegate_server=debug)"),
        ));
    }
    let limits = Limits {
        max_body_bytes: raw.limits.max_body_bytes.unwrap_or(1024 * 1024),
        request_timeout_secs: raw.limits.request_timeout_secs.unwrap_or(30),
    };
    if limits.max_body_bytes < 1024 {
        return Err(ConfigError::new(
            src,
            "limits.max_body_bytes",
            "must be at least 1024",
        ));
    }
    if limits.request_timeout_secs == 0 {
        return Err(ConfigError::new(
            src,
            "limits.request_timeout_secs",
            "must be positive",
        ));
    }
    let clock_skew_secs = raw.security.clock_skew_secs.unwrap_or(60);
    if clock_skew_secs > 60 {
        return Err(ConfigError::new(
            src,
            "security.clock_skew_secs",
            "must be at most 60 seconds",
        ));
    }
    let allowed_hosts = if raw.security.allowed_hosts.is_empty() {
        default_allowed_hosts(&public_url)
    } else {
        raw.security
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    };
    let fhir = validate_fhir(raw.fhir, src, base_dir)?;
    Ok(Config {
        source_name: src.to_string(),
        public_url,
        listen,
        data_dir,
        database_url: raw.database_url,
        tls,
        tokens,
        communities,
        log: LogConfig {
            format: raw.log.format,
            level,
        },
        limits,
        security: Security {
            clock_skew_secs,
            carin_mode: raw.security.carin_mode.unwrap_or(true),
            allowed_hosts,
        },
        fhir,
    })
}

fn validate_fhir(raw: RawFhir, src: &str, base_dir: &Path) -> Result<FhirConfig, ConfigError> {
    let cors_origins = match raw.cors_origins {
        None => None,
        Some(list) if list.iter().any(|o| o == "*") => None,
        Some(list) => {
            for o in &list {
                let ok = Url::parse(o)
                    .map(|u| {
                        matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some()
                            && u.path() == "/"
                            && !o.ends_with('/')
                    })
                    .unwrap_or(false);
                if !ok {
                    return Err(ConfigError::new(
                        src,
                        "fhir.cors_origins",
                        format!("`{o}` is not an origin such as https://app.example (or \"*\")"),
                    ));
                }
            }
            Some(list)
        }
    };
    let upstream_keys_without_upstream = raw.upstream_auth.is_some()
        || raw.upstream_token_file.is_some()
        || raw.upstream_username.is_some()
        || raw.upstream_password_file.is_some()
        || raw.upstream_client_cert.is_some()
        || raw.upstream_client_key.is_some()
        || raw.upstream_ca.is_some()
        || raw.upstream_timeout_secs.is_some();
    let Some(text) = raw.upstream else {
        if upstream_keys_without_upstream {
            return Err(ConfigError::new(
                src,
                "fhir.upstream",
                "upstream_* settings are given but fhir.upstream is not set",
            ));
        }
        return Ok(FhirConfig {
            upstream: None,
            cors_origins,
        });
    };
    let base = Url::parse(text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.query().is_none() && u.fragment().is_none() && u.username().is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                src,
                "fhir.upstream",
                format!("`{text}` is not an http(s) FHIR base URL without query or credentials"),
            )
        })?;
    let need = |v: Option<String>, key: &str, why: &str| {
        v.ok_or_else(|| ConfigError::new(src, format!("fhir.{key}"), why.to_string()))
    };
    let auth = match raw.upstream_auth.as_deref().unwrap_or("none") {
        "none" => UpstreamAuth::None,
        "bearer" => UpstreamAuth::Bearer {
            token_file: resolve(
                base_dir,
                &need(
                    raw.upstream_token_file,
                    "upstream_token_file",
                    "is required with upstream_auth = \"bearer\"",
                )?,
            ),
        },
        "basic" => UpstreamAuth::Basic {
            username: need(
                raw.upstream_username,
                "upstream_username",
                "is required with upstream_auth = \"basic\"",
            )?,
            password_file: resolve(
                base_dir,
                &need(
                    raw.upstream_password_file,
                    "upstream_password_file",
                    "is required with upstream_auth = \"basic\"",
                )?,
            ),
        },
        "mtls" => UpstreamAuth::MutualTls {
            cert: resolve(
                base_dir,
                &need(
                    raw.upstream_client_cert,
                    "upstream_client_cert",
                    "is required with upstream_auth = \"mtls\"",
                )?,
            ),
            key: resolve(
                base_dir,
                &need(
                    raw.upstream_client_key,
                    "upstream_client_key",
                    "is required with upstream_auth = \"mtls\"",
                )?,
            ),
        },
        other => {
            return Err(ConfigError::new(
                src,
                "fhir.upstream_auth",
                format!("`{other}` is not one of none, bearer, basic, mtls"),
            ))
        }
    };
    let timeout_secs = raw.upstream_timeout_secs.unwrap_or(30);
    if !(1..=300).contains(&timeout_secs) {
        return Err(ConfigError::new(
            src,
            "fhir.upstream_timeout_secs",
            "must be between 1 and 300 seconds",
        ));
    }
    Ok(FhirConfig {
        upstream: Some(UpstreamConfig {
            base,
            auth,
            ca: raw.upstream_ca.map(|p| resolve(base_dir, &p)),
            timeout_secs,
        }),
        cors_origins,
    })
}

/// `public_url` must be an absolute http(s) origin, optionally with a path prefix, without query or
/// fragment; the FHIR base and the issuer are derived from it.
pub fn parse_public_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not an absolute URL ({e})"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!("`{text}` must use https (or http behind a proxy)"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{text}` must not carry credentials"));
    }
    Ok(url)
}

/// The public host, and for a loopback public URL its loopback aliases, so that `localhost` and
/// `127.0.0.1` both work in development.
fn default_allowed_hosts(public_url: &Url) -> Vec<String> {
    let host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let port = public_url.port_or_known_default();
    let mut hosts = vec![host.clone()];
    if matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
    }
    let mut out = Vec::new();
    for h in hosts {
        if let Some(p) = port {
            out.push(format!("{h}:{p}"));
        }
        // A default port may be left out of the Host header.
        if public_url.port().is_none() {
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
public_url = "https://payer.example:8443"
[[communities]]
uri = "urn:example:community:test"
trust_anchors = ["pki/ca.pem"]
metadata_cert = "pki/meta.pem"
metadata_key = "pki/meta-key.pem"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_str(text, "test.toml", Path::new("/etc/bluegate"), &env)
    }

    #[test]
    fn minimal_file_gets_defaults_and_resolved_paths() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.fhir_base(), "https://payer.example:8443/fhir");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.tokens.authorization_code, 60);
        assert_eq!(c.tokens.refresh_token, 7_776_000);
        assert_eq!(c.data_dir, PathBuf::from("/etc/bluegate/bluegate-data"));
        assert_eq!(
            c.communities[0].trust_anchors[0],
            PathBuf::from("/etc/bluegate/pki/ca.pem")
        );
        assert!(c.tls.is_none());
        assert_eq!(c.security.allowed_hosts, vec!["payer.example:8443"]);
    }

    #[test]
    fn env_overrides_file_values() {
        let c = load(
            MINIMAL,
            &[
                ("BLUEGATE_PUBLIC_URL", "https://api.payer.example"),
                ("BLUEGATE_TOKENS_ACCESS_TOKEN", "600"),
                ("BLUEGATE_LOG_FORMAT", "json"),
                ("BLUEGATE_TLS_CERT", "/tls/c.pem"),
                ("BLUEGATE_TLS_KEY", "tls/k.pem"),
            ],
        )
        .unwrap();
        assert_eq!(c.fhir_base(), "https://api.payer.example/fhir");
        assert_eq!(c.tokens.access_token, 600);
        assert_eq!(c.log.format, LogFormat::Json);
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/tls/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/bluegate/tls/k.pem"));
        assert_eq!(
            c.security.allowed_hosts,
            vec!["api.payer.example:443", "api.payer.example"]
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("public_url = \"not a url\"", "public_url"),
            ("public_url = \"ftp://x.example\"", "public_url"),
            ("public_url = \"https://x.example/?q=1\"", "public_url"),
        ];
        for (line, key) in cases {
            let text = MINIMAL.replace("public_url = \"https://payer.example:8443\"", line);
            let err = load(&text, &[]).unwrap_err();
            assert_eq!(err.key, *key, "{line}: {err}");
            assert!(err.to_string().starts_with("test.toml: "), "{err}");
        }
        let err = load(&format!("listen = \"nowhere\"\n{MINIMAL}"), &[]).unwrap_err();
        assert_eq!(err.key, "listen");
        let err = load(
            &MINIMAL.replace("trust_anchors = [\"pki/ca.pem\"]", "trust_anchors = []"),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "communities[0].trust_anchors");
        let err = load("public_url = \"https://x.example\"", &[]).unwrap_err();
        assert_eq!(err.key, "communities");
        let err = load(MINIMAL, &[("BLUEGATE_TOKENS_AUTHORIZATION_CODE", "100000")]).unwrap_err();
        assert_eq!(err.key, "tokens.authorization_code");
        let err = load(MINIMAL, &[("BLUEGATE_SECURITY_CLOCK_SKEW_SECS", "600")]).unwrap_err();
        assert_eq!(err.key, "security.clock_skew_secs");
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused() {
        let err = load(&format!("publik_url = \"x\"\n{MINIMAL}"), &[]).unwrap_err();
        assert!(err.to_string().contains("publik_url"), "{err}");
        let err = load("public_url = ", &[]).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }

    #[test]
    fn fhir_section_gateway_and_cors() {
        let c = load(MINIMAL, &[]).unwrap();
        assert!(c.fhir.upstream.is_none());
        assert!(c.fhir.cors_origins.is_none());
        let text = format!(
            "{MINIMAL}\n[fhir]\nupstream = \"https://fhir.internal.example/r4/\"\nupstream_auth = \"basic\"\n\
             upstream_username = \"bg\"\nupstream_password_file = \"secrets/pw\"\ncors_origins = [\"https://app.example\"]\n"
        );
        let c = load(&text, &[]).unwrap();
        let up = c.fhir.upstream.unwrap();
        assert_eq!(up.base.as_str(), "https://fhir.internal.example/r4");
        assert_eq!(
            up.auth,
            UpstreamAuth::Basic {
                username: "bg".into(),
                password_file: PathBuf::from("/etc/bluegate/secrets/pw")
            }
        );
        assert_eq!(
            c.fhir.cors_origins,
            Some(vec!["https://app.example".to_string()])
        );
        let err = load(
            MINIMAL,
            &[
                ("BLUEGATE_FHIR_UPSTREAM", "https://x.example/fhir"),
                ("BLUEGATE_FHIR_UPSTREAM_AUTH", "bearer"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.key, "fhir.upstream_token_file");
        let err = load(MINIMAL, &[("BLUEGATE_FHIR_UPSTREAM", "ftp://x.example")]).unwrap_err();
        assert_eq!(err.key, "fhir.upstream");
        let err = load(MINIMAL, &[("BLUEGATE_FHIR_UPSTREAM_AUTH", "basic")]).unwrap_err();
        assert_eq!(err.key, "fhir.upstream");
        let err = load(
            MINIMAL,
            &[("BLUEGATE_FHIR_CORS_ORIGINS", "https://app.example/path")],
        )
        .unwrap_err();
        assert_eq!(err.key, "fhir.cors_origins");
    }

    #[test]
    fn loopback_public_url_allows_loopback_aliases() {
        let c = load(
            &MINIMAL.replace("https://payer.example:8443", "https://localhost:8443"),
            &[],
        )
        .unwrap();
        assert!(c
            .security
            .allowed_hosts
            .contains(&"127.0.0.1:8443".to_string()));
        assert!(c
            .security
            .allowed_hosts
            .contains(&"localhost:8443".to_string()));
    }
}
