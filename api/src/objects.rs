//! Object routes: `POST /v1/objects/missing`, `POST /v1/objects/batch` (answered with records,
//! see `format::record` in docs/format.md), `POST /v1/objects/upload`, `PUT /v1/objects/{digest}`.

use format::Digest;

/// Body of `POST /v1/objects/missing` and `POST /v1/objects/batch`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestList {
    /// The objects asked about.
    pub digests: Vec<Digest>,
}

/// Answer of `POST /v1/objects/missing`: which of the digests the server lacks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Missing {
    /// The absent ones, in the order asked.
    pub missing: Vec<Digest>,
}

/// Answer of `PUT /v1/objects/{digest}` (201 when new, 200 when already present).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    /// The object.
    pub digest: Digest,
    /// Whether the server did not have it before.
    pub new: bool,
}

/// Answer of `POST /v1/objects/upload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Uploaded {
    /// Records in the body.
    pub stored: u64,
    /// Of those, objects the server did not have before.
    pub new: u64,
}

/// The media type of a body of records.
pub const RECORDS_CONTENT_TYPE: &str = "application/vnd.imaged.records";
