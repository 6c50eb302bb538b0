//! The control socket of a mount and the commands it answers: `status`, `update` (check the
//! channel now and switch if it moved) and `rollback` (switch back to the previous
//! generation). Also the poller that runs `update` on an interval with jitter.
//!
//! Each mount listens on a unix socket whose path is derived from its mount point, so
//! `imgfs status MOUNTPOINT` finds it. One request per connection: a command word and a
//! newline; the answer is one JSON document.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use format::Digest;
use serde_json::{json, Value};

use crate::endpoint::Endpoint;
use crate::image::Image;

/// Where the control socket of the mount at `mountpoint` lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/imgfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join("imgfs")
    };
    let id = Digest::of(canonical.as_os_str().as_bytes()).to_hex();
    dir.join(format!("{}.sock", &id[..16]))
}

/// Sends `command` to the mount at `mountpoint` and returns its answer.
pub fn request(mountpoint: &Path, command: &str) -> std::io::Result<Value> {
    let path = socket_path(mountpoint);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("no imgfs mount answers at {} ({}): {e}", mountpoint.display(), path.display()))
    })?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(s, "{command}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// What the control side of a mount needs.
pub struct Control {
    /// The endpoint.
    pub ep: Arc<Endpoint>,
    /// The channel followed.
    pub channel: String,
    /// The channel versions of the current and previous generations (0 if unknown).
    pub versions: Mutex<(u64, u64)>,
    /// The cache directory, where the state file lives.
    pub cache: PathBuf,
    /// Tells the kernel to forget cached entries.
    pub notifier: fuser::Notifier,
    /// When the channel was last checked, and what happened.
    pub last_check: Mutex<Option<(Instant, String)>>,
    /// Serialises switches.
    switching: Mutex<()>,
}

impl Control {
    /// A control for a mounted endpoint.
    pub fn new(ep: Arc<Endpoint>, channel: String, versions: (u64, u64), cache: PathBuf, notifier: fuser::Notifier) -> Control {
        Control { ep, channel, versions: Mutex::new(versions), cache, notifier, last_check: Mutex::new(None), switching: Mutex::new(()) }
    }

    /// Records the current and previous generations in the cache's state file.
    pub fn save_state(&self) {
        let (cv, pv) = *self.versions.lock().unwrap();
        let served = |img: &Image, channel_version| crate::state::Served {
            generation: img.label(),
            manifest: img.manifest_digest().to_hex(),
            channel_version,
        };
        let st = crate::state::State {
            version: crate::state::STATE_VERSION,
            channel: self.channel.clone(),
            current: served(&self.ep.current(), cv),
            previous: self.ep.previous().map(|p| served(&p, pv)),
        };
        if let Err(e) = crate::state::save(&self.cache, &st) {
            tracing::warn!(error = %e, "cannot write the state file; an offline restart may mount an older generation");
        }
    }

    /// Makes the kernel look names under the mount's root up again, so new opens resolve in the
    /// new generation. Only the root's entries are cached under an inode shared by
    /// generations; everything below has generation-specific numbers. The cost depends on
    /// the root's size only, never on the image's.
    fn invalidate(&self, old: &Image, new: &Image) {
        let mut names = old.root_names(&*self.ep).unwrap_or_default();
        names.extend(new.root_names(&*self.ep).unwrap_or_default());
        names.sort();
        names.dedup();
        for n in names {
            let _ = self.notifier.inval_entry(fuser::INodeNo(1), std::ffi::OsStr::from_bytes(&n));
        }
        let _ = self.notifier.inval_inode(fuser::INodeNo(1), 0, 0);
    }

    /// Checks the channel and switches to its generation if it moved.
    pub fn update(&self) -> Value {
        let _one = self.switching.lock().unwrap();
        let start = Instant::now();
        let result = (|| -> Result<Value, String> {
            let doc = self.ep.fetcher().channel(&self.channel).map_err(|e| e.to_string())?;
            let digest: Digest = doc.manifest.parse().map_err(|_| format!("channel names a bad digest {:?}", doc.manifest))?;
            let current = self.ep.current();
            if current.manifest_digest() == digest {
                self.versions.lock().unwrap().0 = doc.version;
                return Ok(json!({"switched": false, "generation": doc.generation, "channel_version": doc.version}));
            }
            let manifest = self.ep.load(digest).map_err(|e| e.to_string())?;
            let old = self.ep.switch_to(digest, manifest);
            self.invalidate(&old, &self.ep.current());
            {
                let mut v = self.versions.lock().unwrap();
                *v = (doc.version, v.0);
            }
            self.save_state();
            tracing::info!(from = %old.label(), to = %doc.generation, version = doc.version, "switched");
            Ok(json!({"switched": true, "from": old.label(), "generation": doc.generation, "channel_version": doc.version,
                      "millis": start.elapsed().as_millis() as u64}))
        })();
        let outcome = match &result {
            Ok(v) => v.to_string(),
            Err(e) => e.clone(),
        };
        *self.last_check.lock().unwrap() = Some((Instant::now(), outcome));
        result.unwrap_or_else(|e| json!({"error": e}))
    }

    /// Switches back to the previous generation, offline too.
    pub fn rollback(&self) -> Value {
        let _one = self.switching.lock().unwrap();
        let start = Instant::now();
        match self.ep.rollback() {
            Some(old) => {
                let current = self.ep.current();
                self.invalidate(&old, &current);
                {
                    let mut v = self.versions.lock().unwrap();
                    *v = (v.1, v.0);
                }
                self.save_state();
                tracing::info!(from = %old.label(), to = %current.label(), "rolled back");
                json!({"switched": true, "from": old.label(), "generation": current.label(), "millis": start.elapsed().as_millis() as u64})
            }
            None => json!({"error": "no previous generation to roll back to"}),
        }
    }

    /// The mount's state.
    pub fn status(&self) -> Value {
        let current = self.ep.current();
        let fetcher = self.ep.fetcher();
        json!({
            "channel": self.channel,
            "channel_version": self.versions.lock().unwrap().0,
            "current": {"generation": current.label(), "manifest": current.manifest_digest().to_hex()},
            "previous": self.ep.previous().map(|p| json!({"generation": p.label(), "manifest": p.manifest_digest().to_hex()})),
            "servers": fetcher.health(),
            "offline": fetcher.offline(),
            "traffic": fetcher.traffic(),
            "last_check": self.last_check.lock().unwrap().as_ref().map(|(t, what)| json!({"seconds_ago": t.elapsed().as_secs(), "result": what})),
        })
    }

    /// Answers control connections on `socket` until the process ends.
    pub fn serve(self: &Arc<Self>, socket: &Path) -> std::io::Result<()> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || me.answer(conn));
            }
        });
        Ok(())
    }

    fn answer(&self, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let answer = match line.trim() {
            "status" => self.status(),
            "update" => self.update(),
            "rollback" => self.rollback(),
            other => json!({"error": format!("unknown command {other:?}")}),
        };
        let _ = writeln!(&conn, "{answer}");
    }

    /// Checks the channel every `every` (± 20 % jitter) until the process ends.
    pub fn poll(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        std::thread::spawn(move || loop {
            let jitter = 0.8 + 0.4 * (rand_fraction());
            std::thread::sleep(every.mul_f64(jitter));
            me.update();
        });
    }
}

/// A fraction in [0, 1) from the clock's nanoseconds: enough to spread a fleet's polls.
fn rand_fraction() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (n % 1_000_000) as f64 / 1_000_000.0
}
