//! The FUSE adapter: translates kernel requests into calls on the endpoint's current or
//! older generations. Read-only; long entry and attribute lifetimes (generations never
//! change); the page cache kept across opens; open files pinned to their generation.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use format::Extent;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::endpoint::Endpoint;
use crate::image::{Attr, Image, ImageError, Kind};

/// How long the kernel may cache entries and attributes. Generations are immutable; a switch
/// invalidates what hangs off the mount's root.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The mount's root inode (always the current generation's root).
const ROOT: u64 = 1;

struct OpenFile {
    size: u64,
    extents: Vec<Extent>,
    // Holds the generation loaded while the file is open.
    _image: Arc<Image>,
}

/// The filesystem the kernel talks to.
pub struct ImgFs {
    ep: Arc<Endpoint>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
}

impl ImgFs {
    /// A filesystem over `ep`.
    pub fn new(ep: Arc<Endpoint>) -> ImgFs {
        ImgFs { ep, files: Mutex::new(HashMap::new()), next_fh: AtomicU64::new(1) }
    }

    /// The generation and its own inode number for a kernel inode number.
    fn resolve(&self, ino: INodeNo) -> Result<(Arc<Image>, u64), Errno> {
        if ino.0 == ROOT {
            let img = self.ep.current();
            let root = img.root_ino();
            return Ok((img, root));
        }
        self.ep.image_of(ino.0).map(|img| (img, ino.0)).ok_or(Errno::ESTALE)
    }

    fn to_kernel(&self, img: &Image, mut a: Attr) -> FileAttr {
        // Only the current generation's root is the mount's root.
        if a.ino == img.root_ino() && img.slot() == self.ep.current().slot() {
            a.ino = ROOT;
        }
        let t = if a.mtime_sec >= 0 {
            UNIX_EPOCH + Duration::new(a.mtime_sec as u64, a.mtime_nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(a.mtime_sec.unsigned_abs())
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Directory => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn errno(e: &ImageError) -> Errno {
    match e {
        ImageError::NoInode(_) => Errno::ESTALE,
        ImageError::NotADirectory(_) => Errno::ENOTDIR,
        ImageError::TreeUnavailable { .. } => Errno::EIO,
    }
}

impl Filesystem for ImgFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.resolve(parent).and_then(|(img, p)| {
            let found = img.lookup(&*self.ep, p, name.as_bytes()).map_err(|e| errno(&e))?;
            Ok(found.map(|a| self.to_kernel(&img, a)))
        });
        match result {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.resolve(ino).and_then(|(img, i)| img.attr(&*self.ep, i).map(|a| self.to_kernel(&img, a)).map_err(|e| errno(&e))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.resolve(ino).and_then(|(img, i)| img.readlink(i).map_err(|e| errno(&e))) {
            Ok(Some(target)) => reply.data(&target),
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.resolve(ino).and_then(|(img, i)| Ok((img.file(i).map_err(|e| errno(&e))?, img))) {
            Ok((Some((size, extents)), img)) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files.lock().unwrap().insert(fh, Arc::new(OpenFile { size, extents, _image: img }));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Ok((None, _)) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.lock().unwrap().get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        match crate::read::read_range(file.size, &file.extents, offset, size, &*self.ep) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::warn!(error = %e, "read failed");
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let (img, i) = match self.resolve(ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let entries = match img.readdir(&*self.ep, i) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        // Offsets: 1 is ".", 2 is "..", 3 + k is entry k.
        let mut next = offset;
        while next < 2 {
            let name = if next == 0 { "." } else { ".." };
            if reply.add(ino, next + 1, FileType::Directory, name) {
                return reply.ok();
            }
            next += 1;
        }
        let mount_root = self.ep.current().root_ino();
        for (k, e) in entries.iter().enumerate().skip((next - 2) as usize) {
            let kino = if e.ino == mount_root { ROOT } else { e.ino };
            if reply.add(INodeNo(kino), k as u64 + 3, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let xattrs = match self.resolve(ino).and_then(|(img, i)| img.xattrs(i).map_err(|e| errno(&e))) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match xattrs.iter().find(|x| x.name == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some(x) if size == 0 => reply.size(x.value.len() as u32),
            Some(x) if x.value.len() > size as usize => reply.error(Errno::ERANGE),
            Some(x) => reply.data(&x.value),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let xattrs = match self.resolve(ino).and_then(|(img, i)| img.xattrs(i).map_err(|e| errno(&e))) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut list = Vec::new();
        for x in &xattrs {
            list.extend_from_slice(&x.name);
            list.push(0);
        }
        if size == 0 {
            reply.size(list.len() as u32)
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&list)
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.ep.current().manifest().stats;
        let blocks = stats.bytes.div_ceil(4096);
        reply.statfs(blocks, 0, 0, stats.files + stats.directories + stats.symlinks + stats.other, 0, 4096, 255, 4096);
    }
}
