//! The FHIR API over HTTPS against a real server and store (SQLite, and PostgreSQL when available): the
//! CARIN BB examples imported, then read/vread/search/_include/paging checked with hand-worked expectations,
//! and every enforcement rule (401/403/404, compartment, granular scopes, user and system levels, bad input).

mod common;

use std::collections::BTreeSet;

use bluegate_store::MemberRecord;
use common::fhir_data::{load_fixtures, token_with};
use common::TestServer;
use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;

const EOB: &str = "ExplanationOfBenefit";
const P1_EOBS: &[&str] = &[
    "EOBInpatient2",
    "EOBInpatientNonFinancial2",
    "EOBOutpatient2",
    "EOBOutpatientNonFinancial2",
    "EOBProfessional2",
    "EOBProfessionalNonFinancial2",
    "EOBProfessionalTransportation1",
    "EOBProfessionalTransportationNonFinancial1",
];

fn token(server: &TestServer, scope: &str, patient: Option<&str>) -> String {
    token_with(server, |c| {
        c.scope = scope.into();
        c.patient = patient.map(str::to_owned);
    })
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let url = if path.starts_with("https://") {
        path.to_string()
    } else {
        format!("{}/{path}", server.fhir_base)
    };
    let mut req = server.client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(
        ct.starts_with("application/fhir+json"),
        "{path}: content type {ct}"
    );
    (status, body)
}

fn ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] == mode)
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

fn set(rt: &str, list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|id| format!("{rt}/{id}")).collect()
}

fn outcome_text(body: &Value) -> String {
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn search_all(server: &TestServer, path: &str, token: &str) -> (BTreeSet<String>, usize) {
    let (status, mut bundle) = get(server, path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    let mut all = ids(&bundle, "match");
    let mut pages = 1;
    loop {
        let next = bundle["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        let Some(next) = next else { break };
        assert!(next.starts_with(&server.fhir_base), "{next}");
        let (status, b) = get(server, &next, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{b}");
        for id in ids(&b, "match") {
            assert!(all.insert(id), "pages do not repeat resources");
        }
        bundle = b;
        pages += 1;
        assert!(pages < 50, "paging terminates");
    }
    (all, pages)
}

async fn api_suite(server: TestServer) {
    load_fixtures(&server).await;
    let p1 = token(&server, "launch/patient patient/*.rs", Some("Patient1"));
    let p2 = token(&server, "launch/patient patient/*.rs", Some("Patient2"));

    // --- 401: no token, malformed, tampered, other audience, expired, revoked ---
    let resp = server
        .client
        .get(format!("{}/Patient/Patient1", server.fhir_base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    outcome_text(&resp.json().await.unwrap());
    let parts: Vec<&str> = p1.split('.').collect();
    let payload = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap()
    .replace("Patient1", "Patient2");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload),
        parts[2]
    );
    let other_aud = token_with(&server, |c| c.aud = "https://other.example/fhir".into());
    let expired = token_with(&server, |c| {
        c.iat -= 4000;
        c.exp = c.iat + 300;
    });
    for (what, t) in [
        ("garbage", "not-a-jwt".to_string()),
        ("tampered", tampered),
        ("other audience", other_aud),
        ("expired", expired),
    ] {
        let resp = server
            .client
            .get(format!("{}/Patient/Patient1", server.fhir_base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let h = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(h.contains("error=\"invalid_token\""), "{what}: {h}");
    }
    // A token in the query string is not a bearer token (R-1).
    let (s, _) = get(
        &server,
        &format!("Patient/Patient1?access_token={p1}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // --- read, vread, compartment ---
    let (s, pat) = get(&server, "Patient/Patient1", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pat["id"], "Patient1");
    assert_eq!(pat["meta"]["versionId"], "1");
    let (s, body) = get(&server, "Patient/Patient2", Some(&p1)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another patient is not found");
    outcome_text(&body);
    let (s, _) = get(&server, "Patient/NoSuchPatient", Some(&p1)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&server, "Patient/Patient1/_history/1", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&server, "Patient/Patient1/_history/2", Some(&p1)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&server, "Patient/Patient2/_history/1", Some(&p1)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "vread of another patient");
    for (path, ok_for_p1) in [
        ("ExplanationOfBenefit/EOBInpatient2", true),
        ("ExplanationOfBenefit/EOBInpatient1", false),
        ("Coverage/Coverage2", true),
        ("Coverage/Coverage3", false),
        ("RelatedPerson/RelatedPerson1", true),
    ] {
        let (s, _) = get(&server, path, Some(&p1)).await;
        let (s2, _) = get(&server, path, Some(&p2)).await;
        assert_eq!(s == StatusCode::OK, ok_for_p1, "{path} for Patient1");
        assert_eq!(s2 == StatusCode::OK, !ok_for_p1, "{path} for Patient2");
    }
    // Directory data is open to any token with the scope (decision 2).
    for path in ["Organization/Payer1", "Practitioner/Practitioner4"] {
        let (s, _) = get(&server, path, Some(&p1)).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    // The resource is served byte for byte as stored, with ETag and Last-Modified.
    let resp = server
        .client
        .get(format!(
            "{}/ExplanationOfBenefit/EOBInpatient2",
            server.fhir_base
        ))
        .bearer_auth(&p1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["etag"], "W/\"1\"");
    assert!(resp.headers().contains_key("last-modified"));
    assert_eq!(resp.headers()["cache-control"], "no-store, private");
    let text = resp.text().await.unwrap();
    let stored = server
        .running
        .state
        .store
        .read(
            bluegate_store::fhir::ResourceType::ExplanationOfBenefit,
            "EOBInpatient2",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, stored.json);

    // --- search: no patient argument is restricted to the patient in context (R-7) ---
    let (s, b) = get(&server, EOB, Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "searchset");
    assert_eq!(ids(&b, "match"), set(EOB, P1_EOBS));
    assert_eq!(b["total"], 8);
    let (_, b) = get(&server, "ExplanationOfBenefit?patient=Patient1", Some(&p1)).await;
    assert_eq!(ids(&b, "match"), set(EOB, P1_EOBS));
    let (s, b) = get(&server, "ExplanationOfBenefit?patient=Patient2", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        ids(&b, "match").is_empty(),
        "another patient's search is empty"
    );
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?_id=EOBInpatient1,EOBInpatient2",
        Some(&p1),
    )
    .await;
    assert_eq!(ids(&b, "match"), set(EOB, &["EOBInpatient2"]));
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?type=http://terminology.hl7.org/CodeSystem/claim-type%7Cprofessional",
        Some(&p1),
    )
    .await;
    assert_eq!(
        ids(&b, "match"),
        set(
            EOB,
            &[
                "EOBProfessional2",
                "EOBProfessionalNonFinancial2",
                "EOBProfessionalTransportation1",
                "EOBProfessionalTransportationNonFinancial1"
            ]
        )
    );
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?billable-period-start=ge2020-01-01&billable-period-start=lt2022-01-01",
        Some(&p1),
    )
    .await;
    assert_eq!(
        ids(&b, "match"),
        set(
            EOB,
            &[
                "EOBOutpatient2",
                "EOBOutpatientNonFinancial2",
                "EOBProfessional2",
                "EOBProfessionalNonFinancial2"
            ]
        )
    );
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?identifier=https://www.upmchealthplan.com/fhir/EOBIdentifier%7CInpatientEOBExample1&_lastUpdated=gt2021",
        Some(&p1),
    )
    .await;
    assert_eq!(
        ids(&b, "match"),
        set(EOB, &["EOBInpatient2", "EOBInpatientNonFinancial2"])
    );
    let (_, b) = get(&server, "Coverage", Some(&p1)).await;
    assert_eq!(
        ids(&b, "match"),
        set("Coverage", &["Coverage1", "Coverage2"])
    );
    let (_, b) = get(&server, "Patient", Some(&p1)).await;
    assert_eq!(ids(&b, "match"), set("Patient", &["Patient1"]));
    let (_, b) = get(&server, "Organization?name=organization%20payer", Some(&p1)).await;
    assert!(ids(&b, "match").contains("Organization/Payer1"), "{b}");

    // POST _search gives the same result as GET.
    let resp = server
        .client
        .post(format!("{}/ExplanationOfBenefit/_search", server.fhir_base))
        .bearer_auth(&p1)
        .form(&[("type", "professional"), ("_count", "100")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(ids(&b, "match").len(), 4);

    // --- _include, filtered by the same rules (R-9, R-16, R-17) ---
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?_id=EOBProfessional2&_include=ExplanationOfBenefit:*",
        Some(&p1),
    )
    .await;
    assert_eq!(ids(&b, "match"), set(EOB, &["EOBProfessional2"]));
    let inc = ids(&b, "include");
    for want in [
        "Patient/Patient1",
        "Organization/ProviderOrganization1",
        "Practitioner/Practitioner1",
        "Coverage/Coverage1",
        "Organization/Payer2",
    ] {
        assert!(inc.contains(want), "{want} included: {inc:?}");
    }
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?_id=EOBProfessional2&_include=ExplanationOfBenefit:coverage&_include:iterate=Coverage:payor",
        Some(&p1),
    )
    .await;
    assert_eq!(
        ids(&b, "include"),
        ["Coverage/Coverage1", "Organization/Payer2"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    // A token without Patient/Coverage/... scopes gets the EOB but none of the included resources.
    let eob_only = token(&server, "patient/ExplanationOfBenefit.rs", Some("Patient1"));
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?_id=EOBProfessional2&_include=ExplanationOfBenefit:*",
        Some(&eob_only),
    )
    .await;
    assert_eq!(ids(&b, "match").len(), 1);
    assert!(ids(&b, "include").is_empty(), "{b}");
    // EOBInpatient1 (Patient2's) refers to Coverage1 (Patient1's): Patient2 must not receive it.
    let (_, b) = get(
        &server,
        "ExplanationOfBenefit?_id=EOBInpatient1&_include=ExplanationOfBenefit:coverage",
        Some(&p2),
    )
    .await;
    assert_eq!(ids(&b, "match"), set(EOB, &["EOBInpatient1"]));
    assert!(
        !ids(&b, "include").contains("Coverage/Coverage1"),
        "another patient's Coverage is not included: {b}"
    );

    // --- paging: next links stay under the base, keep the restriction, and cover everything once ---
    let (all, pages) = search_all(&server, "ExplanationOfBenefit?_count=3", &p1).await;
    assert_eq!(all, set(EOB, P1_EOBS));
    assert_eq!(pages, 3);
    // A next link replayed with another patient's token yields only that patient's data.
    let (_, first) = get(&server, "ExplanationOfBenefit?_count=3", Some(&p1)).await;
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, b) = get(&server, &next, Some(&p2)).await;
    for id in ids(&b, "match") {
        assert!(
            !set(EOB, P1_EOBS).contains(&id),
            "{id} leaked through a next link"
        );
    }
    let (s, b) = get(&server, "ExplanationOfBenefit?_count=0", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 8);
    assert!(ids(&b, "match").is_empty());

    // --- scopes: 403 with the needed scope; v1 scopes; granular scopes on read and search ---
    let patient_only = token(&server, "patient/Patient.rs", Some("Patient1"));
    let resp = server
        .client
        .get(format!("{}/ExplanationOfBenefit", server.fhir_base))
        .bearer_auth(&patient_only)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let h = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.contains("insufficient_scope"), "{h}");
    let read_only = token(&server, "patient/ExplanationOfBenefit.r", Some("Patient1"));
    let (s, _) = get(&server, EOB, Some(&read_only)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "read scope does not allow search");
    let (s, _) = get(
        &server,
        "ExplanationOfBenefit/EOBInpatient2",
        Some(&read_only),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v1 = token(&server, "patient/*.read", Some("Patient1"));
    let (_, b) = get(&server, EOB, Some(&v1)).await;
    assert_eq!(ids(&b, "match"), set(EOB, P1_EOBS));
    let granular = token(
        &server,
        "patient/ExplanationOfBenefit.rs?type=http://terminology.hl7.org/CodeSystem/claim-type|professional",
        Some("Patient1"),
    );
    let (_, b) = get(&server, "ExplanationOfBenefit?_count=100", Some(&granular)).await;
    assert_eq!(ids(&b, "match").len(), 4, "{b}");
    let (s, _) = get(
        &server,
        "ExplanationOfBenefit/EOBProfessional2",
        Some(&granular),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(
        &server,
        "ExplanationOfBenefit/EOBInpatient2",
        Some(&granular),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "outside the granular scope");

    // --- user level: what the member may see; system level: everything ---
    server
        .running
        .state
        .store
        .insert_member(&MemberRecord {
            id: "parent-1".into(),
            username: "parent".into(),
            password_hash: "x".into(),
            patients: vec!["Patient1".into(), "Patient2".into()],
            fhir_user: None,
            disabled: false,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let user = token_with(&server, |c| {
        c.sub = "parent-1".into();
        c.scope = "user/ExplanationOfBenefit.rs".into();
        c.patient = Some("Patient1".into());
    });
    let (all, _) = search_all(&server, "ExplanationOfBenefit?_count=100", &user).await;
    assert_eq!(all.len(), 20);
    let stranger = token_with(&server, |c| {
        c.sub = "nobody".into();
        c.scope = "user/ExplanationOfBenefit.rs".into();
    });
    let (_, b) = get(&server, EOB, Some(&stranger)).await;
    assert!(ids(&b, "match").is_empty());
    let system = token_with(&server, |c| {
        c.sub = c.client_id.clone();
        c.scope = "system/*.rs".into();
        c.patient = None;
    });
    let (all, _) = search_all(&server, "ExplanationOfBenefit?_count=7", &system).await;
    assert_eq!(all.len(), 20);

    // --- bad input: clear 4xx OperationOutcomes ---
    let long_id = "a".repeat(5000);
    for (path, want) in [
        (
            "ExplanationOfBenefit?service-date=garbage",
            StatusCode::BAD_REQUEST,
        ),
        (
            "ExplanationOfBenefit?service-date=xx2020-01-01",
            StatusCode::BAD_REQUEST,
        ),
        ("ExplanationOfBenefit?_count=-1", StatusCode::BAD_REQUEST),
        (
            &format!("ExplanationOfBenefit?_id={long_id}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            &format!("ExplanationOfBenefit/{long_id}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "ExplanationOfBenefit?_include=Coverage:payor",
            StatusCode::BAD_REQUEST,
        ),
        (
            "ExplanationOfBenefit?_cursor=nonsense",
            StatusCode::BAD_REQUEST,
        ),
        ("Claim?patient=Patient1", StatusCode::NOT_FOUND),
        (
            "ExplanationOfBenefit?_format=xml",
            StatusCode::NOT_ACCEPTABLE,
        ),
    ] {
        let (s, body) = get(&server, path, Some(&p1)).await;
        assert_eq!(s, want, "{}: {body}", &path[..path.len().min(60)]);
        assert!(!outcome_text(&body).is_empty());
    }
    let (s, b) = get(&server, "ExplanationOfBenefit?_count=1000000000", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&b, "match").len(), 8);
    // Unknown parameters: ignored and reported (lenient), or refused (strict).
    let (s, b) = get(&server, "ExplanationOfBenefit?foo=bar", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&b, "match").len(), 8);
    assert!(b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["search"]["mode"] == "outcome"));
    let resp = server
        .client
        .get(format!("{}/ExplanationOfBenefit?foo=bar", server.fhir_base))
        .bearer_auth(&p1)
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Writes are not offered: 405 before any token check.
    let resp = server
        .client
        .post(format!("{}/Patient", server.fhir_base))
        .header("content-type", "application/fhir+json")
        .body("{\"resourceType\":\"Patient\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = server
        .client
        .delete(format!("{}/Patient/Patient1", server.fhir_base))
        .bearer_auth(&p1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = get(&server, "Patient/Patient1", Some(&p1)).await;
    assert_eq!(s, StatusCode::OK, "nothing was deleted");

    // --- CORS for browser apps (R-11) ---
    let resp = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/ExplanationOfBenefit", server.fhir_base),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = server
        .client
        .get(format!("{}/Patient/Patient1", server.fhir_base))
        .header("origin", "https://app.example")
        .bearer_auth(&p1)
        .send()
        .await
        .unwrap();
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("www-authenticate") && exposed.contains("etag"),
        "{exposed}"
    );

    // --- revocation made elsewhere (another node) is honoured within seconds ---
    let jti = "revoked-elsewhere";
    let victim = token_with(&server, |c| c.jti = jti.into());
    let (s, _) = get(&server, "Patient/Patient1", Some(&victim)).await;
    assert_eq!(s, StatusCode::OK);
    let now = OffsetDateTime::now_utc();
    server
        .running
        .state
        .store
        .revoke_access_token(jti, now + time::Duration::minutes(5), now)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (s, _) = get(&server, "Patient/Patient1", Some(&victim)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // --- every access is audited, with client and patient ---
    server.running.state.audit.flush().await;
    let events = server
        .running
        .state
        .store
        .list_audit(1000, Some("fhir."))
        .await
        .unwrap();
    let ok_search = events
        .iter()
        .find(|e| e.event.event == "fhir.search" && e.event.outcome == "success")
        .expect("search audited");
    assert_eq!(ok_search.event.client_id.as_deref(), Some("client-1"));
    assert!(ok_search.event.patient.is_some());
    assert!(events
        .iter()
        .any(|e| e.event.event == "fhir.read" && e.event.outcome == "failure"));
    let all_text = serde_json::to_string(&events).unwrap();
    assert!(!all_text.contains(&p1), "no token in the audit trail");

    // --- the CapabilityStatement lists what works ---
    let (s, cs) = get(&server, "metadata", None).await;
    assert_eq!(s, StatusCode::OK);
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 8);
    let eob = resources.iter().find(|r| r["type"] == EOB).unwrap();
    assert_eq!(eob["searchParam"].as_array().unwrap().len(), 13);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_api_on_sqlite() {
    api_suite(common::start_server("").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_api_on_postgres() {
    let Some(db) = common::postgres_config().await else {
        return;
    };
    api_suite(common::start_server(&db).await).await;
}
