//! [`FhirStore`](crate::FhirStore) written once for both backends, expanded by `impl_fhir_store!` in
//! each backend module after `impl_store!` (it uses that expansion's `col` helper and the module's
//! `Db`, `DbRow` and `begin_write`).

/// Most resources written by one multi-row statement (and looked up by one `IN` list).
pub(crate) const RESOURCE_CHUNK: usize = 200;
/// Most index rows inserted by one multi-row statement.
pub(crate) const INDEX_CHUNK: usize = 1000;

/// The indexes that serve searches (the same on both backends, as created by the migrations):
/// dropped for a first bulk load and built afterwards, see `FhirStore::defer_search_indexes`.
pub(crate) const SEARCH_INDEXES: [(&str, &str); 5] = [
    ("fhir_token_search", "fhir_token (param, code, system, rid)"),
    ("fhir_ref_search", "fhir_ref (param, target, rid)"),
    ("fhir_date_search", "fhir_date (param, low, high, rid)"),
    ("fhir_string_search", "fhir_string (param, value, rid)"),
    (
        "fhir_compartment_search",
        "fhir_compartment (patient_id, rid)",
    ),
];

/// The index tables: each keyed by (rid, ...), the number of the resource its rows belong to.
pub(crate) const INDEX_TABLES: [&str; 5] = [
    "fhir_token",
    "fhir_ref",
    "fhir_date",
    "fhir_string",
    "fhir_compartment",
];

macro_rules! impl_fhir_store {
    ($store:ident, for_update = $for_update:literal, positional_params = $positional:literal) => {
        mod fhir_impl {
            use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

            use sqlx::{Database, Transaction};
            use time::OffsetDateTime;

            use super::{
                begin_write, body_col, build_indexes, col, install_dict, load_dicts_for, $store, Db,
                DbRow, FHIR_WRITE_SETUP, INDEX_EXISTS, NEXT_RID,
            };
            use $crate::fhir::body::{encode, BodyDict, BodyEncoding};
            use $crate::fhir::params::{format_instant_ms, reference_targets, ResourceType};
            use $crate::fhir::resource::Prepared;
            use $crate::fhir::sql::{count_sql, search_sql, Bind, IndexRows, Sql, RESOURCE_COLS};
            use $crate::fhir::store_impl::{INDEX_TABLES, RESOURCE_CHUNK, SEARCH_INDEXES};
            use $crate::fhir::{
                decode_cursor, encode_cursor, from_ms, ms, FhirStore, IncludeSpec, SearchPage,
                SearchQuery, StoredResource, MAX_BATCH, MAX_COUNT,
            };
            use $crate::StoreError;

            type Query<'q> = sqlx::query::Query<'q, Db, <Db as Database>::Arguments<'q>>;

            /// The statement with its binds, which it takes over (texts and blobs are handed to the
            /// driver, not copied). SQLite gets anonymous `?` placeholders: looking up `$N` names is
            /// linear per parameter in SQLite, so quadratic for multi-row statements.
            pub(super) fn query(sql: &mut Sql) -> Query<'_> {
                if $positional {
                    sql.make_positional();
                }
                let mut q = sqlx::query(&sql.text);
                for b in std::mem::take(&mut sql.binds) {
                    q = match b {
                        Bind::Text(s) => q.bind(s),
                        Bind::Static(s) => q.bind(s),
                        Bind::Int(i) => q.bind(i),
                        Bind::Blob(b) => q.bind(b),
                    };
                }
                q
            }

            fn resource_from_row(row: &DbRow) -> Result<StoredResource, StoreError> {
                let rt: String = col(row, "resource_type")?;
                Ok(StoredResource {
                    resource_type: ResourceType::parse(&rt).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown resource type {rt:?}"))
                    })?,
                    id: col(row, "id")?,
                    version_id: col(row, "version_id")?,
                    last_updated: from_ms(col(row, "last_updated")?)?,
                    json: body_col(row, "json")?,
                })
            }

            /// Runs `sql` for each group of ids of one type: `<prefix> resource_type = $ AND id IN (...)`.
            fn by_type_sql(prefix: &str, rt: ResourceType, ids: &[&str], suffix: &str) -> Sql {
                let mut sql = Sql::new(prefix);
                sql.push(" WHERE resource_type = ")
                    .text_arg(rt.as_str())
                    .push(" AND id IN ")
                    .text_list(ids.iter().copied())
                    .push(suffix);
                sql
            }

            /// Writes resources with distinct (type, id) in one go: new versions, history, index rows.
            /// With `collect`, returns the stored resources; else an empty list.
            async fn write_chunk(
                tx: &mut Transaction<'static, Db>,
                chunk: &mut [Prepared<'_>],
                lu_ms: i64,
                lu_text: &str,
                encoding: BodyEncoding,
                collect: bool,
            ) -> Result<Vec<StoredResource>, StoreError> {
                let mut groups: BTreeMap<ResourceType, Vec<&str>> = BTreeMap::new();
                for p in chunk.iter() {
                    groups.entry(p.rt).or_default().push(p.id.as_str());
                }
                // Current versions and resource numbers (row-locked on PostgreSQL).
                let mut current: HashMap<(ResourceType, String), (i64, i64)> = HashMap::new();
                for (rt, ids) in &groups {
                    let mut sql = by_type_sql(
                        "SELECT rid, id, version_id FROM fhir_resources",
                        *rt,
                        ids,
                        $for_update,
                    );
                    for row in query(&mut sql)
                        .fetch_all(&mut **tx)
                        .await?
                    {
                        let id: String = col(&row, "id")?;
                        let v: i64 = col(&row, "version_id")?;
                        let rid: i64 = col(&row, "rid")?;
                        current.insert((*rt, id), (v, rid));
                    }
                }
                // Updated resources: keep the old version for vread, drop its index rows.
                if !current.is_empty() {
                    for (rt, ids) in &groups {
                        let updated: Vec<&str> = ids
                            .iter()
                            .copied()
                            .filter(|id| current.contains_key(&(*rt, (*id).to_owned())))
                            .collect();
                        if updated.is_empty() {
                            continue;
                        }
                        let mut sql = by_type_sql(
                            concat!(
                                "INSERT INTO fhir_history (resource_type, id, version_id, last_updated, json) ",
                                "SELECT resource_type, id, version_id, last_updated, json FROM fhir_resources"
                            ),
                            *rt,
                            &updated,
                            "",
                        );
                        query(&mut sql)
                            .execute(&mut **tx)
                            .await?;
                    }
                    let rids: Vec<i64> = current.values().map(|(_, rid)| *rid).collect();
                    for table in INDEX_TABLES {
                        let mut sql = Sql::new("DELETE FROM ");
                        sql.push(table).push(" WHERE rid IN ").int_list(rids.iter().copied());
                        query(&mut sql)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                // The resources themselves: insert, or update guarded by the version just read. Each
                // keeps its number (`rid`) for life; new ones are numbered in order, here where the
                // backend can say the next number (see `NEXT_RID`), else by the database.
                let mut next_rid: Option<i64> = match NEXT_RID {
                    Some(q) => Some(sqlx::query_scalar(q).fetch_one(&mut **tx).await?),
                    None => None,
                };
                let mut numbered: Vec<i64> = Vec::with_capacity(chunk.len());
                let mut out = Vec::with_capacity(chunk.len());
                let mut sql = Sql::new("INSERT INTO fhir_resources (");
                if next_rid.is_some() {
                    sql.push("rid, ");
                }
                sql.push(RESOURCE_COLS).push(") VALUES ");
                let last_updated = from_ms(lu_ms)?;
                for (i, p) in chunk.iter_mut().enumerate() {
                    let existing = current.get(&(p.rt, p.id.clone())).copied();
                    let version = existing.map_or(0, |(v, _)| v) + 1;
                    // A first version rendered ahead (by an import's reading thread) is used as is.
                    let ahead = if version == 1 && !collect { p.ahead.take() } else { None };
                    let (row_ms, body) = match ahead {
                        Some(a) => (a.lu_ms, a.body),
                        None => {
                            let json = p.render(version, lu_text);
                            if collect {
                                out.push(StoredResource {
                                    resource_type: p.rt,
                                    id: p.id.clone(),
                                    version_id: version,
                                    last_updated,
                                    json: json.clone(),
                                });
                            }
                            (lu_ms, encode(encoding, p.rt, json)?)
                        }
                    };
                    let rid = next_rid.as_mut().map(|next| match existing {
                        Some((_, rid)) => rid,
                        None => {
                            *next += 1;
                            *next - 1
                        }
                    });
                    let values = [
                        Bind::Static(p.rt.as_str()),
                        Bind::Text(p.id.clone()),
                        Bind::Int(version),
                        Bind::Int(row_ms),
                        body,
                    ];
                    match rid {
                        Some(rid) => {
                            numbered.push(rid);
                            sql.row(i == 0, std::iter::once(Bind::Int(rid)).chain(values));
                        }
                        None => {
                            sql.row(i == 0, values);
                        }
                    }
                }
                sql.push(
                    " ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, \
                     last_updated = excluded.last_updated, json = excluded.json \
                     WHERE fhir_resources.version_id = excluded.version_id - 1",
                );
                // Every row is inserted or updated, or another writer got there first. Numbers given
                // here are known already; otherwise the database says which number each row got.
                if next_rid.is_none() {
                    sql.push(" RETURNING rid, resource_type, id");
                    let written = query(&mut sql).fetch_all(&mut **tx).await?;
                    if written.len() != chunk.len() {
                        return Err(StoreError::Conflict(
                            "resource changed concurrently; retry".into(),
                        ));
                    }
                    let mut rids: HashMap<(ResourceType, String), i64> =
                        HashMap::with_capacity(written.len());
                    for row in &written {
                        let rt: String = col(row, "resource_type")?;
                        let rt = ResourceType::parse(&rt).ok_or_else(|| {
                            StoreError::Corrupt(format!("unknown resource type {rt:?}"))
                        })?;
                        rids.insert((rt, col(row, "id")?), col(row, "rid")?);
                    }
                    for p in chunk.iter() {
                        let rid = rids.get(&(p.rt, p.id.clone())).copied().ok_or_else(|| {
                            StoreError::Database(format!("{}/{} was not numbered", p.rt, p.id))
                        })?;
                        numbered.push(rid);
                    }
                } else {
                    let n = query(&mut sql).execute(&mut **tx).await?.rows_affected();
                    if n != chunk.len() as u64 {
                        return Err(StoreError::Conflict(
                            "resource changed concurrently; retry".into(),
                        ));
                    }
                }
                // Index rows in resource-number order, the leading column of each index table's key,
                // so a first import appends to them. The rows take the resources' values over.
                let mut order: Vec<(i64, usize)> =
                    numbered.into_iter().enumerate().map(|(i, rid)| (rid, i)).collect();
                order.sort_unstable();
                let mut rows = IndexRows::default();
                for (rid, i) in order {
                    let p = &mut chunk[i];
                    let rt = p.rt;
                    let code = |param: &str| {
                        rt.param_code(param).map_err(|e| StoreError::Invalid(e.0))
                    };
                    let index = std::mem::take(&mut p.index);
                    for (param, system, value) in index.tokens {
                        let (param, t) = (code(param)?, &mut rows.token);
                        t.0.push(rid);
                        t.1.push(param);
                        t.2.push(system);
                        t.3.push(value);
                    }
                    for (param, target) in index.references {
                        let (param, t) = (code(param)?, &mut rows.reference);
                        t.0.push(rid);
                        t.1.push(param);
                        t.2.push(target);
                    }
                    for (param, low, high) in index.dates {
                        let (param, t) = (code(param)?, &mut rows.date);
                        t.0.push(rid);
                        t.1.push(param);
                        t.2.push(low);
                        t.3.push(high);
                    }
                    for (param, value) in index.strings {
                        let (param, t) = (code(param)?, &mut rows.string);
                        t.0.push(rid);
                        t.1.push(param);
                        t.2.push(value);
                    }
                    for patient in index.patients {
                        rows.compartment.0.push(rid);
                        rows.compartment.1.push(patient);
                    }
                }
                super::insert_index_rows(tx, rows).await?;
                Ok(out)
            }

            /// Checks that the database numbers the search parameters as this build does
            /// (`fhir_params`, written by the migrations): index rows written under other numbers
            /// would be found by the wrong searches.
            pub(super) async fn check_param_codes(pool: &sqlx::Pool<Db>) -> Result<(), StoreError> {
                let rows = sqlx::query("SELECT code, resource_type, name FROM fhir_params")
                    .fetch_all(pool)
                    .await?;
                let mut stored: HashMap<i64, (String, String)> = HashMap::new();
                for row in &rows {
                    stored.insert(col(row, "code")?, (col(row, "resource_type")?, col(row, "name")?));
                }
                for (code, rt, name) in ResourceType::indexed_params() {
                    match stored.get(&code) {
                        Some((t, n)) if t == rt.as_str() && n == name => {}
                        other => {
                            return Err(StoreError::Corrupt(format!(
                                "search parameter {rt}.{name} is number {code} in this build but \
                                 {other:?} in the database's fhir_params"
                            )))
                        }
                    }
                }
                Ok(())
            }

            /// The resources in `rows`, after loading any dictionary their texts need that this
            /// process has not seen (one another process learned since this one opened the store).
            async fn resources_from_rows(
                pool: &sqlx::Pool<Db>,
                rows: &[DbRow],
            ) -> Result<Vec<StoredResource>, StoreError> {
                load_dicts_for(pool, rows).await?;
                rows.iter().map(resource_from_row).collect()
            }

            async fn fetch_current(
                pool: &sqlx::Pool<Db>,
                keys: &BTreeMap<ResourceType, BTreeSet<String>>,
            ) -> Result<Vec<StoredResource>, StoreError> {
                let mut out = Vec::new();
                for (rt, ids) in keys {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    for chunk in ids.chunks(RESOURCE_CHUNK) {
                        let mut sql = by_type_sql(
                            "SELECT resource_type, id, version_id, last_updated, json FROM fhir_resources",
                            *rt,
                            chunk,
                            "",
                        );
                        let rows = query(&mut sql).fetch_all(pool).await?;
                        out.extend(resources_from_rows(pool, &rows).await?);
                    }
                }
                out.sort_by(|a, b| (a.resource_type, &a.id).cmp(&(b.resource_type, &b.id)));
                Ok(out)
            }

            /// A write transaction for resources, set up as the backend needs (see `FHIR_WRITE_SETUP`).
            async fn begin_fhir_write(
                pool: &sqlx::Pool<Db>,
            ) -> Result<Transaction<'static, Db>, StoreError> {
                let mut tx = begin_write(pool).await?;
                if let Some(setup) = FHIR_WRITE_SETUP {
                    sqlx::query(setup).execute(&mut *tx).await?;
                }
                Ok(tx)
            }

            /// Writes `prepared` in one transaction, in contiguous chunks of distinct (type, id) (a
            /// repeat starts a new chunk, so later versions follow earlier ones).
            async fn write_all(
                pool: &sqlx::Pool<Db>,
                prepared: &mut [Prepared<'_>],
                now: OffsetDateTime,
                encoding: BodyEncoding,
                collect: bool,
            ) -> Result<Vec<StoredResource>, StoreError> {
                let mut bounds = Vec::new();
                let mut start = 0;
                let mut seen: HashSet<(ResourceType, &str)> = HashSet::new();
                for (i, p) in prepared.iter().enumerate() {
                    if i - start == RESOURCE_CHUNK || !seen.insert((p.rt, p.id.as_str())) {
                        bounds.push(start..i);
                        start = i;
                        seen.clear();
                        seen.insert((p.rt, p.id.as_str()));
                    }
                }
                bounds.push(start..prepared.len());
                let lu_ms = ms(now);
                let lu_text = format_instant_ms(lu_ms);
                let mut out = Vec::with_capacity(if collect { prepared.len() } else { 0 });
                let mut tx = begin_fhir_write(pool).await?;
                for range in bounds {
                    if range.is_empty() {
                        continue;
                    }
                    out.extend(
                        write_chunk(&mut tx, &mut prepared[range], lu_ms, &lu_text, encoding, collect).await?,
                    );
                }
                tx.commit().await?;
                Ok(out)
            }

            #[async_trait::async_trait]
            impl FhirStore for $store {
                async fn put_resource(
                    &self,
                    json_text: &str,
                    now: OffsetDateTime,
                ) -> Result<StoredResource, StoreError> {
                    let mut prepared =
                        Prepared::parse(json_text).map_err(|e| StoreError::Invalid(e.0))?;
                    let lu_ms = ms(now);
                    let lu_text = format_instant_ms(lu_ms);
                    let mut tx = begin_fhir_write(&self.writer).await?;
                    let mut out =
                        write_chunk(
                            &mut tx,
                            std::slice::from_mut(&mut prepared),
                            lu_ms,
                            &lu_text,
                            self.body_encoding(),
                            true,
                        )
                        .await?;
                    tx.commit().await?;
                    out.pop()
                        .ok_or_else(|| StoreError::Database("resource not written".into()))
                }

                async fn put_batch(
                    &self,
                    json_texts: &[String],
                    now: OffsetDateTime,
                ) -> Result<Vec<StoredResource>, StoreError> {
                    if json_texts.len() > MAX_BATCH {
                        return Err(StoreError::Invalid(format!(
                            "at most {MAX_BATCH} resources per batch"
                        )));
                    }
                    let mut prepared = json_texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            Prepared::parse(t)
                                .map_err(|e| StoreError::Invalid(format!("resource #{i}: {}", e.0)))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    write_all(&self.writer, &mut prepared, now, self.body_encoding(), true).await
                }

                fn body_encoding(&self) -> BodyEncoding {
                    self.encoding()
                }

                async fn install_body_dictionary(
                    &self,
                    rt: ResourceType,
                    dict: &'static BodyDict,
                ) -> Result<(), StoreError> {
                    install_dict(self, rt, dict).await
                }

                async fn put_prepared(
                    &self,
                    batch: Vec<$crate::fhir::PreparedResource>,
                    now: OffsetDateTime,
                ) -> Result<u64, StoreError> {
                    if batch.len() > MAX_BATCH {
                        return Err(StoreError::Invalid(format!(
                            "at most {MAX_BATCH} resources per batch"
                        )));
                    }
                    let mut prepared: Vec<Prepared<'static>> =
                        batch.into_iter().map(|p| p.0).collect();
                    write_all(&self.writer, &mut prepared, now, self.body_encoding(), false).await?;
                    Ok(prepared.len() as u64)
                }

                async fn defer_search_indexes(&self) -> Result<bool, StoreError> {
                    let mut tx = begin_write(&self.writer).await?;
                    let empty = sqlx::query(
                        "SELECT 1 FROM fhir_resources UNION ALL SELECT 1 FROM fhir_history LIMIT 1",
                    )
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none();
                    if !empty {
                        return Ok(false);
                    }
                    for (name, _) in SEARCH_INDEXES {
                        sqlx::query(&format!("DROP INDEX IF EXISTS {name}"))
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn build_search_indexes(&self) -> Result<usize, StoreError> {
                    let mut missing = Vec::new();
                    for (name, on) in SEARCH_INDEXES {
                        let exists = sqlx::query(INDEX_EXISTS)
                            .bind(name)
                            .fetch_optional(&self.writer)
                            .await?
                            .is_some();
                        if !exists {
                            missing.push((name, on));
                        }
                    }
                    if !missing.is_empty() {
                        build_indexes(&self.writer, &missing).await?;
                    }
                    Ok(missing.len())
                }

                async fn read(
                    &self,
                    resource_type: ResourceType,
                    id: &str,
                ) -> Result<Option<StoredResource>, StoreError> {
                    let row = sqlx::query(
                        "SELECT resource_type, id, version_id, last_updated, json FROM fhir_resources \
                         WHERE resource_type = $1 AND id = $2",
                    )
                    .bind(resource_type.as_str())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(resources_from_rows(&self.pool, row.as_slice()).await?.pop())
                }

                async fn vread(
                    &self,
                    resource_type: ResourceType,
                    id: &str,
                    version_id: i64,
                ) -> Result<Option<StoredResource>, StoreError> {
                    let row = sqlx::query(
                        "SELECT resource_type, id, version_id, last_updated, json FROM fhir_resources \
                         WHERE resource_type = $1 AND id = $2 AND version_id = $3 \
                         UNION ALL \
                         SELECT resource_type, id, version_id, last_updated, json FROM fhir_history \
                         WHERE resource_type = $4 AND id = $5 AND version_id = $6",
                    )
                    .bind(resource_type.as_str())
                    .bind(id)
                    .bind(version_id)
                    .bind(resource_type.as_str())
                    .bind(id)
                    .bind(version_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(resources_from_rows(&self.pool, row.as_slice()).await?.pop())
                }

                async fn search(&self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
                    let count = q.count.clamp(1, MAX_COUNT) as usize;
                    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
                    if q.patient_compartment.as_ref().is_some_and(Vec::is_empty) {
                        return Ok(SearchPage {
                            resources: Vec::new(),
                            total: q.with_total.then_some(0),
                            next_cursor: None,
                        });
                    }
                    let now_ms = ms(OffsetDateTime::now_utc());
                    let mut sql = search_sql(q, cursor.as_ref(), count as i64 + 1, now_ms);
                    let rows = query(&mut sql).fetch_all(&self.pool).await?;
                    let mut resources = resources_from_rows(&self.pool, &rows).await?;
                    let next_cursor = if resources.len() > count {
                        resources.truncate(count);
                        resources
                            .last()
                            .map(|r| encode_cursor(ms(r.last_updated), &r.id))
                    } else {
                        None
                    };
                    let total = if q.with_total {
                        let mut sql = count_sql(q, now_ms);
                        let row = query(&mut sql)
                            .fetch_one(&self.pool)
                            .await?;
                        let n: i64 = col(&row, "n")?;
                        let n = u64::try_from(n).unwrap_or(0);
                        (n <= $crate::fhir::MAX_TOTAL).then_some(n)
                    } else {
                        None
                    };
                    Ok(SearchPage {
                        resources,
                        total,
                        next_cursor,
                    })
                }

                async fn include(
                    &self,
                    resources: &[StoredResource],
                    specs: &[IncludeSpec],
                ) -> Result<Vec<StoredResource>, StoreError> {
                    let mut seen: HashSet<(ResourceType, String)> = resources
                        .iter()
                        .map(|r| (r.resource_type, r.id.clone()))
                        .collect();
                    let mut out: Vec<StoredResource> = Vec::new();
                    let mut frontier: Vec<StoredResource> = resources.to_vec();
                    for round in 0..4 {
                        let mut wanted: BTreeMap<ResourceType, BTreeSet<String>> = BTreeMap::new();
                        for spec in specs.iter().filter(|s| round == 0 || s.iterate) {
                            for r in frontier.iter().filter(|r| r.resource_type == spec.source) {
                                let targets =
                                    reference_targets(r.resource_type, &r.id, &r.json, &spec.params)
                                        .map_err(|e| StoreError::Corrupt(e.0))?;
                                for t in targets {
                                    let Some((ty, id)) = t.split_once('/') else { continue };
                                    if spec.target_type.as_deref().is_some_and(|want| want != ty) {
                                        continue;
                                    }
                                    let Some(ty) = ResourceType::parse(ty) else { continue };
                                    if !seen.contains(&(ty, id.to_owned())) {
                                        wanted.entry(ty).or_default().insert(id.to_owned());
                                    }
                                }
                            }
                        }
                        if wanted.is_empty() {
                            break;
                        }
                        let found = fetch_current(&self.pool, &wanted).await?;
                        for r in &found {
                            seen.insert((r.resource_type, r.id.clone()));
                        }
                        out.extend(found.iter().cloned());
                        frontier = found;
                    }
                    out.sort_by(|a, b| (a.resource_type, &a.id).cmp(&(b.resource_type, &b.id)));
                    Ok(out)
                }

                async fn compartment_patients(
                    &self,
                    resource_type: ResourceType,
                    id: &str,
                ) -> Result<Vec<String>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT c.patient_id FROM fhir_resources r \
                         JOIN fhir_compartment c ON c.rid = r.rid \
                         WHERE r.resource_type = $1 AND r.id = $2 ORDER BY c.patient_id",
                    )
                    .bind(resource_type.as_str())
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(|r| col(r, "patient_id")).collect()
                }
            }
        }
    };
}
