//! The upper directory of a mount's writable layer (`imgfs mount --writable DIR`): local
//! changes kept on local disk in `DIR/upper`, in overlayfs's on-disk form, so that the
//! directory reads like an overlay's upper directory: a changed or added entry is there
//! whole, a deleted one is a whiteout (a 0/0 character device), and a directory the machine
//! removed and made again carries `trusted.overlay.opaque=y` (the image's children hidden).
//! Paths are relative to the mount's root, as bytes (`etc/ssh/sshd_config`). New entries are
//! made in `DIR/work` and renamed into place: a copy is never visible half-written.
//!
//! Every path is resolved beneath the upper directory without following symlinks
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` for its directory): imgfs runs as
//! root, and a link a user made in the layer must never lead it outside.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks the inode numbers of entries that live in the upper directory: the rest of the
/// number is the entry's inode number on local disk, stable across restarts of imgfs.
pub const UPPER_BIT: u64 = 1 << 63;

/// overlayfs's name for an opaque directory.
const OPAQUE: &str = "trusted.overlay.opaque";

/// What the upper directory holds at a path.
#[derive(Debug)]
pub enum State {
    /// Nothing: the image's entry (if any) shows.
    Absent,
    /// A whiteout: the entry was removed on this machine.
    Whiteout,
    /// A local entry, which hides the image's.
    Present(Metadata),
}

/// A path of the upper directory resolved safely: `/proc/self/fd/N/NAME`, N a descriptor of its
/// directory (held as long as this lives), so no symlink in the directories above can lead
/// elsewhere. Calls on it must not follow a symlink in the last name themselves.
pub struct At {
    _dir: Option<OwnedFd>,
    path: PathBuf,
}

impl std::ops::Deref for At {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for At {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// The upper directory.
pub struct Local {
    dir: PathBuf,
    upper: PathBuf,
    upper_fd: OwnedFd,
    work: PathBuf,
    /// Upper inode numbers the kernel was given → their paths.
    inos: Mutex<HashMap<u64, Vec<u8>>>,
    /// Image inode numbers of files renamed on this machine → their new paths.
    moved: Mutex<HashMap<u64, Vec<u8>>>,
    tmp: AtomicU64,
}

/// `parent/name` (just `name` under the root).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The parent path and the last name of a path.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Whether `m` is a whiteout.
pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// `p` as a C string for the system calls std has no wrapper for.
pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl Local {
    /// Opens (making it if needed) the layer kept in `dir`; leftovers of an interrupted
    /// copy in `DIR/work` are removed.
    pub fn open(dir: &Path) -> io::Result<Local> {
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        std::fs::create_dir_all(&upper)?;
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        let c = cpath(&upper)?;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened and owned by nothing else.
        let upper_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Local {
            dir: dir.to_path_buf(),
            upper,
            upper_fd,
            work,
            inos: Mutex::default(),
            moved: Mutex::default(),
            tmp: AtomicU64::new(0),
        })
    }

    /// The layer's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory `rel` of the upper directory, opened `O_PATH` without following any
    /// symlink on the way (the root for an empty path).
    pub fn dir_fd(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { CString::new(".").unwrap() } else { CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))? };
        // `struct open_how` of openat2(2) (libc's is non-exhaustive).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 with a NUL-terminated path and an open_how of the size given.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, self.upper_fd.as_raw_fd(), path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened and owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Where `rel` lives in the upper directory, resolved safely (a path that does not exist
    /// when its directory cannot be reached that way).
    pub fn path(&self, rel: &[u8]) -> At {
        if rel.is_empty() {
            return At { _dir: None, path: self.upper.clone() };
        }
        let (parent, name) = split(rel);
        match self.dir_fd(parent) {
            Ok(fd) => {
                let mut path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                path.push(OsStr::from_bytes(name));
                At { _dir: Some(fd), path }
            }
            Err(_) => At { _dir: None, path: PathBuf::from("/proc/self/fd/-1/missing") },
        }
    }

    /// A fresh name in the work directory (same file system as the upper directory).
    pub fn scratch(&self) -> PathBuf {
        self.work.join(format!("tmp.{}.{}", std::process::id(), self.tmp.fetch_add(1, Ordering::Relaxed)))
    }

    /// What the upper directory holds at `rel`.
    pub fn state(&self, rel: &[u8]) -> State {
        match std::fs::symlink_metadata(self.path(rel)) {
            Ok(m) if is_whiteout(&m) => State::Whiteout,
            Ok(m) => State::Present(m),
            Err(_) => State::Absent,
        }
    }

    /// Whether the directory at `rel` hides the image's children.
    pub fn opaque(&self, rel: &[u8]) -> bool {
        // The path's directory descriptor lives in `at` while the call runs.
        let at = self.path(rel);
        let Ok(p) = cpath(&at) else { return false };
        let name = CString::new(OPAQUE).unwrap();
        let mut v = [0u8; 4];
        // SAFETY: both names are NUL-terminated; the buffer's length is given.
        let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        n == 1 && v[0] == b'y'
    }

    /// Marks the directory at `rel` opaque (or not).
    pub fn set_opaque(&self, rel: &[u8], on: bool) -> io::Result<()> {
        let at = self.path(rel);
        let p = cpath(&at)?;
        let name = CString::new(OPAQUE).unwrap();
        // SAFETY: NUL-terminated names, a one-byte value.
        let r = unsafe {
            if on {
                libc::lsetxattr(p.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0)
            } else {
                libc::lremovexattr(p.as_ptr(), name.as_ptr())
            }
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if on || e.raw_os_error() != Some(libc::ENODATA) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The names the upper directory holds in directory `rel` (whiteouts included).
    pub fn names(&self, rel: &[u8]) -> Vec<(Vec<u8>, Metadata)> {
        let Ok(fd) = self.dir_fd(rel) else { return Vec::new() };
        let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { return Vec::new() };
        rd.filter_map(|e| {
            let e = e.ok()?;
            let m = e.metadata().ok()?;
            Some((e.file_name().as_bytes().to_vec(), m))
        })
        .collect()
    }

    /// The kernel's inode number for the local entry at `rel`.
    pub fn ino(&self, rel: &[u8], m: &Metadata) -> u64 {
        let ino = UPPER_BIT | (m.ino() & !UPPER_BIT);
        self.inos.lock().unwrap().insert(ino, rel.to_vec());
        ino
    }

    /// The path of an upper inode number: where it was last seen if the entry there is still
    /// that inode, else found by walking the directory (after a restart, or a change made
    /// behind the mount's back); `None` once it is gone.
    pub fn rel_of(&self, ino: u64) -> Option<Vec<u8>> {
        let want = ino & !UPPER_BIT;
        let known = self.inos.lock().unwrap().get(&ino).cloned();
        if let Some(r) = known {
            if std::fs::symlink_metadata(self.path(&r)).is_ok_and(|m| m.ino() & !UPPER_BIT == want) {
                return Some(r);
            }
        }
        let mut stack = vec![Vec::new()];
        while let Some(dir) = stack.pop() {
            for (name, m) in self.names(&dir) {
                let rel = join(&dir, &name);
                if m.ino() & !UPPER_BIT == want {
                    self.inos.lock().unwrap().insert(ino, rel.clone());
                    return Some(rel);
                }
                if m.is_dir() {
                    stack.push(rel);
                }
            }
        }
        None
    }

    /// Where an image inode number moved on this machine, if it did.
    pub fn moved(&self, ino: u64) -> Option<Vec<u8>> {
        self.moved.lock().unwrap().get(&ino).cloned()
    }

    /// Records a rename from `from` to `to` (of image inode `image_ino`, if it was one).
    pub fn renamed(&self, from: &[u8], to: &[u8], image_ino: Option<u64>) {
        let fix = |p: &mut Vec<u8>| {
            if p.as_slice() == from || (p.starts_with(from) && p.get(from.len()) == Some(&b'/')) {
                let mut n = to.to_vec();
                n.extend_from_slice(&p[from.len()..]);
                *p = n;
            }
        };
        self.inos.lock().unwrap().values_mut().for_each(fix);
        let mut moved = self.moved.lock().unwrap();
        moved.values_mut().for_each(fix);
        if let Some(i) = image_ino {
            moved.insert(i, to.to_vec());
        }
    }

    /// Makes `rel` a whiteout, replacing what the upper directory held there.
    pub fn whiteout(&self, rel: &[u8]) -> io::Result<()> {
        let tmp = self.scratch();
        let c = cpath(&tmp)?;
        // SAFETY: a NUL-terminated path; a 0/0 character device is overlayfs's whiteout.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o000, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.replace(&tmp, rel)
    }

    /// Moves `tmp` (made in the work directory) to `rel`, replacing what was there (a
    /// directory and a non-directory replace each other too: a whiteout by a directory).
    pub fn replace(&self, tmp: &Path, rel: &[u8]) -> io::Result<()> {
        let dst = self.path(rel);
        if let Ok(m) = std::fs::symlink_metadata(&dst) {
            if m.is_dir() != std::fs::symlink_metadata(tmp)?.is_dir() {
                if m.is_dir() { std::fs::remove_dir_all(&dst)? } else { std::fs::remove_file(&dst)? }
            }
        }
        std::fs::rename(tmp, &dst)
    }

    /// Forgets the upper inode number of `rel` (removed).
    pub fn forget(&self, rel: &[u8]) {
        self.inos.lock().unwrap().retain(|_, p| p.as_slice() != rel);
    }

    /// Forgets where an image inode number moved.
    pub fn unmove(&self, ino: u64) {
        self.moved.lock().unwrap().remove(&ino);
    }

    /// Removes what the upper directory holds at `rel` (a directory with all below it).
    pub fn remove(&self, rel: &[u8]) -> io::Result<()> {
        let p = self.path(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every path the upper directory holds, parents before children.
    pub fn walk(&self) -> Vec<(Vec<u8>, Metadata)> {
        let mut out = Vec::new();
        let mut stack = vec![Vec::new()];
        while let Some(dir) = stack.pop() {
            let mut names = self.names(&dir);
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, m) in names.into_iter().rev() {
                let rel = join(&dir, &name);
                if m.is_dir() {
                    stack.push(rel.clone());
                }
                out.push((rel, m));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_split() {
        assert_eq!(join(b"", b"etc"), b"etc");
        assert_eq!(join(b"etc", b"passwd"), b"etc/passwd");
        assert_eq!(split(b"etc/ssh/sshd_config"), (&b"etc/ssh"[..], &b"sshd_config"[..]));
        assert_eq!(split(b"etc"), (&b""[..], &b"etc"[..]));
    }

    #[test]
    fn a_rename_moves_the_paths_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::open(dir.path()).unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("opt/a")).unwrap();
        std::fs::write(upper.join("opt/a/f"), b"x").unwrap();
        let m = std::fs::symlink_metadata(l.path(b"opt/a/f")).unwrap();
        let ino = l.ino(b"opt/a/f", &m);
        std::fs::rename(upper.join("opt/a"), upper.join("opt/b")).unwrap();
        l.renamed(b"opt/a", b"opt/b", Some(7));
        assert_eq!(l.rel_of(ino).unwrap(), b"opt/b/f");
        assert_eq!(l.moved(7).unwrap(), b"opt/b");
        // An unrelated sibling with the same prefix stays.
        l.renamed(b"opt/b/", b"zzz", None);
        assert_eq!(l.rel_of(ino).unwrap(), b"opt/b/f");
    }

    #[test]
    fn a_symlink_in_the_layer_never_leads_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        let l = Local::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("upper/d")).unwrap();
        assert!(std::fs::read(l.path(b"d/secret")).is_err(), "followed a symlink out of the layer");
        assert!(l.names(b"d").is_empty());
        assert!(matches!(l.state(b"d/secret"), State::Absent));
        assert!(std::fs::symlink_metadata(l.path(b"d")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn whiteouts_and_opaque_directories_use_overlayfs_form() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("upper/etc")).unwrap();
        std::fs::write(l.path(b"etc/motd"), b"local").unwrap();
        l.whiteout(b"etc/motd").unwrap();
        assert!(matches!(l.state(b"etc/motd"), State::Whiteout));
        assert!(matches!(l.state(b"etc/none"), State::Absent));
        l.set_opaque(b"etc", true).unwrap();
        assert!(l.opaque(b"etc"));
        l.set_opaque(b"etc", false).unwrap();
        assert!(!l.opaque(b"etc"));
        l.remove(b"etc").unwrap();
        assert!(matches!(l.state(b"etc"), State::Absent));
        // The work directory is emptied when the layer is opened again.
        std::fs::write(l.scratch(), b"half").unwrap();
        let l = Local::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("work")).unwrap().count(), 0);
        drop(l);
    }
}
