//! FHIR resource store and search: [`FhirStore`], implemented by both backends.
//!
//! Resources are kept as received (the exact JSON text) with `meta.versionId`/`meta.lastUpdated`
//! maintained by the store, every version kept for vread, and the values of each search parameter
//! extracted into index tables (see `migrations/*/0002_fhir.sql` and [`params`]).

use async_trait::async_trait;
use time::OffsetDateTime;

#[macro_use]
pub(crate) mod store_impl;
pub(crate) mod body;
pub mod params;
pub(crate) mod resource;
pub(crate) mod sql;
pub mod synthetic;

pub use body::{render_batch_ahead, BodyDict, BodyEncoding, Dictionaries, MIN_DICT_SAMPLES};
pub use params::{
    parse_include, parse_param, DatePrefix, IncludeSpec, ParamDef, ParamError, ParamKind,
    ParamValue, ParsedParam, ResourceType, TokenQuery,
};

use crate::StoreError;

/// Default page size of a search.
pub const DEFAULT_COUNT: u32 = 50;
/// Largest page size of a search.
pub const MAX_COUNT: u32 = 1000;
/// `SearchPage::total` is only reported up to this many matches (counting more is not "cheap").
pub const MAX_TOTAL: u64 = 10_000;
/// Most resources in one `put_batch`.
pub const MAX_BATCH: usize = 100_000;

/// One version of a stored resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResource {
    pub resource_type: ResourceType,
    pub id: String,
    /// 1 for the first version, +1 per update (also the text of `meta.versionId`).
    pub version_id: i64,
    /// Millisecond precision, UTC (also `meta.lastUpdated`).
    pub last_updated: OffsetDateTime,
    /// The resource as received, with `meta.versionId` and `meta.lastUpdated` set.
    pub json: String,
}

/// A search: the parameters are ANDed; the values inside one [`ParsedParam`] are ORed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    pub params: Vec<ParsedParam>,
    /// `Some(ids)`: only resources in one of these patients' compartments (an empty list matches
    /// nothing; types outside the Patient compartment, such as Organization, have no members). `None`:
    /// unrestricted.
    pub patient_compartment: Option<Vec<String>>,
    /// Page size, clamped to `1..=MAX_COUNT`.
    pub count: u32,
    /// `SearchPage::next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Whether to count the matches (`SearchPage::total`).
    pub with_total: bool,
}

impl SearchQuery {
    /// An unrestricted search for every resource of `resource_type`, first page, default size.
    pub fn new(resource_type: ResourceType) -> Self {
        SearchQuery {
            resource_type,
            params: Vec::new(),
            patient_compartment: None,
            count: DEFAULT_COUNT,
            cursor: None,
            with_total: true,
        }
    }
}

/// One page of search results, newest first (`meta.lastUpdated` descending, then id descending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPage {
    pub resources: Vec<StoredResource>,
    /// The number of matches (all pages), when asked for and at most [`MAX_TOTAL`].
    pub total: Option<u64>,
    /// Opaque keyset cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A resource parsed, validated and indexed by [`prepare`], ready for [`FhirStore::put_prepared`].
/// Preparing is CPU work only (no database), so an import can do it on another thread while the
/// database writes the previous batch.
#[derive(Debug)]
pub struct PreparedResource(pub(crate) resource::Prepared<'static>);

impl PreparedResource {
    pub fn resource_type(&self) -> ResourceType {
        self.0.rt
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The text as received.
    pub fn text(&self) -> &str {
        self.0.text()
    }

    /// Renders the stored form of the resource's first version ahead of the write (`meta` spliced in
    /// with version 1 and `now`, then encoded as the store keeps texts, [`FhirStore::body_encoding`]),
    /// so an import does this CPU work on its reading thread while the database writes the previous
    /// batch. The write uses it, with this `now` as `meta.lastUpdated`, when the resource is new; a
    /// resource that already exists is rendered again by the write, as its next version.
    pub fn render_ahead(
        &mut self,
        now: OffsetDateTime,
        encoding: BodyEncoding,
    ) -> Result<(), StoreError> {
        let lu_ms = ms(now);
        let text = self.0.render(1, &params::format_instant_ms(lu_ms));
        self.0.ahead = Some(resource::Ahead {
            lu_ms,
            body: body::encode(encoding, self.0.rt, text)?,
        });
        Ok(())
    }
}

/// A resource [`prepare`] refused, with its text back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PrepareError {
    /// `StoreError::Invalid` with the reason.
    pub error: StoreError,
    pub text: String,
}

/// Parses, validates and indexes one resource, exactly as [`FhirStore::put_resource`] would (the same
/// rules, the same errors), without touching the database.
pub fn prepare(json_text: String) -> Result<PreparedResource, Box<PrepareError>> {
    resource::Prepared::parse_owned(json_text)
        .map(PreparedResource)
        .map_err(|(e, text)| {
            Box::new(PrepareError {
                error: StoreError::Invalid(e.0),
                text,
            })
        })
}

/// FHIR resource storage. Object safe; `Store: FhirStore`, so every `Arc<dyn Store>` offers it.
///
/// Invalid input (malformed or unsupported resources, bad cursors) is `StoreError::Invalid` (a 400).
#[async_trait]
pub trait FhirStore: Send + Sync + 'static {
    /// Creates or updates (new version) one resource in one transaction. `json_text` must be a JSON
    /// object with a supported `resourceType` and a valid `id`; it is stored as received except for
    /// `meta.versionId`/`meta.lastUpdated` (= `now`, truncated to milliseconds).
    async fn put_resource(
        &self,
        json_text: &str,
        now: OffsetDateTime,
    ) -> Result<StoredResource, StoreError>;

    /// [`FhirStore::put_resource`] for many resources, all or nothing, in one transaction (multi-row
    /// statements). The same resource may appear more than once (successive versions). Results are in
    /// input order. At most [`MAX_BATCH`] resources.
    async fn put_batch(
        &self,
        json_texts: &[String],
        now: OffsetDateTime,
    ) -> Result<Vec<StoredResource>, StoreError>;

    /// How this store keeps resource texts now (for [`PreparedResource::render_ahead`]).
    fn body_encoding(&self) -> BodyEncoding {
        BodyEncoding::Text
    }

    /// Keeps `dict` (learned by [`render_batch_ahead`]) for good and compresses resources of type `rt`
    /// with it from now on. Frames already written with it become readable by any process that opens
    /// the store. A store that does not compress ignores it.
    async fn install_body_dictionary(
        &self,
        _rt: ResourceType,
        _dict: &'static BodyDict,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// [`FhirStore::put_batch`] for resources already [`prepare`]d, all or nothing in one
    /// transaction; returns the number written. The stored texts are not returned (an import has no
    /// use for them), which saves copying every resource once more.
    async fn put_prepared(
        &self,
        batch: Vec<PreparedResource>,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let texts: Vec<String> = batch.iter().map(|p| p.text().to_owned()).collect();
        Ok(self.put_batch(&texts, now).await?.len() as u64)
    }

    /// Prepares a bulk load: when the store holds no resources yet, drops the search indexes (those
    /// that serve searches, not the keys) so that a first import appends rows instead of inserting
    /// into several ever larger B-trees, and returns true; otherwise changes nothing and returns false.
    /// [`FhirStore::build_search_indexes`] must follow, and the server runs it at startup too, so an
    /// interrupted load leaves a store that heals rather than one that scans.
    async fn defer_search_indexes(&self) -> Result<bool, StoreError>;

    /// Creates whichever search indexes are missing (each one sort and one pass over its table) and
    /// returns how many were created; a no-op on a complete store.
    async fn build_search_indexes(&self) -> Result<usize, StoreError>;

    /// The current version.
    async fn read(
        &self,
        resource_type: ResourceType,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// A specific version (current or historical).
    async fn vread(
        &self,
        resource_type: ResourceType,
        id: &str,
        version_id: i64,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// One page of matches (current versions only).
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// The resources referenced from `resources` through the given `_include`s (current versions),
    /// excluding `resources` themselves, each once, ordered by type then id. `iterate` specs are applied
    /// again to what was included (up to 4 rounds). Callers filter the result by their access rules.
    async fn include(
        &self,
        resources: &[StoredResource],
        specs: &[IncludeSpec],
    ) -> Result<Vec<StoredResource>, StoreError>;

    /// The ids of the patients whose compartment holds the resource (empty if none or unknown).
    async fn compartment_patients(
        &self,
        resource_type: ResourceType,
        id: &str,
    ) -> Result<Vec<String>, StoreError>;
}

pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    let n = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

/// Cursor text: `<last_updated ms>:<id>` of the last resource of the page.
pub(crate) fn encode_cursor(last_updated_ms: i64, id: &str) -> String {
    format!("{last_updated_ms}:{id}")
}

pub(crate) fn decode_cursor(c: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::Invalid("malformed paging cursor".into());
    let (a, b) = c.split_once(':').ok_or_else(bad)?;
    let lu: i64 = a.parse().map_err(|_| bad())?;
    if !params::is_valid_id(b) {
        return Err(bad());
    }
    Ok((lu, b.to_owned()))
}
