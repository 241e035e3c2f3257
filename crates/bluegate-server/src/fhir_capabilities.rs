//! What the FHIR API serves, as advertised in the CapabilityStatement. The CapabilityStatement lists
//! exactly what works: resources appear here when the FHIR API serves them.

use bluegate_core::discovery::ResourceCapability;

/// The resource types the FHIR API currently serves. The resource API is not part of this build yet, so
/// the list is empty and the CapabilityStatement advertises security and discovery only.
pub fn served_resources() -> Vec<ResourceCapability> {
    Vec::new()
}
