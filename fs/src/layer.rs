//! The FUSE side of a writable layer: the merged view of the generation and the upper
//! directory, and the requests that change it. Every request finds its path first (an image
//! inode by the generation's tree, a local one by the layer's table) and asks the upper
//! directory before the image. Local entries that are not directories get inode numbers of
//! their own (`UPPER_BIT`): a file copied up is a new inode, so the page cache of the image's
//! file is never mixed with the local one. Directories of the image keep theirs.
//! Renaming a directory of the image gives EXDEV (as overlayfs without `redirect_dir`), and
//! `mv` copies instead.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyCreate, ReplyEntry, TimeOrNow};

use super::{ImgFs, TTL, file_type};
use crate::image::{Attr, Image, Kind};
use crate::local::{self, State, UPPER_BIT};
use crate::writable::Writable;

/// A kernel inode, found: its path and, for an image inode, its generation and number.
pub(super) struct Node {
    pub rel: Vec<u8>,
    pub image: Option<(Arc<Image>, u64)>,
}

fn io_errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    local::cpath(p).map_err(io_errno)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 { UNIX_EPOCH + Duration::new(sec as u64, nsec as u32) } else { UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) }
}

/// The kernel's attributes of a local entry, as inode `ino`.
pub(super) fn upper_attr(ino: u64, m: &Metadata) -> FileAttr {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_char_device() {
        FileType::CharDevice
    } else if ft.is_block_device() {
        FileType::BlockDevice
    } else if ft.is_fifo() {
        FileType::NamedPipe
    } else if ft.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.mtime(), m.mtime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Sets owner, then permission bits (not on symlinks; after the owner, whose change clears
/// set-id bits) and modification time of a local entry, never following a symlink.
fn set_meta(path: &Path, perm: Option<u32>, owner: Option<(u32, u32)>, mtime: Option<(i64, u32)>, symlink: bool) -> Result<(), Errno> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated paths; plain system calls on an entry of the upper directory.
    unsafe {
        if let Some((uid, gid)) = owner {
            if libc::lchown(c.as_ptr(), uid, gid) != 0 {
                return Err(io_errno(io::Error::last_os_error()));
            }
        }
        if let (Some(p), false) = (perm, symlink) {
            if libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), p as libc::mode_t, libc::AT_SYMLINK_NOFOLLOW) != 0 {
                return Err(io_errno(io::Error::last_os_error()));
            }
        }
        if let Some((s, ns)) = mtime {
            let t = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: s, tv_nsec: ns as i64 }];
            if libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) != 0 {
                return Err(io_errno(io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Gives `path` (in the work directory) the extended attributes of the image's `ino`.
fn copy_xattrs(img: &Image, ino: u64, path: &Path) {
    let Ok(c) = cpath(path) else { return };
    for x in img.xattrs(ino).unwrap_or_default() {
        if let Ok(name) = CString::new(x.name.clone()) {
            // SAFETY: NUL-terminated names, the value's length given.
            unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), x.value.as_ptr().cast(), x.value.len(), 0) };
        }
    }
}

/// A local file open through the mount.
pub(super) struct UpperOpen {
    pub file: File,
    /// Its path when opened, if opened for writing (a merge leaves it alone meanwhile).
    pub writing: Option<Vec<u8>>,
}

impl ImgFs {
    pub(super) fn w(&self) -> Option<&Arc<Writable>> {
        self.writable.as_ref()
    }

    /// Has the kernel look `rel` up again, from another thread: the kernel may hold the
    /// directory's lock while this request runs.
    pub(super) fn expire_later(&self, rel: &[u8]) {
        let (Some(w), ep, rel) = (self.writable.clone(), self.ep.clone(), rel.to_vec()) else { return };
        let _ = std::thread::Builder::new().name("imgfs-expire".into()).spawn(move || w.expire(&ep, &rel));
    }

    /// The path and generation of a kernel inode.
    pub(super) fn node(&self, w: &Writable, ino: INodeNo) -> Result<Node, Errno> {
        if ino.0 & UPPER_BIT != 0 {
            return w.local.rel_of(ino.0).map(|rel| Node { rel, image: None }).ok_or(Errno::ESTALE);
        }
        let (img, i) = self.resolve(ino)?;
        let rel = img.path_of(i).ok_or(Errno::ESTALE)?;
        if let Some(to) = w.local.moved(ino.0) {
            // Renamed on this machine: it lives at its new path while its old one is removed.
            if matches!(w.local.state(&rel), State::Whiteout) {
                return Ok(Node { rel: to, image: None });
            }
            w.local.unmove(ino.0);
        }
        Ok(Node { rel, image: Some((img, i)) })
    }

    /// The image's entry named `name` in directory `p`, unless the layer hides the image's
    /// children there.
    fn image_child(&self, w: &Writable, p: &Node, name: &[u8]) -> Option<(Arc<Image>, Attr)> {
        if w.local.opaque(&p.rel) {
            return None;
        }
        match &p.image {
            Some((img, i)) => img.lookup(&*self.ep, *i, name).ok().flatten().map(|a| (img.clone(), a)),
            None => {
                let img = self.ep.current();
                w.image_at(&self.ep, &img, &local::join(&p.rel, name)).map(|a| (img, a))
            }
        }
    }

    /// The merged entry `name` in directory `p`, if there is one.
    pub(super) fn w_child(&self, w: &Writable, p: &Node, name: &[u8]) -> Result<Option<FileAttr>, Errno> {
        let rel = local::join(&p.rel, name);
        Ok(match w.local.state(&rel) {
            State::Whiteout => None,
            State::Present(m) => {
                let image_dir = m.is_dir() && !w.local.opaque(&rel);
                let ino = match self.image_child(w, p, name) {
                    Some((_, a)) if image_dir && a.kind == Kind::Directory => a.ino,
                    _ => w.local.ino(&rel, &m),
                };
                Some(upper_attr(ino, &m))
            }
            State::Absent => self.image_child(w, p, name).map(|(img, a)| self.to_kernel(&img, a)),
        })
    }

    /// The attributes of a kernel inode in the merged view.
    pub(super) fn w_getattr(&self, w: &Writable, ino: INodeNo) -> Result<FileAttr, Errno> {
        let n = self.node(w, ino)?;
        if !n.rel.is_empty() {
            match w.local.state(&n.rel) {
                State::Present(m) => return Ok(upper_attr(ino.0, &m)),
                State::Whiteout => return Err(Errno::ENOENT),
                State::Absent => {}
            }
        }
        let (img, i) = n.image.ok_or(Errno::ESTALE)?;
        let a = img.attr(&*self.ep, i).map_err(|e| super::errno(&e))?;
        Ok(self.to_kernel(&img, a))
    }

    /// The merged listing of a directory: name → (inode, type).
    pub(super) fn w_entries(&self, w: &Writable, ino: INodeNo) -> Result<BTreeMap<Vec<u8>, (u64, FileType)>, Errno> {
        let n = self.node(w, ino)?;
        let mut out = BTreeMap::new();
        let image_dir = if w.local.opaque(&n.rel) {
            None
        } else {
            match &n.image {
                Some((img, i)) => Some((img.clone(), *i)),
                None => {
                    let img = self.ep.current();
                    w.image_at(&self.ep, &img, &n.rel).filter(|a| a.kind == Kind::Directory).map(|a| (img, a.ino))
                }
            }
        };
        if let Some((img, i)) = image_dir {
            if let Ok(entries) = img.readdir(&*self.ep, i) {
                for e in entries {
                    out.insert(e.name, (e.ino, file_type(e.kind)));
                }
            }
        }
        for (name, m) in w.local.names(&n.rel) {
            if local::is_whiteout(&m) {
                out.remove(&name);
                continue;
            }
            let rel = local::join(&n.rel, &name);
            let keep = m.is_dir() && !w.local.opaque(&rel) && out.get(&name).is_some_and(|(_, t)| *t == FileType::Directory);
            if !keep {
                out.insert(name, (w.local.ino(&rel, &m), upper_attr(0, &m).kind));
            }
        }
        Ok(out)
    }

    /// Copies the image's directory at `rel` into the upper directory (owner, mode, time).
    fn copy_up_dir(&self, w: &Writable, rel: &[u8]) -> Result<(), Errno> {
        let img = self.ep.current();
        let a = w.image_at(&self.ep, &img, rel).filter(|a| a.kind == Kind::Directory).ok_or(Errno::ENOENT)?;
        let tmp = w.local.scratch();
        std::fs::create_dir(&tmp).map_err(io_errno)?;
        set_meta(&tmp, Some(a.perm as u32), Some((a.uid, a.gid)), Some((a.mtime_sec, a.mtime_nsec)), false)?;
        copy_xattrs(&img, a.ino, &tmp);
        match std::fs::rename(&tmp, w.local.path(rel)) {
            Ok(()) => Ok(()),
            // Made meanwhile by another request.
            Err(_) if w.local.path(rel).is_dir() => {
                let _ = std::fs::remove_dir(&tmp);
                Ok(())
            }
            Err(e) => Err(io_errno(e)),
        }
    }

    /// Makes sure every directory above `rel` is in the upper directory.
    fn ensure_parents(&self, w: &Writable, rel: &[u8]) -> Result<(), Errno> {
        let (parent, _) = local::split(rel);
        if parent.is_empty() {
            return Ok(());
        }
        let mut prefix = Vec::new();
        for name in parent.split(|&b| b == b'/') {
            prefix = local::join(&prefix, name);
            match w.local.state(&prefix) {
                State::Present(m) if m.is_dir() => {}
                State::Present(_) => return Err(Errno::ENOTDIR),
                State::Whiteout => return Err(Errno::ENOENT),
                State::Absent => self.copy_up_dir(w, &prefix)?,
            }
        }
        Ok(())
    }

    /// Copies the image's entry of `n` into the upper directory, if it is not there yet.
    pub(super) fn copy_up(&self, w: &Writable, n: &Node) -> Result<(), Errno> {
        // One copy at a time: two writers of one file must not both copy it.
        let _one = w.copying.lock().unwrap();
        match w.local.state(&n.rel) {
            State::Present(_) => return Ok(()),
            State::Whiteout => return Err(Errno::ENOENT),
            State::Absent => {}
        }
        self.ensure_parents(w, &n.rel)?;
        let (img, a) = match &n.image {
            Some((img, i)) => (img.clone(), img.attr(&*self.ep, *i).map_err(|e| super::errno(&e))?),
            None => {
                let img = self.ep.current();
                let a = w.image_at(&self.ep, &img, &n.rel).ok_or(Errno::ENOENT)?;
                (img, a)
            }
        };
        if a.kind == Kind::Directory {
            drop(_one);
            return self.copy_up_dir(w, &n.rel);
        }
        let tmp = w.local.scratch();
        let c = cpath(&tmp)?;
        match a.kind {
            Kind::File => {
                let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_errno)?;
                let copied = img.read(a.ino, |size, extents| -> Result<(), Errno> {
                    let mut off = 0;
                    while off < size {
                        let data = crate::read::read_range(size, extents, off, 1 << 20, &*self.ep).map_err(|_| Errno::EIO)?;
                        if data.is_empty() {
                            break;
                        }
                        f.write_all_at(&data, off).map_err(io_errno)?;
                        off += data.len() as u64;
                    }
                    f.sync_data().map_err(io_errno)
                });
                if let Err(e) = copied.map_err(|e| super::errno(&e)).and_then(|r| r.ok_or(Errno::EINVAL)).and_then(|r| r) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
            Kind::Symlink => {
                let target = img.readlink(a.ino).map_err(|e| super::errno(&e))?.unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &tmp).map_err(io_errno)?;
            }
            k => {
                let kind = match k {
                    Kind::CharDevice => libc::S_IFCHR,
                    Kind::BlockDevice => libc::S_IFBLK,
                    Kind::Fifo => libc::S_IFIFO,
                    _ => libc::S_IFSOCK,
                };
                // SAFETY: a NUL-terminated path in the work directory.
                if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, a.rdev as libc::dev_t) } != 0 {
                    return Err(io_errno(io::Error::last_os_error()));
                }
            }
        }
        let symlink = a.kind == Kind::Symlink;
        set_meta(&tmp, Some(a.perm as u32), Some((a.uid, a.gid)), Some((a.mtime_sec, a.mtime_nsec)), symlink)?;
        // Capabilities and the like go with the copy (after chown, which clears them).
        copy_xattrs(&img, a.ino, &tmp);
        w.local.replace(&tmp, &n.rel).map_err(io_errno)
    }

    /// Opens the local file of `n` for a request, with `flags`' access mode.
    pub(super) fn open_upper(&self, w: &Writable, n: &Node, flags: i32) -> Result<File, Errno> {
        let acc = flags & libc::O_ACCMODE;
        std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .custom_flags(libc::O_NOFOLLOW)
            .open(w.local.path(&n.rel))
            .map_err(io_errno)
    }

    /// Registers an open local file (at `rel`, if open for writing); its handle.
    pub(super) fn add_upper(&self, w: &Writable, f: File, writing: Option<&[u8]>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Some(rel) = writing {
            w.opened(rel, 1);
        }
        self.uppers.lock().unwrap().insert(fh, Arc::new(UpperOpen { file: f, writing: writing.map(<[u8]>::to_vec) }));
        fh
    }

    /// The open local file behind `fh`, or (after a restart, which forgot handles) the file
    /// at the inode's path.
    pub(super) fn upper_file(&self, w: &Writable, ino: INodeNo, fh: FileHandle, write: bool) -> Result<Option<Arc<UpperOpen>>, Errno> {
        if let Some(f) = self.uppers.lock().unwrap().get(&fh.0) {
            return Ok(Some(f.clone()));
        }
        let n = self.node(w, ino)?;
        match w.local.state(&n.rel) {
            State::Present(m) if m.is_file() => {
                let file = self.open_upper(w, &n, if write { libc::O_RDWR } else { libc::O_RDONLY })?;
                Ok(Some(Arc::new(UpperOpen { file, writing: None })))
            }
            _ if write => Err(Errno::EBADF),
            _ => Ok(None),
        }
    }

    /// Makes a new entry `name` in directory `parent` with `make` (given its scratch path):
    /// owned by `owner` (the group of a set-group-id directory instead, as the kernel does),
    /// with permission bits `mode`; replaces a whiteout, and a directory replacing one hides
    /// the image's children.
    pub(super) fn w_make(
        &self,
        w: &Writable,
        parent: INodeNo,
        name: &OsStr,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(Vec<u8>, FileAttr), Errno> {
        let _shared = w.changing.read().unwrap();
        let p = self.node(w, parent)?;
        let rel = local::join(&p.rel, name.as_bytes());
        if self.w_child(w, &p, name.as_bytes())?.is_some() {
            return Err(Errno::EEXIST);
        }
        self.ensure_parents(w, &rel)?;
        let was_whiteout = matches!(w.local.state(&rel), State::Whiteout);
        let tmp = w.local.scratch();
        make(&tmp).map_err(io_errno)?;
        let m = std::fs::symlink_metadata(&tmp).map_err(io_errno)?;
        let (is_dir, symlink) = (m.is_dir(), m.file_type().is_symlink());
        let setgid_dir = self.w_getattr(w, parent).ok().filter(|a| a.perm as u32 & libc::S_ISGID != 0);
        let owner = owner.map(|(uid, gid)| (uid, setgid_dir.map_or(gid, |a| a.gid)));
        let mode = mode.map(|m| if is_dir && setgid_dir.is_some() { m | libc::S_ISGID } else { m });
        set_meta(&tmp, mode, owner, None, symlink)?;
        w.local.replace(&tmp, &rel).map_err(io_errno)?;
        if was_whiteout && is_dir {
            w.local.set_opaque(&rel, true).map_err(io_errno)?;
        }
        let m = std::fs::symlink_metadata(w.local.path(&rel)).map_err(io_errno)?;
        let ino = w.local.ino(&rel, &m);
        w.changed(&rel);
        Ok((rel, upper_attr(ino, &m)))
    }

    pub(super) fn w_create(&self, w: &Writable, parent: INodeNo, name: &OsStr, mode: u32, owner: (u32, u32), flags: i32, reply: ReplyCreate) {
        let made = self.w_make(w, parent, name, Some(owner), Some(mode & 0o7777), |tmp| {
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp).map(drop)
        });
        let (rel, attr) = match made {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let writing = (flags & libc::O_ACCMODE != libc::O_RDONLY).then_some(rel.as_slice());
        match self.open_upper(w, &Node { rel: rel.clone(), image: None }, flags) {
            Ok(f) => reply.created(&TTL, &attr, Generation(0), FileHandle(self.add_upper(w, f, writing)), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn w_entry(&self, made: Result<(Vec<u8>, FileAttr), Errno>, reply: ReplyEntry) {
        match made {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => {
                tracing::debug!(?e, "a new entry was refused");
                reply.error(e)
            }
        }
    }

    /// Removes `name` from `parent`: the local entry goes, and a whiteout hides the image's.
    pub(super) fn w_remove(&self, w: &Writable, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let _shared = w.changing.read().unwrap();
        let p = self.node(w, parent)?;
        let rel = local::join(&p.rel, name.as_bytes());
        let attr = self.w_child(w, &p, name.as_bytes())?.ok_or(Errno::ENOENT)?;
        match (dir, attr.kind == FileType::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if dir && !self.w_entries(w, attr.ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let in_image = self.image_child(w, &p, name.as_bytes()).is_some();
        w.local.remove(&rel).map_err(io_errno)?;
        w.local.forget(&rel);
        if in_image {
            self.ensure_parents(w, &rel)?;
            w.local.whiteout(&rel).map_err(io_errno)?;
        }
        w.changed(&rel);
        Ok(())
    }

    pub(super) fn w_rename(&self, w: &Writable, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: u32) -> Result<(), Errno> {
        if flags & libc::RENAME_EXCHANGE != 0 || flags & libc::RENAME_WHITEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let _shared = w.changing.read().unwrap();
        let (p, np) = (self.node(w, parent)?, self.node(w, newparent)?);
        let (from, to) = (local::join(&p.rel, name.as_bytes()), local::join(&np.rel, newname.as_bytes()));
        let src = self.w_child(w, &p, name.as_bytes())?.ok_or(Errno::ENOENT)?;
        let src_in_image = self.image_child(w, &p, name.as_bytes());
        if src.kind == FileType::Directory && src_in_image.is_some() {
            return Err(Errno::EXDEV);
        }
        let dst = self.w_child(w, &np, newname.as_bytes())?;
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            match (src.kind == FileType::Directory, d.kind == FileType::Directory) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) => {
                    if !self.w_entries(w, d.ino)?.is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                    if self.image_child(w, &np, newname.as_bytes()).is_some() {
                        return Err(Errno::EXDEV);
                    }
                }
                _ => {}
            }
        }
        let image_ino = src_in_image.as_ref().map(|(_, a)| a.ino);
        self.copy_up(w, &Node { rel: from.clone(), image: src_in_image.map(|(img, a)| (img, a.ino)) })?;
        self.ensure_parents(w, &to)?;
        if let State::Present(m) = w.local.state(&to) {
            if m.is_dir() {
                w.local.remove(&to).map_err(io_errno)?;
            }
        }
        let dst_whiteout = matches!(w.local.state(&to), State::Whiteout);
        if dst_whiteout && src.kind == FileType::Directory {
            w.local.remove(&to).map_err(io_errno)?;
        }
        std::fs::rename(w.local.path(&from), w.local.path(&to)).map_err(io_errno)?;
        if dst_whiteout && src.kind == FileType::Directory {
            w.local.set_opaque(&to, true).map_err(io_errno)?;
        }
        if image_ino.is_some() {
            w.local.whiteout(&from).map_err(io_errno)?;
        }
        // The kernel may hold the image's inode for it (looked up before a copy-up): it now
        // lives at `to`.
        w.local.renamed(&from, &to, image_ino);
        w.changed(&from);
        w.changed(&to);
        Ok(())
    }

    pub(super) fn w_link(&self, w: &Writable, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> Result<(Vec<u8>, FileAttr), Errno> {
        let n = {
            let _shared = w.changing.read().unwrap();
            let n = self.node(w, ino)?;
            self.copy_up(w, &n)?;
            n
        };
        let src = w.local.path(&n.rel);
        // A link is the same inode: its owner and mode stay as they are (a chown would clear
        // set-id bits and capabilities of the file itself).
        self.w_make(w, newparent, newname, None, None, |tmp| std::fs::hard_link(&src, tmp))
    }

    pub(super) fn w_setattr(
        &self,
        w: &Writable,
        ino: INodeNo,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        atime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let n = self.node(w, ino)?;
        if n.rel.is_empty() {
            // The mount's root is the image's.
            return Err(Errno::EPERM);
        }
        if !matches!(w.local.state(&n.rel), State::Present(_)) {
            let _shared = w.changing.read().unwrap();
            self.copy_up(w, &n)?;
            self.expire_later(&n.rel);
        }
        let path = w.local.path(&n.rel);
        let m = std::fs::symlink_metadata(&path).map_err(io_errno)?;
        let symlink = m.file_type().is_symlink();
        if owner.0.is_some() || owner.1.is_some() {
            set_meta(&path, None, Some((owner.0.unwrap_or(m.uid()), owner.1.unwrap_or(m.gid()))), None, symlink)?;
        }
        if let Some(mode) = mode {
            set_meta(&path, Some(mode & 0o7777), None, None, symlink)?;
        }
        if let Some(size) = size {
            std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&path).and_then(|f| f.set_len(size)).map_err(io_errno)?;
        }
        if mtime.is_some() || atime.is_some() {
            let ts = |t: Option<TimeOrNow>| match t {
                None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
                Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
                Some(TimeOrNow::SpecificTime(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 }
                }
            };
            let c = cpath(&path)?;
            let t = [ts(atime), ts(mtime)];
            // SAFETY: a NUL-terminated path and two timespecs.
            if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
                return Err(io_errno(io::Error::last_os_error()));
            }
        }
        // A truncation of a file open for writing (O_TRUNC, ftruncate) is reported by its
        // release, once the writer is done.
        if size.is_none() || !w.is_open_for_writing(&n.rel) {
            w.changed(&n.rel);
        }
        let m = std::fs::symlink_metadata(&path).map_err(io_errno)?;
        Ok(upper_attr(ino.0, &m))
    }

    /// A local entry's extended attributes (overlayfs's own left out); `None` if the inode
    /// has no local entry.
    pub(super) fn w_xattrs(&self, w: &Writable, ino: INodeNo) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, Errno> {
        let n = self.node(w, ino)?;
        if n.rel.is_empty() || !matches!(w.local.state(&n.rel), State::Present(_)) {
            return Ok(None);
        }
        let at = w.local.path(&n.rel);
        let c = cpath(&at)?;
        let mut names = vec![0u8; 4096];
        // SAFETY: a NUL-terminated path; the buffer's length is given.
        let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if len < 0 {
            return Ok(Some(Vec::new()));
        }
        let mut out = Vec::new();
        for name in names[..len as usize].split(|&b| b == 0).filter(|n| !n.is_empty() && !n.starts_with(b"trusted.overlay.")) {
            let Ok(cn) = CString::new(name) else { continue };
            let mut value = vec![0u8; 65536];
            // SAFETY: as above.
            let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            if vlen >= 0 {
                value.truncate(vlen as usize);
                out.push((name.to_vec(), value));
            }
        }
        Ok(Some(out))
    }

    /// The upper directory's file system figures, for statfs: free space is the layer's.
    pub(super) fn w_statfs(&self, w: &Writable) -> Option<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&*w.local.path(b"")).ok()
    }
}

