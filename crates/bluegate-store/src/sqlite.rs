//! SQLite backend: one file, WAL, `synchronous=FULL` (a commit survives power loss), foreign keys on,
//! and `BEGIN IMMEDIATE` for read-then-write transactions.
//!
//! SQLite lets one writer at a time in, and a writer that finds the lock taken waits in SQLite's busy
//! handler, which sleeps (1 ms, 2 ms, 5 ms, ...) rather than being woken. So the store's writes go through
//! one dedicated connection (the `writer` pool): writers of this process queue for it without sleeping,
//! and the busy timeout is left for other processes (e.g. `bluegate client add` beside a running server).
//! Reads use the other connections, which WAL lets run beside the writer.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Pool, Sqlite, SqlitePool, Transaction};

type Db = Sqlite;
type DbRow = SqliteRow;

/// How long a writer waits for the database lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded (zero-setup) store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers.
    pool: SqlitePool,
    /// One connection: every write, the FHIR store's included.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and runs the migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Bulk FHIR writes: a page cache that holds a batch's pages (default 2 MB) and statement
            // journals in memory, so big transactions do not spill and re-read pages.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        Self::open_with(options, 8).await
    }

    /// Opens with explicit options (the caller's journal/sync settings are kept) and the size of the
    /// readers' pool (the writer has a connection of its own).
    pub async fn open_with(
        options: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        // A connection to a local file does not go stale: no ping before each use (a round trip to the
        // connection's worker thread).
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // The writer gets a bigger page cache (the index pages an import touches stay in memory) and
        // checkpoints every 64 MB of WAL instead of 4 MB (a hot page is copied back once per
        // checkpoint, not once per batch).
        let writer = SqlitePoolOptions::new()
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA cache_size = -262144")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA wal_autocheckpoint = 16384")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    /// The underlying pool (for callers that keep their own tables in the same file).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (waits for in-flight queries).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn json_arg(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("unencodable JSON: {e}")))
}

fn json_col(row: &DbRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// Nothing to set up for a resource write transaction.
const FHIR_WRITE_SETUP: Option<&str> = None;

/// Resource texts are stored compressed (see `fhir::body`).
const BODY: crate::fhir::BodyEncoding = crate::fhir::BodyEncoding::Zstd;

/// A resource body as read: a zstd frame, or the text itself in a row written before compression.
fn body_col(row: &DbRow, name: &str) -> Result<String, StoreError> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let raw = row
        .try_get_raw(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))?;
    if raw.type_info().name() == "BLOB" {
        let frame: &[u8] = col(row, name)?;
        crate::fhir::body::decompress(frame)
    } else {
        col(row, name)
    }
}

/// Takes the write lock up front, so a transaction that reads then writes never fails with a
/// stale-snapshot SQLITE_BUSY (the busy timeout applies to `BEGIN IMMEDIATE`).
async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

impl_store!(SqliteStore, "sqlite", for_update = "");
impl_fhir_store!(SqliteStore, for_update = "", positional_params = true);
