-- Index rows keyed by a resource number and a parameter number instead of (resource_type, id, param)
-- as text: an index row shrinks by half, a first import appends to the index tables' keys instead of
-- inserting all over them, and each search index is half the size to build and to read.
--
-- A resource's number (`rid`) is fixed for its life: an INTEGER PRIMARY KEY, so VACUUM keeps it.
-- A parameter's number is `ParamDef::code` in src/fhir/params.rs; `fhir_params` records the numbers
-- this database was written with, and the store refuses to open if the two ever disagree.

CREATE TABLE fhir_params (
    code          INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    name          TEXT NOT NULL,
    UNIQUE (resource_type, name)
);
INSERT INTO fhir_params (code, resource_type, name) VALUES
    (102, 'ExplanationOfBenefit', 'patient'),
    (103, 'ExplanationOfBenefit', 'type'),
    (104, 'ExplanationOfBenefit', 'identifier'),
    (105, 'ExplanationOfBenefit', 'service-date'),
    (106, 'ExplanationOfBenefit', 'service-start-date'),
    (107, 'ExplanationOfBenefit', 'billable-period-start'),
    (108, 'ExplanationOfBenefit', 'provider'),
    (109, 'ExplanationOfBenefit', 'care-team'),
    (110, 'ExplanationOfBenefit', 'coverage'),
    (111, 'ExplanationOfBenefit', 'insurer'),
    (112, 'ExplanationOfBenefit', 'payee'),
    (202, 'Coverage', 'patient'),
    (203, 'Coverage', 'beneficiary'),
    (204, 'Coverage', 'subscriber'),
    (205, 'Coverage', 'payor'),
    (206, 'Coverage', 'identifier'),
    (302, 'Patient', 'identifier'),
    (303, 'Patient', 'name'),
    (304, 'Patient', 'family'),
    (305, 'Patient', 'given'),
    (306, 'Patient', 'birthdate'),
    (307, 'Patient', 'gender'),
    (402, 'Organization', 'identifier'),
    (403, 'Organization', 'name'),
    (502, 'Practitioner', 'identifier'),
    (503, 'Practitioner', 'name'),
    (504, 'Practitioner', 'family'),
    (505, 'Practitioner', 'given'),
    (602, 'PractitionerRole', 'identifier'),
    (603, 'PractitionerRole', 'practitioner'),
    (604, 'PractitionerRole', 'organization'),
    (702, 'RelatedPerson', 'identifier'),
    (703, 'RelatedPerson', 'name'),
    (704, 'RelatedPerson', 'patient'),
    (802, 'Location', 'identifier'),
    (803, 'Location', 'name');

CREATE TABLE fhir_resources_v4 (
    rid           INTEGER PRIMARY KEY,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    json          TEXT    NOT NULL,
    UNIQUE (resource_type, id)
);
INSERT INTO fhir_resources_v4 (resource_type, id, version_id, last_updated, json)
    SELECT resource_type, id, version_id, last_updated, json FROM fhir_resources
    ORDER BY resource_type, id;

CREATE TABLE fhir_token_v4 (
    rid    INTEGER NOT NULL,
    param  INTEGER NOT NULL,
    system TEXT    NOT NULL,
    code   TEXT    NOT NULL,
    PRIMARY KEY (rid, param, system, code)
) WITHOUT ROWID;
INSERT INTO fhir_token_v4 (rid, param, system, code)
    SELECT r.rid, p.code, x.system, x.code FROM fhir_token x
    JOIN fhir_resources_v4 r ON r.resource_type = x.resource_type AND r.id = x.id
    JOIN fhir_params p ON p.resource_type = x.resource_type AND p.name = x.param
    ORDER BY 1, 2, 3, 4;

CREATE TABLE fhir_ref_v4 (
    rid    INTEGER NOT NULL,
    param  INTEGER NOT NULL,
    target TEXT    NOT NULL,
    PRIMARY KEY (rid, param, target)
) WITHOUT ROWID;
INSERT INTO fhir_ref_v4 (rid, param, target)
    SELECT r.rid, p.code, x.target FROM fhir_ref x
    JOIN fhir_resources_v4 r ON r.resource_type = x.resource_type AND r.id = x.id
    JOIN fhir_params p ON p.resource_type = x.resource_type AND p.name = x.param
    ORDER BY 1, 2, 3;

CREATE TABLE fhir_date_v4 (
    rid   INTEGER NOT NULL,
    param INTEGER NOT NULL,
    low   INTEGER NOT NULL,
    high  INTEGER NOT NULL,
    PRIMARY KEY (rid, param, low, high)
) WITHOUT ROWID;
INSERT INTO fhir_date_v4 (rid, param, low, high)
    SELECT r.rid, p.code, x.low, x.high FROM fhir_date x
    JOIN fhir_resources_v4 r ON r.resource_type = x.resource_type AND r.id = x.id
    JOIN fhir_params p ON p.resource_type = x.resource_type AND p.name = x.param
    ORDER BY 1, 2, 3, 4;

CREATE TABLE fhir_string_v4 (
    rid   INTEGER NOT NULL,
    param INTEGER NOT NULL,
    value TEXT    NOT NULL,
    PRIMARY KEY (rid, param, value)
) WITHOUT ROWID;
INSERT INTO fhir_string_v4 (rid, param, value)
    SELECT r.rid, p.code, x.value FROM fhir_string x
    JOIN fhir_resources_v4 r ON r.resource_type = x.resource_type AND r.id = x.id
    JOIN fhir_params p ON p.resource_type = x.resource_type AND p.name = x.param
    ORDER BY 1, 2, 3;

CREATE TABLE fhir_compartment_v4 (
    rid        INTEGER NOT NULL,
    patient_id TEXT    NOT NULL,
    PRIMARY KEY (rid, patient_id)
) WITHOUT ROWID;
INSERT INTO fhir_compartment_v4 (rid, patient_id)
    SELECT r.rid, x.patient_id FROM fhir_compartment x
    JOIN fhir_resources_v4 r ON r.resource_type = x.resource_type AND r.id = x.id
    ORDER BY 1, 2;

DROP TABLE fhir_resources;
DROP TABLE fhir_token;
DROP TABLE fhir_ref;
DROP TABLE fhir_date;
DROP TABLE fhir_string;
DROP TABLE fhir_compartment;
ALTER TABLE fhir_resources_v4 RENAME TO fhir_resources;
ALTER TABLE fhir_token_v4 RENAME TO fhir_token;
ALTER TABLE fhir_ref_v4 RENAME TO fhir_ref;
ALTER TABLE fhir_date_v4 RENAME TO fhir_date;
ALTER TABLE fhir_string_v4 RENAME TO fhir_string;
ALTER TABLE fhir_compartment_v4 RENAME TO fhir_compartment;

CREATE INDEX fhir_resources_updated ON fhir_resources (resource_type, last_updated, id);
-- The search indexes (`SEARCH_INDEXES` in src/fhir/store_impl.rs): a parameter's values in order.
CREATE INDEX fhir_token_search ON fhir_token (param, code, system, rid);
CREATE INDEX fhir_ref_search ON fhir_ref (param, target, rid);
CREATE INDEX fhir_date_search ON fhir_date (param, low, high, rid);
CREATE INDEX fhir_string_search ON fhir_string (param, value, rid);
CREATE INDEX fhir_compartment_search ON fhir_compartment (patient_id, rid);
