//! Records kept by the store. Times have one-second precision (they are stored as unix seconds).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Lifecycle of a registered client. Stored as lowercase text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    Active,
    Disabled,
    Cancelled,
}

impl ClientStatus {
    /// The text stored in the database (and used on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Active => "active",
            ClientStatus::Disabled => "disabled",
            ClientStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored text; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ClientStatus::Active),
            "disabled" => Some(ClientStatus::Disabled),
            "cancelled" => Some(ClientStatus::Cancelled),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub status: ClientStatus,
    /// UDAP: community URI; `None` for out-of-band clients.
    pub community: Option<String>,
    /// UDAP: software statement `iss` (= certificate URI SAN).
    pub iss: Option<String>,
    /// Hash of a client_secret (never the secret).
    pub secret_hash: Option<String>,
    /// Registered metadata (client_name, redirect_uris, grant_types, scope, ...).
    pub metadata: serde_json::Value,
    pub is_resource_server: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub fhir_user: Option<String>,
    /// Patients this member may pick, in order.
    pub patients: Vec<String>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// "RS256" | "ES256"
    pub alg: String,
    pub private_pkcs8_der: Vec<u8>,
    pub public_jwk: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub publish_until: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// e.g. "client.registered"
    pub event: String,
    /// "success" | "failure"
    pub outcome: String,
    pub client_id: Option<String>,
    pub member_id: Option<String>,
    pub patient: Option<String>,
    pub remote_addr: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub member_id: Option<String>,
    pub patient: Option<String>,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub data: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub code_hash: String,
    pub client_id: String,
    pub grant_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub payload: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub grant_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub member_id: String,
    pub client_id: String,
    pub patient: Option<String>,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Outcome of [`crate::Store::redeem_code`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CodeRedemption {
    /// First redemption: the code is now consumed.
    Redeemed(CodeRecord),
    /// The code was redeemed before; `grant_id` is what the first redemption issued (if recorded).
    AlreadyUsed {
        grant_id: Option<String>,
    },
    Expired,
    NotFound,
}

/// Outcome of [`crate::Store::rotate_refresh_token`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RefreshRotation {
    /// The old token is rotated, the new one stored; the (active) grant.
    Rotated(GrantRecord),
    /// The old token had already been rotated: the whole grant is now revoked.
    Reused { grant_id: String },
    /// Unknown, expired or revoked token, or its grant is revoked/expired.
    Invalid,
}

/// One entry of the revocation log every node polls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Revocation {
    AccessToken {
        jti: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    Grant {
        grant_id: String,
    },
}
