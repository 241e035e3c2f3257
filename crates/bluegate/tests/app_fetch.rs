//! `bluegate app fetch` end to end against Bluegate's own FHIR API: register, launch as the member, then
//! download Patient, Coverage and ExplanationOfBenefit (+ includes) as NDJSON, resume, and summarize.
//! The fetch logic is also tested against a small (and a hostile) FHIR server in `bluegate-client`'s tests.

mod client_support;
mod common;

use std::io::Read;

use client_support as cs;
use serde_json::{json, Value};

fn eob(id: &str, kind: &str, start: &str, billed: f64, paid: f64) -> Value {
    json!({"resourceType": "ExplanationOfBenefit", "id": id, "status": "active", "use": "claim",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": kind}]},
        "patient": {"reference": "Patient/pat-alice"},
        "billablePeriod": {"start": start},
        "created": start,
        "insurer": {"reference": "Organization/org-1"},
        "provider": {"reference": "Practitioner/prac-1"},
        "outcome": "complete",
        "insurance": [{"focal": true, "coverage": {"reference": "Coverage/cov-1"}}],
        "total": [{"category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted"}]},
                   "amount": {"value": billed, "currency": "USD"}}],
        "payment": {"amount": {"value": paid, "currency": "USD"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_downloads_everything_the_token_opens_and_resumes() {
    let s = common::start_server("").await;
    cs::add_member(&s, "alice", &["pat-alice"]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.ndjson");
    let mut lines = vec![
        json!({"resourceType": "Patient", "id": "pat-alice", "name": [{"family": "Example", "given": ["Alice"]}]}),
        json!({"resourceType": "Organization", "id": "org-1", "name": "Example Health Plan"}),
        json!({"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Doe"}]}),
        json!({"resourceType": "Coverage", "id": "cov-1", "status": "active",
               "beneficiary": {"reference": "Patient/pat-alice"}, "payor": [{"reference": "Organization/org-1"}]}),
        json!({"resourceType": "Patient", "id": "pat-bob"}),
        json!({"resourceType": "ExplanationOfBenefit", "id": "eob-bob", "patient": {"reference": "Patient/pat-bob"},
               "type": {"coding": [{"code": "pharmacy"}]}}),
    ];
    lines.push(eob("eob-1", "pharmacy", "2023-01-05", 120.0, 100.0));
    lines.push(eob("eob-2", "professional", "2023-06-10", 80.5, 60.25));
    lines.push(eob("eob-3", "pharmacy", "2024-02-01", 10.0, 0.0));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&data, text).unwrap();
    common::run_ok(&[
        "fhir",
        "import",
        "--config",
        s.config_path.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);

    let state = dir.path().join("app.json");
    let root = s.pki.s("root-ca.pem");
    let tls = cs::loopback_tls(&s, dir.path());
    let cert = cs::app_cert(&s, dir.path(), "https://app.example/fetch", "rsa");
    let port = common::free_port();
    let redirect = format!("https://127.0.0.1:{port}/");
    common::run_ok(&[
        "app",
        "register",
        &s.fhir_base,
        "--cert",
        cert.0.to_str().unwrap(),
        "--key",
        cert.1.to_str().unwrap(),
        "--redirect-uri",
        &redirect,
        "--contact",
        "mailto:dev@app.example",
        "--logo-uri",
        "https://app.example/logo.png",
        "--ca",
        &root,
        "--trust-anchor",
        &root,
        "--state",
        state.to_str().unwrap(),
    ]);
    let args: Vec<String> = [
        "app",
        "launch",
        &s.fhir_base,
        "--no-browser",
        "--redirect-port",
        &port.to_string(),
        "--redirect-cert",
        tls.0.to_str().unwrap(),
        "--redirect-key",
        tls.1.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let mut child = cs::spawn(&args);
    let (url, _, mut reader) = tokio::task::block_in_place(|| cs::read_auth_url(&mut child));
    let mut b = cs::Browser::new(&s);
    let back = cs::sign_in(&mut b, &s, &url, "alice", "allow").await;
    common::https_client(std::path::Path::new(&root))
        .get(&back)
        .send()
        .await
        .unwrap();
    assert!(tokio::task::block_in_place(|| child.wait().unwrap()).success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();

    let out_dir = dir.path().join("download");
    let fetch = || {
        common::run_ok(&[
            "app",
            "fetch",
            &s.fhir_base,
            "--out",
            out_dir.to_str().unwrap(),
            "--page-size",
            "2",
            "--state",
            state.to_str().unwrap(),
            "--json",
        ])
    };
    let v: Value = serde_json::from_str(&fetch()).unwrap();
    assert_eq!(v["counts"]["Patient"], 1, "{v}");
    assert_eq!(v["counts"]["Coverage"], 1, "{v}");
    assert_eq!(v["counts"]["ExplanationOfBenefit"], 3, "{v}");
    assert_eq!(v["counts"]["Organization"], 1, "{v}");
    assert_eq!(v["counts"]["Practitioner"], 1, "{v}");
    assert_eq!(v["claim_types"]["pharmacy"], 2);
    assert_eq!(v["service_dates"]["first"], "2023-01-05");
    assert_eq!(v["service_dates"]["last"], "2024-02-01");
    assert_eq!(v["total_billed"]["USD"], 210.5);
    assert_eq!(v["total_paid"]["USD"], 160.25);
    let eobs = std::fs::read_to_string(out_dir.join("ExplanationOfBenefit.ndjson")).unwrap();
    assert!(!eobs.contains("eob-bob"));

    // Interrupted mid-way: the EOB step starts over from the first page; nothing is duplicated.
    let p = out_dir.join(".bluegate-fetch.json");
    let mut progress: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    progress["steps"]["ExplanationOfBenefit"] = json!({"done": false, "pages": 0});
    std::fs::write(&p, progress.to_string()).unwrap();
    let v: Value = serde_json::from_str(&fetch()).unwrap();
    assert_eq!(v["counts"]["ExplanationOfBenefit"], 3, "{v}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("ExplanationOfBenefit.ndjson"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    s.stop().await;
}
