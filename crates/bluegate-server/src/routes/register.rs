//! UDAP Dynamic Client Registration: `POST {registration_endpoint}` (UDAP DCR, RFC 7591).
//!
//! The statement is validated by `bluegate-core` against each configured community (the first one its
//! certificate chains to wins); this handler only applies the outcome to the store, in one transaction
//! (replay check with the create, update or cancel), and writes the audit trail.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bluegate_core::secrets;
use bluegate_core::udap::{
    self, RegistrationError, RegistrationErrorCode, StatementInput, StatementKind,
    ValidatedStatement,
};
use bluegate_store::{
    AuditEvent, JtiRecord, RegistrationChange, RegistrationOutcome, UdapRegistration,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use time::OffsetDateTime;

use crate::app::SharedState;
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct RegistrationRequest {
    software_statement: Option<Value>,
    certifications: Option<Value>,
    udap: Option<Value>,
}

fn reg_error(e: &RegistrationError) -> ApiError {
    let code = match e.code {
        RegistrationErrorCode::InvalidSoftwareStatement => "invalid_software_statement",
        RegistrationErrorCode::UnapprovedSoftwareStatement => "unapproved_software_statement",
        RegistrationErrorCode::InvalidClientMetadata => "invalid_client_metadata",
        RegistrationErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
    };
    ApiError::oauth(StatusCode::BAD_REQUEST, code, e.description.clone())
}

fn bad(code: RegistrationErrorCode, description: &str) -> RegistrationError {
    RegistrationError {
        code,
        description: description.to_string(),
    }
}

/// Parse the request body by hand so that every malformation gets an RFC 7591 error rather than a
/// framework rejection.
fn parse_request(body: &[u8]) -> Result<StatementInput, RegistrationError> {
    let req: RegistrationRequest = serde_json::from_slice(body).map_err(|_| {
        bad(
            RegistrationErrorCode::InvalidClientMetadata,
            "the request body must be a JSON object with software_statement and udap",
        )
    })?;
    let software_statement = match req.software_statement {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(bad(
                RegistrationErrorCode::InvalidSoftwareStatement,
                "software_statement must be a string (a compact JWT)",
            ))
        }
        None => {
            return Err(bad(
                RegistrationErrorCode::InvalidSoftwareStatement,
                "software_statement is required",
            ))
        }
    };
    let certifications = match req.certifications {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(
                        RegistrationErrorCode::InvalidSoftwareStatement,
                        "certifications must be an array of JWT strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(bad(
                RegistrationErrorCode::InvalidSoftwareStatement,
                "certifications must be an array of JWT strings",
            ))
        }
    };
    let udap = match req.udap {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(StatementInput {
        software_statement,
        certifications,
        udap,
    })
}

pub async fn register(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let remote = Some(peer.ip().to_string());
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("application/json"))
        .unwrap_or(false);
    let outcome = if !json_ct {
        Err(bad(
            RegistrationErrorCode::InvalidClientMetadata,
            "the request must be application/json",
        ))
    } else {
        // The statement is parsed once: for the CRL fetches and for each community's validation.
        match parse_request(&body).and_then(|input| {
            let parsed = udap::parse_software_statement(&input)?;
            Ok((input, parsed))
        }) {
            Ok((input, parsed)) => {
                for t in &state.trust {
                    t.prepare(parsed.x5c(), now.unix_timestamp()).await;
                }
                validate(&state, &input, &parsed, now.unix_timestamp())
            }
            Err(e) => Err(e),
        }
    };
    let validated = match outcome {
        Ok(v) => v,
        Err(e) => {
            audit(
                &state,
                now,
                "client.registration_refused",
                "failure",
                None,
                remote,
                json!({"error": format!("{:?}", e.code), "description": e.description}),
            )
            .await;
            return Err(reg_error(&e));
        }
    };
    apply(&state, validated, now, remote).await
}

/// Try each community, default first; the first one the certificate chains to decides. If none does, the
/// error of the most specific failure is returned (a chain error from the default community otherwise).
fn validate(
    state: &SharedState,
    input: &StatementInput,
    parsed: &udap::X5cJws,
    now: i64,
) -> Result<ValidatedStatement, RegistrationError> {
    let mut first_err = None;
    for c in &state.trust {
        match udap::validate_parsed_statement(
            input,
            parsed,
            &c.community(),
            &c.cache,
            &state.registration_policy,
            now,
        ) {
            Ok(v) => return Ok(v),
            // Only a trust failure may be cured by another community; anything else is final.
            Err(e) if e.code == RegistrationErrorCode::UnapprovedSoftwareStatement => {
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_err.unwrap_or_else(|| {
        bad(
            RegistrationErrorCode::UnapprovedSoftwareStatement,
            "no trust community is configured",
        )
    }))
}

/// Applies a validated statement in one store transaction: the statement's `jti` (replay protection: a
/// statement is accepted once per issuer until it expires, UJ-3) with the create, update or cancel.
async fn apply(
    state: &SharedState,
    v: ValidatedStatement,
    now: OffsetDateTime,
    remote: Option<String>,
) -> Result<Response, ApiError> {
    let statement_jti = JtiRecord {
        issuer: v.iss.clone(),
        jti: v.jti.clone(),
        expires_at: OffsetDateTime::from_unix_timestamp(v.exp).unwrap_or(now),
    };
    let mut registration = UdapRegistration {
        statement_jti: &statement_jti,
        community: &v.community,
        iss: &v.iss,
        change: RegistrationChange::Cancel,
    };
    let meta = match &v.kind {
        StatementKind::Cancel => {
            let client_id = match state.store.register_udap_client(&registration, now).await? {
                RegistrationOutcome::Cancelled { client_id } => {
                    state.clients.invalidate(&client_id);
                    client_id
                }
                RegistrationOutcome::StatementReplayed => {
                    return Err(refuse_replay(state, now, remote, &v.iss).await)
                }
                _ => {
                    let e = bad(
                        RegistrationErrorCode::InvalidClientMetadata,
                        "grant_types is empty but no client is registered for this iss in this community",
                    );
                    return Err(reg_error(&e));
                }
            };
            audit(
                state,
                now,
                "client.cancelled",
                "success",
                Some(client_id.clone()),
                remote,
                json!({"iss": v.iss, "community": v.community}),
            )
            .await;
            let body = json!({
                "client_id": client_id,
                "software_statement": v.raw_statement,
                "grant_types": [],
            });
            return Ok(respond(StatusCode::OK, &body));
        }
        StatementKind::Register(meta) => meta,
    };
    let mut metadata = json!({
        "client_name": meta.client_name,
        "grant_types": meta.grant_types,
        "response_types": meta.response_types,
        "redirect_uris": meta.redirect_uris,
        "token_endpoint_auth_method": meta.token_endpoint_auth_method,
        "scope": meta.scope,
        "contacts": meta.contacts,
        "logo_uri": meta.logo_uri,
        "software_statement": v.raw_statement,
        "cert_fingerprint": hex_fingerprint(&v.leaf.fingerprint_sha256),
    });
    let secret = if meta.token_endpoint_auth_method == "client_secret_basic" {
        Some(crate::random::token(32))
    } else {
        None
    };
    let secret_hash = secret.as_deref().map(secrets::hash_client_secret);
    let new_client_id = crate::random::token(16);
    registration.change = RegistrationChange::Upsert {
        new_client_id: &new_client_id,
        secret_hash: secret_hash.as_deref(),
        metadata: &metadata,
    };
    let (status, client_id, event) =
        match state.store.register_udap_client(&registration, now).await? {
            RegistrationOutcome::Created { client_id } => {
                (StatusCode::CREATED, client_id, "client.registered")
            }
            RegistrationOutcome::Updated { client_id } => {
                state.clients.invalidate(&client_id);
                (StatusCode::OK, client_id, "client.updated")
            }
            RegistrationOutcome::StatementReplayed => {
                return Err(refuse_replay(state, now, remote, &v.iss).await)
            }
            RegistrationOutcome::Cancelled { .. } | RegistrationOutcome::NotRegistered => {
                return Err(ApiError::internal(
                    crate::error::Wire::OAuth,
                    &"the store answered a registration as a cancellation",
                ))
            }
        };
    audit(state, now, event, "success", Some(client_id.clone()), remote, json!({"iss": v.iss, "community": v.community, "auth_method": meta.token_endpoint_auth_method})).await;
    if let Value::Object(m) = &mut metadata {
        m.remove("cert_fingerprint");
        m.insert("client_id".into(), json!(client_id));
        m.insert("client_id_issued_at".into(), json!(now.unix_timestamp()));
        if let Some(s) = secret {
            m.insert("client_secret".into(), json!(s));
            m.insert("client_secret_expires_at".into(), json!(0));
        }
        m.retain(|_, v| !v.is_null());
    }
    Ok(respond(status, &metadata))
}

/// The answer to a statement whose `jti` was used before (audited).
async fn refuse_replay(
    state: &SharedState,
    now: OffsetDateTime,
    remote: Option<String>,
    iss: &str,
) -> ApiError {
    let e = bad(
        RegistrationErrorCode::InvalidSoftwareStatement,
        "this software statement's jti was already used; sign a new statement",
    );
    audit(
        state,
        now,
        "client.registration_refused",
        "failure",
        None,
        remote,
        json!({"iss": iss, "description": e.description}),
    )
    .await;
    reg_error(&e)
}

fn hex_fingerprint(fp: &[u8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

fn respond(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

async fn audit(
    state: &SharedState,
    at: OffsetDateTime,
    event: &str,
    outcome: &str,
    client_id: Option<String>,
    remote_addr: Option<String>,
    detail: Value,
) {
    let e = AuditEvent {
        at,
        event: event.to_string(),
        outcome: outcome.to_string(),
        client_id,
        member_id: None,
        patient: None,
        remote_addr,
        detail,
    };
    state.audit.record(e).await;
}
