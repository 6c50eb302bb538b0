//! Use tracking for a store that evicts (an endpoint's cache): the bytes each loose object
//! and each pack takes and when it was last used, so the least recently used can go first (a
//! pack goes whole, and never while it holds a pinned object). The last use is kept in
//! memory and written to the file's mtime at most once an hour per file, so the order
//! survives a restart without a write per read.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use format::Digest;

/// How stale a persisted last use may get before a read updates it on disk.
const PERSIST_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Use {
    bytes: u64,
    /// Milliseconds since the epoch.
    last: u64,
    /// The last use as it stands on disk.
    persisted: u64,
}

/// What the store holds and how recently each object was used.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Loose objects by digest, packs by their key (`pack_key`).
    objects: Mutex<HashMap<Digest, Use>>,
    packed: Mutex<Packed>,
    bytes: AtomicU64,
    evicted_objects: AtomicU64,
    evicted_bytes: AtomicU64,
}

/// A store's use, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageReport {
    /// Bytes the objects take on disk.
    pub bytes: u64,
    /// Objects held.
    pub objects: u64,
    /// Objects evicted since the store was opened.
    pub evicted_objects: u64,
    /// Bytes evicted since the store was opened.
    pub evicted_bytes: u64,
}

/// What one eviction round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evicted {
    /// Objects removed.
    pub objects: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Bytes held after the round (more than asked when pinned objects fill the rest).
    pub remaining: u64,
}

/// The packs tracked: each one's objects.
#[derive(Debug, Default)]
struct Packed {
    members: HashMap<Digest, Vec<Digest>>,
}

/// A pack tracked as one unit of use: its key (`pack_key`), objects, bytes and last use.
#[derive(Debug, Clone)]
pub(crate) struct PackUse {
    pub key: Digest,
    pub members: Vec<Digest>,
    pub bytes: u64,
    /// Milliseconds since the epoch (the pack file's mtime, or now for a new one).
    pub last: u64,
}

/// The key a pack is tracked under: the digest of its file name.
pub(crate) fn pack_key(path: &Path) -> Digest {
    Digest::of(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()))
}

/// `t` in milliseconds since the epoch.
pub(crate) fn millis_of(t: SystemTime) -> u64 {
    millis(t)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Usage {
    /// Builds the table from the loose objects under `objects` (`XX/REST` files), taking each
    /// file's mtime as its last use.
    pub(crate) fn scan(objects: &Path) -> io::Result<Usage> {
        let mut map = HashMap::new();
        let mut total = 0;
        for i in 0..=255u8 {
            let prefix = format!("{i:02x}");
            let entries = match std::fs::read_dir(objects.join(&prefix)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                entries => entries?,
            };
            for entry in entries {
                let entry = entry?;
                let Some(d) = entry.file_name().to_str().and_then(|rest| format!("{prefix}{rest}").parse::<Digest>().ok()) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                let last = meta.modified().map(millis).unwrap_or(0);
                total += meta.len();
                map.insert(d, Use { bytes: meta.len(), last, persisted: last });
            }
        }
        Ok(Usage { objects: Mutex::new(map), bytes: AtomicU64::new(total), ..Usage::default() })
    }

    /// Records a new object of `bytes`.
    pub(crate) fn added(&self, digest: Digest, bytes: u64) {
        let now = millis(SystemTime::now());
        let old = self.objects.lock().unwrap().insert(digest, Use { bytes, last: now, persisted: now });
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
        }
    }

    /// Makes the tracked packs exactly `packs` (after packs were added or rewritten): new ones
    /// are added, gone ones dropped, the others keep their last use.
    pub(crate) fn set_packs(&self, packs: Vec<PackUse>) {
        let mut packed = self.packed.lock().unwrap();
        let mut objects = self.objects.lock().unwrap();
        let keep: HashSet<Digest> = packs.iter().map(|p| p.key).collect();
        let gone: Vec<Digest> = packed.members.keys().filter(|k| !keep.contains(k)).copied().collect();
        for key in gone {
            packed.members.remove(&key);
            if let Some(u) = objects.remove(&key) {
                self.bytes.fetch_sub(u.bytes, Ordering::Relaxed);
            }
        }
        for p in packs {
            if packed.members.contains_key(&p.key) {
                continue;
            }
            packed.members.insert(p.key, p.members);
            if let Some(old) = objects.insert(p.key, Use { bytes: p.bytes, last: p.last, persisted: p.last }) {
                self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
            }
            self.bytes.fetch_add(p.bytes, Ordering::Relaxed);
        }
    }

    /// Starts tracking a new pack.
    pub(crate) fn added_pack(&self, pack: PackUse) {
        self.packed.lock().unwrap().members.insert(pack.key, pack.members);
        self.added(pack.key, pack.bytes);
    }

    /// The objects of the pack tracked under `key`, if `key` is a pack's.
    pub(crate) fn pack_members(&self, key: &Digest) -> Option<Vec<Digest>> {
        self.packed.lock().unwrap().members.get(key).cloned()
    }

    /// Stops tracking the pack `key`; its bytes.
    pub(crate) fn removed_pack(&self, key: &Digest) -> Option<u64> {
        self.packed.lock().unwrap().members.remove(key)?;
        self.removed(key)
    }

    /// Records a use of a loose object, or of a pack by its key; true when the caller should
    /// write the new last use to the file's mtime.
    pub(crate) fn touch(&self, digest: &Digest) -> bool {
        let now = millis(SystemTime::now());
        let mut objects = self.objects.lock().unwrap();
        let Some(u) = objects.get_mut(digest) else { return false };
        u.last = now;
        if now.saturating_sub(u.persisted) >= PERSIST_EVERY.as_millis() as u64 {
            u.persisted = now;
            return true;
        }
        false
    }

    /// Records that an object is gone.
    pub(crate) fn removed(&self, digest: &Digest) -> Option<u64> {
        let old = self.objects.lock().unwrap().remove(digest)?;
        self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
        Some(old.bytes)
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn report(&self) -> UsageReport {
        let packed = self.packed.lock().unwrap();
        let in_packs: usize = packed.members.values().map(Vec::len).sum();
        let entries = self.objects.lock().unwrap().len();
        UsageReport {
            bytes: self.bytes(),
            objects: (entries - packed.members.len() + in_packs) as u64,
            evicted_objects: self.evicted_objects.load(Ordering::Relaxed),
            evicted_bytes: self.evicted_bytes.load(Ordering::Relaxed),
        }
    }

    /// The objects to remove, least recently used first, so that at most `target` bytes stay;
    /// objects in `pinned` never go.
    pub(crate) fn victims(&self, target: u64, pinned: &HashSet<Digest>) -> Vec<Digest> {
        let held = self.bytes();
        if held <= target {
            return Vec::new();
        }
        let packed = self.packed.lock().unwrap();
        let kept = |d: &Digest| match packed.members.get(d) {
            Some(members) => members.iter().any(|m| pinned.contains(m)),
            None => pinned.contains(d),
        };
        let mut candidates: Vec<(u64, Digest, u64)> =
            self.objects.lock().unwrap().iter().filter(|(d, _)| !kept(d)).map(|(d, u)| (u.last, *d, u.bytes)).collect();
        drop(packed);
        candidates.sort_unstable();
        let mut excess = held - target;
        let mut out = Vec::new();
        for (_, d, bytes) in candidates {
            if excess == 0 {
                break;
            }
            out.push(d);
            excess = excess.saturating_sub(bytes);
        }
        out
    }

    pub(crate) fn count_evicted(&self, objects: u64, bytes: u64) {
        self.evicted_objects.fetch_add(objects, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
