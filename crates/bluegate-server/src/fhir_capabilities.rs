//! What the FHIR API serves, as advertised in the CapabilityStatement: derived from the store's own table
//! of search parameters, so the statement lists exactly what works.

use bluegate_core::discovery::ResourceCapability;
use bluegate_store::fhir::{ParamKind, ResourceType};

/// The CARIN BB profiles of each type (CARIN has none for PractitionerRole and Location: the base
/// resource is declared).
fn profiles(rt: ResourceType) -> Vec<&'static str> {
    match rt {
        ResourceType::ExplanationOfBenefit => vec![
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Inpatient-Institutional",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Outpatient-Institutional",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Oral",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Pharmacy",
            "http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-ExplanationOfBenefit-Professional-NonClinician",
        ],
        ResourceType::Coverage => vec!["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-Coverage"],
        ResourceType::Patient => vec!["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-Patient"],
        ResourceType::Organization => {
            vec!["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-Organization"]
        }
        ResourceType::Practitioner => {
            vec!["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-Practitioner"]
        }
        ResourceType::RelatedPerson => {
            vec!["http://hl7.org/fhir/us/carin-bb/StructureDefinition/C4BB-RelatedPerson"]
        }
        ResourceType::PractitionerRole => {
            vec!["http://hl7.org/fhir/StructureDefinition/PractitionerRole"]
        }
        ResourceType::Location => vec!["http://hl7.org/fhir/StructureDefinition/Location"],
    }
}

/// The canonical definition of a search parameter: CARIN's own where the IG defines one, else FHIR R4
/// core's (whose ids for the shared person parameters start with `individual-`).
fn definition(rt: ResourceType, name: &str) -> String {
    const CARIN: &[(&str, &str)] = &[
        ("ExplanationOfBenefit", "patient"),
        ("ExplanationOfBenefit", "type"),
        ("ExplanationOfBenefit", "identifier"),
        ("ExplanationOfBenefit", "service-date"),
        ("ExplanationOfBenefit", "service-start-date"),
        ("ExplanationOfBenefit", "billable-period-start"),
        ("ExplanationOfBenefit", "provider"),
        ("ExplanationOfBenefit", "care-team"),
        ("ExplanationOfBenefit", "coverage"),
        ("ExplanationOfBenefit", "insurer"),
        ("Coverage", "payor"),
        ("PractitionerRole", "organization"),
        ("PractitionerRole", "practitioner"),
    ];
    let ty = rt.as_str();
    if CARIN.contains(&(ty, name)) {
        return format!(
            "http://hl7.org/fhir/us/carin-bb/SearchParameter/{}-{name}",
            ty.to_ascii_lowercase()
        );
    }
    match name {
        "_id" => "http://hl7.org/fhir/SearchParameter/Resource-id".into(),
        "_lastUpdated" => "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated".into(),
        "family" | "given" | "gender" | "birthdate"
            if matches!(ty, "Patient" | "Practitioner" | "RelatedPerson") =>
        {
            format!("http://hl7.org/fhir/SearchParameter/individual-{name}")
        }
        _ => format!("http://hl7.org/fhir/SearchParameter/{ty}-{name}"),
    }
}

fn type_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Id | ParamKind::Token => "token",
        ParamKind::LastUpdated | ParamKind::Date => "date",
        ParamKind::Reference => "reference",
        ParamKind::String => "string",
    }
}

/// The resource types the FHIR API serves, with their search parameters and `_include`s (built once; the
/// strings live for the whole process).
pub fn served_resources() -> &'static [ResourceCapability] {
    static SERVED: std::sync::LazyLock<Vec<ResourceCapability>> = std::sync::LazyLock::new(build);
    &SERVED
}

fn build() -> Vec<ResourceCapability> {
    ResourceType::ALL
        .iter()
        .map(|&rt| {
            let params = rt.search_params();
            let mut includes: Vec<&'static str> = params
                .iter()
                .filter(|p| p.kind == ParamKind::Reference)
                .map(|p| &*Box::leak(format!("{rt}:{}", p.name).into_boxed_str()))
                .collect();
            if !includes.is_empty() {
                includes.push(Box::leak(format!("{rt}:*").into_boxed_str()));
            }
            ResourceCapability {
                resource_type: rt.as_str(),
                profiles: profiles(rt),
                search_params: params
                    .iter()
                    .map(|p| {
                        (
                            p.name,
                            type_name(p.kind),
                            &*Box::leak(definition(rt, p.name).into_boxed_str()),
                        )
                    })
                    .collect(),
                search_includes: includes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carin_definitions_and_includes() {
        let all = served_resources();
        assert_eq!(all.len(), 8);
        let eob = all
            .iter()
            .find(|r| r.resource_type == "ExplanationOfBenefit")
            .unwrap();
        assert!(eob.search_params.contains(&(
            "service-date",
            "date",
            "http://hl7.org/fhir/us/carin-bb/SearchParameter/explanationofbenefit-service-date"
        )));
        assert!(eob.search_params.contains(&(
            "_id",
            "token",
            "http://hl7.org/fhir/SearchParameter/Resource-id"
        )));
        for inc in [
            "ExplanationOfBenefit:patient",
            "ExplanationOfBenefit:provider",
            "ExplanationOfBenefit:care-team",
            "ExplanationOfBenefit:coverage",
            "ExplanationOfBenefit:insurer",
            "ExplanationOfBenefit:payee",
            "ExplanationOfBenefit:*",
        ] {
            assert!(eob.search_includes.contains(&inc), "{inc}");
        }
        let cov = all.iter().find(|r| r.resource_type == "Coverage").unwrap();
        assert!(cov.search_includes.contains(&"Coverage:payor"));
        let pat = all.iter().find(|r| r.resource_type == "Patient").unwrap();
        assert!(pat.search_params.contains(&(
            "birthdate",
            "date",
            "http://hl7.org/fhir/SearchParameter/individual-birthdate"
        )));
        assert!(pat.search_includes.is_empty());
    }
}
