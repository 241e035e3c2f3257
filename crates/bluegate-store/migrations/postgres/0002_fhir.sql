-- FHIR resources (PostgreSQL). Resources are stored as received (TEXT, not JSONB: byte-exact); times
-- are unix milliseconds; key and index text columns use COLLATE "C" (byte order, as in SQLite: prefix
-- ranges and keyset paging behave the same). Every search parameter value is extracted into an index
-- table keyed by (resource_type, param, value..., id), so searches are index lookups; each index
-- table's primary key (resource_type, id, param, value...) serves per-resource checks and updates
-- (which replace a resource's index rows).

CREATE TABLE fhir_resources (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    json          TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX fhir_resources_updated ON fhir_resources (resource_type, last_updated, id);

-- Earlier versions (the current one is in fhir_resources).
CREATE TABLE fhir_history (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    json          TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, version_id)
);

-- Token parameters (identifier, type, gender): system is '' when absent.
CREATE TABLE fhir_token (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    param         TEXT COLLATE "C" NOT NULL,
    system        TEXT COLLATE "C" NOT NULL,
    code          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (resource_type, id, param, system, code)
);
CREATE INDEX fhir_token_search ON fhir_token (resource_type, param, code, system, id);

-- Reference parameters: target is 'Type/id'.
CREATE TABLE fhir_ref (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    param         TEXT COLLATE "C" NOT NULL,
    target        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (resource_type, id, param, target)
);
CREATE INDEX fhir_ref_search ON fhir_ref (resource_type, param, target, id);

-- Date parameters: the inclusive range [low, high] of unix milliseconds a date/period denotes.
CREATE TABLE fhir_date (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    param         TEXT COLLATE "C" NOT NULL,
    low           BIGINT NOT NULL,
    high          BIGINT NOT NULL,
    PRIMARY KEY (resource_type, id, param, low, high)
);
CREATE INDEX fhir_date_search ON fhir_date (resource_type, param, low, high, id);

-- String parameters: lower-cased, whitespace-collapsed values; prefix search is a range scan.
CREATE TABLE fhir_string (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    param         TEXT COLLATE "C" NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (resource_type, id, param, value)
);
CREATE INDEX fhir_string_search ON fhir_string (resource_type, param, value, id);

-- Patient compartment: the patients each resource belongs to.
CREATE TABLE fhir_compartment (
    resource_type TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    patient_id    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (resource_type, id, patient_id)
);
CREATE INDEX fhir_compartment_search ON fhir_compartment (patient_id, resource_type, id);
