//! The client's trusted metadata and the update rules of TUF 1.0 section 5: roots advance
//! one version at a time, signed by both the old and the new root; versions never go down;
//! snapshot and targets must be the exact versions (and bytes) the role above names; nothing
//! expired is trusted for an update; a rotated timestamp or snapshot key discards what it
//! signed (recovery from a fast-forward attack). Every call takes the bytes received and the
//! one `now` of the update.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest as _, Sha256, Sha512};

use crate::keys::{check_threshold, KeyId, PublicKey, ThresholdError};
use crate::metadata::{Envelope, MetaError, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets, Timestamp};

/// Largest metadata files accepted (bytes), where no signed length says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `root.json`.
    pub root: usize,
    /// `timestamp.json`.
    pub timestamp: usize,
    /// `snapshot.json`, when the timestamp gives no length.
    pub snapshot: usize,
    /// A targets file, when the snapshot gives no length.
    pub targets: usize,
    /// Root versions fetched in one update at most.
    pub root_rotations: u64,
    /// Targets roles visited in one delegation walk at most.
    pub delegations: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { root: 512 << 10, timestamp: 16 << 10, snapshot: 4 << 20, targets: 16 << 20, root_rotations: 1024, delegations: 32 }
    }
}

/// Why an update was refused. The trusted state is unchanged by a refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Malformed, too long or of the wrong type.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Not signed by enough of the role's keys.
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
    /// An older version than the one trusted.
    #[error("{role}: version {got} is older than the trusted version {trusted} (rollback refused)")]
    Rollback {
        /// The role.
        role: String,
        /// The version trusted.
        trusted: u64,
        /// The version offered.
        got: u64,
    },
    /// Not the version the role above names (or, for root, not the next one).
    #[error("{role}: version {got}, expected {expected}")]
    WrongVersion {
        /// The role.
        role: String,
        /// The version required.
        expected: u64,
        /// The version offered.
        got: u64,
    },
    /// Past its expiry at the update's time.
    #[error("{role}: expired at {expires} (now {now})", expires = crate::time::format(*.expires), now = crate::time::format(*.now))]
    Expired {
        /// The role.
        role: String,
        /// Its expiry, seconds since the epoch.
        expires: i64,
        /// The update's time.
        now: i64,
    },
    /// Bytes that do not match the length or hashes the role above signed.
    #[error("{role}: the file does not match the {what} its parent signed")]
    Mismatch {
        /// The role.
        role: String,
        /// `length` or the hash algorithm.
        what: String,
    },
    /// Something the update needs is not trusted yet or not listed.
    #[error("{role}: {why}")]
    Missing {
        /// The role.
        role: String,
        /// What is missing.
        why: String,
    },
}

/// Where a target search stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Found: the file, and the role that signed it.
    Found(TargetFile, String),
    /// The walk reached a delegated role not loaded yet: load it (`update_targets`), then
    /// ask again.
    Need {
        /// The role to load.
        role: String,
        /// The role delegating to it.
        delegator: String,
    },
    /// No role trusted for this path lists it.
    NotFound,
}

/// The metadata a client trusts, each role with the exact bytes it was received as.
#[derive(Debug, Clone)]
pub struct Trusted {
    limits: Limits,
    root: (Root, Vec<u8>),
    timestamp: Option<(Timestamp, Vec<u8>)>,
    snapshot: Option<(Snapshot, Vec<u8>)>,
    /// Loaded targets roles: the role, its exact bytes, and the delegator it was verified
    /// against (`root` for `targets`).
    targets: BTreeMap<String, (Targets, Vec<u8>, String)>,
}

fn verify(env: &Envelope, role: &str, keys: &BTreeMap<KeyId, PublicKey>, rk: Option<&RoleKeys>) -> Result<(), UpdateError> {
    let rk = rk.ok_or_else(|| UpdateError::Missing { role: role.into(), why: "no keys are trusted for this role".into() })?;
    check_threshold(role, &env.message, &env.signatures, keys, &rk.keyids, rk.threshold)?;
    Ok(())
}

/// Checks `bytes` against the length and hashes `meta` gives (those it gives).
fn matches(role: &str, bytes: &[u8], meta: &MetaFile) -> Result<(), UpdateError> {
    let mismatch = |what: &str| UpdateError::Mismatch { role: role.into(), what: what.into() };
    if meta.length.is_some_and(|l| l != bytes.len() as u64) {
        return Err(mismatch("length"));
    }
    for (alg, want) in &meta.hashes {
        let got = match alg.as_str() {
            "sha256" => hex::encode(Sha256::digest(bytes)),
            "sha512" => hex::encode(Sha512::digest(bytes)),
            _ => continue,
        };
        if !got.eq_ignore_ascii_case(want) {
            return Err(mismatch(alg));
        }
    }
    Ok(())
}

/// Whether `bytes` are target `file`: its length, and every hash it gives that this client
/// knows (sha256, sha512), at least one of them.
pub fn target_matches(bytes: &[u8], file: &TargetFile) -> bool {
    let known = file.hashes.keys().any(|a| a == "sha256" || a == "sha512");
    let meta = MetaFile { version: 0, length: Some(file.length), hashes: file.hashes.clone() };
    known && matches("target", bytes, &meta).is_ok()
}

fn fresh(role: &str, expires: i64, now: i64) -> Result<(), UpdateError> {
    if expires <= now {
        return Err(UpdateError::Expired { role: role.into(), expires, now });
    }
    Ok(())
}

impl Trusted {
    /// Starts from a root the client already trusts (shipped with it, or the last one it
    /// verified): it must be signed by its own root keys; its expiry is checked later.
    pub fn new(root: &[u8], limits: Limits) -> Result<Trusted, UpdateError> {
        let env = Envelope::parse("root", root, limits.root)?;
        let r: Root = env.decode("root", "root")?;
        verify(&env, "root", &r.keys, r.role("root"))?;
        Ok(Trusted { limits, root: (r, root.to_vec()), timestamp: None, snapshot: None, targets: BTreeMap::new() })
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root.0
    }

    /// The exact bytes of each trusted role's metadata, by role name, for persisting.
    pub fn files(&self) -> Vec<(String, &[u8])> {
        let mut out = vec![("root".to_string(), self.root.1.as_slice())];
        out.extend(self.timestamp.as_ref().map(|t| ("timestamp".to_string(), t.1.as_slice())));
        out.extend(self.snapshot.as_ref().map(|s| ("snapshot".to_string(), s.1.as_slice())));
        out.extend(self.targets.iter().map(|(n, t)| (n.clone(), t.1.as_slice())));
        out
    }

    /// The trusted timestamp, if any.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        self.timestamp.as_ref().map(|t| &t.0)
    }

    /// The trusted snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref().map(|s| &s.0)
    }

    /// A trusted targets role, if loaded.
    pub fn targets(&self, role: &str) -> Option<&Targets> {
        self.targets.get(role).map(|t| &t.0)
    }

    /// Accepts root version N+1 (5.3.4-5.3.9): signed by a threshold of the trusted root's
    /// root keys and of its own. Its expiry is not checked here: intermediate roots may have
    /// expired; call `check_root` after the last one. If the timestamp or snapshot keys
    /// changed, the trusted timestamp and snapshot are discarded (5.3.11).
    pub fn update_root(&mut self, bytes: &[u8]) -> Result<(), UpdateError> {
        let env = Envelope::parse("root", bytes, self.limits.root)?;
        let new: Root = env.decode("root", "root")?;
        let old = &self.root.0;
        verify(&env, "root", &old.keys, old.role("root"))?;
        verify(&env, "root", &new.keys, new.role("root"))?;
        if new.common.version != old.common.version + 1 {
            return Err(UpdateError::WrongVersion { role: "root".into(), expected: old.common.version + 1, got: new.common.version });
        }
        let rotated = |role: &str| {
            let keys = |r: &Root| {
                r.role(role).map(|rk| {
                    (rk.threshold, rk.keyids.iter().filter_map(|id| r.keys.get(id)).map(|k| k.fingerprint()).collect::<HashSet<_>>())
                })
            };
            keys(old) != keys(&new)
        };
        if rotated("timestamp") || rotated("snapshot") {
            self.timestamp = None;
            self.snapshot = None;
        }
        self.root = (new, bytes.to_vec());
        self.verify_again_below("root");
        Ok(())
    }

    /// Fails with `Expired` if any of `roles` (`root`, `timestamp`, `snapshot` or a targets
    /// role) is trusted and expired at `now`. A trusted file can only have been fresh when it
    /// was accepted; this checks that it still is (a freeze attack replays it unchanged).
    pub fn check_fresh(&self, roles: &[&str], now: i64) -> Result<(), UpdateError> {
        for role in roles {
            let expires = match *role {
                "root" => Some(self.root.0.common.expires),
                "timestamp" => self.timestamp().map(|t| t.common.expires),
                "snapshot" => self.snapshot().map(|s| s.common.expires),
                other => self.targets(other).map(|t| t.common.expires),
            };
            if let Some(expires) = expires {
                fresh(role, expires, now)?;
            }
        }
        Ok(())
    }

    /// The earliest expiry among the trusted timestamp, snapshot and `roles`: until then the
    /// trusted state may be used without a new update.
    pub fn valid_until(&self, roles: &[&str]) -> i64 {
        let mut until = self.root.0.common.expires;
        until = until.min(self.timestamp().map_or(i64::MIN, |t| t.common.expires));
        until = until.min(self.snapshot().map_or(i64::MIN, |s| s.common.expires));
        for r in roles {
            until = until.min(self.targets(r).map_or(i64::MIN, |t| t.common.expires));
        }
        until
    }

    /// The largest root file accepted.
    pub fn root_limit(&self) -> usize {
        self.limits.root
    }

    /// The largest timestamp file accepted.
    pub fn timestamp_limit(&self) -> usize {
        self.limits.timestamp
    }

    /// The most targets roles one search may visit.
    pub fn delegation_limit(&self) -> usize {
        self.limits.delegations
    }

    /// The delegator a loaded targets role was verified against, and its exact bytes.
    pub fn verified_by(&self, role: &str) -> Option<(&str, &[u8])> {
        self.targets.get(role).map(|(_, b, d)| (d.as_str(), b.as_slice()))
    }

    /// The loaded targets role that delegates to `role`, if any.
    pub fn delegator_of(&self, role: &str) -> Option<String> {
        self.targets
            .iter()
            .find(|(_, (t, _, _))| t.delegations.iter().flat_map(|d| &d.roles).any(|d| d.name == role))
            .map(|(n, _)| n.clone())
    }

    /// The most root versions one update may step through.
    pub fn root_rotations(&self) -> u64 {
        self.limits.root_rotations
    }

    /// Checks that the trusted root has not expired at `now` (5.3.10, a freeze attack).
    pub fn check_root(&self, now: i64) -> Result<(), UpdateError> {
        fresh("root", self.root.0.common.expires, now)
    }

    /// Accepts a timestamp (5.4). `Ok(false)` when it is the version already trusted (no
    /// update).
    pub fn update_timestamp(&mut self, bytes: &[u8], now: i64) -> Result<bool, UpdateError> {
        let env = Envelope::parse("timestamp", bytes, self.limits.timestamp)?;
        let new: Timestamp = env.decode("timestamp", "timestamp")?;
        let root = &self.root.0;
        verify(&env, "timestamp", &root.keys, root.role("timestamp"))?;
        let snap =
            new.snapshot().ok_or_else(|| UpdateError::Missing { role: "timestamp".into(), why: "it names no snapshot.json".into() })?;
        if let Some((old, _)) = &self.timestamp {
            if new.common.version < old.common.version {
                return Err(UpdateError::Rollback { role: "timestamp".into(), trusted: old.common.version, got: new.common.version });
            }
            if new.common.version == old.common.version {
                return Ok(false);
            }
            let old_snap = old.snapshot().map_or(0, |m| m.version);
            if snap.version < old_snap {
                return Err(UpdateError::Rollback { role: "snapshot".into(), trusted: old_snap, got: snap.version });
            }
        }
        fresh("timestamp", new.common.expires, now)?;
        self.timestamp = Some((new, bytes.to_vec()));
        Ok(true)
    }

    /// The largest snapshot file to download: what the timestamp signed, else the limit.
    pub fn snapshot_max(&self) -> usize {
        self.timestamp().and_then(|t| t.snapshot()).and_then(|m| m.length).map_or(self.limits.snapshot, |l| l as usize)
    }

    /// Accepts a snapshot (5.5): the bytes the timestamp names, signed by the snapshot
    /// keys, the version the timestamp names, no targets file older or missing compared
    /// with the trusted snapshot, not expired.
    pub fn update_snapshot(&mut self, bytes: &[u8], now: i64) -> Result<(), UpdateError> {
        let ts = self.timestamp().ok_or_else(|| UpdateError::Missing { role: "snapshot".into(), why: "no trusted timestamp".into() })?;
        let meta = ts.snapshot().expect("checked when the timestamp was accepted").clone();
        if bytes.len() > self.snapshot_max() {
            return Err(MetaError::TooLong { role: "snapshot".into(), len: bytes.len(), max: self.snapshot_max() }.into());
        }
        matches("snapshot", bytes, &meta)?;
        let env = Envelope::parse("snapshot", bytes, self.limits.snapshot.max(self.snapshot_max()))?;
        let new: Snapshot = env.decode("snapshot", "snapshot")?;
        let root = &self.root.0;
        verify(&env, "snapshot", &root.keys, root.role("snapshot"))?;
        if new.common.version != meta.version {
            return Err(UpdateError::WrongVersion { role: "snapshot".into(), expected: meta.version, got: new.common.version });
        }
        if let Some((old, _)) = &self.snapshot {
            for (file, m) in &old.meta {
                match new.meta.get(file) {
                    None => {
                        return Err(UpdateError::Missing { role: "snapshot".into(), why: format!("{file} was listed before and is gone") })
                    }
                    Some(n) if n.version < m.version => {
                        return Err(UpdateError::Rollback {
                            role: file.trim_end_matches(".json").into(),
                            trusted: m.version,
                            got: n.version,
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        fresh("snapshot", new.common.expires, now)?;
        // Targets files not at the version the new snapshot names are no longer current.
        self.targets.retain(|role, (t, _, _)| new.meta.get(&format!("{role}.json")).is_some_and(|m| m.version == t.common.version));
        self.snapshot = Some((new, bytes.to_vec()));
        Ok(())
    }

    /// The largest file to download for targets role `role`.
    pub fn targets_max(&self, role: &str) -> usize {
        self.snapshot().and_then(|s| s.meta.get(&format!("{role}.json"))).and_then(|m| m.length).map_or(self.limits.targets, |l| l as usize)
    }

    /// Accepts the metadata of targets role `role` (5.6), delegated by `delegator` (or, for
    /// `targets`, by the root): the version the snapshot names, signed by the keys the
    /// delegator lists, not expired. Roles loaded earlier through `role` are verified again
    /// against its new delegations.
    pub fn update_targets(&mut self, role: &str, delegator: &str, bytes: &[u8], now: i64) -> Result<(), UpdateError> {
        let new = self.verify_targets(role, delegator, bytes)?;
        fresh(role, new.common.expires, now)?;
        self.targets.insert(role.to_string(), (new, bytes.to_vec(), delegator.to_string()));
        self.verify_again_below(role);
        Ok(())
    }

    /// `bytes` as targets role `role` delegated by `delegator`, checked against the snapshot
    /// and the delegator's keys (not its expiry).
    fn verify_targets(&self, role: &str, delegator: &str, bytes: &[u8]) -> Result<Targets, UpdateError> {
        let snap = self.snapshot().ok_or_else(|| UpdateError::Missing { role: role.into(), why: "no trusted snapshot".into() })?;
        let meta = snap
            .meta
            .get(&format!("{role}.json"))
            .ok_or_else(|| UpdateError::Missing { role: role.into(), why: "the snapshot does not list it".into() })?
            .clone();
        let max = self.targets_max(role);
        if bytes.len() > max {
            return Err(MetaError::TooLong { role: role.into(), len: bytes.len(), max }.into());
        }
        matches(role, bytes, &meta)?;
        let env = Envelope::parse(role, bytes, max)?;
        let new: Targets = env.decode(role, "targets")?;
        self.check_signed(role, delegator, &env)?;
        if new.common.version != meta.version {
            return Err(UpdateError::WrongVersion { role: role.into(), expected: meta.version, got: new.common.version });
        }
        Ok(new)
    }

    /// Checks that `env` is signed for targets role `role` by the keys `delegator` (the root
    /// for `targets`) lists for it.
    fn check_signed(&self, role: &str, delegator: &str, env: &Envelope) -> Result<(), UpdateError> {
        if role == "targets" {
            let root = &self.root.0;
            return verify(env, role, &root.keys, root.role("targets"));
        }
        let parent = self
            .targets(delegator)
            .ok_or_else(|| UpdateError::Missing { role: role.into(), why: format!("its delegator {delegator} is not loaded") })?;
        let d = parent.delegations.as_ref().and_then(|d| d.roles.iter().find(|r| r.name == role).map(|r| (d, r)));
        let (ds, r) = d.ok_or_else(|| UpdateError::Missing { role: role.into(), why: format!("{delegator} does not delegate to it") })?;
        verify(env, role, &ds.keys, Some(&RoleKeys { keyids: r.keyids.clone(), threshold: r.threshold }))
    }

    /// After `delegator` (`root` or a targets role) changed: the roles verified against its
    /// earlier version are verified again against the new one, and forgotten (to be fetched
    /// again) if they no longer verify, as when a delegation's keys or threshold changed
    /// without the delegated role's version changing. What those roles delegate in turn is
    /// unchanged, so it needs no second look.
    fn verify_again_below(&mut self, delegator: &str) {
        let below: Vec<(String, Vec<u8>)> = self
            .targets
            .iter()
            .filter(|(name, (_, _, d))| d == delegator && *name != delegator)
            .map(|(name, (_, b, _))| (name.clone(), b.clone()))
            .collect();
        for (role, bytes) in below {
            let still = Envelope::parse(&role, &bytes, bytes.len()).is_ok_and(|env| self.check_signed(&role, delegator, &env).is_ok());
            if !still {
                self.targets.remove(&role);
            }
        }
    }

    /// Looks `path` up (5.6.7): `targets` first, then its delegations in order, depth first,
    /// each only for the paths it is delegated, stopping at a terminating delegation that
    /// matches.
    pub fn lookup(&self, path: &str) -> Lookup {
        let mut visited = HashSet::new();
        match self.walk("targets", None, path, &mut visited) {
            Ok(Some(found)) => found,
            Ok(None) | Err(()) => Lookup::NotFound,
        }
    }

    /// `Ok(Some)`: an answer; `Ok(None)`: not under `role`, go on; `Err`: stop the search.
    fn walk(&self, role: &str, delegator: Option<&str>, path: &str, visited: &mut HashSet<String>) -> Result<Option<Lookup>, ()> {
        if !visited.insert(role.to_string()) || visited.len() > self.limits.delegations {
            return Ok(None);
        }
        let delegator = delegator.unwrap_or("root");
        // A role loaded through another delegator is verified again against this one (two
        // delegators may name roles of the same name with different keys).
        let Some(t) = self.targets(role).filter(|_| self.verified_by(role).is_some_and(|(d, _)| d == delegator)) else {
            return Ok(Some(Lookup::Need { role: role.into(), delegator: delegator.into() }));
        };
        if let Some(f) = t.targets.get(path) {
            return Ok(Some(Lookup::Found(f.clone(), role.into())));
        }
        for d in t.delegations.iter().flat_map(|d| &d.roles) {
            if !d.covers(path) {
                continue;
            }
            if let Some(answer) = self.walk(&d.name, Some(role), path, visited)? {
                return Ok(Some(answer));
            }
            if d.terminating {
                return Err(());
            }
        }
        Ok(None)
    }
}
