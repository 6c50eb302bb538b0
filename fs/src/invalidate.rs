//! Telling the kernel that names under the mount's root changed (a switch). Where the kernel
//! supports it (Linux 6.2+), entries are only marked expired (`FUSE_EXPIRE_ONLY`): the switch
//! returns at once and each name is looked up again when next used. A full invalidation
//! prunes every cached dentry below the name there and then, which takes time in proportion
//! to what the kernel cached of the image. fuser 0.18 has no call for the flag, so the
//! notification is written to the session's `/dev/fuse` descriptor here.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// `FUSE_NOTIFY_INVAL_ENTRY` (the notify code travels in the header's error field).
const NOTIFY_INVAL_ENTRY: i32 = 3;
/// `fuse_notify_inval_entry_out.flags`: only mark the entry expired.
const FUSE_EXPIRE_ONLY: u32 = 1;

/// Sends invalidations for one mount.
pub struct Invalidator {
    notifier: fuser::Notifier,
    /// A duplicate of the session's `/dev/fuse` descriptor, for expire-only notifications.
    dev: Option<OwnedFd>,
    expire_only: AtomicBool,
}

impl Invalidator {
    /// An invalidator using `notifier`, and `dev` (the session's descriptor) for expiry.
    pub fn new(notifier: fuser::Notifier, dev: Option<OwnedFd>) -> Invalidator {
        let expire_only = AtomicBool::new(dev.is_some());
        Invalidator { notifier, dev, expire_only }
    }

    /// Makes the kernel look `name` under `parent` up again before its next use.
    pub fn entry(&self, parent: u64, name: &OsStr) {
        if self.expire_only.load(Ordering::Relaxed) {
            match self.expire(parent, name) {
                Ok(()) => return,
                // Not cached: nothing to expire.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
                Err(e) => {
                    tracing::info!(error = %e, "the kernel refuses expire-only invalidation; invalidating in full");
                    self.expire_only.store(false, Ordering::Relaxed);
                }
            }
        }
        let _ = self.notifier.inval_entry(fuser::INodeNo(parent), name);
    }

    /// Drops the kernel's cached attributes and directory listing of `ino`.
    pub fn inode(&self, ino: u64) {
        let _ = self.notifier.inval_inode(fuser::INodeNo(ino), 0, 0);
    }

    fn expire(&self, parent: u64, name: &OsStr) -> std::io::Result<()> {
        let dev = self.dev.as_ref().ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let name = name.as_bytes();
        let len = 16 + 16 + name.len() + 1;
        let mut msg = Vec::with_capacity(len);
        // fuse_out_header { len, error, unique }
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&NOTIFY_INVAL_ENTRY.to_ne_bytes());
        msg.extend_from_slice(&0u64.to_ne_bytes());
        // fuse_notify_inval_entry_out { parent, namelen, flags }
        msg.extend_from_slice(&parent.to_ne_bytes());
        msg.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        msg.extend_from_slice(&FUSE_EXPIRE_ONLY.to_ne_bytes());
        msg.extend_from_slice(name);
        msg.push(0);
        // SAFETY: writes `msg` to a descriptor this struct owns.
        let n = unsafe { libc::write(dev.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
