//! Download everything a patient-context token opens: the Patient, their Coverage and their
//! ExplanationOfBenefits with `_include=ExplanationOfBenefit:*`, following `next` links, into NDJSON per
//! resource type, de-duplicated by type and id, resumable (progress in `DIR/.bluegate-fetch.json`, written
//! after every page; a torn last line from a crash is dropped), and summarized (counts per type and per
//! claim type, service dates, billed and paid totals). `bluegate app fetch` is this plus the state file.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::FhirClient;

/// The progress file in the output directory.
pub const PROGRESS_FILE: &str = ".bluegate-fetch.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Step {
    done: bool,
    /// The next page to fetch (a `next` link, re-checked against the FHIR base before use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default)]
    pages: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    fhir_base: String,
    patient: String,
    steps: BTreeMap<String, Step>,
}

/// A resource type usable as a file name: FHIR type names are `[A-Z][A-Za-z]*`. Anything else from the
/// server is refused (no `../`, no slashes).
fn safe_type(t: &str) -> bool {
    let mut c = t.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase())
        && t.len() <= 64
        && c.all(|x| x.is_ascii_alphabetic())
}

struct Output {
    dir: PathBuf,
    seen: HashSet<(String, String)>,
    written: BTreeMap<String, u64>,
    skipped: u64,
}

impl Output {
    /// Open `dir`, drop any torn last line of the NDJSON files (a crash mid-write), and remember what is
    /// already there so nothing is written twice.
    fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut seen = HashSet::new();
        for path in ndjson_files(dir)? {
            let mut text = std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if !text.is_empty() && text.last() != Some(&b'\n') {
                let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                text.truncate(keep);
                std::fs::write(&path, &text)
                    .map_err(|e| Error::io(format!("repairing {}", path.display()), e))?;
            }
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(v) = serde_json::from_slice::<Value>(line) {
                    if let (Some(t), Some(id)) = (v["resourceType"].as_str(), v["id"].as_str()) {
                        seen.insert((t.to_string(), id.to_string()));
                    }
                }
            }
        }
        Ok(Output {
            dir: dir.to_path_buf(),
            seen,
            written: BTreeMap::new(),
            skipped: 0,
        })
    }

    /// Append the resources not seen before, grouped per type, one write per file.
    fn add(&mut self, resources: Vec<Value>) -> Result<(), Error> {
        let mut by_type: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in resources {
            let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
                self.skipped += 1;
                continue;
            };
            if !safe_type(t) || id.is_empty() || t == "OperationOutcome" {
                self.skipped += 1;
                continue;
            }
            if !self.seen.insert((t.to_string(), id.to_string())) {
                continue;
            }
            let buf = by_type.entry(t.to_string()).or_default();
            serde_json::to_writer(&mut *buf, &r).map_err(|e| Error::io("encoding", e.into()))?;
            buf.push(b'\n');
            *self.written.entry(t.to_string()).or_default() += 1;
        }
        for (t, bytes) in by_type {
            let path = self.dir.join(format!("{t}.ndjson"));
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_data())
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

fn bundle_resources(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e.pointer("/search/mode").and_then(Value::as_str) != Some("outcome"))
                .filter_map(|e| e.get("resource").cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn save_progress(dir: &Path, p: &Progress) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(p).map_err(|e| Error::io("encoding", e.into()))?;
    crate::state::write_private(&dir.join(PROGRESS_FILE), &bytes)
}

fn ndjson_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in rd {
        let path = entry
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .path();
        if path.extension().and_then(|e| e.to_str()) == Some("ndjson") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// `_count` per search page.
    pub page_size: u32,
}

/// What one run wrote.
#[derive(Debug, Default, Clone)]
pub struct DownloadReport {
    /// New resources written this run, per type.
    pub new: BTreeMap<String, u64>,
    /// Entries without a usable resourceType/id (or an unsafe type name).
    pub skipped: u64,
}

/// Download everything for `patient` into `dir` (see the module documentation). `progress` is called
/// after every page with (search, pages so far, new resources so far). Safe to call again on the same
/// directory: it resumes; a directory holding another patient's or server's download is refused.
pub async fn download(
    fhir: &mut FhirClient,
    patient: &str,
    dir: &Path,
    opts: &DownloadOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<DownloadReport, Error> {
    let mut out = Output::open(dir)?;
    let progress_path = dir.join(PROGRESS_FILE);
    let state_err = |m: String| Error::State {
        path: progress_path.display().to_string(),
        message: m,
    };
    let mut prog = match std::fs::read(&progress_path) {
        Ok(bytes) => {
            let p: Progress = serde_json::from_slice(&bytes)
                .map_err(|_| state_err("not a fetch progress file".into()))?;
            if p.fhir_base != fhir.base() || p.patient != patient {
                return Err(state_err(format!(
                    "it holds a download of patient {} from {}; use another directory",
                    p.patient, p.fhir_base
                )));
            }
            p
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress {
            fhir_base: fhir.base().to_string(),
            patient: patient.to_string(),
            steps: BTreeMap::new(),
        },
        Err(e) => return Err(Error::io(format!("reading {}", progress_path.display()), e)),
    };
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pid = enc(patient);
    let step = prog.steps.entry("Patient".into()).or_default();
    if !step.done {
        let p = fhir.get(&format!("Patient/{pid}")).await?;
        if p.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(Error::bad(
                fhir.base(),
                format!("Patient/{patient} is not a Patient"),
            ));
        }
        out.add(vec![p])?;
        step.done = true;
        step.pages = 1;
        save_progress(dir, &prog)?;
        progress("Patient", 1, out.written.values().sum());
    }
    let searches = [
        (
            "Coverage",
            format!("Coverage?patient={pid}&_count={}", opts.page_size),
        ),
        (
            "ExplanationOfBenefit",
            format!(
                "ExplanationOfBenefit?patient={pid}&_include={}&_count={}",
                enc("ExplanationOfBenefit:*"),
                opts.page_size
            ),
        ),
    ];
    for (name, first) in searches {
        loop {
            let step = prog.steps.entry(name.to_string()).or_default();
            if step.done {
                break;
            }
            let url = step.next.clone().unwrap_or_else(|| first.clone());
            let page = fhir.search_page(&url).await?;
            out.add(bundle_resources(&page.bundle))?;
            step.pages += 1;
            step.done = page.next.is_none();
            step.next = page.next;
            let pages = step.pages;
            save_progress(dir, &prog)?;
            progress(name, pages, out.written.values().sum());
        }
    }
    Ok(DownloadReport {
        new: out.written,
        skipped: out.skipped,
    })
}

/// What was downloaded, read back from the NDJSON files.
#[derive(Debug, Default)]
pub struct Summary {
    pub counts: BTreeMap<String, u64>,
    pub claim_types: BTreeMap<String, u64>,
    pub first_service: Option<String>,
    pub last_service: Option<String>,
    /// Per currency, in cents.
    pub billed: BTreeMap<String, i64>,
    pub paid: BTreeMap<String, i64>,
}

fn cents(v: &Value) -> Option<i64> {
    v.as_f64().map(|f| (f * 100.0).round() as i64)
}

fn money(m: &Value) -> Option<(String, i64)> {
    let c = cents(m.get("value")?)?;
    let cur = m
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("USD")
        .to_string();
    Some((cur, c))
}

impl Summary {
    fn date(&mut self, d: Option<&str>) {
        let Some(d) = d.filter(|d| d.len() >= 4) else {
            return;
        };
        let d = d.chars().take(10).collect::<String>();
        if self.first_service.as_ref().is_none_or(|f| d < *f) {
            self.first_service = Some(d.clone());
        }
        if self.last_service.as_ref().is_none_or(|l| d > *l) {
            self.last_service = Some(d);
        }
    }

    fn eob(&mut self, e: &Value) {
        let t = e
            .pointer("/type/coding/0/code")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        *self.claim_types.entry(t.to_string()).or_default() += 1;
        self.date(e.pointer("/billablePeriod/start").and_then(Value::as_str));
        self.date(e.pointer("/billablePeriod/end").and_then(Value::as_str));
        for item in e["item"].as_array().into_iter().flatten() {
            self.date(item["servicedDate"].as_str());
            self.date(
                item.pointer("/servicedPeriod/start")
                    .and_then(Value::as_str),
            );
            self.date(item.pointer("/servicedPeriod/end").and_then(Value::as_str));
        }
        for total in e["total"].as_array().into_iter().flatten() {
            let submitted = total
                .pointer("/category/coding")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["code"] == "submitted"));
            if submitted {
                if let Some((cur, c)) = total.get("amount").and_then(money) {
                    *self.billed.entry(cur).or_default() += c;
                }
            }
        }
        if let Some((cur, c)) = e.pointer("/payment/amount").and_then(money) {
            *self.paid.entry(cur).or_default() += c;
        }
    }

    pub fn to_json(&self) -> Value {
        let m = |x: &BTreeMap<String, i64>| -> Value {
            x.iter()
                .map(|(k, v)| (k.clone(), json!(*v as f64 / 100.0)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "counts": self.counts,
            "claim_types": self.claim_types,
            "service_dates": {"first": self.first_service, "last": self.last_service},
            "total_billed": m(&self.billed),
            "total_paid": m(&self.paid),
        })
    }

    /// Human-readable lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (t, n) in &self.counts {
            out.push(format!("  {t:<22} {n}"));
        }
        if !self.claim_types.is_empty() {
            let list: Vec<String> = self
                .claim_types
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push(format!("  claims by type         {}", list.join(", ")));
        }
        if let (Some(f), Some(l)) = (&self.first_service, &self.last_service) {
            out.push(format!("  services               {f} to {l}"));
        }
        let fmt = |x: &BTreeMap<String, i64>| {
            x.iter()
                .map(|(k, v)| format!("{}.{:02} {k}", v / 100, (v % 100).abs()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.billed.is_empty() {
            out.push(format!("  total billed           {}", fmt(&self.billed)));
        }
        if !self.paid.is_empty() {
            out.push(format!("  total paid             {}", fmt(&self.paid)));
        }
        out
    }
}

/// Read the NDJSON files of `dir` back into a [`Summary`].
pub fn summarize(dir: &Path) -> Result<Summary, Error> {
    let mut s = Summary::default();
    for path in ndjson_files(dir)? {
        let text = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let Some(t) = v["resourceType"].as_str() else {
                continue;
            };
            *s.counts.entry(t.to_string()).or_default() += 1;
            if t == "ExplanationOfBenefit" {
                s.eob(&v);
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_names_come_only_from_fhir_type_names() {
        assert!(safe_type("ExplanationOfBenefit"));
        for bad in [
            "",
            "../etc",
            "a",
            "Patient/1",
            "Pat ient",
            "Ünicode",
            "X.ndjson",
        ] {
            assert!(!safe_type(bad), "{bad}");
        }
    }

    #[test]
    fn output_deduplicates_repairs_torn_lines_and_refuses_unsafe_types() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Patient.ndjson"),
            "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Pat",
        )
        .unwrap();
        let mut o = Output::open(dir.path()).unwrap();
        o.add(vec![
            json!({"resourceType": "Patient", "id": "p1"}),
            json!({"resourceType": "Patient", "id": "p2"}),
            json!({"resourceType": "../../x", "id": "1"}),
            json!({"resourceType": "Coverage"}),
        ])
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join("Patient.ndjson")).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(o.skipped, 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn summary_counts_claim_types_dates_and_money() {
        let dir = tempfile::tempdir().unwrap();
        let eob = |id: &str, t: &str, start: &str, billed: f64, paid: f64| {
            json!({"resourceType": "ExplanationOfBenefit", "id": id,
                "type": {"coding": [{"code": t}]},
                "billablePeriod": {"start": start},
                "item": [{"servicedDate": "2023-02-01"}],
                "total": [{"category": {"coding": [{"code": "submitted"}]}, "amount": {"value": billed, "currency": "USD"}},
                          {"category": {"coding": [{"code": "benefit"}]}, "amount": {"value": 1.0, "currency": "USD"}}],
                "payment": {"amount": {"value": paid, "currency": "USD"}}})
        };
        let mut o = Output::open(dir.path()).unwrap();
        o.add(vec![
            eob("e1", "pharmacy", "2022-05-03", 100.10, 80.05),
            eob("e2", "professional", "2024-01-09T10:00:00Z", 50.0, 0.0),
            eob("e3", "pharmacy", "2023-01-01", 0.5, 0.25),
        ])
        .unwrap();
        let s = summarize(dir.path()).unwrap();
        assert_eq!(s.counts["ExplanationOfBenefit"], 3);
        assert_eq!(s.claim_types["pharmacy"], 2);
        assert_eq!(s.first_service.as_deref(), Some("2022-05-03"));
        assert_eq!(s.last_service.as_deref(), Some("2024-01-09"));
        assert_eq!(s.billed["USD"], 15060);
        assert_eq!(s.paid["USD"], 8030);
    }
}
