//! Generation routes: `POST /v1/generations` (manifest bytes), `GET /v1/generations`,
//! `GET /v1/generations/{image}/{number}`, `PUT|DELETE /v1/generations/{image}/{number}/keep`.

use format::{Digest, ImageName};

/// A published generation as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// Whether garbage collection must keep it (absent in the answer to a publish).
    #[serde(default)]
    pub keep: Option<bool>,
    /// Image family.
    pub image: ImageName,
    /// Generation number.
    pub generation: u64,
    /// `IMAGE@N`.
    pub label: String,
    /// The manifest's digest: the generation's identity.
    pub manifest: Digest,
    /// The root tree.
    pub root: Digest,
    /// The generation it was made from, if recorded.
    pub parent: Option<Digest>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The engineer's message.
    pub message: String,
    /// Sizes.
    pub stats: GenerationStats,
}

/// Sizes of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationStats {
    /// Regular files.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Objects reached.
    pub objects: u64,
}

/// Answer of `GET /v1/generations`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationList {
    /// Every published generation.
    pub generations: Vec<Generation>,
}

/// Answer of `PUT|DELETE /v1/generations/{image}/{number}/keep`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    /// `IMAGE@N`.
    pub generation: String,
    /// The mark now.
    pub keep: bool,
}
