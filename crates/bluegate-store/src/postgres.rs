//! PostgreSQL backend: the store for production and for many nodes. JSON columns are JSONB; the
//! read-then-write paths lock their rows with `FOR UPDATE`; migrations take sqlx's advisory lock, so
//! nodes may start together.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, PgPool, Pool, Postgres, Transaction};

use crate::backend::CodeClaim;
use crate::model::{CodeExchange, RegistrationOutcome, UdapRegistration};

type Db = Postgres;
type DbRow = PgRow;

/// A pooled connection idle for this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// The shared store for one or many Bluegate nodes.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The pool writes use: the same one (PostgreSQL has concurrent writers).
    writer: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?...`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options, 16).await
    }

    /// Connects with explicit options and pool size, and runs the migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        // A connection back from a request moments ago is known to work: ping only those idle long enough
        // for the server or a proxy to have dropped them, not before every query (a round trip each).
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        fhir_impl::check_param_codes(&pool).await?;
        Ok(PgStore {
            writer: pool.clone(),
            pool,
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection (waits for in-flight queries).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn json_arg(v: &serde_json::Value) -> Result<Json<serde_json::Value>, StoreError> {
    Ok(Json(v.clone()))
}

fn json_col(row: &DbRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let Json(v): Json<serde_json::Value> = col(row, name)?;
    Ok(v)
}

/// Resource writes plan each statement for its values: their statements are prepared once per
/// connection, and after five runs PostgreSQL may switch to a generic plan made while the tables were
/// empty (a scan for `id IN (...)` rather than the primary key), which then stays: an import ran at
/// half the speed by 45,000 resources, and slowed down further as the store grew.
const FHIR_WRITE_SETUP: Option<&str> = Some("SET LOCAL plan_cache_mode = force_custom_plan");

/// New resources are numbered by the database (an identity column), and the insert returns the numbers.
const NEXT_RID: Option<&str> = None;

/// A write's index rows, one `INSERT ... SELECT FROM UNNEST(arrays)` per table: the statement text is
/// the same whatever the number of rows (prepared once per connection, not parsed and planned again
/// for every batch as a multi-row `VALUES` list with thousands of placeholders is).
async fn insert_index_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: crate::fhir::sql::IndexRows,
) -> Result<(), StoreError> {
    let (rid, param, system, code) = rows.token;
    if !rid.is_empty() {
        sqlx::query(
            "INSERT INTO fhir_token (rid, param, system, code) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[])",
        )
        .bind(rid)
        .bind(param)
        .bind(system)
        .bind(code)
        .execute(&mut **tx)
        .await?;
    }
    let (rid, param, target) = rows.reference;
    if !rid.is_empty() {
        sqlx::query(
            "INSERT INTO fhir_ref (rid, param, target) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[])",
        )
        .bind(rid)
        .bind(param)
        .bind(target)
        .execute(&mut **tx)
        .await?;
    }
    let (rid, param, low, high) = rows.date;
    if !rid.is_empty() {
        sqlx::query(
            "INSERT INTO fhir_date (rid, param, low, high) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])",
        )
        .bind(rid)
        .bind(param)
        .bind(low)
        .bind(high)
        .execute(&mut **tx)
        .await?;
    }
    let (rid, param, value) = rows.string;
    if !rid.is_empty() {
        sqlx::query(
            "INSERT INTO fhir_string (rid, param, value) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[])",
        )
        .bind(rid)
        .bind(param)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    let (rid, patient) = rows.compartment;
    if !rid.is_empty() {
        sqlx::query(
            "INSERT INTO fhir_compartment (rid, patient_id) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[])",
        )
        .bind(rid)
        .bind(patient)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Whether an index named `$1` exists in the current schema.
const INDEX_EXISTS: &str = "SELECT 1 WHERE to_regclass($1) IS NOT NULL";

/// One transaction per registration: PostgreSQL's writers run concurrently and their commits already
/// share WAL flushes.
async fn register_udap(
    store: &PgStore,
    r: &UdapRegistration<'_>,
    now: time::OffsetDateTime,
) -> Result<RegistrationOutcome, StoreError> {
    let mut tx = begin_write(&store.writer).await?;
    let outcome = register_udap_tx(&mut tx, r, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Builds the search indexes `(name, "table (columns)")`, one transaction each, each allowed 512 MB to
/// sort in memory (the default, 64 MB, spills a large table's sort to disk in many runs).
async fn build_indexes(writer: &PgPool, indexes: &[(&str, &str)]) -> Result<(), StoreError> {
    for (name, on) in indexes {
        let mut tx = begin_write(writer).await?;
        sqlx::query("SET LOCAL maintenance_work_mem = '512MB'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE INDEX IF NOT EXISTS {name} ON {on}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

impl PgStore {
    /// Resource texts are stored as TEXT (PostgreSQL compresses large values itself).
    fn encoding(&self) -> crate::fhir::BodyEncoding {
        crate::fhir::BodyEncoding::Text
    }
}

/// Texts are not compressed here: there are no dictionaries to keep.
async fn install_dict(
    _store: &PgStore,
    _rt: crate::fhir::ResourceType,
    _dict: &'static crate::fhir::BodyDict,
) -> Result<(), StoreError> {
    Ok(())
}

/// Texts are not compressed here: no dictionary to load.
async fn load_dicts_for(_pool: &Pool<Db>, _rows: &[DbRow]) -> Result<(), StoreError> {
    Ok(())
}

fn body_col(row: &DbRow, name: &str) -> Result<String, StoreError> {
    col(row, name)
}

async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, StoreError> {
    Ok(pool.begin().await?)
}

/// The first step of a code exchange in one statement (one round trip): the assertion's jti, then the
/// code's claim (only when the jti was new), then the claimed code's grant, locked (`FOR UPDATE`) so that
/// a concurrent revocation waits for this exchange and then revokes what it issued, or wins.
async fn claim_code(
    tx: &mut Transaction<'static, Db>,
    ex: &CodeExchange<'_>,
    now: time::OffsetDateTime,
) -> Result<CodeClaim, StoreError> {
    macro_rules! claim_and_grant {
        ($jti:literal, $jti_fresh:literal) => {
            concat!(
                "c AS (UPDATE codes SET consumed_at = $2 \
                 WHERE code_hash = $1 AND consumed_at IS NULL AND expires_at > $2",
                $jti,
                " RETURNING ",
                code_cols!(),
                "), g AS (SELECT ",
                grant_cols!(),
                " FROM grants WHERE id = (SELECT grant_id FROM c) FOR UPDATE) \
                 SELECT ",
                $jti_fresh,
                " AS jti_fresh, c.*, g.id AS g_id, g.client_id AS g_client_id, \
                 g.member_id AS g_member_id, g.patient AS g_patient, g.scope AS g_scope, \
                 g.created_at AS g_created_at, g.expires_at AS g_expires_at, \
                 g.revoked_at AS g_revoked_at, g.data AS g_data \
                 FROM (VALUES (1)) AS one (x) LEFT JOIN c ON TRUE LEFT JOIN g ON TRUE"
            )
        };
    }
    const WITH_JTI: &str = concat!(
        "WITH j AS (",
        remember_jti_sql!(),
        " RETURNING 1), ",
        claim_and_grant!(" AND EXISTS (SELECT 1 FROM j)", "EXISTS (SELECT 1 FROM j)")
    );
    const WITHOUT_JTI: &str = concat!("WITH ", claim_and_grant!("", "TRUE"));
    let j = ex.assertion_jti;
    let query = match j {
        Some(j) => sqlx::query(WITH_JTI)
            .bind(ex.code_hash)
            .bind(crate::backend::ts(now))
            .bind(j.issuer.as_str())
            .bind(j.jti.as_str())
            .bind(crate::backend::ts(j.expires_at)),
        None => sqlx::query(WITHOUT_JTI)
            .bind(ex.code_hash)
            .bind(crate::backend::ts(now)),
    };
    let row = query.fetch_one(&mut **tx).await?;
    let code_hash: Option<String> = col(&row, "code_hash")?;
    let grant_id: Option<String> = col(&row, "g_id")?;
    Ok(CodeClaim {
        jti_fresh: col(&row, "jti_fresh")?,
        code: code_hash.map(|_| code_from_row(&row)).transpose()?,
        grant: grant_id
            .map(|_| grant_from_prefixed(&row, "g_"))
            .transpose()?,
    })
}

impl_store!(PgStore, "postgres", for_update = " FOR UPDATE");
impl_fhir_store!(
    PgStore,
    for_update = " FOR UPDATE",
    positional_params = false
);
