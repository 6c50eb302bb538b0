//! The upper directory of a mount's writable layer (`imgfs mount --writable DIR`): local
//! changes kept on local disk in `DIR/upper`, in overlayfs's on-disk form, so that the
//! directory reads like an overlay's upper directory: a changed or added entry is there
//! whole, a deleted one is a whiteout (a 0/0 character device), and a directory the machine
//! removed and made again carries `trusted.overlay.opaque=y` (the image's children hidden).
//! Paths are relative to the mount's root, as bytes (`etc/ssh/sshd_config`). New entries are
//! made in `DIR/work` and renamed into place: a copy is never visible half-written.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
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

/// The upper directory.
pub struct Local {
    dir: PathBuf,
    upper: PathBuf,
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

fn cpath(p: &Path) -> io::Result<CString> {
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
        Ok(Local { dir: dir.to_path_buf(), upper, work, inos: Mutex::default(), moved: Mutex::default(), tmp: AtomicU64::new(0) })
    }

    /// The layer's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `rel` lives in the upper directory.
    pub fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() { self.upper.clone() } else { self.upper.join(OsStr::from_bytes(rel)) }
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
        let Ok(p) = cpath(&self.path(rel)) else { return false };
        let name = CString::new(OPAQUE).unwrap();
        let mut v = [0u8; 4];
        // SAFETY: both names are NUL-terminated; the buffer's length is given.
        let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        n == 1 && v[0] == b'y'
    }

    /// Marks the directory at `rel` opaque (or not).
    pub fn set_opaque(&self, rel: &[u8], on: bool) -> io::Result<()> {
        let p = cpath(&self.path(rel))?;
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
        let Ok(rd) = std::fs::read_dir(self.path(rel)) else { return Vec::new() };
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

    /// The path of an upper inode number (after a restart, found by walking the directory).
    pub fn rel_of(&self, ino: u64) -> Option<Vec<u8>> {
        if let Some(r) = self.inos.lock().unwrap().get(&ino) {
            return Some(r.clone());
        }
        let want = ino & !UPPER_BIT;
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

    /// Moves `tmp` (made in the work directory) to `rel`, replacing what was there.
    pub fn replace(&self, tmp: &Path, rel: &[u8]) -> io::Result<()> {
        let dst = self.path(rel);
        if let Ok(m) = std::fs::symlink_metadata(&dst) {
            if m.is_dir() && !std::fs::symlink_metadata(tmp)?.is_dir() {
                std::fs::remove_dir_all(&dst)?;
            }
        }
        std::fs::rename(tmp, dst)
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
        std::fs::create_dir_all(l.path(b"opt/a")).unwrap();
        std::fs::write(l.path(b"opt/a/f"), b"x").unwrap();
        let m = std::fs::symlink_metadata(l.path(b"opt/a/f")).unwrap();
        let ino = l.ino(b"opt/a/f", &m);
        l.renamed(b"opt/a", b"opt/b", Some(7));
        assert_eq!(l.rel_of(ino).unwrap(), b"opt/b/f");
        assert_eq!(l.moved(7).unwrap(), b"opt/b");
        // An unrelated sibling with the same prefix stays.
        l.renamed(b"opt/b/", b"zzz", None);
        assert_eq!(l.rel_of(ino).unwrap(), b"opt/b/f");
    }

    #[test]
    fn whiteouts_and_opaque_directories_use_overlayfs_form() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::open(dir.path()).unwrap();
        std::fs::create_dir_all(l.path(b"etc")).unwrap();
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
