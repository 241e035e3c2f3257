//! Who may see what on the FHIR API, as pure functions (no I/O): scope decisions, the patient compartment,
//! and granular scope filters (smart.md §7a R-2..R-10, decision 2 of §12).

use bluegate_core::scopes::{Access, Filter, Grant, Interaction, Level};
use bluegate_store::fhir::params::{self, IndexEntries};
use bluegate_store::fhir::{ParamKind, ParamValue, ParsedParam, ResourceType, TokenQuery};

/// Directory data without PHI, open to any token with the matching scope (smart.md §12 decision 2).
pub fn is_directory(rt: ResourceType) -> bool {
    matches!(
        rt,
        ResourceType::Organization
            | ResourceType::Practitioner
            | ResourceType::PractitionerRole
            | ResourceType::Location
    )
}

/// Which patients' data a token reaches, before scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// System-level tokens (B2B): every patient.
    All,
    /// Exactly these patients (possibly none).
    Patients(Vec<String>),
}

/// What the token may do with one resource type for one interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 403 `insufficient_scope`; `needed` is the scope that would allow it.
    Denied {
        needed: String,
    },
    Allowed(Allowed),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// `Some(ids)`: only resources in these patients' compartments; `None`: no compartment restriction.
    pub compartment: Option<Vec<String>>,
    /// Granular filters: any one alternative must hold entirely; empty = unfiltered.
    pub filters: Vec<Filter>,
}

/// The patients a token's level reaches: the patient in context for `patient/` scopes, the member's
/// patients for `user/` scopes (R-8), everyone for `system/` scopes.
pub fn reach_for_level(
    level: Level,
    token_patient: Option<&str>,
    member_patients: &[String],
) -> Reach {
    match level {
        Level::Patient => Reach::Patients(token_patient.map(str::to_owned).into_iter().collect()),
        Level::User => Reach::Patients(member_patients.to_vec()),
        Level::System => Reach::All,
    }
}

/// The scope decision for `rt`/`interaction`; `reach` computes the compartment for the granted level
/// (called only when access is granted at user level, which may need the member's patients).
pub fn decide(
    grant: &Grant,
    rt: ResourceType,
    interaction: Interaction,
    reach: impl FnOnce(Level) -> Reach,
) -> Decision {
    match grant.access(rt.as_str(), interaction) {
        Access::Denied => Decision::Denied {
            needed: match interaction {
                Interaction::Read => format!("patient/{rt}.r"),
                Interaction::Search => format!("patient/{rt}.s"),
            },
        },
        Access::Allowed { level, filters } => {
            let compartment = if is_directory(rt) {
                None
            } else {
                match reach(level) {
                    Reach::All => None,
                    Reach::Patients(p) => Some(p),
                }
            };
            Decision::Allowed(Allowed {
                compartment,
                filters,
            })
        }
    }
}

/// May a resource with these index entries be shown under `allowed`? Checks the compartment and the
/// granular filters; anything that cannot be evaluated is refused (fail closed).
pub fn permits(rt: ResourceType, entries: &IndexEntries, allowed: &Allowed) -> bool {
    if let Some(patients) = &allowed.compartment {
        if !entries.patients.iter().any(|p| patients.contains(p)) {
            return false;
        }
    }
    allowed.filters.is_empty()
        || allowed.filters.iter().any(|alt| {
            alt.iter()
                .all(|(name, value)| matches(rt, entries, name, value))
        })
}

/// Does the resource match one `name=value` filter of a granular scope?
fn matches(rt: ResourceType, entries: &IndexEntries, name: &str, value: &str) -> bool {
    let Ok(p) = params::parse_param(rt, name, value) else {
        return false;
    };
    p.values.iter().any(|v| match v {
        ParamValue::Token(q) => entries
            .tokens
            .iter()
            .any(|(param, system, code)| *param == p.name && token_matches(q, system, code)),
        ParamValue::Reference(targets) => entries
            .references
            .iter()
            .any(|(param, target)| *param == p.name && targets.contains(target)),
        ParamValue::Id(_) | ParamValue::Date { .. } | ParamValue::String(_) => false,
    })
}

fn token_matches(q: &TokenQuery, system: &str, code: &str) -> bool {
    let system_ok = match &q.system {
        None => true,
        Some(s) => s == system,
    };
    let code_ok = match &q.code {
        None => true,
        Some(c) => c == code,
    };
    system_ok && code_ok
}

/// The granular filters as one search parameter the store can apply, when they are simple enough: every
/// alternative is a single `name=value` on the same parameter (`type=a` OR `type=b`). Results are still
/// checked with [`permits`]; this only keeps pages full.
pub fn pushdown(rt: ResourceType, filters: &[Filter]) -> Option<ParsedParam> {
    let first = filters.first()?.first()?.0.clone();
    let mut values = Vec::new();
    for alt in filters {
        match alt.as_slice() {
            [(name, value)] if *name == first => values.push(value.clone()),
            _ => return None,
        }
    }
    let p = params::parse_param(rt, &first, &values.join(",")).ok()?;
    matches!(p.kind, ParamKind::Token | ParamKind::Reference).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOB: &str = r#"{"resourceType":"ExplanationOfBenefit","id":"e1",
        "patient":{"reference":"Patient/p1"},
        "type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type","code":"pharmacy"}]},
        "billablePeriod":{"start":"2020-01-01"}}"#;

    fn entries(json: &str, rt: ResourceType, id: &str) -> IndexEntries {
        params::extract(rt, id, json).unwrap()
    }

    fn allowed(compartment: Option<&[&str]>, filters: Vec<Filter>) -> Allowed {
        Allowed {
            compartment: compartment.map(|c| c.iter().map(|s| s.to_string()).collect()),
            filters,
        }
    }

    fn f(pairs: &[(&str, &str)]) -> Filter {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn compartment_limits_patients() {
        let e = entries(EOB, ResourceType::ExplanationOfBenefit, "e1");
        let rt = ResourceType::ExplanationOfBenefit;
        assert!(permits(rt, &e, &allowed(Some(&["p1"]), vec![])));
        assert!(permits(rt, &e, &allowed(Some(&["p0", "p1"]), vec![])));
        assert!(!permits(rt, &e, &allowed(Some(&["p2"]), vec![])));
        assert!(!permits(rt, &e, &allowed(Some(&[]), vec![])));
        assert!(permits(rt, &e, &allowed(None, vec![])));
    }

    #[test]
    fn granular_filters_are_enforced() {
        let e = entries(EOB, ResourceType::ExplanationOfBenefit, "e1");
        let rt = ResourceType::ExplanationOfBenefit;
        let pharmacy = f(&[(
            "type",
            "http://terminology.hl7.org/CodeSystem/claim-type|pharmacy",
        )]);
        let oral = f(&[(
            "type",
            "http://terminology.hl7.org/CodeSystem/claim-type|oral",
        )]);
        assert!(permits(rt, &e, &allowed(None, vec![pharmacy.clone()])));
        assert!(!permits(rt, &e, &allowed(None, vec![oral.clone()])));
        assert!(permits(
            rt,
            &e,
            &allowed(None, vec![oral.clone(), pharmacy.clone()])
        ));
        // Code without system matches any system; a filter on something we cannot evaluate fails closed.
        assert!(permits(
            rt,
            &e,
            &allowed(None, vec![f(&[("type", "pharmacy")])])
        ));
        assert!(!permits(
            rt,
            &e,
            &allowed(None, vec![f(&[("service-date", "2020")])])
        ));
        assert!(!permits(
            rt,
            &e,
            &allowed(None, vec![f(&[("nonsense", "x")])])
        ));
        // All pairs of one alternative must hold.
        assert!(!permits(
            rt,
            &e,
            &allowed(None, vec![f(&[("type", "pharmacy"), ("type", "oral")])])
        ));
    }

    #[test]
    fn pushdown_only_for_single_parameter_alternatives() {
        let rt = ResourceType::ExplanationOfBenefit;
        let p = pushdown(rt, &[f(&[("type", "pharmacy")]), f(&[("type", "oral")])]).unwrap();
        assert_eq!(p.name, "type");
        assert_eq!(p.values.len(), 2);
        assert!(pushdown(rt, &[]).is_none());
        assert!(pushdown(rt, &[f(&[("type", "a"), ("identifier", "b")])]).is_none());
        assert!(pushdown(rt, &[f(&[("type", "a")]), f(&[("identifier", "b")])]).is_none());
    }

    #[test]
    fn levels_reach_patients() {
        assert_eq!(
            reach_for_level(Level::Patient, Some("p1"), &["p1".into(), "p2".into()]),
            Reach::Patients(vec!["p1".into()])
        );
        assert_eq!(
            reach_for_level(Level::Patient, None, &[]),
            Reach::Patients(vec![])
        );
        assert_eq!(
            reach_for_level(Level::User, Some("p1"), &["p1".into(), "p2".into()]),
            Reach::Patients(vec!["p1".into(), "p2".into()])
        );
        assert_eq!(reach_for_level(Level::System, None, &[]), Reach::All);
    }

    #[test]
    fn decisions_follow_scopes_and_directory_rule() {
        let g = Grant::from_scope_string("patient/ExplanationOfBenefit.rs patient/Organization.r");
        let reach = |_| Reach::Patients(vec!["p1".into()]);
        let d = decide(
            &g,
            ResourceType::ExplanationOfBenefit,
            Interaction::Search,
            reach,
        );
        assert_eq!(d, Decision::Allowed(allowed(Some(&["p1"]), vec![])));
        // Directory types are not compartment-restricted.
        let d = decide(&g, ResourceType::Organization, Interaction::Read, reach);
        assert_eq!(d, Decision::Allowed(allowed(None, vec![])));
        // No search permission on Organization, no scope at all for Coverage.
        assert!(matches!(
            decide(&g, ResourceType::Organization, Interaction::Search, reach),
            Decision::Denied { .. }
        ));
        assert!(matches!(
            decide(&g, ResourceType::Coverage, Interaction::Read, reach),
            Decision::Denied { .. }
        ));
    }
}
