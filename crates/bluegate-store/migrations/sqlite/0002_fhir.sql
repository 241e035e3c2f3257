-- FHIR resources (SQLite). Resources are stored as received (TEXT, byte-exact); times are unix
-- milliseconds. Every search parameter value is extracted into an index table keyed by
-- (resource_type, param, value..., id), so searches are index lookups; each index table's primary
-- key (resource_type, id, param, value...) serves per-resource checks and updates (which replace a
-- resource's index rows). SQLite keeps them WITHOUT ROWID: the table is that key.

CREATE TABLE fhir_resources (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    json          TEXT    NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX fhir_resources_updated ON fhir_resources (resource_type, last_updated, id);

-- Earlier versions (the current one is in fhir_resources).
CREATE TABLE fhir_history (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    json          TEXT    NOT NULL,
    PRIMARY KEY (resource_type, id, version_id)
);

-- Token parameters (identifier, type, gender): system is '' when absent.
CREATE TABLE fhir_token (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    system        TEXT NOT NULL,
    code          TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, param, system, code)
) WITHOUT ROWID;
CREATE INDEX fhir_token_search ON fhir_token (resource_type, param, code, system, id);

-- Reference parameters: target is 'Type/id'.
CREATE TABLE fhir_ref (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    target        TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, param, target)
) WITHOUT ROWID;
CREATE INDEX fhir_ref_search ON fhir_ref (resource_type, param, target, id);

-- Date parameters: the inclusive range [low, high] of unix milliseconds a date/period denotes.
CREATE TABLE fhir_date (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    param         TEXT    NOT NULL,
    low           INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id, param, low, high)
) WITHOUT ROWID;
CREATE INDEX fhir_date_search ON fhir_date (resource_type, param, low, high, id);

-- String parameters: lower-cased, whitespace-collapsed values; prefix search is a range scan.
CREATE TABLE fhir_string (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, param, value)
) WITHOUT ROWID;
CREATE INDEX fhir_string_search ON fhir_string (resource_type, param, value, id);

-- Patient compartment: the patients each resource belongs to.
CREATE TABLE fhir_compartment (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    patient_id    TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, patient_id)
) WITHOUT ROWID;
CREATE INDEX fhir_compartment_search ON fhir_compartment (patient_id, resource_type, id);
