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
    /// The channel followed (absent for a mount that stays on one generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelName>,
    /// The generation a mount made with `--at IMAGE@N` stays on. Absent in files of earlier
    /// builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The generation a `switch_to` (or `imgfs mount --hold`) holds the mount on, `IMAGE@N`:
    /// the channel poller leaves it there, and a restart starts on it. Absent in files of
    /// earlier builds (not held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
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

/// What a mount serves: the generation a channel names (`imgfs mount --channel`), or one
/// generation, `IMAGE@N`, verified through the signed targets and never left (`--at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Follow a channel.
    Channel(ChannelName),
    /// Stay on one generation.
    At {
        /// The image family.
        image: format::ImageName,
        /// The generation number.
        n: u64,
    },
}

impl Follow {
    /// `IMAGE@N` of a pinned mount.
    pub fn at(&self) -> Option<String> {
        match self {
            Follow::Channel(_) => None,
            Follow::At { image, n } => Some(format!("{image}@{n}")),
        }
    }

    /// The channel of a channel mount.
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Follow::Channel(c) => Some(c),
            Follow::At { .. } => None,
        }
    }
}

impl std::fmt::Display for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Follow::Channel(c) => write!(f, "{c}"),
            Follow::At { image, n } => write!(f, "{image}@{n}"),
        }
    }
}

impl State {
    /// Whether this state is of a mount following `follow` (a state of another channel, or
    /// of a mount pinned elsewhere, is not used to start).
    pub fn follows(&self, follow: &Follow) -> bool {
        self.channel.as_ref() == follow.channel() && self.at == follow.at()
    }
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
