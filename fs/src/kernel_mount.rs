//! Mounting by `mount(2)` with the file system type `fuse.imgfs`, so the mount table, `df`,
//! `findmnt -t fuse.imgfs` and `umount -t` name imgfs mounts for what they are (fuser mounts
//! as plain `fuse`). Needs CAP_SYS_ADMIN; without it the caller falls back to fuser's own
//! mount through fusermount3.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens `/dev/fuse` and mounts it (read-only unless the mount has a writable layer) at
/// `mountpoint` as `fuse.imgfs`, device and set-uid files honoured, permissions checked by the kernel, open to every user. The
/// descriptor returned carries the session (`fuser::Session::from_fd`).
pub fn mount(mountpoint: &Path, fsname: &str, read_only: bool) -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let rootmode = match std::fs::metadata(mountpoint) {
        // A mount whose process and keeper are gone ("transport endpoint is not connected",
        // e.g. an imgfs@ unit that failed for good) is detached first, as the agent does.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %mountpoint.display(), "a dead mount is in the way: detaching it");
            nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
            std::fs::metadata(mountpoint)?
        }
        other => other?,
    }
    .mode()
        & libc::S_IFMT;
    let options = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions,allow_other",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    let flags = if read_only { nix::mount::MsFlags::MS_RDONLY } else { nix::mount::MsFlags::empty() };
    nix::mount::mount(Some(fsname), mountpoint, Some("fuse.imgfs"), flags, Some(options.as_str()))
        .map_err(io::Error::from)?;
    Ok(dev.into())
}
