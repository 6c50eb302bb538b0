//! The incremental import index: for each file of the last import of an image, the stat fields
//! that prove it unchanged and the extents it was stored as. A re-import reads only files whose
//! stat changed, so its cost follows the change, not the image.
//!
//! Like git's index it guards against "racy" entries: a file modified within `RACY_NS` of the
//! scan could change again without its mtime moving, so such files are not recorded.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use cache::Store;
use format::{ChunkParams, Digest, Extent};

use crate::scan::StatKey;

const VERSION: u32 = 1;
const RACY_NS: i64 = 2_000_000_000;

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    version: u32,
    chunking: Option<ChunkParams>,
    entries: HashMap<Vec<u8>, Recorded>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Recorded {
    key: StatKey,
    size: u64,
    extents: Vec<(u64, u32, [u8; 32])>,
}

/// The index of one image, loaded for one import.
pub struct Index {
    chunking: ChunkParams,
    old: HashMap<Vec<u8>, Recorded>,
    new: HashMap<Vec<u8>, Recorded>,
    scan_start_ns: i64,
}

impl Index {
    /// Loads the index at `path`; a missing, unreadable or differently chunked index is empty.
    pub fn load(path: &Path, chunking: ChunkParams, scan_start_ns: i64) -> Index {
        let old = fs::read(path)
            .ok()
            .and_then(|b| postcard::from_bytes::<OnDisk>(&b).ok())
            .filter(|d| d.version == VERSION && d.chunking == Some(chunking))
            .map(|d| d.entries)
            .unwrap_or_default();
        Index { chunking, old, new: HashMap::new(), scan_start_ns }
    }

    /// The stored extents of `rel` if its stat is unchanged and the store still has every object.
    pub fn lookup(&self, rel: &[u8], key: &StatKey, store: &Store) -> Option<(u64, Vec<Extent>)> {
        let r = self.old.get(rel)?;
        if r.key != *key {
            return None;
        }
        let extents: Vec<Extent> = r.extents.iter().map(|&(offset, len, d)| Extent { offset, len, digest: Digest(d) }).collect();
        extents.iter().all(|x| store.contains(&x.digest)).then_some((r.size, extents))
    }

    /// Records a file for the next import unless it changed too recently to be trusted.
    pub fn record(&mut self, rel: Vec<u8>, key: StatKey, size: u64, extents: &[Extent]) {
        if key.mtime_ns >= self.scan_start_ns - RACY_NS || key.ctime_ns >= self.scan_start_ns - RACY_NS {
            return;
        }
        let extents = extents.iter().map(|x| (x.offset, x.len, x.digest.0)).collect();
        self.new.insert(rel, Recorded { key, size, extents });
    }

    /// True when this import recorded exactly what the loaded index held (every file a hit).
    pub fn is_unchanged(&self, files_read: u64) -> bool {
        files_read == 0 && self.new.len() == self.old.len() && self.new.keys().all(|k| self.old.contains_key(k))
    }

    /// Writes the entries recorded in this import, replacing the old index. Not fsynced: the
    /// index is a cache, and a torn one fails to decode and counts as empty.
    pub fn save(self, path: &Path) -> std::io::Result<()> {
        let d = OnDisk { version: VERSION, chunking: Some(self.chunking), entries: self.new };
        let bytes = postcard::to_allocvec(&d).map_err(std::io::Error::other)?;
        cache::atomic::write_with(path, &bytes, cache::atomic::Options::new().not_durable()).map_err(|e| e.source)
    }
}
