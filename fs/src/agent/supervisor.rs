//! The mounts' processes: each desired mount is an `imgfs mount --daemon` of its own (this
//! executable), with its own cache directory and log, reached through its control socket.
//! The daemons outlive the agent (a restart of the agent does not disturb running programs):
//! a new agent adopts the mounts listed in `STATE/mounts.json` that still answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use api::control::{Request, Status, Switch};
use api::fleet::Source;

use super::config::AgentConfig;
use super::reconcile::{Running, Seen, Spec};

/// Why a mount could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The mount process could not be run.
    #[error("running {}", exe.display())]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The mount did not come up: what it said.
    #[error("mounting {}: {said}", path.display())]
    Mount {
        /// Where.
        path: PathBuf,
        /// Its last words.
        said: String,
    },
    /// A directory could not be made.
    #[error("creating {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The mount did not answer on its control socket.
    #[error(transparent)]
    Control(#[from] crate::control::RequestError),
    /// The mount answered with a failure.
    #[error("{}", .0.error)]
    Failed(api::control::Failed),
}

/// One mount the agent runs.
#[derive(Debug, Clone)]
pub struct Child {
    /// What the reconciler sees.
    pub running: Running,
    /// Where it is mounted on this machine (the namespace path under `mount_prefix`).
    pub local: PathBuf,
    /// What its last status showed.
    pub seen: Option<Seen>,
    /// Its last status.
    pub status: Option<Status>,
    /// Failures to start in a row (for the backoff).
    pub failures: u32,
}

/// What `mounts.json` lists: the mounts the agent started, to adopt after a restart.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct MountsFile {
    mounts: BTreeMap<String, SavedMount>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SavedMount {
    source: Source,
    cache_share: u8,
    passthrough: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writable: Option<api::fleet::WritableMount>,
}

/// The mounts' processes.
pub struct Supervisor {
    exe: PathBuf,
    config: AgentConfig,
    /// By namespace path.
    pub children: BTreeMap<String, Child>,
}

/// A directory name for the mount at namespace path `path`: its components joined by `-`,
/// then 8 hex digits of its hash (so `/a-b` and `/a/b` differ).
pub fn dir_name(path: &str) -> String {
    let readable: String =
        path.trim_matches('/').replace('/', "-").chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    let hash = format::Digest::of(path.as_bytes()).to_hex();
    format!("{}-{}", readable.chars().take(64).collect::<String>(), &hash[..8])
}

impl Supervisor {
    /// A supervisor starting mounts with `exe` as `config` says.
    pub fn new(exe: PathBuf, config: AgentConfig) -> Supervisor {
        Supervisor { exe, config, children: BTreeMap::new() }
    }

    fn mounts_file(&self) -> PathBuf {
        self.config.state.join("mounts.json")
    }

    /// Records the mounts run now, so a restarted agent adopts them.
    pub fn save(&self) {
        let file = MountsFile {
            mounts: self
                .children
                .iter()
                .map(|(p, c)| {
                    let s = &c.running.spec;
                    (p.clone(), SavedMount {
                            source: s.source.clone(),
                            cache_share: s.cache_share,
                            passthrough: s.passthrough,
                            writable: s.writable.clone(),
                        },
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("serialises");
        if let Err(e) = cache::atomic::write(&self.mounts_file(), &bytes) {
            tracing::warn!(error = %e, "cannot record the mounts; a restarted agent will not adopt them");
        }
    }

    /// Adopts the mounts a previous agent started that still answer; the others are marked
    /// down (started again by the next reconcile if still desired, else unmounted).
    pub fn adopt(&mut self, now: Instant) {
        let Ok(bytes) = std::fs::read(self.mounts_file()) else { return };
        let Ok(file) = serde_json::from_slice::<MountsFile>(&bytes) else { return };
        for (path, m) in file.mounts {
            let local = self.config.local_path(&path);
            let spec = Spec { source: m.source, cache_share: m.cache_share, passthrough: m.passthrough, writable: m.writable };
            let (running, seen, status) = match status(&local) {
                Ok(st) => {
                    tracing::info!(path, generation = %st.current.generation, "adopted a running mount");
                    let seen = super::reconcile::observe(&path, None, &st).1;
                    (Running::of_status(spec, &st), Some(seen), Some(st))
                }
                Err(_) => {
                    detach(&local);
                    (Running::down(spec, now), None, None)
                }
            };
            self.children.insert(path, Child { running, local, seen, status, failures: 0 });
        }
    }

    /// The cache directory of the mount at namespace path `path`.
    pub fn cache_dir(&self, path: &str) -> PathBuf {
        self.config.cache.join(dir_name(path))
    }

    /// The writable layer's directory of the mount at namespace path `path` (kept with the
    /// agent's state: it is the machine's data, not a cache).
    pub fn writable_dir(&self, path: &str) -> PathBuf {
        self.config.state.join("writable").join(dir_name(path))
    }

    /// Starts the mount at namespace path `path` (an `imgfs mount --daemon`), on generation
    /// `hold` and held there if given (`--hold`: a generation staged for the next boot, so the
    /// mount never serves the one before); its status once up.
    pub fn start(&mut self, path: &str, spec: &Spec, hold: Option<&str>) -> Result<Status, SuperviseError> {
        let local = self.config.local_path(path);
        let cache = self.cache_dir(path);
        let logs = self.config.state.join("logs");
        for dir in [&local, &cache, &logs] {
            std::fs::create_dir_all(dir).map_err(|source| SuperviseError::Dir { path: dir.clone(), source })?;
        }
        // A mount whose process is gone leaves a dead mount behind ("transport endpoint is not
        // connected"): it goes first.
        detach(&local);
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("mount").arg("--daemon").arg("--server").arg(self.config.servers.join(","));
        match &spec.source {
            Source::Channel(c) => cmd.arg("--channel").arg(c.as_str()),
            Source::Pinned(g) => cmd.arg("--at").arg(g),
        };
        cmd.arg("--cache").arg(&cache).arg("--cache-size").arg(format!("{}%", spec.cache_share));
        cmd.arg("--log").arg(logs.join(format!("{}.log", dir_name(path))));
        if let Some(root) = &self.config.root {
            cmd.arg("--root").arg(root);
        }
        if spec.passthrough {
            cmd.arg("--passthrough");
        }
        if let Some(g) = hold {
            cmd.arg("--hold").arg(g);
        }
        if let Some(w) = &spec.writable {
            cmd.arg("--writable").arg(self.writable_dir(path));
            for p in &w.protect {
                cmd.arg("--protect").arg(p);
            }
            if let Some(s) = w.drift_interval_seconds {
                cmd.arg("--drift-interval").arg(format!("{}s", s.max(1)));
            }
        }
        cmd.arg(&local);
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let out = cmd.output().map_err(|source| SuperviseError::Spawn { exe: self.exe.clone(), source })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_string();
            return Err(SuperviseError::Mount { path: local, said: format!("{said} ({})", out.status) });
        }
        Ok(status(&local)?)
    }

    /// Unmounts `local`: the daemon ends when the kernel lets the mount go; a busy mount is
    /// detached (programs using it keep it until they let go).
    pub fn stop(&mut self, path: &str) {
        if let Some(c) = self.children.remove(path) {
            if let Err(e) = nix::mount::umount2(&c.local, nix::mount::MntFlags::empty()) {
                if e == nix::errno::Errno::EBUSY {
                    tracing::info!(path, "the mount is busy: detached, it goes when its last user lets go");
                    detach(&c.local);
                } else if e != nix::errno::Errno::EINVAL {
                    tracing::warn!(path, error = %e, "cannot unmount");
                }
            }
        }
    }

    /// Asks the mount to check its channel now (ending a hold).
    pub fn update(&self, path: &str) -> Result<Switch, SuperviseError> {
        self.switch(path, &Request::Update)
    }

    /// Asks the mount to switch to `generation` and hold it there.
    pub fn switch_to(&self, path: &str, generation: &str) -> Result<Switch, SuperviseError> {
        self.switch(path, &Request::SwitchTo { generation: generation.to_string() })
    }

    /// Asks the mount to go back to its previous generation.
    pub fn rollback(&self, path: &str) -> Result<Switch, SuperviseError> {
        self.switch(path, &Request::Rollback)
    }

    fn switch(&self, path: &str, request: &Request) -> Result<Switch, SuperviseError> {
        let c = self
            .children
            .get(path)
            .ok_or_else(|| SuperviseError::Failed(api::control::Failed::new(api::control::FailureKind::NotFound, "no such mount")))?;
        crate::control::request::<Switch>(&c.local, request, &mut |_| {})?.map_err(SuperviseError::Failed)
    }
}

/// The status of the mount at `local`.
pub fn status(local: &Path) -> Result<Status, SuperviseError> {
    crate::control::request::<Status>(local, &Request::Status, &mut |_| {})?.map_err(SuperviseError::Failed)
}

/// Detaches whatever is mounted at `local` (nothing if nothing is).
fn detach(local: &Path) {
    let _ = nix::mount::umount2(local, nix::mount::MntFlags::MNT_DETACH);
}
