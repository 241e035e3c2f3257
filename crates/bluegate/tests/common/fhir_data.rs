//! CARIN BB example data and access tokens for the FHIR API tests.

use std::path::PathBuf;

use bluegate_core::jose::Alg;
use bluegate_core::tokens::{self, AccessClaims};
use time::OffsetDateTime;

use super::TestServer;

/// The CARIN BB 2.0.0 examples (financial and non-financial), as JSON texts.
pub fn fixtures() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/carin-bb-2.0.0");
    let mut out = Vec::new();
    for dir in ["examples", "examples-nonfinancial"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("fixtures")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            out.push(std::fs::read_to_string(f).expect("fixture"));
        }
    }
    out
}

/// Imports [`fixtures`] into the server's store.
pub async fn load_fixtures(server: &TestServer) {
    server
        .running
        .state
        .store
        .put_batch(&fixtures(), OffsetDateTime::now_utc())
        .await
        .expect("fixtures import");
}

/// An access token minted with the server's own key, as the token endpoint would.
pub fn token_with(server: &TestServer, f: impl FnOnce(&mut AccessClaims)) -> String {
    let state = &server.running.state;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = AccessClaims {
        iss: server.fhir_base.clone(),
        sub: "member-1".into(),
        aud: server.fhir_base.clone(),
        exp: now + 300,
        iat: now,
        jti: format!("jti-{}", super::free_port()),
        client_id: "client-1".into(),
        scope: "launch/patient patient/*.rs".into(),
        patient: Some("Patient1".into()),
        fhir_user: None,
        gid: None,
    };
    f(&mut claims);
    let keys = state.signing.current();
    let key = keys.active(Alg::ES256).expect("ES256 key");
    tokens::sign_access_token(key, &claims).expect("signed")
}
