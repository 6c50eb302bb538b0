//! Mounting: what `imgfs mount` does between its arguments and the FUSE session. Picks the
//! generation to serve (the channel as the signed metadata resolves it, else, offline, the last
//! verified one from the cache), restores the previous generation so a rollback works offline,
//! decides on passthrough, mounts, and starts the keeper, the control socket and the poller.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::control::Mounted;
use cache::quota::Quota;
use format::Digest;

use crate::control::Control;
use crate::endpoint::{load_metadata, Endpoint, LoadError};
use crate::fetch::{Fetcher, Limits};
use crate::keeper::{Keeper, Pin};
use crate::state::{Follow, State};
use crate::trusted::{TrustError, TrustState};

/// Channel checks when neither `--poll-seconds` nor the server says how often.
pub const DEFAULT_POLL: Duration = Duration::from_secs(300);

/// Bytes of decompressed chunks kept in memory by mounts made without `MountOptions`
/// (`imgctl mount`); `imgfs mount --memory-cache` sets its own.
const CHUNK_CACHE_BYTES: u64 = 16 << 20;

/// What to mount, and how.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Servers, tried in order of health, then of the list.
    pub servers: Vec<String>,
    /// The channel followed, or the one generation served.
    pub follow: Follow,
    /// The cache directory (objects, state, trusted metadata).
    pub cache: PathBuf,
    /// The cache's size limit and free-space floor.
    pub quota: Quota,
    /// Threads serving the kernel.
    pub threads: usize,
    /// Bytes of decompressed file data kept in memory.
    pub memory_cache: u64,
    /// Take opens and hand fully cached files to the kernel (plain copies in CACHE/files).
    pub passthrough: bool,
    /// Channel checks, if set by the user (else the server's advice, else `DEFAULT_POLL`).
    pub poll: Option<Duration>,
    /// The root to start trusting from, the first time.
    pub root: Option<PathBuf>,
    /// The image family this endpoint runs.
    pub image: Option<String>,
    /// The architecture this endpoint runs (default: this machine's).
    pub arch: Option<String>,
    /// Start on this generation, `IMAGE@N` (verified by its family's signature), and hold the
    /// mount there (`imgfs mount --hold`, the agent's staged reboot generation); else the hold
    /// the state file keeps, if any.
    pub hold: Option<String>,
    /// Where.
    pub mountpoint: PathBuf,
    /// A writable layer over the generations, kept on local disk.
    pub writable: Option<WritableOptions>,
    /// Fill the rest of each generation in the background at most this many bytes a second
    /// (after its read trace's data), yielding to reads that miss.
    pub fill: Option<u64>,
    /// How long a switch waits for the next generation's read trace data (zero: not at all).
    pub warm_timeout: Duration,
}

/// A mount's writable layer and its drift policy.
#[derive(Debug, Clone)]
pub struct WritableOptions {
    /// Where local changes are kept (`DIR/upper`, with `DIR/events.jsonl`).
    pub dir: PathBuf,
    /// Protected paths (globs from the mount's root).
    pub protect: Vec<String>,
    /// A file of more protected paths, one per line.
    pub protect_file: Option<PathBuf>,
    /// How often the whole layer is checked against the policy (changes made through the
    /// mount are checked at once).
    pub interval: Duration,
}

/// Why a mount did not come up.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The cache's store could not be opened.
    #[error("opening the cache {}", cache.display())]
    OpenCache {
        /// The cache directory.
        cache: PathBuf,
        /// The cause.
        source: cache::OpenError,
    },
    /// The trusted metadata could not be loaded.
    #[error("loading the trusted metadata")]
    Trust(#[source] TrustError),
    /// The channel (or pinned generation) could not be verified now and the cache has no
    /// verified generation of it.
    #[error("{why}; and the cache {} holds no verified generation of {follow}", cache.display())]
    NothingVerified {
        /// Why the channel could not be resolved.
        why: TrustError,
        /// The cache directory.
        cache: PathBuf,
        /// The channel, or `IMAGE@N`.
        follow: Follow,
    },
    /// The generation's metadata could not be loaded.
    #[error("loading {label} ({digest})")]
    Load {
        /// `IMAGE@N`.
        label: String,
        /// Its manifest.
        digest: Digest,
        /// Why.
        source: LoadError,
    },
    /// The manifest is not the length its signed target says.
    #[error("loading {label}")]
    Length {
        /// `IMAGE@N`.
        label: String,
        /// Why.
        source: LoadError,
    },
    /// The kernel refused the mount.
    #[error("mounting {}", mountpoint.display())]
    Kernel {
        /// Where.
        mountpoint: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cache keeper could not read the cache.
    #[error("reading the cache {}", cache.display())]
    Keeper {
        /// The cache directory.
        cache: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The control socket could not be made.
    #[error("listening on {}", socket.display())]
    Control {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writable layer or its drift policy cannot be used.
    #[error("opening the writable layer {}", dir.display())]
    Writable {
        /// The layer's directory.
        dir: PathBuf,
        /// The cause.
        source: anyhow::Error,
    },
    /// The connection handed over by the previous process cannot be taken over.
    #[error("resuming the mount's connection from {}", cache.display())]
    Resume {
        /// The cache directory.
        cache: PathBuf,
        /// The cause.
        source: crate::resume::ResumeError,
    },
    /// The FUSE session ended with an error.
    #[error("serving the mount")]
    Serve(#[source] std::io::Error),
}

/// The generation a mount starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Its manifest.
    pub digest: Digest,
    /// `IMAGE@N`.
    pub label: String,
    /// The channel version that names it.
    pub channel_version: u64,
    /// From the cache's state, not verified now.
    pub from_cache: bool,
    /// The manifest's signed length (verified now only).
    pub length: Option<u64>,
    /// How often the server says to poll (verified now only).
    pub poll_seconds: Option<u64>,
    /// The read trace signed with the generation (verified now only): its data is fetched
    /// first.
    pub trace: Option<Digest>,
}

/// The generation to start on: the channel (or pinned generation) as the signed metadata
/// resolves it; if that fails (no server reachable, or metadata expired or refused), the last
/// verified generation this cache served of the same channel or pin.
pub fn choose_start(resolved: Result<Start, TrustError>, saved: Option<&State>, follow: &Follow, cache: &Path) -> Result<Start, MountError> {
    match resolved {
        Ok(start) => Ok(start),
        Err(why) => {
            let Some(st) = saved.filter(|s| s.follows(follow)) else {
                return Err(MountError::NothingVerified { why, cache: cache.to_path_buf(), follow: follow.clone() });
            };
            tracing::warn!(error = %why, generation = %st.current.generation, "mounting the last verified generation from the cache");
            Ok(Start {
                digest: st.current.manifest,
                label: st.current.generation.clone(),
                channel_version: st.current.channel_version,
                from_cache: true,
                length: None,
                poll_seconds: None,
                trace: None,
            })
        }
    }
}

/// Resolves what `follow` names now through the signed metadata: a channel's generation, or
/// the pinned generation itself (signed by the family, allowed for this endpoint).
pub fn resolve(trust: &TrustState, fetcher: &Fetcher, follow: &Follow) -> Result<Start, TrustError> {
    match follow {
        Follow::Channel(channel) => trust.resolve_channel(fetcher, channel.as_str()).map(|r| Start {
            digest: r.digest(),
            label: r.label(),
            channel_version: r.channel.version,
            from_cache: false,
            length: Some(r.generation.length),
            poll_seconds: r.channel.poll_seconds,
            trace: r.generation.record.trace.as_deref().and_then(|t| t.parse().ok()),
        }),
        Follow::At { image, n } => trust.resolve_generation(fetcher, image.as_str(), *n).map(|a| Start {
            digest: a.manifest.parse().expect("checked to be 64 hex digits"),
            label: format!("{}@{}", a.record.image, a.record.generation),
            channel_version: 0,
            from_cache: false,
            length: Some(a.length),
            poll_seconds: None,
            trace: a.record.trace.as_deref().and_then(|t| t.parse().ok()),
        }),
    }
}

/// Registers the generation served before (from the state file) as the previous one, so
/// rollback works offline: the first of the saved current and previous that is not `serving`.
/// Its channel version (0 if none); a generation whose metadata does not load is reported
/// and skipped, and rollback has no target.
pub fn restore_previous(ep: &Endpoint, saved: Option<&State>, serving: Digest) -> u64 {
    let Some(st) = saved else { return 0 };
    let candidates = [Some(&st.current), st.previous.as_ref()];
    let Some(p) = candidates.into_iter().flatten().find(|p| p.manifest != serving) else { return 0 };
    match ep.load(p.manifest) {
        Ok(m) => {
            ep.set_previous(p.manifest, m);
            p.channel_version
        }
        Err(e) => {
            tracing::warn!(generation = %p.generation, error = %e, "the previous generation is not available; rollback has no target");
            0
        }
    }
}

/// Plain copies of big fully cached files (`CACHE/files/`) and their materialiser: read by
/// READs in the default mode, passed to the kernel with `passthrough`.
fn plain_copies(ep: &Arc<Endpoint>, cache: &Path, passthrough: bool) -> Option<crate::materialise::Materialiser> {
    let files = cache.join("files");
    ep.passthrough.store(passthrough, std::sync::atomic::Ordering::Relaxed);
    match cache::plain::Plain::open(&files) {
        Ok(plain) => {
            ep.enable_plain(plain);
            Some(crate::materialise::Materialiser::start(ep.clone()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no plain copies (reads go through FUSE)");
            None
        }
    }
}

/// Mounts and serves until unmounted. `ready` hears once the mount is up (before serving).
/// Started with a FUSE connection to take over (`LISTEN_FDS`, from `imgfs supervise` or
/// systemd's file descriptor store), it resumes it instead: the generations the previous
/// process served, under the same inode numbers, from the cache, without the network.
pub fn mount(o: &MountOptions, ready: impl FnOnce(&Mounted)) -> Result<(), MountError> {
    tune_malloc();
    raise_open_files_limit();
    let (follow, cache, mountpoint) = (&o.follow, o.cache.as_path(), o.mountpoint.as_path());
    let started = Instant::now();
    let store = Arc::new(cache::Store::open(cache.join("store")).map_err(|source| MountError::OpenCache { cache: cache.into(), source })?);
    // Use is tracked from the start (the keeper needs it): a fresh cache's scan finds nothing,
    // and what the mount fetches is counted as it lands. An error shows when the keeper starts.
    let _ = store.track_use();
    let fetcher = Arc::new(Fetcher::new(&o.servers, store, Limits::default()));
    let arch = o.arch.clone().unwrap_or_else(|| trust::policy::host_arch().to_string());
    let trust = Arc::new(TrustState::open(cache, o.root.as_deref(), o.image.clone(), arch).map_err(MountError::Trust)?);
    let state = crate::state::load(cache);
    let hold = o.hold.clone().or_else(|| state.as_ref().filter(|s| s.follows(follow)).and_then(|s| s.held.clone()));
    // Under a supervisor (or systemd) the connection is kept across restarts, so every
    // worker reads from the one descriptor kept: a cloned one's requests in flight would be
    // failed when this process dies.
    let restartable = std::env::var_os("NOTIFY_SOCKET").is_some();
    let inherited = crate::supervise::inherited_fuse_fd();
    let resume_err = |source| MountError::Resume { cache: cache.into(), source };
    let writable = match &o.writable {
        None => None,
        Some(w) => Some(Arc::new(open_writable(w).map_err(|source| MountError::Writable { dir: w.dir.clone(), source })?)),
    };

    let (ep, start, previous_version, session) = match inherited {
        Some(dev) => {
            let (journal, dirs) = crate::resume::Journal::resume(cache).map_err(resume_err)?;
            let recorded = journal.session();
            let current = recorded.slots.iter().find(|s| s.slot == recorded.current).cloned().ok_or_else(|| {
                resume_err(crate::resume::ResumeError::Unusable {
                    path: crate::resume::dir(cache).join("session.json"),
                    why: format!("the current slot {} is not listed", recorded.current),
                })
            })?;
            let ep = Endpoint::resume(fetcher.clone(), &recorded, dirs, o.memory_cache)
                .map_err(|source| MountError::Load { label: current.generation.clone(), digest: current.manifest, source })?;
            let ep = Arc::new(ep);
            ep.set_journal(Arc::new(journal), false).map_err(resume_err)?;
            let saved = state.as_ref().filter(|s| s.follows(follow));
            let (channel_version, previous_version) = match saved {
                Some(st) if st.current.manifest == current.manifest => {
                    (st.current.channel_version, st.previous.as_ref().map_or(0, |p| p.channel_version))
                }
                _ => (0, 0),
            };
            let start = Start {
                digest: current.manifest,
                label: current.generation.clone(),
                channel_version,
                from_cache: true,
                length: None,
                poll_seconds: None,
                trace: None,
            };
            let materialiser = plain_copies(&ep, cache, o.passthrough);
            let cfg = session_config(&format!("imgfs:{follow}"), o.threads, false, writable.is_some());
            let session = match recorded.init {
                Some(init) => {
                    let imgfs = crate::fuse::ImgFs::resumed(ep.clone(), materialiser, init, recorded.epoch).with_writable(writable.clone());
                    ep.passthrough.store(init.passthrough, std::sync::atomic::Ordering::Relaxed);
                    let session = fuser::Session::from_fd_initialized(imgfs, dev, cfg.acl, cfg);
                    if init.resend {
                        // Requests the dead process read and never answered come again.
                        if let Err(e) = crate::resume::resend(std::os::fd::AsFd::as_fd(&session)) {
                            tracing::warn!(error = %e, "the kernel did not take the resend notification");
                        }
                    } else {
                        tracing::warn!("this kernel cannot resend requests (FUSE_HAS_RESEND, Linux 6.9): any the previous process left unanswered wait forever");
                    }
                    session
                }
                // The previous process died before answering FUSE_INIT: have the kernel send
                // it again (it was read), then answer it.
                None => {
                    let _ = crate::resume::resend(std::os::fd::AsFd::as_fd(&dev));
                    let imgfs = crate::fuse::ImgFs::new(ep.clone(), materialiser, o.passthrough).with_writable(writable.clone());
                    fuser::Session::from_fd(imgfs, dev, cfg.acl, cfg)
                        .map_err(|source| MountError::Kernel { mountpoint: mountpoint.into(), source })?
                }
            };
            (ep, start, previous_version, session)
        }
        None => {
            let resolved = match hold.as_deref().and_then(api::fleet::parse_generation) {
                // A held mount starts on its held generation, never on the channel's first.
                Some((image, n)) => resolve(&trust, &fetcher, &Follow::At { image, n }),
                None => resolve(&trust, &fetcher, follow),
            };
            let start = choose_start(resolved, state.as_ref(), follow, cache)?;
            let (digest, label) = (start.digest, start.label.clone());
            let mut complete = HashSet::new();
            let manifest = load_metadata(&fetcher, digest, &mut complete)
                .map_err(|source| MountError::Load { label: label.clone(), digest, source })?;
            if let Some(len) = start.length {
                crate::endpoint::check_length(&fetcher, digest, len).map_err(|source| MountError::Length { label: label.clone(), source })?;
            }
            let ep = Arc::new(Endpoint::new(fetcher.clone(), digest, manifest, complete, o.memory_cache));
            let saved = state.as_ref().filter(|s| s.follows(follow));
            let previous_version = restore_previous(&ep, saved, digest);
            if restartable {
                let session = crate::resume::Session {
                    version: crate::resume::SESSION_VERSION,
                    init: None,
                    slots: vec![],
                    current: 1,
                    previous: None,
                    next_slot: 2,
                    epoch: 0,
                };
                let journal = crate::resume::Journal::fresh(cache, session).map_err(resume_err)?;
                ep.set_journal(Arc::new(journal), true).map_err(resume_err)?;
            }
            let materialiser = plain_copies(&ep, cache, o.passthrough);
            let session = session(ep.clone(), &format!("imgfs:{follow}"), mountpoint, o.threads, materialiser, !restartable, writable.clone())?;
            if restartable {
                let kept = crate::supervise::notify(&format!("FDSTORE=1\nFDNAME={}", crate::supervise::FD_NAME), Some(std::os::fd::AsFd::as_fd(&session)));
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "cannot hand the mount's connection to the service manager; a restart will unmount");
                }
            }
            (ep, start, previous_version, session)
        }
    };
    // Offline, a hold stays only if the cache's last generation is the held one.
    let hold = hold.filter(|h| !start.from_cache || &start.label == h);
    let resumed = ep.journal().is_some_and(|j| j.session().epoch > 0);
    let label = start.label.clone();

    let pins: Vec<Pin> =
        state.iter().flat_map(|s| &s.pins).map(|p| Pin { generation: p.generation.clone(), manifest: p.manifest }).collect();
    let keeper = Keeper::new(ep.clone(), o.quota, pins).map_err(|source| MountError::Keeper { cache: cache.into(), source })?;
    keeper.run();
    let dev = std::os::fd::AsFd::as_fd(&session).try_clone_to_owned().ok();
    if let Some(w) = &writable {
        let dev = std::os::fd::AsFd::as_fd(&session).try_clone_to_owned().ok();
        w.set_invalidator(crate::invalidate::Invalidator::new(session.notifier(), dev));
    }
    let invalidate = crate::invalidate::Invalidator::new(session.notifier(), dev);
    let control = Arc::new(Control::new(
        ep.clone(),
        keeper,
        trust,
        follow.clone(),
        (start.channel_version, previous_version),
        cache.to_path_buf(),
        invalidate,
        hold,
    ));
    // The state file names the generation once its objects are durable: written behind the
    // mount (a crash before it restarts from the state file's older generation).
    let saver = control.clone();
    std::thread::spawn(move || saver.save_state());
    if let Some(w) = &writable {
        control.set_writable(w.clone());
        w.run(ep.clone());
    }
    let socket = crate::control::socket_path(mountpoint);
    control.serve(&socket).map_err(|source| MountError::Control { socket: socket.clone(), source })?;
    control.set_warm_timeout(o.warm_timeout);
    control.poll(o.poll.or(start.poll_seconds.map(Duration::from_secs)).unwrap_or(DEFAULT_POLL).max(Duration::from_secs(1)));
    if let Some(rate) = o.fill {
        control.set_fill(rate);
    }
    // The data the generation's signed read trace reads comes first; then, if the mount
    // fills, the rest.
    match start.trace {
        Some(trace) => control.trace_first(trace),
        None => control.fill_current(),
    }
    // Prefetches a restart interrupted, and pins, resume in the background (pins are
    // prefetched so that they hold the whole generation).
    let resume: Vec<Digest> = state.iter().flat_map(|s| s.prefetching.iter().chain(&s.pins)).map(|p| p.manifest).collect();
    for manifest in resume {
        if let Err(e) = control.start_prefetch(&manifest.to_hex(), false, None) {
            tracing::warn!(%manifest, error = %e, "cannot resume a prefetch");
        }
    }
    ready(&Mounted {
        generation: label,
        channel: follow.channel().cloned(),
        at: follow.at(),
        channel_version: start.channel_version,
        from_cache: start.from_cache && !resumed,
        mountpoint: mountpoint.to_path_buf(),
        millis: started.elapsed().as_millis() as u64,
        requests: fetcher.traffic().requests,
        resumed,
    });
    let _ = crate::supervise::notify("READY=1", None);
    session.run().map_err(MountError::Serve)?;
    // Unmounted: nothing is left to take over.
    if let Some(j) = ep.journal() {
        j.remove();
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// glibc's allocator, tuned for a mount's resident memory (measured in docs/benchmarks.md):
/// - each thread that allocates under contention gets an arena of its own (up to 8 per core)
///   which keeps what it freed: with a score of FUSE, decode-ahead and fetch threads that is
///   30-40 MiB. Two arenas keep it near what is in use.
/// - a freed block above the mmap threshold raises that threshold to its size (up to 32 MiB),
///   so later range answers and decode buffers come from the arenas, where they stay
///   resident after they are freed: 107 MiB right after the rust tree was read twice, against
///   83 MiB with a fixed threshold of 256 KiB and a trim threshold of 1 MiB (fixing either
///   turns the dynamic adjustment off).
///
/// `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES`
/// in the environment still win.
fn tune_malloc() {
    let set = |var: &str| std::env::var_os(var).is_some() || std::env::var_os("GLIBC_TUNABLES").is_some();
    // SAFETY: mallopt only sets a tunable of the allocator; called before the mount's
    // threads exist.
    unsafe {
        if !set("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        if !set("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
        if !set("MALLOC_TRIM_THRESHOLD_") {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        }
    }
}

/// Raises the soft limit of open files to the hard one: the cache keeps each of its packs
/// open (one per answer of four objects or more), and systemd starts services with a soft
/// limit of 1024 and a hard one far above, expecting programs that need more to raise it.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the limit of open files");
            }
        }
    }
}

fn open_writable(w: &WritableOptions) -> anyhow::Result<crate::writable::Writable> {
    let policy = match &w.protect_file {
        Some(f) => crate::writable::Policy::from_file(f, &w.protect)?,
        None => crate::writable::Policy::new(&w.protect)?,
    };
    Ok(crate::writable::Writable::open(&w.dir, policy, w.interval)?)
}

fn session_config(fsname: &str, threads: usize, clone_fd: bool, writable: bool) -> fuser::Config {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        if writable { fuser::MountOption::RW } else { fuser::MountOption::RO },
        fuser::MountOption::FSName(fsname.to_string()),
        fuser::MountOption::Subtype("imgfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = clone_fd;
    cfg
}

/// The FUSE session of a mount of `ep` at `mountpoint`: read-only, device nodes and set-id
/// bits honoured, permissions checked by the kernel, mounted with mount(2) as `fuse.imgfs`
/// (through fusermount3 without the privilege). `clone_fd`: a descriptor per worker thread.
fn session(
    ep: Arc<Endpoint>,
    fsname: &str,
    mountpoint: &Path,
    threads: usize,
    materialiser: Option<crate::materialise::Materialiser>,
    clone_fd: bool,
    writable: Option<Arc<crate::writable::Writable>>,
) -> Result<fuser::Session<crate::fuse::ImgFs>, MountError> {
    let cfg = session_config(fsname, threads, clone_fd, writable.is_some());
    let read_only = writable.is_none();
    let passthrough = ep.passthrough.load(std::sync::atomic::Ordering::Relaxed);
    let imgfs = crate::fuse::ImgFs::new(ep, materialiser, passthrough).with_writable(writable);
    match crate::kernel_mount::mount(mountpoint, fsname, read_only) {
        Ok(dev) => fuser::Session::from_fd(imgfs, dev, cfg.acl, cfg),
        // Not privileged to mount(2): fuser goes through fusermount3 (type `fuse`).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fuser::Session::new(imgfs, mountpoint, &cfg),
        Err(e) => Err(e),
    }
    .map_err(|source| MountError::Kernel { mountpoint: mountpoint.into(), source })
}

/// Mounts generation `digest` of a local store read-only at `mountpoint` like [`mount_local`],
/// served from background threads. The caller unmounts (umount2) before dropping the session.
pub fn spawn_local(store: Arc<cache::Store>, digest: Digest, label: &str, mountpoint: &Path) -> Result<fuser::BackgroundSession, MountError> {
    let fetcher = Arc::new(Fetcher::new(&[], store, Limits::default()));
    let mut complete = HashSet::new();
    let manifest =
        load_metadata(&fetcher, digest, &mut complete).map_err(|source| MountError::Load { label: label.to_string(), digest, source })?;
    let ep = Arc::new(Endpoint::new(fetcher, digest, manifest, complete, CHUNK_CACHE_BYTES));
    session(ep, &format!("imgctl:{label}"), mountpoint, 2, None, true, None)?.spawn().map_err(MountError::Serve)
}

/// Mounts generation `digest` (`label`, `IMAGE@N`) of a local store read-only at
/// `mountpoint`, as `imgctl mount` does: no servers and no signed metadata (the store is the
/// engineer's own), every object still verified by digest when read. Calls `ready` once the
/// mount is up, then serves until it is unmounted.
pub fn mount_local(store: Arc<cache::Store>, digest: Digest, label: &str, mountpoint: &Path, ready: impl FnOnce()) -> Result<(), MountError> {
    let fetcher = Arc::new(Fetcher::new(&[], store, Limits::default()));
    let mut complete = HashSet::new();
    let manifest =
        load_metadata(&fetcher, digest, &mut complete).map_err(|source| MountError::Load { label: label.to_string(), digest, source })?;
    let ep = Arc::new(Endpoint::new(fetcher, digest, manifest, complete, CHUNK_CACHE_BYTES));
    let session = session(ep, &format!("imgctl:{label}"), mountpoint, 2, None, true, None)?;
    ready();
    session.run().map_err(MountError::Serve)
}
