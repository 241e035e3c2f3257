//! Demo mode: `bluegate serve` with no configuration creates everything once, serves HTTPS, stops cleanly
//! on SIGTERM, and reuses what it created on the next start.

mod client_support;
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start_demo(dir: &std::path::Path, port: u16) -> (Child, String) {
    let mut child = Command::new(common::bin())
        .arg("serve")
        .current_dir(dir)
        .env("BLUEGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BLUEGATE_PUBLIC_URL", format!("https://localhost:{port}"))
        .env("BLUEGATE_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bluegate serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("try: curl") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (child, banner)
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_creates_serves_and_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (mut child, banner) = start_demo(dir.path(), port);
    let data = dir.path().join("bluegate-data");
    assert!(
        banner.contains(&format!("https://localhost:{port}/fhir")),
        "{banner}"
    );
    assert!(banner.contains("root-ca.pem"), "{banner}");
    assert!(
        banner.contains("alice") && banner.contains("bob"),
        "{banner}"
    );
    assert!(banner.contains("created on this start"), "{banner}");
    assert!(banner.contains("bluegate app discover"), "{banner}");
    for f in [
        "bluegate.toml",
        "bluegate.db",
        "pki/root-ca.pem",
        "pki/tls-chain.pem",
        "pki/metadata-chain.pem",
        "pki/sample-client-chain.pem",
    ] {
        assert!(data.join(f).exists(), "{f} not created");
    }
    let client = common::https_client(&data.join("pki/root-ca.pem"));
    let base = format!("https://localhost:{port}");
    let resp = client
        .get(format!("{base}/fhir/.well-known/udap"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["signed_metadata"].is_string());
    // The command the banner suggests works: the demo's signed metadata verifies against the demo CA.
    let ca = data.join("pki/root-ca.pem").to_str().unwrap().to_string();
    let fhir = format!("{base}/fhir");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::bin())
            .args([
                "app",
                "discover",
                &fhir,
                "--ca",
                &ca,
                "--trust-anchor",
                &ca,
                "--json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["metadata_verified"], true, "{found}");
    readme_app_flow(&data, &base).await;
    let status = stop(&mut child);
    assert!(status.success(), "exit on SIGTERM: {status}");

    let ca_before = std::fs::read(data.join("pki/root-ca.pem")).unwrap();
    let (mut child, banner) = start_demo(dir.path(), port);
    assert!(!banner.contains("created on this start"), "{banner}");
    assert_eq!(
        std::fs::read(data.join("pki/root-ca.pem")).unwrap(),
        ca_before,
        "PKI regenerated"
    );
    // A new client: the old one's pooled connection died with the first server.
    let client = common::https_client(&data.join("pki/root-ca.pem"));
    let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    stop(&mut child);

    // The demo members exist once, with their patients.
    let members = common::run_ok(&[
        "member",
        "list",
        "--config",
        data.join("bluegate.toml").to_str().unwrap(),
    ]);
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let bob = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == "bob")
        .unwrap();
    assert_eq!(bob["patients"].as_array().unwrap().len(), 2);

    // The synthetic CARIN BB data was seeded once (the second start wrote nothing: still version 1).
    use bluegate_store::fhir::params::{parse_param, ResourceType};
    let cfg = bluegate_server::config::load_file(&data.join("bluegate.toml"), &Default::default())
        .unwrap();
    let store = bluegate_server::serve::open_store(&cfg).await.unwrap();
    let alice = store
        .read(ResourceType::Patient, "demo-alice")
        .await
        .unwrap()
        .expect("Patient/demo-alice seeded");
    assert_eq!(alice.version_id, 1, "seeded once");
    let rp = store
        .read(ResourceType::RelatedPerson, "demo-bob")
        .await
        .unwrap()
        .expect("RelatedPerson/demo-bob seeded");
    assert!(rp.json.contains("Patient/demo-bob-child-1"), "{}", rp.json);
    let mut patients = bluegate_store::SearchQuery::new(ResourceType::Patient);
    patients.count = 1;
    let page = store.search(&patients).await.unwrap();
    assert_eq!(page.total, Some(53), "3 demo patients and 50 others");
    for p in ["demo-alice", "demo-bob-child-1", "demo-bob-child-2"] {
        let rt = ResourceType::ExplanationOfBenefit;
        let mut q = bluegate_store::SearchQuery::new(rt);
        q.params.push(parse_param(rt, "patient", p).unwrap());
        q.patient_compartment = Some(vec![p.to_string()]);
        let page = store.search(&q).await.unwrap();
        assert_eq!(page.total, Some(20), "{p}'s EOBs");
        assert!(page
            .resources
            .iter()
            .all(|r| r.json.contains(&format!("\"Patient/{p}\""))));
    }
    let rt = ResourceType::Coverage;
    let mut q = bluegate_store::SearchQuery::new(rt);
    q.params
        .push(parse_param(rt, "subscriber", "RelatedPerson/demo-bob").unwrap());
    let page = store.search(&q).await.unwrap();
    assert!(
        page.total.unwrap_or(0) >= 2,
        "Bob subscribes his children's coverage"
    );
}

/// The README's app-side walk-through against the demo server: register with the sample client
/// certificate, launch (the member alice signs in and consents through the HTML forms), refresh, fetch.
async fn readme_app_flow(data: &std::path::Path, base: &str) {
    use client_support as cs;
    let pki = data.join("pki");
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let fhir = format!("{base}/fhir");
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("app-state.json");
    let state_s = state.to_str().unwrap().to_string();
    let port = common::free_port();
    let redirect = format!("https://127.0.0.1:{port}/");
    let register = [
        "app",
        "register",
        &fhir,
        "--cert",
        &p("sample-client-chain.pem"),
        "--key",
        &p("sample-client-key.pem"),
        "--redirect-uri",
        &redirect,
        "--contact",
        "mailto:you@example.org",
        "--logo-uri",
        "https://example.org/logo.png",
        "--ca",
        &p("root-ca.pem"),
        "--trust-anchor",
        &p("root-ca.pem"),
        "--state",
        &state_s,
    ];
    let (reg_out, reg_args) = (
        tokio::task::block_in_place(|| common::run(&register)),
        register.join(" "),
    );
    assert!(
        reg_out.status.success(),
        "{reg_args}: {}",
        String::from_utf8_lossy(&reg_out.stderr)
    );
    let args: Vec<String> = [
        "app",
        "launch",
        &fhir,
        "--no-browser",
        "--redirect-cert",
        &p("tls-chain.pem"),
        "--redirect-key",
        &p("tls-key.pem"),
        "--state",
        &state_s,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let mut child = cs::spawn(&args);
    let (url, _, _reader) = tokio::task::block_in_place(|| cs::read_auth_url(&mut child));
    let mut b = cs::Browser::for_origin(&pki.join("root-ca.pem"), base);
    let back = cs::sign_in_at(&mut b, base, &url, "alice", "alice-demo-password", "allow").await;
    assert!(back.starts_with(&redirect), "{back}");
    common::https_client(&pki.join("root-ca.pem"))
        .get(&back)
        .send()
        .await
        .unwrap();
    let status = tokio::task::block_in_place(|| child.wait().unwrap());
    assert!(status.success(), "launch: {status}");
    common::run_ok(&["app", "refresh", &fhir, "--state", &state_s]);
    let out_dir = work.path().join("claims");
    let summary = common::run_ok(&[
        "app",
        "fetch",
        &fhir,
        "--out",
        out_dir.to_str().unwrap(),
        "--state",
        &state_s,
        "--json",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(summary.trim()).unwrap_or_else(|e| panic!("{e}: {summary}"));
    assert_eq!(v["counts"]["Patient"], 1, "{v}");
    assert_eq!(v["counts"]["ExplanationOfBenefit"], 20, "{v}");
    assert!(v["counts"]["Coverage"].as_u64().unwrap_or(0) >= 1, "{v}");
    let eobs = std::fs::read_to_string(out_dir.join("ExplanationOfBenefit.ndjson")).unwrap();
    assert_eq!(eobs.lines().count(), 20);
    assert!(
        eobs.lines().all(|l| l.contains("\"Patient/demo-alice\"")),
        "alice's claims only"
    );
}
