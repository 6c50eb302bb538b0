//! `imaged-conformance-client`: a TUF client speaking the tuf-conformance suite's
//! client-under-test protocol (`init`, `refresh`, `download`), built on the same
//! verification core (`trust`) as imgfs, so that an independent suite can check it.
//! Metadata is kept in `--metadata-dir` under unversioned names with the exact bytes
//! received; exit 0 on success, 1 on any failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cache::trusted_dir::TrustedDir;
use clap::{Parser, Subcommand};
use trust::client::{Limits, Trusted};
use trust::sign::target_file;

use trust::update::{self, Remote};

#[derive(Parser, Debug)]
#[command(name = "imaged-conformance-client", version, about = "A TUF client for the tuf-conformance test suite")]
struct Cli {
    /// Where trusted metadata is kept.
    #[arg(long, global = true)]
    metadata_dir: Option<PathBuf>,
    /// The repository's metadata URL.
    #[arg(long, global = true)]
    metadata_url: Option<String>,
    /// A target path to download (repeat: processed in order, with one updater; already
    /// downloaded targets whose bytes match are not fetched again).
    #[arg(long = "target-name", global = true)]
    target_names: Vec<String>,
    /// The repository's targets URL.
    #[arg(long, global = true)]
    target_base_url: Option<String>,
    /// Where downloaded targets go.
    #[arg(long, global = true)]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    /// Start trusting ROOT (copied into the metadata directory; nothing is fetched).
    Init {
        /// The initial trusted root.json.
        root: PathBuf,
    },
    /// Update the top-level metadata.
    Refresh,
    /// Update, then download and verify --target-name into --target-dir.
    Download,
}

/// HTTP GETs under a base URL, with deadlines and a size cap on every answer.
struct Http {
    base: String,
    client: reqwest::blocking::Client,
}

impl Http {
    fn new(base: &str) -> Result<Http> {
        let client =
            reqwest::blocking::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(30)).build()?;
        Ok(Http { base: base.trim_end_matches('/').to_string(), client })
    }

    fn get(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        let url = format!("{}/{name}", self.base);
        let resp = self.client.get(&url).send().map_err(|e| format!("{url}: {e}"))?;
        if matches!(resp.status().as_u16(), 403 | 404) {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("{url}: answered {}", resp.status()));
        }
        let mut body = Vec::new();
        resp.take(max + 1).read_to_end(&mut body).map_err(|e| format!("{url}: {e}"))?;
        if body.len() as u64 > max {
            return Err(format!("{url}: more than the {max} bytes allowed"));
        }
        Ok(Some(body))
    }
}

impl Remote for Http {
    fn fetch(&mut self, name: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        self.get(name, max as u64)
    }
}

/// The trusted state from the metadata directory, and the directory's files.
fn load(dir: &Path) -> Result<(Trusted, TrustedDir)> {
    let files = TrustedDir::open(dir, &[])?;
    let root = files.root().with_context(|| format!("no trusted root in {}", dir.display()))?;
    let trusted = update::load(root, &files.others(), Limits::default())?;
    Ok((trusted, files))
}

/// The target file name in the target directory: the target path with every byte outside
/// `[A-Za-z0-9._~-]` percent-encoded.
fn local_name(target: &str) -> String {
    trust::sign::encode_role(target)
}

fn run(cli: Cli) -> Result<()> {
    let dir = cli.metadata_dir.context("--metadata-dir is required")?;
    match cli.command {
        Op::Init { root } => {
            std::fs::create_dir_all(&dir)?;
            let bytes = std::fs::read(&root).with_context(|| format!("reading {}", root.display()))?;
            Trusted::new(&bytes, Limits::default()).context("the initial root does not verify")?;
            Ok(cache::atomic::write(&dir.join("root.json"), &bytes)?)
        }
        Op::Refresh => {
            let mut http = Http::new(&cli.metadata_url.context("--metadata-url is required")?)?;
            let (mut t, mut files) = load(&dir)?;
            let result = update::refresh(&mut t, &mut http, cache::clock::now());
            files.persist(&t)?;
            Ok(result?)
        }
        Op::Download => {
            let mut http = Http::new(&cli.metadata_url.context("--metadata-url is required")?)?;
            if cli.target_names.is_empty() {
                bail!("--target-name is required");
            }
            let base = cli.target_base_url.context("--target-base-url is required")?;
            let target_dir = cli.target_dir.context("--target-dir is required")?;
            let (mut t, mut files) = load(&dir)?;
            let time = cache::clock::now();
            let refreshed = update::refresh(&mut t, &mut http, time);
            files.persist(&t)?;
            refreshed?;
            // One updater for every target, in the order given; the first failure is reported
            // after the rest were tried (exit 1 if any failed).
            let mut failed = None;
            for name in &cli.target_names {
                let result = download(&mut t, &mut http, &base, &target_dir, name, time);
                files.persist(&t)?;
                if let Err(e) = result {
                    eprintln!("imaged-conformance-client: {name}: {e:#}");
                    failed.get_or_insert(e);
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

/// Finds target `name` in the trusted metadata (loading delegations as the search needs them)
/// and downloads it into `target_dir`, unless the file there already matches.
fn download(t: &mut Trusted, http: &mut Http, base: &str, target_dir: &Path, name: &str, time: i64) -> Result<()> {
    let Some((file, _role)) = update::find(t, http, name, time)? else { bail!("no trusted role lists target {name}") };
    let dest = target_dir.join(local_name(name));
    if std::fs::read(&dest).is_ok_and(|b| trust::client::target_matches(&b, &file)) {
        return Ok(());
    }
    let remote_name = match (t.root().consistent_snapshot, file.hashes.get("sha256").or(file.hashes.values().next())) {
        (true, Some(hash)) => target_file(name, hash),
        _ => name.to_string(),
    };
    let bytes =
        Http::new(base)?.get(&remote_name, file.length).map_err(anyhow::Error::msg)?.with_context(|| format!("the repository has no {remote_name}"))?;
    if !trust::client::target_matches(&bytes, &file) {
        bail!("{name}: the downloaded file does not match its signed length and hashes");
    }
    std::fs::create_dir_all(target_dir)?;
    Ok(cache::atomic::write(&dest, &bytes)?)
}

fn main() {
    cache::seams::warn_if_set("imaged-conformance-client");
    match run(Cli::parse()) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("imaged-conformance-client: {e:#}");
            std::process::exit(1);
        }
    }
}
