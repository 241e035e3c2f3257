//! The SQL shared by both backends. Both speak `$N` placeholders, `ON CONFLICT`, and `RETURNING`, so the
//! implementation is written once ([`impl_store!`]) and expanded in each backend module, which supplies:
//! `type Db`, `type DbRow`, `fn json_arg(&Value) -> Result<impl Encode, StoreError>`,
//! `fn json_col(&DbRow, &str) -> Result<Value, StoreError>`,
//! `async fn begin_write(&Pool<Db>) -> Result<Transaction<'static, Db>, StoreError>`, and a store struct with
//! a `pool: Pool<Db>` field. Row-lock clauses (`FOR UPDATE`) are passed in, since SQLite has none (it
//! serializes writers with `BEGIN IMMEDIATE` instead). The token endpoint's hot write starts with
//! `claim_code(tx, exchange, now) -> Result<CodeClaim, StoreError>`, which each backend writes in the
//! fewest round trips its protocol allows. UDAP registrations are committed by the backend's
//! `register_udap(&Store, &UdapRegistration, now)`, around the shared `register_udap_tx` (SQLite groups
//! concurrent ones into one commit).

use time::OffsetDateTime;

use crate::StoreError;

pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn opt_ts(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(ts)
}

pub(crate) fn from_ts(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(v)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

pub(crate) fn from_opt_ts(v: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    v.map(from_ts).transpose()
}

/// Audit events stored by one INSERT statement (8 parameters each: within both backends' limits).
pub(crate) const AUDIT_ROWS_PER_STATEMENT: usize = 512;

pub(crate) fn count_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Patients in first-seen order, each once.
pub(crate) fn dedup_patients(patients: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    patients
        .iter()
        .map(String::as_str)
        .filter(|p| seen.insert(*p))
        .collect()
}

macro_rules! client_cols {
    () => {
        "client_id, status, community, iss, secret_hash, metadata, is_resource_server, created_at, updated_at"
    };
}
macro_rules! member_cols {
    () => {
        "id, username, password_hash, fhir_user, disabled, created_at"
    };
}
macro_rules! key_cols {
    () => {
        "kid, alg, private_pkcs8_der, public_jwk, created_at, retired_at, publish_until"
    };
}
macro_rules! audit_cols {
    () => {
        "id, at, event, outcome, client_id, member_id, patient, remote_addr, detail"
    };
}
macro_rules! grant_cols {
    () => {
        "id, client_id, member_id, patient, scope, created_at, expires_at, revoked_at, data"
    };
}
macro_rules! code_cols {
    () => {
        "code_hash, client_id, grant_id, expires_at, payload"
    };
}

/// What the first step of a code exchange found: whether the client assertion's jti was new (when it
/// was not, the caller rolls back: the step may have spent the code too), the code it spent (`None`:
/// not claimable), and that code's grant, locked for the rest of the transaction.
pub(crate) struct CodeClaim {
    pub jti_fresh: bool,
    pub code: Option<crate::model::CodeRecord>,
    pub grant: Option<crate::model::GrantRecord>,
}

/// Spends a code: one statement, so that exactly one caller gets past it, on any backend. `$1` is the
/// code's hash, `$2` now.
macro_rules! claim_code_sql {
    () => {
        concat!(
            "UPDATE codes SET consumed_at = $2 \
             WHERE code_hash = $1 AND consumed_at IS NULL AND expires_at > $2 RETURNING ",
            code_cols!()
        )
    };
}
/// The grant of the code whose hash is `$1`.
macro_rules! code_grant_sql {
    () => {
        concat!(
            "SELECT ",
            grant_cols!(),
            " FROM grants WHERE id = (SELECT grant_id FROM codes WHERE code_hash = $1)"
        )
    };
}
/// What a UDAP registration's client insert does when the (community, iss) is registered already:
/// update that client in place (same `client_id`), and return the `client_id` either way.
macro_rules! client_upsert_tail_sql {
    () => {
        " ON CONFLICT (community, iss) WHERE community IS NOT NULL AND iss IS NOT NULL \
         DO UPDATE SET status = 'active', secret_hash = excluded.secret_hash, \
         metadata = excluded.metadata, updated_at = excluded.updated_at \
         RETURNING client_id"
    };
}

/// Records the client assertion's jti (`$3` issuer, `$4` jti, `$5` its expiry; `$2` now): a row is
/// changed unless the jti is recorded and not yet expired.
macro_rules! remember_jti_sql {
    () => {
        "INSERT INTO jti_cache (issuer, jti, expires_at) VALUES ($3, $4, $5) \
         ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE jti_cache.expires_at <= $2"
    };
}

macro_rules! impl_store {
    ($store:ident, $backend:literal, for_update = $for_update:literal) => {
        use $crate::backend::{count_u32, dedup_patients, AUDIT_ROWS_PER_STATEMENT, from_opt_ts, from_ts, opt_ts, ts};
        use $crate::model::*;
        use $crate::{Store, StoreError, LOGIN_FAILURE_WINDOW};

        fn col<'r, T>(row: &'r DbRow, name: &str) -> Result<T, StoreError>
        where
            T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
        {
            sqlx::Row::try_get(row, name)
                .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
        }

        fn client_from_row(row: &DbRow) -> Result<ClientRecord, StoreError> {
            let status: String = col(row, "status")?;
            Ok(ClientRecord {
                client_id: col(row, "client_id")?,
                status: ClientStatus::parse(&status).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown client status {status:?}"))
                })?,
                community: col(row, "community")?,
                iss: col(row, "iss")?,
                secret_hash: col(row, "secret_hash")?,
                metadata: json_col(row, "metadata")?,
                is_resource_server: col(row, "is_resource_server")?,
                created_at: from_ts(col(row, "created_at")?)?,
                updated_at: from_ts(col(row, "updated_at")?)?,
            })
        }

        fn member_from_row(row: &DbRow, patients: Vec<String>) -> Result<MemberRecord, StoreError> {
            Ok(MemberRecord {
                id: col(row, "id")?,
                username: col(row, "username")?,
                password_hash: col(row, "password_hash")?,
                fhir_user: col(row, "fhir_user")?,
                patients,
                disabled: col(row, "disabled")?,
                created_at: from_ts(col(row, "created_at")?)?,
            })
        }

        fn key_from_row(row: &DbRow) -> Result<SigningKeyRecord, StoreError> {
            Ok(SigningKeyRecord {
                kid: col(row, "kid")?,
                alg: col(row, "alg")?,
                private_pkcs8_der: col(row, "private_pkcs8_der")?,
                public_jwk: json_col(row, "public_jwk")?,
                created_at: from_ts(col(row, "created_at")?)?,
                retired_at: from_opt_ts(col(row, "retired_at")?)?,
                publish_until: from_opt_ts(col(row, "publish_until")?)?,
            })
        }

        fn audit_from_row(row: &DbRow) -> Result<AuditRecord, StoreError> {
            Ok(AuditRecord {
                id: col(row, "id")?,
                event: AuditEvent {
                    at: from_ts(col(row, "at")?)?,
                    event: col(row, "event")?,
                    outcome: col(row, "outcome")?,
                    client_id: col(row, "client_id")?,
                    member_id: col(row, "member_id")?,
                    patient: col(row, "patient")?,
                    remote_addr: col(row, "remote_addr")?,
                    detail: json_col(row, "detail")?,
                },
            })
        }

        fn grant_from_row(row: &DbRow) -> Result<GrantRecord, StoreError> {
            grant_from_prefixed(row, "")
        }

        /// A grant from columns named `{prefix}id`, `{prefix}client_id`, ... (a row that holds more than
        /// the grant).
        fn grant_from_prefixed(row: &DbRow, prefix: &str) -> Result<GrantRecord, StoreError> {
            let name = |c: &str| format!("{prefix}{c}");
            Ok(GrantRecord {
                id: col(row, &name("id"))?,
                client_id: col(row, &name("client_id"))?,
                member_id: col(row, &name("member_id"))?,
                patient: col(row, &name("patient"))?,
                scope: col(row, &name("scope"))?,
                created_at: from_ts(col(row, &name("created_at"))?)?,
                expires_at: from_opt_ts(col(row, &name("expires_at"))?)?,
                revoked_at: from_opt_ts(col(row, &name("revoked_at"))?)?,
                data: json_col(row, &name("data"))?,
            })
        }

        fn code_from_row(row: &DbRow) -> Result<CodeRecord, StoreError> {
            Ok(CodeRecord {
                code_hash: col(row, "code_hash")?,
                client_id: col(row, "client_id")?,
                grant_id: col(row, "grant_id")?,
                expires_at: from_ts(col(row, "expires_at")?)?,
                payload: json_col(row, "payload")?,
            })
        }

        fn refresh_from_row(row: &DbRow) -> Result<RefreshTokenRecord, StoreError> {
            Ok(RefreshTokenRecord {
                token_hash: col(row, "token_hash")?,
                grant_id: col(row, "grant_id")?,
                expires_at: from_ts(col(row, "expires_at")?)?,
                created_at: from_ts(col(row, "created_at")?)?,
            })
        }

        fn consent_from_row(row: &DbRow) -> Result<ConsentRecord, StoreError> {
            Ok(ConsentRecord {
                member_id: col(row, "member_id")?,
                client_id: col(row, "client_id")?,
                patient: col(row, "patient")?,
                scope: col(row, "scope")?,
                updated_at: from_ts(col(row, "updated_at")?)?,
            })
        }

        fn revocation_from_row(
            row: &DbRow,
        ) -> Result<(time::OffsetDateTime, Revocation), StoreError> {
            let at = from_ts(col(row, "at")?)?;
            let kind: String = col(row, "kind")?;
            let jti: Option<String> = col(row, "jti")?;
            let grant_id: Option<String> = col(row, "grant_id")?;
            let expires_at: Option<i64> = col(row, "expires_at")?;
            let rev = match (kind.as_str(), jti, grant_id, expires_at) {
                ("access_token", Some(jti), _, Some(exp)) => Revocation::AccessToken {
                    jti,
                    expires_at: from_ts(exp)?,
                },
                ("grant", _, Some(grant_id), _) => Revocation::Grant { grant_id },
                (kind, ..) => {
                    return Err(StoreError::Corrupt(format!(
                        "revocation of kind {kind:?} lacks its fields"
                    )))
                }
            };
            Ok((at, rev))
        }

        async fn member_patients<'e, E>(exec: E, member_id: &str) -> Result<Vec<String>, StoreError>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let rows = sqlx::query(
                "SELECT patient_id FROM member_patients WHERE member_id = $1 ORDER BY position",
            )
            .bind(member_id)
            .fetch_all(exec)
            .await?;
            rows.iter().map(|r| col(r, "patient_id")).collect()
        }

        /// Revokes a grant and its refresh tokens inside `tx`, logging the revocation. Tokens are locked
        /// before the grant, the same order `rotate_refresh_token` uses, so the two cannot deadlock.
        async fn revoke_grant_tx(
            tx: &mut sqlx::Transaction<'static, Db>,
            id: &str,
            now: time::OffsetDateTime,
        ) -> Result<bool, StoreError> {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(ts(now))
            .execute(&mut **tx)
            .await?;
            let done = sqlx::query(
                "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(ts(now))
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            if done {
                sqlx::query("INSERT INTO revocations (at, kind, grant_id) VALUES ($1, 'grant', $2)")
                    .bind(ts(now))
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(done)
        }

        /// A UDAP registration's writes inside `tx` (see `Store::register_udap_client`): the statement's jti
        /// first, so a replay changes nothing.
        async fn register_udap_tx(
            tx: &mut sqlx::Transaction<'static, Db>,
            r: &UdapRegistration<'_>,
            now: time::OffsetDateTime,
        ) -> Result<RegistrationOutcome, StoreError> {
            if !remember_jti_tx(tx, r.statement_jti, now).await? {
                return Ok(RegistrationOutcome::StatementReplayed);
            }
            Ok(match r.change {
                RegistrationChange::Cancel => {
                    let row = sqlx::query(
                        "UPDATE clients SET status = 'cancelled', updated_at = $3 \
                         WHERE community = $1 AND iss = $2 RETURNING client_id",
                    )
                    .bind(r.community)
                    .bind(r.iss)
                    .bind(ts(now))
                    .fetch_optional(&mut **tx)
                    .await?;
                    match row {
                        Some(row) => RegistrationOutcome::Cancelled { client_id: col(&row, "client_id")? },
                        None => RegistrationOutcome::NotRegistered,
                    }
                }
                RegistrationChange::Upsert { new_client_id, secret_hash, metadata } => {
                    // One statement, so two registrations of one (community, iss) cannot both create.
                    let row = sqlx::query(concat!(
                        "INSERT INTO clients (",
                        client_cols!(),
                        ") VALUES ($1, 'active', $2, $3, $4, $5, $6, $7, $7)",
                        client_upsert_tail_sql!()
                    ))
                    .bind(new_client_id)
                    .bind(r.community)
                    .bind(r.iss)
                    .bind(secret_hash)
                    .bind(json_arg(metadata)?)
                    .bind(false)
                    .bind(ts(now))
                    .fetch_one(&mut **tx)
                    .await?;
                    let client_id: String = col(&row, "client_id")?;
                    if client_id == new_client_id {
                        RegistrationOutcome::Created { client_id }
                    } else {
                        RegistrationOutcome::Updated { client_id }
                    }
                }
            })
        }

        /// Records (issuer, jti) inside `tx`; false if it is recorded and not yet expired (a replay).
        async fn remember_jti_tx(
            tx: &mut sqlx::Transaction<'static, Db>,
            j: &JtiRecord,
            now: time::OffsetDateTime,
        ) -> Result<bool, StoreError> {
            let r = sqlx::query(
                "INSERT INTO jti_cache (issuer, jti, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE jti_cache.expires_at <= $4",
            )
            .bind(&j.issuer)
            .bind(&j.jti)
            .bind(ts(j.expires_at))
            .bind(ts(now))
            .execute(&mut **tx)
            .await?;
            Ok(r.rows_affected() == 1)
        }

        /// The body of `rotate_refresh_token` (`new: Some`) and `reject_refresh_token` (`new: None`), inside
        /// `tx`. The token row is locked first, then the grant's: the order `revoke_grant_tx` uses.
        async fn rotate_tx(
            tx: &mut sqlx::Transaction<'static, Db>,
            old_hash: &str,
            new: Option<&RefreshTokenRecord>,
            now: time::OffsetDateTime,
        ) -> Result<RefreshRotation, StoreError> {
            let now_s = ts(now);
            let row = sqlx::query(concat!(
                "SELECT grant_id, expires_at, rotated_at, revoked_at FROM refresh_tokens \
                 WHERE token_hash = $1",
                $for_update
            ))
            .bind(old_hash)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else { return Ok(RefreshRotation::Invalid) };
            let grant_id: String = col(&row, "grant_id")?;
            let expires_at: i64 = col(&row, "expires_at")?;
            let rotated_at: Option<i64> = col(&row, "rotated_at")?;
            let revoked_at: Option<i64> = col(&row, "revoked_at")?;
            if rotated_at.is_some() {
                // A rotated token came back: someone holds a copy. Kill the whole grant.
                revoke_grant_tx(tx, &grant_id, now).await?;
                return Ok(RefreshRotation::Reused { grant_id });
            }
            let Some(new) = new else { return Ok(RefreshRotation::Invalid) };
            if revoked_at.is_some() || expires_at <= now_s {
                return Ok(RefreshRotation::Invalid);
            }
            let grant = sqlx::query(concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1"))
                .bind(&grant_id)
                .fetch_optional(&mut **tx)
                .await?;
            let Some(grant) = grant.as_ref().map(grant_from_row).transpose()? else {
                return Ok(RefreshRotation::Invalid);
            };
            if grant.revoked_at.is_some() || grant.expires_at.is_some_and(|e| ts(e) <= now_s) {
                return Ok(RefreshRotation::Invalid);
            }
            let claimed = sqlx::query(
                "UPDATE refresh_tokens SET rotated_at = $2 \
                 WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL",
            )
            .bind(old_hash)
            .bind(now_s)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if claimed != 1 {
                // Rotated by someone else since we read it: that is a reuse too.
                revoke_grant_tx(tx, &grant_id, now).await?;
                return Ok(RefreshRotation::Reused { grant_id });
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, grant_id, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&new.token_hash)
            .bind(&grant_id)
            .bind(ts(new.expires_at))
            .bind(ts(new.created_at))
            .execute(&mut **tx)
            .await?;
            Ok(RefreshRotation::Rotated(grant))
        }

        /// The body of `exchange_code` after the claim, inside `tx`.
        async fn exchange_tx(
            tx: &mut sqlx::Transaction<'static, Db>,
            ex: &CodeExchange<'_>,
            now: time::OffsetDateTime,
            claim: CodeClaim,
        ) -> Result<CodeExchangeOutcome, StoreError> {
            let Some(code) = claim.code else {
                let row = sqlx::query("SELECT grant_id, consumed_at FROM codes WHERE code_hash = $1")
                    .bind(ex.code_hash)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(row) = row else { return Ok(CodeExchangeOutcome::NotFound) };
                let consumed: Option<i64> = col(&row, "consumed_at")?;
                if consumed.is_none() {
                    return Ok(CodeExchangeOutcome::Expired);
                }
                // A replayed code: whatever the first redemption issued is revoked (RFC 6749 §4.1.2).
                let grant_id: Option<String> = col(&row, "grant_id")?;
                if let Some(g) = &grant_id {
                    revoke_grant_tx(tx, g, now).await?;
                }
                return Ok(CodeExchangeOutcome::AlreadyUsed { grant_id });
            };
            if code.client_id != ex.client_id {
                if let Some(g) = &code.grant_id {
                    revoke_grant_tx(tx, g, now).await?;
                }
                return Ok(CodeExchangeOutcome::WrongClient { grant_id: code.grant_id });
            }
            if let CodeAction::Refuse = ex.action {
                return Ok(CodeExchangeOutcome::Refused);
            }
            let Some(grant_id) = code.grant_id.as_deref() else {
                return Ok(CodeExchangeOutcome::GrantInactive);
            };
            let grant = claim
                .grant
                .filter(|g| g.id == grant_id)
                .filter(|g| g.revoked_at.is_none() && g.expires_at.is_none_or(|e| e > now));
            let Some(grant) = grant else { return Ok(CodeExchangeOutcome::GrantInactive) };
            let decided;
            let refresh_token = match ex.action {
                CodeAction::Refuse => return Ok(CodeExchangeOutcome::Refused),
                CodeAction::Issue { refresh_token } => refresh_token,
                CodeAction::Decide(decide) => match decide(&code, &grant) {
                    CodeDecision::Refuse => return Ok(CodeExchangeOutcome::Refused),
                    CodeDecision::Issue { refresh_token } => {
                        decided = refresh_token;
                        decided.as_ref()
                    }
                },
            };
            if let Some(t) = refresh_token {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&t.token_hash)
                .bind(&grant.id)
                .bind(ts(t.expires_at))
                .bind(ts(t.created_at))
                .execute(&mut **tx)
                .await?;
            }
            Ok(CodeExchangeOutcome::Issued {
                code: Box::new(code),
                grant: Box::new(grant),
            })
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn backend_name(&self) -> &'static str {
                $backend
            }

            // ---- clients ----

            async fn insert_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO clients (",
                    client_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&c.client_id)
                .bind(c.status.as_str())
                .bind(&c.community)
                .bind(&c.iss)
                .bind(&c.secret_hash)
                .bind(json_arg(&c.metadata)?)
                .bind(c.is_resource_server)
                .bind(ts(c.created_at))
                .bind(ts(c.updated_at))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn update_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
                let r = sqlx::query(
                    "UPDATE clients SET status = $2, community = $3, iss = $4, secret_hash = $5, \
                     metadata = $6, is_resource_server = $7, updated_at = $8 WHERE client_id = $1",
                )
                .bind(&c.client_id)
                .bind(c.status.as_str())
                .bind(&c.community)
                .bind(&c.iss)
                .bind(&c.secret_hash)
                .bind(json_arg(&c.metadata)?)
                .bind(c.is_resource_server)
                .bind(ts(c.updated_at))
                .execute(&self.writer)
                .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
                sqlx::query(concat!("SELECT ", client_cols!(), " FROM clients WHERE client_id = $1"))
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(client_from_row)
                    .transpose()
            }

            async fn register_udap_client(
                &self,
                r: &UdapRegistration<'_>,
                now: time::OffsetDateTime,
            ) -> Result<RegistrationOutcome, StoreError> {
                register_udap(self, r, now).await
            }

            async fn find_client_by_iss(
                &self,
                community: &str,
                iss: &str,
            ) -> Result<Option<ClientRecord>, StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    client_cols!(),
                    " FROM clients WHERE community = $1 AND iss = $2"
                ))
                .bind(community)
                .bind(iss)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(client_from_row)
                .transpose()
            }

            async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    client_cols!(),
                    " FROM clients ORDER BY created_at, client_id"
                ))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(client_from_row)
                .collect()
            }

            async fn set_client_status(
                &self,
                client_id: &str,
                status: ClientStatus,
                now: time::OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE clients SET status = $2, updated_at = $3 WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(status.as_str())
                .bind(ts(now))
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() > 0)
            }

            // ---- members ----

            async fn insert_member(&self, m: &MemberRecord) -> Result<(), StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                sqlx::query(concat!(
                    "INSERT INTO members (",
                    member_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(&m.id)
                .bind(&m.username)
                .bind(&m.password_hash)
                .bind(&m.fhir_user)
                .bind(m.disabled)
                .bind(ts(m.created_at))
                .execute(&mut *tx)
                .await?;
                for (position, patient) in dedup_patients(&m.patients).into_iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO member_patients (member_id, patient_id, position) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(&m.id)
                    .bind(patient)
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", member_cols!(), " FROM members WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let patients = member_patients(&self.pool, id).await?;
                member_from_row(&row, patients).map(Some)
            }

            async fn get_member_by_username(
                &self,
                username: &str,
            ) -> Result<Option<MemberRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    member_cols!(),
                    " FROM members WHERE username = $1"
                ))
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let id: String = col(&row, "id")?;
                let patients = member_patients(&self.pool, &id).await?;
                member_from_row(&row, patients).map(Some)
            }

            async fn list_members(&self) -> Result<Vec<MemberRecord>, StoreError> {
                let rows = sqlx::query(concat!("SELECT ", member_cols!(), " FROM members ORDER BY username"))
                    .fetch_all(&self.pool)
                    .await?;
                let links = sqlx::query(
                    "SELECT member_id, patient_id FROM member_patients ORDER BY member_id, position",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut by_member: std::collections::HashMap<String, Vec<String>> =
                    std::collections::HashMap::new();
                for link in &links {
                    by_member
                        .entry(col(link, "member_id")?)
                        .or_default()
                        .push(col(link, "patient_id")?);
                }
                rows.iter()
                    .map(|row| {
                        let id: String = col(row, "id")?;
                        member_from_row(row, by_member.remove(&id).unwrap_or_default())
                    })
                    .collect()
            }

            // ---- jti replay cache ----

            async fn remember_jti(
                &self,
                issuer: &str,
                jti: &str,
                expires_at: time::OffsetDateTime,
                now: time::OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "INSERT INTO jti_cache (issuer, jti, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE jti_cache.expires_at <= $4",
                )
                .bind(issuer)
                .bind(jti)
                .bind(ts(expires_at))
                .bind(ts(now))
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn purge_expired(&self, now: time::OffsetDateTime) -> Result<u64, StoreError> {
                let now_s = ts(now);
                let mut total = 0u64;
                for sql in [
                    "DELETE FROM jti_cache WHERE expires_at <= $1",
                    "DELETE FROM codes WHERE expires_at <= $1",
                    "DELETE FROM refresh_tokens WHERE expires_at <= $1",
                    "DELETE FROM revocations WHERE kind = 'access_token' AND expires_at <= $1",
                ] {
                    total += sqlx::query(sql).bind(now_s).execute(&self.writer).await?.rows_affected();
                }
                total += sqlx::query("DELETE FROM login_failures WHERE at <= $1")
                    .bind(ts(now - LOGIN_FAILURE_WINDOW))
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                Ok(total)
            }

            // ---- signing keys ----

            async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<(), StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO signing_keys (",
                    key_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.private_pkcs8_der)
                .bind(json_arg(&k.public_jwk)?)
                .bind(ts(k.created_at))
                .bind(opt_ts(k.retired_at))
                .bind(opt_ts(k.publish_until))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    key_cols!(),
                    " FROM signing_keys ORDER BY created_at DESC, kid DESC"
                ))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(key_from_row)
                .collect()
            }

            async fn retire_signing_key(
                &self,
                kid: &str,
                retired_at: time::OffsetDateTime,
                publish_until: time::OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let r = sqlx::query(
                    "UPDATE signing_keys SET retired_at = $2, publish_until = $3 WHERE kid = $1",
                )
                .bind(kid)
                .bind(ts(retired_at))
                .bind(ts(publish_until))
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() > 0)
            }

            // ---- audit ----

            async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
                self.append_audit_batch(std::slice::from_ref(e)).await
            }

            async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                if events.is_empty() {
                    return Ok(());
                }
                // One statement per chunk (atomic on its own), one transaction (one durable commit) for
                // the batch: a batch holds the writer for one round trip, not one per event.
                let mut tx = None;
                for chunk in events.chunks(AUDIT_ROWS_PER_STATEMENT) {
                    if tx.is_none() && chunk.len() < events.len() {
                        tx = Some(begin_write(&self.writer).await?);
                    }
                    let mut insert = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO audit_log (at, event, outcome, client_id, member_id, patient, \
                         remote_addr, detail) ",
                    );
                    let mut encoded = Vec::with_capacity(chunk.len());
                    for e in chunk {
                        encoded.push(json_arg(&e.detail)?);
                    }
                    insert.push_values(chunk.iter().zip(encoded), |mut row, (e, detail)| {
                        row.push_bind(ts(e.at))
                            .push_bind(&e.event)
                            .push_bind(&e.outcome)
                            .push_bind(&e.client_id)
                            .push_bind(&e.member_id)
                            .push_bind(&e.patient)
                            .push_bind(&e.remote_addr)
                            .push_bind(detail);
                    });
                    // Each batch size is its own statement text: not worth a place in the statement cache.
                    let query = insert.build().persistent(false);
                    match tx.as_mut() {
                        Some(tx) => query.execute(&mut **tx).await?,
                        None => query.execute(&self.writer).await?,
                    };
                }
                if let Some(tx) = tx {
                    tx.commit().await?;
                }
                Ok(())
            }

            async fn list_audit(
                &self,
                limit: u32,
                event_prefix: Option<&str>,
            ) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = match event_prefix {
                    None => {
                        sqlx::query(concat!(
                            "SELECT ",
                            audit_cols!(),
                            " FROM audit_log ORDER BY at DESC, id DESC LIMIT $1"
                        ))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                    Some(prefix) => {
                        // substr, not LIKE: the prefix is literal text and the match case-sensitive.
                        sqlx::query(concat!(
                            "SELECT ",
                            audit_cols!(),
                            " FROM audit_log WHERE substr(event, 1, length($2)) = $2 \
                             ORDER BY at DESC, id DESC LIMIT $1"
                        ))
                        .bind(i64::from(limit))
                        .bind(prefix)
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.iter().map(audit_from_row).collect()
            }

            // ---- grants, codes, refresh tokens ----

            async fn insert_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
                // Without a jti to record the insert always happens; one SQL path for both.
                self.insert_grant_once(g, None, g.created_at).await.map(|_| ())
            }

            async fn insert_grant_once(
                &self,
                g: &GrantRecord,
                assertion_jti: Option<&JtiRecord>,
                now: time::OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                if let Some(j) = assertion_jti {
                    if !remember_jti_tx(&mut tx, j, now).await? {
                        return Ok(false);
                    }
                }
                sqlx::query(concat!(
                    "INSERT INTO grants (",
                    grant_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&g.id)
                .bind(&g.client_id)
                .bind(&g.member_id)
                .bind(&g.patient)
                .bind(&g.scope)
                .bind(ts(g.created_at))
                .bind(opt_ts(g.expires_at))
                .bind(opt_ts(g.revoked_at))
                .bind(json_arg(&g.data)?)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
                sqlx::query(concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(grant_from_row)
                    .transpose()
            }

            async fn revoke_grant(&self, id: &str, now: time::OffsetDateTime) -> Result<bool, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                let done = revoke_grant_tx(&mut tx, id, now).await?;
                tx.commit().await?;
                Ok(done)
            }

            async fn list_grants_for_member(
                &self,
                member_id: &str,
            ) -> Result<Vec<GrantRecord>, StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    grant_cols!(),
                    " FROM grants WHERE member_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
                ))
                .bind(member_id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(grant_from_row)
                .collect()
            }

            async fn insert_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO codes (",
                    code_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5)"
                ))
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(&c.grant_id)
                .bind(ts(c.expires_at))
                .bind(json_arg(&c.payload)?)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn redeem_code(
                &self,
                code_hash: &str,
                now: time::OffsetDateTime,
            ) -> Result<CodeRedemption, StoreError> {
                // One statement: the row is claimed by exactly one caller, on any backend.
                let claimed = sqlx::query(concat!(
                    "UPDATE codes SET consumed_at = $2 \
                     WHERE code_hash = $1 AND consumed_at IS NULL AND expires_at > $2 RETURNING ",
                    code_cols!()
                ))
                .bind(code_hash)
                .bind(ts(now))
                .fetch_optional(&self.writer)
                .await?;
                if let Some(row) = claimed {
                    return code_from_row(&row).map(CodeRedemption::Redeemed);
                }
                let row = sqlx::query("SELECT grant_id, consumed_at FROM codes WHERE code_hash = $1")
                    .bind(code_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(CodeRedemption::NotFound) };
                let consumed: Option<i64> = col(&row, "consumed_at")?;
                Ok(if consumed.is_some() {
                    CodeRedemption::AlreadyUsed { grant_id: col(&row, "grant_id")? }
                } else {
                    CodeRedemption::Expired
                })
            }

            async fn find_code(&self, code_hash: &str) -> Result<Option<CodeInfo>, StoreError> {
                let row = sqlx::query(
                    "SELECT c.code_hash, c.client_id AS c_client_id, c.grant_id, \
                     c.expires_at AS c_expires_at, c.payload, c.consumed_at, \
                     g.id, g.client_id, g.member_id, g.patient, g.scope, g.created_at, g.expires_at, \
                     g.revoked_at, g.data \
                     FROM codes c LEFT JOIN grants g ON g.id = c.grant_id WHERE c.code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let grant_id: Option<String> = col(&row, "id")?;
                Ok(Some(CodeInfo {
                    code: CodeRecord {
                        code_hash: col(&row, "code_hash")?,
                        client_id: col(&row, "c_client_id")?,
                        grant_id: col(&row, "grant_id")?,
                        expires_at: from_ts(col(&row, "c_expires_at")?)?,
                        payload: json_col(&row, "payload")?,
                    },
                    consumed_at: from_opt_ts(col(&row, "consumed_at")?)?,
                    grant: match grant_id {
                        Some(_) => Some(grant_from_row(&row)?),
                        None => None,
                    },
                }))
            }

            async fn exchange_code(
                &self,
                ex: &CodeExchange<'_>,
                now: time::OffsetDateTime,
            ) -> Result<CodeExchangeOutcome, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                let claim = claim_code(&mut tx, ex, now).await?;
                if !claim.jti_fresh {
                    // Dropping `tx` rolls the claim back.
                    return Ok(CodeExchangeOutcome::AssertionReplayed);
                }
                let outcome = exchange_tx(&mut tx, ex, now, claim).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn set_code_grant(&self, code_hash: &str, grant_id: &str) -> Result<(), StoreError> {
                let r = sqlx::query("UPDATE codes SET grant_id = $2 WHERE code_hash = $1")
                    .bind(code_hash)
                    .bind(grant_id)
                    .execute(&self.writer)
                    .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn insert_refresh_token(&self, t: &RefreshTokenRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&t.token_hash)
                .bind(&t.grant_id)
                .bind(ts(t.expires_at))
                .bind(ts(t.created_at))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &str,
                new: &RefreshTokenRecord,
                assertion_jti: Option<&JtiRecord>,
                now: time::OffsetDateTime,
            ) -> Result<RefreshRotation, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                if let Some(j) = assertion_jti {
                    if !remember_jti_tx(&mut tx, j, now).await? {
                        return Ok(RefreshRotation::AssertionReplayed);
                    }
                }
                let outcome = rotate_tx(&mut tx, old_hash, Some(new), now).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn reject_refresh_token(
                &self,
                token_hash: &str,
                assertion_jti: Option<&JtiRecord>,
                now: time::OffsetDateTime,
            ) -> Result<RefreshRotation, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                if let Some(j) = assertion_jti {
                    if !remember_jti_tx(&mut tx, j, now).await? {
                        return Ok(RefreshRotation::AssertionReplayed);
                    }
                }
                let outcome = rotate_tx(&mut tx, token_hash, None, now).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn find_refresh_token(
                &self,
                token_hash: &str,
            ) -> Result<Option<RefreshTokenInfo>, StoreError> {
                let row = sqlx::query(
                    "SELECT t.token_hash, t.expires_at AS t_expires_at, t.created_at AS t_created_at, \
                     t.rotated_at AS t_rotated_at, t.revoked_at AS t_revoked_at, \
                     g.id, g.client_id, g.member_id, g.patient, g.scope, g.created_at, g.expires_at, \
                     g.revoked_at, g.data \
                     FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let grant = grant_from_row(&row)?;
                Ok(Some(RefreshTokenInfo {
                    token: RefreshTokenRecord {
                        token_hash: col(&row, "token_hash")?,
                        grant_id: grant.id.clone(),
                        expires_at: from_ts(col(&row, "t_expires_at")?)?,
                        created_at: from_ts(col(&row, "t_created_at")?)?,
                    },
                    rotated_at: from_opt_ts(col(&row, "t_rotated_at")?)?,
                    revoked_at: from_opt_ts(col(&row, "t_revoked_at")?)?,
                    grant,
                }))
            }

            async fn revoke_refresh_token(
                &self,
                token_hash: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<String>, StoreError> {
                let mut tx = begin_write(&self.writer).await?;
                let row = sqlx::query(concat!(
                    "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1",
                    $for_update
                ))
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let grant_id: String = col(&row, "grant_id")?;
                revoke_grant_tx(&mut tx, &grant_id, now).await?;
                tx.commit().await?;
                Ok(Some(grant_id))
            }

            async fn get_refresh_token(
                &self,
                token_hash: &str,
            ) -> Result<Option<RefreshTokenRecord>, StoreError> {
                sqlx::query(
                    "SELECT t.token_hash, t.grant_id, t.expires_at, t.created_at \
                     FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id \
                     WHERE t.token_hash = $1 AND t.rotated_at IS NULL AND t.revoked_at IS NULL \
                     AND g.revoked_at IS NULL",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(refresh_from_row)
                .transpose()
            }

            // ---- access-token revocation ----

            async fn revoke_access_token(
                &self,
                jti: &str,
                expires_at: time::OffsetDateTime,
                now: time::OffsetDateTime,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO revocations (at, kind, jti, expires_at) \
                     VALUES ($1, 'access_token', $2, $3) ON CONFLICT (jti) DO NOTHING",
                )
                .bind(ts(now))
                .bind(jti)
                .bind(ts(expires_at))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT id FROM revocations WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn revocations_since(
                &self,
                since: time::OffsetDateTime,
            ) -> Result<Vec<(time::OffsetDateTime, Revocation)>, StoreError> {
                sqlx::query(
                    "SELECT at, kind, jti, grant_id, expires_at FROM revocations \
                     WHERE at >= $1 ORDER BY at, id",
                )
                .bind(ts(since))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(revocation_from_row)
                .collect()
            }

            // ---- consents ----

            async fn upsert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO consents (member_id, client_id, patient, scope, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id, client_id) DO UPDATE SET \
                     patient = excluded.patient, scope = excluded.scope, updated_at = excluded.updated_at",
                )
                .bind(&c.member_id)
                .bind(&c.client_id)
                .bind(&c.patient)
                .bind(&c.scope)
                .bind(ts(c.updated_at))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_consent(
                &self,
                member_id: &str,
                client_id: &str,
            ) -> Result<Option<ConsentRecord>, StoreError> {
                sqlx::query(
                    "SELECT member_id, client_id, patient, scope, updated_at FROM consents \
                     WHERE member_id = $1 AND client_id = $2",
                )
                .bind(member_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(consent_from_row)
                .transpose()
            }

            async fn delete_consent(&self, member_id: &str, client_id: &str) -> Result<bool, StoreError> {
                let r = sqlx::query("DELETE FROM consents WHERE member_id = $1 AND client_id = $2")
                    .bind(member_id)
                    .bind(client_id)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            // ---- sign-in throttling ----

            async fn record_login_failure(
                &self,
                key: &str,
                now: time::OffsetDateTime,
            ) -> Result<u32, StoreError> {
                let cutoff = ts(now - LOGIN_FAILURE_WINDOW);
                let mut tx = begin_write(&self.writer).await?;
                sqlx::query("DELETE FROM login_failures WHERE key = $1 AND at <= $2")
                    .bind(key)
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
                    .bind(key)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM login_failures WHERE key = $1 AND at > $2",
                )
                .bind(key)
                .bind(cutoff)
                .fetch_one(&mut *tx)
                .await?;
                let n: i64 = col(&row, "n")?;
                tx.commit().await?;
                Ok(count_u32(n))
            }

            async fn count_login_failures(
                &self,
                key: &str,
                since: time::OffsetDateTime,
            ) -> Result<u32, StoreError> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM login_failures WHERE key = $1 AND at >= $2",
                )
                .bind(key)
                .bind(ts(since))
                .fetch_one(&self.pool)
                .await?;
                let n: i64 = col(&row, "n")?;
                Ok(count_u32(n))
            }

            async fn reset_login_failures(&self, key: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM login_failures WHERE key = $1")
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }
        }
    };
}
