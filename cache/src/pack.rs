//! Pack files: many framed objects in one file, so a bulk import costs a few large appends
//! instead of one file (and inode, and block) per object.
//!
//! `pack-ID.pack` holds a header and records; `pack-ID.idx` lists the records sorted by digest
//! with a trailing checksum. A pack is visible only once its index is in place, and the index
//! is written only after the pack is durable, so a killed writer leaves nothing half visible.
//! Layouts are in `docs/format.md`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use format::{record, Digest};

use crate::atomic;
use crate::fault::{self, Kind};

/// Pack file header.
pub const PACK_MAGIC: &[u8; 8] = b"IMGP\x01\0\0\0";
const INDEX_MAGIC: &[u8; 8] = b"IMGI\x01\0\0\0";
const INDEX_ENTRY: usize = 32 + 8 + 4;

/// Where one packed object's framed bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Offset of the framed bytes in the pack file.
    pub offset: u64,
    /// Length of the framed bytes.
    pub len: u32,
}

/// Encodes an index: entries sorted by digest, then a blake3 checksum of everything before it.
pub fn encode_index(entries: &mut [(Digest, Location)]) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(12 + entries.len() * INDEX_ENTRY + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (d, loc) in entries.iter() {
        out.extend_from_slice(&d.0);
        out.extend_from_slice(&loc.offset.to_le_bytes());
        out.extend_from_slice(&loc.len.to_le_bytes());
    }
    let sum = Digest::of(&out);
    out.extend_from_slice(&sum.0);
    out
}

/// Decodes an index, refusing a bad magic, a wrong length or a checksum mismatch.
pub fn decode_index(bytes: &[u8]) -> Result<Vec<(Digest, Location)>, String> {
    if bytes.len() < 12 + 32 || &bytes[..8] != INDEX_MAGIC {
        return Err("not a version 1 pack index".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Digest::of(body).0 != sum {
        return Err("index checksum mismatch".into());
    }
    let count = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
    if body.len() != 12 + count * INDEX_ENTRY {
        return Err(format!("index claims {count} entries in {} bytes", body.len()));
    }
    Ok(body[12..]
        .chunks_exact(INDEX_ENTRY)
        .map(|e| {
            let d = Digest(e[..32].try_into().unwrap());
            let offset = u64::from_le_bytes(e[32..40].try_into().unwrap());
            let len = u32::from_le_bytes(e[40..44].try_into().unwrap());
            (d, Location { offset, len })
        })
        .collect())
}

/// Reads the records of a pack file, for rebuilding a lost index. Stops at the first record
/// that does not fit; the caller verifies each object before trusting it.
pub fn scan_records(pack: &[u8]) -> Vec<(Digest, Location)> {
    if pack.len() < PACK_MAGIC.len() || &pack[..8] != PACK_MAGIC {
        return Vec::new();
    }
    record::records(pack)
        .starting_at(PACK_MAGIC.len())
        .map_while(Result::ok)
        .map(|r| (r.digest, Location { offset: r.offset as u64, len: r.framed.len() as u32 }))
        .collect()
}

/// A pack being written in `tmp/`.
pub struct PackWriter {
    /// Pack id (hex).
    pub id: String,
    /// The temporary file.
    pub tmp: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    /// Objects written so far.
    pub entries: Vec<(Digest, Location)>,
}

impl PackWriter {
    /// Starts a pack in `tmp_dir`.
    pub fn create(tmp_dir: &Path, id: String) -> io::Result<PackWriter> {
        PackWriter::create_buffered(tmp_dir, id, 1 << 20)
    }

    /// `create` with a write buffer of `buffer` bytes (small for the many short packs of a
    /// cache).
    pub fn create_buffered(tmp_dir: &Path, id: String, buffer: usize) -> io::Result<PackWriter> {
        let tmp = tmp_dir.join(format!("pack-{id}.pack"));
        fault::point(Kind::Write);
        let file = fs::OpenOptions::new().write(true).read(true).create_new(true).open(&tmp)?;
        let mut out = BufWriter::with_capacity(buffer, file);
        out.write_all(PACK_MAGIC)?;
        Ok(PackWriter { id, tmp, out, pos: PACK_MAGIC.len() as u64, entries: Vec::new() })
    }

    /// Appends one record.
    pub fn append(&mut self, digest: &Digest, framed: &[u8]) -> io::Result<Location> {
        fault::point(Kind::Write);
        let header = record::Header::of(digest, framed);
        self.out.write_all(&header.encode())?;
        self.out.write_all(framed)?;
        let loc = Location { offset: self.pos + record::HEADER_LEN as u64, len: header.len };
        self.pos += header.record_len();
        self.entries.push((*digest, loc));
        Ok(loc)
    }

    /// Flushes buffered records so they can be read back from the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Makes the pack durable and visible: fsync, rename into `packs_dir`, then the index.
    pub fn commit(self, packs_dir: &Path) -> io::Result<(PathBuf, Vec<(Digest, Location)>)> {
        self.commit_with(packs_dir, true)
    }

    /// `commit`, without the fsyncs when not `durable`: still visible only whole (the index is
    /// renamed in last), but a crash may lose or tear it, which a cache whose every read is
    /// verified and fetched again survives.
    pub fn commit_with(mut self, packs_dir: &Path, durable: bool) -> io::Result<(PathBuf, Vec<(Digest, Location)>)> {
        self.out.flush()?;
        fault::point(Kind::Sync);
        if durable {
            self.out.get_ref().sync_all()?;
        }
        let pack_path = packs_dir.join(format!("pack-{}.pack", self.id));
        fault::point(Kind::Write);
        fs::rename(&self.tmp, &pack_path)?;
        let index = encode_index(&mut self.entries);
        // The index is written in `tmp/` (beside the pack it came from) and renamed in; the
        // directory's fsync makes both renames durable.
        let tmp_dir = self.tmp.parent().unwrap_or(packs_dir);
        let idx = packs_dir.join(format!("pack-{}.idx", self.id));
        let options = atomic::Options::new().tmp_in(tmp_dir);
        let options = if durable { options } else { options.not_durable() };
        atomic::write_with(&idx, &index, options).map_err(|e| e.source)?;
        Ok((pack_path, self.entries))
    }
}
