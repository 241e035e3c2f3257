use thiserror::Error;

/// Every store failure. Messages never carry secrets or bound values.
#[derive(Clone, Debug, Error)]
pub enum StoreError {
    /// A unique constraint was violated (duplicate id, username, community+iss, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The input was rejected: a malformed or unsupported FHIR resource, a bad paging cursor (HTTP 400).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A row holds data that cannot be decoded (bad JSON, unknown enum text, bad timestamp).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    StoreError::Conflict(match db.constraint() {
                        Some(c) => format!("unique constraint {c} violated"),
                        None => db.message().to_owned(),
                    })
                } else {
                    // The primary message only: PostgreSQL's `detail` may echo row values.
                    StoreError::Database(db.message().to_owned())
                }
            }
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            sqlx::Error::Decode(source) => StoreError::Corrupt(source.to_string()),
            sqlx::Error::ColumnNotFound(c) => StoreError::Corrupt(format!("missing column {c}")),
            sqlx::Error::Migrate(m) => StoreError::Migration(m.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}
