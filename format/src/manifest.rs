//! Generation manifests: which image, which generation, which root tree, and how it was made.
//!
//! A manifest is itself an object, named by the digest of its encoding. The trust layer signs
//! manifests as TUF targets (digest and length in targets metadata), so a manifest carries no
//! signature of its own; `extensions` leaves room for fields later versions add.

use crate::codec::{DecodeError, Reader, Writer};
use crate::tree::{read_xattrs, validate_xattrs, write_xattrs, Meta};
use crate::{ChunkParams, Digest, ImageName};

const MAGIC: &str = "IMGM";
const VERSION: u8 = 1;
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_EXTENSION: usize = 1024 * 1024;

/// One generation of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Image (family) name.
    pub image: ImageName,
    /// Generation number, 1 for the first import, parent + 1 after.
    pub generation: u64,
    /// Digest of the root tree object.
    pub root: Digest,
    /// Metadata of the root directory itself.
    pub root_meta: Meta,
    /// Digest of the parent generation's manifest, if any.
    pub parent: Option<Digest>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Free text from the engineer.
    pub message: String,
    /// The chunking parameters used, so the next import of this image chunks alike.
    pub chunking: ChunkParams,
    /// Counts taken at import.
    pub stats: Stats,
    /// Named extension fields sorted by key; unknown keys are kept and ignored.
    pub extensions: Vec<(String, Vec<u8>)>,
}

/// Counts taken at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    /// Regular files (hard links counted once per name).
    pub files: u64,
    /// Directories, including the root.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub other: u64,
    /// Sum of regular file sizes (logical, holes included).
    pub bytes: u64,
    /// Distinct objects the generation references (data and trees).
    pub objects: u64,
    /// Objects that were new to the store at import.
    pub new_objects: u64,
    /// Uncompressed bytes of the new objects.
    pub new_bytes: u64,
}

/// Extension key whose value is the 32-byte digest of the image's zstd dictionary.
pub const DICT_EXTENSION: &str = "zstd.dict";

impl Manifest {
    /// The zstd dictionary this generation's small files were compressed with, if any.
    pub fn dictionary(&self) -> Option<Digest> {
        let (_, value) = self.extensions.iter().find(|(k, _)| k == DICT_EXTENSION)?;
        Some(Digest(value.as_slice().try_into().ok()?))
    }

    /// Objects the generation carries besides its trees and file data: the zstd dictionary, a
    /// patch's log and the package list. A server holds them before it accepts the manifest, and keeps them with it.
    pub fn side_objects(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.dictionary().into_iter().collect();
        if let Some(Ok(p)) = self.patch() {
            out.push(p.log);
        }
        out.extend(self.packages());
        out
    }

    /// The object listing the generation's installed Debian packages, if it has any.
    pub fn packages(&self) -> Option<Digest> {
        let value = self.extension(crate::packages::PACKAGES_EXTENSION)?;
        Some(Digest(value.try_into().ok()?))
    }

    /// The change record, if the generation carries one (every import and patch since format
    /// version log entry 7 does). An undecodable record is an error, not an absent one.
    pub fn change(&self) -> Option<Result<crate::ChangeRecord, DecodeError>> {
        self.extension(crate::change::CHANGE_EXTENSION).map(crate::ChangeRecord::decode)
    }

    /// The patch record, for generations made by `imgctl patch`.
    pub fn patch(&self) -> Option<Result<crate::PatchRecord, DecodeError>> {
        self.extension(crate::change::PATCH_EXTENSION).map(crate::PatchRecord::decode)
    }

    /// The value of extension `key`.
    pub fn extension(&self, key: &str) -> Option<&[u8]> {
        self.extensions.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// Sets extension `key`, replacing an earlier value.
    pub fn set_extension(&mut self, key: &str, value: Vec<u8>) {
        self.extensions.retain(|(k, _)| k != key);
        self.extensions.push((key.to_string(), value));
        self.extensions.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The canonical bytes. Xattrs of the root must already be sorted (`Tree::canonicalize` order).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(MAGIC.as_bytes());
        w.u8(VERSION);
        w.bytes16(self.image.as_str().as_bytes());
        w.u64(self.generation);
        w.digest(&self.root);
        let m = &self.root_meta;
        w.u16(m.mode);
        w.u32(m.uid);
        w.u32(m.gid);
        w.i64(m.mtime_sec);
        w.u32(m.mtime_nsec);
        write_xattrs(&mut w, &m.xattrs);
        match &self.parent {
            Some(p) => {
                w.u8(1);
                w.digest(p);
            }
            None => w.u8(0),
        }
        w.i64(self.created);
        w.bytes32(self.message.as_bytes());
        w.u32(self.chunking.min);
        w.u32(self.chunking.avg);
        w.u32(self.chunking.max);
        let s = &self.stats;
        for v in [s.files, s.directories, s.symlinks, s.other, s.bytes, s.objects, s.new_objects, s.new_bytes] {
            w.u64(v);
        }
        let mut ext: Vec<_> = self.extensions.iter().collect();
        ext.sort_by(|a, b| a.0.cmp(&b.0));
        w.u16(ext.len() as u16);
        for (k, v) in ext {
            w.bytes16(k.as_bytes());
            w.bytes32(v);
        }
        w.buf
    }

    /// Parses a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let version = r.u8("manifest version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "manifest", version });
        }
        let image = r.string16("image name")?;
        let image = ImageName::new(&image).map_err(|e| DecodeError::Invalid { what: "image name", why: e.to_string() })?;
        let generation = r.u64("generation")?;
        let root = r.digest("root")?;
        let root_meta = Meta {
            mode: r.u16("root mode")?,
            uid: r.u32("root uid")?,
            gid: r.u32("root gid")?,
            mtime_sec: r.i64("root mtime")?,
            mtime_nsec: r.u32("root mtime nsec")?,
            xattrs: read_xattrs(&mut r)?,
        };
        validate_xattrs(&root_meta.xattrs)?;
        if root_meta.mode & !0o7777 != 0 || root_meta.mtime_nsec >= 1_000_000_000 {
            return Err(DecodeError::Invalid { what: "root metadata", why: "mode or mtime out of range".into() });
        }
        let parent = match r.u8("parent flag")? {
            0 => None,
            1 => Some(r.digest("parent")?),
            f => return Err(DecodeError::Invalid { what: "parent flag", why: f.to_string() }),
        };
        let created = r.i64("created")?;
        let message = String::from_utf8(r.bytes32("message", MAX_MESSAGE)?.to_vec())
            .map_err(|_| DecodeError::Invalid { what: "message", why: "not UTF-8".into() })?;
        let chunking = ChunkParams { min: r.u32("chunk min")?, avg: r.u32("chunk avg")?, max: r.u32("chunk max")? };
        chunking.validate().map_err(|why| DecodeError::Invalid { what: "chunking", why })?;
        let mut v = [0u64; 8];
        for slot in &mut v {
            *slot = r.u64("stats")?;
        }
        let stats = Stats {
            files: v[0],
            directories: v[1],
            symlinks: v[2],
            other: v[3],
            bytes: v[4],
            objects: v[5],
            new_objects: v[6],
            new_bytes: v[7],
        };
        let n = r.u16("extension count")?;
        let mut extensions: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..n {
            let k = r.string16("extension key")?;
            let val = r.bytes32("extension value", MAX_EXTENSION)?.to_vec();
            if extensions.last().is_some_and(|(prev, _)| *prev >= k) {
                return Err(DecodeError::Invalid { what: "extension order", why: k });
            }
            extensions.push((k, val));
        }
        r.finish()?;
        Ok(Manifest { image, generation, root, root_meta, parent, created, message, chunking, stats, extensions })
    }
}
