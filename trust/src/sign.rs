//! Writing metadata: the envelope of a role's `signed` object with signatures over its
//! canonical JSON, and the names files are published under (role names percent-encoded,
//! version-prefixed under consistent snapshots).

use serde_json::{json, Value};

use crate::canonical::{self, CanonicalError};
use crate::keys::{PublicKey, SecretKey};

/// Something that signs with one key: a key in memory, or (in `imgctl`) an external signer
/// holding the key in a token or a KMS.
pub trait Signer {
    /// The key it signs with.
    fn public(&self) -> PublicKey;
    /// A signature of `message`, hex, as the key's scheme encodes it; why not, if it failed.
    fn sign_message(&self, message: &[u8]) -> Result<String, String>;
}

impl Signer for SecretKey {
    fn public(&self) -> PublicKey {
        SecretKey::public(self)
    }

    fn sign_message(&self, message: &[u8]) -> Result<String, String> {
        Ok(self.sign(message))
    }
}

/// Why metadata could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The `signed` object has no canonical form (a float).
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A signer failed.
    #[error("the signer of key {keyid} failed: {why}")]
    Signer {
        /// Its key.
        keyid: String,
        /// What it said.
        why: String,
    },
}

/// The metadata file of `signed`, signed by each of `keys`.
pub fn sign<S: Signer + ?Sized>(signed: &Value, keys: &[&S]) -> Result<Vec<u8>, SignError> {
    let msg = canonical::encode(signed)?;
    let mut sigs = Vec::with_capacity(keys.len());
    for k in keys {
        let keyid = k.public().key_id().0;
        let sig = k.sign_message(&msg).map_err(|why| SignError::Signer { keyid: keyid.clone(), why })?;
        sigs.push(json!({"keyid": keyid, "sig": sig}));
    }
    let mut out = serde_json::to_vec_pretty(&json!({"signed": signed, "signatures": sigs})).expect("JSON values serialise");
    out.push(b'\n');
    Ok(out)
}

/// A role name as it appears in a file name: every byte outside `[A-Za-z0-9._~-]`
/// percent-encoded as Python's `quote(role, safe='')` does (`images/debian` → `images%2Fdebian`).
pub fn encode_role(role: &str) -> String {
    let mut out = String::with_capacity(role.len());
    for b in role.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The role whose unversioned metadata file is `file` (`images%2Fdebian.json` →
/// `images/debian`); `None` if it is not such a name.
pub fn role_of_file(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".json")?;
    let b = stem.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file name of role `role`'s metadata: `VERSION.ROLE.json` when `version` is given
/// (consistent snapshots), else `ROLE.json`.
pub fn metadata_file(role: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("{v}.{}.json", encode_role(role)),
        None => format!("{}.json", encode_role(role)),
    }
}

/// The path of target `path` under consistent snapshots: `DIR/HASH.NAME`.
pub fn target_file(path: &str, hash: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{hash}.{name}"),
        None => format!("{hash}.{path}"),
    }
}

/// Lowercase hex of the sha256 of `bytes` (the hash standard TUF clients check).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a timestamp or snapshot says of a metadata file: version, length and sha256.
pub fn meta_info(bytes: &[u8], version: u64) -> Value {
    json!({"version": version, "length": bytes.len(), "hashes": {"sha256": sha256_hex(bytes)}})
}

/// A TUF time `seconds` after the epoch, as `expires` fields write it.
pub fn expires(seconds: i64) -> String {
    crate::time::format(seconds)
}
