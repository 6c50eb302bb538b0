//! `export`: a full checkout of a generation with every metadata field restored: owners, modes
//! (setuid included), xattrs (capabilities and ACLs included), nanosecond mtimes, hard links,
//! device nodes, fifos, sockets and holes.
//!
//! Order matters: `chown` clears setuid bits and file capabilities, so each inode gets owner,
//! then mode, then xattrs, then times; directories get theirs after their children are written.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cache::Store;
use format::{Entry, EntryKind, Xattr};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use rayon::prelude::*;

use crate::browse::{self, ReadError};
use crate::repo::Generation;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination exists and is not an empty directory.
    #[error("destination {0} exists and is not empty")]
    DestinationNotEmpty(PathBuf),
    /// Reading the generation failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Creating a file or setting its metadata failed.
    #[error("cannot {action} {path}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Counts of what an export wrote.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ExportReport {
    /// Entries created (hard links included).
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

fn werr<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Write { action, path: path.to_path_buf(), source }
}

/// Writes generation `gen` to `dest`, which must be absent or an empty directory.
pub fn export(store: &Store, gen: &Generation, dest: &Path) -> Result<ExportReport, ExportError> {
    match fs::read_dir(dest) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(ExportError::DestinationNotEmpty(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(dest).map_err(werr("create", dest))?,
        Err(e) => return Err(werr("read", dest)(e)),
    }
    let mut dirs: Vec<(PathBuf, Entry)> = Vec::new();
    let mut files: Vec<(PathBuf, Entry)> = Vec::new();
    let mut links: Vec<(PathBuf, u32)> = Vec::new();
    let mut first_of_group: HashMap<u32, PathBuf> = HashMap::new();
    let mut report = ExportReport::default();
    let mut all: Vec<(PathBuf, Entry)> = Vec::new();
    browse::walk(store, &gen.manifest.root, &mut |rel, e| {
        all.push((dest.join(std::ffi::OsStr::from_bytes(rel)), e.clone()));
        Ok(())
    })?;
    for (path, e) in all {
        report.entries += 1;
        match &e.kind {
            EntryKind::Directory { .. } => {
                fs::create_dir(&path).map_err(werr("create directory", &path))?;
                dirs.push((path, e));
            }
            EntryKind::Regular { size, .. } => {
                if e.link_group != 0 {
                    if first_of_group.contains_key(&e.link_group) {
                        links.push((path, e.link_group));
                        continue;
                    }
                    first_of_group.insert(e.link_group, path.clone());
                }
                report.bytes += size;
                files.push((path, e));
            }
            _ => {
                create_special(&path, &e)?;
                set_meta(&path, e.uid, e.gid, e.mode, &e.xattrs, e.mtime_sec, e.mtime_nsec, matches!(e.kind, EntryKind::Symlink { .. }))?;
            }
        }
    }

    files.par_iter().try_for_each(|(path, e)| write_file(store, path, e))?;
    for (path, group) in &links {
        fs::hard_link(&first_of_group[group], path).map_err(werr("hard-link", path))?;
    }
    // Children were created after their parents, so the reverse order sets every directory's
    // metadata after everything inside it has been written.
    for (path, e) in dirs.iter().rev() {
        set_meta(path, e.uid, e.gid, e.mode, &e.xattrs, e.mtime_sec, e.mtime_nsec, false)?;
    }
    let m = &gen.manifest.root_meta;
    set_meta(dest, m.uid, m.gid, m.mode, &m.xattrs, m.mtime_sec, m.mtime_nsec, false)?;
    Ok(report)
}

fn write_file(store: &Store, path: &Path, e: &Entry) -> Result<(), ExportError> {
    let EntryKind::Regular { size, extents } = &e.kind else { unreachable!() };
    let file = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(werr("create", path))?;
    // Setting the length first leaves every gap between extents a hole, as in the source.
    file.set_len(*size).map_err(werr("size", path))?;
    for x in extents {
        let data = store.get(&x.digest).map_err(ReadError::from)?;
        file.write_all_at(&data, x.offset).map_err(werr("write", path))?;
    }
    drop(file);
    set_meta(path, e.uid, e.gid, e.mode, &e.xattrs, e.mtime_sec, e.mtime_nsec, false)
}

fn create_special(path: &Path, e: &Entry) -> Result<(), ExportError> {
    let (kind, dev) = match &e.kind {
        EntryKind::Symlink { target } => {
            return std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).map_err(werr("create symlink", path));
        }
        EntryKind::CharDevice { major, minor } => (SFlag::S_IFCHR, libc::makedev(*major, *minor)),
        EntryKind::BlockDevice { major, minor } => (SFlag::S_IFBLK, libc::makedev(*major, *minor)),
        EntryKind::Fifo => (SFlag::S_IFIFO, 0),
        EntryKind::Socket => (SFlag::S_IFSOCK, 0),
        _ => unreachable!("regular files and directories are created elsewhere"),
    };
    mknod(path, kind, Mode::from_bits_truncate(0o600), dev).map_err(|e| werr("create node", path)(e.into()))
}

#[allow(clippy::too_many_arguments)]
fn set_meta(path: &Path, uid: u32, gid: u32, mode: u16, xattrs: &[Xattr], sec: i64, nsec: u32, symlink: bool) -> Result<(), ExportError> {
    fchownat(None, path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| werr("chown", path)(e.into()))?;
    if !symlink {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(u32::from(mode))).map_err(werr("chmod", path))?;
    }
    for x in xattrs {
        xattr::set(path, std::ffi::OsStr::from_bytes(&x.name), &x.value).map_err(werr("set xattr on", path))?;
    }
    let t = TimeSpec::new(sec, i64::from(nsec));
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|e| werr("set times on", path)(e.into()))
}
