//! The app side of Bluegate, and of any CARIN Blue Button server that speaks SMART App Launch and UDAP:
//!
//! - [`discovery`]: `/.well-known/udap` and `/.well-known/smart-configuration`, with the UDAP
//!   `signed_metadata` verified against the app's trust anchors (refused otherwise unless the caller opts
//!   out explicitly);
//! - [`registration`]: UDAP Dynamic Client Registration with a signed software statement (register,
//!   update, cancel), `private_key_jwt` or CARIN's `client_secret_basic`;
//! - [`launch`]: the standalone launch (state, PKCE S256, `aud`, `nonce`), redirect checking and a loopback
//!   redirect listener;
//! - [`token`]: code exchange, refresh with rotation, B2B `client_credentials` with `hl7-b2b`;
//! - [`oidc`]: `id_token` validation against the issuer's JWKS;
//! - [`fhir`]: authorized FHIR reads and paging that never send the token off the FHIR base;
//! - [`state`]: the per-user state file (0600).
//!
//! Tokens and secrets are [`Secret`]s: their `Debug` and `Display` print `***`, and no error message
//! carries one. See `docs/client.md` and `examples/`.

pub mod discovery;
pub mod download;
pub mod error;
pub mod fhir;
pub mod http;
pub mod identity;
pub mod launch;
pub mod oidc;
pub mod registration;
pub mod secret;
pub mod state;
pub mod token;
mod util;

pub use discovery::{discover, Discovered, DiscoveryError, DiscoveryOptions};
pub use error::Error;
pub use fhir::FhirClient;
pub use identity::AppIdentity;
pub use launch::{AuthorizationRequest, LoopbackListener, PendingAuthorization};
pub use registration::{AuthMethod, ClientMetadata, Registration};
pub use secret::Secret;
pub use token::{B2bContext, ClientAuth, TokenSet};
pub use util::{now, random_b64url};
