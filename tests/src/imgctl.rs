//! The `imgctl` runner: a temporary store, `imgctl` runs on it (locally or against a
//! `Server`), signed publishing with this test's offline keys, and `ok_json` for its answers.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, client, Server, TestClock};

/// A temporary store and the means to run `imgctl` on it.
pub struct Imgctl {
    /// Holds the temporary directory alive.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: PathBuf,
    /// The (server URL, image family) pairs whose signing is set up.
    trusted: std::cell::RefCell<std::collections::HashSet<(String, String)>>,
    /// The clock file later runs use, if one was set.
    clock: std::cell::RefCell<Option<PathBuf>>,
    /// The type of the keys `key` makes (`ed25519` unless a test says otherwise).
    key_type: std::cell::Cell<&'static str>,
}

impl Default for Imgctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Imgctl {
    /// A fresh store in a new temporary directory.
    pub fn new() -> Imgctl {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Imgctl { dir, store, trusted: Default::default(), clock: Default::default(), key_type: std::cell::Cell::new("ed25519") }
    }

    /// Runs `imgctl --store STORE ARGS...`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command().args(args).env_remove("IMGCTL_STORE").output().unwrap()
    }

    /// From now on, runs `imgctl` with the clock `clock` sets (for an import's racy window,
    /// signatures' expiry).
    pub fn use_clock(&self, clock: &TestClock) {
        *self.clock.borrow_mut() = Some(clock.path().to_path_buf());
    }

    /// `imgctl --store STORE`, with the clock set by `use_clock`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("imgctl"));
        cmd.arg("--store").arg(&self.store);
        if let Some(clock) = &*self.clock.borrow() {
            cmd.env(cache::clock::TEST_CLOCK_VAR, clock);
        }
        cmd
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert!(out.status.success(), "imgctl failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports `src` with `--json` and returns the parsed report.
    pub fn import(&self, src: &Path, image: &str) -> serde_json::Value {
        let out = self.ok([OsStr::new("--json"), OsStr::new("import"), src.as_os_str(), OsStr::new("--image"), OsStr::new(image)]);
        serde_json::from_str(&out).unwrap()
    }

    /// Imports `src` as the next generation of `image`, pushes it to `server` signed with the
    /// family key (setting up the server's signed repository first if needed) and points
    /// `channel` at it.
    pub fn publish(&self, server: &Server, src: &Path, image: &str, channel: &str) {
        self.import(src, image);
        self.push_signed(server, &format!("{image}@latest"));
        ok_json(self.remote(server, &["--json", "channel", "set", channel, &format!("{image}@latest")]));
    }

    /// Pushes `generation` (`IMAGE@N`) to `server`, signed with the family key.
    pub fn push_signed(&self, server: &Server, generation: &str) -> serde_json::Value {
        let image = generation.split('@').next().unwrap();
        self.trust(server, image);
        let key = self.key("images");
        ok_json(self.remote(server, &["--json", "push", generation, "--key", key.to_str().unwrap()]))
    }

    /// This test's offline key `name` (`root`, `targets`, `images`: one key signs every
    /// image family here), generated on first use; `NAME.key.pub` is its public half.
    pub fn key(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("keys");
        let path = dir.join(format!("{name}.key"));
        if !path.exists() {
            fs::create_dir_all(&dir).unwrap();
            self.ok([OsStr::new("key"), OsStr::new("generate"), path.as_os_str(), OsStr::new("--type"), OsStr::new(self.key_type.get())]);
        }
        path
    }

    /// The type of the keys `key` makes from now on: `ed25519`, `ecdsa` or `rsa`.
    pub fn use_key_type(&self, keytype: &'static str) {
        self.key_type.set(keytype);
    }

    /// The root written by `trust init` (what endpoints are provisioned with).
    pub fn root_file(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    /// Sets up `server`'s signed repository for `image`: `trust init` the first time, a
    /// delegation of the family to the `images` key after that.
    pub fn trust(&self, server: &Server, image: &str) {
        if !self.trusted.borrow_mut().insert((server.url.clone(), image.to_string())) {
            return;
        }
        let (root, targets, images) = (self.key("root"), self.key("targets"), self.key("images"));
        let status: serde_json::Value = client().get(format!("{}/v1/tuf", server.url)).send().unwrap().json().unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        if status["initialised"] != true {
            let family = format!("{image}={}.pub", s(&images));
            let root_out = s(&self.root_file());
            ok_json(self.remote(
                server,
                &[
                    "--json",
                    "trust",
                    "init",
                    "--root-key",
                    &s(&root),
                    "--targets-key",
                    &s(&targets),
                    "--image",
                    &family,
                    "--out",
                    &root_out,
                ],
            ));
        } else if status["roles"].get(format!("images/{image}")).is_none() {
            let list = ok_json(self.remote(server, &["--json", "key", "list"]));
            let delegated = list["targets"]["delegations"].as_array().unwrap().iter().any(|d| d["name"] == format!("images/{image}"));
            if !delegated {
                let add = format!("{}.pub", s(&images));
                let role = format!("images/{image}");
                ok_json(self.remote(server, &["--json", "key", "rotate", &role, "--add", &add, "--sign-with", &s(&targets)]));
            }
        }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `imgctl --store STORE ARGS...` against `server`, with its token.
    pub fn remote(&self, server: &Server, args: &[&str]) -> Output {
        self.command().args(args).env("IMAGED_SERVER", &server.url).env("IMAGED_TOKEN", server.token()).output().unwrap()
    }
}

/// Asserts a command succeeded and parses its standard output as JSON.
pub fn ok_json(out: Output) -> serde_json::Value {
    assert!(out.status.success(), "command failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A failed run's exit code and standard error; panics if it succeeded.
pub fn failed(out: Output) -> (i32, String) {
    assert!(!out.status.success(), "unexpected success: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts a command succeeded; its standard output as text.
pub fn ok_text(out: Output) -> String {
    assert!(out.status.success(), "command failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
