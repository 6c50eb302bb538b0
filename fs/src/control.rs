//! The control socket of a mount and the commands it answers: `status`, `update` (check the
//! channel now and switch if it moved), `rollback` (switch back to the previous generation),
//! `switch_to` (switch to one signed generation and hold the mount there), `pin`, `unpin` and
//! `prefetch`. Also the poller that checks the channel on an interval with jitter (and leaves a
//! held mount where it is), and the prefetch jobs.
//!
//! Each mount listens on a unix socket whose path is derived from its mount point, so
//! `imgfs status MOUNTPOINT` finds it. One request per connection: an `api::control::Request`
//! as one line of JSON. The answer is JSON documents, one per line: `ProgressLine`s for long
//! commands, then the command's answer or a `Failed` (the types of `api::control`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use api::control::{
    Failed, FailureKind, GenerationRef, LastCheck, OpenMode, Opens, Prefetched, Prefetching, ProgressLine, Refusal, Reply, Request, Status,
    Switch, Unpinned,
};
use format::{Digest, Manifest};

use crate::endpoint::{Endpoint, LoadError};
use crate::image::Image;
use crate::keeper::{Keeper, Pin};
use crate::prefetch::Progress;
use crate::state::Follow;
use crate::trusted::TrustError;

/// Where the control socket of the mount at `mountpoint` lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/imgfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join("imgfs")
    };
    let id = Digest::of(canonical.as_os_str().as_bytes()).to_hex();
    dir.join(format!("{}.sock", &id[..16]))
}

/// Why a request to a mount got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nothing listens on the mount's socket: it is not an imgfs mount, or its process is gone.
    #[error("no imgfs mount answers at {} ({}): {source}", mountpoint.display(), socket.display())]
    NoMount {
        /// The mount point asked.
        mountpoint: PathBuf,
        /// Its socket.
        socket: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection failed on the way.
    #[error("talking to the mount: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the answer is not what the command answers.
    #[error("the mount answered {line:?}: {why}")]
    BadAnswer {
        /// The line.
        line: String,
        /// Why it does not read.
        why: String,
    },
    /// The mount closed the connection before its answer.
    #[error("the mount closed the connection without an answer")]
    NoAnswer,
}

/// Sends `request` to the mount at `mountpoint` and returns its answer (`Err(Failed)` if the
/// command failed); progress reports on the way go to `progress`.
pub fn request<T: serde::de::DeserializeOwned>(
    mountpoint: &Path,
    request: &Request,
    progress: &mut dyn FnMut(&ProgressLine),
) -> Result<Result<T, Failed>, RequestError> {
    let path = socket_path(mountpoint);
    let mut s = UnixStream::connect(&path).map_err(|source| RequestError::NoMount {
        mountpoint: mountpoint.to_path_buf(),
        socket: path.clone(),
        source,
    })?;
    // Long commands report progress at least every few seconds.
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(s, "{}", serde_json::to_string(request).expect("a request serialises"))?;
    for line in BufReader::new(s).lines() {
        let line = line?;
        match serde_json::from_str::<Reply<T>>(&line) {
            Ok(Reply::Progress(p)) => progress(&p),
            Ok(Reply::Done(answer)) => return Ok(Ok(answer)),
            Ok(Reply::Failed(f)) => return Ok(Err(f)),
            Err(e) => return Err(RequestError::BadAnswer { line, why: e.to_string() }),
        }
    }
    Err(RequestError::NoAnswer)
}

/// Why a name given for a generation does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `previous` with no previous generation.
    #[error("there is no previous generation")]
    NoPrevious,
    /// Neither a generation address nor a digest.
    #[error("{0:?} is not a generation: give IMAGE@N, a manifest digest, current or previous")]
    NotAGeneration(String),
    /// `IMAGE@` followed by no number.
    #[error("{0:?} is not IMAGE@N")]
    NotImageAtN(String),
    /// The signed metadata has no such generation, or refuses it.
    #[error("looking up {generation}: {source}")]
    Trust {
        /// As given.
        generation: String,
        /// Why.
        source: TrustError,
    },
    /// Its metadata could not be loaded.
    #[error("loading {generation}: {source}")]
    Load {
        /// As given.
        generation: String,
        /// Why.
        source: LoadError,
    },
    /// Its manifest is not the length its signed target says.
    #[error(transparent)]
    Length(LoadError),
}

impl ResolveError {
    /// The answer that reports it.
    fn failed(&self) -> Failed {
        let kind = match self {
            ResolveError::NoPrevious | ResolveError::NotAGeneration(_) | ResolveError::NotImageAtN(_) => FailureKind::NotFound,
            ResolveError::Trust { source, .. } => match refusal(source) {
                Refusal::Unreachable => FailureKind::Unreachable,
                Refusal::NotSigned => FailureKind::NotFound,
                _ => FailureKind::Refused,
            },
            ResolveError::Load { .. } | ResolveError::Length(_) => FailureKind::Failed,
        };
        Failed::new(kind, self.to_string())
    }
}

/// The class of a trust failure, as a switch reports it.
pub fn refusal(e: &TrustError) -> Refusal {
    match e {
        TrustError::NoRoot { .. } | TrustError::BadRoot { .. } | TrustError::Io { .. } => Refusal::LocalState,
        TrustError::ClockBack { .. } => Refusal::ClockBack,
        TrustError::Unreachable(_) => Refusal::Unreachable,
        TrustError::Refused(_) => Refusal::MetadataRefused,
        TrustError::Policy(_) => Refusal::NotAllowed,
        TrustError::NotFound(_) => Refusal::NotSigned,
    }
}

fn load_failed(e: LoadError) -> Switch {
    Switch::Refused { reason: Refusal::LoadFailed, error: e.to_string() }
}

/// A prefetch running in the mount's process; clients follow it, and it goes on without them.
pub struct Job {
    generation: String,
    state: Mutex<JobState>,
    changed: Condvar,
}

#[derive(Default)]
struct JobState {
    progress: Progress,
    /// Bumped on every report.
    seq: u64,
    outcome: Option<Result<Progress, String>>,
}

/// What the control side of a mount needs.
pub struct Control {
    /// The endpoint.
    pub ep: Arc<Endpoint>,
    /// The channel followed, or the one generation served.
    pub follow: Follow,
    /// The channel versions of the current and previous generations (0 if unknown).
    pub versions: Mutex<(u64, u64)>,
    /// The cache directory, where the state file lives.
    pub cache: PathBuf,
    /// Tells the kernel to forget cached entries.
    pub invalidate: crate::invalidate::Invalidator,
    /// When the channel was last checked, and what happened.
    pub last_check: Mutex<Option<(Instant, Switch)>>,
    /// Serialises switches.
    switching: Mutex<()>,
    /// Serialises writes of the state file.
    saving: Mutex<()>,
    /// The generation a `switch_to` holds the mount on, `IMAGE@N` (the poller leaves it there
    /// until an `update` or a `rollback`).
    held: Mutex<Option<String>>,
    /// The cache keeper, which holds the pins.
    pub keeper: Arc<Keeper>,
    /// The trusted metadata: what the channel may switch to.
    pub trust: Arc<crate::trusted::TrustState>,
    /// Prefetches running, by manifest.
    jobs: Mutex<HashMap<Digest, Arc<Job>>>,
    /// The mount's writable layer, if it has one.
    writable: std::sync::OnceLock<Arc<crate::writable::Writable>>,
    /// The background fill's rate, and the control itself to start it from threads.
    fill: std::sync::OnceLock<(std::sync::Weak<Control>, u64)>,
    /// How long a switch waits for the data of the new generation's read trace (milliseconds;
    /// 0: switch at once and fetch it after).
    warm_millis: std::sync::atomic::AtomicU64,
    /// The last fetch of a read trace's data, for the status.
    trace_fetch: Arc<Mutex<Option<api::control::TraceFetch>>>,
}

/// How long a switch waits, by default, for the new generation's read trace data.
pub const WARM_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of the fetch of a read trace's data before a switch.
enum Warm {
    /// The data is in the cache.
    Done,
    /// The trace is unusable or its data could not be fetched: reads fetch what they need.
    Failed,
    /// Still fetching when the wait ended: it goes on behind the switch (then the fill).
    Behind,
}

impl Control {
    /// A control for a mounted endpoint.
    pub fn new(
        ep: Arc<Endpoint>,
        keeper: Arc<Keeper>,
        trust: Arc<crate::trusted::TrustState>,
        follow: Follow,
        versions: (u64, u64),
        cache: PathBuf,
        invalidate: crate::invalidate::Invalidator,
        held: Option<String>,
    ) -> Control {
        Control {
            ep,
            follow,
            versions: Mutex::new(versions),
            cache,
            invalidate,
            last_check: Mutex::new(None),
            switching: Mutex::new(()),
            saving: Mutex::new(()),
            held: Mutex::new(held),
            keeper,
            trust,
            jobs: Mutex::new(HashMap::new()),
            writable: std::sync::OnceLock::new(),
            fill: std::sync::OnceLock::new(),
            warm_millis: (WARM_TIMEOUT.as_millis() as u64).into(),
            trace_fetch: Arc::default(),
        }
    }

    /// Sets how long a switch waits for the data of the new generation's read trace before it
    /// repoints the mount (zero: at once, the data fetched after).
    pub fn set_warm_timeout(&self, wait: Duration) {
        self.warm_millis.store(wait.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fetches the data that the read trace `trace` of generation `staged` reads, before the
    /// switch to it, so that what the trace recorded (a boot, an application start) runs from
    /// the cache as soon as the mount moves, as an update downloads before it installs.
    /// Waits at most the warm timeout; past it the fetch goes on behind the switch and starts
    /// the background fill when done.
    fn warm(&self, trace: Digest, staged: Arc<Image>) -> Warm {
        let wait = Duration::from_millis(self.warm_millis.load(std::sync::atomic::Ordering::Relaxed));
        let (tx, rx) = std::sync::mpsc::channel();
        let ep = self.ep.clone();
        let fill = self.fill.get().map(|(me, _)| me.clone());
        let last = self.trace_fetch.clone();
        let start = Instant::now();
        std::thread::spawn(move || {
            let r = load_trace(&ep, trace)
                .and_then(|t| crate::prefetch::prefetch_trace(&ep, &staged, &t, None, &|_| {}).map_err(|e| e.to_string()))
                .map(|p| fetched(&staged, &p, start));
            match &r {
                Ok(f) => tracing::info!(generation = %f.generation, %trace, objects = f.objects, bytes = f.bytes, millis = f.millis,
                                        "fetched the data of the next generation's read trace"),
                Err(e) => tracing::warn!(%trace, error = %e, "the next generation's read trace data could not be fetched; reads fetch what they need"),
            }
            // Nobody waits any more: the switch went ahead, and the fill is this thread's.
            if let Err(std::sync::mpsc::SendError(r)) = tx.send(r) {
                if let Ok(f) = r {
                    *last.lock().unwrap() = Some(f);
                }
                if let Some(me) = fill.and_then(|w| w.upgrade()) {
                    me.fill_current();
                }
            }
        });
        match rx.recv_timeout(wait) {
            Ok(Ok(f)) => {
                *self.trace_fetch.lock().unwrap() = Some(api::control::TraceFetch { before_switch: true, ..f });
                Warm::Done
            }
            Ok(Err(_)) => Warm::Failed,
            Err(_) => {
                tracing::info!(waited_millis = wait.as_millis() as u64, "the next generation's read trace data is still coming: switching, it goes on behind");
                Warm::Behind
            }
        }
    }

    /// After a switch to a generation with read trace `trace` (if it has one), warmed before
    /// it as `warmed` says: fetches what is still to fetch first, then fills.
    fn after_switch(&self, trace: Option<Digest>, warmed: Option<Warm>) {
        match (trace, warmed) {
            (_, Some(Warm::Behind)) => {}
            (Some(t), None) => self.trace_first(t),
            _ => self.fill_current(),
        }
    }

    /// Warms the trace data of generation `digest` (`manifest`) before a switch to it, unless
    /// the warm timeout is zero or it has no trace.
    fn warm_before(&self, trace: Option<Digest>, digest: Digest, manifest: &Manifest) -> Option<Warm> {
        let trace = trace?;
        if self.warm_millis.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.warm(trace, self.ep.staged(digest, manifest.clone())))
    }

    /// Gives the control the mount's writable layer (merged at switches, reported, reset).
    pub fn set_writable(&self, w: Arc<crate::writable::Writable>) {
        let _ = self.writable.set(w);
    }

    /// Drops the writable layer's local changes at and below `path` (escaped, from the
    /// mount's root; all without one).
    pub fn reset(&self, path: Option<&str>) -> Result<api::control::ResetDone, Failed> {
        let Some(w) = self.writable.get() else {
            return Err(Failed::new(FailureKind::NotFound, "this mount has no writable layer (imgfs mount --writable DIR)"));
        };
        let rel = match path.map(api::control::unescape_path) {
            None => Vec::new(),
            Some(Some(p)) => {
                let mut p = p.as_slice();
                while let [b'/', rest @ ..] = p {
                    p = rest;
                }
                while let [rest @ .., b'/'] = p {
                    p = rest;
                }
                p.to_vec()
            }
            Some(None) => return Err(Failed::new(FailureKind::BadRequest, format!("{:?} is not an escaped path", path.unwrap_or_default()))),
        };
        let _one = self.switching.lock().unwrap();
        w.reset(&self.ep, &rel)
            .map(|removed| api::control::ResetDone { removed })
            .map_err(|e| Failed::new(FailureKind::Failed, format!("dropping local changes: {e}")))
    }

    /// Records the current and previous generations in the cache's state file, once the
    /// objects they name are durable (`Store::sync` first).
    pub fn save_state(&self) {
        // One at a time: a slower caller's older view must not overwrite a newer one.
        let _one = self.saving.lock().unwrap();
        if let Err(e) = self.ep.store().sync() {
            tracing::warn!(error = %e, "cannot make the cache durable; the state file keeps the generation it named");
            return;
        }
        let (cv, pv) = *self.versions.lock().unwrap();
        use crate::state::Served;
        let served = |img: &Image, channel_version| Served { generation: img.label(), manifest: img.manifest_digest(), channel_version };
        let st = crate::state::State {
            version: crate::state::STATE_VERSION,
            channel: self.follow.channel().cloned(),
            at: self.follow.at(),
            held: self.held(),
            current: served(&self.ep.current(), cv),
            previous: self.ep.previous().map(|p| served(&p, pv)),
            pins: self
                .keeper
                .pins()
                .into_iter()
                .map(|p| Served { generation: p.generation, manifest: p.manifest, channel_version: 0 })
                .collect(),
            prefetching: self
                .jobs
                .lock()
                .unwrap()
                .iter()
                .map(|(d, j)| Served { generation: j.generation.clone(), manifest: *d, channel_version: 0 })
                .collect(),
        };
        if let Err(e) = crate::state::save(&self.cache, &st) {
            tracing::warn!(error = %e, "cannot write the state file; an offline restart may mount an older generation");
        }
    }

    /// Makes the kernel look names under the mount's root up again, so new opens resolve in the
    /// new generation. Only the root's entries are cached under an inode shared by
    /// generations; everything below has generation-specific numbers. The cost depends on
    /// the root's size only, never on the image's (entries are expired, not pruned: see
    /// `invalidate`).
    /// After a switch from `old` to `new`: the kernel looks names up again, and the writable
    /// layer's local changes are merged (then checked against the drift policy).
    fn switched(&self, old: &Image, new: &Image) {
        self.expire_root(old, new);
        if let Some(w) = self.writable.get() {
            w.merge(&self.ep, old, new);
            w.restore(&self.ep);
        }
    }

    fn expire_root(&self, old: &Image, new: &Image) {
        let mut names = old.root_names(&*self.ep).unwrap_or_default();
        names.extend(new.root_names(&*self.ep).unwrap_or_default());
        names.sort();
        names.dedup();
        for n in names {
            self.invalidate.entry(1, std::ffi::OsStr::from_bytes(&n));
        }
        self.invalidate.inode(1);
    }

    /// The generation the mount is held on, if it is.
    pub fn held(&self) -> Option<String> {
        self.held.lock().unwrap().clone()
    }

    /// Checks the channel and switches to its generation if it moved. A mount pinned to one
    /// generation checks that it is still signed and allowed (refreshing the metadata) and
    /// switches back to it after a rollback. Asked for (`imgfs update`, the agent), it ends a
    /// hold first: the mount follows its channel again.
    pub fn update(&self) -> Switch {
        let _one = self.switching.lock().unwrap();
        if self.held.lock().unwrap().take().is_some() {
            tracing::info!("hold released: following {} again", self.follow);
            self.save_state();
        }
        let outcome = self.follow_now();
        self.leave_withdrawn().unwrap_or(outcome)
    }

    /// What the poller does: `update`, except that a held mount stays where it is (its held
    /// generation is only checked again against the signed metadata, which keeps it fresh).
    pub fn poll_once(&self) -> Switch {
        let _one = self.switching.lock().unwrap();
        let outcome = self.check_once();
        self.leave_withdrawn().unwrap_or(outcome)
    }

    /// If the trusted signed metadata lists the generation served as withdrawn, goes back to
    /// the previous generation, on the endpoint's own (no agent or server asks), unless that
    /// one is withdrawn too; ends a hold. The caller holds `switching`.
    fn leave_withdrawn(&self) -> Option<Switch> {
        let withdrawn = self.trust.withdrawn();
        let current = self.ep.current().label();
        if !withdrawn.contains(&current) {
            return None;
        }
        match self.ep.previous().map(|p| p.label()) {
            Some(p) if !withdrawn.contains(&p) => {
                tracing::warn!(generation = %current, back_to = %p, "the signed metadata lists the generation served as withdrawn: rolling back");
                let outcome = self.rollback_locked();
                *self.last_check.lock().unwrap() = Some((Instant::now(), outcome.clone()));
                Some(outcome)
            }
            p => {
                tracing::error!(generation = %current, previous = ?p, "the generation served is withdrawn and there is no previous one that is not: it keeps serving it");
                None
            }
        }
    }

    /// `poll_once` before the withdrawn check; the caller holds `switching`.
    fn check_once(&self) -> Switch {
        let Some(held) = self.held() else { return self.follow_now() };
        let outcome = match api::fleet::parse_generation(&held) {
            Some((image, n)) => match self.trust.resolve_generation(self.ep.fetcher(), image.as_str(), n) {
                Ok(_) => Switch::AlreadyCurrent { generation: held, channel_version: 0 },
                Err(e) => Switch::Refused { reason: refusal(&e), error: e.to_string() },
            },
            None => Switch::AlreadyCurrent { generation: held, channel_version: 0 },
        };
        *self.last_check.lock().unwrap() = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Switches to generation `generation` (`IMAGE@N`), verified through the signed targets as
    /// a pinned mount's is (its family's signature, this endpoint's architecture, the epoch
    /// floor, the manifest's signed length), and holds the mount there: the channel poller
    /// leaves it until an `update` or a `rollback`. The generation served already is held
    /// without asking the servers (it was verified when it was loaded). `Err` for text that is
    /// not `IMAGE@N`.
    pub fn switch_to(&self, generation: &str) -> Result<Switch, Failed> {
        let Some((image, n)) = api::fleet::parse_generation(generation) else {
            return Err(Failed::new(FailureKind::BadRequest, format!("{generation:?} is not IMAGE@N")));
        };
        let _one = self.switching.lock().unwrap();
        let start = Instant::now();
        let label = format!("{image}@{n}");
        let current = self.ep.current();
        let outcome = if current.label() == label {
            *self.held.lock().unwrap() = Some(label.clone());
            self.save_state();
            Switch::AlreadyCurrent { generation: label, channel_version: self.versions.lock().unwrap().0 }
        } else {
            self.switch_to_signed(&image, n, start)
        };
        *self.last_check.lock().unwrap() = Some((Instant::now(), outcome.clone()));
        Ok(outcome)
    }

    fn switch_to_signed(&self, image: &format::ImageName, n: u64, start: Instant) -> Switch {
        let accepted = match self.trust.resolve_generation(self.ep.fetcher(), image.as_str(), n) {
            Ok(a) => a,
            Err(e) => {
                // A generation its family never signed is not signed (not merely not allowed).
                let reason = match &e {
                    TrustError::Policy(trust::policy::PolicyError::NotSigned { .. }) => Refusal::NotSigned,
                    e => refusal(e),
                };
                return Switch::Refused { reason, error: e.to_string() };
            }
        };
        let digest: Digest = accepted.manifest.parse().expect("checked to be 64 hex digits");
        let label = format!("{}@{}", accepted.record.image, accepted.record.generation);
        let manifest = match self.ep.load(digest) {
            Ok(m) => m,
            Err(e) => return load_failed(e),
        };
        if let Err(e) = crate::endpoint::check_length(self.ep.fetcher(), digest, accepted.length) {
            return load_failed(e);
        }
        let trace = accepted.record.trace.as_deref().and_then(|t| t.parse().ok());
        let warmed = self.warm_before(trace, digest, &manifest);
        let old = self.ep.switch_to(digest, manifest);
        self.switched(&old, &self.ep.current());
        self.after_switch(trace, warmed);
        {
            let mut v = self.versions.lock().unwrap();
            *v = (0, v.0);
        }
        *self.held.lock().unwrap() = Some(label.clone());
        // The mount has moved: what follows (the state file, after a sync) is not the switch's time.
        let millis = start.elapsed().as_millis() as u64;
        self.save_state();
        tracing::info!(from = %old.label(), to = %label, "switched to a held generation");
        Switch::Switched { from: old.label(), to: label, channel_version: 0, millis }
    }

    /// Checks the channel (or pin) now and switches to what it names; the caller holds
    /// `switching`.
    fn follow_now(&self) -> Switch {
        let start = Instant::now();
        let outcome = (|| {
            // Only a generation the signed metadata names, verified now, is switched to.
            let r = match crate::startup::resolve(&self.trust, self.ep.fetcher(), &self.follow) {
                Ok(r) => r,
                Err(e) => return Switch::Refused { reason: refusal(&e), error: e.to_string() },
            };
            let (digest, label) = (r.digest, r.label.clone());
            let current = self.ep.current();
            let version = r.channel_version;
            if current.manifest_digest() == digest {
                self.versions.lock().unwrap().0 = version;
                return Switch::AlreadyCurrent { generation: label, channel_version: version };
            }
            let manifest = match self.ep.load(digest) {
                Ok(m) => m,
                Err(e) => return load_failed(e),
            };
            if let Some(length) = r.length {
                if let Err(e) = crate::endpoint::check_length(self.ep.fetcher(), digest, length) {
                    return load_failed(e);
                }
            }
            let warmed = self.warm_before(r.trace, digest, &manifest);
            let old = self.ep.switch_to(digest, manifest);
            self.switched(&old, &self.ep.current());
            self.after_switch(r.trace, warmed);
            {
                let mut v = self.versions.lock().unwrap();
                *v = (version, v.0);
            }
            let millis = start.elapsed().as_millis() as u64;
            self.save_state();
            tracing::info!(from = %old.label(), to = %label, version, "switched");
            Switch::Switched { from: old.label(), to: label, channel_version: version, millis }
        })();
        *self.last_check.lock().unwrap() = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Switches back to the previous generation, offline too. It ends a hold: the poller
    /// follows the channel again.
    pub fn rollback(&self) -> Switch {
        let _one = self.switching.lock().unwrap();
        self.rollback_locked()
    }

    /// `rollback`; the caller holds `switching`.
    fn rollback_locked(&self) -> Switch {
        let start = Instant::now();
        match self.ep.rollback() {
            Some(old) => {
                *self.held.lock().unwrap() = None;
                let current = self.ep.current();
                self.switched(&old, &current);
                let version = {
                    let mut v = self.versions.lock().unwrap();
                    *v = (v.1, v.0);
                    v.0
                };
                let millis = start.elapsed().as_millis() as u64;
                self.save_state();
                tracing::info!(from = %old.label(), to = %current.label(), "rolled back");
                Switch::Switched { from: old.label(), to: current.label(), channel_version: version, millis }
            }
            None => Switch::NothingToRollBackTo,
        }
    }

    /// The mount's state.
    pub fn status(&self) -> Status {
        let current = self.ep.current();
        let fetcher = self.ep.fetcher();
        let named = |i: &Image| GenerationRef { generation: i.label(), manifest: i.manifest_digest() };
        let opens = |i: usize| self.ep.opens[i].load(std::sync::atomic::Ordering::Relaxed);
        Status {
            channel: self.follow.channel().cloned(),
            at: self.follow.at(),
            channel_version: self.versions.lock().unwrap().0,
            held: self.held(),
            current: named(&current),
            previous: self.ep.previous().map(|p| named(&p)),
            cache: self.keeper.report(),
            pins: self.keeper.pins().into_iter().map(|p| GenerationRef { generation: p.generation, manifest: p.manifest }).collect(),
            prefetching: self
                .jobs
                .lock()
                .unwrap()
                .values()
                .map(|j| Prefetching { generation: j.generation.clone(), progress: j.state.lock().unwrap().progress })
                .collect(),
            servers: fetcher.health(),
            offline: fetcher.offline(),
            traffic: fetcher.traffic(),
            opens: Opens {
                mode: if self.ep.passthrough.load(std::sync::atomic::Ordering::Relaxed) { OpenMode::Passthrough } else { OpenMode::Kernel },
                fuse: opens(0),
                passthrough: opens(1),
            },
            trust: self.trust.status(),
            last_check: self
                .last_check
                .lock()
                .unwrap()
                .as_ref()
                .map(|(t, result)| LastCheck { seconds_ago: t.elapsed().as_secs(), result: result.clone() }),
            writable: self.writable.get().map(|w| w.report()),
            trace_fetch: self.trace_fetch.lock().unwrap().clone(),
        }
    }

    /// Answers control connections on `socket` until the process ends.
    pub fn serve(self: &Arc<Self>, socket: &Path) -> std::io::Result<()> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || me.answer(conn));
            }
        });
        Ok(())
    }

    fn answer(self: &Arc<Self>, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => to_line(&Failed::new(FailureKind::BadRequest, format!("unknown request {:?}: {e}", line.trim()))),
            Ok(Request::Status) => to_line(&self.status()),
            Ok(Request::Reset { path }) => match self.reset(path.as_deref()) {
                Ok(r) => to_line(&r),
                Err(f) => to_line(&f),
            },
            Ok(Request::Update) => to_line(&self.update()),
            Ok(Request::Rollback) => to_line(&self.rollback()),
            Ok(Request::SwitchTo { generation }) => match self.switch_to(&generation) {
                Ok(s) => to_line(&s),
                Err(f) => to_line(&f),
            },
            Ok(Request::Unpin { generation }) => match self.unpin(&generation) {
                Ok(u) => to_line(&u),
                Err(f) => to_line(&f),
            },
            Ok(Request::Pin { max_rate: Some(0), .. } | Request::Prefetch { max_rate: Some(0), .. }) => {
                to_line(&Failed::new(FailureKind::BadRequest, "bad rate 0: bytes per second"))
            }
            Ok(Request::TraceStart) => {
                let current = self.ep.current();
                if self.ep.tracer.start(current.slot()) {
                    to_line(&api::control::TraceStarted { generation: current.label() })
                } else {
                    to_line(&Failed::new(FailureKind::BadRequest, "a trace is already running: stop it first"))
                }
            }
            Ok(Request::TraceStop) => match self.ep.tracer.stop() {
                None => to_line(&Failed::new(FailureKind::NotFound, "no trace is running")),
                Some((slot, reads)) => match crate::trace::build(&self.ep, slot, &reads) {
                    Some(trace) => to_line(&trace),
                    None => to_line(&Failed::new(FailureKind::NotFound, "the generation traced is no longer served")),
                },
            },
            Ok(Request::PrefetchTrace { max_rate: Some(0), .. }) => {
                to_line(&Failed::new(FailureKind::BadRequest, "bad rate 0: bytes per second"))
            }
            Ok(Request::PrefetchTrace { trace, max_rate }) => self.trace_answer(&conn, &trace, max_rate),
            Ok(Request::Pin { generation, max_rate }) => self.fetch_answer(&conn, &generation, true, max_rate),
            Ok(Request::Prefetch { generation, max_rate }) => self.fetch_answer(&conn, &generation, false, max_rate),
        };
        let _ = writeln!(&conn, "{answer}");
    }

    /// Fetches, in the background, the read trace object `digest` a generation was signed
    /// with (verified by its digest) and then what the cache lacks of the data it reads in the
    /// current generation, in its order.
    pub fn trace_first(&self, digest: Digest) {
        let ep = self.ep.clone();
        let fill = self.fill.get().and_then(|(me, _)| me.upgrade()).map(|me| Arc::downgrade(&me));
        let last = self.trace_fetch.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let trace = load_trace(&ep, digest);
            let current = ep.current();
            match trace.map(|t| crate::prefetch::prefetch_trace(&ep, &current, &t, None, &|_| {})) {
                Ok(Ok(p)) => {
                    let f = fetched(&current, &p, start);
                    tracing::info!(generation = %f.generation, %digest, objects = f.objects, bytes = f.bytes, millis = f.millis,
                                   "fetched the data of the generation's read trace");
                    *last.lock().unwrap() = Some(f);
                }
                Ok(Err(e)) => tracing::warn!(%digest, error = %e, "fetching the data of the read trace stopped; reads fetch what they need"),
                Err(e) => tracing::warn!(%digest, error = %e, "the generation's read trace is unusable; reads fetch what they need"),
            }
            // Then the rest, if the mount fills generations.
            if let Some(me) = fill.and_then(|w| w.upgrade()) {
                me.fill_current();
            }
        });
    }

    /// Prefetches what `trace` reads in the current generation, writing progress lines to
    /// `conn` (at most ten a second); its last line.
    fn trace_answer(&self, conn: &UnixStream, trace: &api::control::Trace, max_rate: Option<u64>) -> String {
        let current = self.ep.current();
        let generation = current.label();
        let last = Mutex::new(None::<Instant>);
        let report = |p: &crate::prefetch::Progress| {
            let mut last = last.lock().unwrap();
            if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                *last = Some(Instant::now());
                let mut out: &UnixStream = conn;
                let _ = writeln!(out, "{}", to_line(&api::control::ProgressLine { progress: *p, generation: generation.clone() }));
            }
        };
        match crate::prefetch::prefetch_trace(&self.ep, &current, trace, max_rate, &report) {
            Ok(fetched) => to_line(&Prefetched { generation: generation.clone(), done: true, pinned: false, fetched }),
            Err(e) => to_line(&Failed::new(FailureKind::Unreachable, e.to_string())),
        }
    }

    /// Runs a pin or prefetch, writing its progress to `conn`; its last line.
    fn fetch_answer(self: &Arc<Self>, conn: &UnixStream, generation: &str, pin: bool, max_rate: Option<u64>) -> String {
        match self.start_prefetch(generation, pin, max_rate) {
            Ok(job) => match self.follow(&job, conn) {
                Ok(done) => to_line(&done),
                Err(f) => to_line(&f),
            },
            Err(e) => to_line(&e.failed()),
        }
    }

    /// Which generation `generation` names: `current`, `previous`, a manifest digest, or
    /// `IMAGE@N` (known here, else asked of the servers).
    pub fn resolve(&self, generation: &str) -> Result<(String, Digest), ResolveError> {
        let current = self.ep.current();
        let previous = self.ep.previous();
        let known = |label: &str| {
            std::iter::once(current.clone())
                .chain(previous.clone())
                .map(|i| (i.label(), i.manifest_digest()))
                .chain(self.keeper.pins().into_iter().map(|p| (p.generation, p.manifest)))
                .find(|(l, d)| l == label || d.to_hex() == label)
        };
        match generation {
            "current" => return Ok((current.label(), current.manifest_digest())),
            "previous" => return previous.map(|p| (p.label(), p.manifest_digest())).ok_or(ResolveError::NoPrevious),
            g => {
                if let Some(found) = known(g) {
                    return Ok(found);
                }
            }
        }
        let load = |digest| self.ep.load(digest).map_err(|source| ResolveError::Load { generation: generation.to_string(), source });
        let digest = match generation.parse::<Digest>() {
            Ok(d) => d,
            Err(_) if generation.contains('@') => {
                let (image, n) = generation
                    .split_once('@')
                    .and_then(|(i, n)| Some((i, n.parse::<u64>().ok()?)))
                    .ok_or_else(|| ResolveError::NotImageAtN(generation.to_string()))?;
                let accepted = self
                    .trust
                    .resolve_generation(self.ep.fetcher(), image, n)
                    .map_err(|source| ResolveError::Trust { generation: generation.to_string(), source })?;
                let digest: Digest = accepted.manifest.parse().expect("checked to be 64 hex digits");
                let manifest = load(digest)?;
                crate::endpoint::check_length(self.ep.fetcher(), digest, accepted.length).map_err(ResolveError::Length)?;
                return Ok((format!("{}@{}", manifest.image, manifest.generation), digest));
            }
            Err(_) => return Err(ResolveError::NotAGeneration(generation.to_string())),
        };
        let manifest = load(digest)?;
        Ok((format!("{}@{}", manifest.image, manifest.generation), digest))
    }

    fn unpin(&self, generation: &str) -> Result<Unpinned, Failed> {
        match self.keeper.unpin(generation) {
            Some(p) => {
                self.save_state();
                Ok(Unpinned { unpinned: p.generation, manifest: p.manifest })
            }
            None => Err(Failed::new(FailureKind::NotFound, format!("{generation} is not pinned"))),
        }
    }

    /// Starts (or joins) a prefetch of `generation`; with `pin`, pins it first.
    pub fn start_prefetch(self: &Arc<Self>, generation: &str, pin: bool, max_rate: Option<u64>) -> Result<Arc<Job>, ResolveError> {
        self.start_job(generation, pin, crate::prefetch::Pace { max_rate, yield_to_reads: false })
    }

    /// Has the mount fill the rest of each generation it serves in the background, at most
    /// `rate` bytes a second and yielding to reads that wait for the servers (after the data
    /// of the generation's read trace, if it has one): a laptop's policy, so that it works
    /// offline soon after a switch.
    pub fn set_fill(self: &Arc<Self>, rate: u64) {
        let _ = self.fill.set((Arc::downgrade(self), rate));
    }

    /// Starts the background fill of the current generation, if the mount has one.
    pub fn fill_current(&self) {
        let Some((me, rate)) = self.fill.get() else { return };
        let Some(me) = me.upgrade() else { return };
        match me.start_job("current", false, crate::prefetch::Pace { max_rate: Some(*rate), yield_to_reads: true }) {
            Ok(j) => tracing::info!(generation = %j.generation, rate, "filling the rest of the generation in the background"),
            Err(e) => tracing::warn!(error = %e, "cannot fill the generation in the background"),
        }
    }

    fn start_job(self: &Arc<Self>, generation: &str, pin: bool, pace: crate::prefetch::Pace) -> Result<Arc<Job>, ResolveError> {
        let (label, digest) = self.resolve(generation)?;
        if pin && self.keeper.pin(Pin { generation: label.clone(), manifest: digest }) {
            tracing::info!(generation = %label, "pinned");
        }
        let job = {
            let mut jobs = self.jobs.lock().unwrap();
            if let Some(j) = jobs.get(&digest) {
                let j = j.clone();
                drop(jobs);
                self.save_state();
                return Ok(j);
            }
            let job = Arc::new(Job { generation: label.clone(), state: Mutex::default(), changed: Condvar::new() });
            jobs.insert(digest, job.clone());
            job
        };
        // Recorded before it starts, so a restart resumes it.
        self.save_state();
        let ep = self.ep.clone();
        let j = job.clone();
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            let start = Instant::now();
            let report = |p: &Progress| {
                let mut st = j.state.lock().unwrap();
                st.progress = *p;
                st.seq += 1;
                j.changed.notify_all();
            };
            let outcome = crate::prefetch::prefetch_paced(&ep, digest, pace, &report).map_err(|e| e.to_string());
            match &outcome {
                Ok(p) => tracing::info!(generation = %j.generation, objects = p.objects_done, bytes = p.transferred,
                                        millis = start.elapsed().as_millis() as u64, "prefetched"),
                Err(e) => {
                    tracing::warn!(generation = %j.generation, error = %e, "prefetch stopped; it resumes at the next request or restart")
                }
            }
            if let Some(me) = me.upgrade() {
                me.jobs.lock().unwrap().remove(&digest);
                if outcome.is_ok() {
                    me.save_state();
                }
            }
            let mut st = j.state.lock().unwrap();
            st.outcome = Some(outcome);
            st.seq += 1;
            j.changed.notify_all();
        });
        Ok(job)
    }

    /// Writes a job's progress to `conn` until it ends; then its result. The job goes on if
    /// the client goes away.
    fn follow(&self, job: &Job, conn: &UnixStream) -> Result<Prefetched, Failed> {
        let mut seen = 0;
        let mut st = job.state.lock().unwrap();
        let mut last_write = Instant::now();
        loop {
            if let Some(outcome) = &st.outcome {
                return match outcome {
                    Ok(p) => Ok(Prefetched {
                        generation: job.generation.clone(),
                        done: true,
                        pinned: self.keeper.pins().iter().any(|x| x.generation == job.generation),
                        fetched: *p,
                    }),
                    Err(e) => Err(Failed { error: e.clone(), kind: FailureKind::Failed, generation: Some(job.generation.clone()) }),
                };
            }
            // At most a few reports a second, and one at least every few seconds.
            if st.seq != seen && last_write.elapsed() >= Duration::from_millis(200) || last_write.elapsed() >= Duration::from_secs(5) {
                seen = st.seq;
                last_write = Instant::now();
                let line = ProgressLine { progress: st.progress, generation: job.generation.clone() };
                if writeln!(&*conn, "{}", to_line(&line)).is_err() {
                    return Err(Failed::new(FailureKind::Failed, "client gone"));
                }
            }
            st = job.changed.wait_timeout(st, Duration::from_millis(250)).unwrap().0;
        }
    }

    /// Checks the channel every `every` (± 20 % jitter) until the process ends (a held mount
    /// stays where it is: `poll_once`).
    pub fn poll(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        std::thread::spawn(move || loop {
            let jitter = 0.8 + 0.4 * (rand_fraction());
            std::thread::sleep(every.mul_f64(jitter));
            me.poll_once();
        });
    }
}

/// One line of an answer.
fn to_line(message: &impl serde::Serialize) -> String {
    serde_json::to_string(message).expect("control messages serialise")
}

/// A fraction in [0, 1) from the clock's nanoseconds: enough to spread a fleet's polls.
fn rand_fraction() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (n % 1_000_000) as f64 / 1_000_000.0
}

/// The status's record of a trace data fetch of `image` that made `p` since `start` (not before
/// a switch: the caller that waited says so).
fn fetched(image: &Image, p: &Progress, start: Instant) -> api::control::TraceFetch {
    api::control::TraceFetch {
        generation: image.label(),
        objects: p.objects_done,
        bytes: p.transferred,
        millis: start.elapsed().as_millis() as u64,
        before_switch: false,
    }
}

/// The read trace object `digest` a generation was signed with, fetched if the cache lacks it
/// (verified by its digest).
fn load_trace(ep: &Endpoint, digest: Digest) -> Result<api::control::Trace, String> {
    ep.fetcher()
        .fetch(&[digest])
        .map_err(|e| e.to_string())
        .and_then(|()| ep.store().get(&digest).map_err(|e| e.to_string()))
        .and_then(|b| serde_json::from_slice::<api::control::Trace>(&b).map_err(|e| e.to_string()))
        .and_then(|t| match t.version {
            api::control::TRACE_VERSION => Ok(t),
            v => Err(format!("trace format version {v}, this build reads {}", api::control::TRACE_VERSION)),
        })
}
