//! Bluegate storage: one [`Store`] trait, two backends ([`SqliteStore`], [`PgStore`]) that pass the same
//! conformance suite. All shared state of a Bluegate deployment lives here: clients, members, grants,
//! authorization codes, refresh tokens, the `jti` replay cache, access-token revocations, signing keys,
//! consents, sign-in failure counters and the audit log.
//!
//! Times are stored as unix seconds, so every `OffsetDateTime` read back has one-second precision and UTC
//! offset. Secrets are never stored: callers pass hashes (client secrets, codes, refresh tokens).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

#[macro_use]
mod backend;
mod error;
#[macro_use]
pub mod fhir;
pub mod model;
mod postgres;
mod sqlite;

pub use error::StoreError;
pub use fhir::{FhirStore, SearchPage, SearchQuery, StoredResource};
pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Length of the sign-in failure window used by [`Store::record_login_failure`].
pub const LOGIN_FAILURE_WINDOW: time::Duration = time::Duration::minutes(15);

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, e.g. `postgres://user@host:5432/bluegate`.
    Postgres(String),
}

/// Opens the store at `location` and runs its migrations.
pub async fn connect(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        StoreLocation::Postgres(url) => Arc::new(PgStore::connect(url).await?),
    })
}

/// Everything Bluegate persists. Object safe; used as `Arc<dyn Store>`. FHIR resources are behind the
/// supertrait [`FhirStore`], so every store offers both.
#[async_trait]
pub trait Store: FhirStore + Send + Sync + 'static {
    /// A cheap round trip to the database (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// "sqlite" or "postgres".
    fn backend_name(&self) -> &'static str;

    // ---- clients ----
    /// `Conflict` on a duplicate `client_id`, or a duplicate (`community`, `iss`) when both are set.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// Updates every field but `created_at`. `NotFound` if absent; `Conflict` on a duplicate (community, iss).
    async fn update_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    /// A UDAP registration in one transaction: records the statement `jti` (a replay →
    /// `StatementReplayed`, nothing changed), then creates, updates or cancels the client registered for
    /// (community, iss). Concurrent registrations of one (community, iss) end with one client.
    async fn register_udap_client(
        &self,
        registration: &UdapRegistration<'_>,
        now: OffsetDateTime,
    ) -> Result<RegistrationOutcome, StoreError>;
    async fn find_client_by_iss(
        &self,
        community: &str,
        iss: &str,
    ) -> Result<Option<ClientRecord>, StoreError>;
    /// All clients, ordered by (created_at, client_id).
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Sets status and `updated_at = now`; false if there is no such client.
    async fn set_client_status(
        &self,
        client_id: &str,
        status: ClientStatus,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    // ---- members ----
    /// Inserts the member and its patients in one transaction. `Conflict` on a duplicate id or username.
    /// Duplicate entries in `patients` are stored once (first position wins).
    async fn insert_member(&self, member: &MemberRecord) -> Result<(), StoreError>;
    async fn get_member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError>;
    async fn get_member_by_username(
        &self,
        username: &str,
    ) -> Result<Option<MemberRecord>, StoreError>;
    /// All members, ordered by username.
    async fn list_members(&self) -> Result<Vec<MemberRecord>, StoreError>;

    // ---- jti replay cache ----
    /// Records (issuer, jti) until `expires_at`. Returns false when it is already recorded and not yet
    /// expired (a replay). Atomic across connections and nodes.
    async fn remember_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes expired jti entries, codes, refresh tokens, access-token revocations and sign-in failures
    /// older than [`LOGIN_FAILURE_WINDOW`]; returns the number of rows deleted.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    // ---- signing keys ----
    /// `Conflict` on a duplicate kid.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// All keys, newest first (created_at, then kid, descending).
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// False if there is no such key.
    async fn retire_signing_key(
        &self,
        kid: &str,
        retired_at: OffsetDateTime,
        publish_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    // ---- audit ----
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Appends events in order, all or nothing, in one transaction.
    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// Newest first (by `at`, then id); `event_prefix` is a plain (case-sensitive) prefix, not a pattern.
    async fn list_audit(
        &self,
        limit: u32,
        event_prefix: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    // ---- grants, codes, refresh tokens ----
    /// `Conflict` on a duplicate id.
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;
    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError>;
    /// [`Store::insert_grant`] and the assertion `jti` (if given) in one transaction. False on a replayed
    /// `jti`: nothing is stored. `Conflict` on a duplicate grant id.
    async fn insert_grant_once(
        &self,
        grant: &GrantRecord,
        assertion_jti: Option<&JtiRecord>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Revokes the grant and its refresh tokens and logs a [`Revocation::Grant`]. True if this call revoked
    /// it; false if there is no such grant or it was already revoked.
    async fn revoke_grant(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError>;
    /// The member's grants that are not revoked, ordered by (created_at, id).
    async fn list_grants_for_member(&self, member_id: &str)
        -> Result<Vec<GrantRecord>, StoreError>;
    /// `Conflict` on a duplicate code hash.
    async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError>;
    /// Single use, atomic: exactly one caller gets `Redeemed`; later calls get `AlreadyUsed` (with the
    /// grant id recorded by [`Store::set_code_grant`]) even once the code has expired.
    async fn redeem_code(
        &self,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError>;
    /// The code, redeemed or not, expired or not, with its grant if it has one (the token endpoint checks
    /// a request against them before [`Store::exchange_code`]); `None` if unknown.
    async fn find_code(&self, code_hash: &str) -> Result<Option<CodeInfo>, StoreError>;
    /// The token endpoint's one write for the authorization_code grant, in one transaction:
    /// records the assertion `jti` (a replay → `AssertionReplayed`, nothing changed); then unknown →
    /// `NotFound`; redeemed before → revoke the grant that redemption issued, `AlreadyUsed`; expired →
    /// `Expired`; else the code is spent (exactly one caller ever gets past this point) and: issued to
    /// another client → revoke its grant, `WrongClient`; [`CodeAction::Refuse`] → `Refused`; grant
    /// missing, revoked or expired → `GrantInactive`; [`CodeAction::Decide`] is asked now (its
    /// [`CodeDecision::Refuse`] → `Refused`); else store the refresh token and `Issued`.
    async fn exchange_code(
        &self,
        exchange: &CodeExchange<'_>,
        now: OffsetDateTime,
    ) -> Result<CodeExchangeOutcome, StoreError>;
    /// Records the grant a code was exchanged for. `NotFound` if there is no such code.
    async fn set_code_grant(&self, code_hash: &str, grant_id: &str) -> Result<(), StoreError>;
    /// `Conflict` on a duplicate hash; `Database` if the grant does not exist.
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError>;
    /// In one transaction: records the assertion `jti` if given (a replay → `AssertionReplayed`, nothing
    /// changed); unknown → `Invalid`; already rotated → revoke the grant, `Reused`; expired, revoked, or
    /// grant revoked/expired → `Invalid`; else mark the old token rotated, insert `new` (its `grant_id` is
    /// forced to the old token's) and return `Rotated(grant)`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: &RefreshTokenRecord,
        assertion_jti: Option<&JtiRecord>,
        now: OffsetDateTime,
    ) -> Result<RefreshRotation, StoreError>;
    /// A refresh request refused before rotation (the token is not active), in one transaction: records
    /// the assertion `jti` if given (a replay → `AssertionReplayed`, nothing changed); a token that was
    /// already rotated has come back, so its grant is revoked → `Reused`; anything else → `Invalid`,
    /// nothing changed. Never `Rotated`.
    async fn reject_refresh_token(
        &self,
        token_hash: &str,
        assertion_jti: Option<&JtiRecord>,
        now: OffsetDateTime,
    ) -> Result<RefreshRotation, StoreError>;
    /// The token in whatever state, with its grant; `None` if unknown (or its grant is gone).
    async fn find_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshTokenInfo>, StoreError>;
    /// Revokes the token's grant (and so all its tokens); returns the grant id, `None` if unknown.
    async fn revoke_refresh_token(
        &self,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;
    /// The token, only if it is neither rotated nor revoked (expiry is the caller's check).
    async fn get_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;

    // ---- access-token revocation ----
    /// Idempotent. Kept until `expires_at` (then purged).
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    /// Revocations recorded at or after `since` (inclusive, so a poller never misses one recorded in the
    /// same second), oldest first.
    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(OffsetDateTime, Revocation)>, StoreError>;

    // ---- consents ----
    async fn upsert_consent(&self, consent: &ConsentRecord) -> Result<(), StoreError>;
    async fn get_consent(
        &self,
        member_id: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRecord>, StoreError>;
    /// False if there was none.
    async fn delete_consent(&self, member_id: &str, client_id: &str) -> Result<bool, StoreError>;

    // ---- sign-in throttling ----
    /// Records one failure; returns the failures for `key` in the trailing [`LOGIN_FAILURE_WINDOW`]
    /// (including this one) since the last reset.
    async fn record_login_failure(&self, key: &str, now: OffsetDateTime)
        -> Result<u32, StoreError>;
    /// Failures for `key` at or after `since` (only the last [`LOGIN_FAILURE_WINDOW`] is kept).
    async fn count_login_failures(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<u32, StoreError>;
    async fn reset_login_failures(&self, key: &str) -> Result<(), StoreError>;
}
