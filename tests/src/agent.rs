//! A real `imgfs agent` (`Agent`) with its own state, cache and mount directories, configured
//! by an `agent.toml` the test writes; killed, and its mounts detached, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, Server};

/// A running agent.
pub struct Agent {
    /// The process (None once stopped).
    pub child: Option<Child>,
    /// Its directory: `agent.toml`, `agent.log`, `state/`, `cache/`, `mnt/`.
    pub dir: PathBuf,
    /// Namespace paths it may have mounted (detached on drop).
    pub paths: Vec<String>,
    /// Environment variables it (and so its mounts) runs with.
    pub env: Vec<(String, PathBuf)>,
}

impl Agent {
    /// Writes `DIR/agent.toml` for `server` (enrolling with `token`, labelled `site=SITE`,
    /// `extra` TOML lines appended before the labels) and starts `imgfs agent`.
    pub fn start(dir: &Path, server: &Server, root: &Path, token: &str, site: &str, extra: &str, paths: &[&str]) -> Agent {
        Agent::start_with_env(dir, server, root, token, site, extra, paths, &[])
    }

    /// `start` with environment variables (`IMAGED_TEST_CLOCK`: the agent's and its mounts' clock).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_env(
        dir: &Path,
        server: &Server,
        root: &Path,
        token: &str,
        site: &str,
        extra: &str,
        paths: &[&str],
        env: &[(&str, &Path)],
    ) -> Agent {
        Agent::start_at(dir, &server.url, root, token, site, extra, paths, env)
    }

    /// `start_with_env` reaching the server at `url` (a tunnel in front of it, say), for the
    /// agent and its mounts alike.
    #[allow(clippy::too_many_arguments)]
    pub fn start_at(
        dir: &Path,
        url: &str,
        root: &Path,
        token: &str,
        site: &str,
        extra: &str,
        paths: &[&str],
        env: &[(&str, &Path)],
    ) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.toml");
        let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
        let text = format!(
            "servers = [{:?}]\nstate = {:?}\ncache = {:?}\nroot = {:?}\nmount_prefix = {:?}\nenroll_token = {:?}\n{extra}\n[labels]\nsite = {:?}\n",
            url,
            d("state"),
            d("cache"),
            root.to_str().unwrap(),
            d("mnt"),
            token,
            site
        );
        std::fs::write(&config, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
        let mut agent = Agent { child: None, dir: dir.to_path_buf(), paths: paths.iter().map(|p| p.to_string()).collect(), env };
        agent.restart();
        agent
    }

    /// Starts the agent again on the same configuration (after `stop`).
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).unwrap();
        let child = Command::new(bin("imgfs"))
            .arg("agent")
            .arg("--config")
            .arg(self.dir.join("agent.toml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Kills the agent process at once (its mounts keep serving).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where the namespace's `path` is mounted.
    pub fn mount(&self, path: &str) -> PathBuf {
        self.dir.join("mnt").join(path.trim_start_matches('/'))
    }

    /// The endpoint id, once it enrolled (waits at most 60 s).
    pub fn id(&self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = std::fs::read(self.dir.join("state/endpoint.json")) {
                return serde_json::from_slice::<Value>(&b).unwrap()["endpoint"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < until, "the agent did not enroll: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Waits (at most `secs`) until `path/f` holds `want`; how long that took.
    pub fn wait_file(&self, path: &str, want: &str, secs: u64) -> Duration {
        let start = Instant::now();
        let file = self.mount(path).join("f");
        loop {
            if std::fs::read_to_string(&file).is_ok_and(|s| s == want) {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(secs), "{} never held {want:?}; agent log:\n{}", file.display(), self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        for p in &self.paths {
            let _ = nix::mount::umount2(&self.mount(p), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
