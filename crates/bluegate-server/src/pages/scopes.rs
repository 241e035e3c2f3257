//! Plain-language descriptions of SMART scope strings for the consent and account pages (SMART S-12).
//!
//! The wording is deliberately independent of what the server later grants: it describes what the app
//! *asked for*, honestly, including permissions Bluegate never grants (writes, `system/`), so the member is
//! never told less than the request means.

use super::ScopeItem;

pub(crate) const GROUP_EOB: &str = "Claims and explanations of benefit";
pub(crate) const GROUP_COVERAGE: &str = "Insurance coverage";
pub(crate) const GROUP_PATIENT: &str = "Your demographics";
pub(crate) const GROUP_RELATED: &str = "Related people";
pub(crate) const GROUP_DIRECTORY: &str = "Payers and providers (directory)";
pub(crate) const GROUP_ALL: &str = "All your health plan data (including types added later)";
pub(crate) const GROUP_OTHER_RECORDS: &str = "Other records";
pub(crate) const GROUP_IDENTITY: &str = "Your identity";
pub(crate) const GROUP_CONNECTED: &str = "Staying connected";
pub(crate) const GROUP_OTHER: &str = "Other permissions";

/// Display order of the groups on the consent page: data first, then identity, then refresh, then the rest.
pub(crate) fn group_rank(group: &str) -> usize {
    const ORDER: &[&str] = &[
        GROUP_ALL,
        GROUP_EOB,
        GROUP_COVERAGE,
        GROUP_PATIENT,
        GROUP_RELATED,
        GROUP_DIRECTORY,
        GROUP_OTHER_RECORDS,
        GROUP_IDENTITY,
        GROUP_CONNECTED,
        GROUP_OTHER,
    ];
    ORDER
        .iter()
        .position(|g| *g == group)
        .unwrap_or(ORDER.len())
}

const SMART_URI_PREFIX: &str = "http://smarthealthit.org/fhir/scopes/";
const OIDC_URI_PREFIX: &str = "http://openid.net/specs/openid-connect-core-1_0#";

/// Plain-language description of one SMART scope string.
///
/// Handles v1 (`.read`, `.write`, `.*`) and v2 (`.cruds` subsets) resource scopes, granular `?param=value`
/// filters, `patient/`, `user/` and `system/` levels, `openid`, `fhirUser`, `profile`, `launch`,
/// `launch/patient` (and other `launch/…` contexts), `offline_access`, `online_access`, and the URI forms
/// of SMART and OIDC scopes. Anything else gets a generic description that says we can't explain it.
pub fn describe_scope(scope: &str) -> ScopeItem<'_> {
    let inner = scope
        .strip_prefix(SMART_URI_PREFIX)
        .or_else(|| scope.strip_prefix(OIDC_URI_PREFIX))
        .unwrap_or(scope);
    let (group, title, detail) = describe(inner).unwrap_or_else(unknown);
    ScopeItem {
        scope,
        title,
        detail,
        group: group.to_owned(),
    }
}

type Described = (&'static str, String, String);

fn unknown() -> Described {
    (
        GROUP_OTHER,
        "Other permission".to_owned(),
        "The app asked for a permission we can't describe in plain language; untick it if you are not \
         sure what it allows."
            .to_owned(),
    )
}

fn fixed(group: &'static str, title: &str, detail: &str) -> Option<Described> {
    Some((group, title.to_owned(), detail.to_owned()))
}

fn describe(scope: &str) -> Option<Described> {
    match scope {
        "openid" => fixed(
            GROUP_IDENTITY,
            "Confirm that it's you",
            "The app learns that you signed in here and gets an identifier for your account, never your password.",
        ),
        "fhirUser" => fixed(
            GROUP_IDENTITY,
            "Know who you are",
            "The app learns which member or representative record belongs to you.",
        ),
        "profile" => fixed(
            GROUP_IDENTITY,
            "Know who you are",
            "The app learns which member or representative record belongs to you (an older form of this permission).",
        ),
        "launch/patient" => fixed(
            GROUP_IDENTITY,
            "Know whose records you are sharing",
            "The app is told which member you chose (you, or someone you act for), so it can ask for that member's records.",
        ),
        "launch" => fixed(
            GROUP_OTHER,
            "Start from another system",
            "Used when an app is opened from inside another system; on its own it gives no access to your data.",
        ),
        "offline_access" => fixed(
            GROUP_CONNECTED,
            "Stay connected",
            "The app can keep getting updates without you signing in again, until you revoke it.",
        ),
        "online_access" => fixed(
            GROUP_CONNECTED,
            "Stay connected while you are signed in",
            "The app can keep getting updates while you stay signed in here; its access ends when you sign out.",
        ),
        _ => {
            if let Some(context) = scope.strip_prefix("launch/") {
                return launch_context(context);
            }
            resource(scope)
        }
    }
}

fn launch_context(context: &str) -> Option<Described> {
    let name = context.split('?').next().unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    Some((
        GROUP_OTHER,
        format!("Know the current {name}"),
        format!("The app is told which {name} record is in use; on its own it gives no access to your data."),
    ))
}

/// Permission bits of a resource scope, in SMART v2 order: create, read, update, delete, search.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Perms {
    c: bool,
    r: bool,
    u: bool,
    d: bool,
    s: bool,
}

fn parse_perms(p: &str) -> Option<Perms> {
    match p {
        // v1 spellings and their v2 equivalents (SMART: .read => .rs, .write => .cud, .* => .cruds).
        "read" => Some(Perms {
            r: true,
            s: true,
            ..Perms::default()
        }),
        "write" => Some(Perms {
            c: true,
            u: true,
            d: true,
            ..Perms::default()
        }),
        "*" => Some(Perms {
            c: true,
            r: true,
            u: true,
            d: true,
            s: true,
        }),
        _ => {
            // v2: a non-empty, strictly in-order subset of "cruds"; anything else is not a scope we describe.
            let mut perms = Perms::default();
            let mut last = None;
            for ch in p.chars() {
                let pos = "cruds".find(ch)?;
                if last.is_some_and(|l| pos <= l) {
                    return None;
                }
                last = Some(pos);
                match ch {
                    'c' => perms.c = true,
                    'r' => perms.r = true,
                    'u' => perms.u = true,
                    'd' => perms.d = true,
                    _ => perms.s = true,
                }
            }
            last.map(|_| perms)
        }
    }
}

impl Perms {
    fn reads(self) -> bool {
        self.r || self.s
    }
    fn writes(self) -> bool {
        self.c || self.u || self.d
    }
    fn title_verb(self) -> &'static str {
        match (self.reads(), self.writes()) {
            (true, true) => "See and change",
            (false, true) => "Change",
            _ if !self.r => "Search",
            _ => "See",
        }
    }
    fn detail_verbs(self) -> String {
        let words: Vec<&str> = [
            (self.r, "view"),
            (self.s, "search"),
            (self.c, "add"),
            (self.u, "change"),
            (self.d, "delete"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        match words.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// What a resource type is called on the page.
struct Noun {
    group: &'static str,
    /// For titles: "claims".
    short: String,
    /// For details: "claims and explanations of benefit".
    long: String,
    /// Provider/payer directory data: not the member's personal records.
    directory: bool,
}

/// Appended to the details of `*` scopes (SMART S-12: warn that `*` covers future data types).
const FUTURE_TYPES: &str = ", including kinds of data added later, not just those listed here";

fn noun(resource_type: &str) -> Option<Noun> {
    let (group, short, long, directory) = match resource_type {
        "ExplanationOfBenefit" => (
            GROUP_EOB,
            "claims",
            "claims and explanations of benefit",
            false,
        ),
        "Coverage" => (
            GROUP_COVERAGE,
            "insurance coverage",
            "insurance coverage details (plans, member IDs and coverage dates)",
            false,
        ),
        "Patient" => (
            GROUP_PATIENT,
            "demographics",
            "demographics (name, date of birth, gender, address and contact details)",
            false,
        ),
        "RelatedPerson" => (
            GROUP_RELATED,
            "related people",
            "records of related people, such as representatives and family members",
            false,
        ),
        "Organization" => (
            GROUP_DIRECTORY,
            "payer and provider organizations",
            "directory entries for payer and provider organizations",
            true,
        ),
        "Practitioner" => (
            GROUP_DIRECTORY,
            "individual providers",
            "directory entries for individual providers",
            true,
        ),
        "PractitionerRole" => (
            GROUP_DIRECTORY,
            "provider roles",
            "directory entries for providers' roles and specialties",
            true,
        ),
        "Location" => (
            GROUP_DIRECTORY,
            "care locations",
            "directory entries for places where care is given",
            true,
        ),
        "*" => (
            GROUP_ALL,
            "health plan data",
            "every kind of record we hold",
            false,
        ),
        other => {
            // A FHIR resource type name: an upper-case letter followed by letters.
            let mut chars = other.chars();
            if !chars.next().is_some_and(|c| c.is_ascii_uppercase())
                || !chars.all(|c| c.is_ascii_alphabetic())
            {
                return None;
            }
            return Some(Noun {
                group: GROUP_OTHER_RECORDS,
                short: format!("{other} records"),
                long: format!("{other} records"),
                directory: false,
            });
        }
    };
    Some(Noun {
        group,
        short: short.to_owned(),
        long: long.to_owned(),
        directory,
    })
}

/// Plain names for the CARIN BB claim types (http://terminology.hl7.org/CodeSystem/claim-type).
fn claim_type(code: &str) -> Option<&'static str> {
    Some(match code {
        "pharmacy" => "pharmacy claims",
        "professional" => "professional (doctor and clinician) claims",
        "institutional" => "institutional (hospital and facility) claims",
        "oral" => "dental claims",
        "vision" => "vision claims",
        _ => return None,
    })
}

/// The code part of a token search value (`system|code`, possibly percent-encoded as `%7C`).
fn token_code(value: &str) -> &str {
    let cut = value.rfind('|').map(|i| i + 1).or_else(|| {
        let lower = value.to_ascii_lowercase();
        lower.rfind("%7c").map(|i| i + 3)
    });
    cut.map_or(value, |i| &value[i..])
}

/// Applies a granular `?param=value&…` filter to the noun, naming the filter in plain words.
fn apply_filter(noun: &mut Noun, resource_type: &str, query: &str) -> Option<()> {
    let mut limits = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (param, value) = pair.split_once('=')?;
        if param.is_empty() || value.is_empty() {
            return None;
        }
        let code = token_code(value);
        match (resource_type, param, claim_type(code)) {
            ("ExplanationOfBenefit", "type", Some(kind)) => {
                noun.short = kind.to_owned();
                limits.push(format!("{kind} only"));
            }
            _ => limits.push(format!("only those whose {param} is {code}")),
        }
    }
    if limits.is_empty() {
        return None;
    }
    if !limits.iter().all(|l| l.ends_with(" only")) || limits.len() > 1 {
        noun.short = format!("some {}", noun.short);
    }
    noun.long = format!("{} ({})", noun.long, limits.join("; "));
    Some(())
}

fn resource(scope: &str) -> Option<Described> {
    let (level, rest) = scope.split_once('/')?;
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (resource_type, perms) = body.split_once('.')?;
    let perms = parse_perms(perms)?;
    let mut noun = noun(resource_type)?;
    if let Some(q) = query {
        apply_filter(&mut noun, resource_type, q)?;
    }
    let verb = perms.title_verb();
    // "See all your health plan data", but "See some health plan data" when a filter narrows `*`.
    let all = if resource_type == "*" && query.is_none() {
        "all "
    } else {
        ""
    };
    let verbs = perms.detail_verbs();
    let Noun {
        group,
        short,
        long,
        directory,
    } = noun;
    // `*` also covers data types added later (SMART S-12): say so.
    let future = if resource_type == "*" {
        FUTURE_TYPES
    } else {
        ""
    };
    let (title, whom) = match level {
        _ if directory => (
            format!("{verb} {short}"),
            " (public directory information, not your personal records)".to_owned(),
        ),
        "patient" => (
            format!("{verb} {all}your {short}"),
            format!(" for the member whose records you are sharing (you, or someone you act for){future}"),
        ),
        "user" => (
            format!("{verb} {all}{short} you can access"),
            format!(" for every member your account can act for, not just one{future}"),
        ),
        "system" => (
            format!("{verb} {all}{short} for any member"),
            format!(" for any member, without you being involved{future}"),
        ),
        _ => return None,
    };
    let detail = format!("The app can {verbs} {long}{whom}.");
    Some((group, title, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> ScopeItem<'_> {
        describe_scope(s)
    }

    #[test]
    fn v1_and_v2_spellings_share_the_group() {
        for ty in [
            "ExplanationOfBenefit",
            "Coverage",
            "Patient",
            "Organization",
            "Practitioner",
            "PractitionerRole",
            "Location",
            "RelatedPerson",
            "*",
        ] {
            let v1 = d(&format!("patient/{ty}.read")).group;
            let v2 = d(&format!("patient/{ty}.rs")).group;
            let r = d(&format!("patient/{ty}.r")).group;
            let s = d(&format!("patient/{ty}.s")).group;
            let user = d(&format!("user/{ty}.read")).group;
            assert_eq!(v1, v2, "{ty}");
            assert_eq!(v1, r, "{ty}");
            assert_eq!(v1, s, "{ty}");
            assert_eq!(v1, user, "{ty}");
            assert_ne!(v1, GROUP_OTHER, "{ty}");
        }
        // v1 .read and v2 .rs say the same thing.
        assert_eq!(
            d("patient/ExplanationOfBenefit.read").detail,
            d("patient/ExplanationOfBenefit.rs").detail
        );
    }

    #[test]
    fn groups_per_resource() {
        assert_eq!(d("patient/ExplanationOfBenefit.read").group, GROUP_EOB);
        assert_eq!(d("patient/Coverage.rs").group, GROUP_COVERAGE);
        assert_eq!(d("patient/Patient.r").group, GROUP_PATIENT);
        assert_eq!(d("patient/Organization.read").group, GROUP_DIRECTORY);
        assert_eq!(d("user/Practitioner.rs").group, GROUP_DIRECTORY);
        assert_eq!(d("patient/PractitionerRole.rs").group, GROUP_DIRECTORY);
        assert_eq!(d("patient/Location.rs").group, GROUP_DIRECTORY);
        assert_eq!(d("patient/RelatedPerson.read").group, GROUP_RELATED);
        assert_eq!(d("patient/*.read").group, GROUP_ALL);
        assert_eq!(d("openid").group, GROUP_IDENTITY);
        assert_eq!(d("fhirUser").group, GROUP_IDENTITY);
        assert_eq!(d("profile").group, GROUP_IDENTITY);
        assert_eq!(d("launch/patient").group, GROUP_IDENTITY);
        assert_eq!(d("offline_access").group, GROUP_CONNECTED);
        assert_eq!(d("online_access").group, GROUP_CONNECTED);
        assert_eq!(d("patient/Observation.rs").group, GROUP_OTHER_RECORDS);
    }

    #[test]
    fn wording() {
        let eob = d("patient/ExplanationOfBenefit.read");
        assert_eq!(eob.scope, "patient/ExplanationOfBenefit.read");
        assert_eq!(eob.title, "See your claims");
        assert!(eob
            .detail
            .contains("view and search claims and explanations of benefit"));
        assert!(eob.detail.contains("someone you act for"));
        assert_eq!(
            d("offline_access").detail,
            "The app can keep getting updates without you signing in again, until you revoke it."
        );
        assert!(d("patient/*.rs").detail.contains("added later"));
        assert!(d("user/*.read").detail.contains("added later"));
        let user = d("user/ExplanationOfBenefit.rs");
        assert!(
            user.detail
                .contains("every member your account can act for"),
            "{}",
            user.detail
        );
        assert_ne!(user.detail, d("patient/ExplanationOfBenefit.rs").detail);
        assert!(d("patient/Organization.read")
            .detail
            .contains("not your personal records"));
        assert!(d("patient/ExplanationOfBenefit.r")
            .detail
            .contains("can view claims"));
        assert!(d("patient/ExplanationOfBenefit.s")
            .detail
            .contains("can search claims"));
        assert_eq!(
            d("patient/Coverage.s").title,
            "Search your insurance coverage"
        );
        // Writes are described honestly, even though the server never grants them.
        assert_eq!(
            d("patient/*.*").title,
            "See and change all your health plan data"
        );
        assert_eq!(d("patient/*.rs").title, "See all your health plan data");
        assert!(d("patient/*.*")
            .detail
            .contains("view, search, add, change and delete"));
        assert!(d("patient/Patient.write")
            .detail
            .contains("add, change and delete"));
        assert!(d("patient/Patient.cud").title.starts_with("Change"));
        assert!(d("system/Patient.rs")
            .detail
            .contains("without you being involved"));
    }

    #[test]
    fn granular_filters_are_named() {
        let s = "patient/ExplanationOfBenefit.rs?type=http://terminology.hl7.org/CodeSystem/claim-type|pharmacy";
        let item = d(s);
        assert_eq!(item.scope, s);
        assert_eq!(item.group, GROUP_EOB);
        assert_eq!(item.title, "See your pharmacy claims");
        assert!(
            item.detail.contains("pharmacy claims only"),
            "{}",
            item.detail
        );
        let enc = d("patient/ExplanationOfBenefit.rs?type=http://terminology.hl7.org/CodeSystem/claim-type%7Coral");
        assert!(enc.detail.contains("dental claims only"), "{}", enc.detail);
        let other = d("patient/Coverage.rs?status=active");
        assert_eq!(other.group, GROUP_COVERAGE);
        assert!(
            other.detail.contains("only those whose status is active"),
            "{}",
            other.detail
        );
        assert!(other.title.contains("some"), "{}", other.title);
    }

    #[test]
    fn uri_forms() {
        assert_eq!(
            d("http://smarthealthit.org/fhir/scopes/patient/Coverage.read").group,
            GROUP_COVERAGE
        );
        assert_eq!(
            d("http://openid.net/specs/openid-connect-core-1_0#openid").group,
            GROUP_IDENTITY
        );
    }

    #[test]
    fn unknown_scopes_are_generic_but_honest() {
        for s in [
            "",
            "foo",
            "__custom",
            "patient/ExplanationOfBenefit.dus",
            "patient/ExplanationOfBenefit.rr",
            "patient/ExplanationOfBenefit",
            "nurse/Patient.read",
            "patient/lowercase.read",
            "patient/Coverage.rs?",
            "patient/Coverage.rs?x",
            "launch/<b>",
        ] {
            let item = d(s);
            assert_eq!(item.scope, s);
            assert_eq!(item.group, GROUP_OTHER, "{s}");
            assert_eq!(item.title, "Other permission", "{s}");
            assert!(item.detail.contains("can't describe"), "{s}");
        }
        assert_eq!(d("launch").group, GROUP_OTHER);
        assert!(d("launch/encounter").title.contains("encounter"));
    }
}
