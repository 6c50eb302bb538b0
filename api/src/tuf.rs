//! The signed-metadata routes for engineers: `GET /v1/tuf`, `POST /v1/tuf/keys/{role}`,
//! `PUT /v1/tuf/root`, `PUT /v1/tuf/roles/{role}`. (The files clients fetch, `GET /tuf/{file}`
//! and `GET /tuf/targets/{path}`, are TUF's own formats, read by the `trust` crate.)

use std::collections::BTreeMap;

/// A public key as TUF writes it (`{"keytype", "scheme", "keyval": {"public"}}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TufKey {
    /// `ed25519`.
    pub keytype: String,
    /// `ed25519`.
    pub scheme: String,
    /// The key material.
    pub keyval: TufKeyVal,
}

/// The key material of a `TufKey`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TufKeyVal {
    /// The public key, hex.
    pub public: String,
}

/// Version and expiry of one role's current metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleState {
    /// Version.
    pub version: u64,
    /// Expiry, TUF's UTC time format.
    pub expires: String,
}

/// Answer of `GET /v1/tuf`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TufStatus {
    /// Whether a root has been uploaded.
    pub initialised: bool,
    /// The online keys the server holds, by role (`timestamp`, `snapshot`, `channels`), newest last.
    pub online_keys: BTreeMap<String, Vec<TufKey>>,
    /// Every role's current version and expiry.
    pub roles: BTreeMap<String, RoleState>,
}

/// Answer of `POST /v1/tuf/keys/{role}`: the new online key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewKey {
    /// Its TUF key id.
    pub keyid: String,
    /// The public key.
    pub key: TufKey,
}

/// Answer of `PUT /v1/tuf/root` and `PUT /v1/tuf/roles/{role}`: the version now current.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleUploaded {
    /// The role.
    pub role: String,
    /// Its version.
    pub version: u64,
}
