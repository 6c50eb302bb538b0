//! Users' deferrals of switches (`imgfs defer MOUNTPOINT --for 4h`): kept in
//! `STATE/deferrals.json` by namespace path, written atomically by the command and read by the
//! agent's switch gate (`window::gate`). A deferral is recorded only where the mount's group
//! window allows it, as the last desired state the agent kept (`STATE/desired.json`) says.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use api::fleet::{Desired, DesiredMount};

use super::config::AgentConfig;
use super::window::Deferral;

/// `STATE/deferrals.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferrals {
    /// By namespace path.
    #[serde(default)]
    pub deferrals: BTreeMap<String, Deferral>,
}

/// Why a deferral was not recorded (or the file not read).
#[derive(Debug, thiserror::Error)]
pub enum DeferError {
    /// The agent has not kept a desired state yet (it never checked in).
    #[error("{} does not exist: the agent has not received its desired state yet, so no window policy is known", path.display())]
    NoDesiredState {
        /// The file.
        path: PathBuf,
    },
    /// No mount of the desired state is at that mount point.
    #[error("no mount of the agent's namespace is at {}", mountpoint.display())]
    NotAMount {
        /// As given.
        mountpoint: PathBuf,
    },
    /// The mount's group has no maintenance window, so no policy allows deferring.
    #[error("{path}: its group has no maintenance window, so no policy allows deferring its switches")]
    NoPolicy {
        /// Namespace path.
        path: String,
    },
    /// The group's window forbids deferring.
    #[error("{path}: its group's maintenance window does not allow deferring (max_defer_seconds is 0)")]
    Forbidden {
        /// Namespace path.
        path: String,
    },
    /// Longer than the policy allows.
    #[error("{path}: {asked} s is longer than its group's window allows ({max} s at most)")]
    TooLong {
        /// Namespace path.
        path: String,
        /// Seconds asked.
        asked: u64,
        /// Seconds allowed.
        max: u64,
    },
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `STATE/deferrals.json` could not be written.
    #[error(transparent)]
    Write(cache::atomic::WriteError),
    /// A file does not hold what it should.
    #[error("{}: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// What `defer` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deferred {
    /// Namespace path.
    pub path: String,
    /// The deferral recorded; None when cleared.
    pub deferral: Option<Deferral>,
}

/// The file.
pub fn file(state: &Path) -> PathBuf {
    state.join("deferrals.json")
}

/// Reads `STATE/deferrals.json` (none yet: empty).
pub fn read(state: &Path) -> Result<Deferrals, DeferError> {
    let path = file(state);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| DeferError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deferrals::default()),
        Err(source) => Err(DeferError::Io { path, source }),
    }
}

fn write(state: &Path, deferrals: &Deferrals) -> Result<(), DeferError> {
    let path = file(state);
    let bytes = serde_json::to_vec_pretty(deferrals).expect("serialises");
    cache::atomic::write(&path, &bytes).map_err(DeferError::Write)
}

/// The desired mount at `mountpoint`: its local path (under `mount_prefix`) or its namespace
/// path.
fn find<'a>(config: &AgentConfig, desired: &'a Desired, mountpoint: &Path) -> Option<&'a DesiredMount> {
    let given = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let given = given.components().collect::<PathBuf>();
    desired
        .mounts
        .iter()
        .find(|m| config.local_path(&m.mount.path) == given)
        .or_else(|| desired.mounts.iter().find(|m| Path::new(&m.mount.path) == given))
}

/// Whether a deferral of `seconds` is allowed for `mount`.
pub fn allowed(mount: &DesiredMount, seconds: u64) -> Result<(), DeferError> {
    let path = mount.mount.path.clone();
    let Some(window) = &mount.window else { return Err(DeferError::NoPolicy { path }) };
    match window.max_defer_seconds {
        0 => Err(DeferError::Forbidden { path }),
        max if seconds > max => Err(DeferError::TooLong { path, asked: seconds, max }),
        _ => Ok(()),
    }
}

/// Records a deferral of the switches of the mount at `mountpoint` for `seconds` from `now`, or
/// clears it (`seconds` None). A deferral is checked against the mount's window as the last
/// desired state says; clearing needs no policy.
pub fn defer(config: &AgentConfig, mountpoint: &Path, seconds: Option<u64>, now: i64) -> Result<Deferred, DeferError> {
    let desired_path = config.state.join("desired.json");
    let desired: Desired = match std::fs::read(&desired_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| DeferError::Corrupt { path: desired_path.clone(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DeferError::NoDesiredState { path: desired_path }),
        Err(source) => return Err(DeferError::Io { path: desired_path, source }),
    };
    let mount = find(config, &desired, mountpoint).ok_or_else(|| DeferError::NotAMount { mountpoint: mountpoint.to_path_buf() })?;
    let path = mount.mount.path.clone();
    let mut deferrals = read(&config.state)?;
    let deferral = match seconds {
        None => {
            deferrals.deferrals.remove(&path);
            None
        }
        Some(seconds) => {
            allowed(mount, seconds)?;
            let d = Deferral { made: now, until: now.saturating_add(seconds.min(i64::MAX as u64 / 2) as i64) };
            deferrals.deferrals.insert(path.clone(), d);
            Some(d)
        }
    };
    // Deferrals that ended are dropped on the way.
    deferrals.deferrals.retain(|_, d| d.until > now);
    write(&config.state, &deferrals)?;
    Ok(Deferred { path, deferral })
}
