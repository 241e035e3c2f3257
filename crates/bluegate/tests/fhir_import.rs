//! `bluegate fhir import`: the CARIN BB IG examples, a Bundle and NDJSON; a bad resource is named and its
//! batch is not imported.

mod common;

use std::path::PathBuf;

use bluegate_store::fhir::params::ResourceType;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/carin-bb-2.0.0")
}

#[tokio::test]
async fn imports_ig_examples_bundles_and_ndjson() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pki = common::make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(dir.path(), port, &pki, "");
    let c = config.to_str().unwrap().to_string();
    let mut files: Vec<String> = Vec::new();
    for sub in ["examples", "examples-nonfinancial"] {
        for e in std::fs::read_dir(fx.join(sub)).unwrap() {
            files.push(e.unwrap().path().to_str().unwrap().to_string());
        }
    }
    files.sort();
    let eobs = files
        .iter()
        .filter(|f| f.contains("ExplanationOfBenefit-"))
        .count();
    let mut args = vec!["fhir", "import", "--config", c.as_str()];
    args.extend(files.iter().map(String::as_str));
    let out = common::run_ok(&args);
    assert!(
        out.contains(&format!("imported {} resources", files.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("ExplanationOfBenefit   {eobs}")),
        "{out}"
    );

    // A Bundle of two resources, and an NDJSON file whose second line is not a resource.
    let patient = std::fs::read_to_string(fx.join("examples/Patient-Patient1.json")).unwrap();
    let org = std::fs::read_to_string(fx.join("examples/Organization-Payer1.json")).unwrap();
    let bundle = format!("{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{{\"resource\":{patient}}},{{\"resource\":{org}}}]}}");
    let bundle_path = dir.path().join("b.json");
    std::fs::write(&bundle_path, bundle).unwrap();
    let out = common::run_ok(&[
        "fhir",
        "import",
        "--config",
        &c,
        bundle_path.to_str().unwrap(),
    ]);
    assert!(out.contains("imported 2 resources"), "{out}");
    let one_line = |s: &str| {
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(s).unwrap()).unwrap()
    };
    let good = one_line(&patient).replace("\"id\":\"Patient1\"", "\"id\":\"ndjson-good\"");
    let nd = dir.path().join("x.ndjson");
    std::fs::write(&nd, format!("{good}\n{{\"resourceType\":\"Patient\"}}\n")).unwrap();
    let out = common::run(&["fhir", "import", "--config", &c, nd.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("no id"), "{err}");
    // Nothing of that batch was stored.
    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let store = bluegate_server::serve::open_store(&cfg).await.unwrap();
    assert!(store
        .read(ResourceType::Patient, "ndjson-good")
        .await
        .unwrap()
        .is_none());
    // And the fixtures were stored as received (only meta differs).
    let stored = store
        .read(ResourceType::Patient, "Patient1")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.json.contains("\"id\""), "{}", stored.json);
    assert_eq!(
        stored.version_id, 2,
        "the Bundle import made a second version"
    );
}

/// A first import into an empty store: rows go in without the search indexes, which are built at the
/// end; the store learns a compression dictionary for each type it saw enough of; everything is
/// searchable afterwards. A store whose first import was interrupted (indexes missing) is mended when
/// the server starts.
#[tokio::test]
async fn first_import_builds_indexes_and_learns_dictionaries() {
    use bluegate_store::fhir::{parse_param, BodyEncoding, SearchQuery};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pki = common::make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(dir.path(), port, &pki, "");
    let c = config.to_str().unwrap().to_string();
    let data = dir.path().join("syn.ndjson");
    common::run_ok(&[
        "fhir",
        "generate",
        "--members",
        "40",
        "--id-prefix",
        "imp",
        "--out",
        data.to_str().unwrap(),
    ]);
    let out = common::run_ok(&["fhir", "import", "--config", &c, data.to_str().unwrap()]);
    assert!(out.contains("ExplanationOfBenefit   800"), "{out}");

    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let store = bluegate_server::serve::open_store(&cfg).await.unwrap();
    assert_eq!(
        store.build_search_indexes().await.unwrap(),
        0,
        "built by the import"
    );
    let BodyEncoding::Zstd(dicts) = store.body_encoding() else {
        panic!("SQLite compresses");
    };
    assert!(dicts.get(ResourceType::ExplanationOfBenefit).is_some());
    assert!(
        dicts.get(ResourceType::Patient).is_none(),
        "40 patients teach too little"
    );
    let mut q = SearchQuery::new(ResourceType::ExplanationOfBenefit);
    q.params
        .push(parse_param(ResourceType::ExplanationOfBenefit, "patient", "imp-pat-3").unwrap());
    q.with_total = true;
    assert_eq!(store.search(&q).await.unwrap().total, Some(20));

    // Interrupted: the indexes are missing until the server starts.
    let empty = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pki = common::make_pki(empty.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(empty.path(), port, &pki, "");
    let cfg = bluegate_server::config::load_file(&config, &Default::default()).unwrap();
    let store = bluegate_server::serve::open_store(&cfg).await.unwrap();
    assert!(store.defer_search_indexes().await.unwrap());
    let running = bluegate_server::serve::start(cfg).await.unwrap();
    assert_eq!(
        store.build_search_indexes().await.unwrap(),
        0,
        "built at start"
    );
    running.shutdown(std::time::Duration::from_secs(2)).await;
}
