//! Ingesting a resource as received: the top level is split into members whose values are kept as raw
//! text (`&RawValue`, so decimals such as `12.50` or `1e2` are never re-encoded), and only `meta` is
//! rewritten, by splicing a new `meta` value into the original text in place. Every other byte of the
//! received text, whitespace included, is kept.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::params::{extract_members, is_valid_id, IndexEntries, Members, ResourceType};

/// Largest resource text accepted (bytes).
pub const MAX_RESOURCE_BYTES: usize = 16 * 1024 * 1024;

/// A received resource, validated and indexed, waiting for its version and time.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub rt: ResourceType,
    pub id: String,
    text: Cow<'a, str>,
    /// Byte range of the existing `meta` value, or an empty range where `,"meta":{...}` goes.
    meta_span: (usize, usize),
    meta_exists: bool,
    /// The other members of the existing `meta`: name and byte range of the raw value, in order.
    meta_rest: Vec<(String, (usize, usize))>,
    pub index: IndexEntries,
    /// The first version, rendered and encoded before the write (see `PreparedResource::render_ahead`).
    pub ahead: Option<Ahead>,
}

/// A first version rendered ahead: its `meta.lastUpdated` (ms) and the value to store.
#[derive(Debug)]
pub(crate) struct Ahead {
    pub lu_ms: i64,
    pub body: super::sql::Bind,
}

/// What [`Prepared`] knows besides the text.
struct Parts {
    rt: ResourceType,
    id: String,
    meta_span: (usize, usize),
    meta_exists: bool,
    meta_rest: Vec<(String, (usize, usize))>,
    index: IndexEntries,
}

/// Why a resource was rejected.
#[derive(Debug)]
pub(crate) struct Rejected(pub String);

fn offset_in(text: &str, raw: &RawValue) -> (usize, usize) {
    let start = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    (start, start + raw.get().len())
}

impl<'a> Prepared<'a> {
    pub fn parse(text: &'a str) -> Result<Self, Rejected> {
        let p = Self::parts(text)?;
        Ok(Self::from_parts(p, Cow::Borrowed(text)))
    }

    /// [`Prepared::parse`] taking `text` over (no copy); a rejected text is handed back.
    pub fn parse_owned(text: String) -> Result<Prepared<'static>, (Rejected, String)> {
        match Self::parts(&text) {
            Ok(p) => Ok(Prepared::from_parts(p, Cow::Owned(text))),
            Err(e) => Err((e, text)),
        }
    }

    fn from_parts(p: Parts, text: Cow<'a, str>) -> Self {
        Prepared {
            rt: p.rt,
            id: p.id,
            text,
            meta_span: p.meta_span,
            meta_exists: p.meta_exists,
            meta_rest: p.meta_rest,
            index: p.index,
            ahead: None,
        }
    }

    /// The text as received.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn parts(text: &str) -> Result<Parts, Rejected> {
        if text.len() > MAX_RESOURCE_BYTES {
            return Err(Rejected("resource too large".into()));
        }
        let Members(members) =
            serde_json::from_str(text).map_err(|e| Rejected(format!("not a JSON object: {e}")))?;
        let string_member = |name: &str| -> Result<Option<String>, Rejected> {
            members
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| {
                    serde_json::from_str::<String>(v.get())
                        .map_err(|_| Rejected(format!("{name} must be a string")))
                })
                .transpose()
        };
        let rt_name = string_member("resourceType")?
            .ok_or_else(|| Rejected("missing resourceType".into()))?;
        let rt = ResourceType::parse(&rt_name).ok_or_else(|| {
            Rejected(format!(
                "unsupported resource type {:?} (supported: {})",
                rt_name.chars().take(64).collect::<String>(),
                ResourceType::ALL.map(ResourceType::as_str).join(", ")
            ))
        })?;
        let id = string_member("id")?.ok_or_else(|| Rejected("missing id".into()))?;
        if !is_valid_id(&id) {
            return Err(Rejected("id must match [A-Za-z0-9\\-\\.]{1,64}".into()));
        }
        let (meta_span, meta_exists, meta_rest) = match members.iter().find(|(k, _)| k == "meta") {
            Some((_, raw)) => {
                let Members(m) = serde_json::from_str(raw.get())
                    .map_err(|_| Rejected("meta must be an object".into()))?;
                let rest = m
                    .into_iter()
                    .filter(|(k, _)| k != "versionId" && k != "lastUpdated")
                    .map(|(k, v)| (k, offset_in(text, v)))
                    .collect();
                (offset_in(text, raw), true, rest)
            }
            None => {
                // Right after the `id` value: FHIR's canonical order is resourceType, id, meta.
                let (_, id_raw) = members
                    .iter()
                    .find(|(k, _)| k == "id")
                    .ok_or_else(|| Rejected("missing id".into()))?;
                let (_, end) = offset_in(text, id_raw);
                ((end, end), false, Vec::new())
            }
        };
        if meta_span.1 > text.len() || !text.is_char_boundary(meta_span.0) {
            return Err(Rejected("unexpected JSON layout".into()));
        }
        if meta_rest.iter().any(|(_, (a, b))| {
            *b > text.len() || !text.is_char_boundary(*a) || !text.is_char_boundary(*b)
        }) {
            return Err(Rejected("unexpected JSON layout".into()));
        }
        let index = extract_members(rt, &id, &members).map_err(|e| Rejected(e.0))?;
        Ok(Parts {
            rt,
            id,
            meta_span,
            meta_exists,
            meta_rest,
            index,
        })
    }

    /// The text to store: the received text with `meta.versionId` and `meta.lastUpdated` set.
    pub fn render(&self, version_id: i64, last_updated: &str) -> String {
        let mut meta = String::with_capacity(
            64 + self
                .meta_rest
                .iter()
                .map(|(k, (a, b))| k.len() + b - a + 8)
                .sum::<usize>(),
        );
        meta.push_str("{\"versionId\":\"");
        meta.push_str(&version_id.to_string());
        meta.push_str("\",\"lastUpdated\":\"");
        meta.push_str(last_updated);
        meta.push('"');
        for (k, (a, b)) in &self.meta_rest {
            meta.push(',');
            meta.push_str(&serde_json::Value::String(k.clone()).to_string());
            meta.push(':');
            meta.push_str(self.text.get(*a..*b).unwrap_or("null"));
        }
        meta.push('}');
        let (start, end) = self.meta_span;
        let mut out = String::with_capacity(self.text.len() + meta.len() + 10);
        out.push_str(&self.text[..start]);
        if !self.meta_exists {
            out.push_str(",\"meta\":");
        }
        out.push_str(&meta);
        out.push_str(&self.text[end..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_spliced_and_everything_else_kept() {
        let text = "{\n  \"resourceType\" : \"Patient\",\n  \"id\": \"p1\",\n  \"meta\": {\"lastUpdated\": \"x\", \"profile\": [ \"a\" ], \"versionId\": \"9\"},\n  \"x\": 12.50, \"y\": 1e2, \"z\": -0.0\n}";
        let p = Prepared::parse(text).unwrap();
        assert_eq!(p.rt, ResourceType::Patient);
        assert_eq!(p.id, "p1");
        let out = p.render(3, "2024-01-01T00:00:00.000Z");
        assert_eq!(
            out,
            "{\n  \"resourceType\" : \"Patient\",\n  \"id\": \"p1\",\n  \"meta\": {\"versionId\":\"3\",\"lastUpdated\":\"2024-01-01T00:00:00.000Z\",\"profile\":[ \"a\" ]},\n  \"x\": 12.50, \"y\": 1e2, \"z\": -0.0\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["meta"]["versionId"], "3");
    }

    #[test]
    fn meta_is_inserted_after_id() {
        let text = r#"{"resourceType":"Organization","id":"o1","name":"A","v":1.10}"#;
        let out = Prepared::parse(text).unwrap().render(1, "T");
        assert_eq!(
            out,
            r#"{"resourceType":"Organization","id":"o1","meta":{"versionId":"1","lastUpdated":"T"},"name":"A","v":1.10}"#
        );
        let text = r#"{"id":"o1","resourceType":"Organization"}"#;
        let out = Prepared::parse(text).unwrap().render(2, "T");
        assert_eq!(
            out,
            r#"{"id":"o1","meta":{"versionId":"2","lastUpdated":"T"},"resourceType":"Organization"}"#
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"resourceType":"Claim","id":"a"}"#,
            r#"{"resourceType":"Patient"}"#,
            r#"{"resourceType":"Patient","id":"a b"}"#,
            r#"{"resourceType":"Patient","id":7}"#,
            r#"{"resourceType":"Patient","id":"a","meta":[]}"#,
            r#"{"resourceType":"Patient","id":"a","id":"b"}"#,
            r#"{"resourceType":"Patient","id":"a"} trailing"#,
            r#"{"resourceType":"Patient","id":"a","birthDate":"yesterday"}"#,
        ] {
            assert!(Prepared::parse(bad).is_err(), "{bad:?}");
        }
    }
}
