//! Plain copies: whole files decoded from verified objects, under `files/XX/REST`, named by a
//! digest of the file's extent list. An endpoint hands them to the kernel for FUSE
//! passthrough, so reads of a cached file cost what a local file's do. They are derived data:
//! evicted first, rebuilt from the objects at will, never fetched.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use format::{Digest, Extent};

use crate::atomic;
use crate::usage::{Evicted, Usage, UsageReport};
use crate::{GetError, Store};

/// Why a plain copy could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    /// An object of the file is absent or does not verify.
    #[error(transparent)]
    Object(#[from] GetError),
    /// An object does not have the length its extent says.
    #[error("object {digest} has {got} bytes, its extent says {want}")]
    Length {
        /// The object.
        digest: Digest,
        /// Its length.
        got: usize,
        /// The extent's length.
        want: u32,
    },
    /// The disk said no.
    #[error("writing {path}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<atomic::WriteError> for PlainError {
    fn from(e: atomic::WriteError) -> Self {
        PlainError::Io { path: e.path, source: e.source }
    }
}

/// A directory of plain copies.
#[derive(Debug)]
pub struct Plain {
    dir: PathBuf,
    tmp: PathBuf,
    usage: Usage,
}

impl Plain {
    /// Opens (creating) the copies under `dir`; its own `tmp/` is cleared.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Plain> {
        let dir = dir.into();
        let tmp = dir.join("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        // The 256 `XX` directories are made as copies land in them.
        let usage = Usage::scan(&dir)?;
        Ok(Plain { dir, tmp, usage })
    }

    /// The name of the plain copy of a file with `size` bytes and `extents`.
    pub fn key(size: u64, extents: &[Extent]) -> Digest {
        let mut buf = Vec::with_capacity(28 + extents.len() * 44);
        buf.extend_from_slice(b"imgfs plain file v1\0");
        buf.extend_from_slice(&size.to_le_bytes());
        for x in extents {
            buf.extend_from_slice(&x.offset.to_le_bytes());
            buf.extend_from_slice(&x.len.to_le_bytes());
            buf.extend_from_slice(&x.digest.0);
        }
        Digest::of(&buf)
    }

    fn path(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    /// Opens the plain copy named `key`, if there is one, and counts it as used.
    pub fn get(&self, key: &Digest) -> Option<fs::File> {
        let f = fs::File::open(self.path(key)).ok()?;
        if self.usage.touch(key) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(f)
    }

    /// Whether the copy named `key` exists.
    pub fn contains(&self, key: &Digest) -> bool {
        self.path(key).exists()
    }

    /// Writes the plain copy of a file from its objects in `store`, each verified as it is
    /// read; holes stay sparse. Visible only once complete.
    pub fn write(&self, store: &Store, size: u64, extents: &[Extent]) -> Result<Digest, PlainError> {
        let key = Plain::key(size, extents);
        let dest = self.path(&key);
        if dest.exists() {
            return Ok(key);
        }
        let parent = dest.parent().expect("files/XX/REST");
        fs::create_dir_all(parent).map_err(|source| PlainError::Io { path: parent.to_path_buf(), source })?;
        // Derived data: atomic, so never seen half written, but not fsynced (rebuilt if lost).
        let options = atomic::Options::new().tmp_in(&self.tmp).not_durable();
        atomic::write_from(&dest, options, |f, tmp| {
            let io = |source| PlainError::Io { path: tmp.to_path_buf(), source };
            f.set_len(size).map_err(io)?;
            for x in extents {
                let data = store.get(&x.digest)?;
                if data.len() != x.len as usize {
                    return Err(PlainError::Length { digest: x.digest, got: data.len(), want: x.len });
                }
                f.write_all_at(&data, x.offset).map_err(io)?;
            }
            Ok(())
        })?;
        self.usage.added(key, size);
        Ok(key)
    }

    /// Removes the least recently used copies until at most `target` bytes stay.
    pub fn evict(&self, target: u64) -> io::Result<Evicted> {
        let mut done = Evicted::default();
        for key in self.usage.victims(target, &HashSet::new()) {
            match fs::remove_file(self.path(&key)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if let Some(bytes) = self.usage.removed(&key) {
                done.objects += 1;
                done.bytes += bytes;
            }
        }
        self.usage.count_evicted(done.objects, done.bytes);
        done.remaining = self.usage.bytes();
        Ok(done)
    }

    /// What the copies take.
    pub fn usage(&self) -> UsageReport {
        self.usage.report()
    }
}
