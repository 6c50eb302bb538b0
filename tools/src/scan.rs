//! The in-memory picture of a tree being imported, and the scan of a directory into it.
//!
//! A scan records names, metadata and where each regular file's bytes come from; the bytes are
//! read later, in parallel, by `ingest`. Hard links share one entry of `Scan::files`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use format::{Extent, Meta, Xattr};

use crate::ImportError;

/// A node of the scanned tree.
#[derive(Debug)]
pub struct Node {
    /// Its metadata (for hard links, the shared inode's).
    pub meta: Meta,
    /// Its kind.
    pub kind: NodeKind,
}

/// Kinds of node, as in `format::EntryKind` but with children held in memory.
#[derive(Debug)]
pub enum NodeKind {
    /// Children by name bytes (sorted, as the tree format wants).
    Dir(BTreeMap<Vec<u8>, Node>),
    /// Index into `Scan::files`.
    File(usize),
    /// Target bytes.
    Symlink(Vec<u8>),
    /// Character device (major, minor).
    Char(u32, u32),
    /// Block device (major, minor).
    Block(u32, u32),
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl NodeKind {
    /// The entry kind of a node that is neither a directory nor a regular file (those need
    /// their tree or contents); None for those two.
    pub fn leaf_kind(&self) -> Option<format::EntryKind> {
        use format::EntryKind;
        Some(match self {
            NodeKind::Dir(_) | NodeKind::File(_) => return None,
            NodeKind::Symlink(target) => EntryKind::Symlink { target: target.clone() },
            NodeKind::Char(major, minor) => EntryKind::CharDevice { major: *major, minor: *minor },
            NodeKind::Block(major, minor) => EntryKind::BlockDevice { major: *major, minor: *minor },
            NodeKind::Fifo => EntryKind::Fifo,
            NodeKind::Socket => EntryKind::Socket,
        })
    }
}

/// The tree entry `name` with metadata `m`, in link group `link_group` of `link_count` names.
pub fn entry(name: &[u8], m: &Meta, link_group: u32, link_count: u32, kind: format::EntryKind) -> format::Entry {
    format::Entry {
        name: name.to_vec(),
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        mtime_sec: m.mtime_sec,
        mtime_nsec: m.mtime_nsec,
        link_group,
        link_count,
        xattrs: m.xattrs.clone(),
        kind,
    }
}

/// What identifies an unchanged file between imports, as git's index does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatKey {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// mtime in nanoseconds.
    pub mtime_ns: i64,
    /// ctime in nanoseconds.
    pub ctime_ns: i64,
}

/// Where a regular file's content comes from.
#[derive(Debug)]
pub enum FileSource {
    /// To be read from disk.
    Path {
        /// Absolute path.
        path: PathBuf,
        /// Path relative to the import root, the index key.
        rel: Vec<u8>,
        /// Stat at scan time.
        key: StatKey,
    },
    /// Already stored (tar import, or an index hit).
    Ready {
        /// Logical size.
        size: u64,
        /// Stored extents.
        extents: Vec<Extent>,
    },
}

/// A scanned tree: the root directory and the table of distinct regular files.
#[derive(Debug)]
pub struct Scan {
    /// The root, always a `NodeKind::Dir`.
    pub root: Node,
    /// Distinct regular files (one per inode).
    pub files: Vec<FileSource>,
}

pub(crate) fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, ImportError> {
    let read_err = |source: io::Error| ImportError::Read { path: path.to_path_buf(), source };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name).map_err(read_err)? {
            out.push(Xattr { name: name.as_bytes().to_vec(), value });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn meta_of(md: &fs::Metadata, xattrs: Vec<Xattr>) -> Meta {
    Meta {
        mode: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs,
    }
}

fn stat_key(md: &fs::Metadata) -> StatKey {
    StatKey {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
    }
}

/// Scans the directory `src` (not following symlinks). Subdirectories are read in parallel;
/// file numbers and hard links are then assigned in one sequential pass in name order, so the
/// result does not depend on thread timing.
pub fn scan_dir(src: &Path) -> Result<Scan, ImportError> {
    let md = fs::symlink_metadata(src).map_err(|source| ImportError::Read { path: src.to_path_buf(), source })?;
    if !md.is_dir() {
        return Err(ImportError::Unsupported { path: src.to_path_buf(), what: "import source is not a directory or archive".into() });
    }
    let children = read_children(src, &[])?;
    let mut files = Vec::new();
    let mut inodes = HashMap::new();
    let children = number_files(children, &mut files, &mut inodes);
    let root = Node { meta: meta_of(&md, read_xattrs(src)?), kind: NodeKind::Dir(children) };
    Ok(Scan { root, files })
}

/// A node as read from disk, before file numbering.
struct Raw {
    meta: Meta,
    kind: RawKind,
}

enum RawKind {
    Dir(BTreeMap<Vec<u8>, Raw>),
    File { path: PathBuf, rel: Vec<u8>, md: fs::Metadata },
    Other(NodeKind),
}

fn read_children(dir: &Path, rel: &[u8]) -> Result<BTreeMap<Vec<u8>, Raw>, ImportError> {
    use rayon::prelude::*;
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Read { path, source }
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        entries.push(entry.file_name().as_bytes().to_vec());
    }
    let nodes: Vec<Result<(Vec<u8>, Raw), ImportError>> = entries
        .into_par_iter()
        .map(|name| {
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let md = fs::symlink_metadata(&path).map_err(read_err(&path))?;
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let meta = meta_of(&md, read_xattrs(&path)?);
            let kind = if ft.is_dir() {
                RawKind::Dir(read_children(&path, &child_rel)?)
            } else if ft.is_file() {
                RawKind::File { path, rel: child_rel, md }
            } else if ft.is_symlink() {
                RawKind::Other(NodeKind::Symlink(fs::read_link(&path).map_err(read_err(&path))?.as_os_str().as_bytes().to_vec()))
            } else if ft.is_char_device() {
                RawKind::Other(NodeKind::Char(libc::major(md.rdev()), libc::minor(md.rdev())))
            } else if ft.is_block_device() {
                RawKind::Other(NodeKind::Block(libc::major(md.rdev()), libc::minor(md.rdev())))
            } else if ft.is_fifo() {
                RawKind::Other(NodeKind::Fifo)
            } else if ft.is_socket() {
                RawKind::Other(NodeKind::Socket)
            } else {
                return Err(ImportError::Unsupported { path, what: "unknown file type".into() });
            };
            Ok((name, Raw { meta, kind }))
        })
        .collect();
    nodes.into_iter().collect()
}

/// Turns raw nodes into nodes, numbering regular files in depth-first name order; names of
/// one inode (hard links) share a number.
fn number_files(
    children: BTreeMap<Vec<u8>, Raw>,
    files: &mut Vec<FileSource>,
    inodes: &mut HashMap<(u64, u64), usize>,
) -> BTreeMap<Vec<u8>, Node> {
    children
        .into_iter()
        .map(|(name, raw)| {
            let kind = match raw.kind {
                RawKind::Dir(c) => NodeKind::Dir(number_files(c, files, inodes)),
                RawKind::File { path, rel, md } => {
                    let inode = (md.dev(), md.ino());
                    let known = if md.nlink() > 1 { inodes.get(&inode).copied() } else { None };
                    NodeKind::File(known.unwrap_or_else(|| {
                        files.push(FileSource::Path { path, rel, key: stat_key(&md) });
                        if md.nlink() > 1 {
                            inodes.insert(inode, files.len() - 1);
                        }
                        files.len() - 1
                    }))
                }
                RawKind::Other(kind) => kind,
            };
            (name, Node { meta: raw.meta, kind })
        })
        .collect()
}
