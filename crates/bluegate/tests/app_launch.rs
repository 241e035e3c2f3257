//! `bluegate app register | launch | refresh | cancel` end to end against Bluegate over HTTPS. The test
//! plays the member: the CLI prints the authorization URL (`--no-browser`), the test signs in and consents
//! through the HTML forms with its own HTTP client, and the redirect reaches the CLI's loopback listener.
//! UDAP registration requires https redirect URIs (UR-12), so the listener serves TLS with a certificate
//! for 127.0.0.1 from the test community.

mod client_support;
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use client_support as cs;
use serde_json::Value;

const APP_URI: &str = "https://app.example/bluegate-cli";

struct Setup {
    s: common::TestServer,
    dir: tempfile::TempDir,
    state: PathBuf,
    root: String,
    tls: (PathBuf, PathBuf),
    port: u16,
}

impl Setup {
    async fn new() -> Setup {
        let s = common::start_server("").await;
        cs::add_member(&s, "alice", &["pat-alice"]).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = cs::loopback_tls(&s, dir.path());
        Setup {
            state: dir.path().join("state").join("app.json"),
            root: s.pki.s("root-ca.pem"),
            port: common::free_port(),
            tls,
            dir,
            s,
        }
    }

    fn redirect(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    fn state_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.state).unwrap()).unwrap()
    }

    fn server_state(&self) -> Value {
        self.state_json()["servers"][&self.s.fhir_base].clone()
    }

    /// `bluegate app register` with the test community as both the HTTPS CA and the metadata anchor.
    fn register(&self, cert: &(PathBuf, PathBuf), auth: &str) -> Value {
        let out = common::run_ok(&[
            "app",
            "register",
            &self.s.fhir_base,
            "--cert",
            cert.0.to_str().unwrap(),
            "--key",
            cert.1.to_str().unwrap(),
            "--redirect-uri",
            &self.redirect(),
            "--auth",
            auth,
            "--contact",
            "mailto:dev@app.example",
            "--logo-uri",
            "https://app.example/logo.png",
            "--name",
            "CLI test app",
            "--ca",
            &self.root,
            "--trust-anchor",
            &self.root,
            "--state",
            self.state.to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    fn launch_args(&self) -> Vec<String> {
        [
            "app",
            "launch",
            &self.s.fhir_base,
            "--no-browser",
            "--redirect-port",
            &self.port.to_string(),
            "--redirect-cert",
            self.tls.0.to_str().unwrap(),
            "--redirect-key",
            self.tls.1.to_str().unwrap(),
            "--timeout",
            "60",
            "--state",
            self.state.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Run `app launch`, play the member with `decision`, optionally tamper with the redirect, deliver it
    /// to the CLI's listener. Returns (success, stdout, stderr, the listener's HTTP status).
    async fn launch(
        &self,
        decision: &str,
        tamper: impl Fn(String) -> String,
    ) -> (bool, String, String, u16) {
        let mut child = cs::spawn(&self.launch_args());
        let (url, mut lines, mut reader) =
            tokio::task::block_in_place(|| cs::read_auth_url(&mut child));
        assert_eq!(
            cs::query(&url, "aud").as_deref(),
            Some(self.s.fhir_base.as_str())
        );
        assert_eq!(
            cs::query(&url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        assert!(cs::query(&url, "state").unwrap().len() >= 22);
        assert!(cs::query(&url, "nonce").is_some());
        assert_eq!(cs::query(&url, "redirect_uri"), Some(self.redirect()));
        let mut b = cs::Browser::new(&self.s);
        let back = cs::sign_in(&mut b, &self.s, &url, "alice", decision).await;
        assert!(back.starts_with(&self.redirect()), "{back}");
        let back = tamper(back);
        // The redirect reaches the CLI's listener (TLS with the test community's certificate).
        let status = common::https_client(Path::new(&self.root))
            .get(&back)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let status_code = tokio::task::block_in_place(|| child.wait().unwrap());
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        lines.push(rest);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status_code.success(), lines.join("\n"), err, status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_launch_refresh_with_udap_private_key_jwt() {
    let t = Setup::new().await;
    let cert = cs::app_cert(&t.s, t.dir.path(), APP_URI, "rsa");
    let reg = t.register(&cert, "private_key_jwt");
    assert_eq!(reg["outcome"], "registered");
    assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    #[cfg(unix)]
    {
        assert_eq!(cs::mode(&t.state), 0o600);
        assert_eq!(cs::mode(t.state.parent().unwrap()), 0o700);
    }

    let (ok, out, err, status) = t.launch("allow", |u| u).await;
    assert!(ok, "launch failed: {out}\n{err}");
    assert_eq!(status, 200);
    let st = t.server_state();
    let at = st["tokens"]["access_token"].as_str().unwrap().to_string();
    let rt = st["tokens"]["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(st["tokens"]["patient"], "pat-alice");
    assert_eq!(
        st["tokens"]["fhir_user"],
        format!("{}/Patient/pat-alice", t.s.fhir_base)
    );
    assert!(
        out.contains("signed in") && out.contains("pat-alice"),
        "{out}"
    );
    for secret in [&at, &rt] {
        assert!(
            !out.contains(secret.as_str()) && !err.contains(secret.as_str()),
            "a token was printed"
        );
    }
    #[cfg(unix)]
    assert_eq!(cs::mode(&t.state), 0o600);

    // Refresh: the refresh token is rotated and the new one stored.
    let out = common::run_ok(&[
        "app",
        "refresh",
        &t.s.fhir_base,
        "--state",
        t.state.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["patient"], "pat-alice");
    assert_eq!(v["refresh_token"], true);
    assert!(!out.contains(&rt));
    let st = t.server_state();
    let rt2 = st["tokens"]["refresh_token"].as_str().unwrap();
    assert_ne!(rt2, rt);
    assert_ne!(st["tokens"]["access_token"].as_str().unwrap(), at);
    // --show-tokens is the only way to see them.
    let out = common::run_ok(&[
        "app",
        "refresh",
        &t.s.fhir_base,
        "--state",
        t.state.to_str().unwrap(),
        "--show-tokens",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["refresh_token"].as_str(),
        t.server_state()["tokens"]["refresh_token"].as_str()
    );

    // Registering again updates the same client and keeps the tokens.
    let reg = t.register(&cert, "private_key_jwt");
    assert_eq!(reg["outcome"], "updated");
    assert_eq!(reg["client_id"], client_id.as_str());
    assert!(t.server_state()["tokens"]["access_token"].is_string());

    // Cancel: the server confirms, the state forgets the server, the refresh token is dead.
    let old = t.state_json();
    let out = common::run_ok(&[
        "app",
        "cancel",
        &t.s.fhir_base,
        "--state",
        t.state.to_str().unwrap(),
    ]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(t.server_state().is_null());
    std::fs::write(&t.state, serde_json::to_vec(&old).unwrap()).unwrap();
    let out = common::run(&[
        "app",
        "refresh",
        &t.s.fhir_base,
        "--state",
        t.state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_client") || err.contains("invalid_grant"),
        "{err}"
    );
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_launch_refresh_with_client_secret_basic() {
    let t = Setup::new().await;
    let cert = cs::app_cert(&t.s, t.dir.path(), APP_URI, "p256");
    let reg = t.register(&cert, "client_secret_basic");
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(reg["client_secret_stored"], true);
    let secret = t.server_state()["registration"]["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!serde_json::to_string(&reg).unwrap().contains(&secret));

    let (ok, out, err, _) = t.launch("allow", |u| u).await;
    assert!(ok, "launch failed: {out}\n{err}");
    assert!(!out.contains(&secret));
    let rt = t.server_state()["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    common::run_ok(&[
        "app",
        "refresh",
        &t.s.fhir_base,
        "--state",
        t.state.to_str().unwrap(),
    ]);
    assert_ne!(
        t.server_state()["tokens"]["refresh_token"]
            .as_str()
            .unwrap(),
        rt
    );
    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_refuses_a_forged_state_and_reports_a_denial() {
    let t = Setup::new().await;
    let cert = cs::app_cert(&t.s, t.dir.path(), APP_URI, "rsa");
    t.register(&cert, "private_key_jwt");

    // The member says no: the CLI quotes the server's error.
    let (ok, _, err, _) = t.launch("deny", |u| u).await;
    assert!(!ok);
    assert!(err.contains("access_denied"), "{err}");
    assert!(t.server_state()["tokens"].is_null());

    // The redirect's state replaced (a CSRF attempt): refused, nothing stored.
    let (ok, out, err, status) = t
        .launch("allow", |u| {
            let state = cs::query(&u, "state").unwrap();
            u.replace(&state, "forged-state-value-forged-state-value")
        })
        .await;
    assert!(!ok, "{out}");
    assert_eq!(status, 400);
    assert!(err.contains("state"), "{err}");
    assert!(t.server_state()["tokens"].is_null());

    t.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_without_registration_or_a_matching_redirect_port_says_why() {
    let t = Setup::new().await;
    let out = common::run(&[
        "app",
        "launch",
        &t.s.fhir_base,
        "--no-browser",
        "--state",
        t.state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
    let cert = cs::app_cert(&t.s, t.dir.path(), APP_URI, "rsa");
    t.register(&cert, "private_key_jwt");
    let out = common::run(&[
        "app",
        "launch",
        &t.s.fhir_base,
        "--no-browser",
        "--redirect-port",
        "1",
        "--state",
        t.state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    t.s.stop().await;
}
