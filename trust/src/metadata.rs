//! The metadata of the four top-level roles and of delegated targets roles, as TUF 1.0
//! writes it: an envelope `{"signed": {...}, "signatures": [{"keyid", "sig"}]}` whose
//! `signed` object carries `_type`, `spec_version`, `version` and `expires`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::canonical;
use crate::keys::{KeyId, PublicKey};
use crate::time;

/// Why metadata was refused before any signature was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// More bytes than the caller allows for this file.
    #[error("{role}: {len} bytes, more than the {max} allowed")]
    TooLong {
        /// The role.
        role: String,
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or not the shape of this role's metadata.
    #[error("{role}: malformed metadata: {why}")]
    Malformed {
        /// The role.
        role: String,
        /// What is wrong.
        why: String,
    },
    /// Metadata of another role than expected.
    #[error("expected {want} metadata, got _type {got:?}")]
    WrongType {
        /// The type expected.
        want: String,
        /// The type found.
        got: String,
    },
}

/// A metadata file as received: its signatures and the canonical bytes they sign.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The `signed` object.
    pub signed: Value,
    /// (key id, hex signature) pairs.
    pub signatures: Vec<(KeyId, String)>,
    /// The canonical JSON of `signed`: what the signatures cover.
    pub message: Vec<u8>,
}

impl Envelope {
    /// Parses a file of role `role`, at most `max` bytes long.
    pub fn parse(role: &str, bytes: &[u8], max: usize) -> Result<Envelope, MetaError> {
        if bytes.len() > max {
            return Err(MetaError::TooLong { role: role.into(), len: bytes.len(), max });
        }
        let bad = |why: String| MetaError::Malformed { role: role.into(), why };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let signed = v.get("signed").filter(|s| s.is_object()).ok_or_else(|| bad("no signed object".into()))?.clone();
        let sigs = v.get("signatures").and_then(Value::as_array).ok_or_else(|| bad("no signatures list".into()))?;
        let signatures = sigs
            .iter()
            .map(|s| match (s["keyid"].as_str(), s["sig"].as_str()) {
                (Some(k), Some(sig)) => Ok((KeyId(k.to_string()), sig.to_string())),
                _ => Err(bad("a signature lacks keyid or sig".into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // As python-tuf: one key id signing twice is an error, not one signature counted once.
        let mut seen = std::collections::HashSet::new();
        if let Some((id, _)) = signatures.iter().find(|(id, _)| !seen.insert(id)) {
            return Err(bad(format!("the signatures list key {id} twice")));
        }
        let message = canonical::encode(&signed).map_err(|e| bad(e.to_string()))?;
        Ok(Envelope { signed, signatures, message })
    }

    /// The `signed` object as role metadata of type `want`.
    pub fn decode<T: for<'de> Deserialize<'de>>(&self, role: &str, want: &str) -> Result<T, MetaError> {
        let got = self.signed["_type"].as_str().unwrap_or("");
        if got != want {
            return Err(MetaError::WrongType { want: want.into(), got: got.into() });
        }
        serde_json::from_value(self.signed.clone()).map_err(|e| MetaError::Malformed { role: role.into(), why: e.to_string() })
    }
}

/// Fields every role's metadata has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Common {
    /// TUF specification version, e.g. `1.0.31`.
    pub spec_version: String,
    /// Version of this role's metadata.
    pub version: u64,
    /// When it expires.
    #[serde(deserialize_with = "de_time")]
    pub expires: i64,
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    time::parse(&s).map_err(serde::de::Error::custom)
}

fn de_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<KeyId, PublicKey>, D::Error> {
    // Keys of a type this client cannot use are skipped: they can never verify anything.
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw.into_iter().filter_map(|(id, v)| PublicKey::from_value(&v).ok().map(|k| (KeyId(id), k))).collect())
}

/// The keys and threshold of a role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoleKeys {
    /// Keys allowed to sign for it.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: usize,
}

/// `root.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Root {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Every key of the top-level roles.
    #[serde(deserialize_with = "de_keys")]
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// `root`, `targets`, `snapshot`, `timestamp`.
    pub roles: BTreeMap<String, RoleKeys>,
    /// Whether files are published under version-prefixed names.
    #[serde(default)]
    pub consistent_snapshot: bool,
}

impl Root {
    /// The keys and threshold of a top-level role.
    pub fn role(&self, name: &str) -> Option<&RoleKeys> {
        self.roles.get(name)
    }
}

/// What a timestamp or snapshot says of another metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetaFile {
    /// Its version.
    pub version: u64,
    /// Its length in bytes, if given.
    #[serde(default)]
    pub length: Option<u64>,
    /// Its hashes by algorithm (hex), if given.
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

/// `timestamp.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Only `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    /// What it says of `snapshot.json`.
    pub fn snapshot(&self) -> Option<&MetaFile> {
        self.meta.get("snapshot.json")
    }
}

/// `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// `targets.json` and every delegated role's file, by file name.
    pub meta: BTreeMap<String, MetaFile>,
}

/// One target file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetFile {
    /// Its length in bytes.
    pub length: u64,
    /// Its hashes by algorithm (hex).
    pub hashes: BTreeMap<String, String>,
    /// Application data (imaged: generation and channel records).
    #[serde(default)]
    pub custom: Option<Value>,
}

/// A delegation from a targets role to another.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Delegation {
    /// The delegated role's name.
    pub name: String,
    /// Keys allowed to sign for it.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: usize,
    /// Target path patterns it may sign (`*` matches within a path segment).
    #[serde(default)]
    pub paths: Vec<String>,
    /// If it matches a path, no later delegation is consulted for that path.
    #[serde(default)]
    pub terminating: bool,
}

/// The delegations of a targets role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Delegations {
    /// Keys of the delegated roles.
    #[serde(deserialize_with = "de_keys")]
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// In the order to consult them.
    pub roles: Vec<Delegation>,
}

/// `targets.json` or a delegated role's file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Targets {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Target files by path.
    pub targets: BTreeMap<String, TargetFile>,
    /// Roles it delegates to.
    #[serde(default)]
    pub delegations: Option<Delegations>,
    /// Application data of the role itself (imaged: an image family's `min_epoch`).
    #[serde(default)]
    pub custom: Option<Value>,
}

/// Whether delegation pattern `pattern` matches target path `path`: `*` matches any run of
/// characters except `/`, every other character itself (TUF's shell-style paths).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star.filter(|&(_, ss)| s[ss] != b'/') {
            // The star swallows one more character (never a separator).
            star = Some((sp, ss + 1));
            pi = sp + 1;
            si = ss + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
