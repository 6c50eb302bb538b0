//! The client's update workflow (TUF 1.0 section 5) over a repository it reaches through a
//! `Remote`: the root chain, timestamp, snapshot and top-level targets, then the delegated
//! roles a target search needs. Which file to fetch, and how large it may be, is decided
//! here; the caller does the IO and persists `Trusted::files()` afterwards (also after a
//! failure: every step that succeeded is trusted).

use crate::client::{Lookup, Trusted, UpdateError};
use crate::metadata::TargetFile;
use crate::sign::metadata_file;

/// Where metadata comes from.
pub trait Remote {
    /// The bytes of metadata file `name` (relative to the repository's metadata URL), at
    /// most `max` of them: a longer file is an error, not a truncated answer. `Ok(None)`
    /// when the repository says it has no such file (HTTP 404).
    fn fetch(&mut self, name: &str, max: usize) -> Result<Option<Vec<u8>>, String>;
}

/// Why an update stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The file could not be downloaded.
    #[error("cannot fetch {file}: {why}")]
    Fetch {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The repository does not have a file the update needs.
    #[error("the repository has no {file}")]
    Absent {
        /// The file.
        file: String,
    },
    /// The file was refused.
    #[error("{file}: {source}")]
    Refused {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: UpdateError,
    },
    /// Trusted metadata has expired and nothing newer was accepted.
    #[error(transparent)]
    Stale(UpdateError),
}

fn get(remote: &mut impl Remote, file: &str, max: usize) -> Result<Vec<u8>, RefreshError> {
    match remote.fetch(file, max) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(RefreshError::Absent { file: file.into() }),
        Err(why) => Err(RefreshError::Fetch { file: file.into(), why }),
    }
}

fn refused(file: &str) -> impl FnOnce(UpdateError) -> RefreshError + '_ {
    move |source| RefreshError::Refused { file: file.into(), source }
}

/// Updates the top-level metadata at `now` (5.3-5.6): newer roots one version at a time,
/// then the timestamp, the snapshot it names and the targets the snapshot names (each only
/// if its version changed); finally every one of them must be fresh at `now`.
pub fn refresh(t: &mut Trusted, remote: &mut impl Remote, now: i64) -> Result<(), RefreshError> {
    let max_root = t.root_limit();
    for _ in 0..t.root_rotations() {
        let file = metadata_file("root", Some(t.root().common.version + 1));
        match remote.fetch(&file, max_root) {
            Ok(Some(bytes)) => t.update_root(&bytes).map_err(refused(&file))?,
            Ok(None) => break,
            Err(why) => return Err(RefreshError::Fetch { file, why }),
        }
    }
    t.check_root(now).map_err(RefreshError::Stale)?;

    let file = metadata_file("timestamp", None);
    let bytes = get(remote, &file, t.timestamp_limit())?;
    t.update_timestamp(&bytes, now).map_err(refused(&file))?;

    let named = t.timestamp().and_then(|ts| ts.snapshot()).map(|m| m.version).expect("a trusted timestamp names a snapshot");
    if t.snapshot().map(|s| s.common.version) != Some(named) {
        let file = metadata_file("snapshot", t.root().consistent_snapshot.then_some(named));
        let bytes = get(remote, &file, t.snapshot_max())?;
        t.update_snapshot(&bytes, now).map_err(refused(&file))?;
    }
    load_role(t, remote, "targets", "root", now)?;
    t.check_fresh(&["timestamp", "snapshot", "targets"], now).map_err(RefreshError::Stale)
}

/// Loads `role` as the top-level targets role delegates it, at the version the trusted
/// snapshot names (after a `refresh`), and checks it is fresh; `Ok(false)` if targets does not
/// delegate it. For a role read for its own data (the `channels` role's withdrawn list) when
/// no target search reached it.
pub fn load_delegated(t: &mut Trusted, remote: &mut impl Remote, role: &str, now: i64) -> Result<bool, RefreshError> {
    let delegated = t.targets("targets").and_then(|r| r.delegations.as_ref()).is_some_and(|d| d.roles.iter().any(|r| r.name == role));
    if !delegated {
        return Ok(false);
    }
    load_role(t, remote, role, "targets", now)?;
    t.check_fresh(&[role], now).map_err(RefreshError::Stale)?;
    Ok(true)
}

/// Makes targets role `role` the version the trusted snapshot names (fetching it if the
/// trusted one is another version or absent).
fn load_role(t: &mut Trusted, remote: &mut impl Remote, role: &str, delegator: &str, now: i64) -> Result<(), RefreshError> {
    let file_name = format!("{role}.json");
    let named = t.snapshot().and_then(|s| s.meta.get(&file_name)).map(|m| m.version);
    let Some(named) = named else {
        return Err(RefreshError::Refused {
            file: metadata_file(role, None),
            source: UpdateError::Missing { role: role.into(), why: "the snapshot does not list it".into() },
        });
    };
    if t.targets(role).map(|r| r.common.version) == Some(named) {
        match t.verified_by(role) {
            Some((d, _)) if d == delegator => return Ok(()),
            // The same file, reached through another delegator: verified against this one.
            Some((_, bytes)) => {
                let bytes = bytes.to_vec();
                return t.update_targets(role, delegator, &bytes, now).map_err(refused(&metadata_file(role, None)));
            }
            None => {}
        }
    }
    let file = metadata_file(role, t.root().consistent_snapshot.then_some(named));
    let bytes = get(remote, &file, t.targets_max(role))?;
    t.update_targets(role, delegator, &bytes, now).map_err(refused(&file))
}

/// Finds target `path` (5.7) after a `refresh`: walks the delegations, loading each role the
/// search reaches. `Ok(None)` when no role trusted for the path lists it. The role that
/// lists it must be fresh at `now`.
pub fn find(t: &mut Trusted, remote: &mut impl Remote, path: &str, now: i64) -> Result<Option<(TargetFile, String)>, RefreshError> {
    for _ in 0..=t.delegation_limit() {
        match t.lookup(path) {
            Lookup::Found(file, role) => {
                t.check_fresh(&[role.as_str()], now).map_err(RefreshError::Stale)?;
                return Ok(Some((file, role)));
            }
            Lookup::NotFound => return Ok(None),
            Lookup::Need { role, delegator } => load_role(t, remote, &role, &delegator, now)?,
        }
    }
    Ok(None)
}

/// Rebuilds the trusted state from files persisted earlier: `root` (which must verify),
/// then whatever of `others` (role name, exact bytes) still verifies against it, in order
/// timestamp, snapshot, targets, delegated roles. Expiry is not checked here (an expired
/// file is still the floor for versions); a file that no longer verifies is left out and
/// will be fetched again.
pub fn load(root: &[u8], others: &[(String, Vec<u8>)], limits: crate::client::Limits) -> Result<Trusted, UpdateError> {
    let mut t = Trusted::new(root, limits)?;
    let get = |role: &str| others.iter().find(|(r, _)| r == role).map(|(_, b)| b.as_slice());
    if let Some(b) = get("timestamp") {
        let _ = t.update_timestamp(b, i64::MIN);
    }
    if let Some(b) = get("snapshot") {
        let _ = t.update_snapshot(b, i64::MIN);
    }
    if let Some(b) = get("targets") {
        let _ = t.update_targets("targets", "root", b, i64::MIN);
    }
    // Delegated roles: each once its delegator is loaded.
    let mut pending: Vec<&(String, Vec<u8>)> =
        others.iter().filter(|(r, _)| !matches!(r.as_str(), "root" | "timestamp" | "snapshot" | "targets")).collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|(role, bytes)| {
            let delegator = t.delegator_of(role);
            match delegator {
                Some(d) => {
                    let _ = t.update_targets(role, &d, bytes, i64::MIN);
                    false
                }
                None => true,
            }
        });
        if pending.len() == before {
            break;
        }
    }
    Ok(t)
}
