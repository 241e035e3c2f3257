//! `bluegate fhir generate`: deterministic NDJSON that `bluegate fhir import` takes from a pipe.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use bluegate_store::fhir::params::{parse_param, ResourceType};

fn generate(args: &[&str]) -> Vec<u8> {
    let mut all = vec!["fhir", "generate"];
    all.extend_from_slice(args);
    let out = common::run(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("generated"));
    out.stdout
}

#[tokio::test]
async fn generate_is_deterministic_and_pipes_into_import() {
    let a = generate(&["--members", "4", "--seed", "9", "--eobs-per-member", "6"]);
    let b = generate(&[
        "--members",
        "4",
        "--seed",
        "9",
        "--eobs-per-member",
        "6",
        "--out",
        "-",
    ]);
    assert_eq!(a, b, "same seed and arguments, same bytes");
    let c = generate(&["--members", "4", "--seed", "10", "--eobs-per-member", "6"]);
    assert_ne!(a, c);
    let text = String::from_utf8(a.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["resourceType"].is_string() && v["id"].is_string());
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("{\"resourceType\":\"ExplanationOfBenefit\""))
            .count(),
        24
    );

    // To a file, then `generate --out - | import -`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.ndjson");
    generate(&[
        "--members",
        "4",
        "--seed",
        "9",
        "--eobs-per-member",
        "6",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&file).unwrap(), a);

    let port = common::free_port();
    let pki = common::make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(dir.path(), port, &pki, "");
    let mut gen = Command::new(common::bin())
        .args([
            "fhir",
            "generate",
            "--members",
            "30",
            "--seed",
            "3",
            "--out",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let import = Command::new(common::bin())
        .args(["fhir", "import", "--config", config.to_str().unwrap(), "-"])
        .stdin(gen.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(gen.wait().unwrap().success());
    let out = String::from_utf8_lossy(&import.stdout);
    assert!(
        import.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let expected = generate(&["--members", "30", "--seed", "3"])
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(
        out.contains(&format!("imported {expected} resources")),
        "{out}"
    );
    assert!(out.contains("ExplanationOfBenefit   600"), "{out}");

    // What was imported is searchable, one member's EOBs apart from another's.
    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let store = bluegate_server::serve::open_store(&cfg).await.unwrap();
    let rt = ResourceType::ExplanationOfBenefit;
    for p in ["syn-pat-0", "syn-pat-29"] {
        let mut q = bluegate_store::SearchQuery::new(rt);
        q.params.push(parse_param(rt, "patient", p).unwrap());
        q.patient_compartment = Some(vec![p.to_string()]);
        assert_eq!(store.search(&q).await.unwrap().total, Some(20), "{p}");
    }
    let mut q = bluegate_store::SearchQuery::new(rt);
    q.params
        .push(parse_param(rt, "patient", "syn-pat-0").unwrap());
    q.patient_compartment = Some(vec!["syn-pat-1".to_string()]);
    assert_eq!(store.search(&q).await.unwrap().total, Some(0));
    let cov = store
        .read(ResourceType::Coverage, "syn-cov-0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cov.version_id, 2,
        "member 0's Coverage comes in two versions"
    );
    assert!(store
        .vread(ResourceType::Coverage, "syn-cov-0", 1)
        .await
        .unwrap()
        .is_some());
}

#[test]
fn bad_arguments_fail_cleanly() {
    for args in [
        vec![
            "fhir",
            "generate",
            "--members",
            "1",
            "--id-prefix",
            "no spaces",
        ],
        vec![
            "fhir",
            "generate",
            "--members",
            "1",
            "--eobs-per-member",
            "20000",
        ],
        vec!["fhir", "generate", "--members", "x"],
        vec![
            "fhir",
            "generate",
            "--members",
            "1",
            "--out",
            "/nonexistent-dir/x.ndjson",
        ],
    ] {
        let out = common::run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A bad line in a piped import is named by its line.
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pki = common::make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(dir.path(), port, &pki, "");
    let mut child = Command::new(common::bin())
        .args(["fhir", "import", "--config", config.to_str().unwrap(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"resourceType\":\"Patient\",\"id\":\"ok\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\",\"birthDate\":\"soon\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("- line 2") && err.contains("birthdate"),
        "{err}"
    );
}
