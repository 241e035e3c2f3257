//! `bluegate bench`: measured performance of the hot paths against the cost of their cryptography,
//! measured in the same run on the same machine. Each benchmark starts a real server (HTTPS, SQLite in a
//! temporary directory) on a loopback port and drives it with a real HTTP client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bluegate_core::jose::{Alg, SigningKey};
use bluegate_core::pki::{self, EndEntityRequest, EndEntityUsage, KeyKind};
use bluegate_core::trust::{ChainCache, Community};
use bluegate_core::udap::{self, StatementInput};
use bluegate_store::{JtiRecord, RegistrationChange, RegistrationOutcome, UdapRegistration};
use serde_json::{json, Map};
use time::OffsetDateTime;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// UDAP registration: requests/s and latency with a cold and a cached certificate chain, beside the
    /// cost of the cryptography alone (parse + path validation + one signature verification).
    Registration {
        /// Requests per scenario.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Concurrent requests for the throughput figure.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Run against this PostgreSQL database (a scratch one: the benchmark leaves its clients there)
        /// instead of SQLite in a temporary directory ($TMPDIR).
        #[arg(long, value_name = "URL", env = "BLUEGATE_BENCH_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// FHIR import and search: generates a synthetic CARIN BB population into a fresh store, imports
    /// it with `bluegate fhir import`'s pipeline (resources/s), then measures the store-level search
    /// `ExplanationOfBenefit?patient=X` within that patient's compartment (warm; searches/s, p50, p99).
    FhirImport {
        /// Members to generate (each with --eobs-per-member EOBs, a Coverage, ...).
        #[arg(long, default_value_t = 1000)]
        members: u64,
        #[arg(long, default_value_t = 20)]
        eobs_per_member: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `sqlite` (a new file in a temporary directory) or `postgres` (--database-url, an empty
        /// database).
        #[arg(long, default_value = "sqlite")]
        backend: String,
        #[arg(long)]
        database_url: Option<String>,
        /// Resources per import transaction.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Searches to time.
        #[arg(long, default_value_t = 2000)]
        searches: usize,
        /// Concurrent searches for the throughput figure.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Directory for the NDJSON file and the SQLite database (default: a new temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The FHIR API: authorized `ExplanationOfBenefit?patient=X` searches over HTTPS against a synthetic
    /// population (searches/s, p50, p99, warm), beside the store search alone and the bearer check alone.
    FhirApi {
        /// Members to generate.
        #[arg(long, default_value_t = 1000)]
        members: u64,
        #[arg(long, default_value_t = 20)]
        eobs_per_member: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Searches to time.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Concurrent searches.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// PostgreSQL URL of an empty database (default: SQLite in a temporary directory).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Token endpoint (authorization_code grant): requests/s and latency for client_secret_basic and for
    /// UDAP private_key_jwt with an x5c RS256 assertion, beside the cryptography alone (assertion
    /// verification with a cached chain + access-token signature).
    Token {
        /// Requests per scenario.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Concurrent requests for the throughput figure.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Run against this PostgreSQL database (a scratch one: the benchmark leaves its clients, grants
        /// and codes there) instead of SQLite in a temporary directory ($TMPDIR).
        #[arg(long, value_name = "URL", env = "BLUEGATE_BENCH_DATABASE_URL")]
        database_url: Option<String>,
    },
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Registration {
            requests,
            concurrency,
            database_url,
        } => registration(requests.max(10), concurrency.max(1), database_url).await,
        BenchCmd::Token {
            requests,
            concurrency,
            database_url,
        } => crate::bench_token::token(requests.max(10), concurrency.max(1), database_url).await,
        BenchCmd::FhirApi {
            members,
            eobs_per_member,
            seed,
            requests,
            concurrency,
            database_url,
        } => {
            crate::bench_fhir_api::run(crate::bench_fhir_api::Args {
                members: members.max(1),
                eobs_per_member: eobs_per_member.max(1),
                seed,
                requests: requests.max(10),
                concurrency: concurrency.max(1),
                database_url,
            })
            .await
        }
        BenchCmd::FhirImport {
            members,
            eobs_per_member,
            seed,
            backend,
            database_url,
            batch,
            searches,
            concurrency,
            dir,
        } => {
            fhir_import::fhir_import(fhir_import::Args {
                members: members.max(1),
                eobs_per_member,
                seed,
                backend,
                database_url,
                batch: batch.clamp(1, crate::fhir_cmd::MAX_IMPORT_BATCH),
                searches: searches.max(10),
                concurrency: concurrency.max(1),
                dir,
            })
            .await
        }
    }
}

pub struct Stats {
    pub per_sec: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let n = lat.len().max(1);
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e6;
    Stats {
        per_sec: n as f64 / wall.as_secs_f64(),
        mean_us: lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64 * 1e6,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// One scenario: throughput, latency, and its mean as a multiple of `baseline_us` (named `baseline`).
pub fn row(name: &str, s: &Stats, baseline_us: f64, baseline: &str) {
    println!(
        "{name:<58} {:>7.0}/s  mean {:>6.0} µs  p50 {:>6.0} µs  p99 {:>6.0} µs  {:>6.2}x {baseline}",
        s.per_sec,
        s.mean_us,
        s.p50_us,
        s.p99_us,
        s.mean_us / baseline_us
    );
}

/// A scenario against its baseline, as the issues define the targets: p50 and mean one at a time, and
/// the cost per request at `concurrency` (wall time / requests, i.e. 1 / throughput) against the
/// baseline's mean.
pub fn ratio(name: &str, one: &Stats, many: &Stats, concurrency: usize, baseline: &Stats) {
    println!(
        "  {name:<40} p50 {:>5.2}x  mean {:>5.2}x  (1 at a time); {concurrency} at a time: {:.0}/s = one per {:.0} µs = {:.2}x",
        one.p50_us / baseline.p50_us,
        one.mean_us / baseline.mean_us,
        many.per_sec,
        1e6 / many.per_sec,
        1e6 / many.per_sec / baseline.mean_us,
    );
}

/// One row of a per-phase breakdown: the mean of a part measured alone, and its share of the request.
pub fn part(name: &str, s: &Stats, request_us: f64) {
    println!(
        "  {name:<58} mean {:>7.0} µs  p50 {:>7.0} µs  {:>5.1}% of the request",
        s.mean_us,
        s.p50_us,
        100.0 * s.mean_us / request_us
    );
}

/// Times `n` runs of `f`, one at a time.
pub async fn time_each<F, Fut>(n: usize, mut f: F) -> anyhow::Result<Stats>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i).await?;
        lat.push(t.elapsed());
    }
    Ok(stats(lat, t0.elapsed()))
}

/// The HTTPS floor: `n` POSTs to `url` that the server refuses with a 400 before any client
/// authentication, cryptography or store access (TLS, HTTP, the middleware stack, an error body).
pub async fn http_floor(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: &str,
    n: usize,
) -> anyhow::Result<Stats> {
    time_each(n, |_| async {
        let resp = client
            .post(url)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        resp.bytes().await?;
        anyhow::ensure!(status == 400, "the HTTPS floor request answered {status}");
        Ok(())
    })
    .await
}

/// A tag that differs between runs, for ids that must not collide in a reused PostgreSQL database.
pub fn run_tag() -> String {
    bluegate_server::random::token(6)
}

/// A throwaway server: a community, TLS and metadata certificates, SQLite in a temp dir (or the given
/// PostgreSQL database).
pub struct BenchServer {
    pub dir: tempfile::TempDir,
    pub running: bluegate_server::serve::Running,
    pub base: String,
    pub client: reqwest::Client,
    pub community: pki::Community,
}

pub async fn start_bench_server(database_url: Option<&str>) -> anyhow::Result<BenchServer> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("https://localhost:{port}");
    let now = OffsetDateTime::now_utc();
    let nb = now - time::Duration::hours(1);
    let na = now + time::Duration::days(2);
    let community = pki::create_community("Bench", KeyKind::Rsa2048, nb, na, None)?;
    let issue = |uri: Option<String>, key: KeyKind, usage: EndEntityUsage| {
        pki::issue_end_entity(
            &community.intermediate_cert_pem,
            &community.intermediate_key_pem,
            &EndEntityRequest {
                common_name: "bench".into(),
                san_uris: uri.into_iter().collect(),
                dns_names: if usage == EndEntityUsage::TlsServer {
                    vec!["localhost".into()]
                } else {
                    vec![]
                },
                ip_addresses: vec![],
                key,
                not_before: nb,
                not_after: na,
                usage,
            },
        )
    };
    let tls = issue(None, KeyKind::P256, EndEntityUsage::TlsServer)?;
    let meta = issue(
        Some(format!("{base}/fhir")),
        KeyKind::Rsa2048,
        EndEntityUsage::UdapServer,
    )?;
    let p = dir.path();
    std::fs::write(p.join("root.pem"), &community.root_cert_pem)?;
    std::fs::write(p.join("tls-chain.pem"), &tls.chain_pem)?;
    std::fs::write(p.join("tls-key.pem"), &tls.key_pem)?;
    std::fs::write(p.join("meta-chain.pem"), &meta.chain_pem)?;
    std::fs::write(p.join("meta-key.pem"), &meta.key_pem)?;
    let config = format!(
        "public_url = \"{base}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
         [tls]\ncert = \"tls-chain.pem\"\nkey = \"tls-key.pem\"\n[log]\nlevel = \"error\"\n\
         [[communities]]\nuri = \"urn:bench\"\ntrust_anchors = [\"root.pem\"]\n\
         metadata_cert = \"meta-chain.pem\"\nmetadata_key = \"meta-key.pem\"\n"
    );
    std::fs::write(p.join("bluegate.toml"), config)?;
    let mut env = std::collections::BTreeMap::new();
    if let Some(url) = database_url {
        env.insert("BLUEGATE_DATABASE_URL".to_string(), url.to_string());
    }
    let cfg = bluegate_server::config::load_file(&p.join("bluegate.toml"), &env)?;
    let running = bluegate_server::serve::start(cfg).await?;
    let client = bluegate_client::http::client(Some(community.root_cert_pem.as_bytes()))?;
    Ok(BenchServer {
        dir,
        running,
        base,
        client,
        community,
    })
}

pub struct App {
    pub key: SigningKey,
    pub x5c: Vec<String>,
    pub uri: String,
}

pub fn make_app(c: &pki::Community, i: usize) -> anyhow::Result<App> {
    make_app_with(c, i, KeyKind::P256)
}

pub fn make_app_with(c: &pki::Community, i: usize, kind: KeyKind) -> anyhow::Result<App> {
    make_app_at(c, format!("https://bench-app-{i}.example/"), kind)
}

/// An app whose certificate's URI SAN (and so its UDAP `iss`) is `uri`.
pub fn make_app_at(c: &pki::Community, uri: String, kind: KeyKind) -> anyhow::Result<App> {
    let now = OffsetDateTime::now_utc();
    let cert = pki::issue_end_entity(
        &c.intermediate_cert_pem,
        &c.intermediate_key_pem,
        &EndEntityRequest {
            common_name: "app".into(),
            san_uris: vec![uri.clone()],
            dns_names: vec![],
            ip_addresses: vec![],
            key: kind,
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(1),
            usage: EndEntityUsage::UdapClient,
        },
    )?;
    let alg = if kind == KeyKind::P256 {
        Alg::ES256
    } else {
        Alg::RS256
    };
    let key = SigningKey::from_pem(Some(alg), &cert.key_pem)?;
    let x5c = bluegate_core::certs::pem_certs(cert.chain_pem.as_bytes())?
        .iter()
        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
        .collect();
    Ok(App { key, x5c, uri })
}

fn statement(app: &App, aud: &str, n: usize) -> anyhow::Result<String> {
    let t = OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": app.uri, "sub": app.uri, "aud": aud, "iat": t, "exp": t + 300, "jti": format!("bench-{n}-{t}"),
        "client_name": "Bench App", "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"], "redirect_uris": ["https://bench.example/cb"],
        "logo_uri": "https://bench.example/logo.png", "contacts": ["mailto:bench@bench.example"],
        "token_endpoint_auth_method": "private_key_jwt", "scope": "openid patient/Patient.read",
    });
    let mut h = Map::new();
    h.insert("x5c".into(), json!(app.x5c));
    Ok(app.key.sign_compact(&h, &claims)?)
}

pub async fn post_all(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for body in bodies {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            drop(permit);
            let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
            (t.elapsed(), status)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        let (d, status) = t.await?;
        if status != 200 && status != 201 {
            anyhow::bail!("registration answered {status} during the benchmark");
        }
        lat.push(d);
    }
    Ok((lat, start.elapsed()))
}

async fn registration(
    n: usize,
    concurrency: usize,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let server = start_bench_server(database_url.as_deref())
        .await
        .context("starting the server")?;
    let url = format!("{}/oauth/register", server.base);
    println!("preparing {n} client certificates...");
    let apps: Vec<App> = (0..n)
        .map(|i| make_app(&server.community, i))
        .collect::<anyhow::Result<_>>()?;
    let cached_app = make_app(&server.community, n + 1)?;
    let wrap = |s: String| json!({"software_statement": s, "udap": "1"}).to_string();

    // Baseline: the cryptography alone (pure core, no HTTP, no store), cold and with a warm chain cache.
    let community = Community::builder("urn:bench")
        .anchors_pem(server.community.root_cert_pem.as_bytes())?
        .build()?;
    let policy = server.running.state.registration_policy.clone();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let stmts: Vec<String> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| statement(a, &url, i))
        .collect::<anyhow::Result<_>>()?;
    let mut cold_lat = Vec::new();
    let t0 = Instant::now();
    for s in &stmts {
        let cache = ChainCache::new(4);
        let t = Instant::now();
        udap::validate_software_statement(
            &StatementInput {
                software_statement: s.clone(),
                certifications: None,
                udap: Some("1".into()),
            },
            &community,
            &cache,
            &policy,
            now,
        )
        .map_err(|e| anyhow::anyhow!("baseline statement refused: {}", e.description))?;
        cold_lat.push(t.elapsed());
    }
    let crypto_cold = stats(cold_lat, t0.elapsed());
    let warm_cache = ChainCache::new(4);
    let warm_stmts: Vec<String> = (0..n)
        .map(|i| statement(&cached_app, &url, i))
        .collect::<anyhow::Result<_>>()?;
    let mut warm_lat = Vec::new();
    let t0 = Instant::now();
    for s in &warm_stmts {
        let t = Instant::now();
        udap::validate_software_statement(
            &StatementInput {
                software_statement: s.clone(),
                certifications: None,
                udap: Some("1".into()),
            },
            &community,
            &warm_cache,
            &policy,
            now,
        )
        .map_err(|e| anyhow::anyhow!("baseline statement refused: {}", e.description))?;
        warm_lat.push(t.elapsed());
    }
    let crypto_warm = stats(warm_lat, t0.elapsed());

    // Over HTTPS: one request at a time (latency), then `concurrency` at a time (throughput).
    let half = n / 2;
    let cold_bodies: Vec<String> = stmts.iter().map(|s| wrap(s.clone())).collect();
    let (lat, wall) = post_all(&server.client, &url, cold_bodies[..half].to_vec(), 1).await?;
    let http_cold_1 = stats(lat, wall);
    let (lat, wall) = post_all(
        &server.client,
        &url,
        cold_bodies[half..].to_vec(),
        concurrency,
    )
    .await?;
    let http_cold_c = stats(lat, wall);
    let cached_bodies: Vec<String> = (0..n)
        .map(|i| statement(&cached_app, &url, n + i).map(wrap))
        .collect::<anyhow::Result<_>>()?;
    // The first registration of this app creates it and warms the chain cache; the rest update it.
    post_all(&server.client, &url, cached_bodies[..1].to_vec(), 1).await?;
    let (lat, wall) = post_all(&server.client, &url, cached_bodies[1..=half].to_vec(), 1).await?;
    let http_warm_1 = stats(lat, wall);
    let (lat, wall) = post_all(
        &server.client,
        &url,
        cached_bodies[half + 1..].to_vec(),
        concurrency,
    )
    .await?;
    let http_warm_c = stats(lat, wall);

    println!(
        "\nUDAP registration, {n} statements per scenario, store: {}",
        server.running.state.store.backend_name()
    );
    let crypto = "crypto";
    for (name, s, base) in [
        (
            "crypto alone, cold chain (baseline)",
            &crypto_cold,
            &crypto_cold,
        ),
        (
            "crypto alone, cached chain (baseline)",
            &crypto_warm,
            &crypto_warm,
        ),
        (
            "HTTPS register, cold chain, 1 at a time",
            &http_cold_1,
            &crypto_cold,
        ),
        (
            &format!("HTTPS register, cold chain, {concurrency} at a time"),
            &http_cold_c,
            &crypto_cold,
        ),
        (
            "HTTPS register, cached chain, 1 at a time",
            &http_warm_1,
            &crypto_warm,
        ),
        (
            &format!("HTTPS register, cached chain, {concurrency} at a time"),
            &http_warm_c,
            &crypto_warm,
        ),
    ] {
        row(name, s, base.mean_us, crypto);
    }
    // Issue 3's target: HTTP, JSON and storage add less than the cryptography does, i.e. a request
    // costs less than 2x its cryptography.
    println!("\nagainst the cryptography alone (target: below 2.00x, i.e. the overhead below the crypto):");
    ratio(
        "registration, cold chain",
        &http_cold_1,
        &http_cold_c,
        concurrency,
        &crypto_cold,
    );
    ratio(
        "registration, cached chain",
        &http_warm_1,
        &http_warm_c,
        concurrency,
        &crypto_warm,
    );
    println!(
        "  overhead beyond the cryptography (mean, 1 at a time): cold {:.0} µs ({:.2}x of crypto), cached {:.0} µs ({:.2}x of crypto)",
        http_cold_1.mean_us - crypto_cold.mean_us,
        (http_cold_1.mean_us - crypto_cold.mean_us) / crypto_cold.mean_us,
        http_warm_1.mean_us - crypto_warm.mean_us,
        (http_warm_1.mean_us - crypto_warm.mean_us) / crypto_warm.mean_us,
    );

    // Where a cached-chain registration's time goes: each part measured alone, one at a time.
    let http = http_floor(&server.client, &url, "application/json", "{}", half).await?;
    let store = &server.running.state.store;
    let tag = run_tag();
    let meta = json!({"client_name": "Bench App", "redirect_uris": ["https://bench.example/cb"]});
    let iss = format!("https://bench-store-{tag}.example/");
    let ids: Vec<String> = (0..half).map(|i| format!("bench-{tag}-{i}")).collect();
    let write = time_each(half, |i| {
        let (store, meta, iss, id) = (store.clone(), &meta, &iss, &ids[i]);
        async move {
            let jti = JtiRecord {
                issuer: iss.clone(),
                jti: id.clone(),
                expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(5),
            };
            let registration = UdapRegistration {
                statement_jti: &jti,
                community: "urn:bench",
                iss,
                change: RegistrationChange::Upsert {
                    new_client_id: id,
                    secret_hash: None,
                    metadata: meta,
                },
            };
            let outcome = store
                .register_udap_client(&registration, OffsetDateTime::now_utc())
                .await?;
            anyhow::ensure!(
                matches!(
                    outcome,
                    RegistrationOutcome::Created { .. } | RegistrationOutcome::Updated { .. }
                ),
                "registration write: {outcome:?}"
            );
            Ok(())
        }
    })
    .await?;
    println!(
        "
where a cached-chain registration's time goes (each part alone, 1 at a time):"
    );
    let request = http_warm_1.mean_us;
    part(
        "HTTPS round trip (request refused before validation)",
        &http,
        request,
    );
    part(
        "cryptography (statement, cached chain)",
        &crypto_warm,
        request,
    );
    part(
        "store: one write transaction (jti + upsert, 1 commit)",
        &write,
        request,
    );
    let sum = http.mean_us + crypto_warm.mean_us + write.mean_us;
    println!(
        "  {:<58} mean {:>7.0} µs; measured request {:.0} µs; the rest (JSON, audit, scheduling) {:.0} µs",
        "sum of the parts",
        sum,
        request,
        request - sum
    );
    server.running.shutdown(Duration::from_secs(2)).await;
    drop(server.dir);
    Ok(())
}

/// `bluegate bench fhir-import`: import throughput and patient-compartment search latency of the
/// built-in FHIR store, on a synthetic population generated for the run.
mod fhir_import {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use bluegate_store::fhir::params::{parse_param, ResourceType};
    use bluegate_store::fhir::synthetic::{write_ndjson, SyntheticOptions};
    use bluegate_store::{SearchQuery, Store, StoreLocation};

    pub struct Args {
        pub members: u64,
        pub eobs_per_member: u32,
        pub seed: u64,
        pub backend: String,
        pub database_url: Option<String>,
        pub batch: usize,
        pub searches: usize,
        pub concurrency: usize,
        pub dir: Option<PathBuf>,
    }

    fn patient_ids(opts: &SyntheticOptions, n: usize, seed: u64) -> Vec<String> {
        // A fixed, spread-out sample of members (a multiplicative walk over the population).
        let members = opts.members().max(1);
        (0..n as u64)
            .map(|i| {
                let k = (i.wrapping_mul(2_654_435_761).wrapping_add(seed)) % members;
                format!("{}-pat-{k}", opts.id_prefix)
            })
            .collect()
    }

    fn eob_query(patient: &str) -> anyhow::Result<SearchQuery> {
        let rt = ResourceType::ExplanationOfBenefit;
        let mut q = SearchQuery::new(rt);
        q.params.push(parse_param(rt, "patient", patient)?);
        q.patient_compartment = Some(vec![patient.to_owned()]);
        Ok(q)
    }

    pub async fn fhir_import(a: Args) -> anyhow::Result<()> {
        let tmp = match &a.dir {
            Some(_) => None,
            None => Some(tempfile::tempdir()?),
        };
        let dir: PathBuf = match (&a.dir, &tmp) {
            (Some(d), _) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                d.clone()
            }
            (None, Some(t)) => t.path().to_path_buf(),
            (None, None) => bail!("no directory"),
        };
        let mut opts = SyntheticOptions::numbered(a.members, a.seed);
        opts.eobs_per_member = a.eobs_per_member;

        // 1. Generate (NDJSON on disk, as an import would find it).
        let data = dir.join("bench-data.ndjson");
        let gen_opts = opts.clone();
        let gen_path = data.clone();
        let start = Instant::now();
        let counts = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let file = std::fs::File::create(&gen_path)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            Ok(write_ndjson(gen_opts, &mut w)?)
        })
        .await??;
        let gen_secs = start.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        println!(
            "generate     {} resources ({} EOBs, {:.0} MB) in {:.1} s: {:.0} resources/s",
            counts.total,
            counts
                .by_type
                .get("ExplanationOfBenefit")
                .copied()
                .unwrap_or(0),
            bytes as f64 / 1e6,
            gen_secs,
            counts.total as f64 / gen_secs.max(1e-9)
        );

        // 2. Import into a fresh store.
        let location = match a.backend.as_str() {
            "sqlite" => StoreLocation::Sqlite(dir.join("bench.db")),
            "postgres" => StoreLocation::Postgres(
                a.database_url
                    .clone()
                    .context("--backend postgres needs --database-url")?,
            ),
            other => bail!("unknown backend {other:?} (sqlite or postgres)"),
        };
        if let StoreLocation::Sqlite(p) = &location {
            if p.exists() {
                bail!("{} exists; the benchmark wants a fresh store", p.display());
            }
        }
        let store: Arc<dyn Store> = bluegate_store::connect(&location).await?;
        let mut probe = SearchQuery::new(ResourceType::ExplanationOfBenefit);
        probe.count = 1;
        probe.with_total = false;
        if !store.search(&probe).await?.resources.is_empty() {
            bail!("the database already holds ExplanationOfBenefits; the benchmark wants an empty one");
        }
        let report =
            crate::fhir_cmd::import(store.as_ref(), std::slice::from_ref(&data), a.batch, true)
                .await?;
        println!(
            "import       {} resources in {:.1} s: {:.0} resources/s ({}, {} per transaction)",
            report.total,
            report.seconds,
            report.total as f64 / report.seconds.max(1e-9),
            store.backend_name(),
            a.batch
        );
        let _ = std::fs::remove_file(&data);

        // 3. Search: ExplanationOfBenefit?patient=X within X's compartment, warm.
        let patients = patient_ids(&opts, a.searches, a.seed);
        // Warm: every sampled patient once before timing.
        for p in &patients {
            store.search(&eob_query(p)?).await?;
        }
        let mut lat = Vec::with_capacity(patients.len());
        let mut found = 0usize;
        let start = Instant::now();
        for p in &patients {
            let t = Instant::now();
            let page = store.search(&eob_query(p)?).await?;
            lat.push(t.elapsed());
            found += page.resources.len();
        }
        let wall = start.elapsed();
        if found == 0 && a.eobs_per_member > 0 {
            bail!("the searches found nothing; the import went wrong");
        }
        let s = crate::bench::stats(lat, wall);
        println!(
            "search       ExplanationOfBenefit?patient=X (compartment, {} per page, total): {:.0}/s sequential, mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs, {:.1} EOBs per search",
            bluegate_store::fhir::DEFAULT_COUNT,
            s.per_sec,
            s.mean_us,
            s.p50_us,
            s.p99_us,
            found as f64 / patients.len() as f64
        );
        // Throughput with concurrent searches.
        let patients = Arc::new(patients);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..a.concurrency {
            let (store, patients, next) = (store.clone(), patients.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat: Vec<Duration> = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = patients.get(i) else { break };
                    let t = Instant::now();
                    store.search(&eob_query(p)?).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let s = crate::bench::stats(lat, start.elapsed());
        println!(
            "search       same, {} concurrent: {:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
            a.concurrency, s.per_sec, s.p50_us, s.p99_us
        );
        if let StoreLocation::Sqlite(p) = &location {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            println!("store        {:.0} MB on disk", size as f64 / 1e6);
        }
        drop(store);
        drop(tmp);
        Ok(())
    }
}
