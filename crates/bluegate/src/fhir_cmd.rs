//! `bluegate fhir import`: load FHIR R4 JSON (a resource, a Bundle, or NDJSON) into the built-in store,
//! in all-or-nothing batches, streaming NDJSON line by line so memory stays flat for any file size.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use bluegate_server::serve;
use bluegate_store::fhir::{
    prepare, render_batch_ahead, BodyDict, BodyEncoding, PreparedResource, ResourceType,
};
use bluegate_store::{Store, StoreError};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ConfigArg;

/// Most resources per import transaction.
pub const MAX_IMPORT_BATCH: usize = 10_000;

#[derive(clap::Subcommand)]
pub enum FhirCmd {
    /// Import FHIR R4 JSON files: a single resource, a Bundle (its entries' resources), or NDJSON
    /// (`.ndjson`, one resource per line). Each batch is imported whole or not at all. Into an empty
    /// store, the search indexes are built at the end (searches scan until then), and SQLite learns a
    /// compression dictionary per resource type from the first batches.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// Files to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Resources per transaction (at most 10000).
        #[arg(long, default_value_t = 2000)]
        batch: usize,
    },
    /// Generate synthetic CARIN BB 2.0.0 data as NDJSON: members (Patient, Coverage, some
    /// RelatedPersons), payer and provider Organizations, Practitioners, and ExplanationOfBenefits of
    /// every CARIN profile. The same seed and arguments give byte-identical output.
    Generate {
        /// Members (patients) to generate.
        #[arg(long)]
        members: u64,
        /// Seed of the pseudo-random generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// ExplanationOfBenefits per member.
        #[arg(long, default_value_t = 20)]
        eobs_per_member: u32,
        /// Prefix of the generated ids (`PREFIX-pat-0`, `PREFIX-eob-0`, ...).
        #[arg(long, default_value = "syn")]
        id_prefix: String,
        /// Output file (`-` for standard output). An existing file is replaced.
        #[arg(long, default_value = "-")]
        out: PathBuf,
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

/// Where a resource came from: a file (index into the paths) and its line (NDJSON) or entry (Bundle).
#[derive(Clone, Copy)]
enum Origin {
    Line(usize, usize),
    Entry(usize, usize),
    File(usize),
}

/// Names an [`Origin`] for messages.
struct Names<'a>(&'a [String]);

impl Names<'_> {
    fn of(&self, o: Origin) -> String {
        let name = |i: usize| self.0.get(i).map(String::as_str).unwrap_or("?");
        match o {
            Origin::Line(f, l) => format!("{} line {l}", name(f)),
            Origin::Entry(f, e) => format!("{} entry {e}", name(f)),
            Origin::File(f) => name(f).to_owned(),
        }
    }
}

/// Cheap checks that say plainly what is wrong with a resource the store refused: a JSON object
/// with a resourceType and an id.
fn precheck(text: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Min<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<&'a str>,
        #[serde(borrow)]
        id: Option<&'a str>,
    }
    let m: Min<'_> = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    if m.resource_type.is_none() {
        return Err("no resourceType".into());
    }
    if m.id.is_none_or(str::is_empty) {
        return Err("no id".into());
    }
    Ok(())
}

/// A batch parsed and indexed by the reading thread, ready for one transaction.
struct Batch {
    resources: Vec<PreparedResource>,
    /// Dictionaries learned from this batch, to install before it is written.
    learned: Vec<(ResourceType, &'static BodyDict)>,
    first: Origin,
    last: Origin,
}

/// The reading side of an import: reads the inputs, parses and indexes each resource (off the async
/// runtime, so parsing overlaps with the database writing the previous batch), and hands over
/// batches through a bounded channel.
struct Reader {
    batch: usize,
    /// How the store keeps texts: each batch is rendered for it here, off the writer's path (and the
    /// store's dictionaries are learned here, from the first batches).
    encoding: BodyEncoding,
    pending: Vec<PreparedResource>,
    first: Option<Origin>,
    last: Option<Origin>,
    tx: tokio::sync::mpsc::Sender<Batch>,
    names: Vec<String>,
}

/// The writer hung up (it failed; its error is the one to report).
struct Stopped;

impl Reader {
    fn push(&mut self, text: String, origin: Origin) -> anyhow::Result<Result<(), Stopped>> {
        let prepared = match prepare(text) {
            Ok(p) => p,
            Err(e) => {
                // Name the problem plainly when it is a basic one, else as the store put it.
                let reason = precheck(&e.text).err().unwrap_or_else(|| match &e.error {
                    StoreError::Invalid(m) => m.clone(),
                    other => other.to_string(),
                });
                bail!("{}: {reason}", Names(&self.names).of(origin));
            }
        };
        self.first.get_or_insert(origin);
        self.last = Some(origin);
        self.pending.push(prepared);
        if self.pending.len() >= self.batch {
            return self.flush();
        }
        Ok(Ok(()))
    }

    fn flush(&mut self) -> anyhow::Result<Result<(), Stopped>> {
        let (Some(first), Some(last)) = (self.first.take(), self.last.take()) else {
            return Ok(Ok(()));
        };
        let mut resources = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        let names = Names(&self.names);
        let learned = render_batch_ahead(
            &mut resources,
            time::OffsetDateTime::now_utc(),
            &mut self.encoding,
        )
        .with_context(|| format!("{} .. {}", names.of(first), names.of(last)))?;
        Ok(self
            .tx
            .blocking_send(Batch {
                resources,
                learned,
                first,
                last,
            })
            .map_err(|_| Stopped))
    }

    fn ndjson(&mut self, f: usize, input: impl BufRead) -> anyhow::Result<Result<(), Stopped>> {
        let name = self.names[f].clone();
        for (i, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("{name}: reading line {}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            if let Err(Stopped) = self.push(line, Origin::Line(f, i + 1))? {
                return Ok(Err(Stopped));
            }
        }
        Ok(Ok(()))
    }

    fn file(&mut self, f: usize, path: &Path) -> anyhow::Result<Result<(), Stopped>> {
        let name = self.names[f].clone();
        if path == Path::new("-") {
            return self.ndjson(f, std::io::stdin().lock());
        }
        let is_ndjson = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ndjson"));
        if is_ndjson {
            let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
            return self.ndjson(f, std::io::BufReader::with_capacity(1 << 20, file));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
        let head: Head<'_> =
            serde_json::from_str(&text).with_context(|| format!("{name}: not a JSON object"))?;
        if head.resource_type == Some("Bundle") {
            let bundle: Bundle<'_> = serde_json::from_str(&text)
                .with_context(|| format!("{name}: not a valid Bundle"))?;
            for (i, e) in bundle.entry.iter().enumerate() {
                let Some(r) = e.resource else {
                    bail!("{name} entry {i}: no resource");
                };
                if let Err(Stopped) = self.push(r.get().to_string(), Origin::Entry(f, i))? {
                    return Ok(Err(Stopped));
                }
            }
            Ok(Ok(()))
        } else {
            if let Err(e) = precheck(&text) {
                bail!("{name}: {e}");
            }
            self.push(text, Origin::File(f))
        }
    }

    fn run(mut self, paths: &[PathBuf]) -> anyhow::Result<()> {
        for (f, p) in paths.iter().enumerate() {
            if let Err(Stopped) = self.file(f, p)? {
                return Ok(());
            }
        }
        let _ = self.flush()?;
        Ok(())
    }
}

/// What an import did.
pub struct ImportReport {
    pub total: u64,
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub seconds: f64,
}

/// Imports `paths` (`-` is NDJSON on standard input) into `store` in transactions of `batch`
/// resources. Parsing runs on its own thread, one batch ahead of the database.
pub async fn import(
    store: &dyn Store,
    paths: &[PathBuf],
    batch: usize,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let reader = Reader {
        batch,
        encoding: store.body_encoding(),
        pending: Vec::with_capacity(batch),
        first: None,
        last: None,
        tx,
        names: names.clone(),
    };
    let owned_paths = paths.to_vec();
    let reading = std::thread::Builder::new()
        .name("fhir-import-read".into())
        .spawn(move || reader.run(&owned_paths))
        .context("starting the reading thread")?;
    let start = Instant::now();
    // Into an empty store, rows are appended without the search indexes, which are built at the end
    // (also when a batch fails: the store is left searchable).
    let deferred = store.defer_search_indexes().await?;
    let mut report = ImportReport {
        total: 0,
        counts: Default::default(),
        seconds: 0.0,
    };
    let mut failure: Option<anyhow::Error> = None;
    while let Some(b) = rx.recv().await {
        let mut counts: Vec<(&'static str, u64)> = Vec::new();
        for r in &b.resources {
            let t = r.resource_type().as_str();
            match counts.iter_mut().find(|(n, _)| *n == t) {
                Some((_, c)) => *c += 1,
                None => counts.push((t, 1)),
            }
        }
        let n = b.resources.len() as u64;
        let names = Names(&names);
        let written = async {
            for (rt, dict) in b.learned {
                store.install_body_dictionary(rt, dict).await?;
            }
            store
                .put_prepared(b.resources, time::OffsetDateTime::now_utc())
                .await
        }
        .await;
        match written {
            Ok(_) => {}
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context(format!(
                    "batch {} .. {} was not imported",
                    names.of(b.first),
                    names.of(b.last)
                )));
                break;
            }
        }
        let before = report.total;
        report.total += n;
        for (t, c) in counts {
            *report.counts.entry(t).or_default() += c;
        }
        if progress && report.total / 100_000 != before / 100_000 {
            eprintln!("  {} resources imported", report.total);
        }
    }
    drop(rx);
    let read = reading
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
    // Also after an earlier import that was interrupted before it could build them.
    if deferred && progress {
        eprintln!("  building the search indexes");
    }
    let built = store
        .build_search_indexes()
        .await
        .context("building the search indexes (the server builds them at its next start)");
    // A failed batch is the error to report; the index build's own failure comes second.
    if failure.is_none() {
        built?;
    } else if let Err(e) = built {
        eprintln!("{e:#}");
    }
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// `bluegate fhir generate`: streams the synthetic data set to a file or standard output.
fn generate(
    opts: bluegate_store::fhir::synthetic::SyntheticOptions,
    out: &Path,
) -> anyhow::Result<()> {
    use bluegate_store::fhir::synthetic::{write_ndjson, Synthetic};
    // Refuse bad options before creating the output file.
    Synthetic::new(opts.clone())?;
    let start = Instant::now();
    let counts = if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        write_ndjson(opts, &mut w).context("generating to standard output")?
    } else {
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let counts = write_ndjson(opts, &mut w)
            .with_context(|| format!("generating to {}", out.display()))?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", out.display()))?;
        counts
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "generated {} resources in {:.1} s ({:.0}/s)",
        counts.total,
        secs,
        counts.total as f64 / secs.max(1e-9)
    );
    for (t, n) in &counts.by_type {
        eprintln!("  {t:<22} {n}");
    }
    Ok(())
}

pub async fn run(cmd: FhirCmd) -> anyhow::Result<()> {
    match cmd {
        FhirCmd::Generate {
            members,
            seed,
            eobs_per_member,
            id_prefix,
            out,
        } => {
            let opts = bluegate_store::fhir::synthetic::SyntheticOptions {
                seed,
                id_prefix,
                eobs_per_member,
                ..bluegate_store::fhir::synthetic::SyntheticOptions::numbered(members, seed)
            };
            tokio::task::spawn_blocking(move || generate(opts, &out)).await?
        }
        FhirCmd::Import {
            config,
            paths,
            batch,
        } => {
            let cfg = config.load()?;
            let store = serve::open_store(&cfg).await?;
            let report = import(
                store.as_ref(),
                &paths,
                batch.clamp(1, MAX_IMPORT_BATCH),
                true,
            )
            .await?;
            println!(
                "imported {} resources in {:.1} s ({:.0}/s)",
                report.total,
                report.seconds,
                report.total as f64 / report.seconds.max(1e-9)
            );
            for (t, n) in &report.counts {
                println!("  {t:<22} {n}");
            }
            Ok(())
        }
    }
}
