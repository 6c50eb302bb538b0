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
    /// Target path patterns it may sign (shell-style, segment by segment: see
    /// [`path_matches`]).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Or: prefixes of the hex sha256 of the target paths it may sign (TUF's hashed bins).
    #[serde(default)]
    pub path_hash_prefixes: Option<Vec<String>>,
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

/// Whether target `path` matches delegation `pattern` as python-tuf matches it: both split on
/// `/`, the same number of segments, and each segment matched shell-style (`fnmatchcase`):
/// `*` any run of characters within the segment, `?` any one character, `[abc]`, `[a-z]` and
/// `[!abc]` one character of (or not of) a set; no escapes, case-sensitive. A wildcard never
/// matches `/`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let (ps, ss): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    ps.len() == ss.len() && ps.iter().zip(&ss).all(|(p, s)| segment_matches(p.as_bytes(), s.as_bytes()))
}

/// One segment, shell-style (see [`path_matches`]); backtracks on the last `*`.
fn segment_matches(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, si));
            pi += 1;
            continue;
        }
        // How many pattern bytes the element at `pi` takes, if it matches `s[si]`.
        let took = match p.get(pi) {
            None => None,
            Some(b'?') => Some(1),
            Some(b'[') => match set_at(&p[pi..], s[si]) {
                Some((len, true)) => Some(len),
                Some((_, false)) => None,
                None => (s[si] == b'[').then_some(1),
            },
            Some(&c) => (c == s[si]).then_some(1),
        };
        match (took, star) {
            (Some(n), _) => {
                pi += n;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                star = Some((sp, ss + 1));
                pi = sp + 1;
                si = ss + 1;
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The `[...]` set at the start of `p`: its length in the pattern and whether `c` is in it
/// (with `[!...]`, not in it); `None` when the `[` has no `]` (a plain character, as in
/// fnmatch). The first character after `[` or `[!` may be `]` itself; `a-z` is a range.
fn set_at(p: &[u8], c: u8) -> Option<(usize, bool)> {
    let negate = p.get(1) == Some(&b'!');
    let start = if negate { 2 } else { 1 };
    let close = p.iter().skip(start + 1).position(|&b| b == b']').map(|i| i + start + 1)?;
    let set = &p[start..close];
    let mut i = 0;
    let mut hit = false;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            hit |= set[i] <= c && c <= set[i + 2];
            i += 3;
        } else {
            hit |= set[i] == c;
            i += 1;
        }
    }
    Some((close + 1, hit != negate))
}

impl Delegation {
    /// Whether the delegation covers target `path`: the hex sha256 of the path starts with
    /// one of its `path_hash_prefixes` if it has them, else one of its `paths` matches.
    pub fn covers(&self, path: &str) -> bool {
        match &self.path_hash_prefixes {
            Some(prefixes) => {
                let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(path.as_bytes()));
                prefixes.iter().any(|p| h.starts_with(p.as_str()))
            }
            None => self.paths.iter().any(|p| path_matches(p, path)),
        }
    }
}
