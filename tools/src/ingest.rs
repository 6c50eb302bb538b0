//! Reading file content into the store: holes found with SEEK_DATA/SEEK_HOLE, data split by
//! FastCDC, each chunk stored as one object. Files no larger than the chunk maximum are one object.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cache::Store;
use format::{ChunkParams, Extent};

use rayon::prelude::*;

use crate::dictionary::{self, Dictionary};
use crate::ImportError;

/// Bytes of chunks of one large file stored in parallel at a time.
const BATCH_BYTES: usize = 8 << 20;

/// Counts shared by the parallel workers of one import.
#[derive(Debug, Default)]
pub struct Counters {
    /// Objects written that the store did not hold.
    pub new_objects: AtomicU64,
    /// Uncompressed bytes of those objects.
    pub new_bytes: AtomicU64,
    /// Compressed bytes written for them.
    pub stored_bytes: AtomicU64,
    /// File bytes read.
    pub read_bytes: AtomicU64,
}

/// How content is stored.
#[derive(Clone, Copy)]
pub struct Storing<'a> {
    /// The store.
    pub store: &'a Store,
    /// Chunking parameters.
    pub chunking: ChunkParams,
    /// zstd level.
    pub level: i32,
    /// Counters to add to.
    pub counters: &'a Counters,
    /// Dictionary for whole small files, if the image has one.
    pub dict: Option<&'a Dictionary>,
}

impl Storing<'_> {
    /// Stores one chunk and returns its extent. `whole_file` chunks may use the dictionary.
    fn put(&self, offset: u64, data: &[u8], path: &Path, whole_file: bool) -> Result<Extent, ImportError> {
        let ins = match self.dict {
            Some(dict) if whole_file && self.level > 0 => self.store.insert_with(data, |d| dictionary::frame(dict, self.level, d)),
            _ => self.store.insert(data, self.level),
        }
        .map_err(|source| ImportError::Store { path: path.to_path_buf(), source })?;
        if ins.new {
            self.counters.new_objects.fetch_add(1, Ordering::Relaxed);
            self.counters.new_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.counters.stored_bytes.fetch_add(ins.stored_len, Ordering::Relaxed);
        }
        self.counters.read_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(Extent { offset, len: data.len() as u32, digest: ins.digest })
    }

    /// Stores `len` bytes read from `reader` as the data run starting at `offset`.
    pub fn ingest_stream(&self, reader: impl Read, offset: u64, len: u64, path: &Path, out: &mut Vec<Extent>) -> Result<(), ImportError> {
        let read_err = |source: io::Error| ImportError::Read { path: path.to_path_buf(), source };
        if len <= u64::from(self.chunking.max) {
            let mut buf = Vec::with_capacity(len as usize);
            reader.take(len).read_to_end(&mut buf).map_err(read_err)?;
            if (buf.len() as u64) < len {
                return Err(read_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shrank to {} of {len} bytes while read", buf.len()),
                )));
            }
            if !buf.is_empty() {
                out.push(self.put(offset, &buf, path, offset == 0)?);
            }
            return Ok(());
        }
        // Cut points are found sequentially (FastCDC is cheap); hashing and compressing, the
        // expensive part, run in parallel over batches of chunks so one huge file does not
        // leave the other cores idle. Batches bound the memory held at once.
        let p = self.chunking;
        let mut got = 0u64;
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        let flush = |batch: &mut Vec<(u64, Vec<u8>)>, out: &mut Vec<Extent>| -> Result<(), ImportError> {
            let stored: Vec<Result<Extent, ImportError>> = batch.par_iter().map(|(off, data)| self.put(*off, data, path, false)).collect();
            for x in stored {
                out.push(x?);
            }
            batch.clear();
            Ok(())
        };
        for chunk in fastcdc::v2020::StreamCDC::new(reader.take(len), p.min, p.avg, p.max) {
            let chunk = chunk.map_err(|e| read_err(io::Error::other(e.to_string())))?;
            got += chunk.length as u64;
            batch_bytes += chunk.length;
            batch.push((offset + chunk.offset, chunk.data));
            if batch_bytes >= BATCH_BYTES {
                flush(&mut batch, out)?;
                batch_bytes = 0;
            }
        }
        flush(&mut batch, out)?;
        if got < len {
            return Err(read_err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("file shrank to {got} of {len} bytes while read"))));
        }
        Ok(())
    }

    /// Stores a file from disk, keeping its holes. Returns its size and extents.
    pub fn ingest_file(&self, path: &Path) -> Result<(u64, Vec<Extent>), ImportError> {
        let read_err = |source: io::Error| ImportError::Read { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(read_err)?;
        let md = file.metadata().map_err(read_err)?;
        let size = md.size();
        let mut extents = Vec::new();
        for (start, end) in data_regions(&file, size, md.blocks()).map_err(read_err)? {
            let reader = RegionReader { file: &file, pos: start, end };
            self.ingest_stream(reader, start, end - start, path, &mut extents)?;
        }
        Ok((size, extents))
    }
}

/// The data runs of a file; all of it unless the allocated blocks say it may have holes.
fn data_regions(file: &File, size: u64, blocks: u64) -> io::Result<Vec<(u64, u64)>> {
    if blocks * 512 >= size {
        return Ok(if size == 0 { vec![] } else { vec![(0, size)] });
    }
    let fd = file.as_raw_fd();
    let mut regions = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos: the rest is a hole
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]); // filesystem without SEEK_DATA
            }
            return Err(e);
        }
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (end as u64).min(size);
        if end > start as u64 {
            regions.push((start as u64, end));
        }
        pos = end as i64;
    }
    Ok(regions)
}

/// Reads `[pos, end)` of a file with positioned reads, leaving the file offset alone.
struct RegionReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RegionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
