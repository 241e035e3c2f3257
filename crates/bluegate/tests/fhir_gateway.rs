//! Gateway mode: a Bluegate in front of an upstream FHIR server. Against a second Bluegate as the upstream
//! (bearer credential, TLS with a private CA), and against a hostile upstream that returns other patients'
//! data, wrong resources, errors, slow answers and links to other hosts.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::IntoResponse;
use axum::routing;
use axum::Router;
use common::fhir_data::{fixtures, load_fixtures, token_with};
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn match_ids(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] != "outcome")
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or(""),
                        e["resource"]["id"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn get(server: &TestServer, url: &str, token: &str) -> (StatusCode, Value) {
    let url = if url.starts_with("https://") {
        url.to_string()
    } else {
        format!("{}/{url}", server.fhir_base)
    };
    let resp = server
        .client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn p1_token(server: &TestServer) -> String {
    token_with(server, |c| {
        c.scope = "launch/patient patient/*.rs".into();
        c.patient = Some("Patient1".into());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_in_front_of_another_bluegate() {
    let upstream = common::start_server("").await;
    load_fixtures(&upstream).await;
    // Bluegate's credential at the upstream: a system-level token of the upstream.
    let cred = token_with(&upstream, |c| {
        c.sub = c.client_id.clone();
        c.scope = "system/*.rs".into();
        c.patient = None;
        c.exp = c.iat + 3600;
    });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("upstream-token");
    std::fs::write(&token_file, &cred).unwrap();
    let config = format!(
        "[fhir]\nupstream = \"{}\"\nupstream_auth = \"bearer\"\nupstream_token_file = \"{}\"\nupstream_ca = \"{}\"\n",
        upstream.fhir_base,
        token_file.display(),
        upstream.pki.path("root-ca.pem").display()
    );
    let gw = common::start_server(&config).await;
    let t = p1_token(&gw);

    let (s, b) = get(&gw, "ExplanationOfBenefit?_count=100", &t).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(match_ids(&b).len(), 8, "{b}");
    for e in b["entry"].as_array().unwrap() {
        assert!(e["fullUrl"].as_str().unwrap().starts_with(&gw.fhir_base));
    }
    // Paging through the gateway: upstream links become our cursor, everything comes once.
    let (_, mut page) = get(&gw, "ExplanationOfBenefit?_count=3", &t).await;
    let mut all = match_ids(&page);
    let mut pages = 1;
    while let Some(next) = page["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
    {
        assert!(next.starts_with(&gw.fhir_base), "{next}");
        assert!(
            !next.contains(&upstream.public_url),
            "upstream host not exposed: {next}"
        );
        let (s, b) = get(&gw, &next, &t).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        all.extend(match_ids(&b));
        page = b;
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(all.len(), 8);
    assert_eq!(pages, 3);
    // Reads: own data, another patient's (404), directory data, vread.
    let (s, r) = get(&gw, "ExplanationOfBenefit/EOBInpatient2", &t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["id"], "EOBInpatient2");
    let (s, _) = get(&gw, "ExplanationOfBenefit/EOBInpatient1", &t).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&gw, "Organization/Payer1", &t).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&gw, "Patient/Patient1/_history/1", &t).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&gw, "Patient/Nobody", &t).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // _include through the gateway, filtered by the gateway's token.
    let (_, b) = get(
        &gw,
        "ExplanationOfBenefit?_id=EOBProfessional2&_include=ExplanationOfBenefit:*",
        &t,
    )
    .await;
    let ids = match_ids(&b);
    assert!(
        ids.contains("Coverage/Coverage1") && ids.contains("Patient/Patient1"),
        "{ids:?}"
    );
    // The gateway's own token checks apply: the upstream's token is not accepted at the gateway...
    let (s, _) = get(&gw, "Patient/Patient1", &cred).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // ...and without a token nothing reaches the upstream.
    let resp = gw
        .client
        .get(format!("{}/Patient/Patient1", gw.fhir_base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    gw.stop().await;
    upstream.stop().await;
}

/// What the hostile upstream saw.
#[derive(Default)]
struct Seen {
    authorization: Vec<String>,
    queries: Vec<String>,
}

type Shared = Arc<(Mutex<Seen>, Vec<Value>)>;

async fn hostile(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    {
        let mut seen = shared.0.lock().unwrap();
        if let Some(a) = headers.get("authorization") {
            seen.authorization
                .push(a.to_str().unwrap_or("").to_string());
        }
        seen.queries
            .push(format!("{path}?{}", q.clone().unwrap_or_default()));
    }
    let data = &shared.1;
    let find = |t: &str, id: &str| {
        data.iter()
            .find(|r| r["resourceType"] == t && r["id"] == id)
            .cloned()
            .unwrap()
    };
    let fhir =
        |v: Value| ([("content-type", "application/fhir+json")], v.to_string()).into_response();
    match path.as_str() {
        // Every EOB of every patient, and a next link to another host.
        "ExplanationOfBenefit" => {
            let entries: Vec<Value> = data
                .iter()
                .filter(|r| r["resourceType"] == "ExplanationOfBenefit")
                .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
                .chain(std::iter::once(json!({
                    "resource": find("Coverage", "Coverage3"), "search": {"mode": "include"}
                })))
                .collect();
            fhir(json!({
                "resourceType": "Bundle", "type": "searchset", "total": entries.len(),
                "link": [{"relation": "next", "url": "https://evil.example/fhir/ExplanationOfBenefit?page=2"}],
                "entry": entries
            }))
        }
        // Asked for Patient1's EOB, answers with Patient2's under the asked id.
        "ExplanationOfBenefit/EOBInpatient2" => {
            let mut r = find("ExplanationOfBenefit", "EOBInpatient1");
            r["id"] = json!("EOBInpatient2");
            fhir(r)
        }
        // Asked for one patient, answers with another resource.
        "Patient/Patient1" => fhir(find("Patient", "Patient2")),
        "Coverage" => (
            AxStatus::INTERNAL_SERVER_ERROR,
            "database exploded at 10.1.2.3",
        )
            .into_response(),
        "Organization" => {
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
            fhir(json!({"resourceType": "Bundle", "type": "searchset", "entry": []}))
        }
        "Practitioner" => fhir(json!({"resourceType": "Patient", "id": "not-a-bundle"})),
        _ => (AxStatus::NOT_FOUND, "").into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_never_passes_through_what_the_token_cannot_see() {
    let data: Vec<Value> = fixtures()
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let shared: Shared = Arc::new((Mutex::new(Seen::default()), data));
    let app = Router::new()
        .route("/fhir/{*path}", routing::get(hostile))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let config = format!(
        "[fhir]\nupstream = \"http://{addr}/fhir\"\nupstream_auth = \"basic\"\nupstream_username = \"bluegate\"\nupstream_password_file = \"{}\"\nupstream_timeout_secs = 1\n",
        pw.display()
    );
    let gw = common::start_server(&config).await;
    let t = p1_token(&gw);

    // Other patients' EOBs and Coverage are dropped; the foreign next link is not passed on.
    let (s, b) = get(&gw, "ExplanationOfBenefit", &t).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ids = match_ids(&b);
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(!ids.contains("Coverage/Coverage3"));
    assert!(ids.iter().all(|i| i.starts_with("ExplanationOfBenefit/")));
    assert!(
        b.get("total").is_none(),
        "an upstream total that counted dropped data is not passed on"
    );
    let text = b.to_string();
    assert!(!text.contains("evil.example"), "{text}");
    assert!(
        !text.contains("Patient/Patient2"),
        "no trace of the other patient"
    );
    // A read answered with another patient's data is a 404; with another resource, a 502.
    let (s, _) = get(&gw, "ExplanationOfBenefit/EOBInpatient2", &t).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = get(&gw, "Patient/Patient1", &t).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(body["resourceType"], "OperationOutcome");
    // Upstream failures are clean OperationOutcomes without upstream details.
    let (s, body) = get(&gw, "Coverage", &t).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(!body.to_string().contains("10.1.2.3"), "{body}");
    let (s, body) = get(&gw, "Organization", &t).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let (s, _) = get(&gw, "Practitioner", &t).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    // A crafted cursor cannot point the gateway at another host.
    use base64::Engine;
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("https://evil.example/x");
    let (s, _) = get(&gw, &format!("ExplanationOfBenefit?_cursor={evil}"), &t).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (authorization, queries) = {
        let seen = shared.0.lock().unwrap();
        (seen.authorization.clone(), seen.queries.clone())
    };
    // The upstream got Bluegate's credential, never the member's token; searches carry the restriction.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bluegate:s3cret")
    );
    assert!(!authorization.is_empty());
    assert!(
        authorization.iter().all(|a| *a == basic),
        "{:?}",
        authorization
    );
    let eob_query = queries
        .iter()
        .find(|q| q.starts_with("ExplanationOfBenefit?"))
        .unwrap();
    assert!(eob_query.contains("patient=Patient1"), "{eob_query}");
    gw.stop().await;
}
