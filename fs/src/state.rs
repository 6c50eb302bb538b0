//! The endpoint's state on disk, `CACHE/state.json`: which channel the cache follows and the
//! current and previous generations it served, so a restart with every server unreachable
//! mounts the last verified generation from the cache, and rollback still has its target;
//! also the user's pins and the prefetches to resume.
//! Written to a temporary file, synced, then renamed over the old one.

use std::path::{Path, PathBuf};

use format::{ChannelName, Digest};
use serde::{Deserialize, Serialize};

/// Format version of `state.json`.
pub const STATE_VERSION: u32 = 1;

/// One generation the endpoint served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// `IMAGE@N`.
    pub generation: String,
    /// Manifest digest (hex in the file).
    pub manifest: Digest,
    /// The channel version that named it (0 if unknown).
    pub channel_version: u64,
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always `STATE_VERSION`.
    pub version: u32,
    /// The channel followed.
    pub channel: ChannelName,
    /// The generation served now.
    pub current: Served,
    /// The one before, for rollback.
    pub previous: Option<Served>,
    /// Generations the user pinned (channel_version 0). Absent in files of earlier builds.
    #[serde(default)]
    pub pins: Vec<Served>,
    /// Prefetches under way, resumed when the mount starts again.
    #[serde(default)]
    pub prefetching: Vec<Served>,
}

/// The state file of a cache directory.
pub fn path(cache: &Path) -> PathBuf {
    cache.join("state.json")
}

/// Reads the state; `None` if there is none or it is unreadable (then nothing is trusted).
pub fn load(cache: &Path) -> Option<State> {
    let bytes = std::fs::read(path(cache)).ok()?;
    serde_json::from_slice::<State>(&bytes).ok().filter(|s| s.version == STATE_VERSION)
}

/// Writes the state atomically and durably.
pub fn save(cache: &Path, state: &State) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).expect("serialisable");
    cache::atomic::write(&path(cache), &bytes).map_err(|e| e.source)
}
