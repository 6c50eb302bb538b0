//! The FUSE adapter: translates kernel requests into calls on the endpoint's current or
//! older generations. Read-only; long entry and attribute lifetimes (generations never
//! change); the page cache kept across opens. By default imgfs asks the kernel not to send
//! OPEN and RELEASE at all (`FUSE_NO_OPEN_SUPPORT`): every open of a cached file then costs
//! no round trip, and READ names the inode, whose number says its generation (an open file
//! keeps its inode and so its generation). In passthrough mode instead, files with a plain
//! copy in the cache are opened so that the kernel reads the copy directly.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use format::Extent;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use cache::plain::Plain;
use fuser::{BackingId, InitFlags};

use crate::endpoint::Endpoint;
use crate::image::{Attr, Image, ImageError, Kind};
use crate::local::{State, UPPER_BIT};
use crate::materialise::Materialiser;

/// How long the kernel may cache entries and attributes. Generations are immutable; a switch
/// invalidates what hangs off the mount's root.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The mount's root inode (always the current generation's root).
pub const ROOT: u64 = 1;

#[path = "layer.rs"]
mod layer;

struct OpenFile {
    ino: u64,
    size: u64,
    extents: Vec<Extent>,
    /// How it was opened, when the inode's modes are tracked (files of passthrough size).
    mode: Option<Mode>,
    // Holds the generation loaded while the file is open.
    _image: Arc<Image>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cached,
    Passthrough,
}

/// How an inode is open now. The kernel refuses to mix passthrough and cached opens of one
/// inode, and all passthrough opens of it must share one backing file.
#[derive(Default)]
struct InodeIo {
    cached: u32,
    backing: Option<(Arc<BackingId>, u32)>,
}

/// The filesystem the kernel talks to.
pub struct ImgFs {
    ep: Arc<Endpoint>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// Writes plain copies; `None`: none are made or read.
    materialiser: Option<Materialiser>,
    /// Whether passthrough was asked for (`--passthrough`).
    want_passthrough: bool,
    /// The plain copy of a file read in the default mode, by inode (`None`: none when last
    /// looked at, from the file's start).
    plain_files: Mutex<HashMap<u64, Option<Arc<std::fs::File>>>>,
    /// Whether the kernel agreed to passthrough (set at init).
    passthrough: AtomicBool,
    /// Whether the kernel agreed to skip OPEN and OPENDIR (set at init).
    no_open: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeIo>>,
    /// The writable layer, if the mount has one.
    writable: Option<Arc<crate::writable::Writable>>,
    /// Open files of the writable layer, by handle.
    uppers: Mutex<HashMap<u64, Arc<layer::UpperOpen>>>,
}

impl ImgFs {
    /// A filesystem over `ep`; with `materialiser`, big fully cached files get plain copies,
    /// which READs read instead of decoding objects, or (with `passthrough`) which the kernel
    /// reads directly where it allows (opens are then taken; else they are skipped).
    pub fn new(ep: Arc<Endpoint>, materialiser: Option<Materialiser>, passthrough: bool) -> ImgFs {
        ImgFs {
            ep,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            materialiser,
            want_passthrough: passthrough,
            plain_files: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            no_open: AtomicBool::new(false),
            inodes: Mutex::new(HashMap::new()),
            writable: None,
            uppers: Mutex::new(HashMap::new()),
        }
    }

    /// The filesystem with a writable layer over the generations (opens are then always
    /// taken, and no file is passed through).
    pub fn with_writable(mut self, w: Option<Arc<crate::writable::Writable>>) -> ImgFs {
        if w.is_some() {
            self.want_passthrough = false;
        }
        self.writable = w;
        self
    }

    /// A filesystem taking over a connection a previous process initialised with `init`; its
    /// file handles start above the ones earlier processes gave (`epoch`).
    pub fn resumed(ep: Arc<Endpoint>, materialiser: Option<Materialiser>, init: crate::resume::Init, epoch: u64) -> ImgFs {
        let fs = ImgFs::new(ep, materialiser, init.passthrough);
        fs.no_open.store(init.no_open, Ordering::Relaxed);
        fs.passthrough.store(init.passthrough, Ordering::Relaxed);
        fs.next_fh.store((epoch << 40) + 1, Ordering::Relaxed);
        fs
    }

    /// Opens `ino` in passthrough mode if it has a plain copy and no cached open; else
    /// records a cached open. Returns the backing file for a passthrough open.
    fn open_mode(&self, ino: u64, size: u64, extents: &[Extent], reply: &ReplyOpen) -> (Mode, Option<Arc<BackingId>>) {
        let mut inodes = self.inodes.lock().unwrap();
        let io = inodes.entry(ino).or_default();
        if io.cached == 0 {
            if let Some((b, n)) = &mut io.backing {
                *n += 1;
                return (Mode::Passthrough, Some(b.clone()));
            }
            if let Some(copy) = self.ep.plain().and_then(|p| p.get(&Plain::key(size, extents))) {
                match reply.open_backing(&copy) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        io.backing = Some((b.clone(), 1));
                        return (Mode::Passthrough, Some(b));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the kernel refuses a backing file; reading through FUSE from now on");
                        self.passthrough.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        io.cached += 1;
        (Mode::Cached, None)
    }

    fn close_mode(&self, ino: u64, mode: Mode) {
        let mut inodes = self.inodes.lock().unwrap();
        let Some(io) = inodes.get_mut(&ino) else { return };
        match mode {
            Mode::Cached => io.cached = io.cached.saturating_sub(1),
            Mode::Passthrough => {
                if let Some((_, n)) = &mut io.backing {
                    *n -= 1;
                    if *n == 0 {
                        // Dropping the last reference closes the backing id in the kernel.
                        io.backing = None;
                    }
                }
            }
        }
        if io.cached == 0 && io.backing.is_none() {
            inodes.remove(&ino);
        }
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

impl ImgFs {
    /// Reads a range of an image's file: from its plain copy if it has one (no decoding),
    /// else from its objects; a read reaching its end offers it for a plain copy.
    fn read_file(&self, ino: u64, file_size: u64, extents: &[Extent], offset: u64, len: u32) -> Result<Vec<u8>, crate::read::ChunkError> {
        if let Some(f) = self.plain_of(ino, file_size, extents, offset) {
            let mut buf = vec![0u8; file_size.saturating_sub(offset).min(len as u64) as usize];
            match read_full(&f, &mut buf, offset) {
                Ok(n) if n == buf.len() => {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&*f);
                    // The disk reads ahead of the reader in windows of PLAIN_AHEAD: a window
                    // crossed asks for the one PLAIN_WINDOWS further (the first read for
                    // all of them), so the next READs find the copy's pages in memory; the
                    // kernel's own read-ahead on a FUSE file is too short to keep the disk busy.
                    let (from, to) = (offset / PLAIN_AHEAD, (offset + n as u64) / PLAIN_AHEAD);
                    let ahead = if offset == 0 { Some((n as u64, PLAIN_WINDOWS * PLAIN_AHEAD)) } else if to > from { Some(((to + PLAIN_WINDOWS - 1) * PLAIN_AHEAD, PLAIN_AHEAD)) } else { None };
                    // The kernel caches these bytes as the mount's file already: the copy's own
                    // pages would hold them twice.
                    // SAFETY: advice on a descriptor this function holds open.
                    unsafe {
                        if let Some((at, len)) = ahead.filter(|(at, _)| *at < file_size) {
                            libc::posix_fadvise(fd, at as i64, len as i64, libc::POSIX_FADV_WILLNEED);
                        }
                        libc::posix_fadvise(fd, offset as i64, n as i64, libc::POSIX_FADV_DONTNEED)
                    };
                    return Ok(buf);
                }
                // A copy cut short (the disk): the objects still have it.
                _ => {
                    self.plain_files.lock().unwrap().remove(&ino);
                }
            }
        }
        let data = crate::read::read_range(file_size, extents, offset, len, &*self.ep)?;
        if offset + len as u64 >= file_size && !self.want_passthrough {
            if let Some(m) = &self.materialiser {
                m.offer(file_size, extents);
            }
        }
        Ok(data)
    }

    /// The plain copy of a big file, looked for again only from the file's start.
    fn plain_of(&self, ino: u64, size: u64, extents: &[Extent], offset: u64) -> Option<Arc<std::fs::File>> {
        if size < crate::materialise::MIN_SIZE || self.materialiser.is_none() {
            return None;
        }
        let plain = self.ep.plain()?;
        match self.plain_files.lock().unwrap().get(&ino) {
            Some(Some(f)) => return Some(f.clone()),
            Some(None) if offset != 0 => return None,
            _ => {}
        }
        let f = plain.get(&Plain::key(size, extents)).map(Arc::new);
        let mut known = self.plain_files.lock().unwrap();
        if known.len() >= 4096 {
            known.clear();
        }
        known.insert(ino, f.clone());
        f
    }

    /// Extended attributes of an inode: the local entry's, else the image's.
    fn xattrs(&self, ino: INodeNo) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Errno> {
        if let Some(w) = self.w() {
            if let Some(x) = self.w_xattrs(w, ino)? {
                return Ok(x);
            }
        }
        let (img, i) = self.resolve(ino)?;
        Ok(img.xattrs(i).map_err(|e| errno(&e))?.into_iter().map(|x| (x.name, x.value)).collect())
    }
}

/// The window of a plain copy's read-ahead (see `read_file`).
const PLAIN_AHEAD: u64 = 1 << 20;

/// How many windows of a plain copy are read ahead of a reader.
const PLAIN_WINDOWS: u64 = 4;

/// Reads at `offset` until `buf` is full or the file ends; the bytes read.
fn read_full(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match std::os::unix::fs::FileExt::read_at(f, &mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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
        let result = match self.w() {
            Some(w) => self.node(w, parent).and_then(|p| self.w_child(w, &p, name.as_bytes())),
            None => self.resolve(parent).and_then(|(img, p)| {
                let found = img.lookup(&*self.ep, p, name.as_bytes()).map_err(|e| errno(&e))?;
                Ok(found.map(|a| self.to_kernel(&img, a)))
            }),
        };
        if let Ok(Some(attr)) = &result {
            if attr.ino.0 != ROOT && attr.ino.0 & UPPER_BIT == 0 {
                // The kernel holds this lookup until it sends FORGET.
                if let Some(img) = self.ep.image_of(attr.ino.0) {
                    img.kernel_refs_add(1);
                }
            }
        }
        match result {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 != ROOT && ino.0 & UPPER_BIT == 0 {
            if let Some(img) = self.ep.image_of(ino.0) {
                img.kernel_refs_add(-(nlookup as i64));
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(w) = self.w() {
            return match self.w_getattr(w, ino) {
                Ok(attr) => reply.attr(&TTL, &attr),
                Err(e) => reply.error(e),
            };
        }
        match self.resolve(ino).and_then(|(img, i)| img.attr(&*self.ep, i).map(|a| self.to_kernel(&img, a)).map_err(|e| errno(&e))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if let Some(w) = self.w() {
            match self.node(w, ino) {
                Ok(n) if !n.rel.is_empty() => match w.local.state(&n.rel) {
                    State::Present(_) => {
                        return match std::fs::read_link(w.local.path(&n.rel)) {
                            Ok(t) => reply.data(t.as_os_str().as_bytes()),
                            Err(_) => reply.error(Errno::EINVAL),
                        };
                    }
                    State::Whiteout => return reply.error(Errno::ENOENT),
                    State::Absent => {}
                },
                Ok(_) => {}
                Err(e) => return reply.error(e),
            }
        }
        match self.resolve(ino).and_then(|(img, i)| img.readlink(i).map_err(|e| errno(&e))) {
            Ok(Some(target)) => reply.data(&target),
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Skipping opens takes effect at the first OPEN (OPENDIR) answered with ENOSYS.
        let no_open = InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT;
        // A writable layer takes every open: a write copies the file up first.
        if !self.want_passthrough && self.writable.is_none() && config.add_capabilities(no_open).is_ok() {
            self.no_open.store(true, Ordering::Relaxed);
        }
        // Listings with attributes (`readdirplus`), always: every process that takes this
        // connection over answers them, whatever its options.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        if self.want_passthrough
            && self.materialiser.is_some()
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            // Backing files on a plain file system; imgfs itself may sit under an overlay.
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        if let Some(j) = self.ep.journal() {
            let init = crate::resume::Init {
                no_open: self.no_open.load(Ordering::Relaxed),
                passthrough: self.passthrough.load(Ordering::Relaxed),
                resend: config.capabilities().contains(InitFlags::FUSE_HAS_RESEND),
            };
            if let Err(e) = j.set_init(init) {
                tracing::error!(error = %e, "cannot record the session; a restart will not be able to resume this mount");
            }
        }
        Ok(())
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Some(w) = self.w() {
            let n = match self.node(w, ino) {
                Ok(n) => n,
                Err(e) => return reply.error(e),
            };
            let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            let local = match w.local.state(&n.rel) {
                State::Present(m) => m.is_file(),
                State::Whiteout => return reply.error(Errno::ENOENT),
                State::Absent => false,
            };
            if local || write {
                if !local {
                    let _shared = w.changing.read().unwrap();
                    if let Err(e) = self.copy_up(w, &n) {
                        return reply.error(e);
                    }
                    // New lookups find the local file, under its own inode.
                    self.expire_later(&n.rel);
                }
                // Through an image inode (looked up before the copy), the kernel's cache of
                // that inode must keep the image's version: the local file bypasses it.
                let flags_out = if n.image.is_some() { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
                return match self.open_upper(w, &n, flags.0) {
                    Ok(f) => reply.opened(FileHandle(self.add_upper(w, f, write.then_some(n.rel.as_slice()))), flags_out),
                    Err(e) => reply.error(e),
                };
            }
        } else if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.no_open.load(Ordering::Relaxed) {
            // From now on the kernel opens files itself, keeping their page cache.
            return reply.error(Errno::ENOSYS);
        }
        match self.resolve(ino).and_then(|(img, i)| Ok((img.file(i).map_err(|e| errno(&e))?, img))) {
            Ok((Some((size, extents)), img)) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let tracked = self.passthrough.load(Ordering::Relaxed) && size >= crate::materialise::MIN_SIZE;
                let (mode, backing) = if tracked { self.open_mode(ino.0, size, &extents, &reply) } else { (Mode::Cached, None) };
                let file = OpenFile { ino: ino.0, size, extents, mode: tracked.then_some(mode), _image: img };
                self.files.lock().unwrap().insert(fh, Arc::new(file));
                self.ep.opens[(mode == Mode::Passthrough) as usize].fetch_add(1, Ordering::Relaxed);
                match backing {
                    Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Ok((None, _)) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.ep.tracer.record(ino.0, offset, size);
        let resolved = self.resolve(ino);
        if offset == 0 {
            // A file read from its start: the next files of its directory are likely next
            // (tar, cp -r, a program loading its modules).
            if let Ok((img, i)) = &resolved {
                // A miss brings the small files that follow in the same request.
                let _ = img.read(*i, |_, extents| {
                    self.ep.fetch_with_next(extents, || img.next_files(*i, crate::endpoint::FETCH_NEXT_FILES, crate::materialise::MIN_SIZE))
                });
                // Big files are read from their plain copies when they have one: decoding
                // their objects ahead would read the disk for nothing.
                let below = if self.materialiser.is_some() { crate::materialise::MIN_SIZE } else { u64::MAX };
                self.ep.decode_ahead(&img.next_files(*i, crate::endpoint::DECODE_AHEAD, below));
            }
        }
        let open = self.files.lock().unwrap().get(&fh.0).cloned();
        // With a writable layer: a local file's handle, or (no handle known, after a restart)
        // the local file at the inode's path. A file opened from the image before it was
        // copied up keeps reading the image's version, as in overlayfs.
        if let (None, Some(w)) = (&open, self.w()) {
            match self.upper_file(w, ino, fh, false) {
                Ok(Some(f)) => {
                    let mut buf = vec![0u8; size as usize];
                    return match read_full(&f.file, &mut buf, offset) {
                        Ok(n) => reply.data(&buf[..n]),
                        Err(e) => reply.error(Errno::from(e)),
                    };
                }
                Ok(None) => {}
                Err(e) => return reply.error(e),
            }
        }
        let result = match open {
            Some(file) => self.read_file(ino.0, file.size, &file.extents, offset, size),
            // No open (or a kernel that kept no handle): the inode names file and generation.
            None => match resolved.and_then(|(img, i)| {
                img.read(i, |file_size, extents| self.read_file(ino.0, file_size, extents, offset, size)).map_err(|e| errno(&e))
            }) {
                Ok(Some(r)) => r,
                Ok(None) => return reply.error(Errno::EINVAL),
                Err(e) => return reply.error(e),
            },
        };
        match result {
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
        if let Some(u) = self.uppers.lock().unwrap().remove(&fh.0) {
            reply.ok();
            if let Some(w) = self.w() {
                if let Some(rel) = &u.writing {
                    w.opened(rel, -1);
                }
                if let Ok(n) = self.node(w, _ino) {
                    w.changed(&n.rel);
                }
            }
            return;
        }
        let file = self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
        if let Some(f) = file {
            if let Some(mode) = f.mode {
                self.close_mode(f.ino, mode);
            }
            if f.mode != Some(Mode::Passthrough) {
                if let Some(m) = &self.materialiser {
                    m.offer(f.size, &f.extents);
                }
            }
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open.load(Ordering::Relaxed) {
            // Without OPENDIR the kernel caches listings (FOPEN_CACHE_DIR) by default.
            return reply.error(Errno::ENOSYS);
        }
        // Listings change only through this mount (the root's at a switch, a writable
        // layer's when it is restored or reset, each invalidated then): the kernel keeps them
        // in its page cache across opens.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE);
    }

    /// A listing with each entry's attributes, so that a walk (find, tar, a package manager)
    /// does not send a LOOKUP per name: half the requests of a tree walk after the kernel
    /// dropped its caches. Directories and a writable layer's entries are listed without
    /// (node id 0): the kernel looks them up itself when it needs them.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let (entries, img): (Vec<(u64, FileType, Vec<u8>, Option<FileAttr>)>, _) = match self.w() {
            Some(w) => match self.w_entries(w, ino) {
                Ok(e) => (e.into_iter().map(|(name, (i, kind))| (i, kind, name, None)).collect(), None),
                Err(e) => return reply.error(e),
            },
            None => {
                let (img, i) = match self.resolve(ino) {
                    Ok(x) => x,
                    Err(e) => return reply.error(e),
                };
                let mount_root = self.ep.current().root_ino();
                match img.readdir_attrs(&*self.ep, i) {
                    Ok(e) => {
                        let e = e
                            .into_iter()
                            .map(|(e, a)| {
                                let i = if e.ino == mount_root { ROOT } else { e.ino };
                                (i, file_type(e.kind), e.name, a.filter(|_| i != ROOT).map(|a| self.to_kernel(&img, a)))
                            })
                            .collect();
                        (e, Some(img))
                    }
                    Err(e) => return reply.error(errno(&e)),
                }
            }
        };
        let unlinked = |kind: FileType| FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let mut next = offset;
        while next < 2 {
            // The kernel never links "." and "..".
            let name = if next == 0 { "." } else { ".." };
            if reply.add(ino, next + 1, name, &TTL, &unlinked(FileType::Directory), Generation(0)) {
                return reply.ok();
            }
            next += 1;
        }
        // The kernel holds a lookup of every entry listed with a node id until FORGET.
        let mut linked = 0;
        for (k, (i, kind, name, attr)) in entries.iter().enumerate().skip((next - 2) as usize) {
            let attr = attr.unwrap_or_else(|| unlinked(*kind));
            if reply.add(INodeNo(*i), k as u64 + 3, OsStr::from_bytes(name), &TTL, &attr, Generation(0)) {
                break;
            }
            linked += (attr.ino.0 != 0) as i64;
        }
        if let Some(img) = img.filter(|_| linked > 0) {
            img.kernel_refs_add(linked);
        }
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries: Vec<(u64, FileType, Vec<u8>)> = match self.w() {
            Some(w) => match self.w_entries(w, ino) {
                Ok(e) => e.into_iter().map(|(name, (i, kind))| (i, kind, name)).collect(),
                Err(e) => return reply.error(e),
            },
            None => {
                let (img, i) = match self.resolve(ino) {
                    Ok(x) => x,
                    Err(e) => return reply.error(e),
                };
                let mount_root = self.ep.current().root_ino();
                match img.readdir(&*self.ep, i) {
                    Ok(e) => e.into_iter().map(|e| (if e.ino == mount_root { ROOT } else { e.ino }, file_type(e.kind), e.name)).collect(),
                    Err(e) => return reply.error(errno(&e)),
                }
            }
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
        for (k, (i, kind, name)) in entries.iter().enumerate().skip((next - 2) as usize) {
            if reply.add(INodeNo(*i), k as u64 + 3, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let xattrs = match self.xattrs(ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match xattrs.iter().find(|x| x.0 == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some(x) if size == 0 => reply.size(x.1.len() as u32),
            Some(x) if x.1.len() > size as usize => reply.error(Errno::ERANGE),
            Some(x) => reply.data(&x.1),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let xattrs = match self.xattrs(ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut list = Vec::new();
        for x in &xattrs {
            list.extend_from_slice(&x.0);
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
        if let Some(v) = self.w().and_then(|w| self.w_statfs(w)) {
            return reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                v.block_size() as u32,
                255,
                v.fragment_size() as u32,
            );
        }
        let stats = self.ep.current().manifest().stats;
        let blocks = stats.bytes.div_ceil(4096);
        reply.statfs(blocks, 0, 0, stats.files + stats.directories + stats.symlinks + stats.other, 0, 4096, 255, 4096);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        match self.w_setattr(w, ino, mode, (uid, gid), size, mtime, atime) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        let made = self.w_make(w, parent, name, Some((req.uid(), req.gid())), Some(mode & !umask & 0o7777), |tmp| {
            let c = std::ffi::CString::new(tmp.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: a NUL-terminated path in the layer's work directory.
            match unsafe { libc::mknod(c.as_ptr(), (mode & libc::S_IFMT) | 0o600, rdev as libc::dev_t) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        self.w_entry(made, reply)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        let made = self.w_make(w, parent, name, Some((req.uid(), req.gid())), Some(mode & !umask & 0o7777), |tmp| {
            std::fs::DirBuilder::new().mode(0o700).create(tmp)
        });
        self.w_entry(made, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: fuser::ReplyEmpty) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        match self.w_remove(w, parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: fuser::ReplyEmpty) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        match self.w_remove(w, parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &std::path::Path, reply: ReplyEntry) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        let made = self.w_make(w, parent, link_name, Some((req.uid(), req.gid())), None, |tmp| std::os::unix::fs::symlink(target, tmp));
        self.w_entry(made, reply)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: fuser::ReplyEmpty,
    ) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        match self.w_rename(w, parent, name, newparent, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        let made = self.w_link(w, ino, newparent, newname);
        self.w_entry(made, reply)
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: fuser::ReplyCreate) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        self.w_create(w, parent, name, mode & !umask, (req.uid(), req.gid()), flags, reply)
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let Some(w) = self.w() else { return reply.error(Errno::EROFS) };
        match self.upper_file(w, ino, fh, true) {
            Ok(Some(f)) => match std::os::unix::fs::FileExt::write_all_at(&f.file, data, offset) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(Errno::from(e)),
            },
            Ok(None) => reply.error(Errno::EBADF),
            Err(e) => reply.error(e),
        }
    }

    // No `flush`: fuser answers ENOSYS, and the kernel stops sending it, so a close costs no
    // round trip (writes of a writable layer reach the local file when they are made).

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: fuser::ReplyEmpty) {
        let f = self.uppers.lock().unwrap().get(&fh.0).cloned();
        match f.map(|f| if datasync { f.file.sync_data() } else { f.file.sync_all() }) {
            Some(Err(e)) => reply.error(Errno::from(e)),
            _ => reply.ok(),
        }
    }
}
