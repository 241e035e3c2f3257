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

/// Outcome of [`crate::Store::rotate_refresh_token`] and [`crate::Store::reject_refresh_token`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RefreshRotation {
    /// The assertion's `jti` was used before: nothing was changed.
    AssertionReplayed,
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

/// A client assertion's or software statement's `jti`, recorded in the replay cache by the same
/// transaction as the write it authorizes (so a replay changes nothing, and a first use pays one commit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JtiRecord {
    /// The replay cache is per issuer: the client id for client assertions, the statement `iss` for
    /// software statements.
    pub issuer: String,
    pub jti: String,
    /// Kept until then (the assertion's `exp`).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What the token endpoint asks of [`crate::Store::exchange_code`].
#[derive(Clone, Copy, Debug)]
pub struct CodeExchange<'a> {
    pub code_hash: &'a str,
    /// The authenticated client. A code issued to another client is spent and its grant revoked.
    pub client_id: &'a str,
    /// The client assertion's `jti`, if the client authenticated with one.
    pub assertion_jti: Option<&'a JtiRecord>,
    pub action: CodeAction<'a>,
}

/// What to do with a code once it is claimed.
#[derive(Clone, Copy)]
pub enum CodeAction<'a> {
    /// The request does not match the code (redirect URI, PKCE): spend the code, issue nothing.
    Refuse,
    /// Issue tokens for the code's grant, storing this refresh token (its `grant_id` is forced to the
    /// code's grant) if there is one.
    Issue {
        refresh_token: Option<&'a RefreshTokenRecord>,
    },
    /// Ask the caller, inside the transaction, once the code is claimed for this client and its grant
    /// is known to be active: the token endpoint checks the request against the code there, so that it
    /// needs no read of its own before the write (one store round trip per request).
    Decide(&'a CodeDecider<'a>),
}

/// The caller's decision about a claimed code and its active grant (see [`CodeAction::Decide`]). It runs
/// inside the store's transaction: it must be quick and must not touch the store.
pub type CodeDecider<'a> = dyn Fn(&CodeRecord, &GrantRecord) -> CodeDecision + Send + Sync + 'a;

/// What a [`CodeDecider`] answers.
#[derive(Clone, Debug, PartialEq)]
pub enum CodeDecision {
    /// As [`CodeAction::Refuse`].
    Refuse,
    /// As [`CodeAction::Issue`].
    Issue {
        refresh_token: Option<RefreshTokenRecord>,
    },
}

impl std::fmt::Debug for CodeAction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeAction::Refuse => f.write_str("Refuse"),
            CodeAction::Issue { refresh_token } => f
                .debug_struct("Issue")
                .field("refresh_token", refresh_token)
                .finish(),
            CodeAction::Decide(_) => f.write_str("Decide(..)"),
        }
    }
}

/// Outcome of [`crate::Store::exchange_code`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CodeExchangeOutcome {
    /// The assertion's `jti` was used before: nothing was changed.
    AssertionReplayed,
    NotFound,
    /// Expired and never redeemed (left as it is).
    Expired,
    /// Redeemed before: the grant that redemption issued (if recorded) is now revoked.
    AlreadyUsed {
        grant_id: Option<String>,
    },
    /// Issued to another client: now spent, and its grant (if any) revoked.
    WrongClient {
        grant_id: Option<String>,
    },
    /// [`CodeAction::Refuse`]: the code is now spent.
    Refused,
    /// The code is now spent, but its grant is missing, revoked or expired: nothing was issued.
    GrantInactive,
    /// The code is now spent and the refresh token (if any) stored; the active grant.
    Issued {
        code: Box<CodeRecord>,
        grant: Box<GrantRecord>,
    },
}

/// A code whatever its state, with its grant (see [`crate::Store::find_code`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeInfo {
    pub code: CodeRecord,
    #[serde(with = "time::serde::rfc3339::option")]
    pub consumed_at: Option<OffsetDateTime>,
    /// `None` if the code has no grant or the grant is gone.
    pub grant: Option<GrantRecord>,
}

/// A refresh token whatever its state, with its grant (see [`crate::Store::find_refresh_token`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshTokenInfo {
    pub token: RefreshTokenRecord,
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub grant: GrantRecord,
}

impl RefreshTokenInfo {
    /// Neither rotated nor revoked, not expired, and its grant neither revoked nor expired.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.rotated_at.is_none()
            && self.revoked_at.is_none()
            && self.token.expires_at > now
            && self.grant.revoked_at.is_none()
            && self.grant.expires_at.is_none_or(|e| e > now)
    }
}

/// A UDAP registration's change to the store (see [`crate::Store::register_udap_client`]).
#[derive(Clone, Copy, Debug)]
pub struct UdapRegistration<'a> {
    /// The software statement's `jti` (issuer: the statement's `iss`).
    pub statement_jti: &'a JtiRecord,
    pub community: &'a str,
    pub iss: &'a str,
    pub change: RegistrationChange<'a>,
}

#[derive(Clone, Copy, Debug)]
pub enum RegistrationChange<'a> {
    /// Create the client for (community, iss) with `new_client_id`, or, when one exists, replace its
    /// metadata and secret hash and make it active again (keeping its id and creation time).
    Upsert {
        new_client_id: &'a str,
        secret_hash: Option<&'a str>,
        metadata: &'a serde_json::Value,
    },
    /// Cancel the client registered for (community, iss).
    Cancel,
}

/// Outcome of [`crate::Store::register_udap_client`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationOutcome {
    /// The statement's `jti` was used before: nothing was changed.
    StatementReplayed,
    Created {
        client_id: String,
    },
    Updated {
        client_id: String,
    },
    Cancelled {
        client_id: String,
    },
    /// A cancellation for an (community, iss) with no client (the `jti` is still recorded).
    NotRegistered,
}
