//! Tree objects: one per directory, entries sorted by name, carrying all POSIX metadata.
//!
//! A tree names its subdirectories by digest, so a root digest fixes the whole image (a Merkle
//! tree). The byte layout is in `docs/format.md`; `encode` is the only way a tree becomes bytes,
//! so identical directories always give identical digests.

use crate::codec::{DecodeError, Reader, Writer};
use crate::Digest;

const MAGIC: &str = "IMGT";
const VERSION: u8 = 1;

/// Longest entry name, as on Linux.
pub const MAX_NAME: usize = 255;
/// Longest symlink target, as on Linux (PATH_MAX - 1).
pub const MAX_SYMLINK: usize = 4095;
/// Largest extended attribute value, as on Linux.
pub const MAX_XATTR_VALUE: usize = 65536;
/// Most entries one directory may hold.
pub const MAX_ENTRIES: usize = 4_000_000;

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries sorted by name bytes, names unique.
    pub entries: Vec<Entry>,
}

/// One name in a directory with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name bytes: not empty, no `/` or NUL, not `.` or `..`. Need not be UTF-8.
    pub name: Vec<u8>,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Hard-link group within the image, numbered from 1 in depth-first name order; 0 = none.
    pub link_group: u32,
    /// How many entries of the image share `link_group` (1 when `link_group` is 0).
    pub link_count: u32,
    /// Extended attributes sorted by name, including `security.capability` and ACLs.
    pub xattrs: Vec<Xattr>,
    /// What kind of file this is, with its kind-specific payload.
    pub kind: EntryKind,
}

/// Metadata of one inode: what every entry carries besides its name and kind. The manifest
/// holds the root directory's, which has no entry of its own; importers build with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits (`mode & 0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Extended attributes sorted by name.
    pub xattrs: Vec<Xattr>,
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Full name including its namespace, e.g. `security.capability`.
    pub name: Vec<u8>,
    /// Raw value.
    pub value: Vec<u8>,
}

/// The type of an entry and what only that type carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: its logical size and the data extents; gaps between extents are holes.
    Regular {
        /// Logical size in bytes.
        size: u64,
        /// Data extents sorted by offset, not overlapping, inside `size`.
        extents: Vec<Extent>,
    },
    /// A directory and the digest of its tree object.
    Directory {
        /// Digest of the child tree.
        tree: Digest,
    },
    /// A symbolic link.
    Symlink {
        /// Target bytes, stored as read.
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// A run of file data stored as one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes; the object's uncompressed length.
    pub len: u32,
    /// The object holding these bytes.
    pub digest: Digest,
}

impl EntryKind {
    fn code(&self) -> u8 {
        match self {
            EntryKind::Regular { .. } => 1,
            EntryKind::Directory { .. } => 2,
            EntryKind::Symlink { .. } => 3,
            EntryKind::CharDevice { .. } => 4,
            EntryKind::BlockDevice { .. } => 5,
            EntryKind::Fifo => 6,
            EntryKind::Socket => 7,
        }
    }

    /// The `S_IFMT` bits for this kind.
    pub fn file_type_bits(&self) -> u32 {
        match self {
            EntryKind::Regular { .. } => 0o100000,
            EntryKind::Directory { .. } => 0o040000,
            EntryKind::Symlink { .. } => 0o120000,
            EntryKind::CharDevice { .. } => 0o020000,
            EntryKind::BlockDevice { .. } => 0o060000,
            EntryKind::Fifo => 0o010000,
            EntryKind::Socket => 0o140000,
        }
    }

    /// A one-letter label as `ls -l` prints it.
    pub fn letter(&self) -> char {
        match self {
            EntryKind::Regular { .. } => '-',
            EntryKind::Directory { .. } => 'd',
            EntryKind::Symlink { .. } => 'l',
            EntryKind::CharDevice { .. } => 'c',
            EntryKind::BlockDevice { .. } => 'b',
            EntryKind::Fifo => 'p',
            EntryKind::Socket => 's',
        }
    }
}

impl Entry {
    /// The size `stat` reports: file size, symlink target length, 0 otherwise.
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::Regular { size, .. } => *size,
            EntryKind::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }

    /// The full `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.file_type_bits() | u32::from(self.mode)
    }
}

/// Checks that `name` may be an entry name.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("name length {} outside 1..={MAX_NAME}", name.len()));
    }
    if name == b"." || name == b".." {
        return Err("name is . or ..".into());
    }
    if name.iter().any(|&b| b == b'/' || b == 0) {
        return Err("name contains / or NUL".into());
    }
    Ok(())
}

impl Tree {
    /// Sorts entries and xattrs into canonical order. Call before `encode` when building.
    pub fn canonicalize(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in &mut self.entries {
            entry.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// Looks up an entry by name (binary search; entries are sorted).
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }

    /// The canonical bytes of this tree. Fails if the tree breaks an invariant.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        self.validate()?;
        let mut w = Writer::new();
        w.bytes(MAGIC.as_bytes());
        w.u8(VERSION);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.bytes16(&e.name);
            w.u8(e.kind.code());
            w.u16(e.mode);
            w.u32(e.uid);
            w.u32(e.gid);
            w.i64(e.mtime_sec);
            w.u32(e.mtime_nsec);
            w.u32(e.link_group);
            if e.link_group != 0 {
                w.u32(e.link_count);
            }
            write_xattrs(&mut w, &e.xattrs);
            match &e.kind {
                EntryKind::Regular { size, extents } => {
                    w.u64(*size);
                    w.u32(extents.len() as u32);
                    for x in extents {
                        w.u64(x.offset);
                        w.u32(x.len);
                        w.digest(&x.digest);
                    }
                }
                EntryKind::Directory { tree } => w.digest(tree),
                EntryKind::Symlink { target } => w.bytes16(target),
                EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                    w.u32(*major);
                    w.u32(*minor);
                }
                EntryKind::Fifo | EntryKind::Socket => {}
            }
        }
        Ok(w.buf)
    }

    /// Parses and validates a tree object.
    pub fn decode(bytes: &[u8]) -> Result<Tree, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let version = r.u8("tree version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "tree", version });
        }
        let count = r.u32("entry count")? as usize;
        // Every entry takes at least 34 bytes, so a count the input cannot hold is rejected
        // before anything is allocated for it.
        if count > MAX_ENTRIES || count > r.remaining() / 34 {
            return Err(DecodeError::Invalid { what: "entry count", why: format!("{count} entries cannot fit") });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.bytes16("entry name")?.to_vec();
            let code = r.u8("entry kind")?;
            let mode = r.u16("mode")?;
            let uid = r.u32("uid")?;
            let gid = r.u32("gid")?;
            let mtime_sec = r.i64("mtime")?;
            let mtime_nsec = r.u32("mtime nsec")?;
            let link_group = r.u32("link group")?;
            let link_count = if link_group != 0 { r.u32("link count")? } else { 1 };
            let xattrs = read_xattrs(&mut r)?;
            let kind = match code {
                1 => {
                    let size = r.u64("file size")?;
                    let n = r.u32("extent count")? as usize;
                    if n > r.remaining() / 44 {
                        return Err(DecodeError::Invalid { what: "extent count", why: format!("{n} extents cannot fit") });
                    }
                    let mut extents = Vec::with_capacity(n);
                    for _ in 0..n {
                        let offset = r.u64("extent offset")?;
                        let len = r.u32("extent length")?;
                        let digest = r.digest("extent digest")?;
                        extents.push(Extent { offset, len, digest });
                    }
                    EntryKind::Regular { size, extents }
                }
                2 => EntryKind::Directory { tree: r.digest("tree digest")? },
                3 => EntryKind::Symlink { target: r.bytes16("symlink target")?.to_vec() },
                4 => EntryKind::CharDevice { major: r.u32("major")?, minor: r.u32("minor")? },
                5 => EntryKind::BlockDevice { major: r.u32("major")?, minor: r.u32("minor")? },
                6 => EntryKind::Fifo,
                7 => EntryKind::Socket,
                other => return Err(DecodeError::Invalid { what: "entry kind", why: format!("unknown code {other}") }),
            };
            entries.push(Entry { name, mode, uid, gid, mtime_sec, mtime_nsec, link_group, link_count, xattrs, kind });
        }
        r.finish()?;
        let tree = Tree { entries };
        tree.validate()?;
        Ok(tree)
    }

    /// Checks every invariant `decode` relies on: sorted unique names, valid names, sorted
    /// xattrs, extents in order and inside the file, bounded lengths.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |what: &'static str, why: String| DecodeError::Invalid { what, why };
        if self.entries.len() > MAX_ENTRIES {
            return Err(invalid("entry count", format!("{} > {MAX_ENTRIES}", self.entries.len())));
        }
        for (i, e) in self.entries.iter().enumerate() {
            check_name(&e.name).map_err(|why| invalid("entry name", why))?;
            if i > 0 && self.entries[i - 1].name >= e.name {
                return Err(invalid("entry order", format!("{:?} not after previous", String::from_utf8_lossy(&e.name))));
            }
            if e.mode & !0o7777 != 0 {
                return Err(invalid("mode", format!("{:o} has type bits", e.mode)));
            }
            if e.mtime_nsec >= 1_000_000_000 {
                return Err(invalid("mtime nsec", e.mtime_nsec.to_string()));
            }
            if e.link_group != 0 && e.link_count < 2 {
                return Err(invalid("link count", format!("{} for a hard-link group", e.link_count)));
            }
            validate_xattrs(&e.xattrs)?;
            match &e.kind {
                EntryKind::Regular { size, extents } => {
                    let mut end = 0u64;
                    for x in extents {
                        if x.len == 0 || x.offset < end {
                            return Err(invalid("extent", format!("offset {} len {} overlaps or is empty", x.offset, x.len)));
                        }
                        end = x.offset.checked_add(u64::from(x.len)).ok_or_else(|| invalid("extent", "overflow".into()))?;
                    }
                    if end > *size {
                        return Err(invalid("extent", format!("ends at {end} past size {size}")));
                    }
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.len() > MAX_SYMLINK || target.contains(&0) {
                        return Err(invalid("symlink target", format!("{} bytes", target.len())));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

pub(crate) fn write_xattrs(w: &mut Writer, xattrs: &[Xattr]) {
    w.u16(xattrs.len() as u16);
    for x in xattrs {
        w.bytes16(&x.name);
        w.bytes32(&x.value);
    }
}

pub(crate) fn read_xattrs(r: &mut Reader<'_>) -> Result<Vec<Xattr>, DecodeError> {
    let count = r.u16("xattr count")? as usize;
    let mut xattrs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = r.bytes16("xattr name")?.to_vec();
        let value = r.bytes32("xattr value", MAX_XATTR_VALUE)?.to_vec();
        xattrs.push(Xattr { name, value });
    }
    Ok(xattrs)
}

pub(crate) fn validate_xattrs(xattrs: &[Xattr]) -> Result<(), DecodeError> {
    let invalid = |what: &'static str, why: String| DecodeError::Invalid { what, why };
    if xattrs.len() > u16::MAX as usize {
        return Err(invalid("xattr count", xattrs.len().to_string()));
    }
    for (j, x) in xattrs.iter().enumerate() {
        if x.name.is_empty() || x.name.len() > MAX_NAME || x.name.contains(&0) {
            return Err(invalid("xattr name", String::from_utf8_lossy(&x.name).into_owned()));
        }
        if x.value.len() > MAX_XATTR_VALUE {
            return Err(invalid("xattr value", format!("{} bytes", x.value.len())));
        }
        if j > 0 && xattrs[j - 1].name >= x.name {
            return Err(invalid("xattr order", String::from_utf8_lossy(&x.name).into_owned()));
        }
    }
    Ok(())
}
