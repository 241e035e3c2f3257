//! Search request parsing, pure: the query pairs of `GET {type}?...` or `POST {type}/_search` become the
//! store's parameters, `_include`s, page size and cursor, with FHIR's strict/lenient handling of what we
//! do not support (FHIR R4 §3.1.1.2, `Prefer: handling`).

use bluegate_store::fhir::{
    self, parse_include, parse_param, IncludeSpec, ParamError, ParsedParam, ResourceType,
};

/// Most query parameters in one search.
pub const MAX_PARAMS: usize = 64;
/// Most `_include`s in one search.
pub const MAX_INCLUDES: usize = 16;
/// Our paging cursor parameter (opaque to clients; it only positions the page, every restriction is
/// re-derived from the token on each request).
pub const CURSOR_PARAM: &str = "_cursor";

/// What to do with parameters we do not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Strict,
    Lenient,
}

/// `Prefer: handling=strict|lenient` (lenient when absent or unrecognised, as FHIR allows).
pub fn handling(prefer: Option<&str>) -> Handling {
    let strict = prefer.is_some_and(|p| {
        p.split([',', ';'])
            .any(|part| part.trim().eq_ignore_ascii_case("handling=strict"))
    });
    if strict {
        Handling::Strict
    } else {
        Handling::Lenient
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{0}")]
    Param(#[from] ParamError),
    #[error("invalid _count: expected a number from 0 to {max}", max = fhir::MAX_COUNT)]
    Count,
    #[error("too many search parameters (at most {MAX_PARAMS})")]
    TooManyParams,
    #[error("too many _include parameters (at most {MAX_INCLUDES})")]
    TooManyIncludes,
    #[error("unsupported search parameter {0:?}")]
    Unsupported(String),
    #[error("invalid {0} value")]
    Invalid(&'static str),
    #[error("_include source type {0} does not match the searched type")]
    IncludeSource(String),
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub params: Vec<ParsedParam>,
    /// The (name, value) pairs that were used, for the Bundle's `self` and `next` links.
    pub used: Vec<(String, String)>,
    pub includes: Vec<IncludeSpec>,
    /// Page size (already clamped to the store's maximum).
    pub count: u32,
    /// `_count=0` or `_summary=count`: only the total is wanted.
    pub summary_count: bool,
    pub cursor: Option<String>,
    /// Whether to report `Bundle.total` (`_total=none` turns it off).
    pub total: bool,
    /// Parameters ignored under lenient handling.
    pub ignored: Vec<String>,
}

/// Parses a search on `rt`. Unknown parameters and modifiers are ignored (lenient) or refused (strict);
/// malformed values are always refused.
pub fn parse_search(
    rt: ResourceType,
    pairs: &[(String, String)],
    handling: Handling,
) -> Result<SearchRequest, QueryError> {
    if pairs.len() > MAX_PARAMS {
        return Err(QueryError::TooManyParams);
    }
    let mut req = SearchRequest {
        params: Vec::new(),
        used: Vec::new(),
        includes: Vec::new(),
        count: fhir::DEFAULT_COUNT,
        summary_count: false,
        cursor: None,
        total: true,
        ignored: Vec::new(),
    };
    let ignore = |name: &str, req: &mut SearchRequest| -> Result<(), QueryError> {
        match handling {
            Handling::Strict => Err(QueryError::Unsupported(clip(name))),
            Handling::Lenient => {
                req.ignored.push(clip(name));
                Ok(())
            }
        }
    };
    for (name, value) in pairs {
        match name.as_str() {
            // Formatting parameters: checked by the caller (`_format`) or harmless.
            "_format" | "_pretty" => {}
            "_count" => {
                let n: i64 = value.trim().parse().map_err(|_| QueryError::Count)?;
                if n < 0 {
                    return Err(QueryError::Count);
                }
                if n == 0 {
                    req.summary_count = true;
                } else {
                    req.count = n.min(i64::from(fhir::MAX_COUNT)) as u32;
                }
            }
            "_summary" => match value.as_str() {
                "count" => req.summary_count = true,
                "false" => {}
                _ => ignore(name, &mut req)?,
            },
            "_total" => match value.as_str() {
                "none" => req.total = false,
                "estimate" | "accurate" => req.total = true,
                _ => return Err(QueryError::Invalid("_total")),
            },
            CURSOR_PARAM => {
                if value.is_empty() || value.len() > 200 {
                    return Err(QueryError::Invalid(CURSOR_PARAM));
                }
                req.cursor = Some(value.clone());
            }
            "_include" | "_include:iterate" | "_include:recurse" => {
                if req.includes.len() >= MAX_INCLUDES {
                    return Err(QueryError::TooManyIncludes);
                }
                let iterate = name != "_include";
                let spec = parse_include(value, iterate)?;
                // A plain _include names the searched type; iterate may start from included types.
                if !iterate && spec.source != rt {
                    return Err(QueryError::IncludeSource(spec.source.to_string()));
                }
                req.includes.push(spec);
                req.used.push((name.clone(), value.clone()));
            }
            _ => match parse_param(rt, name, value) {
                Ok(p) => {
                    req.params.push(p);
                    req.used.push((name.clone(), value.clone()));
                }
                Err(
                    ParamError::UnknownParameter { .. } | ParamError::UnsupportedModifier { .. },
                ) => ignore(name, &mut req)?,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Ok(req)
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `_format` and `Accept`: only JSON is served. `None` when acceptable; else the reason.
pub fn unacceptable_format(format: Option<&str>, accept: Option<&str>) -> Option<&'static str> {
    if let Some(f) = format {
        let f = f.trim().to_ascii_lowercase();
        let json = matches!(
            f.as_str(),
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
        );
        return (!json).then_some("only JSON is supported (_format=json)");
    }
    let accept = accept?;
    let ok = accept.split(',').any(|part| {
        let mt = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mt.is_empty()
            || mt == "*/*"
            || mt == "application/*"
            || mt.ends_with("/json")
            || mt.ends_with("+json")
    });
    (!ok).then_some("only application/fhir+json (or application/json) is supported")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn eob(list: &[(&str, &str)], h: Handling) -> Result<SearchRequest, QueryError> {
        parse_search(ResourceType::ExplanationOfBenefit, &pairs(list), h)
    }

    #[test]
    fn parses_parameters_includes_and_paging() {
        let r = eob(
            &[
                ("patient", "Patient/p1"),
                ("service-date", "ge2020-01-01"),
                ("_include", "ExplanationOfBenefit:*"),
                ("_include:iterate", "Coverage:payor"),
                ("_count", "10"),
                ("_cursor", "123:abc"),
                ("_format", "json"),
            ],
            Handling::Strict,
        )
        .unwrap();
        assert_eq!(r.params.len(), 2);
        assert_eq!(r.includes.len(), 2);
        assert!(r.includes[1].iterate);
        assert_eq!(r.count, 10);
        assert_eq!(r.cursor.as_deref(), Some("123:abc"));
        assert_eq!(r.used.len(), 4);
        assert!(r.total);
    }

    #[test]
    fn count_is_checked_and_clamped() {
        assert_eq!(
            eob(&[("_count", "-1")], Handling::Lenient),
            Err(QueryError::Count)
        );
        assert_eq!(
            eob(&[("_count", "x")], Handling::Lenient),
            Err(QueryError::Count)
        );
        assert_eq!(
            eob(&[("_count", "1000000000")], Handling::Lenient)
                .unwrap()
                .count,
            fhir::MAX_COUNT
        );
        assert!(
            eob(&[("_count", "0")], Handling::Lenient)
                .unwrap()
                .summary_count
        );
        assert_eq!(
            eob(&[("_count", "99999999999999999999999")], Handling::Lenient),
            Err(QueryError::Count)
        );
    }

    #[test]
    fn unknown_parameters_follow_handling() {
        let r = eob(&[("foo", "bar"), ("_sort", "date")], Handling::Lenient).unwrap();
        assert_eq!(r.ignored, vec!["foo", "_sort"]);
        assert!(r.used.is_empty());
        assert_eq!(
            eob(&[("foo", "bar")], Handling::Strict),
            Err(QueryError::Unsupported("foo".into()))
        );
        assert!(eob(&[("patient:missing", "true")], Handling::Strict).is_err());
        // Malformed values are refused whatever the handling.
        assert!(matches!(
            eob(&[("service-date", "garbage")], Handling::Lenient),
            Err(QueryError::Param(_))
        ));
        assert!(matches!(
            eob(&[("service-date", "xx2020")], Handling::Lenient),
            Err(QueryError::Param(_))
        ));
        let long = "a".repeat(5000);
        assert!(matches!(
            eob(&[("_id", &long)], Handling::Lenient),
            Err(QueryError::Param(_))
        ));
    }

    #[test]
    fn includes_must_start_from_the_searched_type() {
        assert!(matches!(
            eob(&[("_include", "Coverage:payor")], Handling::Lenient),
            Err(QueryError::IncludeSource(_))
        ));
        assert!(eob(&[("_include", "Nope:x")], Handling::Lenient).is_err());
        let many: Vec<(&str, &str)> = (0..17)
            .map(|_| ("_include", "ExplanationOfBenefit:patient"))
            .collect();
        assert_eq!(
            eob(&many, Handling::Lenient),
            Err(QueryError::TooManyIncludes)
        );
        let too_many: Vec<(&str, &str)> = (0..65).map(|_| ("foo", "bar")).collect();
        assert_eq!(
            eob(&too_many, Handling::Lenient),
            Err(QueryError::TooManyParams)
        );
    }

    #[test]
    fn prefer_header_and_formats() {
        assert_eq!(handling(Some("handling=strict")), Handling::Strict);
        assert_eq!(
            handling(Some("return=minimal, handling=strict")),
            Handling::Strict
        );
        assert_eq!(handling(Some("handling=lenient")), Handling::Lenient);
        assert_eq!(handling(None), Handling::Lenient);
        assert!(unacceptable_format(Some("json"), None).is_none());
        assert!(unacceptable_format(Some("xml"), None).is_some());
        assert!(unacceptable_format(None, Some("application/fhir+json")).is_none());
        assert!(unacceptable_format(None, Some("application/json, text/plain")).is_none());
        assert!(unacceptable_format(None, Some("*/*")).is_none());
        assert!(unacceptable_format(None, Some("application/fhir+xml")).is_some());
        assert!(unacceptable_format(None, None).is_none());
    }
}
