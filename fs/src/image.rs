//! One generation seen as a filesystem: inode numbers, attributes, directory listings, link
//! targets, xattrs and file extents, built lazily from the generation's tree objects.
//!
//! Inode numbers carry the generation's slot in their high bits (`slot << SLOT_SHIFT`), so
//! inodes of two generations never collide and a switch never changes what an existing inode
//! means. Within a generation, local number 1 is the root, the entries of a directory get
//! consecutive numbers when its tree is first read, and every entry of a hard-link group
//! shares one number derived from the group.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use format::{Digest, Entry, EntryKind, Extent, Manifest, Meta, Tree, Xattr};

/// Bits below the slot.
pub const SLOT_SHIFT: u32 = 40;
/// Local numbers with this bit name a hard-link group.
const LINK_BIT: u64 = 1 << 39;
/// Local number of a generation's root directory.
const ROOT_LOCAL: u64 = 1;

/// Where trees come from: the local store, fetching what it lacks.
pub trait Trees: Send + Sync {
    /// The tree object `digest`, verified.
    fn tree(&self, digest: &Digest) -> Result<Arc<Tree>, ImageError>;
}

/// Why an inode could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No such inode (a stale number, or a generation no longer loaded).
    #[error("no inode {0:#x}")]
    NoInode(u64),
    /// A tree object could not be had: missing everywhere, corrupt, unreachable.
    #[error("tree {digest} unavailable: {why}")]
    TreeUnavailable {
        /// The tree.
        digest: Digest,
        /// Why.
        why: String,
    },
    /// The inode is not a directory.
    #[error("inode {0:#x} is not a directory")]
    NotADirectory(u64),
}

/// File type, as stat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// What stat reports for an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (symlinks: target length).
    pub size: u64,
    /// 512-byte blocks holding data (holes excluded).
    pub blocks: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Nanoseconds part.
    pub mtime_nsec: u32,
    /// Device number in the kernel's encoding, for devices.
    pub rdev: u32,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: Kind,
    /// Name bytes.
    pub name: Vec<u8>,
}

/// An inode: the root (with the manifest's metadata) or an entry of a loaded tree.
#[derive(Clone)]
enum Node {
    Root,
    Entry { tree: Arc<Tree>, index: u32 },
}

struct Dir {
    tree: Arc<Tree>,
    /// Local number of the first child; child `i` is `base + i` unless hard-linked.
    base: u64,
}

#[derive(Default)]
struct Table {
    /// Node of local number `i + 1`.
    nodes: Vec<Node>,
    /// Directories whose children are numbered, by local number.
    dirs: HashMap<u64, Dir>,
    /// Hard-link group → the local number of its first entry seen.
    links: HashMap<u32, u64>,
    /// First child number of each numbered directory → that directory: a number's parent is
    /// the entry with the greatest base at or below it.
    parents: std::collections::BTreeMap<u64, u64>,
}

/// A generation loaded for serving.
pub struct Image {
    slot: u64,
    manifest_digest: Digest,
    manifest: Manifest,
    table: RwLock<Table>,
    /// Lookups of this generation's inodes the kernel has not forgotten yet.
    kernel_refs: std::sync::atomic::AtomicU64,
    /// Where the order of numbered directories is recorded, for a restart (`resume`).
    log: std::sync::OnceLock<Arc<crate::resume::SlotLog>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("slot", &self.slot).field("generation", &self.label()).finish_non_exhaustive()
    }
}

fn kind_of(k: &EntryKind) -> Kind {
    match k {
        EntryKind::Regular { .. } => Kind::File,
        EntryKind::Directory { .. } => Kind::Directory,
        EntryKind::Symlink { .. } => Kind::Symlink,
        EntryKind::CharDevice { .. } => Kind::CharDevice,
        EntryKind::BlockDevice { .. } => Kind::BlockDevice,
        EntryKind::Fifo => Kind::Fifo,
        EntryKind::Socket => Kind::Socket,
    }
}

/// The kernel's `new_encode_dev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn subdirectories(tree: &Tree) -> u32 {
    tree.entries.iter().filter(|e| matches!(e.kind, EntryKind::Directory { .. })).count() as u32
}

impl Image {
    /// A generation to serve under `slot` (1 ..= 2^23). Nothing is read until asked.
    pub fn new(slot: u64, manifest_digest: Digest, manifest: Manifest) -> Image {
        assert!(slot > 0 && slot < 1 << 23, "slot {slot} out of range");
        Image {
            slot,
            manifest_digest,
            manifest,
            table: RwLock::new(Table { nodes: vec![Node::Root], ..Table::default() }),
            kernel_refs: Default::default(),
            log: Default::default(),
        }
    }

    /// Records from now on every directory numbered in `log`.
    pub fn set_log(&self, log: Arc<crate::resume::SlotLog>) {
        let _ = self.log.set(log);
    }

    /// Numbers directories in the order a previous process did (its slot log), so that
    /// every inode number it gave means the same again. Directories whose trees cannot be
    /// had stop the replay: the numbers after them would differ.
    pub fn replay(&self, trees: &dyn Trees, dirs: &[u64]) -> Result<(), ImageError> {
        for &local in dirs {
            self.dir(trees, local)?;
        }
        Ok(())
    }

    /// Counts this generation as known to the kernel until the mount ends (a restarted
    /// process does not know how many lookups the kernel holds).
    pub fn pin_for_kernel(&self) {
        self.kernel_refs.store(u64::MAX / 2, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a lookup the kernel now holds (an entry reply for one of this generation's
    /// inodes), or with a negative `n` the ones it forgot.
    pub fn kernel_refs_add(&self, n: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        if n >= 0 {
            self.kernel_refs.fetch_add(n as u64, Relaxed);
        } else {
            let _ = self.kernel_refs.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n.unsigned_abs())));
        }
    }

    /// Whether the kernel may still ask about this generation's inodes.
    pub fn known_to_kernel(&self) -> bool {
        self.kernel_refs.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// `IMAGE@N`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.manifest.image, self.manifest.generation)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's digest.
    pub fn manifest_digest(&self) -> Digest {
        self.manifest_digest
    }

    /// The slot this generation's inode numbers carry.
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// The slot an inode number belongs to (0 for the mount's root, inode 1).
    pub fn slot_of(ino: u64) -> u64 {
        ino >> SLOT_SHIFT
    }

    /// The inode number of this generation's root directory.
    pub fn root_ino(&self) -> u64 {
        self.ino(ROOT_LOCAL)
    }

    fn ino(&self, local: u64) -> u64 {
        (self.slot << SLOT_SHIFT) | local
    }

    fn local(&self, ino: u64) -> Result<u64, ImageError> {
        if ino >> SLOT_SHIFT != self.slot {
            return Err(ImageError::NoInode(ino));
        }
        Ok(ino & ((1 << SLOT_SHIFT) - 1))
    }

    fn node(&self, local: u64) -> Result<Node, ImageError> {
        let t = self.table.read().unwrap();
        let index = if local & LINK_BIT != 0 {
            let group = (local & !LINK_BIT) as u32;
            *t.links.get(&group).ok_or(ImageError::NoInode(self.ino(local)))?
        } else {
            local
        };
        t.nodes.get(index as usize - 1).cloned().ok_or(ImageError::NoInode(self.ino(local)))
    }

    /// The tree of directory `local`, numbering its children on first use.
    fn dir(&self, trees: &dyn Trees, local: u64) -> Result<(Arc<Tree>, u64), ImageError> {
        if let Some(d) = self.table.read().unwrap().dirs.get(&local) {
            return Ok((d.tree.clone(), d.base));
        }
        let digest = match self.node(local)? {
            Node::Root => self.manifest.root,
            Node::Entry { tree, index } => match &tree.entries[index as usize].kind {
                EntryKind::Directory { tree } => *tree,
                _ => return Err(ImageError::NotADirectory(self.ino(local))),
            },
        };
        let tree = trees.tree(&digest)?;
        let mut t = self.table.write().unwrap();
        if let Some(d) = t.dirs.get(&local) {
            return Ok((d.tree.clone(), d.base));
        }
        let base = t.nodes.len() as u64 + 1;
        for (i, e) in tree.entries.iter().enumerate() {
            t.nodes.push(Node::Entry { tree: tree.clone(), index: i as u32 });
            if e.link_group != 0 {
                let me = base + i as u64;
                t.links.entry(e.link_group).or_insert(me);
            }
        }
        t.dirs.insert(local, Dir { tree: tree.clone(), base });
        if !tree.entries.is_empty() {
            t.parents.insert(base, local);
        }
        if let Some(log) = self.log.get() {
            // Under the table's lock: the log's order is the numbering order.
            log.append(local);
        }
        Ok((tree, base))
    }

    fn child_ino(&self, base: u64, i: usize, e: &Entry) -> u64 {
        if e.link_group != 0 {
            self.ino(LINK_BIT | e.link_group as u64)
        } else {
            self.ino(base + i as u64)
        }
    }

    /// Looks `name` up in directory `parent`; `None` if absent.
    pub fn lookup(&self, trees: &dyn Trees, parent: u64, name: &[u8]) -> Result<Option<Attr>, ImageError> {
        let local = self.local(parent)?;
        let (tree, base) = self.dir(trees, local)?;
        let Ok(i) = tree.entries.binary_search_by(|e| e.name.as_slice().cmp(name)) else { return Ok(None) };
        let e = &tree.entries[i];
        Ok(Some(self.entry_attr(trees, self.child_ino(base, i, e), e)?))
    }

    /// The attributes of an inode.
    pub fn attr(&self, trees: &dyn Trees, ino: u64) -> Result<Attr, ImageError> {
        let local = self.local(ino)?;
        match self.node(local)? {
            Node::Root => {
                let (tree, _) = self.dir(trees, local)?;
                Ok(self.meta_attr(ino, &self.manifest.root_meta, 2 + subdirectories(&tree)))
            }
            Node::Entry { tree, index } => self.entry_attr(trees, ino, &tree.entries[index as usize]),
        }
    }

    fn meta_attr(&self, ino: u64, m: &Meta, nlink: u32) -> Attr {
        Attr {
            ino,
            kind: Kind::Directory,
            perm: m.mode & 0o7777,
            nlink,
            uid: m.uid,
            gid: m.gid,
            size: 4096,
            blocks: 8,
            mtime_sec: m.mtime_sec,
            mtime_nsec: m.mtime_nsec,
            rdev: 0,
        }
    }

    fn entry_attr(&self, trees: &dyn Trees, ino: u64, e: &Entry) -> Result<Attr, ImageError> {
        let (mut size, mut blocks, mut rdev, mut nlink) = (0, 0, 0, e.link_count.max(1));
        match &e.kind {
            EntryKind::Regular { size: s, extents } => {
                size = *s;
                blocks = extents.iter().map(|x| (x.len as u64).div_ceil(512)).sum();
            }
            EntryKind::Directory { .. } => {
                let (tree, _) = self.dir(trees, self.local(ino)?)?;
                nlink = 2 + subdirectories(&tree);
                size = 4096;
                blocks = 8;
            }
            EntryKind::Symlink { target } => size = target.len() as u64,
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => rdev = encode_dev(*major, *minor),
            EntryKind::Fifo | EntryKind::Socket => {}
        }
        Ok(Attr {
            ino,
            kind: kind_of(&e.kind),
            perm: e.mode & 0o7777,
            nlink,
            uid: e.uid,
            gid: e.gid,
            size,
            blocks,
            mtime_sec: e.mtime_sec,
            mtime_nsec: e.mtime_nsec,
            rdev,
        })
    }

    /// The entries of directory `ino` in name order (without `.` and `..`).
    pub fn readdir(&self, trees: &dyn Trees, ino: u64) -> Result<Vec<DirEntry>, ImageError> {
        let (tree, base) = self.dir(trees, self.local(ino)?)?;
        Ok(tree
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| DirEntry { ino: self.child_ino(base, i, e), kind: kind_of(&e.kind), name: e.name.clone() })
            .collect())
    }

    /// The entries of directory `ino` as `readdir` lists them, each with its attributes
    /// except a directory's: those would take every subdirectory's tree (its link count), so
    /// a listing with attributes leaves directories to LOOKUP.
    pub fn readdir_attrs(&self, trees: &dyn Trees, ino: u64) -> Result<Vec<(DirEntry, Option<Attr>)>, ImageError> {
        let (tree, base) = self.dir(trees, self.local(ino)?)?;
        let mut out = Vec::with_capacity(tree.entries.len());
        for (i, e) in tree.entries.iter().enumerate() {
            let ino = self.child_ino(base, i, e);
            let attr = match e.kind {
                EntryKind::Directory { .. } => None,
                _ => Some(self.entry_attr(trees, ino, e)?),
            };
            out.push((DirEntry { ino, kind: kind_of(&e.kind), name: e.name.clone() }, attr));
        }
        Ok(out)
    }

    /// The entry behind an inode (`None` for the root).
    fn entry(&self, ino: u64) -> Result<Option<(Arc<Tree>, u32)>, ImageError> {
        match self.node(self.local(ino)?)? {
            Node::Root => Ok(None),
            Node::Entry { tree, index } => Ok(Some((tree, index))),
        }
    }

    /// A symlink's target; `None` if the inode is not a symlink.
    pub fn readlink(&self, ino: u64) -> Result<Option<Vec<u8>>, ImageError> {
        Ok(self.entry(ino)?.and_then(|(t, i)| match &t.entries[i as usize].kind {
            EntryKind::Symlink { target } => Some(target.clone()),
            _ => None,
        }))
    }

    /// Extended attributes.
    pub fn xattrs(&self, ino: u64) -> Result<Vec<Xattr>, ImageError> {
        Ok(match self.entry(ino)? {
            None => self.manifest.root_meta.xattrs.clone(),
            Some((t, i)) => t.entries[i as usize].xattrs.clone(),
        })
    }

    /// A regular file's size and extents; `None` if the inode is not a regular file.
    pub fn file(&self, ino: u64) -> Result<Option<(u64, Vec<Extent>)>, ImageError> {
        self.read(ino, |size, extents| (size, extents.to_vec()))
    }

    /// Calls `f` with a regular file's size and extents (borrowed: no copy per read); `None`
    /// if the inode is not a regular file.
    pub fn read<R>(&self, ino: u64, f: impl FnOnce(u64, &[Extent]) -> R) -> Result<Option<R>, ImageError> {
        Ok(match self.entry(ino)? {
            Some((t, i)) => match &t.entries[i as usize].kind {
                EntryKind::Regular { size, extents } => Some(f(*size, extents)),
                _ => None,
            },
            None => None,
        })
    }

    /// The path of `ino` from the generation's root (names joined by `/`, empty for the root;
    /// a hard link by the name it was first seen under); `None` for a number not given.
    pub fn path_of(&self, ino: u64) -> Option<Vec<u8>> {
        let mut local = self.local(ino).ok()?;
        let t = self.table.read().unwrap();
        if local & LINK_BIT != 0 {
            local = *t.links.get(&((local & !LINK_BIT) as u32))?;
        }
        let mut names: Vec<&[u8]> = Vec::new();
        while local != ROOT_LOCAL {
            let (&base, &parent) = t.parents.range(..=local).next_back()?;
            let entry = t.dirs.get(&parent)?.tree.entries.get((local - base) as usize)?;
            names.push(&entry.name);
            local = parent;
        }
        names.reverse();
        Some(names.join(&b'/'))
    }

    /// The first chunks of the regular files smaller than `below` after `ino` in its
    /// directory, in name order (at most `n`): what a reader walking the directory reads next.
    pub fn next_files(&self, ino: u64, n: usize, below: u64) -> Vec<Digest> {
        let Ok(Some((tree, index))) = self.entry(ino) else { return Vec::new() };
        tree.entries[index as usize + 1..]
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Regular { extents, size } if *size < below => extents.first().map(|x| x.digest),
                _ => None,
            })
            .take(n)
            .collect()
    }

    /// Names of the root directory (what the kernel may have cached under the mount's root).
    pub fn root_names(&self, trees: &dyn Trees) -> Result<Vec<Vec<u8>>, ImageError> {
        let (tree, _) = self.dir(trees, ROOT_LOCAL)?;
        Ok(tree.entries.iter().map(|e| e.name.clone()).collect())
    }
}
