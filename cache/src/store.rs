//! `Store`: loose objects under `objects/XX/REST`, written through `tmp/` and renamed into
//! place, and packs under `packs/` for bulk writes (see `pack.rs`).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::atomic;
use crate::fault::{self, Kind};
use crate::pack::{self, Location, PackWriter};
use crate::usage::{Evicted, Usage, UsageReport};

use format::{object, Digest};

use crate::{GetError, InsertError, OpenError, TruncatedPack};

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
    packs_dir: PathBuf,
    packs: RwLock<Packs>,
    /// The pack being written, while a bulk write is under way (`start_pack` .. `sync`).
    active: Mutex<Option<ActivePack>>,
    /// Sizes and last uses of loose objects, once `track_use` turned it on (an endpoint's cache).
    usage: OnceLock<Usage>,
}

/// Committed packs: open files and where each object is.
#[derive(Default)]
struct Packs {
    files: Vec<(PathBuf, Arc<fs::File>)>,
    index: HashMap<Digest, (u32, Location)>,
    /// Packs whose index is missing or damaged (their objects are invisible until repaired).
    broken: Vec<PathBuf>,
}

struct ActivePack {
    writer: PackWriter,
    written: HashMap<Digest, Location>,
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

/// Framed bytes that `Store::verify` checked: the only way to `insert_verified`.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    digest: Digest,
    framed: &'a [u8],
}

impl Verified<'_> {
    /// The object's digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }
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
        // The 256 `objects/XX` directories are made as objects land in them (a fresh cache
        // answers sooner).
        mk(&objects)?;
        let packs_dir = root.join("packs");
        mk(&packs_dir)?;
        let packs = load_packs(&packs_dir).map_err(|source| OpenError { path: packs_dir.clone(), source })?;
        Ok(Store {
            root,
            objects,
            tmp,
            counter: AtomicU64::new(0),
            pid: std::process::id(),
            decompressors: Mutex::new(HashMap::new()),
            packs_dir,
            packs: RwLock::new(packs),
            active: Mutex::new(None),
            usage: OnceLock::new(),
        })
    }

    /// Sends every following new object into one pack until `sync`, instead of one file each.
    /// For bulk writers (an import); a pack not synced is discarded when the store is dropped.
    pub fn start_pack(&self) -> io::Result<()> {
        let mut active = self.active.lock().unwrap();
        if active.is_none() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let seed = format!("{}-{}-{nanos}", self.pid, self.counter.fetch_add(1, Ordering::Relaxed));
            let id = Digest::of(seed.as_bytes()).to_hex()[..16].to_string();
            *active = Some(ActivePack { writer: PackWriter::create(&self.tmp, id)?, written: HashMap::new() });
        }
        Ok(())
    }

    /// Starts tracking the size and last use of every loose object, for `evict`. Scans the
    /// store once (a stat per object). Packed objects are not tracked: an evicting store
    /// writes loose objects only.
    pub fn track_use(&self) -> io::Result<()> {
        if self.usage.get().is_none() {
            let usage = Usage::scan(&self.objects)?;
            usage.set_packs(self.pack_uses());
            let _ = self.usage.set(usage);
        }
        Ok(())
    }

    /// Every pack with its objects, size and last use (its mtime), for use tracking.
    fn pack_uses(&self) -> Vec<crate::usage::PackUse> {
        let packs = self.packs.read().unwrap();
        let mut members: HashMap<u32, Vec<Digest>> = HashMap::new();
        for (d, (n, _)) in &packs.index {
            members.entry(*n).or_default().push(*d);
        }
        members
            .into_iter()
            .filter_map(|(n, members)| {
                let (path, file) = &packs.files[n as usize];
                let meta = file.metadata().ok()?;
                let last = meta.modified().map(crate::usage::millis_of).unwrap_or(0);
                Some(crate::usage::PackUse { key: crate::usage::pack_key(path), members, bytes: meta.len(), last })
            })
            .collect()
    }

    /// Stores objects `verify` accepted together in one new pack, in their order (objects the
    /// store holds already are left out), visible when this returns: how a cache keeps what one
    /// request brought, so that reading it again reads one file front to back instead of one
    /// file per object. Without `durable` nothing is fsynced (a crash may lose the pack).
    pub fn insert_pack(&self, objects: &[Verified<'_>], durable: bool) -> Result<Vec<Inserted>, InsertError> {
        let mut pack = self.cache_pack(durable);
        for v in objects {
            pack.append(*v)?;
        }
        let written = pack.commit()?;
        Ok(objects
            .iter()
            .map(|v| match written.get(&v.digest) {
                Some(len) => Inserted { digest: v.digest, new: true, stored_len: *len },
                None => Inserted { digest: v.digest, new: false, stored_len: 0 },
            })
            .collect())
    }

    /// A pack to fill with objects as they arrive (`CachePack`), for a cache.
    pub fn cache_pack(&self, durable: bool) -> CachePack<'_> {
        CachePack { store: self, durable, writer: None, broken: false }
    }

    /// Deletes the pack tracked under `key` (eviction): its objects leave the index first, so
    /// readers see them absent; a reader holding the file finishes its read.
    fn drop_pack(&self, key: &Digest) -> io::Result<()> {
        let mut packs = self.packs.write().unwrap();
        let Some(n) = packs.files.iter().position(|(p, _)| crate::usage::pack_key(p) == *key) else { return Ok(()) };
        let n = n as u32;
        packs.index.retain(|_, (m, _)| *m != n);
        let path = packs.files[n as usize].0.clone();
        drop(packs);
        for p in [path.with_extension("idx"), path] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// What the store holds, when `track_use` is on.
    pub fn usage(&self) -> Option<UsageReport> {
        self.usage.get().map(Usage::report)
    }

    /// Removes the least recently used objects not in `pinned` until at most `target` bytes
    /// stay (or only pinned objects do). Needs `track_use`. A reader racing an eviction sees
    /// the object absent, as if it had never been fetched.
    pub fn evict(&self, target: u64, pinned: &std::collections::HashSet<Digest>) -> io::Result<Evicted> {
        let Some(usage) = self.usage.get() else {
            return Err(io::Error::other("eviction needs use tracking (Store::track_use)"));
        };
        let mut done = Evicted::default();
        for d in usage.victims(target, pinned) {
            if let Some(members) = usage.pack_members(&d) {
                self.drop_pack(&d)?;
                if let Some(bytes) = usage.removed_pack(&d) {
                    done.objects += members.len() as u64;
                    done.bytes += bytes;
                }
                continue;
            }
            match fs::remove_file(self.object_path(&d)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if let Some(bytes) = usage.removed(&d) {
                done.objects += 1;
                done.bytes += bytes;
            }
        }
        usage.count_evicted(done.objects, done.bytes);
        done.remaining = usage.bytes();
        Ok(done)
    }

    /// Packs that have no valid index, so their objects are not visible.
    pub fn broken_packs(&self) -> Vec<PathBuf> {
        self.packs.read().unwrap().broken.clone()
    }

    /// Rebuilds the index of every broken pack from its records, keeping only objects that
    /// verify. Returns how many objects were recovered.
    pub fn repair_packs(&self) -> io::Result<usize> {
        let broken = self.broken_packs();
        let mut recovered = 0;
        for pack_path in broken {
            let bytes = fs::read(&pack_path)?;
            let mut good: Vec<(Digest, Location)> = pack::scan_records(&bytes)
                .into_iter()
                .filter(|(d, loc)| {
                    let framed = &bytes[loc.offset as usize..loc.offset as usize + loc.len as usize];
                    self.decode(framed, d, MAX_OBJECT).is_ok()
                })
                .collect();
            recovered += good.len();
            let idx = pack_path.with_extension("idx");
            atomic::write_with(&idx, &pack::encode_index(&mut good), atomic::Options::new().tmp_in(&self.tmp)).map_err(|e| e.source)?;
        }
        *self.packs.write().unwrap() = load_packs(&self.packs_dir)?;
        Ok(recovered)
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
        self.packs.read().unwrap().index.contains_key(digest)
            || self.active.lock().unwrap().as_ref().is_some_and(|a| a.written.contains_key(digest))
            || self.object_path(digest).exists()
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
        self.insert_framed_decoded(digest, framed, limit).map(|(inserted, _)| inserted)
    }

    /// `insert_framed`, also giving the content it decoded to check them (`None` when the
    /// store held the object already and nothing was decoded): a caller that reads what it
    /// fetched at once (a tree) need not read and check it again.
    pub fn insert_framed_decoded(&self, digest: &Digest, framed: &[u8], limit: u64) -> Result<(Inserted, Option<Vec<u8>>), InsertError> {
        if self.contains(digest) {
            return Ok((Inserted { digest: *digest, new: false, stored_len: 0 }, None));
        }
        let content =
            self.decode(framed, digest, limit.min(MAX_OBJECT)).map_err(|source| InsertError::Invalid { digest: *digest, source })?;
        // Checked absent just above: a racing writer of the same object writes the same bytes.
        Ok((self.write_framed(digest, framed)?, Some(content)))
    }

    /// `verify`, also giving the content decoded to check them.
    pub fn verify_decoded<'a>(&self, digest: &Digest, framed: &'a [u8], limit: u64) -> Result<(Verified<'a>, Vec<u8>), InsertError> {
        let content =
            self.decode(framed, digest, limit.min(MAX_OBJECT)).map_err(|source| InsertError::Invalid { digest: *digest, source })?;
        Ok((Verified { digest: *digest, framed }, content))
    }

    /// Checks that framed bytes decode to `digest` within `limit`, without storing them: for
    /// a writer that must check a whole batch before any of it becomes visible.
    pub fn verify<'a>(&self, digest: &Digest, framed: &'a [u8], limit: u64) -> Result<Verified<'a>, InsertError> {
        self.decode(framed, digest, limit.min(MAX_OBJECT)).map_err(|source| InsertError::Invalid { digest: *digest, source })?;
        Ok(Verified { digest: *digest, framed })
    }

    /// Stores an object `verify` accepted.
    pub fn insert_verified(&self, v: Verified<'_>) -> Result<Inserted, InsertError> {
        if self.contains(&v.digest) {
            return Ok(Inserted { digest: v.digest, new: false, stored_len: 0 });
        }
        self.write_framed(&v.digest, v.framed)
    }

    /// The dictionary an object's frame names, read from its header alone (`None` when the
    /// object is absent, unreadable or not dictionary-compressed). An object is stored once
    /// whichever image stored it first, so it may name another image's dictionary.
    pub fn dictionary_of(&self, digest: &Digest) -> Option<Digest> {
        let mut head = [0u8; 48];
        let packed = {
            let packs = self.packs.read().unwrap();
            packs.index.get(digest).map(|(n, loc)| (packs.files[*n as usize].1.clone(), *loc))
        };
        let n = match packed {
            Some((file, loc)) => {
                let n = head.len().min(loc.len as usize);
                file.read_exact_at(&mut head[..n], loc.offset).ok()?;
                n
            }
            None => match fs::File::open(self.object_path(digest)) {
                Ok(f) => f.read_at(&mut head, 0).ok()?,
                Err(_) => {
                    // In the pack being written, or absent: rare enough to read whole.
                    let framed = self.get_framed(digest).ok()?;
                    let n = head.len().min(framed.len());
                    head[..n].copy_from_slice(&framed[..n]);
                    n
                }
            },
        };
        object::parse_header(&head[..n]).ok()?.dict
    }

    /// Bytes an object takes in the store (framed, compressed), if present.
    pub fn stored_len(&self, digest: &Digest) -> Option<u64> {
        if let Some((_, loc)) = self.packs.read().unwrap().index.get(digest) {
            return Some(loc.len as u64);
        }
        if let Some(loc) = self.active.lock().unwrap().as_ref().and_then(|a| a.written.get(digest).copied()) {
            return Some(loc.len as u64);
        }
        fs::metadata(self.object_path(digest)).ok().map(|m| m.len())
    }

    fn write_framed(&self, digest: &Digest, framed: &[u8]) -> Result<Inserted, InsertError> {
        {
            let mut active = self.active.lock().unwrap();
            if let Some(a) = active.as_mut() {
                if a.written.contains_key(digest) {
                    return Ok(Inserted { digest: *digest, new: false, stored_len: 0 });
                }
                match a.writer.append(digest, framed) {
                    Ok(loc) => {
                        a.written.insert(*digest, loc);
                        return Ok(Inserted { digest: *digest, new: true, stored_len: framed.len() as u64 });
                    }
                    Err(source) => {
                        // The pack cannot be trusted after a failed write: drop it whole.
                        let a = active.take().expect("checked above");
                        let _ = fs::remove_file(&a.writer.tmp);
                        return Err(InsertError::Io { digest: *digest, path: a.writer.tmp, source });
                    }
                }
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}.{}.{n}", digest.to_hex(), self.pid));
        let dest = self.object_path(digest);
        let io_err = |path: &Path, source: io::Error| InsertError::Io { digest: *digest, path: path.to_path_buf(), source };
        let guard = TmpGuard(Some(&tmp));
        fault::point(Kind::Write);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(framed).map_err(|e| io_err(&tmp, e))?;
        drop(f);
        fault::point(Kind::Write);
        if let Err(e) = fs::rename(&tmp, &dest) {
            let parent = dest.parent().expect("objects/XX/REST");
            if e.kind() != io::ErrorKind::NotFound || parent.is_dir() {
                return Err(io_err(&dest, e));
            }
            fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            fs::rename(&tmp, &dest).map_err(|e| io_err(&dest, e))?;
        }
        std::mem::forget(guard);
        if let Some(usage) = self.usage.get() {
            usage.added(*digest, framed.len() as u64);
        }
        Ok(Inserted { digest: *digest, new: true, stored_len: framed.len() as u64 })
    }

    /// Reads and verifies an object.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>, GetError> {
        let path = self.location_name(digest);
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

    /// Where an object lives, for messages: its file, or its pack.
    pub fn location_name(&self, digest: &Digest) -> PathBuf {
        let packs = self.packs.read().unwrap();
        match packs.index.get(digest) {
            Some((n, loc)) => PathBuf::from(format!("{}@{}", packs.files[*n as usize].0.display(), loc.offset)),
            None => self.object_path(digest),
        }
    }

    /// Reads an object's framed bytes without decoding them.
    pub fn get_framed(&self, digest: &Digest) -> Result<Vec<u8>, GetError> {
        let packed = {
            let packs = self.packs.read().unwrap();
            packs.index.get(digest).map(|(n, loc)| (packs.files[*n as usize].clone(), *loc))
        };
        if let Some(((path, file), loc)) = packed {
            let mut buf = vec![0u8; loc.len as usize];
            return match file.read_exact_at(&mut buf, loc.offset) {
                Ok(()) => {
                    if self.usage.get().is_some_and(|u| u.touch(&crate::usage::pack_key(&path))) {
                        // As for a loose object: the pack's mtime is its last use.
                        let _ = file.set_modified(std::time::SystemTime::now());
                    }
                    Ok(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let pack_len = file.metadata().map_or(0, |m| m.len());
                    let source = TruncatedPack { pack: path, offset: loc.offset, len: loc.len, pack_len };
                    Err(GetError::Truncated { digest: *digest, source })
                }
                Err(source) => Err(GetError::Io { digest: *digest, path, source }),
            };
        }
        {
            let mut active = self.active.lock().unwrap();
            if let Some(a) = active.as_mut() {
                if let Some(loc) = a.written.get(digest).copied() {
                    let tmp = a.writer.tmp.clone();
                    let io = |source| GetError::Io { digest: *digest, path: tmp.clone(), source };
                    a.writer.flush().map_err(io)?;
                    let mut buf = vec![0u8; loc.len as usize];
                    let file = fs::File::open(&a.writer.tmp).map_err(io)?;
                    file.read_exact_at(&mut buf, loc.offset).map_err(io)?;
                    return Ok(buf);
                }
            }
        }
        let path = self.object_path(digest);
        let io = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => GetError::NotFound(*digest),
            _ => GetError::Io { digest: *digest, path: path.clone(), source },
        };
        let mut f = fs::File::open(&path).map_err(io)?;
        let mut buf = Vec::with_capacity(f.metadata().map_or(0, |m| m.len() as usize));
        io::Read::read_to_end(&mut f, &mut buf).map_err(io)?;
        if self.usage.get().is_some_and(|u| u.touch(digest)) {
            // The last use survives a restart as the file's mtime; losing it only ages the object.
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(buf)
    }

    /// Deletes objects. Packed objects are removed by rewriting their packs without them.
    /// Deleting an absent object is not an error. Not for use while a bulk write runs.
    /// A pack shorter than its index says fails with `InvalidData` holding a `TruncatedPack`.
    pub fn remove(&self, digests: &[Digest]) -> io::Result<()> {
        let mut by_pack: HashMap<u32, Vec<Digest>> = HashMap::new();
        {
            let packs = self.packs.read().unwrap();
            for d in digests {
                if let Some((n, _)) = packs.index.get(d) {
                    by_pack.entry(*n).or_default().push(*d);
                }
                match fs::remove_file(self.object_path(d)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                if let Some(usage) = self.usage.get() {
                    usage.removed(d);
                }
            }
        }
        for (n, gone) in by_pack {
            let old = self.packs.read().unwrap().files[n as usize].0.clone();
            let bytes = fs::read(&old)?;
            let old_idx = fs::read(old.with_extension("idx"))?;
            let entries = pack::decode_index(&old_idx).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let id = format!("{}r{}", &Digest::of(&old_idx).to_hex()[..15], self.counter.fetch_add(1, Ordering::Relaxed));
            // A pack cut short refuses the rewrite whole, before anything is written, if an
            // object to keep lies past its end: it cannot be copied, and the objects stay where
            // they are. Removing exactly the lost objects goes through.
            for (_, loc) in entries.iter().filter(|(d, _)| !gone.contains(d)) {
                TruncatedPack::check(&old, loc.offset, loc.len, bytes.len() as u64)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let mut writer = PackWriter::create(&self.tmp, id)?;
            for (d, loc) in entries.iter().filter(|(d, _)| !gone.contains(d)) {
                writer.append(d, &bytes[loc.offset as usize..(loc.offset + u64::from(loc.len)) as usize])?;
            }
            writer.commit(&self.packs_dir)?;
            // The new pack is complete and visible; the old one goes, index first.
            fault::point(Kind::Write);
            fs::remove_file(old.with_extension("idx"))?;
            fs::remove_file(&old)?;
        }
        *self.packs.write().unwrap() = load_packs(&self.packs_dir)?;
        if let Some(usage) = self.usage.get() {
            usage.set_packs(self.pack_uses());
        }
        Ok(())
    }

    /// Every object in the store, in no particular order. Stray files are skipped.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out: Vec<Digest> = self.packs.read().unwrap().index.keys().copied().collect();
        if let Some(a) = self.active.lock().unwrap().as_ref() {
            out.extend(a.written.keys());
        }
        for i in 0..=255u8 {
            let prefix = format!("{i:02x}");
            let entries = match fs::read_dir(self.objects.join(&prefix)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                entries => entries?,
            };
            for entry in entries {
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

    /// Makes every object written so far durable: commits the pack being written, if any, and
    /// makes loose objects durable with one `syncfs`. Call before writing anything that refers
    /// to the objects.
    pub fn sync(&self) -> io::Result<()> {
        {
            // The commit happens under the lock, so a concurrent `sync` (of a writer whose
            // objects went into this same pack) returns only once they are durable and visible.
            let mut active = self.active.lock().unwrap();
            if let Some(a) = active.take() {
                let tmp = a.writer.tmp.clone();
                if a.written.is_empty() {
                    fs::remove_file(&tmp)?;
                } else {
                    match a.writer.commit(&self.packs_dir) {
                        Ok((path, entries)) => self.add_pack(path, entries)?,
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(e);
                        }
                    }
                }
            }
        }
        let dir = fs::File::open(&self.objects)?;
        fault::point(Kind::Sync);
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(io::Error::from)
    }

    /// Makes a committed pack visible. Adds to the in-memory index rather than reloading every
    /// index from disk, which could race another commit and hide its pack.
    fn add_pack(&self, path: PathBuf, entries: Vec<(Digest, Location)>) -> io::Result<()> {
        let file = Arc::new(fs::File::open(&path)?);
        if let Some(usage) = self.usage.get() {
            let members = entries.iter().map(|(d, _)| *d).collect();
            let bytes = file.metadata().map_or(0, |m| m.len());
            usage.added_pack(crate::usage::PackUse { key: crate::usage::pack_key(&path), members, bytes, last: 0 });
        }
        let mut packs = self.packs.write().unwrap();
        let n = packs.files.len() as u32;
        packs.files.push((path, file));
        for (d, loc) in entries {
            packs.index.insert(d, (n, loc));
        }
        Ok(())
    }
}

/// A pack being filled with verified objects as an answer streams in (`Store::cache_pack`):
/// nothing of it is visible until `commit`, and dropped uncommitted it leaves nothing. After a
/// failed append the pack takes no more, but `commit` still keeps what went in before.
pub struct CachePack<'s> {
    store: &'s Store,
    durable: bool,
    writer: Option<PackWriter>,
    broken: bool,
}

impl CachePack<'_> {
    /// Appends an object `verify` accepted, unless the store or this pack holds it already.
    pub fn append(&mut self, v: Verified<'_>) -> Result<(), InsertError> {
        let store = self.store;
        let io_err = |path: &Path, source: io::Error| InsertError::Io { digest: v.digest, path: path.to_path_buf(), source };
        if self.broken {
            return Err(io_err(&store.tmp, io::Error::other("an earlier write to this pack failed")));
        }
        if store.contains(&v.digest) || self.writer.as_ref().is_some_and(|w| w.entries.iter().any(|(d, _)| *d == v.digest)) {
            return Ok(());
        }
        if self.writer.is_none() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let seed = format!("{}-{}-{nanos}", store.pid, store.counter.fetch_add(1, Ordering::Relaxed));
            let id = Digest::of(seed.as_bytes()).to_hex()[..16].to_string();
            self.writer = Some(PackWriter::create_buffered(&store.tmp, id, 64 << 10).map_err(|e| io_err(&store.tmp, e))?);
        }
        let w = self.writer.as_mut().expect("made above");
        if let Err(e) = w.append(&v.digest, v.framed) {
            self.broken = true;
            return Err(io_err(&w.tmp.clone(), e));
        }
        Ok(())
    }

    /// Whether an append failed (the pack takes no more; `commit` keeps what went in before).
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// How many objects went in.
    pub fn len(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.entries.len())
    }

    /// Whether nothing went in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes what went in visible, as one pack; the objects written, with their stored lengths.
    pub fn commit(mut self) -> Result<HashMap<Digest, u64>, InsertError> {
        let Some(w) = self.writer.take() else { return Ok(HashMap::new()) };
        let store = self.store;
        let tmp = w.tmp.clone();
        let first = w.entries.first().map(|e| e.0).unwrap_or(Digest([0; 32]));
        let io_err = |path: &Path, source: io::Error| InsertError::Io { digest: first, path: path.to_path_buf(), source };
        let (path, entries) = match w.commit_with(&store.packs_dir, self.durable) {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(&store.packs_dir, e));
            }
        };
        let written = entries.iter().map(|(d, loc)| (*d, u64::from(loc.len))).collect();
        store.add_pack(path.clone(), entries).map_err(|e| io_err(&path, e))?;
        Ok(written)
    }
}

impl Drop for CachePack<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = fs::remove_file(&w.tmp);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A pack never synced belongs to a write that did not finish: nothing refers to it.
        if let Some(a) = self.active.get_mut().ok().and_then(Option::take) {
            let _ = fs::remove_file(&a.writer.tmp);
        }
    }
}

/// Loads every pack index under `dir`; packs without a valid index are listed as broken.
fn load_packs(dir: &Path) -> io::Result<Packs> {
    let mut packs = Packs::default();
    let mut names: Vec<PathBuf> =
        fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "pack")).collect();
    names.sort();
    for pack_path in names {
        let entries = fs::read(pack_path.with_extension("idx")).ok().and_then(|b| pack::decode_index(&b).ok());
        match (entries, fs::File::open(&pack_path)) {
            (Some(entries), Ok(file)) => {
                let n = packs.files.len() as u32;
                packs.files.push((pack_path, Arc::new(file)));
                for (d, loc) in entries {
                    packs.index.insert(d, (n, loc));
                }
            }
            _ => packs.broken.push(pack_path),
        }
    }
    Ok(packs)
}
