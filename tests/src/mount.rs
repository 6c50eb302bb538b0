//! A real `imgfs mount` (`Mount`): started against real servers, asked through its control
//! socket, killed as a crash would, and always unmounted when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bin, client, TestClock};

/// A running `imgfs mount`, unmounted and killed when dropped.
pub struct Mount {
    /// The process.
    pub child: std::process::Child,
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its `mounted ...` line.
    pub banner: String,
}

impl Mount {
    /// Mounts `channel` from `servers` at `point` with cache `cache`; waits (at most 60 s) for
    /// the mount to be up.
    pub fn start(servers: &[&str], channel: &str, cache: &Path, point: &Path) -> Mount {
        Mount::start_with(servers, channel, cache, point, &[])
    }

    /// Like `start`, with more `imgfs mount` options. Unless `extra` gives `--root` or the
    /// cache already trusts one, the endpoint is provisioned with the first server's root
    /// version 1 (as an operator would install the file `imgctl trust init` wrote).
    pub fn start_with(servers: &[&str], channel: &str, cache: &Path, point: &Path, extra: &[&str]) -> Mount {
        Mount::spawn(servers, channel, cache, point, extra, None, None)
    }

    /// Like `start_with`, under `imgfs supervise`, which runs `program` (an imgfs binary,
    /// looked up by that path at every start) and starts it again when it dies. `child`
    /// is then the supervisor.
    pub fn start_supervised(servers: &[&str], channel: &str, cache: &Path, point: &Path, extra: &[&str], program: &Path) -> Mount {
        Mount::spawn(servers, channel, cache, point, extra, None, Some(program))
    }

    /// The pid of the process the supervisor runs now (`None`: none, or not supervised).
    pub fn supervised_pid(&self) -> Option<u32> {
        let pid = self.child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Kills the supervised imgfs with `signal` and waits (at most 30 s) until the one the
    /// supervisor starts instead answers `imgfs status`; its pid.
    pub fn restart_supervised(&self, signal: nix::sys::signal::Signal) -> u32 {
        let old = self.supervised_pid().expect("a supervised imgfs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), signal).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(new) = self.supervised_pid().filter(|p| *p != old) {
                let status = Command::new(bin("imgfs")).arg("status").arg(&self.point).output();
                if status.is_ok_and(|o| o.status.success()) {
                    return new;
                }
            }
            assert!(std::time::Instant::now() < until, "no imgfs answering at {} 30 s after {signal}", self.point.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Like `start_with`, with the clock `clock` sets (for the expiry of signed metadata).
    pub fn start_clocked(servers: &[&str], channel: &str, cache: &Path, point: &Path, extra: &[&str], clock: &TestClock) -> Mount {
        Mount::spawn(servers, channel, cache, point, extra, Some(clock), None)
    }

    fn spawn(
        servers: &[&str],
        channel: &str,
        cache: &Path,
        point: &Path,
        extra: &[&str],
        clock: Option<&TestClock>,
        supervised: Option<&Path>,
    ) -> Mount {
        fs::create_dir_all(point).unwrap();
        let mut provision = Vec::new();
        if !extra.contains(&"--root") && !cache.join("trust/root.json").exists() {
            let resp = client().get(format!("{}/tuf/1.root.json", servers[0])).send();
            if let Ok(r) = resp.and_then(|r| r.error_for_status()) {
                let file = PathBuf::from(format!("{}.root.json", cache.display()));
                fs::write(&file, r.bytes().unwrap()).unwrap();
                provision = vec!["--root".to_string(), file.to_str().unwrap().to_string()];
            }
        }
        let mut cmd = Command::new(bin("imgfs"));
        if let Some(program) = supervised {
            cmd.arg("supervise").arg(program);
        }
        cmd.args(["mount", "--server", &servers.join(","), "--channel", channel, "--cache"])
            .arg(cache)
            .args(extra)
            .args(&provision)
            .arg(point);
        if let Some(clock) = clock {
            cmd.env(::cache::clock::TEST_CLOCK_VAR, clock.path());
        }
        Mount::start_command(cmd, point)
    }

    /// Runs `cmd`, an `imgfs mount` of `point` made by the caller (another binary, under a
    /// keeper), and waits (at most 60 s) until it mounted.
    pub fn start_command(mut cmd: Command, point: &Path) -> Mount {
        use std::io::BufRead;
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("imgfs: mounted ") {
                    let _ = tx.send(Ok(line.clone()));
                }
                lines.push(line);
            }
            let _ = tx.send(Err(lines.join("\n")));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Ok(banner)) => Mount { child, point: point.to_path_buf(), banner },
            Ok(Err(log)) => panic!("imgfs exited before mounting:\n{log}"),
            Err(_) => panic!("imgfs did not mount within 60 s"),
        }
    }
}

impl Mount {
    /// Runs `imgfs COMMAND MOUNTPOINT` and parses its JSON answer; panics if it fails.
    pub fn control(&self, command: &str) -> serde_json::Value {
        self.control_with(command, &[])
    }

    /// Runs `imgfs COMMAND MOUNTPOINT ARGS...` and parses its JSON answer; panics if it fails.
    pub fn control_with(&self, command: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new(bin("imgfs")).arg(command).arg(&self.point).args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "imgfs {command} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Kills imgfs with SIGKILL, as a crash would, and detaches the dead mount.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH);
    }

    /// Polls `imgfs status` until `done` holds for it (at most `secs`); the last status.
    pub fn wait_status(&self, secs: u64, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let st = self.control("status");
            if done(&st) || std::time::Instant::now() > until {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holds the machine's `mount -t fuse.imgfs` helper for one test: mount(8) runs the imgfs of
/// the Debian package (`/usr/sbin/mount.fuse.imgfs`) while the package test has it installed,
/// else the one `scripts/install.sh` put in /usr/local/bin. The tests that install the
/// package or mount through mount(8) take this lock (an flock, so test processes running at
/// the same time wait for each other too); it is released when the file is dropped.
pub fn mount_helper_lock() -> nix::fcntl::Flock<fs::File> {
    let path = "/run/lock/imaged-e2e-mount-helper.lock";
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("locking {path}: {e}"))
}
