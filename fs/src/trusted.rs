//! The endpoint's trusted metadata: the TUF state kept in `CACHE/trust/` as the exact bytes
//! received (one file per role), with `local.json` holding the clock high-water mark, the
//! security epoch floor, the image family and the architecture. Refreshing it from the
//! servers (each tried in turn: a bad mirror is passed over for a good one) and resolving
//! the channel to a generation this endpoint may run go through `trust`'s pure core.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use api::control::{TrustCheck, TrustSummary};
use cache::trusted_dir::TrustedDir;
use serde_json::Value;
use trust::client::{Limits, Trusted, UpdateError};
use trust::policy::{self, Accepted, ChannelRecord, PolicyError};
use trust::update::{self, RefreshError, Remote};

use crate::fetch::{Fetcher, RemoteError};

/// How far the clock may seem to go back (seconds) before an update is refused.
const CLOCK_SLACK: i64 = 300;

/// Why the endpoint could not verify what to run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrustError {
    /// No trusted root in the cache and none given.
    #[error("{dir} holds no trusted root: give the repository's root.json with --root (written by `imgctl trust init --out`)")]
    NoRoot {
        /// The trust directory.
        dir: PathBuf,
    },
    /// The root given or stored does not verify.
    #[error("root {path}: {source}")]
    BadRoot {
        /// The file.
        path: PathBuf,
        /// Why.
        source: UpdateError,
    },
    /// Reading or writing the trusted state failed.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        why: String,
    },
    /// The clock is behind the latest time an update used: someone may have set it back.
    #[error("the clock says {now}, before {high_water}, the latest time an update used: refusing to trust it")]
    ClockBack {
        /// The clock now.
        now: String,
        /// The high-water mark.
        high_water: String,
    },
    /// Every server was unreachable.
    #[error("no server reachable for metadata: {0}")]
    Unreachable(String),
    /// A server's metadata was refused (the first such refusal; every server was tried).
    #[error("metadata refused: {0}")]
    Refused(String),
    /// The signed metadata does not allow it.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No signed record of the channel or generation.
    #[error("{0} is not in the signed metadata")]
    NotFound(String),
}

/// What `CACHE/trust/local.json` holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Local {
    /// The latest time an update used (seconds since the epoch).
    clock_high_water: i64,
    /// The highest `min_epoch` ever seen for the family; never lowered.
    min_epoch: u64,
    /// The image family this endpoint runs.
    family: Option<String>,
}

/// A channel resolved to a generation this endpoint may run.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The signed channel record.
    pub channel: ChannelRecord,
    /// The generation.
    pub generation: Accepted,
}

impl Resolved {
    /// The manifest's digest.
    pub fn digest(&self) -> format::Digest {
        self.generation.manifest.parse().expect("checked to be 64 hex digits")
    }

    /// `IMAGE@N`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.generation.record.image, self.generation.record.generation)
    }
}

struct Inner {
    trusted: Trusted,
    local: Local,
    /// The role files on disk, to write only what changed.
    files: TrustedDir,
    /// The last check: when, and its error if it failed.
    last: Option<(i64, Option<String>)>,
    /// Since when checks have been failing on a refusal (not on unreachable servers).
    refused_since: Option<i64>,
}

/// The endpoint's trusted metadata.
pub struct TrustState {
    dir: PathBuf,
    arch: String,
    inner: Mutex<Inner>,
}

/// A `Remote` over one server of a fetcher.
struct ServerRemote<'a> {
    fetcher: &'a Fetcher,
    server: usize,
    transport_failed: bool,
}

impl Remote for ServerRemote<'_> {
    fn fetch(&mut self, name: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        let r = self.fetcher.get_file(self.server, &format!("/tuf/{name}"), max);
        if let Err(RemoteError::Transport { .. }) = &r {
            self.transport_failed = true;
        }
        r.map_err(|e| e.to_string())
    }
}

/// Seconds since the epoch by the workspace's clock (`cache::clock`, which tests can set).
pub fn unix_now() -> i64 {
    cache::clock::now()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |e| TrustError::Io { path: path.to_path_buf(), why: e.to_string() }
}

impl TrustState {
    /// Opens the trusted state in `cache/trust/`, starting from `root` (a file) the first
    /// time. `family` is the image family this endpoint runs (else the first channel's, then
    /// kept); `arch` its architecture.
    pub fn open(cache: &Path, root: Option<&Path>, family: Option<String>, arch: String) -> Result<TrustState, TrustError> {
        let dir = cache.join("trust");
        let files = TrustedDir::open(&dir, &["local.json"]).map_err(|e| TrustError::Io { path: e.path, why: e.source.to_string() })?;
        let (root_path, root_bytes) = match files.root() {
            Some(b) => (dir.join("root.json"), b.to_vec()),
            None => {
                let given = root.ok_or_else(|| TrustError::NoRoot { dir: dir.clone() })?;
                (given.to_path_buf(), std::fs::read(given).map_err(io_err(given))?)
            }
        };
        let trusted = update::load(&root_bytes, &files.others(), Limits::default())
            .map_err(|source| TrustError::BadRoot { path: root_path, source })?;
        let local_path = dir.join("local.json");
        let mut local: Local = match std::fs::read(&local_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| TrustError::Io { path: local_path.clone(), why: e.to_string() })?,
            Err(_) => Local::default(),
        };
        if let Some(f) = family {
            if local.family.as_deref() != Some(f.as_str()) {
                // Another family: its floor starts from what its own role says.
                local.min_epoch = 0;
            }
            local.family = Some(f);
        }
        let st = TrustState { dir, arch, inner: Mutex::new(Inner { trusted, local, files, last: None, refused_since: None }) };
        {
            let mut inner = st.inner.lock().unwrap();
            st.persist(&mut inner)?;
        }
        Ok(st)
    }

    /// Writes the roles whose bytes changed, removes those no longer trusted, and
    /// `local.json`. Each file is replaced atomically.
    fn persist(&self, inner: &mut Inner) -> Result<(), TrustError> {
        let Inner { trusted, files, .. } = inner;
        files.persist(trusted).map_err(|e| TrustError::Io { path: e.path, why: e.source.to_string() })?;
        let local = serde_json::to_vec_pretty(&inner.local).expect("serialises");
        let path = self.dir.join("local.json");
        cache::atomic::write(&path, &local).map_err(|e| TrustError::Io { path: e.path, why: e.source.to_string() })
    }

    /// Updates the metadata from the servers and resolves `channel`: its signed record, and
    /// the generation it names, signed by this endpoint's family, for its architecture, at or
    /// above the epoch floor.
    pub fn resolve_channel(&self, fetcher: &Fetcher, channel: &str) -> Result<Resolved, TrustError> {
        self.with_update(fetcher, |t, remote, now, local, arch| {
            let path = policy::channel_path(channel);
            let (file, role) = update::find(t, remote, &path, now)?.ok_or(Failure::NotFound(path))?;
            let rec = policy::channel_record(channel, &file, &role)?;
            let family = match &local.family {
                Some(f) => f.clone(),
                None => rec.target.strip_prefix("images/").and_then(|r| r.split('/').next()).unwrap_or("").to_string(),
            };
            policy::check_family(&rec, &family)?;
            let accepted = generation(t, remote, now, &rec.target, &family, arch, local)?;
            if rec.epoch != accepted.record.epoch {
                return Err(PolicyError::EpochMismatch {
                    channel: channel.into(),
                    target: rec.target.clone(),
                    claimed: rec.epoch,
                    signed: accepted.record.epoch,
                }
                .into());
            }
            local.family = Some(family);
            Ok(Resolved { channel: rec, generation: accepted })
        })
    }

    /// Updates the metadata and resolves generation `image@n` of this endpoint's family.
    pub fn resolve_generation(&self, fetcher: &Fetcher, image: &str, n: u64) -> Result<Accepted, TrustError> {
        self.with_update(fetcher, |t, remote, now, local, arch| {
            let family = local.family.clone().unwrap_or_else(|| image.to_string());
            let path = policy::generation_path(image, n);
            if image != family {
                return Err(Failure::NotFound(format!("{path} (this endpoint runs family {family})")));
            }
            generation(t, remote, now, &path, &family, arch, local)
        })
    }

    /// Runs `f` after a refresh at one fixed `now`, against each server in turn until one
    /// gives an answer; persists what was verified whatever happens.
    fn with_update<T>(
        &self,
        fetcher: &Fetcher,
        f: impl Fn(&mut Trusted, &mut ServerRemote, i64, &mut Local, &str) -> Result<T, Failure>,
    ) -> Result<T, TrustError> {
        let now = unix_now();
        let mut inner = self.inner.lock().unwrap();
        let inner = &mut *inner;
        let result = (|| {
            if now + CLOCK_SLACK < inner.local.clock_high_water {
                return Err(TrustError::ClockBack {
                    now: trust::time::format(now),
                    high_water: trust::time::format(inner.local.clock_high_water),
                });
            }
            let (mut unreachable, mut refused) = (Vec::new(), None);
            for (i, url) in fetcher.servers_in_order() {
                let mut remote = ServerRemote { fetcher, server: i, transport_failed: false };
                let mut local = inner.local.clone();
                let r = update::refresh(&mut inner.trusted, &mut remote, now)
                    .map_err(Failure::from)
                    .and_then(|_| f(&mut inner.trusted, &mut remote, now, &mut local, &self.arch));
                match r {
                    Ok(v) => {
                        local.clock_high_water = local.clock_high_water.max(now);
                        inner.local = local;
                        return Ok(v);
                    }
                    Err(Failure::Refresh(RefreshError::Fetch { why, .. })) if remote.transport_failed => unreachable.push(why),
                    Err(e) => {
                        tracing::warn!(server = %url, error = %e.to_error(), "metadata refused");
                        refused.get_or_insert(e.to_error());
                    }
                }
            }
            Err(refused.unwrap_or_else(|| TrustError::Unreachable(unreachable.join("; "))))
        })();
        match &result {
            Ok(_) => {
                inner.refused_since = None;
                inner.last = Some((now, None));
            }
            Err(e) => {
                if !matches!(e, TrustError::Unreachable(_)) {
                    inner.refused_since.get_or_insert(now);
                }
                inner.last = Some((now, Some(e.to_string())));
            }
        }
        if let Err(e) = self.persist(inner) {
            tracing::error!(error = %e, "cannot persist the trusted metadata");
        }
        result
    }

    /// The family this endpoint runs, once known.
    pub fn family(&self) -> Option<String> {
        self.inner.lock().unwrap().local.family.clone()
    }

    /// The generations the trusted signed metadata lists as withdrawn fleet-wide (`IMAGE@N`).
    pub fn withdrawn(&self) -> Vec<String> {
        policy::withdrawn(&self.inner.lock().unwrap().trusted)
    }

    /// For `imgfs status`: whether the trusted metadata is fresh, since when it is stale
    /// (expired, or refused on every check since), versions, floor, family, architecture.
    pub fn status(&self) -> TrustSummary {
        let inner = self.inner.lock().unwrap();
        let now = unix_now();
        let family_role = inner.local.family.as_deref().map(policy::family_role);
        let mut roles = vec!["targets", policy::CHANNELS_ROLE];
        roles.extend(family_role.as_deref());
        let valid_until = inner.trusted.valid_until(&roles);
        let expired_since = (valid_until <= now).then_some(valid_until);
        let stale_since = match (expired_since, inner.refused_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let versions: BTreeMap<String, u64> = inner
            .trusted
            .files()
            .into_iter()
            .filter_map(|(r, b)| {
                let v: Value = serde_json::from_slice(b).ok()?;
                Some((r, v["signed"]["version"].as_u64()?))
            })
            .collect();
        TrustSummary {
            fresh: stale_since.is_none(),
            stale_since: stale_since.map(trust::time::format),
            valid_until: (valid_until > i64::MIN).then(|| trust::time::format(valid_until)),
            last_check: inner.last.as_ref().map(|(t, e)| TrustCheck { at: trust::time::format(*t), error: e.clone() }),
            versions,
            min_epoch: inner.local.min_epoch,
            family: inner.local.family.clone(),
            arch: self.arch.clone(),
            clock_high_water: trust::time::format(inner.local.clock_high_water),
        }
    }
}

/// The generation at target `path` for `family` and `arch`, the floor raised to what the
/// family's role says.
fn generation(
    t: &mut Trusted,
    remote: &mut ServerRemote,
    now: i64,
    path: &str,
    family: &str,
    arch: &str,
    local: &mut Local,
) -> Result<Accepted, Failure> {
    let found = update::find(t, remote, path, now)?;
    let floor = policy::floor(t, family, local.min_epoch);
    local.min_epoch = floor;
    let (file, role) = found.ok_or_else(|| Failure::Policy(PolicyError::NotSigned { path: path.into() }))?;
    let accepted = policy::check_generation(path, &file, &role, family, arch, floor)?;
    // The withdrawn list rides in the channels role, which a generation's search never reaches.
    update::load_delegated(t, remote, policy::CHANNELS_ROLE, now)?;
    Ok(policy::check_not_withdrawn(t, accepted)?)
}

/// A failure against one server.
#[derive(Debug)]
enum Failure {
    Refresh(RefreshError),
    Policy(PolicyError),
    NotFound(String),
}

impl From<RefreshError> for Failure {
    fn from(e: RefreshError) -> Failure {
        Failure::Refresh(e)
    }
}

impl From<PolicyError> for Failure {
    fn from(e: PolicyError) -> Failure {
        Failure::Policy(e)
    }
}

impl Failure {
    fn to_error(&self) -> TrustError {
        match self {
            Failure::Refresh(e) => TrustError::Refused(e.to_string()),
            Failure::Policy(e) => TrustError::Policy(e.clone()),
            Failure::NotFound(p) => TrustError::NotFound(p.clone()),
        }
    }
}
