//! The app side of Bluegate (and of any CARIN Blue Button server): discovery with verified UDAP metadata.
//! Registration, launch, tokens and FHIR paging are being added (see the project's issues).

pub mod discovery;
pub mod http;

pub use discovery::{discover, Discovered, DiscoveryError, DiscoveryOptions};
