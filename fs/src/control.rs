//! The control socket of a mount and the commands it answers: `status`, `update` (check the
//! channel now and switch if it moved), `rollback` (switch back to the previous generation),
//! `pin`, `unpin` and `prefetch`. Also the poller that runs `update` on an interval with
//! jitter, and the prefetch jobs.
//!
//! Each mount listens on a unix socket whose path is derived from its mount point, so
//! `imgfs status MOUNTPOINT` finds it. One request per connection: a command line (words
//! separated by spaces) and a newline. The answer is JSON documents, one per line: progress
//! reports `{"progress": ...}` for long commands, then the result.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use format::Digest;
use serde_json::{json, Value};

use crate::endpoint::Endpoint;
use crate::image::Image;
use crate::keeper::{Keeper, Pin};
use crate::prefetch::{prefetch, Progress};

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

/// Sends `command` to the mount at `mountpoint` and returns its answer; progress reports
/// on the way go to `progress`.
pub fn request(mountpoint: &Path, command: &str, progress: &mut dyn FnMut(&Value)) -> std::io::Result<Value> {
    let path = socket_path(mountpoint);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("no imgfs mount answers at {} ({}): {e}", mountpoint.display(), path.display()))
    })?;
    // Long commands report progress at least every few seconds.
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(s, "{command}")?;
    for line in BufReader::new(s).lines() {
        let v: Value = serde_json::from_str(&line?).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        match v.get("progress") {
            Some(p) => progress(p),
            None => return Ok(v),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the mount closed the connection without an answer"))
}

/// A prefetch running in the mount's process; clients follow it, and it goes on without them.
pub struct Job {
    generation: String,
    state: Mutex<JobState>,
    changed: Condvar,
}

#[derive(Default)]
struct JobState {
    progress: Progress,
    /// Bumped on every report.
    seq: u64,
    outcome: Option<Result<Progress, String>>,
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
    pub invalidate: crate::invalidate::Invalidator,
    /// When the channel was last checked, and what happened.
    pub last_check: Mutex<Option<(Instant, String)>>,
    /// Serialises switches.
    switching: Mutex<()>,
    /// The cache keeper, which holds the pins.
    pub keeper: Arc<Keeper>,
    /// The trusted metadata: what the channel may switch to.
    pub trust: Arc<crate::trusted::TrustState>,
    /// Prefetches running, by manifest.
    jobs: Mutex<HashMap<Digest, Arc<Job>>>,
}

impl Control {
    /// A control for a mounted endpoint.
    pub fn new(
        ep: Arc<Endpoint>,
        keeper: Arc<Keeper>,
        trust: Arc<crate::trusted::TrustState>,
        channel: String,
        versions: (u64, u64),
        cache: PathBuf,
        invalidate: crate::invalidate::Invalidator,
    ) -> Control {
        Control {
            ep,
            channel,
            versions: Mutex::new(versions),
            cache,
            invalidate,
            last_check: Mutex::new(None),
            switching: Mutex::new(()),
            keeper,
            trust,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Records the current and previous generations in the cache's state file.
    pub fn save_state(&self) {
        let (cv, pv) = *self.versions.lock().unwrap();
        use crate::state::Served;
        let served =
            |img: &Image, channel_version| Served { generation: img.label(), manifest: img.manifest_digest().to_hex(), channel_version };
        let st = crate::state::State {
            version: crate::state::STATE_VERSION,
            channel: self.channel.clone(),
            current: served(&self.ep.current(), cv),
            previous: self.ep.previous().map(|p| served(&p, pv)),
            pins: self
                .keeper
                .pins()
                .into_iter()
                .map(|p| Served { generation: p.generation, manifest: p.manifest.to_hex(), channel_version: 0 })
                .collect(),
            prefetching: self
                .jobs
                .lock()
                .unwrap()
                .iter()
                .map(|(d, j)| Served { generation: j.generation.clone(), manifest: d.to_hex(), channel_version: 0 })
                .collect(),
        };
        if let Err(e) = crate::state::save(&self.cache, &st) {
            tracing::warn!(error = %e, "cannot write the state file; an offline restart may mount an older generation");
        }
    }

    /// Makes the kernel look names under the mount's root up again, so new opens resolve in the
    /// new generation. Only the root's entries are cached under an inode shared by
    /// generations; everything below has generation-specific numbers. The cost depends on
    /// the root's size only, never on the image's (entries are expired, not pruned: see
    /// `invalidate`).
    fn expire_root(&self, old: &Image, new: &Image) {
        let mut names = old.root_names(&*self.ep).unwrap_or_default();
        names.extend(new.root_names(&*self.ep).unwrap_or_default());
        names.sort();
        names.dedup();
        for n in names {
            self.invalidate.entry(1, std::ffi::OsStr::from_bytes(&n));
        }
        self.invalidate.inode(1);
    }

    /// Checks the channel and switches to its generation if it moved.
    pub fn update(&self) -> Value {
        let _one = self.switching.lock().unwrap();
        let start = Instant::now();
        let result = (|| -> Result<Value, String> {
            // Only a generation the signed metadata names, verified now, is switched to.
            let r = self.trust.resolve_channel(self.ep.fetcher(), &self.channel).map_err(|e| e.to_string())?;
            let (digest, label) = (r.digest(), r.label());
            let current = self.ep.current();
            let version = r.channel.version;
            if current.manifest_digest() == digest {
                self.versions.lock().unwrap().0 = version;
                return Ok(json!({"switched": false, "generation": label, "channel_version": version}));
            }
            let manifest = self.ep.load(digest).map_err(|e| e.to_string())?;
            crate::endpoint::check_length(self.ep.fetcher(), digest, r.generation.length).map_err(|e| e.to_string())?;
            let old = self.ep.switch_to(digest, manifest);
            self.expire_root(&old, &self.ep.current());
            {
                let mut v = self.versions.lock().unwrap();
                *v = (version, v.0);
            }
            self.save_state();
            tracing::info!(from = %old.label(), to = %label, version, "switched");
            Ok(json!({"switched": true, "from": old.label(), "generation": label, "channel_version": version,
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
                self.expire_root(&old, &current);
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
            "cache": self.keeper.report(),
            "pins": self.keeper.pins().iter().map(|p| json!({"generation": p.generation, "manifest": p.manifest.to_hex()})).collect::<Vec<_>>(),
            "prefetching": self.jobs.lock().unwrap().values().map(|j| json!({"generation": j.generation, "progress": j.state.lock().unwrap().progress})).collect::<Vec<_>>(),
            "servers": fetcher.health(),
            "offline": fetcher.offline(),
            "traffic": fetcher.traffic(),
            "opens": {"mode": if self.ep.plain().is_some() { "passthrough" } else { "kernel" },
                      "fuse": self.ep.opens[0].load(std::sync::atomic::Ordering::Relaxed),
                      "passthrough": self.ep.opens[1].load(std::sync::atomic::Ordering::Relaxed)},
            "trust": self.trust.status(),
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

    fn answer(self: &Arc<Self>, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["status"] => self.status(),
            ["update"] => self.update(),
            ["rollback"] => self.rollback(),
            ["unpin", generation] => self.unpin(generation),
            [cmd @ ("pin" | "prefetch"), generation, rest @ ..] if rest.len() <= 1 => {
                let rate = match rest.first().map(|r| r.parse::<u64>()) {
                    None => None,
                    Some(Ok(r)) if r > 0 => Some(r),
                    Some(_) => {
                        let _ = writeln!(&conn, "{}", json!({"error": format!("bad rate {:?}: bytes per second", rest[0])}));
                        return;
                    }
                };
                match self.start_prefetch(generation, *cmd == "pin", rate) {
                    Ok(job) => self.follow(&job, &conn),
                    Err(e) => json!({"error": e}),
                }
            }
            _ => json!({"error": format!("unknown command {:?}", line.trim())}),
        };
        let _ = writeln!(&conn, "{answer}");
    }

    /// Which generation `generation` names: `current`, `previous`, a manifest digest, or
    /// `IMAGE@N` (known here, else asked of the servers).
    pub fn resolve(&self, generation: &str) -> Result<(String, Digest), String> {
        let current = self.ep.current();
        let previous = self.ep.previous();
        let known = |label: &str| {
            std::iter::once(current.clone())
                .chain(previous.clone())
                .map(|i| (i.label(), i.manifest_digest()))
                .chain(self.keeper.pins().into_iter().map(|p| (p.generation, p.manifest)))
                .find(|(l, d)| l == label || d.to_hex() == label)
        };
        match generation {
            "current" => return Ok((current.label(), current.manifest_digest())),
            "previous" => {
                return previous.map(|p| (p.label(), p.manifest_digest())).ok_or_else(|| "there is no previous generation".into())
            }
            g => {
                if let Some(found) = known(g) {
                    return Ok(found);
                }
            }
        }
        let digest = match generation.parse::<Digest>() {
            Ok(d) => d,
            Err(_) if generation.contains('@') => {
                let (image, n) = generation
                    .split_once('@')
                    .and_then(|(i, n)| Some((i, n.parse::<u64>().ok()?)))
                    .ok_or_else(|| format!("{generation:?} is not IMAGE@N"))?;
                let accepted =
                    self.trust.resolve_generation(self.ep.fetcher(), image, n).map_err(|e| format!("looking up {generation}: {e}"))?;
                let digest: Digest = accepted.manifest.parse().map_err(|_| "bad digest".to_string())?;
                let manifest = self.ep.load(digest).map_err(|e| format!("loading {generation}: {e}"))?;
                crate::endpoint::check_length(self.ep.fetcher(), digest, accepted.length).map_err(|e| e.to_string())?;
                return Ok((format!("{}@{}", manifest.image, manifest.generation), digest));
            }
            Err(_) => return Err(format!("{generation:?} is not a generation: give IMAGE@N, a manifest digest, current or previous")),
        };
        let manifest = self.ep.load(digest).map_err(|e| format!("loading {generation}: {e}"))?;
        Ok((format!("{}@{}", manifest.image, manifest.generation), digest))
    }

    fn unpin(&self, generation: &str) -> Value {
        match self.keeper.unpin(generation) {
            Some(p) => {
                self.save_state();
                json!({"unpinned": p.generation, "manifest": p.manifest.to_hex()})
            }
            None => json!({"error": format!("{generation} is not pinned")}),
        }
    }

    /// Starts (or joins) a prefetch of `generation`; with `pin`, pins it first.
    pub fn start_prefetch(self: &Arc<Self>, generation: &str, pin: bool, max_rate: Option<u64>) -> Result<Arc<Job>, String> {
        let (label, digest) = self.resolve(generation)?;
        if pin && self.keeper.pin(Pin { generation: label.clone(), manifest: digest }) {
            tracing::info!(generation = %label, "pinned");
        }
        let job = {
            let mut jobs = self.jobs.lock().unwrap();
            if let Some(j) = jobs.get(&digest) {
                let j = j.clone();
                drop(jobs);
                self.save_state();
                return Ok(j);
            }
            let job = Arc::new(Job { generation: label.clone(), state: Mutex::default(), changed: Condvar::new() });
            jobs.insert(digest, job.clone());
            job
        };
        // Recorded before it starts, so a restart resumes it.
        self.save_state();
        let ep = self.ep.clone();
        let j = job.clone();
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            let start = Instant::now();
            let report = |p: &Progress| {
                let mut st = j.state.lock().unwrap();
                st.progress = *p;
                st.seq += 1;
                j.changed.notify_all();
            };
            let outcome = prefetch(&ep, digest, max_rate, &report).map_err(|e| e.to_string());
            match &outcome {
                Ok(p) => tracing::info!(generation = %j.generation, objects = p.objects_done, bytes = p.transferred,
                                        millis = start.elapsed().as_millis() as u64, "prefetched"),
                Err(e) => {
                    tracing::warn!(generation = %j.generation, error = %e, "prefetch stopped; it resumes at the next request or restart")
                }
            }
            if let Some(me) = me.upgrade() {
                me.jobs.lock().unwrap().remove(&digest);
                if outcome.is_ok() {
                    me.save_state();
                }
            }
            let mut st = j.state.lock().unwrap();
            st.outcome = Some(outcome);
            st.seq += 1;
            j.changed.notify_all();
        });
        Ok(job)
    }

    /// Writes a job's progress to `conn` until it ends; then its result. The job goes on if
    /// the client goes away.
    fn follow(&self, job: &Job, conn: &UnixStream) -> Value {
        let mut seen = 0;
        let mut st = job.state.lock().unwrap();
        let mut last_write = Instant::now();
        loop {
            if let Some(outcome) = &st.outcome {
                return match outcome {
                    Ok(p) => {
                        json!({"generation": job.generation, "done": true, "pinned": self.keeper.pins().iter().any(|x| x.generation == job.generation), "fetched": p})
                    }
                    Err(e) => json!({"generation": job.generation, "error": e}),
                };
            }
            // At most a few reports a second, and one at least every few seconds.
            if st.seq != seen && last_write.elapsed() >= Duration::from_millis(200) || last_write.elapsed() >= Duration::from_secs(5) {
                seen = st.seq;
                last_write = Instant::now();
                if writeln!(&*conn, "{}", json!({"progress": st.progress, "generation": job.generation})).is_err() {
                    return json!({"error": "client gone"});
                }
            }
            st = job.changed.wait_timeout(st, Duration::from_millis(250)).unwrap().0;
        }
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
