//! Server configuration: embedded defaults, an optional TOML file, and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `imaged serve` can be told. Every field has a default.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory: `store/` (objects), `meta/` (rocksdb), `tuf/` (signed metadata and the
    /// online keys), `admin.token`.
    pub data: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The bearer token for publishing; if unset, one is generated into `DATA/admin.token`.
    pub token: Option<String>,
    /// Require the token for reads too.
    pub token_for_reads: bool,
    /// Largest object accepted by upload (framed bytes).
    pub max_object_bytes: u64,
    /// Largest manifest accepted by publish.
    pub max_manifest_bytes: u64,
    /// Channel versions whose generations garbage collection keeps, per channel.
    pub keep_channel_versions: u32,
    /// Poll interval endpoints are told to use, seconds.
    pub poll_seconds: u32,
    /// Garbage collection keeps generations published, and objects uploaded or asked about by
    /// a push, less than this many seconds ago.
    pub gc_grace_seconds: u64,
    /// Run garbage collection every this many seconds while serving; 0 never.
    pub gc_interval_seconds: u64,
    /// Memory for small objects served often (0 turns the memory cache off).
    pub memory_cache_bytes: u64,
    /// How long a signed `timestamp.json` is valid, seconds (re-signed at half of it).
    pub tuf_timestamp_seconds: i64,
    /// How long a signed `snapshot.json` is valid, seconds.
    pub tuf_snapshot_seconds: i64,
    /// How long the signed channel records are valid, seconds.
    pub tuf_channels_seconds: i64,
    /// The type of the online keys (timestamp, snapshot, channels) the server makes:
    /// `ed25519`, `ecdsa` (P-256) or `rsa` (3072 bits, PSS). Keys made before keep their type.
    pub tuf_key_type: String,
    /// An endpoint not heard from for this many seconds is offline (0: three check-in
    /// intervals, `poll_seconds`).
    pub fleet_offline_seconds: u64,
    /// How long an endpoint's session token works, seconds.
    pub fleet_session_seconds: u64,
    /// Garbage collection keeps the generations endpoints seen in this many seconds run or
    /// would roll back to.
    pub fleet_keep_seconds: u64,
    /// Most check-ins answered at once; more get 503 with `Retry-After`.
    pub fleet_max_checkins: u64,
    /// zstd level at which serving packs hold objects, recompressed in the background after a
    /// publish when that makes them smaller (an object's identity, its digest, is unchanged);
    /// 0 serves each object as stored. Costs CPU: level 19 runs at about 2 MB/s per core.
    pub serve_zstd_level: i32,
    /// `[storage]`: serving packs, layouts and the signed metadata in an S3-compatible bucket
    /// instead of `DATA/serve/` (docs/scale.md).
    pub storage: Option<crate::backend::BucketConfig>,
}

/// The default port: unassigned by IANA, easy to remember ("IMG" on a phone keypad is 464).
pub const DEFAULT_PORT: u16 = 4640;

impl Default for Config {
    fn default() -> Config {
        Config {
            data: default_data_dir(),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            token: None,
            token_for_reads: false,
            max_object_bytes: 64 << 20,
            max_manifest_bytes: 16 << 20,
            keep_channel_versions: 5,
            poll_seconds: 300,
            gc_grace_seconds: 24 * 3600,
            gc_interval_seconds: 0,
            memory_cache_bytes: 128 << 20,
            tuf_timestamp_seconds: 24 * 3600,
            tuf_snapshot_seconds: 7 * 24 * 3600,
            tuf_channels_seconds: 7 * 24 * 3600,
            tuf_key_type: "ed25519".into(),
            fleet_offline_seconds: 0,
            fleet_session_seconds: 3600,
            fleet_keep_seconds: 30 * 24 * 3600,
            fleet_max_checkins: 10_000,
            serve_zstd_level: 0,
            storage: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/imaged");
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("imaged/server"),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/imaged/server"))
            .unwrap_or_else(|| PathBuf::from("imaged-data")),
    }
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

impl Config {
    /// The fleet's settings.
    pub fn fleet(&self) -> crate::fleet::Settings {
        let interval = u64::from(self.poll_seconds.max(1));
        let offline = if self.fleet_offline_seconds == 0 { 3 * interval } else { self.fleet_offline_seconds };
        crate::fleet::Settings { interval, offline_after: offline as i64, session_seconds: self.fleet_session_seconds.max(10) as i64 }
    }

    /// Reads a TOML file over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }
}
