//! SMART scopes: the v1 and v2 grammar, negotiation of what a request may be granted (smart.md §3), and
//! the question the resource server asks of a granted set ("may this token read / search this type?").
//!
//! Granted scopes are emitted in the spelling they were requested in (v1 stays v1, S-2), because clients
//! compare strings.

use std::fmt;

/// Longest scope parameter accepted (S-13).
pub const MAX_SCOPE_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Patient,
    User,
    System,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Patient => "patient",
            Level::User => "user",
            Level::System => "system",
        }
    }
}

/// v2 permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Perms {
    pub c: bool,
    pub r: bool,
    pub u: bool,
    pub d: bool,
    pub s: bool,
}

impl Perms {
    /// Parse an in-order subset of `cruds`; anything else (out of order, repeated, unknown) is `None` (S-4).
    fn parse_v2(text: &str) -> Option<Perms> {
        if text.is_empty() {
            return None;
        }
        let mut p = Perms::default();
        let mut last = 0usize;
        for ch in text.chars() {
            let pos = "cruds".find(ch)? + 1;
            if pos <= last {
                return None;
            }
            last = pos;
            match ch {
                'c' => p.c = true,
                'r' => p.r = true,
                'u' => p.u = true,
                'd' => p.d = true,
                's' => p.s = true,
                _ => return None,
            }
        }
        Some(p)
    }

    fn read_only(self) -> Perms {
        Perms {
            r: self.r,
            s: self.s,
            ..Perms::default()
        }
    }

    fn is_empty(self) -> bool {
        !(self.c || self.r || self.u || self.d || self.s)
    }

    fn contains(self, other: Perms) -> bool {
        (!other.c || self.c)
            && (!other.r || self.r)
            && (!other.u || self.u)
            && (!other.d || self.d)
            && (!other.s || self.s)
    }

    fn v2_string(self) -> String {
        let mut s = String::new();
        for (on, ch) in [
            (self.c, 'c'),
            (self.r, 'r'),
            (self.u, 'u'),
            (self.d, 'd'),
            (self.s, 's'),
        ] {
            if on {
                s.push(ch);
            }
        }
        s
    }
}

/// How the permission part was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spelling {
    /// `.read`, `.write`, `.*`
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub level: Level,
    /// A resource type or `*`.
    pub resource_type: String,
    pub perms: Perms,
    pub spelling: Spelling,
    /// Granular filter (`?type=system|code`), as `(name, value)` pairs in request order.
    pub filter: Vec<(String, String)>,
}

impl ResourceScope {
    fn covers_type(&self, ty: &str) -> bool {
        self.resource_type == "*" || self.resource_type == ty
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let perm = match self.spelling {
            Spelling::V1 => {
                if self.perms.read_only() == self.perms && self.perms.r && self.perms.s {
                    "read".to_string()
                } else {
                    // A v1 scope whose read half survived is always re-emitted as `.read`; anything else is
                    // emitted in v2 form rather than misrepresented.
                    self.perms.v2_string()
                }
            }
            Spelling::V2 => self.perms.v2_string(),
        };
        write!(f, "{}/{}.{}", self.level.as_str(), self.resource_type, perm)?;
        if !self.filter.is_empty() {
            let q: Vec<String> = self
                .filter
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    OpenId,
    FhirUser,
    Profile,
    LaunchPatient,
    /// `launch` (EHR launch only: never granted in a standalone launch).
    Launch,
    OfflineAccess,
    OnlineAccess,
    Resource(ResourceScope),
    /// Anything else (unknown, extension, `launch/encounter`...): never granted.
    Other(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::Launch => f.write_str("launch"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
            Scope::Resource(r) => r.fmt(f),
            Scope::Other(s) => f.write_str(s),
        }
    }
}

fn is_resource_type(s: &str) -> bool {
    s == "*"
        || (s.len() <= 64
            && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Parse one scope token. Never fails: what is not understood is [`Scope::Other`].
pub fn parse(token: &str) -> Scope {
    match token {
        "openid" => return Scope::OpenId,
        "fhirUser" => return Scope::FhirUser,
        "profile" => return Scope::Profile,
        "launch/patient" => return Scope::LaunchPatient,
        "launch" => return Scope::Launch,
        "offline_access" => return Scope::OfflineAccess,
        "online_access" => return Scope::OnlineAccess,
        _ => {}
    }
    parse_resource(token)
        .map(Scope::Resource)
        .unwrap_or_else(|| Scope::Other(token.to_string()))
}

fn parse_resource(token: &str) -> Option<ResourceScope> {
    let (level, rest) = token.split_once('/')?;
    let level = match level {
        "patient" => Level::Patient,
        "user" => Level::User,
        "system" => Level::System,
        _ => return None,
    };
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (ty, perm) = body.rsplit_once('.')?;
    if !is_resource_type(ty) {
        return None;
    }
    let (perms, spelling) = match perm {
        "read" => (
            Perms {
                r: true,
                s: true,
                ..Perms::default()
            },
            Spelling::V1,
        ),
        "write" => (
            Perms {
                c: true,
                u: true,
                d: true,
                ..Perms::default()
            },
            Spelling::V1,
        ),
        "*" => (
            Perms {
                c: true,
                r: true,
                u: true,
                d: true,
                s: true,
            },
            Spelling::V1,
        ),
        other => (Perms::parse_v2(other)?, Spelling::V2),
    };
    let mut filter = Vec::new();
    if let Some(q) = query {
        // Granular scopes are a v2 feature.
        if spelling == Spelling::V1 || q.is_empty() {
            return None;
        }
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=')?;
            if k.is_empty() || v.is_empty() {
                return None;
            }
            filter.push((k.to_string(), v.to_string()));
        }
    }
    Some(ResourceScope {
        level,
        resource_type: ty.to_string(),
        perms,
        spelling,
        filter,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the scope parameter is longer than {MAX_SCOPE_LEN} bytes")]
    TooLong,
    #[error("no requested scope can be granted")]
    NothingGrantable,
}

/// Split a scope parameter: space-delimited, repeated whitespace ignored, duplicates dropped, first-seen
/// order kept (S-13).
pub fn tokenize(scope: &str) -> Result<Vec<&str>, ScopeError> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong);
    }
    let mut out: Vec<&str> = Vec::new();
    for t in scope.split([' ', '\t', '\n', '\r']) {
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The kind of grant being negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantContext {
    /// Standalone App Launch (authorization code): patient/ and user/ scopes, identity, refresh.
    AppLaunch,
    /// Backend services (client_credentials): system/ scopes only.
    Backend,
}

/// What the server can serve, for negotiation.
pub struct ServerPolicy<'a> {
    /// Resource types the API serves.
    pub served_types: &'a [&'a str],
    /// Granular filters the resource server enforces on read and search: (resource type, parameter).
    pub enforceable_filters: &'a [(&'a str, &'a str)],
}

/// Negotiate a request (smart.md §3, steps 1–3 and 6–7): drop what cannot be granted, narrow write
/// permissions away (the API is read-only), intersect with the client's registered scopes, and keep the
/// requested spelling. The member's choice (step 4) is applied afterwards with [`retain_chosen`].
pub fn negotiate(
    requested: &str,
    client_registered: &str,
    ctx: GrantContext,
    server: &ServerPolicy<'_>,
) -> Result<Vec<Scope>, ScopeError> {
    let registered: Vec<Scope> = tokenize(client_registered)?
        .into_iter()
        .map(parse)
        .collect();
    let mut granted: Vec<Scope> = Vec::new();
    for token in tokenize(requested)? {
        let Some(scope) = grantable(parse(token), ctx, server) else {
            continue;
        };
        if !allowed_by_registration(&scope, &registered) || granted.contains(&scope) {
            continue;
        }
        granted.push(scope);
    }
    let has_resource = granted.iter().any(|s| matches!(s, Scope::Resource(_)));
    let has_identity = granted
        .iter()
        .any(|s| matches!(s, Scope::OpenId | Scope::FhirUser));
    if !has_resource && !has_identity {
        return Err(ScopeError::NothingGrantable);
    }
    Ok(granted)
}

fn grantable(scope: Scope, ctx: GrantContext, server: &ServerPolicy<'_>) -> Option<Scope> {
    match (ctx, scope) {
        (GrantContext::AppLaunch, s @ (Scope::OpenId | Scope::FhirUser | Scope::Profile)) => {
            Some(s)
        }
        (
            GrantContext::AppLaunch,
            s @ (Scope::LaunchPatient | Scope::OfflineAccess | Scope::OnlineAccess),
        ) => Some(s),
        (_, Scope::Resource(mut r)) => {
            let level_ok = match ctx {
                GrantContext::AppLaunch => r.level != Level::System,
                GrantContext::Backend => r.level == Level::System,
            };
            if !level_ok {
                return None;
            }
            if r.resource_type != "*" && !server.served_types.contains(&r.resource_type.as_str()) {
                return None;
            }
            for (name, _) in &r.filter {
                let enforceable = server
                    .enforceable_filters
                    .iter()
                    .any(|(t, p)| (r.resource_type == *t) && p == name);
                if !enforceable {
                    return None;
                }
            }
            r.perms = r.perms.read_only();
            if r.perms.is_empty() {
                return None;
            }
            // v1 `.*` keeps only its read half, which v1 spells `.read`.
            Some(Scope::Resource(r))
        }
        _ => None,
    }
}

/// A requested scope is allowed when the client's registration lists it, or (for resource scopes) lists
/// one at the same level that covers its type, permissions and filter (S-11).
fn allowed_by_registration(scope: &Scope, registered: &[Scope]) -> bool {
    match scope {
        Scope::Resource(r) => registered.iter().any(|reg| match reg {
            Scope::Resource(g) => {
                g.level == r.level
                    && g.covers_type(&r.resource_type)
                    && (g.resource_type == "*" || r.resource_type != "*")
                    && g.perms.contains(r.perms)
                    && (g.filter.is_empty() || g.filter == r.filter)
            }
            _ => false,
        }),
        other => registered.contains(other),
    }
}

/// Step 4: keep only the scopes the member left ticked (exact strings).
pub fn retain_chosen(granted: Vec<Scope>, chosen: &[String]) -> Vec<Scope> {
    granted
        .into_iter()
        .filter(|s| chosen.iter().any(|c| *c == s.to_string()))
        .collect()
}

/// The granted set as a scope string.
pub fn to_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An interaction on the read-only API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// read, vread
    Read,
    /// search-type
    Search,
}

/// A granular filter: (parameter, value) pairs that must all match.
pub type Filter = Vec<(String, String)>;

/// What a granted scope string permits, for the resource server.
#[derive(Debug, Clone)]
pub struct Grant {
    resources: Vec<ResourceScope>,
}

/// The decision for one resource type: denied, or allowed with the granular filters that must hold (an
/// empty list of filters = unrestricted; several alternatives = any one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Denied,
    Allowed {
        level: Level,
        /// Alternatives; each is a list of (parameter, value) that must all match. Empty = no filter.
        filters: Vec<Filter>,
    },
}

impl Grant {
    pub fn from_scope_string(scope: &str) -> Grant {
        let resources = scope
            .split_whitespace()
            .filter_map(|t| match parse(t) {
                Scope::Resource(r) => Some(r),
                _ => None,
            })
            .collect();
        Grant { resources }
    }

    /// May the token perform `interaction` on `resource_type`? Patient-level access wins over user-level
    /// when both are granted only if it is unfiltered; callers apply the compartment for `Level::Patient`.
    pub fn access(&self, resource_type: &str, interaction: Interaction) -> Access {
        let mut best: Option<(Level, Vec<Filter>)> = None;
        for r in &self.resources {
            if !r.covers_type(resource_type) {
                continue;
            }
            let ok = match interaction {
                Interaction::Read => r.perms.r,
                Interaction::Search => r.perms.s,
            };
            if !ok {
                continue;
            }
            let entry = best.get_or_insert((r.level, Vec::new()));
            // A user-level grant is broader than a patient-level one for a member acting for that patient.
            if r.level == Level::User && entry.0 == Level::Patient {
                *entry = (Level::User, Vec::new());
            }
            if r.level == entry.0 {
                entry.1.push(r.filter.clone());
            }
        }
        match best {
            None => Access::Denied,
            Some((level, alternatives)) => {
                let filters = if alternatives.iter().any(|f| f.is_empty()) {
                    Vec::new()
                } else {
                    alternatives
                };
                Access::Allowed { level, filters }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: &[&str] = &[
        "ExplanationOfBenefit",
        "Coverage",
        "Patient",
        "Organization",
        "Practitioner",
        "RelatedPerson",
    ];
    const FILTERS: &[(&str, &str)] = &[("ExplanationOfBenefit", "type")];

    fn policy() -> ServerPolicy<'static> {
        ServerPolicy {
            served_types: SERVED,
            enforceable_filters: FILTERS,
        }
    }

    fn neg(req: &str, reg: &str) -> Result<String, ScopeError> {
        negotiate(req, reg, GrantContext::AppLaunch, &policy()).map(|s| to_string(&s))
    }

    const ALL: &str =
        "openid fhirUser launch/patient offline_access online_access patient/*.cruds user/*.cruds";

    #[test]
    fn carin_v1_request_is_granted_verbatim() {
        let req = "launch/patient openid fhirUser offline_access patient/ExplanationOfBenefit.read \
                   patient/Coverage.read patient/Patient.read patient/Organization.read patient/Practitioner.read";
        assert_eq!(
            neg(req, ALL).unwrap(),
            req.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn v2_read_only_and_write_bits_dropped() {
        assert_eq!(
            neg(
                "patient/ExplanationOfBenefit.rs patient/Coverage.cruds patient/Patient.r",
                ALL
            )
            .unwrap(),
            "patient/ExplanationOfBenefit.rs patient/Coverage.rs patient/Patient.r"
        );
        // Write-only scopes vanish entirely.
        assert_eq!(
            neg("openid patient/Patient.write patient/Coverage.cud", ALL).unwrap(),
            "openid"
        );
        // v1 `.*` keeps its read half, spelled `.read`.
        assert_eq!(neg("patient/*.*", ALL).unwrap(), "patient/*.read");
    }

    #[test]
    fn malformed_out_of_order_and_unknown_scopes_are_dropped_not_reinterpreted() {
        assert_eq!(
            neg("openid patient/Patient.dus patient/Patient.rr patient/Patient.x patient/Unknown.read \
                 patient/lowercase.read launch launch/encounter system/Patient.read __ext", ALL)
            .unwrap(),
            "openid"
        );
        assert_eq!(
            neg("patient/Patient.dus", ALL),
            Err(ScopeError::NothingGrantable)
        );
        assert_eq!(neg("", ALL), Err(ScopeError::NothingGrantable));
    }

    #[test]
    fn duplicates_and_whitespace() {
        assert_eq!(
            neg(
                "  openid\t openid  patient/Patient.read patient/Patient.read ",
                ALL
            )
            .unwrap(),
            "openid patient/Patient.read"
        );
        assert_eq!(tokenize(&"a ".repeat(5000)), Err(ScopeError::TooLong));
    }

    #[test]
    fn registration_limits_what_is_granted() {
        let reg =
            "openid fhirUser launch/patient patient/ExplanationOfBenefit.rs patient/Coverage.read";
        assert_eq!(
            neg("openid offline_access patient/ExplanationOfBenefit.read patient/Coverage.rs patient/Patient.read user/Coverage.read", reg).unwrap(),
            "openid patient/ExplanationOfBenefit.read patient/Coverage.rs"
        );
        // A wildcard request is not covered by type-specific registrations.
        assert_eq!(
            neg("patient/*.read", reg),
            Err(ScopeError::NothingGrantable)
        );
        // A registration with .r only does not cover .rs.
        assert_eq!(
            neg("patient/Patient.rs", "patient/Patient.r"),
            Err(ScopeError::NothingGrantable)
        );
    }

    #[test]
    fn granular_filters_only_when_enforceable() {
        let s = "patient/ExplanationOfBenefit.rs?type=http://terminology.hl7.org/CodeSystem/claim-type|pharmacy";
        assert_eq!(neg(s, ALL).unwrap(), s);
        assert_eq!(
            neg("openid patient/Coverage.rs?payor=Organization/1", ALL).unwrap(),
            "openid"
        );
        // v1 spelling cannot carry a filter.
        assert_eq!(
            neg("openid patient/ExplanationOfBenefit.read?type=x", ALL).unwrap(),
            "openid"
        );
    }

    #[test]
    fn backend_gets_system_scopes_only() {
        let got = negotiate(
            "system/ExplanationOfBenefit.rs patient/Patient.read openid system/Coverage.read",
            "system/*.rs system/*.read",
            GrantContext::Backend,
            &policy(),
        )
        .unwrap();
        assert_eq!(
            to_string(&got),
            "system/ExplanationOfBenefit.rs system/Coverage.read"
        );
    }

    #[test]
    fn member_can_untick() {
        let granted = negotiate(
            "openid patient/Patient.read patient/Coverage.read",
            ALL,
            GrantContext::AppLaunch,
            &policy(),
        )
        .unwrap();
        let kept = retain_chosen(
            granted,
            &["patient/Coverage.read".to_string(), "bogus".to_string()],
        );
        assert_eq!(to_string(&kept), "patient/Coverage.read");
    }

    #[test]
    fn grant_answers_the_resource_server() {
        let g = Grant::from_scope_string(
            "openid patient/ExplanationOfBenefit.r patient/Coverage.read user/Patient.s",
        );
        assert!(matches!(
            g.access("ExplanationOfBenefit", Interaction::Read),
            Access::Allowed {
                level: Level::Patient,
                ..
            }
        ));
        assert_eq!(
            g.access("ExplanationOfBenefit", Interaction::Search),
            Access::Denied
        );
        assert!(matches!(
            g.access("Coverage", Interaction::Search),
            Access::Allowed { .. }
        ));
        assert_eq!(g.access("Organization", Interaction::Read), Access::Denied);
        assert!(matches!(
            g.access("Patient", Interaction::Search),
            Access::Allowed {
                level: Level::User,
                ..
            }
        ));
        let g = Grant::from_scope_string(
            "patient/ExplanationOfBenefit.rs?type=a|b patient/ExplanationOfBenefit.rs?type=c|d",
        );
        match g.access("ExplanationOfBenefit", Interaction::Search) {
            Access::Allowed { filters, .. } => assert_eq!(filters.len(), 2),
            other => panic!("{other:?}"),
        }
        let g = Grant::from_scope_string("patient/*.rs patient/ExplanationOfBenefit.rs?type=a|b");
        assert_eq!(
            g.access("ExplanationOfBenefit", Interaction::Read),
            Access::Allowed {
                level: Level::Patient,
                filters: vec![]
            }
        );
    }
}
