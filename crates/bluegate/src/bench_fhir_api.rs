//! `bluegate bench fhir-api`: authorized `ExplanationOfBenefit?patient=X` searches over HTTPS against a
//! store holding a synthetic CARIN BB population, beside the store search alone and the bearer check
//! alone, measured in the same run (issue 5's performance figures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bluegate_core::jose::Alg;
use bluegate_core::tokens::{self, AccessClaims};
use bluegate_store::fhir::synthetic::{Synthetic, SyntheticOptions};
use bluegate_store::fhir::{
    parse_param, prepare, render_batch_ahead, BodyDict, PreparedResource, ResourceType, SearchQuery,
};
use time::OffsetDateTime;

use crate::bench::{start_bench_server, stats};

/// Resources per store transaction while populating.
const BATCH: usize = 5000;

pub struct Args {
    pub members: u64,
    pub eobs_per_member: u32,
    pub seed: u64,
    pub requests: usize,
    pub concurrency: usize,
    pub database_url: Option<String>,
}

fn line(name: &str, s: &crate::bench::Stats) {
    println!(
        "{name:<44} {:>9.0}/s  mean {:>8.0} µs  p50 {:>8.0} µs  p99 {:>8.0} µs",
        s.per_sec, s.mean_us, s.p50_us, s.p99_us
    );
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_bench_server(a.database_url.as_deref()).await?;
    let state = server.running.state.clone();
    let store = state.store.clone();
    println!(
        "backend: {}; population: {} members x {} EOBs (seed {})",
        store.backend_name(),
        a.members,
        a.eobs_per_member,
        a.seed
    );

    // Population, streamed from the generator in import-sized batches (no intermediate file: at 2M EOBs
    // it would be many GB); generation runs on its own thread, one batch ahead of the database.
    let mut opts = SyntheticOptions::numbered(a.members, a.seed);
    opts.eobs_per_member = a.eobs_per_member;
    let prefix = opts.id_prefix.clone();
    // Each resource is prepared and rendered on that thread too, as `bluegate fhir import` does.
    let mut encoding = store.body_encoding();
    type Learned = Vec<(ResourceType, &'static BodyDict)>;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<PreparedResource>, Learned)>(2);
    let gen = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut send = |mut batch: Vec<PreparedResource>| -> anyhow::Result<bool> {
            let learned = render_batch_ahead(&mut batch, OffsetDateTime::now_utc(), &mut encoding)?;
            Ok(tx.blocking_send((batch, learned)).is_ok())
        };
        for r in Synthetic::new(opts)? {
            batch.push(prepare(r.json).map_err(|e| anyhow::anyhow!("{}", e.error))?);
            if batch.len() == BATCH && !send(std::mem::take(&mut batch))? {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            send(batch)?;
        }
        Ok(())
    });
    let started = Instant::now();
    // As `bluegate fhir import` does: a first load appends rows, and the search indexes are built at
    // the end (counted in the import's time).
    let deferred = store.defer_search_indexes().await?;
    let mut stored = 0usize;
    while let Some((batch, learned)) = rx.recv().await {
        stored += batch.len();
        for (rt, dict) in learned {
            store.install_body_dictionary(rt, dict).await?;
        }
        store.put_prepared(batch, OffsetDateTime::now_utc()).await?;
    }
    gen.await??;
    let loaded = started.elapsed().as_secs_f64();
    store.build_search_indexes().await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "population: {stored} resources generated and stored in {took:.1} s = {:.0} resources/s{}",
        stored as f64 / took,
        if deferred {
            format!(
                " (rows {loaded:.1} s, then search indexes {:.1} s)",
                took - loaded
            )
        } else {
            String::new()
        }
    );

    // Tokens for a sample of members, minted with the server's key as the token endpoint would.
    let sample = 200.min(a.members.max(1)) as usize;
    let step = (a.members / sample as u64).max(1);
    let keys = state.signing.current();
    let key = keys
        .active(Alg::ES256)
        .ok_or_else(|| anyhow::anyhow!("no ES256 key"))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut patients = Vec::with_capacity(sample);
    for i in 0..sample {
        let pid = format!("{prefix}-pat-{}", i as u64 * step);
        let claims = AccessClaims {
            iss: state.endpoints.issuer().to_string(),
            sub: format!("bench-member-{i}"),
            aud: state.endpoints.fhir_base.clone(),
            exp: now + 3600,
            iat: now,
            jti: format!("bench-{i}-{now}"),
            client_id: "bench-app".into(),
            scope: "launch/patient patient/*.rs".into(),
            patient: Some(pid.clone()),
            fhir_user: None,
            gid: None,
        };
        patients.push((pid, tokens::sign_access_token(key, &claims)?));
    }
    let patients = Arc::new(patients);
    let fhir = state.endpoints.fhir_base.clone();

    // Warm-up: every sampled patient once; also checks the answers.
    for (pid, token) in patients.iter() {
        let resp = server
            .client
            .get(format!("{fhir}/ExplanationOfBenefit?patient={pid}"))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "warm-up search: HTTP {}",
            resp.status()
        );
        let body: serde_json::Value = resp.json().await?;
        let n = body["entry"].as_array().map(|e| e.len()).unwrap_or(0);
        anyhow::ensure!(
            n == a.eobs_per_member.min(bluegate_store::fhir::DEFAULT_COUNT) as usize,
            "{pid}: {n} EOBs in the first page"
        );
    }

    // Authorized searches over HTTPS, `concurrency` at a time.
    let per_task = a.requests.div_ceil(a.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..a.concurrency {
        let client = server.client.clone();
        let patients = patients.clone();
        let fhir = fhir.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (pid, token) = &patients[(t * 7919 + i * 104_729) % patients.len()];
                let s = Instant::now();
                let resp = client
                    .get(format!("{fhir}/ExplanationOfBenefit?patient={pid}"))
                    .bearer_auth(token)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status() == 200, "search: HTTP {}", resp.status());
                resp.bytes().await?;
                lat.push(s.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let http = stats(lat, started.elapsed());

    // The store search alone (same queries, no HTTP, no token, no JSON).
    let mut lat = Vec::with_capacity(a.requests);
    let started = Instant::now();
    for i in 0..a.requests {
        let (pid, _) = &patients[(i * 104_729) % patients.len()];
        let mut q = SearchQuery::new(ResourceType::ExplanationOfBenefit);
        q.params.push(parse_param(
            ResourceType::ExplanationOfBenefit,
            "patient",
            pid,
        )?);
        q.patient_compartment = Some(vec![pid.clone()]);
        let s = Instant::now();
        store.search(&q).await?;
        lat.push(s.elapsed());
    }
    let store_only = stats(lat, started.elapsed());

    // The bearer check alone: signature, claims, revocation mirror.
    let n = 20_000usize;
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let (_, token) = &patients[i % patients.len()];
        let s = Instant::now();
        let c = bluegate_server::fhir::auth::verify(&state, token)
            .ok_or_else(|| anyhow::anyhow!("bench token refused"))?;
        state
            .revocations
            .is_revoked(store.as_ref(), &c.jti, c.gid.as_deref())
            .await?;
        lat.push(s.elapsed());
    }
    let bearer = stats(lat, started.elapsed());

    println!(
        "{} requests, concurrency {}, {} sampled patients",
        a.requests,
        a.concurrency,
        patients.len()
    );
    line("EOB?patient=X over HTTPS (authorized)", &http);
    line("store search alone", &store_only);
    line("bearer check alone (ES256 + revocation)", &bearer);
    println!(
        "bearer check share of an authorized search: {:.1}% (mean), p99 target < 10 ms: {}",
        100.0 * bearer.mean_us / http.mean_us,
        if http.p99_us < 10_000.0 {
            "met"
        } else {
            "missed"
        }
    );
    server.running.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
