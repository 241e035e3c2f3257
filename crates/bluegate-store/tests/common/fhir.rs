//! The FHIR part of the conformance suite: imports the CARIN BB 2.0.0 examples (financial and
//! non-financial) and checks every search parameter against ids worked out by hand from the fixtures.
//! Each resource is stored with `now` = its fixture `meta.lastUpdated`, so `_lastUpdated` and the sort
//! order follow the fixtures.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bluegate_store::fhir::params::{parse_include, parse_param, ParamError, ResourceType};
use bluegate_store::*;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use ResourceType::{
    Coverage, ExplanationOfBenefit as Eob, Organization, Patient, Practitioner, RelatedPerson,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/carin-bb-2.0.0")
}

/// (file name, text) of every example (the fixtures are part of the repository, so they are always there;
/// `Option` keeps the callers' early returns simple).
pub fn fixtures() -> Option<Vec<(String, String)>> {
    let dir = fixture_dir();
    let mut out = Vec::new();
    for sub in ["examples", "examples-nonfinancial"] {
        let entries = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("CARIN BB examples at {}: {e}", dir.display()));
        for e in entries {
            let path = e.expect("dir entry").path();
            if path.extension().is_some_and(|x| x == "json") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read_to_string(&path).expect("read fixture")));
            }
        }
    }
    out.sort();
    assert_eq!(
        out.len(),
        42,
        "CARIN BB 2.0.0 examples + non-financial EOBs"
    );
    Some(out)
}

fn fixture_time(text: &str) -> OffsetDateTime {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let lu = v["meta"]["lastUpdated"]
        .as_str()
        .expect("fixture lastUpdated");
    let t = OffsetDateTime::parse(lu, &Rfc3339).expect("rfc3339");
    // The store keeps milliseconds.
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap()
}

/// Imports every fixture; `None` if they are absent.
async fn load(store: &dyn Store) -> Option<Vec<(String, String)>> {
    let files = fixtures()?;
    for (name, text) in &files {
        let r = store
            .put_resource(text, fixture_time(text))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.version_id, 1, "{name}");
    }
    Some(files)
}

fn ids(page: &SearchPage) -> BTreeSet<String> {
    page.resources.iter().map(|r| r.id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs a search with `params` (name, value) pairs (ANDed) and returns the ids (all in one page).
async fn find(store: &dyn Store, rt: ResourceType, params: &[(&str, &str)]) -> BTreeSet<String> {
    find_in(store, rt, params, None).await
}

async fn find_in(
    store: &dyn Store,
    rt: ResourceType,
    params: &[(&str, &str)],
    compartment: Option<&[&str]>,
) -> BTreeSet<String> {
    let mut q = SearchQuery::new(rt);
    q.count = 1000;
    for (n, v) in params {
        q.params
            .push(parse_param(rt, n, v).unwrap_or_else(|e| panic!("{n}={v}: {e}")));
    }
    q.patient_compartment = compartment.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
    let page = store.search(&q).await.expect("search");
    assert!(page.next_cursor.is_none());
    assert_eq!(page.total, Some(page.resources.len() as u64), "{params:?}");
    assert!(page.resources.iter().all(|r| r.resource_type == rt));
    ids(&page)
}

/// Patient1's EOBs (financial and non-financial).
const P1_EOBS: &[&str] = &[
    "EOBInpatient2",
    "EOBOutpatient2",
    "EOBProfessional2",
    "EOBProfessionalTransportation1",
    "EOBInpatientNonFinancial2",
    "EOBOutpatientNonFinancial2",
    "EOBProfessionalNonFinancial2",
    "EOBProfessionalTransportationNonFinancial1",
];
/// Patient2's EOBs.
const P2_EOBS: &[&str] = &[
    "EOBInpatient1",
    "EOBOutpatient1",
    "EOBPharmacy1",
    "EOBProfessional1",
    "EOBOral1",
    "EOBOral2",
    "EOBInpatientNonFinancial1",
    "EOBOutpatientNonFinancial1",
    "EOBPharmacyNonFinancial1",
    "EOBProfessionalNonFinancial1",
    "EOBOralNonFinancial1",
    "EOBOralNonFinancial2",
];

/// `[A, A-nonfinancial...]` for the EOB examples named (each has one non-financial twin).
fn with_nf(names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in names {
        out.insert((*n).to_owned());
        let (base, num) = n.split_at(n.len() - 1);
        out.insert(format!("{base}NonFinancial{num}"));
    }
    out
}

pub async fn fhir_import_read_and_exact_text(store: &dyn Store) {
    let Some(files) = load(store).await else {
        return;
    };
    for (name, text) in &files {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let rt = ResourceType::parse(v["resourceType"].as_str().unwrap()).unwrap();
        let id = v["id"].as_str().unwrap();
        let r = store.read(rt, id).await.unwrap().expect(name);
        assert_eq!((r.resource_type, r.id.as_str(), r.version_id), (rt, id, 1));
        assert_eq!(r.last_updated, fixture_time(text), "{name}");
        // Only `meta` changed, and in place: every other byte is as received.
        let meta = |t: &str| -> String {
            let m: std::collections::HashMap<String, Box<RawValue>> =
                serde_json::from_str(t).unwrap();
            m["meta"].get().to_owned()
        };
        let (old_meta, new_meta) = (meta(text), meta(&r.json));
        assert_eq!(r.json, text.replacen(&old_meta, &new_meta, 1), "{name}");
        let stored: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(stored["meta"]["versionId"], "1");
        assert_eq!(stored["meta"]["profile"], v["meta"]["profile"], "{name}");
        let lu = stored["meta"]["lastUpdated"].as_str().unwrap();
        assert_eq!(OffsetDateTime::parse(lu, &Rfc3339).unwrap(), r.last_updated);
        assert_eq!(store.vread(rt, id, 1).await.unwrap(), Some(r));
    }
    assert_eq!(store.read(Patient, "nope").await.unwrap(), None);
    assert_eq!(store.read(Coverage, "Patient1").await.unwrap(), None);
    assert_eq!(store.vread(Patient, "Patient1", 2).await.unwrap(), None);

    // Decimals and odd number forms keep their text; whitespace too.
    let text = "{ \"resourceType\": \"Patient\", \"id\": \"dec\",\n \"extension\": [{\"url\": \"http://x\", \"valueDecimal\": 12.50}, {\"url\": \"http://y\", \"valueDecimal\": 1e2}, {\"url\": \"http://z\", \"valueDecimal\": 0.1000000000000000055511151231257827}] }";
    let r = store.put_resource(text, crate::common::t(0)).await.unwrap();
    assert_eq!(
        r.json,
        text.replacen(
            "\"id\": \"dec\"",
            "\"id\": \"dec\",\"meta\":{\"versionId\":\"1\",\"lastUpdated\":\"2023-11-14T22:13:20.000Z\"}",
            1
        )
    );
    assert!(
        r.json.contains("12.50")
            && r.json.contains("1e2")
            && r.json.contains("0.1000000000000000055511151231257827")
    );
    assert_eq!(
        store.read(Patient, "dec").await.unwrap().unwrap().json,
        r.json
    );
}

pub async fn fhir_rejects_invalid_resources(store: &dyn Store) {
    let now = crate::common::t(0);
    for bad in [
        "not json",
        "[1]",
        r#"{"resourceType":"Claim","id":"c1"}"#,
        r#"{"resourceType":"Patient"}"#,
        r#"{"resourceType":"Patient","id":"has space"}"#,
        r#"{"resourceType":"ExplanationOfBenefit","id":"e","billablePeriod":{"start":"garbage"}}"#,
        r#"{"resourceType":"ExplanationOfBenefit","id":"e","patient":"Patient/1"}"#,
    ] {
        let r = store.put_resource(bad, now).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{bad}: {r:?}");
    }
    let r = store
        .put_resource(r#"{"resourceType":"Claim","id":"c1"}"#, now)
        .await;
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("unsupported resource type") && msg.contains("ExplanationOfBenefit"),
        "{msg}"
    );

    // A batch is all or nothing.
    let good = r#"{"resourceType":"Organization","id":"o1","name":"A"}"#.to_owned();
    let r = store
        .put_batch(
            &[
                good.clone(),
                r#"{"resourceType":"Organization"}"#.to_owned(),
            ],
            now,
        )
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(m)) if m.contains("#1")));
    assert_eq!(store.read(Organization, "o1").await.unwrap(), None);

    // Malformed cursors and search values.
    let mut q = SearchQuery::new(Eob);
    q.cursor = Some("garbage".into());
    assert!(matches!(
        store.search(&q).await,
        Err(StoreError::Invalid(_))
    ));
    q.cursor = Some("12:not an id".into());
    assert!(matches!(
        store.search(&q).await,
        Err(StoreError::Invalid(_))
    ));
    for (n, v) in [
        ("service-date", "garbage"),
        ("service-date", "xx2020"),
        ("_lastUpdated", "2020-13"),
        ("_id", &*"a".repeat(5000)),
        ("patient", "Organization/Payer1"),
        ("type", "a|b|c"),
    ] {
        assert!(
            matches!(parse_param(Eob, n, v), Err(ParamError::InvalidValue { .. })),
            "{n}={v}"
        );
    }
    assert!(matches!(
        parse_param(Eob, "bogus", "1"),
        Err(ParamError::UnknownParameter { .. })
    ));
}

pub async fn fhir_versions_and_batches(store: &dyn Store) {
    let t = crate::common::t;
    let v1 = r#"{"resourceType":"Patient","id":"p9","name":[{"family":"Old"}],"gender":"female"}"#;
    let v2 = r#"{"resourceType":"Patient","id":"p9","meta":{"versionId":"77","source":"x"},"name":[{"family":"New"}]}"#;
    let r1 = store.put_resource(v1, t(0)).await.unwrap();
    let r2 = store.put_resource(v2, t(10)).await.unwrap();
    assert_eq!((r1.version_id, r2.version_id), (1, 2));
    assert_eq!(
        r2.json,
        r#"{"resourceType":"Patient","id":"p9","meta":{"versionId":"2","lastUpdated":"2023-11-14T22:13:30.000Z","source":"x"},"name":[{"family":"New"}]}"#
    );
    assert_eq!(store.read(Patient, "p9").await.unwrap(), Some(r2.clone()));
    assert_eq!(
        store.vread(Patient, "p9", 1).await.unwrap(),
        Some(r1.clone())
    );
    assert_eq!(
        store.vread(Patient, "p9", 2).await.unwrap(),
        Some(r2.clone())
    );
    assert_eq!(store.vread(Patient, "p9", 3).await.unwrap(), None);
    // The index follows the current version only.
    assert!(find(store, Patient, &[("family", "old")]).await.is_empty());
    assert!(find(store, Patient, &[("gender", "female")])
        .await
        .is_empty());
    assert_eq!(
        find(store, Patient, &[("family", "new")]).await,
        set(&["p9"])
    );
    assert_eq!(
        store.compartment_patients(Patient, "p9").await.unwrap(),
        vec!["p9"]
    );

    // A batch: new and existing resources, the same one twice (two versions), input order kept.
    let org = |id: &str, name: &str| {
        format!(r#"{{"resourceType":"Organization","id":"{id}","name":"{name}"}}"#)
    };
    let batch = vec![
        org("a", "One"),
        v1.to_owned(),
        org("b", "Two"),
        org("a", "Three"),
    ];
    let out = store.put_batch(&batch, t(20)).await.unwrap();
    let got: Vec<(&str, i64)> = out.iter().map(|r| (r.id.as_str(), r.version_id)).collect();
    assert_eq!(got, vec![("a", 1), ("p9", 3), ("b", 1), ("a", 2)]);
    assert_eq!(
        store.vread(Organization, "a", 1).await.unwrap(),
        Some(out[0].clone())
    );
    assert_eq!(
        store.read(Organization, "a").await.unwrap(),
        Some(out[3].clone())
    );
    assert_eq!(
        find(store, Organization, &[("name", "three")]).await,
        set(&["a"])
    );
    assert!(find(store, Organization, &[("name", "one")])
        .await
        .is_empty());
    assert_eq!(
        find(store, Patient, &[("family", "old")]).await,
        set(&["p9"])
    );
    assert_eq!(store.vread(Patient, "p9", 2).await.unwrap(), Some(r2));

    // A large batch crosses the statement chunk size.
    let many: Vec<String> = (0..450).map(|i| org(&format!("bulk{i}"), "Bulk")).collect();
    assert_eq!(store.put_batch(&many, t(30)).await.unwrap().len(), 450);
    assert_eq!(
        find(store, Organization, &[("name", "bulk")]).await.len(),
        450
    );
    assert!(store.put_batch(&[], t(30)).await.unwrap().is_empty());
}

/// A first bulk load: the search indexes are dropped only while the store is empty, searches give the
/// same answers without them (slowly) and after they are built, and building is idempotent.
pub async fn fhir_deferred_search_indexes(store: &dyn Store) {
    assert!(store.defer_search_indexes().await.expect("defer"));
    assert!(store.defer_search_indexes().await.expect("defer again"));
    if load(store).await.is_none() {
        return;
    }
    let by_patient = find(store, Eob, &[("patient", "Patient1")]).await;
    assert_eq!(by_patient, set(P1_EOBS));
    let by_name = find(store, Patient, &[("family", "Exam")]).await;
    assert!(!by_name.is_empty());
    let by_date = find(store, Patient, &[("birthdate", "ge1986-01-01")]).await;
    assert!(
        !store.defer_search_indexes().await.expect("defer"),
        "not empty"
    );
    assert_eq!(store.build_search_indexes().await.expect("build"), 5);
    assert_eq!(store.build_search_indexes().await.expect("build again"), 0);
    assert_eq!(
        find(store, Eob, &[("patient", "Patient1")]).await,
        by_patient
    );
    assert_eq!(find(store, Patient, &[("family", "Exam")]).await, by_name);
    assert_eq!(
        find(store, Patient, &[("birthdate", "ge1986-01-01")]).await,
        by_date
    );
    // Non-empty: nothing is dropped.
    assert!(!store.defer_search_indexes().await.expect("defer"));
    assert_eq!(store.build_search_indexes().await.expect("build"), 0);
}

pub async fn fhir_eob_search(store: &dyn Store) {
    if load(store).await.is_none() {
        return;
    }
    let f = |p: &'static [(&'static str, &'static str)]| find(store, Eob, p);
    let all: BTreeSet<String> = P1_EOBS
        .iter()
        .chain(P2_EOBS)
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(f(&[]).await, all);
    // _id
    assert_eq!(
        f(&[("_id", "EOBOral1,EOBOral2,nope")]).await,
        set(&["EOBOral1", "EOBOral2"])
    );
    // patient: Type/id, bare id, absolute URL
    assert_eq!(f(&[("patient", "Patient1")]).await, set(P1_EOBS));
    assert_eq!(f(&[("patient", "Patient/Patient2")]).await, set(P2_EOBS));
    assert_eq!(
        f(&[("patient", "https://other.example/fhir/Patient/Patient2")]).await,
        set(P2_EOBS)
    );
    assert_eq!(f(&[("patient", "Patient1,Patient2")]).await, all);
    assert!(f(&[("patient", "Patient3")]).await.is_empty());
    // type: code, system|code, |code, system|
    assert_eq!(f(&[("type", "pharmacy")]).await, with_nf(&["EOBPharmacy1"]));
    assert_eq!(
        f(&[(
            "type",
            "http://terminology.hl7.org/CodeSystem/claim-type|oral"
        )])
        .await,
        with_nf(&["EOBOral1", "EOBOral2"])
    );
    assert!(f(&[("type", "|oral")]).await.is_empty());
    assert!(f(&[("type", "http://example.com/other|oral")])
        .await
        .is_empty());
    assert_eq!(
        f(&[("type", "http://terminology.hl7.org/CodeSystem/claim-type|")]).await,
        all
    );
    assert_eq!(
        f(&[("type", "pharmacy,oral")]).await,
        with_nf(&["EOBPharmacy1", "EOBOral1", "EOBOral2"])
    );
    assert_eq!(
        f(&[("type", "professional")]).await,
        with_nf(&[
            "EOBProfessional1",
            "EOBProfessional2",
            "EOBProfessionalTransportation1"
        ])
    );
    // AND of parameters
    assert_eq!(
        f(&[("patient", "Patient1"), ("type", "professional")]).await,
        with_nf(&["EOBProfessional2", "EOBProfessionalTransportation1"])
    );
    assert!(f(&[("patient", "Patient1"), ("type", "oral")])
        .await
        .is_empty());
    // identifier
    assert_eq!(
        f(&[(
            "identifier",
            "https://www.upmchealthplan.com/fhir/EOBIdentifier|InpatientEOBExample1"
        )])
        .await,
        with_nf(&["EOBInpatient2"])
    );
    assert_eq!(
        f(&[("identifier", "ProfessionalEOBExample1")]).await,
        with_nf(&["EOBProfessional2"])
    );
    assert_eq!(
        f(&[("identifier", "https://www.xxxplan.com/fhir/EOBIdentifier|")]).await,
        set(P2_EOBS)
    );
    assert!(f(&[("identifier", "|210300002")]).await.is_empty());
    assert!(f(&[(
        "identifier",
        "https://www.upmchealthplan.com/fhir/EOBIdentifier|210300002"
    )])
    .await
    .is_empty());

    // service-date: billablePeriod | item.serviced (Date or Period). EOBInpatient2's item periods have
    // no end (open, so they reach any later date).
    assert_eq!(
        f(&[("service-date", "2019-07-02")]).await,
        with_nf(&["EOBPharmacy1", "EOBProfessional1"])
    );
    assert_eq!(
        f(&[("service-date", "eq2019")]).await,
        with_nf(&[
            "EOBInpatient1",
            "EOBOutpatient1",
            "EOBPharmacy1",
            "EOBProfessional1"
        ])
    );
    assert_eq!(
        f(&[("service-date", "ne2019")]).await,
        with_nf(&[
            "EOBInpatient2",
            "EOBOutpatient2",
            "EOBProfessional2",
            "EOBOral1",
            "EOBOral2",
            "EOBProfessionalTransportation1"
        ])
    );
    assert_eq!(
        f(&[("service-date", "ge2021-01-01")]).await,
        with_nf(&[
            "EOBOral1",
            "EOBOral2",
            "EOBProfessionalTransportation1",
            "EOBInpatient2"
        ])
    );
    assert_eq!(
        f(&[("service-date", "gt2021-10-31")]).await,
        with_nf(&["EOBProfessionalTransportation1", "EOBInpatient2"])
    );
    assert_eq!(
        f(&[("service-date", "lt2018")]).await,
        with_nf(&["EOBInpatient2"])
    );
    assert_eq!(
        f(&[("service-date", "le2019-07-02")]).await,
        with_nf(&[
            "EOBInpatient2",
            "EOBInpatient1",
            "EOBOutpatient1",
            "EOBPharmacy1",
            "EOBProfessional1"
        ])
    );
    assert_eq!(
        f(&[("service-date", "sa2021-06-30")]).await,
        with_nf(&["EOBOral2", "EOBProfessionalTransportation1"])
    );
    assert_eq!(
        f(&[("service-date", "eb2017-12-31")]).await,
        with_nf(&["EOBInpatient2"])
    );
    let ap = f(&[("service-date", "ap2020-09-29")]).await;
    assert!(
        ap.contains("EOBOutpatient2") && ap.contains("EOBProfessional2"),
        "{ap:?}"
    );
    assert!(
        !ap.contains("EOBOral2") && !ap.contains("EOBPharmacy1"),
        "{ap:?}"
    );
    // comma = OR, repeated = AND
    assert_eq!(
        f(&[("service-date", "2019-07-02,2020-08-04")]).await,
        with_nf(&["EOBPharmacy1", "EOBProfessional1", "EOBProfessional2"])
    );
    assert_eq!(
        f(&[
            ("service-date", "ge2020-01-01"),
            ("service-date", "lt2021-01-01")
        ])
        .await,
        with_nf(&["EOBInpatient2", "EOBOutpatient2", "EOBProfessional2"])
    );
    assert_eq!(
        f(&[
            ("service-date", "2019-10"),
            ("patient", "Patient2"),
            ("type", "pharmacy")
        ])
        .await,
        with_nf(&["EOBPharmacy1"])
    );
    // service-start-date: billablePeriod.start | item.servicedDate | item.servicedPeriod.start
    assert_eq!(
        f(&[("service-start-date", "ge2021-01-01")]).await,
        with_nf(&["EOBOral1", "EOBOral2", "EOBProfessionalTransportation1"])
    );
    assert_eq!(
        f(&[("service-start-date", "2019-11-02")]).await,
        with_nf(&["EOBInpatient1", "EOBOutpatient1"])
    );
    assert_eq!(
        f(&[("service-start-date", "2017-05")]).await,
        with_nf(&["EOBInpatient2"])
    );
    // billable-period-start
    assert_eq!(
        f(&[("billable-period-start", "2019-01-01")]).await,
        with_nf(&["EOBInpatient1", "EOBOutpatient1", "EOBProfessional1"])
    );
    assert_eq!(
        f(&[("billable-period-start", "gt2019-01-01")]).await,
        with_nf(&[
            "EOBPharmacy1",
            "EOBOutpatient2",
            "EOBProfessional2",
            "EOBOral1",
            "EOBOral2",
            "EOBProfessionalTransportation1"
        ])
    );
    assert_eq!(
        f(&[("billable-period-start", "le2017-05-23")]).await,
        with_nf(&["EOBInpatient2"])
    );
    assert!(f(&[("billable-period-start", "2019-11-02")])
        .await
        .is_empty());
    // _lastUpdated (= the fixtures' meta.lastUpdated)
    assert_eq!(
        f(&[("_lastUpdated", "gt2021-01-01")]).await,
        with_nf(&["EOBOral1", "EOBOral2", "EOBProfessionalTransportation1"])
    );
    assert_eq!(
        f(&[("_lastUpdated", "2019-12-12")]).await,
        with_nf(&[
            "EOBInpatient1",
            "EOBOutpatient1",
            "EOBPharmacy1",
            "EOBProfessional1"
        ])
    );
    assert_eq!(
        f(&[("_lastUpdated", "ge2020-10-13T11:10:24-04:00")]).await,
        with_nf(&[
            "EOBOutpatient2",
            "EOBProfessional2",
            "EOBOral1",
            "EOBOral2",
            "EOBProfessionalTransportation1"
        ])
    );
    assert_eq!(
        f(&[("_lastUpdated", "lt2020-10-13T15:10:24Z")]).await,
        with_nf(&[
            "EOBInpatient1",
            "EOBOutpatient1",
            "EOBPharmacy1",
            "EOBProfessional1",
            "EOBInpatient2"
        ])
    );
    // reference parameters
    assert_eq!(
        f(&[("provider", "Organization/ProviderOrganization1")]).await,
        with_nf(&[
            "EOBInpatient1",
            "EOBOutpatient1",
            "EOBPharmacy1",
            "EOBProfessional1",
            "EOBProfessional2"
        ])
    );
    assert_eq!(
        f(&[("provider", "PractitionerDentalProvider1")]).await,
        with_nf(&["EOBOral1", "EOBOral2"])
    );
    assert!(
        f(&[("provider:Organization", "PractitionerDentalProvider1")])
            .await
            .is_empty()
    );
    assert_eq!(
        f(&[("care-team", "Practitioner1")]).await,
        with_nf(&["EOBOutpatient2", "EOBProfessional2"])
    );
    assert_eq!(
        f(&[("coverage", "Coverage3")]).await,
        set(&[
            "EOBInpatientNonFinancial1",
            "EOBOutpatientNonFinancial1",
            "EOBPharmacyNonFinancial1",
            "EOBProfessionalNonFinancial1"
        ])
    );
    assert_eq!(
        f(&[("insurer", "Organization/Payer2")]).await,
        with_nf(&[
            "EOBInpatient2",
            "EOBOutpatient2",
            "EOBProfessional2",
            "EOBProfessionalTransportation1"
        ])
    );
    assert_eq!(
        f(&[("payee", "Organization/ProviderOrganization1")]).await,
        with_nf(&["EOBProfessional2"])
    );
}

pub async fn fhir_other_searches(store: &dyn Store) {
    if load(store).await.is_none() {
        return;
    }
    // Coverage
    assert_eq!(
        find(store, Coverage, &[("patient", "Patient1")]).await,
        set(&["Coverage1", "Coverage2"])
    );
    assert_eq!(
        find(store, Coverage, &[("payor", "Organization/Payer2")]).await,
        set(&["Coverage1", "Coverage2"])
    );
    assert_eq!(
        find(store, Coverage, &[("payor", "DentalPayer1")]).await,
        set(&["CoverageDental1"])
    );
    assert_eq!(
        find(store, Coverage, &[("_lastUpdated", "gt2020-10-01")]).await,
        set(&["Coverage1", "Coverage2", "CoverageDental1"])
    );
    assert_eq!(
        find(store, Coverage, &[("_id", "Coverage3")]).await,
        set(&["Coverage3"])
    );
    // Patient
    assert_eq!(
        find(store, Patient, &[("name", "john")]).await,
        set(&["Patient1"])
    );
    assert_eq!(
        find(store, Patient, &[("name", "TEST,johnny")]).await,
        set(&["Patient1", "Patient2"])
    );
    assert_eq!(
        find(store, Patient, &[("family", "Exam")]).await,
        set(&["Patient1"])
    );
    assert!(find(store, Patient, &[("family", "johnny")])
        .await
        .is_empty());
    assert_eq!(
        find(store, Patient, &[("given", "member")]).await,
        set(&["Patient2"])
    );
    assert_eq!(
        find(store, Patient, &[("birthdate", "1943")]).await,
        set(&["Patient2"])
    );
    assert_eq!(
        find(store, Patient, &[("birthdate", "ge1986-01-01")]).await,
        set(&["Patient1"])
    );
    assert_eq!(
        find(store, Patient, &[("gender", "male")]).await,
        set(&["Patient1", "Patient2"])
    );
    assert!(find(
        store,
        Patient,
        &[("gender", "http://hl7.org/fhir/administrative-gender|female")]
    )
    .await
    .is_empty());
    assert_eq!(
        find(
            store,
            Patient,
            &[(
                "identifier",
                "https://www.upmchealthplan.com/fhir/memberidentifier|88800933501"
            )]
        )
        .await,
        set(&["Patient2"])
    );
    assert_eq!(
        find(
            store,
            Patient,
            &[("_lastUpdated", "2020-07-07"), ("gender", "male")]
        )
        .await,
        set(&["Patient1"])
    );
    // Organization, Practitioner, RelatedPerson
    assert_eq!(
        find(store, Organization, &[("name", "organization")]).await,
        set(&["Payer1"])
    );
    assert_eq!(
        find(store, Organization, &[("name", "upmc,green")]).await,
        set(&["Payer2", "ProviderOrganization3"])
    );
    assert_eq!(
        find(
            store,
            Organization,
            &[("identifier", "http://hl7.org/fhir/sid/us-npi|345678")]
        )
        .await,
        set(&["Payer1", "ProviderOrganization2"])
    );
    assert_eq!(
        find(store, Organization, &[("identifier", "|66783JJT")]).await,
        set(&["DentalPayer1"])
    );
    assert_eq!(
        find(store, Practitioner, &[("name", "smith")]).await,
        set(&["Practitioner1"])
    );
    assert_eq!(
        find(store, Practitioner, &[("name", "dds")]).await,
        set(&["PractitionerDentalProvider1"])
    );
    assert_eq!(
        find(store, Practitioner, &[("identifier", "0025501002")]).await,
        set(&["PractitionerDentalProvider1"])
    );
    assert_eq!(
        find(store, Practitioner, &[("_lastUpdated", "ge2021")]).await,
        set(&["Practitioner4", "PractitionerDentalProvider1"])
    );
    assert_eq!(
        find(store, RelatedPerson, &[("patient", "Patient1")]).await,
        set(&["RelatedPerson1"])
    );
    assert_eq!(
        find(store, RelatedPerson, &[("name", "mary")]).await,
        set(&["RelatedPerson1"])
    );
    assert!(find(store, RelatedPerson, &[("patient", "Patient2")])
        .await
        .is_empty());
}

pub async fn fhir_patient_compartment(store: &dyn Store) {
    if load(store).await.is_none() {
        return;
    }
    let p1 = Some(&["Patient1"][..]);
    assert_eq!(find_in(store, Eob, &[], p1).await, set(P1_EOBS));
    // Another patient's EOBs, asked for explicitly: nothing.
    assert!(find_in(store, Eob, &[("patient", "Patient2")], p1)
        .await
        .is_empty());
    assert!(find_in(store, Eob, &[("_id", "EOBOral1")], p1)
        .await
        .is_empty());
    assert_eq!(
        find_in(store, Eob, &[("type", "professional")], p1).await,
        with_nf(&["EOBProfessional2", "EOBProfessionalTransportation1"])
    );
    assert_eq!(
        find_in(store, Coverage, &[], Some(&["Patient2"])).await,
        set(&["Coverage3", "CoverageDental1"])
    );
    assert_eq!(find_in(store, Patient, &[], p1).await, set(&["Patient1"]));
    assert_eq!(
        find_in(store, RelatedPerson, &[], p1).await,
        set(&["RelatedPerson1"])
    );
    assert!(find_in(store, Organization, &[], p1).await.is_empty());
    assert_eq!(
        find_in(store, Eob, &[], Some(&["Patient1", "Patient2"]))
            .await
            .len(),
        P1_EOBS.len() + P2_EOBS.len()
    );
    assert!(find_in(store, Eob, &[], Some(&[])).await.is_empty());
    assert_eq!(
        store.compartment_patients(Eob, "EOBOral1").await.unwrap(),
        vec!["Patient2"]
    );
    assert_eq!(
        store
            .compartment_patients(Coverage, "Coverage1")
            .await
            .unwrap(),
        vec!["Patient1"]
    );
    assert_eq!(
        store
            .compartment_patients(RelatedPerson, "RelatedPerson1")
            .await
            .unwrap(),
        vec!["Patient1"]
    );
    assert!(store
        .compartment_patients(Organization, "Payer1")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .compartment_patients(Eob, "nope")
        .await
        .unwrap()
        .is_empty());
}

pub async fn fhir_paging(store: &dyn Store) {
    if load(store).await.is_none() {
        return;
    }
    let mut q = SearchQuery::new(Eob);
    q.params
        .push(parse_param(Eob, "patient", "Patient2").unwrap());
    q.count = 5;
    let mut pages = Vec::new();
    loop {
        let page = store.search(&q).await.unwrap();
        assert_eq!(page.total, Some(12));
        pages.push(
            page.resources
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
        );
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    // Newest first, then id descending (byte order).
    assert_eq!(
        pages,
        vec![
            vec![
                "EOBOralNonFinancial2",
                "EOBOral2",
                "EOBOralNonFinancial1",
                "EOBOral1",
                "EOBProfessionalNonFinancial1"
            ],
            vec![
                "EOBProfessional1",
                "EOBPharmacyNonFinancial1",
                "EOBPharmacy1",
                "EOBOutpatientNonFinancial1",
                "EOBOutpatient1"
            ],
            vec!["EOBInpatientNonFinancial1", "EOBInpatient1"],
        ]
    );
    // An exact multiple of the page size ends without a dangling empty page... or with one at most.
    q.cursor = None;
    q.count = 6;
    q.with_total = false;
    let first = store.search(&q).await.unwrap();
    assert_eq!(first.total, None);
    q.cursor = first.next_cursor.clone();
    let second = store.search(&q).await.unwrap();
    assert_eq!(second.resources.len(), 6);
    assert_eq!(second.next_cursor, None);
    // count is clamped to 1..=1000
    let mut q = SearchQuery::new(Eob);
    q.count = 0;
    assert_eq!(store.search(&q).await.unwrap().resources.len(), 1);
}

pub async fn fhir_includes(store: &dyn Store) {
    if load(store).await.is_none() {
        return;
    }
    let keys = |v: &[StoredResource]| -> Vec<String> {
        v.iter()
            .map(|r| format!("{}/{}", r.resource_type, r.id))
            .collect()
    };
    let eob = |id: &str| {
        let id = id.to_owned();
        async move { store.read(Eob, &id).await.unwrap().unwrap() }
    };
    let inc = |s: &str| parse_include(s, false).unwrap();
    let prof2 = vec![eob("EOBProfessional2").await];
    let got = store
        .include(&prof2, &[inc("ExplanationOfBenefit:*")])
        .await
        .unwrap();
    assert_eq!(
        keys(&got),
        vec![
            "Coverage/Coverage1",
            "Patient/Patient1",
            "Organization/Payer2",
            "Organization/ProviderOrganization1",
            "Practitioner/Practitioner1"
        ]
    );
    // Included resources are identical to reads.
    for r in &got {
        assert_eq!(
            store.read(r.resource_type, &r.id).await.unwrap().as_ref(),
            Some(r)
        );
    }
    for (spec, want) in [
        ("ExplanationOfBenefit:patient", vec!["Patient/Patient1"]),
        (
            "ExplanationOfBenefit:provider",
            vec!["Organization/ProviderOrganization1"],
        ),
        (
            "ExplanationOfBenefit:care-team",
            vec![
                "Organization/ProviderOrganization1",
                "Practitioner/Practitioner1",
            ],
        ),
        ("ExplanationOfBenefit:coverage", vec!["Coverage/Coverage1"]),
        ("ExplanationOfBenefit:insurer", vec!["Organization/Payer2"]),
        (
            "ExplanationOfBenefit:payee",
            vec!["Organization/ProviderOrganization1"],
        ),
        (
            "ExplanationOfBenefit:care-team:Practitioner",
            vec!["Practitioner/Practitioner1"],
        ),
        ("Coverage:payor", vec![]),
    ] {
        assert_eq!(
            keys(&store.include(&prof2, &[inc(spec)]).await.unwrap()),
            want,
            "{spec}"
        );
    }
    // _include=ExplanationOfBenefit:coverage&_include:iterate=Coverage:payor
    let oral = vec![eob("EOBOral1").await, eob("EOBOral2").await];
    let specs = [
        inc("ExplanationOfBenefit:coverage"),
        parse_include("Coverage:payor", true).unwrap(),
    ];
    assert_eq!(
        keys(&store.include(&oral, &specs).await.unwrap()),
        vec!["Coverage/CoverageDental1", "Organization/DentalPayer1"]
    );
    // Without :iterate, Coverage:payor applies to the EOBs only (nothing).
    let specs = [inc("ExplanationOfBenefit:coverage"), inc("Coverage:payor")];
    assert_eq!(
        keys(&store.include(&oral, &specs).await.unwrap()),
        vec!["Coverage/CoverageDental1"]
    );
    assert!(store
        .include(&oral, &[inc("ExplanationOfBenefit:provider:Organization")])
        .await
        .unwrap()
        .is_empty());
    // Targets already in the page are not repeated; missing targets are skipped.
    let mut page = prof2.clone();
    page.push(store.read(Patient, "Patient1").await.unwrap().unwrap());
    assert_eq!(
        keys(
            &store
                .include(&page, &[inc("ExplanationOfBenefit:patient")])
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    let tr = vec![eob("EOBProfessionalTransportation1").await];
    assert_eq!(
        keys(
            &store
                .include(&tr, &[inc("ExplanationOfBenefit:*")])
                .await
                .unwrap()
        ),
        vec![
            "Coverage/Coverage1",
            "Patient/Patient1",
            "Organization/Payer2",
            "Organization/ProviderTransportationOrganization1"
        ]
    );
    assert!(store
        .include(&[], &[inc("ExplanationOfBenefit:*")])
        .await
        .unwrap()
        .is_empty());
}

/// Import throughput (not part of the default run): `cargo test --release -p bluegate-store
/// fhir_import_throughput -- --ignored --nocapture`. Imports `BLUEGATE_BENCH_N` (default 20,000) EOBs,
/// copies of the fixture EOBs with fresh ids, in batches of 1,000.
pub async fn fhir_import_throughput(store: &dyn Store) {
    let Some(files) = fixtures() else { return };
    let eobs: Vec<&String> = files
        .iter()
        .filter(|(n, _)| n.starts_with("ExplanationOfBenefit-"))
        .map(|(_, t)| t)
        .collect();
    let n: usize = std::env::var("BLUEGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let strip_text = std::env::var("BLUEGATE_BENCH_NO_NARRATIVE").is_ok();
    let mut texts = Vec::with_capacity(n);
    for i in 0..n {
        let src = eobs[i % eobs.len()];
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(src).unwrap();
        v.insert("id".into(), format!("bench{i}").into());
        v.insert(
            "patient".into(),
            serde_json::json!({"reference": format!("Patient/p{}", i % 1000)}),
        );
        if strip_text {
            v.remove("text");
        }
        texts.push(serde_json::to_string(&v).unwrap());
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let start = std::time::Instant::now();
    for chunk in texts.chunks(1000) {
        store.put_batch(chunk, crate::common::t(0)).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let msg = format!(
        "{}: imported {n} EOBs ({:.1} KB avg) in {secs:.2}s = {:.0} resources/s\n",
        store.backend_name(),
        bytes as f64 / n as f64 / 1024.0,
        n as f64 / secs
    );
    use std::io::Write;
    let _ = std::io::stderr().write_all(msg.as_bytes());
    let start = std::time::Instant::now();
    let mut q = SearchQuery::new(Eob);
    q.params.push(parse_param(Eob, "patient", "p7").unwrap());
    q.params
        .push(parse_param(Eob, "service-date", "ge2019").unwrap());
    let page = store.search(&q).await.unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "{}: search patient+service-date -> {} hits in {:?}",
        store.backend_name(),
        page.resources.len(),
        start.elapsed()
    );
}

/// `prepare` + `put_prepared` (the import path) on a synthetic population: everything is stored as
/// generated (only `meta` differs), a repeat makes a new version, a bad resource comes back with its
/// text, a failing batch writes nothing, and the searches see the data.
pub async fn fhir_put_prepared_synthetic(store: &dyn Store) {
    use bluegate_store::fhir::synthetic::{Synthetic, SyntheticOptions};
    use bluegate_store::fhir::{prepare, PreparedResource};
    let mut opts = SyntheticOptions::numbered(12, 77);
    opts.id_prefix = "pp".into();
    opts.eobs_per_member = 5;
    let generated: Vec<_> = Synthetic::new(opts).unwrap().collect();
    let batch: Vec<PreparedResource> = generated
        .iter()
        .map(|r| prepare(r.json.clone()).unwrap())
        .collect();
    assert_eq!(batch[0].text(), generated[0].json);
    let n = store
        .put_prepared(batch, crate::common::t(0))
        .await
        .unwrap();
    assert_eq!(n as usize, generated.len());
    for r in generated.iter().step_by(7) {
        let stored = store.read(r.resource_type, &r.id).await.unwrap().unwrap();
        let mut want: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        let mut got: serde_json::Value = serde_json::from_str(&stored.json).unwrap();
        want["meta"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k == "profile");
        got["meta"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k == "profile");
        assert_eq!(got, want, "{}", r.id);
        // Byte-exact apart from meta: the text after meta is the generated one.
        let tail = |s: &str| s[s.find("]},").unwrap()..].to_owned();
        assert_eq!(tail(&stored.json), tail(&r.json), "{}", r.id);
    }
    // pp-cov-0 came twice (a second version in the stream).
    let cov = store.read(Coverage, "pp-cov-0").await.unwrap().unwrap();
    assert_eq!(cov.version_id, 2);
    let mut q = SearchQuery::new(Eob);
    q.params
        .push(parse_param(Eob, "patient", "pp-pat-3").unwrap());
    q.patient_compartment = Some(vec!["pp-pat-3".into()]);
    assert_eq!(store.search(&q).await.unwrap().total, Some(5));

    // A resource the store would refuse is refused by `prepare`, text handed back.
    let bad = r#"{"resourceType":"Patient","id":"pp-bad","birthDate":"soon"}"#.to_string();
    let e = prepare(bad.clone()).unwrap_err();
    assert_eq!(e.text, bad);
    assert!(matches!(e.error, StoreError::Invalid(_)));
    assert!(prepare("[]".into()).is_err());

    // A repeat within one batch is a new version; an oversized batch is refused whole.
    let again = |id: &str| {
        prepare(format!(
            r#"{{"resourceType":"Organization","id":"{id}","name":"X"}}"#
        ))
        .unwrap()
    };
    let n = store
        .put_prepared(
            vec![again("pp-new-1"), again("pp-new-1")],
            crate::common::t(1),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let org = store.read(Organization, "pp-new-1").await.unwrap().unwrap();
    assert_eq!(org.version_id, 2, "a repeat in one batch is a new version");
    let too_many: Vec<PreparedResource> = (0..=fhir::MAX_BATCH)
        .map(|i| again(&format!("pp-many-{i}")))
        .collect();
    assert!(matches!(
        store.put_prepared(too_many, crate::common::t(2)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store
        .read(Organization, "pp-many-0")
        .await
        .unwrap()
        .is_none());
}

/// Concurrent updates of one resource: each either gets its own version or fails with `Conflict`;
/// no version is lost or duplicated.
pub async fn concurrent_fhir_updates(store: std::sync::Arc<dyn Store>) {
    let text = |i: usize| format!(r#"{{"resourceType":"Organization","id":"hot","name":"N{i}"}}"#);
    store
        .put_resource(&text(0), crate::common::t(0))
        .await
        .unwrap();
    let results = super::race(&store, 8, move |s, i| async move {
        s.put_resource(&text(i + 1), crate::common::t(1)).await
    })
    .await;
    let mut versions = Vec::new();
    for r in results {
        match r {
            Ok(r) => versions.push(r.version_id),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    versions.sort();
    let expected: Vec<i64> = (2..2 + versions.len() as i64).collect();
    assert_eq!(versions, expected);
    let current = store.read(Organization, "hot").await.unwrap().unwrap();
    assert_eq!(current.version_id, 1 + versions.len() as i64);
    for v in 1..=current.version_id {
        assert!(
            store.vread(Organization, "hot", v).await.unwrap().is_some(),
            "v{v}"
        );
    }
    assert_eq!(
        find(&*store, Organization, &[("name", "n")]).await,
        set(&["hot"])
    );
}

/// A copy of the `backend`'s migrations older than `before`, in a folder under `dir` (for a database
/// as an earlier release left it).
pub fn migrations_before(dir: &std::path::Path, backend: &str, before: &str) -> std::path::PathBuf {
    let old = dir.join(format!("{backend}-migrations-before-{before}"));
    std::fs::create_dir_all(&old).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        if name.as_str() < before {
            std::fs::copy(f.path(), old.join(&name)).unwrap();
        }
    }
    old
}

const OLD_PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2024-01-01T00:00:00.000Z"},"name":[{"family":"Example"}],"birthDate":"1980-02-03"}"#;
const OLD_EOB: &str = r#"{"resourceType":"ExplanationOfBenefit","id":"e1","meta":{"versionId":"2","lastUpdated":"2024-01-02T00:00:00.000Z"},"patient":{"reference":"Patient/p1"},"total":[{"amount":{"value":12.50}}]}"#;
const OLD_EOB_V1: &str = r#"{"resourceType":"ExplanationOfBenefit","id":"e1","meta":{"versionId":"1","lastUpdated":"2024-01-01T00:00:00.000Z"},"patient":{"reference":"Patient/p1"}}"#;

/// Resources and their index rows as the schema before migration 0004 kept them (texts
/// uncompressed, as a store written before compression holds them).
pub fn rows_before_numbering() -> Vec<String> {
    vec![
        format!("INSERT INTO fhir_resources VALUES ('Patient', 'p1', 1, 1704067200000, '{OLD_PATIENT}')"),
        format!("INSERT INTO fhir_resources VALUES ('ExplanationOfBenefit', 'e1', 2, 1704153600000, '{OLD_EOB}')"),
        format!("INSERT INTO fhir_history VALUES ('ExplanationOfBenefit', 'e1', 1, 1704067200000, '{OLD_EOB_V1}')"),
        "INSERT INTO fhir_string VALUES ('Patient', 'p1', 'family', 'example'), ('Patient', 'p1', 'name', 'example')".into(),
        "INSERT INTO fhir_date VALUES ('Patient', 'p1', 'birthdate', 318384000000, 318470399999)".into(),
        "INSERT INTO fhir_ref VALUES ('ExplanationOfBenefit', 'e1', 'patient', 'Patient/p1')".into(),
        "INSERT INTO fhir_token VALUES ('Patient', 'p1', 'identifier', 'urn:x', 'A1')".into(),
        "INSERT INTO fhir_compartment VALUES ('Patient', 'p1', 'p1'), ('ExplanationOfBenefit', 'e1', 'p1')".into(),
    ]
}

/// What [`rows_before_numbering`] must still find after the migrations, and updates on top.
pub async fn check_after_numbering(store: &dyn Store) {
    let search = |rt: ResourceType, name: &str, value: &str| {
        let mut q = SearchQuery::new(rt);
        q.params.push(parse_param(rt, name, value).unwrap());
        q
    };
    let ids = |page: bluegate_store::fhir::SearchPage| {
        page.resources.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let eob = ResourceType::ExplanationOfBenefit;
    let pat = ResourceType::Patient;
    assert_eq!(
        ids(store.search(&search(eob, "patient", "p1")).await.unwrap()),
        ["e1"]
    );
    assert_eq!(
        ids(store.search(&search(pat, "family", "exa")).await.unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(store
            .search(&search(pat, "birthdate", "1980"))
            .await
            .unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(store
            .search(&search(pat, "identifier", "urn:x|A1"))
            .await
            .unwrap()),
        ["p1"]
    );
    // Parameter numbers imply the type: an EOB search never finds the Patient's rows.
    assert!(ids(store
        .search(&search(eob, "identifier", "A1"))
        .await
        .unwrap())
    .is_empty());
    let mut in_compartment = SearchQuery::new(eob);
    in_compartment.patient_compartment = Some(vec!["p1".into()]);
    assert_eq!(ids(store.search(&in_compartment).await.unwrap()), ["e1"]);
    assert_eq!(store.compartment_patients(eob, "e1").await.unwrap(), ["p1"]);
    // Texts and versions as they were.
    let e1 = store.read(eob, "e1").await.unwrap().unwrap();
    assert_eq!((e1.version_id, e1.json.as_str()), (2, OLD_EOB));
    assert_eq!(
        store.vread(eob, "e1", 1).await.unwrap().unwrap().json,
        OLD_EOB_V1
    );
    // An update replaces the migrated index rows; a new resource gets its own.
    let now = time::OffsetDateTime::now_utc();
    store
        .put_resource(r#"{"resourceType":"ExplanationOfBenefit","id":"e1","patient":{"reference":"Patient/p2"}}"#, now)
        .await
        .unwrap();
    store
        .put_resource(r#"{"resourceType":"ExplanationOfBenefit","id":"e2","patient":{"reference":"Patient/p1"}}"#, now)
        .await
        .unwrap();
    assert_eq!(
        ids(store.search(&search(eob, "patient", "p1")).await.unwrap()),
        ["e2"]
    );
    assert_eq!(
        ids(store.search(&search(eob, "patient", "p2")).await.unwrap()),
        ["e1"]
    );
    assert_eq!(store.compartment_patients(eob, "e1").await.unwrap(), ["p2"]);
    assert_eq!(
        store.vread(eob, "e1", 2).await.unwrap().unwrap().json,
        OLD_EOB
    );
}
