//! A real `imaged` on 127.0.0.1 and a free port (`Server`), and an HTTP client to talk to it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, TestClock};

/// An HTTP client with a deadline on every request.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}
/// A real `imaged` on 127.0.0.1 and a free port, killed (SIGKILL) when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The token its configuration sets, if any.
    pub token: Option<String>,
    /// Its log (standard error), line by line.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `imaged serve --data DATA --listen 127.0.0.1:PORT` (0 = any free port) and waits
    /// until it listens (at most 30 s).
    pub fn start_on(data: &Path, port: u16) -> Server {
        Server::start_with(data, port, None)
    }

    /// Starts with a configuration file (the command line's `--data` and `--listen` still win).
    pub fn start_with(data: &Path, port: u16, config: Option<&Path>) -> Server {
        Server::spawn(data, port, config, None)
    }

    /// Like `start_with` on any free port, with the clock `clock` sets (for signing, expiry
    /// and retention).
    pub fn start_clocked(data: &Path, config: Option<&Path>, clock: &TestClock) -> Server {
        Server::spawn(data, 0, config, Some(clock))
    }

    fn spawn(data: &Path, port: u16, config: Option<&Path>, clock: Option<&TestClock>) -> Server {
        let mut cmd = Command::new(bin("imaged"));
        cmd.args(["serve", "--data"]).arg(data).args(["--listen", &format!("127.0.0.1:{port}")]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        if let Some(clock) = clock {
            cmd.env(cache::clock::TEST_CLOCK_VAR, clock.path());
        }
        Server::start_command(cmd, data)
    }

    /// Runs `cmd`, an `imaged serve` on `data` made by the caller (another binary, another
    /// user), and waits until it listens (at most 30 s).
    pub fn start_command(mut cmd: Command, data: &Path) -> Server {
        use std::io::BufRead;
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let (false, Some(url)) = (sent, line.strip_prefix("imaged listening on ")) {
                    let _ = tx.send(url.to_string());
                    sent = true;
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("imaged did not start listening within 30 s");
        Server { child, url, data: data.to_path_buf(), token: None, log }
    }

    /// Starts `imaged mirror --from FROM --dir DIR --root ROOT --listen 127.0.0.1:0 ARGS` and
    /// waits until it listens (it syncs in the background).
    pub fn mirror(from: &str, dir: &Path, root: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin("imaged"));
        cmd.args(["mirror", "--from", from, "--dir"]).arg(dir).arg("--root").arg(root).args(["--listen", "127.0.0.1:0"]).args(args);
        Server::start_command(cmd, dir)
    }

    /// A mirror's `GET /v1/mirror` once `ready` holds for it (at most 60 s).
    pub fn mirror_status(&self, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let s: serde_json::Value = client().get(format!("{}/v1/mirror", self.url)).send().unwrap().json().unwrap();
            if ready(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "the mirror did not get there in 60 s: {s}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The lines it has written to standard error so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Starts on any free port.
    pub fn start(data: &Path) -> Server {
        Server::start_on(data, 0)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Runs `imaged ARGS --data DATA` (a maintenance command on the same data directory).
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("imaged")).args(args).arg("--data").arg(&self.data).output().unwrap()
    }

    /// The token: the configured one, else the generated `admin.token`.
    pub fn token(&self) -> String {
        if let Some(t) = &self.token {
            return t.clone();
        }
        fs::read_to_string(self.data.join("admin.token")).unwrap().trim().to_string()
    }

    /// Waits (up to 60 s) until every published generation has its serving layout, which the
    /// server builds in the background after a publish; returns their manifests.
    pub fn wait_for_layouts(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let list: serde_json::Value = client().get(format!("{}/v1/generations", self.url)).send().unwrap().json().unwrap();
        let manifests: Vec<String> =
            list["generations"].as_array().unwrap().iter().map(|g| g["manifest"].as_str().unwrap().to_string()).collect();
        for m in &manifests {
            loop {
                let status = client().get(format!("{}/v1/layouts/{m}", self.url)).send().unwrap().status();
                if status.is_success() {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no layout for {m} after 60 s");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        manifests
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
