//! Demo mode: `bluegate serve` with no configuration creates everything once, serves HTTPS, stops cleanly
//! on SIGTERM, and reuses what it created on the next start.

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

#[tokio::test]
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
