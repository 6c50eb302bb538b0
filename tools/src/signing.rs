//! The engineer's side of trust: key files, and the metadata offline keys sign (root,
//! targets, one role per image family), built from the server's current files, signed here
//! and uploaded. Secret keys never leave this machine; the server receives signed files.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::signer::Holder;
use serde_json::{json, Map, Value};
use trust::client::{Limits, Trusted};
use trust::keys::{check_threshold, KeyId, PublicKey, SecretKey};
use trust::metadata::{Envelope, Root, Targets};
use trust::policy::{self, FamilyRecord, GenerationRecord, CHANNELS_ROLE};
use trust::sign::{self, metadata_file};

use api::tuf::{TufKey, TufStatus};
use api::ErrorCode;

use crate::remote::{Remote, RemoteError};

/// Default lifetime of what offline keys sign, days.
pub const DEFAULT_EXPIRES_DAYS: i64 = 365;

/// Why a signing operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file could not be read or written.
    #[error("key file {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The server refused or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The server's metadata does not verify, or the request makes no sense for it.
    #[error("{0}")]
    Refused(String),
}

/// A key file that could not be used: `SignError::Key`.
pub fn key_err(path: &Path, why: impl ToString) -> SignError {
    SignError::Key { path: path.to_path_buf(), why: why.to_string() }
}

/// Writes a new key of `keytype` to `path` (mode 0600, never over an existing file) and its
/// public half to `path.pub`.
pub fn generate_key(path: &Path, keytype: trust::keys::KeyType) -> Result<PublicKey, SignError> {
    let key = SecretKey::generate_type(keytype, &mut trust::OsRng);
    let write = |p: &Path, bytes: &[u8], mode: u32| -> Result<(), SignError> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(p).map_err(|e| key_err(p, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| key_err(p, e))
    };
    write(path, &trust::keys::secret_to_file(&key), 0o600)?;
    write(&public_path(path), &trust::keys::public_to_file(&key.public()), 0o644)?;
    Ok(key.public())
}

/// Where `generate_key` writes the public half of `path`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Reads a secret key file.
pub fn read_secret(path: &Path) -> Result<SecretKey, SignError> {
    let bytes = std::fs::read(path).map_err(|e| key_err(path, e))?;
    trust::keys::secret_from_file(&bytes).map_err(|e| key_err(path, e))
}

/// Reads the public key of a public or secret key file.
pub fn read_public(path: &Path) -> Result<PublicKey, SignError> {
    let bytes = std::fs::read(path).map_err(|e| key_err(path, e))?;
    trust::keys::public_from_file(&bytes).map_err(|e| key_err(path, e))
}

fn refused(e: impl ToString) -> SignError {
    SignError::Refused(e.to_string())
}

/// The server's current root, checked against its own keys (and against `pinned`, the root
/// keys the engineer expects, when given).
fn fetch_root(remote: &Remote) -> Result<(Root, Value, Vec<u8>), SignError> {
    let current = remote.tuf_file("root.json")?.ok_or_else(|| refused("the server has no root yet: run `imgctl trust init`"))?;
    let pinned = match remote.root_pin() {
        Some(pin) => match std::fs::read(&pin) {
            Ok(bytes) => Some((pin, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "imgctl: trusting the server's root as first seen and keeping it in {} (`trust init` keeps the root you create)",
                    pin.display()
                );
                write_pin(&pin, &current)?;
                None
            }
            Err(e) => return Err(key_err(&pin, e)),
        },
        None => None,
    };
    let latest = match pinned {
        // From the root imgctl trusts, one version at a time, each signed by the threshold of
        // the one before and its own (as endpoints follow them): a server cannot hand over a
        // root of its own making.
        Some((pin, bytes)) => {
            let mut t = Trusted::new(&bytes, Limits::default())
                .map_err(|e| refused(format!("the root imgctl trusts ({}) does not verify: {e}", pin.display())))?;
            let mut latest = bytes.clone();
            loop {
                let v = t.root().common.version + 1;
                let Some(next) = remote.tuf_file(&format!("{v}.root.json"))? else { break };
                t.update_root(&next).map_err(|e| {
                    refused(format!("the server's root version {v} does not follow the root imgctl trusts ({}): {e}", pin.display()))
                })?;
                latest = next;
            }
            if latest != current {
                return Err(refused(format!(
                    "the server's current root.json is not the root version {} its signed chain leads to from {}",
                    t.root().common.version,
                    pin.display()
                )));
            }
            if latest != bytes {
                write_pin(&pin, &latest)?;
            }
            latest
        }
        None => current,
    };
    let t = Trusted::new(&latest, Limits::default()).map_err(|e| refused(format!("the server's root.json does not verify: {e}")))?;
    let env = Envelope::parse("root", &latest, Limits::default().root).map_err(refused)?;
    Ok((t.root().clone(), env.signed, latest))
}

/// Keeps `bytes` as the root imgctl trusts for a server (written atomically).
fn write_pin(pin: &Path, bytes: &[u8]) -> Result<(), SignError> {
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e))?;
    }
    cache::atomic::write(pin, bytes).map_err(|e| key_err(pin, e))
}

/// The server's current `role` file, checked against the keys its delegator lists (root for
/// `targets`, `targets` for the rest). `None` if the server has none.
fn fetch_role(remote: &Remote, root: &Root, role: &str) -> Result<Option<(Targets, Value)>, SignError> {
    Ok(fetch_role_envelope(remote, root, role)?.map(|(t, env)| (t, env.signed)))
}

/// `fetch_role`, with the role's signatures.
fn fetch_role_envelope(remote: &Remote, root: &Root, role: &str) -> Result<Option<(Targets, Envelope)>, SignError> {
    let Some(bytes) = remote.tuf_file(&metadata_file(role, None))? else { return Ok(None) };
    let env = Envelope::parse(role, &bytes, 16 << 20).map_err(refused)?;
    let t: Targets = env.decode(role, "targets").map_err(refused)?;
    let bad = |e: trust::keys::ThresholdError| refused(format!("the server's {role} metadata does not verify: {e}"));
    if role == "targets" {
        let rk = root.role("targets").ok_or_else(|| refused("root lists no targets role"))?;
        check_threshold(role, &env.message, &env.signatures, &root.keys, &rk.keyids, rk.threshold).map_err(bad)?;
    } else {
        let (parent, _) = fetch_role(remote, root, "targets")?.ok_or_else(|| refused("the server has no targets metadata"))?;
        let ds = parent.delegations.ok_or_else(|| refused("targets delegates nothing"))?;
        let d = ds.roles.iter().find(|r| r.name == role).ok_or_else(|| refused(format!("targets does not delegate {role}")))?;
        check_threshold(role, &env.message, &env.signatures, &ds.keys, &d.keyids, d.threshold).map_err(bad)?;
    }
    Ok(Some((t, env)))
}

/// The `signed` part of the server's current `role` file, not checked (the caller signs a
/// new version of it with keys it holds).
fn fetch_role_unverified(remote: &Remote, role: &str) -> Result<(Vec<u8>, Value), SignError> {
    let bytes = remote.tuf_file(&metadata_file(role, None))?.ok_or_else(|| refused(format!("the server has no {role} metadata")))?;
    let env = Envelope::parse(role, &bytes, 16 << 20).map_err(refused)?;
    Ok((bytes, env.signed))
}

fn ids(keys: &[PublicKey]) -> Vec<String> {
    keys.iter().map(|k| k.key_id().0).collect()
}

fn key_map(keys: &[&PublicKey]) -> Map<String, Value> {
    keys.iter().map(|k| (k.key_id().0, k.to_value())).collect()
}

/// The newest online key the server holds for `role`.
fn online_key(status: &TufStatus, role: &str) -> Result<PublicKey, SignError> {
    let key = status.online_keys.get(role).and_then(|a| a.last()).ok_or_else(|| refused(format!("the server has no {role} key")))?;
    public_key(key)
}

/// A key as the server lists it, checked.
fn public_key(key: &TufKey) -> Result<PublicKey, SignError> {
    PublicKey::from_value(&serde_json::to_value(key).expect("api types serialise")).map_err(refused)
}

fn expires_in(days: i64) -> String {
    sign::expires(cache::clock::now() + days * 86400)
}

/// What `trust init` sets up.
pub struct InitOptions<'a> {
    /// Root keys; all of them sign the first root.
    pub root_keys: &'a [Holder],
    /// Root signatures required.
    pub root_threshold: usize,
    /// Targets keys; all of them sign.
    pub targets_keys: &'a [Holder],
    /// Image families and the public keys of their engineers (threshold 1).
    pub families: &'a [(String, Vec<PublicKey>)],
    /// Lifetime of root and targets.
    pub expires_days: i64,
}

/// Creates the repository on a server that has none: root version 1 (the given root and
/// targets keys, the server's timestamp and snapshot keys) and targets version 1 (delegating
/// `channels/*` to the server's channels key and `images/FAMILY/*` to each family's keys).
/// Returns root's bytes, to install on endpoints.
pub fn init(remote: &Remote, o: &InitOptions) -> Result<Vec<u8>, SignError> {
    let status = remote.tuf_status()?;
    if status.initialised {
        return Err(refused("the server's repository already has a root: change it with `imgctl key rotate`"));
    }
    if o.root_threshold == 0 || o.root_threshold > o.root_keys.len() {
        return Err(refused(format!("a root threshold of {} with {} root keys can never be met", o.root_threshold, o.root_keys.len())));
    }
    let (ts, snap, ch) = (online_key(&status, "timestamp")?, online_key(&status, "snapshot")?, online_key(&status, "channels")?);
    let root_pubs: Vec<PublicKey> = o.root_keys.iter().map(Holder::public).collect();
    let targets_pubs: Vec<PublicKey> = o.targets_keys.iter().map(Holder::public).collect();
    let all: Vec<&PublicKey> = root_pubs.iter().chain(&targets_pubs).chain([&ts, &snap]).collect();
    let root = json!({"_type": "root", "spec_version": "1.0.31", "version": 1, "expires": expires_in(o.expires_days),
        "consistent_snapshot": true, "keys": key_map(&all), "roles": {
            "root": {"keyids": ids(&root_pubs), "threshold": o.root_threshold},
            "targets": {"keyids": ids(&targets_pubs), "threshold": 1},
            "timestamp": {"keyids": ids(&[ts]), "threshold": 1},
            "snapshot": {"keyids": ids(&[snap]), "threshold": 1}}});
    let root_bytes = sign::sign(&root, &o.root_keys.iter().collect::<Vec<_>>()).map_err(refused)?;
    remote.put_root(root_bytes.clone())?;
    // The root the engineer created is the one imgctl trusts for this server from now on.
    if let Some(pin) = remote.root_pin() {
        write_pin(&pin, &root_bytes)?;
    }
    let mut delegated: Vec<&PublicKey> = vec![&ch];
    let mut roles = vec![
        json!({"name": CHANNELS_ROLE, "keyids": ids(&[ch.clone()]), "threshold": 1, "paths": policy::channel_patterns(), "terminating": true}),
    ];
    for (family, keys) in o.families {
        delegated.extend(keys);
        roles.push(family_delegation(family, keys, 1));
    }
    let targets = json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": expires_in(o.expires_days),
        "targets": {}, "delegations": {"keys": key_map(&delegated), "roles": roles}});
    let bytes = sign::sign(&targets, &o.targets_keys.iter().collect::<Vec<_>>()).map_err(refused)?;
    remote.put_role("targets", bytes)?;
    Ok(root_bytes)
}

fn family_delegation(family: &str, keys: &[PublicKey], threshold: usize) -> Value {
    json!({"name": policy::family_role(family), "keyids": ids(keys), "threshold": threshold,
           "paths": [format!("images/{family}/*")], "terminating": true})
}

/// A new version of image family `image`'s role: `edit` changes its `targets` map and
/// `custom`; it is signed with `keys` and uploaded. Retried once if another engineer
/// uploaded a version in between.
fn update_family(
    remote: &Remote,
    keys: &[Holder],
    image: &str,
    expires_days: i64,
    edit: &dyn Fn(&mut Map<String, Value>, &mut FamilyRecord) -> Result<bool, SignError>,
) -> Result<u64, SignError> {
    let role = policy::family_role(image);
    let mut attempt = 0;
    loop {
        let (root, _, _) = fetch_root(remote)?;
        let current = fetch_role(remote, &root, &role)?;
        let (version, mut targets, mut family) = match &current {
            Some((t, signed)) => (
                t.common.version,
                signed["targets"].as_object().cloned().unwrap_or_default(),
                t.custom.clone().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default(),
            ),
            None => (0, Map::new(), FamilyRecord::default()),
        };
        if !edit(&mut targets, &mut family)? {
            return Ok(version);
        }
        let signed = json!({"_type": "targets", "spec_version": "1.0.31", "version": version + 1,
            "expires": expires_in(expires_days), "targets": targets, "custom": family});
        let bytes = sign::sign(&signed, &keys.iter().collect::<Vec<_>>()).map_err(refused)?;
        match remote.put_role(&role, bytes) {
            Ok(_) => return Ok(version + 1),
            Err(RemoteError::Http { code: ErrorCode::VersionNotNewer, .. }) if attempt == 0 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A generation to sign.
pub struct GenerationToSign<'a> {
    /// Image family.
    pub image: &'a str,
    /// Generation number.
    pub generation: u64,
    /// The manifest's bytes (its blake3 digest is the generation's identity).
    pub manifest: &'a [u8],
    /// Architecture.
    pub arch: &'a str,
    /// Security epoch; the family's `min_epoch` when not given.
    pub epoch: Option<u64>,
}

/// Adds generation `g` as a target of its family's role, signed with `keys`. Signing the
/// same manifest again changes nothing; another manifest under the same number is refused.
pub fn sign_generation(remote: &Remote, keys: &[Holder], g: &GenerationToSign, expires_days: i64) -> Result<GenerationRecord, SignError> {
    let path = policy::generation_path(g.image, g.generation);
    let blake3 = format::Digest::of(g.manifest).to_hex();
    let record = std::cell::RefCell::new(None);
    update_family(remote, keys, g.image, expires_days, &|targets, family| {
        let rec = GenerationRecord {
            image: g.image.into(),
            generation: g.generation,
            arch: g.arch.into(),
            epoch: g.epoch.unwrap_or(family.min_epoch),
            manifest: Some(blake3.clone()),
            trace: None,
        };
        if let Some(existing) = targets.get(&path) {
            let named = existing["custom"]["manifest"].as_str().or(existing["hashes"]["blake3"].as_str());
            if named != Some(blake3.as_str()) {
                return Err(refused(format!("{path} is already signed with another manifest")));
            }
            *record.borrow_mut() = serde_json::from_value(existing["custom"].clone()).ok();
            return Ok(false);
        }
        if rec.epoch < family.min_epoch {
            return Err(refused(format!("epoch {} is below the family's min_epoch {}", rec.epoch, family.min_epoch)));
        }
        targets
            .insert(path.clone(), json!({"length": g.manifest.len(), "hashes": {"sha256": sign::sha256_hex(g.manifest)}, "custom": rec}));
        *record.borrow_mut() = Some(rec);
        Ok(true)
    })?;
    record.into_inner().ok_or_else(|| refused(format!("{path}: the signed record does not parse")))
}

/// Signs image family `image`'s role again with read trace `trace` (BLAKE3 hex of the trace
/// object) attached to generation `n`; `false` if it already was.
pub fn attach_trace(remote: &Remote, keys: &[Holder], image: &str, n: u64, trace: &str, expires_days: i64) -> Result<bool, SignError> {
    let path = policy::generation_path(image, n);
    let changed = std::cell::Cell::new(false);
    update_family(remote, keys, image, expires_days, &|targets, _| {
        let Some(target) = targets.get_mut(&path) else {
            return Err(refused(format!("{path} is not signed: push it first")));
        };
        if target["custom"]["trace"].as_str() == Some(trace) {
            return Ok(false);
        }
        target["custom"]["trace"] = Value::String(trace.to_string());
        changed.set(true);
        Ok(true)
    })?;
    Ok(changed.get())
}

/// Raises (or sets) image family `image`'s `min_epoch`: every generation below it is
/// withdrawn from every endpoint at once.
pub fn set_min_epoch(remote: &Remote, keys: &[Holder], image: &str, min_epoch: u64, expires_days: i64) -> Result<u64, SignError> {
    update_family(remote, keys, image, expires_days, &|_, family| {
        family.min_epoch = min_epoch;
        Ok(true)
    })
}

/// Signs image family `image`'s role again without generation `n`; `false` if it did not
/// list it (nothing is signed then).
pub fn forget_generation(remote: &Remote, keys: &[Holder], image: &str, n: u64, expires_days: i64) -> Result<bool, SignError> {
    let path = policy::generation_path(image, n);
    let removed = std::cell::Cell::new(false);
    update_family(remote, keys, image, expires_days, &|targets, _| {
        removed.set(targets.remove(&path).is_some());
        Ok(removed.get())
    })?;
    Ok(removed.get())
}

/// A change of the keys of one role.
pub struct Rotation {
    /// `root`, `targets`, `timestamp`, `snapshot` (a new root), or `channels`,
    /// `images/FAMILY` (a new targets).
    pub role: String,
    /// Keys to add.
    pub add: Vec<PublicKey>,
    /// Keys to remove.
    pub remove: Vec<KeyId>,
    /// Remove every current key of the role first.
    pub replace: bool,
    /// Have the server make a new key for this online role and add it.
    pub online: bool,
    /// A new threshold.
    pub threshold: Option<usize>,
    /// Lifetime of the new file.
    pub expires_days: i64,
}

/// Applies `r` to the role entry `entry` (`keyids`, `threshold`) and the key map `keys`.
fn change_keys(entry: &mut Value, keys: &mut Map<String, Value>, r: &Rotation, added: &[PublicKey]) -> Result<(), SignError> {
    let mut ids: Vec<String> = entry["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    if r.replace {
        ids.clear();
    }
    ids.retain(|id| !r.remove.iter().any(|k| &k.0 == id));
    for k in added {
        keys.insert(k.key_id().0, k.to_value());
        if !ids.contains(&k.key_id().0) {
            ids.push(k.key_id().0);
        }
    }
    let threshold = r.threshold.unwrap_or_else(|| entry["threshold"].as_u64().unwrap_or(1) as usize);
    if ids.is_empty() || threshold == 0 || threshold > ids.len() {
        return Err(refused(format!("{}: {} keys with a threshold of {threshold} can never sign", r.role, ids.len())));
    }
    entry["keyids"] = json!(ids);
    entry["threshold"] = json!(threshold);
    Ok(())
}

/// Drops keys no role lists any more.
fn prune(keys: &mut Map<String, Value>, roles: &[&Value]) {
    let used: std::collections::HashSet<&str> =
        roles.iter().flat_map(|r| r["keyids"].as_array().into_iter().flatten()).filter_map(Value::as_str).collect();
    keys.retain(|id, _| used.contains(id.as_str()));
}

/// Rotates the keys of a role: a new root (signed by `sign_with`, which must hold enough
/// old and new root keys) or a new targets (signed by `sign_with` as targets keys) that
/// delegates to the new keys, creating the delegation of a new image family. Returns the
/// role file uploaded and its version.
pub fn rotate(remote: &Remote, sign_with: &[Holder], r: &Rotation) -> Result<(String, u64), SignError> {
    let mut added = r.add.clone();
    if r.online {
        if !matches!(r.role.as_str(), "timestamp" | "snapshot" | CHANNELS_ROLE) {
            return Err(refused(format!("{} is not an online role", r.role)));
        }
        let new = remote.add_online_key(&r.role)?;
        added.push(public_key(&new.key)?);
    }
    let signers: Vec<&Holder> = sign_with.iter().collect();
    let (root, mut root_signed, _) = fetch_root(remote)?;
    if matches!(r.role.as_str(), "root" | "targets" | "timestamp" | "snapshot") {
        let version = root.common.version + 1;
        let mut keys = root_signed["keys"].as_object().cloned().unwrap_or_default();
        let mut roles = root_signed["roles"].clone();
        change_keys(&mut roles[&r.role], &mut keys, r, &added)?;
        let all: Vec<&Value> = ["root", "targets", "timestamp", "snapshot"].iter().map(|n| &roles[*n]).collect();
        prune(&mut keys, &all);
        root_signed["keys"] = Value::Object(keys);
        root_signed["roles"] = roles;
        root_signed["version"] = json!(version);
        root_signed["expires"] = json!(expires_in(r.expires_days));
        let new_ids: Vec<String> =
            root_signed["roles"][&r.role]["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
        remote.put_root(sign::sign(&root_signed, &signers).map_err(refused)?)?;
        if r.role == "targets" {
            // targets.json must verify under its new keys: signed again by them.
            let (_, mut t) = fetch_role_unverified(remote, "targets")?;
            let v = t["version"].as_u64().unwrap_or(0) + 1;
            t["version"] = json!(v);
            t["expires"] = json!(expires_in(r.expires_days));
            let new_signers: Vec<&Holder> = sign_with.iter().filter(|k| new_ids.contains(&k.public().key_id().0)).collect();
            if new_signers.is_empty() {
                return Err(refused("targets has new keys: give one of them with --sign-with to sign targets.json again"));
            }
            remote.put_role("targets", sign::sign(&t, &new_signers).map_err(refused)?)?;
        }
        return Ok(("root".into(), version));
    }
    if r.role != CHANNELS_ROLE && !r.role.starts_with("images/") {
        return Err(refused(format!("no role {}: root, targets, timestamp, snapshot, channels or images/FAMILY", r.role)));
    }
    let (targets, mut signed) = fetch_role(remote, &root, "targets")?.ok_or_else(|| refused("the server has no targets metadata"))?;
    let mut delegations = signed["delegations"].clone();
    if delegations.is_null() {
        delegations = json!({"keys": {}, "roles": []});
    }
    let mut keys = delegations["keys"].as_object().cloned().unwrap_or_default();
    let roles = delegations["roles"].as_array_mut().ok_or_else(|| refused("targets delegations have no roles list"))?;
    let i = match roles.iter().position(|d| d["name"] == json!(r.role)) {
        Some(i) => i,
        None => {
            let family = r.role.strip_prefix("images/").ok_or_else(|| refused("targets does not delegate channels"))?;
            format::ImageName::new(family).map_err(refused)?;
            roles.push(family_delegation(family, &[], 1));
            roles.len() - 1
        }
    };
    let before = roles[i].clone();
    change_keys(&mut roles[i], &mut keys, r, &added)?;
    let family = match r.role.starts_with("images/") {
        true => fetch_role_envelope(remote, &root, &r.role)?.map(|(_, env)| env),
        false => None,
    };
    let all: Vec<&Value> = roles.iter().collect();
    prune(&mut keys, &all);
    delegations["keys"] = Value::Object(keys);
    signed["delegations"] = delegations;
    let version = targets.common.version + 1;
    signed["version"] = json!(version);
    signed["expires"] = json!(expires_in(r.expires_days));
    // A family role that would not verify under its new keys is signed again in the same
    // command, by the keys given that the old or the new delegation lists: first when it
    // verifies under the old keys as well (no endpoint ever sees a targets whose family does
    // not verify), else right after.
    let family = match family {
        Some(env) if !verifies_under(&signed, &r.role, &env) => Some(resign_family(env, &before, &signed, r, sign_with)?),
        _ => None,
    };
    if let Some((bytes, true)) = &family {
        remote.put_role(&r.role, bytes.clone())?;
    }
    remote.put_role("targets", sign::sign(&signed, &signers).map_err(refused)?)?;
    if let Some((bytes, false)) = family {
        remote.put_role(&r.role, bytes)?;
    }
    Ok(("targets".into(), version))
}

/// Whether delegated role `role`, signed as `env`, verifies under the delegation of targets
/// `signed` (not yet signed itself).
fn verifies_under(signed: &Value, role: &str, env: &Envelope) -> bool {
    let Ok(t) = serde_json::from_value::<Targets>(signed.clone()) else { return false };
    let Some(ds) = t.delegations else { return false };
    let Some(d) = ds.roles.iter().find(|d| d.name == role) else { return false };
    check_threshold(role, &env.message, &env.signatures, &ds.keys, &d.keyids, d.threshold).is_ok()
}

/// Family role `env` signed again (a new version) for its delegation moving from `before` to
/// what targets `signed` lists, and whether that also verifies under `before`.
fn resign_family(env: Envelope, before: &Value, signed: &Value, r: &Rotation, sign_with: &[Holder]) -> Result<(Vec<u8>, bool), SignError> {
    let after =
        signed["delegations"]["roles"].as_array().into_iter().flatten().find(|d| d["name"] == json!(r.role)).cloned().unwrap_or_default();
    let listed = |d: &Value| d["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect::<Vec<_>>();
    let threshold = |d: &Value| d["threshold"].as_u64().unwrap_or(1) as usize;
    let (old_ids, new_ids) = (listed(before), listed(&after));
    let held = |ids: &[String]| sign_with.iter().filter(|k| ids.contains(&k.public().key_id().0)).collect::<Vec<_>>();
    if held(&new_ids).len() < threshold(&after) {
        return Err(refused(format!(
            "{} no longer verifies under its new keys and is signed again in the same rotation: give {} of them with --sign-with",
            r.role,
            threshold(&after)
        )));
    }
    let signers: Vec<&Holder> =
        sign_with.iter().filter(|k| old_ids.contains(&k.public().key_id().0) || new_ids.contains(&k.public().key_id().0)).collect();
    let mut family = env.signed;
    family["version"] = json!(family["version"].as_u64().unwrap_or(0) + 1);
    family["expires"] = json!(expires_in(r.expires_days));
    let first = held(&old_ids).len() >= threshold(before);
    Ok((sign::sign(&family, &signers).map_err(refused)?, first))
}

/// The roles of the server's repository (`imgctl key list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    /// The current root.
    pub root: RootListing,
    /// The current targets, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetsListing>,
}

/// Version, expiry and the keys of every role, as root lists them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RootListing {
    /// Root's version.
    pub version: u64,
    /// Root's expiry, TUF's UTC time format.
    pub expires: String,
    /// Every top-level role's keys and threshold.
    pub roles: std::collections::BTreeMap<String, RoleListing>,
}

/// A role's keys and threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleListing {
    /// Keys allowed to sign for it.
    pub keyids: Vec<KeyId>,
    /// How many must sign.
    pub threshold: usize,
}

/// Version, expiry and delegations of targets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetsListing {
    /// Targets' version.
    pub version: u64,
    /// Targets' expiry, TUF's UTC time format.
    pub expires: String,
    /// The roles targets delegates to.
    pub delegations: Vec<DelegationListing>,
}

/// A delegated role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DelegationListing {
    /// `channels` or `images/FAMILY`.
    pub name: String,
    /// Keys allowed to sign for it.
    pub keyids: Vec<KeyId>,
    /// How many must sign.
    pub threshold: usize,
    /// Target path patterns it may sign.
    pub paths: Vec<String>,
}

/// The roles of the server's repository: keys, thresholds, versions, expiries, delegations.
pub fn list(remote: &Remote) -> Result<Listing, SignError> {
    let (root, _, _) = fetch_root(remote)?;
    let roles =
        root.roles.iter().map(|(name, r)| (name.clone(), RoleListing { keyids: r.keyids.clone(), threshold: r.threshold })).collect();
    let targets = fetch_role(remote, &root, "targets")?.map(|(t, _)| TargetsListing {
        version: t.common.version,
        expires: sign::expires(t.common.expires),
        delegations: t
            .delegations
            .iter()
            .flat_map(|d| &d.roles)
            .map(|d| DelegationListing { name: d.name.clone(), keyids: d.keyids.clone(), threshold: d.threshold, paths: d.paths.clone() })
            .collect(),
    });
    Ok(Listing { root: RootListing { version: root.common.version, expires: sign::expires(root.common.expires), roles }, targets })
}
