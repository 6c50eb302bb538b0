//! The server's TUF repository. Engineers upload what their offline keys sign (root, targets,
//! one role per image family) and it is kept as received after checking it; the server signs
//! the online roles itself (`channels`, `snapshot`, `timestamp`) on every change and again
//! before they expire. Files live in `DATA/tuf/repo/` under the names clients fetch
//! (`N.ROLE.json`, consistent snapshots; `timestamp.json`; an unversioned copy of each
//! role's current file), online keys in `DATA/tuf/keys/ROLE-KEYID.key` (mode 0600).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};
use trust::client::{Limits, Trusted};
use trust::keys::{check_threshold, KeyId, PublicKey, SecretKey};
use trust::metadata::{Envelope, Root, Snapshot, Targets, Timestamp};
use trust::policy::{self, ChannelRecord, GenerationRecord, CHANNELS_ROLE};
use trust::sign::{self, metadata_file};

use crate::meta::Meta;

/// Versions of `snapshot` and `channels` kept however old (see `Repo::prune`).
pub const KEEP_VERSIONS: u64 = 16;

/// The roles whose keys the server holds.
pub const ONLINE_ROLES: [&str; 3] = ["timestamp", "snapshot", CHANNELS_ROLE];

/// How long each online role's signature is valid, seconds. It is re-signed when less than
/// half of that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `timestamp.json`.
    pub timestamp: i64,
    /// `snapshot.json`.
    pub snapshot: i64,
    /// The `channels` role.
    pub channels: i64,
    /// The type of the online keys the server makes (`tuf_key_type`).
    pub key_type: trust::keys::KeyType,
    /// How often endpoints should check their channel (`poll_seconds`), signed into every
    /// channel record.
    pub poll_seconds: u64,
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// No root has been uploaded yet.
    #[error("the repository has no root yet: run `imgctl trust init`")]
    NotInitialised,
    /// The upload was refused; the message says why.
    #[error("{0}")]
    Refused(String),
    /// A role upload whose version is not newer than the one the server holds (someone
    /// uploaded one first).
    #[error("{role}: version {version} is not newer than the current {current}")]
    NotNewer {
        /// The role.
        role: String,
        /// The uploaded version.
        version: u64,
        /// The server's version.
        current: u64,
    },
    /// A channel was to be pointed at a generation its family has not signed.
    #[error("{0}")]
    Unsigned(String),
    /// The server holds no key that may sign `role`.
    #[error("the server holds no key the repository lists for role {0}")]
    NoKey(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TufError + '_ {
    move |source| TufError::Io { path: path.to_path_buf(), source }
}

/// The repository.
pub struct Repo {
    repo: PathBuf,
    keys_dir: PathBuf,
    lifetimes: Lifetimes,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Online keys held, with the role each was made for.
    keys: Vec<(String, SecretKey)>,
    root: Option<(Root, Vec<u8>)>,
    /// `targets` and delegated roles, current versions.
    roles: BTreeMap<String, (Targets, Vec<u8>)>,
    snapshot: Option<Snapshot>,
    timestamp: Option<Timestamp>,
}

/// Parses a metadata file of role `role` and type `ty` (our own files, or an upload).
fn parse<T: for<'de> serde::Deserialize<'de>>(role: &str, ty: &str, bytes: &[u8], max: usize) -> Result<(Envelope, T), TufError> {
    let env = Envelope::parse(role, bytes, max).map_err(|e| TufError::Refused(e.to_string()))?;
    let t = env.decode(role, ty).map_err(|e| TufError::Refused(e.to_string()))?;
    Ok((env, t))
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), TufError> {
    cache::atomic::write_with(&dir.join(name), bytes, cache::atomic::Options::new().mode(mode))
        .map_err(|e| TufError::Io { path: e.path, source: e.source })
}

/// A public key as the API carries it (TUF's key object).
pub fn api_key(key: &trust::keys::PublicKey) -> api::tuf::TufKey {
    serde_json::from_value(key.to_value()).expect("a TUF key object has keytype, scheme and keyval")
}

impl State {
    fn held(&self, keyids: &[KeyId]) -> Vec<&SecretKey> {
        self.keys.iter().map(|(_, k)| k).filter(|k| keyids.contains(&k.public().key_id())).collect()
    }

    /// The held keys that may sign online role `role`, at least its threshold of them.
    fn signers(&self, role: &str) -> Result<Vec<&SecretKey>, TufError> {
        let (ids, threshold) = match role {
            CHANNELS_ROLE => {
                let d = self.roles.get("targets").and_then(|(t, _)| t.delegations.as_ref());
                let r = d.and_then(|d| d.roles.iter().find(|r| r.name == CHANNELS_ROLE));
                r.map(|r| (r.keyids.clone(), r.threshold)).ok_or_else(|| TufError::NoKey(role.into()))?
            }
            _ => {
                let root = &self.root.as_ref().ok_or(TufError::NotInitialised)?.0;
                root.role(role).map(|r| (r.keyids.clone(), r.threshold)).ok_or_else(|| TufError::NoKey(role.into()))?
            }
        };
        let held = self.held(&ids);
        if held.len() < threshold.max(1) {
            return Err(TufError::NoKey(role.into()));
        }
        Ok(held)
    }
}

impl Repo {
    /// Opens (creating) `dir`: loads the current metadata and the online keys, generating
    /// one key per online role the first time.
    pub fn open(dir: &Path, lifetimes: Lifetimes) -> Result<Repo, TufError> {
        let (repo, keys_dir) = (dir.join("repo"), dir.join("keys"));
        for d in [&repo, &keys_dir] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let mut st = State::default();
        for entry in std::fs::read_dir(&keys_dir).map_err(io(&keys_dir))? {
            let path = entry.map_err(io(&keys_dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let Some((role, _)) = name.strip_suffix(".key").and_then(|n| n.split_once('-')) else { continue };
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let key = trust::keys::secret_from_file(&bytes).map_err(|e| TufError::Refused(format!("{}: {e}", path.display())))?;
            st.keys.push((role.to_string(), key));
        }
        let r = Repo { repo, keys_dir, lifetimes, state: Mutex::new(State::default()) };
        for role in ONLINE_ROLES {
            if !st.keys.iter().any(|(r, _)| r == role) {
                st.keys.push((role.to_string(), r.new_key(role)?));
            }
        }
        let read = |name: &str| -> Result<Option<Vec<u8>>, TufError> {
            let path = r.repo.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path)(e)),
            }
        };
        const MAX: usize = 64 << 20;
        if let Some(b) = read("root.json")? {
            st.root = Some((parse("root", "root", &b, MAX)?.1, b));
        }
        if let Some(b) = read("timestamp.json")? {
            st.timestamp = Some(parse("timestamp", "timestamp", &b, MAX)?.1);
        }
        if let Some(b) = read("snapshot.json")? {
            st.snapshot = Some(parse("snapshot", "snapshot", &b, MAX)?.1);
        }
        if let Some(b) = read("targets.json")? {
            let t: Targets = parse("targets", "targets", &b, MAX)?.1;
            let delegated: Vec<String> = t.delegations.iter().flat_map(|d| d.roles.iter().map(|r| r.name.clone())).collect();
            st.roles.insert("targets".into(), (t, b));
            for role in delegated {
                if let Some(b) = read(&metadata_file(&role, None))? {
                    st.roles.insert(role.clone(), (parse(&role, "targets", &b, MAX)?.1, b));
                }
            }
        }
        *r.state.lock().unwrap() = st;
        Ok(r)
    }

    /// Generates and stores a new online key for `role`.
    fn new_key(&self, role: &str) -> Result<SecretKey, TufError> {
        let key = SecretKey::generate_type(self.lifetimes.key_type, &mut trust::OsRng);
        let name = format!("{role}-{}.key", &key.public().key_id().0[..16]);
        write_atomic(&self.keys_dir, &name, &trust::keys::secret_to_file(&key), 0o600)?;
        tracing::info!(role, keyid = %key.public().key_id(), "generated an online key");
        Ok(key)
    }

    /// Generates another key for online role `role` (for a rotation: the root or targets
    /// that lists it is uploaded next). Returns its public half.
    pub fn add_online_key(&self, role: &str) -> Result<PublicKey, TufError> {
        if !ONLINE_ROLES.contains(&role) {
            return Err(TufError::Refused(format!("{role} is not an online role (timestamp, snapshot, channels)")));
        }
        let key = self.new_key(role)?;
        let public = key.public();
        self.state.lock().unwrap().keys.push((role.into(), key));
        Ok(public)
    }

    /// The repository's state for `GET /v1/tuf`: online keys by role (newest last), and the
    /// version and expiry of each role.
    pub fn status(&self) -> api::tuf::TufStatus {
        let st = self.state.lock().unwrap();
        let mut keys = std::collections::BTreeMap::new();
        for role in ONLINE_ROLES {
            let ks = st.keys.iter().filter(|(r, _)| r == role).map(|(_, k)| api_key(&k.public())).collect();
            keys.insert(role.to_string(), ks);
        }
        let info = |version: u64, e: i64| api::tuf::RoleState { version, expires: sign::expires(e) };
        let mut roles = std::collections::BTreeMap::new();
        if let Some((r, _)) = &st.root {
            roles.insert("root".into(), info(r.common.version, r.common.expires));
        }
        for (name, (t, _)) in &st.roles {
            roles.insert(name.clone(), info(t.common.version, t.common.expires));
        }
        if let Some(s) = &st.snapshot {
            roles.insert("snapshot".into(), info(s.common.version, s.common.expires));
        }
        if let Some(t) = &st.timestamp {
            roles.insert("timestamp".into(), info(t.common.version, t.common.expires));
        }
        api::tuf::TufStatus { initialised: st.root.is_some(), online_keys: keys, roles }
    }

    /// Whether a root has been uploaded (channel moves then need signed generations).
    pub fn initialised(&self) -> bool {
        self.state.lock().unwrap().root.is_some()
    }

    /// A metadata file by the name clients fetch (`N.ROLE.json`, `ROLE.json`).
    pub fn file(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        if name.starts_with('.') || name.contains('/') || !name.ends_with(".json") {
            return Ok(None);
        }
        let path = self.repo.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn publish(&self, role: &str, version: Option<u64>, bytes: &[u8]) -> Result<(), TufError> {
        if let Some(v) = version {
            write_atomic(&self.repo, &metadata_file(role, Some(v)), bytes, 0o644)?;
        }
        write_atomic(&self.repo, &metadata_file(role, None), bytes, 0o644)?;
        if let (Some(v), "snapshot" | CHANNELS_ROLE) = (version, role) {
            self.prune(role, v);
        }
        Ok(())
    }

    /// Deletes old versions of an online role the server re-signs often (`snapshot`,
    /// `channels`), keeping what a client may still ask for: the newest `KEEP_VERSIONS`, and
    /// any written less than a timestamp's lifetime ago (a client holding a timestamp that is
    /// still valid may fetch the snapshot it names, and the channels version that snapshot
    /// names). Root, targets and the families' roles are never pruned (endpoints walk root
    /// versions one by one; the offline roles change rarely). Best effort: a file that cannot
    /// be removed is left and logged.
    fn prune(&self, role: &str, newest: u64) {
        let keep_after = cache::clock::now_system() - std::time::Duration::from_secs(self.lifetimes.timestamp.max(0) as u64);
        for v in (1..newest.saturating_sub(KEEP_VERSIONS - 1)).rev() {
            let path = self.repo.join(metadata_file(role, Some(v)));
            let Ok(m) = std::fs::metadata(&path) else { break };
            if m.modified().is_ok_and(|t| t > keep_after) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot prune an old metadata version");
            }
        }
    }

    /// Accepts a root: the first one signed by its own threshold, later ones the next
    /// version signed by the old and the new root keys. It must use consistent snapshots and
    /// list timestamp and snapshot keys the server holds.
    pub fn put_root(&self, bytes: &[u8], meta: &Meta) -> Result<u64, TufError> {
        let limits = Limits::default();
        let mut st = self.state.lock().unwrap();
        let trusted = match &st.root {
            None => Trusted::new(bytes, limits),
            Some((_, old)) => Trusted::new(old, limits).and_then(|mut t| t.update_root(bytes).map(|_| t)),
        };
        let trusted = trusted.map_err(|e| TufError::Refused(e.to_string()))?;
        let root = trusted.root().clone();
        if !root.consistent_snapshot {
            return Err(TufError::Refused("root must set consistent_snapshot: true".into()));
        }
        trusted.check_root(cache::clock::now()).map_err(|e| TufError::Refused(e.to_string()))?;
        for role in ["timestamp", "snapshot"] {
            let rk = root.role(role).ok_or_else(|| TufError::Refused(format!("root lists no {role} role")))?;
            if st.held(&rk.keyids).len() < rk.threshold.max(1) {
                return Err(TufError::Refused(format!(
                    "root lists {role} keys the server does not hold (at least {} of them needed): take the server's keys from GET /v1/tuf",
                    rk.threshold
                )));
            }
        }
        self.publish("root", Some(root.common.version), bytes)?;
        let version = root.common.version;
        st.root = Some((root, bytes.to_vec()));
        tracing::info!(version, "accepted root");
        if st.roles.contains_key("targets") {
            // Keys may have changed: sign the online roles again with the ones listed now.
            self.resign(&mut st, meta, true)?;
        }
        Ok(version)
    }

    /// Accepts `targets` or an image family's role (signed offline): the keys its delegator
    /// lists must sign it, its version must be newer, it must not have expired. `targets`
    /// must delegate `channels` to keys the server holds; a family role may list only
    /// generations published here, with the same manifest.
    pub fn put_role(&self, role: &str, bytes: &[u8], meta: &Meta) -> Result<u64, TufError> {
        let mut st = self.state.lock().unwrap();
        let root = st.root.as_ref().ok_or(TufError::NotInitialised)?.0.clone();
        if role == CHANNELS_ROLE {
            return Err(TufError::Refused("the channels role is signed by the server".into()));
        }
        let (env, new): (Envelope, Targets) = parse(role, "targets", bytes, 16 << 20)?;
        let refused = |e: trust::keys::ThresholdError| TufError::Refused(e.to_string());
        if role == "targets" {
            let rk = root.role("targets").ok_or_else(|| TufError::Refused("root lists no targets role".into()))?;
            check_threshold(role, &env.message, &env.signatures, &root.keys, &rk.keyids, rk.threshold).map_err(refused)?;
            let d = new.delegations.as_ref().and_then(|d| d.roles.iter().find(|r| r.name == CHANNELS_ROLE));
            let d = d.ok_or_else(|| TufError::Refused("targets must delegate the channels role".into()))?;
            if st.held(&d.keyids).len() < d.threshold.max(1) || d.paths != policy::channel_patterns() {
                return Err(TufError::Refused(format!(
                    "targets must delegate paths {:?} to channels keys the server holds (GET /v1/tuf)",
                    policy::channel_patterns()
                )));
            }
        } else {
            let parent = st.roles.get("targets").ok_or_else(|| TufError::Refused("upload targets first".into()))?;
            let ds = parent.0.delegations.as_ref();
            let d = ds.and_then(|ds| ds.roles.iter().find(|r| r.name == role).map(|r| (ds, r)));
            let (ds, d) = d.ok_or_else(|| TufError::Refused(format!("targets does not delegate role {role}")))?;
            check_threshold(role, &env.message, &env.signatures, &ds.keys, &d.keyids, d.threshold).map_err(refused)?;
            if let Some(family) = role.strip_prefix("images/") {
                check_family_targets(family, &new, st.roles.get(role).map(|r| &r.0), meta)?;
            }
        }
        if let Some((old, _)) = st.roles.get(role) {
            if new.common.version <= old.common.version {
                return Err(TufError::NotNewer { role: role.to_string(), version: new.common.version, current: old.common.version });
            }
        }
        if new.common.expires <= cache::clock::now() {
            return Err(TufError::Refused(format!("{role}: expired at {}", sign::expires(new.common.expires))));
        }
        let version = new.common.version;
        self.publish(role, Some(version), bytes)?;
        st.roles.insert(role.to_string(), (new, bytes.to_vec()));
        tracing::info!(role, version, "accepted role metadata");
        self.resign(&mut st, meta, true)?;
        Ok(version)
    }

    /// A target file by its consistent-snapshot path `DIR/HASH.NAME` (HASH any of its hashes): a generation's
    /// manifest (`images/FAMILY/SHA256.N`) or a channel record (`channels/.../SHA256.NAME`,
    /// the canonical JSON of its `custom`), if one of the current roles lists it with that
    /// hash.
    pub fn target(&self, path: &str, store: &cache::Store) -> Option<Vec<u8>> {
        let (dir, file) = path.rsplit_once('/')?;
        let (hash, name) = file.split_once('.')?;
        let target = format!("{dir}/{name}");
        let st = self.state.lock().unwrap();
        let role =
            if target.starts_with("channels/") { CHANNELS_ROLE.to_string() } else { policy::family_role(dir.strip_prefix("images/")?) };
        let listed = st.roles.get(&role)?.0.targets.get(&target)?;
        // Under every hash the role lists (TUF 4.4: a consistent snapshot's target is written
        // as HASH.NAME for each of its hashes; python-tuf asks for the first one listed).
        if !listed.hashes.values().any(|h| h == hash) {
            return None;
        }
        let record = listed.custom.clone().and_then(|c| serde_json::from_value::<GenerationRecord>(c).ok());
        let bytes = match record.as_ref().and_then(|r| policy::manifest_of(listed, r)) {
            Some(b3) if role != CHANNELS_ROLE => store.get(&b3.parse().ok()?).ok()?,
            _ => trust::canonical::encode(listed.custom.as_ref()?).ok()?,
        };
        trust::client::target_matches(&bytes, listed).then_some(bytes)
    }

    /// Every generation a current family role lists (`images/FAMILY/N`): endpoints may be sent
    /// to any of them (a pin, a rollout, a rollback), so garbage collection keeps them until
    /// their family signs a version without them.
    pub fn signed_generations(&self) -> Vec<(String, u64)> {
        let st = self.state.lock().unwrap();
        st.roles
            .iter()
            .filter_map(|(role, (t, _))| Some((role.strip_prefix("images/")?, t)))
            .flat_map(|(family, t)| {
                t.targets.keys().filter_map(move |path| Some((family.to_string(), path.strip_prefix(&format!("images/{family}/"))?.parse().ok()?)))
            })
            .collect()
    }

    /// The read traces family roles attach to their generations (`custom.trace`): objects
    /// garbage collection keeps.
    pub fn signed_traces(&self) -> Vec<format::Digest> {
        let st = self.state.lock().unwrap();
        st.roles
            .iter()
            .filter(|(role, _)| role.starts_with("images/"))
            .flat_map(|(_, (t, _))| t.targets.values())
            .filter_map(|f| f.custom.as_ref()?.get("trace")?.as_str()?.parse().ok())
            .collect()
    }

    /// The signed record of generation `image@n`, if its family signed it with manifest
    /// `manifest` (hex).
    pub fn signed_generation(&self, image: &str, n: u64, manifest: &str) -> Result<GenerationRecord, TufError> {
        let st = self.state.lock().unwrap();
        signed_generation(&st, image, n, manifest)
    }

    /// Signs the channels role again from the channels' current versions, then snapshot and
    /// timestamp (after a channel moved).
    pub fn channels_changed(&self, meta: &Meta) -> Result<(), TufError> {
        let mut st = self.state.lock().unwrap();
        if st.root.is_none() || !st.roles.contains_key("targets") {
            return Ok(());
        }
        self.resign(&mut st, meta, true)
    }

    /// Signs again whatever online role has less than half its lifetime left (or is
    /// missing); run periodically.
    pub fn resign_due(&self, meta: &Meta) -> Result<(), TufError> {
        let mut st = self.state.lock().unwrap();
        if st.root.is_none() || !st.roles.contains_key("targets") {
            return Ok(());
        }
        self.resign(&mut st, meta, false)
    }

    /// Signs `channels` (if `all`, missing or due), then `snapshot` (if anything it lists
    /// changed, or due), then `timestamp` (if the snapshot changed, or due).
    fn resign(&self, st: &mut State, meta: &Meta, all: bool) -> Result<(), TufError> {
        let t = cache::clock::now();
        let due = |expires: Option<i64>, life: i64| expires.is_none_or(|e| e - t < life / 2);
        let mut changed = all;
        let channels_delegated = st
            .roles
            .get("targets")
            .and_then(|(t, _)| t.delegations.as_ref())
            .is_some_and(|d| d.roles.iter().any(|r| r.name == CHANNELS_ROLE));
        if channels_delegated && (all || due(st.roles.get(CHANNELS_ROLE).map(|r| r.0.common.expires), self.lifetimes.channels)) {
            self.sign_channels(st, meta, t)?;
            changed = true;
        }
        if changed || due(st.snapshot.as_ref().map(|s| s.common.expires), self.lifetimes.snapshot) {
            self.sign_snapshot(st, t)?;
            changed = true;
        }
        if changed || due(st.timestamp.as_ref().map(|s| s.common.expires), self.lifetimes.timestamp) {
            self.sign_timestamp(st, t)?;
        }
        Ok(())
    }

    fn sign_channels(&self, st: &mut State, meta: &Meta, t: i64) -> Result<(), TufError> {
        let mut targets = serde_json::Map::new();
        for name in meta.channels()? {
            let Some(cv) = meta.channel(&name)? else { continue };
            let Some((image, n)) = cv.generation.split_once('@').and_then(|(i, n)| Some((i, n.parse::<u64>().ok()?))) else { continue };
            let Ok(g) = signed_generation(st, image, n, &cv.manifest.to_hex()) else {
                tracing::warn!(channel = %name, generation = %cv.generation, "left out of the channels role: not signed by its family");
                continue;
            };
            let record = ChannelRecord {
                channel: name.clone(),
                version: cv.version,
                target: policy::generation_path(image, n),
                epoch: g.epoch,
                poll_seconds: Some(self.lifetimes.poll_seconds),
            };
            let value = serde_json::to_value(&record).expect("a record serialises");
            let content = trust::canonical::encode(&value).expect("no floats");
            targets.insert(
                policy::channel_path(&name),
                json!({"length": content.len(), "hashes": {"sha256": sign::sha256_hex(&content)}, "custom": value}),
            );
        }
        let version = st.roles.get(CHANNELS_ROLE).map_or(1, |r| r.0.common.version + 1);
        // Withdrawn generations ride in the role's own custom data, signed with it.
        let withdrawn: Vec<String> = meta.records("withdrawn/")?.into_iter().map(|(k, _)| k["withdrawn/".len()..].to_string()).collect();
        let custom = serde_json::to_value(policy::ChannelsRecord { withdrawn }).expect("serialisable");
        let signed = json!({"_type": "targets", "spec_version": "1.0.31", "version": version,
            "expires": sign::expires(t + self.lifetimes.channels), "targets": targets, "custom": custom});
        let bytes = sign::sign(&signed, &st.signers(CHANNELS_ROLE)?).expect("no floats");
        self.publish(CHANNELS_ROLE, Some(version), &bytes)?;
        let parsed: Targets = parse(CHANNELS_ROLE, "targets", &bytes, usize::MAX)?.1;
        st.roles.insert(CHANNELS_ROLE.into(), (parsed, bytes));
        Ok(())
    }

    fn sign_snapshot(&self, st: &mut State, t: i64) -> Result<(), TufError> {
        let mut files = serde_json::Map::new();
        let listed: Vec<String> = std::iter::once("targets".to_string())
            .chain(
                st.roles
                    .get("targets")
                    .and_then(|(t, _)| t.delegations.as_ref())
                    .into_iter()
                    .flat_map(|d| d.roles.iter().map(|r| r.name.clone())),
            )
            .collect();
        for role in listed {
            if let Some((r, b)) = st.roles.get(&role) {
                files.insert(format!("{role}.json"), sign::meta_info(b, r.common.version));
            }
        }
        let version = st.snapshot.as_ref().map_or(1, |s| s.common.version + 1);
        let signed = json!({"_type": "snapshot", "spec_version": "1.0.31", "version": version,
            "expires": sign::expires(t + self.lifetimes.snapshot), "meta": files});
        let bytes = sign::sign(&signed, &st.signers("snapshot")?).expect("no floats");
        self.publish("snapshot", Some(version), &bytes)?;
        st.snapshot = Some(parse("snapshot", "snapshot", &bytes, usize::MAX)?.1);
        Ok(())
    }

    fn sign_timestamp(&self, st: &mut State, t: i64) -> Result<(), TufError> {
        let snap_version = st.snapshot.as_ref().map(|s| s.common.version).ok_or_else(|| TufError::Refused("no snapshot".into()))?;
        let snap = std::fs::read(self.repo.join(metadata_file("snapshot", Some(snap_version)))).map_err(io(&self.repo))?;
        let version = st.timestamp.as_ref().map_or(1, |s| s.common.version + 1);
        let signed = json!({"_type": "timestamp", "spec_version": "1.0.31", "version": version,
            "expires": sign::expires(t + self.lifetimes.timestamp), "meta": {"snapshot.json": sign::meta_info(&snap, snap_version)}});
        let bytes = sign::sign(&signed, &st.signers("timestamp")?).expect("no floats");
        self.publish("timestamp", None, &bytes)?;
        st.timestamp = Some(parse("timestamp", "timestamp", &bytes, usize::MAX)?.1);
        Ok(())
    }
}

fn signed_generation(st: &State, image: &str, n: u64, manifest: &str) -> Result<GenerationRecord, TufError> {
    let path = policy::generation_path(image, n);
    let unsigned = |why: &str| TufError::Unsigned(format!("{image}@{n} {why}: sign it with `imgctl push --key`"));
    let role = st.roles.get(&policy::family_role(image)).ok_or_else(|| unsigned("has no family role"))?;
    let file = role.0.targets.get(&path).ok_or_else(|| unsigned("is not signed by its family"))?;
    let rec: GenerationRecord =
        serde_json::from_value(file.custom.clone().unwrap_or(Value::Null)).map_err(|e| TufError::Refused(format!("{path}: {e}")))?;
    if policy::manifest_of(file, &rec).is_none_or(|h| !h.eq_ignore_ascii_case(manifest)) {
        return Err(unsigned("is signed with another manifest"));
    }
    let family: policy::FamilyRecord = role.0.custom.clone().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
    if rec.epoch < family.min_epoch {
        return Err(TufError::Unsigned(format!(
            "{image}@{n} has security epoch {}, below its family's min_epoch {}: it is withdrawn",
            rec.epoch, family.min_epoch
        )));
    }
    Ok(rec)
}

/// A family role may list only generations of that family, published here with the same
/// manifest, with a record that says so (checked for the entries `old` does not already have:
/// garbage collection may have removed generations it lists).
fn check_family_targets(family: &str, t: &Targets, old: Option<&Targets>, meta: &Meta) -> Result<(), TufError> {
    for (path, file) in &t.targets {
        if old.is_some_and(|o| o.targets.get(path) == Some(file)) {
            continue;
        }
        let bad = |why: String| TufError::Refused(format!("{path}: {why}"));
        let n = path
            .strip_prefix(&format!("images/{family}/"))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad(format!("not a generation path images/{family}/N")))?;
        let rec: GenerationRecord =
            serde_json::from_value(file.custom.clone().unwrap_or(Value::Null)).map_err(|e| bad(format!("bad record: {e}")))?;
        if rec.image != family || rec.generation != n {
            return Err(bad(format!("the record names {}@{}", rec.image, rec.generation)));
        }
        let published = meta.generation(family, n)?.ok_or_else(|| bad(format!("{family}@{n} is not published here")))?;
        if policy::manifest_of(file, &rec).is_none_or(|h| !h.eq_ignore_ascii_case(&published.to_hex())) {
            return Err(bad(format!("the manifest digest is not that of {family}@{n} published here")));
        }
    }
    Ok(())
}
