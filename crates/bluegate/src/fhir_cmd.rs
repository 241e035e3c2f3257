//! `bluegate fhir import`: load FHIR R4 JSON (a resource, a Bundle, or NDJSON) into the built-in store,
//! in all-or-nothing batches, streaming NDJSON line by line so memory stays flat for any file size.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use bluegate_server::serve;
use bluegate_store::Store;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ConfigArg;

#[derive(clap::Subcommand)]
pub enum FhirCmd {
    /// Import FHIR R4 JSON files: a single resource, a Bundle (its entries' resources), or NDJSON
    /// (`.ndjson`, one resource per line). Each batch is imported whole or not at all.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// Files to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Resources per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<&'a str>,
}

#[derive(Deserialize)]
struct Bundle<'a> {
    #[serde(borrow, default)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
}

/// A resource waiting to be stored, with where it came from (for error messages).
struct Item {
    text: String,
    origin: String,
}

/// Cheap checks that name the bad resource before a batch is sent: a JSON object with a resourceType and
/// an id. The store does the full validation.
fn precheck(item: &Item) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Min<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<&'a str>,
        #[serde(borrow)]
        id: Option<&'a str>,
    }
    let m: Min<'_> = serde_json::from_str(&item.text)
        .with_context(|| format!("{}: not a JSON object", item.origin))?;
    if m.resource_type.is_none() {
        bail!("{}: no resourceType", item.origin);
    }
    if m.id.is_none_or(str::is_empty) {
        bail!("{}: no id", item.origin);
    }
    Ok(())
}

struct Importer<'a> {
    store: &'a dyn Store,
    batch: usize,
    pending: Vec<Item>,
    counts: std::collections::BTreeMap<String, u64>,
    total: u64,
}

impl Importer<'_> {
    async fn push(&mut self, item: Item) -> anyhow::Result<()> {
        precheck(&item)?;
        self.pending.push(item);
        if self.pending.len() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = self.pending.iter().map(|i| i.text.clone()).collect();
        let first = self
            .pending
            .first()
            .map(|i| i.origin.clone())
            .unwrap_or_default();
        let last = self
            .pending
            .last()
            .map(|i| i.origin.clone())
            .unwrap_or_default();
        let stored = self
            .store
            .put_batch(&texts, time::OffsetDateTime::now_utc())
            .await
            .with_context(|| format!("batch {first} .. {last} was not imported"))?;
        for r in stored {
            *self
                .counts
                .entry(r.resource_type.as_str().to_string())
                .or_default() += 1;
            self.total += 1;
        }
        self.pending.clear();
        if self.total % 10_000 < self.batch as u64 {
            eprintln!("  {} resources imported", self.total);
        }
        Ok(())
    }
}

async fn import_file(imp: &mut Importer<'_>, path: &Path) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let is_ndjson = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ndjson"));
    if is_ndjson {
        let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{name}: reading line {}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            imp.push(Item {
                text: line,
                origin: format!("{name} line {}", i + 1),
            })
            .await?;
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    let head: Head<'_> =
        serde_json::from_str(&text).with_context(|| format!("{name}: not a JSON object"))?;
    if head.resource_type == Some("Bundle") {
        let bundle: Bundle<'_> =
            serde_json::from_str(&text).with_context(|| format!("{name}: not a valid Bundle"))?;
        for (i, e) in bundle.entry.iter().enumerate() {
            let Some(r) = e.resource else {
                bail!("{name} entry {i}: no resource");
            };
            imp.push(Item {
                text: r.get().to_string(),
                origin: format!("{name} entry {i}"),
            })
            .await?;
        }
    } else {
        imp.push(Item { text, origin: name }).await?;
    }
    Ok(())
}

pub async fn run(cmd: FhirCmd) -> anyhow::Result<()> {
    match cmd {
        FhirCmd::Import {
            config,
            paths,
            batch,
        } => {
            let cfg = config.load()?;
            let store = serve::open_store(&cfg).await?;
            let batch = batch.clamp(1, 1000);
            let mut imp = Importer {
                store: store.as_ref(),
                batch,
                pending: Vec::new(),
                counts: Default::default(),
                total: 0,
            };
            let start = Instant::now();
            for p in &paths {
                import_file(&mut imp, p).await?;
            }
            imp.flush().await?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "imported {} resources in {:.1} s ({:.0}/s)",
                imp.total,
                secs,
                imp.total as f64 / secs.max(1e-9)
            );
            for (t, n) in &imp.counts {
                println!("  {t:<22} {n}");
            }
            Ok(())
        }
    }
}
