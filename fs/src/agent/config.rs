//! `agent.toml`, the configuration of `imgfs agent` (docs/fleet.md, `## agent.toml`): read,
//! checked and given its defaults here, before anything starts.

use std::path::{Path, PathBuf};

use api::fleet::Labels;

/// Most events the report queue keeps by default.
pub const DEFAULT_REPORT_QUEUE_MAX: usize = 10_000;

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Servers, tried in order.
    pub servers: Vec<String>,
    /// The endpoint's own state: key, identity, report queue, logs.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// Where each mount's cache goes (one subdirectory per mount, named from its path).
    #[serde(default = "default_cache")]
    pub cache: PathBuf,
    /// The repository's root.json, to start trusting from (a mount's cache keeps it after).
    pub root: Option<PathBuf>,
    /// Put in front of every namespace mount path (tests run many agents on one machine).
    pub mount_prefix: Option<PathBuf>,
    /// Labels this endpoint gives itself.
    #[serde(default)]
    pub labels: Labels,
    /// Enroll with this token on the first start (when STATE has no endpoint.json).
    pub enroll_token: Option<String>,
    /// Seconds between check-ins, overriding the server's.
    pub interval_seconds: Option<u64>,
    /// Most events the report queue keeps.
    #[serde(default = "default_queue_max")]
    pub report_queue_max: usize,
    /// The health probe run after a switch when the namespace's mount has none (`[health]`:
    /// `command` or `url`, `timeout_seconds`); none at all: healthy.
    pub health: Option<api::fleet::Probe>,
    /// The command an activation `restart:UNIT,UNIT` runs, the units appended as arguments.
    #[serde(default = "default_restart_command")]
    pub restart_command: String,
}

fn default_restart_command() -> String {
    DEFAULT_RESTART_COMMAND.into()
}

/// The default `restart_command`.
pub const DEFAULT_RESTART_COMMAND: &str = "systemctl restart";

fn default_state() -> PathBuf {
    PathBuf::from("/var/lib/imgfs")
}

fn default_cache() -> PathBuf {
    PathBuf::from("/var/cache/imgfs")
}

fn default_queue_max() -> usize {
    DEFAULT_REPORT_QUEUE_MAX
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML of this form.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
    /// A value breaks a rule.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl AgentConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        AgentConfig::parse(&text).map_err(|e| match e {
            ParseError::Toml(source) => ConfigError::Parse { path: path.into(), source },
            ParseError::Invalid(what) => ConfigError::Invalid { path: path.into(), what },
        })
    }

    /// Parses and checks the text of an `agent.toml`.
    pub fn parse(text: &str) -> Result<AgentConfig, ParseError> {
        let c: AgentConfig = toml::from_str(text).map_err(ParseError::Toml)?;
        if c.servers.is_empty() {
            return Err(ParseError::Invalid("`servers` names no server".into()));
        }
        if let Some(s) = c.servers.iter().find(|s| !(s.starts_with("http://") || s.starts_with("https://"))) {
            return Err(ParseError::Invalid(format!("server {s:?} is not an http:// or https:// URL")));
        }
        if let Some((k, v)) = c.labels.iter().find(|(k, v)| !api::fleet::label_key_ok(k) || !api::fleet::label_value_ok(v)) {
            return Err(ParseError::Invalid(format!("label {k}={v}: keys 1-63 and values 0-63 of [a-zA-Z0-9._/-]")));
        }
        if c.labels.len() > api::fleet::MAX_LABELS {
            return Err(ParseError::Invalid(format!("{} labels, at most {}", c.labels.len(), api::fleet::MAX_LABELS)));
        }
        if c.interval_seconds == Some(0) {
            return Err(ParseError::Invalid("interval_seconds must be at least 1".into()));
        }
        if c.report_queue_max == 0 {
            return Err(ParseError::Invalid("report_queue_max must be at least 1".into()));
        }
        if let Some(h) = &c.health {
            if h.command.is_some() == h.url.is_some() {
                return Err(ParseError::Invalid("[health] needs exactly one of `command` and `url`".into()));
            }
            if h.timeout_seconds == 0 {
                return Err(ParseError::Invalid("[health] timeout_seconds must be at least 1".into()));
            }
        }
        if c.restart_command.split_whitespace().next().is_none() {
            return Err(ParseError::Invalid("restart_command is empty".into()));
        }
        if let Some(p) = c.mount_prefix.as_ref().filter(|p| !p.is_absolute()) {
            return Err(ParseError::Invalid(format!("mount_prefix {} must be absolute", p.display())));
        }
        Ok(c)
    }

    /// Where the namespace's mount `path` is mounted here: under `mount_prefix` if set.
    pub fn local_path(&self, path: &str) -> PathBuf {
        match &self.mount_prefix {
            Some(prefix) => prefix.join(path.trim_start_matches('/')),
            None => PathBuf::from(path),
        }
    }
}

/// Why a configuration text does not parse (without its file name).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not TOML of this form.
    #[error(transparent)]
    Toml(toml::de::Error),
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
}
