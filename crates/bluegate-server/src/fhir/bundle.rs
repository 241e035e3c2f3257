//! Searchset Bundles. Stored resources are written into the Bundle as stored (byte-exact JSON), never
//! re-serialized, so that `_include` and read return identical resources (R-18) and decimals keep their
//! precision.

use serde_json::json;

/// One entry: the resource's JSON text and its search mode.
pub struct Entry<'a> {
    pub full_url: String,
    pub json: &'a str,
    pub include: bool,
}

/// A link of the Bundle.
pub struct Link {
    pub relation: &'static str,
    pub url: String,
}

/// Writes a `searchset` Bundle. `extra` entries (such as an OperationOutcome with `search.mode = outcome`)
/// are serialized values, placed last.
pub fn searchset(
    total: Option<u64>,
    links: &[Link],
    entries: &[Entry<'_>],
    outcome: Option<&serde_json::Value>,
    now_rfc3339: &str,
) -> String {
    let mut out =
        String::with_capacity(256 + entries.iter().map(|e| e.json.len() + 128).sum::<usize>());
    out.push_str(r#"{"resourceType":"Bundle","meta":{"lastUpdated":"#);
    out.push_str(&json!(now_rfc3339).to_string());
    out.push_str(r#"},"type":"searchset""#);
    if let Some(t) = total {
        out.push_str(&format!(r#","total":{t}"#));
    }
    out.push_str(r#","link":["#);
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json!({"relation": l.relation, "url": l.url}).to_string());
    }
    out.push_str(r#"],"entry":["#);
    let mut first = true;
    for e in entries {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(r#"{"fullUrl":"#);
        out.push_str(&json!(e.full_url).to_string());
        out.push_str(r#","resource":"#);
        out.push_str(e.json);
        out.push_str(if e.include {
            r#","search":{"mode":"include"}}"#
        } else {
            r#","search":{"mode":"match"}}"#
        });
    }
    if let Some(o) = outcome {
        if !first {
            out.push(',');
        }
        out.push_str(&json!({"resource": o, "search": {"mode": "outcome"}}).to_string());
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_is_valid_json_with_resources_verbatim() {
        let raw = r#"{"resourceType":"Patient","id":"p1","x":1.50}"#;
        let text = searchset(
            Some(1),
            &[Link {
                relation: "self",
                url: "https://h/fhir/Patient?_id=p1".into(),
            }],
            &[
                Entry {
                    full_url: "https://h/fhir/Patient/p1".into(),
                    json: raw,
                    include: false,
                },
                Entry {
                    full_url: "https://h/fhir/Organization/o\"1".into(),
                    json: r#"{"resourceType":"Organization","id":"o1"}"#,
                    include: true,
                },
            ],
            Some(&json!({"resourceType": "OperationOutcome"})),
            "2026-01-01T00:00:00Z",
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["total"], 1);
        assert_eq!(v["entry"][0]["search"]["mode"], "match");
        assert_eq!(v["entry"][1]["search"]["mode"], "include");
        assert_eq!(v["entry"][1]["fullUrl"], "https://h/fhir/Organization/o\"1");
        assert_eq!(v["entry"][2]["search"]["mode"], "outcome");
        assert!(text.contains(raw), "resource bytes kept");
        let empty = searchset(None, &[], &[], None, "2026-01-01T00:00:00Z");
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert!(v.get("total").is_none());
        assert_eq!(v["entry"], json!([]));
    }
}
