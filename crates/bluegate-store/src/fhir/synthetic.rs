//! Synthetic CARIN Blue Button 2.0.0 data: members (C4BB-Patient), their Coverage, payer and provider
//! Organizations, Practitioners (NPI), RelatedPersons (personal representatives of minors), and
//! ExplanationOfBenefit resources of every CARIN profile, financial and non-financial ("Basis").
//!
//! The generator streams: [`Synthetic`] is an iterator that holds one member's resources at a time, so
//! memory stays flat for any population. Output is a pure function of the [`SyntheticOptions`]: the same
//! seed and options give byte-identical resources. Each member draws from its own ChaCha8 stream
//! (`set_stream(member index)`), so a member's data does not depend on how many members come before it.
//!
//! Resources are written as compact JSON text directly (no `serde_json::Value`), which keeps generation
//! far faster than any import. Every string that does not come from the generator's own tables (ids and
//! names chosen by the caller) is JSON-escaped.
//!
//! Order of the stream: the shared directory first (payers, provider organizations, locations,
//! practitioners, practitioner roles), then per member: Patient, RelatedPerson (when the member has a
//! representative), Coverage (and a dental Coverage for some), the member's EOBs, and for every 1000th
//! member a second version of its Coverage (so vread and `_history` have data). Every reference is
//! relative (`Type/id`) and resolves within the generated set, except for a few EOBs whose provider is
//! a contained Organization (`#provider`), as CARIN allows.

use std::fmt::Write as _;
use std::io;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::Date;

use super::params::{is_valid_id, ResourceType};

/// Canonical base of the CARIN BB profiles.
pub const C4BB_BASE: &str = "http://hl7.org/fhir/us/carin-bb/StructureDefinition/";
/// CARIN BB version the generated data claims (`meta.profile` canonicals carry `|2.0.0`).
pub const C4BB_VERSION: &str = "2.0.0";
/// Most EOBs per member.
pub const MAX_EOBS_PER_MEMBER: u32 = 10_000;
/// Longest id prefix (so every derived id stays within FHIR's 64 characters).
pub const MAX_ID_PREFIX: usize = 24;

const C4BB_CS: &str = "http://hl7.org/fhir/us/carin-bb/CodeSystem/";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";
const ADJ: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
const CLAIM_TYPE: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
const CPT: &str = "http://www.ama-assn.org/go/cpt";
const CDT: &str = "http://www.ada.org/cdt";
const NDC: &str = "http://hl7.org/fhir/sid/ndc";
const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const ICD10PCS: &str = "http://www.cms.gov/Medicare/Coding/ICD10";
const REVENUE: &str = "https://www.nubc.org/CodeSystem/RevenueCodes";
const POS: &str =
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set";
const US_CORE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";

/// The concrete CARIN EOB profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EobKind {
    InpatientInstitutional,
    OutpatientInstitutional,
    ProfessionalNonClinician,
    Pharmacy,
    Oral,
}

impl EobKind {
    pub const ALL: [EobKind; 5] = [
        EobKind::InpatientInstitutional,
        EobKind::OutpatientInstitutional,
        EobKind::ProfessionalNonClinician,
        EobKind::Pharmacy,
        EobKind::Oral,
    ];

    /// The profile's name without `C4BB-` (`ExplanationOfBenefit-Pharmacy`).
    pub fn profile_name(self) -> &'static str {
        match self {
            EobKind::InpatientInstitutional => "ExplanationOfBenefit-Inpatient-Institutional",
            EobKind::OutpatientInstitutional => "ExplanationOfBenefit-Outpatient-Institutional",
            EobKind::ProfessionalNonClinician => "ExplanationOfBenefit-Professional-NonClinician",
            EobKind::Pharmacy => "ExplanationOfBenefit-Pharmacy",
            EobKind::Oral => "ExplanationOfBenefit-Oral",
        }
    }

    /// The `claim-type` code.
    pub fn claim_type(self) -> &'static str {
        match self {
            EobKind::InpatientInstitutional | EobKind::OutpatientInstitutional => "institutional",
            EobKind::ProfessionalNonClinician => "professional",
            EobKind::Pharmacy => "pharmacy",
            EobKind::Oral => "oral",
        }
    }

    /// The `meta.profile` canonical (with `|2.0.0`), financial or non-financial (Basis).
    pub fn profile(self, financial: bool) -> String {
        format!(
            "{C4BB_BASE}C4BB-{}{}|{C4BB_VERSION}",
            self.profile_name(),
            if financial { "" } else { "-NonFinancial" }
        )
    }
}

/// A member whose Patient id the caller chooses (demo mode: `demo-alice`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientSpec {
    pub id: String,
    /// Given and family name; generated when `None`.
    pub name: Option<(String, String)>,
}

impl PatientSpec {
    pub fn new(id: impl Into<String>) -> Self {
        PatientSpec {
            id: id.into(),
            name: None,
        }
    }
}

/// A personal representative (C4BB-RelatedPerson) of some of the caller-chosen patients: the
/// RelatedPerson's `patient` is the first of them, and it is the `subscriber` of each one's Coverage.
/// Its patients are generated as minors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardianSpec {
    pub id: String,
    pub patients: Vec<String>,
    /// Given and family name (the family name is given to the patients too); generated when `None`.
    pub name: Option<(String, String)>,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticOptions {
    pub seed: u64,
    /// Prefix of every generated id (`{prefix}-pat-7`, `{prefix}-eob-123`, ...). At most
    /// [`MAX_ID_PREFIX`] characters of `[A-Za-z0-9\-\.]`.
    pub id_prefix: String,
    /// Members with caller-chosen Patient ids; they come first.
    pub patients: Vec<PatientSpec>,
    /// Further members with generated ids `{prefix}-pat-{n}`.
    pub numbered_members: u64,
    pub eobs_per_member: u32,
    pub guardians: Vec<GuardianSpec>,
}

impl SyntheticOptions {
    /// `members` generated members, ids prefixed `syn`, 20 EOBs each.
    pub fn numbered(members: u64, seed: u64) -> Self {
        SyntheticOptions {
            seed,
            id_prefix: "syn".into(),
            patients: Vec::new(),
            numbered_members: members,
            eobs_per_member: 20,
            guardians: Vec::new(),
        }
    }

    /// All members: the caller-chosen ones and the numbered ones.
    pub fn members(&self) -> u64 {
        self.patients.len() as u64 + self.numbered_members
    }

    fn validate(&self) -> Result<(), SyntheticError> {
        let bad = |m: String| Err(SyntheticError(m));
        if self.id_prefix.len() > MAX_ID_PREFIX || !is_valid_id(&self.id_prefix) {
            return bad(format!(
                "id prefix must be 1..={MAX_ID_PREFIX} characters of [A-Za-z0-9-.]"
            ));
        }
        if self.eobs_per_member > MAX_EOBS_PER_MEMBER {
            return bad(format!("at most {MAX_EOBS_PER_MEMBER} EOBs per member"));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.patients {
            if !is_valid_id(&p.id) {
                return bad(format!("invalid patient id {:?}", clip(&p.id)));
            }
            if !seen.insert(p.id.as_str()) {
                return bad(format!("duplicate patient id {:?}", clip(&p.id)));
            }
        }
        let mut represented = std::collections::HashSet::new();
        for g in &self.guardians {
            if !is_valid_id(&g.id) {
                return bad(format!("invalid RelatedPerson id {:?}", clip(&g.id)));
            }
            if g.patients.is_empty() {
                return bad(format!("RelatedPerson {} has no patients", g.id));
            }
            for p in &g.patients {
                if !seen.contains(p.as_str()) {
                    return bad(format!(
                        "RelatedPerson {} names {:?}, which is not one of the patients",
                        g.id,
                        clip(p)
                    ));
                }
                if !represented.insert(p.as_str()) {
                    return bad(format!("patient {p} has more than one RelatedPerson"));
                }
            }
        }
        Ok(())
    }
}

/// Options that cannot be generated from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntheticError(pub String);

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One generated resource (compact JSON, one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticResource {
    pub resource_type: ResourceType,
    pub id: String,
    pub json: String,
}

/// How many of each were generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyntheticCounts {
    pub total: u64,
    pub by_type: std::collections::BTreeMap<&'static str, u64>,
}

impl SyntheticCounts {
    pub fn add(&mut self, rt: ResourceType) {
        self.total += 1;
        *self.by_type.entry(rt.as_str()).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------------

struct Payer {
    name: &'static str,
    domain: &'static str,
    payer_id: &'static str,
    code: &'static str,
}

const PAYERS: [Payer; 3] = [
    Payer {
        name: "Blue Harbor Health Plan",
        domain: "www.blueharborhealth.example",
        payer_id: "BHH01",
        code: "BH",
    },
    Payer {
        name: "Summit Mutual Health",
        domain: "www.summitmutual.example",
        payer_id: "SMH02",
        code: "SM",
    },
    Payer {
        name: "Clearwater Dental Benefits",
        domain: "www.clearwaterdental.example",
        payer_id: "CWD03",
        code: "CD",
    },
];
const DENTAL_PAYER: usize = 2;

const FEMALE: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Sharon",
    "Laura",
    "Cynthia",
    "Amy",
    "Angela",
    "Anna",
    "Brenda",
    "Emma",
    "Olivia",
    "Sofia",
    "Maria",
    "Grace",
    "Chloe",
    "Isabella",
];
const MALE: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Christopher",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Andrew",
    "Paul",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "Timothy",
    "Ronald",
    "George",
    "Jason",
    "Edward",
    "Jeffrey",
    "Ryan",
    "Jacob",
    "Nicholas",
    "Eric",
    "Jonathan",
    "Stephen",
    "Larry",
    "Justin",
    "Scott",
    "Liam",
    "Noah",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
];
const STREETS: &[&str] = &[
    "Main Street",
    "Oak Avenue",
    "Maple Drive",
    "Cedar Lane",
    "Pine Street",
    "Elm Street",
    "Washington Avenue",
    "Lake Road",
    "Hillcrest Drive",
    "Park Place",
    "River Road",
    "Sunset Blvd",
    "Church Street",
    "Highland Avenue",
    "Forest Drive",
    "Meadow Lane",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Pittsburgh", "PA", "152"),
    ("Philadelphia", "PA", "191"),
    ("Columbus", "OH", "432"),
    ("Cleveland", "OH", "441"),
    ("Baltimore", "MD", "212"),
    ("Richmond", "VA", "232"),
    ("Charlotte", "NC", "282"),
    ("Nashville", "TN", "372"),
    ("Atlanta", "GA", "303"),
    ("Tampa", "FL", "336"),
    ("Chicago", "IL", "606"),
    ("Detroit", "MI", "482"),
    ("Madison", "WI", "537"),
    ("Minneapolis", "MN", "554"),
    ("Denver", "CO", "802"),
    ("Phoenix", "AZ", "850"),
    ("Austin", "TX", "787"),
    ("Portland", "OR", "972"),
    ("Seattle", "WA", "981"),
    ("Boston", "MA", "021"),
];
const ORG_STEMS: &[&str] = &[
    "Riverside",
    "Lakeside",
    "Summit",
    "Valley",
    "Harbor",
    "Cedar",
    "Maple",
    "Northside",
    "Greenfield",
    "Brookdale",
    "Fairview",
    "Highland",
    "Pinecrest",
    "Westgate",
    "Eastwood",
    "Silver Creek",
    "Oakridge",
    "Sunrise",
    "Clearview",
    "Stonebridge",
];

/// (code, display)
type Code = (&'static str, &'static str);

const CPT_OFFICE: &[Code] = &[
    ("99213", "Office visit, established patient, low complexity"),
    (
        "99214",
        "Office visit, established patient, moderate complexity",
    ),
    ("99203", "Office visit, new patient, low complexity"),
    (
        "99395",
        "Preventive visit, established patient, 18-39 years",
    ),
    ("80053", "Comprehensive metabolic panel"),
    ("85025", "Complete blood count with differential"),
    ("36415", "Routine venipuncture"),
    ("71046", "Chest X-ray, 2 views"),
    ("93000", "Electrocardiogram, complete"),
    ("90686", "Influenza vaccine, quadrivalent"),
    ("97110", "Therapeutic exercises, each 15 minutes"),
    ("20610", "Arthrocentesis, major joint"),
    ("11721", "Debridement of nails, 6 or more"),
    ("73630", "X-ray of foot, 3 views"),
    ("81002", "Urinalysis, non-automated"),
];
const CPT_HOSPITAL: &[Code] = &[
    ("99283", "Emergency department visit, moderate severity"),
    ("99284", "Emergency department visit, high severity"),
    ("74177", "CT abdomen and pelvis with contrast"),
    ("70450", "CT head without contrast"),
    ("45378", "Colonoscopy, diagnostic"),
    ("43239", "Upper GI endoscopy with biopsy"),
    ("29881", "Knee arthroscopy with meniscectomy"),
    ("66984", "Cataract removal with lens implant"),
    ("47562", "Laparoscopic cholecystectomy"),
    ("80048", "Basic metabolic panel"),
];
const REVENUE_CODES: &[Code] = &[
    ("0120", "Room & board, semi-private"),
    ("0250", "Pharmacy, general"),
    ("0300", "Laboratory, general"),
    ("0320", "Radiology, diagnostic"),
    ("0360", "Operating room services"),
    ("0450", "Emergency room"),
    ("0636", "Drugs requiring detailed coding"),
    ("0710", "Recovery room"),
    ("0730", "EKG/ECG"),
    ("0762", "Observation room"),
];
const NDC_CODES: &[Code] = &[
    ("0093-7146-56", "Atorvastatin calcium 20 MG oral tablet"),
    ("0378-0018-01", "Lisinopril 10 MG oral tablet"),
    ("0591-0405-01", "Metformin hydrochloride 500 MG oral tablet"),
    ("68180-0513-01", "Amlodipine besylate 5 MG oral tablet"),
    ("0781-1506-10", "Omeprazole 20 MG delayed release capsule"),
    ("16729-0044-01", "Sertraline 50 MG oral tablet"),
    ("0143-9785-01", "Amoxicillin 500 MG oral capsule"),
    ("60505-0141-01", "Levothyroxine sodium 50 MCG oral tablet"),
    ("0172-4364-60", "Gabapentin 300 MG oral capsule"),
    ("0603-3886-21", "Albuterol 90 MCG/actuation inhaler"),
    ("0777-3105-02", "Fluoxetine 20 MG oral capsule"),
    ("65862-0157-01", "Losartan potassium 50 MG oral tablet"),
];
const CDT_CODES: &[Code] = &[
    ("D0120", "Periodic oral evaluation"),
    ("D0150", "Comprehensive oral evaluation"),
    ("D0210", "Intraoral complete series of radiographic images"),
    ("D0274", "Bitewings, four radiographic images"),
    ("D1110", "Prophylaxis, adult"),
    ("D1120", "Prophylaxis, child"),
    ("D1208", "Topical application of fluoride"),
    ("D2140", "Amalgam, one surface, primary or permanent"),
    ("D2330", "Resin-based composite, one surface, anterior"),
    ("D2740", "Crown, porcelain/ceramic"),
    ("D3310", "Endodontic therapy, anterior tooth"),
    ("D7140", "Extraction, erupted tooth"),
];
const ICD_MEDICAL: &[Code] = &[
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("M54.50", "Low back pain, unspecified"),
    ("Z00.00", "Encounter for general adult medical examination"),
    (
        "K21.9",
        "Gastro-esophageal reflux disease without esophagitis",
    ),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("R07.9", "Chest pain, unspecified"),
    (
        "S83.241A",
        "Other tear of medial meniscus, right knee, initial encounter",
    ),
    ("K80.20", "Calculus of gallbladder without cholecystitis"),
    ("F41.1", "Generalized anxiety disorder"),
    ("M17.11", "Unilateral primary osteoarthritis, right knee"),
];
const ICD_DENTAL: &[Code] = &[
    (
        "Z01.20",
        "Encounter for dental examination and cleaning without abnormal findings",
    ),
    (
        "Z01.21",
        "Encounter for dental examination and cleaning with abnormal findings",
    ),
    (
        "K02.52",
        "Dental caries on pit and fissure surface penetrating into dentin",
    ),
    ("K05.10", "Chronic gingivitis, plaque induced"),
    ("K04.7", "Periapical abscess without sinus"),
];
const ICD_PCS: &[Code] = &[
    (
        "0DTJ4ZZ",
        "Resection of appendix, percutaneous endoscopic approach",
    ),
    (
        "0SRC0J9",
        "Replacement of right knee joint with synthetic substitute",
    ),
    (
        "02703ZZ",
        "Dilation of coronary artery, one artery, percutaneous",
    ),
    (
        "0FT44ZZ",
        "Resection of gallbladder, percutaneous endoscopic approach",
    ),
];

// ---------------------------------------------------------------------------------------------------
// JSON text helpers (table strings are plain ASCII without quotes or backslashes; everything else goes
// through `esc`)
// ---------------------------------------------------------------------------------------------------

/// Appends `s` as a JSON string literal.
fn esc(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn coding(out: &mut String, system: &str, code: &str, display: Option<&str>) {
    out.push_str("{\"system\":\"");
    out.push_str(system);
    out.push_str("\",\"code\":\"");
    out.push_str(code);
    out.push('"');
    if let Some(d) = display {
        out.push_str(",\"display\":\"");
        out.push_str(d);
        out.push('"');
    }
    out.push('}');
}

/// `{"coding":[{...}]}`
fn concept(out: &mut String, system: &str, code: &str, display: Option<&str>) {
    out.push_str("{\"coding\":[");
    coding(out, system, code, display);
    out.push_str("]}");
}

/// `{"coding":[{...}],"text":"..."}`
fn concept_text(out: &mut String, system: &str, code: &str, text: &str) {
    out.push_str("{\"coding\":[");
    coding(out, system, code, None);
    out.push_str("],\"text\":\"");
    out.push_str(text);
    out.push_str("\"}");
}

fn reference(out: &mut String, rt: &str, id: &str) {
    out.push_str("{\"reference\":\"");
    out.push_str(rt);
    out.push('/');
    out.push_str(id);
    out.push_str("\"}");
}

fn reference_display(out: &mut String, rt: &str, id: &str, display: &str) {
    out.push_str("{\"reference\":\"");
    out.push_str(rt);
    out.push('/');
    out.push_str(id);
    out.push_str("\",\"display\":");
    esc(out, display);
    out.push('}');
}

/// `{"value":12.34,"currency":"USD"}` from cents (non-negative).
fn money(out: &mut String, cents: i64) {
    let _ = write!(
        out,
        "{{\"value\":{}.{:02},\"currency\":\"USD\"}}",
        cents / 100,
        cents % 100
    );
}

fn date(out: &mut String, d: Date) {
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}\"",
        d.year(),
        u8::from(d.month()),
        d.day()
    );
}

fn date_time(out: &mut String, d: Date, secs: u32) {
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}-05:00\"",
        d.year(),
        u8::from(d.month()),
        d.day(),
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
}

fn meta(out: &mut String, profile: &str, last_updated: Date, secs: u32) {
    out.push_str(",\"meta\":{\"lastUpdated\":");
    date_time(out, last_updated, secs);
    out.push_str(",\"profile\":[\"");
    out.push_str(profile);
    out.push_str("\"]}");
}

fn head(out: &mut String, rt: &str, id: &str) {
    out.push_str("{\"resourceType\":\"");
    out.push_str(rt);
    out.push_str("\",\"id\":\"");
    out.push_str(id);
    out.push('"');
}

fn c4bb(name: &str) -> String {
    format!("{C4BB_BASE}C4BB-{name}|{C4BB_VERSION}")
}

/// A valid NPI: 9 digits then the Luhn check digit computed over `80840` + those digits.
fn npi(base9: u64) -> String {
    let digits = format!("80840{base9:09}");
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    format!("{base9:09}{}", (10 - sum % 10) % 10)
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Days since 2019-01-01 → date. The range the EOBs cover: 2019-01-01 .. 2025-06-30.
const FIRST_SERVICE_DAY: i32 = 2_458_485; // Julian day of 2019-01-01
const SERVICE_DAYS: i32 = 2_373;

fn day(julian: i32) -> Date {
    Date::from_julian_day(julian).unwrap_or(Date::MIN)
}

// ---------------------------------------------------------------------------------------------------
// The shared directory: payers, provider organizations, locations, practitioners, roles
// ---------------------------------------------------------------------------------------------------

/// Kinds of provider organizations (index % 4).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OrgKind {
    Hospital,
    MedicalGroup,
    Pharmacy,
    Dental,
}

impl OrgKind {
    fn of(k: usize) -> OrgKind {
        match k % 4 {
            0 => OrgKind::Hospital,
            1 => OrgKind::MedicalGroup,
            2 => OrgKind::Pharmacy,
            _ => OrgKind::Dental,
        }
    }
}

struct Directory {
    prefix: String,
    seed_key: [u8; 32],
    orgs: usize,
    practitioners: usize,
    npi_salt: u64,
}

impl Directory {
    fn new(opts: &SyntheticOptions) -> Self {
        let members = opts.members();
        let orgs = (members / 20).clamp(8, 5_000) as usize;
        let practitioners = (members / 10).clamp(10, 10_000) as usize;
        let seed_key = ChaCha8Rng::seed_from_u64(opts.seed).get_seed();
        Directory {
            prefix: opts.id_prefix.clone(),
            seed_key,
            orgs,
            practitioners,
            npi_salt: opts.seed % 100_000_000,
        }
    }

    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed_key);
        rng.set_stream(stream);
        rng
    }

    fn payer_id(&self, k: usize) -> String {
        format!("{}-payer-{}", self.prefix, k + 1)
    }
    fn org_id(&self, k: usize) -> String {
        format!("{}-org-{k}", self.prefix)
    }
    fn location_id(&self, k: usize) -> String {
        format!("{}-loc-{k}", self.prefix)
    }
    fn practitioner_id(&self, k: usize) -> String {
        format!("{}-pract-{k}", self.prefix)
    }
    fn role_id(&self, k: usize) -> String {
        format!("{}-role-{k}", self.prefix)
    }

    fn hospitals(&self) -> usize {
        self.orgs.div_ceil(4)
    }

    /// A random organization of `kind`.
    fn org_of(&self, rng: &mut ChaCha8Rng, kind: OrgKind) -> usize {
        let offset = kind as usize;
        let n = (self.orgs - offset).div_ceil(4).max(1);
        rng.random_range(0..n) * 4 + offset
    }

    fn is_dentist(k: usize) -> bool {
        k % 5 == 4
    }

    fn dentist(&self, rng: &mut ChaCha8Rng) -> usize {
        let n = (self.practitioners / 5).max(1);
        rng.random_range(0..n) * 5 + 4
    }

    fn physician(&self, rng: &mut ChaCha8Rng) -> usize {
        loop {
            let k = rng.random_range(0..self.practitioners);
            if !Self::is_dentist(k) {
                return k;
            }
        }
    }

    fn org_npi(&self, k: usize) -> String {
        npi(100_000_000 + (k as u64 * 104_729 + self.npi_salt) % 100_000_000)
    }
    fn practitioner_npi(&self, k: usize) -> String {
        npi(200_000_000 + (k as u64 * 104_729 + self.npi_salt) % 100_000_000)
    }

    fn org_name(&self, k: usize) -> String {
        let stem = ORG_STEMS[(k / 4) % ORG_STEMS.len()];
        let (city, _, _) = CITIES[(k / 4 / ORG_STEMS.len()) % CITIES.len()];
        let n = k / 4 / ORG_STEMS.len() / CITIES.len();
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(" {}", n + 1)
        };
        match OrgKind::of(k) {
            OrgKind::Hospital => format!("{stem} {city} Hospital{suffix}"),
            OrgKind::MedicalGroup => format!("{stem} Medical Group of {city}{suffix}"),
            OrgKind::Pharmacy => format!("{stem} Pharmacy {city}{suffix}"),
            OrgKind::Dental => format!("{stem} Family Dentistry {city}{suffix}"),
        }
    }

    fn practitioner_name(&self, k: usize) -> (&'static str, &'static str) {
        let mut rng = self.rng((1 << 62) | k as u64);
        let given = if rng.random_bool(0.5) {
            pick(&mut rng, FEMALE)
        } else {
            pick(&mut rng, MALE)
        };
        (given, pick(&mut rng, FAMILY))
    }

    /// Number of shared resources.
    fn len(&self) -> usize {
        PAYERS.len() + self.orgs + self.hospitals() + 2 * self.practitioners
    }

    fn shared(&self, i: usize) -> Option<SyntheticResource> {
        let mut i = i;
        if i < PAYERS.len() {
            return Some(self.payer(i));
        }
        i -= PAYERS.len();
        if i < self.orgs {
            return Some(self.organization(i));
        }
        i -= self.orgs;
        if i < self.hospitals() {
            return Some(self.location(i * 4));
        }
        i -= self.hospitals();
        if i < self.practitioners {
            return Some(self.practitioner(i));
        }
        i -= self.practitioners;
        if i < self.practitioners {
            return Some(self.practitioner_role(i));
        }
        None
    }

    fn address(out: &mut String, rng: &mut ChaCha8Rng, kind: &str) {
        let (city, state, zip) = pick(rng, CITIES);
        let _ = write!(
            out,
            ",\"address\":[{{\"type\":\"{kind}\",\"line\":[\"{} {}\"],\"city\":\"{city}\",\"state\":\"{state}\",\"postalCode\":\"{zip}{:02}\",\"country\":\"US\"}}]",
            rng.random_range(1..9999),
            pick(rng, STREETS),
            rng.random_range(1..99)
        );
    }

    fn phone(out: &mut String, rng: &mut ChaCha8Rng, use_: &str) {
        let _ = write!(
            out,
            ",\"telecom\":[{{\"system\":\"phone\",\"value\":\"({}) 555-{:04}\",\"use\":\"{use_}\"}}]",
            rng.random_range(201..990),
            rng.random_range(0..10_000)
        );
    }

    fn payer(&self, k: usize) -> SyntheticResource {
        let p = &PAYERS[k];
        let id = self.payer_id(k);
        let mut rng = self.rng((1 << 61) | k as u64);
        let mut out = String::with_capacity(900);
        head(&mut out, "Organization", &id);
        meta(
            &mut out,
            &c4bb("Organization"),
            day(FIRST_SERVICE_DAY),
            3600,
        );
        out.push_str(",\"identifier\":[{\"type\":");
        concept(
            &mut out,
            &format!("{C4BB_CS}C4BBIdentifierType"),
            "payerid",
            None,
        );
        let _ = write!(out, ",\"value\":\"{}\"}},{{\"type\":", p.payer_id);
        concept(
            &mut out,
            V2_0203,
            "NPI",
            Some("National provider identifier"),
        );
        let _ = write!(
            out,
            ",\"system\":\"{NPI_SYSTEM}\",\"value\":\"{}\"}}]",
            npi(300_000_000 + k as u64 * 7 + self.npi_salt % 1000)
        );
        out.push_str(",\"active\":true,\"type\":[");
        concept(
            &mut out,
            "http://terminology.hl7.org/CodeSystem/organization-type",
            "pay",
            Some("Payer"),
        );
        let _ = write!(out, "],\"name\":\"{}\"", p.name);
        Self::phone(&mut out, &mut rng, "work");
        Self::address(&mut out, &mut rng, "physical");
        out.push('}');
        SyntheticResource {
            resource_type: ResourceType::Organization,
            id,
            json: out,
        }
    }

    fn organization(&self, k: usize) -> SyntheticResource {
        let id = self.org_id(k);
        let mut rng = self.rng((1 << 60) | k as u64);
        let mut out = String::with_capacity(900);
        head(&mut out, "Organization", &id);
        meta(
            &mut out,
            &c4bb("Organization"),
            day(FIRST_SERVICE_DAY),
            7200,
        );
        out.push_str(",\"identifier\":[{\"type\":");
        concept(
            &mut out,
            V2_0203,
            "NPI",
            Some("National Provider Identifier"),
        );
        let _ = write!(
            out,
            ",\"system\":\"{NPI_SYSTEM}\",\"value\":\"{}\"}},{{\"type\":",
            self.org_npi(k)
        );
        concept(&mut out, V2_0203, "TAX", Some("Tax ID number"));
        let _ = write!(
            out,
            ",\"system\":\"urn:oid:2.16.840.1.113883.4.4\",\"value\":\"{:02}-{:07}\"}}]",
            rng.random_range(10..99),
            rng.random_range(0..10_000_000)
        );
        out.push_str(",\"active\":true,\"type\":[");
        concept(
            &mut out,
            "http://terminology.hl7.org/CodeSystem/organization-type",
            "prov",
            Some("Healthcare Provider"),
        );
        out.push_str("],\"name\":");
        esc(&mut out, &self.org_name(k));
        Self::phone(&mut out, &mut rng, "work");
        Self::address(&mut out, &mut rng, "physical");
        out.push('}');
        SyntheticResource {
            resource_type: ResourceType::Organization,
            id,
            json: out,
        }
    }

    fn location(&self, org: usize) -> SyntheticResource {
        let id = self.location_id(org);
        let mut rng = self.rng((1 << 59) | org as u64);
        let mut out = String::with_capacity(700);
        head(&mut out, "Location", &id);
        meta(
            &mut out,
            &format!("{US_CORE}us-core-location"),
            day(FIRST_SERVICE_DAY),
            7300,
        );
        let _ = write!(
            out,
            ",\"identifier\":[{{\"system\":\"https://{}/fhir/location\",\"value\":\"LOC{org:06}\"}}]",
            PAYERS[0].domain
        );
        out.push_str(",\"status\":\"active\",\"name\":");
        esc(&mut out, &format!("{} Main Campus", self.org_name(org)));
        Self::phone(&mut out, &mut rng, "work");
        out.push_str(",\"address\":{");
        let (city, state, zip) = pick(&mut rng, CITIES);
        let _ = write!(
            out,
            "\"line\":[\"{} {}\"],\"city\":\"{city}\",\"state\":\"{state}\",\"postalCode\":\"{zip}{:02}\"}}",
            rng.random_range(1..9999),
            pick(&mut rng, STREETS),
            rng.random_range(1..99)
        );
        out.push_str(",\"managingOrganization\":");
        reference(&mut out, "Organization", &self.org_id(org));
        out.push('}');
        SyntheticResource {
            resource_type: ResourceType::Location,
            id,
            json: out,
        }
    }

    fn practitioner(&self, k: usize) -> SyntheticResource {
        let id = self.practitioner_id(k);
        let (given, family) = self.practitioner_name(k);
        let mut rng = self.rng((1 << 58) | k as u64);
        let mut out = String::with_capacity(700);
        head(&mut out, "Practitioner", &id);
        meta(
            &mut out,
            &c4bb("Practitioner"),
            day(FIRST_SERVICE_DAY),
            7400,
        );
        out.push_str(",\"identifier\":[{\"type\":");
        concept(
            &mut out,
            V2_0203,
            "NPI",
            Some("National Provider Identifier"),
        );
        let _ = write!(
            out,
            ",\"system\":\"{NPI_SYSTEM}\",\"value\":\"{}\"}}]",
            self.practitioner_npi(k)
        );
        let prefix = if Self::is_dentist(k) { "DDS" } else { "MD" };
        let _ = write!(
            out,
            ",\"active\":true,\"name\":[{{\"family\":\"{family}\",\"given\":[\"{given}\"],\"prefix\":[\"Dr.\"],\"suffix\":[\"{prefix}\"]}}]"
        );
        Self::phone(&mut out, &mut rng, "work");
        Self::address(&mut out, &mut rng, "physical");
        out.push('}');
        SyntheticResource {
            resource_type: ResourceType::Practitioner,
            id,
            json: out,
        }
    }

    fn practitioner_role(&self, k: usize) -> SyntheticResource {
        let id = self.role_id(k);
        let mut rng = self.rng((1 << 57) | k as u64);
        let kind = if Self::is_dentist(k) {
            OrgKind::Dental
        } else if rng.random_bool(0.5) {
            OrgKind::Hospital
        } else {
            OrgKind::MedicalGroup
        };
        let org = self.org_of(&mut rng, kind);
        let mut out = String::with_capacity(600);
        head(&mut out, "PractitionerRole", &id);
        meta(
            &mut out,
            &format!("{US_CORE}us-core-practitionerrole"),
            day(FIRST_SERVICE_DAY),
            7500,
        );
        let _ = write!(
            out,
            ",\"identifier\":[{{\"system\":\"https://{}/fhir/practitionerrole\",\"value\":\"PR{k:07}\"}}]",
            PAYERS[0].domain
        );
        out.push_str(",\"active\":true,\"practitioner\":");
        reference(&mut out, "Practitioner", &self.practitioner_id(k));
        out.push_str(",\"organization\":");
        reference(&mut out, "Organization", &self.org_id(org));
        out.push_str(",\"code\":[");
        let (code, display) = if Self::is_dentist(k) {
            ("1223G0001X", "General Practice Dentistry")
        } else {
            pick(
                &mut rng,
                &[
                    ("207Q00000X", "Family Medicine"),
                    ("207R00000X", "Internal Medicine"),
                    ("208000000X", "Pediatrics"),
                    ("207X00000X", "Orthopaedic Surgery"),
                    ("207RC0000X", "Cardiovascular Disease"),
                ],
            )
        };
        concept(
            &mut out,
            "http://nucc.org/provider-taxonomy",
            code,
            Some(display),
        );
        out.push_str("]}");
        SyntheticResource {
            resource_type: ResourceType::PractitionerRole,
            id,
            json: out,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------------------------------

/// Everything an EOB needs to know about its member.
struct Member {
    index: u64,
    patient_id: String,
    coverage_id: String,
    dental_coverage_id: Option<String>,
    payer: usize,
    /// `RelatedPerson/x` or `Patient/x` (the Coverage subscriber).
    subscriber: (&'static str, String),
}

/// Reference date for ages (members born after 2007-07-01 are minors).
fn is_minor(birth: Date) -> bool {
    birth > Date::from_julian_day(2_454_283).unwrap_or(Date::MIN)
}

struct MemberGen<'a> {
    dir: &'a Directory,
    opts: &'a SyntheticOptions,
}

impl MemberGen<'_> {
    fn patient_id(&self, index: u64) -> String {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.opts.patients.get(i))
        {
            Some(p) => p.id.clone(),
            None => format!(
                "{}-pat-{}",
                self.opts.id_prefix,
                index - self.opts.patients.len() as u64
            ),
        }
    }

    /// All resources of member `index`, in output order.
    fn member(&self, index: u64, out: &mut Vec<SyntheticResource>) {
        let dir = self.dir;
        let prefix = &self.opts.id_prefix;
        let mut rng = dir.rng(index + 1);
        let patient_id = self.patient_id(index);
        let spec = usize::try_from(index)
            .ok()
            .and_then(|i| self.opts.patients.get(i));
        let guardian = spec.and_then(|p| {
            self.opts
                .guardians
                .iter()
                .find(|g| g.patients.contains(&p.id))
        });

        // Demographics.
        let female = rng.random_bool(0.52);
        let mut given = if female {
            pick(&mut rng, FEMALE)
        } else {
            pick(&mut rng, MALE)
        }
        .to_string();
        let mut family = pick(&mut rng, FAMILY).to_string();
        let birth_julian = match (spec.is_some(), guardian.is_some()) {
            // Caller-chosen members: adults, or minors when they have a representative.
            (true, false) => rng.random_range(2_433_283..2_451_545), // 1950 .. 1999
            (true, true) => rng.random_range(2_455_000..2_459_000),  // 2009 .. 2020
            _ => rng.random_range(2_423_000..2_460_000),             // 1921 .. 2023
        };
        let birth = day(birth_julian);
        if let Some((g, f)) = spec.and_then(|p| p.name.clone()) {
            given = g;
            family = f;
        }
        if let Some((_, f)) = guardian.and_then(|g| g.name.as_ref()) {
            family = f.clone();
        }
        let gender = match rng.random_range(0..1000) {
            0..=4 => "other",
            5..=9 => "unknown",
            _ if female => "female",
            _ => "male",
        };
        let payer = usize::from(rng.random_bool(0.4));
        let member_no = (index.wrapping_mul(7_654_321).wrapping_add(dir.npi_salt)) % 1_000_000_000;
        let member_id = format!("{}{member_no:09}", PAYERS[payer].code);

        // A representative: the caller's guardian, or a parent for generated minors.
        let mut related: Option<(String, bool)> = None; // (id, emit here)
        if let Some(g) = guardian {
            let first = g.patients.first().is_some_and(|p| *p == patient_id);
            related = Some((g.id.clone(), first));
        } else if spec.is_none() && is_minor(birth) {
            related = Some((format!("{prefix}-rp-{index}"), true));
        }
        let subscriber = match &related {
            Some((id, _)) => ("RelatedPerson", id.clone()),
            None => ("Patient", patient_id.clone()),
        };
        let dental = index.is_multiple_of(3);
        let member = Member {
            index,
            patient_id: patient_id.clone(),
            coverage_id: format!("{prefix}-cov-{index}"),
            dental_coverage_id: dental.then(|| format!("{prefix}-dcov-{index}")),
            payer,
            subscriber,
        };

        // Patient.
        let mut s = String::with_capacity(1200);
        head(&mut s, "Patient", &patient_id);
        meta(&mut s, &c4bb("Patient"), day(FIRST_SERVICE_DAY + 30), 3600);
        s.push_str(",\"identifier\":[{\"type\":");
        concept(&mut s, V2_0203, "MB", Some("Member Number"));
        let _ = write!(
            s,
            ",\"system\":\"https://{}/fhir/memberidentifier\",\"value\":\"{member_id}\"}},{{\"type\":",
            PAYERS[payer].domain
        );
        concept(
            &mut s,
            &format!("{C4BB_CS}C4BBIdentifierType"),
            "um",
            Some("Unique Member ID"),
        );
        let _ = write!(
            s,
            ",\"system\":\"https://{}/fhir/uniquememberidentifier\",\"value\":\"{member_id}U\"}}]",
            PAYERS[payer].domain
        );
        s.push_str(",\"active\":true,\"name\":[{\"use\":\"official\",\"family\":");
        esc(&mut s, &family);
        s.push_str(",\"given\":[");
        esc(&mut s, &given);
        s.push_str("]}]");
        Directory::phone(&mut s, &mut rng, "home");
        let _ = write!(s, ",\"gender\":\"{gender}\",\"birthDate\":");
        date(&mut s, birth);
        Directory::address(&mut s, &mut rng, "physical");
        s.push('}');
        out.push(SyntheticResource {
            resource_type: ResourceType::Patient,
            id: patient_id.clone(),
            json: s,
        });

        // RelatedPerson.
        if let Some((rp_id, true)) = &related {
            let (rg, rf) = match guardian.and_then(|g| g.name.clone()) {
                Some(n) => n,
                None => {
                    let mother = rng.random_bool(0.5);
                    let g = if mother {
                        pick(&mut rng, FEMALE)
                    } else {
                        pick(&mut rng, MALE)
                    };
                    (g.to_string(), family.clone())
                }
            };
            let mother = FEMALE.contains(&rg.as_str());
            let mut s = String::with_capacity(900);
            head(&mut s, "RelatedPerson", rp_id);
            meta(
                &mut s,
                &c4bb("RelatedPerson"),
                day(FIRST_SERVICE_DAY + 30),
                3700,
            );
            let _ = write!(
                s,
                ",\"identifier\":[{{\"system\":\"https://{}/fhir/representative\",\"value\":\"{member_id}R\"}}]",
                PAYERS[payer].domain
            );
            s.push_str(",\"active\":true,\"patient\":");
            reference(&mut s, "Patient", &patient_id);
            s.push_str(",\"relationship\":[");
            concept(
                &mut s,
                "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                if mother { "MTH" } else { "FTH" },
                Some(if mother { "mother" } else { "father" }),
            );
            s.push(',');
            concept(
                &mut s,
                "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                "GUARD",
                Some("guardian"),
            );
            s.push_str("],\"name\":[{\"family\":");
            esc(&mut s, &rf);
            s.push_str(",\"given\":[");
            esc(&mut s, &rg);
            s.push_str("]}]");
            Directory::phone(&mut s, &mut rng, "home");
            s.push('}');
            out.push(SyntheticResource {
                resource_type: ResourceType::RelatedPerson,
                id: rp_id.clone(),
                json: s,
            });
        }

        // Coverage (and dental coverage).
        let start_julian = FIRST_SERVICE_DAY - 365 + 365 * rng.random_range(0..2);
        let plan = rng.random_range(1..6);
        out.push(self.coverage(&member, &member_id, payer, start_julian, plan, 1));
        if let Some(dcov) = &member.dental_coverage_id {
            out.push(self.dental_coverage(&member, dcov, &member_id, start_julian));
        }

        // EOBs.
        let eobs = u64::from(self.opts.eobs_per_member);
        for j in 0..eobs {
            let g = index * eobs + j;
            out.push(self.eob(&mut rng, &member, g));
        }

        // A later version of the Coverage for every 1000th member (vread, versioned references).
        if index.is_multiple_of(1000) {
            out.push(self.coverage(&member, &member_id, payer, start_julian, plan, 2));
        }
    }

    fn coverage(
        &self,
        m: &Member,
        member_id: &str,
        payer: usize,
        start_julian: i32,
        plan: u32,
        version: u8,
    ) -> SyntheticResource {
        let p = &PAYERS[payer];
        let mut s = String::with_capacity(1500);
        head(&mut s, "Coverage", &m.coverage_id);
        meta(
            &mut s,
            &c4bb("Coverage"),
            day(FIRST_SERVICE_DAY + 31 + i32::from(version) * 400),
            3800,
        );
        s.push_str(",\"identifier\":[{\"type\":");
        concept(&mut s, V2_0203, "MB", Some("Member Number"));
        let _ = write!(
            s,
            ",\"system\":\"https://{}/fhir/memberidentifier\",\"value\":\"{member_id}01\",\"assigner\":",
            p.domain
        );
        reference_display(&mut s, "Organization", &self.dir.payer_id(payer), p.name);
        s.push_str("}],\"status\":\"active\",\"type\":");
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "HIP",
            Some("health insurance plan policy"),
        );
        let (sub_type, sub_id) = &m.subscriber;
        s.push_str(",\"policyHolder\":");
        reference(&mut s, sub_type, sub_id);
        s.push_str(",\"subscriber\":");
        reference(&mut s, sub_type, sub_id);
        let _ = write!(s, ",\"subscriberId\":\"{member_id}\",\"beneficiary\":");
        reference(&mut s, "Patient", &m.patient_id);
        let self_ = *sub_type == "Patient";
        let _ = write!(
            s,
            ",\"dependent\":\"{}\",\"relationship\":",
            if self_ { "01" } else { "02" }
        );
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
            if self_ { "self" } else { "child" },
            Some(if self_ { "Self" } else { "Child" }),
        );
        s.push_str(",\"period\":{\"start\":");
        date(&mut s, day(start_julian));
        if version > 1 {
            s.push_str(",\"end\":");
            date(&mut s, day(FIRST_SERVICE_DAY + SERVICE_DAYS + 365));
        }
        s.push_str("},\"payor\":[");
        reference_display(&mut s, "Organization", &self.dir.payer_id(payer), p.name);
        s.push_str("],\"class\":[{\"type\":");
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/coverage-class",
            "group",
            Some("Group"),
        );
        let _ = write!(
            s,
            ",\"value\":\"GRP{:04}\",\"name\":\"{} Employer Group {}\"}},{{\"type\":",
            m.index % 9973,
            p.name,
            m.index % 97 + 1
        );
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/coverage-class",
            "plan",
            Some("Plan"),
        );
        let _ = write!(
            s,
            ",\"value\":\"PLN{plan}\",\"name\":\"{} {}\"}}],\"network\":\"{} {}\"}}",
            ["Bronze", "Silver", "Gold", "Platinum", "Select", "Choice"][plan as usize % 6],
            if version > 1 { "PPO 2026" } else { "PPO" },
            p.code,
            if plan.is_multiple_of(2) {
                "Preferred"
            } else {
                "Standard"
            }
        );
        SyntheticResource {
            resource_type: ResourceType::Coverage,
            id: m.coverage_id.clone(),
            json: s,
        }
    }

    fn dental_coverage(
        &self,
        m: &Member,
        id: &str,
        member_id: &str,
        start_julian: i32,
    ) -> SyntheticResource {
        let p = &PAYERS[DENTAL_PAYER];
        let mut s = String::with_capacity(1200);
        head(&mut s, "Coverage", id);
        meta(&mut s, &c4bb("Coverage"), day(FIRST_SERVICE_DAY + 32), 3900);
        s.push_str(",\"identifier\":[{\"type\":");
        concept(&mut s, V2_0203, "MB", Some("Member Number"));
        let _ = write!(
            s,
            ",\"system\":\"https://{}/fhir/memberidentifier\",\"value\":\"D{member_id}\"}}],\"status\":\"active\",\"type\":",
            p.domain
        );
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "DENTPRG",
            Some("dental program"),
        );
        let (sub_type, sub_id) = &m.subscriber;
        s.push_str(",\"subscriber\":");
        reference(&mut s, sub_type, sub_id);
        let _ = write!(s, ",\"subscriberId\":\"D{member_id}\",\"beneficiary\":");
        reference(&mut s, "Patient", &m.patient_id);
        s.push_str(",\"relationship\":");
        let self_ = *sub_type == "Patient";
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
            if self_ { "self" } else { "child" },
            None,
        );
        s.push_str(",\"period\":{\"start\":");
        date(&mut s, day(start_julian));
        s.push_str("},\"payor\":[");
        reference_display(
            &mut s,
            "Organization",
            &self.dir.payer_id(DENTAL_PAYER),
            p.name,
        );
        s.push_str("],\"class\":[{\"type\":");
        concept(
            &mut s,
            "http://terminology.hl7.org/CodeSystem/coverage-class",
            "plan",
            Some("Plan"),
        );
        s.push_str(",\"value\":\"DENTAL1\",\"name\":\"Clearwater Dental Basic\"}]}");
        SyntheticResource {
            resource_type: ResourceType::Coverage,
            id: id.to_owned(),
            json: s,
        }
    }

    // -----------------------------------------------------------------------------------------------
    // EOBs
    // -----------------------------------------------------------------------------------------------

    fn eob(&self, rng: &mut ChaCha8Rng, m: &Member, g: u64) -> SyntheticResource {
        let dir = self.dir;
        // The first ten EOBs of a data set cover every profile; the rest follow a realistic mix.
        let (kind, financial) = if g < 10 {
            (EobKind::ALL[(g % 5) as usize], g < 5)
        } else {
            let kind = match rng.random_range(0..100) {
                0..=39 => EobKind::ProfessionalNonClinician,
                40..=69 => EobKind::Pharmacy,
                70..=81 => EobKind::OutpatientInstitutional,
                82..=91 => EobKind::Oral,
                _ => EobKind::InpatientInstitutional,
            };
            (kind, rng.random_range(0..100) >= 5)
        };
        let id = format!("{}-eob-{g}", self.opts.id_prefix);
        let start = FIRST_SERVICE_DAY + rng.random_range(0..SERVICE_DAYS);
        let stay = match kind {
            EobKind::InpatientInstitutional => rng.random_range(1..10),
            EobKind::OutpatientInstitutional if rng.random_bool(0.2) => rng.random_range(1..4),
            _ => 0,
        };
        let end = start + stay;
        let created = end + rng.random_range(5..45);
        let (insurer, coverage) = match (kind, &m.dental_coverage_id) {
            (EobKind::Oral, Some(d)) => (DENTAL_PAYER, d.as_str()),
            _ => (m.payer, m.coverage_id.as_str()),
        };
        let outcome_complete = rng.random_range(0..100) < 90;
        let status = if rng.random_range(0..100) < 2 {
            "cancelled"
        } else {
            "active"
        };
        let contained_provider = g % 200 == 7;

        // Who: billing provider and care team.
        let (provider_type, provider_id) = match kind {
            EobKind::InpatientInstitutional | EobKind::OutpatientInstitutional => (
                "Organization",
                dir.org_id(dir.org_of(rng, OrgKind::Hospital)),
            ),
            EobKind::ProfessionalNonClinician => {
                if rng.random_bool(0.6) {
                    (
                        "Organization",
                        dir.org_id(dir.org_of(rng, OrgKind::MedicalGroup)),
                    )
                } else {
                    ("Practitioner", dir.practitioner_id(dir.physician(rng)))
                }
            }
            EobKind::Pharmacy => (
                "Organization",
                dir.org_id(dir.org_of(rng, OrgKind::Pharmacy)),
            ),
            EobKind::Oral => {
                if rng.random_bool(0.5) {
                    ("Practitioner", dir.practitioner_id(dir.dentist(rng)))
                } else {
                    ("Organization", dir.org_id(dir.org_of(rng, OrgKind::Dental)))
                }
            }
        };
        let care_team: Vec<(usize, &str, &str)> = match kind {
            EobKind::InpatientInstitutional => {
                let mut t = vec![(dir.physician(rng), "C4BBClaimCareTeamRole", "attending")];
                if rng.random_bool(0.5) {
                    t.push((dir.physician(rng), "C4BBClaimCareTeamRole", "operating"));
                }
                t
            }
            EobKind::OutpatientInstitutional => {
                vec![(dir.physician(rng), "C4BBClaimCareTeamRole", "attending")]
            }
            EobKind::ProfessionalNonClinician => {
                let mut t = vec![(dir.physician(rng), "C4BBClaimCareTeamRole", "performing")];
                if rng.random_bool(0.3) {
                    t.push((dir.physician(rng), "C4BBClaimCareTeamRole", "referring"));
                }
                t
            }
            EobKind::Pharmacy => {
                vec![(dir.physician(rng), "C4BBClaimCareTeamRole", "prescribing")]
            }
            EobKind::Oral => vec![(dir.dentist(rng), "C4BBClaimCareTeamRole", "performing")],
        };

        let mut s = String::with_capacity(6000);
        head(&mut s, "ExplanationOfBenefit", &id);
        meta(
            &mut s,
            &kind.profile(financial),
            day(created + 1),
            rng.random_range(0..86_400),
        );
        if contained_provider {
            s.push_str(",\"contained\":[{\"resourceType\":\"Organization\",\"id\":\"provider\",\"meta\":{\"profile\":[\"");
            s.push_str(&c4bb("Organization"));
            s.push_str(
                "\"]},\"active\":true,\"name\":\"Out-of-area provider (reported by name only)\"}]",
            );
        }
        // identifier: uniqueclaimid
        s.push_str(",\"identifier\":[{\"type\":{\"coding\":[");
        coding(
            &mut s,
            &format!("{C4BB_CS}C4BBIdentifierType"),
            "uc",
            Some("Unique Claim ID"),
        );
        let _ = write!(
            s,
            "]}},\"system\":\"https://{}/fhir/EOBIdentifier\",\"value\":\"{:02}{g:09}\"}}]",
            PAYERS[insurer].domain,
            day(start).year() % 100
        );
        let _ = write!(s, ",\"status\":\"{status}\",\"type\":");
        let type_text = match kind.claim_type() {
            "institutional" => "Institutional",
            "professional" => "Professional",
            "pharmacy" => "Pharmacy",
            _ => "Oral",
        };
        concept_text(&mut s, CLAIM_TYPE, kind.claim_type(), type_text);
        match kind {
            EobKind::InpatientInstitutional | EobKind::OutpatientInstitutional => {
                let sub = if kind == EobKind::InpatientInstitutional {
                    ("inpatient", "Inpatient")
                } else {
                    ("outpatient", "Outpatient")
                };
                s.push_str(",\"subType\":");
                concept_text(
                    &mut s,
                    &format!("{C4BB_CS}C4BBInstitutionalClaimSubType"),
                    sub.0,
                    sub.1,
                );
            }
            _ => {}
        }
        s.push_str(",\"use\":\"claim\",\"patient\":");
        reference(&mut s, "Patient", &m.patient_id);
        s.push_str(",\"billablePeriod\":{\"start\":");
        date(&mut s, day(start));
        s.push_str(",\"end\":");
        date(&mut s, day(end));
        s.push_str("},\"created\":");
        date_time(&mut s, day(created), rng.random_range(0..86_400));
        s.push_str(",\"insurer\":");
        reference_display(
            &mut s,
            "Organization",
            &dir.payer_id(insurer),
            PAYERS[insurer].name,
        );
        s.push_str(",\"provider\":");
        if contained_provider {
            s.push_str("{\"reference\":\"#provider\"}");
        } else {
            reference(&mut s, provider_type, &provider_id);
        }
        // payee
        let payee_subscriber = contained_provider || rng.random_range(0..100) < 15;
        s.push_str(",\"payee\":{\"type\":");
        if payee_subscriber {
            concept(
                &mut s,
                "http://terminology.hl7.org/CodeSystem/payeetype",
                "subscriber",
                Some("Subscriber"),
            );
            s.push_str(",\"party\":");
            reference(&mut s, "Patient", &m.patient_id);
        } else {
            concept(
                &mut s,
                "http://terminology.hl7.org/CodeSystem/payeetype",
                "provider",
                Some("Provider"),
            );
            s.push_str(",\"party\":");
            reference(&mut s, provider_type, &provider_id);
        }
        let _ = write!(
            s,
            "}},\"outcome\":\"{}\"",
            if outcome_complete {
                "complete"
            } else {
                "partial"
            }
        );
        // careTeam
        s.push_str(",\"careTeam\":[");
        for (i, (k, system, role)) in care_team.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{{\"sequence\":{},\"provider\":", i + 1);
            reference(&mut s, "Practitioner", &dir.practitioner_id(*k));
            let _ = write!(s, ",\"responsible\":{},\"role\":", i == 0);
            concept(&mut s, &format!("{C4BB_CS}{system}"), role, None);
            s.push('}');
        }
        s.push(']');
        self.supporting_info(&mut s, rng, kind, m, day(start), day(end), day(created));
        self.diagnoses(&mut s, rng, kind, day(start));
        // insurance
        s.push_str(",\"insurance\":[{\"focal\":true,\"coverage\":");
        reference(&mut s, "Coverage", coverage);
        s.push_str("}]");
        // items
        let totals = self.items(&mut s, rng, kind, financial, start, end);
        // header adjudication
        let network = if rng.random_range(0..100) < 85 {
            "innetwork"
        } else {
            "outofnetwork"
        };
        s.push_str(",\"adjudication\":[");
        let discriminators: &[&str] = match kind {
            EobKind::Oral => &[
                "billingnetworkstatus",
                "renderingnetworkstatus",
                "benefitpaymentstatus",
            ],
            EobKind::ProfessionalNonClinician => &["billingnetworkstatus"],
            _ => &["billingnetworkstatus", "benefitpaymentstatus"],
        };
        for (i, d) in discriminators.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            status_adjudication(&mut s, d, network);
        }
        s.push(']');
        if let Some(t) = totals {
            s.push_str(",\"total\":[");
            let mut first = true;
            for (system, code, _, cents) in t.categories() {
                // Every main category; the others when not zero.
                let main = matches!(
                    code,
                    "submitted"
                        | "eligible"
                        | "benefit"
                        | "memberliability"
                        | "paidtoprovider"
                        | "paidbypatient"
                );
                if cents == 0 && !main {
                    continue;
                }
                if !first {
                    s.push(',');
                }
                first = false;
                s.push_str("{\"category\":");
                concept(&mut s, system, code, None);
                s.push_str(",\"amount\":");
                money(&mut s, cents);
                s.push('}');
            }
            s.push(']');
            if status == "active" {
                s.push_str(",\"payment\":{\"type\":");
                concept(
                    &mut s,
                    "http://terminology.hl7.org/CodeSystem/ex-paymenttype",
                    if outcome_complete {
                        "complete"
                    } else {
                        "partial"
                    },
                    None,
                );
                s.push_str(",\"date\":");
                date(&mut s, day(created + rng.random_range(3..25)));
                s.push_str(",\"amount\":");
                money(&mut s, t.line.benefit);
                s.push('}');
            }
        }
        s.push('}');
        SyntheticResource {
            resource_type: ResourceType::ExplanationOfBenefit,
            id,
            json: s,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn supporting_info(
        &self,
        s: &mut String,
        rng: &mut ChaCha8Rng,
        kind: EobKind,
        m: &Member,
        start: Date,
        end: Date,
        created: Date,
    ) {
        let mut seq = 0;
        let mut open = |s: &mut String, code: &str| {
            seq += 1;
            s.push_str(if seq == 1 { "{" } else { ",{" });
            let _ = write!(s, "\"sequence\":{seq},\"category\":");
            concept(s, &format!("{C4BB_CS}C4BBSupportingInfoType"), code, None);
        };
        s.push_str(",\"supportingInfo\":[");
        open(s, "clmrecvddate");
        s.push_str(",\"timingDate\":");
        date(s, created);
        s.push('}');
        match kind {
            EobKind::InpatientInstitutional | EobKind::OutpatientInstitutional => {
                let inpatient = kind == EobKind::InpatientInstitutional;
                if inpatient {
                    open(s, "admissionperiod");
                    s.push_str(",\"timingPeriod\":{\"start\":");
                    date(s, start);
                    s.push_str(",\"end\":");
                    date(s, end);
                    s.push_str("}}");
                }
                open(s, "typeofbill");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "https://www.nubc.org/CodeSystem/TypeOfBill",
                    if inpatient { "0111" } else { "0131" },
                    None,
                );
                s.push('}');
                open(s, "pointoforigin");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "https://www.nubc.org/CodeSystem/PointOfOrigin",
                    pick(rng, &["1", "2", "4", "7"]),
                    None,
                );
                s.push('}');
                open(s, "admtype");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit",
                    pick(rng, &["1", "2", "3"]),
                    None,
                );
                s.push('}');
                open(s, "discharge-status");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "https://www.nubc.org/CodeSystem/PatDischargeStatus",
                    pick(rng, &["01", "01", "01", "06", "03"]),
                    None,
                );
                s.push('}');
                open(s, "medicalrecordnumber");
                let _ = write!(s, ",\"valueString\":\"MRN{:08}\"}}", m.index);
            }
            EobKind::Pharmacy => {
                let days = pick(rng, &[30i64, 30, 90, 14, 7]);
                open(s, "dayssupply");
                let _ = write!(s, ",\"valueQuantity\":{{\"value\":{days}}}}}");
                open(s, "dawcode");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "http://terminology.hl7.org/CodeSystem/NCPDPDispensedAsWrittenOrProductSelectionCode",
                    pick(rng, &["0", "1", "7"]),
                    None,
                );
                s.push('}');
                let refills = rng.random_range(0..6);
                open(s, "refillnum");
                let _ = write!(
                    s,
                    ",\"valueQuantity\":{{\"value\":{}}}}}",
                    rng.random_range(0..=refills)
                );
                open(s, "refillsauthorized");
                let _ = write!(s, ",\"valueQuantity\":{{\"value\":{refills}}}}}");
                open(s, "brandgenericindicator");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "http://terminology.hl7.org/CodeSystem/NCPDPBrandGenericIndicator",
                    pick(rng, &["1", "2", "2", "2"]),
                    None,
                );
                s.push('}');
                open(s, "rxorigincode");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "http://terminology.hl7.org/CodeSystem/NCPDPPrescriptionOriginCode",
                    pick(rng, &["1", "3", "4"]),
                    None,
                );
                s.push('}');
                open(s, "compoundcode");
                s.push_str(",\"code\":");
                concept(
                    s,
                    "http://terminology.hl7.org/CodeSystem/NCPDPCompoundCode",
                    "1",
                    None,
                );
                s.push('}');
            }
            EobKind::ProfessionalNonClinician | EobKind::Oral => {
                open(s, "patientaccountnumber");
                let _ = write!(s, ",\"valueString\":\"ACCT{:09}\"}}", m.index);
            }
        }
        s.push(']');
    }

    fn diagnoses(&self, s: &mut String, rng: &mut ChaCha8Rng, kind: EobKind, start: Date) {
        if kind == EobKind::Pharmacy {
            return;
        }
        let table = if kind == EobKind::Oral {
            ICD_DENTAL
        } else {
            ICD_MEDICAL
        };
        let n = rng.random_range(1..3);
        s.push_str(",\"diagnosis\":[");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            let (code, display) = pick(rng, table);
            let _ = write!(s, "{{\"sequence\":{},\"diagnosisCodeableConcept\":", i + 1);
            concept(s, ICD10CM, code, (i == 0).then_some(display));
            s.push_str(",\"type\":[");
            match (i, kind) {
                (0, _) => concept(
                    s,
                    "http://terminology.hl7.org/CodeSystem/ex-diagnosistype",
                    "principal",
                    None,
                ),
                (_, EobKind::ProfessionalNonClinician | EobKind::Oral) => concept(
                    s,
                    &format!("{C4BB_CS}C4BBClaimDiagnosisType"),
                    "secondary",
                    None,
                ),
                _ => concept(
                    s,
                    &format!("{C4BB_CS}C4BBClaimDiagnosisType"),
                    "other",
                    None,
                ),
            }
            s.push(']');
            if kind == EobKind::InpatientInstitutional {
                s.push_str(",\"onAdmission\":");
                concept(
                    s,
                    "https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/HospitalAcqCond/Coding",
                    "Y",
                    None,
                );
            }
            s.push('}');
        }
        s.push(']');
        if kind == EobKind::InpatientInstitutional && rng.random_bool(0.4) {
            let (code, display) = pick(rng, ICD_PCS);
            s.push_str(",\"procedure\":[{\"sequence\":1,\"type\":[");
            concept(
                s,
                &format!("{C4BB_CS}C4BBClaimProcedureType"),
                "principal",
                None,
            );
            s.push_str("],\"date\":");
            date(s, start);
            s.push_str(",\"procedureCodeableConcept\":");
            concept(s, ICD10PCS, code, Some(display));
            s.push_str("}]");
        }
    }

    /// Writes `item` and returns the EOB's totals (financial EOBs only).
    fn items(
        &self,
        s: &mut String,
        rng: &mut ChaCha8Rng,
        kind: EobKind,
        financial: bool,
        start: i32,
        end: i32,
    ) -> Option<Totals> {
        let n = match kind {
            EobKind::Pharmacy => 1,
            EobKind::InpatientInstitutional => rng.random_range(2..5),
            EobKind::Oral | EobKind::OutpatientInstitutional => rng.random_range(1..4),
            EobKind::ProfessionalNonClinician => pick(rng, &[1, 1, 2, 2, 3]),
        };
        let mut totals = Totals {
            kind_pharmacy: kind == EobKind::Pharmacy,
            ..Totals::default()
        };
        let network = rng.random_range(0..100) < 85;
        s.push_str(",\"item\":[");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{{\"sequence\":{}", i + 1);
            // Codes.
            let (submitted_range, pos) = match kind {
                EobKind::InpatientInstitutional => {
                    let (rev, rev_d) = pick(rng, REVENUE_CODES);
                    s.push_str(",\"revenue\":");
                    concept(s, REVENUE, rev, Some(rev_d));
                    s.push_str(",\"productOrService\":");
                    if rev == "0120" || rng.random_bool(0.3) {
                        concept(
                            s,
                            "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "not-applicable",
                            Some("Not Applicable"),
                        );
                    } else {
                        let (c, d) = pick(rng, CPT_HOSPITAL);
                        concept(s, CPT, c, Some(d));
                    }
                    (50_000..900_000, None)
                }
                EobKind::OutpatientInstitutional => {
                    let (rev, rev_d) = pick(rng, REVENUE_CODES);
                    s.push_str(",\"revenue\":");
                    concept(s, REVENUE, rev, Some(rev_d));
                    let (c, d) = pick(rng, CPT_HOSPITAL);
                    s.push_str(",\"productOrService\":");
                    concept(s, CPT, c, Some(d));
                    (
                        20_000..400_000,
                        Some(pick(
                            rng,
                            &[
                                ("22", "On Campus-Outpatient Hospital"),
                                ("23", "Emergency Room - Hospital"),
                            ],
                        )),
                    )
                }
                EobKind::ProfessionalNonClinician => {
                    let (c, d) = pick(rng, CPT_OFFICE);
                    s.push_str(",\"productOrService\":");
                    concept(s, CPT, c, Some(d));
                    if rng.random_bool(0.15) {
                        s.push_str(",\"modifier\":[");
                        concept(s, CPT, pick(rng, &["25", "59", "RT", "LT"]), None);
                        s.push(']');
                    }
                    (
                        5_000..80_000,
                        Some(pick(
                            rng,
                            &[
                                ("11", "Office"),
                                ("11", "Office"),
                                ("02", "Telehealth"),
                                ("22", "On Campus-Outpatient Hospital"),
                            ],
                        )),
                    )
                }
                EobKind::Pharmacy => {
                    let (c, d) = pick(rng, NDC_CODES);
                    s.push_str(",\"productOrService\":");
                    concept(s, NDC, c, Some(d));
                    let _ = write!(
                        s,
                        ",\"quantity\":{{\"value\":{},\"unit\":\"TAB\"}}",
                        pick(rng, &[30, 60, 90, 14])
                    );
                    (500..60_000, None)
                }
                EobKind::Oral => {
                    let (c, d) = pick(rng, CDT_CODES);
                    s.push_str(",\"productOrService\":");
                    concept(s, CDT, c, Some(d));
                    if c.starts_with("D2") || c.starts_with("D3") || c.starts_with("D7") {
                        let _ = write!(
                            s,
                            ",\"bodySite\":{{\"coding\":[{{\"system\":\"https://www.ada.org/en/publications/cdt/universal-numbering-system\",\"code\":\"{}\"}}]}}",
                            rng.random_range(1..33)
                        );
                    }
                    (8_000..150_000, Some(("11", "Office")))
                }
            };
            // When.
            let period = match kind {
                EobKind::InpatientInstitutional => rng.random_bool(0.5),
                EobKind::OutpatientInstitutional => end > start,
                EobKind::ProfessionalNonClinician => rng.random_bool(0.1),
                _ => false,
            };
            if period {
                let a = start + rng.random_range(0..=(end - start).max(0));
                let b = (a + rng.random_range(0..7)).max(a);
                s.push_str(",\"servicedPeriod\":{\"start\":");
                date(s, day(a));
                s.push_str(",\"end\":");
                date(s, day(b));
                s.push('}');
            } else {
                s.push_str(",\"servicedDate\":");
                date(s, day(start + rng.random_range(0..=(end - start).max(0))));
            }
            if let Some((code, text)) = pos {
                s.push_str(",\"locationCodeableConcept\":");
                concept_text(s, POS, code, text);
            }
            // Adjudication.
            // Professional and oral lines carry their network status; every non-financial line
            // carries it as its only adjudication.
            s.push_str(",\"adjudication\":[");
            let line_status =
                !financial || matches!(kind, EobKind::ProfessionalNonClinician | EobKind::Oral);
            if line_status {
                status_adjudication(
                    s,
                    "benefitpaymentstatus",
                    if network { "innetwork" } else { "outofnetwork" },
                );
            }
            if financial {
                let mut first = !line_status;
                let submitted = rng.random_range(submitted_range);
                let line = Line::adjudicate(rng, submitted, network, kind);
                for (system, code, _, cents) in line.categories(kind) {
                    // Lines carry the amounts that are not zero (and always the three main ones);
                    // the totals carry every category.
                    let main = matches!(code, "submitted" | "eligible" | "benefit");
                    if (cents == 0 && !main) || matches!(code, "memberliability" | "paidtoprovider")
                    {
                        continue;
                    }
                    s.push_str(if first {
                        "{\"category\":"
                    } else {
                        ",{\"category\":"
                    });
                    first = false;
                    concept(s, system, code, None);
                    s.push_str(",\"amount\":");
                    money(s, cents);
                    s.push('}');
                }
                totals.add(&line);
            }
            s.push_str("]}");
        }
        s.push(']');
        financial.then_some(totals)
    }
}

fn status_adjudication(s: &mut String, discriminator: &str, status: &str) {
    s.push_str("{\"category\":");
    concept(
        s,
        &format!("{C4BB_CS}C4BBAdjudicationDiscriminator"),
        discriminator,
        None,
    );
    s.push_str(",\"reason\":");
    concept(
        s,
        &format!("{C4BB_CS}C4BBPayerAdjudicationStatus"),
        status,
        None,
    );
    s.push('}');
}

/// One line's adjudication, in cents.
#[derive(Default, Clone, Copy)]
struct Line {
    submitted: i64,
    eligible: i64,
    deductible: i64,
    copay: i64,
    coinsurance: i64,
    noncovered: i64,
    benefit: i64,
    discount: i64,
}

impl Line {
    fn adjudicate(rng: &mut ChaCha8Rng, submitted: i64, network: bool, kind: EobKind) -> Line {
        let allowed_pct = if network {
            rng.random_range(35..85)
        } else {
            rng.random_range(60..100)
        };
        let eligible = submitted * allowed_pct / 100;
        let noncovered = if rng.random_range(0..100) < 8 {
            eligible
        } else {
            0
        };
        let covered = eligible - noncovered;
        let deductible = if rng.random_range(0..100) < 20 {
            covered.min(rng.random_range(0..50_000))
        } else {
            0
        };
        let copay = match kind {
            EobKind::ProfessionalNonClinician | EobKind::Pharmacy => {
                (pick(rng, &[0i64, 1_000, 2_000, 3_500])).min(covered - deductible)
            }
            _ => 0,
        };
        let rest = covered - deductible - copay;
        let coinsurance = if network { rest / 5 } else { rest * 2 / 5 };
        let benefit = rest - coinsurance;
        Line {
            submitted,
            eligible,
            deductible,
            copay,
            coinsurance,
            noncovered,
            benefit,
            discount: submitted - eligible,
        }
    }

    fn member_liability(&self) -> i64 {
        self.deductible + self.copay + self.coinsurance + self.noncovered
    }

    fn categories(&self, kind: EobKind) -> Vec<(&'static str, &'static str, &'static str, i64)> {
        let c4bb_adj = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication";
        let mut v = vec![
            (ADJ, "submitted", "Submitted Amount", self.submitted),
            (ADJ, "eligible", "Eligible Amount", self.eligible),
            (ADJ, "deductible", "Deductible", self.deductible),
        ];
        if kind == EobKind::Pharmacy {
            v.push((c4bb_adj, "discount", "Discount", self.discount));
        }
        v.extend([
            (ADJ, "copay", "CoPay", self.copay),
            (c4bb_adj, "coinsurance", "Coinsurance", self.coinsurance),
            (c4bb_adj, "noncovered", "Noncovered", self.noncovered),
            (ADJ, "benefit", "Benefit Amount", self.benefit),
            (
                c4bb_adj,
                "memberliability",
                "Member liability",
                self.member_liability(),
            ),
            (c4bb_adj, "paidtoprovider", "Payment Amount", self.benefit),
        ]);
        v
    }
}

/// Sums of an EOB's lines.
#[derive(Default)]
struct Totals {
    kind_pharmacy: bool,
    line: Line,
}

impl Totals {
    fn add(&mut self, l: &Line) {
        self.line.submitted += l.submitted;
        self.line.eligible += l.eligible;
        self.line.deductible += l.deductible;
        self.line.copay += l.copay;
        self.line.coinsurance += l.coinsurance;
        self.line.noncovered += l.noncovered;
        self.line.benefit += l.benefit;
        self.line.discount += l.discount;
    }

    fn categories(&self) -> Vec<(&'static str, &'static str, &'static str, i64)> {
        let c4bb_adj = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication";
        let mut v = self.line.categories(if self.kind_pharmacy {
            EobKind::Pharmacy
        } else {
            EobKind::ProfessionalNonClinician
        });
        v.push((
            c4bb_adj,
            "paidbypatient",
            "Patient Pay Amount",
            self.line.member_liability(),
        ));
        v
    }
}

// ---------------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------------

/// The generated data set, one resource at a time (see the module docs for the order).
pub struct Synthetic {
    opts: SyntheticOptions,
    dir: Directory,
    shared_next: usize,
    member_next: u64,
    queue: std::collections::VecDeque<SyntheticResource>,
}

impl Synthetic {
    pub fn new(opts: SyntheticOptions) -> Result<Self, SyntheticError> {
        opts.validate()?;
        let dir = Directory::new(&opts);
        Ok(Synthetic {
            opts,
            dir,
            shared_next: 0,
            member_next: 0,
            queue: Default::default(),
        })
    }

    /// The options this stream generates from.
    pub fn options(&self) -> &SyntheticOptions {
        &self.opts
    }
}

impl Iterator for Synthetic {
    type Item = SyntheticResource;

    fn next(&mut self) -> Option<SyntheticResource> {
        if self.shared_next < self.dir.len() {
            let r = self.dir.shared(self.shared_next);
            self.shared_next += 1;
            return r;
        }
        if let Some(r) = self.queue.pop_front() {
            return Some(r);
        }
        if self.member_next >= self.opts.members() {
            return None;
        }
        let gen = MemberGen {
            dir: &self.dir,
            opts: &self.opts,
        };
        let mut batch = Vec::with_capacity(self.opts.eobs_per_member as usize + 5);
        gen.member(self.member_next, &mut batch);
        self.member_next += 1;
        self.queue.extend(batch);
        self.queue.pop_front()
    }
}

/// Writes the data set as NDJSON (one resource per line) to `out`.
pub fn write_ndjson(
    opts: SyntheticOptions,
    out: &mut dyn io::Write,
) -> Result<SyntheticCounts, SyntheticWriteError> {
    let mut counts = SyntheticCounts::default();
    for r in Synthetic::new(opts)? {
        out.write_all(r.json.as_bytes())?;
        out.write_all(b"\n")?;
        counts.add(r.resource_type);
    }
    out.flush()?;
    Ok(counts)
}

/// Why [`write_ndjson`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticWriteError {
    #[error(transparent)]
    Options(#[from] SyntheticError),
    #[error("writing: {0}")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use super::*;
    use crate::fhir::params::{extract, ParamKind};
    use crate::fhir::resource::Prepared;

    fn all(opts: SyntheticOptions) -> Vec<SyntheticResource> {
        Synthetic::new(opts).unwrap().collect()
    }

    #[test]
    fn npi_check_digit() {
        // The example NPI from the CMS check-digit specification.
        assert_eq!(npi(123_456_789), "1234567893");
    }

    #[test]
    fn julian_constants() {
        let d = |y, m, dd| {
            Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), dd)
                .unwrap()
                .to_julian_day()
        };
        assert_eq!(FIRST_SERVICE_DAY, d(2019, 1, 1));
        assert_eq!(FIRST_SERVICE_DAY + SERVICE_DAYS, d(2025, 7, 1));
        assert!(is_minor(day(d(2010, 1, 1))) && !is_minor(day(d(2000, 1, 1))));
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = all(SyntheticOptions::numbered(7, 42));
        let b = all(SyntheticOptions::numbered(7, 42));
        assert_eq!(a, b);
        let c = all(SyntheticOptions::numbered(7, 43));
        assert_ne!(a, c);
        let mut ndjson = Vec::new();
        let counts = write_ndjson(SyntheticOptions::numbered(7, 42), &mut ndjson).unwrap();
        let text = String::from_utf8(ndjson).unwrap();
        assert_eq!(counts.total as usize, a.len());
        for (line, r) in text.lines().zip(&a) {
            assert_eq!(line, r.json);
        }
        assert_eq!(counts.by_type["ExplanationOfBenefit"], 7 * 20);
    }

    #[test]
    fn every_resource_passes_the_store_and_ids_are_unique() {
        let mut opts = SyntheticOptions::numbered(40, 7);
        opts.eobs_per_member = 12;
        let resources = all(opts);
        let mut keys = HashSet::new();
        let mut eob_profiles = BTreeSet::new();
        let mut types = BTreeSet::new();
        let mut versions = 0;
        for r in &resources {
            assert!(is_valid_id(&r.id), "{}", r.id);
            let v: serde_json::Value = serde_json::from_str(&r.json).expect("valid JSON");
            assert_eq!(v["resourceType"], r.resource_type.as_str());
            assert_eq!(v["id"], r.id.as_str());
            assert!(!r.json.contains('\n'));
            let p =
                Prepared::parse(&r.json).unwrap_or_else(|e| panic!("{} rejected: {}", r.id, e.0));
            assert_eq!((p.rt, p.id.as_str()), (r.resource_type, r.id.as_str()));
            if !keys.insert((r.resource_type, r.id.clone())) {
                // Only Coverage gets a second version.
                assert_eq!(r.resource_type, ResourceType::Coverage, "{}", r.id);
                versions += 1;
            }
            types.insert(r.resource_type);
            let profile = v["meta"]["profile"][0].as_str().unwrap_or_default();
            if r.resource_type == ResourceType::ExplanationOfBenefit {
                eob_profiles.insert(profile.to_owned());
                // CARIN's must-haves on every EOB.
                let ident = &v["identifier"][0];
                assert_eq!(ident["type"]["coding"][0]["code"], "uc");
                assert_eq!(v["use"], "claim");
                assert!(v["billablePeriod"]["start"].is_string());
                assert!(v["careTeam"][0]["provider"]["reference"].is_string());
                let focal: Vec<_> = v["insurance"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|i| i["focal"] == true)
                    .collect();
                assert_eq!(focal.len(), 1);
                assert!(v["payee"]["type"].is_object());
                for item in v["item"].as_array().unwrap() {
                    assert!(item["adjudication"][0]["category"].is_object());
                    assert!(item["servicedDate"].is_string() ^ item["servicedPeriod"].is_object());
                }
                assert_eq!(profile.contains("NonFinancial"), v.get("total").is_none());
            } else if r.resource_type != ResourceType::Location
                && r.resource_type != ResourceType::PractitionerRole
            {
                assert!(profile.starts_with(C4BB_BASE), "{profile}");
            }
            if r.resource_type == ResourceType::Patient {
                let id = &v["identifier"][0];
                assert_eq!(id["type"]["coding"][0]["system"], V2_0203);
                assert_eq!(id["type"]["coding"][0]["code"], "MB");
                assert!(v["birthDate"].is_string() && v["gender"].is_string());
            }
        }
        assert_eq!(versions, 1, "member 0's Coverage has a second version");
        assert_eq!(types.len(), ResourceType::ALL.len(), "{types:?}");
        let want: BTreeSet<String> = EobKind::ALL
            .iter()
            .flat_map(|k| [k.profile(true), k.profile(false)])
            .collect();
        assert_eq!(eob_profiles, want);
    }

    /// Every reference names a resource of the set (or a contained one).
    #[test]
    fn references_resolve() {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        match (k.as_str(), x) {
                            ("reference", serde_json::Value::String(s)) => out.push(s.clone()),
                            _ => walk(x, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let resources = all(SyntheticOptions::numbered(250, 3));
        let ids: HashSet<String> = resources
            .iter()
            .map(|r| format!("{}/{}", r.resource_type, r.id))
            .collect();
        let mut contained = 0;
        for r in &resources {
            let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
            let mut refs = Vec::new();
            walk(&v, &mut refs);
            assert!(
                !refs.is_empty() || !matches!(r.resource_type, ResourceType::ExplanationOfBenefit)
            );
            for target in refs {
                if let Some(local) = target.strip_prefix('#') {
                    assert_eq!(v["contained"][0]["id"], local, "{}", r.id);
                    contained += 1;
                } else {
                    assert!(ids.contains(&target), "{} -> {target}", r.id);
                }
            }
            // Isolation: an EOB only points at its own member's Patient and Coverage.
            if r.resource_type == ResourceType::ExplanationOfBenefit {
                let patient = v["patient"]["reference"].as_str().unwrap();
                let cov = v["insurance"][0]["coverage"]["reference"].as_str().unwrap();
                let cov: serde_json::Value = serde_json::from_str(
                    &resources
                        .iter()
                        .find(|x| format!("Coverage/{}", x.id) == cov)
                        .unwrap()
                        .json,
                )
                .unwrap();
                assert_eq!(cov["beneficiary"]["reference"], patient);
            }
        }
        assert!(contained > 0, "some EOB has a contained provider");
    }

    /// Extraction parses again only the members its index needs (`read_members`). Decoding from every
    /// member instead must give the same entries, for synthetic data of every kind and the IG's
    /// examples: a member the extraction reads but the list left out would differ here.
    #[test]
    fn extraction_reads_every_member_it_needs() {
        use crate::fhir::params::{extract_from, Members};
        let mut texts: Vec<String> = all(SyntheticOptions::numbered(40, 5))
            .into_iter()
            .map(|r| r.json)
            .collect();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/carin-bb-2.0.0");
        for sub in ["examples", "examples-nonfinancial"] {
            for e in std::fs::read_dir(dir.join(sub)).expect("the IG examples") {
                texts.push(std::fs::read_to_string(e.expect("entry").path()).expect("example"));
            }
        }
        let mut compared = 0;
        for text in &texts {
            let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
            let Some(rt) = v["resourceType"].as_str().and_then(ResourceType::parse) else {
                continue;
            };
            let id = v["id"].as_str().expect("id");
            let Members(members) = serde_json::from_str(text).expect("members");
            let every: Vec<(&str, &serde_json::value::RawValue)> =
                members.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let from_every = extract_from(rt, id, &every).expect("extract from every member");
            assert_eq!(
                extract(rt, id, text).expect("extract"),
                from_every,
                "{rt}/{id}"
            );
            compared += 1;
        }
        assert!(compared > 300, "only {compared} resources compared");
    }

    /// Every search parameter finds something, and no value finds everything of its type.
    #[test]
    fn search_parameters_have_hits_and_misses() {
        let resources = all(SyntheticOptions::numbered(60, 11));
        // (type, param) -> distinct values; and how many resources of the type have any.
        let mut values: BTreeMap<(ResourceType, &str), BTreeSet<String>> = BTreeMap::new();
        for r in &resources {
            let e = extract(r.resource_type, &r.id, &r.json).unwrap();
            let mut put = |p: &'static str, v: String| {
                values.entry((r.resource_type, p)).or_default().insert(v);
            };
            e.tokens
                .iter()
                .for_each(|(p, s, c)| put(p, format!("{s}|{c}")));
            e.references.iter().for_each(|(p, t)| put(p, t.clone()));
            e.dates
                .iter()
                .for_each(|(p, l, h)| put(p, format!("{l}..{h}")));
            e.strings.iter().for_each(|(p, s)| put(p, s.clone()));
        }
        for rt in ResourceType::ALL {
            for def in rt.search_params() {
                if matches!(def.kind, ParamKind::Id | ParamKind::LastUpdated) {
                    continue;
                }
                let n = values.get(&(rt, def.name)).map_or(0, BTreeSet::len);
                assert!(n >= 2, "{rt} {}: {n} distinct values", def.name);
            }
        }
        // Dates: items with servicedDate and with servicedPeriod; several billable-period starts.
        let eobs: Vec<&String> = resources
            .iter()
            .filter(|r| r.resource_type == ResourceType::ExplanationOfBenefit)
            .map(|r| &r.json)
            .collect();
        assert!(eobs.iter().any(|j| j.contains("\"servicedPeriod\"")));
        assert!(eobs.iter().any(|j| j.contains("\"servicedDate\"")));
        assert!(values[&(ResourceType::ExplanationOfBenefit, "billable-period-start")].len() > 100);
    }

    #[test]
    fn caller_chosen_patients_and_representatives() {
        let opts = SyntheticOptions {
            seed: 1,
            id_prefix: "demo".into(),
            patients: vec![
                PatientSpec {
                    id: "demo-alice".into(),
                    name: Some(("Alice".into(), "Demo \"Quote\"".into())),
                },
                PatientSpec::new("demo-bob-child-1"),
                PatientSpec::new("demo-bob-child-2"),
            ],
            numbered_members: 5,
            eobs_per_member: 3,
            guardians: vec![GuardianSpec {
                id: "demo-bob".into(),
                patients: vec!["demo-bob-child-1".into(), "demo-bob-child-2".into()],
                name: Some(("Bob".into(), "Demo".into())),
            }],
        };
        let resources = all(opts);
        let get = |rt: ResourceType, id: &str| -> serde_json::Value {
            let r = resources
                .iter()
                .find(|r| r.resource_type == rt && r.id == id)
                .unwrap_or_else(|| panic!("{rt}/{id} missing"));
            serde_json::from_str(&r.json).unwrap()
        };
        let alice = get(ResourceType::Patient, "demo-alice");
        assert_eq!(alice["name"][0]["family"], "Demo \"Quote\"");
        let bob = get(ResourceType::RelatedPerson, "demo-bob");
        assert_eq!(bob["patient"]["reference"], "Patient/demo-bob-child-1");
        assert_eq!(
            resources
                .iter()
                .filter(|r| r.resource_type == ResourceType::RelatedPerson && r.id == "demo-bob")
                .count(),
            1
        );
        for (cov, child) in [
            ("demo-cov-1", "demo-bob-child-1"),
            ("demo-cov-2", "demo-bob-child-2"),
        ] {
            let c = get(ResourceType::Coverage, cov);
            assert_eq!(c["subscriber"]["reference"], "RelatedPerson/demo-bob");
            assert_eq!(c["beneficiary"]["reference"], format!("Patient/{child}"));
            assert_eq!(
                get(ResourceType::Patient, child)["name"][0]["family"],
                "Demo"
            );
        }
        get(ResourceType::Patient, "demo-pat-0");
        get(ResourceType::Patient, "demo-pat-4");
        let alice_eobs = resources
            .iter()
            .filter(|r| {
                r.json
                    .contains("\"patient\":{\"reference\":\"Patient/demo-alice\"}")
            })
            .count();
        assert_eq!(alice_eobs, 3);
    }

    #[test]
    fn bad_options_are_refused() {
        let base = SyntheticOptions::numbered(1, 1);
        let mut o = base.clone();
        o.id_prefix = "no spaces".into();
        assert!(Synthetic::new(o).is_err());
        let mut o = base.clone();
        o.id_prefix = "x".repeat(MAX_ID_PREFIX + 1);
        assert!(Synthetic::new(o).is_err());
        let mut o = base.clone();
        o.eobs_per_member = MAX_EOBS_PER_MEMBER + 1;
        assert!(Synthetic::new(o).is_err());
        let mut o = base.clone();
        o.patients = vec![PatientSpec::new("a"), PatientSpec::new("a")];
        assert!(Synthetic::new(o).is_err());
        let mut o = base.clone();
        o.patients = vec![PatientSpec::new("a/b")];
        assert!(Synthetic::new(o).is_err());
        let mut o = base.clone();
        o.guardians = vec![GuardianSpec {
            id: "g".into(),
            patients: vec!["nobody".into()],
            name: None,
        }];
        assert!(Synthetic::new(o).is_err());
        assert!(Synthetic::new(base).is_ok());
    }
}
