//! `Store`: loose objects under `objects/XX/REST`, written through `tmp/` and renamed into place.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use format::{object, Digest};

use crate::{GetError, InsertError, OpenError};

/// A content-addressed object store rooted at a directory.
pub struct Store {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    pid: u32,
    /// Idle decompressors loaded with each dictionary seen, so a dictionary is parsed once per
    /// thread that needs it rather than once per object.
    decompressors: Mutex<HashMap<Digest, Vec<zstd::bulk::Decompressor<'static>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish_non_exhaustive()
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The object's digest.
    pub digest: Digest,
    /// False when the store already held it and nothing was written.
    pub new: bool,
    /// Bytes written to disk (framed, compressed), 0 when not new.
    pub stored_len: u64,
}

/// Largest zstd dictionary the store loads.
pub const MAX_DICTIONARY: u64 = 1 << 20;

/// Largest object the store accepts: a chunk or a tree. Trees of huge directories can be large.
pub const MAX_OBJECT: u64 = 1 << 30;

/// Removes a temporary file unless disarmed, so a failed write leaves nothing behind.
struct TmpGuard<'a>(Option<&'a Path>);

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

impl Store {
    /// Opens the store at `root`, creating its layout if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, OpenError> {
        let root = root.into();
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        let mk = |p: &Path| fs::create_dir_all(p).map_err(|source| OpenError { path: p.to_path_buf(), source });
        mk(&tmp)?;
        for i in 0..=255u8 {
            let dir = objects.join(format!("{i:02x}"));
            if !dir.is_dir() {
                mk(&dir)?;
            }
        }
        Ok(Store { root, objects, tmp, counter: AtomicU64::new(0), pid: std::process::id(), decompressors: Mutex::new(HashMap::new()) })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object with `digest` lives.
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the store holds `digest` (not verified; `get` verifies).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.object_path(digest).exists()
    }

    /// Stores `data`, compressed at zstd `level`, under the digest computed here.
    pub fn insert(&self, data: &[u8], level: i32) -> Result<Inserted, InsertError> {
        let digest = Digest::of(data);
        if self.contains(&digest) {
            return Ok(Inserted { digest, new: false, stored_len: 0 });
        }
        let framed = object::encode(data, level);
        self.write_framed(&digest, &framed)
    }

    /// Stores `data` framed by `frame` (the caller's choice of codec), under the digest computed
    /// here. `frame` runs only when the object is new.
    pub fn insert_with(&self, data: &[u8], frame: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Inserted, InsertError> {
        let digest = Digest::of(data);
        if self.contains(&digest) {
            return Ok(Inserted { digest, new: false, stored_len: 0 });
        }
        self.write_framed(&digest, &frame(data))
    }

    /// Stores already framed bytes after checking that they decode to `digest` within `limit`.
    pub fn insert_framed(&self, digest: &Digest, framed: &[u8], limit: u64) -> Result<Inserted, InsertError> {
        if self.contains(digest) {
            return Ok(Inserted { digest: *digest, new: false, stored_len: 0 });
        }
        self.decode(framed, digest, limit.min(MAX_OBJECT)).map_err(|source| InsertError::Invalid { digest: *digest, source })?;
        self.write_framed(digest, framed)
    }

    fn write_framed(&self, digest: &Digest, framed: &[u8]) -> Result<Inserted, InsertError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}.{}.{n}", digest.to_hex(), self.pid));
        let dest = self.object_path(digest);
        let io_err = |path: &Path, source: io::Error| InsertError::Io { digest: *digest, path: path.to_path_buf(), source };
        let guard = TmpGuard(Some(&tmp));
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(framed).map_err(|e| io_err(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &dest).map_err(|e| io_err(&dest, e))?;
        std::mem::forget(guard);
        Ok(Inserted { digest: *digest, new: true, stored_len: framed.len() as u64 })
    }

    /// Reads and verifies an object.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>, GetError> {
        let path = self.object_path(digest);
        let framed = self.get_framed(digest)?;
        self.decode(&framed, digest, MAX_OBJECT).map_err(|source| match source {
            object::ObjectError::NeedsDictionary(dictionary) => GetError::MissingDictionary { digest: *digest, dictionary },
            source => GetError::Corrupt { digest: *digest, path, source },
        })
    }

    /// Decodes framed bytes, loading the dictionary they name from this store if needed.
    /// A dictionary the store cannot produce gives `ObjectError::NeedsDictionary`.
    pub fn decode(&self, framed: &[u8], digest: &Digest, limit: u64) -> Result<Vec<u8>, object::ObjectError> {
        let Some(dict) = object::parse_header(framed)?.dict else {
            return object::decode(framed, digest, limit);
        };
        let idle = self.decompressors.lock().unwrap().get_mut(&dict).and_then(Vec::pop);
        let mut decompressor = match idle {
            Some(d) => d,
            None => {
                // A dictionary is a plain object; it is never itself compressed with one.
                let bytes = self
                    .get_framed(&dict)
                    .ok()
                    .and_then(|f| object::decode(&f, &dict, MAX_DICTIONARY).ok())
                    .ok_or(object::ObjectError::NeedsDictionary(dict))?;
                zstd::bulk::Decompressor::with_dictionary(&bytes).map_err(|_| object::ObjectError::NeedsDictionary(dict))?
            }
        };
        let result = object::decode_with_dict(framed, digest, limit, &mut decompressor);
        self.decompressors.lock().unwrap().entry(dict).or_default().push(decompressor);
        result
    }

    /// Reads an object's framed bytes without decoding them.
    pub fn get_framed(&self, digest: &Digest) -> Result<Vec<u8>, GetError> {
        let path = self.object_path(digest);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(GetError::NotFound(*digest)),
            Err(source) => Err(GetError::Io { digest: *digest, path, source }),
        }
    }

    /// Deletes an object. Deleting an absent object is not an error.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.object_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every object in the store, in no particular order. Stray files are skipped.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let prefix = format!("{i:02x}");
            for entry in fs::read_dir(self.objects.join(&prefix))? {
                let name = entry?.file_name();
                if let Some(rest) = name.to_str() {
                    if let Ok(d) = format!("{prefix}{rest}").parse() {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes temporary files left by killed writers. Only call when no writer runs.
    pub fn clean_tmp(&self) -> io::Result<usize> {
        let mut n = 0;
        for entry in fs::read_dir(&self.tmp)? {
            fs::remove_file(entry?.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Makes every object written so far durable (one `syncfs` on the store's filesystem).
    /// Call before writing anything that refers to the objects.
    pub fn sync(&self) -> io::Result<()> {
        let dir = fs::File::open(&self.objects)?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(io::Error::from)
    }
}
