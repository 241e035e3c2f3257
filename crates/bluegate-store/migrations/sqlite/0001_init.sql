-- Bluegate store schema (SQLite). Times are unix seconds; JSON is TEXT.

CREATE TABLE clients (
    client_id          TEXT PRIMARY KEY NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'cancelled')),
    community          TEXT,
    iss                TEXT,
    secret_hash        TEXT,
    metadata           TEXT NOT NULL,
    is_resource_server INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX clients_community_iss ON clients (community, iss)
    WHERE community IS NOT NULL AND iss IS NOT NULL;
CREATE INDEX clients_created ON clients (created_at, client_id);

CREATE TABLE members (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    fhir_user     TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE member_patients (
    member_id  TEXT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    patient_id TEXT NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (member_id, patient_id)
);

CREATE TABLE jti_cache (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX jti_cache_expires ON jti_cache (expires_at);

CREATE TABLE signing_keys (
    kid               TEXT PRIMARY KEY NOT NULL,
    alg               TEXT NOT NULL,
    private_pkcs8_der BLOB NOT NULL,
    public_jwk        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    retired_at        INTEGER,
    publish_until     INTEGER
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    client_id   TEXT,
    member_id   TEXT,
    patient     TEXT,
    remote_addr TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_event ON audit_log (event);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL,
    member_id  TEXT,
    patient    TEXT,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    data       TEXT NOT NULL
);
CREATE INDEX grants_member ON grants (member_id, created_at);

CREATE TABLE codes (
    code_hash   TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    grant_id    TEXT,
    expires_at  INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    consumed_at INTEGER
);
CREATE INDEX codes_expires ON codes (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    grant_id   TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Revocation log polled by every node: kind 'access_token' (jti, expires_at) or 'grant' (grant_id).
CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('access_token', 'grant')),
    jti        TEXT UNIQUE,
    grant_id   TEXT,
    expires_at INTEGER
);
CREATE INDEX revocations_at ON revocations (at, id);
CREATE INDEX revocations_expires ON revocations (expires_at);

CREATE TABLE consents (
    member_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    patient    TEXT,
    scope      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (member_id, client_id)
);

CREATE TABLE login_failures (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    key    TEXT NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);
CREATE INDEX login_failures_at ON login_failures (at);
