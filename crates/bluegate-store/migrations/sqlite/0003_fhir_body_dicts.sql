-- zstd dictionaries learned from the store's own resources, one per resource type at a time (see
-- src/fhir/body.rs). A compressed text names its dictionary by id; dictionaries are never deleted, so
-- every text stays readable. The newest one of a type is used for new texts.
CREATE TABLE fhir_body_dicts (
    id            INTEGER PRIMARY KEY,
    resource_type TEXT    NOT NULL,
    dict          BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);
