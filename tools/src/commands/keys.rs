//! The subcommands on offline keys and the server's signed repository: `key generate|list|
//! rotate`, `trust init|min-epoch`.

use std::path::{Path, PathBuf};

use format::ImageName;
use trust::keys::{KeyId, PublicKey};

use crate::signer::Holder;

use super::CommandError;
use crate::remote::Remote;
use crate::signing::{self, Listing, Rotation};

/// A new key (`key generate`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedKey {
    /// Its key id.
    pub keyid: KeyId,
    /// Its key type (`ed25519`, `ecdsa`, `rsa`).
    pub keytype: String,
    /// The secret key file.
    pub file: PathBuf,
    /// The public half.
    pub public: PathBuf,
}

/// Writes a new key to `file` and its public half next to it.
pub fn generate(file: &Path, keytype: trust::keys::KeyType) -> Result<GeneratedKey, CommandError> {
    let k = signing::generate_key(file, keytype)?;
    Ok(GeneratedKey { keyid: k.key_id(), keytype: k.keytype().to_string(), file: file.to_path_buf(), public: signing::public_path(file) })
}

/// A key file (`key list FILE...`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyFile {
    /// The file.
    pub file: PathBuf,
    /// Its key id.
    pub keyid: KeyId,
    /// Whether it holds the secret key.
    pub secret: bool,
}

/// The key ids of key files.
pub fn list_files(files: &[PathBuf]) -> Result<Vec<KeyFile>, CommandError> {
    let mut rows = Vec::new();
    for f in files {
        let k = signing::read_public(f)?;
        rows.push(KeyFile { file: f.clone(), keyid: k.key_id(), secret: signing::read_secret(f).is_ok() });
    }
    Ok(rows)
}

/// The keys and thresholds of every role of the server's repository.
pub fn list(remote: &Remote) -> Result<Listing, CommandError> {
    Ok(signing::list(remote)?)
}

/// A key to remove: its id, or a key file.
pub fn key_id_of(spec: &str) -> Result<KeyId, CommandError> {
    if Path::new(spec).exists() {
        Ok(signing::read_public(Path::new(spec))?.key_id())
    } else {
        Ok(KeyId(spec.to_string()))
    }
}

/// What `key rotate` uploaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    /// The role whose keys changed.
    pub role: String,
    /// The file uploaded: `root` or `targets`.
    pub uploaded: String,
    /// Its new version.
    pub version: u64,
}

/// Changes the keys of a role, signed with `signers`.
pub fn rotate(remote: &Remote, signers: &[Holder], r: &Rotation) -> Result<Rotated, CommandError> {
    let (uploaded, version) = signing::rotate(remote, signers, r)
        .map_err(|source| CommandError::Sign { doing: format!("rotating the keys of {}", r.role), source })?;
    Ok(Rotated { role: r.role.clone(), uploaded, version })
}

/// What `trust init` is asked to do.
pub struct InitPlan {
    /// Root keys; all of them sign the first root.
    pub root_keys: Vec<Holder>,
    /// Root signatures required.
    pub root_threshold: usize,
    /// Targets keys; all of them sign.
    pub targets_keys: Vec<Holder>,
    /// Image families and their engineers' keys.
    pub families: Vec<(ImageName, PublicKey)>,
    /// Where to write the root endpoints start from.
    pub out: PathBuf,
    /// Lifetime of root and targets, days.
    pub expires_days: i64,
}

/// What `trust init` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Initialised {
    /// The root file written for endpoints.
    pub root: PathBuf,
    /// The families delegated.
    pub families: Vec<ImageName>,
}

/// Creates the server's signed repository and writes its root to `plan.out`.
pub fn init(remote: &Remote, plan: InitPlan) -> Result<Initialised, CommandError> {
    let families: Vec<(String, Vec<PublicKey>)> = plan.families.iter().map(|(n, k)| (n.to_string(), vec![k.clone()])).collect();
    let o = signing::InitOptions {
        root_keys: &plan.root_keys,
        root_threshold: plan.root_threshold,
        targets_keys: &plan.targets_keys,
        families: &families,
        expires_days: plan.expires_days,
    };
    let root = signing::init(remote, &o).map_err(|source| CommandError::Sign { doing: "creating the signed repository".into(), source })?;
    std::fs::write(&plan.out, &root).map_err(|source| CommandError::Write { path: plan.out.clone(), source })?;
    Ok(Initialised { root: plan.out, families: plan.families.into_iter().map(|(n, _)| n).collect() })
}

/// What `trust forget` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Forgotten {
    /// The generation, `IMAGE@N`.
    pub generation: String,
    /// Whether the family's role listed it (and was signed again without it).
    pub removed: bool,
}

/// Signs `image`'s family role again without generation `n`, with `keys`.
pub fn forget(remote: &Remote, keys: &[Holder], image: &ImageName, n: u64, expires_days: i64) -> Result<Forgotten, CommandError> {
    let removed = signing::forget_generation(remote, keys, image.as_str(), n, expires_days)?;
    Ok(Forgotten { generation: format!("{image}@{n}"), removed })
}

/// What `trace add` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceAdded {
    /// The generation, `IMAGE@N`.
    pub generation: String,
    /// The trace object's digest.
    pub trace: format::Digest,
    /// Reads in the trace.
    pub reads: usize,
    /// Whether the family's role was signed again (false: it already named this trace).
    pub signed: bool,
}

/// Uploads the read trace in `bytes` (`imgfs trace stop`) as an object and signs `image`'s
/// family role again with it attached to generation `n`, with `keys`.
pub fn add_trace(remote: &Remote, keys: &[Holder], image: &ImageName, n: u64, bytes: &[u8], expires_days: i64) -> Result<TraceAdded, CommandError> {
    let trace: api::control::Trace = serde_json::from_slice(bytes)
        .map_err(|e| CommandError::Invalid { what: "the trace".into(), why: e.to_string() })?;
    if trace.version != api::control::TRACE_VERSION {
        return Err(CommandError::Invalid {
            what: "the trace".into(),
            why: format!("format version {}, this build writes {}", trace.version, api::control::TRACE_VERSION),
        });
    }
    let digest = format::Digest::of(bytes);
    let framed = format::object::encode(bytes, 19);
    remote.upload(format::record::encode(&digest, &framed))?;
    let signed = signing::attach_trace(remote, keys, image.as_str(), n, &digest.to_hex(), expires_days)?;
    Ok(TraceAdded { generation: format!("{image}@{n}"), trace: digest, reads: trace.reads.len(), signed })
}

/// What `trust min-epoch` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MinEpochSet {
    /// The family.
    pub image: ImageName,
    /// Its new minimum epoch.
    pub min_epoch: u64,
    /// The family role's new version.
    pub version: u64,
}

/// Raises `image`'s `min_epoch`, signed with `keys`.
pub fn min_epoch(
    remote: &Remote,
    keys: &[Holder],
    image: &ImageName,
    epoch: u64,
    expires_days: i64,
) -> Result<MinEpochSet, CommandError> {
    let version = signing::set_min_epoch(remote, keys, image.as_str(), epoch, expires_days)?;
    Ok(MinEpochSet { image: image.clone(), min_epoch: epoch, version })
}
