//! `imgctl patch`: generation N+1 made from N in a sandbox, committing only what changed.
//!
//! The base is mounted read-only from the local store (FUSE, every object verified when read),
//! an overlayfs layer goes over it, each step runs in the sandbox (`sandbox.rs`), and the upper
//! layer is committed over the base's trees (`commit.rs`). The work directory
//! `STORE/work/patch-PID/` holds the layer and the log and is locked while a run uses it; a
//! run that was killed leaves it unlocked, and the next patch or test removes it. Mounts never
//! outlive the process (private mount namespace). Objects, then the manifest, then the ref are
//! written, as at import: a crash before the ref leaves no generation.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use format::{ChangeRecord, Digest, GenSpec, Manifest, Meta, PatchRecord, Step, StepKind};

use crate::commit::{commit_upper, Committed, Exclude};
use crate::dictionary;
use crate::ingest::{Counters, Storing};
use crate::repo::{Generation, Repo, RepoError};
use crate::sandbox::{self, Outcome, RunOptions, SandboxError};
use crate::ImportError;

/// Paths a package manager changes that no image should carry; left out unless `--keep-volatile`.
pub const VOLATILE: [&str; 6] = [
    "var/lib/apt/lists/*",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/apt/*.bin",
    "tmp/*",
    "run/*",
];

/// One thing a patch does, in order.
#[derive(Debug, Clone)]
pub enum StepSpec {
    /// `sh -c` this in the sandbox.
    Run(String),
    /// Unpack this tar archive (plain, gzip or zstd) over the root, inside the sandbox.
    ApplyTar(PathBuf),
    /// Copy this directory's contents over the root, inside the sandbox.
    ApplyDir(PathBuf),
}

/// What to patch and how.
pub struct PatchOptions {
    /// The steps.
    pub steps: Vec<StepSpec>,
    /// Commands get the host's network.
    pub network: bool,
    /// More globs to leave out (relative to the root).
    pub exclude: Vec<String>,
    /// Commit the volatile paths too.
    pub keep_volatile: bool,
    /// Message of the new generation.
    pub message: String,
    /// The change record (its activation is derived unless `activation_override`).
    pub change: ChangeRecord,
    /// Creation time to record.
    pub created: i64,
    /// Copy the steps' output to standard error as it comes.
    pub echo: bool,
    /// Kill a step after this long.
    pub step_timeout: Option<Duration>,
}

/// What a patch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchReport {
    /// `IMAGE@N` of the new generation.
    pub generation: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// `IMAGE@N` of the base.
    pub base: String,
    /// The steps with their exit statuses and durations.
    pub steps: Vec<Step>,
    /// Paths the steps changed that were left out.
    pub excluded: Vec<String>,
    /// How many paths the layer added, changed or deleted.
    pub changed_paths: usize,
    /// Files of the layer whose content was read at commit.
    pub files_read: u64,
    /// Objects new to the store, and their compressed bytes.
    pub new_objects: u64,
    /// Compressed bytes written.
    pub stored_bytes: u64,
    /// The log object.
    pub log: Digest,
    /// Milliseconds of the commit step alone (after the last command).
    pub commit_ms: u64,
    /// Milliseconds in all.
    pub total_ms: u64,
}

/// Why a patch failed. No generation exists afterwards.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The local repository failed (the base not found, say).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The base could not be mounted.
    #[error("mounting the base {base}")]
    Mount {
        /// `IMAGE@N`.
        base: String,
        /// The cause.
        #[source]
        source: ::fs::startup::MountError,
    },
    /// A step failed; its log is kept at `log`.
    #[error("step {index} ({text}) {}; no generation was made; log: {}", if *timed_out { "timed out".to_string() } else { format!("exited with status {exit}") }, log.display())]
    StepFailed {
        /// 1-based step number.
        index: usize,
        /// The step as given.
        text: String,
        /// Its exit status.
        exit: i32,
        /// Killed at the timeout.
        timed_out: bool,
        /// Where the log was kept.
        log: PathBuf,
    },
    /// An input of a step could not be read.
    #[error("reading {path}")]
    Input {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An `--exclude` pattern is not a glob.
    #[error("bad --exclude pattern")]
    Exclude(#[from] globset::Error),
    /// The work directory failed.
    #[error("work directory {path}")]
    Work {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Committing the layer failed.
    #[error("committing the patch")]
    Commit(#[from] ImportError),
}

/// A locked work directory under `STORE/work/`.
struct Workspace {
    dir: PathBuf,
    _lock: File,
}

impl Workspace {
    fn create(repo: &Repo, kind: &str) -> Result<Workspace, PatchError> {
        let base = repo.root().join("work");
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PatchError::Work { path, source }
        };
        fs::create_dir_all(&base).map_err(err(&base))?;
        clean_stale(&base);
        let dir = base.join(format!("{kind}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(err(&dir))?;
        }
        fs::create_dir(&dir).map_err(err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(err(&dir))?;
        let lock = File::create(dir.join("lock")).map_err(err(&dir))?;
        if !try_lock(&lock) {
            return Err(PatchError::Work { path: dir, source: io::Error::last_os_error() });
        }
        for sub in ["lower", "upper", "work", "merged"] {
            fs::create_dir(dir.join(sub)).map_err(err(&dir))?;
        }
        Ok(Workspace { dir, _lock: lock })
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        sandbox::unmount(&self.path("merged"));
        sandbox::unmount(&self.path("lower"));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Takes an exclusive `flock` on `file` without waiting; false if another process holds it.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this File owns.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes work directories no running imgctl holds (a run killed with -9).
pub fn clean_stale(work: &Path) {
    let Ok(dir) = fs::read_dir(work) else { return };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(lock) = File::open(path.join("lock")) else {
            // No lock file: a directory killed before it was locked.
            let _ = fs::remove_dir_all(&path);
            continue;
        };
        if try_lock(&lock) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Gives `dir` the base root's owner, mode, attributes and times, so the overlay's root is the
/// image's root until a step changes it.
fn copy_root_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    chown(dir, Some(meta.uid), Some(meta.gid))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(u32::from(meta.mode)))?;
    for x in &meta.xattrs {
        xattr::set(dir, std::ffi::OsStr::from_bytes(&x.name), &x.value)?;
    }
    let t = nix::sys::time::TimeSpec::new(meta.mtime_sec, i64::from(meta.mtime_nsec));
    nix::sys::stat::utimensat(None, dir, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

use std::os::unix::ffi::OsStrExt;

/// The base mounted read-only with an overlay over it: where steps run.
pub struct Sandboxed {
    ws: Workspace,
    session: Option<fuser::BackgroundSession>,
    /// Paths the sandbox created in the root (mount points), left out of any commit.
    pub created: Vec<String>,
    /// The log of every step.
    pub log: Arc<Mutex<File>>,
    policy: PathBuf,
}

impl Sandboxed {
    /// Mounts `base` and an overlay over it. Call [`sandbox::private_mounts`] first.
    pub fn open(repo: &Repo, base: &Generation, kind: &str, network: bool) -> Result<Sandboxed, PatchError> {
        let ws = Workspace::create(repo, kind)?;
        let werr = |path: PathBuf| move |source| PatchError::Work { path, source };
        copy_root_meta(&ws.path("upper"), &base.manifest.root_meta).map_err(werr(ws.path("upper")))?;
        let store = Arc::new(
            cache::Store::open(repo.root()).map_err(|e| PatchError::Work { path: repo.root().to_path_buf(), source: io::Error::other(e) })?,
        );
        let session = ::fs::startup::spawn_local(store, base.digest, &base.label(), &ws.path("lower"))
            .map_err(|source| PatchError::Mount { base: base.label(), source })?;
        let mut s = Sandboxed {
            log: Arc::new(Mutex::new(File::create(ws.path("log")).map_err(werr(ws.path("log")))?)),
            policy: ws.path("policy-rc.d"),
            ws,
            session: Some(session),
            created: Vec::new(),
        };
        sandbox::mount_overlay(&s.ws.path("lower"), &s.ws.path("upper"), &s.ws.path("work"), &s.ws.path("merged"))?;
        sandbox::write_policy_rc_d(&s.policy)?;
        s.created = sandbox::prepare_root(&s.ws.path("merged"), network)?;
        Ok(s)
    }

    /// The overlay's root.
    pub fn root(&self) -> PathBuf {
        self.ws.path("merged")
    }

    /// The upper layer.
    pub fn upper(&self) -> PathBuf {
        self.ws.path("upper")
    }

    /// The log file's path.
    pub fn log_path(&self) -> PathBuf {
        self.ws.path("log")
    }

    /// Writes a line to the log (and to standard error when `echo`).
    pub fn note(&self, line: &str, echo: bool) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{line}");
        }
        if echo {
            eprintln!("{line}");
        }
    }

    /// Runs `command` in the sandbox.
    pub fn run(&self, command: &str, network: bool, timeout: Option<Duration>, stdin: Option<Box<dyn Read + Send>>, echo: bool) -> Result<Outcome, SandboxError> {
        let opts = RunOptions { network, timeout, policy_rc_d: self.policy.clone() };
        sandbox::run(&self.root(), command, &opts, stdin, self.log.clone(), echo)
    }

    /// Unmounts the overlay and the base; the upper layer and the log stay until drop.
    pub fn unmount(&mut self) {
        sandbox::unmount(&self.root());
        sandbox::unmount(&self.ws.path("lower"));
        if let Some(s) = self.session.take() {
            let _ = s.join();
        }
    }

    /// Copies the log to `STORE/logs/NAME` and returns that path.
    pub fn keep_log(&self, repo: &Repo, name: &str) -> PathBuf {
        let dir = repo.root().join("logs");
        let dest = dir.join(name);
        let _ = fs::create_dir_all(&dir).and_then(|_| fs::copy(self.log_path(), &dest));
        dest
    }
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A step's input as a plain tar stream, and its digest.
fn step_input(step: &StepSpec) -> Result<(Vec<u8>, Digest), PatchError> {
    let input_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PatchError::Input { path, source }
    };
    let bytes = match step {
        StepSpec::Run(_) => unreachable!("commands have no input"),
        StepSpec::ApplyTar(path) => {
            let raw = fs::read(path).map_err(input_err(path))?;
            if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                zstd::decode_all(&raw[..]).map_err(input_err(path))?
            } else if raw.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(input_err(path))?;
                out
            } else {
                raw
            }
        }
        StepSpec::ApplyDir(path) => {
            // GNU tar on the host reads the directory (never the image: the image's symlinks are
            // followed only inside the sandbox, by the tar that unpacks).
            let out = std::process::Command::new("tar")
                .args(["--sort=name", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-C"])
                .arg(path)
                .args(["-cf", "-", "."])
                .output()
                .map_err(input_err(path))?;
            if !out.status.success() {
                return Err(PatchError::Input { path: path.clone(), source: io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()) });
            }
            out.stdout
        }
    };
    let digest = Digest::of(&bytes);
    Ok((bytes, digest))
}

/// Run in the sandbox, whose working directory is the image's root (`/` when chrooted into
/// it, `/image` for a shell-less image).
const UNPACK: &str = "tar -xpf - --numeric-owner --xattrs --xattrs-include='*' --acls --overwrite -C .";

/// Runs the steps over `base` and commits the result as the image's next generation.
pub fn patch(repo: &Repo, base: &GenSpec, opts: &PatchOptions) -> Result<PatchReport, PatchError> {
    let start = Instant::now();
    let base = repo.resolve(base)?;
    let mut exclude: Vec<String> = opts.exclude.clone();
    if !opts.keep_volatile {
        exclude.extend(VOLATILE.iter().map(|s| s.to_string()));
    }
    let mut sb = Sandboxed::open(repo, &base, "patch", opts.network)?;
    let mut steps = Vec::new();
    let total = opts.steps.len();
    for (i, spec) in opts.steps.iter().enumerate() {
        let (kind, text, input) = match spec {
            StepSpec::Run(c) => (StepKind::Run, c.clone(), None),
            StepSpec::ApplyTar(p) => (StepKind::ApplyTar, p.display().to_string(), Some(step_input(spec)?)),
            StepSpec::ApplyDir(p) => (StepKind::ApplyDir, p.display().to_string(), Some(step_input(spec)?)),
        };
        sb.note(&format!("==> [{}/{total}] {}: {text}", i + 1, kind.as_str()), opts.echo);
        let (command, stdin, digest): (&str, Option<Box<dyn Read + Send>>, Option<Digest>) = match input {
            None => (&text, None, None),
            Some((bytes, d)) => (UNPACK, Some(Box::new(io::Cursor::new(bytes))), Some(d)),
        };
        let out = sb.run(command, opts.network, opts.step_timeout, stdin, opts.echo)?;
        sb.note(
            &format!("<== exit {}{} in {:.1} s", out.exit, if out.timed_out { " (timed out)" } else { "" }, out.duration.as_secs_f64()),
            opts.echo,
        );
        steps.push(Step { kind, text: text.clone(), input: digest, exit: out.exit, duration_ms: out.duration.as_millis() as u64 });
        if !out.success() {
            let log = sb.keep_log(repo, &format!("patch-{}-{}.log", base.label().replace('@', "-"), cache::clock::now()));
            return Err(PatchError::StepFailed { index: i + 1, text, exit: out.exit, timed_out: out.timed_out, log });
        }
    }
    sb.unmount();

    let commit_start = Instant::now();
    let exclude = Exclude::new(&exclude, &sb.created)?;
    let _lock = repo.lock()?;
    let latest = repo.resolve(&GenSpec::Latest(base.manifest.image.clone()))?;
    let level = crate::import::PATCH_LEVEL;
    let counters = Counters::default();
    let dict = dictionary::of_manifest(&repo.store, &base.manifest);
    let storing = Storing { store: &repo.store, chunking: base.manifest.chunking, level, counters: &counters, dict: dict.as_ref() };
    repo.store.start_pack().map_err(|source| ImportError::Commit { path: repo.root().join("tmp"), source })?;
    let committed: Committed = commit_upper(&base.manifest, &sb.upper(), &exclude, &storing)?;
    let log_bytes = fs::read(sb.log_path()).map_err(|source| PatchError::Work { path: sb.log_path(), source })?;
    let log = repo.store.insert(&log_bytes, level).map_err(|source| ImportError::Store { path: sb.log_path(), source })?;
    let sync_err = |source| ImportError::Commit { path: repo.root().to_path_buf(), source };
    repo.store.sync().map_err(sync_err)?;

    let record = PatchRecord {
        base: base.digest,
        base_generation: base.manifest.generation,
        network: opts.network,
        steps: steps.clone(),
        excluded: committed.excluded.clone(),
        log: log.digest,
        log_len: log_bytes.len() as u64,
    };
    let mut stats = committed.stats;
    stats.objects += 1; // the log
    let mut manifest = Manifest {
        image: base.manifest.image.clone(),
        generation: latest.manifest.generation + 1,
        root: committed.root,
        root_meta: committed.root_meta.clone(),
        parent: Some(base.digest),
        created: opts.created,
        message: opts.message.clone(),
        chunking: base.manifest.chunking,
        stats,
        extensions: Vec::new(),
    };
    if let Some(d) = base.manifest.dictionary() {
        manifest.set_extension(format::manifest::DICT_EXTENSION, d.0.to_vec());
    }
    crate::diff::index_packages(&repo.store, &mut manifest, level).map_err(ImportError::from)?;
    let mut change = opts.change.clone();
    change.normalize();
    if change.activation_source == format::ActivationSource::Derived {
        let (activation, why) = crate::analysis::derive_activation(&repo.store, &base.manifest, &manifest).map_err(ImportError::Base)?;
        change.activation = activation;
        change.activation_why = why;
    }
    manifest.set_extension(format::change::CHANGE_EXTENSION, change.encode());
    manifest.set_extension(format::change::PATCH_EXTENSION, record.encode());
    let bytes = manifest.encode();
    let ins = repo.store.insert(&bytes, level).map_err(|source| ImportError::Store { path: "(manifest)".into(), source })?;
    repo.store.sync().map_err(sync_err)?;
    repo.write_ref(&manifest.image, manifest.generation, &ins.digest)?;
    let generation = Generation { digest: ins.digest, manifest };
    Ok(PatchReport {
        generation: generation.label(),
        digest: generation.digest,
        base: base.label(),
        steps,
        excluded: committed.excluded,
        changed_paths: committed.touched.len(),
        files_read: committed.files_read,
        new_objects: counters.new_objects.load(Ordering::Relaxed),
        stored_bytes: counters.stored_bytes.load(Ordering::Relaxed),
        log: log.digest,
        commit_ms: commit_start.elapsed().as_millis() as u64,
        total_ms: start.elapsed().as_millis() as u64,
    })
}
