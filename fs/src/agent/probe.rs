//! Running a mount's health probe and an activation's unit restarts, always with a deadline:
//! a command through `/bin/sh -c` in a process group of its own (killed whole on timeout),
//! with `IMGFS_MOUNT`, `IMGFS_GENERATION` and `IMGFS_LABELS` in its environment, or an HTTP
//! GET (2xx is healthy). The output (stdout and stderr together) comes back with a failure.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::fleet::{Labels, Probe};

/// Most seconds a unit restart may take.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of output kept (the beginning).
const OUTPUT_MAX: usize = 800;

/// How a probe or restart failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The command exited with this status.
    Exit(i32),
    /// The command was killed by this signal.
    Signal(i32),
    /// The deadline passed: the process group was killed.
    TimedOut(u64),
    /// The URL answered this status.
    Http(u16),
    /// The URL could not be fetched.
    Request,
    /// The command could not be started.
    Spawn,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            How::Exit(n) => write!(f, "exit {n}"),
            How::Signal(n) => write!(f, "killed by signal {n}"),
            How::TimedOut(s) => write!(f, "timed out after {s} s"),
            How::Http(s) => write!(f, "HTTP {s}"),
            How::Request => f.write_str("request failed"),
            How::Spawn => f.write_str("could not start"),
        }
    }
}

/// A failed probe or restart: its output and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{output} ({how})")]
pub struct Failure {
    /// Its output, the first `OUTPUT_MAX` bytes, trimmed.
    pub output: String,
    /// How it ended.
    pub how: How,
}

/// Runs `probe` (none: healthy) for the mount at `mount` serving `generation` on an endpoint
/// with `labels` (the server's word on them in the last desired state).
pub fn probe(probe: Option<&Probe>, mount: &Path, generation: &str, labels: &Labels) -> Result<(), Failure> {
    let Some(p) = probe else { return Ok(()) };
    let timeout = Duration::from_secs(p.timeout_seconds.max(1));
    if let Some(command) = &p.command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command).env("IMGFS_MOUNT", mount).env("IMGFS_GENERATION", generation).env("IMGFS_LABELS", labels_var(labels));
        return run(cmd, timeout);
    }
    if let Some(url) = &p.url {
        return get(url, timeout);
    }
    Ok(())
}

/// `IMGFS_LABELS`: `k=v` pairs joined by commas, sorted by key. Neither a key nor a value may
/// hold `,` or `=`, so a probe can split it back.
pub fn labels_var(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Restarts `units` with `command` (split on whitespace, the units appended as arguments: no
/// shell), within `RESTART_TIMEOUT`.
pub fn restart(command: &str, units: &[String]) -> Result<(), Failure> {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else { return Err(Failure { output: "restart_command is empty".into(), how: How::Spawn }) };
    let mut cmd = Command::new(program);
    cmd.args(words).args(units);
    run(cmd, RESTART_TIMEOUT)
}

/// Runs `cmd` in a process group of its own with its stdout and stderr on one pipe; kills the
/// group when `timeout` passes (and after the command ends, so nothing it left behind holds
/// the pipe).
fn run(mut cmd: Command, timeout: Duration) -> Result<(), Failure> {
    let spawn_failed = |e: std::io::Error| Failure { output: e.to_string(), how: How::Spawn };
    let (r, w) = nix::unistd::pipe().map_err(|e| spawn_failed(e.into()))?;
    let w2 = w.try_clone().map_err(spawn_failed)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(w)).stderr(Stdio::from(w2)).process_group(0);
    let spawned = cmd.spawn();
    // The command holds the write ends until it is dropped: the reader sees the end only then.
    drop(cmd);
    let mut child = spawned.map_err(spawn_failed)?;
    let group = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::fs::File::from(r).take(64 << 10).read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(spawn_failed(e)),
        }
    };
    // SAFETY: killpg only sends a signal to the group this function made.
    unsafe { libc::killpg(group, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    let output = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let output = first(&String::from_utf8_lossy(&output));
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(Failure {
            output,
            how: match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => How::Exit(c),
                (None, Some(sig)) => How::Signal(sig),
                (None, None) => How::Exit(-1),
            },
        }),
        None => Err(Failure { output, how: How::TimedOut(timeout.as_secs()) }),
    }
}

/// GETs `url` within `timeout`: a 2xx answer is healthy.
fn get(url: &str, timeout: Duration) -> Result<(), Failure> {
    let client =
        reqwest::blocking::Client::builder().timeout(timeout).build().map_err(|e| Failure { output: e.to_string(), how: How::Request })?;
    match client.get(url).send() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            Err(Failure { output: first(&body), how: How::Http(status) })
        }
        Err(e) if e.is_timeout() => Err(Failure { output: e.to_string(), how: How::TimedOut(timeout.as_secs()) }),
        Err(e) => Err(Failure { output: e.to_string(), how: How::Request }),
    }
}

/// The first `OUTPUT_MAX` bytes of `text`, trimmed, cut at a character boundary.
fn first(text: &str) -> String {
    let text = text.trim();
    let mut end = text.len().min(OUTPUT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end().to_string()
}
