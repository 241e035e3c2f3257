//! The app's per-user state: registrations and tokens per server, in one JSON file written atomically with
//! owner-only permissions (0600, directory 0700). It holds refresh tokens and client secrets: treat it like
//! a key file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::registration::Registration;
use crate::token::TokenSet;

/// Environment variable naming the state file.
pub const STATE_ENV: &str = "BLUEGATE_APP_STATE";

/// Where the state file lives by default: `$BLUEGATE_APP_STATE`, else `$XDG_STATE_HOME/bluegate/app.json`,
/// else `~/.local/state/bluegate/app.json`.
pub fn default_path() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(STATE_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p).join("bluegate").join("app.json"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h)
            .join(".local")
            .join("state")
            .join("bluegate")
            .join("app.json")),
        None => Err(Error::State {
            path: "(default)".into(),
            message: "neither XDG_STATE_HOME nor HOME is set; pass --state FILE".into(),
        }),
    }
}

/// How to reach and trust a server again (all paths absolute).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trust {
    /// Extra CA for HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Anchors for the server's signed UDAP metadata.
    #[serde(default)]
    pub trust_anchors: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community: Option<String>,
}

/// What the app knows about one server (keyed by FHIR base).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerState {
    pub registration: Registration,
    /// The app's certificate chain and key files (private_key_jwt signs with them at every token request).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_uri: String,
    #[serde(default)]
    pub trust: Trust,
    /// The contacts registered (needed to cancel).
    #[serde(default)]
    pub contacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenSet>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppState {
    #[serde(default)]
    pub servers: BTreeMap<String, ServerState>,
}

impl AppState {
    /// Read the file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: path.display().to_string(),
                message: format!("not a valid state file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppState::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Write atomically (temporary file, fsync, rename) with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_private(path, &text)
    }

    pub fn server(&self, fhir_base: &str) -> Option<&ServerState> {
        self.servers.get(fhir_base.trim_end_matches('/'))
    }

    pub fn server_mut(&mut self, fhir_base: &str) -> Option<&mut ServerState> {
        self.servers.get_mut(fhir_base.trim_end_matches('/'))
    }
}

/// Write `bytes` to `path` atomically with owner-only permissions; the directory is created 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::util::random_b64url(6)));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
    let res = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(ctx("writing"), e));
    drop(f);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("replacing {}", path.display()), e)
    })
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("app.json");
        assert!(AppState::load(&path).unwrap().servers.is_empty());
        let mut s = AppState::default();
        s.servers.insert(
            "https://x.example/fhir".into(),
            ServerState {
                registration: Registration {
                    client_id: "c1".into(),
                    client_secret: Some(crate::Secret::new("s3cret")),
                    http_status: 201,
                    grant_types: vec!["authorization_code".into()],
                    redirect_uris: vec![],
                    scope: "openid".into(),
                    token_endpoint_auth_method: None,
                    client_name: None,
                },
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
                client_uri: "https://app.example/".into(),
                trust: Trust::default(),
                contacts: vec![],
                tokens: None,
            },
        );
        s.save(&path).unwrap();
        s.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        let back = AppState::load(&path).unwrap();
        let r = &back.server("https://x.example/fhir/").unwrap().registration;
        assert_eq!(r.client_secret.as_ref().unwrap().expose(), "s3cret");
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
