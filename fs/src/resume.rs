//! What a restarted imgfs needs to take over a live FUSE connection (docs/restart.md): the
//! choices it answered FUSE_INIT with, which generation each inode slot holds, and, per slot,
//! the order in which directories were first read (inode numbers are given in that order,
//! so replaying it gives every number the kernel holds its old meaning).
//!
//! Kept in `CACHE/session/`: `session.json` (written to a temporary file and renamed; not
//! synced: a process killed keeps the page cache, and a machine that crashes loses the
//! mount anyway) and `slot-N.dirs`, 8 bytes per directory numbered, appended before any
//! reply names the new numbers. Everything is written before the kernel can see it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use format::Digest;
use serde::{Deserialize, Serialize};

/// Format version of `session.json`.
pub const SESSION_VERSION: u32 = 1;

/// What imgfs answered FUSE_INIT with, and what the kernel offered that matters later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    /// The kernel opens files and directories without asking (FUSE_NO_OPEN_SUPPORT).
    pub no_open: bool,
    /// Passthrough was agreed.
    pub passthrough: bool,
    /// The kernel can be asked to send again the requests read but not answered
    /// (FUSE_HAS_RESEND, Linux 6.9).
    pub resend: bool,
}

/// A generation serving under an inode slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The slot (the inode numbers' high bits).
    pub slot: u64,
    /// Its manifest.
    pub manifest: Digest,
    /// `IMAGE@N`.
    pub generation: String,
}

/// `session.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Always `SESSION_VERSION`.
    pub version: u32,
    /// Set once FUSE_INIT was answered (absent: the process died before that).
    pub init: Option<Init>,
    /// Every generation the kernel may hold inodes of.
    pub slots: Vec<Slot>,
    /// The current generation's slot (the mount's root).
    pub current: u64,
    /// The previous generation's slot.
    pub previous: Option<u64>,
    /// The next slot to give.
    pub next_slot: u64,
    /// Processes that served this connection before this one: file handles carry it in
    /// their high bits, so a handle the kernel keeps never names another process's file.
    pub epoch: u64,
}

/// Why a session could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// No session state: the connection was not made by an imgfs of this cache.
    #[error("no session state in {}", dir.display())]
    Missing {
        /// `CACHE/session`.
        dir: PathBuf,
    },
    /// The state is unreadable or of another format version.
    #[error("session state {} is unusable: {why}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Reading or writing the state failed.
    #[error("session state in {}", dir.display())]
    Io {
        /// `CACHE/session`.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The append-only list of a slot's directories, in the order they were numbered.
#[derive(Debug)]
pub struct SlotLog {
    file: Mutex<File>,
    /// Set after a failed append: the numbers of this process can no longer be replayed.
    broken: std::sync::atomic::AtomicBool,
}

impl SlotLog {
    /// Records that directory `local` was numbered (called under the image's table lock, so
    /// the file's order is the numbering order).
    pub fn append(&self, local: u64) {
        if let Err(e) = self.file.lock().unwrap().write_all(&local.to_le_bytes()) {
            if !self.broken.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(error = %e, "cannot record inode numbers; a restart will not be able to resume this mount");
            }
        }
    }

    /// Whether an append failed.
    pub fn broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The session state of the process serving the connection.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    session: Mutex<Session>,
    logs: Mutex<HashMap<u64, Arc<SlotLog>>>,
}

/// `CACHE/session`.
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("session")
}

fn log_path(dir: &Path, slot: u64) -> PathBuf {
    dir.join(format!("slot-{slot}.dirs"))
}

/// Decodes a slot log; a torn last record (the process died inside the write) is dropped,
/// as no reply named its numbers.
pub fn decode_log(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

impl Journal {
    /// A new connection's journal: whatever an earlier one left is removed.
    pub fn fresh(cache: &Path, session: Session) -> Result<Journal, ResumeError> {
        let dir = dir(cache);
        let io = |source| ResumeError::Io { dir: dir.clone(), source };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        let j = Journal { dir: dir.clone(), session: Mutex::new(session), logs: Mutex::default() };
        j.write()?;
        Ok(j)
    }

    /// Takes over the journal a previous process of this cache left, with each slot's
    /// directories to replay. The epoch goes up by one.
    pub fn resume(cache: &Path) -> Result<(Journal, HashMap<u64, Vec<u64>>), ResumeError> {
        let dir = dir(cache);
        let path = dir.join("session.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResumeError::Missing { dir }),
            Err(source) => return Err(ResumeError::Io { dir, source }),
        };
        let mut session: Session =
            serde_json::from_slice(&bytes).map_err(|e| ResumeError::Unusable { path: path.clone(), why: e.to_string() })?;
        if session.version != SESSION_VERSION {
            return Err(ResumeError::Unusable { path, why: format!("format version {}, this build reads {SESSION_VERSION}", session.version) });
        }
        let mut dirs = HashMap::new();
        for s in &session.slots {
            let p = log_path(&dir, s.slot);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(ResumeError::Io { dir, source }),
            };
            if bytes.len() % 8 != 0 {
                // Drop the torn record so that appends stay aligned.
                let f = std::fs::OpenOptions::new().write(true).open(&p).map_err(|source| ResumeError::Io { dir: dir.clone(), source })?;
                f.set_len(bytes.len() as u64 / 8 * 8).map_err(|source| ResumeError::Io { dir: dir.clone(), source })?;
            }
            dirs.insert(s.slot, decode_log(&bytes));
        }
        session.epoch += 1;
        let j = Journal { dir, session: Mutex::new(session), logs: Mutex::default() };
        j.write()?;
        Ok((j, dirs))
    }

    /// The session as recorded.
    pub fn session(&self) -> Session {
        self.session.lock().unwrap().clone()
    }

    /// Records the answer to FUSE_INIT (before it is sent).
    pub fn set_init(&self, init: Init) -> Result<(), ResumeError> {
        self.session.lock().unwrap().init = Some(init);
        self.write()
    }

    /// Records the generations served (before the kernel can see a new one), and forgets the
    /// logs of slots no longer listed.
    pub fn set_slots(&self, slots: Vec<Slot>, current: u64, previous: Option<u64>, next_slot: u64) -> Result<(), ResumeError> {
        let keep: Vec<u64> = slots.iter().map(|s| s.slot).collect();
        {
            let mut s = self.session.lock().unwrap();
            (s.slots, s.current, s.previous, s.next_slot) = (slots, current, previous, next_slot);
        }
        self.write()?;
        let gone: Vec<u64> = {
            let mut logs = self.logs.lock().unwrap();
            let gone = logs.keys().copied().filter(|k| !keep.contains(k)).collect::<Vec<_>>();
            logs.retain(|k, _| keep.contains(k));
            gone
        };
        for slot in gone {
            let _ = std::fs::remove_file(log_path(&self.dir, slot));
        }
        Ok(())
    }

    /// The log of `slot`'s directories, opened for appending (`truncate` for a new slot).
    pub fn log(&self, slot: u64, truncate: bool) -> Result<Arc<SlotLog>, ResumeError> {
        let mut logs = self.logs.lock().unwrap();
        if let Some(l) = logs.get(&slot) {
            return Ok(l.clone());
        }
        let path = log_path(&self.dir, slot);
        let file = if truncate {
            File::create(&path)
        } else {
            std::fs::OpenOptions::new().create(true).append(true).open(&path)
        }
        .map_err(|source| ResumeError::Io { dir: self.dir.clone(), source })?;
        let log = Arc::new(SlotLog { file: Mutex::new(file), broken: Default::default() });
        logs.insert(slot, log.clone());
        Ok(log)
    }

    /// Whether every number given so far was recorded.
    pub fn intact(&self) -> bool {
        !self.logs.lock().unwrap().values().any(|l| l.broken())
    }

    fn write(&self) -> Result<(), ResumeError> {
        let bytes = serde_json::to_vec_pretty(&*self.session.lock().unwrap()).expect("serialises");
        let tmp = self.dir.join("session.json.tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("session.json")))
            .map_err(|source| ResumeError::Io { dir: self.dir.clone(), source })
    }

    /// Removes the session state (the mount ended: nothing is left to resume).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asks the kernel to queue again every request a dead process read and never answered
/// (FUSE_NOTIFY_RESEND: a notification with code 7 and no body).
pub fn resend(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    let mut msg = [0u8; 16];
    msg[0..4].copy_from_slice(&16u32.to_ne_bytes());
    msg[4..8].copy_from_slice(&7i32.to_ne_bytes());
    let n = nix::unistd::write(fd, &msg).map_err(std::io::Error::from)?;
    if n != msg.len() {
        return Err(std::io::Error::other(format!("short write of the resend notification ({n} bytes)")));
    }
    Ok(())
}
