//! The subcommands on the local repository: import, log, ls, cat, objects, export, diff and
//! verify.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use format::{Activation, Digest, Entry, EntryKind, GenSpec, ImageName, Stats};

use api::affected::{AffectedQuery, AffectedRow};

use super::CommandError;
use crate::analysis::{self, SecuritySummary};
use crate::browse::{self, display_bytes, Located, ReadError};
use crate::diff::{self, Change, PackageChange};
use crate::import::ImportOptions;
use crate::remote::Remote;
use crate::verify::{self, VerifyReport};
use crate::{export, Generation, Repo, RepoError};

/// What `import` did (`imgctl import --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportOutput {
    /// `IMAGE@N`.
    pub generation: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The root tree.
    pub root: Digest,
    /// The previous generation's manifest.
    pub parent: Option<Digest>,
    /// Counts taken at import.
    pub stats: Stats,
    /// The zstd dictionary of the generation's small files.
    pub dictionary: Option<Digest>,
    /// Files whose content was read.
    pub files_read: u64,
    /// Files taken unchanged from the incremental index.
    pub files_reused: u64,
    /// Bytes of content read.
    pub read_bytes: u64,
    /// Compressed bytes newly written to the store.
    pub stored_bytes: u64,
    /// How long it took.
    pub seconds: f64,
}

/// Imports `src` as the next generation of `opts.image`.
pub fn import(repo: &Repo, src: &Path, opts: &ImportOptions) -> Result<ImportOutput, CommandError> {
    let start = Instant::now();
    let report = crate::import::import(repo, src, opts).map_err(|source| CommandError::Import { src: src.to_path_buf(), source })?;
    let g = &report.generation;
    Ok(ImportOutput {
        generation: g.label(),
        manifest: g.digest,
        root: g.manifest.root,
        parent: g.manifest.parent,
        stats: g.manifest.stats,
        dictionary: crate::dictionary::digest_of(&g.manifest),
        files_read: report.files_read,
        files_reused: report.files_reused,
        read_bytes: report.read_bytes,
        stored_bytes: report.stored_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One generation of `log`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    /// `IMAGE@N`.
    pub generation: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The root tree.
    pub root: Digest,
    /// The previous generation's manifest.
    pub parent: Option<Digest>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The engineer's message.
    pub message: String,
    /// Counts taken at import.
    pub stats: Stats,
    /// Classification and activation from the change record (`emergency reboot`), `-` without.
    pub change: String,
}

impl LogEntry {
    fn of(g: &Generation) -> LogEntry {
        LogEntry {
            generation: g.label(),
            manifest: g.digest,
            root: g.manifest.root,
            parent: g.manifest.parent,
            created: g.manifest.created,
            message: g.manifest.message.clone(),
            stats: g.manifest.stats,
            change: super::gate::change_summary(&g.manifest),
        }
    }
}

/// Every generation of `image`, newest first.
pub fn log(repo: &Repo, image: &ImageName) -> Result<Vec<LogEntry>, CommandError> {
    let numbers = repo.numbers(image)?;
    if numbers.is_empty() {
        return Err(RepoError::NotFound(image.to_string()).into());
    }
    let mut rows = Vec::new();
    for n in numbers.iter().rev() {
        rows.push(LogEntry::of(&repo.resolve(&GenSpec::Number(image.clone(), *n))?));
    }
    Ok(rows)
}

/// The entries of the directory `path` names in `generation`, or the one entry it names.
pub fn list(repo: &Repo, generation: &GenSpec, path: &str) -> Result<Vec<Entry>, CommandError> {
    let g = repo.resolve(generation)?;
    Ok(match browse::locate(&repo.store, &g.manifest, path.as_bytes())? {
        Located::Root(_, digest) => browse::load_tree(&repo.store, &digest)?.entries,
        Located::Entry(e) => match &e.kind {
            EntryKind::Directory { tree } => browse::load_tree(&repo.store, tree)?.entries,
            _ => vec![e],
        },
    })
}

/// One entry as `ls --json` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedEntry {
    /// Name (bytes that are not UTF-8 as `\xNN`).
    pub name: String,
    /// `-`, `d`, `l`, `c`, `b`, `p` or `s`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits, four octal digits.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Nanoseconds of it.
    pub mtime_nsec: u32,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl From<&Entry> for ListedEntry {
    fn from(e: &Entry) -> ListedEntry {
        ListedEntry {
            name: display_bytes(&e.name),
            kind: e.kind.letter().to_string(),
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size(),
            mtime: e.mtime_sec,
            mtime_nsec: e.mtime_nsec,
            target: match &e.kind {
                EntryKind::Symlink { target } => Some(display_bytes(target)),
                _ => None,
            },
        }
    }
}

/// Writes the content of the file `path` of `generation` to `out`.
pub fn cat(repo: &Repo, generation: &GenSpec, path: &str, out: &mut dyn Write) -> Result<(), CommandError> {
    let g = repo.resolve(generation)?;
    match browse::locate(&repo.store, &g.manifest, path.as_bytes())? {
        Located::Entry(e) => Ok(browse::write_content(&repo.store, &e, out)?),
        Located::Root(..) => Err(ReadError::NotAFile("/".into()).into()),
    }
}

/// An object a generation reaches, as `objects` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectRow {
    /// The object.
    pub digest: Digest,
    /// Bytes it takes in the store.
    pub stored_bytes: u64,
}

/// Every object `generation` reaches, its manifest first.
pub fn objects(repo: &Repo, generation: &GenSpec) -> Result<Vec<ObjectRow>, CommandError> {
    let g = repo.resolve(generation)?;
    let mut all = vec![g.digest];
    all.extend(crate::push::reachable(&repo.store, &g)?);
    Ok(all.into_iter().map(|digest| ObjectRow { digest, stored_bytes: repo.store.stored_len(&digest).unwrap_or(0) }).collect())
}

/// What `export` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportOutput {
    /// `IMAGE@N`.
    pub generation: String,
    /// Entries created.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// Where it went.
    #[serde(skip)]
    pub dest: std::path::PathBuf,
}

/// Writes a checkout of `generation` to `dest`.
pub fn export(repo: &Repo, generation: &GenSpec, dest: &Path) -> Result<ExportOutput, CommandError> {
    let g = repo.resolve(generation)?;
    let start = Instant::now();
    let r = export::export(&repo.store, &g, dest).map_err(|source| CommandError::Export {
        generation: g.label(),
        dest: dest.to_path_buf(),
        source,
    })?;
    Ok(ExportOutput {
        generation: g.label(),
        entries: r.entries,
        bytes: r.bytes,
        seconds: start.elapsed().as_secs_f64(),
        dest: dest.to_path_buf(),
    })
}

/// What changed between two generations (`diff`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffOutput {
    /// The older, `IMAGE@N`.
    pub from: String,
    /// The newer, `IMAGE@N`.
    pub to: String,
    /// Changed paths, in path order.
    pub changes: Vec<Change>,
    /// Package changes, when both generations have a dpkg status file.
    pub packages: Option<Vec<PackageChange>>,
    /// What an endpoint must do to activate `to` when it comes from `from`.
    pub activation: DerivedActivation,
    /// What the change means for security (always present, possibly all empty).
    pub security: SecuritySummary,
}

/// The activation policy derived from a diff, with its reasons.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DerivedActivation {
    /// `live`, `restart` (with its units) or `reboot`.
    pub policy: Activation,
    /// One line per path that decided it.
    pub why: Vec<String>,
}

/// Compares `from` with `to`.
pub fn diff(repo: &Repo, from: &GenSpec, to: &GenSpec) -> Result<DiffOutput, CommandError> {
    let a = repo.resolve(from)?;
    let b = repo.resolve(to)?;
    let changes = diff::diff(&repo.store, &a.manifest, &b.manifest)?;
    let packages = match (diff::installed_packages(&repo.store, &a.manifest)?, diff::installed_packages(&repo.store, &b.manifest)?) {
        (Some(pa), Some(pb)) => Some(diff::package_changes(&pa, &pb)),
        _ => None,
    };
    let (policy, why) = analysis::derive_activation(&repo.store, &a.manifest, &b.manifest)?;
    let security = analysis::security_summary(&repo.store, &a.manifest, &b.manifest)?;
    Ok(DiffOutput { from: a.label(), to: b.label(), changes, packages, activation: DerivedActivation { policy, why }, security })
}

/// Checks the store, repairing it unless `dry_run`.
pub fn verify(repo: &Repo, dry_run: bool) -> Result<VerifyReport, CommandError> {
    Ok(verify::verify(repo, !dry_run)?)
}

/// What `affected` looks for in every generation.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Package name, source package name or path, as the server's query takes them.
    pub query: AffectedQuery,
    /// With a package query: only versions lower than this count (Debian's version ordering).
    pub below: Option<debversion::Version>,
}

impl Wanted {
    /// Keeps the packages below `below`; false when none is left (the row goes).
    fn keep(&self, row: &mut AffectedRow) -> bool {
        if self.query.path.is_some() {
            return true;
        }
        if let Some(below) = &self.below {
            row.packages.retain(|p| p.version.parse::<debversion::Version>().is_ok_and(|v| v < *below));
        }
        !row.packages.is_empty()
    }
}

/// Every generation that carries `wanted`, in image and number order: of the local store, or
/// with `remote`, of the server (with the channels that name them).
pub fn affected(repo: &Repo, remote: Option<&Remote>, wanted: &Wanted) -> Result<Vec<AffectedRow>, CommandError> {
    let mut rows = match remote {
        Some(r) => r.affected(&wanted.query)?.rows,
        None => local_affected(repo, &wanted.query)?,
    };
    rows.retain_mut(|r| wanted.keep(r));
    Ok(rows)
}

fn local_affected(repo: &Repo, q: &AffectedQuery) -> Result<Vec<AffectedRow>, CommandError> {
    let mut rows = Vec::new();
    for image in repo.images()? {
        for n in repo.numbers(&image)? {
            let g = repo.resolve(&GenSpec::Number(image.clone(), n))?;
            let found = browse::carries(&repo.store, &g.manifest, q.package.as_deref(), q.source.as_deref(), q.path.as_deref(), q.digest.as_ref())?;
            let Some(packages) = found else { continue };
            rows.push(AffectedRow { generation: g.label(), manifest: g.digest, packages, channels: Vec::new(), endpoints: Vec::new() });
        }
    }
    Ok(rows)
}
