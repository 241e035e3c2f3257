//! Search parameters, pure (no database): which parameters each resource type supports, how their values
//! are extracted from a resource (per the CARIN BB 2.0.0 / FHIR R4 `SearchParameter.expression`s), and
//! how query values are parsed (`_id=a,b`, `type=system|code`, `service-date=ge2020-01`, ...).
//!
//! Dates are handled as inclusive ranges of unix milliseconds: `2019` is
//! `[2019-01-01T00:00:00.000Z, 2019-12-31T23:59:59.999Z]`, a `Period` is `[start.low, end.high]` (an
//! open end is unbounded). Dates without a time zone are taken as UTC.

use std::fmt;

use serde::de::{value::MapDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// Longest accepted raw value of one search parameter (all of its comma-separated alternatives).
pub const MAX_VALUE_LEN: usize = 2048;
/// Most comma-separated alternatives (OR) in one parameter.
pub const MAX_OR_VALUES: usize = 100;
/// Lowest / highest instants the date index uses for open period ends (0001-01-01 and 9999-12-31).
pub const MIN_INSTANT_MS: i64 = -62_135_596_800_000;
pub const MAX_INSTANT_MS: i64 = 253_402_300_799_999;

/// A malformed or unsupported search parameter. The server answers 400.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("unsupported resource type {0:?}")]
    UnsupportedResourceType(String),
    #[error("unknown search parameter {param:?} for {resource_type}")]
    UnknownParameter {
        resource_type: &'static str,
        param: String,
    },
    #[error("unsupported modifier {modifier:?} on search parameter {param}")]
    UnsupportedModifier { param: String, modifier: String },
    #[error("invalid value for search parameter {param}: {reason}")]
    InvalidValue { param: String, reason: String },
    #[error("invalid _include {0:?}")]
    InvalidInclude(String),
}

/// Shortens user-supplied text echoed in error messages.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn invalid(param: &str, reason: impl Into<String>) -> ParamError {
    ParamError::InvalidValue {
        param: clip(param),
        reason: reason.into(),
    }
}

/// The resource types this store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    ExplanationOfBenefit,
    Coverage,
    Patient,
    Organization,
    Practitioner,
    PractitionerRole,
    RelatedPerson,
    Location,
}

impl ResourceType {
    pub const ALL: [ResourceType; 8] = [
        ResourceType::ExplanationOfBenefit,
        ResourceType::Coverage,
        ResourceType::Patient,
        ResourceType::Organization,
        ResourceType::Practitioner,
        ResourceType::PractitionerRole,
        ResourceType::RelatedPerson,
        ResourceType::Location,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::ExplanationOfBenefit => "ExplanationOfBenefit",
            ResourceType::Coverage => "Coverage",
            ResourceType::Patient => "Patient",
            ResourceType::Organization => "Organization",
            ResourceType::Practitioner => "Practitioner",
            ResourceType::PractitionerRole => "PractitionerRole",
            ResourceType::RelatedPerson => "RelatedPerson",
            ResourceType::Location => "Location",
        }
    }

    /// `None` for any type this store does not keep.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The search parameters supported for this type (for the CapabilityStatement too).
    pub fn search_params(self) -> &'static [ParamDef] {
        match self {
            ResourceType::ExplanationOfBenefit => EOB_PARAMS,
            ResourceType::Coverage => COVERAGE_PARAMS,
            ResourceType::Patient => PATIENT_PARAMS,
            ResourceType::Organization => ORGANIZATION_PARAMS,
            ResourceType::Practitioner => PRACTITIONER_PARAMS,
            ResourceType::PractitionerRole => PRACTITIONER_ROLE_PARAMS,
            ResourceType::RelatedPerson => RELATED_PERSON_PARAMS,
            ResourceType::Location => LOCATION_PARAMS,
        }
    }

    /// The definition of search parameter `name`, if supported.
    pub fn param(self, name: &str) -> Option<&'static ParamDef> {
        self.search_params().iter().find(|p| p.name == name)
    }

    /// [`ParamDef::code`] of parameter `name` (a name the extractor indexes under this type).
    pub fn param_code(self, name: &str) -> Result<i64, ExtractError> {
        self.param(name)
            .map(|d| d.code)
            .ok_or_else(|| ExtractError(format!("{self}: no search parameter {name:?}")))
    }

    /// Every parameter that has index rows, as (code, type, name): what `fhir_params` must hold.
    pub fn indexed_params() -> impl Iterator<Item = (i64, ResourceType, &'static str)> {
        Self::ALL.into_iter().flat_map(|rt| {
            rt.search_params()
                .iter()
                .filter(|d| !matches!(d.kind, ParamKind::Id | ParamKind::LastUpdated))
                .map(move |d| (d.code, rt, d.name))
        })
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a parameter is indexed and matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// `_id`: the resource id (primary key).
    Id,
    /// `_lastUpdated`: the stored `meta.lastUpdated` column.
    LastUpdated,
    Token,
    Reference,
    Date,
    String,
}

/// One supported search parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamDef {
    /// The parameter's number in the index tables (`fhir_params` in the database): unique across
    /// types, never reused, so index rows need no resource type or name. Type `t` (1-based, in the
    /// order of [`ResourceType::ALL`]) numbers its parameters `100 t + n`.
    pub code: i64,
    pub name: &'static str,
    pub kind: ParamKind,
    /// Reference targets (resource type names); empty for other kinds.
    pub targets: &'static [&'static str],
}

const fn p(code: i64, name: &'static str, kind: ParamKind) -> ParamDef {
    ParamDef {
        code,
        name,
        kind,
        targets: &[],
    }
}

const fn r(code: i64, name: &'static str, targets: &'static [&'static str]) -> ParamDef {
    ParamDef {
        code,
        name,
        kind: ParamKind::Reference,
        targets,
    }
}

const PROVIDER_TARGETS: &[&str] = &["Practitioner", "Organization", "PractitionerRole"];
/// `_id` and `_lastUpdated` of type `t` (they have no index rows, but a code all the same).
const fn common(t: i64) -> [ParamDef; 2] {
    [
        p(100 * t, "_id", ParamKind::Id),
        p(100 * t + 1, "_lastUpdated", ParamKind::LastUpdated),
    ]
}

static EOB_PARAMS: &[ParamDef] = &[
    common(1)[0],
    common(1)[1],
    r(102, "patient", &["Patient"]),
    p(103, "type", ParamKind::Token),
    p(104, "identifier", ParamKind::Token),
    p(105, "service-date", ParamKind::Date),
    p(106, "service-start-date", ParamKind::Date),
    p(107, "billable-period-start", ParamKind::Date),
    r(108, "provider", PROVIDER_TARGETS),
    r(109, "care-team", PROVIDER_TARGETS),
    r(110, "coverage", &["Coverage"]),
    r(111, "insurer", &["Organization"]),
    r(
        112,
        "payee",
        &[
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "Patient",
            "RelatedPerson",
        ],
    ),
];
static COVERAGE_PARAMS: &[ParamDef] = &[
    common(2)[0],
    common(2)[1],
    r(202, "patient", &["Patient"]),
    r(203, "beneficiary", &["Patient"]),
    r(204, "subscriber", &["Patient", "RelatedPerson"]),
    r(205, "payor", &["Organization", "Patient", "RelatedPerson"]),
    p(206, "identifier", ParamKind::Token),
];
static PATIENT_PARAMS: &[ParamDef] = &[
    common(3)[0],
    common(3)[1],
    p(302, "identifier", ParamKind::Token),
    p(303, "name", ParamKind::String),
    p(304, "family", ParamKind::String),
    p(305, "given", ParamKind::String),
    p(306, "birthdate", ParamKind::Date),
    p(307, "gender", ParamKind::Token),
];
static ORGANIZATION_PARAMS: &[ParamDef] = &[
    common(4)[0],
    common(4)[1],
    p(402, "identifier", ParamKind::Token),
    p(403, "name", ParamKind::String),
];
static PRACTITIONER_PARAMS: &[ParamDef] = &[
    common(5)[0],
    common(5)[1],
    p(502, "identifier", ParamKind::Token),
    p(503, "name", ParamKind::String),
    p(504, "family", ParamKind::String),
    p(505, "given", ParamKind::String),
];
static PRACTITIONER_ROLE_PARAMS: &[ParamDef] = &[
    common(6)[0],
    common(6)[1],
    p(602, "identifier", ParamKind::Token),
    r(603, "practitioner", &["Practitioner"]),
    r(604, "organization", &["Organization"]),
];
static RELATED_PERSON_PARAMS: &[ParamDef] = &[
    common(7)[0],
    common(7)[1],
    p(702, "identifier", ParamKind::Token),
    p(703, "name", ParamKind::String),
    r(704, "patient", &["Patient"]),
];
static LOCATION_PARAMS: &[ParamDef] = &[
    common(8)[0],
    common(8)[1],
    p(802, "identifier", ParamKind::Token),
    p(803, "name", ParamKind::String),
];

// ---------------------------------------------------------------------------------------------------
// Query values
// ---------------------------------------------------------------------------------------------------

/// A date comparator (FHIR R4 §3.1.1.4.3). No prefix means `eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl DatePrefix {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => DatePrefix::Eq,
            "ne" => DatePrefix::Ne,
            "gt" => DatePrefix::Gt,
            "lt" => DatePrefix::Lt,
            "ge" => DatePrefix::Ge,
            "le" => DatePrefix::Le,
            "sa" => DatePrefix::Sa,
            "eb" => DatePrefix::Eb,
            "ap" => DatePrefix::Ap,
            _ => return None,
        })
    }
}

/// A token query value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenQuery {
    /// `None`: any system (`code`); `Some("")`: no system (`|code`); `Some(s)`: `s|code` or `s|`.
    pub system: Option<String>,
    /// `None` for `system|` (any code in that system).
    pub code: Option<String>,
}

/// One alternative of a parameter's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    Id(String),
    Token(TokenQuery),
    /// The `Type/id` targets that match (several when a bare id is given for a multi-type parameter).
    Reference(Vec<String>),
    /// An inclusive range of unix milliseconds and its comparator.
    Date {
        prefix: DatePrefix,
        low: i64,
        high: i64,
    },
    /// A normalized (lower-case, trimmed, single-spaced) prefix.
    String(String),
}

/// One parsed search parameter: its values are alternatives (OR). A query's parameters are ANDed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedParam {
    /// [`ParamDef::code`].
    pub code: i64,
    pub name: &'static str,
    pub kind: ParamKind,
    pub values: Vec<ParamValue>,
}

/// Splits `s` on `sep` not preceded by a backslash; escapes are kept.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Removes FHIR search escapes (`\,` `\|` `\$` `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Lower-cases, trims and collapses whitespace (the form string values are indexed and searched in).
pub fn normalize_string(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses one query parameter of a search on `resource_type`. `name` may carry a modifier
/// (`provider:Organization`); `value` is the raw (URL-decoded) value with commas meaning OR.
pub fn parse_param(
    resource_type: ResourceType,
    name: &str,
    value: &str,
) -> Result<ParsedParam, ParamError> {
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let def = resource_type
        .param(base)
        .ok_or_else(|| ParamError::UnknownParameter {
            resource_type: resource_type.as_str(),
            param: clip(name),
        })?;
    let bad_modifier = |m: &str| ParamError::UnsupportedModifier {
        param: def.name.to_owned(),
        modifier: clip(m),
    };
    // Reference parameters accept a `:Type` modifier restricting the target type; nothing else does.
    let type_modifier = match (modifier, def.kind) {
        (None, _) => None,
        (Some(m), ParamKind::Reference) if def.targets.contains(&m) => Some(m),
        (Some(m), _) => return Err(bad_modifier(m)),
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(def.name, "value too long"));
    }
    let parts = split_unescaped(value, ',');
    if parts.len() > MAX_OR_VALUES {
        return Err(invalid(def.name, "too many alternatives"));
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in parts {
        if part.is_empty() {
            return Err(invalid(def.name, "empty value"));
        }
        values.push(match def.kind {
            ParamKind::Id => {
                let id = unescape(part);
                if !is_valid_id(&id) {
                    return Err(invalid(def.name, "not a valid resource id"));
                }
                ParamValue::Id(id)
            }
            ParamKind::Token => ParamValue::Token(parse_token(def.name, part)?),
            ParamKind::Reference => {
                ParamValue::Reference(parse_reference_query(def, type_modifier, &unescape(part))?)
            }
            ParamKind::Date | ParamKind::LastUpdated => parse_date_query(def.name, part)?,
            ParamKind::String => {
                let v = normalize_string(&unescape(part));
                if v.is_empty() {
                    return Err(invalid(def.name, "empty value"));
                }
                ParamValue::String(v)
            }
        });
    }
    Ok(ParsedParam {
        code: def.code,
        name: def.name,
        kind: def.kind,
        values,
    })
}

fn parse_token(param: &str, part: &str) -> Result<TokenQuery, ParamError> {
    let pieces = split_unescaped(part, '|');
    let q = match pieces.as_slice() {
        [code] => TokenQuery {
            system: None,
            code: Some(unescape(code)),
        },
        [system, code] => TokenQuery {
            system: Some(unescape(system)),
            code: (!code.is_empty()).then(|| unescape(code)),
        },
        _ => {
            return Err(invalid(
                param,
                "a token is code, system|code, |code or system|",
            ))
        }
    };
    if q.code.is_none() && q.system.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(param, "a token needs a system or a code"));
    }
    Ok(q)
}

fn parse_reference_query(
    def: &ParamDef,
    type_modifier: Option<&str>,
    v: &str,
) -> Result<Vec<String>, ParamError> {
    let (ty, id) = match normalize_reference(v) {
        Some((ty, id)) => (Some(ty), id),
        None if is_valid_id(v) => (None, v.to_owned()),
        None => return Err(invalid(def.name, "expected Type/id or id")),
    };
    match (ty, type_modifier) {
        (Some(t), Some(m)) if t != m => {
            Err(invalid(def.name, "reference type contradicts modifier"))
        }
        (Some(t), _) => {
            if def.targets.contains(&t.as_str()) {
                Ok(vec![format!("{t}/{id}")])
            } else {
                Err(invalid(
                    def.name,
                    "reference to a type this parameter cannot target",
                ))
            }
        }
        (None, Some(m)) => Ok(vec![format!("{m}/{id}")]),
        (None, None) => Ok(def.targets.iter().map(|t| format!("{t}/{id}")).collect()),
    }
}

fn parse_date_query(param: &str, part: &str) -> Result<ParamValue, ParamError> {
    let (prefix, rest) =
        if part.len() >= 2 && part.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic) {
            let prefix = DatePrefix::parse(&part[..2])
                .ok_or_else(|| invalid(param, "unknown date prefix"))?;
            (prefix, &part[2..])
        } else {
            (DatePrefix::Eq, part)
        };
    let (low, high) = parse_date_range(rest).ok_or_else(|| {
        invalid(
            param,
            "expected [prefix]YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.f]][Z|±hh:mm]",
        )
    })?;
    Ok(ParamValue::Date { prefix, low, high })
}

// ---------------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------------

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn date_ms(y: i32, m: u8, d: u8) -> Option<i64> {
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// Parses a FHIR date, dateTime or instant, possibly partial (`2019`, `2019-07`, `2019-07-02`,
/// `2019-07-02T10:00`, `...:00`, `...:00.123`, each with an optional `Z`/`±hh:mm`), into the inclusive
/// range of unix milliseconds it denotes. `None` if malformed.
pub fn parse_date_range(s: &str) -> Option<(i64, i64)> {
    if !s.is_ascii() || s.len() < 4 {
        return None;
    }
    let year = i32::try_from(digits(s.get(0..4)?)?).ok()?;
    if year < 1 {
        return None;
    }
    if s.len() == 4 {
        let low = date_ms(year, 1, 1)?;
        let high = if year == 9999 {
            MAX_INSTANT_MS
        } else {
            date_ms(year + 1, 1, 1)? - 1
        };
        return Some((low, high));
    }
    if s.as_bytes()[4] != b'-' || s.len() < 7 {
        return None;
    }
    let month = u8::try_from(digits(s.get(5..7)?)?).ok()?;
    if s.len() == 7 {
        let low = date_ms(year, month, 1)?;
        let high = if month == 12 {
            if year == 9999 {
                MAX_INSTANT_MS
            } else {
                date_ms(year + 1, 1, 1)? - 1
            }
        } else {
            date_ms(year, month + 1, 1)? - 1
        };
        return Some((low, high));
    }
    if s.as_bytes()[7] != b'-' || s.len() < 10 {
        return None;
    }
    let day = u8::try_from(digits(s.get(8..10)?)?).ok()?;
    let day_low = date_ms(year, month, day)?;
    if s.len() == 10 {
        return Some((day_low, day_low + 86_400_000 - 1));
    }
    if s.as_bytes()[10] != b'T' {
        return None;
    }
    let rest = &s[11..];
    // Split off the zone: `Z`, or `+hh:mm` / `-hh:mm` at the end.
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0i32)
    } else if rest.len() >= 6 && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-') {
        let (c, z) = rest.split_at(rest.len() - 6);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        if z.as_bytes()[3] != b':' {
            return None;
        }
        let hh = i32::try_from(digits(&z[1..3])?).ok()?;
        let mm = i32::try_from(digits(&z[4..6])?).ok()?;
        if hh > 14 || mm > 59 {
            return None;
        }
        (c, sign * (hh * 3600 + mm * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    let (h, mi, sec, width) = match fields.as_slice() {
        [h, m] if frac.is_none() => (*h, *m, "00", 60_000i64),
        [h, m, s] => (*h, *m, *s, 1_000i64),
        _ => return None,
    };
    if h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    let time = Time::from_hms(
        u8::try_from(digits(h)?).ok()?,
        u8::try_from(digits(mi)?).ok()?,
        u8::try_from(digits(sec)?).ok()?,
    )
    .ok()?;
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_secs).ok()?;
    let base = PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .unix_timestamp()
        * 1000;
    let (extra, width) = match frac {
        None => (0, width),
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ms_digits = &f[..f.len().min(3)];
            let v = i64::from(digits(ms_digits)?);
            match ms_digits.len() {
                1 => (v * 100, 100),
                2 => (v * 10, 10),
                _ => (v, 1),
            }
        }
    };
    Some((base + extra, base + extra + width - 1))
}

/// Formats unix milliseconds as a FHIR instant, `YYYY-MM-DDThh:mm:ss.sssZ`.
pub fn format_instant_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            millis
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------------

/// Normalizes a reference to (`Type`, `id`): `Patient/1`, `Patient/1/_history/2`,
/// `https://host/fhir/Patient/1[/_history/2]`. `None` for contained (`#x`), `urn:` and other
/// references that do not name a resource of a known type by id.
pub fn normalize_reference(reference: &str) -> Option<(String, String)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let (ty, id) = if n >= 4 && segs[n - 2] == "_history" {
        (segs[n - 4], segs[n - 3])
    } else if n >= 2 {
        (segs[n - 2], segs[n - 1])
    } else {
        return None;
    };
    if n > 2 && !(reference.starts_with("http://") || reference.starts_with("https://")) {
        // Relative references are exactly `Type/id` (optionally versioned).
        if !(n == 4 && segs[2] == "_history") {
            return None;
        }
    }
    let known = ResourceType::parse(ty).is_some()
        || (ty.starts_with(|c: char| c.is_ascii_uppercase())
            && ty.bytes().all(|b| b.is_ascii_alphabetic()));
    (known && is_valid_id(id)).then(|| (ty.to_owned(), id.to_owned()))
}

// ---------------------------------------------------------------------------------------------------
// _include
// ---------------------------------------------------------------------------------------------------

/// One `_include` (or `_include:iterate`): `Source:param[:TargetType]`, `param` may be `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncludeSpec {
    pub source: ResourceType,
    /// Reference parameter names of `source` to follow (all of them for `*`).
    pub params: Vec<&'static str>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// Parses an `_include` value (`ExplanationOfBenefit:coverage`, `ExplanationOfBenefit:*`,
/// `ExplanationOfBenefit:provider:Organization`); `iterate` for `_include:iterate`.
pub fn parse_include(value: &str, iterate: bool) -> Result<IncludeSpec, ParamError> {
    let bad = || ParamError::InvalidInclude(clip(value));
    let mut it = value.split(':');
    let source = it.next().and_then(ResourceType::parse).ok_or_else(bad)?;
    let param = it.next().ok_or_else(bad)?;
    let target_type = it.next().map(str::to_owned);
    if it.next().is_some() {
        return Err(bad());
    }
    let refs = source
        .search_params()
        .iter()
        .filter(|d| d.kind == ParamKind::Reference);
    let params: Vec<&'static str> = if param == "*" {
        refs.map(|d| d.name).collect()
    } else {
        let def = refs.into_iter().find(|d| d.name == param).ok_or_else(bad)?;
        if let Some(t) = &target_type {
            if !def.targets.contains(&t.as_str()) {
                return Err(bad());
            }
        }
        vec![def.name]
    };
    Ok(IncludeSpec {
        source,
        params,
        target_type,
        iterate,
    })
}

// ---------------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------------

/// The index entries of one resource: what each search parameter finds in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexEntries {
    /// (param, system or "", code)
    pub tokens: Vec<(&'static str, String, String)>,
    /// (param, "Type/id")
    pub references: Vec<(&'static str, String)>,
    /// (param, low ms, high ms), inclusive
    pub dates: Vec<(&'static str, i64, i64)>,
    /// (param, normalized value)
    pub strings: Vec<(&'static str, String)>,
    /// Ids of the patients whose compartment holds the resource.
    pub patients: Vec<String>,
}

impl IndexEntries {
    fn dedup(&mut self) {
        self.tokens.sort();
        self.tokens.dedup();
        self.references.sort();
        self.references.dedup();
        self.dates.sort();
        self.dates.dedup();
        self.strings.sort();
        self.strings.dedup();
        self.patients.sort();
        self.patients.dedup();
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Coding {
    system: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CodeableConcept {
    coding: Vec<Coding>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Identifier {
    system: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Reference {
    reference: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Period {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HumanName {
    text: Option<String>,
    family: Option<String>,
    given: Vec<String>,
    prefix: Vec<String>,
    suffix: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EobItem {
    serviced_date: Option<String>,
    serviced_period: Option<Period>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CareTeam {
    provider: Option<Reference>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Insurance {
    coverage: Option<Reference>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Payee {
    party: Option<Reference>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Eob {
    identifier: Vec<Identifier>,
    #[serde(rename = "type")]
    type_: Option<CodeableConcept>,
    patient: Option<Reference>,
    billable_period: Option<Period>,
    item: Vec<EobItem>,
    provider: Option<Reference>,
    care_team: Vec<CareTeam>,
    insurance: Vec<Insurance>,
    insurer: Option<Reference>,
    payee: Option<Payee>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Coverage {
    identifier: Vec<Identifier>,
    beneficiary: Option<Reference>,
    subscriber: Option<Reference>,
    payor: Vec<Reference>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Person {
    identifier: Vec<Identifier>,
    name: Vec<HumanName>,
    birth_date: Option<String>,
    gender: Option<String>,
    patient: Option<Reference>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    identifier: Vec<Identifier>,
    name: Option<String>,
    alias: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Role {
    identifier: Vec<Identifier>,
    practitioner: Option<Reference>,
    organization: Option<Reference>,
}

/// Why a resource's content could not be indexed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ExtractError(pub String);

struct Extractor {
    e: IndexEntries,
}

impl Extractor {
    fn identifiers(&mut self, ids: &[Identifier]) {
        for i in ids {
            if let Some(v) = &i.value {
                self.e.tokens.push((
                    "identifier",
                    i.system.clone().unwrap_or_default(),
                    v.clone(),
                ));
            }
        }
    }

    fn reference(
        &mut self,
        param: &'static str,
        r: Option<&Reference>,
    ) -> Option<(String, String)> {
        let (ty, id) = normalize_reference(r?.reference.as_deref()?)?;
        self.e.references.push((param, format!("{ty}/{id}")));
        Some((ty, id))
    }

    /// Indexes a reference; if it names a Patient, the resource joins that patient's compartment.
    fn patient_reference(&mut self, param: &'static str, r: Option<&Reference>) {
        if let Some((ty, id)) = self.reference(param, r) {
            if ty == "Patient" {
                self.e.patients.push(id);
            }
        }
    }

    fn date(&mut self, param: &'static str, s: Option<&String>) -> Result<(), ExtractError> {
        if let Some(s) = s {
            let (lo, hi) = parse_date_range(s)
                .ok_or_else(|| ExtractError(format!("{param}: malformed date")))?;
            self.e.dates.push((param, lo, hi));
        }
        Ok(())
    }

    fn period(&mut self, param: &'static str, p: &Period) -> Result<(), ExtractError> {
        let bad = || ExtractError(format!("{param}: malformed period"));
        let lo = match &p.start {
            Some(s) => parse_date_range(s).ok_or_else(bad)?.0,
            None => MIN_INSTANT_MS,
        };
        let hi = match &p.end {
            Some(s) => parse_date_range(s).ok_or_else(bad)?.1,
            None => MAX_INSTANT_MS,
        };
        if p.start.is_some() || p.end.is_some() {
            self.e.dates.push((param, lo, hi));
        }
        Ok(())
    }

    fn string(&mut self, param: &'static str, s: Option<&String>) {
        if let Some(s) = s {
            let v = normalize_string(s);
            if !v.is_empty() {
                self.e.strings.push((param, v));
            }
        }
    }

    fn names(&mut self, names: &[HumanName], split: bool) {
        for n in names {
            self.string("name", n.text.as_ref());
            self.string("name", n.family.as_ref());
            for g in n.given.iter().chain(&n.prefix).chain(&n.suffix) {
                self.string("name", Some(g));
            }
            if split {
                self.string("family", n.family.as_ref());
                for g in &n.given {
                    self.string("given", Some(g));
                }
            }
        }
    }
}

/// Members of one JSON object in document order, values borrowed as raw text.
pub(crate) struct Members<'a>(pub Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("duplicate member {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The top-level members [`extract`] reads from a resource of type `rt`: the fields of the struct its
/// content is decoded into. Only these are parsed a second time.
fn read_members(rt: ResourceType) -> &'static [&'static str] {
    match rt {
        ResourceType::ExplanationOfBenefit => &[
            "identifier",
            "type",
            "patient",
            "billablePeriod",
            "item",
            "provider",
            "careTeam",
            "insurance",
            "insurer",
            "payee",
        ],
        ResourceType::Coverage => &["identifier", "beneficiary", "subscriber", "payor"],
        ResourceType::Patient | ResourceType::Practitioner | ResourceType::RelatedPerson => {
            &["identifier", "name", "birthDate", "gender", "patient"]
        }
        ResourceType::Organization | ResourceType::Location => &["identifier", "name", "alias"],
        ResourceType::PractitionerRole => &["identifier", "practitioner", "organization"],
    }
}

/// Decodes a struct from the members it reads (raw values already delimited by the first pass).
fn decode<'a, T: Deserialize<'a>>(members: &[(&'a str, &'a RawValue)]) -> Result<T, ExtractError> {
    T::deserialize(MapDeserializer::<_, serde_json::Error>::new(
        members.iter().copied(),
    ))
    .map_err(|e| ExtractError(format!("unexpected content: {e}")))
}

/// Extracts the index entries of `json` (a resource of type `rt`), per the parameters of
/// [`ResourceType::search_params`]. Fails when `json` is not an object, an indexed element has the
/// wrong shape, or a date is malformed.
pub fn extract(rt: ResourceType, id: &str, json: &str) -> Result<IndexEntries, ExtractError> {
    let Members(members) =
        serde_json::from_str(json).map_err(|e| ExtractError(format!("unexpected content: {e}")))?;
    extract_members(rt, id, &members)
}

/// [`extract`] from a resource already split into its top-level members: an import splits each
/// resource once, and only the members an index needs are parsed again.
pub(crate) fn extract_members(
    rt: ResourceType,
    id: &str,
    members: &[(String, &RawValue)],
) -> Result<IndexEntries, ExtractError> {
    let wanted = read_members(rt);
    let members: Vec<(&str, &RawValue)> = members
        .iter()
        .filter(|(k, _)| wanted.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    extract_from(rt, id, &members)
}

/// [`extract`] from the given members (all of a resource's, or only [`read_members`]).
pub(crate) fn extract_from(
    rt: ResourceType,
    id: &str,
    json: &[(&str, &RawValue)],
) -> Result<IndexEntries, ExtractError> {
    let mut x = Extractor {
        e: IndexEntries::default(),
    };
    match rt {
        ResourceType::ExplanationOfBenefit => {
            let r: Eob = decode(json)?;
            x.identifiers(&r.identifier);
            for c in r.type_.iter().flat_map(|t| &t.coding) {
                if let Some(code) = &c.code {
                    x.e.tokens
                        .push(("type", c.system.clone().unwrap_or_default(), code.clone()));
                }
            }
            x.patient_reference("patient", r.patient.as_ref());
            if let Some(bp) = &r.billable_period {
                x.period("service-date", bp)?;
                x.date("service-start-date", bp.start.as_ref())?;
                x.date("billable-period-start", bp.start.as_ref())?;
            }
            for item in &r.item {
                if let Some(d) = &item.serviced_date {
                    x.date("service-date", Some(d))?;
                    x.date("service-start-date", Some(d))?;
                }
                if let Some(sp) = &item.serviced_period {
                    x.period("service-date", sp)?;
                    x.date("service-start-date", sp.start.as_ref())?;
                }
            }
            x.reference("provider", r.provider.as_ref());
            for ct in &r.care_team {
                x.reference("care-team", ct.provider.as_ref());
            }
            for ins in &r.insurance {
                x.reference("coverage", ins.coverage.as_ref());
            }
            x.reference("insurer", r.insurer.as_ref());
            x.reference("payee", r.payee.as_ref().and_then(|p| p.party.as_ref()));
        }
        ResourceType::Coverage => {
            let r: Coverage = decode(json)?;
            x.identifiers(&r.identifier);
            x.patient_reference("patient", r.beneficiary.as_ref());
            x.reference("beneficiary", r.beneficiary.as_ref());
            x.patient_reference("subscriber", r.subscriber.as_ref());
            for p in &r.payor {
                x.reference("payor", Some(p));
            }
        }
        ResourceType::Patient | ResourceType::Practitioner | ResourceType::RelatedPerson => {
            let r: Person = decode(json)?;
            x.identifiers(&r.identifier);
            match rt {
                ResourceType::Patient => {
                    x.names(&r.name, true);
                    x.date("birthdate", r.birth_date.as_ref())?;
                    if let Some(g) = &r.gender {
                        x.e.tokens.push((
                            "gender",
                            "http://hl7.org/fhir/administrative-gender".to_owned(),
                            g.clone(),
                        ));
                    }
                    x.e.patients.push(id.to_owned());
                }
                ResourceType::Practitioner => x.names(&r.name, true),
                _ => {
                    x.names(&r.name, false);
                    x.patient_reference("patient", r.patient.as_ref());
                }
            }
        }
        ResourceType::Organization | ResourceType::Location => {
            let r: Named = decode(json)?;
            x.identifiers(&r.identifier);
            x.string("name", r.name.as_ref());
            for a in &r.alias {
                x.string("name", Some(a));
            }
        }
        ResourceType::PractitionerRole => {
            let r: Role = decode(json)?;
            x.identifiers(&r.identifier);
            x.reference("practitioner", r.practitioner.as_ref());
            x.reference("organization", r.organization.as_ref());
        }
    }
    x.e.dedup();
    Ok(x.e)
}

/// The `Type/id` targets of the given reference parameters in `json` (for `_include`), in order.
pub fn reference_targets(
    rt: ResourceType,
    id: &str,
    json: &str,
    params: &[&str],
) -> Result<Vec<String>, ExtractError> {
    Ok(extract(rt, id, json)?
        .references
        .into_iter()
        .filter(|(p, _)| params.contains(p))
        .map(|(_, t)| t)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn ms(s: &str) -> i64 {
        parse_date_range(s).unwrap().0
    }

    #[test]
    fn date_ranges() {
        assert_eq!(
            parse_date_range("2019"),
            Some((ms("2019-01-01"), ms("2020-01-01") - 1))
        );
        assert_eq!(
            parse_date_range("2019-02"),
            Some((ms("2019-02-01"), ms("2019-03-01") - 1))
        );
        assert_eq!(
            parse_date_range("2019-12"),
            Some((ms("2019-12-01"), ms("2020-01-01") - 1))
        );
        assert_eq!(
            parse_date_range("2019-07-02"),
            Some((1_562_025_600_000, 1_562_025_600_000 + DAY - 1))
        );
        assert_eq!(
            parse_date_range("2019-07-02T10:00:00Z"),
            Some((1_562_061_600_000, 1_562_061_600_999))
        );
        assert_eq!(
            parse_date_range("2019-07-02T10:00:00+02:00"),
            Some((1_562_054_400_000, 1_562_054_400_999))
        );
        assert_eq!(
            parse_date_range("2019-07-02T10:00-04:00"),
            Some((1_562_076_000_000, 1_562_076_059_999))
        );
        assert_eq!(
            parse_date_range("2020-10-30T09:48:01.8462752-04:00"),
            Some((
                ms("2020-10-30T13:48:01Z") + 846,
                ms("2020-10-30T13:48:01Z") + 846
            ))
        );
        assert_eq!(
            parse_date_range("2020-10-30T09:48:01.5Z"),
            Some((
                ms("2020-10-30T09:48:01Z") + 500,
                ms("2020-10-30T09:48:01Z") + 599
            ))
        );
        assert_eq!(parse_date_range("9999").map(|r| r.1), Some(MAX_INSTANT_MS));
        for bad in [
            "",
            "garbage",
            "201",
            "20190",
            "2019-13",
            "2019-02-30",
            "2019-1-01",
            "2019-01-01T",
            "2019-01-01T25:00",
            "2019-01-01T10",
            "2019-01-01T10:00:00.",
            "2019-01-01T10:00:00+0200",
            "2019-01-01 10:00",
            "0000",
            "２０１９",
        ] {
            assert_eq!(parse_date_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instant_format() {
        assert_eq!(
            format_instant_ms(1_562_061_600_123),
            "2019-07-02T10:00:00.123Z"
        );
        assert_eq!(format_instant_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn date_params() {
        let eob = ResourceType::ExplanationOfBenefit;
        let p = parse_param(eob, "service-date", "ge2019-01,lt2018").unwrap();
        assert_eq!(p.name, "service-date");
        assert_eq!(
            p.values,
            vec![
                ParamValue::Date {
                    prefix: DatePrefix::Ge,
                    low: ms("2019-01-01"),
                    high: ms("2019-02-01") - 1
                },
                ParamValue::Date {
                    prefix: DatePrefix::Lt,
                    low: ms("2018-01-01"),
                    high: ms("2019-01-01") - 1
                },
            ]
        );
        for (v, prefix) in [
            ("2019", DatePrefix::Eq),
            ("eq2019", DatePrefix::Eq),
            ("ne2019", DatePrefix::Ne),
            ("gt2019", DatePrefix::Gt),
            ("lt2019", DatePrefix::Lt),
            ("ge2019", DatePrefix::Ge),
            ("le2019", DatePrefix::Le),
            ("sa2019", DatePrefix::Sa),
            ("eb2019", DatePrefix::Eb),
            ("ap2019", DatePrefix::Ap),
        ] {
            let p = parse_param(eob, "_lastUpdated", v).unwrap();
            assert_eq!(p.kind, ParamKind::LastUpdated);
            assert!(matches!(p.values[0], ParamValue::Date { prefix: q, .. } if q == prefix));
        }
        for bad in [
            "garbage",
            "xx2019",
            "ge",
            "gt2019-13-01",
            "2019,",
            "EQ2019",
            "ge 2019",
        ] {
            assert!(
                matches!(
                    parse_param(eob, "service-date", bad),
                    Err(ParamError::InvalidValue { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_params() {
        let eob = ResourceType::ExplanationOfBenefit;
        let tok = |v: &str| match parse_param(eob, "type", v).unwrap().values.remove(0) {
            ParamValue::Token(t) => (t.system, t.code),
            other => panic!("{other:?}"),
        };
        assert_eq!(tok("pharmacy"), (None, Some("pharmacy".into())));
        assert_eq!(
            tok("sys|pharmacy"),
            (Some("sys".into()), Some("pharmacy".into()))
        );
        assert_eq!(
            tok("|pharmacy"),
            (Some(String::new()), Some("pharmacy".into()))
        );
        assert_eq!(tok("sys|"), (Some("sys".into()), None));
        assert_eq!(tok(r"a\|b|c\,d"), (Some("a|b".into()), Some("c,d".into())));
        let p = parse_param(eob, "identifier", "a|1,b|2").unwrap();
        assert_eq!(p.values.len(), 2);
        for bad in ["|", "a|b|c", ""] {
            assert!(parse_param(eob, "type", bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_param(eob, "type:text", "x"),
            Err(ParamError::UnsupportedModifier { .. })
        ));
    }

    #[test]
    fn id_and_unknown_params() {
        let eob = ResourceType::ExplanationOfBenefit;
        let p = parse_param(eob, "_id", "a,b-1.2").unwrap();
        assert_eq!(
            p.values,
            vec![ParamValue::Id("a".into()), ParamValue::Id("b-1.2".into())]
        );
        assert!(parse_param(eob, "_id", &"a".repeat(5000)).is_err());
        assert!(parse_param(eob, "_id", &"a".repeat(65)).is_err());
        assert!(parse_param(eob, "_id", "a b").is_err());
        assert!(matches!(
            parse_param(eob, "nope", "x"),
            Err(ParamError::UnknownParameter { .. })
        ));
        let many = vec!["a"; MAX_OR_VALUES + 1].join(",");
        assert!(parse_param(eob, "_id", &many).is_err());
    }

    #[test]
    fn reference_params() {
        let eob = ResourceType::ExplanationOfBenefit;
        let refs = |n: &str, v: &str| match parse_param(eob, n, v).unwrap().values.remove(0) {
            ParamValue::Reference(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(refs("patient", "Patient/p1"), vec!["Patient/p1"]);
        assert_eq!(refs("patient", "p1"), vec!["Patient/p1"]);
        assert_eq!(
            refs("patient", "https://x.example/fhir/Patient/p1"),
            vec!["Patient/p1"]
        );
        assert_eq!(
            refs("provider", "o1"),
            vec!["Practitioner/o1", "Organization/o1", "PractitionerRole/o1"]
        );
        assert_eq!(refs("provider:Organization", "o1"), vec!["Organization/o1"]);
        assert!(parse_param(eob, "patient", "Organization/o1").is_err());
        assert!(parse_param(eob, "provider:Organization", "Practitioner/o1").is_err());
        assert!(parse_param(eob, "patient:Organization", "o1").is_err());
        assert!(parse_param(eob, "patient", "a/b/c").is_err());
        assert!(parse_param(eob, "patient", "not an id").is_err());
    }

    #[test]
    fn string_params() {
        let p = parse_param(ResourceType::Patient, "name", " JOHN  ny,Ex").unwrap();
        assert_eq!(
            p.values,
            vec![
                ParamValue::String("john ny".into()),
                ParamValue::String("ex".into())
            ]
        );
        assert!(parse_param(ResourceType::Patient, "name", "  ").is_err());
        assert!(parse_param(ResourceType::Patient, "name:exact", "x").is_err());
    }

    #[test]
    fn references_normalize() {
        let n = |s: &str| normalize_reference(s).map(|(t, i)| format!("{t}/{i}"));
        assert_eq!(n("Patient/1"), Some("Patient/1".into()));
        assert_eq!(n("Patient/1/_history/3"), Some("Patient/1".into()));
        assert_eq!(n("https://h/fhir/Patient/1"), Some("Patient/1".into()));
        assert_eq!(
            n("https://h/fhir/Patient/1/_history/2"),
            Some("Patient/1".into())
        );
        assert_eq!(n("#contained"), None);
        assert_eq!(n("urn:uuid:1234"), None);
        assert_eq!(n("a/b/c"), None);
        assert_eq!(n("patient/1"), None);
    }

    #[test]
    fn includes() {
        let i = parse_include("ExplanationOfBenefit:*", false).unwrap();
        assert_eq!(
            i.params,
            vec![
                "patient",
                "provider",
                "care-team",
                "coverage",
                "insurer",
                "payee"
            ]
        );
        let i = parse_include("Coverage:payor", true).unwrap();
        assert!(i.iterate && i.params == vec!["payor"]);
        let i = parse_include("ExplanationOfBenefit:provider:Organization", false).unwrap();
        assert_eq!(i.target_type.as_deref(), Some("Organization"));
        for bad in [
            "ExplanationOfBenefit",
            "ExplanationOfBenefit:type",
            "Foo:bar",
            "ExplanationOfBenefit:provider:Patient",
            "ExplanationOfBenefit:provider:Organization:x",
        ] {
            assert!(parse_include(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn extraction() {
        let eob = r##"{"resourceType":"ExplanationOfBenefit","id":"e1",
          "identifier":[{"system":"s","value":"v"},{"value":"nosys"}],
          "type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type","code":"oral"}]},
          "patient":{"reference":"Patient/p1"},
          "billablePeriod":{"start":"2021-03-01","end":"2021-03-31"},
          "item":[{"servicedDate":"2021-03-18"},{"servicedPeriod":{"start":"2021-03-02"}}],
          "provider":{"reference":"Practitioner/d1"},
          "careTeam":[{"provider":{"reference":"#contained"}},{"provider":{"reference":"Organization/o1"}}],
          "insurance":[{"coverage":{"reference":"Coverage/c1"}}],
          "insurer":{"reference":"Organization/pay"},
          "payee":{"party":{"reference":"Organization/o1"}},
          "total":[{"amount":{"value":12.50}}]}"##;
        let e = extract(ResourceType::ExplanationOfBenefit, "e1", eob).unwrap();
        assert_eq!(e.patients, vec!["p1"]);
        assert_eq!(
            e.tokens,
            vec![
                ("identifier", String::new(), "nosys".to_owned()),
                ("identifier", "s".to_owned(), "v".to_owned()),
                (
                    "type",
                    "http://terminology.hl7.org/CodeSystem/claim-type".to_owned(),
                    "oral".to_owned()
                ),
            ]
        );
        let refs: Vec<(&str, &str)> = e.references.iter().map(|(p, t)| (*p, t.as_str())).collect();
        assert_eq!(
            refs,
            vec![
                ("care-team", "Organization/o1"),
                ("coverage", "Coverage/c1"),
                ("insurer", "Organization/pay"),
                ("patient", "Patient/p1"),
                ("payee", "Organization/o1"),
                ("provider", "Practitioner/d1"),
            ]
        );
        let day = |d: &str| parse_date_range(d).unwrap();
        assert!(e.dates.contains(&(
            "billable-period-start",
            day("2021-03-01").0,
            day("2021-03-01").1
        )));
        assert!(e
            .dates
            .contains(&("service-date", day("2021-03-01").0, day("2021-03-31").1)));
        assert!(e
            .dates
            .contains(&("service-date", day("2021-03-18").0, day("2021-03-18").1)));
        assert!(e
            .dates
            .contains(&("service-date", day("2021-03-02").0, MAX_INSTANT_MS)));
        assert!(e.dates.contains(&(
            "service-start-date",
            day("2021-03-02").0,
            day("2021-03-02").1
        )));
        assert_eq!(e.dates.len(), 7);

        let bad = r#"{"resourceType":"ExplanationOfBenefit","id":"e1","billablePeriod":{"start":"soon"}}"#;
        assert!(extract(ResourceType::ExplanationOfBenefit, "e1", bad).is_err());
        let bad = r#"{"resourceType":"ExplanationOfBenefit","id":"e1","patient":"Patient/1"}"#;
        assert!(extract(ResourceType::ExplanationOfBenefit, "e1", bad).is_err());

        let pat = r#"{"resourceType":"Patient","id":"p1","gender":"male","birthDate":"1986-01-01",
          "name":[{"family":"Example1","given":["Johnny", "B"]}]}"#;
        let e = extract(ResourceType::Patient, "p1", pat).unwrap();
        assert_eq!(e.patients, vec!["p1"]);
        assert!(e.strings.contains(&("family", "example1".into())));
        assert!(e.strings.contains(&("given", "johnny".into())));
        assert!(e.strings.contains(&("name", "b".into())));
        assert_eq!(
            e.dates,
            vec![("birthdate", day("1986-01-01").0, day("1986-01-01").1)]
        );

        let cov = r#"{"resourceType":"Coverage","id":"c1","beneficiary":{"reference":"Patient/a"},
          "subscriber":{"reference":"Patient/b"},"payor":[{"reference":"Organization/o"}]}"#;
        let e = extract(ResourceType::Coverage, "c1", cov).unwrap();
        assert_eq!(e.patients, vec!["a", "b"]);
        assert_eq!(
            reference_targets(ResourceType::Coverage, "c1", cov, &["payor"]).unwrap(),
            vec!["Organization/o"]
        );
    }
}
