//! ed25519 keys as TUF writes them (`{"keytype": "ed25519", "scheme": "ed25519", "keyval":
//! {"public": HEX}}`), key ids (sha256 of that object's canonical JSON), signing, and
//! the threshold check over a metadata file's signatures.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ed25519_dalek::{Signer, Verifier};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::canonical;

/// A key id: lowercase hex of the sha256 of the key's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Another key type or scheme than ed25519.
    #[error("unsupported key type {keytype:?} / scheme {scheme:?} (only ed25519)")]
    Unsupported {
        /// The key type given.
        keytype: String,
        /// The scheme given.
        scheme: String,
    },
    /// The public key is not 32 bytes of hex, or not a curve point.
    #[error("malformed ed25519 public key {0:?}")]
    Malformed(String),
}

/// A public key that can check signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Reads a key object from metadata.
    pub fn from_value(v: &Value) -> Result<PublicKey, KeyError> {
        let (keytype, scheme) = (v["keytype"].as_str().unwrap_or(""), v["scheme"].as_str().unwrap_or(""));
        if keytype != "ed25519" || scheme != "ed25519" {
            return Err(KeyError::Unsupported { keytype: keytype.into(), scheme: scheme.into() });
        }
        let hex_key = v["keyval"]["public"].as_str().unwrap_or("");
        let bytes: [u8; 32] =
            hex::decode(hex_key).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| KeyError::Malformed(hex_key.into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|_| KeyError::Malformed(hex_key.into()))
    }

    /// The ed25519 key with these 32 public bytes (an endpoint's key), if they are one.
    pub fn from_raw(bytes: &[u8; 32]) -> Option<PublicKey> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// The key object as metadata lists it.
    pub fn to_value(&self) -> Value {
        json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": hex::encode(self.0.as_bytes())}})
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        let bytes = canonical::encode(&self.to_value()).expect("a key object has no floats");
        KeyId(hex::encode(Sha256::digest(bytes)))
    }

    /// Whether `sig_hex` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig_hex: &str) -> bool {
        let Some(bytes) = hex::decode(sig_hex).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else { return false };
        self.0.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

/// A private key: it signs.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretKey").field(&self.public().key_id()).finish()
    }
}

impl SecretKey {
    /// A new key from `rng`.
    pub fn generate(rng: &mut (impl rand_core_06::CryptoRng + rand_core_06::RngCore)) -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::generate(rng))
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(bytes))
    }

    /// Its 32 secret bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// A signature of `message`, hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }
}

/// Why signatures did not meet a role's threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role}: {valid} valid signature(s) from distinct authorised keys, {threshold} needed")]
pub struct ThresholdError {
    /// The role whose metadata was checked.
    pub role: String,
    /// Valid signatures counted.
    pub valid: usize,
    /// How many the role needs.
    pub threshold: usize,
}

/// Checks that `signatures` (key id, hex signature) over `message` include valid ones by at
/// least `threshold` distinct keys among `authorised`, looked up in `keys`. A key counts once
/// however often it signs or is listed under other ids; unknown keys and bad signatures are
/// ignored.
pub fn check_threshold(
    role: &str,
    message: &[u8],
    signatures: &[(KeyId, String)],
    keys: &BTreeMap<KeyId, PublicKey>,
    authorised: &[KeyId],
    threshold: usize,
) -> Result<(), ThresholdError> {
    let mut counted: HashSet<[u8; 32]> = HashSet::new();
    for (id, sig) in signatures {
        if !authorised.contains(id) {
            continue;
        }
        let Some(key) = keys.get(id) else { continue };
        if counted.contains(key.as_bytes()) {
            continue;
        }
        if key.verifies(message, sig) {
            counted.insert(*key.as_bytes());
        }
    }
    if threshold == 0 || counted.len() < threshold {
        return Err(ThresholdError { role: role.to_string(), valid: counted.len(), threshold });
    }
    Ok(())
}

/// A key file as the engineer keeps it: the key object with its private half,
/// `{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": HEX, "private": HEX}}`
/// (securesystemslib's layout). A public key file is the same without `private`.
pub fn secret_to_file(k: &SecretKey) -> Vec<u8> {
    let mut v = k.public().to_value();
    v["keyval"]["private"] = Value::String(hex::encode(k.to_bytes()));
    let mut out = serde_json::to_vec_pretty(&v).expect("a key object serialises");
    out.push(b'\n');
    out
}

/// A public key file (see `secret_to_file`).
pub fn public_to_file(k: &PublicKey) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&k.to_value()).expect("a key object serialises");
    out.push(b'\n');
    out
}

/// Reads a secret key file; its public half must match its private half.
pub fn secret_from_file(bytes: &[u8]) -> Result<SecretKey, KeyError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| KeyError::Malformed(format!("not a key file: {e}")))?;
    let public = PublicKey::from_value(&v)?;
    let private = v["keyval"]["private"].as_str().ok_or_else(|| KeyError::Malformed("no private key in the file".into()))?;
    let bytes: [u8; 32] = hex::decode(private)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::Malformed("the private key is not 32 bytes of hex".into()))?;
    let k = SecretKey::from_bytes(&bytes);
    if k.public() != public {
        return Err(KeyError::Malformed("the private key does not match the public key in the file".into()));
    }
    Ok(k)
}

/// Reads the public key of a public or secret key file.
pub fn public_from_file(bytes: &[u8]) -> Result<PublicKey, KeyError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| KeyError::Malformed(format!("not a key file: {e}")))?;
    PublicKey::from_value(&v)
}
