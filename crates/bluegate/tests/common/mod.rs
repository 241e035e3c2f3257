//! Shared set-up for the integration tests: a test PKI made with `bluegate pki`, a configuration file, a
//! real server on a random loopback port, and an HTTPS client that trusts only the test CA.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bluegate_server::serve::{self, Running};

pub mod fhir_data;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bluegate"))
}

/// Run `bluegate ARGS` and return its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("the bluegate binary runs")
}

/// Run `bluegate ARGS`, failing the test with its stderr if it fails.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "bluegate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A community (root + intermediate), a TLS server certificate for localhost/127.0.0.1 and a UDAP
/// metadata certificate for `fhir_base`, all made by the CLI.
pub fn make_pki(dir: &Path, fhir_base: &str) -> TestPki {
    let pki = TestPki {
        dir: dir.join("pki"),
    };
    let d = pki.s("");
    run_ok(&["pki", "community", "--out", &d, "--name", "Test Community"]);
    run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "tls-server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--key",
        "p256",
        "--out",
        &pki.s("tls"),
    ]);
    run_ok(&[
        "pki",
        "issue",
        "--ca-dir",
        &d,
        "--kind",
        "udap-server",
        "--uri",
        fhir_base,
        "--key",
        "rsa",
        "--out",
        &pki.s("metadata"),
    ]);
    pki
}

pub struct TestServer {
    pub running: Running,
    pub public_url: String,
    pub fhir_base: String,
    pub pki: TestPki,
    pub client: reqwest::Client,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.public_url, path)
    }
    pub async fn stop(self) {
        self.running
            .shutdown(std::time::Duration::from_secs(2))
            .await;
    }
}

/// Write a configuration for the test PKI; `extra` is appended (e.g. `database_url = ...`).
pub fn write_config(dir: &Path, port: u16, pki: &TestPki, extra: &str) -> PathBuf {
    let text = format!(
        r#"public_url = "https://localhost:{port}"
listen = "127.0.0.1:{port}"
data_dir = "data"
{extra}
[tls]
cert = "pki/tls-chain.pem"
key = "pki/tls-key.pem"

[log]
level = "warn"

[[communities]]
uri = "urn:example:community:test"
trust_anchors = ["pki/root-ca.pem"]
intermediates = ["pki/intermediate-ca.pem"]
metadata_cert = "pki/metadata-chain.pem"
metadata_key = "pki/metadata-key.pem"
"#
    );
    let _ = pki;
    let path = dir.join("bluegate.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// An HTTPS client that also trusts the test root (the app-side client of `bluegate-client`; it never
/// follows redirects, so tests observe them).
pub fn https_client(root_pem: &Path) -> reqwest::Client {
    let pem = std::fs::read(root_pem).expect("root pem");
    bluegate_client::http::client(Some(&pem)).expect("https client")
}

/// Start a real server over HTTPS on a random loopback port, with SQLite (or `extra_config`'s database).
pub async fn start_server(extra_config: &str) -> TestServer {
    // `free_port` releases the port before the server binds it, so a test running in parallel may take it
    // in between: start again on another port (the PKI names the port, so it is made again too).
    let mut attempt = 0;
    let (dir, port, pki, config_path, running) = loop {
        attempt += 1;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let pki = make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
        let config_path = write_config(dir.path(), port, &pki, extra_config);
        let cfg = bluegate_server::config::load_file(&config_path, &Default::default())
            .expect("valid test configuration");
        match serve::start(cfg).await {
            Ok(running) => break (dir, port, pki, config_path, running),
            Err(bluegate_server::serve::StartError::Listen { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && attempt < 5 => {}
            Err(e) => panic!("server starts: {e:?}"),
        }
    };
    let public_url = format!("https://localhost:{port}");
    let fhir_base = format!("{public_url}/fhir");
    let client = https_client(&pki.path("root-ca.pem"));
    TestServer {
        running,
        public_url,
        fhir_base,
        pki,
        client,
        config_path,
        _dir: dir,
    }
}

/// A fresh PostgreSQL database for one test, as a `database_url = ...` configuration line. `None` (with a
/// message) when no server is reachable, except under `CI=true`, where that is a failure.
pub async fn postgres_config() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("BLUEGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI ({base}): {e}");
            }
            eprintln!("SKIPPED: PostgreSQL integration test (no server at {base}: {e})");
            return None;
        }
    };
    let name = format!("bluegate_it_{}_{}", std::process::id(), free_port());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    };
    Some(format!("database_url = \"{url}\""))
}

/// Same as [`https_client`]; named for tests that depend on redirects not being followed.
pub fn https_client_no_redirect(root_pem: &Path) -> reqwest::Client {
    https_client(root_pem)
}

/// The audit trail is written off the request path; wait (up to 5 s) until every `wanted` event name is
/// in it, and return all events.
pub async fn audit_events(
    store: &std::sync::Arc<dyn bluegate_store::Store>,
    wanted: &[&str],
) -> Vec<bluegate_store::AuditRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let events = store.list_audit(1000, None).await.expect("audit readable");
        let all = wanted
            .iter()
            .all(|w| events.iter().any(|e| e.event.event == *w));
        if all || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
